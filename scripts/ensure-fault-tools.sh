#!/usr/bin/env bash
# What the fault suite (streamfault) needs beyond a Rust toolchain, from Debian's packages:
# nftables (partitions and loss inside the brokers' network namespaces), iproute2 (namespaces,
# veth, bridge), e2fsprogs and mount (the loop-mounted ext4 of the disk-full fault), and a font for
# the picture's labels. Best effort: whatever cannot be installed, the suite reports as skipped.
set -uo pipefail
need=()
command -v nft >/dev/null || need+=(nftables)
command -v ip >/dev/null || need+=(iproute2)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v losetup >/dev/null || need+=(mount)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "fault suite: cannot install ${need[*]} (not root, or no apt-get); those faults will be skipped"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q "${need[@]}" >/dev/null 2>&1 \
  || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "${need[@]}" >/dev/null 2>&1; } \
  || echo "fault suite: installing ${need[*]} failed; those faults will be skipped"
exit 0
