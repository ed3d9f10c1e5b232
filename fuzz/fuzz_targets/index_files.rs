//! The sparse index parser (`engine/src/index.rs`, reached through `quiver_engine::fuzzing`) on
//! arbitrary `.index` and `.timeindex` files: no panic, parsed points strictly increasing and
//! within the log, lookups agreeing with a scan. Input layout and checks:
//! `engine/tests/fuzz_support/checks.rs` (`IndexCase`, `check_index`), shared with the cheap test
//! `engine/tests/fuzz_recovery.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../engine/tests/fuzz_support/checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::check_index(&checks::IndexCase::decode(data)));
