//! The data handed to overlay templates: Warewulf's `TemplateStruct`.
//!
//! Field names are Warewulf's Go names. The root holds the site (`Ipaddr`,
//! `Netmask`, `Dhcp`, `Nfs`, `Ssh`, `Warewulf`, `Tftp`, `Paths`, …), the
//! build (`BuildHost`, `BuildTime`, `BuildTimeUnix`, `BuildSource`,
//! `Overlay`), `AllNodes`, `ThisNode` and every field of the node itself.
//! Go methods the stock templates call are precomputed fields: `Id`,
//! `$netdev.Primary`, `$netdev.IpCIDR`, `.OnBoot.Bool`/`.BoolDefaultTrue`,
//! `DiskList`, `FileSystemList`, `PartitionList`, and `Id` of disks,
//! partitions and filesystems.
//!
//! [`Site`] is built once per run (one build time for every node) and its
//! `AllNodes` list once, on first use, shared by every render.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use wwtemplate::{Object, Value};

use crate::config::Config;
use crate::nodedb::MergedNode;
use crate::nodedb::model::{Disk, FileSystem, NetDev};

/// Where a [`Site`] gets the list of all nodes from.
pub type NodesLoader = dyn Fn() -> Result<Arc<Vec<MergedNode>>, String> + Send + Sync;

/// Site-wide template data of one build run.
pub struct Site {
    base: Object,
    nodes: Box<NodesLoader>,
    all_nodes: OnceLock<Result<Value, String>>,
}

impl Site {
    /// The site part of the data, with `now` as the build time of this run.
    pub fn new(config: &Config, nodes: Arc<Vec<MergedNode>>, now: SystemTime) -> Self {
        Self::lazy(config, Box::new(move || Ok(nodes.clone())), now)
    }

    /// Like [`Site::new`], with the node list loaded only if a template
    /// reads `AllNodes`.
    pub fn lazy(config: &Config, nodes: Box<NodesLoader>, now: SystemTime) -> Self {
        Self {
            base: site_object(config, now).compact(),
            nodes,
            all_nodes: OnceLock::new(),
        }
    }

    /// Every node, in `nodes.conf` order (built once, in parallel).
    pub fn all_nodes(&self) -> Result<Value, String> {
        self.all_nodes
            .get_or_init(|| {
                let nodes = (self.nodes)()?;
                Ok(Value::list(crate::par::map(&nodes, 0, 1, node_value)))
            })
            .clone()
    }

    /// Data for a template that reads no node field (rendered once per run).
    pub fn shared_data(&self, overlay: &str, source: &str) -> Result<Value, String> {
        Ok(self
            .base
            .clone()
            .field("AllNodes", self.all_nodes()?)
            .field("Overlay", overlay)
            .field("BuildSource", source)
            .build())
    }

    /// The per-node part of the data, built once per node and run.
    pub fn node(&self, node: &MergedNode, uses_all: bool) -> Result<NodeData, String> {
        let this = node_value(node);
        let mut full = node_fields(self.base.clone(), node).field("ThisNode", this);
        if uses_all {
            full = full.field("AllNodes", self.all_nodes()?);
        }
        Ok(NodeData {
            full: full.compact(),
        })
    }
}

/// One node as templates see it (an element of `AllNodes`, `ThisNode`).
pub fn node_value(node: &MergedNode) -> Value {
    node_fields(Object::default(), node).build()
}

/// Site plus one node's fields; [`NodeData::data`] adds the per-template fields.
pub struct NodeData {
    full: Object,
}

impl NodeData {
    /// Data for one template of overlay `overlay` read from `source`.
    pub fn data(&self, overlay: &str, source: &str) -> Value {
        self.full
            .clone()
            .field("Overlay", overlay)
            .field("BuildSource", source)
            .build()
    }
}

/// Go's `01-02-2006 15:04:05 MST` in UTC.
fn go_build_time(secs: u64) -> String {
    let iso = crate::cli::output::utc_time(secs);
    // "YYYY-MM-DD HH:MM:SS UTC" → "MM-DD-YYYY HH:MM:SS UTC"
    format!(
        "{}-{}-{}{}",
        &iso[5..7],
        &iso[8..10],
        &iso[0..4],
        &iso[10..]
    )
}

