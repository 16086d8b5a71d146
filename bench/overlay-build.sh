#!/usr/bin/env bash
# Overlay build at scale: `wwctl overlay build` (release) on generated sites of
# 1,000 and 10,000 nodes with the default overlay lists and the shipped
# overlays of this checkout (`overlays/`).
#
#   bench/overlay-build.sh                # 1,000 and 10,000 nodes
#   SIZES="10000" bench/overlay-build.sh  # one size
#
# Per size it prints: the full build (empty provision dir; the median of
# FULLS runs, default 3, each into a fresh provision dir while the earlier
# ones are kept until the end, so no run pays for deleting another's
# files on a disk mounted with `discard`), the no-op rebuild,
# the rebuild after one node's comment and kernel args change (a change that
# does not alter any other node's output), the median of CHANGES (default 5)
# further single-node changes, and at the end the 10k/1k ratio of the full
# builds. Default overlays the checkout does not ship yet are stubbed
# with empty site overlays (reported). Writes only inside a temp folder.
#
# A template that names the node *and* lists every node (an /etc/hosts with
# "for {{ .Id }}" in its header) must be rendered per node over all nodes:
# O(N^2), Warewulf's weakness. Unless SHIPPED_HOSTS=1, the site shadows the
# shipped `hosts` overlay with the same template minus that header line, which
# makes it node-independent (rendered once per run); the script says so.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${SIZES:-"1000 10000"}
WORKERS=${WORKERS:-0}

if [ -z "${WWCTL:-}" ]; then
  cargo build --release -q -p head
  WWCTL=$PWD/target/release/wwctl
fi
DIST=$PWD/overlays

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

now_ms() { date +%s%3N; }

gen_nodes() { # N FILE
  awk -v n="$1" 'BEGIN {
    print "nodeprofiles:"
    print "  default:"
    print "    comment: generated"
    print "    cluster name: bench"
    print "    image name: rocky-9"
    print "    kernel:"
    print "      args: [quiet, crashkernel=no]"
    print "nodes:"
    for (i = 1; i <= n; i++) {
      a = int(i / 250); b = i % 250 + 1
      printf "  n%05d:\n    profiles: [default]\n", i
      print  "    network devices:"
      print  "      default:"
      print  "        device: eth0"
      printf "        hwaddr: \"02:00:00:%02x:%02x:%02x\"\n", int(i / 65536) % 256, int(i / 256) % 256, i % 256
      printf "        ipaddr: 10.%d.%d.%d\n", 10 + int(a / 250), a % 250, b
      print  "        netmask: 255.0.0.0"
      print  "        gateway: 10.0.0.1"
      print  "      ib:"
      print  "        device: ib0"
      printf "        ipaddr: 172.%d.%d.%d\n", 16 + int(a / 250), a % 250, b
      print  "        netmask: 255.240.0.0"
      printf "    tags:\n      rack: r%d\n", a
    }
  }' > "$2"
}

declare -A FULL
for n in $SIZES; do
  site=$tmp/site-$n
  mkdir -p "$site/etc/warewulf" "$site/overlays"
  cat > "$site/etc/warewulf/warewulf.conf" <<EOF
ipaddr: 10.0.0.1
netmask: 255.0.0.0
network: 10.0.0.0
paths:
  sysconfdir: $site/etc
  wwchrootdir: $site/chroots
  wwprovisiondir: $site/provision
  wwoverlaydir: $site/overlays
  localstatedir: $site/var
  cachedir: $site/cache
  datadir: $site/share
