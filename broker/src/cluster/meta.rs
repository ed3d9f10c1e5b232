//! Cluster metadata: which topics exist, their partition counts and config overrides.
//!
//! Metadata changes only through `MetadataCommand`s applied, in order, to a `MetadataState`: a
//! deterministic state machine. Today a `FileMetadataStore` makes each applied command durable by
//! writing the whole state to one file (small: a topic is a few hundred bytes). The cluster work
//! replaces the store with a Raft log of the same commands, and nothing above the
//! `MetadataStore` trait changes. Rationale: a replicated state machine needs exactly this shape,
//! so building it now costs nothing and saves a rewrite.
//!
//! On-disk format of `<data_dir>/meta/metadata.json`: a first line
//! `quiver-metadata v1 crc32=<8 hex digits>` and then the JSON of the state; the CRC covers the
//! JSON bytes. Writes go to a temporary file that is synced, renamed over the old one, and the
//! directory synced, so a crash leaves either the old or the new state, never a mix.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::security::acl::Acl;
use crate::security::quota::{QuotaConfig, QuotaEntity, QUOTAS_MAX};
use crate::security::users::{StoredCredential, USERS_MAX};

/// One topic as metadata knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    /// A random 128-bit id in hex: tells a re-created topic from an old one of the same name.
    pub id: String,
    pub partitions: u32,
    pub replication_factor: u16,
    /// Configs set on this topic (Kafka names); the rest come from broker defaults.
    pub configs: BTreeMap<String, String>,
    pub created_ms: i64,
    /// In a cluster, each partition's replicas, leader and ISR, by partition. Empty on a
    /// single broker (every partition is its own) and in metadata written before clusters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement: Vec<PartitionMeta>,
}

pub use super::partition::PartitionMeta;

impl TopicMeta {
    /// The name of this topic's directory under `topics/` (`dirs::topic_dir_name`).
    pub fn dir_name(&self) -> String {
        super::dirs::topic_dir_name(&self.name, &self.id)
    }

    /// Where `partition` lives in a cluster; `None` on a single broker (no placement) and for
    /// a partition the topic does not have.
    pub fn placed(&self, partition: u32) -> Option<&PartitionMeta> {
        self.placement.get(partition as usize)
    }

    /// Whether the topic is placed on a cluster's brokers (it is not on a single broker).
    pub fn is_placed(&self) -> bool {
        !self.placement.is_empty()
    }

    /// Checks a placement given for `partitions` partitions (all or none placed).
    fn check_placement(&self) -> Result<(), MetaError> {
        if self.is_placed() && self.placement.len() != self.partitions as usize {
            return Err(MetaError::Invalid(format!(
                "topic '{}' has {} partitions and {} placements",
                self.name,
                self.partitions,
                self.placement.len()
            )));
        }
        for (p, m) in self.placement.iter().enumerate() {
            m.check().map_err(|why| {
                MetaError::Invalid(format!("topic '{}' partition {p}: {why}", self.name))
            })?;
        }
        Ok(())
    }
}

/// A broker as the cluster's metadata knows it (registered through the quorum).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerMeta {
    pub id: u32,
    /// Host clients connect to, and the QUIC port.
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
    pub shard_count: u16,
    /// A random id of the process that registered, so a restart is told from a duplicate.
    pub incarnation: u64,
    /// The broker epoch: the metadata version at which it registered last.
    pub epoch: u64,
    /// Fenced: its session lapsed; it leads nothing until it is heard from again.
    pub fenced: bool,
    /// A controller-only voter (`process_roles = "controller"`): registered so the cluster
    /// knows it, but holds no partitions and is not listed to clients.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub controller_only: bool,
    /// It asked to stop (`ControlledShutdown`): fenced, and not unfenced by being heard from,
    /// until it registers again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shutting_down: bool,
}

