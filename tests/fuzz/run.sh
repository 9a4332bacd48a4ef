#!/usr/bin/env bash
# Runs one fuzz target: tests/fuzz/run.sh TARGET [SECONDS] [libFuzzer args...]
# Installs cargo-fuzz when missing; builds with the stable toolchain
# (FUZZ_TOOLCHAIN to change it: see docs/security.md on nightly). The
# committed seeds (corpus/TARGET) are read only; what the fuzzer grows goes
# to work/TARGET and crashes to artifacts/TARGET (neither is committed).
# Run it under `nice -n 19` on a shared machine. See docs/security.md.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
target="${1:?usage: tests/fuzz/run.sh TARGET [SECONDS] [libFuzzer args...]}"
seconds="${2:-60}"
shift $(( $# >= 2 ? 2 : 1 ))

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz
fi
toolchain="${FUZZ_TOOLCHAIN:-stable}"

mkdir -p "$here/work/$target"
cd "$here/../.."
# The crate forbids unsafe code: panics are what is looked for, so no
# sanitizer (twice the speed, and no nightly needed), but debug assertions
# and overflow checks on.
exec cargo "+$toolchain" fuzz run --fuzz-dir tests/fuzz --sanitizer none --debug-assertions \
    --target-dir "tests/fuzz/target/$toolchain" \
    "$target" "$here/work/$target" "$here/corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "$@"
