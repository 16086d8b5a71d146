#![allow(clippy::unwrap_used)]
//! Network boots through the head's embedded services, in a network
//! namespace this test creates: firmware → our DHCP → (TFTP) → iPXE → our
//! iPXE script → kernel, image and system overlay over our HTTP → `/init`.
//!
//! The image carries `/etc/ironwulf-member = image`; the node's system
//! overlay (a site overlay made here) carries `/init` (the static
//! `test-init`) and `/etc/ironwulf-member = system`. The guest printing
//! `member=system` therefore proves that both archives arrived, in order,
//! and that the overlay's `/init` ran.
//!
//! Needs root, `qemu-system-x86`, `ipxe`, `ovmf`, `busybox-static`,
//! `scripts/fetch-kernel.sh`. `IRONWULF_SKIP_QEMU=1` skips.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use qemu_tests::head::Site;
use qemu_tests::initrd::TEST_INIT_MARKER;
use qemu_tests::netns::Netns;
use qemu_tests::{Arch, Kernel, Vm, artifacts, qemu_opted_out};

/// PXE → iPXE → HTTP → kernel → init under TCG takes about 25–35 s here.
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
const MAC: &str = "52:54:00:12:34:01";

/// Writes the image, the site overlay and the node, and builds both.
fn prepare(site: &Site, kernel: &Kernel) -> Result<()> {
    let rootfs = base_image(site, kernel)?;
    fs::write(rootfs.join("etc/ironwulf-member"), "image")?;

    let overlay = site.overlay("testinit");
    fs::create_dir_all(overlay.join("etc"))?;
    fs::copy(artifacts::test_init()?, overlay.join("init"))?;
    fs::set_permissions(overlay.join("init"), fs::Permissions::from_mode(0o755))?;
    fs::write(overlay.join("etc/ironwulf-member"), "system")?;

    site.nodes(&format!(
        "nodeprofiles: {{}}
nodes:
  n1:
    image name: tiny
    system overlay: [testinit]
    runtime overlay: [hosts]
    kernel:
      args: [console=ttyS0, panic=-1]
    network devices:
      default:
        hwaddr: {MAC}
        ipaddr: 10.99.0.11
        netmask: 255.255.255.0
"
    ))?;
    site.wwctl(&["image", "build", "tiny"])?;
    site.wwctl(&["overlay", "build"])?;
    Ok(())
}

/// Image `tiny`: the usual top-level folders, Debian's kernel in /boot (where
/// Warewulf looks for it) and a console device; returns its rootfs.
fn base_image(site: &Site, kernel: &Kernel) -> Result<std::path::PathBuf> {
    let rootfs = site.rootfs("tiny");
    for dir in ["boot", "dev", "proc", "sys", "etc", "run", "tmp"] {
        fs::create_dir_all(rootfs.join(dir))?;
    }
    let name = kernel
        .path()
        .file_name()
        .context("kernel path has no file name")?
        .to_string_lossy()
        .into_owned();
    let name = if name.starts_with("vmlinuz-") {
        name
    } else {
        format!("vmlinuz-{name}")
    };
    fs::copy(kernel.path(), rootfs.join("boot").join(&name)).context("copying the kernel")?;
    // The kernel opens /dev/console for init before anything mounts devtmpfs.
    let status = Command::new("mknod")
        .arg(rootfs.join("dev/console"))
        .args(["c", "5", "1"])
        .status()
        .context("running mknod")?;
    ensure!(status.success(), "mknod dev/console failed");
    Ok(rootfs)
}

/// Powers on node n1 (MAC [`MAC`]) on `tap`, network boot first.
fn spawn_node(ns: &Netns, tap: &str, test: &str, firmware: &[&str]) -> Result<Vm> {
    let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("qemu-{test}.log"));
    let vm = Vm::builder()
        .netns(ns.name())
        .memory_mib(512)
        .console_log(&log)
        .args(firmware.iter().copied())
        .args([
            "-boot",
            "n",
            "-netdev",
            &format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
            "-device",
            &format!("virtio-net-pci,netdev=n0,mac={MAC}"),
        ])
        .spawn()?;
    eprintln!("{test}: {}", vm.command_line());
    Ok(vm)
}

