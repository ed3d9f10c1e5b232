//! Every API's request decoder on arbitrary bodies: `AnyRequest::decode` and
//! `api::decode_request` for each of `ApiKey::ALL`, agreeing with each other and with the
//! verifier, at most one API accepting a body, and decode(encode(x)) == x for whatever decodes.
//! The checks live in `proto/tests/fuzz_support/checks.rs`, shared with the cheap test
//! `proto/tests/fuzz_cheap.rs`; seeds: `write_fuzz_seeds` there.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../tests/fuzz_support/checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::request_decode(data));
