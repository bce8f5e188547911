#!/bin/sh
# Prints the instance's SSH host public key(s), read through docker (out of band), so the core
# can pin them before its first SSH contact instead of trusting the network.
set -eu

SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
. "$SCRIPT_DIR/common.sh"

need_docker
cid=$(required_container_id)
docker exec "$cid" cat /etc/ssh/ssh_host_ed25519_key.pub
