#!/bin/bash
# Many partitions on one broker: create time, open files, RSS, produce and consume across all of
# them, and the start time after SIGTERM and after kill -9 (issue 31's figures).
# usage: bench/partitions.sh PARTITIONS [RECORDS] [DIR]   (topics of at most 10,000 partitions)
#   e.g. bench/partitions.sh 15000 300000 /work/bench-partitions
# Uses target/release/{streamd,streamctl,streambench}, ports 19092 and 19644, the machine's own
# open-file limit (streamd raises its soft limit to the hard one), 1 KiB records.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PARTS=$1; RECORDS=${2:-300000}; D=${3:-/tmp/quiver-partitions-bench}
BIN="$ROOT/target/release"
rm -rf "$D"; mkdir -p "$D"
P=
trap '[ -n "$P" ] && kill -9 "$P" 2>/dev/null; true' EXIT
start() {
    : > "$D.log"
    local t0; t0=$(date +%s.%N)
    "$BIN/streamd" --data-dir "$D" --listen 127.0.0.1:19092 --metrics-listen 127.0.0.1:19644 \
        >>"$D.log" 2>&1 &
    P=$!
    for _ in $(seq 60000); do
        if grep -q "streamd ready" "$D.log"; then
            echo "$1: ready after $(echo "$(date +%s.%N) - $t0" | bc) s"
            return
        fi
        sleep 0.01
    done
    echo "streamd did not start; see $D.log" >&2; exit 1
}
state() {
    echo "$1: $(ls /proc/"$P"/fd | wc -l) open files, RSS $(awk '/VmRSS/ {print $2, $3}' /proc/"$P"/status)"
}
ctl() { "$BIN/streamctl" -b 127.0.0.1:19092 --ca-file "$D/tls/ca.pem" "$@"; }

start "first start"
grep -o 'open-file limit.*' "$D.log" | head -1
state "empty"
# A topic holds at most 10,000 partitions (a request's bound): big0, big1, ... of 10,000 each.
t0=$(date +%s.%N)
left=$PARTS; i=0
while [ "$left" -gt 0 ]; do
    n=$(( left < 10000 ? left : 10000 ))
    ctl topic create "big$i" --partitions "$n" >/dev/null
    left=$(( left - n )); i=$(( i + 1 ))
done
echo "create $PARTS partitions ($i topics): $(echo "$(date +%s.%N) - $t0" | bc) s"
state "$PARTS partitions, idle"
# Produce and consume across the first topic's partitions (all of them up to 10,000).
"$BIN/streambench" produce -b 127.0.0.1:19092 --ca-file "$D/tls/ca.pem" --topic big0 \
    --records "$RECORDS" --record-size 1024 2>&1 | grep -E "records/s|MB/s" | head -2
state "after produce"
"$BIN/streambench" consume -b 127.0.0.1:19092 --ca-file "$D/tls/ca.pem" --topic big0 \
    --records "$RECORDS" --record-size 1024 2>&1 | grep -E "records/s|MB/s" | head -2
state "after consume"
t0=$(date +%s.%N); kill -TERM "$P"; wait "$P" || true
echo "SIGTERM to exit: $(echo "$(date +%s.%N) - $t0" | bc) s"
start "start after SIGTERM"
state "restarted"
kill -9 "$P"; wait "$P" || true
start "start after kill -9"
state "recovered"
kill -TERM "$P"; wait "$P" || true
rm -rf "$D" "$D.log"
