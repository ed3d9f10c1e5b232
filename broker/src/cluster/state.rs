//! What every shard knows about topics: an immutable snapshot of metadata, shared by `Arc` and
//! replaced whole when metadata changes. A request clones the `Arc` once and reads it without
//! locks; a change never tears a request's view.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use quiver_proto::PartitionId;

use super::dirs::{self, Sweep};
use super::meta::{BrokerMeta, MetadataState, TopicMeta};
use super::topic::{ConfigValueError, TopicConfig};

/// A partition inside this broker: the topic's id (so a re-created topic never meets an old
/// topic's log) and the partition number.
///
/// Packed to 8-byte alignment: 24 bytes, not 32 (a `u128` would align it to 16), in maps with
/// an entry per partition (100,000 on a broker).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(C, packed(8))]
pub struct PartKey {
    pub topic_id: u128,
    pub partition: PartitionId,
}

/// One topic, resolved.
#[derive(Debug)]
pub struct TopicInfo {
    pub meta: TopicMeta,
    pub id: u128,
    pub config: TopicConfig,
    pub internal: bool,
}

impl TopicInfo {
    pub fn key(&self, partition: PartitionId) -> PartKey {
        PartKey {
            topic_id: self.id,
            partition,
        }
    }

    pub fn has_partition(&self, partition: PartitionId) -> bool {
        partition.0 < self.meta.partitions
    }

    /// The partition's replicas, the preferred leader first (`me` alone on a single broker).
    pub fn replicas(&self, partition: PartitionId, me: u32) -> Vec<u32> {
        match self.meta.placed(partition.0) {
            None => vec![me],
            Some(p) => p.replicas.clone(),
        }
    }

    /// The partition's in-sync replicas (`me` alone on a single broker).
    pub fn isr(&self, partition: PartitionId, me: u32) -> Vec<u32> {
        match self.meta.placed(partition.0) {
            None => vec![me],
            Some(p) => p.isr.clone(),
        }
    }

    /// The partition's leader as metadata names it (on a single broker, `me`); `None` for a
    /// partition the topic does not have, or one without a leader now.
    pub fn leader(&self, partition: PartitionId, me: u32) -> Option<u32> {
        if !self.meta.is_placed() {
            return self.has_partition(partition).then_some(me);
        }
        self.meta
            .placed(partition.0)
            .filter(|p| p.has_leader())
            .map(|p| p.leader)
    }

    /// The partition's leader epoch (0 on a single broker, where the leader never changes).
    pub fn leader_epoch(&self, partition: PartitionId) -> u32 {
        self.meta.placed(partition.0).map_or(0, |p| p.leader_epoch)
    }

    /// Whether broker `me` holds a replica of the partition (and so opens its log).
    pub fn is_replica(&self, partition: PartitionId, me: u32) -> bool {
        match self.meta.placed(partition.0) {
            None => !self.meta.is_placed(),
            Some(p) => p.replicas.contains(&me),
        }
    }
}

/// This process's registration id in a cluster (`BrokerMeta::incarnation`), set once when it
/// joins. Until metadata holds the registration of this very process, the broker leads nothing:
/// a broker restarted within its session timeout would otherwise lead, in its old epoch, logs
/// whose unflushed tail it lost while its followers kept it (its registration moves its
/// leaderships to a new epoch first, `cluster::election`).
static INCARNATION: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// This process's incarnation, once it joined a cluster.
pub fn incarnation() -> Option<u64> {
    INCARNATION.get().copied()
}

/// Records this process's incarnation (the first call wins).
pub fn set_incarnation(incarnation: u64) {
    let _ = INCARNATION.set(incarnation);
}

/// Metadata as every shard sees it.
#[derive(Debug)]
pub struct Snapshot {
    pub version: u64,
    pub topics: HashMap<String, Arc<TopicInfo>>,
    /// This broker's id.
    pub me: u32,
    /// The cluster's brokers as registered (empty on a single broker).
    pub brokers: std::collections::BTreeMap<u32, BrokerMeta>,
    /// Metadata holds this process's own registration (always on a single broker).
    pub registered: bool,
    /// Users' credentials and the ACLs.
    pub security: Arc<crate::security::SecurityState>,
}

