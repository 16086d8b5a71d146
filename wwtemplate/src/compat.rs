//! Go-compatibility layer over `gotmpl`'s parser: the parse-time checks Go
//! makes and `gotmpl` does not, and two tree rewrites.
//!
//! Checks, so that templates Go rejects are rejected here too:
//! - every function name must exist (`function "x" not defined`);
//! - every variable must be declared in scope (`undefined variable "$x"`);
//! - `{{break}}`/`{{continue}}` only inside `{{range}}`;
//! - blocks balance: no stray `{{end}}`/`{{else}}`, no block left open at
//!   EOF (checked on the source, as `gotmpl` ends lists leniently).
//!
//! Rewrites, so that valid templates behave as in Go:
//! - `{{template "x"}}` without a pipeline runs with nil data (`gotmpl`
//!   passes dot): such calls get an explicit nil pipeline;
//! - Sprig's `set`/`unset` change a dictionary in place, and templates rely
//!   on it (`{{ $_ := set $disk "wipe" "always" }}` in Warewulf's sfdisk
//!   overlay). Values here are immutable, so an action whose pipeline ends
//!   in `set $var…`/`unset $var…` becomes two actions: `{{ $var = … }}`
//!   storing the updated copy (rebuilt along a field path such as
//!   `$var.A.B`), then the original declaration or output of `$var…`. Other
//!   aliases of the same dictionary (a list it was appended to, a second
//!   variable) still see the old value.

use std::sync::Arc;

use gotmpl::parse::{ActionNode, CommandNode, Expr, ListNode, Node, PipeNode, Pos, SmolStr};

use crate::error::TemplateError;

/// Hidden function yielding nil, used by the `{{template}}` rewrite.
pub(crate) const NIL_FUNC: &str = "__wwtemplate_nil";

/// Go's predefined template functions.
const GO_BUILTINS: &[&str] = &[
    "and", "call", "html", "index", "slice", "js", "len", "not", "or", "print", "printf",
    "println", "urlquery", "eq", "ge", "gt", "le", "lt", "ne",
];

/// Checks one parsed tree (the template body or one `define`).
pub(crate) struct TreeCheck<'a> {
    template: &'a str,
    source: &'a str,
    known: &'a dyn Fn(&str) -> bool,
    vars: Vec<SmolStr>,
    range_depth: usize,
}

impl<'a> TreeCheck<'a> {
    pub(crate) fn run(
        template: &'a str,
        source: &'a str,
        known: &'a dyn Fn(&str) -> bool,
        tree: &ListNode,
    ) -> Result<(), TemplateError> {
        let mut check = TreeCheck {
            template,
            source,
            known,
            vars: vec![SmolStr::new("$")],
            range_depth: 0,
        };
        check.list(tree)
    }

    fn error(&self, pos: Pos, message: String) -> TemplateError {
        TemplateError::Parse {
            template: self.template.to_string(),
            line: pos.line,
            column: column(self.source, pos.offset),
            message,
        }
    }

    fn list(&mut self, list: &ListNode) -> Result<(), TemplateError> {
        list.nodes.iter().try_for_each(|n| self.node(n))
    }

    fn node(&mut self, node: &Node) -> Result<(), TemplateError> {
        match node {
            Node::List(list) => self.list(list),
            Node::Action(action) => self.pipe(&action.pipe),
            Node::If(b) | Node::With(b) | Node::Range(b) => {
                let mark = self.vars.len();
                self.pipe(&b.pipe)?;
                let is_range = matches!(node, Node::Range(_));
                if is_range {
                    self.range_depth += 1;
                }
                let body = self.list(&b.body);
                if is_range {
                    self.range_depth -= 1;
                }
                body?;
                if let Some(e) = &b.else_body {
                    self.list(e)?;
                }
                self.vars.truncate(mark);
                Ok(())
            }
            Node::Template(t) => match &t.pipe {
                Some(p) => self.pipe(p),
                None => Ok(()),
            },
            // Checked as trees of their own, with a fresh scope.
            Node::Define(_) | Node::Text(_) => Ok(()),
            Node::Break(pos) if self.range_depth == 0 => {
                Err(self.error(*pos, "{{break}} outside {{range}}".to_string()))
            }
            Node::Continue(pos) if self.range_depth == 0 => {
                Err(self.error(*pos, "{{continue}} outside {{range}}".to_string()))
            }
            Node::Break(_) | Node::Continue(_) => Ok(()),
        }
    }

