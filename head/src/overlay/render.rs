//! One overlay, read and parsed once per run, rendered for nodes.
//!
//! [`Prepared::load`] scans an overlay's rootfs, reads every plain file and
//! parses every `.ww` template (a parse error is kept and reported for every
//! node that uses the overlay). [`Prepared::render_template`] turns one
//! template into [`RenderedFile`]s the way Warewulf writes them: the output
//! drops `.ww`, `file NAME` starts another output (absolute, or next to the
//! template), `softlink` makes a symlink, `abort` writes nothing; outputs keep
//! the template's mode and owner.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wwtemplate::{OutputKind, RenderEnv, Template, Value};

use super::allnodes::Reach;
use super::deps::{self, Refs};
use super::store::{self, EntryKind, OverlayDir};

/// What one output is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileKind {
    Dir,
    File(Arc<[u8]>),
    Symlink(String),
}

/// One file of a rendered overlay, at `path` (relative, no leading `/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderedFile {
    pub path: String,
    pub kind: FileKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// A parsed template of an overlay.
#[derive(Debug)]
pub struct TemplateFile {
    /// Source path relative to the rootfs (`etc/hosts.ww`).
    pub source: String,
    /// Output path (`etc/hosts`).
    pub target: String,
    /// Host path of the source (`BuildSource`).
    pub host_path: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// The parsed template or its parse error.
    pub parsed: Result<Template, String>,
    /// Data the template can reach.
    pub refs: Refs,
    /// What it reaches of other nodes, when it reads `AllNodes`.
    pub all_nodes: Option<Reach>,
    /// Digest of the source.
    pub digest: [u8; 32],
}

/// An overlay read and parsed for one run.
#[derive(Debug)]
pub struct Prepared {
    pub dir: OverlayDir,
    /// Directories, plain files and symlinks, copied as they are.
    pub statics: Vec<RenderedFile>,
    pub templates: Vec<TemplateFile>,
    /// Digest of everything above (paths, modes, owners, contents).
    pub digest: [u8; 32],
}

impl Prepared {
    /// Reads and parses overlay `dir`.
    pub fn load(dir: OverlayDir) -> Result<Prepared, String> {
        let entries = store::scan(&dir.rootfs).map_err(|e| {
            format!(
                "overlay {}: reading {}: {e}",
                dir.name,
                dir.rootfs.display()
            )
        })?;
        let mut statics = Vec::new();
        let mut templates = Vec::new();
        let mut h = Sha256::new();
        for e in entries {
            h.update(e.path.as_bytes());
            h.update([0]);
            h.update(e.mode.to_le_bytes());
            h.update(e.uid.to_le_bytes());
            h.update(e.gid.to_le_bytes());
            let host = dir.rootfs.join(&e.path);
            let kind = match e.kind {
                EntryKind::Dir => {
                    h.update(b"d");
                    FileKind::Dir
                }
                EntryKind::Symlink(t) => {
                    h.update(b"l");
                    h.update(t.as_bytes());
                    FileKind::Symlink(t)
                }
                EntryKind::File => {
                    let data = std::fs::read(&host).map_err(|err| {
                        format!("overlay {}: reading {}: {err}", dir.name, e.path)
                    })?;
                    h.update(b"f");
                    h.update((data.len() as u64).to_le_bytes());
                    h.update(&data);
                    if let Some(target) = e.path.strip_suffix(".ww") {
                        let text = String::from_utf8_lossy(&data);
                        let name = Path::new(&e.path)
                            .file_name()
                            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
                        let parsed = Template::parse(&name, &text).map_err(|err| err.to_string());
                        let refs = deps::scan(&text);
                        templates.push(TemplateFile {
                            source: e.path.clone(),
                            target: target.to_string(),
                            host_path: host.to_string_lossy().into_owned(),
                            mode: e.mode,
                            uid: e.uid,
                            gid: e.gid,
                            all_nodes: refs.uses_all_nodes().then(|| {
                                let mut r = Reach::default();
                                r.add_template(&text);
                                r
                            }),
                            refs,
                            digest: Sha256::digest(&data).into(),
                            parsed,
                        });
                        continue;
                    }
                    FileKind::File(data.into())
                }
            };
            statics.push(RenderedFile {
                path: e.path,
                kind,
                mode: e.mode,
                uid: e.uid,
                gid: e.gid,
            });
        }
        Ok(Prepared {
            dir,
            statics,
            templates,
            digest: h.finalize().into(),
        })
    }

    /// Renders template `t` with `data`; errors name overlay, file and position.
    pub fn render_template(
        &self,
        t: &TemplateFile,
        data: &Value,
        env: &RenderEnv,
    ) -> Result<(Vec<RenderedFile>, Vec<PathBuf>), String> {
        let tmpl = t
            .parsed
            .as_ref()
            .map_err(|e| format!("overlay {}: {}: {e}", self.dir.name, t.source))?;
        let rendered = tmpl
            .render(data, env)
            .map_err(|e| format!("overlay {}: {}: {e}", self.dir.name, t.source))?;
        if rendered.aborted() {
            return Ok((Vec::new(), rendered.files_read));
        }
        let parent = match t.target.rfind('/') {
            Some(i) => &t.target[..i],
            None => "",
        };
        let mut out = Vec::new();
        for o in rendered.outputs {
            let path = match &o.name {
                None => t.target.clone(),
                Some(n) if n.starts_with('/') => clean(n),
                Some(n) => clean(&format!("{parent}/{n}")),
            };
            if path.is_empty() {
                continue;
            }
            let kind = match o.kind {
                OutputKind::Normal => FileKind::File(o.content.into()),
                OutputKind::Symlink(target) => FileKind::Symlink(target),
                OutputKind::Abort => continue,
            };
            out.push(RenderedFile {
                path,
                kind,
                mode: t.mode,
                uid: t.uid,
                gid: t.gid,
            });
        }
        Ok((out, rendered.files_read))
    }
}

/// Lexical clean of a slash path, without the leading `/` (`..` cannot escape).
fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

/// Adds `files` to `tree`, later entries replacing earlier ones of the same path.
pub fn merge_into(
    tree: &mut BTreeMap<String, RenderedFile>,
    files: impl IntoIterator<Item = RenderedFile>,
) {
    for f in files {
        tree.insert(f.path.clone(), f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_keeps_inside() {
        assert_eq!(clean("/etc/../x//y/./z"), "x/y/z");
        assert_eq!(clean("../../a"), "a");
    }
}
