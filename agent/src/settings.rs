//! The validated runtime settings: command-line flags over the node's
//! config files over defaults.
//!
//! Config files, first found wins (or `--config FILE`):
//! - `/warewulf/wwinit.conf`, written by the `wwinit` overlay: `key=value`
//!   lines; wwclient reads `server.ipaddr`, `server.port`, `server.secure`,
//!   `server.tls`, `server.tls_port` and `update_interval` (format:
//!   `docs/overlays.md`);
//! - `/etc/warewulf/warewulf.conf`, the head subset Warewulf's own `wwinit`
//!   overlay writes: top-level `ipaddr`, and `port`, `secure`,
//!   `update interval` under `warewulf:`. Only those keys are read.

use std::fs;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use proto::Mac;

use crate::cli::Args;
use crate::identity;
use crate::log;

const WWINIT_CONF: &str = "/warewulf/wwinit.conf";
const WAREWULF_CONF: &str = "/etc/warewulf/warewulf.conf";
const DEFAULT_PORT: u16 = 9873;
const DEFAULT_TLS_PORT: u16 = 9874;
/// Below `--root`: the cluster CA (from the `wwinit` overlay) and the node
/// token (from the system overlay, then rotated by every runtime answer).
const CA_FILE: &str = "warewulf/tls/ca.crt";
const TOKEN_FILE: &str = "warewulf/token";
const DEFAULT_INTERVAL: u64 = 60;
const DEFAULT_STATE_DIR: &str = "/var/lib/wwclient";
/// Privileged source ports tried in secure mode. Warewulf's client always
/// uses 987; a range lets a port in `TIME_WAIT` or taken by a local service
/// be skipped.
pub const DEFAULT_SECURE_PORTS: RangeInclusive<u16> = 987..=1023;

/// Everything the loop needs, validated.
#[derive(Debug)]
pub struct Settings {
    /// Host name or address of the head (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    pub interval: Duration,
    pub once: bool,
    /// Source ports to bind; `None` lets the kernel choose.
    pub bind: Option<RangeInclusive<u16>>,
    pub root: PathBuf,
    pub state_dir: PathBuf,
    pub wwid: Mac,
    pub asset_key: Option<String>,
    /// The CA to verify the head with; `Some` means HTTPS.
    pub ca: Option<PathBuf>,
    /// Where the node token is read from and rotated into.
    pub token_file: PathBuf,
}

/// What a config file says about the head; every field optional.
#[derive(Debug, Default, PartialEq)]
pub struct FileConfig {
    pub ipaddr: Option<String>,
    pub port: Option<u16>,
    pub secure: Option<bool>,
    pub interval: Option<u64>,
    pub tls: Option<bool>,
    pub tls_port: Option<u16>,
}

impl Settings {
    pub fn resolve(args: &Args) -> anyhow::Result<Self> {
        let file = load_config(args.config.as_deref())?;
        let (host, port, https) = match &args.server {
            Some(url) => parse_server_url(url)?,
            None => match &file.ipaddr {
                Some(ip) if file.tls == Some(true) => {
                    (ip.clone(), file.tls_port.unwrap_or(DEFAULT_TLS_PORT), true)
                }
                Some(ip) => (ip.clone(), file.port.unwrap_or(DEFAULT_PORT), false),
                None => match &args.config {
                    Some(p) => bail!(
                        "no head address: {} names none; pass --server http://HOST:PORT",
                        p.display()
                    ),
                    None => bail!(
                        "no head address: neither {WWINIT_CONF} nor {WAREWULF_CONF} names one; pass --server http://HOST:PORT"
                    ),
                },
            },
        };
        let interval = args
            .interval
            .or(file.interval.filter(|&s| s > 0))
            .unwrap_or(DEFAULT_INTERVAL);
        let secure = args.secure.or(file.secure).unwrap_or(false);
        let bind = match (&args.port_range, secure) {
            (Some(r), _) => Some(r.clone()),
            (None, true) => Some(DEFAULT_SECURE_PORTS),
            (None, false) => None,
        };
        let root: PathBuf = args.root.clone().unwrap_or_else(|| "/".into());
        let ca = https.then(|| args.ca.clone().unwrap_or_else(|| root.join(CA_FILE)));
        Ok(Settings {
            ca,
            token_file: root.join(TOKEN_FILE),
            host,
            port,
            interval: Duration::from_secs(interval),
            once: args.once,
            bind,
            root,
            state_dir: args
                .state_dir
                .clone()
                .unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
            wwid: identity::wwid(args.wwid.as_deref())?,
            asset_key: identity::asset_key(args.asset_key.as_deref()),
        })
    }
}

