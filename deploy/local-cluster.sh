#!/usr/bin/env bash
# A three-broker Quiver cluster on this machine, for trying the cluster out:
#
#   bash deploy/local-cluster.sh start    # builds streamd (release) and starts brokers 1, 2, 3
#   bash deploy/local-cluster.sh status   # which are running, and their logs' last lines
#   bash deploy/local-cluster.sh stop     # SIGTERM to each, waits for them to exit
#
# Each broker has its own data directory (local-cluster/broker-N/data), QUIC port (19092,
# 19093, 19094 on 127.0.0.1), metrics port (19644, ...), and log (local-cluster/broker-N.log).
# All are voters of one controller quorum and share one development CA in local-cluster/ca, so
# they verify each other, and clients trust them all with local-cluster/ca/ca.pem:
#
#   STREAMCTL_BOOTSTRAP=127.0.0.1:19092 STREAMCTL_CA_FILE=local-cluster/ca/ca.pem streamctl cluster describe
#
# (the SDK reads QUIVER_BOOTSTRAP and QUIVER_CA_FILE the same way)
#
# QUIVER_LOCAL_CLUSTER_DIR moves the directory; STREAMD (a path) picks a binary already built;
# QUIVER_LOCAL_CLUSTER_PORT moves the ports (QUIC: it and the next two; metrics: 552 above).
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${QUIVER_LOCAL_CLUSTER_DIR:-local-cluster}"
base="${QUIVER_LOCAL_CLUSTER_PORT:-19092}"
ports=("$base" "$((base + 1))" "$((base + 2))")
voters="1@127.0.0.1:${ports[0]},2@127.0.0.1:${ports[1]},3@127.0.0.1:${ports[2]}"

# Whether the process in pid file $1 runs (a killed one that is still exiting does not).
running() {
    [ -f "$1" ] || return 1
    local pid state; pid="$(cat "$1")"
    state="$(ps -o stat= -p "$pid" 2>/dev/null || true)"
    [ -n "$state" ] && [ "${state#Z}" = "$state" ]
}

streamd_bin() {
    if [ -n "${STREAMD:-}" ]; then echo "$STREAMD"; return; fi
    cargo build --release --quiet --bin streamd >&2
    echo "$PWD/target/release/streamd"
}

start() {
    local bin; bin="$(streamd_bin)"
    mkdir -p "$dir/ca"
    for i in 1 2 3; do
        local b="$dir/broker-$i"
        if running "$b.pid"; then
            echo "broker $i already running (pid $(cat "$b.pid"))"; continue
        fi
        mkdir -p "$b"
        # All three start at once: none is ready before a majority of voters runs.
        "$bin" --broker-id "$i" --controller-voters "$voters" \
            --listen "127.0.0.1:${ports[$((i-1))]}" --metrics-listen "127.0.0.1:$((base + 551 + i))" \
            --data-dir "$b/data" --dev-ca-dir "$dir/ca" \
            > "$b.out" 2> "$b.log" < /dev/null &
        echo $! > "$b.pid"
    done
    for i in 1 2 3; do
        local b="$dir/broker-$i" waited=0
        until grep -q '^streamd ready' "$b.out" 2>/dev/null; do
            if ! running "$b.pid"; then
                echo "broker $i exited; its log:" >&2; tail -20 "$b.log" >&2; exit 1
            fi
            sleep 0.2; waited=$((waited + 1))
            if [ "$waited" -gt 300 ]; then echo "broker $i not ready after 60 s; see $b.log" >&2; exit 1; fi
        done
        echo "broker $i: $(cat "$b.out")"
    done
    echo "streamctl: STREAMCTL_BOOTSTRAP=127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]} STREAMCTL_CA_FILE=$dir/ca/ca.pem"
    echo "SDK:       QUIVER_BOOTSTRAP=127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]} QUIVER_CA_FILE=$dir/ca/ca.pem"
}

stop() {
    for i in 1 2 3; do
        local b="$dir/broker-$i"
        [ -f "$b.pid" ] || continue
        local pid; pid="$(cat "$b.pid")"
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid"
            # Until it has exited (an exited one may linger as a zombie until reaped).
            for _ in $(seq 1 150); do running "$b.pid" || break; sleep 0.1; done
            if running "$b.pid"; then echo "broker $i did not stop; SIGKILL" >&2; kill -KILL "$pid"; fi
            echo "broker $i stopped"
        fi
        rm -f "$b.pid"
    done
}

status() {
    for i in 1 2 3; do
        local b="$dir/broker-$i"
        if running "$b.pid"; then
            echo "broker $i: running (pid $(cat "$b.pid")), port ${ports[$((i-1))]}"
        else
            echo "broker $i: stopped"
        fi
    done
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
