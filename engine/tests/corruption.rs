//! Corruption tests (acceptance 3): damage segment and index files between runs and check what
//! the engine does when it opens and reads them.
mod common;
use common::*;
use quiver_engine::{Error, LogConfig, PartitionLog};
use quiver_proto::batch::ValidBatch;
use quiver_proto::Offset;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

fn seg(dir: &Path, base: u64, ext: &str) -> PathBuf {
    dir.join(format!("{base:020}.{ext}"))
}

fn flip(path: &Path, pos: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, pos).unwrap();
    b[0] ^= 0x40;
    f.write_all_at(&b, pos).unwrap();
    f.sync_all().unwrap();
}

/// Appends `n` batches one by one; returns them with their positions in one segment.
async fn fill(log: &PartitionLog, n: u64) -> Vec<(ValidBatch, u64)> {
    let mut out = Vec::new();
    let mut pos = 0;
    for i in 0..n {
        let b = batch(3, 300 + i as usize, i, i as i64);
        log.append(std::slice::from_ref(&b), None).await.unwrap();
        let len = b.len() as u64;
        out.push((b, pos));
        pos += len;
    }
    out
}

#[test]
fn flipped_byte_in_last_batch_is_cut_at_recovery() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    let d = dir.clone();
    run(tmp.path(), move || async move {
        let log = PartitionLog::open(&d, LogConfig::default()).await.unwrap();
        let bs = fill(&log, 20).await;
        drop(log); // no clean close: the tail stays zero-padded
        let (last, pos) = &bs[19];
        flip(&seg(&d, 0, "log"), pos + last.len() as u64 - 5);
        let log = reopen(&d, LogConfig::default()).await;
        assert_eq!(
            log.end_offset(),
            Offset(19 * 3),
            "the damaged last batch is cut"
        );
        let all = read_all(&log, 0).await;
        assert_eq!(all.len(), 19);
        for (got, (want, _)) in all.iter().zip(&bs) {
            assert_eq!(got.2, want.bytes()[8..].to_vec());
        }
        // The log goes on from the last good batch.
        let extra = batch(1, 1, 1, 1);
        let info = log
            .append(std::slice::from_ref(&extra), None)
            .await
            .unwrap();
        assert_eq!(info.base_offset, Offset(57));
        log.close().await.unwrap();
        // The new batch took the cut batch's place.
        let len = std::fs::metadata(seg(&d, 0, "log")).unwrap().len();
        assert_eq!(len, pos + extra.len() as u64);
    });
}

#[test]
fn segment_cut_mid_batch_recovers_to_last_whole_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    let d = dir.clone();
    run(tmp.path(), move || async move {
        let log = PartitionLog::open(&d, LogConfig::default()).await.unwrap();
        let bs = fill(&log, 30).await;
        log.close().await.unwrap();
        // Cut in the middle of batch 17 (and again inside a header, below).
        let (b17, pos17) = &bs[17];
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(seg(&d, 0, "log"))
            .unwrap();
        f.set_len(pos17 + b17.len() as u64 / 2).unwrap();
        let log = PartitionLog::open(&d, LogConfig::default()).await.unwrap();
        assert_eq!(log.end_offset(), Offset(17 * 3));
        assert_eq!(read_all(&log, 0).await.len(), 17);
        assert_eq!(
            std::fs::metadata(seg(&d, 0, "log")).unwrap().len(),
            *pos17,
            "torn tail cut"
        );
        log.close().await.unwrap();
        let (_, pos9) = &bs[9];
        f.set_len(pos9 + 10).unwrap();
        let log = PartitionLog::open(&d, LogConfig::default()).await.unwrap();
        assert_eq!(log.end_offset(), Offset(9 * 3));
        assert_eq!(read_all(&log, 0).await.len(), 9);
    });
}

