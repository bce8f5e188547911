#!/bin/sh
# Remove the instance's container (the one in ./container_id and any other
# container labelled with this instance dir). Succeeds when it is already gone;
# fails only when a container that still exists could not be removed.
set -eu

SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
. "$SCRIPT_DIR/common.sh"

need_docker
docker version --format '{{.Server.Version}}' >/dev/null 2>&1 ||
    die "the docker daemon does not answer; cannot clean up $RAPTIFORMICA_INSTANCE_DIR"

ids=$( { stored_container_id; labelled_container_ids; } | sort -u)
failed=0
for cid in $ids; do
    docker container inspect "$cid" >/dev/null 2>&1 || continue
    err=$(docker rm -f "$cid" 2>&1 >/dev/null) || true
    if docker container inspect "$cid" >/dev/null 2>&1; then
        log "error: cannot remove container $cid: $err"
        failed=1
    else
        log "removed container ${cid%"${cid#????????????}"}"
    fi
done
[ "$failed" -eq 0 ] || exit 1
rm -f "$RAPTIFORMICA_INSTANCE_DIR/container_id"
