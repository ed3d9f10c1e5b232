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
    let mut errors = 0usize;
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < n && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(500)).await {
            Ok(records) => {
                for r in records {
                    got.push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
                }
            }
            // A retriable error while leaderships settle (the consumer refreshes and goes on);
            // anything else fails the test.
            Err(e) if e.is_retriable() => {
                errors += 1;
                if errors.is_power_of_two() {
                    eprintln!("poll: {e} (retrying; {errors} so far)");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("poll: {e}\n{}", cluster.logs()),
        }
    }
    if got.len() < n {
        let mut views = Vec::new();
        for i in 0..cluster.brokers.len() {
            if cluster.brokers[i].child.is_some() {
                views.push(format!(
                    "via broker {}: {:?}",
                    i + 1,
                    roles(cluster, i, topic).await
                ));
            }
        }
        eprintln!(
            "read {} of {n} records of {topic} in 30 s; (leader, ISR) by partition:\n{}",
            got.len(),
            views.join("\n")
        );
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
        if Instant::now() >= deadline {
            panic!("{what}: {r:?}\n{}\n{}", cluster.logs(), stacks(cluster));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every running broker's thread stacks (with gdb, when the machine has it), for a test that
/// found a broker silent.
fn stacks(cluster: &Cluster) -> String {
    let mut out = String::new();
    for (i, b) in cluster.brokers.iter().enumerate() {
        let Some(child) = b.child.as_ref() else {
            continue;
        };
        let got = std::process::Command::new("timeout")
            .args(["20", "gdb", "-p", &child.id().to_string(), "-batch", "-ex"])
            .arg("thread apply all bt 25")
            .output();
        if let Ok(o) = got {
            out.push_str(&format!(
                "---- broker {} stacks ----\n{}\n",
                i + 1,
                String::from_utf8_lossy(&o.stdout)
            ));
        }
    }
    out
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

/// Asserts that every broker's copy of a partition holds the same batches, byte for byte; if
/// not, says where they part (index, and each copy's base offset and leader epoch there).
fn same_batches(copies: &[Vec<Vec<u8>>], partition: u32, logs: &str) {
    let head = |b: Option<&Vec<u8>>| {
        b.and_then(|b| quiver_proto::batch::header(b).ok())
            .map(|h| (h.base_offset.get(), h.leader_epoch.get(), h.batch_len.get()))
    };
    // Each copy as runs of one epoch: (epoch, first base offset, batches).
    let epochs = |c: &Vec<Vec<u8>>| {
        let mut runs: Vec<(u32, u64, usize)> = Vec::new();
        for b in c {
            let Some((base, epoch, _)) = head(Some(b)) else {
                continue;
            };
            match runs.last_mut() {
                Some(r) if r.0 == epoch => r.2 += 1,
                _ => runs.push((epoch, base, 1)),
            }
        }
        runs
    };
    for (i, c) in copies.iter().enumerate().skip(1) {
        if *c == copies[0] {
            continue;
        }
        let at = (0..c.len().max(copies[0].len()))
            .find(|&k| c.get(k) != copies[0].get(k))
            .unwrap();
        let runs: Vec<String> = copies
            .iter()
            .enumerate()
            .map(|(j, c)| format!("broker {}: {:?}", j + 1, epochs(c)))
            .collect();
        let relevant: Vec<&str> = logs
            .lines()
            .filter(|l| {
                l.starts_with("----")
                    || [
                        "replication",
                        "leader",
                        "ISR",
                        "isr",
                        "truncat",
                        "epoch",
                        "ready",
                    ]
                    .iter()
                    .any(|w| l.contains(w))
            })
            .collect();
        panic!(
            "partition {partition}: broker 1 holds {} batches, broker {} {}; they part at batch \
             {at}: (base offset, epoch, length) {:?} against {:?}; the batch before: {:?}\n\
             epochs (epoch, first offset, batches):\n{}\nthe brokers' logs on replication:\n{}",
            copies[0].len(),
            i + 1,
            c.len(),
            head(copies[0].get(at)),
            head(c.get(at)),
            head(copies[0].get(at.wrapping_sub(1))),
            runs.join("\n"),
            relevant.join("\n"),
        );
    }
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
        .unwrap_or_else(|e| panic!("creating a topic: {e}\n{}", cluster.logs()));
    let all3 = |r: &BTreeMap<u32, (Option<u32>, Vec<u32>)>| {
        r.values()
            .all(|(l, isr)| l.is_some() && isr == &vec![1, 2, 3])
    };
    wait_roles(&cluster, 0, "r", 10, "every replica in sync", all3).await;

    produce_all(&cluster, &[0, 1, 2], "r", "a", 500).await;
    // Every replica holds the same batches. A follower counts toward the high watermark once
    // it has fetched, and its write of what it fetched may still be in flight (an O_DSYNC write
    // completes only with its cache flush): the files are read again, for at most 10 s, until
    // the copies agree, and then compared.
    for p in 0..2 {
        let read = || -> Vec<Vec<Vec<u8>>> {
            (0..3)
                .map(|i| stored_batches(&cluster.brokers[i].data_dir(), "r", p))
                .collect()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut copies = read();
        while (copies[0].is_empty() || copies[0] != copies[1] || copies[0] != copies[2])
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
            copies = read();
        }
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
        same_batches(&copies, p, &cluster.logs());
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
        .unwrap_or_else(|e| panic!("creating a topic: {e}\n{}", cluster.logs()));
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

/// ReplicaFetch from a hostile or confused peer: each fault gets its error code, nothing is
/// read or recorded for it (the ISR and the high watermark do not move), a cancelled long poll
/// costs nothing, and the real followers and producers go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_replica_fetches_are_refused_and_replication_goes_on() {
    use quiver_proto::api::cluster::{
        ReplicaFetchPartition, ReplicaFetchRequest, ReplicaFetchResponse, ReplicaFetchTopic,
    };
    use quiver_proto::api::metadata::{CreatableTopic, CreateTopicsRequest, ReplicaAssignment};
    use quiver_proto::api::{ApiKey, Message as _};
    use quiver_proto::{BrokerId, ErrorCode, LeaderEpoch, Offset, PartitionId};
    use quiver_testkit::hostile::{request, Hostile};

    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = Cluster::start(3, FLAGS);
    let client = cluster.client().await;
    // "h" led by broker 1 with followers 2 and 3; "two" on brokers 1 and 3 only.
    let create = |name: &str, replicas: &[u32]| CreateTopicsRequest {
        topics: vec![CreatableTopic {
            name: name.to_string(),
            num_partitions: None,
            replication_factor: None,
            assignments: vec![ReplicaAssignment {
                partition: PartitionId(0),
                broker_ids: replicas.iter().map(|b| BrokerId(*b)).collect(),
            }],
            configs: vec![],
        }],
        timeout_ms: 5000,
        validate_only: false,
    };
    for (name, replicas) in [("h", &[1, 2, 3][..]), ("two", &[1, 3][..])] {
        let (resp, _) = client
            .call_any(&create(name, replicas), Vec::new())
            .await
            .unwrap();
        assert_eq!(resp.topics[0].error_code, ErrorCode::None, "{name}");
    }
    let all3 = |r: &BTreeMap<u32, (Option<u32>, Vec<u32>)>| r[&0] == (Some(1), vec![1, 2, 3]);
    wait_roles(&cluster, 0, "h", 10, "h in sync", all3).await;
    produce_all(&cluster, &[0], "h", "h", 100).await;
    let broker2_epoch = {
        let d = Admin::new(cluster.client_via(&[0]).await)
            .describe_quorum()
            .await
            .unwrap();
        d.brokers.iter().find(|b| b.id == 2).unwrap().epoch
    };

    let target = &cluster.brokers[0];
    let as2 = Hostile::connect_as(target, &cluster.brokers[1]).await;
    let part = |p: u32, epoch: u32, offset: u64, last: Option<u32>| ReplicaFetchPartition {
        partition: PartitionId(p),
        current_leader_epoch: LeaderEpoch(epoch),
        fetch_offset: Offset(offset),
        last_fetched_epoch: last.map(LeaderEpoch),
        log_start_offset: Offset(0),
        partition_max_bytes: 1 << 20,
    };
    let fetch = |replica: u32, epoch: u64, topics: Vec<(&str, Vec<ReplicaFetchPartition>)>| {
        ReplicaFetchRequest {
            replica_id: BrokerId(replica),
            broker_epoch: epoch,
            max_wait_ms: 0,
            min_bytes: 1,
            max_bytes: 1 << 20,
            topics: topics
                .into_iter()
                .map(|(name, partitions)| ReplicaFetchTopic {
                    name: name.to_string(),
                    partitions,
                })
                .collect(),
        }
    };
    let h_epoch = {
        let req = MetadataRequest {
            topics: Some(vec!["h".into()]),
            allow_auto_topic_creation: false,
        };
        let (resp, _) = client.call_any(&req, Vec::new()).await.unwrap();
        resp.topics[0].partitions[0].leader_epoch.0
    };

    // Whole-request refusals.
    let strangers = [
        ("no certificate", Hostile::connect(target).await, 2),
        (
            "broker 3's certificate for broker 2",
            Hostile::connect_as(target, &cluster.brokers[2]).await,
            2,
        ),
    ];
    for (what, h, replica) in strangers {
        let req = fetch(
            replica,
            broker2_epoch,
            vec![("h", vec![part(0, h_epoch, 0, None)])],
        );
        let resp = h.call(&req, &[]).await.ok::<ReplicaFetchRequest>();
        assert_eq!(
            resp.error_code,
            ErrorCode::ClusterAuthorizationFailed,
            "{what}"
        );
        assert!(resp.topics.is_empty(), "{what}: nothing read");
    }
    let whole: Vec<(&str, ReplicaFetchRequest, ErrorCode)> = vec![
        (
            "an unknown broker",
            fetch(9, 1, vec![("h", vec![part(0, h_epoch, 0, None)])]),
            ErrorCode::InvalidRequest,
        ),
        (
            "a stale broker epoch",
            fetch(
                2,
                broker2_epoch - 1,
                vec![("h", vec![part(0, h_epoch, 0, None)])],
            ),
            ErrorCode::StaleBrokerEpoch,
        ),
    ];
    for (what, req, want) in whole {
        let resp = as2.call(&req, &[]).await.ok::<ReplicaFetchRequest>();
        assert_eq!(resp.error_code, want, "{what}");
    }
    // The same partition twice is refused before any work.
    let twice = fetch(
        2,
        broker2_epoch,
        vec![(
            "h",
            vec![part(0, h_epoch, 0, None), part(0, h_epoch, 0, None)],
        )],
    );
    let e = as2.call(&twice, &[]).await.error();
    assert_eq!(e.error_code, ErrorCode::InvalidRequest);

    // Per-partition refusals, all in one request; none records progress.
    let req = fetch(
        2,
        broker2_epoch,
        vec![
            ("nope", vec![part(0, 0, 0, None)]),
            (
                "h",
                vec![part(7, h_epoch, 0, None), part(0, h_epoch + 5, 0, None)],
            ),
            ("two", vec![part(0, 0, 0, None)]),
        ],
    );
    let resp = as2.call(&req, &[]).await.ok::<ReplicaFetchRequest>();
    assert_eq!(resp.error_code, ErrorCode::None);
    let codes: Vec<(String, u32, ErrorCode)> = resp
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.clone(), p.partition.0, p.error_code))
        })
        .collect();
    assert_eq!(
        codes,
        vec![
            ("nope".into(), 0, ErrorCode::UnknownTopicOrPartition),
            ("h".into(), 7, ErrorCode::UnknownTopicOrPartition),
            ("h".into(), 0, ErrorCode::UnknownLeaderEpoch),
            ("two".into(), 0, ErrorCode::ReplicaNotAvailable),
        ]
    );
    if h_epoch > 0 {
        let old = fetch(
            2,
            broker2_epoch,
            vec![("h", vec![part(0, h_epoch - 1, 0, None)])],
        );
        let resp = as2.call(&old, &[]).await.ok::<ReplicaFetchRequest>();
        assert_eq!(
            resp.topics[0].partitions[0].error_code,
            ErrorCode::FencedLeaderEpoch
        );
    }
    // A follower claiming more than the leader has is told where the leader's log ends (it
    // would truncate), and its claim moves nothing.
    let (meta, _) = client
        .call_any(
            &MetadataRequest {
                topics: Some(vec!["h".into()]),
                allow_auto_topic_creation: false,
            },
            Vec::new(),
        )
        .await
        .unwrap();
    let isr_before = meta.topics[0].partitions[0].isr.clone();
    let ahead = fetch(
        2,
        broker2_epoch,
        vec![("h", vec![part(0, h_epoch, 1_000_000, Some(h_epoch))])],
    );
    let resp = as2.call(&ahead, &[]).await.ok::<ReplicaFetchRequest>();
    let p = &resp.topics[0].partitions[0];
    assert_eq!(p.error_code, ErrorCode::None);
    let d = p.diverging_epoch.as_ref().expect("told to truncate");
    assert_eq!(
        d.end_offset, p.high_watermark,
        "the leader's end, all of it replicated"
    );
    assert!(p.records.is_empty());

    // A long poll cancelled mid-wait; then the broker still serves, replication goes on.
    let mut poll = fetch(
        2,
        broker2_epoch,
        vec![("h", vec![part(0, h_epoch, d.end_offset.0, Some(d.epoch.0))])],
    );
    poll.max_wait_ms = 5_000;
    let bytes = request(ApiKey::ReplicaFetch, &poll.encode_bytes(), &[]);
    as2.send_and_cancel(&bytes, Duration::from_millis(100))
        .await;
    produce_all(&cluster, &[0], "h", "after", 100).await;
    let got = read_all(&cluster, &[0], "h", 200).await;
    assert_eq!(got.len(), 200);
    let roles_after = roles(&cluster, 0, "h").await;
    assert_eq!(
        roles_after[&0],
        (Some(1), vec![1, 2, 3]),
        "the ISR did not move"
    );
    let _ = (isr_before, ReplicaFetchResponse::default());
}

/// A rolling restart under load: SIGTERM moves a broker's leaderships to in-sync followers
/// before it stops (quickly: not after its session lapses), a producer at acks=all keeps every
/// record acknowledged and loses none, the broker comes back, catches up, rejoins the ISR and
/// leads its preferred partitions again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_leaderships_over_and_a_rolling_restart_loses_nothing() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    // A long session timeout: leaderships must move by the controlled shutdown, not by fencing.
    let mut cluster = Cluster::start(
        3,
        &[
            "--broker-session-timeout-ms",
            "30000",
            "--replica-lag-time-max-ms",
            "1500",
        ],
    );
    let admin = Admin::new(cluster.client().await);
    admin
        .create_topic(
            NewTopic::new("roll", 3)
                .replication_factor(3)
                .config("min.insync.replicas", "2"),
        )
        .await
        .unwrap_or_else(|e| panic!("creating a topic: {e}\n{}", cluster.logs()));
    let all3 = |r: &BTreeMap<u32, (Option<u32>, Vec<u32>)>| {
        r.values()
            .all(|(l, isr)| l.is_some() && isr == &vec![1, 2, 3])
    };
    let before = wait_roles(&cluster, 0, "roll", 10, "all in sync", all3).await;

    // A producer writing all along, acks=all, idempotent.
    let config = ProducerConfig {
        request_timeout: Duration::from_secs(10),
        delivery_timeout: Duration::from_secs(60),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(cluster.client().await, config).unwrap();
    let writer = tokio::spawn(async move {
        let mut deliveries = Vec::new();
        for i in 0..3000u32 {
            let r = ProducerRecord::new("roll")
                .key(format!("k{i}"))
                .value(format!("v{i}"));
            deliveries.push(producer.enqueue(r).await.unwrap());
            if i.is_multiple_of(100) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let mut failed = Vec::new();
        if let Err(e) = producer.flush().await {
            failed.push(format!("flush: {e}"));
        }
        for d in deliveries {
            if let Err(e) = d.await {
                failed.push(e.to_string());
            }
        }
        failed
    });

    for idx in [2usize, 0] {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let id = idx as u32 + 1;
        let started = Instant::now();
        assert_eq!(cluster.brokers[idx].terminate(), Some(0), "a clean stop");
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(10),
            "stopped in {took:?}\n{}",
            cluster.logs()
        );
        let other = if idx == 0 { 1 } else { 0 };
        // Led elsewhere at once: well before a 30 s session could lapse.
        let moved = wait_roles(
            &cluster,
            other,
            "roll",
            3,
            "leaderships moved on SIGTERM",
            |r| {
                r.values()
                    .all(|(l, isr)| l.is_some_and(|l| l != id) && !isr.contains(&id))
            },
        )
        .await;
        assert!(moved.values().all(|(_, isr)| isr.len() == 2));
        assert!(
            cluster.brokers[idx]
                .log()
                .contains("controlled shutdown: leaderships moved"),
            "{}",
            cluster.brokers[idx].log()
        );
        cluster.launch(&[idx]);
        wait_roles(
            &cluster,
            other,
            "roll",
            30,
            "back in sync, preferred leaders back",
            |r| all3(r) && *r == before,
        )
        .await;
    }
    let failed = writer.await.unwrap();
    assert!(
        failed.is_empty(),
        "acknowledgements failed: {failed:?}\n{}",
        cluster.logs()
    );
    let got = read_all(&cluster, &[0, 1, 2], "roll", 3000).await;
    let distinct: BTreeSet<&String> = got.iter().collect();
    assert_eq!(distinct.len(), 3000, "every record\n{}", cluster.logs());
    assert_eq!(got.len(), 3000, "each once");
}

/// A record acknowledged with acks=all survives kill -9 of all three brokers at once: every
/// in-sync replica had it on disk before the acknowledgement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_survives_kill_9_of_every_broker_at_once() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start(3, FLAGS);
    Admin::new(cluster.client().await)
        .create_topic(
            NewTopic::new("all", 3)
                .replication_factor(3)
                .config("min.insync.replicas", "2"),
        )
        .await
        .unwrap_or_else(|e| panic!("creating a topic: {e}\n{}", cluster.logs()));
    let all3 = |r: &BTreeMap<u32, (Option<u32>, Vec<u32>)>| {
        r.values()
            .all(|(l, isr)| l.is_some() && isr == &vec![1, 2, 3])
    };
    wait_roles(&cluster, 0, "all", 10, "all in sync", all3).await;
    produce_all(&cluster, &[0, 1, 2], "all", "x", 2000).await;
    // Every replica holds every acknowledged batch on disk before the power goes.
    let ends: Vec<usize> = (0..3)
        .map(|p| stored_batches(&cluster.brokers[0].data_dir(), "all", p).len())
        .collect();
    for i in 0..3 {
        cluster.brokers[i].kill9();
    }
    cluster.launch(&[0, 1, 2]);
    let got = read_all(&cluster, &[0, 1, 2], "all", 2000).await;
    let distinct: BTreeSet<&String> = got.iter().collect();
    assert_eq!(
        distinct.len(),
        2000,
        "every acknowledged record\n{}",
        cluster.logs()
    );
    assert_eq!(got.len(), 2000, "each once");
    for (p, n) in ends.iter().enumerate() {
        for i in 0..3 {
            let b = stored_batches(&cluster.brokers[i].data_dir(), "all", p as u32);
            assert!(
                b.len() >= *n,
                "broker {} partition {p}: {} of {n} batches",
                i + 1,
                b.len()
            );
        }
    }
}

