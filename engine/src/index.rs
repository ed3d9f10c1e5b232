//! The sparse indexes beside each segment.
//!
//! Every `index_interval_bytes` of log (and once more at the last batch when a segment is rolled)
//! the engine records an *index point*: a batch boundary. Each index point is one entry in both
//! files, so entry `i` of one file matches entry `i` of the other:
//!
//! ```text
//! <base>.index      8 bytes per entry:  rel_offset u32 LE | position u32 LE
//! <base>.timeindex 12 bytes per entry:  max_timestamp i64 LE | rel_offset u32 LE
//! ```
//!
//! `rel_offset` is the batch's base offset minus the segment's base offset, `position` its byte
//! position in the `.log`, and `max_timestamp` the largest timestamp of every batch up to and
//! including that one (so the time index is non-decreasing and its last entry in a closed segment
//! is the segment's max timestamp, which retention judges by).
//!
//! Worked example, segment 00000000000000000100.log with a 4096-byte interval, batches of 10
//! records and 1500 bytes: batches start at positions 0, 1500, 3000, 4500, 6000, ... The first
//! index point is the first batch at or past 4096 bytes from the previous point (position 0):
//! the batch at 4500, offsets 130..=139, so `.index` gets (30, 4500); the next is the batch at
//! 9000 (offset 160): (60, 9000). Looking up offset 165 finds (60, 9000) and scans from 9000.
//!
//! Entries are strictly increasing in both offset and position. In the active segment the files'
//! tails are zero padding (direct I/O writes whole blocks), so parsing stops at the first
//! all-zero entry; a closed segment's files are cut to their exact length at roll.

use crate::offset::OffsetExt;
use quiver_proto::Offset;

pub(crate) const OFFSET_ENTRY_BYTES: usize = 8;
pub(crate) const TIME_ENTRY_BYTES: usize = 12;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexPoint {
    pub rel_offset: u32,
    pub position: u32,
    pub max_timestamp: i64,
}

impl IndexPoint {
    pub(crate) fn offset_bytes(&self) -> [u8; OFFSET_ENTRY_BYTES] {
        let mut b = [0u8; OFFSET_ENTRY_BYTES];
        b[..4].copy_from_slice(&self.rel_offset.to_le_bytes());
        b[4..].copy_from_slice(&self.position.to_le_bytes());
        b
    }

    pub(crate) fn time_bytes(&self) -> [u8; TIME_ENTRY_BYTES] {
        let mut b = [0u8; TIME_ENTRY_BYTES];
        b[..8].copy_from_slice(&self.max_timestamp.to_le_bytes());
        b[8..].copy_from_slice(&self.rel_offset.to_le_bytes());
        b
    }
}

/// Offsets a segment may span: an index point holds its batch's offset relative to the segment's
/// base in 32 bits, so a log rolls to a new segment before an append would take the active one
/// past this (`log/append.rs`), and appends are refused beyond `APPEND_OFFSETS_MAX`.
pub(crate) const SEGMENT_OFFSETS_MAX: u64 = u32::MAX as u64;

impl IndexPoint {
    /// The point for the batch at byte `position` of the segment based at `base`, whose first
    /// offset is `batch_offset`; `None` if either does not fit the index's 32-bit fields (a
    /// segment this engine did not write, since it rolls first), never a truncated value.
    pub(crate) fn new(
        base: Offset,
        batch_offset: Offset,
        position: u64,
        max_timestamp: i64,
    ) -> Option<IndexPoint> {
        let rel = batch_offset.checked_since(base)?;
        Some(IndexPoint {
            rel_offset: u32::try_from(rel).ok()?,
            position: u32::try_from(position).ok()?,
            max_timestamp,
        })
    }

    /// The base offset of the point's batch, in the segment based at `base`.
    pub(crate) fn offset(&self, base: Offset) -> Offset {
        base.plus(u64::from(self.rel_offset))
    }
}

/// `offset` relative to the segment based at `base`, for a lookup: past what 32 bits hold it is
/// the largest value (the lookup then finds the segment's last point, which is right, since no
/// point can lie beyond it).
pub(crate) fn rel_for_lookup(offset: Offset, base: Offset) -> u32 {
    u32::try_from(offset.checked_since(base).unwrap_or(0)).unwrap_or(u32::MAX)
}

/// Why index files cannot be used as they are.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum IndexDamage {
    /// A file's length is not a whole number of entries (closed segments only).
    Length,
    /// The two files disagree on an entry, or entries are not increasing.
    Inconsistent(usize),
    /// An entry points at or past the end of the log.
    BeyondLog(usize),
}

