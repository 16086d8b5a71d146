//! `wwctl image` (aliases `container`, `vnfs`): build and list node images.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use initramfs::compress::Compression;
use serde::Serialize;

use super::Context as Ctx;
use super::output::{FormatArgs, Table, utc_time};
use crate::image::{self, BuildOptions, BuildOutcome, ImageManifest, ImageStore, kernel};

#[derive(Debug, Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Build the archives nodes boot from an image tree.
    Build(BuildArgs),
    /// List images.
    #[command(visible_alias = "ls")]
    List(ListArgs),
}

#[derive(Debug, Args)]
struct BuildArgs {
    /// Images to build.
    #[arg(value_name = "IMAGE", required_unless_present = "all")]
    names: Vec<String>,
    /// Build every image.
    #[arg(short, long, conflicts_with = "names")]
    all: bool,
    /// Rebuild even when the tree is unchanged.
    #[arg(short, long)]
    force: bool,
    /// Compressions to produce: gz, zst (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "gz", value_parser = parse_compression)]
    compress: Vec<Compression>,
    /// Compression level (default: gzip 6, zstd 3).
    #[arg(long)]
    level: Option<i32>,
    /// Compression threads (default: all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

#[derive(Debug, Args)]
struct ListArgs {
    #[command(flatten)]
    format: FormatArgs,
}

fn parse_compression(s: &str) -> Result<Compression, String> {
    match Compression::from_name(s) {
        Some(c @ (Compression::Gzip | Compression::Zstd)) => Ok(c),
        _ => Err(format!(
            "unsupported image compression {s:?} (want gz or zst)"
        )),
    }
}

pub fn run(ctx: &Ctx, args: ImageArgs) -> Result<()> {
    let store = ImageStore::new(&ctx.config.paths);
    match args.command {
        ImageCommand::Build(a) => build(&store, a),
        ImageCommand::List(a) => list(&store, &a),
    }
}

fn build(store: &ImageStore, args: BuildArgs) -> Result<()> {
    let names = if args.all { store.names()? } else { args.names };
    if names.is_empty() {
        bail!("no images to build");
    }
    let mut compressions = args.compress;
    compressions.dedup();
    if args.level.is_some() && compressions.len() > 1 {
        bail!("--level means different things for gzip and zstd: build one compression at a time");
    }
    let opts = BuildOptions {
        force: args.force,
        compressions,
        source_date_epoch: source_date_epoch()?,
        level: args.level,
        threads: args.threads,
    };
    let mut failed = 0;
    for name in &names {
        let bar = ProgressBar::new(0).with_style(
            ProgressStyle::with_template(
                "{msg:20} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        let result = image::build(store, name, &opts, &bar);
        bar.finish_and_clear();
        match result {
            Ok(BuildOutcome::UpToDate(m)) => {
                println!("{name}: up to date (built {})", utc_time(m.built_at));
            }
            Ok(BuildOutcome::Built(m)) => {
                let sizes: Vec<String> = m
                    .artifacts
                    .iter()
                    .map(|a| format!("{} {}", a.compression, HumanBytes(a.size)))
                    .collect();
                println!(
                    "{name}: built {} entries, {} in {:.1} s ({})",
                    m.entries,
                    HumanBytes(m.tree_bytes),
                    m.build_seconds,
                    sizes.join(", ")
                );
            }
            Err(e) => {
                eprintln!("error: image {name}: {e:#}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} image builds failed", names.len());
    }
    Ok(())
}

/// Honours `SOURCE_DATE_EPOCH` for reproducible builds.
fn source_date_epoch() -> Result<Option<u64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse()
            .map(Some)
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")),
        Err(_) => Ok(None),
    }
}

/// One row of `image list`.
#[derive(Debug, Serialize)]
struct ImageRow {
    name: String,
    rootfs: String,
    kernel_version: Option<String>,
    built: Option<ImageManifest>,
}

fn list(store: &ImageStore, args: &ListArgs) -> Result<()> {
    let mut rows = Vec::new();
    for name in store.names()? {
        let built = ImageManifest::load(&store.manifest(&name))?;
        let kernel_version = match &built {
            Some(m) => m.kernel_version.clone(),
            None => {
                let kernels = kernel::find(&store.rootfs(&name));
                kernel::default_kernel(&kernels).and_then(|k| k.version.clone())
            }
        };
        rows.push(ImageRow {
            rootfs: store.rootfs(&name).display().to_string(),
            name,
            kernel_version,
            built,
        });
    }
    if args.format.print_structured(&rows)? {
        return Ok(());
    }
    let mut table = Table::new(["IMAGE NAME", "BUILT", "SIZE", "KERNEL"]);
    for r in &rows {
        let (built, size) = match &r.built {
            Some(m) => (
                utc_time(m.built_at),
                m.artifacts
                    .iter()
                    .map(|a| format!("{} ({})", HumanBytes(a.size), a.compression))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            None => ("not built".to_owned(), String::new()),
        };
        table.row([
            r.name.clone(),
            built,
            size,
            r.kernel_version.clone().unwrap_or_default(),
        ]);
    }
    table.print();
    Ok(())
}
