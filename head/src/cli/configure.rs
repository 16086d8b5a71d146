//! `wwctl configure ssh|hostfile|nfs|tls`: head-side services set up from
//! `warewulf.conf`, as Warewulf's `wwctl configure` does.
//!
//! - `tls` creates (or imports, exports) the cluster CA and the head's
//!   certificate in `<sysconfdir>/warewulf/tls` ([`crate::tls`]);
//! - `ssh` creates the cluster-wide SSH host keys in
//!   `<sysconfdir>/warewulf/keys` (copied to nodes by the `ssh.host_keys`
//!   overlay) and root's key pair (its public key reaches the nodes through
//!   the `ssh.authorized_keys` overlay); existing keys are kept.
//! - `hostfile` and `nfs` render the `host` overlay's `etc/hosts` and
//!   `etc/exports` onto the head; `nfs` then enables the NFS service and
//!   re-exports.
//!
//! `--root DIR` (hidden; also `IRONWULF_HOST_ROOT`) writes below `DIR`
//! instead of `/` and runs no service command, for tests and image builds.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use super::Context as Ctx;
use crate::config::Config;
use crate::fsutil;
use crate::overlay::build;
use crate::overlay::data::Site;
use crate::overlay::render::{FileKind, Prepared, RenderedFile};
use crate::overlay::store::OverlayStore;

/// The overlay rendered onto the head itself.
const HOST_OVERLAY: &str = "host";

#[derive(Debug, Args)]
pub struct ConfigureArgs {
    #[command(subcommand)]
    command: ConfigureCommand,
}

#[derive(Debug, Subcommand)]
enum ConfigureCommand {
    /// Create the cluster SSH host keys and root's SSH key pair.
    Ssh,
    /// Write the head's /etc/hosts from the host overlay.
    Hostfile(RootArgs),
    /// Write the head's /etc/exports from the host overlay and re-export.
    Nfs(RootArgs),
    /// Create, import or export the cluster CA and the head's certificate.
    Tls(TlsArgs),
}

#[derive(Debug, Args)]
struct TlsArgs {
    /// Create what is missing: cluster CA, head certificate, token key.
    #[arg(long, conflicts_with_all = ["import", "export"])]
    create: bool,
    /// Issue a new head certificate under the existing CA.
    #[arg(long, conflicts_with_all = ["import", "export"])]
    renew: bool,
    /// Extra name or address for the head certificate (repeatable).
    #[arg(long = "san", value_name = "NAME")]
    sans: Vec<String>,
    /// Copy ca.crt, warewulf.crt, warewulf.key (and ca.key, token.key) from DIR.
    #[arg(long, value_name = "DIR", conflicts_with = "export")]
    import: Option<PathBuf>,
    /// Copy the site's TLS files to DIR (keys mode 0600).
    #[arg(long, value_name = "DIR")]
    export: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct RootArgs {
    /// Write below DIR instead of / and run no service command.
    #[arg(long, hide = true, env = "IRONWULF_HOST_ROOT", value_name = "DIR")]
    root: Option<PathBuf>,
}

pub fn run(ctx: &Ctx, args: ConfigureArgs) -> Result<()> {
    match args.command {
        ConfigureCommand::Ssh => ssh(&ctx.config),
        ConfigureCommand::Hostfile(a) => {
            let written = write_host_file(&ctx.config, "etc/hosts", a.root.as_deref())?;
            if !written {
                bail!("the host overlay has no etc/hosts to write");
            }
            Ok(())
        }
        ConfigureCommand::Nfs(a) => nfs(&ctx.config, a.root.as_deref()),
        ConfigureCommand::Tls(a) => tls(&ctx.config, a),
    }
}

/// `wwctl configure tls`: see [`crate::tls`].
fn tls(config: &Config, args: TlsArgs) -> Result<()> {
    let dir = crate::tls::TlsPaths::new(config).dir;
    if let Some(from) = &args.import {
        let copied = crate::tls::import(config, from)?;
        println!("imported {} into {}", copied.join(", "), dir.display());
        return Ok(());
    }
    if let Some(to) = &args.export {
        let copied = crate::tls::export(config, to)?;
        println!("exported {} to {}", copied.join(", "), to.display());
        return Ok(());
    }
    if !args.create && !args.renew {
        bail!("nothing to do: pass --create, --renew, --import DIR or --export DIR");
    }
    let done = crate::tls::create(config, &args.sans, args.renew)?;
    let say = |made: bool, what: &str| {
        let verb = if made { "created" } else { "keeping" };
        println!("{verb} {what}");
    };
    say(done.ca, &format!("the cluster CA in {}", dir.display()));
    say(done.head, "the head certificate (warewulf.crt)");
    say(done.token_key, "the node token key (token.key)");
    if done.head {
        println!(
            "names: {}",
            crate::tls::head_names(config, &args.sans).join(", ")
        );
    }
    if !config.warewulf.tls {
        println!("set 'warewulf: tls: true' in warewulf.conf to serve HTTPS");
    }
    Ok(())
}

/// Host keys for every `ssh: key types` entry, then root's key pair.
fn ssh(config: &Config) -> Result<()> {
    let keys = config.paths.sysconfdir.join("warewulf").join("keys");
    fs::create_dir_all(&keys).with_context(|| format!("creating {}", keys.display()))?;
    for kind in &config.ssh.key_types {
        let key = keys.join(format!("ssh_host_{kind}_key"));
        if key.exists() {
            println!("keeping {}", key.display());
            continue;
        }
        keygen(kind, &key)?;
        println!("created {}", key.display());
    }
    root_key_pair(config)
}

/// Root's `~/.ssh/id_TYPE` (first key type) and its public key in
/// `~/.ssh/authorized_keys`, so root can log in to every node.
fn root_key_pair(config: &Config) -> Result<()> {
    let Some(kind) = config.ssh.key_types.first() else {
        bail!("warewulf.conf lists no ssh key types");
    };
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    let dir = home.join(".ssh");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("setting the mode of {}", dir.display()))?;
    let key = dir.join(format!("id_{kind}"));
    if key.exists() {
        println!("keeping {}", key.display());
    } else {
        keygen(kind, &key)?;
        println!("created {}", key.display());
    }
    let public = dir.join(format!("id_{kind}.pub"));
    let line =
        fs::read_to_string(&public).with_context(|| format!("reading {}", public.display()))?;
    let line = line.trim();
    let authorized = dir.join("authorized_keys");
    let current = match fs::read_to_string(&authorized) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", authorized.display())),
    };
    if current.lines().any(|l| l.trim() == line) {
        return Ok(());
    }
    let mut text = current;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(line);
    text.push('\n');
    fsutil::write_atomic(&authorized, text.as_bytes(), 0o600)?;
    println!("added {} to {}", public.display(), authorized.display());
    Ok(())
}

