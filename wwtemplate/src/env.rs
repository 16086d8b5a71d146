//! Where templates read files from: [`RenderEnv`] and [`ImageResolver`].
//!
//! `Include`, `IncludeBlock`, `readlink` and `ImportLink` read the head's
//! filesystem below [`RenderEnv::root`] (default `/`, so paths mean what they
//! mean to Warewulf; a test points it at a temporary folder). Relative
//! `Include` paths are relative to `<sysconfdir>/warewulf`, as in Warewulf.
//! `IncludeFrom IMAGE PATH` asks the [`ImageResolver`] for the image's rootfs.
//! The module also holds the small Go path helpers those functions need
//! (`path.Clean`, `path.Join`, `path.Base`, `filepath.EvalSymlinks`).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::value::Value;

/// Maps an image name to its rootfs folder on the head.
pub trait ImageResolver: Send + Sync {
    /// The rootfs of `image`, or `None` when no such image exists.
    fn rootfs(&self, image: &str) -> Option<PathBuf>;
}

impl<F> ImageResolver for F
where
    F: Fn(&str) -> Option<PathBuf> + Send + Sync,
{
    fn rootfs(&self, image: &str) -> Option<PathBuf> {
        self(image)
    }
}

/// Computes `IgnitionJson` from the template's root data (`$`).
pub type IgnitionFn = dyn Fn(&Value) -> String + Send + Sync;

/// Everything a render needs from outside the data: file roots and resolvers.
///
/// Cheap to clone; build one per site and share it across renders.
#[derive(Clone)]
pub struct RenderEnv {
    pub(crate) root: PathBuf,
    pub(crate) sysconfdir: String,
    pub(crate) images: Option<Arc<dyn ImageResolver>>,
    pub(crate) ignition: Option<Arc<IgnitionFn>>,
}

impl fmt::Debug for RenderEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RenderEnv")
            .field("root", &self.root)
            .field("sysconfdir", &self.sysconfdir)
            .field("images", &self.images.is_some())
            .field("ignition", &self.ignition.is_some())
            .finish()
    }
}

impl Default for RenderEnv {
    fn default() -> Self {
        RenderEnv {
            root: PathBuf::from("/"),
            sysconfdir: "/etc".to_string(),
            images: None,
            ignition: None,
        }
    }
}

impl RenderEnv {
    /// Root `/`, sysconfdir `/etc`, no images, empty `IgnitionJson`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Folder that template paths such as `/etc/hosts` are resolved under.
    #[must_use]
    pub fn with_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.root = root.into();
        self
    }

    /// Warewulf's `Paths.Sysconfdir` (as seen by templates, below the root).
    #[must_use]
    pub fn with_sysconfdir(mut self, sysconfdir: impl Into<String>) -> Self {
        self.sysconfdir = sysconfdir.into();
        self
    }

    /// Resolver for `IncludeFrom`; without one every `IncludeFrom` yields "".
    #[must_use]
    pub fn with_images(mut self, resolver: impl ImageResolver + 'static) -> Self {
        self.images = Some(Arc::new(resolver));
        self
    }

    /// Producer of `IgnitionJson` (Warewulf builds it from the node's disks).
    #[must_use]
    pub fn with_ignition(mut self, f: impl Fn(&Value) -> String + Send + Sync + 'static) -> Self {
        self.ignition = Some(Arc::new(f));
        self
    }

    /// The configured root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Host path of a template-visible absolute path (cleaned, kept below root).
    pub(crate) fn host_path(&self, template_path: &str) -> PathBuf {
        let clean = go_clean(&format!("/{template_path}"));
        let rel = clean.trim_start_matches('/');
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }

    /// Template-visible path of an `Include` argument (Warewulf's rule for
    /// relative paths: below `<sysconfdir>/warewulf`).
    pub(crate) fn include_path(&self, inc: &str) -> String {
        if inc.starts_with('/') {
            inc.to_string()
        } else {
            go_join(&[&self.sysconfdir, "warewulf", inc])
        }
    }
}

