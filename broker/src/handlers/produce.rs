//! Produce: validate each batch once, append on the owning shard, answer when durable (with
//! acks=all on a replicated partition: when every in-sync replica holds it durably).
//!
//! What one request may cost: its frame (at most `max_frame_bytes`, held within the
//! connection's byte budget until the appends are done, acks=0 included); one pass over each
//! batch's bytes for the CRC and one over its records (decompressed into a buffer of at most
//! `batch::DECOMPRESSED_BYTES_MAX` if compressed), so that a consumer never meets a batch it
//! cannot decode (in a cluster, a second such pass at most once, when a batch names a producer
//! id this broker has not learned yet and it catches up with the metadata log first); one append
//! per partition, each partition named at most once and each payload byte referenced at most
//! once (`proto::api::limits`); and its wait for the ISR, at most its own timeout.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quiver_proto::api::produce::{
    Acks, PartitionProduceData, PartitionProduceResponse, ProduceRequest, ProduceResponse,
    TopicProduceResponse,
};
use quiver_proto::api::LeaderHint;
use quiver_proto::batch::{self, BatchError, BatchIter, BatchLimits, ValidBatch};
use quiver_proto::{ErrorCode, ShardId, TimestampMs};

use super::common::{part_error, Answer};
use crate::cluster::state::{PartKey, TopicInfo};
use crate::config::TimestampType;
use crate::runtime::Shard;
use crate::security::acl::Operation;
use crate::security::Access;

/// A partition's part of a produce request, checked and ready to append.
struct Prepared {
    owner: ShardId,
    key: PartKey,
    epoch: quiver_proto::LeaderEpoch,
    /// Replicated (placed on brokers): acks=all waits for the ISR.
    replicated: bool,
    batches: Vec<ValidBatch>,
    records: u64,
    bytes: u64,
    log_append_time: Option<TimestampMs>,
}

type Refusal = (ErrorCode, String);

/// How long an acks=all produce waits for its ISR when the request names no timeout, and the
/// longest it may name.
const ACKS_ALL_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
const ACKS_ALL_TIMEOUT_MAX: Duration = Duration::from_secs(300);
/// Longest a produce naming a producer id this broker does not know waits to catch up with the
/// metadata log before refusing it.
const CATCH_UP_WAIT: Duration = Duration::from_secs(2);

