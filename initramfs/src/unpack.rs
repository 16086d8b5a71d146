//! Safe unpacking of initramfs streams into a directory, with the kernel's
//! semantics (`init/initramfs.c`) and without its trust in the input.
//!
//! Semantics kept from the kernel: members may be concatenated, compressed or
//! not, with zero padding between them; the last entry for a name wins (a
//! file, symlink or node replaces whatever non-directory was there, a
//! directory over an existing directory only updates its metadata, an empty
//! directory is replaced by a non-directory); hard links are resolved by
//! `(devmajor, devminor, ino)` within one archive for entries with
//! `nlink >= 2`, and a later link's data is written into the shared inode.
//!
//! Safety rules added on top: names with a `..` component and absolute names
//! are refused (`./x` and `.` are fine); every parent directory is opened
//! component by component with `O_NOFOLLOW | O_DIRECTORY` relative to its
//! parent's descriptor, so an entry below a symlink is refused and nothing
//! is ever created outside the destination, whatever the links point to.
//! Missing parents are created (mode 0755). Directory modes, owners and mtimes
//! are applied at the end, so that read-only directories can still be filled.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use thiserror::Error;

use crate::compress;
use crate::newc::{self, Header, Kind, NewcError, lossy};

/// Buffer over the compressed input.
const INPUT_BUF: usize = 256 * 1024;
/// Buffer over the decompressed newc stream (headers are read in small pieces).
const NEWC_BUF: usize = 128 * 1024;
/// Copy buffer for file data.
const DATA_BUF: usize = 256 * 1024;
/// Longest symlink target accepted.
const MAX_TARGET: u64 = 4096;

