//! The records of `__consumer_offsets` (`quiver_broker::group::records`) on arbitrary bytes: no
//! panic, and decode(encode(x)) == x for whatever decodes. Checks:
//! `broker/tests/fuzz_support/checks.rs`, shared with the cheap test
//! `broker/tests/fuzz_records.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../broker/tests/fuzz_support/checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::offsets_records(data));
