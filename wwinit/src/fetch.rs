//! Two-stage artifacts: manifest, then each archive streamed
//! HTTP → digest check → decompress → unpack into the new root, with no
//! temporary copy. The digest and size are checked when the stream ends;
//! a mismatch fails the boot before anything from the new root runs.

use std::io::{self, Read};
use std::path::Path;

use anyhow::{Context, Result, bail};
use initramfs::unpack::{UnpackOptions, UnpackStats, unpack};
use proto::{Mac, Manifest, Sha256Digest, routes};
use sha2::{Digest, Sha256};

use crate::cmdline::Server;
use crate::http::{self, Backoff, Download, Opened, Url};
use crate::sys::FetchEntry;

/// Largest manifest accepted.
const MANIFEST_LIMIT: u64 = 1 << 20;

/// Context of an error raised while an opened download was being verified
/// and unpacked (digest or size mismatch, a corrupt stream, a transfer that
/// could not be resumed): the bytes did not arrive intact, so fetching again
/// into a fresh root may succeed. Errors before the body (404, 403, no
/// answer within the budget) never carry it.
#[derive(Debug)]
pub struct Corrupt {
    pub url: String,
}

impl std::fmt::Display for Corrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.url)
    }
}

/// A `Read` that hashes and counts what passes and, at the end, checks the
/// expected digest and size. Errors at the end are repeated on every read.
pub struct Verify<R: Read> {
    inner: R,
    hasher: Sha256,
    count: u64,
    want_digest: Option<Sha256Digest>,
    want_size: Option<u64>,
    failed: Option<String>,
    finished: bool,
}

impl<R: Read> Verify<R> {
    pub fn new(inner: R, want_digest: Option<Sha256Digest>, want_size: Option<u64>) -> Self {
        Verify {
            inner,
            hasher: Sha256::new(),
            count: 0,
            want_digest,
            want_size,
            failed: None,
            finished: false,
        }
    }

    /// Bytes seen so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    fn check(&mut self) -> Option<String> {
        if let Some(size) = self.want_size
            && size != self.count
        {
            return Some(format!(
                "size mismatch: got {} bytes, want {size}",
                self.count
            ));
        }
        if let Some(want) = self.want_digest {
            let got = Sha256Digest(self.hasher.clone().finalize().into());
            if got != want {
                return Some(format!("digest mismatch: got {got}, want {want}"));
            }
        }
        None
    }
}

impl<R: Read> Read for Verify<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(msg) = &self.failed {
            return Err(io::Error::new(io::ErrorKind::InvalidData, msg.clone()));
        }
        if self.finished {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.finished = true;
            if let Some(msg) = self.check() {
                self.failed = Some(msg.clone());
                return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
            }
            return Ok(0);
        }
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Unpacks `input` into `dest` and reads it to its end, so the digest check
/// runs even when the archive ends before padding does.
pub fn unpack_verified<R: Read>(
    input: R,
    digest: Option<Sha256Digest>,
    size: Option<u64>,
    dest: &Path,
) -> Result<(UnpackStats, u64)> {
    let mut v = Verify::new(input, digest, size);
    let opts = UnpackOptions {
        preserve_owner: true,
        skip_unprivileged_nodes: false,
    };
    let stats = unpack(&mut v, dest, &opts).context("unpacking")?;
    io::copy(&mut v, &mut io::sink()).context("verifying")?;
    Ok((stats, v.count()))
}

/// `GET /manifest/{wwid}`: `None` if the head does not have the route.
pub fn manifest(server: &Server, wwid: &Mac, policy: Backoff) -> Result<Option<Manifest>> {
    let url = Url::on(server, &routes::manifest(wwid))?;
    let Some(body) = http::get_small(url.clone(), policy, MANIFEST_LIMIT)? else {
        return Ok(None);
    };
    let m: Manifest = serde_json::from_slice(&body)
        .with_context(|| format!("parsing the manifest from {url}"))?;
    Ok(Some(m))
}

/// Streams one artifact into `dest`; returns whether it was applied (an
/// optional artifact may be absent) and a one-line summary.
pub fn fetch_unpack(
    server: &Server,
    entry: &FetchEntry,
    dest: &Path,
    policy: Backoff,
) -> Result<(bool, String)> {
    let (path, digest, size, required) = match entry {
        FetchEntry::Verified(e) => (e.url.as_str(), Some(e.digest), Some(e.size), true),
        FetchEntry::Unverified(_, p, req) => (p.as_str(), None, None, *req),
    };
    let url = Url::on(server, path)?;
    // The head's `secure` mode serves runtime overlays to privileged ports only.
    let privileged = entry.stage() == proto::ArtifactStage::Runtime.name();
    let download = match Download::open_from(url.clone(), policy, privileged)? {
        Opened::Ok(d) => d,
        Opened::NotFound if !required => {
            return Ok((false, format!("{url}: not provided (404), skipped")));
        }
        Opened::NotFound => bail!("{url}: not found (404)"),
    };
    // Without a manifest, the HTTP length is all we can check.
    let size = size.or(download.total());
    let (stats, bytes) = unpack_verified(download, digest, size, dest).context(Corrupt {
        url: url.to_string(),
    })?;
    let checked = if digest.is_some() { ", sha256 ok" } else { "" };
    Ok((
        true,
        format!("{url}: {bytes} bytes, {} entries{checked}", stats.entries),
    ))
}

#[cfg(test)]
mod tests {
    use initramfs::compress::{Compression, EncoderOptions, encoder};
    use initramfs::newc::Writer;
    use std::io::Write;

    use super::*;

    fn archive() -> Vec<u8> {
        let mut w = Writer::new(Vec::new());
        w.add_dir("etc", 0o755).expect("dir");
        w.add_file("etc/hello", 0o644, b"hi\n").expect("file");
        let cpio = w.finish().expect("finish");
        let mut e = encoder(
            Compression::Zstd,
            &EncoderOptions {
                level: None,
                threads: 1,
            },
            Vec::new(),
        )
        .expect("enc");
        e.write_all(&cpio).expect("write");
        e.finish().expect("finish")
    }

    #[test]
    fn verified_unpack_accepts_good_and_rejects_bad_digest() {
        let data = archive();
        let good = Sha256Digest(Sha256::digest(&data).into());
        let dir = tempfile::tempdir().expect("tempdir");
        let (stats, n) =
            unpack_verified(&data[..], Some(good), Some(data.len() as u64), dir.path())
                .expect("ok");
        assert_eq!(n, data.len() as u64);
        assert_eq!(stats.files, 1);
        assert_eq!(
            std::fs::read(dir.path().join("etc/hello")).expect("read"),
            b"hi\n"
        );

        let bad = Sha256Digest([0; 32]);
        let err = unpack_verified(&data[..], Some(bad), None, dir.path()).expect_err("mismatch");
        assert!(format!("{err:#}").contains("digest mismatch"), "{err:#}");
        let err = unpack_verified(&data[..], None, Some(1), dir.path()).expect_err("mismatch");
        assert!(format!("{err:#}").contains("size mismatch"), "{err:#}");
    }

    #[test]
    fn trailing_padding_is_hashed() {
        let mut data = archive();
        data.extend_from_slice(&[0; 512]);
        let d = Sha256Digest(Sha256::digest(&data).into());
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, n) = unpack_verified(&data[..], Some(d), None, dir.path()).expect("ok");
        assert_eq!(n, data.len() as u64);
    }
}
