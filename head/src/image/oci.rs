//! OCI and Docker image formats as far as import needs them: the index,
//! manifest and config JSON, platform selection, digest-verifying readers,
//! layer decompression, and blobs read from an OCI layout directory or from
//! inside an `oci-archive` / `docker-archive` tarball (indexed once, then
//! read by offset, so a layer is streamed straight from the archive).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Buffer over compressed layer data.
pub const LAYER_BUF: usize = 256 * 1024;
/// Largest manifest, index or config accepted.
pub const MAX_JSON: u64 = 4 * 1024 * 1024;

pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// A content descriptor.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub platform: Option<PlatformSpec>,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct PlatformSpec {
    pub architecture: String,
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

/// An image index (OCI) or manifest list (Docker).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    #[serde(default)]
    pub media_type: String,
    pub manifests: Vec<Descriptor>,
}

/// An image manifest.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    #[serde(default)]
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// The platform to import: `os/arch[/variant]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

impl Platform {
    /// This machine's platform, in OCI spelling.
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Self {
            os: "linux".into(),
            arch: arch.into(),
            variant: None,
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Self {
                os: (*os).into(),
                arch: (*arch).into(),
                variant: None,
            }),
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() => Ok(Self {
                os: (*os).into(),
                arch: (*arch).into(),
                variant: Some((*variant).into()),
            }),
            _ => bail!("invalid platform {s:?}: want os/arch[/variant], e.g. linux/amd64"),
        }
    }

    fn matches(&self, p: &PlatformSpec) -> bool {
        p.os == self.os
            && p.architecture == self.arch
            && (self.variant.is_none() || p.variant == self.variant)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Whether `media_type` (or, lacking one, the JSON's shape) is an index.
pub fn is_index(media_type: &str, json: &[u8]) -> bool {
    match media_type {
        MT_OCI_INDEX | MT_DOCKER_LIST => true,
        MT_OCI_MANIFEST | MT_DOCKER_MANIFEST => false,
        _ => serde_json::from_slice::<serde_json::Value>(json)
            .is_ok_and(|v| v.get("manifests").is_some()),
    }
}

/// Picks the manifest for `platform` from an index.
pub fn select(index: &Index, platform: &Platform) -> Result<Descriptor> {
    let with_platform: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| d.platform.is_some())
        .collect();
    if with_platform.is_empty() {
        return match index.manifests.as_slice() {
            [one] => Ok(one.clone()),
            [] => bail!("the image index lists no manifests"),
            _ => bail!("the image index lists several manifests and no platforms"),
        };
    }
    with_platform
        .into_iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| platform.matches(p)))
        .cloned()
        .with_context(|| {
            let offered: Vec<String> = index
                .manifests
                .iter()
                .filter_map(|d| d.platform.as_ref())
                .map(|p| match &p.variant {
                    Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                    None => format!("{}/{}", p.os, p.architecture),
                })
                .collect();
            format!(
                "no manifest for platform {platform} (offered: {})",
                offered.join(", ")
            )
        })
}

/// Splits `sha256:<hex>` and checks it is well formed.
pub fn parse_digest(digest: &str) -> Result<&str> {
    match digest.split_once(':') {
        Some(("sha256", hex))
            if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
        {
            Ok(hex)
        }
        _ => bail!("unsupported or malformed digest {digest:?} (want sha256:<64 hex>)"),
    }
}

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A reader that hashes what passes through; [`Verified::check`] compares
/// the digest once the stream was read to its end.
pub struct Verified<R> {
    inner: R,
    hasher: Sha256,
    expected: String,
    read: u64,
}

impl<R: Read> Verified<R> {
    pub fn new(inner: R, expected: &str) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            expected: expected.to_owned(),
            read: 0,
        }
    }

    /// Reads whatever is left, then fails unless the digest matches.
    pub fn check(mut self) -> Result<u64> {
        io::copy(&mut self, &mut io::sink()).context("reading to the end of the blob")?;
        let got = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        if got != self.expected {
            bail!(
                "digest mismatch: expected {}, got {got} ({} bytes)",
                self.expected,
                self.read
            );
        }
        Ok(self.read)
    }
}

impl<R: Read> Read for Verified<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

/// Wraps `input` in the decompressor its first bytes call for (gzip, zstd
/// or none): layers are labelled by media type, but archives mislabel.
pub fn decompress<'a, R: Read + 'a>(input: R) -> io::Result<Box<dyn Read + 'a>> {
    let mut r = BufReader::with_capacity(LAYER_BUF, input);
    let head = r.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(r))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(r)?)
    } else {
        Box::new(r)
    })
}

