//! Warewulf's own template functions, with Warewulf's exact semantics.
//!
//! `file` and `softlink` return marker comments (`{{ /* file "x" */ }}`) that
//! [`crate::output`] later turns into outputs, exactly like Warewulf scans its
//! rendered buffer. `abort` and `nobackup` set flags of the current render.
//! `Include`, `IncludeFrom`, `IncludeBlock`, `readlink` and `ImportLink`
//! record every host path they touch (found or not) so the caller can hash
//! them into the overlay's content hash. Failures to read are not errors,
//! as in Warewulf: they yield "" (or the abort string for `IncludeBlock`).

use std::path::PathBuf;

use gotmpl::Value;

use crate::args::{FnResult, arity, call_err, int_arg, string, string_arg};
use crate::context;
use crate::env::{eval_symlinks, go_base, go_io_message, go_join};

/// Names of the functions defined here (for the parse-time function check).
pub(crate) const NAMES: &[&str] = &[
    "Include",
    "IncludeFrom",
    "IncludeBlock",
    "ImportLink",
    "basename",
    "inc",
    "dec",
    "file",
    "softlink",
    "readlink",
    "IgnitionJson",
    "abort",
    "nobackup",
    "UniqueField",
    "SystemdEscape",
    "SystemdEscapePath",
    "tr",
];

/// Adds Warewulf's functions to `t`.
pub(crate) fn register(t: gotmpl::Template) -> gotmpl::Template {
    t.func("Include", include)
        .func("IncludeFrom", include_from)
        .func("IncludeBlock", include_block)
        .func("ImportLink", import_link)
        .func("basename", |a| {
            arity("basename", a, 1)?;
            Ok(string(go_base(string_arg("basename", a, 0)?)))
        })
        .func("inc", |a| {
            arity("inc", a, 1)?;
            Ok(Value::Int(int_arg("inc", a, 0)?.wrapping_add(1)))
        })
        .func("dec", |a| {
            arity("dec", a, 1)?;
            Ok(Value::Int(int_arg("dec", a, 0)?.wrapping_sub(1)))
        })
        .func("file", |a| {
            arity("file", a, 1)?;
            Ok(string(file_marker(string_arg("file", a, 0)?)))
        })
        .func("softlink", |a| {
            arity("softlink", a, 1)?;
            Ok(string(softlink_marker(string_arg("softlink", a, 0)?)))
        })
        .func("readlink", readlink)
        .func("IgnitionJson", ignition_json)
        .func("abort", |a| {
            arity("abort", a, 0)?;
            context::with(|s| s.write_file = false)?;
            Ok(string(""))
        })
        .func("nobackup", |a| {
            arity("nobackup", a, 0)?;
            context::with(|s| s.backup = false)?;
            Ok(string(""))
        })
        .func("UniqueField", |a| {
            arity("UniqueField", a, 3)?;
            let sep = string_arg("UniqueField", a, 0)?;
            let index = int_arg("UniqueField", a, 1)?;
            let input = string_arg("UniqueField", a, 2)?;
            unique_field(sep, index, input).map(string)
        })
        .func("SystemdEscape", |a| {
            arity("SystemdEscape", a, 1)?;
            Ok(string(systemd_escape(
                string_arg("SystemdEscape", a, 0)?,
                false,
            )))
        })
        .func("SystemdEscapePath", |a| {
            arity("SystemdEscapePath", a, 1)?;
            Ok(string(systemd_escape(
                string_arg("SystemdEscapePath", a, 0)?,
                true,
            )))
        })
        .func("tr", |a| {
            // Warewulf's pre-Sprig `tr SOURCE OLD NEW` (replace all).
            arity("tr", a, 3)?;
            let source = string_arg("tr", a, 0)?;
            let old = string_arg("tr", a, 1)?;
            let new = string_arg("tr", a, 2)?;
            Ok(string(go_replace_all(source, old, new)))
        })
}

/// The marker `file NAME` leaves in the output.
pub(crate) fn file_marker(name: &str) -> String {
    format!("{{{{ /* file \"{name}\" */ }}}}")
}

/// The marker `softlink TARGET` leaves in the output.
pub(crate) fn softlink_marker(target: &str) -> String {
    format!("{{{{ /* softlink \"{target}\" */ }}}}")
}

