//! Reading: by offset (`read`, `read_records` with the tail cache), by timestamp, and waiting for
//! data. A read plans under one borrow of the state (`plan_read`: which segment, which file,
//! which index point), then reads without it (`read_batches`), and plans again if the log was
//! truncated meanwhile. Closed segments' files and index points are loaded into a small cache
//! on demand; read-ahead is started after a read that stopped short of the readable end.

use super::{Cache, Closed, CorruptRange, PartitionLog, Records, Shared, State, READ_BYTES_MAX};
use crate::dma::{self, CHUNK_BYTES_MAX};
use crate::error::{Error, Result};
use crate::index::{self, IndexPoint};
use crate::offset::OFFSET_MAX;
use crate::readahead::{self, Ahead, Preloaded, ReadAhead};
use crate::segment::{self, Cursor, SegmentPaths, WalkStart};
use bytes::Bytes;
use glommio::io::DmaFile;
use quiver_proto::batch::{self, BatchLimits, BatchView, BATCH_HEADER_BYTES};
use quiver_proto::{Offset, TimestampMs};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

/// Closed segments whose open file and index points a log keeps between reads: enough for a
/// couple of lagging consumers in different old segments without reloading an index per read.
const CLOSED_SEGMENTS_CACHED: usize = 2;

/// Closed segments kept open by all the logs of one thread (a broker's shard) together: past
/// it, the segment loaded longest ago, whichever log holds it, is let go (its file closes once
/// no read in flight uses it). Without it, consumers catching up on many partitions would hold
/// two descriptors each for as long as the logs stay open.
pub const CLOSED_FILES_PER_THREAD: usize = 512;

thread_local! {
    /// The closed segments cached on this thread, loaded oldest first. An entry whose log has
    /// since let the segment go (its own limit, a truncation) is stale and counts all the same,
    /// so the files actually open never exceed the queue's length.
    static CLOSED_OPEN: std::cell::RefCell<std::collections::VecDeque<(std::rc::Weak<Shared>, Offset)>> =
        Default::default();
}

impl PartitionLog {
    /// Whole batches starting with the one that holds `offset`, up to `max_bytes` (but always at
    /// least one whole batch, so a consumer always progresses), from one segment, capped at the
    /// readable end. Reading at exactly the end returns empty `Bytes` (nothing yet); below the
    /// start or beyond the end is [`Error::OffsetOutOfRange`].
    ///
    /// The bytes come from one direct read of the segment (no page cache) copied once into
    /// `Bytes`; every batch served is CRC-checked on the way out, and a batch that fails is never
    /// served: the read stops before it, or fails with [`Error::Corrupt`] if it is the first.
    pub async fn read(&self, offset: Offset, max_bytes: usize) -> Result<Bytes> {
        Ok(self.read_segment(offset, max_bytes).await?.0)
    }

    /// [`PartitionLog::read`], with the offset after the last batch read (`offset` when none).
    async fn read_segment(&self, offset: Offset, max_bytes: usize) -> Result<(Bytes, Offset)> {
        let shared = &self.shared;
        let max_bytes = max_bytes.clamp(1, READ_BYTES_MAX);
        loop {
            let listen = shared.progress.listen();
            let plan = {
                let s = shared.state.borrow();
                s.check_readable()?;
                if s.truncating {
                    None
                } else {
                    Some(plan_read(&s, offset)?)
                }
            };
            let plan = match plan {
                None => {
                    listen.await;
                    continue;
                }
                Some(Plan::Empty) => return Ok((Bytes::new(), offset)),
                Some(Plan::OpenActive(f)) => {
                    f.get().await?;
                    continue;
                }
                Some(Plan::Load(c)) => {
                    Shared::load_cache(shared, c).await?;
                    continue;
                }
                Some(Plan::Read(p)) => p,
            };
            let ahead = shared.take_readahead(&plan, offset);
            let preloaded = match ahead {
                Some(a) => a.take().await,
                None => None,
            };
            let res = read_batches(&plan, offset, max_bytes, preloaded).await;
            if shared.state.borrow().truncations != plan.truncations {
                continue; // the log was truncated under the read: plan again
            }
            let res = match res {
                Ok(r) => {
                    shared.read_ahead(&plan, &r, max_bytes);
                    Ok((r.bytes, r.next_offset))
                }
                Err(e) => Err(e),
            };
            let res = match res {
                Err(Error::Corrupt {
                    path,
                    position,
                    reason,
                    resume_at: None,
                }) => Err(Error::Corrupt {
                    resume_at: shared.resume_after(plan.base, position),
                    path,
                    position,
                    reason,
                }),
                other => other,
            };
            if let Err(e @ Error::Corrupt { .. }) = &res {
                tracing::error!(error = %e, "read reached a corrupt batch; not served");
            }
            drop(plan);
            crate::files::release();
            return res;
        }
    }

