//! Positions: seeks, pauses, and where a partition without a position starts (the group's
//! committed offset, else `auto_offset_reset`), with the ListOffsets requests behind them.

use std::collections::{BTreeMap, HashMap};

use quiver_proto::api::fetch::{
    IsolationLevel, ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic, OffsetSpec,
};
use quiver_proto::{BrokerId, ErrorCode, Offset, TimestampMs};

use super::{Consumer, OffsetReset};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::grouping::by_topic;
use crate::record::TopicPartition;

impl Consumer {
    /// The next `poll` returns records of `tp` from `offset` on.
    pub fn seek(&mut self, tp: &TopicPartition, offset: Offset) -> Result<()> {
        self.state(tp)?;
        self.drop_buffered(tp);
        let st = self.state(tp)?;
        st.position = Some(offset);
        st.fetch_position = Some(offset);
        st.reset_reason = None;
        st.backoff_until = None;
        Ok(())
    }

    /// Seeks to the oldest retained record of each partition.
    pub async fn seek_to_beginning(&mut self, tps: &[TopicPartition]) -> Result<()> {
        self.seek_to_spec(tps, |_| OffsetSpec::Earliest).await
    }

    /// Seeks past the newest record of each partition (only records written from now on).
    pub async fn seek_to_end(&mut self, tps: &[TopicPartition]) -> Result<()> {
        self.seek_to_spec(tps, |_| OffsetSpec::Latest).await
    }

    /// Seeks each partition to its first record with a timestamp at or after `timestamp`; to
    /// the end of the partition when there is none.
    pub async fn seek_to_timestamp(
        &mut self,
        tps: &[TopicPartition],
        timestamp: TimestampMs,
    ) -> Result<()> {
        self.seek_to_spec(tps, |_| OffsetSpec::Timestamp(timestamp))
            .await
    }

    pub(super) async fn seek_to_spec(
        &mut self,
        tps: &[TopicPartition],
        spec: impl Fn(&TopicPartition) -> OffsetSpec,
    ) -> Result<()> {
        for tp in tps {
            self.state(tp)?;
        }
        let asked: Vec<(TopicPartition, OffsetSpec)> =
            tps.iter().map(|tp| (tp.clone(), spec(tp))).collect();
        let found = list_offsets(&self.client, &asked).await?;
        for (tp, offset) in found {
            self.seek(&tp, offset)?;
        }
        Ok(())
    }

    /// For each partition, the first offset whose record timestamp is at or after
    /// `timestamp`, or `None` when no record is that recent.
    pub async fn offsets_for_time(
        &self,
        tps: &[TopicPartition],
        timestamp: TimestampMs,
    ) -> Result<Vec<(TopicPartition, Option<Offset>)>> {
        let asked: Vec<(TopicPartition, OffsetSpec)> = tps
            .iter()
            .map(|tp| (tp.clone(), OffsetSpec::Timestamp(timestamp)))
            .collect();
        list_offsets_raw(&self.client, &asked).await
    }

    /// The offset of the next record `poll` will return for `tp`; `None` until known.
    pub fn position(&self, tp: &TopicPartition) -> Option<Offset> {
        self.assignment.get(tp).and_then(|s| s.position)
    }

    /// The partition's high watermark as of the last fetch (records below it are readable).
    pub fn high_watermark(&self, tp: &TopicPartition) -> Option<Offset> {
        self.assignment.get(tp).and_then(|s| s.high_watermark)
    }

    /// Stops returning and fetching records of these partitions until `resume`. Positions stay;
    /// records already buffered are fetched again after `resume`.
    pub fn pause(&mut self, tps: &[TopicPartition]) -> Result<()> {
        for tp in tps {
            self.state(tp)?;
            self.drop_buffered(tp);
            let st = self.state(tp)?;
            st.paused = true;
            st.fetch_position = st.position;
        }
        Ok(())
    }

    /// Fetches and returns records of these paused partitions again, from their positions.
    pub fn resume(&mut self, tps: &[TopicPartition]) -> Result<()> {
        for tp in tps {
            self.state(tp)?.paused = false;
        }
        Ok(())
    }

    /// The paused partitions.
    pub fn paused(&self) -> Vec<TopicPartition> {
        self.assignment
            .iter()
            .filter(|(_, s)| s.paused)
            .map(|(tp, _)| tp.clone())
            .collect()
    }

