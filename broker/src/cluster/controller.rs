//! The controller: the one place topics change. It lives on shard 0 and owns the metadata store;
//! admin requests reach it there as closures (`runtime::Shard::run_on`).
//!
//! Call order, one change at a time (a change holds the controller's [`Turn`], so two requests
//! never race on the same topic):
//! 1. `Controller::turn().await`: wait for the turn;
//! 2. `Turn::change(op).await`: check the change and make it durable in the store; returns the
//!    answer for the client and, if metadata changed, the [`Plan`] every shard must apply (the
//!    new snapshot, the topics deleted);
//! 3. the caller applies the plan on every shard (`Shard::broadcast_apply`: each opens or
//!    deletes the logs it owns), then `Turn::finish(&plan)` moves deleted topics' directories to
//!    the paced deleter;
//! 4. the answer goes to the client, so one that created a topic can produce to it at once,
//!    through any shard.
//!
//! The controller knows nothing of shards: it returns what must be applied. The store's writes
//! (a small file written and synced, then its directory) run on glommio's blocking pool, so
//! partitions on shard 0 do not stall during admin changes; the Raft log that replaces the store
//! will run the same way.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use quiver_proto::api::common::{ConfigEntry, TopicResult, Uuid};
use quiver_proto::api::metadata::{
    AlterConfigOp, AlterConfigsResult, AlterPartitionReassignmentsRequest,
    AlterPartitionReassignmentsResponse, ConfigResourceType, CreatableTopic, CreatableTopicResult,
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse, ReassignPartition, ReassignPartitionResult, ReplicaAssignment,
};
use quiver_proto::api::produce::{InitProducerIdRequest, InitProducerIdResponse};
use quiver_proto::api::AnyResponse;
use quiver_proto::ErrorCode;

use super::assign::Placeable;
use super::meta::{new_topic_id, Applied, MetaError, MetadataCommand, PartitionMeta, TopicMeta};
use super::metalog::MetadataLog;
use super::state::{Snapshot, TopicInfo};
use super::topic::{self, TopicConfig, PARTITIONS_PER_TOPIC_MAX};

mod admin_op;
mod security;

pub use admin_op::AdminOp;

/// Producer ids reserved durably at a time: one metadata write per this many producers.
const PRODUCER_ID_BLOCK: u64 = 1000;

/// What the controller refuses to grow past, fixed at start.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Most partitions the broker holds, over all topics.
    pub partitions_max: u64,
    /// What sets `partitions_max`, for the refusal's message (a setting, or the open-file limit).
    pub partitions_max_source: String,
    /// The longest file name the data directory's file system accepts.
    pub file_name_max: usize,
}

/// What every shard must apply after a change: the new snapshot, and the topics it deleted
/// (whose logs each shard closes and hands to the deleter).
#[derive(Clone, Debug)]
pub struct Plan {
    pub snapshot: Arc<Snapshot>,
    pub deleted: Vec<Arc<TopicInfo>>,
}

/// The controller's turn: changes run one at a time, each from `change` to `finish` (see the
/// module's call order).
pub struct Turn {
    controller: Rc<Controller>,
    _permit: glommio::sync::StaticPermit,
}

/// Producer ids handed out so far: every id below this may be in use. Shared by every shard
/// (one process), read on each produce with a producer id and raised by the controller when it
/// hands one out, so a batch naming an id nobody was given is refused before any producer state
/// is made for it.
#[derive(Debug, Default)]
pub struct ProducerIdsIssued(AtomicU64);

impl ProducerIdsIssued {
    pub fn new(below: u64) -> ProducerIdsIssued {
        ProducerIdsIssued(AtomicU64::new(below))
    }

    /// Whether `id` was handed out (by this process, or before its last start).
    pub fn contains(&self, id: i64) -> bool {
        u64::try_from(id).is_ok_and(|id| id < self.0.load(Ordering::Acquire))
    }

    pub(crate) fn raise(&self, below: u64) {
        self.0.fetch_max(below, Ordering::AcqRel);
    }
}

pub struct Controller {
    log: Rc<dyn MetadataLog>,
    /// The snapshot of the last plan (what every shard has applied, or is applying).
    current: RefCell<Arc<Snapshot>>,
    data_dir: PathBuf,
    one_at_a_time: Rc<glommio::sync::Semaphore>,
    defaults: TopicConfig,
    default_partitions: u32,
    /// The next producer id to hand out, below `producer_ids_end`.
    next_producer_id: Cell<u64>,
    /// The end of the block of producer ids this broker holds (a single broker's block always
    /// ends at the state's `producer_ids_reserved`; a cluster's brokers each hold their own).
    producer_ids_end: Cell<u64>,
    producer_ids: Arc<ProducerIdsIssued>,
    limits: Limits,
}

