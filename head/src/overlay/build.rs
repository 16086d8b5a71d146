//! `wwctl overlay build`: per-node system and runtime images.
//!
//! A run:
//! 1. loads `nodes.conf`, hashes every node's merged settings and the site
//!    configuration, and reads and parses each overlay in use once;
//! 2. settles every node-independent template (see `deps`): when its
//!    recorded inputs are unchanged its recorded output digest stands and it
//!    is rendered only if an image needs it; otherwise it is rendered once
//!    and its output hashed (its inputs, when it prints the build time);
//! 3. computes each image's input hash (overlay contents, shared outputs,
//!    node, site, and the node list when a node-specific template reads
//!    `AllNodes`) and skips images whose recorded hash and `Include`d file
//!    stamps are unchanged, without rendering;
//! 4. builds the rest on `workers` threads. An image is two concatenated
//!    compressed newc members (the kernel and wwclient unpack both): the
//!    *shared* member (static files and shared renders of that overlay
//!    list, compressed and hashed once per run) and the node's own member;
//!    the digest continues the shared member's SHA-256 state. The bytes go
//!    to `blobs/<name>` (`composite::blob_name` of its digest) unless that
//!    blob exists; a shared member of
//!    [`composite::MIN_SHARED`] or more is stored once as a blob of its own
//!    and each image's blob holds a marker naming it plus the node's member
//!    (served as the two joined, see `composite`);
//! 5. makes the new blobs durable (fsync each when few, else one `syncfs`),
//!    then swaps the per-node pointers (`overlays/<node>/__SYSTEM__.img.gz`
//!    → `../../blobs/<name>`, a symlink renamed into place), writes
//!    the index (`overlays/.index`, postcard: per node and image the input hash,
//!    blob digests and files read with their stamps; per shared template
//!    its input and output hashes) and deletes blobs no node refers to.
//!
//! A node whose templates fail keeps its previous images; every error is
//! collected and reported, naming node, overlay, file and position.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use indicatif::ProgressBar;
use initramfs::compress::Compression;
use initramfs::newc::{Header, Writer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wwtemplate::RenderEnv;

use super::allnodes::Reach;
use super::composite;
use super::data::{NodeData, Site};
use super::nodeset::{NodeSet, list_id};
use super::render::{FileKind, Prepared, RenderedFile, merge_into};
use super::store::OverlayStore;
use crate::config::Config;
use crate::image::ImageStore;
use crate::nodedb::merge::clean_list;
use crate::nodedb::{MergedNode, NodeDb};

/// Default system overlays of a node that names none.
pub const DEFAULT_SYSTEM: &[&str] = &[
    "wwinit",
    "wwclient",
    "hosts",
    "fstab",
    "hostname",
    "ssh.host_keys",
    "issue",
    "resolv",
    "udev.netname",
    "systemd.netname",
    "ifcfg",
    "ifupdown",
    "NetworkManager",
    "wicked",
    "ignition",
];

/// Default runtime overlays of a node that names none.
pub const DEFAULT_RUNTIME: &[&str] = &["hosts", "ssh.authorized_keys"];

/// Bumped whenever the image format or the hash inputs change.
const FORMAT: &str = "ironwulf-overlay-5";

/// Mode of blobs: they hold secrets (keys, passwords).
const BLOB_MODE: u32 = 0o600;

/// Up to this many new blobs (or changed nodes) are fsynced one by one;
/// beyond it one `syncfs` is cheaper.
const FSYNC_MAX: usize = 64;

/// gzip level of overlay images.
const GZIP_LEVEL: u32 = 6;
/// zstd level of overlay images.
const ZSTD_LEVEL: i32 = 3;

/// The two images of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ImageKind {
    System,
    Runtime,
}

impl ImageKind {
    pub const ALL: [ImageKind; 2] = [ImageKind::System, ImageKind::Runtime];

    /// Warewulf's file stem.
    pub fn stem(self) -> &'static str {
        match self {
            ImageKind::System => "__SYSTEM__",
            ImageKind::Runtime => "__RUNTIME__",
        }
    }

    /// The overlay names of this image for `node` (defaults when unset).
    pub fn overlays(self, node: &MergedNode) -> Vec<String> {
        let (list, default) = match self {
            ImageKind::System => (&node.conf.system_overlay, DEFAULT_SYSTEM),
            ImageKind::Runtime => (&node.conf.runtime_overlay, DEFAULT_RUNTIME),
        };
        let list = clean_list(list.as_deref().unwrap_or(&[]));
        if list.is_empty() {
            default.iter().map(|s| s.to_string()).collect()
        } else {
            list
        }
    }
}

/// Where built images live under `<wwprovisiondir>`.
#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(config: &Config) -> Self {
        Self {
            root: config.paths.wwprovisiondir.clone(),
        }
    }

    /// `blobs`: images and shared parts, named by `composite::blob_name`.
    pub fn blobs(&self) -> PathBuf {
        self.root.join(composite::BLOB_DIR)
    }

    /// `blobs/sha256`, where images were kept with hex names.
    fn legacy_blobs(&self) -> PathBuf {
        self.root.join(composite::BLOB_DIR).join("sha256")
    }

    /// `overlays/<node>`.
    pub fn node_dir(&self, node: &str) -> PathBuf {
        self.root.join("overlays").join(node)
    }

    /// `overlays/<node>/__SYSTEM__.img.gz` and friends.
    pub fn pointer(&self, node: &str, kind: ImageKind, c: Compression) -> PathBuf {
        self.node_dir(node)
            .join(format!("{}.img.{}", kind.stem(), c.extension()))
    }

    fn index(&self) -> PathBuf {
        self.root.join("overlays").join(".index")
    }

    /// Shared members of overlay lists, kept between runs.
    fn shared(&self) -> PathBuf {
        self.root.join("overlays").join(".shared")
    }

    fn nodes_cache(&self) -> PathBuf {
        self.root.join("overlays").join(".nodes.cache")
    }

    fn lock(&self) -> PathBuf {
        self.root.join("overlays").join(".lock")
    }
}