/// Everything metadata knows. `version` counts applied commands.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataState {
    pub version: u64,
    pub topics: BTreeMap<String, TopicMeta>,
    /// Producer ids below this may have been handed out: after a restart the controller hands
    /// out ids from here, so an id is never given twice (ids are reserved in blocks).
    #[serde(default)]
    pub producer_ids_reserved: u64,
    /// Directory names (`<name>.<id>`) of the topics deleted last, newest last, at most
    /// [`DELETED_TOPICS_KEPT`]. A start that finds one of these directories knows its deletion
    /// was committed and finishes it; any other directory the metadata does not hold is put
    /// aside (`*.stray`), never deleted (`dirs::sweep`).
    #[serde(default)]
    pub deleted_topic_dirs: Vec<String>,
    /// The cluster's id, fixed by the first command a quorum commits (`InitCluster`). `None` on
    /// a single broker, whose id lives in `meta/cluster.id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// Brokers registered with the quorum, by id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub brokers: BTreeMap<u32, BrokerMeta>,
    /// SCRAM credentials: user, then mechanism name (`security::users`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scram: BTreeMap<String, BTreeMap<String, StoredCredential>>,
    /// The cluster's secret for SCRAM decoys (hex; `scram::Credential::decoy`): a user that
    /// does not exist is answered alike on every broker. Set with the first user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scram_decoy_key: Option<String>,
    /// Access control lists (`security::acl`).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub acls: BTreeSet<Acl>,
    /// Client quotas (`security::quota`), one entry per entity, in entity order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quotas: Vec<QuotaConfig>,
}

/// Most ACL bindings the metadata holds: bounds each shard's index and DescribeAcls' answer.
pub const ACLS_MAX: usize = 100_000;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Deleted topics remembered in metadata. The controller renames a deleted topic's directory
/// right after the deletion commits, so only the last few can still be on disk after a crash.
pub const DELETED_TOPICS_KEPT: usize = 1024;

/// A change to metadata. Commands are checked by the broker before they are submitted; `apply`
/// checks only what keeps the state consistent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataCommand {
    CreateTopic(TopicMeta),
    DeleteTopic {
        name: String,
    },
    CreatePartitions {
        name: String,
        total: u32,
        /// In a cluster, where the new partitions live (as `TopicMeta::placement`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        placement: Vec<PartitionMeta>,
    },
    AlterConfigs {
        name: String,
        set: BTreeMap<String, String>,
        remove: Vec<String>,
    },
    /// Producer ids up to `up_to` (exclusive) may be handed out.
    ReserveProducerIds {
        up_to: u64,
    },
    /// A block of `count` producer ids for one broker of a cluster: the block starts at the
    /// state's `producer_ids_reserved` when the command applies ([`Applied::ProducerIds`]), so
    /// brokers asking at once get different blocks.
    AllocateProducerIds {
        count: u64,
    },
    /// Fixes the cluster id; a later one with another id is refused. `carried`: the topics
    /// of a broker that ran alone before (placed on it), made part of the cluster with its
    /// creation when this command is the first (ignored by a repeat of the same id).
    InitCluster {
        cluster_id: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        carried: Vec<TopicMeta>,
        /// With `carried`: the producer ids that broker may have handed out.
        #[serde(default, skip_serializing_if = "is_zero")]
        producer_ids_reserved: u64,
    },
    /// A broker (re)registers: its address, rack and shards; it is unfenced.
    RegisterBroker(BrokerMeta),
    /// A broker's session lapsed (`fenced: true`) or it was heard from again (`false`).
    /// Leaderships and ISRs follow (`election::reelect`).
    SetFenced {
        id: u32,
        fenced: bool,
    },
    /// A broker stopping cleanly (SIGTERM): its leaderships move away and it leaves every ISR
    /// now, before it stops, rather than after its session lapses; it stays fenced until it
    /// registers again.
    ControlledShutdown {
        id: u32,
        /// The stopping process's registration (`BrokerMeta::incarnation`): one that commits
        /// late, after the broker started again and registered anew, changes nothing. `None`
        /// (entries written before it existed): any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        incarnation: Option<u64>,
    },
    /// A partition's leader changes its ISR (shrinks it when a follower falls behind, expands
    /// it when one has caught up), in the epochs it last saw (`election::check_isr_change`).
    AlterIsr {
        topic: String,
        partition: u32,
        leader: u32,
        leader_epoch: u32,
        partition_epoch: u32,
        isr: Vec<u32>,
    },
    /// Moves a partition's replicas to `replicas` (the preferred leader first), through
    /// `cluster::reassign`: added replicas catch up and join the ISR before removed ones go.
    Reassign {
        topic: String,
        partition: u32,
        replicas: Vec<u32>,
    },
    /// Creates or replaces `user`'s SCRAM credential for `mechanism`.
    UpsertScram {
        user: String,
        mechanism: String,
        credential: StoredCredential,
        /// The decoy secret, taken when the state has none yet.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        decoy_key: Option<String>,
    },
    /// Removes `user`'s credential for `mechanism` (the user goes with its last one).
    DeleteScram {
        user: String,
        mechanism: String,
    },
    /// Adds bindings (one already there is left as it is).
    CreateAcls {
        acls: Vec<Acl>,
    },
    /// Removes exactly these bindings (the controller chose them by the request's filters).
    DeleteAcls {
        acls: Vec<Acl>,
    },
    /// Sets and removes an entity's quotas (an entity left with none goes).
    AlterQuotas {
        entity: QuotaEntity,
        set: BTreeMap<String, u64>,
        remove: Vec<String>,
    },
}

