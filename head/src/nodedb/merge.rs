//! Profile resolution: how a node's effective settings come from its profiles.
//!
//! As in Warewulf: the node's `profiles` are expanded depth-first (a
//! profile's own `profiles` come before it, each profile once); a `~name`
//! entry removes that profile. Profiles are applied in that order and the node
//! last: a set scalar replaces the one before, lists are appended, maps are
//! merged key by key. After merging, `~value` entries in `profiles`, the
//! overlay lists and kernel args remove that value. Every field records who
//! set it, for `wwctl node list --all`.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_norway::Value;

use super::model::{
    Disk, FileSystem, IpmiConf, KernelConf, NetDev, NodeConf, NodesConf, Partition,
};

/// Who set one field of a merged node, as `node list --all` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldSource {
    /// Warewulf's field name, e.g. `NetDevs[default].Ipaddr`.
    pub field: String,
    /// The profile(s) that set it; empty for the node itself; `SUPERSEDED`
    /// when the node replaced a profile's value.
    pub source: String,
    /// The merged value as text; lists are comma-separated.
    pub value: String,
}

/// A node with its profiles applied.
#[derive(Clone, Debug, PartialEq)]
pub struct MergedNode {
    pub id: String,
    /// The effective settings; `profiles` is the node's own list.
    pub conf: NodeConf,
    /// Profiles named by the node (after expansion) that do not exist.
    pub missing_profiles: Vec<String>,
}

impl MergedNode {
    /// The primary network device name (set or derived).
    #[allow(dead_code, reason = "used by the overlay and server modules")]
    pub fn primary_netdev(&self) -> Option<&str> {
        self.conf.primary_network.as_deref()
    }
}

/// Removes `~x` entries and every `x` they negate.
pub fn clean_list(list: &[String]) -> Vec<String> {
    let negated: HashSet<&str> = list.iter().filter_map(|s| s.strip_prefix('~')).collect();
    list.iter()
        .filter(|s| !s.starts_with('~') && !negated.contains(s.as_str()))
        .cloned()
        .collect()
}

/// Expands a profile list depth-first; each profile appears once, nested
/// profiles before the one that names them, and `~name` drops `name`.
pub fn expand_profiles(profiles: &BTreeMap<String, NodeConf>, list: &[String]) -> Vec<String> {
    fn walk(
        profiles: &BTreeMap<String, NodeConf>,
        list: &[String],
        visited: &mut HashSet<String>,
        out: &mut Vec<String>,
    ) {
        for id in list {
            if id.starts_with('~') {
                out.push(id.clone());
            } else if visited.insert(id.clone()) {
                if let Some(p) = profiles.get(id) {
                    walk(
                        profiles,
                        p.profiles.as_deref().unwrap_or_default(),
                        visited,
                        out,
                    );
                }
                out.push(id.clone());
            }
        }
    }
    let mut out = Vec::new();
    walk(profiles, list, &mut HashSet::new(), &mut out);
    clean_list(&out)
}

/// Merges node `id` with its profiles; `None` when there is no such node.
pub fn merge_node(db: &NodesConf, id: &str) -> Option<MergedNode> {
    db.nodes().get(id).map(|raw| merge(db.profiles(), id, raw))
}

/// Merges every node, in name order, on all cores when there are many.
pub fn merge_all(db: &NodesConf) -> Vec<MergedNode> {
    let nodes: Vec<(&String, &NodeConf)> = db.nodes().iter().collect();
    crate::par::map(&nodes, 0, 512, |(id, raw)| merge(db.profiles(), id, raw))
}

/// The pure merge: `raw` is the node as written, `profiles` the profile table.
pub fn merge(profiles: &BTreeMap<String, NodeConf>, id: &str, raw: &NodeConf) -> MergedNode {
    merge_tracked(profiles, id, raw, None)
}

/// Every set field of node `id` after merging, in Warewulf's order, with the
/// profile (or node) that set it: what `node list --all` shows. Kept apart
/// from [`merge`] because naming every field costs more than the merge.
pub fn field_sources(
    profiles: &BTreeMap<String, NodeConf>,
    id: &str,
    raw: &NodeConf,
) -> Vec<FieldSource> {
    let mut sources = HashMap::new();
    let merged = merge_tracked(profiles, id, raw, Some(&mut sources));
    flatten(&merged.conf)
        .into_iter()
        .map(|(field, _, value)| FieldSource {
            source: sources.get(&field).cloned().unwrap_or_default(),
            field,
            value,
        })
        .collect()
}

