//! Segment recovery from arbitrary bytes: a log directory whose files (segment 0's `.log`,
//! `.index` and `.timeindex`, optionally a second segment and a producer snapshot) come from
//! the input is opened with `PartitionLog::open` on a glommio executor, read from its start to
//! its readable end, appended to, closed and reopened. Open may fail, never panic; what it
//! serves validates; an append lands at the end, above anything served, and reads back as
//! written. Input layout and checks: `engine/tests/fuzz_support/checks.rs` (`RecoveryCase`,
//! `check_recovery`), shared with the cheap test `engine/tests/fuzz_recovery.rs`.
//!
//! Each input costs real file I/O (io_uring, O_DIRECT, fdatasyncs): a few hundred inputs a
//! second at best, so scripts/fuzz.sh gives it a small input size and its share of the time.
//! The directory must be on a file system with O_DIRECT (not tmpfs): `$QUIVER_FUZZ_TMPDIR`,
//! else the system's temporary directory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;

#[allow(dead_code)]
#[path = "../../engine/tests/fuzz_support/checks.rs"]
mod checks;

struct Harness {
    executor: glommio::LocalExecutor,
    root: PathBuf,
}

thread_local! {
    /// One executor for every input: making one per input costs an io_uring setup each time.
    static HARNESS: Harness = {
        let root = std::env::var_os("QUIVER_FUZZ_TMPDIR")
            .map_or_else(std::env::temp_dir, PathBuf::from)
            .join(format!("segment_recovery-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        let executor = glommio::LocalExecutorBuilder::default().make().unwrap();
        let probe = root.clone();
        executor.run(async move { quiver_engine::init_io_probe(&probe).await.unwrap() });
        Harness { executor, root }
    };
}

fuzz_target!(|data: &[u8]| {
    let case = checks::RecoveryCase::decode(data);
    HARNESS.with(|h| {
        let dir = checks::fresh_dir(&h.root, "case");
        h.executor
            .run(async { checks::check_recovery(&dir, &case).await });
        let _ = std::fs::remove_dir_all(&dir);
    });
});
