#!/usr/bin/env bash
# Make the Dockerfiles' base image locally when no container registry can be reached.
#
#   scripts/base-image.sh [IMAGE]     (default: the FROM of infra/docker/Dockerfile.cpu)
#
# Builds a Debian 12 (bookworm) root filesystem with debootstrap (minbase + python3, venv, pip;
# Python 3.11, like the official python:3.11-slim-bookworm image), imports it into podman and
# tags it with the base image's name, so `FROM python:3.11.14-slim-bookworm` builds unchanged.
# Differences from the official image: Python is /usr/bin/python3 and pip outside a venv is
# refused (PEP 668); the Dockerfiles use `python3 -m venv` and install into the venv, which
# works on both. Nothing is done when the image is already present. Needs root (debootstrap) and
# the Debian mirror of the host's apt sources.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/infra/docker/containers.conf}"
image="${1:-$(awk 'toupper($1)=="FROM"{print $2; exit}' "$here/infra/docker/Dockerfile.cpu")}"
# podman names images from Docker Hub docker.io/library/NAME:TAG; give the local one the same name
case "$image" in */*) full="$image" ;; *) full="docker.io/library/$image" ;; esac

if podman image exists "$full"; then
  echo "base image $full: present"
  exit 0
fi
if timeout 60 podman pull -q "$full" >/dev/null 2>&1; then
  echo "base image $full: pulled"
  exit 0
fi

command -v debootstrap >/dev/null || { echo "error: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 2; }
# the host's Debian mirror (deb822 .sources or a one-line sources.list)
mirror="$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '$2 !~ /security/ {print $2; exit}')"
[ -n "$mirror" ] || mirror="$(awk '$1=="deb" && $3 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)"
mirror="${mirror:-http://deb.debian.org/debian}"

rootfs="$(mktemp -d /var/tmp/reclora-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT
echo "base image $full: not pullable; building a Debian bookworm root filesystem from $mirror"
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip bookworm "$rootfs" "$mirror" >/dev/null
# slim like the official image: no apt lists, docs or caches
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/usr/share/doc/* \
       "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
tar -C "$rootfs" -c . | podman import -q \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --message "Debian bookworm minbase + python3 (local stand-in for $full)" - "$full" >/dev/null
echo "base image $full: built locally ($(podman run --rm "$full" python3 --version))"
