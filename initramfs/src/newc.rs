//! The newc (`070701`) cpio codec: header layout, a streaming writer and a
//! streaming reader. No file system access happens here.
//!
//! Layout of one entry, as the kernel's `init/initramfs.c` parses it:
//! a 110-byte ASCII header (`070701` + 13 eight-digit hex fields), the name
//! with its terminating NUL, zero padding so that header + name is a multiple
//! of 4, then `filesize` bytes of data padded to a multiple of 4. An archive
//! ends with an entry named `TRAILER!!!`.
//!
//! Hard links (kernel semantics): for a regular file (or device node) with
//! `nlink >= 2`, the kernel remembers the first entry with a given
//! `(devmajor, devminor, ino)` and turns later entries with the same key into
//! links to it; a later link is opened without truncation and its data is
//! written into the shared inode. The convention this crate follows (GNU cpio's
//! too) is therefore: all links share one `ino`, `nlink` is the number of links
//! present in the archive, every link but the last has `filesize` 0, and the
//! data is stored once, on the last link.

use std::collections::HashSet;
use std::io::{self, Read, Write};

use thiserror::Error;

/// Magic of the "new ASCII" format written by this crate.
pub const MAGIC: &[u8; 6] = b"070701";
/// Magic of the "new CRC" variant, accepted when reading (the checksum is ignored, as the kernel does).
pub const MAGIC_CRC: &[u8; 6] = b"070702";
/// Name of the entry that ends an archive.
pub const TRAILER: &[u8] = b"TRAILER!!!";
/// Length of the fixed part of a header.
pub const HEADER_LEN: usize = 110;
/// Largest file a newc entry can hold (`filesize` is 32 bits).
pub const MAX_FILE_SIZE: u64 = u32::MAX as u64;
/// Longest name accepted when reading (the kernel's `PATH_MAX`).
pub const MAX_NAME_LEN: usize = 4096;

