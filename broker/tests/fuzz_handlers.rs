//! Every request handler behind the decoder, fuzzed against the real broker: valid requests of
//! every API the broker serves, naming real topics and groups, are damaged at random (bytes
//! flipped, cut, spliced, repeated; lengths and counts lying) and sent over QUIC, thousands of
//! them. Whatever reaches a handler must be answered (a response or an error frame) or refused
//! on the stream, never crash the broker, and leave it serving ordinary clients. The seed is
//! fixed (printed on failure), so a failure replays.

use bytes::Bytes;
use quiver_proto::api::common::ConfigEntry;
use quiver_proto::api::fetch::{
    FetchPartition, FetchRequest, FetchTopic, ListOffsetsPartition, ListOffsetsRequest,
    ListOffsetsTopic, OffsetSpec,
};
use quiver_proto::api::group::{
    ConsumerGroupHeartbeatRequest, CoordinatorType, DeleteGroupsRequest, DescribeGroupsRequest,
    FindCoordinatorRequest, ListGroupsRequest, OffsetCommitPartition, OffsetCommitRequest,
    OffsetCommitTopic, OffsetFetchRequest,
};
use quiver_proto::api::handshake::ApiVersionsRequest;
use quiver_proto::api::metadata::{
    AlterConfigOp, AlterConfigsResource, AlterableConfig, ConfigResourceType, CreatableTopic,
    CreatePartitionsRequest, CreatePartitionsTopic, CreateTopicsRequest, DeleteTopicsRequest,
    DescribeConfigsRequest, DescribeConfigsResource, IncrementalAlterConfigsRequest,
    MetadataRequest,
};
use quiver_proto::api::produce::{
    Acks, InitProducerIdRequest, PartitionProduceData, ProduceRequest, TopicProduceData,
};
use quiver_proto::api::{ApiKey, Message, PayloadRef, TopicPartitions};
use quiver_proto::batch::{BatchBuilder, Compression};
use quiver_proto::{ErrorCode, Offset, PartitionId, TimestampMs};
use quiver_testkit::hostile::{request, Hostile, Reply};
use quiver_testkit::*;
use rand::{Rng, SeedableRng};

const SEED: u64 = 0x5eed_0023;
const ROUNDS: usize = 3_000;

fn batch() -> Bytes {
    let mut b = BatchBuilder::new(Compression::None);
    for i in 0..5 {
        b.append(
            TimestampMs(1),
            Some(b"k"),
            Some(format!("v{i}").as_bytes()),
            &[],
        )
        .unwrap();
    }
    b.finish().unwrap()
}

