# Shared helpers for the docker compute back-end of raptiformica.
# Sourced (POSIX sh) by the scripts in this directory; not run on its own.
#
# Environment (set by the raptiformica core, all optional here except where a
# script says otherwise):
#   RAPTIFORMICA_CACHE_DIR      lock files and the image build log
#   RAPTIFORMICA_INSTANCE_DIR   the instance's own directory (default: cwd)
#   RAPTIFORMICA_PUBLIC_KEY_FILE  public key authorized for root (start only)
#   RAPTIFORMICA_DEBIAN_MIRROR  overrides the Debian mirror read from apt
#   RAPTIFORMICA_DOCKER_IMAGE   overrides the base image name
#   RAPTIFORMICA_DOCKER_NETWORK overrides the docker network name
#   RAPTIFORMICA_DOCKER_PACKAGED_REPO overrides the repository of packaged images
#   RAPTIFORMICA_SERVER_TYPE    the server type (tag of its packaged image)
#   RAPTIFORMICA_NO_PACKAGE     1: start from the base image even when a packaged one exists

RAPTIFORMICA_DOCKER_IMAGE="${RAPTIFORMICA_DOCKER_IMAGE:-raptiformica-base:bookworm}"
RAPTIFORMICA_DOCKER_PACKAGED_REPO="${RAPTIFORMICA_DOCKER_PACKAGED_REPO:-raptiformica-packaged}"
RAPTIFORMICA_DOCKER_NETWORK="${RAPTIFORMICA_DOCKER_NETWORK:-raptiformica}"
RAPTIFORMICA_INSTANCE_DIR="${RAPTIFORMICA_INSTANCE_DIR:-$(pwd)}"

# Progress and diagnostics go to stderr: stdout is reserved for values.
log() {
    printf 'raptiformica[docker]: %s\n' "$*" >&2
}

die() {
    log "error: $*"
    exit 1
}

cache_dir() {
    _cache="${RAPTIFORMICA_CACHE_DIR:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/raptiformica}"
    mkdir -p "$_cache" || die "cannot create cache directory $_cache"
    printf '%s\n' "$_cache"
}

need_docker() {
    command -v docker >/dev/null 2>&1 || die "docker is not installed"
}

# Prints the id stored in <instance dir>/container_id, or nothing.
stored_container_id() {
    _f="$RAPTIFORMICA_INSTANCE_DIR/container_id"
    if [ -s "$_f" ]; then
        _id=$(head -n 1 "$_f" | tr -d '[:space:]')
        if [ -n "$_id" ]; then printf '%s\n' "$_id"; fi
    fi
}

# Prints the stored container id; exits with an error when there is none.
required_container_id() {
    _rid=$(stored_container_id)
    [ -n "$_rid" ] || die "no container_id in $RAPTIFORMICA_INSTANCE_DIR"
    printf '%s\n' "$_rid"
}

# Ids of every container (running or not) labelled with this instance dir.
labelled_container_ids() {
    docker ps -a -q --no-trunc \
        --filter "label=raptiformica.instance=$RAPTIFORMICA_INSTANCE_DIR" 2>/dev/null || true
}

# The Debian packages of the base image (sqlite3 for state machines such as the SQLite
# example in examples/).
RAPTIFORMICA_BASE_PACKAGES=openssh-server,iproute2,iputils-ping,procps,ca-certificates,libssl3,sqlite3

# The first 16 hex digits of the SHA-256 of the base image's recipe (the entrypoint, the
# rootfs recipe and the package list): images are labelled with the one they were made with
# (raptiformica.entrypoint), so a changed recipe invalidates them.
entrypoint_sum() {
    { cat "$SCRIPT_DIR/entrypoint.sh" "$SCRIPT_DIR/rootfs.sh"; printf '%s\n' "$RAPTIFORMICA_BASE_PACKAGES"; } | sha256sum | cut -c1-16
}

# The packaged image of a server type (`package.sh` makes it): <repo>:<server type>, the
# server type made a valid docker tag ([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}).
packaged_image() {
    _tag=$(printf '%s' "$1" | tr -c 'a-zA-Z0-9_.-' '-' | cut -c1-127)
    case "$_tag" in
        [a-zA-Z0-9_]*) ;;
        *) _tag="_$_tag" ;;
    esac
    printf '%s:%s\n' "$RAPTIFORMICA_DOCKER_PACKAGED_REPO" "$_tag"
}

# The value of an image's label, or nothing (also when the image does not exist).
image_label() {
    docker image inspect --format "{{index .Config.Labels \"$2\"}}" "$1" 2>/dev/null || true
}

# The container this shell runs in, when it is one of ours on the engine it can reach (a node
# that was handed the engine: `spawn --with-engine`), else nothing.
own_container() {
    docker ps -q --no-trunc --filter "label=raptiformica.host=$(hostname)" 2>/dev/null | head -n 1
}

# The host paths of the engine's socket and CLI to hand a new machine, as "SOCKET CLI": on a
# node with an engine the ones its own container was given (a bind mount's source is a path
# on the engine's host, not in this container), else this host's.
engine_paths() {
    _self=$(own_container)
    if [ -n "$_self" ]; then
        docker inspect --format \
            '{{range .Mounts}}{{if eq .Destination "/var/run/docker.sock"}}{{.Source}}{{end}}{{end}} {{range .Mounts}}{{if eq .Destination "/usr/local/bin/docker"}}{{.Source}}{{end}}{{end}}' \
            "$_self"
        return
    fi
    case "${DOCKER_HOST:-}" in
        unix://*) _sock=${DOCKER_HOST#unix://} ;;
        '') _sock=/var/run/docker.sock ;;
        *) die "--with-engine hands a machine the engine's unix socket; DOCKER_HOST=$DOCKER_HOST is not one" ;;
    esac
    [ -S "$_sock" ] || die "--with-engine: no docker socket at $_sock"
    _cli=$(readlink -f "$(command -v docker)")
    printf '%s %s\n' "$_sock" "$_cli"
}
