#!/usr/bin/env bash
# usherd beside nginx and HAProxy, doing the same work, measured in one run.
#
#   benches/compare/run.sh [--quick] [--reps N] [--duration SECONDS]
#
# Backends: one nginx worker answering `200 ok` on three loopback ports (in
# --quick mode, usherd demo's three backends, so only wrk is needed). Proxies:
# nginx (worker_processes 1, upstream keepalive), HAProxy (nbthread 1,
# http-reuse always) and usherd (TOKIO_WORKER_THREADS=1): round-robin over the
# three, keep-alive to the upstreams, no access log. The proxy runs on CPU 0;
# wrk, h2load and the backends on CPU 1 (this machine has 2 cores).
#
# Per proxy, medians over interleaved repetitions (A B C A B C ...): req/s, p50
# and p99 (wrk, 64 connections), CPU microseconds per request (utime + stime of
# the proxy from /proc, divided by requests; and of it the user-space part,
# utime alone: the kernel's part is the sockets' work), peak RSS, p99 at a fixed rate
# below saturation (wrk with a 1 ms delay per request), HTTP/2 (h2load -c 64
# -m 10), 1 MiB responses (MB/s); once per proxy, RSS growth per idle
# keep-alive connection with 5,000 of them open. A repetition is flagged noisy
# when CPU 0 was busy with anything but the proxy for more than 10% of it.
# Every process started is stopped by PID; traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/../.."

quick=0
reps=5
duration=10
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1; reps=1; duration=3 ;;
    --reps) reps=$2; shift ;;
    --duration) duration=$2; shift ;;
    *) echo "usage: $0 [--quick] [--reps N] [--duration SECONDS]" >&2; exit 1 ;;
  esac
  shift
done

work=$(mktemp -d)
source benches/compare/lib.sh
command -v wrk >/dev/null || install wrk
if [ "$quick" = 0 ]; then
  command -v nginx >/dev/null || install nginx-light
  command -v haproxy >/dev/null || install haproxy
  command -v h2load >/dev/null || install nghttp2-client
fi

cargo build --release --quiet
usherd=target/release/usherd

# --- backends -------------------------------------------------------------
if [ "$quick" = 1 ]; then
  taskset -c 1 "$usherd" demo --port 0 --admin-port 0 > "$work/demo.out" 2>/dev/null &
  pids+=($!)
  for _ in $(seq 50); do grep -q "backend gamma" "$work/demo.out" 2>/dev/null && break; sleep 0.1; done
  while read -r addr; do backends+=("$addr"); done < <(awk '$1 == "backend" {sub("http://", "", $3); print $3}' "$work/demo.out")
else
  start_nginx_backends
fi
[ "${#backends[@]}" = 3 ] || { echo "backends did not start" >&2; exit 1; }

