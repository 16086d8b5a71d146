//! `<name>.manifest.json`: what was built from an image tree, so that the
//! server can label artifacts (`ETag` = sha256) and a rebuild of an unchanged
//! tree can be skipped without reading a single file.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::fsutil;

/// Bumped whenever the archive layout changes, so old builds are redone.
pub const FORMAT: u32 = 1;

/// One built archive of an image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// `gz`, `zst`, …: the file name extension.
    pub compression: String,
    /// File name inside the images directory.
    pub file: String,
    pub size: u64,
    pub sha256: String,
}

/// The record of the last successful build of one image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageManifest {
    pub format: u32,
    pub name: String,
    /// Hash of the tree's metadata (paths, sizes, modes, owners, mtimes) and
    /// the build options; equal fingerprints mean an identical archive.
    pub fingerprint: String,
    pub entries: u64,
    /// Sum of the regular files' sizes in the tree.
    pub tree_bytes: u64,
    pub kernel_version: Option<String>,
    pub kernel_path: Option<String>,
    /// Seconds since the Unix epoch.
    pub built_at: u64,
    /// Seconds the build took.
    pub build_seconds: f64,
    pub artifacts: Vec<Artifact>,
}

impl ImageManifest {
    /// Reads a manifest; `Ok(None)` when there is none or it is from an
    /// older format (which simply means "rebuild").
    pub fn load(path: &Path) -> Result<Option<Self>> {
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        match serde_json::from_slice::<Self>(&text) {
            Ok(m) if m.format == FORMAT => Ok(Some(m)),
            Ok(_) => Ok(None),
            Err(e) => {
                tracing::warn!("ignoring unreadable manifest {}: {e}", path.display());
                Ok(None)
            }
        }
    }

    /// Writes the manifest atomically.
    pub fn store(&self, path: &Path) -> Result<()> {
        let mut text = serde_json::to_vec_pretty(self).context("encoding the image manifest")?;
        text.push(b'\n');
        fsutil::write_atomic(path, &text, 0o644)
    }

    /// The artifact built with `compression` (by extension), if any.
    pub fn artifact(&self, compression: &str) -> Option<&Artifact> {
        self.artifacts.iter().find(|a| a.compression == compression)
    }
}
