#!/usr/bin/env bash
# Checks the README's two commands on a machine that has never seen this project: builds a minimal
# Debian 12 root with debootstrap, puts a clean copy of the project in it (what HEAD holds), bind-mounts
# this machine's Rust toolchain read-only (and cargo-nextest, when there is one), and runs the
# install-and-build part of both commands inside it:
#
#   demo  scripts/demo.sh --build-only   packages, Patroni, `cargo build --release --bin steward`
#   test  scripts/test.sh --build-only   packages, Patroni, every test compiled with every feature
#
# Then it prints, per part, whether it passed, how long it took and what it had to install (Debian
# packages, Patroni's venv, crates fetched). Exit 0 only when both parts pass. Services (dockerd, the
# lab) are not started: a chroot is no place for them, and they are what the rest of the commands
# do on every run anyway. Run it before saying that a change to dependencies or scripts is done.
#
# Usage: scripts/fresh-check.sh [--worktree] [--keep] [--part demo|test]
#   --worktree  copy the work tree (tracked and untracked files, not ignored ones) instead of HEAD
#   --keep      keep the root afterwards (its path is printed) instead of removing it
#   --part P    run one part only
# The root gets this machine's local CA certificates and /etc/pip.conf (the registries are reached
# through them on every machine here, before any project runs), and nothing else of the machine's.
# Needs root, debootstrap (installed when missing) and about 6 GiB of disk; takes about 20 minutes
# on 2 cores. Debian's downloaded .debs are cached in /var/cache/steward-fresh (the packages are
# Debian's own, so the root stays fresh); nothing else is kept. Logs: <root>/logs, and the tail of a
# failing part's log is printed.
set -euo pipefail
shopt -s nullglob

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=/var/cache/steward-fresh
suite=bookworm
worktree=0 keep=0 parts=(demo test)

die() { printf 'fresh-check: error: %s\n' "$*" >&2; exit 1; }
log() { printf '==> %s\n' "$*" >&2; }

# --- inside: runs in its own mount and PID namespace; the mounts vanish with it ----------------------
if [[ ${1:-} == --inside ]]; then
    root=$2 part=$3
    mount -t proc proc "$root/proc"
    mount -t sysfs sysfs "$root/sys"
    mount --bind /dev "$root/dev"
    mount --bind /dev/pts "$root/dev/pts"
    mount --bind -o ro "$FRESH_SYSROOT" "$root/opt/rust"
    mount -o remount,bind,ro "$root/opt/rust"
    if [[ -n ${FRESH_NEXTEST:-} ]]; then
        mount --bind -o ro "$FRESH_NEXTEST" "$root/usr/local/bin/cargo-nextest"
        mount -o remount,bind,ro "$root/usr/local/bin/cargo-nextest"
    fi
    case $part in
        demo) cmd='scripts/demo.sh --build-only' ;;
        test) cmd='scripts/test.sh --build-only' ;;
        *) die "unknown part $part" ;;
    esac
    # A clean environment: what a root login on a fresh machine with Rust has.
    exec env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
        PATH=/opt/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        chroot "$root" /bin/bash -c "cd /root/steward && $cmd"
fi

while [[ $# -gt 0 ]]; do
    case $1 in
        --worktree) worktree=1 ;;
        --keep) keep=1 ;;
        --part) [[ ${2:-} == demo || ${2:-} == test ]] || die "--part takes demo or test"; parts=("$2"); shift ;;
        -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
    shift
done

[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap, chroot, mounts)"
command -v rustc >/dev/null || die "no rustc on PATH: the check bind-mounts this machine's toolchain"
sysroot=$(rustc --print sysroot)
[[ -x $sysroot/bin/cargo ]] || die "$sysroot/bin/cargo is missing (the toolchain to bind-mount)"
nextest=$(command -v cargo-nextest || true)
if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >/dev/null
fi

