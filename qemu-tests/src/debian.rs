//! The node images that `scripts/build-debian-image.sh` builds once and
//! caches: Debian 12 minbase + systemd + openssh-server + Debian's kernel and
//! the modules a QEMU node needs ([`rootfs`]), and a small arm64 tree of
//! Debian's busybox-static and arm64 kernel ([`arm64_rootfs`]).

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::kernel::cache_dir;

/// `<cache>/images/debian-bookworm-amd64/rootfs`, or an error saying how to
/// build it (tests never skip silently).
pub fn rootfs() -> Result<PathBuf> {
    cached("debian-bookworm-amd64", "")
}

/// `<cache>/images/busybox-arm64/rootfs`, or an error saying how to build it.
pub fn arm64_rootfs() -> Result<PathBuf> {
    cached("busybox-arm64", " arm64")
}

fn cached(name: &str, arg: &str) -> Result<PathBuf> {
    let dir = cache_dir().join("images").join(name);
    let rootfs = dir.join("rootfs");
    if !dir.join("stamp").is_file() || !rootfs.join("sbin/init").exists() {
        bail!(
            "no node image in {}: run `scripts/build-debian-image.sh{arg}` (root, debootstrap; \
             {skip}=1 skips QEMU tests)",
            rootfs.display(),
            skip = crate::optout::SKIP_ENV,
        );
    }
    Ok(rootfs)
}
