#!/usr/bin/env bash
# Builds and runs lightning-proto's fuzz targets, one after another.
#
#   fuzz/run.sh SECONDS [TARGET...]
#
# Runs each TARGET (default: all) for SECONDS, then prints executions and coverage per
# target. Exits non-zero if any target found a crash (the input is left under
# fuzz/artifacts/<target>/ and the log under fuzz/logs/<target>.log).
#
# Works on stable Rust: cargo-fuzz needs nightly-only flags (-Zsanitizer), which
# RUSTC_BOOTSTRAP=1 unlocks. cargo-fuzz is installed if missing.
#
# New corpus entries go to fuzz/corpus/<target>/ (not committed); the committed seeds in
# fuzz/seeds/<target>/ are read but never written. Extra libFuzzer flags can be passed in
# FUZZ_ARGS, e.g. FUZZ_ARGS="-max_len=65536" fuzz/run.sh 60 authenticated_stream.
set -euo pipefail

ALL_TARGETS=(frame_decoder message_decode handshake_verify server_datagrams authenticated_stream sim_scenario)

if [[ $# -lt 1 || ! $1 =~ ^[0-9]+$ ]]; then
    echo "usage: $0 SECONDS [TARGET...]" >&2
    echo "targets: ${ALL_TARGETS[*]}" >&2
    exit 2
fi
seconds=$1
shift
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    targets=("${ALL_TARGETS[@]}")
fi

cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# -a: debug assertions (and with them overflow checks) stay on while fuzzing.
build_flags=(-a)

echo "== building ${targets[*]}"
for t in "${targets[@]}"; do
    cargo fuzz build "${build_flags[@]}" "$t"
done

mkdir -p logs
failed=()
summary=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "seeds/$t"
    log="logs/$t.log"
    echo "== $t: ${seconds}s"
    status=0
    # shellcheck disable=SC2086
    cargo fuzz run "${build_flags[@]}" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -timeout=60 -print_final_stats=1 ${FUZZ_ARGS:-} \
        >"$log" 2>&1 || status=$?
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')
    corp=$(find "corpus/$t" -type f | wc -l)
    line=$(printf '%-22s execs %-10s cov %-7s ft %-7s corpus %s' "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$corp")
    if [[ $status -ne 0 ]]; then
        line="$line  CRASH (exit $status, see fuzz/$log)"
        failed+=("$t")
        grep -E 'panicked at|SUMMARY|Test unit written' "$log" | head -5 || true
    fi
    echo "$line"
    summary+=("$line")
done

echo
echo "== summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "crashed: ${failed[*]}" >&2
    exit 1
fi
