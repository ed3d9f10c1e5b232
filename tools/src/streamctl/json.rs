//! Records as JSON lines, both ways: what `consume --output json` prints and what
//! `produce --input json` reads, in one place so that one stays the inverse of the other.
//!
//! Bytes that are valid UTF-8 are JSON strings (`"key"`, `"value"`); other bytes are standard
//! base64 under `"key_base64"`, `"value_base64"`; an absent key or a null value is `null`.
//! Header values follow the same rule; header names are strings.

use base64::Engine as _;
use bytes::Bytes;
use quiver_client::{ConsumerRecord, Header, TimestampMs, TimestampType};
use serde_json::{json, Map, Value};

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// `name` as a string when the bytes are UTF-8, else `name_base64`; null when absent.
fn put_bytes(obj: &mut Map<String, Value>, name: &str, bytes: Option<&[u8]>) {
    match bytes {
        None => {
            obj.insert(name.to_string(), Value::Null);
        }
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => {
                obj.insert(name.to_string(), Value::String(s.to_string()));
            }
            Err(_) => {
                obj.insert(format!("{name}_base64"), Value::String(BASE64.encode(b)));
            }
        },
    }
}

/// The JSON object of a consumed record.
pub fn encode(r: &ConsumerRecord) -> Value {
    let mut obj = Map::new();
    obj.insert("topic".into(), json!(&*r.topic));
    obj.insert("partition".into(), json!(r.partition.0));
    obj.insert("offset".into(), json!(r.offset.0));
    obj.insert("timestamp".into(), json!(r.timestamp.0));
    obj.insert(
        "timestamp_type".into(),
        json!(match r.timestamp_type {
            TimestampType::CreateTime => "CreateTime",
            TimestampType::LogAppendTime => "LogAppendTime",
        }),
    );
    put_bytes(&mut obj, "key", r.key.as_deref());
    put_bytes(&mut obj, "value", r.value.as_deref());
    let headers: Vec<Value> = r
        .headers
        .iter()
        .map(|h| {
            let mut o = Map::new();
            o.insert("key".into(), json!(h.key));
            put_bytes(&mut o, "value", Some(&h.value));
            Value::Object(o)
        })
        .collect();
    obj.insert("headers".into(), Value::Array(headers));
    Value::Object(obj)
}

/// A record read from a JSON line: what a producer needs to write it again.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
    pub partition: Option<u32>,
    pub timestamp: Option<TimestampMs>,
}

/// Fields of consume's JSON that say where a record was, not what it is: read and ignored.
const IGNORED: &[&str] = &["topic", "offset", "timestamp_type"];

/// Reads one JSON line as [`encode`] writes it (see the module docs).
pub fn decode(line: &[u8]) -> Result<Decoded, String> {
    let v: Value = serde_json::from_slice(line).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(obj) = v else {
        return Err("expected a JSON object, one per line".into());
    };
    for name in obj.keys() {
        let known = matches!(
            name.as_str(),
            "key" | "key_base64" | "value" | "value_base64" | "headers" | "partition" | "timestamp"
        ) || IGNORED.contains(&name.as_str());
        if !known {
            return Err(format!(
                "unknown field \"{name}\" (a record has key or key_base64, value or \
                 value_base64, headers, partition, timestamp)"
            ));
        }
    }
    let partition = match obj.get("partition") {
        None | Some(Value::Null) => None,
        Some(p) => Some(
            p.as_u64()
                .and_then(|p| u32::try_from(p).ok())
                .ok_or_else(|| format!("\"partition\" must be a partition number, not {p}"))?,
        ),
    };
    let timestamp = match obj.get("timestamp") {
        None | Some(Value::Null) => None,
        Some(t) => Some(TimestampMs(t.as_i64().ok_or_else(|| {
            format!("\"timestamp\" must be milliseconds since the Unix epoch, not {t}")
        })?)),
    };
    let headers = match obj.get("headers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .map(|h| {
                let Value::Object(h) = h else {
                    return Err(format!(
                        "a header must be an object with key and value, not {h}"
                    ));
                };
                let key = match h.get("key") {
                    Some(Value::String(k)) => k.clone(),
                    _ => return Err("a header needs a string \"key\"".into()),
                };
                if let Some(extra) = h
                    .keys()
                    .find(|k| !matches!(k.as_str(), "key" | "value" | "value_base64"))
                {
                    return Err(format!("unknown field \"{extra}\" in header \"{key}\""));
                }
                let value = bytes_field(h, "value")?.ok_or_else(|| {
                    format!("header \"{key}\" has no value (header values cannot be null)")
                })?;
                Ok(Header::new(key, value))
            })
            .collect::<Result<_, String>>()?,
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok(Header::new(k.clone(), Bytes::from(s.clone()))),
                other => Err(format!("header \"{k}\" must be a string, not {other}")),
            })
            .collect::<Result<_, String>>()?,
        Some(other) => return Err(format!("\"headers\" must be a list, not {other}")),
    };
    Ok(Decoded {
        key: bytes_field(&obj, "key")?,
        value: bytes_field(&obj, "value")?,
        headers,
        partition,
        timestamp,
    })
}

