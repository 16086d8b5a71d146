//! `warewulf.conf`: the head's site configuration, in Warewulf's format.
//!
//! Every key Warewulf 4.6/4.7 reads is modelled with Warewulf's default.
//! `ipaddr` may carry a prefix (`10.0.0.1/24`), which fills `netmask` and
//! `network` when they are not given. The `paths:` section lets a whole site
//! live under one folder. Unknown keys are logged as warnings naming the file
//! and the key; they never stop the command.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Where `warewulf.conf` lives unless `--warewulfconf` or `WAREWULFCONF` says otherwise.
pub const DEFAULT_CONF: &str = "/etc/warewulf/warewulf.conf";

/// Every directory Ironwulf touches derives from these.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct Paths {
    pub bindir: PathBuf,
    pub sysconfdir: PathBuf,
    pub localstatedir: PathBuf,
    pub cachedir: PathBuf,
    pub ipxesource: PathBuf,
    pub srvdir: PathBuf,
    pub firewallddir: PathBuf,
    pub systemddir: PathBuf,
    pub datadir: PathBuf,
    pub wwoverlaydir: PathBuf,
    pub wwchrootdir: PathBuf,
    pub wwprovisiondir: PathBuf,
    pub wwclientdir: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Self {
            bindir: "/usr/bin".into(),
            sysconfdir: "/etc".into(),
            localstatedir: "/var/lib".into(),
            cachedir: "/var/cache".into(),
            ipxesource: "/usr/share/ipxe".into(),
            srvdir: "/var/lib".into(),
            firewallddir: "/usr/lib/firewalld/services".into(),
            systemddir: "/usr/lib/systemd/system".into(),
            datadir: "/usr/share".into(),
            wwoverlaydir: "/var/lib/warewulf/overlays".into(),
            wwchrootdir: "/var/lib/warewulf/chroots".into(),
            wwprovisiondir: "/var/lib/warewulf/provision".into(),
            wwclientdir: "/warewulf".into(),
        }
    }
}

impl Paths {
    /// `<sysconfdir>/warewulf/nodes.conf`, as Warewulf places it.
    pub fn nodes_conf(&self) -> PathBuf {
        self.sysconfdir.join("warewulf").join("nodes.conf")
    }
}

/// The `warewulf:` section: the head's own HTTP service.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct WarewulfSection {
    pub port: u16,
    #[serde(rename = "tls port")]
    pub tls_port: u16,
    pub secure: bool,
    pub tls: bool,
    #[serde(rename = "update interval")]
    pub update_interval: u64,
    #[serde(rename = "autobuild overlays")]
    pub autobuild_overlays: bool,
    #[serde(rename = "host overlay")]
    pub host_overlay: bool,
    pub grubboot: bool,
    pub syslog: bool,
    pub datastore: Option<String>,
}

impl Default for WarewulfSection {
    fn default() -> Self {
        Self {
            port: 9873,
            tls_port: 9874,
            secure: true,
            tls: false,
            update_interval: 60,
            autobuild_overlays: true,
            host_overlay: true,
            grubboot: false,
            syslog: false,
            datastore: None,
        }
    }
}

/// The `dhcp:` section.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct DhcpSection {
    pub enabled: bool,
    pub template: String,
    #[serde(rename = "range start")]
    pub range_start: Option<String>,
    #[serde(rename = "range end")]
    pub range_end: Option<String>,
    #[serde(rename = "range6 start")]
    pub range6_start: Option<String>,
    #[serde(rename = "range6 end")]
    pub range6_end: Option<String>,
    #[serde(rename = "systemd name")]
    pub systemd_name: String,
    /// Ironwulf: answer only PXE/iPXE clients with boot information and leave
    /// addresses to the site's own DHCP server (proxyDHCP, ports 67 and 4011).
    pub proxy: bool,
    /// Ironwulf: interfaces the embedded DHCP server binds to; empty = all.
    pub interfaces: Vec<String>,
}

impl Default for DhcpSection {
    fn default() -> Self {
        Self {
            enabled: true,
            template: "default".into(),
            range_start: None,
            range_end: None,
            range6_start: None,
            range6_end: None,
            systemd_name: "dhcpd".into(),
            proxy: false,
            interfaces: Vec::new(),
        }
    }
}

