#!/usr/bin/env bash
# What security costs a single broker, three configurations in one run on this machine:
#
#   open:    no flags (User:ANONYMOUS, no authorizer): the baseline;
#   acls:    --authorizer true, and ACLs (not a super user) letting User:* do everything, so each
#            request goes through the ACL decision;
#   scram:   --sasl-mechanisms SCRAM-SHA-512 --allow-anonymous false --authorizer true, the
#            client logged in as a user with ACLs on the topic and the cluster.
#
# For each: streambench produce (1 KiB records, 2 partitions, acks=1, as fast as it goes) and
# streambench e2e at a fixed rate, acks=all, linger 0 (send to receipt, as bench/RESULTS.md's
# latency rows).
#
#   bash bench/security.sh [E2E_RATE]     # default 20000 records/s; builds target/release
set -euo pipefail
cd "$(dirname "$0")/.."
rate="${1:-20000}"
cargo build --release --quiet --bin streamd --bin streamctl --bin streambench
bin="$PWD/target/release"
work="$(mktemp -d)"
trap 'status=$?; pkill -f "$work" 2>/dev/null || true
      if [ $status -ne 0 ]; then for l in "$work"/*/*.log; do echo "== $l"; tail -30 "$l"; done; fi
      rm -rf "$work"' EXIT
echo "commit $(git rev-parse --short HEAD), $(nproc) cores, $(date -u +%FT%TZ), e2e rate $rate/s"

start() { # data dir, flags...
    local data="$1"; shift
    "$bin/streamd" --data-dir "$data" --metrics-listen "" "$@" >"$data.log" 2>&1 &
    for _ in $(seq 1 100); do grep -q "streamd ready" "$data.log" 2>/dev/null && return; sleep 0.1; done
    echo "streamd did not start:"; cat "$data.log"; exit 1
}
stop() { # data dir: stopped and deleted (a configuration's run writes gigabytes)
    pkill -TERM -f "streamd --data-dir $1" || true
    while pgrep -f "streamd --data-dir $1" >/dev/null; do sleep 0.1; done
    rm -rf "$1/topics"
}

run() { # name, client flags...
    local name="$1"; shift
    local p e
    p=$("$bin/streambench" produce "$@" --topic bench --partitions 2 --record-size 1024 --acks 1 --duration 10s --warmup 2s --json)
    e=$("$bin/streambench" e2e "$@" --topic bench-e2e --record-size 1024 --rate "$rate" --duration 10s --warmup 2s --acks all --linger 0ms --json)
    python3 - "$name" "$p" "$e" <<'PY'
import json, sys
name, p, e = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
for r in (p, e):
    if r["errors"]:
        sys.exit(f"{name}: {r['errors']} errors, first: {r['first_error']}")
lat = e["latency_ms"]
print(f"| {name} | {p['mb_per_sec']:.1f} | {lat['p50']:.2f} | {lat['p99']:.2f} | {lat['p99_9']:.2f} |")
PY
}

echo "| configuration | produce MB/s | e2e p50 ms | e2e p99 ms | e2e p99.9 ms |"
echo "|---|---|---|---|---|"
ca() { echo "--ca-file $1/tls/ca.pem"; }
ctl() { local data="$1"; shift; "$bin/streamctl" $(ca "$data") "$@" >/dev/null; }

d="$work/open/data"; mkdir -p "$d"; start "$d"
run open $(ca "$d")
stop "$d"

# ACLs (not a super user) let everyone do everything: made on a first start as a super user.
d="$work/acls/data"; mkdir -p "$d"; start "$d" --authorizer true --super-users User:ANONYMOUS
ctl "$d" acl add --allow-principal 'User:*' --operation All --topic '*'
ctl "$d" acl add --allow-principal 'User:*' --operation All --group '*'
ctl "$d" acl add --allow-principal 'User:*' --operation All --cluster
stop "$d"; start "$d" --authorizer true
run acls $(ca "$d")
stop "$d"

# Users are made while anonymous access is on (README, "Security"), then it is turned off.
d="$work/scram/data"; mkdir -p "$d"; start "$d" --sasl-mechanisms SCRAM-SHA-512
printf 'bench-secret\n' >"$work/bench.pw"; printf 'admin-secret\n' >"$work/admin.pw"
ctl "$d" user create bench --new-password-file "$work/bench.pw"
ctl "$d" user create admin --new-password-file "$work/admin.pw"
stop "$d"
start "$d" --sasl-mechanisms SCRAM-SHA-512 --allow-anonymous false --authorizer true --super-users User:admin
admin="--user admin --password-file $work/admin.pw"
ctl "$d" $admin acl add --allow-principal User:bench --operation All --topic bench
ctl "$d" $admin acl add --allow-principal User:bench --operation All --topic bench-e2e
ctl "$d" $admin acl add --allow-principal User:bench --operation All --cluster
run scram $(ca "$d") --user bench --password-file "$work/bench.pw"
stop "$d"
