#!/bin/sh
# Prints the instance's SSH host public key(s), read through docker (out of band), so the core
# can pin them before its first SSH contact instead of trusting the network.
set -eu

SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
. "$SCRIPT_DIR/common.sh"

need_docker
cid=$(required_container_id)
# The entrypoint makes the key on the container's first start: on a slow machine (a VM in
# software emulation spawning containers inside itself) that can take a while.
i=0
until docker exec "$cid" test -s /etc/ssh/ssh_host_ed25519_key.pub 2>/dev/null; do
    i=$((i + 1))
    [ "$i" -le 120 ] || die "container $cid has made no SSH host key after 120 s (see docker logs $cid)"
    sleep 1
done
docker exec "$cid" cat /etc/ssh/ssh_host_ed25519_key.pub
