//! Idempotent producers' sequences in the log: duplicates answered with where the batch went,
//! gaps refused, and the state carried across reopen (the snapshot a clean close writes at the
//! end; else the snapshot written at roll plus the active segment's batches).

mod common;
use common::*;
use quiver_engine::{Error, LogConfig, PartitionLog, SequenceError};
use quiver_proto::batch::{BatchBuilder, BatchLimits, Compression, ValidBatch};
use quiver_proto::{Offset, TimestampMs};

fn pbatch(pid: i64, epoch: i16, seq: i32, records: u32) -> ValidBatch {
    let mut b = BatchBuilder::new(Compression::None).producer(pid, epoch, seq);
    for i in 0..records {
        b.append(TimestampMs(1000 + i as i64), None, Some(&[7u8; 900]), &[])
            .unwrap();
    }
    ValidBatch::new(b.finish().unwrap(), BatchLimits::default()).unwrap()
}

fn refusal(r: Result<quiver_engine::AppendInfo, Error>) -> SequenceError {
    match r {
        Err(Error::Sequence { kind, .. }) => kind,
        other => panic!("expected a sequence refusal, got {other:?}"),
    }
}

#[test]
fn duplicates_and_gaps_survive_roll_and_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    run(tmp.path(), move || async move {
        let log = PartitionLog::open(&dir, small_config()).await.unwrap();
        // Producer 5 writes 3-record batches (sequences 0, 3, 6, ...) across several segments;
        // producer 6 writes one batch early on.
        let mut offsets = Vec::new();
        for i in 0..60 {
            let info = log.append(&[pbatch(5, 0, i * 3, 3)], None).await.unwrap();
            offsets.push(info.base_offset);
            if i == 2 {
                log.append(&[pbatch(6, 0, 0, 1)], None).await.unwrap();
            }
        }
        assert!(log.segment_count() > 2, "{}", log.segment_count());
        assert_eq!(log.producer_count(), 2);
        let end = log.end_offset();
        // The last batch again: its offsets, nothing written.
        let dup = log.append(&[pbatch(5, 0, 59 * 3, 3)], None).await.unwrap();
        assert_eq!((dup.base_offset, log.end_offset()), (offsets[59], end));
        // A gap and a stale epoch are refused, and write nothing.
        assert_eq!(
            refusal(log.append(&[pbatch(5, 0, 61 * 3, 3)], None).await),
            SequenceError::OutOfOrder
        );
        // The batch that ends a segment: roll right after it, so that after reopen only the
        // snapshot written at roll knows it.
        let info = log.append(&[pbatch(5, 0, 60 * 3, 3)], None).await.unwrap();
        assert!(log.roll().await.unwrap());
        let end = log.end_offset();
        log.close().await.unwrap();

        let log = reopen(&dir, small_config()).await;
        assert_eq!(log.producer_count(), 2);
        let dup = log.append(&[pbatch(5, 0, 60 * 3, 3)], None).await.unwrap();
        assert_eq!((dup.base_offset, log.end_offset()), (info.base_offset, end));
        assert_eq!(
            refusal(log.append(&[pbatch(6, 0, 5, 1)], None).await),
            SequenceError::OutOfOrder
        );
        // Batches continue where the sequence left off, in the new segment too.
        let next = log.append(&[pbatch(5, 0, 61 * 3, 3)], None).await.unwrap();
        assert_eq!(next.base_offset, end);
        let more = log.append(&[pbatch(5, 0, 62 * 3, 3)], None).await.unwrap();
        // Dropped, as by a crash: no snapshot at the end.
        drop(log);

        // Reopened again, the batches of the active segment (not yet in any snapshot) count.
        let log = reopen(&dir, small_config()).await;
        let dup = log.append(&[pbatch(5, 0, 62 * 3, 3)], None).await.unwrap();
        assert_eq!(dup.base_offset, more.base_offset);
        assert_eq!(log.end_offset(), Offset(more.next_offset.0));
        // A new epoch restarts at 0, after which the old epoch is fenced.
        log.append(&[pbatch(5, 1, 0, 1)], None).await.unwrap();
        assert_eq!(
            refusal(log.append(&[pbatch(5, 0, 63 * 3, 3)], None).await),
            SequenceError::InvalidEpoch
        );
        // Every record is in the log once: 61 + 2 batches of 3, producer 6's one, epoch 1's one.
        let records: u64 = read_all(&log, 0).await.iter().map(|b| u64::from(b.1)).sum();
        assert_eq!(records, 63 * 3 + 2);
        log.close().await.unwrap();
    });
}