type ItemResult<T> = Result<T, (ErrorCode, String)>;

/// One item's outcome as a response carries it: `None` and no message on success.
fn answer(res: ItemResult<()>) -> (ErrorCode, Option<String>) {
    match res {
        Ok(()) => (ErrorCode::None, None),
        Err((c, m)) => (c, Some(m)),
    }
}

impl Controller {
    /// `producer_ids` must start at the store's `producer_ids_reserved` (every id below it may
    /// have been handed out before this start).
    /// `current` is the snapshot the shards start with (built from the store's state).
    pub fn new(
        log: Rc<dyn MetadataLog>,
        current: Arc<Snapshot>,
        data_dir: PathBuf,
        defaults: TopicConfig,
        default_partitions: u32,
        producer_ids: Arc<ProducerIdsIssued>,
        limits: Limits,
    ) -> Controller {
        // A cluster's broker asks for a block of its own on its first producer.
        let reserved = log.state().producer_ids_reserved;
        let (next, end) = match log.cluster_member() {
            None => (reserved, reserved),
            Some(_) => (0, 0),
        };
        Controller {
            next_producer_id: Cell::new(next),
            producer_ids_end: Cell::new(end),
            log,
            current: RefCell::new(current),
            data_dir,
            one_at_a_time: Rc::new(glommio::sync::Semaphore::new(1)),
            defaults,
            default_partitions,
            producer_ids,
            limits,
        }
    }

    /// Waits for the controller's turn; `None` if the controller is stopping.
    pub async fn turn(self: &Rc<Self>) -> Option<Turn> {
        let permit = self.one_at_a_time.acquire_static_permit(1).await.ok()?;
        Some(Turn {
            controller: self.clone(),
            _permit: permit,
        })
    }

    async fn change(&self, op: AdminOp) -> (AnyResponse, Option<Plan>) {
        let mut deleted = Vec::new();
        let answer = match op {
            AdminOp::CreateTopics(r) => AnyResponse::CreateTopics(self.create_topics(r).await),
            AdminOp::DeleteTopics(r) => {
                AnyResponse::DeleteTopics(self.delete_topics(r, &mut deleted).await)
            }
            AdminOp::CreatePartitions(r) => {
                AnyResponse::CreatePartitions(self.create_partitions(r).await)
            }
            AdminOp::AlterConfigs(r) => {
                AnyResponse::IncrementalAlterConfigs(self.alter_configs(r).await)
            }
            AdminOp::InitProducerId(r) => {
                AnyResponse::InitProducerId(self.init_producer_id(&r).await)
            }
            AdminOp::Reassign(r) => {
                AnyResponse::AlterPartitionReassignments(self.reassign(r).await)
            }
            AdminOp::CreateAcls(r) => AnyResponse::CreateAcls(self.create_acls(r).await),
            AdminOp::DeleteAcls(r) => AnyResponse::DeleteAcls(self.delete_acls(r).await),
            AdminOp::AlterScram(r) => {
                AnyResponse::AlterUserScramCredentials(self.alter_scram(r).await)
            }
            AdminOp::AlterQuotas(r) => AnyResponse::AlterClientQuotas(self.alter_quotas(r).await),
            AdminOp::EnsureTopic {
                name,
                partitions,
                replication_factor,
                configs,
                internal,
            } => {
                let exists = self.log.state().topics.contains_key(&name);
                let result = if exists {
                    CreatableTopicResult {
                        name: name.clone(),
                        ..Default::default()
                    }
                } else {
                    let spec = CreatableTopic {
                        name: name.clone(),
                        num_partitions: Some(partitions),
                        replication_factor: Some(match self.log.cluster_member() {
                            None => 1,
                            Some(_) => {
                                let room = self.placeable_for(internal).len().max(1);
                                replication_factor.clamp(1, room as u16)
                            }
                        }),
                        assignments: vec![],
                        configs: configs
                            .into_iter()
                            .map(|(name, value)| ConfigEntry {
                                name,
                                value: Some(value),
                            })
                            .collect(),
                    };
                    self.create_one(&spec, false, internal).await
                };
                AnyResponse::CreateTopics(CreateTopicsResponse {
                    throttle_time_ms: 0,
                    topics: vec![result],
                })
            }
        };
        (answer, self.plan(deleted))
    }

