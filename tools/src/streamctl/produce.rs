//! `streamctl produce`: one record per input line, through the SDK's batching producer.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use bytes::Bytes;
use quiver_client::{Acks, Client, Producer, ProducerConfig, ProducerRecord};

use crate::args::ProduceArgs;
use crate::CliResult;

pub async fn produce(client: &Client, a: &ProduceArgs) -> CliResult {
    let config = ProducerConfig::default()
        .acks(a.acks)
        .compression(a.compression.into())
        .linger(a.linger)
        .delivery_timeout(Duration::from_secs(60))
        .max_block(Duration::from_secs(60));
    let producer = Producer::new(client.clone(), config).map_err(|e| e.to_string())?;
    let input: Box<dyn Read> = match &a.file {
        Some(p) => Box::new(
            std::fs::File::open(p).map_err(|e| format!("cannot open {}: {e}", p.display()))?,
        ),
        None => Box::new(std::io::stdin().lock()),
    };
    let mut reader = BufReader::with_capacity(1 << 20, input);
    let separator = a.key_separator.as_ref().map(|s| s.as_bytes().to_vec());
    if separator.as_ref().is_some_and(|s| s.is_empty()) {
        return Err("--key-separator must not be empty".into());
    }
    let mut pending = VecDeque::new();
    let mut line = Vec::new();
    let mut count = 0u64;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("reading input: {e}"))?;
        if n == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        let mut record = ProducerRecord::new(&a.topic);
        match separator
            .as_deref()
            .and_then(|sep| find(&line, sep).map(|i| (i, sep.len())))
        {
            Some((i, len)) => {
                record = record
                    .key(Bytes::copy_from_slice(&line[..i]))
                    .value(Bytes::copy_from_slice(&line[i + len..]));
            }
            None => record = record.value(Bytes::copy_from_slice(&line)),
        }
        for (k, v) in &a.headers {
            record = record.header(k.clone(), Bytes::copy_from_slice(v.as_bytes()));
        }
        if let Some(p) = a.partition {
            record = record.partition(p);
        }
        let delivery = producer.enqueue(record).await.map_err(|e| e.to_string())?;
        pending.push_back(delivery);
        count += 1;
        // Bound what is held while streaming a large input.
        if pending.len() >= 100_000 {
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
    let s = if count == 1 { "" } else { "s" };
    eprintln!("streamctl: {verb} {count} record{s} to {}", a.topic);
    Ok(())
}

/// Where `needle` first stands in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
