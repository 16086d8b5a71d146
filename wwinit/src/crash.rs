//! The end of every failure: log the error chain, report it to the head if
//! the network is up, then run the crash action chosen by `wwinit.crash=`.
//! A panic hook leads here too. PID 1 never exits.
//!
//! The default is `reboot` after a countdown (`wwinit.crash_delay=`, 10 s):
//! a provisioned cluster node that failed to boot should try again on its
//! own (the head may have been restarting), and the countdown leaves time to
//! read the error on the console. `freeze` keeps the machine for debugging;
//! `shell` runs `/bin/sh` on the console if the root has one and reboots
//! when it exits.

use std::fmt;
use std::path::Path;
use std::process::Command;
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use crate::log;

/// What to do after a fatal error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CrashAction {
    Shell,
    #[default]
    Reboot,
    Poweroff,
    Freeze,
}

impl FromStr for CrashAction {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        Ok(match s {
            "shell" => CrashAction::Shell,
            "reboot" => CrashAction::Reboot,
            "poweroff" => CrashAction::Poweroff,
            "freeze" => CrashAction::Freeze,
            _ => return Err(()),
        })
    }
}

impl fmt::Display for CrashAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CrashAction::Shell => "shell",
            CrashAction::Reboot => "reboot",
            CrashAction::Poweroff => "poweroff",
            CrashAction::Freeze => "freeze",
        })
    }
}

impl CrashAction {
    fn to_u8(self) -> u8 {
        self as u8
    }

    fn from_u8(v: u8) -> Self {
        match v {
            0 => CrashAction::Shell,
            2 => CrashAction::Poweroff,
            3 => CrashAction::Freeze,
            _ => CrashAction::Reboot,
        }
    }
}

static ACTION: AtomicU8 = AtomicU8::new(CrashAction::Reboot as u8);
static DELAY_SECS: AtomicU64 = AtomicU64::new(10);
/// Best-effort failure report to the head, set once the network is up.
type Reporter = Box<dyn Fn(&str) + Send>;
static REPORTER: Mutex<Option<Reporter>> = Mutex::new(None);

/// Sets the crash action and countdown (from the command line).
pub fn configure(action: CrashAction, delay: Duration) {
    ACTION.store(action.to_u8(), Ordering::SeqCst);
    DELAY_SECS.store(delay.as_secs(), Ordering::SeqCst);
}

/// Registers a function that reports a failure message to the head.
pub fn set_reporter(f: Reporter) {
    if let Ok(mut g) = REPORTER.lock() {
        *g = Some(f);
    }
}

/// Installs the panic hook: a panic is a failure like any other.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        fail_msg(&format!("panic: {info}"));
    }));
}

/// Logs `err` with its whole chain and runs the crash action.
pub fn fail(err: &anyhow::Error) -> ! {
    fail_msg(&format!("{err:#}"))
}

/// Logs `msg` and runs the crash action.
pub fn fail_msg(msg: &str) -> ! {
    log::error(&format!("boot failed: {msg}"));
    // A reporter that panics must not recurse into us: take it out first.
    let reporter = REPORTER.lock().ok().and_then(|mut g| g.take());
    if let Some(report) = reporter {
        report(msg);
    }
    run(CrashAction::from_u8(ACTION.load(Ordering::SeqCst)))
}

fn sync() {
    // SAFETY: sync() has no arguments and cannot fail.
    unsafe { libc::sync() };
}

fn countdown(what: &str) {
    let secs = DELAY_SECS.load(Ordering::SeqCst);
    for left in (1..=secs).rev() {
        log::info(&format!("{what} in {left} s"));
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn reboot(cmd: libc::c_int, what: &str) -> ! {
    countdown(what);
    sync();
    // SAFETY: reboot() with a valid command; on success it does not return.
    unsafe { libc::reboot(cmd) };
    log::error(&format!(
        "{what} failed: {}",
        std::io::Error::last_os_error()
    ));
    freeze()
}

/// Runs `action`; never returns.
pub fn run(action: CrashAction) -> ! {
    match action {
        CrashAction::Reboot => reboot(libc::RB_AUTOBOOT, "rebooting"),
        CrashAction::Poweroff => reboot(libc::RB_POWER_OFF, "powering off"),
        CrashAction::Freeze => {
            sync();
            log::info("frozen (wwinit.crash=freeze); reset the machine to retry");
            freeze()
        }
        CrashAction::Shell => {
            sync();
            let sh = ["/bin/sh", "/usr/bin/sh", "/bin/busybox"]
                .into_iter()
                .find(|p| Path::new(p).exists());
            match sh {
                Some(sh) => {
                    log::info(&format!("starting {sh}; exit it to reboot"));
                    let mut cmd = Command::new(sh);
                    if sh.ends_with("busybox") {
                        cmd.arg("sh");
                    }
                    match cmd.status() {
                        Ok(_) => {}
                        Err(e) => log::error(&format!("running {sh}: {e}")),
                    }
                    reboot(libc::RB_AUTOBOOT, "rebooting")
                }
                None => {
                    log::error("no shell in this root; freezing instead");
                    freeze()
                }
            }
        }
    }
}

/// Waits forever, reaping any children (PID 1 inherits orphans).
fn freeze() -> ! {
    loop {
        // SAFETY: waitpid with a null status pointer is allowed.
        let r = unsafe { libc::waitpid(-1, std::ptr::null_mut(), 0) };
        if r < 0 {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in [
            CrashAction::Shell,
            CrashAction::Reboot,
            CrashAction::Poweroff,
            CrashAction::Freeze,
        ] {
            assert_eq!(a.to_string().parse::<CrashAction>(), Ok(a));
            assert_eq!(CrashAction::from_u8(a.to_u8()), a);
        }
        assert!("halt".parse::<CrashAction>().is_err());
    }
}