/// Errors of unpacking; each names the entry it concerns.
#[derive(Debug, Error)]
pub enum UnpackError {
    #[error("opening destination {}", .path.display())]
    OpenDest {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading archive")]
    Archive(#[from] NewcError),
    #[error("absolute entry name refused: {name}")]
    Absolute { name: String },
    #[error("entry name with '..' refused: {name}")]
    DotDot { name: String },
    #[error("entry path goes through a symlink, refused: {name}")]
    SymlinkInPath { name: String },
    #[error("entry parent is not a directory: {name}")]
    NotADirectory { name: String },
    #[error("root entry is not a directory: {name}")]
    RootNotDir { name: String },
    #[error("cannot replace non-empty directory: {name}")]
    NonEmptyDir { name: String },
    #[error("opening parent directory of {name}")]
    OpenParent {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("creating directory {name}")]
    Mkdir {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("removing old {name}")]
    Remove {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("creating file {name}")]
    Create {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("writing data of {name}")]
    WriteData {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("reading data of {name}")]
    ReadData {
        name: String,
        #[source]
        source: NewcError,
    },
    #[error("creating symlink {name}")]
    Symlink {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("creating device node or fifo {name}")]
    Mknod {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("creating hard link {name}")]
    Link {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("setting owner of {name}")]
    Chown {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("setting mode of {name}")]
    Chmod {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("setting mtime of {name}")]
    Utime {
        name: String,
        #[source]
        source: io::Error,
    },
}

/// How to unpack.
#[derive(Clone, Debug, Default)]
pub struct UnpackOptions {
    /// Set uid/gid from the archive even when not running as root (failures
    /// are errors). As root, owners are always set.
    pub preserve_owner: bool,
    /// When not root: skip device nodes the kernel refuses to create (EPERM)
    /// instead of failing.
    pub skip_unprivileged_nodes: bool,
}

/// What an unpack did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Entries processed (trailers not counted).
    pub entries: u64,
    /// File data bytes written.
    pub bytes: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Device nodes, fifos and sockets.
    pub nodes: u64,
    /// Entries made as hard links to an earlier entry.
    pub hardlinks: u64,
    /// Device nodes skipped (see [`UnpackOptions::skip_unprivileged_nodes`]).
    pub skipped: u64,
    /// Archives (trailers) seen.
    pub archives: u64,
}

/// Unpacks a stream of concatenated members (each gzip, zstd, xz or plain
/// newc, detected by magic, zero padding skipped) into `dest`.
pub fn unpack<R: Read>(
    input: R,
    dest: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackStats, UnpackError> {
    let decoded = compress::decoder(BufReader::with_capacity(INPUT_BUF, input));
    unpack_newc(decoded, dest, opts)
}

/// Unpacks an uncompressed stream of one or more newc archives (zero padding
/// between them is skipped) into `dest`.
pub fn unpack_newc<R: Read>(
    input: R,
    dest: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackStats, UnpackError> {
    let mut u = Unpacker::new(dest, opts)?;
    let mut r = newc::Reader::new(BufReader::with_capacity(NEWC_BUF, input));
    // An empty (or all-zero) stream holds no archive; the kernel accepts it too.
    if !r.skip_padding()? {
        return Ok(u.stats);
    }
    loop {
        while let Some(h) = r.next_entry()? {
            u.entry(&h, &mut r)?;
        }
        u.stats.archives += 1;
        // The kernel forgets hard-link candidates at each trailer.
        u.links.clear();
        if !r.next_archive()? {
            break;
        }
    }
    u.finish_dirs()?;
    tracing::debug!(dest = %dest.display(), ?u.stats, "unpacked");
    Ok(u.stats)
}

/// Splits a name into components: `.` and empty components dropped, `..`
/// and absolute names refused.
fn components(name: &[u8]) -> Result<Vec<&[u8]>, UnpackError> {
    if name.first() == Some(&b'/') {
        return Err(UnpackError::Absolute { name: lossy(name) });
    }
    let mut out = Vec::new();
    for c in name.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(UnpackError::DotDot { name: lossy(name) }),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Whether an error says the name is taken (by an earlier entry: the last one wins).
fn exists(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EEXIST)
}

fn cstr(c: &[u8]) -> CString {
    CString::new(c).expect("newc reader rejects NUL bytes in names")
}

/// Metadata applied to a directory at the end.
struct DeferredDir {
    comps: Vec<Vec<u8>>,
    name: Vec<u8>,
    perm: u32,
    uid: u32,
    gid: u32,
    mtime: u32,
}

struct Unpacker {
    root: OwnedFd,
    /// Open directories along the last parent path (cache; sorted archives reuse it).
    stack: Vec<(Vec<u8>, OwnedFd)>,
    dirs: Vec<DeferredDir>,
    links: HashMap<(u32, u32, u32, u32), Vec<Vec<u8>>>,
    set_owner: bool,
    opts: UnpackOptions,
    buf: Vec<u8>,
    stats: UnpackStats,
}

impl Unpacker {
    fn new(dest: &Path, opts: &UnpackOptions) -> Result<Self, UnpackError> {
        let root = sys::open_dir(dest).map_err(|source| UnpackError::OpenDest {
            path: dest.to_path_buf(),
            source,
        })?;
        Ok(Unpacker {
            root,
            stack: Vec::new(),
            dirs: Vec::new(),
            links: HashMap::new(),
            set_owner: opts.preserve_owner || sys::is_root(),
            opts: opts.clone(),
            buf: Vec::new(),
            stats: UnpackStats::default(),
        })
    }

    /// The directory holding `comps`' last component, opened without following
    /// symlinks; missing directories are created when `create` is set.
    fn parent(&mut self, comps: &[&[u8]], name: &[u8], create: bool) -> Result<RawFd, UnpackError> {
        let parents = &comps[..comps.len().saturating_sub(1)];
        let keep = self
            .stack
            .iter()
            .zip(parents)
            .take_while(|(s, p)| s.0 == **p)
            .count();
        self.stack.truncate(keep);
        for comp in &parents[keep..] {
            let dir = self
                .stack
                .last()
                .map_or(self.root.as_raw_fd(), |s| s.1.as_raw_fd());
            let c = cstr(comp);
            let fd = match sys::open_dir_at(dir, &c) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create => {
                    match sys::mkdir_at(dir, &c, 0o755) {
                        Ok(()) => {}
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                        Err(source) => {
                            return Err(UnpackError::Mkdir {
                                name: lossy(name),
                                source,
                            });
                        }
                    }
                    sys::open_dir_at(dir, &c).map_err(|source| UnpackError::OpenParent {
                        name: lossy(name),
                        source,
                    })?
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
                    let is_link = sys::lstat_at(dir, &c)
                        .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK)
                        .unwrap_or(false);
                    return Err(if is_link {
                        UnpackError::SymlinkInPath { name: lossy(name) }
                    } else {
                        UnpackError::NotADirectory { name: lossy(name) }
                    });
                }
                Err(source) => {
                    return Err(UnpackError::OpenParent {
                        name: lossy(name),
                        source,
                    });
                }
            };
            self.stack.push((comp.to_vec(), fd));
        }
        Ok(self
            .stack
            .last()
            .map_or(self.root.as_raw_fd(), |s| s.1.as_raw_fd()))
    }

    /// Removes whatever is at `name` in `dir` unless it is a directory and a
    /// directory is wanted; returns whether a directory is already there.
    fn clean(&self, dir: RawFd, c: &CString, kind: Kind, name: &[u8]) -> Result<bool, UnpackError> {
        let st = match sys::lstat_at(dir, c) {
            Ok(st) => st,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(false),
            Err(source) => {
                return Err(UnpackError::Remove {
                    name: lossy(name),
                    source,
                });
            }
        };
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        if is_dir && kind == Kind::Dir {
            return Ok(true);
        }
        match sys::unlink_at(dir, c, is_dir) {
            Ok(()) => Ok(false),
            Err(e)
                if is_dir && matches!(e.raw_os_error(), Some(libc::ENOTEMPTY | libc::EEXIST)) =>
            {
                Err(UnpackError::NonEmptyDir { name: lossy(name) })
            }
            Err(source) => Err(UnpackError::Remove {
                name: lossy(name),
                source,
            }),
        }
    }

    fn entry<R: Read>(&mut self, h: &Header, r: &mut newc::Reader<R>) -> Result<(), UnpackError> {
        self.stats.entries += 1;
        let name = h.name.as_slice();
        let comps = components(name)?;
        let Some(last) = comps.last() else {
            // The root itself ("."), whose metadata the kernel applies too.
            if h.kind != Kind::Dir {
                return Err(UnpackError::RootNotDir { name: lossy(name) });
            }
            self.defer_dir(Vec::new(), h);
            return Ok(());
        };
        let c = cstr(last);
        let dir = self.parent(&comps, name, true)?;
        let link_key = (h.dev_major, h.dev_minor, h.ino, h.kind.type_bits());
        let link_to = if h.nlink >= 2 && h.kind.may_hardlink() {
            match self.links.get(&link_key) {
                Some(first) => Some(first.clone()),
                None => {
                    self.links
                        .insert(link_key, comps.iter().map(|c| c.to_vec()).collect());
                    None
                }
            }
        } else {
            None
        };
        if let Some(first) = link_to {
            return self.hardlink(h, r, &comps, &first);
        }
        match h.kind {
            // Directories and files are created first and only on EEXIST
            // is the old entry looked at: into an empty tree (the common
            // case) that saves a stat per entry.
            Kind::Dir => {
                let made = match sys::mkdir_at(dir, &c, 0o700) {
                    // A directory stays (only its metadata changes); anything
                    // else there is replaced.
                    Err(e) if exists(&e) => match self.clean(dir, &c, Kind::Dir, name)? {
                        true => Ok(()),
                        false => sys::mkdir_at(dir, &c, 0o700),
                    },
                    other => other,
                };
                made.map_err(|source| UnpackError::Mkdir {
                    name: lossy(name),
                    source,
                })?;
                self.stats.dirs += 1;
                self.defer_dir(comps.iter().map(|c| c.to_vec()).collect(), h);
                return Ok(());
            }
            Kind::File => {
                let made = match sys::create_at(dir, &c) {
                    Err(e) if exists(&e) => {
                        self.clean(dir, &c, Kind::File, name)?;
                        sys::create_at(dir, &c)
                    }
                    other => other,
                };
                let fd = made.map_err(|source| UnpackError::Create {
                    name: lossy(name),
                    source,
                })?;
                let mut f = File::from(fd);
                self.copy_data(h, r, &mut f)?;
                self.file_meta(h, &f)?;
                self.stats.files += 1;
            }
            Kind::Symlink => {
                let target = r
                    .data_to_vec(MAX_TARGET)
                    .map_err(|source| UnpackError::ReadData {
                        name: lossy(name),
                        source,
                    })?;
                self.clean(dir, &c, Kind::Symlink, name)?;
                let t = CString::new(target).map_err(|_| UnpackError::Symlink {
                    name: lossy(name),
                    source: io::Error::new(io::ErrorKind::InvalidData, "NUL in target"),
                })?;
                sys::symlink_at(&t, dir, &c).map_err(|source| UnpackError::Symlink {
                    name: lossy(name),
                    source,
                })?;
                self.node_meta(h, dir, &c, false)?;
                self.stats.symlinks += 1;
            }
            Kind::CharDevice | Kind::BlockDevice | Kind::Fifo | Kind::Socket => {
                self.clean(dir, &c, h.kind, name)?;
                let rdev = sys::makedev(h.rdev_major, h.rdev_minor);
                match sys::mknod_at(dir, &c, h.mode(), rdev) {
                    Ok(()) => {}
                    Err(e)
                        if e.raw_os_error() == Some(libc::EPERM)
                            && self.opts.skip_unprivileged_nodes
                            && !sys::is_root() =>
                    {
                        tracing::debug!(name = %lossy(name), "skipping device node: not permitted");
                        self.stats.skipped += 1;
                        self.stack.truncate(comps.len() - 1);
                        return Ok(());
                    }
                    Err(source) => {
                        return Err(UnpackError::Mknod {
                            name: lossy(name),
                            source,
                        });
                    }
                }
                self.node_meta(h, dir, &c, true)?;
                self.stats.nodes += 1;
            }
        }
        // A non-directory may have replaced a directory we held open.
        self.stack.truncate(comps.len() - 1);
        Ok(())
    }

    /// Makes `comps` a hard link to the earlier entry `first` and writes any data into it.
    fn hardlink<R: Read>(
        &mut self,
        h: &Header,
        r: &mut newc::Reader<R>,
        comps: &[&[u8]],
        first: &[Vec<u8>],
    ) -> Result<(), UnpackError> {
        let name = h.name.as_slice();
        let first_refs: Vec<&[u8]> = first.iter().map(Vec::as_slice).collect();
        let first_name = first.join(&b'/');
        // Resolve the first link's parent safely and hold it while resolving ours.
        let old_dir = {
            let fd = self.parent(&first_refs, &first_name, false)?;
            sys::dup(fd).map_err(|source| UnpackError::OpenParent {
                name: lossy(name),
                source,
            })?
        };
        let old_c = cstr(&first[first.len() - 1]);
        let dir = self.parent(comps, name, true)?;
        let c = cstr(comps[comps.len() - 1]);
        let same = first_refs == comps;
        if !same {
            self.clean(dir, &c, h.kind, name)?;
            sys::link_at(old_dir.as_raw_fd(), &old_c, dir, &c).map_err(|source| {
                UnpackError::Link {
                    name: lossy(name),
                    source,
                }
            })?;
        }
        if h.kind == Kind::File {
            let fd = sys::open_write_at(dir, &c).map_err(|source| UnpackError::Create {
                name: lossy(name),
                source,
            })?;
            let mut f = File::from(fd);
            if h.size > 0 {
                f.set_len(0).map_err(|source| UnpackError::WriteData {
                    name: lossy(name),
                    source,
                })?;
                self.copy_data(h, r, &mut f)?;
            }
            self.file_meta(h, &f)?;
        } else {
            self.node_meta(h, dir, &c, true)?;
        }
        self.stats.hardlinks += 1;
        self.stack.truncate(comps.len() - 1);
        Ok(())
    }

    fn copy_data<R: Read>(
        &mut self,
        h: &Header,
        r: &mut newc::Reader<R>,
        f: &mut File,
    ) -> Result<(), UnpackError> {
        if h.size == 0 {
            return Ok(());
        }
        if self.buf.is_empty() {
            self.buf = vec![0u8; DATA_BUF];
        }
        loop {
            let n = r
                .read_data(&mut self.buf)
                .map_err(|source| UnpackError::ReadData {
                    name: lossy(&h.name),
                    source,
                })?;
            if n == 0 {
                return Ok(());
            }
            f.write_all(&self.buf[..n])
                .map_err(|source| UnpackError::WriteData {
                    name: lossy(&h.name),
                    source,
                })?;
            self.stats.bytes += n as u64;
        }
    }

    /// Owner, mode (after chown, which clears set-id bits) and mtime of an open file.
    fn file_meta(&self, h: &Header, f: &File) -> Result<(), UnpackError> {
        let name = || lossy(&h.name);
        if self.set_owner {
            std::os::unix::fs::fchown(f, Some(h.uid), Some(h.gid)).map_err(|source| {
                UnpackError::Chown {
                    name: name(),
                    source,
                }
            })?;
        }
        f.set_permissions(std::fs::Permissions::from_mode(h.perm))
            .map_err(|source| UnpackError::Chmod {
                name: name(),
                source,
            })?;
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(h.mtime));
        f.set_times(std::fs::FileTimes::new().set_accessed(t).set_modified(t))
            .map_err(|source| UnpackError::Utime {
                name: name(),
                source,
            })
    }

