//! `warewulf.conf`: the head's site configuration, in Warewulf's format.
//!
//! Only the `paths:` section is modelled so far; the rest of the file is
//! accepted and ignored until the modules that need it arrive.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

/// Where `warewulf.conf` lives unless `--warewulfconf` or `WAREWULFCONF` says otherwise.
pub const DEFAULT_CONF: &str = "/etc/warewulf/warewulf.conf";

/// Every directory Ironwulf touches derives from these.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Paths {
    pub sysconfdir: PathBuf,
    pub localstatedir: PathBuf,
    pub datadir: PathBuf,
    pub wwoverlaydir: PathBuf,
    pub wwchrootdir: PathBuf,
    pub wwprovisiondir: PathBuf,
    pub wwclientdir: PathBuf,
    pub ipxesource: PathBuf,
    pub cachedir: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Self {
            sysconfdir: "/etc".into(),
            localstatedir: "/var/lib".into(),
            datadir: "/usr/share".into(),
            wwoverlaydir: "/var/lib/warewulf/overlays".into(),
            wwchrootdir: "/var/lib/warewulf/chroots".into(),
            wwprovisiondir: "/var/lib/warewulf/provision".into(),
            wwclientdir: "/warewulf".into(),
            ipxesource: "/usr/share/ipxe".into(),
            cachedir: "/var/cache".into(),
        }
    }
}

/// The parsed `warewulf.conf`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Config {
    pub paths: Paths,
}

impl Config {
    /// Reads `path`; a missing file gives the defaults.
    pub fn load(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_norway::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}
