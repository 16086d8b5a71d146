//! `wwctl image exec NAME -- CMD` and `image shell NAME`: run a command in an
//! image with its changes held in an overlayfs upper layer, committed to the
//! image only when the command exits 0.
//!
//! Sequence (the parent is `wwctl`, which keeps the image's session lock):
//! 1. a private mount namespace for `wwctl` (mounts never reach the host,
//!    and die with the process if it is killed);
//! 2. overlayfs: lower = the image's rootfs, upper/work under
//!    `<image>/.exec/`, mounted on `.exec/merged`;
//! 3. the child unshares PID and UTS namespaces and forks; the grandchild,
//!    PID 1 of its namespace, mounts `/proc`, `/sys`, `/dev`, `/run` inside,
//!    sets the host name to the image's, chroots, bind-mounts the
//!    `--bind`/`image mounts` sources (opened before the chroot, so targets
//!    resolve inside the image) and execs the command. Both die with `wwctl`
//!    (`PR_SET_PDEATHSIG`), and the PID namespace takes every process the
//!    command started with it;
//! 4. `wwctl` detaches the mounts; exit 0 → the upper layer is merged into
//!    the rootfs (whiteouts delete, opaque directories replace, everything
//!    else is renamed in); otherwise it is thrown away.
//!
//! A `wwctl` killed before step 4 leaves the rootfs as it was: the next
//! session finds the stale `.exec/` and removes it.

use std::collections::HashSet;
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use anyhow::{Context, Result, bail};

use super::fsat;
use super::layer;
use super::store::{ImageStore, SessionLock};
use crate::config::ImageMount;

/// Session directory inside the image directory.
const SESSION_DIR: &str = ".exec";
/// PATH inside the image.
const IMAGE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Extended attributes overlayfs keeps on upper entries; never committed.
const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Kernel file systems mounted inside the image, in order.
const SYSTEM_MOUNTS: &[(&str, &str)] = &[("proc", "proc"), ("sys", "sysfs"), ("run", "tmpfs")];

/// One bind mount into the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bind {
    pub source: PathBuf,
    /// Absolute path inside the image.
    pub dest: String,
    pub readonly: bool,
    /// Copy the file in for the session instead of mounting it (never
    /// committed), as warewulf.conf's `copy: true`.
    pub copy: bool,
}

impl Bind {
    /// `src[:dst[:ro]]`, as `--bind` takes it.
    pub fn parse(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split(':').collect();
        let (source, dest, ro) = match parts.as_slice() {
            [src] => (*src, *src, false),
            [src, dst] => (*src, *dst, false),
            [src, dst, "ro"] => (*src, *dst, true),
            [src, dst, "rw"] => (*src, *dst, false),
            _ => bail!("invalid --bind {s:?}: want SOURCE[:DEST[:ro]]"),
        };
        let dest = if dest.is_empty() { source } else { dest };
        if source.is_empty() || !dest.starts_with('/') {
            bail!("invalid --bind {s:?}: SOURCE must be set and DEST absolute");
        }
        Ok(Self {
            source: source.into(),
            dest: dest.to_owned(),
            readonly: ro,
            copy: false,
        })
    }

    /// An `image mounts:` entry of warewulf.conf.
    pub fn from_config(m: &ImageMount) -> Self {
        let ro = m.readonly
            || m.options
                .as_deref()
                .is_some_and(|o| o.split(',').any(|x| x.trim() == "ro"));
        Self {
            source: m.source.clone().into(),
            dest: m.dest.clone().unwrap_or_else(|| m.source.clone()),
            readonly: ro,
            copy: m.copy,
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    pub binds: Vec<Bind>,
    /// Extra environment (`TERM` is passed through by the caller).
    pub env: Vec<(String, String)>,
}

/// What happened to the changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0: this many entries were changed in the image.
    Committed { changes: u64 },
    /// Non-zero exit or a signal: nothing changed in the image.
    Discarded,
}

/// The end of a session.
#[derive(Clone, Debug)]
pub struct ExecResult {
    pub status: ExitStatus,
    pub outcome: Outcome,
}

impl ExecResult {
    /// The shell-style exit code of the command (128 + signal).
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| 128 + self.status.signal().unwrap_or(0))
    }
}

