#!/usr/bin/env bash
# Steward's main job as it stands today, from a fresh Debian 12 machine as root:
#   1. installs what the build needs and builds `steward` (release),
#   2. brings up the lab: a real Patroni 4.1.5 cluster (3 members, etcd, 2 HAProxy, Prometheus) in Docker,
#   3. `steward observe`: what Steward sees in that cluster (roles, states, lag, figures with sources),
#   4. `steward evaluate`: what Steward's policies would have done over real recorded CPU traces, and why,
#      next to the Kubernetes HPA algorithm and a naive threshold rule, with SVG charts,
#   5. `steward run` on the simulated platform: both loops act on a scripted scenario (the load rises,
#      a replica crashes) in simulated time, and say what they do and why,
#   6. `steward run` on the lab's real cluster under a read load on the replicas: it adds a replica,
#      both HAProxy route to it, and it is removed when the load stops (never below 3 members),
#   7. `steward run` on the lab's real cluster: a replica is killed, and Steward fences it, creates a
#      replacement that streams, and removes the old one, saying why at each step,
#   8. says where the output is and how to stop.
# Usage: scripts/demo.sh [--build-only] [output folder, default ./steward-demo]
#   --build-only  install everything and build, run nothing (scripts/fresh-check.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
build_only=0
if [ "${1:-}" = --build-only ]; then build_only=1; shift; fi
out="${1:-steward-demo}"

# Bold headings on a terminal, plain text into a file or a pipe.
if [ -t 1 ]; then
    say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
else
    say() { printf '\n==> %s\n' "$*"; }
fi

# shellcheck source=lib/install.sh
source scripts/lib/install.sh
require_cargo
install_debian_packages "${BUILD_PACKAGES[@]}"
# What the lab runs on (Debian packages, Patroni), so that nothing is installed halfway through.
scripts/lab.sh install

say "building steward (release; the first build takes a few minutes)"
cargo build --release --bin steward
steward=target/release/steward
if [ "$build_only" = 1 ]; then
    say "built $steward (--build-only: nothing run)"
    exit 0
fi

mkdir -p "$out"
say "bringing up the lab: a real Patroni cluster in Docker on 127.0.0.x"
scripts/lab.sh up
eval "$(scripts/lab.sh env)"

say "what Steward sees: steward observe --patroni ${PATRONI_URLS%%,*} --prometheus $PROMETHEUS_URL"
"$steward" observe --patroni "${PATRONI_URLS%%,*}" --prometheus "$PROMETHEUS_URL" \
    --record "$out/observations.jsonl"