# --- proxies --------------------------------------------------------------
declare -A port h2port pid
start_usherd() {
  port[usherd]=$(free_port)
  {
    echo "[global]"; echo "max_connections = 30000"
    echo "[listeners.web]"; echo "listen = \"127.0.0.1:${port[usherd]}\""
    echo "[vhosts.all]"; echo "hosts = [\"*\"]"; echo "routes = [{ path = \"/\", upstream = \"pool\" }]"
    echo "[upstreams.pool]"; echo "strategy = \"round_robin\""
    echo "servers = [{ addr = \"${backends[0]}\" }, { addr = \"${backends[1]}\" }, { addr = \"${backends[2]}\" }]"
  } > "$work/usherd.toml"
  RUST_LOG=warn TOKIO_WORKER_THREADS=1 taskset -c 0 "$usherd" run --no-watch -c "$work/usherd.toml" &
  pid[usherd]=$!
  pids+=(${pid[usherd]})
  h2port[usherd]=${port[usherd]}
}
start_nginx() {
  port[nginx]=$(free_port); h2port[nginx]=$(free_port)
  cat > "$work/nginx.conf" <<NGINX
worker_processes 1; daemon off; pid $work/nginx.pid; error_log $work/nginx.err;
events { worker_connections 30000; }
http {
  access_log off;
  upstream pool { server ${backends[0]}; server ${backends[1]}; server ${backends[2]}; keepalive 256; }
  server {
    listen 127.0.0.1:${port[nginx]};
    listen 127.0.0.1:${h2port[nginx]} http2;
    keepalive_requests 1000000;
    location / { proxy_pass http://pool; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering on; }
  }
}
NGINX
  taskset -c 0 nginx -c "$work/nginx.conf" -p "$work" &
  pids+=($!)
  pid[nginx]=$(nginx_worker $!)
}
start_haproxy() {
  port[haproxy]=$(free_port); h2port[haproxy]=$(free_port)
  cat > "$work/haproxy.cfg" <<HAPROXY
global
  nbthread 1
  maxconn 9000
defaults
  mode http
  timeout connect 1s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
frontend web
  bind 127.0.0.1:${port[haproxy]}
  bind 127.0.0.1:${h2port[haproxy]} proto h2
  default_backend pool
backend pool
  balance roundrobin
  http-reuse always
  server s1 ${backends[0]}
  server s2 ${backends[1]}
  server s3 ${backends[2]}
HAPROXY
  taskset -c 0 haproxy -db -f "$work/haproxy.cfg" &
  pid[haproxy]=$!
  pids+=(${pid[haproxy]})
}

proxies=(usherd)
[ "$quick" = 0 ] && proxies=(nginx haproxy usherd)
results="$work/results"
: > "$results"
for proxy in "${proxies[@]}"; do
  "start_$proxy"
done
sleep 1
for proxy in "${proxies[@]}"; do
  kill -0 "${pid[$proxy]}" 2>/dev/null || { echo "$proxy did not start" >&2; exit 1; }
done
for proxy in "${proxies[@]}"; do
  echo "$proxy start_rss_kib $(status_kib "${pid[$proxy]}" VmRSS:)" >> "$results"
done
cat > "$work/delay.lua" <<'LUA'
function delay() return 1 end
LUA

measure() { # proxy
  local proxy=$1 p=${pid[$1]} url="http://127.0.0.1:${port[$1]}/"
  local before busy_before after busy_after out requests user_before user_after
  taskset -c 1 wrk -t1 -c64 -d1s "$url" >/dev/null   # warm the upstream connections
  before=$(cpu_ticks "$p"); user_before=$(user_ticks "$p"); busy_before=$(cpu0_busy)
  out=$(taskset -c 1 wrk -t1 -c64 -d"${duration}s" --latency "$url")
  after=$(cpu_ticks "$p"); user_after=$(user_ticks "$p"); busy_after=$(cpu0_busy)
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  echo "$proxy rps $(awk '/Requests\/sec/ {print $2}' <<<"$out")" >> "$results"
  echo "$proxy p50_us $(us "$(awk '$1 == "50%" {print $2}' <<<"$out")")" >> "$results"
  echo "$proxy p99_us $(us "$(awk '$1 == "99%" {print $2}' <<<"$out")")" >> "$results"
  echo "$proxy cpu_us $(cpu_us_per_request "$before" "$after" "$requests")" >> "$results"
  echo "$proxy user_us $(cpu_us_per_request "$user_before" "$user_after" "$requests")" >> "$results"
  echo "$proxy rss_kib $(status_kib "$p" VmHWM:)" >> "$results"
  echo "$proxy noise $(python3 -c "print(int(($busy_after-$busy_before)-($after-$before) > 0.1*$duration*$hz))")" >> "$results"
  if [ "$quick" = 0 ]; then
    out=$(taskset -c 1 wrk -t1 -c64 -d"${duration}s" --latency -s "$work/delay.lua" "$url")
    echo "$proxy fixed_p99_us $(us "$(awk '$1 == "99%" {print $2}' <<<"$out")")" >> "$results"
    before=$(cpu_ticks "$p")
    out=$(taskset -c 1 h2load -c 64 -m 10 -D "$duration" "http://127.0.0.1:${h2port[$proxy]}/" 2>/dev/null)
    after=$(cpu_ticks "$p")
    requests=$(awk '/^requests:/ {print $8}' <<<"$out")
    echo "$proxy h2_rps $(awk '/^finished in/ {print $4}' <<<"$out")" >> "$results"
    [ -n "$requests" ] && [ "$requests" -gt 0 ] && echo "$proxy h2_cpu_us $(cpu_us_per_request "$before" "$after" "$requests")" >> "$results"
    out=$(taskset -c 1 wrk -t1 -c16 -d"${duration}s" "${url}big")
    echo "$proxy big_mbs $(awk '/Transfer\/sec/ {v=$2; u=substr(v, length(v)-1); n=substr(v, 1, length(v)-2); if (u=="GB") n*=1024; if (u=="KB") n/=1024; print n}' <<<"$out")" >> "$results"
  fi
}
for rep in $(seq "$reps"); do
  for proxy in "${proxies[@]}"; do
    echo "repetition $rep/$reps: $proxy" >&2
    measure "$proxy"
  done
done

idle=5000
[ "$quick" = 1 ] && idle=500
for proxy in "${proxies[@]}"; do
  before=$(status_kib "${pid[$proxy]}" VmRSS:)
  coproc HOLDER { taskset -c 1 python3 benches/compare/idle_connections.py 127.0.0.1 "${port[$proxy]}" "$idle"; }
  read -r ready <&"${HOLDER[0]}"
  sleep 1
  after=$(status_kib "${pid[$proxy]}" VmRSS:)
  echo "$proxy idle_kib $(python3 -c "print(($after-$before)/$idle)")" >> "$results"
  exec {HOLDER[1]}>&-
  wait "$HOLDER_PID" 2>/dev/null || true
done

echo
echo "$(nproc) cores; proxy on CPU 0, load and backends on CPU 1; $reps repetition(s) of ${duration}s; medians"
python3 benches/compare/summarize.py "$results"
awk '$2 == "start_rss_kib" {printf "%s RSS at start: %d KiB\n", $1, $3}' "$results"
