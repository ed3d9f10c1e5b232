//! The consumer: assigned partitions, long-poll fetches, seeks, pause/resume, commits.
//!
//! `poll` returns records from a buffer; fetches fill it. One fetch per broker shard
//! ([`crate::Node`]) is outstanding at a time, on that shard's connection, covering every
//! assigned, unpaused partition the shard owns and that has less than
//! `max_partition_fetch_bytes` of records waiting in the buffer: the next records are on their
//! way while the application works on the last (pipelining), and the buffer holds about two
//! fetches per partition at most. The broker holds a fetch up to `fetch_max_wait` until
//! `fetch_min_bytes` are there. Records are decoded (CRC checked, decompressed) in the fetch
//! task, off the caller's task; uncompressed keys and values are slices of the fetched bytes, not
//! copies.
//!
//! Groups: with `subscribe` (or `subscribe_pattern`), a background task heartbeats to the
//! group's coordinator (KIP-848) and `poll` applies the partitions the broker assigns,
//! committing the positions of those it gives up (auto-commit or `commit_on_revoke`) before
//! letting them go, and sending `RebalanceEvent`s to whoever asked for them. Commits, sync or
//! async, go through one task in order (`commit.rs`).
//!
//! Positions: `position(tp)` is the offset of the next record `poll` will return. A partition
//! without a position gets one on the next `poll`: its group's committed offset if there is
//! one, else `auto_offset_reset` (earliest, latest, or an error with `None`). A fetch that
//! falls outside the retained log (`OffsetOutOfRange`) is handled the same way.
//!
//! Layout: `config.rs` holds the settings and the public enums; this file the consumer, its
//! assignment and `poll`; `fetcher.rs` the fetches (one task per broker shard) and the decoding
//! of their records; `positions.rs` seeks, pauses, and where a partition without a position
//! starts; `subscription.rs` group membership and the rebalance events; `commits.rs` the
//! group's offsets, committed through the one commit task.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::client::{Client, Node};
use crate::commit::Committer;
use crate::error::{Error, Result};
use crate::group::Membership;
use crate::record::{ConsumerRecord, TopicPartition};
use quiver_proto::Offset;

use fetcher::{record_bytes, FetchDone};

mod commits;
mod config;
mod fetcher;
mod positions;
mod stream;
mod subscription;

pub use config::{Assignor, ConsumerConfig, OffsetReset, RebalanceEvent};
pub(crate) use positions::{list_offsets_lenient, list_offsets_raw};
pub use stream::ConsumerStream;

#[derive(Debug, Default)]
struct PartState {
    /// Next offset `poll` returns; `None` until resolved.
    position: Option<Offset>,
    /// Next offset to fetch (ahead of `position` by the buffered records).
    fetch_position: Option<Offset>,
    paused: bool,
    in_flight: bool,
    /// Records of this partition in the buffer, and their bytes.
    buffered: usize,
    buffered_bytes: usize,
    backoff_until: Option<Instant>,
    /// Why the position is unknown, when a fetch said so (for `OffsetReset::None`).
    reset_reason: Option<Error>,
    high_watermark: Option<Offset>,
}

/// Reads records from assigned partitions.
///
/// Not shared between tasks (`&mut self` methods, like Kafka's consumer); move it into the task
/// that consumes. [`poll`](Consumer::poll) returns records in batches;
/// [`stream`](Consumer::stream) yields them one at a time as a `futures` `Stream`; for typed
/// keys and values see [`Consumer::typed`].
///
/// Call [`close`](Consumer::close) when done: it commits (per the configuration) and leaves the
/// group. Dropping it without closing (an early `?` return) cancels its fetches and, for a
/// group member, sends the group a leave in the background (on the current tokio runtime,
/// best effort, without committing), so the group hands its partitions to the other members at
/// once instead of after the session timeout.
///
/// ```no_run
/// # async fn f() -> quiver_client::Result<()> {
/// use quiver_client::{Client, ClientConfig, Consumer, ConsumerConfig, OffsetReset, TopicPartition};
/// use std::time::Duration;
/// let client = Client::connect(ClientConfig::new("127.0.0.1:9092")).await?;
/// let mut consumer = Consumer::new(client, ConsumerConfig::default().auto_offset_reset(OffsetReset::Earliest));
/// consumer.assign(vec![TopicPartition::new("orders", 0), TopicPartition::new("orders", 1)])?;
/// loop {
///     for r in consumer.poll(Duration::from_secs(1)).await? {
///         println!("{}/{}@{} {:?} {:?}", r.topic, r.partition, r.offset, r.key_str(), r.value_str());
///     }
/// }
/// # }
/// ```
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    assignment: BTreeMap<TopicPartition, PartState>,
    buffer: VecDeque<ConsumerRecord>,
    fetches: FuturesUnordered<JoinHandle<FetchDone>>,
    brokers_in_flight: HashSet<Node>,
    topic_names: HashMap<String, Arc<str>>,
    warned_no_groups: bool,
    /// Set by `subscribe`: the group decides the assignment.
    membership: Option<Membership>,
    last_auto_commit: Instant,
    /// The commit task, started by the first commit (it needs the runtime).
    committer: std::sync::OnceLock<Committer>,
    /// Where rebalance events go, once asked for.
    events: Option<mpsc::UnboundedSender<RebalanceEvent>>,
}

