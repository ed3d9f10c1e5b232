//! The sender task, which makes Produce requests of the ready batches, and the request tasks,
//! which send them and hand each partition's answer to its pipeline. Which batches go, in what
//! order, and what an answer does to them is the pipeline's to say (`pipeline.rs`); this file
//! does the I/O: metadata, leaders, turns on a connection, sealing, the requests themselves,
//! and delivery reports.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quiver_proto::api::produce::{
    InitProducerIdRequest, PartitionProduceData, PartitionProduceResponse, ProduceRequest,
    ProduceResponse, TopicProduceData,
};
use quiver_proto::api::PayloadBuilder;
use quiver_proto::{ErrorCode, PartitionId};

use super::accumulator::{Batch, PartKey, State, SPARE_BUFFERS_MAX};
use super::config::Acks;
use super::pipeline::{
    Answered, Decided, Outcome, Payload, Queued, Ready, RetryPolicy, Turn, Verdict,
};
use super::Shared;
use crate::client::Node;
use crate::error::Error;
use crate::grouping::by_topic;

impl Shared {
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
    /// The batches, partition by partition, each partition's in order.
    batches: Vec<Queued<Batch>>,
    /// The partitions in the request, in the order of `batches`: each with the id of its first
    /// batch (its request's key in the partition's pipeline) and how many batches.
    parts: Vec<(PartKey, u64, usize)>,
    /// Producer id and epoch to stamp (idempotence).
    producer: Option<(i64, i16)>,
    /// Its turn to be written to the broker (`State::turns`).
    ticket: u64,
}

/// A request being put together: its size, batches, and partitions.
type DraftParts = (usize, Vec<Queued<Batch>>, Vec<(PartKey, u64, usize)>);

