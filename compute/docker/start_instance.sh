#!/bin/sh
# Start one raptiformica docker instance (compute type docker, server type
# headless) for the instance directory (cwd / RAPTIFORMICA_INSTANCE_DIR).
#
# - makes sure the base image and the docker network "raptiformica" exist;
# - starts from the server type's packaged image (package.sh) when there is one
#   made from the current base (its raptiformica.entrypoint label), unless
#   RAPTIFORMICA_NO_PACKAGE=1; says on stderr which image it used;
# - runs a detached container on that network with NET_ADMIN, /dev/net/tun and
#   IPv6 enabled (the overlay needs all three), under docker's init (it reaps
#   the daemons raptiformica starts),
#   labelled raptiformica.instance=$RAPTIFORMICA_INSTANCE_DIR (and .host, its
#   hostname; .spawner, the hostname of the machine that spawned it; .cluster,
#   $RAPTIFORMICA_CLUSTER_ID, for `destroy`), with sshd in the
#   foreground and root's authorized_keys set to $RAPTIFORMICA_PUBLIC_KEY_FILE;
# - with RAPTIFORMICA_SHARED_ARTIFACTS (a directory of this host's artifacts:
#   consul, yggdrasil), when this machine is not itself a container, bind-mounts
#   it read-only at /usr/lib/raptiformica/host-artifacts (and $RAPTIFORMICA_BIN,
#   the running binary, beside it) and links each file the container lacks from
#   its artifacts folder: slaving finds them there by checksum and uploads only
#   the rest (label raptiformica.shared_artifacts);
# - with RAPTIFORMICA_WITH_ENGINE=1, or when this machine is a container that was
#   handed the engine, bind-mounts the engine's socket and CLI into it (label
#   raptiformica.engine=docker): the new machine can spawn machines itself;
# - writes the container id to ./container_id;
# - returns once the container runs, after waiting (at most
#   RAPTIFORMICA_DOCKER_SSH_WAIT seconds, default 60) for its sshd to answer.
# On any failure the container is removed again and the exit status is nonzero.
# Progress goes to stderr; nothing is printed on stdout.
set -eu

SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
. "$SCRIPT_DIR/common.sh"

need_docker

key_file="${RAPTIFORMICA_PUBLIC_KEY_FILE:-}"
[ -n "$key_file" ] || die "RAPTIFORMICA_PUBLIC_KEY_FILE is not set"
[ -r "$key_file" ] || die "cannot read the public key file $key_file"
authorized_keys=$(grep -E '^[[:space:]]*(ssh-|ecdsa-|sk-)' "$key_file" || true)
[ -n "$authorized_keys" ] || die "$key_file holds no OpenSSH public key"

mkdir -p "$RAPTIFORMICA_INSTANCE_DIR"
cd "$RAPTIFORMICA_INSTANCE_DIR"
id_file="$RAPTIFORMICA_INSTANCE_DIR/container_id"

existing=$(stored_container_id)
if [ -n "$existing" ] && docker container inspect "$existing" >/dev/null 2>&1; then
    die "this instance already has container $existing ($id_file); clean it up first"
fi

sh "$SCRIPT_DIR/ensure_image.sh" || die "the base image $RAPTIFORMICA_DOCKER_IMAGE is not available"
server_type="${RAPTIFORMICA_SERVER_TYPE:-headless}"

image=$RAPTIFORMICA_DOCKER_IMAGE
packaged=$(packaged_image "$server_type")
if [ "${RAPTIFORMICA_NO_PACKAGE:-0}" = 1 ]; then
    log "using base image $image (packaged images ignored: --no-package)"
elif [ "$(image_label "$packaged" raptiformica.packaged)" != 1 ]; then
    log "using base image $image (no packaged image $packaged)"
elif [ "$(image_label "$packaged" raptiformica.entrypoint)" != "$(entrypoint_sum)" ]; then
    log "using base image $image (packaged image $packaged was made from an older base image; run \`raptiformica package\` again)"
else
    image=$packaged
    log "using packaged image $image"
fi

# The network; concurrent starts are serialized so that no two networks of
# the same name get created (docker allows duplicate names in a race).
if ! docker network inspect "$RAPTIFORMICA_DOCKER_NETWORK" >/dev/null 2>&1; then
    cache=$(cache_dir)
    (
        exec 8>"$cache/docker-network.lock"
        flock -w 120 8 || die "timed out waiting for $cache/docker-network.lock"
        if ! docker network inspect "$RAPTIFORMICA_DOCKER_NETWORK" >/dev/null 2>&1; then
            log "creating docker network $RAPTIFORMICA_DOCKER_NETWORK"
            if ! err=$(docker network create --driver bridge \
                    --label raptiformica.network=1 "$RAPTIFORMICA_DOCKER_NETWORK" 2>&1 >/dev/null); then
                # Another host user (without our lock) may have won the race.
                docker network inspect "$RAPTIFORMICA_DOCKER_NETWORK" >/dev/null 2>&1 ||
                    die "cannot create docker network $RAPTIFORMICA_DOCKER_NETWORK: $err"
            fi
        fi
    )
fi