/// Boots node n1 with `firmware` args and returns the console text.
fn network_boot(test: &str, firmware: &[&str]) -> Result<String> {
    let kernel = Kernel::locate(Arch::Amd64)?;
    let mut ns = Netns::new("px")?;
    let tap = ns.add_tap()?;
    let site = Site::new()?;
    prepare(&site, &kernel)?;
    let head = site.start(&ns)?;

    let started = Instant::now();
    let mut vm = spawn_node(&ns, &tap, test, firmware)?;
    let booted = vm
        .console()
        .expect(&format!("{TEST_INIT_MARKER}system"), BOOT_TIMEOUT);
    head.with_log(booted)?;
    eprintln!(
        "{test}: init reached in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    vm.expect_poweroff(Duration::from_secs(30))?;

    // The head saw the node through to its overlays: /status keeps the last
    // stage per node (as Warewulf's does) and the bytes sent.
    let status = ns.http_get(&head.url("/status"))?;
    let json: serde_json::Value = serde_json::from_str(&status).context("parsing /status")?;
    let node = &json["nodes"]["n1"];
    let stage = node["stage"].as_str().unwrap_or_default();
    ensure!(
        matches!(stage, "SYSTEM_OVERLAY" | "RUNTIME_OVERLAY"),
        "/status: n1 did not reach its overlays: {json}"
    );
    let kernel_size = fs::metadata(kernel.path())?.len();
    let sent = node["bytes sent"].as_u64().unwrap_or_default();
    ensure!(
        sent > kernel_size,
        "/status: only {sent} bytes sent to n1: {json}"
    );
    ensure!(
        node["ipaddr"] == "10.99.0.11",
        "/status: wrong address: {json}"
    );
    let log = head.log();
    ensure!(log.contains("DHCP"), "server log: {log}");
    Ok(vm.console().text())
}

#[test]
fn bios_ipxe_rom_boots_through_our_dhcp_and_http() {
    if qemu_opted_out("bios_ipxe_rom_boots_through_our_dhcp_and_http") {
        return;
    }
    // SeaBIOS runs the NIC's iPXE ROM, whose DHCP carries user class iPXE:
    // our DHCP answers with the /ipxe URL directly.
    let console = network_boot("pxe-bios", &[]).unwrap();
    assert!(
        console.contains("Ironwulf"),
        "our iPXE script did not run:\n{console}"
    );
}

#[test]
fn uefi_pxe_fetches_ipxe_over_our_tftp() {
    if qemu_opted_out("uefi_pxe_fetches_ipxe_over_our_tftp") {
        return;
    }
    // OVMF's own PXE (no iPXE ROM on the NIC) asks DHCP as PXEClient arch 7,
    // fetches snponly.efi over our TFTP, then iPXE asks DHCP again.
    let vars = tempfile::NamedTempFile::new().unwrap();
    fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", vars.path()).unwrap();
    let code = "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd".to_owned();
    let vars = format!("if=pflash,format=raw,file={}", vars.path().display());
    let console = network_boot(
        "pxe-uefi",
        &[
            "-drive",
            &code,
            "-drive",
            &vars,
            "-global",
            "virtio-net-pci.romfile=",
        ],
    )
    .unwrap();
    assert!(
        console.contains("Ironwulf"),
        "our iPXE script did not run:\n{console}"
    );
}

/// The runtime overlay reaches a running node through wwclient (issue 06):
/// the image's /init brings up the NIC, starts the static `wwclient` with a
/// 2 s interval and prints `/etc/motd` every second; the test then changes
/// the runtime overlay on the head and waits for the node to print it.
#[test]
fn runtime_overlay_change_reaches_a_running_node() {
    if qemu_opted_out("runtime_overlay_change_reaches_a_running_node") {
        return;
    }
    let kernel = Kernel::locate(Arch::Amd64).unwrap();
    let mut ns = Netns::new("rt").unwrap();
    let tap = ns.add_tap().unwrap();
    let site = Site::new().unwrap();
    let rootfs = base_image(&site, &kernel).unwrap();

    // busybox, the NIC driver chain, wwclient and an /init that uses them.
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    let release = kernel_release(&kernel);
    let modules = kernel
        .path()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("lib/modules")
        .join(&release);
    fs::create_dir_all(rootfs.join("modules")).unwrap();
    // In load order (dependencies first): Debian builds virtio as modules.
    let chain = [
        ("virtio_ring", "kernel/drivers/virtio/virtio_ring.ko"),
        ("virtio", "kernel/drivers/virtio/virtio.ko"),
        (
            "virtio_pci_modern_dev",
            "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
        ),
        (
            "virtio_pci_legacy_dev",
            "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
        ),
        ("virtio_pci", "kernel/drivers/virtio/virtio_pci.ko"),
        ("failover", "kernel/net/core/failover.ko"),
        ("net_failover", "kernel/drivers/net/net_failover.ko"),
        ("virtio_net", "kernel/drivers/net/virtio_net.ko"),
    ];
    for (m, rel) in chain {
        fs::copy(modules.join(rel), rootfs.join(format!("modules/{m}.ko")))
            .unwrap_or_else(|e| panic!("{}: {e}", modules.join(rel).display()));
    }
    let load: Vec<&str> = chain.iter().map(|(m, _)| *m).collect();
    fs::create_dir_all(rootfs.join("warewulf")).unwrap();
    fs::copy(
        artifacts::wwclient().unwrap(),
        rootfs.join("warewulf/wwclient"),
    )
    .unwrap();
    fs::set_permissions(
        rootfs.join("warewulf/wwclient"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let init = "#!/bin/busybox sh
bb=/bin/busybox
$bb mount -t proc proc /proc
$bb mount -t sysfs sys /sys
$bb mount -t devtmpfs dev /dev
for m in MODULES; do $bb insmod /modules/$m.ko; done
$bb ip link set eth0 up
$bb ip addr add 10.99.0.11/24 dev eth0
/warewulf/wwclient --server http://10.99.0.1:9873 --interval 2 --insecure --debug --state-dir /tmp/wwclient &
while :; do echo \"IRONWULF-MOTD: $($bb cat /etc/motd 2>/dev/null)\"; $bb sleep 1; done
";
    fs::write(
        rootfs.join("init"),
        init.replace("MODULES", &load.join(" ")),
    )
    .unwrap();
    fs::set_permissions(rootfs.join("init"), fs::Permissions::from_mode(0o755)).unwrap();

    let motd = site.overlay("motd");
    fs::create_dir_all(motd.join("etc")).unwrap();
    fs::write(motd.join("etc/motd"), "version one\n").unwrap();
    site.nodes(&format!(
        "nodeprofiles: {{}}
nodes:
  n1:
    image name: tiny
    system overlay: [hostname]
    runtime overlay: [motd]
    kernel:
      args: [console=ttyS0, panic=-1, quiet]
    network devices:
      default:
        hwaddr: {MAC}
        ipaddr: 10.99.0.11
        netmask: 255.255.255.0
"
    ))
    .unwrap();
    site.wwctl(&["image", "build", "tiny"]).unwrap();
    site.wwctl(&["overlay", "build"]).unwrap();
    let head = site.start(&ns).unwrap();

    let mut vm = spawn_node(&ns, &tap, "runtime-change", &[]).unwrap();
    let first = vm
        .console()
        .expect("IRONWULF-MOTD: version one", BOOT_TIMEOUT);
    first.unwrap_or_else(|e| panic!("{e:#}\nserver log:\n{}", head.log()));

    // Change the runtime overlay on the head; the node must show it within
    // a few 2 s polling intervals.
    fs::write(motd.join("etc/motd"), "version two\n").unwrap();
    site.wwctl(&["overlay", "build"]).unwrap();
    let changed = Instant::now();
    let second = vm
        .console()
        .expect("IRONWULF-MOTD: version two", Duration::from_secs(60));
    second.unwrap_or_else(|e| panic!("{e:#}\nserver log:\n{}", head.log()));
    eprintln!(
        "runtime change seen on the node after {:.1} s",
        changed.elapsed().as_secs_f64()
    );
}

/// `6.1.0-56-amd64` from `.../boot/vmlinuz-6.1.0-56-amd64`.
fn kernel_release(kernel: &Kernel) -> String {
    let name = kernel
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    name.strip_prefix("vmlinuz-").unwrap_or(&name).to_owned()
}