/// The `tftp:` section.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct TftpSection {
    pub enabled: bool,
    pub tftproot: PathBuf,
    #[serde(rename = "systemd name")]
    pub systemd_name: String,
    /// DHCP option-93 architecture (`00:07`) → iPXE binary name.
    pub ipxe: BTreeMap<String, String>,
    /// Ironwulf: UDP port of the embedded TFTP server.
    pub port: u16,
}

impl Default for TftpSection {
    fn default() -> Self {
        Self {
            enabled: true,
            tftproot: "/var/lib/tftpboot".into(),
            systemd_name: "tftp".into(),
            ipxe: default_ipxe(),
            port: 69,
        }
    }
}

fn default_ipxe() -> BTreeMap<String, String> {
    [
        ("00:00", "undionly.kpxe"),
        ("00:07", "ipxe-snponly-x86_64.efi"),
        ("00:09", "ipxe-snponly-x86_64.efi"),
        ("00:0B", "arm64-efi/snponly.efi"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// One `nfs: export paths:` entry.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct NfsExport {
    pub path: String,
    #[serde(rename = "export options")]
    pub export_options: String,
}

impl Default for NfsExport {
    fn default() -> Self {
        Self {
            path: "/dev/null".into(),
            export_options: "rw,sync,no_subtree_check".into(),
        }
    }
}

/// The `nfs:` section.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct NfsSection {
    pub enabled: bool,
    #[serde(rename = "export paths")]
    pub export_paths: Vec<NfsExport>,
    #[serde(rename = "systemd name")]
    pub systemd_name: String,
}

impl Default for NfsSection {
    fn default() -> Self {
        Self {
            enabled: true,
            export_paths: Vec::new(),
            systemd_name: "nfsd".into(),
        }
    }
}

/// The `ssh:` section.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct SshSection {
    #[serde(rename = "key types")]
    pub key_types: Vec<String>,
}

impl Default for SshSection {
    fn default() -> Self {
        Self {
            key_types: vec!["ed25519".into(), "ecdsa".into(), "rsa".into()],
        }
    }
}

/// One `image mounts:` entry, bind-mounted by `image exec`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct ImageMount {
    pub source: String,
    pub dest: Option<String>,
    pub readonly: bool,
    pub copy: bool,
    pub options: Option<String>,
}

fn default_image_mounts() -> Vec<ImageMount> {
    vec![ImageMount {
        source: "/etc/resolv.conf".into(),
        dest: Some("/etc/resolv.conf".into()),
        ..ImageMount::default()
    }]
}

/// The parsed `warewulf.conf`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct Config {
    pub comment: Option<String>,
    pub ipaddr: Option<String>,
    pub netmask: Option<String>,
    pub network: Option<String>,
    pub fqdn: Option<String>,
    pub ipaddr6: Option<String>,
    pub prefixlen6: Option<String>,
    pub warewulf: WarewulfSection,
    pub dhcp: DhcpSection,
    pub tftp: TftpSection,
    pub nfs: NfsSection,
    pub ssh: SshSection,
    #[serde(rename = "image mounts", alias = "container mounts")]
    pub image_mounts: Vec<ImageMount>,
    pub paths: Paths,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            comment: None,
            ipaddr: None,
            netmask: None,
            network: None,
            fqdn: None,
            ipaddr6: None,
            prefixlen6: None,
            warewulf: WarewulfSection::default(),
            dhcp: DhcpSection::default(),
            tftp: TftpSection::default(),
            nfs: NfsSection::default(),
            ssh: SshSection::default(),
            image_mounts: default_image_mounts(),
            paths: Paths::default(),
        }
    }
}