/// One valid request of every API the broker serves: (API, body, payload).
fn valid_requests() -> Vec<(ApiKey, Vec<u8>, Vec<u8>)> {
    let b = batch();
    let tp = |p: u32| FetchPartition {
        partition: PartitionId(p),
        fetch_offset: Offset(0),
        partition_max_bytes: 1 << 16,
        current_leader_epoch: None,
    };
    vec![
        (
            ApiKey::ApiVersions,
            ApiVersionsRequest {
                client_software_name: "fuzz".into(),
                client_software_version: "1".into(),
                client_id: None,
            }
            .encode(),
            vec![],
        ),
        (
            ApiKey::Metadata,
            MetadataRequest {
                topics: Some(vec!["f".into(), "x".into()]),
                allow_auto_topic_creation: false,
            }
            .encode(),
            vec![],
        ),
        (
            ApiKey::Produce,
            ProduceRequest {
                transactional_id: None,
                acks: Acks::All,
                timeout_ms: 1000,
                topics: vec![TopicProduceData {
                    name: "f".into(),
                    partitions: vec![
                        PartitionProduceData {
                            partition: PartitionId(0),
                            records: PayloadRef::new(0, b.len() as u32),
                        },
                        PartitionProduceData {
                            partition: PartitionId(1),
                            records: PayloadRef::new(b.len() as u32, b.len() as u32),
                        },
                    ],
                }],
            }
            .encode(),
            [b.clone(), b.clone()].concat(),
        ),
        (
            ApiKey::Fetch,
            FetchRequest {
                max_wait_ms: 10,
                min_bytes: 1,
                max_bytes: 1 << 20,
                isolation_level: Default::default(),
                topics: vec![FetchTopic {
                    name: "f".into(),
                    partitions: vec![tp(0), tp(1)],
                }],
                rack_id: None,
            }
            .encode(),
            vec![],
        ),
        (
            ApiKey::ListOffsets,
            ListOffsetsRequest {
                topics: vec![ListOffsetsTopic {
                    name: "f".into(),
                    partitions: vec![ListOffsetsPartition {
                        partition: PartitionId(0),
                        timestamp: OffsetSpec::Earliest,
                        ..Default::default()
                    }],
                }],
                ..Default::default()
            }
            .encode(),
            vec![],
        ),
        (
            ApiKey::CreateTopics,
            CreateTopicsRequest {
                topics: vec![CreatableTopic {
                    name: "fz".into(),
                    num_partitions: Some(1),
                    replication_factor: None,
                    assignments: vec![],
                    configs: vec![ConfigEntry {
                        name: "retention.ms".into(),
                        value: Some("60000".into()),
                    }],
                }],
                timeout_ms: 1000,
                validate_only: true,
            }
            .encode(),
            vec![],
        ),
        (
            ApiKey::DeleteTopics,
            DeleteTopicsRequest {
                topic_names: vec!["fz-gone".into()],
                timeout_ms: 1000,
            }
            .encode(),
            vec![],
        ),
        (
            ApiKey::CreatePartitions,
            CreatePartitionsRequest {
                topics: vec![CreatePartitionsTopic {
                    name: "f".into(),
                    count: 3,
                    assignments: vec![],
                }],
                timeout_ms: 1000,
                validate_only: true,
            }
            .encode(),
            vec![],
        ),
        (
            ApiKey::DescribeConfigs,
            DescribeConfigsRequest {
                resources: vec![DescribeConfigsResource {
                    resource_type: ConfigResourceType::Topic,
                    resource_name: "f".into(),
                    configuration_keys: vec!["retention.ms".into()],
                }],
                include_documentation: true,
            }
            .encode(),
            vec![],
        ),
        (
            ApiKey::IncrementalAlterConfigs,
            IncrementalAlterConfigsRequest {
                resources: vec![AlterConfigsResource {
                    resource_type: ConfigResourceType::Topic,
                    resource_name: "f".into(),
                    configs: vec![AlterableConfig {
                        name: "retention.ms".into(),
                        op: AlterConfigOp::Set,
                        value: Some("3600000".into()),
                    }],
                }],
                validate_only: true,
            }
            .encode(),
            vec![],
        ),
        (
            ApiKey::FindCoordinator,
            FindCoordinatorRequest {
                key_type: CoordinatorType::Group,
                keys: vec!["g".into()],
            }
            .encode(),
            vec![],
        ),
        (
            ApiKey::ConsumerGroupHeartbeat,
            ConsumerGroupHeartbeatRequest {
                group_id: "g".into(),
                member_id: String::new(),
                member_epoch: 0,
                rebalance_timeout_ms: Some(1000),
                subscribed_topic_names: Some(vec!["f".into()]),
                topic_partitions: Some(vec![]),
                ..Default::default()
            }
            .encode(),
            vec![],
        ),
        (
            ApiKey::OffsetCommit,
            OffsetCommitRequest {
                group_id: "g2".into(),
                generation_id_or_member_epoch: -1,
                member_id: String::new(),
                group_instance_id: None,
                topics: vec![OffsetCommitTopic {
                    name: "f".into(),
                    partitions: vec![OffsetCommitPartition {
                        partition: PartitionId(0),
                        committed_offset: Offset(1),
                        committed_leader_epoch: None,
                        committed_metadata: Some("m".into()),
                    }],
                }],
            }
            .encode(),
            vec![],
        ),
        (
            ApiKey::OffsetFetch,
            OffsetFetchRequest {
                group_id: "g2".into(),
                member_id: None,
                member_epoch: -1,
                topics: Some(vec![TopicPartitions {
                    topic: "f".into(),
                    partitions: vec![PartitionId(0)],
                }]),
                require_stable: false,
            }
            .encode(),
            vec![],
        ),
        (
            ApiKey::DescribeGroups,
            DescribeGroupsRequest {
                groups: vec!["g".into(), "g2".into()],
            }
            .encode(),
            vec![],
        ),
        (
            ApiKey::ListGroups,
            ListGroupsRequest::default().encode(),
            vec![],
        ),
        (
            ApiKey::DeleteGroups,
            DeleteGroupsRequest {
                groups_names: vec!["g-none".into()],
            }
            .encode(),
            vec![],
        ),
        (
            ApiKey::InitProducerId,
            InitProducerIdRequest::default().encode(),
            vec![],
        ),
    ]
}

