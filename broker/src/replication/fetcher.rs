//! A shard's follower replicas: one fetch task per leader broker, for every partition this
//! shard holds a follower replica of and that broker leads.
//!
//! A round: for each partition, the log's end (everything below it is durable: the previous
//! round's appends finished under the flush policy before this one starts) and the epoch of its
//! last batch; one `ReplicaFetch` for all of them (the leader holds it up to
//! `FETCH_WAIT` while nothing is new); then per partition, concurrently: cut the log back
//! where the leader says it diverges, or check and append the batches as stored. A partition
//! the leader refuses (not the leader, another epoch, a topic it has not applied yet) sits out
//! until metadata changes here or `BENCH_PAUSE` passes (the leader's metadata may be the one
//! behind: it catches up without any change here).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use quiver_net::{ClientConnection, Endpoint};
use quiver_proto::api::cluster::{
    ReplicaFetchPartition, ReplicaFetchPartitionResponse, ReplicaFetchRequest,
    ReplicaFetchResponse, ReplicaFetchTopic,
};
use quiver_proto::api::{ApiKey, Message as _};
use quiver_proto::batch::{self, BatchIter, BatchLimits, ValidBatch};
use quiver_proto::frame::FrameHeader;
use quiver_proto::{BrokerId, ErrorCode, LeaderEpoch, Offset, PartitionId};

use crate::cluster::state::PartKey;
use crate::quorum::transport::{dial, PeerAddr};
use crate::runtime::Shard;

/// How long the leader holds a fetch while it has nothing new.
const FETCH_WAIT: Duration = Duration::from_millis(500);
/// Most record bytes one fetch asks for, in all and per partition.
const FETCH_BYTES_MAX: u32 = 16 << 20;
const PARTITION_BYTES_MAX: u32 = 4 << 20;
/// Pause after a failed call or a round where the leader refused everything.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// How long a partition the leader refused sits out at most.
const BENCH_PAUSE: Duration = Duration::from_millis(500);
/// How often the set of fetchers is checked against metadata without a change.
const RECONCILE_EVERY: Duration = Duration::from_secs(1);

/// One partition a fetcher copies.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Part {
    key: PartKey,
    topic: String,
    partition: PartitionId,
    leader: u32,
    leader_epoch: u32,
}

/// Whether this shard still follows `p`'s leader in `p`'s epoch: a fetch asked before a change
/// of leader must not cut or extend the log after it (an answer from a deposed leader, or
/// one arriving after this broker took the lead itself, would put another epoch's batches
/// where the new leader has its own).
fn still_follows(shard: &Shard, p: &Part) -> bool {
    shard.replica_state(&p.key).is_some_and(|r| {
        let role = r.role();
        role.leader == p.leader
            && role.leader_epoch == p.leader_epoch
            && role.leader != shard.config.broker_id
    })
}

/// What the manager and a fetch task share.
struct Fetcher {
    parts: RefCell<Vec<Part>>,
    stopped: Cell<bool>,
}

/// Keeps one fetch task per leader this shard follows, each with the partitions it follows
/// that leader for, as metadata changes.
pub(super) async fn manage(shard: Rc<Shard>, endpoint: Rc<Endpoint>) {
    let mut fetchers: BTreeMap<u32, Rc<Fetcher>> = BTreeMap::new();
    loop {
        let changed = shard.snapshot_changed();
        if shard.shutdown.is_set() {
            for f in fetchers.values() {
                f.stopped.set(true);
            }
            return;
        }
        let want = wanted(&shard);
        for (leader, parts) in &want {
            let f = fetchers.entry(*leader).or_insert_with(|| {
                let f = Rc::new(Fetcher {
                    parts: RefCell::new(Vec::new()),
                    stopped: Cell::new(false),
                });
                glommio::spawn_local(fetch_loop(
                    shard.clone(),
                    endpoint.clone(),
                    *leader,
                    f.clone(),
                ))
                .detach();
                f
            });
            *f.parts.borrow_mut() = parts.clone();
        }
        fetchers.retain(|leader, f| {
            let keep = want.contains_key(leader);
            if !keep {
                f.stopped.set(true);
            }
            keep
        });
        futures_lite::future::or(
            async {
                let _ = changed.await;
            },
            glommio::timer::sleep(RECONCILE_EVERY),
        )
        .await;
    }
}

