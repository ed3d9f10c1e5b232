//! Fetches: one per broker shard at a time, for the partitions that need records, run in a
//! task of their own that also decodes the records; their answers applied to the positions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use quiver_proto::api::fetch::{
    FetchPartition, FetchRequest, FetchResponse, FetchTopic, IsolationLevel,
};
use quiver_proto::batch::{BatchError, BatchIter, BatchLimits, BatchView, Compression};
use quiver_proto::{ErrorCode, Offset, PartitionId};

use super::{Consumer, ConsumerConfig};
use crate::client::{Client, Node};
use crate::error::{Error, Result};
use crate::grouping::by_topic;
use crate::record::{ConsumerRecord, Header, TopicPartition};

/// The result of one partition in a fetch, decoded in the fetch task.
pub(super) enum PartResult {
    Records {
        records: Vec<ConsumerRecord>,
        next: Offset,
        high_watermark: Offset,
    },
    Failed(ErrorCode, String),
    Corrupt(String),
}

pub(super) struct FetchDone {
    broker: Node,
    asked: Vec<(TopicPartition, Offset)>,
    result: Result<Vec<(TopicPartition, Offset, PartResult)>>,
}

impl Consumer {
    /// Sends one fetch per broker shard for the partitions that need records and have none
    /// pending.
    pub(super) async fn start_fetches(&mut self) -> Result<()> {
        let now = Instant::now();
        // A partition is fetched again while fewer than one fetch's worth of its records wait
        // in the buffer: the next records are on their way while the application works, and
        // the buffer holds at most about two fetches per partition.
        let refill_below = self.config.max_partition_fetch_bytes as usize;
        let eligible: Vec<(TopicPartition, Offset)> = self
            .assignment
            .iter()
            .filter(|(_, s)| {
                !s.paused
                    && !s.in_flight
                    && s.buffered_bytes < refill_below
                    && s.backoff_until.is_none_or(|t| t <= now)
            })
            .filter_map(|(tp, s)| s.fetch_position.map(|o| (tp.clone(), o)))
            .collect();
        if eligible.is_empty() {
            return Ok(());
        }
        let mut by_broker: BTreeMap<Node, Vec<(TopicPartition, Offset)>> = BTreeMap::new();
        for (tp, offset) in eligible {
            match self.leader_of(&tp).await {
                Ok(Some(b)) => {
                    if !self.brokers_in_flight.contains(&b) {
                        by_broker.entry(b).or_default().push((tp, offset));
                    }
                }
                Ok(None) => self.back_off(&tp, now),
                Err(e) => return Err(e),
            }
        }
        for (broker, asked) in by_broker {
            for (tp, _) in &asked {
                if let Some(st) = self.assignment.get_mut(tp) {
                    st.in_flight = true;
                    st.backoff_until = None;
                }
            }
            self.brokers_in_flight.insert(broker);
            let names: Vec<Arc<str>> = asked
                .iter()
                .map(|(tp, _)| {
                    self.topic_names
                        .entry(tp.topic.clone())
                        .or_insert_with(|| Arc::from(tp.topic.as_str()))
                        .clone()
                })
                .collect();
            let client = self.client.clone();
            let config = self.config.clone();
            self.fetches.push(tokio::spawn(fetch_task(
                client, config, broker, asked, names,
            )));
        }
        Ok(())
    }

    pub(super) fn back_off(&mut self, tp: &TopicPartition, now: Instant) {
        if let Some(st) = self.assignment.get_mut(tp) {
            st.backoff_until = Some(now + self.config.retry_backoff);
        }
    }