    /// An idempotent producer's id and epoch. A producer that had one gets its epoch bumped (a
    /// new session of sequences); a new one, or one whose epoch is exhausted, gets a new id. Ids
    /// come from blocks reserved durably, so none is handed out twice, even across restarts.
    async fn init_producer_id(&self, r: &InitProducerIdRequest) -> InitProducerIdResponse {
        if r.transactional_id.is_some() {
            return InitProducerIdResponse {
                error_code: ErrorCode::InvalidRequest,
                ..Default::default()
            };
        }
        if let (Some(id), Some(epoch)) = (r.producer_id, r.producer_epoch) {
            // Handed out before: by this controller, or in a cluster by any broker's.
            let issued = match self.log.cluster_member() {
                None => id < self.next_producer_id.get(),
                Some(_) => id < self.log.state().producer_ids_reserved,
            };
            if issued && epoch < i16::MAX as u16 {
                return InitProducerIdResponse {
                    producer_id: id,
                    producer_epoch: epoch + 1,
                    ..Default::default()
                };
            }
        }
        let mut id = self.next_producer_id.get();
        if id >= self.producer_ids_end.get() {
            // The block is made durable first, so an id is never given twice.
            let cmd = match self.log.cluster_member() {
                None => MetadataCommand::ReserveProducerIds {
                    up_to: id + PRODUCER_ID_BLOCK,
                },
                Some(_) => MetadataCommand::AllocateProducerIds {
                    count: PRODUCER_ID_BLOCK,
                },
            };
            match self.submit(cmd).await {
                Err((code, message)) => {
                    tracing::error!(%message, "cannot reserve producer ids");
                    return InitProducerIdResponse {
                        error_code: code,
                        ..Default::default()
                    };
                }
                Ok(Applied::ProducerIds { start }) => id = start,
                Ok(Applied::Done) => {}
            }
            self.producer_ids_end.set(id + PRODUCER_ID_BLOCK);
        }
        self.next_producer_id.set(id + 1);
        self.producer_ids.raise(id + 1);
        InitProducerIdResponse {
            producer_id: id,
            producer_epoch: 0,
            ..Default::default()
        }
    }

    /// What the shards must apply for the store's state to be theirs: `None` when nothing
    /// changed since the last plan.
    fn plan(&self, deleted: Vec<Arc<TopicInfo>>) -> Option<Plan> {
        if self.log.applies_itself() {
            // The log gave every shard its snapshot as it applied the commands.
            return None;
        }
        let snapshot = {
            let state = self.log.state();
            if state.version == self.current.borrow().version && deleted.is_empty() {
                return None;
            }
            match Snapshot::build(&state, &self.defaults, self.current.borrow().me) {
                Ok(s) => Arc::new(s),
                Err(e) => {
                    // Overrides are checked before they are stored; this is a bug, not input.
                    tracing::error!(error = %e, "stored topic config does not resolve");
                    return None;
                }
            }
        };
        *self.current.borrow_mut() = snapshot.clone();
        Some(Plan { snapshot, deleted })
    }

    /// Makes `cmd` part of metadata (`MetadataLog::submit`). Only the holder of the turn calls
    /// it, so on a single broker nothing else changes the store in between; in a cluster, other
    /// brokers' commands may come first in the log, and the state machine refuses what they made
    /// impossible (a topic created twice, say).
    async fn submit(&self, cmd: MetadataCommand) -> ItemResult<Applied> {
        self.log.submit(cmd).await.map_err(|e| match e {
            MetaError::TopicExists(_) => (ErrorCode::TopicAlreadyExists, e.to_string()),
            MetaError::UnknownTopic(_) => (ErrorCode::UnknownTopicOrPartition, e.to_string()),
            MetaError::PartitionsCannotShrink { .. } => {
                (ErrorCode::InvalidPartitions, e.to_string())
            }
            MetaError::Unavailable(_) => (ErrorCode::RequestTimedOut, e.to_string()),
            MetaError::ClusterIdMismatch { .. } => {
                (ErrorCode::InconsistentClusterId, e.to_string())
            }
            MetaError::UnknownBroker(_) => (ErrorCode::BrokerNotAvailable, e.to_string()),
            MetaError::Invalid(_) => (ErrorCode::InvalidRequest, e.to_string()),
            MetaError::Stale(_) => (ErrorCode::FencedLeaderEpoch, e.to_string()),
            MetaError::Io { .. }
            | MetaError::Corrupt { .. }
            | MetaError::Missing { .. }
            | MetaError::VersionExhausted(_) => {
                tracing::error!(error = %e, "metadata store failed");
                (ErrorCode::StorageError, e.to_string())
            }
        })
    }

