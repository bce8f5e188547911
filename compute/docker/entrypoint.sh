#!/bin/sh
# Entrypoint of the raptiformica-base image (copied into the image as
# /usr/local/sbin/raptiformica-entrypoint by ensure_image.sh).
#
# - generates this container's own SSH host key (ed25519) on its first start (the
#   image ships none, so no two containers share a host key);
# - authorizes RAPTIFORMICA_AUTHORIZED_KEYS (the content of an OpenSSH public
#   key file) for root;
# - on a node that was meshed before this start (a restarted container), starts
#   the agent's keeper, which brings yggdrasil, consul and the node's place in
#   the cluster back;
# - then execs the CMD, by default `/usr/sbin/sshd -D -e` (sshd in the
#   foreground as the container's main process, logging to `docker logs`).
set -eu

mkdir -p /run/sshd
chmod 0755 /run/sshd

# Only the ed25519 host key, the one raptiformica pins (made once: a no-op on a restart).
# `ssh-keygen -A` made RSA and ECDSA keys too: the RSA one costs about a second of CPU, which
# a batch of new containers paid all at once. sshd is told to use that key alone.
[ -s /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
mkdir -p /etc/ssh/sshd_config.d
echo 'HostKey /etc/ssh/ssh_host_ed25519_key' >/etc/ssh/sshd_config.d/raptiformica-host-key.conf

if [ -n "${RAPTIFORMICA_AUTHORIZED_KEYS:-}" ]; then
    umask 077
    mkdir -p /root/.ssh
    chmod 0700 /root/.ssh
    printf '%s\n' "$RAPTIFORMICA_AUTHORIZED_KEYS" >/root/.ssh/authorized_keys
    chmod 0600 /root/.ssh/authorized_keys
    umask 022
fi
unset RAPTIFORMICA_AUTHORIZED_KEYS

mesh_dir=/root/.raptiformica.d/mesh
if [ -f "$mesh_dir/yggdrasil.conf" ]; then
    (
        export PATH=/usr/local/bin:$PATH RAPTIFORMICA_CACHE_DIR=/root/.raptiformica.d \
            RAPTIFORMICA_INSTALL_DIR=/usr/etc/raptiformica
        if command -v raptiformica >/dev/null 2>&1; then
            setsid raptiformica --cache-dir /root/.raptiformica.d keeper \
                >>"$mesh_dir/keeper.log" 2>&1 </dev/null &
        fi
    )
fi

if [ "$#" -eq 0 ]; then
    set -- /usr/sbin/sshd -D -e
fi
exec "$@"
