#!/usr/bin/env bash
# What replication costs and how fast a partition fails over, on a local three-broker cluster
# (deploy/local-cluster.sh), all on this machine:
#
#   1. streambench produce, acks=all, 1 KiB records, one partition: a topic with replication
#      factor 1, then one with replication factor 3 (min.insync.replicas=2): throughput, and
#      latency with one 1 MiB request in flight.
#   2. streambench e2e at a fixed rate (send to receipt, fsync on every replica first), RF 1
#      and RF 3.
#   3. Partition failover, ROUNDS times: kill -9 the leader of an RF=3 partition and measure
#      until a surviving broker's metadata names another leader (the broker session timeout,
#      then the election committed through the metadata log; each probe is a streamctl process
#      and a new connection, 10-30 ms), then restart the broker and wait until it is back in
#      the ISR. Then the same for SIGTERM (controlled shutdown: no session to lapse). Across
#      each kill a `streambench probe` (acks=all, a record every 5 ms, read back at once)
#      measures what clients see: the time from the kill to the first acknowledged produce
#      and to the first consumed record (the gaps holding the kill; -1: none within the probe).
#
#   bash bench/replication.sh [ROUNDS] [SESSION_MS]   # default 5, the broker's default session
#   SKIP_THROUGHPUT=1 skips parts 1 and 2; builds and uses target/release
#   (STREAMD, STREAMCTL and STREAMBENCH, all set, name other binaries)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-5}"
if [ -n "${2:-}" ]; then export STREAMD_BROKER_SESSION_TIMEOUT_MS="$2"; fi
export QUIVER_LOCAL_CLUSTER_DIR="${QUIVER_LOCAL_CLUSTER_DIR:-$(mktemp -d)/cluster}"
if [ -z "${STREAMD:-}" ] || [ -z "${STREAMCTL:-}" ] || [ -z "${STREAMBENCH:-}" ]; then
    cargo build --release --quiet --bin streamd --bin streamctl --bin streambench
    export STREAMD="$PWD/target/release/streamd" STREAMCTL="$PWD/target/release/streamctl"
    export STREAMBENCH="$PWD/target/release/streambench"
fi
dir="$QUIVER_LOCAL_CLUSTER_DIR"
export STREAMCTL_BOOTSTRAP=127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094
export STREAMCTL_CA_FILE="$dir/ca/ca.pem"
export STREAMBENCH_BOOTSTRAP="$STREAMCTL_BOOTSTRAP" STREAMBENCH_CA_FILE="$STREAMCTL_CA_FILE"
trap 'bash deploy/local-cluster.sh stop >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
bash deploy/local-cluster.sh start >/dev/null
echo "commit $(git rev-parse --short HEAD), $(nproc) cores, $(date -u +%FT%TZ), broker session ${STREAMD_BROKER_SESSION_TIMEOUT_MS:-default} ms"

"$STREAMCTL" topic create rf1 --partitions 1 --replication-factor 1 >/dev/null
"$STREAMCTL" topic create rf3 --partitions 1 --replication-factor 3 \
    --config min.insync.replicas=2 >/dev/null
for t in $([ -n "${SKIP_THROUGHPUT:-}" ] || echo rf1 rf3); do
    echo "== $t: produce, max throughput (acks=all)"
    "$STREAMBENCH" produce --topic "$t" --acks all --records 300000 --warmup 2s
    echo "== $t: produce, one 1 MiB request in flight (acks=all)"
    "$STREAMBENCH" produce --topic "$t" --acks all --records 200000 --max-in-flight 1 \
        --batch-size 1048576 --max-request-size 1048576 --linger 0ms
    echo "== $t: end to end at 20,000 records/s (acks=all, linger 0)"
    "$STREAMBENCH" e2e --topic "$t" --acks all --rate 20000 --duration 10s --warmup 2s \
        --linger 0ms
done

