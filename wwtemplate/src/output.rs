//! Turning a rendered buffer into output files: [`Rendered`] and [`Output`].
//!
//! Warewulf renders a template into one buffer and then scans it line by
//! line (lines keep their `\n`) for the markers left by `file` and
//! `softlink`; this module repeats that scan, quirks included:
//! - a line holding a marker is dropped whole, text around the marker too;
//! - a `softlink` line wins over a `file` marker on the same line;
//! - text before the first `file` marker is not a file of its own: it stays
//!   in the buffer and opens the first named file;
//! - after a `softlink` the buffer is neither written nor cleared, so its
//!   text carries on into the next `file`;
//! - `abort` anywhere discards every output.

use std::path::PathBuf;
use std::sync::LazyLock;

use regex::Regex;

/// What the caller must create for one output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputKind {
    /// A regular file with [`Output::content`].
    Normal,
    /// A symlink pointing at the target (content is empty).
    Symlink(String),
    /// `abort` was called: write nothing for this template.
    Abort,
}

/// One file produced by a template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// `None`: the template's own target (its path minus `.ww`). `Some(name)`:
    /// from `file NAME`; Warewulf writes it at `NAME` when absolute, else
    /// at `path.Join(dir(template target), NAME)`.
    pub name: Option<String>,
    /// Bytes of a [`OutputKind::Normal`] file.
    pub content: Vec<u8>,
    /// Regular file, symlink or abort.
    pub kind: OutputKind,
    /// Keep a `.wwbackup` of an existing target (false after `nobackup`).
    pub backup: bool,
}

/// The result of one render: outputs in the order Warewulf writes them (a
/// later output for the same name replaces an earlier one) and the host files
/// the render read, which belong in the output's content hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub outputs: Vec<Output>,
    pub files_read: Vec<PathBuf>,
}

impl Rendered {
    /// True when the template called `abort`.
    pub fn aborted(&self) -> bool {
        self.outputs.iter().any(|o| o.kind == OutputKind::Abort)
    }
}

static FILE_MARKER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#".*\{\{\s*/\*\s*file\s*["'](.*)["']\s*\*/\s*\}\}.*"#)
        .expect("constant regex is valid")
});

static LINK_MARKER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#".*\{\{\s*/\*\s*softlink\s*["'](.*)["']\s*\*/\s*\}\}.*"#)
        .expect("constant regex is valid")
});

/// Lines of `text`, each with its `\n`; a final unterminated line counts.
fn lines_with_breaks(text: &str) -> impl Iterator<Item = &str> {
    text.split_inclusive('\n')
}

fn capture<'a>(re: &Regex, line: &'a str) -> Option<&'a str> {
    re.captures(line).and_then(|c| c.get(1)).map(|m| m.as_str())
}

/// Splits a rendered buffer into outputs the way Warewulf does.
pub(crate) fn split(text: &str, write_file: bool, backup: bool) -> Vec<Output> {
    if !write_file {
        return vec![Output {
            name: None,
            content: Vec::new(),
            kind: OutputKind::Abort,
            backup,
        }];
    }
    // Fast path: no marker can be present.
    if !text.contains("/*") {
        return vec![Output {
            name: None,
            content: text.as_bytes().to_vec(),
            kind: OutputKind::Normal,
            backup,
        }];
    }
    let mut outputs = Vec::new();
    let mut name: Option<String> = None;
    let mut buffer = String::new();
    let mut named = false;
    let mut is_link = false;
    for line in lines_with_breaks(text) {
        if let Some(target) = capture(&LINK_MARKER, line) {
            outputs.push(Output {
                name: name.clone(),
                content: Vec::new(),
                kind: OutputKind::Symlink(target.to_string()),
                backup,
            });
            is_link = true;
        } else if let Some(file) = capture(&FILE_MARKER, line) {
            if named && !is_link {
                outputs.push(Output {
                    name: name.clone(),
                    content: std::mem::take(&mut buffer).into_bytes(),
                    kind: OutputKind::Normal,
                    backup,
                });
            }
            name = Some(file.to_string());
            named = true;
            is_link = false;
        } else {
            buffer.push_str(line);
        }
    }
    if !is_link {
        outputs.push(Output {
            name,
            content: buffer.into_bytes(),
            kind: OutputKind::Normal,
            backup,
        });
    }
    outputs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(outs: &[Output]) -> Vec<(Option<&str>, &str)> {
        outs.iter()
            .map(|o| {
                (
                    o.name.as_deref(),
                    std::str::from_utf8(&o.content).unwrap_or("<bin>"),
                )
            })
            .collect()
    }

    #[test]
    fn preamble_opens_first_file() {
        let outs = split(
            "pre\n{{ /* file \"a\" */ }}\nA\n{{ /* file \"b\" */ }}\nB",
            true,
            true,
        );
        assert_eq!(names(&outs), [(Some("a"), "pre\nA\n"), (Some("b"), "B")]);
    }

    #[test]
    fn no_marker_is_own_target() {
        let outs = split("x\n", true, false);
        assert_eq!(names(&outs), [(None, "x\n")]);
        assert!(!outs[0].backup);
    }
}
