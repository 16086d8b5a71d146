#!/usr/bin/env bash
# Boot benchmark: single-stage against two-stage on the same Debian bookworm
# minbase image, under QEMU TCG, side by side in one run.
#
#   single-stage  QEMU loads kernel + image + system + runtime overlay as one
#                 initrd (the gzip archives iPXE's default script loads);
#                 the kernel unpacks them and runs wwinit in place.
#   two-stage     QEMU loads kernel + the stage 1 from `wwctl initramfs build
#                 -m virtio`; wwinit gets DHCP from `wwctl server` (in a
#                 private network namespace) and streams the manifest's
#                 artifacts (zstd image, gzip overlays) into a tmpfs.
#
# Both are measured twice: "direct" (QEMU -kernel/-initrd: the archives are
# already in guest memory, so single-stage pays no download) and "pxe"
# (SeaBIOS + the NIC's iPXE ROM, the head's DHCP and iPXE script: single-
# stage downloads kernel + archives through iPXE, two-stage kernel + stage 1
# through iPXE and the rest through wwinit; node n2 carries the tag
# `ironwulf.boot: two-stage`).
#
# "Init" is the moment wwinit execs the node's init (its `exec` line on the
# serial console), timed from QEMU's start. Also measured: static wwinit
# size, stage-1 size, and the lowest -m (32 MiB steps) at which each path
# still reaches init.
#
# Usage: bench/boot.sh            (as root, on Debian 12)
# Environment:
#   IRONWULF_CACHE  cache root (default /var/cache/ironwulf); the debootstrap
#                   tree is kept in $IRONWULF_CACHE/bench/bookworm-minbase and
#                   the kernel comes from scripts/fetch-kernel.sh amd64
#   RUNS            timed boots per path (default 3; the median is printed)
#   MEM_START       upper bound of the memory search, MiB (default 1024)
#   MEM_SEARCH      0 skips the memory search
#   SMP             vCPUs of the node (default 1)
#   MODES           paths to time (default "single two pxe-single pxe-two")
#   KEEP            a folder: each timed boot's serial log and the head's log
#                   are copied there; serial lines are prefixed with the seconds since
#                   QEMU's start (host clock), and each boot's packets on
#                   the boot network are captured (headers only) with
#                   tcpdump, if installed, into MODE-RUN.pcap: for breakdowns
#   WWCTL, WWINIT   a wwctl / static wwinit binary to use instead of
#                   building one (to compare builds side by side)
#   RA              1: answer IPv6 router solicitations on the boot network
#                   (an empty router advertisement, as a LAN with an IPv6
#                   router would). Without one, iPXE's autoconfiguration
#                   waits ~16 s for an answer before it boots, in both paths
#   ARGS            extra kernel arguments for every node (e.g. "printk.time=1
#                   ignore_loglevel" to see the kernel's own timeline)
#
# Prints one summary line per figure. Writes nothing outside a temp folder,
# except the caches above (and cargo's target/ when it builds).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cache="${IRONWULF_CACHE:-/var/cache/ironwulf}"
rootfs_cache="$cache/bench/bookworm-minbase"
runs="${RUNS:-3}"
mem_start="${MEM_START:-1024}"
smp="${SMP:-1}"
modes="${MODES:-single two pxe-single pxe-two}"
keep="${KEEP:-}"
extra_args="${ARGS:-}"
boot_timeout=300
mac=52:54:00:be:0c:01
mac2=52:54:00:be:0c:02
musl=x86_64-unknown-linux-musl

log() { echo "bench: $*" >&2; }

[[ "$(id -u)" == 0 ]] || { log "run as root (network namespaces, taps)"; exit 1; }

# --- prerequisites ----------------------------------------------------------
need=()
for tool in debootstrap:debootstrap qemu-system-x86_64:qemu-system-x86 ip:iproute2; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool##*:}")
done
if ((${#need[@]})); then
  log "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >&2 ||
    { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive \
      apt-get install -y --no-install-recommends "${need[@]}" >&2; }
fi

# The first bookworm mirror apt already uses (one-line or deb822 sources).
debian_mirror() {
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f "$f" ]] || continue
    uri="$(awk 'BEGIN { RS = ""; FS = "\n" }
      { u = ""; s = ""
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/) { u = $i; sub(/^URIs:[ \t]*/, "", u) }
          if ($i ~ /^Suites:/) { s = $i } }
        if (u != "" && s ~ /[ \t]bookworm([ \t]|$)/) { split(u, a, " "); print a[1]; exit } }' "$f")"
    [[ -n "$uri" ]] && { echo "$uri"; return; }
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f "$f" ]] || continue
    uri="$(awk '$1 == "deb" { i = 2
        if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
        if ($(i + 1) == "bookworm") { print $i; exit } }' "$f")"
    [[ -n "$uri" ]] && { echo "$uri"; return; }
  done
  return 1
}

