//! Topic administration through the real broker: describe, configs, partitions, delete, and
//! metadata that survives kill -9.

use std::collections::BTreeMap;

use quiver_proto::api::metadata::{
    AlterConfigOp, AlterConfigsResource, AlterableConfig, ConfigResourceType, ConfigSource,
    CreatePartitionsRequest, CreatePartitionsTopic, DeleteTopicsRequest, DescribeConfigsRequest,
    DescribeConfigsResource, IncrementalAlterConfigsRequest, MetadataRequest,
};
use quiver_proto::api::produce::Acks;
use quiver_proto::batch::{BatchBuilder, Compression};
use quiver_proto::{ErrorCode, TimestampMs};
use quiver_testkit::*;

fn one_record() -> bytes::Bytes {
    let mut b = BatchBuilder::new(Compression::None);
    b.append(TimestampMs(now_ms()), None, Some(b"x"), &[])
        .unwrap();
    b.finish().unwrap()
}

async fn topic_configs(
    client: &quiver_client::Client,
    topic: &str,
) -> BTreeMap<String, (String, ConfigSource)> {
    let req = DescribeConfigsRequest {
        resources: vec![DescribeConfigsResource {
            resource_type: ConfigResourceType::Topic,
            resource_name: topic.into(),
            configuration_keys: vec![],
        }],
        include_documentation: false,
    };
    let resp = client.call_any(&req, vec![]).await.unwrap().0;
    assert_eq!(resp.results[0].error_code, ErrorCode::None);
    resp.results[0]
        .configs
        .iter()
        .map(|c| (c.name.clone(), (c.value.clone().unwrap(), c.config_source)))
        .collect()
}

