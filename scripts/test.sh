#!/usr/bin/env bash
# Runs every test of the workspace — the command README.md gives and .ci/run calls.
# Installs what a bare machine of this project's kind lacks; safe to run repeatedly.
#
# Environment:
#   CARGO_TARGET_DIR    shared build directory (default: $HOME/.cache/wald-target)
#   WALD_CRASH_CYCLES   SIGKILL cycles of the engine's process-crash test (default 50)
#   FUZZ_SECONDS        seconds per fuzz target in the fuzz smoke run (default 15; 0 skips)
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wald-target}"
export WALD_CRASH_CYCLES="${WALD_CRASH_CYCLES:-50}"
export FUZZ_SECONDS="${FUZZ_SECONDS:-15}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n==> %s\n' "$*"; }

if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo is not installed; install the Rust toolchain (rustup) first" >&2
    exit 2
fi

# RocksDB (the state store) is built from source: bindgen needs libclang.
if ! dpkg -s libclang-dev >/dev/null 2>&1; then
    step "installing libclang-dev (bindgen for RocksDB)"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libclang-dev >/dev/null
fi

# One profile (release) for everything: RocksDB's C++ compiles once (~16 min cold), and
# `cargo run --release -- serve` reuses the same build. Overflow checks stay on in release.
step "build (release, all targets, all features)"
cargo build --release --workspace --all-targets --all-features --locked 2>&1 | tail -n 3

step "tests (release, workspace, all features)"
cargo test --release --workspace --all-features --locked

if [ "$FUZZ_SECONDS" != "0" ] && [ -x scripts/fuzz-smoke.sh ]; then
    step "fuzz smoke (${FUZZ_SECONDS}s per target)"
    scripts/fuzz-smoke.sh
fi

step "all tests passed"
