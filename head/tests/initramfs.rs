#![allow(clippy::unwrap_used)]
//! `wwctl initramfs build` against Debian's real kernel packages: the amd64
//! kernel the QEMU tests boot and an arm64 one (the Raspberry Pi path),
//! both unpacked from their `.deb` by `scripts/fetch-kernel.sh`, neither
//! with a `modules.dep` or `modules.alias` (depmod runs in the package's
//! postinst), so the builder must derive both from the modules themselves.
//!
//! Needs network the first time (the kernels are cached under
//! `${IRONWULF_CACHE:-/var/cache/ironwulf}`), the musl targets and, for
//! arm64, `gcc-aarch64-linux-gnu` (C parts of zstd/xz) and `rust-lld`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use initramfs::unpack::{UnpackOptions, unpack};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|d| {
            if d.is_absolute() {
                d
            } else {
                workspace().join(d)
            }
        })
        .unwrap_or_else(|| workspace().join("target"))
}

/// `scripts/fetch-kernel.sh ARCH` → the directory it unpacked the package in.
fn kernel_tree(arch: &str) -> PathBuf {
    let out = Command::new(workspace().join("scripts/fetch-kernel.sh"))
        .arg(arch)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/fetch-kernel.sh {arch}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vmlinuz = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    vmlinuz.parent().unwrap().parent().unwrap().to_path_buf()
}

/// The static release wwinit for `triple`, built by cargo (a no-op when fresh).
fn wwinit(triple: &str) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "-p", "wwinit", "--target", triple])
        .current_dir(workspace());
    if triple.starts_with("aarch64") {
        // See docs/wwinit.md, "Building for arm64".
        cmd.env("CC_aarch64_unknown_linux_musl", "aarch64-linux-gnu-gcc")
            .env("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER", "rust-lld");
    }
    let status = cmd.status().unwrap();
    assert!(status.success(), "building wwinit for {triple}: {status}");
    target_dir().join(triple).join("release/wwinit")
}

/// A site whose provision dir is inside `dir`.
fn conf(dir: &Path) -> PathBuf {
    let p = dir.join("warewulf.conf");
    fs::write(
        &p,
        format!(
            "ipaddr: 10.0.0.1\npaths:\n  wwprovisiondir: {0}/provision\n  sysconfdir: {0}/etc\n  wwchrootdir: {0}/chroots\n  wwoverlaydir: {0}/overlays\n",
            dir.display()
        ),
    )
    .unwrap();
    p
}

