//! Locates the binaries that guests run, building them when missing.
//!
//! The static `test-init` lives at
//! `<target>/x86_64-unknown-linux-musl/release/test-init`, where `<target>` is
//! `CARGO_TARGET_DIR` or `<workspace>/target`. When it is missing or older than
//! its sources, it is built with the same cargo that runs the tests, so
//! `cargo test` alone works on a fresh checkout.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

use anyhow::{Context, Result, anyhow, bail};

/// Rust target triple of the static guest binaries.
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";
/// Rust target triple of static arm64 guest binaries.
pub const ARM64_MUSL_TARGET: &str = "aarch64-unknown-linux-musl";

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.to_path_buf(), Path::to_path_buf)
}

/// `CARGO_TARGET_DIR` if set, else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// Path of the static `test-init`, built first if missing or stale.
///
/// Built at most once per test process; concurrent test processes serialise on
/// cargo's own build lock.
pub fn test_init() -> Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| ensure_test_init().map_err(|err| format!("{err:#}")))
        .clone()
        .map_err(|msg| anyhow!(msg))
}

fn ensure_test_init() -> Result<PathBuf> {
    ensure_static("test-init", "test-init", &["qemu-tests/test-init"])
}

/// Path of the static `wwclient` (package `agent`), built first if missing
/// or older than its sources.
pub fn wwclient() -> Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            ensure_static("agent", "wwclient", &["agent", "initramfs", "proto"])
                .map_err(|err| format!("{err:#}"))
        })
        .clone()
        .map_err(|msg| anyhow!(msg))
}

/// Path of the static `wwinit` (the node's PID 1), built first if missing
/// or older than its sources.
pub fn wwinit() -> Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            ensure_static("wwinit", "wwinit", &["wwinit", "initramfs", "proto"])
                .map_err(|err| format!("{err:#}"))
        })
        .clone()
        .map_err(|msg| anyhow!(msg))
}

/// Path of the static arm64 `wwinit` (Raspberry Pi and arm64 servers),
/// built first if missing or stale, as docs/wwinit.md describes: the C parts
/// (zstd, xz) with `aarch64-linux-gnu-gcc`, linked by `rust-lld`.
pub fn wwinit_arm64() -> Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            ensure_static_for(
                ARM64_MUSL_TARGET,
                &[
                    ("CC_aarch64_unknown_linux_musl", "aarch64-linux-gnu-gcc"),
                    ("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER", "rust-lld"),
                ],
                "wwinit",
                "wwinit",
                &["wwinit", "initramfs", "proto"],
            )
            .map_err(|err| format!("{err:#}"))
        })
        .clone()
        .map_err(|msg| anyhow!(msg))
}

/// Builds `bin` of `package` for [`MUSL_TARGET`] unless it is newer than
/// every file under the workspace folders `sources` (its crate and the
/// workspace crates it depends on).
fn ensure_static(package: &str, bin: &str, sources: &[&str]) -> Result<PathBuf> {
    ensure_static_for(MUSL_TARGET, &[], package, bin, sources)
}

/// [`ensure_static`] for any `target`, with `env` set for cargo.
fn ensure_static_for(
    target: &str,
    env: &[(&str, &str)],
    package: &str,
    bin: &str,
    sources: &[&str],
) -> Result<PathBuf> {
    let binary = target_dir().join(target).join("release").join(bin);
    let mut fresh = true;
    for dir in sources {
        fresh &= is_fresh(&binary, &workspace_root().join(dir))?;
    }
    if fresh {
        return Ok(binary);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "-p",
            package,
            "--bin",
            bin,
            "--target",
            target,
        ])
        .envs(env.iter().copied())
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("running {} build -p {package}", cargo.to_string_lossy()))?;
    if !status.success() {
        bail!(
            "building {bin} failed ({status}); try `rustup target add {target}` and \
             `cargo build --release -p {package} --target {target}`"
        );
    }
    if !binary.is_file() {
        bail!("cargo built {bin} but {} does not exist", binary.display());
    }
    Ok(binary)
}

/// Whether `binary` exists and is newer than every file under `sources`.
fn is_fresh(binary: &Path, sources: &Path) -> Result<bool> {
    let built = match std::fs::metadata(binary) {
        Ok(meta) => meta.modified().context("reading test-init mtime")?,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(err).with_context(|| format!("reading {}", binary.display())),
    };
    Ok(newest_mtime(sources)? <= built)
}

/// The newest modification time of any file under `dir`.
fn newest_mtime(dir: &Path) -> Result<SystemTime> {
    let mut newest = SystemTime::UNIX_EPOCH;
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let meta = entry
            .metadata()
            .with_context(|| format!("stat {}", entry.path().display()))?;
        let time = if meta.is_dir() {
            newest_mtime(&entry.path())?
        } else {
            meta.modified()
                .with_context(|| format!("mtime of {}", entry.path().display()))?
        };
        newest = newest.max(time);
    }
    Ok(newest)
}
