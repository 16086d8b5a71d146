//! A head node for boot tests: a temp site (its own `warewulf.conf`,
//! `nodes.conf`, images and overlays) and `wwctl server` running inside a
//! test's network namespace, stopped and reaped on drop.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::artifacts::{target_dir, workspace_root};
use crate::netns::{HEAD_IP, Netns, PREFIX};

/// HTTP port of the test head (Warewulf's default).
pub const HTTP_PORT: u16 = 9873;

/// The debug `wwctl`, built once per test process when missing.
pub fn wwctl() -> Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(&cargo)
                .args(["build", "-p", "head", "--bin", "wwctl"])
                .current_dir(workspace_root())
                .status()
                .map_err(|e| format!("running cargo build -p head: {e}"))?;
            if !status.success() {
                return Err(format!("cargo build -p head failed ({status})"));
            }
            Ok(target_dir().join("debug").join("wwctl"))
        })
        .clone()
        .map_err(|msg| anyhow!(msg))
}

/// A whole Ironwulf site inside one temp folder.
#[derive(Debug)]
pub struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    /// A site whose head is [`HEAD_IP`] on `br0`, with DHCP (range .100–.200),
    /// TFTP (iPXE from Debian's `/usr/lib/ipxe`) and HTTP enabled.
    pub fn new() -> Result<Self> {
        let dir = tempfile::tempdir().context("creating the site folder")?;
        let r = dir.path().display().to_string();
        for sub in [
            "etc/warewulf",
            "tftpboot",
            "chroots",
            "overlays",
            "provision",
            "var",
        ] {
            fs::create_dir_all(dir.path().join(sub)).with_context(|| format!("creating {sub}"))?;
        }
        let conf = format!(
            "ipaddr: {HEAD_IP}/{PREFIX}
warewulf:
  port: {HTTP_PORT}
  secure: false
  autobuild overlays: true
dhcp:
  enabled: true
  range start: 10.99.0.100
  range end: 10.99.0.200
  interfaces: [br0]
tftp:
  enabled: true
  tftproot: {r}/tftpboot
paths:
  sysconfdir: {r}/etc
  localstatedir: {r}/var
  datadir: {r}/share
  wwoverlaydir: {r}/overlays
  wwchrootdir: {r}/chroots
  wwprovisiondir: {r}/provision
  ipxesource: /usr/lib/ipxe
"
        );
        fs::write(dir.path().join("etc/warewulf/warewulf.conf"), conf)
            .context("writing warewulf.conf")?;
        fs::write(
            dir.path().join("etc/warewulf/nodes.conf"),
            "nodeprofiles: {}\nnodes: {}\n",
        )
        .context("writing nodes.conf")?;
        Ok(Self { dir })
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn conf(&self) -> PathBuf {
        self.root().join("etc/warewulf/warewulf.conf")
    }

    /// `<wwchrootdir>/<name>/rootfs`.
    pub fn rootfs(&self, image: &str) -> PathBuf {
        self.root().join("chroots").join(image).join("rootfs")
    }

    /// `<wwoverlaydir>/<name>/rootfs`.
    pub fn overlay(&self, name: &str) -> PathBuf {
        self.root().join("overlays").join(name).join("rootfs")
    }

    /// Writes `nodes.conf` as given.
    pub fn nodes(&self, yaml: &str) -> Result<()> {
        fs::write(self.root().join("etc/warewulf/nodes.conf"), yaml).context("writing nodes.conf")
    }

    /// Runs `wwctl ARGS` against this site; fails with its stderr.
    pub fn wwctl(&self, args: &[&str]) -> Result<String> {
        let out = self
            .command()?
            .args(args)
            .output()
            .context("running wwctl")?;
        if !out.status.success() {
            bail!(
                "wwctl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        String::from_utf8(out.stdout).context("wwctl printed non-UTF-8")
    }

    fn command(&self) -> Result<Command> {
        let mut cmd = Command::new(wwctl()?);
        cmd.arg("--warewulfconf").arg(self.conf());
        cmd.env("IRONWULF_DIST_OVERLAYS", workspace_root().join("overlays"));
        Ok(cmd)
    }

    /// Starts `wwctl server` in `ns` and waits until HTTP answers.
    pub fn start(&self, ns: &Netns) -> Result<Head> {
        let log = self.root().join("server.log");
        let child = ns
            .command(&wwctl()?.display().to_string())
            .arg("--warewulfconf")
            .arg(self.conf())
            .args(["-v", "server"])
            .env("IRONWULF_DIST_OVERLAYS", workspace_root().join("overlays"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).context("creating server.log")?)
            .spawn()
            .context("starting wwctl server")?;
        let head = Head { child, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while ns.http_get(&head.url("/status")).is_err() {
            if Instant::now() > deadline {
                bail!("wwctl server did not answer HTTP:\n{}", head.log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(head)
    }
}

/// A running `wwctl server`; killed and reaped on drop.
#[derive(Debug)]
pub struct Head {
    child: Child,
    log: PathBuf,
}

impl Head {
    /// `http://10.99.0.1:9873<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{HEAD_IP}:{HTTP_PORT}{path}")
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Head {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
