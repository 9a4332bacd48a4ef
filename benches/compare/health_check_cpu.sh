#!/usr/bin/env bash
# CPU cost of active health checks: usherd checking N servers (nginx on N
# loopback ports) every second, with no traffic, measured from /proc.
#
#   benches/compare/health_check_cpu.sh [SERVERS] [SECONDS]
#
# Needs nginx (installed if missing). Every process it starts is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/../.."
servers=${1:-1000}
seconds=${2:-20}

command -v nginx >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx-light; }

work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# N free ports, asked of the OS.
python3 - "$servers" > "$work/ports" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
for s in socks:
    print(s.getsockname()[1])
PY
proxy_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

{
  echo "worker_processes 1; daemon off; pid $work/nginx.pid; error_log $work/nginx.err;"
  echo "events { worker_connections 8192; }"
  echo "http { access_log off; server {"
  while read -r port; do echo "  listen 127.0.0.1:$port;"; done < "$work/ports"
  echo '  location / { return 200 "ok\n"; } } }'
} > "$work/nginx.conf"
nginx -c "$work/nginx.conf" -p "$work" & pids+=($!)

{
  echo "[listeners.web]"
  echo "listen = \"127.0.0.1:$proxy_port\""
  echo "[vhosts.all]"
  echo "hosts = [\"*\"]"
  echo "routes = [{ path = \"/\", upstream = \"pool\" }]"
  echo "[upstreams.pool]"
  echo -n "servers = ["
  sep=""
  while read -r port; do echo -n "$sep{ addr = \"127.0.0.1:$port\" }"; sep=", "; done < "$work/ports"
  echo "]"
  echo "[upstreams.pool.health_check]"
  echo "path = \"/healthz\""
  echo "interval = \"1s\""
  echo "timeout = \"500ms\""
} > "$work/usherd.toml"

cargo build --release --quiet
RUST_LOG=warn target/release/usherd run --no-watch -c "$work/usherd.toml" & usherd_pid=$!
pids+=($usherd_pid)
sleep 3   # past the first round of connects

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
before=$(ticks "$usherd_pid")
sleep "$seconds"
[ -n "${PROFILE:-}" ] && perf record -e cpu-clock -F 2000 -g -o "$PROFILE" -p "$usherd_pid" -- sleep 5 >/dev/null 2>&1
after=$(ticks "$usherd_pid")
python3 - "$before" "$after" "$hz" "$seconds" "$servers" <<'PY'
import sys
before, after, hz, seconds, servers = map(float, sys.argv[1:])
cpu = (after - before) / hz
print(f"{int(servers)} servers checked every 1s for {int(seconds)}s: usherd used {cpu:.2f} s of CPU = {100 * cpu / seconds:.2f}% of one core ({1e6 * cpu / (servers * seconds):.1f} us per check)")
PY
