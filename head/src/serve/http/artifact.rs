//! Artifacts: which file a stage means for a node, and how it is answered.
//!
//! Every artifact is a file that was renamed into place when complete; it is
//! opened once and everything (size, `ETag`, body) comes from that one open
//! file, so a rebuild that renames a new file over it mid-request cannot mix
//! two versions. `ETag` is the sha256 of the content: from the image manifest,
//! from the blob's name for overlays, otherwise computed once and cached by
//! (device, inode, mtime, size).
//!
//! An overlay image stored as a marker plus the node's own member
//! (`overlay::composite`) is served as two parts: its shared blob, then the
//! node blob after the marker; both are opened together, and both are
//! immutable once named.
//!
//! A response carries a [`FileRange`] extension naming the open files and
//! the byte ranges; the connection loop sends them with `sendfile(2)` and
//! never polls the body. The body ([`FileBody`]) is there for every other
//! consumer of the router (tests, a future hyper front end).

use std::collections::HashMap;
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use http_body::{Frame, SizeHint};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use super::{HttpError, HttpState, Stage};
use crate::image::kernel_import::{self, KernelStore};
use crate::image::{ImageManifest, ImageStore, kernel};
use crate::nodedb::MergedNode;
use crate::overlay::composite;

/// Bytes read per body frame when the body is polled (not on the sendfile path).
const BODY_CHUNK: usize = 256 * 1024;
/// Buffer for hashing files that have no recorded digest.
const HASH_CHUNK: usize = 1024 * 1024;
/// Symlinks followed when resolving a path inside an image.
const MAX_SYMLINKS: usize = 40;
/// Cached digests kept before the cache is cleared.
const DIGEST_CACHE_MAX: usize = 4096;
/// Compressions an artifact may be asked for, the default first.
const COMPRESSIONS: &[&str] = &["gz", "zst"];

/// An opened artifact, ready to answer.
pub struct Found {
    /// The bytes served: these parts, one after the other.
    pub parts: Vec<Part>,
    /// sha256 of the content, hex.
    pub etag: String,
    /// File name, for `/status`.
    pub name: String,
}

/// A byte range of an open file.
#[derive(Clone, Debug)]
pub struct Part {
    pub file: Arc<File>,
    pub offset: u64,
    pub len: u64,
}

/// Bytes in `parts`.
fn total(parts: &[Part]) -> u64 {
    parts.iter().map(|p| p.len).sum()
}

impl Found {
    /// Bytes served.
    pub fn size(&self) -> u64 {
        total(&self.parts)
    }

    /// The parts holding bytes `offset .. offset + len` of the content.
    fn cut(&self, offset: u64, len: u64) -> Vec<Part> {
        let mut out = Vec::new();
        let (mut skip, mut left) = (offset, len);
        for p in &self.parts {
            if left == 0 {
                break;
            }
            if skip >= p.len {
                skip -= p.len;
                continue;
            }
            let take = (p.len - skip).min(left);
            out.push(Part {
                file: Arc::clone(&p.file),
                offset: p.offset + skip,
                len: take,
            });
            skip = 0;
            left -= take;
        }
        out
    }
}

/// Response extension: the open files and byte ranges the body carries.
#[derive(Clone, Debug)]
pub struct FileRange {
    pub parts: Vec<Part>,
}

impl FileRange {
    pub fn total(&self) -> u64 {
        total(&self.parts)
    }
}

/// A file's identity: (device, inode).
type FileId = (u64, u64);
/// What a cached digest is valid for: (mtime s, mtime ns, size), and the digest.
type Stamped = (i64, i64, u64, String);

/// Content digests of files without a recorded one, by file identity. Each
/// file has its own slot, so concurrent first requests hash it once while
/// the others wait.
#[derive(Default)]
pub struct DigestCache {
    map: Mutex<HashMap<FileId, Arc<Mutex<Option<Stamped>>>>>,
}

impl DigestCache {
    /// The sha256 of `file`, computed at most once per (inode, mtime, size).
    fn digest(&self, file: &File, meta: &Metadata) -> io::Result<String> {
        let key = (meta.dev(), meta.ino());
        let stamp = (meta.mtime(), meta.mtime_nsec(), meta.len());
        let slot = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            if map.len() >= DIGEST_CACHE_MAX && !map.contains_key(&key) {
                map.clear();
            }
            Arc::clone(map.entry(key).or_default())
        };
        let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((s, ns, len, digest)) = &*slot
            && (*s, *ns, *len) == stamp
        {
            return Ok(digest.clone());
        }
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; HASH_CHUNK];
        let mut pos = 0u64;
        loop {
            let n = file.read_at(&mut buf, pos)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            pos += n as u64;
        }
        let digest = hex::encode(hasher.finalize());
        *slot = Some((stamp.0, stamp.1, stamp.2, digest.clone()));
        Ok(digest)
    }
}

