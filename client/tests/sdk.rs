//! The SDK against a real `streamd` (started by testkit in a temporary directory).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quiver_client::partitioner::partition_for_key;
use quiver_client::{
    Acks, Admin, AlterConfig, Client, Compression, ConfigResource, Consumer, ConsumerConfig,
    ConsumerRecord, Error, ErrorCode, NewTopic, Offset, OffsetReset, PartitionId, Partitioner,
    Producer, ProducerConfig, ProducerRecord, TimestampMs, TopicPartition,
};
use quiver_testkit::Broker;

async fn topic(client: &Client, name: &str, partitions: u32) {
    Admin::new(client.clone())
        .create_topic(NewTopic::new(name, partitions))
        .await
        .expect("topic created");
}

/// Every record of `topic` from the beginning up to each partition's end, by partition.
async fn read_all(client: &Client, topic: &str) -> BTreeMap<u32, Vec<ConsumerRecord>> {
    let admin = Admin::new(client.clone());
    let desc = admin.describe_topic(topic).await.unwrap();
    let mut consumer = Consumer::new(
        client.clone(),
        ConsumerConfig::default()
            .auto_offset_reset(OffsetReset::Earliest)
            .fetch_max_wait(Duration::from_millis(50)),
    );
    let tps: Vec<TopicPartition> = desc
        .partitions
        .iter()
        .map(|p| TopicPartition::new(topic, p.partition.0))
        .collect();
    consumer.assign(tps).unwrap();
    let want: u64 = desc
        .partitions
        .iter()
        .map(|p| p.end_offset.unwrap().0 - p.start_offset.unwrap().0)
        .sum();
    let mut out: BTreeMap<u32, Vec<ConsumerRecord>> = BTreeMap::new();
    let mut got = 0u64;
    let deadline = Instant::now() + Duration::from_secs(20);
    while got < want {
        assert!(Instant::now() < deadline, "read {got} of {want} records");
        for r in consumer.poll(Duration::from_millis(200)).await.unwrap() {
            got += 1;
            out.entry(r.partition.0).or_default().push(r);
        }
    }
    out
}

#[tokio::test]
async fn keyed_records_land_by_key_and_the_same_key_always_on_the_same_partition() {
    let b = Broker::start(&[]);
    let client = b.client().await;
    topic(&client, "keyed", 6).await;
    let producer = Producer::new(client.clone(), ProducerConfig::default()).unwrap();
    let keys: Vec<String> = (0..40).map(|i| format!("customer-{i}")).collect();
    let mut placed: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    for round in 0..3 {
        let mut pending = Vec::new();
        for k in &keys {
            let rec = ProducerRecord::new("keyed")
                .key(k.clone())
                .value(format!("{k} round {round}"));
            pending.push((k.clone(), producer.enqueue(rec).await.unwrap()));
        }
        for (k, d) in pending {
            let meta = d.await.unwrap();
            assert!(meta.offset.is_some());
            placed.entry(k).or_default().insert(meta.partition.0);
        }
    }
    let mut used = BTreeSet::new();
    for (k, parts) in &placed {
        assert_eq!(parts.len(), 1, "key {k} went to partitions {parts:?}");
        let p = *parts.iter().next().unwrap();
        // Kafka's murmur2 placement: stable across restarts and clients.
        assert_eq!(p, partition_for_key(k.as_bytes(), 6).0, "key {k}");
        used.insert(p);
    }
    assert!(used.len() >= 4, "40 keys used only partitions {used:?}");
    // What the broker stored agrees: every record of a key sits in the key's partition.
    let stored = read_all(&client, "keyed").await;
    let mut count = 0;
    for (p, records) in &stored {
        for r in records {
            let k = r.key_str().unwrap();
            assert_eq!(partition_for_key(k.as_bytes(), 6).0, *p);
            count += 1;
        }
    }
    assert_eq!(count, 120);
    // A new producer (a "restarted" client) places the keys the same way.
    let again = Producer::new(b.client().await, ProducerConfig::default()).unwrap();
    for k in keys.iter().take(10) {
        let meta = again
            .send(ProducerRecord::new("keyed").key(k.clone()).value("x"))
            .await
            .unwrap();
        assert_eq!(meta.partition.0, *placed[k].iter().next().unwrap());
    }
}

