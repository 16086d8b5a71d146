//! Logging for PID 1: every line goes to the console (our stdout) and to
//! `/dev/kmsg`, so it is both visible on a serial console and kept in
//! `dmesg` after the switch to the real init.
//!
//! The kernel gives init `/dev/console` as fds 0–2 only when the initramfs
//! has a `/dev/console` node; [`attach_console`] opens it from devtmpfs
//! otherwise.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::Mutex;

/// `/dev/kmsg`, once devtmpfs is mounted.
static KMSG: Mutex<Option<File>> = Mutex::new(None);

/// Severity, as syslog levels in `/dev/kmsg`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Error = 3,
    Warn = 4,
    Info = 6,
}

/// Writes one line to the console and the kernel log.
pub fn line(level: Level, msg: &str) {
    let prefix = match level {
        Level::Error => "wwinit: ERROR: ",
        Level::Warn => "wwinit: warning: ",
        Level::Info => "wwinit: ",
    };
    let text = format!("{prefix}{msg}\n");
    // Nothing else to do if the console is gone.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    if let Ok(mut guard) = KMSG.lock()
        && let Some(kmsg) = guard.as_mut()
    {
        // One write = one record; the kernel splits nothing.
        let _ = kmsg.write_all(format!("<{}>{prefix}{msg}", level as u8).as_bytes());
    }
}

/// Informational line.
pub fn info(msg: &str) {
    line(Level::Info, msg);
}

/// Warning line.
pub fn warn(msg: &str) {
    line(Level::Warn, msg);
}

/// Error line.
pub fn error(msg: &str) {
    line(Level::Error, msg);
}

/// After `/dev` is mounted: opens `/dev/kmsg`, and puts `/dev/console` on
/// fds 0–2 if the kernel could not.
pub fn attach_console() {
    if let Ok(f) = OpenOptions::new().write(true).open("/dev/kmsg")
        && let Ok(mut guard) = KMSG.lock()
    {
        *guard = Some(f);
    }
    // SAFETY: F_GETFD only queries the descriptor flags.
    let have_stdout = unsafe { libc::fcntl(1, libc::F_GETFD) } != -1;
    if have_stdout {
        return;
    }
    if let Ok(console) = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors; `console` stays open
            // until the end of this block and the copies are owned by the process.
            unsafe { libc::dup2(console.as_raw_fd(), fd) };
        }
    }
}
