//! The buffer `send` appends to: topics interned once, each partition's batches in its
//! [`PartitionPipeline`], and the rest of the producer's state under its one lock.

use rustc_hash::FxHashMap;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use quiver_proto::batch::BatchBuilder;
use quiver_proto::{ErrorCode, Offset, PartitionId, TimestampMs};
use tokio::sync::{oneshot, OwnedSemaphorePermit};

use super::config::DeliveryListener;
use super::pipeline::{PartitionPipeline, Payload};
use super::Shared;
use crate::client::{Client, Node};
use crate::error::{Error, Result};
use crate::record::{ProducerRecord, RecordMetadata};

/// A partition of a topic, as the producer's queues key it.
pub(super) type PartKey = (Topic, PartitionId);

/// A topic name as the producer holds it: interned (`State::intern`), one `Arc` per name for the
/// producer's life, so two are equal exactly when they are the same `Arc`. Rationale: the
/// queues are looked up several times per record, and hashing and comparing an address costs
/// less than hashing and comparing the name (the lookups were 14% of the client at 100-byte
/// records).
#[derive(Clone, Debug)]
pub(super) struct Topic(Arc<str>);

impl PartialEq for Topic {
    fn eq(&self, other: &Topic) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Topic {}

impl std::hash::Hash for Topic {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.0).cast::<u8>().hash(state);
    }
}

impl std::ops::Deref for Topic {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Bytes a new batch's buffer holds before it grows.
const BATCH_PREALLOC_MAX: usize = 64 * 1024;

/// Buffers of answered batches kept for new batches (`State::spare`). Rationale: a buffer
/// freed and allocated again is returned to the kernel and faulted in anew page by page (glibc
/// trims the heap it frees at its top); 8 is more than a broker's requests in flight take
/// back between two sends, and bounds what the producer holds beyond `buffer_memory` to 8
/// batches.
pub(super) const SPARE_BUFFERS_MAX: usize = 8;

#[derive(Default)]
pub(super) struct State {
    /// Topic names seen, shared by every batch of the topic (no allocation per record), with
    /// the partition count last read from the client's metadata.
    pub(super) topics: FxHashMap<String, Interned>,
    pub(super) queues: FxHashMap<PartKey, Pipeline>,
    pub(super) in_flight: HashMap<Node, usize>,
    /// Brokers that asked (`throttle_time_ms`, a quota) for no request before this time.
    pub(super) throttled_until: HashMap<Node, std::time::Instant>,
    /// Ids of batches not yet completed (flush waits for the ones below its mark).
    pub(super) outstanding: BTreeSet<u64>,
    pub(super) next_batch_id: u64,
    pub(super) closing: bool,
    pub(super) last_metadata_refresh: Option<Instant>,
    /// The producer id and epoch, once the broker gave them (idempotence); `idempotent` turns
    /// off if the broker does not serve InitProducerId.
    pub(super) producer: Option<(i64, i16)>,
    pub(super) idempotent: bool,
    /// Per broker: (next ticket to give a request, ticket whose turn it is to be written).
    /// Requests are written to a broker in the order the sender made them, so that an
    /// idempotent producer's requests for one partition arrive in sequence.
    pub(super) turns: HashMap<Node, (u64, u64)>,
    /// Buffers of batches sent and answered, for new batches (at most `SPARE_BUFFERS_MAX`).
    pub(super) spare: Vec<Vec<u8>>,
    /// Where in the queues the next `collect` starts: the first partition the last one had
    /// ready batches of but no room for. Rationale: with more ready batches than a request
    /// holds, starting at the same place each time drains the same partitions first and starves
    /// the rest (seconds of delay with 1,000 partitions); Kafka's accumulator rotates likewise.
    pub(super) drain_from: usize,
    /// Records appended and not yet reported (buffered, or awaiting an answer).
    pub(super) unanswered: u64,
    /// Records reported failed since the last flush or close took the count, and the first
    /// one's error: what `flush` and `close` return.
    pub(super) failed: u64,
    pub(super) first_failure: Option<Error>,
    /// Set when a close ran out of time (`close_timeout`): every queued batch fails with this
    /// error, and requests in flight stop waiting for their answers.
    pub(super) aborted: Option<Error>,
}

/// A partition's pipeline of the producer's batches.
pub(super) type Pipeline = PartitionPipeline<Batch>;

/// A batch's records and bytes; the pipeline keeps its place, sequence and retries
/// (`pipeline::Queued`).
pub(super) struct Batch {
    pub(super) topic: Topic,
    pub(super) partition: PartitionId,
    builder: Option<BatchBuilder>,
    sealed: Option<Bytes>,
    pending: Vec<Pending>,
    /// The stamp the sealed bytes carry.
    sealed_seq: Option<(i16, i32)>,
    /// The buffer memory this batch holds; returned when the batch is dropped.
    _memory: OwnedSemaphorePermit,
}

pub(super) struct Pending {
    done: Done,
    timestamp: TimestampMs,
}

/// Who learns a record's outcome.
pub(super) enum Done {
    /// A [`super::Delivery`] future.
    Future(oneshot::Sender<Result<RecordMetadata>>),
    /// The producer's delivery listener, with the caller's opaque value.
    Listener(u64),
}

impl Payload for Batch {
    fn records(&self) -> usize {
        self.pending.len()
    }

