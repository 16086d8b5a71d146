//! `wwctl image build`: image tree → newc archive → one or more compressed
//! artifacts, each written to a temp file, fsynced and renamed, then the
//! manifest. An unchanged tree (same metadata fingerprint) is skipped after a
//! scan that reads no file contents.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use indicatif::ProgressBar;
use initramfs::compress::{self, Compression, EncoderOptions};
use initramfs::tree::{self, TreeOptions};
use sha2::{Digest, Sha256};

use super::kernel;
use super::manifest::{self, Artifact, ImageManifest};
use super::store::ImageStore;
use crate::fsutil::AtomicFile;

/// How to build.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// Rebuild even when the tree is unchanged.
    pub force: bool,
    /// The artifacts to produce, one per compression.
    pub compressions: Vec<Compression>,
    /// Clamp every mtime to this value for reproducible archives.
    pub source_date_epoch: Option<u64>,
    /// Compression level; `None` uses each format's default.
    pub level: Option<i32>,
    /// Compression threads; 0 = all cores.
    pub threads: usize,
}

/// What a build did.
#[derive(Clone, Debug)]
pub enum BuildOutcome {
    /// The tree matched the last build; nothing was written.
    UpToDate(ImageManifest),
    /// New artifacts and a new manifest were written.
    Built(ImageManifest),
}

/// Builds image `name`. `progress` receives the number of file-content bytes
/// archived so far; its length is set here.
pub fn build(
    store: &ImageStore,
    name: &str,
    opts: &BuildOptions,
    progress: &ProgressBar,
) -> Result<BuildOutcome> {
    let started = Instant::now();
    let rootfs = store.require(name)?;
    let images_dir = store.images_dir();
    fs::create_dir_all(images_dir).with_context(|| format!("creating {}", images_dir.display()))?;
    // One build per image at a time; a second `wwctl image build` waits.
    let _lock = lock(store, name)?;

    let tree_opts = TreeOptions {
        source_date_epoch: opts.source_date_epoch,
        excludes: tree::read_excludes(&rootfs)
            .with_context(|| format!("reading the excludes of image {name}"))?,
        one_file_system: true,
    };
    progress.set_message(format!("scanning {name}"));
    let scan = tree::scan(&rootfs, &tree_opts)
        .with_context(|| format!("scanning image {name} at {}", rootfs.display()))?;
    let fingerprint = fingerprint(&scan.fingerprint());

    let manifest_path = store.manifest(name);
    let previous = ImageManifest::load(&manifest_path)?;
    if !opts.force
        && let Some(prev) = &previous
        && is_current(store, prev, &fingerprint, &opts.compressions)
    {
        return Ok(BuildOutcome::UpToDate(prev.clone()));
    }

    let kernels = kernel::find(&rootfs);
    let kernel = kernel::default_kernel(&kernels);

    progress.set_length(scan.total_bytes());
    progress.set_message(format!("building {name}"));
    let enc_opts = EncoderOptions {
        level: opts.level,
        threads: opts.threads,
    };
    let mut outputs = Vec::with_capacity(opts.compressions.len());
    for &c in &opts.compressions {
        let target = store.artifact(name, c);
        let mut file = AtomicFile::new(&target)?;
        file.set_mode(0o644)?;
        let enc = compress::encoder(c, &enc_opts, HashWriter::new(file))
            .with_context(|| format!("starting the {c:?} encoder for {}", target.display()))?;
        outputs.push((c, enc));
    }
    let mut encoders: Vec<_> = outputs
        .iter_mut()
        .map(|(_, e)| e as &mut dyn Write)
        .collect();
    tree::write_archive(&scan, Tee(&mut encoders), &mut |done| {
        progress.set_position(done)
    })
    .with_context(|| format!("archiving image {name}"))?;
    drop(encoders);

    let mut artifacts = Vec::new();
    for (c, enc) in outputs {
        let target = store.artifact(name, c);
        let hashed = enc
            .finish()
            .with_context(|| format!("compressing {}", target.display()))?;
        let (file, size, sha256) = hashed.finish();
        file.commit()?;
        artifacts.push(Artifact {
            compression: c.extension().to_owned(),
            file: file_name(&target),
            size,
            sha256,
        });
    }

    // Artifacts of other compressions stay valid only if the tree is the same.
    if let Some(prev) = previous {
        for old in prev.artifacts {
            if artifacts.iter().any(|a| a.compression == old.compression) {
                continue;
            }
            if prev.fingerprint == fingerprint {
                artifacts.push(old);
            } else {
                let stale = images_dir.join(&old.file);
                if let Err(e) = fs::remove_file(&stale)
                    && e.kind() != io::ErrorKind::NotFound
                {
                    tracing::warn!("removing stale {}: {e}", stale.display());
                }
            }
        }
    }
    artifacts.sort_by(|a, b| a.compression.cmp(&b.compression));

    let manifest = ImageManifest {
        format: manifest::FORMAT,
        name: name.to_owned(),
        fingerprint,
        entries: scan.len() as u64,
        tree_bytes: scan.total_bytes(),
        kernel_version: kernel.and_then(|k| k.version.clone()),
        kernel_path: kernel.map(|k| k.path.clone()),
        built_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        build_seconds: started.elapsed().as_secs_f64(),
        artifacts,
    };
    manifest.store(&manifest_path)?;
    Ok(BuildOutcome::Built(manifest))
}

/// The manifest's fingerprint: the tree's, tied to our archive format.
fn fingerprint(tree: &[u8; 32]) -> String {
    let mut h = Sha256::new();
    h.update(b"ironwulf-image\0");
    h.update(manifest::FORMAT.to_le_bytes());
    h.update(tree);
    hex::encode(h.finalize())
}

/// True when every requested artifact exists as the last build left it.
fn is_current(
    store: &ImageStore,
    prev: &ImageManifest,
    fingerprint: &str,
    wanted: &[Compression],
) -> bool {
    prev.fingerprint == fingerprint
        && wanted.iter().all(|&c| {
            prev.artifact(c.extension()).is_some_and(|a| {
                fs::metadata(store.images_dir().join(&a.file)).is_ok_and(|m| m.len() == a.size)
            })
        })
}

fn lock(store: &ImageStore, name: &str) -> Result<File> {
    let path = store.lock_file(name);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.lock()
        .with_context(|| format!("locking {}", path.display()))?;
    Ok(file)
}

fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Writes every buffer to each of several writers.
struct Tee<'a, 'b>(&'a mut [&'b mut dyn Write]);

impl Write for Tee<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for w in self.0.iter_mut() {
            w.write_all(buf)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.iter_mut().try_for_each(|w| w.flush())
    }
}

/// Counts and hashes what passes through to the artifact file.
struct HashWriter {
    inner: AtomicFile,
    hasher: Sha256,
    size: u64,
}

impl HashWriter {
    fn new(inner: AtomicFile) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    /// The file, its length and its lowercase hex sha256.
    fn finish(self) -> (AtomicFile, u64, String) {
        (self.inner, self.size, hex::encode(self.hasher.finalize()))
    }
}

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