#[tokio::test]
async fn records_without_a_key_spread_across_partitions() {
    let b = Broker::start(&[]);
    let client = b.client().await;
    topic(&client, "spread", 4).await;
    // Small batches so the sticky partition moves often.
    let producer = Producer::new(
        client.clone(),
        ProducerConfig::default()
            .batch_size(1024)
            .linger(Duration::from_millis(1)),
    )
    .unwrap();
    let mut pending = Vec::new();
    for i in 0..2000 {
        let rec = ProducerRecord::new("spread").value(format!("value-{i:05}-{}", "x".repeat(40)));
        pending.push(producer.enqueue(rec).await.unwrap());
    }
    let mut per_partition: BTreeMap<u32, u32> = BTreeMap::new();
    for d in pending {
        *per_partition
            .entry(d.await.unwrap().partition.0)
            .or_default() += 1;
    }
    assert_eq!(per_partition.values().sum::<u32>(), 2000);
    assert_eq!(
        per_partition.len(),
        4,
        "keyless records should reach every partition: {per_partition:?}"
    );
    // Sticky: records come in runs (whole batches) rather than one partition per record, and
    // no partition gets everything.
    for (&p, &n) in &per_partition {
        assert!(n < 2000, "partition {p} got all records");
    }
}

/// Key, value, headers.
type Case = (Option<Bytes>, Option<Bytes>, Vec<(&'static str, Bytes)>);

#[tokio::test]
async fn headers_and_binary_values_survive_every_codec() {
    let b = Broker::start(&[]);
    let client = b.client().await;
    topic(&client, "binary", 1).await;
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let not_utf8 = vec![0xff, 0xfe, 0x00, 0xc3, 0x28, b'\n', b'\r'];
    let cases: Vec<Case> = vec![
        (
            Some(Bytes::from(not_utf8.clone())),
            Some(Bytes::from(all_bytes.clone())),
            vec![
                ("bin", Bytes::from(not_utf8.clone())),
                ("empty", Bytes::new()),
            ],
        ),
        (None, Some(Bytes::new()), vec![]),
        (
            Some(Bytes::from_static(b"tombstone")),
            None,
            vec![
                ("dup", Bytes::from_static(b"1")),
                ("dup", Bytes::from_static(b"2")),
            ],
        ),
        (
            Some(Bytes::from("ключ ✓".as_bytes())),
            Some(Bytes::from(vec![0u8; 100_000])),
            vec![("ünïcödé", Bytes::from_static(b"\x00\x01"))],
        ),
    ];
    let mut expected = Vec::new();
    for compression in [Compression::None, Compression::Lz4, Compression::Zstd] {
        let producer = Producer::new(
            client.clone(),
            ProducerConfig::default().compression(compression),
        )
        .unwrap();
        for (i, (key, value, headers)) in cases.iter().enumerate() {
            let mut rec = ProducerRecord::new("binary").timestamp(TimestampMs(1_000 + i as i64));
            rec.key = key.clone();
            rec.value = value.clone();
            for (k, v) in headers {
                rec = rec.header(*k, v.clone());
            }
            let meta = producer.send(rec.clone()).await.unwrap();
            expected.push((meta.offset.unwrap(), rec));
        }
    }
    let stored = read_all(&client, "binary").await;
    let records = &stored[&0];
    assert_eq!(records.len(), expected.len());
    for (r, (offset, sent)) in records.iter().zip(&expected) {
        assert_eq!(r.offset, *offset);
        assert_eq!(r.key, sent.key, "key at {offset}");
        assert_eq!(r.value, sent.value, "value at {offset}");
        assert_eq!(r.headers, sent.headers, "headers at {offset}");
        assert_eq!(Some(r.timestamp), sent.timestamp);
        assert_eq!(&*r.topic, "binary");
    }
}

#[tokio::test]
async fn seek_by_timestamp_finds_the_first_record_at_or_after_it() {
    let b = Broker::start(&[]);
    let client = b.client().await;
    topic(&client, "times", 1).await;
    let producer = Producer::new(client.clone(), ProducerConfig::default()).unwrap();
    // Timestamps need not be monotonic across records; the index answers "first offset whose
    // timestamp is >= t" (Kafka's ListOffsets by time).
    let stamps = [1_000i64, 2_000, 3_000, 3_000, 5_000, 8_000];
    for (i, ts) in stamps.iter().enumerate() {
        producer
            .send(
                ProducerRecord::new("times")
                    .value(format!("r{i}"))
                    .timestamp(TimestampMs(*ts)),
            )
            .await
            .unwrap();
    }
    let tp = TopicPartition::new("times", 0);
    let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default());
    consumer.assign(vec![tp.clone()]).unwrap();
    for (at, want_offset) in [
        (0i64, 0u64),
        (1_000, 0),
        (1_001, 1),
        (2_500, 2),
        (3_000, 2),
        (4_000, 4),
        (8_000, 5),
    ] {
        consumer
            .seek_to_timestamp(std::slice::from_ref(&tp), TimestampMs(at))
            .await
            .unwrap();
        assert_eq!(
            consumer.position(&tp),
            Some(Offset(want_offset)),
            "seek to {at}"
        );
        let records = consumer.poll(Duration::from_secs(5)).await.unwrap();
        assert_eq!(records[0].offset, Offset(want_offset), "seek to {at}");
        assert!(records[0].timestamp.0 >= at);
    }
    // Past the newest record: the end of the partition, and nothing to read.
    consumer
        .seek_to_timestamp(std::slice::from_ref(&tp), TimestampMs(9_000))
        .await
        .unwrap();
    assert_eq!(consumer.position(&tp), Some(Offset(6)));
    assert!(consumer
        .poll(Duration::from_millis(300))
        .await
        .unwrap()
        .is_empty());
    let found = consumer
        .offsets_for_time(std::slice::from_ref(&tp), TimestampMs(9_000))
        .await
        .unwrap();
    assert_eq!(found, vec![(tp.clone(), None)]);
}

#[tokio::test]
async fn producing_to_a_missing_topic_is_a_typed_error() {
    let b = Broker::start(&[]);
    let client = b.client().await;
    let producer = Producer::new(client.clone(), ProducerConfig::default()).unwrap();
    let err = producer
        .send(ProducerRecord::new("no-such-topic").value("x"))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(ErrorCode::UnknownTopicOrPartition),
        "{err}"
    );
    assert!(err.to_string().contains("no-such-topic"), "{err}");
    // A partition past the topic's count is the same error.
    topic(&client, "two", 2).await;
    let err = producer
        .send(ProducerRecord::new("two").value("x").partition(2))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(ErrorCode::UnknownTopicOrPartition),
        "{err}"
    );
    // And a consumer assigned to a missing topic hears it from poll.
    let mut consumer = Consumer::new(client, ConsumerConfig::default());
    consumer
        .assign(vec![TopicPartition::new("no-such-topic", 0)])
        .unwrap();
    let err = consumer.poll(Duration::from_secs(2)).await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(ErrorCode::UnknownTopicOrPartition),
        "{err}"
    );
}

