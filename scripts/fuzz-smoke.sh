#!/usr/bin/env bash
# Smoke-runs every cargo-fuzz target of wald-storage for a short while.
#
#   FUZZ_SECONDS=20 scripts/fuzz-smoke.sh            # all targets, 20 s each (default)
#   FUZZ_SECONDS=300 scripts/fuzz-smoke.sh log_model  # only the named targets
#
# Installs cargo-fuzz when missing. Uses a nightly toolchain when rustup has one, else
# RUSTC_BOOTSTRAP=1 on the default toolchain (cargo-fuzz needs -Zsanitizer). Builds into
# $CARGO_TARGET_DIR (default ~/.cache/wald-fuzz-target): the sanitizer RUSTFLAGS would
# otherwise invalidate the main build cache. Runs the targets one after another and exits
# non-zero when any of them crashes (the crashing input is in fuzz/artifacts/<target>/).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FUZZ_DIR="$ROOT/fuzz"
SECONDS_PER_TARGET="${FUZZ_SECONDS:-20}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wald-fuzz-target}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    FUZZ=(cargo +nightly fuzz)
else
    export RUSTC_BOOTSTRAP=1
    FUZZ=(cargo fuzz)
fi

cd "$FUZZ_DIR"
if [ "$#" -gt 0 ]; then
    TARGETS=("$@")
else
    mapfile -t TARGETS < <("${FUZZ[@]}" list)
fi

failed=()
for t in "${TARGETS[@]}"; do
    echo "=== fuzz-smoke: $t for ${SECONDS_PER_TARGET}s ===" >&2
    # Committed reproducers of past findings are replayed first (a seed directory is
    # read-only for libFuzzer: new inputs go to fuzz/corpus/$t).
    seeds=()
    if [ -d "regressions/$t" ] && [ -n "$(ls -A "regressions/$t" 2>/dev/null)" ]; then
        seeds=("regressions/$t")
    fi
    # Structured targets want long inputs from the start (many ops / records per input).
    extra=()
    case "$t" in
        log_model) extra=(-max_len=1024 -len_control=0) ;;
        segment_open) extra=(-max_len=2048) ;;
    esac
    mkdir -p "corpus/$t"
    if ! "${FUZZ[@]}" run "$t" "corpus/$t" "${seeds[@]}" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=60 -print_final_stats=1 "${extra[@]}"; then
        echo "fuzz-smoke: $t FAILED (see fuzz/artifacts/$t/)" >&2
        failed+=("$t")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz-smoke: crashed: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz-smoke: all ${#TARGETS[@]} targets ran ${SECONDS_PER_TARGET}s without a crash" >&2