fn prefix_len(mask: &str) -> Option<u32> {
    mask.parse::<Ipv4Addr>()
        .ok()
        .map(|m| u32::from(m).count_ones())
}

fn site_object(c: &Config, now: SystemTime) -> Object {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ipaddr = c.ipaddr.clone().unwrap_or_default();
    let netmask = c.netmask.clone().unwrap_or_default();
    let network = c.network.clone().unwrap_or_default();
    let prefix = prefix_len(&netmask);
    let cidr = |a: &str| match prefix {
        Some(p) if !a.is_empty() => format!("{a}/{p}"),
        _ => String::new(),
    };
    let ip6 = c.ipaddr6.clone().unwrap_or_default();
    let plen6 = c.prefixlen6.clone().unwrap_or_default();
    let (ipcidr6, net6, netcidr6) = match (ip6.parse::<Ipv6Addr>(), plen6.parse::<u32>()) {
        (Ok(a), Ok(p)) if p <= 128 => {
            let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
            let net = Ipv6Addr::from(u128::from(a) & mask);
            (format!("{a}/{p}"), net.to_string(), format!("{net}/{p}"))
        }
        _ => Default::default(),
    };
    let w = &c.warewulf;
    let warewulf = Value::object()
        .field("Port", w.port)
        .field("SecurePort", w.tls_port)
        .field("Secure", w.secure)
        .field("SecureRuntime", w.secure)
        .field("TLS", w.tls)
        .field("UpdateInterval", w.update_interval)
        .field("AutobuildOverlays", w.autobuild_overlays)
        .field("EnableHostOverlay", w.host_overlay)
        .field("Syslog", w.syslog)
        .field("GrubBoot", w.grubboot)
        .field("DataStore", w.datastore.clone().unwrap_or_default());
    let d = &c.dhcp;
    let dhcp = Value::object()
        .field("Enabled", d.enabled)
        .field("Template", d.template.as_str())
        .field("RangeStart", d.range_start.clone().unwrap_or_default())
        .field("RangeEnd", d.range_end.clone().unwrap_or_default())
        .field("Range6Start", d.range6_start.clone().unwrap_or_default())
        .field("Range6End", d.range6_end.clone().unwrap_or_default())
        .field("SystemdName", d.systemd_name.as_str());
    let t = &c.tftp;
    let tftp = Value::object()
        .field("Enabled", t.enabled)
        .field("TftpRoot", t.tftproot.to_string_lossy().as_ref())
        .field("SystemdName", t.systemd_name.as_str())
        .field(
            "IpxeBinaries",
            Value::map(t.ipxe.iter().map(|(k, v)| (k, v.as_str()))),
        );
    let exports: Vec<Value> = c
        .nfs
        .export_paths
        .iter()
        .map(|e| {
            Value::object()
                .field("Path", e.path.as_str())
                .field("ExportOptions", e.export_options.as_str())
                .build()
        })
        .collect();
    let nfs = Value::object()
        .field("Enabled", c.nfs.enabled)
        .field("ExportsExtended", Value::list(exports))
        .field("SystemdName", c.nfs.systemd_name.as_str());
    let ssh = Value::object().field("KeyTypes", c.ssh.key_types.clone());
    let p = &c.paths;
    let s = |x: &std::path::Path| x.to_string_lossy().into_owned();
    let paths = Value::object()
        .field("Bindir", s(&p.bindir))
        .field("Sysconfdir", s(&p.sysconfdir))
        .field("Localstatedir", s(&p.localstatedir))
        .field("Cachedir", s(&p.cachedir))
        .field("Ipxesource", s(&p.ipxesource))
        .field("Srvdir", s(&p.srvdir))
        .field("Firewallddir", s(&p.firewallddir))
        .field("Systemddir", s(&p.systemddir))
        .field("Datadir", s(&p.datadir))
        .field("WWOverlaydir", s(&p.wwoverlaydir))
        .field("WWChrootdir", s(&p.wwchrootdir))
        .field("WWProvisiondir", s(&p.wwprovisiondir))
        .field("WWClientdir", s(&p.wwclientdir));
    Value::object()
        .field("BuildHost", host)
        .field("BuildTime", go_build_time(secs))
        .field("BuildTimeUnix", secs.to_string())
        .field("Ipaddr", ipaddr.as_str())
        .field("IpCIDR", cidr(&ipaddr))
        .field("Netmask", netmask.as_str())
        .field("Network", network.as_str())
        .field("NetworkCIDR", cidr(&network))
        .field("Ipaddr6", ip6.as_str())
        .field("PrefixLen6", plen6.as_str())
        .field("IpCIDR6", ipcidr6)
        .field("Network6", net6)
        .field("NetworkCIDR6", netcidr6)
        .field("Ipv6", !ip6.is_empty())
        .field("Dhcp", dhcp)
        .field("Nfs", nfs)
        .field("Ssh", ssh)
        .field("Warewulf", warewulf)
        .field("Tftp", tftp)
        .field("Paths", paths)
}

