//! A broker holds more partitions than it may hold open files: started with a deliberately low
//! open-file limit (setrlimit before exec), it keeps a budget of active-segment files per shard
//! open, closes the least recently used idle one past it and reopens it on demand, so every
//! partition takes and serves records, before and after a restart, and the process never runs
//! out of descriptors. And a partition whose log cannot be opened is offline, and said so.

use bytes::Bytes;
use quiver_client::Admin;
use quiver_proto::api::produce::Acks;
use quiver_proto::batch::{BatchBuilder, Compression};
use quiver_proto::{ErrorCode, TimestampMs};
use quiver_testkit::*;

/// Files the broker keeps for everything but partitions' active logs with one shard (1,024,
/// and 512 closed segments being read): `process::files_reserved(1)`.
const RESERVED_ONE_SHARD: u64 = 1024 + 512;
/// What the limit leaves for active-segment files: the shard's smallest budget.
const ROOM: u64 = 64;

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

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_partitions_than_the_open_file_limit_allows_open_files_for_all_work() {
    let limit = RESERVED_ONE_SHARD + ROOM;
    let mut broker = Broker::unstarted(&["--shards", "1"]);
    broker.open_files = Some(limit);
    broker.spawn(None);
    assert!(
        broker.log().lines().any(|l| l.contains("open-file limit")
            && l.contains(&format!("soft={limit}"))
            && l.contains(&format!("open_logs_per_shard={ROOM}"))),
        "the start logs its open-file limit and budget:\n{}",
        broker.log()
    );
    let client = broker.client().await;
    // Five times the budget, in two topics.
    let (a, b) = (200, 120);
    assert_eq!(create_topic(&client, "a", a, &[]).await, ErrorCode::None);
    assert_eq!(create_topic(&client, "b", b, &[]).await, ErrorCode::None);
    let pid = broker.child.as_ref().unwrap().id();
    assert!(open_files(pid) < limit as usize);
    write_and_read_every_partition(&client, "a", a).await;
    write_and_read_every_partition(&client, "b", b).await;
    assert!(open_files(pid) < limit as usize);

    // Started again under the same limit (recovery opens every log), it goes on.
    drop(client);
    broker.kill9();
    broker.spawn(None);
    let client = broker.client().await;
    for (topic, n) in [("a", a), ("b", b)] {
        for p in 0..n {
            let (_, bytes) = fetch(&client, topic, p, 0, 0).await;
            assert!(!bytes.is_empty(), "{topic}/{p} after the restart");
        }
    }
    write_and_read_every_partition(&client, "b", b).await;
    assert!(
        !broker.log().contains("Too many open files"),
        "{}",
        broker.log()
    );
}

/// One Produce naming far more closed partitions than the process may open files at once
/// (2,000 partitions, about 1,500 descriptors left under the limit): each reopen first makes room
/// (closes an idle file or waits for one to fall idle), so every partition takes its record and
/// the descriptors stay within the limit. Opening first and closing after answered part of such
/// a request with StorageError "Too many open files".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_produce_to_more_closed_partitions_than_files_may_open_takes_every_record() {
    const PARTS: u32 = 2_000;
    let limit = RESERVED_ONE_SHARD + ROOM;
    let mut broker = Broker::unstarted(&["--shards", "1"]);
    broker.open_files = Some(limit);
    broker.spawn(None);
    let client = broker.client().await;
    assert_eq!(
        create_topic(&client, "wide", PARTS, &[]).await,
        ErrorCode::None
    );
    let every: Vec<u32> = (0..PARTS).collect();
    let pid = broker.child.as_ref().unwrap().id();
    for round in 0..2 {
        let resp = produce_wide(&client, "wide", &every, &[record("w")], Acks::All).await;
        let answers = &resp.topics[0].partitions;
        assert_eq!(answers.len(), PARTS as usize);
        let failed: Vec<_> = answers
            .iter()
            .filter(|p| p.error_code != ErrorCode::None)
            .map(|p| (p.partition.0, p.error_code, p.error_message.clone()))
            .collect();
        assert!(
            failed.is_empty(),
            "round {round}: {} of {PARTS} partitions failed, first {:?}",
            failed.len(),
            failed.first()
        );
        assert!(answers.iter().all(|p| p.base_offset.0 == round));
        assert!(open_files(pid) < limit as usize);
    }
    for p in [0, PARTS / 2, PARTS - 1] {
        let (_, bytes) = fetch(&client, "wide", p, 0, 0).await;
        let n = quiver_proto::batch::BatchIter::new(&bytes).count();
        assert_eq!(n, 2, "wide/{p} holds both records");
    }
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

