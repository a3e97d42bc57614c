# shellcheck shell=bash
# What the project's scripts share to install Debian packages. Source it, then call
#   install_debian_packages PACKAGE...
# It installs only the packages that are missing (a second run is quick), never lets a package's
# init script start a service (no systemd here, and Debian's own prometheus or postgres_exporter
# would take the lab's ports), and dies with the apt-get exit code when the install fails.
#
# Why each build package is in the lists (scripts/demo.sh, scripts/test.sh):
#   gcc libc6-dev      rustc links through `cc`; some crates compile C
#   pkg-config         finds C libraries for -sys crates (libvirt)
#   protobuf-compiler  etcd-client's build script runs `protoc`
#   libprotobuf-dev    the well-known .proto files (google/protobuf/descriptor.proto) that protoc
#                      needs; `--no-install-recommends` does not pull them in with the compiler
#   ca-certificates    cargo fetches crates over HTTPS
# Why Debian's protoc and not a vendored one: etcd-client's build script runs whatever `protoc` is on
# PATH (or in $PROTOC), so a crate that ships protoc would still need a path wired into the build;
# protobuf-src compiles protoc from C++ source (minutes on 2 cores). Two Debian packages are the
# simplest build that works.
BUILD_PACKAGES=(gcc libc6-dev pkg-config protobuf-compiler libprotobuf-dev ca-certificates)

install_debian_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    printf '==> installing %s\n' "${missing[*]}" >&2
    local policy=/usr/sbin/policy-rc.d made_policy=false
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=true
    fi
    local rc=0
    { DEBIAN_FRONTEND=noninteractive apt-get update -q \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; } || rc=$?
    if $made_policy; then rm -f "$policy"; fi
    if [[ $rc -ne 0 ]]; then
        printf 'error: apt-get install %s failed (exit %d)\n' "${missing[*]}" "$rc" >&2
        exit "$rc"
    fi
}

# Rust is the one thing the scripts expect (rustup: https://rustup.rs); say so plainly when absent.
require_cargo() {
    if ! command -v cargo >/dev/null; then
        echo "error: cargo is not installed; install Rust first (rustup), then run this again" >&2
        exit 1
    fi
}