/// Go's `strings.Replace(s, old, new, -1)`, including the empty-`old` case
/// (insert `new` before every UTF-8 sequence and at the end).
pub(crate) fn go_replace_all(s: &str, old: &str, new: &str) -> String {
    if old.is_empty() {
        let mut out = String::with_capacity(s.len() + new.len() * (s.len() + 1));
        for c in s.chars() {
            out.push_str(new);
            out.push(c);
        }
        out.push_str(new);
        out
    } else {
        s.replace(old, new)
    }
}

/// Reads a host file for `Include`: content minus one trailing newline, ""
/// when unreadable.
fn read_trimmed(host: &std::path::Path) -> String {
    match std::fs::read(host) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            text.strip_suffix('\n').unwrap_or(&text).to_string()
        }
        Err(e) => {
            tracing::debug!(path = %host.display(), error = %e, "could not include file into template");
            String::new()
        }
    }
}

fn include(a: &[Value]) -> FnResult {
    arity("Include", a, 1)?;
    let inc = string_arg("Include", a, 0)?;
    let host = context::with(|s| {
        let host = s.env.host_path(&s.env.include_path(inc));
        s.record(host.clone());
        host
    })?;
    Ok(string(read_trimmed(&host)))
}

fn include_from(a: &[Value]) -> FnResult {
    arity("IncludeFrom", a, 2)?;
    let image = string_arg("IncludeFrom", a, 0)?;
    let path = string_arg("IncludeFrom", a, 1)?;
    if image.is_empty() {
        tracing::warn!(path, "image is not defined for node");
        return Ok(string(""));
    }
    // Clone the resolver out so user code never runs under the state borrow.
    let resolver = context::with(|s| s.env.images.clone())?;
    let Some(rootfs) = resolver.and_then(|r| r.rootfs(image)) else {
        tracing::warn!(
            image,
            path,
            "template requires file(s) from non-existent image"
        );
        return Ok(string(""));
    };
    let joined = go_join(&[&rootfs.to_string_lossy(), path]);
    let host = PathBuf::from(joined);
    context::with(|s| s.record(host.clone()))?;
    match std::fs::metadata(&host) {
        Ok(m) if !m.is_dir() => Ok(string(read_trimmed(&host))),
        _ => {
            tracing::warn!(image, path, "requested file from image does not exist");
            Ok(string(""))
        }
    }
}

