//! The producer: batching, compression, partitioning, acks, retries and a memory bound.
//!
//! # How a record travels
//! `send` checks the record's size, waits (at most `max_block`) for room in the buffer
//! (`buffer_memory` bytes; back-pressure instead of growth), picks the partition and appends the
//! record to that partition's open batch. One background task per producer (the *sender*) sends
//! a partition's batches when the oldest is full (`batch_size`), has waited `linger`, or a flush
//! asks for it; it packs every ready partition led by the same broker, and owned by the same
//! shard of it ([`crate::Node`]), into one Produce request for that shard's connection, with at
//! most `max_in_flight_per_broker` requests outstanding per connection (default 5). Each batch's
//! memory returns to the buffer when its answer arrives (acks=1/all) or once it is written
//! (acks=0).
//!
//! # Order
//! Records to one partition are written in the order `send` was called. Without idempotence a
//! partition has at most one Produce request outstanding, and a batch that is retried goes back
//! to the front of its partition's queue. (Each request travels on its own QUIC stream, and the
//! broker serves streams concurrently, so two outstanding requests for one partition could be
//! appended in either order; one at a time per partition rules that out.) Many partitions are in
//! flight at once, and a request carries every batch of a partition that is ready.
//!
//! # Idempotence (the default with acks=1 and acks=all)
//! The producer gets a producer id (InitProducerId) and numbers each partition's records from 0;
//! every batch carries the id, an epoch and its first sequence number. The broker appends a
//! batch only if it continues the sequence, answers a batch it already has with the offsets it
//! got the first time, and refuses one that skips ahead (`OutOfOrderSequence`). So a partition
//! may have up to `max_in_flight_per_broker` (at most 5) requests in flight, holding at most
//! [`IDEMPOTENT_BATCHES_KEPT`] batches unanswered (the broker remembers that many of a
//! producer's last batches per partition): if they arrive out of order, or one fails, the refused
//! ones are resent in order, a retried batch alone. They rarely do: requests are written to the
//! connection one after another in the order made, small ones too
//! (`Client::start_call_broker_in_order`), and the broker serves a connection's requests in the
//! order their streams were opened once their bytes are there; a lost packet can still let a
//! later request in first. A retried batch older than what the broker remembers (possible only
//! if its answer was lost while later ones came back) is refused as a duplicate, and reported
//! written with no offset. When a numbered batch fails for good (or the broker
//! has lost the producer's state), the partition waits for its requests in flight, moves to the
//! next epoch and numbers its queue from 0 again.
//!
//! # Retries
//! Retriable errors (`NotLeaderOrFollower`, `RequestTimedOut`, lost connections, ...) are
//! retried with exponential backoff (`retry_backoff` doubling up to `retry_backoff_max`), after a
//! metadata refresh when the error calls for one, until `retries` attempts or
//! `delivery_timeout` after the batch was created. With idempotence a retry after a lost answer
//! is written once; without it, it may be written twice. When the broker refuses a partition's
//! batches together because one of them is bad (too large for the topic, invalid), each is sent
//! again in a request of its own, so that only the bad one fails.

use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quiver_proto::api::produce::{
    self as wire, InitProducerIdRequest, PartitionProduceData, ProduceRequest, ProduceResponse,
    TopicProduceData,
};
use quiver_proto::api::PayloadBuilder;
use quiver_proto::batch::{sequence_add, BatchBuilder, IDEMPOTENT_BATCHES_KEPT};
use quiver_proto::{ErrorCode, Offset, PartitionId, TimestampMs};
use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::client::{Client, Node};
use crate::error::{Error, Result};
use crate::partitioner::{DefaultPartitioner, Partitioner};
use crate::record::{ProducerRecord, RecordMetadata};

pub use quiver_proto::batch::Compression;

/// How many replicas must have a record before `send` reports it written.
///
/// ```
/// use quiver_client::Acks;
/// assert_eq!("all".parse::<Acks>().unwrap(), Acks::All);
/// assert_eq!("0".parse::<Acks>().unwrap(), Acks::None);
/// assert!("2".parse::<Acks>().is_err());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Acks {
    /// acks=0: fire and forget; the answer is not awaited and offsets are unknown.
    None,
    /// acks=1: the leader has it, durably.
    Leader,
    /// acks=all: every in-sync replica has it (at least `min.insync.replicas`).
    #[default]
    All,
}

impl FromStr for Acks {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Acks, String> {
        match s {
            "0" => Ok(Acks::None),
            "1" => Ok(Acks::Leader),
            "all" | "-1" => Ok(Acks::All),
            other => Err(format!("acks must be 0, 1 or all, not '{other}'")),
        }
    }
}

impl Acks {
    fn wire(self) -> wire::Acks {
        match self {
            Acks::None => wire::Acks::None,
            Acks::Leader => wire::Acks::Leader,
            Acks::All => wire::Acks::All,
        }
    }
}

/// Producer settings; every field has a default that suits a local broker and is named like the
/// Kafka setting it mirrors.
///
/// ```
/// use quiver_client::{Acks, Compression, ProducerConfig};
/// use std::time::Duration;
/// let config = ProducerConfig::default()
///     .acks(Acks::Leader)
///     .compression(Compression::Zstd)
///     .linger(Duration::from_millis(10))
///     .batch_size(256 * 1024)
///     .buffer_memory(64 << 20);
/// assert_eq!(config.batch_size, 256 * 1024);
/// ```
#[derive(Clone)]
pub struct ProducerConfig {
    /// acks; default all.
    pub acks: Acks,
    /// Codec for every batch; default none.
    pub compression: Compression,
    /// A batch is sent once it holds this many bytes (before compression); `batch.size`.
    pub batch_size: usize,
    /// How long a batch may wait for more records before it is sent; `linger.ms`.
    pub linger: Duration,
    /// Bytes of records the producer may hold (buffered or in flight); `buffer.memory`.
    pub buffer_memory: usize,
    /// How long `send` waits for room in the buffer (or for metadata) before failing with
    /// [`Error::Timeout`]; `max.block.ms`.
    pub max_block: Duration,
    /// Largest Produce request, and so the largest record; `max.request.size`.
    pub max_request_size: usize,
    /// How long the broker may take to make a produce durable; sent in the request.
    pub request_timeout: Duration,
    /// A record fails if it is not acknowledged this long after it was batched;
    /// `delivery.timeout.ms`.
    pub delivery_timeout: Duration,
    /// Attempts after the first for a batch that failed with a retriable error.
    pub retries: u32,
    /// First backoff between attempts; doubles per attempt up to `retry_backoff_max`.
    pub retry_backoff: Duration,
    pub retry_backoff_max: Duration,
    /// Produce requests outstanding per connection (a broker's, or one shard's of it); default 5
    /// (Kafka's `max.in.flight.requests.per.connection`). With idempotence that many requests of one
    /// partition may be in flight; without it a partition still has one at a time. Measured on
    /// one local broker (bench/RESULTS.md, run D): 1 producer, 2 partitions, 1 KiB records,
    /// durable acks: 5 gave 556 to 636 MB/s, 1 gave 458 to 540 MB/s (the link and the disk
    /// take turns when one request per partition is in flight).
    pub max_in_flight_per_broker: usize,
    /// Idempotence (`enable.idempotence`; default on, for acks=1 and acks=all): the producer
    /// gets a producer id and numbers its records per partition, so the broker writes a retried
    /// batch once, and refuses a batch that would skip one before it. That also lets several
    /// requests for one partition be in flight at once (up to `max_in_flight_per_broker`, at
    /// most 5) without giving up order. Off: one request per partition at a time.
    pub enable_idempotence: bool,
    /// How often topic metadata is reloaded even without errors (to see new partitions).
    pub metadata_max_age: Duration,
    /// Chooses partitions for records that do not name one.
    pub partitioner: Arc<dyn Partitioner>,
    /// Called once per record sent with [`Producer::enqueue_with_opaque`], with the caller's
    /// opaque value and the outcome (rdkafka's delivery report). Rationale: a future per record
    /// costs an allocation and a wake-up each; at hundreds of thousands of records a second a
    /// listener that runs where the batch completes is what keeps the producer's CPU small.
    pub delivery_listener: Option<Arc<DeliveryListener>>,
}