    /// In a cluster, where `count` new partitions numbered from `first` go, `rf` replicas each
    /// (`assign::assign` over the live brokers and their racks, from a random start per call,
    /// so many topics' leaders balance). Internal topics are placed over the voters that are
    /// brokers (all start together, and their groups must spread). `None` on a single broker, which refuses a
    /// replication factor above 1.
    fn placement(
        &self,
        rf: u16,
        count: u32,
        first: u32,
        internal: bool,
    ) -> ItemResult<Option<Vec<PartitionMeta>>> {
        let Some(member) = self.log.cluster_member() else {
            if rf != 1 {
                return Err((
                    ErrorCode::InvalidReplicationFactor,
                    format!("replication factor {rf} needs {rf} brokers; this broker runs alone"),
                ));
            }
            return Ok(None);
        };
        let _ = member;
        let ids = self.placeable_for(internal);
        let state = self.log.state();
        let brokers: Vec<Placeable> = ids
            .iter()
            .map(|&id| Placeable {
                id,
                rack: state.brokers.get(&id).and_then(|b| b.rack.clone()),
            })
            .collect();
        let n = brokers.len().max(1) as u64;
        let start = rand::random::<u64>() % (n * (n - 1).max(1));
        let placed = super::assign::assign(&brokers, usize::from(rf), first, count, start)
            .map_err(|why| (ErrorCode::InvalidReplicationFactor, why))?;
        Ok(Some(placed.into_iter().map(PartitionMeta::new).collect()))
    }

    /// The brokers a topic may be placed on: for an internal topic every voter but those
    /// registered as controller-only (a voter not registered yet is taken to be a broker; one
    /// that turns out controller-only serves what was placed on it all the same), else the
    /// live brokers. Empty on a single broker.
    fn placeable_for(&self, internal: bool) -> Vec<u32> {
        let Some(member) = self.log.cluster_member() else {
            return Vec::new();
        };
        if internal {
            let state = self.log.state();
            member
                .voters
                .iter()
                .copied()
                .filter(|v| !state.brokers.get(v).is_some_and(|b| b.controller_only))
                .collect()
        } else {
            self.log.placeable_brokers()
        }
    }

    /// A caller's own replica assignment for partitions `first..first + count`, checked: one
    /// entry per partition and each once, `rf` distinct registered brokers per partition (the
    /// preferred leader first). The leader is the first replica on a live broker, and the ISR
    /// that broker alone. Refused on a single broker.
    fn manual_placement(
        &self,
        assignments: &[ReplicaAssignment],
        rf: Option<u16>,
        first: u32,
        count: u32,
    ) -> ItemResult<Vec<PartitionMeta>> {
        let bad = |why: String| (ErrorCode::InvalidReplicaAssignment, why);
        if self.log.cluster_member().is_none() {
            return Err(bad(
                "manual replica assignment needs a cluster; this broker runs alone".into(),
            ));
        }
        if assignments.len() != count as usize {
            return Err(bad(format!(
                "{} assignments for {count} partitions; give one per partition",
                assignments.len()
            )));
        }
        let state = self.log.state();
        let live = self.log.placeable_brokers();
        let mut by_partition: BTreeMap<u32, &ReplicaAssignment> = BTreeMap::new();
        for a in assignments {
            let p = a.partition.0;
            if p < first || p >= first + count {
                return Err(bad(format!(
                    "assignment for partition {p}, outside the partitions made ({first}..{})",
                    first + count
                )));
            }
            if by_partition.insert(p, a).is_some() {
                return Err(bad(format!("partition {p} is assigned twice")));
            }
        }
        let want = rf.map_or(assignments[0].broker_ids.len(), usize::from);
        let mut out = Vec::with_capacity(count as usize);
        for (p, a) in by_partition {
            let replicas: Vec<u32> = a.broker_ids.iter().map(|b| b.0).collect();
            if replicas.is_empty() {
                return Err(bad(format!("partition {p} has no replicas")));
            }
            if replicas.len() != want {
                return Err(bad(format!(
                    "partition {p} has {} replicas; every partition needs {want} (the replication factor)",
                    replicas.len()
                )));
            }
            if let Some(unknown) = replicas.iter().find(|r| !state.brokers.contains_key(r)) {
                return Err(bad(format!(
                    "partition {p}: broker {unknown} is not registered"
                )));
            }
            let Some(&leader) = replicas.iter().find(|r| live.contains(r)) else {
                return Err(bad(format!(
                    "partition {p}: none of brokers {replicas:?} is live to lead it"
                )));
            };
            // In sync: the live replicas (all empty); one down joins once it has caught up.
            let m = PartitionMeta {
                leader,
                isr: replicas
                    .iter()
                    .copied()
                    .filter(|r| live.contains(r))
                    .collect(),
                ..PartitionMeta::new(replicas)
            };
            m.check()
                .map_err(|why| bad(format!("partition {p}: {why}")))?;
            out.push(m);
        }
        Ok(out)
    }

