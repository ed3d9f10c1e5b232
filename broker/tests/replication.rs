//! Replication across three real streamd processes on loopback (testkit's `Cluster`): followers
//! copy their leaders' logs byte for byte, acks=all waits for every in-sync replica, a killed
//! leader's partitions move to an in-sync follower with every acknowledged record, a stopped
//! follower leaves the ISR and rejoins once caught up, and a diverged tail is cut.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use quiver_client::{
    Admin, Consumer, ConsumerConfig, NewTopic, OffsetReset, Producer, ProducerConfig,
    ProducerRecord,
};
use quiver_proto::api::metadata::MetadataRequest;
use quiver_testkit::cluster::Cluster;

/// One cluster at a time (see broker/tests/cluster.rs).
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Quick failure detection, so tests take seconds.
const FLAGS: &[&str] = &[
    "--broker-session-timeout-ms",
    "1500",
    "--replica-lag-time-max-ms",
    "1500",
];

/// Produces values `<prefix><i>` for i in 0..n with acks=all through a producer bootstrapped
/// from broker indexes `via`; every one must be acknowledged.
async fn produce_all(cluster: &Cluster, via: &[usize], topic: &str, prefix: &str, n: u32) {
    let config = ProducerConfig {
        request_timeout: Duration::from_secs(10),
        delivery_timeout: Duration::from_secs(60),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(cluster.client_via(via).await, config).unwrap();
    let mut deliveries = Vec::new();
    for i in 0..n {
        let record = ProducerRecord::new(topic)
            .key(format!("k{i}"))
            .value(format!("{prefix}{i}"));
        deliveries.push(producer.enqueue(record).await.unwrap());
    }
    producer.flush().await.unwrap();
    for d in deliveries {
        d.await
            .unwrap_or_else(|e| panic!("acks=all produce failed: {e}\n{}", cluster.logs()));
    }
}

/// Every value of `topic` from the start, until `n` have come or 30 s passed (duplicates kept).
async fn read_all(cluster: &Cluster, via: &[usize], topic: &str, n: usize) -> Vec<String> {
    let mut consumer = Consumer::new(
        cluster.client_via(via).await,
        ConsumerConfig::default().auto_offset_reset(OffsetReset::Earliest),
    );
    consumer.assign_topic(topic).await.unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < n && Instant::now() < deadline {
        for r in consumer.poll(Duration::from_millis(500)).await.unwrap() {
            got.push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
        }
    }
    got
}

/// Each partition's (leader, ISR) as broker index `via` answers Metadata (which needs no other
/// broker, unlike describing the topic, which asks each leader for its offsets).
async fn roles(
    cluster: &Cluster,
    via: usize,
    topic: &str,
) -> BTreeMap<u32, (Option<u32>, Vec<u32>)> {
    let client = cluster.client_via(&[via]).await;
    let req = MetadataRequest {
        topics: Some(vec![topic.to_string()]),
        allow_auto_topic_creation: false,
    };
    let (resp, _) = client
        .call_any(&req, Vec::new())
        .await
        .unwrap_or_else(|e| panic!("metadata via {via}: {e}\n{}", cluster.logs()));
    resp.topics[0]
        .partitions
        .iter()
        .map(|p| {
            let mut isr: Vec<u32> = p.isr.iter().map(|b| b.0).collect();
            isr.sort();
            (p.partition.0, (p.leader.map(|b| b.0), isr))
        })
        .collect()
}

/// Waits (up to `secs`) until `check` holds for the roles broker index `via` reports.
async fn wait_roles(
    cluster: &Cluster,
    via: usize,
    topic: &str,
    secs: u64,
    what: &str,
    check: impl Fn(&BTreeMap<u32, (Option<u32>, Vec<u32>)>) -> bool,
) -> BTreeMap<u32, (Option<u32>, Vec<u32>)> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let r = roles(cluster, via, topic).await;
        if check(&r) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {r:?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The batches of a partition's log on disk, as stored (their bytes, in offset order), read from
/// its segment files: what a broker holds, without asking it.
fn stored_batches(data_dir: &Path, topic: &str, partition: u32) -> Vec<Vec<u8>> {
    let topics = data_dir.join("topics");
    let dir = std::fs::read_dir(&topics)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{topic}.")))
        })
        .unwrap_or_else(|| panic!("no directory for {topic} in {}", topics.display()))
        .join(partition.to_string());
    let mut logs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    let mut out = Vec::new();
    for path in logs {
        let bytes = std::fs::read(&path).unwrap();
        for b in quiver_proto::batch::BatchIter::new(&bytes) {
            match b {
                Ok(b) => out.push(b.to_vec()),
                Err(_) => break, // the zeros after the last batch
            }
        }
    }
    out
}