/// Errors of the newc codec.
#[derive(Debug, Error)]
pub enum NewcError {
    #[error("file too large for newc (max 4 GiB - 1): {}", lossy(.name))]
    FileTooLarge { name: Vec<u8> },
    #[error("entry name is empty")]
    EmptyName,
    #[error("entry name contains a NUL byte: {}", lossy(.name))]
    NulInName { name: Vec<u8> },
    #[error("entry name too long: {}", lossy(.name))]
    NameTooLong { name: Vec<u8> },
    #[error("data shorter than its header says: {}", lossy(.name))]
    ShortData { name: Vec<u8> },
    #[error("bad magic at archive offset {offset}")]
    BadMagic { offset: u64 },
    #[error("bad header field {field} at archive offset {offset}")]
    BadField { field: &'static str, offset: u64 },
    #[error("unknown file type {mode:#o} at archive offset {offset}")]
    BadType { mode: u32, offset: u64 },
    #[error("entry data larger than {limit} bytes: {}", lossy(.name))]
    DataTooLarge { name: Vec<u8>, limit: u64 },
    #[error("archive ends before its trailer")]
    Truncated,
    #[error("unexpected byte {byte:#04x} between archives at offset {offset}")]
    Junk { byte: u8, offset: u64 },
    #[error("writing archive")]
    Write(#[source] io::Error),
    #[error("reading archive")]
    Read(#[source] io::Error),
    #[error("reading data of {}", lossy(.name))]
    ReadData {
        name: Vec<u8>,
        #[source]
        source: io::Error,
    },
}

/// Renders a byte name for messages.
pub(crate) fn lossy(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

/// File type of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

impl Kind {
    /// The `S_IFMT` bits of this kind.
    pub fn type_bits(self) -> u32 {
        match self {
            Kind::File => 0o100000,
            Kind::Dir => 0o040000,
            Kind::Symlink => 0o120000,
            Kind::CharDevice => 0o020000,
            Kind::BlockDevice => 0o060000,
            Kind::Fifo => 0o010000,
            Kind::Socket => 0o140000,
        }
    }

    /// The kind encoded in a full `st_mode`, if it is one newc can carry.
    pub fn from_mode(mode: u32) -> Option<Kind> {
        Some(match mode & 0o170000 {
            0o100000 => Kind::File,
            0o040000 => Kind::Dir,
            0o120000 => Kind::Symlink,
            0o020000 => Kind::CharDevice,
            0o060000 => Kind::BlockDevice,
            0o010000 => Kind::Fifo,
            0o140000 => Kind::Socket,
            _ => return None,
        })
    }

    /// Whether the kernel applies hard-link detection to this kind.
    pub fn may_hardlink(self) -> bool {
        !matches!(self, Kind::Dir | Kind::Symlink)
    }
}

/// One newc header. `name` is raw bytes (no trailing NUL); for a symlink the
/// data is the link target and `size` its length.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    pub name: Vec<u8>,
    pub kind: Kind,
    /// Permission bits (`0o7777`), without the type.
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u32,
    pub ino: u32,
    pub nlink: u32,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub rdev_major: u32,
    pub rdev_minor: u32,
    pub size: u64,
}

impl Header {
    /// A header with owner root, mtime 0, ino 0 and `nlink` 1 (2 for a directory).
    pub fn new(name: impl Into<Vec<u8>>, kind: Kind, perm: u32) -> Self {
        Header {
            name: name.into(),
            kind,
            perm: perm & 0o7777,
            uid: 0,
            gid: 0,
            mtime: 0,
            ino: 0,
            nlink: if kind == Kind::Dir { 2 } else { 1 },
            dev_major: 0,
            dev_minor: 0,
            rdev_major: 0,
            rdev_minor: 0,
            size: 0,
        }
    }

    /// A regular file of `size` bytes.
    pub fn file(name: impl Into<Vec<u8>>, perm: u32, size: u64) -> Self {
        Header {
            size,
            ..Header::new(name, Kind::File, perm)
        }
    }

    /// A directory.
    pub fn dir(name: impl Into<Vec<u8>>, perm: u32) -> Self {
        Header::new(name, Kind::Dir, perm)
    }

    /// A symlink whose target (the entry data) is `target_len` bytes long.
    pub fn symlink(name: impl Into<Vec<u8>>, target_len: u64) -> Self {
        Header {
            size: target_len,
            ..Header::new(name, Kind::Symlink, 0o777)
        }
    }

    /// A character or block device, fifo or socket (`major`/`minor` go to `rdev`).
    pub fn node(name: impl Into<Vec<u8>>, kind: Kind, perm: u32, major: u32, minor: u32) -> Self {
        Header {
            rdev_major: major,
            rdev_minor: minor,
            ..Header::new(name, kind, perm)
        }
    }

    /// The full `st_mode` (type and permission bits).
    pub fn mode(&self) -> u32 {
        self.kind.type_bits() | (self.perm & 0o7777)
    }

    /// Whether this is the archive trailer.
    pub fn is_trailer(&self) -> bool {
        self.name == TRAILER
    }

    /// Appends the encoded header, name, NUL and name padding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), NewcError> {
        if self.name.is_empty() {
            return Err(NewcError::EmptyName);
        }
        if self.name.contains(&0) {
            return Err(NewcError::NulInName {
                name: self.name.clone(),
            });
        }
        if self.name.len() >= u32::MAX as usize {
            return Err(NewcError::NameTooLong {
                name: self.name.clone(),
            });
        }
        if self.size > MAX_FILE_SIZE {
            return Err(NewcError::FileTooLarge {
                name: self.name.clone(),
            });
        }
        let namesize = self.name.len() + 1;
        let fields = [
            self.ino,
            self.mode(),
            self.uid,
            self.gid,
            self.nlink,
            self.mtime,
            // Checked above: the size fits in 32 bits.
            self.size as u32,
            self.dev_major,
            self.dev_minor,
            self.rdev_major,
            self.rdev_minor,
            namesize as u32,
            0,
        ];
        let start = out.len();
        out.reserve(HEADER_LEN + namesize + 3);
        out.extend_from_slice(MAGIC);
        for f in fields {
            push_hex8(out, f);
        }
        out.extend_from_slice(&self.name);
        out.push(0);
        let pad = pad4(out.len() - start);
        out.extend_from_slice(&[0u8; 3][..pad]);
        Ok(())
    }
}

/// Bytes needed to pad `len` to a multiple of 4.
pub fn pad4(len: usize) -> usize {
    (4 - (len & 3)) & 3
}

fn push_hex8(out: &mut Vec<u8>, v: u32) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for shift in (0..8).rev() {
        out.push(HEX[((v >> (shift * 4)) & 0xf) as usize]);
    }
}

fn parse_hex8(b: &[u8]) -> Option<u32> {
    let mut v: u32 = 0;
    for &c in b {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | u32::from(d);
    }
    Some(v)
}

/// Size of the copy buffer used by [`Writer::append`].
const COPY_BUF: usize = 256 * 1024;

/// Streaming newc writer. Entries are written in the order appended; the
/// caller is responsible for parents-before-children and for hard-link
/// numbering (see the module docs).
pub struct Writer<W: Write> {
    inner: W,
    scratch: Vec<u8>,
    copy_buf: Vec<u8>,
    next_ino: u32,
    /// Directories written so far, for [`Writer::add_parents`].
    dirs: HashSet<Vec<u8>>,
}

impl<W: Write> Writer<W> {
    /// A writer over `inner`. Wrap unbuffered sinks in a `BufWriter`.
    pub fn new(inner: W) -> Self {
        Writer {
            inner,
            scratch: Vec::with_capacity(512),
            copy_buf: Vec::new(),
            next_ino: 1,
            dirs: HashSet::new(),
        }
    }

