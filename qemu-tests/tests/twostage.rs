#![allow(clippy::unwrap_used)]
//! Two-stage boots against a real head (`wwctl server` in a network
//! namespace this test creates). QEMU loads Debian's kernel and the stage 1
//! that `wwctl initramfs build` made from the kernel's own modules (`-kernel`
//! / `-initrd`, as iPXE would after `/initramfs/{wwid}`); wwinit then loads
//! the virtio NIC driver by modalias, gets its address from the head's DHCP,
//! fetches `/manifest/{wwid}` and streams image, system and runtime overlay
//! into a tmpfs, checking each sha256, switches root and execs `test-init`
//! (named by the node's `init`, rendered into `wwinit.conf` by the shipped
//! `wwinit` overlay).
//!
//! - a clean boot reaches test-init's marker from the system overlay, and
//!   wwinit took the NIC down (address removed) right before exec'ing it;
//! - an image corrupted on the head (after its digest was recorded) is
//!   detected, fetched again into a fresh root, and after the last attempt
//!   ends in the crash action (`poweroff`) on the console;
//! - a head started 20 s after the node still ends in a good boot (DHCP and
//!   HTTP retries).
//!
//! Needs root, `qemu-system-x86`, `scripts/fetch-kernel.sh`, the musl
//! target. `IRONWULF_SKIP_QEMU=1` skips.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use qemu_tests::head::Site;
use qemu_tests::initrd::TEST_INIT_MARKER;
use qemu_tests::netns::Netns;
use qemu_tests::tiny::{two_stage_site, two_stage_vm};
use qemu_tests::{Arch, Kernel, Vm, qemu_opted_out};

/// Kernel + stage 1 + DHCP + streaming under TCG takes 15–40 s here.
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
const MAC: &str = "52:54:00:12:34:21";

/// Starts node n1 on `tap` with `cpus` vCPUs: Debian's kernel and the
/// stage 1, as iPXE's two-stage path loads them. (With 2 vCPUs wwinit
/// streams on two threads, with 1 on one: both paths get a real boot.)
fn spawn_node(
    ns: &Netns,
    tap: &str,
    test: &str,
    kernel: &Kernel,
    stage1: &Path,
    cpus: u32,
) -> Result<Vm> {
    let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("qemu-{test}.log"));
    let vm = two_stage_vm(ns, tap, MAC, kernel, stage1, "")
        .console_log(&log)
        .args(["-smp", &cpus.to_string()])
        .spawn()?;
    eprintln!("{test}: {}", vm.command_line());
    Ok(vm)
}

