//! A tiny site for two-stage boots: Debian's kernel, its virtio modules and
//! `test-init` as the whole image, so a boot from a real head to the init
//! marker takes seconds of guest time (used by the two-stage and TLS tests).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};

use crate::head::Site;
use crate::netns::Netns;
use crate::{Kernel, Vm, VmBuilder, artifacts};

/// `6.1.0-56-amd64` from `…/boot/vmlinuz-6.1.0-56-amd64`.
pub fn kernel_release(kernel: &Kernel) -> Result<String> {
    let name = kernel
        .path()
        .file_name()
        .and_then(|n| n.to_str())
        .context("kernel path has no file name")?;
    Ok(name.strip_prefix("vmlinuz-").unwrap_or(name).to_owned())
}

/// Image `tiny` (test-init, `/etc/ironwulf-member = image`, the kernel and
/// its virtio modules), a site overlay `testinit` (`member = system`), node
/// n1 (`mac`, `ipaddr`, tagged for the two-stage path) with `init:
/// /sbin/test-init`; builds image, overlays and the virtio stage 1 with the
/// static wwinit. Returns the stage 1's path.
pub fn two_stage_site(site: &Site, kernel: &Kernel, mac: &str, ipaddr: &str) -> Result<PathBuf> {
    let rootfs = site.rootfs("tiny");
    for dir in ["boot", "dev", "proc", "sys", "etc", "run", "tmp", "sbin"] {
        fs::create_dir_all(rootfs.join(dir))?;
    }
    let kver = kernel_release(kernel)?;
    fs::copy(kernel.path(), rootfs.join(format!("boot/vmlinuz-{kver}")))?;
    // The NIC drivers the stage-1 builder takes from the image.
    let modules = kernel
        .path()
        .parent()
        .and_then(Path::parent)
        .context("kernel has no parent directory")?
        .join("lib/modules")
        .join(&kver);
    let dest = rootfs.join("lib/modules").join(&kver);
    fs::create_dir_all(&dest)?;
    for rel in [
        "kernel/drivers/virtio",
        "kernel/drivers/net/virtio_net.ko",
        "kernel/drivers/net/net_failover.ko",
        "kernel/net/core/failover.ko",
    ] {
        let status = Command::new("cp")
            .args(["-a", "--parents", rel])
            .arg(&dest)
            .current_dir(&modules)
            .status()
            .context("running cp")?;
        ensure!(status.success(), "copying {rel}");
    }
    fs::copy(artifacts::test_init()?, rootfs.join("sbin/test-init"))?;
    fs::set_permissions(
        rootfs.join("sbin/test-init"),
        fs::Permissions::from_mode(0o755),
    )?;
    fs::write(rootfs.join("etc/ironwulf-member"), "image")?;

    let overlay = site.overlay("testinit");
    fs::create_dir_all(overlay.join("etc"))?;
    fs::write(overlay.join("etc/ironwulf-member"), "system")?;

    site.nodes(&format!(
        "nodeprofiles: {{}}
nodes:
  n1:
    image name: tiny
    init: /sbin/test-init
    system overlay: [wwinit, testinit]
    runtime overlay: [hosts]
    tags:
      ironwulf.boot: two-stage
    network devices:
      default:
        hwaddr: {mac}
        ipaddr: {ipaddr}
        netmask: 255.255.255.0
"
    ))?;
    site.wwctl(&["image", "build", "tiny", "--compress", "gz,zst"])?;
    site.wwctl(&["overlay", "build"])?;
    let wwinit = artifacts::wwinit()?;
    site.wwctl(&[
        "initramfs",
        "build",
        "tiny",
        "-m",
        "virtio",
        "--wwinit",
        wwinit.to_str().context("non-UTF-8 path")?,
    ])?;
    Ok(site
        .root()
        .join("provision/initramfs")
        .join(format!("{kver}.img")))
}

/// A node of a [`two_stage_site`]: `kernel` + `stage1`, 512 MiB, one
/// virtio NIC with `mac` on `tap` inside `ns`, wwinit's crash action set to
/// a quick power-off; `extra` ends the kernel command line. Callers add the
/// console log and anything else.
pub fn two_stage_vm(
    ns: &Netns,
    tap: &str,
    mac: &str,
    kernel: &Kernel,
    stage1: &Path,
    extra: &str,
) -> VmBuilder {
    Vm::builder()
        .netns(ns.name())
        .kernel_for(kernel)
        .initrd(stage1)
        .memory_mib(512)
        .append(format!(
            "console=ttyS0 panic=-1 wwid={mac} wwinit.crash=poweroff wwinit.crash_delay=1 {extra}"
        ))
        .args([
            "-netdev".to_string(),
            format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
            "-device".to_string(),
            format!("virtio-net-pci,netdev=n0,mac={mac}"),
        ])
}