    /// A fresh inode number for the convenience methods (`add_*`), counting from 1.
    pub fn next_ino(&mut self) -> u32 {
        let ino = self.next_ino;
        self.next_ino = self.next_ino.wrapping_add(1);
        ino
    }

    /// Writes the header, then exactly `header.size` bytes read from `data`, then padding.
    pub fn append(&mut self, header: &Header, data: &mut dyn Read) -> Result<(), NewcError> {
        self.note_dir(header);
        self.scratch.clear();
        header.encode_into(&mut self.scratch)?;
        self.inner
            .write_all(&self.scratch)
            .map_err(NewcError::Write)?;
        if header.size > 0 {
            if self.copy_buf.is_empty() {
                self.copy_buf = vec![0u8; COPY_BUF];
            }
            let mut left = header.size;
            while left > 0 {
                let want = left.min(self.copy_buf.len() as u64) as usize;
                let n = match data.read(&mut self.copy_buf[..want]) {
                    Ok(0) => {
                        return Err(NewcError::ShortData {
                            name: header.name.clone(),
                        });
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(source) => {
                        return Err(NewcError::ReadData {
                            name: header.name.clone(),
                            source,
                        });
                    }
                };
                self.inner
                    .write_all(&self.copy_buf[..n])
                    .map_err(NewcError::Write)?;
                left -= n as u64;
            }
        }
        self.write_data_pad(header.size)
    }

    /// Writes a header and in-memory data (`data.len()` must equal `header.size`).
    pub fn append_bytes(&mut self, header: &Header, data: &[u8]) -> Result<(), NewcError> {
        if data.len() as u64 != header.size {
            return Err(NewcError::ShortData {
                name: header.name.clone(),
            });
        }
        self.note_dir(header);
        self.scratch.clear();
        header.encode_into(&mut self.scratch)?;
        self.scratch.extend_from_slice(data);
        let pad = pad4(data.len());
        self.scratch.extend_from_slice(&[0u8; 3][..pad]);
        let r = self
            .inner
            .write_all(&self.scratch)
            .map_err(NewcError::Write);
        if self.scratch.capacity() > 64 * 1024 {
            self.scratch = Vec::with_capacity(512);
        }
        r
    }

    /// Writes only a header; the caller then writes `header.size` bytes with
    /// [`Writer::write_data`] and ends with [`Writer::write_data_pad`].
    pub fn write_header(&mut self, header: &Header) -> Result<(), NewcError> {
        self.note_dir(header);
        self.scratch.clear();
        header.encode_into(&mut self.scratch)?;
        self.inner
            .write_all(&self.scratch)
            .map_err(NewcError::Write)
    }

    /// Writes raw entry data after [`Writer::write_header`].
    pub fn write_data(&mut self, data: &[u8]) -> Result<(), NewcError> {
        self.inner.write_all(data).map_err(NewcError::Write)
    }

    /// Pads the data of an entry of `size` bytes to 4.
    pub fn write_data_pad(&mut self, size: u64) -> Result<(), NewcError> {
        let pad = pad4((size & 3) as usize);
        self.inner
            .write_all(&[0u8; 3][..pad])
            .map_err(NewcError::Write)
    }

    fn note_dir(&mut self, header: &Header) {
        if header.kind == Kind::Dir && !header.name.is_empty() {
            let mut name: &[u8] = header.name.strip_prefix(b"./").unwrap_or(&header.name);
            while let [rest @ .., b'/'] = name {
                name = rest;
            }
            self.dirs.insert(name.to_vec());
        }
    }

    /// Writes directory entries (0755, root, mtime 0) for every parent of
    /// `name` this writer has not written yet, outermost first: the kernel
    /// does not create missing parents.
    pub fn add_parents(&mut self, name: &str) -> Result<(), NewcError> {
        let name = name
            .strip_prefix("./")
            .unwrap_or(name)
            .trim_start_matches('/');
        let mut end = 0;
        while let Some(i) = name[end..].find('/') {
            let dir = &name[..end + i];
            end += i + 1;
            if dir.is_empty() || self.dirs.contains(dir.as_bytes()) {
                continue;
            }
            self.add_dir(dir, 0o755)?;
        }
        Ok(())
    }

    /// Adds a directory owned by root with mtime 0.
    pub fn add_dir(&mut self, name: &str, perm: u32) -> Result<(), NewcError> {
        let mut h = Header::dir(name, perm);
        h.ino = self.next_ino();
        self.append_bytes(&h, &[])
    }

    /// Adds a regular file owned by root with mtime 0.
    pub fn add_file(&mut self, name: &str, perm: u32, data: &[u8]) -> Result<(), NewcError> {
        let mut h = Header::file(name, perm, data.len() as u64);
        h.ino = self.next_ino();
        self.append_bytes(&h, data)
    }

    /// Adds a symlink owned by root with mtime 0.
    pub fn add_symlink(&mut self, name: &str, target: &str) -> Result<(), NewcError> {
        let mut h = Header::symlink(name, target.len() as u64);
        h.ino = self.next_ino();
        self.append_bytes(&h, target.as_bytes())
    }

    /// Adds a character or block device, fifo or socket owned by root with mtime 0.
    pub fn add_node(
        &mut self,
        name: &str,
        kind: Kind,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), NewcError> {
        let mut h = Header::node(name, kind, perm, major, minor);
        h.ino = self.next_ino();
        self.append_bytes(&h, &[])
    }

    /// The underlying sink (for flushing or progress queries).
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Writes `TRAILER!!!` (already 4-aligned by its own padding) and returns the sink.
    pub fn finish(mut self) -> Result<W, NewcError> {
        let mut h = Header::new(TRAILER, Kind::File, 0);
        h.nlink = 1;
        self.append_bytes(&h, &[])?;
        self.inner.flush().map_err(NewcError::Write)?;
        Ok(self.inner)
    }
}

/// Streaming newc reader. Call [`Reader::next_entry`] for each header, then
/// read its data through [`Reader::data`] (unread data is skipped). By default
/// it stops at the first `TRAILER!!!`; [`Reader::next_archive`] continues with
/// a following archive after skipping zero padding, as the kernel does.
///
/// Headers are read in small pieces: give it a buffered source.
pub struct Reader<R: Read> {
    inner: R,
    offset: u64,
    /// Data bytes of the current entry not yet read.
    remaining: u64,
    /// Padding after the current entry's data.
    pad: usize,
    /// A byte read ahead while skipping padding between archives.
    peeked: Option<u8>,
    at_trailer: bool,
    current: Option<Vec<u8>>,
}

impl<R: Read> Reader<R> {
    pub fn new(inner: R) -> Self {
        Reader {
            inner,
            offset: 0,
            remaining: 0,
            pad: 0,
            peeked: None,
            at_trailer: false,
            current: None,
        }
    }

