#!/usr/bin/env bash
# Starts libvirt's daemons for LXC domains (`lxc:///`) in the background when they are not
# running, waits until libvirtd answers, and returns. Idempotent: with libvirtd answering it does
# nothing. There is no systemd here (ENVIRONMENT.md), so this is how the tests get their libvirtd.
# Installs the Debian packages first when they are missing.
#
# Why the mount namespace: on a host that mixes cgroup v1 and v2 (v1 controllers plus a cgroup2
# hierarchy at /sys/fs/cgroup/unified, as here) libvirt 9.0's LXC driver fails every start with
# `virCgroupV2BindMount: Unable to create directory /sys/fs/cgroup/unified`. libvirtd runs in a
# mount namespace of its own without that mount: the host's mounts stay as they are, and the
# domains' cgroups are the v1 ones (memory.limit_in_bytes, cpu.cfs_quota_us). On a pure v1 or
# pure v2 host there is nothing to unmount and libvirtd starts the same way.
#
# Logs: /var/log/libvirt/libvirtd.log (libvirtd's own), /var/log/libvirt/lxc/<domain>.log (each
# domain's), /var/log/steward-libvirtd.log (what the daemons print while starting).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/install.sh
source scripts/lib/install.sh

uri=lxc:///
log=/var/log/steward-libvirtd.log
unified=/sys/fs/cgroup/unified

answers() { virsh -c "$uri" version >/dev/null 2>&1; }

# The pid in pid file $1 when that process lives and is program $2 (a zombie does not live: with
# no init reaping orphans, a daemon that died stays one; and a daemon that died long ago leaves a
# number the kernel may have given to another process since: a containerd-shim, seen here).
# /proc only: procps may be missing on a fresh machine.
live_pid() {
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && [ -r "/proc/$pid/stat" ] || return 1
    [ "$(awk '{ print $3 }' "/proc/$pid/stat")" != Z ] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] || return 1
    echo "$pid"
}

# Whether process $1 sees a cgroup2 mount at $unified (the mount the LXC driver trips over).
sees_unified() { awk -v m="$unified" '$5 == m { found = 1 } END { exit !found }' "/proc/$1/mountinfo"; }

# Starts "$@" detached from this shell: setsid + nohup so that it outlives the caller, and every
# inherited descriptor above 2 closed first, as scripts/dockerd.sh does (a daemon holding the
# lab's lock would keep it for its whole life).
detached() {
    (
        for fd in /proc/$BASHPID/fd/*; do
            fd=${fd##*/}
            if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi
        done
        exec setsid nohup "$@" >>"$log" 2>&1 </dev/null
    ) &
}

install_debian_packages libvirt-daemon-system libvirt-daemon-driver-lxc libvirt-clients

if answers; then
    pid=$(live_pid /run/libvirtd.pid libvirtd || true)
    if [ -n "$pid" ] && sees_unified "$pid" && sees_unified $$; then
        echo "libvirtd (pid $pid) answers on $uri but sees $unified: LXC domains will not start." >&2
        echo "It was started without this script; stop it (kill $pid) and run this again." >&2
        exit 1
    fi
    echo "libvirtd already answers on $uri"
    exit 0
fi

# virtlogd keeps the domains' console logs; libvirtd refuses to start a domain without it.
if ! live_pid /run/virtlogd.pid virtlogd >/dev/null; then
    detached virtlogd
fi

if pid=$(live_pid /run/libvirtd.pid libvirtd); then
    # Alive but not answering: starting a second one would fail on its pid file anyway.
    echo "libvirtd (pid $pid) runs but does not answer on $uri; see /var/log/libvirt/libvirtd.log" >&2
    exit 1
fi

# `--propagation private`: the unmount stays inside libvirtd's namespace.
# shellcheck disable=SC2016
detached unshare -m --propagation private sh -c \
    'if awk -v m="$1" '\''$5 == m { f = 1 } END { exit !f }'\'' /proc/self/mountinfo; then
         umount "$1" || exit 1
     fi
     exec libvirtd' sh "$unified"

for _ in $(seq 1 60); do
    if answers; then
        echo "libvirtd answers on $uri ($(virsh -c "$uri" version 2>/dev/null | sed -n 's/^Running hypervisor: //p'))"
        exit 0
    fi
    sleep 0.5
done
echo "libvirtd did not answer on $uri within 30 s; see $log and /var/log/libvirt/libvirtd.log" >&2
tail -n 20 "$log" >&2 || true
exit 1
