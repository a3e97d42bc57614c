#!/usr/bin/env bash
# image.sh: a container image of Steward, built here without a registry or a base image.
#
# What it does: takes the steward binary (by default `cargo build --release -p steward`, the
# README's build: Docker, simulated and Kubernetes platforms, no libvirt), copies it without its
# debug sections into an empty root folder with exactly the shared libraries `ldd` says it
# loads, the CA certificates, and minimal /etc/passwd, /etc/group and /etc/nsswitch.conf, then
# `docker import`s that folder as `steward:<version>` (the version `steward --version` prints).
# The image has no shell and no package manager: its entrypoint is /usr/bin/steward, its user
# `steward` (65532:65532), its working folder /var/lib/steward (the default state folder).
#
# Usage: scripts/image.sh [--binary PATH] [--tag NAME:TAG]
#   --binary PATH  put this binary in the image instead of building the release one (e.g.
#                  target/debug/steward, which scripts/test.sh uses: it is built already; a
#                  `--features libvirt` build works too, ldd brings libvirt's libraries along)
#   --tag NAME:TAG the image's name (default steward:<version>)
# Needs: a running Docker engine (scripts/dockerd.sh), binutils' `strip`, ldd. Root is not
# needed beyond access to the engine. Prints the image's name and size, and checks that
# `steward --version` runs inside it.
#
# Run it as a sidecar of the lab (README, "Packaging"):
#   docker run -d --name steward --network host --user 65532:65532 \
#       --group-add "$(stat -c %g /var/run/docker.sock)" \
#       -v /etc/steward/steward.toml:/etc/steward/steward.toml:ro \
#       -v /var/run/docker.sock:/var/run/docker.sock -v /srv/steward:/var/lib/steward \
#       steward:0.1.0 run --config /etc/steward/steward.toml --log info
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/install.sh
source scripts/lib/install.sh

die() { printf 'image.sh: error: %s\n' "$*" >&2; exit 1; }
log() { printf '==> %s\n' "$*" >&2; }

BIN= TAG=
while [[ $# -gt 0 ]]; do
    case $1 in
        --binary) BIN=${2:?--binary needs a path}; shift 2 ;;
        --tag) TAG=${2:?--tag needs NAME:TAG}; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument \`$1\` (see --help)" ;;
    esac
done

command -v docker >/dev/null || die "docker is not installed (apt-get install docker.io)"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer (scripts/dockerd.sh starts it)"
command -v strip >/dev/null || die "strip is not installed (apt-get install binutils)"
CA=/etc/ssl/certs/ca-certificates.crt
[[ -f $CA ]] || die "$CA is missing (apt-get install ca-certificates)"

if [[ -z $BIN ]]; then
    require_cargo
    log "building the release binary (cargo build --release -p steward)"
    cargo build --release -p steward
    BIN=target/release/steward
fi
[[ -x $BIN ]] || die "$BIN is not an executable"
VERSION=$("$BIN" --version | awk '{ print $2 }')
[[ -n $VERSION ]] || die "$BIN --version printed no version"
TAG=${TAG:-steward:$VERSION}

ROOTFS=$(mktemp -d)
trap 'rm -rf "$ROOTFS" "$ROOTFS.tar"' EXIT
mkdir -p "$ROOTFS"/{usr/bin,etc/ssl/certs,etc/steward,tmp,var/lib/steward}
chmod 1777 "$ROOTFS/tmp"
chmod 0700 "$ROOTFS/var/lib/steward"

# The binary without its debug sections (a release build keeps line tables for backtraces on
# the host; function names stay in the symbol table).
strip --strip-debug -o "$ROOTFS/usr/bin/steward" "$BIN"

# Exactly what the dynamic loader maps: `NAME => /path (addr)` lines and the loader's own
# `/path (addr)` line; vDSO lines have no path. A library not found stops the build.
if ldd "$BIN" | grep -q 'not found'; then
    die "$BIN needs libraries this machine does not have: $(ldd "$BIN" | grep 'not found' | tr -s ' \t' ' ')"
fi
mapfile -t LIBS < <(ldd "$BIN" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
[[ ${#LIBS[@]} -gt 0 ]] || die "ldd lists no library for $BIN (a static binary needs none: check ldd's output)"
for lib in "${LIBS[@]}"; do
    mkdir -p "$ROOTFS$(dirname "$lib")"
    cp -L "$lib" "$ROOTFS$lib"     # the file itself, under the name the loader asks for
done

cp "$CA" "$ROOTFS$CA"
cat >"$ROOTFS/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
steward:x:65532:65532:steward:/var/lib/steward:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
EOF
cat >"$ROOTFS/etc/group" <<'EOF'
root:x:0:
steward:x:65532:
nogroup:x:65534:
EOF
# Name lookups: /etc/hosts (the engine mounts one), then DNS (its /etc/resolv.conf); glibc 2.34+
# has the files and dns modules built in, so no libnss_*.so is needed.
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$ROOTFS/etc/nsswitch.conf"

log "importing $TAG from $BIN ($(du -sh "$ROOTFS" | cut -f1) root folder: ${#LIBS[@]} libraries)"
tar --numeric-owner --owner=0 --group=0 -C "$ROOTFS" --exclude=./var/lib/steward -cf "$ROOTFS.tar" .
tar --numeric-owner --owner=65532 --group=65532 -C "$ROOTFS" -rf "$ROOTFS.tar" ./var/lib/steward
docker import \
    --change 'ENTRYPOINT ["/usr/bin/steward"]' \
    --change 'CMD ["--help"]' \
    --change 'USER 65532:65532' \
    --change 'WORKDIR /var/lib/steward' \
    --change "ENV SSL_CERT_FILE=$CA" \
    --change "LABEL org.opencontainers.image.title=steward org.opencontainers.image.version=$VERSION" \
    --message "steward $VERSION from $BIN" \
    "$ROOTFS.tar" "$TAG" >/dev/null

docker run --rm --network none "$TAG" --version >/dev/null || die "$TAG does not run \`steward --version\`"
SIZE=$(docker image inspect -f '{{.Size}}' "$TAG")
printf '%s\t%s bytes (%s MiB)\tfrom %s\n' "$TAG" "$SIZE" "$(( SIZE / 1024 / 1024 ))" "$BIN"
