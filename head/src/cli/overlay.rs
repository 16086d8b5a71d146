//! `wwctl overlay`: list, show, edit and build overlays.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use initramfs::compress::Compression;
use serde::Serialize;

use super::Context as Ctx;
use super::output::{FormatArgs, Table};
use crate::overlay::build::{self, BuildOptions};
use crate::overlay::render::FileKind;
use crate::overlay::store::{self, EntryKind, OverlayStore};
use crate::overlay::{deps, render_overlay_for_node, render_text};

#[derive(Debug, Args)]
pub struct OverlayArgs {
    #[command(subcommand)]
    command: OverlayCommand,
}

#[derive(Debug, Subcommand)]
enum OverlayCommand {
    /// List overlays and their files.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Print a file of an overlay, or render a template for a node.
    #[command(visible_alias = "cat")]
    Show(ShowArgs),
    /// Show the template variables a file uses.
    Info(FileArgs),
    /// Create an empty site overlay.
    #[command(visible_alias = "new")]
    Create(NameArgs),
    /// Delete an overlay or a file of it.
    #[command(visible_alias = "rm", alias = "del", alias = "remove")]
    Delete(DeleteArgs),
    /// Edit a file of an overlay in $EDITOR.
    Edit(FileArgs),
    /// Copy a file of the head into an overlay.
    Import(ImportArgs),
    /// Create a directory in an overlay.
    Mkdir(MkdirArgs),
    /// Change the mode of a file of an overlay.
    Chmod(ChmodArgs),
    /// Change the owner of a file of an overlay.
    Chown(ChownArgs),
    /// Build the system and runtime images of nodes.
    Build(BuildArgs),
    /// Write a node's built image, as the node receives it, to standard output.
    Image(ImageArgs),
}

#[derive(Debug, Args)]
struct ImageArgs {
    #[arg(value_name = "NODE")]
    node: String,
    /// The runtime image (default: the system image).
    #[arg(long)]
    runtime: bool,
    /// Compression of the image: gz or zst.
    #[arg(long, default_value = "gz", value_parser = parse_compression)]
    compress: Compression,
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Overlays to list (default: all).
    #[arg(value_name = "OVERLAY")]
    names: Vec<String>,
    /// List every file of the overlays.
    #[arg(short, long)]
    all: bool,
    /// List files with mode and owner.
    #[arg(short, long)]
    long: bool,
    #[command(flatten)]
    format: FormatArgs,
}

#[derive(Debug, Args)]
struct ShowArgs {
    #[arg(value_name = "OVERLAY")]
    name: String,
    #[arg(value_name = "FILE")]
    file: String,
    /// Render the template for this node.
    #[arg(short, long, value_name = "NODE")]
    render: Option<String>,
}

#[derive(Debug, Args)]
struct FileArgs {
    #[arg(value_name = "OVERLAY")]
    name: String,
    #[arg(value_name = "FILE")]
    file: String,
}

#[derive(Debug, Args)]
struct NameArgs {
    #[arg(value_name = "OVERLAY")]
    name: String,
}

#[derive(Debug, Args)]
struct DeleteArgs {
    #[arg(value_name = "OVERLAY")]
    name: String,
    #[arg(value_name = "FILE")]
    file: Option<String>,
    /// Delete a non-empty overlay or directory.
    #[arg(short, long)]
    force: bool,
    /// Also delete parent directories left empty.
    #[arg(short, long)]
    parents: bool,
}

#[derive(Debug, Args)]
struct ImportArgs {
    #[arg(value_name = "OVERLAY")]
    name: String,
    /// File on the head to import.
    #[arg(value_name = "SOURCE")]
    source: PathBuf,
    /// Path in the overlay (default: SOURCE's path).
    #[arg(value_name = "DEST")]
    dest: Option<String>,
    /// Mode of the imported file (octal).
    #[arg(short, long, value_parser = parse_mode)]
    mode: Option<u32>,
    /// Create missing parent directories.
    #[arg(short, long)]
    parents: bool,
}

#[derive(Debug, Args)]
struct MkdirArgs {
    #[arg(value_name = "OVERLAY")]
    name: String,
    #[arg(value_name = "DIR")]
    dir: String,
    /// Mode of the directory (octal).
    #[arg(short, long, default_value = "755", value_parser = parse_mode)]
    mode: u32,
}

#[derive(Debug, Args)]
struct ChmodArgs {
    #[arg(value_name = "OVERLAY")]
    name: String,
    #[arg(value_name = "FILE")]
    file: String,
    #[arg(value_name = "MODE", value_parser = parse_mode)]
    mode: u32,
}

#[derive(Debug, Args)]
struct ChownArgs {
    #[arg(value_name = "OVERLAY")]
    name: String,
    #[arg(value_name = "FILE")]
    file: String,
    #[arg(value_name = "UID")]
    uid: String,
    #[arg(value_name = "GID")]
    gid: Option<String>,
}

