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
//! retried until `retries` attempts or
//! `delivery_timeout` after the batch was created. A leader that moved or a broker that is
//! gone is tried again after a metadata refresh at `retry_backoff` (the controller elects a
//! new leader within about the broker session timeout, and the batch goes there as soon as
//! metadata names it); other retriable errors back off exponentially (`retry_backoff` doubling
//! up to `retry_backoff_max`). With idempotence a retry after a lost answer
//! is written once; without it, it may be written twice. When the broker refuses a partition's
//! batches together because one of them is bad (too large for the topic, invalid), each is sent
//! again in a request of its own, so that only the bad one fails.
//!
//! # Flushing, closing, and dropping
//! [`Producer::flush`] sends what is buffered and waits for every answer; [`Producer::close`]
//! flushes and stops the producer. Both return [`Error::DeliveryFailed`] when records failed
//! since the last flush or close (with the count and the first error), and their `_timeout`
//! forms give up after a while: [`Producer::close_timeout`] then fails what is still
//! unacknowledged (Kafka's `close(Duration)`). Dropping the last handle without closing asks
//! the sender to send what is buffered in the background, which only happens while the tokio
//! runtime runs: a program whose `main` returns right after loses those records. So the
//! drop logs an error with the count of records not yet acknowledged; call `close` before
//! exiting.
//!
//! # Layout
//! `config.rs` holds the settings; `accumulator.rs` the buffer `send` appends to (interned
//! topics, batches, the producer's state under its one lock); `pipeline.rs` one partition's
//! queue, sequences, requests in flight and every retry, split and epoch decision, with no
//! I/O; `sender.rs` the sender task and the request tasks that drive the pipelines.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

#[cfg(doc)]
use quiver_proto::batch::IDEMPOTENT_BATCHES_KEPT;
use quiver_proto::ErrorCode;
use tokio::sync::{oneshot, Notify, Semaphore, TryAcquireError};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::record::{ProducerRecord, RecordMetadata};

use accumulator::{check_partition, Appended, Done, State};

mod accumulator;
mod config;
mod pipeline;
mod sender;

pub use config::{Acks, DeliveryListener, ProducerConfig};
pub use quiver_proto::batch::Compression;

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
/// `Send + Sync`.
///
/// Call [`Producer::close`] (or [`close_timeout`](Producer::close_timeout)) before the program
/// exits: it sends what is buffered, waits for the answers, and reports records that failed.
/// Dropping the last clone without closing only asks the background sender to send what is
/// buffered, which it does while the tokio runtime runs; when `main` returns first, those
/// records are lost, and the drop logs an error (`tracing::error!`) saying how many.
///
/// For many records use [`enqueue`](Producer::enqueue) (or
/// [`enqueue_with_opaque`](Producer::enqueue_with_opaque)), not [`send`](Producer::send) in a
/// loop: `send` waits for its record's acknowledgement, and that costs `linger` plus a round
/// trip to the broker and its write each time.
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

/// Dropped with the last `Producer` clone: tells the sender to drain and stop, and says what
/// may be lost.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let (unanswered, failed) = {
            let mut st = self.shared.state.lock().expect("not poisoned");
            st.closing = true;
            (st.unanswered, st.failed)
        };
        self.shared.wake.notify_one();
        if unanswered > 0 {
            tracing::error!(
                records = unanswered,
                "the last Producer handle was dropped with {unanswered} record(s) not yet \
                 acknowledged: they are sent in the background only while the tokio runtime \
                 runs, and are lost if the program exits first; call Producer::close() (or \
                 close_timeout) before exiting"
            );
        }
        if failed > 0 {
            tracing::error!(
                records = failed,
                "the last Producer handle was dropped after {failed} record(s) failed to be \
                 delivered since the last flush or close (flush and close report such failures)"
            );
        }
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
    /// Signalled when a close runs out of time (`State::aborted`).
    abort: Notify,
}

