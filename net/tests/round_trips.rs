//! Acceptance 1 of issue 3: round trips between the tokio/quinn SDK client and the
//! glommio/quinn-proto server on loopback.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use tokio::task::JoinSet;

/// 1,000 requests in flight on one connection, all answered correctly. Each request waits
/// 300 ms in the service, so finishing well under 1,000 x 300 ms means they really overlapped;
/// the server's own peak count confirms it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_requests_in_flight_on_one_connection() {
    let server = TestServer::start(ServerOptions::default());
    let conn = server.connect().await;
    let started = Instant::now();
    let mut set = JoinSet::new();
    for i in 0..1000u32 {
        let conn = conn.clone();
        set.spawn(async move {
            let mut body = 300u32.to_le_bytes().to_vec();
            body.extend_from_slice(format!("request {i}").as_bytes());
            let body = Bytes::from(body);
            let f = conn
                .call(header(API_SLOW, i), body.clone(), vec![])
                .await
                .unwrap();
            assert_eq!(f.header.correlation_id, i);
            assert!(!f.header.is_error_response());
            assert_eq!(f.body, body, "response {i} carries its own request's body");
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
    let stats = server.stop();
    assert_eq!(stats[0].requests_served, 1000);
    assert!(
        stats[0].requests_in_flight_peak >= 1000,
        "peak in flight {}",
        stats[0].requests_in_flight_peak
    );
}

/// 100 concurrent connections, each with 10 concurrent requests carrying payloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_connections() {
    let server = TestServer::start(ServerOptions::default());
    let tls = server.client_tls();
    let mut set = JoinSet::new();
    for c in 0..100u32 {
        let tls = tls.clone();
        let addr = server.addr;
        set.spawn(async move {
            let conn = quiver_client::transport::Connection::connect(addr, "localhost", &tls)
                .await
                .unwrap();
            let mut calls = JoinSet::new();
            for i in 0..10u32 {
                let conn = conn.clone();
                calls.spawn(async move {
                    let cid = c * 1000 + i;
                    let body = Bytes::from(format!("conn {c} call {i}"));
                    let payload = Bytes::from(vec![(cid % 251) as u8; 1000 + i as usize * 100]);
                    let f = conn
                        .call(header(API_ECHO, cid), body.clone(), vec![payload.clone()])
                        .await
                        .unwrap();
                    assert_eq!(f.header.correlation_id, cid);
                    assert_eq!(f.body, body);
                    assert_eq!(f.payload, payload);
                });
            }
            while let Some(r) = calls.join_next().await {
                r.unwrap();
            }
            conn
        });
    }
    let mut conns = Vec::new();
    while let Some(r) = set.join_next().await {
        conns.push(r.unwrap());
    }
    // The server's counters are a snapshot its executor refreshes every few milliseconds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while server.stats()[0].connections != 100 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(server.stats()[0].connections, 100);
    drop(conns);
    let stats = server.stop();
    assert_eq!(stats[0].connections_accepted, 100);
    assert_eq!(stats[0].requests_served, 1000);
}

/// Large frames both ways: a 16 MiB request payload echoed back in one frame, and a 32 MiB
/// response built from 64 KiB chunks (the fetch shape).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_frames_both_ways() {
    let server = TestServer::start(ServerOptions::default());
    let conn = server.connect().await;
    let payload = Bytes::from(
        (0..16 * 1024 * 1024)
            .map(|i| (i % 253) as u8)
            .collect::<Vec<u8>>(),
    );
    let f = conn
        .call(
            header(API_ECHO, 1),
            Bytes::from_static(b"b"),
            vec![payload.clone()],
        )
        .await
        .unwrap();
    assert_eq!(f.payload, payload);

    let size = 32u32 * 1024 * 1024;
    let f = conn
        .call(
            header(API_BIG, 2),
            Bytes::copy_from_slice(&size.to_le_bytes()),
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(f.payload.len(), size as usize);
    assert!(f.payload.iter().all(|&b| b == 0xab));
    let stats = server.stop();
    assert_eq!(stats[0].inflight_bytes, 0, "every budget byte was returned");
}

/// On loopback, path MTU discovery grows packets far past Ethernet's 1,452 bytes in both
/// directions, and bulk data then goes in packets that size: a 16 MiB request and a 16 MiB
/// response each take a few hundred datagrams, not 11,000. Uploads also check the SDK's split
/// of oversized GSO sends: without it every large client batch is dropped, loss resets the MTU
/// to 1,200 and the upload needs more datagrams than that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_data_goes_in_large_datagrams_on_loopback() {
    let server = TestServer::start(ServerOptions::default());
    let conn = server.connect().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while conn.quinn().stats().path.current_mtu < 16_000 {
        assert!(
            Instant::now() < deadline,
            "MTU still {} after 10 s",
            conn.quinn().stats().path.current_mtu
        );
        assert_echo(&conn, 0).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let size = 16 * 1024 * 1024;
    let before = server.stats()[0].datagrams_received;
    let payload = Bytes::from(vec![0x5au8; size]);
    let f = conn
        .call(header(API_ECHO, 1), Bytes::new(), vec![payload.clone()])
        .await
        .unwrap();
    assert_eq!(f.payload, payload);
    let uploaded = server.stats()[0].datagrams_received - before;
    let client_before = conn.quinn().stats().udp_rx.datagrams;
    let f = conn
        .call(
            header(API_BIG, 2),
            Bytes::copy_from_slice(&(size as u32).to_le_bytes()),
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(f.payload.len(), size);
    let downloaded = conn.quinn().stats().udp_rx.datagrams - client_before;
    let stats = conn.quinn().stats();
    // The echo answer (16 MiB) came down in the first call too; count the second call only.
    assert!(
        uploaded < 2_000,
        "16 MiB up took {uploaded} datagrams (MTU {}, {} packets lost)",
        stats.path.current_mtu,
        stats.path.lost_packets
    );
    assert!(
        downloaded < 2_000,
        "16 MiB down took {downloaded} datagrams (MTU {})",
        stats.path.current_mtu
    );
    server.stop();
}

/// Requests written one after another on one connection are served in that order, even when
/// the last bytes of a large one and the whole of a small one arrive in the same packet
/// (quinn-proto reports the new stream before the old one's data; the server used to serve the
/// small one first). An idempotent producer's pipelined requests count on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_written_in_order_are_served_in_order() {
    let server = TestServer::start(ServerOptions::default());
    let conn = server.connect().await;
    let large = Bytes::from(vec![7u8; 200 * 1024]);
    let mut arrivals = Vec::new();
    // Rounds of 10 pairs, each answered before the next starts: a few MB in flight, so that
    // no packet is lost (a lost packet delays its request behind the next by design).
    for round in 0..20u32 {
        let mut pending = Vec::new();
        for i in 0..10u32 {
            // A large request, then a small one right behind it.
            for (j, payload) in [
                (0, vec![large.clone()]),
                (1, vec![Bytes::from_static(b"x")]),
            ] {
                let corr = 20 * round + 2 * i + j;
                let call = conn
                    .start_call_in_order(header(API_ORDER, corr), Bytes::new(), payload)
                    .await
                    .unwrap();
                pending.push((corr, call));
            }
        }
        for (corr, call) in pending {
            let f = call.response().await.unwrap();
            assert_eq!(f.header.correlation_id, corr);
            let n = u32::from_le_bytes(f.body[..4].try_into().unwrap());
            arrivals.push((corr, n));
        }
    }
    let lost = conn.quinn().stats().path.lost_packets;
    let overtaken: Vec<_> = arrivals
        .windows(2)
        .filter(|w| w[1].1 < w[0].1)
        .map(|w| (w[0].0, w[1].0))
        .collect();
    assert!(
        overtaken.is_empty(),
        "{} of 400 requests were served before the one written ahead of them, e.g. {:?} \
         ({lost} packets lost)",
        overtaken.len(),
        &overtaken[..overtaken.len().min(5)]
    );
    server.stop();
}
