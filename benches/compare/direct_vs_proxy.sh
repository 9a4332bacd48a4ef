#!/usr/bin/env bash
# Whole-process figure: requests/s and CPU time per request of usherd in front
# of one nginx backend, against wrk hitting that backend directly.
#
#   benches/compare/direct_vs_proxy.sh [DURATION_SECONDS] [CONNECTIONS]
#
# Needs nginx and wrk (Debian packages; installed if missing). Every process it
# starts is stopped by PID on exit. Traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/../.."
duration=${1:-10}
connections=${2:-64}

need() { command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2"; }; }
need wrk wrk
need nginx nginx-light

work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
backend_port=$(free_port)
proxy_port=$(free_port)

cat > "$work/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$backend_port;
    keepalive_requests 1000000;
    location / { return 200 "ok\n"; }
  }
}
NGINX
taskset -c 1 nginx -c "$work/nginx.conf" -p "$work" & pids+=($!)

cat > "$work/usherd.toml" <<TOML
[listeners.web]
listen = "127.0.0.1:$proxy_port"
[vhosts.all]
hosts = ["*"]
routes = [{ path = "/", upstream = "backend" }]
[upstreams.backend]
servers = [{ addr = "127.0.0.1:$backend_port" }]
TOML
cargo build --release --quiet
RUST_LOG=warn TOKIO_WORKER_THREADS=1 taskset -c 0 target/release/usherd run -c "$work/usherd.toml" & usherd_pid=$!
pids+=($usherd_pid)
sleep 1

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
ticks_per_second=$(getconf CLK_TCK)

run_wrk() { # url -> "requests req/s p50 p99"
  taskset -c 1 wrk -t1 -c"$connections" -d"${duration}s" --latency "$1" > "$work/wrk.out"
  local requests rps p50 p99
  requests=$(awk '/requests in/ {print $1}' "$work/wrk.out")
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.out")
  p50=$(awk '$1=="50%" {print $2}' "$work/wrk.out")
  p99=$(awk '$1=="99%" {print $2}' "$work/wrk.out")
  echo "$requests $rps $p50 $p99"
}

read -r direct_requests direct_rps direct_p50 direct_p99 < <(run_wrk "http://127.0.0.1:$backend_port/")
before=$(cpu_ticks "$usherd_pid")
if [ -n "${PROFILE:-}" ]; then
  perf record -e cpu-clock -F 4000 -g -o "$PROFILE" -p "$usherd_pid" -- sleep "$duration" >/dev/null 2>&1 &
fi
read -r proxy_requests proxy_rps proxy_p50 proxy_p99 < <(run_wrk "http://127.0.0.1:$proxy_port/")
after=$(cpu_ticks "$usherd_pid")
rss=$(awk '/VmHWM/ {print $2}' "/proc/$usherd_pid/status")
cpu_us=$(python3 -c "print(f'{($after-$before)/$ticks_per_second*1e6/$proxy_requests:.1f}')")

printf '%-22s %12s %10s %10s %16s %12s\n' target req/s p50 p99 "CPU us/request" "peak RSS"
printf '%-22s %12s %10s %10s %16s %12s\n' "nginx direct" "$direct_rps" "$direct_p50" "$direct_p99" "-" "-"
printf '%-22s %12s %10s %10s %16s %12s\n' "usherd -> nginx" "$proxy_rps" "$proxy_p50" "$proxy_p99" "$cpu_us" "$((rss / 1024)) MiB"
echo "(wrk: 1 thread, $connections connections, ${duration}s; usherd 1 worker on CPU 0; wrk and nginx on CPU 1)"
