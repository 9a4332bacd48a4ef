#!/usr/bin/env bash
# The attack probe: each attack of attack.py against usherd (release build),
# nginx and HAProxy side by side, each proxying to the same local backend
# (backend.py on 127.0.0.1), measured from outside; prints a Markdown table.
#
#   benches/attack/run.sh [--quick] [--duration SECONDS] [--json FILE]
#   USHERD=target/debug/usherd benches/attack/run.sh --quick   # no release build
#   benches/attack/run.sh --only window_stall,window_stall_tls  # some attacks only
#
# Every proxy: one worker (usherd TOKIO_WORKER_THREADS=1, nginx
# worker_processes 1, HAProxy nbthread 1), shortened timeouts (T = 3 s, or
# 2 s with --quick): reading a request head, between two reads of a request
# body, between two writes to a client, the upstream's answer; idle
# keep-alive 10 s; at most 256 client connections (nginx: worker_connections
# 300, which counts its upstream connections too). Listeners: plain HTTP/1.1,
# h2c (prior knowledge) and TLS (ALPN h2, http/1.1) with a self-signed
# certificate made here. --quick: shorter runs, fewer connections, no TLS
# repeats (about 2.5 minutes); the full run takes about 5.
#
# Every process started here is stopped by its PID; all traffic stays on
# 127.0.0.1; every attack is bounded in time and count (attack.py).
set -euo pipefail
cd "$(dirname "$0")/../.."

quick=0
duration=""
json=""
only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --duration) duration=$2; shift ;;
    --json) json=$2; shift ;;
    --only) only=$2; shift ;;
    *) echo "usage: $0 [--quick] [--duration SECONDS] [--json FILE] [--only ATTACK,...]" >&2; exit 1 ;;
  esac
  shift
done
if [ "$quick" = 1 ]; then
  timeout=2; duration=${duration:-4.5}
  conns_slowloris=60; conns_body=40; conns_noread=10; conns_flood=400
else
  timeout=3; duration=${duration:-8}
  conns_slowloris=150; conns_body=100; conns_noread=20; conns_flood=600
fi
limit=256

work=$(mktemp -d)
source benches/compare/lib.sh
command -v nginx >/dev/null || install nginx-light
command -v haproxy >/dev/null || install haproxy
command -v openssl >/dev/null || install openssl
command -v ss >/dev/null || install iproute2

# USHERD=path runs that binary instead of building the release one.
if [ -n "${USHERD:-}" ]; then
  usherd=$USHERD
else
  cargo build --release --quiet
  usherd=target/release/usherd
fi

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -keyout "$work/site.key" -out "$work/site.pem" -subj /CN=attack.test \
  -addext "subjectAltName=DNS:attack.test" 2>/dev/null
cat "$work/site.pem" "$work/site.key" > "$work/haproxy.pem"
# nginx's worker runs as nobody: it reads the certificate and writes temp files here.
mkdir -p "$work/proxy_temp" "$work/body_temp"
chmod 755 "$work"; chmod 644 "$work"/site.* "$work/haproxy.pem"; chmod 777 "$work/proxy_temp" "$work/body_temp"

# --- the backend ----------------------------------------------------------------
backend_port=$(free_port); backend_control=$(free_port)
fault_port=$(free_port); fault_control=$(free_port)
coproc BACKEND { exec python3 benches/attack/backend.py "$backend_port" "$backend_control"; }
pids+=("$BACKEND_PID")
read -r _ <&"${BACKEND[0]}"

