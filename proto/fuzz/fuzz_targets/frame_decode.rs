#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Frame layer only for now; the API layer's body verification is added with the schema.
    let _ = quiver_proto::frame::decode(bytes::Bytes::copy_from_slice(data), 1 << 20);
});