#[derive(Debug, Args)]
struct BuildArgs {
    /// Nodes to build, hostlists allowed (default: all).
    #[arg(value_name = "NODE")]
    nodes: Vec<String>,
    /// Worker threads (default: one per core).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Compressions to produce: gz, zst (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "gz", value_parser = parse_compression)]
    compress: Vec<Compression>,
    /// Rebuild even when nothing changed.
    #[arg(short, long)]
    force: bool,
    /// Write the rendered overlays of each node to DIR/NODE/OVERLAY
    /// instead of building images.
    #[arg(short, long, value_name = "DIR")]
    output: Option<PathBuf>,
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("invalid mode {s:?} (octal, e.g. 0644)"))
}

fn parse_compression(s: &str) -> Result<Compression, String> {
    match Compression::from_name(s) {
        Some(c @ (Compression::Gzip | Compression::Zstd)) => Ok(c),
        _ => Err(format!("unknown compression {s:?} (gz, zst)")),
    }
}

pub fn run(ctx: &Ctx, args: OverlayArgs) -> Result<()> {
    let store = OverlayStore::new(&ctx.config.paths);
    match args.command {
        OverlayCommand::List(a) => list(&store, &a),
        OverlayCommand::Show(a) => show(ctx, &store, &a),
        OverlayCommand::Info(a) => info(&store, &a),
        OverlayCommand::Create(a) => {
            store.create(&a.name)?;
            Ok(())
        }
        OverlayCommand::Delete(a) => delete(&store, &a),
        OverlayCommand::Edit(a) => edit(&store, &a),
        OverlayCommand::Import(a) => import(&store, &a),
        OverlayCommand::Mkdir(a) => {
            let dir = store.writable(&a.name)?;
            let path = store::inside(&dir.rootfs, &a.dir)?;
            fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
            set_mode(&path, a.mode)
        }
        OverlayCommand::Chmod(a) => {
            let dir = store.writable(&a.name)?;
            let path = existing(&dir.rootfs, &a.name, &a.file)?;
            set_mode(&path, a.mode)
        }
        OverlayCommand::Chown(a) => chown(&store, &a),
        OverlayCommand::Build(a) => build_cmd(ctx, a),
        OverlayCommand::Image(a) => image(ctx, &a),
    }
}

/// The stored image can be a marker plus the node's own member (see
/// `overlay::composite`): this prints what the head serves for it.
fn image(ctx: &Ctx, args: &ImageArgs) -> Result<()> {
    use std::io::Write;
    let kind = if args.runtime {
        build::ImageKind::Runtime
    } else {
        build::ImageKind::System
    };
    let layout = build::Layout::new(&ctx.config);
    let ptr = layout.pointer(&args.node, kind, args.compress);
    if !ptr.exists() {
        bail!(
            "{} does not exist: node {} has no built {} image with {} compression (`wwctl overlay build {}`)",
            ptr.display(),
            args.node,
            if args.runtime { "runtime" } else { "system" },
            args.compress.extension(),
            args.node
        );
    }
    let bytes = crate::overlay::composite::read_image(&ptr)
        .with_context(|| format!("reading {}", ptr.display()))?;
    let mut out = std::io::stdout().lock();
    out.write_all(&bytes)
        .and_then(|()| out.flush())
        .context("writing to standard output")
}

#[derive(Serialize)]
struct OverlayRow {
    name: String,
    files: usize,
    site: bool,
    path: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    entries: Vec<EntryRow>,
}

#[derive(Serialize)]
struct EntryRow {
    path: String,
    mode: String,
    uid: u32,
    gid: u32,
    kind: &'static str,
}

