#!/bin/sh
# PID 1 of a raptiformica VM (copied into the vagrant box as /usr/local/sbin/raptiformica-vm-init
# by ensure_box.sh; the kernel runs it as `init=`).
#
# The box is the docker base image's Debian root filesystem booted as a VM: this script does what
# docker does for a container, then hands over to the same entrypoint the containers run:
# - mounts the kernel's file systems and makes the root file system writable;
# - sets the host name from the kernel command line (raptiformica.hostname=NAME);
# - loads the modules of the virtual network card and of the TUN device (yggdrasil), brings up
#   every ethernet interface with DHCP (libvirt's dnsmasq: how vagrant learns the address);
# - makes the VM's own SSH host keys on its first boot and prints them on the serial console
#   between markers, where the host reads them to pin them (get_host_key.sh);
# - with raptiformica.engine=docker on the command line (`spawn --with-engine`), starts the
#   docker engine, so the VM spawns containers inside itself;
# - then execs tini (reaps orphans, as docker's --init does) running the container entrypoint
#   (authorized keys, the agent's keeper on a node that was meshed, sshd in the foreground).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

mount -o remount,rw / 2>/dev/null
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mountpoint -q /dev/pts || mount -t devpts -o gid=5,mode=620 devpts /dev/pts
mountpoint -q /dev/shm || mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mountpoint -q /run || mount -t tmpfs -o mode=755 tmpfs /run
rm -rf /tmp/* 2>/dev/null

for word in $(cat /proc/cmdline); do
    case "$word" in
        raptiformica.hostname=*) name=${word#raptiformica.hostname=} ;;
        raptiformica.engine=docker) engine=docker ;;
    esac
done
if [ -n "${name:-}" ]; then
    printf '%s\n' "$name" >/etc/hostname
    printf '127.0.1.1\t%s\n' "$name" >>/etc/hosts.tmp.$$
    grep -v '^127\.0\.1\.1' /etc/hosts >>/etc/hosts.tmp.$$ 2>/dev/null
    mv /etc/hosts.tmp.$$ /etc/hosts
fi
[ -s /etc/hostname ] && hostname "$(cat /etc/hostname)"

modprobe -a virtio_net tun 2>/dev/null
ip link set lo up
for dev in /sys/class/net/*; do
    dev=${dev##*/}
    case "$dev" in
        lo) ;;
        *)
            ip link set "$dev" up
            # Blocks until the first lease (or 60 tries), then renews it in the background.
            udhcpc -i "$dev" -t 60 -T 1 -b -p "/run/udhcpc.$dev.pid" -S >/dev/null 2>&1
            ;;
    esac
done

# A VM spawned `--with-engine`: Debian's docker engine, started here as docker's own unit would
# (cgroups, the kernel modules it needs); dockerd starts its containerd itself. Its log:
# /var/log/dockerd.log.
if [ "${engine:-}" = docker ]; then
    mountpoint -q /sys/fs/cgroup || mount -t cgroup2 cgroup2 /sys/fs/cgroup
    for m in overlay bridge br_netfilter veth nf_tables nft_chain_nat nft_compat xt_MASQUERADE \
        xt_addrtype xt_conntrack iptable_nat iptable_filter; do
        modprobe "$m" 2>/dev/null
    done
    setsid /usr/sbin/dockerd >/var/log/dockerd.log 2>&1 </dev/null &
fi

ssh-keygen -A >/dev/null 2>&1
{
    echo "-----BEGIN RAPTIFORMICA SSH HOST KEYS-----"
    cat /etc/ssh/ssh_host_*_key.pub
    echo "-----END RAPTIFORMICA SSH HOST KEYS-----"
} >/dev/ttyS0 2>/dev/null

exec /usr/bin/tini -- /usr/local/sbin/raptiformica-entrypoint
