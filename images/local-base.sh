#!/usr/bin/env bash
# Build a Debian bookworm Python base image without any registry, for CI and offline machines:
#   images/local-base.sh [IMAGE]          (default IMAGE: localhost/debian-python:bookworm)
# debootstrap (minbase + python3-venv) from this machine's configured Debian mirror, then
# `buildah from scratch` + copy + commit. BUILDAH_ROOT, if set, keeps buildah's vfs storage there.
# The machine's CA bundle goes in too (and pip/requests/ssl are pointed at it), so pip inside the
# build trusts what this machine trusts (e.g. a TLS-intercepting proxy to PyPI).
# Use it as the stage images' base: make images CPU_BASE_IMAGE=localhost/debian-python:bookworm
set -euo pipefail
image=${1:-localhost/debian-python:bookworm}
mirror=${DEBIAN_MIRROR:-$({ cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null || true; } \
  | awk '/^URIs:/ {print $2; exit} /^deb / {print $2; exit}')}
buildah=(buildah --storage-driver vfs)
if [ -n "${BUILDAH_ROOT:-}" ]; then buildah+=(--root "$BUILDAH_ROOT/root" --runroot "$BUILDAH_ROOT/run"); fi

rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include=python3-minimal,python3-venv bookworm "$rootfs" "${mirror:?no Debian mirror configured; set DEBIAN_MIRROR}"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
config=(--env PATH=/usr/local/bin:/usr/bin:/bin --env LANG=C.UTF-8 --cmd python3)
ca=/etc/ssl/certs/ca-certificates.crt
if [ -f "$ca" ]; then
  install -D -m 0644 "$ca" "$rootfs$ca"
  config+=(--env PIP_CERT=$ca --env SSL_CERT_FILE=$ca --env REQUESTS_CA_BUNDLE=$ca)
fi
container=$("${buildah[@]}" from scratch)
"${buildah[@]}" copy "$container" "$rootfs/" /
"${buildah[@]}" config "${config[@]}" "$container"
"${buildah[@]}" commit --rm "$container" "$image"
