#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script).
#
# Needs: Debian 12, root (QEMU, network namespaces), and the packages that
# .ci/run installs. Environment:
#   IRONWULF_CACHE      cache root for downloads (default /var/cache/ironwulf)
#   IRONWULF_KERNEL     boot this amd64 kernel instead of the fetched one
#   IRONWULF_SKIP_QEMU  =1 skips (loudly) every test that boots QEMU
# Every step runs even when an earlier one failed, so one run shows every
# problem; the script exits non-zero if any step failed.
set -euo pipefail

cd "$(dirname "$0")/.."

failed=()

# step TITLE COMMAND...: runs COMMAND under a header, recording a failure.
step() {
  local title="$1"
  shift
  printf '\n==== %s ====\n' "$title"
  echo "+ $*"
  if ! "$@"; then
    echo "---- FAILED: $title"
    failed+=("$title")
  fi
}

tests() {
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
  else
    echo "(cargo-nextest is not installed: using cargo test)"
    cargo test --workspace --no-fail-fast
  fi
}

step "format" cargo fmt --all -- --check
step "clippy" cargo clippy --workspace --all-targets -- -D warnings
if [[ "${IRONWULF_SKIP_QEMU:-}" == "1" ]]; then
  printf '\n==== test kernel ====\nIRONWULF_SKIP_QEMU=1: QEMU tests will be SKIPPED\n'
else
  step "test kernel" scripts/fetch-kernel.sh amd64
  # The boot matrix's Debian 12 node image: built once, then cached under
  # $IRONWULF_CACHE/images (a rebuild only when its recipe or the kernel changes).
  step "Debian node image" scripts/build-debian-image.sh
  # The arm64 matrix scenario's small busybox tree (Debian's arm64 kernel
  # and busybox-static), cached the same way.
  step "arm64 node image" scripts/build-debian-image.sh arm64
fi
step "test-init (static)" cargo build --release -p test-init --target x86_64-unknown-linux-musl
step "tests" tests
step "doc tests" cargo test --workspace --doc
step "install (temporary DESTDIR)" scripts/check-install.sh

printf '\n==== summary ====\n'
if ((${#failed[@]})); then
  printf 'FAILED: %s\n' "${failed[@]}"
  exit 1
fi
echo "all steps passed"
