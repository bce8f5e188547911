#!/bin/sh
# Remove every container of one cluster on this engine (label raptiformica.cluster=
# $RAPTIFORMICA_CLUSTER_ID), whoever spawned it: the workstation's or a node's (a node with
# the engine labels its spawns with the same cluster). Prints the ids removed, one a line.
# Used by `raptiformica destroy` on the workstation after it removed its own instances.
set -eu
SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
. "$SCRIPT_DIR/common.sh"

cluster=${RAPTIFORMICA_CLUSTER_ID:-}
[ -n "$cluster" ] || die "RAPTIFORMICA_CLUSTER_ID is not set"
command -v docker >/dev/null 2>&1 || exit 0
for id in $(docker ps -a -q --filter "label=raptiformica.cluster=$cluster" 2>/dev/null); do
    docker rm -f "$id" >/dev/null 2>&1 && printf '%s\n' "$id" || log "warning: could not remove container $id"
done
