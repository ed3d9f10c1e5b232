//! The tail cache: the batches a log appended last, kept in memory so that consumers reading
//! at the end of the log are served without a disk read.
//!
//! Reads are direct (no page cache), so without this a consumer that keeps up with producers
//! waits for the disk on every fetch, for bytes the broker held a moment before. While a log has
//! such a reader (a read at or past the start of its last append, or one the cache served,
//! within the last [`READER_TTL`]), each append also copies its batches, as stored (headers
//! stamped), into one buffer the cache keeps. A read served from the cache returns slices of
//! those buffers: no disk read, no copy of batches of [`COALESCE_BELOW`] or more, and no second
//! CRC check (every batch was validated when it arrived, and the stamped fields are outside the
//! CRC). A log nobody reads at its end caches nothing and pays nothing.
//!
//! The cached batches are contiguous in offsets and end at the log's staged end; a read is
//! served from here only when its offset falls inside them, and only up to what is written.
//! Anything else (an older offset, a discard or truncation in between) reads the disk as before.
//!
//! Bounds: each log keeps at most [`LOG_BYTES_MAX`], and every shard (glommio executor, one
//! thread) has a byte budget shared by all its logs ([`set_shard_budget`], default
//! [`SHARD_BUDGET_DEFAULT`]). An append that does not fit the budget after the log gave back its
//! own oldest batches is not cached, and the log's cache starts again after it. The buffers are
//! the cache's own (the request's buffer is not kept), so the bytes counted are the bytes held.

use bytes::{Bytes, BytesMut};
use quiver_proto::Offset;
use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Bytes of batches one log keeps at most.
pub const LOG_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Bytes of batches cached on one shard at most, by default.
pub const SHARD_BUDGET_DEFAULT: usize = 32 * 1024 * 1024;
/// How long after its last read at the end a log keeps caching what it appends.
pub const READER_TTL: Duration = Duration::from_secs(2);
/// Batches smaller than this are copied together into one buffer when served, so that a read of
/// many small batches gives a few chunks rather than two per batch.
pub const COALESCE_BELOW: usize = 16 * 1024;

thread_local! {
    static BUDGET: Cell<usize> = const { Cell::new(SHARD_BUDGET_DEFAULT) };
    static IN_USE: Cell<usize> = const { Cell::new(0) };
}

/// Process-wide: bytes reads took from the tail cache.
static SERVED_BYTES: AtomicU64 = AtomicU64::new(0);

/// Bytes served from the tail cache so far, on every shard.
pub fn served_bytes() -> u64 {
    SERVED_BYTES.load(Relaxed)
}

/// Sets the tail-cache byte budget of the calling shard (thread); 0 turns the cache off there.
pub fn set_shard_budget(bytes: usize) {
    BUDGET.with(|b| b.set(bytes));
}

/// Tail-cache bytes held on the calling shard now.
pub fn shard_bytes_in_use() -> usize {
    IN_USE.with(Cell::get)
}

/// One batch as stored in the segment.
struct Entry {
    base: Offset,
    /// The offset after the batch's last record.
    end: Offset,
    bytes: Bytes,
}

impl Entry {
    fn len(&self) -> usize {
        self.bytes.len()
    }
}

/// What a cached read returns: the batches' bytes in order, as chunks.
#[derive(Debug, Default)]
pub(crate) struct Hit {
    pub chunks: Vec<Bytes>,
    pub len: usize,
    /// The offset after the last batch returned.
    pub next: Offset,
}

#[derive(Default)]
pub(crate) struct TailCache {
    entries: VecDeque<Entry>,
    bytes: usize,
}

