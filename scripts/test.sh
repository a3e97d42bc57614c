#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine as root:
#   1. installs what the tests need (Debian packages; Rust is expected, cargo-nextest used if present),
#   2. starts the services the tests use (the Docker engine) when they are not running,
#   3. runs every test of the workspace (unit, property, wiremock, real Docker, libvirt test driver).
# Usage: scripts/test.sh [extra arguments for the test runner]
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

# Debian packages the build and the tests need. Installed only when missing, so a second run is quick.
packages=(
    pkg-config libvirt-dev libvirt-clients  # the libvirt platform (virt crate) and its test driver
    protobuf-compiler                       # etcd-client's build
    docker.io                               # the Docker platform, tested on a real engine
    xfsprogs util-linux                     # loop-mounted XFS volumes that grow online
    haproxy                                 # the HAProxy Runtime API client, tested on a real haproxy
    etcd-server                             # leader election on etcd leases, tested on a real etcd
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null; then
    echo "error: cargo is not installed; install Rust (rustup) first" >&2
    exit 1
fi

log "starting the Docker engine if it is not running"
scripts/dockerd.sh

log "bringing up the lab (etcd, 3 Patroni members, 2 HAProxy, Prometheus) for the end-to-end tests"
scripts/lab.sh up
# Leave the machine as we found it unless asked to keep the lab for debugging.
[ -n "${STEWARD_KEEP_LAB:-}" ] || trap 'scripts/lab.sh down >/dev/null 2>&1 || true' EXIT
# The end-to-end tests read the lab's addresses from these variables and fail (not skip) under CI
# when they are missing.
eval "$(scripts/lab.sh env)"
export STEWARD_LAB=1

log "running the tests"
# --all-features: the libvirt platform is a cargo feature (off in the default build, which does
# not link libvirt); its tests run against libvirt's test driver here.
if cargo nextest --version >/dev/null 2>&1; then
    # nextest does not run doctests: run them first, so that nextest's summary closes the output.
    cargo test --workspace --all-features --doc
    cargo nextest run --workspace --all-features --no-fail-fast "$@"
else
    cargo test --workspace --all-features --no-fail-fast "$@"
fi
