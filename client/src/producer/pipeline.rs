//! One partition's pipeline: its queue of batches, their sequence numbers and epoch, its
//! requests in flight, and every decision about them. No I/O, no clock, no lock: the sender
//! (`sender.rs`) calls it under the producer's lock with the time it read, and does what it
//! says.
//!
//! Call order, for one partition:
//! 1. [`PartitionPipeline::push`] a batch when `send` opens one (it closes the one before);
//!    records go into the open one through [`PartitionPipeline::last_mut`].
//! 2. [`PartitionPipeline::prepare`] each time the sender looks: it removes batches past their
//!    delivery timeout, may move the partition to its next epoch, and says whether it has
//!    something to send now ([`Ready`]).
//! 3. [`PartitionPipeline::take`] when the request has room: moves the batches of one request
//!    out, in order and numbered; the request is in flight, known by its first batch's id.
//! 4. When that request is answered (or failed), outside the lock: [`Answered::answer`] decides
//!    each batch (written, failed for good, or sent again: alone, in order, or after a
//!    backoff), and [`Answered::not_sent`] counts batches that could not be built.
//! 5. [`PartitionPipeline::settle`] under the lock: retried batches go back in id order, and a
//!    sequence with a gap restarts at the next epoch once nothing is in flight.
//!
//! Invariants (ARCHITECTURE.md, "Idempotent producers"):
//! - A partition's batches are numbered in the order they were made, each from where the one
//!   before ended; a batch keeps its number across retries until the partition moves to the
//!   next epoch, which numbers its whole queue from 0 again (the broker accepts a higher epoch
//!   from sequence 0). A batch that failed for good (expired, refused, never built) leaves a
//!   gap, and so does a broker that lost the producer's state (the oldest unanswered batch is
//!   refused as out of order): both move the partition to the next epoch, after its requests
//!   in flight are answered.
//! - Without idempotence a partition has one request in flight: the broker serves a
//!   connection's streams concurrently, so two could be appended in either order. With it, up
//!   to `max_in_flight_per_broker`, holding at most [`IDEMPOTENT_BATCHES_KEPT`] batches
//!   unanswered: the broker recognizes a retry only among that many of a producer's last
//!   batches. (A producer once had 25 batches of a partition unanswered against a 5-batch
//!   window: kill -9 lost the answers, the retry of the oldest was refused as a gap, and the
//!   restarted sequence wrote it twice.)
//! - A retried numbered batch goes alone, and only once nothing older is queued or in flight:
//!   a produce answer has one base offset per partition, so only a batch alone is recognized
//!   as a duplicate, and a batch that overtook its predecessors must not overtake again. A
//!   batch refused alone as a duplicate is older than what the broker remembers: it was
//!   written, once, at offsets no longer known.
//! - Batches a broker refused together because one of them is bad (too large, invalid) are
//!   each sent again alone, so that only the bad one fails.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use quiver_proto::batch::{sequence_add, IDEMPOTENT_BATCHES_KEPT};
use quiver_proto::{ErrorCode, Offset, TimestampMs};

use crate::error::Error;

/// What the pipeline needs to know of a batch it does not otherwise look into.
pub(crate) trait Payload {
    /// Records in the batch: the sequence numbers it takes.
    fn records(&self) -> usize;
    /// Bytes it adds to a request (an estimate while it is open).
    fn bytes(&self) -> usize;
}

/// A batch with the pipeline's bookkeeping.
pub(crate) struct Queued<B> {
    id: u64,
    created: Instant,
    deadline: Instant,
    /// Takes no more records: ready to send whatever its age.
    pub(crate) full: bool,
    /// Times it was sent and failed.
    attempts: u32,
    /// Not sent again before this (retry backoff).
    retry_at: Option<Instant>,
    /// (epoch, first sequence) given to it (idempotence); kept across retries.
    seq: Option<(i16, i32)>,
    /// Sent in a request of its own (its partition's batches were refused together).
    alone: bool,
    pub(crate) batch: B,
}

impl<B> Queued<B> {
    /// The producer-wide id: batches are made, numbered and queued in id order.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The (epoch, first sequence) to stamp in its header; `None` without idempotence.
    pub(crate) fn seq(&self) -> Option<(i16, i32)> {
        self.seq
    }

