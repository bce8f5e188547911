#!/bin/sh
# Make sure the docker base image raptiformica-base:bookworm exists, building
# it if it is missing (or always with --force).
#
# There is no image registry to pull from, so the image is built locally: a
# Debian bookworm rootfs made by mmdebstrap (minbase + openssh-server and the
# few tools raptiformica needs), imported with `docker import`. The Debian
# mirror is read from the host's apt sources; RAPTIFORMICA_DEBIAN_MIRROR
# overrides it. Concurrent callers are serialized with flock on a lock file in
# the cache dir; the build log is kept there too.
#
# Usage: ensure_image.sh [--force]
#        ensure_image.sh --print-mirror   (print the mirror it would use)
# Prints progress on stderr only; exit 0 once the image exists.
set -eu

SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
. "$SCRIPT_DIR/common.sh"

SUITE=bookworm
PACKAGES=$RAPTIFORMICA_BASE_PACKAGES

force=0
print_mirror=0
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        --print-mirror) print_mirror=1 ;;
        -h|--help)
            sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
            exit 0 ;;
        *) die "ensure_image.sh: unknown argument: $arg" ;;
    esac
done

# The entrypoint is baked into the image: an image made from another version of it is rebuilt.
ENTRYPOINT_SUM=$(entrypoint_sum)

image_is_current() {
    [ "$(docker image inspect --format '{{index .Config.Labels "raptiformica.entrypoint"}}' "$RAPTIFORMICA_DOCKER_IMAGE" 2>/dev/null)" = "$ENTRYPOINT_SUM" ]
}

image_id() {
    docker image inspect --format '{{.Id}}' "$RAPTIFORMICA_DOCKER_IMAGE" 2>/dev/null || true
}

# Prints the Debian mirror URI the host's apt uses for $SUITE (not the
# security archive). Falls back to the URI of any Debian "main" archive of the
# host (a host on another release still names a full Debian mirror).
# APT_SOURCES_DIR (default /etc/apt) exists for testing this parser.
host_debian_mirror() {
    apt_dir="${APT_SOURCES_DIR:-/etc/apt}"
    {
        for f in "$apt_dir"/sources.list.d/*.sources; do
            [ -r "$f" ] || continue
            awk -v suite="$SUITE" '
                function emit(    i, n, t, s, c, u, okt, oks, okm, sb, uri, tier) {
                    if (tolower(f["enabled"]) == "no") return
                    n = split(f["types"], t, /[ \t]+/); okt = 0
                    for (i = 1; i <= n; i++) if (t[i] == "deb") okt = 1
                    if (!okt) return
                    n = split(f["components"], c, /[ \t]+/); okm = 0
                    for (i = 1; i <= n; i++) if (c[i] == "main") okm = 1
                    if (!okm) return
                    split(f["uris"], u, /[ \t]+/); uri = u[1]
                    if (uri == "" || uri ~ /^cdrom:/ || uri ~ /security/) return
                    sb = f["signed-by"]
                    n = split(f["suites"], s, /[ \t]+/)
                    for (i = 1; i <= n; i++) {
                        tier = ""
                        if (s[i] == suite && (sb == "" || sb ~ /debian-archive/)) tier = 1
                        else if (s[i] !~ /-security$/ && (sb ~ /debian-archive/ || uri ~ /\/debian\/?$/)) tier = 2
                        if (tier != "") print tier, uri
                    }
                }
                BEGIN { RS = "" }
                {
                    delete f; key = ""
                    nl = split($0, lines, "\n")
                    for (j = 1; j <= nl; j++) {
                        line = lines[j]
                        if (line ~ /^[ \t]*#/) continue
                        if (line ~ /^[ \t]/) { if (key != "") f[key] = f[key] " " line; continue }
                        p = index(line, ":"); if (p == 0) continue
                        key = tolower(substr(line, 1, p - 1))
                        val = substr(line, p + 1)
                        f[key] = val
                    }
                    for (k in f) { gsub(/^[ \t]+|[ \t]+$/, "", f[k]) }
                    emit()
                }' "$f"
        done
        for f in "$apt_dir"/sources.list "$apt_dir"/sources.list.d/*.list; do
            [ -r "$f" ] || continue
            awk -v suite="$SUITE" '
                /^[ \t]*deb[ \t]/ {
                    sub(/#.*/, "")
                    opts = ""
                    if (match($0, /\[[^]]*\]/)) { opts = substr($0, RSTART, RLENGTH); $0 = substr($0, 1, RSTART - 1) substr($0, RSTART + RLENGTH) }
                    uri = $2; s = $3; okm = 0
                    for (i = 4; i <= NF; i++) if ($i == "main") okm = 1
                    if (!okm || uri ~ /^cdrom:/ || uri ~ /security/) next
                    sb = ""; if (match(opts, /signed-by=[^] \t]*/)) sb = substr(opts, RSTART, RLENGTH)
                    if (s == suite && (sb == "" || sb ~ /debian-archive/)) print 1, uri
                    else if (s !~ /-security$/ && (sb ~ /debian-archive/ || uri ~ /\/debian\/?$/)) print 2, uri
                }' "$f"
        done
    } | sort -s -k1,1n | head -n 1 | cut -d' ' -f2- | sed 's:/*$::'
}

if [ "$print_mirror" -eq 0 ]; then
    need_docker
    if [ "$force" -eq 0 ] && [ -n "$(image_id)" ] && image_is_current; then
        exit 0
    fi
else
    mirror="${RAPTIFORMICA_DEBIAN_MIRROR:-$(host_debian_mirror)}"
    [ -n "$mirror" ] || die "found no Debian mirror in the host's apt sources"
    printf '%s\n' "$mirror"
    exit 0