#[test]
fn damaged_or_deleted_index_is_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    let d = dir.clone();
    run(tmp.path(), move || async move {
        let cfg = LogConfig {
            segment_bytes: 64 * 1024,
            index_interval_bytes: 1024,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(&d, cfg.clone()).await.unwrap();
        for i in 0..200u64 {
            log.append(&[batch(2, 500, i, 10 * i as i64)], None)
                .await
                .unwrap();
        }
        let bases = log.segment_bases();
        assert!(bases.len() >= 4);
        let before = read_all(&log, 0).await;
        let ts_answer = log
            .offset_for_timestamp(quiver_proto::TimestampMs(1234))
            .await
            .unwrap();
        log.close().await.unwrap();
        let index_of = |b: Offset| std::fs::read(seg(&d, b.0, "index")).unwrap();
        let good_closed_index = index_of(bases[1]);
        let good_active_index = index_of(*bases.last().unwrap());
        assert!(!good_closed_index.is_empty() && !good_active_index.is_empty());
        // Closed segment 0: both indexes deleted. Closed segment 1: offset index overwritten
        // with garbage. Closed segment 2: time index truncated. Active: garbage index.
        std::fs::remove_file(seg(&d, bases[0].0, "index")).unwrap();
        std::fs::remove_file(seg(&d, bases[0].0, "timeindex")).unwrap();
        std::fs::write(
            seg(&d, bases[1].0, "index"),
            vec![0x5a; good_closed_index.len()],
        )
        .unwrap();
        let t2 = seg(&d, bases[2].0, "timeindex");
        let l = std::fs::metadata(&t2).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&t2)
            .unwrap()
            .set_len(l - 5)
            .unwrap();
        let last = *bases.last().unwrap();
        std::fs::write(
            seg(&d, last.0, "index"),
            vec![0xa5; good_active_index.len()],
        )
        .unwrap();

        let log = PartitionLog::open(&d, cfg.clone()).await.unwrap();
        assert_eq!(
            read_all(&log, 0).await,
            before,
            "every batch still reads back"
        );
        for b in &bases {
            // Reads that start inside each segment find their batch through the index.
            let got = batches(&log.read(Offset(b.0 + 1), 1).await.unwrap());
            assert_eq!(got[0].0, b.0);
        }
        assert_eq!(
            log.offset_for_timestamp(quiver_proto::TimestampMs(1234))
                .await
                .unwrap(),
            ts_answer
        );
        log.close().await.unwrap();
        // The rebuilt files match what the engine wrote in the first place.
        assert!(seg(&d, bases[0].0, "index").exists() && seg(&d, bases[0].0, "timeindex").exists());
        assert_eq!(index_of(bases[1]), good_closed_index);
        assert_eq!(index_of(last), good_active_index);
    });
}

#[test]
fn flipped_byte_in_closed_segment_is_reported_not_served() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    let d = dir.clone();
    run(tmp.path(), move || async move {
        let log = PartitionLog::open(&d, LogConfig::default()).await.unwrap();
        let bs = fill(&log, 40).await;
        assert!(log.roll().await.unwrap());
        log.append(&[batch(1, 10, 99, 0)], None).await.unwrap();
        log.close().await.unwrap();
        // Damage batch 25 (offsets 75..=77) of the now-closed segment 0.
        let (b25, pos25) = &bs[25];
        flip(&seg(&d, 0, "log"), pos25 + b25.len() as u64 / 2);
        let log = PartitionLog::open(&d, LogConfig::default()).await.unwrap();
        assert_eq!(
            log.end_offset(),
            Offset(121),
            "a closed segment is not cut at open"
        );
        // A read that starts before it serves the good batches and stops short of it.
        let got = batches(&log.read(Offset(60), 1 << 20).await.unwrap());
        assert_eq!(got.first().unwrap().0, 60);
        assert_eq!(got.last().unwrap().0, 72, "stops before the corrupt batch");
        // A read that reaches it is a typed error with the segment and the position.
        for off in [75, 76, 77] {
            match log.read(Offset(off), 1 << 20).await {
                Err(Error::Corrupt { path, position, .. }) => {
                    assert_eq!(path, seg(&d, 0, "log"));
                    assert_eq!(position, *pos25);
                }
                other => panic!("read {off}: {other:?}"),
            }
        }
        // Past it, the log reads again.
        assert_eq!(batches(&log.read(Offset(78), 1).await.unwrap())[0].0, 78);
        // A scrub finds it too, and only it.
        let found = log.verify().await.unwrap();
        assert_eq!(found.len(), 1);
        assert!(matches!(&found[0], Error::Corrupt { position, .. } if position == pos25));
    });
}