/// Faults while an idempotent producer writes at acks=all and a consumer group reads and
/// commits: the leader of a partition killed -9 and restarted, a follower stopped (SIGSTOP)
/// past the lag limit and resumed, a replica moved off its broker and back (which copies the
/// log anew), twice each. At the end every acknowledged record is there exactly once, each
/// partition holds its records in the order the producer sent them, the replicas hold the same
/// bytes, the group read every acknowledged record, and its committed offsets never went back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_under_load_lose_duplicate_and_reorder_nothing() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start(3, FLAGS);
    Admin::new(cluster.client().await)
        .create_topic(
            NewTopic::new("chaos", 2)
                .replication_factor(3)
                .config("min.insync.replicas", "2"),
        )
        .await
        .unwrap_or_else(|e| panic!("creating a topic: {e}\n{}", cluster.logs()));
    let all3 = |r: &BTreeMap<u32, (Option<u32>, Vec<u32>)>| {
        r.values()
            .all(|(l, isr)| l.is_some() && isr == &vec![1, 2, 3])
    };
    wait_roles(&cluster, 0, "chaos", 10, "all in sync", all3).await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let config = ProducerConfig {
        request_timeout: Duration::from_secs(10),
        delivery_timeout: Duration::from_secs(90),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(cluster.client().await, config).unwrap();
    let stop_w = stop.clone();
    let writer = tokio::spawn(async move {
        let mut deliveries = Vec::new();
        let mut i = 0u32;
        while !stop_w.load(std::sync::atomic::Ordering::Relaxed) {
            let r = ProducerRecord::new("chaos")
                .key(format!("k{}", i % 64))
                .value(format!("{i}"));
            deliveries.push((i, producer.enqueue(r).await.unwrap()));
            i += 1;
            if i.is_multiple_of(50) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let mut acked = Vec::new();
        let mut failed = Vec::new();
        if let Err(e) = producer.flush().await {
            failed.push(format!("flush: {e}"));
        }
        for (i, d) in deliveries {
            match d.await {
                Ok(m) => acked.push((m.partition.0, m.offset.unwrap().0, i)),
                Err(e) => failed.push(e.to_string()),
            }
        }
        (acked, failed)
    });

    // The group: reads, commits after every poll, until it has read every acknowledged record
    // (sent to it once the writer is done) or 60 s after that.
    let (acked_tx, mut acked_rx) =
        tokio::sync::watch::channel::<Option<BTreeSet<(u32, u64)>>>(None);
    let reader_client = cluster.client().await;
    let reader = tokio::spawn(async move {
        let mut consumer = Consumer::new(
            reader_client,
            ConsumerConfig::default()
                .group_id("chaos-readers")
                .auto_offset_reset(OffsetReset::Earliest),
        );
        consumer.subscribe(vec!["chaos".to_string()]).await.unwrap();
        let mut seen: BTreeSet<(u32, u64)> = BTreeSet::new();
        let mut errors: Vec<String> = Vec::new();
        let mut fenced = 0usize;
        let mut deadline: Option<Instant> = None;
        loop {
            let done = acked_rx.borrow_and_update().clone();
            if let Some(want) = done {
                let d = *deadline.get_or_insert(Instant::now() + Duration::from_secs(60));
                if want.is_subset(&seen) || Instant::now() > d {
                    break;
                }
            }
            match consumer.poll(Duration::from_millis(300)).await {
                Ok(records) => {
                    let any = !records.is_empty();
                    for r in records {
                        seen.insert((r.partition.0, r.offset.0));
                    }
                    if any {
                        use quiver_proto::ErrorCode as C;
                        match consumer.commit().await {
                            Ok(()) => {}
                            Err(e) if e.is_retriable() => {}
                            // The coordinator moved with its offsets partition's leader and
                            // does not know this member (group membership is not replicated,
                            // only committed offsets): the commit fails, as Kafka's
                            // CommitFailedException, and the consumer joins again.
                            Err(e)
                                if matches!(
                                    e.code(),
                                    Some(
                                        C::UnknownMemberId
                                            | C::FencedMemberEpoch
                                            | C::StaleMemberEpoch
                                    )
                                ) =>
                            {
                                fenced += 1
                            }
                            Err(e) => errors.push(format!("commit: {e}")),
                        }
                    }
                }
                Err(e) if e.is_retriable() => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => {
                    errors.push(format!("poll: {e}"));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        let _ = consumer.commit().await;
        eprintln!("the group's commits refused while it joined again: {fenced}");
        (seen, errors)
    });
    // Committed offsets, as the coordinator answers them, never go back.
    let watch_admin = Admin::new(cluster.client().await);
    let stop_watch = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_watch_w = stop_watch.clone();
    let watcher_task = tokio::spawn(async move {
        let mut highest: BTreeMap<u32, u64> = BTreeMap::new();
        let mut backwards = Vec::new();
        let mut answers = 0usize;
        while !stop_watch_w.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(offsets) = watch_admin.list_group_offsets("chaos-readers").await {
                answers += 1;
                for (tp, o) in offsets {
                    let h = highest.entry(tp.partition.0).or_insert(0);
                    if o.offset.0 < *h {
                        backwards.push(format!(
                            "partition {}: committed {} after {}",
                            tp.partition.0, o.offset.0, h
                        ));
                    }
                    *h = (*h).max(o.offset.0);
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        (answers, backwards)
    });

    let pid_of = |c: &Cluster, idx: usize| c.brokers[idx].child.as_ref().unwrap().id() as i32;
    for round in 0..2 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Kill -9 the leader of partition `round`, wait for a new one, bring it back.
        let roles_now = roles(&cluster, 0, "chaos").await;
        let victim = roles_now[&(round % 2)].0.unwrap();
        let vi = (victim - 1) as usize;
        cluster.brokers[vi].kill9();
        let other = (vi + 1) % 3;
        wait_roles(&cluster, other, "chaos", 15, "led elsewhere", |r| {
            r.values().all(|(l, _)| l.is_some_and(|l| l != victim))
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster.launch(&[vi]);
        wait_roles(&cluster, other, "chaos", 30, "back in sync", all3).await;

        // SIGSTOP a follower of partition 1 past the lag limit, then resume it.
        let roles_now = roles(&cluster, 0, "chaos").await;
        let leader = roles_now[&1].0.unwrap();
        let fi = (0..3).find(|i| *i as u32 + 1 != leader).unwrap();
        let follower = fi as u32 + 1;
        let pid = pid_of(&cluster, fi);
        // SAFETY: kill(2) with plain integers on our own child process.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        let watcher = (0..3).find(|i| *i != fi).unwrap();
        wait_roles(
            &cluster,
            watcher,
            "chaos",
            20,
            "the stopped follower out of the ISR",
            |r| !r[&1].1.contains(&follower),
        )
        .await;
        // The leader says so in its metrics, with how far behind the follower is.
        let li = (leader - 1) as usize;
        let seen = Cluster::wait_until(Duration::from_secs(10), || {
            cluster.brokers[li].metric("quiver_under_replicated_partitions") >= 1.0
        });
        assert!(seen.is_some(), "{}", cluster.brokers[li].metrics_text());
        let behind = format!(
            "quiver_replica_lag_bytes{{topic=\"chaos\",partition=\"1\",follower=\"{follower}\"}}"
        );
        let lagging = Cluster::wait_until(Duration::from_secs(10), || {
            cluster.brokers[li].metric(&behind) > 0.0
        });
        assert!(lagging.is_some(), "{}", cluster.brokers[li].metrics_text());
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGCONT) };
        wait_roles(
            &cluster,
            watcher,
            "chaos",
            30,
            "the resumed follower back in sync",
            all3,
        )
        .await;

        // Move a follower's replica of partition `round` away, then back as the preferred
        // replica: it copies the whole log again, joins the ISR, and leads.
        let p = round;
        let roles_now = roles(&cluster, 0, "chaos").await;
        let leader = roles_now[&p].0.unwrap();
        let moved = (1..=3).find(|b| *b != leader).unwrap();
        let rest: Vec<u32> = (1..=3).filter(|b| *b != moved).collect();
        let admin = Admin::new(cluster.client().await);
        admin
            .reassign_partition("chaos", p, &rest)
            .await
            .unwrap_or_else(|e| panic!("reassigning away: {e}\n{}", cluster.logs()));
        wait_moved(&cluster, 0, "chaos", p, &rest, 30).await;
        let gone = Cluster::wait_until(Duration::from_secs(10), || {
            !holds_partition(&cluster, (moved - 1) as usize, "chaos", p)
        });
        assert!(gone.is_some(), "broker {moved} kept its copy of {p}");
        let back = [vec![moved], rest.clone()].concat();
        admin
            .reassign_partition("chaos", p, &back)
            .await
            .unwrap_or_else(|e| panic!("reassigning back: {e}\n{}", cluster.logs()));
        wait_moved(&cluster, 0, "chaos", p, &back, 30).await;
        wait_roles(
            &cluster,
            0,
            "chaos",
            30,
            "the moved replica leads again",
            |r| r[&p].0 == Some(moved) && all3(r),
        )
        .await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, failed) = writer.await.unwrap();
    let want: BTreeSet<(u32, u64)> = acked.iter().map(|(p, o, _)| (*p, *o)).collect();
    acked_tx.send(Some(want.clone())).unwrap();
    let (group_seen, group_errors) = reader.await.unwrap();
    stop_watch.store(true, std::sync::atomic::Ordering::Relaxed);
    let (answers, backwards) = watcher_task.await.unwrap();
    let unread: Vec<&(u32, u64)> = want.difference(&group_seen).take(10).collect();
    assert!(
        unread.is_empty(),
        "the group did not read {} acknowledged records, e.g. {unread:?}; errors {group_errors:?}\n{}",
        want.difference(&group_seen).count(),
        cluster.logs()
    );
    assert!(
        group_errors.is_empty(),
        "the group's non-retriable errors: {group_errors:?}"
    );
    assert!(answers > 10, "committed offsets listed {answers} times");
    assert!(
        backwards.is_empty(),
        "committed offsets went back: {backwards:?}\n{}",
        cluster.logs()
    );
    assert!(
        failed.is_empty(),
        "failed acknowledgements: {failed:?}\n{}",
        cluster.logs()
    );
    assert!(acked.len() > 500, "{} records acknowledged", acked.len());

    // Exactly once, in the order sent, per partition: read each partition from the start.
    let mut consumer = Consumer::new(
        cluster.client().await,
        ConsumerConfig::default().auto_offset_reset(OffsetReset::Earliest),
    );
    consumer.assign_topic("chaos").await.unwrap();
    let mut read: BTreeMap<u32, Vec<(u64, u32)>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while read.values().map(Vec::len).sum::<usize>() < acked.len() && Instant::now() < deadline {
        for r in consumer.poll(Duration::from_millis(500)).await.unwrap() {
            let v: u32 = String::from_utf8(r.value.unwrap().to_vec())
                .unwrap()
                .parse()
                .unwrap();
            read.entry(r.partition.0).or_default().push((r.offset.0, v));
        }
    }
    let total: usize = read.values().map(Vec::len).sum();
    if total != acked.len() {
        // Which acknowledged records were not read, by partition, and what each broker holds.
        let mut missing: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        for (p, o, i) in &acked {
            if !read
                .get(p)
                .is_some_and(|r| r.iter().any(|(off, v)| off == o && v == i))
            {
                missing.entry(*p).or_default().push(*o);
            }
        }
        let summary: Vec<String> = missing
            .iter()
            .map(|(p, offs)| {
                format!(
                    "partition {p}: {} missing, offsets {}..={}; read up to {:?}",
                    offs.len(),
                    offs.first().unwrap(),
                    offs.last().unwrap(),
                    read.get(p).and_then(|r| r.last()).map(|(o, _)| *o)
                )
            })
            .collect();
        let mut views = Vec::new();
        for i in 0..3 {
            views.push(format!(
                "via broker {}: {:?}",
                i + 1,
                roles(&cluster, i, "chaos").await
            ));
        }
        panic!(
            "every acknowledged record, once: read {total} of {}\n{}\n{}\n{}",
            acked.len(),
            summary.join("\n"),
            views.join("\n"),
            cluster.logs()
        );
    }
    for (p, recs) in &read {
        let values: Vec<u32> = recs.iter().map(|(_, v)| *v).collect();
        let mut sorted = values.clone();
        sorted.sort();
        assert_eq!(values, sorted, "partition {p} in the order sent");
    }
    for (p, o, i) in &acked {
        assert!(
            read[p].iter().any(|(off, v)| off == o && v == i),
            "acknowledged {i} at {p}/{o} not found there"
        );
    }
    // The replicas hold the same bytes (all in sync, nothing being written).
    wait_roles(&cluster, 0, "chaos", 30, "all in sync at the end", all3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for p in 0..2 {
        let copies: Vec<Vec<Vec<u8>>> = (0..3)
            .map(|i| stored_batches(&cluster.brokers[i].data_dir(), "chaos", p))
            .collect();
        same_batches(&copies, p, &cluster.logs());
    }
}

/// A partition's replicas and the reassignment under way (`adding`, `removing`), as broker
/// index `via` answers Metadata.
async fn placement(
    cluster: &Cluster,
    via: usize,
    topic: &str,
    partition: u32,
) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let client = cluster.client_via(&[via]).await;
    let req = MetadataRequest {
        topics: Some(vec![topic.to_string()]),
        allow_auto_topic_creation: false,
    };
    let (resp, _) = client
        .call_any(&req, Vec::new())
        .await
        .unwrap_or_else(|e| panic!("metadata via {via}: {e}\n{}", cluster.logs()));
    let p = resp.topics[0]
        .partitions
        .iter()
        .find(|p| p.partition.0 == partition)
        .unwrap();
    let ids = |v: &[quiver_proto::BrokerId]| v.iter().map(|b| b.0).collect::<Vec<u32>>();
    (
        ids(&p.replicas),
        ids(&p.adding_replicas),
        ids(&p.removing_replicas),
    )
}

/// Waits (up to `secs`) until the partition sits on exactly `target` with no move under way,
/// as broker index `via` sees it.
async fn wait_moved(
    cluster: &Cluster,
    via: usize,
    topic: &str,
    partition: u32,
    target: &[u32],
    secs: u64,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let now = placement(cluster, via, topic, partition).await;
        if now.0 == target && now.1.is_empty() && now.2.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "partition {partition} of {topic} not moved to {target:?} in {secs} s: \
                 (replicas, adding, removing) {now:?}\n{}",
                cluster.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether broker index `i` still holds a directory for the partition.
fn holds_partition(cluster: &Cluster, i: usize, topic: &str, partition: u32) -> bool {
    let topics = cluster.brokers[i].data_dir().join("topics");
    std::fs::read_dir(&topics)
        .map(|d| {
            d.flatten().any(|e| {
                e.file_name().to_str().is_some_and(|n| {
                    n.starts_with(&format!("{topic}.")) && !n.ends_with(".deleted")
                }) && e.path().join(partition.to_string()).is_dir()
            })
        })
        .unwrap_or(false)
}

/// `streamctl topic reassign` through the SDK: a partition led by one broker moves to the
/// third broker (which copies the whole log and joins the ISR before the old leader leaves)
/// while a producer writes at acks=all; nothing acknowledged is lost, duplicated or reordered,
/// the new replicas hold the same bytes, and the removed broker deletes its copy. Bad
/// reassignments are refused and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_moves_to_another_broker_under_acks_all() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = Cluster::start(3, FLAGS);
    let admin = Admin::new(cluster.client().await);
    admin
        .create_topic(
            NewTopic::new("moving", 1)
                .replication_factor(2)
                .config("min.insync.replicas", "2"),
        )
        .await
        .unwrap_or_else(|e| panic!("creating a topic: {e}\n{}", cluster.logs()));
    produce_all(&cluster, &[0, 1, 2], "moving", "before-", 2000).await;
    let (replicas, _, _) = placement(&cluster, 0, "moving", 0).await;
    let (old, kept) = (replicas[0], replicas[1]);
    let new = (1..=3).find(|b| !replicas.contains(b)).unwrap();

    // Refused, and nothing changes.
    let refused: &[(&[u32], &str)] = &[
        (&[], "no replicas"),
        (&[new, new], "a broker twice"),
        (&[new, 9], "an unknown broker"),
        (&[0], "broker 0"),
    ];
    for (target, why) in refused {
        let e = admin
            .reassign_partition("moving", 0, target)
            .await
            .expect_err(why);
        assert_eq!(
            e.code(),
            Some(quiver_proto::ErrorCode::InvalidReplicaAssignment),
            "{why}: {e}"
        );
    }
    for (topic, partition) in [("nowhere", 0), ("moving", 1)] {
        let e = admin
            .reassign_partition(topic, partition, &[1, 2])
            .await
            .expect_err("unknown partition");
        assert_eq!(
            e.code(),
            Some(quiver_proto::ErrorCode::UnknownTopicOrPartition),
            "{topic}/{partition}: {e}"
        );
    }
    // One partition named twice in one request: refused whole, before any work.
    {
        use quiver_proto::api::metadata::{AlterPartitionReassignmentsRequest, ReassignPartition};
        let entry = ReassignPartition {
            topic: "moving".into(),
            partition: quiver_proto::PartitionId(0),
            replicas: vec![quiver_proto::BrokerId(new)],
        };
        let req = AlterPartitionReassignmentsRequest {
            timeout_ms: 5_000,
            partitions: vec![entry.clone(), entry],
        };
        let e = cluster
            .client()
            .await
            .call_any(&req, Vec::new())
            .await
            .expect_err("a repeated partition");
        assert_eq!(
            e.code(),
            Some(quiver_proto::ErrorCode::InvalidRequest),
            "{e}"
        );
    }
    assert_eq!(
        placement(&cluster, 0, "moving", 0).await,
        (replicas.clone(), vec![], vec![]),
        "refused reassignments change nothing"
    );

    // Move the leader's replica to the third broker while a producer writes.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = Producer::new(
        cluster.client().await,
        ProducerConfig {
            request_timeout: Duration::from_secs(10),
            delivery_timeout: Duration::from_secs(60),
            ..ProducerConfig::default()
        },
    )
    .unwrap();
    let stop_w = stop.clone();
    let writer = tokio::spawn(async move {
        let mut deliveries = Vec::new();
        let mut i = 0u32;
        while !stop_w.load(std::sync::atomic::Ordering::Relaxed) {
            let r = ProducerRecord::new("moving").value(format!("during-{i}"));
            deliveries.push(producer.enqueue(r).await.unwrap());
            i += 1;
            if i.is_multiple_of(50) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        producer.flush().await.unwrap();
        let mut acked = 0usize;
        for d in deliveries {
            d.await.unwrap();
            acked += 1;
        }
        acked
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    admin
        .reassign_partition("moving", 0, &[new, kept])
        .await
        .unwrap_or_else(|e| panic!("reassigning: {e}\n{}", cluster.logs()));
    wait_moved(&cluster, 0, "moving", 0, &[new, kept], 30).await;
    let (leader, isr) = wait_roles(&cluster, 0, "moving", 10, "the new replica leads", |r| {
        r[&0].0 == Some(new)
    })
    .await[&0]
        .clone();
    let mut both = vec![new, kept];
    both.sort();
    assert_eq!((leader, isr), (Some(new), both));
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let during = writer.await.unwrap();
    assert!(
        during > 100,
        "{during} records acknowledged during the move"
    );

    // Everything acknowledged, once and in order, from the new leader.
    let read = read_all(&cluster, &[0, 1, 2], "moving", 2000 + during).await;
    let mut expect: Vec<String> = (0..2000).map(|i| format!("before-{i}")).collect();
    expect.extend((0..during).map(|i| format!("during-{i}")));
    if read != expect {
        let at = (0..read.len().max(expect.len()))
            .find(|&i| read.get(i) != expect.get(i))
            .unwrap();
        let around = |v: &[String]| v[at.saturating_sub(3)..(at + 4).min(v.len())].to_vec();
        panic!(
            "every record once, in the order sent: read {} of {}, first difference at {at}: \
             read {:?}, expected {:?}\n{}",
            read.len(),
            expect.len(),
            around(&read),
            around(&expect),
            cluster.logs()
        );
    }
    // The new replicas hold the same bytes; the removed one deleted its copy.
    let copies: Vec<Vec<Vec<u8>>> = [new, kept]
        .iter()
        .map(|b| stored_batches(&cluster.brokers[(*b - 1) as usize].data_dir(), "moving", 0))
        .collect();
    same_batches(&copies, 0, &cluster.logs());
    let gone = Cluster::wait_until(Duration::from_secs(10), || {
        !holds_partition(&cluster, (old - 1) as usize, "moving", 0)
    });
    assert!(
        gone.is_some(),
        "broker {old} still holds partition 0 of moving\n{}",
        cluster.logs()
    );
    assert!(holds_partition(&cluster, (new - 1) as usize, "moving", 0));
}

/// A replica added to a partition whose leader's retention already deleted its first segments
/// cannot copy from offset 0: it empties its log and starts again at the leader's log start,
/// catches up from there and joins the ISR, and its copy is the leader's, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_added_after_retention_starts_at_the_leaders_log_start() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut flags = FLAGS.to_vec();
    flags.extend(["--retention-check-interval-ms", "200"]);
    let cluster = Cluster::start(3, &flags);
    let admin = Admin::new(cluster.client().await);
    admin
        .create_topic(
            NewTopic::new("trimmed", 1)
                .replication_factor(1)
                .config("segment.bytes", "65536")
                .config("retention.bytes", "131072"),
        )
        .await
        .unwrap_or_else(|e| panic!("creating a topic: {e}\n{}", cluster.logs()));
    // Values that do not compress: each a different 256-byte run of a simple generator.
    // Small batches, so the log rolls between appends (one append never splits).
    let config = ProducerConfig {
        batch_size: 16 * 1024,
        max_request_size: 32 * 1024,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(cluster.client().await, config).unwrap();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut deliveries = Vec::new();
    for _ in 0..3000 {
        let value: Vec<u8> = (0..256)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let r = ProducerRecord::new("trimmed").value(value);
        deliveries.push(producer.enqueue(r).await.unwrap());
    }
    producer.flush().await.unwrap();
    for d in deliveries {
        d.await.unwrap();
    }
    let (replicas, _, _) = placement(&cluster, 0, "trimmed", 0).await;
    let leader = replicas[0];
    let added = (1..=3).find(|b| *b != leader).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let start = loop {
        let d = admin.describe_topic("trimmed").await.unwrap();
        let start = d.partitions[0].start_offset.map_or(0, |o| o.0);
        if start > 0 {
            break start;
        }
        if Instant::now() >= deadline {
            let files: Vec<String> = walk(&cluster.brokers[(leader - 1) as usize].data_dir());
            panic!(
                "retention deleted nothing: {d:?}\nthe leader's files: {files:?}\n{}",
                cluster.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    admin
        .reassign_partition("trimmed", 0, &[leader, added])
        .await
        .unwrap_or_else(|e| panic!("reassigning: {e}\n{}", cluster.logs()));
    wait_moved(&cluster, 0, "trimmed", 0, &[leader, added], 30).await;
    let mut both = vec![leader, added];
    both.sort();
    wait_roles(&cluster, 0, "trimmed", 10, "both in sync", |r| {
        r[&0].1 == both
    })
    .await;
    // Both copies hold the same batches from the later of the two starts (retention trims
    // each on its own); the added one holds nothing below the leader's start when it joined.
    let copies: Vec<Vec<Vec<u8>>> = [leader, added]
        .iter()
        .map(|b| stored_batches(&cluster.brokers[(*b - 1) as usize].data_dir(), "trimmed", 0))
        .collect();
    let base = |b: &Vec<u8>| quiver_proto::batch::header(b).unwrap().base_offset.get();
    let first_added = base(&copies[1][0]);
    assert!(
        first_added >= start,
        "the added replica starts at {first_added}, below the leader's start {start}"
    );
    let from = first_added.max(base(&copies[0][0]));
    let tail = |c: &Vec<Vec<u8>>| -> Vec<Vec<u8>> {
        c.iter().filter(|b| base(b) >= from).cloned().collect()
    };
    let tails = vec![tail(&copies[0]), tail(&copies[1])];
    assert!(!tails[0].is_empty());
    same_batches(&tails, 0, &cluster.logs());
    assert!(
        cluster.logs().contains("starting again there"),
        "the added replica said it started again at the leader's start"
    );
}

/// Every file under `dir`, for a failure message.
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                let len = e.metadata().map_or(0, |m| m.len());
                out.push(format!("{} ({len})", p.display()));
            }
        }
    }
    out
}
