//! The nodes of one overlay build, loaded no further than the build needs.
//!
//! An incremental build needs, for every node, only its id, a digest of its
//! merged settings, its overlay lists and the digest of what `AllNodes`
//! templates see of it (its projection, see `allnodes`); the node's full
//! data only when one of its images is rebuilt. Parsing 10,000 nodes of
//! YAML costs more than the rest of such a build, so these summaries are
//! kept between runs in `overlays/.nodes.cache`, keyed by the digest of each
//! node's own text in `nodes.conf`.
//!
//! The cache is used only when `nodes.conf` has the plain layout
//! `nodedb::split` can cut into node entries (one entry then gives its node
//! exactly as the whole file does) and the text outside the entries
//! (profiles, other keys) is unchanged; entries whose text changed are parsed
//! alone. Any other case parses the whole file as every `wwctl` command does
//! (with its errors, line and column) and writes no cache. The cache is a
//! small binary file ending in the SHA-256 of its contents: a damaged or
//! foreign file is ignored, never trusted.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::allnodes::Reach;
use super::build::ImageKind;
use super::data::node_value;
use crate::nodedb::merge::merge;
use crate::nodedb::{MergedNode, NodeDb, NodesConf, split};

/// First line of the cache file.
const MAGIC: &str = "ironwulf-nodes-cache-2\n";

/// Above this share of changed entries the whole text is parsed in pieces
/// (cheaper than one parser per entry).
const PER_ENTRY_MAX_SHARE: usize = 8;

/// The identity of a shared overlay list (lists decoded from the cache are
/// shared between nodes, so this tells most equal lists apart without
/// comparing names).
pub fn list_id(l: &Arc<[String]>) -> usize {
    Arc::as_ptr(l).cast::<u8>() as usize
}

/// What a build needs of one node without its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub id: String,
    /// Digest of the id and the merged settings.
    pub hash: [u8; 32],
    pub system: Arc<[String]>,
    pub runtime: Arc<[String]>,
    /// Digest of the node's entry text (cached runs only).
    entry: Option<[u8; 32]>,
    /// Projection digest and the reach key it was computed under.
    proj: Option<([u8; 32], [u8; 32])>,
}

impl Summary {
    fn of(node: &MergedNode, entry: Option<[u8; 32]>) -> Summary {
        let mut h = Sha256::new();
        h.update(node.id.as_bytes());
        h.update([0]);
        h.update(serde_json::to_vec(&node.conf).unwrap_or_default());
        Summary {
            id: node.id.clone(),
            hash: h.finalize().into(),
            system: ImageKind::System.overlays(node).into(),
            runtime: ImageKind::Runtime.overlays(node).into(),
            entry,
            proj: None,
        }
    }

    /// The overlay list of one image.
    pub fn overlays(&self, kind: ImageKind) -> &Arc<[String]> {
        match kind {
            ImageKind::System => &self.system,
            ImageKind::Runtime => &self.runtime,
        }
    }
}

/// The nodes of a run.
pub struct NodeSet {
    /// In name order (the order of `AllNodes`).
    pub summaries: Vec<Summary>,
    /// Nodes whose data is at hand (parsed this run), by index.
    parsed: HashMap<usize, MergedNode>,
    /// The whole list, when it was loaded.
    all: OnceLock<Result<Arc<Vec<MergedNode>>, String>>,
    text: Arc<String>,
    path: PathBuf,
    /// Key of the text outside the entries; `None`: not cacheable.
    rest_key: Option<[u8; 32]>,
    /// How the nodes were loaded (for the debug log and tests).
    pub entries_parsed: usize,
    /// Something was computed that the cache file does not hold yet.
    dirty: bool,
}