/// Runs `req` in image `name`; see the module documentation.
pub fn exec(store: &ImageStore, name: &str, req: &ExecRequest) -> Result<ExecResult> {
    if req.argv.is_empty() {
        bail!("no command to run");
    }
    let _lock = SessionLock::acquire(store, name)?;
    let rootfs = store.require(name)?;
    let session = store.image_dir(name).join(SESSION_DIR);
    if session.exists() {
        tracing::info!(
            "removing the leftovers of an interrupted session in {}",
            session.display()
        );
        fs::remove_dir_all(&session).with_context(|| format!("removing {}", session.display()))?;
    }
    let upper = session.join("upper");
    let work = session.join("work");
    let merged = session.join("merged");
    for d in [&upper, &work, &merged] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    // The upper root stands for the image root: give it the root's owner,
    // mode and mtime, so that committing it changes only what the command did.
    let root_meta =
        fs::metadata(&rootfs).with_context(|| format!("reading {}", rootfs.display()))?;
    std::os::unix::fs::chown(&upper, Some(root_meta.uid()), Some(root_meta.gid()))
        .with_context(|| format!("setting the owner of {}", upper.display()))?;
    fs::set_permissions(&upper, root_meta.permissions())
        .with_context(|| format!("setting the mode of {}", upper.display()))?;
    fs::File::open(&upper)
        .and_then(|f| f.set_modified(root_meta.modified()?))
        .with_context(|| format!("setting the mtime of {}", upper.display()))?;
    let result = run_session(name, &rootfs, &upper, &work, &merged, req);
    let outcome = match result {
        Ok((status, skip)) if status.success() => {
            let changes = commit(&upper, &rootfs, &skip)
                .with_context(|| format!("committing the changes to image {name}"))?;
            Ok(ExecResult {
                status,
                outcome: Outcome::Committed { changes },
            })
        }
        Ok((status, _)) => Ok(ExecResult {
            status,
            outcome: Outcome::Discarded,
        }),
        Err(e) => Err(e),
    };
    if let Err(e) = fs::remove_dir_all(&session) {
        tracing::warn!("removing {}: {e}", session.display());
    }
    outcome
}

