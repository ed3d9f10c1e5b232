mod common;
use common::*;
use quiver_engine::{Error, FlushPolicy, LogConfig, PartitionLog};
use quiver_proto::{Offset, TimestampMs};

#[test]
fn append_read_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p0");
    run(tmp.path(), move || async move {
        let log = PartitionLog::open(&dir, small_config()).await.unwrap();
        assert_eq!(log.end_offset(), Offset(0));
        let mut expect = Vec::new();
        for i in 0..100u64 {
            let b = batch(
                1 + (i % 7) as u32,
                100 + (i as usize * 13) % 900,
                i,
                1000 + i as i64,
            );
            let info = log.append(std::slice::from_ref(&b), None).await.unwrap();
            assert_eq!(
                info.base_offset.0,
                expect
                    .iter()
                    .map(|(_, n, _): &(u64, u32, Vec<u8>)| *n as u64)
                    .sum::<u64>()
            );
            expect.push((
                info.base_offset.0,
                b.info().record_count,
                b.bytes()[8..].to_vec(),
            ));
        }
        assert!(log.segment_count() > 1, "small segments roll");
        assert_eq!(log.durable_end(), log.end_offset());
        assert_eq!(read_all(&log, 0).await, expect);
        // Reading from the middle of a batch returns that whole batch first.
        let (base, n, _) = expect[50].clone();
        if n > 1 {
            let got = batches(&log.read(Offset(base + 1), 1).await.unwrap());
            assert_eq!(got[0].0, base);
            assert_eq!(got.len(), 1, "max_bytes 1 still returns one whole batch");
        }
        let end = log.end_offset();
        assert!(log.read(end, 100).await.unwrap().is_empty());
        match log.read(end.plus(1), 100).await {
            Err(Error::OffsetOutOfRange { start, end: e, .. }) => {
                assert_eq!((start, e), (Offset(0), end));
            }
            other => panic!("{other:?}"),
        }
        log.close().await.unwrap();
        assert!(matches!(log.read(Offset(0), 10).await, Err(Error::Closed)));
        let log = PartitionLog::open(&dir, small_config()).await.unwrap();
        assert_eq!(log.end_offset(), end);
        assert_eq!(read_all(&log, 0).await, expect);
        assert!(
            log.verify().await.unwrap().is_empty(),
            "a healthy log scrubs clean"
        );
        // Appends continue at the old end after a reopen.
        let info = log.append(&[batch(3, 10, 999, 5000)], None).await.unwrap();
        assert_eq!(info.base_offset, end);
        log.close().await.unwrap();
    });
}

#[test]
fn offset_for_timestamp_finds_first_record_at_or_after() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    run(tmp.path(), move || async move {
        let log = PartitionLog::open(&dir, small_config()).await.unwrap();
        // Batch i holds 5 records with timestamps 1000*i .. 1000*i+4; offsets 5i .. 5i+4.
        for i in 0..60u64 {
            log.append(&[batch(5, 600, i, 1000 * i as i64)], None)
                .await
                .unwrap();
        }
        assert!(log.segment_count() > 2);
        let cases = [
            (i64::MIN, Some(0)),
            (0, Some(0)),
            (3, Some(3)),
            (5, Some(5)), // after batch 0's last record (ts 4) comes batch 1 at ts 1000
            (1000, Some(5)),
            (1002, Some(7)),
            (30_001, Some(151)),
            (59_004, Some(299)),
            (59_005, None),
        ];
        for (ts, want) in cases {
            let got = log.offset_for_timestamp(TimestampMs(ts)).await.unwrap();
            assert_eq!(got.map(|o| o.0), want, "ts {ts}");
        }
        log.close().await.unwrap();
        // The same answers after a reopen (closed segments' time indexes from disk).
        let log = PartitionLog::open(&dir, small_config()).await.unwrap();
        for (ts, want) in cases {
            let got = log.offset_for_timestamp(TimestampMs(ts)).await.unwrap();
            assert_eq!(got.map(|o| o.0), want, "ts {ts} after reopen");
        }
    });
}

