//! `streamctl produce`: one record per input line (a value, `KEY SEP VALUE`, or a JSON record
//! as consume prints it), through the SDK's batching producer.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use bytes::Bytes;
use quiver_client::{Acks, Client, Producer, ProducerConfig, ProducerRecord};

use crate::args::{Input, ProduceArgs};
use crate::text::split_line;
use crate::{json, CliResult};

/// Records whose delivery is awaited at once, at most: bounds what a large input holds.
const PENDING_RECORDS_MAX: usize = 100_000;

/// What one input line turns into.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    Record(Box<ProducerRecord>),
    /// An empty (text) or blank (JSON) line.
    Skipped,
}

/// How lines are read, from the arguments.
struct Reader<'a> {
    a: &'a ProduceArgs,
    separator: Option<&'a [u8]>,
    /// The topic's partition count: a partition beyond it is refused with the line's number
    /// instead of waiting for metadata that will never list it.
    partitions: u32,
}

impl Reader<'_> {
    /// One line, without its `\n`.
    fn record(&self, line: &[u8]) -> Result<Line, String> {
        let mut record = ProducerRecord::new(&self.a.topic);
        match self.a.input {
            Input::Text => {
                if line.is_empty() {
                    return Ok(Line::Skipped);
                }
                let (key, value) = match self.separator {
                    Some(sep) => split_line(line, sep),
                    None => (None, line),
                };
                record.key = key.map(Bytes::from);
                record.value = if value.is_empty() && self.a.null_empty {
                    None
                } else {
                    Some(Bytes::copy_from_slice(value))
                };
            }
            Input::Json => {
                if line.iter().all(u8::is_ascii_whitespace) {
                    return Ok(Line::Skipped);
                }
                let d = json::decode(line)?;
                record.key = d.key;
                record.value = d.value;
                record.headers = d.headers;
                record.timestamp = d.timestamp;
                if let Some(p) = d.partition {
                    record = record.partition(p);
                }
            }
        }
        for (k, v) in &self.a.headers {
            record = record.header(k.clone(), Bytes::copy_from_slice(v.as_bytes()));
        }
        if let Some(p) = self.a.partition {
            record = record.partition(p);
        }
        if let Some(p) = record.partition.filter(|p| p.0 >= self.partitions) {
            let how = match (self.a.partition, self.a.input) {
                (None, Input::Json) => {
                    "; create the topic with as many partitions as the one the records \
                     came from, or pass --partition"
                }
                _ => "",
            };
            return Err(format!(
                "partition {p} does not exist: topic '{}' has {} partition{}{how}",
                self.a.topic,
                self.partitions,
                if self.partitions == 1 { "" } else { "s" }
            ));
        }
        Ok(Line::Record(Box::new(record)))
    }
}