    /// Refuses a change that would take the broker past its partition limit. Internal topics
    /// (fixed and few) are not counted, so the limit is what clients may create.
    fn check_capacity(&self, adding: u64) -> ItemResult<()> {
        let held: u64 = self
            .log
            .state()
            .topics
            .iter()
            .filter(|(name, _)| !topic::is_internal(name))
            .map(|(_, t)| u64::from(t.partitions))
            .sum();
        if held + adding > self.limits.partitions_max {
            return Err((
                ErrorCode::PolicyViolation,
                format!(
                    "adding {adding} partitions would give this broker {}, over its limit of {} ({}); nothing was created",
                    held + adding,
                    self.limits.partitions_max,
                    self.limits.partitions_max_source
                ),
            ));
        }
        Ok(())
    }

    fn check_configs(&self, entries: &[ConfigEntry]) -> ItemResult<BTreeMap<String, String>> {
        let mut probe = self.defaults.clone();
        let mut out = BTreeMap::new();
        for e in entries {
            let value = e.value.clone().ok_or_else(|| {
                (
                    ErrorCode::InvalidConfig,
                    format!("config '{}' has no value", e.name),
                )
            })?;
            probe
                .set(&e.name, &value)
                .map_err(|err| (ErrorCode::InvalidConfig, err.to_string()))?;
            out.insert(e.name.clone(), value);
        }
        Ok(out)
    }

    async fn create_one(
        &self,
        t: &CreatableTopic,
        validate_only: bool,
        internal_allowed: bool,
    ) -> CreatableTopicResult {
        let mut result = CreatableTopicResult {
            name: t.name.clone(),
            ..Default::default()
        };
        let checked = (|| -> ItemResult<TopicMeta> {
            topic::validate_name(&t.name).map_err(|e| (ErrorCode::InvalidTopic, e.to_string()))?;
            topic::check_name_fits(&t.name, self.limits.file_name_max)
                .map_err(|e| (ErrorCode::InvalidTopic, e.to_string()))?;
            if topic::is_internal(&t.name) && !internal_allowed {
                return Err((
                    ErrorCode::InvalidTopic,
                    format!(
                        "topic names starting with '__' are reserved for internal topics: '{}'",
                        t.name
                    ),
                ));
            }
            if self.log.state().topics.contains_key(&t.name) {
                return Err((
                    ErrorCode::TopicAlreadyExists,
                    format!("topic '{}' already exists", t.name),
                ));
            }
            let partitions = match (t.assignments.len(), t.num_partitions) {
                (0, n) => n.unwrap_or(self.default_partitions),
                (a, Some(n)) if a != n as usize => {
                    return Err((
                        ErrorCode::InvalidReplicaAssignment,
                        format!("{n} partitions asked with {a} assignments; give one or the other"),
                    ))
                }
                (a, _) => u32::try_from(a).unwrap_or(u32::MAX),
            };
            if partitions == 0 || partitions > PARTITIONS_PER_TOPIC_MAX {
                return Err((
                    ErrorCode::InvalidPartitions,
                    format!(
                        "partition count {partitions} is outside [1, {PARTITIONS_PER_TOPIC_MAX}]"
                    ),
                ));
            }
            self.check_capacity(u64::from(partitions))?;
            let placement = if t.assignments.is_empty() {
                let rf = t.replication_factor.unwrap_or(1);
                self.placement(rf, partitions, 0, internal_allowed)?
                    .unwrap_or_default()
            } else {
                self.manual_placement(&t.assignments, t.replication_factor, 0, partitions)?
            };
            let rf = placement.first().map_or(1, |p| p.replicas.len() as u16);
            let configs = self.check_configs(&t.configs)?;
            Ok(TopicMeta {
                name: t.name.clone(),
                id: new_topic_id(),
                partitions,
                replication_factor: rf,
                configs,
                created_ms: crate::now_ms(),
                placement,
            })
        })();
        match checked {
            Err((code, message)) => {
                result.error_code = code;
                result.error_message = Some(message);
            }
            Ok(meta) => {
                result.num_partitions = meta.partitions;
                result.replication_factor = meta.replication_factor;
                result.topic_id = Uuid(u128::from_str_radix(&meta.id, 16).unwrap_or(0));
                result.configs = meta
                    .configs
                    .iter()
                    .map(|(k, v)| ConfigEntry {
                        name: k.clone(),
                        value: Some(v.clone()),
                    })
                    .collect();
                if !validate_only {
                    let flush_ms = meta.configs.get("flush.ms").cloned();
                    let name = meta.name.clone();
                    match self.submit(MetadataCommand::CreateTopic(meta)).await {
                        Err((code, message)) => {
                            result.error_code = code;
                            result.error_message = Some(message);
                        }
                        Ok(_) => log_flush_policy(&name, flush_ms.as_deref()),
                    }
                }
            }
        }
        result
    }

