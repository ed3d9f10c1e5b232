#!/usr/bin/env bash
# The benchmark campaign of bench/RESULTS.md ("Performance campaign"), in one run:
# baselines (dd O_DIRECT, the transport's loopback rate, Redis streams with fsync always) and
# the broker's workloads through streambench, each against a fresh local streamd.
#
#   bash bench/campaign.sh [DATA_DIR]        # DATA_DIR must be on the disk under test (not tmpfs)
#
# Environment: SECS (measured seconds per throughput run, default 10), SKIP_REDIS=1. Run as root,
# it installs Debian's redis-server for the peer baseline when it is missing.
# Prints one line per figure and writes them to $DATA_DIR/campaign.txt. Every streamd it starts
# keeps at most 1 GiB per partition (so the runs cannot fill the disk); the data directory is
# removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DATA=${1:-$ROOT/target/bench-campaign}
SECS=${SECS:-10}
BIN=$ROOT/target/release
mkdir -p "$DATA"
OUT=$DATA/campaign.txt
: >"$OUT"
STREAMD_PID=
cleanup() {
    [ -n "$STREAMD_PID" ] && kill "$STREAMD_PID" 2>/dev/null && wait "$STREAMD_PID" 2>/dev/null
    [ -n "${REDIS_PID:-}" ] && kill "$REDIS_PID" 2>/dev/null
    rm -rf "$DATA"/broker "$DATA"/redis "$DATA"/dd.tmp
}
trap cleanup EXIT

say() { echo "$*" | tee -a "$OUT"; }

cargo build --release --bins -q
cargo build --release -q -p quiver-net --example transport_bench
say "commit $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty')"
say "machine $(nproc) cpus, $(uname -r), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg), data on $(df --output=source "$DATA" | tail -1)"

# --- baselines --------------------------------------------------------------------------------
for i in 1 2 3; do
    rate=$(dd if=/dev/zero of="$DATA/dd.tmp" bs=1M count=1024 oflag=direct 2>&1 | awk -F', ' '/copied/ {print $NF}')
    say "baseline dd oflag=direct 1 GiB run $i: $rate"
    # Reading back: consume reads the disk with O_DIRECT too (no page cache), so this bounds it.
    rate=$(dd if="$DATA/dd.tmp" of=/dev/null bs=1M iflag=direct 2>&1 | awk -F', ' '/copied/ {print $NF}')
    say "baseline dd iflag=direct 1 GiB run $i: $rate"
    rm -f "$DATA/dd.tmp"
done
for inflight in 1 8; do
    "$ROOT/target/release/examples/transport_bench" --secs 5 --inflight "$inflight" --only glommio 2>/dev/null |
        grep -E "^\| (upload|download)" | sed "s/^/baseline transport inflight $inflight: /" | tee -a "$OUT"
done

# The peer baseline comes from Debian's package; install it if it is missing and we may.
if [ -z "${SKIP_REDIS:-}" ] && ! command -v redis-server >/dev/null && [ "$(id -u)" = 0 ] &&
    command -v apt-get >/dev/null; then
    say "installing redis-server (Debian) for the peer baseline"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >/dev/null 2>&1 ||
        say "could not install redis-server; the Redis baseline is skipped"
    # The package starts a server on 6379; the baseline runs its own on 6399.
    systemctl stop redis-server 2>/dev/null || true
fi
if [ -z "${SKIP_REDIS:-}" ] && command -v redis-server >/dev/null; then
    mkdir -p "$DATA/redis"
    redis-server --port 6399 --dir "$DATA/redis" --appendonly yes --appendfsync always \
        --save '' --daemonize no --logfile "$DATA/redis/log" &
    REDIS_PID=$!
    for _ in $(seq 50); do redis-cli -p 6399 ping >/dev/null 2>&1 && break; sleep 0.1; done
    value=$(head -c 1024 /dev/zero | tr '\0' v)
    for p in 1 100; do
        line=$(redis-benchmark -p 6399 -q -n 300000 -c 4 -P "$p" XADD bench '*' v "$value" 2>/dev/null | tr '\r' '\n' | grep -E "requests per second" | tail -1)
        rps=$(echo "$line" | grep -oE '[0-9.]+ requests per second' | cut -d' ' -f1)
        say "baseline redis XADD 1 KiB appendfsync=always, 4 clients, pipeline $p: $rps rec/s = $(python3 -c "print(f'{$rps*1024/1e6:.0f}')") MB/s"
    done
    kill "$REDIS_PID"; wait "$REDIS_PID" 2>/dev/null || true; REDIS_PID=
fi