/// One damage, chosen at random, to `bytes`.
fn damage(rng: &mut rand::rngs::StdRng, bytes: &mut Vec<u8>) {
    if bytes.is_empty() {
        bytes.extend((0..rng.gen_range(1..64)).map(|_| rng.gen::<u8>()));
        return;
    }
    match rng.gen_range(0..7) {
        // A few bits flipped.
        0 => {
            for _ in 0..rng.gen_range(1..4) {
                let i = rng.gen_range(0..bytes.len());
                bytes[i] ^= 1 << rng.gen_range(0..8);
            }
        }
        // A byte set to an extreme (lengths, counts and offsets that lie).
        1 => {
            let i = rng.gen_range(0..bytes.len());
            bytes[i] = [0x00, 0x7f, 0x80, 0xff][rng.gen_range(0..4)];
        }
        // A 32-bit word set to a large value (vector lengths, offsets).
        2 if bytes.len() >= 4 => {
            let i = rng.gen_range(0..bytes.len() - 3) & !3;
            let v: u32 = [u32::MAX, 0x7fff_ffff, 1 << 20, 65_536][rng.gen_range(0..4)];
            bytes[i..i + 4].copy_from_slice(&v.to_le_bytes());
        }
        // Cut.
        3 => bytes.truncate(rng.gen_range(0..bytes.len())),
        // A slice repeated in place (repeated entries, when it hits a vector).
        4 => {
            let a = rng.gen_range(0..bytes.len());
            let b = rng
                .gen_range(a..bytes.len().min(a + 64) + 1)
                .min(bytes.len());
            let piece = bytes[a..b].to_vec();
            bytes.splice(a..a, piece);
        }
        // Garbage appended.
        5 => bytes.extend((0..rng.gen_range(1..64)).map(|_| rng.gen::<u8>())),
        // Two bytes swapped.
        _ => {
            let (i, j) = (rng.gen_range(0..bytes.len()), rng.gen_range(0..bytes.len()));
            bytes.swap(i, j);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_requests_of_every_api_are_answered_and_the_broker_keeps_serving() {
    let broker = Broker::start(&[]);
    let client = broker.client().await;
    assert_eq!(create_topic(&client, "f", 2, &[]).await, ErrorCode::None);
    let valid = valid_requests();
    let mut rng = rand::rngs::StdRng::seed_from_u64(SEED);
    let h = Hostile::connect(&broker).await;
    // Each valid request first, answered without an error frame.
    for (api, body, payload) in &valid {
        let reply = h.send_raw(&request(*api, body, payload)).await;
        assert!(
            matches!(&reply, Reply::Frame(f) if !f.header.is_error_response()),
            "{api}: {reply:?}"
        );
    }
    let (mut answered, mut refused) = (0usize, 0usize);
    for round in 0..ROUNDS {
        let (api, body, payload) = &valid[rng.gen_range(0..valid.len())];
        let (mut body, mut payload) = (body.clone(), payload.clone());
        for _ in 0..rng.gen_range(1..3) {
            if rng.gen_bool(0.85) || payload.is_empty() {
                damage(&mut rng, &mut body);
            } else {
                damage(&mut rng, &mut payload);
            }
        }
        let reply = h.send_raw(&request(*api, &body, &payload)).await;
        match &reply {
            Reply::Frame(f) if !f.header.is_error_response() => answered += 1,
            Reply::Frame(_) | Reply::Reset(_) => refused += 1,
            Reply::Failed(why) => panic!(
                "seed {SEED:#x} round {round} ({api}): the stream failed: {why}; log:\n{}",
                broker.log()
            ),
        }
        if round % 500 == 499 {
            let reply = h.send_raw(&request(*api, &valid[0].1, &[])).await;
            assert!(matches!(reply, Reply::Frame(_)), "round {round}: {reply:?}");
        }
    }
    // Damage that still decodes reaches the handlers: a good share of rounds must.
    assert!(
        answered > ROUNDS / 10,
        "only {answered} of {ROUNDS} damaged requests reached a handler ({refused} refused)"
    );
    broker.assert_serves_clients("after-fuzz", 100).await;
}
