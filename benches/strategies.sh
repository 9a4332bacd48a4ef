#!/usr/bin/env bash
# Runs `usherd bench` on the three standard scenarios of benches/scenarios/
# and writes their charts and JSON to docs/strategies/ (used by
# docs/strategies.md). Takes about three minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
out=docs/strategies
mkdir -p "$out"
run() { # scenario rate seconds
  echo "== $1"
  target/release/usherd bench --profile "benches/scenarios/$1.toml" --rate "$2" --duration "$3" \
    --seed 1 --hash-balance-factor 1.25 --json "$out/$1.json" --svg "$out/$1.svg" | tee "$out/$1.txt"
}
run equal 400 5s
run one_slow 400 5s
run slow_mid_run 400 10s
