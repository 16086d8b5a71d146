//! Reading and writing `nodes.conf` safely.
//!
//! Every read-modify-write holds an exclusive `flock` on `nodes.conf.lock`
//! next to the file, validates the whole result, and replaces the file
//! atomically (temp file, fsync, rename, fsync dir). Nothing is written when
//! validation fails or nothing changed. A [`Stamp`] lets a long-running server
//! notice that the file changed and reload it.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::merge::{MergedNode, merge_all, merge_node};
use super::model::NodesConf;
use super::split;
use super::validate::{Problem, validate};

/// Errors of the node database.
#[derive(Debug, thiserror::Error)]
pub enum NodeDbError {
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}:{line}:{column}: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}: {message}", path.display())]
    ParseNoLocation { path: PathBuf, message: String },
    #[error("{}", join_problems(.0))]
    Invalid(Vec<Problem>),
    #[error("locking {}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("serialising the node database")]
    Serialize(#[source] serde_norway::Error),
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: anyhow::Error,
    },
}

fn join_problems(p: &[Problem]) -> String {
    let mut s: Vec<String> = p.iter().map(ToString::to_string).collect();
    s.dedup();
    s.join("\n")
}

/// Cheap identity of a file version: a change in any part means "reload".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub mtime_ns: i128,
    pub size: u64,
    pub inode: u64,
    pub dev: u64,
}

impl Stamp {
    /// The stamp of `path`, `None` when it does not exist.
    pub fn of(path: &Path) -> io::Result<Option<Self>> {
        match fs::metadata(path) {
            Ok(m) => Ok(Some(Self {
                mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
                size: m.size(),
                inode: m.ino(),
                dev: m.dev(),
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A loaded `nodes.conf`.
#[derive(Clone, Debug)]
pub struct NodeDb {
    path: PathBuf,
    /// The document as read (or as modified in memory).
    pub conf: NodesConf,
    stamp: Option<Stamp>,
}

/// Parses `nodes.conf` text; `path` names the file in errors.
pub fn parse(text: &str, path: &Path) -> Result<NodesConf, NodeDbError> {
    if text.trim().is_empty() {
        return Ok(NodesConf::default());
    }
    if text.len() >= split::PARALLEL_MIN_BYTES {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        if let Some(conf) = split::parse_parallel(text, workers) {
            return Ok(conf);
        }
    }
    serde_norway::from_str(text).map_err(|e| yaml_error(path, &e))
}

/// Maps a YAML error to a located [`NodeDbError`].
pub fn yaml_error(path: &Path, e: &serde_norway::Error) -> NodeDbError {
    match e.location() {
        Some(loc) => NodeDbError::Parse {
            path: path.to_owned(),
            line: loc.line(),
            column: loc.column(),
            message: strip_location(&e.to_string()),
        },
        None => NodeDbError::ParseNoLocation {
            path: path.to_owned(),
            message: e.to_string(),
        },
    }
}

/// serde_norway appends " at line L column C"; we print it in front instead.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// Validates `after`; only problems that `before` did not already have
/// count; pre-existing ones (a file Warewulf accepted) are logged as warnings
/// so they never block an unrelated change.
pub fn check_new(
    before: &NodesConf,
    after: &NodesConf,
    input: Option<(&Path, &str)>,
) -> Result<(), NodeDbError> {
    let old: HashSet<String> = validate(before).iter().map(ToString::to_string).collect();
    let mut fresh = Vec::new();
    for p in validate(after) {
        if old.contains(&p.to_string()) {
            tracing::warn!("{p}");
        } else {
            fresh.push(p);
        }
    }
    if fresh.is_empty() {
        return Ok(());
    }
    let fresh = match input {
        Some((file, text)) => fresh.into_iter().map(|p| p.located(file, text)).collect(),
        None => fresh,
    };
    Err(NodeDbError::Invalid(fresh))
}

impl NodeDb {
    /// Reads `path`; a missing file is an empty database.
    pub fn load(path: &Path) -> Result<Self, NodeDbError> {
        let stamp = Stamp::of(path).map_err(|source| NodeDbError::Read {
            path: path.to_owned(),
            source,
        })?;
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(NodeDbError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let conf = parse(&text, path)?;
        // Pre-existing problems are only of interest when debugging; finding
        // duplicates merges every node, which large sites should not pay for
        // on every read.
        if tracing::enabled!(tracing::Level::DEBUG) {
            for p in validate(&conf) {
                tracing::debug!("{}", p.located(path, &text));
            }
        }
        Ok(Self {
            path: path.to_owned(),
            conf,
            stamp,
        })
    }

    #[allow(
        dead_code,
        reason = "change detection for the server, which arrives later"
    )]
    /// The file this database was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    #[allow(
        dead_code,
        reason = "change detection for the server, which arrives later"
    )]
    /// The file's stamp when it was read.
    pub fn stamp(&self) -> Option<Stamp> {
        self.stamp
    }

    /// True when the file on disk is no longer the version that was read.
    pub fn is_stale(&self) -> bool {
        Stamp::of(&self.path).map_or(true, |s| s != self.stamp)
    }

    /// Re-reads the file when it changed; returns whether it did. On error
    /// the previous contents stay in place.
    pub fn reload_if_changed(&mut self) -> Result<bool, NodeDbError> {
        if !self.is_stale() {
            return Ok(false);
        }
        self.reload()?;
        Ok(true)
    }

    /// Re-reads the file unconditionally (SIGHUP); on error nothing changes.
    pub fn reload(&mut self) -> Result<(), NodeDbError> {
        *self = Self::load(&self.path)?;
        Ok(())
    }

    /// Node `id` with its profiles applied.
    pub fn merged(&self, id: &str) -> Option<MergedNode> {
        merge_node(&self.conf, id)
    }

    /// Every node with its profiles applied, in name order.
    pub fn merged_all(&self) -> Vec<MergedNode> {
        merge_all(&self.conf)
    }

    /// Locks, reads, applies `f`, validates and atomically writes `path`.
    /// The lock is held from before the read until after the rename, so
    /// concurrent callers serialise and none loses another's change.
    pub fn update<T, E>(path: &Path, f: impl FnOnce(&mut NodesConf) -> Result<T, E>) -> Result<T, E>
    where
        E: From<NodeDbError>,
    {
        let _lock = lock(path)?;
        let original = match fs::read(path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(NodeDbError::Read {
                    path: path.to_owned(),
                    source,
                }
                .into());
            }
        };
        let text = String::from_utf8_lossy(original.as_deref().unwrap_or_default()).into_owned();
        let mut conf = parse(&text, path)?;
        let before = conf.clone();
        let out = f(&mut conf)?;
        if conf == before && original.is_some() {
            return Ok(out);
        }
        check_new(&before, &conf, None)?;
        write(path, &conf)?;
        Ok(out)
    }
}

/// Takes the exclusive lock on `<path>.lock`; released when the file drops.
pub fn lock(path: &Path) -> Result<File, NodeDbError> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    let lock_path = path.with_file_name(name);
    if let Some(dir) = lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|source| NodeDbError::Lock {
            path: lock_path.clone(),
            source,
        })?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| NodeDbError::Lock {
            path: lock_path.clone(),
            source,
        })?;
    file.lock().map_err(|source| NodeDbError::Lock {
        path: lock_path,
        source,
    })?;
    Ok(file)
}