/// See [`ProducerConfig::delivery_listener`]. Runs on the producer's request tasks: keep it
/// short and never block in it.
pub type DeliveryListener = dyn Fn(u64, Result<RecordMetadata>) + Send + Sync;

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            compression: Compression::None,
            batch_size: 64 * 1024,
            linger: Duration::from_millis(5),
            buffer_memory: 32 << 20,
            max_block: Duration::from_secs(60),
            max_request_size: 4 << 20,
            request_timeout: Duration::from_secs(30),
            delivery_timeout: Duration::from_secs(120),
            retries: u32::MAX,
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(1),
            max_in_flight_per_broker: MAX_IN_FLIGHT_IDEMPOTENT,
            enable_idempotence: true,
            metadata_max_age: Duration::from_secs(300),
            partitioner: Arc::new(DefaultPartitioner::default()),
            delivery_listener: None,
        }
    }
}

impl std::fmt::Debug for ProducerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerConfig")
            .field("acks", &self.acks)
            .field("compression", &self.compression)
            .field("batch_size", &self.batch_size)
            .field("linger", &self.linger)
            .field("buffer_memory", &self.buffer_memory)
            .field("max_block", &self.max_block)
            .field("max_request_size", &self.max_request_size)
            .field("delivery_timeout", &self.delivery_timeout)
            .field("retries", &self.retries)
            .field("max_in_flight_per_broker", &self.max_in_flight_per_broker)
            .field("enable_idempotence", &self.enable_idempotence)
            .finish_non_exhaustive()
    }
}

macro_rules! setters {
    ($($(#[$m:meta])* $name:ident: $ty:ty;)*) => {
        impl ProducerConfig {
            $( $(#[$m])* pub fn $name(mut self, v: $ty) -> ProducerConfig { self.$name = v; self } )*
        }
    };
}

setters! {
    acks: Acks;
    compression: Compression;
    batch_size: usize;
    linger: Duration;
    buffer_memory: usize;
    max_block: Duration;
    max_request_size: usize;
    request_timeout: Duration;
    delivery_timeout: Duration;
    retries: u32;
    retry_backoff: Duration;
    retry_backoff_max: Duration;
    max_in_flight_per_broker: usize;
    enable_idempotence: bool;
    metadata_max_age: Duration;
}

/// Requests per connection an idempotent producer keeps in flight at most (Kafka's limit). What
/// the broker remembers to recognize a retry is counted in batches, not requests
/// ([`IDEMPOTENT_BATCHES_KEPT`] per producer and partition), and the sender keeps each partition's
/// unanswered batches within it.
const MAX_IN_FLIGHT_IDEMPOTENT: usize = 5;

impl ProducerConfig {
    /// Whether batches carry a producer id and sequences: idempotence asked for, and acks wait
    /// for an answer (with acks=0 there is none to retry on).
    fn idempotent(&self) -> bool {
        self.enable_idempotence && self.acks != Acks::None
    }

    /// Uses a custom partitioner.
    pub fn partitioner(mut self, p: impl Partitioner) -> ProducerConfig {
        self.partitioner = Arc::new(p);
        self
    }

    /// Sets the delivery listener for [`Producer::enqueue_with_opaque`].
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    /// let acked = Arc::new(AtomicU64::new(0));
    /// let counter = acked.clone();
    /// let config = quiver_client::ProducerConfig::default().on_delivery(move |_opaque, result| {
    ///     if result.is_ok() {
    ///         counter.fetch_add(1, Ordering::Relaxed);
    ///     }
    /// });
    /// assert!(config.delivery_listener.is_some());
    /// ```
    pub fn on_delivery(
        mut self,
        f: impl Fn(u64, Result<RecordMetadata>) + Send + Sync + 'static,
    ) -> ProducerConfig {
        self.delivery_listener = Some(Arc::new(f));
        self
    }

    fn check(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Config(m.to_string()));
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1 byte");
        }
        if self.max_in_flight_per_broker == 0 {
            return bad("max_in_flight_per_broker must be at least 1");
        }
        if self.idempotent() && self.max_in_flight_per_broker > MAX_IN_FLIGHT_IDEMPOTENT {
            return bad("max_in_flight_per_broker must be at most 5 with idempotence");
        }
        if self.buffer_memory < self.batch_size.min(self.max_request_size) {
            return bad("buffer_memory must hold at least one batch");
        }
        if self.buffer_memory > (u32::MAX as usize) * 16 {
            return bad("buffer_memory is too large");
        }
        if self.max_request_size > quiver_proto::batch::BATCH_BYTES_MAX {
            return bad("max_request_size is above the batch format's 16 MiB limit");
        }
        Ok(())
    }
}

/// The answer to one [`Producer::enqueue`]: resolves to where the record landed, or why it did
/// not.
///
/// ```no_run
/// # async fn f(producer: quiver_client::Producer) -> quiver_client::Result<()> {
/// use quiver_client::ProducerRecord;
/// let mut pending = Vec::new();
/// for i in 0..1000 {
///     // Returns once the record is buffered; many can be in flight.
///     pending.push(producer.enqueue(ProducerRecord::new("t").value(format!("{i}"))).await?);
/// }
/// for delivery in pending {
///     let meta = delivery.await?;
///     assert!(meta.offset.is_some());
/// }
/// # Ok(()) }
/// ```
#[must_use = "a Delivery reports whether the record was written"]
pub struct Delivery {
    rx: oneshot::Receiver<Result<RecordMetadata>>,
}

impl Future for Delivery {
    type Output = Result<RecordMetadata>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(Error::Closed)))
    }
}

