//! The tail cache: reads at the end of a log are served from the batches it appended last, and
//! give exactly the bytes the segment files hold; never bytes the log no longer holds. One test
//! function: the counters are per process and per thread.

mod common;
use bytes::Bytes;
use common::*;
use quiver_engine::tail::{self, set_shard_budget, shard_bytes_in_use};
use quiver_engine::{LogConfig, PartitionLog, Records};
use quiver_proto::Offset;

fn concat(r: &Records) -> Bytes {
    let v: Vec<u8> = r.chunks.iter().flat_map(|c| c.iter().copied()).collect();
    assert_eq!(v.len(), r.len);
    Bytes::from(v)
}

/// The segment files' bytes for `len` bytes of whole batches from the batch holding `from`
/// (`read` never uses the tail cache).
async fn from_disk(log: &PartitionLog, from: u64, len: usize) -> Bytes {
    let mut out = Vec::new();
    let mut next = from;
    while out.len() < len {
        let bytes = log.read(Offset(next), len - out.len()).await.unwrap();
        let bs = batches(&bytes);
        assert!(!bs.is_empty(), "disk read at {next} returned nothing");
        next = bs.last().map(|b| b.0 + u64::from(b.1)).unwrap();
        out.extend_from_slice(&bytes);
    }
    Bytes::from(out)
}

/// Reads `log` from `from` with `read_records` up to `end`, `max_bytes` at a time, checking
/// each read against the disk; returns the bytes the tail cache served meanwhile.
async fn check_reads(log: &PartitionLog, from: u64, end: u64, max_bytes: usize) -> u64 {
    let served = tail::served_bytes();
    let mut next = from;
    while next < end {
        let r = log
            .read_records(Offset(next), max_bytes, Offset(end))
            .await
            .unwrap();
        assert!(r.len > 0, "read at {next} returned nothing");
        let got = concat(&r);
        let bs = batches(&got);
        assert!(bs[0].0 <= next, "starts with the batch holding {next}");
        let last = bs.last().unwrap();
        assert_eq!(
            r.next.0,
            last.0 + u64::from(last.1),
            "next follows the last batch"
        );
        assert!(r.next.0 <= end, "nothing at or past {end}");
        assert_eq!(got, from_disk(log, next, r.len).await, "read at {next}");
        next = r.next.0;
    }
    tail::served_bytes() - served
}

/// Reads from `from` with `cap` as the visible end until nothing more comes: no read passes
/// `cap`, and they stop within a batch (at most 10 records here) of it.
async fn read_capped(log: &PartitionLog, from: u64, cap: u64) {
    let mut next = from;
    loop {
        let r = log
            .read_records(Offset(next), 1 << 30, Offset(cap))
            .await
            .unwrap();
        if r.len == 0 {
            break;
        }
        assert!(r.next.0 <= cap, "read past {cap}: {}", r.next.0);
        next = r.next.0;
    }
    assert!(
        next <= cap && next + 10 >= cap,
        "stopped at {next}, not at {cap}"
    );
}

#[test]
fn reads_at_the_tail_come_from_memory_and_match_the_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    run(tmp.path(), move || async move {
        let config = LogConfig {
            segment_bytes: 256 * 1024,
            ..small_config()
        };
        let log = PartitionLog::open(&dir, config.clone()).await.unwrap();
        // Nobody reads at the end yet: nothing is cached.
        for i in 0..10u64 {
            log.append(&[batch(5, 300, 90_000 + i, 0)], None)
                .await
                .unwrap();
        }
        assert_eq!(
            shard_bytes_in_use(),
            0,
            "no reader at the end, nothing cached"
        );
        let end = log.readable_end().0;
        assert_eq!(check_reads(&log, 0, end, 1 << 20).await, 0);
        // A reader waits at the end: from now on appends are cached.
        log.reader_at_end();
        // Small batches (copied together when served) and large ones (served as they came),
        // one to three per append, over several segments: about 3 MB, under the 4 MiB a log
        // keeps.
        let mut seed = 0u64;
        for i in 0..150u64 {
            let group: Vec<_> = (0..1 + i % 3)
                .map(|j| {
                    seed += 1;
                    let value = if (i + j) % 4 == 0 { 2000 } else { 100 };
                    batch(1 + (seed % 10) as u32, value, seed, seed as i64)
                })
                .collect();
            log.append(&group, None).await.unwrap();
        }
        assert!(log.segment_count() > 2);
        let end = log.readable_end().0;

        // Every read from the start to the end, in small and large steps, and from offsets in
        // the middle of batches, is served from memory and equals what the files hold.
        for max in [1, 8 * 1024, 64 * 1024, 1 << 20] {
            assert!(check_reads(&log, 0, end, max).await > 0);
            assert!(check_reads(&log, 10, end, max).await > 0);
        }
        for from in [1, 7, end / 3, end / 2 + 1, end - 1] {
            let served = check_reads(&log, from, end, 32 * 1024).await;
            assert!(served > 0, "read from {from} hit the cache");
        }
        // Capped below the end given (a visible end below the readable one).
        read_capped(&log, end / 3, end / 2).await;
        let r = log
            .read_records(Offset(end), 1 << 20, Offset(end))
            .await
            .unwrap();
        assert_eq!((r.len, r.next), (0, Offset(end)), "nothing at the end");

        // Beyond what a log keeps, the oldest batches are read from disk, and come out the same.
        for i in 0..200u64 {
            log.append(&[batch(10, 2000, 1_000 + i, 0)], None)
                .await
                .unwrap();
        }
        let end = log.readable_end().0;
        let before = tail::served_bytes();
        let r = log
            .read_records(Offset(0), 1 << 16, Offset(end))
            .await
            .unwrap();
        assert_eq!(tail::served_bytes(), before, "offset 0 is no longer cached");
        assert_eq!(concat(&r), from_disk(&log, 0, r.len).await);
        check_reads(&log, 0, end, 1 << 20).await;
        assert!(shard_bytes_in_use() <= tail::LOG_BYTES_MAX);

        // Truncated and appended again: the new batches are served, never the old ones.
        let cut = end - 100;
        let at = log.truncate(Offset(cut)).await.unwrap().0;
        for i in 0..30u64 {
            log.append(&[batch(5, 300, 50_000 + i, 0)], None)
                .await
                .unwrap();
        }
        let end = log.readable_end().0;
        assert!(check_reads(&log, at, end, 1 << 20).await > 0);
        let r = log
            .read_records(Offset(at), 1 << 20, Offset(end))
            .await
            .unwrap();
        let first = &batches(&concat(&r))[0];
        assert_eq!(first.0, at);
        assert_eq!(first.2, batch(5, 300, 50_000, 0).bytes()[8..].to_vec());

        // Without a budget, nothing is cached and reads still match.
        log.close().await.unwrap();
        assert_eq!(shard_bytes_in_use(), 0, "closing gives the cache back");
        set_shard_budget(0);
        let log = reopen(&dir, config).await;
        for i in 0..20u64 {
            log.append(&[batch(5, 300, 60_000 + i, 0)], None)
                .await
                .unwrap();
        }
        let end = log.readable_end().0;
        log.reader_at_end();
        assert_eq!(check_reads(&log, 0, end, 1 << 20).await, 0);
        // From the segment too, reads stop at the end given, mid-batch included.
        read_capped(&log, end - 90, end - 52).await;
        assert_eq!(shard_bytes_in_use(), 0);
        log.close().await.unwrap();
    });
}
