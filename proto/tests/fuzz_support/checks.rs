//! What proto's fuzz targets check, and their seed inputs: one function per target, called by
//! the cheap tests (`proto/tests/fuzz_cheap.rs`) and, for `request_decode`, by the cargo-fuzz
//! target of the same name (`proto/fuzz/fuzz_targets/request_decode.rs` includes this file).
//! `batch_reader` and `frame_decode` repeat the checks of the cargo-fuzz targets of those names,
//! which predate this file: keep them in step.
#![allow(dead_code)]

use bytes::Bytes;
use quiver_proto::api::{
    self, AnyRequest, AnyResponse, ApiKey, ErrorResponse, Message, PayloadRef, RequestError,
};
use quiver_proto::batch::{self, BatchBuilder, BatchIter, BatchLimits, BatchView, Compression};
use quiver_proto::{frame, Offset, TimestampMs};

const FRAME_BYTES_MAX: usize = 1 << 20;

/// The record-batch reader on hostile bytes (as `proto/fuzz/fuzz_targets/batch_reader.rs`): the
/// input as one batch (and with its CRC and length fixed up, to reach the record decoder), and
/// as a fetch response of concatenated batches. No panic; a batch that validates takes the
/// in-place stamps and still validates.
pub fn batch_reader(data: &[u8]) {
    let limits = BatchLimits::default();
    let _ = batch::validate_deep(data, limits);
    let mut fixed = data.to_vec();
    if fixed.len() >= batch::BATCH_HEADER_BYTES {
        let crc = batch::compute_crc(&fixed);
        fixed[16..20].copy_from_slice(&crc.to_le_bytes());
        let len = (fixed.len() as u32).to_le_bytes();
        let mut with_len = fixed.clone();
        with_len[8..12].copy_from_slice(&len);
        let crc = batch::compute_crc(&with_len);
        with_len[16..20].copy_from_slice(&crc.to_le_bytes());
        for candidate in [&fixed, &with_len] {
            if let Ok(view) = BatchView::new(candidate, limits) {
                if let Ok(records) = view.records() {
                    for r in records.iter() {
                        match r {
                            Ok(r) => {
                                for h in r.headers() {
                                    let _ = h;
                                }
                            }
                            Err(_) => break,
                        }
                    }
                }
                let mut copy = candidate.to_vec();
                batch::set_base_offset(&mut copy, Offset(u64::MAX)).unwrap();
                batch::set_log_append_time(&mut copy, TimestampMs(i64::MIN)).unwrap();
                assert!(batch::validate(&copy, limits).is_ok());
            }
            let _ = batch::validate_deep(candidate, limits);
        }
    }
    for b in BatchIter::new(data) {
        match b {
            Ok(b) => {
                let _ = batch::validate_deep(b, limits);
            }
            Err(_) => break,
        }
    }
}

/// Frame decoding and body verification (as `proto/fuzz/fuzz_targets/frame_decode.rs`): the
/// broker's path (decode_request, or a well-formed error frame for what it refuses) and the
/// SDK's (the body as the API's response or as an ErrorResponse), with the layers agreeing and
/// every decoded message re-encoding to itself.
pub fn frame_decode(data: &[u8]) {
    let Ok(f) = frame::decode(Bytes::copy_from_slice(data), FRAME_BYTES_MAX) else {
        return;
    };
    match api::decode_request(&f.header, &f.body) {
        Ok(req) => {
            assert_eq!(
                api::verify_request(f.header.api_key, f.header.api_version, &f.body),
                Ok(req.api())
            );
            let again = AnyRequest::decode(req.api(), &req.encode()).expect("re-encoded decodes");
            assert_eq!(again, req);
            slice_payload_refs(&req, &f.payload);
        }
        Err(e) => {
            let out = api::error_frame(&f.header, &e.to_error_response());
            let back = frame::decode(out, FRAME_BYTES_MAX).expect("error frame decodes");
            assert!(back.header.is_error_response());
            let body = ErrorResponse::decode(&back.body).expect("error body decodes");
            assert_eq!(body.error_code, e.error_code());
        }
    }
    let _ = api::verify_response(f.header.api_key, f.header.flags, &f.body);
    if let Some(api) = ApiKey::from_u16(f.header.api_key) {
        if let Ok(resp) = AnyResponse::decode(api, &f.body) {
            assert!(api.verify_response_body(&f.body).is_ok());
            let again = AnyResponse::decode(api, &resp.encode()).expect("re-encoded decodes");
            assert_eq!(again, resp);
        }
    }
    if let Ok(e) = ErrorResponse::decode(&f.body) {
        assert_eq!(ErrorResponse::decode(&e.encode()), Ok(e));
    }
}

