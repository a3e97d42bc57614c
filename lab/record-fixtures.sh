#!/usr/bin/env bash
# Records REAL responses from the running lab into the test fixtures:
#   tests/data/fixtures/prometheus/           Prometheus HTTP API answers (instant, range, empty, error)
#   tests/data/fixtures/patroni-4.1.5-extra/  Patroni 4.1.5 answers in states the shared fixtures lack:
#                                             a stopped member, a killed replica, a failover in progress
# Each folder gets an INDEX.txt: file <- request, and what state the lab was in.
# It disturbs the lab on purpose (stops, kills members) and brings it back with `scripts/lab.sh up`.
# Usage: scripts/lab.sh record [all|prometheus|patroni]   (the lab must be up and healthy)
# The adapters' tests pin values of the Prometheus recordings (timestamps, figures), so an existing
# prometheus/INDEX.txt is kept unless LAB_RECORD_FORCE=1: re-recording means updating those tests.
set -euo pipefail
WHAT=${1:-all}
case $WHAT in all | prometheus | patroni) ;; *) echo "usage: $0 [all|prometheus|patroni]" >&2; exit 2 ;; esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LAB="$ROOT/scripts/lab.sh"
PROM_OUT="$ROOT/tests/data/fixtures/prometheus"
PAT_OUT="$ROOT/tests/data/fixtures/patroni-4.1.5-extra"
eval "$("$LAB" env)"
PROM="$PROMETHEUS_URL"
read -r -a MEMBERS <<<"$STEWARD_LAB_MEMBERS"
declare -A ADDR=([lab-pg-1]=127.0.0.11 [lab-pg-2]=127.0.0.12 [lab-pg-3]=127.0.0.13)
VENV=/opt/steward-lab/venv

log() { printf '==> %s\n' "$*" >&2; }