    /// Bytes consumed from the source so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The source; any read-ahead byte is lost.
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn read_exact_raw(&mut self, mut buf: &mut [u8]) -> Result<(), NewcError> {
        if buf.is_empty() {
            return Ok(());
        }
        if let Some(b) = self.peeked.take() {
            buf[0] = b;
            buf = &mut buf[1..];
        }
        match self.inner.read_exact(buf) {
            Ok(()) => {
                self.offset += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(NewcError::Truncated),
            Err(e) => Err(NewcError::Read(e)),
        }
    }

    fn skip_raw(&mut self, mut n: u64) -> Result<(), NewcError> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let want = n.min(buf.len() as u64) as usize;
            self.read_exact_raw(&mut buf[..want])?;
            n -= want as u64;
        }
        Ok(())
    }

    /// Skips the rest of the current entry (data and padding).
    fn finish_entry(&mut self) -> Result<(), NewcError> {
        let rest = self.remaining + self.pad as u64;
        self.remaining = 0;
        self.pad = 0;
        self.skip_raw(rest)
    }

    /// The next entry's header, or `None` at `TRAILER!!!`.
    pub fn next_entry(&mut self) -> Result<Option<Header>, NewcError> {
        if self.at_trailer {
            return Ok(None);
        }
        self.finish_entry()?;
        let start = self.offset - u64::from(self.peeked.is_some());
        let mut raw = [0u8; HEADER_LEN];
        self.read_exact_raw(&mut raw)?;
        if &raw[..6] != MAGIC && &raw[..6] != MAGIC_CRC {
            return Err(NewcError::BadMagic { offset: start });
        }
        const NAMES: [&str; 13] = [
            "ino",
            "mode",
            "uid",
            "gid",
            "nlink",
            "mtime",
            "filesize",
            "devmajor",
            "devminor",
            "rdevmajor",
            "rdevminor",
            "namesize",
            "check",
        ];
        let mut f = [0u32; 13];
        for (i, v) in f.iter_mut().enumerate() {
            let at = 6 + i * 8;
            *v = parse_hex8(&raw[at..at + 8]).ok_or(NewcError::BadField {
                field: NAMES[i],
                offset: start,
            })?;
        }
        let [
            ino,
            mode,
            uid,
            gid,
            nlink,
            mtime,
            size,
            dev_major,
            dev_minor,
            rdev_major,
            rdev_minor,
            namesize,
            _check,
        ] = f;
        let namesize = namesize as usize;
        if namesize == 0 || namesize > MAX_NAME_LEN + 1 {
            return Err(NewcError::BadField {
                field: "namesize",
                offset: start,
            });
        }
        let mut name = vec![0u8; namesize + pad4(HEADER_LEN + namesize)];
        self.read_exact_raw(&mut name)?;
        name.truncate(namesize);
        if name.pop() != Some(0) {
            return Err(NewcError::BadField {
                field: "name terminator",
                offset: start,
            });
        }
        if name.contains(&0) {
            return Err(NewcError::NulInName { name });
        }
        if name == TRAILER {
            self.at_trailer = true;
            self.remaining = u64::from(size);
            self.pad = pad4((size & 3) as usize);
            self.finish_entry()?;
            self.current = None;
            return Ok(None);
        }
        if name.is_empty() {
            return Err(NewcError::EmptyName);
        }
        let kind = Kind::from_mode(mode).ok_or(NewcError::BadType {
            mode,
            offset: start,
        })?;
        self.remaining = u64::from(size);
        self.pad = pad4((size & 3) as usize);
        self.current = Some(name.clone());
        Ok(Some(Header {
            name,
            kind,
            perm: mode & 0o7777,
            uid,
            gid,
            mtime,
            ino,
            nlink,
            dev_major,
            dev_minor,
            rdev_major,
            rdev_minor,
            size: u64::from(size),
        }))
    }