#[tokio::test]
async fn back_pressure_holds_buffered_memory_under_its_bound_while_the_broker_is_down() {
    let mut b = Broker::start(&[]);
    let client = b.client().await;
    topic(&client, "bp", 2).await;
    const BOUND: usize = 256 * 1024;
    let producer = Producer::new(
        client.clone(),
        ProducerConfig::default()
            .acks(Acks::All)
            .buffer_memory(BOUND)
            .batch_size(16 * 1024)
            .max_block(Duration::from_millis(300))
            .delivery_timeout(Duration::from_secs(60)),
    )
    .unwrap();
    // The producer works while the broker is up.
    producer
        .send(ProducerRecord::new("bp").value("before"))
        .await
        .unwrap();
    b.kill9();
    let value = Bytes::from(vec![7u8; 1000]);
    let mut accepted = Vec::new();
    let mut refused = None;
    let started = Instant::now();
    for i in 0..2000 {
        match producer
            .enqueue(
                ProducerRecord::new("bp")
                    .key(format!("{i}"))
                    .value(value.clone()),
            )
            .await
        {
            Ok(d) => accepted.push(d),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
        assert!(producer.buffered_bytes() <= BOUND);
    }
    let refused = refused.expect("the buffer filled up: some send was refused");
    assert!(matches!(refused, Error::Timeout(_)), "{refused}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "back-pressure waits max_block, not forever"
    );
    // About BOUND / record size records fit, never more.
    let per_record = 1000 + 40;
    assert!(
        accepted.len() * per_record <= BOUND,
        "{} accepted",
        accepted.len()
    );
    assert!(
        accepted.len() * per_record >= BOUND / 2,
        "{} accepted",
        accepted.len()
    );
    assert!(producer.buffered_bytes() <= BOUND);
    assert!(producer.buffered_bytes() >= BOUND / 2);
    // More attempts keep failing without growing the buffer.
    for _ in 0..5 {
        let e = producer
            .enqueue(ProducerRecord::new("bp").value(value.clone()))
            .await
            .err()
            .expect("still full");
        assert!(matches!(e, Error::Timeout(_)));
        assert!(producer.buffered_bytes() <= BOUND);
    }
    // The broker comes back: the buffered records are delivered and the memory returns.
    b.restart();
    for d in accepted {
        let meta = tokio::time::timeout(Duration::from_secs(30), d)
            .await
            .expect("delivered after the restart")
            .unwrap();
        assert!(meta.offset.is_some());
    }
    assert_eq!(producer.buffered_bytes(), 0);
    producer
        .send(ProducerRecord::new("bp").value("after"))
        .await
        .unwrap();
}

#[tokio::test]
async fn acks_zero_one_and_all_and_flush() {
    let b = Broker::start(&[]);
    let client = b.client().await;
    topic(&client, "acks", 1).await;
    for acks in [Acks::None, Acks::Leader, Acks::All] {
        let producer = Producer::new(
            client.clone(),
            ProducerConfig::default()
                .acks(acks)
                .linger(Duration::from_secs(30)),
        )
        .unwrap();
        let mut pending = Vec::new();
        for i in 0..100 {
            pending.push(
                producer
                    .enqueue(ProducerRecord::new("acks").value(format!("{acks:?} {i}")))
                    .await
                    .unwrap(),
            );
        }
        // With a 30 s linger nothing is sent until flush.
        let t = Instant::now();
        producer.flush().await.unwrap();
        assert!(t.elapsed() < Duration::from_secs(10));
        let mut last = None;
        for d in pending {
            let meta = d.await.unwrap();
            match acks {
                Acks::None => assert_eq!(meta.offset, None),
                _ => {
                    let o = meta.offset.unwrap();
                    if let Some(prev) = last {
                        assert_eq!(o, Offset(prev + 1), "offsets follow send order");
                    }
                    last = Some(o.0);
                }
            }
        }
        producer.close().await.unwrap();
        let err = producer
            .send(ProducerRecord::new("acks").value("late"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Closed), "{err}");
    }
    // acks=0 records arrive too (the broker writes them; the client just does not wait).
    let stored = read_all(&client, "acks").await;
    assert_eq!(stored[&0].len(), 300);
    let values: Vec<&str> = stored[&0].iter().map(|r| r.value_str().unwrap()).collect();
    assert!(values.contains(&"None 99"));
}

#[tokio::test]
async fn a_custom_partitioner_and_explicit_partitions_are_obeyed() {
    struct Last;
    impl Partitioner for Last {
        fn partition(&self, _topic: &str, _key: Option<&[u8]>, partitions: u32) -> PartitionId {
            PartitionId(partitions - 1)
        }
    }
    let b = Broker::start(&[]);
    let client = b.client().await;
    topic(&client, "custom", 3).await;
    let producer =
        Producer::new(client.clone(), ProducerConfig::default().partitioner(Last)).unwrap();
    for i in 0..10 {
        let m = producer
            .send(
                ProducerRecord::new("custom")
                    .key(format!("k{i}"))
                    .value("v"),
            )
            .await
            .unwrap();
        assert_eq!(m.partition, PartitionId(2));
        let m = producer
            .send(ProducerRecord::new("custom").value("v").partition(1))
            .await
            .unwrap();
        assert_eq!(m.partition, PartitionId(1));
    }
}

#[tokio::test]
async fn consumer_seeks_pauses_resumes_and_resets_out_of_range_offsets() {
    let b = Broker::start(&[]);
    let client = b.client().await;
    topic(&client, "c", 2).await;
    let producer = Producer::new(client.clone(), ProducerConfig::default()).unwrap();
    for p in 0..2u32 {
        for i in 0..50 {
            producer
                .send(
                    ProducerRecord::new("c")
                        .partition(p)
                        .value(format!("{p}-{i}")),
                )
                .await
                .unwrap();
        }
    }
    let tp0 = TopicPartition::new("c", 0);
    let tp1 = TopicPartition::new("c", 1);
    let mut consumer = Consumer::new(
        client.clone(),
        ConsumerConfig::default()
            .auto_offset_reset(OffsetReset::Latest)
            .max_poll_records(7)
            .fetch_max_wait(Duration::from_millis(50)),
    );
    consumer.assign(vec![tp0.clone(), tp1.clone()]).unwrap();
    // Latest: nothing old is returned.
    assert!(consumer
        .poll(Duration::from_millis(300))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(consumer.position(&tp0), Some(Offset(50)));
    // Seek to an offset; max_poll_records bounds each poll.
    consumer.seek(&tp0, Offset(45)).unwrap();
    let got = consumer.poll(Duration::from_secs(5)).await.unwrap();
    assert_eq!(got.len(), 5);
    assert_eq!(got[0].offset, Offset(45));
    assert_eq!(got[0].value_str(), Some("0-45"));
    assert_eq!(consumer.position(&tp0), Some(Offset(50)));
    // Pause partition 1 after seeking it to the beginning: only partition 0 is read.
    consumer
        .seek_to_beginning(&[tp0.clone(), tp1.clone()])
        .await
        .unwrap();
    consumer.pause(std::slice::from_ref(&tp1)).unwrap();
    assert_eq!(consumer.paused(), vec![tp1.clone()]);
    let mut seen0 = 0;
    while seen0 < 50 {
        for r in consumer.poll(Duration::from_secs(5)).await.unwrap() {
            assert_eq!(r.partition, PartitionId(0), "paused partition was returned");
            assert_eq!(r.offset, Offset(seen0));
            seen0 += 1;
        }
    }
    assert!(consumer
        .poll(Duration::from_millis(200))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(consumer.position(&tp1), Some(Offset(0)));
    consumer.resume(std::slice::from_ref(&tp1)).unwrap();
    let mut seen1 = 0;
    while seen1 < 50 {
        for r in consumer.poll(Duration::from_secs(5)).await.unwrap() {
            assert_eq!(r.partition, PartitionId(1));
            assert_eq!(r.offset, Offset(seen1));
            seen1 += 1;
        }
    }
    // A position past the end is out of range: earliest policy resets it.
    let mut early = Consumer::new(
        client.clone(),
        ConsumerConfig::default().auto_offset_reset(OffsetReset::Earliest),
    );
    early.assign(vec![tp0.clone()]).unwrap();
    early.seek(&tp0, Offset(1_000)).unwrap();
    let got = early.poll(Duration::from_secs(5)).await.unwrap();
    assert_eq!(got[0].offset, Offset(0));
    // With policy none the error reaches the caller, typed.
    let mut strict = Consumer::new(
        client.clone(),
        ConsumerConfig::default().auto_offset_reset(OffsetReset::None),
    );
    strict.assign(vec![tp0.clone()]).unwrap();
    strict.seek(&tp0, Offset(1_000)).unwrap();
    let mut err = None;
    for _ in 0..5 {
        if let Err(e) = strict.poll(Duration::from_secs(1)).await {
            err = Some(e);
            break;
        }
    }
    let err = err.expect("out of range with policy none is an error");
    assert_eq!(err.code(), Some(ErrorCode::OffsetOutOfRange), "{err}");
}

#[tokio::test]
async fn committed_offsets_are_where_a_group_resumes() {
    let b = Broker::start(&[]);
    let client = b.client().await;
    topic(&client, "g", 2).await;
    let producer = Producer::new(client.clone(), ProducerConfig::default()).unwrap();
    for i in 0..20 {
        producer
            .send(
                ProducerRecord::new("g")
                    .partition(i % 2)
                    .value(format!("{i}")),
            )
            .await
            .unwrap();
    }
    let tp0 = TopicPartition::new("g", 0);
    let tp1 = TopicPartition::new("g", 1);
    // Without a group id there is nothing to commit to.
    let mut c = Consumer::new(client.clone(), ConsumerConfig::default());
    c.assign(vec![tp0.clone()]).unwrap();
    let err = c.commit().await.unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    // Manually assigned partitions commit to an empty group.
    let config = ConsumerConfig::default()
        .group_id("g1")
        .enable_auto_commit(false)
        .auto_offset_reset(OffsetReset::Earliest);
    let mut c = Consumer::new(client.clone(), config.clone());
    c.assign(vec![tp0.clone(), tp1.clone()]).unwrap();
    assert_eq!(
        c.committed(&[tp0.clone(), tp1.clone()]).await.unwrap(),
        vec![(tp0.clone(), None), (tp1.clone(), None)]
    );
    // Nothing committed: auto_offset_reset (earliest) decides.
    let first = c.poll(Duration::from_secs(5)).await.unwrap();
    assert_eq!(first[0].offset, Offset(0));
    c.seek(&tp0, Offset(7)).unwrap();
    c.seek(&tp1, Offset(3)).unwrap();
    c.commit().await.unwrap();
    let mut committed = c.committed(&[tp0.clone(), tp1.clone()]).await.unwrap();
    committed.sort();
    assert_eq!(
        committed,
        vec![
            (tp0.clone(), Some(Offset(7))),
            (tp1.clone(), Some(Offset(3)))
        ]
    );
    // Another consumer of the group starts where the group left off.
    let mut again = Consumer::new(client.clone(), config);
    again.assign(vec![tp0.clone()]).unwrap();
    let got = again.poll(Duration::from_secs(5)).await.unwrap();
    assert_eq!(got[0].offset, Offset(7));
    assert_eq!(got[0].value_str(), Some("14"));
}

#[tokio::test]
async fn group_members_split_partitions_and_take_over_when_one_leaves() {
    let b = Broker::start(&[]);
    let client = b.client().await;
    topic(&client, "grp", 4).await;
    let producer = Producer::new(client.clone(), ProducerConfig::default()).unwrap();
    let mut pending = Vec::new();
    for i in 0..400u32 {
        pending.push(
            producer
                .enqueue(
                    ProducerRecord::new("grp")
                        .partition(i % 4)
                        .value(format!("{i}")),
                )
                .await
                .unwrap(),
        );
    }
    for d in pending {
        d.await.unwrap();
    }
    let config = ConsumerConfig::default()
        .group_id("readers")
        .auto_offset_reset(OffsetReset::Earliest)
        .fetch_max_wait(Duration::from_millis(50));
    let mut a = Consumer::new(b.client().await, config.clone());
    let mut c = Consumer::new(b.client().await, config.clone());
    a.subscribe(vec!["grp".into()]).await.unwrap();
    c.subscribe(vec!["grp".into()]).await.unwrap();
    assert_ne!(a.member_id(), c.member_id());
    // Poll both until all 400 records are read; each record exactly once between them.
    let mut seen: BTreeMap<(u32, u64), u32> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 400 {
        assert!(Instant::now() < deadline, "read {} of 400", seen.len());
        for (who, consumer) in [(0u32, &mut a), (1, &mut c)] {
            for r in consumer.poll(Duration::from_millis(100)).await.unwrap() {
                let prev = seen.insert((r.partition.0, r.offset.0), who);
                assert!(
                    prev.is_none(),
                    "record {}/{} read twice",
                    r.partition,
                    r.offset
                );
            }
        }
    }
    // Once the group settles, each member owns two of the four partitions.
    let settle = Instant::now() + Duration::from_secs(20);
    loop {
        let (na, nc) = (a.assignment().len(), c.assignment().len());
        if na == 2 && nc == 2 {
            break;
        }
        assert!(
            Instant::now() < settle,
            "assignment did not settle: {na} + {nc}"
        );
        a.poll(Duration::from_millis(50)).await.unwrap();
        c.poll(Duration::from_millis(50)).await.unwrap();
    }
    let mut all: Vec<TopicPartition> = a.assignment();
    all.extend(c.assignment());
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 4, "no partition is owned twice or by nobody");
    // One member leaves (committing its positions); the other takes over all four partitions
    // and reads only new records (the leaver's work is committed, not redone).
    c.close().await.unwrap();
    let settle = Instant::now() + Duration::from_secs(20);
    while a.assignment().len() != 4 {
        assert!(Instant::now() < settle, "the survivor did not take over");
        a.poll(Duration::from_millis(50)).await.unwrap();
    }
    for i in 0..8u32 {
        producer
            .send(
                ProducerRecord::new("grp")
                    .partition(i % 4)
                    .value(format!("new {i}")),
            )
            .await
            .unwrap();
    }
    let mut fresh = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while fresh.len() < 8 {
        assert!(Instant::now() < deadline, "got {fresh:?}");
        for r in a.poll(Duration::from_millis(100)).await.unwrap() {
            fresh.push(r.value_str().unwrap().to_string());
        }
    }
    assert!(
        fresh.iter().all(|v| v.starts_with("new ")),
        "old records read again: {fresh:?}"
    );
    a.close().await.unwrap();
}

#[tokio::test]
async fn admin_topics_configs_partitions_and_cluster() {
    let b = Broker::start(&[]);
    let client = b.client().await;
    let admin = Admin::new(client.clone());
    admin
        .create_topic(NewTopic::new("adm", 2).config("retention.ms", "3600000"))
        .await
        .unwrap();
    let err = admin
        .create_topic(NewTopic::new("adm", 2))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TopicAlreadyExists), "{err}");
    let d = admin.describe_topic("adm").await.unwrap();
    assert_eq!(d.partitions.len(), 2);
    assert_eq!(d.partitions[0].start_offset, Some(Offset(0)));
    assert_eq!(d.partitions[0].end_offset, Some(Offset(0)));
    let retention = d.configs.iter().find(|c| c.name == "retention.ms").unwrap();
    assert_eq!(retention.value.as_deref(), Some("3600000"));
    assert!(retention.is_override());
    admin
        .alter_configs(
            ConfigResource::Topic("adm".into()),
            vec![AlterConfig::set("retention.ms", "7200000")],
        )
        .await
        .unwrap();
    let configs = admin
        .describe_configs(ConfigResource::Topic("adm".into()))
        .await
        .unwrap();
    let retention = configs.iter().find(|c| c.name == "retention.ms").unwrap();
    assert_eq!(retention.value.as_deref(), Some("7200000"));
    // A producer that knew the topic with 2 partitions sees the new ones once the client's
    // metadata has them.
    let producer = Producer::new(client.clone(), ProducerConfig::default()).unwrap();
    let m = producer
        .send(ProducerRecord::new("adm").partition(1).value("x"))
        .await
        .unwrap();
    assert_eq!(m.partition, PartitionId(1));
    let err = producer
        .send(ProducerRecord::new("adm").partition(4).value("x"))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(ErrorCode::UnknownTopicOrPartition),
        "{err}"
    );
    admin.create_partitions("adm", 5).await.unwrap();
    assert_eq!(
        admin.describe_topic("adm").await.unwrap().partitions.len(),
        5
    );
    let m = producer
        .send(ProducerRecord::new("adm").partition(4).value("x"))
        .await
        .unwrap();
    assert_eq!(m.partition, PartitionId(4));
    let names: Vec<String> = admin
        .list_topics()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert!(names.contains(&"adm".to_string()));
    let cluster = admin.describe_cluster().await.unwrap();
    assert_eq!(cluster.brokers.len(), 1);
    assert_eq!(cluster.brokers[0].port, b.addr.port());
    admin.delete_topic("adm").await.unwrap();
    let err = admin.describe_topic("adm").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownTopicOrPartition));
}

