//! Group APIs: each request goes to the shard that coordinates its group (the owner of the
//! group's `__consumer_offsets` partition), here or across the mesh.

use std::rc::Rc;

use futures_channel::oneshot;
use quiver_proto::api::group::{
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, Coordinator,
    DeletableGroupResult, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, DescribedGroup, FindCoordinatorRequest, FindCoordinatorResponse,
    GroupState, ListGroupsRequest, ListGroupsResponse, ListedGroup, OffsetCommitPartitionResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetCommitTopicResponse, OffsetFetchRequest,
    OffsetFetchResponse,
};
use quiver_proto::{BrokerId, ErrorCode, PartitionId, ShardId};

use crate::group::{check_group_id, offsets_partition, OFFSETS_TOPIC};
use crate::shard::Shard;
use crate::state::PartKey;

/// A group request as it crosses the mesh.
pub enum GroupReq {
    Heartbeat(ConsumerGroupHeartbeatRequest, String),
    Commit(OffsetCommitRequest),
    Fetch(OffsetFetchRequest),
    Describe(String),
    Delete(String),
    List,
}

pub enum GroupResp {
    Heartbeat(ConsumerGroupHeartbeatResponse),
    Commit(OffsetCommitResponse),
    Fetch(OffsetFetchResponse),
    Describe(DescribedGroup),
    Delete(DeletableGroupResult),
    List(Vec<ListedGroup>),
}

impl GroupReq {
    fn group(&self) -> Option<&str> {
        match self {
            GroupReq::Heartbeat(r, _) => Some(&r.group_id),
            GroupReq::Commit(r) => Some(&r.group_id),
            GroupReq::Fetch(r) => Some(&r.group_id),
            GroupReq::Describe(g) | GroupReq::Delete(g) => Some(g),
            GroupReq::List => None,
        }
    }

    /// The answer that fails this request with `code`.
    fn failed(&self, code: ErrorCode, message: String) -> GroupResp {
        match self {
            GroupReq::Heartbeat(r, _) => GroupResp::Heartbeat(ConsumerGroupHeartbeatResponse {
                error_code: code,
                error_message: Some(message),
                member_id: Some(r.member_id.clone()),
                ..Default::default()
            }),
            GroupReq::Commit(r) => GroupResp::Commit(OffsetCommitResponse {
                throttle_time_ms: 0,
                topics: r
                    .topics
                    .iter()
                    .map(|t| OffsetCommitTopicResponse {
                        name: t.name.clone(),
                        partitions: t
                            .partitions
                            .iter()
                            .map(|p| OffsetCommitPartitionResponse {
                                partition: p.partition,
                                error_code: code,
                            })
                            .collect(),
                    })
                    .collect(),
            }),
            GroupReq::Fetch(_) => GroupResp::Fetch(OffsetFetchResponse {
                error_code: code,
                ..Default::default()
            }),
            GroupReq::Describe(g) => GroupResp::Describe(DescribedGroup {
                error_code: code,
                error_message: Some(message),
                group_id: g.clone(),
                group_state: GroupState::Unknown,
                ..Default::default()
            }),
            GroupReq::Delete(g) => GroupResp::Delete(DeletableGroupResult {
                group_id: g.clone(),
                error_code: code,
            }),
            GroupReq::List => GroupResp::List(Vec::new()),
        }
    }
}

/// Where a group is coordinated: the owning shard, the offsets partition's key, and its number.
fn route(
    shard: &Shard,
    group: &str,
) -> Result<(ShardId, PartKey, PartitionId), (ErrorCode, String)> {
    check_group_id(group)?;
    let snapshot = shard.snapshot();
    let info = snapshot.topic(OFFSETS_TOPIC).ok_or_else(|| {
        (
            ErrorCode::CoordinatorNotAvailable,
            format!("{OFFSETS_TOPIC} does not exist yet"),
        )
    })?;
    let p = offsets_partition(group, info.meta.partitions);
    Ok((snapshot.owner(info, p), info.key(p), p))
}

/// Runs a group request on its coordinating shard.
async fn on_coordinator(shard: &Rc<Shard>, req: GroupReq) -> GroupResp {
    let owner = match req.group().map(|g| route(shard, g)) {
        Some(Ok((owner, _, _))) => owner,
        Some(Err((code, message))) => return req.failed(code, message),
        None => shard.id,
    };
    let fallback = req.failed(
        ErrorCode::CoordinatorNotAvailable,
        "the coordinating shard is stopping".into(),
    );
    if owner == shard.id {
        // In a task of its own, as across the mesh: a request whose client goes away still
        // finishes, so a commit is never left written but not applied.
        let shard = shard.clone();
        return glommio::spawn_local(async move { serve_local(&shard, req).await })
            .detach()
            .await
            .unwrap_or(fallback);
    }
    let (reply, rx) = oneshot::channel();
    shard
        .send_to(owner, crate::shard::ShardMsg::Group { req, reply })
        .await;
    rx.await.unwrap_or(fallback)
}

