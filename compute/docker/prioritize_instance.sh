#!/bin/sh
# Gives the instance's container its share of this engine's CPU by its consul role
# ($RAPTIFORMICA_CONSUL_ROLE, server or client), run by raptiformica once the machine is
# meshed. Every container of the engine shares the host's cores: when they are all busy (a
# batch of new machines on a small host), the kernel gives each the same share, and a
# server, which does about ten times a client's work (it is a hub of the overlay and a voter
# of consul's raft), fell behind: raft lost its leader and the probes through the hubs timed
# out, which made more work. A server gets ten times the default share (cpu-shares 10240 of
# 1024); a share only counts while the host's CPU is contended.
set -eu
SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
. "$SCRIPT_DIR/common.sh"

need_docker
cid=$(required_container_id)
case "${RAPTIFORMICA_CONSUL_ROLE:-client}" in
    server) shares=10240 ;;
    client) shares=1024 ;;
    *) die "RAPTIFORMICA_CONSUL_ROLE must be server or client, not ${RAPTIFORMICA_CONSUL_ROLE}" ;;
esac
docker update --cpu-shares "$shares" "$cid" >/dev/null
log "container $cid: cpu-shares $shares (consul $RAPTIFORMICA_CONSUL_ROLE)"