fn list(store: &OverlayStore, args: &ListArgs) -> Result<()> {
    let dirs = if args.names.is_empty() {
        store.list()?
    } else {
        args.names
            .iter()
            .map(|n| store.require(n))
            .collect::<Result<Vec<_>>>()?
    };
    let mut rows = Vec::new();
    for d in dirs {
        let entries =
            store::scan(&d.rootfs).with_context(|| format!("reading {}", d.rootfs.display()))?;
        let detail = args.all || args.long;
        rows.push(OverlayRow {
            name: d.name.clone(),
            files: entries.len(),
            site: !d.shipped,
            path: d.rootfs.to_string_lossy().into_owned(),
            entries: if detail {
                entries
                    .iter()
                    .map(|e| EntryRow {
                        path: format!("/{}", e.path),
                        mode: format!("{:04o}", e.mode),
                        uid: e.uid,
                        gid: e.gid,
                        kind: match e.kind {
                            EntryKind::Dir => "dir",
                            EntryKind::File => "file",
                            EntryKind::Symlink(_) => "symlink",
                        },
                    })
                    .collect()
            } else {
                Vec::new()
            },
        });
    }
    if args.format.print_structured(&rows)? {
        return Ok(());
    }
    let mut t = if args.long {
        Table::new(["PERM MODE", "UID", "GID", "OVERLAY", "FILE PATH", "SITE"])
    } else {
        Table::new(["OVERLAY NAME", "FILES/DIRS", "SITE"])
    };
    for r in &rows {
        if args.long {
            for e in &r.entries {
                t.row([
                    e.mode.clone(),
                    e.uid.to_string(),
                    e.gid.to_string(),
                    r.name.clone(),
                    e.path.clone(),
                    r.site.to_string(),
                ]);
            }
        } else if args.all {
            if r.entries.is_empty() {
                t.row([r.name.clone(), String::new(), r.site.to_string()]);
            }
            for e in &r.entries {
                t.row([r.name.clone(), e.path.clone(), r.site.to_string()]);
            }
        } else {
            t.row([r.name.clone(), r.files.to_string(), r.site.to_string()]);
        }
    }
    t.print();
    Ok(())
}

fn existing(rootfs: &Path, name: &str, file: &str) -> Result<PathBuf> {
    let path = store::inside(rootfs, file)?;
    if fs::symlink_metadata(&path).is_err() {
        bail!("overlay {name}: {file} does not exist");
    }
    Ok(path)
}

fn show(ctx: &Ctx, store: &OverlayStore, args: &ShowArgs) -> Result<()> {
    if let Some(node) = &args.render {
        print!(
            "{}",
            render_text(&ctx.config, &args.name, &args.file, node)?
        );
        return Ok(());
    }
    let dir = store.require(&args.name)?;
    let path = existing(&dir.rootfs, &args.name, &args.file)?;
    let data = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    print!("{}", String::from_utf8_lossy(&data));
    Ok(())
}

fn info(store: &OverlayStore, args: &FileArgs) -> Result<()> {
    let dir = store.require(&args.name)?;
    let path = existing(&dir.rootfs, &args.name, &args.file)?;
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    wwtemplate::Template::parse(&args.file, &text)?;
    let refs = deps::scan(&text);
    let mut t = Table::new(["VARIABLE", "SCOPE"]);
    for f in &refs.fields {
        let scope = if deps::SITE_FIELDS.contains(&f.as_str()) {
            "site"
        } else {
            "node"
        };
        t.row([format!(".{f}"), scope.to_string()]);
    }
    if refs.whole {
        t.row([".".to_string(), "all".to_string()]);
    }
    t.print();
    println!(
        "rendered {}",
        if refs.node_independent() {
            "once per build (same for every node)"
        } else {
            "per node"
        }
    );
    Ok(())
}

fn delete(store: &OverlayStore, args: &DeleteArgs) -> Result<()> {
    let Some(file) = &args.file else {
        let dir = store.require(&args.name)?;
        if dir.shipped {
            bail!(
                "overlay {} is shipped with Ironwulf and cannot be deleted",
                args.name
            );
        }
        let top = store.site_dir().join(&args.name);
        let empty = store::scan(&dir.rootfs)
            .map(|e| e.is_empty())
            .unwrap_or(false);
        if !empty && !args.force {
            bail!("overlay {} is not empty (use --force)", args.name);
        }
        return fs::remove_dir_all(&top).with_context(|| format!("deleting {}", top.display()));
    };
    let dir = store.writable(&args.name)?;
    let path = existing(&dir.rootfs, &args.name, file)?;
    let meta = fs::symlink_metadata(&path)?;
    if meta.is_dir() {
        if args.force {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_dir(&path)
        }
        .with_context(|| {
            format!(
                "deleting {} (use --force for a non-empty directory)",
                path.display()
            )
        })?;
    } else {
        fs::remove_file(&path).with_context(|| format!("deleting {}", path.display()))?;
    }
    if args.parents {
        let mut p = path.parent();
        while let Some(d) = p {
            if d == dir.rootfs || fs::remove_dir(d).is_err() {
                break;
            }
            p = d.parent();
        }
    }
    Ok(())
}

fn edit(store: &OverlayStore, args: &FileArgs) -> Result<()> {
    let dir = store.writable(&args.name)?;
    let path = store::inside(&dir.rootfs, &args.file)?;
    let old = fs::read(&path).unwrap_or_default();
    let mode = fs::metadata(&path).map_or(0o644, |m| m.permissions().mode() & 0o7777);
    let tmp = tempfile::Builder::new()
        .prefix("wwctl-overlay-")
        .suffix(&format!(
            "-{}",
            path.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ))
        .tempfile()
        .context("creating a temp file to edit")?;
    fs::write(tmp.path(), &old).context("writing the temp file")?;
    super::editor::edit(tmp.path()).with_context(|| format!("{} unchanged", args.file))?;
    let new = fs::read(tmp.path()).context("reading the edited file")?;
    if new == old {
        return Ok(());
    }
    if args.file.ends_with(".ww") {
        wwtemplate::Template::parse(
            &path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            &String::from_utf8_lossy(&new),
        )
        .with_context(|| format!("overlay {}: {} not saved", args.name, args.file))?;
    }
    crate::fsutil::write_atomic(&path, &new, mode)
}

