# Shared helpers for the vagrant compute back-end of raptiformica (libvirt provider).
# Sourced (POSIX sh) by the scripts in this directory; not run on its own.
#
# Environment (all optional):
#   RAPTIFORMICA_INSTANCE_DIR     the instance's own directory (default: cwd)
#   RAPTIFORMICA_PUBLIC_KEY_FILE  public key authorized for root (start only)
#   RAPTIFORMICA_VAGRANT_STATE    where the box is built and the driver probe is cached
#                                 (default /var/lib/raptiformica/vagrant as root,
#                                 else ~/.cache/raptiformica/vagrant)
#   RAPTIFORMICA_VAGRANT_DRIVER   kvm or qemu: skip the probe
#   RAPTIFORMICA_DEBIAN_MIRROR    overrides the Debian mirror read from apt

VAGRANT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
RAPTIFORMICA_INSTANCE_DIR="${RAPTIFORMICA_INSTANCE_DIR:-$(pwd)}"
if [ "$(id -u)" -eq 0 ]; then
    RAPTIFORMICA_VAGRANT_STATE="${RAPTIFORMICA_VAGRANT_STATE:-/var/lib/raptiformica/vagrant}"
else
    RAPTIFORMICA_VAGRANT_STATE="${RAPTIFORMICA_VAGRANT_STATE:-${XDG_CACHE_HOME:-$HOME/.cache}/raptiformica/vagrant}"
fi
# The libvirt connection of every command here (system VMs: the NAT network needs root).
LIBVIRT_DEFAULT_URI="${LIBVIRT_DEFAULT_URI:-qemu:///system}"
export LIBVIRT_DEFAULT_URI
# Where libvirt's qemu (another user) can read the kernel and initrd the VMs boot.
VAGRANT_BOOT_DIR=/var/lib/libvirt/boot

# Progress and diagnostics go to stderr: stdout is reserved for values.
log() {
    printf 'raptiformica[vagrant]: %s\n' "$*" >&2
}

die() {
    log "error: $*"
    exit 1
}

state_dir() {
    mkdir -p "$RAPTIFORMICA_VAGRANT_STATE" || die "cannot create $RAPTIFORMICA_VAGRANT_STATE"
    printf '%s\n' "$RAPTIFORMICA_VAGRANT_STATE"
}

# The newest Debian kernel installed on this host (linux-image-amd64), as its version string.
kernel_version() {
    # shellcheck disable=SC2012 # version-sorted file names, no odd characters
    ls /boot/vmlinuz-* 2>/dev/null | sed 's:^/boot/vmlinuz-::' | sort -V | tail -n 1
}

# The Debian packages of the VM box: the docker base image's, plus what a VM needs that a
# container gets from docker (an init that reaps, a DHCP client, module loading), plus Debian's
# docker engine: a VM spawned `--with-engine` starts it (vm-init.sh) and spawns containers inside
# itself; in any other VM it stays stopped.
box_packages() {
    # shellcheck source=../docker/common.sh
    . "$VAGRANT_DIR/../docker/common.sh"
    printf '%s,tini,udhcpc,kmod,docker.io\n' "$RAPTIFORMICA_BASE_PACKAGES"
}

# The first 12 hex digits of the SHA-256 of the box's recipe (the guest init, the docker
# entrypoint it ends in, the shared rootfs recipe, the package list, the kernel): the box is
# named after it, so a changed recipe builds a new box.
box_sum() {
    {
        cat "$VAGRANT_DIR/vm-init.sh" "$VAGRANT_DIR/../docker/entrypoint.sh" "$VAGRANT_DIR/../docker/rootfs.sh" "$VAGRANT_DIR/ensure_box.sh"
        box_packages
        kernel_version
    } | sha256sum | cut -c1-12
}

box_name() {
    printf 'raptiformica-bookworm-%s\n' "$(box_sum)"
}

# The cached answer of probe_driver.sh (kvm or qemu), or nothing.
cached_driver() {
    if [ -n "${RAPTIFORMICA_VAGRANT_DRIVER:-}" ]; then
        printf '%s\n' "$RAPTIFORMICA_VAGRANT_DRIVER"
    elif [ -s "$RAPTIFORMICA_VAGRANT_STATE/driver" ]; then
        head -n 1 "$RAPTIFORMICA_VAGRANT_STATE/driver"
    fi
}