    /// Reads the current entry's data; returns 0 at its end.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, NewcError> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = self.remaining.min(buf.len() as u64) as usize;
        let mut n = 0;
        if let Some(b) = self.peeked.take() {
            buf[0] = b;
            n = 1;
        }
        if n < want {
            let got = loop {
                match self.inner.read(&mut buf[n..want]) {
                    Ok(got) => break got,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(NewcError::Read(e)),
                }
            };
            if got == 0 && n == 0 {
                return Err(NewcError::Truncated);
            }
            self.offset += got as u64;
            n += got;
        }
        self.remaining -= n as u64;
        Ok(n)
    }

    /// A `Read` over the current entry's data.
    pub fn data(&mut self) -> DataReader<'_, R> {
        DataReader { reader: self }
    }

    /// The current entry's data, up to `limit` bytes (larger data is an error).
    pub fn data_to_vec(&mut self, limit: u64) -> Result<Vec<u8>, NewcError> {
        if self.remaining > limit {
            return Err(NewcError::DataTooLarge {
                name: self.current.clone().unwrap_or_default(),
                limit,
            });
        }
        let mut v = vec![0u8; self.remaining as usize];
        let mut filled = 0;
        while filled < v.len() {
            filled += self.read_data(&mut v[filled..])?;
        }
        Ok(v)
    }

    /// After a trailer: skips zero padding and reports whether another
    /// archive follows (`true`) or the source ended (`false`). Anything but
    /// zeros and a newc magic is an error.
    pub fn next_archive(&mut self) -> Result<bool, NewcError> {
        if !self.at_trailer {
            return Ok(true);
        }
        let more = self.skip_padding()?;
        if more {
            self.at_trailer = false;
        }
        Ok(more)
    }

    /// Between archives (or before the first): skips zero bytes and reports
    /// whether an archive follows; `false` at the end of the source.
    pub fn skip_padding(&mut self) -> Result<bool, NewcError> {
        if self.peeked.is_some() {
            return Ok(true);
        }
        let mut b = [0u8; 1];
        loop {
            let n = match self.inner.read(&mut b) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(NewcError::Read(e)),
            };
            if n == 0 {
                return Ok(false);
            }
            self.offset += 1;
            match b[0] {
                0 => continue,
                b'0' => {
                    self.peeked = Some(b'0');
                    return Ok(true);
                }
                byte => {
                    return Err(NewcError::Junk {
                        byte,
                        offset: self.offset - 1,
                    });
                }
            }
        }
    }
}

