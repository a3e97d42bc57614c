#!/usr/bin/env bash
# End-to-end check of scripts/lab.sh itself, from whatever state the lab is in:
#   down -> up (timed) -> status -> a write through each balancer's primary port is read back on its
#   replica port -> a killed member and a killed balancer come back with `up` -> `up` on a healthy lab
#   changes nothing -> down -> no lab container, mount, loop device or state folder is left.
# Leaves the lab DOWN. Prints "N passed, N failed" and exits non-zero on any failure.
# Usage: lab/selftest.sh   (as root; takes about a minute)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LAB="$ROOT/scripts/lab.sh"
STATE=/var/lib/steward-lab
passed=0 failed=0

check() { # check DESCRIPTION COMMAND...
    local what=$1
    shift
    if "$@"; then
        passed=$((passed + 1))
        echo "ok   $what"
    else
        failed=$((failed + 1))
        echo "FAIL $what"
    fi
}

quiet() { "$@" >/dev/null; }

nothing_left() {
    [[ -z $(docker ps -aq --filter label=io.steward.lab=1) ]] \
        && [[ -z $(docker ps -aq --filter label=io.steward.cluster=steward-lab) ]] \
        && [[ -z $(losetup -l -n -O BACK-FILE | grep -F "$STATE/" || true) ]] \
        && [[ -z $(findmnt -rn -o TARGET | grep -F "$STATE" || true) ]] \
        && [[ ! -e $STATE ]]
}

# A row written through BALANCER:5432 (the primary) is read through BALANCER:5433 (a replica).
write_read() {
    local b=$1 token got
    token="t$RANDOM$RANDOM"
    psql -h "$b" -p 5432 -XAtq -v ON_ERROR_STOP=1 \
        -c "SET client_min_messages = warning" -c "CREATE TABLE IF NOT EXISTS lab_selftest (token text)" \
        -c "INSERT INTO lab_selftest VALUES ('$token')" || return 1
    for _ in $(seq 1 20); do
        got=$(psql -h "$b" -p 5433 -XAtc "SELECT count(*) FROM lab_selftest WHERE token = '$token' AND pg_is_in_recovery()" 2>/dev/null || true)
        [[ $got == 1 ]] && return 0
        sleep 0.25
    done
    return 1
}

not_recreated() { # the containers' ids did not change across an `up` of a healthy lab
    local before after
    before=$(docker ps -q --filter label=io.steward.lab=1 --no-trunc | sort)
    "$LAB" up >/dev/null 2>&1 || return 1
    after=$(docker ps -q --filter label=io.steward.lab=1 --no-trunc | sort)
    [[ $before == "$after" ]]
}

"$LAB" down >/dev/null 2>&1
check "down leaves nothing behind (first)" nothing_left

t0=$SECONDS
check "up from nothing reaches healthy" quiet "$LAB" up
echo "     (up took $((SECONDS - t0)) s)"
check "status says healthy" quiet "$LAB" status
eval "$("$LAB" env)"
check "env names three Patroni URLs" test "$(tr ',' '\n' <<<"$PATRONI_URLS" | wc -l)" -eq 3
check "secrets are root-only" test "$(stat -c %a "$STATE/secrets/passwords.env")" = 600
check "no password in docker inspect" bash -c "! docker inspect \$(docker ps -q --filter label=io.steward.lab=1) | grep -qF \"\$(sed -n 's/^SUPERUSER_PASSWORD=//p' $STATE/secrets/passwords.env)\""
for b in ${HAPROXY_ADDRS//,/ }; do
    check "write via $b:5432 is read back via $b:5433" write_read "$b"
done
check "the members carry Steward's labels" test "$(docker ps -q --filter label=io.steward.cluster=steward-lab \
    --filter label=io.steward.role=database --filter label=io.steward.address | wc -l)" -eq 3
check "the members' password file is root-only" test "$(stat -c '%U %a' "$STATE/patroni-secrets/patroni.env")" = "root 600"
check "Patroni runs as postgres, not root" test "$(ps -o user= -C patroni | sort -u)" = postgres
backend_pid=$(pgrep -f 'postgres: steward-lab: checkpointer' | head -n1)
check "postgres children have oom_score_adj 900" test "$(cat "/proc/$backend_pid/oom_score_adj")" = 900

docker kill lab-pg-2 lab-haproxy-2 >/dev/null
check "up brings a killed member and balancer back" quiet "$LAB" up
check "up on a healthy lab recreates nothing" not_recreated

check "down succeeds" quiet "$LAB" down
check "down leaves nothing behind" nothing_left

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
