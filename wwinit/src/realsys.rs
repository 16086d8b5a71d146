//! The real [`Sys`]: syscalls through `libc`, I/O through our modules.

use std::ffi::CString;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use proto::{Mac, Manifest, StatusReport, routes};

use crate::cmdline::{IpParam, Server};
use crate::fetch;
use crate::http::{self, Backoff, Url};
use crate::ipmi;
use crate::log;
use crate::modules;
use crate::net;
use crate::rootfs;
use crate::sys::{FetchEntry, MountFlags, NetInfo, Sys};

/// The machine.
pub struct RealSys {
    pub dhcp_timeout: Duration,
    pub fetch_timeout: Duration,
    /// Set by the modules stage; the network stage rescans with it.
    pub modules: Option<modules::Loader>,
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn mount_raw(
    source: &str,
    target: &str,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    let (s, t, d) = (cstr(source)?, cstr(target)?, cstr(data)?);
    let f = fstype.map(cstr).transpose()?;
    // SAFETY: all pointers are valid NUL-terminated strings or null (fstype
    // for MS_MOVE); data is only read by the kernel.
    check(unsafe {
        libc::mount(
            s.as_ptr(),
            t.as_ptr(),
            f.as_ref().map_or(std::ptr::null(), |f| f.as_ptr()),
            flags,
            if data.is_empty() {
                std::ptr::null()
            } else {
                d.as_ptr().cast()
            },
        )
    })
}

/// A status report sender usable from the crash path (no `self`).
fn post_status(server: &Server, wwid: &Mac, stage: &str, detail: &str) {
    let Ok(url) = Url::on(server, &routes::status(wwid)) else {
        return;
    };
    let report = StatusReport {
        stage: stage.to_owned(),
        detail: (!detail.is_empty()).then(|| detail.to_owned()),
    };
    let Ok(body) = serde_json::to_vec(&report) else {
        return;
    };
    match http::post_json(&url, &body) {
        Ok(s) if (200..300).contains(&s) => {}
        Ok(s) => log::warn(&format!("status report to {url}: HTTP {s}")),
        Err(e) => log::warn(&format!("status report to {url}: {e}")),
    }
}

impl Sys for RealSys {
    fn mount(
        &mut self,
        source: &str,
        target: &str,
        fstype: &str,
        f: MountFlags,
        data: &str,
    ) -> io::Result<()> {
        let mut flags = 0;
        if f.nosuid {
            flags |= libc::MS_NOSUID;
        }
        if f.nodev {
            flags |= libc::MS_NODEV;
        }
        if f.noexec {
            flags |= libc::MS_NOEXEC;
        }
        mount_raw(source, target, Some(fstype), flags, data)
    }

    fn move_mount(&mut self, from: &str, to: &str) -> io::Result<()> {
        mount_raw(from, to, None, libc::MS_MOVE, "")
    }

