//! `PartitionLog`: one partition's segmented log, owned by one glommio executor.
//!
//! This file holds the log's public face (the handle, its types and accessors) and the state
//! every part shares. The parts, by what they do:
//!
//! * `open.rs`: open and recovery glue (list segments, recover the active one, producers'
//!   state, the directory lock);
//! * `append.rs`: append: offsets, the producers' check, staging into the write buffer, rolling
//!   the segment first when it is full;
//! * `commit.rs`: group commit as a pure state machine (staged, handed, written, synced,
//!   durable; discards and generations; what a waiting append is told), with its table of cases;
//! * `flush.rs`: the flusher task and its fdatasyncs, which drive `commit.rs`;
//! * `read.rs`: reads by offset and timestamp, the tail cache and read-ahead glue, waits for
//!   data;
//! * `maintenance.rs`: roll, seal, close, delete, retention, truncation, verify;
//! * `epochs.rs`: where each leader epoch ends (a follower's divergence check).

mod append;
mod commit;
mod epochs;
mod flush;
mod maintenance;
mod open;
mod read;

use crate::config::LogConfig;
use crate::dma::WriteBuf;
use crate::error::{Error, Result};
use crate::index::IndexPoint;
use crate::notify::Notify;
use crate::producers::Producers;
use crate::readahead::ReadAhead;
use crate::segment::{self, ActiveFiles, Recovered};
use crate::tail::TailCache;
use bytes::Bytes;
use commit::GroupCommit;
use glommio::io::DmaFile;
use quiver_proto::{Offset, TimestampMs};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub use open::DirSyncs;
pub use read::CLOSED_FILES_PER_THREAD;

/// Largest read one `read` call issues (beyond one whole batch, which is always returned).
pub const READ_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Largest append (all its batches together). Segment positions are u32 and a segment may
/// overrun `segment_bytes` (at most [`crate::SEGMENT_BYTES_MAX`]) by one append.
pub const APPEND_BYTES_MAX: u64 = 256 * 1024 * 1024;
const _: () = assert!(crate::config::SEGMENT_BYTES_MAX + APPEND_BYTES_MAX < u32::MAX as u64);
/// Most offsets one append may take: far more than any producer's request (a batch holds at most
/// `RECORDS_PER_BATCH_MAX` records), and small enough that a segment rolled before it always
/// holds it within its index's 32-bit relative offsets.
pub const APPEND_OFFSETS_MAX: u64 = 1 << 30;
const _: () = assert!(APPEND_OFFSETS_MAX < crate::index::SEGMENT_OFFSETS_MAX);

/// What an append stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset given to the first record.
    pub base_offset: Offset,
    /// One past the last record's offset: the log end after this append.
    pub next_offset: Offset,
    /// When the append was staged (the broker's LogAppendTime, if it uses one).
    pub append_time: TimestampMs,
}

impl AppendInfo {
    /// The last record's offset (`None` for an empty append).
    pub fn last_offset(&self) -> Option<Offset> {
        (self.next_offset > self.base_offset).then(|| Offset(self.next_offset.0 - 1))
    }
}

/// What [`PartitionLog::apply_retention`] deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Base offsets of the deleted segments.
    pub deleted_segments: Vec<Offset>,
    pub deleted_bytes: u64,
    /// The log start offset afterwards.
    pub start_offset: Offset,
}

/// Offsets of a log that cannot be read: a damaged batch with intact batches after it, found
/// by recovery or by rebuilding a segment's index (see "Recovery and corruption policy").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorruptRange {
    /// The segment holding it.
    pub segment_base: Offset,
    /// Byte position of the damage in the segment.
    pub position: u64,
    /// The first offset that cannot be read.
    pub first: Offset,
    /// The first offset readable after it.
    pub next: Offset,
    pub reason: String,
}

impl CorruptRange {
    fn new(segment_base: Offset, h: segment::Hole) -> CorruptRange {
        CorruptRange {
            segment_base,
            position: h.pos,
            first: h.first,
            next: h.next,
            reason: h.reason,
        }
    }
}

/// What [`PartitionLog::read_records`] returns.
#[derive(Clone, Debug, Default)]
pub struct Records {
    /// The batches' bytes, in order.
    pub chunks: Vec<Bytes>,
    /// Their total length.
    pub len: usize,
    /// The offset after the last batch (the offset asked when there is none).
    pub next: Offset,
}