    /// Like [`PartitionLog::read`], but only batches that end at or below `end` (a visible end
    /// the caller took), as chunks whose concatenation is the batches' bytes. When `offset` is among
    /// the batches appended last they come from memory (`crate::tail`): no disk read, no copy of
    /// a large batch, no second CRC check. Otherwise from the segment, as `read` does.
    pub async fn read_records(
        &self,
        offset: Offset,
        max_bytes: usize,
        end: Offset,
    ) -> Result<Records> {
        {
            let mut s = self.shared.state.borrow_mut();
            s.check_readable()?;
            if offset >= s.tail_from {
                s.tail_read_at = Some(Instant::now());
            }
            let written = s.commit.written_end();
            if !s.truncating && offset >= s.start_offset() && offset < written {
                let max_bytes = max_bytes.clamp(1, READ_BYTES_MAX);
                if let Some(hit) = s.tail.read(offset, max_bytes, end.min(written)) {
                    s.tail_read_at = Some(Instant::now());
                    return Ok(Records {
                        chunks: hit.chunks,
                        len: hit.len,
                        next: hit.next,
                    });
                }
            }
        }
        let (mut bytes, mut next) = self.read_segment(offset, max_bytes).await?;
        if next > end {
            // Read past `end` (written, not yet visible): keep the whole batches that end at or
            // below it, and the offset after the last of them.
            let mut keep = 0;
            next = offset;
            for b in batch::BatchIter::new(&bytes) {
                let Ok(h) = b.and_then(batch::header) else {
                    break;
                };
                let after =
                    Offset(h.base_offset.get()).plus(u64::from(h.last_offset_delta.get()) + 1);
                if after > end {
                    break;
                }
                keep += h.batch_len.get() as usize;
                next = after;
            }
            bytes.truncate(keep);
        }
        Ok(Records {
            len: bytes.len(),
            chunks: if bytes.is_empty() {
                Vec::new()
            } else {
                vec![bytes]
            },
            next,
        })
    }

    /// Tells the log a reader waits at its end (a fetch with nothing new to read yet): what is
    /// appended next is kept for it in the tail cache, as after a read at the end.
    pub fn reader_at_end(&self) {
        self.shared.state.borrow_mut().tail_read_at = Some(Instant::now());
    }

