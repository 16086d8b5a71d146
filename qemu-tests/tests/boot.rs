#![allow(clippy::unwrap_used)]
//! Direct-kernel boots of Debian's kernel in QEMU (TCG) with initramfs
//! archives written by our own codec.
//!
//! Each guest runs the static `test-init` as `/init`, which prints
//! `IRONWULF-TEST-INIT: member=<contents of /etc/ironwulf-member>` and powers
//! off. Console logs land in `target/tmp/qemu-<test>.log`.
//!
//! Needs: `scripts/fetch-kernel.sh` (or `IRONWULF_KERNEL`), `qemu-system-x86`,
//! the `x86_64-unknown-linux-musl` Rust target. `IRONWULF_SKIP_QEMU=1` skips.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use initramfs::compress::Compression;
use qemu_tests::initrd::{Member, TEST_INIT_MARKER, concat};
use qemu_tests::{Arch, Kernel, Vm, artifacts, qemu_opted_out};

/// From QEMU start to the marker; TCG boots reach `/init` in about 6 s here.
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
/// From the marker to QEMU exiting after power-off.
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(30);

/// Boots an initrd made of `members` (already compressed) concatenated in
/// order, and returns what `test-init` reported plus the console text.
fn boot(test: &str, members: &[&[u8]]) -> Result<(String, String)> {
    let kernel = Kernel::locate(Arch::Amd64)?;
    let tmp = tempfile::tempdir().context("creating a temp dir")?;
    let initrd = tmp.path().join("initrd");
    std::fs::write(&initrd, concat(members)).context("writing the initrd")?;
    let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("qemu-{test}.log"));

    let started = Instant::now();
    let mut vm = Vm::builder()
        .kernel_for(&kernel)
        .initrd(&initrd)
        .memory_mib(256)
        .console_log(&log)
        .spawn()?;
    eprintln!("{test}: {}", vm.command_line());
    vm.console().expect(TEST_INIT_MARKER, BOOT_TIMEOUT)?;
    // The rest of the marker line: the member name, up to the line end.
    vm.console().expect("\n", Duration::from_secs(5))?;
    let text = vm.console().text();
    let reported = text
        .lines()
        .find_map(|line| line.trim_end().strip_prefix(TEST_INIT_MARKER))
        .context("marker line vanished from the console")?
        .to_owned();
    vm.expect_poweroff(POWEROFF_TIMEOUT)
        .context("the guest did not power off after the marker")?;
    eprintln!(
        "{test}: member={reported}, booted and powered off in {:.1} s (console: {})",
        started.elapsed().as_secs_f64(),
        log.display()
    );
    Ok((reported, vm.console().text()))
}

fn test_init_binary() -> Result<Vec<u8>> {
    let path = artifacts::test_init()?;
    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
}

#[test]
fn later_zstd_member_overrides_earlier_gzip_member() -> Result<()> {
    if qemu_opted_out("later_zstd_member_overrides_earlier_gzip_member") {
        return Ok(());
    }
    let init = test_init_binary()?;
    let first = Member::test_init_base(&init, "gzip").compressed(Compression::Gzip)?;
    let second = Member::member_file("zstd").compressed(Compression::Zstd)?;
    let (reported, text) = boot("gzip-then-zstd", &[&first, &second])?;
    ensure!(
        reported == "zstd",
        "expected member=zstd, got member={reported}\n{text}"
    );
    Ok(())
}

#[test]
fn later_gzip_member_overrides_earlier_zstd_member() -> Result<()> {
    if qemu_opted_out("later_gzip_member_overrides_earlier_zstd_member") {
        return Ok(());
    }
    let init = test_init_binary()?;
    let first = Member::member_file("zstd").compressed(Compression::Zstd)?;
    let second = Member::test_init_base(&init, "gzip").compressed(Compression::Gzip)?;
    let (reported, text) = boot("zstd-then-gzip", &[&first, &second])?;
    ensure!(
        reported == "gzip",
        "expected member=gzip, got member={reported}\n{text}"
    );
    Ok(())
}