/// Sends records to a cluster. Cheap to clone (clones share the buffer and the sender task);
/// `Send + Sync`. Dropping the last clone sends what is buffered and then stops the sender;
/// [`Producer::close`] does the same and waits for it.
///
/// ```no_run
/// # async fn f() -> quiver_client::Result<()> {
/// use quiver_client::{Client, ClientConfig, Producer, ProducerConfig, ProducerRecord};
/// let client = Client::connect(ClientConfig::new("127.0.0.1:9092")).await?;
/// let producer = Producer::new(client, ProducerConfig::default())?;
/// let meta = producer
///     .send(ProducerRecord::new("orders").key("customer-1").value("first order").header("v", "1"))
///     .await?;
/// println!("partition {} offset {:?}", meta.partition, meta.offset);
/// producer.close().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Producer {
    shared: Arc<Shared>,
    _handle: Arc<Handle>,
}

/// Dropped with the last `Producer` clone: tells the sender to drain and stop.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.state.lock().expect("not poisoned").closing = true;
        self.shared.wake.notify_one();
    }
}

struct Shared {
    client: Client,
    config: ProducerConfig,
    memory: Arc<Semaphore>,
    state: Mutex<State>,
    /// Wakes the sender (new batch, full batch, request done, flush, close).
    wake: Notify,
    /// Signalled whenever batches complete (flush waits on it).
    completed: Notify,
    /// Batches with an id up to this are ready now (flush).
    flush_upto: AtomicU64,
    /// Signalled when a request's turn to be written passes to the next (`State::turns`).
    turn: Notify,
}

/// A partition of a topic, as the producer's queues key it.
type PartKey = (Topic, PartitionId);

/// A topic name as the producer holds it: interned (`State::intern`), one `Arc` per name for the
/// producer's life, so two are equal exactly when they are the same `Arc`. Rationale: the
/// queues are looked up several times per record, and hashing and comparing an address costs
/// less than hashing and comparing the name (the lookups were 14% of the client at 100-byte
/// records).
#[derive(Clone, Debug)]
struct Topic(Arc<str>);

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
const SPARE_BUFFERS_MAX: usize = 8;

#[derive(Default)]
struct State {
    /// Topic names seen, shared by every batch of the topic (no allocation per record), with
    /// the partition count last read from the client's metadata.
    topics: FxHashMap<String, Interned>,
    queues: FxHashMap<PartKey, PartQueue>,
    in_flight: HashMap<Node, usize>,
    /// Ids of batches not yet completed (flush waits for the ones below its mark).
    outstanding: BTreeSet<u64>,
    next_batch_id: u64,
    closing: bool,
    last_metadata_refresh: Option<Instant>,
    /// The producer id and epoch, once the broker gave them (idempotence); `idempotent` turns
    /// off if the broker does not serve InitProducerId.
    producer: Option<(i64, i16)>,
    idempotent: bool,
    /// Per broker: (next ticket to give a request, ticket whose turn it is to be written).
    /// Requests are written to a broker in the order the sender made them, so that an
    /// idempotent producer's requests for one partition arrive in sequence.
    turns: HashMap<Node, (u64, u64)>,
    /// Buffers of batches sent and answered, for new batches (at most `SPARE_BUFFERS_MAX`).
    spare: Vec<Vec<u8>>,
    /// Where in the queues the next `collect` starts: the first partition the last one had
    /// ready batches of but no room for. Rationale: with more ready batches than a request
    /// holds, starting at the same place each time drains the same partitions first and starves
    /// the rest (seconds of delay with 1,000 partitions); Kafka's accumulator rotates likewise.
    drain_from: usize,
}

#[derive(Default)]
struct PartQueue {
    batches: VecDeque<Batch>,
    /// Produce requests outstanding with this partition's batches: the id of the first batch,
    /// and how many batches.
    in_flight: BTreeMap<u64, usize>,
    /// The epoch and next sequence of this partition (idempotence).
    epoch: i16,
    next_seq: i32,
    /// A batch of the sequence failed for good, or the broker lost the producer's state: once
    /// nothing is in flight, the partition moves to a new epoch and numbers its queue from 0.
    reset: bool,
}

impl PartQueue {
    /// Puts batches back in id order (several requests of a partition may fail back).
    fn requeue(&mut self, b: Batch) {
        let at = self
            .batches
            .iter()
            .position(|x| x.id > b.id)
            .unwrap_or(self.batches.len());
        self.batches.insert(at, b);
    }

    /// Whether no batch older than `id` is queued or in flight.
    fn oldest(&self, id: u64) -> bool {
        self.in_flight.keys().next().is_none_or(|&f| f >= id)
            && self.batches.front().is_none_or(|b| b.id >= id)
    }
}

struct Batch {
    id: u64,
    topic: Topic,
    partition: PartitionId,
    builder: Option<BatchBuilder>,
    sealed: Option<Bytes>,
    pending: Vec<Pending>,
    created: Instant,
    deadline: Instant,
    full: bool,
    attempts: u32,
    retry_at: Option<Instant>,
    /// (epoch, first sequence) given to this batch (idempotence); kept across retries.
    seq: Option<(i16, i32)>,
    /// The stamp the sealed bytes carry.
    sealed_seq: Option<(i16, i32)>,
    /// Sent in a request of its own (its partition's batches were refused together).
    alone: bool,
    /// The buffer memory this batch holds; returned when the batch is dropped.
    _memory: OwnedSemaphorePermit,
}

struct Pending {
    done: Done,
    timestamp: TimestampMs,
}

/// Who learns a record's outcome.
enum Done {
    /// A [`Delivery`] future.
    Future(oneshot::Sender<Result<RecordMetadata>>),
    /// The producer's delivery listener, with the caller's opaque value.
    Listener(u64),
}

impl Batch {
    fn estimated_size(&self) -> usize {
        match (&self.builder, &self.sealed) {
            (_, Some(b)) => b.len(),
            (Some(b), None) => b.estimated_size(),
            (None, None) => 0,
        }
    }

    fn ready(&self, now: Instant, linger: Duration, flush_upto: u64, is_last: bool) -> bool {
        self.full
            || !is_last
            || self.attempts > 0
            || self.id <= flush_upto
            || now.duration_since(self.created) >= linger
    }

