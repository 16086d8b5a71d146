//! Private boot networks: a network namespace per test with a bridge and
//! taps, so DHCP, TFTP and HTTP traffic between the head and QEMU nodes never
//! leaves the namespace. Everything is deleted on drop, also when a test
//! panics.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::sched::{CloneFlags, setns};

/// The head's address on every test bridge.
pub const HEAD_IP: &str = "10.99.0.1";
/// The bridge's prefix length.
pub const PREFIX: u8 = 24;

/// A network namespace with one bridge (`br0`, [`HEAD_IP`]) and taps on it.
#[derive(Debug)]
pub struct Netns {
    name: String,
    taps: usize,
}

impl Netns {
    /// Creates `iw<tag><pid>n<counter>` with `lo` and `br0` up.
    pub fn new(tag: &str) -> Result<Self> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("iw{tag}{}n{n}", std::process::id());
        ip(&["netns", "add", &name])
            .with_context(|| format!("creating network namespace {name}"))?;
        // From here on, Drop deletes the namespace.
        let ns = Self { name, taps: 0 };
        ns.ip(&["link", "set", "lo", "up"])?;
        ns.ip(&["link", "add", "br0", "type", "bridge"])?;
        ns.ip(&["addr", "add", &format!("{HEAD_IP}/{PREFIX}"), "dev", "br0"])?;
        ns.ip(&["link", "set", "br0", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds a tap on `br0` and returns its name (`tap0`, `tap1`, …).
    pub fn add_tap(&mut self) -> Result<String> {
        let tap = format!("tap{}", self.taps);
        self.ip(&["tuntap", "add", &tap, "mode", "tap"])?;
        self.ip(&["link", "set", &tap, "master", "br0"])?;
        self.ip(&["link", "set", &tap, "up"])?;
        self.taps += 1;
        Ok(tap)
    }

    /// `ip -n <ns> ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Fetches `http://host:port/path` from inside the namespace and returns
    /// the body of a 200 answer. A short-lived thread enters the namespace
    /// (`setns` switches only the calling thread) and speaks HTTP/1.0.
    pub fn http_get(&self, url: &str) -> Result<String> {
        let rest = url
            .strip_prefix("http://")
            .with_context(|| format!("not an http URL: {url}"))?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let path = if path.is_empty() { "/" } else { path };
        let ns_file = Path::new("/var/run/netns").join(&self.name);
        let (authority, path) = (authority.to_owned(), path.to_owned());
        let response = std::thread::spawn(move || -> Result<Vec<u8>> {
            let ns =
                File::open(&ns_file).with_context(|| format!("opening {}", ns_file.display()))?;
            setns(&ns, CloneFlags::CLONE_NEWNET).context("entering the network namespace")?;
            let addr: SocketAddr = authority
                .parse()
                .with_context(|| format!("bad address {authority}"))?;
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .with_context(|| format!("connecting to {authority}"))?;
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            write!(stream, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n")?;
            let mut buf = Vec::new();
            stream.read_to_end(&mut buf)?;
            Ok(buf)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the HTTP thread panicked"))??;
        let text = String::from_utf8(response).context("response is not UTF-8")?;
        let (head, body) = text
            .split_once("\r\n\r\n")
            .context("malformed HTTP response")?;
        let status = head.lines().next().unwrap_or_default();
        if status.split_whitespace().nth(1) != Some("200") {
            bail!("GET {url}: {status}");
        }
        Ok(body.to_owned())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("warning: deleting network namespace {}: {e:#}", self.name);
        }
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out: Output = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
