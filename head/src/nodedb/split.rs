//! Parsing a large `nodes.conf` on all cores.
//!
//! YAML parsing is the largest fixed cost of every `wwctl` run on a big
//! site (10,000 nodes ≈ 3 MB). When the document has the plain block layout
//! `wwctl` itself writes, the `nodes:` section is cut between node entries
//! and the pieces are parsed in parallel. The cut is only made when it cannot
//! change the result; anything unusual — tabs, anchors, aliases, tags, merge
//! keys, several documents, quoted or unusual node names, a continuation line
//! at node indentation, a duplicate node — makes [`parse_parallel`] return
//! `None`, and so does any error in a piece: the caller then parses the whole
//! text, which also gives the error its true line and column.

use std::collections::{BTreeMap, HashSet};

use super::model::NodesConf;

/// Below this size one parser is as fast as starting threads.
pub const PARALLEL_MIN_BYTES: usize = 128 * 1024;

/// Parses `text` in `workers` pieces; `None` when the layout is not the
/// plain one described in the module documentation or a piece fails.
pub fn parse_parallel(text: &str, workers: usize) -> Option<NodesConf> {
    let layout = Layout::of(text)?;
    if layout.entries.len() < 2 || workers < 2 {
        return None;
    }
    let per = layout.entries.len().div_ceil(workers);
    let pieces: Vec<String> = layout
        .entries
        .chunks(per)
        .map(|chunk| {
            let mut piece = String::from("nodes:\n");
            for &(start, end) in chunk {
                piece.push_str(&text[start..end]);
            }
            piece
        })
        .collect();
    let rest = layout.rest(text);
    let (rest, nodes) = std::thread::scope(|s| {
        let handles: Vec<_> = pieces
            .iter()
            .map(|p| s.spawn(move || serde_norway::from_str::<NodesConf>(p).ok()))
            .collect();
        let rest = if rest.trim().is_empty() {
            Some(NodesConf::default())
        } else {
            serde_norway::from_str::<NodesConf>(&rest).ok()
        };
        let nodes: Vec<Option<NodesConf>> = handles
            .into_iter()
            .map(|h| h.join().ok().flatten())
            .collect();
        (rest, nodes)
    });
    let mut out = rest?;
    if out.nodes.is_some() {
        return None;
    }
    let mut all = BTreeMap::new();
    for piece in nodes {
        let piece = piece?;
        if !piece.extra.is_empty() || piece.nodeprofiles.is_some() {
            return None;
        }
        all.extend(piece.nodes?);
    }
    if all.len() != layout.entries.len() {
        return None;
    }
    out.nodes = Some(all);
    Some(out)
}

/// The plain-layout pieces of a `nodes.conf` text: everything outside the
/// `nodes:` section, and each node entry with its name and its text.
pub struct Entries<'a> {
    pub rest: String,
    pub nodes: Vec<(&'a str, &'a str)>,
}

/// Cuts `text` into its node entries when its layout is the plain one
/// (see the module documentation); `None` otherwise. Each entry, parsed on
/// its own under a `nodes:` line, gives that node exactly as the whole
/// document does, provided it parses.
pub fn entries(text: &str) -> Option<Entries<'_>> {
    let layout = Layout::of(text)?;
    let nodes = layout
        .entries
        .iter()
        .map(|&(start, end)| {
            let entry = &text[start..end];
            let first = entry.lines().next().unwrap_or("").trim_start_matches(' ');
            node_key(first).map(|name| (name, entry))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Entries {
        rest: layout.rest(text),
        nodes,
    })
}

/// Parses one entry of [`entries`] (`None` if it does not parse alone).
pub fn parse_entry(entry: &str) -> Option<NodesConf> {
    let mut piece = String::with_capacity(entry.len() + 8);
    piece.push_str("nodes:\n");
    piece.push_str(entry);
    let conf: NodesConf = serde_norway::from_str(&piece).ok()?;
    (conf.extra.is_empty() && conf.nodeprofiles.is_none() && conf.nodes.as_ref()?.len() == 1)
        .then_some(conf)
}

/// Parses the text outside the `nodes:` section (`None` if it does not
/// parse or holds nodes).
pub fn parse_rest(rest: &str) -> Option<NodesConf> {
    if rest.trim().is_empty() {
        return Some(NodesConf::default());
    }
    let conf: NodesConf = serde_norway::from_str(rest).ok()?;
    conf.nodes.is_none().then_some(conf)
}

/// Where the `nodes:` section and its entries are.
struct Layout {
    /// Byte range of the `nodes:` line through the end of the section.
    section: (usize, usize),
    /// Byte range of each node entry (its key line through its last line).
    entries: Vec<(usize, usize)>,
}