/// A memory cgroup for one test (v2 where the machine mounts it, else v1's memory controller),
/// removed on drop. `None` when this machine lets the test make none.
struct MemoryCgroup {
    dir: std::path::PathBuf,
    procs: std::path::PathBuf,
}

impl MemoryCgroup {
    fn new(limit_bytes: u64) -> Option<MemoryCgroup> {
        let name = format!("quiver-capacity-{}", std::process::id());
        for (root, file) in [
            ("/sys/fs/cgroup", "memory.max"),
            ("/sys/fs/cgroup/memory", "memory.limit_in_bytes"),
        ] {
            let root = std::path::Path::new(root);
            // v2's root has no memory.max of its own, but its cgroup.controllers names memory.
            let v2_memory = std::fs::read_to_string(root.join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"));
            let usable = if file == "memory.max" {
                v2_memory
            } else {
                root.join(file).exists()
            };
            if !usable {
                continue;
            }
            let dir = root.join(&name);
            if std::fs::create_dir(&dir).is_err() {
                continue;
            }
            let cg = MemoryCgroup {
                procs: dir.join("cgroup.procs"),
                dir,
            };
            if std::fs::write(cg.dir.join(file), limit_bytes.to_string()).is_ok() {
                return Some(cg);
            }
        }
        None
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // Empty once the broker is gone (killed when the test's Broker drops, before this).
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// A broker whose cgroup allows 512 MiB holds 16,384 partitions by memory (half of it at
/// 16 KiB each), fewer than `max_partitions`' 100,000: a topic past that is refused whole with
/// the memory named, and a topic within it, and the topics before, work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_past_what_the_memory_holds_is_refused_naming_the_memory() {
    let Some(cgroup) = MemoryCgroup::new(512 << 20) else {
        eprintln!("skipped: this machine lets the test make no memory cgroup");
        return;
    };
    let mut broker = Broker::unstarted(&["--shards", "1"]);
    broker.cgroup_procs = Some(cgroup.procs.clone());
    broker.spawn(None);
    let client = broker.client().await;
    assert_eq!(
        create_topic(&client, "before", 2, &[]).await,
        ErrorCode::None
    );
    let out = std::process::Command::new(bin_path("streamctl"))
        .args(["-b", &broker.addr.to_string(), "--ca-file"])
        .arg(broker.ca())
        .args(["topic", "create", "huge", "--partitions", "20000"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("over its limit of 16384")
            && err.contains("the cgroup's memory limit")
            && err.contains("nothing was created"),
        "{err}"
    );
    let admin = Admin::new(client.clone());
    assert!(
        admin.describe_topic("huge").await.is_err(),
        "nothing half created"
    );
    assert_eq!(
        create_topic(&client, "within", 100, &[]).await,
        ErrorCode::None
    );
    write_and_read_every_partition(&client, "before", 2).await;
    write_and_read_every_partition(&client, "within", 100).await;
    drop(client);
    drop(broker);
    drop(cgroup);
}

/// A create that takes longer than the client's timeout (here each new log takes 3 s more to
/// open, `STREAMD_FAULT_SLOW_OPEN_MS`, and the client gives calls 2 s) is answered
/// RequestTimedOut, saying the change is made and still being applied, before the client gives
/// up; the topic is then served once its logs are open, and a change asked meanwhile waits its
/// turn and is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_still_being_applied_at_the_timeout_is_answered_so_and_completes() {
    let broker = Broker::start_with_env(
        &["--shards", "1"],
        &[("STREAMD_FAULT_SLOW_OPEN_MS", "3000")],
    );
    let client = broker
        .client_with_timeout(std::time::Duration::from_secs(2))
        .await;
    let admin = Admin::new(client.clone());
    let started = std::time::Instant::now();
    let err = admin
        .create_topic(quiver_client::NewTopic::new("slow", 4))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("RequestTimedOut") && text.contains("not yet in force"),
        "{text}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "answered within the client's timeout: {:?}",
        started.elapsed()
    );
    // The next change waits for the first to be in force, then is made.
    let slow_client = broker.client().await;
    assert_eq!(
        create_topic(&slow_client, "next", 1, &[]).await,
        ErrorCode::None
    );
    assert!(started.elapsed() >= std::time::Duration::from_secs(3));
    write_and_read_every_partition(&slow_client, "slow", 4).await;
    write_and_read_every_partition(&slow_client, "next", 1).await;
}
