//! Produce: validate each batch once, append on the owning shard, answer when durable.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use quiver_proto::api::produce::{
    Acks, PartitionProduceData, PartitionProduceResponse, ProduceRequest, ProduceResponse,
    TopicProduceResponse,
};
use quiver_proto::batch::{self, BatchError, BatchIter, BatchLimits, ValidBatch};
use quiver_proto::{ErrorCode, Offset, ShardId, TimestampMs};

use super::{part_error, Answer};
use crate::config::TimestampType;
use crate::shard::Shard;
use crate::state::{PartKey, TopicInfo};

/// A partition's part of a produce request, checked and ready to append.
struct Prepared {
    owner: ShardId,
    key: PartKey,
    batches: Vec<ValidBatch>,
    records: u64,
    bytes: u64,
    log_append_time: Option<TimestampMs>,
}

type Refusal = (ErrorCode, String);

pub(super) async fn handle(shard: &Rc<Shard>, req: ProduceRequest, payload: Bytes) -> Answer {
    if shard.config.auto_create_topics {
        super::admin::auto_create(shard, req.topics.iter().map(|t| t.name.as_str())).await;
    }
    let snapshot = shard.snapshot();
    let now = TimestampMs(crate::now_ms());
    let mut topics = Vec::with_capacity(req.topics.len());
    let mut jobs = Vec::new();
    let mut failed = false;
    for (ti, t) in req.topics.iter().enumerate() {
        let info = snapshot.topic(&t.name);
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for (pi, p) in t.partitions.iter().enumerate() {
            let mut out = PartitionProduceResponse {
                partition: p.partition,
                ..Default::default()
            };
            match prepare(&t.name, info, p, &payload, now, &snapshot) {
                Ok(prep) => jobs.push((ti, pi, prep)),
                Err((code, message)) => {
                    failed = true;
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

    let appends = jobs.into_iter().map(|(ti, pi, prep)| {
        let shard = shard.clone();
        async move {
            let (records, bytes, time) = (prep.records, prep.bytes, prep.log_append_time);
            let result = shard.append_on(prep.owner, prep.key, prep.batches).await;
            (ti, pi, records, bytes, time, result)
        }
    });

    if req.acks == Acks::None {
        // Fire and forget: the producer does not wait for an answer, so the appends run on
        // their own and the response carries no offsets (-1 in Kafka; here base_offset 0 and
        // no error, which an acks=0 client ignores).
        for append in appends {
            let metrics = shard.metrics.clone();
            glommio::spawn_local(async move {
                let (_, _, records, bytes, _, result) = append.await;
                if result.is_ok() {
                    count(&metrics, records, bytes);
                }
            })
            .detach();
        }
        return Answer {
            body: ProduceResponse {
                topics,
                throttle_time_ms: 0,
            }
            .into(),
            payload: Vec::new(),
            failed,
        };
    }

    for (ti, pi, records, bytes, time, result) in futures_util::future::join_all(appends).await {
        let topic = &mut topics[ti];
        let out = &mut topic.partitions[pi];
        match result {
            Ok(info) => {
                count(&shard.metrics, records, bytes);
                out.base_offset = info.base_offset;
                out.log_append_time_ms = time;
            }
            Err(e) => {
                failed = true;
                let (code, message) = part_error(&e);
                if code == ErrorCode::StorageError || code == ErrorCode::DiskFull {
                    tracing::error!(topic = %topic.name, partition = out.partition.0, error = %e, "append failed");
                }
                out.error_code = code;
                out.error_message = Some(message);
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
    snapshot: &crate::state::Snapshot,
    topics: &mut [TopicProduceResponse],
) {
    let logs: BTreeMap<PartKey, Offset> = shard
        .open_logs()
        .into_iter()
        .map(|(k, l)| (k, l.start_offset()))
        .collect();
    for t in topics {
        let Some(info) = snapshot.topic(&t.name) else {
            continue;
        };
        for p in &mut t.partitions {
            if let Some(start) = logs.get(&info.key(p.partition)) {
                p.log_start_offset = *start;
            }
        }
    }
}

/// Checks one partition's record batches: the topic and partition exist, the payload reference
/// is in bounds, and every batch is whole, within max.message.bytes, and passes the header and
/// CRC check. Switches batches to LogAppendTime when the topic says so.
fn prepare(
    topic: &str,
    info: Option<&Arc<TopicInfo>>,
    p: &PartitionProduceData,
    payload: &Bytes,
    now: TimestampMs,
    snapshot: &crate::state::Snapshot,
) -> Result<Prepared, Refusal> {
    let info = info.ok_or_else(|| {
        (
            ErrorCode::UnknownTopicOrPartition,
            format!("topic '{topic}' does not exist"),
        )
    })?;
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
        let mut valid = ValidBatch::new(slice, limits).map_err(|e| batch_refusal(index, &e))?;
        if info.config.timestamp_type == TimestampType::LogAppendTime {
            // The one case where the broker changes bytes under the CRC (and so recomputes it).
            let mut owned = BytesMut::from(&valid.bytes()[..]);
            batch::set_log_append_time(&mut owned, now).map_err(|e| batch_refusal(index, &e))?;
            valid =
                ValidBatch::new(owned.freeze(), limits).map_err(|e| batch_refusal(index, &e))?;
        }
        records += u64::from(valid.info().record_count);
        batches.push(valid);
    }
    let log_append_time =
        (info.config.timestamp_type == TimestampType::LogAppendTime).then_some(now);
    Ok(Prepared {
        owner: snapshot.owner(info, p.partition),
        key: info.key(p.partition),
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
        | BatchError::BadLength { .. } => ErrorCode::CorruptMessage,
        _ => ErrorCode::InvalidRecord,
    };
    (code, format!("batch {index}: {e}"))
}