/// Mounts, runs, waits and unmounts; returns the exit status and the paths
/// created as mount points (not to be committed).
fn run_session(
    name: &str,
    rootfs: &Path,
    upper: &Path,
    work: &Path,
    merged: &Path,
    req: &ExecRequest,
) -> Result<(ExitStatus, HashSet<Vec<u8>>)> {
    // SAFETY: unshare has no memory-safety preconditions.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(io::Error::last_os_error()).context("creating a mount namespace (needs root)");
    }
    mount(None, "/", None, libc::MS_REC | libc::MS_PRIVATE, None)
        .context("making the mounts of this session private")?;
    let lower = fs::File::open(rootfs).with_context(|| format!("opening {}", rootfs.display()))?;
    let upper_fd = fs::File::open(upper).with_context(|| format!("opening {}", upper.display()))?;
    let work_fd = fs::File::open(work).with_context(|| format!("opening {}", work.display()))?;
    let opts = format!(
        "lowerdir=/proc/self/fd/{},upperdir=/proc/self/fd/{},workdir=/proc/self/fd/{},redirect_dir=off,metacopy=off,index=off",
        lower.as_raw_fd(),
        upper_fd.as_raw_fd(),
        work_fd.as_raw_fd()
    );
    mount(
        Some("overlay"),
        &merged.to_string_lossy(),
        Some("overlay"),
        0,
        Some(&opts),
    )
    .with_context(|| format!("mounting the overlay on {}", merged.display()))?;
    let _unmount = Unmount(merged.to_path_buf());
    drop((lower, upper_fd, work_fd));

    let merged_fd =
        fsat::open_root(merged).with_context(|| format!("opening {}", merged.display()))?;
    let mut created = HashSet::new();
    let mut pre_chroot = Vec::new();
    for (dir, fstype) in SYSTEM_MOUNTS {
        mount_point(&merged_fd, dir, true, &mut created)?;
        pre_chroot.push(MountOp {
            source: cstring(fstype)?,
            target: cstring(merged.join(dir).as_os_str().as_bytes())?,
            fstype: Some(cstring(fstype)?),
            flags: libc::MS_NOSUID | libc::MS_NODEV,
            readonly: false,
        });
    }
    mount_point(&merged_fd, "dev", true, &mut created)?;
    pre_chroot.push(MountOp {
        source: cstring("/dev")?,
        target: cstring(merged.join("dev").as_os_str().as_bytes())?,
        fstype: None,
        flags: libc::MS_BIND | libc::MS_REC,
        readonly: false,
    });
    let mut sources: Vec<OwnedFd> = Vec::new();
    let mut post_chroot = Vec::new();
    for b in &req.binds {
        let src = match fs::File::open(&b.source) {
            Ok(f) => OwnedFd::from(f),
            Err(e) => {
                eprintln!("warning: not mounting {}: {e}", b.source.display());
                continue;
            }
        };
        let is_dir = fs::metadata(&b.source).is_ok_and(|m| m.is_dir());
        let rel = b.dest.trim_start_matches('/');
        if let Err(e) = mount_point(&merged_fd, rel, is_dir, &mut created) {
            eprintln!(
                "warning: not mounting {} on {}: {e:#}",
                b.source.display(),
                b.dest
            );
            continue;
        }
        if b.copy && !is_dir {
            copy_in(&merged_fd, rel, src)
                .with_context(|| format!("copying {} to {}", b.source.display(), b.dest))?;
            created.insert(rel.as_bytes().to_vec());
            continue;
        }
        post_chroot.push(MountOp {
            source: cstring(format!("/proc/self/fd/{}", src.as_raw_fd()))?,
            target: cstring(&b.dest)?,
            fstype: None,
            flags: libc::MS_BIND | libc::MS_REC,
            readonly: b.readonly,
        });
        sources.push(src);
    }
    drop(merged_fd);

    let plan = ChildPlan {
        pre_chroot,
        post_chroot,
        root: cstring(merged.as_os_str().as_bytes())?,
        hostname: name.as_bytes().to_vec(),
    };
    let mut cmd = Command::new(&req.argv[0]);
    cmd.args(&req.argv[1..])
        .env_clear()
        .env("PATH", IMAGE_PATH)
        .env("HOME", "/root")
        .env("debian_chroot", name)
        .env("PS1", format!("[wwctl image {name}] \\w\\$ "))
        .env("WW_IMAGE", name);
    for (k, v) in &req.env {
        cmd.env(k, v);
    }
    // SAFETY: the closure only makes system calls (no allocation, no locks)
    // on data prepared above; see `ChildPlan::enter`.
    unsafe {
        cmd.pre_exec(move || plan.enter());
    }
    let _ignore = IgnoreInterrupts::new();
    let status = cmd
        .status()
        .with_context(|| format!("running {:?} in image {name}", req.argv[0]))?;
    drop(sources);
    Ok((status, created))
}