/// Parses both files into index points.
///
/// `exact`: the files belong to a closed segment and must hold exactly the same number of whole
/// entries. Otherwise (active segment) both are read up to their first all-zero entry and the
/// shorter decides; a torn tail simply yields fewer points.
pub(crate) fn parse(
    offset_file: &[u8],
    time_file: &[u8],
    log_len: u64,
    exact: bool,
) -> Result<Vec<IndexPoint>, IndexDamage> {
    let n_off = offset_file.len() / OFFSET_ENTRY_BYTES;
    let n_time = time_file.len() / TIME_ENTRY_BYTES;
    if exact
        && (!offset_file.len().is_multiple_of(OFFSET_ENTRY_BYTES)
            || !time_file.len().is_multiple_of(TIME_ENTRY_BYTES)
            || n_off != n_time)
    {
        return Err(IndexDamage::Length);
    }
    let mut points: Vec<IndexPoint> = Vec::with_capacity(n_off.min(n_time));
    for i in 0..n_off.min(n_time) {
        let o = &offset_file[i * OFFSET_ENTRY_BYTES..][..OFFSET_ENTRY_BYTES];
        let t = &time_file[i * TIME_ENTRY_BYTES..][..TIME_ENTRY_BYTES];
        if !exact && (o.iter().all(|&b| b == 0) || t.iter().all(|&b| b == 0)) {
            break;
        }
        let rel_offset = u32::from_le_bytes(o[..4].try_into().expect("4 bytes"));
        let position = u32::from_le_bytes(o[4..].try_into().expect("4 bytes"));
        let max_timestamp = i64::from_le_bytes(t[..8].try_into().expect("8 bytes"));
        let t_rel = u32::from_le_bytes(t[8..].try_into().expect("4 bytes"));
        if t_rel != rel_offset {
            return Err(IndexDamage::Inconsistent(i));
        }
        if let Some(prev) = points.last() {
            if rel_offset <= prev.rel_offset
                || position <= prev.position
                || max_timestamp < prev.max_timestamp
            {
                return Err(IndexDamage::Inconsistent(i));
            }
        }
        if u64::from(position) >= log_len {
            return Err(IndexDamage::BeyondLog(i));
        }
        points.push(IndexPoint {
            rel_offset,
            position,
            max_timestamp,
        });
    }
    Ok(points)
}

/// The last point at or before `rel_offset`, if any.
pub(crate) fn lookup_offset(points: &[IndexPoint], rel_offset: u32) -> Option<IndexPoint> {
    let i = points.partition_point(|p| p.rel_offset <= rel_offset);
    i.checked_sub(1).map(|i| points[i])
}

/// The last point whose running max timestamp is below `ts`: every record up to and including
/// that batch is older than `ts`, so a search for the first record at or after `ts` may start
/// there.
pub(crate) fn lookup_time(points: &[IndexPoint], ts: i64) -> Option<IndexPoint> {
    let i = points.partition_point(|p| p.max_timestamp < ts);
    i.checked_sub(1).map(|i| points[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(rel: u32, pos: u32, ts: i64) -> IndexPoint {
        IndexPoint {
            rel_offset: rel,
            position: pos,
            max_timestamp: ts,
        }
    }

    fn files(points: &[IndexPoint]) -> (Vec<u8>, Vec<u8>) {
        let o = points.iter().flat_map(|p| p.offset_bytes()).collect();
        let t = points.iter().flat_map(|p| p.time_bytes()).collect();
        (o, t)
    }

    #[test]
    fn lookups_follow_the_worked_example() {
        let pts = [p(30, 4500, 10), p(60, 9000, 20), p(90, 13500, 20)];
        // (offset sought relative to base 100, expected start point)
        let cases = [
            (0, None),
            (29, None),
            (30, Some(4500)),
            (65, Some(9000)),
            (500, Some(13500)),
        ];
        for (rel, want) in cases {
            assert_eq!(
                lookup_offset(&pts, rel).map(|p| p.position),
                want,
                "rel {rel}"
            );
        }
        let cases = [
            (5, None),
            (10, None),
            (11, Some(4500)),
            (20, Some(4500)),
            (21, Some(13500)),
        ];
        for (ts, want) in cases {
            assert_eq!(lookup_time(&pts, ts).map(|p| p.position), want, "ts {ts}");
        }
    }

    #[test]
    fn points_and_lookups_never_truncate_offsets() {
        let base = Offset(1_000);
        // (batch offset, position, expected point)
        let cases = [
            (1_000, 0, Some((0, 0))),
            (1_000 + u64::from(u32::MAX), 10, Some((u32::MAX, 10))),
            (1_000 + u64::from(u32::MAX) + 1, 10, None),
            (999, 10, None),
            (1_001, u64::from(u32::MAX) + 1, None),
        ];
        for (offset, pos, want) in cases {
            let point = IndexPoint::new(base, Offset(offset), pos, 0);
            assert_eq!(
                point.map(|p| (p.rel_offset, p.position)),
                want,
                "offset {offset} position {pos}"
            );
            if let Some(p) = point {
                assert_eq!(p.offset(base), Offset(offset));
            }
        }
        assert_eq!(rel_for_lookup(Offset(1_005), base), 5);
        assert_eq!(rel_for_lookup(Offset(1_000 + (1 << 40)), base), u32::MAX);
        assert_eq!(rel_for_lookup(Offset(5), base), 0);
    }

    #[test]
    fn parse_stops_at_padding_and_rejects_damage() {
        let pts = vec![p(30, 4500, 10), p(60, 9000, 20)];
        let (mut o, mut t) = files(&pts);
        assert_eq!(parse(&o, &t, 10_000, true).unwrap(), pts);
        // Active segment: zero padding after the entries.
        o.resize(4096, 0);
        t.resize(4096, 0);
        assert_eq!(parse(&o, &t, 10_000, false).unwrap(), pts);
        assert_eq!(parse(&o, &t, 10_000, true), Err(IndexDamage::Length));
        // One file shorter than the other: the shorter decides.
        assert_eq!(parse(&o[..8], &t, 10_000, false).unwrap(), pts[..1]);
        // Pointing past the log.
        assert_eq!(parse(&o, &t, 9000, false), Err(IndexDamage::BeyondLog(1)));
        // Not increasing.
        let (o, t) = files(&[p(30, 4500, 10), p(20, 9000, 20)]);
        assert_eq!(
            parse(&o, &t, 10_000, true),
            Err(IndexDamage::Inconsistent(1))
        );
        // The files disagree.
        let (o, _) = files(&pts);
        let (_, t) = files(&[p(30, 4500, 10), p(61, 9000, 20)]);
        assert_eq!(
            parse(&o, &t, 10_000, true),
            Err(IndexDamage::Inconsistent(1))
        );
    }
}