    /// Times it was sent and failed (a retried batch takes no more records).
    pub(crate) fn attempts(&self) -> u32 {
        self.attempts
    }

    fn ready(&self, t: &Turn, is_last: bool) -> bool {
        self.full
            || !is_last
            || self.attempts > 0
            || self.id <= t.flush_upto
            || t.now.duration_since(self.created) >= t.linger
    }
}

/// What the sender knows when it looks at the queues.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Turn {
    pub(crate) now: Instant,
    /// How long a batch that is not full waits for more records (`linger`).
    pub(crate) linger: Duration,
    /// Batches with an id up to this are ready whatever their age (flush).
    pub(crate) flush_upto: u64,
    /// The producer is closing: every batch is ready.
    pub(crate) closing: bool,
    /// Batches are numbered (idempotence).
    pub(crate) idempotent: bool,
    /// The producer's epoch, once the broker gave it an id: an idempotent producer sends
    /// nothing before (its batches still expire).
    pub(crate) producer_epoch: Option<i16>,
    /// `max_in_flight_per_broker`.
    pub(crate) max_in_flight: usize,
}

impl Turn {
    /// Requests of one partition in flight at most: one without idempotence.
    fn requests_max(&self) -> usize {
        if self.idempotent {
            self.max_in_flight
        } else {
            1
        }
    }

    fn can_send(&self) -> bool {
        !self.idempotent || self.producer_epoch.is_some()
    }
}

/// Whether a partition has something to send now ([`PartitionPipeline::prepare`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ready {
    /// Batches can go: [`PartitionPipeline::take`] them.
    Send,
    /// Nothing before this time (linger, retry backoff).
    At(Instant),
    /// Nothing until one of the partition's requests is answered.
    Answer,
    /// Nothing queued, or no producer id yet.
    Idle,
}

/// What [`PartitionPipeline::take`] took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Taken {
    /// The first batch's id (the request's key in the partition's requests in flight), and
    /// how many batches; `None`: nothing taken.
    pub(crate) first: Option<(u64, usize)>,
    /// The partition had a ready batch the request had no room for.
    pub(crate) request_full: bool,
    /// Nothing taken, and the first queued batch becomes ready (linger) at this time.
    pub(crate) wake_at: Option<Instant>,
}

/// One partition's queue and requests in flight. See the module documentation.
pub(crate) struct PartitionPipeline<B> {
    /// Batches not in flight, in id order.
    queue: VecDeque<Queued<B>>,
    /// Requests in flight: the id of the first batch, and how many batches.
    in_flight: BTreeMap<u64, usize>,
    epoch: i16,
    next_seq: i32,
    /// A numbered batch failed for good, or the broker lost the producer's state: once nothing
    /// is in flight, the partition moves to the next epoch and numbers its queue from 0.
    reset: bool,
}

impl<B> Default for PartitionPipeline<B> {
    fn default() -> Self {
        PartitionPipeline {
            queue: VecDeque::new(),
            in_flight: BTreeMap::new(),
            epoch: 0,
            next_seq: 0,
            reset: false,
        }
    }
}

impl<B: Payload> PartitionPipeline<B> {
    /// Queues a new batch (ids increase); the one before it takes no more records.
    pub(crate) fn push(&mut self, id: u64, created: Instant, deadline: Instant, batch: B) {
        debug_assert!(self.queue.back().is_none_or(|b| b.id < id));
        if let Some(last) = self.queue.back_mut() {
            last.full = true;
        }
        self.queue.push_back(Queued {
            id,
            created,
            deadline,
            full: false,
            attempts: 0,
            retry_at: None,
            seq: None,
            alone: false,
            batch,
        });
    }

    /// The newest queued batch (the open one, if any).
    pub(crate) fn last(&self) -> Option<&Queued<B>> {
        self.queue.back()
    }

    pub(crate) fn last_mut(&mut self) -> Option<&mut Queued<B>> {
        self.queue.back_mut()
    }