/// What applying a command produced, beyond the new state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    Done,
    /// `AllocateProducerIds`: the block `[start, start + count)` is the proposer's.
    ProducerIds {
        start: u64,
    },
}

/// Why a command cannot apply.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),
    #[error("topic '{name}' has {current} partitions; the count can only grow")]
    PartitionsCannotShrink { name: String, current: u32 },
    #[error("metadata file {path}: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("this cluster's id is {have}; a command for cluster {wanted} is refused")]
    ClusterIdMismatch { have: String, wanted: String },
    #[error("the controller quorum did not commit the change: {0}")]
    Unavailable(String),
    #[error("broker {0} is not registered")]
    UnknownBroker(u32),
    #[error("inconsistent change refused: {0}")]
    Invalid(String),
    #[error("stale change refused: {0}")]
    Stale(String),
    #[error("metadata version {0} cannot grow: the metadata file is damaged")]
    VersionExhausted(u64),
    #[error("metadata I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "metadata file {path} is missing, but {topics} holds {count} topic directories (for \
         example {example}): refusing to start with empty metadata, which would abandon their \
         data. Restore {path} from a backup, or move {topics} away to start empty"
    )]
    Missing {
        path: PathBuf,
        topics: PathBuf,
        count: usize,
        example: String,
    },
}

/// Whether broker `id` may lead or join an ISR: registered, not fenced, not controller-only.
fn can_lead(brokers: &BTreeMap<u32, BrokerMeta>, id: u32) -> bool {
    brokers
        .get(&id)
        .is_some_and(|m| !m.fenced && !m.controller_only)
}

impl MetadataState {
    /// Elects leaders and shrinks ISRs after a change of brokers' liveness; `restarted`: a
    /// broker that registered again (its leaderships move as after a fence).
    fn reelect(&mut self, restarted: Option<u32>) {
        let brokers = &self.brokers;
        let live = |b: u32| can_lead(brokers, b);
        for t in self.topics.values_mut() {
            let unclean = t
                .configs
                .get(super::election::UNCLEAN_ELECTION)
                .is_some_and(|v| v == "true");
            for p in &mut t.placement {
                match restarted {
                    Some(id) => super::election::restarted(p, id, live, unclean),
                    None => super::election::reelect(p, live, unclean),
                };
            }
        }
    }