/// Keys Warewulf knows, per section; anything else earns a warning. Keys that
/// Warewulf accepts but Ironwulf does not use are listed so they stay quiet.
const TOP_KEYS: &[&str] = &[
    "WW_INTERNAL",
    "comment",
    "ipaddr",
    "netmask",
    "network",
    "fqdn",
    "ipaddr6",
    "prefixlen6",
    "ipv6net",
    "warewulf",
    "dhcp",
    "tftp",
    "nfs",
    "ssh",
    "image mounts",
    "container mounts",
    "paths",
    "api",
    "wwclient",
];
const SECTION_KEYS: &[(&str, &[&str])] = &[
    (
        "warewulf",
        &[
            "port",
            "tls port",
            "secure",
            "tls",
            "update interval",
            "autobuild overlays",
            "host overlay",
            "grubboot",
            "syslog",
            "datastore",
        ],
    ),
    (
        "dhcp",
        &[
            "enabled",
            "template",
            "range start",
            "range end",
            "range6 start",
            "range6 end",
            "systemd name",
            "proxy",
            "interfaces",
        ],
    ),
    (
        "tftp",
        &["enabled", "tftproot", "systemd name", "ipxe", "port"],
    ),
    (
        "nfs",
        &["enabled", "export paths", "systemd name", "ganesha exports"],
    ),
    ("ssh", &["key types"]),
    (
        "paths",
        &[
            "bindir",
            "sysconfdir",
            "localstatedir",
            "cachedir",
            "ipxesource",
            "srvdir",
            "firewallddir",
            "systemddir",
            "datadir",
            "wwoverlaydir",
            "wwchrootdir",
            "wwprovisiondir",
            "wwclientdir",
        ],
    ),
];
const EXPORT_KEYS: &[&str] = &["path", "export options", "mount", "mount options"];
const MOUNT_KEYS: &[&str] = &["source", "dest", "readonly", "copy", "options"];

impl Config {
    /// Reads `path`; a missing or empty file gives the defaults.
    pub fn load(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Self::parse(&text, path)
    }

    /// Parses the text of a `warewulf.conf`; `path` only names it in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let raw: serde_norway::Value = serde_norway::from_str(text)
            .map_err(|e| yaml_error(path, &e))
            .with_context(|| format!("parsing {}", path.display()))?;
        if raw.is_null() {
            return Ok(Self::default());
        }
        warn_unknown(path, &raw);
        let mut conf: Config = serde_norway::from_str(text)
            .map_err(|e| yaml_error(path, &e))
            .with_context(|| format!("parsing {}", path.display()))?;
        // Warewulf merges its default iPXE table only when the file names none.
        if conf.tftp.ipxe.is_empty() {
            conf.tftp.ipxe = default_ipxe();
        }
        conf.apply_cidr();
        Ok(conf)
    }

    /// `ipaddr: 10.0.0.1/24` sets the bare address and, when absent, `netmask` and `network`.
    fn apply_cidr(&mut self) {
        let Some(ip) = self.ipaddr.clone() else {
            return;
        };
        let Some((addr, prefix)) = ip.split_once('/') else {
            return;
        };
        let (Ok(addr), Ok(prefix)) = (addr.trim().parse::<Ipv4Addr>(), prefix.trim().parse::<u8>())
        else {
            return;
        };
        if prefix > 32 {
            return;
        }
        let mask = prefix_to_mask(prefix);
        self.ipaddr = Some(addr.to_string());
        if self.netmask.is_none() {
            self.netmask = Some(mask.to_string());
        }
        if self.network.is_none() {
            self.network = Some(Ipv4Addr::from(u32::from(addr) & u32::from(mask)).to_string());
        }
    }

    /// Where the node database lives: `<sysconfdir>/warewulf/nodes.conf`.
    pub fn nodes_conf(&self) -> PathBuf {
        self.paths.nodes_conf()
    }
}

/// A netmask from a prefix length (0..=32).
pub fn prefix_to_mask(prefix: u8) -> Ipv4Addr {
    let bits = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    };
    Ipv4Addr::from(bits)
}

fn yaml_error(path: &Path, e: &serde_norway::Error) -> anyhow::Error {
    match e.location() {
        Some(loc) => anyhow::anyhow!("{}:{}:{}: {e}", path.display(), loc.line(), loc.column()),
        None => anyhow::anyhow!("{}: {e}", path.display()),
    }
}