    /// Nothing queued and nothing in flight.
    pub(crate) fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.in_flight.is_empty()
    }

    /// Batches sent and not answered yet.
    fn unanswered(&self) -> usize {
        self.in_flight.values().sum()
    }

    /// Whether no batch older than `id` is queued or in flight.
    fn oldest(&self, id: u64) -> bool {
        self.in_flight.keys().next().is_none_or(|&f| f >= id)
            && self.queue.front().is_none_or(|b| b.id >= id)
    }

    /// Whether the first queued batch must go in a request of its own.
    fn head_alone(&self, t: &Turn) -> bool {
        self.queue
            .front()
            .is_some_and(|b| b.alone || (t.idempotent && b.attempts > 0))
    }

    /// Looks at the partition before a request is made: moves batches past their delivery
    /// timeout (they fail; a numbered one leaves a gap) and empty ones (their only record
    /// failed to append) to `gone`, moves the partition to its next epoch when it must and
    /// can, and says whether batches can be taken now.
    pub(crate) fn prepare(&mut self, t: &Turn, gone: &mut Vec<Queued<B>>) -> Ready {
        if self.in_flight.len() >= t.requests_max() {
            return Ready::Answer;
        }
        if t.idempotent && self.unanswered() >= IDEMPOTENT_BATCHES_KEPT {
            return Ready::Answer;
        }
        // Oldest first: a batch waits behind the ones before it.
        while self.queue.front().is_some_and(|b| t.now >= b.deadline) {
            let b = self.queue.pop_front().expect("front exists");
            self.reset |= b.seq.is_some();
            gone.push(b);
        }
        while self.queue.front().is_some_and(|b| b.batch.records() == 0) {
            gone.push(self.queue.pop_front().expect("front exists"));
        }
        let Some(head) = self.queue.front() else {
            return Ready::Idle;
        };
        if let Some(at) = head.retry_at {
            if at > t.now {
                return Ready::At(at);
            }
        }
        if !t.closing && !head.ready(t, self.queue.len() == 1) {
            return Ready::At(head.created + t.linger);
        }
        if !t.can_send() {
            return Ready::Idle;
        }
        if t.idempotent && self.reset {
            if !self.in_flight.is_empty() {
                return Ready::Answer;
            }
            self.epoch = self.epoch.saturating_add(1);
            self.next_seq = 0;
            for b in self.queue.iter_mut() {
                b.seq = None;
            }
            self.reset = false;
        }
        // A retried batch goes alone, and only once nothing before it is in flight, or it could
        // overtake again.
        let head = self.queue.front().expect("checked above");
        if self.head_alone(t) && !self.oldest(head.id) {
            return Ready::Answer;
        }
        Ready::Send
    }

    /// Moves the batches of one request into `out`, after a [`Ready::Send`]: the ready ones,
    /// in order, numbered (idempotence), within `request_bytes_max` (counted in
    /// `request_bytes`, which other partitions of the request share; the request's first batch
    /// always fits) and within [`IDEMPOTENT_BATCHES_KEPT`] unanswered; a batch that must go
    /// alone goes alone.
    pub(crate) fn take(
        &mut self,
        t: &Turn,
        request_bytes: &mut usize,
        request_bytes_max: usize,
        out: &mut Vec<Queued<B>>,
    ) -> Taken {
        let alone = self.head_alone(t);
        let mut unanswered = self.unanswered();
        let mut first = None;
        let mut taken = 0;
        let mut request_full = false;
        while let Some(b) = self.queue.front() {
            let is_last = self.queue.len() == 1;
            let ready = t.closing || b.ready(t, is_last);
            let size = b.batch.bytes();
            if !ready || b.batch.records() == 0 || (alone && first.is_some()) {
                break;
            }
            if t.idempotent && unanswered >= IDEMPOTENT_BATCHES_KEPT {
                break;
            }
            if *request_bytes > 0 && *request_bytes + size > request_bytes_max {
                // Ready, but the request is full: this partition goes first next time.
                request_full = true;
                break;
            }
            *request_bytes += size;
            let mut b = self.queue.pop_front().expect("front exists");
            if t.idempotent && b.seq.is_none() {
                let epoch = self.epoch.max(t.producer_epoch.unwrap_or(0));
                self.epoch = epoch;
                b.seq = Some((epoch, self.next_seq));
                self.next_seq = sequence_add(self.next_seq, b.batch.records() as u32);
            }
            first.get_or_insert(b.id);
            out.push(b);
            taken += 1;
            unanswered += 1;
        }
        match first {
            Some(id) => {
                self.in_flight.insert(id, taken);
                Taken {
                    first: Some((id, taken)),
                    request_full,
                    wake_at: None,
                }
            }
            None => Taken {
                first: None,
                request_full,
                wake_at: self.queue.front().map(|b| b.created + t.linger),
            },
        }
    }

    /// Applies what [`Answered`] decided for one request of this partition: the request is no
    /// longer in flight, batches sent again go back in id order, and the partition moves to
    /// the next epoch (once nothing is in flight) if its sequence has a gap, or if it was
    /// refused as out of order although nothing older was unanswered (the broker has no state
    /// for this producer and partition, or lost the batches before).
    pub(crate) fn settle(&mut self, a: Answered<B>) {
        self.in_flight.remove(&a.first);
        for b in a.again {
            self.requeue(b);
        }
        if a.out_of_order && self.oldest(a.first) {
            self.reset = true;
        }
        if a.gap {
            self.reset = true;
        }
    }

    /// Moves every queued batch to `gone` (the producer was closed before they could be sent,
    /// `close_timeout`); requests in flight stay, to be answered or abandoned by their tasks.
    /// A numbered batch among them leaves a gap.
    pub(crate) fn abandon(&mut self, gone: &mut Vec<Queued<B>>) {
        self.reset |= self.queue.iter().any(|b| b.seq.is_some());
        gone.extend(self.queue.drain(..));
    }

    /// Puts a batch back in id order (several requests of a partition may fail back).
    fn requeue(&mut self, b: Queued<B>) {
        let at = self
            .queue
            .iter()
            .position(|x| x.id > b.id)
            .unwrap_or(self.queue.len());
        self.queue.insert(at, b);
    }
}