# Removes the files a previous run recorded (named in its INDEX.txt), and nothing else: other people's
# fixtures live in the same folders (the adapters' tests use these recordings by name).
forget_previous() {
    local dir=$1 f
    [[ -f $dir/INDEX.txt ]] || return 0
    while read -r f _; do
        [[ $f == *.json && $f != */* ]] && rm -f "${dir:?}/$f"
    done <"$dir/INDEX.txt"
    rm -f "$dir/INDEX.txt"
}

# prom NAME PATH [curl --data-urlencode args...]
prom() {
    local name=$1 path=$2 code
    shift 2
    code=$(curl -sS -m 10 -G -o "$PROM_OUT/tmp.json" -w '%{http_code}' "$PROM$path" "$@")
    mv "$PROM_OUT/tmp.json" "$PROM_OUT/$name.http$code.json"
    local q=""
    for a in "$@"; do [[ $a == --data-urlencode ]] || q+="${q:+&}$a"; done
    echo "$name.http$code.json <- GET $path?$q" >>"$PROM_OUT/INDEX.txt"
    log "prometheus: $name -> $code"
}

# pat FILE_STEM MEMBER PATH [NOTE]: GET http://MEMBER:8008/PATH into FILE_STEM.http<status>.json
pat() {
    local stem=$1 m=$2 path=$3 note=${4:-} code
    code=$(curl -sS -m 3 -o "$PAT_OUT/tmp.json" -w '%{http_code}' "http://${ADDR[$m]}:8008/$path") || code=000
    if [[ $code == 000 ]]; then
        rm -f "$PAT_OUT/tmp.json"
        echo "$stem: no answer from $m (connection refused or timed out) <- GET $path${note:+  ($note)}" >>"$PAT_OUT/INDEX.txt"
        return
    fi
    mv "$PAT_OUT/tmp.json" "$PAT_OUT/$stem.http$code.json"
    echo "$stem.http$code.json <- GET $path from $m${note:+  ($note)}" >>"$PAT_OUT/INDEX.txt"
}

leader() { curl -sS -m 2 "http://${ADDR[$1]}:8008/cluster" | jq -r '.members[] | select(.role == "leader") | .name'; }

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
    local limit=$1 what=$2 start=$SECONDS
    shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS - start < limit)) || { echo "record: timed out waiting for $what" >&2; return 1; }
        sleep 0.5
    done
}

"$LAB" status >/dev/null || { echo "record: the lab is not healthy; run scripts/lab.sh up first" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------------
# Prometheus
# ---------------------------------------------------------------------------------------------------
record_prometheus() {
    if [[ -f $PROM_OUT/INDEX.txt && ${LAB_RECORD_FORCE:-0} != 1 ]]; then
        log "prometheus: keeping the recordings in $PROM_OUT (tests pin them; LAB_RECORD_FORCE=1 to redo)"
        return 0
    fi
    mkdir -p "$PROM_OUT"
    forget_previous "$PROM_OUT"
    NOW=$(date -u +%s)
    {
        echo "# Real Prometheus 2.42 HTTP API answers from the Steward lab (scripts/lab.sh), recorded $(date -u +%FT%TZ)."
        echo "# Targets carry a \`member\` label (Patroni member name) from file_sd; scrape interval 5 s."
        echo "# 3 members (lab-pg-1..3), postgres_exporter 0.11.1 with lab/exporter-queries.yaml, 2 HAProxy."
        echo "# file <- request (GET, query string url-encoded when sent); time = $NOW"
        echo "# Only the files listed here are recorded (and rewritten) by lab/record-fixtures.sh; the"
        echo "# hand-written cases live in ../prometheus-handwritten/ (the Prometheus adapter's tests)."
    } >"$PROM_OUT/INDEX.txt"

    prom query.patroni_postgres_running /api/v1/query --data-urlencode 'query=patroni_postgres_running' --data-urlencode "time=$NOW"
    prom query.patroni_primary /api/v1/query --data-urlencode 'query=patroni_primary' --data-urlencode "time=$NOW"
    prom query.pg_up /api/v1/query --data-urlencode 'query=pg_up' --data-urlencode "time=$NOW"
    prom query.pg_replication_replay_lag_bytes /api/v1/query --data-urlencode 'query=pg_replication_replay_lag_bytes' --data-urlencode "time=$NOW"
    prom query.pg_replication_is_replica /api/v1/query --data-urlencode 'query=pg_replication_is_replica' --data-urlencode "time=$NOW"
    # Bytes each replica's replay is behind the leader's current WAL position, from Patroni's metrics.
    prom query.replica_bytes_behind_leader /api/v1/query \
        --data-urlencode 'query=scalar(max(patroni_xlog_location)) - max by (member) (patroni_xlog_replayed_location and on (member) patroni_replica == 1)' \
        --data-urlencode "time=$NOW"
    prom query.rate_process_cpu_by_member /api/v1/query \
        --data-urlencode 'query=sum by (member) (rate(process_cpu_seconds_total{member!=""}[1m]))' --data-urlencode "time=$NOW"
    prom query.up /api/v1/query --data-urlencode 'query=up' --data-urlencode "time=$NOW"
    prom query.empty_result /api/v1/query --data-urlencode 'query=patroni_postgres_running{member="no-such-member"}' --data-urlencode "time=$NOW"
    prom query.bad_syntax /api/v1/query --data-urlencode 'query=sum by (member (' --data-urlencode "time=$NOW"
    prom query_range.rate_process_cpu_by_member /api/v1/query_range \
        --data-urlencode 'query=sum by (member) (rate(process_cpu_seconds_total{member!=""}[1m]))' \
        --data-urlencode "start=$((NOW - 120))" --data-urlencode "end=$NOW" --data-urlencode 'step=15'
    prom query_range.patroni_postgres_running /api/v1/query_range \
        --data-urlencode 'query=patroni_postgres_running' \
        --data-urlencode "start=$((NOW - 60))" --data-urlencode "end=$NOW" --data-urlencode 'step=10'
    prom targets /api/v1/targets --data-urlencode 'state=active'
}

# ---------------------------------------------------------------------------------------------------
# Patroni
# ---------------------------------------------------------------------------------------------------
record_patroni() {
    mkdir -p "$PAT_OUT"
    forget_previous "$PAT_OUT"
    {
        echo "# Real Patroni 4.1.5 REST answers from the Steward lab (scripts/lab.sh), recorded $(date -u +%FT%TZ)."
        echo "# ttl/loop_wait/retry_timeout 20/5/5; members lab-pg-1..3 at 127.0.0.11..13:8008."
        echo "# File names: <endpoint>.<who answered>.<state>.http<status>.json; who = leader, replica, the"
        echo "# stopped/killed member, or the member's name where roles change during a failover."
    } >"$PAT_OUT/INDEX.txt"

    L=$(leader "${MEMBERS[0]}")
    REPLICAS=()
    for m in "${MEMBERS[@]}"; do [[ $m == "$L" ]] || REPLICAS+=("$m"); done
    R1=${REPLICAS[0]} R2=${REPLICAS[1]}
    log "leader $L, replicas $R1 $R2"

    # 1. A stopped member: maintenance mode (pause) so Patroni does not restart postgres, then a fast
    #    shutdown of one replica's postgres. Patroni stays up and reports the stopped postgres.
    log "patroni: stopped member ($R2)"
    "$ROOT/scripts/lab.sh" patronictl pause --wait >/dev/null
    pat config.leader.paused "$L" config "cluster in maintenance mode (patronictl pause)"
    pat cluster.leader.paused "$L" cluster "cluster in maintenance mode, all members running"
    docker exec -u "$(id -u postgres):$(id -g postgres)" "$R2" /usr/lib/postgresql/15/bin/pg_ctl \
        -D /data/pgdata stop -m fast -w >/dev/null
    wait_for 30 "$R2 to report stopped" bash -c "curl -s -m 2 http://${ADDR[$R2]}:8008/patroni | jq -e '.state == \"stopped\"'"
    pat patroni.stopped.paused "$R2" patroni "its postgres stopped, Patroni up, cluster paused"
    pat health.stopped.paused "$R2" health "its postgres stopped"
    pat replica.stopped.paused "$R2" replica "its postgres stopped"
    pat liveness.stopped.paused "$R2" liveness "its postgres stopped"
    pat readiness.stopped.paused "$R2" readiness "its postgres stopped"
    # The leader's view takes up to one loop_wait to show the stopped state.
    sleep 6
    pat cluster.leader.member_stopped "$L" cluster "$R2's postgres stopped, cluster paused"
    pat patroni.leader.member_stopped "$L" patroni "$R2's postgres stopped: one walsender left in replication[]"
    "$ROOT/scripts/lab.sh" patronictl resume --wait >/dev/null
    wait_for 60 "$R2 to run again" bash -c "curl -s -m 2 http://${ADDR[$R2]}:8008/patroni | jq -e '.state == \"running\"'"

    # 2. A gracefully stopped container: Patroni removes its member key on the way out.
    log "patroni: replica container stopped ($R2)"
    docker stop "$R2" >/dev/null
    sleep 6
    pat cluster.leader.replica_container_stopped "$L" cluster "docker stop $R2: its key is deleted at once"
    pat patroni.leader.replica_container_stopped "$L" patroni "docker stop $R2"
    docker start "$R2" >/dev/null
    wait_for 60 "$R2 to stream again" bash -c "curl -s -m 2 http://${ADDR[$L]}:8008/patroni | jq -e '[.replication[]? | select(.application_name == \"$R2\" and .state == \"streaming\")] | length == 1'"

    # 3. A killed replica: its member key stays in /cluster until its ttl (20 s) runs out.
    log "patroni: replica killed ($R2)"
    docker kill "$R2" >/dev/null
    sleep 3
    pat cluster.leader.replica_killed_3s "$L" cluster "3 s after docker kill $R2: still listed with its last state"
    pat patroni.leader.replica_killed_3s "$L" patroni "3 s after docker kill $R2: its walsender is gone"
    pat replica.replica_killed "$R2" replica "docker kill $R2: nothing listens"
    wait_for 40 "$R2's key to expire" bash -c "curl -s -m 2 http://${ADDR[$L]}:8008/cluster | jq -e '[.members[] | select(.name == \"$R2\")] | length == 0'"
    pat cluster.leader.replica_killed_expired "$L" cluster "after the ttl: $R2 is gone from /cluster"
    docker start "$R2" >/dev/null
    wait_for 60 "$R2 to stream again" bash -c "curl -s -m 2 http://${ADDR[$L]}:8008/patroni | jq -e '[.replication[]? | select(.application_name == \"$R2\" and .state == \"streaming\")] | length == 1'"

    # 4. Failover: the leader's container is killed. First every replica must show as streaming in
    #    /cluster too (the leader's replication[] can say streaming a loop_wait before the member's key). Every distinct view of /cluster as seen from R1 is
    #    kept (phase 1, 2, ...), with R1's and R2's /patroni and /primary at the same moment.
    wait_for 30 "all replicas streaming in /cluster" bash -c "curl -s -m 2 http://${ADDR[$L]}:8008/cluster | jq -e '[.members[] | select(.role != \"leader\" and .state == \"streaming\")] | length == ${#REPLICAS[@]}'"
    log "patroni: failover (killing leader $L)"
    docker kill "$L" >/dev/null
    t0=$SECONDS
    phase=0 last=""
    while ((SECONDS - t0 < 60)); do
        body=$(curl -sS -m 2 "http://${ADDR[$R1]}:8008/cluster" 2>/dev/null) || { sleep 0.5; continue; }
        view=$(jq -c '[.members[] | [.name, .role, .state, .timeline]]' <<<"$body")
        if [[ $view != "$last" ]]; then
            phase=$((phase + 1)) last=$view
            note="failover phase $phase, $((SECONDS - t0)) s after docker kill $L (old leader): $view"
            log "$note"
            printf '%s\n' "$body" >"$PAT_OUT/cluster.$R1.failover_phase$phase.http200.json"
            echo "cluster.$R1.failover_phase$phase.http200.json <- GET cluster from $R1  ($note)" >>"$PAT_OUT/INDEX.txt"
            for m in "$R1" "$R2"; do
                pat "patroni.$m.failover_phase$phase" "$m" patroni "failover phase $phase"
                pat "primary.$m.failover_phase$phase" "$m" primary "failover phase $phase"
            done
        fi
        # Done once a new leader runs and the other survivor streams from it on the new timeline.
        new=$(jq -r '.members[] | select(.role == "leader" and .state == "running") | .name' <<<"$body")
        if [[ -n $new && $new != "$L" ]] && jq -e --arg o "$L" '(.members[] | select(.role == "leader") | .timeline) as $tl
                | [.members[] | select(.name != $o and .role != "leader" and .state == "streaming" and .timeline == $tl)]
                | length >= 1' <<<"$body" >/dev/null; then
            break
        fi
        sleep 0.5
    done
    NEW=$(leader "$R1")
    pat history.new_leader "$NEW" history "after failover: timeline history with the switch"
    log "new leader $NEW after $((SECONDS - t0)) s"
    echo "# failover: new leader $NEW running, the other survivor streaming on its timeline, $((SECONDS - t0)) s after the kill" >>"$PAT_OUT/INDEX.txt"

    log "bringing the lab back (scripts/lab.sh up restarts $L, which rejoins as a replica)"
    "$LAB" up >/dev/null
    pat cluster.leader.after_failover "$NEW" cluster "lab healthy again; $L back as a replica on the new timeline"
}

[[ $WHAT == patroni ]] || record_prometheus
[[ $WHAT == prometheus ]] || record_patroni
rm -f "$PAT_OUT/tmp.json" "$PROM_OUT/tmp.json"
log "done ($WHAT)"