/// Opens the artifact of `stage` for `node`. File system work runs on the
/// blocking pool.
pub async fn resolve(
    state: &Arc<HttpState>,
    node: Arc<MergedNode>,
    stage: Stage,
    compress: Option<&str>,
) -> Result<Found, HttpError> {
    let exts: Vec<&'static str> = match compress {
        None => COMPRESSIONS.to_vec(),
        Some(c) => match COMPRESSIONS.iter().find(|x| **x == c) {
            Some(x) => vec![*x],
            None => {
                return Err(HttpError::bad_request(format!(
                    "unsupported compression {c:?} (gz or zst)"
                )));
            }
        },
    };
    if matches!(stage, Stage::System | Stage::Runtime)
        && state.config.warewulf.autobuild_overlays
        && safe_relative(&node.id)
    {
        state
            .autobuild
            .ensure(&state.config, &node.id, exts[0])
            .await;
    }
    let state = Arc::clone(state);
    tokio::task::spawn_blocking(move || match stage {
        Stage::Image => image(&state, &node, &exts),
        Stage::Kernel => kernel_file(&state, &node),
        Stage::System => overlay(&state, &node, "__SYSTEM__", &exts),
        Stage::Runtime => overlay(&state, &node, "__RUNTIME__", &exts),
        Stage::Initramfs => initramfs(&state, &node),
        Stage::Kmods => kmods(&state, &node),
        Stage::Ipxe => Err(HttpError::internal("ipxe is not a file artifact")),
    })
    .await
    .map_err(|e| HttpError::internal(format!("artifact lookup failed: {e}")))?
}

/// Opens `/efiboot/<file>` under `paths: ipxesource`.
pub async fn efiboot(state: &Arc<HttpState>, file: &str) -> Result<Found, HttpError> {
    if !safe_relative(file) {
        return Err(HttpError::bad_request(format!(
            "invalid efiboot file name {file:?}"
        )));
    }
    let path = state.config.paths.ipxesource.join(file);
    let state = Arc::clone(state);
    tokio::task::spawn_blocking(move || {
        let Some((f, meta)) = open_regular(&path, false)? else {
            return Err(HttpError::not_found(format!(
                "{} not found",
                path.display()
            )));
        };
        let etag = digest(&state, &f, &meta)?;
        Ok(found(f, &meta, etag, &path))
    })
    .await
    .map_err(|e| HttpError::internal(format!("artifact lookup failed: {e}")))?
}

/// True for `a/b.efi`-style names: no empty, `.`/`..` or hidden components.
pub fn safe_relative(path: &str) -> bool {
    !path.is_empty()
        && path.split('/').all(|c| {
            !c.is_empty()
                && !c.starts_with('.')
                && c.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "-_.+".contains(ch))
        })
}

fn image(state: &HttpState, node: &MergedNode, exts: &[&str]) -> Result<Found, HttpError> {
    let name = image_name(node)?;
    let store = ImageStore::new(&state.config.paths);
    let manifest = ImageManifest::load(&store.manifest(name)).ok().flatten();
    for ext in exts {
        let path = store.images_dir().join(format!("{name}.img.{ext}"));
        let Some((f, meta)) = open_regular(&path, false)? else {
            continue;
        };
        let recorded = manifest
            .as_ref()
            .and_then(|m| m.artifact(ext))
            .filter(|a| a.size == meta.len())
            .map(|a| a.sha256.clone());
        let etag = match recorded {
            Some(d) => d,
            None => digest(state, &f, &meta)?,
        };
        return Ok(found(f, &meta, etag, &path));
    }
    Err(HttpError::not_found(format!(
        "image {name} is not built (as {}): run `wwctl image build {name}`",
        exts.join(" or ")
    )))
}

