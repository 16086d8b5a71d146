//! Stage-1 initramfs for two-stage boots: the static `wwinit` as `/init`,
//! the NIC (and IPMI) drivers of one kernel with their dependencies, and a
//! `modules.alias`/`modules.dep` written for exactly those modules. Served
//! as `/initramfs/{wwid}` from `<wwprovisiondir>/initramfs/<kernel>.img`.
//!
//! The archive is reproducible (sorted entries, root-owned, mtime 0) and
//! written atomically; module files are copied as they are (compressed or
//! not: wwinit loads both).

pub mod modinfo;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use indicatif::ProgressBar;
use initramfs::compress::{Compression, EncoderOptions, encoder};
use initramfs::newc::{Kind, Writer};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::Paths;
use crate::fsutil::AtomicFile;
use modinfo::{ModuleTree, machine_name};

/// Named module sets; a set's modules that a kernel lacks are skipped.
pub const MODULE_SETS: &[(&str, &[&str])] = &[
    // QEMU/KVM and most clouds (PCI and, on arm64 `virt`, MMIO transports).
    ("virtio", &["virtio_pci", "virtio_mmio", "virtio_net"]),
    // QEMU's default NICs and Intel desktop/server gigabit.
    ("e1000", &["e1000", "e1000e"]),
    // Common server NICs.
    (
        "server",
        &[
            "igb",
            "igc",
            "ixgbe",
            "ixgbevf",
            "i40e",
            "iavf",
            "ice",
            "bnxt_en",
            "tg3",
            "bnx2",
            "bnx2x",
            "qede",
            "be2net",
            "sfc",
            "mlx4_en",
            "mlx5_core",
            "r8169",
            "vmxnet3",
            "ena",
            "gve",
            "hv_netvsc",
        ],
    ),
    // Raspberry Pi: Pi 4 GENET and its PHY, Pi 3 USB Ethernet and USB hosts.
    (
        "rpi",
        &[
            "genet",
            "broadcom",
            "lan78xx",
            "smsc95xx",
            "dwc2",
            "xhci_pci",
            "pcie_brcmstb",
        ],
    ),
    // The BMC, for wwinit's ipmi stage.
    ("ipmi", &["ipmi_si", "ipmi_devintf"]),
];

/// Sets used when none are named.
pub const DEFAULT_SETS: &[&str] = &["virtio", "e1000", "server", "rpi", "ipmi"];

/// What to build.
#[derive(Clone, Debug)]
pub struct Stage1Options {
    /// `lib/modules/<kernel version>` of the kernel the node boots.
    pub modules_dir: PathBuf,
    pub kernel_version: String,
    /// The static wwinit for the node's architecture.
    pub wwinit: PathBuf,
    /// Set names (see [`MODULE_SETS`]) and module names; empty = defaults.
    pub modules: Vec<String>,
    pub compression: Compression,
    pub output: PathBuf,
}

/// What was built.
#[derive(Clone, Debug, Serialize)]
pub struct Stage1Report {
    pub output: PathBuf,
    pub kernel_version: String,
    pub arch: &'static str,
    /// Modules shipped, in load order.
    pub modules: Vec<String>,
    /// Set members this kernel does not have (or has built in).
    pub not_found: Vec<String>,
    pub uncompressed: u64,
    pub size: u64,
    pub sha256: String,
}

/// `<wwprovisiondir>/initramfs/<kernel version>.img`: where the head serves
/// the stage 1 of nodes booting that kernel.
pub fn default_output(paths: &Paths, kernel_version: &str) -> PathBuf {
    paths
        .wwprovisiondir
        .join("initramfs")
        .join(format!("{kernel_version}.img"))
}

/// `<root>/lib/modules/<version>` or `<root>/usr/lib/modules/<version>`.
pub fn modules_dir_in(root: &Path, kernel_version: &str) -> Option<PathBuf> {
    ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| root.join(d).join(kernel_version))
        .find(|p| p.is_dir())
}

/// Kernel versions with a modules directory under `root`, sorted.
pub fn module_versions(root: &Path) -> Vec<String> {
    let mut out = BTreeSet::new();
    for d in ["lib/modules", "usr/lib/modules"] {
        if let Ok(entries) = fs::read_dir(root.join(d)) {
            out.extend(
                entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.path().is_dir())
                    .filter_map(|e| e.file_name().into_string().ok()),
            );
        }
    }
    out.into_iter().collect()
}

