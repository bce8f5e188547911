#!/bin/sh
# Exit 0 when VMs can be started here; print how (the libvirt driver) or what is missing.
set -eu
SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
. "$SCRIPT_DIR/common.sh"
if ! command -v vagrant >/dev/null 2>&1 || ! command -v libvirtd >/dev/null 2>&1; then
    echo "not set up: run $SCRIPT_DIR/setup.sh as root"
    exit 1
fi
[ "$(id -u)" -eq 0 ] || { echo "needs root (libvirt's system VMs)"; exit 1; }
driver=$(cached_driver)
case "$driver" in
    kvm) echo "libvirt, kvm" ;;
    qemu) echo "libvirt, qemu: software emulation ($(cat "$RAPTIFORMICA_VAGRANT_STATE/driver.reason" 2>/dev/null || echo 'KVM unusable'))" ;;
    *) echo "libvirt, driver not probed yet (the first spawn probes it)" ;;
esac
