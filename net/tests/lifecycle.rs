//! Graceful shutdown, dial-out between glommio endpoints, one endpoint per core on one address,
//! and the error-code list shared with the SDK.

mod common;

use std::{rc::Rc, time::Duration};

use bytes::Bytes;
use common::*;
use quiver_client::transport::{ConnectOptions, Connection, TransportError};
use quiver_net::{codes, tls, CallError, Endpoint, EndpointConfig};
use tokio::task::JoinSet;

/// Shutdown lets the request in flight finish, refuses new connections meanwhile, then closes
/// the connection with the shutdown code and reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_requests_then_closes_with_a_reason() {
    let server = TestServer::start(ServerOptions {
        shutdown_grace: Duration::from_secs(5),
        ..ServerOptions::default()
    });
    let conn = server.connect().await;
    let tls = server.client_tls();
    let addr = server.addr;
    let slow = {
        let conn = conn.clone();
        tokio::spawn(async move {
            let body = Bytes::copy_from_slice(&800u32.to_le_bytes());
            conn.call(header(API_SLOW, 1), body, vec![]).await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopping = tokio::task::spawn_blocking(move || server.stop());
    tokio::time::sleep(Duration::from_millis(200)).await;

    // New connections are refused while the slow request finishes.
    let started = tokio::time::Instant::now();
    let refused = Connection::connect_with(
        addr,
        "localhost",
        &tls,
        ConnectOptions {
            connect_timeout: Duration::from_secs(3),
            ..Default::default()
        },
    )
    .await;
    assert!(
        refused.is_err(),
        "a connection was accepted during shutdown"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused promptly, not by timeout"
    );

    let answer = slow
        .await
        .unwrap()
        .expect("the request in flight was answered");
    assert_eq!(answer.header.correlation_id, 1);
    match conn.closed().await {
        TransportError::ConnectionClosed { code, reason } => {
            assert_eq!(code, codes::SHUTDOWN as u64);
            assert_eq!(reason, "broker shutting down");
        }
        other => panic!("expected a close with a reason, got {other}"),
    }
    let stats = stopping.await.unwrap();
    assert_eq!(stats[0].requests_served, 1);
    assert_eq!(stats[0].connections_refused, 1);
}

/// Two endpoints on one glommio executor: B dials A from its own socket (as brokers replicate)
/// and runs many calls concurrently on one connection.
#[test]
fn dial_out_between_glommio_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tls::ensure_dev_certs(dir.path()).unwrap();
    let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
    ex.run(async move {
        let server_tls = tls::server_config(&certs.server_files()).unwrap();
        let client_tls = tls::client_config(&certs.client_files()).unwrap();
        let svc = TestService {
            reject_with_response: true,
        };
        let a = Endpoint::builder("127.0.0.1:0".parse().unwrap())
            .server(server_tls.clone(), svc.clone())
            .bind()
            .unwrap();
        let b = Endpoint::builder("127.0.0.1:0".parse().unwrap())
            .config(EndpointConfig {
                call_timeout: Duration::from_millis(1500),
                ..EndpointConfig::default()
            })
            .server(server_tls, svc)
            .client(client_tls)
            .bind()
            .unwrap();
        let conn = Rc::new(b.connect(a.local_addr(), "localhost").await.unwrap());
        let id = conn
            .peer_identity()
            .expect("the server's certificate names");
        assert_eq!(id.common_name.as_deref(), Some("quiver dev server"));

        let mut tasks = Vec::new();
        for i in 0..200u32 {
            let conn = conn.clone();
            tasks.push(glommio::spawn_local(async move {
                let body = Bytes::from(format!("replicate {i}"));
                let payload = Bytes::from(vec![i as u8; 10_000]);
                let f = conn
                    .call(header(API_ECHO, i), body.clone(), vec![payload.clone()])
                    .await
                    .unwrap();
                assert_eq!(f.header.correlation_id, i);
                assert_eq!(f.body, body);
                assert_eq!(f.payload, payload);
            }));
        }
        for t in tasks {
            t.await;
        }

        // A call slower than the call timeout fails with a timeout and is cancelled.
        let slow = Bytes::copy_from_slice(&5000u32.to_le_bytes());
        match conn.call(header(API_SLOW, 7), slow, vec![]).await {
            Err(CallError::Timeout(_)) => {}
            other => panic!("expected a timeout, got {other:?}"),
        }
        // The connection still works.
        let f = conn
            .call(header(API_ECHO, 8), Bytes::from_static(b"ok"), vec![])
            .await
            .unwrap();
        assert_eq!(&f.body[..], b"ok");
        assert_eq!(a.stats().requests_served, 201);

        // A dial-out connection closed by its owner reports that to the peer.
        conn.close("done replicating");
        b.shutdown(Duration::from_secs(1)).await;
        a.shutdown(Duration::from_secs(1)).await;
        assert_eq!(a.stats().connections, 0);
    });
}

/// One endpoint per core on the same address (SO_REUSEPORT): connections spread over both and
/// every request is answered by the core that accepted its connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_endpoint_per_core_on_one_address() {
    let server = TestServer::start(ServerOptions {
        shards: 2,
        ..ServerOptions::default()
    });
    let tls = server.client_tls();
    let mut set = JoinSet::new();
    for c in 0..20u32 {
        let (tls, addr) = (tls.clone(), server.addr);
        set.spawn(async move {
            let conn = Connection::connect(addr, "localhost", &tls).await.unwrap();
            for i in 0..20 {
                assert_echo(&conn, c * 100 + i).await;
            }
            conn
        });
    }
    let mut conns = Vec::new();
    while let Some(r) = set.join_next().await {
        conns.push(r.unwrap());
    }
    let stats = server.stop();
    let accepted: Vec<u64> = stats.iter().map(|s| s.connections_accepted).collect();
    assert_eq!(accepted.iter().sum::<u64>(), 20, "{accepted:?}");
    assert!(
        accepted.iter().all(|&n| n > 0),
        "both cores accepted: {accepted:?}"
    );
    assert_eq!(stats.iter().map(|s| s.requests_served).sum::<u64>(), 400);
}