/// Progress through the active segment's bytes at some point of the stream. The offsets that go
/// with each mark are the group commit's (`commit.rs`): the pending mark ends at its staged end,
/// the handed mark at its handed end, the written mark at its written end.
#[derive(Clone, Debug)]
struct Mark {
    /// Logical bytes of the segment.
    len: u64,
    /// The partial last block's bytes, `[align_down(len), len)` (kept only at the handed and
    /// written marks; shared between them, not copied).
    tail: Bytes,
    max_timestamp: i64,
    /// (position, base offset) of the last batch.
    last_batch: Option<(u64, Offset)>,
    /// Index points covering the bytes up to `len`.
    points: usize,
}

/// Bytes staged and not yet handed to the flusher.
struct Pending {
    buf: WriteBuf,
    mark: Mark,
}

struct Active {
    files: ActiveFiles,
    /// Index points of the active segment (written ones and staged ones).
    points: Vec<IndexPoint>,
    points_on_disk: usize,
    /// Bytes given to the flusher (equal to `written` when it is idle).
    handed: Mark,
    /// Bytes in the file.
    written: Mark,
    /// Boxed: empty on an idle log, which should cost little (100,000 of them on a broker).
    pending: Option<Box<Pending>>,
    /// Wall-clock ms the segment counts its age from (segment.ms): its file's creation time, or
    /// the first append into it.
    since_ms: i64,
}

impl Active {
    fn from_recovered(r: Recovered, now: i64) -> Active {
        let mark = Mark {
            len: r.len,
            tail: r.tail.into(),
            max_timestamp: r.max_timestamp,
            last_batch: r.last_batch,
            points: r.points.len(),
        };
        Active {
            files: r.files,
            points: r.points,
            points_on_disk: r.points_on_disk,
            handed: mark.clone(),
            written: mark,
            pending: None,
            since_ms: r.created_ms.map_or(now, |t| t.min(now)),
        }
    }

    /// The mark at the end of everything staged.
    fn live(&self) -> &Mark {
        self.pending.as_ref().map_or(&self.handed, |p| &p.mark)
    }
}

#[derive(Clone, Copy, Debug)]
struct Closed {
    base: Offset,
    size: u64,
    max_timestamp: i64,
}

/// A closed segment's open file and index points: the only closed-segment state kept between
/// reads.
#[derive(Clone)]
struct Cache {
    base: Offset,
    log: Rc<DmaFile>,
    path: PathBuf,
    points: Rc<Vec<IndexPoint>>,
}

#[derive(Clone, Debug)]
enum Status {
    Open,
    Closed,
    Deleted,
    /// An fdatasync failed: what the kernel kept is unknown, so the log takes no more appends
    /// until it is reopened (which recovers from what is on disk). Boxed, as it is rare.
    Failed(Box<Error>),
}

struct State {
    config: LogConfig,
    closed: Vec<Closed>,
    active: Active,
    /// Every offset end of the active segment's byte stream and what appends are told
    /// (`commit.rs`); `active` holds the bytes that go with them.
    commit: GroupCommit,
    /// A flusher task is running (`flush.rs`).
    flushing: bool,
    /// The interval timer is armed (`flush.rs`).
    sync_timer_armed: bool,
    exclusive: bool,
    exclusive_waiting: usize,
    truncating: bool,
    truncations: u64,
    /// Appends that rolled the segment and have not staged yet (`RollingAppend`).
    rolling_appends: usize,
    /// Why staged bytes were last discarded, for the appends that lost them.
    last_failure: Option<Box<Error>>,
    status: Status,
    /// Closed segments kept open with their index points, oldest first (at most
    /// `read::CLOSED_SEGMENTS_CACHED`).
    cache: Vec<Cache>,
    /// The batches appended last, for readers at the end of the log (`crate::tail`).
    tail: TailCache,
    /// A read at or past this offset (the first of the last append) is a read at the end.
    tail_from: Offset,
    /// When the log was last read at its end: while recent, appends are cached.
    tail_read_at: Option<Instant>,
    /// The `PartitionLog` handle is gone; the lock goes when the background work ends.
    handle_dropped: bool,
    /// Idempotent producers' sequences (`crate::producers`).
    producers: Producers,
    /// Damaged ranges found with intact batches after them, oldest first.
    damage: Vec<CorruptRange>,
    /// The active segment's (base, length, truncations) when open found the log as a clean
    /// close leaves it (sealed, producer snapshot at its end) or empty: while the log is still
    /// there, close has nothing to seal or snapshot (`close_locked`). A broker stopping with
    /// 100,000 idle partitions owes no fdatasync for them.
    sealed_at: Option<(Offset, u64, u64)>,
}

impl State {
    fn start_offset(&self) -> Offset {
        self.closed
            .first()
            .map_or(self.active.files.base, |c| c.base)
    }

    fn check_open(&self) -> Result<()> {
        match &self.status {
            Status::Open => Ok(()),
            Status::Failed(e) => Err((**e).clone()),
            Status::Closed | Status::Deleted => Err(Error::Closed),
        }
    }

