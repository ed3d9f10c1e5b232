#!/usr/bin/env bash
# Controller failover on a local three-broker cluster (deploy/local-cluster.sh): ROUNDS times,
# kill -9 the broker that is the active controller, then measure from the kill
#   elected:   until both survivors name the same new controller (streamctl cluster describe);
#   committed: until a topic creation sent to a survivor succeeds (streamctl topic create);
# then restart the killed broker and wait for it to be ready. Prints one line per round and the
# median and worst of each. Every probe is a streamctl process with a new QUIC connection
# (about 10-30 ms each), so the figures are upper bounds of the cluster's own times.
#
#   bash bench/failover.sh [ROUNDS]     # default 10; builds and uses target/release
#   (STREAMD and STREAMCTL, both set, name other binaries)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-10}"
export QUIVER_LOCAL_CLUSTER_DIR="${QUIVER_LOCAL_CLUSTER_DIR:-$(mktemp -d)/cluster}"
if [ -z "${STREAMD:-}" ] || [ -z "${STREAMCTL:-}" ]; then
    cargo build --release --quiet --bin streamd --bin streamctl
    export STREAMD="$PWD/target/release/streamd" STREAMCTL="$PWD/target/release/streamctl"
fi
ctl="$STREAMCTL"
dir="$QUIVER_LOCAL_CLUSTER_DIR"
ports=(19092 19093 19094)
export STREAMCTL_CA_FILE="$dir/ca/ca.pem"
trap 'bash deploy/local-cluster.sh stop >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
bash deploy/local-cluster.sh start >/dev/null

now_ms() { date +%s%3N; }
controller_via() {  # the controller broker $1's answer names, or "none"
    "$ctl" --bootstrap "127.0.0.1:${ports[$(($1 - 1))]}" cluster describe -o json 2>/dev/null |
        python3 -c 'import json,sys; c=json.load(sys.stdin).get("controller"); print(c if c is not None else "none")' 2>/dev/null ||
        echo none
}

elected_all=(); committed_all=()
for r in $(seq 1 "$rounds"); do
    leader=none
    until [ "$leader" != none ]; do leader="$(controller_via 1)"; done
    survivors=(); for i in 1 2 3; do [ "$i" != "$leader" ] && survivors+=("$i"); done
    victim="$(cat "$dir/broker-$leader.pid")"
    t0=$(now_ms)
    kill -KILL "$victim"
    while :; do
        a="$(controller_via "${survivors[0]}")"; b="$(controller_via "${survivors[1]}")"
        if [ "$a" = "$b" ] && [ "$a" != none ] && [ "$a" != "$leader" ]; then break; fi
    done
    t1=$(now_ms)
    # A creation that committed while its answer was lost (the controller died mid-call) is
    # refused as existing when tried again: that counts as committed too.
    until out="$("$ctl" --bootstrap "127.0.0.1:${ports[$((survivors[0] - 1))]}" topic create "failover-$r" --partitions 1 2>&1)" ||
        grep -q "already exists" <<< "$out"; do :; done
    t2=$(now_ms)
    echo "round $r: killed controller $leader; broker $a elected after $((t1 - t0)) ms; a change committed after $((t2 - t0)) ms"
    elected_all+=($((t1 - t0))); committed_all+=($((t2 - t0)))
    # The killed process may take a moment to be gone (its io_uring rings are torn down).
    for _ in $(seq 1 200); do kill -0 "$victim" 2>/dev/null || break; sleep 0.05; done
    bash deploy/local-cluster.sh start >/dev/null
done
summary() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "median %d ms, worst %d ms", a[int((NR+1)/2)], a[NR]}'; }
echo "elected:   $(summary "${elected_all[@]}")"
echo "committed: $(summary "${committed_all[@]}")"
