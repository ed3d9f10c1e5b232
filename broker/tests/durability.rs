//! What a crash, an operator's slip or a damaged file must not do to a broker: wipe topics,
//! wedge a start, half-kill the process, or lose or duplicate acknowledged records.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quiver_client::{
    Admin, Consumer, ConsumerConfig, NewTopic, OffsetReset, Producer, ProducerConfig,
    ProducerRecord, TopicPartition,
};
use quiver_proto::batch::{BatchBuilder, BatchIter, Compression};
use quiver_proto::{ErrorCode, Offset, TimestampMs};
use quiver_testkit::hostile::{records_section, Forged};
use quiver_testkit::*;

/// The one directory under `topics/` whose name starts with `prefix`.
fn topic_dir(broker: &Broker, prefix: &str) -> PathBuf {
    std::fs::read_dir(broker.data_dir().join("topics"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{prefix}."))
        })
        .unwrap_or_else(|| panic!("no directory for topic {prefix}"))
}

/// The active (last) segment log of a partition directory.
fn last_segment(dir: &Path) -> PathBuf {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.pop().expect("a segment")
}

/// The offset after the last batch of a (cleanly closed) segment file.
fn segment_end(path: &Path) -> u64 {
    let base: u64 = path.file_stem().unwrap().to_string_lossy().parse().unwrap();
    let bytes = std::fs::read(path).unwrap();
    BatchIter::new(&bytes)
        .map(|b| {
            let h = quiver_proto::batch::header(b.unwrap()).unwrap();
            h.base_offset.get() + u64::from(h.last_offset_delta.get()) + 1
        })
        .last()
        .unwrap_or(base)
}

/// Reproduced at 5909d5f: with `meta/metadata.json` moved away, streamd started empty and
/// deleted every topic's directory. Now it refuses to start, says why, and deletes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_metadata_file_beside_topics_is_a_refusal_to_start() {
    let mut broker = Broker::start(&[]);
    let client = broker.client().await;
    assert_eq!(create_topic(&client, "keep", 2, &[]).await, ErrorCode::None);
    let resp = produce(
        &client,
        "keep",
        0,
        &[batch_of(10)],
        quiver_proto::api::produce::Acks::All,
    )
    .await;
    assert_eq!(resp.topics[0].partitions[0].error_code, ErrorCode::None);
    drop(client);
    assert_eq!(broker.terminate(), Some(0));
    let meta = broker.data_dir().join("meta/metadata.json");
    let aside = broker.dir.join("metadata.json.moved");
    std::fs::rename(&meta, &aside).unwrap();
    let log = broker.try_spawn(None).expect_err("refuses to start");
    assert!(
        log.contains("metadata file") && log.contains("is missing"),
        "{log}"
    );
    let dir = topic_dir(&broker, "keep");
    assert!(dir.join("0").is_dir(), "nothing deleted");
    // Restored, the broker starts with its data.
    std::fs::rename(&aside, &meta).unwrap();
    broker.spawn(None);
    let client = broker.client().await;
    let (resp, records) = fetch(&client, "keep", 0, 0, 0).await;
    assert_eq!(resp.topics[0].partitions[0].error_code, ErrorCode::None);
    assert_eq!(BatchIter::new(&records).count(), 1);
    broker.assert_serves_clients("after-restore", 50).await;
}

/// A topic directory the metadata does not hold is put aside (`.stray`) and kept, never deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_metadata_does_not_hold_is_put_aside_not_deleted() {
    let mut broker = Broker::start(&[]);
    assert_eq!(broker.terminate(), Some(0));
    let ghost = broker
        .data_dir()
        .join("topics")
        .join(format!("ghost.{:032x}", 0xabcdu128));
    std::fs::create_dir_all(ghost.join("0")).unwrap();
    std::fs::write(ghost.join("0/00000000000000000000.log"), b"precious").unwrap();
    broker.spawn(None);
    let stray = ghost.with_file_name(format!(
        "{}.stray",
        ghost.file_name().unwrap().to_string_lossy()
    ));
    assert_eq!(
        std::fs::read(stray.join("0/00000000000000000000.log")).unwrap(),
        b"precious"
    );
    assert!(!ghost.exists());
    assert!(broker.log().contains("put aside"), "{}", broker.log());
    broker.assert_serves_clients("after-stray", 20).await;
}

