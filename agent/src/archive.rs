//! Staging a runtime overlay: the HTTP body is decompressed (gzip, zstd, xz
//! or plain, concatenated members) and read as newc, streaming. Directory,
//! symlink and ownership data are kept in memory; file contents go to an
//! unlinked spool file in the state directory, hashed on the way, so memory
//! stays flat whatever the overlay's size. Nothing under the target root is
//! touched until the whole archive has been read to its trailer.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use initramfs::newc::{Kind, NewcError, Reader};
use sha2::{Digest, Sha256};

use crate::log;

/// Read buffer for the compressed and the decompressed stream.
const STREAM_BUF: usize = 64 * 1024;
/// Longest symlink target accepted.
const MAX_LINK_TARGET: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("creating the spool file in {}", .0.display())]
    Spool(PathBuf, #[source] io::Error),
    #[error("writing the spool file")]
    SpoolWrite(#[source] io::Error),
    #[error("reading the runtime overlay")]
    Newc(#[from] NewcError),
}

/// What an entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// A regular file: `len` bytes at `offset` of the spool.
    File {
        offset: u64,
        len: u64,
        sha256: [u8; 32],
    },
    Dir,
    Symlink(String),
}

/// One entry of the overlay, by its path relative to the root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub content: Content,
    /// Permission bits (`0o7777`).
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
}

/// A fully read overlay: entries by relative path ("last entry wins"), and
/// the spool holding file contents.
pub struct Staged {
    pub entries: BTreeMap<PathBuf, Entry>,
    spool: File,
}

impl Staged {
    /// Copies a file's content from the spool into `out`.
    pub fn copy_content(&self, offset: u64, len: u64, out: &mut impl Write) -> io::Result<()> {
        let mut buf = vec![0u8; STREAM_BUF.min(len as usize).max(1)];
        let mut done = 0u64;
        while done < len {
            let want = (len - done).min(buf.len() as u64) as usize;
            let n = self.spool.read_at(&mut buf[..want], offset + done)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "spool file truncated",
                ));
            }
            out.write_all(&buf[..n])?;
            done += n as u64;
        }
        Ok(())
    }
}

/// Reads a (compressed) newc stream to its end.
pub fn stage(body: impl Read, spool_dir: &Path) -> Result<Staged, ArchiveError> {
    let spool = create_spool(spool_dir)?;
    let decoded = initramfs::compress::decoder(BufReader::with_capacity(STREAM_BUF, body));
    let mut reader = Reader::new(BufReader::with_capacity(STREAM_BUF, decoded));
    let mut entries: BTreeMap<PathBuf, Entry> = BTreeMap::new();
    // Hard links: files sharing (dev, ino) with nlink > 1 share content.
    let mut links: HashMap<(u32, u32, u32), Vec<PathBuf>> = HashMap::new();
    let mut spooled = 0u64;
    let mut buf = vec![0u8; STREAM_BUF];
    let mut skipped = 0usize;
    loop {
        let Some(h) = reader.next_entry()? else {
            if reader.next_archive()? {
                continue;
            }
            break;
        };
        let Some(path) = relative_path(&h.name) else {
            if !matches!(clean_name(&h.name), Some(ref p) if p.as_os_str().is_empty()) {
                skipped += 1;
                log::warn!(
                    "skipping unsafe path {:?} in the runtime overlay",
                    String::from_utf8_lossy(&h.name)
                );
            }
            continue;
        };
        let content = match h.kind {
            Kind::Dir => Content::Dir,
            Kind::Symlink => {
                let target = reader.data_to_vec(MAX_LINK_TARGET)?;
                match String::from_utf8(target) {
                    Ok(t) if !t.is_empty() && !t.contains('\0') => Content::Symlink(t),
                    _ => {
                        skipped += 1;
                        log::warn!(
                            "skipping symlink {} with an empty or non-UTF-8 target",
                            path.display()
                        );
                        continue;
                    }
                }
            }
            Kind::File => {
                let offset = spooled;
                let mut hasher = Sha256::new();
                let mut data = reader.data();
                loop {
                    let n = match data.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(ArchiveError::Newc(NewcError::Read(e))),
                    };
                    hasher.update(&buf[..n]);
                    spool
                        .write_all_at(&buf[..n], spooled)
                        .map_err(ArchiveError::SpoolWrite)?;
                    spooled += n as u64;
                }
                let content = Content::File {
                    offset,
                    len: spooled - offset,
                    sha256: hasher.finalize().into(),
                };
                if h.nlink > 1 {
                    let key = (h.dev_major, h.dev_minor, h.ino);
                    let group = links.entry(key).or_default();
                    if spooled > offset {
                        // The data comes with the last link (GNU cpio): earlier links share it.
                        for p in group.iter() {
                            if let Some(e) = entries.get_mut(p) {
                                e.content = content.clone();
                            }
                        }
                    } else if let Some(first) = group.first().and_then(|p| entries.get(p)) {
                        let shared = first.content.clone();
                        group.push(path.clone());
                        entries.insert(
                            path,
                            Entry {
                                content: shared,
                                perm: h.perm,
                                uid: h.uid,
                                gid: h.gid,
                            },
                        );
                        continue;
                    }
                    group.push(path.clone());
                }
                content
            }
            other => {
                skipped += 1;
                log::warn!(
                    "skipping {other:?} {} (only files, directories and symlinks are applied)",
                    path.display()
                );
                continue;
            }
        };
        entries.insert(
            path,
            Entry {
                content,
                perm: h.perm & 0o7777,
                uid: h.uid,
                gid: h.gid,
            },
        );
    }
    log::debug!(
        "staged {} entries ({spooled} file bytes, {skipped} skipped)",
        entries.len()
    );
    Ok(Staged { entries, spool })
}

