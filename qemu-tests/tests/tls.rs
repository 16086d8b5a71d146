#![allow(clippy::unwrap_used)]
//! A two-stage boot over TLS from a real head (`wwctl server` with
//! `warewulf: tls: true` in a network namespace this test creates).
//!
//! `wwctl configure tls --create` makes the cluster CA; the stage 1 is
//! fetched from the head's `/initramfs/{wwid}` exactly as iPXE would, so it
//! carries the CA and the HTTPS port the head appends. QEMU boots Debian's
//! kernel with it; wwinit then speaks HTTPS only (verifying the head under
//! the CA), gets the manifest, streams image, system and runtime overlay
//! (the runtime overlay is served only over HTTPS with the node token the
//! system overlay answer carried), switches root and execs `test-init`.
//! A second node whose stage 1 holds a foreign CA must not get anything.
//!
//! Needs root, `qemu-system-x86`, `curl`, `scripts/fetch-kernel.sh`, the
//! musl target. `IRONWULF_SKIP_QEMU=1` skips.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use qemu_tests::head::{HTTP_PORT, Site};
use qemu_tests::initrd::TEST_INIT_MARKER;
use qemu_tests::netns::{HEAD_IP, Netns};
use qemu_tests::tiny::{two_stage_site, two_stage_vm};
use qemu_tests::{Arch, Kernel, Vm, qemu_opted_out};

/// Kernel + stage 1 + DHCP + TLS + streaming under TCG.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
const MAC: &str = "52:54:00:12:34:31";
const TLS_PORT: u16 = 9874;

/// Turns TLS on in the site's `warewulf.conf`.
fn enable_tls(site: &Site) -> Result<()> {
    let conf = fs::read_to_string(site.conf())?;
    ensure!(conf.contains("warewulf:\n"), "no warewulf: section");
    let conf = conf.replacen(
        "warewulf:\n",
        &format!("warewulf:\n  tls: true\n  tls port: {TLS_PORT}\n"),
        1,
    );
    fs::write(site.conf(), conf)?;
    Ok(())
}

/// `GET /initramfs/{wwid}` from inside the network, as iPXE does.
fn fetch_stage1(ns: &Netns, out: &Path) -> Result<u64> {
    let url = format!("http://{HEAD_IP}:{HTTP_PORT}/initramfs/{MAC}");
    let status = ns
        .command("curl")
        .args(["-sSf", "--max-time", "60", "-o"])
        .arg(out)
        .arg(&url)
        .status()
        .context("running curl")?;
    ensure!(status.success(), "curl {url} failed");
    Ok(fs::metadata(out)?.len())
}

fn spawn_node(
    ns: &Netns,
    tap: &str,
    test: &str,
    kernel: &Kernel,
    stage1: &Path,
    extra: &str,
) -> Result<Vm> {
    let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("qemu-{test}.log"));
    let vm = two_stage_vm(ns, tap, MAC, kernel, stage1, extra)
        .console_log(&log)
        .spawn()?;
    eprintln!("{test}: {}", vm.command_line());
    Ok(vm)
}

#[test]
fn two_stage_boot_over_tls() {
    if qemu_opted_out("two_stage_boot_over_tls") {
        return;
    }
    let kernel = Kernel::locate(Arch::Amd64).unwrap();
    let mut ns = Netns::new("tls").unwrap();
    let tap = ns.add_tap().unwrap();
    let site = Site::new().unwrap();
    enable_tls(&site).unwrap();
    site.wwctl(&["configure", "tls", "--create"]).unwrap();
    two_stage_site(&site, &kernel, MAC, "10.99.0.31").unwrap();
    let head = site.start(&ns).unwrap();

    let stage1 = site.root().join("stage1-from-head.img");
    let served = fetch_stage1(&ns, &stage1).unwrap();
    let built = fs::read_dir(site.root().join("provision/initramfs"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.metadata().unwrap().len())
        .max()
        .unwrap();
    assert!(served > built, "the head appended no CA to the stage 1");

    let started = Instant::now();
    let mut vm = spawn_node(&ns, &tap, "tls-twostage", &kernel, &stage1, "").unwrap();
    let booted = vm.console().expect_all(
        &[
            "lease 10.99.0.31/255.255.255.0 from 10.99.0.1",
            &format!("HTTPS to the head on port {TLS_PORT}"),
            &format!("https://{HEAD_IP}:{TLS_PORT}/image/{MAC}?compress=zst: "),
            ", sha256 ok",
            &format!("https://{HEAD_IP}:{TLS_PORT}/system/{MAC}?compress=zst: "),
            // Served only over HTTPS, to this node, with its token.
            &format!("https://{HEAD_IP}:{TLS_PORT}/runtime/{MAC}?compress=zst: "),
            "wwinit: stage switch-root: done",
            &format!("{TEST_INIT_MARKER}system"),
        ],
        BOOT_TIMEOUT,
    );
    head.with_log(booted).unwrap();
    eprintln!(
        "tls-twostage: init reached in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    vm.expect_poweroff(Duration::from_secs(30)).unwrap();
    let log = head.log();
    assert!(
        !log.contains("refused"),
        "the head refused something:\n{log}"
    );
    let status = ns.http_get(&head.url("/status")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(json["nodes"]["n1"]["stage"], "init", "{json}");
}

#[test]
fn a_node_with_a_foreign_ca_gets_nothing() {
    if qemu_opted_out("a_node_with_a_foreign_ca_gets_nothing") {
        return;
    }
    let kernel = Kernel::locate(Arch::Amd64).unwrap();
    let mut ns = Netns::new("tlsx").unwrap();
    let tap = ns.add_tap().unwrap();
    let site = Site::new().unwrap();
    enable_tls(&site).unwrap();
    site.wwctl(&["configure", "tls", "--create"]).unwrap();
    two_stage_site(&site, &kernel, MAC, "10.99.0.31").unwrap();
    let head = site.start(&ns).unwrap();
    let stage1 = site.root().join("stage1-from-head.img");
    fetch_stage1(&ns, &stage1).unwrap();
    // Re-key the head after the node got its stage 1: the node now talks
    // to a head it cannot verify, which must end the boot, not fall back.
    drop(head);
    let tls = site.root().join("etc/warewulf/tls");
    fs::remove_dir_all(&tls).unwrap();
    site.wwctl(&["configure", "tls", "--create"]).unwrap();
    let head = site.start(&ns).unwrap();

    // Retries of a failing download are bounded by wwinit.fetch_timeout.
    let mut vm = spawn_node(
        &ns,
        &tap,
        "tls-foreign-ca",
        &kernel,
        &stage1,
        "wwinit.fetch_timeout=20",
    )
    .unwrap();
    let failed = vm.console().expect_all(
        &[
            &format!("HTTPS to the head on port {TLS_PORT}"),
            "wwinit: ERROR: boot failed",
            "powering off in 1 s",
        ],
        BOOT_TIMEOUT,
    );
    head.with_log(failed).unwrap();
    vm.expect_poweroff(Duration::from_secs(30)).unwrap();
    let console = vm.console().text();
    assert!(
        !console.contains(TEST_INIT_MARKER),
        "a node booted from an unverified head"
    );
    assert!(
        console.to_ascii_lowercase().contains("certificate"),
        "the failure does not name the certificate:\n{console}"
    );
}