/// `ssh-keygen` without passphrase or comment.
fn keygen(kind: &str, path: &Path) -> Result<()> {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-C", "", "-f"])
        .arg(path)
        .status()
        .context("running ssh-keygen")?;
    if !status.success() {
        bail!(
            "ssh-keygen -t {kind} for {} failed ({status})",
            path.display()
        );
    }
    Ok(())
}

/// `/etc/exports`, then the NFS service and `exportfs -ra` on a real head.
fn nfs(config: &Config, root: Option<&Path>) -> Result<()> {
    if !config.nfs.enabled {
        println!("nfs is disabled in warewulf.conf; nothing to do");
        return Ok(());
    }
    if !write_host_file(config, "etc/exports", root)? {
        bail!("the host overlay has no etc/exports to write");
    }
    if root.is_some() {
        return Ok(());
    }
    let service = &config.nfs.systemd_name;
    run_quietly(Command::new("systemctl").args(["enable", "--now", service.as_str()]))
        .with_context(|| format!("enabling the {service} service"))?;
    run_quietly(Command::new("exportfs").arg("-ra")).context("re-exporting NFS file systems")
}

fn run_quietly(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// Renders the host overlay's `target` and writes it below `root` (default
/// `/`). False when the overlay produced no such file (no template, or it
/// called `abort`).
fn write_host_file(config: &Config, target: &str, root: Option<&Path>) -> Result<bool> {
    let Some(file) = render_host_overlay(config)?
        .into_iter()
        .find(|f| f.path == target)
    else {
        return Ok(false);
    };
    let dest = root.unwrap_or(Path::new("/")).join(&file.path);
    match &file.kind {
        FileKind::File(data) => {
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            fsutil::write_atomic(&dest, data, file.mode & 0o7777)?;
        }
        FileKind::Dir | FileKind::Symlink(_) => {
            bail!("host overlay: {target} is not a regular file")
        }
    }
    println!("wrote {}", dest.display());
    Ok(true)
}

/// Every file of the host overlay, rendered with the site's data (the head
/// is no node: templates see the site fields and `AllNodes`).
fn render_host_overlay(config: &Config) -> Result<Vec<RenderedFile>> {
    let nodes = Arc::new(build::load_nodes(config)?);
    let store = OverlayStore::new(&config.paths);
    let prep = Prepared::load(store.require(HOST_OVERLAY)?).map_err(anyhow::Error::msg)?;
    let site = Site::new(config, nodes, SystemTime::now());
    let env = build::render_env(config);
    let mut files = prep.statics.clone();
    for t in &prep.templates {
        let data = site
            .shared_data(HOST_OVERLAY, &t.host_path)
            .map_err(anyhow::Error::msg)?;
        let (out, _) = prep
            .render_template(t, &data, &env)
            .map_err(anyhow::Error::msg)?;
        files.extend(out);
    }
    Ok(files)
}
