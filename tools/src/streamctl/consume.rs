//! `streamctl consume`: by partition or as a group member, printing records as text or JSON lines.

use std::io::Write;
use std::time::{Duration, Instant};

use base64::Engine as _;
use quiver_client::{
    Client, Consumer, ConsumerConfig, ConsumerRecord, Offset, OffsetReset, TimestampType,
    TopicPartition,
};
use serde_json::{json, Map, Value};

use crate::args::{ConsumeArgs, Format, StartAt};
use crate::CliResult;

/// `consume --group`: subscribe, print, and commit what was printed.
async fn consume_group(client: &Client, a: &ConsumeArgs, group: &str) -> CliResult {
    let offset_reset = match a.from {
        StartAt::Beginning => OffsetReset::Earliest,
        StartAt::End => OffsetReset::Latest,
        _ => {
            return Err(
                "with --group, --from can only be beginning or end (the group's committed \
                 offsets say where to resume)"
                    .into(),
            )
        }
    };
    let mut config = ConsumerConfig::default()
        .group_id(group)
        .auto_offset_reset(offset_reset)
        .fetch_max_wait(Duration::from_millis(500));
    if let Some(id) = &a.instance_id {
        config = config.instance_id(id);
    }
    if let Some(assignor) = a.assignor {
        config = config.assignor(assignor.into());
    }
    let mut consumer = Consumer::new(client.clone(), config);
    consumer
        .subscribe(vec![a.topic.clone()])
        .await
        .map_err(|e| e.to_string())?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut printed = 0u64;
    let mut last_record = Instant::now();
    let separator = a.key_separator.as_deref().map(str::as_bytes);
    let mut unprinted: Vec<(TopicPartition, Offset)> = Vec::new();
    let mut write_error = None;
    'outer: loop {
        let wait = match a.timeout {
            Some(t) => {
                let left = t.saturating_sub(last_record.elapsed());
                if left.is_zero() {
                    break;
                }
                left.min(Duration::from_secs(1))
            }
            None => Duration::from_secs(1),
        };
        let records = consumer.poll(wait).await.map_err(|e| e.to_string())?;
        if !records.is_empty() {
            last_record = Instant::now();
        }
        for (i, r) in records.iter().enumerate() {
            if a.max_messages.is_some_and(|m| printed >= m) {
                // Not printed: the group resumes from the first of these, per partition.
                for r in &records[i..] {
                    let tp = TopicPartition::new(&*r.topic, r.partition.0);
                    if !unprinted.iter().any(|(t, _)| *t == tp) {
                        unprinted.push((tp, r.offset));
                    }
                }
                break 'outer;
            }
            let written = match a.format {
                Format::Text => write_text(&mut out, r, separator),
                Format::Json => write_json(&mut out, r),
            };
            if let Err(e) = written {
                write_error = Some(e);
                break 'outer;
            }
            printed += 1;
        }
        if let Err(e) = out.flush() {
            write_error = Some(e);
            break;
        }
        if a.max_messages.is_some_and(|m| printed >= m) {
            break;
        }
    }
    let _ = out.flush();
    for (tp, offset) in unprinted {
        consumer.seek(&tp, offset).map_err(|e| e.to_string())?;
    }
    // Commits the positions (everything printed) and leaves the group.
    consumer.close().await.map_err(|e| e.to_string())?;
    match write_error {
        Some(e) => broken_pipe_ok(e),
        None => Ok(()),
    }
}

