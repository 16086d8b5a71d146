//! The seam between the boot planner and the machine: every syscall and
//! every piece of I/O the stages need goes through [`Sys`]. The real
//! implementation is [`crate::realsys::RealSys`]; [`fake::FakeSys`] records
//! calls against an in-memory file system so stages are unit-tested without
//! root.

use std::io;

use anyhow::Result;
use proto::{Mac, Manifest, ManifestEntry};

use crate::cmdline::{IpParam, Server};

/// `mount(2)` flags we use (subset of `MS_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MountFlags {
    pub nosuid: bool,
    pub nodev: bool,
    pub noexec: bool,
}

impl MountFlags {
    pub const NONE: MountFlags = MountFlags {
        nosuid: false,
        nodev: false,
        noexec: false,
    };
    /// `nosuid,nodev,noexec` — kernel API file systems.
    pub const API: MountFlags = MountFlags {
        nosuid: true,
        nodev: true,
        noexec: true,
    };
    /// `nosuid` — devtmpfs.
    pub const NOSUID: MountFlags = MountFlags {
        nosuid: true,
        nodev: false,
        noexec: false,
    };
    /// `nosuid,nodev` — `/run`.
    pub const NOSUID_NODEV: MountFlags = MountFlags {
        nosuid: true,
        nodev: true,
        noexec: false,
    };
}

/// The network as two-stage boot brought it up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetInfo {
    pub iface: String,
    pub mac: Mac,
    pub addr: std::net::Ipv4Addr,
    /// The DHCP server (or `ip=` server field), a fallback for the head.
    pub server_hint: Option<std::net::Ipv4Addr>,
}

/// Everything the stages do to the machine.
pub trait Sys {
    fn mount(
        &mut self,
        source: &str,
        target: &str,
        fstype: &str,
        flags: MountFlags,
        data: &str,
    ) -> io::Result<()>;
    /// `mount(from, to, MS_MOVE)`.
    fn move_mount(&mut self, from: &str, to: &str) -> io::Result<()>;
    /// `umount2(target, MNT_DETACH)`.
    fn umount(&mut self, target: &str) -> io::Result<()>;
    /// Whether `path` is a mount point (its device differs from its parent's).
    fn is_mountpoint(&mut self, path: &str) -> bool;
    fn mkdir_all(&mut self, path: &str) -> io::Result<()>;
    fn exists(&mut self, path: &str) -> bool;
    fn read_file(&mut self, path: &str) -> io::Result<Vec<u8>>;
    /// Names of the regular files (or symlinks to them) in `path`, sorted.
    fn list_files(&mut self, path: &str) -> io::Result<Vec<String>>;
    /// Copies `/` into `dest` without crossing devices, removing each source
    /// file once copied (halves peak memory).
    fn copy_root(&mut self, dest: &str) -> io::Result<()>;
    /// Deletes what is left of the old root `/` without crossing devices.
    fn clear_old_root(&mut self) -> io::Result<()>;
    fn chdir(&mut self, path: &str) -> io::Result<()>;
    fn chroot(&mut self, path: &str) -> io::Result<()>;
    /// Runs a program to completion; its exit code (signal death = 128+sig).
    fn run(&mut self, program: &str, args: &[&str], env: &[(&str, &str)]) -> io::Result<i32>;
    /// Starts a program in the background (it outlives our exec of init,
    /// which then reaps it); its PID.
    fn spawn(&mut self, program: &str, args: &[&str]) -> io::Result<u32>;
    /// `path` with every symlink resolved, if it exists.
    fn canonical(&mut self, path: &str) -> Option<String>;
    /// `execv`; returns only on failure.
    fn exec(&mut self, program: &str, args: &[&str]) -> io::Error;
    /// Loads `extra` modules and those matching present hardware; how many loaded.
    fn load_modules(&mut self, extra: &[String]) -> Result<usize>;
    /// Timeouts from the command line (DHCP; total retry time per download).
    fn set_timeouts(&mut self, dhcp: std::time::Duration, fetch: std::time::Duration);
    /// Brings up the boot interface (static from `ip=`, else DHCP).
    fn network_up(&mut self, ip: Option<&IpParam>, wwid: Option<Mac>) -> Result<NetInfo>;
    /// Gives the boot interface back as the kernel made it: address (and
    /// with it the routes) removed, link down, so the node's own network
    /// set-up starts from scratch (and udev may rename it).
    fn network_down(&mut self, iface: &str) -> io::Result<()>;
    /// `GET /manifest/{wwid}`; `None` when the head has no manifest route.
    fn fetch_manifest(&mut self, server: &Server, wwid: &Mac) -> Result<Option<Manifest>>;
    /// Streams one artifact into `dest`, verifying its digest and size;
    /// `false` when an optional artifact is not provided.
    fn fetch_unpack(&mut self, server: &Server, entry: &FetchEntry, dest: &str) -> Result<bool>;
    /// Best-effort `POST /status/{wwid}`.
    fn report(&mut self, server: &Server, wwid: &Mac, stage: &str, detail: &str);
    /// From now on, failures are also reported to the head.
    fn report_failures_to(&mut self, server: &Server, wwid: &Mac);
    /// Loads the IPMI drivers and sends `reqs` to the BMC: (set, failed).
    fn configure_bmc(
        &mut self,
        reqs: &[crate::ipmi::Request],
    ) -> Result<(Vec<&'static str>, Vec<String>)>;
}

/// An artifact to fetch: a manifest entry, or a bare route when the head
/// has no manifest (then nothing is verified but the HTTP length).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchEntry {
    Verified(ManifestEntry),
    /// `(stage name, path, required)`: a 404 on an optional one is skipped.
    Unverified(&'static str, String, bool),
}

impl FetchEntry {
    pub fn stage(&self) -> &str {
        match self {
            FetchEntry::Verified(e) => e.stage.name(),
            FetchEntry::Unverified(s, _, _) => s,
        }
    }
}

#[cfg(test)]
pub mod fake {
    //! A recording [`Sys`] over an in-memory file tree.

    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    #[derive(Default)]
    pub struct FakeSys {
        /// Every mutating call, as a readable line.
        pub calls: Vec<String>,
        pub files: BTreeMap<String, Vec<u8>>,
        pub dirs: BTreeSet<String>,
        pub mountpoints: BTreeSet<String>,
        /// Exit codes of `run`, by program path + first arg.
        pub exit_codes: BTreeMap<String, i32>,
        pub manifest: Option<Manifest>,
        pub net: Option<NetInfo>,
        /// Set by `set_timeouts` (not a recorded call: it touches nothing).
        pub timeouts: Option<(std::time::Duration, std::time::Duration)>,
        /// Symlinks `canonical` resolves: path → target.
        pub links: BTreeMap<String, String>,
        /// `fetch_unpack` calls (counted from 1) that fail as a corrupt download.
        pub corrupt_fetches: BTreeSet<usize>,
    }