# The mirror this machine uses (so the check reaches what the machine reaches).
mirror=$(awk '/^URIs:/ && $2 ~ /\/debian\/?$/ { print $2; exit }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
[[ -n $mirror ]] || mirror=$(awk '$1 == "deb" && $3 == "'$suite'" { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
[[ -n $mirror ]] || mirror=http://deb.debian.org/debian

mkdir -p "$cache/debs"
root=$(mktemp -d /var/tmp/steward-fresh.XXXXXX)
cleanup() {
    # The namespaces took their mounts with them; refuse to delete through one that is left.
    if findmnt -rn -o TARGET | grep -q "^$root/"; then
        printf 'fresh-check: %s still has mounts; not removing it\n' "$root" >&2
    elif [[ $keep == 1 ]]; then
        printf 'fresh-check: kept %s\n' "$root" >&2
    else
        rm -rf --one-file-system "$root"
    fi
}
trap cleanup EXIT

t0=$SECONDS
log "debootstrap $suite (minbase) from $mirror into $root"
debootstrap --variant=minbase --cache-dir="$cache/debs" "$suite" "$root" "$mirror" >"$root.debootstrap.log" 2>&1 \
    || { tail -20 "$root.debootstrap.log" >&2; die "debootstrap failed (log above)"; }
mv "$root.debootstrap.log" "$root/debootstrap.log"
t_boot=$((SECONDS - t0))
# The same package sources as this machine (updates and security too), and its resolver.
if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
    cp /etc/apt/sources.list.d/debian.sources "$root/etc/apt/sources.list.d/"
    rm -f "$root/etc/apt/sources.list"
fi
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
# The machine's own trust settings, which every machine of this workplace has before any project
# runs: local CA certificates (the registries are reached through them) and pip's configuration.
mkdir -p "$root/usr/local/share/ca-certificates"
cp -L /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/" 2>/dev/null || true
[[ -f /etc/pip.conf ]] && cp -L /etc/pip.conf "$root/etc/pip.conf"
mkdir -p "$root/opt/rust" "$root/root/steward" "$root/logs" "$root/usr/local/bin"
[[ -n $nextest ]] && touch "$root/usr/local/bin/cargo-nextest"

if [[ $worktree == 1 ]]; then
    log "copying the work tree (tracked and untracked files) into the root"
    git -C "$repo" ls-files -z --cached --others --exclude-standard \
        | (cd "$repo" && tar --null --ignore-failed-read -T - -cf -) | tar -x -C "$root/root/steward"
    what="the work tree of $(git -C "$repo" rev-parse --short HEAD)"
else
    [[ -z $(git -C "$repo" status --porcelain) ]] || log "note: uncommitted changes are NOT in the check (use --worktree)"
    git -C "$repo" archive HEAD | tar -x -C "$root/root/steward"
    what="HEAD $(git -C "$repo" rev-parse --short HEAD)"
fi

packages() { chroot "$root" dpkg-query -W -f='${Package}\n' | sort; }
packages >"$root/logs/packages.base"
declare -A result secs installed
failed=0
for part in "${parts[@]}"; do
    before=$(packages)
    crates_before=$(ls -d "$root"/root/.cargo/registry/cache/*/*.crate 2>/dev/null | wc -l)
    log "part $part: $( [[ $part == demo ]] && echo 'scripts/demo.sh --build-only' || echo 'scripts/test.sh --build-only') (log: $root/logs/$part.log)"
    t=$SECONDS rc=0
    FRESH_SYSROOT=$sysroot FRESH_NEXTEST=$nextest \
        unshare --mount --pid --fork --propagation private "$0" --inside "$root" "$part" \
        </dev/null >"$root/logs/$part.log" 2>&1 || rc=$?
    secs[$part]=$((SECONDS - t))
    new=$(comm -13 <(echo "$before") <(packages) | wc -l)
    crates=$(( $(ls -d "$root"/root/.cargo/registry/cache/*/*.crate 2>/dev/null | wc -l) - crates_before ))
    venv=""
    [[ -x $root/opt/steward-lab/venv/bin/patroni ]] \
        && venv=", $(chroot "$root" /opt/steward-lab/venv/bin/patroni --version 2>/dev/null || echo 'patroni ?') in a venv"
    installed[$part]="$new Debian packages${venv}, $crates crates fetched"
    if [[ $rc -eq 0 ]]; then
        result[$part]=passed
    else
        result[$part]="FAILED (exit $rc)"
        failed=1
        printf '\n--- the last 25 lines of %s ---\n' "$root/logs/$part.log" >&2
        tail -25 "$root/logs/$part.log" >&2
        printf -- '---\n' >&2
    fi
    # What was installed by name, for the record (the packages the part's own lists asked for are
    # in its log: "installing ...").
    grep -h '^==> installing' "$root/logs/$part.log" | sed 's/^==> installing /    installed: /' >&2 || true
done

printf '\nfresh-check of %s on a fresh Debian 12 (%s, minbase) with %s:\n' "$what" "$suite" "$(rustc --version)"
printf '  %-11s %-16s %6s  %s\n' part result time installed
printf '  %-11s %-16s %5ds  %s\n' debootstrap passed "$t_boot" "$(wc -l <"$root/logs/packages.base") packages in the base root"
for part in "${parts[@]}"; do
    printf '  %-11s %-16s %5ds  %s\n' "$part" "${result[$part]}" "${secs[$part]}" "${installed[$part]}"
done
printf '  total %dm%02ds\n' $(( (SECONDS - t0) / 60 )) $(( (SECONDS - t0) % 60 ))
if [[ $failed == 1 ]]; then
    keep=1
    printf 'fresh-check: FAILED; the root is kept for a look: chroot %s /bin/bash (rm -rf --one-file-system %s)\n' "$root" "$root"
    exit 1
fi
echo "fresh-check: passed"
