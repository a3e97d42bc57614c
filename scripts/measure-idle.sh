#!/usr/bin/env bash
# measure-idle.sh: Steward's idle footprint next to one Patroni's, measured the same way.
#
# What it does: runs `steward run --config examples/lab.toml --dry-run` (the release binary if one
# is built, else the debug one; it says which) against the idle lab (scripts/lab.sh up), lets it
# warm up, then over a window (60 s by default) samples, for steward and for the Patroni process
# of lab-pg-1: VmRSS and VmHWM (/proc/PID/status) and CPU as % of one core
# ((utime+stime) delta from /proc/PID/stat, in clock ticks, over the wall-clock window).
# What it is not: a load test (the lab is idle), nor a benchmark of decisions (benches/).
#
# Usage: scripts/measure-idle.sh [WINDOW_SECONDS] [CONFIG]      (root: it reads another
# container's /proc; the lab must be up). A dry run executes nothing and journals nothing.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WINDOW=${1:-60}
CONFIG=${2:-$ROOT/examples/lab.toml}
WARMUP=5
TICKS=$(getconf CLK_TCK)

die() { printf 'measure-idle: error: %s\n' "$*" >&2; exit 1; }

if [[ -x $ROOT/target/release/steward ]]; then
    BIN=$ROOT/target/release/steward BUILD=release
elif [[ -x $ROOT/target/debug/steward ]]; then
    BIN=$ROOT/target/debug/steward BUILD=debug
else
    die "no steward binary: cargo build (or cargo build --release) first"
fi

# Patroni of lab-pg-1: the python process whose command line names patroni. Running as the
# container's PID 1, Patroni forks: the parent only reaps children, the child is the Patroni that
# works (HA loop, REST API). Both are reported; the child is the one to compare.
patroni_pids() {
    docker top lab-pg-1 -eo pid,args 2>/dev/null \
        | awk 'NR > 1 && $2 ~ /python/ && /bin\/patroni / { print $1 }'
}

# utime+stime of PID, in clock ticks (fields 14 and 15; the command name, field 2, may hold
# spaces, so count from after its closing parenthesis).
cpu_ticks() {
    local rest
    rest=$(sed 's/^.*) //' "/proc/$1/stat")
    # After "pid (comm) " the fields start at 3 (state): utime is the 12th, stime the 13th.
    awk '{ print $12 + $13 }' <<<"$rest"
}

kib() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status"; }

mapfile -t PATRONI < <(patroni_pids)
((${#PATRONI[@]})) || die "no Patroni process found in lab-pg-1 (is the lab up? scripts/lab.sh up)"
# The worker is the Patroni whose parent is a Patroni too.
role() {
    local ppid p
    ppid=$(awk '$1 == "PPid:" { print $2 }' "/proc/$1/status")
    for p in "${PATRONI[@]}"; do [[ $p == "$ppid" ]] && { echo worker; return; }; done
    echo "PID 1, reaper"
}

LOG=$(mktemp)
"$BIN" run --config "$CONFIG" --dry-run --quiet >"$LOG" 2>&1 &
STEWARD=$!
# Stop the one steward this script started, whatever happens.
trap 'kill -TERM "$STEWARD" 2>/dev/null || true; wait "$STEWARD" 2>/dev/null || true; rm -f "$LOG"' EXIT

sleep "$WARMUP"
kill -0 "$STEWARD" 2>/dev/null || { cat "$LOG" >&2; die "steward exited during warm-up"; }

declare -A P0 P1
s0=$(cpu_ticks "$STEWARD") t0=$(date +%s.%N)
for p in "${PATRONI[@]}"; do P0[$p]=$(cpu_ticks "$p"); done
sleep "$WINDOW"
kill -0 "$STEWARD" 2>/dev/null || { cat "$LOG" >&2; die "steward exited during the window"; }
s1=$(cpu_ticks "$STEWARD") t1=$(date +%s.%N)
for p in "${PATRONI[@]}"; do P1[$p]=$(cpu_ticks "$p"); done

report() {
    local what=$1 pid=$2 c0=$3 c1=$4
    awk -v w="$what" -v pid="$pid" -v rss="$(kib "$pid" VmRSS)" -v hwm="$(kib "$pid" VmHWM)" \
        -v c="$((c1 - c0))" -v hz="$TICKS" -v t0="$t0" -v t1="$t1" 'BEGIN {
        printf "%-30s pid %-8s VmRSS %7.1f MiB  VmHWM %7.1f MiB  CPU %6.2f %% of a core (%d ticks in %.1f s)\n",
            w, pid, rss / 1024, hwm / 1024, 100 * c / hz / (t1 - t0), c, t1 - t0 }'
}

echo "steward binary: $BIN ($BUILD build, $(date -r "$BIN" -u '+%F %T UTC'))"
echo "config: $CONFIG (--dry-run); warm-up ${WARMUP} s, window ${WINDOW} s; CLK_TCK $TICKS"
report "steward run --dry-run ($BUILD)" "$STEWARD" "$s0" "$s1"
for p in "${PATRONI[@]}"; do
    report "patroni lab-pg-1 ($(role "$p"))" "$p" "${P0[$p]}" "${P1[$p]}"
done