    fn check_readable(&self) -> Result<()> {
        match &self.status {
            Status::Open | Status::Failed(_) => Ok(()),
            Status::Closed | Status::Deleted => Err(Error::Closed),
        }
    }

    /// Every status but `Open` is final: the group commit hands out no more jobs.
    fn set_status(&mut self, status: Status) {
        if !matches!(status, Status::Open) {
            self.commit.stop();
        }
        self.status = status;
    }

    fn out_of_range(&self, requested: Offset) -> Error {
        Error::OffsetOutOfRange {
            requested,
            start: self.start_offset(),
            end: self.commit.staged_end(),
        }
    }

    /// The bytes' side of a discard the group commit just made (`GroupCommit::discard`, or a
    /// failed write or fdatasync): forgets every staged byte not yet written, and the index
    /// points, producers' batches and cached batches that went with them.
    fn drop_unwritten(&mut self, why: Error) {
        self.last_failure = Some(Box::new(why));
        let a = &mut self.active;
        a.pending = None;
        a.handed = a.written.clone();
        a.points.truncate(a.written.points);
        a.points_on_disk = a.points_on_disk.min(a.written.points);
        let end = self.commit.written_end();
        self.producers.forget_from(end);
        self.tail.truncate_after(end);
    }
}

pub(crate) struct Shared {
    /// Shared with the active segment's `LogFile`.
    dir: Rc<Path>,
    /// Holds the directory (`open::DirLock`) until the log is closed or dropped, so that no
    /// second `PartitionLog` of this process opens it.
    lock: RefCell<Option<open::DirLock>>,
    state: RefCell<State>,
    /// The readable end moved, or the log changed under readers.
    data: Notify,
    /// A flush finished, an exclusive operation ended, or staged bytes were discarded.
    progress: Notify,
    /// Reads started ahead of sequential readers (at most `readahead::PER_LOG`, newest last).
    readaheads: RefCell<Vec<ReadAhead>>,
}

