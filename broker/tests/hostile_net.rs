//! Flooding the broker through its transport and its HTTP endpoint: connections, stalled and
//! cancelled requests, slow scrapers. Each test asserts the bound, then that the broker still
//! serves ordinary clients.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use quiver_proto::api::fetch::{FetchPartition, FetchRequest, FetchTopic};
use quiver_proto::api::ApiKey;
use quiver_proto::api::Message;
use quiver_proto::{ErrorCode, Offset, PartitionId};
use quiver_testkit::hostile::{lying_frame, request, Hostile, Reply};
use quiver_testkit::*;

/// The codes of `quiver_net::codes` these tests expect on streams.
const READ_TIMEOUT: u64 = 0x17;

/// Connections are capped in all and per address; past half the cap a new client must prove
/// its address with a QUIC Retry first (quinn's client does that by itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_and_retried_near_the_cap() {
    let broker = Broker::start(&["--max-connections", "8", "--max-connections-per-ip", "8"]);
    let mut held = Vec::new();
    for i in 0..8 {
        held.push(
            Hostile::try_connect(&broker)
                .await
                .unwrap_or_else(|e| panic!("connection {i}: {e}")),
        );
    }
    let refused = Hostile::try_connect(&broker).await;
    assert!(refused.is_err(), "the ninth connection is refused");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(broker.metric("quiver_connections_retried_total") >= 4.0);
    assert!(broker.metric("quiver_connections_refused_total") >= 1.0);
    // Letting connections go frees their places.
    for h in held.drain(..) {
        h.conn.close("done");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if Hostile::try_connect(&broker).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "places never freed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    broker.assert_serves_clients("after-caps", 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_gets_at_most_its_share_of_connections() {
    let broker = Broker::start(&["--max-connections-per-ip", "5"]);
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(Hostile::connect(&broker).await);
    }
    assert!(Hostile::try_connect(&broker).await.is_err());
    drop(held);
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The SDK client below needs one connection per shard and one more.
    broker.assert_serves_clients("after-per-ip", 20).await;
}

/// A request whose frame stops arriving (a header, then nothing) is dropped after the read
/// timeout: its stream is reset and its buffer released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_is_reset_after_the_read_timeout() {
    let broker = Broker::start(&["--request-read-timeout-ms", "500"]);
    let h = Hostile::connect(&broker).await;
    // A header announcing a 1 MB frame, and 100 bytes of it.
    let mut bytes = lying_frame(ApiKey::Produce.as_u16(), 1_000_000, 16, &[]);
    bytes.extend_from_slice(&[0u8; 100]);
    let started = Instant::now();
    let (_send, recv) = h.start(&bytes).await;
    let reply = h
        .reply(recv, Duration::from_secs(10))
        .await
        .expect("answered");
    assert!(matches!(reply, Reply::Reset(READ_TIMEOUT)), "{reply:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Two bytes of a length prefix, and nothing more.
    let (_send, recv) = h.start(&[1, 0]).await;
    let reply = h
        .reply(recv, Duration::from_secs(10))
        .await
        .expect("answered");
    assert!(matches!(reply, Reply::Reset(READ_TIMEOUT)), "{reply:?}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(broker.metric("quiver_request_read_timeouts_total") >= 2.0);
    broker.assert_serves_clients("after-stall", 50).await;
}

/// A loop of open, long-poll, cancel: each cancelled fetch stops where it waits, so neither the
/// broker's tasks nor its memory grow with the loop (before, every cancelled long poll kept its
/// task until `max_wait_ms`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_long_polls_leave_no_tasks_behind() {
    let broker = Broker::start(&[]);
    let client = broker.client().await;
    assert_eq!(
        create_topic(&client, "quiet", 2, &[]).await,
        ErrorCode::None
    );
    let h = Hostile::connect(&broker).await;
    let poll = FetchRequest {
        max_wait_ms: 30_000,
        min_bytes: 1,
        max_bytes: 1 << 20,
        isolation_level: Default::default(),
        topics: vec![FetchTopic {
            name: "quiet".into(),
            partitions: (0..2)
                .map(|p| FetchPartition {
                    partition: PartitionId(p),
                    fetch_offset: Offset(0),
                    partition_max_bytes: 0,
                    current_leader_epoch: None,
                })
                .collect(),
        }],
        rack_id: None,
    };
    let bytes = request(ApiKey::Fetch, &poll.encode(), &[]);
    let rss_before = broker.rss_kib();
    for _ in 0..600 {
        h.send_and_cancel(&bytes, Duration::from_millis(3)).await;
    }
    // Stats are published every 2 s.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let in_service = broker.metric("quiver_requests_in_service");
    assert!(
        in_service <= 2.0,
        "{in_service} requests still being served"
    );
    assert!(broker.metric("quiver_requests_cancelled_total") >= 500.0);
    let grown = broker.rss_kib().saturating_sub(rss_before);
    assert!(grown < 32 * 1024, "RSS grew by {grown} KiB");
    broker.assert_serves_clients("after-cancel", 50).await;
}

/// A GET on its own connection: the answer, or the error, and how long it took.
fn http_get(
    addr: std::net::SocketAddr,
    path: &str,
    within: Duration,
) -> (std::io::Result<String>, Duration) {
    let started = Instant::now();
    let result = (|| {
        let mut s = TcpStream::connect_timeout(&addr, within)?;
        s.set_read_timeout(Some(within))?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })();
    (result, started.elapsed())
}

/// /health and /metrics answer promptly while slow clients hold connections: each connection
/// is served on its own, and cut after its deadline whatever its client does.
#[test]
fn the_http_endpoint_is_not_stalled_by_slow_clients() {
    let broker = Broker::start(&[]);
    // Eight clients that send half a request line and then nothing.
    let slow: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = TcpStream::connect(broker.metrics).unwrap();
            s.write_all(b"GET /hea").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    for path in ["/health", "/metrics"] {
        let (answer, took) = http_get(broker.metrics, path, Duration::from_secs(1));
        let answer = answer.expect("answered");
        assert!(took < Duration::from_secs(1), "{path} took {took:?}");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    // More slow clients than the endpoint serves at once: the extra ones are told so at once.
    let more: Vec<TcpStream> = (0..16)
        .map(|_| {
            let mut s = TcpStream::connect(broker.metrics).unwrap();
            let _ = s.write_all(b"G");
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    // Told at once: an answer (200, or 503 busy) or a closed connection, never a wait.
    let (answer, took) = http_get(broker.metrics, "/health", Duration::from_secs(1));
    assert!(took < Duration::from_secs(1), "took {took:?}");
    match answer {
        Ok(a) => assert!(
            a.starts_with("HTTP/1.1 200") || a.starts_with("HTTP/1.1 503"),
            "{a}"
        ),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "{e}"
        ),
    }
    // Each slow connection is cut by its deadline (2 s).
    std::thread::sleep(Duration::from_millis(2500));
    for mut s in slow.into_iter().chain(more) {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = Vec::new();
        let cut = s.read_to_end(&mut buf).is_ok();
        assert!(cut, "a slow connection was not closed");
    }
    let (health, _) = http_get(broker.metrics, "/health", Duration::from_secs(1));
    let health = health.expect("answered");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
}
