//! ReplicaFetch (key 1000): a follower copies its leader's batches, byte for byte, and by
//! fetching at offset N says it holds everything below N durably (which moves the high
//! watermark; `runtime::replica`).
//!
//! Only a broker speaks for itself: the connection's certificate must name the follower
//! (`quiver-broker-<id>`), else `ClusterAuthorizationFailed` and nothing is read or recorded;
//! the follower must be registered (`InvalidRequest`), in the broker epoch metadata holds for it
//! (`StaleBrokerEpoch`: a fetch from before its restart), and not fenced
//! (`BrokerNotAvailable`).
//! Per partition: the topic and a placed partition (`UnknownTopicOrPartition`), the follower
//! one of its replicas (`ReplicaNotAvailable`), this broker its leader (`NotLeaderOrFollower`
//! with the leader), the follower's leader epoch this one (`FencedLeaderEpoch` older,
//! `UnknownLeaderEpoch` newer); an offset below the log start is `OffsetOutOfRange`.
//!
//! What one request may cost: at most `fetch_max_bytes` of records in total (its `max_bytes`
//! capped to it), each partition at most once (`proto::api::limits`), and a wait of at most
//! `fetch_max_wait_ms` while no partition has anything new (ended early by a cancel).

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

use quiver_proto::api::cluster::{
    EpochEndOffset, ReplicaFetchPartitionResponse, ReplicaFetchRequest, ReplicaFetchResponse,
    ReplicaFetchTopicResponse,
};
use quiver_proto::api::{LeaderHint, PayloadBuilder};
use quiver_proto::{BrokerId, ErrorCode, LeaderEpoch, ShardId};

use super::common::{part_error, Answer};
use crate::runtime::replica_fetch::{ReplicaAsk, ReplicaRead};
use crate::runtime::{PartError, Shard};

struct Target {
    ti: usize,
    pi: usize,
    owner: ShardId,
    epoch: u32,
    ask: ReplicaAsk,
}

