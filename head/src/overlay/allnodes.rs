//! What a template can see of the *other* nodes through `AllNodes`.
//!
//! `/etc/hosts` lists every node, so a naive build re-renders it, and
//! rebuilds every node's image, whenever any node changes. Most changes
//! (a comment, kernel arguments, a tag) cannot reach that output. This
//! module finds, for the templates that read `AllNodes`, which node fields
//! they can reach, so a build hashes only those ("the projection") and a
//! change elsewhere leaves every other node alone.
//!
//! The analysis is a small type checker over the template's actions. Values
//! derived from an `AllNodes` element are typed as a node, its `NetDevs`
//! map, one network device, or *covered*: a field value whose whole content
//! the projection includes. Field names read on nodes and network devices
//! are collected. The projection keeps, of each node, its id, those fields
//! (whole) and, when `NetDevs` is read, every device's name and the named
//! device fields. Anything the checker cannot follow makes the template
//! *opaque* and the build falls back to hashing whole nodes: a node, device
//! map or device (or `AllNodes`, or the root) handed to a function, printed,
//! compared or indexed; `range` over a node or device; `template`, `block`
//! and `define`; a variable re-assigned with a different kind of value.

use std::collections::{BTreeSet, HashMap};

use sha2::{Digest, Sha256};

use super::deps::{find, skip_quoted};
use wwtemplate::Value;

/// The kinds of values the checker tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ty {
    /// Not derived from `AllNodes` (site data, this node, literals).
    Free,
    /// The root (it holds `AllNodes`).
    Root,
    /// `AllNodes`.
    NodeList,
    /// One element of `AllNodes`.
    Node,
    /// A node's `NetDevs`.
    NetDevs,
    /// One network device of a node.
    NetDev,
    /// A value the projection includes whole.
    Covered,
}

impl Ty {
    /// May be handed to functions and printed.
    fn consumable(self) -> bool {
        matches!(self, Ty::Free | Ty::Covered)
    }
}

/// What the templates reading `AllNodes` can see of each node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reach {
    /// Field names read on nodes and network devices.
    pub names: BTreeSet<String>,
    /// The analysis could not follow a template: hash whole nodes.
    pub opaque: bool,
}

impl Reach {
    /// Adds what `src` reaches.
    pub fn add_template(&mut self, src: &str) {
        match analyse(src) {
            Some(names) => self.names.extend(names),
            None => self.opaque = true,
        }
    }

    /// Adds what another template reaches.
    pub fn merge(&mut self, other: &Reach) {
        self.names.extend(other.names.iter().cloned());
        self.opaque |= other.opaque;
    }

    /// A digest of the reach itself (part of every projection's key).
    pub fn key(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"ironwulf-allnodes-reach-1\0");
        h.update([u8::from(self.opaque)]);
        for n in &self.names {
            h.update(n.as_bytes());
            h.update([0]);
        }
        h.finalize().into()
    }

    /// The projection of one node's template data (`node_fields`), or `None`
    /// when the reach is opaque (the caller then uses the whole node).
    pub fn project(&self, id: &str, node: &Value) -> Option<[u8; 32]> {
        if self.opaque {
            return None;
        }
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(id.as_bytes());
        out.push(0);
        for (k, v) in node.entries().unwrap_or_default() {
            if !self.names.contains(&*k) {
                continue;
            }
            out.extend_from_slice(k.as_bytes());
            out.push(0);
            if &*k == "NetDevs" {
                for (dev, nd) in v.entries().unwrap_or_default() {
                    out.push(b'D');
                    out.extend_from_slice(dev.as_bytes());
                    out.push(0);
                    for (f, fv) in nd.entries().unwrap_or_default() {
                        if self.names.contains(&*f) {
                            out.extend_from_slice(f.as_bytes());
                            out.push(0);
                            fv.encode_into(&mut out);
                        }
                    }
                    out.push(b'E');
                }
            } else {
                v.encode_into(&mut out);
            }
        }
        Some(Sha256::digest(&out).into())
    }
}

/// Field names of nodes and devices `src` reads through `AllNodes`, or
/// `None` when it is opaque.
pub fn analyse(src: &str) -> Option<BTreeSet<String>> {
    let mut c = Checker {
        names: BTreeSet::new(),
        scopes: vec![HashMap::from([(String::new(), Ty::Root)])],
        blocks: Vec::new(),
    };
    for action in actions(src)? {
        c.action(&action)?;
    }
    Some(c.names)
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    /// A keyword or function name (`range`, `print`, `true`, …).
    Ident(String),
    /// `.A.B` on the dot; empty for a bare `.`.
    Field(Vec<String>),
    /// `$x.A.B`; the name is empty for `$`.
    Var(String, Vec<String>),
    /// `.A.B` right after a `)`.
    Chain(Vec<String>),
    /// A string, raw string, character or number literal.
    Lit,
    Open,
    Close,
    Pipe,
    Comma,
    Declare,
    Assign,
}

