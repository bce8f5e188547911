#!/bin/sh
# Print the libvirt domain type raptiformica's VMs use here: `kvm` only where a KVM guest
# actually boots, else `qemu` (software emulation). On some hosts /dev/kvm opens and libvirt
# offers kvm, yet a guest's vCPU never gets past its first instructions; so the probe boots the
# host's Debian kernel under KVM (no disk: it must reach its "Kernel panic" about the missing root
# file system, which takes a second or two under KVM) and gives it 40 seconds. The answer is
# cached in $RAPTIFORMICA_VAGRANT_STATE/driver; --force probes again.
# RAPTIFORMICA_VAGRANT_DRIVER=kvm|qemu overrides the probe.
set -eu
SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
. "$SCRIPT_DIR/common.sh"

if [ "${1:-}" != "--force" ]; then
    cached=$(cached_driver)
    if [ -n "$cached" ]; then
        printf '%s\n' "$cached"
        exit 0
    fi
fi
state=$(state_dir)
driver=qemu
reason="no usable /dev/kvm"
kver=$(kernel_version)
if [ -z "$kver" ]; then
    reason="no Debian kernel in /boot to probe with"
elif [ -r /dev/kvm ] && [ -w /dev/kvm ] && command -v qemu-system-x86_64 >/dev/null 2>&1; then
    log "probing whether KVM guests boot here (once, at most 40 s)"
    console="$state/kvm-probe.log"
    : >"$console"
    timeout 40 qemu-system-x86_64 -accel kvm -cpu host -m 256 -nodefaults -display none \
        -no-reboot -serial "file:$console" -kernel "/boot/vmlinuz-$kver" \
        -append "console=ttyS0 panic=-1 rdinit=/nonexistent root=/dev/nonexistent" \
        >"$state/kvm-probe.out" 2>&1 || true
    if grep -q 'Kernel panic' "$console"; then
        driver=kvm
        reason="a KVM guest booted"
    else
        reason="a KVM guest did not boot within 40 s"
    fi
fi
printf '%s\n' "$driver" >"$state/driver"
printf '%s\n' "$reason" >"$state/driver.reason"
log "VMs run with libvirt driver $driver: $reason"
printf '%s\n' "$driver"
