#!/usr/bin/env bash
# Issue 6's measurement: the time from a replica's death to its replacement streaming, next to
# pg_basebackup's own time for the same data, on the lab (scripts/lab.sh).
#
#   scripts/measure-replace.sh [MB ...]     default: 20 1024
#
# For each size: the lab's disks grow to hold it (LAB_DISK_SIZE, online), pgbench's tables are
# loaded to about MB megabytes through HAProxy (127.0.0.21:5432), then
#   1. Steward's path: adapters/tests/it/lab_docker.rs with the Docker platform and the template of
#      examples/lab.toml (docker kill of a replica -> fence -> create lab-pg-5 -> streaming), which
#      prints the times and leaves the lab healthy with its three members;
#   2. a plain `pg_basebackup -X stream -c fast` of the leader into a folder on the same host disk.
# One line per size on stdout: size, replacement time and its parts, basebackup time.
# What it is not: a benchmark of Patroni's failover (the leader never changes here).
#
# Needs root and the lab (it runs `scripts/lab.sh up`). At the end the pgbench tables are dropped;
# the disks stay at their grown size (sparse images). Environment: MEASURE_RUNS (runs per size,
# default 1).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS="${MEASURE_RUNS:-1}"
PG_BIN=/usr/lib/postgresql/15/bin
SIZES=("$@")
[[ ${#SIZES[@]} -gt 0 ]] || SIZES=(20 1024)

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'measure-replace: error: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (the lab needs it)"
for mb in "${SIZES[@]}"; do [[ $mb =~ ^[0-9]+$ && $mb -gt 0 ]] || die "'$mb' is not a size in MB"; done

# The largest size decides the disks: data, WAL kept for the replicas (wal_keep_size 128 MB,
# max_wal_size 1 GB) and room to spare; at least the lab's 512 MiB.
max=0
for mb in "${SIZES[@]}"; do if ((mb > max)); then max=$mb; fi; done
disk_mb=$((max * 3 + 1536))
if ((disk_mb < 512)); then disk_mb=512; fi
export LAB_DISK_SIZE="${disk_mb}M"
log "lab up with ${LAB_DISK_SIZE} disks"
"$ROOT/scripts/lab.sh" up >/dev/null
eval "$("$ROOT/scripts/lab.sh" env)"

# The replication password, for pg_basebackup (pg_hba lets only `replicator` replicate), goes into
# a private password file that is removed on exit; nothing is printed.
work=$(mktemp -d /var/lib/steward-lab/measure.XXXXXX)
trap 'rm -rf "$work"' EXIT
chmod 700 "$work"
repl=$(sed -n 's/^REPLICATION_PASSWORD=//p' "$STEWARD_LAB_SECRETS")
(umask 077 && printf '*:*:*:replicator:%s\n' "$repl" >"$work/pgpass")
unset repl

psql_lb() { psql -X -q -v ON_ERROR_STOP=1 -h "$PGHOST" -p "$PGPORT" -U postgres -d postgres "$@"; }

leader_addr() {
    local url
    for url in ${PATRONI_URLS//,/ }; do
        curl -sS -m 2 "$url/cluster" 2>/dev/null \
            | jq -r '.members[]? | select(.role == "leader") | .host' && return
    done
}

# Waits until every replica has replayed what the leader wrote (byte lag 0 in /cluster).
wait_caught_up() {
    local url lag
    for _ in $(seq 1 300); do
        url=${PATRONI_URLS%%,*}
        lag=$(curl -sS -m 2 "$url/cluster" 2>/dev/null \
            | jq '[.members[] | select(.role != "leader") | (.lag // 1 | if type == "number" then . else 1 end)] | add // 1') || lag=1
        [[ $lag == 0 ]] && return 0
        sleep 1
    done
    die "replicas did not catch up within 300 s"
}

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

printf '%-8s %-10s %-22s %-14s %-16s\n' SIZE_MB DB_MB REPLACE_S "(FENCE/CREATE)" BASEBACKUP_S
for mb in "${SIZES[@]}"; do
    # pgbench: scale 1 is about 15 MB of tables and indexes (22 MB with the rest of the database).
    scale=$(((mb + 8) / 16))
    if ((scale < 1)); then scale=1; fi
    log "loading pgbench scale $scale (~$mb MB) through HAProxy $PGHOST:$PGPORT"
    "$PG_BIN/pgbench" -i -q -s "$scale" -h "$PGHOST" -p "$PGPORT" -U postgres postgres >/dev/null 2>&1 \
        || die "pgbench -i -s $scale failed"
    psql_lb -c 'CHECKPOINT'
    db_mb=$(psql_lb -At -c "SELECT pg_database_size('postgres') / 1048576")
    wait_caught_up
    for run in $(seq 1 "$RUNS"); do
        log "size $mb MB, run $run: replacing a replica with Steward's Docker platform"
        out=$(cd "$ROOT" && STEWARD_LAB=1 cargo test -q -p steward-adapters --test it \
            lab_docker::the_platform_adds_fences_removes_and_replaces_real_lab_members -- --nocapture 2>&1) \
            || { printf '%s\n' "$out" | tail -n 30 >&2; die "the replacement test failed"; }
        line=$(grep -o 'REPLACE .*' <<<"$out" | head -n1)
        [[ -n $line ]] || die "the test printed no REPLACE line"
        streaming=$(sed -n 's/.*streaming_s=\([0-9.]*\).*/\1/p' <<<"$line")
        fenced=$(sed -n 's/.*fenced_s=\([0-9.]*\).*/\1/p' <<<"$line")
        created=$(sed -n 's/.*created_s=\([0-9.]*\).*/\1/p' <<<"$line")
        wait_caught_up

        log "size $mb MB, run $run: pg_basebackup of the leader"
        leader=$(leader_addr)
        [[ -n $leader ]] || die "no leader"
        rm -rf "$work/base"
        t0=$(now)
        PGPASSFILE="$work/pgpass" "$PG_BIN/pg_basebackup" -h "$leader" -p 5432 -U replicator \
            -D "$work/base" -X stream -c fast >/dev/null
        t1=$(now)
        bb=$(secs "$t0" "$t1")
        printf '%-8s %-10s %-22s %-14s %-16s\n' "$mb" "$db_mb" "$streaming" "($fenced/$created)" "$bb"
        rm -rf "$work/base"
    done
done

log "dropping the pgbench tables"
"$PG_BIN/pgbench" -i -I d -h "$PGHOST" -p "$PGPORT" -U postgres postgres >/dev/null 2>&1 || true
psql_lb -c 'CHECKPOINT'
"$ROOT/scripts/lab.sh" status >/dev/null || die "the lab is not healthy at the end; see scripts/lab.sh status"
log "done; the lab is healthy"
