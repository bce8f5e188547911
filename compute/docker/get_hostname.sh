#!/bin/sh
# Print the instance's IPv4 address on the raptiformica docker network (and
# nothing else) on stdout.
set -eu

SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
. "$SCRIPT_DIR/common.sh"

need_docker
cid=$(required_container_id)
ip=$(docker container inspect \
    --format "{{with index .NetworkSettings.Networks \"$RAPTIFORMICA_DOCKER_NETWORK\"}}{{.IPAddress}}{{end}}" \
    "$cid" 2>/dev/null) || die "container $cid does not exist"
[ -n "$ip" ] || die "container $cid has no IPv4 address on network $RAPTIFORMICA_DOCKER_NETWORK (is it running?)"
printf '%s\n' "$ip"