for trace in examples/traces/*.csv; do
    name=$(basename "$trace" .csv)
    say "what Steward would have done over $trace (a 2 vCPU database), next to the HPA and a naive rule"
    "$steward" evaluate --csv "$trace" --role database --resource cpu --size 2 \
        --baseline all --chart "$out/$name.svg" | tee "$out/$name.txt"
done

say "both loops at work: steward run on the simulated platform (load rises at 15 s, pg-3 crashes at 45 s)"
"$steward" run --config examples/simulated.toml --for 15m | tee "$out/run-simulated.txt"

say "read load on the real cluster's replicas: Steward adds a replica, both HAProxy route to it, and it goes when the load does"
# tests/data/e2e/scaling-replicas.toml: the lab's config with short replica-count windows (20 s up,
# 40 s down) and [balancers], so this takes minutes, not the default hour.
mkdir -p "$out/state-load"
sed "s|^state_dir = .*|state_dir = \"$(cd "$out" && pwd)/state-load\"|" tests/data/e2e/scaling-replicas.toml > "$out/load-run.toml"
"$steward" run --config "$out/load-run.toml" --for 8m > "$out/run-load.txt" 2> "$out/run-load.log" &
steward_pid=$!
sleep 10
echo "six sessions of CPU-heavy reads on the replica port 127.0.0.21:5433"
load_pids=()
for _ in 1 2 3 4 5 6; do
    ( while true; do
        psql -X -q "host=127.0.0.21 port=5433 user=postgres dbname=postgres connect_timeout=5" \
            -c "select count(*) from (select generate_series(1, 100000000)) s" >/dev/null 2>&1 || sleep 1
      done ) &
    load_pids+=($!)
done
for _ in $(seq 1 60); do
    grep -qE "finished .*scale out: add .*: completed" "$out/run-load.txt" && break
    sleep 5
done
sleep 10
echo "HAProxy's replica backend now (name, operational state 2 = up, admin state 0 = ready):"
python3 - <<'PY'
import socket
s = socket.create_connection(("127.0.0.21", 9999), timeout=5)
s.sendall(b"show servers state replicas\n")
data = b""
while chunk := s.recv(65536):
    data += chunk
for line in data.decode().splitlines()[2:]:
    f = line.split()
    if len(f) > 6:
        print(f"  {f[3]:<14} {f[4]:<12} op={f[5]} admin={f[6]}")
PY
echo "stopping the load"
kill "${load_pids[@]}" 2>/dev/null || true
pkill -f "generate_series\(1, 100000000\)" 2>/dev/null || true
for _ in $(seq 1 50); do
    grep -qE "finished .*scale in: remove .*: completed" "$out/run-load.txt" && break
    sleep 5
done
kill -TERM "$steward_pid" 2>/dev/null || true
wait "$steward_pid" || true
echo "what Steward did and why (also in $out/run-load.txt; its log in $out/run-load.log):"
grep -E " (scale|repair) +(propose|run|result|finished|refused)" "$out/run-load.txt" || echo "(nothing: see $out/run-load.log)"

say "Steward on the real cluster: steward run --config examples/lab.toml, then a replica is killed"
# The lab's config with a fresh state folder, and a shorter grace window than the default 60 s so
# the demo does not wait long (a member must look bad for the whole window before it is repaired).
mkdir -p "$out/state"
sed "s|^state_dir = .*|state_dir = \"$(cd "$out" && pwd)/state\"|" examples/lab.toml > "$out/lab-run.toml"
cat >> "$out/lab-run.toml" <<'EOF2'

[repair]
grace_window = "15s"

[run]
tick = "5s"
EOF2
"$steward" run --config "$out/lab-run.toml" --for 6m > "$out/run-lab.txt" 2> "$out/run-lab.log" &
steward_pid=$!
sleep 15
leader=$("$steward" observe --patroni "$PATRONI_URLS" --format json \
    | python3 -c 'import json,sys; print(next(m["name"] for m in json.load(sys.stdin)["members"] if m["patroni_role"] == "leader"))')
victim=$(for m in lab-pg-1 lab-pg-2 lab-pg-3; do [ "$m" != "$leader" ] && echo "$m" && break; done)
echo "the leader is $leader; killing the replica $victim (docker kill)"
docker kill "$victim" >/dev/null
for _ in $(seq 1 60); do
    grep -q "repair result .* remove $victim.*: ok" "$out/run-lab.txt" && break
    sleep 5
done
kill -TERM "$steward_pid" 2>/dev/null || true
wait "$steward_pid" || true
echo "what Steward did and why (also in $out/run-lab.txt; its log in $out/run-lab.log):"
grep -E "repair|scale" "$out/run-lab.txt" || echo "(nothing: see $out/run-lab.log)"
"$steward" observe --patroni "${PATRONI_URLS}"

say "done"
cat <<EOF2
Output is in $out/: the timelines and summaries (*.txt), the charts (*.svg), what both loops did on
the simulated cluster (run-simulated.txt), and the observation recorded from the live cluster
(observations.jsonl, replayable with: $steward evaluate --jsonl FILE).

The lab is still running, with the member Steward created. Look around with:   scripts/lab.sh status
Stop it (removes every lab container, the members Steward created too, their disks and state):
    scripts/lab.sh down
EOF2
