#!/bin/sh
# Print the VM's SSH host keys as the VM itself wrote them on its serial console at boot
# (vm-init.sh, between markers; libvirt keeps the console in console.log): a channel that does
# not go through the network, so the keys can be pinned before the first SSH contact.
set -eu
SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
. "$SCRIPT_DIR/common.sh"
log_file="$RAPTIFORMICA_INSTANCE_DIR/console.log"
[ -r "$log_file" ] || die "no console log $log_file"
# The last block: a VM that booted again printed its (same) keys again.
keys=$(tr -d '\r' <"$log_file" | awk '
    /^-----BEGIN RAPTIFORMICA SSH HOST KEYS-----$/ { inside = 1; block = ""; next }
    /^-----END RAPTIFORMICA SSH HOST KEYS-----$/ { if (inside) last = block; inside = 0; next }
    inside && /^(ssh-|ecdsa-)[a-z0-9-]+ [A-Za-z0-9+\/=]+/ { block = block $1 " " $2 "\n" }
    END { printf "%s", last }')
[ -n "$keys" ] || die "the VM printed no host keys on its console ($log_file)"
printf '%s\n' "$keys"
