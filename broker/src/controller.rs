//! The controller: the one place topics change. It lives on shard 0 and owns the metadata store;
//! other shards forward admin requests to it over the mesh.
//!
//! A change is checked here, made durable by the store, turned into a new snapshot and applied
//! on every shard (each opens or deletes the logs it owns) before the client is answered, so a
//! client that created a topic can produce to it at once, through any shard. Changes run one at
//! a time (a semaphore), so two requests never race on the same topic.
//!
//! The store's file I/O (a small write and two syncs) runs on shard 0 itself; admin changes are
//! rare and the pause is a few milliseconds. The Raft controller will replace the store.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use quiver_proto::api::common::{ConfigEntry, TopicResult, Uuid};
use quiver_proto::api::metadata::{
    AlterConfigOp, AlterConfigsResult, ConfigResourceType, CreatableTopic, CreatableTopicResult,
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};
use quiver_proto::api::produce::{InitProducerIdRequest, InitProducerIdResponse};
use quiver_proto::api::AnyResponse;
use quiver_proto::ErrorCode;

use crate::meta::{new_topic_id, MetaError, MetadataCommand, MetadataStore, TopicMeta};
use crate::shard::Shard;
use crate::state::{Snapshot, TopicInfo};
use crate::topic::{self, TopicConfig, PARTITIONS_PER_TOPIC_MAX};

/// A topic change, as it crosses the mesh to the controller.
#[derive(Clone, Debug)]
pub enum AdminOp {
    CreateTopics(CreateTopicsRequest),
    DeleteTopics(DeleteTopicsRequest),
    CreatePartitions(CreatePartitionsRequest),
    AlterConfigs(IncrementalAlterConfigsRequest),
    /// Creates a topic if it is missing, with the broker's defaults unless given (auto-creation,
    /// and internal topics). `internal` allows a `__` name.
    EnsureTopic {
        name: String,
        partitions: u32,
        configs: BTreeMap<String, String>,
        internal: bool,
    },
    /// A producer id and epoch for an idempotent producer.
    InitProducerId(InitProducerIdRequest),
}

/// Producer ids reserved durably at a time: one metadata write per this many producers.
const PRODUCER_ID_BLOCK: u64 = 1000;

impl AdminOp {
    /// The response that fails every item of this request with `code`.
    pub fn failed(&self, code: ErrorCode, message: &str) -> AnyResponse {
        let msg = Some(message.to_string());
        match self {
            AdminOp::CreateTopics(r) => AnyResponse::CreateTopics(CreateTopicsResponse {
                throttle_time_ms: 0,
                topics: r
                    .topics
                    .iter()
                    .map(|t| CreatableTopicResult {
                        name: t.name.clone(),
                        error_code: code,
                        error_message: msg.clone(),
                        ..Default::default()
                    })
                    .collect(),
            }),
            AdminOp::DeleteTopics(r) => AnyResponse::DeleteTopics(DeleteTopicsResponse {
                throttle_time_ms: 0,
                responses: r
                    .topic_names
                    .iter()
                    .map(|n| TopicResult {
                        name: n.clone(),
                        error_code: code,
                        error_message: msg.clone(),
                    })
                    .collect(),
            }),
            AdminOp::CreatePartitions(r) => {
                AnyResponse::CreatePartitions(CreatePartitionsResponse {
                    throttle_time_ms: 0,
                    results: r
                        .topics
                        .iter()
                        .map(|t| TopicResult {
                            name: t.name.clone(),
                            error_code: code,
                            error_message: msg.clone(),
                        })
                        .collect(),
                })
            }
            AdminOp::AlterConfigs(r) => {
                AnyResponse::IncrementalAlterConfigs(IncrementalAlterConfigsResponse {
                    throttle_time_ms: 0,
                    responses: r
                        .resources
                        .iter()
                        .map(|res| AlterConfigsResult {
                            error_code: code,
                            error_message: msg.clone(),
                            resource_type: res.resource_type,
                            resource_name: res.resource_name.clone(),
                        })
                        .collect(),
                })
            }
            AdminOp::InitProducerId(_) => AnyResponse::InitProducerId(InitProducerIdResponse {
                error_code: code,
                ..Default::default()
            }),
            AdminOp::EnsureTopic { name, .. } => AnyResponse::CreateTopics(CreateTopicsResponse {
                throttle_time_ms: 0,
                topics: vec![CreatableTopicResult {
                    name: name.clone(),
                    error_code: code,
                    error_message: msg,
                    ..Default::default()
                }],
            }),
        }
    }
}

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

    fn raise(&self, below: u64) {
        self.0.fetch_max(below, Ordering::AcqRel);
    }
}