fn load_config(explicit: Option<&Path>) -> anyhow::Result<FileConfig> {
    let candidates: Vec<&Path> = match explicit {
        Some(p) => vec![p],
        None => vec![Path::new(WWINIT_CONF), Path::new(WAREWULF_CONF)],
    };
    for path in candidates {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let conf = if looks_like_wwinit_conf(&text) {
            parse_wwinit_conf(&text, path)
        } else {
            parse_warewulf_conf(&text)
        };
        log::debug!("head settings from {}: {conf:?}", path.display());
        return Ok(conf);
    }
    Ok(FileConfig::default())
}

fn looks_like_wwinit_conf(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .any(|l| {
            l.split_once('=')
                .is_some_and(|(k, _)| !k.contains(':') && !k.contains(' '))
        })
}

/// `key=value` lines; empty values mean "not set".
pub fn parse_wwinit_conf(text: &str, path: &Path) -> FileConfig {
    let mut out = FileConfig::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        let bad = |what: &str| {
            log::warn!(
                "{}:{}: {key}: {value:?} is not {what}; ignored",
                path.display(),
                n + 1
            );
        };
        match key.trim() {
            "server.ipaddr" => out.ipaddr = Some(strip_prefix_len(value)),
            "server.port" => match value.parse() {
                Ok(p) if p > 0 => out.port = Some(p),
                _ => bad("a port"),
            },
            "server.secure" => match parse_bool(value) {
                Some(b) => out.secure = Some(b),
                None => bad("a boolean"),
            },
            "server.tls" => match parse_bool(value) {
                Some(b) => out.tls = Some(b),
                None => bad("a boolean"),
            },
            "server.tls_port" => match value.parse() {
                Ok(p) if p > 0 => out.tls_port = Some(p),
                _ => bad("a port"),
            },
            "update_interval" => match value.parse() {
                Ok(s) => out.interval = Some(s),
                Err(_) => bad("a number of seconds"),
            },
            _ => {}
        }
    }
    out
}

/// The few keys of a node-side `warewulf.conf`, read line by line: the
/// top-level `ipaddr`, and `port`, `secure`, `update interval` in the
/// `warewulf:` section. Anything else is ignored.
pub fn parse_warewulf_conf(text: &str) -> FileConfig {
    let mut out = FileConfig::default();
    let mut section = String::new();
    for line in text.lines() {
        let content = line.split(" #").next().unwrap_or("").trim_end();
        if content.trim().is_empty() || content.trim_start().starts_with('#') {
            continue;
        }
        let indented = content.starts_with([' ', '\t']);
        let Some((key, value)) = content.trim().split_once(':') else {
            continue;
        };
        let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
        let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
        if !indented {
            section = key.to_owned();
            if key == "ipaddr" && !value.is_empty() {
                out.ipaddr = Some(strip_prefix_len(value));
            }
            continue;
        }
        if section != "warewulf" || value.is_empty() {
            continue;
        }
        match key {
            "port" => out.port = value.parse().ok().filter(|&p| p > 0),
            "secure" => out.secure = parse_bool(value),
            "tls" => out.tls = parse_bool(value),
            "tls port" => out.tls_port = value.parse().ok().filter(|&p| p > 0),
            "update interval" => out.interval = value.parse().ok(),
            _ => {}
        }
    }
    out
}