    async fn create_topics(&self, r: CreateTopicsRequest) -> CreateTopicsResponse {
        let mut topics = Vec::with_capacity(r.topics.len());
        for t in &r.topics {
            topics.push(self.create_one(t, r.validate_only, false).await);
        }
        CreateTopicsResponse {
            throttle_time_ms: 0,
            topics,
        }
    }

    async fn delete_topics(
        &self,
        r: DeleteTopicsRequest,
        deleted: &mut Vec<Arc<TopicInfo>>,
    ) -> DeleteTopicsResponse {
        let before = self.current.borrow().clone();
        let mut responses = Vec::new();
        for name in &r.topic_names {
            let res: ItemResult<()> = async {
                if !self.log.state().topics.contains_key(name) {
                    return Err((
                        ErrorCode::UnknownTopicOrPartition,
                        format!("topic '{name}' does not exist"),
                    ));
                }
                if topic::is_internal(name) {
                    return Err((
                        ErrorCode::TopicDeletionDisabled,
                        format!("'{name}' is an internal topic and cannot be deleted"),
                    ));
                }
                self.submit(MetadataCommand::DeleteTopic { name: name.clone() })
                    .await?;
                if self.log.applies_itself() {
                    // The log closed and removed it on every broker as it applied.
                    return Ok(());
                }
                // A single broker's snapshot is the controller's own, current before the change.
                let info = before.topic(name).ok_or_else(|| {
                    (
                        ErrorCode::UnknownTopicOrPartition,
                        format!("topic '{name}' does not exist"),
                    )
                })?;
                deleted.push(info.clone());
                Ok(())
            }
            .await;
            let (error_code, error_message) = answer(res);
            responses.push(TopicResult {
                name: name.clone(),
                error_code,
                error_message,
            });
        }
        DeleteTopicsResponse {
            throttle_time_ms: 0,
            responses,
        }
    }

    async fn create_partitions(&self, r: CreatePartitionsRequest) -> CreatePartitionsResponse {
        let mut results = Vec::new();
        for t in &r.topics {
            let res: ItemResult<()> = async {
                let existing = self
                    .log
                    .state()
                    .topics
                    .get(&t.name)
                    .cloned()
                    .ok_or_else(|| {
                        (
                            ErrorCode::UnknownTopicOrPartition,
                            format!("topic '{}' does not exist", t.name),
                        )
                    })?;
                let current = existing.partitions;
                if t.count <= current {
                    return Err((
                        ErrorCode::InvalidPartitions,
                        format!(
                            "topic '{}' has {current} partitions; the count can only grow",
                            t.name
                        ),
                    ));
                }
                if topic::is_internal(&t.name) {
                    return Err((
                        ErrorCode::InvalidTopic,
                        format!(
                            "'{}' is an internal topic; its partitions are not changed by clients",
                            t.name
                        ),
                    ));
                }
                if t.count > PARTITIONS_PER_TOPIC_MAX {
                    return Err((
                        ErrorCode::InvalidPartitions,
                        format!(
                            "partition count {} exceeds {PARTITIONS_PER_TOPIC_MAX}",
                            t.count
                        ),
                    ));
                }
                self.check_capacity(u64::from(t.count - current))?;
                let rf = existing
                    .placement
                    .first()
                    .map_or(existing.replication_factor, |p| p.replicas.len() as u16);
                let placement = if t.assignments.is_empty() {
                    self.placement(rf, t.count - current, current, false)?
                        .unwrap_or_default()
                } else {
                    self.manual_placement(&t.assignments, Some(rf), current, t.count - current)?
                };
                if !r.validate_only {
                    self.submit(MetadataCommand::CreatePartitions {
                        name: t.name.clone(),
                        total: t.count,
                        placement,
                    })
                    .await?;
                }
                Ok(())
            }
            .await;
            let (error_code, error_message) = answer(res);
            results.push(TopicResult {
                name: t.name.clone(),
                error_code,
                error_message,
            });
        }
        CreatePartitionsResponse {
            throttle_time_ms: 0,
            results,
        }
    }

