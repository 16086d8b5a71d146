//! Directory tree → newc archive: scanning a tree (lstat only, excludes,
//! one file system), its fingerprint for no-op rebuild detection, and
//! writing the archive.
//!
//! Archive policy (reproducible and kernel-faithful):
//! - the root itself comes first as `.`; every other entry is named by its
//!   path relative to the root without a `./` prefix, sorted by the bytes of
//!   that path, so parents always precede their children;
//! - uid, gid, permission bits and mtime are kept; with
//!   [`TreeOptions::source_date_epoch`] every mtime is clamped to it (newer
//!   files get the epoch, older ones keep their time);
//! - inode numbers are assigned sequentially from 1 in archive order; regular
//!   files hard-linked to each other inside the tree share the number of the
//!   first link, `nlink` is the number of links in the archive, and the data
//!   is stored once on the last link (see [`crate::newc`] for why);
//! - directories get `nlink` 2, `devmajor`/`devminor` are 0;
//! - with [`TreeOptions::one_file_system`] a directory on another device is
//!   archived (as `find -xdev` prints it) but not descended into.
//!
//! Excludes follow Warewulf: `<root>/etc/warewulf/excludes` holds one glob per
//! line relative to the root (`/boot/*`, `/usr/share/doc`); `*` does not
//! cross `/`; an excluded directory excludes everything below it.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::newc::{self, Header, Kind, NewcError};

/// Location of Warewulf's exclude list inside an image.
pub const EXCLUDES_FILE: &str = "etc/warewulf/excludes";
/// Read buffer for file data while writing an archive.
const READ_BUF: usize = 1024 * 1024;
/// Buffer between the newc writer and the (compressing) sink.
const WRITE_BUF: usize = 256 * 1024;

/// Errors of scanning and archiving a tree.
#[derive(Debug, Error)]
pub enum TreeError {
    #[error("reading excludes file {}", .path.display())]
    ReadExcludes {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("bad exclude pattern {pattern:?}")]
    BadExclude {
        pattern: String,
        #[source]
        source: globset::Error,
    },
    #[error("reading metadata of {}", .path.display())]
    Stat {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("tree root is not a directory: {}", .path.display())]
    RootNotDir { path: PathBuf },
    #[error("listing directory {}", .path.display())]
    ReadDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading symlink {}", .path.display())]
    ReadLink {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("file too large for newc (max 4 GiB - 1): {path}")]
    FileTooLarge { path: String },
    #[error("too many entries for 32-bit inode numbers")]
    TooManyEntries,
    #[error("opening {}", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("file shrank while archiving: {}", .path.display())]
    Shrank { path: PathBuf },
    #[error("writing archive entry {path}")]
    Newc {
        path: String,
        #[source]
        source: NewcError,
    },
    #[error("writing archive")]
    Write(#[source] io::Error),
}

/// How a tree is scanned and archived.
#[derive(Clone, Debug, Default)]
pub struct TreeOptions {
    /// Clamp every mtime to this time (seconds since the epoch).
    pub source_date_epoch: Option<u64>,
    /// Warewulf-style exclude globs, relative to the root.
    pub excludes: Vec<String>,
    /// Do not descend into directories on another device (the image builder sets this).
    pub one_file_system: bool,
}

/// Reads `<root>/etc/warewulf/excludes`: one pattern a line, blank lines and
/// `#` comments skipped; a missing file means no excludes.
pub fn read_excludes(root: &Path) -> Result<Vec<String>, TreeError> {
    let path = root.join(EXCLUDES_FILE);
    let text = match fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(TreeError::ReadExcludes { path, source }),
    };
    Ok(String::from_utf8_lossy(&text)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

/// One scanned entry (metadata from `lstat`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the root, `.` for the root itself.
    pub path: Vec<u8>,
    pub kind: Kind,
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    /// Size on disk (regular files) or target length (symlinks); 0 otherwise.
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
    pub ctime: i64,
    pub ctime_nsec: i64,
    pub rdev: u64,
    /// Symlink target.
    pub target: Option<Vec<u8>>,
    /// Inode number in the archive.
    pub ino: u32,
    /// Links in the archive (hard-link group size for files, 2 for directories).
    pub nlink: u32,
    /// Whether this entry carries the data (false for all but the last of a hard-link group).
    pub has_data: bool,
}

impl Entry {
    /// The entry's path as a `Path` relative to the root.
    pub fn rel_path(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.path))
    }
}