/// The actions of `src` as token lists (comments dropped); `None` when the
/// text cannot be tokenised.
fn actions(src: &str) -> Option<Vec<Vec<Tok>>> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(off) = find(b, i, b"{{") {
        i = off + 2;
        if b.get(i) == Some(&b'-') && b.get(i + 1).is_some_and(|c| c.is_ascii_whitespace()) {
            i += 1;
        }
        let mut toks = Vec::new();
        loop {
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            if i >= b.len() {
                return None;
            }
            let c = b[i];
            if c == b'-' && b.get(i + 1) == Some(&b'}') && b.get(i + 2) == Some(&b'}') {
                i += 3;
                break;
            }
            if c == b'}' && b.get(i + 1) == Some(&b'}') {
                i += 2;
                break;
            }
            match c {
                b'/' if b.get(i + 1) == Some(&b'*') => {
                    i = find(b, i + 2, b"*/")? + 2;
                }
                b'"' | b'\'' => {
                    i = skip_quoted(b, i)?;
                    toks.push(Tok::Lit);
                }
                b'`' => {
                    i = find(b, i + 1, b"`")? + 1;
                    toks.push(Tok::Lit);
                }
                b'(' | b')' | b'|' | b',' => {
                    toks.push(match c {
                        b'(' => Tok::Open,
                        b')' => Tok::Close,
                        b'|' => Tok::Pipe,
                        _ => Tok::Comma,
                    });
                    i += 1;
                }
                b':' if b.get(i + 1) == Some(&b'=') => {
                    toks.push(Tok::Declare);
                    i += 2;
                }
                b'=' => {
                    toks.push(Tok::Assign);
                    i += 1;
                }
                b'.' if !b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                    let (fields, end) = fields_at(b, i);
                    let after_paren = toks.last() == Some(&Tok::Close)
                        && i > 0
                        && !b[i - 1].is_ascii_whitespace();
                    toks.push(if after_paren {
                        Tok::Chain(fields)
                    } else {
                        Tok::Field(fields)
                    });
                    i = end;
                }
                b'$' => {
                    let mut e = i + 1;
                    while e < b.len() && is_ident(b[e]) {
                        e += 1;
                    }
                    let name = std::str::from_utf8(&b[i + 1..e]).ok()?.to_string();
                    let (fields, end) = fields_at(b, e);
                    toks.push(Tok::Var(name, fields));
                    i = end;
                }
                c if c.is_ascii_digit() || c == b'-' || c == b'+' => {
                    i += 1;
                    while i < b.len()
                        && (b[i].is_ascii_alphanumeric()
                            || matches!(b[i], b'.' | b'_' | b'+' | b'-'))
                    {
                        i += 1;
                    }
                    toks.push(Tok::Lit);
                }
                c if is_ident(c) => {
                    let mut e = i;
                    while e < b.len() && is_ident(b[e]) {
                        e += 1;
                    }
                    toks.push(Tok::Ident(std::str::from_utf8(&b[i..e]).ok()?.to_string()));
                    i = e;
                }
                _ => return None,
            }
        }
        if !toks.is_empty() {
            out.push(toks);
        }
    }
    Some(out)
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// `.A.B…` starting at `i` (which may not be a dot: then no fields).
fn fields_at(b: &[u8], mut i: usize) -> (Vec<String>, usize) {
    let mut fields = Vec::new();
    while b.get(i) == Some(&b'.') {
        let mut e = i + 1;
        while e < b.len() && is_ident(b[e]) {
            e += 1;
        }
        if e == i + 1 {
            // A bare dot: nothing follows.
            return (fields, e);
        }
        fields.push(String::from_utf8_lossy(&b[i + 1..e]).into_owned());
        i = e;
    }
    (fields, i)
}

/// One open control structure.
struct Block {
    /// `range`/`with` rebind the dot in the body; `if` does not.
    outer_dot: Ty,
}

struct Checker {
    names: BTreeSet<String>,
    /// Variables per scope (the dot is stored as `"."`).
    scopes: Vec<HashMap<String, Ty>>,
    blocks: Vec<Block>,
}

impl Checker {
    fn var(&self, name: &str) -> Option<Ty> {
        self.scopes.iter().rev().find_map(|s| s.get(name).copied())
    }

    fn dot(&self) -> Ty {
        self.var(".").unwrap_or(Ty::Root)
    }