/// Ensures `rel` exists in the merged tree as a directory (or an empty file)
/// without following a symlink; records what it had to create.
fn mount_point(root: &OwnedFd, rel: &str, dir: bool, created: &mut HashSet<Vec<u8>>) -> Result<()> {
    let comps = layer::components(rel.as_bytes())?;
    let Some((last, parents)) = comps.split_last() else {
        bail!("cannot mount over the image root");
    };
    let mut cur = fsat::open_dir_at(root.as_raw_fd(), &c".".to_owned())?;
    let mut path = Vec::new();
    for comp in parents {
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(comp);
        let c = fsat::cname(comp)?;
        if fsat::try_lstat_at(cur.as_raw_fd(), &c)?.is_none() {
            fsat::mkdir_at(cur.as_raw_fd(), &c, 0o755)?;
            created.insert(path.clone());
        }
        cur = fsat::open_dir_at(cur.as_raw_fd(), &c).with_context(|| {
            format!(
                "/{} is not a directory inside the image",
                String::from_utf8_lossy(&path)
            )
        })?;
    }
    if !path.is_empty() {
        path.push(b'/');
    }
    path.extend_from_slice(last);
    let c = fsat::cname(last)?;
    match fsat::try_lstat_at(cur.as_raw_fd(), &c)? {
        Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => {
            bail!(
                "/{} is a symlink in the image",
                String::from_utf8_lossy(&path)
            )
        }
        Some(st) if fsat::is_dir(&st) != dir => bail!(
            "/{} is {} in the image",
            String::from_utf8_lossy(&path),
            if dir {
                "not a directory"
            } else {
                "a directory"
            }
        ),
        Some(_) => {}
        None => {
            if dir {
                fsat::mkdir_at(cur.as_raw_fd(), &c, 0o755)?;
            } else {
                fsat::create_at(cur.as_raw_fd(), &c, 0o644)?;
            }
            created.insert(path);
        }
    }
    Ok(())
}

/// Writes the content of `src` over file `rel` of the merged tree.
fn copy_in(root: &OwnedFd, rel: &str, src: OwnedFd) -> Result<()> {
    let comps = layer::components(rel.as_bytes())?;
    let (last, parents) = comps.split_last().context("empty destination")?;
    let dir = layer::open_path(root, parents, rel.as_bytes(), false)?;
    let mut out = fsat::open_file_at(dir.as_raw_fd(), &fsat::cname(last)?)?;
    out.set_len(0)?;
    io::copy(&mut fs::File::from(src), &mut out)?;
    Ok(())
}

fn cstring(s: impl AsRef<[u8]>) -> Result<CString> {
    CString::new(s.as_ref()).context("NUL byte in a path")
}

fn mount(
    src: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let c = |s: Option<&str>| {
        s.map(|s| CString::new(s).map_err(|_| io::ErrorKind::InvalidInput))
            .transpose()
    };
    let (src, fstype, data) = (c(src)?, c(fstype)?, c(data)?);
    let target = CString::new(target).map_err(|_| io::ErrorKind::InvalidInput)?;
    let p = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: every pointer is null or a valid NUL-terminated string.
    let r = unsafe { libc::mount(p(&src), target.as_ptr(), p(&fstype), flags, p(&data).cast()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Lazily detaches the overlay and everything mounted below it.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let Ok(c) = CString::new(self.0.as_os_str().as_bytes()) else {
            return;
        };
        // SAFETY: valid NUL-terminated path.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            tracing::warn!(
                "unmounting {}: {}",
                self.0.display(),
                io::Error::last_os_error()
            );
        }
    }
}

/// `wwctl` ignores Ctrl-C and Ctrl-\ while the command runs (they are for
/// the command), as `system(3)` does.
struct IgnoreInterrupts {
    old: [libc::sighandler_t; 2],
}

impl IgnoreInterrupts {
    fn new() -> Self {
        // SAFETY: installing SIG_IGN has no preconditions.
        let old = unsafe {
            [
                libc::signal(libc::SIGINT, libc::SIG_IGN),
                libc::signal(libc::SIGQUIT, libc::SIG_IGN),
            ]
        };
        Self { old }
    }
}

impl Drop for IgnoreInterrupts {
    fn drop(&mut self) {
        // SAFETY: restoring the handlers saved above.
        unsafe {
            libc::signal(libc::SIGINT, self.old[0]);
            libc::signal(libc::SIGQUIT, self.old[1]);
        }
    }
}

/// One mount made by the child.
struct MountOp {
    source: CString,
    target: CString,
    fstype: Option<CString>,
    flags: libc::c_ulong,
    readonly: bool,
}