/// A scanned tree: sorted entries with metadata, ready to archive.
#[derive(Clone, Debug)]
pub struct Scan {
    root: PathBuf,
    opts: TreeOptions,
    entries: Vec<Entry>,
}

fn compile_excludes(patterns: &[String]) -> Result<GlobSet, TreeError> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let mut rel = p.trim();
        loop {
            if let Some(r) = rel.strip_prefix('/') {
                rel = r;
            } else if let Some(r) = rel.strip_prefix("./") {
                rel = r;
            } else {
                break;
            }
        }
        let rel = rel.trim_end_matches('/');
        if rel.is_empty() {
            continue;
        }
        let glob = GlobBuilder::new(rel)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|source| TreeError::BadExclude {
                pattern: p.clone(),
                source,
            })?;
        b.add(glob);
    }
    b.build().map_err(|source| TreeError::BadExclude {
        pattern: patterns.join(" "),
        source,
    })
}

fn stat_entry(path: Vec<u8>, md: &fs::Metadata, sde: Option<u64>) -> Option<Entry> {
    let kind = Kind::from_mode(md.mode())?;
    let mut mtime = md.mtime();
    let mut mtime_nsec = md.mtime_nsec();
    if let Some(sde) = sde {
        let sde = i64::try_from(sde).unwrap_or(i64::MAX);
        if mtime >= sde {
            mtime = sde;
            mtime_nsec = 0;
        }
    }
    Some(Entry {
        path,
        kind,
        perm: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        size: if kind == Kind::File { md.size() } else { 0 },
        mtime,
        mtime_nsec,
        ctime: md.ctime(),
        ctime_nsec: md.ctime_nsec(),
        rdev: md.rdev(),
        target: None,
        ino: 0,
        nlink: 1,
        has_data: true,
    })
}

struct Walker<'a> {
    root: &'a Path,
    root_dev: u64,
    opts: &'a TreeOptions,
    excludes: GlobSet,
    entries: Vec<Entry>,
    /// (dev, ino) of regular files with several links.
    inodes: Vec<(u64, u64)>,
}

impl Walker<'_> {
    fn walk(&mut self, rel: &[u8]) -> Result<(), TreeError> {
        let dir = if rel.is_empty() {
            self.root.to_path_buf()
        } else {
            self.root.join(OsStr::from_bytes(rel))
        };
        let rd = fs::read_dir(&dir).map_err(|source| TreeError::ReadDir {
            path: dir.clone(),
            source,
        })?;
        let mut subdirs = Vec::new();
        for de in rd {
            let de = de.map_err(|source| TreeError::ReadDir {
                path: dir.clone(),
                source,
            })?;
            let name = de.file_name();
            let mut path = Vec::with_capacity(rel.len() + 1 + name.len());
            if !rel.is_empty() {
                path.extend_from_slice(rel);
                path.push(b'/');
            }
            path.extend_from_slice(name.as_bytes());
            if self.excludes.is_match(OsStr::from_bytes(&path)) {
                continue;
            }
            // DirEntry::metadata is fstatat(AT_SYMLINK_NOFOLLOW) on Unix.
            let md = de.metadata().map_err(|source| TreeError::Stat {
                path: dir.join(&name),
                source,
            })?;
            let Some(mut e) = stat_entry(path, &md, self.opts.source_date_epoch) else {
                tracing::debug!(path = %dir.join(&name).display(), "skipping unknown file type");
                continue;
            };
            match e.kind {
                Kind::Dir if !self.opts.one_file_system || md.dev() == self.root_dev => {
                    subdirs.push(self.entries.len());
                }
                Kind::Symlink => {
                    let p = dir.join(&name);
                    let t = fs::read_link(&p)
                        .map_err(|source| TreeError::ReadLink { path: p, source })?;
                    e.size = t.as_os_str().len() as u64;
                    e.target = Some(t.into_os_string().into_vec());
                }
                Kind::File if e.size > newc::MAX_FILE_SIZE => {
                    return Err(TreeError::FileTooLarge {
                        path: newc::lossy(&e.path),
                    });
                }
                _ => {}
            }
            if e.kind == Kind::File && md.nlink() > 1 {
                self.inodes.push((md.dev(), md.ino()));
            } else {
                self.inodes.push((0, 0));
            }
            self.entries.push(e);
        }
        for i in subdirs {
            let rel = self.entries[i].path.clone();
            self.walk(&rel)?;
        }
        Ok(())
    }
}