/// Where an archive's or layout's blobs and files are read from.
pub trait Blobs {
    /// A reader over file `path` (relative to the layout root), and its size.
    fn open(&self, path: &str) -> Result<(Box<dyn Read + '_>, u64)>;

    /// Whether `path` exists.
    fn exists(&self, path: &str) -> bool;

    /// A small file read whole.
    fn read_small(&self, path: &str) -> Result<Vec<u8>> {
        let (r, size) = self.open(path)?;
        if size > MAX_JSON {
            bail!("{path} is too large ({size} bytes) for a manifest");
        }
        let mut out = Vec::with_capacity(size as usize);
        r.take(MAX_JSON)
            .read_to_end(&mut out)
            .with_context(|| format!("reading {path}"))?;
        Ok(out)
    }

    /// The blob of `digest`, verified, read whole.
    fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let data = self.read_small(&blob_path(digest)?)?;
        let got = sha256_digest(&data);
        if got != digest {
            bail!("blob {digest} has digest {got}");
        }
        Ok(data)
    }
}

/// `blobs/sha256/<hex>` for a digest.
pub fn blob_path(digest: &str) -> Result<String> {
    Ok(format!("blobs/sha256/{}", parse_digest(digest)?))
}

/// An OCI layout directory.
pub struct DirBlobs {
    pub root: PathBuf,
}

impl DirBlobs {
    fn path(&self, rel: &str) -> Result<PathBuf> {
        let comps = super::layer::components(rel.as_bytes())
            .with_context(|| format!("bad path {rel:?} in the layout"))?;
        Ok(comps.iter().fold(self.root.clone(), |p, c| {
            p.join(String::from_utf8_lossy(c).as_ref())
        }))
    }
}

impl Blobs for DirBlobs {
    fn open(&self, path: &str) -> Result<(Box<dyn Read + '_>, u64)> {
        let p = self.path(path)?;
        let f = File::open(&p).with_context(|| format!("opening {}", p.display()))?;
        let size = f
            .metadata()
            .with_context(|| format!("reading {}", p.display()))?
            .len();
        Ok((Box::new(f), size))
    }

    fn exists(&self, path: &str) -> bool {
        self.path(path).is_ok_and(|p| p.is_file())
    }
}

/// The regular files of an uncompressed tar archive, by normalised path,
/// read in place by offset.
pub struct TarBlobs {
    path: PathBuf,
    file: File,
    entries: HashMap<String, (u64, u64)>,
}

impl TarBlobs {
    /// Indexes the archive at `path` (one pass over its headers).
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut entries = HashMap::new();
        let mut archive = tar::Archive::new(BufReader::new(&file));
        for entry in archive
            .entries()
            .with_context(|| format!("reading {}", path.display()))?
        {
            let entry = entry.with_context(|| format!("reading {}", path.display()))?;
            let kind = entry.header().entry_type();
            if !(kind.is_file() || kind == tar::EntryType::Continuous) {
                continue;
            }
            let name = entry.path_bytes();
            let Ok(comps) = super::layer::components(&name) else {
                continue;
            };
            let key = String::from_utf8_lossy(&comps.join(&b'/')).into_owned();
            entries.insert(key, (entry.raw_file_position(), entry.size()));
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            entries,
        })
    }
}

impl Blobs for TarBlobs {
    fn open(&self, path: &str) -> Result<(Box<dyn Read + '_>, u64)> {
        let key = super::layer::components(path.as_bytes())
            .map(|c| String::from_utf8_lossy(&c.join(&b'/')).into_owned())
            .unwrap_or_default();
        let &(offset, size) = self
            .entries
            .get(&key)
            .with_context(|| format!("{} has no file {path}", self.path.display()))?;
        let mut f = self
            .file
            .try_clone()
            .with_context(|| format!("reopening {}", self.path.display()))?;
        f.seek(SeekFrom::Start(offset))
            .with_context(|| format!("seeking in {}", self.path.display()))?;
        Ok((Box::new(f.take(size)), size))
    }

    fn exists(&self, path: &str) -> bool {
        self.entries.contains_key(path)
    }
}

/// The image config, for the layer diff ids of a docker archive.
#[derive(Debug, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub rootfs: Option<RootFs>,
}

#[derive(Debug, Deserialize)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// One image of a docker archive's `manifest.json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DockerArchiveEntry {
    pub config: String,
    #[serde(default)]
    pub repo_tags: Option<Vec<String>>,
    pub layers: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_and_match() {
        let p = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert!(Platform::parse("linux").is_err());
        let spec = PlatformSpec {
            architecture: "arm64".into(),
            os: "linux".into(),
            variant: Some("v8".into()),
        };
        assert!(p.matches(&spec));
        assert!(Platform::parse("linux/arm64").unwrap().matches(&spec));
        assert!(!Platform::parse("linux/amd64").unwrap().matches(&spec));
    }

    #[test]
    fn digests_are_checked() {
        assert!(parse_digest("sha256:../../etc").is_err());
        assert!(parse_digest(&sha256_digest(b"x")).is_ok());
        let mut v = Verified::new(&b"hello"[..], &sha256_digest(b"hello"));
        let mut s = String::new();
        v.read_to_string(&mut s).unwrap();
        assert_eq!(v.check().unwrap(), 5);
        assert!(
            Verified::new(&b"hellO"[..], &sha256_digest(b"hello"))
                .check()
                .is_err()
        );
    }
}
