#!/usr/bin/env bash
# Build the Debian 12 (bookworm) node image used by the boot matrix and the
# demo, once, and print the path of its rootfs.
#
# Usage: scripts/build-debian-image.sh [--force] [amd64|arm64]
#
# The image: debootstrap --variant=minbase plus systemd (as /sbin/init),
# udev, kmod, dbus, iproute2 and openssh-server; systemd-networkd enabled
# (the `systemd.networkd` overlay writes its .network files); Debian's kernel
# from scripts/fetch-kernel.sh in /boot, where `wwctl image build` looks for
# it, and the modules a QEMU node needs from that same kernel (virtio, NIC,
# IPMI, a few file systems), indexed with depmod. Node-specific files are
# left to the overlays: no SSH host keys, no /etc/hostname, an empty
# machine-id (systemd makes a transient one at boot).
#
# Result: ${IRONWULF_CACHE:-/var/cache/ironwulf}/images/debian-bookworm-amd64/rootfs
# The tree is built in a temporary folder next to it and renamed into place,
# so a half-built image is never used. A stamp records the recipe version and
# the kernel release; running again with both unchanged prints the path and
# does nothing else. --force rebuilds. Only the path goes to stdout.
# Needs root, debootstrap, kmod (depmod); fetches from deb.debian.org.
#
# arm64 builds a small tree instead (no debootstrap, which would need
# qemu-user emulation for a foreign architecture): Debian's arm64
# busybox-static and kernel (scripts/fetch-kernel.sh arm64) with its virtio
# modules, and an /sbin/init script that reports what the overlays delivered
# (`IRONWULF-ARM64: ...` on the console) and powers off. Result:
# $IRONWULF_CACHE/images/busybox-arm64/rootfs.
set -euo pipefail

# Bump when the recipe below changes what ends up in the tree.
RECIPE=3
MIRROR="${IRONWULF_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PACKAGES=systemd,systemd-sysv,udev,kmod,dbus,iproute2,openssh-server
# Module folders and files (relative to lib/modules/<release>/kernel) copied
# from Debian's kernel package: what QEMU nodes (virtio, e1000) and the BMC
# (ipmi) need, plus common file systems for hooks and sites.
MODULES=(
  drivers/virtio
  drivers/net/virtio_net.ko
  drivers/net/net_failover.ko
  net/core/failover.ko
  drivers/net/ethernet/intel/e1000
  drivers/block/virtio_blk.ko
  drivers/char/hw_random/virtio-rng.ko
  drivers/char/ipmi
  fs/overlayfs
  fs/squashfs
  fs/fuse
)

force=0
arch=amd64
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    amd64 | arm64) arch="$arg" ;;
    *)
      echo "usage: $0 [--force] [amd64|arm64]" >&2
      exit 2
      ;;
  esac
done

repo="$(cd "$(dirname "$0")/.." && pwd)"
cache="${IRONWULF_CACHE:-/var/cache/ironwulf}"
dest="$cache/images/debian-bookworm-amd64"
log() { echo "build-debian-image: $*" >&2; }

if [[ $EUID -ne 0 ]]; then
  log "needs root (debootstrap, mknod, chroot)"
  exit 1
fi
for tool in debootstrap depmod chroot; do
  command -v "$tool" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin"
  command -v "$tool" >/dev/null 2>&1 || {
    log "missing $tool (apt-get install debootstrap kmod)"
    exit 1
  }
done

vmlinuz="$("$repo/scripts/fetch-kernel.sh" "$arch")"
kdir="$(dirname "$(dirname "$vmlinuz")")"
release="$(basename "$vmlinuz")"
release="${release#vmlinuz-}"
stamp="recipe=$RECIPE kernel=$release packages=$PACKAGES"
if [[ "$arch" == arm64 ]]; then
  dest="$cache/images/busybox-arm64"
  stamp="recipe=$RECIPE kernel=$release packages=busybox-static:arm64"
fi

if ((force == 0)) && [[ -d "$dest/rootfs" && "$(cat "$dest/stamp" 2>/dev/null)" == "$stamp" ]]; then
  echo "$dest/rootfs"
  exit 0
fi

mkdir -p "$cache/images"
work="$(mktemp -d "$cache/images/.debian-build.XXXXXX")"
chmod 0755 "$work"
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"