fn opt(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("")
}

/// An optional list as a (possibly empty) template list, without copying it
/// first.
fn string_list(l: &Option<Vec<String>>) -> Value {
    Value::list(l.iter().flatten().map(String::as_str))
}

/// An optional string map as a (possibly empty) template map.
fn string_map(m: &Option<BTreeMap<String, String>>) -> Value {
    Value::map(m.iter().flatten().map(|(k, v)| (k.as_str(), v.as_str())))
}

fn netdev_object(name: &str, nd: &NetDev, primary: bool) -> Value {
    let ip = opt(&nd.ipaddr);
    let mask = opt(&nd.netmask);
    let ipcidr = match prefix_len(mask) {
        Some(p) if !ip.is_empty() => format!("{ip}/{p}"),
        _ => String::new(),
    };
    let ip6 = opt(&nd.ipaddr6);
    let plen6 = opt(&nd.prefixlen6);
    let ipcidr6 = if ip6.is_empty() {
        String::new()
    } else if ip6.contains('/') || plen6.is_empty() {
        ip6.to_string()
    } else {
        format!("{ip6}/{plen6}")
    };
    Value::object()
        .field("Id", name)
        .field("Type", opt(&nd.kind))
        .field("OnBoot", Value::wwbool(opt(&nd.onboot)))
        .field("Device", opt(&nd.device))
        .field("Hwaddr", opt(&nd.hwaddr))
        .field("Ipaddr", ip)
        .field("Netmask", mask)
        .field("Gateway", opt(&nd.gateway))
        .field("Ipaddr6", ip6)
        .field("PrefixLen6", plen6)
        .field("Prefix", plen6)
        .field("Gateway6", opt(&nd.gateway6))
        .field("MTU", opt(&nd.mtu))
        .field("Tags", string_map(&nd.tags))
        .method("Primary", || primary.into())
        .method("IpCIDR", || ipcidr.into())
        .method("IpCIDR6", || ipcidr6.into())
        .build()
}

fn disk_object(name: &str, d: &Disk) -> Value {
    let parts = d.partitions.clone().unwrap_or_default();
    let mut list: Vec<(String, Value)> = parts
        .iter()
        .map(|(label, p)| {
            let v = Value::object()
                .field("Id", label.as_str())
                .field("Number", opt(&p.number))
                .field("SizeMiB", opt(&p.size_mib))
                .field("StartMiB", opt(&p.start_mib))
                .field("TypeGuid", opt(&p.type_guid))
                .field("Guid", opt(&p.guid))
                .field(
                    "WipePartitionEntry",
                    p.wipe_partition_entry.unwrap_or(false),
                )
                .field("ShouldExist", p.should_exist.unwrap_or(false))
                .field("Resize", p.resize.unwrap_or(false))
                .build();
            (label.clone(), v)
        })
        .collect();
    let map = Value::map(list.iter().map(|(k, v)| (k.as_str(), v.clone())));
    // PartitionList: by number (numbered first), then label.
    list.sort_by_key(|(label, _)| {
        let n = parts[label]
            .number
            .as_deref()
            .and_then(|n| n.parse::<u64>().ok());
        (n.is_none(), n, label.clone())
    });
    Value::object()
        .field("Id", name)
        .field("WipeTable", d.wipe_table.unwrap_or(false))
        .field("Partitions", map)
        .method("PartitionList", || {
            Value::list(list.into_iter().map(|(_, v)| v))
        })
        .build()
}