    /// The leader (and its shard) from cached metadata; `Ok(None)` (after starting a refresh)
    /// when there is none now; an error if the topic or partition does not exist.
    pub(super) async fn leader_of(&self, tp: &TopicPartition) -> Result<Option<Node>> {
        let cluster = self.client.cluster();
        if let Some(t) = cluster.topics.get(&tp.topic) {
            if let Some(p) = t.partitions.get(tp.partition.0 as usize) {
                return Ok(p.leader_node());
            }
        }
        let t = self.client.topic(&tp.topic).await?;
        match t.partitions.get(tp.partition.0 as usize) {
            Some(p) => Ok(p.leader_node()),
            None => {
                // Perhaps partitions were added since the cache was filled.
                let view = self
                    .client
                    .refresh_metadata(Some(vec![tp.topic.clone()]))
                    .await?;
                let t = view.topics.get(&tp.topic);
                match t.and_then(|t| t.partitions.get(tp.partition.0 as usize)) {
                    Some(p) => Ok(p.leader_node()),
                    None => Err(Error::broker(
                        ErrorCode::UnknownTopicOrPartition,
                        Some(format!("partition {tp} does not exist")),
                    )),
                }
            }
        }
    }

    pub(super) fn apply(&mut self, done: FetchDone) -> Result<()> {
        self.brokers_in_flight.remove(&done.broker);
        for (tp, _) in &done.asked {
            if let Some(st) = self.assignment.get_mut(tp) {
                st.in_flight = false;
            }
        }
        let now = Instant::now();
        let parts = match done.result {
            Ok(p) => p,
            // Credentials the broker refuses stay refused: tell the application.
            Err(e @ Error::Authentication { .. }) => return Err(e),
            Err(e) => {
                tracing::debug!(broker = %done.broker, error = %e, "fetch failed; retrying");
                for (tp, _) in &done.asked {
                    self.back_off(tp, now);
                }
                self.refresh_metadata_in_background();
                return Ok(());
            }
        };
        let mut refresh = false;
        for (tp, asked_offset, result) in parts {
            let Some(st) = self.assignment.get_mut(&tp) else {
                continue; // unassigned meanwhile
            };
            if st.paused || st.fetch_position != Some(asked_offset) {
                continue; // paused or sought meanwhile: this answer is stale
            }
            match result {
                PartResult::Records {
                    records,
                    next,
                    high_watermark,
                } => {
                    st.high_watermark = Some(high_watermark);
                    st.fetch_position = Some(next);
                    st.buffered += records.len();
                    st.buffered_bytes += records.iter().map(record_bytes).sum::<usize>();
                    if st.buffered == 0 {
                        st.position = Some(next);
                    }
                    self.buffer.extend(records);
                }
                PartResult::Failed(code, message) => match code {
                    ErrorCode::OffsetOutOfRange => {
                        let e = Error::broker(code, Some(message));
                        tracing::debug!(%tp, error = %e, "fetch position out of range; resetting");
                        st.position = None;
                        st.fetch_position = None;
                        st.reset_reason = Some(e);
                    }
                    c if c.is_retriable() => {
                        refresh = true;
                        st.backoff_until = Some(now + self.config.retry_backoff);
                    }
                    c => return Err(Error::broker(c, Some(message))),
                },
                PartResult::Corrupt(message) => {
                    return Err(Error::Record(format!(
                        "{tp} at offset {}: {message}",
                        asked_offset
                    )))
                }
            }
        }
        if refresh {
            self.refresh_metadata_in_background();
        }
        Ok(())
    }

    pub(super) fn refresh_metadata_in_background(&self) {
        let client = self.client.clone();
        let topics: Vec<String> = self.topic_names.keys().cloned().collect();
        tokio::spawn(async move {
            let _ = client.refresh_metadata(Some(topics)).await;
        });
    }
}

/// Bytes a buffered record holds, for the buffer's bound.
pub(super) fn record_bytes(r: &ConsumerRecord) -> usize {
    r.key.as_ref().map_or(0, Bytes::len)
        + r.value.as_ref().map_or(0, Bytes::len)
        + r.headers
            .iter()
            .map(|h| h.key.len() + h.value.len())
            .sum::<usize>()
}

