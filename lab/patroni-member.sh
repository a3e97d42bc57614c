#!/bin/sh
# The entrypoint of every lab database member: lab-pg-1..3 started by scripts/lab.sh and the
# members Steward's Docker platform creates from the template in examples/lab.toml run this same
# program, so both are made alike. scripts/lab.sh installs it as
# /var/lib/steward-lab/patroni/member.sh (the containers see the host's /usr, /etc, /opt and the
# lab's folders, not the work tree).
#
# What it does, as root inside the container, then as postgres:
#   1. gives the member's data volume (the mount holding PATRONI_POSTGRESQL_DATA_DIR) to postgres:
#      Steward's loop-xfs volumes come fresh from mkfs.xfs, owned by root, and the platform runs
#      no command of its own in them;
#   2. reads the passwords (PATRONI_SUPERUSER_PASSWORD, PATRONI_REPLICATION_PASSWORD) from the
#      root-only file mounted read-only, so they are in no container's configuration;
#   3. drops to postgres and execs Patroni with the shared configuration; the member's own
#      values are PATRONI_* variables set by whoever created the container (Patroni removes every
#      PATRONI_* variable from the environment it passes on to postgres).
# What it is not: a config renderer (Patroni merges the environment over the file itself).
set -eu

config=${STEWARD_LAB_PATRONI_CONFIG:-/var/lib/steward-lab/patroni/patroni.yml}
secrets=${STEWARD_LAB_PATRONI_SECRETS:-/var/lib/steward-lab/patroni-secrets/patroni.env}
patroni=${STEWARD_LAB_PATRONI:-/opt/steward-lab/venv/bin/patroni}
data=${PATRONI_POSTGRESQL_DATA_DIR:?the member needs PATRONI_POSTGRESQL_DATA_DIR}

fail() { echo "patroni-member: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "must start as root (uid 0) to prepare the volume; it then runs Patroni as postgres"
uid=$(id -u postgres) || fail "no postgres user in /etc/passwd"
gid=$(id -g postgres)

volume=$(dirname "$data")
[ -d "$volume" ] || fail "$volume (the parent of the data directory) is not mounted"
chown "$uid:$gid" "$volume"
chmod 700 "$volume"

[ -r "$secrets" ] || fail "cannot read the secrets file $secrets"
set -a
# shellcheck disable=SC1090 # KEY=VALUE lines written by scripts/lab.sh
. "$secrets"
set +a

# No supplementary groups, no capabilities left: from here on it is the postgres user alone.
exec setpriv --reuid="$uid" --regid="$gid" --clear-groups "$patroni" "$config"
