//! Copying the unpacked initramfs into a new root, and emptying the old one,
//! both without crossing into other file systems.
//!
//! The copy keeps types, modes, owners, mtimes, device numbers and hard
//! links. Extended attributes are not copied: the kernel's initramfs
//! unpacker cannot set any, so the source has none. With `consume`, each
//! source file is deleted once copied, so a root of N bytes needs about N
//! bytes of RAM during the copy, not 2N.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Errors of copying or clearing a tree; each names the path.
#[derive(Debug, Error)]
pub enum RootfsError {
    #[error("reading {}", .0.display())]
    Read(PathBuf, #[source] io::Error),
    #[error("creating {}", .0.display())]
    Create(PathBuf, #[source] io::Error),
    #[error("copying data to {}", .0.display())]
    Data(PathBuf, #[source] io::Error),
    #[error("setting owner, mode or time of {}", .0.display())]
    Meta(PathBuf, #[source] io::Error),
    #[error("removing {}", .0.display())]
    Remove(PathBuf, #[source] io::Error),
}

/// What a copy did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub nodes: u64,
    pub hardlinks: u64,
    pub bytes: u64,
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::ErrorKind::InvalidInput.into())
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Sets owner (not following symlinks; EPERM ignored when not root), mode
/// (not for symlinks) and mtime.
fn set_meta(p: &Path, m: &fs::Metadata) -> io::Result<()> {
    let c = cpath(p)?;
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    let rc = unsafe { libc::lchown(c.as_ptr(), m.uid(), m.gid()) };
    if let Err(e) = check(rc) {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 || e.raw_os_error() != Some(libc::EPERM) {
            return Err(e);
        }
    }
    if !m.file_type().is_symlink() {
        fs::set_permissions(p, fs::Permissions::from_mode(m.mode() & 0o7777))?;
    }
    let times = [
        libc::timespec {
            tv_sec: m.atime(),
            tv_nsec: m.atime_nsec(),
        },
        libc::timespec {
            tv_sec: m.mtime(),
            tv_nsec: m.mtime_nsec(),
        },
    ];
    // SAFETY: valid path and a two-element timespec array as utimensat requires.
    check(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

struct Copier {
    dev: u64,
    /// The destination directory, to avoid copying into itself.
    dest_id: (u64, u64),
    consume: bool,
    /// First copy and links not yet seen, by source (dev, ino).
    links: HashMap<(u64, u64), (PathBuf, u64)>,
    dirs: Vec<(PathBuf, fs::Metadata)>,
    stats: CopyStats,
}

/// Copies the contents of `src` into the existing directory `dest`.
pub fn copy_tree(src: &Path, dest: &Path, consume: bool) -> Result<CopyStats, RootfsError> {
    let sm = fs::symlink_metadata(src).map_err(|e| RootfsError::Read(src.into(), e))?;
    let dm = fs::symlink_metadata(dest).map_err(|e| RootfsError::Read(dest.into(), e))?;
    let mut c = Copier {
        dev: sm.dev(),
        dest_id: (dm.dev(), dm.ino()),
        consume,
        links: HashMap::new(),
        dirs: Vec::new(),
        stats: CopyStats::default(),
    };
    c.walk(src, dest)?;
    // Directory metadata last: read-only directories stay fillable, and
    // creating entries does not disturb mtimes already set.
    for (p, m) in c.dirs.iter().rev() {
        set_meta(p, m).map_err(|e| RootfsError::Meta(p.clone(), e))?;
    }
    set_meta(dest, &sm).map_err(|e| RootfsError::Meta(dest.into(), e))?;
    Ok(c.stats)
}

impl Copier {
    fn walk(&mut self, src: &Path, dest: &Path) -> Result<(), RootfsError> {
        let rd = fs::read_dir(src).map_err(|e| RootfsError::Read(src.into(), e))?;
        for entry in rd {
            let entry = entry.map_err(|e| RootfsError::Read(src.into(), e))?;
            let sp = entry.path();
            let dp = dest.join(entry.file_name());
            let m = fs::symlink_metadata(&sp).map_err(|e| RootfsError::Read(sp.clone(), e))?;
            if m.dev() != self.dev || (m.dev(), m.ino()) == self.dest_id {
                continue; // another file system (a mount point), or the destination
            }
            let ft = m.file_type();
            if ft.is_dir() {
                match fs::create_dir(&dp) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(RootfsError::Create(dp, e)),
                }
                // Owner-writable while filling; the real mode comes at the end.
                let _ = fs::set_permissions(&dp, fs::Permissions::from_mode(0o700));
                self.walk(&sp, &dp)?;
                self.stats.dirs += 1;
                self.dirs.push((dp, m));
                if self.consume {
                    // Best effort: it may still hold other file systems' mount points.
                    let _ = fs::remove_dir(&sp);
                }
                continue;
            }
            let key = (m.dev(), m.ino());
            // Looked up whatever nlink says now: consuming the first name
            // lowered it. An entry stays only while links remain unseen, so
            // the inode is alive and its number cannot have been reused.
            if let Some((first, left)) = self.links.get_mut(&key) {
                fs::hard_link(&*first, &dp).map_err(|e| RootfsError::Create(dp.clone(), e))?;
                self.stats.hardlinks += 1;
                *left -= 1;
                if *left == 0 {
                    self.links.remove(&key);
                }
            } else {
                if ft.is_file() {
                    let mut from =
                        fs::File::open(&sp).map_err(|e| RootfsError::Read(sp.clone(), e))?;
                    let mut to = fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&dp)
                        .map_err(|e| RootfsError::Create(dp.clone(), e))?;
                    self.stats.bytes += io::copy(&mut from, &mut to)
                        .map_err(|e| RootfsError::Data(dp.clone(), e))?;
                    self.stats.files += 1;
                } else if ft.is_symlink() {
                    let target =
                        fs::read_link(&sp).map_err(|e| RootfsError::Read(sp.clone(), e))?;
                    std::os::unix::fs::symlink(&target, &dp)
                        .map_err(|e| RootfsError::Create(dp.clone(), e))?;
                    self.stats.symlinks += 1;
                } else {
                    let c = cpath(&dp).map_err(|e| RootfsError::Create(dp.clone(), e))?;
                    // SAFETY: valid path; mode carries the node type from lstat.
                    check(unsafe { libc::mknod(c.as_ptr(), m.mode(), m.rdev()) })
                        .map_err(|e| RootfsError::Create(dp.clone(), e))?;
                    self.stats.nodes += 1;
                }
                set_meta(&dp, &m).map_err(|e| RootfsError::Meta(dp.clone(), e))?;
                if m.nlink() > 1 {
                    self.links.insert(key, (dp.clone(), m.nlink() - 1));
                }
            }
            if self.consume {
                fs::remove_file(&sp).map_err(|e| RootfsError::Remove(sp.clone(), e))?;
            }
        }
        Ok(())
    }
}

/// Removes everything below `root` that is on `root`'s file system; mount
/// points (and what is under them) are left alone, as are directories
/// still holding them.
pub fn clear_tree(root: &Path) -> Result<u64, RootfsError> {
    let dev = fs::symlink_metadata(root)
        .map_err(|e| RootfsError::Read(root.into(), e))?
        .dev();
    clear_dir(root, dev)
}

fn clear_dir(dir: &Path, dev: u64) -> Result<u64, RootfsError> {
    let mut removed = 0;
    let rd = fs::read_dir(dir).map_err(|e| RootfsError::Read(dir.into(), e))?;
    for entry in rd {
        let entry = entry.map_err(|e| RootfsError::Read(dir.into(), e))?;
        let p = entry.path();
        let m = fs::symlink_metadata(&p).map_err(|e| RootfsError::Read(p.clone(), e))?;
        if m.dev() != dev {
            continue;
        }
        if m.is_dir() {
            removed += clear_dir(&p, dev)?;
            match fs::remove_dir(&p) {
                Ok(()) => removed += 1,
                // It holds a mount point of another file system.
                Err(e)
                    if e.raw_os_error() == Some(libc::ENOTEMPTY)
                        || e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => return Err(RootfsError::Remove(p, e)),
            }
        } else {
            fs::remove_file(&p).map_err(|e| RootfsError::Remove(p.clone(), e))?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(root: &Path, readonly_dir: bool) {
        fs::create_dir_all(root.join("etc/sub")).expect("mkdir");
        fs::write(root.join("etc/a"), b"hello").expect("write");
        fs::set_permissions(root.join("etc/a"), fs::Permissions::from_mode(0o640)).expect("chmod");
        fs::hard_link(root.join("etc/a"), root.join("etc/sub/a-link")).expect("link");
        std::os::unix::fs::symlink("../etc/a", root.join("etc/sym")).expect("symlink");
        fs::create_dir(root.join("ro")).expect("mkdir");
        fs::write(root.join("ro/f"), b"x").expect("write");
        if readonly_dir {
            fs::set_permissions(root.join("ro"), fs::Permissions::from_mode(0o555)).expect("chmod");
        }
        let fifo = CString::new(root.join("fifo").as_os_str().as_bytes()).expect("no nul");
        // SAFETY: valid path; a fifo needs no privilege.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn copies_everything_and_consumes_source() {
        let src = tempfile::tempdir().expect("tempdir");
        let dst = tempfile::tempdir().expect("tempdir");
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        // Only root may delete from a read-only directory while consuming.
        tree(src.path(), root);
        let mtime = fs::metadata(src.path().join("etc/a"))
            .expect("stat")
            .mtime();
        let stats = copy_tree(src.path(), dst.path(), true).expect("copy");
        assert_eq!(
            stats,
            CopyStats {
                files: 2,
                dirs: 3,
                symlinks: 1,
                nodes: 1,
                hardlinks: 1,
                bytes: 6
            }
        );
        let d = dst.path();
        assert_eq!(fs::read(d.join("etc/a")).expect("read"), b"hello");
        let m = fs::metadata(d.join("etc/a")).expect("stat");
        assert_eq!(m.mode() & 0o7777, 0o640);
        assert_eq!(m.mtime(), mtime);
        assert_eq!(
            m.ino(),
            fs::metadata(d.join("etc/sub/a-link")).expect("stat").ino()
        );
        assert_eq!(
            fs::read_link(d.join("etc/sym")).expect("readlink"),
            Path::new("../etc/a")
        );
        assert!(
            fs::symlink_metadata(d.join("fifo"))
                .expect("stat")
                .file_type()
                .is_fifo_like()
        );
        let ro_mode = if root { 0o555 } else { 0o755 };
        assert_eq!(
            fs::metadata(d.join("ro")).expect("stat").mode() & 0o777,
            ro_mode
        );
        // Consumed: only directories that could not be removed are left.
        let _ = fs::set_permissions(src.path().join("ro"), fs::Permissions::from_mode(0o755));
        assert!(!src.path().join("etc/a").exists());
        assert!(!src.path().join("fifo").exists());
        fs::set_permissions(d.join("ro"), fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    #[test]
    fn clear_removes_all_on_one_device() {
        let dir = tempfile::tempdir().expect("tempdir");
        tree(dir.path(), false);
        let n = clear_tree(dir.path()).expect("clear");
        assert_eq!(n, 8);
        assert_eq!(fs::read_dir(dir.path()).expect("readdir").count(), 0);
    }

    trait FifoLike {
        fn is_fifo_like(&self) -> bool;
    }
    impl FifoLike for fs::FileType {
        fn is_fifo_like(&self) -> bool {
            use std::os::unix::fs::FileTypeExt;
            self.is_fifo()
        }
    }
}
