//! Consumer groups: the coordinator and committed offsets.
//!
//! # Where a group lives
//! A group's committed offsets are records in the internal topic `__consumer_offsets`, in
//! partition `crc32(group id) % partitions`. The shard that owns that partition coordinates the
//! group: it keeps the group's membership (`state::Group`) and an in-memory map of its latest
//! offsets, and it alone appends the group's records. A group request that reaches another shard
//! is forwarded over the mesh (`ShardMsg::Group`), so a group's state is touched by one core only.
//!
//! # Durability
//! A commit is answered after its records are appended to the offsets partition and durable
//! (the topic uses the default sync-before-acknowledge policy); on start, each shard replays
//! its offsets partitions to rebuild the map (latest record per key wins, a tombstone deletes),
//! answering `CoordinatorLoadInProgress` until that is done. Membership is kept in memory only:
//! after a broker restart members are unknown, rejoin with epoch 0, and are assigned afresh; the
//! offsets they resume from are the committed ones. Zombies from before the restart are unknown
//! members and cannot commit.
//!
//! # Expiry
//! Offsets of a group with no members are deleted (tombstones) once the group has been empty
//! for `offsets_retention_ms`, judged from its last commit when the broker has not seen it
//! empty since its start.
//!
//! `__consumer_offsets` keeps its segments forever (retention.ms=-1): nothing compacts it yet, so
//! deleting old segments would lose the latest offset of a group that stopped committing. It
//! grows with commits; compaction is future work (see the issue notes).

pub mod records;
pub mod state;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quiver_engine::PartitionLog;
use quiver_proto::api::common::TopicPartitions;
use quiver_proto::api::group::{
    Assignment, ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse,
    DeletableGroupResult, DescribedGroup, DescribedGroupMember, GroupState, GroupType, ListedGroup,
    OffsetCommitPartitionResponse, OffsetCommitRequest, OffsetCommitResponse,
    OffsetCommitTopicResponse, OffsetFetchPartition, OffsetFetchRequest, OffsetFetchResponse,
    OffsetFetchTopic,
};
use quiver_proto::batch::{
    BatchBuilder, BatchIter, BatchLimits, BatchView, Compression, ValidBatch,
};
use quiver_proto::{ErrorCode, LeaderEpoch, Offset, PartitionId, TimestampMs};

use self::records::{OffsetKey, OffsetValue, METADATA_BYTES_MAX};
use self::state::{Assignor, Group, HeartbeatIn, Settings, State, Tp};

/// The internal topic that holds committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Longest group id accepted.
pub const GROUP_ID_BYTES_MAX: usize = 255;

/// The offsets partition of a group.
pub fn offsets_partition(group: &str, partitions: u32) -> PartitionId {
    PartitionId(crc32fast::hash(group.as_bytes()) % partitions.max(1))
}

pub fn check_group_id(group: &str) -> Result<(), (ErrorCode, String)> {
    if group.is_empty() || group.len() > GROUP_ID_BYTES_MAX || group.chars().any(char::is_control) {
        return Err((ErrorCode::InvalidGroupId, format!("group id '{group}' must be 1 to {GROUP_ID_BYTES_MAX} bytes without control characters")));
    }
    Ok(())
}

/// Records of `__consumer_offsets` that replay could not decode and skipped, since start (all
/// shards). Reported as `quiver_offsets_replay_skipped_records_total`.
pub static OFFSETS_RECORDS_SKIPPED: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);
/// Ranges of `__consumer_offsets` replay could not read (corrupt batches), since start.
pub static OFFSETS_RANGES_SKIPPED: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);

/// What one partition's replay skipped.
#[derive(Default)]
struct Skipped {
    records: u64,
    ranges: u64,
}

impl Skipped {
    fn note(&mut self, partition: PartitionId, offset: Offset, why: &str) {
        self.records += 1;
        // The first few are logged with their offset; the count says the rest.
        if self.records <= 10 {
            tracing::error!(partition = partition.0, offset = offset.0, %why, "__consumer_offsets: skipping a record replay cannot decode");
        }
    }
}

/// Offset commits written to the offsets partition's log, not visible yet
/// ([`Coordinator::apply_pending`] makes them so).
pub struct PendingCommit {
    entries: Vec<(OffsetKey, Option<OffsetValue>)>,
    /// The log offset of the first.
    base: u64,
}

