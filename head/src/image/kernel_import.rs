//! Kernels kept apart from images, for nodes that boot a kernel other than
//! their image's (Warewulf 4.5 `kernel override`, 4.6 `kernel: version`
//! naming a version the image does not have).
//!
//! `wwctl kernel import VERSION` copies `vmlinuz-VERSION` and packs the
//! modules directory of that version from the head (or from `--image`, or
//! any `--root`) into `<wwprovisiondir>/kernel/VERSION/`:
//! `vmlinuz`, `kmods.img.gz` (a newc archive of `lib/modules/VERSION`, or
//! `usr/lib/modules/VERSION` when that is where the source really keeps it)
//! and `kernel.json`. The server sends the kmods archive at `/kmods/{wwid}`,
//! layered after the image.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use indicatif::ProgressBar;
use initramfs::compress::{self, Compression, EncoderOptions};
use initramfs::tree::{self, TreeOptions};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::kernel;
use crate::config::Paths;
use crate::fsutil::{self, AtomicFile};

/// Name of the kernel file in a kernel directory.
pub const VMLINUZ: &str = "vmlinuz";
/// Name of the gzip kmods archive in a kernel directory.
pub const KMODS_GZ: &str = "kmods.img.gz";
const RECORD: &str = "kernel.json";

/// Where imported kernels live.
#[derive(Clone, Debug)]
pub struct KernelStore {
    dir: PathBuf,
}

/// `kernel.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KernelRecord {
    pub version: String,
    /// Where it was imported from (`/`, an image name, a directory).
    pub source: String,
    pub kernel_path: String,
    pub modules_path: String,
    pub kernel_sha256: String,
    pub kmods_sha256: String,
    pub kmods_size: u64,
    pub imported_at: u64,
}

impl KernelStore {
    pub fn new(paths: &Paths) -> Self {
        Self {
            dir: paths.wwprovisiondir.join("kernel"),
        }
    }

    /// The directory of kernel `version`.
    pub fn kernel_dir(&self, version: &str) -> Result<PathBuf> {
        validate_version(version)?;
        Ok(self.dir.join(version))
    }

    /// The record of an imported kernel, `None` if not imported.
    pub fn get(&self, version: &str) -> Option<KernelRecord> {
        let dir = self.kernel_dir(version).ok()?;
        serde_json::from_slice(&fs::read(dir.join(RECORD)).ok()?).ok()
    }

    /// Every imported kernel, by version.
    pub fn list(&self) -> Result<Vec<KernelRecord>> {
        let mut out = Vec::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).with_context(|| format!("listing {}", self.dir.display())),
        };
        for e in entries {
            let e = e.with_context(|| format!("listing {}", self.dir.display()))?;
            if let Some(r) = e.file_name().to_str().and_then(|v| self.get(v)) {
                out.push(r);
            }
        }
        out.sort_by(|a, b| kernel::compare_versions(Some(&a.version), Some(&b.version)));
        Ok(out)
    }

    /// Removes an imported kernel.
    pub fn delete(&self, version: &str) -> Result<()> {
        let dir = self.kernel_dir(version)?;
        if !dir.join(RECORD).is_file() {
            bail!("kernel {version} is not imported");
        }
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))
    }

    /// Imports kernel `version` from the tree at `root`.
    pub fn import(
        &self,
        root: &Path,
        source: &str,
        version: &str,
        bar: &ProgressBar,
    ) -> Result<KernelRecord> {
        validate_version(version)?;
        let found = kernel::find(root)
            .into_iter()
            .find(|k| k.version.as_deref() == Some(version))
            .with_context(|| {
                let have: Vec<String> = kernel::find(root)
                    .into_iter()
                    .filter_map(|k| k.version)
                    .collect();
                format!(
                    "no kernel {version} in {source} (found: {})",
                    have.join(", ")
                )
            })?;
        let modules_rel = ["lib/modules", "usr/lib/modules"]
            .iter()
            .map(|d| format!("{d}/{version}"))
            .find(|rel| {
                fs::symlink_metadata(root.join(rel)).is_ok_and(|m| m.is_dir())
                    && !fs::symlink_metadata(root.join(rel.split('/').next().unwrap_or_default()))
                        .is_ok_and(|m| m.file_type().is_symlink())
            })
            .with_context(|| format!("no modules directory for {version} in {source}"))?;

        let dir = self.kernel_dir(version)?;
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // Stage the modules under their path, so the archive carries it.
        let staging = tempfile::Builder::new()
            .prefix(".kmods-")
            .tempdir_in(&self.dir)
            .with_context(|| format!("creating a staging directory in {}", self.dir.display()))?;
        let staged = staging.path().join(&modules_rel);
        fs::create_dir_all(staged.parent().unwrap_or(staging.path()))
            .with_context(|| format!("creating {}", staged.display()))?;
        let status = std::process::Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(root.join(&modules_rel))
            .arg(&staged)
            .status()
            .context("running cp")?;
        if !status.success() {
            bail!("copying the modules of {version} failed ({status})");
        }
        let scan = tree::scan(staging.path(), &TreeOptions::default())
            .with_context(|| format!("scanning the modules of {version}"))?;
        bar.set_length(scan.total_bytes());
        bar.set_message(format!("packing modules {version}"));
        let target = dir.join(KMODS_GZ);
        let mut file = AtomicFile::new(&target)?;
        file.set_mode(0o644)?;
        let enc = compress::encoder(
            Compression::Gzip,
            &EncoderOptions {
                level: None,
                threads: 0,
            },
            Hashing::new(file),
        )
        .context("starting the gzip encoder")?;
        let enc = tree::write_archive(&scan, enc, &mut |n| bar.set_position(n))
            .with_context(|| format!("archiving the modules of {version}"))?;
        let hashing = enc.finish().context("compressing the modules")?;
        let (file, kmods_size, kmods_sha256) = hashing.finish();
        file.commit()?;

        let kernel_src = root.join(found.path.trim_start_matches('/'));
        let data =
            fs::read(&kernel_src).with_context(|| format!("reading {}", kernel_src.display()))?;
        fsutil::write_atomic(&dir.join(VMLINUZ), &data, 0o644)?;
        let record = KernelRecord {
            version: version.to_owned(),
            source: source.to_owned(),
            kernel_path: found.path.clone(),
            modules_path: format!("/{modules_rel}"),
            kernel_sha256: hex::encode(Sha256::digest(&data)),
            kmods_sha256,
            kmods_size,
            imported_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        let mut text = serde_json::to_vec_pretty(&record).context("encoding kernel.json")?;
        text.push(b'\n');
        fsutil::write_atomic(&dir.join(RECORD), &text, 0o644)?;
        Ok(record)
    }
}