impl Drop for Consumer {
    fn drop(&mut self) {
        for f in self.fetches.iter() {
            f.abort();
        }
    }
}

impl Consumer {
    /// A consumer on `client`; it reads nothing until [`assign`](Consumer::assign)ed or
    /// [`subscribe`](Consumer::subscribe)d.
    pub fn new(client: Client, config: ConsumerConfig) -> Consumer {
        Consumer {
            client,
            config,
            assignment: BTreeMap::new(),
            buffer: VecDeque::new(),
            fetches: FuturesUnordered::new(),
            brokers_in_flight: HashSet::new(),
            topic_names: HashMap::new(),
            warned_no_groups: false,
            membership: None,
            last_auto_commit: Instant::now(),
            committer: std::sync::OnceLock::new(),
            events: None,
        }
    }

    /// Reads exactly these partitions from now on (replacing any earlier assignment).
    /// Partitions kept from the previous assignment keep their positions; new ones start per
    /// the committed offset or `auto_offset_reset`, unless `seek` says otherwise.
    pub fn assign(&mut self, partitions: Vec<TopicPartition>) -> Result<()> {
        if self.membership.is_some() {
            return Err(Error::Config(
                "this consumer subscribed to a group, which decides its partitions; use another \
                 consumer for manually assigned partitions"
                    .into(),
            ));
        }
        self.apply_assignment(partitions);
        Ok(())
    }

    fn apply_assignment(&mut self, partitions: Vec<TopicPartition>) {
        let keep: HashSet<TopicPartition> = partitions.iter().cloned().collect();
        self.assignment.retain(|tp, _| keep.contains(tp));
        self.buffer
            .retain(|r| keep.contains(&TopicPartition::new(&*r.topic, r.partition.0)));
        for tp in partitions {
            self.topic_names
                .entry(tp.topic.clone())
                .or_insert_with(|| Arc::from(tp.topic.as_str()));
            self.assignment.entry(tp).or_default();
        }
    }

    /// Every partition of `topic`, from the cluster's metadata. Fails with
    /// `UnknownTopicOrPartition` if the topic does not exist.
    pub async fn assign_topic(&mut self, topic: &str) -> Result<Vec<TopicPartition>> {
        let t = self.client.topic(topic).await?;
        let tps: Vec<TopicPartition> = t
            .partitions
            .iter()
            .map(|p| TopicPartition::new(topic, p.partition.0))
            .collect();
        let mut all: Vec<TopicPartition> = self.assignment.keys().cloned().collect();
        all.extend(tps.iter().cloned());
        self.assign(all)?;
        Ok(tps)
    }

