#!/bin/sh
# Exit 0 when no container runs on this engine's network with the address $RAPTIFORMICA_HOST:
# the machine at that address is gone (removed or stopped), evidence a survivor may rebuild
# consensus on. Exit 1 when one runs (cut off is not gone), 2 when the engine cannot tell.
set -eu
SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
. "$SCRIPT_DIR/common.sh"

host=${RAPTIFORMICA_HOST:?RAPTIFORMICA_HOST is not set}
command -v docker >/dev/null 2>&1 || exit 2
ids=$(docker ps -q --filter "network=$RAPTIFORMICA_DOCKER_NETWORK" 2>/dev/null) || exit 2
for id in $ids; do
    ip=$(docker inspect --format "{{(index .NetworkSettings.Networks \"$RAPTIFORMICA_DOCKER_NETWORK\").IPAddress}}" "$id" 2>/dev/null) || exit 2
    [ "$ip" != "$host" ] || exit 1
done
exit 0