#[test]
fn retention_by_size_and_time_deletes_whole_closed_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    run(tmp.path(), move || async move {
        let cfg = LogConfig {
            retention_ms: -1,
            ..small_config()
        };
        let log = PartitionLog::open(&dir, cfg.clone()).await.unwrap();
        for i in 0..100u64 {
            log.append(&[batch(4, 500, i, 1000 * i as i64)], None)
                .await
                .unwrap();
        }
        let segs = log.segment_bases();
        assert!(segs.len() >= 4, "{segs:?}");
        let end = log.end_offset();
        // Forever: nothing goes.
        let r = log
            .apply_retention(TimestampMs(i64::MAX / 2))
            .await
            .unwrap();
        assert!(r.deleted_segments.is_empty());
        // By time: segments whose max timestamp is older than now - retention.
        let cutoff_seg = segs[2];
        let seg2_first_batch = cutoff_seg.0 / 4;
        log.set_config(LogConfig {
            retention_ms: 10,
            ..cfg.clone()
        })
        .unwrap();
        let now = 1000 * seg2_first_batch as i64 + 10;
        let r = log.apply_retention(TimestampMs(now)).await.unwrap();
        assert_eq!(r.deleted_segments, segs[..2].to_vec());
        assert_eq!(log.start_offset(), segs[2]);
        assert_eq!(r.start_offset, segs[2]);
        match log.read(Offset(0), 100).await {
            Err(Error::OffsetOutOfRange { start, .. }) => assert_eq!(start, segs[2]),
            other => panic!("{other:?}"),
        }
        // By size: keep at most ~one segment beyond the active; never the active one.
        log.set_config(LogConfig {
            retention_ms: -1,
            retention_bytes: 0,
            ..cfg.clone()
        })
        .unwrap();
        let r = log.apply_retention(TimestampMs(0)).await.unwrap();
        assert_eq!(log.segment_count(), 1, "{r:?}");
        assert_eq!(log.start_offset(), *segs.last().unwrap());
        assert_eq!(log.end_offset(), end, "offsets are never reused");
        // The deleted segments' files are out of the log's names at once, and gone soon after
        // (the deleter thread frees them, paced).
        let live = |names: &[String]| {
            names
                .iter()
                .filter(|n| !n.ends_with(".deleted"))
                .cloned()
                .collect::<Vec<_>>()
        };
        let last = format!("{:020}", segs.last().unwrap().0);
        assert!(
            live(&file_names(&dir)).iter().all(|n| n.starts_with(&last)),
            "{:?}",
            file_names(&dir)
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while file_names(&dir).len() != live(&file_names(&dir)).len() {
            assert!(
                std::time::Instant::now() < deadline,
                "still there: {:?}",
                file_names(&dir)
            );
            glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
        }
        // Reopen: the start stays, and new appends continue at the end.
        log.close().await.unwrap();
        let log = PartitionLog::open(&dir, cfg).await.unwrap();
        assert_eq!(log.start_offset(), *segs.last().unwrap());
        assert_eq!(
            log.append(&[batch(1, 1, 1, 1)], None)
                .await
                .unwrap()
                .base_offset,
            end
        );
    });
}

#[test]
fn truncate_cuts_whole_batches_across_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    run(tmp.path(), move || async move {
        let log = PartitionLog::open(&dir, small_config()).await.unwrap();
        for i in 0..80u64 {
            log.append(&[batch(10, 100, i, i as i64)], None)
                .await
                .unwrap();
        }
        let before = read_all(&log, 0).await;
        // Inside the active segment, mid-batch: the log ends at that batch's base.
        assert_eq!(log.truncate(Offset(795)).await.unwrap(), Offset(790));
        assert_eq!(log.end_offset(), Offset(790));
        // At or past the end: nothing happens.
        assert_eq!(log.truncate(Offset(5000)).await.unwrap(), Offset(790));
        // Into an older segment: later segments go, that one becomes active.
        let segs_before = log.segment_count();
        assert_eq!(log.truncate(Offset(203)).await.unwrap(), Offset(200));
        assert!(log.segment_count() < segs_before);
        let after = read_all(&log, 0).await;
        assert_eq!(after, before[..20].to_vec());
        // Appends reuse the truncated offsets (replication's case) and survive a reopen.
        let info = log.append(&[batch(10, 100, 999, 0)], None).await.unwrap();
        assert_eq!(info.base_offset, Offset(200));
        log.close().await.unwrap();
        let log = PartitionLog::open(&dir, small_config()).await.unwrap();
        assert_eq!(log.end_offset(), Offset(210));
        let got = read_all(&log, 0).await;
        assert_eq!(got[..20].to_vec(), before[..20].to_vec());
        assert_eq!(got.len(), 21);
        // Below the start is out of range.
        log.set_config(LogConfig {
            retention_bytes: 0,
            ..small_config()
        })
        .unwrap();
        log.roll().await.unwrap();
        log.apply_retention(TimestampMs(0)).await.unwrap();
        assert!(matches!(
            log.truncate(Offset(0)).await,
            Err(Error::OffsetOutOfRange { .. })
        ));
    });
}

