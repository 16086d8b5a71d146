//! Which template data a `.ww` source can reach, found by scanning its actions.
//!
//! The engine does not expose its parse tree, so this is a small lexer over
//! `{{ … }}` actions (strings and comments skipped) that collects the root
//! fields a template names: `.Field` on the dot and `$.Field` on the root.
//! `$var.Field` and `(expr).Field` are ignored because the variable or the
//! expression is itself built from fields the scan sees. It is conservative:
//! a bare `.` or `$` (the whole data handed on) or any field that is not
//! site-wide makes the template node-dependent (`IgnitionJson` counts as
//! reading `Disks` and `FileSystems`). Inside `range`/`with`/`define` bodies the dot is derived
//! from a pipeline the scan has already seen, so `.X` there is not a root
//! field (the `else` branch of `range`/`with` sees the outer dot again).
//! Node-independent templates are rendered once per build run and shared.

use std::collections::BTreeSet;

/// Root fields that are the same for every node of one build run.
pub const SITE_FIELDS: &[&str] = &[
    "BuildHost",
    "BuildTime",
    "BuildTimeUnix",
    "BuildSource",
    "Ipaddr",
    "Ipaddr6",
    "IpCIDR",
    "IpCIDR6",
    "Netmask",
    "Network",
    "NetworkCIDR",
    "Network6",
    "NetworkCIDR6",
    "PrefixLen6",
    "Ipv6",
    "Dhcp",
    "Nfs",
    "Ssh",
    "Warewulf",
    "Tftp",
    "Paths",
    "Overlay",
    "AllNodes",
];

/// What a template references.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Refs {
    /// Root fields named (`.X`, `$.X`).
    pub fields: BTreeSet<String>,
    /// The whole data is used (bare `.`/`$`).
    pub whole: bool,
}

impl Refs {
    /// True when the output cannot differ between nodes of one run.
    pub fn node_independent(&self) -> bool {
        !self.whole
            && self
                .fields
                .iter()
                .all(|f| SITE_FIELDS.contains(&f.as_str()))
    }

    /// True when the output may depend on the list of all nodes.
    pub fn uses_all_nodes(&self) -> bool {
        self.whole || self.fields.contains("AllNodes")
    }

    /// True when the output carries the build time (not an input of the hash).
    pub fn uses_build_time(&self) -> bool {
        self.whole || self.fields.contains("BuildTime") || self.fields.contains("BuildTimeUnix")
    }
}

/// Scans a template source.
pub fn scan(src: &str) -> Refs {
    let mut refs = Refs::default();
    let b = src.as_bytes();
    // Per open block: (dot of the enclosing context is rebound, dot here is rebound).
    let mut frames: Vec<(bool, bool)> = Vec::new();
    let mut i = 0;
    while let Some(off) = find(b, i, b"{{") {
        i = off + 2;
        let mut k = i;
        if b.get(k) == Some(&b'-') {
            k += 1;
        }
        while k < b.len() && b[k].is_ascii_whitespace() {
            k += 1;
        }
        let word = word_at(b, k);
        let cur = frames.last().is_some_and(|f| f.1);
        match word {
            "range" | "with" | "block" | "define" => {
                // The pipeline sees the current dot; the body a derived one.
                i = scan_action(b, i, cur, &mut refs);
                frames.push((cur, true));
            }
            "if" => {
                i = scan_action(b, i, cur, &mut refs);
                frames.push((cur, cur));
            }
            "else" => {
                let outer = frames.last().is_some_and(|f| f.0);
                let next = word_at(b, skip_ws(b, k + 4));
                i = scan_action(b, i, outer, &mut refs);
                if let Some(f) = frames.last_mut() {
                    f.1 = if next == "with" { true } else { outer };
                }
            }
            "end" => {
                i = scan_action(b, i, cur, &mut refs);
                frames.pop();
            }
            _ => i = scan_action(b, i, cur, &mut refs),
        }
    }
    refs
}

/// Position of `pat` in `b` at or after `from`.
pub(super) fn find(b: &[u8], from: usize, pat: &[u8]) -> Option<usize> {
    if from >= b.len() {
        return None;
    }
    b[from..]
        .windows(pat.len())
        .position(|w| w == pat)
        .map(|p| from + p)
}