#[tokio::test]
async fn bootstrap_skips_dead_servers_and_calls_move_to_a_live_broker() {
    use quiver_client::{ClientConfig, ClientTls};
    let mut a = Broker::start(&[]);
    let b = Broker::start(&[]);
    // Trust both development CAs.
    let mut pem = std::fs::read(a.ca()).unwrap();
    pem.extend(std::fs::read(b.ca()).unwrap());
    let tls = ClientTls::from_ca_pem(&pem).unwrap();
    // A dead first server is skipped at bootstrap.
    let config = ClientConfig::new(format!("127.0.0.1:1,{},{}", a.addr, b.addr))
        .tls(tls)
        .request_timeout(Duration::from_secs(2));
    let mut config = config;
    config.connect.connect_timeout = Duration::from_secs(1);
    let client = Client::connect(config).await.unwrap();
    let admin = Admin::new(client.clone());
    assert_eq!(
        admin.describe_cluster().await.unwrap().brokers[0].port,
        a.addr.port()
    );
    // A call by broker id caches broker 1's address (A's, for now).
    admin.create_topic(NewTopic::new("on-a", 1)).await.unwrap();
    // The broker it talks to dies; the next metadata call moves to the other bootstrap server.
    a.kill9();
    let cluster = admin.describe_cluster().await.unwrap();
    assert_eq!(cluster.brokers[0].port, b.addr.port());
    // And stays there; broker 1 now means B's address (both brokers have id 1).
    admin.create_topic(NewTopic::new("on-b", 1)).await.unwrap();
    let err = admin.describe_topic("on-a").await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(ErrorCode::UnknownTopicOrPartition),
        "{err}"
    );
    assert_eq!(
        admin.describe_topic("on-b").await.unwrap().partitions.len(),
        1
    );
}

