//! `/init` for test initramfs images booted by `qemu-tests`.
//!
//! It mounts nothing: it reads `/etc/ironwulf-member` (which the test writes
//! into each initramfs member with different contents, so the marker tells
//! which member's file won), prints one marker line on the console, syncs and
//! powers the machine off. QEMU runs with `-no-reboot`, so power-off ends the
//! QEMU process and the test can check that the guest shut down cleanly.
//!
//! Build it static: `cargo build --release -p test-init --target
//! x86_64-unknown-linux-musl`.

use std::fs::OpenOptions;
use std::io::Write;
use std::time::Duration;

/// The file whose contents the marker reports.
const MEMBER_FILE: &str = "/etc/ironwulf-member";
/// Prefix of the marker line the harness waits for.
const MARKER: &str = "IRONWULF-TEST-INIT: member=";

fn main() -> ! {
    let member = match std::fs::read_to_string(MEMBER_FILE) {
        Ok(text) => text.trim().to_owned(),
        Err(err) => format!("<unreadable {MEMBER_FILE}: {err}>"),
    };
    say(&format!("{MARKER}{member}"));
    power_off()
}

/// Writes one line to the console.
///
/// The kernel gives `/init` the console as stdin/stdout/stderr when
/// `/dev/console` exists in the initramfs; if stdout is unusable, the line
/// goes straight to `/dev/console` instead.
fn say(line: &str) {
    let text = format!("\n{line}\n");
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .is_ok()
    {
        return;
    }
    if let Ok(mut console) = OpenOptions::new().write(true).open("/dev/console") {
        // Nothing else can be done if the console is gone too.
        let _ = console.write_all(text.as_bytes());
    }
}

/// Syncs and powers off; PID 1 must never return.
fn power_off() -> ! {
    // SAFETY: sync() takes no arguments and cannot fail.
    unsafe { libc::sync() };
    // SAFETY: reboot() with a valid command constant; on success it does not return.
    let rc = unsafe { libc::reboot(libc::RB_POWER_OFF) };
    if rc != 0 {
        say(&format!(
            "IRONWULF-TEST-INIT: power off failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    // Exiting PID 1 would panic the kernel; wait for the harness to kill QEMU.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