impl NodeSet {
    /// Loads `nodes_conf`, reusing `cache` where it is valid.
    pub fn load(nodes_conf: &Path, cache: &Path) -> Result<NodeSet> {
        let text = match fs::read_to_string(nodes_conf) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", nodes_conf.display())),
        };
        let text = Arc::new(text);
        if let Some(set) = Self::load_entries(&text, nodes_conf, cache) {
            return Ok(set);
        }
        let db = NodeDb::load(nodes_conf)
            .with_context(|| format!("loading {}", nodes_conf.display()))?;
        let nodes = db.merged_all();
        let summaries = crate::par::map(&nodes, 0, 64, |n| Summary::of(n, None));
        let all = OnceLock::new();
        let _ = all.set(Ok(Arc::new(nodes)));
        Ok(NodeSet {
            entries_parsed: summaries.len(),
            summaries,
            parsed: HashMap::new(),
            all,
            text,
            path: nodes_conf.to_owned(),
            rest_key: None,
            dirty: false,
        })
    }

    /// The cached path: `None` when the layout or a piece does not allow it.
    fn load_entries(text: &Arc<String>, path: &Path, cache: &Path) -> Option<NodeSet> {
        let t0 = std::time::Instant::now();
        let entries = split::entries(text)?;
        tracing::debug!(
            "nodes: {} entries cut in {:?}",
            entries.nodes.len(),
            t0.elapsed()
        );
        let rest_key: [u8; 32] = {
            let mut h = Sha256::new();
            h.update(MAGIC);
            h.update(env!("CARGO_PKG_VERSION"));
            h.update(entries.rest.as_bytes());
            h.finalize().into()
        };
        let rest = split::parse_rest(&entries.rest)?;
        let profiles = rest.nodeprofiles.clone().unwrap_or_default();
        let digests: Vec<[u8; 32]> = crate::par::map(&entries.nodes, 0, 512, |(_, e)| {
            Sha256::digest(e.as_bytes()).into()
        });
        tracing::debug!("nodes: entries hashed in {:?}", t0.elapsed());
        let mut cached = read_cache(cache, &rest_key);
        tracing::debug!("nodes: cache read in {:?}", t0.elapsed());
        // Usually the cache lists the nodes in the file's order: match by
        // position, by name only where that fails.
        let mut by_name: Option<HashMap<String, usize>> = None;
        let mut summaries: Vec<Option<Summary>> = vec![None; entries.nodes.len()];
        let mut missing = Vec::new();
        for (i, ((id, _), d)) in entries.nodes.iter().zip(&digests).enumerate() {
            let at = if cached
                .get(i)
                .is_some_and(|c| c.as_ref().is_some_and(|c| c.id == *id))
            {
                Some(i)
            } else {
                by_name
                    .get_or_insert_with(|| {
                        cached
                            .iter()
                            .enumerate()
                            .filter_map(|(k, c)| Some((c.as_ref()?.id.clone(), k)))
                            .collect()
                    })
                    .get(*id)
                    .copied()
            };
            match at.and_then(|k| cached[k].take()) {
                Some(c) if c.entry == Some(*d) => summaries[i] = Some(c),
                _ => missing.push(i),
            }
        }
        tracing::debug!("nodes: cache matched in {:?}", t0.elapsed());
        let mut parsed: HashMap<usize, MergedNode> = HashMap::new();
        let all = OnceLock::new();
        if missing.len() * PER_ENTRY_MAX_SHARE > entries.nodes.len() {
            // Mostly new: parse the whole text in pieces (the same result).
            let workers = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
            let conf = split::parse_parallel(text, workers)
                .or_else(|| (entries.nodes.len() < 2).then(|| single_piece(&entries, &rest))?)?;
            let nodes = crate::nodedb::merge::merge_all(&conf);
            let by_id: HashMap<&str, usize> = nodes
                .iter()
                .enumerate()
                .map(|(i, n)| (n.id.as_str(), i))
                .collect();
            let fresh = crate::par::map(&missing, 0, 64, |&i| {
                let n = by_id.get(entries.nodes[i].0).map(|&k| &nodes[k]);
                n.map(|n| Summary::of(n, Some(digests[i])))
            });
            for (&i, s) in missing.iter().zip(fresh) {
                summaries[i] = Some(s?);
            }
            let _ = all.set(Ok(Arc::new(nodes)));
        } else {
            let fresh = crate::par::map(&missing, 0, 16, |&i| {
                let (id, entry) = entries.nodes[i];
                let conf = split::parse_entry(entry)?;
                let raw = conf.nodes.as_ref()?.get(id)?;
                let node = merge(&profiles, id, raw);
                let s = Summary::of(&node, Some(digests[i]));
                Some((node, s))
            });
            for (&i, r) in missing.iter().zip(fresh) {
                let (node, s) = r?;
                summaries[i] = Some(s);
                parsed.insert(i, node);
            }
        }
        let summaries: Vec<Summary> = summaries.into_iter().collect::<Option<_>>()?;
        // `nodes.conf` order is name order (the file is a map).
        let mut order: Vec<usize> = (0..summaries.len()).collect();
        if !summaries.windows(2).all(|w| w[0].id < w[1].id) {
            order.sort_by(|&a, &b| summaries[a].id.cmp(&summaries[b].id));
        }
        let mut new_index = vec![0; order.len()];
        for (new, &old) in order.iter().enumerate() {
            new_index[old] = new;
        }
        let mut sorted: Vec<Option<Summary>> = summaries.into_iter().map(Some).collect();
        let summaries: Vec<Summary> = order
            .iter()
            .map(|&i| sorted[i].take())
            .collect::<Option<_>>()?;
        let parsed = parsed.into_iter().map(|(i, n)| (new_index[i], n)).collect();
        Some(NodeSet {
            entries_parsed: missing.len(),
            summaries,
            parsed,
            all,
            text: Arc::clone(text),
            path: path.to_owned(),
            rest_key: Some(rest_key),
            dirty: !missing.is_empty(),
        })
    }

    /// Every node's data (parsed now unless it was already).
    pub fn all(&self) -> Result<Arc<Vec<MergedNode>>, String> {
        self.all
            .get_or_init(|| {
                let conf = crate::nodedb::store::parse(&self.text, &self.path)
                    .map_err(|e| e.to_string())?;
                let nodes = crate::nodedb::merge::merge_all(&conf);
                if nodes.len() != self.summaries.len()
                    || nodes.iter().zip(&self.summaries).any(|(n, s)| n.id != s.id)
                {
                    return Err(format!(
                        "{}: changed while it was read",
                        self.path.display()
                    ));
                }
                Ok(Arc::new(nodes))
            })
            .clone()
    }

    /// A loader of every node for `Site::lazy`.
    pub fn loader(self: &Arc<Self>) -> Box<super::data::NodesLoader> {
        let me = Arc::clone(self);
        Box::new(move || me.all())
    }

    /// Node `i`'s data.
    pub fn node(&self, i: usize) -> Result<MergedNode, String> {
        if let Some(n) = self.parsed.get(&i) {
            return Ok(n.clone());
        }
        Ok(self.all()?[i].clone())
    }

    /// Each node's projection under `reach` (its whole-settings digest when
    /// the reach is opaque), computing the ones not cached.
    pub fn projections(&mut self, reach: &Reach) -> Result<Vec<[u8; 32]>, String> {
        if reach.opaque {
            return Ok(self.summaries.iter().map(|s| s.hash).collect());
        }
        let key = reach.key();
        let missing: Vec<usize> = (0..self.summaries.len())
            .filter(|&i| self.summaries[i].proj.is_none_or(|(_, k)| k != key))
            .collect();
        if !missing.is_empty() {
            let all_at_hand = missing.iter().all(|i| self.parsed.contains_key(i));
            let nodes = if all_at_hand { None } else { Some(self.all()?) };
            let parsed = &self.parsed;
            let summaries = &self.summaries;
            let fresh = crate::par::map(&missing, 0, 64, |&i| {
                let node = match &nodes {
                    Some(all) => &all[i],
                    None => &parsed[&i],
                };
                reach
                    .project(&summaries[i].id, &node_value(node))
                    .expect("a reach that is not opaque projects")
            });
            for (&i, p) in missing.iter().zip(fresh) {
                self.summaries[i].proj = Some((p, key));
            }
            self.dirty = true;
        }
        Ok(self
            .summaries
            .iter()
            .map(|s| s.proj.map_or(s.hash, |(p, _)| p))
            .collect())
    }

    /// True when the cache file should be written (see [`NodeSet::save`]).
    pub fn dirty(&self) -> bool {
        self.dirty || self.rest_key.is_none()
    }

    /// Writes the cache for the next run (nothing when this run could not
    /// use one). Not fsynced: a torn file fails its digest and is ignored.
    pub fn save(&self, cache: &Path) -> Result<()> {
        let Some(rest_key) = self.rest_key else {
            let _ = fs::remove_file(cache);
            return Ok(());
        };
        let Some(body) = encode_cache(&rest_key, &self.summaries) else {
            let _ = fs::remove_file(cache);
            return Ok(());
        };
        let dir = cache.parent().expect("cache file has a parent");
        let tmp = dir.join(".nodes.cache.tmp");
        let mut f =
            fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(&body)
            .with_context(|| format!("writing {}", tmp.display()))?;
        drop(f);
        fs::rename(&tmp, cache).with_context(|| format!("replacing {}", cache.display()))
    }
}

