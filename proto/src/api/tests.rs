//! Tests of the API layer. Every API is covered by construction: `visit_apis` calls each check
//! with every request type (and so its response type).

use std::collections::HashSet;

use bytes::Bytes;
use flatbuffers::{FlatBufferBuilder, InvalidFlatbuffer, VerifierOptions, WIPOffset};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use super::codec::testing::Gen;
use super::*;
use crate::frame::{FrameError, FrameHeader, FRAME_BYTES_MAX_DEFAULT};
use crate::{fb, ErrorCode};

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// Runs `check` on `cases` generated (request, response, payload, correlation id) for `R`.
fn run_cases<R, F>(cases: u32, check: F)
where
    R: Request + Gen,
    R::Response: Gen,
    F: Fn(&R, &R::Response, &[u8], u32),
{
    let strategy = (
        R::strategy(),
        <R::Response as Gen>::strategy(),
        proptest::collection::vec(any::<u8>(), 0..48),
        any::<u32>(),
    );
    runner(cases)
        .run(&strategy, |(req, resp, payload, corr)| {
            check(&req, &resp, &payload, corr);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{}: {e}", R::API));
}

/// The verifier bounds of `verifier_options` claim an honest body stays well inside them:
/// check it with half of each bound, so the real ones have a margin of two.
fn half_bounds(body_len: usize) -> VerifierOptions {
    VerifierOptions {
        max_tables: body_len / (TABLE_BYTES_MIN * 2) + 1,
        max_apparent_size: body_len * APPARENT_SIZE_FACTOR / 2,
        ..verifier_options(body_len)
    }
}

/// encode -> frame::encode -> frame::decode -> check + verify -> decode == original, for the
/// request and for its response.
fn check_round_trip<R: Request>(req: &R, resp: &R::Response, payload: &[u8], corr: u32) {
    let version = R::API.versions().max;
    let payload = Bytes::copy_from_slice(payload);

    let bytes = request_frame(req, version, corr, std::slice::from_ref(&payload));
    let f = frame::decode(bytes, FRAME_BYTES_MAX_DEFAULT).expect("frame decodes");
    assert_eq!(f.payload, payload);
    assert_eq!(check_request(&f.header), Ok(R::API));
    assert_eq!(
        verify_request(f.header.api_key, f.header.api_version, &f.body),
        Ok(R::API)
    );
    assert_eq!(R::verify_with(&f.body, &half_bounds(f.body.len())), Ok(()));
    assert_eq!(&R::decode(&f.body).expect("request decodes"), req);
    let any = AnyRequest::decode(R::API, &f.body).expect("request decodes as any");
    assert_eq!(any.api(), R::API);
    assert_eq!(any.encode(), f.body.to_vec());
    // Random bodies may break the request limits (repeats, overlapping payload references):
    // then dispatch refuses them, saying which rule.
    match (decode_request(&f.header, &f.body), limits::check(&any)) {
        (Ok(d), Ok(())) => assert_eq!(d, any),
        (Err(RequestError::Limits { api, reason }), Err(why)) => {
            assert_eq!(api, R::API);
            assert_eq!(reason, why);
        }
        (got, limits) => panic!("dispatch {got:?} disagrees with the limits {limits:?}"),
    }

    let bytes = response_frame(resp, &f.header, std::slice::from_ref(&payload));
    let g = frame::decode(bytes, FRAME_BYTES_MAX_DEFAULT).expect("frame decodes");
    assert_eq!(g.header.correlation_id, corr);
    assert!(!g.header.is_error_response());
    assert_eq!(
        verify_response(g.header.api_key, g.header.flags, &g.body),
        Ok(())
    );
    assert_eq!(
        <R::Response as Message>::verify_with(&g.body, &half_bounds(g.body.len())),
        Ok(())
    );
    assert_eq!(&decode_response::<R>(&g).expect("response decodes"), resp);
    let any = AnyResponse::decode(R::API, &g.body).expect("response decodes as any");
    assert_eq!(any.encode(), g.body.to_vec());

    // Reusing a builder gives the same bytes as a fresh one.
    let mut fbb = FlatBufferBuilder::new();
    let _ = resp.encode_with(&mut fbb);
    assert_eq!(req.encode_with(&mut fbb), &req.encode()[..]);
}

struct RoundTrip;
impl ApiVisitor for RoundTrip {
    fn visit<R>(&mut self)
    where
        R: Request + Gen,
        R::Response: Gen,
    {
        run_cases::<R, _>(48, check_round_trip::<R>);
        // The all-defaults message: every optional field absent, every vector empty.
        check_round_trip(&R::default(), &R::Response::default(), b"", 0);
    }
}

#[test]
fn every_request_and_response_round_trips_through_a_frame() {
    visit_apis(&mut RoundTrip);
}

fn check_message_round_trip<M: Message + Gen>() {
    runner(64)
        .run(&M::strategy(), |m| {
            let body = m.encode();
            prop_assert_eq!(M::verify_with(&body, &half_bounds(body.len())), Ok(()));
            prop_assert_eq!(M::decode(&body), Ok(m));
            Ok(())
        })
        .unwrap();
}

#[test]
fn error_response_and_consumer_protocol_bodies_round_trip() {
    check_message_round_trip::<ErrorResponse>();
    check_message_round_trip::<group::ConsumerSubscription>();
    check_message_round_trip::<group::ConsumerAssignment>();
}

/// Damaged bodies of every type: never a panic, and the damage this checks for is always
/// reported as a typed error.
struct Damage;
impl ApiVisitor for Damage {
    fn visit<R>(&mut self)
    where
        R: Request + Gen,
        R::Response: Gen,
    {
        run_cases::<R, _>(16, |req, resp, _, _| {
            check_damage::<R>(&req.encode());
            check_damage::<R::Response>(&resp.encode());
        });
    }
}

fn check_damage<M: Message>(body: &[u8]) {
    // Truncated. The builder writes back to front, so the last bytes of a body belong to the
    // first object built, followed by at most 7 bytes of alignment padding. Cutting into any
    // object is refused; cutting only padding leaves every field in place, and the body then
    // decodes to the same message.
    let original = M::decode(body).expect("the intact body decodes");
    for len in 0..body.len() {
        match M::decode(&body[..len]) {
            Err(_) => {}
            Ok(m) => {
                assert!(
                    len + 8 > body.len(),
                    "{} truncated to {len} of {} bytes decoded",
                    M::IDENTIFIER,
                    body.len()
                );
                assert_eq!(m, original, "{} truncated to {len} changed", M::IDENTIFIER);
            }
        }
    }
    // The root offset pointing past the end.
    let mut bad = body.to_vec();
    bad[0..4].copy_from_slice(&(body.len() as u32).to_le_bytes());
    assert!(matches!(
        M::decode(&bad),
        Err(DecodeError::Invalid(
            InvalidFlatbuffer::RangeOutOfBounds { .. }
        ))
    ));
    // Any other 4-byte word replaced by an offset far out of range: no panic, whatever it hits
    // (an offset, a length, a scalar, padding).
    for at in (8..body.len().saturating_sub(3)).step_by(4) {
        let mut bad = body.to_vec();
        bad[at..at + 4].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        let _ = M::decode(&bad);
        bad[at..at + 4].copy_from_slice(&0x7FFF_FFFFu32.to_le_bytes());
        let _ = M::decode(&bad);
    }
}

#[test]
fn truncated_and_corrupt_bodies_are_rejected_without_panicking() {
    visit_apis(&mut Damage);
}

/// Random bytes, and random bytes carrying the right identifier (to get past that check and
/// into the verifier), decoded as every type: `Err` or a value, never a panic.
struct RandomBytes;
impl ApiVisitor for RandomBytes {
    fn visit<R>(&mut self)
    where
        R: Request + Gen,
        R::Response: Gen,
    {
        let strategy = proptest::collection::vec(any::<u8>(), 0..256);
        runner(128)
            .run(&strategy, |mut bytes| {
                let _ = R::decode(&bytes);
                let _ = R::Response::decode(&bytes);
                if bytes.len() >= 8 {
                    bytes[4..8].copy_from_slice(&R::IDENTIFIER.0);
                    let _ = R::decode(&bytes);
                    bytes[4..8].copy_from_slice(&R::Response::IDENTIFIER.0);
                    let _ = R::Response::decode(&bytes);
                }
                Ok(())
            })
            .unwrap();
    }
}

#[test]
fn random_bytes_never_panic() {
    visit_apis(&mut RandomBytes);
}

#[test]
fn a_body_of_another_root_type_is_rejected_by_its_identifier() {
    let resp = produce::ProduceResponse::default().encode();
    assert_eq!(
        produce::ProduceRequest::decode(&resp),
        Err(DecodeError::WrongRootType {
            expected: Identifier(*b"Q000"),
            found: Identifier(*b"R000"),
        })
    );
    let fetch = fetch::FetchRequest::default().encode();
    assert!(matches!(
        produce::ProduceRequest::decode(&fetch),
        Err(DecodeError::WrongRootType { .. })
    ));
    assert_eq!(
        produce::ProduceRequest::decode(&[0; 7]),
        Err(DecodeError::TooShort { len: 7 })
    );
}

#[test]
fn identifiers_are_distinct_for_every_body_type() {
    let mut seen = HashSet::new();
    for &api in ApiKey::ALL {
        assert!(seen.insert(Identifier::request(api.as_u16())), "{api}");
        assert!(seen.insert(Identifier::response(api.as_u16())), "{api}");
    }
    for special in [
        Identifier::ERROR_RESPONSE,
        Identifier::CONSUMER_SUBSCRIPTION,
        Identifier::CONSUMER_ASSIGNMENT,
    ] {
        assert!(seen.insert(special), "{special}");
    }
    assert_eq!(Identifier::request(0x3E8).to_string(), "Q3E8");
    assert_eq!(Identifier::response(18).to_string(), "R012");
}

#[test]
fn api_keys_round_trip_and_unknown_keys_are_none() {
    for &api in ApiKey::ALL {
        assert_eq!(ApiKey::from_u16(api.as_u16()), Some(api));
        assert_eq!(api.versions(), VersionRange::new(0, 0));
    }
    let known: HashSet<u16> = ApiKey::ALL.iter().map(|a| a.as_u16()).collect();
    for key in 0..=u16::MAX {
        if !known.contains(&key) {
            assert_eq!(ApiKey::from_u16(key), None);
        }
    }
    assert_eq!(supported_apis().len(), ApiKey::ALL.len());
}

fn header(api_key: u16, api_version: u16) -> FrameHeader {
    FrameHeader {
        api_key,
        api_version,
        correlation_id: 42,
        flags: 0,
    }
}

/// The broker side of a refusal: a request frame comes in, an error frame goes out, and the
/// client decodes it as `Refused` with the supported versions.
fn refuse(request: &FrameHeader, body: &[u8]) -> ErrorResponse {
    let err = decode_request(request, body).expect_err("refused");
    let out = error_frame(request, &err.to_error_response());
    let f = frame::decode(out, FRAME_BYTES_MAX_DEFAULT).unwrap();
    assert!(f.header.is_error_response());
    assert_eq!(f.header.correlation_id, request.correlation_id);
    assert_eq!(f.header.api_key, request.api_key);
    assert_eq!(
        verify_response(f.header.api_key, f.header.flags, &f.body),
        Ok(())
    );
    let e = ErrorResponse::decode(&f.body).unwrap();
    assert_eq!(e.error_code, err.error_code());
    if let Some(api) = ApiKey::from_u16(request.api_key) {
        // What an SDK sees for a call of that API.
        struct Decode<'a>(ApiKey, &'a frame::Frame, Option<ResponseError>);
        impl ApiVisitor for Decode<'_> {
            fn visit<R>(&mut self)
            where
                R: Request + Gen,
                R::Response: Gen,
            {
                if R::API == self.0 {
                    self.2 = decode_response::<R>(self.1).err();
                }
            }
        }
        let mut d = Decode(api, &f, None);
        visit_apis(&mut d);
        assert_eq!(d.2, Some(ResponseError::Refused(e.clone())));
    }
    e
}