#[test]
fn concurrent_appends_share_group_commits_and_wake_readers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    run(tmp.path(), move || async move {
        let log = std::rc::Rc::new(
            PartitionLog::open(&dir, LogConfig::default())
                .await
                .unwrap(),
        );
        // A long-poll reader waiting beyond the end is woken by an append, not by polling.
        let waiter = {
            let log = log.clone();
            glommio::spawn_local(async move {
                log.wait_for_data(Offset(0)).await;
                log.read(Offset(0), 1 << 20).await.unwrap()
            })
        };
        // A waiter that is dropped (timed out) leaves nothing behind.
        let timed_out = glommio::timer::timeout(std::time::Duration::from_millis(5), async {
            log.wait_for_data(Offset(1_000_000)).await;
            Ok(())
        })
        .await;
        assert!(timed_out.is_err());
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let log = log.clone();
            tasks.push(glommio::spawn_local(async move {
                let mut got = Vec::new();
                for i in 0..20u64 {
                    let info = log
                        .append(&[batch(3, 50, t * 100 + i, 0)], None)
                        .await
                        .unwrap();
                    assert!(
                        log.durable_end() >= info.next_offset,
                        "acked before durable"
                    );
                    got.push(info.base_offset.0);
                }
                got
            }));
        }
        let mut all: Vec<u64> = Vec::new();
        for t in tasks {
            all.extend(t.await);
        }
        all.sort();
        assert_eq!(
            all,
            (0..160).map(|i| i * 3).collect::<Vec<_>>(),
            "dense, no overlap"
        );
        assert!(!waiter.await.is_empty());
        let all_read = read_all(&log, 0).await;
        assert_eq!(all_read.len(), 160);
    });
}

#[test]
fn interval_flush_policy_syncs_within_the_interval() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    run(tmp.path(), move || async move {
        let cfg = LogConfig {
            flush: FlushPolicy::IntervalMs(30),
            ..LogConfig::default()
        };
        let log = PartitionLog::open(&dir, cfg).await.unwrap();
        log.append(&[batch(2, 10, 1, 0)], None).await.unwrap(); // first write may sync at once
        let info = log.append(&[batch(2, 10, 2, 0)], None).await.unwrap();
        // Acknowledged once written: readable at once, durable within the interval.
        assert!(log.readable_end() >= info.next_offset);
        let t = std::time::Instant::now();
        while log.durable_end() < info.next_offset {
            assert!(
                t.elapsed() < std::time::Duration::from_secs(2),
                "never synced"
            );
            glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
        }
        log.close().await.unwrap();
    });
}

#[test]
fn segment_ms_rolls_and_delete_removes_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    let dir2 = dir.clone();
    run(tmp.path(), move || async move {
        let cfg = LogConfig {
            segment_ms: 20,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(&dir, cfg).await.unwrap();
        log.append(&[batch(1, 10, 1, 0)], None).await.unwrap();
        glommio::timer::sleep(std::time::Duration::from_millis(30)).await;
        log.append(&[batch(1, 10, 2, 0)], None).await.unwrap();
        assert_eq!(log.segment_bases(), vec![Offset(0), Offset(1)]);
        assert!(
            log.roll().await.unwrap(),
            "the active segment holds a batch"
        );
        assert_eq!(log.segment_count(), 3);
        assert!(
            !log.roll().await.unwrap(),
            "an empty active segment does not roll"
        );
        assert_eq!(log.segment_count(), 3);
        assert!(log
            .set_config(LogConfig {
                segment_bytes: 1,
                ..LogConfig::default()
            })
            .is_err());
        log.delete().await.unwrap();
        assert!(matches!(
            log.append(&[batch(1, 1, 1, 1)], None).await,
            Err(Error::Closed)
        ));
    });
    // Gone from its place at once; freed (paced, by the deleter thread) soon after.
    assert!(!dir2.exists());
    let trash = tmp.path().join("p.deleted");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while trash.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{trash:?} still there"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn tailing_reader_sees_only_whole_valid_batches_while_the_tail_block_is_rewritten() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    run(tmp.path(), move || async move {
        let log = std::rc::Rc::new(PartitionLog::open(&dir, small_config()).await.unwrap());
        let writer = {
            let log = log.clone();
            glommio::spawn_local(async move {
                // Small batches, so most appends rewrite the same partial 4 KiB block.
                for i in 0..300u64 {
                    log.append(
                        &[batch(1 + (i % 3) as u32, 10 + (i as usize % 90), i, 0)],
                        None,
                    )
                    .await
                    .unwrap();
                }
            })
        };
        // A consumer tailing the log with long polls, as a fetch would.
        let mut next = 0u64;
        let mut seen = 0;
        while seen < 300 {
            log.wait_for_data(Offset(next)).await;
            let bytes = log.read(Offset(next), 2048).await.unwrap();
            for (base, n, _) in batches(&bytes) {
                assert_eq!(base, next, "dense");
                next = base + n as u64;
                seen += 1;
            }
        }
        writer.await;
        assert_eq!(next, log.end_offset().0);
    });
}

