//! Directory-descriptor file operations that never follow a symlink: every
//! path inside an image is walked component by component with
//! `O_NOFOLLOW | O_DIRECTORY` from the image root's descriptor, so whatever
//! an image (or a layer being applied to it) holds, nothing outside the root
//! is read or written. Used by layer extraction, `image exec` commits and
//! `image syncuser`.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn owned(fd: libc::c_int) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful open and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A name component as a C string; callers pass components split on `/`,
/// which hold no NUL (tar and directory listings cannot carry one).
pub fn cname(c: &[u8]) -> io::Result<CString> {
    CString::new(c).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "NUL byte in a name"))
}

/// Opens a directory by path (the root of an image), following nothing at its last component.
pub fn open_root(path: &Path) -> io::Result<OwnedFd> {
    let c = cname(path.as_os_str().as_bytes())?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    cvt(unsafe { libc::open(c.as_ptr(), flags) }).map(owned)
}

/// Opens directory `name` in `dir`; a symlink there fails with `ELOOP`.
pub fn open_dir_at(dir: RawFd, name: &CString) -> io::Result<OwnedFd> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: valid descriptor and NUL-terminated name.
    cvt(unsafe { libc::openat(dir, name.as_ptr(), flags) }).map(owned)
}

/// Creates regular file `name` in `dir`, failing if anything is there.
pub fn create_at(dir: RawFd, name: &CString, mode: u32) -> io::Result<File> {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: valid descriptor and NUL-terminated name.
    cvt(unsafe { libc::openat(dir, name.as_ptr(), flags, mode as libc::c_uint) })
        .map(|fd| File::from(owned(fd)))
}

/// Opens regular file `name` in `dir` for reading and writing, not following a symlink.
pub fn open_file_at(dir: RawFd, name: &CString) -> io::Result<File> {
    let flags = libc::O_RDWR | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: valid descriptor and NUL-terminated name.
    cvt(unsafe { libc::openat(dir, name.as_ptr(), flags) }).map(|fd| File::from(owned(fd)))
}

pub fn mkdir_at(dir: RawFd, name: &CString, mode: u32) -> io::Result<()> {
    // SAFETY: valid descriptor and NUL-terminated name.
    cvt(unsafe { libc::mkdirat(dir, name.as_ptr(), mode as libc::mode_t) }).map(drop)
}