    /// Compresses and checksums the batch, with the producer id and sequence if it has them
    /// (once; a retry sends the same bytes, unless the partition's sequences restarted).
    fn seal(&mut self, producer: Option<(i64, i16)>) -> Result<Bytes> {
        let pid = producer.map_or(-1, |p| p.0);
        if let Some(b) = &self.sealed {
            if self.sealed_seq == self.seq {
                return Ok(b.clone());
            }
            let (epoch, seq) = self.seq.unwrap_or((-1, -1));
            let mut owned = b.to_vec();
            quiver_proto::batch::set_producer(&mut owned, pid, epoch, seq)
                .map_err(|e| Error::Record(format!("cannot restamp the batch: {e}")))?;
            let bytes = Bytes::from(owned);
            self.sealed = Some(bytes.clone());
            self.sealed_seq = self.seq;
            return Ok(bytes);
        }
        let mut builder = self
            .builder
            .take()
            .expect("an unsealed batch has a builder");
        if let Some((epoch, seq)) = self.seq {
            builder = builder.producer(pid, epoch, seq);
        }
        let bytes = builder
            .finish()
            .map_err(|e| Error::Record(format!("cannot build the batch: {e}")))?;
        self.sealed = Some(bytes.clone());
        self.sealed_seq = self.seq;
        Ok(bytes)
    }

