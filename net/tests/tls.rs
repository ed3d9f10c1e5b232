//! Acceptance 3 of issue 3: clients that do not trust the server, and (with mutual TLS on)
//! clients without a valid certificate, are refused at the handshake.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use quiver_client::transport::{ClientTls, Connection, TransportError};
use quiver_net::tls;

fn assert_tls_refused(result: Result<Connection, TransportError>) {
    match result {
        Err(TransportError::Tls(reason)) => assert!(!reason.is_empty()),
        Err(other) => panic!("expected a TLS refusal, got {other}"),
        Ok(_) => panic!("expected a TLS refusal, the handshake succeeded"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_trust_the_servers_ca_is_refused() {
    let server = TestServer::start(ServerOptions::default());
    // Another development CA: a valid CA, just not the one that signed the server.
    let elsewhere = tempfile::tempdir().unwrap();
    let other = tls::ensure_dev_certs(elsewhere.path()).unwrap();
    let untrusting = ClientTls::from_ca_file(&other.ca_cert).unwrap();
    assert_tls_refused(Connection::connect(server.addr, "localhost", &untrusting).await);
    // The server name is verified too.
    assert_tls_refused(
        Connection::connect(server.addr, "not-this-server.example", &server.client_tls()).await,
    );
    // And the server keeps serving a trusting client.
    let conn = server.connect().await;
    assert_echo(&conn, 1).await;
}

/// With TLS 1.3 the client finishes its side of the handshake before the server has checked the
/// client's certificate, so the refusal reaches the client either as a failed connect or as the
/// connection closing with a TLS alert on first use. Both are the handshake refusing it.
async fn assert_refused_by_mtls(server: &TestServer, tls: &ClientTls) {
    match Connection::connect(server.addr, "localhost", tls).await {
        Err(TransportError::Tls(_)) => {}
        Err(other) => panic!("expected a TLS refusal, got {other}"),
        Ok(conn) => {
            let r = conn
                .call(header(API_ECHO, 1), Bytes::from_static(b"x"), vec![])
                .await;
            match r {
                Err(TransportError::Tls(reason)) => {
                    assert!(reason.to_lowercase().contains("certificate"), "{reason}")
                }
                other => panic!("expected a TLS refusal, got {other:?}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_clients_without_a_valid_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tls::ensure_dev_certs(dir.path()).unwrap();
    let server = TestServer::start_in(
        dir.path(),
        ServerOptions {
            client_ca: Some(certs.ca_cert.clone()),
            ..ServerOptions::default()
        },
    );
    let trust = server.client_tls();

    // No certificate at all.
    assert_refused_by_mtls(&server, &trust).await;

    // A certificate from a CA the server does not accept for clients.
    let elsewhere = tempfile::tempdir().unwrap();
    let other = tls::ensure_dev_certs(elsewhere.path()).unwrap();
    let (cert, key) = tls::issue_dev_client_cert(&other, "mallory").unwrap();
    let (cert_path, key_path) = (
        elsewhere.path().join("c.pem"),
        elsewhere.path().join("c.key"),
    );
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let wrong = trust
        .clone()
        .with_client_cert(&cert_path, &key_path)
        .unwrap();
    assert_refused_by_mtls(&server, &wrong).await;

    // A certificate from the right CA is accepted, and its name reaches the service.
    let (cert, key) = tls::issue_dev_client_cert(&certs, "broker-2").unwrap();
    let (cert_path, key_path) = (dir.path().join("client.pem"), dir.path().join("client.key"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let good = trust.with_client_cert(&cert_path, &key_path).unwrap();
    let conn = Connection::connect(server.addr, "localhost", &good)
        .await
        .unwrap();
    let f = conn
        .call(header(API_WHOAMI, 9), Bytes::new(), vec![])
        .await
        .unwrap();
    assert_eq!(&f.body[..], b"broker-2");

    let stats = wait_for_stats(&server, Duration::from_secs(2), |s| {
        s[0].requests_served >= 1
    })
    .await;
    assert_eq!(
        stats[0].requests_served, 1,
        "refused clients got no request through"
    );
}
