//! A broker restarted after kill -9 resets its old connections at once (stateless reset with a
//! secret kept in the data directory), so clients reconnect instead of waiting for a timeout.

use std::time::{Duration, Instant};

use quiver_proto::api::metadata::MetadataRequest;
use quiver_testkit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_connections_are_reset_after_a_kill_9_restart() {
    let mut broker = Broker::start(&[]);
    let client = broker.client().await; // 30 s request timeout
    client
        .call_any(&MetadataRequest::default(), vec![])
        .await
        .unwrap();
    let md = client
        .call_any(&MetadataRequest::default(), vec![])
        .await
        .unwrap()
        .0;
    let cluster_id = md.cluster_id.clone().expect("metadata names the cluster");
    assert_eq!(cluster_id.len(), 32);

    let port = broker.addr.port();
    broker.kill9();
    broker.restart();
    // streamd waits for the killed process's socket to be released, so it gets the same port
    // back (unless another program grabbed it in between, which would make this test moot).
    assert_eq!(
        broker.addr.port(),
        port,
        "restarted on another port; log:\n{}",
        broker.log()
    );
    let started = Instant::now();
    let first = client.call_any(&MetadataRequest::default(), vec![]).await;
    let elapsed = started.elapsed();
    // Either the reset arrives and the call fails at once, or the client already reconnected.
    assert!(
        elapsed < Duration::from_secs(5),
        "the old connection was not reset: {elapsed:?} ({first:?})"
    );
    let md = client
        .call_any(&MetadataRequest::default(), vec![])
        .await
        .expect("the client reconnects")
        .0;
    assert_eq!(
        md.cluster_id.as_deref(),
        Some(cluster_id.as_str()),
        "the cluster id survives restarts"
    );
}