/// Data of the current entry of a [`Reader`].
pub struct DataReader<'a, R: Read> {
    reader: &'a mut Reader<R>,
}

impl<R: Read> Read for DataReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read_data(buf).map_err(|e| match e {
            NewcError::Read(e) => e,
            NewcError::Truncated => {
                io::Error::new(io::ErrorKind::UnexpectedEof, "archive truncated")
            }
            other => io::Error::other(other),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = Writer::new(Vec::new());
        w.add_dir("etc", 0o755).unwrap();
        w.add_file("etc/hostname", 0o644, b"node1\n").unwrap();
        w.add_symlink("etc/localtime", "/usr/share/zoneinfo/UTC")
            .unwrap();
        w.add_node("dev/console", Kind::CharDevice, 0o600, 5, 1)
            .unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn header_layout_is_aligned() {
        let out = sample();
        assert_eq!(out.len() % 4, 0);
        assert_eq!(&out[..6], MAGIC);
        let mut h = Vec::new();
        Header::file("abc", 0o644, 5).encode_into(&mut h).unwrap();
        // 110 + "abc\0" = 114 -> padded to 116.
        assert_eq!(h.len(), 116);
    }

    #[test]
    fn reads_back_what_it_wrote() {
        let out = sample();
        let mut r = Reader::new(&out[..]);
        let h = r.next_entry().unwrap().unwrap();
        assert_eq!(
            (h.name.as_slice(), h.kind, h.perm),
            (&b"etc"[..], Kind::Dir, 0o755)
        );
        let h = r.next_entry().unwrap().unwrap();
        assert_eq!(h.name, b"etc/hostname");
        assert_eq!(r.data_to_vec(100).unwrap(), b"node1\n");
        let h = r.next_entry().unwrap().unwrap();
        assert_eq!(h.kind, Kind::Symlink);
        // Data left unread is skipped.
        let h = r.next_entry().unwrap().unwrap();
        assert_eq!(
            (h.kind, h.rdev_major, h.rdev_minor),
            (Kind::CharDevice, 5, 1)
        );
        assert!(r.next_entry().unwrap().is_none());
        assert!(!r.next_archive().unwrap());
    }

    #[test]
    fn cpio_crate_agrees() {
        let out = sample();
        let mut cur = std::io::Cursor::new(out);
        let mut names = Vec::new();
        loop {
            let rd = cpio::NewcReader::new(cur).unwrap();
            if rd.entry().is_trailer() {
                break;
            }
            names.push((rd.entry().name().to_string(), rd.entry().file_size()));
            cur = rd.finish().unwrap();
        }
        assert_eq!(
            names,
            vec![
                ("etc".to_string(), 0),
                ("etc/hostname".to_string(), 6),
                ("etc/localtime".to_string(), 23),
                ("dev/console".to_string(), 0)
            ]
        );
    }

    #[test]
    fn too_large_names_the_file() {
        let h = Header::file("usr/lib/big.bin", 0o644, MAX_FILE_SIZE + 1);
        let err = Writer::new(Vec::new())
            .append(&h, &mut std::io::empty())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "file too large for newc (max 4 GiB - 1): usr/lib/big.bin"
        );
    }

    #[test]
    fn short_data_is_an_error() {
        let h = Header::file("f", 0o644, 10);
        let err = Writer::new(Vec::new())
            .append(&h, &mut &b"abc"[..])
            .unwrap_err();
        assert!(matches!(err, NewcError::ShortData { .. }));
    }

    #[test]
    fn add_parents_writes_each_missing_parent_once() {
        let mut w = Writer::new(Vec::new());
        w.add_dir("usr", 0o755).unwrap();
        w.add_parents("usr/lib/modules/x.ko").unwrap();
        w.add_parents("./usr/lib/firmware/y").unwrap();
        let out = w.finish().unwrap();
        let mut r = Reader::new(&out[..]);
        let mut names = Vec::new();
        while let Some(h) = r.next_entry().unwrap() {
            assert_eq!(h.kind, Kind::Dir);
            names.push(String::from_utf8(h.name).unwrap());
        }
        assert_eq!(
            names,
            ["usr", "usr/lib", "usr/lib/modules", "usr/lib/firmware"]
        );
    }

    #[test]
    fn byte_names_round_trip() {
        let mut w = Writer::new(Vec::new());
        let name = b"caf\xe9".to_vec();
        w.append_bytes(&Header::file(name.clone(), 0o600, 1), b"x")
            .unwrap();
        let out = w.finish().unwrap();
        let mut r = Reader::new(&out[..]);
        assert_eq!(r.next_entry().unwrap().unwrap().name, name);
    }

    #[test]
    fn truncated_archive_is_reported() {
        let out = sample();
        let mut r = Reader::new(&out[..out.len() - 200]);
        let err = loop {
            match r.next_entry() {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("trailer in truncated archive"),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, NewcError::Truncated));
    }

    #[test]
    fn concatenated_archives_with_zero_padding() {
        let mut out = sample();
        out.extend_from_slice(&[0u8; 512]);
        let mut w = Writer::new(Vec::new());
        w.add_file("second", 0o644, b"2").unwrap();
        out.extend(w.finish().unwrap());
        let mut r = Reader::new(&out[..]);
        let mut names = Vec::new();
        loop {
            while let Some(h) = r.next_entry().unwrap() {
                names.push(h.name);
            }
            if !r.next_archive().unwrap() {
                break;
            }
        }
        assert_eq!(names.len(), 5);
        assert_eq!(names[4], b"second");
    }
}
