//! The boot sequence: an ordered list of stages ([`STAGES`]) run against a
//! [`Sys`]. Each stage logs its start and end; the first error ends the boot
//! in the crash action (the caller's job).
//!
//! Two paths share the list. **Single-stage** (Warewulf's default): the
//! kernel already unpacked image and overlays; `/warewulf/wwinit.conf`
//! exists, and `root` decides whether we stay in the initramfs or copy into
//! a tmpfs. **Two-stage**: the initramfs holds only wwinit (and modules); no
//! config file, so we load NIC modules, bring the network up, stream the
//! artifacts into a tmpfs and switch to it. Stages that do not apply to the
//! current path say "skipped" and why.

use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use proto::{Mac, routes};

use crate::cmdline::{self, Cmdline, Server};
use crate::config::{self, NodeConfig, RootKind};
use crate::crash;
use crate::fetch;
use crate::log;
use crate::sys::{FetchEntry, MountFlags, NetInfo, Sys};

/// An early mount.
pub struct EarlyMount {
    pub source: &'static str,
    pub target: &'static str,
    pub fstype: &'static str,
    pub flags: MountFlags,
    pub data: &'static str,
}

/// Kernel file systems, mounted first (skipped where already mounted).
pub const EARLY_MOUNTS: &[EarlyMount] = &[
    // /proc first: /proc/cmdline and /proc/self are needed by everything after.
    EarlyMount {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: MountFlags::API,
        data: "",
    },
    // /sys: module aliases of present hardware, network interfaces.
    EarlyMount {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: MountFlags::API,
        data: "",
    },
    // /dev: /dev/kmsg and /dev/console for logging; device nodes for init.
    EarlyMount {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MountFlags::NOSUID,
        data: "mode=0755",
    },
    // /run: moved into the new root so init finds it (systemd's initrd interface).
    EarlyMount {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: MountFlags::NOSUID_NODEV,
        data: "mode=0755",
    },
];

/// Where a new root is assembled before switching to it.
pub const NEWROOT: &str = "/newroot";
/// Mounts carried into the new root, in this order.
pub const CARRIED_MOUNTS: &[&str] = &["/dev", "/proc", "/sys", "/run"];
/// Warewulf hook directories, run in the final root, in this order.
/// `wwinit.d` failures stop the boot (as Warewulf's `run-wwinit.d`);
/// `init.d` failures are logged (as Warewulf's `wwprescripts`).
pub const HOOK_DIRS: &[(&str, bool)] = &[("/warewulf/wwinit.d", true), ("/warewulf/init.d", false)];

/// Which path this boot takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    SingleStage,
    TwoStage,
}

/// The state the stages share.
pub struct Ctx<'a> {
    pub sys: &'a mut dyn Sys,
    pub cmdline: Cmdline,
    pub mode: Mode,
    pub config: NodeConfig,
    /// Set when a new root is being assembled at [`NEWROOT`].
    pub newroot: bool,
    pub net: Option<NetInfo>,
    pub wwid: Option<Mac>,
    pub server: Option<Server>,
}