/// Serves a group request on the shard that coordinates it.
pub async fn serve_local(shard: &Rc<Shard>, req: GroupReq) -> GroupResp {
    if let GroupReq::List = req {
        return GroupResp::List(shard.groups.list());
    }
    let group = req.group().expect("all but List name a group").to_string();
    let (owner, key, partition) = match route(shard, &group) {
        Ok(r) => r,
        Err((code, message)) => return req.failed(code, message),
    };
    if owner != shard.id {
        return req.failed(
            ErrorCode::NotCoordinator,
            format!("shard {} does not coordinate group '{group}'", shard.id.0),
        );
    }
    // One request at a time per group (see `group::Coordinator::lock`).
    let lock = shard.groups.lock(&group).await;
    let snapshot = shard.snapshot();
    let partitions = |t: &str| {
        snapshot
            .topic(t)
            .filter(|i| !i.internal)
            .map(|i| i.meta.partitions)
    };
    match req {
        GroupReq::Heartbeat(r, host) => {
            GroupResp::Heartbeat(shard.groups.heartbeat(r, host, &partitions, partition))
        }
        GroupReq::Fetch(r) => GroupResp::Fetch(shard.groups.fetch(&r, partition)),
        GroupReq::Describe(g) => GroupResp::Describe(shard.groups.describe(&g)),
        GroupReq::Commit(r) => {
            let log = match shard.log(&key) {
                Ok(l) => l,
                Err(e) => {
                    return GroupReq::Commit(r)
                        .failed(ErrorCode::CoordinatorNotAvailable, e.to_string())
                }
            };
            let exists = |t: &str, p: u32| {
                snapshot
                    .topic(t)
                    .is_some_and(|i| i.has_partition(PartitionId(p)))
            };
            GroupResp::Commit(shard.groups.commit(&log, r, &exists, partition).await)
        }
        GroupReq::Delete(g) => {
            let log = match shard.log(&key) {
                Ok(l) => l,
                Err(e) => {
                    return GroupReq::Delete(g)
                        .failed(ErrorCode::CoordinatorNotAvailable, e.to_string())
                }
            };
            let resp = shard.groups.delete(&log, &g, partition).await;
            drop(lock);
            shard.groups.forget_lock(&g);
            GroupResp::Delete(resp)
        }
        GroupReq::List => unreachable!("answered above"),
    }
}

pub(super) fn find_coordinator(
    shard: &Shard,
    req: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let coordinators = req
        .keys
        .into_iter()
        .map(|key| {
            let mut c = Coordinator {
                key: key.clone(),
                node_id: BrokerId(shard.config.broker_id),
                host: shard.config.advertised_host(),
                port: shard.listen_port(),
                ..Default::default()
            };
            if let Err((code, message)) = route(shard, &key) {
                c.error_code = code;
                c.error_message = Some(message);
            }
            c
        })
        .collect();
    FindCoordinatorResponse {
        throttle_time_ms: 0,
        coordinators,
    }
}

pub(super) async fn heartbeat(
    shard: &Rc<Shard>,
    req: ConsumerGroupHeartbeatRequest,
    host: String,
) -> ConsumerGroupHeartbeatResponse {
    match on_coordinator(shard, GroupReq::Heartbeat(req, host)).await {
        GroupResp::Heartbeat(r) => r,
        _ => unreachable!("a heartbeat is answered with a heartbeat"),
    }
}

pub(super) async fn commit(shard: &Rc<Shard>, req: OffsetCommitRequest) -> OffsetCommitResponse {
    match on_coordinator(shard, GroupReq::Commit(req)).await {
        GroupResp::Commit(r) => r,
        _ => unreachable!("a commit is answered with a commit"),
    }
}

pub(super) async fn fetch(shard: &Rc<Shard>, req: OffsetFetchRequest) -> OffsetFetchResponse {
    match on_coordinator(shard, GroupReq::Fetch(req)).await {
        GroupResp::Fetch(r) => r,
        _ => unreachable!("a fetch is answered with a fetch"),
    }
}

pub(super) async fn describe(
    shard: &Rc<Shard>,
    req: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let mut groups = Vec::with_capacity(req.groups.len());
    for g in req.groups {
        match on_coordinator(shard, GroupReq::Describe(g)).await {
            GroupResp::Describe(d) => groups.push(d),
            _ => unreachable!("a describe is answered with a describe"),
        }
    }
    DescribeGroupsResponse {
        throttle_time_ms: 0,
        groups,
    }
}

pub(super) async fn delete(shard: &Rc<Shard>, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for g in req.groups_names {
        match on_coordinator(shard, GroupReq::Delete(g)).await {
            GroupResp::Delete(d) => results.push(d),
            _ => unreachable!("a delete is answered with a delete"),
        }
    }
    DeleteGroupsResponse {
        throttle_time_ms: 0,
        results,
    }
}

/// Every shard's groups, filtered.
pub(super) async fn list(shard: &Rc<Shard>, req: ListGroupsRequest) -> ListGroupsResponse {
    let mut groups = shard.groups.list();
    for s in 0..shard.shard_count() as u32 {
        if s == shard.id.0 {
            continue;
        }
        let (reply, rx) = oneshot::channel();
        shard
            .send_to(
                ShardId(s),
                crate::shard::ShardMsg::Group {
                    req: GroupReq::List,
                    reply,
                },
            )
            .await;
        if let Ok(GroupResp::List(more)) = rx.await {
            groups.extend(more);
        }
    }
    groups.retain(|g| req.states_filter.is_empty() || req.states_filter.contains(&g.group_state));
    groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    ListGroupsResponse {
        throttle_time_ms: 0,
        error_code: ErrorCode::None,
        groups,
    }
}