pub async fn consume(client: &Client, a: &ConsumeArgs) -> CliResult {
    if let Some(group) = &a.group {
        return consume_group(client, a, group).await;
    }
    let offset_reset = match a.from {
        StartAt::End => OffsetReset::Latest,
        _ => OffsetReset::Earliest,
    };
    let mut consumer = Consumer::new(
        client.clone(),
        ConsumerConfig::default()
            .auto_offset_reset(offset_reset)
            .fetch_max_wait(Duration::from_millis(500)),
    );
    let topic = client.topic(&a.topic).await.map_err(|e| e.to_string())?;
    let count = topic.partitions.len() as u32;
    let tps: Vec<TopicPartition> = if a.partitions.is_empty() {
        (0..count)
            .map(|p| TopicPartition::new(&a.topic, p))
            .collect()
    } else {
        for p in &a.partitions {
            if *p >= count {
                return Err(format!(
                    "topic '{}' has {count} partitions; partition {p} does not exist",
                    a.topic
                ));
            }
        }
        a.partitions
            .iter()
            .map(|p| TopicPartition::new(&a.topic, *p))
            .collect()
    };
    consumer.assign(tps.clone()).map_err(|e| e.to_string())?;
    match &a.from {
        StartAt::Beginning => consumer.seek_to_beginning(&tps).await,
        StartAt::End => consumer.seek_to_end(&tps).await,
        StartAt::Offset(o) => tps.iter().try_for_each(|tp| consumer.seek(tp, Offset(*o))),
        StartAt::Time(t) => consumer.seek_to_timestamp(&tps, *t).await,
    }
    .map_err(|e| e.to_string())?;

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut printed = 0u64;
    let mut last_record = Instant::now();
    let separator = a.key_separator.as_deref().map(str::as_bytes);
    'outer: loop {
        if a.max_messages.is_some_and(|m| printed >= m) {
            break;
        }
        let wait = match a.timeout {
            Some(t) => {
                let left = t.saturating_sub(last_record.elapsed());
                if left.is_zero() {
                    break;
                }
                left.min(Duration::from_secs(1))
            }
            None => Duration::from_secs(1),
        };
        let records = consumer.poll(wait).await.map_err(|e| e.to_string())?;
        if !records.is_empty() {
            last_record = Instant::now();
        }
        for r in &records {
            let written = match a.format {
                Format::Text => write_text(&mut out, r, separator),
                Format::Json => write_json(&mut out, r),
            };
            if let Err(e) = written {
                return broken_pipe_ok(e);
            }
            printed += 1;
            if a.max_messages.is_some_and(|m| printed >= m) {
                break 'outer;
            }
        }
        if let Err(e) = out.flush() {
            return broken_pipe_ok(e);
        }
    }
    if let Err(e) = out.flush() {
        return broken_pipe_ok(e);
    }
    Ok(())
}

/// A reader that went away (`| head`) ends the output; that is not an error.
fn broken_pipe_ok(e: std::io::Error) -> CliResult {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(format!("writing output: {e}"))
    }
}

fn write_text(
    out: &mut impl Write,
    r: &ConsumerRecord,
    separator: Option<&[u8]>,
) -> std::io::Result<()> {
    if let Some(sep) = separator {
        if let Some(k) = &r.key {
            out.write_all(k)?;
        }
        out.write_all(sep)?;
    }
    if let Some(v) = &r.value {
        out.write_all(v)?;
    }
    out.write_all(b"\n")
}

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
                obj.insert(
                    format!("{name}_base64"),
                    Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
                );
            }
        },
    }
}

fn record_json(r: &ConsumerRecord) -> Value {
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

fn write_json(out: &mut impl Write, r: &ConsumerRecord) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, &record_json(r))?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use quiver_client::{Offset, TimestampMs};

    #[test]
    fn json_uses_strings_for_utf8_and_base64_otherwise() {
        let r = ConsumerRecord {
            topic: "t".into(),
            partition: quiver_client::PartitionId(1),
            offset: Offset(2),
            timestamp: TimestampMs(3),
            timestamp_type: TimestampType::CreateTime,
            key: Some(Bytes::from_static("ключ".as_bytes())),
            value: Some(Bytes::from_static(&[0xff, 0x00])),
            headers: vec![quiver_client::Header::new("h", Bytes::from_static(&[0xc3]))],
        };
        let v = record_json(&r);
        assert_eq!(v["key"], "ключ");
        assert_eq!(v["value_base64"], "/wA=");
        assert!(v.get("value").is_none());
        assert_eq!(v["headers"][0]["value_base64"], "ww==");
        let tomb = ConsumerRecord {
            key: None,
            value: None,
            headers: vec![],
            ..r
        };
        let v = record_json(&tomb);
        assert!(v["key"].is_null() && v["value"].is_null());
    }
}
