#!/usr/bin/env bash
# Runs every test of the workspace — the command README.md gives and .ci/run calls.
# Installs what a bare machine of this project's kind lacks; safe to run repeatedly.
#
# Environment:
#   CARGO_TARGET_DIR    shared build directory (default: $HOME/.cache/wald-target)
#   WALD_CRASH_CYCLES   SIGKILL cycles of the engine's process-crash test (default 50)
#   FUZZ_SECONDS        seconds per fuzz target in the fuzz smoke run (default 15; 0 skips)
#   WALD_OPENAPI_VALIDATOR  set here: openapi-spec-validator in $CARGO_TARGET_DIR/pyenv
#   WALD_MOTO_SERVER, WALD_SCHEMATHESIS  set here: moto's server and schemathesis, same venv
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

# The delivery target tests (tests/targets.rs) start a real Redis and a real PostgreSQL 15
# on private ports; install the servers when missing (they are not started as services).
if ! command -v redis-server >/dev/null 2>&1 || [ ! -x /usr/lib/postgresql/15/bin/postgres ]; then
    step "installing redis-server and postgresql (target tests)"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server postgresql >/dev/null
fi

# One profile (release) for everything: RocksDB's C++ compiles once (~16 min cold), and
# `cargo run --release -- serve` reuses the same build. Overflow checks stay on in release.
step "format check (cargo fmt --all -- --check)"
cargo fmt --all -- --check

step "build (release, all targets, all features)"
cargo build --release --workspace --all-targets --all-features --locked 2>&1 | tail -n 3

# The OpenAPI test (tests/http_api.rs) validates the served document with
# openapi-spec-validator (PyPI), kept in a venv beside the builds.
PYENV="$CARGO_TARGET_DIR/pyenv"
if ! "$PYENV/bin/openapi-spec-validator" --help >/dev/null 2>&1; then
    step "installing openapi-spec-validator into $PYENV"
    if ! python3 -m venv "$PYENV"; then
        # Debian's python3 ships venv (ensurepip) separately.
        if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$PYENV"
    fi
    "$PYENV/bin/python" -m pip install -q 'openapi-spec-validator>=0.7,<0.8'
fi
export WALD_OPENAPI_VALIDATOR="$PYENV/bin/openapi-spec-validator"

# The SQS mirror test (tests/mirror_sqs.rs) runs against moto's server mode (PyPI), same venv.
if ! [ -x "$PYENV/bin/moto_server" ]; then
    step "installing moto[server] into $PYENV"
    "$PYENV/bin/python" -m pip install -q 'moto[server]>=5,<6'
fi
export WALD_MOTO_SERVER="$PYENV/bin/moto_server"

# The API fuzzer (tests/http_api.rs) drives the served OpenAPI document with schemathesis
# (PyPI), same venv.
if ! "$PYENV/bin/schemathesis" --version 2>/dev/null | grep -q 'version 4\.'; then
    step "installing schemathesis into $PYENV"
    "$PYENV/bin/python" -m pip install -q 'schemathesis>=4.3,<5'
fi
export WALD_SCHEMATHESIS="$PYENV/bin/schemathesis"

step "tests (release, workspace, all features)"
cargo test --release --workspace --all-features --locked

if [ "$FUZZ_SECONDS" != "0" ] && [ -x scripts/fuzz-smoke.sh ]; then
    step "fuzz smoke (${FUZZ_SECONDS}s per target)"
    scripts/fuzz-smoke.sh
fi

step "all tests passed"
