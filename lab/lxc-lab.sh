#!/usr/bin/env bash
# What Patroni members as libvirt LXC domains need on this machine (examples/libvirt-lxc.toml;
# tests/cli/e2e_libvirt.rs): libvirtd, an etcd of their own, and the Patroni configuration,
# entrypoint and passwords the domains see read-only. The members themselves are made by Steward's
# libvirt platform (the test makes the first three through it, as an operator's `steward` would
# make replacements), never by this script.
#
#   lab/lxc-lab.sh up     libvirtd (scripts/libvirtd-lxc.sh), etcd on 127.0.81.2:2379
#                         (scripts/etcd.sh), /var/lib/steward-lxc/patroni/{patroni.yml,member.sh}
#                         and /var/lib/steward-lxc/patroni-secrets/patroni.env (root only, 600).
#                         Idempotent; passwords are made once.
#   lab/lxc-lab.sh down   stops that etcd (its data goes with it). Domains are the caller's to
#                         remove (through Steward's platform, or `virsh -c lxc:/// undefine`).
#
# The same Patroni 4.1.5 (/opt/steward-lab/venv, `scripts/lab.sh install`), the same entrypoint
# (lab/patroni-member.sh) and the same shared configuration (lab/patroni.yml.tmpl) as the Docker
# lab: an LXC member is the Docker lab's member in another kind of container. Loopback only:
# etcd at 127.0.81.2, members at 127.0.81.11-19 (examples/libvirt-lxc.toml's `addresses`).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE=/var/lib/steward-lxc
ETCD=127.0.81.2:2379
PATRONI=/opt/steward-lab/venv/bin/patroni

log() { printf '==> %s\n' "$*" >&2; }

up() {
    [ "$(id -u)" -eq 0 ] || { echo "lxc-lab.sh: run as root" >&2; exit 1; }
    if [ ! -x "$PATRONI" ]; then
        echo "lxc-lab.sh: no Patroni at $PATRONI; \`scripts/lab.sh install\` installs it" >&2
        exit 1
    fi
    "$ROOT/scripts/libvirtd-lxc.sh" >&2
    "$ROOT/scripts/etcd.sh" start "$ETCD" >/dev/null
    install -d -m 755 "$STATE" "$STATE/patroni" "$STATE/members"
    install -d -m 700 "$STATE/patroni-secrets"
    sed "s/@ETCD_ADDR@/${ETCD%:*}/g" "$ROOT/lab/patroni.yml.tmpl" >"$STATE/patroni/patroni.yml.new"
    mv "$STATE/patroni/patroni.yml.new" "$STATE/patroni/patroni.yml"
    chmod 644 "$STATE/patroni/patroni.yml"
    install -m 755 "$ROOT/lab/patroni-member.sh" "$STATE/patroni/member.sh"
    local env=$STATE/patroni-secrets/patroni.env
    if [ ! -s "$env" ]; then
        gen() { head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24; }
        (
            umask 077
            printf 'PATRONI_SUPERUSER_PASSWORD=%s\nPATRONI_REPLICATION_PASSWORD=%s\n' \
                "$(gen)" "$(gen)" >"$env.new"
            mv "$env.new" "$env"
        )
    fi
    log "LXC lab ready: etcd $ETCD, Patroni configuration in $STATE/patroni"
}

down() {
    "$ROOT/scripts/etcd.sh" stop "$ETCD" >/dev/null 2>&1 || true
    log "etcd $ETCD stopped"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
