//! `wwctl image copy|rename|delete`: whole-image operations. Each holds the
//! session lock of every image it touches, works on a hidden name and makes
//! the result appear (or disappear) with one rename.

use std::fs;
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::manifest::ImageManifest;
use super::store::{ImageStore, SessionLock, validate_name};
use crate::fsutil;

/// Copies image `from` (tree and source record) to a new image `to`.
pub fn copy(store: &ImageStore, from: &str, to: &str) -> Result<()> {
    let (_a, _b) = lock_pair(store, from, to)?;
    let staging = store
        .chroot_dir()
        .join(format!(".{to}.copy-{}", std::process::id()));
    let result = (|| {
        fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
        let mut src = store.image_dir(from).into_os_string();
        src.push("/.");
        let status = Command::new("cp")
            .args(["-a", "--reflink=auto", "--no-target-directory"])
            .arg(&src)
            .arg(&staging)
            .status()
            .context("running cp")?;
        if !status.success() {
            bail!("copying image {from} failed ({status})");
        }
        // A session of the source in progress is not part of the copy.
        let _ = fs::remove_dir_all(staging.join(".exec"));
        fs::rename(&staging, store.image_dir(to))
            .with_context(|| format!("renaming the copy to {}", store.image_dir(to).display()))?;
        fsutil::sync_dir(store.chroot_dir())
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    result
}

/// Renames image `from` to `to`, with its built archives.
pub fn rename(store: &ImageStore, from: &str, to: &str) -> Result<()> {
    let (_a, _b) = lock_pair(store, from, to)?;
    fs::rename(store.image_dir(from), store.image_dir(to))
        .with_context(|| format!("renaming image {from} to {to}"))?;
    fsutil::sync_dir(store.chroot_dir())?;
    if let Some(mut m) = ImageManifest::load(&store.manifest(from))? {
        for a in &mut m.artifacts {
            let old = store.images_dir().join(&a.file);
            let new_file = a.file.replacen(from, to, 1);
            fs::rename(&old, store.images_dir().join(&new_file))
                .with_context(|| format!("renaming {}", old.display()))?;
            a.file = new_file;
        }
        m.name = to.to_owned();
        m.store(&store.manifest(to))?;
        fs::remove_file(store.manifest(from)).context("removing the old manifest")?;
    }
    Ok(())
}

/// Deletes image `name`: its tree, built archives and manifest.
pub fn delete(store: &ImageStore, name: &str) -> Result<()> {
    let _lock = SessionLock::acquire(store, name)?;
    store.require(name)?;
    let doomed = store
        .chroot_dir()
        .join(format!(".{name}.delete-{}", std::process::id()));
    fs::rename(store.image_dir(name), &doomed)
        .with_context(|| format!("moving image {name} aside"))?;
    fsutil::sync_dir(store.chroot_dir())?;
    fs::remove_dir_all(&doomed).with_context(|| format!("removing {}", doomed.display()))?;
    if let Some(m) = ImageManifest::load(&store.manifest(name))? {
        for a in m.artifacts {
            remove_if_present(&store.images_dir().join(a.file))?;
        }
    }
    remove_if_present(&store.manifest(name))?;
    remove_if_present(&store.lock_file(name))?;
    Ok(())
}

fn remove_if_present(path: &std::path::Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// Locks `from` and `to`, checks `from` exists and `to` does not.
fn lock_pair(store: &ImageStore, from: &str, to: &str) -> Result<(SessionLock, SessionLock)> {
    validate_name(to)?;
    if from == to {
        bail!("source and destination are both {from}");
    }
    let a = SessionLock::acquire(store, from)?;
    let b = SessionLock::acquire(store, to)?;
    store.require(from)?;
    if store.image_dir(to).exists() {
        bail!("image {to} already exists");
    }
    Ok((a, b))
}
