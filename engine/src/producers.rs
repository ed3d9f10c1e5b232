//! Idempotent producers' state in one log: for each producer id, its epoch and the sequence
//! ranges of its last few batches (Kafka's producer state, without transactions).
//!
//! A producer with idempotence numbers the records it sends to a partition 0, 1, 2, ... and
//! stamps each batch with its producer id, epoch and first sequence. The log appends a batch only
//! if it continues that producer's sequence; one already written (a retry whose first answer was
//! lost) is answered with where it went instead of being written twice; a gap (an earlier request
//! failed, a later one got here first) is refused, and the producer resends in order. That is what
//! lets a producer keep several requests for one partition in flight without giving up order.
//!
//! Rules per batch with a producer id (>= 0), against the producer's state:
//! - no state: the first sequence must be 0;
//! - a lower epoch than the state's: refused (`InvalidEpoch`), a stale producer instance;
//! - a higher epoch: the producer restarted its sequences, the first sequence must be 0;
//! - the same epoch: one of the last [`BATCHES_KEPT`] batches again is a duplicate, answered
//!   with where it went; a batch from before those (its sequences at or before the last one
//!   written) is refused as a duplicate (`Duplicate`), since it is written but where is no longer
//!   known; otherwise the first sequence must follow the last one (sequences wrap from
//!   `i32::MAX` to 0).
//!
//! The state is kept in memory, written beside each new segment at roll (`<base>.producers`,
//! the state at that segment's start), and rebuilt at open from that file plus the batches of
//! the active segment. A producer idle for [`PRODUCER_IDLE_EXPIRY_MS`] is forgotten.

use crate::error::{Error, Result, SequenceError};
use crate::offset::OffsetExt;
use quiver_proto::batch::{sequence_add, sequence_at_or_before, BatchInfo, ValidBatch};
use quiver_proto::Offset;
use std::collections::{HashMap, VecDeque};

/// Batches remembered per producer, for duplicate detection: a producer keeps at most this many
/// batches unanswered per partition (the SDK enforces it), so a retry is always of one of these.
pub const BATCHES_KEPT: usize = quiver_proto::batch::IDEMPOTENT_BATCHES_KEPT;
/// A producer not heard from for this long is forgotten (Kafka's producer.id.expiration.ms).
pub const PRODUCER_IDLE_EXPIRY_MS: i64 = 24 * 60 * 60 * 1000;
/// Producers one log keeps state for. A batch from a producer new to the log is refused
/// (`SequenceError::TooManyProducers`) while the log holds this many; state goes when a producer
/// has been idle for [`PRODUCER_IDLE_EXPIRY_MS`]. Rationale: each producer costs up to ~1 KiB
/// per partition it writes; the broker already refuses producer ids it never handed out, and this
/// bounds what ids it did hand out can cost. Refusing rather than evicting: forgetting a live
/// producer's state would let its retried batch be written twice.
pub const PRODUCERS_PER_LOG_MAX: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Range {
    first_seq: i32,
    last_seq: i32,
    base_offset: Offset,
    last_offset: Offset,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    epoch: i16,
    recent: VecDeque<Range>,
    last_append_ms: i64,
}

