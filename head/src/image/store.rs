//! Where images live: `<wwchrootdir>/<name>/rootfs` is the tree an admin
//! edits; `<wwprovisiondir>/images/<name>.img.{gz,zst}` plus
//! `<name>.manifest.json` is what nodes are served.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use initramfs::compress::Compression;

use crate::config::Paths;

/// The image directories of one site.
#[derive(Clone, Debug)]
pub struct ImageStore {
    chroot_dir: PathBuf,
    images_dir: PathBuf,
}

impl ImageStore {
    pub fn new(paths: &Paths) -> Self {
        Self {
            chroot_dir: paths.wwchrootdir.clone(),
            images_dir: paths.wwprovisiondir.join("images"),
        }
    }

    /// The directory holding every image's directory.
    pub fn chroot_dir(&self) -> &Path {
        &self.chroot_dir
    }

    /// `<wwchrootdir>/<name>`: the image's `rootfs/` and its bookkeeping.
    pub fn image_dir(&self, name: &str) -> PathBuf {
        self.chroot_dir.join(name)
    }

    /// The directory built archives and manifests are written to.
    pub fn images_dir(&self) -> &Path {
        &self.images_dir
    }

    /// The editable tree of image `name`.
    pub fn rootfs(&self, name: &str) -> PathBuf {
        self.chroot_dir.join(name).join("rootfs")
    }

    /// The built archive of `name` in `compression`.
    pub fn artifact(&self, name: &str, compression: Compression) -> PathBuf {
        let ext = compression.extension();
        if ext.is_empty() {
            self.images_dir.join(format!("{name}.img"))
        } else {
            self.images_dir.join(format!("{name}.img.{ext}"))
        }
    }

    /// The manifest describing the built archives of `name`.
    pub fn manifest(&self, name: &str) -> PathBuf {
        self.images_dir.join(format!("{name}.manifest.json"))
    }

    /// The lock file serialising builds of `name`.
    pub fn lock_file(&self, name: &str) -> PathBuf {
        self.images_dir.join(format!(".{name}.lock"))
    }

    /// Fails unless `name` is an image with a rootfs directory.
    pub fn require(&self, name: &str) -> Result<PathBuf> {
        validate_name(name)?;
        let rootfs = self.rootfs(name);
        if !rootfs.is_dir() {
            bail!(
                "image {name} not found: {} is not a directory",
                rootfs.display()
            );
        }
        Ok(rootfs)
    }

    /// Every image name (a directory under `wwchrootdir` holding `rootfs/`), sorted.
    pub fn names(&self) -> Result<Vec<String>> {
        let entries = match fs::read_dir(&self.chroot_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(e).with_context(|| format!("listing {}", self.chroot_dir.display()));
            }
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", self.chroot_dir.display()))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if validate_name(&name).is_ok() && entry.path().join("rootfs").is_dir() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }
}

/// Held while an image tree is being changed (import, exec, shell, copy,
/// rename, delete, syncuser): a second session on the same image is refused
/// instead of waiting. The lock dies with the process, so a killed `wwctl`
/// never leaves a stale lock behind.
#[derive(Debug)]
pub struct SessionLock {
    _file: fs::File,
}

impl SessionLock {
    pub fn acquire(store: &ImageStore, name: &str) -> Result<Self> {
        validate_name(name)?;
        fs::create_dir_all(&store.chroot_dir)
            .with_context(|| format!("creating {}", store.chroot_dir.display()))?;
        let path = store.chroot_dir.join(format!(".{name}.lock"));
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {
                recover(store, name)?;
                Ok(Self { _file: file })
            }
            Err(fs::TryLockError::WouldBlock) => bail!(
                "image {name} is in use by another wwctl session (import, exec or shell); try again when it ends"
            ),
            Err(fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
    }
}

/// Cleans up after a `wwctl` that was killed while changing image `name`
/// (the caller holds its lock, so nothing else is using these): staging
/// directories of imports and copies go, a half-finished delete is finished,
/// and an image moved aside by an interrupted `--force` import whose
/// replacement never arrived is put back.
fn recover(store: &ImageStore, name: &str) -> Result<()> {
    let Ok(entries) = fs::read_dir(&store.chroot_dir) else {
        return Ok(());
    };
    let image = store.image_dir(name);
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(&format!(".{name}.")))
        else {
            continue;
        };
        let Some((kind, pid)) = rest.split_once('-') else {
            continue;
        };
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let path = entry.path();
        match kind {
            "old" if !image.exists() => {
                tracing::warn!("restoring image {name} from {}", path.display());
                fs::rename(&path, &image)
                    .with_context(|| format!("restoring {}", path.display()))?;
            }
            "import" | "copy" | "old" | "delete" => {
                tracing::info!("removing the leftover {}", path.display());
                fs::remove_dir_all(&path)
                    .with_context(|| format!("removing {}", path.display()))?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Image names become file names: no separators, no hidden or relative names.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.+:@".contains(c));
    if !ok {
        bail!("invalid image name {name:?}: use letters, digits and -_.+:@, not starting with '.'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_file_safe() {
        for good in ["rocky-9", "debian12", "img_1.2", "a+b"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "a b", "x\0"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }
}