fn wwctl(conf: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_wwctl"))
        .arg("--warewulfconf")
        .arg(conf)
        .args(args)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn unpacked(archive: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let opts = UnpackOptions {
        preserve_owner: false,
        skip_unprivileged_nodes: true,
    };
    unpack(fs::File::open(archive).unwrap(), dir.path(), &opts).unwrap();
    dir
}

fn version_of(tree: &Path) -> String {
    let mut v: Vec<String> = fs::read_dir(tree.join("lib/modules"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v.pop().unwrap()
}

#[test]
fn amd64_stage1_from_the_debian_kernel_package() {
    let tree = kernel_tree("amd64");
    let kver = version_of(&tree);
    let wwinit = wwinit("x86_64-unknown-linux-musl");
    let tmp = tempfile::tempdir().unwrap();
    let conf = conf(tmp.path());
    let root = tree.display().to_string();
    let json = wwctl(
        &conf,
        &[
            "initramfs",
            "build",
            "--root",
            &root,
            "-m",
            "virtio,e1000,ipmi",
            "--wwinit",
            wwinit.to_str().unwrap(),
            "--json",
        ],
    )
    .unwrap();
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let out = tmp.path().join(format!("provision/initramfs/{kver}.img"));
    assert_eq!(report["output"], out.display().to_string());
    assert_eq!(report["arch"], "x86_64");
    assert_eq!(report["kernel_version"], kver.as_str());
    let modules: Vec<&str> = report["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    // Dependencies come before the modules that need them.
    let pos = |m: &str| {
        modules
            .iter()
            .position(|x| *x == m)
            .unwrap_or_else(|| panic!("{m} missing: {modules:?}"))
    };
    assert!(pos("virtio") < pos("virtio_pci") && pos("failover") < pos("virtio_net"));
    assert!(pos("ipmi_msghandler") < pos("ipmi_si"));
    pos("e1000e");

    // xz, as the kernel expects it, and what is inside.
    let bytes = fs::read(&out).unwrap();
    assert!(bytes.starts_with(b"\xfd7zXZ\0"), "not xz");
    assert_eq!(report["size"], bytes.len());
    let dir = unpacked(&out);
    let d = dir.path();
    assert_eq!(
        fs::read(d.join("init")).unwrap(),
        fs::read(&wwinit).unwrap()
    );
    let mdir = d.join("lib/modules").join(&kver);
    let dep = fs::read_to_string(mdir.join("modules.dep")).unwrap();
    let alias = fs::read_to_string(mdir.join("modules.alias")).unwrap();
    let net = dep
        .lines()
        .find(|l| l.starts_with("kernel/drivers/net/virtio_net.ko:"))
        .unwrap_or_else(|| panic!("{dep}"));
    // Loaded from the end of the list: virtio_ring before virtio, failover
    // before net_failover.
    let deps: Vec<&str> = net.split_whitespace().skip(1).collect();
    let at = |s: &str| deps.iter().position(|d| d.ends_with(s)).unwrap();
    assert!(at("/virtio_ring.ko") > at("/virtio.ko"), "{net}");
    assert!(at("/failover.ko") > at("/net_failover.ko"), "{net}");
    // QEMU's e1000 (8086:100e) and virtio-net PCI transport (1af4) match.
    assert!(
        alias.contains("alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000\n"),
        "{alias}"
    );
    assert!(
        alias.contains(" virtio_pci\n") && alias.contains("alias virtio:d00000001v* virtio_net\n"),
        "{alias}"
    );
    for line in dep.lines() {
        let rel = line.split(':').next().unwrap();
        assert!(mdir.join(rel).is_file(), "{rel} listed but not shipped");
    }

    // Rebuilding the same input gives the same bytes.
    wwctl(
        &conf,
        &[
            "initramfs",
            "build",
            "--root",
            &root,
            "-m",
            "virtio,e1000,ipmi",
            "--wwinit",
            wwinit.to_str().unwrap(),
        ],
    )
    .unwrap();
    assert_eq!(fs::read(&out).unwrap(), bytes, "not reproducible");

    // Bad input is named.
    let err = wwctl(
        &conf,
        &[
            "initramfs",
            "build",
            "--root",
            &root,
            "-m",
            "virtio,nosuchmod",
            "--wwinit",
            wwinit.to_str().unwrap(),
        ],
    )
    .unwrap_err();
    assert!(
        err.contains("module nosuchmod is not in") && err.contains("not a module set"),
        "{err}"
    );
    // A set's members this kernel lacks are reported, not fatal.
    let json = wwctl(
        &conf,
        &[
            "initramfs",
            "build",
            "--root",
            &root,
            "-m",
            "rpi",
            "--wwinit",
            wwinit.to_str().unwrap(),
            "--json",
        ],
    )
    .unwrap();
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(
        report["not_found"].to_string().contains("\"genet\""),
        "{report}"
    );
    let err = wwctl(
        &conf,
        &[
            "initramfs",
            "build",
            "--root",
            &root,
            "-k",
            "9.9.9",
            "--wwinit",
            wwinit.to_str().unwrap(),
        ],
    )
    .unwrap_err();
    assert!(
        err.contains(&format!(
            "has no lib/modules/9.9.9 (kernels with modules: {kver})"
        )),
        "{err}"
    );
    let not_elf = tmp.path().join("not-elf");
    fs::write(&not_elf, "#!/bin/sh\n").unwrap();
    let err = wwctl(
        &conf,
        &[
            "initramfs",
            "build",
            "--root",
            &root,
            "-m",
            "virtio",
            "--wwinit",
            not_elf.to_str().unwrap(),
        ],
    )
    .unwrap_err();
    assert!(err.contains("not-elf: not an ELF file"), "{err}");
}

#[test]
fn arm64_stage1_from_the_debian_kernel_package() {
    let tree = kernel_tree("arm64");
    let kver = version_of(&tree);
    let arm_wwinit = wwinit("aarch64-unknown-linux-musl");
    let tmp = tempfile::tempdir().unwrap();
    let conf = conf(tmp.path());
    let root = tree.display().to_string();
    let out = tmp.path().join("stage1-arm64.img");
    let json = wwctl(
        &conf,
        &[
            "initramfs",
            "build",
            "--root",
            &root,
            "-m",
            "virtio,rpi",
            "--wwinit",
            arm_wwinit.to_str().unwrap(),
            "--compress",
            "gz",
            "-o",
            out.to_str().unwrap(),
            "--json",
        ],
    )
    .unwrap();
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["arch"], "aarch64");
    let modules = report["modules"].to_string();
    for m in ["virtio_mmio", "virtio_net", "genet", "lan78xx", "smsc95xx"] {
        assert!(
            modules.contains(&format!("\"{m}\"")),
            "{m} missing: {modules}"
        );
    }
    let bytes = fs::read(&out).unwrap();
    assert!(bytes.starts_with(&[0x1f, 0x8b]), "not gzip");
    let dir = unpacked(&out);
    let alias = fs::read_to_string(
        dir.path()
            .join("lib/modules")
            .join(&kver)
            .join("modules.alias"),
    )
    .unwrap();
    // Device-tree matches for the Pi 4's GENET and QEMU virt's virtio-mmio.
    assert!(
        alias.contains("brcm,genet-v5") && alias.contains("virtio,mmio"),
        "{alias}"
    );

    // An x86 wwinit with arm64 modules is refused, naming both.
    let x86 = wwinit("x86_64-unknown-linux-musl");
    let err = wwctl(
        &conf,
        &[
            "initramfs",
            "build",
            "--root",
            &root,
            "-m",
            "virtio",
            "--wwinit",
            x86.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
    )
    .unwrap_err();
    assert!(
        err.contains("is built for aarch64 but wwinit") && err.contains("is x86_64"),
        "{err}"
    );
}
