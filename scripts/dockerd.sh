#!/usr/bin/env bash
# Starts a Docker engine in the background when it is not running, waits until it answers, and
# returns. Idempotent: running it again with the engine up does nothing. There is no systemd here
# (ENVIRONMENT.md), so this is how tests and demos get their engine.
#
#   scripts/dockerd.sh          the default engine on unix:///var/run/docker.sock
#   scripts/dockerd.sh second   a second engine ("another host") on unix:///run/steward-docker2.sock,
#                               with its own data and exec roots, no bridge and no iptables rules
#   scripts/dockerd.sh tls      a third engine reached only over TCP with TLS client certificates
#                               (`dockerd --tlsverify`) on tcp://127.0.0.41:2376, as a remote host
#                               serves it; its CA, server and client certificates are made here
#                               (openssl) in /var/lib/steward-docker-tls/certs: ca.pem, cert.pem
#                               and key.pem are the client's
#
# Logs go to /var/log/steward-dockerd[-second].log.
set -euo pipefail

which="${1:-first}"
case "$which" in
  first)
    sock=/var/run/docker.sock
    log=/var/log/steward-dockerd.log
    exec_root=/var/run/docker
    args=()
    ;;
  second)
    sock=/run/steward-docker2.sock
    log=/var/log/steward-dockerd-second.log
    exec_root=/run/steward-docker2
    # Everything a second engine must not share with the first one.
    args=(--data-root /var/lib/steward-docker2 --exec-root /run/steward-docker2
          -H "unix://$sock" --pidfile /run/steward-docker2.pid
          --bridge=none --iptables=false)
    ;;
  tls)
    sock=127.0.0.41:2376
    log=/var/log/steward-dockerd-tls.log
    certs=/var/lib/steward-docker-tls/certs
    if [ ! -s "$certs/key.pem" ]; then
      command -v openssl >/dev/null || { echo "openssl not found: apt-get install -y openssl" >&2; exit 1; }
      mkdir -p "$certs"
      (
        cd "$certs"
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=steward-test-ca \
          -keyout ca-key.pem -out ca.pem 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.41 \
          -keyout server-key.pem -out server.csr 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.41\nextendedKeyUsage=serverAuth\n' > server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 3650 \
          -extfile server.ext -out server-cert.pem 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -subj /CN=steward \
          -keyout key.pem -out client.csr 2>/dev/null
        printf 'extendedKeyUsage=clientAuth\n' > client.ext
        openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 3650 \
          -extfile client.ext -out cert.pem 2>/dev/null
        chmod 600 ./*key.pem
      )
    fi
    exec_root=/run/steward-docker-tls
    args=(--data-root /var/lib/steward-docker-tls --exec-root /run/steward-docker-tls
          -H "tcp://$sock" --pidfile /run/steward-docker-tls.pid
          --tlsverify --tlscacert "$certs/ca.pem" --tlscert "$certs/server-cert.pem"
          --tlskey "$certs/server-key.pem" --bridge=none --iptables=false)
    ;;
  *)
    echo "usage: $0 [first|second|tls]" >&2
    exit 2
    ;;
esac

answers() {
  if [ "$which" = tls ]; then
    docker -H "tcp://$sock" --tlsverify --tlscacert "$certs/ca.pem" --tlscert "$certs/cert.pem" \
      --tlskey "$certs/key.pem" version --format '{{.Server.Version}}' >/dev/null 2>&1
  else
    docker -H "unix://$sock" version --format '{{.Server.Version}}' >/dev/null 2>&1
  fi
}

if answers; then
  echo "dockerd ($which) already answers on $sock"
  exit 0
fi

command -v dockerd >/dev/null || { echo "dockerd not found: apt-get install -y docker.io" >&2; exit 1; }

# An engine that died leaves its containerd's pid file behind, and the kernel may since have
# given that number to another process or thread (a Patroni thread, seen here): dockerd then
# takes it for its containerd ("containerd is still running") and gives up after a timeout.
# Remove the file unless the number is a containerd's.
pidfile=$exec_root/containerd/containerd.pid
if [ -f "$pidfile" ] && [ "$(cat "/proc/$(cat "$pidfile")/comm" 2>/dev/null)" != containerd ]; then
  echo "removing the stale $pidfile (its process is gone)"
  rm -f "$pidfile"
fi

# setsid + nohup: the engine must outlive the shell (and the test process) that started it.
# Other inherited descriptors are closed first: an engine holding, say, the lab lock that
# `flock /tmp/steward-lab.lock scripts/lab.sh up` took would keep that lock for its whole life.
(
    for fd in /proc/$BASHPID/fd/*; do
        fd=${fd##*/}
        if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi
    done
    exec setsid nohup dockerd "${args[@]}" >>"$log" 2>&1 < /dev/null
) &

for _ in $(seq 1 60); do
  if answers; then
    echo "dockerd ($which) answers on $sock"
    exit 0
  fi
  sleep 0.5
done
echo "dockerd ($which) did not answer on $sock within 30 s; see $log" >&2
tail -n 20 "$log" >&2 || true
exit 1
