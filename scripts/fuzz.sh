#!/usr/bin/env bash
# Runs Steward's fuzz targets (fuzz/: cargo-fuzz, libFuzzer) one after the other, each for a
# fixed time on one core, and prints per target the inputs executed and whether it crashed.
#
#   scripts/fuzz.sh              every target, 60 s each
#   scripts/fuzz.sh config       one target (`cargo +nightly fuzz list` names them)
#   FUZZ_SECONDS=300 scripts/fuzz.sh
#
# Environment:
#   FUZZ_SECONDS    time per target (default 60)
#   FUZZ_SANITIZER  address, leak, memory, thread or none (default none: the code under test is
#                   safe Rust, the failures looked for are panics, hangs and broken invariants,
#                   and without ASan the targets run 2-3 times more inputs)
#   FUZZ_TOOLCHAIN  the nightly toolchain cargo-fuzz builds with (default nightly)
#
# The targets build into fuzz/target (never the workspace's target/), with debug assertions and
# overflow checks on. The committed seeds in fuzz/corpus/<target> are read, never written: new
# inputs go to fuzz/target/corpus/<target>, kept between runs. A crash's input is written to
# fuzz/artifacts/<target>/; replay it with `cargo +nightly fuzz run <target> <file>`.
#
# Exit status: 0 no target crashed, 1 a target crashed (or hung), 2 usage or build failure.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${FUZZ_SECONDS:-60}
sanitizer=${FUZZ_SANITIZER:-none}
toolchain=${FUZZ_TOOLCHAIN:-nightly}

if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
    echo "FUZZ_SECONDS must be a whole number of seconds, not '$seconds'" >&2
    exit 2
fi
if ! rustup run "$toolchain" rustc --version >/dev/null 2>&1; then
    echo "cargo-fuzz needs a nightly toolchain: rustup toolchain install $toolchain" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

cd "$root/fuzz"
# The fuzz crate is a workspace of its own with its own target directory.
unset CARGO_TARGET_DIR

mapfile -t all < <(cargo "+$toolchain" fuzz list)
if [[ $# -gt 1 ]]; then
    echo "usage: scripts/fuzz.sh [TARGET]" >&2
    exit 2
elif [[ $# -eq 1 ]]; then
    if ! printf '%s\n' "${all[@]}" | grep -qx -- "$1"; then
        echo "no fuzz target '$1'; the targets are: ${all[*]}" >&2
        exit 2
    fi
    targets=("$1")
else
    targets=("${all[@]}")
fi

echo "building ${#targets[@]} target(s) (sanitizer: $sanitizer)" >&2
build_target=()
[[ ${#targets[@]} -eq 1 ]] && build_target=("${targets[0]}")
if ! cargo "+$toolchain" fuzz build --sanitizer "$sanitizer" "${build_target[@]}"; then
    echo "the fuzz targets do not build" >&2
    exit 2
fi

logs=target/fuzz-logs
mkdir -p "$logs"
crashed=0
results=()
for t in "${targets[@]}"; do
    work=target/corpus/$t
    mkdir -p "$work" "artifacts/$t"
    flags=(
        "-max_total_time=$seconds"
        # An input that takes more than 10 s is a hang, reported as a crash.
        -timeout=10
        -print_final_stats=1
        -artifact_prefix="artifacts/$t/"
    )
    [[ -f dicts/$t.dict ]] && flags+=("-dict=dicts/$t.dict")
    echo "fuzzing $t for ${seconds}s" >&2
    status=0
    # One process, one core: libFuzzer's default (no -jobs/-workers fan-out).
    cargo "+$toolchain" fuzz run --sanitizer "$sanitizer" "$t" "$work" "corpus/$t" -- \
        "${flags[@]}" >"$logs/$t.log" 2>&1 || status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -1)
    if [[ -z $execs ]]; then
        # A crash ends the run before the final stats; the last status line has the count.
        execs=$(grep -oE '^#[0-9]+' "$logs/$t.log" | tail -1 | tr -d '#')
    fi
    if [[ $status -eq 0 ]]; then
        verdict="no crash"
    else
        crashed=1
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$logs/$t.log" | tail -1)
        verdict="CRASH (exit $status): ${artifact:+fuzz/$artifact, }log fuzz/$logs/$t.log"
    fi
    results+=("$(printf '%-16s %6ss %12s  %s' "$t" "$seconds" "${execs:-?}" "$verdict")")
    echo "${results[-1]}" >&2
done

printf '\n%-16s %7s %12s  %s\n' target time executions result
printf '%s\n' "${results[@]}"
echo "logs: fuzz/$logs/"
exit "$crashed"