#[test]
fn unknown_api_is_answered_with_every_supported_api() {
    let e = refuse(&header(999, 0), b"");
    assert_eq!(e.error_code, ErrorCode::UnknownApi);
    assert_eq!(e.api_key, 999);
    assert_eq!(e.supported_versions(), None);
    assert_eq!(e.supported_apis, supported_apis());
    assert!(e.message.unwrap().contains("999"));
}

#[test]
fn unsupported_version_is_answered_with_the_supported_range() {
    let body = produce::ProduceRequest::default().encode();
    let e = refuse(&header(ApiKey::Produce.as_u16(), 3), &body);
    assert_eq!(e.error_code, ErrorCode::UnsupportedVersion);
    assert_eq!(e.api_key, 0);
    assert_eq!(e.supported_versions(), Some(VersionRange::new(0, 0)));
    assert!(e.supported_apis.is_empty());
    assert_eq!(
        e.message.as_deref(),
        Some("Produce(0) does not support version 3 (supported: 0..=0)")
    );

    // A refused handshake still tells the client everything.
    let body = handshake::ApiVersionsRequest::default().encode();
    let e = refuse(&header(ApiKey::ApiVersions.as_u16(), 9), &body);
    assert_eq!(e.error_code, ErrorCode::UnsupportedVersion);
    assert_eq!(e.supported_apis, supported_apis());
}

