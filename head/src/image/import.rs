//! `wwctl image import SOURCE NAME`: a chroot directory, a tarball, a
//! docker-archive, an OCI layout or oci-archive, or a registry reference
//! becomes `<wwchrootdir>/NAME/rootfs`.
//!
//! The new tree is assembled in a hidden staging directory next to the image
//! (`.NAME.import-PID`), synced, and renamed into place only when complete;
//! a failed or interrupted import leaves the old image as it was. `--update`
//! stages a copy of the existing tree and applies the source on top.

use std::fs;
use std::io::{BufReader, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use super::layer::{self, LayerOptions};
use super::oci::{self, Blobs, DirBlobs, Index, Manifest, Platform, TarBlobs, Verified};
use super::registry::{self, BlobCache, Client, Credentials, Reference};
use super::store::{ImageStore, SessionLock, validate_name};
use crate::fsutil;

/// Symlinks followed when checking for `/bin/sh` inside a chroot.
const MAX_SYMLINKS: usize = 40;
/// File recording where an image came from, beside its `rootfs/`.
pub const SOURCE_FILE: &str = "source.json";

/// What to import from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Chroot(PathBuf),
    Tarball(PathBuf),
    DockerArchive(PathBuf),
    OciArchive(PathBuf),
    OciLayout(PathBuf),
    Registry(Reference),
}

impl Source {
    /// `docker://`/`oci://` (registry), `docker-archive:`, `oci-archive:`,
    /// `oci:` (layout) and `file://` prefixes as skopeo spells them; a bare
    /// path is looked at to decide.
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(r) = s
            .strip_prefix("docker://")
            .or_else(|| s.strip_prefix("oci://"))
        {
            return Ok(Self::Registry(Reference::parse(r)?));
        }
        if let Some(p) = s.strip_prefix("docker-archive:") {
            return Ok(Self::DockerArchive(p.into()));
        }
        if let Some(p) = s.strip_prefix("oci-archive:") {
            return Ok(Self::OciArchive(p.into()));
        }
        if let Some(p) = s.strip_prefix("oci:") {
            return Ok(Self::OciLayout(p.into()));
        }
        let path = PathBuf::from(s.strip_prefix("file://").unwrap_or(s));
        let meta = fs::metadata(&path).with_context(|| {
            format!("image source {s:?}: no such file or directory (registries need docker://)")
        })?;
        if meta.is_dir() {
            if path.join("oci-layout").is_file() && path.join("index.json").is_file() {
                return Ok(Self::OciLayout(path));
            }
            return Ok(Self::Chroot(path));
        }
        // A tar file: decide by what it holds at the top.
        let top = top_level_markers(&path)
            .with_context(|| format!("reading {} as a tar archive", path.display()))?;
        Ok(
            if top.contains("oci-layout") && top.contains("index.json") {
                Self::OciArchive(path)
            } else if top.contains("manifest.json") {
                Self::DockerArchive(path)
            } else {
                Self::Tarball(path)
            },
        )
    }

    fn describe(&self) -> String {
        match self {
            Self::Chroot(p) => format!("chroot {}", p.display()),
            Self::Tarball(p) => format!("tarball {}", p.display()),
            Self::DockerArchive(p) => format!("docker-archive {}", p.display()),
            Self::OciArchive(p) => format!("oci-archive {}", p.display()),
            Self::OciLayout(p) => format!("OCI layout {}", p.display()),
            Self::Registry(r) => format!("docker://{r}"),
        }
    }
}

/// How to import.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// Replace an existing image.
    pub force: bool,
    /// Apply the source on top of an existing image.
    pub update: bool,
    pub platform: Platform,
    /// Talk plain HTTP to the registry.
    pub nohttps: bool,
    pub credentials: Option<Credentials>,
    /// `<cachedir>` from warewulf.conf: blobs are cached below it.
    pub cachedir: PathBuf,
}

/// Where an image came from, kept as `source.json` for `image show`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SourceRecord {
    pub source: String,
    /// Manifest digest for registry and OCI sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    pub imported_at: u64,
    #[serde(default)]
    pub layers: usize,
}

impl SourceRecord {
    pub fn load(store: &ImageStore, name: &str) -> Option<Self> {
        let text = fs::read(store.image_dir(name).join(SOURCE_FILE)).ok()?;
        serde_json::from_slice(&text).ok()
    }
}