/// One partition's log: ordered segments in one directory, owned by one glommio executor.
///
/// `!Send`: it lives on the shard that owns the partition. Methods take `&self`; state sits in a
/// `RefCell` that is never borrowed across an `.await`, so appends on the same shard run
/// concurrently and share group commits. Operations that change the segment set (roll, truncate,
/// retention, close, delete) run as detached tasks: dropping their future does not stop them
/// halfway.
///
/// A log holds its directory until it is closed, deleted or dropped, so a second open of the
/// same directory in this process fails with [`Error::Locked`] (another process is kept out by
/// the broker's lock on its data directory). Dropping a log without
/// `close()` stops it like a crash would (see the `Drop` impl); `close()` is the clean stop.
pub struct PartitionLog {
    shared: Rc<Shared>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl PartitionLog {
    /// Idempotent producers the log holds sequence state for.
    pub fn producer_count(&self) -> usize {
        self.shared.state.borrow().producers.len()
    }

    /// The directory holding this log's segments.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The first offset still in the log.
    pub fn start_offset(&self) -> Offset {
        self.shared.state.borrow().start_offset()
    }

    /// The next offset the log will assign (includes appends not yet durable).
    pub fn end_offset(&self) -> Offset {
        self.shared.state.borrow().commit.staged_end()
    }

    /// Offsets below this are in the segment files and readable.
    pub fn readable_end(&self) -> Offset {
        self.shared.state.borrow().commit.written_end()
    }

    /// Offsets below this have been fdatasynced.
    pub fn durable_end(&self) -> Offset {
        self.shared.state.borrow().commit.durable_end()
    }

    /// The current configuration.
    pub fn config(&self) -> LogConfig {
        self.shared.state.borrow().config.clone()
    }

    /// Changes the configuration at runtime; it applies from the next append, flush or
    /// retention pass.
    pub fn set_config(&self, config: LogConfig) -> Result<()> {
        config.validate()?;
        let mut s = self.shared.state.borrow_mut();
        s.commit.set_policy(config.flush);
        s.config = config;
        Ok(())
    }

    /// Damaged ranges of the log known so far (found at open, or when a segment's index was
    /// rebuilt): their offsets fail to read, intact batches after them are kept and served.
    pub fn corrupt_ranges(&self) -> Vec<CorruptRange> {
        self.shared.state.borrow().damage.clone()
    }

    /// Bytes in the log's segments (including staged appends), for metrics and retention.
    pub fn size_bytes(&self) -> u64 {
        let s = self.shared.state.borrow();
        s.closed.iter().map(|c| c.size).sum::<u64>() + s.active.live().len
    }

    /// About how many bytes of the log lie at or after `offset` (a follower's lag in bytes):
    /// in the active segment exact to one index interval (counted from the index point at or
    /// before `offset`, so at most `index_interval_bytes` too many); in an older segment, its
    /// share of that segment's bytes in proportion to offsets, plus every later segment whole.
    /// 0 at or past the end.
    pub fn bytes_after(&self, offset: Offset) -> u64 {
        let s = self.shared.state.borrow();
        let end = s.commit.staged_end();
        if offset >= end {
            return 0;
        }
        let active_len = s.active.live().len;
        let base = s.active.files.base;
        if offset >= base {
            let rel = u32::try_from(offset.0 - base.0).unwrap_or(u32::MAX);
            let from = crate::index::lookup_offset(&s.active.points, rel)
                .map_or(0, |p| u64::from(p.position));
            return active_len.saturating_sub(from);
        }
        let mut total = active_len;
        for (i, c) in s.closed.iter().enumerate().rev() {
            let next = s.closed.get(i + 1).map_or(base, |n| n.base);
            if c.base > offset {
                total += c.size;
                continue;
            }
            let span = next.0.saturating_sub(c.base.0).max(1);
            let after = next.0.saturating_sub(offset.0.max(c.base.0));
            total += (u128::from(c.size) * u128::from(after) / u128::from(span)) as u64;
            break;
        }
        total
    }

    /// Number of segments, the active one included.
    pub fn segment_count(&self) -> usize {
        self.shared.state.borrow().closed.len() + 1
    }

    /// Base offsets of every segment, oldest first (the last is the active one).
    pub fn segment_bases(&self) -> Vec<Offset> {
        let s = self.shared.state.borrow();
        s.closed
            .iter()
            .map(|c| c.base)
            .chain([s.active.files.base])
            .collect()
    }
}

impl Drop for PartitionLog {
    /// Dropping a log without [`PartitionLog::close`] stops it like a crash would: nothing more
    /// is started, acknowledged data is already where the flush policy put it, and the next open
    /// recovers. The directory lock is released once I/O already in flight has finished.
    fn drop(&mut self) {
        {
            let mut s = self.shared.state.borrow_mut();
            s.handle_dropped = true;
            if matches!(s.status, Status::Open | Status::Failed(_)) {
                s.set_status(Status::Closed);
            }
        }
        self.shared.release_lock_if_idle();
        self.shared.data.notify_all();
        self.shared.progress.notify_all();
    }
}

/// Runs an operation as a detached task so that dropping the caller's future cannot stop it
/// halfway through changing files.
async fn run_detached<T: 'static>(
    fut: impl std::future::Future<Output = Result<T>> + 'static,
) -> Result<T> {
    glommio::spawn_local(fut)
        .detach()
        .await
        .unwrap_or(Err(Error::Closed))
}

/// Releases the exclusive right on drop.
pub(crate) struct ExclusiveGuard {
    shared: Rc<Shared>,
}

impl Drop for ExclusiveGuard {
    fn drop(&mut self) {
        self.shared.state.borrow_mut().exclusive = false;
        self.shared.progress.notify_all();
        self.shared.release_lock_if_idle();
    }
}

struct WaitingGuard<'a>(&'a Shared);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.state.borrow_mut().exclusive_waiting -= 1;
    }
}

impl Shared {
    /// Releases the directory lock once the handle is dropped and no I/O is in flight.
    fn release_lock_if_idle(&self) {
        let idle = {
            let s = self.state.borrow();
            s.handle_dropped && !s.flushing && s.commit.syncs_in_flight() == 0 && !s.exclusive
        };
        if idle {
            self.lock.borrow_mut().take();
        }
    }

    /// Waits until no other exclusive operation runs and every staged byte is written, then
    /// holds off new appends until the guard drops. `closing`: also allowed on a failed log.
    async fn exclusive(this: &Rc<Shared>, closing: bool) -> Result<ExclusiveGuard> {
        this.state.borrow_mut().exclusive_waiting += 1;
        let _waiting = WaitingGuard(this);
        loop {
            let listen = this.progress.listen();
            {
                let mut s = this.state.borrow_mut();
                match (&s.status, closing) {
                    (Status::Open, _) | (Status::Failed(_), true) => {}
                    _ => s.check_open()?,
                }
                if !s.exclusive
                    && !s.flushing
                    && s.commit.syncs_in_flight() == 0
                    && s.active.pending.is_none()
                {
                    s.exclusive = true;
                    return Ok(ExclusiveGuard {
                        shared: this.clone(),
                    });
                }
                let kick = s.active.pending.is_some() && !s.flushing;
                drop(s);
                if kick {
                    Shared::kick(this);
                }
            }
            listen.await;
        }
    }
}
