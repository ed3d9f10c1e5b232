//! Consumer groups as an administrator sees them: listing, describing (members, committed
//! offsets, lag), deleting, and changing a group's committed offsets.

use std::collections::BTreeMap;
use std::fmt;

use quiver_proto::api::fetch::OffsetSpec;
use quiver_proto::api::group::GroupState as WireGroupState;
use quiver_proto::{BrokerId, ErrorCode, Offset};
use serde::Serialize;

use super::Admin;
use crate::commit::OffsetAndMetadata;
use crate::consumer::list_offsets_raw;
use crate::error::{Error, Result};
use crate::group::find_coordinator;
use crate::grouping::by_topic;
use crate::record::TopicPartition;

/// A consumer group's state. Groups of the consumer protocol (KIP-848, what this SDK's
/// consumers use) are `Empty`, `Assigning`, `Reconciling` or `Stable`; classic-protocol
/// groups use `PreparingRebalance` and `CompletingRebalance` too. Shown (and serialized) by
/// its name.
///
/// ```
/// use quiver_client::GroupState;
/// assert_eq!(GroupState::Stable.to_string(), "Stable");
/// assert_eq!("Reconciling".parse::<GroupState>(), Ok(GroupState::Reconciling));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GroupState {
    /// No members (its committed offsets may remain).
    Empty,
    /// Classic protocol: members are rejoining.
    PreparingRebalance,
    /// Classic protocol: waiting for the leader's assignment.
    CompletingRebalance,
    /// Every member owns its target assignment.
    Stable,
    /// The group is being removed.
    Dead,
    /// The broker is computing a new target assignment.
    Assigning,
    /// Members are moving towards their targets (revoking, then taking partitions).
    Reconciling,
    /// A state this client does not know (a newer broker).
    Unknown,
}

impl GroupState {
    /// The state's name (`Stable`, `Empty`, ...).
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
            GroupState::Assigning => "Assigning",
            GroupState::Reconciling => "Reconciling",
            GroupState::Unknown => "Unknown",
        }
    }

    const ALL: [GroupState; 8] = [
        GroupState::Empty,
        GroupState::PreparingRebalance,
        GroupState::CompletingRebalance,
        GroupState::Stable,
        GroupState::Dead,
        GroupState::Assigning,
        GroupState::Reconciling,
        GroupState::Unknown,
    ];
}

impl From<WireGroupState> for GroupState {
    fn from(s: WireGroupState) -> GroupState {
        match s {
            WireGroupState::Empty => GroupState::Empty,
            WireGroupState::PreparingRebalance => GroupState::PreparingRebalance,
            WireGroupState::CompletingRebalance => GroupState::CompletingRebalance,
            WireGroupState::Stable => GroupState::Stable,
            WireGroupState::Dead => GroupState::Dead,
            WireGroupState::Assigning => GroupState::Assigning,
            WireGroupState::Reconciling => GroupState::Reconciling,
            WireGroupState::Unknown => GroupState::Unknown,
        }
    }
}

impl fmt::Display for GroupState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for GroupState {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<GroupState, String> {
        GroupState::ALL
            .into_iter()
            .find(|g| g.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown group state '{s}'"))
    }
}

impl Serialize for GroupState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// A consumer group as `list_groups` shows it.
///
/// ```no_run
/// # async fn f(admin: quiver_client::Admin) -> quiver_client::Result<()> {
/// for g in admin.list_groups().await? {
///     println!("{} ({})", g.group_id, g.state);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupListing {
    /// The group's id.
    pub group_id: String,
    /// `Empty`, `Stable`, `Reconciling`, ...
    pub state: GroupState,
}

