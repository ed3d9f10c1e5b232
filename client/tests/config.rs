//! Configuration a new user meets first, against a real `streamd`: the environment and
//! properties find the broker and its CA from any directory, a missing CA names the fixes, and
//! an unreachable broker is named in the error.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use quiver_client::{Client, ClientConfig, ClientTls, Error, TransportError};
use quiver_testkit::{example_path, Broker, Process};

/// The tests run in the crate's directory, which has no `./data/tls/ca.pem`: the development
/// CA default cannot help them.
fn no_dev_ca_here() {
    assert!(!Path::new("data/tls/ca.pem").exists());
}

#[tokio::test]
async fn from_env_with_and_from_properties_find_the_broker_from_another_directory() {
    no_dev_ca_here();
    let b = Broker::start(&[]);
    let addr = b.addr.to_string();
    let ca = b.ca().display().to_string();
    let config = ClientConfig::from_env_with(|name| match name {
        "QUIVER_BOOTSTRAP" => Some(addr.clone()),
        "QUIVER_CA_FILE" => Some(ca.clone()),
        "QUIVER_CLIENT_ID" => Some("first-hour".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!(config.client_id, "first-hour");
    let client = Client::connect(config).await.unwrap();
    assert_eq!(client.cluster().brokers.len(), 1);

    let config = ClientConfig::from_properties([
        ("bootstrap.servers", addr.as_str()),
        ("ssl.ca.location", ca.as_str()),
        ("request.timeout.ms", "5000"),
    ])
    .unwrap();
    let client = Client::connect(config).await.unwrap();
    assert_eq!(client.cluster().brokers.len(), 1);

    // Without a CA, from here: the error says what to do.
    let err = Client::connect(ClientConfig::new(&addr))
        .await
        .err()
        .expect("no CA to trust")
        .to_string();
    for fix in [
        "ClientTls::from_ca_file",
        "QUIVER_CA_FILE",
        "ssl.ca.location",
    ] {
        assert!(err.contains(fix), "{fix} in: {err}");
    }
    assert!(
        err.contains("in the directory streamd was started in"),
        "{err}"
    );
}

/// The real environment, in a child process started in an empty directory: the quickstart
/// example with `QUIVER_BOOTSTRAP` and `QUIVER_CA_FILE` writes typed records, a tombstone, and
/// reads them back; without `QUIVER_CA_FILE` it fails naming the fixes.
#[test]
fn the_quickstart_example_runs_from_any_directory_with_the_environment() {
    let b = Broker::start(&[]);
    let work = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let quickstart = |ca: Option<&Path>| {
        let mut cmd = Command::new(example_path("quickstart"));
        cmd.current_dir(work.path())
            .env("QUIVER_BOOTSTRAP", b.addr.to_string())
            .env_remove("QUIVER_CA_FILE")
            .args(["orders", "5"]);
        if let Some(ca) = ca {
            cmd.env("QUIVER_CA_FILE", ca);
        }
        let mut p = Process::spawn("quickstart", cmd, logs.path());
        let code = p.wait_exit(Duration::from_secs(60));
        (code, p.lines(), p.stderr())
    };
    let (code, lines, stderr) = quickstart(Some(&b.ca()));
    assert_eq!(code, Some(0), "stderr: {stderr}");
    let lines: Vec<String> = lines.into_iter().map(|(_, l)| l).collect();
    assert_eq!(lines.len(), 7, "{lines:?}");
    assert_eq!(
        lines[0], "0@0 customer-0 Order { id: 0, total_cents: 0 }",
        "{lines:?}"
    );
    assert_eq!(
        lines[4],
        "0@4 customer-1 Order { id: 4, total_cents: 1000 }"
    );
    assert_eq!(
        lines[5], "0@5 customer-0 deleted",
        "the tombstone reads as None"
    );
    assert_eq!(lines[6], "read 6 records");
    assert!(
        !work.path().join("data").exists(),
        "nothing expected or written there"
    );

    let (code, _, stderr) = quickstart(None);
    assert_eq!(code, Some(1), "stderr: {stderr}");
    assert!(stderr.contains("QUIVER_CA_FILE"), "{stderr}");
    assert!(stderr.contains("ClientTls::from_ca_file"), "{stderr}");
    let here = work.path().canonicalize().unwrap();
    assert!(
        stderr.contains(&here.display().to_string()),
        "names where it looked: {stderr}"
    );
}

/// A broker that does not answer is named in the error, with the address tried.
#[tokio::test]
async fn an_unreachable_broker_is_named_in_the_error() {
    let mut b = Broker::start(&[]);
    let tls = ClientTls::from_ca_file(b.ca()).unwrap();
    // A port that swallows packets (bound, never answering): the handshake times out.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let config = ClientConfig::new(format!("127.0.0.1:{port}"))
        .tls(tls.clone())
        .connect_timeout(Duration::from_millis(500));
    let err = Client::connect(config)
        .await
        .err()
        .expect("nothing answers");
    let text = err.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(text.contains("handshake"), "{text}");
    assert!(
        matches!(err.transport(), Some(TransportError::HandshakeTimeout(_))),
        "{err:?}"
    );
    assert!(err.is_retriable());
    // A port nobody listens on: the kernel says so, and the client fails at once, long before
    // its (here generous) connect timeout.
    drop(silent);
    let config = ClientConfig::new(format!("127.0.0.1:{port}"))
        .tls(tls.clone())
        .connect_timeout(Duration::from_secs(60));
    let err = tokio::time::timeout(Duration::from_secs(30), Client::connect(config))
        .await
        .expect("refused well before the connect timeout")
        .err()
        .expect("nothing listens");
    let text = err.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(text.contains("no broker listens there"), "{text}");
    assert!(err.is_retriable());

    // A broker that stops answering after the connection was made: a call's timeout names it.
    let client = Client::connect(
        ClientConfig::new(b.addr.to_string())
            .tls(tls)
            .request_timeout(Duration::from_millis(500)),
    )
    .await
    .unwrap();
    b.kill9();
    let err = client.refresh_metadata(None).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert!(text.contains(&b.addr.to_string()), "{text}");
}

/// A broker killed while a call waits for it: the kernel refuses the next packet to its port,
/// and the call fails at once with a retriable connection error (it used to wait for its
/// timeout, so a client took 30 s to move to a dead leader's successor).
#[tokio::test]
async fn a_call_to_a_broker_killed_meanwhile_fails_at_once() {
    use quiver_proto::api::metadata::MetadataRequest;
    let mut b = Broker::start(&[]);
    let tls = ClientTls::from_ca_file(b.ca()).unwrap();
    let client = Client::connect(
        ClientConfig::new(b.addr.to_string())
            .tls(tls)
            .request_timeout(Duration::from_secs(120)),
    )
    .await
    .unwrap();
    // Stopped (every thread of it), the broker leaves the call waiting; then it dies.
    b.freeze();
    let call = tokio::spawn(async move {
        let req = MetadataRequest {
            topics: Some(vec![]),
            allow_auto_topic_creation: false,
        };
        client.call_any(&req, Vec::new()).await.map(|_| ())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.kill9();
    let err = tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .expect("failed well before its 120 s timeout")
        .unwrap()
        .expect_err("the broker is gone");
    let text = err.to_string();
    assert!(
        text.contains("refuses packets") || text.contains("no broker listens there"),
        "{text}"
    );
    assert!(err.is_retriable(), "{err:?}");
}
