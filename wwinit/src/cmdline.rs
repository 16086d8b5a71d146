//! The kernel command line (`/proc/cmdline`): every `wwinit.*` key, plus
//! Warewulf's `wwid=` and the kernel's `ip=`.
//!
//! Dotted keys are module parameters to the kernel, so the kernel does not
//! pass them to init as environment; we read `/proc/cmdline` and parse it
//! here, purely. Bad values never stop the boot: they are reported as
//! warnings and the default applies. Documented in `docs/kernel-cmdline.md`.

use std::net::Ipv4Addr;
use std::time::Duration;

use proto::Mac;

use crate::crash::CrashAction;

/// What to do when the boot fails: `shell | reboot | poweroff | freeze`.
pub const CRASH: &str = "wwinit.crash";
/// Seconds of countdown before `reboot`/`poweroff` after a failure.
pub const CRASH_DELAY: &str = "wwinit.crash_delay";
/// Overrides the node's `root` (`initramfs | tmpfs | ramfs`).
pub const ROOT: &str = "wwinit.root";
/// Overrides the node's `init` (the program exec'd at the end).
pub const INIT: &str = "wwinit.init";
/// `size=` option of the tmpfs root (e.g. `50%`, `8g`).
pub const TMPFS_SIZE: &str = "wwinit.tmpfs_size";
/// Two-stage: the head, `host[:port]` (port defaults to 9873).
pub const SERVER: &str = "wwinit.server";
/// Comma-separated modules loaded before hardware matching (two-stage).
pub const MODULES: &str = "wwinit.modules";
/// Two-stage: seconds to wait for a DHCP lease before failing.
pub const DHCP_TIMEOUT: &str = "wwinit.dhcp_timeout";
/// Two-stage: total seconds of retries for each download.
pub const FETCH_TIMEOUT: &str = "wwinit.fetch_timeout";
/// Warewulf's node identity (MAC) on the kernel line.
pub const WWID: &str = "wwid";
/// The kernel's `ip=` syntax.
pub const IP: &str = "ip";

/// Every `wwinit.*` key we know, for unknown-key warnings.
const KNOWN: &[&str] = &[
    CRASH,
    CRASH_DELAY,
    ROOT,
    INIT,
    TMPFS_SIZE,
    SERVER,
    MODULES,
    DHCP_TIMEOUT,
    FETCH_TIMEOUT,
];

/// Default countdown before reboot/poweroff after a failure.
pub const DEFAULT_CRASH_DELAY: Duration = Duration::from_secs(10);
/// Default time to wait for a DHCP lease.
pub const DEFAULT_DHCP_TIMEOUT: Duration = Duration::from_secs(60);
/// Default total retry time per download.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(300);

/// `ip=` as the kernel documents it (`Documentation/admin-guide/nfs/nfsroot.rst`):
/// `<client>:<server>:<gw>:<netmask>:<hostname>:<device>:<autoconf>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IpParam {
    /// `ip=off|none`: leave the network alone.
    Off,
    /// `ip=dhcp|on|any`, or autoconf `dhcp` with no client address.
    Dhcp { iface: Option<String> },
    /// A static address.
    Static(StaticIp),
}

/// A static `ip=` configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticIp {
    pub addr: Ipv4Addr,
    pub server: Option<Ipv4Addr>,
    pub gateway: Option<Ipv4Addr>,
    /// Defaults to the classful mask of `addr`, as the kernel does.
    pub netmask: Ipv4Addr,
    pub hostname: Option<String>,
    pub iface: Option<String>,
}

/// A `host[:port]` server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    pub host: String,
    pub port: u16,
}

/// The parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cmdline {
    pub crash: CrashAction,
    pub crash_delay: Duration,
    pub root: Option<String>,
    pub init: Option<String>,
    pub tmpfs_size: Option<String>,
    pub server: Option<Server>,
    pub modules: Vec<String>,
    pub dhcp_timeout: Duration,
    pub fetch_timeout: Duration,
    pub wwid: Option<Mac>,
    pub ip: Option<IpParam>,
    /// Problems found; logged once the console is up.
    pub warnings: Vec<String>,
}

impl Default for Cmdline {
    fn default() -> Self {
        Cmdline {
            crash: CrashAction::default(),
            crash_delay: DEFAULT_CRASH_DELAY,
            root: None,
            init: None,
            tmpfs_size: None,
            server: None,
            modules: Vec::new(),
            dhcp_timeout: DEFAULT_DHCP_TIMEOUT,
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
            wwid: None,
            ip: None,
            warnings: Vec::new(),
        }
    }
}

