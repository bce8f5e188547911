# The Debian root filesystem both machine images are made of (sourced, POSIX sh): the docker
# base image (ensure_image.sh) and the vagrant box (../vagrant/ensure_box.sh) share this one
# recipe, so a node is the same system whichever back-end started it.
# Sourced by scripts in compute/<back-end>/: this folder (with the entrypoint) is found from
# theirs.

ROOTFS_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")/../docker" && pwd)

# Prints the Debian mirror URI the host's apt uses for the suite $1 (not the
# security archive). Falls back to the URI of any Debian "main" archive of the
# host (a host on another release still names a full Debian mirror).
# APT_SOURCES_DIR (default /etc/apt) exists for testing this parser.
host_debian_mirror() {
    _suite=$1
    apt_dir="${APT_SOURCES_DIR:-/etc/apt}"
    {
        for f in "$apt_dir"/sources.list.d/*.sources; do
            [ -r "$f" ] || continue
            awk -v suite="$_suite" '
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
            awk -v suite="$_suite" '
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

# Makes a Debian bookworm rootfs with mmdebstrap (minbase): TARGET (a folder, or a tar file
# by its name), PACKAGES (comma-separated) from MIRROR, then any further mmdebstrap arguments
# (more customize hooks). Host keys and the machine id are removed (each machine makes its
# own), sshd's pam_loginuid is made optional (no audit in containers), the docker entrypoint
# is installed as /usr/local/sbin/raptiformica-entrypoint, docs, locales and apt's lists are
# left out. mmdebstrap's output goes to stdout/stderr.
# Usage: debian_rootfs TARGET PACKAGES MIRROR [mmdebstrap args...]
debian_rootfs() {
    _target=$1 _packages=$2 _mirror=$3
    shift 3
    # Read by the customize hooks (they run with our environment).
    RAPTIFORMICA_ENTRYPOINT_SRC="$ROOTFS_DIR/entrypoint.sh"
    export RAPTIFORMICA_ENTRYPOINT_SRC
    # Merged /usr by mmdebstrap's own hook (installs usr-is-merged) rather than by the
    # usrmerge package, which would drag perl (~50 MB) into the image.
    if [ -d /usr/share/mmdebstrap/hooks/merged-usr ]; then
        set -- --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr "$@"
    fi
    # shellcheck disable=SC2016 # the hooks are expanded by mmdebstrap's shell
    mmdebstrap \
        --variant=minbase \
        --include="$_packages" \
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
        "$@" \
        bookworm "$_target" "deb $_mirror bookworm main"
}
