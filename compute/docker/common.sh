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

RAPTIFORMICA_DOCKER_IMAGE="${RAPTIFORMICA_DOCKER_IMAGE:-raptiformica-base:bookworm}"
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