fn fs_object(name: &str, f: &FileSystem) -> Value {
    Value::object()
        .field("Id", name)
        .field("Format", opt(&f.format))
        .field("Path", opt(&f.path))
        .field("WipeFileSystem", f.wipe_filesystem.unwrap_or(false))
        .field("Label", opt(&f.label))
        .field("Uuid", opt(&f.uuid))
        .field("Options", f.options.clone().unwrap_or_default())
        .field("MountOptions", opt(&f.mount_options))
        .build()
}

/// Adds the node's own fields (Warewulf's `node.Node`) with its methods
/// precomputed to `o`.
fn node_fields(o: Object, node: &MergedNode) -> Object {
    let c = &node.conf;
    let primary = node.primary_netdev().unwrap_or("");
    let netdevs = Value::map(
        c.netdevs
            .iter()
            .flatten()
            .map(|(n, nd)| (n.as_str(), netdev_object(n, nd, n == primary))),
    );
    let no_kernel = Default::default();
    let kernel = c.kernel.as_ref().unwrap_or(&no_kernel);
    let kernel = Value::object()
        .field("Version", opt(&kernel.version))
        .field("Args", string_list(&kernel.args))
        .field("Override", "");
    let no_ipmi = Default::default();
    let ipmi = c.ipmi.as_ref().unwrap_or(&no_ipmi);
    let ipmi = Value::object()
        .field("UserName", opt(&ipmi.username))
        .field("Password", opt(&ipmi.password))
        .field("Ipaddr", opt(&ipmi.ipaddr))
        .field("Netmask", opt(&ipmi.netmask))
        .field("Gateway", opt(&ipmi.gateway))
        .field("Port", opt(&ipmi.port))
        .field("Interface", opt(&ipmi.interface))
        .field("EscapeChar", opt(&ipmi.escapechar))
        .field("Write", Value::wwbool(opt(&ipmi.write)))
        .field("Template", opt(&ipmi.template))
        .field("Tags", string_map(&ipmi.tags));
    let disk_values: Vec<(&str, Value)> = c
        .disks
        .iter()
        .flatten()
        .map(|(n, d)| (n.as_str(), disk_object(n, d)))
        .collect();
    let fs_values: Vec<(&str, Value)> = c
        .filesystems
        .iter()
        .flatten()
        .map(|(n, f)| (n.as_str(), fs_object(n, f)))
        .collect();
    let resources: Value = match &c.resources {
        Some(r) => serde_json::to_value(r).map_or_else(|_| Value::nil(), Value::from),
        None => Value::map(Vec::<(String, Value)>::new()),
    };
    let image = opt(&c.image_name);
    o.method("Id", || node.id.as_str().into())
        .field("Hostname", node.id.as_str())
        .field("Comment", opt(&c.comment))
        .field("ClusterName", opt(&c.cluster_name))
        .field("ImageName", image)
        .field("ContainerName", image)
        .field("Container", image)
        .field("Ipxe", opt(&c.ipxe))
        .field("RuntimeOverlay", string_list(&c.runtime_overlay))
        .field("SystemOverlay", string_list(&c.system_overlay))
        .field("Kernel", kernel)
        .field("Ipmi", ipmi)
        .field("Init", opt(&c.init))
        .field("Root", opt(&c.root))
        .field("AssetKey", opt(&c.asset_key))
        .field("Discoverable", Value::wwbool(opt(&c.discoverable)))
        .field("Profiles", string_list(&c.profiles))
        .field("NetDevs", netdevs)
        .field("Tags", string_map(&c.tags))
        .field("PrimaryNetDev", primary)
        .field(
            "Disks",
            Value::map(disk_values.iter().map(|(k, v)| (*k, v.clone()))),
        )
        .method("DiskList", || {
            Value::list(disk_values.iter().map(|(_, v)| v.clone()))
        })
        .field(
            "FileSystems",
            Value::map(fs_values.iter().map(|(k, v)| (*k, v.clone()))),
        )
        .method("FileSystemList", || {
            Value::list(fs_values.iter().map(|(_, v)| v.clone()))
        })
        .field("Resources", resources)
        .field(IGNITION_FIELD, ignition_json(node))
}

