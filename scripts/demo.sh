#!/usr/bin/env bash
# Steward's main job as it stands today, from a fresh Debian 12 machine as root:
#   1. installs what the build needs and builds `steward` (release),
#   2. brings up the lab: a real Patroni 4.1.5 cluster (3 members, etcd, 2 HAProxy, Prometheus) in Docker,
#   3. `steward observe`: what Steward sees in that cluster (roles, states, lag, figures with sources),
#   4. `steward evaluate`: what Steward's policies would have done over real recorded CPU traces, and why,
#      next to the Kubernetes HPA algorithm and a naive threshold rule, with SVG charts,
#   5. `steward run` on the simulated platform: both loops act on a scripted scenario (the load rises,
#      a replica crashes) in simulated time, and say what they do and why,
#   6. says where the output is and how to stop.
# Usage: scripts/demo.sh [output folder, default ./steward-demo]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-steward-demo}"
mkdir -p "$out"

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

packages=(pkg-config libvirt-dev protobuf-compiler)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

say "building steward (release; the first build takes a few minutes)"
cargo build --release --bin steward
steward=target/release/steward

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

say "done"
cat <<EOF2
Output is in $out/: the timelines and summaries (*.txt), the charts (*.svg), what both loops did on
the simulated cluster (run-simulated.txt), and the observation recorded from the live cluster
(observations.jsonl, replayable with: $steward evaluate --jsonl FILE).

The lab is still running. Look around with:   scripts/lab.sh status
Stop it (removes the containers, disks and state):   scripts/lab.sh down
EOF2