fn overlay(
    state: &HttpState,
    node: &MergedNode,
    which: &str,
    exts: &[&str],
) -> Result<Found, HttpError> {
    if !safe_relative(&node.id) {
        return Err(HttpError::internal(format!(
            "node name {:?} is not file-safe",
            node.id
        )));
    }
    let dir = state
        .config
        .paths
        .wwprovisiondir
        .join("overlays")
        .join(&node.id);
    for ext in exts {
        let link = dir.join(format!("{which}.img.{ext}"));
        // Resolve the pointer once; the blob it names is immutable.
        let path = match std::fs::canonicalize(&link) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(HttpError::internal(format!(
                    "resolving {}: {e}",
                    link.display()
                )));
            }
        };
        let Some((f, meta)) = open_regular(&path, false)? else {
            continue;
        };
        let mut out = match blob_digest(&path) {
            Some(d) => blob(&path, f, &meta, d)?,
            None => {
                let etag = digest(state, &f, &meta)?;
                found(f, &meta, etag, &link)
            }
        };
        out.name = format!("{which}.img.{ext}");
        return Ok(out);
    }
    let kind = if which == "__SYSTEM__" {
        "system"
    } else {
        "runtime"
    };
    Err(HttpError::not_found(format!(
        "{kind} overlay of node {} is not built: run `wwctl overlay build {}`",
        node.id, node.id
    )))
}

/// An overlay blob named `digest`: the whole image, or a marker naming its
/// shared blob plus the node's own bytes (`overlay::composite`).
fn blob(path: &Path, f: File, meta: &Metadata, digest: String) -> Result<Found, HttpError> {
    let read_error = |e: io::Error| HttpError::internal(format!("reading {}: {e}", path.display()));
    let Some((shared_path, own_at)) = composite::resolve(path, &f).map_err(read_error)? else {
        return Ok(found(f, meta, digest, path));
    };
    let Some((shared, shared_meta)) = open_regular(&shared_path, false)? else {
        return Err(HttpError::internal(format!(
            "{} names its shared part {}, which is missing: run `wwctl overlay build`",
            path.display(),
            shared_path.display()
        )));
    };
    let own = meta.len().saturating_sub(own_at);
    Ok(Found {
        parts: vec![
            Part {
                file: Arc::new(shared),
                offset: 0,
                len: shared_meta.len(),
            },
            Part {
                file: Arc::new(f),
                offset: own_at,
                len: own,
            },
        ],
        etag: digest,
        name: String::new(),
    })
}

/// `blobs/<name>` → the digest its name stands for, as hex.
fn blob_digest(path: &Path) -> Option<String> {
    if path.parent()?.file_name()? != composite::BLOB_DIR {
        return None;
    }
    composite::parse_blob_name(path.file_name()?.to_str()?).map(hex::encode)
}

fn initramfs(state: &HttpState, node: &MergedNode) -> Result<Found, HttpError> {
    let Some(kver) = kernel_version(state, node) else {
        return Err(HttpError::not_found(format!(
            "node {}: no kernel version known, so no stage-1 initramfs",
            node.id
        )));
    };
    if !safe_relative(&kver) {
        return Err(HttpError::not_found(format!(
            "kernel version {kver:?} is not file-safe"
        )));
    }
    let path = state
        .config
        .paths
        .wwprovisiondir
        .join("initramfs")
        .join(format!("{kver}.img"));
    let Some((f, meta)) = open_regular(&path, false)? else {
        return Err(HttpError::not_found(format!(
            "no stage-1 initramfs for kernel {kver}: {} does not exist (not built yet)",
            path.display()
        )));
    };
    let etag = digest(state, &f, &meta)?;
    Ok(found(f, &meta, etag, &path))
}

fn image_name(node: &MergedNode) -> Result<&str, HttpError> {
    let name = node
        .conf
        .image_name
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| HttpError::not_found(format!("node {} has no image", node.id)))?;
    crate::image::store::validate_name(name)
        .map_err(|e| HttpError::not_found(format!("node {}: {e}", node.id)))?;
    Ok(name)
}

