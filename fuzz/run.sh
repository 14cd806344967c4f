#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer, through cargo-fuzz) of the parsers of
# untrusted input. `make fuzz` runs this.
#
#   bash fuzz/run.sh                  every target, FUZZ_SECONDS each
#   bash fuzz/run.sh push_decode ...  only these targets
#   FUZZ_SECONDS=600 bash fuzz/run.sh audit_alerter
#
# Exits non-zero if any target crashed (a panic, a failed invariant, a
# timeout or running out of memory) and prints where the input was saved.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
FUZZ_SECONDS=${FUZZ_SECONDS:-30}
# cargo-fuzz passes nightly-only flags (-Z...) to rustc and cargo; the one
# stable toolchain here accepts them with this switch.
export RUSTC_BOOTSTRAP=1
# No AddressSanitizer: the code under test is safe Rust, and ASan would
# double the build of every dependency for little. Debug assertions and
# overflow checks stay on.
FLAGS=(--sanitizer none --debug-assertions --release)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "run.sh: installing cargo-fuzz from crates.io" >&2
    cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

echo "run.sh: building ${#targets[@]} fuzz targets (first build takes a while)" >&2
cargo fuzz build "${FLAGS[@]}"

logs=target/fuzz-logs
mkdir -p "$logs"
failed=()
for t in "${targets[@]}"; do
    # New inputs go to a work corpus under target/ (not committed); the
    # seeds in corpus/$t are read only.
    work=target/corpus/$t
    mkdir -p "$work" "corpus/$t" "artifacts/$t"
    args=(-max_total_time="$FUZZ_SECONDS" -max_len=8192 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
    if [ -f "dicts/$t.dict" ]; then
        args+=(-dict="dicts/$t.dict")
    fi
    echo "run.sh: fuzzing $t for ${FUZZ_SECONDS}s" >&2
    if cargo fuzz run "${FLAGS[@]}" "$t" "$work" "corpus/$t" -- "${args[@]}" >"$logs/$t.log" 2>&1; then
        runs=$(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$logs/$t.log" | grep -o '[0-9]*$' || true)
        cov=$(grep -o 'cov: [0-9]*' "$logs/$t.log" | tail -1 || true)
        echo "run.sh: $t ok (${runs:-?} runs, ${cov:-cov: ?})" >&2
    else
        failed+=("$t")
        echo "run.sh: $t FAILED (log: $PWD/$logs/$t.log)" >&2
        grep -E -A1 'panicked at|^==[0-9]+== ERROR|ERROR: libFuzzer' "$logs/$t.log" | head -6 >&2 || true
        artifact=$(grep -o 'Test unit written to [^ ]*' "$logs/$t.log" | tail -1 | sed 's/Test unit written to //' || true)
        if [ -n "$artifact" ]; then
            case "$artifact" in /*) ;; *) artifact=$PWD/$artifact ;; esac
            echo "run.sh: crashing input saved to $artifact" >&2
            echo "run.sh: reproduce with: (cd $PWD && RUSTC_BOOTSTRAP=1 cargo fuzz run ${FLAGS[*]} $t $artifact)" >&2
        else
            tail -20 "$logs/$t.log" >&2
        fi
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "run.sh: crashed: ${failed[*]}" >&2
    exit 1
fi
echo "run.sh: all ${#targets[@]} targets ran ${FUZZ_SECONDS}s without a crash" >&2
