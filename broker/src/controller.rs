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

pub struct Controller {
    store: RefCell<Box<dyn MetadataStore>>,
    one_at_a_time: glommio::sync::Semaphore,
    defaults: TopicConfig,
    default_partitions: u32,
    /// The next producer id to hand out (up to the store's `producer_ids_reserved`).
    next_producer_id: Cell<u64>,
}

type ItemResult<T> = Result<T, (ErrorCode, String)>;

impl Controller {
    pub fn new(
        store: Box<dyn MetadataStore>,
        defaults: TopicConfig,
        default_partitions: u32,
    ) -> Controller {
        Controller {
            next_producer_id: Cell::new(store.state().producer_ids_reserved),
            store: RefCell::new(store),
            one_at_a_time: glommio::sync::Semaphore::new(1),
            defaults,
            default_partitions,
        }
    }

    pub async fn handle(&self, shard: &Rc<Shard>, op: AdminOp) -> AnyResponse {
        let Ok(_permit) = self.one_at_a_time.acquire_permit(1).await else {
            return op.failed(ErrorCode::BrokerShuttingDown, "controller is stopping");
        };
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
                MetaError::Io { .. } | MetaError::Corrupt { .. } => {
                    tracing::error!(error = %e, "metadata store failed");
                    (ErrorCode::StorageError, e.to_string())
                }
            })
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
                    if let Err((code, message)) = self.submit(MetadataCommand::CreateTopic(meta)) {
                        result.error_code = code;
                        result.error_message = Some(message);
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
                    self.submit(MetadataCommand::AlterConfigs {
                        name: res.resource_name.clone(),
                        set,
                        remove,
                    })?;
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