impl Layout {
    fn of(text: &str) -> Option<Layout> {
        let b = text.as_bytes();
        if b.contains(&b'\t')
            || b.contains(&b'\r')
            || b.contains(&b'&')
            || b.contains(&b'*')
            || b.contains(&b'!')
            || text.contains("<<")
        {
            return None;
        }
        let mut section: Option<(usize, usize)> = None;
        let mut in_section = false;
        let mut entries: Vec<(usize, usize)> = Vec::new();
        let mut names = HashSet::new();
        let mut pos = 0;
        for line in text.split_inclusive('\n') {
            let start = pos;
            pos += line.len();
            let body = line.trim_end_matches('\n');
            let content = body.trim_start_matches(' ');
            if body.starts_with("---") || body.starts_with("...") || body.starts_with('%') {
                return None;
            }
            if content.is_empty() || content.starts_with('#') {
                // Blank and comment lines belong to whatever is open.
                if let Some(last) = entries.last_mut().filter(|_| in_section) {
                    last.1 = pos;
                }
                continue;
            }
            let indent = body.len() - content.len();
            if indent == 0 {
                if in_section {
                    in_section = false;
                    if let Some(s) = section.as_mut() {
                        s.1 = start;
                    }
                }
                if top_key(content) == Some("nodes") {
                    if section.is_some() || content.trim_end() != "nodes:" {
                        return None;
                    }
                    section = Some((start, text.len()));
                    in_section = true;
                }
                continue;
            }
            if !in_section {
                continue;
            }
            if indent == 2 {
                let name = node_key(content)?;
                if !names.insert(name) {
                    return None;
                }
                entries.push((start, pos));
            } else if indent > 2 {
                entries.last_mut()?.1 = pos;
            } else {
                return None;
            }
        }
        let section = section?;
        // A section ending in the middle of the text starts right after the
        // last entry (trailing blank/comment lines went to that entry).
        let section = match entries.last() {
            Some(&(_, end)) if end <= section.1 => (section.0, section.1.max(end)),
            _ => return None,
        };
        Some(Layout { section, entries })
    }

    /// Everything outside the `nodes:` section, lines in their order.
    fn rest(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len() - (self.section.1 - self.section.0));
        out.push_str(&text[..self.section.0]);
        let tail = &text[self.section.1..];
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(tail);
        out
    }
}

/// The key of a top-level `key:` line, if it is one.
fn top_key(content: &str) -> Option<&str> {
    let (key, _) = content.split_once(':')?;
    Some(key.trim_end())
}

/// The name of a node entry line `  name:` (plain names only).
fn node_key(content: &str) -> Option<&str> {
    let (key, rest) = content.split_once(':')?;
    let plain = !key.is_empty()
        && key
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    (plain && (rest.is_empty() || rest.starts_with(' '))).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(text: &str) -> NodesConf {
        serde_norway::from_str(text).expect("test document parses")
    }

    fn generated(n: usize) -> String {
        let mut s = String::from(
            "WW_INTERNAL: 45\nnodeprofiles:\n  default:\n    comment: generated\n    kernel:\n      args: [quiet]\nnodes:\n",
        );
        for i in 0..n {
            s.push_str(&format!(
                "  n{i:04}:\n    # a comment\n    profiles: [default]\n    comment: |\n      two\n      lines\n\n    network devices:\n      default:\n        hwaddr: \"02:00:00:00:{:02x}:{:02x}\"\n        ipaddr: 10.0.{}.{}\n    tags: {{rack: r{}}}\n",
                i / 256,
                i % 256,
                i / 250,
                i % 250 + 1,
                i / 40
            ));
        }
        s.push_str("# trailing comment\n");
        s
    }

    #[test]
    fn pieces_give_the_same_document_as_one_parse() {
        for n in [2, 3, 17, 400] {
            let text = generated(n);
            for workers in [2, 3, 8] {
                let got = parse_parallel(&text, workers).expect("plain layout is split");
                assert_eq!(got, full(&text), "n={n} workers={workers}");
            }
        }
        // Profiles after the nodes, and an unknown top-level key.
        let text = "nodes:\n  a:\n    comment: x\n  b: {comment: y}\nnodeprofiles:\n  p:\n    comment: z\nextra: 1\n";
        assert_eq!(parse_parallel(text, 2).expect("split"), full(text));
    }

    #[test]
    fn fixtures_split_exactly_or_not_at_all() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nodes");
        let mut split = 0;
        for entry in std::fs::read_dir(&dir).expect("fixtures exist") {
            let path = entry.expect("readable dir").path();
            let text = std::fs::read_to_string(&path).expect("readable fixture");
            let Ok(whole) = serde_norway::from_str::<NodesConf>(&text) else {
                assert!(parse_parallel(&text, 2).is_none(), "{}", path.display());
                continue;
            };
            if let Some(got) = parse_parallel(&text, 2) {
                assert_eq!(got, whole, "{}", path.display());
                split += 1;
            }
        }
        assert!(split > 0, "no fixture has the plain layout");
    }

    #[test]
    fn anything_unusual_is_left_to_the_whole_parse() {
        let cases = [
            // anchors and aliases, tags, merge keys
            "nodes:\n  a: &x\n    comment: c\n  b: *x\n",
            "nodes:\n  a: !!map {}\n  b: {}\n",
            "nodes:\n  a:\n    <<: {comment: c}\n  b: {}\n",
            // quoted names, duplicates, a sequence, a flow mapping
            "nodes:\n  \"a\":\n    comment: c\n  b: {}\n",
            "nodes:\n  a: {}\n  a: {}\n",
            "nodes:\n  - a\n  - b\n",
            "nodes: {a: {}, b: {}}\n",
            // a quoted scalar continued at node indentation
            "nodes:\n  a:\n    comment: \"one\n  b: two\"\n  c: {}\n",
            // odd indentation, tabs, several documents
            "nodes:\n   a: {}\n  b: {}\n",
            "nodes:\n  a: {}\n\tb: {}\n",
            "---\nnodes:\n  a: {}\n  b: {}\n",
            // nodes twice, broken piece
            "nodes:\n  a: {}\n  b: {}\nnodes:\n  c: {}\n",
            "nodes:\n  a:\n    comment: [\n  b: {}\n",
        ];
        for text in cases {
            assert!(parse_parallel(text, 2).is_none(), "{text:?}");
        }
    }
}