    fn pipe(&mut self, pipe: &PipeNode) -> Result<(), TemplateError> {
        // Go declares the variables before parsing the commands.
        self.vars.extend(pipe.decl.iter().cloned());
        pipe.commands
            .iter()
            .flat_map(|c| c.args.iter())
            .try_for_each(|e| self.expr(e))
    }

    fn expr(&mut self, expr: &Expr) -> Result<(), TemplateError> {
        match expr {
            Expr::Identifier(pos, ident) if !(self.known)(ident) => {
                Err(self.error(*pos, format!("function {:?} not defined", ident.as_str())))
            }
            Expr::Variable(pos, name, _) if !self.vars.iter().any(|v| v == name) => {
                Err(self.error(*pos, format!("undefined variable {:?}", name.as_str())))
            }
            Expr::Pipe(_, pipe) => self.pipe(pipe),
            Expr::Chain(_, inner, _) => self.expr(inner),
            _ => Ok(()),
        }
    }
}

/// True for Go's predefined functions.
pub(crate) fn is_builtin(name: &str) -> bool {
    GO_BUILTINS.contains(&name)
}

/// 1-based column of byte `offset` in `source`.
pub(crate) fn column(source: &str, offset: usize) -> usize {
    let end = offset.min(source.len());
    let head = source.get(..end).unwrap_or(source);
    let line_start = head.rfind('\n').map_or(0, |i| i + 1);
    head[line_start..].chars().count() + 1
}