#[test]
fn a_damaged_snapshot_is_not_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    run(tmp.path(), move || async move {
        let log = PartitionLog::open(&dir, small_config()).await.unwrap();
        log.append(&[pbatch(9, 0, 0, 2)], None).await.unwrap();
        assert!(log.roll().await.unwrap());
        let end = log.end_offset();
        log.close().await.unwrap();
        let snap = dir.join(format!("{:020}.producers", end.0));
        let mut bytes = std::fs::read(&snap).unwrap();
        bytes[10] ^= 0xff;
        std::fs::write(&snap, bytes).unwrap();
        let log = reopen(&dir, small_config()).await;
        // Without state, producer 9 must start over (sequence 0 or a new epoch).
        assert_eq!(log.producer_count(), 0);
        assert_eq!(
            refusal(log.append(&[pbatch(9, 0, 2, 1)], None).await),
            SequenceError::OutOfOrder
        );
        log.append(&[pbatch(9, 1, 0, 1)], None).await.unwrap();
        log.close().await.unwrap();
    });
}

/// A clean close leaves the state at the end; a truncation removes it before it cuts, so that
/// after the log grows back to the same end and crashes, the state comes from the batches really
/// there, not from the snapshot of the batches truncated away.
#[test]
fn a_snapshot_above_a_truncation_is_never_used() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    run(tmp.path(), move || async move {
        let log = PartitionLog::open(&dir, LogConfig::default())
            .await
            .unwrap();
        for i in 0..4 {
            log.append(&[pbatch(5, 0, i * 3, 3)], None).await.unwrap();
        }
        assert_eq!(log.end_offset(), Offset(12));
        log.close().await.unwrap();
        let at_end = dir.join(format!("{:020}.producers", 12));
        assert!(at_end.exists(), "a clean close writes the state at the end");

        // The state comes back from it: the last batch is a duplicate, the next one follows.
        let log = reopen(&dir, LogConfig::default()).await;
        let dup = log.append(&[pbatch(5, 0, 9, 3)], None).await.unwrap();
        assert_eq!((dup.base_offset, log.end_offset()), (Offset(9), Offset(12)));
        assert_eq!(log.truncate(Offset(6)).await.unwrap(), Offset(6));
        assert!(
            !at_end.exists(),
            "truncation removes the snapshot above its end"
        );
        // After the cut producer 5 continues from sequence 6, and producer 7 writes; the log
        // is back at 12, and then it crashes.
        log.append(&[pbatch(5, 0, 6, 3)], None).await.unwrap();
        log.append(&[pbatch(7, 0, 0, 3)], None).await.unwrap();
        assert_eq!(log.end_offset(), Offset(12));
        drop(log);

        let log = reopen(&dir, LogConfig::default()).await;
        assert_eq!(log.producer_count(), 2);
        let dup = log.append(&[pbatch(7, 0, 0, 3)], None).await.unwrap();
        assert_eq!((dup.base_offset, log.end_offset()), (Offset(9), Offset(12)));
        let next = log.append(&[pbatch(5, 0, 9, 3)], None).await.unwrap();
        assert_eq!(next.base_offset, Offset(12));
        log.close().await.unwrap();
    });
}