/// When a failed batch is tried again.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RetryPolicy {
    /// Attempts after the first (`retries`).
    pub(crate) retries: u32,
    /// First backoff; doubles per attempt up to `backoff_max`.
    pub(crate) backoff: Duration,
    pub(crate) backoff_max: Duration,
}

impl RetryPolicy {
    /// The wait before attempt `attempts + 1`.
    pub(crate) fn backoff(&self, attempts: u32) -> Duration {
        let factor = 1u32 << attempts.saturating_sub(1).min(16);
        self.backoff.saturating_mul(factor).min(self.backoff_max)
    }
}

/// What became of a partition's batches in a request (the broker's answer, or the request's
/// failure), or of one batch.
#[derive(Clone, Debug)]
pub(crate) enum Outcome {
    /// Written; `base`: the first record's offset (unknown with acks=0, or for a batch the
    /// broker has had since before what it remembers).
    Written {
        base: Option<Offset>,
        log_append_time: Option<TimestampMs>,
    },
    Failed(Error),
}

/// A batch whose delivery is decided: report `outcome` for its records.
pub(crate) struct Decided<B> {
    pub(crate) id: u64,
    pub(crate) batch: B,
    pub(crate) outcome: Outcome,
}

/// What [`Answered::answer`] decided for a partition's batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Written (each batch at its offset, if known).
    Written,
    /// Refused alone as a duplicate: written before, at offsets no longer known.
    WrittenBefore,
    /// Kept to be sent again: after `backoff`, or with `None` as soon as the batches before
    /// them are answered (a sequence refusal, or a split); `alone`: each in a request of its
    /// own (split).
    Again {
        attempts: u32,
        backoff: Option<Duration>,
        alone: bool,
    },
    /// Failed for good.
    Failed,
}

/// The answer to one request, for one partition: built outside the producer's lock, then
/// applied with [`PartitionPipeline::settle`].
pub(crate) struct Answered<B> {
    /// The request's first batch of the partition (its key in the requests in flight).
    first: u64,
    /// Batches to send again.
    again: Vec<Queued<B>>,
    /// Refused as out of order.
    out_of_order: bool,
    /// A numbered batch failed for good: the sequence has a gap.
    gap: bool,
}

impl<B: Payload> Answered<B> {
    /// For the request whose first batch of the partition is `first`.
    pub(crate) fn new(first: u64) -> Answered<B> {
        Answered {
            first,
            again: Vec::new(),
            out_of_order: false,
            gap: false,
        }
    }