    fn umount(&mut self, target: &str) -> io::Result<()> {
        let t = cstr(target)?;
        // SAFETY: `t` is a valid NUL-terminated path.
        check(unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) })
    }

    fn is_mountpoint(&mut self, path: &str) -> bool {
        let p = Path::new(path);
        let parent = p.parent().unwrap_or(Path::new("/"));
        match (
            std::fs::symlink_metadata(p),
            std::fs::symlink_metadata(parent),
        ) {
            (Ok(a), Ok(b)) => a.dev() != b.dev(),
            _ => false,
        }
    }

    fn mkdir_all(&mut self, path: &str) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn exists(&mut self, path: &str) -> bool {
        Path::new(path).exists()
    }

    fn read_file(&mut self, path: &str) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn list_files(&mut self, path: &str) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(path)? {
            let e = e?;
            if e.path().is_file() {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        out.sort();
        Ok(out)
    }

    fn copy_root(&mut self, dest: &str) -> io::Result<()> {
        let stats =
            rootfs::copy_tree(Path::new("/"), Path::new(dest), true).map_err(io::Error::other)?;
        log::info(&format!(
            "copied {} files ({} bytes), {} dirs, {} symlinks, {} nodes, {} hard links",
            stats.files, stats.bytes, stats.dirs, stats.symlinks, stats.nodes, stats.hardlinks
        ));
        Ok(())
    }

    fn clear_old_root(&mut self) -> io::Result<()> {
        rootfs::clear_tree(Path::new("/"))
            .map(|_| ())
            .map_err(io::Error::other)
    }

    fn chdir(&mut self, path: &str) -> io::Result<()> {
        std::env::set_current_dir(path)
    }

    fn chroot(&mut self, path: &str) -> io::Result<()> {
        let p = cstr(path)?;
        // SAFETY: valid NUL-terminated path.
        check(unsafe { libc::chroot(p.as_ptr()) })
    }

    fn run(&mut self, program: &str, args: &[&str], env: &[(&str, &str)]) -> io::Result<i32> {
        let status = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .status()?;
        Ok(status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
    }

    fn spawn(&mut self, program: &str, args: &[&str]) -> io::Result<u32> {
        let child = Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .spawn()?;
        Ok(child.id())
    }

    fn canonical(&mut self, path: &str) -> Option<String> {
        std::fs::canonicalize(path)
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    }

    fn exec(&mut self, program: &str, args: &[&str]) -> io::Error {
        let prog = match cstr(program) {
            Ok(p) => p,
            Err(e) => return e,
        };
        let cargs: Result<Vec<CString>, _> = args.iter().map(|a| cstr(a)).collect();
        let cargs = match cargs {
            Ok(c) => c,
            Err(e) => return e,
        };
        let mut argv: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
        argv.push(std::ptr::null());
        // SAFETY: prog and argv are valid, argv is NULL-terminated; on success
        // execv does not return.
        unsafe { libc::execv(prog.as_ptr(), argv.as_ptr()) };
        io::Error::last_os_error()
    }

    fn load_modules(&mut self, extra: &[String]) -> Result<usize> {
        let loader = self.modules.insert(modules::Loader::new()?);
        Ok(loader.load_all(extra, &mut |m| log::info(m))?)
    }

    fn set_timeouts(&mut self, dhcp: Duration, fetch: Duration) {
        self.dhcp_timeout = dhcp;
        self.fetch_timeout = fetch;
    }

    fn network_up(&mut self, ip: Option<&IpParam>, wwid: Option<Mac>) -> Result<NetInfo> {
        // While waiting for its interface, load drivers for late devices.
        let mut rescan = || {
            if let Some(l) = self.modules.as_mut() {
                l.rescan(&mut |m| log::info(m));
            }
        };
        net::up(ip, wwid, self.dhcp_timeout, &mut rescan)
    }

    fn network_down(&mut self, iface: &str) -> io::Result<()> {
        net::release(iface)
    }

    fn fetch_manifest(&mut self, server: &Server, wwid: &Mac) -> Result<Option<Manifest>> {
        fetch::manifest(server, wwid, Backoff::with_budget(self.fetch_timeout))
    }

    fn fetch_unpack(&mut self, server: &Server, entry: &FetchEntry, dest: &str) -> Result<bool> {
        let (applied, summary) = fetch::fetch_unpack(
            server,
            entry,
            Path::new(dest),
            Backoff::with_budget(self.fetch_timeout),
        )?;
        log::info(&summary);
        Ok(applied)
    }

    fn report(&mut self, server: &Server, wwid: &Mac, stage: &str, detail: &str) {
        post_status(server, wwid, stage, detail);
    }

    fn configure_bmc(
        &mut self,
        reqs: &[ipmi::Request],
    ) -> Result<(Vec<&'static str>, Vec<String>)> {
        let n = modules::load_named(ipmi::DRIVERS).context("loading the IPMI drivers")?;
        log::info(&format!("IPMI drivers: {n} loaded"));
        let mut bmc = ipmi::DevIpmi::open(Path::new(ipmi::DEVICE))
            .with_context(|| format!("opening {} (no BMC?)", ipmi::DEVICE))?;
        let id = ipmi::Bmc::send(&mut bmc, ipmi::NETFN_APP, 0x01, &[]).context("Get Device ID")?;
        match id.as_slice() {
            [0, dev, rev, fw1, fw2, ..] => log::info(&format!(
                "BMC device {dev:#04x} rev {rev:#04x}, firmware {}.{fw2:02x}",
                fw1 & 0x7f
            )),
            other => anyhow::bail!("Get Device ID: unexpected reply {other:02x?}"),
        }
        Ok(ipmi::apply(&mut bmc, reqs))
    }

    fn report_failures_to(&mut self, server: &Server, wwid: &Mac) {
        let (server, wwid) = (server.clone(), *wwid);
        crate::crash::set_reporter(Box::new(move |msg| {
            post_status(&server, &wwid, "failed", msg)
        }));
    }
}