if [[ ! -x "$rootfs_cache/bin/sh" && ! -L "$rootfs_cache/bin" ]]; then
  mirror="$(debian_mirror)" || { log "no bookworm mirror in /etc/apt/sources.list{,.d/*}"; exit 1; }
  log "debootstrap --variant=minbase bookworm from $mirror (cached in $rootfs_cache)"
  mkdir -p "$(dirname "$rootfs_cache")"
  rm -rf "$rootfs_cache.partial"
  debootstrap --variant=minbase bookworm "$rootfs_cache.partial" "$mirror" >&2
  mv "$rootfs_cache.partial" "$rootfs_cache"
fi

vmlinuz="$("$repo/scripts/fetch-kernel.sh" amd64)"
ktree="$(dirname "$(dirname "$vmlinuz")")"

# --- binaries ---------------------------------------------------------------
target="${CARGO_TARGET_DIR:-$repo/target}"
wwctl="${WWCTL:-$target/release/wwctl}"
wwinit="${WWINIT:-$target/$musl/release/wwinit}"
if [[ -z "${WWCTL:-}" ]]; then
  log "cargo build --release -p head (wwctl)"
  (cd "$repo" && cargo build --release -p head >&2)
fi
if [[ -z "${WWINIT:-}" ]]; then
  log "cargo build --release -p wwinit --target $musl (static wwinit)"
  (cd "$repo" && cargo build --release -p wwinit --target "$musl" >&2)
fi

# --- a temp site ------------------------------------------------------------
tmp="$(mktemp -d /tmp/ironwulf-bench-boot.XXXXXX)"
ns="iwbench$$"
head_pid=""
qemu_pid=""
dump_pid=""
ra_pid=""
cleanup() {
  [[ -n "$ra_pid" ]] && kill "$ra_pid" 2>/dev/null && wait "$ra_pid" 2>/dev/null || true
  [[ -n "$dump_pid" ]] && kill "$dump_pid" 2>/dev/null && wait "$dump_pid" 2>/dev/null || true
  if [[ -n "$keep" ]]; then
    mkdir -p "$keep"
    cp "$tmp/server.log" "$keep/" 2>/dev/null || true
  fi
  [[ -n "$qemu_pid" ]] && kill "$qemu_pid" 2>/dev/null && wait "$qemu_pid" 2>/dev/null || true
  [[ -n "$head_pid" ]] && kill "$head_pid" 2>/dev/null && wait "$head_pid" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

mkdir -p "$tmp"/{etc/warewulf,chroots/bench,overlays,provision,var,share}
cat >"$tmp/etc/warewulf/warewulf.conf" <<CONF
ipaddr: 10.97.0.1/24
warewulf:
  port: 9873
  secure: false
  autobuild overlays: false
dhcp:
  enabled: true
  range start: 10.97.0.100
  range end: 10.97.0.200
  interfaces: [br0]
tftp:
  enabled: false
paths:
  sysconfdir: $tmp/etc
  localstatedir: $tmp/var
  datadir: $tmp/share
  wwoverlaydir: $tmp/overlays
  wwchrootdir: $tmp/chroots
  wwprovisiondir: $tmp/provision
CONF
conf="$tmp/etc/warewulf/warewulf.conf"
cat >"$tmp/etc/warewulf/nodes.conf" <<NODES
nodeprofiles:
  bench:
    image name: bench
    system overlay: [wwinit, hostname]
    runtime overlay: [hosts]
    kernel:
      args: [console=ttyS0, panic=-1, quiet, wwinit.crash=poweroff, wwinit.crash_delay=0, wwinit.init=/bin/true$(for a in $extra_args; do printf ', %s' "$a"; done)]
nodes:
  n1:
    profiles: [bench]
    network devices:
      default:
        hwaddr: $mac
        ipaddr: 10.97.0.21
        netmask: 255.255.255.0
  n2:
    profiles: [bench]
    tags:
      ironwulf.boot: two-stage
    network devices:
      default:
        hwaddr: $mac2
        ipaddr: 10.97.0.22
        netmask: 255.255.255.0
NODES
# The wwinit overlay as scripts/install.sh installs it: with the binary.
cp -a "$repo/overlays/wwinit" "$tmp/overlays/wwinit"
install -D -m 0755 "$wwinit" "$tmp/overlays/wwinit/rootfs/warewulf/wwinit"
export IRONWULF_DIST_OVERLAYS="$repo/overlays"
ww() { "$wwctl" --warewulfconf "$conf" "$@"; }

log "copying the tree into $tmp/chroots/bench/rootfs"
cp -a "$rootfs_cache" "$tmp/chroots/bench/rootfs"
kver="$(basename "$vmlinuz")"; kver="${kver#vmlinuz-}"
install -D -m 0644 "$vmlinuz" "$tmp/chroots/bench/rootfs/boot/vmlinuz-$kver"
image_bytes="$(find "$tmp/chroots/bench/rootfs" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')"
ww image build bench --compress gz,zst >&2
ww overlay build >&2
ww initramfs build --root "$ktree" -k "$kver" -m virtio --wwinit "$wwinit" --compress xz >&2
cp "$tmp/provision/initramfs/$kver.img" "$tmp/stage1.img"

single="$tmp/single.img"
# Overlay images as served (a large shared part is stored once, see
# docs/overlays.md), so through `wwctl overlay image`.
{
  cat "$tmp/provision/images/bench.img.gz"
  ww overlay image n1
  ww overlay image n1 --runtime
} >"$single"

mib() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1048576 }'; }
echo "wwinit static x86_64: $(stat -c %s "$wwinit") bytes ($(mib "$(stat -c %s "$wwinit")") MiB; target <= 2.5 MiB)"
echo "stage-1 initramfs (virtio, xz): $(stat -c %s "$tmp/stage1.img") bytes ($(mib "$(stat -c %s "$tmp/stage1.img")") MiB; target <= 1.5 MiB)"
echo "image: $(mib "$image_bytes") MiB in files; gz $(mib "$(stat -c %s "$tmp/provision/images/bench.img.gz")") MiB, zst $(mib "$(stat -c %s "$tmp/provision/images/bench.img.zst")") MiB; single-stage initrd $(mib "$(stat -c %s "$single")") MiB"