impl Snapshot {
    pub fn build(
        state: &MetadataState,
        defaults: &TopicConfig,
        me: u32,
    ) -> Result<Snapshot, ConfigValueError> {
        let mut topics = HashMap::with_capacity(state.topics.len());
        for (name, meta) in &state.topics {
            let config = TopicConfig::resolve(defaults, &meta.configs)?;
            let id = u128::from_str_radix(&meta.id, 16).unwrap_or(0);
            let internal = super::topic::is_internal(name);
            topics.insert(
                name.clone(),
                Arc::new(TopicInfo {
                    meta: meta.clone(),
                    id,
                    config,
                    internal,
                }),
            );
        }
        let registered = match INCARNATION.get() {
            None => true,
            Some(i) => {
                state.brokers.is_empty()
                    || state.brokers.get(&me).is_some_and(|b| b.incarnation == *i)
            }
        };
        Ok(Snapshot {
            version: state.version,
            topics,
            me,
            brokers: state.brokers.clone(),
            registered,
            security: Arc::new(crate::security::SecurityState {
                users: state.scram.clone(),
                decoy_key: crate::security::users::decoy_key(state.scram_decoy_key.as_deref()),
                acls: crate::security::acl::AclIndex::new(&state.acls),
                quotas: state.quotas.clone(),
                request_time_quotas: state.quotas.iter().any(|q| {
                    q.values
                        .contains_key(crate::security::quota::REQUEST_PERCENTAGE)
                }),
            }),
        })
    }

    pub fn topic(&self, name: &str) -> Option<&Arc<TopicInfo>> {
        self.topics.get(name)
    }

    /// Whether this broker runs in a cluster (its metadata names brokers).
    pub fn clustered(&self) -> bool {
        !self.brokers.is_empty()
    }

    /// Whether broker `id` is registered and not fenced (on a single broker: whether it is
    /// this one).
    pub fn is_live(&self, id: u32) -> bool {
        if !self.clustered() {
            return id == self.me;
        }
        self.brokers.get(&id).is_some_and(|b| !b.fenced)
    }

    /// Whether this broker leads the partition, and so takes its writes and serves its reads.
    /// Otherwise the leader metadata names, for the client's hint (`None`: no such partition).
    pub fn leads(&self, topic: &TopicInfo, partition: PartitionId) -> Result<(), Option<u32>> {
        match topic.leader(partition, self.me) {
            Some(l) if l == self.me && self.registered => Ok(()),
            Some(l) if l == self.me => Err(None),
            other => Err(other),
        }
    }

    /// A partition's leader if it can lead now: registered and not fenced (on a single broker,
    /// always this broker).
    pub fn live_leader(&self, topic: &TopicInfo, partition: PartitionId) -> Option<u32> {
        let leader = topic.leader(partition, self.me)?;
        if !self.clustered() {
            return Some(leader);
        }
        self.brokers
            .get(&leader)
            .filter(|b| !b.fenced)
            .map(|b| b.id)
    }
}

/// Finishes what a crash left in `topics/` (see `dirs::sweep`): the live directories are the
/// topics `state` holds; the deleted ones are those it lists as deleted.
pub fn sweep_topic_dirs(data_dir: &Path, state: &MetadataState) -> Sweep {
    let live: HashSet<String> = state.topics.values().map(TopicMeta::dir_name).collect();
    let deleted: HashSet<&str> = state
        .deleted_topic_dirs
        .iter()
        .map(String::as_str)
        .collect();
    dirs::sweep(data_dir, &live, &deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str) -> TopicMeta {
        TopicMeta {
            name: name.into(),
            id: crate::cluster::meta::new_topic_id(),
            partitions: 1,
            replication_factor: 1,
            configs: Default::default(),
            created_ms: 0,
            placement: vec![],
        }
    }

    #[test]
    fn the_sweep_deletes_only_what_metadata_deleted_and_puts_the_rest_aside() {
        let dir = tempfile::tempdir().unwrap();
        let topics = dir.path().join("topics");
        let (live, gone, unknown) = (meta("live"), meta("gone"), meta("unknown"));
        let mut state = MetadataState::default();
        state.topics.insert("live".into(), live.clone());
        state.deleted_topic_dirs.push(gone.dir_name());
        for t in [&live, &gone, &unknown] {
            std::fs::create_dir_all(topics.join(t.dir_name()).join("0")).unwrap();
        }
        let sweep = sweep_topic_dirs(dir.path(), &state);
        assert_eq!(sweep.strays, vec![unknown.dir_name()]);
        assert!(topics.join(live.dir_name()).join("0").is_dir());
        let stray = topics.join(format!("{}.stray", unknown.dir_name()));
        assert!(stray.join("0").is_dir(), "kept, renamed");
        assert!(!topics.join(gone.dir_name()).exists());
        // A second stray of the same name does not overwrite the first.
        std::fs::create_dir_all(topics.join(unknown.dir_name())).unwrap();
        let again = sweep_topic_dirs(dir.path(), &state);
        assert_eq!(again.strays.len(), 1);
        assert!(topics
            .join(format!("{}.stray.1", unknown.dir_name()))
            .is_dir());
        assert!(stray.join("0").is_dir());
        assert_eq!(dirs::topic_dirs_on_disk(&topics), vec![live.dir_name()]);
    }
}
