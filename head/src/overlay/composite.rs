//! Images stored as a reference to their shared member plus the node's own,
//! and the names of blobs.
//!
//! Every image of one overlay list starts with the same *shared* member
//! (static files, node-independent renders such as `/etc/hosts`). When that
//! member is large, copying it into each node's blob makes the store grow
//! with nodes × member size: at 10,000 nodes the 10,000-line hosts file alone
//! is ~1.8 GB written and fsynced per full build. So a large shared member
//! is stored once, as a blob of its own, and the node's blob holds a
//! *marker* naming it followed by the node's own member:
//!
//! - gzip: an empty gzip member whose comment (`FCOMMENT`) is
//!   `ironwulf-shared sha256:<name>`; `zcat` of the blob prints the node's
//!   own files only (the empty member decompresses to nothing);
//! - zstd: a skippable frame (magic `0x184D2A5E`) with the same text, which
//!   `zstd -d` skips.
//!
//! The image a node receives is the shared blob's bytes followed by the
//! node blob's bytes after the marker; its SHA-256, which names the node
//! blob, is that of those bytes. The head serves it as two file ranges
//! ([`resolve`]); [`read_image`] assembles it for local readers
//! (`wwctl overlay image`, tests).
//!
//! Blobs are named by their SHA-256 in unpadded base64url ([`blob_name`],
//! 43 characters): a pointer's target `../../blobs/<name>` is then 55
//! bytes, short enough for ext4 to keep the symlink inside its inode. Hex
//! names made 83-byte targets that each cost a data block (measured here:
//! ~420 µs per symlink against ~60 µs; a full build at 10,000 nodes sets
//! 20,000 pointers).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use initramfs::compress::Compression;

/// Shared members at least this large are stored once (smaller ones are
/// copied into each image, which then is one self-contained file).
pub const MIN_SHARED: usize = 64 * 1024;
/// The blob directory below `<wwprovisiondir>`.
pub const BLOB_DIR: &str = "blobs";
/// Length of a blob name.
pub const NAME_LEN: usize = 43;

const TAG: &[u8] = b"ironwulf-shared sha256:";
const GZIP_HEAD: [u8; 10] = [0x1f, 0x8b, 8, 0x10, 0, 0, 0, 0, 0, 0xff];
/// An empty final fixed-Huffman deflate block, CRC-32 0 and size 0.
const GZIP_TAIL: [u8; 10] = [3, 0, 0, 0, 0, 0, 0, 0, 0, 0];
const ZSTD_SKIPPABLE: [u8; 4] = [0x5e, 0x2a, 0x4d, 0x18];
/// Length of the longest marker (gzip).
pub const MARKER_MAX: usize = GZIP_HEAD.len() + TAG.len() + NAME_LEN + 1 + GZIP_TAIL.len();

/// The file name of the blob with SHA-256 `digest`.
pub fn blob_name(digest: &[u8; 32]) -> String {
    URL_SAFE_NO_PAD.encode(digest)
}

/// The digest a blob file name stands for (`None`: not a blob name).
pub fn parse_blob_name(name: &str) -> Option<[u8; 32]> {
    if name.len() != NAME_LEN {
        return None;
    }
    URL_SAFE_NO_PAD.decode(name).ok()?.try_into().ok()
}

/// The marker naming shared blob `name` in a `c`-compressed image, or
/// `None` when `c` has no way to carry one (such images stay whole).
pub fn marker(c: Compression, name: &str) -> Option<Vec<u8>> {
    debug_assert!(parse_blob_name(name).is_some(), "{name}");
    let mut m = Vec::with_capacity(MARKER_MAX);
    match c {
        Compression::Gzip => {
            m.extend_from_slice(&GZIP_HEAD);
            m.extend_from_slice(TAG);
            m.extend_from_slice(name.as_bytes());
            m.push(0);
            m.extend_from_slice(&GZIP_TAIL);
        }
        Compression::Zstd => {
            let len = u32::try_from(TAG.len() + name.len()).expect("short marker");
            m.extend_from_slice(&ZSTD_SKIPPABLE);
            m.extend_from_slice(&len.to_le_bytes());
            m.extend_from_slice(TAG);
            m.extend_from_slice(name.as_bytes());
        }
        _ => return None,
    }
    Some(m)
}

/// The shared blob a blob's first bytes name, and the marker's length.
pub fn parse_marker(head: &[u8]) -> Option<(String, usize)> {
    let (text_at, after) = if head.starts_with(&GZIP_HEAD) {
        (GZIP_HEAD.len(), 1 + GZIP_TAIL.len())
    } else if head.starts_with(&ZSTD_SKIPPABLE) {
        let len = u32::from_le_bytes(head.get(4..8)?.try_into().ok()?);
        if usize::try_from(len).ok()? != TAG.len() + NAME_LEN {
            return None;
        }
        (8, 0)
    } else {
        return None;
    };
    let text = head.get(text_at..text_at + TAG.len() + NAME_LEN)?;
    let name = std::str::from_utf8(text.strip_prefix(TAG)?).ok()?;
    parse_blob_name(name)?;
    let end = text_at + TAG.len() + NAME_LEN + after;
    if after > 0 {
        let tail = head.get(end - after..end)?;
        if tail[0] != 0 || tail[1..] != GZIP_TAIL {
            return None;
        }
    }
    Some((name.to_owned(), end))
}