/// What an append's batches are, for the producers that sent them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// New batches: append them.
    Append,
    /// The one batch of the append is already in the log at these offsets.
    Duplicate {
        base_offset: Offset,
        last_offset: Offset,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Producers {
    map: HashMap<i64, Entry>,
}

fn last_seq(info: &BatchInfo) -> i32 {
    sequence_add(info.base_sequence, info.record_count.saturating_sub(1))
}

impl Producers {
    /// Producers with state.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Checks the batches of one append, in order, against the state (and against the batches
    /// before them in the same append). A duplicate is only recognized as the append's only
    /// batch: a multi-batch append holding one is refused (`Duplicate`), since its answer (one
    /// base offset for the whole append) could not say where each batch went.
    pub(crate) fn check(&self, batches: &[ValidBatch]) -> Result<Verdict> {
        // (producer, epoch, last sequence) as the earlier batches of this append leave them.
        let mut overlay: Vec<(i64, i16, i32)> = Vec::new();
        for b in batches {
            let info = b.info();
            let pid = info.producer_id;
            if pid < 0 {
                continue;
            }
            let (first, epoch) = (info.base_sequence, info.producer_epoch);
            if first < 0 || epoch < 0 {
                return Err(seq_error(
                    SequenceError::OutOfOrder,
                    format!("producer {pid}: a batch with a producer id needs an epoch and a sequence (got epoch {epoch}, sequence {first})"),
                ));
            }
            let last = last_seq(info);
            let known = overlay
                .iter()
                .rev()
                .find(|o| o.0 == pid)
                .map(|o| (o.1, o.2, false));
            let known = known.or_else(|| {
                let e = self.map.get(&pid)?;
                Some((e.epoch, e.recent.back()?.last_seq, true))
            });
            let expected = match known {
                None => {
                    let new = overlay
                        .iter()
                        .filter(|o| !self.map.contains_key(&o.0))
                        .count();
                    if self.map.len() + new >= PRODUCERS_PER_LOG_MAX {
                        return Err(seq_error(
                            SequenceError::TooManyProducers,
                            format!("producer {pid}: this partition already keeps state for {} producers, its limit; a new producer is accepted once idle ones expire ({} h)", self.map.len() + new, PRODUCER_IDLE_EXPIRY_MS / 3_600_000),
                        ));
                    }
                    0
                }
                Some((cur, _, _)) if epoch < cur => {
                    return Err(seq_error(
                        SequenceError::InvalidEpoch,
                        format!("producer {pid}: epoch {epoch} is older than the current {cur}"),
                    ));
                }
                Some((cur, _, _)) if epoch > cur => 0,
                Some((_, prev, stored)) => {
                    let dup = stored.then(|| self.map.get(&pid)).flatten().and_then(|e| {
                        e.recent
                            .iter()
                            .find(|r| r.first_seq == first && r.last_seq == last)
                    });
                    if let Some(r) = dup {
                        if batches.len() > 1 {
                            return Err(seq_error(
                                SequenceError::Duplicate,
                                format!("producer {pid}: sequences {first}..={last} are already written; a duplicate is only answered alone"),
                            ));
                        }
                        return Ok(Verdict::Duplicate {
                            base_offset: r.base_offset,
                            last_offset: r.last_offset,
                        });
                    }
                    if stored && sequence_at_or_before(first, prev) {
                        // Written before the kept batches (a retry whose answer was lost while
                        // later batches were answered): never write it twice.
                        return Err(seq_error(
                            SequenceError::Duplicate,
                            format!("producer {pid} epoch {epoch}: sequences {first}..={last} were written before the last {BATCHES_KEPT} batches kept (last sequence {prev})"),
                        ));
                    }
                    sequence_add(prev, 1)
                }
            };
            if first != expected {
                return Err(seq_error(
                    SequenceError::OutOfOrder,
                    format!("producer {pid} epoch {epoch}: sequence {first}, expected {expected}"),
                ));
            }
            overlay.push((pid, epoch, last));
        }
        Ok(Verdict::Append)
    }

    /// Records a batch appended at `base_offset`.
    pub(crate) fn record(&mut self, info: &BatchInfo, base_offset: Offset, now_ms: i64) {
        if info.producer_id < 0 || info.base_sequence < 0 {
            return;
        }
        let e = self.map.entry(info.producer_id).or_insert_with(|| Entry {
            epoch: info.producer_epoch,
            recent: VecDeque::with_capacity(BATCHES_KEPT),
            last_append_ms: now_ms,
        });
        if e.epoch != info.producer_epoch {
            e.epoch = info.producer_epoch;
            e.recent.clear();
        }
        if e.recent.len() == BATCHES_KEPT {
            e.recent.pop_front();
        }
        e.recent.push_back(Range {
            first_seq: info.base_sequence,
            last_seq: last_seq(info),
            base_offset,
            // Saturating: offsets come from the log, which checked them, but a number read
            // from disk is never trusted to add without overflow.
            last_offset: base_offset.saturating_plus(u64::from(info.last_offset_delta)),
        });
        e.last_append_ms = e.last_append_ms.max(now_ms);
    }

    /// Forgets batches at or past `end` (staged bytes discarded, or the log truncated). A producer
    /// left with none is forgotten: its next batch must start a new epoch or sequence 0.
    pub(crate) fn forget_from(&mut self, end: Offset) {
        self.map.retain(|_, e| {
            while e.recent.back().is_some_and(|r| r.last_offset >= end) {
                e.recent.pop_back();
            }
            !e.recent.is_empty()
        });
    }

    /// Forgets producers idle since before `now_ms - PRODUCER_IDLE_EXPIRY_MS`.
    pub(crate) fn expire(&mut self, now_ms: i64) {
        self.map
            .retain(|_, e| e.last_append_ms >= now_ms.saturating_sub(PRODUCER_IDLE_EXPIRY_MS));
    }

    /// The snapshot file's bytes: magic, count, then per producer its id, epoch, last append
    /// time and ranges; a CRC-32 of everything before it at the end.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.map.len() * (24 + BATCHES_KEPT * 24));
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&(self.map.len() as u32).to_le_bytes());
        let mut ids: Vec<&i64> = self.map.keys().collect();
        ids.sort();
        for id in ids {
            let e = &self.map[id];
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&e.epoch.to_le_bytes());
            out.extend_from_slice(&e.last_append_ms.to_le_bytes());
            out.push(e.recent.len() as u8);
            for r in &e.recent {
                out.extend_from_slice(&r.first_seq.to_le_bytes());
                out.extend_from_slice(&r.last_seq.to_le_bytes());
                out.extend_from_slice(&r.base_offset.0.to_le_bytes());
                out.extend_from_slice(&r.last_offset.0.to_le_bytes());
            }
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads a snapshot written by [`encode`](Self::encode); `None` if it is not one (torn,
    /// damaged, or another format), in which case the caller rebuilds without it.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Producers> {
        let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
        if crc32fast::hash(body).to_le_bytes() != crc {
            return None;
        }
        let mut r = Reader(body);
        if r.take(SNAPSHOT_MAGIC.len())? != SNAPSHOT_MAGIC {
            return None;
        }
        let n = u32::from_le_bytes(r.array()?);
        let mut map = HashMap::new();
        for _ in 0..n {
            let id = i64::from_le_bytes(r.array()?);
            let epoch = i16::from_le_bytes(r.array()?);
            let last_append_ms = i64::from_le_bytes(r.array()?);
            let count = r.take(1)?[0] as usize;
            if count > BATCHES_KEPT {
                return None;
            }
            let mut recent = VecDeque::with_capacity(BATCHES_KEPT);
            for _ in 0..count {
                recent.push_back(Range {
                    first_seq: i32::from_le_bytes(r.array()?),
                    last_seq: i32::from_le_bytes(r.array()?),
                    base_offset: Offset(u64::from_le_bytes(r.array()?)),
                    last_offset: Offset(u64::from_le_bytes(r.array()?)),
                });
            }
            map.insert(
                id,
                Entry {
                    epoch,
                    recent,
                    last_append_ms,
                },
            );
        }
        r.0.is_empty().then_some(Producers { map })
    }
}

