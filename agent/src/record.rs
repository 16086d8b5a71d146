//! The record of what wwclient wrote: `<state dir>/applied.json`.
//!
//! It names every path the agent wrote (files and symlinks with their
//! content, directories it created) and the `ETag` of the overlay last
//! applied in full. Deletion only ever considers paths listed here, so files
//! the agent did not write are never removed. Written atomically (temp file,
//! fsync, rename, fsync of the directory).
//!
//! `pending.json` ([`Pending`]) exists from just before an apply touches
//! the root until the record of that apply is saved ([`Record::commit`]);
//! after a crash anywhere in between, the next run removes what the killed
//! one left behind and learns which of its writes and deletions happened.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::log;

pub const RECORD_FILE: &str = "applied.json";
pub const PENDING_FILE: &str = "pending.json";
const FORMAT_VERSION: u32 = 1;

/// One path the agent wrote, as it wrote it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Recorded {
    File {
        sha256: String,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Symlink {
        target: String,
        uid: u32,
        gid: u32,
    },
    /// A directory the agent created (pre-existing ones are never recorded).
    Dir {
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub version: u32,
    /// `ETag` of the overlay last applied without error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// `Last-Modified` of that overlay, for heads that send no `ETag`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    /// Relative paths (no leading `/`) → what was written.
    pub entries: BTreeMap<String, Recorded>,
}

impl Record {
    /// The record in `state_dir`; empty when missing or unreadable (then
    /// nothing is deleted until the agent has written things again).
    pub fn load(state_dir: &Path) -> Record {
        let path = state_dir.join(RECORD_FILE);
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Record::default(),
            Err(e) => {
                log::warn!(
                    "reading {}: {e}; starting with an empty record",
                    path.display()
                );
                return Record::default();
            }
        };
        match serde_json::from_slice::<Record>(&text) {
            Ok(r) if r.version == FORMAT_VERSION => r,
            Ok(r) => {
                log::warn!(
                    "{}: unknown format version {}; starting with an empty record",
                    path.display(),
                    r.version
                );
                Record::default()
            }
            Err(e) => {
                log::warn!("{}: {e}; starting with an empty record", path.display());
                Record::default()
            }
        }
    }

    pub fn save(&mut self, state_dir: &Path) -> anyhow::Result<()> {
        self.version = FORMAT_VERSION;
        let json = serde_json::to_vec_pretty(self).context("encoding the record")?;
        write_atomic(&state_dir.join(RECORD_FILE), &json)
    }

    /// Saves the record, then removes `pending.json`: in this order, a kill
    /// at any point leaves either the pending list (and the next run
    /// recovers from it) or a record that already names what was written.
    pub fn commit(&mut self, state_dir: &Path) -> anyhow::Result<()> {
        self.save(state_dir)?;
        Pending::clear(state_dir);
        Ok(())
    }
}

/// What an apply is about to do, written before it touches the root: the
/// temporaries it may create, what each path will be once written, and
/// what it will delete. After a crash the next run uses it to remove the
/// temporaries and to bring the record up to what actually happened.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pending {
    pub temps: Vec<PathBuf>,
    /// Relative path → what it will be (directories: only those created).
    pub intended: BTreeMap<String, Recorded>,
    /// Relative paths that will be deleted.
    pub removals: Vec<String>,
}

impl Pending {
    pub fn save(&self, state_dir: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_vec(self).context("encoding the pending list")?;
        write_atomic(&state_dir.join(PENDING_FILE), &json)
    }

    /// The pending list of an interrupted apply, if there is one.
    pub fn load(state_dir: &Path) -> Option<Pending> {
        let path = state_dir.join(PENDING_FILE);
        let text = fs::read(&path).ok()?;
        Some(serde_json::from_slice(&text).unwrap_or_else(|e| {
            log::warn!("{}: {e}; only removing it", path.display());
            Pending::default()
        }))
    }

    /// Removes the temporaries an interrupted apply may have left.
    pub fn remove_temps(&self) {
        let mut removed = 0;
        for t in &self.temps {
            if fs::remove_file(t).is_ok() {
                removed += 1;
            }
        }
        if removed > 0 {
            log::info!("removed {removed} temporary files of an interrupted apply");
        }
    }

    /// Removes the pending list (only once the record is saved).
    fn clear(state_dir: &Path) {
        let path = state_dir.join(PENDING_FILE);
        if let Err(e) = fs::remove_file(&path)
            && e.kind() != io::ErrorKind::NotFound
        {
            log::warn!("removing {}: {e}", path.display());
        }
    }
}

/// Temp file in the same directory, fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(f);
    fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    sync_dir(dir);
    Ok(())
}

/// Makes renames in `dir` durable; failures only cost durability.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corrupt_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Record {
            etag: Some("abc".into()),
            ..Record::default()
        };
        r.entries.insert(
            "etc/passwd".into(),
            Recorded::File {
                sha256: "00".into(),
                mode: 0o644,
                uid: 0,
                gid: 0,
            },
        );
        r.entries.insert(
            "etc/l".into(),
            Recorded::Symlink {
                target: "x".into(),
                uid: 0,
                gid: 0,
            },
        );
        r.save(dir.path()).unwrap();
        let back = Record::load(dir.path());
        assert_eq!(back.etag.as_deref(), Some("abc"));
        assert_eq!(back.entries, r.entries);
        fs::write(dir.path().join(RECORD_FILE), b"{not json").unwrap();
        assert!(Record::load(dir.path()).entries.is_empty());
    }

    #[test]
    fn pending_temporaries_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("leftover");
        fs::write(&t, b"x").unwrap();
        let p = Pending {
            temps: vec![t.clone(), dir.path().join("absent")],
            ..Pending::default()
        };
        p.save(dir.path()).unwrap();
        Pending::load(dir.path()).unwrap().remove_temps();
        assert!(!t.exists());
        assert!(Pending::load(dir.path()).is_some(), "kept until commit");
        Record::default().commit(dir.path()).unwrap();
        assert!(Pending::load(dir.path()).is_none());
    }
}