/// The active segment's index files lag its log (they are written once enough new points are
/// due, and in full at close): after a crash, open rebuilds the missing points from the log, and
/// reads and timestamp lookups find the same batches as before.
#[test]
fn an_active_index_behind_its_log_after_a_crash_is_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    let d = dir.clone();
    run(tmp.path(), move || async move {
        let cfg = LogConfig {
            index_interval_bytes: 1024,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(&d, cfg.clone()).await.unwrap();
        // Batch i: 2 records, timestamps 10i and 10i + 1, offsets 2i and 2i + 1; about 1.1 KB,
        // so nearly every batch is an index point.
        for i in 0..120u64 {
            log.append(&[batch(2, 500, i, 10 * i as i64)], None)
                .await
                .unwrap();
        }
        assert_eq!(log.segment_count(), 1);
        let before = read_all(&log, 0).await;
        let lookups = [0i64, 7, 10, 555, 1001, 1189, 1190];
        let mut answers = Vec::new();
        for ts in lookups {
            answers.push(
                log.offset_for_timestamp(quiver_proto::TimestampMs(ts))
                    .await
                    .unwrap(),
            );
        }
        assert_eq!(
            answers[3],
            Some(Offset(112)),
            "ts 555 is first reached at batch 56"
        );
        let index_len = std::fs::metadata(seg(&d, 0, "index")).unwrap().len();
        assert!(
            index_len < 100 * 8,
            "the index files lag the log while it is open ({index_len} bytes)"
        );
        // A crash: the log is dropped without close.
        drop(log);

        let log = PartitionLog::open(&d, cfg.clone()).await.unwrap();
        assert_eq!(read_all(&log, 0).await, before);
        for i in [0u64, 1, 57, 119] {
            let got = batches(&log.read(Offset(2 * i + 1), 1).await.unwrap());
            assert_eq!(got[0].0, 2 * i, "the batch holding offset {}", 2 * i + 1);
        }
        for (ts, want) in lookups.iter().zip(&answers) {
            let got = log
                .offset_for_timestamp(quiver_proto::TimestampMs(*ts))
                .await
                .unwrap();
            assert_eq!(got, *want, "ts {ts} after the crash");
        }
        log.close().await.unwrap();
        // Close writes every point.
        let index_len = std::fs::metadata(seg(&d, 0, "index")).unwrap().len();
        assert!(
            index_len >= 100 * 8,
            "{index_len} bytes of index after close"
        );
    });
}

/// Zeroes `[from, to)` of a file, as a device that never finished a write leaves it.
fn zero(path: &Path, from: u64, to: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&vec![0u8; (to - from) as usize], from)
        .unwrap();
    f.sync_all().unwrap();
}

/// Corruption policy (lib.rs, ARCHITECTURE.md): a damaged batch inside the active segment with
/// intact batches after it is not a torn tail. Recovery keeps what follows, the damaged offsets
/// fail to read with an error naming where reading resumes, the range is reported, and the log's
/// end (so every later offset) stays where it was: nothing is cut, no offset is given twice.
#[test]
fn a_corrupt_batch_inside_the_active_segment_keeps_the_intact_batches_after_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    let d = dir.clone();
    run(tmp.path(), move || async move {
        let log = PartitionLog::open(&d, LogConfig::default()).await.unwrap();
        let bs = fill(&log, 20).await;
        drop(log); // a crash: recovery walks the active segment
        let (b10, pos10) = &bs[10];
        flip(&seg(&d, 0, "log"), pos10 + b10.len() as u64 / 2);
        let log = reopen(&d, LogConfig::default()).await;
        assert_eq!(
            log.end_offset(),
            Offset(60),
            "nothing after the damage is cut"
        );
        let ranges = log.corrupt_ranges();
        assert_eq!(ranges.len(), 1, "{ranges:?}");
        assert_eq!((ranges[0].first, ranges[0].next), (Offset(30), Offset(33)));
        assert_eq!(ranges[0].position, *pos10);
        // Before it: served, and the read stops short of it.
        let got = batches(&log.read(Offset(0), 1 << 20).await.unwrap());
        assert_eq!(got.last().unwrap().0, 27);
        // At it: an error that says where reading resumes.
        for off in [30, 31, 32] {
            match log.read(Offset(off), 1 << 20).await {
                Err(Error::Corrupt {
                    resume_at,
                    position,
                    ..
                }) => {
                    assert_eq!(resume_at, Some(Offset(33)), "read {off}");
                    assert_eq!(position, *pos10);
                }
                other => panic!("read {off}: {other:?}"),
            }
        }
        // After it: every intact batch, byte for byte.
        let after = read_all(&log, 33).await;
        assert_eq!(after.len(), 9);
        for (got, (want, _)) in after.iter().zip(&bs[11..]) {
            assert_eq!(got.2, want.bytes()[8..].to_vec());
        }
        // The log goes on after its old end: offsets are never given twice.
        let info = log.append(&[batch(1, 10, 1, 1)], None).await.unwrap();
        assert_eq!(info.base_offset, Offset(60));
        log.close().await.unwrap();
        // And it stays so across a clean restart.
        let log = PartitionLog::open(&d, LogConfig::default()).await.unwrap();
        assert_eq!(log.end_offset(), Offset(61));
        assert!(matches!(
            log.read(Offset(30), 1).await,
            Err(Error::Corrupt { .. })
        ));
        assert_eq!(batches(&log.read(Offset(60), 1).await.unwrap())[0].0, 60);
    });
}