impl MountOp {
    fn run(&self) -> io::Result<()> {
        let fstype = self
            .fstype
            .as_ref()
            .map_or(std::ptr::null(), |f| f.as_ptr());
        // SAFETY: valid NUL-terminated strings or null.
        let r = unsafe {
            libc::mount(
                self.source.as_ptr(),
                self.target.as_ptr(),
                fstype,
                self.flags,
                std::ptr::null(),
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        if self.readonly {
            let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_REC;
            // SAFETY: as above.
            let r = unsafe {
                libc::mount(
                    std::ptr::null(),
                    self.target.as_ptr(),
                    std::ptr::null(),
                    flags,
                    std::ptr::null(),
                )
            };
            if r != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// Everything the forked child needs, prepared before the fork.
struct ChildPlan {
    pre_chroot: Vec<MountOp>,
    post_chroot: Vec<MountOp>,
    root: CString,
    hostname: Vec<u8>,
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl ChildPlan {
    /// Runs in the forked child before `exec`: system calls only.
    fn enter(&self) -> io::Result<()> {
        // SAFETY (whole block): plain system calls on prepared, valid data;
        // fork in a single-threaded child is allowed.
        unsafe {
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL))?;
            check(libc::unshare(libc::CLONE_NEWPID | libc::CLONE_NEWUTS))?;
            let pid = libc::fork();
            if pid < 0 {
                return Err(io::Error::last_os_error());
            }
            if pid > 0 {
                // The middle process: wait for PID 1 of the new namespace and
                // pass on its exit status.
                libc::signal(libc::SIGINT, libc::SIG_IGN);
                libc::signal(libc::SIGQUIT, libc::SIG_IGN);
                let mut status = 0;
                while libc::waitpid(pid, &mut status, 0) < 0 {
                    if *libc::__errno_location() != libc::EINTR {
                        libc::_exit(127);
                    }
                }
                if libc::WIFEXITED(status) {
                    libc::_exit(libc::WEXITSTATUS(status));
                }
                let sig = libc::WTERMSIG(status);
                libc::signal(sig, libc::SIG_DFL);
                libc::kill(libc::getpid(), sig);
                libc::_exit(128 + sig);
            }
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL))?;
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGQUIT, libc::SIG_DFL);
            check(libc::sethostname(
                self.hostname.as_ptr().cast(),
                self.hostname.len(),
            ))?;
            for m in &self.pre_chroot {
                m.run()?;
            }
            check(libc::chroot(self.root.as_ptr()))?;
            check(libc::chdir(c"/".as_ptr()))?;
            for m in &self.post_chroot {
                m.run()?;
            }
        }
        Ok(())
    }
}

/// Merges the overlay upper directory into `rootfs`; returns the number of
/// entries changed. `skip` holds paths created only as mount points.
pub fn commit(upper: &Path, rootfs: &Path, skip: &HashSet<Vec<u8>>) -> Result<u64> {
    let up = fsat::open_root(upper).with_context(|| format!("opening {}", upper.display()))?;
    let low = fsat::open_root(rootfs).with_context(|| format!("opening {}", rootfs.display()))?;
    let mut changes = 0;
    commit_dir(up.as_raw_fd(), low.as_raw_fd(), b"", skip, &mut changes)?;
    // Metadata of the root itself, if the command changed it.
    let st = fsat::lstat_at(up.as_raw_fd(), &c".".to_owned())?;
    copy_meta(&st, up.as_raw_fd(), low.as_raw_fd(), &c".".to_owned())?;
    let fd = fs::File::open(rootfs).with_context(|| format!("opening {}", rootfs.display()))?;
    // SAFETY: valid open descriptor.
    if unsafe { libc::syncfs(fd.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error()).context("syncing the image");
    }
    Ok(changes)
}

fn commit_dir(
    up: RawFd,
    low: RawFd,
    prefix: &[u8],
    skip: &HashSet<Vec<u8>>,
    changes: &mut u64,
) -> Result<()> {
    for name in fsat::list_dir(up)? {
        let mut path = prefix.to_vec();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(&name);
        let shown = || format!("/{}", String::from_utf8_lossy(&path));
        if skip.contains(&path) {
            continue;
        }
        let c = fsat::cname(&name)?;
        let st = fsat::lstat_at(up, &c).with_context(|| format!("inspecting {}", shown()))?;
        let kind = st.st_mode & libc::S_IFMT;
        if kind == libc::S_IFCHR && st.st_rdev == 0 {
            fsat::remove_all_at(low, &c).with_context(|| format!("deleting {}", shown()))?;
            *changes += 1;
            continue;
        }
        let lower = fsat::try_lstat_at(low, &c)?;
        if kind == libc::S_IFDIR {
            let opaque = fsat::get_xattr_at(up, &c, OPAQUE_XATTR)?.is_some_and(|v| v == b"y");
            if let Some(l) = lower
                && fsat::is_dir(&l)
                && !opaque
            {
                let sub_up = fsat::open_dir_at(up, &c)?;
                let sub_low = fsat::open_dir_at(low, &c)?;
                commit_dir(
                    sub_up.as_raw_fd(),
                    sub_low.as_raw_fd(),
                    &path,
                    skip,
                    changes,
                )?;
                copy_meta(&st, up, low, &c).with_context(|| format!("updating {}", shown()))?;
                continue;
            }
        }
        if lower.is_some() {
            fsat::remove_all_at(low, &c).with_context(|| format!("replacing {}", shown()))?;
        }
        fsat::rename_at(up, &c, low, &c)
            .with_context(|| format!("moving {} into the image", shown()))?;
        strip_overlay_xattrs(low, &c)?;
        *changes += 1;
    }
    Ok(())
}

/// Owner, mode, xattrs and mtime of directory `c` in `up` onto `c` in `low`.
fn copy_meta(st: &libc::stat, up: RawFd, low: RawFd, c: &CString) -> Result<()> {
    fsat::chown_at(low, c, st.st_uid, st.st_gid)?;
    fsat::chmod_at(low, c, st.st_mode & 0o7777)?;
    for (k, v) in fsat::list_xattrs_at(up, c)? {
        if !k.starts_with(OVERLAY_XATTR_PREFIX) {
            fsat::set_xattr_at(low, c, &k, &v)?;
        }
    }
    fsat::utime_at(low, c, st.st_mtime)?;
    Ok(())
}

/// Removes overlayfs's own attributes from a committed entry (and, for a
/// directory, everything in it).
fn strip_overlay_xattrs(dir: RawFd, c: &CString) -> Result<()> {
    for (k, _) in fsat::list_xattrs_at(dir, c)? {
        if k.starts_with(OVERLAY_XATTR_PREFIX) {
            fsat::remove_xattr_at(dir, c, &k)?;
        }
    }
    let st = fsat::lstat_at(dir, c)?;
    if fsat::is_dir(&st) {
        let sub = fsat::open_dir_at(dir, c)?;
        for name in fsat::list_dir(sub.as_raw_fd())? {
            let cn = fsat::cname(&name)?;
            let cst = fsat::lstat_at(sub.as_raw_fd(), &cn)?;
            // Whiteouts inside a moved directory hide nothing below it.
            if cst.st_mode & libc::S_IFMT == libc::S_IFCHR && cst.st_rdev == 0 {
                fsat::unlink_at(sub.as_raw_fd(), &cn, false)?;
                continue;
            }
            strip_overlay_xattrs(sub.as_raw_fd(), &cn)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_parse() {
        assert_eq!(
            Bind::parse("/srv/data").unwrap(),
            Bind {
                source: "/srv/data".into(),
                dest: "/srv/data".into(),
                readonly: false,
                copy: false,
            }
        );
        let b = Bind::parse("/opt/x:/mnt/y:ro").unwrap();
        assert_eq!((b.dest.as_str(), b.readonly), ("/mnt/y", true));
        assert!(Bind::parse("/a:rel").is_err());
        assert!(Bind::parse("/a:/b:rw:x").is_err());
    }
}
