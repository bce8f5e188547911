#!/bin/sh
# Exit 0 while the instance's VM runs, nonzero once it is gone or stopped.
set -eu
SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
. "$SCRIPT_DIR/common.sh"
id_file="$RAPTIFORMICA_INSTANCE_DIR/.vagrant/machines/default/libvirt/id"
[ -s "$id_file" ] || exit 1
[ "$(virsh domstate "$(cat "$id_file")" 2>/dev/null | head -n 1)" = running ]