/// A crash during a write can leave whole blocks the device never wrote (zeros) followed by
/// blocks it did. Those batches were never acknowledged (their fdatasync never completed), so
/// recovery cuts from the damage on, as for a torn tail, rather than keeping them around a hole.
#[test]
fn a_torn_write_with_later_blocks_on_disk_is_cut_not_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    let d = dir.clone();
    run(tmp.path(), move || async move {
        let log = PartitionLog::open(&d, LogConfig::default()).await.unwrap();
        let bs = fill(&log, 60).await;
        drop(log);
        // Zero the whole 4 KiB block after the one batch 20 starts in.
        let (_, pos20) = &bs[20];
        let block = (pos20 / 4096 + 1) * 4096;
        zero(&seg(&d, 0, "log"), block, block + 4096);
        let first_hit = bs
            .iter()
            .position(|(b, p)| p + b.len() as u64 > block)
            .unwrap();
        let log = reopen(&d, LogConfig::default()).await;
        assert!(log.corrupt_ranges().is_empty());
        assert_eq!(
            log.end_offset(),
            Offset(first_hit as u64 * 3),
            "cut at the first batch the unwritten block damaged"
        );
        assert_eq!(read_all(&log, 0).await.len(), first_hit);
    });
}

/// A closed segment whose index must be rebuilt at open finds its damage then; one whose index
/// is intact finds it when a read reaches it. Either way the read error says where reading
/// resumes, and what follows the damage is served.
#[test]
fn damage_in_a_closed_segment_tells_readers_where_to_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    let d = dir.clone();
    run(tmp.path(), move || async move {
        let cfg = LogConfig {
            index_interval_bytes: 1024,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(&d, cfg.clone()).await.unwrap();
        let bs = fill(&log, 40).await;
        assert!(log.roll().await.unwrap());
        log.append(&[batch(1, 10, 99, 0)], None).await.unwrap();
        log.close().await.unwrap();
        let (b25, pos25) = &bs[25];
        flip(&seg(&d, 0, "log"), pos25 + b25.len() as u64 / 2);

        // Index intact: the damage is met by the read, which resumes at the next index point.
        let log = PartitionLog::open(&d, cfg.clone()).await.unwrap();
        assert!(log.corrupt_ranges().is_empty());
        let resume = match log.read(Offset(75), 1 << 20).await {
            Err(Error::Corrupt {
                resume_at: Some(r), ..
            }) => r,
            other => panic!("{other:?}"),
        };
        assert!(resume > Offset(75) && resume <= Offset(120), "{resume:?}");
        assert_eq!(batches(&log.read(resume, 1).await.unwrap())[0].0, resume.0);
        log.close().await.unwrap();

        // Index gone: open rebuilds it, finds the damage, and reports the exact range.
        std::fs::remove_file(seg(&d, 0, "index")).unwrap();
        let log = PartitionLog::open(&d, cfg.clone()).await.unwrap();
        let ranges = log.corrupt_ranges();
        assert_eq!(ranges.len(), 1, "{ranges:?}");
        assert_eq!((ranges[0].first, ranges[0].next), (Offset(75), Offset(78)));
        match log.read(Offset(76), 1 << 20).await {
            Err(Error::Corrupt { resume_at, .. }) => assert_eq!(resume_at, Some(Offset(78))),
            other => panic!("{other:?}"),
        }
        assert_eq!(read_all(&log, 78).await.len(), 40 - 26 + 1);
        // The scrub reports it with the same resume point.
        let found = log.verify().await.unwrap();
        assert!(
            matches!(
                &found[..],
                [Error::Corrupt {
                    resume_at: Some(Offset(78)),
                    ..
                }]
            ),
            "{found:?}"
        );
    });
}
