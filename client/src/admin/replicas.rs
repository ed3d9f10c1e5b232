//! Where a partition's replicas are and how far behind each is: moving replicas to other
//! brokers (`Admin::reassign_partition`, Kafka's AlterPartitionReassignments) and each
//! follower's progress as its leader sees it (ListOffsets with `follower_progress`).

use std::collections::{BTreeMap, HashMap};

use quiver_proto::api::fetch::{
    IsolationLevel, ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic, OffsetSpec,
};
use quiver_proto::api::metadata::{AlterPartitionReassignmentsRequest, ReassignPartition};
use quiver_proto::{BrokerId, ErrorCode, Offset, PartitionId};
use serde::Serialize;

use super::Admin;
use crate::client::Client;
use crate::error::{Error, Result};

/// One follower of a partition as its leader sees it ([`crate::PartitionDescription`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FollowerProgress {
    /// The follower's broker id.
    #[serde(serialize_with = "super::ser_broker")]
    pub broker: BrokerId,
    /// Its durable end: the offset it last fetched from.
    #[serde(serialize_with = "super::ser_offset")]
    pub fetch_offset: Offset,
    /// Records it is behind the leader's log end.
    pub lag_records: u64,
    /// About how many bytes it is behind (exact to one index interval in the leader's active
    /// segment, proportional within older ones).
    pub lag_bytes: u64,
    /// Milliseconds since it was last caught up with the leader's log end.
    pub lag_ms: u64,
    /// Milliseconds since its last fetch.
    pub last_fetch_ms: u64,
    /// Its fetches over the leader's last rate window.
    pub window_fetches: u32,
    /// That window's length in ms.
    pub window_ms: u32,
}

impl FollowerProgress {
    /// Fetches per second over the leader's last rate window.
    pub fn fetches_per_second(&self) -> f64 {
        f64::from(self.window_fetches) * 1000.0 / f64::from(self.window_ms.max(1))
    }
}

impl Admin {
    /// Moves a partition's replicas to `replicas` (broker ids, the preferred leader first),
    /// through the controller. Returns once the move has started: new replicas copy the log
    /// from the leader and join the ISR once caught up; only then do removed replicas leave
    /// (and delete their copy), so no acknowledged record is ever held by fewer in-sync
    /// replicas than before. Watch it with [`Admin::describe_topic`] (`adding`, `removing`).
    pub async fn reassign_partition(
        &self,
        topic: &str,
        partition: u32,
        replicas: &[u32],
    ) -> Result<()> {
        let req = AlterPartitionReassignmentsRequest {
            timeout_ms: self.timeout_ms,
            partitions: vec![ReassignPartition {
                topic: topic.to_string(),
                partition: PartitionId(partition),
                replicas: replicas.iter().copied().map(BrokerId).collect(),
            }],
        };
        let resp = self.client.call_controller(&req).await?;
        let r = resp
            .results
            .into_iter()
            .find(|r| r.topic == topic && r.partition.0 == partition)
            .ok_or_else(|| {
                Error::Protocol(format!(
                    "no AlterPartitionReassignments result for {topic}/{partition}"
                ))
            })?;
        if r.error_code != ErrorCode::None {
            return Err(Error::broker(r.error_code, r.error_message));
        }
        self.client
            .refresh_metadata(Some(vec![topic.to_string()]))
            .await?;
        Ok(())
    }
}

/// Each listed partition's followers as its leader sees them; a partition whose leader is
/// unknown, down or refuses is left out (for describing a topic while a broker is down).
pub(crate) async fn follower_progress(
    client: &Client,
    topic: &str,
    partitions: &[PartitionId],
) -> HashMap<PartitionId, Vec<FollowerProgress>> {
    let mut by_broker: BTreeMap<BrokerId, Vec<PartitionId>> = BTreeMap::new();
    for p in partitions {
        if let Ok(leader) = client.leader(topic, *p).await {
            by_broker.entry(leader).or_default().push(*p);
        }
    }
    let calls = by_broker.into_iter().map(|(broker, parts)| async move {
        let req = ListOffsetsRequest {
            isolation_level: IsolationLevel::ReadUncommitted,
            topics: vec![ListOffsetsTopic {
                name: topic.to_string(),
                partitions: parts
                    .iter()
                    .map(|p| ListOffsetsPartition {
                        partition: *p,
                        current_leader_epoch: None,
                        timestamp: OffsetSpec::Latest,
                    })
                    .collect(),
            }],
            follower_progress: true,
        };
        match client.call_broker(broker, &req, Vec::new()).await {
            Ok((resp, _)) => resp
                .topics
                .into_iter()
                .filter(|t| t.name == topic)
                .flat_map(|t| t.partitions)
                .filter(|p| p.error_code == ErrorCode::None)
                .map(|p| {
                    let followers = p
                        .followers
                        .into_iter()
                        .map(|f| FollowerProgress {
                            broker: f.broker_id,
                            fetch_offset: f.fetch_offset,
                            lag_records: f.lag_records,
                            lag_bytes: f.lag_bytes,
                            lag_ms: f.lag_ms,
                            last_fetch_ms: f.last_fetch_ms,
                            window_fetches: f.window_fetches,
                            window_ms: f.window_ms,
                        })
                        .collect();
                    (p.partition, followers)
                })
                .collect::<Vec<_>>(),
            Err(_) => Vec::new(),
        }
    });
    futures_util::future::join_all(calls)
        .await
        .into_iter()
        .flatten()
        .collect()
}
