//! A cluster of three real streamd processes on loopback (testkit's `Cluster`): the controller
//! quorum elects a leader, every broker serves the same metadata, admin requests work through
//! any broker, partitions are spread over the brokers and clients follow their leaders, the
//! leader's death elects another, a minority commits nothing, a stopped voter catches up, and
//! a restart of all three keeps everything.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use quiver_client::{
    Admin, Consumer, ConsumerConfig, NewTopic, OffsetReset, Producer, ProducerConfig,
    ProducerRecord,
};
use quiver_proto::api::metadata::{
    CreatableTopic, CreateTopicsRequest, MetadataRequest, ReplicaAssignment,
};
use quiver_proto::api::produce::Acks;
use quiver_proto::batch::{BatchBuilder, Compression};
use quiver_proto::{BrokerId, ErrorCode, PartitionId, TimestampMs};
use quiver_testkit::cluster::Cluster;

/// One cluster at a time: three brokers per test on a two-core machine already make elections
/// compete for CPU; several clusters at once would test the scheduler, not the quorum.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Produces `n` keyed records `k<i>`/`v<i>` to `topic` through a producer bootstrapped from
/// broker index `via`, and waits until every one is acknowledged.
async fn produce_keyed(cluster: &Cluster, via: usize, topic: &str, n: u32) {
    let producer =
        Producer::new(cluster.client_via(&[via]).await, ProducerConfig::default()).unwrap();
    let mut deliveries = Vec::new();
    for i in 0..n {
        let record = ProducerRecord::new(topic)
            .key(format!("k{i}"))
            .value(format!("v{i}"));
        deliveries.push(producer.enqueue(record).await.unwrap());
    }
    producer.flush().await.unwrap();
    for d in deliveries {
        d.await.unwrap();
    }
}