    fn complete(
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

    fn fail(self, e: &Error, listener: Option<&DeliveryListener>) {
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

impl Producer {
    /// Starts a producer on `client` (its sender task runs on the current tokio runtime).
    pub fn new(client: Client, config: ProducerConfig) -> Result<Producer> {
        config.check()?;
        let idempotent = config.idempotent();
        let shared = Arc::new(Shared {
            client,
            memory: Arc::new(Semaphore::new(config.buffer_memory)),
            config,
            state: Mutex::new(State {
                next_batch_id: 1,
                last_metadata_refresh: Some(Instant::now()),
                idempotent,
                ..State::default()
            }),
            wake: Notify::new(),
            completed: Notify::new(),
            flush_upto: AtomicU64::new(0),
            turn: Notify::new(),
        });
        tokio::spawn(sender(shared.clone()));
        Ok(Producer {
            _handle: Arc::new(Handle {
                shared: shared.clone(),
            }),
            shared,
        })
    }

    /// Sends a record and waits until the broker has it (per `acks`); returns its partition and
    /// offset. For many records in flight at once use [`Producer::enqueue`], or run many `send`s
    /// concurrently.
    pub async fn send(&self, record: ProducerRecord) -> Result<RecordMetadata> {
        self.enqueue(record).await?.await
    }

    /// Buffers a record and returns as soon as it is buffered: waits only for room in the buffer
    /// (at most `max_block`). The returned [`Delivery`] resolves when the broker answers.
    pub async fn enqueue(&self, record: ProducerRecord) -> Result<Delivery> {
        let (tx, rx) = oneshot::channel();
        self.buffer(record, Done::Future(tx)).await?;
        Ok(Delivery { rx })
    }

    /// Buffers a record like [`Producer::enqueue`], and reports its outcome to the configured
    /// [`ProducerConfig::delivery_listener`] with `opaque`, instead of through a future: the
    /// cheapest way to send many records. Fails with [`Error::Config`] without a listener.
    ///
    /// ```no_run
    /// # async fn f(client: quiver_client::Client) -> quiver_client::Result<()> {
    /// use quiver_client::{Producer, ProducerConfig, ProducerRecord};
    /// let config = ProducerConfig::default().on_delivery(|opaque, result| {
    ///     if let Err(e) = result {
    ///         eprintln!("record {opaque} failed: {e}");
    ///     }
    /// });
    /// let producer = Producer::new(client, config)?;
    /// for i in 0..1_000_000u64 {
    ///     producer.enqueue_with_opaque(ProducerRecord::new("metrics").value(i.to_le_bytes().to_vec()), i).await?;
    /// }
    /// producer.flush().await?;
    /// # Ok(()) }
    /// ```
    pub async fn enqueue_with_opaque(&self, record: ProducerRecord, opaque: u64) -> Result<()> {
        if self.shared.config.delivery_listener.is_none() {
            return Err(Error::Config(
                "enqueue_with_opaque needs ProducerConfig::on_delivery".into(),
            ));
        }
        self.buffer(record, Done::Listener(opaque)).await
    }

    async fn buffer(&self, mut record: ProducerRecord, mut done: Done) -> Result<()> {
        let shared = &self.shared;
        let size = record.estimated_size();
        if size > shared.config.max_request_size {
            return Err(Error::Record(format!(
                "the record takes about {size} bytes, more than max_request_size ({} bytes)",
                shared.config.max_request_size
            )));
        }
        if size > shared.config.buffer_memory {
            return Err(Error::Record(format!(
                "the record takes about {size} bytes, more than buffer_memory ({} bytes)",
                shared.config.buffer_memory
            )));
        }
        // Read the clock only when something has to wait (not once per record).
        let mut deadline = None;
        let mut deadline = move || {
            *deadline.get_or_insert_with(|| tokio::time::Instant::now() + shared.config.max_block)
        };
        let mut permit = match shared.memory.clone().try_acquire_many_owned(size as u32) {
            Ok(p) => p,
            Err(TryAcquireError::Closed) => return Err(Error::Closed),
            Err(TryAcquireError::NoPermits) => {
                // A record for a topic without metadata, or for a partition the topic does not
                // have, fails or waits for metadata first, not for room in the buffer (the
                // order of Kafka's producer).
                let partitions = match shared.client.cached_partition_count(&record.topic) {
                    Some(n) => Some(n),
                    None => {
                        shared.load_topic(&record.topic, deadline()).await?;
                        shared.client.cached_partition_count(&record.topic)
                    }
                };
                if let Some(n) = partitions {
                    check_partition(&record, n)?;
                }
                match tokio::time::timeout_at(
                    deadline(),
                    shared.memory.clone().acquire_many_owned(size as u32),
                )
                .await
                {
                    Ok(Ok(p)) => p,
                    Ok(Err(_)) => return Err(Error::Closed),
                    Err(_) => {
                        return Err(Error::Timeout(format!(
                            "the producer's buffer ({} bytes) stayed full for max_block ({:?}); \
                             the broker is not keeping up or cannot be reached",
                            shared.config.buffer_memory, shared.config.max_block
                        )))
                    }
                }
            }
        };
        let mut loaded = false;
        loop {
            match shared.append(record, permit, done)? {
                Appended::Yes { wake } => {
                    if wake {
                        shared.wake.notify_one();
                    }
                    return Ok(());
                }
                Appended::NoMetadata(r, p, d) => {
                    if loaded {
                        return Err(Error::broker(
                            ErrorCode::UnknownTopicOrPartition,
                            Some(format!("topic '{}' is not in the metadata", r.topic)),
                        ));
                    }
                    shared.load_topic(&r.topic, deadline()).await?;
                    loaded = true;
                    (record, permit, done) = (r, p, d);
                }
            }
        }
    }

    /// Sends every buffered record now and waits until each record buffered before the call
    /// has its answer (written or failed: each [`Delivery`] tells which).
    pub async fn flush(&self) -> Result<()> {
        let shared = &self.shared;
        let target = shared.state.lock().expect("not poisoned").next_batch_id - 1;
        shared.flush_upto.fetch_max(target, Ordering::AcqRel);
        shared.wake.notify_one();
        loop {
            let notified = shared.completed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = shared.state.lock().expect("not poisoned");
                if st.outstanding.first().is_none_or(|&min| min > target) {
                    return Ok(());
                }
            }
            notified.await;
        }
    }

    /// Flushes, then stops the sender. Clones of this producer fail with [`Error::Closed`] after.
    pub async fn close(&self) -> Result<()> {
        self.flush().await?;
        self.shared.state.lock().expect("not poisoned").closing = true;
        self.shared.memory.close();
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Bytes of records held now (buffered or awaiting an answer); at most `buffer_memory`.
    pub fn buffered_bytes(&self) -> usize {
        self.shared.config.buffer_memory - self.shared.memory.available_permits()
    }

    /// The settings this producer runs with.
    pub fn config(&self) -> &ProducerConfig {
        &self.shared.config
    }
}

/// Whether a topic of `partitions` partitions can take the record now.
fn check_partition(record: &ProducerRecord, partitions: u32) -> Result<()> {
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
struct Interned {
    topic: Topic,
    /// (the client's metadata generation it was read at, the topic's partition count).
    /// Rationale: read from the client for each record, the count cost a lock and a SipHash of
    /// the name, about 2% of the producing thread (bench/RESULTS.md).
    partitions: Option<(u64, u32)>,
}

/// What [`Shared::append`] did with a record.
enum Appended {
    /// Appended; `wake`: the sender should look at the queues now.
    Yes { wake: bool },
    /// The client has no metadata for the record's topic: load it and try again.
    NoMetadata(ProducerRecord, OwnedSemaphorePermit, Done),
}

impl State {
    /// The producer's one `Topic` for a name (never forgotten: `Topic` equality needs it).
    fn intern(&mut self, topic: &str) -> Topic {
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
    async fn load_topic(&self, topic: &str, deadline: tokio::time::Instant) -> Result<()> {
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
    fn append(
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
        let fits = |q: Option<&PartQueue>| {
            q.and_then(|q| q.batches.back()).is_some_and(|b| {
                b.builder.is_some()
                    && !b.full
                    && b.attempts == 0
                    && b.estimated_size() + size <= config.batch_size
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
            st.queues.insert(key.clone(), PartQueue::default());
        }
        let q = st.queues.get_mut(&key).expect("inserted above");
        if !fits(Some(q)) {
            if let Some(last) = q.batches.back_mut() {
                last.full = true;
            }
            let id = st.next_batch_id;
            st.next_batch_id += 1;
            st.outstanding.insert(id);
            let now = Instant::now();
            q.batches.push_back(Batch {
                id,
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
                created: now,
                deadline: now + config.delivery_timeout,
                full: false,
                attempts: 0,
                retry_at: None,
                seq: None,
                sealed_seq: None,
                alone: false,
                _memory: permit,
            });
            wake = true;
        } else {
            q.batches
                .back_mut()
                .expect("fits() saw a batch")
                ._memory
                .merge(permit);
        }
        let batch = q.batches.back_mut().expect("just pushed or found");
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
            batch.full = true;
            wake = true;
        }
        Ok(Appended::Yes { wake })
    }

    fn backoff(&self, attempts: u32) -> Duration {
        let base = self.config.retry_backoff;
        let factor = 1u32 << attempts.saturating_sub(1).min(16);
        base.saturating_mul(factor)
            .min(self.config.retry_backoff_max)
    }

    /// Removes finished batches from the outstanding set and wakes flushers and the sender.
    fn finished(&self, ids: &[u64]) {
        let mut st = self.state.lock().expect("not poisoned");
        for id in ids {
            st.outstanding.remove(id);
        }
        drop(st);
        self.completed.notify_waiters();
    }

    fn refresh_metadata_soon(self: &Arc<Self>, st: &mut State, now: Instant) {
        if st
            .last_metadata_refresh
            .is_some_and(|t| now.duration_since(t) < self.config.retry_backoff)
        {
            return;
        }
        st.last_metadata_refresh = Some(now);
        let shared = self.clone();
        let topics: Vec<String> = {
            let mut t: Vec<String> = st.queues.keys().map(|(t, _)| t.to_string()).collect();
            t.sort();
            t.dedup();
            t
        };
        tokio::spawn(async move {
            if let Err(e) = shared.client.refresh_metadata(Some(topics)).await {
                tracing::debug!(error = %e, "producer metadata refresh failed");
            }
            shared.wake.notify_one();
        });
    }
}

/// One Produce request's worth of batches for one broker.
struct Draft {
    broker: Node,
    batches: Vec<Batch>,
    /// The partitions in the request, each with the id of its first batch (its key in the
    /// queue's `in_flight`).
    parts: Vec<(PartKey, u64)>,
    /// Producer id and epoch to stamp (idempotence).
    producer: Option<(i64, i16)>,
    /// Its turn to be written to the broker (`State::turns`).
    ticket: u64,
}

/// A request being put together: its size, batches, and partitions with their first batch id.
type DraftParts = (usize, Vec<Batch>, Vec<(PartKey, u64)>);

/// The sender: decides which batches are ready and hands them to request tasks.
async fn sender(shared: Arc<Shared>) {
    if shared.state.lock().expect("not poisoned").idempotent {
        tokio::spawn(init_producer_id(shared.clone()));
    }
    loop {
        let now = Instant::now();
        let (drafts, next_wake, done) = collect(&shared, now);
        for draft in drafts {
            tokio::spawn(send_request(shared.clone(), draft));
        }
        if done {
            tracing::debug!("producer sender stopped");
            return;
        }
        match next_wake {
            Some(at) => {
                let _ = tokio::time::timeout_at(at.into(), shared.wake.notified()).await;
            }
            None => shared.wake.notified().await,
        }
    }
}

/// Gets a producer id and epoch from the cluster, retrying with backoff while the producer is
/// open. A broker that does not serve InitProducerId turns idempotence off (with a warning):
/// the producer then keeps one request per partition in flight, as without it.
async fn init_producer_id(shared: Arc<Shared>) {
    let mut attempts = 0;
    loop {
        let req = InitProducerIdRequest::default();
        let err = match shared.client.call_any(&req, Vec::new()).await {
            Ok((resp, _)) if resp.error_code == ErrorCode::None => {
                let epoch = resp.producer_epoch.min(i16::MAX as u16) as i16;
                shared.state.lock().expect("not poisoned").producer =
                    Some((resp.producer_id as i64, epoch));
                tracing::debug!(producer_id = resp.producer_id, epoch, "idempotent producer");
                shared.wake.notify_one();
                return;
            }
            Ok((resp, _)) => Error::broker(resp.error_code, None),
            Err(e) => e,
        };
        let unsupported = matches!(
            err.code(),
            Some(ErrorCode::InvalidRequest | ErrorCode::UnsupportedVersion)
        );
        if unsupported {
            tracing::warn!(error = %err, "the cluster does not give producer ids; idempotence is off");
            shared.state.lock().expect("not poisoned").idempotent = false;
            shared.wake.notify_one();
            return;
        }
        if shared.state.lock().expect("not poisoned").closing && attempts > 0 {
            // Nothing can be sent without an id; the queued batches fail by their deadline.
            tracing::warn!(error = %err, "no producer id before close");
            return;
        }
        attempts += 1;
        tracing::debug!(error = %err, attempts, "InitProducerId failed; retrying");
        tokio::time::sleep(shared.backoff(attempts)).await;
    }
}

/// Takes the ready batches out of the queues. Returns the requests to send, when to look again
/// (the earliest linger or backoff expiry), and whether the producer is closed and empty.
fn collect(shared: &Arc<Shared>, now: Instant) -> (Vec<Draft>, Option<Instant>, bool) {
    let config = &shared.config;
    let flush_upto = shared.flush_upto.load(Ordering::Acquire);
    let cluster = shared.client.cluster();
    let mut st = shared.state.lock().expect("not poisoned");
    let closing = st.closing;
    let mut next_wake: Option<Instant> = None;
    let mut wake_at = |t: Instant| next_wake = Some(next_wake.map_or(t, |n: Instant| n.min(t)));
    let mut drafts: HashMap<Node, DraftParts> = HashMap::new();
    let mut expired: Vec<Batch> = Vec::new();
    let mut need_metadata = false;
    if st
        .last_metadata_refresh
        .is_some_and(|t| now.duration_since(t) >= config.metadata_max_age)
    {
        need_metadata = true;
    }
    let state = &mut *st;
    let idempotent = state.idempotent;
    let producer = state.producer.filter(|_| idempotent);
    // Without a producer id yet, an idempotent producer sends nothing (batches still expire).
    let can_send = !idempotent || producer.is_some();
    let per_partition = if idempotent {
        config.max_in_flight_per_broker
    } else {
        1
    };
    // The queues from `drain_from` to the end, then from the start (two passes over the map).
    let start = state.drain_from;
    let mut blocked: Option<usize> = None;
    for first_pass in [true, false] {
        for (i, ((topic, partition), q)) in state.queues.iter_mut().enumerate() {
            if (i >= start) != first_pass {
                continue;
            }
            if q.in_flight.len() >= per_partition {
                continue;
            }
            let mut unanswered = q.in_flight.values().sum::<usize>();
            if idempotent && unanswered >= IDEMPOTENT_BATCHES_KEPT {
                // Woken again when one of this partition's requests completes.
                continue;
            }
            // Batches past their delivery timeout fail here, oldest first.
            while q.batches.front().is_some_and(|b| now >= b.deadline) {
                let b = q.batches.pop_front().expect("front exists");
                // A numbered batch that is never written leaves a gap in the sequence.
                q.reset |= b.seq.is_some();
                expired.push(b);
            }
            // An empty batch is left when its only record failed to append.
            while q.batches.front().is_some_and(|b| b.pending.is_empty()) {
                let b = q.batches.pop_front().expect("front exists");
                state.outstanding.remove(&b.id);
            }
            let Some(head) = q.batches.front() else {
                continue;
            };
            if let Some(at) = head.retry_at {
                if at > now {
                    wake_at(at);
                    continue;
                }
            }
            let is_last = q.batches.len() == 1;
            if !closing && !head.ready(now, config.linger, flush_upto, is_last) {
                wake_at(head.created + config.linger);
                continue;
            }
            if !can_send {
                continue;
            }
            if idempotent && q.reset {
                // Woken again when the last request in flight completes.
                if !q.in_flight.is_empty() {
                    continue;
                }
                q.epoch = q.epoch.saturating_add(1);
                q.next_seq = 0;
                for b in q.batches.iter_mut() {
                    b.seq = None;
                }
                q.reset = false;
            }
            // A retried batch goes alone: if the broker has it already, the answer's one base
            // offset is exactly where it went. And only once nothing before it is in flight, or it
            // could overtake again.
            let alone = q
                .batches
                .front()
                .is_some_and(|b| b.alone || (idempotent && b.attempts > 0));
            if alone && q.batches.front().is_some_and(|b| !q.oldest(b.id)) {
                continue;
            }
            let leader = cluster
                .topics
                .get(&**topic)
                .and_then(|t| t.partitions.get(partition.0 as usize))
                .and_then(|p| p.leader_node());
            let Some(leader) = leader else {
                need_metadata = true;
                wake_at(now + config.retry_backoff);
                continue;
            };
            let in_flight = state.in_flight.get(&leader).copied().unwrap_or(0);
            let draft = drafts.entry(leader).or_insert((0, Vec::new(), Vec::new()));
            if draft.1.is_empty() && in_flight >= config.max_in_flight_per_broker {
                // Woken again when one of this broker's requests completes.
                blocked.get_or_insert(i);
                continue;
            }
            // Take this partition's ready batches, in order, within the request size and (with
            // idempotence) the unanswered batches the broker remembers.
            let mut first = None;
            let mut taken = 0;
            while let Some(b) = q.batches.front() {
                let is_last = q.batches.len() == 1;
                let ready = closing || b.ready(now, config.linger, flush_upto, is_last);
                let size = b.estimated_size();
                if !ready || b.pending.is_empty() || (alone && first.is_some()) {
                    break;
                }
                if idempotent && unanswered >= IDEMPOTENT_BATCHES_KEPT {
                    break;
                }
                if draft.0 > 0 && draft.0 + size > config.max_request_size {
                    // Ready, but the request is full: this partition goes first next time.
                    blocked.get_or_insert(i);
                    break;
                }
                draft.0 += size;
                let mut b = q.batches.pop_front().expect("front exists");
                if idempotent && b.seq.is_none() {
                    let epoch = q.epoch.max(producer.map_or(0, |p| p.1));
                    q.epoch = epoch;
                    b.seq = Some((epoch, q.next_seq));
                    q.next_seq = sequence_add(q.next_seq, b.pending.len() as u32);
                }
                first.get_or_insert(b.id);
                draft.1.push(b);
                taken += 1;
                unanswered += 1;
            }
            if let Some(id) = first {
                q.in_flight.insert(id, taken);
                draft.2.push(((topic.clone(), *partition), id));
            } else if let Some(b) = q.batches.front() {
                wake_at(b.created + config.linger);
            }
        }
    }
    if let Some(i) = blocked {
        state.drain_from = i;
    }
    let mut out = Vec::new();
    for (broker, (_, batches, parts)) in drafts {
        if batches.is_empty() {
            continue;
        }
        *state.in_flight.entry(broker).or_insert(0) += 1;
        let turns = state.turns.entry(broker).or_default();
        let ticket = turns.0;
        turns.0 += 1;
        out.push(Draft {
            broker,
            batches,
            parts,
            producer,
            ticket,
        });
    }
    // An idempotent producer keeps each partition's sequence, so its queues stay.
    state
        .queues
        .retain(|_, q| idempotent || !q.in_flight.is_empty() || !q.batches.is_empty());
    let done = closing
        && state
            .queues
            .values()
            .all(|q| q.in_flight.is_empty() && q.batches.is_empty())
        && state.in_flight.values().all(|&n| n == 0);
    if need_metadata {
        shared.refresh_metadata_soon(state, now);
    }
    let expired_ids: Vec<u64> = expired.iter().map(|b| b.id).collect();
    for id in &expired_ids {
        state.outstanding.remove(id);
    }
    drop(st);
    if !expired.is_empty() {
        for b in expired {
            let e = Error::Timeout(format!(
                "record not acknowledged within delivery_timeout ({:?}) for {}/{}",
                config.delivery_timeout, b.topic, b.partition.0
            ));
            b.fail(&e, shared.config.delivery_listener.as_deref());
        }
        shared.completed.notify_waiters();
    }
    (out, next_wake, done)
}

/// What became of one partition's batches in a request.
enum Outcome {
    Written {
        base: Option<Offset>,
        log_append_time: Option<TimestampMs>,
    },
    Failed(Error),
}

async fn send_request(shared: Arc<Shared>, draft: Draft) {
    let Draft {
        broker,
        mut batches,
        parts: in_flight_parts,
        producer,
        ticket,
    } = draft;
    let config = &shared.config;
    // Seal (compress, checksum) and lay out: topic -> partition -> its batches back to back.
    let mut sealed_ok = Vec::with_capacity(batches.len());
    let mut seal_failures = Vec::new();
    for mut b in batches.drain(..) {
        match b.seal(producer) {
            Ok(bytes) => sealed_ok.push((b, bytes)),
            Err(e) => seal_failures.push((b, e)),
        }
    }
    let mut finished_ids = Vec::new();
    // Partitions whose sequence has a gap now (a numbered batch failed for good).
    let mut gaps: Vec<PartKey> = Vec::new();
    for (b, e) in seal_failures {
        finished_ids.push(b.id);
        if b.seq.is_some() {
            gaps.push((b.topic.clone(), b.partition));
        }
        b.fail(&e, shared.config.delivery_listener.as_deref());
    }
    let mut groups: Vec<(PartKey, Vec<(Batch, Bytes)>)> = Vec::new();
    for (b, bytes) in sealed_ok {
        let key = (b.topic.clone(), b.partition);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push((b, bytes)),
            None => groups.push((key, vec![(b, bytes)])),
        }
    }
    let mut payload = PayloadBuilder::new();
    let mut topics: Vec<TopicProduceData> = Vec::new();
    for ((topic, partition), parts) in &groups {
        let records = payload
            .push_all(parts.iter().map(|(_, bytes)| bytes.clone()))
            .expect("a request stays below max_request_size, far under 4 GiB");
        let data = PartitionProduceData {
            partition: *partition,
            records,
        };
        match topics.iter_mut().find(|t| *t.name == **topic) {
            Some(t) => t.partitions.push(data),
            None => topics.push(TopicProduceData {
                name: topic.to_string(),
                partitions: vec![data],
            }),
        }
    }
    let req = ProduceRequest {
        transactional_id: None,
        acks: config.acks.wire(),
        timeout_ms: config.request_timeout.as_millis().min(u128::from(u32::MAX)) as u32,
        topics,
    };

    let request_bytes = payload.len();
    let partitions = groups.len();
    let sent_at = Instant::now();
    wait_turn(&shared, broker, ticket).await;
    let outcomes: Vec<Outcome> = if config.acks == Acks::None {
        let sent = shared
            .client
            .send_broker_oneway(broker, &req, payload.into_chunks())
            .await;
        pass_turn(&shared, broker);
        match sent {
            Ok(()) => groups
                .iter()
                .map(|_| Outcome::Written {
                    base: None,
                    log_append_time: None,
                })
                .collect(),
            Err(e) => groups.iter().map(|_| Outcome::Failed(e.clone())).collect(),
        }
    } else {
        let started = shared
            .client
            .start_call_broker_in_order::<ProduceRequest>(broker, &req, payload.into_chunks())
            .await;
        pass_turn(&shared, broker);
        let answered = match started {
            Ok(pending) => pending.response().await,
            Err(e) => Err(e),
        };
        match answered {
            Ok((resp, _)) => groups
                .iter()
                .map(|((topic, partition), _)| outcome_of(&resp, topic, *partition))
                .collect(),
            Err(e) => groups.iter().map(|_| Outcome::Failed(e.clone())).collect(),
        }
    };

    let now = Instant::now();
    let took = now.duration_since(sent_at);
    if took > Duration::from_secs(1) {
        tracing::debug!(broker = %broker, request_bytes, partitions, took_ms = took.as_millis() as u64, "slow produce request");
    }
    let mut refresh = false;
    let mut spare = Vec::new();
    let mut requeue: Vec<(PartKey, Vec<Batch>)> = Vec::new();
    let mut out_of_order: Vec<(PartKey, u64)> = Vec::new();
    for (((topic, partition), parts), outcome) in groups.into_iter().zip(outcomes) {
        let outcome = match outcome {
            // A numbered batch refused alone as a duplicate is older than the batches the broker
            // remembers (its answer was lost, later ones were answered): it is written, once, at
            // offsets no longer known.
            Outcome::Failed(e)
                if e.code() == Some(ErrorCode::DuplicateSequence)
                    && parts.len() == 1
                    && parts[0].0.seq.is_some() =>
            {
                tracing::debug!(topic = %topic, partition = partition.0, error = %e, "a retried batch was already written");
                Outcome::Written {
                    base: None,
                    log_append_time: None,
                }
            }
            o => o,
        };
        match outcome {
            Outcome::Written {
                base,
                log_append_time,
            } => {
                let mut next = base;
                for (mut b, bytes) in parts {
                    let count = b.pending.len() as u64;
                    finished_ids.push(b.id);
                    drop(bytes);
                    spare.extend(b.sealed.take().and_then(reclaim));
                    b.complete(
                        next,
                        log_append_time,
                        shared.config.delivery_listener.as_deref(),
                    );
                    next = next.map(|o| o.plus(count));
                }
            }
            Outcome::Failed(e) => {
                refresh |= needs_metadata(&e);
                let attempts = parts[0].0.attempts + 1;
                let backoff = shared.backoff(attempts);
                // Sequence refusals are resolved by resending (in order, or alone); see
                // the requeue below for when a refusal means the sequence must restart.
                let sequence = producer.is_some()
                    && matches!(
                        e.code(),
                        Some(ErrorCode::OutOfOrderSequence | ErrorCode::DuplicateSequence)
                    );
                if e.code() == Some(ErrorCode::OutOfOrderSequence) {
                    out_of_order.push(((topic.clone(), partition), parts[0].0.id));
                }
                // The broker refuses a partition's batches together when one of them is bad
                // (too large for the topic, invalid): each goes again alone, so that only the
                // bad one fails.
                let split = parts.len() > 1
                    && matches!(
                        e.code(),
                        Some(
                            ErrorCode::MessageTooLarge
                                | ErrorCode::InvalidRecord
                                | ErrorCode::CorruptMessage
                                | ErrorCode::RecordListTooLarge
                        )
                    );
                let retry = (e.is_retriable() || sequence || split)
                    && attempts <= config.retries
                    && parts.iter().all(|(b, _)| now + backoff < b.deadline);
                if retry {
                    tracing::debug!(topic = %topic, partition = partition.0, attempts, error = %e, "retrying produce");
                    // A sequence refusal needs no backoff: the batch goes again as soon as the
                    // batches before it are answered.
                    let retry_at = (!sequence && !split).then_some(now + backoff);
                    let batches = parts
                        .into_iter()
                        .map(|(mut b, _)| {
                            b.attempts = attempts;
                            b.retry_at = retry_at;
                            b.alone |= split;
                            b
                        })
                        .collect();
                    requeue.push(((topic, partition), batches));
                } else {
                    if parts.iter().any(|(b, _)| b.seq.is_some()) {
                        gaps.push((topic.clone(), partition));
                    }
                    for (b, _) in parts {
                        finished_ids.push(b.id);
                        b.fail(&e, shared.config.delivery_listener.as_deref());
                    }
                }
            }
        }
    }
    {
        let mut st = shared.state.lock().expect("not poisoned");
        for (key, first) in &in_flight_parts {
            if let Some(q) = st.queues.get_mut(key) {
                q.in_flight.remove(first);
            }
        }
        for (key, batches) in requeue {
            let q = st.queues.entry(key).or_default();
            for b in batches {
                q.requeue(b);
            }
        }
        // Out of order although nothing before it is unanswered: the broker has no state for
        // this producer and partition (or lost the batches before); restart the sequence.
        for (key, first) in out_of_order {
            if let Some(q) = st.queues.get_mut(&key) {
                if q.oldest(first) {
                    q.reset = true;
                }
            }
        }
        for key in gaps {
            if let Some(q) = st.queues.get_mut(&key) {
                q.reset = true;
            }
        }
        if let Some(n) = st.in_flight.get_mut(&broker) {
            *n = n.saturating_sub(1);
        }
        let room = SPARE_BUFFERS_MAX.saturating_sub(st.spare.len());
        st.spare.extend(spare.into_iter().take(room));
        if refresh {
            shared.refresh_metadata_soon(&mut st, now);
        }
    }
    shared.finished(&finished_ids);
    shared.wake.notify_one();
}

/// The buffer of a sent batch, once nothing else holds it (the transport drops its slices of
/// the batch when the broker has acknowledged them, which is before the answer in all but a
/// lost packet's case).
fn reclaim(sealed: Bytes) -> Option<Vec<u8>> {
    let mut buffer = sealed.try_into_mut().ok()?;
    buffer.clear();
    Some(buffer.into())
}

/// Waits until it is request `ticket`'s turn to be written to `broker`.
async fn wait_turn(shared: &Shared, broker: Node, ticket: u64) {
    loop {
        let notified = shared.turn.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let serving = shared
            .state
            .lock()
            .expect("not poisoned")
            .turns
            .get(&broker)
            .map_or(0, |t| t.1);
        if serving >= ticket {
            return;
        }
        notified.await;
    }
}

/// Passes the turn to be written to `broker` to the next request.
fn pass_turn(shared: &Shared, broker: Node) {
    shared
        .state
        .lock()
        .expect("not poisoned")
        .turns
        .entry(broker)
        .or_default()
        .1 += 1;
    shared.turn.notify_waiters();
}

fn outcome_of(resp: &ProduceResponse, topic: &str, partition: PartitionId) -> Outcome {
    let found = resp
        .topics
        .iter()
        .filter(|t| t.name == topic)
        .flat_map(|t| t.partitions.iter())
        .find(|p| p.partition == partition);
    match found {
        None => Outcome::Failed(Error::Protocol(format!(
            "the produce answer has no result for {topic}/{}",
            partition.0
        ))),
        Some(p) if p.error_code == ErrorCode::None => Outcome::Written {
            base: Some(p.base_offset),
            log_append_time: p.log_append_time_ms,
        },
        Some(p) => Outcome::Failed(Error::broker(p.error_code, p.error_message.clone())),
    }
}

/// Errors after which the client's idea of leaders or topics may be stale.
fn needs_metadata(e: &Error) -> bool {
    match e {
        Error::Transport(_) => true,
        _ => matches!(
            e.code(),
            Some(
                ErrorCode::NotLeaderOrFollower
                    | ErrorCode::LeaderNotAvailable
                    | ErrorCode::UnknownTopicOrPartition
                    | ErrorCode::BrokerNotAvailable
                    | ErrorCode::FencedLeaderEpoch
                    | ErrorCode::UnknownLeaderEpoch
                    | ErrorCode::ReplicaNotAvailable
            )
        ),
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

    #[test]
    fn acks_parse_like_kafka() {
        assert_eq!("1".parse::<Acks>().unwrap(), Acks::Leader);
        assert_eq!("-1".parse::<Acks>().unwrap(), Acks::All);
        assert!("none".parse::<Acks>().is_err());
    }

    #[test]
    fn config_refuses_settings_that_cannot_work() {
        assert!(ProducerConfig::default().batch_size(0).check().is_err());
        assert!(ProducerConfig::default()
            .max_in_flight_per_broker(0)
            .check()
            .is_err());
        assert!(ProducerConfig::default().buffer_memory(10).check().is_err());
        assert!(ProducerConfig::default().check().is_ok());
    }
}