/// Payload references come from the peer: slicing must check them, never panic.
fn slice_payload_refs(req: &AnyRequest, payload: &Bytes) {
    match req {
        AnyRequest::Produce(p) => {
            for t in &p.topics {
                for part in &t.partitions {
                    if let Ok(b) = part.records.slice(payload) {
                        assert_eq!(b.len(), part.records.len as usize);
                    }
                }
            }
        }
        AnyRequest::RaftMessage(r) => {
            for m in &r.messages {
                let _ = m.slice(payload);
            }
        }
        _ => {}
    }
}

/// The input as the request body of every API, as the broker decodes it:
/// - `AnyRequest::decode` and `decode_request` agree: the same request, or the same decode
///   error, or (`decode_request` only) a refusal by `api::limits`;
/// - a body that decodes also verifies (`verify_request`), as its API's request and no other
///   (the file identifier names the root type, so at most one API accepts a body);
/// - whatever decodes re-encodes to a body that decodes to the same request (decode(encode(x))
///   == x), and encoding is deterministic (the re-encoded body encodes again to the same bytes);
/// - a version outside the API's range and a request with flags are refused before the body is
///   looked at, whatever it holds.
pub fn request_decode(body: &[u8]) {
    let mut accepted = Vec::new();
    for &api in ApiKey::ALL {
        let direct = AnyRequest::decode(api, body);
        let via = api::decode_request(&api::request_header(api, api.versions().min, 7), body);
        match (&direct, &via) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{api}: decode and decode_request disagree"),
            (Ok(_), Err(RequestError::Limits { api: a, .. })) => assert_eq!(*a, api),
            (Err(e), Err(RequestError::Decode { api: a, error })) => {
                assert_eq!(*a, api);
                assert_eq!(e, error, "{api}: not the decoder's error");
            }
            _ => panic!("{api}: AnyRequest::decode gave {direct:?}, decode_request {via:?}"),
        }
        let Ok(req) = direct else { continue };
        accepted.push(api);
        assert_eq!(req.api(), api);
        assert_eq!(
            api::verify_request(api.as_u16(), api.versions().min, body),
            Ok(api),
            "{api}: decodes but does not verify"
        );
        let encoded = req.encode();
        let again = AnyRequest::decode(api, &encoded)
            .unwrap_or_else(|e| panic!("{api}: re-encoded {req:?} does not decode: {e}"));
        assert_eq!(again, req, "{api}: decode(encode(x)) != x");
        assert_eq!(
            again.encode(),
            encoded,
            "{api}: encoding is not deterministic"
        );
    }
    assert!(
        accepted.len() <= 1,
        "one body decoded as the request of several APIs: {accepted:?}"
    );
    for &api in ApiKey::ALL {
        if let Some(v) = api.versions().max.checked_add(1) {
            let h = api::request_header(api, v, 7);
            let refused = api::decode_request(&h, body);
            assert!(
                matches!(refused, Err(RequestError::UnsupportedVersion { api: a, version: w })
                    if a == api && w == v),
                "{api} version {v}: {refused:?}"
            );
        }
        let mut h = api::request_header(api, api.versions().min, 7);
        h.flags = 1;
        let refused = api::decode_request(&h, body);
        assert!(
            matches!(refused, Err(RequestError::UnexpectedFlags { api: a, .. }) if a == api),
            "{api} with flags: {refused:?}"
        );
    }
}

/// Declares, for every API, its default request and response: a `match` over `ApiKey`, so a new
/// API that is not listed here fails to compile rather than go unseeded.
macro_rules! defaults {
    ($($name:ident),* $(,)?) => {
        pub fn default_request(api: ApiKey) -> AnyRequest {
            match api {
                $( ApiKey::$name => AnyRequest::$name(Default::default()), )*
            }
        }

        pub fn default_response(api: ApiKey) -> AnyResponse {
            match api {
                $( ApiKey::$name => AnyResponse::$name(Default::default()), )*
            }
        }
    };
}

defaults!(
    Produce,
    Fetch,
    ListOffsets,
    Metadata,
    OffsetCommit,
    OffsetFetch,
    FindCoordinator,
    JoinGroup,
    Heartbeat,
    LeaveGroup,
    SyncGroup,
    DescribeGroups,
    ListGroups,
    SaslHandshake,
    ApiVersions,
    CreateTopics,
    DeleteTopics,
    InitProducerId,
    DescribeAcls,
    CreateAcls,
    DeleteAcls,
    DescribeConfigs,
    SaslAuthenticate,
    CreatePartitions,
    DeleteGroups,
    IncrementalAlterConfigs,
    AlterPartitionReassignments,
    DescribeClientQuotas,
    AlterClientQuotas,
    DescribeUserScramCredentials,
    AlterUserScramCredentials,
    AlterPartition,
    DescribeCluster,
    BrokerRegistration,
    BrokerHeartbeat,
    ConsumerGroupHeartbeat,
    ReplicaFetch,
    RaftMessage,
);

