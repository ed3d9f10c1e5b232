//! Fetch (with long-poll) and ListOffsets.
//!
//! A fetch reads every asked partition on its owner; stored batches come back as `Bytes` and go
//! into the response payload untouched. While less than `min_bytes` (one byte at least) came
//! back, the fetch waits, until `max_wait_ms` at most, for any of its partitions to get records
//! past what it read (woken by the engine on append, never by polling), then reads on from where
//! it stopped; it answers with what there is once it has `min_bytes`, at the deadline, or when a
//! partition fails.
//!
//! What one fetch may cost: at most `fetch_max_bytes` of records (the request's `max_bytes`,
//! capped to it; 0 means the cap), held once, since each partition appears at most once
//! (`proto::api::limits`); one entry per partition named (at most 100,000); and its wait, at
//! most `fetch_max_wait_ms`, which ends at once if the client cancels the request.

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

use super::common::{part_error, Answer};
use crate::cluster::state::PartKey;
use crate::runtime::{PartError, PartRead, Shard};
use crate::security::acl::Operation;
use crate::security::Access;

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

pub(super) async fn handle(shard: &Rc<Shard>, req: FetchRequest, access: &Access) -> Answer {
    let snapshot = shard.snapshot();
    let (deadline, response_max) = fetch_bounds(shard, req.max_wait_ms, req.max_bytes);
    let mut failed = false;

    let mut topics = Vec::with_capacity(req.topics.len());
    let mut targets = Vec::new();
    for (ti, t) in req.topics.iter().enumerate() {
        let info = snapshot.topic(&t.name);
        let denied = !access.topic(Operation::Read, &t.name);
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for (pi, p) in t.partitions.iter().enumerate() {
            let mut out = FetchPartitionResponse {
                partition: p.partition,
                ..Default::default()
            };
            match info {
                // Checked before the topic's existence, which it would otherwise tell.
                _ if denied => {
                    failed = true;
                    out.error_code = ErrorCode::TopicAuthorizationFailed;
                    shard.metrics.denied();
                }
                Some(info)
                    if info.has_partition(p.partition)
                        && !leads(&snapshot, info, p.partition, &mut out.current_leader) =>
                {
                    failed = true;
                    out.error_code = ErrorCode::NotLeaderOrFollower;
                }
                Some(info) if info.has_partition(p.partition) => {
                    let per = if p.partition_max_bytes == 0 {
                        PARTITION_MAX_BYTES_DEFAULT
                    } else {
                        p.partition_max_bytes
                    };
                    targets.push(Target {
                        ti,
                        pi,
                        owner: shard.owner(info, p.partition),
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

    // Read until the partitions hold `min_bytes` between them (one byte at least), an error,
    // the response limit or the deadline. Each wait is for records past what was read, and the
    // read after it goes on from where the last one stopped, so nothing is read twice.
    let min_bytes = (req.min_bytes as usize).max(1);
    let mut acc: Vec<Gathered> = targets.iter().map(|t| Gathered::new(t.offset)).collect();
    let mut waited = false;
    loop {
        let total: usize = acc.iter().map(|g| g.bytes).sum();
        let open: Vec<usize> = (0..targets.len())
            .filter(|&i| acc[i].open(targets[i].max_bytes))
            .collect();
        if open.is_empty() || total >= response_max {
            break;
        }
        let asks: Vec<Ask> = open
            .iter()
            .map(|&i| Ask {
                owner: targets[i].owner,
                key: targets[i].key,
                offset: acc[i].next,
                max_bytes: targets[i].max_bytes - acc[i].bytes,
            })
            .collect();
        let reads = read_all(shard, &asks, response_max - total).await;
        let mut got = 0;
        let mut any_error = false;
        for (&i, read) in open.iter().zip(reads) {
            let (bytes, error) = acc[i].take(read);
            got += bytes;
            any_error |= error;
        }
        shard
            .metrics
            .fetch_bytes_read
            .fetch_add(got as u64, Relaxed);
        let total = total + got;
        // After a wait that brought nothing (the log changed under it), answer rather than wait
        // again.
        if total >= min_bytes || any_error || (waited && got == 0) || Instant::now() >= deadline {
            break;
        }
        let mut by_owner: HashMap<ShardId, Vec<(PartKey, Offset)>> = HashMap::new();
        for (&i, ask) in open.iter().zip(&asks) {
            if acc[i].open(targets[i].max_bytes) {
                by_owner
                    .entry(ask.owner)
                    .or_default()
                    .push((ask.key, acc[i].next));
            }
        }
        if by_owner.is_empty() {
            break;
        }
        shard.wait_any(by_owner, deadline).await;
        waited = true;
    }

    // Assemble in request order within the response limit; the first non-empty partition is
    // always included whole, so a consumer always progresses.
    let mut payload = PayloadBuilder::new();
    let mut total = 0usize;
    for (t, got) in targets.iter().zip(acc) {
        let out = &mut topics[t.ti].partitions[t.pi];
        out.high_watermark = got.high_watermark;
        out.log_start_offset = got.log_start;
        out.last_stable_offset = Some(got.high_watermark);
        match got.error {
            None => {
                if got.bytes == 0 || (total > 0 && total + got.bytes > response_max) {
                    continue;
                }
                total += got.bytes;
                match payload.push_all(got.chunks) {
                    Ok(r) => out.records = r,
                    Err(_) => break, // the payload is as large as a frame may carry
                }
            }
            Some(e) => {
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

/// When a fetch (a consumer's or a follower's) must answer and how many record bytes it may
/// hold: the request's wait and size, within the broker's caps whatever the request says (0
/// bytes asks for the cap), so a response always fits a frame and what one fetch holds in
/// memory is bounded.
pub(super) fn fetch_bounds(shard: &Shard, max_wait_ms: u32, max_bytes: u32) -> (Instant, usize) {
    let max_wait =
        Duration::from_millis(u64::from(max_wait_ms).min(shard.config.fetch_max_wait_ms));
    let cap = shard.config.fetch_max_bytes as usize;
    let response_max = match max_bytes as usize {
        0 => cap,
        n => n.min(cap),
    };
    (Instant::now() + max_wait, response_max)
}

/// What a fetch has read of one partition so far.
struct Gathered {
    /// Where the next read starts: past the last batch read.
    next: Offset,
    chunks: Vec<Bytes>,
    bytes: usize,
    high_watermark: Offset,
    log_start: Offset,
    /// An error met before any records were read: the partition's answer.
    error: Option<PartError>,
    /// No more reads: an error after records were read (the next fetch meets it).
    stopped: bool,
}

impl Gathered {
    fn new(offset: Offset) -> Gathered {
        Gathered {
            next: offset,
            chunks: Vec::new(),
            bytes: 0,
            high_watermark: Offset(0),
            log_start: Offset(0),
            error: None,
            stopped: false,
        }
    }

    /// Whether the partition may still be read: no error, and under its own limit.
    fn open(&self, max_bytes: usize) -> bool {
        self.error.is_none() && !self.stopped && self.bytes < max_bytes
    }

    /// Adds a read; returns the bytes it brought and whether it failed.
    fn take(&mut self, read: PartRead) -> (usize, bool) {
        match read.records {
            Ok(records) => {
                self.high_watermark = read.high_watermark;
                self.log_start = read.log_start;
                let n = records.len;
                if n > 0 {
                    self.next = records.next;
                    self.bytes += n;
                    self.chunks.extend(records.chunks);
                }
                (n, false)
            }
            Err(e) if self.chunks.is_empty() => {
                self.high_watermark = read.high_watermark;
                self.log_start = read.log_start;
                self.error = Some(e);
                (0, true)
            }
            Err(_) => {
                self.stopped = true;
                (0, true)
            }
        }
    }
}

/// One partition to read: on which shard, from where, and how much at most.
struct Ask {
    owner: ShardId,
    key: PartKey,
    offset: Offset,
    max_bytes: usize,
}

/// Reads every asked partition with one message per owning shard. The response limit is split
/// between the owners by their share of the partitions, so a fetch of many partitions holds about
/// `response_max` bytes (each owner may pass its share by one batch), not the per-partition limit
/// times the partitions. Results come back in the order asked.
async fn read_all(shard: &Rc<Shard>, asks: &[Ask], response_max: usize) -> Vec<PartRead> {
    let mut by_owner: Vec<(ShardId, Vec<usize>)> = Vec::new();
    for (i, a) in asks.iter().enumerate() {
        match by_owner.iter_mut().find(|(o, _)| *o == a.owner) {
            Some((_, v)) => v.push(i),
            None => by_owner.push((a.owner, vec![i])),
        }
    }
    let total = asks.len().max(1) as u128;
    let answers = futures_util::future::join_all(by_owner.iter().map(|(owner, idx)| {
        let budget = (response_max as u128 * idx.len() as u128 / total).min(usize::MAX as u128);
        let reads = idx
            .iter()
            .map(|&i| (asks[i].key, asks[i].offset, asks[i].max_bytes))
            .collect();
        shard.read_on(*owner, reads, budget as usize)
    }))
    .await;
    let mut out: Vec<Option<PartRead>> = asks.iter().map(|_| None).collect();
    for ((_, idx), reads) in by_owner.iter().zip(answers) {
        for (&i, r) in idx.iter().zip(reads) {
            out[i] = Some(r);
        }
    }
    out.into_iter()
        .map(|r| r.expect("every partition asked was read"))
        .collect()
}

/// One partition of a ListOffsets for its owner: (topic index, partition index, partition,
/// what is asked, its leader epoch).
type Lookup = (
    usize,
    usize,
    PartKey,
    quiver_proto::api::fetch::OffsetSpec,
    u32,
);

pub(super) async fn list_offsets(
    shard: &Rc<Shard>,
    req: ListOffsetsRequest,
    access: &Access,
) -> ListOffsetsResponse {
    let snapshot = shard.snapshot();
    let follower_progress = req.follower_progress;
    // First what is known here (refusals, partitions led elsewhere or unknown), and the rest
    // grouped by the shard that owns it: one message per owner, however many partitions (one
    // round trip each made a request of 100,000 partitions take seconds of waiting).
    let mut by_owner: Vec<(ShardId, Vec<Lookup>)> = Vec::new();
    let mut topics = Vec::with_capacity(req.topics.len());
    for (ti, t) in req.topics.iter().enumerate() {
        let info = snapshot.topic(&t.name);
        let denied = !access.topic(Operation::Describe, &t.name);
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for (pi, p) in t.partitions.iter().enumerate() {
            let mut out = ListOffsetsPartitionResponse {
                partition: p.partition,
                ..Default::default()
            };
            let mut hint = None;
            match info {
                _ if denied => {
                    out.error_code = ErrorCode::TopicAuthorizationFailed;
                    shard.metrics.denied();
                }
                Some(info)
                    if info.has_partition(p.partition)
                        && !leads(&snapshot, info, p.partition, &mut hint) =>
                {
                    out.error_code = ErrorCode::NotLeaderOrFollower;
                }
                Some(info) if info.has_partition(p.partition) => {
                    let owner = shard.owner(info, p.partition);
                    let item = (
                        ti,
                        pi,
                        info.key(p.partition),
                        p.timestamp,
                        info.leader_epoch(p.partition),
                    );
                    match by_owner.iter_mut().find(|(o, _)| *o == owner) {
                        Some((_, items)) => items.push(item),
                        None => by_owner.push((owner, vec![item])),
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
    let lookups = by_owner.into_iter().map(|(owner, items)| async move {
        let keys: Vec<(PartKey, quiver_proto::api::fetch::OffsetSpec)> =
            items.iter().map(|i| (i.2, i.3)).collect();
        let n = keys.len();
        let found = shard
            .run_on(owner, move |s| async move {
                let mut out = Vec::with_capacity(keys.len());
                for (key, spec) in keys {
                    let listed = s.list_offset_local(key, spec).await;
                    let followers = match (&listed, follower_progress) {
                        (Ok(_), true) => s.follower_progress(&key),
                        _ => Vec::new(),
                    };
                    out.push((listed, followers));
                }
                out
            })
            .await
            .unwrap_or_else(|| {
                (0..n)
                    .map(|_| (Err(PartError::ShuttingDown), Vec::new()))
                    .collect()
            });
        (items, found)
    });
    for (items, found) in futures_util::future::join_all(lookups).await {
        for ((ti, pi, _, _, epoch), (listed, followers)) in items.into_iter().zip(found) {
            let out = &mut topics[ti].partitions[pi];
            match listed {
                Ok(listed) => {
                    out.offset = listed.offset;
                    out.timestamp = listed.timestamp;
                    out.leader_epoch = Some(quiver_proto::LeaderEpoch(epoch));
                    out.followers = followers;
                }
                Err(e) => out.error_code = part_error(&e).0,
            }
        }
    }
    ListOffsetsResponse {
        throttle_time_ms: 0,
        topics,
    }
}

/// Whether this broker leads the partition (only the leader serves reads); if not, `hint`
/// names the leader metadata knows, for the client.
fn leads(
    snapshot: &crate::cluster::state::Snapshot,
    info: &crate::cluster::state::TopicInfo,
    partition: quiver_proto::PartitionId,
    hint: &mut Option<quiver_proto::api::LeaderHint>,
) -> bool {
    match snapshot.leads(info, partition) {
        Ok(()) => true,
        Err(leader) => {
            *hint = leader.map(|l| quiver_proto::api::LeaderHint {
                leader_id: quiver_proto::BrokerId(l),
                leader_epoch: quiver_proto::LeaderEpoch(info.leader_epoch(partition)),
            });
            false
        }
    }
}