/// Hidden field carrying the node's precomputed `IgnitionJson`.
pub const IGNITION_FIELD: &str = "__IgnitionJson";

/// Warewulf's `IgnitionJson`: an Ignition 3.1 config with the node's disks
/// and filesystems (keys sorted, as Go's encoder emits these structs); empty
/// when the node has neither.
fn ignition_json(node: &MergedNode) -> String {
    use serde_json::{Map, Value as J, json};
    let c = &node.conf;
    let disks = c.disks.clone().unwrap_or_default();
    let fss = c.filesystems.clone().unwrap_or_default();
    if disks.is_empty() && fss.is_empty() {
        return String::new();
    }
    let num = |s: &Option<String>| s.as_deref().and_then(|n| n.parse::<i64>().ok());
    let mut jdisks = Vec::new();
    for (dev, d) in &disks {
        let mut parts: Vec<(i64, Option<i64>, J)> = Vec::new();
        for (label, p) in d.partitions.clone().unwrap_or_default() {
            let mut m = Map::new();
            if let Some(g) = &p.guid {
                m.insert("guid".into(), json!(g));
            }
            m.insert("label".into(), json!(label));
            let n = num(&p.number).unwrap_or(0);
            if n != 0 {
                m.insert("number".into(), json!(n));
            }
            if p.resize.unwrap_or(false) {
                m.insert("resize".into(), json!(true));
            }
            // Ignition reads a missing shouldExist as true; an explicit false
            // deletes the partition, so only what the admin wrote is passed on.
            if let Some(v) = p.should_exist {
                m.insert("shouldExist".into(), json!(v));
            }
            let size = num(&p.size_mib);
            if let Some(v) = size {
                m.insert("sizeMiB".into(), json!(v));
            }
            if let Some(v) = num(&p.start_mib) {
                m.insert("startMiB".into(), json!(v));
            }
            if let Some(g) = &p.type_guid {
                m.insert("typeGuid".into(), json!(g));
            }
            if let Some(v) = p.wipe_partition_entry {
                m.insert("wipePartitionEntry".into(), json!(v));
            }
            parts.push((n, size, J::Object(m)));
        }
        parts.sort_by_key(|(n, size, _)| (*n, size.is_none(), *size));
        jdisks.push(json!({
            "device": dev,
            "partitions": parts.into_iter().map(|(_, _, p)| p).collect::<Vec<_>>(),
            "wipeTable": d.wipe_table.unwrap_or(false),
        }));
    }
    let mut jfs = Vec::new();
    for (dev, f) in &fss {
        let mut m = Map::new();
        m.insert("device".into(), json!(dev));
        if let Some(v) = &f.format {
            m.insert("format".into(), json!(v));
        }
        if let Some(v) = &f.label {
            m.insert("label".into(), json!(v));
        }
        if let Some(v) = f.mount_options.as_deref().filter(|v| !v.is_empty()) {
            m.insert("mountOptions".into(), json!([v]));
        }
        if let Some(v) = f.options.as_ref().filter(|v| !v.is_empty()) {
            m.insert("options".into(), json!(v));
        }
        m.insert("path".into(), json!(f.path.clone().unwrap_or_default()));
        if let Some(v) = &f.uuid {
            m.insert("uuid".into(), json!(v));
        }
        m.insert(
            "wipeFilesystem".into(),
            json!(f.wipe_filesystem.unwrap_or(false)),
        );
        jfs.push(J::Object(m));
    }
    let mut storage = Map::new();
    if !jdisks.is_empty() {
        storage.insert("disks".into(), J::Array(jdisks));
    }
    if !jfs.is_empty() {
        storage.insert("filesystems".into(), J::Array(jfs));
    }
    json!({"ignition": {"version": "3.1.0"}, "storage": storage}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_time_format() {
        assert_eq!(go_build_time(1_795_314_896), "11-22-2026 02:34:56 UTC");
        assert_eq!(prefix_len("255.255.255.0"), Some(24));
    }
}