/// 1-based line of byte `offset` in `source`.
fn line(source: &str, offset: usize) -> usize {
    let end = offset.min(source.len());
    source.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Checks that control blocks balance, scanning actions in the source.
pub(crate) fn check_blocks(template: &str, source: &str) -> Result<(), TemplateError> {
    let error = |offset: usize, message: String| TemplateError::Parse {
        template: template.to_string(),
        line: line(source, offset),
        column: column(source, offset),
        message,
    };
    let mut open: Vec<(&str, usize)> = Vec::new();
    for (offset, keyword) in action_keywords(source) {
        match keyword {
            "if" | "range" | "with" | "define" | "block" => open.push((keyword, offset)),
            "else" => match open.last() {
                Some(("if" | "range" | "with", _)) => {}
                _ => return Err(error(offset, "unexpected {{else}}".to_string())),
            },
            "end" if open.pop().is_none() => {
                return Err(error(offset, "unexpected {{end}}".to_string()));
            }
            _ => {}
        }
    }
    match open.last() {
        Some((keyword, offset)) => Err(error(
            source.len(),
            format!(
                "unexpected EOF: {{{{{keyword}}}}} at {}:{} has no {{{{end}}}}",
                line(source, *offset),
                column(source, *offset)
            ),
        )),
        None => Ok(()),
    }
}

/// `(offset of "{{", first word)` of every action that is not a comment.
fn action_keywords(source: &str) -> Vec<(usize, &str)> {
    let bytes = source.as_bytes();
    let mut out = Vec::new();
    let mut pos = 0usize;
    while let Some(found) = source[pos..].find("{{") {
        let start = pos + found;
        let mut i = start + 2;
        // Trim marker: "-" followed by ASCII space.
        if bytes.get(i) == Some(&b'-') && bytes.get(i + 1).is_some_and(|b| is_space(*b)) {
            i += 1;
        }
        while bytes.get(i).is_some_and(|b| is_space(*b)) {
            i += 1;
        }
        if source[i..].starts_with("/*") {
            match source[i + 2..].find("*/") {
                Some(end) => {
                    let after = i + 2 + end + 2;
                    pos = source[after..]
                        .find("}}")
                        .map_or(source.len(), |e| after + e + 2);
                    continue;
                }
                None => break,
            }
        }
        let word_end = source[i..]
            .find(|c: char| !c.is_ascii_alphabetic())
            .map_or(source.len(), |e| i + e);
        out.push((start, &source[i..word_end]));
        pos = skip_action(source, word_end);
    }
    out
}

/// Offset just past the `}}` closing the action whose body starts at `from`,
/// skipping quoted strings, raw strings and character constants.
fn skip_action(source: &str, from: usize) -> usize {
    let bytes = source.as_bytes();
    let mut i = from;
    while i < bytes.len() {
        match bytes[i] {
            b'}' if bytes.get(i + 1) == Some(&b'}') => return i + 2,
            quote @ (b'"' | b'\'') => {
                i += 1;
                while i < bytes.len() && bytes[i] != quote && bytes[i] != b'\n' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'`' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'`' {
                    i += 1;
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    bytes.len()
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Applies the rewrites to a tree; `None` when nothing changed.
pub(crate) fn rewrite(tree: &ListNode) -> Option<ListNode> {
    let mut copy = tree.clone();
    rewrite_list(&mut copy).then_some(copy)
}

fn rewrite_list(list: &mut ListNode) -> bool {
    let mut changed = false;
    let nodes = std::mem::take(&mut list.nodes);
    for mut node in nodes {
        match &mut node {
            Node::List(l) => changed |= rewrite_list(l),
            Node::If(b) | Node::With(b) | Node::Range(b) => {
                changed |= rewrite_list(&mut b.body);
                if let Some(e) = b.else_body.as_mut() {
                    changed |= rewrite_list(e);
                }
            }
            Node::Template(t) if t.pipe.is_none() => {
                t.pipe = Some(single(
                    t.pos,
                    Vec::new(),
                    false,
                    vec![ident(t.pos, NIL_FUNC)],
                ));
                changed = true;
            }
            Node::Action(a) => {
                if let Some((update, rest)) = split_mutation(&a.pipe) {
                    list.nodes.push(update);
                    node = rest;
                    changed = true;
                }
            }
            _ => {}
        }
        list.nodes.push(node);
    }
    changed
}

fn ident(pos: Pos, name: &str) -> Expr {
    Expr::Identifier(pos, SmolStr::new(name))
}

/// A pipeline of one command.
fn single(pos: Pos, decl: Vec<SmolStr>, is_assign: bool, args: Vec<Expr>) -> PipeNode {
    PipeNode {
        pos,
        decl,
        commands: vec![CommandNode { pos, args }],
        is_assign,
    }
}

/// For a pipeline ending in `set $v.F… …` or `unset $v.F… …`: the action
/// storing the updated `$v` and the action standing in for the original.
fn split_mutation(pipe: &PipeNode) -> Option<(Node, Node)> {
    let last = pipe.commands.last()?;
    let (Some(Expr::Identifier(_, func)), Some(Expr::Variable(vpos, var, fields))) =
        (last.args.first(), last.args.get(1))
    else {
        return None;
    };
    if func.as_str() != "set" && func.as_str() != "unset" {
        return None;
    }
    let pos = pipe.pos;
    // The updated innermost dictionary, then each parent rebuilt around it.
    let mut value = PipeNode {
        pos,
        decl: Vec::new(),
        commands: pipe.commands.clone(),
        is_assign: false,
    };
    for i in (0..fields.len()).rev() {
        value = single(
            pos,
            Vec::new(),
            false,
            vec![
                ident(pos, "set"),
                Expr::Variable(*vpos, var.clone(), fields[..i].to_vec()),
                Expr::String(pos, Arc::from(fields[i].as_str())),
                Expr::Pipe(pos, value),
            ],
        );
    }
    let update = Node::Action(ActionNode {
        pos,
        pipe: PipeNode {
            pos,
            decl: vec![var.clone()],
            commands: value.commands,
            is_assign: true,
        },
    });
    let rest = Node::Action(ActionNode {
        pos,
        pipe: single(
            pos,
            pipe.decl.clone(),
            pipe.is_assign,
            vec![Expr::Variable(*vpos, var.clone(), fields.clone())],
        ),
    });
    Some((update, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_skip_strings_and_comments() {
        let src = "{{/* if */}}{{ if \"}}end\" }}{{- else -}}{{`{{end}}`}}{{end}}";
        let words: Vec<&str> = action_keywords(src).into_iter().map(|(_, w)| w).collect();
        assert_eq!(words, ["if", "else", "", "end"]);
    }

    #[test]
    fn blocks_must_balance() {
        assert!(check_blocks("t", "{{if 1}}{{else if 2}}{{else}}{{end}}").is_ok());
        assert!(check_blocks("t", "{{end}}").is_err());
        assert!(check_blocks("t", "{{if 1}}").is_err());
        assert!(check_blocks("t", "{{define \"a\"}}{{else}}{{end}}").is_err());
    }
}
