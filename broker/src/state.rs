//! What every shard knows about topics: an immutable snapshot of metadata, shared by `Arc` and
//! replaced whole when metadata changes. A request clones the `Arc` once and reads it without
//! locks; a change never tears a request's view.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use quiver_proto::{PartitionId, ShardId};

use crate::meta::{MetadataState, TopicMeta};
use crate::topic::{ConfigValueError, TopicConfig};

/// A partition inside this broker: the topic's id (so a re-created topic never meets an old
/// topic's log) and the partition number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
}

/// Metadata as every shard sees it.
#[derive(Debug)]
pub struct Snapshot {
    pub version: u64,
    pub shard_count: usize,
    pub topics: HashMap<String, Arc<TopicInfo>>,
}

impl Snapshot {
    pub fn build(
        state: &MetadataState,
        defaults: &TopicConfig,
        shard_count: usize,
    ) -> Result<Snapshot, ConfigValueError> {
        let mut topics = HashMap::with_capacity(state.topics.len());
        for (name, meta) in &state.topics {
            let config = TopicConfig::resolve(defaults, &meta.configs)?;
            let id = u128::from_str_radix(&meta.id, 16).unwrap_or(0);
            let internal = crate::topic::is_internal(name);
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
        Ok(Snapshot {
            version: state.version,
            shard_count,
            topics,
        })
    }

    pub fn topic(&self, name: &str) -> Option<&Arc<TopicInfo>> {
        self.topics.get(name)
    }

    /// The shard that owns a partition.
    pub fn owner(&self, topic: &TopicInfo, partition: PartitionId) -> ShardId {
        owner_of(topic.id, partition, self.shard_count)
    }
}

/// Placement: a topic's partitions go round-robin over the shards, starting at a shard chosen by
/// the topic id. Rationale: stateless and stable (a partition never moves while the broker
/// runs, so no log is ever handed between cores), consecutive partitions of one topic land on
/// different cores, and many small topics spread by their random ids.
pub fn owner_of(topic_id: u128, partition: PartitionId, shard_count: usize) -> ShardId {
    let n = shard_count.max(1) as u128;
    let start = (topic_id ^ (topic_id >> 64)) % n;
    ShardId(((start + partition.0 as u128) % n) as u32)
}

/// Where a topic's partition logs live: `<data_dir>/topics/<name>.<id>/<partition>/`.
pub fn topic_dir(data_dir: &Path, meta: &TopicMeta) -> PathBuf {
    data_dir.join("topics").join(topic_dir_name(meta))
}

/// A topic directory's name, `<name>.<id>`: the start sweep (`sweep_topic_dirs`) removes any
/// directory not named so for a topic the metadata holds, so this is the one place that says it.
fn topic_dir_name(meta: &TopicMeta) -> String {
    format!("{}.{}", meta.name, meta.id)
}

/// Where a deleted topic's directory goes until the engine's deleter has removed it:
/// `<data_dir>/topics/.deleted.<name>.<id>`. Start removes any left by a crash
/// (`sweep_topic_dirs`).
pub fn deleted_topic_dir(data_dir: &Path, meta: &TopicMeta) -> PathBuf {
    data_dir
        .join("topics")
        .join(format!("{DELETED_TOPIC_PREFIX}{}", topic_dir_name(meta)))
}

const DELETED_TOPIC_PREFIX: &str = ".deleted.";

/// Hands to the engine's deleter the topic directories a crash left behind: those of deletions
/// it interrupted after the rename (`.deleted.<name>.<id>`), and those of topics the metadata
/// does not hold, which a crash between the deletion's commit and the rename leaves. Those are
/// renamed to the deleted form first, so their logs are never opened again.
pub fn sweep_topic_dirs(data_dir: &Path, state: &MetadataState) {
    let topics = data_dir.join("topics");
    let Ok(entries) = std::fs::read_dir(&topics) else {
        return;
    };
    let live: std::collections::HashSet<String> =
        state.topics.values().map(topic_dir_name).collect();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) || live.contains(&name) {
            continue;
        }
        let path = if name.starts_with(DELETED_TOPIC_PREFIX) {
            entry.path()
        } else {
            let to = topics.join(format!("{DELETED_TOPIC_PREFIX}{name}"));
            if let Err(e) = std::fs::rename(entry.path(), &to) {
                tracing::warn!(dir = %entry.path().display(), error = %e, "cannot move aside the directory of a topic the metadata does not hold");
                continue;
            }
            tracing::warn!(dir = %entry.path().display(), "removing the directory of a topic the metadata does not hold (its deletion was interrupted)");
            to
        };
        quiver_engine::delete_dir_paced(path);
    }
}

pub fn partition_dir(data_dir: &Path, meta: &TopicMeta, partition: PartitionId) -> PathBuf {
    topic_dir(data_dir, meta).join(partition.0.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_is_balanced_within_a_topic_and_stable() {
        for shards in 1..=8 {
            for id in [0u128, 1, 7, u128::MAX, 0xdead_beef_u128 << 64] {
                let mut count = vec![0; shards];
                for p in 0..(shards as u32 * 3) {
                    let s = owner_of(id, PartitionId(p), shards);
                    assert_eq!(s, owner_of(id, PartitionId(p), shards), "stable");
                    count[s.0 as usize] += 1;
                }
                assert!(
                    count.iter().all(|&c| c == 3),
                    "{shards} shards, id {id}: {count:?}"
                );
            }
        }
    }
}