    /// The first offset whose record timestamp is at or after `ts`, or `None` if every readable
    /// record is older. Segments are skipped by their max timestamp, the time index narrows the
    /// search within one, and only the one batch that holds the answer is decoded.
    pub async fn offset_for_timestamp(&self, ts: TimestampMs) -> Result<Option<Offset>> {
        let shared = &self.shared;
        let mut after_base: Option<Offset> = None;
        loop {
            let (candidate, truncations) = {
                let s = shared.state.borrow();
                s.check_readable()?;
                let mut found = None;
                for c in &s.closed {
                    if after_base.is_some_and(|a| c.base <= a) || c.max_timestamp < ts.0 {
                        continue;
                    }
                    found = Some(Plan::Load(*c));
                    break;
                }
                let a = &s.active;
                if found.is_none()
                    && after_base.is_none_or(|b| a.files.base > b)
                    && a.written.max_timestamp >= ts.0
                {
                    found = Some(match a.files.log.now() {
                        None => Plan::OpenActive(a.files.log.clone()),
                        Some(file) => Plan::Read(ReadPlan {
                            file,
                            path: a.files.log.path(),
                            base: a.files.base,
                            len: a.written.len,
                            start: index::lookup_time(&a.points[..a.written.points], ts.0),
                            truncations: s.truncations,
                            limit: OFFSET_MAX,
                        }),
                    });
                }
                (found, s.truncations)
            };
            let plan = match candidate {
                None => return Ok(None),
                Some(Plan::Load(c)) => {
                    match shared.cached_plan(c, |pts| index::lookup_time(pts, ts.0)) {
                        Some(p) => p,
                        None => {
                            Shared::load_cache(shared, c).await?;
                            continue;
                        }
                    }
                }
                Some(Plan::OpenActive(f)) => {
                    f.get().await?;
                    continue;
                }
                Some(Plan::Read(p)) => p,
                Some(Plan::Empty) => unreachable!("not planned here"),
            };
            let res = find_timestamp(&plan, ts.0).await;
            if shared.state.borrow().truncations != truncations {
                after_base = None;
                continue;
            }
            match res? {
                Some(o) => return Ok(Some(o)),
                None => after_base = Some(plan.base),
            }
        }
    }

    /// Resolves once the record at `offset` is readable (`readable_end() > offset`), or the log
    /// is closed or truncated (the caller re-checks). Woken by appends, never by polling;
    /// cancel-safe (a dropped waiter leaves nothing registered), so a long-poll fetch wraps it in
    /// its own timeout.
    pub async fn wait_for_data(&self, offset: Offset) {
        let shared = &self.shared;
        let truncations = shared.state.borrow().truncations;
        loop {
            let listen = shared.data.listen();
            {
                let s = shared.state.borrow();
                // A failed log still serves reads but takes no appends: a long poll on it waits
                // for its timeout rather than spinning.
                if s.commit.written_end() > offset
                    || s.truncations != truncations
                    || matches!(s.status, super::Status::Closed | super::Status::Deleted)
                {
                    return;
                }
            }
            listen.await;
        }
    }
}

enum Plan {
    Empty,
    Load(Closed),
    /// The active segment's file is closed (`crate::files`): open it, then plan again.
    OpenActive(crate::files::LogFile),
    Read(ReadPlan),
}

struct ReadPlan {
    file: Rc<DmaFile>,
    path: PathBuf,
    base: Offset,
    /// Readable bytes of the segment.
    len: u64,
    /// The index point to start from (`None`: the segment's start).
    start: Option<IndexPoint>,
    truncations: u64,
    /// The first offset the segment may not hold: the next segment's base ([`OFFSET_MAX`] for
    /// the active one). A closed segment whose batches run past it (damage) serves none of them:
    /// those offsets belong to the next segment, or are the log's to give.
    limit: Offset,
}

/// The first offset segment `base` may not hold: the next segment's base.
fn segment_limit(s: &State, base: Offset) -> Offset {
    s.closed
        .iter()
        .map(|c| c.base)
        .chain([s.active.files.base])
        .find(|&b| b > base)
        .unwrap_or(OFFSET_MAX)
}

fn plan_read(s: &State, offset: Offset) -> Result<Plan> {
    let start = s.start_offset();
    let end = s.commit.staged_end();
    if offset < start || offset > end {
        return Err(s.out_of_range(offset));
    }
    let a = &s.active;
    if offset >= s.commit.written_end() {
        return Ok(Plan::Empty);
    }
    if offset >= a.files.base {
        let rel = index::rel_for_lookup(offset, a.files.base);
        let Some(file) = a.files.log.now() else {
            return Ok(Plan::OpenActive(a.files.log.clone()));
        };
        return Ok(Plan::Read(ReadPlan {
            file,
            path: a.files.log.path(),
            base: a.files.base,
            len: a.written.len,
            start: index::lookup_offset(&a.points[..a.written.points], rel),
            truncations: s.truncations,
            limit: OFFSET_MAX,
        }));
    }
    let i = s.closed.partition_point(|c| c.base <= offset) - 1;
    let c = s.closed[i];
    match s.cache.iter().find(|x| x.base == c.base) {
        Some(cache) => Ok(Plan::Read(ReadPlan {
            file: cache.log.clone(),
            path: cache.path.clone(),
            base: c.base,
            len: c.size,
            start: index::lookup_offset(&cache.points, index::rel_for_lookup(offset, c.base)),
            truncations: s.truncations,
            limit: segment_limit(s, c.base),
        })),
        _ => Ok(Plan::Load(c)),
    }
}

