//! Producer settings: [`Acks`], [`ProducerConfig`] and its checks.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use quiver_proto::api::produce as wire;
use quiver_proto::batch::Compression;
#[cfg(doc)]
use quiver_proto::batch::IDEMPOTENT_BATCHES_KEPT;

use super::pipeline::RetryPolicy;
#[cfg(doc)]
use super::Producer;
use crate::error::{Error, Result};
use crate::partitioner::{DefaultPartitioner, Partitioner};
use crate::record::RecordMetadata;

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
    pub(super) fn wire(self) -> wire::Acks {
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
    /// First backoff between attempts; doubles per attempt up to `retry_backoff_max`, except
    /// after an error that calls for new metadata (the leader moved, its broker is gone).
    pub retry_backoff: Duration,
    /// The longest backoff between attempts.
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
    /// Sets [`acks`](ProducerConfig::acks): how many replicas must have a record before it
    /// counts as written.
    acks: Acks;
    /// Sets [`compression`](ProducerConfig::compression): the codec of every batch.
    compression: Compression;
    /// Sets [`batch_size`](ProducerConfig::batch_size): bytes that make a batch full.
    batch_size: usize;
    /// Sets [`linger`](ProducerConfig::linger): how long a batch waits for more records.
    linger: Duration;
    /// Sets [`buffer_memory`](ProducerConfig::buffer_memory): bytes of records held at most.
    buffer_memory: usize;
    /// Sets [`max_block`](ProducerConfig::max_block): how long `send` waits for room.
    max_block: Duration;
    /// Sets [`max_request_size`](ProducerConfig::max_request_size): the largest request (and
    /// record).
    max_request_size: usize;
    /// Sets [`request_timeout`](ProducerConfig::request_timeout): how long the broker may take
    /// to make a produce durable.
    request_timeout: Duration;
    /// Sets [`delivery_timeout`](ProducerConfig::delivery_timeout): how long a record may take
    /// to be acknowledged, retries included.
    delivery_timeout: Duration;
    /// Sets [`retries`](ProducerConfig::retries): attempts after the first.
    retries: u32;
    /// Sets [`retry_backoff`](ProducerConfig::retry_backoff): the first wait between attempts.
    retry_backoff: Duration;
    /// Sets [`retry_backoff_max`](ProducerConfig::retry_backoff_max): the longest wait between
    /// attempts.
    retry_backoff_max: Duration;
    /// Sets [`max_in_flight_per_broker`](ProducerConfig::max_in_flight_per_broker): Produce
    /// requests outstanding per connection.
    max_in_flight_per_broker: usize;
    /// Sets [`enable_idempotence`](ProducerConfig::enable_idempotence).
    enable_idempotence: bool;
    /// Sets [`metadata_max_age`](ProducerConfig::metadata_max_age): how often topic metadata is
    /// reloaded.
    metadata_max_age: Duration;
}

/// Requests per connection an idempotent producer keeps in flight at most (Kafka's limit). What
/// the broker remembers to recognize a retry is counted in batches, not requests
/// ([`IDEMPOTENT_BATCHES_KEPT`] per producer and partition), and the sender keeps each partition's
/// unanswered batches within it.
pub(super) const MAX_IN_FLIGHT_IDEMPOTENT: usize = 5;

impl ProducerConfig {
    /// Whether batches carry a producer id and sequences: idempotence asked for, and acks wait
    /// for an answer (with acks=0 there is none to retry on).
    pub(super) fn idempotent(&self) -> bool {
        self.enable_idempotence && self.acks != Acks::None
    }

    /// `retries`, `retry_backoff` and `retry_backoff_max`, for the pipeline.
    pub(super) fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            retries: self.retries,
            backoff: self.retry_backoff,
            backoff_max: self.retry_backoff_max,
        }
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

    pub(super) fn check(&self) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