/// Scans `root`: `lstat` metadata of every entry, excludes applied, sorted.
/// File contents are not read.
pub fn scan(root: &Path, opts: &TreeOptions) -> Result<Scan, TreeError> {
    let md = fs::metadata(root).map_err(|source| TreeError::Stat {
        path: root.to_path_buf(),
        source,
    })?;
    if !md.is_dir() {
        return Err(TreeError::RootNotDir {
            path: root.to_path_buf(),
        });
    }
    let root_entry = stat_entry(b".".to_vec(), &md, opts.source_date_epoch)
        .expect("a directory has a known file type");
    let mut w = Walker {
        root,
        root_dev: md.dev(),
        opts,
        excludes: compile_excludes(&opts.excludes)?,
        entries: vec![root_entry],
        inodes: vec![(0, 0)],
    };
    w.walk(b"")?;
    let Walker {
        entries, inodes, ..
    } = w;

    // Sort everything but the root by path bytes, keeping inode keys alongside.
    let mut pairs: Vec<(Entry, (u64, u64))> = entries.into_iter().zip(inodes).collect();
    pairs[1..].sort_unstable_by(|a, b| a.0.path.cmp(&b.0.path));
    let (mut entries, keys): (Vec<Entry>, Vec<(u64, u64)>) = pairs.into_iter().unzip();

    // Inode numbers and hard-link groups (see the module docs).
    if entries.len() >= u32::MAX as usize {
        return Err(TreeError::TooManyEntries);
    }
    let mut groups: HashMap<(u64, u64), Vec<usize>> = HashMap::new();
    for (i, e) in entries.iter_mut().enumerate() {
        e.ino = i as u32 + 1;
        e.nlink = if e.kind == Kind::Dir { 2 } else { 1 };
        e.has_data = true;
        if keys[i] != (0, 0) {
            groups.entry(keys[i]).or_default().push(i);
        }
    }
    for members in groups.values().filter(|m| m.len() > 1) {
        let ino = entries[members[0]].ino;
        let last = members[members.len() - 1];
        for &m in members {
            entries[m].ino = ino;
            entries[m].nlink = members.len() as u32;
            entries[m].has_data = m == last;
        }
    }
    tracing::debug!(root = %root.display(), entries = entries.len(), "scanned tree");
    Ok(Scan {
        root: root.to_path_buf(),
        opts: opts.clone(),
        entries,
    })
}

