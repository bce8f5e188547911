#!/bin/sh
# Set up the vagrant compute back-end on this Debian host, as root (one command; safe to run
# again, it only does what is missing):
# 1. packages: Debian's vagrant and vagrant-libvirt, libvirt and qemu from bookworm-backports
#    (the suite is added on the mirror of the host's apt sources; this host's qemu-utils may be
#    the backports build, which bookworm's qemu conflicts with), linux-image-amd64 (the VMs boot
#    this kernel), mmdebstrap (the box is built locally);
# 2. daemons: virtlogd and libvirtd (with systemctl where systemd runs, else started directly),
#    and libvirt's `default` storage pool;
# 3. the driver probe (probe_driver.sh): kvm where KVM guests boot, else qemu emulation.
# Usage: setup.sh [--daemons]   (--daemons: only step 2, as spawns do before starting a VM)
set -eu
SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
. "$SCRIPT_DIR/common.sh"

[ "$(id -u)" -eq 0 ] || die "setup.sh must run as root (it installs packages and starts libvirtd)"
export DEBIAN_FRONTEND=noninteractive

installed() {
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || return 1
    done
}

install_packages() {
    backports_pkgs="qemu-system-x86 libvirt-daemon-system libvirt-clients"
    pkgs="vagrant vagrant-libvirt linux-image-amd64 mmdebstrap qemu-utils"
    # shellcheck disable=SC2086 # word lists
    if installed $backports_pkgs $pkgs; then
        return 0
    fi
    if ! apt-cache policy 2>/dev/null | grep -q 'bookworm-backports'; then
        mirror="${RAPTIFORMICA_DEBIAN_MIRROR:-$(sh "$SCRIPT_DIR/../docker/ensure_image.sh" --print-mirror)}"
        [ -n "$mirror" ] || die "found no Debian mirror in the host's apt sources; set RAPTIFORMICA_DEBIAN_MIRROR"
        log "adding Debian's bookworm-backports suite ($mirror)"
        cat >/etc/apt/sources.list.d/raptiformica-bookworm-backports.sources <<S
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
S
    fi
    log "installing vagrant, vagrant-libvirt, libvirt, qemu and the Debian kernel (apt-get, a few minutes)"
    apt-get update -q >&2 || die "apt-get update failed"
    # shellcheck disable=SC2086
    apt-get install -y -q -t bookworm-backports $backports_pkgs >&2 || die "cannot install $backports_pkgs from bookworm-backports"
    # shellcheck disable=SC2086
    apt-get install -y -q $pkgs >&2 || die "cannot install $pkgs"
}

libvirt_answers() {
    virsh -c qemu:///system version >/dev/null 2>&1
}

start_daemons() {
    if libvirt_answers; then
        :
    elif [ -d /run/systemd/system ]; then
        log "starting libvirtd (systemctl)"
        systemctl start virtlogd libvirtd >&2 || die "systemctl start libvirtd failed"
    else
        log "starting virtlogd and libvirtd"
        pgrep -x virtlogd >/dev/null 2>&1 || virtlogd -d || die "cannot start virtlogd"
        pgrep -x libvirtd >/dev/null 2>&1 || libvirtd -d || die "cannot start libvirtd"
    fi
    i=0
    until libvirt_answers; do
        i=$((i + 1))
        [ "$i" -le 30 ] || die "libvirtd does not answer on qemu:///system"
        sleep 1
    done
    if ! virsh -c qemu:///system pool-info default >/dev/null 2>&1; then
        log "defining libvirt's default storage pool (/var/lib/libvirt/images)"
        mkdir -p /var/lib/libvirt/images
        virsh -c qemu:///system pool-define-as default dir --target /var/lib/libvirt/images >/dev/null ||
            die "cannot define the storage pool default"
        virsh -c qemu:///system pool-autostart default >/dev/null 2>&1 || true
    fi
    if ! virsh -c qemu:///system pool-info default 2>/dev/null | grep -q 'State:.*running'; then
        virsh -c qemu:///system pool-start default >/dev/null || die "cannot start the storage pool default"
    fi
}

if [ "${1:-}" != "--daemons" ]; then
    install_packages
fi
command -v vagrant >/dev/null 2>&1 || die "vagrant is not installed: run $SCRIPT_DIR/setup.sh"
command -v libvirtd >/dev/null 2>&1 || die "libvirtd is not installed: run $SCRIPT_DIR/setup.sh"
start_daemons
if [ "${1:-}" != "--daemons" ]; then
    driver=$(sh "$SCRIPT_DIR/probe_driver.sh")
    log "the vagrant back-end is set up (libvirt driver: $driver)"
fi
