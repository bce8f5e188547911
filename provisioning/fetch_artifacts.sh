#!/bin/sh
# Gathers the binaries a node needs into DEST (default: $RAPTIFORMICA_CACHE_DIR/artifacts):
#   consul 1.8.7 from Debian's bullseye suite (bookworm has none), and yggdrasil + yggdrasilctl
#   from bookworm. It uses a private apt tree (APT_CONFIG), so the host's apt configuration is
#   neither read for options nor changed; the mirror is the one the host's apt sources name
#   (override: RAPTIFORMICA_DEBIAN_MIRROR). apt verifies the suites' signatures and the .debs'
#   checksums. Run by `raptiformica artifacts fetch`.
set -eu

dest=${1:-${RAPTIFORMICA_CACHE_DIR:?}/artifacts}
log() { printf 'artifacts: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v apt-get >/dev/null 2>&1 || die "apt-get is needed to fetch the artifacts (a Debian host)"
command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb is needed to unpack the artifacts"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -r "$keyring" ] || die "$keyring is missing: apt-get install debian-archive-keyring"

mirror=${RAPTIFORMICA_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
  mirror=$(apt-get indextargets --no-release-info --format '$(REPO_URI)' 'Identifier: Packages' 'Release: bookworm' 2>/dev/null |
    grep -v security | sort -u | head -n 1)
fi
[ -n "$mirror" ] || die "no Debian bookworm mirror in this host's apt sources; set RAPTIFORMICA_DEBIAN_MIRROR"

work=$(mktemp -d "${TMPDIR:-/tmp}/raptiformica-artifacts.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
mkdir -p "$work/etc/sources.list.d" "$work/etc/apt.conf.d" "$work/etc/preferences.d" "$work/state" \
  "$work/lists/partial" "$work/cache/archives/partial" "$work/debs" "$work/out"
cat >"$work/etc/sources.list.d/raptiformica.sources" <<SRC
Types: deb
URIs: $mirror
Suites: bullseye bookworm
Components: main
Architectures: amd64
Signed-By: $keyring
SRC
cat >"$work/etc/apt.conf" <<CONF
Dir::Etc::Parts "$work/etc/apt.conf.d";
Dir::Etc::Main "/dev/null";
Dir::Etc::SourceList "/dev/null";
Dir::Etc::SourceParts "$work/etc/sources.list.d";
Dir::Etc::Preferences "/dev/null";
Dir::Etc::PreferencesParts "$work/etc/preferences.d";
Dir::State "$work/state";
Dir::State::Lists "$work/lists";
Dir::State::status "/dev/null";
Dir::Cache "$work/cache";
APT::Sandbox::User "root";
Acquire::Languages "none";
Debug::NoLocking "true";
CONF
export APT_CONFIG="$work/etc/apt.conf"

log "reading the package lists of bullseye and bookworm from $mirror"
apt-get -q update >"$work/apt.log" 2>&1 || { tail -n 15 "$work/apt.log" >&2; die "apt-get update failed"; }
log "downloading consul (bullseye) and yggdrasil (bookworm)"
(cd "$work/debs" && apt-get -q download consul/bullseye yggdrasil/bookworm) >>"$work/apt.log" 2>&1 ||
  { tail -n 15 "$work/apt.log" >&2; die "apt-get download failed"; }
dpkg-deb --fsys-tarfile "$work"/debs/consul_*.deb | tar -x -C "$work/out" ./usr/bin/consul
dpkg-deb --fsys-tarfile "$work"/debs/yggdrasil_*.deb | tar -x -C "$work/out" ./usr/sbin/yggdrasil ./usr/sbin/yggdrasilctl
mkdir -p "$dest"
for bin in usr/bin/consul usr/sbin/yggdrasil usr/sbin/yggdrasilctl; do
  name=$(basename "$bin")
  install -m 0755 "$work/out/$bin" "$dest/.$name.new"
  mv -f "$dest/.$name.new" "$dest/$name"
done
{
  printf 'consul %s\n' "$(dpkg-deb -f "$work"/debs/consul_*.deb Version)"
  printf 'yggdrasil %s\n' "$(dpkg-deb -f "$work"/debs/yggdrasil_*.deb Version)"
} >"$dest/VERSIONS"
log "consul and yggdrasil are in $dest"