/// The kernel of the node's image: `kernel: version` when set (a version
/// among the image's kernels, or a path inside the image), else the one the
/// image build recorded, else the image's default kernel.
fn kernel_path(state: &HttpState, node: &MergedNode) -> Result<(PathBuf, String), HttpError> {
    let name = image_name(node)?;
    let store = ImageStore::new(&state.config.paths);
    let rootfs = store.rootfs(name);
    let wanted = node
        .conf
        .kernel
        .as_ref()
        .and_then(|k| k.version.as_deref())
        .filter(|v| !v.is_empty());
    let path = match wanted {
        Some(p) if p.starts_with('/') => p.to_owned(),
        Some(v) => kernel::find(&rootfs)
            .into_iter()
            .find(|k| k.version.as_deref() == Some(v))
            .map(|k| k.path)
            .ok_or_else(|| HttpError::not_found(format!("kernel {v} not found in image {name}")))?,
        None => {
            let recorded = ImageManifest::load(&store.manifest(name))
                .ok()
                .flatten()
                .and_then(|m| m.kernel_path);
            match recorded {
                Some(p) => p,
                None => kernel::default_kernel(&kernel::find(&rootfs))
                    .map(|k| k.path.clone())
                    .ok_or_else(|| {
                        HttpError::not_found(format!("no kernel found in image {name}"))
                    })?,
            }
        }
    };
    Ok((rootfs, path))
}

/// The kernel version a node boots, for `KernelVersion` and the stage-1 name.
pub fn kernel_version(state: &HttpState, node: &MergedNode) -> Option<String> {
    let wanted = node
        .conf
        .kernel
        .as_ref()
        .and_then(|k| k.version.as_deref())
        .filter(|v| !v.is_empty());
    if let Some(v) = wanted.filter(|v| !v.starts_with('/')) {
        return Some(v.to_owned());
    }
    let name = image_name(node).ok()?;
    let store = ImageStore::new(&state.config.paths);
    if wanted.is_none()
        && let Some(v) = ImageManifest::load(&store.manifest(name))
            .ok()
            .flatten()
            .and_then(|m| m.kernel_version)
    {
        return Some(v);
    }
    let kernels = kernel::find(&store.rootfs(name));
    match wanted {
        Some(p) => kernels
            .into_iter()
            .find(|k| k.path == p)
            .and_then(|k| k.version),
        None => kernel::default_kernel(&kernels).and_then(|k| k.version.clone()),
    }
}

/// The directory of an imported kernel the node boots instead of one in its
/// image: its `kernel: version` names a version the image lacks but
/// `wwctl kernel import` stored.
fn imported_kernel(state: &HttpState, node: &MergedNode) -> Option<PathBuf> {
    let v = node
        .conf
        .kernel
        .as_ref()?
        .version
        .as_deref()
        .filter(|v| !v.is_empty() && !v.starts_with('/'))?;
    if let Ok(name) = image_name(node) {
        let rootfs = ImageStore::new(&state.config.paths).rootfs(name);
        if kernel::find(&rootfs)
            .iter()
            .any(|k| k.version.as_deref() == Some(v))
        {
            return None;
        }
    }
    let dir = KernelStore::new(&state.config.paths).kernel_dir(v).ok()?;
    dir.join(kernel_import::VMLINUZ).is_file().then_some(dir)
}

/// The modules archive of an imported kernel, layered after the image.
fn kmods(state: &HttpState, node: &MergedNode) -> Result<Found, HttpError> {
    let Some(dir) = imported_kernel(state, node) else {
        return Err(HttpError::not_found(format!(
            "node {} boots its image's own kernel: no separate kmods",
            node.id
        )));
    };
    let path = dir.join(kernel_import::KMODS_GZ);
    let Some((f, meta)) = open_regular(&path, true)? else {
        return Err(HttpError::not_found(format!(
            "{} not found",
            path.display()
        )));
    };
    let etag = digest(state, &f, &meta)?;
    Ok(found(f, &meta, etag, &path))
}

fn kernel_file(state: &HttpState, node: &MergedNode) -> Result<Found, HttpError> {
    if let Some(dir) = imported_kernel(state, node) {
        let path = dir.join(kernel_import::VMLINUZ);
        let Some((f, meta)) = open_regular(&path, true)? else {
            return Err(HttpError::not_found(format!(
                "{} not found",
                path.display()
            )));
        };
        let etag = digest(state, &f, &meta)?;
        return Ok(found(f, &meta, etag, &path));
    }
    let (rootfs, inside) = kernel_path(state, node)?;
    let path = resolve_in_root(&rootfs, &inside)
        .map_err(|e| HttpError::not_found(format!("kernel {inside} of node {}: {e}", node.id)))?;
    let Some((f, meta)) = open_regular(&path, true)? else {
        return Err(HttpError::not_found(format!(
            "kernel {} not found",
            path.display()
        )));
    };
    let etag = digest(state, &f, &meta)?;
    Ok(found(f, &meta, etag, &path))
}