/// How long `close_timeout`, once its time is up, waits for the sender and the requests in
/// flight to fail what they hold. They do at once (nothing is awaited but the lock); this only
/// bounds a runtime too busy to run them.
const ABORT_GRACE: Duration = Duration::from_secs(1);

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
            abort: Notify::new(),
        });
        tokio::spawn(sender::sender(shared.clone()));
        Ok(Producer {
            _handle: Arc::new(Handle {
                shared: shared.clone(),
            }),
            shared,
        })
    }

    /// Sends a record and waits until the broker has it (per `acks`); returns its partition and
    /// offset.
    ///
    /// It waits for this one record: its batch waits `linger` (5 ms by default) for more
    /// records, then goes to the broker, which answers once the record is written (durably,
    /// with acks=all). Awaited one after another, that is several milliseconds per record
    /// (about 7 s for 1,000 records on one local broker), against a few milliseconds for the
    /// same 1,000 with [`Producer::enqueue`], which returns once the record is buffered, so
    /// that many records share each batch and round trip. Use `send` when the next step needs
    /// this record written; otherwise `enqueue` (and await the [`Delivery`]s, or
    /// [`flush`](Producer::flush)), or run many `send`s concurrently.
    pub async fn send(&self, record: ProducerRecord) -> Result<RecordMetadata> {
        self.enqueue(record).await?.await
    }

    /// Buffers a record and returns as soon as it is buffered: waits only for room in the buffer
    /// (at most `max_block`). The returned [`Delivery`] resolves when the broker answers. The
    /// fast way to send many records (see [`Producer::send`]).
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
    ///
    /// Fails with [`Error::DeliveryFailed`] (how many records failed, and the first error) when
    /// records failed since the last `flush` or `close` returned, whether or not their
    /// [`Delivery`] or delivery listener also reported it; the count starts again from zero.
    ///
    /// ```no_run
    /// # async fn f(producer: quiver_client::Producer) -> quiver_client::Result<()> {
    /// use quiver_client::{Error, ProducerRecord};
    /// for i in 0..1000 {
    ///     drop(producer.enqueue(ProducerRecord::new("t").value(format!("{i}"))).await?);
    /// }
    /// match producer.flush().await {
    ///     Ok(()) => println!("all 1000 written"),
    ///     Err(Error::DeliveryFailed { failed, first }) => eprintln!("{failed} lost, e.g.: {first}"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn flush(&self) -> Result<()> {
        self.wait_flushed(None).await;
        self.take_failures()
    }

    /// [`flush`](Producer::flush), giving up after `timeout` with [`Error::Timeout`] (saying
    /// how many records are still unacknowledged; they are still being sent, until their
    /// `delivery_timeout`). Failures are then left for the next flush or close to report.
    pub async fn flush_timeout(&self, timeout: Duration) -> Result<()> {
        if let Some(unanswered) = self
            .wait_flushed(Some(tokio::time::Instant::now() + timeout))
            .await
        {
            return Err(Error::Timeout(format!(
                "flush_timeout ({timeout:?}) ran out with {unanswered} record(s) not yet \
                 acknowledged; they are still being sent (until delivery_timeout, {:?})",
                self.shared.config.delivery_timeout
            )));
        }
        self.take_failures()
    }

    /// Flushes, then stops the sender. Clones of this producer fail with [`Error::Closed`]
    /// after. Fails like [`flush`](Producer::flush) when records failed.
    ///
    /// Waits for every buffered record's answer, which with an unreachable broker takes up to
    /// `delivery_timeout` (2 minutes by default); [`close_timeout`](Producer::close_timeout)
    /// bounds it.
    pub async fn close(&self) -> Result<()> {
        self.wait_flushed(None).await;
        self.stop();
        self.take_failures()
    }

    /// Flushes and stops like [`close`](Producer::close), waiting at most `timeout`. Records
    /// still unacknowledged then fail at once (Kafka's `close(Duration)`): their
    /// [`Delivery`]s and the delivery listener report [`Error::Timeout`], and this returns
    /// [`Error::DeliveryFailed`] counting them with any earlier failures.
    ///
    /// ```no_run
    /// # async fn f(producer: quiver_client::Producer) {
    /// use std::time::Duration;
    /// if let Err(e) = producer.close_timeout(Duration::from_secs(10)).await {
    ///     eprintln!("not everything was written: {e}");
    /// }
    /// # }
    /// ```
    pub async fn close_timeout(&self, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        let late = self.wait_flushed(Some(deadline)).await;
        self.stop();
        let mut still = 0;
        if late.is_some() {
            let shared = &self.shared;
            shared
                .state
                .lock()
                .expect("not poisoned")
                .aborted
                .get_or_insert_with(|| {
                    Error::Timeout(format!(
                        "close_timeout ({timeout:?}) ran out before the broker acknowledged \
                         the record"
                    ))
                });
            shared.abort.notify_waiters();
            shared.wake.notify_one();
            let grace = tokio::time::Instant::now() + ABORT_GRACE;
            still = self.wait_flushed(Some(grace)).await.unwrap_or(0);
        }
        let mut st = self.shared.state.lock().expect("not poisoned");
        if still > 0 {
            // Not failed yet (a runtime too busy to run the sender): counted as failed here.
            let first = st
                .aborted
                .clone()
                .expect("set above when the flush was late");
            st.failed += still;
            st.first_failure.get_or_insert(first);
        }
        match st.take_failures() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Makes every buffered batch ready and waits until the batches made before the call are
    /// answered, or until `deadline`: then `Some(records not yet answered)`.
    async fn wait_flushed(&self, deadline: Option<tokio::time::Instant>) -> Option<u64> {
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
                    return None;
                }
            }
            match deadline {
                None => notified.await,
                Some(d) => {
                    if tokio::time::timeout_at(d, notified).await.is_err() {
                        return Some(shared.state.lock().expect("not poisoned").unanswered);
                    }
                }
            }
        }
    }

    /// Failures since the last flush or close, as an error (and counted from zero again).
    fn take_failures(&self) -> Result<()> {
        match self
            .shared
            .state
            .lock()
            .expect("not poisoned")
            .take_failures()
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Refuses new records and lets the sender stop once it has sent what it holds.
    fn stop(&self) {
        self.shared.state.lock().expect("not poisoned").closing = true;
        self.shared.memory.close();
        self.shared.wake.notify_one();
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