/// `10.0.0.1/24` → `10.0.0.1` (Warewulf allows CIDR in `ipaddr`).
fn strip_prefix_len(s: &str) -> String {
    s.split('/').next().unwrap_or(s).to_owned()
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" | "y" => Some(true),
        "false" | "no" | "off" | "0" | "n" => Some(false),
        _ => None,
    }
}

/// `http://HOST[:PORT][/]` → host and port. HTTPS with the cluster CA is a
/// later issue; it is refused rather than silently spoken in clear.
/// `http[s]://HOST[:PORT]` → (host, port, https).
pub fn parse_server_url(url: &str) -> anyhow::Result<(String, u16, bool)> {
    let (rest, https) = if let Some(r) = url.strip_prefix("http://") {
        (r, false)
    } else if let Some(r) = url.strip_prefix("https://") {
        (r, true)
    } else {
        (url, false)
    };
    let default_port = if https {
        DEFAULT_TLS_PORT
    } else {
        DEFAULT_PORT
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') || authority.contains('@') {
        bail!("--server {url:?}: want http[s]://HOST[:PORT]");
    }
    let bad_port = || anyhow::anyhow!("--server {url:?}: bad port");
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| anyhow::anyhow!("--server {url:?}: unclosed '['"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad_port())?,
            None if after.is_empty() => default_port,
            None => return Err(bad_port()),
        };
        return Ok((host.to_owned(), port, https));
    }
    match authority.rsplit_once(':') {
        Some((host, p)) if !host.contains(':') => {
            let port: u16 = p.parse().map_err(|_| bad_port())?;
            if port == 0 {
                return Err(bad_port());
            }
            Ok((host.to_owned(), port, https))
        }
        _ => Ok((authority.to_owned(), default_port, https)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wwinit_conf_keys() {
        let text = "# comment\nid=n1\nserver.ipaddr=10.0.0.1\nserver.port=9999\n\
                    server.secure=true\nupdate_interval=30\nipmi.password=a=b\n\
                    server.tls=true\nserver.tls_port=9443\n";
        assert!(looks_like_wwinit_conf(text));
        let c = parse_wwinit_conf(text, Path::new("wwinit.conf"));
        assert_eq!(
            c,
            FileConfig {
                ipaddr: Some("10.0.0.1".into()),
                port: Some(9999),
                secure: Some(true),
                interval: Some(30),
                tls: Some(true),
                tls_port: Some(9443),
            }
        );
        let empty = parse_wwinit_conf("server.ipaddr=\nserver.port=x\n", Path::new("f"));
        assert_eq!(empty, FileConfig::default());
    }

    #[test]
    fn warewulf_conf_subset() {
        let text = "ipaddr: 10.0.0.1/24\nnetmask: 255.255.255.0\nwarewulf:\n  port: 9873\n  \
                    secure: false\n  update interval: 120\ndhcp:\n  port: 1\n";
        assert!(!looks_like_wwinit_conf(text));
        assert_eq!(
            parse_warewulf_conf(text),
            FileConfig {
                ipaddr: Some("10.0.0.1".into()),
                port: Some(9873),
                secure: Some(false),
                interval: Some(120),
                tls: None,
                tls_port: None,
            }
        );
    }

    #[test]
    fn server_urls() {
        for (url, host, port, https) in [
            ("http://10.0.0.1:9873", "10.0.0.1", 9873, false),
            ("http://head/", "head", 9873, false),
            ("10.0.0.1:80", "10.0.0.1", 80, false),
            ("http://[fd00::1]:9000", "fd00::1", 9000, false),
            ("http://[fd00::1]", "fd00::1", 9873, false),
            ("https://head", "head", 9874, true),
            ("https://[fd00::1]:443", "fd00::1", 443, true),
        ] {
            assert_eq!(
                parse_server_url(url).unwrap(),
                (host.to_owned(), port, https),
                "{url}"
            );
        }
        for url in [
            "https://head/x",
            "http://head:x",
            "http://head/path",
            "http://",
            "http://h:0",
        ] {
            assert!(parse_server_url(url).is_err(), "{url}");
        }
    }
}