    fn set_dot(&mut self, ty: Ty) {
        self.scopes
            .last_mut()
            .expect("a scope is open")
            .insert(".".to_string(), ty);
    }

    /// The type of `base` followed by `fields`, collecting node field names.
    fn chain(&mut self, mut ty: Ty, fields: &[String]) -> Option<Ty> {
        for f in fields {
            ty = match ty {
                Ty::Free => Ty::Free,
                Ty::Covered => Ty::Covered,
                Ty::Root => {
                    if f == "AllNodes" {
                        Ty::NodeList
                    } else {
                        Ty::Free
                    }
                }
                Ty::NodeList => return None,
                Ty::Node => {
                    self.names.insert(f.clone());
                    if f == "NetDevs" {
                        Ty::NetDevs
                    } else {
                        Ty::Covered
                    }
                }
                Ty::NetDevs => Ty::NetDev,
                Ty::NetDev => {
                    self.names.insert(f.clone());
                    Ty::Covered
                }
            };
        }
        Some(ty)
    }

    fn action(&mut self, toks: &[Tok]) -> Option<()> {
        let Some(Tok::Ident(word)) = toks.first() else {
            // A plain action: evaluated and printed (or a declaration).
            return self.statement(toks);
        };
        let rest = &toks[1..];
        match word.as_str() {
            "range" => {
                self.open_block();
                let (vars, pipe) = split_decl(rest);
                let ty = self.pipeline(pipe, false)?;
                let (key, elem) = match ty {
                    Ty::Free => (Ty::Free, Ty::Free),
                    Ty::Covered => (Ty::Covered, Ty::Covered),
                    Ty::NodeList => (Ty::Free, Ty::Node),
                    Ty::NetDevs => (Ty::Covered, Ty::NetDev),
                    Ty::Root | Ty::Node | Ty::NetDev => return None,
                };
                match vars.as_slice() {
                    [] => {}
                    [v] => self.declare(v, elem),
                    [k, v] => {
                        self.declare(k, key);
                        self.declare(v, elem);
                    }
                    _ => return None,
                }
                self.set_dot(elem);
                Some(())
            }
            "with" | "if" => {
                self.open_block();
                self.condition(word, rest)
            }
            "else" => {
                let outer = self.blocks.last()?.outer_dot;
                self.set_dot(outer);
                match rest.first() {
                    Some(Tok::Ident(w)) if w == "if" || w == "with" => {
                        self.condition(w, &rest[1..])
                    }
                    None => Some(()),
                    Some(_) => None,
                }
            }
            "end" => {
                self.blocks.pop()?;
                self.scopes.pop();
                Some(())
            }
            "break" | "continue" => Some(()),
            "template" | "block" | "define" => None,
            _ => self.statement(toks),
        }
    }

    /// Opens a `range`/`with`/`if` block: a scope, and the dot its `else`
    /// goes back to.
    fn open_block(&mut self) {
        let outer = self.dot();
        self.scopes.push(HashMap::new());
        self.blocks.push(Block { outer_dot: outer });
    }

    /// The pipeline of `if`/`with` (also after `else`): its variable, and
    /// for `with` the dot of the body.
    fn condition(&mut self, word: &str, toks: &[Tok]) -> Option<()> {
        let (vars, pipe) = split_decl(toks);
        let ty = self.pipeline(pipe, false)?;
        match vars.as_slice() {
            [] => {}
            [v] => self.declare(v, ty),
            _ => return None,
        }
        if word == "with" {
            self.set_dot(ty);
        }
        Some(())
    }

    /// A plain action: a declaration, an assignment or a printed pipeline.
    fn statement(&mut self, toks: &[Tok]) -> Option<()> {
        if let [Tok::Var(name, fields), op, pipe @ ..] = toks
            && fields.is_empty()
            && matches!(op, Tok::Declare | Tok::Assign)
        {
            let ty = self.pipeline(pipe, false)?;
            if *op == Tok::Declare {
                self.declare(name, ty);
            } else {
                let before = self.var(name)?;
                if before != ty {
                    let joined = match (before, ty) {
                        (Ty::Free | Ty::Covered, Ty::Free | Ty::Covered) => Ty::Covered,
                        _ => return None,
                    };
                    let scope = self
                        .scopes
                        .iter_mut()
                        .rev()
                        .find(|s| s.contains_key(name.as_str()))?;
                    scope.insert(name.clone(), joined);
                }
            }
            return Some(());
        }
        self.pipeline(toks, true).map(|_| ())
    }

    fn declare(&mut self, name: &str, ty: Ty) {
        self.scopes
            .last_mut()
            .expect("a scope is open")
            .insert(name.to_string(), ty);
    }

