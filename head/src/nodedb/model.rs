//! The `nodes.conf` data model, field for field as Warewulf 4.6/4.7 writes it.
//!
//! Scalars are kept as the strings found in the file, so `no`, `0755` and
//! `1.10` survive a read/write cycle unchanged; Warewulf stores its booleans
//! (`onboot`, `discoverable`, `ipmi write`) the same way and interprets them
//! on use (see [`ww_bool`]). Keys this version does not know are kept in an
//! `extra` map on every structure and written back after the known ones.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_norway::Value;

/// Spellings Warewulf treats as "clear this field" on the command line.
pub const UNSET_VALUES: &[&str] = &["unset", "delete", "undef", "--", "nil", "0.0.0.0"];

/// True when `value` is one of Warewulf's "clear this field" words.
pub fn is_unset_value(value: &str) -> bool {
    UNSET_VALUES.iter().any(|u| u.eq_ignore_ascii_case(value))
}

/// Interprets a Warewulf boolean string. `default` is returned for an empty
/// value (`onboot` defaults to true, `discoverable` to false); an
/// unrecognised spelling also gives `default`, as Warewulf does.
#[allow(dead_code, reason = "used by the overlay and server modules")]
pub fn ww_bool(value: Option<&str>, default: bool) -> bool {
    let Some(v) = value.map(str::trim) else {
        return default;
    };
    if v.is_empty() {
        return default;
    }
    if is_unset_value(v) {
        return false;
    }
    parse_bool(v).unwrap_or(default)
}

/// Strict parse of the spellings Warewulf accepts for a boolean:
/// `yes`/`no` and everything Go's `strconv.ParseBool` takes.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ if v.eq_ignore_ascii_case("yes") => Some(true),
        _ if v.eq_ignore_ascii_case("no") => Some(false),
        _ => None,
    }
}

/// Whether a field counts as empty and is left out when writing (`omitempty`).
pub trait IsEmpty {
    fn is_empty_field(&self) -> bool;
}

impl IsEmpty for String {
    fn is_empty_field(&self) -> bool {
        self.is_empty()
    }
}
impl<T> IsEmpty for Vec<T> {
    fn is_empty_field(&self) -> bool {
        self.is_empty()
    }
}
impl<K, V> IsEmpty for BTreeMap<K, V> {
    fn is_empty_field(&self) -> bool {
        self.is_empty()
    }
}
impl IsEmpty for bool {
    fn is_empty_field(&self) -> bool {
        false
    }
}

/// Defines a YAML mapping type with known keys (all optional), an `extra` map
/// for unknown keys, and serde impls that keep scalars as written.
macro_rules! yaml_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* $key:literal => $field:ident : $ty:ty $([$wrap:ty])? ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, Default, PartialEq)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: Option<$ty>, )*
            /// Keys this version does not know; written back unchanged.
            pub extra: BTreeMap<String, Value>,
        }

        impl $name {
            /// True when no field (known or unknown) is set.
            #[allow(dead_code, reason = "generated for every structure; not all callers need it")]
            pub fn is_blank(&self) -> bool {
                true $( && self.$field.as_ref().is_none_or(|v| v.is_empty_field()) )*
                    && self.extra.is_empty()
            }
        }

        impl IsEmpty for $name {
            fn is_empty_field(&self) -> bool {
                false
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut map = s.serialize_map(None)?;
                $(
                    if let Some(v) = &self.$field {
                        if !v.is_empty_field() {
                            map.serialize_entry($key, v)?;
                        }
                    }
                )*
                for (k, v) in &self.extra {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str(concat!("a mapping (", stringify!($name), ")"))
                    }
                    fn visit_unit<E: de::Error>(self) -> Result<$name, E> {
                        Ok($name::default())
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<$name, A::Error> {
                        let mut out = $name::default();
                        while let Some(key) = map.next_key::<String>()? {
                            match key.as_str() {
                                $( $key => out.$field = yaml_struct!(@read map $($wrap)?), )*
                                _ => {
                                    let v: Value = map.next_value()?;
                                    out.extra.insert(key, v);
                                }
                            }
                        }
                        Ok(out)
                    }
                }
                d.deserialize_map(V)
            }
        }
    };
    (@read $map:ident) => { $map.next_value()? };
    (@read $map:ident $wrap:ty) => { $map.next_value::<$wrap>()?.0 };
}