pub async fn produce(client: &Client, a: &ProduceArgs) -> CliResult {
    let topic = client.topic(&a.topic).await.map_err(|e| e.to_string())?;
    let reader = Reader {
        a,
        separator: a.key_separator.as_deref().map(str::as_bytes),
        partitions: topic.partitions.len() as u32,
    };
    let input: Box<dyn Read> = match &a.file {
        Some(p) => Box::new(
            std::fs::File::open(p).map_err(|e| format!("cannot open {}: {e}", p.display()))?,
        ),
        None => Box::new(std::io::stdin().lock()),
    };
    let mut input = BufReader::with_capacity(1 << 20, input);
    let config = ProducerConfig::default()
        .acks(a.acks)
        .compression(a.compression.into())
        .linger(a.linger)
        .delivery_timeout(Duration::from_secs(60))
        .max_block(Duration::from_secs(60));
    let producer = Producer::new(client.clone(), config).map_err(|e| e.to_string())?;
    let mut pending = VecDeque::new();
    let mut line = Vec::new();
    let (mut count, mut skipped, mut number) = (0u64, 0u64, 0u64);
    // A bad line stops the input; what came before it is still written, and said so.
    let mut bad_line = None;
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("reading input: {e}"))?;
        if n == 0 {
            break;
        }
        number += 1;
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        let record = match reader.record(&line) {
            Ok(Line::Record(r)) => r,
            Ok(Line::Skipped) => {
                skipped += 1;
                continue;
            }
            Err(e) => {
                bad_line = Some(format!("line {number}: {e}"));
                break;
            }
        };
        let delivery = producer.enqueue(*record).await.map_err(|e| e.to_string())?;
        pending.push_back(delivery);
        count += 1;
        if pending.len() >= PENDING_RECORDS_MAX {
            let d = pending.pop_front().expect("not empty");
            d.await.map_err(|e| e.to_string())?;
        }
    }
    producer.flush().await.map_err(|e| e.to_string())?;
    for d in pending {
        d.await.map_err(|e| e.to_string())?;
    }
    producer.close().await.map_err(|e| e.to_string())?;
    let verb = if a.acks == Acks::None {
        "sent"
    } else {
        "produced"
    };
    let s = |n: u64| if n == 1 { "" } else { "s" };
    let done = format!("{verb} {count} record{} to {}", s(count), a.topic);
    if let Some(e) = bad_line {
        return Err(format!("{e} (stopped there; {done} before it)"));
    }
    let skipped = match (skipped, a.input) {
        (0, _) => String::new(),
        (n, Input::Text) => format!(" (skipped {n} empty line{})", s(n)),
        (n, Input::Json) => format!(" (skipped {n} blank line{})", s(n)),
    };
    eprintln!("streamctl: {done}{skipped}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use quiver_client::{PartitionId, TimestampMs};

    use crate::args::{Cli, Command};

    fn args(flags: &[&str]) -> ProduceArgs {
        let mut argv = vec!["streamctl", "produce", "t"];
        argv.extend_from_slice(flags);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Produce(a) => a,
            _ => unreachable!(),
        }
    }

    /// (key, value, headers, partition, timestamp) of what a line becomes; `None`: skipped.
    type Want<'a> = Option<(
        Option<&'a [u8]>,
        Option<&'a [u8]>,
        &'a [(&'a str, &'a [u8])],
        Option<u32>,
        Option<i64>,
    )>;

    #[test]
    fn lines_become_records_as_the_flags_say() {
        // (flags, line, what it becomes)
        let cases: &[(&[&str], &[u8], Want)] = &[
            (&[], b"v", Some((None, Some(b"v"), &[], None, None))),
            (&[], b"", None),
            (&[], b" ", Some((None, Some(b" "), &[], None, None))),
            (&[], b"a:b\r", Some((None, Some(b"a:b\r"), &[], None, None))),
            (&["-K", ":"], b"k:v", Some((Some(b"k"), Some(b"v"), &[], None, None))),
            (&["-K", ":"], b"k:", Some((Some(b"k"), Some(b""), &[], None, None))),
            (&["-K", ":", "--null-empty"], b"k:", Some((Some(b"k"), None, &[], None, None))),
            (&["-K", ":", "--null-empty"], b"", None),
            (&["-K", ":"], br"a\:b:c", Some((Some(b"a:b"), Some(b"c"), &[], None, None))),
            (&["-K", ":"], b"no key", Some((None, Some(b"no key"), &[], None, None))),
            (
                &["-K", ":", "-H", "a=1", "-H", "b=2", "-p", "1"],
                b"k:v",
                Some((Some(b"k"), Some(b"v"), &[("a", b"1"), ("b", b"2")], Some(1), None)),
            ),
            (
                &["--input", "json"],
                br#"{"key":null,"value_base64":"/w==","headers":[{"key":"h","value":"x"}],"partition":2,"timestamp":5}"#,
                Some((None, Some(b"\xff"), &[("h", b"x")], Some(2), Some(5))),
            ),
            (&["--input", "json"], b"  \t", None),
            (
                &["--input", "json", "-p", "0", "-H", "s=cli"],
                br#"{"key":"k","value":null,"headers":{"h":"x"},"partition":2}"#,
                Some((Some(b"k"), None, &[("h", b"x"), ("s", b"cli")], Some(0), None)),
            ),
        ];
        for (flags, line, want) in cases {
            let a = args(flags);
            let reader = Reader {
                a: &a,
                separator: a.key_separator.as_deref().map(str::as_bytes),
                partitions: 3,
            };
            let got = reader.record(line).unwrap();
            let want = match want {
                None => Line::Skipped,
                Some((key, value, headers, partition, timestamp)) => {
                    let mut r = ProducerRecord::new("t");
                    r.key = key.map(Bytes::copy_from_slice);
                    r.value = value.map(Bytes::copy_from_slice);
                    for (k, v) in *headers {
                        r = r.header(*k, Bytes::copy_from_slice(v));
                    }
                    r.partition = partition.map(PartitionId);
                    r.timestamp = timestamp.map(TimestampMs);
                    Line::Record(Box::new(r))
                }
            };
            assert_eq!(got, want, "{flags:?} {}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn a_partition_the_topic_lacks_is_refused_with_a_way_out() {
        let a = args(&["--input", "json"]);
        let reader = Reader {
            a: &a,
            separator: None,
            partitions: 3,
        };
        let e = reader
            .record(br#"{"value":"v","partition":5}"#)
            .unwrap_err();
        assert!(e.contains("partition 5 does not exist"), "{e}");
        assert!(
            e.contains("has 3 partitions") && e.contains("--partition"),
            "{e}"
        );
    }
}