/// The cache file: `MAGIC`, the rest key, the overlay lists, the nodes, and
/// the SHA-256 of all that. Integers are little-endian; strings carry a
/// 16-bit length. `None` when a summary has no entry digest.
fn encode_cache(rest_key: &[u8; 32], summaries: &[Summary]) -> Option<Vec<u8>> {
    fn put_str(out: &mut Vec<u8>, s: &str) -> Option<()> {
        out.extend_from_slice(&u16::try_from(s.len()).ok()?.to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        Some(())
    }
    let mut out = Vec::with_capacity(64 + summaries.len() * 180);
    out.extend_from_slice(MAGIC.as_bytes());
    out.extend_from_slice(rest_key);
    // Lists are shared between nodes (one allocation per distinct list
    // when they came from the cache): look them up by address first.
    let mut lists: HashMap<&[String], u32> = HashMap::new();
    let mut by_ptr: HashMap<usize, u32> = HashMap::new();
    let mut order: Vec<&[String]> = Vec::new();
    let mut node_lists = Vec::with_capacity(summaries.len());
    for s in summaries {
        let sys = list_index(&s.system, &mut lists, &mut by_ptr, &mut order)?;
        let rt = list_index(&s.runtime, &mut lists, &mut by_ptr, &mut order)?;
        node_lists.push((sys, rt));
    }
    out.extend_from_slice(&u32::try_from(order.len()).ok()?.to_le_bytes());
    for l in &order {
        out.extend_from_slice(&u32::try_from(l.len()).ok()?.to_le_bytes());
        for name in l.iter() {
            put_str(&mut out, name)?;
        }
    }
    out.extend_from_slice(&u32::try_from(summaries.len()).ok()?.to_le_bytes());
    for (s, (sys, rt)) in summaries.iter().zip(node_lists) {
        put_str(&mut out, &s.id)?;
        out.extend_from_slice(&s.entry?);
        out.extend_from_slice(&s.hash);
        out.extend_from_slice(&sys.to_le_bytes());
        out.extend_from_slice(&rt.to_le_bytes());
        match s.proj {
            Some((p, k)) => {
                out.push(1);
                out.extend_from_slice(&p);
                out.extend_from_slice(&k);
            }
            None => out.push(0),
        }
    }
    let digest: [u8; 32] = Sha256::digest(&out).into();
    out.extend_from_slice(&digest);
    Some(out)
}

/// The number of list `l` in the cache file, assigning the next one to a
/// list not seen yet.
fn list_index<'a>(
    l: &'a Arc<[String]>,
    lists: &mut HashMap<&'a [String], u32>,
    by_ptr: &mut HashMap<usize, u32>,
    order: &mut Vec<&'a [String]>,
) -> Option<u32> {
    let ptr = list_id(l);
    if let Some(&k) = by_ptr.get(&ptr) {
        return Some(k);
    }
    let k = match lists.get(&l[..]) {
        Some(&k) => k,
        None => {
            let k = u32::try_from(order.len()).ok()?;
            lists.insert(&l[..], k);
            order.push(&l[..]);
            k
        }
    };
    by_ptr.insert(ptr, k);
    Some(k)
}