const SNAPSHOT_MAGIC: &[u8; 8] = b"QVPRODS1";

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
}

fn seq_error(kind: SequenceError, message: String) -> Error {
    Error::Sequence { kind, message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_proto::batch::{BatchBuilder, BatchLimits, Compression};

    fn batch(pid: i64, epoch: i16, seq: i32, records: u32) -> ValidBatch {
        let mut b = BatchBuilder::new(Compression::None).producer(pid, epoch, seq);
        for _ in 0..records {
            b.append(quiver_proto::TimestampMs(1), None, Some(b"v"), &[])
                .expect("fits");
        }
        ValidBatch::new(b.finish().expect("builds"), BatchLimits::default()).expect("valid")
    }

    fn append(p: &mut Producers, end: &mut Offset, b: ValidBatch) -> Result<Verdict> {
        let v = p.check(std::slice::from_ref(&b))?;
        if v == Verdict::Append {
            p.record(b.info(), *end, 0);
            *end = end.plus(u64::from(b.info().record_count));
        }
        Ok(v)
    }

    fn kind(r: Result<Verdict>) -> SequenceError {
        match r {
            Err(Error::Sequence { kind, .. }) => kind,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sequences_continue_duplicates_are_found_and_gaps_refused() {
        let (mut p, mut end) = (Producers::default(), Offset(0));
        assert_eq!(
            kind(append(&mut p, &mut end, batch(7, 0, 3, 2))),
            SequenceError::OutOfOrder
        );
        assert_eq!(
            append(&mut p, &mut end, batch(7, 0, 0, 3)).unwrap(),
            Verdict::Append
        );
        assert_eq!(
            append(&mut p, &mut end, batch(7, 0, 3, 2)).unwrap(),
            Verdict::Append
        );
        // The first batch again: where it went, nothing written.
        assert_eq!(
            append(&mut p, &mut end, batch(7, 0, 0, 3)).unwrap(),
            Verdict::Duplicate {
                base_offset: Offset(0),
                last_offset: Offset(2),
            }
        );
        assert_eq!(end, Offset(5));
        assert_eq!(
            kind(append(&mut p, &mut end, batch(7, 0, 6, 1))),
            SequenceError::OutOfOrder
        );
        // Another producer has its own sequence.
        assert_eq!(
            append(&mut p, &mut end, batch(8, 0, 0, 1)).unwrap(),
            Verdict::Append
        );
        // A new epoch starts again at 0; the old epoch is then fenced.
        assert_eq!(
            kind(append(&mut p, &mut end, batch(7, 1, 5, 1))),
            SequenceError::OutOfOrder
        );
        assert_eq!(
            append(&mut p, &mut end, batch(7, 1, 0, 1)).unwrap(),
            Verdict::Append
        );
        assert_eq!(
            kind(append(&mut p, &mut end, batch(7, 0, 5, 1))),
            SequenceError::InvalidEpoch
        );
        // Batches without a producer id are not checked.
        assert_eq!(
            append(&mut p, &mut end, batch(-1, -1, -1, 1)).unwrap(),
            Verdict::Append
        );
    }

    #[test]
    fn a_log_keeps_state_for_a_bounded_number_of_producers() {
        let (mut p, mut end) = (Producers::default(), Offset(0));
        for pid in 0..PRODUCERS_PER_LOG_MAX as i64 {
            p.record(batch(pid, 0, 0, 1).info(), end, 0);
            end = end.plus(1);
        }
        assert_eq!(p.len(), PRODUCERS_PER_LOG_MAX);
        // A new producer is refused, without state made for it...
        assert_eq!(
            kind(append(&mut p, &mut end, batch(1 << 40, 0, 0, 1))),
            SequenceError::TooManyProducers
        );
        assert_eq!(p.len(), PRODUCERS_PER_LOG_MAX);
        // ...and so is an append that brings two new ones when one slot is free.
        p.map.remove(&0);
        assert_eq!(
            kind(p.check(&[batch(1 << 41, 0, 0, 1), batch(1 << 42, 0, 0, 1)])),
            SequenceError::TooManyProducers
        );
        // Known producers carry on.
        assert_eq!(
            append(&mut p, &mut end, batch(5, 0, 1, 1)).unwrap(),
            Verdict::Append
        );
        assert_eq!(
            append(&mut p, &mut end, batch(1 << 41, 0, 0, 1)).unwrap(),
            Verdict::Append
        );
    }

    #[test]
    fn batches_of_one_append_are_checked_in_order_and_a_duplicate_only_alone() {
        let mut p = Producers::default();
        let two = [batch(1, 0, 0, 2), batch(1, 0, 2, 2)];
        assert_eq!(p.check(&two).unwrap(), Verdict::Append);
        assert_eq!(
            kind(p.check(&[batch(1, 0, 2, 2), batch(1, 0, 0, 2)])),
            SequenceError::OutOfOrder
        );
        p.record(two[0].info(), Offset(0), 0);
        p.record(two[1].info(), Offset(2), 0);
        assert_eq!(
            kind(p.check(&[two[1].clone(), batch(1, 0, 4, 1)])),
            SequenceError::Duplicate
        );
        assert_eq!(
            p.check(&two[1..]).unwrap(),
            Verdict::Duplicate {
                base_offset: Offset(2),
                last_offset: Offset(3),
            }
        );
    }

    #[test]
    fn sequences_wrap_and_only_the_last_batches_are_kept() {
        let (mut p, mut end) = (Producers::default(), Offset(0));
        append(&mut p, &mut end, batch(1, 0, 0, 1)).unwrap();
        p.map
            .get_mut(&1)
            .unwrap()
            .recent
            .back_mut()
            .unwrap()
            .last_seq = i32::MAX - 1;
        assert_eq!(
            append(&mut p, &mut end, batch(1, 0, i32::MAX, 2)).unwrap(),
            Verdict::Append
        );
        assert_eq!(
            append(&mut p, &mut end, batch(1, 0, 1, 1)).unwrap(),
            Verdict::Append
        );
        let next = BATCHES_KEPT as i32 + 5;
        for s in 2..next {
            append(&mut p, &mut end, batch(1, 0, s, 1)).unwrap();
        }
        assert_eq!(p.map[&1].recent.len(), BATCHES_KEPT);
        // Older than the kept window: written, but where is no longer known.
        assert_eq!(
            kind(append(&mut p, &mut end, batch(1, 0, 2, 1))),
            SequenceError::Duplicate
        );
        // Ahead of the last one is a gap.
        assert_eq!(
            kind(append(&mut p, &mut end, batch(1, 0, next + 1, 1))),
            SequenceError::OutOfOrder
        );
    }

    #[test]
    fn forgetting_discarded_batches_and_snapshots_round_trip() {
        let (mut p, mut end) = (Producers::default(), Offset(0));
        for s in 0..3 {
            append(&mut p, &mut end, batch(1, 2, s, 1)).unwrap();
        }
        append(&mut p, &mut end, batch(9, 0, 0, 4)).unwrap();
        let snap = p.encode();
        assert_eq!(Producers::decode(&snap), Some(p.clone()));
        let mut torn = snap.clone();
        torn.pop();
        assert_eq!(Producers::decode(&torn), None);
        let mut flipped = snap;
        flipped[12] ^= 1;
        assert_eq!(Producers::decode(&flipped), None);
        // Offsets 2.. discarded: producer 1 goes back to sequence 1, producer 9 is forgotten.
        p.forget_from(Offset(2));
        assert_eq!(p.len(), 1);
        assert_eq!(
            p.check(&[batch(1, 2, 2, 1)]).map_err(kind_of),
            Ok(Verdict::Append)
        );
        assert_eq!(
            p.check(&[batch(9, 0, 4, 1)]).map_err(kind_of),
            Err(SequenceError::OutOfOrder)
        );
        p.expire(PRODUCER_IDLE_EXPIRY_MS + 1);
        assert_eq!(p.len(), 0);
    }

    proptest::proptest! {
        /// A snapshot file is read from disk after crashes: any bytes decode to a state or to
        /// `None`, never a panic; and any state round-trips.
        #[test]
        fn decode_takes_any_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = Producers::decode(&bytes);
        }

        #[test]
        fn snapshots_round_trip(ops in proptest::collection::vec((0i64..4, 0i16..3, 1u32..4), 0..40)) {
            let mut p = Producers::default();
            let mut end = Offset(0);
            let mut next: HashMap<(i64, i16), i32> = HashMap::new();
            for (pid, epoch, n) in ops {
                let seq = next.entry((pid, epoch)).or_insert(0);
                let b = batch(pid, epoch, *seq, n);
                if append(&mut p, &mut end, b).is_ok() {
                    *seq = sequence_add(*seq, n);
                }
            }
            proptest::prop_assert_eq!(Producers::decode(&p.encode()), Some(p));
        }
    }

    fn kind_of(e: Error) -> SequenceError {
        match e {
            Error::Sequence { kind, .. } => kind,
            other => panic!("{other:?}"),
        }
    }
}