    /// The type of a pipeline; `consumed`: its value is printed or passed on.
    fn pipeline(&mut self, toks: &[Tok], consumed: bool) -> Option<Ty> {
        let commands: Vec<&[Tok]> = split_top(toks, &Tok::Pipe);
        let mut piped: Option<Ty> = None;
        let n = commands.len();
        for (k, cmd) in commands.into_iter().enumerate() {
            let last = k + 1 == n;
            piped = Some(self.command(cmd, piped, consumed || !last)?);
        }
        let ty = piped?;
        if consumed && !ty.consumable() {
            return None;
        }
        Some(ty)
    }

    /// One command; `piped`: the value of the previous command, passed as
    /// the last argument.
    fn command(&mut self, toks: &[Tok], piped: Option<Ty>, consumed: bool) -> Option<Ty> {
        let operands = self.operands(toks)?;
        match operands.as_slice() {
            [] => None,
            [Operand::Func, args @ ..] => {
                for a in args {
                    if !a.ty()?.consumable() {
                        return None;
                    }
                }
                if piped.is_some_and(|p| !p.consumable()) {
                    return None;
                }
                Some(Ty::Covered)
            }
            [single] if piped.is_none() => {
                let ty = single.ty()?;
                if consumed && !ty.consumable() {
                    return None;
                }
                Some(ty)
            }
            _ => {
                // A value with arguments (a method call in Go): treat every
                // operand as consumed.
                for a in &operands {
                    if !a.ty()?.consumable() {
                        return None;
                    }
                }
                if piped.is_some_and(|p| !p.consumable()) {
                    return None;
                }
                Some(Ty::Covered)
            }
        }
    }

    /// The operands of one command.
    fn operands(&mut self, toks: &[Tok]) -> Option<Vec<Operand>> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < toks.len() {
            match &toks[i] {
                Tok::Ident(w) => out.push(match w.as_str() {
                    "true" | "false" | "nil" => Operand::Value(Ty::Free),
                    _ if out.is_empty() => Operand::Func,
                    // A function name as an argument (e.g. `call`) is a value.
                    _ => Operand::Value(Ty::Free),
                }),
                Tok::Field(fields) => {
                    let ty = self.chain(self.dot(), fields)?;
                    out.push(Operand::Value(ty));
                }
                Tok::Var(name, fields) => {
                    let base = if name.is_empty() {
                        Ty::Root
                    } else {
                        self.var(name)?
                    };
                    let ty = self.chain(base, fields)?;
                    out.push(Operand::Value(ty));
                }
                Tok::Lit => out.push(Operand::Value(Ty::Free)),
                Tok::Open => {
                    let close = matching_close(toks, i)?;
                    let mut ty = self.pipeline(&toks[i + 1..close], false)?;
                    i = close;
                    if let Some(Tok::Chain(fields)) = toks.get(i + 1) {
                        ty = self.chain(ty, fields)?;
                        i += 1;
                    }
                    out.push(Operand::Value(ty));
                }
                _ => return None,
            }
            i += 1;
        }
        Some(out)
    }
}

enum Operand {
    Func,
    Value(Ty),
}

impl Operand {
    fn ty(&self) -> Option<Ty> {
        match self {
            Operand::Func => Some(Ty::Free),
            Operand::Value(t) => Some(*t),
        }
    }
}

/// `$a, $b :=` at the start of a `range`/`with`/`if` pipeline.
fn split_decl(toks: &[Tok]) -> (Vec<String>, &[Tok]) {
    let Some(pos) = toks
        .iter()
        .position(|t| *t == Tok::Declare || *t == Tok::Assign)
    else {
        return (Vec::new(), toks);
    };
    let mut vars = Vec::new();
    for t in &toks[..pos] {
        match t {
            Tok::Var(name, fields) if fields.is_empty() => vars.push(name.clone()),
            Tok::Comma => {}
            _ => return (Vec::new(), toks),
        }
    }
    (vars, &toks[pos + 1..])
}