struct Committed {
    value: OffsetValue,
    /// Position of the record in the offsets log: a later record never loses to an earlier one
    /// whose commit task happened to finish last.
    log_offset: u64,
}

#[derive(Default)]
struct GroupOffsets {
    by_tp: BTreeMap<Tp, Committed>,
    last_commit_ms: i64,
}

/// A shard's part of group coordination: the groups whose offsets partitions it owns.
pub struct Coordinator {
    settings: Settings,
    heartbeat_interval_ms: u32,
    offsets_retention_ms: i64,
    groups: RefCell<HashMap<String, Group>>,
    offsets: RefCell<HashMap<String, GroupOffsets>>,
    /// Offsets partitions replayed on this shard.
    loaded: RefCell<HashSet<u32>>,
    /// Leader epochs of the offsets partitions, in a cluster (`set_leader_epoch`).
    epochs: RefCell<HashMap<u32, u32>>,
    /// One lock per group, held by every request on the group (heartbeat, commit, offset
    /// fetch, delete) for its whole duration. Rationale: a commit checks the member, awaits the
    /// durable write, then applies it; without the lock a join or takeover and an offset fetch
    /// could run in that await, so the new owner could read the old offset while the fenced
    /// owner's commit still landed after it, and the committed offset would go backwards.
    locks: RefCell<HashMap<String, Rc<glommio::sync::Semaphore>>>,
}

