#!/bin/sh
# Remove every container of one cluster on this engine (label raptiformica.cluster=
# $RAPTIFORMICA_CLUSTER_ID), whoever spawned it: the workstation's or a node's (a node with
# the engine labels its spawns with the same cluster), but those another workstation holds
# (label raptiformica.workstation, set and not $RAPTIFORMICA_WORKSTATION) unless
# RAPTIFORMICA_FORCE=1. Prints the ids removed, one a line, and `kept ID WORKSTATION` for
# each container kept. Used by `raptiformica destroy` on the workstation after it removed its
# own instances.
set -eu
SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
. "$SCRIPT_DIR/common.sh"

cluster=${RAPTIFORMICA_CLUSTER_ID:-}
[ -n "$cluster" ] || die "RAPTIFORMICA_CLUSTER_ID is not set"
me=${RAPTIFORMICA_WORKSTATION:-}
command -v docker >/dev/null 2>&1 || exit 0
for id in $(docker ps -a -q --filter "label=raptiformica.cluster=$cluster" 2>/dev/null); do
    holder=$(docker inspect -f '{{index .Config.Labels "raptiformica.workstation"}}' "$id" 2>/dev/null || true)
    if [ -n "$holder" ] && [ "$holder" != "$me" ] && [ "${RAPTIFORMICA_FORCE:-0}" != 1 ]; then
        printf 'kept %s %s\n' "$id" "$holder"
        continue
    fi
    docker rm -f "$id" >/dev/null 2>&1 && printf '%s\n' "$id" || log "warning: could not remove container $id"
done
