//! `wwctl image` (aliases `container`, `vnfs`): build and list node images.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use initramfs::compress::Compression;
use serde::Serialize;

use super::Context as Ctx;
use super::output::{FormatArgs, Table, utc_time};
use crate::image::exec::{Bind, ExecRequest, Outcome};
use crate::image::import::{self, ImportOptions, Source, SourceRecord};
use crate::image::oci::Platform;
use crate::image::store::SessionLock;
use crate::image::{self, BuildOptions, BuildOutcome, ImageManifest, ImageStore, kernel};
use crate::nodedb::NodeDb;

#[derive(Debug, Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Build the archives nodes boot from an image tree.
    Build(BuildArgs),
    /// Import an image from a registry, an archive or a chroot directory.
    Import(ImportArgs),
    /// Run a command in an image; changes are kept only if it exits 0.
    Exec(ExecArgs),
    /// Start a shell in an image; changes are kept only if it exits 0.
    Shell(ShellArgs),
    /// List images.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show one image: source, build, kernels.
    Show(ShowArgs),
    /// List the kernels found in images.
    Kernels(KernelsArgs),
    /// Copy an image.
    #[command(visible_alias = "cp")]
    Copy(CopyArgs),
    /// Rename an image.
    #[command(visible_alias = "mv")]
    Rename(CopyArgs),
    /// Delete images (tree and built archives).
    #[command(visible_alias = "rm")]
    Delete(DeleteArgs),
    /// Give an image the head's user and group ids.
    Syncuser(SyncuserArgs),
}

#[derive(Debug, Args)]
struct ImportArgs {
    /// docker://HOST/REPO:TAG, oci://…, docker-archive:FILE, oci-archive:FILE,
    /// oci:DIR, a tarball (.tar, .tar.gz, .tar.zst) or a chroot directory.
    source: String,
    /// Image name (default: derived from the source).
    name: Option<String>,
    /// Replace an existing image.
    #[arg(short, long)]
    force: bool,
    /// Apply the source on top of an existing image.
    #[arg(short, long, conflicts_with = "force")]
    update: bool,
    /// Build the image right after importing it.
    #[arg(short, long)]
    build: bool,
    /// Platform to pull from a multi-platform image (os/arch[/variant]).
    #[arg(long)]
    platform: Option<String>,
    /// Talk plain HTTP to the registry.
    #[arg(long, env = "WAREWULF_OCI_NOHTTPS")]
    nohttps: bool,
    /// Registry user (password from WAREWULF_OCI_PASSWORD).
    #[arg(long)]
    username: Option<String>,
    /// Give the image the head's user and group ids (as `image syncuser --write`).
    #[arg(long)]
    syncuser: bool,
}

#[derive(Debug, Args)]
struct SessionArgs {
    /// Bind mount SOURCE[:DEST[:ro]] into the image (repeatable).
    #[arg(short = 'b', long = "bind", value_name = "SOURCE[:DEST[:ro]]")]
    binds: Vec<String>,
    /// Rebuild the image after committing changes.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    build: bool,
    /// After committing, give the image the head's user and group ids.
    #[arg(long)]
    syncuser: bool,
}

#[derive(Debug, Args)]
struct ExecArgs {
    /// Image to run in.
    name: String,
    #[command(flatten)]
    session: SessionArgs,
    /// Command and arguments (after --).
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

#[derive(Debug, Args)]
struct ShellArgs {
    /// Image to run in.
    name: String,
    #[command(flatten)]
    session: SessionArgs,
}

#[derive(Debug, Args)]
struct ShowArgs {
    name: String,
    #[command(flatten)]
    format: FormatArgs,
}

#[derive(Debug, Args)]
struct KernelsArgs {
    /// Images to look in (default: all).
    names: Vec<String>,
    #[command(flatten)]
    format: FormatArgs,
}

#[derive(Debug, Args)]
struct CopyArgs {
    from: String,
    to: String,
    /// Build the new image.
    #[arg(short, long)]
    build: bool,
}

#[derive(Debug, Args)]
struct DeleteArgs {
    #[arg(required = true)]
    names: Vec<String>,
    /// Delete even when nodes or profiles use the image.
    #[arg(short, long)]
    force: bool,
}

#[derive(Debug, Args)]
struct SyncuserArgs {
    name: String,
    /// Write the changes (default: only show them).
    #[arg(short, long)]
    write: bool,
    /// Rebuild the image after writing.
    #[arg(short, long)]
    build: bool,
    #[command(flatten)]
    format: FormatArgs,
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
        ImageCommand::Import(a) => import(ctx, &store, a),
        ImageCommand::Exec(a) => exec(ctx, &store, &a.name, &a.session, a.command, false),
        ImageCommand::Shell(a) => {
            let shell = ["/bin/bash", "/bin/sh"]
                .into_iter()
                .find(|s| store.rootfs(&a.name).join(&s[1..]).exists())
                .unwrap_or("/bin/sh");
            exec(
                ctx,
                &store,
                &a.name,
                &a.session,
                vec![shell.to_owned()],
                true,
            )
        }
        ImageCommand::List(a) => list(&store, &a),
        ImageCommand::Show(a) => show(&store, &a),
        ImageCommand::Kernels(a) => kernels(&store, &a),
        ImageCommand::Copy(a) => copy(&store, &a, false),
        ImageCommand::Rename(a) => copy(&store, &a, true),
        ImageCommand::Delete(a) => delete(ctx, &store, &a),
        ImageCommand::Syncuser(a) => syncuser(&store, &a),
    }
}

