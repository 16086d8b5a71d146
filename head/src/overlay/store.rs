//! Where overlays live and what they hold.
//!
//! Shipped overlays sit in `<datadir>/warewulf/overlays/<name>/rootfs` (or
//! `$IRONWULF_DIST_OVERLAYS/<name>/rootfs` for development and tests); site
//! overlays in `<wwoverlaydir>/<name>/rootfs`. A site overlay shadows the
//! shipped one of the same name as a whole, as in Warewulf 4.6. Shipped
//! overlays are read-only: commands that modify one first copy it to the site
//! directory ([`OverlayStore::writable`]).

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::config::Paths;

/// Environment variable naming a folder of shipped overlays (the repo's `overlays/`).
pub const DIST_ENV: &str = "IRONWULF_DIST_OVERLAYS";

/// The two overlay folders of a site.
#[derive(Clone, Debug)]
pub struct OverlayStore {
    dist: PathBuf,
    site: PathBuf,
}

/// One overlay found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverlayDir {
    pub name: String,
    /// The overlay's `rootfs` folder.
    pub rootfs: PathBuf,
    /// True for a shipped (read-only) overlay.
    pub shipped: bool,
}

/// Kind of an overlay tree entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File,
    Symlink(String),
}

/// One entry of an overlay tree, relative to its rootfs (no leading `/`).
#[derive(Clone, Debug)]
pub struct TreeEntry {
    pub path: String,
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl OverlayStore {
    pub fn new(paths: &Paths) -> Self {
        let dist = std::env::var_os(DIST_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| paths.datadir.join("warewulf").join("overlays"));
        Self {
            dist,
            site: paths.wwoverlaydir.clone(),
        }
    }

    /// The site overlay folder.
    pub fn site_dir(&self) -> &Path {
        &self.site
    }

    /// Finds overlay `name`, site first.
    pub fn find(&self, name: &str) -> Option<OverlayDir> {
        if validate_name(name).is_err() {
            return None;
        }
        for (base, shipped) in [(&self.site, false), (&self.dist, true)] {
            let rootfs = base.join(name).join("rootfs");
            if rootfs.is_dir() {
                return Some(OverlayDir {
                    name: name.to_string(),
                    rootfs,
                    shipped,
                });
            }
        }
        None
    }

    /// Finds overlay `name` or fails naming it.
    pub fn require(&self, name: &str) -> Result<OverlayDir> {
        validate_name(name)?;
        self.find(name)
            .with_context(|| format!("overlay {name} does not exist"))
    }

    /// Every overlay, site ones shadowing shipped ones, sorted by name.
    pub fn list(&self) -> Result<Vec<OverlayDir>> {
        let mut names = std::collections::BTreeSet::new();
        for base in [&self.site, &self.dist] {
            let rd = match fs::read_dir(base) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("reading {}", base.display())),
            };
            for entry in rd {
                let entry = entry.with_context(|| format!("reading {}", base.display()))?;
                if entry.path().join("rootfs").is_dir() {
                    names.insert(entry.file_name().to_string_lossy().into_owned());
                }
            }
        }
        Ok(names.iter().filter_map(|n| self.find(n)).collect())
    }

    /// The site copy of `name`, copying the shipped overlay there first if
    /// needed (Warewulf 4.6 does the same before changing a shipped overlay).
    pub fn writable(&self, name: &str) -> Result<OverlayDir> {
        let found = self.require(name)?;
        if !found.shipped {
            return Ok(found);
        }
        let dest = self.site.join(name).join("rootfs");
        copy_tree(&found.rootfs, &dest)
            .with_context(|| format!("copying shipped overlay {name} to {}", dest.display()))?;
        eprintln!(
            "copied shipped overlay {name} to {} before changing it",
            self.site.join(name).display()
        );
        Ok(OverlayDir {
            name: name.to_string(),
            rootfs: dest,
            shipped: false,
        })
    }

    /// Creates an empty site overlay.
    pub fn create(&self, name: &str) -> Result<OverlayDir> {
        validate_name(name)?;
        let dir = self.site.join(name);
        if dir.exists() {
            bail!("overlay {name} already exists in {}", self.site.display());
        }
        let rootfs = dir.join("rootfs");
        fs::create_dir_all(&rootfs).with_context(|| format!("creating {}", rootfs.display()))?;
        Ok(OverlayDir {
            name: name.to_string(),
            rootfs,
            shipped: false,
        })
    }
}

/// Overlay names: one path component, no leading dot.
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.starts_with('.')
        || name.contains('/')
        || name.chars().any(char::is_whitespace)
    {
        bail!("invalid overlay name {name:?}");
    }
    Ok(())
}

/// Joins a path given by an admin (`/etc/hosts.ww` or `etc/hosts.ww`) to a
/// rootfs, refusing `..`.
pub fn inside(rootfs: &Path, file: &str) -> Result<PathBuf> {
    let rel = Path::new(file.trim_start_matches('/'));
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        bail!("path {file:?} leaves the overlay");
    }
    Ok(rootfs.join(rel))
}

/// Walks a rootfs (lstat only), sorted by path; the root itself is left out.
pub fn scan(rootfs: &Path) -> io::Result<Vec<TreeEntry>> {
    let mut out = Vec::new();
    walk(rootfs, "", &mut out)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<TreeEntry>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let host = entry.path();
        let meta = fs::symlink_metadata(&host)?;
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_symlink() {
            EntryKind::Symlink(fs::read_link(&host)?.to_string_lossy().into_owned())
        } else if ft.is_file() {
            EntryKind::File
        } else {
            continue;
        };
        let is_dir = kind == EntryKind::Dir;
        out.push(TreeEntry {
            path: path.clone(),
            kind,
            mode: meta.permissions().mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
        });
        if is_dir {
            walk(&host, &path, out)?;
        }
    }
    Ok(())
}

/// Copies a tree keeping modes, owners (when permitted) and symlinks.
pub fn copy_tree(src: &Path, dest: &Path) -> io::Result<()> {
    fs::create_dir_all(dest)?;
    for e in scan(src)? {
        let from = src.join(&e.path);
        let to = dest.join(&e.path);
        match &e.kind {
            EntryKind::Dir => fs::create_dir_all(&to)?,
            EntryKind::File => {
                fs::copy(&from, &to)?;
            }
            EntryKind::Symlink(target) => std::os::unix::fs::symlink(target, &to)?,
        }
        if !matches!(e.kind, EntryKind::Symlink(_)) {
            fs::set_permissions(&to, fs::Permissions::from_mode(e.mode))?;
        }
        // Owners are kept where we may set them (root); else the copier owns them.
        let _ = std::os::unix::fs::lchown(&to, Some(e.uid), Some(e.gid));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_refuses_dotdot() {
        let root = Path::new("/r");
        assert_eq!(
            inside(root, "/etc/hosts.ww").unwrap(),
            PathBuf::from("/r/etc/hosts.ww")
        );
        assert!(inside(root, "../x").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name("ok.name").is_ok());
    }
}