# --- the boot network and the head -------------------------------------------
ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" link add br0 type bridge
ip -n "$ns" addr add 10.97.0.1/24 dev br0
ip -n "$ns" link set br0 up
ip -n "$ns" tuntap add tap0 mode tap
ip -n "$ns" link set tap0 master br0
ip -n "$ns" link set tap0 up
ip netns exec "$ns" "$wwctl" --warewulfconf "$conf" server >"$tmp/server.log" 2>&1 &
head_pid=$!
for _ in $(seq 100); do
  ip netns exec "$ns" bash -c 'exec 3<>/dev/tcp/10.97.0.1/9873' 2>/dev/null && break
  sleep 0.2
done
if [[ "${RA:-0}" == 1 ]]; then
  # Router advertisements with lifetime 0 and no prefix: "no IPv6 router,
  # no DHCPv6", which is all iPXE waits to hear.
  ip netns exec "$ns" python3 -c '
import socket, struct
idx = socket.if_nametoindex("br0")
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, idx)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
             socket.inet_pton(socket.AF_INET6, "ff02::2") + struct.pack("@I", idx))
ra = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 0, 0, 0)
while True:
    data, _ = s.recvfrom(1500)
    if data and data[0] == 133:
        s.sendto(ra, ("ff02::1", 0, 0, idx))
' &
  ra_pid=$!
fi

common="console=ttyS0 panic=-1 quiet wwinit.crash=poweroff wwinit.crash_delay=0 wwinit.init=/bin/true${extra_args:+ $extra_args}"
# The memory search sizes the two-stage tmpfs root to all of RAM: its
# default (half of RAM, as Warewulf) caps the image, not the RAM use.
tmpfs_all="wwinit.tmpfs_size=100%"
marker="wwinit: exec /bin/true"