# --- the broker -------------------------------------------------------------------------------
start_streamd() {
    rm -rf "$DATA/broker"
    "$BIN/streamd" --data-dir "$DATA/broker" --listen 127.0.0.1:19092 \
        --metrics-listen 127.0.0.1:19644 --default-retention-bytes 1073741824 \
        --default-segment-bytes 268435456 --retention-check-interval-ms 2000 "$@" \
        >"$DATA/streamd.out" 2>"$DATA/streamd.err" &
    STREAMD_PID=$!
    for _ in $(seq 100); do grep -q "streamd ready" "$DATA/streamd.out" 2>/dev/null && return; sleep 0.1; done
    echo "streamd did not start"; cat "$DATA/streamd.err"; exit 1
}
stop_streamd() { kill "$STREAMD_PID"; wait "$STREAMD_PID" || true; STREAMD_PID=; }
rss() { awk '/VmRSS|VmHWM/ {printf "%s %d MiB  ", $1, $2/1024}' "/proc/$STREAMD_PID/status"; }
udp_rcvbuf_errors() { awk '/^Udp:/ && $6 ~ /^[0-9]+$/ {print $6}' /proc/net/snmp; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$STREAMD_PID/stat"; }

# bench NAME ARGS...: one streambench run, summarised
bench() {
    local name=$1; shift
    local t0; t0=$(cpu_ticks)
    local drops0; drops0=$(udp_rcvbuf_errors)
    local json
    json=$("$BIN/streambench" --bootstrap 127.0.0.1:19092 --ca-file "$DATA/broker/tls/ca.pem" --json "$@" 2>>"$DATA/streambench.err")
    local t1; t1=$(cpu_ticks)
    local drops=$(( $(udp_rcvbuf_errors) - drops0 ))
    say "$name: $(python3 "$ROOT/bench/summarise.py" "$json" "$((t1 - t0))"), UDP drops $drops  [streambench $*]"
    LAST_RPS=$(python3 -c 'import json,sys; print(int(json.loads(sys.argv[1])["records_per_sec"]))' "$json")
}

BATCH=1034864  # 1000 records of 1 KiB, with their framing and the batch header
W="--duration ${SECS}s --warmup 2s --record-size 1024 --batch-size $BATCH --linger 5ms --partitions 2"

# 1. produce, durable (fsync before acknowledging), then interval flushing
start_streamd
bench "1 produce durable, 1 producer" produce --topic p1 $W
MAX_RPS=$LAST_RPS
# Sustained: 30 s, streamd's RSS sampled every second (is it flat?).
(while kill -0 "$STREAMD_PID" 2>/dev/null; do
    awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$STREAMD_PID/status"; sleep 1
done >"$DATA/rss.txt") &
SAMPLER=$!
bench "1 produce durable, 4 producers, 30 s" produce --topic p4 --duration 30s --warmup 2s \
    --record-size 1024 --batch-size $BATCH --linger 5ms --partitions 2 --producers 4
kill $SAMPLER 2>/dev/null || true
say "   streamd RSS MiB, one sample a second during that run: $(tr '\n' ' ' <"$DATA/rss.txt")"
say "   streamd after produce: $(rss)"
# 2. consume what (1) wrote
bench "2 consume, 1 consumer" consume --topic p1 --partitions 2 --records 1000000
bench "2 consume, 1 consumer per partition" consume --topic p4 --partitions 2 --records 1000000 --consumers 2
# 3. end to end at half of the maximum (and at a quarter and an eighth), no linger
HALF=$((MAX_RPS / 2))
for rate in $HALF $((HALF / 2)) $((HALF / 4)); do
    bench "3 e2e at $rate rec/s (half of 1: $HALF)" e2e --topic "e2e$rate" --partitions 2 \
        --record-size 1024 --rate "$rate" --duration 20s --warmup 3s --linger 0ms
done
# 4. small records
bench "4 produce 100 B durable, 1 producer" produce --topic small --partitions 2 --record-size 100 \
    --batch-size 112000 --linger 5ms --duration "${SECS}s" --warmup 2s
stop_streamd

start_streamd --default-flush-ms 100
bench "1 produce flush.ms=100, 1 producer" produce --topic p1 $W
bench "1 produce flush.ms=100, 4 producers" produce --topic p4 $W --producers 4
stop_streamd

# 5. many partitions
start_streamd
say "5 streamd idle: $(rss)"
bench "5 produce 1000 partitions durable, 1 producer" produce --topic many --partitions 1000 \
    --record-size 1024 --batch-size 65536 --linger 5ms --duration "${SECS}s" --warmup 2s
say "5 streamd after 1000 partitions: $(rss)"
bench "5 consume 1000 partitions" consume --topic many --partitions 1000 --records 500000
say "5 streamd after consuming: $(rss)"
stop_streamd
say "done"