/// The distinct values `consumer` reads until it has `n` of them or 30 s have passed.
async fn read_values(consumer: &mut Consumer, n: usize) -> BTreeSet<String> {
    let mut got = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < n && Instant::now() < deadline {
        for r in consumer.poll(Duration::from_millis(500)).await.unwrap() {
            got.insert(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
        }
    }
    got
}

/// Waits (up to 15 s) until broker index `via` lists broker `id` among the live brokers
/// (`listed`) or not; panics with every broker's log otherwise.
async fn wait_listed(cluster: &Cluster, via: usize, id: u32, listed: bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while describe(cluster, via).await.1.contains(&id) != listed {
        assert!(
            Instant::now() < deadline,
            "broker {id} never {}\n{}",
            if listed { "unfenced" } else { "fenced" },
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// (controller, broker ids) as a client bootstrapped from broker index `via` sees them.
async fn describe(cluster: &Cluster, via: usize) -> (Option<u32>, Vec<u32>) {
    let client = cluster.client_via(&[via]).await;
    let d = Admin::new(client).describe_cluster().await.unwrap();
    (
        d.controller.map(|c| c.0),
        d.brokers.iter().map(|b| b.id).collect(),
    )
}

/// Each partition's leader (`None`: none available), as broker index `via` answers Metadata.
async fn leaders(cluster: &Cluster, via: usize, topic: &str) -> BTreeMap<u32, Option<u32>> {
    let client = cluster.client_via(&[via]).await;
    let req = MetadataRequest {
        topics: Some(vec![topic.to_string()]),
        allow_auto_topic_creation: false,
    };
    let (resp, _) = client.call_any(&req, Vec::new()).await.unwrap();
    let t = &resp.topics[0];
    assert_eq!(t.error_code, ErrorCode::None, "{topic}");
    t.partitions
        .iter()
        .map(|p| (p.partition.0, p.leader.map(|l| l.0)))
        .collect()
}

/// Each partition's (leader, replicas, ISR, offline replicas), as broker index `via` answers
/// Metadata.
async fn placement(
    cluster: &Cluster,
    via: usize,
    topic: &str,
) -> BTreeMap<u32, (Option<u32>, Vec<u32>, Vec<u32>, Vec<u32>)> {
    let client = cluster.client_via(&[via]).await;
    let req = MetadataRequest {
        topics: Some(vec![topic.to_string()]),
        allow_auto_topic_creation: false,
    };
    let (resp, _) = client.call_any(&req, Vec::new()).await.unwrap();
    let ids = |v: &[quiver_proto::BrokerId]| v.iter().map(|b| b.0).collect::<Vec<u32>>();
    resp.topics[0]
        .partitions
        .iter()
        .map(|p| {
            (
                p.partition.0,
                (
                    p.leader.map(|l| l.0),
                    ids(&p.replicas),
                    ids(&p.isr),
                    ids(&p.offline_replicas),
                ),
            )
        })
        .collect()
}

/// CreateTopics with a manual replica assignment (partition, broker ids), sent to broker index
/// `via`; the error code and message.
async fn create_assigned(
    cluster: &Cluster,
    via: usize,
    name: &str,
    assignments: &[(u32, &[u32])],
) -> (ErrorCode, Option<String>) {
    let client = cluster.client_via(&[via]).await;
    let req = CreateTopicsRequest {
        topics: vec![CreatableTopic {
            name: name.to_string(),
            num_partitions: None,
            replication_factor: None,
            assignments: assignments
                .iter()
                .map(|(p, ids)| ReplicaAssignment {
                    partition: PartitionId(*p),
                    broker_ids: ids.iter().map(|i| BrokerId(*i)).collect(),
                })
                .collect(),
            configs: vec![],
        }],
        timeout_ms: 5000,
        validate_only: false,
    };
    let (resp, _) = client.call_any(&req, Vec::new()).await.unwrap();
    (
        resp.topics[0].error_code,
        resp.topics[0].error_message.clone(),
    )
}

/// CreateTopics for one single-partition topic, sent to broker index `via` itself.
async fn create_via(cluster: &Cluster, via: usize, name: &str) -> Result<(), String> {
    let client = cluster.client_via(&[via]).await;
    let req = CreateTopicsRequest {
        topics: vec![CreatableTopic {
            name: name.to_string(),
            num_partitions: Some(1),
            replication_factor: None,
            assignments: vec![],
            configs: vec![],
        }],
        timeout_ms: 5000,
        validate_only: false,
    };
    let (resp, _) = client
        .call_any(&req, Vec::new())
        .await
        .map_err(|e| e.to_string())?;
    match resp.topics[0].error_code {
        ErrorCode::None => Ok(()),
        code => Err(format!("{code:?} {:?}", resp.topics[0].error_message)),
    }
}

/// The controller the brokers at `via` agree on, waiting up to `timeout` for them to.
async fn agreed_controller(cluster: &Cluster, via: &[usize], timeout: Duration) -> Option<u32> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let mut seen = BTreeSet::new();
        for &i in via {
            seen.insert(describe(cluster, i).await.0);
        }
        if seen.len() == 1 {
            if let Some(Some(c)) = seen.into_iter().next() {
                return Some(c);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_brokers_agree_on_metadata_and_clients_follow_leaders() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = Cluster::start(3, &[]);
    let controller = agreed_controller(&cluster, &[0, 1, 2], Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("no agreed controller\n{}", cluster.logs()));
    for via in 0..3 {
        let (c, brokers) = describe(&cluster, via).await;
        assert_eq!(c, Some(controller));
        assert_eq!(brokers, vec![1, 2, 3], "every broker lists every broker");
    }

    // Created through a broker that is not the controller.
    let other = (0..3).find(|i| *i as u32 + 1 != controller).unwrap();
    let admin = Admin::new(cluster.client_via(&[other]).await);
    admin
        .create_topic(NewTopic::new("orders", 6))
        .await
        .unwrap_or_else(|e| panic!("creating a topic: {e}\n{}", cluster.logs()));
    let err = admin
        .create_topic(NewTopic::new("orders", 6))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    // Every broker describes the same placement: six partitions, two led by each broker.
    let seen = leaders(&cluster, 0, "orders").await;
    for via in 1..3 {
        assert_eq!(
            leaders(&cluster, via, "orders").await,
            seen,
            "broker {}",
            via + 1
        );
    }
    let mut per_broker = BTreeMap::new();
    for l in seen.values() {
        *per_broker
            .entry(l.expect("every partition has a leader"))
            .or_insert(0) += 1;
    }
    assert_eq!(per_broker, BTreeMap::from([(1, 2), (2, 2), (3, 2)]));

    // A producer bootstrapped from one broker reaches every leader; a consumer reads it all.
    produce_keyed(&cluster, 2, "orders", 600).await;
    let mut consumer = Consumer::new(
        cluster.client_via(&[0]).await,
        ConsumerConfig::default().auto_offset_reset(OffsetReset::Earliest),
    );
    consumer.assign_topic("orders").await.unwrap();
    let got = read_values(&mut consumer, 600).await;
    assert_eq!(got.len(), 600, "every record read back");

    // Each broker holds logs only of the partitions it leads.
    for (i, b) in cluster.brokers.iter().enumerate() {
        let id = i as u32 + 1;
        let topics = b.data_dir().join("topics");
        let dir = std::fs::read_dir(&topics)
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with("orders."))
            .map(|e| e.path());
        let held: BTreeSet<u32> = dir
            .map(|d| {
                std::fs::read_dir(d)
                    .unwrap()
                    .flatten()
                    .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let led: BTreeSet<u32> = seen
            .iter()
            .filter(|(_, l)| **l == Some(id))
            .map(|(p, _)| *p)
            .collect();
        assert_eq!(held, led, "broker {id} holds what it leads");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_spread_over_racks_and_only_the_leader_serves_a_partition() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = Cluster::unstarted(3, &[]);
    // Brokers 1 and 2 in one rack, 3 in another.
    for (b, rack) in cluster.brokers.iter_mut().zip(["east", "east", "west"]) {
        b.args.extend(["--rack".to_string(), rack.to_string()]);
    }
    cluster.launch(&[0, 1, 2]);
    let admin = Admin::new(cluster.client().await);

    // Replication factor 2 over 2 racks: every partition in both racks, led evenly.
    admin
        .create_topic(NewTopic::new("replicated", 6).replication_factor(2))
        .await
        .unwrap_or_else(|e| panic!("creating a topic: {e}\n{}", cluster.logs()));
    let placed = placement(&cluster, 1, "replicated").await;
    assert_eq!(placed.len(), 6);
    let mut led = BTreeMap::new();
    for (p, (leader, replicas, isr, offline)) in &placed {
        assert_eq!(replicas.len(), 2, "partition {p}: {replicas:?}");
        assert_ne!(replicas[0], replicas[1]);
        assert!(
            replicas.contains(&3),
            "partition {p} spans both racks: {replicas:?}"
        );
        assert_eq!(*leader, Some(replicas[0]), "the preferred replica leads");
        // New and empty, every replica is in sync.
        let mut isr = isr.clone();
        isr.sort();
        let mut all = replicas.clone();
        all.sort();
        assert_eq!(isr, all);
        assert!(offline.is_empty());
        *led.entry(replicas[0]).or_insert(0) += 1;
    }
    assert_eq!(
        led,
        BTreeMap::from([(1, 2), (2, 2), (3, 2)]),
        "leaders balance"
    );
    for via in [0, 2] {
        assert_eq!(placement(&cluster, via, "replicated").await, placed);
    }
    let too_many = admin
        .create_topic(NewTopic::new("four", 1).replication_factor(4))
        .await
        .unwrap_err();
    assert!(
        too_many.to_string().contains("needs 4 live brokers; 3 are"),
        "{too_many}"
    );

    // Clients follow leaders: the SDK writes and reads everything through any broker.
    produce_keyed(&cluster, 1, "replicated", 300).await;
    let mut consumer = Consumer::new(
        cluster.client_via(&[2]).await,
        ConsumerConfig::default().auto_offset_reset(OffsetReset::Earliest),
    );
    consumer.assign_topic("replicated").await.unwrap();
    assert_eq!(read_values(&mut consumer, 300).await.len(), 300);

    // A follower refuses to take writes or serve reads, and names the leader.
    let (p, (leader, replicas, _, _)) = placed.iter().next().unwrap();
    let (leader, follower) = (leader.unwrap(), replicas[1]);
    let at_follower = cluster.client_via(&[follower as usize - 1]).await;
    let mut b = BatchBuilder::new(Compression::None);
    b.append(TimestampMs(1), None, Some(b"x"), &[]).unwrap();
    let resp = quiver_testkit::produce(
        &at_follower,
        "replicated",
        *p,
        &[b.finish().unwrap()],
        Acks::All,
    )
    .await;
    let out = &resp.topics[0].partitions[0];
    assert_eq!(
        out.error_code,
        ErrorCode::NotLeaderOrFollower,
        "{:?}",
        out.error_message
    );
    assert_eq!(
        out.current_leader.as_ref().map(|h| h.leader_id.0),
        Some(leader)
    );
    let (resp, _) = quiver_testkit::fetch(&at_follower, "replicated", *p, 0, 0).await;
    let out = &resp.topics[0].partitions[0];
    assert_eq!(out.error_code, ErrorCode::NotLeaderOrFollower);
    assert_eq!(
        out.current_leader.as_ref().map(|h| h.leader_id.0),
        Some(leader)
    );

    // A manual assignment is taken as given, its first replica leading.
    let (code, msg) = create_assigned(&cluster, 0, "manual", &[(0, &[2, 3]), (1, &[3, 1])]).await;
    assert_eq!(code, ErrorCode::None, "{msg:?}");
    let manual = placement(&cluster, 0, "manual").await;
    assert_eq!(manual[&0].0, Some(2));
    assert_eq!(manual[&1].1, vec![3, 1]);
    // Lying assignments are refused whole, naming the fault; nothing is created.
    for (bad, why) in [
        (&[(0, &[1, 2][..]), (0, &[2, 3][..])][..], "assigned twice"),
        (&[(0, &[1, 9][..])][..], "broker 9 is not registered"),
        (&[(0, &[2, 2][..])][..], "twice"),
        (&[(0, &[1, 2][..]), (1, &[3][..])][..], "needs 2"),
        (&[(5, &[1][..])][..], "outside"),
        (&[(0, &[][..])][..], "no replicas"),
    ] {
        let (code, msg) = create_assigned(&cluster, 1, "lied", bad).await;
        assert_eq!(code, ErrorCode::InvalidReplicaAssignment, "{why}: {msg:?}");
        let msg = msg.unwrap_or_default();
        assert!(msg.contains(why), "{why}: {msg}");
    }
    assert!(
        admin.describe_topic("lied").await.is_err(),
        "nothing half created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_controller_leader_elects_another_and_changes_go_on() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start(3, &[]);
    let leader = agreed_controller(&cluster, &[0, 1, 2], Duration::from_secs(10))
        .await
        .expect("a controller");
    let survivors: Vec<usize> = (0..3).filter(|i| *i as u32 + 1 != leader).collect();
    let admin = Admin::new(cluster.client_via(&survivors).await);
    admin
        .create_topic(NewTopic::new("before", 1))
        .await
        .unwrap_or_else(|e| panic!("creating a topic: {e}\n{}", cluster.logs()));

    let killed_at = Instant::now();
    cluster.brokers[leader as usize - 1].kill9();
    // Elected: both survivors name the same new controller.
    let new_leader = loop {
        let mut seen = BTreeSet::new();
        for &i in &survivors {
            seen.insert(describe(&cluster, i).await.0);
        }
        if let [Some(c)] = seen.into_iter().collect::<Vec<_>>()[..] {
            if c != leader {
                break c;
            }
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(20),
            "no new controller\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let elected = killed_at.elapsed();
    // The first change that commits after the kill, sent to each survivor in turn.
    let mut n = 0;
    let committed = loop {
        n += 1;
        match create_via(&cluster, survivors[n % 2], &format!("after-{n}")).await {
            Ok(()) => break killed_at.elapsed(),
            Err(e) => {
                assert!(
                    killed_at.elapsed() < Duration::from_secs(20),
                    "no change committed: {e}\n{}",
                    cluster.logs()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    eprintln!(
        "controller {leader} killed; broker {new_leader} elected after {} ms, a change committed after {} ms",
        elected.as_millis(),
        committed.as_millis()
    );
    // The figures the issue asks for (under 2 s) are measured and recorded in bench/RESULTS.md;
    // here the bound only catches a failover that waits for something it should not.
    assert!(
        committed < Duration::from_secs(5),
        "failover took {committed:?}"
    );

    // The killed broker comes back and catches up with what it missed.
    let idx = leader as usize - 1;
    cluster.launch(&[idx]);
    let client = cluster.client_via(&[idx]).await;
    let d = Admin::new(client)
        .describe_topic(&format!("after-{n}"))
        .await
        .unwrap();
    assert_eq!(d.partitions.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_commits_nothing_and_a_stopped_voter_catches_up() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = Cluster::start(3, &[]);
    let leader = agreed_controller(&cluster, &[0, 1, 2], Duration::from_secs(10))
        .await
        .expect("a controller");
    let followers: Vec<usize> = (0..3).filter(|i| *i as u32 + 1 != leader).collect();
    let stop = |i: usize| {
        cluster.brokers[i].freeze();
        cluster.brokers[i].child.as_ref().unwrap().id() as i32
    };
    let cont = |pid: i32| {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGCONT) };
    };

    // One follower frozen: the other two are a majority and go on.
    let frozen = stop(followers[0]);
    let majority: Vec<usize> = (0..3).filter(|i| *i != followers[0]).collect();
    let admin = Admin::new(cluster.client_via(&majority).await);
    admin
        .create_topic(NewTopic::new("while-one-is-away", 2))
        .await
        .unwrap_or_else(|e| panic!("creating a topic: {e}\n{}", cluster.logs()));

    // Both followers frozen: the leader alone is a minority and commits nothing.
    let frozen2 = stop(followers[1]);
    let alone = Admin::new(cluster.client_via(&[leader as usize - 1]).await);
    let refused = alone.create_topic(NewTopic::new("minority", 1)).await;
    assert!(refused.is_err(), "a minority committed a change");

    cont(frozen);
    cont(frozen2);
    // The stopped voter catches up: it serves the topic made while it was away, and the
    // quorum takes changes again.
    let via_returned = Admin::new(cluster.client_via(&[followers[0]]).await);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match via_returned.describe_topic("while-one-is-away").await {
            Ok(d) => {
                assert_eq!(d.partitions.len(), 2);
                break;
            }
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "did not catch up: {e}\n{}",
                    cluster.logs()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while let Err(e) = via_returned
        .create_topic(NewTopic::new("after-healing", 1))
        .await
    {
        if e.to_string().contains("already exists") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no change after healing: {e}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The change refused to the minority may have committed after healing (it was proposed);
    // never before: checked above.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_every_broker_keeps_the_metadata() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start(3, &[]);
    let admin = Admin::new(cluster.client().await);
    for t in ["a", "b", "c"] {
        admin
            .create_topic(NewTopic::new(t, 3))
            .await
            .unwrap_or_else(|e| panic!("creating a topic: {e}\n{}", cluster.logs()));
    }
    admin.delete_topic("b").await.unwrap();
    let before = leaders(&cluster, 0, "a").await;
    let id_before = Admin::new(cluster.client_via(&[1]).await)
        .describe_cluster()
        .await
        .unwrap()
        .cluster_id;
    assert!(id_before.as_deref().is_some_and(|id| !id.is_empty()));
    for b in &mut cluster.brokers {
        b.kill9();
    }
    cluster.launch(&[0, 1, 2]);
    for via in 0..3 {
        let admin = Admin::new(cluster.client_via(&[via]).await);
        let names: BTreeSet<String> = admin
            .list_topics()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(
            names,
            BTreeSet::from(["a".to_string(), "c".to_string()]),
            "broker {}",
            via + 1
        );
        assert_eq!(leaders(&cluster, via, "a").await, before);
        let id = admin.describe_cluster().await.unwrap().cluster_id;
        assert_eq!(id, id_before, "the cluster id is kept");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_broker_is_fenced_and_unfenced_when_it_returns() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start(3, &["--broker-session-timeout-ms", "1500"]);
    let leader = agreed_controller(&cluster, &[0, 1, 2], Duration::from_secs(10))
        .await
        .expect("a controller");
    let victim = (0..3).find(|i| *i as u32 + 1 != leader).unwrap();
    let victim_id = victim as u32 + 1;
    // One partition on each broker, whichever the controller heard from lately.
    let (code, msg) = create_assigned(
        &cluster,
        leader as usize - 1,
        "spread",
        &[(0, &[1]), (1, &[2]), (2, &[3])],
    )
    .await;
    assert_eq!(code, ErrorCode::None, "{msg:?}");
    cluster.brokers[victim].kill9();
    let watcher = leader as usize - 1;
    wait_listed(&cluster, watcher, victim_id, false).await;
    // Its partitions have no leader while it is fenced (there is no replica to take over yet).
    let l = leaders(&cluster, watcher, "spread").await;
    assert!(l.values().all(|l| *l != Some(victim_id)), "{l:?}");
    assert!(l.values().any(Option::is_none), "{l:?}");
    // The controller's view, asked through the other survivor: the victim registered but
    // fenced, its replicas offline, and the quorum going on without it.
    let other = (0..3).find(|i| *i != victim && *i != watcher).unwrap();
    let q = Admin::new(cluster.client_via(&[other]).await)
        .describe_quorum()
        .await
        .unwrap();
    assert_eq!(q.controller, Some(leader));
    let fenced: Vec<u32> = q
        .brokers
        .iter()
        .filter(|b| b.fenced)
        .map(|b| b.id)
        .collect();
    assert_eq!(fenced, vec![victim_id], "{q:?}");
    assert_eq!(q.brokers.len(), 3);
    let voter = |id: u32| q.voters.iter().find(|v| v.id == id).unwrap().clone();
    assert_eq!(voter(leader).lag, Some(0), "{q:?}");
    assert!(voter(leader).last_heard_ms.is_none());
    assert!(voter(victim_id).last_heard_ms.unwrap() >= 1500, "{q:?}");
    let (_, (_, _, _, offline)) = placement(&cluster, watcher, "spread")
        .await
        .into_iter()
        .find(|(_, (leader, ..))| leader.is_none())
        .unwrap();
    assert_eq!(offline, vec![victim_id]);
    // Every survivor's /metrics counts the partition without a live leader.
    let counted = Cluster::wait_until(Duration::from_secs(5), || {
        cluster.brokers[watcher].metric("quiver_offline_partitions") == 1.0
    });
    assert!(
        counted.is_some(),
        "{}",
        cluster.brokers[watcher].metrics_text()
    );
    cluster.launch(&[victim]);
    wait_listed(&cluster, watcher, victim_id, true).await;
    // Back: unfenced, and caught up with the log.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let q = Admin::new(cluster.client_via(&[watcher]).await)
            .describe_quorum()
            .await
            .unwrap();
        let v = q.voters.iter().find(|v| v.id == victim_id).unwrap();
        if q.brokers.iter().all(|b| !b.fenced) && v.lag == Some(0) {
            assert!(v.log_end.unwrap() >= q.committed);
            break;
        }
        assert!(Instant::now() < deadline, "{q:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn bad_voter_lists_are_refused_with_a_clear_error() {
    let cases: [(&[&str], &str); 3] = [
        (
            &[
                "--broker-id",
                "4",
                "--controller-voters",
                "1@127.0.0.1:1,2@127.0.0.1:2",
            ],
            "not among the voters",
        ),
        (
            &[
                "--broker-id",
                "1",
                "--controller-voters",
                "1@127.0.0.1:1,1@127.0.0.1:2",
            ],
            "listed twice",
        ),
        (
            &["--broker-id", "1", "--controller-voters", "1@127.0.0.1"],
            "no port",
        ),
    ];
    for (args, want) in cases {
        let mut b = quiver_testkit::Broker::unstarted(args);
        let err = b.try_spawn(None).unwrap_err();
        assert!(
            err.contains("controller_voters") && err.contains(want),
            "{args:?}: {err}"
        );
    }
}

/// RaftMessage from a client that forges it: a sender that is no voter or is the broker itself,
/// payload references that lie, bytes that are no raft message, a message whose sender differs
/// from the request's, too many messages, another cluster's id, a heartbeat committing past the
/// log. Each is refused (or, for the heartbeat, dropped before raft) and the quorum goes on.
/// A broker running alone refuses RaftMessage whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_raft_messages_are_refused_and_the_quorum_goes_on() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    use protobuf::Message as _;
    use quiver_proto::api::cluster::RaftMessageRequest;
    use quiver_proto::api::common::PayloadRef;
    use quiver_proto::BrokerId;
    use quiver_testkit::hostile::Hostile;
    use raft::eraftpb::{Message, MessageType};

    let cluster = Cluster::start(3, &[]);
    let target = &cluster.brokers[0];
    // With broker 2's own certificate: the checks after authentication.
    let h = Hostile::connect_as(target, &cluster.brokers[1]).await;
    let msg = |t: MessageType, from: u64, term: u64, commit: u64| {
        let mut m = Message::default();
        m.set_msg_type(t);
        m.from = from;
        m.to = 1;
        m.term = term;
        m.commit = commit;
        m.write_to_bytes().unwrap()
    };
    let heartbeat = msg(MessageType::MsgHeartbeat, 2, 1, 0);
    let forged_commit = msg(MessageType::MsgHeartbeat, 2, 1_000, u64::MAX / 2);
    let from_three = msg(MessageType::MsgHeartbeat, 3, 1, 0);
    let req = |from: u32, refs: Vec<PayloadRef>, cluster_id: &str| RaftMessageRequest {
        cluster_id: cluster_id.into(),
        from: BrokerId(from),
        messages: refs,
    };
    let whole = |b: &[u8]| vec![PayloadRef::new(0, b.len() as u32)];
    let cases: Vec<(&str, RaftMessageRequest, Vec<u8>, ErrorCode)> = vec![
        (
            "not a voter",
            req(9, whole(&heartbeat), ""),
            heartbeat.clone(),
            ErrorCode::InvalidRequest,
        ),
        (
            "from itself",
            req(1, whole(&heartbeat), ""),
            heartbeat.clone(),
            ErrorCode::InvalidRequest,
        ),
        (
            "reference past the payload",
            req(
                2,
                vec![PayloadRef::new(0, heartbeat.len() as u32 + 100)],
                "",
            ),
            heartbeat.clone(),
            ErrorCode::InvalidRequest,
        ),
        (
            "reference overflowing",
            req(2, vec![PayloadRef::new(u32::MAX, 2)], ""),
            heartbeat.clone(),
            ErrorCode::InvalidRequest,
        ),
        (
            "not a raft message",
            req(2, whole(b"\xff\xff\xff\xff"), ""),
            b"\xff\xff\xff\xff".to_vec(),
            ErrorCode::InvalidRequest,
        ),
        (
            "sender differs",
            req(2, whole(&from_three), ""),
            from_three.clone(),
            ErrorCode::InvalidRequest,
        ),
        (
            "too many messages",
            req(2, vec![PayloadRef::EMPTY; 257], ""),
            Vec::new(),
            ErrorCode::InvalidRequest,
        ),
        (
            "another cluster",
            req(2, whole(&heartbeat), "not-this-cluster"),
            heartbeat.clone(),
            ErrorCode::InconsistentClusterId,
        ),
        // Taken by the handler, refused by the node before raft-rs (which would assert).
        (
            "forged commit",
            req(2, whole(&forged_commit), ""),
            forged_commit.clone(),
            ErrorCode::None,
        ),
    ];
    for (what, r, payload, want) in cases {
        let resp = h.call(&r, &payload).await.ok::<RaftMessageRequest>();
        assert_eq!(resp.error_code, want, "{what}");
    }
    // Without a broker's certificate, or with another broker's, nobody speaks for broker 2:
    // not even a well-formed heartbeat reaches raft.
    let strangers = [
        ("no certificate", Hostile::connect(target).await),
        (
            "broker 3's",
            Hostile::connect_as(target, &cluster.brokers[2]).await,
        ),
    ];
    for (what, h) in strangers {
        let resp = h
            .call(&req(2, whole(&heartbeat), ""), &heartbeat)
            .await
            .ok::<RaftMessageRequest>();
        assert_eq!(
            resp.error_code,
            ErrorCode::ClusterAuthorizationFailed,
            "{what}"
        );
    }
    // Still a voter in good standing: a change through it commits (within 20 s: a loaded
    // machine may time out one 5 s submit; a retried creation that had committed says so).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match create_via(&cluster, 0, "after-hostile").await {
            Ok(()) => break,
            Err(e) if e.contains("TopicAlreadyExists") => break,
            Err(e) => assert!(
                Instant::now() < deadline,
                "no change committed after the hostile messages: {e}\n{}",
                cluster.logs()
            ),
        }
    }
    assert_eq!(leaders(&cluster, 1, "after-hostile").await.len(), 1);

    // A broker running alone has no quorum to give messages to.
    let alone = quiver_testkit::Broker::start(&[]);
    let h = Hostile::connect(&alone).await;
    let resp = h
        .call(&req(2, whole(&heartbeat), ""), &heartbeat)
        .await
        .ok::<RaftMessageRequest>();
    assert_eq!(resp.error_code, ErrorCode::InvalidRequest);
}

/// A broker whose data directory belongs to another cluster does not join: it refuses the
/// quorum's messages, says why in its log, and never becomes ready; the others go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_with_another_clusters_data_refuses_to_join() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut a = Cluster::start(3, &[]);
    let id_a = Admin::new(a.client().await)
        .describe_cluster()
        .await
        .unwrap()
        .cluster_id
        .unwrap();
    a.brokers[2].kill9();
    let mut b = Cluster::unstarted(3, &[]);
    let from = a.brokers[2].data_dir();
    let to = b.brokers[2].data_dir();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(&from)
        .arg(&to)
        .status()
        .unwrap();
    assert!(status.success());
    b.launch(&[0, 1]);
    let id_b = Admin::new(b.client_via(&[0]).await)
        .describe_cluster()
        .await
        .unwrap()
        .cluster_id
        .unwrap();
    assert_ne!(id_a, id_b);
    let port = b.ports[2];
    let launch = b.brokers[2].launch(Some(port));
    let log = b.brokers[2]
        .wait_ready(launch, Duration::from_secs(8))
        .expect_err("a broker of another cluster joined");
    assert!(
        log.contains("of another cluster") && log.contains(&id_a),
        "the log says why:\n{log}"
    );
    // The two of cluster B still commit changes.
    create_via(&b, 0, "still-working").await.unwrap();
}

/// Opening a new topic's partition logs can take seconds on a disk busy with other fsyncs
/// (here: 2.4 s more per log, `STREAMD_FAULT_SLOW_OPEN_MS`; a shard opens a change's logs at
/// once). The controller quorum goes on meanwhile: its driver never waits for the shards. A
/// topic placed on the quorum's leader alone takes it 2.4 s to open; the others, not slowed, would elect another leader if it
/// stopped sending heartbeats that long. No election, and the creation is answered once in
/// force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_apply_does_not_cost_the_quorum_its_leader() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = Cluster::unstarted(3, &[]);
    for b in &mut cluster.brokers {
        b.envs
            .push(("STREAMD_FAULT_SLOW_OPEN_MS".into(), "2400".into()));
        b.envs
            .push(("STREAMD_OFFSETS_TOPIC_PARTITIONS".into(), "1".into()));
    }
    cluster.launch(&[0, 1, 2]);
    let admin = Admin::new(cluster.client().await);
    let before = admin.describe_quorum().await.unwrap();
    let leader = [before.controller.expect("a controller")];
    for name in ["slow", "slower"] {
        let on_leader: Vec<(u32, &[u32])> = (0..6).map(|p| (p, &leader[..])).collect();
        let started = Instant::now();
        let (code, message) = create_assigned(&cluster, 0, name, &on_leader).await;
        assert_eq!(
            code,
            ErrorCode::None,
            "creating {name}: {message:?}\n{}",
            cluster.logs()
        );
        assert!(
            started.elapsed() >= Duration::from_millis(2400),
            "the fault took effect: {name} in force after {:?}",
            started.elapsed()
        );
    }
    let after = admin.describe_quorum().await.unwrap();
    assert_eq!(
        (after.term, after.controller),
        (before.term, before.controller),
        "the quorum kept its term and leader while applying\n{}",
        cluster.logs()
    );
}

/// Stopping a whole cluster with SIGTERM, one broker after another: the first two hand their
/// leaderships over (a majority is left for each); the last one, whose quorum has no leader any more (nothing
/// can commit, nobody could take over), gives the hand-over up after 1.5 s instead of waiting
/// out its 5 s bound, and says so. Every broker exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_whole_cluster_does_not_wait_for_a_lost_majority() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start(3, &[]);
    for i in 0..3 {
        assert_eq!(
            cluster.brokers[i].terminate(),
            Some(0),
            "broker {} stops cleanly\n{}",
            i + 1,
            cluster.logs()
        );
    }
    for i in 0..2 {
        // The second one's first proposal may be lost with the first one's leadership of the
        // quorum: it is made again to the next leader.
        assert!(
            cluster.brokers[i]
                .log()
                .contains("controlled shutdown: leaderships moved"),
            "broker {} hands over while a majority is left:\n{}",
            i + 1,
            cluster.logs()
        );
    }
    let last = cluster.brokers[2].log();
    assert!(
        last.contains("no majority left") && !last.contains("not committed within"),
        "the last gives the hand-over up at once:\n{}",
        cluster.logs()
    );
}

/// Consumer groups on a cluster: each group is coordinated by the broker that leads its
/// offsets partition (FindCoordinator names it from any broker); a member subscribed through
/// one broker gets every partition, reads every record, and its commits are read back through
/// another broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_groups_find_their_coordinator_on_any_broker() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = Cluster::start(3, &[]);
    let admin = Admin::new(cluster.client_via(&[0]).await);
    admin
        .create_topic(NewTopic::new("events", 3))
        .await
        .unwrap_or_else(|e| panic!("creating a topic: {e}\n{}", cluster.logs()));
    produce_keyed(&cluster, 1, "events", 90).await;
    // Groups whose offsets partitions are led by different brokers.
    for group in ["g-one", "g-two", "g-three"] {
        let mut consumer = Consumer::new(
            cluster.client_via(&[2]).await,
            ConsumerConfig::default()
                .group_id(group)
                .auto_offset_reset(OffsetReset::Earliest),
        );
        consumer
            .subscribe(vec!["events".to_string()])
            .await
            .unwrap();
        let got = read_values(&mut consumer, 90).await;
        assert_eq!(
            got.len(),
            90,
            "{group} read every record\n{}",
            cluster.logs()
        );
        consumer.commit().await.unwrap();
        let offsets = Admin::new(cluster.client_via(&[0]).await)
            .list_group_offsets(group)
            .await
            .unwrap();
        let total: u64 = offsets.iter().map(|(_, o)| o.offset.0).sum();
        assert_eq!(
            total, 90,
            "{group}: committed offsets read through another broker"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_ran_alone_carries_its_topics_into_a_new_cluster() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = Cluster::unstarted(3, &[]);
    // Broker 1 runs alone first: the same data directory, no voters.
    let clustered = cluster.brokers[0].args.clone();
    let at = clustered
        .iter()
        .position(|a| a == "--controller-voters")
        .unwrap();
    cluster.brokers[0].args.drain(at..at + 2);
    let port = cluster.ports[0];
    let launch = cluster.brokers[0].launch(Some(port));
    cluster.brokers[0]
        .wait_ready(launch, Duration::from_secs(30))
        .unwrap();
    let alone = cluster.brokers[0].client().await;
    let admin = Admin::new(alone.clone());
    admin
        .create_topic(NewTopic::new("legacy", 2))
        .await
        .unwrap_or_else(|e| panic!("creating a topic: {e}\n{}", cluster.logs()));
    let legacy_id = admin.describe_topic("legacy").await.unwrap().id;
    let producer = Producer::new(alone.clone(), ProducerConfig::default()).unwrap();
    for i in 0..50 {
        let d = producer
            .enqueue(
                ProducerRecord::new("legacy")
                    .key(format!("k{i}"))
                    .value(format!("v{i}")),
            )
            .await
            .unwrap();
        drop(d);
    }
    producer.flush().await.unwrap();
    let tp = quiver_client::TopicPartition::new("legacy", 0);
    admin
        .alter_group_offsets("billing", &[(tp.clone(), quiver_client::Offset(7))])
        .await
        .unwrap();
    drop((producer, admin, alone));
    assert_eq!(cluster.brokers[0].terminate(), Some(0));

    // Now with the voters: the three form a cluster, and broker 1's topics come along.
    cluster.brokers[0].args = clustered;
    cluster.launch(&[0, 1, 2]);
    let admin = Admin::new(cluster.client_via(&[2]).await);
    let d = admin.describe_topic("legacy").await.unwrap();
    assert_eq!(d.id, legacy_id, "the same topic, not a new one");
    for p in &d.partitions {
        assert_eq!(
            p.replicas,
            vec![quiver_client::BrokerId(1)],
            "placed on broker 1"
        );
        assert_eq!(p.leader, Some(quiver_client::BrokerId(1)));
    }
    let mut consumer = Consumer::new(
        cluster.client_via(&[1]).await,
        ConsumerConfig::default().auto_offset_reset(OffsetReset::Earliest),
    );
    consumer.assign_topic("legacy").await.unwrap();
    assert_eq!(
        read_values(&mut consumer, 50).await.len(),
        50,
        "every record read back"
    );
    let committed = admin.list_group_offsets("billing").await.unwrap();
    assert_eq!(
        committed
            .iter()
            .map(|(t, o)| (t.clone(), o.offset))
            .collect::<Vec<_>>(),
        vec![(tp, quiver_client::Offset(7))],
        "committed offsets come along\n{}",
        cluster.logs()
    );
    let meta = cluster.brokers[0].data_dir().join("meta");
    assert!(!meta.join("metadata.json").exists());
    assert!(meta.join("metadata.json.carried").exists());
    // New topics and changes go on as in any cluster, and a restart keeps it all.
    create_via(&cluster, 1, "after").await.unwrap();
    for i in 0..3 {
        cluster.brokers[i].kill9();
    }
    cluster.launch(&[0, 1, 2]);
    let admin = Admin::new(cluster.client_via(&[0]).await);
    assert_eq!(admin.describe_topic("legacy").await.unwrap().id, legacy_id);
    admin.describe_topic("after").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_only_voter_votes_but_holds_no_partitions() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = Cluster::unstarted(3, &["--broker-session-timeout-ms", "1500"]);
    cluster.brokers[2]
        .args
        .extend(["--process-roles".to_string(), "controller".to_string()]);
    cluster.launch(&[0, 1, 2]);
    let q = Admin::new(cluster.client_via(&[2]).await)
        .describe_quorum()
        .await
        .unwrap();
    assert_eq!(q.voters.len(), 3, "{q:?}");
    let roles: Vec<(u32, bool)> = q
        .brokers
        .iter()
        .map(|b| (b.id, b.controller_only))
        .collect();
    assert_eq!(roles, vec![(1, false), (2, false), (3, true)]);
    // Clients see two brokers, whichever they ask (the controller-only one too).
    for via in 0..3 {
        assert_eq!(describe(&cluster, via).await.1, vec![1, 2], "via {via}");
    }
    // Partitions, internal ones included, go to the two brokers only.
    let admin = Admin::new(cluster.client_via(&[2]).await);
    admin
        .create_topic(NewTopic::new("work", 6))
        .await
        .unwrap_or_else(|e| panic!("creating a topic: {e}\n{}", cluster.logs()));
    for topic in ["work", "__consumer_offsets"] {
        for (p, (leader, replicas, ..)) in placement(&cluster, 0, topic).await {
            assert!(!replicas.contains(&3), "{topic}/{p} on {replicas:?}");
            assert!(leader.is_some(), "{topic}/{p}");
        }
    }
    let rf3 = admin
        .create_topic(NewTopic::new("three", 1).replication_factor(3))
        .await
        .unwrap_err();
    assert!(
        rf3.to_string().contains("needs 3 live brokers; 2 are"),
        "{rf3}"
    );
    // It still votes: with broker 1 down, brokers 2 and 3 are a majority and commit. (Once
    // broker 1 is fenced: until then, placement may still pick it.)
    cluster.brokers[0].kill9();
    wait_listed(&cluster, 1, 1, false).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while create_via(&cluster, 1, "without-1").await.is_err() {
        assert!(Instant::now() < deadline, "{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Produce and consume through the controller-only process as bootstrap.
    produce_keyed(&cluster, 2, "without-1", 20).await;
    let mut consumer = Consumer::new(
        cluster.client_via(&[2]).await,
        ConsumerConfig::default().auto_offset_reset(OffsetReset::Earliest),
    );
    consumer.assign_topic("without-1").await.unwrap();
    assert_eq!(read_values(&mut consumer, 20).await.len(), 20);
}

/// A voter's name that does not resolve (yet: a pod not yet in DNS) stops nobody: the others
/// start, form a majority, and keep trying the name, saying so in their logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_whose_name_does_not_resolve_is_retried_not_fatal() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = Cluster::unstarted(3, &[]);
    let real = format!("3@127.0.0.1:{}", cluster.ports[2]);
    let unresolved = format!("3@quiver-voter-3.invalid:{}", cluster.ports[2]);
    for b in &mut cluster.brokers[..2] {
        for a in b.args.iter_mut() {
            *a = a.replace(&real, &unresolved);
        }
    }
    cluster.launch(&[0, 1]);
    create_via(&cluster, 0, "two-of-three").await.unwrap();
    let logs = cluster.logs();
    assert!(
        logs.contains("quiver-voter-3.invalid")
            && logs.contains("cannot reach controller quorum peer"),
        "{logs}"
    );
}

/// A broker that is not a voter (`--process-roles broker`) registers with the controller, is
/// added to the quorum as a learner, receives the metadata log, takes partitions and serves
/// clients like any broker; it never votes, and it is fenced and unfenced like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_is_not_a_voter_follows_the_log_and_takes_partitions() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = Cluster::unstarted(3, &["--broker-session-timeout-ms", "1500"]);
    cluster.launch(&[0, 1, 2]);
    let admin = Admin::new(cluster.client_via(&[0]).await);
    admin
        .create_topic(NewTopic::new("before", 3))
        .await
        .unwrap_or_else(|e| panic!("creating a topic: {e}\n{}", cluster.logs()));
    let four = cluster.add_broker_only(&["--broker-session-timeout-ms", "1500"]);
    cluster.launch(&[four]);
    // It knows what was made before it came, and every broker lists it.
    let d = Admin::new(cluster.client_via(&[four]).await)
        .describe_topic("before")
        .await
        .unwrap();
    assert_eq!(d.partitions.len(), 3);
    for via in [0, four] {
        assert_eq!(
            describe(&cluster, via).await.1,
            vec![1, 2, 3, 4],
            "via {via}"
        );
    }
    let q = admin.describe_quorum().await.unwrap();
    assert_eq!(
        q.voters.iter().map(|v| v.id).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "it does not vote"
    );
    // Partitions land on it, and clients bootstrapped from it read and write everything.
    Admin::new(cluster.client_via(&[four]).await)
        .create_topic(NewTopic::new("spread", 8))
        .await
        .unwrap_or_else(|e| panic!("creating a topic: {e}\n{}", cluster.logs()));
    let led = leaders(&cluster, four, "spread").await;
    assert_eq!(
        led.values().filter(|l| **l == Some(4)).count(),
        2,
        "{led:?}"
    );
    produce_keyed(&cluster, four, "spread", 200).await;
    let mut consumer = Consumer::new(
        cluster.client_via(&[four]).await,
        ConsumerConfig::default().auto_offset_reset(OffsetReset::Earliest),
    );
    consumer.assign_topic("spread").await.unwrap();
    assert_eq!(read_values(&mut consumer, 200).await.len(), 200);
    // Fenced when it goes silent, unfenced and caught up when it returns.
    cluster.brokers[four].kill9();
    wait_listed(&cluster, 0, 4, false).await;
    create_via(&cluster, 1, "while-away").await.unwrap();
    cluster.launch(&[four]);
    wait_listed(&cluster, 0, 4, true).await;
    let d = Admin::new(cluster.client_via(&[four]).await)
        .describe_topic("while-away")
        .await
        .unwrap();
    assert_eq!(d.partitions.len(), 1);
    // Without its own certificate, nobody registers as a broker.
    use quiver_proto::api::cluster::{BrokerRegistrationRequest, Listener};
    let h = quiver_testkit::hostile::Hostile::connect(&cluster.brokers[0]).await;
    let forged = BrokerRegistrationRequest {
        broker_id: BrokerId(9),
        cluster_id: String::new(),
        incarnation_id: quiver_proto::api::common::Uuid(1),
        listeners: vec![Listener {
            name: "client".into(),
            host: "127.0.0.1".into(),
            port: 1,
        }],
        rack: None,
        shard_count: 1,
    };
    let resp = h.call(&forged, &[]).await.ok::<BrokerRegistrationRequest>();
    assert_eq!(resp.error_code, ErrorCode::ClusterAuthorizationFailed);
    assert_eq!(describe(&cluster, 0).await.1, vec![1, 2, 3, 4]);
}