/// Serialises and atomically replaces `path`, keeping its permission bits.
fn write(path: &Path, conf: &NodesConf) -> Result<(), NodeDbError> {
    let text = conf.to_yaml().map_err(NodeDbError::Serialize)?;
    let mode = fs::metadata(path)
        .map(|m| m.mode() & 0o7777)
        .unwrap_or(0o644);
    crate::fsutil::write_atomic(path, text.as_bytes(), mode).map_err(|source| NodeDbError::Write {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_writes_and_stamp_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("warewulf/nodes.conf");
        let db = NodeDb::load(&path).unwrap();
        assert!(db.conf.nodes().is_empty());
        NodeDb::update(&path, |c| -> Result<(), NodeDbError> {
            c.nodes_mut().insert("n1".into(), Default::default());
            Ok(())
        })
        .unwrap();
        assert!(db.is_stale());
        let mut db = NodeDb::load(&path).unwrap();
        assert!(db.conf.nodes().contains_key("n1"));
        assert!(!db.reload_if_changed().unwrap());
    }

    #[test]
    fn invalid_update_leaves_file_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nodes.conf");
        fs::write(&path, "nodes:\n  n1: {}\n").unwrap();
        let err = NodeDb::update(&path, |c| -> Result<(), NodeDbError> {
            c.nodes_mut()
                .get_mut("n1")
                .unwrap()
                .netdev_mut("default")
                .hwaddr = Some("zz".into());
            Ok(())
        })
        .unwrap_err();
        assert!(err.to_string().contains("malformed MAC"), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "nodes:\n  n1: {}\n");
    }

    #[test]
    fn existing_problems_do_not_block_other_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nodes.conf");
        fs::write(&path, "nodes:\n  n1:\n    profiles: [ghost]\n").unwrap();
        NodeDb::update(&path, |c| -> Result<(), NodeDbError> {
            c.nodes_mut().insert("n2".into(), Default::default());
            Ok(())
        })
        .unwrap();
        let err = NodeDb::update(&path, |c| -> Result<(), NodeDbError> {
            c.nodes_mut().get_mut("n2").unwrap().profiles = Some(vec!["ghost".into()]);
            Ok(())
        })
        .unwrap_err();
        assert!(err.to_string().contains("node n2"), "{err}");
        assert!(!err.to_string().contains("node n1"), "{err}");
    }

    #[test]
    fn parse_errors_carry_line_and_column() {
        let err = parse(
            "nodes:\n  n1:\n    comment: [\n",
            Path::new("/x/nodes.conf"),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("/x/nodes.conf:"), "{msg}");
        assert!(matches!(err, NodeDbError::Parse { .. }), "{msg}");
    }
}
