#!/bin/bash
# Quiver across a 1,500-byte network path, beside loopback, same binaries, same run (issue 29).
#
# streamd runs in a network namespace this script makes, joined to the host by a veth pair with
# the path's MTU (GSO and GRO on, as a real NIC has them); streambench runs on the host and dials
# the broker's address inside (198.18.0.0/15, the benchmarking range). Then the same produce and
# consume against a streamd on loopback. For each path it prints throughput and the kernel's UDP
# counters on both sides (/proc/net/snmp of each namespace): bytes per datagram sent and received
# show how much GSO (UDP_SEGMENT) and GRO (UDP_GRO) batch. Everything made is torn down on exit.
#
# usage: bench/netpath.sh [RECORDS] [MTU]        (as root; default 1000000 records, MTU 1500)
# Uses target/release/{streamd,streambench}, ports 19092 and 19644, 1 KiB records, 2 partitions.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RECORDS=${1:-1000000}; MTU=${2:-1500}
BIN="$ROOT/target/release"
NS=quiver-netpath-$$; VH=qnh$$; VN=qnn$$
HOST_IP=198.18.7.1; BROKER_IP=198.18.7.2
D=$(mktemp -d /tmp/quiver-netpath.XXXX)
P=
cleanup() {
    if [ -n "$P" ]; then kill -9 "$P" 2>/dev/null || true; fi
    ip netns pids "$NS" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip link del "$VH" 2>/dev/null || true
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$D"
}
trap cleanup EXIT

for cmd in ip ethtool; do
    command -v "$cmd" >/dev/null || { echo "needs $cmd (apt-get install iproute2 ethtool)" >&2; exit 1; }
done

# The path: host end and broker end of one veth pair.
ip netns add "$NS"
ip link add "$VH" mtu "$MTU" type veth peer name "$VN" mtu "$MTU"
ip link set "$VN" netns "$NS"
ip addr add "$HOST_IP/24" dev "$VH"
ip -n "$NS" addr add "$BROKER_IP/24" dev "$VN"
ip link set "$VH" up
ip -n "$NS" link set lo up
ip -n "$NS" link set "$VN" up
# GRO on both ends (veth does GRO only when asked); GSO for UDP is on by default.
ethtool -K "$VH" gro on >/dev/null
ip netns exec "$NS" ethtool -K "$VN" gro on >/dev/null
echo "path: veth $VH <-> $VN (namespace $NS), MTU $MTU; host side offloads:"
ethtool -k "$VH" | grep -E "^(generic-receive-offload|tx-udp-segmentation|rx-udp-gro-forwarding|generic-segmentation-offload):" | sed 's/^/  /'

# Udp: InDatagrams and OutDatagrams of a namespace ("" for the host's).
udp_counts() {
    local run=()
    if [ -n "$1" ]; then run=(ip netns exec "$1"); fi
    "${run[@]}" awk '/^Udp:/ { if (!h) { for (i = 1; i <= NF; i++) n[$i] = i; h = 1 } else { print $n["InDatagrams"], $n["OutDatagrams"] } }' /proc/net/snmp
}

start() { # namespace ("" for the host's), listen address
    : > "$D/streamd.log"
    local run=()
    if [ -n "$1" ]; then run=(ip netns exec "$1"); fi
    "${run[@]}" "$BIN/streamd" --data-dir "$D/data" --listen "$2:19092" \
        --metrics-listen "$2:19644" >>"$D/streamd.log" 2>&1 &
    P=$!
    for _ in $(seq 3000); do
        if grep -q "streamd ready" "$D/streamd.log"; then return; fi
        sleep 0.01
    done
    echo "streamd did not start:" >&2; cat "$D/streamd.log" >&2; exit 1
}
stop() { kill -TERM "$P"; wait "$P" || true; P=; rm -rf "$D/data"; }

# One path: produce then consume RECORDS records, with the UDP counters of both sides.
measure() { # label, namespace of the broker, broker address
    local label=$1 ns=$2 addr=$3
    start "$ns" "$addr"
    local bench=("$BIN/streambench" -b "$addr:19092" --ca-file "$D/data/tls/ca.pem")
    for phase in produce consume; do
        local args=(--partitions 2 --record-size 1024 --records "$RECORDS")
        if [ "$phase" = produce ]; then args+=(--batch-size 1034864); fi
        read -r hin0 hout0 < <(udp_counts "")
        read -r bin0 bout0 < <(udp_counts "$ns")
        local out
        out=$("${bench[@]}" "$phase" "${args[@]}" 2>&1 | grep -E "MB/s" | head -1)
        read -r hin1 hout1 < <(udp_counts "")
        read -r bin1 bout1 < <(udp_counts "$ns")
        local mb
        mb=$(echo "$out" | grep -oE "[0-9.]+ MB in" | grep -oE "[0-9.]+")
        echo "$label $phase:$out"
        if [ -n "$ns" ]; then
            # The data's direction: produce sends from the host, consume from the broker.
            if [ "$phase" = produce ]; then
                echo "  datagrams: client sent $((hout1 - hout0)) ($(bpd "$mb" $((hout1 - hout0))) bytes each), broker received $((bin1 - bin0)) ($(bpd "$mb" $((bin1 - bin0))) each)"
            else
                echo "  datagrams: broker sent $((bout1 - bout0)) ($(bpd "$mb" $((bout1 - bout0))) bytes each), client received $((hin1 - hin0)) ($(bpd "$mb" $((hin1 - hin0))) each)"
            fi
        else
            echo "  datagrams (both ends on loopback): $((hout1 - hout0)) sent, $((hin1 - hin0)) received"
        fi
    done
    stop
}
# Bytes of payload per datagram: MB (decimal, from streambench) over a datagram count.
bpd() { if [ "$2" -gt 0 ]; then echo "$1 * 1000000 / $2" | bc; else echo "-"; fi; }

measure "veth MTU $MTU" "$NS" "$BROKER_IP"
measure "loopback" "" "127.0.0.1"