/// What to build.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// Nodes to build; empty means every node (and stale nodes are removed).
    pub nodes: Vec<String>,
    /// Worker threads (0 = one per core).
    pub workers: usize,
    /// Compressions to produce (gzip and/or zstd).
    pub compressions: Vec<Compression>,
    /// Rebuild even when nothing changed.
    pub force: bool,
}

/// What a build did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BuildReport {
    /// Nodes with at least one image rebuilt.
    pub nodes_built: usize,
    /// Images (system or runtime) rebuilt.
    pub images_built: usize,
    /// Images left as they were.
    pub images_unchanged: usize,
    /// New blobs written.
    pub blobs_written: usize,
    /// Blobs deleted because nothing refers to them.
    pub blobs_removed: usize,
    /// Every failure, one line each.
    pub errors: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Index {
    format: String,
    nodes: BTreeMap<String, NodeRecord>,
    /// Shared renders by `overlay\0source`.
    #[serde(default)]
    shared: BTreeMap<String, SharedRecord>,
}

/// The record of one shared (node-independent) render.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct SharedRecord {
    /// Hash of its inputs.
    key: String,
    /// Hash of its output (or of its inputs when it prints the build time).
    canon: String,
    #[serde(default)]
    files_read: Vec<FileStamp>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct NodeRecord {
    #[serde(default)]
    system: Option<ImageRecord>,
    #[serde(default)]
    runtime: Option<ImageRecord>,
}

impl NodeRecord {
    fn get(&self, kind: ImageKind) -> Option<&ImageRecord> {
        match kind {
            ImageKind::System => self.system.as_ref(),
            ImageKind::Runtime => self.runtime.as_ref(),
        }
    }

    fn set(&mut self, kind: ImageKind, rec: ImageRecord) {
        match kind {
            ImageKind::System => self.system = Some(rec),
            ImageKind::Runtime => self.runtime = Some(rec),
        }
    }

    fn digests(&self) -> impl Iterator<Item = &Hash32> {
        self.system
            .iter()
            .chain(self.runtime.iter())
            .flat_map(|r| r.blobs.values().chain(r.bases.values()))
    }
}

/// The record of one built image.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct ImageRecord {
    /// Input hash the image was built from.
    input: Hash32,
    /// Extension (`gz`, `zst`) → blob digest.
    blobs: BTreeMap<String, Hash32>,
    /// Host files read by templates, with their stamps at build time.
    #[serde(default)]
    files_read: Vec<FileStamp>,
    /// Unix time of the build.
    built: u64,
    /// Key of the shared member the image starts with (`.shared/<key>`).
    #[serde(default)]
    shared: Option<Hash32>,
    /// Extension → the blob of the shared member, for images stored as a
    /// marker plus the node's own member (`composite`).
    #[serde(default)]
    bases: BTreeMap<String, Hash32>,
}

/// A SHA-256 digest, stored as its 32 bytes and shown as lower-case hex.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
struct Hash32([u8; 32]);

impl Hash32 {
    /// Its blob's file name.
    fn name(&self) -> String {
        composite::blob_name(&self.0)
    }
}

impl std::fmt::Display for Hash32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut buf = [0u8; 64];
        hex::encode_to_slice(self.0, &mut buf).map_err(|_| std::fmt::Error)?;
        f.write_str(std::str::from_utf8(&buf).map_err(|_| std::fmt::Error)?)
    }
}

impl std::str::FromStr for Hash32 {
    type Err = hex::FromHexError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut raw = [0u8; 32];
        hex::decode_to_slice(s, &mut raw)?;
        Ok(Hash32(raw))
    }
}

impl Serialize for Hash32 {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Hash32 {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let b: &[u8] = <&[u8]>::deserialize(de)?;
        let raw: [u8; 32] = b
            .try_into()
            .map_err(|_| serde::de::Error::custom("a digest is 32 bytes"))?;
        Ok(Hash32(raw))
    }
}

/// Identity of a file version.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct FileStamp {
    path: String,
    /// `None`: the file did not exist.
    stamp: Option<(i64, i64, u64, u64)>,
}

impl FileStamp {
    fn of(path: &Path) -> FileStamp {
        let stamp = fs::metadata(path)
            .ok()
            .map(|m| (m.mtime(), m.mtime_nsec(), m.size(), m.ino()));
        FileStamp {
            path: path.to_string_lossy().into_owned(),
            stamp,
        }
    }
}

/// The outputs of a shared render, or its error.
type SharedRender = Result<Vec<RenderedFile>, String>;

/// Stored blob per extension, the files read and the shared member's key.
/// What building one image stored.
struct ImageBlobs {
    blobs: BTreeMap<String, Hash32>,
    bases: BTreeMap<String, Hash32>,
    files_read: Vec<FileStamp>,
    shared: Hash32,
}

/// An overlay prepared for this run, with its shared renders.
struct OverlayRun {
    prep: Arc<Prepared>,
    /// Per template: the shared render (node-independent templates only),
    /// done now or, when its recorded inputs are unchanged, on first use.
    shared: Vec<Option<OnceLock<SharedRender>>>,
    /// Digest of the overlay and its shared renders (or their inputs).
    digest: [u8; 32],
    /// A node-specific template of this overlay reads `AllNodes`.
    node_uses_all: bool,
}

/// The shared member of one overlay list.
struct SharedMember {
    /// Digest of its inputs (overlay list, overlay digests, compressions).
    key: Hash32,
    paths: HashSet<String>,
    /// Compressed bytes per requested compression (same order).
    members: Vec<Vec<u8>>,
    /// SHA-256 state after each member, so a node's image digest only
    /// hashes the node's own bytes.
    hashed: Vec<Sha256>,
    /// SHA-256 of each member: its blob's name when stored on its own.
    digests: Vec<Hash32>,
    /// Failures of the shared renders (reported for every node using them).
    errors: Vec<String>,
}

/// Everything workers share.
struct Run<'a> {
    site: Site,
    env: RenderEnv,
    overlays: HashMap<String, Result<OverlayRun, String>>,
    shared: Mutex<HashMap<Vec<String>, Arc<OnceLock<SharedMember>>>>,
    compressions: &'a [Compression],
    blobs: PathBuf,
    /// Shared members kept between runs.
    shared_dir: PathBuf,
    blobs_written: AtomicUsize,
    /// Few images to build: fsync each blob instead of one syncfs.
    fsync_each: bool,
}

