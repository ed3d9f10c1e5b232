//! Hostile clients against the real streamd (issue: "no client can crash, wedge, wipe or flood a
//! broker"). Each test sends what an attacker would, built by hand (`testkit::hostile`), asserts
//! what the broker must do, and then that an ordinary producer and consumer still work.

use bytes::Bytes;
use quiver_proto::api::fetch::{FetchPartition, FetchRequest, FetchResponse, FetchTopic};
use quiver_proto::api::metadata::{
    AlterConfigOp, AlterConfigsResource, AlterableConfig, ConfigResourceType,
    CreatePartitionsRequest, CreatePartitionsTopic, DescribeConfigsRequest,
    DescribeConfigsResource, IncrementalAlterConfigsRequest, MetadataRequest,
};
use quiver_proto::api::produce::{
    Acks, PartitionProduceData, ProduceRequest, ProduceResponse, TopicProduceData,
};
use quiver_proto::api::{ApiKey, PayloadRef};
use quiver_proto::batch::{BatchBuilder, Compression};
use quiver_proto::{ErrorCode, Offset, PartitionId, TimestampMs};
use quiver_testkit::hostile::{records_section, request, Forged, Hostile};
use quiver_testkit::*;

/// A broker for one test: with `QUIVER_HOSTILE_AUTHORIZER` set (scripts/test.sh runs this file
/// a second time so), one whose ACL authorizer is on and whose ACLs allow everyone everything:
/// every hostile request then also goes through authorization.
async fn broker(extra: &[&str]) -> Broker {
    if std::env::var_os("QUIVER_HOSTILE_AUTHORIZER").is_some() {
        Broker::start_authorized(extra).await
    } else {
        Broker::start(extra)
    }
}

fn one_batch(records: u32, value_len: usize) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None);
    for _ in 0..records {
        b.append(TimestampMs(1), None, Some(&vec![b'x'; value_len]), &[])
            .unwrap();
    }
    b.finish().unwrap()
}

fn produce_req(topic: &str, parts: &[(u32, PayloadRef)], acks: Acks) -> ProduceRequest {
    ProduceRequest {
        transactional_id: None,
        acks,
        timeout_ms: 10_000,
        topics: vec![TopicProduceData {
            name: topic.into(),
            partitions: parts
                .iter()
                .map(|&(p, records)| PartitionProduceData {
                    partition: PartitionId(p),
                    records,
                })
                .collect(),
        }],
    }
}

fn fetch_req(topic: &str, partitions: &[u32], max_bytes: u32) -> FetchRequest {
    FetchRequest {
        max_wait_ms: 0,
        min_bytes: 0,
        max_bytes,
        isolation_level: Default::default(),
        topics: vec![FetchTopic {
            name: topic.into(),
            partitions: partitions
                .iter()
                .map(|&p| FetchPartition {
                    partition: PartitionId(p),
                    fetch_offset: Offset(0),
                    partition_max_bytes: 0,
                    current_leader_epoch: None,
                })
                .collect(),
        }],
        rack_id: None,
    }
}

async fn end_offset(client: &quiver_client::Client, topic: &str, partition: u32) -> u64 {
    let d = quiver_client::Admin::new(client.clone())
        .describe_topic(topic)
        .await
        .unwrap();
    d.partitions[partition as usize].end_offset.unwrap().0
}

/// Reproduced at 5909d5f: one Produce whose 100 entries all point at the same 1 MB batch
/// appended it 100 times. Now overlapping payload references, and a partition listed twice, are
/// refused before anything is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_produce_naming_one_batch_many_times_is_refused_and_writes_nothing() {
    let broker = broker(&[]).await;
    let client = broker.client().await;
    assert_eq!(create_topic(&client, "t", 100, &[]).await, ErrorCode::None);
    let h = Hostile::connect(&broker).await;
    let batch = one_batch(100, 10_000);
    let whole = PayloadRef::new(0, batch.len() as u32);
    // 100 partitions, one batch.
    let parts: Vec<(u32, PayloadRef)> = (0..100).map(|p| (p, whole)).collect();
    let reply = h
        .call(&produce_req("t", &parts, Acks::All), &batch)
        .await
        .error();
    assert_eq!(reply.error_code, ErrorCode::InvalidRequest);
    assert!(
        reply.message.as_deref().unwrap_or("").contains("overlap"),
        "{reply:?}"
    );
    // One partition, twice, with disjoint batches.
    let two = [batch.clone(), batch.clone()].concat();
    let half = batch.len() as u32;
    let reply = h
        .call(
            &produce_req(
                "t",
                &[
                    (0, PayloadRef::new(0, half)),
                    (0, PayloadRef::new(half, half)),
                ],
                Acks::All,
            ),
            &two,
        )
        .await
        .error();
    assert!(
        reply
            .message
            .as_deref()
            .unwrap_or("")
            .contains("listed more than once"),
        "{reply:?}"
    );
    // Part of a batch shared by two entries.
    let reply = h
        .call(
            &produce_req(
                "t",
                &[(0, whole), (1, PayloadRef::new(100, 200))],
                Acks::All,
            ),
            &batch,
        )
        .await
        .error();
    assert_eq!(reply.error_code, ErrorCode::InvalidRequest);
    for p in [0, 1, 99] {
        assert_eq!(end_offset(&client, "t", p).await, 0, "partition {p}");
    }
    broker.assert_serves_clients("after-overlap", 200).await;
}

