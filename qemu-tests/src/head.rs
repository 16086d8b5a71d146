//! A head node for boot tests: a temp site (its own `warewulf.conf`,
//! `nodes.conf`, images and overlays) and `wwctl server` running inside a
//! test's network namespace, stopped and reaped on drop.
//!
//! For full-image boots a site can also carry its own copy of the shipped
//! overlays with the static `wwinit` and `wwclient` in place
//! ([`Site::install_overlays`]) and a private `/root` for every `wwctl` it
//! runs ([`Site::private_root_home`]), so `wwctl configure ssh` and the
//! `ssh.authorized_keys` overlay use a throw-away key instead of the host's.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::artifacts::{self, target_dir, workspace_root};
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

/// Settings of a [`Site`] beyond the defaults of [`Site::new`].
#[derive(Debug, Clone, Default)]
pub struct SiteOptions {
    /// `warewulf: update interval` (seconds between wwclient polls).
    pub update_interval: Option<u32>,
    /// `ssh: key types` (Warewulf's default list when empty).
    pub ssh_key_types: Vec<String>,
}

/// A whole Ironwulf site inside one temp folder.
#[derive(Debug)]
pub struct Site {
    dir: tempfile::TempDir,
    /// Shipped overlays (`IRONWULF_DIST_OVERLAYS`): the workspace's
    /// `overlays/` until [`Site::install_overlays`] makes a copy.
    dist: PathBuf,
    /// Bind-mounted over `/root` for every `wwctl` run, when set.
    root_home: Option<PathBuf>,
}

impl Site {
    /// A site whose head is [`HEAD_IP`] on `br0`, with DHCP (range .100–.200),
    /// TFTP (iPXE from Debian's `/usr/lib/ipxe`) and HTTP enabled.
    pub fn new() -> Result<Self> {
        Self::with_options(&SiteOptions::default())
    }