/// `name` (a string, or null) or `name_base64`; `None` when null or absent.
fn bytes_field(obj: &Map<String, Value>, name: &str) -> Result<Option<Bytes>, String> {
    let b64_name = format!("{name}_base64");
    match (obj.get(name), obj.get(&b64_name)) {
        (Some(v), Some(b)) if !v.is_null() && !b.is_null() => Err(format!(
            "\"{name}\" and \"{b64_name}\" are both given; give one"
        )),
        (Some(Value::String(s)), _) => Ok(Some(Bytes::from(s.clone()))),
        (_, Some(Value::String(b))) => BASE64
            .decode(b)
            .map(|b| Some(Bytes::from(b)))
            .map_err(|e| format!("\"{b64_name}\" is not standard base64: {e}")),
        (None | Some(Value::Null), None | Some(Value::Null)) => Ok(None),
        (Some(other), _) => Err(format!(
            "\"{name}\" must be a string or null, not {other} (bytes go in \"{b64_name}\")"
        )),
        (_, Some(other)) => Err(format!("\"{b64_name}\" must be a string, not {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_client::{Offset, PartitionId};

    fn record(
        key: Option<&'static [u8]>,
        value: Option<&'static [u8]>,
        headers: Vec<Header>,
    ) -> ConsumerRecord {
        ConsumerRecord {
            topic: "t".into(),
            partition: PartitionId(1),
            offset: Offset(2),
            timestamp: TimestampMs(3),
            timestamp_type: TimestampType::CreateTime,
            key: key.map(Bytes::from_static),
            value: value.map(Bytes::from_static),
            headers,
        }
    }

    #[test]
    fn json_uses_strings_for_utf8_and_base64_otherwise() {
        let r = record(
            Some("ключ".as_bytes()),
            Some(&[0xff, 0x00]),
            vec![Header::new("h", Bytes::from_static(&[0xc3]))],
        );
        let v = encode(&r);
        assert_eq!(v["key"], "ключ");
        assert_eq!(v["value_base64"], "/wA=");
        assert!(v.get("value").is_none());
        assert_eq!(v["headers"][0]["value_base64"], "ww==");
        let v = encode(&record(None, None, vec![]));
        assert!(v["key"].is_null() && v["value"].is_null());
        let v = encode(&record(Some(b""), Some(b""), vec![]));
        assert_eq!((&v["key"], &v["value"]), (&json!(""), &json!("")));
    }

    #[test]
    fn what_consume_prints_decodes_to_the_same_record() {
        let cases = [
            record(Some(b"k"), Some(b"v"), vec![]),
            record(None, None, vec![]),
            record(Some(b""), Some(b""), vec![]),
            record(None, Some(b"line one\nline two\t\"quoted\"\\"), vec![]),
            record(
                Some(b"\xff\xfe"),
                Some(b"\x00\x01\xc3\x28"),
                vec![
                    Header::new("a", Bytes::from_static(b"1")),
                    Header::new("a", Bytes::from_static(b"\xff")),
                    Header::new("", Bytes::new()),
                ],
            ),
        ];
        for r in cases {
            let line = serde_json::to_vec(&encode(&r)).unwrap();
            let d = decode(&line).unwrap();
            assert_eq!(
                d,
                Decoded {
                    key: r.key.clone(),
                    value: r.value.clone(),
                    headers: r.headers.clone(),
                    partition: Some(1),
                    timestamp: Some(TimestampMs(3)),
                },
                "{}",
                String::from_utf8_lossy(&line)
            );
        }
    }

    #[test]
    fn hand_written_lines_decode_with_defaults() {
        // (line, key, value, headers as (name, value))
        type Case = (
            &'static str,
            Option<&'static [u8]>,
            Option<&'static [u8]>,
            &'static [(&'static str, &'static [u8])],
        );
        let cases: &[Case] = &[
            (r#"{"value":"v"}"#, None, Some(b"v"), &[]),
            (r#"{"key":"k"}"#, Some(b"k"), None, &[]),
            (r#"{}"#, None, None, &[]),
            (
                r#"{"key":null,"value":null,"headers":null}"#,
                None,
                None,
                &[],
            ),
            (r#"{"value_base64":"AAE="}"#, None, Some(b"\x00\x01"), &[]),
            (
                r#"{"value":"v","headers":{"a":"1","b":"2"}}"#,
                None,
                Some(b"v"),
                &[("a", b"1"), ("b", b"2")],
            ),
            (
                r#"{"value":"v","headers":[{"key":"a","value_base64":"/w=="}]}"#,
                None,
                Some(b"v"),
                &[("a", b"\xff")],
            ),
            (
                r#"{"topic":"x","offset":9,"timestamp_type":"LogAppendTime","value":"v"}"#,
                None,
                Some(b"v"),
                &[],
            ),
        ];
        for (line, key, value, headers) in cases {
            let d = decode(line.as_bytes()).unwrap();
            let want: Vec<Header> = headers
                .iter()
                .map(|(k, v)| Header::new(*k, Bytes::from_static(v)))
                .collect();
            assert_eq!(
                (d.key.as_deref(), d.value.as_deref(), d.headers),
                (*key, *value, want),
                "{line}"
            );
        }
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        // (line, a part of the message)
        let cases: &[(&str, &str)] = &[
            ("not json", "not JSON"),
            ("[1]", "object"),
            (r#"{"vaule":"v"}"#, "unknown field \"vaule\""),
            (r#"{"value":"v","value_base64":"dg=="}"#, "both given"),
            (r#"{"value":5}"#, "string or null"),
            (r#"{"value_base64":"%%%"}"#, "base64"),
            (r#"{"partition":-1}"#, "partition number"),
            (r#"{"partition":"0"}"#, "partition number"),
            (r#"{"timestamp":"now"}"#, "milliseconds"),
            (
                r#"{"headers":[{"key":"h","value":null}]}"#,
                "cannot be null",
            ),
            (r#"{"headers":[{"value":"v"}]}"#, "string \"key\""),
            (
                r#"{"headers":[{"key":"h","value":"v","x":1}]}"#,
                "unknown field \"x\"",
            ),
            (r#"{"headers":"h=v"}"#, "must be a list"),
        ];
        for (line, needle) in cases {
            let e = decode(line.as_bytes()).unwrap_err();
            assert!(e.contains(needle), "{line}: {e}");
        }
    }
}
