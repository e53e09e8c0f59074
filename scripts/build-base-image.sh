#!/usr/bin/env bash
# Build a local Python base image from Debian packages, for machines that cannot pull from Docker Hub.
#
# Usage: scripts/build-base-image.sh [TAG]     build TAG (default: $BASE_TAG or chlb-base:bookworm) if missing
#        scripts/build-base-image.sh --pick    print the base image to build ours FROM: $UPSTREAM_BASE
#                                              (python:3.12-slim) when present or pullable, else the local
#                                              TAG (built first when missing). Progress goes to stderr.
#        scripts/build-base-image.sh --help    print this
# Idempotent: does nothing when TAG already exists; concurrent callers wait for one build (flock).
# The image is Debian bookworm minbase with python3, python3-venv, python3-pip and ca-certificates
# (≈ 145 MB, Python 3.11), plus this host's extra CA certificates so `pip install` inside builds passes
# certificate checks behind a TLS-intercepting proxy.
set -euo pipefail

usage() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; }

PICK=0
case ${1:-} in
    -h | --help) usage; exit 0 ;;
    --pick) PICK=1; shift ;;
    -*) printf 'build-base-image: unknown option %s\n' "$1" >&2; usage >&2; exit 2 ;;
esac
TAG=${1:-${BASE_TAG:-chlb-base:bookworm}}
SUITE=${BASE_SUITE:-bookworm}
UPSTREAM_BASE=${UPSTREAM_BASE:-python:3.12-slim}

say() { printf 'build-base-image: %s\n' "$*" >&2; }

if ((PICK)); then
    # A failed pull is cheap where Docker Hub is unreachable (DNS fails at once); bounded anyway.
    if docker image inspect "$UPSTREAM_BASE" >/dev/null 2>&1 \
        || timeout 120 docker pull -q "$UPSTREAM_BASE" >/dev/null 2>&1; then
        echo "$UPSTREAM_BASE"
        exit 0
    fi
    say "$UPSTREAM_BASE cannot be pulled; using the local base image $TAG"
    "${BASH_SOURCE[0]}" "$TAG" >&2
    echo "$TAG"
    exit 0
fi

if docker image inspect "$TAG" >/dev/null 2>&1; then
    say "$TAG already exists; nothing to do"
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    say "error: debootstrap needs root"
    exit 1
fi
# One build at a time: a second caller waits, then finds the image.
exec 9>/tmp/chlb-build-base-image.lock
flock -w 600 9 || { say "error: another build holds /tmp/chlb-build-base-image.lock"; exit 1; }
if docker image inspect "$TAG" >/dev/null 2>&1; then
    say "$TAG was built meanwhile"
    exit 0
fi
command -v debootstrap >/dev/null 2>&1 || "$(dirname "${BASH_SOURCE[0]}")/apt-install.sh" debootstrap

MIRROR=${BASE_MIRROR:-}
if [[ -z "$MIRROR" ]]; then
    MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
fi
if [[ -z "$MIRROR" ]]; then
    MIRROR=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
fi
MIRROR=${MIRROR:-http://deb.debian.org/debian}

WORK=$(mktemp -d /tmp/chlb-base.XXXXXX)
R=$WORK/rootfs
# debootstrap can leave /proc, /sys or a bind-mounted /dev under the rootfs (on failure, or in a
# container): unmount them before tar or rm, and never let rm cross into another file system.
unmount_rootfs() {
    local m
    for m in dev/pts dev/shm dev proc sys; do
        if mountpoint -q "$R/$m" 2>/dev/null; then umount -l "$R/$m" 2>/dev/null || true; fi
    done
}
cleanup() {
    unmount_rootfs
    rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT

start=$SECONDS
say "debootstrap $SUITE from $MIRROR into $R"
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    "$SUITE" "$R" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
    say "error: debootstrap failed; last lines:"
    tail -n 20 "$WORK/debootstrap.log" >&2
    exit 1
}
unmount_rootfs
cp /usr/local/share/ca-certificates/*.crt "$R/usr/local/share/ca-certificates/" 2>/dev/null || true
chroot "$R" update-ca-certificates >/dev/null 2>&1
# pip inside the image installs into venvs, but allow system installs too (PEP 668 marker).
rm -f "$R"/usr/lib/python3*/EXTERNALLY-MANAGED
rm -rf "$R"/var/cache/apt/archives/*.deb "$R"/var/lib/apt/lists/* "$R"/usr/share/doc/* "$R"/usr/share/man/* \
    "$R"/usr/share/locale/*
# docker import records no PATH: set the usual one so images built FROM this can extend it.
tar -C "$R" -c . | docker import -c 'ENV LANG=C.UTF-8' \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["python3"]' - "$TAG" >/dev/null
say "built $TAG in $((SECONDS - start)) s ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