/// Reproduced at 5909d5f: a 720-byte Fetch naming one partition 50 times with max_bytes = 0 made
/// the broker send 3.35 GB; a Fetch naming a 4 MB batch 1,074 times panicked shard 0 in the frame
/// encoder. Now a repeated partition is refused, max_bytes = 0 means the broker's cap, and no
/// answer exceeds the frame limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_answers_stay_within_the_broker_limits() {
    let broker = broker(&["--fetch-max-bytes", "8388608"]).await;
    let client = broker.client().await;
    assert_eq!(create_topic(&client, "big", 1, &[]).await, ErrorCode::None);
    // About 24 MB in 4 MB batches.
    for _ in 0..6 {
        let resp = produce(&client, "big", 0, &[one_batch(4, 1_000_000)], Acks::All).await;
        assert_eq!(resp.topics[0].partitions[0].error_code, ErrorCode::None);
    }
    let h = Hostile::connect(&broker).await;
    // The same partition 50 times, max_bytes 0.
    let reply = h.call(&fetch_req("big", &[0; 50], 0), &[]).await;
    assert_eq!(reply.error().error_code, ErrorCode::InvalidRequest);
    assert!(reply.wire_len() < 4096, "{} bytes", reply.wire_len());
    // ...1,074 times (the shape that panicked the encoder).
    let reply = h.call(&fetch_req("big", &[0; 1074], 0), &[]).await;
    assert_eq!(reply.error().error_code, ErrorCode::InvalidRequest);
    // Once, max_bytes 0: the broker's cap (8 MiB, plus at most the one batch it starts with).
    let reply = h.call(&fetch_req("big", &[0], 0), &[]).await;
    let resp: FetchResponse = reply.ok::<FetchRequest>();
    assert_eq!(resp.topics[0].partitions[0].error_code, ErrorCode::None);
    assert!(
        reply.wire_len() <= 8 * 1024 * 1024 + 64 * 1024,
        "{} bytes for a cap of 8 MiB",
        reply.wire_len()
    );
    // A client asking for more than the cap gets the cap.
    let reply = h.call(&fetch_req("big", &[0], u32::MAX), &[]).await;
    assert!(reply.wire_len() <= 8 * 1024 * 1024 + 64 * 1024);
    broker.assert_serves_clients("after-fetch", 100).await;
}

/// Metadata naming one topic many times is answered once per topic; past the entry limit it is
/// refused; DescribeConfigs repeating a resource is refused. None allocates in proportion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_names_in_metadata_and_describe_configs_are_bounded() {
    let broker = broker(&[]).await;
    let client = broker.client().await;
    assert_eq!(create_topic(&client, "m", 3, &[]).await, ErrorCode::None);
    let h = Hostile::connect(&broker).await;
    let req = MetadataRequest {
        topics: Some(vec!["m".to_string(); 50_000]),
        allow_auto_topic_creation: false,
    };
    let reply = h.call(&req, &[]).await;
    let resp = reply.ok::<MetadataRequest>();
    assert_eq!(resp.topics.len(), 1, "answered once");
    assert_eq!(resp.topics[0].partitions.len(), 3);
    let req = MetadataRequest {
        topics: Some(vec!["m".to_string(); 1_000_000]),
        allow_auto_topic_creation: false,
    };
    let reply = h.call(&req, &[]).await;
    assert_eq!(reply.error().error_code, ErrorCode::InvalidRequest);
    let res = DescribeConfigsResource {
        resource_type: ConfigResourceType::Topic,
        resource_name: "m".into(),
        configuration_keys: vec![],
    };
    let reply = h
        .call(
            &DescribeConfigsRequest {
                resources: vec![res; 1000],
                include_documentation: false,
            },
            &[],
        )
        .await;
    assert_eq!(reply.error().error_code, ErrorCode::InvalidRequest);
    broker.assert_serves_clients("after-metadata", 50).await;
}

