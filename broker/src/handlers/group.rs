//! Group APIs: each request runs on the shard that coordinates its group (the owner of the
//! group's `__consumer_offsets` partition), here or across the mesh, and gets its own typed
//! answer back (`Shard::run_on`).

use std::rc::Rc;

use quiver_proto::api::group::{
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, Coordinator,
    DeletableGroupResult, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, DescribedGroup, FindCoordinatorRequest, FindCoordinatorResponse,
    GroupState, ListGroupsRequest, ListGroupsResponse, OffsetCommitPartitionResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetCommitTopicResponse, OffsetFetchRequest,
    OffsetFetchResponse,
};
use quiver_proto::{BrokerId, ErrorCode, PartitionId, ShardId};

use crate::cluster::state::PartKey;
use crate::group::{check_group_id, offsets_partition, OFFSETS_TOPIC};
use crate::runtime::Shard;
use crate::security::acl::Operation;
use crate::security::Access;

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
    match snapshot.live_leader(info, p) {
        Some(l) if l == snapshot.me => Ok((shard.owner(info, p), info.key(p), p)),
        Some(l) => Err((
            ErrorCode::NotCoordinator,
            format!("group '{group}' is coordinated by broker {l}"),
        )),
        None => Err((
            ErrorCode::CoordinatorNotAvailable,
            format!("the broker that coordinates group '{group}' is not available"),
        )),
    }
}

/// What a request works with on its group's coordinator.
struct OnCoordinator {
    shard: Rc<Shard>,
    /// The group's offsets partition and its log there.
    partition: PartitionId,
    log: Result<Rc<quiver_engine::PartitionLog>, String>,
}

/// Runs `work` for group `group` on the shard that coordinates it, holding the group's lock
/// (one request at a time per group, `group::Coordinator::lock`), in a task of its own there
/// (so a request whose client goes away still finishes: a commit is never left written but not
/// applied). Whatever stops it from running (a bad group id, no coordinator yet, the shard
/// stopping) is answered by `failed`, the request's own error shape.
async fn on_coordinator<T, W, Fut>(
    shard: &Rc<Shard>,
    group: String,
    failed: impl FnOnce(ErrorCode, String) -> T,
    work: W,
) -> T
where
    T: Send + 'static,
    W: FnOnce(OnCoordinator) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    let (owner, key, partition) = match route(shard, &group) {
        Ok(r) => r,
        Err((code, message)) => return failed(code, message),
    };
    let ran = shard
        .run_on(owner, move |shard| async move {
            let _lock = shard.groups.lock(&group).await;
            let log = shard.log(&key).map_err(|e| e.to_string());
            let out = work(OnCoordinator {
                shard: shard.clone(),
                partition,
                log,
            })
            .await;
            drop(_lock);
            shard.groups.forget_lock(&group);
            out
        })
        .await;
    match ran {
        Some(out) => out,
        None => failed(
            ErrorCode::CoordinatorNotAvailable,
            "the coordinating shard is stopping".into(),
        ),
    }
}

/// The number of partitions of a (non-internal) topic, as the group state machine asks.
fn partitions_of(snapshot: &crate::cluster::state::Snapshot, topic: &str) -> Option<u32> {
    snapshot
        .topic(topic)
        .filter(|i| !i.internal)
        .map(|i| i.meta.partitions)
}