/// Held while a request works on one group.
pub struct GroupLock(#[allow(dead_code)] glommio::sync::StaticPermit);

/// Where a group's requests go: the owning shard, and the offsets partition's key there.
pub type Route = (quiver_proto::ShardId, crate::cluster::state::PartKey);

impl Coordinator {
    pub fn new(config: &crate::config::Config) -> Coordinator {
        Coordinator {
            settings: Settings {
                session_timeout: Duration::from_millis(config.group_session_timeout_ms),
                default_rebalance_timeout: Duration::from_millis(config.group_rebalance_timeout_ms),
                default_assignor: Assignor::parse(&config.group_assignor)
                    .unwrap_or(Assignor::Sticky),
            },
            heartbeat_interval_ms: config.group_heartbeat_interval_ms.min(u64::from(u32::MAX))
                as u32,
            offsets_retention_ms: config.offsets_retention_ms,
            groups: RefCell::new(HashMap::new()),
            offsets: RefCell::new(HashMap::new()),
            loaded: RefCell::new(HashSet::new()),
            epochs: RefCell::new(HashMap::new()),
            locks: RefCell::new(HashMap::new()),
        }
    }

    /// Waits for, then holds, the group's lock (see `locks`).
    pub async fn lock(&self, group: &str) -> GroupLock {
        let sem = self
            .locks
            .borrow_mut()
            .entry(group.to_string())
            .or_insert_with(|| Rc::new(glommio::sync::Semaphore::new(1)))
            .clone();
        GroupLock(
            sem.acquire_static_permit(1)
                .await
                .expect("group locks are never closed"),
        )
    }

    /// Forgets the locks of groups that are gone and not in use.
    pub fn forget_lock(&self, group: &str) {
        let mut locks = self.locks.borrow_mut();
        if locks
            .get(group)
            .is_some_and(|s| Rc::strong_count(s) == 1 && s.available() == 1)
        {
            locks.remove(group);
        }
    }

    /// Marks a partition's offsets as not loaded (its groups' requests wait for `load`).
    pub fn unload(&self, partition: PartitionId) {
        self.loaded.borrow_mut().remove(&partition.0);
    }

    fn check_loaded(&self, partition: PartitionId) -> Result<(), (ErrorCode, String)> {
        if self.loaded.borrow().contains(&partition.0) {
            Ok(())
        } else {
            Err((
                ErrorCode::CoordinatorLoadInProgress,
                "the group's offsets are still being loaded".into(),
            ))
        }
    }

    /// Replays one offsets partition into memory. Runs once per partition, when its log opens.
    ///
    /// Every step moves forward: a batch whose records cannot be decoded, or a record whose key
    /// or value cannot, is skipped, counted and logged, and replay goes on after it (a batch's
    /// header says where it ends). A range the engine will not serve (a corrupt batch) is
    /// skipped when the engine knows where good data resumes; otherwise replay stops there, with
    /// what it has. Either way the coordinator starts: one bad record must not keep a broker
    /// from starting, and groups whose offsets were elsewhere are unaffected.
    pub async fn load(&self, partition: PartitionId, log: Rc<PartitionLog>) {
        let started = Instant::now();
        let mut next = log.start_offset();
        let end = log.readable_end();
        let mut records = 0u64;
        let mut skipped = Skipped::default();
        while next < end {
            let bytes = match log.read(next, 1 << 20).await {
                Ok(b) if !b.is_empty() => b,
                Ok(_) => break,
                Err(quiver_engine::Error::Corrupt {
                    resume_at: Some(resume),
                    ..
                }) if resume > next => {
                    tracing::error!(
                        partition = partition.0,
                        from = next.0,
                        to = resume.0,
                        "__consumer_offsets: skipping a corrupt range the engine will not serve"
                    );
                    skipped.ranges += 1;
                    next = resume;
                    continue;
                }
                Err(e) => {
                    // Not served as data (the engine refuses corrupt batches), and where good data
                    // resumes is unknown: what was read so far stands.
                    tracing::error!(partition = partition.0, offset = next.0, error = %e, "reading __consumer_offsets failed; later commits in this partition were not loaded");
                    skipped.ranges += 1;
                    break;
                }
            };
            let before = next;
            for batch in BatchIter::new(&bytes) {
                let Ok(batch) = batch else { break };
                // The engine served it, so its header and CRC are good: its offsets are known.
                let Ok(view) = BatchView::new(batch, BatchLimits::default()) else {
                    break;
                };
                let after = view.last_offset().plus(1);
                if after <= next {
                    continue;
                }
                match view.records() {
                    Ok(recs) => {
                        for r in recs.iter() {
                            let r = match r {
                                Ok(r) => r,
                                Err(e) => {
                                    skipped.note(partition, next, &format!("record: {e}"));
                                    break;
                                }
                            };
                            if r.offset < next {
                                continue;
                            }
                            next = r.offset.plus(1);
                            records += 1;
                            let key = match r.key.map(records::decode_key) {
                                Some(Ok(k)) => k,
                                other => {
                                    let why = match other {
                                        Some(Err(e)) => e,
                                        _ => "no key".to_string(),
                                    };
                                    skipped.note(partition, r.offset, &format!("key: {why}"));
                                    continue;
                                }
                            };
                            let value = match r.value.map(records::decode_value) {
                                None => None,
                                Some(Ok(v)) => Some(v),
                                Some(Err(e)) => {
                                    skipped.note(partition, r.offset, &format!("value: {e}"));
                                    continue;
                                }
                            };
                            self.apply_record(key, value, r.offset.0);
                        }
                    }
                    Err(e) => skipped.note(partition, view.base_offset(), &format!("batch: {e}")),
                }
                // Past this batch, whatever its records held.
                next = next.max(after);
            }
            if next == before {
                // Nothing in what was read could be framed: do not read it again.
                tracing::error!(partition = partition.0, offset = next.0, "__consumer_offsets: bytes read could not be framed as batches; replay of this partition stops here");
                skipped.ranges += 1;
                break;
            }
        }
        self.loaded.borrow_mut().insert(partition.0);
        if skipped.records > 0 || skipped.ranges > 0 {
            OFFSETS_RECORDS_SKIPPED
                .fetch_add(skipped.records, std::sync::atomic::Ordering::Relaxed);
            OFFSETS_RANGES_SKIPPED.fetch_add(skipped.ranges, std::sync::atomic::Ordering::Relaxed);
        }
        tracing::info!(
            partition = partition.0,
            records,
            skipped_records = skipped.records,
            skipped_ranges = skipped.ranges,
            groups = self.offsets.borrow().len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded committed offsets"
        );
    }

    fn apply_record(&self, key: OffsetKey, value: Option<OffsetValue>, log_offset: u64) {
        let mut offsets = self.offsets.borrow_mut();
        let tp = (key.topic, key.partition);
        match value {
            Some(value) => {
                let g = offsets.entry(key.group).or_default();
                g.last_commit_ms = g.last_commit_ms.max(value.commit_ms);
                match g.by_tp.get(&tp) {
                    Some(c) if c.log_offset > log_offset => {}
                    _ => {
                        g.by_tp.insert(tp, Committed { value, log_offset });
                    }
                }
            }
            None => {
                if let Some(g) = offsets.get_mut(&key.group) {
                    if g.by_tp.get(&tp).is_some_and(|c| c.log_offset < log_offset) {
                        g.by_tp.remove(&tp);
                    }
                    if g.by_tp.is_empty() {
                        offsets.remove(&key.group);
                    }
                }
            }
        }
    }

    /// In a cluster: the leader epoch of an offsets partition this broker leads, stamped on
    /// what the coordinator writes there (as on every leader's append), so followers find
    /// where their copy diverges.
    pub fn set_leader_epoch(&self, partition: PartitionId, epoch: u32) {
        self.epochs.borrow_mut().insert(partition.0, epoch);
    }

    /// Appends offset records (a `None` value is a tombstone) durably, then applies them.
    async fn write(
        &self,
        log: &PartitionLog,
        partition: PartitionId,
        entries: Vec<(OffsetKey, Option<OffsetValue>)>,
    ) -> Result<(), (ErrorCode, String)> {
        if let Some(pending) = self.append(log, partition, entries).await? {
            self.apply_pending(pending);
        }
        Ok(())
    }

    /// Makes offset commits written by [`commit`](Self::commit) visible (OffsetFetch, the
    /// group's state): in a cluster once the offsets partition's in-sync replicas hold them, so
    /// a committed offset that readers saw never goes back after a failover. Commits applied
    /// out of order are sorted by their log offsets.
    pub fn apply_pending(&self, pending: PendingCommit) {
        for (i, (k, v)) in pending.entries.into_iter().enumerate() {
            self.apply_record(k, v, pending.base + i as u64);
        }
    }

    /// Appends `entries` to the offsets partition's log (not applied yet).
    async fn append(
        &self,
        log: &PartitionLog,
        partition: PartitionId,
        entries: Vec<(OffsetKey, Option<OffsetValue>)>,
    ) -> Result<Option<PendingCommit>, (ErrorCode, String)> {
        if entries.is_empty() {
            return Ok(None);
        }
        let now = TimestampMs(crate::now_ms());
        let mut builder = BatchBuilder::new(Compression::None);
        for (k, v) in &entries {
            let key = records::encode_key(k);
            let value = v.as_ref().map(records::encode_value);
            builder
                .append(now, Some(&key), value.as_deref(), &[])
                .map_err(|e| (ErrorCode::InvalidRecord, e.to_string()))?;
        }
        let bytes: Bytes = builder
            .finish()
            .map_err(|e| (ErrorCode::InvalidRecord, e.to_string()))?;
        let batch = ValidBatch::new(bytes, BatchLimits::default())
            .map_err(|e| (ErrorCode::InvalidRecord, e.to_string()))?;
        let epoch = self
            .epochs
            .borrow()
            .get(&partition.0)
            .map(|e| quiver_proto::LeaderEpoch(*e));
        let info = log.append(&[batch], epoch).await.map_err(|e| {
            tracing::error!(error = %e, "writing __consumer_offsets failed");
            let code = if matches!(e, quiver_engine::Error::DiskFull { .. }) {
                ErrorCode::DiskFull
            } else {
                ErrorCode::CoordinatorNotAvailable
            };
            (code, e.to_string())
        })?;
        Ok(Some(PendingCommit {
            entries,
            base: info.base_offset.0,
        }))
    }

    pub fn heartbeat(
        &self,
        req: ConsumerGroupHeartbeatRequest,
        client_host: String,
        principal: String,
        partitions: &dyn Fn(&str) -> Option<u32>,
        offsets_partition: PartitionId,
    ) -> ConsumerGroupHeartbeatResponse {
        let fail = |(code, message): (ErrorCode, String)| ConsumerGroupHeartbeatResponse {
            error_code: code,
            error_message: Some(message),
            member_id: Some(req.member_id.clone()),
            ..Default::default()
        };
        if let Err(e) =
            check_group_id(&req.group_id).and_then(|_| self.check_loaded(offsets_partition))
        {
            return fail(e);
        }
        let now = Instant::now();
        let hb = HeartbeatIn {
            member_id: req.member_id.clone(),
            member_epoch: req.member_epoch,
            instance_id: req.instance_id.clone(),
            rebalance_timeout: req
                .rebalance_timeout_ms
                .map(|ms| Duration::from_millis(u64::from(ms))),
            subscribed: req.subscribed_topic_names.clone(),
            assignor: req.server_assignor.clone(),
            owned: req.topic_partitions.as_ref().map(|tps| {
                tps.iter()
                    .flat_map(|t| t.partitions.iter().map(move |p| (t.topic.clone(), p.0)))
                    .collect()
            }),
            client_host,
            principal,
        };
        let mut groups = self.groups.borrow_mut();
        let group = groups
            .entry(req.group_id.clone())
            .or_insert_with(|| Group::new(&req.group_id, &self.settings, now));
        match group.heartbeat(hb, now, &self.settings, partitions) {
            Ok(out) => {
                if out.member_epoch == -1 || out.assignment.is_some() {
                    tracing::debug!(group = %req.group_id, member = %out.member_id, epoch = out.member_epoch, assignment = ?out.assignment, "group member update");
                }
                ConsumerGroupHeartbeatResponse {
                    error_code: ErrorCode::None,
                    member_id: Some(out.member_id),
                    member_epoch: out.member_epoch,
                    heartbeat_interval_ms: self.heartbeat_interval_ms,
                    assignment: out.assignment.map(|tps| Assignment {
                        topic_partitions: group_tps(tps.iter()),
                    }),
                    ..Default::default()
                }
            }
            Err(e) => fail(e),
        }
    }

    pub async fn commit(
        &self,
        log: &PartitionLog,
        req: OffsetCommitRequest,
        principal: &str,
        exists: &dyn Fn(&str, u32) -> bool,
        offsets_partition: PartitionId,
    ) -> (OffsetCommitResponse, Option<PendingCommit>) {
        let check = check_group_id(&req.group_id)
            .and_then(|_| self.check_loaded(offsets_partition))
            .and_then(|_| match self.groups.borrow().get(&req.group_id) {
                Some(g) => {
                    g.check_commit(&req.member_id, req.generation_id_or_member_epoch, principal)
                }
                None if req.member_id.is_empty() => Ok(()),
                None => Err((
                    ErrorCode::UnknownMemberId,
                    format!(
                        "member '{}' is not in group '{}'",
                        req.member_id, req.group_id
                    ),
                )),
            });
        let now = crate::now_ms();
        let mut entries = Vec::new();
        let mut topics = Vec::with_capacity(req.topics.len());
        for t in &req.topics {
            let mut partitions = Vec::with_capacity(t.partitions.len());
            for p in &t.partitions {
                let code = match &check {
                    Err((code, _)) => *code,
                    Ok(()) if !exists(&t.name, p.partition.0) => ErrorCode::UnknownTopicOrPartition,
                    Ok(())
                        if p.committed_metadata
                            .as_ref()
                            .is_some_and(|m| m.len() > METADATA_BYTES_MAX) =>
                    {
                        ErrorCode::OffsetMetadataTooLarge
                    }
                    Ok(()) => {
                        entries.push((
                            OffsetKey {
                                group: req.group_id.clone(),
                                topic: t.name.clone(),
                                partition: p.partition.0,
                            },
                            Some(OffsetValue {
                                offset: p.committed_offset.0,
                                leader_epoch: p.committed_leader_epoch.map(|e| e.0),
                                commit_ms: now,
                                metadata: p.committed_metadata.clone().unwrap_or_default(),
                            }),
                        ));
                        ErrorCode::None
                    }
                };
                partitions.push(OffsetCommitPartitionResponse {
                    partition: p.partition,
                    error_code: code,
                });
            }
            topics.push(OffsetCommitTopicResponse {
                name: t.name.clone(),
                partitions,
            });
        }
        let pending = match self.append(log, offsets_partition, entries).await {
            Ok(pending) => pending,
            Err((code, message)) => {
                tracing::warn!(group = %req.group_id, error = %message, "offset commit failed");
                for t in &mut topics {
                    for p in &mut t.partitions {
                        if p.error_code == ErrorCode::None {
                            p.error_code = code;
                        }
                    }
                }
                None
            }
        };
        let resp = OffsetCommitResponse {
            throttle_time_ms: 0,
            topics,
        };
        (resp, pending)
    }

    pub fn fetch(
        &self,
        req: &OffsetFetchRequest,
        principal: &str,
        offsets_partition: PartitionId,
    ) -> OffsetFetchResponse {
        if let Err((code, _)) =
            check_group_id(&req.group_id).and_then(|_| self.check_loaded(offsets_partition))
        {
            return OffsetFetchResponse {
                error_code: code,
                ..Default::default()
            };
        }
        if let Some(member) = req.member_id.as_deref().filter(|m| !m.is_empty()) {
            if let Some(g) = self.groups.borrow().get(&req.group_id) {
                if let Err((code, _)) = g.check_commit(member, req.member_epoch, principal) {
                    return OffsetFetchResponse {
                        error_code: code,
                        ..Default::default()
                    };
                }
            }
        }
        let offsets = self.offsets.borrow();
        let committed = offsets.get(&req.group_id);
        let entry = |topic: &str, p: u32| {
            let c = committed.and_then(|g| g.by_tp.get(&(topic.to_string(), p)));
            OffsetFetchPartition {
                partition: PartitionId(p),
                committed_offset: c.map(|c| Offset(c.value.offset)),
                committed_leader_epoch: c.and_then(|c| c.value.leader_epoch).map(LeaderEpoch),
                metadata: c.map(|c| c.value.metadata.clone()),
                error_code: ErrorCode::None,
            }
        };
        let topics = match &req.topics {
            Some(wanted) => wanted
                .iter()
                .map(|t| OffsetFetchTopic {
                    name: t.topic.clone(),
                    partitions: t.partitions.iter().map(|p| entry(&t.topic, p.0)).collect(),
                })
                .collect(),
            None => {
                let mut by_topic: BTreeMap<&str, Vec<OffsetFetchPartition>> = BTreeMap::new();
                if let Some(g) = committed {
                    for (topic, p) in g.by_tp.keys() {
                        by_topic
                            .entry(topic.as_str())
                            .or_default()
                            .push(entry(topic, *p));
                    }
                }
                by_topic
                    .into_iter()
                    .map(|(name, partitions)| OffsetFetchTopic {
                        name: name.to_string(),
                        partitions,
                    })
                    .collect()
            }
        };
        OffsetFetchResponse {
            throttle_time_ms: 0,
            error_code: ErrorCode::None,
            topics,
        }
    }

    pub fn describe(&self, group_id: &str) -> DescribedGroup {
        let mut out = DescribedGroup {
            group_id: group_id.to_string(),
            group_type: GroupType::Consumer,
            protocol_type: Some("consumer".into()),
            ..Default::default()
        };
        let groups = self.groups.borrow();
        match groups.get(group_id) {
            Some(g) => {
                out.group_state = wire_state(g.state());
                out.protocol_data = Some(g.assignor.name().to_string());
                out.group_epoch = g.epoch;
                out.assignment_epoch = g.assignment_epoch;
                out.members = g
                    .members
                    .values()
                    .map(|m| DescribedGroupMember {
                        member_id: m.id.clone(),
                        group_instance_id: m.instance_id.clone(),
                        client_host: Some(m.client_host.clone()),
                        member_epoch: m.epoch,
                        subscribed_topic_names: m.subscribed.iter().cloned().collect(),
                        assigned: group_tps(m.assigned.iter()),
                        target_assignment: group_tps(g.target.get(&m.id).into_iter().flatten()),
                        ..Default::default()
                    })
                    .collect();
            }
            None if self.offsets.borrow().contains_key(group_id) => {
                out.group_state = GroupState::Empty;
            }
            None => {
                out.error_code = ErrorCode::GroupIdNotFound;
                out.error_message = Some(format!("group '{group_id}' does not exist"));
                out.group_state = GroupState::Dead;
            }
        }
        out
    }

    pub fn list(&self) -> Vec<ListedGroup> {
        let groups = self.groups.borrow();
        let offsets = self.offsets.borrow();
        let mut ids: Vec<&String> = groups.keys().chain(offsets.keys()).collect();
        ids.sort();
        ids.dedup();
        ids.into_iter()
            .map(|id| ListedGroup {
                group_id: id.clone(),
                protocol_type: Some("consumer".into()),
                group_state: groups
                    .get(id)
                    .map_or(GroupState::Empty, |g| wire_state(g.state())),
                group_type: GroupType::Consumer,
            })
            .collect()
    }

    pub async fn delete(
        &self,
        log: &PartitionLog,
        group_id: &str,
        offsets_partition: PartitionId,
    ) -> DeletableGroupResult {
        let result = |error_code| DeletableGroupResult {
            group_id: group_id.to_string(),
            error_code,
        };
        if let Err((code, _)) =
            check_group_id(group_id).and_then(|_| self.check_loaded(offsets_partition))
        {
            return result(code);
        }
        let has_members = self
            .groups
            .borrow()
            .get(group_id)
            .is_some_and(|g| !g.members.is_empty());
        if has_members {
            return result(ErrorCode::NonEmptyGroup);
        }
        let known = self.groups.borrow().contains_key(group_id)
            || self.offsets.borrow().contains_key(group_id);
        if !known {
            return result(ErrorCode::GroupIdNotFound);
        }
        let tombstones = self.tombstones(group_id);
        if let Err((code, _)) = self.write(log, offsets_partition, tombstones).await {
            return result(code);
        }
        self.groups.borrow_mut().remove(group_id);
        self.offsets.borrow_mut().remove(group_id);
        result(ErrorCode::None)
    }

    fn tombstones(&self, group_id: &str) -> Vec<(OffsetKey, Option<OffsetValue>)> {
        self.offsets
            .borrow()
            .get(group_id)
            .map(|g| {
                g.by_tp
                    .keys()
                    .map(|(topic, p)| {
                        (
                            OffsetKey {
                                group: group_id.to_string(),
                                topic: topic.clone(),
                                partition: *p,
                            },
                            None,
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Removes members past their session or rebalance timeout.
    pub fn expire_members(&self, partitions: &dyn Fn(&str) -> Option<u32>) {
        let now = Instant::now();
        for g in self.groups.borrow_mut().values_mut() {
            for (member, why) in g.expire(now, partitions) {
                tracing::info!(group = %g.id, member = %member, reason = why, "group member removed");
            }
        }
    }

    /// Groups whose offsets expired (empty for `offsets_retention_ms`), with the offsets
    /// partition each lives in, for the caller to delete with `delete_expired`.
    pub fn expired_groups(&self, offsets_partitions: u32) -> Vec<(String, PartitionId)> {
        let now = Instant::now();
        let now_ms = crate::now_ms();
        let retention = Duration::from_millis(self.offsets_retention_ms.max(0) as u64);
        let groups = self.groups.borrow();
        self.offsets
            .borrow()
            .iter()
            .filter(|(id, o)| match groups.get(*id) {
                Some(g) => {
                    g.members.is_empty()
                        && g.empty_since
                            .is_some_and(|t| now.duration_since(t) >= retention)
                }
                None => now_ms - o.last_commit_ms >= self.offsets_retention_ms,
            })
            .map(|(id, _)| (id.clone(), offsets_partition(id, offsets_partitions)))
            .collect()
    }

    pub async fn delete_expired(
        &self,
        log: &PartitionLog,
        group_id: &str,
        offsets_partitions: u32,
    ) {
        let lock = self.lock(group_id).await;
        // Checked again under the lock: a member may have joined, or a commit landed, meanwhile.
        if !self
            .expired_groups(offsets_partitions)
            .iter()
            .any(|(g, _)| g == group_id)
        {
            return;
        }
        let tombstones = self.tombstones(group_id);
        let n = tombstones.len();
        let partition = offsets_partition(group_id, offsets_partitions);
        if self.write(log, partition, tombstones).await.is_ok() {
            self.offsets.borrow_mut().remove(group_id);
            self.groups.borrow_mut().remove(group_id);
            tracing::info!(group = %group_id, partitions = n, "expired the offsets of an empty group");
        }
        drop(lock);
        self.forget_lock(group_id);
    }
}

fn wire_state(s: State) -> GroupState {
    match s {
        State::Empty => GroupState::Empty,
        State::Reconciling => GroupState::Reconciling,
        State::Stable => GroupState::Stable,
    }
}

/// Groups (topic, partition) pairs by topic, in order.
fn group_tps<'a>(tps: impl Iterator<Item = &'a Tp>) -> Vec<TopicPartitions> {
    let mut by_topic: BTreeMap<&str, Vec<PartitionId>> = BTreeMap::new();
    for (t, p) in tps {
        by_topic
            .entry(t.as_str())
            .or_default()
            .push(PartitionId(*p));
    }
    by_topic
        .into_iter()
        .map(|(topic, partitions)| TopicPartitions {
            topic: topic.to_string(),
            partitions,
        })
        .collect()
}