fn batch_of(records: u32) -> bytes::Bytes {
    let mut b = BatchBuilder::new(Compression::None);
    for i in 0..records {
        b.append(TimestampMs(1), None, Some(format!("{i}").as_bytes()), &[])
            .unwrap();
    }
    b.finish().unwrap()
}

/// A batch the broker cannot decode in `__consumer_offsets` (written past the API, straight into
/// the segment) must not stop a start: replay skips it, counts it, and moves on. Before, replay
/// re-read the same offset for ever and the broker never became ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_offsets_batch_does_not_stop_a_start() {
    let mut broker = Broker::start(&[]);
    let client = broker.client().await;
    assert_eq!(create_topic(&client, "t", 1, &[]).await, ErrorCode::None);
    let admin = Admin::new(client.clone());
    admin
        .alter_group_offsets("g", &[(TopicPartition::new("t", 0), Offset(5))])
        .await
        .unwrap();
    drop((admin, client));
    assert_eq!(broker.terminate(), Some(0));

    // The group's offsets partition: crc32(group id) % 16.
    let p = crc32fast::hash(b"g") % 16;
    let seg = last_segment(&topic_dir(&broker, "__consumer_offsets").join(p.to_string()));
    let next = segment_end(&seg);
    assert!(next > 0, "the commit is there");
    // Batch 1: a valid CRC over records that do not decode.
    let mut garbage = records_section(2, 8);
    garbage[3] = 0xff;
    let mut b1 = Forged::records(2).batch(&garbage);
    b1[0..8].copy_from_slice(&next.to_le_bytes());
    // Batch 2: well-formed records whose key is not an offsets key.
    let mut b2 = Forged::records(3).batch(&records_section(3, 4));
    b2[0..8].copy_from_slice(&(next + 2).to_le_bytes());
    let mut file = std::fs::read(&seg).unwrap();
    file.extend_from_slice(&b1);
    file.extend_from_slice(&b2);
    std::fs::write(&seg, file).unwrap();

    let started = Instant::now();
    broker.spawn(None);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        broker.metric("quiver_offsets_replay_skipped_records_total") >= 2.0,
        "{}",
        broker.metrics_text()
    );
    let client = broker.client().await;
    let admin = Admin::new(client.clone());
    let offsets = admin.list_group_offsets("g").await.unwrap();
    assert_eq!(offsets.len(), 1);
    assert_eq!(
        offsets[0].1.offset,
        Offset(5),
        "the commit before them stands"
    );
    // Groups work: a new commit lands after them, and survives a restart.
    admin
        .alter_group_offsets("g", &[(TopicPartition::new("t", 0), Offset(7))])
        .await
        .unwrap();
    drop((admin, client));
    broker.kill9();
    broker.restart();
    let client = broker.client().await;
    let offsets = Admin::new(client).list_group_offsets("g").await.unwrap();
    assert_eq!(offsets[0].1.offset, Offset(7));
    broker.assert_serves_clients("after-replay", 50).await;
}

/// A panic in any shard ends the whole process with a non-zero status and a log line naming the
/// shard, instead of leaving a broker that is half alive (reproduced at 5909d5f: shard 0 died,
/// the process stayed up, admin requests timed out and SIGTERM no longer stopped it).
#[test]
fn a_panicking_shard_ends_the_process() {
    let shards = std::thread::available_parallelism().map_or(1, |n| n.get());
    let victim = (shards - 1).to_string();
    let mut broker = Broker::start_with_env(&[], &[("STREAMD_FAULT_PANIC_SHARD", &victim)]);
    let code = broker.wait_exit(Duration::from_secs(20));
    assert_eq!(code, Some(101), "log:\n{}", broker.log());
    let log = broker.log();
    assert!(
        log.contains(&format!("streamd: thread 'shard-{victim}' panicked at"))
            && log.contains("the broker exits"),
        "{log}"
    );
}