/// An anonymous file in `dir`: created, then unlinked at once.
fn create_spool(dir: &Path) -> Result<File, ArchiveError> {
    let err = |e| ArchiveError::Spool(dir.to_owned(), e);
    fs::create_dir_all(dir).map_err(err)?;
    for n in 0..100u32 {
        let path = dir.join(format!(".spool-{}-{n}", std::process::id()));
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => {
                fs::remove_file(&path).map_err(err)?;
                return Ok(f);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // A spool of an earlier run killed before unlinking it.
                let _ = fs::remove_file(&path);
            }
            Err(e) => return Err(err(e)),
        }
    }
    Err(err(io::Error::other("no free spool file name")))
}

/// `./etc/x`, `/etc/x` and `etc/x` → `etc/x`; `.` → empty.
fn clean_name(name: &[u8]) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(OsStr::from_bytes(name)).components() {
        match c {
            Component::Normal(part) => {
                // Record keys are UTF-8 (JSON).
                part.to_str()?;
                out.push(part);
            }
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// The entry's path relative to the root; `None` for the root itself and for
/// names that are unsafe (`..`) or not UTF-8.
pub fn relative_path(name: &[u8]) -> Option<PathBuf> {
    clean_name(name).filter(|p| !p.as_os_str().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use initramfs::newc::{Header, Writer};

    #[test]
    fn path_table() {
        for (name, want) in [
            (&b"etc/passwd"[..], Some("etc/passwd")),
            (b"./etc/passwd", Some("etc/passwd")),
            (b"/etc//passwd", Some("etc/passwd")),
            (b".", None),
            (b"../etc", None),
            (b"etc/../../x", None),
            (b"etc/\xff", None),
        ] {
            assert_eq!(relative_path(name), want.map(PathBuf::from), "{name:?}");
        }
    }

    #[test]
    fn stages_entries_and_spools_content() {
        let mut w = Writer::new(Vec::new());
        w.add_dir("etc", 0o755).unwrap();
        w.add_file("etc/a", 0o644, b"hello").unwrap();
        w.add_symlink("etc/l", "a").unwrap();
        let mut h = Header::file("etc/a", 0o600, 3);
        h.uid = 7;
        w.append_bytes(&h, b"new").unwrap();
        let raw = w.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let staged = stage(&raw[..], dir.path()).unwrap();
        assert_eq!(staged.entries.len(), 3);
        let a = &staged.entries[Path::new("etc/a")];
        assert_eq!((a.perm, a.uid), (0o600, 7));
        let Content::File {
            offset,
            len,
            sha256,
        } = a.content
        else {
            panic!()
        };
        let mut out = Vec::new();
        staged.copy_content(offset, len, &mut out).unwrap();
        assert_eq!(out, b"new");
        assert_eq!(sha256, <[u8; 32]>::from(Sha256::digest(b"new")));
        assert_eq!(
            staged.entries[Path::new("etc/l")].content,
            Content::Symlink("a".into())
        );
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "spool is unlinked"
        );
    }

    #[test]
    fn hard_links_share_the_data_of_the_last_link() {
        let mut w = Writer::new(Vec::new());
        for (name, data) in [("a", &b""[..]), ("b", b"shared")] {
            let mut h = Header::file(name, 0o644, data.len() as u64);
            h.ino = 42;
            h.nlink = 2;
            w.append_bytes(&h, data).unwrap();
        }
        let raw = w.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let staged = stage(&raw[..], dir.path()).unwrap();
        assert_eq!(
            staged.entries[Path::new("a")].content,
            staged.entries[Path::new("b")].content
        );
        let Content::File { len, .. } = staged.entries[Path::new("a")].content else {
            panic!()
        };
        assert_eq!(len, 6);
    }

    #[test]
    fn truncated_archive_is_an_error() {
        let mut w = Writer::new(Vec::new());
        w.add_file("a", 0o644, &[7u8; 1000]).unwrap();
        let raw = w.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        for cut in [0, 50, 200, 1100] {
            assert!(stage(&raw[..cut], dir.path()).is_err(), "cut at {cut}");
        }
    }
}
