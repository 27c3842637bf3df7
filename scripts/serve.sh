#!/usr/bin/env bash
# Runs the service on its embedded default — the first command README.md gives.
# Installs what a bare machine of this project's kind lacks (libclang-dev for RocksDB's
# bindgen), builds the `wald` binary into the same build directory as ./scripts/test.sh
# (so whichever of the two runs second builds nothing heavy again), then runs
# `wald serve` with the arguments given (default: 127.0.0.1:3000, data in ./data).
#
# Environment:
#   CARGO_TARGET_DIR   shared build directory (default: $HOME/.cache/wald-target)
#   WALD_BIN           run this binary instead of building one (e.g. a release download)
#   WALD_BUILD_ONLY=1  build, print the binary's path, and stop
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wald-target}"
step() { printf '==> %s\n' "$*" >&2; }

BIN="${WALD_BIN:-}"
if [ -z "$BIN" ]; then
    if ! command -v cargo >/dev/null 2>&1; then
        echo "error: cargo is not installed; install the Rust toolchain (rustup) first" >&2
        exit 2
    fi
    # RocksDB (the state store) is built from source: bindgen needs libclang.
    if command -v dpkg >/dev/null 2>&1 && ! dpkg -s libclang-dev >/dev/null 2>&1; then
        step "installing libclang-dev (bindgen for RocksDB)"
        if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libclang-dev >/dev/null
    fi
    # The same profile and features as the test command: one build serves both.
    step "building wald (release; the first build compiles RocksDB: ~20-35 min on 2 cores)"
    (cd "$ROOT" && cargo build --release --all-features --locked --bin wald)
    BIN="$CARGO_TARGET_DIR/release/wald"
fi
if [ "${WALD_BUILD_ONLY:-0}" = 1 ]; then
    echo "$BIN"
    exit 0
fi
exec "$BIN" serve "$@"
