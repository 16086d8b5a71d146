#!/usr/bin/env bash
# Image build benchmark: `wwctl image build` against Warewulf's own pipeline
# (`find | cpio -H newc | pigz` and `… | zstd`) on the same Debian bookworm
# minbase tree, side by side in one run, with the page cache warm.
#
# Usage: bench/image-build.sh            (as root, on Debian 12)
# Environment:
#   IRONWULF_CACHE  cache root (default /var/cache/ironwulf); the debootstrap
#                   tree is kept in $IRONWULF_CACHE/bench/bookworm-minbase
#   WWCTL           wwctl binary to measure (default: build target/release/wwctl)
#   RUNS            timed runs per command after one warm-up run (default 3)
#
# Prints one summary line per figure. Writes nothing outside a temp folder,
# except the cached debootstrap tree (and cargo's target/ when it builds wwctl).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cache="${IRONWULF_CACHE:-/var/cache/ironwulf}"
rootfs_cache="$cache/bench/bookworm-minbase"
runs="${RUNS:-3}"

log() { echo "bench: $*" >&2; }

# --- prerequisites ----------------------------------------------------------
need=()
for tool in debootstrap:debootstrap cpio:cpio pigz:pigz zstd:zstd; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool##*:}")
done
if ((${#need[@]})); then
  log "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >&2 ||
    { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive \
      apt-get install -y --no-install-recommends "${need[@]}" >&2; }
fi

# --- the Debian mirror apt already uses -------------------------------------
debian_mirror() {
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f "$f" ]] || continue
    # deb822 paragraphs: the first URI of a paragraph whose Suites has bookworm.
    uri="$(awk 'BEGIN { RS = ""; FS = "\n" }
      {
        u = ""; s = ""
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/) { u = $i; sub(/^URIs:[ \t]*/, "", u) }
          if ($i ~ /^Suites:/) { s = $i }
        }
        if (u != "" && s ~ /[ \t]bookworm([ \t]|$)/) { split(u, a, " "); print a[1]; exit }
      }' "$f")"
    if [[ -n "$uri" ]]; then
      echo "$uri"
      return
    fi
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f "$f" ]] || continue
    # One-line form: deb [options] URI SUITE COMPONENTS...
    uri="$(awk '$1 == "deb" {
        i = 2
        if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
        if ($(i + 1) == "bookworm") { print $i; exit }
      }' "$f")"
    if [[ -n "$uri" ]]; then
      echo "$uri"
      return
    fi
  done
  return 1
}

# --- the tree: debootstrap once, then reuse ---------------------------------
if [[ ! -x "$rootfs_cache/bin/sh" && ! -L "$rootfs_cache/bin" ]]; then
  mirror="$(debian_mirror)" || {
    log "no bookworm mirror found in /etc/apt/sources.list{,.d/*}"
    exit 1
  }
  log "debootstrap --variant=minbase bookworm from $mirror (cached in $rootfs_cache)"
  mkdir -p "$(dirname "$rootfs_cache")"
  rm -rf "$rootfs_cache.partial"
  debootstrap --variant=minbase bookworm "$rootfs_cache.partial" "$mirror" >&2
  mv "$rootfs_cache.partial" "$rootfs_cache"
fi

# --- wwctl ------------------------------------------------------------------
if [[ -n "${WWCTL:-}" ]]; then
  wwctl="$WWCTL"
else
  log "cargo build --release -p head"
  (cd "$repo" && cargo build --release -p head >&2)
  wwctl="${CARGO_TARGET_DIR:-$repo/target}/release/wwctl"
fi
"$wwctl" image build --help >/dev/null

# --- a temp site ------------------------------------------------------------
tmp="$(mktemp -d /tmp/ironwulf-bench.XXXXXX)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/chroots/bench" "$tmp/provision" "$tmp/etc/warewulf" "$tmp/out"
cat >"$tmp/etc/warewulf/warewulf.conf" <<CONF
paths:
  sysconfdir: $tmp/etc
  wwchrootdir: $tmp/chroots
  wwprovisiondir: $tmp/provision