/// What one read served: the bytes, and where the batch after them starts (file position and
/// base offset).
struct Served {
    bytes: Bytes,
    end: u64,
    next_offset: Offset,
}

/// Bytes one read of `max_bytes` reads at once: enough for a batch that straddles the limit.
fn read_window(max_bytes: usize) -> usize {
    max_bytes + CHUNK_BYTES_MAX / 4
}

/// Reads whole batches from `plan`'s segment, starting with the one holding `offset`. With
/// `preloaded` (a read-ahead of exactly that batch), serves what those bytes hold, reading the
/// disk only if they do not hold a whole batch.
async fn read_batches(
    plan: &ReadPlan,
    offset: Offset,
    max_bytes: usize,
    preloaded: Option<Preloaded>,
) -> Result<Served> {
    let (mut pos, mut expected) = match plan.start {
        Some(p) => (u64::from(p.position), p.offset(plan.base)),
        None => (0, plan.base),
    };
    let window = read_window(max_bytes);
    let mut cur = Cursor::new(plan.file.clone(), plan.path.clone(), plan.len, window);
    let mut resident_end = None;
    if let Some(p) = preloaded {
        (pos, expected) = (p.pos, p.offset);
        resident_end = Some(p.pos + p.buf.len() as u64);
        cur.preload(p.pos, p.buf);
    }
    let corrupt = |pos: u64, why: String| Error::corrupt(&plan.path, pos, why);
    // Skip the batches before the one that holds `offset` (at most an index interval's worth).
    let first_len = loop {
        let (_, last, len) = header_at(&mut cur, pos, expected).await?;
        if last >= plan.limit {
            return Err(corrupt(
                pos,
                format!(
                    "batch runs to offset {last}, past the next segment's base {}",
                    plan.limit
                ),
            ));
        }
        if last >= offset {
            break len;
        }
        pos += u64::from(len);
        expected = last.plus(1);
    };
    let first = pos;
    let mut want = (max_bytes.max(first_len as usize) as u64).min(plan.len - first) as usize;
    if let Some(r) = resident_end {
        // Serve what the read-ahead holds (more was written since it started) rather than read
        // it all again; the next read-ahead takes the rest.
        let held = r.saturating_sub(first) as usize;
        if held >= first_len as usize {
            want = want.min(held);
        }
    }
    if !cur.ensure(first, want).await? {
        return Err(corrupt(
            first,
            "segment shorter than its readable length".into(),
        ));
    }
    let mut end = first;
    while end < first + want as u64 {
        let avail = first + want as u64 - end;
        if avail < BATCH_HEADER_BYTES as u64 {
            break;
        }
        let hdr = cur.slice(end, BATCH_HEADER_BYTES);
        let info = batch::validate_header(hdr, BatchLimits::default());
        let base = batch::header(hdr)
            .map(|h| Offset(h.base_offset.get()))
            .unwrap_or(OFFSET_MAX);
        let ok = match info {
            Ok(i)
                if base == expected && base.plus(u64::from(i.last_offset_delta)) >= plan.limit =>
            {
                Err(format!(
                    "batch runs past the next segment's base {}",
                    plan.limit
                ))
            }
            Ok(i) if base == expected && u64::from(i.batch_len) <= avail => {
                let b = cur.slice(end, i.batch_len as usize);
                match batch::validate(b, BatchLimits::default()) {
                    Ok(_) => Ok(i),
                    Err(e) => Err(e.to_string()),
                }
            }
            Ok(i) if base == expected => {
                // Does not fit what we read: it is for the next read (unless it is the first).
                if end == first {
                    Err(format!(
                        "batch of {} bytes overruns the segment",
                        i.batch_len
                    ))
                } else {
                    break;
                }
            }
            Ok(_) => Err(format!("batch base offset {base}, expected {expected}")),
            Err(e) => Err(e.to_string()),
        };
        match ok {
            Ok(i) => {
                end += u64::from(i.batch_len);
                expected = base.plus(u64::from(i.last_offset_delta) + 1);
            }
            Err(why) if end == first => return Err(corrupt(end, why)),
            Err(_) => break, // serve the good prefix; the next read reports the bad batch
        }
    }
    Ok(Served {
        bytes: Bytes::copy_from_slice(cur.slice(first, (end - first) as usize)),
        end,
        next_offset: expected,
    })
}

