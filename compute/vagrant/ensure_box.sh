#!/bin/sh
# Make sure the vagrant box of raptiformica exists, building it on first use (no box can be
# downloaded here): the docker base image's Debian root filesystem (the same mmdebstrap recipe
# and package list) plus what a VM needs (tini, a DHCP client, kmod, the host kernel's modules,
# the init in vm-init.sh), written into an ext4 disk with `mkfs.ext4 -d` (no loop device),
# converted to qcow2 with qemu-img and added as the libvirt box `raptiformica-bookworm-<recipe>`.
# The VMs boot the host's Debian kernel directly (copied to /var/lib/libvirt/boot with its
# initrd). The box carries a key of its own, used by vagrant only to hand the user's public key
# to the VM as a file. Concurrent callers wait on a lock; progress goes to stderr.
#
# Usage: ensure_box.sh            prints the box name once it exists
#        ensure_box.sh --name     prints the box name it would use
#        ensure_box.sh --force    builds it again even if it exists (VMs started later still use
#                                 the copy in libvirt's pool, which is made once per box name)
set -eu
SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
. "$SCRIPT_DIR/common.sh"
# shellcheck source=../docker/rootfs.sh
. "$SCRIPT_DIR/../docker/rootfs.sh"

kver=$(kernel_version)
[ -n "$kver" ] || die "no Debian kernel in /boot: run $SCRIPT_DIR/setup.sh (installs linux-image-amd64)"
name=$(box_name)
if [ "${1:-}" = "--name" ]; then
    printf '%s\n' "$name"
    exit 0
fi
# vagrant reads a Vagrantfile in the working directory: run it where there is none.
cd "$(state_dir)"

have_box() {
    vagrant box list --machine-readable 2>/dev/null | awk -F, -v n="$name" '$3 == "box-name" && $4 == n { f = 1 } END { exit !f }'
}
have_boot_files() {
    [ -r "$VAGRANT_BOOT_DIR/raptiformica-vmlinuz-$kver" ] && [ -r "$VAGRANT_BOOT_DIR/raptiformica-initrd.img-$kver" ]
}
install_boot_files() {
    mkdir -p "$VAGRANT_BOOT_DIR"
    install -m 0644 "/boot/vmlinuz-$kver" "$VAGRANT_BOOT_DIR/raptiformica-vmlinuz-$kver"
    install -m 0644 "/boot/initrd.img-$kver" "$VAGRANT_BOOT_DIR/raptiformica-initrd.img-$kver"
}

force=0
[ "${1:-}" = "--force" ] && force=1
if [ "$force" = 0 ] && have_box && have_boot_files; then
    printf '%s\n' "$name"
    exit 0
fi

state=$(state_dir)
exec 9>"$state/box.lock"
if ! flock -n 9; then
    log "waiting for another build of the box $name (lock $state/box.lock)"
    flock -w 3600 9 || die "timed out waiting for the box build lock"
fi
if [ "$force" = 0 ] && have_box; then
    have_boot_files || install_boot_files
    printf '%s\n' "$name"
    exit 0
fi