/// A reader over the cache bytes.
struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let b = self.data.get(self.at..end)?;
        self.at = end;
        Some(b)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn hash(&mut self) -> Option<[u8; 32]> {
        self.take(32)?.try_into().ok()
    }

    fn str(&mut self) -> Option<&'a str> {
        let n = u16::from_le_bytes(self.take(2)?.try_into().ok()?);
        std::str::from_utf8(self.take(usize::from(n))?).ok()
    }
}

/// A text with a single node entry: `parse_parallel` wants two; one entry
/// plus the rest is the same document.
fn single_piece(entries: &split::Entries<'_>, rest: &NodesConf) -> Option<NodesConf> {
    let mut conf = rest.clone();
    let mut nodes = std::collections::BTreeMap::new();
    for (id, entry) in &entries.nodes {
        let piece = split::parse_entry(entry)?;
        nodes.insert(id.to_string(), piece.nodes?.remove(*id)?);
    }
    conf.nodes = Some(nodes);
    Some(conf)
}

/// The cached nodes, if the file is intact and made for `rest_key`.
fn read_cache(path: &Path, rest_key: &[u8; 32]) -> Vec<Option<Summary>> {
    fs::read(path)
        .ok()
        .and_then(|data| decode_cache(&data, rest_key))
        .unwrap_or_default()
}

fn decode_cache(data: &[u8], rest_key: &[u8; 32]) -> Option<Vec<Option<Summary>>> {
    let body = data.get(..data.len().checked_sub(32)?)?;
    if Sha256::digest(body)[..] != data[body.len()..] {
        return None;
    }
    let mut c = Cursor { data: body, at: 0 };
    if c.take(MAGIC.len())? != MAGIC.as_bytes() || c.hash()? != *rest_key {
        return None;
    }
    let nlists = c.u32()?;
    let mut lists: Vec<Arc<[String]>> = Vec::new();
    for _ in 0..nlists {
        let n = c.u32()?;
        let names = (0..n)
            .map(|_| c.str().map(str::to_string))
            .collect::<Option<Vec<String>>>()?;
        lists.push(names.into());
    }
    let count = c.u32()? as usize;
    let mut out = Vec::with_capacity(count.min(1 << 20));
    for _ in 0..count {
        let id = c.str()?.to_string();
        let entry = c.hash()?;
        let hash = c.hash()?;
        let system = Arc::clone(lists.get(c.u32()? as usize)?);
        let runtime = Arc::clone(lists.get(c.u32()? as usize)?);
        let proj = match c.take(1)? {
            [0] => None,
            [1] => Some((c.hash()?, c.hash()?)),
            _ => return None,
        };
        out.push(Some(Summary {
            id,
            hash,
            system,
            runtime,
            entry: Some(entry),
            proj,
        }));
    }
    (c.at == body.len()).then_some(out)
}