/// Go's `path.Clean`: lexical cleanup of a slash-separated path.
pub(crate) fn go_clean(p: &str) -> String {
    if p.is_empty() {
        return ".".to_string();
    }
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for comp in p.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            c => parts.push(c),
        }
    }
    let body = parts.join("/");
    match (rooted, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".to_string(),
        (false, false) => body,
    }
}

/// Go's `path.Join`: joins non-empty elements with `/` and cleans.
pub(crate) fn go_join(elems: &[&str]) -> String {
    let nonempty: Vec<&str> = elems.iter().copied().filter(|e| !e.is_empty()).collect();
    if nonempty.is_empty() {
        return String::new();
    }
    go_clean(&nonempty.join("/"))
}

/// Go's `path.Base`: last element, trailing slashes removed; `.` for "".
pub(crate) fn go_base(p: &str) -> String {
    if p.is_empty() {
        return ".".to_string();
    }
    let trimmed = p.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/".to_string();
    }
    match trimmed.rfind('/') {
        Some(i) => trimmed[i + 1..].to_string(),
        None => trimmed.to_string(),
    }
}

/// Most symlinks followed by one resolution (Linux's limit is 40; Go's 255).
const MAX_LINKS: usize = 255;

/// Go's `filepath.EvalSymlinks`, confined to `env.root`: every component is
/// resolved, absolute link targets restart at the root. Relative input paths
/// are taken relative to `/`. Fails like Go when a component is missing.
pub(crate) fn eval_symlinks(env: &RenderEnv, path: &str) -> io::Result<String> {
    let mut pending: Vec<String> = path
        .split('/')
        .rev()
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect();
    let mut resolved: Vec<String> = Vec::new();
    let mut links = 0usize;
    while let Some(comp) = pending.pop() {
        match comp.as_str() {
            "." => continue,
            ".." => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        resolved.push(comp);
        let host = env.host_path(&resolved.join("/"));
        let meta = std::fs::symlink_metadata(&host).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("lstat /{}: {}", resolved.join("/"), go_io_message(&e)),
            )
        })?;
        if meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_LINKS {
                return Err(io::Error::other("EvalSymlinks: too many links"));
            }
            let target = std::fs::read_link(&host)?;
            let target = target.to_string_lossy().into_owned();
            resolved.pop();
            if target.starts_with('/') {
                resolved.clear();
            }
            pending.extend(
                target
                    .split('/')
                    .rev()
                    .filter(|c| !c.is_empty())
                    .map(str::to_string),
            );
        }
    }
    Ok(format!("/{}", resolved.join("/")))
}

/// Go's wording of common I/O errors (`no such file or directory`, ...).
pub(crate) fn go_io_message(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file or directory".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => {
            let s = e.to_string();
            // std appends " (os error N)"; Go does not.
            match s.find(" (os error") {
                Some(i) => s[..i].to_lowercase(),
                None => s,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_matches_go() {
        for (input, want) in [
            ("", "."),
            ("/", "/"),
            ("a/b/../c", "a/c"),
            ("/../a", "/a"),
            ("../a", "../a"),
            ("a//b/./", "a/b"),
        ] {
            assert_eq!(go_clean(input), want, "{input}");
        }
    }

    #[test]
    fn base_matches_go() {
        for (input, want) in [("", "."), ("/", "/"), ("/a/b/", "b"), ("x", "x")] {
            assert_eq!(go_base(input), want, "{input}");
        }
    }

    #[test]
    fn include_path_relative_to_sysconfdir() {
        let env = RenderEnv::new();
        assert_eq!(env.include_path("x/y"), "/etc/warewulf/x/y");
        assert_eq!(env.include_path("/a"), "/a");
        let env = RenderEnv::new().with_root("/tmp/r");
        assert_eq!(env.host_path("/a/../b"), PathBuf::from("/tmp/r/b"));
    }
}