if [[ "$arch" == arm64 ]]; then
  state="$cache/apt-arm64"
  apt_opts=(
    -oAPT::Architecture=arm64 -oAPT::Architectures=arm64
    -oDir::State::Lists="$state/lists" -oDir::Cache="$state/cache"
  )
  [[ -d "$state/lists" ]] || "$repo/scripts/fetch-kernel.sh" arm64 >/dev/null
  log "busybox-static (arm64)"
  (cd "$work" && apt-get "${apt_opts[@]}" -oAPT::Sandbox::User=root -qq download busybox-static >&2)
  dpkg -x "$work"/busybox-static_*_arm64.deb "$work/bb"
  mkdir -p "$root"/{bin,sbin,boot,dev,etc,proc,sys,run,tmp,root}
  install -m 0755 "$work/bb/bin/busybox" "$root/bin/busybox"
  ln -s busybox "$root/bin/sh"
  install -m 0644 "$vmlinuz" "$root/boot/vmlinuz-$release"
  src="$kdir/lib/modules/$release"
  mkdir -p "$root/lib/modules/$release/kernel/drivers/net"
  cp -a "$src/kernel/drivers/virtio" "$root/lib/modules/$release/kernel/drivers/"
  cp -a "$src"/kernel/drivers/net/{virtio_net.ko,net_failover.ko} "$root/lib/modules/$release/kernel/drivers/net/"
  cp "$src"/modules.{order,builtin,builtin.modinfo} "$root/lib/modules/$release/"
  depmod -b "$root" "$release"
  cat >"$root/sbin/init" <<'INIT'
#!/bin/sh
# Ironwulf's arm64 test image: report what wwinit and the overlays
# delivered, then power off.
bb=/bin/busybox
$bb mount -t proc proc /proc 2>/dev/null
echo "IRONWULF-ARM64: host $($bb cat /etc/hostname) arch $($bb uname -m) root $($bb stat -f -c %T /)"
$bb grep -E '^10\.99' /etc/hosts | $bb sed 's/^/IRONWULF-ARM64: hosts: /'
$bb sync
$bb poweroff -f
INIT
  chmod 0755 "$root/sbin/init"
  echo "$stamp" >"$work/stamp"
  rm -rf "$dest.old"
  [[ -e "$dest" ]] && mv "$dest" "$dest.old"
  mv "$work" "$dest"
  rm -rf "$dest.old" "$dest/bb" "$dest"/*.deb
  trap - EXIT
  log "done: $(du -sh "$dest/rootfs" | cut -f1) in $dest/rootfs"
  echo "$dest/rootfs"
  exit 0
fi

log "debootstrap bookworm (minbase + $PACKAGES) from $MIRROR"
debootstrap --variant=minbase --include="$PACKAGES" bookworm "$root" "$MIRROR" >&2

log "kernel $release and its modules"
install -D -m 0644 "$vmlinuz" "$root/boot/vmlinuz-$release"
[[ -f "$kdir/boot/config-$release" ]] && install -m 0644 "$kdir/boot/config-$release" "$root/boot/"
src="$kdir/lib/modules/$release"
moddst="$root/lib/modules/$release"
mkdir -p "$moddst/kernel"
for f in modules.order modules.builtin modules.builtin.modinfo; do
  [[ -f "$src/$f" ]] && cp "$src/$f" "$moddst/"
done
for m in "${MODULES[@]}"; do
  if [[ -e "$src/kernel/$m" ]]; then
    mkdir -p "$(dirname "$moddst/kernel/$m")"
    cp -a "$src/kernel/$m" "$moddst/kernel/$m"
  else
    log "warning: $release has no kernel/$m"
  fi
done
depmod -b "$root" "$release"

log "node settings"
# Networking by systemd-networkd; the overlays write the .network files.
chroot "$root" systemctl enable systemd-networkd.service >&2
# Never prompt on the console at first boot (a diskless node boots "first"
# every time).
chroot "$root" systemctl mask systemd-firstboot.service >&2
# Node identity comes from the overlays.
rm -f "$root"/etc/ssh/ssh_host_*
rm -f "$root/etc/hostname" "$root/etc/resolv.conf"
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
# The journal stays in RAM anyway; keep it small.
mkdir -p "$root/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\nRuntimeMaxUse=16M\n' \
  >"$root/etc/systemd/journald.conf.d/ironwulf.conf"

log "trimming caches and documentation"
rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/var/log/*.log \
  "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
  "$root"/usr/share/locale/* "$root"/var/cache/debconf/*-old
echo "$stamp" >"$work/stamp"
sync -f "$work/stamp"

rm -rf "$dest.old"
[[ -e "$dest" ]] && mv "$dest" "$dest.old"
mv "$work" "$dest"
rm -rf "$dest.old"
trap - EXIT
log "done: $(du -sh "$dest/rootfs" | cut -f1) in $dest/rootfs"
echo "$dest/rootfs"