pub struct Controller {
    store: RefCell<Box<dyn MetadataStore>>,
    one_at_a_time: Rc<glommio::sync::Semaphore>,
    defaults: TopicConfig,
    default_partitions: u32,
    /// The next producer id to hand out (up to the store's `producer_ids_reserved`).
    next_producer_id: Cell<u64>,
    producer_ids: Arc<ProducerIdsIssued>,
    limits: Limits,
}

type ItemResult<T> = Result<T, (ErrorCode, String)>;

impl Controller {
    /// `producer_ids` must start at the store's `producer_ids_reserved` (every id below it may
    /// have been handed out before this start).
    pub fn new(
        store: Box<dyn MetadataStore>,
        defaults: TopicConfig,
        default_partitions: u32,
        producer_ids: Arc<ProducerIdsIssued>,
        limits: Limits,
    ) -> Controller {
        Controller {
            next_producer_id: Cell::new(store.state().producer_ids_reserved),
            store: RefCell::new(store),
            one_at_a_time: Rc::new(glommio::sync::Semaphore::new(1)),
            defaults,
            default_partitions,
            producer_ids,
            limits,
        }
    }

    /// Runs one admin change. Changes run one at a time; once this change holds the turn it runs
    /// to the end in a task of its own, so a client that goes away (its request cancelled) cannot
    /// stop it between making metadata durable and applying it on every shard.
    pub async fn handle(self: &Rc<Self>, shard: &Rc<Shard>, op: AdminOp) -> AnyResponse {
        let Ok(permit) = self.one_at_a_time.acquire_static_permit(1).await else {
            return op.failed(ErrorCode::BrokerShuttingDown, "controller is stopping");
        };
        let (me, shard) = (self.clone(), shard.clone());
        let fallback = op.failed(ErrorCode::BrokerShuttingDown, "controller is stopping");
        glommio::spawn_local(async move {
            let _permit = permit;
            me.run(&shard, op).await
        })
        .detach()
        .await
        .unwrap_or(fallback)
    }

    async fn run(&self, shard: &Rc<Shard>, op: AdminOp) -> AnyResponse {
        match op {
            AdminOp::CreateTopics(r) => {
                AnyResponse::CreateTopics(self.create_topics(shard, r).await)
            }
            AdminOp::DeleteTopics(r) => {
                AnyResponse::DeleteTopics(self.delete_topics(shard, r).await)
            }
            AdminOp::CreatePartitions(r) => {
                AnyResponse::CreatePartitions(self.create_partitions(shard, r).await)
            }
            AdminOp::AlterConfigs(r) => {
                AnyResponse::IncrementalAlterConfigs(self.alter_configs(shard, r).await)
            }
            AdminOp::InitProducerId(r) => AnyResponse::InitProducerId(self.init_producer_id(&r)),
            AdminOp::EnsureTopic {
                name,
                partitions,
                configs,
                internal,
            } => {
                let exists = shard.snapshot().topic(&name).is_some();
                let result = if exists {
                    CreatableTopicResult {
                        name: name.clone(),
                        ..Default::default()
                    }
                } else {
                    let spec = CreatableTopic {
                        name: name.clone(),
                        num_partitions: Some(partitions),
                        replication_factor: Some(1),
                        assignments: vec![],
                        configs: configs
                            .into_iter()
                            .map(|(name, value)| ConfigEntry {
                                name,
                                value: Some(value),
                            })
                            .collect(),
                    };
                    let res = self.create_one(&spec, false, internal);
                    self.publish(shard, vec![]).await;
                    res
                };
                AnyResponse::CreateTopics(CreateTopicsResponse {
                    throttle_time_ms: 0,
                    topics: vec![result],
                })
            }
        }
    }