pub(super) fn find_coordinator(
    shard: &Shard,
    req: FindCoordinatorRequest,
    access: &Access,
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
            if !access.group(Operation::Describe, &key) {
                shard.metrics.denied();
                c.error_code = ErrorCode::GroupAuthorizationFailed;
                c.error_message = Some(format!("{} may not use group '{key}'", access.principal()));
                return c;
            }
            match route(shard, &key) {
                Ok(_) => {}
                // In a cluster: the broker that leads the group's offsets partition.
                Err((ErrorCode::NotCoordinator, message)) => {
                    let snapshot = shard.snapshot();
                    let leader = snapshot.topic(OFFSETS_TOPIC).and_then(|info| {
                        let p = offsets_partition(&key, info.meta.partitions);
                        snapshot.live_leader(info, p)
                    });
                    match leader.and_then(|l| snapshot.brokers.get(&l)) {
                        Some(b) => {
                            c.node_id = BrokerId(b.id);
                            c.host = b.host.clone();
                            c.port = b.port;
                        }
                        None => {
                            c.error_code = ErrorCode::CoordinatorNotAvailable;
                            c.error_message = Some(message);
                        }
                    }
                }
                Err((code, message)) => {
                    c.error_code = code;
                    c.error_message = Some(message);
                }
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
    access: &Access,
) -> ConsumerGroupHeartbeatResponse {
    let member_id = req.member_id.clone();
    let failed = move |code, message| ConsumerGroupHeartbeatResponse {
        error_code: code,
        error_message: Some(message),
        member_id: Some(member_id),
        ..Default::default()
    };
    if !access.group(Operation::Read, &req.group_id) {
        shard.metrics.denied();
        let why = format!(
            "{} may not join group '{}'",
            access.principal(),
            req.group_id
        );
        return failed(ErrorCode::GroupAuthorizationFailed, why);
    }
    // The member belongs to the principal that joined with it (`group::state`).
    let principal = access.principal().to_string();
    on_coordinator(shard, req.group_id.clone(), failed, move |c| async move {
        let snapshot = c.shard.snapshot();
        let partitions = |t: &str| partitions_of(&snapshot, t);
        c.shard
            .groups
            .heartbeat(req, host, principal, &partitions, c.partition)
    })
    .await
}

pub(super) async fn commit(
    shard: &Rc<Shard>,
    mut req: OffsetCommitRequest,
    access: &Access,
) -> OffsetCommitResponse {
    if !access.group(Operation::Read, &req.group_id) {
        shard.metrics.denied();
        return commit_failed(&req, ErrorCode::GroupAuthorizationFailed);
    }
    let refused = super::authz::commit_split(access, &mut req);
    if !refused.is_empty() {
        shard.metrics.denied();
    }
    let principal = access.principal().to_string();
    let mut resp = commit_on_coordinator(shard, req, principal).await;
    super::authz::commit_merge(&mut resp, refused);
    resp
}

async fn commit_on_coordinator(
    shard: &Rc<Shard>,
    req: OffsetCommitRequest,
    principal: String,
) -> OffsetCommitResponse {
    let failed_req = req.clone();
    let failed = move |code, _message| commit_failed(&failed_req, code);
    on_coordinator(shard, req.group_id.clone(), failed, move |c| async move {
        let log = match c.log {
            Ok(l) => l,
            Err(_) => return commit_failed(&req, ErrorCode::CoordinatorNotAvailable),
        };
        let snapshot = c.shard.snapshot();
        let exists = |t: &str, p: u32| {
            snapshot
                .topic(t)
                .is_some_and(|i| i.has_partition(PartitionId(p)))
        };
        let (resp, pending) = c
            .shard
            .groups
            .commit(&log, req.clone(), &principal, &exists, c.partition)
            .await;
        // In a cluster a commit counts, and is visible to OffsetFetch, once every in-sync
        // replica of its offsets partition holds it (Kafka commits offsets with acks=all): a
        // failover never loses it, and no reader sees an offset that a failover takes back.
        if let Some(info) = snapshot.topic(crate::group::OFFSETS_TOPIC) {
            if info.meta.is_placed() && pending.is_some() {
                let deadline = std::time::Instant::now() + COMMIT_REPLICATION_WAIT;
                let key = info.key(c.partition);
                match c
                    .shard
                    .wait_replicated_local(key, log.end_offset(), deadline)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => return commit_failed(&req, ErrorCode::RequestTimedOut),
                    Err(_) => return commit_failed(&req, ErrorCode::NotCoordinator),
                }
            }
        }
        if let Some(pending) = pending {
            c.shard.groups.apply_pending(pending);
        }
        resp
    })
    .await
}

