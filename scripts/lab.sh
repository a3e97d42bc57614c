#!/usr/bin/env bash
# The lab: a real Patroni 4.1.5 cluster in Docker on loopback addresses, owned by the project.
#
#   scripts/lab.sh up       install what is missing, start everything, wait until healthy, print a summary
#   scripts/lab.sh install  install what is missing (Debian packages, Patroni), start nothing
#   scripts/lab.sh down     remove every lab container, unmount and detach the member disks, remove state
#   scripts/lab.sh status   containers, Patroni's view of the cluster, and what is not healthy
#   scripts/lab.sh env      shell exports for tests and demos: eval "$(scripts/lab.sh env)"
#   scripts/lab.sh footprint  memory of each lab container (RSS + shared memory, PSS)
#   scripts/lab.sh record [all|prometheus|patroni]  record real responses into tests/data/fixtures/
#   scripts/lab.sh patronictl ARGS...  patronictl with the lab's configuration (e.g. `list`)
#
# What runs (all containers from an empty image with the host's /usr /lib /lib64 /bin /sbin /etc /opt
# bind-mounted read-only, host networking, labelled io.steward.lab=1; see lab/README.md):
#   etcd           127.0.0.2:2379
#   lab-pg-1..3    127.0.0.11..13: postgres :5432, Patroni REST :8008, postgres_exporter :9187
#                  (Steward-owned from birth: labelled as Steward's Docker platform labels its members,
#                  made exactly as examples/lab.toml's template makes new ones)
#   lab-haproxy-1,2 127.0.0.21..22: primary :5432, replicas :5433, Runtime API :9999, stats :8404
#   Prometheus     127.0.0.3:9090
# Passwords are generated into /var/lib/steward-lab/secrets (root only) and never printed.
#
# Idempotent: `up` on a running lab checks it and returns; a container whose command or configuration
# changed is recreated (member data lives on the member's disk, not in the container).
# Environment: LAB_TIMEOUT (seconds to wait for health, default 120), LAB_DISK_SIZE (each member's
# disk, default 512M; a larger value grows existing disks online, a smaller one never shrinks them).
set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true # bash 5.2: '&' in ${x//a/b} would mean the match

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LAB_DIR="$ROOT/lab"
STATE=/var/lib/steward-lab
SECRETS="$STATE/secrets"
VENV=/opt/steward-lab/venv
PATRONI_VERSION=4.1.5
# A second Patroni for the adoption test's cluster "made by another tool" (tests/cli/e2e_adopt.rs):
# the 3.x line users still run (Debian 12 packages 3.0.2), which answers differently (`master`,
# no `streaming`). Members choose it with STEWARD_LAB_PATRONI (lab/patroni-member.sh).
VENV_3=/opt/steward-lab/venv-3.0.2
PATRONI_3_VERSION=3.0.2
IMAGE=steward-empty:1
LABEL=io.steward.lab
TIMEOUT="${LAB_TIMEOUT:-120}"

# Steward's view of the database members (adapters/src/platform/docker.rs and examples/lab.toml):
# the cluster label, loop-xfs volumes `$DISKS/<member>.img` mounted on `$DISKS/<member>`, each
# member's /tmp under `$TMPS/<member>`, the volume at DATA_PATH inside, and the same size.
CLUSTER=steward-lab
DISKS=$STATE/disks
TMPS=$STATE/tmp
PATRONI_DIR=$STATE/patroni
PATRONI_SECRETS=$STATE/patroni-secrets
DATA_PATH=/data
MEMBER_CPUS=2
MEMBER_MEMORY=1073741824
OOM_SCORE_ADJ=900
# The pool of member addresses in examples/lab.toml: lab-pg-1..3 hold the first three.
POOL_ADDRS=(127.0.0.{11..19})
# A second Docker engine (scripts/dockerd.sh second): "another host", where Steward's platform
# places a new database member (it puts at most one member of a role on a host).
SECOND_SOCK=/run/steward-docker2.sock

ETCD_ADDR=127.0.0.2
PROM_ADDR=127.0.0.3
MEMBERS=(lab-pg-1 lab-pg-2 lab-pg-3)
declare -A MEMBER_ADDR=([lab-pg-1]=127.0.0.11 [lab-pg-2]=127.0.0.12 [lab-pg-3]=127.0.0.13)
BALANCERS=(lab-haproxy-1 lab-haproxy-2)
declare -A BALANCER_ADDR=([lab-haproxy-1]=127.0.0.21 [lab-haproxy-2]=127.0.0.22)
# Each member's disk: created at this size, and grown online to it when smaller (a bigger database).
DISK_SIZE="${LAB_DISK_SIZE:-512M}"
MONITOR_USER=steward_monitor

# Debian packages the lab runs on (jq and curl: this script's own tools; ca-certificates: pip's
# download of Patroni over HTTPS).
PACKAGES=(docker.io postgresql-15 etcd-server haproxy prometheus prometheus-postgres-exporter
          xfsprogs python3-venv jq curl util-linux ca-certificates)

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'lab: error: %s\n' "$*" >&2; exit 1; }