#[test]
fn a_valid_frame_with_an_invalid_flatbuffer_is_answered_with_invalid_request() {
    let h = header(ApiKey::Metadata.as_u16(), 0);
    // Right identifier, garbage after it.
    let mut body = vec![0xEE; 40];
    body[4..8].copy_from_slice(&Identifier::request(3).0);
    let e = refuse(&h, &body);
    assert_eq!(e.error_code, ErrorCode::InvalidRequest);
    assert_eq!(e.supported_versions(), Some(VersionRange::new(0, 0)));
    // Empty body.
    assert_eq!(refuse(&h, b"").error_code, ErrorCode::InvalidRequest);
    // Flags on a request.
    let body = metadata::MetadataRequest::default().encode();
    let flagged = FrameHeader { flags: 1, ..h };
    assert_eq!(
        refuse(&flagged, &body).error_code,
        ErrorCode::InvalidRequest
    );
}

#[test]
fn frame_errors_map_to_frame_error_codes() {
    let too_large = FrameError::TooLarge { len: 10, max: 5 };
    assert_eq!(
        ErrorCode::for_frame_error(&too_large),
        ErrorCode::FrameTooLarge
    );
    assert_eq!(
        ErrorCode::for_frame_error(&FrameError::Reserved(1)),
        ErrorCode::MalformedFrame
    );
}