fi

cache=$(cache_dir)
lock="$cache/docker-image.lock"
build_log="$cache/docker-image-build.log"

id_before_lock=$(image_id)

exec 9>"$lock"
if ! flock -n 9; then
    log "waiting for another build of $RAPTIFORMICA_DOCKER_IMAGE to finish (lock $lock)"
    flock -w 3600 9 || die "timed out waiting for the image build lock $lock"
fi

# Someone else may have built the image while we waited for the lock.
id_now=$(image_id)
if [ "$force" -eq 0 ] && [ -n "$id_now" ] && image_is_current; then
    exit 0
fi
if [ "$force" -eq 1 ] && [ -n "$id_now" ] && [ "$id_now" != "$id_before_lock" ]; then
    log "$RAPTIFORMICA_DOCKER_IMAGE was just rebuilt by another process"
    exit 0
fi

if [ -n "$id_now" ] && ! image_is_current; then
    log "rebuilding base image $RAPTIFORMICA_DOCKER_IMAGE: its entrypoint changed (takes a few minutes; log: $build_log)"
elif [ -n "$id_now" ]; then
    log "rebuilding base image $RAPTIFORMICA_DOCKER_IMAGE (takes a few minutes; log: $build_log)"
else
    log "building base image $RAPTIFORMICA_DOCKER_IMAGE (first time only, takes a few minutes; log: $build_log)"
fi
: >"$build_log"

workdir=""
cleanup() {
    if [ -n "$workdir" ]; then rm -rf "$workdir"; fi
}
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

if ! command -v mmdebstrap >/dev/null 2>&1; then
    [ "$(id -u)" -eq 0 ] || fail "mmdebstrap is missing; install it (apt-get install mmdebstrap) or run this as root"
    log "installing mmdebstrap (apt-get)"
    {
        DEBIAN_FRONTEND=noninteractive apt-get update &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mmdebstrap
    } >>"$build_log" 2>&1 || fail "could not install mmdebstrap"
fi

mirror="${RAPTIFORMICA_DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
    mirror=$(host_debian_mirror)
    [ -n "$mirror" ] || fail "found no Debian mirror in /etc/apt/sources.list{,.d/*}; set RAPTIFORMICA_DEBIAN_MIRROR"
fi
log "using Debian mirror $mirror (suite $SUITE)"

workdir=$(mktemp -d "$cache/docker-image-build.XXXXXX")
rootfs_tar="$workdir/rootfs.tar"

# Read by the customize hooks below (hooks run with our environment).
RAPTIFORMICA_ENTRYPOINT_SRC="$SCRIPT_DIR/entrypoint.sh"
export RAPTIFORMICA_ENTRYPOINT_SRC

# Merged /usr by mmdebstrap's own hook (installs usr-is-merged) rather than by
# the usrmerge package, which would drag perl (~50 MB) into the image.
set --
merged_usr_hooks=/usr/share/mmdebstrap/hooks/merged-usr
if [ -d "$merged_usr_hooks" ]; then
    set -- --hook-dir="$merged_usr_hooks"
fi

log "bootstrapping the Debian $SUITE rootfs with mmdebstrap"
# shellcheck disable=SC2016 # the hooks are expanded by mmdebstrap's shell
mmdebstrap \
    --variant=minbase \
    "$@" \
    --include="$PACKAGES" \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
    --customize-hook='sed -i "s/^session[[:space:]]\{1,\}required[[:space:]]\{1,\}pam_loginuid.so/session optional pam_loginuid.so/" "$1/etc/pam.d/sshd"' \
    --customize-hook='install -m 0755 "$RAPTIFORMICA_ENTRYPOINT_SRC" "$1/usr/local/sbin/raptiformica-entrypoint"' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/cache/debconf/*-old "$1"/var/lib/dpkg/*-old "$1"/var/log/*.log "$1"/var/log/apt/* "$1"/tmp/* "$1"/etc/machine-id; : >"$1/etc/machine-id"' \
    "$SUITE" "$rootfs_tar" "deb $mirror $SUITE main" \
    >>"$build_log" 2>&1 || fail "mmdebstrap failed"

log "importing the rootfs ($(du -h "$rootfs_tar" | cut -f1)) as $RAPTIFORMICA_DOCKER_IMAGE"
docker import \
    --change 'ENTRYPOINT ["/usr/local/sbin/raptiformica-entrypoint"]' \
    --change 'CMD ["/usr/sbin/sshd", "-D", "-e"]' \
    --change 'EXPOSE 22' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'LABEL raptiformica.base-image=1' \
    --change "LABEL raptiformica.entrypoint=$ENTRYPOINT_SUM" \
    --message "raptiformica base image (Debian $SUITE, mmdebstrap minbase + openssh-server)" \
    "$rootfs_tar" "$RAPTIFORMICA_DOCKER_IMAGE" >>"$build_log" 2>&1 || fail "docker import failed"

id_new=$(image_id)
[ -n "$id_new" ] || fail "image $RAPTIFORMICA_DOCKER_IMAGE is missing after the import"
if [ -n "$id_now" ] && [ "$id_now" != "$id_new" ]; then
    # The previous build, now untagged; still used by running containers it stays.
    docker image rm "$id_now" >/dev/null 2>&1 || true
fi
log "base image $RAPTIFORMICA_DOCKER_IMAGE is ready ($(docker image inspect --format '{{.Size}}' "$RAPTIFORMICA_DOCKER_IMAGE") bytes)"