/// Requests with their lists, strings and options filled in, for the APIs whose bodies have the
/// most structure (every other API is seeded by its default request).
pub fn populated_requests() -> Vec<AnyRequest> {
    use quiver_proto::api::{cluster, TopicPartitions};
    use quiver_proto::api::{fetch, group, handshake, metadata, produce, ConfigEntry};
    use quiver_proto::{LeaderEpoch, PartitionId};
    let tp = |topic: &str, parts: &[u32]| TopicPartitions {
        topic: topic.into(),
        partitions: parts.iter().map(|&p| PartitionId(p)).collect(),
    };
    vec![
        AnyRequest::Produce(produce::ProduceRequest {
            transactional_id: Some("tx".into()),
            acks: produce::Acks::Leader,
            timeout_ms: 30_000,
            topics: vec![produce::TopicProduceData {
                name: "orders".into(),
                partitions: vec![
                    produce::PartitionProduceData {
                        partition: PartitionId(0),
                        records: PayloadRef::new(0, 100),
                    },
                    produce::PartitionProduceData {
                        partition: PartitionId(3),
                        records: PayloadRef::new(100, 20),
                    },
                ],
            }],
        }),
        AnyRequest::Fetch(fetch::FetchRequest {
            max_wait_ms: 500,
            min_bytes: 1,
            max_bytes: 1 << 20,
            isolation_level: fetch::IsolationLevel::ReadCommitted,
            topics: vec![fetch::FetchTopic {
                name: "orders".into(),
                partitions: vec![fetch::FetchPartition {
                    partition: PartitionId(1),
                    fetch_offset: Offset(42),
                    partition_max_bytes: 65_536,
                    current_leader_epoch: Some(LeaderEpoch(3)),
                }],
            }],
            rack_id: Some("rack-a".into()),
        }),
        AnyRequest::ListOffsets(fetch::ListOffsetsRequest {
            isolation_level: fetch::IsolationLevel::ReadUncommitted,
            topics: vec![fetch::ListOffsetsTopic {
                name: "t".into(),
                partitions: vec![
                    fetch::ListOffsetsPartition {
                        partition: PartitionId(0),
                        current_leader_epoch: None,
                        timestamp: fetch::OffsetSpec::Earliest,
                    },
                    fetch::ListOffsetsPartition {
                        partition: PartitionId(1),
                        current_leader_epoch: Some(LeaderEpoch(1)),
                        timestamp: fetch::OffsetSpec::Timestamp(TimestampMs(1_700_000_000_000)),
                    },
                ],
            }],
            follower_progress: true,
        }),
        AnyRequest::Metadata(metadata::MetadataRequest {
            topics: Some(vec!["a".into(), "b".into()]),
            allow_auto_topic_creation: true,
        }),
        AnyRequest::CreateTopics(metadata::CreateTopicsRequest {
            topics: vec![metadata::CreatableTopic {
                name: "new".into(),
                num_partitions: Some(3),
                replication_factor: None,
                assignments: vec![metadata::ReplicaAssignment {
                    partition: PartitionId(0),
                    broker_ids: vec![quiver_proto::BrokerId(1)],
                }],
                configs: vec![ConfigEntry {
                    name: "retention.ms".into(),
                    value: Some("1000".into()),
                }],
            }],
            timeout_ms: 1000,
            validate_only: false,
        }),
        AnyRequest::IncrementalAlterConfigs(metadata::IncrementalAlterConfigsRequest {
            resources: vec![metadata::AlterConfigsResource {
                resource_type: metadata::ConfigResourceType::Topic,
                resource_name: "t".into(),
                configs: vec![
                    metadata::AlterableConfig {
                        name: "segment.bytes".into(),
                        op: metadata::AlterConfigOp::Set,
                        value: Some("1048576".into()),
                    },
                    metadata::AlterableConfig {
                        name: "retention.ms".into(),
                        op: metadata::AlterConfigOp::Delete,
                        value: None,
                    },
                ],
            }],
            validate_only: true,
        }),
        AnyRequest::OffsetCommit(group::OffsetCommitRequest {
            group_id: "g".into(),
            generation_id_or_member_epoch: 5,
            member_id: "m-1".into(),
            group_instance_id: Some("i".into()),
            topics: vec![group::OffsetCommitTopic {
                name: "t".into(),
                partitions: vec![group::OffsetCommitPartition {
                    partition: PartitionId(2),
                    committed_offset: Offset(99),
                    committed_leader_epoch: Some(LeaderEpoch(4)),
                    committed_metadata: Some("meta".into()),
                }],
            }],
        }),
        AnyRequest::OffsetFetch(group::OffsetFetchRequest {
            group_id: "g".into(),
            member_id: Some("m-1".into()),
            member_epoch: 3,
            topics: Some(vec![tp("t", &[0, 1, 2])]),
            require_stable: true,
        }),
        AnyRequest::ConsumerGroupHeartbeat(group::ConsumerGroupHeartbeatRequest {
            group_id: "g".into(),
            member_id: "m-1".into(),
            member_epoch: 0,
            instance_id: Some("static-1".into()),
            rack_id: None,
            rebalance_timeout_ms: Some(60_000),
            subscribed_topic_names: Some(vec!["a".into(), "b".into()]),
            server_assignor: Some("range".into()),
            topic_partitions: Some(vec![tp("a", &[0]), tp("b", &[1, 2])]),
        }),
        AnyRequest::FindCoordinator(group::FindCoordinatorRequest {
            key_type: group::CoordinatorType::Group,
            keys: vec!["g1".into(), "g2".into()],
        }),
        AnyRequest::ApiVersions(handshake::ApiVersionsRequest {
            client_software_name: "quiver-fuzz".into(),
            client_software_version: "0.1".into(),
            client_id: Some("fuzz-app".into()),
        }),
        AnyRequest::DeleteTopics(metadata::DeleteTopicsRequest {
            topic_names: vec!["x".into(), "y".into()],
            timeout_ms: 5,
        }),
        AnyRequest::RaftMessage(cluster::RaftMessageRequest {
            cluster_id: "c".into(),
            from: quiver_proto::BrokerId(2),
            messages: vec![PayloadRef::new(0, 10), PayloadRef::new(10, 3)],
        }),
    ]
}