need_root() { [[ $(id -u) -eq 0 ]] || die "must run as root (it installs packages, mounts disks, runs docker)"; }

# ---------------------------------------------------------------------------------------------------
# 1. Installation
# ---------------------------------------------------------------------------------------------------

install_packages() {
    # shellcheck source=lib/install.sh
    source "$ROOT/scripts/lib/install.sh"
    install_debian_packages "${PACKAGES[@]}"
}

install_patroni() {
    install_patroni_into "$VENV" "$PATRONI_VERSION"
    install_patroni_into "$VENV_3" "$PATRONI_3_VERSION"
}

# install_patroni_into VENV VERSION: Patroni VERSION with etcd3 support in its own venv, unless there.
install_patroni_into() {
    local venv=$1 version=$2
    # Debian's /usr/bin/python3, not whatever `python3` is on PATH (pyenv's here): the containers see
    # the host's /usr and /opt only, so the venv must point at an interpreter under /usr.
    if [[ -x $venv/bin/patroni ]] && [[ $("$venv/bin/patroni" --version 2>/dev/null) == "patroni $version" ]] \
        && "$venv/bin/python" -c 'import psycopg2, etcd' 2>/dev/null; then
        return
    fi
    log "installing Patroni $version into $venv"
    mkdir -p "$(dirname "$venv")"
    [[ -x $venv/bin/python ]] || /usr/bin/python3 -m venv --system-site-packages "$venv"
    local extra=()
    # Debian's python3-psycopg2 is used when installed; otherwise the binary wheel.
    /usr/bin/python3 -c 'import psycopg2' 2>/dev/null || extra+=(psycopg2-binary)
    "$venv/bin/pip" install -q "patroni[etcd3]==$version" "${extra[@]}" \
        || die "pip install patroni[etcd3]==$version failed"
    [[ $("$venv/bin/patroni" --version) == "patroni $version" ]] || die "$venv/bin/patroni is not $version"
}

start_docker() {
    if [[ -x $ROOT/scripts/dockerd.sh ]]; then
        "$ROOT/scripts/dockerd.sh" >/dev/null
    elif ! docker version >/dev/null 2>&1; then
        # Same as scripts/dockerd.sh: no systemd, so the engine runs detached in the background.
        log "starting dockerd"
        setsid nohup dockerd >>/var/log/steward-dockerd.log 2>&1 </dev/null &
        for _ in $(seq 1 60); do docker version >/dev/null 2>&1 && return; sleep 0.5; done
        die "dockerd did not answer within 30 s; see /var/log/steward-dockerd.log"
    fi
}

ensure_image() {
    docker image inspect "$IMAGE" >/dev/null 2>&1 && return
    log "importing the empty image $IMAGE"
    # An empty tar: the containers run the host's programs through bind mounts.
    tar -cf - -T /dev/null | docker import - "$IMAGE" >/dev/null
}

# ---------------------------------------------------------------------------------------------------
# 2. State: secrets, disks, configuration
# ---------------------------------------------------------------------------------------------------

# Reads one value of the secrets file into stdout (never echoed to the terminal by callers).
secret() { sed -n "s/^$1=//p" "$SECRETS/passwords.env"; }

ensure_secrets() {
    install -d -m 755 "$STATE"
    install -d -m 700 -o root -g root "$SECRETS"
    if [[ ! -s $SECRETS/passwords.env ]]; then
        log "generating passwords into $SECRETS/passwords.env"
        gen() { head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24; }
        (
            umask 077
            {
                echo "# Steward lab credentials; root only. Users: postgres (superuser), replicator, $MONITOR_USER."
                echo "SUPERUSER_PASSWORD=$(gen)"
                echo "REPLICATION_PASSWORD=$(gen)"
                echo "MONITOR_PASSWORD=$(gen)"
            } >"$SECRETS/passwords.env.new"
            mv "$SECRETS/passwords.env.new" "$SECRETS/passwords.env"
        )
    fi
    # A libpq password file for clients on the host (PGPASSFILE): every member and balancer address.
    local su a b
    su=$(secret SUPERUSER_PASSWORD)
    (
        umask 077
        # The whole pool: members Steward creates (lab-pg-4 at 127.0.0.14, ...) are reachable too.
        for a in "${POOL_ADDRS[@]}"; do echo "$a:*:*:postgres:$su"; done
        for b in "${BALANCERS[@]}"; do echo "${BALANCER_ADDR[$b]}:*:*:postgres:$su"; done
    ) >"$SECRETS/pgpass"
    chmod 600 "$SECRETS/pgpass"
}