/// Major number of a Linux `dev_t`.
pub fn dev_major(dev: u64) -> u32 {
    (((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff)) as u32
}

/// Minor number of a Linux `dev_t`.
pub fn dev_minor(dev: u64) -> u32 {
    (((dev >> 12) & 0xffff_ff00) | (dev & 0xff)) as u32
}

impl Scan {
    /// Number of entries, the root included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The scanned root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The entries in archive order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Sum of the sizes of regular file data that will be written (each
    /// hard-link group counted once); the final value of the progress callback.
    pub fn total_bytes(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| e.kind == Kind::File && e.has_data)
            .map(|e| e.size)
            .sum()
    }

    /// SHA-256 over the options and every entry's path, type, mode, owner,
    /// size, mtime and ctime (ns), link target, rdev and hard-link grouping.
    /// Computed from the scan alone; ctime is included so that content
    /// rewritten with a preserved mtime still changes the fingerprint.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"ironwulf-tree-v1\0");
        match self.opts.source_date_epoch {
            Some(t) => {
                h.update([1]);
                h.update(t.to_le_bytes());
            }
            None => h.update([0]),
        }
        h.update([u8::from(self.opts.one_file_system)]);
        h.update((self.opts.excludes.len() as u64).to_le_bytes());
        for x in &self.opts.excludes {
            h.update((x.len() as u64).to_le_bytes());
            h.update(x.as_bytes());
        }
        for e in &self.entries {
            h.update((e.path.len() as u64).to_le_bytes());
            h.update(&e.path);
            h.update([e.kind as u8]);
            for v in [e.perm, e.uid, e.gid, e.ino, e.nlink, u32::from(e.has_data)] {
                h.update(v.to_le_bytes());
            }
            for v in [e.size, e.rdev] {
                h.update(v.to_le_bytes());
            }
            for v in [e.mtime, e.mtime_nsec, e.ctime, e.ctime_nsec] {
                h.update(v.to_le_bytes());
            }
            let t = e.target.as_deref().unwrap_or_default();
            h.update((t.len() as u64).to_le_bytes());
            h.update(t);
        }
        h.finalize().into()
    }

    fn header(&self, e: &Entry) -> Header {
        let mut h = Header::new(e.path.clone(), e.kind, e.perm);
        h.uid = e.uid;
        h.gid = e.gid;
        h.mtime = e.mtime.clamp(0, i64::from(u32::MAX)) as u32;
        h.ino = e.ino;
        h.nlink = e.nlink;
        if matches!(e.kind, Kind::CharDevice | Kind::BlockDevice) {
            h.rdev_major = dev_major(e.rdev);
            h.rdev_minor = dev_minor(e.rdev);
        }
        h.size = match e.kind {
            Kind::File if e.has_data => e.size,
            Kind::Symlink => e.size,
            _ => 0,
        };
        h
    }
}

/// Writes the scanned tree as one uncompressed newc archive (ending with
/// `TRAILER!!!`) into `out` (typically a [`crate::compress::Encoder`]) and
/// returns `out`. `progress` receives the CUMULATIVE number of file-data
/// bytes written so far; its last value equals [`Scan::total_bytes`].
pub fn write_archive<W: Write>(
    scan: &Scan,
    out: W,
    progress: &mut dyn FnMut(u64),
) -> Result<W, TreeError> {
    let mut w = newc::Writer::new(BufWriter::with_capacity(WRITE_BUF, out));
    let mut buf = vec![0u8; READ_BUF];
    let mut done: u64 = 0;
    let newc_err = |e: &Entry, source| TreeError::Newc {
        path: newc::lossy(&e.path),
        source,
    };
    for e in &scan.entries {
        let h = scan.header(e);
        match e.kind {
            Kind::File if h.size > 0 => {
                let path = scan.root.join(e.rel_path());
                let mut f = File::options()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(&path)
                    .map_err(|source| TreeError::Open {
                        path: path.clone(),
                        source,
                    })?;
                w.write_header(&h).map_err(|s| newc_err(e, s))?;
                let mut left = h.size;
                while left > 0 {
                    let want = left.min(buf.len() as u64) as usize;
                    let n = match f.read(&mut buf[..want]) {
                        Ok(0) => return Err(TreeError::Shrank { path }),
                        Ok(n) => n,
                        Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                        Err(source) => return Err(TreeError::Read { path, source }),
                    };
                    w.write_data(&buf[..n]).map_err(|s| newc_err(e, s))?;
                    left -= n as u64;
                    done += n as u64;
                    progress(done);
                }
                w.write_data_pad(h.size).map_err(|s| newc_err(e, s))?;
            }
            Kind::Symlink => {
                let t = e.target.as_deref().unwrap_or_default();
                w.append_bytes(&h, t).map_err(|s| newc_err(e, s))?;
            }
            _ => w.append_bytes(&h, &[]).map_err(|s| newc_err(e, s))?,
        }
    }
    let bw = w.finish().map_err(|source| TreeError::Newc {
        path: "TRAILER!!!".to_string(),
        source,
    })?;
    bw.into_inner()
        .map_err(|e| TreeError::Write(e.into_error()))
}