fn import(store: &OverlayStore, args: &ImportArgs) -> Result<()> {
    let data =
        fs::read(&args.source).with_context(|| format!("reading {}", args.source.display()))?;
    let dest = args
        .dest
        .clone()
        .unwrap_or_else(|| args.source.to_string_lossy().into_owned());
    let dir = store.writable(&args.name)?;
    let path = store::inside(&dir.rootfs, &dest)?;
    let parent = path
        .parent()
        .expect("a path inside the rootfs has a parent");
    if !parent.is_dir() {
        if !args.parents {
            bail!(
                "overlay {}: {} does not exist (use --parents)",
                args.name,
                parent.display()
            );
        }
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let mode = match args.mode {
        Some(m) => m,
        None => fs::metadata(&args.source)?.permissions().mode() & 0o7777,
    };
    crate::fsutil::write_atomic(&path, &data, mode)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("changing the mode of {}", path.display()))
}

fn chown(store: &OverlayStore, args: &ChownArgs) -> Result<()> {
    let dir = store.writable(&args.name)?;
    let path = existing(&dir.rootfs, &args.name, &args.file)?;
    let uid = match args.uid.parse::<u32>() {
        Ok(n) => n,
        Err(_) => nix::unistd::User::from_name(&args.uid)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw())
            .with_context(|| format!("unknown user {}", args.uid))?,
    };
    let gid = match &args.gid {
        None => None,
        Some(g) => Some(match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => nix::unistd::Group::from_name(g)
                .ok()
                .flatten()
                .map(|g| g.gid.as_raw())
                .with_context(|| format!("unknown group {g}"))?,
        }),
    };
    std::os::unix::fs::lchown(&path, Some(uid), gid)
        .with_context(|| format!("changing the owner of {}", path.display()))
}

fn build_cmd(ctx: &Ctx, args: BuildArgs) -> Result<()> {
    if let Some(out) = &args.output {
        return write_trees(ctx, &args.nodes, out);
    }
    let opts = BuildOptions {
        nodes: args.nodes,
        workers: args.workers,
        compressions: args.compress,
        force: args.force,
    };
    build::check_options(&opts)?;
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} nodes {elapsed}")
            .expect("constant template is valid"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let started = Instant::now();
    let report = build::build(&ctx.config, &opts, &bar)?;
    bar.finish_and_clear();
    eprintln!(
        "built {} images of {} nodes ({} unchanged, {} new blobs, {} removed) in {:.2?}",
        report.images_built,
        report.nodes_built,
        report.images_unchanged,
        report.blobs_written,
        report.blobs_removed,
        started.elapsed()
    );
    if !report.errors.is_empty() {
        for e in &report.errors {
            eprintln!("error: {e}");
        }
        bail!("{} overlay build errors", report.errors.len());
    }
    Ok(())
}

/// `overlay build --output DIR`: rendered trees instead of images.
fn write_trees(ctx: &Ctx, nodes: &[String], out: &Path) -> Result<()> {
    let all = build::load_nodes(&ctx.config)?;
    let chosen: Vec<_> = all
        .iter()
        .filter(|n| nodes.is_empty() || nodes.contains(&n.id))
        .collect();
    let mut errors = Vec::new();
    for n in chosen {
        let mut names = build::ImageKind::System.overlays(n);
        names.extend(build::ImageKind::Runtime.overlays(n));
        names.dedup();
        for ov in names {
            match render_overlay_for_node(&ctx.config, &ov, &n.id) {
                Ok(files) => {
                    let base = out.join(&n.id).join(&ov);
                    for f in files {
                        let p = base.join(&f.path);
                        if let Some(parent) = p.parent() {
                            fs::create_dir_all(parent)?;
                        }
                        match &f.kind {
                            FileKind::Dir => fs::create_dir_all(&p)?,
                            FileKind::File(d) => {
                                fs::write(&p, d)?;
                                set_mode(&p, f.mode)?;
                            }
                            FileKind::Symlink(t) => {
                                let _ = fs::remove_file(&p);
                                std::os::unix::fs::symlink(t, &p)?;
                            }
                        }
                    }
                }
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
    }
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("error: {e}");
        }
        bail!("{} overlay render errors", errors.len());
    }
    Ok(())
}