    /// Applies one command. On error the state is unchanged.
    pub fn apply(&mut self, cmd: &MetadataCommand) -> Result<Applied, MetaError> {
        // The version counts commands; one that cannot grow (a damaged or forged file) refuses
        // every change rather than wrap, which would make a new state look like an old one.
        let next_version = self
            .version
            .checked_add(1)
            .ok_or(MetaError::VersionExhausted(self.version))?;
        match cmd {
            MetadataCommand::CreateTopic(t) => {
                if self.topics.contains_key(&t.name) {
                    return Err(MetaError::TopicExists(t.name.clone()));
                }
                t.check_placement()?;
                self.topics.insert(t.name.clone(), t.clone());
            }
            MetadataCommand::DeleteTopic { name } => {
                let t = self
                    .topics
                    .remove(name)
                    .ok_or_else(|| MetaError::UnknownTopic(name.clone()))?;
                self.deleted_topic_dirs.push(t.dir_name());
                if self.deleted_topic_dirs.len() > DELETED_TOPICS_KEPT {
                    let excess = self.deleted_topic_dirs.len() - DELETED_TOPICS_KEPT;
                    self.deleted_topic_dirs.drain(..excess);
                }
            }
            MetadataCommand::CreatePartitions {
                name,
                total,
                placement,
            } => {
                let t = self
                    .topics
                    .get_mut(name)
                    .ok_or_else(|| MetaError::UnknownTopic(name.clone()))?;
                if *total <= t.partitions {
                    return Err(MetaError::PartitionsCannotShrink {
                        name: name.clone(),
                        current: t.partitions,
                    });
                }
                let mut grown = t.clone();
                grown.placement.extend(placement.iter().cloned());
                grown.partitions = *total;
                if t.is_placed() != grown.is_placed() {
                    return Err(MetaError::Invalid(format!(
                        "topic '{name}' grows to {total} partitions with {} placements",
                        placement.len()
                    )));
                }
                grown.check_placement()?;
                *t = grown;
            }
            MetadataCommand::AlterConfigs { name, set, remove } => {
                let t = self
                    .topics
                    .get_mut(name)
                    .ok_or_else(|| MetaError::UnknownTopic(name.clone()))?;
                for k in remove {
                    t.configs.remove(k);
                }
                for (k, v) in set {
                    t.configs.insert(k.clone(), v.clone());
                }
            }
            MetadataCommand::ReserveProducerIds { up_to } => {
                self.producer_ids_reserved = self.producer_ids_reserved.max(*up_to);
            }
            MetadataCommand::AllocateProducerIds { count } => {
                let start = self.producer_ids_reserved;
                self.producer_ids_reserved = start.saturating_add(*count);
                self.version = next_version;
                return Ok(Applied::ProducerIds { start });
            }
            MetadataCommand::InitCluster {
                cluster_id,
                carried,
                producer_ids_reserved,
            } => match &self.cluster_id {
                Some(have) if have != cluster_id => {
                    return Err(MetaError::ClusterIdMismatch {
                        have: have.clone(),
                        wanted: cluster_id.clone(),
                    })
                }
                Some(_) => {}
                None => {
                    for t in carried {
                        if self.topics.contains_key(&t.name) {
                            return Err(MetaError::TopicExists(t.name.clone()));
                        }
                        t.check_placement()?;
                    }
                    self.cluster_id = Some(cluster_id.clone());
                    self.producer_ids_reserved =
                        self.producer_ids_reserved.max(*producer_ids_reserved);
                    for t in carried {
                        self.topics.insert(t.name.clone(), t.clone());
                    }
                }
            },
            MetadataCommand::RegisterBroker(b) => {
                let mut b = b.clone();
                b.epoch = next_version;
                b.fenced = false;
                let id = b.id;
                self.brokers.insert(id, b);
                self.reelect(Some(id));
            }
            MetadataCommand::SetFenced { id, fenced } => {
                self.brokers
                    .get_mut(id)
                    .ok_or(MetaError::UnknownBroker(*id))?
                    .fenced = *fenced;
                self.reelect(None);
            }
            MetadataCommand::ControlledShutdown { id, incarnation } => {
                let b = self
                    .brokers
                    .get_mut(id)
                    .ok_or(MetaError::UnknownBroker(*id))?;
                if incarnation.is_some_and(|i| i != b.incarnation) {
                    return Err(MetaError::Stale(format!(
                        "broker {id} stopping in incarnation {}, registered since in another",
                        incarnation.unwrap_or_default()
                    )));
                }
                b.fenced = true;
                b.shutting_down = true;
                self.reelect(None);
            }
            MetadataCommand::AlterIsr {
                topic,
                partition,
                leader,
                leader_epoch,
                partition_epoch,
                isr,
            } => {
                let brokers = &self.brokers;
                let live = |b: u32| can_lead(brokers, b);
                let p = self
                    .topics
                    .get_mut(topic)
                    .ok_or_else(|| MetaError::UnknownTopic(topic.clone()))?
                    .placement
                    .get_mut(*partition as usize)
                    .ok_or_else(|| {
                        MetaError::Invalid(format!(
                            "topic '{topic}' has no placed partition {partition}"
                        ))
                    })?;
                super::election::check_isr_change(
                    p,
                    *leader,
                    *leader_epoch,
                    *partition_epoch,
                    isr,
                    live,
                )
                .map_err(|r| match r {
                    super::election::IsrRefusal::Stale(why) => MetaError::Stale(why),
                    super::election::IsrRefusal::Invalid(why) => MetaError::Invalid(why),
                })?;
                p.isr = isr.clone();
                p.partition_epoch = p.partition_epoch.wrapping_add(1);
                let brokers = &self.brokers;
                if !super::reassign::complete(p, |b: u32| can_lead(brokers, b)) {
                    super::election::prefer(p, |b: u32| can_lead(brokers, b));
                }
            }
            MetadataCommand::Reassign {
                topic,
                partition,
                replicas,
            } => {
                let mut seen = std::collections::BTreeSet::new();
                for r in replicas {
                    if !seen.insert(*r) {
                        return Err(MetaError::Invalid(format!(
                            "replicas {replicas:?} name broker {r} twice"
                        )));
                    }
                    match self.brokers.get(r) {
                        None => return Err(MetaError::UnknownBroker(*r)),
                        Some(b) if b.controller_only => {
                            return Err(MetaError::Invalid(format!(
                                "broker {r} is controller-only and holds no partitions"
                            )))
                        }
                        Some(_) => {}
                    }
                }
                let brokers = &self.brokers;
                let live = |b: u32| can_lead(brokers, b);
                let p = self
                    .topics
                    .get(topic)
                    .ok_or_else(|| MetaError::UnknownTopic(topic.clone()))?
                    .placement
                    .get(*partition as usize)
                    .ok_or_else(|| {
                        MetaError::Invalid(format!(
                            "topic '{topic}' has no placed partition {partition}"
                        ))
                    })?;
                let mut moved = p.clone();
                super::reassign::start(&mut moved, replicas, live).map_err(MetaError::Invalid)?;
                if let Some(t) = self.topics.get_mut(topic) {
                    t.placement[*partition as usize] = moved;
                }
            }
            MetadataCommand::UpsertScram {
                user,
                mechanism,
                credential,
                decoy_key,
            } => {
                crate::security::users::check_user_name(user).map_err(MetaError::Invalid)?;
                if quiver_proto::scram::Mechanism::from_name(mechanism).is_none() {
                    return Err(MetaError::Invalid(format!(
                        "unknown mechanism '{mechanism}'"
                    )));
                }
                if !self.scram.contains_key(user) && self.scram.len() >= USERS_MAX {
                    return Err(MetaError::Invalid(format!(
                        "the cluster holds {USERS_MAX} users, its most"
                    )));
                }
                self.scram
                    .entry(user.clone())
                    .or_default()
                    .insert(mechanism.clone(), credential.clone());
                if self.scram_decoy_key.is_none() {
                    self.scram_decoy_key = decoy_key.clone();
                }
            }
            MetadataCommand::DeleteScram { user, mechanism } => {
                let creds = self
                    .scram
                    .get_mut(user)
                    .filter(|c| c.contains_key(mechanism));
                let Some(creds) = creds else {
                    return Err(MetaError::Invalid(format!(
                        "user '{user}' has no {mechanism} credential"
                    )));
                };
                creds.remove(mechanism);
                if creds.is_empty() {
                    self.scram.remove(user);
                }
            }
            MetadataCommand::CreateAcls { acls } => {
                for a in acls {
                    a.check().map_err(MetaError::Invalid)?;
                }
                let new = acls.iter().filter(|a| !self.acls.contains(a)).count();
                if self.acls.len() + new > ACLS_MAX {
                    return Err(MetaError::Invalid(format!(
                        "the cluster would hold more than {ACLS_MAX} ACLs"
                    )));
                }
                self.acls.extend(acls.iter().cloned());
            }
            MetadataCommand::DeleteAcls { acls } => {
                for a in acls {
                    self.acls.remove(a);
                }
            }
            MetadataCommand::AlterQuotas {
                entity,
                set,
                remove,
            } => {
                crate::security::quota::check_change(entity, set, remove)
                    .map_err(MetaError::Invalid)?;
                let at = self.quotas.binary_search_by(|q| q.entity.cmp(entity));
                if at.is_err() && self.quotas.len() >= QUOTAS_MAX && !set.is_empty() {
                    return Err(MetaError::Invalid(format!(
                        "the cluster holds {QUOTAS_MAX} quota entities, its most"
                    )));
                }
                let i = match at {
                    Ok(i) => i,
                    Err(i) => {
                        self.quotas.insert(
                            i,
                            QuotaConfig {
                                entity: entity.clone(),
                                values: BTreeMap::new(),
                            },
                        );
                        i
                    }
                };
                let values = &mut self.quotas[i].values;
                for k in remove {
                    values.remove(k);
                }
                values.extend(set.iter().map(|(k, v)| (k.clone(), *v)));
                if values.is_empty() {
                    self.quotas.remove(i);
                }
            }
        }
        self.version = next_version;
        Ok(Applied::Done)
    }
}