# One loop-mounted XFS image per member: it can grow online (truncate, losetup -c, xfs_growfs). The
# layout is LoopXfsVolumes' (adapters/src/platform/volume.rs, root $DISKS): image $DISKS/<m>.img,
# mounted with `-o loop` on $DISKS/<m>, so Steward finds, measures and grows a lab member's disk
# as one it made. The mount's root stays root's: the member's entrypoint gives it to postgres, as
# it must for a volume the platform made (lab/patroni-member.sh).
ensure_disk() {
    local m=$1 img="$DISKS/$1.img" mnt="$DISKS/$1" dev
    install -d -m 755 "$DISKS"
    # mkdir, not install -d: on a mounted volume that would reset the mode the member's entrypoint set.
    mkdir -p "$mnt"
    if [[ ! -f $img ]]; then
        log "$m: creating a $DISK_SIZE XFS image"
        # Formatted under a temporary name, so an interrupted run never leaves an unformatted image.
        truncate -s "$DISK_SIZE" "$img.new"
        mkfs.xfs -q "$img.new"
        chmod 600 "$img.new" # the database's bytes, password hashes included
        mv "$img.new" "$img"
    fi
    if ! mountpoint -q "$mnt"; then
        dev=$(losetup -j "$img" | cut -d: -f1 | head -n1)
        if [[ -n $dev ]]; then mount -t xfs "$dev" "$mnt"; else mount -o loop "$img" "$mnt"; fi
    fi
    # Grown online the way Steward's loop-xfs volumes grow: image, loop device, file system.
    local want
    want=$(numfmt --from=iec "$DISK_SIZE")
    if (($(stat -c %s "$img") < want)); then
        log "$m: growing its disk to $DISK_SIZE"
        truncate -s "$want" "$img"
        dev=$(losetup -j "$img" | cut -d: -f1 | head -n1)
        losetup -c "$dev"
        xfs_growfs "$mnt" >/dev/null
    fi
}