CONF
conf="$tmp/etc/warewulf/warewulf.conf"
log "copying the tree into $tmp/chroots/bench/rootfs"
cp -a "$rootfs_cache" "$tmp/chroots/bench/rootfs"
tree="$tmp/chroots/bench/rootfs"
tree_bytes="$(find "$tree" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')"
tree_files="$(find "$tree" | wc -l)"

# --- measuring --------------------------------------------------------------
now() { date +%s.%N; }

# median SECONDS...: the middle value.
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# measure NAME COMMAND...: one warm-up run, then $runs timed runs; sets
# $result to the median wall time in seconds.
measure() {
  local name="$1" i t0 t1 times=()
  shift
  "$@" >/dev/null 2>&1 || { log "$name failed: $*"; "$@" >&2; exit 1; }
  for ((i = 0; i < runs; i++)); do
    t0="$(now)"
    "$@" >/dev/null 2>&1
    t1="$(now)"
    times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')")
  done
  result="$(median "${times[@]}")"
  log "$name: runs ${times[*]} s, median $result s"
}

ww() { "$wwctl" --warewulfconf "$conf" image build bench "$@"; }
ref_gz() { (cd "$tree" && find . -print0 | cpio --null -o -H newc --quiet | pigz -p2 -6 >"$tmp/out/ref.cpio.gz"); }
ref_zst() { (cd "$tree" && find . -print0 | cpio --null -o -H newc --quiet | zstd -q -T0 -3 -f -o "$tmp/out/ref.cpio.zst"); }
size() { stat -c %s "$1"; }

log "tree: $tree_files entries, $tree_bytes bytes of file data; $runs runs after a warm-up"
# Warm the page cache once for everything below.
find "$tree" -type f -exec cat {} + >/dev/null

measure "wwctl zst" ww --force --compress zst
ours_zst_t="$result"
ours_zst_s="$(size "$tmp/provision/images/bench.img.zst")"
measure "ref zstd" ref_zst
ref_zst_t="$result"
ref_zst_s="$(size "$tmp/out/ref.cpio.zst")"
measure "wwctl gz" ww --force --compress gz
ours_gz_t="$result"
ours_gz_s="$(size "$tmp/provision/images/bench.img.gz")"
measure "ref pigz" ref_gz
ref_gz_t="$result"
ref_gz_s="$(size "$tmp/out/ref.cpio.gz")"

# No-op: the tree and the requested compression are unchanged since the last
# gz build, so wwctl must skip the work.
noop_out="$(ww 2>&1)"
if ! grep -q "up to date" <<<"$noop_out"; then
  log "warning: the no-op rebuild did not report 'up to date': $noop_out"
fi
measure "wwctl no-op" ww
noop_t="$result"

# --- report -------------------------------------------------------------------
row() { # LABEL SECONDS BYTES
  awk -v l="$1" -v t="$2" -v s="$3" -v b="$tree_bytes" 'BEGIN {
    printf "%-32s %8.2f s %10.1f MB %8.1f MB/s\n", l, t, s / 1e6, b / 1e6 / t }'
}
ratio() { # LABEL OURS_T REF_T OURS_S REF_S
  awk -v l="$1" -v a="$2" -v b="$3" -v c="$4" -v d="$5" 'BEGIN {
    printf "%-32s time %.2fx  size %.3fx  (ours/reference)\n", l, a / b, c / d }'
}
echo
echo "image build: $tree_files entries, $(awk -v b="$tree_bytes" 'BEGIN { printf "%.1f", b / 1e6 }') MB of file data, median of $runs warm runs"
row "wwctl image build --compress zst" "$ours_zst_t" "$ours_zst_s"
row "find|cpio|zstd -T0 -3" "$ref_zst_t" "$ref_zst_s"
row "wwctl image build --compress gz" "$ours_gz_t" "$ours_gz_s"
row "find|cpio|pigz -p2 -6" "$ref_gz_t" "$ref_gz_s"
ratio "zst: wwctl / cpio|zstd" "$ours_zst_t" "$ref_zst_t" "$ours_zst_s" "$ref_zst_s"
ratio "gz: wwctl / cpio|pigz" "$ours_gz_t" "$ref_gz_t" "$ours_gz_s" "$ref_gz_s"
printf '%-32s %8.3f s\n' "wwctl no-op rebuild" "$noop_t"