# boot MODE MEM: prints the seconds from QEMU start to the init marker, or
# "fail" (no marker before QEMU ended or the timeout).
boot() {
  local mode="$1" mem="$2" out="$tmp/console-$1-$2.log" start now
  local args=(-accel tcg -display none -monitor none -no-reboot -m "$mem" -smp "$smp"
    -serial "file:$out")
  local extra="${3:-}"
  case "$mode" in
    single) args+=(-kernel "$vmlinuz" -initrd "$single" -append "$common $extra" -nic none) ;;
    two) args+=(-kernel "$vmlinuz" -initrd "$tmp/stage1.img" -append "$common wwid=$mac $extra"
      -netdev "tap,id=n0,ifname=tap0,script=no,downscript=no"
      -device "virtio-net-pci,netdev=n0,mac=$mac") ;;
    pxe-single | pxe-two)
      local m="$mac"
      [[ "$mode" == pxe-two ]] && m="$mac2"
      args+=(-boot n -netdev "tap,id=n0,ifname=tap0,script=no,downscript=no"
        -device "virtio-net-pci,netdev=n0,mac=$m") ;;
  esac
  if [[ -n "$keep" ]] && command -v tcpdump >/dev/null; then
    ip netns exec "$ns" tcpdump -i br0 -s 128 -U -w "$tmp/boot.pcap" >/dev/null 2>&1 &
    dump_pid=$!
    sleep 0.5
  fi
  : >"$out"
  start="$(date +%s.%N)"
  if [[ -n "$keep" ]]; then
    echo "$start" >"$tmp/boot.start"
    # The serial line through a stamper: "[seconds since start] line".
    rm -f "$tmp/serial.fifo" && mkfifo "$tmp/serial.fifo"
    args=("${args[@]/#file:$out/file:$tmp/serial.fifo}")
    perl -MTime::HiRes=time -e '$| = 1; $s = shift; while (<STDIN>) { s/\r//g; printf "[%7.3f] %s", time - $s, $_ }' \
      "$start" <"$tmp/serial.fifo" >"$out" &
  fi
  ip netns exec "$ns" qemu-system-x86_64 "${args[@]}" >/dev/null 2>&1 &
  qemu_pid=$!
  local result=fail
  while :; do
    if grep -qF "$marker" "$out" 2>/dev/null; then
      now="$(date +%s.%N)"
      result="$(awk -v a="$start" -v b="$now" 'BEGIN { printf "%.1f", b - a }')"
      break
    fi
    kill -0 "$qemu_pid" 2>/dev/null || break
    now="$(date +%s.%N)"
    awk -v a="$start" -v b="$now" -v t="$boot_timeout" 'BEGIN { exit !(b - a > t) }' && break
    sleep 0.1
  done
  kill "$qemu_pid" 2>/dev/null || true
  wait "$qemu_pid" 2>/dev/null || true
  qemu_pid=""
  if [[ -n "$dump_pid" ]]; then
    kill "$dump_pid" 2>/dev/null || true
    wait "$dump_pid" 2>/dev/null || true
    dump_pid=""
  fi
  echo "$result"
}

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "fail"; else print v[int((NR + 1) / 2)] }'; }

declare -A med
for mode in $modes; do
  times=()
  for i in $(seq "$runs"); do
    t="$(boot "$mode" 1024)"
    log "$mode boot $i at -m 1024: $t s"
    [[ "$t" == fail ]] && { log "console:"; tail -n 30 "$tmp/console-$mode-1024.log" >&2; exit 1; }
    times+=("$t")
    if [[ -n "$keep" ]]; then
      mkdir -p "$keep"
      cp "$tmp/console-$mode-1024.log" "$keep/console-$mode-$i.log"
      [[ -f "$tmp/boot.pcap" ]] && mv "$tmp/boot.pcap" "$keep/$mode-$i.pcap"
      mv "$tmp/boot.start" "$keep/$mode-$i.start"
    fi
    # Where the time went (wwinit's own stage timings).
    grep -a "stage [a-z-]*: done in\|bytes, .* entries\|lease " "$tmp/console-$mode-1024.log" |
      sed 's/^/    /' >&2 || true
  done
  med[$mode]="$(printf '%s\n' "${times[@]}" | median)"
  echo "$mode boot to init at -m 1024, -smp $smp: median ${med[$mode]} s of $runs (${times[*]})"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
[[ -n "${med[single]:-}" && -n "${med[two]:-}" && -n "${med[pxe-single]:-}" && -n "${med[pxe-two]:-}" ]] &&
echo "two-stage / single-stage boot time, direct: $(ratio "${med[two]}" "${med[single]}"), pxe: $(ratio "${med[pxe-two]}" "${med[pxe-single]}") (target <= 0.6)"

[[ "${MEM_SEARCH:-1}" == 0 ]] && exit 0

# Lowest -m (32 MiB steps) that still reaches init: bisection between
# 64 MiB (assumed too little) and MEM_START (which booted above).
for mode in single two; do
  lo=2 hi=$((mem_start / 32))
  while ((hi - lo > 1)); do
    mid=$(((lo + hi) / 2))
    extra=""
    [[ "$mode" == two ]] && extra="$tmpfs_all"
    t="$(boot "$mode" $((mid * 32)) "$extra")"
    log "$mode-stage at -m $((mid * 32)): $t"
    if [[ "$t" == fail ]]; then lo=$mid; else hi=$mid; fi
  done
  ok=$((hi * 32))
  echo "$mode-stage lowest -m reaching init${extra:+ ($extra)}: $ok MiB (image $(mib "$image_bytes") MiB)"
  [[ "$mode" == two ]] &&
    echo "two-stage RAM over the image: $(awk -v m="$ok" -v b="$image_bytes" 'BEGIN { printf "%.0f", m - b / 1048576 }') MiB (target <= 160)"
done