fn warn_unknown(path: &Path, raw: &serde_norway::Value) {
    let Some(top) = raw.as_mapping() else { return };
    for (key, value) in top {
        let Some(key) = key.as_str() else { continue };
        if !TOP_KEYS.contains(&key) {
            warn_key(path, key);
            continue;
        }
        if let Some((_, known)) = SECTION_KEYS.iter().find(|(name, _)| *name == key) {
            warn_map(path, key, value, known);
        }
        if key == "nfs"
            && let Some(list) = value.get("export paths").and_then(|v| v.as_sequence())
        {
            for entry in list {
                warn_map(path, "nfs.export paths[]", entry, EXPORT_KEYS);
            }
        }
        if key == "image mounts" || key == "container mounts" {
            for entry in value.as_sequence().into_iter().flatten() {
                warn_map(path, &format!("{key}[]"), entry, MOUNT_KEYS);
            }
        }
    }
}

fn warn_map(path: &Path, prefix: &str, value: &serde_norway::Value, known: &[&str]) {
    let Some(map) = value.as_mapping() else {
        return;
    };
    for key in map.keys().filter_map(|k| k.as_str()) {
        if !known.contains(&key) {
            warn_key(path, &format!("{prefix}.{key}"));
        }
    }
}

fn warn_key(path: &Path, key: &str) {
    tracing::warn!("{}: unknown key {key:?} ignored", path.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::parse(text, Path::new("warewulf.conf")).unwrap()
    }

    #[test]
    fn defaults_match_warewulf() {
        let c = Config::default();
        assert_eq!(c.warewulf.port, 9873);
        assert_eq!(c.warewulf.tls_port, 9874);
        assert!(c.warewulf.secure && !c.warewulf.tls && c.warewulf.autobuild_overlays);
        assert_eq!(c.warewulf.update_interval, 60);
        assert_eq!(c.dhcp.template, "default");
        assert_eq!(c.tftp.ipxe["00:00"], "undionly.kpxe");
        assert_eq!(c.tftp.ipxe["00:0B"], "arm64-efi/snponly.efi");
        assert_eq!(c.ssh.key_types, ["ed25519", "ecdsa", "rsa"]);
        assert_eq!(c.paths.sysconfdir, Path::new("/etc"));
        assert_eq!(c.nodes_conf(), Path::new("/etc/warewulf/nodes.conf"));
        assert_eq!(c.image_mounts[0].source, "/etc/resolv.conf");
    }

    #[test]
    fn cidr_ipaddr_fills_netmask_and_network() {
        let c = parse("ipaddr: 10.0.0.1/24\n");
        assert_eq!(c.ipaddr.as_deref(), Some("10.0.0.1"));
        assert_eq!(c.netmask.as_deref(), Some("255.255.255.0"));
        assert_eq!(c.network.as_deref(), Some("10.0.0.0"));
        let c = parse("ipaddr: 10.1.2.3/16\nnetmask: 255.255.255.0\n");
        assert_eq!(c.netmask.as_deref(), Some("255.255.255.0"));
        assert_eq!(c.network.as_deref(), Some("10.1.0.0"));
    }

    #[test]
    fn paths_and_sections_override() {
        let c = parse(
            "warewulf:\n  port: 9999\n  secure: false\npaths:\n  sysconfdir: /tmp/site/etc\n\
             tftp:\n  ipxe:\n    \"00:00\": x.kpxe\nunknown thing: 1\n",
        );
        assert_eq!(c.warewulf.port, 9999);
        assert!(!c.warewulf.secure);
        assert_eq!(
            c.nodes_conf(),
            Path::new("/tmp/site/etc/warewulf/nodes.conf")
        );
        assert_eq!(c.paths.wwchrootdir, Path::new("/var/lib/warewulf/chroots"));
        assert_eq!(c.tftp.ipxe.len(), 1);
    }

    #[test]
    fn bad_yaml_names_line_and_column() {
        let err =
            Config::parse("warewulf:\n  port: [\n", Path::new("/x/warewulf.conf")).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("/x/warewulf.conf:"), "{msg}");
    }

    #[test]
    fn prefix_masks() {
        assert_eq!(prefix_to_mask(0), Ipv4Addr::new(0, 0, 0, 0));
        assert_eq!(prefix_to_mask(20), Ipv4Addr::new(255, 255, 240, 0));
        assert_eq!(prefix_to_mask(32), Ipv4Addr::new(255, 255, 255, 255));
    }
}
