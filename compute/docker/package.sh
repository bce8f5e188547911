#!/bin/sh
# Save a provisioned instance as the server type's packaged image,
# raptiformica-packaged:<server type> (see packaged_image in common.sh).
#
# `raptiformica package` runs this in the directory of an instance it started
# from the base image and slaved without meshing (binary, artifacts, modules
# uploaded; the server type's provisioners run and recorded), and removes the
# instance afterwards. This script:
# - strips what belongs to that one node or to the cluster: the SSH host keys
#   (the entrypoint makes new ones on each container's first start), root's
#   authorized_keys and known_hosts, and below /root/.raptiformica.d everything
#   but artifacts/, modules/, var/provisioned/ and var/uploaded.manifest (so
#   the overlay keys, consul data, the mutable config with the gossip key, the
#   ACL token and any other node state go, while a later slave finds the
#   uploaded files unchanged, by stat, and the provisioners recorded);
# - commits the container with the base image's ENTRYPOINT and CMD, labelled
#   raptiformica.packaged=1, raptiformica.server_type and the base image's
#   raptiformica.entrypoint (start_instance.sh ignores a package made from
#   another base);
# - removes the packaged image it replaces, unless a container still uses it.
# Prints the image's name on stdout; progress goes to stderr.
# Remove the image with `docker image rm raptiformica-packaged:<server type>`.
set -eu

SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
. "$SCRIPT_DIR/common.sh"

need_docker
cid=$(required_container_id)
short=${cid%"${cid#????????????}"}
server_type="${RAPTIFORMICA_SERVER_TYPE:-headless}"
image=$(packaged_image "$server_type")

from=$(docker container inspect --format '{{.Image}}' "$cid" 2>/dev/null) ||
    die "container $cid does not exist"
base_sum=$(image_label "$from" raptiformica.entrypoint)
[ -n "$base_sum" ] || die "container $short was not started from a raptiformica base image"
[ "$(image_label "$from" raptiformica.packaged)" != 1 ] ||
    die "container $short was started from a packaged image; package from the base image (RAPTIFORMICA_NO_PACKAGE=1)"

# One package at a time per host: two commits to the same tag would race.
exec 9>"$(cache_dir)/docker-package.lock"
flock -w 600 9 || die "timed out waiting for another package run (lock $(cache_dir)/docker-package.lock)"

log "stripping the node's identity from container $short"
docker exec "$cid" sh -c '
    set -eu
    rm -f /etc/ssh/ssh_host_* /root/.ssh/authorized_keys /root/.ssh/known_hosts
    c=/root/.raptiformica.d
    if [ -d "$c" ]; then
        for f in "$c"/* "$c"/.[!.]*; do
            [ -e "$f" ] || [ -L "$f" ] || continue
            case "${f##*/}" in
                artifacts|modules|var) ;;
                *) rm -rf "$f" ;;
            esac
        done
        if [ -d "$c/var" ]; then
            for f in "$c"/var/* "$c"/var/.[!.]*; do
                [ -e "$f" ] || [ -L "$f" ] || continue
                case "${f##*/}" in
                    provisioned|uploaded.manifest) ;;
                    *) rm -rf "$f" ;;
                esac
            done
        fi
    fi
    rm -rf /tmp/* /var/tmp/*
' || die "could not strip container $short"

old=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
log "saving container $short as $image"
# The container's own settings (its instance label, the authorized key in its environment)
# would be inherited by the image: reset them.
docker commit \
    --change 'ENV RAPTIFORMICA_AUTHORIZED_KEYS=""' \
    --change 'LABEL raptiformica.instance="" raptiformica.base-image=""' \
    --change "LABEL raptiformica.packaged=1 raptiformica.entrypoint=\"$base_sum\"" \
    --change "LABEL raptiformica.server_type=\"$server_type\"" \
    --message "raptiformica packaged image (server type $server_type)" \
    "$cid" "$image" >/dev/null || die "docker commit of container $short failed"

new=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
[ -n "$new" ] || die "image $image is missing after the commit"
if [ -n "$old" ] && [ "$old" != "$new" ]; then
    docker image rm "$old" >/dev/null 2>&1 ||
        log "the image $image replaced is still used by a container; it goes with \`docker image prune\` once unused"
fi
log "packaged image $image is ready ($(docker image inspect --format '{{.Size}}' "$image") bytes)"
printf '%s\n' "$image"
