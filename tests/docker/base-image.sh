#!/usr/bin/env bash
# Makes the image the Dockerfile starts FROM, debian:bookworm-slim, on a
# machine that cannot pull it: a minimal Debian bookworm root built with
# debootstrap from this machine's Debian mirror, imported under that tag.
# Does nothing when the image is already there (pulled or made before).
#
# Needs root (debootstrap), debootstrap and docker. The mirror is the first
# Debian one in /etc/apt/sources.list(.d), or $DEBIAN_MIRROR.
# Used by tests/compose.rs; see docs/compose.md.
set -euo pipefail

image=debian:bookworm-slim
if docker image inspect "$image" >/dev/null 2>&1; then
  exit 0
fi

for command in debootstrap docker; do
  command -v "$command" >/dev/null || {
    echo "base-image.sh: $command is missing (Debian package: $command; tests/run.sh installs it)" >&2
    exit 1
  }
done
if [ "$(id -u)" -ne 0 ]; then
  echo "base-image.sh: debootstrap needs root" >&2
  exit 1
fi

# The first .../debian URI of apt's sources, one-line or deb822 format.
configured_mirror() {
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
    grep -oE '(https?|file)://[^ ]*/debian/?( |$)' | head -n 1 | tr -d ' ' || true
}
mirror="${DEBIAN_MIRROR:-$(configured_mirror)}"
mirror="${mirror:-http://deb.debian.org/debian}"

root="$(mktemp -d /tmp/usherd-base-image.XXXXXX)"
trap 'rm -rf "$root"' EXIT
echo "base-image.sh: building $image with debootstrap from $mirror (a minute or two)" >&2
debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 || {
  tail -n 20 "$root.log" >&2
  rm -f "$root.log"
  exit 1
}
rm -f "$root.log"
# What an image does not need: package lists and downloaded packages.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb
tar -C "$root" -c . | docker import - "$image" >/dev/null
echo "base-image.sh: $image imported" >&2
