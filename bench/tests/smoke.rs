//! streambench smoke runs (small counts) against a real streamd: the numbers it reports are
//! sane and agree with each other and with what the broker stored.

use std::process::Command;

use quiver_testkit::Broker;
use serde_json::Value;

fn streambench(b: &Broker, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_streambench"))
        .current_dir(&b.dir)
        .args(["--bootstrap", &b.addr.to_string(), "--json"])
        .args(args)
        .output()
        .expect("streambench runs");
    assert!(
        out.status.success(),
        "streambench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn check_latency(v: &Value, count: u64) {
    let l = &v["latency_ms"];
    let q = |k: &str| l[k].as_f64().unwrap();
    assert_eq!(l["count"].as_u64().unwrap(), count, "{v}");
    assert!(q("p50") > 0.0, "{v}");
    assert!(q("p50") <= q("p90") && q("p90") <= q("p99"), "{v}");
    assert!(
        q("p99") <= q("p99_9") && q("p99_9") <= q("p99_99") && q("p99_99") <= q("max"),
        "{v}"
    );
    assert!(
        q("max") < 30_000.0,
        "a record took over 30 s on loopback: {v}"
    );
}

fn check_throughput(v: &Value, records: u64, record_size: u64) {
    assert_eq!(v["records"].as_u64().unwrap(), records, "{v}");
    assert_eq!(v["bytes"].as_u64().unwrap(), records * record_size, "{v}");
    assert_eq!(v["errors"].as_u64().unwrap(), 0, "{v}");
    let secs = v["seconds"].as_f64().unwrap();
    let rps = v["records_per_sec"].as_f64().unwrap();
    let mbps = v["mb_per_sec"].as_f64().unwrap();
    assert!(secs > 0.0 && secs < 120.0, "{v}");
    // The rates are the counts over the measured time, not made up.
    assert!(
        (rps * secs - records as f64).abs() < 1.0 + records as f64 * 1e-6,
        "{v}"
    );
    assert!(
        (mbps * 1e6 * secs - (records * record_size) as f64).abs() < 1e3,
        "{v}"
    );
}

#[test]
fn produce_consume_and_e2e_report_sane_numbers() {
    let b = Broker::start(&[]);
    let produce = streambench(
        &b,
        &[
            "produce",
            "--records",
            "3000",
            "--record-size",
            "200",
            "--partitions",
            "3",
            "--topic",
            "smoke",
        ],
    );
    assert_eq!(produce["mode"], "produce");
    check_throughput(&produce, 3000, 200);
    check_latency(&produce, 3000);
    assert_eq!(
        produce["config"]["partitions"], 3,
        "created with --partitions"
    );

    // Consume reads what the topic holds (3000) and fills it up to --records first.
    let consume = streambench(
        &b,
        &[
            "consume",
            "--records",
            "5000",
            "--record-size",
            "200",
            "--topic",
            "smoke",
            "--consumers",
            "2",
        ],
    );
    assert_eq!(consume["mode"], "consume");
    check_throughput(&consume, 5000, 200);
    assert!(consume["latency_ms"].is_null());

    // Rate-limited end to end: the achieved rate is close to the target, and latency is
    // measured per received record.
    let e2e = streambench(
        &b,
        &[
            "e2e",
            "--rate",
            "2000",
            "--records",
            "2000",
            "--record-size",
            "100",
            "--topic",
            "smoke-e2e",
            "--acks",
            "all",
            "--compression",
            "lz4",
        ],
    );
    assert_eq!(e2e["mode"], "e2e");
    check_throughput(&e2e, 2000, 100);
    check_latency(&e2e, 2000);
    let rps = e2e["records_per_sec"].as_f64().unwrap();
    assert!(rps < 2000.0 * 1.2, "the rate limit holds: {rps}");
    assert!(
        rps > 2000.0 * 0.3,
        "the run keeps up with a modest rate: {rps}"
    );
    assert_eq!(e2e["config"]["coordinated_omission_corrected"], true);

    // What the broker stored matches what the runs said they wrote: 3000 + 2000 fill in
    // 'smoke', 2000 in 'smoke-e2e'.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = b.client().await;
        let admin = quiver_client::Admin::new(c);
        for (topic, want) in [("smoke", 5000u64), ("smoke-e2e", 2000)] {
            let d = admin.describe_topic(topic).await.unwrap();
            let total: u64 = d.partitions.iter().map(|p| p.end_offset.unwrap().0).sum();
            assert_eq!(total, want, "{topic}");
        }
    });
}

#[test]
fn a_duration_run_with_warmup_measures_only_after_it() {
    let b = Broker::start(&[]);
    let v = streambench(
        &b,
        &[
            "produce",
            "--rate",
            "1000",
            "--duration",
            "2s",
            "--warmup",
            "1s",
            "--record-size",
            "64",
        ],
    );
    let records = v["records"].as_u64().unwrap();
    // 2 s at 1000/s measured; the 1 s of warm-up (about 1000 more records) is not counted.
    assert!((1500..=2100).contains(&records), "{v}");
    check_latency(&v, records);
    let secs = v["seconds"].as_f64().unwrap();
    assert!((1.8..4.0).contains(&secs), "{v}");
}

#[test]
fn errors_exit_non_zero() {
    let out = Command::new(env!("CARGO_BIN_EXE_streambench"))
        .args(["produce", "--bootstrap", "127.0.0.1:1", "--records", "1"])
        .env("STREAMBENCH_CA_FILE", "/nonexistent/ca.pem")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("streambench: "), "{stderr}");
}
