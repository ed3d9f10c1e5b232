use quiver_proto::api::produce::Acks;
use quiver_proto::batch::{BatchBuilder, BatchLimits, BatchView, Compression};
use quiver_proto::{ErrorCode, TimestampMs};
use quiver_testkit::*;

#[tokio::test]
async fn create_produce_fetch() {
    let b = Broker::start(&[]);
    let c = b.client().await;
    assert_eq!(create_topic(&c, "t", 2, &[]).await, ErrorCode::None);
    let mut builder = BatchBuilder::new(Compression::None);
    builder
        .append(TimestampMs(1000), Some(b"k"), Some(b"v"), &[("h", b"x")])
        .unwrap();
    let batch = builder.finish().unwrap();
    let r = produce(&c, "t", 1, &[batch.clone(), batch], Acks::Leader).await;
    assert_eq!(
        r.topics[0].partitions[0].error_code,
        ErrorCode::None,
        "{r:?}"
    );
    let (resp, records) = fetch(&c, "t", 1, 0, 100).await;
    let p = &resp.topics[0].partitions[0];
    assert_eq!(p.error_code, ErrorCode::None);
    assert_eq!(p.high_watermark.0, 2);
    let view = BatchView::new(&records[..records.len() / 2], BatchLimits::default()).unwrap();
    let recs = view.records().unwrap();
    let r0 = recs.iter().next().unwrap().unwrap();
    assert_eq!(r0.key, Some(&b"k"[..]));
}

/// A second broker asked for a port a running one holds refuses to start (after waiting a few
/// seconds for a crashed process's port to be released) instead of sharing it through
/// SO_REUSEPORT, which would split the first broker's connections between two processes.
#[test]
fn a_second_broker_on_the_same_port_refuses_to_start() {
    let first = Broker::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(streamd_path())
        .current_dir(dir.path())
        .args([
            "--listen",
            &first.addr.to_string(),
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "second streamd started: {stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {}", first.addr)),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("streamd ready"));
}

/// With no certificate configured, the development server certificate names the address the
/// broker listens on, so a client that dials that address (not only 127.0.0.1 or localhost)
/// verifies it; started again on another address, the broker reissues the certificate from the
/// same development CA (its key kept), widening what the CA may sign for to the new address
/// (its name constraints: `net::tls::dev`), and clients taking the CA file work.
#[tokio::test]
async fn the_development_certificate_names_the_listen_address_and_follows_it() {
    let mut b = Broker::unstarted(&[]);
    b.listen_ip = "127.0.0.2".parse().unwrap();
    b.spawn(None);
    let ca_key = std::fs::read(b.data_dir().join("tls/ca.key")).unwrap();
    let c = b.client().await; // dials 127.0.0.2:<port> and verifies the name
    assert_eq!(create_topic(&c, "t", 1, &[]).await, ErrorCode::None);
    c.close().await;

    b.terminate();
    b.listen_ip = "127.0.0.3".parse().unwrap();
    b.spawn(None);
    assert_eq!(
        std::fs::read(b.data_dir().join("tls/ca.key")).unwrap(),
        ca_key,
        "the CA is kept"
    );
    assert!(
        b.log()
            .contains("reissued the development server certificate"),
        "{}",
        b.log()
    );
    assert!(
        b.log().contains("permit these names") && b.log().contains("127.0.0.3"),
        "the CA is widened to the new address, and the log says so:\n{}",
        b.log()
    );
    let c = b.client().await;
    assert!(c.topic("t").await.is_ok());
    b.assert_serves_clients("after", 100).await;
}

/// A client that dials an address the certificate does not name is told how to fix it.
#[tokio::test]
async fn a_certificate_that_does_not_name_the_address_dialled_is_explained() {
    let mut b = Broker::unstarted(&[]);
    b.listen_ip = "0.0.0.0".parse().unwrap();
    b.spawn(None);
    let config = quiver_client::ClientConfig::new(format!("127.0.0.2:{}", b.addr.port()))
        .tls(quiver_client::ClientTls::from_ca_file(b.ca()).unwrap());
    let err = match quiver_client::Client::connect(config).await {
        Ok(_) => panic!("a certificate without 127.0.0.2 was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("not valid for name"), "{err}");
    assert!(err.contains("--advertised-host"), "{err}");
}
