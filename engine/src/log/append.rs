//! Appending: the producers' check, offsets, stamping and copying the batches into the pending
//! write buffer (`stage`), rolling the segment first when the append would overfill it, and
//! waiting for the group commit's verdict.

use super::commit::{Outcome, Ticket};
use super::{
    now_ms, run_detached, AppendInfo, Mark, PartitionLog, Pending, Shared, State, Status,
    APPEND_BYTES_MAX, APPEND_OFFSETS_MAX,
};
use crate::config::LogConfig;
use crate::dma::{align_down, WriteBuf};
use crate::error::{Error, Result};
use crate::index::{self, IndexPoint};
use crate::offset::OffsetExt;
use crate::producers::Verdict;
use crate::tail;
use bytes::BytesMut;
use quiver_proto::batch::{self, ValidBatch, BATCH_HEADER_BYTES};
use quiver_proto::{LeaderEpoch, TimestampMs};
use std::rc::Rc;

impl PartitionLog {
    /// Appends batches (already validated by proto) as one unit: assigns offsets from the log end
    /// (stamping each batch's base offset, and its leader epoch if given), copies them into the
    /// log's write buffer and resolves when they are durable under the flush policy. Concurrent
    /// appends share one write and one fdatasync (group commit).
    ///
    /// Rolls the active segment first if the batches would take it past `segment_bytes` or it is
    /// older than `segment_ms`. Dropping the future does not withdraw the batches: once this is
    /// first polled they have offsets and will be written.
    pub async fn append(
        &self,
        batches: &[ValidBatch],
        leader_epoch: Option<LeaderEpoch>,
    ) -> Result<AppendInfo> {
        self.append_as(batches, Stamp::Leader(leader_epoch)).await
    }

    /// Appends a leader's batches on a follower, as they are: their base offsets and leader
    /// epochs are kept, and must continue the log exactly where it ends (the first batch's base
    /// offset is the log end, each next one follows the last), else
    /// [`Error::NotContiguous`] and nothing is written. No producer sequence check (the leader
    /// made it); the producers' state is recorded from the batches as on the leader, so a
    /// follower that becomes leader knows every producer's sequence. Durable as [`append`]
    /// under the flush policy.
    ///
    /// `still` is asked at the moment the batches would be staged (after any wait for a roll or
    /// a truncation): `false` (the replica no longer follows the leader they came from, say it
    /// leads now) is [`Error::Superseded`] and nothing is written.
    ///
    /// [`append`]: PartitionLog::append
    pub async fn append_replica(
        &self,
        batches: &[ValidBatch],
        still: &dyn Fn() -> bool,
    ) -> Result<AppendInfo> {
        self.append_as(batches, Stamp::Replica(still)).await
    }

    async fn append_as(&self, batches: &[ValidBatch], stamp: Stamp<'_>) -> Result<AppendInfo> {
        let shared = &self.shared;
        let total: u64 = batches.iter().map(|b| b.len() as u64).sum();
        if total > APPEND_BYTES_MAX {
            return Err(Error::AppendTooLarge {
                bytes: total,
                max: APPEND_BYTES_MAX,
            });
        }
        let offsets: u64 = batches.iter().map(ValidBatch::offset_count).sum();
        if offsets > APPEND_OFFSETS_MAX {
            return Err(Error::AppendTooLarge {
                bytes: total,
                max: APPEND_BYTES_MAX,
            });
        }
        let mut rolled: Option<RollingAppend> = None;
        let (info, ticket) = loop {
            let listen = shared.progress.listen();
            let need_roll = {
                let mut s = shared.state.borrow_mut();
                s.check_open()?;
                // While an append rolls the segment for itself, later appends wait, so that
                // appends are staged in the order they came (an idempotent producer's pipelined
                // requests count on it).
                let others_rolling = s.rolling_appends > usize::from(rolled.is_some());
                if s.exclusive || s.exclusive_waiting > 0 || others_rolling {
                    None
                } else {
                    let now = now_ms();
                    let roll = must_roll(
                        Fill {
                            bytes: s.active.live().len,
                            offsets: s.commit.staged_end().since(s.active.files.base),
                            age_ms: now - s.active.since_ms,
                        },
                        total,
                        offsets,
                        &s.config,
                    );
                    if !roll {
                        let verdict = match stamp {
                            Stamp::Leader(_) => s.producers.check(batches)?,
                            Stamp::Replica(still) => {
                                if !still() {
                                    return Err(Error::Superseded);
                                }
                                contiguous(s.commit.staged_end(), batches)?;
                                Verdict::Append
                            }
                        };
                        match verdict {
                            Verdict::Append => {
                                break stage(&mut s, batches, stamp, total, now);
                            }
                            // Answered once the first write of it is acknowledged.
                            Verdict::Duplicate {
                                base_offset,
                                last_offset,
                            } => {
                                let info = AppendInfo {
                                    base_offset,
                                    next_offset: last_offset.plus(1),
                                    append_time: TimestampMs(now),
                                };
                                break (info, s.commit.ticket(info.next_offset));
                            }
                        }
                    }
                    Some(())
                }
            };
            match need_roll {
                Some(()) => {
                    rolled.get_or_insert_with(|| RollingAppend::new(shared));
                    let sh = shared.clone();
                    run_detached(async move {
                        let _g = Shared::exclusive(&sh, false).await?;
                        sh.roll_locked().await
                    })
                    .await?;
                }
                None => listen.await,
            }
        };
        drop(rolled);
        if total == 0 {
            return Ok(info);
        }
        Shared::kick(shared);
        loop {
            let listen = shared.progress.listen();
            {
                let s = shared.state.borrow();
                match s.commit.outcome(ticket) {
                    Outcome::Acknowledged | Outcome::Survived => return Ok(info),
                    Outcome::Waiting => match &s.status {
                        Status::Open => {}
                        Status::Failed(e) => return Err((**e).clone()),
                        Status::Closed | Status::Deleted => return Err(Error::Closed),
                    },
                    Outcome::Lost => {
                        return Err(s
                            .last_failure
                            .as_deref()
                            .cloned()
                            .unwrap_or_else(|| Error::Discarded("discarded".into())))
                    }
                }
            }
            listen.await;
        }
    }
}