/// `lstat` relative to `dir`.
pub fn lstat_at(dir: RawFd, name: &CString) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is a valid out pointer; descriptor and name are valid.
    cvt(unsafe {
        libc::fstatat(
            dir,
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    // SAFETY: fstatat succeeded and filled `st`.
    Ok(unsafe { st.assume_init() })
}

/// `lstat` of `name` in `dir`, `None` when nothing is there.
pub fn try_lstat_at(dir: RawFd, name: &CString) -> io::Result<Option<libc::stat>> {
    match lstat_at(dir, name) {
        Ok(st) => Ok(Some(st)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

pub fn unlink_at(dir: RawFd, name: &CString, is_dir: bool) -> io::Result<()> {
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: valid descriptor and NUL-terminated name.
    cvt(unsafe { libc::unlinkat(dir, name.as_ptr(), flags) }).map(drop)
}

pub fn symlink_at(target: &CString, dir: RawFd, name: &CString) -> io::Result<()> {
    // SAFETY: valid descriptor and NUL-terminated strings.
    cvt(unsafe { libc::symlinkat(target.as_ptr(), dir, name.as_ptr()) }).map(drop)
}

pub fn mknod_at(dir: RawFd, name: &CString, mode: u32, dev: libc::dev_t) -> io::Result<()> {
    // SAFETY: valid descriptor and NUL-terminated name.
    cvt(unsafe { libc::mknodat(dir, name.as_ptr(), mode as libc::mode_t, dev) }).map(drop)
}

/// Hard link; a symlink at `old` is linked itself, never followed.
pub fn link_at(old_dir: RawFd, old: &CString, new_dir: RawFd, new: &CString) -> io::Result<()> {
    // SAFETY: valid descriptors and NUL-terminated names; flags 0 = do not follow.
    cvt(unsafe { libc::linkat(old_dir, old.as_ptr(), new_dir, new.as_ptr(), 0) }).map(drop)
}

pub fn rename_at(old_dir: RawFd, old: &CString, new_dir: RawFd, new: &CString) -> io::Result<()> {
    // SAFETY: valid descriptors and NUL-terminated names.
    cvt(unsafe { libc::renameat(old_dir, old.as_ptr(), new_dir, new.as_ptr()) }).map(drop)
}

/// `lchown` relative to `dir`.
pub fn chown_at(dir: RawFd, name: &CString, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: valid descriptor and NUL-terminated name.
    cvt(unsafe { libc::fchownat(dir, name.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) })
        .map(drop)
}

/// `chmod` of a non-symlink relative to `dir` (the caller knows it is not one).
pub fn chmod_at(dir: RawFd, name: &CString, perm: u32) -> io::Result<()> {
    // SAFETY: valid descriptor and NUL-terminated name.
    cvt(unsafe { libc::fchmodat(dir, name.as_ptr(), perm as libc::mode_t, 0) }).map(drop)
}

/// Sets access and modification time, not following a symlink.
pub fn utime_at(dir: RawFd, name: &CString, secs: i64) -> io::Result<()> {
    let t = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: 0,
    };
    let times = [t, t];
    // SAFETY: valid descriptor, name and a two-element timespec array.
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

/// The path of `name` in `dir` through `/proc/self/fd`, which resolves the
/// directory by descriptor (not by name) and leaves the last component to the
/// `l*` call that uses it.
fn proc_path(dir: RawFd, name: &CString) -> io::Result<CString> {
    let mut p = format!("/proc/self/fd/{dir}/").into_bytes();
    p.extend_from_slice(name.as_bytes());
    cname(&p)
}

/// `lsetxattr` of `name` in `dir`.
pub fn set_xattr_at(dir: RawFd, name: &CString, key: &[u8], value: &[u8]) -> io::Result<()> {
    let path = proc_path(dir, name)?;
    let key = cname(key)?;
    // SAFETY: valid NUL-terminated path and key; value pointer and length match.
    cvt(unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            key.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map(drop)
}

/// `lgetxattr` of `name` in `dir`; `None` when the attribute is not set.
pub fn get_xattr_at(dir: RawFd, name: &CString, key: &str) -> io::Result<Option<Vec<u8>>> {
    let path = proc_path(dir, name)?;
    let key = cname(key.as_bytes())?;
    let mut buf = vec![0u8; 256];
    // SAFETY: valid NUL-terminated path and key; buffer pointer and length match.
    let r = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            key.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENODATA | libc::ENOTSUP) => Ok(None),
            _ => Err(e),
        };
    }
    buf.truncate(r as usize);
    Ok(Some(buf))
}

/// Extended attributes as `(name, value)` pairs.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Every `(key, value)` extended attribute of `name` in `dir`.
pub fn list_xattrs_at(dir: RawFd, name: &CString) -> io::Result<Xattrs> {
    let path = proc_path(dir, name)?;
    let mut keys = vec![0u8; 4096];
    // SAFETY: valid NUL-terminated path; buffer pointer and length match.
    let r = unsafe { libc::llistxattr(path.as_ptr(), keys.as_mut_ptr().cast(), keys.len()) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOTSUP) => Ok(Vec::new()),
            _ => Err(e),
        };
    }
    keys.truncate(r as usize);
    let mut out = Vec::new();
    for key in keys.split(|&b| b == 0).filter(|k| !k.is_empty()) {
        let k = String::from_utf8_lossy(key).into_owned();
        if let Some(v) = get_xattr_at(dir, name, &k)? {
            out.push((key.to_vec(), v));
        }
    }
    Ok(out)
}

/// Names in the directory open at `dir` (without `.` and `..`).
pub fn list_dir(dir: RawFd) -> io::Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(format!("/proc/self/fd/{dir}"))? {
        names.push(e?.file_name().as_bytes().to_vec());
    }
    names.sort();
    Ok(names)
}

/// Removes `name` in `dir` and, if it is a directory, everything below it,
/// without following any symlink. Nothing there is not an error.
pub fn remove_all_at(dir: RawFd, name: &CString) -> io::Result<()> {
    let Some(st) = try_lstat_at(dir, name)? else {
        return Ok(());
    };
    if is_dir(&st) {
        let sub = open_dir_at(dir, name)?;
        clear_dir(sub.as_raw_fd())?;
    }
    unlink_at(dir, name, is_dir(&st))
}

/// Removes everything inside the directory open at `dir`.
pub fn clear_dir(dir: RawFd) -> io::Result<()> {
    for child in list_dir(dir)? {
        remove_all_at(dir, &cname(&child)?)?;
    }
    Ok(())
}

/// `makedev` for device nodes.
pub fn makedev(major: u32, minor: u32) -> libc::dev_t {
    libc::makedev(major, minor)
}

/// Whether this process may set owners and create device nodes.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `lremovexattr` of `name` in `dir`.
pub fn remove_xattr_at(dir: RawFd, name: &CString, key: &[u8]) -> io::Result<()> {
    let path = proc_path(dir, name)?;
    let key = cname(key)?;
    // SAFETY: valid NUL-terminated path and key.
    cvt(unsafe { libc::lremovexattr(path.as_ptr(), key.as_ptr()) }).map(drop)
}