    /// The brokers a reassignment names, checked against metadata under a short borrow of
    /// the state (never held across the submit): a placed partition that exists, at least
    /// one replica, each a distinct registered broker that holds partitions.
    fn check_reassignment(&self, p: &ReassignPartition) -> ItemResult<Vec<u32>> {
        let bad = |why: String| (ErrorCode::InvalidReplicaAssignment, why);
        if self.log.cluster_member().is_none() {
            return Err(bad(
                "moving replicas needs a cluster; this broker runs alone".into(),
            ));
        }
        let state = self.log.state();
        let t = state.topics.get(&p.topic).ok_or_else(|| {
            (
                ErrorCode::UnknownTopicOrPartition,
                format!("topic '{}' does not exist", p.topic),
            )
        })?;
        if t.placed(p.partition.0).is_none() {
            return Err((
                ErrorCode::UnknownTopicOrPartition,
                format!(
                    "topic '{}' has no partition {} ({} partitions)",
                    p.topic, p.partition.0, t.partitions
                ),
            ));
        }
        let replicas: Vec<u32> = p.replicas.iter().map(|b| b.0).collect();
        if replicas.is_empty() {
            return Err(bad("give at least one replica".into()));
        }
        let mut seen = std::collections::BTreeSet::new();
        for b in &replicas {
            if !seen.insert(*b) {
                return Err(bad(format!("broker {b} is named twice")));
            }
            match state.brokers.get(b) {
                None => return Err(bad(format!("broker {b} is not registered"))),
                Some(m) if m.controller_only => {
                    return Err(bad(format!(
                        "broker {b} is controller-only and holds no partitions"
                    )))
                }
                Some(_) => {}
            }
        }
        Ok(replicas)
    }

    /// Starts moving partitions' replicas: each partition once, to distinct registered brokers
    /// that hold partitions, on a topic placed in a cluster. The state machine does the rest
    /// (`cluster::reassign`); the answer comes when the move has started.
    async fn reassign(
        &self,
        r: AlterPartitionReassignmentsRequest,
    ) -> AlterPartitionReassignmentsResponse {
        let mut results = Vec::new();
        for p in &r.partitions {
            let res: ItemResult<()> = async {
                let replicas = self.check_reassignment(p)?;
                self.submit(MetadataCommand::Reassign {
                    topic: p.topic.clone(),
                    partition: p.partition.0,
                    replicas,
                })
                .await?;
                Ok(())
            }
            .await;
            let (error_code, error_message) = answer(res);
            results.push(ReassignPartitionResult {
                topic: p.topic.clone(),
                partition: p.partition,
                error_code,
                error_message,
            });
        }
        AlterPartitionReassignmentsResponse {
            throttle_time_ms: 0,
            results,
        }
    }