EOF
  mkdir -p "$site/etc/warewulf/keys"
  gen_nodes "$n" "$site/etc/warewulf/nodes.conf"
  stubbed=()
  for o in wwinit wwclient hosts fstab hostname ssh.host_keys issue resolv udev.netname \
           systemd.netname ifcfg ifupdown NetworkManager wicked ignition ssh.authorized_keys; do
    if [ ! -d "$DIST/$o/rootfs" ]; then
      mkdir -p "$site/overlays/$o/rootfs"
      stubbed+=("$o")
    fi
  done
  [ ${#stubbed[@]} -eq 0 ] || echo "note: stubbed overlays not shipped yet: ${stubbed[*]}"
  info() { IRONWULF_DIST_OVERLAYS=$DIST "$WWCTL" --warewulfconf "$site/etc/warewulf/warewulf.conf" overlay info "$@" | tail -1; }
  if [ "${SHIPPED_HOSTS:-0}" != 1 ] && [ -f "$DIST/hosts/rootfs/etc/hosts.ww" ] \
     && [ "$(info hosts /etc/hosts.ww)" = "rendered per node" ]; then
    mkdir -p "$site/overlays/hosts/rootfs/etc"
    grep -v '{{ *\.Id *}}' "$DIST/hosts/rootfs/etc/hosts.ww" > "$site/overlays/hosts/rootfs/etc/hosts.ww"
    echo "note: shipped hosts.ww names the node (O(N^2)); using it without that line: $(info hosts /etc/hosts.ww)"
  fi
  ww() { IRONWULF_DIST_OVERLAYS=$DIST "$WWCTL" --warewulfconf "$site/etc/warewulf/warewulf.conf" overlay build --workers "$WORKERS" "$@" 2>&1 | tail -1; }

  fulls=()
  for k in $(seq 1 "${FULLS:-3}"); do
    [ ! -d "$site/provision" ] || mv "$site/provision" "$site/provision.old-$k"
    sync
    t0=$(now_ms); last=$(ww); t1=$(now_ms)
    fulls+=($((t1 - t0)))
  done
  FULL[$n]=$(printf '%s\n' "${fulls[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  echo "overlay build, $n nodes, full: median ${FULL[$n]} ms  (sorted: $(printf '%s\n' "${fulls[@]}" | sort -n | tr '\n' ' '); last: $last)"
  t0=$(now_ms); last=$(ww); t1=$(now_ms)
  echo "overlay build, $n nodes, no-op:           $((t1 - t0)) ms  ($last)"
  sed -i '0,/  n00001:/{s/  n00001:/  n00001:\n    comment: changed\n    kernel:\n      args: [quiet, debug0]/}' "$site/etc/warewulf/nodes.conf"
  t0=$(now_ms); last=$(ww); t1=$(now_ms)
  echo "overlay build, $n nodes, one node changed: $((t1 - t0)) ms  ($last)"
  # Then CHANGES more single-node changes (new kernel args each time, so
  # each writes and fsyncs a new blob): the first one above also pays for
  # the full build's writeback still in flight; these show the steady state.
  times=()
  for k in $(seq 1 "${CHANGES:-5}"); do
    sed -i "s/args: \[quiet, debug[0-9]*\]/args: [quiet, debug$k]/" "$site/etc/warewulf/nodes.conf"
    t0=$(now_ms); last=$(ww); t1=$(now_ms)
    times+=($((t1 - t0)))
  done
  sorted=$(printf '%s\n' "${times[@]}" | sort -n | tr '\n' ' ')
  median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  echo "overlay build, $n nodes, one node changed, ${#times[@]} more: median $median ms  (sorted: $sorted; last: $last)"
  echo "  images: $(find "$site/provision/overlays" -name '*.img.gz' | wc -l), blobs: $(find "$site/provision/blobs" -maxdepth 1 -type f | wc -l), store: $(du -sh "$site/provision" | cut -f1)"
  [ -z "${KEEP:-}" ] || { cp -a "$site" "$KEEP"; }
done

if [ -n "${FULL[1000]:-}" ] && [ -n "${FULL[10000]:-}" ]; then
  awk -v a="${FULL[1000]}" -v b="${FULL[10000]}" 'BEGIN { printf "overlay build, full 10k/1k ratio (medians): %.2f\n", b / a }'
fi