    /// The assigned partitions.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.assignment.keys().cloned().collect()
    }

    fn state(&mut self, tp: &TopicPartition) -> Result<&mut PartState> {
        self.assignment
            .get_mut(tp)
            .ok_or_else(|| Error::Config(format!("{tp} is not assigned to this consumer")))
    }

    fn drop_buffered(&mut self, tp: &TopicPartition) {
        self.buffer
            .retain(|r| !(r.partition == tp.partition && *r.topic == *tp.topic));
        if let Some(st) = self.assignment.get_mut(tp) {
            st.buffered = 0;
            st.buffered_bytes = 0;
        }
    }

    /// Returns buffered records, or waits up to `timeout` for a fetch to bring some. An empty
    /// vector means nothing arrived in time. Transient errors (lost leaders, lost connections)
    /// are retried inside; errors the application must see (an unknown topic, an offset out of
    /// range with `OffsetReset::None`, a corrupt batch) are returned.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.sync_group().await?;
            self.auto_commit();
            // A group member looks at its assignment at least this often while it waits.
            let wait_until = if self.membership.is_some() {
                deadline.min(tokio::time::Instant::now() + Duration::from_millis(100))
            } else {
                deadline
            };
            self.resolve_positions().await?;
            self.start_fetches().await?;
            if !self.buffer.is_empty() {
                let out = self.drain();
                // Refill partitions whose buffered records were all handed out.
                self.start_fetches().await?;
                return Ok(out);
            }
            if self.fetches.is_empty() {
                let wake = self
                    .assignment
                    .values()
                    .filter_map(|s| s.backoff_until)
                    .min()
                    .map(tokio::time::Instant::from_std)
                    .unwrap_or(wait_until)
                    .min(wait_until);
                tokio::time::sleep_until(wake).await;
                if tokio::time::Instant::now() >= deadline {
                    return Ok(Vec::new());
                }
                continue;
            }
            match tokio::time::timeout_at(wait_until, self.fetches.next()).await {
                Err(_) if tokio::time::Instant::now() >= deadline => return Ok(Vec::new()),
                Err(_) => {}
                Ok(None) => {}
                Ok(Some(Err(join))) => {
                    return Err(Error::Protocol(format!("fetch task failed: {join}")))
                }
                Ok(Some(Ok(done))) => self.apply(done)?,
            }
        }
    }

    fn drain(&mut self) -> Vec<ConsumerRecord> {
        let n = self.buffer.len().min(self.config.max_poll_records);
        let out: Vec<ConsumerRecord> = self.buffer.drain(..n).collect();
        // Per partition: records handed out, their bytes, the last offset.
        let mut handed: Vec<(&ConsumerRecord, usize, usize, Offset)> = Vec::new();
        for r in &out {
            let bytes = record_bytes(r);
            match handed
                .iter_mut()
                .find(|(h, ..)| h.partition == r.partition && h.topic == r.topic)
            {
                Some(h) => {
                    h.1 += 1;
                    h.2 += bytes;
                    h.3 = r.offset;
                }
                None => handed.push((r, 1, bytes, r.offset)),
            }
        }
        for (r, count, bytes, last) in handed {
            let tp = TopicPartition::new(&*r.topic, r.partition.0);
            if let Some(st) = self.assignment.get_mut(&tp) {
                st.position = Some(last.plus(1));
                st.buffered = st.buffered.saturating_sub(count);
                st.buffered_bytes = st.buffered_bytes.saturating_sub(bytes);
                if st.buffered == 0 {
                    // Skipped offsets (control batches) after the last record count as read.
                    st.position = st.fetch_position;
                }
            }
        }
        out
    }

    /// Puts records `drain` handed out, and that were not used, back at the front of the
    /// buffer in their order: the next `poll` returns them, and each partition's position
    /// goes back to its first record among them. For a stream dropped with records it had not
    /// yielded, and a typed poll that failed on one record.
    pub(crate) fn rewind(&mut self, records: Vec<ConsumerRecord>) {
        let mut firsts: Vec<(TopicPartition, Offset, usize, usize)> = Vec::new();
        for r in &records {
            let bytes = record_bytes(r);
            match firsts
                .iter_mut()
                .find(|(tp, ..)| tp.partition == r.partition && *tp.topic == *r.topic)
            {
                Some(f) => {
                    f.2 += 1;
                    f.3 += bytes;
                }
                None => firsts.push((
                    TopicPartition::new(&*r.topic, r.partition.0),
                    r.offset,
                    1,
                    bytes,
                )),
            }
        }
        let mut kept: Vec<TopicPartition> = Vec::new();
        for (tp, first, count, bytes) in firsts {
            if let Some(st) = self.assignment.get_mut(&tp) {
                st.position = Some(first);
                st.buffered += count;
                st.buffered_bytes += bytes;
                kept.push(tp);
            }
        }
        for r in records.into_iter().rev() {
            if kept
                .iter()
                .any(|tp| tp.partition == r.partition && *tp.topic == *r.topic)
            {
                self.buffer.push_front(r);
            }
        }
    }

    /// The client this consumer uses.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// Applications move a consumer into a spawned task and await its calls there: the consumer
/// and the futures of its calls must be `Send` (no `std::sync` guard held across an await).
/// Checked when this compiles.
#[allow(dead_code)]
fn consumer_calls_are_send(c: &mut Consumer) {
    fn send<T: Send>(_: &T) {}
    send(c);
    send(&c.poll(Duration::ZERO));
    send(&c.commit());
    send(&c.commit_async());
    send(&c.subscribe(Vec::new()));
    send(&c.subscribe_pattern(""));
}