    /// An idempotent producer's id and epoch. A producer that had one gets its epoch bumped (a
    /// new session of sequences); a new one, or one whose epoch is exhausted, gets a new id. Ids
    /// come from blocks reserved durably, so none is handed out twice, even across restarts.
    fn init_producer_id(&self, r: &InitProducerIdRequest) -> InitProducerIdResponse {
        if r.transactional_id.is_some() {
            return InitProducerIdResponse {
                error_code: ErrorCode::InvalidRequest,
                ..Default::default()
            };
        }
        if let (Some(id), Some(epoch)) = (r.producer_id, r.producer_epoch) {
            if id < self.next_producer_id.get() && epoch < i16::MAX as u16 {
                return InitProducerIdResponse {
                    producer_id: id,
                    producer_epoch: epoch + 1,
                    ..Default::default()
                };
            }
        }
        let id = self.next_producer_id.get();
        if id >= self.store.borrow().state().producer_ids_reserved {
            // The reservation is made durable first, so an id is never given twice.
            let up_to = id + PRODUCER_ID_BLOCK;
            if let Err((code, message)) = self.submit(MetadataCommand::ReserveProducerIds { up_to })
            {
                tracing::error!(%message, "cannot reserve producer ids");
                return InitProducerIdResponse {
                    error_code: code,
                    ..Default::default()
                };
            }
        }
        self.next_producer_id.set(id + 1);
        self.producer_ids.raise(id + 1);
        InitProducerIdResponse {
            producer_id: id,
            producer_epoch: 0,
            ..Default::default()
        }
    }

    /// Makes the store's state the shards' state.
    async fn publish(&self, shard: &Rc<Shard>, deleted: Vec<Arc<TopicInfo>>) {
        let snapshot = {
            let store = self.store.borrow();
            match Snapshot::build(store.state(), &self.defaults, shard.shard_count()) {
                Ok(s) => Arc::new(s),
                Err(e) => {
                    // Overrides are checked before they are stored; this is a bug, not input.
                    tracing::error!(error = %e, "stored topic config does not resolve");
                    return;
                }
            }
        };
        if snapshot.version == shard.snapshot().version && deleted.is_empty() {
            return;
        }
        shard.broadcast_apply(snapshot, deleted).await;
    }

    fn submit(&self, cmd: MetadataCommand) -> ItemResult<()> {
        self.store
            .borrow_mut()
            .submit(cmd)
            .map(|_| ())
            .map_err(|e| match e {
                MetaError::TopicExists(_) => (ErrorCode::TopicAlreadyExists, e.to_string()),
                MetaError::UnknownTopic(_) => (ErrorCode::UnknownTopicOrPartition, e.to_string()),
                MetaError::PartitionsCannotShrink { .. } => {
                    (ErrorCode::InvalidPartitions, e.to_string())
                }
                MetaError::Io { .. }
                | MetaError::Corrupt { .. }
                | MetaError::Missing { .. }
                | MetaError::VersionExhausted(_) => {
                    tracing::error!(error = %e, "metadata store failed");
                    (ErrorCode::StorageError, e.to_string())
                }
            })
    }

    /// Refuses a change that would take the broker past its partition limit.
    fn check_capacity(&self, adding: u64) -> ItemResult<()> {
        let held: u64 = self
            .store
            .borrow()
            .state()
            .topics
            .values()
            .map(|t| u64::from(t.partitions))
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

    fn create_one(
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
            if self.store.borrow().state().topics.contains_key(&t.name) {
                return Err((
                    ErrorCode::TopicAlreadyExists,
                    format!("topic '{}' already exists", t.name),
                ));
            }
            let partitions = t.num_partitions.unwrap_or(self.default_partitions);
            if partitions == 0 || partitions > PARTITIONS_PER_TOPIC_MAX {
                return Err((
                    ErrorCode::InvalidPartitions,
                    format!(
                        "partition count {partitions} is outside [1, {PARTITIONS_PER_TOPIC_MAX}]"
                    ),
                ));
            }
            self.check_capacity(u64::from(partitions))?;
            let rf = t.replication_factor.unwrap_or(1);
            if rf != 1 {
                return Err((
                    ErrorCode::InvalidReplicationFactor,
                    format!("replication factor {rf} needs {rf} brokers; this cluster has 1"),
                ));
            }
            if !t.assignments.is_empty() {
                return Err((
                    ErrorCode::InvalidReplicaAssignment,
                    "manual replica assignment needs a cluster; this broker runs alone".into(),
                ));
            }
            let configs = self.check_configs(&t.configs)?;
            Ok(TopicMeta {
                name: t.name.clone(),
                id: new_topic_id(),
                partitions,
                replication_factor: rf,
                configs,
                created_ms: crate::now_ms(),
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
                    match self.submit(MetadataCommand::CreateTopic(meta)) {
                        Err((code, message)) => {
                            result.error_code = code;
                            result.error_message = Some(message);
                        }
                        Ok(()) => log_flush_policy(&name, flush_ms.as_deref()),
                    }
                }
            }
        }
        result
    }