impl TailCache {
    /// Adds one appended batch. It must follow the last one cached; if it does not, or it does
    /// not fit, the cache starts again from the next batch that does.
    pub fn push(&mut self, base: Offset, end: Offset, bytes: Bytes) {
        if self.entries.back().is_some_and(|e| e.end != base) {
            self.clear();
        }
        let n = bytes.len();
        if n > LOG_BYTES_MAX {
            self.clear();
            return;
        }
        while !self.entries.is_empty() && self.bytes + n > LOG_BYTES_MAX {
            self.pop_front();
        }
        let budget = BUDGET.with(Cell::get);
        while !self.entries.is_empty() && IN_USE.with(Cell::get) + n > budget {
            self.pop_front();
        }
        if IN_USE.with(Cell::get) + n > budget {
            // Other logs hold the budget: this batch is not cached, so neither can later ones
            // be until the cache is contiguous again (push after clear starts afresh).
            self.clear();
            return;
        }
        IN_USE.with(|u| u.set(u.get() + n));
        self.bytes += n;
        self.entries.push_back(Entry { base, end, bytes });
    }

    /// Whole batches from the one that holds `offset`, up to `max_bytes` (at least one batch),
    /// none ending past `end`. `None` when `offset` is not inside the cached batches, or the
    /// batch that holds it ends past `end`.
    pub fn read(&self, offset: Offset, max_bytes: usize, end: Offset) -> Option<Hit> {
        let first = self.entries.front()?;
        if offset < first.base || offset >= self.entries.back()?.end {
            return None;
        }
        let i = self.entries.partition_point(|e| e.end <= offset);
        // The batches to serve: [i, j).
        let (mut j, mut len) = (i, 0usize);
        for e in self.entries.range(i..) {
            let n = e.len();
            if e.end > end || (len > 0 && len + n > max_bytes) {
                break;
            }
            len += n;
            j += 1;
        }
        let mut hit = Hit {
            chunks: Vec::new(),
            len,
            next: if j > i {
                self.entries[j - 1].end
            } else {
                offset
            },
        };
        let mut k = i;
        while k < j {
            let e = &self.entries[k];
            if e.len() >= COALESCE_BELOW {
                hit.chunks.push(e.bytes.clone());
                k += 1;
                continue;
            }
            // A run of small batches: one buffer of exactly their size.
            let run_end = (k..j)
                .find(|&x| self.entries[x].len() >= COALESCE_BELOW)
                .unwrap_or(j);
            let size = (k..run_end).map(|x| self.entries[x].len()).sum();
            let mut run = BytesMut::with_capacity(size);
            for e in self.entries.range(k..run_end) {
                run.extend_from_slice(&e.bytes);
            }
            hit.chunks.push(run.freeze());
            k = run_end;
        }
        SERVED_BYTES.fetch_add(len as u64, Relaxed);
        (hit.len > 0).then_some(hit)
    }

    /// Drops the batches that end past `end` (staged bytes that were discarded).
    pub fn truncate_after(&mut self, end: Offset) {
        while self.entries.back().is_some_and(|e| e.end > end) {
            let e = self.entries.pop_back().expect("checked");
            self.release(e.len());
        }
    }

    pub fn clear(&mut self) {
        let n = self.bytes;
        self.entries.clear();
        self.release(n);
    }

    fn pop_front(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.release(e.len());
        }
    }

    fn release(&mut self, n: usize) {
        self.bytes -= n;
        IN_USE.with(|u| u.set(u.get() - n));
    }
}

impl Drop for TailCache {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(base: u64, records: u64, body_len: usize) -> (Offset, Offset, Bytes) {
        let mut v = base.to_le_bytes().to_vec();
        v.extend(vec![base as u8; body_len]);
        (Offset(base), Offset(base + records), Bytes::from(v))
    }

    fn push(c: &mut TailCache, b: (Offset, Offset, Bytes)) {
        c.push(b.0, b.1, b.2);
    }

    /// `TailCache::read` with plain numbers, to keep the cases short.
    fn read(c: &TailCache, offset: u64, max_bytes: usize, end: u64) -> Option<Hit> {
        c.read(Offset(offset), max_bytes, Offset(end))
    }

    fn concat(h: &Hit) -> Vec<u8> {
        h.chunks.iter().flat_map(|c| c.iter().copied()).collect()
    }

