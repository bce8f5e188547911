#!/bin/sh
# Destroy the instance's VM and its disk (vagrant destroy; libvirt directly if vagrant cannot).
set -eu
SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
. "$SCRIPT_DIR/common.sh"
cd "$RAPTIFORMICA_INSTANCE_DIR"
id_file=.vagrant/machines/default/libvirt/id
[ -f Vagrantfile ] || exit 0
vagrant destroy -f >&2 || log "vagrant destroy failed; removing the domain with virsh"
if [ -s "$id_file" ]; then
    dom=$(cat "$id_file")
    if virsh dominfo "$dom" >/dev/null 2>&1; then
        virsh destroy "$dom" >/dev/null 2>&1 || true
        virsh undefine "$dom" --remove-all-storage >/dev/null 2>&1 || die "cannot remove the libvirt domain $dom"
    fi
fi