/// One image to build.
struct Job {
    node: usize,
    kinds: Vec<(ImageKind, Arc<[String]>, Hash32)>,
}

/// What a worker produced for one node.
struct Built {
    node: usize,
    images: Vec<(ImageKind, ImageRecord)>,
    errors: Vec<String>,
}

/// The render environment of a site (file roots, images for `IncludeFrom`).
pub fn render_env(config: &Config) -> RenderEnv {
    let images = ImageStore::new(&config.paths);
    RenderEnv::new()
        .with_sysconfdir(config.paths.sysconfdir.to_string_lossy().into_owned())
        .with_images(move |name: &str| {
            let p = images.rootfs(name);
            p.is_dir().then_some(p)
        })
        .with_ignition(|root| {
            root.get(super::data::IGNITION_FIELD)
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        })
}

/// Loads `nodes.conf` merged with profiles.
pub fn load_nodes(config: &Config) -> Result<Vec<MergedNode>> {
    let path = config.nodes_conf();
    let db = NodeDb::load(&path).with_context(|| format!("loading {}", path.display()))?;
    Ok(db.merged_all())
}

/// Hash of everything site-wide a template can see besides the nodes.
fn site_hash(config: &Config) -> Result<[u8; 32]> {
    let mut h = Sha256::new();
    h.update(FORMAT);
    h.update(env!("CARGO_PKG_VERSION"));
    h.update(serde_json::to_vec(config).context("hashing the configuration")?);
    if let Ok(host) = nix::unistd::gethostname() {
        h.update(host.to_string_lossy().as_bytes());
    }
    Ok(h.finalize().into())
}

/// Reads and parses one overlay and settles its shared renders: a template
/// whose recorded inputs (source, site, node list, files read) are unchanged
/// keeps its recorded output digest and is rendered only if an image needs
/// it; the others are rendered now and their output hashed, so a node change
/// that leaves e.g. `/etc/hosts` as it was rebuilds no other node.
fn prepare(
    prep: Arc<Prepared>,
    name: &str,
    ctx: &PrepareCtx<'_>,
    records: &mut BTreeMap<String, SharedRecord>,
) -> Result<OverlayRun, String> {
    let mut h = Sha256::new();
    h.update(prep.digest);
    let mut shared = Vec::with_capacity(prep.templates.len());
    let mut node_uses_all = false;
    for t in &prep.templates {
        if !t.refs.node_independent() || t.parsed.is_err() {
            node_uses_all |= t.refs.uses_all_nodes();
            shared.push(None);
            continue;
        }
        let mut kh = Sha256::new();
        kh.update(t.digest);
        kh.update(name.as_bytes());
        kh.update([0]);
        kh.update(t.host_path.as_bytes());
        kh.update(ctx.site_hash);
        if t.refs.uses_all_nodes() {
            kh.update(ctx.all_hash);
        }
        let key = hex::encode(kh.finalize());
        let id = format!("{name}\0{}", t.source);
        h.update(t.source.as_bytes());
        let cell = OnceLock::new();
        let cached = records.get(&id).filter(|r| {
            r.key == key
                && r.files_read
                    .iter()
                    .all(|f| FileStamp::of(Path::new(&f.path)) == *f)
        });
        let canon = match cached {
            Some(r) => r.canon.clone(),
            None => {
                let result = ctx
                    .site
                    .shared_data(name, &t.host_path)
                    .and_then(|data| prep.render_template(t, &data, ctx.env));
                let mut ch = Sha256::new();
                let mut files_read = Vec::new();
                match &result {
                    Ok((files, read)) => {
                        if t.refs.uses_build_time() {
                            // The output carries this run's time: its inputs stand for it.
                            ch.update(key.as_bytes());
                        } else {
                            for f in files {
                                hash_file(&mut ch, f);
                            }
                        }
                        files_read = read.iter().map(|p| FileStamp::of(p)).collect();
                        for st in &files_read {
                            ch.update(serde_json::to_vec(st).unwrap_or_default());
                        }
                    }
                    Err(e) => ch.update(e.as_bytes()),
                }
                let canon = hex::encode(ch.finalize());
                records.insert(
                    id,
                    SharedRecord {
                        key,
                        canon: canon.clone(),
                        files_read,
                    },
                );
                let _ = cell.set(result.map(|(files, _)| files));
                canon
            }
        };
        h.update(canon.as_bytes());
        shared.push(Some(cell));
    }
    Ok(OverlayRun {
        prep,
        shared,
        digest: h.finalize().into(),
        node_uses_all,
    })
}

/// What [`prepare`] needs from the run.
struct PrepareCtx<'a> {
    site: &'a Site,
    env: &'a RenderEnv,
    site_hash: &'a [u8; 32],
    all_hash: &'a [u8; 32],
}

fn hash_file(h: &mut Sha256, f: &RenderedFile) {
    h.update(f.path.as_bytes());
    h.update([0]);
    h.update(f.mode.to_le_bytes());
    h.update(f.uid.to_le_bytes());
    h.update(f.gid.to_le_bytes());
    match &f.kind {
        FileKind::Dir => h.update(b"d"),
        FileKind::File(d) => {
            h.update(b"f");
            h.update((d.len() as u64).to_le_bytes());
            h.update(d);
        }
        FileKind::Symlink(t) => {
            h.update(b"l");
            h.update(t.as_bytes());
        }
    }
}

