//! Applying one image layer, a tar stream, onto a root directory: the OCI
//! layer rules (whiteouts `.wh.NAME`, opaque directories `.wh..wh..opq`,
//! later entries replace earlier ones, a file replaces a directory) with the
//! safety rules of [`initramfs::unpack`]: absolute names and `..` are refused,
//! and every parent is opened component by component with `O_NOFOLLOW`, so an
//! entry (or a hard link's target) below a symlink is refused and nothing is
//! ever written outside the root. Hard links, symlinks, device nodes, fifos,
//! owners, modes, mtimes and `SCHILY.xattr.*` extended attributes are kept.

use std::collections::HashSet;
use std::ffi::CString;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use tar::EntryType;
use thiserror::Error;

use super::fsat;

/// Prefix of a whiteout entry's file name.
const WHITEOUT: &[u8] = b".wh.";
/// File name marking its directory opaque.
const OPAQUE: &[u8] = b".wh..wh..opq";
/// PAX key prefix carrying an extended attribute.
const PAX_XATTR: &str = "SCHILY.xattr.";

/// Errors of applying a layer; each names the entry it concerns.
#[derive(Debug, Error)]
pub enum LayerError {
    #[error("opening root {}", .path.display())]
    OpenRoot {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading the tar stream")]
    Read(#[source] io::Error),
    #[error("absolute entry name refused: {name}")]
    Absolute { name: String },
    #[error("entry name with '..' refused: {name}")]
    DotDot { name: String },
    #[error("entry path goes through a symlink, refused: {name}")]
    SymlinkInPath { name: String },
    #[error("entry parent is not a directory: {name}")]
    NotADirectory { name: String },
    #[error("hard link {name} has an empty target")]
    EmptyLink { name: String },
    #[error("unsupported tar entry type {kind:?}: {name}")]
    Unsupported { name: String, kind: u8 },
    #[error("{what} {name}")]
    Io {
        what: &'static str,
        name: String,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, name: &'a [u8]) -> impl FnOnce(io::Error) -> LayerError + 'a {
    move |source| LayerError::Io {
        what,
        name: lossy(name),
        source,
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// How to apply a layer.
#[derive(Clone, Copy, Debug, Default)]
pub struct LayerOptions {
    /// Interpret `.wh.` entries as OCI whiteouts (image layers); off for a
    /// plain tarball, where they are ordinary files.
    pub whiteouts: bool,
}

/// What applying a layer did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayerStats {
    pub entries: u64,
    /// File data bytes written.
    pub bytes: u64,
    pub whiteouts: u64,
    pub opaque_dirs: u64,
    pub hardlinks: u64,
}

/// Applies the tar stream `input` onto `root`.
pub fn apply<R: Read>(
    input: R,
    root: &Path,
    opts: &LayerOptions,
) -> Result<LayerStats, LayerError> {
    let root_fd = fsat::open_root(root).map_err(|source| LayerError::OpenRoot {
        path: root.to_path_buf(),
        source,
    })?;
    let mut a = Applier {
        root: root_fd,
        opts: *opts,
        written: HashSet::new(),
        dirs: Vec::new(),
        set_owner: fsat::is_root(),
        stats: LayerStats::default(),
        parent: None,
        parent_stale: false,
    };
    let mut archive = tar::Archive::new(input);
    for entry in archive.entries().map_err(LayerError::Read)? {
        let mut entry = entry.map_err(LayerError::Read)?;
        a.entry(&mut entry)?;
    }
    a.finish_dirs()?;
    Ok(a.stats)
}

/// Splits a name into components: `.` and empty ones dropped, `..` and
/// absolute names refused.
pub fn components(name: &[u8]) -> Result<Vec<&[u8]>, LayerError> {
    if name.first() == Some(&b'/') {
        return Err(LayerError::Absolute { name: lossy(name) });
    }
    let mut out = Vec::new();
    for c in name.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(LayerError::DotDot { name: lossy(name) }),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Opens the directory `comps` below `root` without following symlinks,
/// creating missing directories (0755) when `create` is set.
pub fn open_path(
    root: &OwnedFd,
    comps: &[&[u8]],
    name: &[u8],
    create: bool,
) -> Result<OwnedFd, LayerError> {
    let mut cur = fsat::open_dir_at(root.as_raw_fd(), &c".".to_owned())
        .map_err(io_err("opening the root for", name))?;
    for comp in comps {
        let c = fsat::cname(comp).map_err(io_err("bad name", name))?;
        let next = match fsat::open_dir_at(cur.as_raw_fd(), &c) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create => {
                match fsat::mkdir_at(cur.as_raw_fd(), &c, 0o755) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                    Err(e) => return Err(io_err("creating a parent directory of", name)(e)),
                }
                fsat::open_dir_at(cur.as_raw_fd(), &c)
                    .map_err(io_err("opening a parent directory of", name))?
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
                let is_link = fsat::lstat_at(cur.as_raw_fd(), &c)
                    .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK)
                    .unwrap_or(false);
                return Err(if is_link {
                    LayerError::SymlinkInPath { name: lossy(name) }
                } else {
                    LayerError::NotADirectory { name: lossy(name) }
                });
            }
            Err(e) => return Err(io_err("opening a parent directory of", name)(e)),
        };
        cur = next;
    }
    Ok(cur)
}

/// Directory metadata applied after all entries, so that writing children
/// does not disturb mtimes and read-only directories can still be filled.
struct DeferredDir {
    path: Vec<u8>,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
}

struct Applier {
    root: OwnedFd,
    opts: LayerOptions,
    /// Paths this layer wrote; an opaque marker keeps them.
    written: HashSet<Vec<u8>>,
    dirs: Vec<DeferredDir>,
    set_owner: bool,
    stats: LayerStats,
    /// The open parent directory of the last entry, by path: tar streams
    /// are mostly sorted, so consecutive entries share it.
    parent: Option<(Vec<u8>, OwnedFd)>,
    /// Set when a directory was removed, which may have been `parent` or an
    /// ancestor of it; the next entry then opens its parent afresh.
    parent_stale: bool,
}

impl Applier {
    /// The parent directory of an entry, opened safely (and created).
    fn parent_fd(&mut self, parents: &[&[u8]], name: &[u8]) -> Result<RawFd, LayerError> {
        let key = parents.join(&b'/');
        if self.parent_stale || self.parent.as_ref().is_none_or(|(k, _)| *k != key) {
            self.parent = None;
            self.parent_stale = false;
            let fd = open_path(&self.root, parents, name, true)?;
            self.parent = Some((key, fd));
        }
        Ok(self.parent.as_ref().expect("set just above").1.as_raw_fd())
    }

    /// Removes whatever is at `c` in `dir` (recursively), noting when a
    /// directory went away.
    fn replace(&mut self, dir: RawFd, c: &CString, name: &[u8]) -> Result<(), LayerError> {
        if let Some(st) = fsat::try_lstat_at(dir, c).map_err(io_err("inspecting", name))? {
            if fsat::is_dir(&st) {
                self.parent_stale = true;
            }
            fsat::remove_all_at(dir, c).map_err(io_err("replacing", name))?;
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), LayerError> {
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader) {
            return Ok(());
        }
        self.stats.entries += 1;
        let name = entry.path_bytes().into_owned();
        let comps = components(&name)?;
        let joined = comps.join(&b'/');
        let Some((last, parents)) = comps.split_last() else {
            // The root itself: only its metadata.
            if kind.is_dir() {
                self.defer_dir(Vec::new(), entry.header())?;
            }
            return Ok(());
        };
        if self.opts.whiteouts && last.starts_with(WHITEOUT) {
            return self.whiteout(parents, last, &name);
        }
        let dfd = self.parent_fd(parents, &name)?;
        let c = fsat::cname(last).map_err(io_err("bad name", &name))?;
        let h = entry.header().clone();
        let mode = h.mode().map_err(LayerError::Read)? & 0o7777;
        let uid = h.uid().map_err(LayerError::Read)? as u32;
        let gid = h.gid().map_err(LayerError::Read)? as u32;
        let mtime = h.mtime().map_err(LayerError::Read)? as i64;
        let xattrs = xattrs(entry)?;
        match kind {
            EntryType::Directory => {
                let existing = fsat::try_lstat_at(dfd, &c).map_err(io_err("inspecting", &name))?;
                match existing {
                    Some(st) if fsat::is_dir(&st) => {}
                    other => {
                        if other.is_some() {
                            self.replace(dfd, &c, &name)?;
                        }
                        fsat::mkdir_at(dfd, &c, 0o700)
                            .map_err(io_err("creating directory", &name))?;
                    }
                }
                self.set_xattrs(dfd, &c, &xattrs, &name)?;
                self.written.insert(joined.clone());
                self.dirs.push(DeferredDir {
                    path: joined,
                    mode,
                    uid,
                    gid,
                    mtime,
                });
                return Ok(());
            }
            EntryType::Regular | EntryType::Continuous => {
                self.replace(dfd, &c, &name)?;
                let mut f =
                    fsat::create_at(dfd, &c, 0o600).map_err(io_err("creating file", &name))?;
                self.stats.bytes +=
                    io::copy(entry, &mut f).map_err(io_err("writing data of", &name))?;
                if self.set_owner {
                    std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
                        .map_err(io_err("setting owner of", &name))?;
                }
                fsat::chmod_at(dfd, &c, mode).map_err(io_err("setting mode of", &name))?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let t = fsat::cname(&target).map_err(io_err("bad symlink target of", &name))?;
                self.replace(dfd, &c, &name)?;
                fsat::symlink_at(&t, dfd, &c).map_err(io_err("creating symlink", &name))?;
                if self.set_owner {
                    fsat::chown_at(dfd, &c, uid, gid).map_err(io_err("setting owner of", &name))?;
                }
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let tcomps = components(&target)?;
                let Some((tlast, tparents)) = tcomps.split_last() else {
                    return Err(LayerError::EmptyLink { name: lossy(&name) });
                };
                let tdir = open_path(&self.root, tparents, &target, false)?;
                let tc = fsat::cname(tlast).map_err(io_err("bad link target of", &name))?;
                if tcomps != comps {
                    self.replace(dfd, &c, &name)?;
                    fsat::link_at(tdir.as_raw_fd(), &tc, dfd, &c)
                        .map_err(io_err("creating hard link", &name))?;
                }
                self.stats.hardlinks += 1;
                self.written.insert(joined);
                // The link shares the target's inode and metadata.
                return Ok(());
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let major = h.device_major().map_err(LayerError::Read)?.unwrap_or(0);
                let minor = h.device_minor().map_err(LayerError::Read)?.unwrap_or(0);
                let fmt = match kind {
                    EntryType::Char => libc::S_IFCHR,
                    EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                self.replace(dfd, &c, &name)?;
                fsat::mknod_at(dfd, &c, fmt | mode, fsat::makedev(major, minor))
                    .map_err(io_err("creating device node", &name))?;
                if self.set_owner {
                    fsat::chown_at(dfd, &c, uid, gid).map_err(io_err("setting owner of", &name))?;
                }
                fsat::chmod_at(dfd, &c, mode).map_err(io_err("setting mode of", &name))?;
            }
            other => {
                return Err(LayerError::Unsupported {
                    name: lossy(&name),
                    kind: other.as_byte(),
                });
            }
        }
        // After chown, which clears security.capability.
        self.set_xattrs(dfd, &c, &xattrs, &name)?;
        fsat::utime_at(dfd, &c, mtime).map_err(io_err("setting mtime of", &name))?;
        self.written.insert(joined);
        Ok(())
    }

    fn whiteout(&mut self, parents: &[&[u8]], last: &[u8], name: &[u8]) -> Result<(), LayerError> {
        self.parent_stale = true;
        let dir = open_path(&self.root, parents, name, true)?;
        if last == OPAQUE {
            let prefix = parents.join(&b'/');
            self.clear_lower(&dir, &prefix, name)?;
            self.stats.opaque_dirs += 1;
        } else {
            let target = &last[WHITEOUT.len()..];
            if target.is_empty() || target == b"." || target == b".." {
                return Err(LayerError::DotDot { name: lossy(name) });
            }
            let c = fsat::cname(target).map_err(io_err("bad name", name))?;
            fsat::remove_all_at(dir.as_raw_fd(), &c).map_err(io_err("applying whiteout", name))?;
            self.stats.whiteouts += 1;
        }
        Ok(())
    }

    /// Removes everything in `dir` (path `prefix`) that this layer did not write.
    fn clear_lower(&self, dir: &OwnedFd, prefix: &[u8], name: &[u8]) -> Result<(), LayerError> {
        let children = fsat::list_dir(dir.as_raw_fd()).map_err(io_err("listing", name))?;
        for child in children {
            let mut path = prefix.to_vec();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(&child);
            let c = fsat::cname(&child).map_err(io_err("bad name", name))?;
            if !self.written.contains(&path) {
                fsat::remove_all_at(dir.as_raw_fd(), &c)
                    .map_err(io_err("applying opaque marker", name))?;
                continue;
            }
            let st = fsat::lstat_at(dir.as_raw_fd(), &c).map_err(io_err("inspecting", name))?;
            if fsat::is_dir(&st) {
                let sub =
                    fsat::open_dir_at(dir.as_raw_fd(), &c).map_err(io_err("opening", name))?;
                self.clear_lower(&sub, &path, name)?;
            }
        }
        Ok(())
    }

    fn set_xattrs(
        &self,
        dir: i32,
        c: &CString,
        xattrs: &fsat::Xattrs,
        name: &[u8],
    ) -> Result<(), LayerError> {
        for (k, v) in xattrs {
            fsat::set_xattr_at(dir, c, k, v).map_err(io_err("setting an xattr of", name))?;
        }
        Ok(())
    }

    fn defer_dir(&mut self, path: Vec<u8>, h: &tar::Header) -> Result<(), LayerError> {
        self.dirs.push(DeferredDir {
            path,
            mode: h.mode().map_err(LayerError::Read)? & 0o7777,
            uid: h.uid().map_err(LayerError::Read)? as u32,
            gid: h.gid().map_err(LayerError::Read)? as u32,
            mtime: h.mtime().map_err(LayerError::Read)? as i64,
        });
        Ok(())
    }

    /// Owners, modes and mtimes of directories, deepest first.
    fn finish_dirs(&mut self) -> Result<(), LayerError> {
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.path.iter().filter(|&&b| b == b'/').count()));
        for d in &dirs {
            let comps: Vec<&[u8]> = d
                .path
                .split(|&b| b == b'/')
                .filter(|c| !c.is_empty())
                .collect();
            let (dir, c) = match comps.split_last() {
                None => (
                    fsat::open_dir_at(self.root.as_raw_fd(), &c".".to_owned())
                        .map_err(io_err("opening", &d.path))?,
                    c".".to_owned(),
                ),
                Some((last, parents)) => {
                    let dir = match open_path(&self.root, parents, &d.path, false) {
                        Ok(dir) => dir,
                        // Replaced or removed by a later entry: nothing to apply.
                        Err(
                            LayerError::SymlinkInPath { .. }
                            | LayerError::NotADirectory { .. }
                            | LayerError::Io { .. },
                        ) => continue,
                        Err(e) => return Err(e),
                    };
                    (dir, fsat::cname(last).map_err(io_err("bad name", &d.path))?)
                }
            };
            match fsat::try_lstat_at(dir.as_raw_fd(), &c) {
                Ok(Some(st)) if fsat::is_dir(&st) => {}
                _ => continue,
            }
            if self.set_owner {
                fsat::chown_at(dir.as_raw_fd(), &c, d.uid, d.gid)
                    .map_err(io_err("setting owner of", &d.path))?;
            }
            fsat::chmod_at(dir.as_raw_fd(), &c, d.mode)
                .map_err(io_err("setting mode of", &d.path))?;
            fsat::utime_at(dir.as_raw_fd(), &c, d.mtime)
                .map_err(io_err("setting mtime of", &d.path))?;
        }
        Ok(())
    }
}

/// The entry's `SCHILY.xattr.*` PAX records as `(name, value)`.
fn xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<fsat::Xattrs, LayerError> {
    let mut out = Vec::new();
    if let Some(exts) = entry.pax_extensions().map_err(LayerError::Read)? {
        for ext in exts {
            let ext = ext.map_err(LayerError::Read)?;
            if let Ok(key) = ext.key()
                && let Some(attr) = key.strip_prefix(PAX_XATTR)
            {
                out.push((attr.as_bytes().to_vec(), ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(matches!(
            components(b"/etc/passwd"),
            Err(LayerError::Absolute { .. })
        ));
        assert!(matches!(
            components(b"a/../../x"),
            Err(LayerError::DotDot { .. })
        ));
        assert_eq!(components(b"./a//b/.").unwrap(), vec![&b"a"[..], b"b"]);
    }

    fn tar_of(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_ustar();
            h.set_size(0);
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            match data {
                Some(d) => {
                    h.set_entry_type(EntryType::Regular);
                    h.set_size(d.len() as u64);
                    h.set_mode(0o644);
                    b.append_data(&mut h, path, *d).unwrap();
                }
                None => {
                    h.set_entry_type(EntryType::Directory);
                    h.set_mode(0o755);
                    b.append_data(&mut h, path, &[][..]).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn file_replacing_a_directory_drops_the_cached_parent() {
        let dir = tempfile::tempdir().unwrap();
        let tar = tar_of(&[
            ("a/", None),
            ("a/x", Some(b"x")),
            ("a", Some(b"file")),
            ("a/y", Some(b"y")),
        ]);
        let err = apply(&tar[..], dir.path(), &LayerOptions::default()).unwrap_err();
        assert!(matches!(err, LayerError::NotADirectory { .. }), "{err}");
        assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), b"file");
    }

    #[test]
    fn whiteout_of_the_cached_parent_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let base = tar_of(&[("d/", None), ("d/old", Some(b"o"))]);
        apply(&base[..], dir.path(), &LayerOptions { whiteouts: true }).unwrap();
        let upper = tar_of(&[
            ("d/new", Some(b"n")),
            (".wh.d", Some(b"")),
            ("d/again", Some(b"a")),
        ]);
        let stats = apply(&upper[..], dir.path(), &LayerOptions { whiteouts: true }).unwrap();
        assert_eq!(stats.whiteouts, 1);
        let mut names: Vec<_> = std::fs::read_dir(dir.path().join("d"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["again"]);
    }
}