/// The position after the quoted literal opening at `open` (`"…"` or
/// `'…'`, backslash escapes skipped); `None` when it is not closed.
pub(super) fn skip_quoted(b: &[u8], open: usize) -> Option<usize> {
    let quote = b[open];
    let mut i = open + 1;
    while i < b.len() && b[i] != quote {
        if b[i] == b'\\' {
            i += 1;
        }
        i += 1;
    }
    (i < b.len()).then_some(i + 1)
}

fn skip_ws(b: &[u8], mut k: usize) -> usize {
    while k < b.len() && b[k].is_ascii_whitespace() {
        k += 1;
    }
    k
}

fn word_at(b: &[u8], k: usize) -> &str {
    let mut e = k;
    while e < b.len() && b[e].is_ascii_alphabetic() {
        e += 1;
    }
    std::str::from_utf8(&b[k.min(e)..e]).unwrap_or("")
}

/// Scans one action from `i` (after `{{`) to its `}}`; `rebound`: the dot is
/// not the root here (inside `range`/`with`), so `.X` and `.` are derived.
fn scan_action(b: &[u8], mut i: usize, rebound: bool, refs: &mut Refs) -> usize {
    while i < b.len() {
        let c = b[i];
        if c == b'}' && b.get(i + 1) == Some(&b'}') {
            return i + 2;
        }
        match c {
            b'"' | b'\'' => i = skip_quoted(b, i).unwrap_or(b.len()),
            b'`' => i = find(b, i + 1, b"`").map_or(b.len(), |p| p + 1),
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = find(b, i + 2, b"*/").map_or(b.len(), |p| p + 2);
            }
            b'.' => {
                let prev = if i == 0 { b' ' } else { b[i - 1] };
                let start = i + 1;
                let mut end = start;
                while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
                    end += 1;
                }
                let ident = std::str::from_utf8(&b[start..end]).unwrap_or("");
                let on_root = prev == b'$';
                let chained = prev.is_ascii_alphanumeric() || prev == b'_' || prev == b')';
                if ident.is_empty() {
                    if on_root || (!chained && !rebound) {
                        refs.whole = true;
                    }
                } else if (on_root || (!chained && !rebound))
                    && !ident.as_bytes()[0].is_ascii_digit()
                {
                    refs.fields.insert(ident.to_string());
                }
                i = end.max(i + 1);
            }
            b'$' => {
                let next = b.get(i + 1).copied().unwrap_or(b' ');
                if !(next.is_ascii_alphanumeric() || next == b'_' || next == b'.') {
                    refs.whole = true;
                }
                i += 1;
            }
            b'I' if b[i..].starts_with(b"IgnitionJson") => {
                // Built from the node's disks and filesystems (see `data`).
                refs.fields.insert("Disks".to_string());
                refs.fields.insert("FileSystems".to_string());
                i += 1;
            }
            _ => i += 1,
        }
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_template_is_site_wide() {
        let src = "{{$.Ipaddr}} {{$.BuildHost}}\n{{- range $node := $.AllNodes }}\n\
                   {{- range $devname, $netdev := $node.NetDevs }}{{$netdev.Ipaddr}} {{$node.Id}}\
                   {{- end }}{{ end }}";
        let r = scan(src);
        assert!(r.node_independent(), "{r:?}");
        assert!(r.uses_all_nodes());
    }

    #[test]
    fn node_fields_and_bare_dots_are_dependent() {
        assert!(!scan("{{ .Id }}").node_independent());
        assert!(!scan("{{ template \"x\" . }}").node_independent());
        assert!(!scan("{{ $x := $ }}").node_independent());
        assert!(!scan("{{ IgnitionJson }}").node_independent());
        assert!(!scan("{{ IgnitionJson }}").uses_all_nodes());
        assert!(scan("{{ range .AllNodes }}{{ .Id }}{{ . }}{{ end }}").node_independent());
        assert!(!scan("{{ range .AllNodes }}{{ else }}{{ .Id }}{{ end }}").node_independent());
        assert!(!scan("{{ with .Dhcp }}{{ end }}{{ .Id }}").node_independent());
        assert!(!scan("{{ with .ThisNode }}{{ .Comment }}{{ end }}").node_independent());
        assert!(!scan("{{ range .AllNodes }}{{ $.Id }}{{ end }}").node_independent());
        assert!(scan("{{ \"é{{\" }}{{ .Ipaddr }}").node_independent());
        assert!(scan("{{ \".Id\" }} {{/* .Id */}} text .Id").node_independent());
        assert!(scan("{{ .Warewulf.Port }} {{ 1.5 }}").node_independent());
        assert!(!scan("{{ (.ThisNode).Id }}").node_independent());
    }
}