build_log="$state/box-build.log"
: >"$build_log"
work=""
cleanup() { if [ -n "$work" ]; then rm -rf "$work"; fi; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
fail() {
    log "error: $*"
    if [ -s "$build_log" ]; then
        log "last lines of $build_log:"
        tail -n 25 "$build_log" >&2
    fi
    exit 1
}
command -v mmdebstrap >/dev/null 2>&1 || fail "mmdebstrap is missing: run $SCRIPT_DIR/setup.sh"
command -v qemu-img >/dev/null 2>&1 || fail "qemu-img is missing: run $SCRIPT_DIR/setup.sh"

log "building the vagrant box $name (first use only, a few minutes; log: $build_log)"
mirror="${RAPTIFORMICA_DEBIAN_MIRROR:-$(host_debian_mirror bookworm)}"
[ -n "$mirror" ] || fail "found no Debian mirror in the host's apt sources; set RAPTIFORMICA_DEBIAN_MIRROR"
work=$(mktemp -d "$state/box-build.XXXXXX")
rootfs="$work/rootfs"
box="$work/box"
mkdir -p "$box"

log "1/4 bootstrapping the Debian bookworm root filesystem (mirror $mirror)"
RAPTIFORMICA_VM_INIT_SRC="$SCRIPT_DIR/vm-init.sh"
export RAPTIFORMICA_VM_INIT_SRC
# The docker base image's recipe, plus the VM's init and an empty fstab.
# shellcheck disable=SC2016 # the hooks are expanded by mmdebstrap's shell
debian_rootfs "$rootfs" "$(box_packages)" "$mirror" \
    --customize-hook='install -m 0755 "$RAPTIFORMICA_VM_INIT_SRC" "$1/usr/local/sbin/raptiformica-vm-init"' \
    --customize-hook=': >"$1/etc/fstab"' \
    >>"$build_log" 2>&1 || fail "mmdebstrap failed"

log "2/4 adding the kernel's modules ($kver) and the box key"
mods="/lib/modules/$kver"
[ -d "$mods" ] || fail "no $mods: run $SCRIPT_DIR/setup.sh (installs linux-image-amd64)"
mkdir -p "$rootfs/usr/lib/modules"
# Everything but what a headless virtual server never loads (graphics, sound, media, wireless).
tar -C /lib/modules -cf - \
    --exclude="$kver/kernel/sound" --exclude="$kver/kernel/drivers/gpu" \
    --exclude="$kver/kernel/drivers/media" --exclude="$kver/kernel/drivers/net/wireless" \
    --exclude="$kver/kernel/drivers/infiniband" --exclude="$kver/kernel/drivers/staging" \
    --exclude="$kver/kernel/drivers/bluetooth" --exclude="$kver/kernel/drivers/iio" \
    "$kver" | tar -C "$rootfs/usr/lib/modules" -xf - || fail "cannot copy the kernel modules"
depmod -b "$rootfs" "$kver" >>"$build_log" 2>&1 || fail "depmod failed"
ssh-keygen -q -t ed25519 -N '' -C "raptiformica vagrant box $name" -f "$box/box_key" >>"$build_log" 2>&1 ||
    fail "cannot make the box key"
install -d -m 0700 "$rootfs/root/.ssh"
install -m 0600 "$box/box_key.pub" "$rootfs/root/.ssh/authorized_keys"

log "3/4 writing the disk image (ext4, qcow2)"
size_gb=8
mkfs.ext4 -q -F -L raptiformica -d "$rootfs" "$work/disk.raw" "${size_gb}G" >>"$build_log" 2>&1 ||
    fail "mkfs.ext4 -d failed"
rm -rf "$rootfs"
qemu-img convert -f raw -O qcow2 "$work/disk.raw" "$box/box.img" >>"$build_log" 2>&1 || fail "qemu-img convert failed"
rm -f "$work/disk.raw"
printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": %s}\n' "$size_gb" >"$box/metadata.json"
cat >"$box/Vagrantfile" <<'V'
# Box of raptiformica: root is reached with the box's own key, kept beside this file.
Vagrant.configure("2") do |config|
  config.ssh.username = "root"
  config.ssh.insert_key = false
  config.ssh.private_key_path = File.expand_path("box_key", __dir__)
end
V

log "4/4 adding the box to vagrant"
tar -C "$box" -cf "$work/raptiformica.box" . || fail "cannot pack the box"
vagrant box add --force --name "$name" "$work/raptiformica.box" >>"$build_log" 2>&1 || fail "vagrant box add failed"
install_boot_files
# Older recipes' boxes go; their copies in libvirt's pool too, unless a VM may still use one.
vagrant box list --machine-readable 2>/dev/null |
    awk -F, -v n="$name" '$3 == "box-name" && $4 ~ /^raptiformica-bookworm-/ && $4 != n { print $4 }' |
    while read -r old; do
        vagrant box remove --force --all "$old" >>"$build_log" 2>&1 || true
    done
if ! virsh list --all --name 2>/dev/null | grep -q '^raptiformica-'; then
    virsh vol-list default 2>/dev/null | awk '$1 ~ /^raptiformica-bookworm-.*_vagrant_box_image_/ { print $1 }' |
        grep -v "^${name}_" | while read -r vol; do
            virsh vol-delete --pool default "$vol" >>"$build_log" 2>&1 || true
        done
fi
log "the vagrant box $name is ready"
printf '%s\n' "$name"