/// What a stage did.
pub enum Outcome {
    Done(String),
    Skipped(&'static str),
}

/// Times the whole layering is tried when an artifact arrives corrupt
/// (digest or size mismatch, broken stream): each try starts from a fresh
/// root, so nothing of a bad copy survives.
pub const FETCH_ATTEMPTS: u32 = 3;

/// One boot stage.
pub struct Stage {
    pub name: &'static str,
    pub run: fn(&mut Ctx<'_>) -> Result<Outcome>,
}

/// The boot, in order. The last stage execs init and only returns on failure.
pub const STAGES: &[Stage] = &[
    // Before anything else: every later stage reads /proc, /sys or logs to /dev/kmsg.
    Stage {
        name: "mount",
        run: mount_early,
    },
    // Early, so the crash action the admin chose applies to every later failure.
    Stage {
        name: "cmdline",
        run: read_cmdline,
    },
    // Decides the path: a node config unpacked by the kernel means single-stage.
    Stage {
        name: "config",
        run: read_config,
    },
    // Two-stage: NIC drivers must be loaded before any interface exists.
    Stage {
        name: "modules",
        run: load_modules,
    },
    // Two-stage: needs the NIC driver; gives the identity (MAC) and the head.
    Stage {
        name: "network",
        run: network,
    },
    // Two-stage: streams the artifacts into a tmpfs; needs network and identity.
    Stage {
        name: "fetch",
        run: fetch,
    },
    // Single-stage tmpfs/ramfs: copy the unpacked initramfs into the new root.
    Stage {
        name: "rootfs",
        run: rootfs,
    },
    // Both paths with a new root: after it is complete, before anything runs in it.
    Stage {
        name: "switch-root",
        run: switch_root,
    },
    // In the final root: its /lib/modules (kmods) has the IPMI drivers.
    // Before hooks, where Warewulf configured the BMC (init.d/50-ipmi).
    Stage {
        name: "ipmi",
        run: ipmi,
    },
    // In the final root, so hooks see the node's own files and shell.
    Stage {
        name: "hooks",
        run: hooks,
    },
    // After hooks (they may change files), right before init: labels must be final.
    Stage {
        name: "selinux",
        run: selinux,
    },
    // Images without systemd: start wwclient ourselves, last, so it sees the
    // final root (systemd images start it from its unit instead).
    Stage {
        name: "wwclient",
        run: start_wwclient,
    },
    // Last: replaces us.
    Stage {
        name: "init",
        run: exec_init,
    },
];

impl<'a> Ctx<'a> {
    pub fn new(sys: &'a mut dyn Sys) -> Self {
        Ctx {
            sys,
            cmdline: Cmdline::default(),
            mode: Mode::SingleStage,
            config: NodeConfig::default(),
            newroot: false,
            net: None,
            wwid: None,
            server: None,
        }
    }
}

/// Runs every stage; returns only with the error that stopped the boot.
pub fn boot(ctx: &mut Ctx<'_>) -> anyhow::Error {
    for stage in STAGES {
        log::info(&format!("stage {}: start", stage.name));
        let t = Instant::now();
        match (stage.run)(ctx) {
            Ok(Outcome::Done(detail)) => {
                let ms = t.elapsed().as_millis();
                let sep = if detail.is_empty() { "" } else { ": " };
                log::info(&format!(
                    "stage {}: done in {ms} ms{sep}{detail}",
                    stage.name
                ));
                if let (Some(server), Some(wwid)) = (ctx.server.clone(), ctx.wwid) {
                    ctx.sys.report(&server, &wwid, stage.name, &detail);
                }
            }
            Ok(Outcome::Skipped(why)) => {
                log::info(&format!("stage {}: skipped ({why})", stage.name));
            }
            Err(e) => return e.context(format!("stage {}", stage.name)),
        }
    }
    anyhow!("init returned")
}

fn mount_early(ctx: &mut Ctx<'_>) -> Result<Outcome> {
    let mut done = Vec::new();
    for m in EARLY_MOUNTS {
        if ctx.sys.is_mountpoint(m.target) {
            continue;
        }
        ctx.sys
            .mkdir_all(m.target)
            .with_context(|| format!("creating {}", m.target))?;
        ctx.sys
            .mount(m.source, m.target, m.fstype, m.flags, m.data)
            .with_context(|| format!("mounting {} on {}", m.fstype, m.target))?;
        done.push(m.target);
    }
    log::attach_console();
    Ok(Outcome::Done(format!("mounted [{}]", done.join(" "))))
}

fn read_cmdline(ctx: &mut Ctx<'_>) -> Result<Outcome> {
    let raw = ctx
        .sys
        .read_file("/proc/cmdline")
        .context("reading /proc/cmdline")?;
    ctx.cmdline = cmdline::parse(&String::from_utf8_lossy(&raw));
    crash::configure(ctx.cmdline.crash, ctx.cmdline.crash_delay);
    ctx.sys
        .set_timeouts(ctx.cmdline.dhcp_timeout, ctx.cmdline.fetch_timeout);
    for w in &ctx.cmdline.warnings {
        log::warn(w);
    }
    ctx.wwid = ctx.cmdline.wwid;
    Ok(Outcome::Done(format!("crash action {}", ctx.cmdline.crash)))
}

/// Applies `wwinit.root=`/`wwinit.init=` over the file's values.
fn apply_overrides(ctx: &mut Ctx<'_>) -> Result<()> {
    if let Some(root) = &ctx.cmdline.root {
        ctx.config.root = RootKind::parse(root).map_err(|e| anyhow!("{}: {e}", cmdline::ROOT))?;
    }
    if let Some(init) = &ctx.cmdline.init {
        ctx.config.init = init.clone();
    }
    Ok(())
}

fn read_config(ctx: &mut Ctx<'_>) -> Result<Outcome> {
    let path = format!("/{}", config::PATH);
    if !ctx.sys.exists(&path) {
        ctx.mode = Mode::TwoStage;
        apply_overrides(ctx)?;
        return Ok(Outcome::Done(format!("no {path}: two-stage boot")));
    }
    let text = ctx
        .sys
        .read_file(&path)
        .with_context(|| format!("reading {path}"))?;
    let mut warnings = Vec::new();
    ctx.config = config::parse(&String::from_utf8_lossy(&text), &mut warnings)?;
    for w in warnings {
        log::warn(&w);
    }
    apply_overrides(ctx)?;
    ctx.mode = Mode::SingleStage;
    Ok(Outcome::Done(format!(
        "single-stage, node {}, root {:?}, init {}",
        ctx.config.id.as_deref().unwrap_or("?"),
        ctx.config.root,
        ctx.config.init
    )))
}

fn load_modules(ctx: &mut Ctx<'_>) -> Result<Outcome> {
    if ctx.mode != Mode::TwoStage {
        return Ok(Outcome::Skipped(
            "single-stage: the kernel booted the image",
        ));
    }
    let n = ctx.sys.load_modules(&ctx.cmdline.modules)?;
    Ok(Outcome::Done(format!("{n} modules loaded")))
}

fn network(ctx: &mut Ctx<'_>) -> Result<Outcome> {
    if ctx.mode != Mode::TwoStage {
        return Ok(Outcome::Skipped(
            "single-stage: the image configures its network",
        ));
    }
    let net = ctx
        .sys
        .network_up(ctx.cmdline.ip.as_ref(), ctx.cmdline.wwid)?;
    let wwid = ctx.cmdline.wwid.unwrap_or(net.mac);
    let server = match (&ctx.cmdline.server, net.server_hint) {
        (Some(s), _) => s.clone(),
        (None, Some(ip)) => Server {
            host: ip.to_string(),
            port: routes::DEFAULT_PORT,
        },
        (None, None) => bail!(
            "no head known: set {}=host[:port] or use a DHCP server that is the head",
            cmdline::SERVER
        ),
    };
    ctx.sys.report_failures_to(&server, &wwid);
    let detail = format!(
        "{} {} address {}, wwid {wwid}, head {}:{}",
        net.iface, net.mac, net.addr, server.host, server.port
    );
    ctx.wwid = Some(wwid);
    ctx.server = Some(server);
    ctx.net = Some(net);
    Ok(Outcome::Done(detail))
}

/// Mounts the tmpfs (or ramfs) that becomes the root.
fn mount_newroot(ctx: &mut Ctx<'_>, kind: RootKind) -> Result<()> {
    ctx.sys.mkdir_all(NEWROOT).context("creating /newroot")?;
    let (fstype, data) = match kind {
        RootKind::Ramfs => ("ramfs", String::new()),
        _ => match &ctx.cmdline.tmpfs_size {
            Some(size) => ("tmpfs", format!("mpol=interleave,size={size}")),
            None => ("tmpfs", "mpol=interleave".to_owned()),
        },
    };
    ctx.sys
        .mount("wwroot", NEWROOT, fstype, MountFlags::NONE, &data)
        .with_context(|| format!("mounting {fstype} on {NEWROOT}"))?;
    ctx.newroot = true;
    Ok(())
}

/// The artifacts to layer when the head has no manifest route.
fn fallback_entries(wwid: &Mac) -> Vec<FetchEntry> {
    vec![
        FetchEntry::Unverified("image", routes::image(wwid), true),
        FetchEntry::Unverified("kmods", routes::kmods(wwid), false),
        FetchEntry::Unverified("system", routes::system(wwid), true),
        FetchEntry::Unverified("runtime", routes::runtime(wwid), false),
    ]
}

fn fetch(ctx: &mut Ctx<'_>) -> Result<Outcome> {
    if ctx.mode != Mode::TwoStage {
        return Ok(Outcome::Skipped(
            "single-stage: the kernel unpacked the image",
        ));
    }
    let (Some(server), Some(wwid)) = (ctx.server.clone(), ctx.wwid) else {
        bail!("network stage left no head or identity");
    };
    // Two-stage always builds a new root; `root=initramfs` would mean the stage-1 tree.
    let kind = match ctx.config.root {
        RootKind::Ramfs => RootKind::Ramfs,
        _ => RootKind::Tmpfs,
    };
    mount_newroot(ctx, kind)?;
    let mut entries = match ctx.sys.fetch_manifest(&server, &wwid)? {
        Some(m) => {
            if m.is_empty() {
                bail!("the head's manifest for {wwid} lists no artifacts");
            }
            m.into_iter().map(FetchEntry::Verified).collect()
        }
        None => {
            log::warn("the head has no manifest route: fetching without digests");
            fallback_entries(&wwid)
        }
    };
    let mut attempt = 1;
    let names = loop {
        match layer(ctx, &server, &wwid, &entries) {
            Ok(names) => break names,
            Err(e) if attempt < FETCH_ATTEMPTS && e.downcast_ref::<fetch::Corrupt>().is_some() => {
                attempt += 1;
                let msg = format!("{e:#}");
                log::warn(&format!(
                    "{msg}: discarding the new root, fetching again (attempt {attempt} of {FETCH_ATTEMPTS})"
                ));
                ctx.sys.report(&server, &wwid, "fetch retry", &msg);
                ctx.sys
                    .umount(NEWROOT)
                    .with_context(|| format!("unmounting {NEWROOT}"))?;
                ctx.newroot = false;
                mount_newroot(ctx, kind)?;
                // A rebuilt artifact has a new digest: ask again.
                if let Some(m) = ctx.sys.fetch_manifest(&server, &wwid)?
                    && !m.is_empty()
                {
                    entries = m.into_iter().map(FetchEntry::Verified).collect();
                }
            }
            Err(e) => return Err(e),
        }
    };
    // The system overlay carries the node's config; the kernel line still wins.
    let path = format!("{NEWROOT}/{}", config::PATH);
    if ctx.sys.exists(&path) {
        let text = ctx
            .sys
            .read_file(&path)
            .with_context(|| format!("reading {path}"))?;
        let mut warnings = Vec::new();
        ctx.config = config::parse(&String::from_utf8_lossy(&text), &mut warnings)?;
        for w in warnings {
            log::warn(&w);
        }
        apply_overrides(ctx)?;
    } else {
        log::warn(&format!(
            "no {path} in the fetched root: init {}",
            ctx.config.init
        ));
    }
    Ok(Outcome::Done(format!("layered {}", names.join(", "))))
}

/// Streams every entry into the new root, in order; returns the stages applied.
fn layer(
    ctx: &mut Ctx<'_>,
    server: &Server,
    wwid: &Mac,
    entries: &[FetchEntry],
) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in entries {
        log::info(&format!("fetching {}", entry.stage()));
        let applied = ctx
            .sys
            .fetch_unpack(server, entry, NEWROOT)
            .with_context(|| format!("fetching {}", entry.stage()))?;
        if applied {
            ctx.sys
                .report(server, wwid, &format!("fetched {}", entry.stage()), "");
            names.push(entry.stage().to_owned());
        }
    }
    Ok(names)
}

fn rootfs(ctx: &mut Ctx<'_>) -> Result<Outcome> {
    if ctx.mode != Mode::SingleStage {
        return Ok(Outcome::Skipped("two-stage: fetched into the new root"));
    }
    let kind = ctx.config.root;
    if kind == RootKind::Initramfs {
        return Ok(Outcome::Skipped("root=initramfs: staying in the initramfs"));
    }
    mount_newroot(ctx, kind)?;
    ctx.sys
        .copy_root(NEWROOT)
        .context("copying the initramfs into the new root")?;
    Ok(Outcome::Done(format!("copied into {kind:?}")))
}

fn switch_root(ctx: &mut Ctx<'_>) -> Result<Outcome> {
    if !ctx.newroot {
        return Ok(Outcome::Skipped("no new root"));
    }
    for m in CARRIED_MOUNTS {
        let to = format!("{NEWROOT}{m}");
        ctx.sys
            .mkdir_all(&to)
            .with_context(|| format!("creating {to}"))?;
        ctx.sys
            .move_mount(m, &to)
            .with_context(|| format!("moving {m} to {to}"))?;
    }
    // As systemd's switch-root: empty the old root (never crossing into
    // other file systems, so the new root is safe), then move and enter.
    ctx.sys
        .clear_old_root()
        .context("removing the old root's files")?;
    ctx.sys.chdir(NEWROOT).context("entering the new root")?;
    ctx.sys
        .move_mount(NEWROOT, "/")
        .context("moving the new root onto /")?;
    ctx.sys.chroot(".").context("chroot into the new root")?;
    ctx.sys.chdir("/").context("chdir / in the new root")?;
    Ok(Outcome::Done(String::new()))
}

/// BMC failures are logged as errors but do not stop the boot: a node with
/// a broken BMC is still worth booting (Warewulf's hook behaves the same).
fn ipmi(ctx: &mut Ctx<'_>) -> Result<Outcome> {
    if !ctx.config.ipmi.write {
        return Ok(Outcome::Skipped("ipmi.write is not true"));
    }
    let reqs = crate::ipmi::plan(&ctx.config.ipmi);
    if reqs.is_empty() {
        return Ok(Outcome::Skipped("no BMC settings"));
    }
    match ctx.sys.configure_bmc(&reqs) {
        Ok((ok, failed)) => {
            for f in &failed {
                log::error(&format!("BMC: {f}"));
            }
            Ok(Outcome::Done(format!(
                "BMC set: [{}]; {} failed",
                ok.join(", "),
                failed.len()
            )))
        }
        Err(e) => {
            log::error(&format!("BMC not configured: {e:#}"));
            Ok(Outcome::Done("BMC NOT configured (error above)".to_owned()))
        }
    }
}

/// Shells that may run hook scripts, in order of preference.
const SHELLS: &[&str] = &["/bin/sh", "/usr/bin/sh"];

fn hooks(ctx: &mut Ctx<'_>) -> Result<Outcome> {
    let mut ran = 0usize;
    for (dir, fatal) in HOOK_DIRS {
        let scripts = match ctx.sys.list_files(dir) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("listing {dir}")),
        };
        if scripts.is_empty() {
            continue;
        }
        let Some(sh) = SHELLS.iter().copied().find(|s| ctx.sys.exists(s)) else {
            if *fatal {
                bail!("{dir} has scripts but the root has no /bin/sh");
            }
            log::warn(&format!(
                "{dir} has scripts but the root has no /bin/sh: not run"
            ));
            continue;
        };
        for name in scripts {
            let path = format!("{dir}/{name}");
            log::info(&format!("running {path}"));
            let code = ctx
                .sys
                .run(sh, &[&path], &[("PREFIX", "")])
                .with_context(|| format!("running {path}"))?;
            ran += 1;
            if code != 0 {
                if *fatal {
                    bail!("{path} exited with status {code}");
                }
                log::warn(&format!("{path} exited with status {code}"));
            }
        }
    }
    if ran == 0 {
        return Ok(Outcome::Skipped("no hook scripts"));
    }
    Ok(Outcome::Done(format!("{ran} scripts")))
}

