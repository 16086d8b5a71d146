#!/usr/bin/env bash
# Runs every fuzz target for a fixed time and reports crashes. Not part of CI.
#
#   bench/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 180 s, all)
#
# Targets: initramfs/fuzz {reader, unpack} and fuzz/ {dhcp, tftp_request,
# template, nodes_conf}. Needs the nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz`). Corpora live in <crate>/fuzz/corpus (or
# fuzz/corpus) and grow across runs; crashes land in <dir>/artifacts/<target>/.
# FUZZ_BUILD passes build flags to cargo-fuzz: empty (default) keeps debug
# assertions (overflow checks) on; FUZZ_BUILD=-O reuses `cargo fuzz build -O`.
# Exit status: 0 when no target crashed, 1 otherwise.
set -euo pipefail

secs=${1:-180}
shift || true
root=$(cd "$(dirname "$0")/.." && pwd)
declare -A dir_of=(
  [reader]=initramfs/fuzz [unpack]=initramfs/fuzz
  [dhcp]=fuzz [tftp_request]=fuzz [template]=fuzz [nodes_conf]=fuzz
)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(reader unpack dhcp tftp_request template nodes_conf)

command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz missing: cargo install cargo-fuzz" >&2; exit 2; }

declare -A result
failed=0
for t in "${targets[@]}"; do
  d=${dir_of[$t]:-}
  [ -n "$d" ] || { echo "unknown target $t" >&2; exit 2; }
  cd "$root/$d"
  mkdir -p "corpus/$t" "artifacts/$t"
  log="$root/target/fuzz-$t.log"
  mkdir -p "$root/target"
  before=$(find "artifacts/$t" -type f | wc -l)
  echo "== $t: ${secs}s (log: $log)"
  # -rss_limit_mb bounds memory; -timeout flags a single input taking > 10 s.
  # shellcheck disable=SC2086 # FUZZ_BUILD is a list of flags
  if cargo +nightly fuzz run ${FUZZ_BUILD:-} "$t" "corpus/$t" -- \
       -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
       >"$log" 2>&1; then
    status=ok
  else
    status=CRASH
  fi
  after=$(find "artifacts/$t" -type f | wc -l)
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')
  if [ "$status" = CRASH ] || [ "$after" -gt "$before" ]; then
    failed=1
    status="CRASH ($((after - before)) new artifacts in $d/artifacts/$t)"
  fi
  result[$t]="$status, ${runs:-?} execs, cov ${cov:-?}"
done

echo
echo "fuzzing summary (${secs}s per target):"
for t in "${targets[@]}"; do
  printf '  %-14s %s\n' "$t" "${result[$t]}"
done
exit $failed
