//! What consume prints, produce reads back (issue 30): JSON lines carry any record (binary
//! keys and values, null keys, tombstones, headers, partitions, timestamps) from one topic to
//! another byte for byte; `-K` lines escape the separator in keys; `--null-empty` makes
//! tombstones; bad input stops with the line's number.

use std::collections::BTreeMap;
use std::process::Command;

use bytes::Bytes;
use quiver_client::{Admin, NewTopic, Producer, ProducerConfig, ProducerRecord, TimestampMs};
use quiver_testkit::Broker;
use serde_json::Value;

mod common;
use common::{assert_fails, json_lines, ok, streamctl};

/// Per partition, the records in offset order, without the fields that say where they were.
fn by_partition(records: &[Value]) -> BTreeMap<u64, Vec<Value>> {
    let mut out: BTreeMap<u64, Vec<(u64, Value)>> = BTreeMap::new();
    for r in records {
        let mut r = r.clone();
        let o = r.as_object_mut().unwrap();
        let offset = o.remove("offset").unwrap().as_u64().unwrap();
        o.remove("topic");
        let p = o["partition"].as_u64().unwrap();
        out.entry(p).or_default().push((offset, r));
    }
    out.into_iter()
        .map(|(p, mut rs)| {
            rs.sort_by_key(|(o, _)| *o);
            (p, rs.into_iter().map(|(_, r)| r).collect())
        })
        .collect()
}

#[test]
fn json_lines_carry_any_record_to_another_topic_byte_for_byte() {
    let b = Broker::start(&[]);
    let big: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    // Every kind of record, through the SDK (not through streamctl's own parser).
    let sent: Vec<ProducerRecord> = vec![
        ProducerRecord::new("src")
            .key("k1")
            .value("v1")
            .partition(0)
            .timestamp(TimestampMs(1_000)),
        ProducerRecord::new("src")
            .value(Bytes::from_static(&[0xff, 0x00, 0x01]))
            .header("h1", "x")
            .header("h1", Bytes::from_static(&[0xc3]))
            .header("", "")
            .partition(1)
            .timestamp(TimestampMs(2_000)),
        ProducerRecord::new("src")
            .key(Bytes::from_static(b"\xfe\xff bin key"))
            .partition(2)
            .timestamp(TimestampMs(3_000)),
        ProducerRecord::new("src")
            .key("")
            .value("")
            .partition(0)
            .timestamp(TimestampMs(4_000)),
        ProducerRecord::new("src").partition(1),
        ProducerRecord::new("src")
            .key("ключ ✓")
            .value("line one\nline two\t\"quoted\" \\ back\r\n")
            .partition(2),
        ProducerRecord::new("src").key("user-7").value(big.clone()),
    ];
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = b.client().await;
        Admin::new(client.clone())
            .create_topic(NewTopic::new("src", 3))
            .await
            .unwrap();
        let producer = Producer::new(client.clone(), ProducerConfig::default()).unwrap();
        for r in sent.clone() {
            producer.send(r).await.unwrap();
        }
        producer.close().await.unwrap();
        client.close().await;
    });

    let first = json_lines(&ok(&streamctl(
        &b,
        &["consume", "src", "-o", "json", "--until-end"],
        None,
    )));
    assert_eq!(first.len(), sent.len());
    // What consume printed is what was sent.
    let bytes = |r: &Value, name: &str| -> Option<Vec<u8>> {
        use base64::Engine as _;
        if let Some(b) = r.get(format!("{name}_base64")) {
            return Some(
                base64::engine::general_purpose::STANDARD
                    .decode(b.as_str().unwrap())
                    .unwrap(),
            );
        }
        r[name].as_str().map(|s| s.as_bytes().to_vec())
    };
    for s in &sent {
        let found = first.iter().any(|r| {
            bytes(r, "key") == s.key.as_ref().map(|k| k.to_vec())
                && bytes(r, "value") == s.value.as_ref().map(|v| v.to_vec())
                && s.partition.is_none_or(|p| r["partition"] == p.0)
                && s.timestamp.is_none_or(|t| r["timestamp"] == t.0)
                && r["headers"].as_array().unwrap().len() == s.headers.len()
        });
        assert!(found, "{s:?} not in {first:?}");
    }
    let bin = first
        .iter()
        .find(|r| r["partition"] == 1 && r["timestamp"] == 2_000)
        .unwrap();
    assert_eq!(
        bin["headers"],
        serde_json::json!([
            {"key": "h1", "value": "x"},
            {"key": "h1", "value_base64": "ww=="},
            {"key": "", "value": ""},
        ])
    );

    // The README's pipe: consume -o json --until-end | produce --input json.
    ok(&streamctl(
        &b,
        &["topic", "create", "copy", "--partitions", "3"],
        None,
    ));
    let exe = env!("CARGO_BIN_EXE_streamctl");
    let script = format!(
        "set -o pipefail; {exe} --bootstrap {addr} consume src -o json --until-end \
         | {exe} --bootstrap {addr} produce copy --input json",
        addr = b.addr
    );
    let out = Command::new("bash")
        .current_dir(&b.dir)
        .env_remove("STREAMCTL_BOOTSTRAP")
        .env_remove("STREAMCTL_CA_FILE")
        .args(["-c", &script])
        .output()
        .unwrap();
    ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("produced 7 records to copy"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = json_lines(&ok(&streamctl(
        &b,
        &["consume", "copy", "-F", "json", "-e"],
        None,
    )));
    // Key, value, headers, partition, timestamp and its type: the same, in the same order.
    assert_eq!(by_partition(&second), by_partition(&first));
    assert!(second.iter().all(|r| r["topic"] == "copy"));
}

