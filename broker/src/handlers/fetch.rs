//! Fetch (with long-poll) and ListOffsets.
//!
//! A fetch reads every asked partition on its owner; stored batches come back as `Bytes` and go
//! into the response payload untouched. If less than `min_bytes` came back, the fetch waits, until
//! `max_wait_ms` at most, for any of its partitions to get new visible data (woken by the engine
//! on append, never by polling), then reads once more and answers with what there is. So
//! `min_bytes` is honoured only as one byte: any records end the wait.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quiver_proto::api::fetch::{
    FetchPartitionResponse, FetchRequest, FetchResponse, FetchTopicResponse,
    ListOffsetsPartitionResponse, ListOffsetsRequest, ListOffsetsResponse,
    ListOffsetsTopicResponse,
};
use quiver_proto::api::PayloadBuilder;
use quiver_proto::{ErrorCode, Offset, ShardId};

use super::{part_error, Answer};
use crate::shard::{PartError, PartRead, Shard};
use crate::state::PartKey;

/// Bytes read for a partition when the request gives no per-partition limit.
const PARTITION_MAX_BYTES_DEFAULT: u32 = 1 << 20;

struct Target {
    ti: usize,
    pi: usize,
    owner: ShardId,
    key: PartKey,
    offset: Offset,
    max_bytes: usize,
}

pub(super) async fn handle(shard: &Rc<Shard>, req: FetchRequest) -> Answer {
    let started = Instant::now();
    let snapshot = shard.snapshot();
    let max_wait =
        Duration::from_millis(u64::from(req.max_wait_ms).min(shard.config.fetch_max_wait_ms));
    let deadline = started + max_wait;
    let response_max = if req.max_bytes == 0 {
        usize::MAX
    } else {
        req.max_bytes as usize
    };
    let mut failed = false;

    let mut topics = Vec::with_capacity(req.topics.len());
    let mut targets = Vec::new();
    for (ti, t) in req.topics.iter().enumerate() {
        let info = snapshot.topic(&t.name);
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for (pi, p) in t.partitions.iter().enumerate() {
            let mut out = FetchPartitionResponse {
                partition: p.partition,
                ..Default::default()
            };
            match info {
                Some(info) if info.has_partition(p.partition) => {
                    let per = if p.partition_max_bytes == 0 {
                        PARTITION_MAX_BYTES_DEFAULT
                    } else {
                        p.partition_max_bytes
                    };
                    targets.push(Target {
                        ti,
                        pi,
                        owner: snapshot.owner(info, p.partition),
                        key: info.key(p.partition),
                        offset: p.fetch_offset,
                        max_bytes: (per as usize).min(response_max),
                    });
                }
                _ => {
                    failed = true;
                    out.error_code = ErrorCode::UnknownTopicOrPartition;
                }
            }
            partitions.push(out);
        }
        topics.push(FetchTopicResponse {
            name: t.name.clone(),
            partitions,
        });
    }

    let min_bytes = req.min_bytes as usize;
    let mut waited = false;
    let reads = loop {
        let reads = read_all(shard, &targets, response_max).await;
        let got: usize = reads
            .iter()
            .map(|r| r.records.as_ref().map_or(0, Bytes::len))
            .sum();
        shard
            .metrics
            .fetch_bytes_read
            .fetch_add(got as u64, Relaxed);
        let any_error = reads.iter().any(|r| r.records.is_err());
        if waited
            || got >= min_bytes.max(1)
            || any_error
            || targets.is_empty()
            || Instant::now() >= deadline
        {
            break reads;
        }
        let mut by_owner: HashMap<ShardId, Vec<(PartKey, Offset)>> = HashMap::new();
        for t in &targets {
            by_owner.entry(t.owner).or_default().push((t.key, t.offset));
        }
        shard.wait_any(by_owner, deadline).await;
        waited = true;
    };

    // Assemble in request order within the response limit; the first non-empty partition is
    // always included whole, so a consumer always progresses.
    let mut payload = PayloadBuilder::new();
    let mut total = 0usize;
    for (t, read) in targets.iter().zip(reads) {
        let out = &mut topics[t.ti].partitions[t.pi];
        out.high_watermark = read.high_watermark;
        out.log_start_offset = read.log_start;
        out.last_stable_offset = Some(read.high_watermark);
        match read.records {
            Ok(bytes) => {
                if bytes.is_empty() || (total > 0 && total + bytes.len() > response_max) {
                    continue;
                }
                total += bytes.len();
                match payload.push(bytes) {
                    Ok(r) => out.records = r,
                    Err(_) => break, // the payload is as large as a frame may carry
                }
            }
            Err(e) => {
                failed = true;
                if let PartError::Engine(quiver_engine::Error::OffsetOutOfRange {
                    start,
                    end,
                    ..
                }) = &e
                {
                    out.log_start_offset = *start;
                    out.high_watermark = (*end).min(out.high_watermark.max(*start));
                }
                out.error_code = part_error(&e).0;
            }
        }
    }
    shard.metrics.bytes_out.fetch_add(total as u64, Relaxed);
    Answer {
        body: FetchResponse {
            throttle_time_ms: 0,
            error_code: ErrorCode::None,
            topics,
        }
        .into(),
        payload: payload.into_chunks(),
        failed,
    }
}

