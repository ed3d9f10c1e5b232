//! The final state: every partition read from its log start to its high watermark, once the
//! faults are healed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use quiver_client::{Admin, Client, Consumer, ConsumerConfig, OffsetSpec, TopicPartition};

use crate::history::{FinalState, ReplicaLog, Stored, Tp, Written};

/// Reads every partition of `topic` through `client` (whose bootstrap broker is `broker`).
/// Partitions that cannot be read within `patience` are left out (the checker reports them).
pub async fn read_all(
    client: &Client,
    broker: u32,
    topic: &str,
    partitions: u32,
    patience: Duration,
) -> Result<FinalState, String> {
    let tps: Vec<TopicPartition> = (0..partitions)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    let admin = Admin::new(client.clone());
    let ask = |spec: OffsetSpec| -> Vec<(TopicPartition, OffsetSpec)> {
        tps.iter().map(|tp| (tp.clone(), spec)).collect()
    };
    let starts = admin
        .list_offsets(&ask(OffsetSpec::Earliest))
        .await
        .map_err(|e| format!("log start offsets: {e}"))?;
    let ends = admin
        .list_offsets(&ask(OffsetSpec::Latest))
        .await
        .map_err(|e| format!("high watermarks: {e}"))?;
    let mut logs: BTreeMap<u32, ReplicaLog> = BTreeMap::new();
    for (tp, start) in &starts {
        let end = ends
            .iter()
            .find(|(t, _)| t == tp)
            .and_then(|(_, o)| *o)
            .map(|o| o.0 as i64);
        if let (Some(start), Some(end)) = (start, end) {
            logs.insert(
                tp.partition.0,
                ReplicaLog {
                    broker,
                    log_start: start.0 as i64,
                    high_watermark: end,
                    records: Vec::new(),
                },
            );
        }
    }
    let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default());
    let wanted: Vec<TopicPartition> = tps
        .iter()
        .filter(|tp| {
            logs.get(&tp.partition.0)
                .is_some_and(|l| l.high_watermark > l.log_start)
        })
        .cloned()
        .collect();
    if !wanted.is_empty() {
        consumer.assign(wanted.clone()).map_err(|e| e.to_string())?;
        consumer
            .seek_to_beginning(&wanted)
            .await
            .map_err(|e| format!("seek: {e}"))?;
        let deadline = Instant::now() + patience;
        let done = |logs: &BTreeMap<u32, ReplicaLog>| {
            wanted.iter().all(|tp| {
                let l = &logs[&tp.partition.0];
                l.records.last().map_or(l.log_start, |r| r.offset + 1) >= l.high_watermark
            })
        };
        while !done(&logs) && Instant::now() < deadline {
            let records = match consumer.poll(Duration::from_millis(500)).await {
                Ok(r) => r,
                Err(_) => continue,
            };
            for r in records {
                let Some(log) = logs.get_mut(&r.partition.0) else {
                    continue;
                };
                let offset = r.offset.0 as i64;
                if offset >= log.high_watermark {
                    continue;
                }
                log.records.push(Stored {
                    offset,
                    written: r.value.as_deref().and_then(Written::decode),
                });
            }
        }
    }
    let mut state = FinalState::default();
    for (p, log) in logs {
        state.partitions.insert(Tp::new(topic, p), vec![log]);
    }
    Ok(state)
}
