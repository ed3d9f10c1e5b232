//! O_DSYNC group commits (its own test binary: it reads the process's sync counters, which other
//! tests running at the same time would move).
mod common;
use common::*;
use quiver_engine::{sync_counts, FlushPolicy, LogConfig, PartitionLog};
use quiver_proto::Offset;

/// Under `FlushPolicy::Sync` a group commit is made durable by its own write: the log file is
/// written through an O_DSYNC descriptor into space preallocated ahead of it, and no fdatasync
/// follows. The preallocated tail reads as zeros: a crash leaves it, and recovery cuts it; a
/// clean close cuts it too. Under `IntervalMs` the log goes back to plain writes and fdatasyncs.
#[test]
fn a_sync_append_is_durable_by_its_own_write_into_preallocated_space() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("t.0001").join("0");
    run(tmp.path(), move || async move {
        let file = d.join(format!("{:020}.log", 0));
        let size = |p: &std::path::Path| std::fs::metadata(p).unwrap().len();
        let log = PartitionLog::open(&d, LogConfig::default()).await.unwrap();
        let mut len = 0u64;
        for i in 0..5u64 {
            let b = batch(4, 100, i, i as i64);
            len += b.len() as u64;
            let before = sync_counts();
            log.append(&[b], None).await.unwrap();
            let after = sync_counts();
            assert_eq!(after.files, before.files, "no fdatasync for append {i}");
            assert_eq!(
                after.dsync_writes,
                before.dsync_writes + 1,
                "append {i} was made durable by its write"
            );
        }
        assert_eq!(log.durable_end(), Offset(20));
        assert!(
            size(&file) >= len + 16 * 1024,
            "the file is preallocated ahead of the log: {} bytes for {len}",
            size(&file)
        );
        drop(log); // a crash

        let log = reopen(&d, LogConfig::default()).await;
        assert_eq!(log.durable_end(), Offset(20));
        assert_eq!(read_all(&log, 0).await.len(), 5);
        assert_eq!(size(&file), len, "recovery cut the preallocated tail");

        // Interval flushing writes through a plain descriptor and fdatasyncs later.
        let interval = LogConfig {
            flush: FlushPolicy::IntervalMs(1),
            ..LogConfig::default()
        };
        log.set_config(interval).unwrap();
        let before = sync_counts();
        let b = batch(3, 100, 9, 9);
        len += b.len() as u64;
        log.append(&[b], None).await.unwrap();
        log.wait_for_durable(Offset(22)).await;
        let after = sync_counts();
        assert_eq!(after.dsync_writes, before.dsync_writes, "a plain write");
        assert!(after.files > before.files, "then an fdatasync");

        // And back: the next append is durable by its write again.
        log.set_config(LogConfig::default()).unwrap();
        let before = sync_counts();
        let b = batch(2, 100, 10, 10);
        len += b.len() as u64;
        log.append(&[b], None).await.unwrap();
        assert_eq!(sync_counts().dsync_writes, before.dsync_writes + 1);
        assert_eq!(sync_counts().files, before.files);
        log.close().await.unwrap();
        assert_eq!(size(&file), len, "a clean close cut the preallocated tail");

        let log = PartitionLog::open(&d, LogConfig::default()).await.unwrap();
        assert_eq!(log.durable_end(), Offset(25));
        assert_eq!(read_all(&log, 0).await.len(), 7);
        log.close().await.unwrap();
    });
}