    /// Gives partitions without a position one: the committed offset, else the reset policy.
    pub(super) async fn resolve_positions(&mut self) -> Result<()> {
        let missing: Vec<TopicPartition> = self
            .assignment
            .iter()
            .filter(|(_, s)| s.position.is_none() && !s.paused)
            .map(|(tp, _)| tp.clone())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let mut unresolved = missing.clone();
        if self.config.group_id.is_some() {
            match self.committed(&missing).await {
                Ok(committed) => {
                    for (tp, offset) in committed {
                        if let Some(o) = offset {
                            self.seek(&tp, o)?;
                            unresolved.retain(|t| *t != tp);
                        }
                    }
                }
                Err(Error::Unsupported { .. }) => {
                    if !self.warned_no_groups {
                        tracing::warn!(
                            "the broker does not serve committed offsets (OffsetFetch); \
                             starting per auto_offset_reset"
                        );
                        self.warned_no_groups = true;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        if unresolved.is_empty() {
            return Ok(());
        }
        let spec = match self.config.auto_offset_reset {
            OffsetReset::Earliest => OffsetSpec::Earliest,
            OffsetReset::Latest => OffsetSpec::Latest,
            OffsetReset::None => {
                let tp = &unresolved[0];
                let reason = self
                    .assignment
                    .get_mut(tp)
                    .and_then(|s| s.reset_reason.take());
                return Err(reason.unwrap_or_else(|| {
                    Error::Config(format!(
                        "{tp} has no committed offset and auto_offset_reset is none: seek first"
                    ))
                }));
            }
        };
        let asked: Vec<(TopicPartition, OffsetSpec)> =
            unresolved.into_iter().map(|tp| (tp, spec)).collect();
        for (tp, offset) in list_offsets(&self.client, &asked).await? {
            self.seek(&tp, offset)?;
        }
        Ok(())
    }
}

/// ListOffsets for each (partition, spec), grouped by leader; `None` where no offset matches.
pub(crate) async fn list_offsets_raw(
    client: &Client,
    asked: &[(TopicPartition, OffsetSpec)],
) -> Result<Vec<(TopicPartition, Option<Offset>)>> {
    let mut by_broker: BTreeMap<BrokerId, Vec<&(TopicPartition, OffsetSpec)>> = BTreeMap::new();
    for a in asked {
        let leader = client.leader(&a.0.topic, a.0.partition).await?;
        by_broker.entry(leader).or_default().push(a);
    }
    let mut out = Vec::with_capacity(asked.len());
    for (broker, items) in by_broker {
        let parts = items.iter().map(|(tp, spec)| {
            let part = ListOffsetsPartition {
                partition: tp.partition,
                current_leader_epoch: None,
                timestamp: *spec,
            };
            (&tp.topic, part)
        });
        let topics = by_topic(parts, |name, partitions| ListOffsetsTopic {
            name: name.clone(),
            partitions,
        });
        let req = ListOffsetsRequest {
            isolation_level: IsolationLevel::ReadUncommitted,
            topics,
            follower_progress: false,
        };
        let (resp, _) = client.call_broker(broker, &req, Vec::new()).await?;
        // Indexed once: a request may name 100,000 partitions.
        let answers = crate::grouping::by_partition(
            resp.topics
                .iter()
                .map(|t| (t.name.as_str(), t.partitions.as_slice())),
            |p| p.partition,
        );
        for (tp, _) in items {
            let p = answers
                .get(&(tp.topic.as_str(), tp.partition))
                .ok_or_else(|| Error::Protocol(format!("no ListOffsets answer for {tp}")))?;
            if p.error_code != ErrorCode::None {
                let e = Error::broker(
                    p.error_code,
                    Some(format!(
                        "listing offsets of {tp}: {}",
                        p.error_code.description()
                    )),
                );
                // The leader moved (or the topic changed): the caller's retry asks the new one.
                if e.needs_metadata() {
                    let _ = client.refresh_metadata(Some(vec![tp.topic.clone()])).await;
                }
                return Err(e);
            }
            out.push((tp.clone(), p.offset));
        }
    }
    Ok(out)
}

/// Like [`list_offsets_raw`], but what cannot be had (a partition without a leader, a leader
/// that does not answer or refuses) is `None` instead of failing the whole: for describing a
/// topic while one of its brokers is down.
pub(crate) async fn list_offsets_lenient(
    client: &Client,
    asked: &[(TopicPartition, OffsetSpec)],
) -> Vec<(TopicPartition, Option<Offset>)> {
    let mut by_broker: BTreeMap<BrokerId, Vec<(TopicPartition, OffsetSpec)>> = BTreeMap::new();
    let mut out = Vec::with_capacity(asked.len());
    for a in asked {
        match client.leader(&a.0.topic, a.0.partition).await {
            Ok(leader) => by_broker.entry(leader).or_default().push(a.clone()),
            Err(_) => out.push((a.0.clone(), None)),
        }
    }
    let calls = by_broker.into_values().map(|items| async move {
        match list_offsets_raw(client, &items).await {
            Ok(found) => found,
            Err(_) => items.into_iter().map(|(tp, _)| (tp, None)).collect(),
        }
    });
    for found in futures_util::future::join_all(calls).await {
        out.extend(found);
    }
    out
}

/// Like [`list_offsets_raw`], with "no record that recent" resolved to the partition's end.
pub(crate) async fn list_offsets(
    client: &Client,
    asked: &[(TopicPartition, OffsetSpec)],
) -> Result<Vec<(TopicPartition, Offset)>> {
    let found = list_offsets_raw(client, asked).await?;
    let missing: Vec<(TopicPartition, OffsetSpec)> = found
        .iter()
        .filter(|(_, o)| o.is_none())
        .map(|(tp, _)| (tp.clone(), OffsetSpec::Latest))
        .collect();
    let ends: HashMap<TopicPartition, Option<Offset>> = if missing.is_empty() {
        HashMap::new()
    } else {
        list_offsets_raw(client, &missing)
            .await?
            .into_iter()
            .collect()
    };
    found
        .into_iter()
        .map(|(tp, o)| {
            let o = o
                .or_else(|| ends.get(&tp).copied().flatten())
                .ok_or_else(|| {
                    Error::Protocol(format!("the broker gave no end offset for {tp}"))
                })?;
            Ok((tp, o))
        })
        .collect()
}