/// How an append's batches get their offsets and leader epochs.
#[derive(Clone, Copy)]
enum Stamp<'a> {
    /// From the log end, and this epoch if given (a leader's append).
    Leader(Option<LeaderEpoch>),
    /// As they come (a follower's copy of its leader's batches), if it still follows.
    Replica(&'a dyn Fn() -> bool),
}

/// Checks that a replica's batches continue a log ending at `end`, back to back.
fn contiguous(end: quiver_proto::Offset, batches: &[ValidBatch]) -> Result<()> {
    let mut next = end;
    for b in batches {
        let base = batch::header(b.bytes())
            .map(|h| quiver_proto::Offset(h.base_offset.get()))
            .unwrap_or(quiver_proto::Offset(u64::MAX));
        if base != next {
            return Err(Error::NotContiguous {
                first: batches
                    .first()
                    .and_then(|b| batch::header(b.bytes()).ok())
                    .map_or(next, |h| quiver_proto::Offset(h.base_offset.get())),
                gap_at: next,
                end,
            });
        }
        next = next.plus(b.offset_count());
    }
    Ok(())
}

/// Held by an append that rolled the segment until it has staged (or failed, or was dropped):
/// meanwhile later appends wait instead of staging first.
struct RollingAppend(Rc<Shared>);

impl RollingAppend {
    fn new(shared: &Rc<Shared>) -> RollingAppend {
        shared.state.borrow_mut().rolling_appends += 1;
        RollingAppend(shared.clone())
    }
}

impl Drop for RollingAppend {
    fn drop(&mut self) {
        self.0.state.borrow_mut().rolling_appends -= 1;
        self.0.progress.notify_all();
    }
}

/// How full the active segment is.
#[derive(Clone, Copy, Debug)]
struct Fill {
    bytes: u64,
    /// Offsets it spans from its base.
    offsets: u64,
    age_ms: i64,
}

/// Whether an append of `bytes` taking `offsets` offsets must go to a new segment: the active
/// one holds something, and the append would take it past `segment_bytes`, or it is older than
/// `segment_ms`, or its offsets would span more than its index can address (32-bit relative
/// offsets; hostile compressed batches can claim many offsets in few bytes, so bytes alone do
/// not bound it).
fn must_roll(fill: Fill, bytes: u64, offsets: u64, config: &LogConfig) -> bool {
    fill.bytes > 0
        && (fill.bytes + bytes > config.segment_bytes
            || fill.age_ms >= config.segment_ms as i64
            || fill.offsets + offsets > index::SEGMENT_OFFSETS_MAX)
}