async fn fetch_task(
    client: Client,
    config: ConsumerConfig,
    broker: Node,
    asked: Vec<(TopicPartition, Offset)>,
    names: Vec<Arc<str>>,
) -> FetchDone {
    let parts = asked.iter().map(|(tp, offset)| {
        let part = FetchPartition {
            partition: tp.partition,
            fetch_offset: *offset,
            partition_max_bytes: config.max_partition_fetch_bytes,
            current_leader_epoch: None,
        };
        (&tp.topic, part)
    });
    let topics = by_topic(parts, |name, partitions| FetchTopic {
        name: name.clone(),
        partitions,
    });
    let req = FetchRequest {
        max_wait_ms: config.fetch_max_wait.as_millis().min(u128::from(u32::MAX)) as u32,
        min_bytes: config.fetch_min_bytes,
        max_bytes: config.fetch_max_bytes,
        isolation_level: IsolationLevel::ReadUncommitted,
        topics,
        rack_id: None,
    };
    let answer = client
        .call_broker::<FetchRequest>(broker, &req, Vec::new())
        .await;
    let throttle = match &answer {
        Ok((resp, _)) => std::time::Duration::from_millis(u64::from(resp.throttle_time_ms)),
        Err(_) => std::time::Duration::ZERO,
    };
    let result = answer.and_then(|(resp, payload)| decode_fetch(&resp, &payload, &asked, &names));
    if !throttle.is_zero() {
        // Over a quota: this broker's next fetch waits as long as the broker asked (the task
        // ends, and with it the broker's turn, only then).
        tokio::time::sleep(throttle).await;
    }
    FetchDone {
        broker,
        asked,
        result,
    }
}

fn decode_fetch(
    resp: &FetchResponse,
    payload: &Bytes,
    asked: &[(TopicPartition, Offset)],
    names: &[Arc<str>],
) -> Result<Vec<(TopicPartition, Offset, PartResult)>> {
    if resp.error_code != ErrorCode::None {
        return Err(Error::broker(resp.error_code, None));
    }
    let mut out = Vec::with_capacity(asked.len());
    // Indexed once: a fetch may name 100,000 partitions.
    let answers = crate::grouping::by_partition(
        resp.topics
            .iter()
            .map(|t| (t.name.as_str(), t.partitions.as_slice())),
        |p| p.partition,
    );
    for ((tp, offset), name) in asked.iter().zip(names) {
        let p = answers.get(&(tp.topic.as_str(), tp.partition)).copied();
        let Some(p) = p else {
            continue; // not answered: fetched again next time
        };
        let result = if p.error_code != ErrorCode::None {
            let message = match p.error_code {
                ErrorCode::OffsetOutOfRange => format!(
                    "offset {offset} of {tp} is outside the retained range [{}, {}]",
                    p.log_start_offset, p.high_watermark
                ),
                c => format!("{tp}: {}", c.description()),
            };
            PartResult::Failed(p.error_code, message)
        } else {
            match p.records.slice(payload) {
                Err(e) => PartResult::Corrupt(format!("records reference: {e}")),
                Ok(bytes) => match decode_records(name, tp.partition, *offset, &bytes) {
                    Ok((records, next)) => PartResult::Records {
                        records,
                        next,
                        high_watermark: p.high_watermark,
                    },
                    Err(e) => PartResult::Corrupt(e),
                },
            }
        };
        out.push((tp.clone(), *offset, result));
    }
    Ok(out)
}

