#!/usr/bin/env bash
# Runs the whole test suite N times in a row (default 10) while stress-ng
# keeps both cores busy, and prints how many runs failed and which tests.
# The proof that the suite does not flake on a loaded machine
# (docs/testing.md). Usage: tests/stress.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-10}"
command -v stress-ng >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq stress-ng >/dev/null
}
# Builds and installs what the tests need first, unloaded.
bash tests/run.sh --no-run >/dev/null

log_dir="target/stress"
rm -rf "$log_dir" && mkdir -p "$log_dir"
stress-ng --cpu 2 --timeout 0 --quiet &
stress=$!
trap 'kill "$stress" 2>/dev/null; wait "$stress" 2>/dev/null || true' EXIT

failed=0
for run in $(seq 1 "$runs"); do
  start=$(date +%s)
  if cargo test >"$log_dir/run-$run.log" 2>&1; then
    outcome=passed
  else
    outcome=FAILED
    failed=$((failed + 1))
    grep -E '^test .* FAILED$|^thread .* panicked' "$log_dir/run-$run.log" | head -20 || true
  fi
  echo "run $run/$runs: $outcome in $(( $(date +%s) - start )) s"
done
echo "$((runs - failed)) passed, $failed failed"