    impl FakeSys {
        pub fn new() -> Self {
            Self::default()
        }

        pub fn with_file(mut self, path: &str, data: &str) -> Self {
            self.files.insert(path.to_owned(), data.as_bytes().to_vec());
            self
        }

        pub fn with_dir(mut self, path: &str) -> Self {
            self.dirs.insert(path.to_owned());
            self
        }

        fn rec(&mut self, s: String) {
            self.calls.push(s);
        }
    }

    fn flags(f: MountFlags) -> String {
        let mut v = Vec::new();
        if f.nosuid {
            v.push("nosuid");
        }
        if f.nodev {
            v.push("nodev");
        }
        if f.noexec {
            v.push("noexec");
        }
        v.join(",")
    }

    impl Sys for FakeSys {
        fn mount(&mut self, s: &str, t: &str, fs: &str, f: MountFlags, d: &str) -> io::Result<()> {
            self.mountpoints.insert(t.to_owned());
            self.rec(format!("mount {s} {t} {fs} [{}] {d}", flags(f)));
            Ok(())
        }
        fn umount(&mut self, target: &str) -> io::Result<()> {
            self.rec(format!("umount {target}"));
            Ok(())
        }
        fn move_mount(&mut self, from: &str, to: &str) -> io::Result<()> {
            self.rec(format!("move {from} {to}"));
            Ok(())
        }
        fn is_mountpoint(&mut self, path: &str) -> bool {
            self.mountpoints.contains(path)
        }
        fn mkdir_all(&mut self, path: &str) -> io::Result<()> {
            self.dirs.insert(path.to_owned());
            self.rec(format!("mkdir {path}"));
            Ok(())
        }
        fn exists(&mut self, path: &str) -> bool {
            self.files.contains_key(path) || self.dirs.contains(path)
        }
        fn read_file(&mut self, path: &str) -> io::Result<Vec<u8>> {
            self.files
                .get(path)
                .cloned()
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        }
        fn list_files(&mut self, path: &str) -> io::Result<Vec<String>> {
            if !self.dirs.contains(path) {
                return Err(io::ErrorKind::NotFound.into());
            }
            let prefix = format!("{path}/");
            Ok(self
                .files
                .keys()
                .filter_map(|k| k.strip_prefix(&prefix))
                .filter(|k| !k.contains('/'))
                .map(str::to_owned)
                .collect())
        }
        fn copy_root(&mut self, dest: &str) -> io::Result<()> {
            self.rec(format!("copy-root {dest}"));
            Ok(())
        }
        fn clear_old_root(&mut self) -> io::Result<()> {
            self.rec("clear-old-root".to_owned());
            Ok(())
        }
        fn chdir(&mut self, path: &str) -> io::Result<()> {
            self.rec(format!("chdir {path}"));
            Ok(())
        }
        fn chroot(&mut self, path: &str) -> io::Result<()> {
            self.rec(format!("chroot {path}"));
            Ok(())
        }
        fn run(&mut self, program: &str, args: &[&str], env: &[(&str, &str)]) -> io::Result<i32> {
            let env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
            self.rec(
                format!("run {} {program} {}", env.join(" "), args.join(" ")).replace("  ", " "),
            );
            let key = format!("{program} {}", args.first().copied().unwrap_or(""));
            Ok(self.exit_codes.get(key.trim()).copied().unwrap_or(0))
        }
        fn spawn(&mut self, program: &str, args: &[&str]) -> io::Result<u32> {
            self.rec(
                format!("spawn {program} {}", args.join(" "))
                    .trim_end()
                    .to_owned(),
            );
            Ok(4242)
        }
        fn canonical(&mut self, path: &str) -> Option<String> {
            match self.links.get(path) {
                Some(target) => Some(target.clone()),
                None => self.exists(path).then(|| path.to_owned()),
            }
        }
        fn exec(&mut self, program: &str, args: &[&str]) -> io::Error {
            self.rec(format!("exec {program} {}", args.join(" ")));
            io::Error::other("fake exec")
        }
        fn load_modules(&mut self, extra: &[String]) -> Result<usize> {
            self.rec(format!("load-modules [{}]", extra.join(",")));
            Ok(1)
        }
        fn set_timeouts(&mut self, dhcp: std::time::Duration, fetch: std::time::Duration) {
            self.timeouts = Some((dhcp, fetch));
        }
        fn network_up(&mut self, ip: Option<&IpParam>, wwid: Option<Mac>) -> Result<NetInfo> {
            self.rec(format!("network-up {ip:?} {wwid:?}"));
            self.net
                .clone()
                .ok_or_else(|| anyhow::anyhow!("no network in fake"))
        }
        fn network_down(&mut self, iface: &str) -> io::Result<()> {
            self.rec(format!("network-down {iface}"));
            Ok(())
        }
        fn fetch_manifest(&mut self, server: &Server, wwid: &Mac) -> Result<Option<Manifest>> {
            self.rec(format!(
                "get-manifest {}:{} {wwid}",
                server.host, server.port
            ));
            Ok(self.manifest.clone())
        }
        fn fetch_unpack(
            &mut self,
            server: &Server,
            entry: &FetchEntry,
            dest: &str,
        ) -> Result<bool> {
            let what = match entry {
                FetchEntry::Verified(e) => format!("{} {}", e.url, e.digest),
                FetchEntry::Unverified(_, path, req) => format!("{path} required={req}"),
            };
            self.rec(format!(
                "fetch {}:{} {what} -> {dest}",
                server.host, server.port
            ));
            let n = self
                .calls
                .iter()
                .filter(|c| c.starts_with("fetch "))
                .count();
            if self.corrupt_fetches.contains(&n) {
                return Err(anyhow::anyhow!("digest mismatch")
                    .context(crate::fetch::Corrupt { url: what.clone() }));
            }
            Ok(true)
        }
        fn report(&mut self, _server: &Server, _wwid: &Mac, stage: &str, _detail: &str) {
            self.rec(format!("report {stage}"));
        }
        fn report_failures_to(&mut self, server: &Server, wwid: &Mac) {
            self.rec(format!(
                "report-failures {}:{} {wwid}",
                server.host, server.port
            ));
        }
        fn configure_bmc(
            &mut self,
            reqs: &[crate::ipmi::Request],
        ) -> Result<(Vec<&'static str>, Vec<String>)> {
            let what: Vec<&'static str> = reqs.iter().map(|r| r.what).collect();
            self.rec(format!("configure-bmc [{}]", what.join(", ")));
            Ok((what, Vec::new()))
        }
    }
}
