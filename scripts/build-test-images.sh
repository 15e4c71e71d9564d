#!/usr/bin/env bash
# Build the local Docker images the tests use, without any container
# registry: the base image comes from debootstrap + `docker import`.
# Usage: scripts/build-test-images.sh [--rebuild]
# DEBIAN_RELEASE=13 builds the Debian 13 base and systemd images (a second Molecule platform).
set -euo pipefail

RELEASE=${DEBIAN_RELEASE:-12}
case "$RELEASE" in
    12) SUITE=bookworm ;;
    13) SUITE=trixie ;;
    *) echo "DEBIAN_RELEASE must be 12 or 13" >&2; exit 2 ;;
esac
BASE_IMAGE=servicehub-test/debian:$RELEASE
EXAMPLE_IMAGE=servicehub-example/whoami:latest
JUPYTERLAB_IMAGE=servicehub-example/jupyterlab:latest
SYSTEMD_IMAGE=servicehub-test/systemd:$RELEASE
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")

rebuild=0
case "${1:-}" in
    "") ;;
    --rebuild) rebuild=1 ;;
    *) echo "usage: $0 [--rebuild]" >&2; exit 2 ;;
esac

log() { echo "build-test-images: $*" >&2; }

have_image() { [ "$rebuild" -eq 0 ] && docker image inspect "$1" >/dev/null 2>&1; }

"$HERE/ensure-docker.sh"

# Remember what --rebuild replaces, to drop it once it is left untagged.
old_ids=()
if [ "$rebuild" -eq 1 ]; then
    for image in "$EXAMPLE_IMAGE" "$JUPYTERLAB_IMAGE" "$BASE_IMAGE"; do
        id=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null) && old_ids+=("$id")
    done
fi

rootfs=
cleanup() {
    [ -n "$rootfs" ] && [ -d "$rootfs" ] || return 0
    # An interrupted debootstrap can leave proc/sys mounted inside the
    # target; unmount them so the rm below cannot reach the host's.
    grep -o " $rootfs/[^ ]*" /proc/mounts | sort -r | xargs -r umount -l || true
    rm -rf --one-file-system "$rootfs"
}
trap cleanup EXIT

if have_image "$BASE_IMAGE"; then
    log "$BASE_IMAGE exists, skipping (use --rebuild to force)"
else
    command -v debootstrap >/dev/null 2>&1 \
        || { apt-get update -q && apt-get install -y -q debootstrap; }
    start=$SECONDS
    rootfs=$(mktemp -d "${TMPDIR:-/var/tmp}/servicehub-rootfs.XXXXXX")
    log "debootstrap $SUITE from $MIRROR into $rootfs"
    debootstrap --variant=minbase --include=python3,ca-certificates \
        "$SUITE" "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1 \
        || { tail -n 30 "$rootfs.log" >&2; exit 1; }
    rm -f "$rootfs.log"

    # Trust the host's extra CAs (e.g. a TLS-intercepting proxy) inside the
    # image too, so https from containers behaves like on the host.
    shopt -s nullglob
    cas=(/usr/local/share/ca-certificates/*.crt)
    shopt -u nullglob
    if [ "${#cas[@]}" -gt 0 ]; then
        cp "${cas[@]}" "$rootfs/usr/local/share/ca-certificates/"
    fi
    # Quiet: openssl rehash warns about the bundle file on every run.
    chroot "$rootfs" update-ca-certificates >/dev/null 2>&1

    # Apt caches, docs and translations are dead weight in a test image
    # (~50 MB); copyright files stay, as in Debian's own slim images.
    chroot "$rootfs" apt-get clean
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
        "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* \
        "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
        "$rootfs"/usr/share/locale/*
    find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete

    # `docker import` yields an image with no config at all; give it the
    # PATH/locale/CMD a registry debian image would have.
    tar --numeric-owner -C "$rootfs" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["bash"]' \
        - "$BASE_IMAGE" >/dev/null
    cleanup
    rootfs=
    log "built $BASE_IMAGE in $((SECONDS - start))s"
fi

# Always (re)build the example: with the layer cache this takes a second when nothing changed,
# and it keeps the image in step with examples/whoami/.
start=$SECONDS
# --pull=false: the base exists only locally, a registry lookup would fail.
docker build --pull=false -q -t "$EXAMPLE_IMAGE" "$ROOT/examples/whoami" >/dev/null
log "built $EXAMPLE_IMAGE in $((SECONDS - start))s"

# JupyterLab, a real single-page app for the reaper's scenarios: pip inside the build (PyPI
# through the host's CA bundle, which the base trusts). Cached: a second run takes a second.
start=$SECONDS
docker build --pull=false -q -t "$JUPYTERLAB_IMAGE" "$ROOT/examples/jupyterlab" >/dev/null
log "built $JUPYTERLAB_IMAGE in $((SECONDS - start))s"

# The Molecule "VM": systemd as PID 1 on the same base (apt inside the build; cached after).
start=$SECONDS
docker build --pull=false -q --build-arg "BASE=$BASE_IMAGE" -t "$SYSTEMD_IMAGE" \
    "$ROOT/molecule/images/systemd" >/dev/null
log "built $SYSTEMD_IMAGE in $((SECONDS - start))s"

for id in "${old_ids[@]}"; do
    if [ "$(docker image inspect -f '{{len .RepoTags}}' "$id" 2>/dev/null)" = 0 ]; then
        # Best effort: a container may still be using the old image.
        docker image rm "$id" >/dev/null 2>&1 || true
    fi
done

for image in "$BASE_IMAGE" "$EXAMPLE_IMAGE" "$JUPYTERLAB_IMAGE" "$SYSTEMD_IMAGE"; do
    docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' "$image" >&2
done
