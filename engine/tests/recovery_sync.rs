//! What open makes durable (its own test binary: it reads the process's sync counters, which
//! other tests running at the same time would move).
//!
//! After a crash, bytes written but not yet fdatasynced may be readable and then lost to a power
//! failure; recovery serves them (and answers a retried batch found among them as written) only
//! after it has fdatasynced the tail. A clean close already did, and costs no sync at open. A new
//! partition directory, and its parents, are synced into their parents before anything is
//! appended to the log.
mod common;
use common::*;
use quiver_engine::{sync_counts, LogConfig, PartitionLog};
use quiver_proto::Offset;

#[test]
fn recovery_fdatasyncs_the_tail_before_serving_it_and_new_directories_are_synced() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("topics").join("t.0123").join("0");
    run(tmp.path(), move || async move {
        let before = sync_counts();
        let log = PartitionLog::open(&d, LogConfig::default()).await.unwrap();
        let opened = sync_counts();
        // topics/, t.0123/ and 0/ were created: each synced in its parent; plus the new log's
        // own directory once its files exist.
        assert!(
            opened.dirs - before.dirs >= 4,
            "{} directory syncs for three new directories",
            opened.dirs - before.dirs
        );
        log.append(&[batch(3, 100, 1, 1)], None).await.unwrap();
        drop(log); // a crash

        let before = sync_counts();
        let log = reopen(&d, LogConfig::default()).await;
        let after = sync_counts();
        assert!(
            after.files > before.files,
            "open after a crash fdatasyncs the recovered tail"
        );
        assert_eq!(log.durable_end(), Offset(3));
        log.close().await.unwrap();

        let before = sync_counts();
        let log = PartitionLog::open(&d, LogConfig::default()).await.unwrap();
        let after = sync_counts();
        assert_eq!(
            after.files, before.files,
            "after a clean close there is nothing to sync"
        );
        assert_eq!(log.durable_end(), Offset(3));
        let before = sync_counts();
        log.close().await.unwrap();
        assert_eq!(
            sync_counts(),
            before,
            "a log untouched since a clean close is closed without a sync"
        );

        // Written again, its close seals it (the log and both indexes fdatasynced), and what
        // it wrote reads back after the next open.
        let log = PartitionLog::open(&d, LogConfig::default()).await.unwrap();
        log.append(&[batch(2, 100, 2, 2)], None).await.unwrap();
        let before = sync_counts();
        log.close().await.unwrap();
        assert!(
            sync_counts().files >= before.files + 3,
            "a written log is sealed at close"
        );
        let log = PartitionLog::open(&d, LogConfig::default()).await.unwrap();
        assert_eq!(log.durable_end(), Offset(5));
        assert_eq!(read_all(&log, 0).await.len(), 2);
        log.close().await.unwrap();

        // A new, empty log owes nothing at close either.
        let e = d.with_file_name("1");
        let log = PartitionLog::open(&e, LogConfig::default()).await.unwrap();
        let before = sync_counts();
        log.close().await.unwrap();
        assert_eq!(
            sync_counts(),
            before,
            "an empty log is closed without a sync"
        );

        // Many new logs opened with their directory syncs deferred: none during the opens,
        // each directory (the new topic's parent once, each log's own) named once, and all
        // made by `DirSyncs::sync`.
        let topic = d.parent().unwrap().with_file_name("t.4567");
        let syncs = quiver_engine::DirSyncs::default();
        let before = sync_counts();
        let mut logs = Vec::new();
        for p in 0..10 {
            let log = PartitionLog::open_deferring_dir_syncs(
                topic.join(p.to_string()),
                LogConfig::default(),
                &syncs,
            )
            .await
            .unwrap();
            logs.push(log);
        }
        assert_eq!(sync_counts().dirs, before.dirs, "no sync while opening");
        assert_eq!(
            syncs.len(),
            12,
            "topics/ (for t.4567), t.4567/ (for its logs), 10 logs"
        );
        syncs.sync(4).await.unwrap();
        assert_eq!(sync_counts().dirs, before.dirs + 12);
        assert!(syncs.is_empty());
        for log in logs {
            log.append(&[batch(1, 10, 3, 3)], None).await.unwrap();
            log.close().await.unwrap();
        }
    });
}