#[test]
fn error_codes_match_the_schema_enum() {
    for &code in ErrorCode::ALL {
        assert_eq!(
            fb::ErrorCode(code.as_u16()).variant_name(),
            Some(code.name()),
            "{code}"
        );
    }
    assert_eq!(fb::ErrorCode::ENUM_VALUES.len(), ErrorCode::ALL.len());
}

#[test]
fn enum_values_outside_the_schema_are_rejected() {
    let mut fbb = FlatBufferBuilder::new();
    let root = fb::ProduceRequest::create(
        &mut fbb,
        &fb::ProduceRequestArgs {
            acks: fb::Acks(5),
            ..Default::default()
        },
    );
    fbb.finish(root, Some("Q000"));
    assert_eq!(
        produce::ProduceRequest::decode(fbb.finished_data()),
        Err(DecodeError::InvalidValue {
            table: "ProduceRequest",
            field: "acks",
            value: 5
        })
    );

    // ListOffsets timestamps: -1 and -2 are sentinels, other negatives are invalid.
    let mut fbb = FlatBufferBuilder::new();
    let p = fb::ListOffsetsPartition::create(
        &mut fbb,
        &fb::ListOffsetsPartitionArgs {
            timestamp: -3,
            ..Default::default()
        },
    );
    let name = fbb.create_string("t");
    let partitions = fbb.create_vector(&[p]);
    let t = fb::ListOffsetsTopic::create(
        &mut fbb,
        &fb::ListOffsetsTopicArgs {
            name: Some(name),
            partitions: Some(partitions),
        },
    );
    let topics = fbb.create_vector(&[t]);
    let root = fb::ListOffsetsRequest::create(
        &mut fbb,
        &fb::ListOffsetsRequestArgs {
            topics: Some(topics),
            ..Default::default()
        },
    );
    fbb.finish(root, Some("Q002"));
    assert_eq!(
        fetch::ListOffsetsRequest::decode(fbb.finished_data()),
        Err(DecodeError::InvalidValue {
            table: "ListOffsetsPartition",
            field: "timestamp",
            value: -3
        })
    );
}