/// Every seed request: each API's default request, then the populated ones.
pub fn seed_requests() -> Vec<AnyRequest> {
    let mut out: Vec<AnyRequest> = ApiKey::ALL.iter().map(|&a| default_request(a)).collect();
    out.extend(populated_requests());
    out
}

/// Seeds of `request_decode`: the body of every seed request.
pub fn request_seeds() -> Vec<Vec<u8>> {
    seed_requests().iter().map(AnyRequest::encode).collect()
}

/// Seeds of `frame_decode`: a request frame per seed request (with a payload its references
/// fit), each API's default response frame, and an error frame.
pub fn frame_seeds() -> Vec<Vec<u8>> {
    let payload = [Bytes::from(vec![0x5a; 120])];
    let chunks: Vec<&[u8]> = payload.iter().map(|c| &c[..]).collect();
    let mut out = Vec::new();
    for (i, req) in seed_requests().iter().enumerate() {
        let h = api::request_header(req.api(), 0, i as u32);
        out.push(frame::encode(&h, &req.encode(), &chunks).to_vec());
    }
    for &a in ApiKey::ALL {
        let h = api::request_header(a, 0, 1);
        let resp = default_response(a);
        out.push(frame::encode(&api::response_header(&h, false), &resp.encode(), &[]).to_vec());
    }
    let h = api::request_header(ApiKey::Fetch, 9, 3);
    let e = api::error_response(
        ApiKey::Fetch.as_u16(),
        quiver_proto::ErrorCode::UnsupportedVersion,
        "seed",
    );
    out.push(api::error_frame(&h, &e).to_vec());
    out
}

/// A batch of `n` records with keys, values and (every other record) a header.
pub fn seed_batch(compression: Compression, n: u32, seed: u8) -> Vec<u8> {
    let mut b = BatchBuilder::new(compression);
    for i in 0..n {
        let v: Vec<u8> = (0..(8 + i as usize * 3))
            .map(|j| seed ^ (i as u8).wrapping_add(j as u8))
            .collect();
        let key = [seed, i as u8];
        let headers: &[(&str, &[u8])] = if i % 2 == 0 { &[("h", b"v")] } else { &[] };
        b.append(
            TimestampMs(1_700_000_000_000 + i64::from(i)),
            (i % 3 != 0).then_some(&key[..]),
            Some(&v),
            headers,
        )
        .unwrap();
    }
    b.finish().unwrap().to_vec()
}

/// Seeds of `batch_reader`: batches of each compression, an idempotent one, and a fetch
/// response of several batches back to back.
pub fn batch_seeds() -> Vec<Vec<u8>> {
    let mut out = vec![
        seed_batch(Compression::None, 1, 1),
        seed_batch(Compression::None, 5, 2),
        seed_batch(Compression::Lz4, 5, 3),
        seed_batch(Compression::Zstd, 5, 4),
    ];
    let mut idem = seed_batch(Compression::None, 3, 5);
    batch::set_producer(&mut idem, 7, 1, 0).unwrap();
    out.push(idem);
    let mut fetched = Vec::new();
    for (i, s) in out.iter().enumerate() {
        let mut b = s.clone();
        batch::set_base_offset(&mut b, Offset(i as u64 * 10)).unwrap();
        fetched.extend_from_slice(&b);
    }
    out.push(fetched);
    out
}
