#!/usr/bin/env bash
# Fetch Debian's stock kernel for QEMU tests and print the path of its vmlinuz.
#
# Usage: scripts/fetch-kernel.sh [amd64|arm64]      (default: amd64)
#
# The kernel package (linux-image-<version>-<arch>, resolved through the
# linux-image-<arch> metapackage) is fetched with `apt-get download` and
# unpacked with `dpkg -x` into
#     ${IRONWULF_CACHE:-/var/cache/ironwulf}/kernel/<arch>/
# Nothing is installed on the host. A foreign architecture uses a private apt
# state directory under the cache, so the host's apt configuration is untouched.
# Idempotent: when a vmlinuz is already unpacked, it is printed and nothing is
# downloaded. Only the path goes to stdout; progress goes to stderr.
set -euo pipefail

arch="${1:-amd64}"
case "$arch" in
  amd64 | arm64) ;;
  *)
    echo "fetch-kernel: unsupported architecture '$arch' (use amd64 or arm64)" >&2
    exit 2
    ;;
esac

cache="${IRONWULF_CACHE:-/var/cache/ironwulf}"
dest="$cache/kernel/$arch"

log() { echo "fetch-kernel: $*" >&2; }

find_vmlinuz() {
  # Newest unpacked vmlinuz, if any.
  find "$dest/boot" -maxdepth 1 -name 'vmlinuz-*' -type f 2>/dev/null | sort -V | tail -n 1 || true
}

existing="$(find_vmlinuz)"
if [[ -n "$existing" ]]; then
  echo "$existing"
  exit 0
fi

mkdir -p "$dest"

host_arch="$(dpkg --print-architecture)"
apt_opts=()
if [[ "$arch" != "$host_arch" ]]; then
  # A private package list for the foreign architecture (see TESTBED.md).
  state="$cache/apt-$arch"
  mkdir -p "$state/lists/partial" "$state/cache/archives/partial"
  apt_opts=(
    -oAPT::Architecture="$arch"
    -oAPT::Architectures="$arch"
    -oDir::State::Lists="$state/lists"
    -oDir::Cache="$state/cache"
  )
  log "updating the $arch package lists in $state"
  apt-get "${apt_opts[@]}" -qq update >&2
fi

resolve() {
  apt-cache "${apt_opts[@]}" depends "linux-image-$arch" 2>/dev/null |
    sed -n "s/^ *Depends: \(linux-image-[0-9][^ ]*-$arch\)$/\1/p" | head -n 1
}

pkg="$(resolve)"
if [[ -z "$pkg" && "$arch" == "$host_arch" ]]; then
  log "linux-image-$arch unknown to apt; running apt-get update"
  apt-get -qq update >&2
  pkg="$(resolve)"
fi
if [[ -z "$pkg" ]]; then
  log "cannot resolve the kernel package behind linux-image-$arch"
  exit 1
fi

work="$(mktemp -d "$cache/fetch-kernel.XXXXXX")"
trap 'rm -rf "$work"' EXIT

log "downloading $pkg"
(cd "$work" && apt-get "${apt_opts[@]}" -oAPT::Sandbox::User=root -qq download "$pkg" >&2)
deb="$(find "$work" -maxdepth 1 -name '*.deb' | head -n 1)"
if [[ -z "$deb" ]]; then
  log "apt-get download produced no .deb for $pkg"
  exit 1
fi

# Unpack next to the destination, then move into place, so a half-unpacked
# tree is never mistaken for a finished one.
log "unpacking $(basename "$deb") into $dest"
dpkg -x "$deb" "$work/root"
rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
mv "$work/root" "$dest"

vmlinuz="$(find_vmlinuz)"
if [[ -z "$vmlinuz" ]]; then
  log "no boot/vmlinuz-* inside $pkg"
  exit 1
fi
echo "$vmlinuz"