# Fills @KEY@ placeholders of a template: render TEMPLATE KEY VALUE [KEY VALUE ...]
render() {
    local s
    s=$(<"$1")
    shift
    while (($#)); do
        s=${s//"@$1@"/$2}
        shift 2
    done
    printf '%s\n' "$s"
}

# Writes a file only when its content changed, with the given owner and mode.
write_file() {
    local path=$1 owner=$2 mode=$3 content
    content=$(cat)
    if [[ ! -f $path ]] || [[ $(<"$path") != "$content" ]]; then
        (umask 077 && printf '%s\n' "$content" >"$path.new")
        chown "$owner" "$path.new"
        chmod "$mode" "$path.new"
        mv "$path.new" "$path"
    fi
}

render_configs() {
    local m b addr servers_p servers_r
    # What every database member runs (lab/patroni-member.sh) and reads: one configuration without
    # secrets, and the passwords in a root-only file the entrypoint reads before dropping to postgres.
    install -d -m 755 "$PATRONI_DIR" "$TMPS"
    install -d -m 700 -o root -g root "$PATRONI_SECRETS"
    render "$LAB_DIR/patroni.yml.tmpl" ETCD_ADDR "$ETCD_ADDR" | write_file "$PATRONI_DIR/patroni.yml" root:root 644
    write_file "$PATRONI_DIR/member.sh" root:root 755 <"$LAB_DIR/patroni-member.sh"
    printf 'PATRONI_SUPERUSER_PASSWORD=%s\nPATRONI_REPLICATION_PASSWORD=%s\n' \
        "$(secret SUPERUSER_PASSWORD)" "$(secret REPLICATION_PASSWORD)" \
        | write_file "$PATRONI_SECRETS/patroni.env" root:root 600
    for m in "${MEMBERS[@]}"; do
        # Mode 1777, as the platform makes it (a tmpfs /tmp loses its mode: ENVIRONMENT.md).
        install -d -m 1777 "$TMPS/$m"
    done

    servers_p="" servers_r=""
    for m in "${MEMBERS[@]}"; do
        addr=${MEMBER_ADDR[$m]}
        servers_p+="    server $m $addr:5432 check port 8008"$'\n'
        servers_r+="    server $m $addr:5432 check port 8008"$'\n'
    done
    for b in "${BALANCERS[@]}"; do
        install -d -m 750 -o haproxy -g haproxy "$STATE/$b"
        render "$LAB_DIR/haproxy.cfg.tmpl" ADDR "${BALANCER_ADDR[$b]}" STATE_DIR "$STATE/$b" \
            PRIMARY_SERVERS "${servers_p%$'\n'}" REPLICA_SERVERS "${servers_r%$'\n'}" \
            | write_file "$STATE/$b/haproxy.cfg" haproxy:haproxy 640
    done

    install -d -m 750 -o prometheus -g prometheus "$STATE/exporter"
    write_file "$STATE/exporter/queries.yaml" prometheus:prometheus 640 <"$LAB_DIR/exporter-queries.yaml"
    secret MONITOR_PASSWORD | write_file "$STATE/exporter/monitor.pass" prometheus:prometheus 400

    install -d -m 750 -o prometheus -g prometheus "$STATE/prometheus" "$STATE/prometheus/data" "$STATE/prometheus/targets"
    render "$LAB_DIR/prometheus.yml.tmpl" ADDR "$PROM_ADDR" STATE_DIR "$STATE/prometheus" \
        | write_file "$STATE/prometheus/prometheus.yml" prometheus:prometheus 640
    local pat="" pg="" ha=""
    for m in "${MEMBERS[@]}"; do
        addr=${MEMBER_ADDR[$m]}
        pat+="${pat:+,}{\"targets\":[\"$addr:8008\"],\"labels\":{\"member\":\"$m\"}}"
        pg+="${pg:+,}{\"targets\":[\"$addr:9187\"],\"labels\":{\"member\":\"$m\"}}"
    done
    for b in "${BALANCERS[@]}"; do
        ha+="${ha:+,}{\"targets\":[\"${BALANCER_ADDR[$b]}:8404\"],\"labels\":{\"balancer\":\"$b\"}}"
    done
    echo "[$pat]" | write_file "$STATE/prometheus/targets/patroni.json" prometheus:prometheus 644
    echo "[$pg]" | write_file "$STATE/prometheus/targets/postgres.json" prometheus:prometheus 644
    echo "[$ha]" | write_file "$STATE/prometheus/targets/haproxy.json" prometheus:prometheus 644

    install -d -m 700 -o etcd -g etcd "$STATE/etcd"
}

# ---------------------------------------------------------------------------------------------------
# 3. Containers
# ---------------------------------------------------------------------------------------------------

# The host's programs, read-only; the empty image brings nothing of its own.
HOST_MOUNTS=(-v /usr:/usr:ro -v /lib:/lib:ro -v /lib64:/lib64:ro -v /bin:/bin:ro -v /sbin:/sbin:ro
             -v /etc:/etc:ro -v /opt:/opt:ro)

uidgid() { echo "$(id -u "$1"):$(id -g "$1")"; }

# ensure_container NAME SPEC_EXTRA DOCKER_RUN_ARGS... -- IMAGE_COMMAND...
# Running with the same spec: nothing to do. Stopped with the same spec: started. Different spec (its
# arguments or SPEC_EXTRA, e.g. a config file's hash): removed and created again.
ensure_container() {
    local name=$1 spec_extra=$2 spec cur
    shift 2
    spec=$( { printf '%s\0' "$@"; printf '%s' "$spec_extra"; } | sha256sum | cut -c1-16)
    cur=$(docker inspect -f "{{index .Config.Labels \"$LABEL.spec\"}} {{.State.Running}}" "$name" 2>/dev/null || true)
    if [[ -n $cur ]]; then
        if [[ ${cur% *} == "$spec" ]]; then
            [[ ${cur#* } == true ]] || { log "starting $name"; docker start "$name" >/dev/null; }
            return
        fi
        log "recreating $name (its configuration changed)"
        docker rm -f "$name" >/dev/null
    else
        log "creating $name"
    fi
    local args=() cmd=()
    while (($#)) && [[ $1 != -- ]]; do args+=("$1"); shift; done
    shift
    cmd=("$@")
    docker run -d --name "$name" --label "$LABEL=1" --label "$LABEL.spec=$spec" \
        --network host "${args[@]}" "$IMAGE" "${cmd[@]}" >/dev/null \
        || die "docker run $name failed"
}

# ensure_service NAME SPEC_EXTRA DOCKER_RUN_ARGS... -- IMAGE_COMMAND...: a lab service (not a database
# member): the host's programs, a C.UTF-8 locale, rotated logs.
ensure_service() {
    local name=$1 spec_extra=$2
    shift 2
    ensure_container "$name" "$spec_extra" --log-opt max-size=10m --log-opt max-file=2 \
        "${HOST_MOUNTS[@]}" -e LANG=C.UTF-8 "$@"
}

filehash() { sha256sum "$@" | cut -c1-16 | tr '\n' ' '; }

start_etcd() {
    ensure_service lab-etcd "" --user "$(uidgid etcd)" -v "$STATE/etcd:$STATE/etcd" -- \
        /usr/bin/etcd --name lab-etcd --data-dir "$STATE/etcd/data" \
        --listen-client-urls "http://$ETCD_ADDR:2379" --advertise-client-urls "http://$ETCD_ADDR:2379" \
        --listen-peer-urls "http://$ETCD_ADDR:2380" --initial-advertise-peer-urls "http://$ETCD_ADDR:2380" \
        --initial-cluster "lab-etcd=http://$ETCD_ADDR:2380" --initial-cluster-state new \
        --listen-metrics-urls "http://$ETCD_ADDR:2381"
}

# The database members, made exactly as Steward's Docker platform makes a member from the template
# in examples/lab.toml (DockerPlatform::create): the same labels (its own plus io.steward.lab), image,
# user 0:0, entrypoint, environment with the platform's placeholders filled in and the variables it
# adds (STEWARD_*, PG_OOM_ADJUST_*), bind mounts in the same order (template mounts, data volume,
# /tmp), CPU and memory limits with swap equal to memory, restart policy `no`. Any change here
# belongs in examples/lab.toml too; adapters/tests/it/lab_docker.rs compares the two.
member_run_args() {
    local m=$1 addr=$2
    printf '%s\n' \
        --label "io.steward.cluster=$CLUSTER" --label io.steward.role=database \
        --label "io.steward.member=$m" --label "io.steward.address=$addr" \
        --user 0:0 --cpus "$MEMBER_CPUS" --memory "$MEMBER_MEMORY" --memory-swap "$MEMBER_MEMORY" \
        --restart no \
        -v /usr:/usr:ro -v /lib:/lib:ro -v /lib64:/lib64:ro -v /bin:/bin:ro -v /sbin:/sbin:ro \
        -v /etc:/etc:ro -v /opt:/opt:ro -v "$PATRONI_DIR:$PATRONI_DIR:ro" \
        -v "$PATRONI_SECRETS:$PATRONI_SECRETS:ro" \
        -v "$DISKS/$m:$DATA_PATH:rw" -v "$TMPS/$m:/tmp:rw" \
        -e HOME=/tmp -e LANG=C.UTF-8 \
        -e "PATRONI_SCOPE=$CLUSTER" -e "PATRONI_NAME=$m" \
        -e "PATRONI_RESTAPI_LISTEN=$addr:8008" -e "PATRONI_RESTAPI_CONNECT_ADDRESS=$addr:8008" \
        -e "PATRONI_POSTGRESQL_LISTEN=$addr:5432" -e "PATRONI_POSTGRESQL_CONNECT_ADDRESS=$addr:5432" \
        -e "PATRONI_POSTGRESQL_DATA_DIR=$DATA_PATH/pgdata" \
        -e "STEWARD_CLUSTER=$CLUSTER" -e "STEWARD_MEMBER=$m" -e "STEWARD_ADDRESS=$addr" \
        -e PG_OOM_ADJUST_FILE=/proc/self/oom_score_adj -e "PG_OOM_ADJUST_VALUE=$OOM_SCORE_ADJ" \
        -e "STEWARD_PG_OOM_SCORE_ADJ=$OOM_SCORE_ADJ"
}

start_members() {
    local m addr args=()
    for m in "${MEMBERS[@]}"; do
        addr=${MEMBER_ADDR[$m]}
        # Steward's fence renames a container to `<name>.fenced` (docker.rs FENCED_SUFFIX). `up`
        # brings the lab back to its three members: the fenced container goes, its data stays on
        # the member's disk, and the member is created again below.
        if docker inspect "$m.fenced" >/dev/null 2>&1; then
            log "removing $m.fenced (fenced by Steward)"
            docker rm -f "$m.fenced" >/dev/null
        fi
        # PG_OOM_ADJUST_*: the postmaster sets its children's oom_score_adj to 900, so under a tight
        # memory limit the kernel kills a backend (postgres recovers) instead of Patroni, whose large
        # anonymous RSS otherwise makes it the victim (ENVIRONMENT.md). Patroni passes its environment
        # (less PATRONI_*) on to postgres.
        mapfile -t args < <(member_run_args "$m" "$addr")
        ensure_container "$m" "$(filehash "$PATRONI_DIR/patroni.yml" "$PATRONI_DIR/member.sh")" \
            "${args[@]}" -- "$PATRONI_DIR/member.sh"
    done
}

# Steward's second "host": its platform puts one database member per engine, so a fourth member
# (or a replacement while the old one is still fenced) goes to this engine.
start_second_engine() {
    "$ROOT/scripts/dockerd.sh" second >/dev/null || die "the second Docker engine did not start"
    docker -H "unix://$SECOND_SOCK" image inspect "$IMAGE" >/dev/null 2>&1 \
        || tar -cf - -T /dev/null | docker -H "unix://$SECOND_SOCK" import - "$IMAGE" >/dev/null
}

start_exporters() {
    local m addr
    for m in "${MEMBERS[@]}"; do
        addr=${MEMBER_ADDR[$m]}
        # The password comes from a file (DATA_SOURCE_PASS_FILE), so `docker inspect` shows none.
        ensure_service "$m-exporter" "$(filehash "$STATE/exporter/queries.yaml")" \
            --user "$(uidgid prometheus)" -v "$STATE/exporter:$STATE/exporter:ro" \
            -e "DATA_SOURCE_URI=$addr:5432/postgres?sslmode=disable&connect_timeout=3" \
            -e "DATA_SOURCE_USER=$MONITOR_USER" -e "DATA_SOURCE_PASS_FILE=$STATE/exporter/monitor.pass" -- \
            /usr/bin/prometheus-postgres-exporter --web.listen-address="$addr:9187" \
            --extend.query-path="$STATE/exporter/queries.yaml"
    done
}

start_balancers() {
    local b
    for b in "${BALANCERS[@]}"; do
        # -W: master-worker mode, so a reload (SIGUSR2) keeps the process and its Runtime API.
        ensure_service "$b" "$(filehash "$STATE/$b/haproxy.cfg")" \
            --user "$(uidgid haproxy)" -v "$STATE/$b:$STATE/$b" -- \
            /usr/sbin/haproxy -W -db -f "$STATE/$b/haproxy.cfg"
        reset_balancer_servers "$b"
    done
}

# Servers added or deleted through the Runtime API (Steward's [balancers]) outlive a config
# that did not change; when a balancer's servers are not the lab's own, reload it (SIGUSR2 in
# master-worker mode) so it starts again from haproxy.cfg.
reset_balancer_servers() {
    local b=$1 names want
    want=$(printf '%s\n' "${MEMBERS[@]}" | sort | tr '\n' ' ')
    names=$( { exec 3<>"/dev/tcp/${BALANCER_ADDR[$b]}/9999" && echo "show servers state" >&3 \
        && timeout 3 cat <&3; } 2>/dev/null | awk 'NR > 2 && NF > 4 { print $4 }' | sort -u | tr '\n' ' ') || true
    if [[ -n "$names" && "$names" != "$want" ]]; then
        echo "$b: servers are [${names% }], not the lab's [${want% }]: reloading it"
        docker kill -s USR2 "$b" >/dev/null
        sleep 1
    fi
}

start_prometheus() {
    ensure_service lab-prometheus "$(filehash "$STATE/prometheus/prometheus.yml")" \
        --user "$(uidgid prometheus)" -v "$STATE/prometheus:$STATE/prometheus" -- \
        /usr/bin/prometheus --config.file="$STATE/prometheus/prometheus.yml" \
        --storage.tsdb.path="$STATE/prometheus/data" --storage.tsdb.retention.time=2d \
        --web.listen-address="$PROM_ADDR:9090" --web.enable-lifecycle
}

# ---------------------------------------------------------------------------------------------------
# 4. Health
# ---------------------------------------------------------------------------------------------------

http() { curl -sS -m 2 --fail "$@" 2>/dev/null; }

# Prints the leader's member name, or nothing.
leader_name() {
    local m
    for m in "${MEMBERS[@]}"; do
        http "http://${MEMBER_ADDR[$m]}:8008/cluster" \
            | jq -r '.members[]? | select(.role == "leader") | .name' && return
    done
}

# Creates (or updates) the exporters' monitoring role on the leader; quiet, idempotent.
ensure_monitor_role() {
    local leader=$1
    # The password travels on stdin, never on a command line.
    PGPASSFILE="$SECRETS/pgpass" psql -X -q -v ON_ERROR_STOP=1 \
        "host=${MEMBER_ADDR[$leader]} port=5432 user=postgres dbname=postgres connect_timeout=3" \
        >/dev/null 2>&1 <<SQL
SET log_statement = 'none';
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$MONITOR_USER') THEN
    CREATE ROLE $MONITOR_USER LOGIN;
  END IF;
END \$\$;
GRANT pg_monitor TO $MONITOR_USER;
ALTER ROLE $MONITOR_USER PASSWORD '$(secret MONITOR_PASSWORD)';
SQL
}

# Prints one line per thing that is not healthy; prints nothing when the whole lab is.
health_problems() {
    local m b leader state names streaming targets
    http "http://$ETCD_ADDR:2379/health" | jq -e '.health == "true"' >/dev/null \
        || echo "etcd: not healthy at http://$ETCD_ADDR:2379/health"
    for m in "${MEMBERS[@]}"; do
        state=$(http "http://${MEMBER_ADDR[$m]}:8008/patroni" | jq -r '.state // empty') || true
        [[ $state == running ]] || echo "$m: Patroni says postgres is '${state:-no answer}', not running"
    done
    leader=$(leader_name || true)
    if [[ -z $leader ]]; then
        echo "cluster: no leader"
    else
        names=$(printf '"%s",' "${MEMBERS[@]}")
        # Only walsenders named after a member count: pg_basebackup's own stream also says streaming.
        streaming=$(http "http://${MEMBER_ADDR[$leader]}:8008/patroni" \
            | jq "[.replication[]? | select(.state == \"streaming\" and (.application_name | IN(${names%,})))] | length") || true
        [[ ${streaming:-0} -eq $((${#MEMBERS[@]} - 1)) ]] \
            || echo "replication: ${streaming:-0} of $((${#MEMBERS[@]} - 1)) replicas streaming from $leader"
    fi
    for b in "${BALANCERS[@]}"; do
        local csv up_p up_r
        csv=$(http "http://${BALANCER_ADDR[$b]}:8404/stats;csv") || { echo "$b: stats not answering"; continue; }
        up_p=$(awk -F, '$1 == "primary" && $2 ~ /^lab-pg-/ && $18 == "UP"' <<<"$csv" | wc -l)
        up_r=$(awk -F, '$1 == "replicas" && $2 ~ /^lab-pg-/ && $18 == "UP"' <<<"$csv" | wc -l)
        [[ $up_p -eq 1 ]] || echo "$b: $up_p servers UP for the primary port (want 1)"
        [[ $up_r -eq $((${#MEMBERS[@]} - 1)) ]] || echo "$b: $up_r servers UP for the replica port (want $((${#MEMBERS[@]} - 1)))"
    done
    targets=$(http "http://$PROM_ADDR:9090/api/v1/targets?state=active") || { echo "prometheus: not answering"; return; }
    local want=$((1 + 2 * ${#MEMBERS[@]} + ${#BALANCERS[@]}))
    jq -r --argjson want "$want" '.data.activeTargets as $t
        | ($t[] | select(.health != "up") | "prometheus: target \(.scrapeUrl) is \(.health) \(.lastError)"),
          (if ($t | length) < $want then "prometheus: \($t | length) of \($want) targets discovered" else empty end)' <<<"$targets"
    # The exporters answer even when they cannot reach postgres; pg_up says whether they do.
    local pg_up
    pg_up=$(http "http://$PROM_ADDR:9090/api/v1/query" --data-urlencode 'query=sum(pg_up)' \
        | jq -r '.data.result[0].value[1] // "0"') || true
    [[ ${pg_up:-0} == "${#MEMBERS[@]}" ]] || echo "exporters: ${pg_up:-0} of ${#MEMBERS[@]} reach postgres (pg_up)"
    return 0
}

wait_healthy() {
    local start=$SECONDS problems="" last_print=-100 leader
    while :; do
        # A container that exited during `up` will not come back by waiting (a port taken by another
        # program, a bad config): say which one and why, at once.
        local dead
        dead=$(docker ps -a --filter "label=$LABEL=1" --filter status=exited --filter status=dead --format '{{.Names}}')
        if [[ -n $dead ]]; then
            local c
            for c in $dead; do
                printf 'lab: error: container %s exited; its last log lines:\n' "$c" >&2
                docker logs --tail 8 "$c" 2>&1 | sed 's/^/    /' >&2
            done
            return 1
        fi
        leader=$(leader_name || true)
        # The exporters log in as this role; creating it needs a leader, so it is retried here.
        if [[ -n $leader ]]; then ensure_monitor_role "$leader" || true; fi
        problems=$(health_problems) || true
        [[ -z $problems ]] && return 0
        if ((SECONDS - start >= TIMEOUT)); then
            printf 'lab: error: not healthy after %s s; what is not up:\n%s\n' "$TIMEOUT" "$problems" >&2
            echo "lab: see 'docker logs <container>' and 'scripts/lab.sh status'" >&2
            return 1
        fi
        if ((SECONDS - last_print >= 10)); then
            log "waiting ($((SECONDS - start)) s): $(head -n1 <<<"$problems")"
            last_print=$SECONDS
        fi
        sleep 1
    done
}

# ---------------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------------

print_summary() {
    local m b leader
    leader=$(leader_name || true)
    cat <<EOF
Steward lab is healthy (Patroni $PATRONI_VERSION, leader: ${leader:-?}).
  etcd          http://$ETCD_ADDR:2379
EOF
    for m in "${MEMBERS[@]}"; do
        printf '  %-13s postgres %s:5432  patroni http://%s:8008  exporter http://%s:9187/metrics  disk %s\n' \
            "$m" "${MEMBER_ADDR[$m]}" "${MEMBER_ADDR[$m]}" "${MEMBER_ADDR[$m]}" "$DISKS/$m"
    done
    for b in "${BALANCERS[@]}"; do
        printf '  %-13s primary %s:5432  replicas %s:5433  runtime API %s:9999 (or %s)  stats http://%s:8404/stats\n' \
            "$b" "${BALANCER_ADDR[$b]}" "${BALANCER_ADDR[$b]}" "${BALANCER_ADDR[$b]}" "$STATE/$b/admin.sock" "${BALANCER_ADDR[$b]}"
    done
    cat <<EOF
  prometheus    http://$PROM_ADDR:9090
Credentials (root only, never printed): $SECRETS/passwords.env, libpq password file $SECRETS/pgpass
Shell exports: eval "\$(scripts/lab.sh env)"
EOF
}

cmd_up() {
    need_root
    local t0=$SECONDS
    install_packages
    install_patroni
    start_docker
    ensure_image
    ensure_secrets
    local m
    for m in "${MEMBERS[@]}"; do ensure_disk "$m"; done
    render_configs
    start_second_engine
    start_etcd
    start_members
    start_exporters
    start_balancers
    start_prometheus
    wait_healthy || exit 1
    print_summary
    log "healthy $((SECONDS - t0)) s after 'up' started"
}

cmd_down() {
    need_root
    local ids m img dev
    if docker version >/dev/null 2>&1; then
        ids=$( { docker ps -aq --filter "label=$LABEL=1"; docker ps -aq --filter "label=io.steward.cluster=$CLUSTER"; } | sort -u)
        if [[ -n $ids ]]; then
            log "removing lab containers"
            # shellcheck disable=SC2086 # one id per word
            docker rm -f $ids >/dev/null
        fi
    fi
    # Members Steward created on its second host (they carry the cluster label, not the lab's).
    if docker -H "unix://$SECOND_SOCK" version >/dev/null 2>&1; then
        ids=$(docker -H "unix://$SECOND_SOCK" ps -aq --filter "label=io.steward.cluster=$CLUSTER")
        if [[ -n $ids ]]; then
            log "removing the cluster's containers on the second engine"
            # shellcheck disable=SC2086 # one id per word
            docker -H "unix://$SECOND_SOCK" rm -f $ids >/dev/null
        fi
    fi
    # Every loop device backed by a lab image, including members added later (lab-pg-4.img, ...).
    while read -r dev; do
        [[ -n $dev ]] && losetup -d "$dev"
    done < <(losetup -l -n -O NAME,BACK-FILE | awk -v s="$STATE/" 'index($2, s) == 1 { print $1 }')
    # Anything still mounted below the state folder (e.g. disks of members added later).
    while read -r mnt; do
        [[ -n $mnt ]] && umount "$mnt"
    done < <(findmnt -rn -o TARGET | awk -v s="$STATE/" 'index($1, s) == 1' | sort -r)
    while read -r dev; do
        [[ -n $dev ]] && losetup -d "$dev"
    done < <(losetup -l -n -O NAME,BACK-FILE | awk -v s="$STATE/" 'index($2, s) == 1 { print $1 }')
    if [[ -d $STATE ]]; then
        log "removing $STATE"
        rm -rf --one-file-system "$STATE"
    fi
    log "lab is down"
}

cmd_status() {
    docker ps -a --filter "label=$LABEL=1" --format 'table {{.Names}}\t{{.Status}}'
    echo
    if [[ -f $PATRONI_DIR/patroni.yml ]]; then
        cmd_patronictl list 2>/dev/null || echo "patronictl: no answer from etcd"
        echo
    fi
    local problems
    problems=$(health_problems) || true
    if [[ -z $problems ]]; then echo "healthy"; else echo "not healthy:"; echo "$problems"; return 1; fi
}

# patronictl with the shared configuration; the scope comes from the environment, as for the members.
cmd_patronictl() {
    PATRONI_SCOPE=$CLUSTER "$VENV/bin/patronictl" -c "$PATRONI_DIR/patroni.yml" "$@"
}

cmd_env() {
    local m b urls="" bal="" rt="" names="${MEMBERS[*]}"
    for m in "${MEMBERS[@]}"; do urls+="${urls:+,}http://${MEMBER_ADDR[$m]}:8008"; done
    for b in "${BALANCERS[@]}"; do
        bal+="${bal:+,}${BALANCER_ADDR[$b]}"
        rt+="${rt:+,}${BALANCER_ADDR[$b]}:9999"
    done
    cat <<EOF
export PATRONI_URLS='$urls'
export PROMETHEUS_URL='http://$PROM_ADDR:9090'
export ETCD_ENDPOINTS='http://$ETCD_ADDR:2379'
export HAPROXY_ADDRS='$bal'
export HAPROXY_RUNTIME_APIS='$rt'
export PGHOST='${BALANCER_ADDR[${BALANCERS[0]}]}'
export PGPORT=5432
export PGUSER=postgres
export PGDATABASE=postgres
export PGPASSFILE='$SECRETS/pgpass'
export PGCONNECT_TIMEOUT=5
export STEWARD_LAB_READ_PORT=5433
export STEWARD_LAB_MEMBERS='$names'
export STEWARD_LAB_STATE='$STATE'
export STEWARD_LAB_SECRETS='$SECRETS/passwords.env'
export STEWARD_LAB_LABEL='$LABEL=1'
export STEWARD_LAB_IMAGE='$IMAGE'
export STEWARD_LAB_CLUSTER='$CLUSTER'
export STEWARD_LAB_DISKS='$DISKS'
export STEWARD_LAB_SECOND_ENGINE='unix://$SECOND_SOCK'
EOF
}

# Memory of each lab container, the way ENVIRONMENT.md says to read it on cgroup v1: anonymous RSS
# plus shared memory from memory.stat (the raw usage includes page cache), and the sum of the
# processes' PSS (shared pages split between the processes that map them, so postgres' shared
# buffers are counted once).
cmd_footprint() {
    local name id cg rss shmem pss pid
    printf '%-18s %9s %9s %9s %6s\n' CONTAINER RSS_MiB SHMEM_MiB PSS_MiB PROCS
    while read -r name; do
        id=$(docker inspect -f '{{.Id}}' "$name")
        cg=/sys/fs/cgroup/memory/docker/$id
        [[ -r $cg/memory.stat ]] || { printf '%-18s (no cgroup v1 memory stats at %s)\n' "$name" "$cg"; continue; }
        rss=$(awk '$1 == "total_rss" { print $2 }' "$cg/memory.stat")
        shmem=$(awk '$1 == "total_shmem" { print $2 }' "$cg/memory.stat")
        pss=0
        while read -r pid; do
            pss=$((pss + $(awk '/^Pss:/ { print $2 }' "/proc/$pid/smaps_rollup" 2>/dev/null || echo 0)))
        done <"$cg/cgroup.procs"
        awk -v n="$name" -v r="$rss" -v s="$shmem" -v p="$pss" -v c="$(wc -l <"$cg/cgroup.procs")" \
            'BEGIN { printf "%-18s %9.1f %9.1f %9.1f %6d\n", n, r / 1048576, s / 1048576, p / 1024, c }'
    done < <(docker ps --filter "label=$LABEL=1" --format '{{.Names}}' | sort)
}

usage() {
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

case "${1:-}" in
    up) cmd_up ;;
    install) need_root; install_packages; install_patroni ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) cmd_env ;;
    footprint) need_root; cmd_footprint ;;
    record) need_root; exec "$LAB_DIR/record-fixtures.sh" "${@:2}" ;;
    patronictl) cmd_patronictl "${@:2}" ;;
    *) usage ;;
esac
