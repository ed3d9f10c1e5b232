//! streamctl as users run it: the built binary against a real streamd. Each command runs in
//! the broker's working directory, so streamctl finds the development CA at ./data/tls/ca.pem
//! exactly as it does next to a `streamd` started with no flags.

use std::process::Command;

use base64::Engine as _;
use quiver_testkit::Broker;
use serde_json::Value;

mod common;
use common::{assert_fails, ok, streamctl};

/// The bytes a JSON field stands for: the string's UTF-8, or the base64 variant decoded.
fn field_bytes(obj: &Value, name: &str) -> Option<Vec<u8>> {
    if let Some(v) = obj.get(format!("{name}_base64")) {
        return Some(
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap(),
        );
    }
    match &obj[name] {
        Value::Null => None,
        Value::String(s) => Some(s.as_bytes().to_vec()),
        other => panic!("{name} is {other}"),
    }
}

#[test]
fn produce_lines_with_keys_and_headers_then_consume_them_back_as_json_byte_identical() {
    let b = Broker::start(&[]);
    ok(&streamctl(
        &b,
        &["topic", "create", "lines", "--partitions", "3"],
        None,
    ));
    // Keys and values with bytes that are not UTF-8, JSON-special characters, a separator
    // inside the value, an empty value, a line without a key, and multi-byte UTF-8.
    let lines: Vec<Vec<u8>> = vec![
        b"user-1|hello world".to_vec(),
        b"user-2|{\"json\": \"in a \\\"value\\\"\", \"tab\": \"\t\"}".to_vec(),
        [&b"bin-\xff\xfe|"[..], &b"\x00\x01\x02\xc3\x28 end"[..]].concat(),
        b"user-1|value|with|separators".to_vec(),
        b"user-3|".to_vec(),
        b"no separator here".to_vec(),
        "ключ|значение ✓ \u{1F600}".as_bytes().to_vec(),
        b"user-4|trailing carriage return\r".to_vec(),
    ];
    let mut input = Vec::new();
    for l in &lines {
        input.extend_from_slice(l);
        input.push(b'\n');
    }
    let out = streamctl(
        &b,
        &[
            "produce",
            "lines",
            "--key-separator",
            "|",
            "--header",
            "source=cli",
            "--header",
            "trace=a=b",
            "--compression",
            "lz4",
        ],
        Some(&input),
    );
    ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("produced 8 records to lines"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = streamctl(
        &b,
        &[
            "consume",
            "lines",
            "--format",
            "json",
            "--from",
            "beginning",
            "--max-messages",
            "8",
            "--timeout",
            "10s",
        ],
        None,
    );
    let stdout = ok(&out);
    let records: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(records.len(), 8);
    // Partitions interleave; within a key's partition the order is kept. Rebuild each line.
    let mut rebuilt: Vec<Vec<u8>> = Vec::new();
    for r in &records {
        assert_eq!(r["topic"], "lines");
        assert!(r["partition"].as_u64().unwrap() < 3);
        assert!(r["timestamp"].as_i64().unwrap() > 1_600_000_000_000);
        let headers = r["headers"].as_array().unwrap();
        assert_eq!(headers.len(), 2);
        assert_eq!(headers[0]["key"], "source");
        assert_eq!(headers[0]["value"], "cli");
        assert_eq!(headers[1]["key"], "trace");
        assert_eq!(headers[1]["value"], "a=b");
        let value = field_bytes(r, "value").expect("every line has a value");
        let line = match field_bytes(r, "key") {
            Some(k) => [k, b"|".to_vec(), value].concat(),
            None => value,
        };
        rebuilt.push(line);
    }
    let mut want = lines.clone();
    want.sort();
    rebuilt.sort();
    assert_eq!(rebuilt, want, "consumed bytes differ from produced bytes");
    // The non-UTF-8 ones are the ones in base64.
    let bin = records
        .iter()
        .find(|r| r.get("key_base64").is_some())
        .expect("the binary key is base64");
    assert!(bin.get("value_base64").is_some());
    assert!(bin.get("key").is_none());

    // Text output with the same separator reproduces the input per partition, byte for byte.
    let out = streamctl(
        &b,
        &[
            "consume",
            "lines",
            "--partition",
            "0",
            "--partition",
            "1",
            "--partition",
            "2",
            "--key-separator",
            "|",
            "--timeout",
            "2s",
        ],
        None,
    );
    assert!(out.status.success());
    let mut text_lines: Vec<Vec<u8>> = out
        .stdout
        .split(|&c| c == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| l.to_vec())
        .collect();
    // The keyless line comes back with an empty key before the separator.
    let keyless = text_lines
        .iter()
        .position(|l| l == b"|no separator here")
        .expect("keyless line");
    text_lines[keyless] = b"no separator here".to_vec();
    text_lines.sort();
    assert_eq!(text_lines, want);
}

#[test]
fn consume_from_an_offset_a_time_and_the_end_with_limits() {
    let b = Broker::start(&[]);
    ok(&streamctl(&b, &["topic", "create", "seq"], None));
    let input: String = (0..20).map(|i| format!("v{i}\n")).collect();
    ok(&streamctl(
        &b,
        &["produce", "seq", "--acks", "1"],
        Some(input.as_bytes()),
    ));

    let out = ok(&streamctl(
        &b,
        &["consume", "seq", "--from", "15", "--timeout", "2s"],
        None,
    ));
    assert_eq!(out, "v15\nv16\nv17\nv18\nv19\n");
    let out = ok(&streamctl(
        &b,
        &["consume", "seq", "--max-messages", "3"],
        None,
    ));
    assert_eq!(out, "v0\nv1\nv2\n");
    // A time before every record: all of them; a time in the future: none.
    let out = ok(&streamctl(
        &b,
        &[
            "consume",
            "seq",
            "--from",
            "2000-01-01T00:00:00Z",
            "--timeout",
            "2s",
        ],
        None,
    ));
    assert_eq!(out.lines().count(), 20);
    let out = ok(&streamctl(
        &b,
        &[
            "consume",
            "seq",
            "--from",
            "2999-01-01T00:00:00+01:00",
            "--timeout",
            "1s",
        ],
        None,
    ));
    assert_eq!(out, "");
    let out = ok(&streamctl(
        &b,
        &["consume", "seq", "--from", "end", "--timeout", "1s"],
        None,
    ));
    assert_eq!(out, "");
}

#[test]
fn topic_create_list_describe_alter_grow_delete_round_trip() {
    let b = Broker::start(&[]);
    let out = ok(&streamctl(
        &b,
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--config",
            "retention.ms=86400000",
        ],
        None,
    ));
    assert_eq!(out.trim(), "created topic orders with 3 partitions");

    let list = ok(&streamctl(&b, &["topic", "list"], None));
    assert!(list.lines().next().unwrap().starts_with("NAME"), "{list}");
    assert!(
        list.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["orders", "3", "1"]),
        "{list}"
    );
    let list: Value = serde_json::from_str(&ok(&streamctl(
        &b,
        &["topic", "list", "--output", "json"],
        None,
    )))
    .unwrap();
    assert_eq!(list[0]["name"], "orders");

    let text = ok(&streamctl(&b, &["topic", "describe", "orders"], None));
    assert!(text.contains("PARTITION"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("retention.ms")
            && l.contains("86400000")
            && l.contains("TopicOverride")),
        "{text}"
    );
    let d: Value = serde_json::from_str(&ok(&streamctl(
        &b,
        &["topic", "describe", "orders", "--output", "json"],
        None,
    )))
    .unwrap();
    assert_eq!(d["name"], "orders");
    assert_eq!(d["partitions"].as_array().unwrap().len(), 3);
    assert_eq!(d["partitions"][2]["partition"], 2);
    assert_eq!(d["partitions"][0]["end_offset"], 0);
    assert_eq!(d["partitions"][0]["leader"], 1);
    // Which of the broker's cores owns it (any of them; the broker runs one per CPU).
    assert!(d["partitions"][0]["leader_shard"].is_u64(), "{d}");

    ok(&streamctl(
        &b,
        &[
            "topic",
            "alter",
            "orders",
            "--set",
            "retention.ms=1000",
            "--set",
            "segment.ms=60000",
        ],
        None,
    ));
    let d: Value = serde_json::from_str(&ok(&streamctl(
        &b,
        &["topic", "describe", "orders", "--output", "json"],
        None,
    )))
    .unwrap();
    let config = |d: &Value, name: &str| {
        d["configs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(config(&d, "retention.ms")["value"], "1000");
    assert_eq!(config(&d, "segment.ms")["value"], "60000");
    ok(&streamctl(
        &b,
        &["topic", "alter", "orders", "--delete", "segment.ms"],
        None,
    ));
    let d: Value = serde_json::from_str(&ok(&streamctl(
        &b,
        &["topic", "describe", "orders", "--output", "json"],
        None,
    )))
    .unwrap();
    assert_ne!(config(&d, "segment.ms")["source"], "TopicOverride");

    let out = ok(&streamctl(
        &b,
        &["topic", "add-partitions", "orders", "--total", "5"],
        None,
    ));
    assert_eq!(out.trim(), "topic orders now has 5 partitions");
    let d: Value = serde_json::from_str(&ok(&streamctl(
        &b,
        &["topic", "describe", "orders", "--output", "json"],
        None,
    )))
    .unwrap();
    assert_eq!(d["partitions"].as_array().unwrap().len(), 5);

    let c: Value = serde_json::from_str(&ok(&streamctl(
        &b,
        &["cluster", "describe", "--output", "json"],
        None,
    )))
    .unwrap();
    assert_eq!(c["brokers"][0]["port"], b.addr.port());
    assert_eq!(c["controller"], 1);
    let c = ok(&streamctl(&b, &["cluster", "describe"], None));
    assert!(c.contains(&b.addr.port().to_string()), "{c}");
    assert!(
        c.contains("no controller quorum: this broker runs alone"),
        "{c}"
    );

    let out = ok(&streamctl(
        &b,
        &["topic", "delete", "orders", "--output", "json"],
        None,
    ));
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["deleted"],
        "orders"
    );
    let out = streamctl(&b, &["topic", "describe", "orders"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

#[test]
fn errors_exit_non_zero_with_one_clear_line() {
    let b = Broker::start(&[]);
    assert_fails(
        &streamctl(&b, &["produce", "missing"], Some(b"x\n")),
        1,
        "UnknownTopicOrPartition: topic 'missing' does not exist",
    );
    assert_fails(
        &streamctl(&b, &["consume", "missing", "--timeout", "1s"], None),
        1,
        "does not exist",
    );
    ok(&streamctl(&b, &["topic", "create", "t"], None));
    assert_fails(
        &streamctl(&b, &["topic", "create", "t"], None),
        1,
        "TopicAlreadyExists",
    );
    assert_fails(
        &streamctl(&b, &["consume", "t", "--partition", "7"], None),
        1,
        "partition 7 does not exist",
    );
    assert_fails(
        &streamctl(
            &b,
            &["topic", "create", "bad", "--config", "retention.ms=soon"],
            None,
        ),
        1,
        "retention.ms",
    );
    assert_fails(
        &streamctl(&b, &["topic", "add-partitions", "t", "--total", "0"], None),
        1,
        "Invalid",
    );
    assert_fails(
        &streamctl(&b, &["consume", "t", "--group", "g", "--from", "5"], None),
        1,
        "with --group",
    );
    assert_fails(
        &streamctl(
            &b,
            &["consume", "t", "--group", "g", "--partition", "0"],
            None,
        ),
        2,
        "cannot be used with",
    );
    assert_fails(
        &streamctl(&b, &["group", "describe", "nobody"], None),
        1,
        "nobody",
    );
    // Usage errors: exit 2, from clap, with the usage.
    assert_fails(&streamctl(&b, &["produce"], None), 2, "TOPIC");
    assert_fails(
        &streamctl(&b, &["consume", "t", "--from", "yesterday"], None),
        2,
        "RFC 3339",
    );
    assert_fails(
        &streamctl(&b, &["produce", "t", "--acks", "2"], None),
        2,
        "acks",
    );
    // No broker there.
    let out = Command::new(env!("CARGO_BIN_EXE_streamctl"))
        .current_dir(&b.dir)
        .args([
            "--bootstrap",
            "127.0.0.1:1",
            "--request-timeout",
            "1s",
            "topic",
            "list",
        ])
        .output()
        .unwrap();
    assert_fails(&out, 1, "cannot reach a broker at 127.0.0.1:1");
    // No CA where streamctl looks by default.
    let elsewhere = tempfile_dir();
    let out = Command::new(env!("CARGO_BIN_EXE_streamctl"))
        .current_dir(&elsewhere)
        .env_remove("STREAMCTL_CA_FILE")
        .args(["--bootstrap", &b.addr.to_string(), "topic", "list"])
        .output()
        .unwrap();
    assert_fails(&out, 1, "pass --ca-file <PEM>");
    assert_fails(&out, 1, "./data/tls/ca.pem");
    // ...and with --ca-file it works from anywhere.
    let out = Command::new(env!("CARGO_BIN_EXE_streamctl"))
        .current_dir(&elsewhere)
        .args(["--bootstrap", &b.addr.to_string(), "--ca-file"])
        .arg(b.ca())
        .args(["topic", "list"])
        .output()
        .unwrap();
    ok(&out);
    let _ = std::fs::remove_dir_all(&elsewhere);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("streamctl-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn a_reader_that_stops_early_ends_output_quietly() {
    let b = Broker::start(&[]);
    ok(&streamctl(&b, &["topic", "create", "many"], None));
    let input: String = (0..20_000)
        .map(|i| format!("record number {i} with some padding to fill pipes\n"))
        .collect();
    ok(&streamctl(&b, &["produce", "many"], Some(input.as_bytes())));
    for args in [
        "consume many --max-messages 20000 --format json",
        "topic describe many --output json",
    ] {
        let script = format!(
            "{} --bootstrap {} {args} | head -c 10 >/dev/null; exit ${{PIPESTATUS[0]}}",
            env!("CARGO_BIN_EXE_streamctl"),
            b.addr
        );
        let out = Command::new("bash")
            .current_dir(&b.dir)
            .args(["-c", &script])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args}: {:?} {stderr}", out.status);
        assert!(!stderr.contains("panicked"), "{args}: {stderr}");
    }
}

#[test]
fn consume_with_a_group_resumes_where_the_group_stopped() {
    let b = Broker::start(&[]);
    ok(&streamctl(
        &b,
        &["topic", "create", "jobs", "--partitions", "2"],
        None,
    ));
    let input: String = (0..10).map(|i| format!("job-{i}\n")).collect();
    ok(&streamctl(&b, &["produce", "jobs"], Some(input.as_bytes())));
    let first = ok(&streamctl(
        &b,
        &[
            "consume",
            "jobs",
            "--group",
            "workers",
            "--max-messages",
            "4",
            "--timeout",
            "10s",
        ],
        None,
    ));
    assert_eq!(first.lines().count(), 4, "{first}");
    let rest = ok(&streamctl(
        &b,
        &["consume", "jobs", "--group", "workers", "--timeout", "3s"],
        None,
    ));
    // Between the two runs every record was printed exactly once.
    let mut all: Vec<&str> = first.lines().chain(rest.lines()).collect();
    all.sort();
    let mut want: Vec<String> = (0..10).map(|i| format!("job-{i}")).collect();
    want.sort();
    assert_eq!(all, want, "first: {first}\nrest: {rest}");
    // A third run finds nothing new.
    let none = ok(&streamctl(
        &b,
        &["consume", "jobs", "--group", "workers", "--timeout", "2s"],
        None,
    ));
    assert_eq!(none, "");

    let list = ok(&streamctl(&b, &["group", "list"], None));
    assert!(list.lines().any(|l| l.starts_with("workers")), "{list}");
    let d: Value = serde_json::from_str(&ok(&streamctl(
        &b,
        &["group", "describe", "workers", "--output", "json"],
        None,
    )))
    .unwrap();
    assert_eq!(d["group_id"], "workers");
    assert_eq!(
        d["members"].as_array().unwrap().len(),
        0,
        "members left on exit: {d}"
    );
    let offsets = d["offsets"].as_array().unwrap();
    assert_eq!(offsets.len(), 2, "{d}");
    let committed: u64 = offsets
        .iter()
        .map(|o| o["committed"].as_u64().unwrap())
        .sum();
    assert_eq!(committed, 10, "{d}");
    assert!(offsets.iter().all(|o| o["lag"] == 0), "{d}");
    let text = ok(&streamctl(&b, &["group", "describe", "workers"], None));
    assert!(text.contains("LAG"), "{text}");
    ok(&streamctl(&b, &["group", "delete", "workers"], None));
    let list = ok(&streamctl(&b, &["group", "list", "--output", "json"], None));
    assert!(!list.contains("workers"), "{list}");
}