    /// Owner, mode (unless a symlink) and mtime of a node in `dir`, not following symlinks.
    fn node_meta(
        &self,
        h: &Header,
        dir: RawFd,
        c: &CString,
        chmod: bool,
    ) -> Result<(), UnpackError> {
        let name = || lossy(&h.name);
        if self.set_owner {
            sys::chown_at(dir, c, h.uid, h.gid).map_err(|source| UnpackError::Chown {
                name: name(),
                source,
            })?;
        }
        if chmod {
            sys::chmod_at(dir, c, h.perm).map_err(|source| UnpackError::Chmod {
                name: name(),
                source,
            })?;
        }
        sys::utime_at(dir, c, h.mtime).map_err(|source| UnpackError::Utime {
            name: name(),
            source,
        })
    }

    fn defer_dir(&mut self, comps: Vec<Vec<u8>>, h: &Header) {
        self.dirs.push(DeferredDir {
            comps,
            name: h.name.clone(),
            perm: h.perm,
            uid: h.uid,
            gid: h.gid,
            mtime: h.mtime,
        });
    }

    /// Applies directory owners, modes and mtimes, deepest paths first so that
    /// nothing touches a directory after its mtime was set.
    fn finish_dirs(&mut self) -> Result<(), UnpackError> {
        let mut dirs = std::mem::take(&mut self.dirs);
        // Stable sort keeps "last entry wins" among duplicates.
        dirs.sort_by_key(|d| std::cmp::Reverse(d.comps.len()));
        for d in &dirs {
            let fd = if d.comps.is_empty() {
                sys::dup(self.root.as_raw_fd())
            } else {
                let refs: Vec<&[u8]> = d.comps.iter().map(Vec::as_slice).collect();
                let parent = match self.parent(&refs, &d.name, false) {
                    Ok(p) => p,
                    // Replaced by a later entry: nothing to apply.
                    Err(UnpackError::SymlinkInPath { .. } | UnpackError::NotADirectory { .. }) => {
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                sys::open_dir_at(parent, &cstr(&d.comps[d.comps.len() - 1]))
            };
            let fd = match fd {
                Ok(fd) => fd,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ELOOP | libc::ENOTDIR | libc::ENOENT)
                    ) =>
                {
                    continue;
                }
                Err(source) => {
                    return Err(UnpackError::OpenParent {
                        name: lossy(&d.name),
                        source,
                    });
                }
            };
            let f = File::from(fd);
            let h = Header {
                uid: d.uid,
                gid: d.gid,
                mtime: d.mtime,
                ..Header::dir(d.name.clone(), d.perm)
            };
            self.file_meta(&h, &f)?;
        }
        Ok(())
    }
}