/// Expands set names; returns (module names, set members not in the tree).
fn wanted_modules(tree: &ModuleTree, requested: &[String]) -> Result<(Vec<String>, Vec<String>)> {
    let lenient = requested.is_empty();
    let items: Vec<String> = if lenient {
        DEFAULT_SETS.iter().map(|s| (*s).to_owned()).collect()
    } else {
        requested.to_vec()
    };
    let mut wanted = Vec::new();
    let mut missing = Vec::new();
    for item in &items {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        match MODULE_SETS.iter().find(|(n, _)| *n == item) {
            Some((set, members)) => {
                let before = wanted.len();
                for m in *members {
                    if tree.files.contains_key(*m) {
                        wanted.push((*m).to_owned());
                    } else {
                        missing.push((*m).to_owned());
                    }
                }
                let builtin = members.iter().any(|m| tree.builtin.contains(*m));
                if wanted.len() == before && !lenient && !builtin {
                    bail!(
                        "module set {set}: none of {} is in {}",
                        members.join(", "),
                        tree.dir.display()
                    );
                }
            }
            None => {
                let name = item.replace('-', "_");
                if !tree.files.contains_key(&name) && !tree.builtin.contains(&name) {
                    let sets: Vec<&str> = MODULE_SETS.iter().map(|(n, _)| *n).collect();
                    bail!(
                        "module {item} is not in {} (and is not a module set: {})",
                        tree.dir.display(),
                        sets.join(", ")
                    );
                }
                wanted.push(name);
            }
        }
    }
    Ok((wanted, missing))
}

/// The ELF machine of the wwinit binary.
fn wwinit_machine(path: &Path, data: &[u8]) -> Result<u16> {
    let (machine, _) = modinfo::parse_elf(path, data)?;
    Ok(machine)
}