    /// Like [`Site::new`], with `options` in `warewulf.conf`.
    pub fn with_options(options: &SiteOptions) -> Result<Self> {
        let dir = tempfile::tempdir().context("creating the site folder")?;
        let r = dir.path().display().to_string();
        let interval = options
            .update_interval
            .map(|s| format!("\n  update interval: {s}"))
            .unwrap_or_default();
        let ssh = if options.ssh_key_types.is_empty() {
            String::new()
        } else {
            format!(
                "ssh:\n  key types: [{}]\n",
                options.ssh_key_types.join(", ")
            )
        };
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
  autobuild overlays: true{interval}
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
{ssh}"
        );
        fs::write(dir.path().join("etc/warewulf/warewulf.conf"), conf)
            .context("writing warewulf.conf")?;
        fs::write(
            dir.path().join("etc/warewulf/nodes.conf"),
            "nodeprofiles: {}\nnodes: {}\n",
        )
        .context("writing nodes.conf")?;
        Ok(Self {
            dir,
            dist: workspace_root().join("overlays"),
            root_home: None,
        })
    }

    /// Copies the workspace's `overlays/` into the site as its shipped
    /// overlays, the way `scripts/install.sh` installs them: modes from
    /// `overlays/PERMISSIONS`, the static `wwinit` and `wwclient` (built if
    /// needed) placed in their overlays.
    pub fn install_overlays(&mut self) -> Result<()> {
        let dist = self.root().join("share/warewulf/overlays");
        fs::create_dir_all(self.root().join("share/warewulf"))?;
        let src = workspace_root().join("overlays");
        run(Command::new("cp").arg("-a").arg(&src).arg(&dist))?;
        let perms =
            fs::read_to_string(dist.join("PERMISSIONS")).context("reading overlays/PERMISSIONS")?;
        fs::remove_file(dist.join("PERMISSIONS"))?;
        for (n, line) in perms.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (mode, path) = line
                .split_once(' ')
                .with_context(|| format!("overlays/PERMISSIONS line {}: {line}", n + 1))?;
            let mode = u32::from_str_radix(mode, 8)
                .with_context(|| format!("overlays/PERMISSIONS line {}: mode {mode}", n + 1))?;
            fs::set_permissions(dist.join(path.trim()), fs::Permissions::from_mode(mode))
                .with_context(|| format!("overlays/PERMISSIONS line {}: {path}", n + 1))?;
        }
        for (binary, place) in [
            (artifacts::wwinit()?, "wwinit/rootfs/warewulf/wwinit"),
            (artifacts::wwclient()?, "wwclient/rootfs/warewulf/wwclient"),
        ] {
            let to = dist.join(place);
            // git keeps no empty folders: a fresh clone lacks `warewulf/`.
            if let Some(dir) = to.parent() {
                fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            fs::copy(&binary, &to).with_context(|| format!("installing {}", to.display()))?;
            fs::set_permissions(&to, fs::Permissions::from_mode(0o755))?;
        }
        self.dist = dist;
        Ok(())
    }

    /// From now on every `wwctl` of this site (commands and the server) runs
    /// in a private mount namespace with `<site>/roothome` bind-mounted over
    /// `/root`: `wwctl configure ssh` puts root's key pair there and the
    /// `ssh.authorized_keys` overlay reads it from there. Returns the folder
    /// (its `.ssh/id_*` is the key that logs in to the nodes).
    pub fn private_root_home(&mut self) -> Result<PathBuf> {
        let home = self.root().join("roothome");
        fs::create_dir_all(&home).context("creating the private /root")?;
        fs::set_permissions(&home, fs::Permissions::from_mode(0o700))?;
        self.root_home = Some(home.clone());
        Ok(home)
    }

    /// Puts a copy of the image tree `src` at `<wwchrootdir>/<name>/rootfs`
    /// (hard links when `src` is on the same file system: `wwctl image
    /// build` only reads the tree).
    pub fn install_image(&self, name: &str, src: &Path) -> Result<PathBuf> {
        let dst = self.rootfs(name);
        fs::create_dir_all(dst.parent().context("rootfs has a parent")?)?;
        let linked = Command::new("cp")
            .arg("-al")
            .arg(src)
            .arg(&dst)
            .stderr(Stdio::null())
            .status()
            .context("running cp")?;
        if !linked.success() {
            let _ = fs::remove_dir_all(&dst);
            run(Command::new("cp").arg("-a").arg(src).arg(&dst))?;
        }
        Ok(dst)
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
        self.wwctl_command(None)
    }

    /// `wwctl --warewulfconf <site>`, inside network namespace `netns` when
    /// given, and with the private `/root` when set.
    fn wwctl_command(&self, netns: Option<&str>) -> Result<Command> {
        let wwctl = wwctl()?;
        let mut cmd = match &self.root_home {
            Some(home) => {
                let mut cmd = Command::new("unshare");
                cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
                    .arg(r#"mount --bind "$0" /root && exec "$@""#)
                    .arg(home);
                if let Some(ns) = netns {
                    cmd.args(["ip", "netns", "exec", ns]);
                }
                cmd.arg(wwctl);
                cmd.env("HOME", "/root");
                cmd
            }
            None => match netns {
                Some(ns) => {
                    let mut cmd = Command::new("ip");
                    cmd.args(["netns", "exec", ns]).arg(wwctl);
                    cmd
                }
                None => Command::new(wwctl),
            },
        };
        cmd.arg("--warewulfconf").arg(self.conf());
        cmd.env("IRONWULF_DIST_OVERLAYS", &self.dist);
        Ok(cmd)
    }

    /// Starts `wwctl server` in `ns` and waits until HTTP answers.
    pub fn start(&self, ns: &Netns) -> Result<Head> {
        let log = self.root().join("server.log");
        // Appended to, so a restarted head keeps the earlier log.
        let log_file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .context("creating server.log")?;
        let child = self
            .wwctl_command(Some(ns.name()))?
            .args(["-v", "server"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
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

    /// `r`, with the server log attached to its error.
    pub fn with_log<T>(&self, r: Result<T>) -> Result<T> {
        r.map_err(|e| e.context(format!("server log:\n{}", self.log())))
    }

    /// Process id of `wwctl server`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Runs `cmd`, failing with its stderr.
fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} failed ({}): {}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Drop for Head {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
