//! Command line: a small hand-written parser (no clap, to keep the static
//! binary small). `--flag value` and `--flag=value` are both accepted.

use std::ffi::OsString;
use std::ops::RangeInclusive;
use std::path::PathBuf;

pub const USAGE: &str = "\
wwclient: keeps this node's runtime overlay in sync with the head

usage: wwclient [options]

  --server URL        head to poll, http[s]://HOST[:PORT] (default: from
                      /warewulf/wwinit.conf or /etc/warewulf/warewulf.conf)
  --ca FILE           CA that signs the head's HTTPS certificate (default:
                      <root>/warewulf/tls/ca.crt)
  --interval SECS     seconds between polls, +/-10% jitter (default: config,
                      else 60)
  --once              sync once and exit (non-zero status on failure)
  --config FILE       wwinit.conf or warewulf.conf to read the head from
  --wwid MAC          node identity (default: wwid= on /proc/cmdline, else
                      the MAC of the default-route interface)
  --asset-key KEY     asset key to send (default: the SMBIOS chassis tag)
  --secure            bind a source port below 1024 (default: config)
  --insecure          do not bind a privileged source port
  --port-range LO-HI  source ports to bind (default with --secure: 987-1023)
  --root DIR          where the overlay is applied (default: /)
  --state-dir DIR     record of applied files (default: /var/lib/wwclient)
  -d, --debug         verbose logging
  -h, --help          this help
  -V, --version       print the version

SIGHUP polls at once; SIGTERM/SIGINT exit after the current step.";

/// What the command line asks for.
pub enum Command {
    Run(Args),
    Help,
    Version,
}

/// Flags as given; defaults are filled in by `settings`.
#[derive(Debug, Default)]
pub struct Args {
    pub server: Option<String>,
    pub ca: Option<PathBuf>,
    pub interval: Option<u64>,
    pub once: bool,
    pub config: Option<PathBuf>,
    pub wwid: Option<String>,
    pub asset_key: Option<String>,
    pub secure: Option<bool>,
    pub port_range: Option<RangeInclusive<u16>>,
    pub root: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub debug: bool,
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    let mut out = Args::default();
    let mut it = args.into_iter();
    while let Some(raw) = it.next() {
        let raw = raw
            .into_string()
            .map_err(|a| format!("argument {a:?} is not UTF-8"))?;
        let (flag, inline) = match raw.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (raw, None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it
                    .next()
                    .and_then(|v| v.into_string().ok())
                    .ok_or_else(|| format!("{name} needs a value")),
            }
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "-d" | "--debug" => out.debug = true,
            "--once" => out.once = true,
            "--secure" => out.secure = Some(true),
            "--insecure" => out.secure = Some(false),
            "--server" => out.server = Some(value("--server")?),
            "--interval" => {
                let v = value("--interval")?;
                let secs: u64 = v
                    .parse()
                    .map_err(|_| format!("--interval: {v:?} is not a number of seconds"))?;
                if secs == 0 {
                    return Err("--interval must be at least 1 second".to_owned());
                }
                out.interval = Some(secs);
            }
            "--ca" => out.ca = Some(value("--ca")?.into()),
            "--config" => out.config = Some(value("--config")?.into()),
            "--wwid" => out.wwid = Some(value("--wwid")?),
            "--asset-key" => out.asset_key = Some(value("--asset-key")?),
            "--port-range" => out.port_range = Some(parse_port_range(&value("--port-range")?)?),
            "--root" => out.root = Some(value("--root")?.into()),
            "--state-dir" => out.state_dir = Some(value("--state-dir")?.into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Command::Run(out))
}

/// `LO-HI` or a single port `P`.
pub fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>, String> {
    let bad = || format!("--port-range: {s:?} is not LO-HI (1-65535)");
    let (lo, hi) = s.split_once('-').unwrap_or((s, s));
    let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
    let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
    if lo == 0 || lo > hi {
        return Err(bad());
    }
    Ok(lo..=hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Args, String> {
        match parse(args.iter().map(OsString::from))? {
            Command::Run(a) => Ok(a),
            _ => Err("not a run".to_owned()),
        }
    }

    #[test]
    fn flags_with_and_without_equals() {
        let a = run(&[
            "--server=http://10.0.0.1:9873",
            "--interval",
            "30",
            "--once",
            "--port-range",
            "900-910",
            "--wwid=52:54:00:00:00:01",
        ])
        .unwrap();
        assert_eq!(a.server.as_deref(), Some("http://10.0.0.1:9873"));
        assert_eq!(a.interval, Some(30));
        assert!(a.once);
        assert_eq!(a.port_range, Some(900..=910));
        assert_eq!(a.wwid.as_deref(), Some("52:54:00:00:00:01"));
    }

    #[test]
    fn rejects_bad_input() {
        for args in [
            &["--interval", "0"][..],
            &["--interval", "x"],
            &["--port-range", "1023-987"],
            &["--port-range", "0-10"],
            &["--server"],
            &["--bogus"],
        ] {
            assert!(run(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn single_port_is_a_range_of_one() {
        assert_eq!(parse_port_range("987").unwrap(), 987..=987);
    }
}
