#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine as root:
#   1. installs what the tests need (Debian packages, Patroni for the lab; Rust is expected,
#      cargo-nextest used if present),
#   2. starts the services the tests use (the Docker engine, libvirtd, the lab: etcd, Patroni,
#      HAProxy, Prometheus),
#   3. runs every test of the workspace (unit, property, wiremock, real Docker, libvirt's test
#      driver and real LXC domains, the lab end to end) with every feature. A test whose service
#      is missing FAILS: this script exports STEWARD_REQUIRE_SERVICES=1 whatever the caller's
#      environment says.
#
# Usage: scripts/test.sh [--quick | --build-only] [extra arguments for the test runner]
#   --quick       a developer's quick run: no packages, no Docker engine, no lab; tests that need a
#                 service print SKIPPED and pass. Not what CI runs.
#   --build-only  install everything and compile every test, run none (scripts/fresh-check.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/install.sh
source scripts/lib/install.sh

mode=full
case "${1:-}" in
    --quick) mode=quick; shift ;;
    --build-only) mode=build; shift ;;
esac

log() { printf '\n==> %s\n' "$*"; }

run_tests() {
    # --all-features: the libvirt platform is a cargo feature (off in the default build, which does
    # not link libvirt); its tests run against libvirt's test driver and a real libvirtd (lxc:///).
    if cargo nextest --version >/dev/null 2>&1; then
        # nextest does not run doctests: run them first, so that nextest's summary closes the output.
        cargo test --workspace --all-features --doc
        cargo nextest run --workspace --all-features --no-fail-fast "$@"
    else
        cargo test --workspace --all-features --no-fail-fast "$@"
    fi
}

# Compiles every test and the binary they run (target/debug/steward), running none.
build_tests() {
    if cargo nextest --version >/dev/null 2>&1; then
        cargo nextest run --workspace --all-features --no-run
    else
        cargo test --workspace --all-features --no-run
    fi
}

require_cargo

if [ "$mode" = quick ]; then
    log "quick run: no lab, no Docker engine; tests that need a service are SKIPPED"
    export STEWARD_REQUIRE_SERVICES=0
    run_tests "$@"
    exit
fi

# Debian packages the build and the tests need (the lab's own list is in scripts/lab.sh).
install_debian_packages "${BUILD_PACKAGES[@]}" \
    libvirt-dev libvirt-clients `# the libvirt platform (virt crate) and its test driver` \
    libvirt-daemon-system libvirt-daemon-driver-lxc `# libvirtd: real LXC domains (lxc:///)` \
    docker.io                   `# the Docker platform, tested on a real engine` \
    xfsprogs util-linux         `# loop-mounted XFS volumes that grow online` \
    haproxy                     `# the HAProxy Runtime API client, tested on a real haproxy` \
    etcd-server                 `# leader election on etcd leases, tested on a real etcd` \
    openssl                     `# certificates of the TLS Docker engine (scripts/dockerd.sh tls)` \
    python3-yaml binutils       `# tests/cli/packaging.rs reads the manifests; image.sh strips`
log "what the lab runs on (Debian packages, Patroni)"
scripts/lab.sh install

if [ "$mode" = build ]; then
    log "compiling every test (--build-only: none is run)"
    build_tests
    exit
fi

log "starting the Docker engine if it is not running"
scripts/dockerd.sh
log "starting a Docker engine over TCP with TLS client certificates (a remote host's kind)"
scripts/dockerd.sh tls
log "starting libvirtd for LXC domains (its own mount namespace) if it is not running"
scripts/libvirtd-lxc.sh

log "bringing up the lab (etcd, 3 Patroni members, 2 HAProxy, Prometheus) for the end-to-end tests"
scripts/lab.sh up
# Leave the machine as we found it unless asked to keep the lab for debugging.
[ -n "${STEWARD_KEEP_LAB:-}" ] || trap 'scripts/lab.sh down >/dev/null 2>&1 || true' EXIT
# The end-to-end tests read the lab's addresses from these variables.
eval "$(scripts/lab.sh env)"
export STEWARD_LAB=1
# The contract: every service above is up, so a test that finds one missing fails, never skips.
export STEWARD_REQUIRE_SERVICES=1

# tests/cli/packaging.rs runs Steward's image on the lab: built from the binary the tests run
# (the debug build, --all-features), not a release build (minutes more).
log "building the tests, then the image steward:<version> from target/debug/steward"
build_tests
scripts/image.sh --binary target/debug/steward

log "running the tests"
run_tests "$@"