fn file_names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn files_left_by_a_crash_while_deleting_segments_are_removed_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    run(tmp.path(), move || async move {
        let log = PartitionLog::open(&dir, small_config()).await.unwrap();
        for i in 0..100u64 {
            log.append(&[batch(4, 500, i, 1000 * i as i64)], None)
                .await
                .unwrap();
        }
        let segs = log.segment_bases();
        assert!(segs.len() >= 3, "{segs:?}");
        let expect = read_all(&log, 0).await;
        log.close().await.unwrap();
        let before = file_names(&dir);
        // What segment deletion leaves when the process dies between its renames and the
        // deleter: renamed files of a segment the log no longer has, and renamed files beside a
        // live segment of the same base (deleted by a truncation, then written again).
        let gone = format!("{:020}", 999_999_999u64);
        let strays = [
            format!("{gone}.log.deleted"),
            format!("{gone}.index.deleted"),
            format!("{:020}.log.deleted", segs[1].0),
            format!("{:020}.timeindex.deleted", segs[1].0),
        ];
        for s in &strays {
            std::fs::write(dir.join(s), vec![7u8; 10_000]).unwrap();
        }
        let log = PartitionLog::open(&dir, small_config()).await.unwrap();
        assert_eq!(file_names(&dir), before);
        assert_eq!(log.segment_bases(), segs);
        assert_eq!(read_all(&log, 0).await, expect);
    });
}

#[test]
fn bytes_after_an_offset_measure_a_followers_lag() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    run(tmp.path(), move || async move {
        let log = PartitionLog::open(&dir, small_config()).await.unwrap();
        // Batch i: 4 records of about 500 bytes in all; offsets 4i .. 4i+3.
        let mut sizes = Vec::new();
        for i in 0..80u64 {
            let b = batch(4, 500, i, 1000 + i as i64);
            sizes.push(b.bytes().len() as u64);
            log.append(&[b], None).await.unwrap();
        }
        assert!(log.segment_count() > 2, "small segments roll");
        let end = log.end_offset();
        assert_eq!(log.bytes_after(end), 0);
        assert_eq!(log.bytes_after(end.plus(10)), 0);
        assert_eq!(log.bytes_after(Offset(0)), log.size_bytes());
        let interval = u64::from(small_config().index_interval_bytes);
        let seg = log.segment_bases().last().unwrap().0;
        for from in [0u64, 37, 100, seg, end.0 - 8, end.0 - 1] {
            // What a follower at `from` still has to copy: the batches from the one holding it.
            let exact: u64 = sizes[(from / 4) as usize..].iter().sum();
            let got = log.bytes_after(Offset(from));
            if from >= seg {
                assert!(
                    got >= exact && got <= exact + interval + 600,
                    "from {from}: {got} vs {exact} (active segment: one index interval)"
                );
            } else {
                let size = log.size_bytes();
                assert!(got <= size && got > 0, "from {from}: {got}");
                // Proportional within one older segment: off by at most one segment's bytes.
                let slack = small_config().segment_bytes + 600;
                assert!(
                    got.abs_diff(exact) <= slack,
                    "from {from}: {got} vs {exact}"
                );
            }
        }
        let mut last = u64::MAX;
        for from in 0..end.0 {
            let got = log.bytes_after(Offset(from));
            assert!(got <= last, "never grows as the offset grows ({from})");
            last = got;
        }
        log.close().await.unwrap();
    });
}