# A name from the instance dir's base name (a uuid in raptiformica).
base=$(basename -- "$RAPTIFORMICA_INSTANCE_DIR" | tr -c 'a-zA-Z0-9-\n' '-' | tr -d '\n' | cut -c1-36)
base=${base#-}
[ -n "$base" ] || base="$(date +%s)-$$"
name="raptiformica-docker-$(printf '%s' "$server_type" | tr -c 'a-zA-Z0-9-' '-')-$base"
if docker container inspect "$name" >/dev/null 2>&1; then
    name="$name-$(date +%s)-$$"
fi
hostname=$(printf 'raptiformica-%s' "$base" | cut -c1-63 | sed 's/-*$//')

cid=""
started=0
on_exit() {
    rc=$?
    trap - EXIT INT TERM
    if [ "$rc" -ne 0 ] && [ "$started" -eq 0 ]; then
        # Also whatever an interrupted `docker create` left behind for us.
        for id in $( { [ -z "$cid" ] || printf '%s\n' "$cid"; labelled_container_ids; } | sort -u); do
            log "removing the half-created container ${id%"${id#????????????}"}"
            docker rm -f "$id" >/dev/null 2>&1 || log "warning: could not remove container $id"
        done
        rm -f "$id_file"
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A compute engine for the new machine (`spawn --with-engine`, or spawned by a node that has
# one): the engine's socket and CLI, bind-mounted from the engine's host.
set --
# Set when this runs in a container of ours (a node with an engine); asked of docker once.
self=$(own_container)
if [ "${RAPTIFORMICA_WITH_ENGINE:-0}" = 1 ] || [ -n "$self" ]; then
    paths=$(engine_paths)
    sock=${paths%% *}
    cli=${paths#* }
    [ -n "$sock" ] && [ -n "$cli" ] && [ "$sock" != "$paths" ] || die "cannot tell the engine's socket and CLI (got: $paths)"
    log "handing the machine this docker engine ($sock): it is root on the engine's host"
    set -- --volume "$sock:/var/run/docker.sock" --volume "$cli:/usr/local/bin/docker:ro" --label raptiformica.engine=docker
fi

# This host's artifacts, read-only (see the header). A node's own paths are not the engine
# host's, so a node that spawns does not share its own.
shared_at=/usr/lib/raptiformica/host-artifacts
shared=${RAPTIFORMICA_SHARED_ARTIFACTS:-}
if [ -n "$shared" ] && { [ ! -f "$shared/SHA256SUMS" ] || [ -n "$self" ]; }; then
    shared=""
fi
if [ -n "$shared" ]; then
    set -- "$@" --volume "$shared:$shared_at:ro" --label "raptiformica.shared_artifacts=$shared"
    # This binary too, the one slaving would upload (RAPTIFORMICA_BIN: the running one).
    if [ -f "${RAPTIFORMICA_BIN:-}" ]; then
        set -- "$@" --volume "$RAPTIFORMICA_BIN:$shared_at-bin/raptiformica:ro"
    fi
fi

log "creating container $name"
if ! cid=$(docker create \
        --name "$name" \
        --hostname "$hostname" \
        --network "$RAPTIFORMICA_DOCKER_NETWORK" \
        --label "raptiformica.instance=$RAPTIFORMICA_INSTANCE_DIR" \
        --label "raptiformica.compute_type=${RAPTIFORMICA_COMPUTE_TYPE:-docker}" \
        --label "raptiformica.server_type=$server_type" \
        --label "raptiformica.host=$hostname" \
        --label "raptiformica.spawner=$(hostname)" \
        --label "raptiformica.cluster=${RAPTIFORMICA_CLUSTER_ID:-}" \
        --label "raptiformica.workstation=${RAPTIFORMICA_WORKSTATION:-}" \
        --init \
        --cap-add NET_ADMIN \
        --device /dev/net/tun \
        --sysctl net.ipv6.conf.all.disable_ipv6=0 \
        --sysctl net.ipv6.conf.default.disable_ipv6=0 \
        --env "RAPTIFORMICA_AUTHORIZED_KEYS=$authorized_keys" \
        "$@" \
        "$image"); then
    cid=""
    die "docker create failed"
fi
printf '%s\n' "$cid" >"$id_file"

log "starting container ${cid%"${cid#????????????}"}"
docker start "$cid" >/dev/null || die "docker start failed"
if [ -n "$shared" ]; then
    # Links, not copies: a file the image already holds (a packaged one) is left as it is.
    docker exec "$cid" sh -c '
        a=/root/.raptiformica.d/artifacts
        mkdir -p "$a"
        for f in "$1"/* "$1"-bin/*; do
            [ -f "$f" ] || continue
            [ -e "$a/${f##*/}" ] || [ -L "$a/${f##*/}" ] || ln -s "$f" "$a/${f##*/}"
        done' sh "$shared_at" || die "cannot link the shared artifacts in container $cid"
    log "artifacts shared read-only from $shared"
fi

ip=""
wait_max="${RAPTIFORMICA_DOCKER_SSH_WAIT:-60}"
deadline=$(( $(date +%s) + wait_max ))
while :; do
    running=$(docker container inspect --format '{{.State.Running}}' "$cid" 2>/dev/null || true)
    if [ "$running" != "true" ]; then
        log "container $cid is not running; its last log lines:"
        docker logs --tail 20 "$cid" >&2 2>&1 || true
        die "the container exited right after its start"
    fi
    if [ -z "$ip" ]; then
        ip=$(sh "$SCRIPT_DIR/get_hostname.sh" 2>/dev/null || true)
    fi
    if [ -n "$ip" ]; then
        if command -v ssh-keyscan >/dev/null 2>&1; then
            # Answers with a host key once sshd is up (a real SSH handshake).
            if [ -n "$(ssh-keyscan -T 2 -t ed25519 "$ip" 2>/dev/null)" ]; then
                break
            fi
        elif docker logs "$cid" 2>&1 | grep -q 'Server listening on'; then
            break
        fi
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
        log "warning: sshd on ${ip:-the container} did not answer within ${wait_max}s; going on"
        break
    fi
    sleep 0.2 2>/dev/null || sleep 1
done

[ -n "$ip" ] || die "the container has no IPv4 address on network $RAPTIFORMICA_DOCKER_NETWORK"
started=1
log "instance running: container ${cid%"${cid#????????????}"} ($name), ssh root@$ip port 22"
