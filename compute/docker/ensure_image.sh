#!/bin/sh
# Make sure the docker base image raptiformica-base:bookworm exists, building
# it if it is missing (or always with --force).
#
# There is no image registry to pull from, so the image is built locally: a
# Debian bookworm rootfs made by mmdebstrap (minbase + openssh-server and the
# few tools raptiformica needs), imported with `docker import`. The Debian
# mirror is read from the host's apt sources; RAPTIFORMICA_DEBIAN_MIRROR
# overrides it. Concurrent callers are serialized with flock on a lock file in
# the cache dir; the build log is kept there too.
#
# Usage: ensure_image.sh [--force]
#        ensure_image.sh --print-mirror   (print the mirror it would use)
# Prints progress on stderr only; exit 0 once the image exists.
set -eu

SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
. "$SCRIPT_DIR/common.sh"
. "$SCRIPT_DIR/rootfs.sh"

SUITE=bookworm
PACKAGES=$RAPTIFORMICA_BASE_PACKAGES

force=0
print_mirror=0
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        --print-mirror) print_mirror=1 ;;
        -h|--help)
            sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
            exit 0 ;;
        *) die "ensure_image.sh: unknown argument: $arg" ;;
    esac
done

# The entrypoint is baked into the image: an image made from another version of it is rebuilt.
ENTRYPOINT_SUM=$(entrypoint_sum)

image_is_current() {
    [ "$(docker image inspect --format '{{index .Config.Labels "raptiformica.entrypoint"}}' "$RAPTIFORMICA_DOCKER_IMAGE" 2>/dev/null)" = "$ENTRYPOINT_SUM" ]
}

image_id() {
    docker image inspect --format '{{.Id}}' "$RAPTIFORMICA_DOCKER_IMAGE" 2>/dev/null || true
}

if [ "$print_mirror" -eq 0 ]; then
    need_docker
    if [ "$force" -eq 0 ] && [ -n "$(image_id)" ] && image_is_current; then
        exit 0
    fi
else
    mirror="${RAPTIFORMICA_DEBIAN_MIRROR:-$(host_debian_mirror "$SUITE")}"
    [ -n "$mirror" ] || die "found no Debian mirror in the host's apt sources"
    printf '%s\n' "$mirror"
    exit 0
fi

cache=$(cache_dir)
lock="$cache/docker-image.lock"
build_log="$cache/docker-image-build.log"

id_before_lock=$(image_id)

exec 9>"$lock"
if ! flock -n 9; then
    log "waiting for another build of $RAPTIFORMICA_DOCKER_IMAGE to finish (lock $lock)"
    flock -w 3600 9 || die "timed out waiting for the image build lock $lock"
fi

# Someone else may have built the image while we waited for the lock.
id_now=$(image_id)
if [ "$force" -eq 0 ] && [ -n "$id_now" ] && image_is_current; then
    exit 0
fi
if [ "$force" -eq 1 ] && [ -n "$id_now" ] && [ "$id_now" != "$id_before_lock" ]; then
    log "$RAPTIFORMICA_DOCKER_IMAGE was just rebuilt by another process"
    exit 0
fi

if [ -n "$id_now" ] && ! image_is_current; then
    log "rebuilding base image $RAPTIFORMICA_DOCKER_IMAGE: its entrypoint changed (takes a few minutes; log: $build_log)"
elif [ -n "$id_now" ]; then
    log "rebuilding base image $RAPTIFORMICA_DOCKER_IMAGE (takes a few minutes; log: $build_log)"
else
    log "building base image $RAPTIFORMICA_DOCKER_IMAGE (first time only, takes a few minutes; log: $build_log)"
fi
: >"$build_log"

workdir=""
cleanup() {
    if [ -n "$workdir" ]; then rm -rf "$workdir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
    log "error: $*"
    if [ -s "$build_log" ]; then
        log "last lines of $build_log:"
        tail -n 25 "$build_log" >&2
    fi
    exit 1
}

if ! command -v mmdebstrap >/dev/null 2>&1; then
    [ "$(id -u)" -eq 0 ] || fail "mmdebstrap is missing; install it (apt-get install mmdebstrap) or run this as root"
    log "installing mmdebstrap (apt-get)"
    {
        DEBIAN_FRONTEND=noninteractive apt-get update &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mmdebstrap
    } >>"$build_log" 2>&1 || fail "could not install mmdebstrap"
fi

mirror="${RAPTIFORMICA_DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
    mirror=$(host_debian_mirror "$SUITE")
    [ -n "$mirror" ] || fail "found no Debian mirror in /etc/apt/sources.list{,.d/*}; set RAPTIFORMICA_DEBIAN_MIRROR"
fi
log "using Debian mirror $mirror (suite $SUITE)"

workdir=$(mktemp -d "$cache/docker-image-build.XXXXXX")
rootfs_tar="$workdir/rootfs.tar"

log "bootstrapping the Debian $SUITE rootfs with mmdebstrap"
debian_rootfs "$rootfs_tar" "$PACKAGES" "$mirror" >>"$build_log" 2>&1 || fail "mmdebstrap failed"

log "importing the rootfs ($(du -h "$rootfs_tar" | cut -f1)) as $RAPTIFORMICA_DOCKER_IMAGE"
docker import \
    --change 'ENTRYPOINT ["/usr/local/sbin/raptiformica-entrypoint"]' \
    --change 'CMD ["/usr/sbin/sshd", "-D", "-e"]' \
    --change 'EXPOSE 22' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'LABEL raptiformica.base-image=1' \
    --change "LABEL raptiformica.entrypoint=$ENTRYPOINT_SUM" \
    --message "raptiformica base image (Debian $SUITE, mmdebstrap minbase + openssh-server)" \
    "$rootfs_tar" "$RAPTIFORMICA_DOCKER_IMAGE" >>"$build_log" 2>&1 || fail "docker import failed"

id_new=$(image_id)
[ -n "$id_new" ] || fail "image $RAPTIFORMICA_DOCKER_IMAGE is missing after the import"
if [ -n "$id_now" ] && [ "$id_now" != "$id_new" ]; then
    # The previous build, now untagged; still used by running containers it stays.
    docker image rm "$id_now" >/dev/null 2>&1 || true
fi
log "base image $RAPTIFORMICA_DOCKER_IMAGE is ready ($(docker image inspect --format '{{.Size}}' "$RAPTIFORMICA_DOCKER_IMAGE") bytes)"