/// The partitions this shard follows, by leader: replicas it owns whose leader is another,
/// live broker.
fn wanted(shard: &Shard) -> BTreeMap<u32, Vec<Part>> {
    let snapshot = shard.snapshot();
    let names: HashMap<u128, &str> = snapshot
        .topics
        .values()
        .map(|t| (t.id, t.meta.name.as_str()))
        .collect();
    let mut out: BTreeMap<u32, Vec<Part>> = BTreeMap::new();
    for (key, r) in shard.replica_states() {
        let role = r.role();
        if role.leader == snapshot.me || role.leader == 0 || !snapshot.is_live(role.leader) {
            continue;
        }
        let Some(name) = names.get(&{ key.topic_id }) else {
            continue;
        };
        out.entry(role.leader).or_default().push(Part {
            key,
            topic: name.to_string(),
            partition: key.partition,
            leader: role.leader,
            leader_epoch: role.leader_epoch,
        });
    }
    out
}

async fn fetch_loop(shard: Rc<Shard>, endpoint: Rc<Endpoint>, leader: u32, f: Rc<Fetcher>) {
    let me = shard.config.broker_id;
    let mut conn: Option<ClientConnection> = None;
    let mut warned = false;
    // The epoch of each log's last batch, known since this task's last append or truncation
    // in the partition's current leader epoch (in another, another task or this broker as
    // leader may have changed the log: it is read from the log again).
    let mut last_epochs: HashMap<(PartKey, u32), Option<LeaderEpoch>> = HashMap::new();
    // Partitions the leader refused, sitting out until metadata changes or a pause passes.
    let mut benched: Vec<PartKey> = Vec::new();
    let mut bench_version = shard.snapshot().version;
    let mut benched_at = std::time::Instant::now();
    while !f.stopped.get() && !shard.shutdown.is_set() {
        let version = shard.snapshot().version;
        if version != bench_version || benched_at.elapsed() >= BENCH_PAUSE {
            benched.clear();
            bench_version = version;
        }
        let parts: Vec<Part> = f
            .parts
            .borrow()
            .iter()
            .filter(|p| !benched.contains(&p.key))
            .cloned()
            .collect();
        if parts.is_empty() {
            let changed = shard.snapshot_changed();
            futures_lite::future::or(
                async {
                    let _ = changed.await;
                },
                glommio::timer::sleep(RETRY_PAUSE),
            )
            .await;
            continue;
        }
        if conn.is_none() {
            let Some(addr) = shard.snapshot().brokers.get(&leader).map(|b| PeerAddr {
                host: b.host.clone(),
                port: b.port,
            }) else {
                glommio::timer::sleep(RETRY_PAUSE).await;
                continue;
            };
            match dial(&endpoint, &addr).await {
                Ok(c) => {
                    if warned {
                        tracing::info!(leader, "replication: leader reachable again");
                    }
                    warned = false;
                    conn = Some(c);
                }
                Err(why) => {
                    if !warned {
                        tracing::warn!(leader, host = %addr.host, port = addr.port, error = %why, "replication: cannot reach the leader; retrying");
                        warned = true;
                    }
                    glommio::timer::sleep(RETRY_PAUSE).await;
                    continue;
                }
            }
        }
        // The request: every partition from its log's end.
        let mut asked: Vec<Part> = Vec::with_capacity(parts.len());
        let mut topics: BTreeMap<String, Vec<ReplicaFetchPartition>> = BTreeMap::new();
        for p in parts {
            let Ok(log) = shard.log(&p.key) else {
                continue;
            };
            let last = match last_epochs.get(&(p.key, p.leader_epoch)) {
                Some(e) => *e,
                None => match log.last_epoch().await {
                    Ok(e) => {
                        last_epochs.retain(|(k, _), _| *k != p.key);
                        last_epochs.insert((p.key, p.leader_epoch), e);
                        e
                    }
                    Err(e) => {
                        tracing::warn!(topic = %p.topic, partition = p.partition.0, error = %e, "replication: reading the log's last epoch failed");
                        continue;
                    }
                },
            };
            topics
                .entry(p.topic.clone())
                .or_default()
                .push(ReplicaFetchPartition {
                    partition: p.partition,
                    current_leader_epoch: LeaderEpoch(p.leader_epoch),
                    fetch_offset: log.end_offset(),
                    last_fetched_epoch: last,
                    log_start_offset: log.start_offset(),
                    partition_max_bytes: PARTITION_BYTES_MAX,
                });
            asked.push(p);
        }
        if asked.is_empty() {
            glommio::timer::sleep(RETRY_PAUSE).await;
            continue;
        }
        let request = ReplicaFetchRequest {
            replica_id: BrokerId(me),
            broker_epoch: shard.snapshot().brokers.get(&me).map_or(0, |b| b.epoch),
            max_wait_ms: FETCH_WAIT.as_millis() as u32,
            min_bytes: 1,
            max_bytes: FETCH_BYTES_MAX,
            topics: topics
                .into_iter()
                .map(|(name, partitions)| ReplicaFetchTopic { name, partitions })
                .collect(),
        };
        let c = conn.as_ref().expect("connected above");
        let asked_at = std::time::Instant::now();
        let (resp, payload) = match call(c, request).await {
            Ok(r) => {
                tracing::trace!(
                    leader,
                    partitions = asked.len(),
                    bytes = r.1.len(),
                    took_ms = asked_at.elapsed().as_millis() as u64,
                    "replication: fetched"
                );
                r
            }
            Err(why) => {
                tracing::debug!(leader, error = %why, "replication: fetch failed; redialing");
                if let Some(c) = conn.take() {
                    c.close("replica fetch failed");
                }
                glommio::timer::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        if resp.error_code != ErrorCode::None {
            if !warned {
                tracing::warn!(leader, code = ?resp.error_code, "replication: the leader refused the fetch");
                warned = true;
            }
            glommio::timer::sleep(RETRY_PAUSE).await;
            continue;
        }
        // Apply every partition's answer, concurrently (each waits for its own durability).
        let mut work = Vec::new();
        // Indexed once: a follower may fetch 100,000 partitions from one leader.
        let by_name: HashMap<(&str, quiver_proto::PartitionId), &Part> = asked
            .iter()
            .map(|p| ((&*p.topic, p.partition), p))
            .collect();
        for t in resp.topics {
            for pr in t.partitions {
                let Some(p) = by_name.get(&(t.name.as_str(), pr.partition)).copied() else {
                    continue;
                };
                let sent = last_epochs.get(&(p.key, p.leader_epoch)).copied().flatten();
                work.push(apply(&shard, p.clone(), sent, pr, &payload));
            }
        }
        for (key, outcome) in futures_util::future::join_all(work).await {
            match outcome {
                Outcome::Appended(e) => {
                    last_epochs.insert(key, Some(e));
                }
                Outcome::Unchanged | Outcome::Superseded => {}
                Outcome::Truncated | Outcome::Failed => {
                    last_epochs.remove(&key);
                }
                Outcome::Refused => {
                    if benched.is_empty() {
                        benched_at = std::time::Instant::now();
                    }
                    benched.push(key.0);
                }
            }
        }
    }
    if let Some(c) = conn {
        c.close("no longer following this leader");
    }
}

/// What one partition's answer did.
enum Outcome {
    /// Batches appended; the last one's epoch.
    Appended(LeaderEpoch),
    Unchanged,
    Truncated,
    /// The leader refused the partition (metadata must change first).
    Refused,
    /// Leadership moved while the answer was on its way: it was dropped, the log untouched.
    Superseded,
    Failed,
}

async fn apply(
    shard: &Shard,
    p: Part,
    sent_epoch: Option<LeaderEpoch>,
    pr: ReplicaFetchPartitionResponse,
    payload: &Bytes,
) -> ((PartKey, u32), Outcome) {
    let key = (p.key, p.leader_epoch);
    let outcome = apply_one(shard, &p, sent_epoch, pr, payload).await;
    (key, outcome)
}

/// The leader no longer holds the offset this follower fetches from (retention deleted it
/// there, as for a replica added by a reassignment or one away for long): below `leader_start`
/// this log holds nothing the leader still has, so it is emptied and starts again at the
/// leader's log start (`PartitionLog::restart_at`), and the next fetch copies from there.
async fn restart_past(shard: &Shard, p: &Part, leader_start: Offset) -> Outcome {
    if !still_follows(shard, p) {
        return Outcome::Superseded;
    }
    let Ok(log) = shard.log(&p.key) else {
        return Outcome::Failed;
    };
    if log.end_offset() >= leader_start {
        tracing::warn!(topic = %p.topic, partition = p.partition.0, end = log.end_offset().0, leader_start = leader_start.0, "replication: the leader says out of range, yet this log reaches its start");
        return Outcome::Refused;
    }
    tracing::info!(topic = %p.topic, partition = p.partition.0, end = log.end_offset().0, leader_start = leader_start.0, "replication: this log ends below the leader's log start; starting again there");
    match log.restart_at(leader_start).await {
        Ok(_) => Outcome::Truncated,
        Err(e) => {
            tracing::error!(topic = %p.topic, partition = p.partition.0, error = %e, "replication: starting the log again failed");
            Outcome::Failed
        }
    }
}

async fn apply_one(
    shard: &Shard,
    p: &Part,
    sent_epoch: Option<LeaderEpoch>,
    pr: ReplicaFetchPartitionResponse,
    payload: &Bytes,
) -> Outcome {
    match pr.error_code {
        ErrorCode::None => {}
        ErrorCode::NotLeaderOrFollower
        | ErrorCode::FencedLeaderEpoch
        | ErrorCode::UnknownLeaderEpoch
        | ErrorCode::ReplicaNotAvailable
        | ErrorCode::UnknownTopicOrPartition => {
            tracing::debug!(topic = %p.topic, partition = p.partition.0, code = ?pr.error_code, "replication: the leader refused the partition; it sits out a moment");
            return Outcome::Refused;
        }
        ErrorCode::OffsetOutOfRange => return restart_past(shard, p, pr.log_start_offset).await,
        code => {
            tracing::warn!(topic = %p.topic, partition = p.partition.0, ?code, "replication: the leader could not serve the partition");
            return Outcome::Refused;
        }
    }
    if !still_follows(shard, p) {
        return Outcome::Superseded;
    }
    let Ok(log) = shard.log(&p.key) else {
        return Outcome::Failed;
    };
    if let Some(r) = shard.replica_state(&p.key) {
        r.learn_high_watermark(pr.high_watermark);
    }
    if let Some(d) = pr.diverging_epoch {
        // Cut back to where the leader's epoch ends, or to where this log's own copy of that
        // epoch ends if sooner (it may hold later epochs the leader never had).
        let local = match log.epoch_end(d.epoch).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(topic = %p.topic, partition = p.partition.0, error = %e, "replication: reading epochs failed");
                return Outcome::Failed;
            }
        };
        if !still_follows(shard, p) {
            return Outcome::Superseded;
        }
        let to = local
            .map_or(log.start_offset(), |(_, end)| end)
            .min(d.end_offset);
        tracing::info!(
            topic = %p.topic,
            partition = p.partition.0,
            from = log.end_offset().0,
            to = to.0,
            last_epoch_sent = ?sent_epoch.map(|e| e.0),
            leader_epoch_end = ?(d.epoch.0, d.end_offset.0),
            local_epoch_end = ?local.map(|(e, o)| (e.0, o.0)),
            "replication: log diverged from the leader's; truncating"
        );
        return match log.truncate(to.max(log.start_offset())).await {
            Ok(_) => Outcome::Truncated,
            Err(e) => {
                tracing::error!(topic = %p.topic, partition = p.partition.0, error = %e, "replication: truncation failed");
                Outcome::Failed
            }
        };
    }
    let bytes = match pr.records.slice(payload) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(topic = %p.topic, partition = p.partition.0, error = %e, "replication: the leader's answer points outside its payload");
            return Outcome::Failed;
        }
    };
    if bytes.is_empty() {
        return Outcome::Unchanged;
    }
    let limits = BatchLimits {
        batch_bytes_max: batch::BATCH_BYTES_MAX,
        ..BatchLimits::default()
    };
    let mut batches = Vec::new();
    let mut pos = 0usize;
    for b in BatchIter::new(&bytes) {
        let valid = b.map_err(|e| e.to_string()).and_then(|b| {
            let len = b.len();
            let v = ValidBatch::new(bytes.slice(pos..pos + len), limits).map_err(|e| e.to_string());
            pos += len;
            v
        });
        match valid {
            Ok(v) => batches.push(v),
            Err(why) => {
                tracing::error!(topic = %p.topic, partition = p.partition.0, error = %why, "replication: a batch from the leader failed its check; not appended");
                break;
            }
        }
    }
    let Some(last) = batches
        .last()
        .map(|b| LeaderEpoch(batch::header(b.bytes()).map_or(0, |h| h.leader_epoch.get())))
    else {
        return Outcome::Failed;
    };
    let n: u64 = batches.iter().map(|b| b.len() as u64).sum();
    match log
        .append_replica(&batches, &|| still_follows(shard, p))
        .await
    {
        Ok(_) => {
            shard.metrics.replica_bytes_in.fetch_add(n, Relaxed);
            Outcome::Appended(last)
        }
        Err(quiver_engine::Error::Superseded) => Outcome::Superseded,
        Err(e) => {
            tracing::warn!(topic = %p.topic, partition = p.partition.0, error = %e, "replication: append failed");
            Outcome::Failed
        }
    }
}

/// One ReplicaFetch call: the answer and its payload.
async fn call(
    conn: &ClientConnection,
    request: ReplicaFetchRequest,
) -> Result<(ReplicaFetchResponse, Bytes), String> {
    let header = FrameHeader {
        api_key: ApiKey::ReplicaFetch.as_u16(),
        api_version: 0,
        correlation_id: 0,
        flags: 0,
    };
    let frame = conn
        .call(header, request.encode_bytes(), Vec::new())
        .await
        .map_err(|e| e.to_string())?;
    if frame.header.is_error_response() {
        let e = quiver_proto::api::ErrorResponse::decode(&frame.body).map_err(|e| e.to_string())?;
        return Err(format!(
            "error response {:?}: {}",
            e.error_code,
            e.message.unwrap_or_default()
        ));
    }
    let resp = ReplicaFetchResponse::decode(&frame.body).map_err(|e| e.to_string())?;
    Ok((resp, frame.payload))
}