/// Splits a command line into words; double quotes group (and are removed),
/// as the kernel's `next_arg` does.
fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

fn seconds(key: &str, v: &str, warnings: &mut Vec<String>, default: Duration) -> Duration {
    match v.parse::<u64>() {
        Ok(n) => Duration::from_secs(n),
        Err(_) => {
            warnings.push(format!(
                "{key}={v}: not a number of seconds, using {}",
                default.as_secs()
            ));
            default
        }
    }
}

fn nonempty(v: &str) -> Option<String> {
    (!v.is_empty()).then(|| v.to_owned())
}

/// Parses the command line. Later keys win, as in the kernel.
pub fn parse(s: &str) -> Cmdline {
    let mut c = Cmdline::default();
    let mut w = Vec::new();
    for word in words(s) {
        let (key, value) = word.split_once('=').unwrap_or((word.as_str(), ""));
        match key {
            CRASH => match value.parse() {
                Ok(a) => c.crash = a,
                Err(()) => w.push(format!(
                    "{CRASH}={value}: want shell, reboot, poweroff or freeze; using {}",
                    c.crash
                )),
            },
            CRASH_DELAY => c.crash_delay = seconds(key, value, &mut w, DEFAULT_CRASH_DELAY),
            ROOT => c.root = nonempty(value),
            INIT => c.init = nonempty(value),
            TMPFS_SIZE => c.tmpfs_size = nonempty(value),
            SERVER => match parse_server(value) {
                Some(srv) => c.server = Some(srv),
                None => w.push(format!("{SERVER}={value}: want host[:port]")),
            },
            MODULES => {
                c.modules = value
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_owned)
                    .collect();
            }
            DHCP_TIMEOUT => c.dhcp_timeout = seconds(key, value, &mut w, DEFAULT_DHCP_TIMEOUT),
            FETCH_TIMEOUT => c.fetch_timeout = seconds(key, value, &mut w, DEFAULT_FETCH_TIMEOUT),
            WWID => match value.parse::<Mac>() {
                Ok(m) => c.wwid = Some(m),
                Err(e) => w.push(format!("{WWID}=: {e}")),
            },
            IP => match parse_ip(value) {
                Ok(ip) => c.ip = Some(ip),
                Err(e) => w.push(format!("{IP}={value}: {e}")),
            },
            k if k.starts_with("wwinit.") && !KNOWN.contains(&k) => {
                w.push(format!("unknown parameter {k} ignored"));
            }
            _ => {}
        }
    }
    c.warnings = w;
    c
}

/// `host[:port]`, port defaulting to Warewulf's 9873.
pub fn parse_server(v: &str) -> Option<Server> {
    let v = v.strip_prefix("http://").unwrap_or(v).trim_end_matches('/');
    let (host, port) = match v.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (v, proto::routes::DEFAULT_PORT),
    };
    if host.is_empty() || host.contains(['/', ' ']) {
        return None;
    }
    Some(Server {
        host: host.to_owned(),
        port,
    })
}

fn opt_addr(field: &str, v: &str) -> Result<Option<Ipv4Addr>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .map_err(|_| format!("{field} {v:?} is not an IPv4 address"))
}

/// The classful default mask the kernel uses when `ip=` gives none.
fn classful_mask(a: Ipv4Addr) -> Ipv4Addr {
    match a.octets()[0] {
        0..=127 => Ipv4Addr::new(255, 0, 0, 0),
        128..=191 => Ipv4Addr::new(255, 255, 0, 0),
        _ => Ipv4Addr::new(255, 255, 255, 0),
    }
}