    fn bytes(&self) -> usize {
        self.estimated_size()
    }
}

impl Batch {
    fn estimated_size(&self) -> usize {
        match (&self.builder, &self.sealed) {
            (_, Some(b)) => b.len(),
            (Some(b), None) => b.estimated_size(),
            (None, None) => 0,
        }
    }

    /// Compresses and checksums the batch, stamped with the producer id `pid` (-1: none) and
    /// `seq` (epoch, first sequence) if it has them; once: a retry sends the same bytes, unless
    /// the partition's sequences restarted. The bytes are [`Batch::sealed`].
    pub(super) fn seal(&mut self, pid: i64, seq: Option<(i16, i32)>) -> Result<()> {
        if let Some(b) = &self.sealed {
            if self.sealed_seq == seq {
                return Ok(());
            }
            let (epoch, first) = seq.unwrap_or((-1, -1));
            let mut owned = b.to_vec();
            quiver_proto::batch::set_producer(&mut owned, pid, epoch, first)
                .map_err(|e| Error::Record(format!("cannot restamp the batch: {e}")))?;
            self.sealed = Some(Bytes::from(owned));
            self.sealed_seq = seq;
            return Ok(());
        }
        let mut builder = self
            .builder
            .take()
            .expect("an unsealed batch has a builder");
        if let Some((epoch, first)) = seq {
            builder = builder.producer(pid, epoch, first);
        }
        let bytes = builder
            .finish()
            .map_err(|e| Error::Record(format!("cannot build the batch: {e}")))?;
        self.sealed = Some(bytes);
        self.sealed_seq = seq;
        Ok(())
    }

    /// The bytes [`Batch::seal`] made.
    pub(super) fn sealed(&self) -> Bytes {
        self.sealed.clone().expect("sealed before it is sent")
    }

    /// The batch's buffer, for a new batch, once nothing else holds it.
    pub(super) fn take_buffer(&mut self) -> Option<Vec<u8>> {
        self.sealed.take().and_then(reclaim)
    }

    pub(super) fn complete(
        self,
        base: Option<Offset>,
        log_append_time: Option<TimestampMs>,
        listener: Option<&DeliveryListener>,
    ) {
        // The records' metadata share a name of their own, not the producer's interned one.
        // Rationale: every clone and drop is an atomic update of the count; on the producer's
        // count they contend with `send`, which updates it for each record on another core.
        let topic: Arc<str> = Arc::from(&*self.topic.0);
        for (i, p) in self.pending.into_iter().enumerate() {
            let meta = RecordMetadata {
                topic: topic.clone(),
                partition: self.partition,
                offset: base.map(|b| b.plus(i as u64)),
                timestamp: log_append_time.unwrap_or(p.timestamp),
            };
            p.done.report(Ok(meta), listener);
        }
    }

