//! Durable file replacement: every file a node or an admin relies on is
//! written to a temp file in the same directory, fsynced, renamed over the
//! target, and the directory is fsynced so the rename itself survives a crash.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// A temp file next to `target` that becomes `target` on [`AtomicFile::commit`].
/// Dropped without commit, the temp file is removed.
pub struct AtomicFile {
    target: PathBuf,
    tmp: Option<tempfile::NamedTempFile>,
}

impl AtomicFile {
    /// Creates the temp file in `target`'s directory (created if missing).
    pub fn new(target: &Path) -> Result<Self> {
        let dir = parent_dir(target);
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let prefix = format!(
            ".{}.",
            target
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        );
        let tmp = tempfile::Builder::new()
            .prefix(&prefix)
            .suffix(".tmp")
            .tempfile_in(dir)
            .with_context(|| format!("creating a temp file in {}", dir.display()))?;
        Ok(Self {
            target: target.to_owned(),
            tmp: Some(tmp),
        })
    }

    /// The open temp file.
    pub fn file(&mut self) -> &mut File {
        self.tmp
            .as_mut()
            .expect("temp file present until commit")
            .as_file_mut()
    }

    /// Sets the permission bits the final file will carry.
    pub fn set_mode(&mut self, mode: u32) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        self.file()
            .set_permissions(fs::Permissions::from_mode(mode))
            .with_context(|| {
                format!(
                    "setting the mode of the temp file for {}",
                    self.target.display()
                )
            })
    }

    /// fsyncs the data, renames it over the target and fsyncs the directory.
    pub fn commit(mut self) -> Result<()> {
        let tmp = self.tmp.take().expect("temp file present until commit");
        tmp.as_file()
            .sync_all()
            .with_context(|| format!("syncing the new {}", self.target.display()))?;
        tmp.persist(&self.target)
            .map_err(|e| e.error)
            .with_context(|| format!("renaming the new file over {}", self.target.display()))?;
        sync_dir(parent_dir(&self.target))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file().write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file().flush()
    }
}

/// Replaces `target` with `data` atomically and durably.
pub fn write_atomic(target: &Path, data: &[u8], mode: u32) -> Result<()> {
    let mut file = AtomicFile::new(target)?;
    file.write_all(data)
        .with_context(|| format!("writing the new {}", target.display()))?;
    file.set_mode(mode)?;
    file.commit()
}

/// fsyncs a directory so that renames inside it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("nodes.conf");
        fs::write(&target, "old").unwrap();
        write_atomic(&target, b"new", 0o640).unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "new");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("nodes.conf")]);
    }

    #[test]
    fn dropped_without_commit_keeps_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("x");
        fs::write(&target, "old").unwrap();
        {
            let mut f = AtomicFile::new(&target).unwrap();
            f.write_all(b"half").unwrap();
        }
        assert_eq!(fs::read_to_string(&target).unwrap(), "old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
