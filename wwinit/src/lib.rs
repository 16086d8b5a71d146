//! `wwinit`: the static PID 1 of an Ironwulf node's initramfs.
//!
//! - [`boot`]: the ordered stages and the state they share;
//! - [`sys`]: the seam to the machine ([`realsys`] real, `sys::fake` in tests);
//! - [`cmdline`]: `wwinit.*`, `wwid=`, `ip=` from `/proc/cmdline`;
//! - [`config`]: the node's `/warewulf/wwinit.conf`;
//! - [`crash`]: the crash action and panic hook; [`log`]: console + kmsg;
//! - [`rootfs`]: copying into a tmpfs and emptying the old root;
//! - [`modules`], [`net`], [`http`], [`fetch`]: two-stage boot;
//! - [`ipmi`]: BMC LAN settings over `/dev/ipmi0`.

pub mod boot;
pub mod cmdline;
pub mod config;
pub mod crash;
pub mod fetch;
pub mod http;
pub mod ipmi;
pub mod log;
pub mod modules;
pub mod net;
pub mod realsys;
pub mod rootfs;
pub mod sys;

/// Runs the boot as PID 1; never returns.
pub fn run_pid1() -> ! {
    crash::install_panic_hook();
    log::info(&format!("Ironwulf wwinit {}", env!("CARGO_PKG_VERSION")));
    // Timeouts come from the command line, read by the cmdline stage; the
    // real Sys reads them through a peek here so they apply from the start.
    let line = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let pre = cmdline::parse(&line);
    let mut sys = realsys::RealSys {
        dhcp_timeout: pre.dhcp_timeout,
        fetch_timeout: pre.fetch_timeout,
    };
    let mut ctx = boot::Ctx::new(&mut sys);
    let err = boot::boot(&mut ctx);
    crash::fail(&err)
}
