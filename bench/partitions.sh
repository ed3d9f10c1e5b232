#!/bin/bash
# Many partitions on one broker: create time, open files, RSS, produce and consume across all of
# them, and the start time after SIGTERM and after kill -9 (issue 31's figures).
# usage: bench/partitions.sh PARTITIONS [RECORDS] [DIR]   (one topic, at most 100,000 partitions)
#   e.g. bench/partitions.sh 15000 300000 /work/bench-partitions
# Uses target/release/{streamd,streamctl,streambench}, ports 19092 and 19644, the machine's own
# open-file limit (streamd raises its soft limit to the hard one), 1 KiB records.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PARTS=$1; RECORDS=${2:-300000}; D=${3:-/tmp/quiver-partitions-bench}
BIN="$ROOT/target/release"
rm -rf "$D"; mkdir -p "$D"
P=
trap 'if [ -n "$P" ]; then kill -9 "$P" 2>/dev/null || true; fi' EXIT
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
# One topic of all of them, in one CreateTopics request.
t0=$(date +%s.%N)
# A long request timeout: 100,000 new logs take longer than the default 30 s to open (with the
# default, the broker answers RequestTimedOut at 24 s and goes on; the topic serves once open).
ctl --request-timeout 600s topic create big --partitions "$PARTS" >/dev/null
echo "create $PARTS partitions (one topic): $(echo "$(date +%s.%N) - $t0" | bc) s"
state "$PARTS partitions, idle"
# Metadata of every partition: streamctl's describe (a Metadata request, then one line each).
t0=$(date +%s.%N)
lines=$(ctl topic describe big | wc -l)
echo "describe big (Metadata of $PARTS partitions, $lines lines printed): $(echo "$(date +%s.%N) - $t0" | bc) s"
# Produce and consume across all of the topic's partitions.
"$BIN/streambench" produce -b 127.0.0.1:19092 --ca-file "$D/tls/ca.pem" --topic big \
    --records "$RECORDS" --record-size 1024 2>&1 | grep -E "records/s|MB/s" | head -2
state "after produce"
"$BIN/streambench" consume -b 127.0.0.1:19092 --ca-file "$D/tls/ca.pem" --topic big \
    --records "$RECORDS" --record-size 1024 2>&1 | grep -E "records/s|MB/s" | head -2
state "after consume"
kill -0 "$P" || { echo "streamd is not running before SIGTERM; see $D.log" >&2; exit 1; }
t0=$(date +%s.%N); kill -TERM "$P"; status=0; wait "$P" || status=$?
echo "SIGTERM to exit: $(echo "$(date +%s.%N) - $t0" | bc) s (exit status $status)"
start "start after SIGTERM"
state "restarted"
kill -9 "$P"; wait "$P" || true
start "start after kill -9"
state "recovered"
kill -TERM "$P"; wait "$P" || true
rm -rf "$D"
echo "the broker's log: $D.log"