/// The sender: decides which batches are ready and hands them to request tasks.
pub(super) async fn sender(shared: Arc<Shared>) {
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
        if !err.is_retriable() {
            // Refused for good (not authorized: neither IdempotentWrite on the cluster nor
            // Write on a topic; not authenticated), as Kafka's producer takes it: fatal. The
            // producer stops, and every record sent to it fails with this error, rather than
            // waiting for an id that will not come.
            tracing::warn!(error = %err, "no producer id: the cluster refuses; the producer stops");
            shared.state.lock().expect("not poisoned").aborted = Some(err);
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
        tokio::time::sleep(shared.config.retry_policy().backoff(attempts)).await;
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
    // Batches past their delivery timeout, empty ones, and after an abort every queued one.
    let mut gone: Vec<Queued<Batch>> = Vec::new();
    let mut need_metadata = false;
    if st
        .last_metadata_refresh
        .is_some_and(|t| now.duration_since(t) >= config.metadata_max_age)
    {
        need_metadata = true;
    }
    let state = &mut *st;
    if state.aborted.is_some() {
        // A close ran out of time: nothing more is sent; the queued batches fail below.
        for q in state.queues.values_mut() {
            q.abandon(&mut gone);
        }
    }
    let idempotent = state.idempotent;
    let producer = state.producer.filter(|_| idempotent);
    let turn = Turn {
        now,
        linger: config.linger,
        flush_upto,
        closing,
        idempotent,
        producer_epoch: producer.map(|p| p.1),
        max_in_flight: config.max_in_flight_per_broker,
    };
    // The queues from `drain_from` to the end, then from the start (two passes over the map).
    let start = state.drain_from;
    let mut blocked: Option<usize> = None;
    for first_pass in [true, false] {
        for (i, ((topic, partition), q)) in state.queues.iter_mut().enumerate() {
            if (i >= start) != first_pass {
                continue;
            }
            match q.prepare(&turn, &mut gone) {
                Ready::Send => {}
                Ready::At(at) => {
                    wake_at(at);
                    continue;
                }
                // Woken again when one of this partition's requests completes, or by `send`.
                Ready::Answer | Ready::Idle => continue,
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
            // A broker that throttled this client (a quota) gets nothing until it said.
            if let Some(&until) = state.throttled_until.get(&leader) {
                if until > now {
                    wake_at(until);
                    continue;
                }
            }
            let in_flight = state.in_flight.get(&leader).copied().unwrap_or(0);
            let draft = drafts.entry(leader).or_insert((0, Vec::new(), Vec::new()));
            if draft.1.is_empty() && in_flight >= config.max_in_flight_per_broker {
                // Woken again when one of this broker's requests completes.
                blocked.get_or_insert(i);
                continue;
            }
            let taken = q.take(&turn, &mut draft.0, config.max_request_size, &mut draft.1);
            if taken.request_full {
                // Ready, but the request is full: this partition goes first next time.
                blocked.get_or_insert(i);
            }
            if let Some((first, count)) = taken.first {
                draft.2.push(((topic.clone(), *partition), first, count));
            }
            if let Some(at) = taken.wake_at {
                wake_at(at);
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
    state.queues.retain(|_, q| idempotent || !q.is_idle());
    let done = closing
        && state.queues.values().all(|q| q.is_idle())
        && state.in_flight.values().all(|&n| n == 0);
    if need_metadata {
        shared.refresh_metadata_soon(state, now);
    }
    // Failures are counted under the lock, with the batches' removal: a flush that sees them
    // finished also sees them failed.
    let mut failed = Vec::with_capacity(gone.len());
    for b in gone {
        state.outstanding.remove(&b.id());
        let b = b.batch;
        let e = match &state.aborted {
            Some(e) => e.clone(),
            None => Error::Timeout(format!(
                "record not acknowledged within delivery_timeout ({:?}) for {}/{}",
                config.delivery_timeout, b.topic, b.partition.0
            )),
        };
        state.settled(b.records(), Some(&e));
        failed.push((b, e));
    }
    drop(st);
    if !failed.is_empty() {
        for (b, e) in failed {
            b.fail(&e, shared.config.delivery_listener.as_deref());
        }
        shared.completed.notify_waiters();
    }
    (out, next_wake, done)
}

/// One partition of a request: its batches sent, and what the answer does to them.
struct Part {
    key: PartKey,
    batches: Vec<Queued<Batch>>,
    answered: Answered<Batch>,
}

async fn send_request(shared: Arc<Shared>, draft: Draft) {
    let Draft {
        broker,
        batches,
        parts,
        producer,
        ticket,
    } = draft;
    let config = &shared.config;
    let listener = config.delivery_listener.as_deref();
    let pid = producer.map_or(-1, |p| p.0);
    let mut finished_ids = Vec::new();
    // (records, how they failed): counted in the producer's state with the batches' removal.
    let mut settled: Vec<(usize, Option<Error>)> = Vec::new();
    // Seal (compress, checksum) each partition's batches; one that cannot be built fails now.
    let mut batches = batches.into_iter();
    let mut sent: Vec<Part> = Vec::with_capacity(parts.len());
    for (key, first, count) in parts {
        let mut answered = Answered::new(first);
        let mut ok = Vec::with_capacity(count);
        for mut b in batches.by_ref().take(count) {
            match b.batch.seal(pid, b.seq()) {
                Ok(()) => ok.push(b),
                Err(e) => {
                    answered.not_sent(&b);
                    finished_ids.push(b.id());
                    settled.push((b.batch.records(), Some(e.clone())));
                    b.batch.fail(&e, listener);
                }
            }
        }
        sent.push(Part {
            key,
            batches: ok,
            answered,
        });
    }
    // Lay out: topic -> partition -> its batches back to back.
    let mut payload = PayloadBuilder::new();
    let partitions = sent.iter().filter(|p| !p.batches.is_empty()).count();
    let topics = by_topic(
        sent.iter().filter(|p| !p.batches.is_empty()).map(|p| {
            let records = payload
                .push_all(p.batches.iter().map(|b| b.batch.sealed()))
                .expect("a request stays below max_request_size, far under 4 GiB");
            let data = PartitionProduceData {
                partition: p.key.1,
                records,
            };
            (&p.key.0, data)
        }),
        |topic, partitions| TopicProduceData {
            name: topic.to_string(),
            partitions,
        },
    );
    let req = ProduceRequest {
        transactional_id: None,
        acks: config.acks.wire(),
        timeout_ms: config.request_timeout.as_millis().min(u128::from(u32::MAX)) as u32,
        topics,
    };

    let request_bytes = payload.len();
    let sent_at = Instant::now();
    // `Ok(None)`: written, with acks=0 (no answer).
    let exchange = async {
        wait_turn(&shared, broker, ticket).await;
        if config.acks == Acks::None {
            let written = shared
                .client
                .send_broker_oneway(broker, &req, payload.into_chunks())
                .await;
            pass_turn(&shared, broker);
            written.map(|()| None)
        } else {
            let started = shared
                .client
                .start_call_broker_in_order::<ProduceRequest>(broker, &req, payload.into_chunks())
                .await;
            pass_turn(&shared, broker);
            match started {
                Ok(pending) => pending.response().await.map(|(resp, _)| Some(resp)),
                Err(e) => Err(e),
            }
        }
    };
    // A close that ran out of time stops the wait: the batches fail with its error. (Every
    // request is abandoned then, so a turn not passed on holds up no one.)
    let answer: Result<Option<ProduceResponse>, Error> = tokio::select! {
        answer = exchange => answer,
        e = aborted(&shared) => Err(e),
    };

    let now = Instant::now();
    if let Ok(Some(resp)) = &answer {
        if resp.throttle_time_ms > 0 {
            // The broker held this request back for a quota and asks for no more until then
            // (Kafka's KIP-219): honoured, rather than piling requests up at the broker.
            let until = now + Duration::from_millis(u64::from(resp.throttle_time_ms));
            let mut st = shared.state.lock().expect("not poisoned");
            st.throttled_until.insert(broker, until);
        }
    }
    let took = now.duration_since(sent_at);
    if took > Duration::from_secs(1) {
        tracing::debug!(broker = %broker, request_bytes, partitions, took_ms = took.as_millis() as u64, "slow produce request");
    }
    let aborted_now = shared.state.lock().expect("not poisoned").aborted.is_some();
    // After an abort nothing is tried again: what is not written fails.
    let policy = if aborted_now {
        RetryPolicy {
            retries: 0,
            ..config.retry_policy()
        }
    } else {
        config.retry_policy()
    };
    let mut refresh = false;
    let mut decided = Vec::new();
    // The answer indexed once: a request may carry batches for 100,000 partitions.
    let answers = match &answer {
        Ok(Some(resp)) => crate::grouping::by_partition(
            resp.topics
                .iter()
                .map(|t| (t.name.as_str(), t.partitions.as_slice())),
            |p| p.partition,
        ),
        _ => HashMap::new(),
    };
    for p in &mut sent {
        if p.batches.is_empty() {
            continue;
        }
        let (topic, partition) = &p.key;
        let outcome = match &answer {
            Ok(None) => Outcome::Written {
                base: None,
                log_append_time: None,
            },
            Ok(Some(_)) => outcome_of(
                answers.get(&(&**topic, *partition)).copied(),
                topic,
                *partition,
            ),
            Err(e) => Outcome::Failed(e.clone()),
        };
        let batches = std::mem::take(&mut p.batches);
        match p
            .answered
            .answer(batches, &outcome, &policy, now, &mut decided)
        {
            Verdict::Written | Verdict::Failed => {}
            Verdict::WrittenBefore => {
                tracing::debug!(topic = %topic, partition = partition.0, "a retried batch was already written");
            }
            Verdict::Again { attempts, .. } => {
                if let Outcome::Failed(e) = &outcome {
                    tracing::debug!(topic = %topic, partition = partition.0, attempts, error = %e, "retrying produce");
                }
            }
        }
        if let Outcome::Failed(e) = &outcome {
            refresh |= e.needs_metadata();
        }
    }
    let mut spare = Vec::new();
    for Decided {
        id,
        mut batch,
        outcome,
    } in decided
    {
        finished_ids.push(id);
        match outcome {
            Outcome::Written {
                base,
                log_append_time,
            } => {
                settled.push((batch.records(), None));
                spare.extend(batch.take_buffer());
                batch.complete(base, log_append_time, listener);
            }
            Outcome::Failed(e) => {
                settled.push((batch.records(), Some(e.clone())));
                batch.fail(&e, listener);
            }
        }
    }
    {
        let mut st = shared.state.lock().expect("not poisoned");
        for p in sent {
            st.queues.entry(p.key).or_default().settle(p.answered);
        }
        if let Some(n) = st.in_flight.get_mut(&broker) {
            *n = n.saturating_sub(1);
        }
        for (records, failure) in &settled {
            st.settled(*records, failure.as_ref());
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

/// Waits until a close runs out of time (`close_timeout`); its error.
async fn aborted(shared: &Shared) -> Error {
    loop {
        let notified = shared.abort.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(e) = &shared.state.lock().expect("not poisoned").aborted {
            return e.clone();
        }
        notified.await;
    }
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

fn outcome_of(
    found: Option<&PartitionProduceResponse>,
    topic: &str,
    partition: PartitionId,
) -> Outcome {
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
