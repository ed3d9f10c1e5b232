//! Issue 4, acceptance 3 (long-poll) and 4 (retention).

use std::time::{Duration, Instant};

use quiver_proto::api::fetch::{
    ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic, OffsetSpec,
};
use quiver_proto::api::produce::Acks;
use quiver_proto::batch::{BatchBuilder, Compression};
use quiver_proto::{ErrorCode, PartitionId, TimestampMs};
use quiver_testkit::*;

fn batch(n: usize, value_bytes: usize) -> bytes::Bytes {
    let mut b = BatchBuilder::new(Compression::None);
    let value = vec![7u8; value_bytes];
    for i in 0..n {
        b.append(
            TimestampMs(now_ms()),
            Some(format!("k{i}").as_bytes()),
            Some(&value),
            &[],
        )
        .unwrap();
    }
    b.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_fetch_wakes_on_produce_and_times_out_empty() {
    let broker = Broker::start(&[]);
    let client = broker.client().await;
    assert_eq!(create_topic(&client, "lp", 1, &[]).await, ErrorCode::None);

    // Nothing arrives: the fetch answers empty at its max wait, not before and not much after.
    let t0 = Instant::now();
    let (resp, records) = fetch(&client, "lp", 0, 0, 400).await;
    let waited = t0.elapsed();
    assert_eq!(resp.topics[0].partitions[0].error_code, ErrorCode::None);
    assert!(records.is_empty());
    assert!(
        waited >= Duration::from_millis(400),
        "answered after {waited:?}, before its max wait"
    );
    assert!(waited < Duration::from_secs(5), "answered after {waited:?}");

    // A fetch parked at the log end with a 20 s max wait returns as soon as a produce lands.
    let waiter = {
        let client = client.clone();
        tokio::spawn(async move {
            let (resp, records) = fetch(&client, "lp", 0, 0, 20_000).await;
            (Instant::now(), resp, records)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = produce(&client, "lp", 0, &[batch(3, 10)], Acks::Leader).await;
    let acked = Instant::now();
    assert_eq!(r.topics[0].partitions[0].error_code, ErrorCode::None);
    let (returned, resp, records) = waiter.await.unwrap();
    assert_eq!(resp.topics[0].partitions[0].high_watermark.0, 3);
    assert!(
        !records.is_empty(),
        "the waiting fetch returned the new records"
    );
    let lag = returned.saturating_duration_since(acked);
    eprintln!("long-poll fetch returned {lag:?} after the produce was acknowledged");
    // Woken by the append, not by its 20 s timer (the bound is loose on purpose: this is a
    // correctness check that the wake-up happens, not a benchmark).
    assert!(
        lag < Duration::from_secs(2),
        "fetch returned {lag:?} after the produce"
    );
    // The records came from the batches kept in memory, not from a disk read (the fetch read
    // at the end of the log).
    let metrics = broker.metrics_text();
    let from_memory: usize = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("quiver_fetch_tail_cache_bytes_total ")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no tail cache counter in {metrics}"));
    assert_eq!(from_memory, records.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_size_deletes_old_segments_and_moves_the_start() {
    let broker = Broker::start(&["--retention-check-interval-ms", "200"]);
    let client = broker.client().await;
    let configs = [("segment.bytes", "65536"), ("retention.bytes", "150000")];
    assert_eq!(
        create_topic(&client, "ret", 1, &configs).await,
        ErrorCode::None
    );
    // ~640 KB in 40 batches of 16 KB: about ten 64 KiB segments.
    for _ in 0..40 {
        let r = produce(&client, "ret", 0, &[batch(16, 1000)], Acks::Leader).await;
        assert_eq!(r.topics[0].partitions[0].error_code, ErrorCode::None);
    }
    let earliest = || async {
        let req = ListOffsetsRequest {
            isolation_level: Default::default(),
            follower_progress: false,
            topics: vec![ListOffsetsTopic {
                name: "ret".into(),
                partitions: vec![ListOffsetsPartition {
                    partition: PartitionId(0),
                    current_leader_epoch: None,
                    timestamp: OffsetSpec::Earliest,
                }],
            }],
        };
        client.call_any(&req, vec![]).await.unwrap().0.topics[0].partitions[0]
            .offset
            .unwrap()
            .0
    };
    // Retention runs every 200 ms (it may already have run while the produces went on); wait
    // until what remains is within retention.bytes plus at most one segment (the engine deletes
    // whole segments only). Each record is about 1 KiB (16 per 16 KB batch).
    let bound = 150_000 + 65_536;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut start = earliest().await;
    while (640 - start) * 1024 > bound {
        assert!(
            Instant::now() < deadline,
            "retention left {} records after start {start}; log:\n{}",
            640 - start,
            broker.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        start = earliest().await;
    }
    assert!(start > 0 && start < 640);
    // Only segment files from the start onwards remain, and the log is near the bound.
    let dir = std::fs::read_dir(broker.data_dir().join("topics"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("ret."))
        .expect("the topic's directory")
        .join("0");
    let logs: Vec<u64> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".log")?
                .parse()
                .ok()
        })
        .collect();
    assert!(
        logs.iter().all(|&base| base >= start),
        "segments {logs:?}, start {start}"
    );
    // On disk too: the segment files hold no more than the bound, plus the active segment's
    // partial last block (direct I/O writes whole 4 KiB blocks).
    let on_disk: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(
        on_disk <= bound + 4096,
        "{on_disk} bytes of segments remain (bound {bound})"
    );

    // Reading below the start is an error that names the new start.
    let (resp, records) = fetch(&client, "ret", 0, 0, 0).await;
    let p = &resp.topics[0].partitions[0];
    assert_eq!(p.error_code, ErrorCode::OffsetOutOfRange);
    assert_eq!(p.log_start_offset.0, start);
    assert!(records.is_empty());
    // And reading at the start works.
    let (resp, records) = fetch(&client, "ret", 0, start, 0).await;
    assert_eq!(resp.topics[0].partitions[0].error_code, ErrorCode::None);
    assert!(!records.is_empty());
}

/// A fetch of many partitions holds to the response limit: the broker reads within the limit
/// (one batch past it at most per shard) instead of reading every partition's own limit and
/// dropping the excess, and the partitions it left out are read by the next fetches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_of_many_partitions_keeps_to_its_byte_limit() {
    use quiver_proto::api::fetch::{FetchPartition, FetchRequest, FetchTopic};
    use quiver_proto::Offset;

    const PARTS: u32 = 40;
    let broker = Broker::start(&["--shards", "2"]);
    let client = broker.client().await;
    assert_eq!(
        create_topic(&client, "wide", PARTS, &[]).await,
        ErrorCode::None
    );
    // Each partition: 4 batches of 10 x 1 KiB.
    let one = batch(10, 1024);
    let batch_len = one.len();
    for p in 0..PARTS {
        for _ in 0..4 {
            let r = produce(&client, "wide", p, std::slice::from_ref(&one), Acks::Leader).await;
            assert_eq!(r.topics[0].partitions[0].error_code, ErrorCode::None);
        }
    }

    let limit = 100 * 1024;
    let mut next = vec![0u64; PARTS as usize];
    let mut fetches = 0;
    while next.iter().any(|&o| o < 40) {
        fetches += 1;
        assert!(fetches <= 100, "still unread after 100 fetches: {next:?}");
        let req = FetchRequest {
            max_wait_ms: 0,
            min_bytes: 1,
            max_bytes: limit as u32,
            isolation_level: Default::default(),
            topics: vec![FetchTopic {
                name: "wide".into(),
                partitions: (0..PARTS)
                    .map(|p| FetchPartition {
                        partition: PartitionId(p),
                        fetch_offset: Offset(next[p as usize]),
                        partition_max_bytes: 1 << 20,
                        current_leader_epoch: None,
                    })
                    .collect(),
            }],
            rack_id: None,
        };
        let (resp, payload) = client.call_any(&req, Vec::new()).await.unwrap();
        let mut total = 0;
        for p in &resp.topics[0].partitions {
            assert_eq!(p.error_code, ErrorCode::None);
            let records = p.records.slice(&payload).unwrap();
            total += records.len();
            let mut n = 0;
            for b in quiver_proto::batch::BatchIter::new(&records) {
                let view =
                    quiver_proto::batch::BatchView::new(b.unwrap(), Default::default()).unwrap();
                assert_eq!(view.base_offset().0, next[p.partition.0 as usize] + n);
                n += view.records().unwrap().iter().count() as u64;
            }
            next[p.partition.0 as usize] += n;
        }
        assert!(total > 0, "fetch {fetches} made no progress: {next:?}");
        assert!(
            total <= limit + batch_len,
            "fetch {fetches} answered {total} bytes, limit {limit}"
        );
    }
    // 40 partitions x 41 KiB at 100 KiB a fetch: about 17 fetches, not 1.
    assert!(
        fetches >= (PARTS as usize * 4 * batch_len) / (limit + batch_len),
        "{fetches}"
    );
    // What the broker read to answer them is about what it served: it did not read every
    // partition's 1 MiB limit and throw the excess away.
    let metrics = broker.metrics_text();
    let counter = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from {metrics}"))
    };
    let (read, served) = (
        counter("quiver_fetch_bytes_read_total"),
        counter("quiver_bytes_out_total"),
    );
    assert!(
        served >= (PARTS as usize * 4 * batch_len) as f64,
        "{served}"
    );
    assert!(read <= served * 1.5, "read {read} bytes to serve {served}");
    // Half the partitions are on the shard the connection is not on: each of their appends
    // (4 per partition) crossed to the owner, and the counter saw it.
    let hops = counter("quiver_shard_messages_total");
    assert!(hops >= (PARTS as usize / 2 * 4) as f64, "{hops}");
}

/// A fetch with `min_bytes` waits until its partitions hold that many bytes between them (here
/// two partitions on two shards), reads on from where it stopped after each wake-up (every
/// record once, in order), and at its max wait answers with what there is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_waits_for_min_bytes_and_reads_each_record_once() {
    use quiver_proto::api::fetch::{FetchPartition, FetchRequest, FetchResponse, FetchTopic};
    use quiver_proto::Offset;

    let broker = Broker::start(&["--shards", "2"]);
    let client = broker.client().await;
    assert_eq!(create_topic(&client, "mb", 2, &[]).await, ErrorCode::None);
    let request = |min_bytes: u32, max_wait_ms: u32| FetchRequest {
        max_wait_ms,
        min_bytes,
        max_bytes: 1 << 20,
        isolation_level: Default::default(),
        topics: vec![FetchTopic {
            name: "mb".into(),
            partitions: (0..2)
                .map(|p| FetchPartition {
                    partition: PartitionId(p),
                    fetch_offset: Offset(0),
                    partition_max_bytes: 1 << 20,
                    current_leader_epoch: None,
                })
                .collect(),
        }],
        rack_id: None,
    };
    // Record offsets per partition in the answer, and its record bytes.
    let offsets = |resp: &FetchResponse, payload: &bytes::Bytes| {
        let mut total = 0;
        let mut out = vec![Vec::new(), Vec::new()];
        for p in &resp.topics[0].partitions {
            assert_eq!(p.error_code, ErrorCode::None);
            let records = p.records.slice(payload).unwrap();
            total += records.len();
            for b in quiver_proto::batch::BatchIter::new(&records) {
                let view =
                    quiver_proto::batch::BatchView::new(b.unwrap(), Default::default()).unwrap();
                let n = view.records().unwrap().iter().count() as u64;
                out[p.partition.0 as usize].extend((0..n).map(|i| view.base_offset().0 + i));
            }
        }
        (out, total)
    };
    let one = batch(1, 1000);
    let r = produce(&client, "mb", 0, std::slice::from_ref(&one), Acks::Leader).await;
    assert_eq!(r.topics[0].partitions[0].error_code, ErrorCode::None);

    let waiter = {
        let client = client.clone();
        let req = request(8 * one.len() as u32, 20_000);
        tokio::spawn(async move {
            let answer = client.call_any(&req, Vec::new()).await.unwrap();
            (Instant::now(), answer)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "the fetch answered with one batch, under its min_bytes"
    );
    // Nine more batches, alternating partitions: the fetch has its 8 batches' worth on the way.
    for i in 1..10 {
        let r = produce(
            &client,
            "mb",
            i % 2,
            std::slice::from_ref(&one),
            Acks::Leader,
        )
        .await;
        assert_eq!(r.topics[0].partitions[0].error_code, ErrorCode::None);
    }
    let acked = Instant::now();
    let (returned, (resp, payload)) = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the fetch answered once it had min_bytes, not at its 20 s max wait")
        .unwrap();
    assert!(returned <= acked + Duration::from_secs(5));
    let (got, total) = offsets(&resp, &payload);
    assert!(total >= 8 * one.len(), "{total} bytes, under min_bytes");
    for (p, offs) in got.iter().enumerate() {
        let expect: Vec<u64> = (0..offs.len() as u64).collect();
        assert_eq!(offs, &expect, "partition {p}: each record once, in order");
    }

    // More than there is: the fetch waits its max wait, then answers with all there is.
    let t0 = Instant::now();
    let (resp, payload) = client
        .call_any(&request(1 << 20, 500), Vec::new())
        .await
        .unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(500));
    let (got, _) = offsets(&resp, &payload);
    assert_eq!((got[0].len(), got[1].len()), (5, 5));
}