/// Assigns offsets and copies the batches into the pending write buffer; returns what the
/// append stored and the ticket it waits on.
fn stage(
    s: &mut State,
    batches: &[ValidBatch],
    stamp: Stamp,
    total: u64,
    now: i64,
) -> (AppendInfo, Ticket) {
    let interval = u64::from(s.config.index_interval_bytes);
    let base_offset = s.commit.staged_end();
    if total == 0 {
        let info = AppendInfo {
            base_offset,
            next_offset: base_offset,
            append_time: TimestampMs(now),
        };
        return (info, s.commit.ticket(base_offset));
    }
    let a = &mut s.active;
    if a.live().len == 0 {
        a.since_ms = now;
    }
    if a.pending.is_none() {
        let h = &a.handed;
        let buf = WriteBuf::new(align_down(h.len), &h.tail, total as usize);
        let mark = Mark {
            tail: bytes::Bytes::new(),
            ..h.clone()
        };
        a.pending = Some(Box::new(Pending { buf, mark }));
    }
    let p = a.pending.as_mut().expect("just set");
    let mut hdr = [0u8; BATCH_HEADER_BYTES];
    // With a reader at the end, the batches as stored go to the tail cache too.
    let tailing = s
        .tail_read_at
        .is_some_and(|t| t.elapsed() < tail::READER_TTL);
    let mut cached = BytesMut::with_capacity(if tailing { total as usize } else { 0 });
    let mut end = base_offset;
    for b in batches {
        let bytes = b.bytes();
        let (pos, off) = (p.mark.len, end);
        hdr.copy_from_slice(&bytes[..BATCH_HEADER_BYTES]);
        if let Stamp::Leader(epoch) = stamp {
            batch::set_base_offset(&mut hdr, off).expect("header-sized");
            if let Some(e) = epoch {
                batch::set_leader_epoch(&mut hdr, e).expect("header-sized");
            }
        }
        p.buf.push(&hdr);
        p.buf.push(&bytes[BATCH_HEADER_BYTES..]);
        if tailing {
            cached.extend_from_slice(&hdr);
            cached.extend_from_slice(&bytes[BATCH_HEADER_BYTES..]);
        }
        p.mark.len += bytes.len() as u64;
        end = end.plus(b.offset_count());
        p.mark.max_timestamp = p.mark.max_timestamp.max(b.info().max_timestamp.0);
        p.mark.last_batch = Some((pos, off));
        let last_index_pos = a.points.last().map_or(0, |q| u64::from(q.position));
        if pos - last_index_pos >= interval {
            // Always fits: the segment rolled before its offsets or bytes could outgrow the
            // index (`append`); were it not to, the point is left out, which only slows lookups.
            if let Some(point) = IndexPoint::new(a.files.base, off, pos, p.mark.max_timestamp) {
                a.points.push(point);
            }
        }
        p.mark.points = a.points.len();
    }
    debug_assert_eq!(p.buf.end(), p.mark.len);
    let ticket = s.commit.stage(end);
    let mut cached = cached.freeze();
    s.tail_from = base_offset;
    if !tailing {
        s.tail.clear();
    }
    let mut off = base_offset;
    for b in batches {
        s.producers.record(b.info(), off, now);
        let next = off.plus(b.offset_count());
        if tailing {
            let bytes = cached.split_to(b.len());
            s.tail.push(off, next, bytes);
        }
        off = next;
    }
    let info = AppendInfo {
        base_offset,
        next_offset: end,
        append_time: TimestampMs(now),
    };
    (info, ticket)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (segment bytes, offsets spanned, age ms, append bytes, append offsets, rolls?)
    #[test]
    fn when_an_append_rolls_the_segment() {
        let config = LogConfig {
            segment_bytes: 1 << 20,
            segment_ms: 60_000,
            ..LogConfig::default()
        };
        let max = u64::from(u32::MAX);
        let cases = [
            // An empty segment takes anything, even more than it may hold.
            (0, 0, 0, 2 << 20, 1, false),
            (0, 0, 120_000, 10, 1, false),
            // Bytes.
            (1000, 10, 0, (1 << 20) - 1000, 1, false),
            (1000, 10, 0, (1 << 20) - 999, 1, true),
            // Age.
            (1000, 10, 59_999, 10, 1, false),
            (1000, 10, 60_000, 10, 1, true),
            // Offsets: the index addresses at most u32::MAX offsets past the base.
            (1000, max - 5, 0, 10, 5, false),
            (1000, max - 5, 0, 10, 6, true),
            (1000, 1, 0, 10, APPEND_OFFSETS_MAX, false),
            (
                1000,
                max - APPEND_OFFSETS_MAX + 1,
                0,
                10,
                APPEND_OFFSETS_MAX,
                true,
            ),
        ];
        for (seg_bytes, spanned, age, bytes, offsets, want) in cases {
            let fill = Fill {
                bytes: seg_bytes,
                offsets: spanned,
                age_ms: age,
            };
            assert_eq!(
                must_roll(fill, bytes, offsets, &config),
                want,
                "{fill:?} + {bytes} bytes, {offsets} offsets"
            );
        }
    }
}
