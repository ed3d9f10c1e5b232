//! Which shard (core) owns a partition of this broker.

use quiver_proto::{PartitionId, ShardId};

/// Placement: a topic's partitions go round-robin over the shards, starting at a shard chosen by
/// the topic id. Rationale: stateless and stable (a partition never moves while the broker
/// runs, so no log is ever handed between cores), consecutive partitions of one topic land on
/// different cores, and many small topics spread by their random ids.
pub fn owner_of(topic_id: u128, partition: PartitionId, shard_count: usize) -> ShardId {
    let n = shard_count.max(1) as u128;
    let start = (topic_id ^ (topic_id >> 64)) % n;
    ShardId(((start + partition.0 as u128) % n) as u32)
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