#[test]
fn list_offsets_sentinels_map_to_offset_spec() {
    use super::codec::Scalar;
    use fetch::OffsetSpec;
    let cases = [
        (-1, Ok(OffsetSpec::Latest)),
        (-2, Ok(OffsetSpec::Earliest)),
        (0, Ok(OffsetSpec::Timestamp(crate::TimestampMs(0)))),
        (
            1_700_000_000_000,
            Ok(OffsetSpec::Timestamp(crate::TimestampMs(1_700_000_000_000))),
        ),
        (-3, Err(-3)),
        (i64::MIN, Err(i64::MIN)),
    ];
    for (raw, want) in cases {
        assert_eq!(OffsetSpec::from_raw(raw), want, "{raw}");
        if let Ok(spec) = want {
            assert_eq!(spec.to_raw(), raw);
        }
    }
}

#[test]
fn a_missing_required_field_is_rejected_by_the_verifier() {
    // A TopicProduceData without its (required) name, built by hand: the generated builder
    // refuses to finish such a table.
    let mut fbb = FlatBufferBuilder::new();
    let start = fbb.start_table();
    let nameless: WIPOffset<fb::TopicProduceData> = WIPOffset::new(fbb.end_table(start).value());
    let topics = fbb.create_vector(&[nameless]);
    let root = fb::ProduceRequest::create(
        &mut fbb,
        &fb::ProduceRequestArgs {
            topics: Some(topics),
            ..Default::default()
        },
    );
    fbb.finish(root, Some("Q000"));
    assert!(matches!(
        produce::ProduceRequest::decode(fbb.finished_data()),
        Err(DecodeError::Invalid(InvalidFlatbuffer::MissingRequiredField { ref required, .. }))
            if required == "name"
    ));
}

#[test]
fn many_references_to_one_table_are_bounded_by_the_body_length() {
    // 1000 vector entries all pointing at one partition table: an honest body of this size
    // could hold at most len/8 tables, so the verifier stops before the decoder allocates 1000.
    let mut fbb = FlatBufferBuilder::new();
    let records = fb::PayloadRef::new(0, 0);
    let p = fb::PartitionProduceData::create(
        &mut fbb,
        &fb::PartitionProduceDataArgs {
            partition: 1,
            records: Some(&records),
        },
    );
    let partitions = fbb.create_vector(&vec![p; 1000]);
    let name = fbb.create_string("t");
    let t = fb::TopicProduceData::create(
        &mut fbb,
        &fb::TopicProduceDataArgs {
            name: Some(name),
            partitions: Some(partitions),
        },
    );
    let topics = fbb.create_vector(&[t]);
    let root = fb::ProduceRequest::create(
        &mut fbb,
        &fb::ProduceRequestArgs {
            topics: Some(topics),
            ..Default::default()
        },
    );
    fbb.finish(root, Some("Q000"));
    let body = fbb.finished_data();
    assert!(body.len() / TABLE_BYTES_MIN < 1000);
    assert_eq!(
        produce::ProduceRequest::decode(body),
        Err(DecodeError::Invalid(InvalidFlatbuffer::TooManyTables))
    );
    // The same shape with honest, distinct tables is accepted.
    let req = produce::ProduceRequest {
        topics: vec![produce::TopicProduceData {
            name: "t".into(),
            partitions: vec![produce::PartitionProduceData::default(); 1000],
        }],
        ..Default::default()
    };
    assert_eq!(produce::ProduceRequest::decode(&req.encode()), Ok(req));
}

