#!/usr/bin/env bash
# Starts a throwaway single-member etcd for tests and demos, or stops it. Not the lab's etcd
# (127.0.0.2:2379, which Patroni uses): pick another loopback address or port.
#
#   scripts/etcd.sh start [HOST:PORT]   default 127.0.0.5:23790; the peer port is PORT+1.
#                                       Waits until /health answers, then prints the PID.
#   scripts/etcd.sh stop  [HOST:PORT]   stops it and removes its data directory.
#
# State (pid, data, log) lives in /tmp/steward-etcd-HOST-PORT/. Loopback addresses only.
# The etcd binary is Debian's (package etcd-server); it is installed when missing.
set -euo pipefail

cmd="${1:-}"
addr="${2:-127.0.0.5:23790}"
host="${addr%:*}"
port="${addr##*:}"

case "$host" in
  127.*) ;;
  *) echo "etcd.sh: $host is not a 127.0.0.0/8 address" >&2; exit 2 ;;
esac
if ! [[ "$port" =~ ^[0-9]+$ ]] || (( port < 1024 || port > 65534 )); then
  echo "etcd.sh: bad port '$port'" >&2
  exit 2
fi

dir="/tmp/steward-etcd-${host}-${port}"
pidfile="$dir/pid"

running() { [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

case "$cmd" in
  start)
    if running; then
      echo "etcd.sh: already running at $addr (pid $(cat "$pidfile"))" >&2
      cat "$pidfile"
      exit 0
    fi
    if ! command -v etcd >/dev/null; then
      echo "etcd.sh: installing etcd-server" >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server >&2
    fi
    rm -rf "$dir"
    mkdir -p "$dir/data"
    peer="http://${host}:$((port + 1))"
    # setsid: the member outlives this shell; its own session so a test's ^C does not reach it.
    setsid etcd --name steward-test --data-dir "$dir/data" \
      --listen-client-urls "http://${addr}" --advertise-client-urls "http://${addr}" \
      --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
      --initial-cluster "steward-test=$peer" --initial-cluster-state new \
      >"$dir/log" 2>&1 < /dev/null &
    echo $! > "$pidfile"
    for _ in $(seq 1 100); do
      if curl -fsS --max-time 1 "http://${addr}/health" 2>/dev/null | grep -q '"health":"true"'; then
        cat "$pidfile"
        exit 0
      fi
      if ! running; then
        echo "etcd.sh: etcd exited; log:" >&2
        tail -n 20 "$dir/log" >&2
        exit 1
      fi
      sleep 0.1
    done
    echo "etcd.sh: etcd at $addr not healthy after 10 s; log:" >&2
    tail -n 20 "$dir/log" >&2
    kill "$(cat "$pidfile")" 2>/dev/null || true
    exit 1
    ;;
  stop)
    if running; then
      pid="$(cat "$pidfile")"
      kill "$pid"
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
    ;;
  *)
    echo "usage: $0 start|stop [HOST:PORT]" >&2
    exit 2
    ;;
esac