/// The state in `<data_dir>/meta/metadata.json`, if that file exists: the metadata of a broker
/// that ran alone (a cluster's broker keeps its metadata in the quorum's log instead).
pub fn read_file_state(data_dir: &Path) -> Result<Option<MetadataState>, MetaError> {
    let path = data_dir.join("meta").join("metadata.json");
    match fs::read(&path) {
        Ok(bytes) => decode(&path, &bytes).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(MetaError::Io { path, source }),
    }
}

/// Where metadata is kept. One instance per broker, owned by the controller shard.
///
/// A change is made in three steps, so that its I/O can run off the core (the controller runs
/// the write on glommio's blocking pool): `prepare` applies the command to a copy and says what
/// write makes it durable, the caller runs the write, then `commit` makes the new state current.
/// Only one change may be between `prepare` and `commit` at a time (the controller's turn).
pub trait MetadataStore {
    fn state(&self) -> &MetadataState;
    /// The state after `cmd`, and the write that makes it durable. Changes nothing.
    fn prepare(&self, cmd: &MetadataCommand) -> Result<(MetadataState, DurableWrite), MetaError>;
    /// `next` (from `prepare`) is durable: make it the state.
    fn commit(&mut self, next: MetadataState);
    /// Applies `cmd` durably, here and now (blocking): when this returns Ok the change survives
    /// kill -9. For tools and tests; the controller uses the three steps.
    fn submit(&mut self, cmd: MetadataCommand) -> Result<&MetadataState, MetaError> {
        let (next, write) = self.prepare(&cmd)?;
        write.run()?;
        self.commit(next);
        Ok(self.state())
    }
}