/// The header at `pos`, checked for sanity and for the expected base offset:
/// (base offset, last offset, batch length).
async fn header_at(cur: &mut Cursor, pos: u64, expected: Offset) -> Result<(Offset, Offset, u32)> {
    if !cur.ensure(pos, BATCH_HEADER_BYTES).await? {
        return Err(Error::corrupt(
            &cur.path,
            pos,
            "partial batch header inside the readable range",
        ));
    }
    let hdr = cur.slice(pos, BATCH_HEADER_BYTES);
    let info = batch::validate_header(hdr, BatchLimits::default())
        .map_err(|e| Error::corrupt(&cur.path, pos, e))?;
    let base = Offset(batch::header(hdr).expect("checked").base_offset.get());
    if base != expected {
        return Err(Error::corrupt(
            &cur.path,
            pos,
            format!("batch base offset {base}, expected {expected}"),
        ));
    }
    Ok((
        base,
        base.plus(u64::from(info.last_offset_delta)),
        info.batch_len,
    ))
}

/// Walks `plan`'s segment from its start point to the first batch whose max timestamp reaches
/// `ts`, then decodes that batch to find the first record at or after `ts`.
async fn find_timestamp(plan: &ReadPlan, ts: i64) -> Result<Option<Offset>> {
    let start = plan.start.map_or(WalkStart::origin(plan.base), |p| {
        WalkStart::at_point(plan.base, &p)
    });
    let mut cur = Cursor::new(
        plan.file.clone(),
        plan.path.clone(),
        plan.len,
        CHUNK_BYTES_MAX,
    );
    let (mut pos, mut expected) = (start.pos, start.offset);
    while pos < plan.len {
        let f = segment::check_batch(&mut cur, pos, expected)
            .await?
            .map_err(|(p, why)| Error::corrupt(&plan.path, p, why))?;
        if f.last_offset >= plan.limit {
            // Damage: the segment claims offsets of the next one. What is past here is not
            // this segment's to answer with.
            return Ok(None);
        }
        if f.max_timestamp >= ts {
            let bytes = cur.slice(f.pos, f.len as usize);
            let view = BatchView::new(bytes, BatchLimits::default())
                .map_err(|e| Error::corrupt(&plan.path, f.pos, e))?;
            let records = view
                .records()
                .map_err(|e| Error::corrupt(&plan.path, f.pos, e))?;
            for r in records.iter() {
                let r = r.map_err(|e| Error::corrupt(&plan.path, f.pos, e))?;
                if r.timestamp.0 >= ts {
                    return Ok(Some(r.offset));
                }
            }
        }
        pos = f.pos + u64::from(f.len);
        expected = f.last_offset.plus(1);
    }
    Ok(None)
}

impl Shared {
    /// Where reading can go on after the damaged batch at byte `position` of segment `base`: the
    /// end of a damaged range recovery found there, else the next index point of the segment
    /// past `position` (its batch is checked when read), else the next segment's base. `None`
    /// when nothing is known to follow.
    fn resume_after(&self, base: Offset, position: u64) -> Option<Offset> {
        let s = self.state.borrow();
        if let Some(r) = s
            .damage
            .iter()
            .find(|r| r.segment_base == base && r.position == position)
        {
            return Some(r.next);
        }
        let points: Option<Vec<IndexPoint>> = if s.active.files.base == base {
            Some(s.active.points[..s.active.written.points].to_vec())
        } else {
            s.cache
                .iter()
                .find(|c| c.base == base)
                .map(|c| c.points.to_vec())
        };
        if let Some(p) = points
            .unwrap_or_default()
            .iter()
            .find(|p| u64::from(p.position) > position)
        {
            return Some(p.offset(base));
        }
        s.closed
            .iter()
            .map(|c| c.base)
            .chain([s.active.files.base])
            .find(|&b| b > base)
    }