    async fn alter_configs(
        &self,
        r: IncrementalAlterConfigsRequest,
    ) -> IncrementalAlterConfigsResponse {
        let mut responses = Vec::new();
        for res in &r.resources {
            let outcome: ItemResult<()> = async {
                if res.resource_type != ConfigResourceType::Topic {
                    return Err((
                        ErrorCode::InvalidRequest,
                        format!("only topic configs can be altered at runtime, not {:?}; broker settings live in streamd.toml", res.resource_type),
                    ));
                }
                if topic::is_internal(&res.resource_name) {
                    return Err((
                        ErrorCode::InvalidTopic,
                        format!(
                            "'{}' is an internal topic; its configs are not changed by clients",
                            res.resource_name
                        ),
                    ));
                }
                let current = self
                    .log
                    .state()
                    .topics
                    .get(&res.resource_name)
                    .map(|m| m.configs.clone())
                    .ok_or_else(|| {
                        (
                            ErrorCode::UnknownTopicOrPartition,
                            format!("topic '{}' does not exist", res.resource_name),
                        )
                    })?;
                let mut set = BTreeMap::new();
                let mut remove = Vec::new();
                let mut next = current;
                for c in &res.configs {
                    match c.op {
                        AlterConfigOp::Set => {
                            let v = c.value.clone().ok_or_else(|| {
                                (
                                    ErrorCode::InvalidConfig,
                                    format!("set of '{}' has no value", c.name),
                                )
                            })?;
                            next.insert(c.name.clone(), v.clone());
                            set.insert(c.name.clone(), v);
                        }
                        AlterConfigOp::Delete => {
                            if !topic::KNOWN_KEYS.contains(&c.name.as_str()) {
                                return Err((
                                    ErrorCode::InvalidConfig,
                                    format!("unknown topic config '{}'", c.name),
                                ));
                            }
                            next.remove(&c.name);
                            remove.push(c.name.clone());
                        }
                        AlterConfigOp::Append | AlterConfigOp::Subtract => {
                            return Err((
                                ErrorCode::InvalidConfig,
                                format!("'{}' is not a list config; use set or delete", c.name),
                            ));
                        }
                    }
                }
                TopicConfig::resolve(&self.defaults, &next)
                    .map_err(|e| (ErrorCode::InvalidConfig, e.to_string()))?;
                if !r.validate_only {
                    let flush_ms = set.get("flush.ms").cloned();
                    self.submit(MetadataCommand::AlterConfigs {
                        name: res.resource_name.clone(),
                        set,
                        remove,
                    })
                    .await?;
                    if flush_ms.is_some() {
                        log_flush_policy(&res.resource_name, flush_ms.as_deref());
                    }
                }
                Ok(())
            }
            .await;
            let (error_code, error_message) = answer(outcome);
            responses.push(AlterConfigsResult {
                error_code,
                error_message,
                resource_type: res.resource_type,
                resource_name: res.resource_name.clone(),
            });
        }
        IncrementalAlterConfigsResponse {
            throttle_time_ms: 0,
            responses,
        }
    }
}

impl Turn {
    /// Checks `op` and makes it durable; returns the client's answer and what every shard must
    /// apply before it is sent (`None`: metadata did not change).
    pub async fn change(&self, op: AdminOp) -> (AnyResponse, Option<Plan>) {
        self.controller.change(op).await
    }

    /// After every shard has applied `plan` (and so closed the deleted topics' logs and handed
    /// their files to the engine's paced deleter): each deleted topic's directory is renamed out
    /// of the way at once and follows them (`dirs::sweep` finishes it after a crash).
    pub fn finish(&self, plan: &Plan) {
        remove_deleted_dirs(&self.controller.data_dir, &plan.deleted);
    }
}

/// Renames each deleted topic's directory out of the way and hands it to the engine's paced
/// deleter, once every shard has closed its logs.
pub fn remove_deleted_dirs(data_dir: &std::path::Path, deleted: &[Arc<TopicInfo>]) {
    for info in deleted {
        let dir = super::dirs::topic_dir(data_dir, &info.meta.dir_name());
        let trash = super::dirs::free_deleted_topic_dir(data_dir, &info.meta.dir_name());
        match std::fs::rename(&dir, &trash) {
            Ok(()) => quiver_engine::delete_dir_paced(trash),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "removing a deleted topic's directory failed");
            }
        }
    }
}

/// Says in the log when a topic's acknowledgements stop waiting for fdatasync: flush.ms > 0 is a
/// choice to acknowledge records a power loss can take back (up to flush.ms of them).
fn log_flush_policy(topic: &str, flush_ms: Option<&str>) {
    let Some(ms) = flush_ms.and_then(|v| v.trim().parse::<u64>().ok()) else {
        return;
    };
    if ms > 0 {
        tracing::warn!(%topic, flush_ms = ms, "topic set to acknowledge produce requests before fdatasync: a power loss may lose up to {ms} ms of acknowledged records");
    } else {
        tracing::info!(%topic, "topic set to acknowledge produce requests only after fdatasync");
    }
}
