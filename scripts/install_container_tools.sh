#!/usr/bin/env bash
# Installs what tests/deploy/test_image.py builds and runs the image with: podman (with buildah's
# build engine), runc and debootstrap, from Debian's archive. Needs root; a no-op when they are there.
set -euo pipefail
missing=()
for tool in podman runc debootstrap; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "install_container_tools: need root and apt-get to install ${missing[*]}" >&2
  exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah runc debootstrap >/dev/null