/// Against a broker with two shards, metadata says which shard owns each partition, and the
/// SDK sends a partition's produce and fetch requests on a connection of that shard (from a
/// UDP source port the broker steers to it), so none of them crosses between the broker's
/// cores; every record still arrives, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_for_a_partition_go_to_the_shard_that_owns_it() {
    let b = Broker::start(&["--shards", "2"]);
    let client = b.client().await;
    topic(&client, "sharded", 4).await;
    let t = client.topic("sharded").await.unwrap();
    let shards: BTreeSet<u16> = t.partitions.iter().filter_map(|p| p.leader_shard).collect();
    assert_eq!(shards, BTreeSet::from([0, 1]), "{t:?}");
    assert!(client.cluster().brokers.values().all(|b| b.shards == 2));
    let hops = || -> f64 {
        let text = b.metrics_text();
        text.lines()
            .find_map(|l| l.strip_prefix("quiver_shard_messages_total ")?.parse().ok())
            .unwrap_or_else(|| panic!("no shard message counter in {text}"))
    };
    let producer = Producer::new(client.clone(), ProducerConfig::default()).unwrap();
    let mut before = 0.0;
    for round in 0..20 {
        if round == 1 {
            // From here on: the producer id is granted and the connections are open.
            before = hops();
        }
        let mut pending = Vec::new();
        for p in 0..4 {
            let rec = ProducerRecord::new("sharded")
                .partition(p)
                .value(format!("round {round}"));
            pending.push(producer.enqueue(rec).await.unwrap());
        }
        for d in pending {
            d.await.unwrap();
        }
    }
    let mut consumer = Consumer::new(
        client.clone(),
        ConsumerConfig::default()
            .auto_offset_reset(OffsetReset::Earliest)
            .fetch_max_wait(Duration::from_millis(20))
            .max_partition_fetch_bytes(64),
    );
    consumer
        .assign((0..4).map(|p| TopicPartition::new("sharded", p)).collect())
        .unwrap();
    let mut stored: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while stored.values().map(Vec::len).sum::<usize>() < 80 {
        assert!(Instant::now() < deadline, "read only {stored:?}");
        for r in consumer.poll(Duration::from_millis(200)).await.unwrap() {
            let v = r.value_str().unwrap().to_string();
            stored.entry(r.partition.0).or_default().push(v);
        }
    }
    let want: Vec<String> = (0..20).map(|round| format!("round {round}")).collect();
    for p in 0..4 {
        assert_eq!(stored[&p], want, "partition {p}");
    }
    // 19 rounds of produce requests and the fetches after them (small ones: a batch each):
    // with one connection for all four partitions, each request for a partition of the other
    // shard crossed over.
    let crossed = hops() - before;
    assert!(crossed <= 2.0, "{crossed} requests crossed between shards");
}