/// Resolves `inside` (a path in the image) against `root` the way the node
/// would see it: symlinks are followed, absolute targets and `..` stay inside
/// `root`.
pub fn resolve_in_root(root: &Path, inside: &str) -> io::Result<PathBuf> {
    let mut pending: Vec<String> = components(inside);
    pending.reverse();
    let mut done: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            done.pop();
            continue;
        }
        let candidate: PathBuf = root.join(done.iter().chain([&part]).collect::<PathBuf>());
        let meta = std::fs::symlink_metadata(&candidate)?;
        if meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(io::Error::other("too many symbolic links"));
            }
            let target = std::fs::read_link(&candidate)?;
            let target = target.to_string_lossy();
            if target.starts_with('/') {
                done.clear();
            }
            let mut more = components(&target);
            more.reverse();
            pending.extend(more);
        } else {
            done.push(part);
        }
    }
    Ok(root.join(done.iter().collect::<PathBuf>()))
}

fn components(path: &str) -> Vec<String> {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".to_owned()),
            _ => None,
        })
        .collect()
}

/// Opens a regular file; `Ok(None)` when it does not exist or is not a
/// regular file. `nofollow` refuses a symlink as the last component.
fn open_regular(path: &Path, nofollow: bool) -> Result<Option<(File, Metadata)>, HttpError> {
    let mut opts = OpenOptions::new();
    opts.read(true);
    if nofollow {
        opts.custom_flags(libc::O_NOFOLLOW);
    }
    let f = match opts.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(HttpError::internal(format!(
                "opening {}: {e}",
                path.display()
            )));
        }
    };
    let meta = f
        .metadata()
        .map_err(|e| HttpError::internal(format!("reading {}: {e}", path.display())))?;
    Ok(meta.is_file().then_some((f, meta)))
}

fn digest(state: &HttpState, f: &File, meta: &Metadata) -> Result<String, HttpError> {
    state
        .digests
        .digest(f, meta)
        .map_err(|e| HttpError::internal(format!("hashing an artifact: {e}")))
}

fn found(f: File, meta: &Metadata, etag: String, path: &Path) -> Found {
    Found {
        parts: vec![Part {
            file: Arc::new(f),
            offset: 0,
            len: meta.len(),
        }],
        etag,
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    }
}

/// The byte range a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeSpec {
    Full,
    /// `(offset, length)`.
    Partial(u64, u64),
    Unsatisfiable,
}

/// Parses a `Range` header against a file of `size` bytes. One range of
/// `bytes=a-b`, `a-` or `-n` is honoured; anything else (several ranges,
/// other units, bad syntax) is ignored and the whole file is sent, which
/// RFC 9110 allows.
pub fn parse_range(header: Option<&str>, size: u64) -> RangeSpec {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeSpec::Full;
    };
    if spec.contains(',') {
        return RangeSpec::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeSpec::Full;
    };
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (a.trim(), b.trim()) {
        ("", suffix) => match num(suffix) {
            None => RangeSpec::Full,
            Some(0) => RangeSpec::Unsatisfiable,
            Some(_) if size == 0 => RangeSpec::Unsatisfiable,
            Some(n) => {
                let n = n.min(size);
                RangeSpec::Partial(size - n, n)
            }
        },
        (start, end) => {
            let Some(start) = num(start) else {
                return RangeSpec::Full;
            };
            let end = if end.is_empty() {
                None
            } else {
                match num(end) {
                    Some(e) if e >= start => Some(e),
                    _ => return RangeSpec::Full,
                }
            };
            if start >= size {
                return RangeSpec::Unsatisfiable;
            }
            let last = end.map_or(size - 1, |e| e.min(size - 1));
            RangeSpec::Partial(start, last - start + 1)
        }
    }
}