    /// The read-ahead of the batch at `offset` in `plan`'s segment, if one was started.
    fn take_readahead(&self, plan: &ReadPlan, offset: Offset) -> Option<ReadAhead> {
        let mut r = self.readaheads.borrow_mut();
        let i = r.iter().position(|a| {
            a.base == plan.base && a.offset == offset && a.truncations == plan.truncations
        })?;
        Some(r.remove(i))
    }

    /// After a read that stopped short of the segment's readable end, starts reading what a
    /// reader continuing from there asks for next (see `readahead`).
    fn read_ahead(&self, plan: &ReadPlan, served: &Served, max_bytes: usize) {
        if served.bytes.is_empty() || served.end >= plan.len {
            return;
        }
        let len = (read_window(max_bytes) as u64).min(plan.len - served.end) as usize;
        let mut r = self.readaheads.borrow_mut();
        r.retain(|a| a.truncations == plan.truncations);
        if r.len() >= readahead::PER_LOG {
            r.remove(0); // release its budget before taking more
        }
        let started = ReadAhead::start(Ahead {
            file: plan.file.clone(),
            path: plan.path.clone(),
            base: plan.base,
            pos: served.end,
            offset: served.next_offset,
            len,
            truncations: plan.truncations,
        });
        r.extend(started);
    }

    /// Loads a closed segment's index and opens its log for reading, into the log's small cache
    /// of closed segments (the oldest entry makes room), within the thread's bound
    /// ([`CLOSED_FILES_PER_THREAD`]).
    async fn load_cache(this: &Rc<Shared>, c: Closed) -> Result<()> {
        this.load_cache_entry(c).await?;
        let evicted: Vec<(std::rc::Weak<Shared>, Offset)> = CLOSED_OPEN.with(|q| {
            let mut q = q.borrow_mut();
            q.retain(|(w, b)| !(*b == c.base && std::ptr::eq(w.as_ptr(), Rc::as_ptr(this))));
            q.push_back((Rc::downgrade(this), c.base));
            let excess = q.len().saturating_sub(CLOSED_FILES_PER_THREAD);
            q.drain(..excess).collect()
        });
        for (log, base) in evicted {
            if let Some(log) = log.upgrade() {
                log.state.borrow_mut().cache.retain(|x| x.base != base);
            }
        }
        Ok(())
    }

    async fn load_cache_entry(&self, c: Closed) -> Result<()> {
        let interval = self.state.borrow().config.index_interval_bytes;
        let paths = SegmentPaths::new(&self.dir, c.base);
        let (points, holes) = segment::load_closed_index(&paths, c.base, c.size, interval).await?;
        let log = dma::open_ro(&paths.log).await?;
        let mut s = self.state.borrow_mut();
        if s.closed.iter().any(|x| x.base == c.base) {
            for h in holes {
                let r = CorruptRange::new(c.base, h);
                if !s.damage.contains(&r) {
                    s.damage.push(r);
                }
            }
            s.cache.retain(|x| x.base != c.base);
            if s.cache.len() == CLOSED_SEGMENTS_CACHED {
                s.cache.remove(0);
            }
            s.cache.push(Cache {
                base: c.base,
                log,
                path: paths.log,
                points: Rc::new(points),
            });
        }
        Ok(())
    }

    fn cached_plan(
        &self,
        c: Closed,
        lookup: impl Fn(&[IndexPoint]) -> Option<IndexPoint>,
    ) -> Option<ReadPlan> {
        let s = self.state.borrow();
        let cache = s.cache.iter().find(|x| x.base == c.base)?;
        Some(ReadPlan {
            file: cache.log.clone(),
            path: cache.path.clone(),
            base: c.base,
            len: c.size,
            start: lookup(&cache.points),
            truncations: s.truncations,
            limit: segment_limit(&s, c.base),
        })
    }
}
