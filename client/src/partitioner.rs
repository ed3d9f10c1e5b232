//! Choosing a partition for a record that does not name one.
//!
//! The default, [`DefaultPartitioner`], does what Kafka's Java client does:
//! - a record with a key goes to `positive(murmur2(key)) % partitions` (Kafka's murmur2, seed
//!   `0x9747b28c`, `positive(x) = x & 0x7fffffff`). The result depends only on the key bytes and
//!   the partition count, so it is stable across client restarts, across machines, and matches
//!   the partition a Kafka client would pick; it changes only when the topic gains partitions.
//! - a record without a key sticks to one partition until that partition's batch is full or sent,
//!   then moves to another (KIP-480 "sticky partitioning"): batches stay large, and keyless
//!   records still spread over every partition.

use rustc_hash::FxHashMap;
use std::sync::Mutex;

use quiver_proto::PartitionId;
use rand::Rng;

/// Picks partitions. Implement it for custom placement and pass it to
/// [`crate::ProducerConfig::partitioner`].
///
/// ```
/// use quiver_client::{Partitioner, PartitionId};
/// /// Every record to the last partition.
/// struct Last;
/// impl Partitioner for Last {
///     fn partition(&self, _topic: &str, _key: Option<&[u8]>, partitions: u32) -> PartitionId {
///         PartitionId(partitions - 1)
///     }
/// }
/// assert_eq!(Last.partition("t", None, 4), PartitionId(3));
/// ```
pub trait Partitioner: Send + Sync + 'static {
    /// The partition for a record of `topic` (which has `partitions` partitions, at least one).
    /// Must return a partition below `partitions`.
    fn partition(&self, topic: &str, key: Option<&[u8]>, partitions: u32) -> PartitionId;

    /// Called when a keyless record chose partition `previous` and that partition needs a new
    /// batch: a sticky partitioner moves on here. The producer then asks `partition` again.
    fn on_new_batch(&self, topic: &str, partitions: u32, previous: PartitionId) {
        let _ = (topic, partitions, previous);
    }
}

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), as a signed 32-bit value.
///
/// ```
/// use quiver_client::partitioner::murmur2;
/// assert_eq!(murmur2(b"foobar"), -790332482); // the value Kafka's Java client computes
/// ```
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner gives a key: `positive(murmur2(key)) % partitions`.
///
/// ```
/// use quiver_client::partitioner::partition_for_key;
/// // positive(-790332482) = 1357151166; 1357151166 % 50 = 16
/// assert_eq!(partition_for_key(b"foobar", 50).0, 16);
/// ```
pub fn partition_for_key(key: &[u8], partitions: u32) -> PartitionId {
    assert!(partitions > 0, "a topic has at least one partition");
    PartitionId(((murmur2(key) as u32) & 0x7fff_ffff) % partitions)
}

/// Key hash for keyed records, sticky for keyless ones (see the module documentation).
///
/// ```
/// use quiver_client::{DefaultPartitioner, Partitioner};
/// let p = DefaultPartitioner::default();
/// // Same key, same partition, every time and in every process.
/// assert_eq!(p.partition("t", Some(b"user-1"), 8), p.partition("t", Some(b"user-1"), 8));
/// // Keyless records stick to one partition until a new batch is needed.
/// let first = p.partition("t", None, 8);
/// assert_eq!(p.partition("t", None, 8), first);
/// ```
#[derive(Debug, Default)]
pub struct DefaultPartitioner {
    sticky: Mutex<FxHashMap<String, u32>>,
}

impl Partitioner for DefaultPartitioner {
    fn partition(&self, topic: &str, key: Option<&[u8]>, partitions: u32) -> PartitionId {
        if let Some(key) = key {
            return partition_for_key(key, partitions);
        }
        let mut sticky = self.sticky.lock().expect("not poisoned");
        if let Some(&p) = sticky.get(topic) {
            if p < partitions {
                return PartitionId(p);
            }
        }
        let p = rand::thread_rng().gen_range(0..partitions);
        sticky.insert(topic.to_string(), p);
        PartitionId(p)
    }

    fn on_new_batch(&self, topic: &str, partitions: u32, previous: PartitionId) {
        let mut sticky = self.sticky.lock().expect("not poisoned");
        // Only move if no other record moved it already since `previous` was chosen.
        if sticky.get(topic).is_some_and(|&p| p != previous.0) {
            return;
        }
        let next = if partitions <= 1 {
            0
        } else {
            // Any partition but the previous one, uniformly.
            let r = rand::thread_rng().gen_range(0..partitions - 1);
            if r >= previous.0 {
                r + 1
            } else {
                r
            }
        };
        sticky.insert(topic.to_string(), next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference: Apache Kafka, `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_kafkas_java_client() {
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, want) in cases {
            assert_eq!(murmur2(key), *want, "{}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn sticky_moves_to_another_partition_on_a_new_batch() {
        let p = DefaultPartitioner::default();
        let first = p.partition("t", None, 4);
        p.on_new_batch("t", 4, first);
        let second = p.partition("t", None, 4);
        assert_ne!(first, second);
        // A stale notification (about a partition no longer current) does not move it again.
        p.on_new_batch("t", 4, first);
        assert_eq!(p.partition("t", None, 4), second);
        // One partition: stays on it.
        let only = DefaultPartitioner::default();
        let p0 = only.partition("u", None, 1);
        only.on_new_batch("u", 1, p0);
        assert_eq!(only.partition("u", None, 1), PartitionId(0));
    }

    #[test]
    fn keyed_records_ignore_the_sticky_partition() {
        let p = DefaultPartitioner::default();
        for key in [&b"a"[..], b"bb", b"ccc", b""] {
            assert_eq!(p.partition("t", Some(key), 7), partition_for_key(key, 7));
        }
    }
}