/// How long a commit waits for the offsets partition's in-sync replicas.
const COMMIT_REPLICATION_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A commit's answer with every partition failed with `code`.
fn commit_failed(req: &OffsetCommitRequest, code: ErrorCode) -> OffsetCommitResponse {
    OffsetCommitResponse {
        throttle_time_ms: 0,
        topics: req
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
    }
}

pub(super) async fn fetch(
    shard: &Rc<Shard>,
    req: OffsetFetchRequest,
    access: &Access,
) -> OffsetFetchResponse {
    let failed = |code, _message| OffsetFetchResponse {
        error_code: code,
        ..Default::default()
    };
    if !access.group(Operation::Describe, &req.group_id) {
        shard.metrics.denied();
        return failed(ErrorCode::GroupAuthorizationFailed, String::new());
    }
    let asked = req.clone();
    let principal = access.principal().to_string();
    let mut resp = on_coordinator(shard, req.group_id.clone(), failed, move |c| async move {
        c.shard.groups.fetch(&req, &principal, c.partition)
    })
    .await;
    super::authz::fetch_filter(access, &asked, &mut resp);
    resp
}

pub(super) async fn describe(
    shard: &Rc<Shard>,
    req: DescribeGroupsRequest,
    access: &Access,
) -> DescribeGroupsResponse {
    let mut groups = Vec::with_capacity(req.groups.len());
    for g in req.groups {
        if !access.group(Operation::Describe, &g) {
            shard.metrics.denied();
            groups.push(DescribedGroup {
                error_code: ErrorCode::GroupAuthorizationFailed,
                error_message: Some(format!(
                    "{} may not describe group '{g}'",
                    access.principal()
                )),
                group_id: g,
                group_state: GroupState::Unknown,
                ..Default::default()
            });
            continue;
        }
        let failed = {
            let g = g.clone();
            move |code, message| DescribedGroup {
                error_code: code,
                error_message: Some(message),
                group_id: g,
                group_state: GroupState::Unknown,
                ..Default::default()
            }
        };
        let group = g.clone();
        groups.push(
            on_coordinator(shard, g, failed, move |c| async move {
                c.shard.groups.describe(&group)
            })
            .await,
        );
    }
    DescribeGroupsResponse {
        throttle_time_ms: 0,
        groups,
    }
}

pub(super) async fn delete(
    shard: &Rc<Shard>,
    req: DeleteGroupsRequest,
    access: &Access,
) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for g in req.groups_names {
        if !access.group(Operation::Delete, &g) {
            shard.metrics.denied();
            results.push(DeletableGroupResult {
                group_id: g,
                error_code: ErrorCode::GroupAuthorizationFailed,
            });
            continue;
        }
        let failed = {
            let g = g.clone();
            move |code, _message| DeletableGroupResult {
                group_id: g,
                error_code: code,
            }
        };
        let group = g.clone();
        results.push(
            on_coordinator(shard, g, failed, move |c| async move {
                match c.log {
                    Ok(log) => c.shard.groups.delete(&log, &group, c.partition).await,
                    Err(_) => DeletableGroupResult {
                        group_id: group,
                        error_code: ErrorCode::CoordinatorNotAvailable,
                    },
                }
            })
            .await,
        );
    }
    DeleteGroupsResponse {
        throttle_time_ms: 0,
        results,
    }
}

/// Every shard's groups, filtered: by the request's states, and to those the principal may
/// describe (all of them with Describe on the cluster).
pub(super) async fn list(
    shard: &Rc<Shard>,
    req: ListGroupsRequest,
    access: &Access,
) -> ListGroupsResponse {
    let mut groups = Vec::new();
    for s in 0..shard.shard_count() as u32 {
        let listed = shard
            .run_on(ShardId(s), |shard| async move { shard.groups.list() })
            .await;
        groups.extend(listed.unwrap_or_default());
    }
    groups.retain(|g| req.states_filter.is_empty() || req.states_filter.contains(&g.group_state));
    if !access.cluster(Operation::Describe) {
        groups.retain(|g| access.group(Operation::Describe, &g.group_id));
    }
    groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    ListGroupsResponse {
        throttle_time_ms: 0,
        error_code: ErrorCode::None,
        groups,
    }
}