pub(super) async fn handle(
    shard: &Rc<Shard>,
    req: ProduceRequest,
    payload: Bytes,
    access: &Access,
) -> Answer {
    if shard.config.auto_create_topics {
        let names = req.topics.iter().map(|t| t.name.as_str());
        super::admin::auto_create(shard, names, access).await;
    }
    let mut snapshot = shard.snapshot();
    let now = TimestampMs(crate::now_ms());
    let mut topics = Vec::with_capacity(req.topics.len());
    let mut jobs = Vec::new();
    let mut failed = false;
    let mut caught_up = false;
    loop {
        let mut unknown_pid = false;
        for (ti, t) in req.topics.iter().enumerate() {
            let info = snapshot.topic(&t.name);
            // Checked before the topic's existence, which it would otherwise tell.
            let denied = !access.topic(Operation::Write, &t.name);
            let mut partitions = Vec::with_capacity(t.partitions.len());
            for (pi, p) in t.partitions.iter().enumerate() {
                let mut out = PartitionProduceResponse {
                    partition: p.partition,
                    ..Default::default()
                };
                let placed = if denied {
                    shard.metrics.denied();
                    Err(Refused::Plain((
                        ErrorCode::TopicAuthorizationFailed,
                        format!("{} may not write to topic '{}'", access.principal(), t.name),
                    )))
                } else {
                    info.map(|info| placement_check(&snapshot, info, p.partition, req.acks))
                        .unwrap_or(Ok(()))
                };
                match placed.and_then(|()| {
                    prepare(&t.name, info, p, &payload, now, shard).map_err(Refused::from)
                }) {
                    Ok(prep) => jobs.push((ti, pi, prep)),
                    Err(Refused::Hint(code, message, hint)) => {
                        failed = true;
                        out.error_code = code;
                        out.error_message = Some(message);
                        out.current_leader = hint;
                    }
                    Err(Refused::Plain((code, message))) => {
                        failed = true;
                        unknown_pid |= code == ErrorCode::UnknownProducerId;
                        out.error_code = code;
                        out.error_message = Some(message);
                    }
                }
                partitions.push(out);
            }
            topics.push(TopicProduceResponse {
                name: t.name.clone(),
                partitions,
            });
        }
        // In a cluster, producer ids are handed out in blocks through the metadata log, which this
        // broker may not have applied yet: an id it does not know is checked again (once) after
        // catching up with the log. Nothing was appended yet, so the request is prepared afresh.
        if !unknown_pid || caught_up || !snapshot.clustered() {
            break;
        }
        caught_up = true;
        let _ = shard
            .run_on(ShardId(0), |_| async move {
                if let Some(q) = crate::quorum::on_this_shard() {
                    let _ = crate::quorum::within(CATCH_UP_WAIT, q.read_barrier()).await;
                }
            })
            .await;
        snapshot = shard.snapshot();
        topics.clear();
        jobs.clear();
        failed = false;
    }

    let timeout = match req.timeout_ms {
        0 => ACKS_ALL_TIMEOUT_DEFAULT,
        ms => Duration::from_millis(u64::from(ms)),
    };
    // Answered (RequestTimedOut, which a producer retries) a little before the producer's own
    // timeout would cut the call short and leave it guessing.
    let timeout = timeout.min(ACKS_ALL_TIMEOUT_MAX);
    let ack_deadline = Instant::now() + timeout - timeout / 10;
    let appends = jobs.into_iter().map(|(ti, pi, prep)| {
        let shard = shard.clone();
        let all = req.acks == Acks::All && prep.replicated;
        async move {
            let (records, bytes, time) = (prep.records, prep.bytes, prep.log_append_time);
            let (owner, key) = (prep.owner, prep.key);
            let mut result = shard
                .append_on(owner, key, prep.batches, prep.epoch)
                .await
                .map_err(|e| (part_error(&e), Some(e)));
            if let (true, Ok(info)) = (all, &result) {
                // acks=all: answered once every in-sync replica holds the batches durably.
                match shard
                    .wait_replicated_on(owner, key, info.next_offset, ack_deadline)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        result = Err((
                            (
                                ErrorCode::RequestTimedOut,
                                format!(
                                    "written and durable on the leader, but not on every in-sync replica within {} ms",
                                    timeout.as_millis()
                                ),
                            ),
                            None,
                        ))
                    }
                    Err(e) => result = Err((part_error(&e), Some(e))),
                }
            }
            (ti, pi, records, bytes, time, result)
        }
    });

    let acks_none = req.acks == Acks::None;
    for (ti, pi, records, bytes, time, result) in futures_util::future::join_all(appends).await {
        let topic = &mut topics[ti];
        let out = &mut topic.partitions[pi];
        match result {
            Ok(info) => {
                count(&shard.metrics, records, bytes);
                out.base_offset = info.base_offset;
                out.log_append_time_ms = time;
            }
            Err(((code, message), e)) => {
                failed = true;
                if code == ErrorCode::StorageError || code == ErrorCode::DiskFull {
                    tracing::error!(topic = %topic.name, partition = out.partition.0, error = ?e, "append failed");
                }
                out.error_code = code;
                out.error_message = Some(message);
            }
        }
    }
    if acks_none {
        // Fire and forget: the producer does not wait for an answer (it reads and drops it), so
        // it carries no offsets. The request still waits for its appends before answering, so
        // its bytes stay within the connection's budget until they are written: a producer at
        // acks=0 is slowed by QUIC flow control like any other, not given unbounded memory.
        for t in &mut topics {
            for p in &mut t.partitions {
                p.base_offset = quiver_proto::Offset(0);
            }
        }
    }
    // log_start_offset is informative; filled for the partitions this shard owns.
    fill_log_start(shard, &snapshot, &mut topics);
    Answer {
        body: ProduceResponse {
            topics,
            throttle_time_ms: 0,
        }
        .into(),
        payload: Vec::new(),
        failed,
    }
}

fn count(metrics: &crate::metrics::Metrics, records: u64, bytes: u64) {
    use std::sync::atomic::Ordering::Relaxed;
    metrics.records_in.fetch_add(records, Relaxed);
    metrics.bytes_in.fetch_add(bytes, Relaxed);
}

fn fill_log_start(
    shard: &Shard,
    snapshot: &crate::cluster::state::Snapshot,
    topics: &mut [TopicProduceResponse],
) {
    for t in topics {
        let Some(info) = snapshot.topic(&t.name) else {
            continue;
        };
        for p in &mut t.partitions {
            if shard.owner(info, p.partition) != shard.id {
                continue;
            }
            if let Ok(log) = shard.log(&info.key(p.partition)) {
                p.log_start_offset = log.start_offset();
            }
        }
    }
}

/// Checks one partition's record batches: the topic exists and is not internal, the partition
/// exists, the payload reference is in bounds, and every batch is whole, within
/// max.message.bytes, passes the header and CRC check and holds exactly the records its header
/// counts, each decodable; a batch with a producer id names one InitProducerId handed out.
/// Switches batches to LogAppendTime when the topic says so.
/// Why a partition's records are not appended: a refusal, or one with the leader to go to.
enum Refused {
    Plain(Refusal),
    Hint(ErrorCode, String, Option<LeaderHint>),
}

impl From<Refusal> for Refused {
    fn from(r: Refusal) -> Refused {
        Refused::Plain(r)
    }
}