pub(super) async fn replica_fetch(
    shard: &Rc<Shard>,
    req: ReplicaFetchRequest,
    identity: Option<&quiver_net::PeerIdentity>,
) -> Answer {
    let refuse = |code| Answer {
        body: ReplicaFetchResponse {
            error_code: code,
            topics: Vec::new(),
        }
        .into(),
        payload: Vec::new(),
        failed: true,
    };
    let snapshot = shard.snapshot();
    let follower = req.replica_id.0;
    if !snapshot.clustered() || follower == snapshot.me || !snapshot.brokers.contains_key(&follower)
    {
        return refuse(ErrorCode::InvalidRequest);
    }
    if !crate::identity::names_broker(identity, follower) {
        tracing::debug!(
            follower,
            "ReplicaFetch on a connection whose certificate does not name the follower; refused"
        );
        return refuse(ErrorCode::ClusterAuthorizationFailed);
    }
    match snapshot.brokers.get(&follower) {
        Some(b) if b.epoch != req.broker_epoch => return refuse(ErrorCode::StaleBrokerEpoch),
        Some(b) if b.fenced => return refuse(ErrorCode::BrokerNotAvailable),
        _ => {}
    }
    let (deadline, response_max) =
        super::fetch::fetch_bounds(shard, req.max_wait_ms, req.max_bytes);

    let mut failed = false;
    let mut topics = Vec::with_capacity(req.topics.len());
    let mut targets = Vec::new();
    for (ti, t) in req.topics.iter().enumerate() {
        let info = snapshot.topic(&t.name);
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for (pi, p) in t.partitions.iter().enumerate() {
            let mut out = ReplicaFetchPartitionResponse {
                partition: p.partition,
                ..Default::default()
            };
            let placed = info.and_then(|i| i.meta.placed(p.partition.0).map(|m| (i, m)));
            let check = match placed {
                None => Err(ErrorCode::UnknownTopicOrPartition),
                Some((_, m)) if !m.replicas.contains(&follower) => {
                    Err(ErrorCode::ReplicaNotAvailable)
                }
                Some((_, m)) if m.leader != snapshot.me || !snapshot.registered => {
                    if m.has_leader() {
                        out.current_leader = Some(LeaderHint {
                            leader_id: BrokerId(m.leader),
                            leader_epoch: LeaderEpoch(m.leader_epoch),
                        });
                    }
                    Err(ErrorCode::NotLeaderOrFollower)
                }
                Some((_, m)) if p.current_leader_epoch.0 < m.leader_epoch => {
                    Err(ErrorCode::FencedLeaderEpoch)
                }
                Some((_, m)) if p.current_leader_epoch.0 > m.leader_epoch => {
                    Err(ErrorCode::UnknownLeaderEpoch)
                }
                Some((info, m)) => Ok((info, m.leader_epoch)),
            };
            match check {
                Ok((info, epoch)) => targets.push(Target {
                    ti,
                    pi,
                    owner: shard.owner(info, p.partition),
                    epoch,
                    ask: ReplicaAsk {
                        key: info.key(p.partition),
                        fetch_offset: p.fetch_offset,
                        last_epoch: p.last_fetched_epoch,
                        max_bytes: (p.partition_max_bytes.max(1) as usize).min(response_max),
                    },
                }),
                Err(code) => {
                    failed = true;
                    out.error_code = code;
                }
            }
            partitions.push(out);
        }
        topics.push(ReplicaFetchTopicResponse {
            name: t.name.clone(),
            partitions,
        });
    }

    // Read; while nothing came back and time is left, wait for anything written past the
    // fetch offsets, then read again (the second read also records the follower's progress,
    // which is what it asked).
    let mut results = read_all(shard, follower, &targets).await;
    let nothing = |r: &[Result<ReplicaRead, PartError>]| {
        r.iter()
            .all(|r| matches!(r, Ok(rr) if rr.records.len == 0 && rr.diverging.is_none()))
    };
    if !targets.is_empty() && nothing(&results) && Instant::now() < deadline {
        let mut by_owner: HashMap<ShardId, Vec<_>> = HashMap::new();
        for t in &targets {
            by_owner
                .entry(t.owner)
                .or_default()
                .push((t.ask.key, t.ask.fetch_offset));
        }
        shard.wait_written_any(by_owner, deadline).await;
        results = read_all(shard, follower, &targets).await;
    }

    let mut payload = PayloadBuilder::new();
    let mut total = 0usize;
    for (t, r) in targets.iter().zip(results) {
        let out = &mut topics[t.ti].partitions[t.pi];
        match r {
            Ok(read) => {
                out.high_watermark = read.high_watermark;
                out.log_start_offset = read.log_start;
                out.diverging_epoch = read
                    .diverging
                    .map(|(epoch, end_offset)| EpochEndOffset { epoch, end_offset });
                let len = read.records.len;
                if len == 0 || (total > 0 && total + len > response_max) {
                    continue;
                }
                total += len;
                match payload.push_all(read.records.chunks) {
                    Ok(r) => out.records = r,
                    Err(_) => break,
                }
            }
            Err(e) => {
                failed = true;
                // Below the log start: the follower starts again there (it needs the start).
                if let PartError::Engine(quiver_engine::Error::OffsetOutOfRange { start, .. }) = &e
                {
                    out.log_start_offset = *start;
                }
                out.error_code = match e {
                    PartError::NotHosted => ErrorCode::NotLeaderOrFollower,
                    e => part_error(&e).0,
                };
            }
        }
    }
    shard
        .metrics
        .replica_bytes_out
        .fetch_add(total as u64, std::sync::atomic::Ordering::Relaxed);
    Answer {
        body: ReplicaFetchResponse {
            error_code: ErrorCode::None,
            topics,
        }
        .into(),
        payload: payload.into_chunks(),
        failed,
    }
}

/// Reads every target on its owner, a message per owner, answered in the targets' order.
async fn read_all(
    shard: &Rc<Shard>,
    follower: u32,
    targets: &[Target],
) -> Vec<Result<ReplicaRead, PartError>> {
    let mut by_owner: HashMap<ShardId, Vec<usize>> = HashMap::new();
    for (i, t) in targets.iter().enumerate() {
        by_owner.entry(t.owner).or_default().push(i);
    }
    let reads = by_owner.into_iter().map(|(owner, idx)| {
        let asks = idx
            .iter()
            .map(|&i| (targets[i].epoch, targets[i].ask))
            .collect();
        let shard = shard.clone();
        async move { (idx, shard.replica_read_on(owner, follower, asks).await) }
    });
    let mut out: Vec<Option<Result<ReplicaRead, PartError>>> =
        (0..targets.len()).map(|_| None).collect();
    for (idx, results) in futures_util::future::join_all(reads).await {
        for (i, r) in idx.into_iter().zip(results) {
            out[i] = Some(r);
        }
    }
    out.into_iter()
        .map(|r| r.unwrap_or(Err(PartError::ShuttingDown)))
        .collect()
}
