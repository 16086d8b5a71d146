//! Finds the Linux kernel that QEMU tests boot.
//!
//! Order: `IRONWULF_KERNEL` (amd64 only), then the newest
//! `boot/vmlinuz-*` that `scripts/fetch-kernel.sh <arch>` unpacked under
//! `${IRONWULF_CACHE:-/var/cache/ironwulf}/kernel/<arch>/`. A missing kernel is
//! an error telling how to fetch one; tests must not skip silently.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Environment variable naming an amd64 kernel image to boot.
pub const KERNEL_ENV: &str = "IRONWULF_KERNEL";
/// Environment variable overriding the cache root of downloaded test inputs.
pub const CACHE_ENV: &str = "IRONWULF_CACHE";
/// Cache root when `IRONWULF_CACHE` is not set.
pub const DEFAULT_CACHE: &str = "/var/cache/ironwulf";

/// A guest CPU architecture, named as Debian names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// x86-64, booted with `qemu-system-x86_64`.
    Amd64,
    /// AArch64, booted with `qemu-system-aarch64 -M virt`.
    Arm64,
}

impl Arch {
    /// Debian's name for the architecture (`amd64`, `arm64`).
    pub fn debian_name(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
}

/// A kernel image on disk.
#[derive(Debug, Clone)]
pub struct Kernel {
    path: PathBuf,
    arch: Arch,
}

impl Kernel {
    /// Finds the kernel for `arch`, or fails saying how to get one.
    pub fn locate(arch: Arch) -> Result<Self> {
        if let (Arch::Amd64, Some(path)) = (arch, std::env::var_os(KERNEL_ENV)) {
            let path = PathBuf::from(path);
            if !path.is_file() {
                bail!("{KERNEL_ENV}={} is not a file", path.display());
            }
            return Ok(Self { path, arch });
        }
        let dir = cache_dir()
            .join("kernel")
            .join(arch.debian_name())
            .join("boot");
        match newest_vmlinuz(&dir)? {
            Some(path) => Ok(Self { path, arch }),
            None => bail!(
                "no {arch} kernel for QEMU tests in {dir}: run `scripts/fetch-kernel.sh {arch}` \
                 (or set {KERNEL_ENV}; {skip}=1 skips QEMU tests)",
                arch = arch.debian_name(),
                dir = dir.display(),
                skip = crate::optout::SKIP_ENV,
            ),
        }
    }

    /// Path of the kernel image.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Architecture the kernel was located for.
    pub fn arch(&self) -> Arch {
        self.arch
    }
}

/// `${IRONWULF_CACHE:-/var/cache/ironwulf}`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os(CACHE_ENV)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_CACHE), PathBuf::from)
}

/// The `vmlinuz-*` in `dir` with the highest version, if any.
fn newest_vmlinuz(dir: &Path) -> Result<Option<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).with_context(|| format!("reading {}", dir.display())),
    };
    let mut best: Option<(String, PathBuf)> = None;
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("vmlinuz-") || !entry.path().is_file() {
            continue;
        }
        if best
            .as_ref()
            .is_none_or(|(b, _)| version_cmp(&name, b) == Ordering::Greater)
        {
            best = Some((name, entry.path()));
        }
    }
    Ok(best.map(|(_, path)| path))
}

/// Compares two names like `sort -V`: digit runs numerically, the rest as text.
fn version_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let na = trim_zeros(&a[..da]);
                let nb = trim_zeros(&b[..db]);
                let ord = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[da..];
                b = &b[db..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|&&c| c == b'0').count();
    &digits[zeros..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(
            version_cmp("vmlinuz-6.1.0-9-amd64", "vmlinuz-6.1.0-56-amd64"),
            Ordering::Less
        );
        assert_eq!(
            version_cmp("vmlinuz-6.10.0", "vmlinuz-6.9.0"),
            Ordering::Greater
        );
        assert_eq!(version_cmp("vmlinuz-6.1", "vmlinuz-6.1"), Ordering::Equal);
    }

    #[test]
    fn newest_vmlinuz_picks_highest_and_ignores_others() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "vmlinuz-6.1.0-9-amd64",
            "vmlinuz-6.1.0-56-amd64",
            "config-6.1.0-99-amd64",
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let got = newest_vmlinuz(dir.path()).unwrap().unwrap();
        assert!(got.ends_with("vmlinuz-6.1.0-56-amd64"), "{}", got.display());
        assert!(
            newest_vmlinuz(&dir.path().join("missing"))
                .unwrap()
                .is_none()
        );
    }
}