    #[test]
    fn serves_whole_batches_from_the_one_holding_the_offset() {
        let mut c = TailCache::default();
        push(&mut c, batch(10, 5, 100));
        push(&mut c, batch(15, 5, 100));
        push(&mut c, batch(20, 5, 100));
        assert!(
            read(&c, 9, 1 << 20, 25).is_none(),
            "below the cached batches"
        );
        assert!(read(&c, 25, 1 << 20, 25).is_none(), "at the end");
        let h = read(&c, 17, 1 << 20, 25).unwrap();
        assert_eq!(h.next, Offset(25));
        assert_eq!(h.len, 2 * 108);
        let mut want = 15u64.to_le_bytes().to_vec();
        want.extend(vec![15u8; 100]);
        want.extend(20u64.to_le_bytes());
        want.extend(vec![20u8; 100]);
        assert_eq!(concat(&h), want);
        // Capped at what is readable, and by max_bytes (but at least one batch).
        assert_eq!(read(&c, 10, 1 << 20, 20).unwrap().next, Offset(20));
        assert_eq!(read(&c, 10, 1, 25).unwrap().next, Offset(15));
        assert!(
            read(&c, 20, 1 << 20, 20).is_none(),
            "its batch is not written yet"
        );
        c.clear();
        assert_eq!(shard_bytes_in_use(), 0);
    }

    #[test]
    fn large_batches_are_served_without_a_copy() {
        let mut c = TailCache::default();
        push(&mut c, batch(0, 1, 100));
        push(&mut c, batch(1, 1, 100));
        push(&mut c, batch(2, 10, COALESCE_BELOW));
        let h = read(&c, 0, 1 << 20, 12).unwrap();
        // The two small batches in one chunk, then the large one as it is.
        assert_eq!(h.chunks.len(), 2);
        assert_eq!(h.chunks[0].len(), 2 * 108);
        assert_eq!(h.chunks[1].as_ptr(), c.entries[2].bytes.as_ptr());
        drop(c);
        assert_eq!(shard_bytes_in_use(), 0);
    }

    #[test]
    fn a_gap_or_a_discard_starts_again() {
        let mut c = TailCache::default();
        push(&mut c, batch(0, 5, 10));
        push(&mut c, batch(5, 5, 10));
        push(&mut c, batch(10, 5, 10));
        c.truncate_after(Offset(10));
        assert!(read(&c, 10, 1 << 20, 100).is_none());
        assert_eq!(read(&c, 0, 1 << 20, 100).unwrap().next, Offset(10));
        // Not following on from offset 10: the old batches go.
        push(&mut c, batch(12, 3, 10));
        assert!(read(&c, 5, 1 << 20, 100).is_none());
        assert_eq!(read(&c, 12, 1 << 20, 100).unwrap().next, Offset(15));
        assert_eq!(shard_bytes_in_use(), 18);
        c.clear();
        assert_eq!(shard_bytes_in_use(), 0);
    }

    #[test]
    fn bounded_per_log_and_per_shard() {
        let mut c = TailCache::default();
        let size = LOG_BYTES_MAX / 4;
        for i in 0..10 {
            push(&mut c, batch(i, 1, size - 8));
        }
        assert_eq!(c.bytes, LOG_BYTES_MAX);
        assert!(read(&c, 5, 1 << 30, 10).is_none(), "the oldest went first");
        assert_eq!(read(&c, 6, 1 << 30, 10).unwrap().next, Offset(10));
        // A shard budget smaller than what the log holds: the log gives back its own first,
        // and a batch that cannot fit at all is not cached.
        set_shard_budget(size);
        push(&mut c, batch(10, 1, size - 8));
        assert_eq!(shard_bytes_in_use(), size);
        assert_eq!(read(&c, 10, 1 << 30, 11).unwrap().next, Offset(11));
        let mut other = TailCache::default();
        push(&mut other, batch(0, 1, 100));
        assert!(
            read(&other, 0, 1 << 20, 1).is_none(),
            "the budget is held by the first log"
        );
        set_shard_budget(0);
        push(&mut c, batch(11, 1, 10));
        assert_eq!(shard_bytes_in_use(), 0, "budget 0 turns the cache off");
        set_shard_budget(SHARD_BUDGET_DEFAULT);
    }
}