# --- the proxies ------------------------------------------------------------------
declare -A port h2port tlsport pid
start_usherd() {
  port[usherd]=$(free_port); h2port[usherd]=${port[usherd]}; tlsport[usherd]=$(free_port)
  cat > "$work/usherd.toml" <<USHERD
[global]
header_read_timeout = "${timeout}s"
client_body_timeout = "${timeout}s"
send_timeout = "${timeout}s"
idle_timeout = "10s"
max_connections = $limit
[listeners.web]
listen = "127.0.0.1:${port[usherd]}"
[listeners.tls]
listen = "127.0.0.1:${tlsport[usherd]}"
tls = { certs = [{ cert = "$work/site.pem", key = "$work/site.key" }] }
[vhosts.all]
hosts = ["*"]
routes = [{ path = "/", upstream = "pool" }, { path = "/fault/", upstream = "fault" }]
[upstreams.pool]
servers = [{ addr = "127.0.0.1:$backend_port" }]
timeout = "${timeout}s"
connect_timeout = "1s"
[upstreams.fault]
servers = [{ addr = "127.0.0.1:$fault_port" }]
timeout = "${timeout}s"
connect_timeout = "1s"
USHERD
  RUST_LOG=warn TOKIO_WORKER_THREADS=1 "$usherd" run --no-watch -c "$work/usherd.toml" 2> "$work/usherd.err" &
  pid[usherd]=$!
  pids+=(${pid[usherd]})
}
start_nginx() {
  port[nginx]=$(free_port); h2port[nginx]=$(free_port); tlsport[nginx]=$(free_port)
  cat > "$work/nginx.conf" <<NGINX
worker_processes 1; daemon off; pid $work/nginx.pid; error_log $work/nginx.err;
events { worker_connections 300; }
http {
  access_log off;
  client_header_timeout ${timeout}s; client_body_timeout ${timeout}s; send_timeout ${timeout}s;
  keepalive_timeout 10s;
  proxy_connect_timeout 1s; proxy_read_timeout ${timeout}s; proxy_send_timeout ${timeout}s;
  proxy_temp_path $work/proxy_temp; client_body_temp_path $work/body_temp;
  upstream pool { server 127.0.0.1:$backend_port; keepalive 64; }
  upstream fault { server 127.0.0.1:$fault_port; keepalive 16; }
  server {
    listen 127.0.0.1:${port[nginx]};
    listen 127.0.0.1:${h2port[nginx]} http2;
    listen 127.0.0.1:${tlsport[nginx]} ssl http2;
    ssl_certificate $work/site.pem; ssl_certificate_key $work/site.key;
    location / { proxy_pass http://pool; proxy_http_version 1.1; proxy_set_header Connection ""; }
    location /fault/ { proxy_pass http://fault; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
NGINX
  nginx -c "$work/nginx.conf" -p "$work" &
  pids+=($!)
  pid[nginx]=$(nginx_worker $!)
}
start_haproxy() {
  port[haproxy]=$(free_port); h2port[haproxy]=$(free_port); tlsport[haproxy]=$(free_port)
  cat > "$work/haproxy.cfg" <<HAPROXY
global
  nbthread 1
  maxconn $limit
defaults
  mode http
  timeout connect 1s
  timeout client ${timeout}s
  timeout server ${timeout}s
  timeout http-request ${timeout}s
  timeout http-keep-alive 10s
  option http-keep-alive
frontend web
  maxconn $limit
  bind 127.0.0.1:${port[haproxy]}
  bind 127.0.0.1:${h2port[haproxy]} proto h2
  bind 127.0.0.1:${tlsport[haproxy]} ssl crt $work/haproxy.pem alpn h2,http/1.1
  use_backend fault if { path_beg /fault/ }
  default_backend pool
backend pool
  http-reuse always
  server s1 127.0.0.1:$backend_port
backend fault
  http-reuse always
  server f1 127.0.0.1:$fault_port
HAPROXY
  haproxy -db -f "$work/haproxy.cfg" 2> "$work/haproxy.err" &
  pid[haproxy]=$!
  pids+=(${pid[haproxy]})
}

proxies=(usherd nginx haproxy)
for proxy in "${proxies[@]}"; do "start_$proxy"; done
# Each proxy answers through its plain port before the attacks start.
for proxy in "${proxies[@]}"; do
  for _ in $(seq 100); do
    curl -s -o /dev/null --max-time 1 "http://127.0.0.1:${port[$proxy]}/" && break
    sleep 0.1
  done
  curl -s -o /dev/null --max-time 1 "http://127.0.0.1:${port[$proxy]}/" || { echo "$proxy did not start" >&2; exit 1; }
done

# --- the attacks ----------------------------------------------------------------------
attacks=(slowloris slow_body_under slow_body_over no_read rapid_reset stream_flood window_stall
  continuation_flood max_connections backend_dies backend_stalls)
tls_attacks=(rapid_reset stream_flood window_stall continuation_flood)
[ "$quick" = 1 ] && tls_attacks=()
connections_for() {
  case "$1" in
    slowloris) echo "$conns_slowloris" ;;
    slow_body_*) echo "$conns_body" ;;
    no_read) echo "$conns_noread" ;;
    max_connections) echo "$conns_flood" ;;
    *) echo 0 ;;
  esac
}
results="$work/results.jsonl"
: > "$results"
run_attack() { # attack proxy [--tls]
  local attack=$1 proxy=$2; shift 2
  if [ -n "$only" ] && ! [[ ",$only," == *",$attack${1:+_tls},"* ]]; then
    return
  fi
  if ! kill -0 "${pid[$proxy]}" 2>/dev/null; then
    echo "{\"attack\": \"$attack${1:+_tls}\", \"proxy\": \"$proxy\", \"summary\": \"proxy not running\"}" >> "$results"
    return
  fi
  echo "$attack ${1:-} -> $proxy" >&2
  python3 benches/attack/attack.py "$attack" --port "${port[$proxy]}" --h2c-port "${h2port[$proxy]}" \
    --tls-port "${tlsport[$proxy]}" --probe-port "${port[$proxy]}" --pid "${pid[$proxy]}" \
    --backend-port "$backend_port" --backend-control "$backend_control" \
    --fault-port "$fault_port" --fault-control "$fault_control" \
    --connections "$(connections_for "$attack")" --duration "$duration" --timeout "$timeout" "$@" \
    | python3 -c "import json,sys; r=json.loads(sys.stdin.read()); r['proxy']='$proxy'; print(json.dumps(r))" >> "$results"
  sleep 0.5  # what the attack left closes
  # A stalled backend answers late and a reset stream can leave work behind:
  # the next attack starts with the backend idle (at most 10 s).
  for _ in $(seq 100); do
    [ "$(python3 -c "import socket; s=socket.create_connection(('127.0.0.1', $backend_control)); s.sendall(b'inflight\n'); print(s.makefile().readline().strip())")" = 0 ] && break
    sleep 0.1
  done
}
for attack in "${attacks[@]}"; do
  for proxy in "${proxies[@]}"; do run_attack "$attack" "$proxy"; done
done
for attack in "${tls_attacks[@]}"; do
  for proxy in "${proxies[@]}"; do run_attack "$attack" "$proxy" --tls; done
done

[ -n "$json" ] && cp "$results" "$json"
echo
echo "$(nproc) cores; one worker per proxy; T = ${timeout}s; ${duration}s per attack; limit $limit client connections"
python3 benches/attack/table.py "$results"
