//! `FileMetadataStore::open` on a data directory whose `meta/metadata.json` holds arbitrary bytes
//! (the first input byte can ask for the checksum header to be made right, so the bytes reach the
//! JSON parser): no panic, a damaged file is an error and never an empty or partial state, and a
//! store that opens takes a command and reopens to the same state. Checks:
//! `broker/tests/fuzz_support/checks.rs`, shared with the cheap test
//! `broker/tests/fuzz_records.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

#[allow(dead_code)]
#[path = "../../broker/tests/fuzz_support/checks.rs"]
mod checks;

/// The data directory each input is written to (made anew per input): under
/// `$QUIVER_FUZZ_TMPDIR` (scripts/fuzz.sh points it into the target directory), else the
/// system's temporary directory.
fn data_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root =
            std::env::var_os("QUIVER_FUZZ_TMPDIR").map_or_else(std::env::temp_dir, PathBuf::from);
        root.join(format!("metadata_json-{}", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    checks::metadata_json(data_dir(), &checks::metadata_file(data));
});
