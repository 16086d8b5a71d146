//! `wwctl initramfs`: build the stage-1 initramfs of two-stage boots.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use initramfs::compress::Compression;

use super::Context as Ctx;
use super::output::FormatArgs;
use crate::image::{ImageStore, kernel};
use crate::initramfs::{self as stage1, Stage1Options};
use crate::overlay::store::OverlayStore;

#[derive(Debug, Args)]
pub struct InitramfsArgs {
    #[command(subcommand)]
    command: InitramfsCommand,
}

#[derive(Debug, Subcommand)]
enum InitramfsCommand {
    /// Build the stage 1 (wwinit + NIC drivers) for one kernel.
    Build(BuildArgs),
}

#[derive(Debug, Args)]
struct BuildArgs {
    /// Image whose kernel modules to use.
    #[arg(value_name = "IMAGE", required_unless_present = "root")]
    image: Option<String>,
    /// A tree holding lib/modules/<version> instead of an image (e.g. an
    /// unpacked kernel .deb).
    #[arg(long, value_name = "DIR", conflicts_with = "image")]
    root: Option<PathBuf>,
    /// Kernel version (default: the image's boot kernel, or the only one).
    #[arg(short = 'k', long, value_name = "VERSION")]
    kernel_version: Option<String>,
    /// Module sets (virtio, e1000, server, rpi, ipmi) and module names,
    /// comma separated (default: every set).
    #[arg(short, long, value_delimiter = ',', value_name = "LIST")]
    modules: Vec<String>,
    /// The static wwinit (default: warewulf/wwinit of the wwinit overlay).
    #[arg(long, value_name = "FILE")]
    wwinit: Option<PathBuf>,
    /// Archive compression: xz, zst, gz or none.
    #[arg(long, default_value = "xz", value_parser = parse_compression)]
    compress: Compression,
    /// Write here instead of <wwprovisiondir>/initramfs/<version>.img.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    format: FormatArgs,
}

fn parse_compression(s: &str) -> Result<Compression, String> {
    Compression::from_name(s)
        .ok_or_else(|| format!("unsupported stage-1 compression {s:?} (want xz, zst, gz or none)"))
}

pub fn run(ctx: &Ctx, args: InitramfsArgs) -> Result<()> {
    match args.command {
        InitramfsCommand::Build(a) => build(ctx, a),
    }
}

/// The tree and kernel version to take modules from.
fn source(ctx: &Ctx, args: &BuildArgs) -> Result<(PathBuf, String)> {
    let (root, what) = match (&args.root, &args.image) {
        (Some(r), _) => (r.clone(), r.display().to_string()),
        (None, Some(name)) => {
            let store = ImageStore::new(&ctx.config.paths);
            (store.require(name)?, format!("image {name}"))
        }
        (None, None) => bail!("name an image or pass --root"),
    };
    let versions = stage1::module_versions(&root);
    let kver = match &args.kernel_version {
        Some(v) => v.clone(),
        None => {
            let boot = kernel::default_kernel(&kernel::find(&root))
                .and_then(|k| k.version.clone())
                .filter(|v| versions.contains(v));
            match (boot, versions.as_slice()) {
                (Some(v), _) => v,
                (None, [only]) => only.clone(),
                (None, []) => bail!("{what} has no lib/modules/<version> directory"),
                (None, many) => bail!(
                    "{what} has modules for several kernels ({}): choose one with -k",
                    many.join(", ")
                ),
            }
        }
    };
    let dir = stage1::modules_dir_in(&root, &kver).with_context(|| {
        format!(
            "{what} has no lib/modules/{kver} (kernels with modules: {})",
            if versions.is_empty() {
                "none".to_owned()
            } else {
                versions.join(", ")
            }
        )
    })?;
    Ok((dir, kver))
}

fn build(ctx: &Ctx, args: BuildArgs) -> Result<()> {
    let (modules_dir, kernel_version) = source(ctx, &args)?;
    let wwinit = match &args.wwinit {
        Some(p) => p.clone(),
        None => OverlayStore::new(&ctx.config.paths)
            .find("wwinit")
            .map(|o| o.rootfs.join("warewulf/wwinit"))
            .context("no wwinit overlay found: pass --wwinit FILE")?,
    };
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| stage1::default_output(&ctx.config.paths, &kernel_version));
    let opts = Stage1Options {
        modules_dir,
        kernel_version,
        wwinit,
        modules: args.modules.clone(),
        compression: args.compress,
        output,
    };
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} modules {elapsed}")
            .expect("constant template is valid"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let started = Instant::now();
    let report = stage1::build(&opts, &bar);
    bar.finish_and_clear();
    let report = report?;
    if args.format.print_structured(&report)? {
        return Ok(());
    }
    eprintln!(
        "built {} ({}, {}): {} modules, {} ({} uncompressed) in {:.2?}",
        report.output.display(),
        report.kernel_version,
        report.arch,
        report.modules.len(),
        HumanBytes(report.size),
        HumanBytes(report.uncompressed),
        started.elapsed()
    );
    if !report.not_found.is_empty() {
        eprintln!(
            "not in this kernel (skipped): {}",
            report.not_found.join(", ")
        );
    }
    Ok(())
}
