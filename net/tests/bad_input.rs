//! Acceptance 2 of issue 3: bad input, one test each. Every case gets an error response or a
//! clean close with a reason, and the server keeps serving other connections.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use quiver_client::transport::{codes, TransportError};
use quiver_net::EndpointConfig;
use quiver_proto::frame::{self, Frame, FRAME_BYTES_MAX_DEFAULT};
use rand::{rngs::StdRng, Rng, SeedableRng};

fn assert_error_frame(result: Result<Frame, TransportError>, expect_in_body: &str) {
    let f = result.expect("an error response frame");
    assert!(f.header.is_error_response(), "flags {:#x}", f.header.flags);
    let body = String::from_utf8_lossy(&f.body);
    assert!(body.contains(expect_in_body), "body {body:?}");
}

fn assert_reset(result: Result<Frame, TransportError>, code: u32) {
    match result {
        Err(TransportError::StreamReset { code: c }) => assert_eq!(c, code as u64),
        other => panic!("expected a stream reset with {code:#x}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes() {
    let server = TestServer::start(ServerOptions::default());
    let conn = server.connect().await;
    let bystander = server.connect().await;
    let mut rng = StdRng::seed_from_u64(0x9e3779b97f4a7c15);
    for _ in 0..20 {
        let len = rng.gen_range(1..5000);
        let junk: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        let result = conn.call_raw(vec![Bytes::from(junk)]).await;
        assert_error_frame(result, "malformed frame");
    }
    assert_echo(&conn, 1).await;
    assert_echo(&bystander, 2).await;
    let stats = server.stop();
    assert_eq!(stats[0].frame_errors, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_frame() {
    let server = TestServer::start(ServerOptions::default());
    let conn = server.connect().await;
    let whole = frame::encode(&header(API_ECHO, 7), b"body", &[b"payload"]);
    // Cut inside the payload, inside the header, and inside the length prefix.
    for cut in [whole.len() - 3, 10, 2] {
        let result = conn.call_raw(vec![whole.slice(..cut)]).await;
        assert_error_frame(result, "stream ended after");
    }
    // The header survived the first cut, so that error response echoes the correlation id.
    let f = conn
        .call_raw(vec![whole.slice(..whole.len() - 3)])
        .await
        .unwrap();
    assert_eq!(f.header.correlation_id, 7);
    assert_echo(&conn, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn length_over_the_maximum() {
    let server = TestServer::start(ServerOptions::default());
    let conn = server.connect().await;
    // A prefix announcing 1 GiB followed by some bytes; the server must refuse it from the
    // prefix alone (it never receives or allocates the rest).
    let mut bytes = ((1u32 << 30) - 4).to_le_bytes().to_vec();
    bytes.extend_from_slice(&[0u8; 4096]);
    let result = conn.call_raw(vec![Bytes::from(bytes)]).await;
    assert_error_frame(result, "exceeds the maximum");
    // A frame one byte over the configured maximum, really sent in full.
    let max = FRAME_BYTES_MAX_DEFAULT;
    let mut big = ((max + 1 - 4) as u32).to_le_bytes().to_vec();
    big.resize(max + 1, 0);
    let result = conn.call_raw(vec![Bytes::from(big)]).await;
    assert_error_frame(result, "exceeds the maximum");
    assert_echo(&conn, 1).await;
    let stats = server.stop();
    assert!(
        stats[0].inflight_bytes_peak_per_connection < 1024 * 1024,
        "nothing was allocated for refused frames: peak {}",
        stats[0].inflight_bytes_peak_per_connection
    );
}

/// Without an error response from the service, frame errors reset the stream with a code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_errors_reset_the_stream_when_the_service_gives_no_response() {
    let server = TestServer::start(ServerOptions {
        reject_with_response: false,
        ..ServerOptions::default()
    });
    let conn = server.connect().await;
    let mut over = ((1u32 << 30) - 4).to_le_bytes().to_vec();
    over.extend_from_slice(&[0u8; 100]);
    assert_reset(
        conn.call_raw(vec![Bytes::from(over)]).await,
        codes::FRAME_TOO_LARGE,
    );
    let whole = frame::encode(&header(API_ECHO, 7), b"body", &[]);
    assert_reset(
        conn.call_raw(vec![whole.slice(..whole.len() - 1)]).await,
        codes::FRAME_TRUNCATED,
    );
    let mut reserved = whole.to_vec();
    reserved[14] = 1;
    assert_reset(
        conn.call_raw(vec![Bytes::from(reserved)]).await,
        codes::FRAME_INVALID,
    );
    assert_echo(&conn, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_frame_holding_an_invalid_flatbuffer() {
    let server = TestServer::start(ServerOptions::default());
    let conn = server.connect().await;
    // A well-formed body first, so the check below is known to be able to pass.
    let mut b = flatbuffers::FlatBufferBuilder::new();
    let s = b.create_string("hello");
    b.finish_minimal(s);
    let good = Bytes::copy_from_slice(b.finished_data());
    let f = conn
        .call(header(API_VERIFY, 1), good, vec![])
        .await
        .unwrap();
    assert!(!f.header.is_error_response());
    assert_eq!(&f.body[..], b"hello");
    // Now a root offset pointing far outside the buffer.
    let bad = Bytes::from_static(&[0xff, 0xff, 0x00, 0x00, 1, 2, 3, 4]);
    let result = conn.call(header(API_VERIFY, 2), bad, vec![]).await;
    assert_error_frame(result, "invalid flatbuffer body");
    assert_echo(&conn, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_api() {
    let server = TestServer::start(ServerOptions::default());
    let conn = server.connect().await;
    let result = conn
        .call(header(999, 42), Bytes::from_static(b"?"), vec![])
        .await;
    let f = result.as_ref().unwrap();
    assert_eq!(f.header.correlation_id, 42);
    assert_error_frame(result, "unknown api key 999");
    assert_echo(&conn, 43).await;
}

/// A client that opens requests for large responses and never reads them. Its responses pile
/// up (QUIC flow control stops them), and once they exceed the connection's byte budget the
/// server stops reading that client's further requests; stuck streams are reset after the write
/// timeout, every byte is returned, and other connections are served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads() {
    const BUDGET: u64 = 4 * 1024 * 1024;
    const RESPONSE: u32 = 2 * 1024 * 1024;
    const WRITE_TIMEOUT: Duration = Duration::from_millis(800);
    let server = TestServer::start(ServerOptions {
        config: EndpointConfig {
            inflight_bytes_max: BUDGET,
            write_timeout: WRITE_TIMEOUT,
            ..EndpointConfig::default()
        },
        ..ServerOptions::default()
    });
    let other = server.connect().await;
    assert_echo(&other, 1).await;
    // Small receive windows, so QUIC flow control (not the client's buffers) stops the server.
    let sloth = quiver_client::transport::Connection::connect_with(
        server.addr,
        "localhost",
        &server.client_tls(),
        quiver_client::transport::ConnectOptions {
            stream_receive_window: 64 * 1024,
            receive_window: 256 * 1024,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut held = Vec::new();
    let ask = |i: u32| {
        let sloth = sloth.clone();
        async move {
            let (mut send, recv) = sloth.quinn().open_bi().await.unwrap();
            let req = frame::encode(&header(API_BIG, i), &RESPONSE.to_le_bytes(), &[]);
            send.write_all(&req).await.unwrap();
            send.finish().unwrap();
            (send, recv) // never read
        }
    };
    // Phase 1: enough stuck responses to exceed the budget.
    for i in 0..3 {
        held.push(ask(i).await);
    }
    let s = wait_for_stats(&server, Duration::from_secs(5), |s| {
        s[0].inflight_bytes > BUDGET
    })
    .await;
    assert!(s[0].inflight_bytes > BUDGET, "{s:?}");
    let served_before = s[0].requests_served;
    // Phase 2: more requests from the same client are not read while it is over budget.
    for i in 3..12 {
        held.push(ask(i).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let s = server.stats();
    assert_eq!(
        s[0].write_timeouts, 0,
        "checked before the first write timeout"
    );
    assert_eq!(
        s[0].requests_served, served_before,
        "parked requests were served: {s:?}"
    );
    assert_eq!(s[0].requests_in_flight, 12, "{s:?}");
    // Meanwhile another connection is served.
    assert_echo(&other, 2).await;

    // Every stuck stream is reset after the write timeout and its memory returned; the parked
    // requests are then served (and time out in turn, since the client still does not read).
    let stats = wait_for_stats(&server, Duration::from_secs(30), |s| {
        s[0].write_timeouts >= 12 && s[0].inflight_bytes == 0
    })
    .await;
    assert_eq!(stats[0].write_timeouts, 12, "{stats:?}");
    assert_eq!(stats[0].inflight_bytes, 0, "{stats:?}");
    // The budget bounds what is read, not what the service answers: requests admitted while
    // under it may each produce a large response (here: at most the 12 requests' responses and
    // their request frames). See `EndpointConfig::inflight_bytes_max`.
    let peak = stats[0].inflight_bytes_peak_per_connection;
    assert!(peak <= 12 * (RESPONSE as u64 + 64), "peak {peak}");
    // The stuck streams were reset with the write-timeout code.
    let (_, mut recv) = held.pop().unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let code = loop {
        match recv.read(&mut buf).await {
            Ok(Some(_)) => continue,
            Err(quinn::ReadError::Reset(code)) => break code.into_inner(),
            other => panic!("expected a reset, got {other:?}"),
        }
    };
    assert_eq!(code, codes::WRITE_TIMEOUT as u64);
    assert_echo(&other, 3).await;
    assert_echo(&sloth, 4).await;
}

/// Connection-level abuse: a peer that keeps sending malformed frames is closed with a code and
/// a reason, and other connections are not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_sending_only_garbage_is_closed_with_a_reason() {
    let server = TestServer::start(ServerOptions {
        config: EndpointConfig {
            frame_errors_max: 8,
            ..EndpointConfig::default()
        },
        ..ServerOptions::default()
    });
    let abuser = server.connect().await;
    let bystander = server.connect().await;
    let mut closed = None;
    for _ in 0..20 {
        match abuser.call_raw(vec![Bytes::from_static(b"\x01\x00")]).await {
            Ok(f) => assert!(f.header.is_error_response()),
            Err(e) => {
                closed = Some(e);
                break;
            }
        }
    }
    match closed.expect("the connection was closed") {
        TransportError::ConnectionClosed { code, reason } => {
            assert_eq!(code, codes::CONNECTION_ABUSE as u64);
            assert_eq!(reason, "too many malformed frames");
        }
        other => panic!("expected a close with a reason, got {other:?}"),
    }
    assert_echo(&bystander, 1).await;
}

/// Random UDP datagrams (including ones that look like QUIC long headers) sent to the server's
/// port are dropped; established and new connections keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_datagrams_are_ignored() {
    let server = TestServer::start(ServerOptions::default());
    let conn = server.connect().await;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    for i in 0..2000 {
        let len = rng.gen_range(1..1500);
        let mut d: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        if i % 2 == 0 {
            d[0] |= 0xc0; // long header form
            if len > 5 {
                d[1..5].copy_from_slice(&1u32.to_be_bytes()); // QUIC v1
            }
        }
        sock.send_to(&d, server.addr).unwrap();
    }
    assert_echo(&conn, 1).await;
    let fresh = server.connect().await;
    assert_echo(&fresh, 2).await;
    let stats = wait_for_stats(&server, Duration::from_secs(5), |s| {
        s[0].datagrams_received >= 2000
    })
    .await;
    assert!(stats[0].datagrams_received >= 2000, "{stats:?}");
}
