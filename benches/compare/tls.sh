#!/usr/bin/env bash
# TLS termination: usherd beside nginx and HAProxy, same certificate (ECDSA
# P-256), same three nginx backends, one worker/thread each, measured in one run.
#
#   benches/compare/tls.sh [--reps N] [--duration SECONDS]
#
# Per proxy, medians over interleaved repetitions (A B C A B C ...):
# - new TLS connections: wrk -c16 with `Connection: close`, so every request
#   is a new connection and a full handshake (wrk does not resume sessions):
#   handshakes/s and CPU microseconds of the proxy per handshake;
# - HTTPS keep-alive: wrk -c64: req/s, p99 and CPU microseconds per request;
# - HTTP/2 over TLS: h2load -c 64 -m 10 (ALPN h2): req/s, CPU us per request.
# The proxy runs on CPU 0; wrk, h2load and the backends on CPU 1. Every process
# started is stopped by PID; traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/../.."

reps=5
duration=10
while [ $# -gt 0 ]; do
  case "$1" in
    --reps) reps=$2; shift ;;
    --duration) duration=$2; shift ;;
    *) echo "usage: $0 [--reps N] [--duration SECONDS]" >&2; exit 1 ;;
  esac
  shift
done

work=$(mktemp -d)
source benches/compare/lib.sh
command -v wrk >/dev/null || install wrk
command -v nginx >/dev/null || install nginx-light
command -v haproxy >/dev/null || install haproxy
command -v h2load >/dev/null || install nghttp2-client
command -v openssl >/dev/null || install openssl

cargo build --release --quiet
usherd=target/release/usherd

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -keyout "$work/site.key" -out "$work/site.pem" -subj /CN=bench.test \
  -addext "subjectAltName=DNS:bench.test" 2>/dev/null
cat "$work/site.pem" "$work/site.key" > "$work/haproxy.pem"
chmod 644 "$work"/site.* "$work/haproxy.pem"

start_nginx_backends
[ "${#backends[@]}" = 3 ] || { echo "backends did not start" >&2; exit 1; }

declare -A port pid
start_usherd() {
  port[usherd]=$(free_port)
  cat > "$work/usherd.toml" <<USHERD
[global]
max_connections = 30000
[listeners.web]
listen = "127.0.0.1:${port[usherd]}"
tls = { certs = [{ cert = "$work/site.pem", key = "$work/site.key" }] }
[vhosts.all]
hosts = ["*"]
routes = [{ path = "/", upstream = "pool" }]
[upstreams.pool]
servers = [{ addr = "${backends[0]}" }, { addr = "${backends[1]}" }, { addr = "${backends[2]}" }]
USHERD
  RUST_LOG=warn TOKIO_WORKER_THREADS=1 taskset -c 0 "$usherd" run --no-watch -c "$work/usherd.toml" &
  pid[usherd]=$!
  pids+=(${pid[usherd]})
}
start_nginx() {
  port[nginx]=$(free_port)
  cat > "$work/nginx.conf" <<NGINX
worker_processes 1; daemon off; pid $work/nginx.pid; error_log $work/nginx.err;
events { worker_connections 30000; }
http {
  access_log off;
  upstream pool { server ${backends[0]}; server ${backends[1]}; server ${backends[2]}; keepalive 256; }
  server {
    listen 127.0.0.1:${port[nginx]} ssl http2;
    ssl_certificate $work/site.pem;
    ssl_certificate_key $work/site.key;
    keepalive_requests 1000000;
    location / { proxy_pass http://pool; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
NGINX
  taskset -c 0 nginx -c "$work/nginx.conf" -p "$work" &
  pids+=($!)
  pid[nginx]=$(nginx_worker $!)
}
start_haproxy() {
  port[haproxy]=$(free_port)
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
  bind 127.0.0.1:${port[haproxy]} ssl crt $work/haproxy.pem alpn h2,http/1.1
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

proxies=(nginx haproxy usherd)
results="$work/results"
: > "$results"
for proxy in "${proxies[@]}"; do "start_$proxy"; done
sleep 1
for proxy in "${proxies[@]}"; do
  kill -0 "${pid[$proxy]}" 2>/dev/null || { echo "$proxy did not start" >&2; exit 1; }
done

measure() { # proxy
  local proxy=$1 p=${pid[$1]} url="https://127.0.0.1:${port[$1]}/"
  local before after out requests start_ticks start_busy
  taskset -c 1 wrk -t1 -c64 -d1s "$url" >/dev/null   # warm the upstream connections
  start_ticks=$(cpu_ticks "$p"); start_busy=$(cpu0_busy)

  before=$(cpu_ticks "$p")
  out=$(taskset -c 1 wrk -t1 -c16 -d"${duration}s" -H "Connection: close" "$url")
  after=$(cpu_ticks "$p")
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  echo "$proxy handshakes_per_s $(awk '/Requests\/sec/ {print $2}' <<<"$out")" >> "$results"
  echo "$proxy handshake_cpu_us $(cpu_us_per_request "$before" "$after" "$requests")" >> "$results"

  before=$(cpu_ticks "$p")
  out=$(taskset -c 1 wrk -t1 -c64 -d"${duration}s" --latency "$url")
  after=$(cpu_ticks "$p")
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  echo "$proxy rps $(awk '/Requests\/sec/ {print $2}' <<<"$out")" >> "$results"
  echo "$proxy p99_us $(us "$(awk '$1 == "99%" {print $2}' <<<"$out")")" >> "$results"
  echo "$proxy cpu_us $(cpu_us_per_request "$before" "$after" "$requests")" >> "$results"

  before=$(cpu_ticks "$p")
  out=$(taskset -c 1 h2load -c 64 -m 10 -D "$duration" "$url" 2>/dev/null)
  after=$(cpu_ticks "$p")
  requests=$(awk '/^requests:/ {print $8}' <<<"$out")
  echo "$proxy h2_rps $(awk '/^finished in/ {print $4}' <<<"$out")" >> "$results"
  [ -n "$requests" ] && [ "$requests" -gt 0 ] && echo "$proxy h2_cpu_us $(cpu_us_per_request "$before" "$after" "$requests")" >> "$results"
  echo "$proxy rss_kib $(status_kib "$p" VmHWM:)" >> "$results"
  # Noisy: CPU 0 busy with anything but the proxy for more than 10% of the three runs.
  echo "$proxy noise $(python3 -c "print(int(($(cpu0_busy)-$start_busy)-($(cpu_ticks "$p")-$start_ticks) > 0.1*3*$duration*$hz))")" >> "$results"
}
for rep in $(seq "$reps"); do
  for proxy in "${proxies[@]}"; do
    echo "repetition $rep/$reps: $proxy" >&2
    measure "$proxy"
  done
done

echo
echo "$(nproc) cores; proxy on CPU 0, load and backends on CPU 1; TLS with ECDSA P-256; $reps repetition(s) of ${duration}s; medians"
python3 benches/compare/summarize.py "$results"
