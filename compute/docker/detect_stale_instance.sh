#!/bin/sh
# Exit 0 iff the instance is alive: ./container_id exists and that container
# is running. Exit 1 when it is stale (no id, container gone or stopped).
set -eu

SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
. "$SCRIPT_DIR/common.sh"

need_docker
cid=$(stored_container_id)
if [ -z "$cid" ]; then
    log "stale: no container_id in $RAPTIFORMICA_INSTANCE_DIR"
    exit 1
fi
running=$(docker container inspect --format '{{.State.Running}}' "$cid" 2>/dev/null || true)
if [ "$running" = "true" ]; then
    exit 0
fi
if [ -z "$running" ]; then
    log "stale: container $cid does not exist"
else
    log "stale: container $cid is not running"
fi
exit 1