    async fn create_topics(
        &self,
        shard: &Rc<Shard>,
        r: CreateTopicsRequest,
    ) -> CreateTopicsResponse {
        let topics = r
            .topics
            .iter()
            .map(|t| self.create_one(t, r.validate_only, false))
            .collect();
        self.publish(shard, vec![]).await;
        CreateTopicsResponse {
            throttle_time_ms: 0,
            topics,
        }
    }

    async fn delete_topics(
        &self,
        shard: &Rc<Shard>,
        r: DeleteTopicsRequest,
    ) -> DeleteTopicsResponse {
        let before = shard.snapshot();
        let mut deleted = Vec::new();
        let mut responses = Vec::new();
        for name in &r.topic_names {
            let res = (|| -> ItemResult<()> {
                let info = before.topic(name).ok_or_else(|| {
                    (
                        ErrorCode::UnknownTopicOrPartition,
                        format!("topic '{name}' does not exist"),
                    )
                })?;
                if info.internal {
                    return Err((
                        ErrorCode::TopicDeletionDisabled,
                        format!("'{name}' is an internal topic and cannot be deleted"),
                    ));
                }
                self.submit(MetadataCommand::DeleteTopic { name: name.clone() })?;
                deleted.push(info.clone());
                Ok(())
            })();
            let (error_code, error_message) = match res {
                Ok(()) => (ErrorCode::None, None),
                Err((c, m)) => (c, Some(m)),
            };
            responses.push(TopicResult {
                name: name.clone(),
                error_code,
                error_message,
            });
        }
        let doomed = deleted.clone();
        self.publish(shard, deleted).await;
        // Every shard has closed its partitions and handed their files to the engine's paced
        // deleter; the topic directory is renamed out of the way at once and follows them.
        for info in doomed {
            let dir = crate::state::topic_dir(&shard.config.data_dir, &info.meta);
            let trash = crate::state::deleted_topic_dir(&shard.config.data_dir, &info.meta);
            match std::fs::rename(&dir, &trash) {
                Ok(()) => quiver_engine::delete_dir_paced(trash),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "removing a deleted topic's directory failed");
                }
            }
        }
        DeleteTopicsResponse {
            throttle_time_ms: 0,
            responses,
        }
    }

    async fn create_partitions(
        &self,
        shard: &Rc<Shard>,
        r: CreatePartitionsRequest,
    ) -> CreatePartitionsResponse {
        let mut results = Vec::new();
        for t in &r.topics {
            let res = (|| -> ItemResult<()> {
                let current = self
                    .store
                    .borrow()
                    .state()
                    .topics
                    .get(&t.name)
                    .map(|m| m.partitions)
                    .ok_or_else(|| {
                        (
                            ErrorCode::UnknownTopicOrPartition,
                            format!("topic '{}' does not exist", t.name),
                        )
                    })?;
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
                if !t.assignments.is_empty() {
                    return Err((
                        ErrorCode::InvalidReplicaAssignment,
                        "manual replica assignment needs a cluster".into(),
                    ));
                }
                self.check_capacity(u64::from(t.count - current))?;
                if !r.validate_only {
                    self.submit(MetadataCommand::CreatePartitions {
                        name: t.name.clone(),
                        total: t.count,
                    })?;
                }
                Ok(())
            })();
            let (error_code, error_message) = match res {
                Ok(()) => (ErrorCode::None, None),
                Err((c, m)) => (c, Some(m)),
            };
            results.push(TopicResult {
                name: t.name.clone(),
                error_code,
                error_message,
            });
        }
        self.publish(shard, vec![]).await;
        CreatePartitionsResponse {
            throttle_time_ms: 0,
            results,
        }
    }

    async fn alter_configs(
        &self,
        shard: &Rc<Shard>,
        r: IncrementalAlterConfigsRequest,
    ) -> IncrementalAlterConfigsResponse {
        let mut responses = Vec::new();
        for res in &r.resources {
            let outcome = (|| -> ItemResult<()> {
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
                    .store
                    .borrow()
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
                    })?;
                    if flush_ms.is_some() {
                        log_flush_policy(&res.resource_name, flush_ms.as_deref());
                    }
                }
                Ok(())
            })();
            let (error_code, error_message) = match outcome {
                Ok(()) => (ErrorCode::None, None),
                Err((c, m)) => (c, Some(m)),
            };
            responses.push(AlterConfigsResult {
                error_code,
                error_message,
                resource_type: res.resource_type,
                resource_name: res.resource_name.clone(),
            });
        }
        self.publish(shard, vec![]).await;
        IncrementalAlterConfigsResponse {
            throttle_time_ms: 0,
            responses,
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