/// Splits at `sep` outside parentheses.
fn split_top<'a>(toks: &'a [Tok], sep: &Tok) -> Vec<&'a [Tok]> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, t) in toks.iter().enumerate() {
        match t {
            Tok::Open => depth += 1,
            Tok::Close => depth = depth.saturating_sub(1),
            t if t == sep && depth == 0 => {
                out.push(&toks[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&toks[start..]);
    out
}

fn matching_close(toks: &[Tok], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, t) in toks.iter().enumerate().skip(open) {
        match t {
            Tok::Open => depth += 1,
            Tok::Close => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(src: &str) -> Option<Vec<String>> {
        analyse(src).map(|n| n.into_iter().collect())
    }

    #[test]
    fn shipped_hosts_template_reaches_addresses_only() {
        let src = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../overlays/hosts/rootfs/etc/hosts.ww"),
        )
        .expect("shipped hosts template");
        assert_eq!(
            names(&src).expect("hosts.ww is followed"),
            ["Device", "Id", "Ipaddr", "Ipaddr6", "NetDevs", "Primary"]
        );
    }

    #[test]
    fn fields_on_nodes_and_devices_are_collected() {
        assert_eq!(
            names("{{ range .AllNodes }}{{ .Id }} {{ .Kernel.Args }}{{ end }}").unwrap(),
            ["Id", "Kernel"]
        );
        assert_eq!(
            names("{{ range $i, $n := $.AllNodes }}{{ $n.NetDevs.default.Hwaddr }}{{ end }}")
                .unwrap(),
            ["Hwaddr", "NetDevs"]
        );
        assert_eq!(
            names("{{ range .AllNodes }}{{ with .NetDevs.eth0 }}{{ .Ipaddr }}{{ end }}{{ end }}")
                .unwrap(),
            ["Ipaddr", "NetDevs"]
        );
        // Site and this-node fields are not node-list fields.
        assert_eq!(
            names("{{ .Comment }} {{ $.Ipaddr }} {{ .ThisNode.Id }}").unwrap(),
            Vec::<String>::new()
        );
        // Covered values may be printed, piped and passed on.
        assert!(
            names("{{ range .AllNodes }}{{ .Tags | toJson }}{{ index .Tags \"rack\" }}{{ end }}")
                .is_some()
        );
        assert!(
            names("{{ range .AllNodes }}{{ $x := list }}{{ $x = append $x .Id }}{{ end }}")
                .is_some()
        );
    }

    #[test]
    fn whole_nodes_handed_on_are_opaque() {
        for src in [
            "{{ range .AllNodes }}{{ . }}{{ end }}",
            "{{ range $n := .AllNodes }}{{ toJson $n }}{{ end }}",
            "{{ range .AllNodes }}{{ .NetDevs }}{{ end }}",
            "{{ range .AllNodes }}{{ len .NetDevs }}{{ end }}",
            "{{ range .AllNodes }}{{ index .NetDevs \"x\" }}{{ end }}",
            "{{ range .AllNodes }}{{ range .NetDevs }}{{ . }}{{ end }}{{ end }}",
            "{{ range .AllNodes }}{{ range $k, $v := . }}{{ $v }}{{ end }}{{ end }}",
            "{{ toJson .AllNodes }}",
            "{{ len .AllNodes }}",
            "{{ . }}",
            "{{ template \"x\" . }}",
            "{{ $x := 1 }}{{ range .AllNodes }}{{ $x = . }}{{ end }}",
            "{{ range $n := .AllNodes }}{{ $n | printf \"%v\" }}{{ end }}",
            "{{ range .AllNodes }}{{ (.NetDevs) }}{{ end }}",
            "{{ range .AllNodes }}{{ eq . $ }}{{ end }}",
            "{{ unclosed ",
        ] {
            assert_eq!(names(src), None, "{src}");
        }
    }

    #[test]
    fn projection_keeps_only_reached_fields() {
        let node = |comment: &str, ip: &str, dev: &str| {
            Value::object()
                .field("Id", "n1")
                .field("Comment", comment)
                .field(
                    "NetDevs",
                    Value::map([(
                        dev,
                        Value::object()
                            .field("Ipaddr", ip)
                            .field("Hwaddr", "x")
                            .build(),
                    )]),
                )
                .build()
        };
        let mut reach = Reach::default();
        reach.add_template(
            "{{ range .AllNodes }}{{ range .NetDevs }}{{ .Ipaddr }}{{ end }}{{ end }}",
        );
        assert!(!reach.opaque);
        let base = reach.project("n1", &node("a", "10.0.0.1", "eth0"));
        assert_eq!(base, reach.project("n1", &node("b", "10.0.0.1", "eth0")));
        assert_ne!(base, reach.project("n1", &node("a", "10.0.0.2", "eth0")));
        assert_ne!(base, reach.project("n1", &node("a", "10.0.0.1", "eth1")));
        assert_ne!(base, reach.project("n2", &node("a", "10.0.0.1", "eth0")));
        reach.add_template("{{ range .AllNodes }}{{ . }}{{ end }}");
        assert!(reach.opaque);
        assert_eq!(reach.project("n1", &node("a", "10.0.0.1", "eth0")), None);
    }
}