/// Decodes fetched batches into records at or after `from`; returns them and the offset to
/// fetch next. A fetch may start with a batch that begins before `from` (records below it are
/// skipped) and may end with a partial batch (ignored; fetched whole next time).
pub(super) fn decode_records(
    topic: &Arc<str>,
    partition: PartitionId,
    from: Offset,
    bytes: &Bytes,
) -> std::result::Result<(Vec<ConsumerRecord>, Offset), String> {
    let mut records = Vec::new();
    let mut next = from;
    for batch in BatchIter::new(bytes) {
        let batch = match batch {
            Ok(b) => b,
            Err(BatchError::Truncated { .. }) => break,
            Err(e) => return Err(format!("batch framing: {e}")),
        };
        let view =
            BatchView::new(batch, BatchLimits::default()).map_err(|e| format!("batch: {e}"))?;
        if view.last_offset() < from {
            continue;
        }
        next = next.max(view.last_offset().plus(1));
        if view.info().control {
            continue;
        }
        let copy = view.info().compression != Compression::None;
        let timestamp_type = view.info().timestamp_type;
        let take = |s: &[u8]| {
            if copy {
                Bytes::copy_from_slice(s)
            } else {
                bytes.slice_ref(s)
            }
        };
        let decoded = view.records().map_err(|e| format!("records: {e}"))?;
        for r in decoded.iter() {
            let r = r.map_err(|e| format!("record: {e}"))?;
            if r.offset < from {
                continue;
            }
            let mut headers = Vec::with_capacity(r.header_count() as usize);
            for h in r.headers() {
                let (k, v) = h.map_err(|e| format!("header: {e}"))?;
                headers.push(Header {
                    key: k.to_string(),
                    value: take(v),
                });
            }
            records.push(ConsumerRecord {
                topic: topic.clone(),
                partition,
                offset: r.offset,
                timestamp: r.timestamp,
                timestamp_type,
                key: r.key.map(take),
                value: r.value.map(take),
                headers,
            });
        }
    }
    Ok((records, next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_proto::batch::BatchBuilder;
    use quiver_proto::TimestampMs;

    fn batch(base: u64, n: u32, compression: Compression) -> Bytes {
        let mut b = BatchBuilder::new(compression);
        for i in 0..n {
            b.append(
                TimestampMs(1000 + i64::from(i)),
                Some(format!("k{i}").as_bytes()),
                Some(&[0xff, 0x00, i as u8]),
                &[("h", &[0x80])],
            )
            .unwrap();
        }
        let mut bytes = b.finish().unwrap().to_vec();
        quiver_proto::batch::set_base_offset(&mut bytes, Offset(base)).unwrap();
        Bytes::from(bytes)
    }

    #[test]
    fn decode_skips_records_below_the_fetch_offset_and_a_trailing_partial_batch() {
        let topic: Arc<str> = Arc::from("t");
        for compression in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let mut all = Vec::new();
            all.extend_from_slice(&batch(10, 5, compression));
            all.extend_from_slice(&batch(15, 3, compression));
            let partial = batch(18, 2, compression);
            all.extend_from_slice(&partial[..partial.len() - 3]);
            let bytes = Bytes::from(all);
            let (records, next) =
                decode_records(&topic, PartitionId(0), Offset(12), &bytes).unwrap();
            let offsets: Vec<u64> = records.iter().map(|r| r.offset.0).collect();
            assert_eq!(offsets, vec![12, 13, 14, 15, 16, 17], "{compression:?}");
            assert_eq!(next, Offset(18));
            assert_eq!(records[0].key.as_deref(), Some(&b"k2"[..]));
            assert_eq!(records[0].value.as_deref(), Some(&[0xff, 0x00, 2][..]));
            assert_eq!(records[0].headers[0].value.as_ref(), &[0x80]);
            assert_eq!(records[0].timestamp, TimestampMs(1002));
        }
    }

    #[test]
    fn decode_refuses_a_corrupt_batch() {
        let topic: Arc<str> = Arc::from("t");
        let mut b = batch(0, 2, Compression::None).to_vec();
        let last = b.len() - 1;
        b[last] ^= 0x55;
        let err = decode_records(&topic, PartitionId(0), Offset(0), &Bytes::from(b)).unwrap_err();
        assert!(err.contains("CRC"), "{err}");
    }
}