/// Parses the value of `ip=`.
pub fn parse_ip(v: &str) -> Result<IpParam, String> {
    match v {
        "off" | "none" => return Ok(IpParam::Off),
        "dhcp" | "on" | "any" | "" => return Ok(IpParam::Dhcp { iface: None }),
        _ => {}
    }
    let f: Vec<&str> = v.split(':').collect();
    let get = |i: usize| f.get(i).copied().unwrap_or("");
    let iface = nonempty(get(5));
    let autoconf = get(6);
    let client = opt_addr("client address", get(0))?;
    match (client, autoconf) {
        (_, "off" | "none" | "") | (Some(_), _) => {}
        (None, "dhcp" | "on" | "any") => return Ok(IpParam::Dhcp { iface }),
        (None, other) => {
            return Err(format!(
                "autoconf {other:?} is not supported (use dhcp or off)"
            ));
        }
    }
    let Some(addr) = client else {
        return Err("no client address and no dhcp".to_owned());
    };
    let netmask = opt_addr("netmask", get(3))?.unwrap_or_else(|| classful_mask(addr));
    Ok(IpParam::Static(StaticIp {
        addr,
        server: opt_addr("server address", get(1))?,
        gateway: opt_addr("gateway", get(2))?,
        netmask,
        hostname: nonempty(get(4)),
        iface,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        fn ip(a: [u8; 4]) -> Ipv4Addr {
            Ipv4Addr::from(a)
        }
        struct Case {
            line: &'static str,
            check: fn(&Cmdline) -> bool,
        }
        let cases = [
            Case {
                line: "",
                check: |c| *c == Cmdline::default(),
            },
            Case {
                line: "console=ttyS0 wwinit.crash=shell quiet",
                check: |c| c.crash == CrashAction::Shell && c.warnings.is_empty(),
            },
            Case {
                line: "wwinit.crash=explode",
                check: |c| c.crash == CrashAction::default() && c.warnings.len() == 1,
            },
            Case {
                line: "wwinit.crash=poweroff wwinit.crash=freeze",
                check: |c| c.crash == CrashAction::Freeze,
            },
            Case {
                line: "wwinit.crash_delay=3 wwinit.dhcp_timeout=x",
                check: |c| {
                    c.crash_delay == Duration::from_secs(3)
                        && c.dhcp_timeout == DEFAULT_DHCP_TIMEOUT
                        && c.warnings.len() == 1
                },
            },
            Case {
                line: "wwinit.root=tmpfs wwinit.init=/sbin/test-init wwinit.tmpfs_size=50%",
                check: |c| {
                    c.root.as_deref() == Some("tmpfs")
                        && c.init.as_deref() == Some("/sbin/test-init")
                        && c.tmpfs_size.as_deref() == Some("50%")
                },
            },
            Case {
                line: "wwinit.server=10.0.0.1 wwinit.modules=virtio_net,,e1000",
                check: |c| {
                    c.server
                        == Some(Server {
                            host: "10.0.0.1".into(),
                            port: 9873,
                        })
                        && c.modules == ["virtio_net", "e1000"]
                },
            },
            Case {
                line: "wwinit.server=head:8080",
                check: |c| {
                    c.server
                        == Some(Server {
                            host: "head".into(),
                            port: 8080,
                        })
                },
            },
            Case {
                line: "wwid=52-54-00-12-34-56 wwinit.bogus=1",
                check: |c| {
                    c.wwid == Some(Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]))
                        && c.warnings == ["unknown parameter wwinit.bogus ignored"]
                },
            },
            Case {
                line: "wwid=nonsense",
                check: |c| c.wwid.is_none() && c.warnings.len() == 1,
            },
            Case {
                line: "ip=dhcp",
                check: |c| c.ip == Some(IpParam::Dhcp { iface: None }),
            },
            Case {
                line: "ip=off",
                check: |c| c.ip == Some(IpParam::Off),
            },
            Case {
                line: "ip=:::::eth1:dhcp",
                check: |c| {
                    c.ip == Some(IpParam::Dhcp {
                        iface: Some("eth1".into()),
                    })
                },
            },
            Case {
                line: "ip=10.0.2.15::10.0.2.2:255.255.255.0:n1:eth0:off",
                check: |c| {
                    c.ip == Some(IpParam::Static(StaticIp {
                        addr: ip([10, 0, 2, 15]),
                        server: None,
                        gateway: Some(ip([10, 0, 2, 2])),
                        netmask: ip([255, 255, 255, 0]),
                        hostname: Some("n1".into()),
                        iface: Some("eth0".into()),
                    }))
                },
            },
            Case {
                line: "ip=172.16.1.5",
                check: |c| matches!(&c.ip, Some(IpParam::Static(s)) if s.netmask == ip([255, 255, 0, 0]) && s.iface.is_none()),
            },
            Case {
                line: "ip=10.0.0.300::",
                check: |c| c.ip.is_none() && c.warnings.len() == 1,
            },
            Case {
                line: "ip=::::::bootp",
                check: |c| c.ip.is_none() && c.warnings.len() == 1,
            },
            Case {
                line: "foo=\"a b\" wwinit.init=\"/sbin/my init\"",
                check: |c| c.init.as_deref() == Some("/sbin/my init"),
            },
        ];
        for case in cases {
            let c = parse(case.line);
            assert!((case.check)(&c), "{:?} -> {c:?}", case.line);
        }
    }

    #[test]
    fn words_handle_quotes_and_spaces() {
        assert_eq!(words("  a  b=\"c d\"\n e "), ["a", "b=c d", "e"]);
        assert_eq!(words("x=\"\""), ["x="]);
    }
}
