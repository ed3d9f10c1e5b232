#!/usr/bin/env bash
# Runs every cargo-fuzz target of Quiver for a bounded time each, on the stable toolchain, and
# fails if one finds a crash (printing where the reproducer is). scripts/test.sh runs it with the
# defaults; by hand:
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET [TARGET...]]
#
# SECONDS_PER_TARGET defaults to $FUZZ_SECONDS, else 20. FUZZ_RELEASE=1 builds optimized targets
# (several minutes more to build, many times more inputs a second: for long runs by hand).
#
# How: cargo-fuzz (pinned, installed into ~/.cargo/bin if missing) needs unstable rustc flags;
# RUSTC_BOOTSTRAP=1 lets the stable compiler take them, so no nightly toolchain is needed. The
# targets are built unoptimized (with AddressSanitizer and overflow checks), which keeps the
# build to about two minutes on two cores. Seeds are not checked in: the `write_fuzz_seeds` tests
# write them (valid frames, batches, logs, index files, metadata files...) and each run starts
# from them alone with a fixed libFuzzer -seed, so runs repeat. The same checks run on every
# `cargo test` as the cheap tests (proto/tests/fuzz_cheap.rs, engine/tests/fuzz_recovery.rs,
# broker/tests/fuzz_records.rs): seeds plus a few thousand deterministic mutations.
#
# A crash leaves its input in target/fuzz/artifacts/<target>/; replay it with the command the
# failure prints (cargo fuzz run ... <target> <file>).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
seconds=${1:-${FUZZ_SECONDS:-20}}
if [ $# -gt 0 ]; then shift; fi
case "$seconds" in '' | *[!0-9]*)
    echo "fuzz.sh: SECONDS_PER_TARGET must be a whole number, not '$seconds'" >&2
    exit 2
    ;;
esac

# target  crate dir  libFuzzer seed  max input bytes
TARGETS="
batch_reader     proto/fuzz 101 4096
frame_decode     proto/fuzz 102 8192
request_decode   proto/fuzz 103 4096
index_files      fuzz       104 4096
offsets_records  fuzz       105 4096
metadata_json    fuzz       106 8192
segment_recovery fuzz       107 16384
"
if [ $# -gt 0 ]; then
    wanted=" $* "
    TARGETS=$(echo "$TARGETS" | while read -r name rest; do
        case "$wanted" in *" $name "*) echo "$name $rest" ;; esac
    done)
    [ -n "$TARGETS" ] || { echo "fuzz.sh: no target named: $*" >&2; exit 2; }
fi

start=$(date +%s)
work=target/fuzz
mkdir -p "$work"

# The stable toolchain by name where rustup manages toolchains (so a developer whose default is
# nightly still fuzzes on what CI has); plain cargo otherwise.
toolchain=()
if command -v rustup > /dev/null; then toolchain=(+stable); fi

if ! cargo fuzz --version 2> /dev/null | grep -q "cargo-fuzz $CARGO_FUZZ_VERSION\$"; then
    echo "installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo "${toolchain[@]}" install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

# Seeds, from the tests that also check them (already built by scripts/test.sh's test step).
rm -rf "$work/seeds"
QUIVER_FUZZ_SEEDS="$PWD/$work/seeds" cargo test --workspace --locked --quiet \
    --test fuzz_cheap --test fuzz_recovery --test fuzz_records \
    -- --ignored --exact write_fuzz_seeds > "$work/seeds.log" 2>&1 || {
    cat "$work/seeds.log"
    echo "fuzz.sh: writing the seeds failed" >&2
    exit 1
}

# The fuzz crates are outside the workspace; they resolve their dependencies from the
# workspace's Cargo.lock (the versions CI tests), plus libFuzzer's own.
for dir in proto/fuzz fuzz; do cp Cargo.lock "$dir/Cargo.lock"; done

profile=(--dev)
[ "${FUZZ_RELEASE:-0}" = 1 ] && profile=(--release)
# Line tables are enough for a crash's stack trace, and full debug info would double the build's
# size on disk (4 GB) and slow its linking.
fuzz() {
    RUSTC_BOOTSTRAP=1 CARGO_PROFILE_DEV_DEBUG=line-tables-only \
        cargo "${toolchain[@]}" fuzz "$1" --fuzz-dir "$2" "${profile[@]}" \
        --target-dir "$PWD/$work/build" "${@:3}"
}

for dir in $(echo "$TARGETS" | awk 'NF { print $2 }' | sort -u); do
    echo "building the fuzz targets of $dir"
    fuzz build "$dir"
done
build_done=$(date +%s)

# Direct I/O (segment_recovery) needs a real file system: not /tmp, which may be a tmpfs.
export QUIVER_FUZZ_TMPDIR="$PWD/$work/tmp"
rm -rf "$QUIVER_FUZZ_TMPDIR"
mkdir -p "$QUIVER_FUZZ_TMPDIR"

failed=()
summary=()
while read -r name dir seed max_len; do
    [ -n "$name" ] || continue
    corpus="$work/corpus/$name"
    artifacts="$work/artifacts/$name"
    rm -rf "$corpus"
    mkdir -p "$corpus" "$artifacts"
    cp "$work/seeds/$name"/* "$corpus/"
    log="$work/$name.log"
    echo "fuzzing $name for ${seconds}s (seed $seed)"
    t0=$(date +%s)
    if fuzz run "$dir" "$name" "$corpus" -- \
        -max_total_time="$seconds" -seed="$seed" -max_len="$max_len" -timeout=60 \
        -artifact_prefix="$PWD/$artifacts/" -print_final_stats=1 > "$log" 2>&1; then
        runs=$(grep -o '^stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
        summary+=("$name: ${runs:-?} inputs in $(($(date +%s) - t0))s, ok")
    else
        tail -n 60 "$log"
        found=$(grep -o "Test unit written to [^ ]*" "$log" | sed 's/Test unit written to //' || true)
        summary+=("$name: FAILED after $(($(date +%s) - t0))s; reproducer: ${found:-none written, see $log}")
        failed+=("$name")
        if [ -n "$found" ]; then
            echo "replay: RUSTC_BOOTSTRAP=1 cargo ${toolchain[*]} fuzz run --fuzz-dir $dir ${profile[*]} --target-dir $PWD/$work/build $name $found"
        fi
    fi
done <<< "$TARGETS"

echo
echo "fuzzing summary (builds: $((build_done - start))s, total: $(($(date +%s) - start))s):"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz.sh: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
    exit 1
fi
