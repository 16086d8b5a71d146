//! OpenSSH from the head's side of a test network: logs in to nodes with the
//! site's root key and checks their host keys against the site's
//! (`wwctl configure ssh` keys, delivered by the `ssh.host_keys` overlay).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Pause between login attempts in [`Ssh::wait`].
const RETRY: Duration = Duration::from_secs(2);

/// An `ssh` client run inside a network namespace.
#[derive(Debug)]
pub struct Ssh {
    netns: String,
    key: PathBuf,
    known_hosts: PathBuf,
}

impl Ssh {
    /// A client in `netns` logging in with `key`, trusting for each of
    /// `addrs` only the ed25519 host key `host_key_pub` (the site's
    /// `keys/ssh_host_ed25519_key.pub`). `known_hosts` is written to `dir`.
    pub fn new(
        netns: &str,
        key: &Path,
        host_key_pub: &Path,
        addrs: &[&str],
        dir: &Path,
    ) -> Result<Self> {
        let public = fs::read_to_string(host_key_pub)
            .with_context(|| format!("reading {}", host_key_pub.display()))?;
        let public = public.trim();
        let known_hosts = dir.join("known_hosts");
        let text: String = addrs.iter().map(|a| format!("{a} {public}\n")).collect();
        fs::write(&known_hosts, text).context("writing known_hosts")?;
        Ok(Self {
            netns: netns.to_owned(),
            key: key.to_path_buf(),
            known_hosts,
        })
    }

    /// Runs `command` as root on `addr`; fails with ssh's stderr.
    pub fn run(&self, addr: &str, command: &str) -> Result<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.netns, "ssh"])
            .args(["-F", "/dev/null", "-i"])
            .arg(&self.key)
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .args([
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=5",
                "-o",
                "LogLevel=ERROR",
            ])
            .arg(format!("root@{addr}"))
            .arg(command)
            .stdin(Stdio::null())
            .output()
            .context("running ssh (apt-get install openssh-client)")?;
        if !out.status.success() {
            bail!(
                "ssh root@{addr} {command:?} ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        String::from_utf8(out.stdout).context("ssh printed non-UTF-8")
    }

    /// Retries [`Ssh::run`] until it succeeds or `timeout` passes (sshd may
    /// still be starting); the error carries the last failure.
    pub fn wait(&self, addr: &str, command: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.run(addr, command) {
                Ok(out) => return Ok(out),
                Err(e) if Instant::now() >= deadline => {
                    return Err(e.context(format!("no ssh login within {timeout:?}")));
                }
                Err(_) => std::thread::sleep(RETRY),
            }
        }
    }
}