/// DescribeConfigs of a broker resource answers for this broker only: before, each distinct
/// name repeated every broker setting, so a 100 KB request drew a 10 MB answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_configs_of_broker_resources_is_not_amplified() {
    let broker = broker(&[]).await;
    let h = Hostile::connect(&broker).await;
    let req = DescribeConfigsRequest {
        resources: (0..4_000)
            .map(|i| DescribeConfigsResource {
                resource_type: ConfigResourceType::Broker,
                resource_name: format!("{}", i + 2),
                configuration_keys: vec![],
            })
            .chain([DescribeConfigsResource {
                resource_type: ConfigResourceType::Broker,
                resource_name: "1".into(),
                configuration_keys: vec![],
            }])
            .collect(),
        include_documentation: false,
    };
    let bytes = request(
        ApiKey::DescribeConfigs,
        &quiver_proto::api::Message::encode(&req),
        &[],
    );
    let reply = h.send_raw(&bytes).await;
    assert!(
        reply.wire_len() < 4 * bytes.len(),
        "{} bytes answered {} bytes",
        bytes.len(),
        reply.wire_len()
    );
    let resp = reply.ok::<DescribeConfigsRequest>();
    let (own, others): (Vec<_>, Vec<_>) = resp.results.iter().partition(|r| r.resource_name == "1");
    assert!(own[0].configs.len() > 10, "this broker's settings");
    assert!(others
        .iter()
        .all(|r| r.error_code == ErrorCode::ResourceNotFound && r.configs.is_empty()));
    broker.assert_serves_clients("after-describe", 20).await;
}

/// Batches the broker can tell are lies are refused when produced: a record count that does
/// not match the records (uncompressed and compressed), records that do not decode under a
/// valid CRC, so no consumer ever meets a stored batch it cannot decode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_whose_records_lie_are_refused_at_produce() {
    let broker = broker(&[]).await;
    let client = broker.client().await;
    assert_eq!(create_topic(&client, "lies", 1, &[]).await, ErrorCode::None);
    let h = Hostile::connect(&broker).await;
    let good = records_section(3, 10);
    let mut garbage = good.clone();
    garbage[5] = 0xff; // a varint that runs on
    let mut lz4_claims_more = Vec::new();
    {
        // A compressed section holding 3 records under a header claiming 1,000.
        let mut b = BatchBuilder::new(Compression::Lz4);
        for _ in 0..3 {
            b.append(TimestampMs(0), None, Some(b"0123456789"), &[])
                .unwrap();
        }
        let real = b.finish().unwrap();
        lz4_claims_more.extend_from_slice(&real[64..]);
    }
    let mut lz4 = Forged::records(1_000);
    lz4.attributes = 1;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("count says 5, 3 records", Forged::records(5).batch(&good)),
        ("count says 2, 3 records", Forged::records(2).batch(&good)),
        (
            "records that do not decode",
            Forged::records(3).batch(&garbage),
        ),
        (
            "a compressed batch claiming more records",
            lz4.batch(&lz4_claims_more),
        ),
        (
            "random bytes under a valid CRC",
            Forged::records(1).batch(&[0x5a; 64]),
        ),
    ];
    for (what, bytes) in cases {
        let reply = h
            .call(
                &produce_req(
                    "lies",
                    &[(0, PayloadRef::new(0, bytes.len() as u32))],
                    Acks::All,
                ),
                &bytes,
            )
            .await;
        let resp: ProduceResponse = reply.ok::<ProduceRequest>();
        let p = &resp.topics[0].partitions[0];
        assert_eq!(p.error_code, ErrorCode::CorruptMessage, "{what}: {p:?}");
    }
    assert_eq!(end_offset(&client, "lies", 0).await, 0, "nothing written");
    // The honest batch goes in.
    let bytes = Forged::records(3).batch(&good);
    let resp: ProduceResponse = h
        .call(
            &produce_req(
                "lies",
                &[(0, PayloadRef::new(0, bytes.len() as u32))],
                Acks::All,
            ),
            &bytes,
        )
        .await
        .ok::<ProduceRequest>();
    assert_eq!(resp.topics[0].partitions[0].error_code, ErrorCode::None);
    broker.assert_serves_clients("after-lies", 50).await;
}