/// What the partition's placement says before anything is read: this broker must lead it
/// (else NotLeaderOrFollower, with the leader metadata names), and acks=all needs at least
/// `min.insync.replicas` in sync (else NotEnoughReplicas, and nothing is written, as Kafka).
fn placement_check(
    snapshot: &crate::cluster::state::Snapshot,
    info: &TopicInfo,
    partition: quiver_proto::PartitionId,
    acks: Acks,
) -> Result<(), Refused> {
    if !info.has_partition(partition) {
        return Ok(()); // `prepare` names the missing partition.
    }
    if let Err(leader) = snapshot.leads(info, partition) {
        return Err(Refused::Hint(
            ErrorCode::NotLeaderOrFollower,
            match leader {
                Some(l) => format!(
                    "broker {l} leads this partition, not broker {}",
                    snapshot.me
                ),
                None => "the partition has no leader".into(),
            },
            leader.map(|l| LeaderHint {
                leader_id: quiver_proto::BrokerId(l),
                leader_epoch: quiver_proto::LeaderEpoch(info.leader_epoch(partition)),
            }),
        ));
    }
    let isr = info.isr(partition, snapshot.me).len();
    let min = info.config.min_insync_replicas as usize;
    if acks == Acks::All && isr < min {
        return Err(Refused::Plain((
            ErrorCode::NotEnoughReplicas,
            format!("{isr} replica(s) in sync, fewer than min.insync.replicas={min}; nothing was written"),
        )));
    }
    Ok(())
}

fn prepare(
    topic: &str,
    info: Option<&Arc<TopicInfo>>,
    p: &PartitionProduceData,
    payload: &Bytes,
    now: TimestampMs,
    shard: &Shard,
) -> Result<Prepared, Refusal> {
    let info = info.ok_or_else(|| {
        (
            ErrorCode::UnknownTopicOrPartition,
            format!("topic '{topic}' does not exist"),
        )
    })?;
    if info.internal {
        return Err((
            ErrorCode::InvalidTopic,
            format!("'{topic}' is an internal topic: only the broker writes to it"),
        ));
    }
    if !info.has_partition(p.partition) {
        return Err((
            ErrorCode::UnknownTopicOrPartition,
            format!(
                "topic '{topic}' has {} partitions; partition {} does not exist",
                info.meta.partitions, p.partition.0
            ),
        ));
    }
    let bytes = p
        .records
        .slice(payload)
        .map_err(|e| (ErrorCode::CorruptMessage, format!("record batches: {e}")))?;
    if bytes.is_empty() {
        return Err((
            ErrorCode::InvalidRecord,
            "no record batches for the partition".into(),
        ));
    }
    let max = info.config.max_message_bytes as usize;
    let limits = BatchLimits {
        batch_bytes_max: batch::BATCH_BYTES_MAX,
        ..BatchLimits::default()
    };
    let mut batches = Vec::new();
    let (mut records, mut pos) = (0u64, 0usize);
    for (index, b) in BatchIter::new(&bytes).enumerate() {
        let b = b.map_err(|e| batch_refusal(index, &e))?;
        let len = b.len();
        if len > max {
            return Err((
                ErrorCode::MessageTooLarge,
                format!(
                    "batch {index} is {len} bytes, over the topic's max.message.bytes of {max}"
                ),
            ));
        }
        let slice = bytes.slice(pos..pos + len);
        pos += len;
        // LogAppendTime is the one case where the broker changes bytes under the CRC: the
        // batch is validated as the producer sent it, then stamped, in one CRC pass.
        let valid = if info.config.timestamp_type == TimestampType::LogAppendTime {
            ValidBatch::new_deep_log_append_time(slice, limits, now)
        } else {
            ValidBatch::new_deep(slice, limits)
        }
        .map_err(|e| batch_refusal(index, &e))?;
        let pid = valid.info().producer_id;
        if pid >= 0 && !shard.producer_ids.contains(pid) {
            return Err((
                ErrorCode::UnknownProducerId,
                format!("batch {index}: producer id {pid} was not handed out by this broker (ask InitProducerId for one)"),
            ));
        }
        records += u64::from(valid.info().record_count);
        batches.push(valid);
    }
    let log_append_time =
        (info.config.timestamp_type == TimestampType::LogAppendTime).then_some(now);
    Ok(Prepared {
        owner: shard.owner(info, p.partition),
        key: info.key(p.partition),
        epoch: quiver_proto::LeaderEpoch(info.leader_epoch(p.partition)),
        replicated: info.meta.is_placed(),
        batches,
        records,
        bytes: bytes.len() as u64,
        log_append_time,
    })
}

fn batch_refusal(index: usize, e: &BatchError) -> Refusal {
    let code = match e {
        BatchError::CrcMismatch { .. }
        | BatchError::Truncated { .. }
        | BatchError::LengthMismatch { .. }
        | BatchError::BadLength { .. }
        | BatchError::BadRecord { .. }
        | BatchError::RecordsTooSmall { .. }
        | BatchError::Decompress(_)
        | BatchError::DecompressedTooLarge { .. }
        | BatchError::TooManyHeaders { .. } => ErrorCode::CorruptMessage,
        _ => ErrorCode::InvalidRecord,
    };
    (code, format!("batch {index}: {e}"))
}
