//! A broker's capacity in partitions follows from its open-file limit, and holds: started with a
//! deliberately low limit (setrlimit before exec), it refuses the create that would pass what
//! the limit allows, whole and with the limit named, and every partition it did accept takes
//! and serves records, before and after a restart. A partition holds one file descriptor (its
//! active log), so the limit is not a cliff a quarter of the way to the cap.

use bytes::Bytes;
use quiver_client::{Admin, NewTopic};
use quiver_proto::api::produce::Acks;
use quiver_proto::batch::{BatchBuilder, Compression};
use quiver_proto::{ErrorCode, TimestampMs};
use quiver_testkit::*;

/// Files the broker keeps for everything but partitions' active logs with one shard (1,024,
/// and 512 closed segments being read): `process::files_reserved(1)`.
const RESERVED_ONE_SHARD: u64 = 1024 + 512;
/// What the limit leaves for partitions.
const ROOM: u64 = 200;
/// The consumer offsets topic's partitions, created at start.
const OFFSETS_PARTITIONS: u32 = 16;

fn record(text: &str) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None);
    b.append(TimestampMs(1), None, Some(text.as_bytes()), &[])
        .unwrap();
    b.finish().unwrap()
}

/// One durable record into every partition of `topic`, then each read back.
async fn write_and_read_every_partition(client: &quiver_client::Client, topic: &str, n: u32) {
    for p in 0..n {
        let resp = produce(
            client,
            topic,
            p,
            &[record(&format!("{topic}/{p}"))],
            Acks::All,
        )
        .await;
        let code = resp.topics[0].partitions[0].error_code;
        assert_eq!(code, ErrorCode::None, "produce to {topic}/{p}");
    }
    for p in 0..n {
        let (_, bytes) = fetch(client, topic, p, 0, 0).await;
        let want = format!("{topic}/{p}");
        assert!(
            bytes.windows(want.len()).any(|w| w == want.as_bytes()),
            "{topic}/{p} reads back its record"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_up_to_what_the_open_file_limit_allows_all_work_and_past_it_are_refused() {
    let mut broker = Broker::unstarted(&["--shards", "1"]);
    broker.open_files = Some(RESERVED_ONE_SHARD + ROOM);
    broker.spawn(None);
    let limit = (RESERVED_ONE_SHARD + ROOM).to_string();
    assert!(
        broker
            .log()
            .lines()
            .any(|l| l.contains("open-file limit") && l.contains(&limit)),
        "the start logs its open-file limit:\n{}",
        broker.log()
    );
    let client = broker.client().await;
    let admin = Admin::new(client.clone());

    let a = 150;
    assert_eq!(create_topic(&client, "a", a, &[]).await, ErrorCode::None);
    // Past the room: refused whole, naming the limit; nothing of it is left.
    let err = admin
        .create_topic(NewTopic::new("b", 50))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("open-file limit") && err.contains(&limit),
        "{err}"
    );
    assert!(admin.describe_topic("b").await.is_err());
    let err = admin.create_partitions("a", a + 40).await.unwrap_err();
    assert!(err.to_string().contains("open-file limit"), "{err}");
    assert_eq!(
        admin.describe_topic("a").await.unwrap().partitions.len(),
        a as usize
    );

    // Up to the room, every partition takes records and serves them.
    let c = ROOM as u32 - OFFSETS_PARTITIONS - a;
    assert_eq!(create_topic(&client, "c", c, &[]).await, ErrorCode::None);
    write_and_read_every_partition(&client, "a", a).await;
    write_and_read_every_partition(&client, "c", c).await;
    let err = admin.create_topic(NewTopic::new("d", 1)).await.unwrap_err();
    assert!(err.to_string().contains("open-file limit"), "{err}");

    // Started again with the same limit, it opens every partition and goes on.
    drop(client);
    broker.kill9();
    broker.spawn(None);
    let client = broker.client().await;
    for (topic, n) in [("a", a), ("c", c)] {
        for p in [0, n - 1] {
            let (_, bytes) = fetch(&client, topic, p, 0, 0).await;
            assert!(!bytes.is_empty(), "{topic}/{p} after the restart");
        }
    }
    write_and_read_every_partition(&client, "c", c).await;
    assert!(
        !broker.log().contains("Too many open files"),
        "{}",
        broker.log()
    );
}

/// A partition whose log cannot be opened is offline on this broker, said everywhere an operator
/// looks: Metadata (`StorageError`, the broker among the offline replicas), `topic describe`,
/// the metric, /health (503 "degraded", naming it) while /ready stays 200; the other partitions
/// serve; and once the cause is gone, the next metadata change opens it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_whose_log_cannot_open_is_offline_and_said_so_and_comes_back() {
    let mut broker = Broker::start(&["--shards", "1"]);
    let client = broker.client().await;
    assert_eq!(create_topic(&client, "t", 3, &[]).await, ErrorCode::None);
    write_and_read_every_partition(&client, "t", 3).await;
    drop(client);
    broker.kill9();

    // Partition 1's directory becomes a file: its log cannot open.
    let topics = broker.data_dir().join("topics");
    let topic_dir = std::fs::read_dir(&topics)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("t."))
        .expect("topic t's directory");
    let part = topic_dir.join("1");
    let aside = topic_dir.join("1.aside");
    std::fs::rename(&part, &aside).unwrap();
    std::fs::write(&part, b"not a directory").unwrap();

    broker.spawn(None);
    let client = broker.client().await;
    let admin = Admin::new(client.clone());
    let d = admin.describe_topic("t").await.unwrap();
    let offline: Vec<Vec<u32>> = d
        .partitions
        .iter()
        .map(|p| p.offline.iter().map(|b| b.0).collect())
        .collect();
    assert_eq!(offline, vec![vec![], vec![1], vec![]], "{d:?}");
    let resp = produce(&client, "t", 1, &[record("x")], Acks::All).await;
    assert_eq!(
        resp.topics[0].partitions[0].error_code,
        ErrorCode::StorageError
    );
    let resp = produce(&client, "t", 2, &[record("y")], Acks::All).await;
    assert_eq!(resp.topics[0].partitions[0].error_code, ErrorCode::None);
    assert_eq!(broker.metric("quiver_partition_logs_offline"), 1.0);
    let health = broker.http_get("/health");
    assert!(
        health.starts_with("HTTP/1.1 503")
            && health.contains("degraded: 1 partition logs")
            && health.contains("t/1"),
        "{health}"
    );
    assert!(broker.http_get("/ready").starts_with("HTTP/1.1 200"));
    let text = std::process::Command::new(bin_path("streamctl"))
        .args(["-b", &broker.addr.to_string(), "--ca-file"])
        .arg(broker.ca())
        .args(["topic", "describe", "t"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains("OFFLINE"), "{text}");

    // Repaired: the next metadata change opens it, and it serves what it held.
    std::fs::remove_file(&part).unwrap();
    std::fs::rename(&aside, &part).unwrap();
    assert_eq!(
        create_topic(&client, "nudge", 1, &[]).await,
        ErrorCode::None
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while broker.metric("quiver_partition_logs_offline") != 0.0 {
        assert!(std::time::Instant::now() < deadline, "{}", broker.log());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(broker.http_get("/health").starts_with("HTTP/1.1 200"));
    let (_, bytes) = fetch(&client, "t", 1, 0, 0).await;
    assert!(
        bytes.windows(3).any(|w| w == b"t/1"),
        "partition 1 kept its record"
    );
    let d = admin.describe_topic("t").await.unwrap();
    assert!(d.partitions.iter().all(|p| p.offline.is_empty()), "{d:?}");
}