/// The merge; with `sources`, also records who set each field.
fn merge_tracked(
    profiles: &BTreeMap<String, NodeConf>,
    id: &str,
    raw: &NodeConf,
    mut sources: Option<&mut HashMap<String, String>>,
) -> MergedNode {
    let mut acc = NodeConf::default();
    let mut missing = Vec::new();
    for pid in expand_profiles(profiles, raw.profiles.as_deref().unwrap_or_default()) {
        let Some(profile) = profiles.get(&pid) else {
            tracing::debug!("node {id}: profile {pid} not found");
            missing.push(pid);
            continue;
        };
        let mut profile = profile.clone();
        // Profiles carry neither their own profile list nor node-only fields.
        profile.profiles = None;
        profile.discoverable = None;
        profile.asset_key = None;
        merge_into(&mut acc, &profile);
        if let Some(sources) = sources.as_deref_mut() {
            for (field, is_list, _) in flatten(&profile) {
                let src = match sources.get(&field) {
                    Some(prev) if is_list && !prev.is_empty() => format!("{prev},{pid}"),
                    _ => pid.clone(),
                };
                sources.insert(field, src);
            }
        }
    }
    let mut own = raw.clone();
    own.profiles = None;
    merge_into(&mut acc, &own);
    if let Some(sources) = sources {
        for (field, is_list, _) in flatten(&own) {
            let prev = sources.get(&field).cloned().unwrap_or_default();
            let src = match (is_list, prev.is_empty()) {
                (true, false) => format!("{prev},{id}"),
                (false, false) => "SUPERSEDED".to_owned(),
                (_, true) => String::new(),
            };
            sources.insert(field, src);
        }
        sources.insert("Profiles".into(), String::new());
    }
    acc.profiles = raw.profiles.clone();
    clean_lists(&mut acc);
    set_primary(&mut acc);
    MergedNode {
        id: id.to_owned(),
        conf: acc,
        missing_profiles: missing,
    }
}

fn clean_lists(c: &mut NodeConf) {
    for l in [
        &mut c.profiles,
        &mut c.system_overlay,
        &mut c.runtime_overlay,
    ]
    .into_iter()
    .flatten()
    {
        *l = clean_list(l);
    }
    if let Some(Some(args)) = c.kernel.as_mut().map(|k| k.args.as_mut()) {
        *args = clean_list(args);
    }
}

/// Without a valid `primary network`, the first device by name is primary.
fn set_primary(c: &mut NodeConf) {
    let Some(devs) = &c.netdevs else { return };
    let valid = c
        .primary_network
        .as_ref()
        .is_some_and(|p| devs.contains_key(p));
    if !valid {
        c.primary_network = devs.keys().next().cloned();
    }
}

fn scalar(dst: &mut Option<String>, src: &Option<String>) {
    if let Some(v) = src
        && !v.is_empty()
    {
        *dst = Some(v.clone());
    }
}

fn boolean(dst: &mut Option<bool>, src: &Option<bool>) {
    if src.is_some() {
        *dst = *src;
    }
}

fn list(dst: &mut Option<Vec<String>>, src: &Option<Vec<String>>) {
    if let Some(v) = src
        && !v.is_empty()
    {
        dst.get_or_insert_with(Vec::new).extend(v.iter().cloned());
    }
}

fn str_map(dst: &mut Option<BTreeMap<String, String>>, src: &Option<BTreeMap<String, String>>) {
    if let Some(m) = src {
        let d = dst.get_or_insert_with(BTreeMap::new);
        for (k, v) in m {
            d.insert(k.clone(), v.clone());
        }
    }
}

fn map_with<T: Default + Clone>(
    dst: &mut Option<BTreeMap<String, T>>,
    src: &Option<BTreeMap<String, T>>,
    f: fn(&mut T, &T),
) {
    if let Some(m) = src {
        let d = dst.get_or_insert_with(BTreeMap::new);
        for (k, v) in m {
            f(d.entry(k.clone()).or_default(), v);
        }
    }
}

fn extra(dst: &mut BTreeMap<String, Value>, src: &BTreeMap<String, Value>) {
    for (k, v) in src {
        dst.insert(k.clone(), v.clone());
    }
}