/// One member of a described group.
///
/// ```
/// # use quiver_client::GroupMember;
/// let m = GroupMember { member_id: "m1".into(), instance_id: Some("pod-1".into()),
///     client_host: None, member_epoch: 3, subscribed_topics: vec!["orders".into()],
///     assigned: vec![("orders".into(), vec![0, 1])], target: vec![("orders".into(), vec![0, 1])] };
/// assert_eq!(m.assigned[0].1.len(), 2);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupMember {
    /// The member's id.
    pub member_id: String,
    /// The static member's instance id (`ConsumerConfig::instance_id`), if any.
    pub instance_id: Option<String>,
    /// Where the member connects from, when the broker says.
    pub client_host: Option<String>,
    /// The member's epoch: it grows with each assignment the member confirms.
    pub member_epoch: i32,
    /// The topics the member subscribes to.
    pub subscribed_topics: Vec<String>,
    /// (topic, partitions) the member owns now.
    pub assigned: Vec<(String, Vec<u32>)>,
    /// (topic, partitions) the broker's assignor means the member to own; differs from
    /// `assigned` while the group reconciles.
    pub target: Vec<(String, Vec<u32>)>,
}

/// A partition's committed offset in a group, with the partition's end and the lag between.
///
/// ```
/// # use quiver_client::GroupOffset;
/// let o = GroupOffset { topic: "orders".into(), partition: 0, committed: Some(90),
///     metadata: None, end: Some(100), lag: Some(10), member_id: Some("m1".into()) };
/// assert_eq!(o.lag, Some(10));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupOffset {
    /// The topic.
    pub topic: String,
    /// The partition's number.
    pub partition: u32,
    /// The committed offset (the next record the group reads); `None`: nothing committed.
    pub committed: Option<u64>,
    /// The metadata string committed with it.
    pub metadata: Option<String>,
    /// The partition's log end offset (high watermark); `None` if the topic is gone.
    pub end: Option<u64>,
    /// `end - committed`: records the group has not consumed yet.
    pub lag: Option<u64>,
    /// The member that owns the partition now, if any.
    pub member_id: Option<String>,
}

/// A consumer group: state, members with their partitions, committed offsets and lag.
///
/// ```no_run
/// # async fn f(admin: quiver_client::Admin) -> quiver_client::Result<()> {
/// let g = admin.describe_group("billing").await?;
/// let lag: u64 = g.offsets.iter().filter_map(|o| o.lag).sum();
/// println!("{}: {} members, lag {lag}", g.group_id, g.members.len());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupDescription {
    /// The group's id.
    pub group_id: String,
    /// `Empty`, `Stable` (every member owns its target) or `Reconciling`.
    pub state: GroupState,
    /// The broker-side assignor the group uses (`range`, `roundrobin`, `sticky`).
    pub assignor: Option<String>,
    /// Grows with every change of the group's members or subscriptions.
    pub group_epoch: i32,
    /// The group epoch the target assignment was computed for.
    pub assignment_epoch: i32,
    /// The members, with their partitions.
    pub members: Vec<GroupMember>,
    /// Every partition the group has a committed offset for or a member owns, in order.
    pub offsets: Vec<GroupOffset>,
}

fn topic_partition_lists(tps: Vec<quiver_proto::api::TopicPartitions>) -> Vec<(String, Vec<u32>)> {
    tps.into_iter()
        .map(|t| (t.topic, t.partitions.into_iter().map(|p| p.0).collect()))
        .collect()
}

impl Admin {
    /// Calls `group`'s coordinator with `req`, once the cluster is known to serve its API
    /// (`what` names the operation in the error if it does not).
    async fn call_coordinator<R: quiver_proto::api::Request>(
        &self,
        group: &str,
        what: &str,
        req: &R,
    ) -> Result<R::Response> {
        self.client.require(R::API, what).await?;
        let coordinator = find_coordinator(&self.client, group).await?;
        Ok(self
            .client
            .call_broker(coordinator, req, Vec::new())
            .await?
            .0)
    }