/// Segment rolls under kill -9: with 64 KiB segments an idempotent producer rolls the log every
/// few requests, and the broker is killed again and again while it does. Every acknowledged
/// record is read back exactly once, in order (a roll that lost the producers' state would let
/// a retried batch be written twice; one that lost its segment would lose records).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolls_under_repeated_kill_9_lose_and_duplicate_nothing() {
    let mut broker = Broker::start(&[]);
    let client = broker.client_with_timeout(Duration::from_secs(5)).await;
    Admin::new(client.clone())
        .create_topic(NewTopic::new("rolls", 1).config("segment.bytes", "65536"))
        .await
        .unwrap();
    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let (a, f) = (acked.clone(), failed.clone());
    let config = ProducerConfig::default()
        .max_in_flight_per_broker(5)
        .batch_size(4 * 1024)
        .linger(Duration::ZERO)
        .retry_backoff(Duration::from_millis(20))
        .on_delivery(move |_, r| {
            match r {
                Ok(_) => a.fetch_add(1, Ordering::Relaxed),
                Err(_) => f.fetch_add(1, Ordering::Relaxed),
            };
        });
    let producer = Producer::new(client.clone(), config).unwrap();
    const KILLS: u64 = 6;
    let mut kills = 0;
    let mut next_kill_at = 3_000u64;
    let mut i = 0u64;
    while kills < KILLS || i < next_kill_at {
        let record =
            ProducerRecord::new("rolls").value(format!("{i:08}:{}", "r".repeat(100)).into_bytes());
        producer.enqueue_with_opaque(record, i).await.unwrap();
        i += 1;
        if kills < KILLS && acked.load(Ordering::Relaxed) >= next_kill_at {
            broker.kill9();
            broker.restart();
            kills += 1;
            next_kill_at = acked.load(Ordering::Relaxed) + 3_000;
        }
        assert!(i < 5_000_000, "no acknowledgements");
    }
    let n = i;
    producer.flush().await.unwrap();
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert_eq!(acked.load(Ordering::Relaxed), n);
    let d = Admin::new(client.clone())
        .describe_topic("rolls")
        .await
        .unwrap();
    assert_eq!(
        d.partitions[0].end_offset,
        Some(Offset(n)),
        "none written twice"
    );
    let mut consumer = Consumer::new(
        client.clone(),
        ConsumerConfig::default().auto_offset_reset(OffsetReset::Earliest),
    );
    consumer.assign_topic("rolls").await.unwrap();
    let mut got = Vec::with_capacity(n as usize);
    let deadline = Instant::now() + Duration::from_secs(60);
    while (got.len() as u64) < n && Instant::now() < deadline {
        for r in consumer.poll(Duration::from_millis(500)).await.unwrap() {
            let v = r.value.unwrap();
            got.push(String::from_utf8_lossy(&v[..8]).into_owned());
        }
    }
    let want: Vec<String> = (0..n).map(|i| format!("{i:08}")).collect();
    if let Some(at) = (0..want.len().max(got.len())).find(|&i| got.get(i) != want.get(i)) {
        panic!(
            "read {} of {n}; first difference at {at}: {:?} for {:?}",
            got.len(),
            got.get(at),
            want.get(at)
        );
    }
    let segments = std::fs::read_dir(topic_dir(&broker, "rolls").join("0"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .count();
    assert!(
        segments >= 10,
        "only {segments} segments: the test must roll"
    );
}

/// A corrupt batch in the middle of the active segment (not its torn tail): recovery keeps what
/// follows, reads of the damaged offsets fail with a storage error, the range is counted in
/// the metrics, and the partition's end, so every offset given later, stays where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_batch_mid_segment_is_reported_and_nothing_after_it_is_lost() {
    let mut broker = Broker::start(&[]);
    let client = broker.client().await;
    assert_eq!(create_topic(&client, "c", 1, &[]).await, ErrorCode::None);
    let mut positions = Vec::new();
    let mut pos = 0u64;
    for _ in 0..20 {
        let b = batch_of(5);
        positions.push(pos);
        pos += b.len() as u64;
        let resp = produce(&client, "c", 0, &[b], quiver_proto::api::produce::Acks::All).await;
        assert_eq!(resp.topics[0].partitions[0].error_code, ErrorCode::None);
    }
    drop(client);
    broker.kill9();
    let seg = last_segment(&topic_dir(&broker, "c").join("0"));
    // Flip a byte in the records of batch 10 (offsets 50..55).
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[(positions[10] + 70) as usize] ^= 0x40;
    std::fs::write(&seg, bytes).unwrap();
    broker.restart();
    let client = broker.client().await;
    assert_eq!(
        Admin::new(client.clone())
            .describe_topic("c")
            .await
            .unwrap()
            .partitions[0]
            .end_offset,
        Some(Offset(100)),
        "nothing cut"
    );
    let (resp, _) = fetch(&client, "c", 0, 52, 0).await;
    assert_eq!(
        resp.topics[0].partitions[0].error_code,
        ErrorCode::StorageError
    );
    let (resp, records) = fetch(&client, "c", 0, 55, 0).await;
    assert_eq!(resp.topics[0].partitions[0].error_code, ErrorCode::None);
    assert_eq!(
        BatchIter::new(&records).count(),
        9,
        "the intact batches after it"
    );
    // The producer goes on after the old end.
    let resp = produce(
        &client,
        "c",
        0,
        &[batch_of(1)],
        quiver_proto::api::produce::Acks::All,
    )
    .await;
    assert_eq!(resp.topics[0].partitions[0].base_offset, Offset(100));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(broker.metric("quiver_log_corrupt_ranges"), 1.0);
    assert!(broker
        .log()
        .contains("corrupt batch inside the active segment"));
}