/// What an import did.
#[derive(Clone, Debug)]
pub struct ImportReport {
    pub record: SourceRecord,
    pub bytes: u64,
    pub entries: u64,
}

/// Imports `source` as image `name`.
pub fn import(
    store: &ImageStore,
    source: &Source,
    name: &str,
    opts: &ImportOptions,
) -> Result<ImportReport> {
    validate_name(name)?;
    if opts.force && opts.update {
        bail!("--force replaces and --update adds to an image: choose one");
    }
    let _lock = SessionLock::acquire(store, name)?;
    let exists = store.rootfs(name).is_dir();
    if exists && !opts.force && !opts.update {
        bail!("image {name} already exists: use --force to replace it or --update to add to it");
    }
    if opts.update && !exists {
        bail!("image {name} does not exist, so --update has nothing to add to");
    }
    let staging = Staging::new(store, name)?;
    let rootfs = staging.rootfs();
    if opts.update {
        copy_tree(&store.rootfs(name), &rootfs)?;
    }
    let mut report = ImportReport {
        record: SourceRecord {
            source: source.describe(),
            digest: None,
            imported_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            layers: 0,
        },
        bytes: 0,
        entries: 0,
    };
    match source {
        Source::Chroot(dir) => {
            if !resolves_in_root(dir, "bin/sh") {
                bail!(
                    "{} does not look like an image: it has no /bin/sh",
                    dir.display()
                );
            }
            copy_tree(dir, &rootfs)?;
        }
        Source::Tarball(path) => {
            let file =
                fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let size = file.metadata().map(|m| m.len()).unwrap_or(0);
            let bar = bar(size, "unpacking", true);
            let input = oci::decompress(bar.wrap_read(file))
                .with_context(|| format!("reading {}", path.display()))?;
            let stats = layer::apply(input, &rootfs, &LayerOptions { whiteouts: false })
                .with_context(|| format!("unpacking {}", path.display()))?;
            bar.finish_and_clear();
            report.bytes = stats.bytes;
            report.entries = stats.entries;
            report.record.layers = 1;
        }
        Source::DockerArchive(path) => {
            let tar = plain_tar(path, &opts.cachedir)?;
            let blobs = TarBlobs::open(tar.path())?;
            docker_archive(&blobs, &rootfs, &mut report)
                .with_context(|| format!("importing docker-archive {}", path.display()))?;
        }
        Source::OciArchive(path) => {
            let tar = plain_tar(path, &opts.cachedir)?;
            let blobs = TarBlobs::open(tar.path())?;
            oci_layout(&blobs, &rootfs, opts, &mut report)
                .with_context(|| format!("importing oci-archive {}", path.display()))?;
        }
        Source::OciLayout(dir) => {
            let blobs = DirBlobs { root: dir.clone() };
            oci_layout(&blobs, &rootfs, opts, &mut report)
                .with_context(|| format!("importing OCI layout {}", dir.display()))?;
        }
        Source::Registry(reference) => {
            pull(reference, &rootfs, opts, &mut report)
                .with_context(|| format!("pulling docker://{reference}"))?;
        }
    }
    let mut text = serde_json::to_vec_pretty(&report.record).context("encoding source.json")?;
    text.push(b'\n');
    fsutil::write_atomic(&staging.dir.join(SOURCE_FILE), &text, 0o644)?;
    staging.commit(store, name)?;
    Ok(report)
}

/// A hidden directory beside the image, removed unless committed.
struct Staging {
    dir: PathBuf,
    committed: bool,
}

