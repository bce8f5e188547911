#!/bin/sh
# Start one raptiformica VM for the instance directory (cwd / RAPTIFORMICA_INSTANCE_DIR):
# - makes sure libvirtd runs (setup.sh --daemons), the libvirt driver is known (probe_driver.sh)
#   and the box exists (ensure_box.sh builds it on first use, with progress);
# - writes vm.json (box, kernel, driver, the user's public key file, the serial console's log)
#   and copies the Vagrantfile beside it;
# - `vagrant up --provider libvirt`: the VM boots the host's Debian kernel from the box's disk,
#   gets its address from libvirt's DHCP, and vagrant puts the public key in place as a file;
# - with RAPTIFORMICA_WITH_ENGINE=1 (`spawn --with-engine`): the VM runs its own docker engine
#   (2 GB of memory by default) and gets this host's node image loaded into it, so its agent
#   spawns containers inside it (the original's example: one VM grows to three machines).
# On failure the VM is destroyed again and the exit status is nonzero. Progress goes to stderr;
# nothing is printed on stdout.
set -eu
SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
. "$SCRIPT_DIR/common.sh"

engine=false
memory=${RAPTIFORMICA_VAGRANT_MEMORY:-1024}
if [ "${RAPTIFORMICA_WITH_ENGINE:-0}" = 1 ]; then
    # The VM's own docker engine (vm-init.sh starts it) and the node image loaded into it from
    # this host's engine: no registry, and no image build under emulation. The containers it
    # spawns need the memory.
    engine=true
    memory=${RAPTIFORMICA_VAGRANT_MEMORY:-2048}
    command -v docker >/dev/null 2>&1 ||
        die "--with-engine: the VM's containers start from this host's docker image, and docker is not installed here"
    sh "$SCRIPT_DIR/../docker/ensure_image.sh" || die "--with-engine: the docker base image is not available on this host"
fi
key_file="${RAPTIFORMICA_PUBLIC_KEY_FILE:-}"
[ -n "$key_file" ] || die "RAPTIFORMICA_PUBLIC_KEY_FILE is not set"
[ -r "$key_file" ] || die "cannot read the public key file $key_file"
grep -qE '^[[:space:]]*(ssh-|ecdsa-|sk-)' "$key_file" || die "$key_file holds no OpenSSH public key"
command -v vagrant >/dev/null 2>&1 || die "vagrant is not set up on this host: run $SCRIPT_DIR/setup.sh (as root)"

sh "$SCRIPT_DIR/setup.sh" --daemons
driver=$(sh "$SCRIPT_DIR/probe_driver.sh")
box=$(sh "$SCRIPT_DIR/ensure_box.sh")
kver=$(kernel_version)

mkdir -p "$RAPTIFORMICA_INSTANCE_DIR"
cd "$RAPTIFORMICA_INSTANCE_DIR"
[ ! -d .vagrant/machines/default/libvirt ] || [ ! -s .vagrant/machines/default/libvirt/id ] ||
    die "this instance already has a VM ($RAPTIFORMICA_INSTANCE_DIR/.vagrant); clean it up first"
id=$(basename "$RAPTIFORMICA_INSTANCE_DIR" | tr -c 'a-zA-Z0-9\n' '-' | cut -c1-32)

json_string() {
    printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"
}
{
    printf '{\n'
    printf '  "box": %s,\n' "$(json_string "$box")"
    printf '  "driver": %s,\n' "$(json_string "$driver")"
    printf '  "kernel": %s,\n' "$(json_string "$VAGRANT_BOOT_DIR/raptiformica-vmlinuz-$kver")"
    printf '  "initrd": %s,\n' "$(json_string "$VAGRANT_BOOT_DIR/raptiformica-initrd.img-$kver")"
    printf '  "hostname": %s,\n' "$(json_string "vm-$(printf '%s' "$id" | cut -c1-12)")"
    printf '  "domain_prefix": %s,\n' "$(json_string "raptiformica-$id-")"
    printf '  "public_key_file": %s,\n' "$(json_string "$key_file")"
    printf '  "console_log": %s,\n' "$(json_string "$RAPTIFORMICA_INSTANCE_DIR/console.log")"
    printf '  "memory": %s,\n' "$memory"
    printf '  "engine": %s,\n' "$engine"
    printf '  "cpus": %s\n' "${RAPTIFORMICA_VAGRANT_CPUS:-1}"
    printf '}\n'
} >vm.json
cp "$SCRIPT_DIR/Vagrantfile" Vagrantfile

# The first VM of a box creates vagrant-libvirt's network and copies the box into libvirt's pool:
# VMs started at the same time wait for it, then start side by side.
exec 8>"$(state_dir)/first-up.lock"
if ! virsh net-info raptiformica-vagrant >/dev/null 2>&1 ||
    ! virsh vol-list default 2>/dev/null | grep -q "^ *${box}_vagrant_box_image"; then
    flock -w 1800 8 || die "timed out waiting for another VM's first start"
fi
if [ "$driver" = qemu ]; then
    log "starting a VM in software emulation (KVM guests do not boot on this host; about a minute)"
else
    log "starting a VM (kvm)"
fi
if ! vagrant up --provider libvirt --no-tty >&2; then
    log "vagrant up failed; destroying the VM"
    vagrant destroy -f >&2 || true
    exit 1
fi
exec 8>&-
if [ "$engine" = true ]; then
    # Through vagrant's own way in (the box key, vagrant's ssh settings; the image holds
    # nothing secret), which the user's key then replaces (see the Vagrantfile).
    image=${RAPTIFORMICA_DOCKER_IMAGE:-raptiformica-base:bookworm}
    log "loading the docker image $image into the VM's engine (it spawns containers inside itself)"
    vagrant ssh-config >ssh_config 2>/dev/null || die "vagrant ssh-config failed for the new VM"
    if ! ssh -F ssh_config -T default 'i=0; until docker info >/dev/null 2>&1; do i=$((i+1)); [ $i -le 180 ] || { echo "dockerd did not start: $(tail -n 5 /var/log/dockerd.log)" >&2; exit 1; }; sleep 1; done' >&2 ||
        ! docker save "$image" | ssh -F ssh_config -T default 'docker load' >&2 ||
        ! ssh -F ssh_config -T default 'mv /root/.ssh/authorized_keys.user /root/.ssh/authorized_keys' >&2; then
        log "the VM's docker engine did not take the image; destroying the VM"
        vagrant destroy -f >&2 || true
        exit 1
    fi
fi
