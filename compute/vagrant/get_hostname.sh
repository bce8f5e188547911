#!/bin/sh
# Print the address of the instance's VM (its DHCP lease on vagrant-libvirt's network).
set -eu
SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
. "$SCRIPT_DIR/common.sh"
cd "$RAPTIFORMICA_INSTANCE_DIR"
host=$(vagrant ssh-config 2>/dev/null | awk '$1 == "HostName" { print $2; exit }')
[ -n "$host" ] || die "vagrant ssh-config names no address for the VM in $RAPTIFORMICA_INSTANCE_DIR"
printf '%s\n' "$host"
