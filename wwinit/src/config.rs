//! The node's boot settings, `/warewulf/wwinit.conf`, rendered per node by
//! the `wwinit` overlay (`overlays/wwinit/rootfs/warewulf/wwinit.conf.ww`).
//!
//! Format (documented in `docs/overlays.md` and `docs/wwinit.md`): one
//! `key=value` per line, the value running to the end of the line; an empty
//! value means "not set"; `#` starts a comment line; blank lines are ignored.
//! Unknown keys are warnings (a newer overlay may know more than we do);
//! malformed lines and bad values are errors naming the line.

use std::net::Ipv4Addr;

use thiserror::Error;

/// Where the overlay puts the file, relative to the root.
pub const PATH: &str = "warewulf/wwinit.conf";

/// Default init, as Warewulf.
pub const DEFAULT_INIT: &str = "/sbin/init";

/// Keys we read or knowingly ignore.
const KNOWN: &[&str] = &[
    "id",
    "image",
    "cluster",
    "root",
    "init",
    "server.ipaddr",
    "server.port",
    "server.secure",
    // TLS settings of the head (wwclient's business; stage 1 speaks plain HTTP).
    "server.tls",
    "server.tls_port",
    "update_interval",
    "ipmi.write",
    "ipmi.ipaddr",
    "ipmi.netmask",
    "ipmi.gateway",
    "ipmi.vlan",
    "ipmi.port",
    "ipmi.interface",
    "ipmi.username",
    "ipmi.password",
];

/// Errors in `wwinit.conf`.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{PATH} line {line}: expected key=value")]
    Syntax { line: usize },
    #[error("{PATH} line {line}: {key}: {msg}")]
    Value {
        line: usize,
        key: String,
        msg: String,
    },
}

/// Where the root file system lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootKind {
    /// Stay in the kernel's initramfs (rootfs) and exec init there.
    Initramfs,
    /// Copy into a fresh tmpfs (`mpol=interleave`), then switch root.
    Tmpfs,
    /// Copy into a fresh ramfs, then switch root.
    Ramfs,
}

impl RootKind {
    /// Parses Warewulf's `root` values we support.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "initramfs" => Ok(RootKind::Initramfs),
            "tmpfs" => Ok(RootKind::Tmpfs),
            "ramfs" => Ok(RootKind::Ramfs),
            other => Err(format!(
                "root {other:?} is not supported (want initramfs, tmpfs or ramfs)"
            )),
        }
    }
}

/// BMC settings, used when `ipmi.write=true`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ipmi {
    pub write: bool,
    pub ipaddr: Option<Ipv4Addr>,
    pub netmask: Option<Ipv4Addr>,
    pub gateway: Option<Ipv4Addr>,
    pub vlan: Option<u16>,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// The validated settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    pub id: Option<String>,
    pub image: Option<String>,
    pub root: RootKind,
    pub init: String,
    pub server: Option<Ipv4Addr>,
    pub port: Option<u16>,
    pub ipmi: Ipmi,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: None,
            image: None,
            root: RootKind::Initramfs,
            init: DEFAULT_INIT.to_owned(),
            server: None,
            port: None,
            ipmi: Ipmi::default(),
        }
    }
}

