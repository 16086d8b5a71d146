#!/usr/bin/env bash
# Installs Ironwulf on a head node (root, Debian 12), or into DESTDIR for
# packaging and tests:
#
#   scripts/install.sh                    # /usr/bin/wwctl, /usr/share/warewulf/overlays, …
#   DESTDIR=/tmp/pkg scripts/install.sh   # the same tree below /tmp/pkg
#
# Steps (docs/overlays.md, "Installing overlays/"):
#   1. build wwctl (release) and the static node binaries wwinit and wwclient
#      (x86_64-unknown-linux-musl);
#   2. install wwctl and the systemd unit warewulfd.service;
#   3. install the shipped overlays into <datadir>/warewulf/overlays, apply
#      overlays/PERMISSIONS (git keeps only the executable bit), and place
#      wwinit and wwclient inside their overlays; the new tree replaces the
#      old one with a rename, so a running head never sees half of it.
#
# Environment: DESTDIR (default empty), PREFIX (/usr), DATADIR
# ($PREFIX/share), SYSTEMDDIR (/etc/systemd/system), NO_BUILD=1 to install
# binaries that are already built.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
DESTDIR="${DESTDIR:-}"
PREFIX="${PREFIX:-/usr}"
DATADIR="${DATADIR:-$PREFIX/share}"
SYSTEMDDIR="${SYSTEMDDIR:-/etc/systemd/system}"
target="${CARGO_TARGET_DIR:-$repo/target}"
musl=x86_64-unknown-linux-musl

if [[ "${NO_BUILD:-}" != "1" ]]; then
  echo "==== build"
  cargo build --release -p head
  rustup target list --installed 2>/dev/null | grep -qx "$musl" || rustup target add "$musl"
  cargo build --release --target "$musl" -p wwinit -p agent
fi
for bin in "$target/release/wwctl" "$target/$musl/release/wwinit" "$target/$musl/release/wwclient"; do
  [[ -x "$bin" ]] || { echo "missing $bin (build it, or drop NO_BUILD=1)" >&2; exit 1; }
done

echo "==== wwctl and warewulfd.service"
install -D -m 0755 "$target/release/wwctl" "$DESTDIR$PREFIX/bin/wwctl"
install -d "$DESTDIR$SYSTEMDDIR"
sed "s|/usr/bin/wwctl|$PREFIX/bin/wwctl|" head/share/systemd/warewulfd.service \
  >"$DESTDIR$SYSTEMDDIR/warewulfd.service"
chmod 0644 "$DESTDIR$SYSTEMDDIR/warewulfd.service"

echo "==== BMC command templates (wwctl power, docs/power.md)"
install -D -m 0644 -t "$DESTDIR$DATADIR/warewulf/bmc" head/share/bmc/*.tmpl

echo "==== overlays"
dest="$DESTDIR$DATADIR/warewulf/overlays"
install -d "$(dirname "$dest")"
new="$dest.new.$$"
rm -rf "$new"
cp -a overlays "$new"
rm -f "$new/PERMISSIONS"
while read -r mode path; do
  [[ -z "$mode" || "$mode" == \#* ]] && continue
  [[ -e "$new/$path" ]] || { echo "overlays/PERMISSIONS names a missing file: $path" >&2; exit 1; }
  chmod "$mode" "$new/$path"
done <overlays/PERMISSIONS
install -D -m 0755 "$target/$musl/release/wwinit" "$new/wwinit/rootfs/warewulf/wwinit"
install -D -m 0755 "$target/$musl/release/wwclient" "$new/wwclient/rootfs/warewulf/wwclient"
chown -R root:root "$new" 2>/dev/null || true
if [[ -e "$dest" ]]; then
  mv "$dest" "$dest.old.$$"
  mv "$new" "$dest"
  rm -rf "$dest.old.$$"
else
  mv "$new" "$dest"
fi

echo "installed: $DESTDIR$PREFIX/bin/wwctl, $dest, $DESTDIR$SYSTEMDDIR/warewulfd.service"