/// Three brokers, RF=3, min.insync.replicas=2: every replica holds the same batches byte for
/// byte; with the leader killed -9 its partitions move to an in-sync follower and every
/// acknowledged record is still there, once; producing goes on with two; the killed broker
/// returns, catches up and rejoins the ISR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_the_leaders_death_and_replicas_agree() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start(3, FLAGS);
    let admin = Admin::new(cluster.client().await);
    admin
        .create_topic(
            NewTopic::new("r", 2)
                .replication_factor(3)
                .config("min.insync.replicas", "2"),
        )
        .await
        .unwrap();
    let all3 = |r: &BTreeMap<u32, (Option<u32>, Vec<u32>)>| {
        r.values()
            .all(|(l, isr)| l.is_some() && isr == &vec![1, 2, 3])
    };
    wait_roles(&cluster, 0, "r", 10, "every replica in sync", all3).await;

    produce_all(&cluster, &[0, 1, 2], "r", "a", 500).await;
    // Every replica holds the same batches (followers fetch within a moment; the high
    // watermark passed them all, so each has them durably already).
    for p in 0..2 {
        let copies: Vec<Vec<Vec<u8>>> = (0..3)
            .map(|i| stored_batches(&cluster.brokers[i].data_dir(), "r", p))
            .collect();
        assert!(!copies[0].is_empty());
        assert_eq!(
            copies[0], copies[1],
            "partition {p}: brokers 1 and 2 differ"
        );
        assert_eq!(
            copies[0], copies[2],
            "partition {p}: brokers 1 and 3 differ"
        );
    }

    // Kill the leader of partition 0.
    let before = roles(&cluster, 0, "r").await;
    let victim = before[&0].0.unwrap();
    cluster.brokers[(victim - 1) as usize].kill9();
    let alive: Vec<usize> = (0..3).filter(|i| *i as u32 + 1 != victim).collect();
    let moved = wait_roles(
        &cluster,
        alive[0],
        "r",
        15,
        "a new leader in the ISR",
        |r| {
            r.values()
                .all(|(l, isr)| l.is_some_and(|l| l != victim) && !isr.contains(&victim))
        },
    )
    .await;
    for (l, isr) in moved.values() {
        assert!(isr.contains(&l.unwrap()));
        assert_eq!(isr.len(), 2);
    }
    produce_all(&cluster, &alive, "r", "b", 500).await;
    let got = read_all(&cluster, &alive, "r", 1000).await;
    let distinct: BTreeSet<&String> = got.iter().collect();
    assert_eq!(
        distinct.len(),
        1000,
        "every acknowledged record\n{}",
        cluster.logs()
    );
    assert_eq!(got.len(), 1000, "each once");

    // The killed broker returns, catches up and rejoins every ISR.
    let idx = (victim - 1) as usize;
    cluster.launch(&[idx]);
    wait_roles(
        &cluster,
        alive[0],
        "r",
        20,
        "the returned broker back in sync",
        all3,
    )
    .await;
    for p in 0..2 {
        let copies: Vec<Vec<Vec<u8>>> = (0..3)
            .map(|i| stored_batches(&cluster.brokers[i].data_dir(), "r", p))
            .collect();
        assert_eq!(copies[0], copies[1], "partition {p} after the return");
        assert_eq!(copies[0], copies[2], "partition {p} after the return");
    }
}

/// The broker (id) coordinating `group`, as broker index `via` answers FindCoordinator.
async fn coordinator(cluster: &Cluster, via: usize, group: &str) -> u32 {
    use quiver_proto::api::group::{CoordinatorType, FindCoordinatorRequest};
    let client = cluster.client_via(&[via]).await;
    let req = FindCoordinatorRequest {
        key_type: CoordinatorType::Group,
        keys: vec![group.to_string()],
    };
    let (resp, _) = client.call_any(&req, Vec::new()).await.unwrap();
    resp.coordinators[0].node_id.0
}

/// A consumer group's committed offsets survive kill -9 of its coordinator: the offsets
/// partition's new leader, an in-sync follower, holds every commit it acknowledged, and its
/// coordinator serves them (and takes new ones).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_the_coordinators_death() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start(3, FLAGS);
    let admin = Admin::new(cluster.client().await);
    admin
        .create_topic(NewTopic::new("events", 3).replication_factor(3))
        .await
        .unwrap();
    produce_all(&cluster, &[0, 1, 2], "events", "e", 300).await;
    let mut consumer = Consumer::new(
        cluster.client().await,
        ConsumerConfig::default()
            .group_id("billing")
            .auto_offset_reset(OffsetReset::Earliest),
    );
    consumer
        .subscribe(vec!["events".to_string()])
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut read = 0;
    while read < 300 && Instant::now() < deadline {
        read += consumer
            .poll(Duration::from_millis(500))
            .await
            .unwrap()
            .len();
    }
    assert_eq!(read, 300);
    consumer.commit().await.unwrap();
    drop(consumer);

    let victim = coordinator(&cluster, 0, "billing").await;
    cluster.brokers[(victim - 1) as usize].kill9();
    let alive: Vec<usize> = (0..3).filter(|i| *i as u32 + 1 != victim).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = coordinator(&cluster, alive[0], "billing").await;
        if now != victim && now != 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no new coordinator\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let total = loop {
        let listed = Admin::new(cluster.client_via(&alive).await)
            .list_group_offsets("billing")
            .await;
        let why = match listed {
            Ok(offsets) => {
                let total: u64 = offsets.iter().map(|(_, o)| o.offset.0).sum();
                if total > 0 || Instant::now() > deadline {
                    break total;
                }
                "none yet".to_string()
            }
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "offsets not listed: {why}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        total,
        300,
        "every committed offset, read from the new coordinator\n{}",
        cluster.logs()
    );
}
