//! Issue 4, acceptance 5: bad requests each get their specific error, and the broker keeps
//! serving.

use bytes::{Bytes, BytesMut};
use quiver_client::transport::Connection;
use quiver_client::ClientTls;
use quiver_proto::api::metadata::MetadataRequest;
use quiver_proto::api::produce::Acks;
use quiver_proto::api::{self, ApiKey, Message};
use quiver_proto::batch::{BatchBuilder, Compression};
use quiver_proto::frame::FrameHeader;
use quiver_proto::{ErrorCode, TimestampMs};
use quiver_testkit::*;

fn batch(values: usize, value_bytes: usize) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None);
    for _ in 0..values {
        b.append(
            TimestampMs(now_ms()),
            None,
            Some(&vec![1u8; value_bytes]),
            &[],
        )
        .unwrap();
    }
    b.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_specific_errors_and_the_broker_keeps_serving() {
    let broker = Broker::start(&[]);
    let client = broker.client().await;
    assert_eq!(
        create_topic(&client, "good", 1, &[("max.message.bytes", "2048")]).await,
        ErrorCode::None
    );

    // Topic names and duplicates.
    assert_eq!(
        create_topic(&client, "good", 1, &[]).await,
        ErrorCode::TopicAlreadyExists
    );
    for bad in ["bad name", "a/b", "..", &"x".repeat(250), "__reserved"] {
        assert_eq!(
            create_topic(&client, bad, 1, &[]).await,
            ErrorCode::InvalidTopic,
            "{bad:?}"
        );
    }
    assert_eq!(
        create_topic(&client, "zero", 0, &[]).await,
        ErrorCode::InvalidPartitions
    );
    assert_eq!(
        create_topic(&client, "cfg", 1, &[("retention.ms", "soon")]).await,
        ErrorCode::InvalidConfig
    );
    assert_eq!(
        create_topic(&client, "cfg", 1, &[("no.such.config", "1")]).await,
        ErrorCode::InvalidConfig
    );

    // Produce: unknown topic, unknown partition, oversized batch, bad CRC, truncated batch.
    let code =
        |r: quiver_proto::api::produce::ProduceResponse| r.topics[0].partitions[0].error_code;
    assert_eq!(
        code(produce(&client, "missing", 0, &[batch(1, 10)], Acks::Leader).await),
        ErrorCode::UnknownTopicOrPartition
    );
    assert_eq!(
        code(produce(&client, "good", 7, &[batch(1, 10)], Acks::Leader).await),
        ErrorCode::UnknownTopicOrPartition
    );
    assert_eq!(
        code(produce(&client, "good", 0, &[batch(3, 1000)], Acks::Leader).await),
        ErrorCode::MessageTooLarge
    );
    let mut corrupt = BytesMut::from(&batch(1, 100)[..]);
    let last = corrupt.len() - 5;
    corrupt[last] ^= 0x40;
    assert_eq!(
        code(produce(&client, "good", 0, &[corrupt.freeze()], Acks::Leader).await),
        ErrorCode::CorruptMessage
    );
    let whole = batch(1, 100);
    assert_eq!(
        code(
            produce(
                &client,
                "good",
                0,
                &[whole.slice(..whole.len() - 10)],
                Acks::Leader
            )
            .await
        ),
        ErrorCode::CorruptMessage
    );
    // Nothing of the refused batches was stored.
    let (resp, _) = fetch(&client, "good", 0, 0, 0).await;
    assert_eq!(resp.topics[0].partitions[0].high_watermark.0, 0);

    // Fetch beyond the end: out of range, carrying the log's start and end.
    assert_eq!(
        code(produce(&client, "good", 0, &[batch(2, 10)], Acks::Leader).await),
        ErrorCode::None
    );
    let (resp, records) = fetch(&client, "good", 0, 99, 0).await;
    let p = &resp.topics[0].partitions[0];
    assert_eq!(p.error_code, ErrorCode::OffsetOutOfRange);
    assert_eq!((p.log_start_offset.0, p.high_watermark.0), (0, 2));
    assert!(records.is_empty());

    // Malformed frames, unknown API, unsupported version, an invalid flatbuffer: answered with
    // an ErrorResponse (or, for bytes that are not a frame at all, a refusal) on that request
    // alone.
    let conn = Connection::connect(
        broker.addr,
        "127.0.0.1",
        &ClientTls::from_ca_file(broker.ca()).unwrap(),
    )
    .await
    .unwrap();
    let refused = |f: &quiver_proto::frame::Frame| {
        assert!(f.header.is_error_response(), "{f:?}");
        quiver_proto::api::common::ErrorResponse::decode(&f.body).unwrap()
    };
    let garbage: Vec<u8> = (0..200u32).map(|i| (i * 7919 % 251) as u8).collect();
    match conn.call_raw(vec![Bytes::from(garbage)]).await {
        Ok(f) => assert!(matches!(
            refused(&f).error_code,
            ErrorCode::MalformedFrame | ErrorCode::FrameTooLarge
        )),
        Err(e) => assert!(
            matches!(e, quiver_client::TransportError::StreamReset { .. }),
            "{e}"
        ),
    }
    let mut huge = Vec::from((200u32 << 20).to_le_bytes());
    huge.extend_from_slice(&[0u8; 16]);
    let f = conn.call_raw(vec![Bytes::from(huge)]).await.unwrap();
    assert_eq!(refused(&f).error_code, ErrorCode::FrameTooLarge);

    let unknown = FrameHeader {
        api_key: 777,
        api_version: 0,
        correlation_id: 5,
        flags: 0,
    };
    let f = conn
        .call(unknown, Bytes::from_static(b"nothing"), vec![])
        .await
        .unwrap();
    let e = refused(&f);
    assert_eq!(e.error_code, ErrorCode::UnknownApi);
    assert!(
        e.supported_apis
            .iter()
            .any(|a| a.api_key == ApiKey::Produce.as_u16()),
        "{e:?}"
    );
    assert_eq!(f.header.correlation_id, 5);

    let future_version = api::request_header(ApiKey::Metadata, 9, 6);
    let body = MetadataRequest {
        topics: None,
        allow_auto_topic_creation: false,
    }
    .encode_bytes();
    let e = refused(&conn.call(future_version, body, vec![]).await.unwrap());
    assert_eq!(e.error_code, ErrorCode::UnsupportedVersion);
    assert_eq!((e.min_version, e.max_version), (Some(0), Some(0)));

    let bad_body = api::request_header(ApiKey::Produce, 0, 7);
    let e = refused(
        &conn
            .call(
                bad_body,
                Bytes::from_static(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8]),
                vec![],
            )
            .await
            .unwrap(),
    );
    assert_eq!(e.error_code, ErrorCode::InvalidRequest);

    // Still serving, on a new connection and on the same one.
    let again = broker.client().await;
    assert_eq!(
        code(produce(&again, "good", 0, &[batch(1, 10)], Acks::Leader).await),
        ErrorCode::None
    );
    let (resp, records) = fetch(&again, "good", 0, 0, 0).await;
    assert_eq!(resp.topics[0].partitions[0].high_watermark.0, 3);
    assert!(!records.is_empty());
    let ok = conn
        .call(
            api::request_header(ApiKey::Metadata, 0, 8),
            MetadataRequest::default().encode_bytes(),
            vec![],
        )
        .await
        .unwrap();
    assert!(!ok.header.is_error_response());
}