/// Topic names whose directory names would not fit the file system are refused at create (a
/// directory is `<name>.<32-digit id>`, and `.deleted.` goes before it while it is deleted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_names_too_long_for_the_file_system_are_refused() {
    let broker = Broker::start(&[]);
    let client = broker.client().await;
    let admin = Admin::new(client.clone());
    let err = admin
        .create_topic(NewTopic::new("t".repeat(214), 1))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("InvalidTopic") && err.contains("file system"),
        "{err}"
    );
    assert_eq!(
        create_topic(&client, &"t".repeat(213), 1, &[]).await,
        ErrorCode::None
    );
    let resp = produce(
        &client,
        &"t".repeat(213),
        0,
        &[batch_of(1)],
        quiver_proto::api::produce::Acks::All,
    )
    .await;
    assert_eq!(resp.topics[0].partitions[0].error_code, ErrorCode::None);
}

/// `flush.ms` > 0 is an explicit choice: describing the topic says acknowledgements come before
/// fsync, and the broker logs it when the config is set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_acknowledging_before_fsync_says_so() {
    let broker = Broker::start(&[]);
    let client = broker.client().await;
    let admin = Admin::new(client.clone());
    admin
        .create_topic(NewTopic::new("fast", 1).config("flush.ms", "1000"))
        .await
        .unwrap();
    admin.create_topic(NewTopic::new("safe", 1)).await.unwrap();
    let note = |d: &quiver_client::TopicDescription| {
        d.configs
            .iter()
            .find(|c| c.name == "flush.ms")
            .and_then(|c| c.note.clone())
    };
    let fast = admin.describe_topic("fast").await.unwrap();
    let n = note(&fast).expect("a note on flush.ms");
    assert!(n.contains("before fsync") && n.contains("1000 ms"), "{n}");
    assert_eq!(note(&admin.describe_topic("safe").await.unwrap()), None);
    assert!(
        broker
            .log()
            .contains("acknowledge produce requests before fdatasync"),
        "{}",
        broker.log()
    );
    // And streamctl shows it.
    let out = std::process::Command::new(bin_path("streamctl"))
        .current_dir(&broker.dir)
        .args([
            "--bootstrap",
            &broker.addr.to_string(),
            "topic",
            "describe",
            "fast",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("note: flush.ms: acknowledgements come before fsync"),
        "{text}"
    );
}