    pub(super) fn fail(self, e: &Error, listener: Option<&DeliveryListener>) {
        for p in self.pending {
            p.done.report(Err(e.clone()), listener);
        }
    }
}

impl Done {
    fn report(self, result: Result<RecordMetadata>, listener: Option<&DeliveryListener>) {
        match self {
            Done::Future(tx) => {
                let _ = tx.send(result);
            }
            Done::Listener(opaque) => {
                if let Some(f) = listener {
                    f(opaque, result);
                }
            }
        }
    }
}

/// The buffer of a sent batch, once nothing else holds it (the transport drops its slices of
/// the batch when the broker has acknowledged them, which is before the answer in all but a
/// lost packet's case).
fn reclaim(sealed: Bytes) -> Option<Vec<u8>> {
    let mut buffer = sealed.try_into_mut().ok()?;
    buffer.clear();
    Some(buffer.into())
}

/// Whether a topic of `partitions` partitions can take the record now.
pub(super) fn check_partition(record: &ProducerRecord, partitions: u32) -> Result<()> {
    if partitions == 0 {
        return Err(Error::broker(
            ErrorCode::LeaderNotAvailable,
            Some(format!("topic '{}' has no partitions yet", record.topic)),
        ));
    }
    if let Some(p) = record.partition {
        if p.0 >= partitions {
            return Err(Error::broker(
                ErrorCode::UnknownTopicOrPartition,
                Some(format!(
                    "topic '{}' has {partitions} partitions; partition {} does not exist",
                    record.topic, p.0
                )),
            ));
        }
    }
    Ok(())
}

/// A topic name the producer has seen.
pub(super) struct Interned {
    topic: Topic,
    /// (the client's metadata generation it was read at, the topic's partition count).
    /// Rationale: read from the client for each record, the count cost a lock and a SipHash of
    /// the name, about 2% of the producing thread (bench/RESULTS.md).
    partitions: Option<(u64, u32)>,
}

/// What [`Shared::append`] did with a record.
pub(super) enum Appended {
    /// Appended; `wake`: the sender should look at the queues now.
    Yes { wake: bool },
    /// The client has no metadata for the record's topic: load it and try again.
    NoMetadata(ProducerRecord, OwnedSemaphorePermit, Done),
}

impl State {
    /// Counts `records` as reported: written, or failed with `failure`. Called under the lock
    /// before `Shared::finished` wakes flushers, so a flush that sees its batches finished
    /// also sees their failures.
    pub(super) fn settled(&mut self, records: usize, failure: Option<&Error>) {
        let records = records as u64;
        self.unanswered = self.unanswered.saturating_sub(records);
        if let Some(e) = failure {
            if records > 0 {
                self.failed += records;
                self.first_failure.get_or_insert_with(|| e.clone());
            }
        }
    }

    /// The failures since the last call, as the error `flush` and `close` return.
    pub(super) fn take_failures(&mut self) -> Option<Error> {
        let failed = std::mem::take(&mut self.failed);
        let first = self.first_failure.take();
        (failed > 0).then(|| Error::DeliveryFailed {
            failed,
            first: Box::new(first.unwrap_or(Error::Closed)),
        })
    }

    /// The producer's one `Topic` for a name (never forgotten: `Topic` equality needs it).
    pub(super) fn intern(&mut self, topic: &str) -> Topic {
        if let Some(t) = self.topics.get(topic) {
            return t.topic.clone();
        }
        let t = Topic(Arc::from(topic));
        self.topics.insert(
            topic.to_string(),
            Interned {
                topic: t.clone(),
                partitions: None,
            },
        );
        t
    }

