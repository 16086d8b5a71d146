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
pub mod tls;

/// Runs the boot as PID 1; never returns.
pub fn run_pid1() -> ! {
    crash::install_panic_hook();
    log::info(&format!("Ironwulf wwinit {}", env!("CARGO_PKG_VERSION")));
    // Defaults until the cmdline stage sets the admin's timeouts.
    let mut sys = realsys::RealSys {
        dhcp_timeout: cmdline::DEFAULT_DHCP_TIMEOUT,
        fetch_timeout: cmdline::DEFAULT_FETCH_TIMEOUT,
        modules: None,
    };
    let mut ctx = boot::Ctx::new(&mut sys);
    let err = boot::boot(&mut ctx);
    crash::fail(&err)
}