/// A write that makes a new metadata state durable: the whole file, written to a temporary file,
/// synced, renamed over the old one, and the directory synced. `Send`, to run on a blocking pool.
#[derive(Debug)]
pub struct DurableWrite {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl DurableWrite {
    /// Runs the write (blocking I/O: a file write and two syncs).
    pub fn run(self) -> Result<(), MetaError> {
        let tmp = self.path.with_extension("json.tmp");
        write_durably(&self.path, &tmp, &self.bytes, 0o600).map_err(|source| MetaError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

/// Metadata in one file, rewritten atomically per change.
pub struct FileMetadataStore {
    path: PathBuf,
    state: MetadataState,
}

const HEADER_PREFIX: &str = "quiver-metadata v1 crc32=";

impl FileMetadataStore {
    /// Opens (or creates) the store under `<data_dir>/meta`.
    pub fn open(data_dir: &Path) -> Result<FileMetadataStore, MetaError> {
        let dir = data_dir.join("meta");
        fs::create_dir_all(&dir).map_err(|source| MetaError::Io {
            path: dir.clone(),
            source,
        })?;
        let path = dir.join("metadata.json");
        let state = match fs::read(&path) {
            Ok(bytes) => decode(&path, &bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A first start, unless topics are already on disk: metadata is written before
                // any topic directory is made, so their presence means the file was lost.
                let topics = data_dir.join("topics");
                let live = super::dirs::topic_dirs_on_disk(&topics);
                if let Some(example) = live.first() {
                    return Err(MetaError::Missing {
                        path,
                        topics,
                        count: live.len(),
                        example: example.clone(),
                    });
                }
                MetadataState::default()
            }
            Err(source) => return Err(MetaError::Io { path, source }),
        };
        // A leftover temporary file is a write that never reached its rename: the old state
        // stands and the leftover goes.
        let _ = fs::remove_file(dir.join("metadata.json.tmp"));
        Ok(FileMetadataStore { path, state })
    }

    /// The file's bytes for `state`: the checksummed header line, then the JSON.
    fn encode(state: &MetadataState) -> Vec<u8> {
        let body = serde_json::to_vec_pretty(state).expect("metadata serializes");
        let mut file = format!("{HEADER_PREFIX}{:08x}\n", crc32fast::hash(&body)).into_bytes();
        file.extend_from_slice(&body);
        file
    }
}

/// Replaces (or creates) `path` with `bytes` so that a crash leaves the old file or the new one,
/// never a mix: written to `tmp` (created with `mode`, before the umask) and synced, renamed over
/// `path`, and the directory synced so the rename itself survives.
pub(crate) fn write_durably(
    path: &Path,
    tmp: &Path,
    bytes: &[u8],
    mode: u32,
) -> std::io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(tmp, path)?;
    File::open(path.parent().expect("has a parent"))?.sync_all()
}

fn decode(path: &Path, bytes: &[u8]) -> Result<MetadataState, MetaError> {
    let corrupt = |message: String| MetaError::Corrupt {
        path: path.to_path_buf(),
        message,
    };
    let newline = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| corrupt("no header line".into()))?;
    let header = std::str::from_utf8(&bytes[..newline])
        .map_err(|_| corrupt("header is not UTF-8".into()))?;
    let hex = header
        .strip_prefix(HEADER_PREFIX)
        .ok_or_else(|| corrupt(format!("unknown header '{header}'")))?;
    let want =
        u32::from_str_radix(hex, 16).map_err(|_| corrupt(format!("bad checksum field '{hex}'")))?;
    let body = &bytes[newline + 1..];
    let got = crc32fast::hash(body);
    if got != want {
        return Err(corrupt(format!(
            "checksum mismatch (stored {want:08x}, computed {got:08x})"
        )));
    }
    let state: MetadataState = serde_json::from_slice(body).map_err(|e| corrupt(e.to_string()))?;
    if state.version == u64::MAX {
        return Err(corrupt(
            "version cannot grow (every change adds one to it)".into(),
        ));
    }
    Ok(state)
}

impl MetadataStore for FileMetadataStore {
    fn state(&self) -> &MetadataState {
        &self.state
    }

    fn prepare(&self, cmd: &MetadataCommand) -> Result<(MetadataState, DurableWrite), MetaError> {
        let mut next = self.state.clone();
        next.apply(cmd)?;

        let write = DurableWrite {
            path: self.path.clone(),
            bytes: Self::encode(&next),
        };
        Ok((next, write))
    }

    fn commit(&mut self, next: MetadataState) {
        self.state = next;
    }
}

/// A fresh random topic id.
pub fn new_topic_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests;
