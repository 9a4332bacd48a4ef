#!/usr/bin/env bash
# Two usherd binaries side by side, same work as run.sh's usherd (round-robin
# over three nginx backends, one worker thread, no access log), interleaved
# A B A B ...: req/s and CPU microseconds per request of each. For showing
# what one change costs or gains.
#
#   benches/compare/ab.sh BINARY_A BINARY_B [--reps N] [--duration SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 2 ] || { echo "usage: $0 BINARY_A BINARY_B [--reps N] [--duration SECONDS]" >&2; exit 1; }
declare -A binary=([A]=$(realpath "$1") [B]=$(realpath "$2"))
shift 2
reps=5
duration=10
while [ $# -gt 0 ]; do
  case "$1" in
    --reps) reps=$2; shift ;;
    --duration) duration=$2; shift ;;
    *) echo "unknown argument $1" >&2; exit 1 ;;
  esac
  shift
done

work=$(mktemp -d)
source benches/compare/lib.sh
command -v wrk >/dev/null || install wrk
command -v nginx >/dev/null || install nginx-light
start_nginx_backends
[ "${#backends[@]}" = 3 ] || { echo "backends did not start" >&2; exit 1; }

declare -A port pid
for side in A B; do
  port[$side]=$(free_port)
  cat > "$work/$side.toml" <<USHERD
[global]
max_connections = 30000
[listeners.web]
listen = "127.0.0.1:${port[$side]}"
[vhosts.all]
hosts = ["*"]
routes = [{ path = "/", upstream = "pool" }]
[upstreams.pool]
servers = [{ addr = "${backends[0]}" }, { addr = "${backends[1]}" }, { addr = "${backends[2]}" }]
USHERD
  RUST_LOG=warn TOKIO_WORKER_THREADS=1 taskset -c 0 "${binary[$side]}" run --no-watch -c "$work/$side.toml" &
  pid[$side]=$!
  pids+=(${pid[$side]})
done
sleep 1

results="$work/results"
: > "$results"
for rep in $(seq "$reps"); do
  for side in A B; do
    echo "repetition $rep/$reps: $side" >&2
    url="http://127.0.0.1:${port[$side]}/"
    taskset -c 1 wrk -t1 -c64 -d1s "$url" >/dev/null
    before=$(cpu_ticks "${pid[$side]}"); busy_before=$(cpu0_busy)
    out=$(taskset -c 1 wrk -t1 -c64 -d"${duration}s" "$url")
    after=$(cpu_ticks "${pid[$side]}"); busy_after=$(cpu0_busy)
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    echo "$side rps $(awk '/Requests\/sec/ {print $2}' <<<"$out")" >> "$results"
    echo "$side cpu_us $(cpu_us_per_request "$before" "$after" "$requests")" >> "$results"
    echo "$side noise $(python3 -c "print(int(($busy_after-$busy_before)-($after-$before) > 0.1*$duration*$hz))")" >> "$results"
  done
done
echo
echo "A = ${binary[A]}"
echo "B = ${binary[B]}"
python3 benches/compare/summarize.py "$results"
python3 - "$results" <<'PY'
import statistics, sys
cpu = {"A": [], "B": []}
for line in open(sys.argv[1]):
    side, metric, value = line.split()
    if metric == "cpu_us":
        cpu[side].append(float(value))
a, b = statistics.median(cpu["A"]), statistics.median(cpu["B"])
print(f"CPU per request, B vs A: {100 * (b - a) / a:+.1f}%")
PY