#[test]
fn key_separators_escape_in_keys_and_text_lines_read_back_the_same() {
    let b = Broker::start(&[]);
    ok(&streamctl(
        &b,
        &["topic", "create", "t", "--partitions", "1"],
        None,
    ));
    let input = concat!(
        r"a\:b:c",
        "\n",
        r"x\\:y",
        "\n",
        "plain:v:w\n",
        "no key here\n",
        r"C:\dir:path\:kept",
        "\n",
    );
    let out = streamctl(&b, &["produce", "t", "-K", ":"], Some(input.as_bytes()));
    ok(&out);
    let v = json_lines(&ok(&streamctl(
        &b,
        &["consume", "t", "-o", "json", "-e"],
        None,
    )));
    let kv: Vec<(Value, Value)> = v
        .iter()
        .map(|r| (r["key"].clone(), r["value"].clone()))
        .collect();
    let s = |x: &str| Value::String(x.into());
    assert_eq!(
        kv,
        vec![
            (s("a:b"), s("c")),
            (s(r"x\"), s("y")),
            (s("plain"), s("v:w")),
            (Value::Null, s("no key here")),
            (s("C"), s(r"\dir:path\:kept")),
        ]
    );
    // consume -K writes keys escaped, so its lines produce the same keys and values again.
    let text = ok(&streamctl(&b, &["consume", "t", "-K", ":", "-e"], None));
    assert_eq!(
        text,
        concat!(
            r"a\:b:c",
            "\n",
            r"x\\:y",
            "\n",
            "plain:v:w\n",
            ":no key here\n",
            r"C:\dir:path\:kept",
            "\n"
        )
    );
    ok(&streamctl(
        &b,
        &["topic", "create", "u", "--partitions", "1"],
        None,
    ));
    ok(&streamctl(
        &b,
        &["produce", "u", "-K", ":"],
        Some(text.as_bytes()),
    ));
    let again = json_lines(&ok(&streamctl(
        &b,
        &["consume", "u", "-o", "json", "-e"],
        None,
    )));
    let kv_again: Vec<(Value, Value)> = again
        .iter()
        .map(|r| (r["key"].clone(), r["value"].clone()))
        .collect();
    // The keyless record comes back with an empty key: text has no way to say "no key" but
    // leaving out the separator.
    let mut want = kv.clone();
    want[3].0 = s("");
    assert_eq!(kv_again, want);
}

#[test]
fn null_empty_makes_tombstones_and_empty_lines_are_skipped() {
    let b = Broker::start(&[]);
    ok(&streamctl(
        &b,
        &["topic", "create", "t", "--partitions", "1"],
        None,
    ));
    let out = streamctl(
        &b,
        &["produce", "t", "-K", ":", "--null-empty"],
        Some(b"k1:\n\nk2:v\n\n"),
    );
    ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("produced 2 records to t (skipped 2 empty lines)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ok(&streamctl(&b, &["produce", "t", "-K", ":"], Some(b"k3:\n")));
    let v = json_lines(&ok(&streamctl(
        &b,
        &["consume", "t", "-o", "json", "-e"],
        None,
    )));
    let kv: Vec<(Value, Value)> = v
        .iter()
        .map(|r| (r["key"].clone(), r["value"].clone()))
        .collect();
    assert_eq!(
        kv,
        vec![
            ("k1".into(), Value::Null),
            ("k2".into(), "v".into()),
            ("k3".into(), "".into()),
        ]
    );
}

#[test]
fn bad_json_input_stops_at_its_line_and_says_what_was_written() {
    let b = Broker::start(&[]);
    ok(&streamctl(
        &b,
        &["topic", "create", "t", "--partitions", "2"],
        None,
    ));
    let input = "{\"value\":\"ok\"}\n\n{\"vaule\":\"typo\"}\n{\"value\":\"never\"}\n";
    assert_fails(
        &streamctl(
            &b,
            &["produce", "t", "--input", "json"],
            Some(input.as_bytes()),
        ),
        1,
        "line 3: unknown field \"vaule\"",
    );
    let out = streamctl(
        &b,
        &["produce", "t", "--input", "json"],
        Some(input.as_bytes()),
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("produced 1 record to t before it"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_fails(
        &streamctl(
            &b,
            &["produce", "t", "--input", "json"],
            Some(b"{\"value\":\"v\",\"partition\":5}\n"),
        ),
        1,
        "line 1: partition 5 does not exist: topic 't' has 2 partitions",
    );
    let out = ok(&streamctl(&b, &["consume", "t", "-e"], None));
    assert_eq!(out, "ok\nok\n");
}
