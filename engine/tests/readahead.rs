//! Read-ahead: a sequential reader gets its next bytes from a read started after its last one,
//! and never bytes the log no longer holds. One test function: the counters are per process and
//! per thread, so nothing else may read in this binary at the same time.

mod common;
use common::*;
use quiver_engine::readahead::{self, set_shard_budget, shard_bytes_in_use};
use quiver_engine::{LogConfig, PartitionLog};
use quiver_proto::Offset;

type Batches = Vec<(u64, u32, Vec<u8>)>;

/// Compares two reads by batch, naming the first difference (not dumping megabytes).
fn same(got: &Batches, want: &Batches) {
    let diff = got.iter().zip(want).position(|(g, w)| g != w);
    assert!(
        diff.is_none() && got.len() == want.len(),
        "reads differ: {} vs {} batches, first difference at batch {diff:?} (offset {:?})",
        got.len(),
        want.len(),
        diff.map(|i| want[i].0)
    );
}

/// Reads from `from` to the readable end, `max_bytes` at a time.
async fn read_in_steps(log: &PartitionLog, from: u64, max_bytes: usize) -> Batches {
    let mut out = Vec::new();
    let mut next = from;
    while next < log.readable_end().0 {
        let bs = batches(&log.read(Offset(next), max_bytes).await.unwrap());
        assert!(!bs.is_empty(), "read at {next} returned nothing");
        assert_eq!(bs[0].0, next, "reads continue where the last one ended");
        for b in bs {
            next = b.0 + u64::from(b.1);
            out.push(b);
        }
    }
    out
}

/// Waits for read-aheads still in flight to finish and give their bytes back (a dropped
/// read-ahead releases its budget when its read completes).
async fn released() -> bool {
    for _ in 0..500 {
        if shard_bytes_in_use() == 0 {
            return true;
        }
        glommio::timer::sleep(std::time::Duration::from_millis(2)).await;
    }
    false
}

#[test]
fn sequential_reads_take_bytes_read_ahead_and_never_stale_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    run(tmp.path(), move || async move {
        let config = LogConfig {
            segment_bytes: 256 * 1024,
            ..small_config()
        };
        let log = PartitionLog::open(&dir, config).await.unwrap();
        for i in 0..200u64 {
            log.append(&[batch(10, 400, i, i as i64)], None)
                .await
                .unwrap();
        }
        assert!(log.segment_count() > 2);

        // Without a budget nothing is read ahead.
        set_shard_budget(0);
        let (ahead0, taken0) = readahead::totals();
        let expect = read_in_steps(&log, 0, 16 * 1024).await;
        assert_eq!(expect.len(), 200);
        assert_eq!(readahead::totals(), (ahead0, taken0));
        assert_eq!(shard_bytes_in_use(), 0);

        // With one, the same reads are served from bytes read ahead, and come out the same.
        set_shard_budget(readahead::SHARD_BUDGET_DEFAULT);
        same(&read_in_steps(&log, 0, 16 * 1024).await, &expect);
        let (ahead1, taken1) = readahead::totals();
        assert!(
            taken1 - taken0 > 200 * 1024,
            "most of ~2 MB read came from read-ahead: {} bytes",
            taken1 - taken0
        );
        assert!(ahead1 >= taken1);

        // A read that stops short of the end leaves its read-ahead, held against the budget.
        let first = batches(&log.read(Offset(0), 16 * 1024).await.unwrap());
        let next = first.last().map(|b| b.0 + u64::from(b.1)).unwrap();
        assert!(shard_bytes_in_use() > 0);

        // The log is truncated right there and other batches take those offsets: the next read
        // must see the new batches, not the bytes read ahead before the truncation.
        assert_eq!(log.truncate(Offset(next)).await.unwrap(), Offset(next));
        assert!(released().await, "truncation drops read-aheads");
        let mut expect: Batches = expect.into_iter().take_while(|b| b.0 < next).collect();
        for i in 0..50u64 {
            let b = batch(10, 400, 10_000 + i, 0);
            let info = log.append(std::slice::from_ref(&b), None).await.unwrap();
            expect.push((info.base_offset.0, 10, b.bytes()[8..].to_vec()));
        }
        same(&read_in_steps(&log, 0, 16 * 1024).await, &expect);

        // Read-ahead in the active segment, then more appended: the next read serves what was
        // read ahead and the rest follows.
        let tail_from = expect[expect.len() - 20].0;
        let got = batches(&log.read(Offset(tail_from), 16 * 1024).await.unwrap());
        for i in 0..30u64 {
            let b = batch(10, 400, 20_000 + i, 0);
            let info = log.append(std::slice::from_ref(&b), None).await.unwrap();
            expect.push((info.base_offset.0, 10, b.bytes()[8..].to_vec()));
        }
        let after = got.last().map(|b| b.0 + u64::from(b.1)).unwrap();
        let mut tail = got;
        tail.extend(read_in_steps(&log, after, 1 << 20).await);
        same(&tail, &expect[expect.len() - 50..].to_vec());

        // Closing the log gives its read-ahead bytes back.
        let _ = log.read(Offset(0), 16 * 1024).await.unwrap();
        assert!(shard_bytes_in_use() > 0);
        log.close().await.unwrap();
        assert!(released().await, "closing drops read-aheads");
    });
}
