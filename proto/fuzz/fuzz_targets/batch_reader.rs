#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Filled in with the record-batch reader.
    let _ = data;
});
