#!/bin/bash
# Times a clean stop and the next start of streamd with a filled active segment.
# usage: bench/restart_time.sh STREAMD PARTITIONS RECORDS RECORD_SIZE LINGER [DIR]
#   e.g. bench/restart_time.sh target/release/streamd 2 3000000 100 0ms /work/bench-restart
# Fills a fresh data directory with streambench (16 KiB batches), sends SIGTERM (timed until
# exit), then starts streamd again on the same directory (timed until its `streamd ready` line).
# Needs target/release/streambench; uses ports 19092 and 19644.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$1; PARTS=$2; RECORDS=$3; SIZE=$4; LINGER=$5; D=${6:-/tmp/quiver-restart-bench}
rm -rf "$D"; mkdir -p "$D"
start() {
    "$BIN" --data-dir "$D" --listen 127.0.0.1:19092 --metrics-listen 127.0.0.1:19644 \
        --default-segment-bytes 1073741824 >"$D.log" 2>&1 &
    P=$!
    for _ in $(seq 6000); do grep -q "streamd ready" "$D.log" && return; sleep 0.01; done
    echo "streamd did not start; see $D.log" >&2; exit 1
}
start
"$ROOT/target/release/streambench" produce -b 127.0.0.1:19092 --ca-file "$D/tls/ca.pem" \
    --partitions "$PARTS" --records "$RECORDS" --record-size "$SIZE" --linger "$LINGER" \
    --batch-size 16384 2>&1 | grep -E "records/s"
t0=$(date +%s.%N); kill -TERM "$P"; wait "$P" || true; t1=$(date +%s.%N)
echo "data: $(du -sh "$D/topics" | cut -f1)"
t2=$(date +%s.%N); start; t3=$(date +%s.%N)
echo "stop $(echo "$t1 - $t0" | bc) s, start to ready $(echo "$t3 - $t2" | bc) s"
kill "$P"; wait "$P" || true
rm -rf "$D" "$D.log"