/// A list that may also be written as one scalar (older files do this).
struct LooseList(Option<Vec<String>>);

impl<'de> Deserialize<'de> for LooseList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LooseList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of strings or one string")
            }
            fn visit_unit<E: de::Error>(self) -> Result<LooseList, E> {
                Ok(LooseList(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<LooseList, E> {
                Ok(LooseList(None))
            }
            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<LooseList, D2::Error> {
                d.deserialize_any(V)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<LooseList, E> {
                Ok(LooseList(Some(vec![v.to_owned()])))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<LooseList, E> {
                Ok(LooseList(Some(vec![v.to_string()])))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<LooseList, E> {
                Ok(LooseList(Some(vec![v.to_string()])))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<LooseList, E> {
                Ok(LooseList(Some(vec![v.to_string()])))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<LooseList, E> {
                Ok(LooseList(Some(vec![v.to_string()])))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<LooseList, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    out.push(item);
                }
                Ok(LooseList(Some(out)))
            }
        }
        d.deserialize_option(V)
    }
}

/// A YAML boolean that also accepts Warewulf's string spellings on input;
/// always written as a real boolean (Warewulf types these as `*bool`).
struct LooseBool(Option<bool>);

impl<'de> Deserialize<'de> for LooseBool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw: Option<String> = Option::deserialize(d)?;
        match raw.as_deref().map(str::trim) {
            None | Some("") => Ok(LooseBool(None)),
            Some(s) => match parse_bool(s).or_else(|| match s.to_ascii_lowercase().as_str() {
                "on" | "y" => Some(true),
                "off" | "n" => Some(false),
                _ => None,
            }) {
                Some(b) => Ok(LooseBool(Some(b))),
                None => Err(de::Error::custom(format!("{s:?} is not a boolean"))),
            },
        }
    }
}

yaml_struct! {
    /// Kernel selection and command line.
    pub struct KernelConf {
        "version" => version: String,
        "args" => args: Vec<String> [LooseList],
    }
}

yaml_struct! {
    /// Baseboard management controller settings.
    pub struct IpmiConf {
        "username" => username: String,
        "password" => password: String,
        "ipaddr" => ipaddr: String,
        "gateway" => gateway: String,
        "netmask" => netmask: String,
        "port" => port: String,
        "interface" => interface: String,
        "escapechar" => escapechar: String,
        "write" => write: String,
        "template" => template: String,
        "tags" => tags: BTreeMap<String, String>,
    }
}

yaml_struct! {
    /// One network device of a node or profile.
    pub struct NetDev {
        "type" => kind: String,
        "onboot" => onboot: String,
        "device" => device: String,
        "hwaddr" => hwaddr: String,
        "ipaddr" => ipaddr: String,
        "netmask" => netmask: String,
        "gateway" => gateway: String,
        "ipaddr6" => ipaddr6: String,
        "prefixlen6" => prefixlen6: String,
        "gateway6" => gateway6: String,
        "mtu" => mtu: String,
        "tags" => tags: BTreeMap<String, String>,
    }
}

yaml_struct! {
    /// One partition of a disk, keyed by its label.
    pub struct Partition {
        "number" => number: String,
        "size_mib" => size_mib: String,
        "start_mib" => start_mib: String,
        "type_guid" => type_guid: String,
        "guid" => guid: String,
        "wipe_partition_entry" => wipe_partition_entry: bool [LooseBool],
        "should_exist" => should_exist: bool [LooseBool],
        "resize" => resize: bool [LooseBool],
    }
}

yaml_struct! {
    /// One disk, keyed by its device path.
    pub struct Disk {
        "wipe_table" => wipe_table: bool [LooseBool],
        "partitions" => partitions: BTreeMap<String, Partition>,
    }
}

yaml_struct! {
    /// One filesystem, keyed by its block device.
    pub struct FileSystem {
        "format" => format: String,
        "path" => path: String,
        "wipe_filesystem" => wipe_filesystem: bool [LooseBool],
        "label" => label: String,
        "uuid" => uuid: String,
        "options" => options: Vec<String> [LooseList],
        "mount_options" => mount_options: String,
    }
}

yaml_struct! {
    /// A node or a profile as written in `nodes.conf`. Profiles do not carry
    /// `discoverable` or `asset key`; they are ignored when merging a profile.
    pub struct NodeConf {
        "discoverable" => discoverable: String,
        "asset key" => asset_key: String,
        "profiles" => profiles: Vec<String> [LooseList],
        "comment" => comment: String,
        "cluster name" => cluster_name: String,
        "image name" => image_name: String,
        "ipxe template" => ipxe: String,
        "runtime overlay" => runtime_overlay: Vec<String> [LooseList],
        "system overlay" => system_overlay: Vec<String> [LooseList],
        "kernel" => kernel: KernelConf,
        "ipmi" => ipmi: IpmiConf,
        "init" => init: String,
        "root" => root: String,
        "network devices" => netdevs: BTreeMap<String, NetDev>,
        "tags" => tags: BTreeMap<String, String>,
        "primary network" => primary_network: String,
        "disks" => disks: BTreeMap<String, Disk>,
        "filesystems" => filesystems: BTreeMap<String, FileSystem>,
        "resources" => resources: BTreeMap<String, Value>,
    }
}

yaml_struct! {
    /// The whole `nodes.conf` document.
    pub struct NodesConf {
        "nodeprofiles" => nodeprofiles: BTreeMap<String, NodeConf>,
        "nodes" => nodes: BTreeMap<String, NodeConf>,
    }
}

impl NodesConf {
    /// The profiles, empty when the file has none.
    pub fn profiles(&self) -> &BTreeMap<String, NodeConf> {
        static EMPTY: BTreeMap<String, NodeConf> = BTreeMap::new();
        self.nodeprofiles.as_ref().unwrap_or(&EMPTY)
    }

    /// The nodes, empty when the file has none.
    pub fn nodes(&self) -> &BTreeMap<String, NodeConf> {
        static EMPTY: BTreeMap<String, NodeConf> = BTreeMap::new();
        self.nodes.as_ref().unwrap_or(&EMPTY)
    }

    /// Mutable profiles map, created on first use.
    pub fn profiles_mut(&mut self) -> &mut BTreeMap<String, NodeConf> {
        self.nodeprofiles.get_or_insert_with(BTreeMap::new)
    }

    /// Mutable nodes map, created on first use.
    pub fn nodes_mut(&mut self) -> &mut BTreeMap<String, NodeConf> {
        self.nodes.get_or_insert_with(BTreeMap::new)
    }

    /// Serialises in Warewulf's layout; both top-level maps are always present.
    pub fn to_yaml(&self) -> Result<String, serde_norway::Error> {
        let mut doc = self.clone();
        doc.nodeprofiles.get_or_insert_with(BTreeMap::new);
        doc.nodes.get_or_insert_with(BTreeMap::new);
        // `serialize` skips empty maps; write them as `{}` like Warewulf does.
        let mut map = serde_norway::Mapping::new();
        map.insert(
            "nodeprofiles".into(),
            serde_norway::to_value(doc.profiles())?,
        );
        map.insert("nodes".into(), serde_norway::to_value(doc.nodes())?);
        for (k, v) in &doc.extra {
            map.insert(k.as_str().into(), v.clone());
        }
        serde_norway::to_string(&map)
    }
}

impl NodeConf {
    /// The netdev named `name`, created on first use.
    pub fn netdev_mut(&mut self, name: &str) -> &mut NetDev {
        self.netdevs
            .get_or_insert_with(BTreeMap::new)
            .entry(name.to_owned())
            .or_default()
    }

    /// The IPMI section, created on first use.
    pub fn ipmi_mut(&mut self) -> &mut IpmiConf {
        self.ipmi.get_or_insert_with(IpmiConf::default)
    }

    /// The kernel section, created on first use.
    pub fn kernel_mut(&mut self) -> &mut KernelConf {
        self.kernel.get_or_insert_with(KernelConf::default)
    }

    /// Drops empty sections so the written file stays tidy.
    pub fn tidy(&mut self) {
        if self.ipmi.as_ref().is_some_and(IpmiConf::is_blank) {
            self.ipmi = None;
        }
        if self.kernel.as_ref().is_some_and(KernelConf::is_blank) {
            self.kernel = None;
        }
        if let Some(n) = &mut self.netdevs {
            for dev in n.values_mut() {
                if dev.tags.as_ref().is_some_and(BTreeMap::is_empty) {
                    dev.tags = None;
                }
            }
        }
        if self.tags.as_ref().is_some_and(BTreeMap::is_empty) {
            self.tags = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_stay_as_written() {
        let text = "comment: 0755\ncluster name: no\nnetwork devices:\n  default:\n    onboot: yes\n    mtu: 9000\n    hwaddr: 00:11:22:33:44:55\n";
        let n: NodeConf = serde_norway::from_str(text).unwrap();
        assert_eq!(n.comment.as_deref(), Some("0755"));
        assert_eq!(n.cluster_name.as_deref(), Some("no"));
        let dev = &n.netdevs.as_ref().unwrap()["default"];
        assert_eq!(dev.onboot.as_deref(), Some("yes"));
        assert_eq!(dev.mtu.as_deref(), Some("9000"));
        assert_eq!(dev.hwaddr.as_deref(), Some("00:11:22:33:44:55"));
        let again: NodeConf =
            serde_norway::from_str(&serde_norway::to_string(&n).unwrap()).unwrap();
        assert_eq!(again, n);
    }

    #[test]
    fn unknown_keys_are_kept() {
        let text = "comment: x\nfuture key:\n  a: [1, 2]\nnetwork devices:\n  d:\n    vlan: 7\n";
        let n: NodeConf = serde_norway::from_str(text).unwrap();
        assert!(n.extra.contains_key("future key"));
        assert!(n.netdevs.as_ref().unwrap()["d"].extra.contains_key("vlan"));
        let out = serde_norway::to_string(&n).unwrap();
        assert!(out.contains("future key"), "{out}");
        assert!(out.contains("vlan: 7"), "{out}");
    }

    #[test]
    fn resources_round_trip_as_written() {
        let text = "resources:\n  fstab:\n  - mode: 0755\n    spec: no\n    n: 7\n";
        let n: NodeConf = serde_norway::from_str(text).unwrap();
        let out = serde_norway::to_string(&n).unwrap();
        let again: NodeConf = serde_norway::from_str(&out).unwrap();
        assert_eq!(again, n);
        assert!(out.contains("0755"), "{out}");
        assert!(out.contains("spec: no"), "{out}");
    }

    #[test]
    fn kernel_args_accept_a_scalar() {
        let n: NodeConf =
            serde_norway::from_str("kernel:\n  args: quiet crashkernel=no\n").unwrap();
        assert_eq!(n.kernel.unwrap().args.unwrap(), ["quiet crashkernel=no"]);
    }

    #[test]
    fn disk_booleans_accept_spellings() {
        let d: Disk = serde_norway::from_str("wipe_table: yes\n").unwrap();
        assert_eq!(d.wipe_table, Some(true));
        let d: Disk = serde_norway::from_str("wipe_table: false\n").unwrap();
        assert_eq!(d.wipe_table, Some(false));
        assert!(serde_norway::from_str::<Disk>("wipe_table: maybe\n").is_err());
        assert_eq!(serde_norway::to_string(&d).unwrap(), "wipe_table: false\n");
    }

    #[test]
    fn bool_spellings() {
        for t in ["true", "True", "TRUE", "t", "1", "yes", "Yes"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["false", "F", "0", "no", "NO"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        assert_eq!(parse_bool("on"), None);
        assert!(ww_bool(None, true));
        assert!(!ww_bool(Some("no"), true));
        assert!(ww_bool(Some("garbage"), true));
        assert!(!ww_bool(Some("UNDEF"), true));
        assert!(!ww_bool(Some(""), false));
    }
}
