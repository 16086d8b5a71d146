#!/usr/bin/env bash
# Installs into a temporary DESTDIR with scripts/install.sh and checks the
# result the way a head would use it: the installed wwctl builds a node's
# overlays from the installed shipped overlays, and the node gets the static
# wwinit as /init and wwclient with its systemd unit. Run by scripts/test.sh.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d /tmp/ironwulf-install.XXXXXX)"
trap 'rm -rf "$tmp"' EXIT
fail() { echo "check-install: $*" >&2; exit 1; }

DESTDIR="$tmp/root" "$repo/scripts/install.sh"
root="$tmp/root"
wwctl="$root/usr/bin/wwctl"
ov="$root/usr/share/warewulf/overlays"
[[ -x "$wwctl" ]] || fail "no wwctl"
[[ -f "$root/etc/systemd/system/warewulfd.service" ]] || fail "no warewulfd.service"
[[ "$(stat -c %a "$ov/wwinit/rootfs/warewulf/wwinit.conf.ww")" == 600 ]] || fail "PERMISSIONS not applied"
for bin in wwinit/rootfs/warewulf/wwinit wwclient/rootfs/warewulf/wwclient; do
  [[ -x "$ov/$bin" ]] || fail "no $bin"
  # Static: no program interpreter (the dynamic loader) in the ELF headers.
  if LC_ALL=C readelf -l "$ov/$bin" 2>/dev/null | grep -q "Requesting program interpreter"; then
    fail "$bin is not static"
  fi
done
"$ov/wwclient/rootfs/warewulf/wwclient" --version >/dev/null || fail "wwclient does not run"

site="$tmp/site"
mkdir -p "$site/etc/warewulf"
cat >"$site/etc/warewulf/warewulf.conf" <<CONF
ipaddr: 10.99.0.1/24
paths:
  sysconfdir: $site/etc
  localstatedir: $site/var
  datadir: $root/usr/share
  wwoverlaydir: $site/overlays
  wwchrootdir: $site/chroots
  wwprovisiondir: $site/provision
CONF
cat >"$site/etc/warewulf/nodes.conf" <<'NODES'
nodeprofiles: {}
nodes:
  n1:
    system overlay: [wwinit, wwclient]
    network devices:
      default:
        hwaddr: 52:54:00:12:34:01
        ipaddr: 10.99.0.11
NODES
env -u IRONWULF_DIST_OVERLAYS "$wwctl" --warewulfconf "$site/etc/warewulf/warewulf.conf" \
  overlay build -o "$tmp/out" n1 >/dev/null
node="$tmp/out/n1"
[[ "$(readlink "$node/wwinit/init")" == warewulf/wwinit ]] || fail "/init is not the wwinit link"
[[ -x "$node/wwinit/warewulf/wwinit" ]] || fail "the node gets no wwinit"
[[ -x "$node/wwclient/warewulf/wwclient" ]] || fail "the node gets no wwclient"
grep -q "^Type=notify" "$node/wwclient/etc/systemd/system/wwclient.service" || fail "no wwclient unit"
echo "check-install: installed tree and a node's wwinit/wwclient overlays are complete"