/// The mode `/etc/selinux/config` asks for, if SELinux is on.
pub fn selinux_mode(config: &str) -> Option<&str> {
    config.lines().find_map(|l| {
        let v = l.trim().strip_prefix("SELINUX=")?.trim().trim_matches('"');
        matches!(v, "enforcing" | "permissive").then_some(v)
    })
}

fn first_existing(ctx: &mut Ctx<'_>, candidates: &[&'static str]) -> Option<&'static str> {
    candidates.iter().copied().find(|p| ctx.sys.exists(p))
}

fn selinux(ctx: &mut Ctx<'_>) -> Result<Outcome> {
    let Ok(cfg) = ctx.sys.read_file("/etc/selinux/config") else {
        return Ok(Outcome::Skipped("no /etc/selinux/config"));
    };
    let cfg = String::from_utf8_lossy(&cfg).into_owned();
    let Some(mode) = selinux_mode(&cfg) else {
        return Ok(Outcome::Skipped("SELinux disabled"));
    };
    let enforcing = mode == "enforcing";
    let load = first_existing(ctx, &["/usr/sbin/load_policy", "/sbin/load_policy"]);
    let restorecon = first_existing(ctx, &["/usr/sbin/restorecon", "/sbin/restorecon"]);
    let (Some(load), Some(restorecon)) = (load, restorecon) else {
        if enforcing {
            bail!("SELinux is enforcing but load_policy or restorecon is missing");
        }
        log::warn("SELinux permissive but load_policy or restorecon missing: not labelling");
        return Ok(Outcome::Skipped("tools missing"));
    };
    for (prog, args) in [
        (load, &["-i"][..]),
        (
            restorecon,
            &["-R", "-e", "/sys", "-e", "/proc", "-e", "/dev", "/"][..],
        ),
    ] {
        let code = ctx
            .sys
            .run(prog, args, &[])
            .with_context(|| format!("running {prog}"))?;
        if code != 0 {
            if enforcing {
                bail!("{prog} exited with status {code}");
            }
            log::warn(&format!("{prog} exited with status {code}"));
        }
    }
    Ok(Outcome::Done(format!(
        "policy loaded ({mode}), root relabelled"
    )))
}