/// Versions become directory names.
pub fn validate_version(v: &str) -> Result<()> {
    let ok = !v.is_empty()
        && !v.starts_with('.')
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.+~".contains(c));
    if !ok {
        bail!("invalid kernel version {v:?}");
    }
    Ok(())
}

/// Hashes and counts what is written through it.
struct Hashing {
    inner: AtomicFile,
    hasher: Sha256,
    size: u64,
}

impl Hashing {
    fn new(inner: AtomicFile) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    fn finish(self) -> (AtomicFile, u64, String) {
        (self.inner, self.size, hex::encode(self.hasher.finalize()))
    }
}

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_kernel_and_modules() {
        let src = tempfile::tempdir().unwrap();
        let prov = tempfile::tempdir().unwrap();
        let r = src.path();
        fs::create_dir_all(r.join("boot")).unwrap();
        fs::write(r.join("boot/vmlinuz-6.1.0-9-amd64"), b"kernel-bytes").unwrap();
        fs::create_dir_all(r.join("lib/modules/6.1.0-9-amd64/kernel/fs")).unwrap();
        fs::write(
            r.join("lib/modules/6.1.0-9-amd64/kernel/fs/x.ko"),
            b"module",
        )
        .unwrap();
        let paths = Paths {
            wwprovisiondir: prov.path().to_path_buf(),
            ..Paths::default()
        };
        let store = KernelStore::new(&paths);
        assert!(
            store
                .import(r, "test", "6.2", &ProgressBar::hidden())
                .is_err()
        );
        let rec = store
            .import(r, "test", "6.1.0-9-amd64", &ProgressBar::hidden())
            .unwrap();
        assert_eq!(rec.modules_path, "/lib/modules/6.1.0-9-amd64");
        let dir = store.kernel_dir("6.1.0-9-amd64").unwrap();
        assert_eq!(fs::read(dir.join(VMLINUZ)).unwrap(), b"kernel-bytes");
        // The archive unpacks to the module under its path.
        let out = tempfile::tempdir().unwrap();
        let f = fs::File::open(dir.join(KMODS_GZ)).unwrap();
        initramfs::unpack::unpack(f, out.path(), &Default::default()).unwrap();
        assert_eq!(
            fs::read(out.path().join("lib/modules/6.1.0-9-amd64/kernel/fs/x.ko")).unwrap(),
            b"module"
        );
        assert_eq!(store.list().unwrap().len(), 1);
        assert!(validate_version("../x").is_err());
    }
}
