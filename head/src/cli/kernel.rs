//! `wwctl kernel`: kernels kept apart from images, for nodes whose
//! `kernel: version` names a kernel their image does not have.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

use super::Context as Ctx;
use super::output::{FormatArgs, Table, utc_time};
use crate::image::ImageStore;
use crate::image::kernel_import::KernelStore;

#[derive(Debug, Args)]
pub struct KernelArgs {
    #[command(subcommand)]
    command: KernelCommand,
}

#[derive(Debug, Subcommand)]
enum KernelCommand {
    /// Import a kernel and its modules (from the head, an image or a tree).
    Import(ImportArgs),
    /// List imported kernels.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Delete imported kernels.
    #[command(visible_alias = "rm")]
    Delete(DeleteArgs),
}

#[derive(Debug, Args)]
struct ImportArgs {
    /// Kernel version, e.g. 6.1.0-28-amd64.
    version: String,
    /// Take the kernel from this image instead of the head.
    #[arg(long, conflicts_with = "root")]
    image: Option<String>,
    /// Take the kernel from this directory tree instead of the head.
    #[arg(long)]
    root: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ListArgs {
    #[command(flatten)]
    format: FormatArgs,
}

#[derive(Debug, Args)]
struct DeleteArgs {
    #[arg(required = true)]
    versions: Vec<String>,
}

pub fn run(ctx: &Ctx, args: KernelArgs) -> Result<()> {
    let kernels = KernelStore::new(&ctx.config.paths);
    match args.command {
        KernelCommand::Import(a) => {
            let (root, source) = match (&a.image, &a.root) {
                (Some(name), _) => (
                    ImageStore::new(&ctx.config.paths).require(name)?,
                    format!("image {name}"),
                ),
                (None, Some(dir)) => (dir.clone(), dir.display().to_string()),
                (None, None) => (PathBuf::from("/"), "the head".to_owned()),
            };
            let bar = ProgressBar::new(0).with_style(
                ProgressStyle::with_template("{msg:28} [{bar:30}] {bytes}/{total_bytes} {eta}")
                    .expect("static template")
                    .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            let result = kernels.import(&root, &source, &a.version, &bar);
            bar.finish_and_clear();
            let r = result?;
            println!(
                "kernel {}: imported from {} ({}, modules {} from {})",
                r.version,
                r.source,
                r.kernel_path,
                HumanBytes(r.kmods_size),
                r.modules_path
            );
            Ok(())
        }
        KernelCommand::List(a) => {
            let list = kernels.list()?;
            if a.format.print_structured(&list)? {
                return Ok(());
            }
            let mut t = Table::new(["VERSION", "SOURCE", "KMODS", "IMPORTED"]);
            for r in &list {
                t.row([
                    r.version.clone(),
                    r.source.clone(),
                    HumanBytes(r.kmods_size).to_string(),
                    utc_time(r.imported_at),
                ]);
            }
            t.print();
            Ok(())
        }
        KernelCommand::Delete(a) => {
            for v in &a.versions {
                kernels.delete(v)?;
                println!("deleted kernel {v}");
            }
            Ok(())
        }
    }
}