/// Where the `wwclient` overlay installs the runtime overlay agent.
const WWCLIENT: &str = "/warewulf/wwclient";

fn start_wwclient(ctx: &mut Ctx<'_>) -> Result<Outcome> {
    if !ctx.sys.exists(WWCLIENT) {
        return Ok(Outcome::Skipped("no /warewulf/wwclient"));
    }
    let init = ctx.config.init.clone();
    let target = ctx.sys.canonical(&init).unwrap_or(init);
    if target.contains("systemd") {
        return Ok(Outcome::Skipped("systemd starts it from its unit"));
    }
    // A node that cannot run wwclient still boots; it just misses updates.
    match ctx.sys.spawn(WWCLIENT, &[]) {
        Ok(pid) => Ok(Outcome::Done(format!("started {WWCLIENT} (pid {pid})"))),
        Err(e) => {
            log::warn(&format!("starting {WWCLIENT}: {e}"));
            Ok(Outcome::Skipped("wwclient failed to start"))
        }
    }
}

fn exec_init(ctx: &mut Ctx<'_>) -> Result<Outcome> {
    let init = ctx.config.init.clone();
    if let (Some(server), Some(wwid)) = (ctx.server.clone(), ctx.wwid) {
        ctx.sys.report(&server, &wwid, "init", &init);
    }
    // Two-stage: the node's own network set-up starts from a clean NIC, as
    // after a single-stage boot (and udev can rename it: not while it is up).
    if let Some(net) = ctx.net.take() {
        match ctx.sys.network_down(&net.iface) {
            Ok(()) => log::info(&format!("{}: address removed, link down", net.iface)),
            Err(e) => log::warn(&format!("{}: releasing for init: {e}", net.iface)),
        }
    }
    log::info(&format!("exec {init}"));
    // SAFETY: sync() takes no arguments and cannot fail.
    unsafe { libc::sync() };
    let err = ctx.sys.exec(&init, &[&init]);
    Err(anyhow::Error::new(err).context(format!("exec {init}")))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use proto::{ArtifactCompression, ArtifactStage, ManifestEntry};

    use super::*;
    use crate::sys::fake::FakeSys;

    const EARLY: [&str; 8] = [
        "mkdir /proc",
        "mount proc /proc proc [nosuid,nodev,noexec] ",
        "mkdir /sys",
        "mount sysfs /sys sysfs [nosuid,nodev,noexec] ",
        "mkdir /dev",
        "mount devtmpfs /dev devtmpfs [nosuid] mode=0755",
        "mkdir /run",
        "mount tmpfs /run tmpfs [nosuid,nodev] mode=0755",
    ];

    const SWITCH: [&str; 14] = [
        "mkdir /newroot/dev",
        "move /dev /newroot/dev",
        "mkdir /newroot/proc",
        "move /proc /newroot/proc",
        "mkdir /newroot/sys",
        "move /sys /newroot/sys",
        "mkdir /newroot/run",
        "move /run /newroot/run",
        "clear-old-root",
        "chdir /newroot",
        "move /newroot /",
        "chroot .",
        "chdir /",
        "exec /sbin/test-init /sbin/test-init",
    ];

    fn run(sys: &mut FakeSys) -> String {
        let mut ctx = Ctx::new(sys);
        format!("{:#}", boot(&mut ctx))
    }

    #[test]
    fn single_stage_initramfs_execs_in_place() {
        let mut sys = FakeSys::new()
            .with_file("/proc/cmdline", "console=ttyS0")
            .with_file("/warewulf/wwinit.conf", "id=n1\nroot=initramfs\ninit=\n");
        let err = run(&mut sys);
        assert_eq!(err, "stage init: exec /sbin/init: fake exec");
        let mut want: Vec<&str> = EARLY.to_vec();
        want.push("exec /sbin/init /sbin/init");
        assert_eq!(sys.calls, want);
    }

    #[test]
    fn wwclient_is_started_before_a_non_systemd_init() {
        let mut sys = FakeSys::new()
            .with_file("/proc/cmdline", "console=ttyS0")
            .with_file("/warewulf/wwinit.conf", "root=initramfs\ninit=/sbin/init\n")
            .with_file("/warewulf/wwclient", "binary")
            .with_file("/sbin/init", "#!/bin/sh");
        run(&mut sys);
        let tail: Vec<&str> = sys
            .calls
            .iter()
            .rev()
            .take(2)
            .rev()
            .map(String::as_str)
            .collect();
        assert_eq!(
            tail,
            ["spawn /warewulf/wwclient", "exec /sbin/init /sbin/init"]
        );
    }

    #[test]
    fn wwclient_is_left_to_systemd_and_absent_clients_are_skipped() {
        let mut sys = FakeSys::new()
            .with_file("/proc/cmdline", "console=ttyS0")
            .with_file("/warewulf/wwinit.conf", "root=initramfs\ninit=/sbin/init\n")
            .with_file("/warewulf/wwclient", "binary");
        sys.links
            .insert("/sbin/init".into(), "/usr/lib/systemd/systemd".into());
        run(&mut sys);
        assert!(
            !sys.calls.iter().any(|c| c.starts_with("spawn")),
            "{:?}",
            sys.calls
        );

        let mut sys = FakeSys::new()
            .with_file("/proc/cmdline", "console=ttyS0")
            .with_file("/warewulf/wwinit.conf", "root=initramfs\ninit=/sbin/init\n");
        run(&mut sys);
        assert!(
            !sys.calls.iter().any(|c| c.starts_with("spawn")),
            "{:?}",
            sys.calls
        );
    }

    #[test]
    fn single_stage_tmpfs_copies_and_switches() {
        let mut sys = FakeSys::new()
            .with_file("/proc/cmdline", "wwinit.tmpfs_size=80%")
            .with_file(
                "/warewulf/wwinit.conf",
                "root=tmpfs\ninit=/sbin/test-init\n",
            );
        // devtmpfs already mounted by the kernel: not mounted twice.
        sys.mountpoints.insert("/dev".into());
        run(&mut sys);
        let mut want: Vec<&str> = EARLY
            .iter()
            .copied()
            .filter(|c| *c != "mkdir /dev" && !c.contains("devtmpfs"))
            .collect();
        want.extend([
            "mkdir /newroot",
            "mount wwroot /newroot tmpfs [] mpol=interleave,size=80%",
            "copy-root /newroot",
        ]);
        want.extend(SWITCH);
        assert_eq!(sys.calls, want);
    }

    #[test]
    fn cmdline_overrides_root_and_init() {
        let mut sys = FakeSys::new()
            .with_file(
                "/proc/cmdline",
                "wwinit.root=ramfs wwinit.init=/sbin/test-init",
            )
            .with_file("/warewulf/wwinit.conf", "root=initramfs\n");
        run(&mut sys);
        assert!(
            sys.calls
                .contains(&"mount wwroot /newroot ramfs [] ".to_owned()),
            "{:?}",
            sys.calls
        );
        assert_eq!(
            sys.calls.last().map(String::as_str),
            Some("exec /sbin/test-init /sbin/test-init")
        );
    }

    #[test]
    fn bad_config_stops_before_anything_runs() {
        let mut sys = FakeSys::new()
            .with_file("/proc/cmdline", "")
            .with_file("/warewulf/wwinit.conf", "root=persistent\n");
        let err = run(&mut sys);
        assert!(
            err.starts_with("stage config: warewulf/wwinit.conf line 1: root"),
            "{err}"
        );
        assert!(!sys.calls.iter().any(|c| c.starts_with("exec")));
    }

    #[test]
    fn hooks_run_in_order_and_wwinit_d_failure_is_fatal() {
        let mut sys = FakeSys::new()
            .with_file("/proc/cmdline", "")
            .with_file("/warewulf/wwinit.conf", "root=initramfs\n")
            .with_file("/bin/sh", "")
            .with_dir("/warewulf/wwinit.d")
            .with_dir("/warewulf/init.d")
            .with_file("/warewulf/wwinit.d/20-b", "")
            .with_file("/warewulf/wwinit.d/10-a", "")
            .with_file("/warewulf/init.d/50-ipmi", "");
        sys.exit_codes
            .insert("/bin/sh /warewulf/init.d/50-ipmi".into(), 1);
        run(&mut sys);
        let runs: Vec<&str> = sys
            .calls
            .iter()
            .filter(|c| c.starts_with("run"))
            .map(String::as_str)
            .collect();
        assert_eq!(
            runs,
            [
                "run PREFIX= /bin/sh /warewulf/wwinit.d/10-a",
                "run PREFIX= /bin/sh /warewulf/wwinit.d/20-b",
                "run PREFIX= /bin/sh /warewulf/init.d/50-ipmi",
            ]
        );
        // init.d failure is only a warning: init still runs.
        assert!(
            sys.calls
                .last()
                .is_some_and(|c| c.starts_with("exec /sbin/init"))
        );

        sys.calls.clear();
        sys.mountpoints.clear();
        sys.exit_codes
            .insert("/bin/sh /warewulf/wwinit.d/10-a".into(), 3);
        let err = run(&mut sys);
        assert_eq!(
            err,
            "stage hooks: /warewulf/wwinit.d/10-a exited with status 3"
        );
        assert!(!sys.calls.iter().any(|c| c.starts_with("exec")));
    }

    #[test]
    fn ipmi_runs_only_when_write_is_true() {
        let conf = "ipmi.write=true\nipmi.ipaddr=10.1.0.5\nipmi.netmask=255.255.0.0\n";
        let mut sys = FakeSys::new()
            .with_file("/proc/cmdline", "")
            .with_file("/warewulf/wwinit.conf", conf);
        run(&mut sys);
        assert!(
            sys.calls.contains(
                &"configure-bmc [IP source static, IP address, netmask, VLAN off]".to_owned()
            ),
            "{:?}",
            sys.calls
        );
        let mut sys = FakeSys::new().with_file("/proc/cmdline", "").with_file(
            "/warewulf/wwinit.conf",
            "ipmi.write=false\nipmi.ipaddr=10.1.0.5\n",
        );
        run(&mut sys);
        assert!(!sys.calls.iter().any(|c| c.starts_with("configure-bmc")));
    }

    #[test]
    fn selinux_relabels_when_enabled() {
        assert_eq!(
            selinux_mode("# x\nSELINUX=enforcing\nSELINUXTYPE=targeted\n"),
            Some("enforcing")
        );
        assert_eq!(selinux_mode("SELINUX=disabled\n"), None);
        let mut sys = FakeSys::new()
            .with_file("/proc/cmdline", "")
            .with_file("/warewulf/wwinit.conf", "")
            .with_file("/etc/selinux/config", "SELINUX=permissive\n")
            .with_file("/usr/sbin/load_policy", "")
            .with_file("/sbin/restorecon", "");
        run(&mut sys);
        let runs: Vec<&str> = sys
            .calls
            .iter()
            .filter(|c| c.starts_with("run"))
            .map(String::as_str)
            .collect();
        assert_eq!(
            runs,
            [
                "run /usr/sbin/load_policy -i",
                "run /sbin/restorecon -R -e /sys -e /proc -e /dev /",
            ]
        );
        let mut sys = FakeSys::new()
            .with_file("/proc/cmdline", "")
            .with_file("/warewulf/wwinit.conf", "")
            .with_file("/etc/selinux/config", "SELINUX=enforcing\n");
        let err = run(&mut sys);
        assert_eq!(
            err,
            "stage selinux: SELinux is enforcing but load_policy or restorecon is missing"
        );
    }

    fn manifest_sys() -> FakeSys {
        let digest = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let mut sys = two_stage_sys();
        sys.manifest = Some(vec![ManifestEntry {
            stage: ArtifactStage::Image,
            url: "/image/x".into(),
            digest: digest.parse().expect("valid"),
            size: 10,
            compression: ArtifactCompression::Zst,
        }]);
        sys
    }

    #[test]
    fn corrupt_artifact_is_fetched_again_into_a_fresh_root() {
        let mut sys = manifest_sys();
        sys.corrupt_fetches = [1].into();
        let err = run(&mut sys);
        assert!(err.ends_with("fake exec"), "{err}");
        let calls = sys.calls.join("\n");
        let retry = calls.find("report fetch retry").expect("retry reported");
        let umount = calls.find("umount /newroot").expect("old root dropped");
        let last_fetch = calls.rfind("fetch 10.0.2.2").expect("fetched");
        assert!(retry < umount && umount < last_fetch, "{calls}");
        assert_eq!(
            sys.calls
                .iter()
                .filter(|c| c.starts_with("get-manifest"))
                .count(),
            2,
            "{calls}"
        );
    }

    #[test]
    fn artifact_corrupt_every_time_fails_after_the_last_attempt() {
        let mut sys = manifest_sys();
        sys.corrupt_fetches = (1..=FETCH_ATTEMPTS as usize).collect();
        let err = run(&mut sys);
        assert!(
            err.contains("stage fetch: fetching image: /image/x")
                && err.contains("digest mismatch"),
            "{err}"
        );
        let fetches = sys.calls.iter().filter(|c| c.starts_with("fetch ")).count();
        assert_eq!(fetches, FETCH_ATTEMPTS as usize);
        assert!(!sys.calls.iter().any(|c| c.starts_with("exec")));
    }

    fn two_stage_sys() -> FakeSys {
        let mut sys = FakeSys::new().with_file(
            "/proc/cmdline",
            "wwinit.modules=virtio_net ip=dhcp wwinit.dhcp_timeout=7",
        );
        sys.net = Some(NetInfo {
            iface: "eth0".into(),
            mac: Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]),
            addr: Ipv4Addr::new(10, 0, 2, 15),
            server_hint: Some(Ipv4Addr::new(10, 0, 2, 2)),
        });
        sys
    }

    #[test]
    fn two_stage_without_manifest_fetches_routes() {
        let mut sys =
            two_stage_sys().with_file("/newroot/warewulf/wwinit.conf", "init=/sbin/test-init\n");
        run(&mut sys);
        assert_eq!(
            sys.timeouts,
            Some((
                std::time::Duration::from_secs(7),
                cmdline::DEFAULT_FETCH_TIMEOUT
            ))
        );
        let mut want: Vec<&str> = EARLY.to_vec();
        want.extend([
            "load-modules [virtio_net]",
            "network-up Some(Dhcp { iface: None }) None",
            "report-failures 10.0.2.2:9873 52:54:00:12:34:56",
            "report network",
            "mkdir /newroot",
            "mount wwroot /newroot tmpfs [] mpol=interleave",
            "get-manifest 10.0.2.2:9873 52:54:00:12:34:56",
            "fetch 10.0.2.2:9873 /image/52:54:00:12:34:56 required=true -> /newroot",
            "report fetched image",
            "fetch 10.0.2.2:9873 /kmods/52:54:00:12:34:56 required=false -> /newroot",
            "report fetched kmods",
            "fetch 10.0.2.2:9873 /system/52:54:00:12:34:56 required=true -> /newroot",
            "report fetched system",
            "fetch 10.0.2.2:9873 /runtime/52:54:00:12:34:56 required=false -> /newroot",
            "report fetched runtime",
            "report fetch",
        ]);
        let mut switch: Vec<&str> = SWITCH.to_vec();
        let exec = switch.pop().expect("non-empty");
        want.extend(switch);
        want.extend([
            "report switch-root",
            "report init",
            "network-down eth0",
            exec,
        ]);
        assert_eq!(sys.calls, want);
    }

    #[test]
    fn two_stage_with_manifest_verifies_and_server_from_cmdline() {
        let digest = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let mut sys = two_stage_sys();
        sys.files.insert(
            "/proc/cmdline".into(),
            b"wwinit.server=head:8080 wwid=aa:bb:cc:dd:ee:ff".to_vec(),
        );
        sys.manifest = Some(vec![ManifestEntry {
            stage: ArtifactStage::Image,
            url: "/image/aa:bb:cc:dd:ee:ff".into(),
            digest: digest.parse().expect("valid"),
            size: 10,
            compression: ArtifactCompression::Zst,
        }]);
        let err = run(&mut sys);
        assert!(err.ends_with("fake exec"), "{err}");
        let defaults = (
            cmdline::DEFAULT_DHCP_TIMEOUT,
            cmdline::DEFAULT_FETCH_TIMEOUT,
        );
        assert_eq!(sys.timeouts, Some(defaults));
        assert!(
            sys.calls
                .contains(&"get-manifest head:8080 aa:bb:cc:dd:ee:ff".to_owned())
        );
        assert!(sys.calls.contains(&format!(
            "fetch head:8080 /image/aa:bb:cc:dd:ee:ff {digest} -> /newroot"
        )));
        assert!(sys.calls.contains(&"exec /sbin/init /sbin/init".to_owned()));
    }

    #[test]
    fn two_stage_without_head_fails_clearly() {
        let mut sys = two_stage_sys();
        if let Some(n) = sys.net.as_mut() {
            n.server_hint = None;
        }
        let err = run(&mut sys);
        assert!(err.starts_with("stage network: no head known"), "{err}");
    }
}