/// Builds overlay images. Errors of single nodes are in the report; the
/// `Err` case is reserved for failures that stop the whole run.
pub fn build(config: &Config, opts: &BuildOptions, bar: &ProgressBar) -> Result<BuildReport> {
    let layout = Layout::new(config);
    let store = OverlayStore::new(&config.paths);
    let workers = if opts.workers == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        opts.workers
    };
    let mut compressions = opts.compressions.clone();
    compressions.dedup();
    if compressions.is_empty() {
        compressions.push(Compression::Gzip);
    }
    fs::create_dir_all(layout.blobs())
        .with_context(|| format!("creating {}", layout.blobs().display()))?;
    let lock_path = layout.lock();
    fs::create_dir_all(layout.root.join("overlays"))
        .with_context(|| format!("creating {}", layout.root.join("overlays").display()))?;
    let lock = fs::File::create(&lock_path)
        .with_context(|| format!("creating {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;

    let t0 = std::time::Instant::now();
    // The index is decoded while the nodes load.
    let index_path = layout.index();
    let index_reader = std::thread::spawn(move || read_index(&index_path));
    let mut nodes = NodeSet::load(&config.nodes_conf(), &layout.nodes_cache())?;
    tracing::debug!(
        "overlay build: {} nodes loaded ({} parsed) in {:?}",
        nodes.summaries.len(),
        nodes.entries_parsed,
        t0.elapsed()
    );
    let by_id: HashMap<&str, usize> = nodes
        .summaries
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let mut report = BuildReport::default();
    let targets: Vec<usize> = if opts.nodes.is_empty() {
        (0..nodes.summaries.len()).collect()
    } else {
        let mut t = Vec::new();
        let names = crate::nodedb::hostlist::expand_all(&opts.nodes)
            .map_err(|e| anyhow::anyhow!("bad node list: {e}"))?;
        for name in &names {
            match by_id.get(name.as_str()) {
                Some(&i) => t.push(i),
                None => report.errors.push(format!("node {name}: no such node")),
            }
        }
        t
    };
    drop(by_id);

    let now = SystemTime::now();
    let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let sh = site_hash(config)?;

    // Overlays in use by any node, read and parsed once: what `AllNodes`
    // templates reach must not depend on which nodes this run builds.
    let mut names = BTreeSet::new();
    let mut seen_lists: HashSet<usize> = HashSet::new();
    for node in &nodes.summaries {
        for kind in ImageKind::ALL {
            let list = node.overlays(kind);
            if seen_lists.insert(list_id(list)) {
                names.extend(list.iter().cloned());
            }
        }
    }
    let loaded: Vec<(String, Result<Arc<Prepared>, String>)> = names
        .iter()
        .map(|n| {
            let prep = store
                .find(n)
                .ok_or_else(|| format!("overlay {n} does not exist"))
                .and_then(Prepared::load)
                .map(Arc::new);
            (n.clone(), prep)
        })
        .collect();

    // What templates see of the other nodes, and its digest over all nodes.
    let mut reach = Reach::default();
    for (_, prep) in &loaded {
        for t in prep.iter().flat_map(|p| &p.templates) {
            if let Some(r) = &t.all_nodes {
                reach.merge(r);
            }
        }
    }
    let projections = nodes.projections(&reach).map_err(anyhow::Error::msg)?;
    let all_hash: [u8; 32] = {
        let mut h = Sha256::new();
        h.update(reach.key());
        for (s, p) in nodes.summaries.iter().zip(&projections) {
            h.update(s.id.as_bytes());
            h.update([0]);
            h.update(p);
        }
        h.finalize().into()
    };
    tracing::debug!(
        "overlay build: projected ({}) in {:?}",
        if reach.opaque {
            "whole nodes"
        } else {
            "reached fields"
        },
        t0.elapsed()
    );
    let nodes = Arc::new(nodes);
    let site = Site::lazy(config, nodes.loader(), now);
    let env = render_env(config);

    let mut index = index_reader
        .join()
        .expect("the index reader does not panic");
    // Without a usable index (first build, another format, damage) the
    // blobs on disk are unknown: a full build sweeps those it does not use.
    let sweep = index.nodes.is_empty() && opts.nodes.is_empty();

    let shared_before = index.shared.clone();
    let pctx = PrepareCtx {
        site: &site,
        env: &env,
        site_hash: &sh,
        all_hash: &all_hash,
    };
    tracing::debug!("overlay build: index read in {:?}", t0.elapsed());
    let overlays: HashMap<String, Result<OverlayRun, String>> = loaded
        .into_iter()
        .map(|(n, prep)| {
            let run = prep.and_then(|p| prepare(p, &n, &pctx, &mut index.shared));
            (n, run)
        })
        .collect();
    let mut touched = shared_before != index.shared;

    // Plan: which images changed.
    let exts: Vec<&str> = compressions.iter().map(|c| c.extension()).collect();
    // Per overlay list: the digest of its overlays (and of the node list
    // when one of its templates reads `AllNodes`), computed once.
    let mut list_digests: HashMap<usize, [u8; 32]> = HashMap::new();
    for &i in &targets {
        for kind in ImageKind::ALL {
            let list = nodes.summaries[i].overlays(kind);
            list_digests.entry(list_id(list)).or_insert_with(|| {
                let mut h = Sha256::new();
                let mut uses_all = false;
                for name in list.iter() {
                    h.update(name.as_bytes());
                    h.update([0]);
                    match &overlays[name] {
                        Ok(run) => {
                            h.update(run.digest);
                            uses_all |= run.node_uses_all;
                        }
                        Err(e) => h.update(e.as_bytes()),
                    }
                }
                if uses_all {
                    h.update(all_hash);
                }
                h.finalize().into()
            });
        }
    }
    let mut prefix = Sha256::new();
    prefix.update(FORMAT);
    for e in &exts {
        prefix.update(e.as_bytes());
        prefix.update([0]);
    }
    prefix.update(sh);
    // Each image's input hash, and whether its record matches it (files
    // read by templates are checked below).
    // Both are in name order: pair them in one pass.
    let mut records: Vec<Option<&NodeRecord>> = vec![None; nodes.summaries.len()];
    {
        let mut recs = index.nodes.iter().peekable();
        for (slot, node) in records.iter_mut().zip(&nodes.summaries) {
            while recs
                .next_if(|(id, _)| id.as_str() < node.id.as_str())
                .is_some()
            {}
            if let Some((_, r)) = recs.next_if(|(id, _)| **id == node.id) {
                *slot = Some(r);
            }
        }
    }
    let planned: Vec<[(Hash32, bool); 2]> = crate::par::map(&targets, workers, 512, |&i| {
        let node = &nodes.summaries[i];
        let rec = records[i];
        ImageKind::ALL.map(|kind| {
            let mut h = prefix.clone();
            h.update(kind.stem());
            h.update(node.hash);
            h.update(list_digests[&list_id(node.overlays(kind))]);
            let input = Hash32(h.finalize().into());
            let same = !opts.force
                && rec.and_then(|r| r.get(kind)).is_some_and(|r| {
                    r.input == input
                        && exts.iter().all(|e| r.blobs.contains_key(*e))
                        && r.blobs.len() == exts.len()
                });
            (input, same)
        })
    });
    let mut stamp_cache: HashMap<String, FileStamp> = HashMap::new();
    let mut jobs = Vec::new();
    for (&i, images) in targets.iter().zip(planned) {
        let node = &nodes.summaries[i];
        let mut kinds = Vec::new();
        for (kind, (input, same)) in ImageKind::ALL.into_iter().zip(images) {
            let unchanged = same
                && records[i].and_then(|r| r.get(kind)).is_some_and(|r| {
                    r.files_read.iter().all(|f| {
                        if let Some(cur) = stamp_cache.get(f.path.as_str()) {
                            return cur == f;
                        }
                        let cur = FileStamp::of(Path::new(&f.path));
                        let same = cur == *f;
                        stamp_cache.insert(f.path.clone(), cur);
                        same
                    })
                });
            if unchanged {
                report.images_unchanged += 1;
            } else {
                kinds.push((kind, Arc::clone(node.overlays(kind)), input));
            }
        }
        if !kinds.is_empty() {
            jobs.push(Job { node: i, kinds });
        }
    }

    tracing::debug!(
        "overlay build: {} nodes to build, planned in {:?}",
        jobs.len(),
        t0.elapsed()
    );
    bar.set_length(jobs.len() as u64);
    let run = Run {
        site,
        env,
        overlays,
        shared: Mutex::new(HashMap::new()),
        compressions: &compressions,
        blobs: layout.blobs(),
        shared_dir: layout.shared(),
        blobs_written: AtomicUsize::new(0),
        fsync_each: jobs.len() * 2 <= FSYNC_MAX,
    };
    let next = AtomicUsize::new(0);
    let results: Vec<Built> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers.min(jobs.len()).max(1))
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let j = next.fetch_add(1, Ordering::Relaxed);
                        let Some(job) = jobs.get(j) else { break };
                        out.push(build_node(&run, &nodes, job, now_secs));
                        bar.inc(1);
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("overlay worker does not panic"))
            .collect()
    });
    tracing::debug!("overlay build: rendered in {:?}", t0.elapsed());
    report.blobs_written = run.blobs_written.load(Ordering::Relaxed);

    // Blobs are durable before any pointer names them: a few are fsynced
    // where they were written, many with one syncfs.
    if !run.fsync_each && report.blobs_written > 0 {
        let dir = fs::File::open(layout.blobs())
            .with_context(|| format!("opening {}", layout.blobs().display()))?;
        nix::unistd::syncfs(&dir).context("syncing the blob store")?;
    } else if report.blobs_written > 0 {
        crate::fsutil::sync_dir(&layout.blobs())?;
    }
    tracing::debug!("overlay build: blobs synced in {:?}", t0.elapsed());

    let mut old_digests: HashSet<Hash32> = HashSet::new();
    let mut touched_dirs: Vec<PathBuf> = Vec::new();
    for b in results {
        let node = &nodes.summaries[b.node];
        // A failed image keeps its previous version; the other one is updated.
        report.errors.extend(b.errors);
        if b.images.is_empty() {
            continue;
        }
        report.nodes_built += 1;
        touched_dirs.push(layout.node_dir(&node.id));
        let rec = index.nodes.entry(node.id.clone()).or_default();
        for (kind, img) in b.images {
            if let Some(old) = rec.get(kind) {
                old_digests.extend(old.blobs.values().chain(old.bases.values()).copied());
                for ext in old.blobs.keys() {
                    if !img.blobs.contains_key(ext) {
                        let c = Compression::from_name(ext).unwrap_or(Compression::Gzip);
                        let _ = fs::remove_file(layout.pointer(&node.id, kind, c));
                    }
                }
            }
            for c in &compressions {
                let digest = &img.blobs[c.extension()];
                let ptr = layout.pointer(&node.id, kind, *c);
                let target = format!("../../{}/{}", composite::BLOB_DIR, digest.name());
                set_pointer(&ptr, &target)?;
            }
            report.images_built += 1;
            rec.set(kind, img);
            touched = true;
        }
    }

    // A full build forgets nodes that are gone.
    if opts.nodes.is_empty() {
        let live: HashSet<&str> = nodes.summaries.iter().map(|n| n.id.as_str()).collect();
        let gone: Vec<String> = index
            .nodes
            .keys()
            .filter(|k| !live.contains(k.as_str()))
            .cloned()
            .collect();
        for id in gone {
            if let Some(rec) = index.nodes.remove(&id) {
                old_digests.extend(rec.digests().copied());
            }
            let _ = fs::remove_dir_all(layout.node_dir(&id));
            touched = true;
        }
    }

    if touched {
        let root = layout.root.join("overlays");
        if touched_dirs.len() > FSYNC_MAX {
            let dir =
                fs::File::open(&root).with_context(|| format!("opening {}", root.display()))?;
            nix::unistd::syncfs(&dir).context("syncing overlay pointers")?;
        } else {
            for d in &touched_dirs {
                crate::fsutil::sync_dir(d)?;
            }
        }
        tracing::debug!("overlay build: pointers set in {:?}", t0.elapsed());
        let bytes = postcard::to_stdvec(&index).context("encoding the overlay index")?;
        tracing::debug!("overlay build: index encoded in {:?}", t0.elapsed());
        crate::fsutil::write_atomic(&layout.index(), &bytes, 0o600)?;
        // The JSON index of earlier versions.
        let _ = fs::remove_file(layout.root.join("overlays").join(".index.json"));
        tracing::debug!("overlay build: index written in {:?}", t0.elapsed());
        // Shared members no image starts with any more.
        let mut unused: HashMap<Hash32, PathBuf> = HashMap::new();
        // Names that are no digest (left-over temporary files) go too.
        let mut stray: Vec<PathBuf> = Vec::new();
        for e in fs::read_dir(layout.shared())
            .into_iter()
            .flatten()
            .flatten()
        {
            match e.file_name().to_string_lossy().parse::<Hash32>() {
                Ok(d) => {
                    unused.insert(d, e.path());
                }
                Err(_) => stray.push(e.path()),
            }
        }
        for r in index
            .nodes
            .values()
            .flat_map(|r| r.system.iter().chain(r.runtime.iter()))
        {
            if unused.is_empty() {
                break;
            }
            if let Some(k) = &r.shared {
                unused.remove(k);
            }
        }
        for path in unused.into_values().chain(stray) {
            let _ = fs::remove_file(path);
        }
        // Old blobs another node still uses stay.
        if !old_digests.is_empty() {
            for d in index.nodes.values().flat_map(|r| r.digests()) {
                old_digests.remove(d);
                if old_digests.is_empty() {
                    break;
                }
            }
        }
        for d in old_digests {
            if fs::remove_file(layout.blobs().join(d.name())).is_ok() {
                report.blobs_removed += 1;
            }
        }
        if sweep {
            report.blobs_removed += sweep_blobs(&layout.blobs(), &index);
            let _ = fs::remove_dir_all(layout.legacy_blobs());
        }
    }
    // The node cache is written after the index it describes nodes for.
    if touched || nodes.dirty() {
        nodes.save(&layout.nodes_cache())?;
        tracing::debug!("overlay build: node cache written in {:?}", t0.elapsed());
    }
    drop(lock);
    // Freeing the data of 10,000 nodes takes longer than some whole
    // incremental runs; nothing waits for it.
    let Run {
        site,
        overlays,
        shared,
        ..
    } = run;
    let garbage = (site, overlays, shared, nodes, index);
    std::thread::spawn(move || drop(garbage));
    Ok(report)
}