now_ms() { date +%s%3N; }
leader_of() {  # the leader of rf3's partition 0 as broker $1's metadata says, or "none"
    "$STREAMCTL" --bootstrap "127.0.0.1:$((19091 + $1))" topic list -o json 2>/dev/null |
        python3 -c 'import json,sys; t=[t for t in json.load(sys.stdin) if t["name"]=="rf3"][0]; p=t["partitions"][0]; print(p["leader"] if p["leader"] is not None else "none")' 2>/dev/null ||
        echo none
}
in_sync() {  # whether rf3's partition 0 has all three in its ISR
    "$STREAMCTL" topic list -o json 2>/dev/null |
        python3 -c 'import json,sys; t=[t for t in json.load(sys.stdin) if t["name"]=="rf3"][0]; sys.exit(0 if len(t["partitions"][0]["isr"])==3 else 1)' 2>/dev/null
}
failover() {  # $1: the signal (KILL or TERM)
    local sig="$1" moved=() acked=() consumed=() r old now t0 t1 t2 survivor p_ack p_read p_failed
    echo "== partition failover: kill -$sig the leader of rf3/0"
    for r in $(seq 1 "$rounds"); do
        old="$(leader_of 1)"
        [ "$old" = none ] && old="$(leader_of 2)"
        [ "$old" = none ] && { echo "round $r: no leader found"; continue; }
        survivor=$(( old % 3 + 1 ))
        "$STREAMBENCH" probe --topic rf3 --acks all --rate 200 --duration 9s --gap 50ms \
            --json > "$dir/probe.json" 2>"$dir/probe.err" &
        local probe=$!
        sleep 3
        t0=$(now_ms)
        kill -"$sig" "$(cat "$dir/broker-$old.pid")"
        while true; do
            now="$(leader_of "$survivor")"
            if [ "$now" != none ] && [ "$now" != "$old" ]; then break; fi
            sleep 0.02
        done
        t1=$(now_ms)
        wait "$probe" || { echo "round $r: probe failed: $(cat "$dir/probe.err")"; }
        read -r p_ack p_read p_failed < <(python3 - "$t0" "$dir/probe.json" <<'PY'
import json, sys
t0 = int(sys.argv[1]); r = json.load(open(sys.argv[2]))
def outage(gaps, last):
    for g in gaps:
        if g["from_ms"] <= t0 + 50 and g["to_ms"] >= t0:
            return g["to_ms"] - t0
    if last is None or last < t0:
        return -1  # nothing after the kill within the probe
    return 0  # no silence over 50 ms around the kill
print(outage(r["ack_gaps"], r["last_ack_ms"]), outage(r["receive_gaps"], r["last_receive_ms"]), r["failed"])
PY
        )
        acked+=("$p_ack"); consumed+=("$p_read")
        while kill -0 "$(cat "$dir/broker-$old.pid")" 2>/dev/null; do sleep 0.05; done
        bash deploy/local-cluster.sh start >/dev/null
        until in_sync; do sleep 0.2; done
        t2=$(now_ms)
        echo "round $r: broker $old $sig; broker $now leads after $((t1 - t0)) ms; first acks=all produce acknowledged ${p_ack} ms and first record consumed ${p_read} ms after the kill (${p_failed} produces failed); broker $old back in sync $((t2 - t1)) ms after that"
        moved+=($((t1 - t0)))
    done
    summary() {  # $1: what, then the values
        local what="$1"; shift
        printf '%s\n' "$@" | sort -n | awk -v s="$sig" -v w="$what" '{a[NR]=$1} END {if (NR) printf "kill -%s: %s after median %d ms, worst %d ms over %d rounds\n", s, w, a[int((NR+1)/2)], a[NR], NR}'
    }
    summary "leader moved" "${moved[@]}"
    summary "first acks=all produce acknowledged" "${acked[@]}"
    summary "first record consumed" "${consumed[@]}"
}
failover KILL
failover TERM
