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

/// A topic directory's name, `<name>.<id>`: the start sweep (`sweep_topic_dirs`) puts aside any
/// directory not named so for a topic the metadata holds, so this is the one place that says it.
pub fn topic_dir_name(meta: &TopicMeta) -> String {
    format!("{}.{}", meta.name, meta.id)
}

/// Bytes a topic directory's name adds to the topic's name at most: `.deleted.` before it (while
/// it is deleted) and `.<32 hex digits>` after it. A topic name longer than the file system's
/// name limit minus this is refused at create (`topic::check_name_fits`).
pub const TOPIC_DIR_NAME_OVERHEAD: usize = DELETED_TOPIC_PREFIX.len() + 1 + 32;

/// Where a deleted topic's directory goes until the engine's deleter has removed it:
/// `<data_dir>/topics/.deleted.<name>.<id>`. Start removes any left by a crash
/// (`sweep_topic_dirs`).
pub fn deleted_topic_dir(data_dir: &Path, meta: &TopicMeta) -> PathBuf {
    data_dir
        .join("topics")
        .join(format!("{DELETED_TOPIC_PREFIX}{}", topic_dir_name(meta)))
}

const DELETED_TOPIC_PREFIX: &str = ".deleted.";
/// What a directory of `topics/` that the metadata does not hold is renamed to.
pub const STRAY_SUFFIX: &str = ".stray";

/// Directories in `topics` that look like live topics: neither being deleted nor put aside.
pub fn topic_dirs_on_disk(topics: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(topics) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(DELETED_TOPIC_PREFIX) && !is_stray(n))
        .collect();
    out.sort();
    out
}

fn is_stray(name: &str) -> bool {
    name.ends_with(STRAY_SUFFIX) || name.contains(&format!("{STRAY_SUFFIX}."))
}

/// What the start sweep did with the directories of `topics/`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Deletions a crash interrupted, finished now (handed to the paced deleter).
    pub deleted: Vec<String>,
    /// Directories the metadata does not hold, renamed to `<name>.stray` and kept.
    pub strays: Vec<String>,
}

/// Finishes what a crash left in `topics/`, deleting only what the metadata says was deleted:
/// - `.deleted.<name>.<id>` directories (a deletion interrupted after its rename) and directories
///   of topics the metadata lists as deleted (`MetadataState::deleted_topic_dirs`: interrupted
///   between the deletion's commit and the rename) go to the engine's paced deleter;
/// - any other directory the metadata does not hold is renamed to `<dir>.stray` (or
///   `<dir>.stray.<n>` if that exists) and logged, never deleted: it may be data that metadata
///   lost, and an operator decides. Its logs are never opened again.
pub fn sweep_topic_dirs(data_dir: &Path, state: &MetadataState) -> Sweep {
    let mut sweep = Sweep::default();
    let topics = data_dir.join("topics");
    let Ok(entries) = std::fs::read_dir(&topics) else {
        return sweep;
    };
    let live: std::collections::HashSet<String> =
        state.topics.values().map(topic_dir_name).collect();
    let deleted: std::collections::HashSet<&str> = state
        .deleted_topic_dirs
        .iter()
        .map(String::as_str)
        .collect();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) || live.contains(&name) || is_stray(&name) {
            continue;
        }
        if name.starts_with(DELETED_TOPIC_PREFIX) {
            sweep.deleted.push(name);
            quiver_engine::delete_dir_paced(entry.path());
        } else if deleted.contains(name.as_str()) {
            let to = topics.join(format!("{DELETED_TOPIC_PREFIX}{name}"));
            if let Err(e) = std::fs::rename(entry.path(), &to) {
                tracing::warn!(dir = %entry.path().display(), error = %e, "cannot move aside the directory of a deleted topic");
                continue;
            }
            tracing::info!(dir = %entry.path().display(), "finishing the deletion of a topic a crash interrupted");
            sweep.deleted.push(name);
            quiver_engine::delete_dir_paced(to);
        } else {
            let mut to = topics.join(format!("{name}{STRAY_SUFFIX}"));
            let mut n = 1;
            while to.exists() {
                to = topics.join(format!("{name}{STRAY_SUFFIX}.{n}"));
                n += 1;
            }
            match std::fs::rename(entry.path(), &to) {
                Ok(()) => {
                    tracing::warn!(dir = %entry.path().display(), moved_to = %to.display(), "a topic directory the metadata does not hold was put aside, not deleted; remove it once it is known to be unneeded");
                    sweep.strays.push(name);
                }
                Err(e) => {
                    tracing::warn!(dir = %entry.path().display(), error = %e, "cannot put aside a topic directory the metadata does not hold; it is left as it is")
                }
            }
        }
    }
    if !sweep.deleted.is_empty() || !sweep.strays.is_empty() {
        if let Err(e) = std::fs::File::open(&topics).and_then(|d| d.sync_all()) {
            tracing::warn!(dir = %topics.display(), error = %e, "cannot sync the topics directory after the start sweep");
        }
    }
    sweep
}

pub fn partition_dir(data_dir: &Path, meta: &TopicMeta, partition: PartitionId) -> PathBuf {
    topic_dir(data_dir, meta).join(partition.0.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str) -> TopicMeta {
        TopicMeta {
            name: name.into(),
            id: crate::meta::new_topic_id(),
            partitions: 1,
            replication_factor: 1,
            configs: Default::default(),
            created_ms: 0,
        }
    }

    #[test]
    fn the_sweep_deletes_only_what_metadata_deleted_and_puts_the_rest_aside() {
        let dir = tempfile::tempdir().unwrap();
        let topics = dir.path().join("topics");
        let (live, gone, unknown) = (meta("live"), meta("gone"), meta("unknown"));
        let mut state = MetadataState::default();
        state.topics.insert("live".into(), live.clone());
        state.deleted_topic_dirs.push(topic_dir_name(&gone));
        for t in [&live, &gone, &unknown] {
            std::fs::create_dir_all(topics.join(topic_dir_name(t)).join("0")).unwrap();
        }
        let sweep = sweep_topic_dirs(dir.path(), &state);
        assert_eq!(sweep.strays, vec![topic_dir_name(&unknown)]);
        assert!(topics.join(topic_dir_name(&live)).join("0").is_dir());
        let stray = topics.join(format!("{}.stray", topic_dir_name(&unknown)));
        assert!(stray.join("0").is_dir(), "kept, renamed");
        assert!(!topics.join(topic_dir_name(&gone)).exists());
        // A second stray of the same name does not overwrite the first.
        std::fs::create_dir_all(topics.join(topic_dir_name(&unknown))).unwrap();
        let again = sweep_topic_dirs(dir.path(), &state);
        assert_eq!(again.strays.len(), 1);
        assert!(topics
            .join(format!("{}.stray.1", topic_dir_name(&unknown)))
            .is_dir());
        assert!(stray.join("0").is_dir());
        assert_eq!(topic_dirs_on_disk(&topics), vec![topic_dir_name(&live)]);
    }

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