/// Reads every target with one message per owning shard. The response limit is split between
/// the owners by their share of the partitions, so a fetch of many partitions holds about
/// `response_max` bytes (each owner may pass its share by one batch), not the per-partition limit
/// times the partitions. Results come back in target order.
async fn read_all(shard: &Rc<Shard>, targets: &[Target], response_max: usize) -> Vec<PartRead> {
    let mut by_owner: Vec<(ShardId, Vec<usize>)> = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        match by_owner.iter_mut().find(|(o, _)| *o == t.owner) {
            Some((_, v)) => v.push(i),
            None => by_owner.push((t.owner, vec![i])),
        }
    }
    let total = targets.len().max(1) as u128;
    let answers = futures_util::future::join_all(by_owner.iter().map(|(owner, idx)| {
        let budget = (response_max as u128 * idx.len() as u128 / total).min(usize::MAX as u128);
        let reads = idx
            .iter()
            .map(|&i| (targets[i].key, targets[i].offset, targets[i].max_bytes))
            .collect();
        shard.read_on(*owner, reads, budget as usize)
    }))
    .await;
    let mut out: Vec<Option<PartRead>> = targets.iter().map(|_| None).collect();
    for ((_, idx), reads) in by_owner.iter().zip(answers) {
        for (&i, r) in idx.iter().zip(reads) {
            out[i] = Some(r);
        }
    }
    out.into_iter()
        .map(|r| r.expect("every target was read"))
        .collect()
}

pub(super) async fn list_offsets(
    shard: &Rc<Shard>,
    req: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let snapshot = shard.snapshot();
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let info = snapshot.topic(&t.name);
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let mut out = ListOffsetsPartitionResponse {
                partition: p.partition,
                ..Default::default()
            };
            match info {
                Some(info) if info.has_partition(p.partition) => {
                    match shard
                        .list_offset_on(
                            snapshot.owner(info, p.partition),
                            info.key(p.partition),
                            p.timestamp,
                        )
                        .await
                    {
                        Ok(listed) => {
                            out.offset = listed.offset;
                            out.timestamp = listed.timestamp;
                            out.leader_epoch = Some(quiver_proto::LeaderEpoch(0));
                        }
                        Err(e) => out.error_code = part_error(&e).0,
                    }
                }
                _ => out.error_code = ErrorCode::UnknownTopicOrPartition,
            }
            partitions.push(out);
        }
        topics.push(ListOffsetsTopicResponse {
            name: t.name.clone(),
            partitions,
        });
    }
    ListOffsetsResponse {
        throttle_time_ms: 0,
        topics,
    }
}