/// Builds one image with default options (after import, exec, copy, syncuser).
fn build_one(store: &ImageStore, name: &str) -> Result<()> {
    build(
        store,
        BuildArgs {
            names: vec![name.to_owned()],
            all: false,
            force: false,
            compress: vec![Compression::Gzip],
            level: None,
            threads: 0,
        },
    )
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

/// The image name an import source suggests: the repository's or file's
/// last component, without tag and archive extensions.
fn default_name(source: &Source) -> String {
    let raw = match source {
        Source::Registry(r) => r
            .repository
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned(),
        Source::Chroot(p)
        | Source::Tarball(p)
        | Source::DockerArchive(p)
        | Source::OciArchive(p)
        | Source::OciLayout(p) => p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let mut name = raw.as_str();
    for ext in [".gz", ".zst", ".tgz", ".tar", ".oci"] {
        name = name.strip_suffix(ext).unwrap_or(name);
    }
    name.to_owned()
}

fn import(ctx: &Ctx, store: &ImageStore, args: ImportArgs) -> Result<()> {
    let source = Source::parse(&args.source)?;
    let name = match args.name {
        Some(n) => n,
        None => default_name(&source),
    };
    let platform = match &args.platform {
        Some(p) => Platform::parse(p)?,
        None => Platform::host(),
    };
    let opts = ImportOptions {
        force: args.force,
        update: args.update,
        platform,
        nohttps: args.nohttps,
        credentials: import::credentials(args.username),
        cachedir: ctx.config.paths.cachedir.clone(),
    };
    let report = import::import(store, &source, &name, &opts)
        .with_context(|| format!("importing {} as image {name}", args.source))?;
    println!(
        "{name}: imported {} ({} layer(s), {} entries, {})",
        report.record.source,
        report.record.layers,
        report.entries,
        HumanBytes(report.bytes)
    );
    if args.syncuser {
        sync_users(store, &name)?;
    }
    if args.build {
        build_one(store, &name)?;
    }
    Ok(())
}

/// `--syncuser`: writes the head's ids into the image and says what changed.
fn sync_users(store: &ImageStore, name: &str) -> Result<()> {
    let rootfs = store.require(name)?;
    let _lock = SessionLock::acquire(store, name)?;
    let report = image::syncuser::syncuser(&rootfs, Path::new("/etc"), true)?;
    println!(
        "{name}: syncuser made {} change(s), re-owned {} file(s)",
        report.changes.len(),
        report.files_chowned
    );
    Ok(())
}

fn exec(
    ctx: &Ctx,
    store: &ImageStore,
    name: &str,
    session: &SessionArgs,
    argv: Vec<String>,
    shell: bool,
) -> Result<()> {
    let mut binds: Vec<Bind> = ctx
        .config
        .image_mounts
        .iter()
        .map(Bind::from_config)
        .collect();
    for b in &session.binds {
        binds.push(Bind::parse(b)?);
    }
    let mut env = Vec::new();
    if let Ok(term) = std::env::var("TERM") {
        env.push(("TERM".to_owned(), term));
    }
    if shell {
        eprintln!(
            "Image {name}: changes are saved when the shell exits 0 (`exit`), \
             and discarded on a non-zero exit (`exit 1`)."
        );
    }
    let req = ExecRequest { argv, binds, env };
    let result = image::exec::exec(store, name, &req)?;
    match result.outcome {
        Outcome::Committed { changes } => {
            eprintln!("Image {name}: exit 0, committed {changes} change(s).");
            if session.syncuser {
                sync_users(store, name)?;
            }
            if (changes > 0 || session.syncuser) && session.build {
                build_one(store, name)?;
            }
        }
        Outcome::Discarded => {
            eprintln!(
                "Image {name}: exit status {}, changes discarded.",
                result.code()
            );
            std::process::exit(result.code().clamp(1, 255));
        }
    }
    Ok(())
}

/// `image show`.
#[derive(Debug, Serialize)]
struct ImageShow {
    name: String,
    rootfs: String,
    source: Option<SourceRecord>,
    kernels: Vec<kernel::Kernel>,
    default_kernel: Option<String>,
    built: Option<ImageManifest>,
}

fn show(store: &ImageStore, args: &ShowArgs) -> Result<()> {
    let rootfs = store.require(&args.name)?;
    let kernels = kernel::find(&rootfs);
    let info = ImageShow {
        name: args.name.clone(),
        rootfs: rootfs.display().to_string(),
        source: SourceRecord::load(store, &args.name),
        default_kernel: kernel::default_kernel(&kernels).map(|k| k.path.clone()),
        kernels,
        built: ImageManifest::load(&store.manifest(&args.name))?,
    };
    if args.format.print_structured(&info)? {
        return Ok(());
    }
    let mut t = Table::new(["FIELD", "VALUE"]);
    t.row(["Name".to_owned(), info.name.clone()]);
    t.row(["Rootfs".to_owned(), info.rootfs.clone()]);
    if let Some(s) = &info.source {
        t.row(["Source".to_owned(), s.source.clone()]);
        if let Some(d) = &s.digest {
            t.row(["Digest".to_owned(), d.clone()]);
        }
        t.row(["Imported".to_owned(), utc_time(s.imported_at)]);
    }
    for k in &info.kernels {
        let mark = if Some(&k.path) == info.default_kernel.as_ref() {
            " (default)"
        } else {
            ""
        };
        t.row(["Kernel".to_owned(), format!("{}{mark}", k.path)]);
    }
    match &info.built {
        Some(m) => {
            t.row(["Built".to_owned(), utc_time(m.built_at)]);
            for a in &m.artifacts {
                t.row([
                    "Artifact".to_owned(),
                    format!("{} {} sha256:{}", a.file, HumanBytes(a.size), a.sha256),
                ]);
            }
        }
        None => t.row(["Built".to_owned(), "no".to_owned()]),
    }
    t.print();
    Ok(())
}

/// One row of `image kernels`.
#[derive(Debug, Serialize)]
struct KernelRow {
    image: String,
    path: String,
    version: Option<String>,
    default: bool,
}

fn kernels(store: &ImageStore, args: &KernelsArgs) -> Result<()> {
    let names = if args.names.is_empty() {
        store.names()?
    } else {
        args.names.clone()
    };
    let mut rows = Vec::new();
    for name in names {
        let rootfs = store.require(&name)?;
        let found = kernel::find(&rootfs);
        let def = kernel::default_kernel(&found).map(|k| k.path.clone());
        for k in found {
            rows.push(KernelRow {
                image: name.clone(),
                default: Some(&k.path) == def.as_ref(),
                path: k.path,
                version: k.version,
            });
        }
    }
    if args.format.print_structured(&rows)? {
        return Ok(());
    }
    let mut t = Table::new(["IMAGE", "KERNEL", "VERSION", "DEFAULT"]);
    for r in &rows {
        t.row([
            r.image.clone(),
            r.path.clone(),
            r.version.clone().unwrap_or_default(),
            if r.default {
                "yes".into()
            } else {
                String::new()
            },
        ]);
    }
    t.print();
    Ok(())
}

fn copy(store: &ImageStore, args: &CopyArgs, rename: bool) -> Result<()> {
    if rename {
        image::admin::rename(store, &args.from, &args.to)?;
        println!("renamed image {} to {}", args.from, args.to);
    } else {
        image::admin::copy(store, &args.from, &args.to)?;
        println!("copied image {} to {}", args.from, args.to);
    }
    if args.build {
        build_one(store, &args.to)?;
    }
    Ok(())
}

fn delete(ctx: &Ctx, store: &ImageStore, args: &DeleteArgs) -> Result<()> {
    let users = if args.force {
        Vec::new()
    } else {
        let db = NodeDb::load(&ctx.config.paths.nodes_conf())?;
        db.merged_all()
            .into_iter()
            .filter_map(|n| n.conf.image_name.clone().map(|i| (n.id.clone(), i)))
            .collect::<Vec<_>>()
    };
    for name in &args.names {
        let using: Vec<&str> = users
            .iter()
            .filter(|(_, i)| i == name)
            .map(|(n, _)| n.as_str())
            .collect();
        if !using.is_empty() {
            bail!(
                "image {name} is used by node(s) {}: change them first or use --force",
                using.join(", ")
            );
        }
    }
    for name in &args.names {
        image::admin::delete(store, name)?;
        println!("deleted image {name}");
    }
    Ok(())
}

fn syncuser(store: &ImageStore, args: &SyncuserArgs) -> Result<()> {
    let rootfs = store.require(&args.name)?;
    let lock = SessionLock::acquire(store, &args.name)?;
    let report = image::syncuser::syncuser(&rootfs, Path::new("/etc"), args.write)?;
    if !args.format.print_structured(&report)? {
        let mut t = Table::new(["KIND", "NAME", "IMAGE ID", "NEW ID", "WHY"]);
        for c in &report.changes {
            t.row([
                c.kind.to_owned(),
                c.name.clone(),
                c.old_id
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| "-".into()),
                c.new_id.to_string(),
                c.reason.to_owned(),
            ]);
        }
        t.print();
        let summary: Vec<String> = image::syncuser::summary(&report)
            .into_iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        if report.changes.is_empty() {
            println!("{}: users and groups already match the head", args.name);
        } else if args.write {
            println!(
                "{}: wrote {} change(s) ({}), re-owned {} file(s)",
                args.name,
                report.changes.len(),
                summary.join(", "),
                report.files_chowned
            );
        } else {
            println!(
                "{}: {} change(s) needed; run with --write to apply",
                args.name,
                report.changes.len()
            );
        }
    }
    if args.write && args.build && !report.changes.is_empty() {
        drop(lock);
        build_one(store, &args.name)?;
    }
    Ok(())
}