/// Free YAML: maps merge key by key, anything else is replaced.
fn merge_value(dst: &mut Value, src: &Value) {
    match (dst, src) {
        (Value::Mapping(d), Value::Mapping(s)) => {
            for (k, v) in s {
                match d.get_mut(k) {
                    Some(existing) => merge_value(existing, v),
                    None => {
                        d.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (d, s) => {
            if !s.is_null() {
                *d = s.clone();
            }
        }
    }
}

fn merge_kernel(d: &mut KernelConf, s: &KernelConf) {
    scalar(&mut d.version, &s.version);
    list(&mut d.args, &s.args);
    extra(&mut d.extra, &s.extra);
}

fn merge_ipmi(d: &mut IpmiConf, s: &IpmiConf) {
    scalar(&mut d.username, &s.username);
    scalar(&mut d.password, &s.password);
    scalar(&mut d.ipaddr, &s.ipaddr);
    scalar(&mut d.gateway, &s.gateway);
    scalar(&mut d.netmask, &s.netmask);
    scalar(&mut d.port, &s.port);
    scalar(&mut d.interface, &s.interface);
    scalar(&mut d.escapechar, &s.escapechar);
    scalar(&mut d.write, &s.write);
    scalar(&mut d.template, &s.template);
    str_map(&mut d.tags, &s.tags);
    extra(&mut d.extra, &s.extra);
}

fn merge_netdev(d: &mut NetDev, s: &NetDev) {
    scalar(&mut d.kind, &s.kind);
    scalar(&mut d.onboot, &s.onboot);
    scalar(&mut d.device, &s.device);
    scalar(&mut d.hwaddr, &s.hwaddr);
    scalar(&mut d.ipaddr, &s.ipaddr);
    scalar(&mut d.netmask, &s.netmask);
    scalar(&mut d.gateway, &s.gateway);
    scalar(&mut d.ipaddr6, &s.ipaddr6);
    scalar(&mut d.prefixlen6, &s.prefixlen6);
    scalar(&mut d.gateway6, &s.gateway6);
    scalar(&mut d.mtu, &s.mtu);
    str_map(&mut d.tags, &s.tags);
    extra(&mut d.extra, &s.extra);
}

fn merge_partition(d: &mut Partition, s: &Partition) {
    scalar(&mut d.number, &s.number);
    scalar(&mut d.size_mib, &s.size_mib);
    scalar(&mut d.start_mib, &s.start_mib);
    scalar(&mut d.type_guid, &s.type_guid);
    scalar(&mut d.guid, &s.guid);
    boolean(&mut d.wipe_partition_entry, &s.wipe_partition_entry);
    boolean(&mut d.should_exist, &s.should_exist);
    boolean(&mut d.resize, &s.resize);
    extra(&mut d.extra, &s.extra);
}

fn merge_disk(d: &mut Disk, s: &Disk) {
    boolean(&mut d.wipe_table, &s.wipe_table);
    map_with(&mut d.partitions, &s.partitions, merge_partition);
    extra(&mut d.extra, &s.extra);
}

fn merge_fs(d: &mut FileSystem, s: &FileSystem) {
    scalar(&mut d.format, &s.format);
    scalar(&mut d.path, &s.path);
    boolean(&mut d.wipe_filesystem, &s.wipe_filesystem);
    scalar(&mut d.label, &s.label);
    scalar(&mut d.uuid, &s.uuid);
    list(&mut d.options, &s.options);
    scalar(&mut d.mount_options, &s.mount_options);
    extra(&mut d.extra, &s.extra);
}

/// Applies `src` over `dst` with Warewulf's rules (see the module docs).
pub fn merge_into(dst: &mut NodeConf, src: &NodeConf) {
    scalar(&mut dst.discoverable, &src.discoverable);
    scalar(&mut dst.asset_key, &src.asset_key);
    list(&mut dst.profiles, &src.profiles);
    scalar(&mut dst.comment, &src.comment);
    scalar(&mut dst.cluster_name, &src.cluster_name);
    scalar(&mut dst.image_name, &src.image_name);
    scalar(&mut dst.ipxe, &src.ipxe);
    list(&mut dst.runtime_overlay, &src.runtime_overlay);
    list(&mut dst.system_overlay, &src.system_overlay);
    if let Some(k) = &src.kernel {
        merge_kernel(dst.kernel_mut(), k);
    }
    if let Some(i) = &src.ipmi {
        merge_ipmi(dst.ipmi_mut(), i);
    }
    scalar(&mut dst.init, &src.init);
    scalar(&mut dst.root, &src.root);
    map_with(&mut dst.netdevs, &src.netdevs, merge_netdev);
    str_map(&mut dst.tags, &src.tags);
    scalar(&mut dst.primary_network, &src.primary_network);
    map_with(&mut dst.disks, &src.disks, merge_disk);
    map_with(&mut dst.filesystems, &src.filesystems, merge_fs);
    if let Some(r) = &src.resources {
        let d = dst.resources.get_or_insert_with(BTreeMap::new);
        for (k, v) in r {
            match d.get_mut(k) {
                Some(existing) => merge_value(existing, v),
                None => {
                    d.insert(k.clone(), v.clone());
                }
            }
        }
    }
    extra(&mut dst.extra, &src.extra);
}

/// Every set field of `c` as (Warewulf field name, is a list, value text),
/// in the order Warewulf lists them.
pub fn flatten(c: &NodeConf) -> Vec<(String, bool, String)> {
    let mut out = Vec::new();
    let push_list = |out: &mut Vec<_>, name: &str, v: &Option<Vec<String>>| {
        if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
            out.push((name.to_owned(), true, v.join(",")));
        }
    };
    let push = |out: &mut Vec<_>, name: String, v: &Option<String>| {
        if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
            out.push((name, false, v.clone()));
        }
    };
    let push_bool = |out: &mut Vec<_>, name: String, v: &Option<bool>| {
        if let Some(v) = v {
            out.push((name, false, v.to_string()));
        }
    };
    let push_tags = |out: &mut Vec<_>, prefix: &str, v: &Option<BTreeMap<String, String>>| {
        for (k, val) in v.iter().flatten() {
            if !val.is_empty() {
                out.push((format!("{prefix}Tags[{k}]"), false, val.clone()));
            }
        }
    };
    push(&mut out, "Discoverable".into(), &c.discoverable);
    push(&mut out, "AssetKey".into(), &c.asset_key);
    push_list(&mut out, "Profiles", &c.profiles);
    push(&mut out, "Comment".into(), &c.comment);
    push(&mut out, "ClusterName".into(), &c.cluster_name);
    push(&mut out, "ImageName".into(), &c.image_name);
    push(&mut out, "Ipxe".into(), &c.ipxe);
    push_list(&mut out, "RuntimeOverlay", &c.runtime_overlay);
    push_list(&mut out, "SystemOverlay", &c.system_overlay);
    if let Some(k) = &c.kernel {
        push(&mut out, "Kernel.Version".into(), &k.version);
        push_list(&mut out, "Kernel.Args", &k.args);
    }
    if let Some(i) = &c.ipmi {
        push(&mut out, "Ipmi.UserName".into(), &i.username);
        push(&mut out, "Ipmi.Password".into(), &i.password);
        push(&mut out, "Ipmi.Ipaddr".into(), &i.ipaddr);
        push(&mut out, "Ipmi.Gateway".into(), &i.gateway);
        push(&mut out, "Ipmi.Netmask".into(), &i.netmask);
        push(&mut out, "Ipmi.Port".into(), &i.port);
        push(&mut out, "Ipmi.Interface".into(), &i.interface);
        push(&mut out, "Ipmi.EscapeChar".into(), &i.escapechar);
        push(&mut out, "Ipmi.Write".into(), &i.write);
        push(&mut out, "Ipmi.Template".into(), &i.template);
        push_tags(&mut out, "Ipmi.", &i.tags);
    }
    push(&mut out, "Init".into(), &c.init);
    push(&mut out, "Root".into(), &c.root);
    for (name, d) in c.netdevs.iter().flatten() {
        let p = format!("NetDevs[{name}].");
        push(&mut out, format!("{p}Type"), &d.kind);
        push(&mut out, format!("{p}OnBoot"), &d.onboot);
        push(&mut out, format!("{p}Device"), &d.device);
        push(&mut out, format!("{p}Hwaddr"), &d.hwaddr);
        push(&mut out, format!("{p}Ipaddr"), &d.ipaddr);
        push(&mut out, format!("{p}Netmask"), &d.netmask);
        push(&mut out, format!("{p}Gateway"), &d.gateway);
        push(&mut out, format!("{p}Ipaddr6"), &d.ipaddr6);
        push(&mut out, format!("{p}PrefixLen6"), &d.prefixlen6);
        push(&mut out, format!("{p}Gateway6"), &d.gateway6);
        push(&mut out, format!("{p}MTU"), &d.mtu);
        push_tags(&mut out, &p, &d.tags);
    }
    push_tags(&mut out, "", &c.tags);
    push(&mut out, "PrimaryNetDev".into(), &c.primary_network);
    for (name, d) in c.disks.iter().flatten() {
        let p = format!("Disks[{name}].");
        push_bool(&mut out, format!("{p}WipeTable"), &d.wipe_table);
        for (pname, part) in d.partitions.iter().flatten() {
            let q = format!("{p}Partitions[{pname}].");
            push(&mut out, format!("{q}Number"), &part.number);
            push(&mut out, format!("{q}SizeMiB"), &part.size_mib);
            push(&mut out, format!("{q}StartMiB"), &part.start_mib);
            push(&mut out, format!("{q}TypeGuid"), &part.type_guid);
            push(&mut out, format!("{q}Guid"), &part.guid);
            push_bool(
                &mut out,
                format!("{q}WipePartitionEntry"),
                &part.wipe_partition_entry,
            );
            push_bool(&mut out, format!("{q}ShouldExist"), &part.should_exist);
            push_bool(&mut out, format!("{q}Resize"), &part.resize);
        }
    }
    for (name, f) in c.filesystems.iter().flatten() {
        let p = format!("FileSystems[{name}].");
        push(&mut out, format!("{p}Format"), &f.format);
        push(&mut out, format!("{p}Path"), &f.path);
        push_bool(&mut out, format!("{p}WipeFileSystem"), &f.wipe_filesystem);
        push(&mut out, format!("{p}Label"), &f.label);
        push(&mut out, format!("{p}Uuid"), &f.uuid);
        push_list(&mut out, &format!("{p}Options"), &f.options);
        push(&mut out, format!("{p}MountOptions"), &f.mount_options);
    }
    for (name, v) in c.resources.iter().flatten() {
        let text = serde_json::to_string(v).unwrap_or_else(|_| format!("{v:?}"));
        out.push((format!("Resources[{name}]"), false, text));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(yaml: &str) -> NodesConf {
        serde_norway::from_str(yaml).unwrap()
    }

    fn field(db: &NodesConf, id: &str, name: &str) -> Option<FieldSource> {
        field_sources(db.profiles(), id, &db.nodes()[id])
            .into_iter()
            .find(|f| f.field == name)
    }

    #[test]
    fn clean_list_drops_negations() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let cases: &[(&[&str], &[&str])] = &[
            (&["a", "b", "~a"], &["b"]),
            (&["~a", "a", "b"], &["b"]),
            (&["a", "a"], &["a", "a"]),
            (&["~x"], &[]),
            (&[], &[]),
        ];
        for (input, want) in cases {
            assert_eq!(clean_list(&v(input)), v(want), "{input:?}");
        }
    }

    #[test]
    fn profile_expansion_table() {
        let db = conf(
            "nodeprofiles:\n  base: {}\n  mid:\n    profiles: [base]\n  top:\n    profiles: [mid, base]\n  other: {}\n  loop1:\n    profiles: [loop2]\n  loop2:\n    profiles: [loop1]\n",
        );
        let p = db.profiles();
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let cases: &[(&[&str], &[&str])] = &[
            (&["base"], &["base"]),
            (&["mid"], &["base", "mid"]),
            (&["top"], &["base", "mid", "top"]),
            (&["other", "top"], &["other", "base", "mid", "top"]),
            (&["top", "~mid"], &["base", "top"]),
            (&["base", "base"], &["base"]),
            (&["loop1"], &["loop2", "loop1"]),
            (&["nosuch"], &["nosuch"]),
        ];
        for (input, want) in cases {
            assert_eq!(expand_profiles(p, &v(input)), v(want), "{input:?}");
        }
    }

    #[test]
    fn merge_rules_table() {
        let db = conf(
            r#"
nodeprofiles:
  default:
    comment: from default
    image name: rocky
    system overlay: [wwinit, hosts]
    kernel:
      args: [quiet]
    tags: {a: "1", b: "1"}
    network devices:
      default:
        netmask: 255.255.255.0
        gateway: 10.0.0.254
    resources:
      fstab:
        - spec: x
  gpu:
    profiles: [default]
    image name: rocky-gpu
    system overlay: [nvidia, ~hosts]
    tags: {b: "2"}
    ipmi:
      username: admin
nodes:
  n1:
    profiles: [gpu]
    comment: own comment
    kernel:
      args: [console=ttyS0]
    tags: {c: "3"}
    network devices:
      default:
        ipaddr: 10.0.0.1
        hwaddr: 00:00:00:00:00:01
  n2:
    profiles: [default, ~default]
    discoverable: yes
"#,
        );
        let n1 = merge_node(&db, "n1").unwrap();
        let c = &n1.conf;
        assert_eq!(c.comment.as_deref(), Some("own comment"));
        assert_eq!(c.image_name.as_deref(), Some("rocky-gpu"));
        assert_eq!(c.system_overlay.as_ref().unwrap(), &["wwinit", "nvidia"]);
        assert_eq!(
            c.kernel.as_ref().unwrap().args.as_ref().unwrap(),
            &["quiet", "console=ttyS0"]
        );
        let tags = c.tags.as_ref().unwrap();
        assert_eq!(
            (tags["a"].as_str(), tags["b"].as_str(), tags["c"].as_str()),
            ("1", "2", "3")
        );
        let dev = &c.netdevs.as_ref().unwrap()["default"];
        assert_eq!(dev.netmask.as_deref(), Some("255.255.255.0"));
        assert_eq!(dev.ipaddr.as_deref(), Some("10.0.0.1"));
        assert_eq!(c.primary_network.as_deref(), Some("default"));
        assert_eq!(c.profiles.as_ref().unwrap(), &["gpu"]);
        assert!(c.resources.as_ref().unwrap().contains_key("fstab"));

        let src = |f: &str| field(&db, "n1", f).map(|f| f.source);
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(src("Comment"), some("SUPERSEDED"));
        assert_eq!(src("ImageName"), some("gpu"));
        assert_eq!(src("SystemOverlay"), some("default,gpu"));
        assert_eq!(src("Kernel.Args"), some("default,n1"));
        assert_eq!(src("Tags[b]"), some("gpu"));
        assert_eq!(src("Tags[c]"), some(""));
        assert_eq!(src("NetDevs[default].Netmask"), some("default"));
        assert_eq!(src("NetDevs[default].Ipaddr"), some(""));
        assert_eq!(src("Ipmi.UserName"), some("gpu"));
        assert_eq!(
            field(&db, "n1", "Kernel.Args").unwrap().value,
            "quiet,console=ttyS0"
        );

        let n2 = merge_node(&db, "n2").unwrap();
        assert_eq!(n2.conf.comment, None, "negated profile must not apply");
        assert_eq!(n2.conf.discoverable.as_deref(), Some("yes"));
    }

    #[test]
    fn profiles_never_set_node_only_fields() {
        let db = conf(
            "nodeprofiles:\n  p:\n    discoverable: 'true'\n    asset key: k\nnodes:\n  n:\n    profiles: [p]\n",
        );
        let n = merge_node(&db, "n").unwrap();
        assert_eq!(n.conf.discoverable, None);
        assert_eq!(n.conf.asset_key, None);
    }

    #[test]
    fn missing_profiles_are_reported() {
        let db = conf("nodes:\n  n:\n    profiles: [ghost]\n");
        assert_eq!(merge_node(&db, "n").unwrap().missing_profiles, ["ghost"]);
    }

    #[test]
    fn primary_falls_back_to_first_device() {
        let db = conf(
            "nodes:\n  n:\n    primary network: nope\n    network devices:\n      b: {}\n      a: {}\n",
        );
        assert_eq!(merge_node(&db, "n").unwrap().primary_netdev(), Some("a"));
    }

    #[test]
    fn resources_merge_maps_and_replace_lists() {
        let db = conf(
            "nodeprofiles:\n  p:\n    resources:\n      r: {x: 1, l: [1]}\nnodes:\n  n:\n    profiles: [p]\n    resources:\n      r: {y: 2, l: [2]}\n",
        );
        let n = merge_node(&db, "n").unwrap();
        let r = &n.conf.resources.as_ref().unwrap()["r"];
        assert_eq!(r.get("x").and_then(Value::as_u64), Some(1));
        assert_eq!(r.get("y").and_then(Value::as_u64), Some(2));
        assert_eq!(
            r.get("l").and_then(Value::as_sequence).map(Vec::len),
            Some(1)
        );
    }
}