async fn alter(
    client: &quiver_client::Client,
    topic: &str,
    ops: &[(&str, AlterConfigOp, Option<&str>)],
) -> ErrorCode {
    let req = IncrementalAlterConfigsRequest {
        resources: vec![AlterConfigsResource {
            resource_type: ConfigResourceType::Topic,
            resource_name: topic.into(),
            configs: ops
                .iter()
                .map(|(n, op, v)| AlterableConfig {
                    name: n.to_string(),
                    op: *op,
                    value: v.map(str::to_string),
                })
                .collect(),
        }],
        validate_only: false,
    };
    client.call_controller(&req).await.unwrap().responses[0].error_code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_described_altered_grown_and_deleted() {
    let broker = Broker::start(&[]);
    let client = broker.client().await;
    assert_eq!(
        create_topic(&client, "a", 3, &[("retention.ms", "60000")]).await,
        ErrorCode::None
    );
    assert_eq!(create_topic(&client, "b", 1, &[]).await, ErrorCode::None);

    // Listed, with partitions and leaders.
    let md = client
        .call_any(&MetadataRequest::default(), vec![])
        .await
        .unwrap()
        .0;
    let names: Vec<&str> = md.topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(md.topics[0].partitions.len(), 3);
    assert!(md.topics[0]
        .partitions
        .iter()
        .all(|p| p.leader == md.controller_id && p.isr.len() == 1));
    assert_eq!(md.brokers.len(), 1);
    assert_eq!(md.brokers[0].port, broker.addr.port());

    // Moving replicas needs a cluster: refused here, and nothing changes.
    let e = quiver_client::Admin::new(client.clone())
        .reassign_partition("a", 0, &[1])
        .await
        .expect_err("a single broker has nowhere to move a replica");
    assert_eq!(e.code(), Some(ErrorCode::InvalidReplicaAssignment), "{e}");
    assert!(e.to_string().contains("needs a cluster"), "{e}");

    // Configs: an override shows as such; altering sets and deletes overrides.
    let c = topic_configs(&client, "a").await;
    assert_eq!(
        c["retention.ms"],
        ("60000".to_string(), ConfigSource::TopicOverride)
    );
    assert_eq!(c["segment.bytes"].1, ConfigSource::StaticBroker);
    assert_eq!(
        alter(
            &client,
            "a",
            &[
                ("retention.ms", AlterConfigOp::Delete, None),
                ("segment.bytes", AlterConfigOp::Set, Some("1048576"))
            ]
        )
        .await,
        ErrorCode::None
    );
    let c = topic_configs(&client, "a").await;
    assert_eq!(
        c["retention.ms"],
        ("604800000".to_string(), ConfigSource::StaticBroker)
    );
    assert_eq!(
        c["segment.bytes"],
        ("1048576".to_string(), ConfigSource::TopicOverride)
    );
    assert_eq!(
        alter(
            &client,
            "a",
            &[("segment.bytes", AlterConfigOp::Set, Some("12"))]
        )
        .await,
        ErrorCode::InvalidConfig
    );
    assert_eq!(
        alter(
            &client,
            "nope",
            &[("retention.ms", AlterConfigOp::Set, Some("1"))]
        )
        .await,
        ErrorCode::UnknownTopicOrPartition
    );

    // Partitions grow, never shrink; the new ones take writes at once.
    let grow = |count| CreatePartitionsRequest {
        topics: vec![CreatePartitionsTopic {
            name: "a".into(),
            count,
            assignments: vec![],
        }],
        timeout_ms: 5000,
        validate_only: false,
    };
    assert_eq!(
        client.call_controller(&grow(5)).await.unwrap().results[0].error_code,
        ErrorCode::None
    );
    assert_eq!(
        client.call_controller(&grow(2)).await.unwrap().results[0].error_code,
        ErrorCode::InvalidPartitions
    );
    let r = produce(&client, "a", 4, &[one_record()], Acks::Leader).await;
    assert_eq!(r.topics[0].partitions[0].error_code, ErrorCode::None);

    // Delete: the files go, the name is free again, and the new topic starts empty.
    let topics_dir = broker.data_dir().join("topics");
    let dirs = |prefix: &str| {
        std::fs::read_dir(&topics_dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(prefix)
            })
            .count()
    };
    assert_eq!(dirs("a."), 1);
    let del = DeleteTopicsRequest {
        topic_names: vec!["a".into(), "zz".into()],
        timeout_ms: 5000,
    };
    let resp = client.call_controller(&del).await.unwrap();
    assert_eq!(resp.responses[0].error_code, ErrorCode::None);
    assert_eq!(
        resp.responses[1].error_code,
        ErrorCode::UnknownTopicOrPartition
    );
    assert_eq!(dirs("a."), 0, "the deleted topic's files are gone");
    // Out of the way at once; freed by the engine's paced deleter soon after.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while dirs(".deleted.") > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "a deleted topic's files are still there"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let r = produce(&client, "a", 0, &[one_record()], Acks::Leader).await;
    assert_eq!(
        r.topics[0].partitions[0].error_code,
        ErrorCode::UnknownTopicOrPartition
    );
    assert_eq!(create_topic(&client, "a", 1, &[]).await, ErrorCode::None);
    let (resp, records) = fetch(&client, "a", 0, 0, 0).await;
    assert_eq!(resp.topics[0].partitions[0].high_watermark.0, 0);
    assert!(records.is_empty());

    // Metrics name what happened.
    let text = broker.metrics_text();
    assert!(
        text.contains("quiver_requests_total{api=\"Produce\"}"),
        "{text}"
    );
    assert!(text.contains("# TYPE quiver_produce_latency_seconds histogram"));
    assert!(
        text.contains("quiver_log_size_bytes{topic=\"a\",partition=\"0\"}")
            || text.contains("quiver_partitions"),
        "{text}"
    );
    // Connections are published by each shard every two seconds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = broker.metrics_text();
        let accepted = text
            .lines()
            .find_map(|l| l.strip_prefix("quiver_connections_accepted_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if accepted >= 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no accepted connection reported: {text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_metadata_survives_kill_9() {
    let mut broker = Broker::start(&[]);
    let client = broker.client().await;
    assert_eq!(
        create_topic(&client, "kept", 4, &[("max.message.bytes", "5000")]).await,
        ErrorCode::None
    );
    let r = produce(&client, "kept", 3, &[one_record()], Acks::Leader).await;
    assert_eq!(r.topics[0].partitions[0].error_code, ErrorCode::None);
    broker.kill9();
    broker.restart();
    let client = broker.client().await;
    let md = client
        .call_any(
            &MetadataRequest {
                topics: Some(vec!["kept".into()]),
                allow_auto_topic_creation: false,
            },
            vec![],
        )
        .await
        .unwrap()
        .0;
    assert_eq!(md.topics[0].error_code, ErrorCode::None);
    assert_eq!(md.topics[0].partitions.len(), 4);
    assert_eq!(
        topic_configs(&client, "kept").await["max.message.bytes"].0,
        "5000"
    );
    let (resp, records) = fetch(&client, "kept", 3, 0, 0).await;
    assert_eq!(resp.topics[0].partitions[0].high_watermark.0, 1);
    assert!(!records.is_empty());
}

/// A topic deletion cut short by kill -9 is finished at the next start: one whose directory was
/// already renamed out of the way, and one that crashed between the commit and the rename (a
/// directory of a topic the metadata lists as deleted). A directory the metadata knows nothing
/// of is put aside (`.stray`), never deleted. Live topics keep their data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_cut_short_by_a_crash_is_finished_at_start() {
    let mut broker = Broker::start(&[]);
    let topics = broker.data_dir().join("topics");
    let gone_dir_name = {
        let client = broker.client().await;
        assert_eq!(create_topic(&client, "kept", 1, &[]).await, ErrorCode::None);
        assert_eq!(create_topic(&client, "gone", 1, &[]).await, ErrorCode::None);
        let r = produce(&client, "kept", 0, &[one_record()], Acks::Leader).await;
        assert_eq!(r.topics[0].partitions[0].error_code, ErrorCode::None);
        let name = std::fs::read_dir(&topics)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.starts_with("gone."))
            .unwrap();
        quiver_client::Admin::new(client.clone())
            .delete_topic("gone")
            .await
            .unwrap();
        name
    };
    broker.kill9();
    let renamed = topics.join(".deleted.older.0123456789abcdef");
    // As if the crash came between the deletion's commit and the directory's rename.
    let committed = topics.join(&gone_dir_name);
    let orphan = topics.join("orphan.fedcba9876543210");
    // And as if an earlier paced deletion of the same directory was cut short too (the crash
    // came while the deleter was still freeing it): its name is taken.
    let half_freed = topics.join(format!(".deleted.{gone_dir_name}"));
    for dir in [&renamed, &committed, &orphan, &half_freed] {
        std::fs::create_dir_all(dir.join("0")).unwrap();
        std::fs::write(
            dir.join("0").join("00000000000000000000.log"),
            vec![1u8; 100_000],
        )
        .unwrap();
    }
    broker.restart();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let leftovers = || {
        std::fs::read_dir(&topics)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("gone") || n.contains("older"))
            .collect::<Vec<_>>()
    };
    while !leftovers().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "still there: {:?}",
            leftovers()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!orphan.exists());
    let stray = topics.join("orphan.fedcba9876543210.stray");
    assert_eq!(
        std::fs::metadata(stray.join("0").join("00000000000000000000.log"))
            .unwrap()
            .len(),
        100_000,
        "an unknown directory is kept, put aside"
    );
    let client = broker.client().await;
    let (resp, records) = fetch(&client, "kept", 0, 0, 1 << 20).await;
    assert_eq!(resp.topics[0].partitions[0].high_watermark.0, 1);
    assert!(!records.is_empty());
}

/// A topic's partitions are spread over every shard (the count the broker started with, not
/// the one CPU a shard's thread is pinned to), and every shard answers with the new topic at
/// once: the change is applied everywhere before CreateTopics answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_topics_spread_over_every_shard_and_every_shard_sees_them() {
    let broker = Broker::start(&["--shards", "2"]);
    let client = broker.client().await;
    assert_eq!(
        create_topic(&client, "spread", 4, &[]).await,
        ErrorCode::None
    );
    // Several connections: the kernel steers each to one shard's socket, so some land on a
    // shard other than the controller's.
    let mut shards_seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let c = broker.client().await;
        let md = c
            .call_any(
                &MetadataRequest {
                    topics: Some(vec!["spread".into()]),
                    ..Default::default()
                },
                vec![],
            )
            .await
            .unwrap()
            .0;
        assert_eq!(md.brokers[0].shard_count, 2);
        assert_eq!(md.topics[0].error_code, ErrorCode::None, "{md:?}");
        for p in &md.topics[0].partitions {
            shards_seen.insert(p.leader_shard.expect("a shard leads it"));
        }
        c.close().await;
    }
    assert_eq!(shards_seen, [0u16, 1].into(), "partitions on both shards");
}