/// Thin wrappers over the `*at` system calls used above.
mod sys {
    use super::*;

    fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }

    fn owned(fd: libc::c_int) -> OwnedFd {
        // SAFETY: `fd` was just returned by a successful open/dup and is owned by no one else.
        unsafe { OwnedFd::from_raw_fd(fd) }
    }

    pub fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    pub fn makedev(major: u32, minor: u32) -> libc::dev_t {
        let (ma, mi) = (u64::from(major), u64::from(minor));
        ((ma & 0xffff_f000) << 32) | ((ma & 0xfff) << 8) | ((mi & 0xffff_ff00) << 12) | (mi & 0xff)
    }

    pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
        // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
        let fd = cvt(unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        })?;
        Ok(owned(fd))
    }

    pub fn open_dir_at(dir: RawFd, name: &CString) -> io::Result<OwnedFd> {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: `dir` is an open descriptor we own and `name` is NUL-terminated.
        let fd = cvt(unsafe { libc::openat(dir, name.as_ptr(), flags) })?;
        Ok(owned(fd))
    }

    pub fn create_at(dir: RawFd, name: &CString) -> io::Result<OwnedFd> {
        let flags =
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: as in `open_dir_at`; the mode argument is required with O_CREAT.
        let fd = cvt(unsafe { libc::openat(dir, name.as_ptr(), flags, 0o600 as libc::c_uint) })?;
        Ok(owned(fd))
    }

    pub fn open_write_at(dir: RawFd, name: &CString) -> io::Result<OwnedFd> {
        let flags = libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: as in `open_dir_at`.
        let fd = cvt(unsafe { libc::openat(dir, name.as_ptr(), flags) })?;
        Ok(owned(fd))
    }

    pub fn dup(fd: RawFd) -> io::Result<OwnedFd> {
        // SAFETY: `fd` is an open descriptor borrowed for the duration of the call.
        let b = unsafe { BorrowedFd::borrow_raw(fd) };
        b.as_fd().try_clone_to_owned()
    }

    pub fn mkdir_at(dir: RawFd, name: &CString, mode: u32) -> io::Result<()> {
        // SAFETY: `dir` is open and `name` is NUL-terminated.
        cvt(unsafe { libc::mkdirat(dir, name.as_ptr(), mode as libc::mode_t) }).map(drop)
    }

    pub fn lstat_at(dir: RawFd, name: &CString) -> io::Result<libc::stat> {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: `st` points to writable memory of the right size; `name` is NUL-terminated.
        cvt(unsafe {
            libc::fstatat(
                dir,
                name.as_ptr(),
                st.as_mut_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })?;
        // SAFETY: fstatat succeeded, so it filled `st`.
        Ok(unsafe { st.assume_init() })
    }

    pub fn unlink_at(dir: RawFd, name: &CString, is_dir: bool) -> io::Result<()> {
        let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
        // SAFETY: `dir` is open and `name` is NUL-terminated.
        cvt(unsafe { libc::unlinkat(dir, name.as_ptr(), flags) }).map(drop)
    }

    pub fn symlink_at(target: &CString, dir: RawFd, name: &CString) -> io::Result<()> {
        // SAFETY: both strings are NUL-terminated and `dir` is open.
        cvt(unsafe { libc::symlinkat(target.as_ptr(), dir, name.as_ptr()) }).map(drop)
    }

    pub fn mknod_at(dir: RawFd, name: &CString, mode: u32, dev: libc::dev_t) -> io::Result<()> {
        // SAFETY: `dir` is open and `name` is NUL-terminated.
        cvt(unsafe { libc::mknodat(dir, name.as_ptr(), mode as libc::mode_t, dev) }).map(drop)
    }

    pub fn link_at(old_dir: RawFd, old: &CString, new_dir: RawFd, new: &CString) -> io::Result<()> {
        // SAFETY: both descriptors are open; flags 0 means a symlink at `old` is not followed.
        cvt(unsafe { libc::linkat(old_dir, old.as_ptr(), new_dir, new.as_ptr(), 0) }).map(drop)
    }

    pub fn chown_at(dir: RawFd, name: &CString, uid: u32, gid: u32) -> io::Result<()> {
        // SAFETY: `dir` is open and `name` is NUL-terminated; symlinks are not followed.
        cvt(unsafe { libc::fchownat(dir, name.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) })
            .map(drop)
    }

    /// chmod of a node we just created (never a symlink: callers skip those).
    pub fn chmod_at(dir: RawFd, name: &CString, perm: u32) -> io::Result<()> {
        // SAFETY: `dir` is open and `name` is NUL-terminated.
        cvt(unsafe { libc::fchmodat(dir, name.as_ptr(), (perm & 0o7777) as libc::mode_t, 0) })
            .map(drop)
    }

    pub fn utime_at(dir: RawFd, name: &CString, mtime: u32) -> io::Result<()> {
        let t = libc::timespec {
            tv_sec: libc::time_t::from(mtime),
            tv_nsec: 0,
        };
        let times = [t, t];
        // SAFETY: `times` holds two timespecs as utimensat requires; symlinks are not followed.
        cvt(unsafe {
            libc::utimensat(
                dir,
                name.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_normalise_and_refuse() {
        assert_eq!(components(b"./a//b/.").unwrap(), vec![&b"a"[..], b"b"]);
        assert!(components(b".").unwrap().is_empty());
        assert!(matches!(
            components(b"/etc"),
            Err(UnpackError::Absolute { .. })
        ));
        assert!(matches!(
            components(b"a/../../b"),
            Err(UnpackError::DotDot { .. })
        ));
        assert!(matches!(components(b".."), Err(UnpackError::DotDot { .. })));
    }

    #[test]
    fn makedev_inverts_tree_split() {
        for (ma, mi) in [(0, 0), (5, 1), (259, 3), (4095, 1_048_575), (1 << 20, 300)] {
            let d = sys::makedev(ma, mi);
            assert_eq!(
                (crate::tree::dev_major(d), crate::tree::dev_minor(d)),
                (ma, mi)
            );
        }
    }
}