    /// A batch taken for the request was not sent (it could not be built) and fails for good:
    /// a numbered one leaves a gap. The caller reports its failure.
    pub(crate) fn not_sent(&mut self, b: &Queued<B>) {
        self.gap |= b.seq.is_some();
    }

    /// Decides what becomes of the partition's `batches` (in id order) that were sent in the
    /// request, given its `outcome`: the ones whose delivery is decided go to `done`, in
    /// order; the ones to send again stay here for [`PartitionPipeline::settle`].
    pub(crate) fn answer(
        &mut self,
        batches: Vec<Queued<B>>,
        outcome: &Outcome,
        policy: &RetryPolicy,
        now: Instant,
        done: &mut Vec<Decided<B>>,
    ) -> Verdict {
        let Some(head) = batches.first() else {
            return Verdict::Written;
        };
        // Every batch of one request is numbered, or none (idempotence is on when it is made).
        let numbered = head.seq.is_some();
        let (base, log_append_time, verdict) = match outcome {
            // A numbered batch refused alone as a duplicate is older than the batches the
            // broker remembers (its answer was lost, later ones were answered): it is written,
            // once, at offsets no longer known.
            Outcome::Failed(e)
                if e.code() == Some(ErrorCode::DuplicateSequence)
                    && batches.len() == 1
                    && numbered =>
            {
                (None, None, Verdict::WrittenBefore)
            }
            Outcome::Written {
                base,
                log_append_time,
            } => (*base, *log_append_time, Verdict::Written),
            Outcome::Failed(e) => return self.refused(batches, e, policy, now, done),
        };
        let mut next = base;
        for b in batches {
            let count = b.batch.records() as u64;
            done.push(Decided {
                id: b.id,
                batch: b.batch,
                outcome: Outcome::Written {
                    base: next,
                    log_append_time,
                },
            });
            next = next.map(|o| o.plus(count));
        }
        verdict
    }

    fn refused(
        &mut self,
        batches: Vec<Queued<B>>,
        e: &Error,
        policy: &RetryPolicy,
        now: Instant,
        done: &mut Vec<Decided<B>>,
    ) -> Verdict {
        let attempts = batches[0].attempts + 1;
        // The leader is moving or its broker is gone: metadata names the new one as soon as
        // the controller has elected it, so the batch is tried again (after a metadata
        // refresh) at the first backoff, not a growing one; doubling up to a second past the
        // election added about a second to a kill -9 failover (bench/replication.sh). Other
        // retriable refusals (a full broker, a timeout) back off exponentially.
        let backoff = if e.needs_metadata() {
            policy.backoff(1)
        } else {
            policy.backoff(attempts)
        };
        let numbered = batches[0].seq.is_some();
        // Sequence refusals are resolved by resending (in order, or alone); `settle` decides
        // when a refusal means the sequence must restart.
        let sequence = numbered
            && matches!(
                e.code(),
                Some(ErrorCode::OutOfOrderSequence | ErrorCode::DuplicateSequence)
            );
        if e.code() == Some(ErrorCode::OutOfOrderSequence) {
            self.out_of_order = true;
        }
        // The broker refuses a partition's batches together when one of them is bad (too large
        // for the topic, invalid): each goes again alone, so that only the bad one fails.
        let split = batches.len() > 1
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
            && attempts <= policy.retries
            && batches.iter().all(|b| now + backoff < b.deadline);
        if !retry {
            self.gap |= batches.iter().any(|b| b.seq.is_some());
            for b in batches {
                done.push(Decided {
                    id: b.id,
                    batch: b.batch,
                    outcome: Outcome::Failed(e.clone()),
                });
            }
            return Verdict::Failed;
        }
        // A sequence refusal needs no backoff: the batch goes again as soon as the batches
        // before it are answered. Nor does a split: the others were refused for the bad one.
        let backoff = (!sequence && !split).then_some(backoff);
        let retry_at = backoff.map(|b| now + b);
        for mut b in batches {
            b.attempts = attempts;
            b.retry_at = retry_at;
            b.alone |= split;
            self.again.push(b);
        }
        Verdict::Again {
            attempts,
            backoff,
            alone: split,
        }
    }
}

#[cfg(test)]
mod tests;