impl Staging {
    fn new(store: &ImageStore, name: &str) -> Result<Self> {
        let dir = store
            .chroot_dir()
            .join(format!(".{name}.import-{}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir)
                .with_context(|| format!("removing stale {}", dir.display()))?;
        }
        let rootfs = dir.join("rootfs");
        fs::create_dir_all(&rootfs).with_context(|| format!("creating {}", rootfs.display()))?;
        fs::set_permissions(&rootfs, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .with_context(|| format!("setting the mode of {}", rootfs.display()))?;
        Ok(Self {
            dir,
            committed: false,
        })
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// Syncs the staged tree and swaps it in for image `name`.
    fn commit(mut self, store: &ImageStore, name: &str) -> Result<()> {
        let fd =
            fs::File::open(&self.dir).with_context(|| format!("opening {}", self.dir.display()))?;
        // SAFETY: `fd` is an open descriptor for the duration of the call.
        if unsafe { libc::syncfs(fd.as_raw_fd()) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("syncing {}", self.dir.display()));
        }
        let target = store.image_dir(name);
        let old = store
            .chroot_dir()
            .join(format!(".{name}.old-{}", std::process::id()));
        let had_old = target.exists();
        if had_old {
            fs::rename(&target, &old)
                .with_context(|| format!("moving {} aside", target.display()))?;
        }
        if let Err(e) = fs::rename(&self.dir, &target) {
            if had_old {
                let _ = fs::rename(&old, &target);
            }
            return Err(e).with_context(|| format!("renaming the import to {}", target.display()));
        }
        self.committed = true;
        fsutil::sync_dir(store.chroot_dir())?;
        if had_old {
            fs::remove_dir_all(&old)
                .with_context(|| format!("removing the old {}", old.display()))?;
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed
            && let Err(e) = fs::remove_dir_all(&self.dir)
        {
            tracing::warn!("removing {}: {e}", self.dir.display());
        }
    }
}

/// `cp -a` of a tree's contents: keeps hard links, xattrs, device nodes and
/// sparse files, and never follows a symlink in the source.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let mut src = from.as_os_str().to_owned();
    src.push("/.");
    let status = Command::new("cp")
        .args(["-a", "--reflink=auto", "--no-target-directory"])
        .arg(&src)
        .arg(to)
        .status()
        .context("running cp")?;
    if !status.success() {
        bail!(
            "copying {} to {} failed ({status})",
            from.display(),
            to.display()
        );
    }
    Ok(())
}

/// Whether `rel` exists inside `root`, following symlinks as if `root` were `/`.
fn resolves_in_root(root: &Path, rel: &str) -> bool {
    let mut todo: Vec<String> = rel.split('/').rev().map(str::to_owned).collect();
    let mut cur: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(c) = todo.pop() {
        match c.as_str() {
            "" | "." => continue,
            ".." => {
                cur.pop();
                continue;
            }
            _ => {}
        }
        let path = cur
            .iter()
            .fold(root.to_path_buf(), |p, c| p.join(c))
            .join(&c);
        let Ok(meta) = fs::symlink_metadata(&path) else {
            return false;
        };
        if meta.file_type().is_symlink() {
            links += 1;
            let Ok(target) = fs::read_link(&path) else {
                return false;
            };
            if links > MAX_SYMLINKS {
                return false;
            }
            let t = target.to_string_lossy().into_owned();
            if t.starts_with('/') {
                cur.clear();
            }
            todo.extend(t.split('/').rev().map(str::to_owned));
        } else {
            cur.push(c);
        }
    }
    true
}

/// Which of the files that mark an image archive (`oci-layout`,
/// `index.json`, `manifest.json`) sit at the top of the tar at `path`
/// (compressed or not); one streaming pass, nothing written.
fn top_level_markers(path: &Path) -> Result<std::collections::HashSet<String>> {
    const MARKERS: &[&str] = &["oci-layout", "index.json", "manifest.json"];
    let file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut archive = tar::Archive::new(oci::decompress(file)?);
    let mut found = std::collections::HashSet::new();
    for entry in archive.entries()? {
        let entry = entry?;
        let name = entry.path_bytes();
        if let Ok(comps) = layer::components(&name)
            && let [one] = comps.as_slice()
            && let Some(m) = MARKERS.iter().find(|m| m.as_bytes() == *one)
        {
            found.insert((*m).to_owned());
        }
    }
    Ok(found)
}

/// An uncompressed tar: the file itself, or a temp copy decompressed into `dir`.
enum PlainTar {
    Original(PathBuf),
    Temp(tempfile::NamedTempFile),
}

impl PlainTar {
    fn path(&self) -> &Path {
        match self {
            Self::Original(p) => p,
            Self::Temp(t) => t.path(),
        }
    }
}

fn plain_tar(path: &Path, tmp_dir: &Path) -> Result<PlainTar> {
    let mut head = [0u8; 4];
    let mut f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let n = f
        .read(&mut head)
        .with_context(|| format!("reading {}", path.display()))?;
    let compressed = head[..n].starts_with(&[0x1f, 0x8b]) || head[..n] == [0x28, 0xb5, 0x2f, 0xfd];
    if !compressed {
        return Ok(PlainTar::Original(path.to_path_buf()));
    }
    fs::create_dir_all(tmp_dir).with_context(|| format!("creating {}", tmp_dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(tmp_dir)
        .with_context(|| format!("creating a temp file in {}", tmp_dir.display()))?;
    let f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut input = oci::decompress(f).with_context(|| format!("reading {}", path.display()))?;
    std::io::copy(&mut input, tmp.as_file_mut())
        .with_context(|| format!("decompressing {}", path.display()))?;
    Ok(PlainTar::Temp(tmp))
}

fn bar(len: u64, msg: &str, bytes: bool) -> ProgressBar {
    let template = if bytes {
        "{msg:24} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}"
    } else {
        "{msg:24} [{bar:30}] {pos}/{len}"
    };
    let bar = ProgressBar::new(len).with_style(
        ProgressStyle::with_template(template)
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message(msg.to_owned());
    bar
}

/// Applies one layer read from `input` (compressed or not) onto `rootfs`,
/// verifying the digest of the bytes read (`digest`) and, if given, of the
/// uncompressed tar (`diff_id`).
fn apply_layer<R: Read>(
    input: R,
    size: u64,
    digest: Option<&str>,
    diff_id: Option<&str>,
    rootfs: &Path,
    label: &str,
    report: &mut ImportReport,
) -> Result<()> {
    let bar = bar(size, label, true);
    let counted = bar.wrap_read(input);
    let stats = match digest {
        Some(d) => {
            let mut verified = Verified::new(counted, d);
            apply_decompressed(&mut verified, diff_id, rootfs, report)?;
            verified
                .check()
                .with_context(|| format!("verifying {label}"))?;
            report.record.layers += 1;
            Ok(())
        }
        None => {
            let mut counted = counted;
            apply_decompressed(&mut counted, diff_id, rootfs, report)
        }
    };
    bar.finish_and_clear();
    stats
}

fn apply_decompressed<R: Read>(
    input: &mut R,
    diff_id: Option<&str>,
    rootfs: &Path,
    report: &mut ImportReport,
) -> Result<()> {
    let decompressed = oci::decompress(input).context("reading the layer")?;
    let opts = LayerOptions { whiteouts: true };
    let stats = match diff_id {
        Some(id) => {
            let mut verified = Verified::new(decompressed, id);
            let stats = layer::apply(&mut verified, rootfs, &opts)?;
            verified.check().context("verifying the layer's diff id")?;
            stats
        }
        None => layer::apply(decompressed, rootfs, &opts)?,
    };
    report.bytes += stats.bytes;
    report.entries += stats.entries;
    Ok(())
}

/// Applies the layers of a manifest read from `blobs`.
fn apply_manifest(
    blobs: &dyn Blobs,
    manifest: &Manifest,
    rootfs: &Path,
    report: &mut ImportReport,
) -> Result<()> {
    let n = manifest.layers.len();
    for (i, desc) in manifest.layers.iter().enumerate() {
        let (reader, size) = blobs.open(&oci::blob_path(&desc.digest)?)?;
        let label = format!("layer {}/{n}", i + 1);
        apply_layer(
            reader,
            size,
            Some(&desc.digest),
            None,
            rootfs,
            &label,
            report,
        )
        .with_context(|| format!("applying layer {} ({})", i + 1, desc.digest))?;
    }
    Ok(())
}

/// An OCI layout (directory or archive): `index.json` → manifest → layers.
fn oci_layout(
    blobs: &dyn Blobs,
    rootfs: &Path,
    opts: &ImportOptions,
    report: &mut ImportReport,
) -> Result<()> {
    let text = blobs.read_small("index.json")?;
    let index: Index = serde_json::from_slice(&text).context("decoding index.json")?;
    let mut desc = oci::select(&index, &opts.platform)?;
    // A nested index (multi-platform image saved whole).
    for _ in 0..4 {
        let body = blobs.read_blob(&desc.digest)?;
        if oci::is_index(&desc.media_type, &body) {
            let nested: Index = serde_json::from_slice(&body)
                .with_context(|| format!("decoding index {}", desc.digest))?;
            desc = oci::select(&nested, &opts.platform)?;
            continue;
        }
        let manifest: Manifest = serde_json::from_slice(&body)
            .with_context(|| format!("decoding manifest {}", desc.digest))?;
        report.record.digest = Some(desc.digest.clone());
        return apply_manifest(blobs, &manifest, rootfs, report);
    }
    bail!("image indexes nested too deeply")
}

/// A `docker save` archive: `manifest.json` → config (for diff ids) → layers.
fn docker_archive(blobs: &dyn Blobs, rootfs: &Path, report: &mut ImportReport) -> Result<()> {
    let text = blobs.read_small("manifest.json")?;
    let entries: Vec<oci::DockerArchiveEntry> =
        serde_json::from_slice(&text).context("decoding manifest.json")?;
    let entry = match entries.as_slice() {
        [one] => one,
        [] => bail!("manifest.json lists no image"),
        [first, ..] => {
            tracing::warn!(
                "the archive holds {} images; importing the first",
                entries.len()
            );
            first
        }
    };
    let config_bytes = blobs.read_small(&entry.config)?;
    let config: oci::ImageConfig = serde_json::from_slice(&config_bytes)
        .with_context(|| format!("decoding {}", entry.config))?;
    let diff_ids = config.rootfs.map(|r| r.diff_ids).unwrap_or_default();
    if !diff_ids.is_empty() && diff_ids.len() != entry.layers.len() {
        bail!(
            "{} lists {} diff ids for {} layers",
            entry.config,
            diff_ids.len(),
            entry.layers.len()
        );
    }
    report.record.digest = Some(oci::sha256_digest(&config_bytes));
    let n = entry.layers.len();
    for (i, path) in entry.layers.iter().enumerate() {
        let (reader, size) = blobs.open(path)?;
        let label = format!("layer {}/{n}", i + 1);
        apply_layer(
            reader,
            size,
            None,
            diff_ids.get(i).map(String::as_str),
            rootfs,
            &label,
            report,
        )
        .with_context(|| format!("applying layer {} ({path})", i + 1))?;
        report.record.layers += 1;
    }
    Ok(())
}

/// A registry image: manifest (through an index for `--platform`), blobs
/// into the cache, then layers from the cache.
fn pull(
    reference: &Reference,
    rootfs: &Path,
    opts: &ImportOptions,
    report: &mut ImportReport,
) -> Result<()> {
    let mut client = Client::new(reference, opts.nohttps, opts.credentials.clone());
    let (mut media_type, mut digest, mut body) = client.manifest(&reference.reference)?;
    for _ in 0..4 {
        if !oci::is_index(&media_type, &body) {
            break;
        }
        let index: Index = serde_json::from_slice(&body).context("decoding the image index")?;
        let desc = oci::select(&index, &opts.platform)?;
        (media_type, digest, body) = client.manifest(&desc.digest)?;
    }
    let manifest: Manifest =
        serde_json::from_slice(&body).context("decoding the image manifest")?;
    report.record.digest = Some(digest);
    let cache = BlobCache::new(&opts.cachedir);
    let total: u64 = manifest.layers.iter().map(|l| l.size).sum();
    let download = bar(total, "downloading", true);
    for desc in &manifest.layers {
        client
            .fetch_blob(desc, &cache, &download)
            .with_context(|| format!("fetching layer {}", desc.digest))?;
    }
    download.finish_and_clear();
    let n = manifest.layers.len();
    for (i, desc) in manifest.layers.iter().enumerate() {
        let path = cache.path(&desc.digest)?;
        let file = fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let label = format!("layer {}/{n}", i + 1);
        apply_layer(
            BufReader::new(file),
            size,
            Some(&desc.digest),
            None,
            rootfs,
            &label,
            report,
        )
        .with_context(|| format!("applying layer {} ({})", i + 1, desc.digest))?;
    }
    Ok(())
}

/// `--username` or Warewulf's environment variables.
pub fn credentials(username: Option<String>) -> Option<Credentials> {
    registry::credentials(username)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bin_sh_resolves_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        fs::create_dir_all(r.join("usr/bin")).unwrap();
        std::os::unix::fs::symlink("/usr/bin", r.join("bin")).unwrap();
        assert!(!resolves_in_root(r, "bin/sh"));
        fs::write(r.join("usr/bin/sh"), b"").unwrap();
        assert!(resolves_in_root(r, "bin/sh"));
        std::os::unix::fs::symlink("../../../../etc", r.join("escape")).unwrap();
        assert!(!resolves_in_root(r, "escape/hostname"));
    }
}