#[test]
fn two_stage_boot_from_a_real_head() {
    if qemu_opted_out("two_stage_boot_from_a_real_head") {
        return;
    }
    let kernel = Kernel::locate(Arch::Amd64).unwrap();
    let mut ns = Netns::new("ts").unwrap();
    let tap = ns.add_tap().unwrap();
    let site = Site::new().unwrap();
    let stage1 = two_stage_site(&site, &kernel, MAC, "10.99.0.21").unwrap();
    let head = site.start(&ns).unwrap();

    let started = Instant::now();
    let mut vm = spawn_node(&ns, &tap, "twostage", &kernel, &stage1, 2).unwrap();
    let booted = vm.console().expect_all(
        &[
            "no /warewulf/wwinit.conf: two-stage boot",
            "wwinit: loaded virtio_net",
            "lease 10.99.0.21/255.255.255.0 from 10.99.0.1",
            // zstd preferred; the overlays are built as zstd on request.
            &format!("/image/{MAC}?compress=zst: "),
            // Two vCPUs: the stream ran on two threads.
            ", sha256 ok, 2 thread(s)",
            &format!("/system/{MAC}?compress=zst: "),
            &format!("/runtime/{MAC}?compress=zst: "),
            "wwinit: stage switch-root: done",
            // The NIC is given back unconfigured, so the image's own
            // network set-up (and udev's renaming) starts from scratch.
            "wwinit: eth0: address removed, link down",
            "wwinit: exec /sbin/test-init",
            &format!("{TEST_INIT_MARKER}system"),
        ],
        BOOT_TIMEOUT,
    );
    head.with_log(booted).unwrap();
    eprintln!(
        "twostage: init reached in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    vm.expect_poweroff(Duration::from_secs(30)).unwrap();

    // wwinit reported its stages to the head.
    let status = ns.http_get(&head.url("/status")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&status).unwrap();
    let node = &json["nodes"]["n1"];
    assert_eq!(node["stage"], "init", "{json}");
    assert_eq!(node["ipaddr"], "10.99.0.21", "{json}");
}

#[test]
fn corrupt_artifact_is_retried_then_ends_in_the_crash_action() {
    if qemu_opted_out("corrupt_artifact_is_retried_then_ends_in_the_crash_action") {
        return;
    }
    let kernel = Kernel::locate(Arch::Amd64).unwrap();
    let mut ns = Netns::new("tc").unwrap();
    let tap = ns.add_tap().unwrap();
    let site = Site::new().unwrap();
    let stage1 = two_stage_site(&site, &kernel, MAC, "10.99.0.21").unwrap();
    // Bit rot on the head: same size, so the recorded digest still stands
    // in the manifest, but the bytes differ.
    let image = site.root().join("provision/images/tiny.img.zst");
    let mut bytes = fs::read(&image).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0x5a;
    }
    fs::write(&image, &bytes).unwrap();
    let head = site.start(&ns).unwrap();

    let mut vm = spawn_node(&ns, &tap, "twostage-corrupt", &kernel, &stage1, 2).unwrap();
    let failed = vm.console().expect_all(
        &[
            "wwinit: stage fetch: start",
            "fetching again (attempt 2 of 3)",
            "fetching again (attempt 3 of 3)",
            "wwinit: ERROR: boot failed: stage fetch: fetching image: ",
            "powering off in 1 s",
        ],
        BOOT_TIMEOUT,
    );
    head.with_log(failed).unwrap();
    vm.expect_poweroff(Duration::from_secs(30)).unwrap();
    let console = vm.console().text();
    assert!(
        console.contains("digest mismatch") || console.contains("checksum"),
        "the corruption was not named:\n{console}"
    );
    assert!(
        !console.contains(TEST_INIT_MARKER),
        "init ran from a corrupt image"
    );
    // The node told the head why it stopped.
    let status = ns.http_get(&head.url("/status")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(json["nodes"]["n1"]["stage"], "failed", "{json}");
}

#[test]
fn head_started_after_the_node_still_boots_it() {
    if qemu_opted_out("head_started_after_the_node_still_boots_it") {
        return;
    }
    let kernel = Kernel::locate(Arch::Amd64).unwrap();
    let mut ns = Netns::new("tl").unwrap();
    let tap = ns.add_tap().unwrap();
    let site = Site::new().unwrap();
    let stage1 = two_stage_site(&site, &kernel, MAC, "10.99.0.21").unwrap();

    let mut vm = spawn_node(&ns, &tap, "twostage-late-head", &kernel, &stage1, 1).unwrap();
    std::thread::sleep(Duration::from_secs(20));
    ensure_running(&mut vm).unwrap();
    let head = site.start(&ns).unwrap();
    let booted = vm
        .console()
        .expect(&format!("{TEST_INIT_MARKER}system"), BOOT_TIMEOUT);
    head.with_log(booted).unwrap();
    vm.expect_poweroff(Duration::from_secs(30)).unwrap();
    let console = vm.console().text();
    assert!(
        !console.contains("wwinit: ERROR"),
        "the boot failed on the way:\n{console}"
    );
}

/// The node must still be waiting (not crashed) when the head comes up.
fn ensure_running(vm: &mut Vm) -> Result<()> {
    let text = vm.console().text();
    ensure!(
        text.contains("wwinit: stage network: start") && !text.contains("wwinit: ERROR"),
        "the node was not waiting for the head after 20 s:\n{text}"
    );
    Ok(())
}