/// How the image stored in `blob` (an open blob file) is served: `None`
/// when the file is the whole image, else the shared blob's path and where
/// the node's own bytes start.
pub fn resolve(blob_path: &Path, blob: &File) -> io::Result<Option<(PathBuf, u64)>> {
    let mut head = [0u8; MARKER_MAX];
    let mut got = 0;
    while got < head.len() {
        let n = blob.read_at(&mut head[got..], got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let Some((name, len)) = parse_marker(&head[..got]) else {
        return Ok(None);
    };
    let dir = blob_path.parent().unwrap_or(Path::new("."));
    Ok(Some((dir.join(name), len as u64)))
}

/// The bytes a node receives for the image `path` points to (a pointer
/// such as `overlays/<node>/__SYSTEM__.img.gz`, or a blob).
pub fn read_image(path: &Path) -> io::Result<Vec<u8>> {
    let blob = std::fs::canonicalize(path)?;
    let data = std::fs::read(&blob)?;
    let Some((name, len)) = parse_marker(&data[..data.len().min(MARKER_MAX)]) else {
        return Ok(data);
    };
    let shared_path = blob.parent().unwrap_or(Path::new(".")).join(name);
    let mut out = std::fs::read(&shared_path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "{}: its shared part {}: {e}",
                blob.display(),
                shared_path.display()
            ),
        )
    })?;
    out.extend_from_slice(&data[len..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    const NAME: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA";

    fn compressed(c: Compression, data: &[u8]) -> Vec<u8> {
        match c {
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                std::io::Write::write_all(&mut e, data).unwrap();
                e.finish().unwrap()
            }
            _ => zstd::encode_all(data, 3).unwrap(),
        }
    }

    #[test]
    fn markers_round_trip_and_decompress_to_nothing() {
        for c in [Compression::Gzip, Compression::Zstd] {
            let m = marker(c, NAME).unwrap();
            assert!(m.len() <= MARKER_MAX);
            let mut blob = m.clone();
            blob.extend_from_slice(&compressed(c, b"own bytes"));
            assert_eq!(
                parse_marker(&blob),
                Some((NAME.to_owned(), m.len())),
                "{c:?}"
            );
            // Standard decoders see the node's own member only.
            let mut out = Vec::new();
            match c {
                Compression::Gzip => {
                    flate2::read::MultiGzDecoder::new(&blob[..])
                        .read_to_end(&mut out)
                        .unwrap();
                }
                _ => out = zstd::decode_all(&blob[..]).unwrap(),
            }
            assert_eq!(out, b"own bytes", "{c:?}");
        }
        assert!(marker(Compression::None, NAME).is_none());
    }

    #[test]
    fn ordinary_members_and_damaged_markers_are_not_markers() {
        for c in [Compression::Gzip, Compression::Zstd] {
            assert_eq!(parse_marker(&compressed(c, b"x")), None);
            let m = marker(c, NAME).unwrap();
            assert_eq!(parse_marker(&m[..m.len() - 1]), None, "truncated");
            let mut bad = m.clone();
            let at = m.len() - if c == Compression::Gzip { 20 } else { 3 };
            bad[at] = b'+';
            assert_eq!(parse_marker(&bad), None, "not base64url");
        }
        assert_eq!(parse_marker(b""), None);
    }

    #[test]
    fn read_image_joins_the_shared_blob_and_the_own_member() {
        let dir = tempfile::tempdir().unwrap();
        let shared = compressed(Compression::Gzip, b"shared ");
        let own = compressed(Compression::Gzip, b"own");
        std::fs::write(dir.path().join(NAME), &shared).unwrap();
        let mut blob = marker(Compression::Gzip, NAME).unwrap();
        blob.extend_from_slice(&own);
        let path = dir.path().join("node");
        std::fs::write(&path, &blob).unwrap();
        let image = read_image(&path).unwrap();
        assert_eq!(image, [shared.clone(), own.clone()].concat());
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(&image[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "shared own");
        let (p, at) = resolve(&path, &File::open(&path).unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(
            (p, at),
            (dir.path().join(NAME), blob.len() as u64 - own.len() as u64)
        );
        // A whole image is itself.
        std::fs::write(&path, &own).unwrap();
        assert_eq!(read_image(&path).unwrap(), own);
        assert!(
            resolve(&path, &File::open(&path).unwrap())
                .unwrap()
                .is_none()
        );
        // A missing shared part is an error naming it.
        std::fs::write(&path, &blob).unwrap();
        std::fs::remove_file(dir.path().join(NAME)).unwrap();
        let e = read_image(&path).unwrap_err().to_string();
        assert!(e.contains("shared part"), "{e}");
    }

    #[test]
    fn blob_names_are_short_canonical_base64url() {
        let d: [u8; 32] = std::array::from_fn(|i| (i * 37 + 250) as u8);
        let name = blob_name(&d);
        assert_eq!(name.len(), NAME_LEN);
        assert!(
            format!("../../{BLOB_DIR}/{name}").len() < 60,
            "inline symlink"
        );
        assert_eq!(parse_blob_name(&name), Some(d));
        assert_eq!(parse_blob_name(&hex::encode(d)), None, "hex is not a name");
        assert_eq!(parse_blob_name(&format!("{name}=")), None);
        assert_eq!(parse_blob_name(".blob.tmp"), None);
        // Non-zero trailing bits are refused: one digest, one name.
        let mut odd = name.into_bytes();
        odd[NAME_LEN - 1] = b'B';
        assert_eq!(parse_blob_name(std::str::from_utf8(&odd).unwrap()), None);
    }
}