    /// Every consumer group, sorted by id.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        use quiver_proto::api::group::ListGroupsRequest;
        self.client
            .require(quiver_proto::api::ApiKey::ListGroups, "listing groups")
            .await?;
        let view = self.client.refresh_metadata(Some(Vec::new())).await?;
        let mut out: Vec<GroupListing> = Vec::new();
        let req = ListGroupsRequest {
            states_filter: Vec::new(),
            types_filter: Vec::new(),
        };
        let mut brokers: Vec<BrokerId> = view.brokers.keys().copied().collect();
        brokers.sort();
        for b in brokers {
            let (resp, _) = self.client.call_broker(b, &req, Vec::new()).await?;
            if resp.error_code != ErrorCode::None {
                return Err(Error::broker(resp.error_code, None));
            }
            out.extend(resp.groups.into_iter().map(|g| GroupListing {
                group_id: g.group_id,
                state: g.group_state.into(),
            }));
        }
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out.dedup_by(|a, b| a.group_id == b.group_id);
        Ok(out)
    }

    /// A group's committed offsets (with their metadata strings), by partition, in order.
    ///
    /// ```no_run
    /// # async fn f(admin: quiver_client::Admin) -> quiver_client::Result<()> {
    /// for (tp, o) in admin.list_group_offsets("billing").await? {
    ///     println!("{tp}: {} {:?}", o.offset, o.metadata);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list_group_offsets(
        &self,
        group: &str,
    ) -> Result<Vec<(TopicPartition, OffsetAndMetadata)>> {
        use quiver_proto::api::group::{OffsetFetchRequest, NO_GENERATION};
        let resp = self
            .call_coordinator(
                group,
                "reading committed offsets",
                &OffsetFetchRequest {
                    group_id: group.to_string(),
                    member_id: None,
                    member_epoch: NO_GENERATION,
                    topics: None,
                    require_stable: false,
                },
            )
            .await?;
        if resp.error_code != ErrorCode::None {
            return Err(Error::broker(resp.error_code, None));
        }
        let mut out = Vec::new();
        for t in resp.topics {
            for p in t.partitions {
                if let Some(offset) = p.committed_offset {
                    out.push((
                        TopicPartition::new(&t.name, p.partition.0),
                        OffsetAndMetadata {
                            offset,
                            metadata: p.metadata.filter(|m| !m.is_empty()),
                        },
                    ));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Sets a group's committed offsets from outside the group (Kafka's
    /// `alterConsumerGroupOffsets`): what `streamctl group reset-offsets --execute` does. The
    /// broker accepts it only while the group has no members (a running member would
    /// overwrite it with its own position); otherwise it fails with `UnknownMemberId`. The
    /// offsets are written as given: check them against the partitions' start and end first.
    ///
    /// ```no_run
    /// # async fn f(admin: quiver_client::Admin) -> quiver_client::Result<()> {
    /// use quiver_client::{Offset, TopicPartition};
    /// // Replay orders/0 from offset 100 the next time the billing group starts.
    /// admin.alter_group_offsets("billing", &[(TopicPartition::new("orders", 0), Offset(100))]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn alter_group_offsets(
        &self,
        group: &str,
        offsets: &[(TopicPartition, Offset)],
    ) -> Result<()> {
        use quiver_proto::api::group::{
            OffsetCommitPartition, OffsetCommitRequest, OffsetCommitTopic, NO_GENERATION,
        };
        if offsets.is_empty() {
            return Ok(());
        }
        let parts = offsets.iter().map(|(tp, o)| {
            let part = OffsetCommitPartition {
                partition: tp.partition,
                committed_offset: *o,
                committed_leader_epoch: None,
                committed_metadata: None,
            };
            (&tp.topic, part)
        });
        let topics = by_topic(parts, |name, partitions| OffsetCommitTopic {
            name: name.clone(),
            partitions,
        });
        let req = OffsetCommitRequest {
            group_id: group.to_string(),
            generation_id_or_member_epoch: NO_GENERATION,
            member_id: String::new(),
            group_instance_id: None,
            topics,
        };
        let resp = self
            .call_coordinator(group, "changing committed offsets", &req)
            .await?;
        for t in resp.topics {
            for p in t.partitions {
                match p.error_code {
                    ErrorCode::None => {}
                    ErrorCode::UnknownMemberId => {
                        return Err(Error::broker(
                            ErrorCode::UnknownMemberId,
                            Some(format!(
                                "group '{group}' has active members; stop them before changing \
                                 its offsets"
                            )),
                        ))
                    }
                    c => {
                        return Err(Error::broker(
                            c,
                            Some(format!(
                                "setting the offset of {}/{} for group '{group}': {}",
                                t.name,
                                p.partition.0,
                                c.description()
                            )),
                        ))
                    }
                }
            }
        }
        Ok(())
    }

    /// A group's state, members and committed offsets (with each partition's end and lag).
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        use quiver_proto::api::group::DescribeGroupsRequest;
        let resp = self
            .call_coordinator(
                group,
                "describing groups",
                &DescribeGroupsRequest {
                    groups: vec![group.to_string()],
                },
            )
            .await?;
        let g = resp
            .groups
            .into_iter()
            .find(|g| g.group_id == group)
            .ok_or_else(|| Error::Protocol(format!("no DescribeGroups answer for '{group}'")))?;
        if g.error_code != ErrorCode::None {
            return Err(Error::broker(g.error_code, g.error_message));
        }
        let members: Vec<GroupMember> = g
            .members
            .into_iter()
            .map(|m| GroupMember {
                member_id: m.member_id,
                instance_id: m.group_instance_id,
                client_host: m.client_host,
                member_epoch: m.member_epoch,
                subscribed_topics: m.subscribed_topic_names,
                assigned: topic_partition_lists(m.assigned),
                target: topic_partition_lists(m.target_assignment),
            })
            .collect();
        // Every partition with a commit or an owner.
        let mut rows: BTreeMap<TopicPartition, (Option<OffsetAndMetadata>, Option<String>)> =
            BTreeMap::new();
        for (tp, o) in self.list_group_offsets(group).await? {
            rows.entry(tp).or_default().0 = Some(o);
        }
        for m in &members {
            for (topic, ps) in &m.assigned {
                for p in ps {
                    rows.entry(TopicPartition::new(topic, *p)).or_default().1 =
                        Some(m.member_id.clone());
                }
            }
        }
        let mut ends: BTreeMap<TopicPartition, Offset> = BTreeMap::new();
        let asked = rows
            .keys()
            .map(|tp| (&tp.topic, (tp.clone(), OffsetSpec::Latest)));
        // A topic at a time: a deleted topic fails its own listing only.
        for asked in by_topic(asked, |_, asked| asked) {
            // A deleted topic has no end; its committed offsets are still shown.
            if let Ok(found) = list_offsets_raw(&self.client, &asked).await {
                ends.extend(found.into_iter().filter_map(|(tp, o)| o.map(|o| (tp, o))));
            }
        }
        let offsets = rows
            .into_iter()
            .map(|(tp, (c, owner))| {
                let end = ends.get(&tp).copied();
                let committed = c.as_ref().map(|c| c.offset);
                GroupOffset {
                    topic: tp.topic.clone(),
                    partition: tp.partition.0,
                    committed: committed.map(|o| o.0),
                    metadata: c.and_then(|c| c.metadata),
                    end: end.map(|o| o.0),
                    lag: match (committed, end) {
                        (Some(c), Some(e)) => Some(e.0.saturating_sub(c.0)),
                        _ => None,
                    },
                    member_id: owner,
                }
            })
            .collect();
        Ok(GroupDescription {
            group_id: g.group_id,
            state: g.group_state.into(),
            assignor: g.protocol_data.filter(|a| !a.is_empty()),
            group_epoch: g.group_epoch,
            assignment_epoch: g.assignment_epoch,
            members,
            offsets,
        })
    }

    /// Deletes a group with no members, and its committed offsets.
    pub async fn delete_group(&self, group: &str) -> Result<()> {
        use quiver_proto::api::group::DeleteGroupsRequest;
        let resp = self
            .call_coordinator(
                group,
                "deleting groups",
                &DeleteGroupsRequest {
                    groups_names: vec![group.to_string()],
                },
            )
            .await?;
        let r = resp
            .results
            .into_iter()
            .find(|r| r.group_id == group)
            .ok_or_else(|| Error::Protocol(format!("no DeleteGroups answer for '{group}'")))?;
        if r.error_code != ErrorCode::None {
            return Err(Error::broker(
                r.error_code,
                Some(format!("group '{group}': {}", r.error_code.description())),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wire_state_has_a_name_that_parses_back() {
        for wire in WireGroupState::ALL {
            let state = GroupState::from(*wire);
            assert_eq!(format!("{wire:?}"), state.to_string(), "named as before");
            assert_eq!(state.to_string().parse::<GroupState>(), Ok(state));
            assert_eq!(
                serde_json::to_string(&state).unwrap(),
                format!("\"{state}\""),
                "serialized as its name"
            );
        }
        assert!("Rebalancing".parse::<GroupState>().is_err());
    }
}