/// The idle timeout closes a silent connection; the server's keep-alive keeps one open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_and_keep_alive() {
    let quiet_client = ConnectOptions {
        idle_timeout: Duration::from_millis(300),
        keep_alive_interval: None,
        ..Default::default()
    };
    // Keep-alive on the server side: the connection outlives several idle timeouts.
    let kept = TestServer::start(ServerOptions {
        config: EndpointConfig {
            idle_timeout: Duration::from_millis(300),
            keep_alive_interval: Some(Duration::from_millis(100)),
            ..EndpointConfig::default()
        },
        ..ServerOptions::default()
    });
    let conn = Connection::connect_with(
        kept.addr,
        "localhost",
        &kept.client_tls(),
        quiet_client.clone(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_echo(&conn, 1).await;

    // No keep-alive anywhere: the connection is closed by the idle timeout on both sides.
    let idle = TestServer::start(ServerOptions {
        config: EndpointConfig {
            idle_timeout: Duration::from_millis(300),
            keep_alive_interval: None,
            ..EndpointConfig::default()
        },
        ..ServerOptions::default()
    });
    let conn = Connection::connect_with(idle.addr, "localhost", &idle.client_tls(), quiet_client)
        .await
        .unwrap();
    assert_echo(&conn, 2).await;
    let closed = tokio::time::timeout(Duration::from_secs(3), conn.closed())
        .await
        .expect("closed by the idle timeout");
    match closed {
        TransportError::ConnectionLost(reason) => assert!(reason.contains("timed out"), "{reason}"),
        other => panic!("expected an idle timeout, got {other}"),
    }
    let stats = wait_for_stats(&idle, Duration::from_secs(3), |s| s[0].connections == 0).await;
    assert_eq!(
        stats[0].connections, 0,
        "the server dropped the idle connection"
    );
}