/// The index of earlier runs (empty when missing, damaged or of another
/// format: everything is then rebuilt).
fn read_index(path: &Path) -> Index {
    let index: Index = match fs::read(path) {
        Ok(b) => postcard::from_bytes(&b).unwrap_or_default(),
        Err(_) => Index::default(),
    };
    if index.format == FORMAT {
        index
    } else {
        Index {
            format: FORMAT.to_string(),
            ..Index::default()
        }
    }
}

/// Removes what `blobs` holds beyond the blobs `index` names (those of an
/// index that could not be read, temporaries of a killed build). Returns
/// how many blobs went.
fn sweep_blobs(blobs: &Path, index: &Index) -> usize {
    let used: HashSet<&Hash32> = index.nodes.values().flat_map(|r| r.digests()).collect();
    let mut removed = 0;
    for e in fs::read_dir(blobs).into_iter().flatten().flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let drop = match composite::parse_blob_name(&name) {
            Some(d) => !used.contains(&Hash32(d)),
            None => name.starts_with(".blob."),
        };
        if drop && fs::remove_file(e.path()).is_ok() {
            removed += usize::from(!name.starts_with('.'));
        }
    }
    removed
}

/// Points `ptr` at `target`: a new pointer is created in place (`symlink(2)`
/// is atomic), an existing one replaced by a symlink renamed over it.
fn set_pointer(ptr: &Path, target: &str) -> Result<()> {
    use std::os::unix::fs::symlink;
    let dir = ptr.parent().expect("pointer has a parent");
    match fs::read_link(ptr) {
        Ok(t) if t == Path::new(target) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut made = symlink(target, ptr);
            if made
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
            {
                fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
                made = symlink(target, ptr);
            }
            match made {
                Ok(()) => return Ok(()),
                // Appeared meanwhile: replaced below.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e).with_context(|| format!("creating {}", ptr.display())),
            }
        }
        _ => {}
    }
    let tmp = dir.join(format!(
        ".{}.tmp",
        ptr.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let _ = fs::remove_file(&tmp);
    symlink(target, &tmp).with_context(|| format!("creating {}", tmp.display()))?;
    fs::rename(&tmp, ptr).with_context(|| format!("replacing {}", ptr.display()))
}

fn build_node(run: &Run<'_>, nodes: &NodeSet, job: &Job, now: u64) -> Built {
    let mut built = Built {
        node: job.node,
        images: Vec::new(),
        errors: Vec::new(),
    };
    let id = &nodes.summaries[job.node].id;
    let uses_all = job.kinds.iter().any(|(_, list, _)| {
        list.iter()
            .any(|n| run.overlays[n].as_ref().is_ok_and(|r| r.node_uses_all))
    });
    let data = match nodes
        .node(job.node)
        .and_then(|node| run.site.node(&node, uses_all))
    {
        Ok(d) => d,
        Err(e) => {
            built.errors.push(format!("node {id}: {e}"));
            return built;
        }
    };
    for (kind, list, input) in &job.kinds {
        match build_image(run, &data, list) {
            Ok(stored) => {
                built.images.push((
                    *kind,
                    ImageRecord {
                        input: *input,
                        blobs: stored.blobs,
                        files_read: stored.files_read,
                        built: now,
                        shared: Some(stored.shared),
                        bases: stored.bases,
                    },
                ));
            }
            Err(errors) => built.errors.extend(
                errors
                    .into_iter()
                    .map(|e| format!("node {id}: {} image: {e}", kind.stem())),
            ),
        }
    }
    built
}

/// Builds and stores one image (one blob per compression).
fn build_image(run: &Run<'_>, data: &NodeData, list: &[String]) -> Result<ImageBlobs, Vec<String>> {
    let mut errors = Vec::new();
    let mut ovs = Vec::new();
    for name in list {
        match &run.overlays[name] {
            Ok(r) => ovs.push(r),
            Err(e) => errors.push(e.clone()),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let cell = shared_member(run, list, &ovs);
    let shared = cell.get().expect("initialised by shared_member");
    if !shared.errors.is_empty() {
        return Err(shared.errors.clone());
    }
    let mut tree = BTreeMap::new();
    let mut read = BTreeSet::new();
    for ov in &ovs {
        for (t, s) in ov.prep.templates.iter().zip(&ov.shared) {
            if s.is_some() {
                continue;
            }
            let d = data.data(&ov.prep.dir.name, &t.host_path);
            match ov.prep.render_template(t, &d, &run.env) {
                Ok((files, files_read)) => {
                    merge_into(&mut tree, files);
                    read.extend(files_read);
                }
                Err(e) => errors.push(e),
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let cpio = if tree.is_empty() {
        None
    } else {
        Some(write_cpio(tree.values(), &shared.paths).map_err(|e| vec![e])?)
    };
    let mut blobs = BTreeMap::new();
    let mut bases = BTreeMap::new();
    let fail = |e: anyhow::Error| vec![format!("{e:#}")];
    for (k, c) in run.compressions.iter().enumerate() {
        let mut own = Vec::new();
        if let Some(cpio) = &cpio {
            compress_into(&mut own, *c, cpio).map_err(|e| vec![e])?;
        }
        let member = &shared.members[k];
        let mut h = shared.hashed[k].clone();
        h.update(&own);
        let digest = Hash32(h.finalize().into());
        let base = shared.digests[k];
        // The shared blob was stored with the member (`shared_member`).
        let marker = (member.len() >= composite::MIN_SHARED && !own.is_empty())
            .then(|| composite::marker(*c, &base.name()))
            .flatten();
        if let Some(marker) = marker {
            put_blob(run, &digest.name(), &[&marker, &own]).map_err(fail)?;
            bases.insert(c.extension().to_string(), base);
        } else {
            put_blob(run, &digest.name(), &[member, &own]).map_err(fail)?;
        }
        blobs.insert(c.extension().to_string(), digest);
    }
    Ok(ImageBlobs {
        blobs,
        bases,
        files_read: read.iter().map(|p| FileStamp::of(p)).collect(),
        shared: shared.key,
    })
}

/// The shared member of `list`, built by the first worker that needs it.
fn shared_member(
    run: &Run<'_>,
    list: &[String],
    ovs: &[&OverlayRun],
) -> Arc<OnceLock<SharedMember>> {
    let cell = {
        let mut map = run.shared.lock().expect("shared member map not poisoned");
        map.entry(list.to_vec()).or_default().clone()
    };
    cell.get_or_init(|| {
        let key = {
            let mut h = Sha256::new();
            h.update(FORMAT);
            for (name, ov) in list.iter().zip(ovs) {
                h.update(name.as_bytes());
                h.update([0]);
                h.update(ov.digest);
            }
            for c in run.compressions {
                h.update(c.extension().as_bytes());
                h.update([0]);
            }
            Hash32(h.finalize().into())
        };
        let path = run.shared_dir.join(key.to_string());
        let mut member = read_shared(&path, key, run.compressions.len()).unwrap_or_else(|| {
            let member = build_shared(run, ovs, key);
            if member.errors.is_empty()
                && let Err(e) = write_shared(&path, &member)
            {
                tracing::warn!("keeping the shared member {}: {e:#}", path.display());
            }
            member
        });
        // A large member is a blob of its own, which images name (once per
        // run, not per image).
        for (m, d) in member.members.iter().zip(&member.digests) {
            if m.len() >= composite::MIN_SHARED
                && member.errors.is_empty()
                && let Err(e) = put_blob(run, &d.name(), &[m])
            {
                member.errors.push(format!("{e:#}"));
            }
        }
        member
    });
    cell
}

/// Renders and compresses the shared member of `ovs`.
fn build_shared(run: &Run<'_>, ovs: &[&OverlayRun], key: Hash32) -> SharedMember {
    let mut tree = BTreeMap::new();
    let mut errors = Vec::new();
    for ov in ovs {
        merge_into(&mut tree, ov.prep.statics.iter().cloned());
        for (t, cell) in ov.prep.templates.iter().zip(&ov.shared) {
            let Some(cell) = cell else { continue };
            let result = cell.get_or_init(|| {
                run.site
                    .shared_data(&ov.prep.dir.name, &t.host_path)
                    .and_then(|data| ov.prep.render_template(t, &data, &run.env))
                    .map(|(files, _)| files)
            });
            match result {
                Ok(files) => merge_into(&mut tree, files.iter().cloned()),
                Err(e) => errors.push(e.clone()),
            }
        }
    }
    let paths: HashSet<String> = tree.keys().cloned().collect();
    let mut members = Vec::new();
    match write_cpio(tree.values(), &HashSet::new()) {
        Ok(cpio) => {
            for c in run.compressions {
                let mut out = Vec::new();
                if let Err(e) = compress_into(&mut out, *c, &cpio) {
                    errors.push(e);
                }
                members.push(out);
            }
        }
        Err(e) => errors.push(e),
    }
    let hashed: Vec<Sha256> = members
        .iter()
        .map(|m| {
            let mut h = Sha256::new();
            h.update(m);
            h
        })
        .collect();
    SharedMember {
        key,
        paths,
        members,
        digests: finals(&hashed),
        hashed,
        errors,
    }
}

/// Header of a kept shared member: its paths and member sizes and digests.
#[derive(Serialize, Deserialize)]
struct SharedHeader {
    key: String,
    paths: Vec<String>,
    sizes: Vec<u64>,
    digests: Vec<String>,
}

/// Keeps a shared member for later runs: a JSON header line, then the
/// members. Written to a temporary name and renamed; not fsynced, since a
/// torn file fails its digests and is rebuilt.
fn write_shared(path: &Path, m: &SharedMember) -> Result<()> {
    let mut paths: Vec<String> = m.paths.iter().cloned().collect();
    paths.sort();
    let header = SharedHeader {
        key: m.key.to_string(),
        paths,
        sizes: m.members.iter().map(|b| b.len() as u64).collect(),
        digests: m.digests.iter().map(Hash32::to_string).collect(),
    };
    let dir = path.parent().expect("shared member path has a parent");
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".{}.tmp", m.key));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(BLOB_MODE)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(&serde_json::to_vec(&header)?)?;
    f.write_all(b"\n")?;
    for b in &m.members {
        f.write_all(b)?;
    }
    drop(f);
    fs::rename(&tmp, path).with_context(|| format!("renaming {}", tmp.display()))
}

/// A kept shared member, if it is intact.
fn read_shared(path: &Path, key: Hash32, count: usize) -> Option<SharedMember> {
    let data = fs::read(path).ok()?;
    let nl = data.iter().position(|&b| b == b'\n')?;
    let header: SharedHeader = serde_json::from_slice(&data[..nl]).ok()?;
    if header.key != key.to_string() || header.sizes.len() != count || header.digests.len() != count
    {
        return None;
    }
    let mut at = nl + 1;
    let mut members = Vec::with_capacity(count);
    let mut hashed = Vec::with_capacity(count);
    for (size, digest) in header.sizes.iter().zip(&header.digests) {
        let end = at.checked_add(usize::try_from(*size).ok()?)?;
        let bytes = data.get(at..end)?.to_vec();
        let mut h = Sha256::new();
        h.update(&bytes);
        if hex::encode(h.clone().finalize()) != *digest {
            return None;
        }
        members.push(bytes);
        hashed.push(h);
        at = end;
    }
    (at == data.len()).then(|| SharedMember {
        key,
        paths: header.paths.into_iter().collect(),
        members,
        digests: finals(&hashed),
        hashed,
        errors: Vec::new(),
    })
}

/// The digests the hash states end in.
fn finals(hashed: &[Sha256]) -> Vec<Hash32> {
    hashed
        .iter()
        .map(|h| Hash32(h.clone().finalize().into()))
        .collect()
}

/// A newc archive of `files` (sorted by path), with missing parent
/// directories added unless `existing` (another member) has them.
fn write_cpio<'a>(
    files: impl Iterator<Item = &'a RenderedFile>,
    existing: &HashSet<String>,
) -> Result<Vec<u8>, String> {
    let mut w = Writer::new(Vec::new());
    let mut seen: HashSet<String> = HashSet::new();
    let err = |e: initramfs::newc::NewcError| format!("writing archive: {e}");
    for f in files {
        // Parents first: the kernel does not create them.
        let mut end = 0;
        while let Some(i) = f.path[end..].find('/') {
            let dir = &f.path[..end + i];
            end += i + 1;
            if !existing.contains(dir) && seen.insert(dir.to_string()) {
                w.add_dir(dir, 0o755).map_err(err)?;
            }
        }
        let mut h = match &f.kind {
            FileKind::Dir => {
                if !seen.insert(f.path.clone()) {
                    continue;
                }
                Header::dir(f.path.as_str(), f.mode)
            }
            FileKind::File(d) => Header::file(f.path.as_str(), f.mode, d.len() as u64),
            FileKind::Symlink(t) => Header::symlink(f.path.as_str(), t.len() as u64),
        };
        h.uid = f.uid;
        h.gid = f.gid;
        h.ino = w.next_ino();
        let data: &[u8] = match &f.kind {
            FileKind::Dir => &[],
            FileKind::File(d) => d,
            FileKind::Symlink(t) => t.as_bytes(),
        };
        w.append_bytes(&h, data).map_err(err)?;
    }
    w.finish().map_err(err)
}

/// Appends `data` compressed as one member to `out`.
fn compress_into(out: &mut Vec<u8>, c: Compression, data: &[u8]) -> Result<(), String> {
    match c {
        Compression::Zstd => {
            let z = zstd::bulk::compress(data, ZSTD_LEVEL).map_err(|e| format!("zstd: {e}"))?;
            out.extend_from_slice(&z);
        }
        _ => {
            let mut e = flate2::write::GzEncoder::new(out, flate2::Compression::new(GZIP_LEVEL));
            e.write_all(data).map_err(|e| format!("gzip: {e}"))?;
            e.finish().map_err(|e| format!("gzip: {e}"))?;
        }
    }
    Ok(())
}

/// Stores the concatenation of `parts` as blob `digest` unless present.
fn put_blob(run: &Run<'_>, digest: &str, parts: &[&[u8]]) -> Result<()> {
    let path = run.blobs.join(digest);
    if path.exists() {
        return Ok(());
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(".blob.")
        .tempfile_in(&run.blobs)
        .with_context(|| format!("creating a temp file in {}", run.blobs.display()))?;
    for part in parts {
        tmp.write_all(part)
            .with_context(|| format!("writing blob {digest}"))?;
    }
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(BLOB_MODE))
        .with_context(|| format!("setting the mode of blob {digest}"))?;
    if run.fsync_each {
        tmp.as_file()
            .sync_data()
            .with_context(|| format!("syncing blob {digest}"))?;
    }
    // Otherwise durability comes from one syncfs after all blobs (see `build`).
    tmp.persist(&path)
        .map_err(|e| e.error)
        .with_context(|| format!("storing blob {digest}"))?;
    run.blobs_written.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Checks options before a build.
pub fn check_options(opts: &BuildOptions) -> Result<()> {
    for c in &opts.compressions {
        if !matches!(c, Compression::Gzip | Compression::Zstd) {
            bail!("overlay images are gzip or zstd, not {c:?}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod index_tests {
    use super::*;

    #[test]
    fn index_round_trips_and_stores_digests_as_bytes() {
        let mut index = Index {
            format: FORMAT.to_string(),
            ..Index::default()
        };
        let d = |b: u8| Hash32([b; 32]);
        let rec = ImageRecord {
            input: d(1),
            blobs: BTreeMap::from([("gz".to_string(), d(2)), ("zst".to_string(), d(3))]),
            files_read: vec![FileStamp {
                path: "/etc/x".into(),
                stamp: Some((1, 2, 3, 4)),
            }],
            built: 7,
            shared: Some(d(4)),
            bases: BTreeMap::from([("gz".to_string(), d(5))]),
        };
        index
            .nodes
            .entry("n1".into())
            .or_default()
            .set(ImageKind::System, rec);
        let bytes = postcard::to_stdvec(&index).unwrap();
        let back: Index = postcard::from_bytes(&bytes).unwrap();
        let got = back.nodes["n1"].get(ImageKind::System).unwrap();
        assert_eq!(got.input, d(1));
        assert_eq!(got.blobs["zst"], d(3));
        assert_eq!(got.shared, Some(d(4)));
        assert_eq!(got.bases["gz"], d(5));
        assert_eq!(got.files_read[0].stamp, Some((1, 2, 3, 4)));
        // Five digests of 32 bytes each, not 64 hex characters.
        assert!(bytes.len() < 5 * 64, "{}", bytes.len());
        let hex = d(0xab).to_string();
        assert_eq!(hex, "ab".repeat(32));
        assert_eq!(hex.parse::<Hash32>().unwrap(), d(0xab));
    }
}