    /// The topic's interned name and partition count: the count kept here while the client's
    /// metadata has not changed since it was read, else read again. `None`: the client has no
    /// metadata for the topic.
    fn topic_and_partitions(&mut self, name: &str, client: &Client) -> Option<(Topic, u32)> {
        let generation = client.metadata_generation();
        if let Some(e) = self.topics.get(name) {
            if let Some((g, n)) = e.partitions {
                if g == generation {
                    return Some((e.topic.clone(), n));
                }
            }
        }
        let n = client.cached_partition_count(name)?;
        let topic = self.intern(name);
        if let Some(e) = self.topics.get_mut(name) {
            e.partitions = Some((generation, n));
        }
        Some((topic, n))
    }
}

impl Shared {
    /// Loads a topic's metadata into the client, waiting at most until `deadline`.
    pub(super) async fn load_topic(
        &self,
        topic: &str,
        deadline: tokio::time::Instant,
    ) -> Result<()> {
        match tokio::time::timeout_at(deadline, self.client.topic(topic)).await {
            Ok(t) => t.map(|_| ()),
            Err(_) => Err(Error::Timeout(format!(
                "no metadata for topic '{topic}' within max_block ({:?})",
                self.config.max_block
            ))),
        }
    }

    /// Appends to the partition's open batch (or a new one), or hands the record back when the
    /// client has no metadata for its topic.
    pub(super) fn append(
        &self,
        record: ProducerRecord,
        permit: OwnedSemaphorePermit,
        done: Done,
    ) -> Result<Appended> {
        let config = &self.config;
        let mut st = self.state.lock().expect("not poisoned");
        if st.closing {
            return Err(Error::Closed);
        }
        let Some((topic, partitions)) = st.topic_and_partitions(&record.topic, &self.client) else {
            return Ok(Appended::NoMetadata(record, permit, done));
        };
        check_partition(&record, partitions)?;
        let timestamp = record.timestamp.unwrap_or_else(crate::now_ms);
        let headers: Vec<(&str, &[u8])> = record
            .headers
            .iter()
            .map(|h| (h.key.as_str(), &h.value[..]))
            .collect();
        let size = permit.num_permits();
        let keyless = record.partition.is_none() && record.key.is_none();
        let mut partition = match record.partition {
            Some(p) => p,
            None => config
                .partitioner
                .partition(&topic, record.key.as_deref(), partitions),
        };
        if partition.0 >= partitions {
            return Err(Error::Config(format!(
                "the partitioner chose partition {} of a topic with {partitions}",
                partition.0
            )));
        }
        let fits = |q: Option<&Pipeline>| {
            q.and_then(Pipeline::last).is_some_and(|b| {
                b.batch.builder.is_some()
                    && !b.full
                    && b.attempts() == 0
                    && b.batch.estimated_size() + size <= config.batch_size
            })
        };
        // The queue's key holds the interned topic: one reference count taken per record, not
        // one per lookup (the count is shared with the threads that complete batches).
        let mut key: PartKey = (topic, partition);
        if keyless && !fits(st.queues.get(&key)) {
            // KIP-480: a keyless record that would open a new batch moves the sticky partition.
            config
                .partitioner
                .on_new_batch(&key.0, partitions, partition);
            partition = config.partitioner.partition(&key.0, None, partitions);
            if partition.0 >= partitions {
                return Err(Error::Config(format!(
                    "the partitioner chose partition {} of a topic with {partitions}",
                    partition.0
                )));
            }
            key.1 = partition;
        }
        let mut wake = false;
        let st = &mut *st;
        if !st.queues.contains_key(&key) {
            st.queues.insert(key.clone(), Pipeline::default());
        }
        let q = st.queues.get_mut(&key).expect("inserted above");
        if !fits(Some(q)) {
            let id = st.next_batch_id;
            st.next_batch_id += 1;
            st.outstanding.insert(id);
            let now = Instant::now();
            let batch = Batch {
                topic: key.0.clone(),
                partition,
                // An answered batch's buffer if one is spare; else sized for a batch up to 64
                // KiB up front, larger ones grow (a buffer per open batch of batch_size could be
                // far more than buffer_memory accounts for).
                builder: Some(match st.spare.pop() {
                    Some(buffer) => BatchBuilder::with_buffer(config.compression, buffer),
                    None => BatchBuilder::with_capacity(
                        config.compression,
                        config.batch_size.min(BATCH_PREALLOC_MAX),
                    ),
                }),
                sealed: None,
                pending: Vec::new(),
                sealed_seq: None,
                _memory: permit,
            };
            // The batch before it, if any, takes no more records.
            q.push(id, now, now + config.delivery_timeout, batch);
            wake = true;
        } else {
            q.last_mut()
                .expect("fits() saw a batch")
                .batch
                ._memory
                .merge(permit);
        }
        let open = q.last_mut().expect("just pushed or found");
        let batch = &mut open.batch;
        let builder = batch.builder.as_mut().expect("open batch");
        if let Err(e) = builder.append(
            timestamp,
            record.key.as_deref(),
            record.value.as_deref(),
            &headers,
        ) {
            // The builder is unchanged; an empty new batch is dropped by the sender.
            return Err(Error::Record(format!(
                "cannot add the record to a batch: {e}"
            )));
        }
        batch.pending.push(Pending { done, timestamp });
        if batch.estimated_size() >= config.batch_size {
            open.full = true;
            wake = true;
        }
        st.unanswered += 1;
        Ok(Appended::Yes { wake })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn a_topic_name_is_one_key_however_often_it_is_seen() {
        let mut st = State::default();
        let first = st.intern("orders");
        let again = st.intern(&String::from("orders"));
        assert_eq!(first, again);
        assert_ne!(first, st.intern("payments"));
        // Equal by address: a name not from the interner is another key.
        assert_ne!(first, Topic(Arc::from("orders")));
        let mut queues: FxHashMap<PartKey, u32> = FxHashMap::default();
        queues.insert((first, PartitionId(1)), 7);
        assert_eq!(queues.get(&(again.clone(), PartitionId(1))), Some(&7));
        assert_eq!(queues.get(&(again, PartitionId(0))), None);
    }

    #[test]
    fn failures_are_counted_until_taken_and_the_first_error_is_kept() {
        let mut st = State {
            unanswered: 10,
            ..State::default()
        };
        st.settled(4, None);
        assert_eq!(st.unanswered, 6);
        assert!(
            st.take_failures().is_none(),
            "written records are no failures"
        );
        st.settled(2, Some(&Error::Record("first".into())));
        st.settled(3, Some(&Error::Record("second".into())));
        st.settled(0, Some(&Error::Record("empty batch".into())));
        assert_eq!(st.unanswered, 1);
        match st.take_failures() {
            Some(Error::DeliveryFailed { failed, first }) => {
                assert_eq!(failed, 5);
                assert_eq!(first.to_string(), "record: first");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            st.take_failures().is_none(),
            "taken: counted from zero again"
        );
    }

    #[test]
    fn a_sent_batch_gives_its_buffer_back_once_nothing_holds_it() {
        let mut v = Vec::with_capacity(4096);
        v.extend_from_slice(&[7; 1000]);
        let at = v.as_ptr();
        let sealed = Bytes::from(v);
        let in_transport = sealed.slice(10..20);
        assert_eq!(reclaim(sealed.clone()), None);
        drop(in_transport);
        let back = reclaim(sealed).expect("nothing else holds it");
        assert_eq!((back.as_ptr(), back.len(), back.capacity()), (at, 0, 4096));
    }
}
