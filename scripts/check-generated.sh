#!/usr/bin/env bash
# Fails if proto/src/generated/ is not exactly what scripts/gen-proto.sh makes from
# proto/schema/ (a schema edited without regenerating, or generated code edited by hand).
# CI runs this. Fix with: scripts/gen-proto.sh && git add proto/src/generated
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

"$root/scripts/gen-proto.sh" "$tmp/generated" >/dev/null
if ! diff -r -u "$root/proto/src/generated" "$tmp/generated"; then
    echo "error: proto/src/generated is out of date with proto/schema." >&2
    echo "Run scripts/gen-proto.sh and commit the result." >&2
    exit 1
fi
echo "proto/src/generated is up to date"