fn include_block(a: &[Value]) -> FnResult {
    arity("IncludeBlock", a, 2)?;
    let inc = string_arg("IncludeBlock", a, 0)?;
    let abort = string_arg("IncludeBlock", a, 1)?;
    let host = context::with(|s| {
        let host = s.env.host_path(&s.env.include_path(inc));
        s.record(host.clone());
        host
    })?;
    let bytes = match std::fs::read(&host) {
        Ok(b) => b,
        Err(e) => {
            tracing::info!(path = %host.display(), error = %e, "couldn't read block");
            return Ok(string(abort));
        }
    };
    let text = String::from_utf8_lossy(&bytes);
    let mut out = String::new();
    for line in scan_lines(&text) {
        if line.contains(abort) {
            break;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(abort);
    Ok(string(out))
}

/// Go's `bufio.ScanLines`: lines without `\n` and without one trailing `\r`;
/// a final unterminated line counts, an empty tail does not.
fn scan_lines(text: &str) -> impl Iterator<Item = &str> {
    let body = text.strip_suffix('\n').unwrap_or(text);
    let empty = text.is_empty();
    body.split('\n')
        .filter(move |_| !empty)
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
}

fn readlink(a: &[Value]) -> FnResult {
    arity("readlink", a, 1)?;
    let path = string_arg("readlink", a, 0)?;
    let env = context::with(|s| {
        s.record(s.env.host_path(path));
        s.env.clone()
    })?;
    eval_symlinks(&env, path)
        .map(string)
        .map_err(|e| call_err("readlink", e))
}

fn import_link(a: &[Value]) -> FnResult {
    arity("ImportLink", a, 1)?;
    let path = string_arg("ImportLink", a, 0)?;
    let env = context::with(|s| {
        s.record(s.env.host_path(path));
        s.env.clone()
    })?;
    match eval_symlinks(&env, path) {
        Ok(target) => Ok(string(softlink_marker(&target))),
        // Warewulf's quirk: the literal text "abort", not the abort function.
        Err(e) => {
            tracing::debug!(path, error = %go_io_message(&e), "ImportLink failed");
            Ok(string("abort"))
        }
    }
}

fn ignition_json(a: &[Value]) -> FnResult {
    arity("IgnitionJson", a, 0)?;
    let (f, root) = context::with(|s| (s.env.ignition.clone(), s.root.clone()))?;
    Ok(string(match f {
        Some(f) => f(&crate::value::Value(root)),
        None => String::new(),
    }))
}

/// Warewulf's `UniqueField`: keeps the first line for each value of field
/// `index` (split on `sep`); lines lacking the field or with it empty stay.
pub(crate) fn unique_field(sep: &str, index: i64, input: &str) -> gotmpl::Result<String> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<&str> = Vec::new();
    for line in input.split('\n') {
        let fields = go_split(line, sep);
        if (fields.len() as i64) > index {
            let field = usize::try_from(index)
                .ok()
                .and_then(|i| fields.get(i))
                .ok_or_else(|| {
                    call_err(
                        "UniqueField",
                        format!("runtime error: index out of range [{index}]"),
                    )
                })?;
            if !field.is_empty() && !seen.insert(field.to_string()) {
                continue;
            }
        }
        out.push(line);
    }
    Ok(out.join("\n"))
}

/// Go's `strings.Split`: an empty separator splits into UTF-8 sequences.
pub(crate) fn go_split<'a>(s: &'a str, sep: &str) -> Vec<&'a str> {
    if sep.is_empty() {
        s.char_indices()
            .map(|(i, c)| &s[i..i + c.len_utf8()])
            .collect()
    } else {
        s.split(sep).collect()
    }
}

/// Characters systemd (and go-systemd's `unit` package) leave unescaped.
fn systemd_allowed(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b':' | b'_' | b'.')
}

/// `systemd-escape [--path]` as implemented by go-systemd's `unit` package,
/// which Warewulf uses: byte-wise, `\x%x` escapes (lowercase, no padding),
/// a leading `.` escaped, `/` → `-`; in path mode runs of `/` collapse and
/// leading/trailing ones are dropped, and the empty result is `-`.
pub(crate) fn systemd_escape(s: &str, path: bool) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_slashes = false;
    let mut start = true;
    for &c in s.as_bytes() {
        if path {
            if c == b'/' {
                in_slashes = true;
                continue;
            } else if in_slashes {
                in_slashes = false;
                if !start {
                    out.push('-');
                }
            }
        }
        if c == b'/' {
            out.push('-');
        } else if (start && c == b'.') || !systemd_allowed(c) {
            out.push_str(&format!("\\x{c:x}"));
        } else {
            out.push(char::from(c));
        }
        start = false;
    }
    if path && out.is_empty() {
        out.push('-');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_escape_examples() {
        assert_eq!(
            systemd_escape("/var/lib/foo-bar", true),
            "var-lib-foo\\x2dbar"
        );
        assert_eq!(systemd_escape("/", true), "-");
        assert_eq!(systemd_escape("//a//b/", true), "a-b");
        assert_eq!(systemd_escape("/.hidden", true), "\\x2ehidden");
        assert_eq!(systemd_escape("a b/c", false), "a\\x20b-c");
        assert_eq!(systemd_escape("\t", false), "\\x9");
        assert_eq!(systemd_escape("ü", false), "\\xc3\\xbc");
    }

    #[test]
    fn unique_field_keeps_first() {
        let got = unique_field(":", 0, "root:x\nbin:y\nroot:z\n\nbin").expect("valid index");
        assert_eq!(got, "root:x\nbin:y\n");
        assert!(unique_field(":", -1, "a").is_err());
    }

    #[test]
    fn scan_lines_like_go() {
        let v: Vec<&str> = scan_lines("a\r\nb\n").collect();
        assert_eq!(v, ["a", "b"]);
        assert_eq!(scan_lines("").count(), 0);
        let v: Vec<&str> = scan_lines("\n").collect();
        assert_eq!(v, [""]);
    }
}