/// Parses the file; warnings (unknown keys) go to `warnings`.
pub fn parse(text: &str, warnings: &mut Vec<String>) -> Result<NodeConfig, ConfigError> {
    let mut c = NodeConfig::default();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (key, value) = trimmed
            .split_once('=')
            .ok_or(ConfigError::Syntax { line })?;
        let key = key.trim();
        let value = value.trim_end_matches('\r');
        if value.is_empty() {
            if !KNOWN.contains(&key) {
                warnings.push(format!("{PATH} line {line}: unknown key {key:?} ignored"));
            }
            continue;
        }
        let bad = |msg: String| ConfigError::Value {
            line,
            key: key.to_owned(),
            msg,
        };
        let addr = |v: &str| {
            v.parse::<Ipv4Addr>()
                .map_err(|_| bad(format!("{v:?} is not an IPv4 address")))
        };
        let boolean = |v: &str| match v {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(bad(format!("{v:?} is not true or false"))),
        };
        match key {
            "id" => c.id = Some(value.to_owned()),
            "image" => c.image = Some(value.to_owned()),
            "root" => c.root = RootKind::parse(value).map_err(bad)?,
            "init" => {
                if !value.starts_with('/') {
                    return Err(bad(format!("{value:?} is not an absolute path")));
                }
                c.init = value.to_owned();
            }
            "server.ipaddr" => c.server = Some(addr(value)?),
            "server.port" => {
                c.port = Some(
                    value
                        .parse()
                        .map_err(|_| bad(format!("{value:?} is not a port")))?,
                );
            }
            "ipmi.write" => c.ipmi.write = boolean(value)?,
            "ipmi.ipaddr" => c.ipmi.ipaddr = Some(addr(value)?),
            "ipmi.netmask" => c.ipmi.netmask = Some(addr(value)?),
            "ipmi.gateway" => c.ipmi.gateway = Some(addr(value)?),
            "ipmi.vlan" if value == "off" => c.ipmi.vlan = None,
            "ipmi.vlan" => {
                c.ipmi.vlan = Some(
                    value
                        .parse()
                        .ok()
                        .filter(|v| (1..=4094).contains(v))
                        .ok_or_else(|| bad(format!("{value:?} is not a VLAN id")))?,
                );
            }
            "ipmi.username" => c.ipmi.username = Some(value.to_owned()),
            "ipmi.password" => c.ipmi.password = Some(value.to_owned()),
            k if KNOWN.contains(&k) => {}
            k => warnings.push(format!("{PATH} line {line}: unknown key {k:?} ignored")),
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the overlay template renders for a typical node.
    const RENDERED: &str = "\
# wwinit settings for node n1, written by Ironwulf.
# Rebuilt with the system overlay; local edits are lost.
id=n1
image=rocky-9
cluster=
root=tmpfs
init=/sbin/test-init
server.ipaddr=10.0.0.1
server.port=9873
server.secure=true
update_interval=60
ipmi.write=true
ipmi.ipaddr=10.1.0.5
ipmi.netmask=255.255.0.0
ipmi.gateway=
ipmi.vlan=42
ipmi.port=
ipmi.interface=
ipmi.username=admin
ipmi.password=p=ss word
";

    #[test]
    fn parses_rendered_overlay() {
        let mut w = Vec::new();
        let c = parse(RENDERED, &mut w).expect("valid config");
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.id.as_deref(), Some("n1"));
        assert_eq!(c.root, RootKind::Tmpfs);
        assert_eq!(c.init, "/sbin/test-init");
        assert_eq!(c.server, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(c.port, Some(9873));
        assert!(c.ipmi.write);
        assert_eq!(c.ipmi.vlan, Some(42));
        assert_eq!(c.ipmi.gateway, None);
        assert_eq!(c.ipmi.password.as_deref(), Some("p=ss word"));
    }

    #[test]
    fn defaults_when_empty() {
        let mut w = Vec::new();
        let c = parse("root=\ninit=\nipmi.vlan=off\n", &mut w).expect("valid");
        assert_eq!(c, NodeConfig::default());
    }

    #[test]
    fn errors_name_line_and_key() {
        let table: &[(&str, ConfigError)] = &[
            ("id=a\nnonsense\n", ConfigError::Syntax { line: 2 }),
            (
                "root=persistent",
                ConfigError::Value {
                    line: 1,
                    key: "root".into(),
                    msg: "root \"persistent\" is not supported (want initramfs, tmpfs or ramfs)"
                        .into(),
                },
            ),
            (
                "\ninit=sbin/init",
                ConfigError::Value {
                    line: 2,
                    key: "init".into(),
                    msg: "\"sbin/init\" is not an absolute path".into(),
                },
            ),
            (
                "ipmi.write=yes",
                ConfigError::Value {
                    line: 1,
                    key: "ipmi.write".into(),
                    msg: "\"yes\" is not true or false".into(),
                },
            ),
            (
                "ipmi.vlan=5000",
                ConfigError::Value {
                    line: 1,
                    key: "ipmi.vlan".into(),
                    msg: "\"5000\" is not a VLAN id".into(),
                },
            ),
        ];
        for (text, want) in table {
            assert_eq!(parse(text, &mut Vec::new()).as_ref(), Err(want), "{text:?}");
        }
    }

    #[test]
    fn unknown_keys_warn() {
        let mut w = Vec::new();
        parse("future.key=1\n", &mut w).expect("valid");
        assert_eq!(
            w,
            ["warewulf/wwinit.conf line 1: unknown key \"future.key\" ignored"]
        );
    }
}