/// True when an `If-None-Match` value lists `etag` (quoted) or is `*`.
fn etag_matches(list: &str, etag: &str) -> bool {
    list.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

/// Answers a GET or HEAD for an opened artifact: `304`, `206`, `416` or
/// `200`, with `ETag`, `Content-Length` and `Accept-Ranges`. Returns the
/// response and the body bytes it will carry.
pub fn respond(found: Found, method: &Method, headers: &HeaderMap) -> (Response, u64) {
    let etag = format!("\"{}\"", found.etag);
    let get = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let mut resp = Response::new(Body::empty());
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if get(header::IF_NONE_MATCH).is_some_and(|l| etag_matches(l, &etag)) {
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        return (resp, 0);
    }
    let range_applies = get(header::IF_RANGE).is_none_or(|v| v.trim() == etag);
    let range = if range_applies {
        parse_range(get(header::RANGE), found.size())
    } else {
        RangeSpec::Full
    };
    let (offset, len) = match range {
        RangeSpec::Unsatisfiable => {
            *resp.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            let h = resp.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", found.size())) {
                h.insert(header::CONTENT_RANGE, v);
            }
            h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
            return (resp, 0);
        }
        RangeSpec::Full => (0, found.size()),
        RangeSpec::Partial(offset, len) => {
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            let v = format!("bytes {}-{}/{}", offset, offset + len - 1, found.size());
            if let Ok(v) = HeaderValue::from_str(&v) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            (offset, len)
        }
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    let parts = found.cut(offset, len);
    resp.extensions_mut().insert(FileRange {
        parts: parts.clone(),
    });
    if method == Method::HEAD {
        return (resp, 0);
    }
    *resp.body_mut() = Body::new(FileBody {
        parts,
        at: 0,
        done: 0,
        pending: None,
    });
    (resp, len)
}

/// Byte ranges of open files as one HTTP body, read on the blocking pool.
pub struct FileBody {
    parts: Vec<Part>,
    /// The part being read.
    at: usize,
    /// Bytes of that part already read.
    done: u64,
    pending: Option<JoinHandle<io::Result<Bytes>>>,
}

impl FileBody {
    fn left(&self) -> u64 {
        total(&self.parts[self.at.min(self.parts.len())..]) - self.done
    }
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if this.pending.is_none() {
            while this.parts.get(this.at).is_some_and(|p| this.done >= p.len) {
                this.at += 1;
                this.done = 0;
            }
            let Some(part) = this.parts.get(this.at) else {
                return Poll::Ready(None);
            };
            let file = Arc::clone(&part.file);
            let pos = part.offset + this.done;
            let n = usize::try_from(part.len - this.done).map_or(BODY_CHUNK, |n| n.min(BODY_CHUNK));
            this.pending = Some(tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; n];
                file.read_exact_at(&mut buf, pos)?;
                Ok(Bytes::from(buf))
            }));
        }
        let Some(handle) = this.pending.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(handle).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(res) => {
                this.pending = None;
                let chunk = match res {
                    Ok(Ok(b)) => b,
                    Ok(Err(e)) => return Poll::Ready(Some(Err(e))),
                    Err(e) => return Poll::Ready(Some(Err(io::Error::other(e)))),
                };
                this.done += chunk.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_none() && self.left() == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left())
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn ranges() {
        use RangeSpec::*;
        let r = |h: &str| parse_range(Some(h), 100);
        assert_eq!(parse_range(None, 100), Full);
        assert_eq!(r("bytes=0-9"), Partial(0, 10));
        assert_eq!(r("bytes=90-"), Partial(90, 10));
        assert_eq!(r("bytes=90-500"), Partial(90, 10));
        assert_eq!(r("bytes=-10"), Partial(90, 10));
        assert_eq!(r("bytes=-500"), Partial(0, 100));
        assert_eq!(r("bytes=100-"), Unsatisfiable);
        assert_eq!(r("bytes=-0"), Unsatisfiable);
        assert_eq!(r("bytes=5-1"), Full);
        assert_eq!(r("bytes=0-1,5-6"), Full);
        assert_eq!(r("items=0-1"), Full);
        assert_eq!(r("bytes=x-1"), Full);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Unsatisfiable);
    }

    #[test]
    fn relative_names() {
        assert!(safe_relative("ipxe-snponly-x86_64.efi"));
        assert!(safe_relative("arm64-efi/snponly.efi"));
        for bad in [
            "",
            "../etc/passwd",
            "a/../b",
            "/etc/passwd",
            ".hidden",
            "a//b",
            "a b",
        ] {
            assert!(!safe_relative(bad), "{bad}");
        }
    }

    #[test]
    fn symlinks_stay_inside_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("boot")).unwrap();
        std::fs::write(root.join("boot/vmlinuz-1"), b"k").unwrap();
        std::os::unix::fs::symlink("/boot/vmlinuz-1", root.join("boot/abs")).unwrap();
        std::os::unix::fs::symlink("../../../../etc/hostname", root.join("boot/escape")).unwrap();
        assert_eq!(
            resolve_in_root(root, "/boot/abs").unwrap(),
            root.join("boot/vmlinuz-1")
        );
        assert_eq!(
            resolve_in_root(root, "/boot/escape").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