/// Builds the stage 1 described by `opts`; `bar` counts modules.
pub fn build(opts: &Stage1Options, bar: &ProgressBar) -> Result<Stage1Report> {
    let kver = &opts.kernel_version;
    if kver.is_empty() || kver.contains('/') || kver.starts_with('.') {
        bail!("invalid kernel version {kver:?}");
    }
    let wwinit = fs::read(&opts.wwinit).with_context(|| {
        format!(
            "reading the static wwinit {} (build it with `cargo build --release -p wwinit \
             --target <arch>-unknown-linux-musl`, or pass --wwinit)",
            opts.wwinit.display()
        )
    })?;
    let wwinit_arch = wwinit_machine(&opts.wwinit, &wwinit)?;

    let tree = ModuleTree::scan(&opts.modules_dir)
        .with_context(|| format!("reading the modules of kernel {kver}"))?;
    let (wanted, mut not_found) = wanted_modules(&tree, &opts.modules)?;
    bar.set_length(wanted.len() as u64);
    let chosen = modinfo::resolve(&tree, &wanted)?;
    for c in &chosen {
        if c.info.machine != wwinit_arch {
            bail!(
                "{} is built for {} but wwinit {} is {}: pass --wwinit with a {} build \
                 (--target {}-unknown-linux-musl)",
                tree.dir.join(&c.rel).display(),
                machine_name(c.info.machine),
                opts.wwinit.display(),
                machine_name(wwinit_arch),
                machine_name(c.info.machine),
                machine_name(c.info.machine),
            );
        }
        if let Some(vm) = &c.info.vermagic
            && vm.split_whitespace().next() != Some(kver.as_str())
        {
            bail!(
                "{} was built for kernel {} (vermagic), not {kver}",
                tree.dir.join(&c.rel).display(),
                vm.split_whitespace().next().unwrap_or_default()
            );
        }
    }
    not_found.retain(|m| !chosen.iter().any(|c| &c.name == m));

    let base = format!("lib/modules/{kver}");
    let mut cpio = Writer::new(Vec::new());
    let add = |w: &mut Writer<Vec<u8>>, name: &str, perm: u32, data: &[u8]| -> Result<()> {
        w.add_parents(name)
            .and_then(|()| w.add_file(name, perm, data))
            .with_context(|| format!("adding {name} to the stage 1"))
    };
    for dir in ["dev", "proc", "sys", "run", "newroot"] {
        cpio.add_dir(dir, 0o755)
            .with_context(|| format!("adding {dir}"))?;
    }
    // The kernel opens /dev/console for init before devtmpfs is mounted.
    cpio.add_node("dev/console", Kind::CharDevice, 0o600, 5, 1)
        .context("adding dev/console")?;
    add(&mut cpio, "init", 0o755, &wwinit)?;
    let mut files: Vec<(&str, &str)> = chosen
        .iter()
        .map(|c| (c.rel.as_str(), c.name.as_str()))
        .collect();
    files.sort_unstable();
    for (rel, _) in &files {
        let src = tree.dir.join(rel);
        let data = fs::read(&src).with_context(|| format!("reading {}", src.display()))?;
        add(&mut cpio, &format!("{base}/{rel}"), 0o644, &data)?;
        bar.inc(1);
    }
    add(
        &mut cpio,
        &format!("{base}/modules.alias"),
        0o644,
        modinfo::modules_alias(&chosen).as_bytes(),
    )?;
    add(
        &mut cpio,
        &format!("{base}/modules.dep"),
        0o644,
        modinfo::modules_dep(&chosen).as_bytes(),
    )?;
    let raw = cpio.finish().context("finishing the stage-1 archive")?;

    let enc_opts = EncoderOptions {
        level: None,
        threads: 0,
    };
    let mut enc = encoder(opts.compression, &enc_opts, Vec::new())
        .context("starting the stage-1 compressor")?;
    enc.write_all(&raw).context("compressing the stage 1")?;
    let packed = enc.finish().context("compressing the stage 1")?;
    let sha256 = hex::encode(Sha256::digest(&packed));

    let mut out = AtomicFile::new(&opts.output)?;
    out.write_all(&packed)
        .with_context(|| format!("writing {}", opts.output.display()))?;
    out.set_mode(0o644)?;
    out.commit()?;

    Ok(Stage1Report {
        output: opts.output.clone(),
        kernel_version: kver.clone(),
        arch: machine_name(wwinit_arch),
        modules: chosen.into_iter().map(|c| c.name).collect(),
        not_found,
        uncompressed: raw.len() as u64,
        size: packed.len() as u64,
        sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use modinfo::tests::fake_module;

    /// `lib/modules/6.1.0-1-amd64` with virtio_net (needing virtio) and
    /// e1000, all built for x86_64 and that kernel.
    fn tree(dir: &Path) -> PathBuf {
        let m = dir.join("lib/modules/6.1.0-1-amd64");
        std::fs::create_dir_all(m.join("kernel/net")).expect("mkdir");
        let vm = "vermagic=6.1.0-1-amd64 SMP mod_unload";
        for (rel, info) in [
            (
                "kernel/net/virtio_net.ko",
                vec!["alias=virtio:d00000001v*", "depends=virtio", vm],
            ),
            ("kernel/net/virtio.ko", vec!["depends=", vm]),
            (
                "kernel/net/e1000.ko",
                vec!["alias=pci:v00008086d0000100Esv*sd*bc*sc*i*", "depends=", vm],
            ),
        ] {
            std::fs::write(m.join(rel), fake_module(62, &info)).expect("write");
        }
        m
    }

    fn opts(dir: &Path, modules: &[&str], wwinit_machine: u16) -> Stage1Options {
        let wwinit = dir.join("wwinit");
        std::fs::write(&wwinit, fake_module(wwinit_machine, &[])).expect("write");
        Stage1Options {
            modules_dir: tree(dir),
            kernel_version: "6.1.0-1-amd64".into(),
            wwinit,
            modules: modules.iter().map(|s| (*s).to_owned()).collect(),
            compression: Compression::Gzip,
            output: dir.join("out/stage1.img"),
        }
    }

    #[test]
    fn sets_and_names_expand_with_dependencies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = opts(dir.path(), &["virtio", "e1000"], 62);
        let r = build(&o, &ProgressBar::hidden()).expect("build");
        assert_eq!(r.modules, ["virtio", "virtio_net", "e1000"]);
        assert_eq!(r.arch, "x86_64");
        assert!(r.not_found.contains(&"virtio_pci".to_owned()), "{r:?}");
        assert!(r.not_found.contains(&"e1000e".to_owned()), "{r:?}");
        let bytes = std::fs::read(&o.output).expect("read");
        assert_eq!(r.size, bytes.len() as u64);
        assert_eq!(r.sha256, hex::encode(Sha256::digest(&bytes)));
        // Default: every set, lenient about the ones this kernel lacks.
        let r = build(&opts(dir.path(), &[], 62), &ProgressBar::hidden()).expect("build");
        assert_eq!(r.modules.len(), 3);
    }

    #[test]
    fn mismatches_are_refused_with_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err =
            build(&opts(dir.path(), &["virtio"], 183), &ProgressBar::hidden()).expect_err("arch");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("virtio.ko is built for x86_64 but wwinit") && msg.contains("is aarch64"),
            "{msg}"
        );
        let mut o = opts(dir.path(), &["e1000"], 62);
        std::fs::rename(
            dir.path().join("lib/modules/6.1.0-1-amd64"),
            dir.path().join("lib/modules/6.1.0-2-amd64"),
        )
        .expect("rename");
        o.modules_dir = dir.path().join("lib/modules/6.1.0-2-amd64");
        o.kernel_version = "6.1.0-2-amd64".into();
        let msg = format!(
            "{:#}",
            build(&o, &ProgressBar::hidden()).expect_err("vermagic")
        );
        assert!(
            msg.contains("was built for kernel 6.1.0-1-amd64 (vermagic), not 6.1.0-2-amd64"),
            "{msg}"
        );
        let msg = format!(
            "{:#}",
            build(&opts(dir.path(), &["ipmi"], 62), &ProgressBar::hidden()).expect_err("empty set")
        );
        assert!(
            msg.contains("module set ipmi: none of ipmi_si, ipmi_devintf"),
            "{msg}"
        );
    }
}
