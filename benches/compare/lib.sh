# Shared by the comparison scripts (sourced): package installs, PID-tracked
# processes stopped on exit, /proc readings, and the three nginx backends.
# Expects `work` (a temporary directory) to be set by the caller.

install() { apt-get update -qq >/dev/null && apt-get install -y -qq "$@" >/dev/null; }

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
hz=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
user_ticks() { awk '{print $14}' "/proc/$1/stat"; }
cpu0_busy() { awk '/^cpu0 / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
status_kib() { awk -v f="$2" '$1 == f {print $2}' "/proc/$1/status"; }
us() { # wrk latency like 1.23ms / 456.00us / 1.2s -> microseconds
  python3 -c "import sys,re; v=sys.argv[1]; m=re.match(r'([0-9.]+)(us|ms|s)',v); f={'us':1,'ms':1e3,'s':1e6}[m.group(2)]; print(float(m.group(1))*f)" "$1"
}
# CPU microseconds the process used per request: ticks before, ticks after, requests.
cpu_us_per_request() { python3 -c "print(($2-$1)/$hz*1e6/$3)"; }

# One nginx worker on CPU 1 answering `200 ok` (and /big: 1 MiB) on three
# loopback ports, appended to `backends`.
backends=()
start_nginx_backends() {
  head -c 1048576 /dev/zero > "$work/big"
  # nginx's workers run as nobody: they must be able to read the file.
  chmod 755 "$work"; chmod 644 "$work/big"
  {
    echo "worker_processes 1; daemon off; pid $work/backend.pid; error_log $work/backend.err;"
    echo "events { worker_connections 20000; }"
    echo "http { access_log off; keepalive_requests 1000000;"
    for _ in 1 2 3; do
      local port
      port=$(free_port); backends+=("127.0.0.1:$port")
      echo "  server { listen 127.0.0.1:$port; location = /big { alias $work/big; } location / { return 200 \"ok\n\"; } }"
    done
    echo "}"
  } > "$work/backend.conf"
  taskset -c 1 nginx -c "$work/backend.conf" -p "$work" &
  pids+=($!)
}

# The PID of the first worker of the nginx master `$1`.
nginx_worker() {
  local worker=""
  for _ in $(seq 50); do worker=$(pgrep -P "$1" | head -1 || true); [ -n "$worker" ] && break; sleep 0.1; done
  echo "$worker"
}
