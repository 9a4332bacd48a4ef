#!/usr/bin/env bash
# The whole test suite, with what it needs: installs the Debian packages the
# tests drive (real clients and servers) when they are missing, then runs
# `cargo test`. Arguments go to cargo test (e.g. `tests/run.sh --test reload`).
# tests/compose.rs and tests/compose_registry.rs also need a running Docker,
# which this script does not install.
#
# A first run on a fresh machine installs packages and Python clients (a few
# minutes) and builds
# the project and its tests (about 5 minutes on 2 cores); the tests then take
# about 3 minutes. Later runs skip what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# command -> Debian package
declare -A needed=(
  [curl]=curl                 # TLS, HTTP/2 and upload clients
  [chromium]=chromium         # the dashboard, in a real browser
  [python3]=python3           # real Python backends (http.server)
  [dnsmasq]=dnsmasq-base      # a real DNS server for discovery
  [docker-compose]=docker-compose  # the Compose example (tests/compose.rs)
  [debootstrap]=debootstrap   # its base image, when it cannot be pulled
  [etcd]=etcd-server          # a real etcd: the fleet (tests/fleet.rs) and source = "etcd"
)
missing=()
for command in "${!needed[@]}"; do
  # debootstrap lives in /usr/sbin, which a user's PATH may lack.
  command -v "$command" >/dev/null || [ -x "/usr/sbin/$command" ] ||
    missing+=("${needed[$command]}")
done
# `python3 -m venv` needs Debian's python3-venv where python3 is Debian's.
python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
# A real ZooKeeper for source = "zookeeper" (pulls a JRE); not on PATH.
[ -x /usr/share/zookeeper/bin/zkServer.sh ] || missing+=(zookeeper)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "tests/run.sh: installing ${missing[*]}" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || {
      echo "tests/run.sh: run as root or install: ${missing[*]}" >&2
      exit 1
    }
    sudo=sudo
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Real client libraries written by others, each in a venv of its own under
# target/ (py-consul and python-consul2 both install a `consul` module).
python_clients=(py-consul==1.8.0 python-consul2==0.1.5 py-eureka-client==0.13.3 kazoo==2.11.0)
for client in "${python_clients[@]}"; do
  venv="target/test-python/${client%%==*}"
  if [ ! -x "$venv/bin/python" ]; then
    echo "tests/run.sh: installing $client into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "$client"
  fi
done

exec cargo test "$@"