#[test]
fn absent_and_empty_optional_vectors_stay_apart() {
    let all = metadata::MetadataRequest {
        topics: None,
        allow_auto_topic_creation: false,
    };
    let none = metadata::MetadataRequest {
        topics: Some(vec![]),
        allow_auto_topic_creation: false,
    };
    assert_eq!(metadata::MetadataRequest::decode(&all.encode()), Ok(all));
    assert_eq!(metadata::MetadataRequest::decode(&none.encode()), Ok(none));
}

#[test]
fn produce_records_travel_in_the_payload_and_slice_back_out() {
    let mut payload = PayloadBuilder::new();
    let a = payload.push(Bytes::from_static(b"batch-one")).unwrap();
    let b = payload.push(Bytes::from_static(b"batch-two!")).unwrap();
    let req = produce::ProduceRequest {
        acks: produce::Acks::All,
        timeout_ms: 30_000,
        topics: vec![produce::TopicProduceData {
            name: "events".into(),
            partitions: vec![
                produce::PartitionProduceData {
                    partition: crate::PartitionId(0),
                    records: a,
                },
                produce::PartitionProduceData {
                    partition: crate::PartitionId(1),
                    records: b,
                },
            ],
        }],
        ..Default::default()
    };
    let bytes = request_frame(&req, 0, 1, payload.chunks());
    let f = frame::decode(bytes, FRAME_BYTES_MAX_DEFAULT).unwrap();
    let Ok(AnyRequest::Produce(got)) = decode_request(&f.header, &f.body) else {
        panic!("not a produce request");
    };
    let parts = &got.topics[0].partitions;
    assert_eq!(
        &parts[0].records.slice(&f.payload).unwrap()[..],
        b"batch-one"
    );
    assert_eq!(
        &parts[1].records.slice(&f.payload).unwrap()[..],
        b"batch-two!"
    );
    // A reference past the payload is refused, not sliced.
    let past = PayloadRef::new(15, 10);
    assert!(past.slice(&f.payload).is_err());
}

/// Writes one valid frame per request, response and error type into `$QUIVER_FUZZ_SEEDS` (a
/// directory), as a seed corpus for `cargo fuzz run frame_decode`. Run with
/// `QUIVER_FUZZ_SEEDS=proto/fuzz/corpus/frame_decode cargo test -p quiver-proto -- --ignored`.
#[test]
#[ignore = "writes files; run by hand to seed the fuzzer"]
fn write_fuzz_seeds() {
    let Ok(dir) = std::env::var("QUIVER_FUZZ_SEEDS") else {
        panic!("set QUIVER_FUZZ_SEEDS to the corpus directory");
    };
    std::fs::create_dir_all(&dir).unwrap();
    struct Seeds(String, usize);
    impl ApiVisitor for Seeds {
        fn visit<R>(&mut self)
        where
            R: Request + Gen,
            R::Response: Gen,
        {
            let mut rng = runner(1);
            for i in 0..4 {
                let req = R::strategy().new_tree(&mut rng).unwrap().current();
                let resp = <R::Response as Gen>::strategy()
                    .new_tree(&mut rng)
                    .unwrap()
                    .current();
                let payload = [Bytes::from_static(b"payload bytes")];
                let q = request_frame(&req, 0, i, &payload);
                let h = frame::decode(q.clone(), FRAME_BYTES_MAX_DEFAULT)
                    .unwrap()
                    .header;
                let r = response_frame(&resp, &h, &payload);
                for (kind, bytes) in [("req", q), ("resp", r)] {
                    let path = format!("{}/{}-{kind}-{i}", self.0, R::API.name());
                    std::fs::write(path, &bytes).unwrap();
                    self.1 += 1;
                }
            }
            let e = error_frame(
                &request_header(R::API, 9, 0),
                &error_response(R::API.as_u16(), ErrorCode::UnsupportedVersion, "seed"),
            );
            std::fs::write(format!("{}/{}-error", self.0, R::API.name()), &e).unwrap();
        }
    }
    let mut s = Seeds(dir, 0);
    visit_apis(&mut s);
    assert!(s.1 >= 2 * ApiKey::ALL.len());
}