/// Clients may not write, grow or reconfigure internal (`__`) topics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_topics_are_not_written_grown_or_altered_by_clients() {
    let broker = broker(&[]).await;
    let client = broker.client().await;
    let h = Hostile::connect(&broker).await;
    let batch = one_batch(1, 10);
    let resp: ProduceResponse = h
        .call(
            &produce_req(
                "__consumer_offsets",
                &[(0, PayloadRef::new(0, batch.len() as u32))],
                Acks::All,
            ),
            &batch,
        )
        .await
        .ok::<ProduceRequest>();
    let p = &resp.topics[0].partitions[0];
    assert_eq!(p.error_code, ErrorCode::InvalidTopic, "{p:?}");
    let resp = h
        .call(
            &CreatePartitionsRequest {
                topics: vec![CreatePartitionsTopic {
                    name: "__consumer_offsets".into(),
                    count: 100,
                    assignments: vec![],
                }],
                timeout_ms: 10_000,
                validate_only: false,
            },
            &[],
        )
        .await
        .ok::<CreatePartitionsRequest>();
    assert_eq!(resp.results[0].error_code, ErrorCode::InvalidTopic);
    let resp = h
        .call(
            &IncrementalAlterConfigsRequest {
                resources: vec![AlterConfigsResource {
                    resource_type: ConfigResourceType::Topic,
                    resource_name: "__consumer_offsets".into(),
                    configs: vec![AlterableConfig {
                        name: "retention.ms".into(),
                        op: AlterConfigOp::Set,
                        value: Some("1".into()),
                    }],
                }],
                validate_only: false,
            },
            &[],
        )
        .await
        .ok::<IncrementalAlterConfigsRequest>();
    assert_eq!(resp.responses[0].error_code, ErrorCode::InvalidTopic);
    let d = quiver_client::Admin::new(client.clone())
        .describe_topic("__consumer_offsets")
        .await
        .unwrap();
    assert_eq!(d.partitions.len(), 16, "not grown");
    assert_eq!(
        d.configs
            .iter()
            .find(|c| c.name == "retention.ms")
            .unwrap()
            .value
            .as_deref(),
        Some("-1"),
        "not altered"
    );
    broker.assert_serves_clients("after-internal", 50).await;
}

/// A batch naming a producer id nobody was handed is refused without making producer state; a
/// flood of invented ids changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invented_producer_ids_are_refused() {
    let broker = broker(&[]).await;
    let client = broker.client().await;
    assert_eq!(create_topic(&client, "pids", 1, &[]).await, ErrorCode::None);
    let h = Hostile::connect(&broker).await;
    let rss_before = broker.rss_kib();
    for pid in (0..2_000i64).map(|i| 1_000_000 + i * 7919) {
        let mut f = Forged::records(1);
        (f.producer_id, f.producer_epoch, f.base_sequence) = (pid, 0, 0);
        let bytes = f.batch(&records_section(1, 10));
        let resp: ProduceResponse = h
            .call(
                &produce_req(
                    "pids",
                    &[(0, PayloadRef::new(0, bytes.len() as u32))],
                    Acks::All,
                ),
                &bytes,
            )
            .await
            .ok::<ProduceRequest>();
        assert_eq!(
            resp.topics[0].partitions[0].error_code,
            ErrorCode::UnknownProducerId,
            "pid {pid}"
        );
    }
    assert_eq!(end_offset(&client, "pids", 0).await, 0);
    let grown = broker.rss_kib().saturating_sub(rss_before);
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB");
    // A producer that asked for its id goes on as before.
    broker.assert_serves_clients("after-pids", 100).await;
}

/// acks=0 produce is answered only once its appends are done, so it holds its bytes within the
/// connection's budget like any produce (before, the appends ran detached and the request's
/// budget was released at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_zero_is_answered_after_its_appends() {
    let broker = broker(&[]).await;
    let client = broker.client().await;
    assert_eq!(create_topic(&client, "a0", 1, &[]).await, ErrorCode::None);
    let h = Hostile::connect(&broker).await;
    let batch = one_batch(100, 1000);
    for i in 1..=20u64 {
        let reply = h
            .call(
                &produce_req(
                    "a0",
                    &[(0, PayloadRef::new(0, batch.len() as u32))],
                    Acks::None,
                ),
                &batch,
            )
            .await;
        let _ = reply.ok::<ProduceRequest>();
        assert_eq!(
            end_offset(&client, "a0", 0).await,
            i * 100,
            "written before the answer"
        );
    }
}

/// A global cap on partitions: a create that would pass it is refused whole, naming the
/// setting, and nothing is half created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_partition_cap_refuses_growth_with_a_clear_error() {
    // The offsets topic's 16 partitions are not counted: the cap is what clients may create.
    let broker = broker(&["--max-partitions", "40"]).await;
    let client = broker.client().await;
    let admin = quiver_client::Admin::new(client.clone());
    let err = admin
        .create_topic(quiver_client::NewTopic::new("too-big", 41))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("max_partitions") && err.contains("40"),
        "{err}"
    );
    assert!(admin.describe_topic("too-big").await.is_err());
    assert_eq!(
        create_topic(&client, "fits", 20, &[]).await,
        ErrorCode::None
    );
    let err = admin
        .create_partitions("fits", 41)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_partitions"), "{err}");
    assert_eq!(
        admin.describe_topic("fits").await.unwrap().partitions.len(),
        20
    );
    admin.create_partitions("fits", 38).await.unwrap();
    assert_eq!(
        admin.describe_topic("fits").await.unwrap().partitions.len(),
        38
    );
    // Its topic of 2 brings the broker to the cap exactly, beside the offsets topic.
    broker.assert_serves_clients("after-cap", 50).await;
}
