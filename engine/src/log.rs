//! `PartitionLog`: one partition's segmented log, owned by one glommio executor.

use crate::config::{FlushPolicy, LogConfig};
use crate::dma::{self, align_down, WriteBuf, CHUNK_BYTES_MAX};
use crate::error::{Error, Result};
use crate::index::{self, IndexPoint};
use crate::notify::Notify;
use crate::producers::{Producers, Verdict};
use crate::readahead::{self, Ahead, Preloaded, ReadAhead};
use crate::segment::{self, ActiveFiles, Cursor, Recovered, SegmentPaths, WalkStart};
use crate::tail::{self, TailCache};
use bytes::{Bytes, BytesMut};
use glommio::io::DmaFile;
use quiver_proto::batch::{self, BatchLimits, BatchView, ValidBatch, BATCH_HEADER_BYTES};
use quiver_proto::{LeaderEpoch, Offset, TimestampMs};
use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
/// fdatasyncs that may run while the flusher writes the next group.
const SYNCS_IN_FLIGHT_MAX: usize = 4;
/// Index points the active segment's index files may lag behind its log by: they are written
/// once this many new points are due (and in full at roll and close), not with every group, so a
/// group is usually one write, not three. After a crash, open rebuilds the missing points from the
/// log (at most this many index intervals of it, 1 MiB at the default 4 KiB, walked anyway from
/// the last point on disk).
const INDEX_POINTS_PER_WRITE: usize = 256;
/// Closed segments whose open file and index points a log keeps between reads: enough for a
/// couple of lagging consumers in different old segments without reloading an index per read.
const CLOSED_SEGMENTS_CACHED: usize = 2;
/// Discard records kept so a waiting append can tell whether its bytes survived a failure.
const DISCARDS_KEPT: usize = 64;

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

/// Progress through the active segment at some point of the byte stream.
#[derive(Clone, Debug)]
struct Mark {
    /// Logical bytes of the segment.
    len: u64,
    /// The partial last block's bytes, `[align_down(len), len)` (kept only at the handed and
    /// written marks).
    tail: Vec<u8>,
    offset_end: u64,
    max_timestamp: i64,
    /// (position, base offset) of the last batch.
    last_batch: Option<(u64, u64)>,
    /// Index points covering the bytes up to `len`.
    points: usize,
}

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
    pending: Option<Pending>,
    /// Wall-clock ms the segment counts its age from (segment.ms): its file's creation time, or
    /// the first append into it.
    since_ms: i64,
}

impl Active {
    fn from_recovered(r: Recovered, now: i64) -> Active {
        let mark = Mark {
            len: r.len,
            tail: r.tail,
            offset_end: r.next_offset,
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

    fn live(&self) -> &Mark {
        self.pending.as_ref().map_or(&self.handed, |p| &p.mark)
    }
}

#[derive(Clone, Copy, Debug)]
struct Closed {
    base: u64,
    size: u64,
    max_timestamp: i64,
}

/// A closed segment's open file and index points: the only closed-segment state kept between
/// reads.
#[derive(Clone)]
struct Cache {
    base: u64,
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
    /// until it is reopened (which recovers from what is on disk).
    Failed(Error),
}

struct State {
    config: LogConfig,
    closed: Vec<Closed>,
    active: Active,
    durable_end: u64,
    flushing: bool,
    syncs_in_flight: usize,
    /// The end covered by the latest fdatasync issued (completed or not).
    sync_issued_end: u64,
    exclusive: bool,
    exclusive_waiting: usize,
    truncating: bool,
    truncations: u64,
    /// Appends that rolled the segment and have not staged yet (`RollingAppend`).
    rolling_appends: usize,
    /// Bumped whenever staged bytes are discarded (failed write, truncate).
    generation: u64,
    /// (generation after a discard, acknowledged end at that moment).
    discards: VecDeque<(u64, u64)>,
    last_failure: Option<Error>,
    status: Status,
    /// Closed segments kept open with their index points, oldest first (at most
    /// [`CLOSED_SEGMENTS_CACHED`]).
    cache: Vec<Cache>,
    /// The batches appended last, for readers at the end of the log (`crate::tail`).
    tail: TailCache,
    /// A read at or past this offset (the first of the last append) is a read at the end.
    tail_from: u64,
    /// When the log was last read at its end: while recent, appends are cached.
    tail_read_at: Option<Instant>,
    /// The `PartitionLog` handle is gone; the lock goes when the background work ends.
    handle_dropped: bool,
    unsynced: bool,
    last_sync: Instant,
    sync_requested: bool,
    sync_timer_armed: bool,
    /// Idempotent producers' sequences (`crate::producers`).
    producers: Producers,
    /// Damaged ranges found with intact batches after them, oldest first.
    damage: Vec<CorruptRange>,
}

impl State {
    fn start_offset(&self) -> u64 {
        self.closed
            .first()
            .map_or(self.active.files.base, |c| c.base)
    }

    fn ack_end(&self) -> u64 {
        match self.config.flush {
            FlushPolicy::Sync => self.durable_end,
            FlushPolicy::IntervalMs(_) => self.active.written.offset_end,
        }
    }

    fn check_open(&self) -> Result<()> {
        match &self.status {
            Status::Open => Ok(()),
            Status::Failed(e) => Err(e.clone()),
            Status::Closed | Status::Deleted => Err(Error::Closed),
        }
    }

    fn check_readable(&self) -> Result<()> {
        match &self.status {
            Status::Open | Status::Failed(_) => Ok(()),
            Status::Closed | Status::Deleted => Err(Error::Closed),
        }
    }

    fn out_of_range(&self, requested: u64) -> Error {
        Error::OffsetOutOfRange {
            requested: Offset(requested),
            start: Offset(self.start_offset()),
            end: Offset(self.active.live().offset_end),
        }
    }

    /// Forgets every staged byte not yet written and records it for waiting appends.
    fn discard(&mut self, why: Error) {
        self.generation += 1;
        let ack = self.ack_end();
        self.discards.push_back((self.generation, ack));
        if self.discards.len() > DISCARDS_KEPT {
            self.discards.pop_front();
        }
        self.last_failure = Some(why);
        let a = &mut self.active;
        a.pending = None;
        a.handed = a.written.clone();
        a.points.truncate(a.written.points);
        a.points_on_disk = a.points_on_disk.min(a.written.points);
        let end = a.written.offset_end;
        self.producers.forget_from(end);
        self.tail.truncate_after(end);
    }
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
    fn new(segment_base: u64, h: segment::Hole) -> CorruptRange {
        CorruptRange {
            segment_base: Offset(segment_base),
            position: h.pos,
            first: Offset(h.first),
            next: Offset(h.next),
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

/// One flush cycle's work, taken from the state under one borrow.
struct Job {
    files: ActiveFiles,
    log: Option<WriteBuf>,
    index: Option<[(u64, Vec<u8>); 2]>,
    index_from: usize,
    mark: Mark,
    sync: bool,
}

pub(crate) struct Shared {
    dir: PathBuf,
    /// Holds an exclusive `flock` on `<dir>/.lock` until the log is closed or dropped, so that no
    /// second `PartitionLog` (another shard, another process) opens the same directory.
    lock: RefCell<Option<std::fs::File>>,
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
/// A log holds an exclusive `flock` on `<dir>/.lock` until it is closed, deleted or dropped, so a
/// second open of the same directory fails with [`Error::Locked`]. Dropping a log without
/// `close()` stops it like a crash would (see the `Drop` impl); `close()` is the clean stop.
pub struct PartitionLog {
    shared: Rc<Shared>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
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

/// The producers' state at the end of the recovered active segment: the snapshot a clean close
/// wrote at that end, else the segment's snapshot (the state at its start, written at roll) plus
/// every batch in it.
async fn load_producers(dir: &Path, rec: &Recovered, now: i64) -> Result<Producers> {
    let base = rec.files.base;
    if rec.next_offset != base {
        if let Some(bytes) = segment::read_producers(dir, rec.next_offset).await? {
            match Producers::decode(&bytes) {
                Some(p) => return Ok(p),
                None => {
                    tracing::warn!(dir = %dir.display(), offset = rec.next_offset, "producer snapshot unreadable; reading the segment's batches instead")
                }
            }
        }
    }
    let mut producers = match segment::read_producers(dir, base).await? {
        None => Producers::default(),
        Some(bytes) => Producers::decode(&bytes).unwrap_or_else(|| {
            tracing::warn!(dir = %dir.display(), base, "producer snapshot unreadable; producers start over");
            Producers::default()
        }),
    };
    segment::walk_headers(
        &rec.files.log,
        &rec.files.paths.log,
        rec.files.base,
        rec.len,
        &rec.holes,
        |info, base_offset| producers.record(info, base_offset, now),
    )
    .await?;
    Ok(producers)
}

impl PartitionLog {
    /// Opens the log in `dir` (creating it if absent) and recovers it: closed segments are
    /// listed, each with its size and max timestamp from its time index (rebuilding missing or
    /// damaged indexes); the last segment's tail is validated batch by batch from its last good
    /// index point, and a torn or corrupt tail is cut (and logged).
    pub async fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<PartitionLog> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        create_dir_durable(&dir).await?;
        let lock = lock_dir(&dir)?;
        let mut files: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io("list dir", &dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list dir", &dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some((base, ext)) = segment::parse_file_name(&name) {
                files.entry(base).or_default().push(ext.to_owned());
            }
        }
        // Files being deleted (`.deleted`, segment::delete_files), half-written ones (`.tmp`)
        // and index files whose log is gone are removed: a crash can leave them. Producer
        // snapshots at offsets that start no segment (a clean close's) are looked at once the
        // log's end is known.
        let mut loose_snapshots = Vec::new();
        files.retain(|base, exts| {
            exts.retain(|ext| {
                let deleted = ext.ends_with(segment::DELETED_SUFFIX) || ext.ends_with(".tmp");
                if deleted {
                    let _ = std::fs::remove_file(dir.join(segment::file_name(*base, ext)));
                }
                !deleted
            });
            if exts.iter().any(|e| e == segment::LOG_EXT) {
                return true;
            }
            for ext in exts {
                if ext == segment::PRODUCERS_EXT {
                    loose_snapshots.push(*base);
                } else {
                    let _ = std::fs::remove_file(dir.join(segment::file_name(*base, ext)));
                }
            }
            false
        });
        let bases: Vec<u64> = files.keys().copied().collect();
        let interval = config.index_interval_bytes;
        let mut closed = Vec::with_capacity(bases.len().saturating_sub(1));
        let mut damage = Vec::new();
        for &base in bases.iter().take(bases.len().saturating_sub(1)) {
            let paths = SegmentPaths::new(&dir, base);
            let size = std::fs::metadata(&paths.log)
                .map_err(|e| Error::io("stat", &paths.log, e))?
                .len();
            let (max_timestamp, holes) = closed_max_timestamp(&paths, base, size, interval).await?;
            damage.extend(holes.into_iter().map(|h| CorruptRange::new(base, h)));
            closed.push(Closed {
                base,
                size,
                max_timestamp,
            });
        }
        let active_base = bases.last().copied().unwrap_or(0);
        let rec = segment::recover_active(&dir, active_base, interval).await?;
        if bases.is_empty() {
            dma::sync_dir(&dir).await?;
        }
        // What recovery found is served, and a retried batch found in it is answered as written
        // (`Verdict::Duplicate`), only once it is durable: after a crash, bytes written but not
        // yet fdatasynced may be readable now and gone after a power loss. A clean close leaves
        // a producer snapshot at the log's end, after its last fdatasync; then nothing is owed.
        let closed_cleanly = loose_snapshots.contains(&rec.next_offset);
        if rec.len > 0 && !closed_cleanly {
            dma::fdatasync(&rec.files.log, &rec.files.paths.log).await?;
        }
        let now = now_ms();
        // A snapshot above the end (the log lost its tail since a clean close) would be wrong
        // once the log grows back to its offset: removed before anything is written. One below
        // the end is true but of no use.
        if loose_snapshots.iter().any(|&o| o > rec.next_offset) {
            segment::remove_producers_above(&dir, rec.next_offset).await?;
        }
        for &o in loose_snapshots.iter().filter(|&&o| o < rec.next_offset) {
            let _ = std::fs::remove_file(dir.join(segment::file_name(o, segment::PRODUCERS_EXT)));
        }
        let producers = load_producers(&dir, &rec, now).await?;
        damage.extend(
            rec.holes
                .iter()
                .cloned()
                .map(|h| CorruptRange::new(rec.files.base, h)),
        );
        let active = Active::from_recovered(rec, now);
        let durable_end = active.written.offset_end;
        tracing::debug!(dir = %dir.display(), segments = closed.len() + 1, end = durable_end, "log opened");
        let state = State {
            config,
            closed,
            active,
            durable_end,
            flushing: false,
            syncs_in_flight: 0,
            sync_issued_end: durable_end,
            exclusive: false,
            exclusive_waiting: 0,
            truncating: false,
            truncations: 0,
            rolling_appends: 0,
            generation: 0,
            discards: VecDeque::new(),
            last_failure: None,
            status: Status::Open,
            cache: Vec::new(),
            tail: TailCache::default(),
            tail_from: durable_end,
            tail_read_at: None,
            handle_dropped: false,
            unsynced: false,
            last_sync: Instant::now(),
            sync_requested: false,
            sync_timer_armed: false,
            producers,
            damage,
        };
        let shared = Rc::new(Shared {
            dir,
            lock: RefCell::new(Some(lock)),
            state: RefCell::new(state),
            data: Notify::default(),
            progress: Notify::default(),
            readaheads: RefCell::new(Vec::new()),
        });
        Ok(PartitionLog { shared })
    }

    /// Idempotent producers the log holds sequence state for.
    pub fn producer_count(&self) -> usize {
        self.shared.state.borrow().producers.len()
    }

    /// The directory holding this log's segments.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

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
        let (info, target, generation) = loop {
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
                    let live = s.active.live();
                    let roll = must_roll(
                        Fill {
                            bytes: live.len,
                            offsets: live.offset_end - s.active.files.base,
                            age_ms: now - s.active.since_ms,
                        },
                        total,
                        offsets,
                        &s.config,
                    );
                    if !roll {
                        match s.producers.check(batches)? {
                            Verdict::Append => {
                                break stage(&mut s, batches, leader_epoch, total, now);
                            }
                            // Answered once the first write of it is acknowledged.
                            Verdict::Duplicate {
                                base_offset,
                                last_offset,
                            } => {
                                let info = AppendInfo {
                                    base_offset: Offset(base_offset),
                                    next_offset: Offset(last_offset + 1),
                                    append_time: TimestampMs(now),
                                };
                                break (info, last_offset + 1, s.generation);
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
                if s.generation == generation {
                    if s.ack_end() >= target {
                        return Ok(info);
                    }
                    match &s.status {
                        Status::Open => {}
                        Status::Failed(e) => return Err(e.clone()),
                        Status::Closed | Status::Deleted => return Err(Error::Closed),
                    }
                } else {
                    let survived = s
                        .discards
                        .iter()
                        .find(|(g, _)| *g == generation + 1)
                        .is_some_and(|(_, ack)| *ack >= target);
                    if survived {
                        return Ok(info);
                    }
                    return Err(s
                        .last_failure
                        .clone()
                        .unwrap_or_else(|| Error::Discarded("discarded".into())));
                }
            }
            listen.await;
        }
    }

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
    async fn read_segment(&self, offset: Offset, max_bytes: usize) -> Result<(Bytes, u64)> {
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
                    Some(plan_read(&s, offset.0)?)
                }
            };
            let plan = match plan {
                None => {
                    listen.await;
                    continue;
                }
                Some(Plan::Empty) => return Ok((Bytes::new(), offset.0)),
                Some(Plan::Load(c)) => {
                    shared.load_cache(c).await?;
                    continue;
                }
                Some(Plan::Read(p)) => p,
            };
            let ahead = shared.take_readahead(&plan, offset.0);
            let preloaded = match ahead {
                Some(a) => a.take().await,
                None => None,
            };
            let res = read_batches(&plan, offset.0, max_bytes, preloaded).await;
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
                    resume_at: shared.resume_after(plan.base, position).map(Offset),
                    path,
                    position,
                    reason,
                }),
                other => other,
            };
            if let Err(e @ Error::Corrupt { .. }) = &res {
                tracing::error!(error = %e, "read reached a corrupt batch; not served");
            }
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
            if offset.0 >= s.tail_from {
                s.tail_read_at = Some(Instant::now());
            }
            let written = s.active.written.offset_end;
            if !s.truncating && offset.0 >= s.start_offset() && offset.0 < written {
                let max_bytes = max_bytes.clamp(1, READ_BYTES_MAX);
                if let Some(hit) = s.tail.read(offset.0, max_bytes, end.0.min(written)) {
                    s.tail_read_at = Some(Instant::now());
                    return Ok(Records {
                        chunks: hit.chunks,
                        len: hit.len,
                        next: Offset(hit.next),
                    });
                }
            }
        }
        let (mut bytes, read_next) = self.read_segment(offset, max_bytes).await?;
        let mut next = Offset(read_next);
        if next > end {
            // Read past `end` (written, not yet visible): keep the whole batches that end at or
            // below it, and the offset after the last of them.
            let mut keep = 0;
            next = offset;
            for b in batch::BatchIter::new(&bytes) {
                let Ok(h) = b.and_then(batch::header) else {
                    break;
                };
                let after = h.base_offset.get() + u64::from(h.last_offset_delta.get()) + 1;
                if after > end.0 {
                    break;
                }
                keep += h.batch_len.get() as usize;
                next = Offset(after);
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
        let mut after_base: Option<u64> = None;
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
                    found = Some(Plan::Read(ReadPlan {
                        file: a.files.log.clone(),
                        path: a.files.paths.log.clone(),
                        base: a.files.base,
                        len: a.written.len,
                        start: index::lookup_time(&a.points[..a.written.points], ts.0),
                        truncations: s.truncations,
                        limit: u64::MAX,
                    }));
                }
                (found, s.truncations)
            };
            let plan = match candidate {
                None => return Ok(None),
                Some(Plan::Load(c)) => {
                    match shared.cached_plan(c, |pts| index::lookup_time(pts, ts.0)) {
                        Some(p) => p,
                        None => {
                            shared.load_cache(c).await?;
                            continue;
                        }
                    }
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
                Some(o) => return Ok(Some(Offset(o))),
                None => after_base = Some(plan.base),
            }
        }
    }

    /// The first offset still in the log.
    pub fn start_offset(&self) -> Offset {
        Offset(self.shared.state.borrow().start_offset())
    }

    /// The next offset the log will assign (includes appends not yet durable).
    pub fn end_offset(&self) -> Offset {
        Offset(self.shared.state.borrow().active.live().offset_end)
    }

    /// Offsets below this are in the segment files and readable.
    pub fn readable_end(&self) -> Offset {
        Offset(self.shared.state.borrow().active.written.offset_end)
    }

    /// Offsets below this have been fdatasynced.
    pub fn durable_end(&self) -> Offset {
        Offset(self.shared.state.borrow().durable_end)
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
                if s.active.written.offset_end > offset.0
                    || s.truncations != truncations
                    || matches!(s.status, Status::Closed | Status::Deleted)
                {
                    return;
                }
            }
            listen.await;
        }
    }

    /// Resolves once the record at `offset` is durable (`durable_end() > offset`), or the log is
    /// closed or truncated (the caller re-checks). Woken when a sync completes, never by polling;
    /// cancel-safe. The broker's long-poll waits on this for logs whose records become visible
    /// only once durable.
    pub async fn wait_for_durable(&self, offset: Offset) {
        let shared = &self.shared;
        let truncations = shared.state.borrow().truncations;
        loop {
            let listen = shared.data.listen();
            {
                let s = shared.state.borrow();
                if s.durable_end > offset.0
                    || s.truncations != truncations
                    || !matches!(s.status, Status::Open)
                {
                    return;
                }
            }
            listen.await;
        }
    }

    /// Removes every record at or after `offset` (replication's truncation to a leader's end).
    /// Whole batches are removed, so when `offset` falls inside a batch the log ends at that
    /// batch's base: the returned offset is the new end.
    ///
    /// ```text
    /// before: [0.log: 0..=99] [100.log: 100..=249 in batches 100-149, 150-199, 200-249] (active)
    /// truncate(160) -> ends at 150: [0.log: 0..=99] [100.log: 100..=149] (active)
    /// truncate(50)  -> segment 100.log is deleted; 0.log is cut after the batch before 50 and
    ///                  becomes the active segment again
    /// ```
    ///
    /// `offset` at or past the end changes nothing; below the start is out of range.
    pub async fn truncate(&self, offset: Offset) -> Result<Offset> {
        let sh = self.shared.clone();
        run_detached(async move {
            let _g = Shared::exclusive(&sh, false).await?;
            sh.truncate_locked(offset.0).await
        })
        .await
    }

    /// Deletes whole closed segments from the start while they are older than `retention_ms`
    /// (judged by each segment's max timestamp) or the log is larger than `retention_bytes`
    /// without them. Never the active segment. The start offset moves up; offsets are never
    /// reused.
    pub async fn apply_retention(&self, now: TimestampMs) -> Result<RetentionReport> {
        let sh = self.shared.clone();
        run_detached(async move {
            // Most checks find nothing to delete: they answer without the exclusive right,
            // whose wait for every staged byte to be written stalls the appends behind it.
            if !sh.retention_due(now.0)? {
                return sh.delete_segments(Vec::new()).await;
            }
            // The lock covers only taking the segments out of the log; their files are deleted
            // after it is released, so appends and reads do not wait for the filesystem.
            let victims = {
                let _g = Shared::exclusive(&sh, false).await?;
                sh.retention_victims(now.0)?
            };
            sh.delete_segments(victims).await
        })
        .await
    }

    /// Closes the active segment and starts a new one at the end offset (if the active segment
    /// holds anything). Returns whether it rolled.
    pub async fn roll(&self) -> Result<bool> {
        let sh = self.shared.clone();
        run_detached(async move {
            let _g = Shared::exclusive(&sh, false).await?;
            sh.roll_locked().await
        })
        .await
    }

    /// The current configuration.
    pub fn config(&self) -> LogConfig {
        self.shared.state.borrow().config.clone()
    }

    /// Changes the configuration at runtime; it applies from the next append, flush or
    /// retention pass.
    pub fn set_config(&self, config: LogConfig) -> Result<()> {
        config.validate()?;
        self.shared.state.borrow_mut().config = config;
        Ok(())
    }

    /// Flushes, fdatasyncs and closes the files. Appends and reads fail with [`Error::Closed`]
    /// afterwards.
    pub async fn close(&self) -> Result<()> {
        let sh = self.shared.clone();
        run_detached(async move {
            {
                let s = sh.state.borrow();
                if matches!(s.status, Status::Closed | Status::Deleted) {
                    return Ok(());
                }
            }
            let _g = Shared::exclusive(&sh, true).await?;
            sh.close_locked().await
        })
        .await
    }

    /// Deletes the whole log: every segment and the directory.
    pub async fn delete(&self) -> Result<()> {
        let sh = self.shared.clone();
        run_detached(async move {
            let _g = Shared::exclusive(&sh, true).await?;
            {
                let mut s = sh.state.borrow_mut();
                s.status = Status::Deleted;
                s.cache.clear();
                s.tail.clear();
            }
            sh.readaheads.borrow_mut().clear();
            sh.lock.borrow_mut().take();
            sh.data.notify_all();
            sh.progress.notify_all();
            // Renamed out of the way at once (off the core), then freed paced by the deleter
            // thread, like deleted segments: unlinking big files at once stalls every other
            // log's fdatasync (deleter.rs).
            let dir = sh.dir.clone();
            let to = segment::with_suffix(&dir, segment::DELETED_SUFFIX);
            glommio::executor()
                .spawn_blocking(move || {
                    if to.exists() {
                        std::fs::remove_dir_all(&to).map_err(|e| (to.clone(), e))?;
                    }
                    std::fs::rename(&dir, &to).map_err(|e| (dir, e))?;
                    crate::deleter::delete_dir_paced(to);
                    Ok(())
                })
                .await
                .map_err(|(dir, e)| Error::io("delete log", dir, e))
        })
        .await
    }

    /// Scrubs the whole log: walks every batch of every segment, checking headers, offsets and
    /// CRCs, and returns each corrupt spot found (at most one per segment: a walk cannot frame
    /// what follows a bad batch). Reads the whole log, so it is for tools and operators, not for
    /// every start.
    pub async fn verify(&self) -> Result<Vec<Error>> {
        let (segments, interval) = {
            let s = self.shared.state.borrow();
            s.check_readable()?;
            let mut v: Vec<(u64, u64)> = s.closed.iter().map(|c| (c.base, c.size)).collect();
            v.push((s.active.files.base, s.active.written.len));
            (v, s.config.index_interval_bytes)
        };
        let mut found = Vec::new();
        for (base, len) in segments {
            let paths = SegmentPaths::new(&self.shared.dir, base);
            let file = match dma::open_ro(&paths.log).await {
                Ok(f) => f,
                Err(_) if !paths.log.exists() => continue, // deleted by retention meanwhile
                Err(e) => return Err(e),
            };
            let mut cur = Cursor::new(file, paths.log.clone(), len, CHUNK_BYTES_MAX);
            let mut points = Vec::new();
            let w = segment::walk(
                &mut cur,
                base,
                WalkStart::origin(base),
                interval,
                &mut points,
                segment::OnDamage::Skip,
            )
            .await?;
            for h in w.holes {
                tracing::error!(segment = %paths.log.display(), position = h.pos, reason = %h.reason, "verify: corrupt batch (intact batches follow)");
                found.push(Error::Corrupt {
                    path: paths.log.clone(),
                    position: h.pos,
                    reason: h.reason,
                    resume_at: Some(Offset(h.next)),
                });
            }
            if let Some((pos, why)) = w.stop {
                tracing::error!(segment = %paths.log.display(), position = pos, %why, "verify: corrupt batch");
                found.push(Error::corrupt(&paths.log, pos, why));
            }
        }
        Ok(found)
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

    /// Number of segments, the active one included.
    pub fn segment_count(&self) -> usize {
        self.shared.state.borrow().closed.len() + 1
    }

    /// Base offsets of every segment, oldest first (the last is the active one).
    pub fn segment_bases(&self) -> Vec<Offset> {
        let s = self.shared.state.borrow();
        s.closed
            .iter()
            .map(|c| Offset(c.base))
            .chain([Offset(s.active.files.base)])
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
                s.status = Status::Closed;
            }
        }
        self.shared.release_lock_if_idle();
        self.shared.data.notify_all();
        self.shared.progress.notify_all();
    }
}

/// Creates `dir` and any missing parents, each made durable in its parent (fsync of the parent
/// after the create), so that a log whose first append was acknowledged cannot lose its
/// directory, or its topic's, to a crash.
async fn create_dir_durable(dir: &Path) -> Result<()> {
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.exists() {
        missing.push(at.to_path_buf());
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p,
            _ => break,
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create dir", dir, e))?;
    // Outermost first: each new directory's entry is synced in its parent.
    for created in missing.iter().rev() {
        if let Some(parent) = created.parent().filter(|p| !p.as_os_str().is_empty()) {
            dma::sync_dir(parent).await?;
        }
    }
    Ok(())
}

/// Name of the lock file in a log's directory.
pub const LOCK_FILE: &str = ".lock";

fn lock_dir(dir: &Path) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = dir.join(LOCK_FILE);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("open lock", &path, e))?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(Error::Locked { path });
        }
        return Err(Error::io("lock", &path, e));
    }
    Ok(f)
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

/// Assigns offsets and copies the batches into the pending write buffer.
fn stage(
    s: &mut State,
    batches: &[ValidBatch],
    epoch: Option<LeaderEpoch>,
    total: u64,
    now: i64,
) -> (AppendInfo, u64, u64) {
    let interval = u64::from(s.config.index_interval_bytes);
    let generation = s.generation;
    let a = &mut s.active;
    let base_offset = a.live().offset_end;
    if total == 0 {
        let info = AppendInfo {
            base_offset: Offset(base_offset),
            next_offset: Offset(base_offset),
            append_time: TimestampMs(now),
        };
        return (info, base_offset, generation);
    }
    if a.live().len == 0 {
        a.since_ms = now;
    }
    if a.pending.is_none() {
        let h = &a.handed;
        let buf = WriteBuf::new(&a.files.log, align_down(h.len), &h.tail, total as usize);
        let mark = Mark {
            tail: Vec::new(),
            ..h.clone()
        };
        a.pending = Some(Pending { buf, mark });
    }
    let p = a.pending.as_mut().expect("just set");
    let mut hdr = [0u8; BATCH_HEADER_BYTES];
    // With a reader at the end, the batches as stored go to the tail cache too.
    let tailing = s
        .tail_read_at
        .is_some_and(|t| t.elapsed() < tail::READER_TTL);
    let mut cached = BytesMut::with_capacity(if tailing { total as usize } else { 0 });
    for b in batches {
        let bytes = b.bytes();
        let (pos, off) = (p.mark.len, p.mark.offset_end);
        hdr.copy_from_slice(&bytes[..BATCH_HEADER_BYTES]);
        batch::set_base_offset(&mut hdr, Offset(off)).expect("header-sized");
        if let Some(e) = epoch {
            batch::set_leader_epoch(&mut hdr, e).expect("header-sized");
        }
        p.buf.push(&a.files.log, &hdr);
        p.buf.push(&a.files.log, &bytes[BATCH_HEADER_BYTES..]);
        if tailing {
            cached.extend_from_slice(&hdr);
            cached.extend_from_slice(&bytes[BATCH_HEADER_BYTES..]);
        }
        p.mark.len += bytes.len() as u64;
        p.mark.offset_end += b.offset_count();
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
    let end = p.mark.offset_end;
    let mut cached = cached.freeze();
    s.tail_from = base_offset;
    if !tailing {
        s.tail.clear();
    }
    let mut off = base_offset;
    for b in batches {
        s.producers.record(b.info(), off, now);
        if tailing {
            let bytes = cached.split_to(b.len());
            s.tail.push(off, off + b.offset_count(), bytes);
        }
        off += b.offset_count();
    }
    let info = AppendInfo {
        base_offset: Offset(base_offset),
        next_offset: Offset(end),
        append_time: TimestampMs(now),
    };
    (info, end, generation)
}

enum Plan {
    Empty,
    Load(Closed),
    Read(ReadPlan),
}

struct ReadPlan {
    file: Rc<DmaFile>,
    path: PathBuf,
    base: u64,
    /// Readable bytes of the segment.
    len: u64,
    /// The index point to start from (`None`: the segment's start).
    start: Option<IndexPoint>,
    truncations: u64,
    /// The first offset the segment may not hold: the next segment's base (`u64::MAX` for the
    /// active one). A closed segment whose batches run past it (damage) serves none of them:
    /// those offsets belong to the next segment, or are the log's to give.
    limit: u64,
}

/// The first offset segment `base` may not hold: the next segment's base.
fn segment_limit(s: &State, base: u64) -> u64 {
    s.closed
        .iter()
        .map(|c| c.base)
        .chain([s.active.files.base])
        .find(|&b| b > base)
        .unwrap_or(u64::MAX)
}

fn plan_read(s: &State, offset: u64) -> Result<Plan> {
    let start = s.start_offset();
    let end = s.active.live().offset_end;
    if offset < start || offset > end {
        return Err(s.out_of_range(offset));
    }
    let a = &s.active;
    if offset >= a.written.offset_end {
        return Ok(Plan::Empty);
    }
    if offset >= a.files.base {
        let rel = index::rel_for_lookup(offset, a.files.base);
        return Ok(Plan::Read(ReadPlan {
            file: a.files.log.clone(),
            path: a.files.paths.log.clone(),
            base: a.files.base,
            len: a.written.len,
            start: index::lookup_offset(&a.points[..a.written.points], rel),
            truncations: s.truncations,
            limit: u64::MAX,
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
    next_offset: u64,
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
    offset: u64,
    max_bytes: usize,
    preloaded: Option<Preloaded>,
) -> Result<Served> {
    let (mut pos, mut expected) = match plan.start {
        Some(p) => (u64::from(p.position), plan.base + u64::from(p.rel_offset)),
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
        expected = last + 1;
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
            .map(|h| h.base_offset.get())
            .unwrap_or(u64::MAX);
        let ok = match info {
            Ok(i) if base == expected && base + u64::from(i.last_offset_delta) >= plan.limit => {
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
                expected = base + u64::from(i.last_offset_delta) + 1;
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
async fn header_at(cur: &mut Cursor, pos: u64, expected: u64) -> Result<(u64, u64, u32)> {
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
    let base = batch::header(hdr).expect("checked").base_offset.get();
    if base != expected {
        return Err(Error::corrupt(
            &cur.path,
            pos,
            format!("batch base offset {base}, expected {expected}"),
        ));
    }
    Ok((
        base,
        base + u64::from(info.last_offset_delta),
        info.batch_len,
    ))
}

/// Walks `plan`'s segment from its start point to the first batch whose max timestamp reaches
/// `ts`, then decodes that batch to find the first record at or after `ts`.
async fn find_timestamp(plan: &ReadPlan, ts: i64) -> Result<Option<u64>> {
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
                    return Ok(Some(r.offset.0));
                }
            }
        }
        pos = f.pos + u64::from(f.len);
        expected = f.last_offset + 1;
    }
    Ok(None)
}

/// A closed segment's max timestamp from the last entry of its time index, rebuilding the
/// indexes if they are missing or inconsistent.
async fn closed_max_timestamp(
    paths: &SegmentPaths,
    base: u64,
    size: u64,
    interval: u32,
) -> Result<(i64, Vec<segment::Hole>)> {
    use crate::index::{OFFSET_ENTRY_BYTES, TIME_ENTRY_BYTES};
    if size == 0 {
        return Ok((i64::MIN, Vec::new()));
    }
    let isize = std::fs::metadata(&paths.index)
        .map(|m| m.len())
        .unwrap_or(0);
    let tsize = std::fs::metadata(&paths.time).map(|m| m.len()).unwrap_or(0);
    let n = tsize / TIME_ENTRY_BYTES as u64;
    if n > 0
        && tsize.is_multiple_of(TIME_ENTRY_BYTES as u64)
        && isize == n * OFFSET_ENTRY_BYTES as u64
    {
        let f = dma::open_ro(&paths.time).await?;
        let r = dma::read(
            &f,
            &paths.time,
            tsize - TIME_ENTRY_BYTES as u64,
            TIME_ENTRY_BYTES,
        )
        .await?;
        if r.len() == TIME_ENTRY_BYTES {
            return Ok((
                i64::from_le_bytes(r[..8].try_into().expect("8 bytes")),
                Vec::new(),
            ));
        }
    }
    tracing::warn!(segment = %paths.log.display(), "closed segment index missing or damaged; rebuilding");
    let r = segment::rebuild_closed_index(paths, base, interval).await?;
    Ok((r.max_timestamp, r.holes))
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
    /// Where reading can go on after the damaged batch at byte `position` of segment `base`: the
    /// end of a damaged range recovery found there, else the next index point of the segment
    /// past `position` (its batch is checked when read), else the next segment's base. `None`
    /// when nothing is known to follow.
    fn resume_after(&self, base: u64, position: u64) -> Option<u64> {
        let s = self.state.borrow();
        if let Some(r) = s
            .damage
            .iter()
            .find(|r| r.segment_base.0 == base && r.position == position)
        {
            return Some(r.next.0);
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
            return Some(base + u64::from(p.rel_offset));
        }
        s.closed
            .iter()
            .map(|c| c.base)
            .chain([s.active.files.base])
            .find(|&b| b > base)
    }

    /// The read-ahead of the batch at `offset` in `plan`'s segment, if one was started.
    fn take_readahead(&self, plan: &ReadPlan, offset: u64) -> Option<ReadAhead> {
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

    /// Releases the directory lock once the handle is dropped and no I/O is in flight.
    fn release_lock_if_idle(&self) {
        let idle = {
            let s = self.state.borrow();
            s.handle_dropped && !s.flushing && s.syncs_in_flight == 0 && !s.exclusive
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
                    && s.syncs_in_flight == 0
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

    /// Starts the flusher task unless it is running.
    fn kick(this: &Rc<Shared>) {
        {
            let mut s = this.state.borrow_mut();
            if s.flushing {
                return;
            }
            s.flushing = true;
        }
        glommio::spawn_local(Shared::flusher(this.clone())).detach();
    }

    /// The group-commit loop: takes everything staged, writes it (log and index blocks at once),
    /// then starts its fdatasync (if the policy says so) and goes on to write the next group
    /// while that fdatasync runs. Up to [`SYNCS_IN_FLIGHT_MAX`] fdatasyncs overlap with writes;
    /// each covers every write completed before it was issued, so the durable end only moves
    /// forward, to the end of the latest group whose fdatasync completed.
    async fn flusher(this: Rc<Shared>) {
        loop {
            let listen = this.progress.listen();
            let job = {
                let mut s = this.state.borrow_mut();
                if s.syncs_in_flight >= SYNCS_IN_FLIGHT_MAX {
                    None
                } else {
                    match this.take_job(&mut s) {
                        Some(j) => Some(j),
                        None => {
                            s.flushing = false;
                            drop(s);
                            this.progress.notify_all();
                            this.release_lock_if_idle();
                            return;
                        }
                    }
                }
            };
            let Some(mut job) = job else {
                listen.await;
                continue;
            };
            let res = write_job(&mut job).await;
            let mut cleanup = None;
            {
                let mut s = this.state.borrow_mut();
                match res {
                    Ok(()) => {
                        s.active.written = job.mark.clone();
                        if job.index.is_some() {
                            s.active.points_on_disk = s.active.points_on_disk.max(job.mark.points);
                        }
                        s.unsynced = s.durable_end < job.mark.offset_end;
                        if job.sync {
                            s.syncs_in_flight += 1;
                            s.sync_issued_end = job.mark.offset_end;
                            s.last_sync = Instant::now();
                            let (sh, files, end) =
                                (this.clone(), job.files.clone(), job.mark.offset_end);
                            glommio::spawn_local(Shared::sync(sh, files, end)).detach();
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "log write failed; discarding unwritten appends");
                        s.discard(e);
                        cleanup = Some((s.active.files.clone(), s.active.written.len));
                    }
                }
            }
            this.data.notify_all();
            this.progress.notify_all();
            if let Some((files, len)) = cleanup {
                // Cut what the failed write may have left past the last good byte, so it can
                // never be mistaken for data after a later crash.
                if let Err(e) = dma::truncate(&files.log, &files.paths.log, len).await {
                    this.state.borrow_mut().status = Status::Failed(e);
                }
            }
            Shared::arm_sync_timer(&this);
        }
    }

    /// One fdatasync covering every write completed before it; moves the durable end to `end`.
    async fn sync(this: Rc<Shared>, files: ActiveFiles, end: u64) {
        let res = dma::fdatasync(&files.log, &files.paths.log).await;
        {
            let mut s = this.state.borrow_mut();
            s.syncs_in_flight -= 1;
            match res {
                Ok(()) => {
                    s.durable_end = s.durable_end.max(end);
                    s.unsynced = s.durable_end < s.active.written.offset_end;
                }
                Err(e) => {
                    // What reached the disk is unknown: stop taking appends; reopening recovers
                    // from what is there.
                    tracing::error!(error = %e, "fdatasync failed; the log stops taking appends");
                    s.discard(e.clone());
                    s.status = Status::Failed(e);
                }
            }
        }
        this.data.notify_all();
        this.progress.notify_all();
        this.release_lock_if_idle();
    }

    fn take_job(&self, s: &mut State) -> Option<Job> {
        if !matches!(s.status, Status::Open) {
            return None;
        }
        let sync_due = match s.config.flush {
            FlushPolicy::Sync => true,
            FlushPolicy::IntervalMs(ms) => {
                s.sync_requested || s.last_sync.elapsed() >= Duration::from_millis(ms)
            }
        };
        let sync_needed = s.sync_issued_end < s.active.written.offset_end;
        let a = &mut s.active;
        let pending = a.pending.take();
        if pending.is_none() && !(sync_needed && sync_due) {
            return None;
        }
        if sync_due {
            s.sync_requested = false;
        }
        // From the first point not yet in the files (after recovery, points rebuilt by the walk
        // are written with the next group).
        let index_from = a.points_on_disk.min(a.handed.points);
        let (log, mark) = match pending {
            Some(p) => {
                let mut mark = p.mark;
                mark.tail = p.buf.tail();
                (Some(p.buf), mark)
            }
            None => (None, a.handed.clone()),
        };
        let index = (mark.points >= index_from + INDEX_POINTS_PER_WRITE)
            .then(|| segment::index_bytes(&a.points, index_from, mark.points));
        a.handed = mark.clone();
        Some(Job {
            files: a.files.clone(),
            log,
            index,
            index_from,
            mark,
            sync: sync_due,
        })
    }

    /// Under `IntervalMs`, makes sure an fdatasync happens within the interval of the first
    /// unsynced write, even if no further append comes.
    fn arm_sync_timer(this: &Rc<Shared>) {
        let delay = {
            let mut s = this.state.borrow_mut();
            let FlushPolicy::IntervalMs(ms) = s.config.flush else {
                return;
            };
            if !s.unsynced || s.sync_timer_armed || !matches!(s.status, Status::Open) {
                return;
            }
            s.sync_timer_armed = true;
            Duration::from_millis(ms).saturating_sub(s.last_sync.elapsed())
        };
        let weak: Weak<Shared> = Rc::downgrade(this);
        glommio::spawn_local(async move {
            glommio::timer::sleep(delay).await;
            if let Some(sh) = weak.upgrade() {
                {
                    let mut s = sh.state.borrow_mut();
                    s.sync_timer_armed = false;
                    s.sync_requested = true;
                }
                Shared::kick(&sh);
            }
        })
        .detach();
    }

    /// Loads a closed segment's index and opens its log for reading, into the log's small cache
    /// of closed segments (the oldest entry makes room).
    async fn load_cache(&self, c: Closed) -> Result<()> {
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

    /// Seals the active segment (roll point, exact file lengths, fdatasync) and opens a new one
    /// at the end offset. Caller holds the exclusive guard.
    async fn roll_locked(&self) -> Result<bool> {
        let (files, mark, mut points, on_disk, interval) = {
            let s = self.state.borrow();
            s.check_open()?;
            let a = &s.active;
            if a.written.len == 0 {
                return Ok(false);
            }
            let pts = a.points[..a.written.points].to_vec();
            (
                a.files.clone(),
                a.written.clone(),
                pts,
                a.points_on_disk,
                s.config.index_interval_bytes,
            )
        };
        self.seal(&files, &mark, &mut points, on_disk).await?;
        // The new segment's producer snapshot is durable before the segment exists, and the
        // segment's directory entry before anything is appended to it: open takes the last
        // segment as the active one and rebuilds producer state from its snapshot, so a crash
        // at any point here leaves either the old segment active (its own snapshot and batches
        // give the state) or the new one with its snapshot. Without the order, a crash could
        // leave a new, empty active segment with no snapshot, the producers' state would be
        // lost, and a retried batch whose first answer was lost would be written twice.
        // Nothing is staged under the exclusive lock, so this is the state at the new base.
        let snapshot = self.state.borrow().producers.encode();
        segment::write_producers(&self.dir, mark.offset_end, snapshot).await?;
        dma::sync_dir(&self.dir).await?;
        let rec = segment::recover_active(&self.dir, mark.offset_end, interval).await?;
        dma::sync_dir(&self.dir).await?;
        {
            let mut s = self.state.borrow_mut();
            s.closed.push(Closed {
                base: files.base,
                size: mark.len,
                max_timestamp: mark.max_timestamp,
            });
            s.active = Active::from_recovered(rec, now_ms());
        }
        tracing::debug!(dir = %self.dir.display(), base = mark.offset_end, "rolled to a new segment");
        Ok(true)
    }

    /// Makes the active segment's files exact and durable: the last batch becomes an index
    /// point, the index files get every point, and all three files are cut to their exact length
    /// and fdatasynced.
    async fn seal(
        &self,
        files: &ActiveFiles,
        mark: &Mark,
        points: &mut Vec<IndexPoint>,
        on_disk: usize,
    ) -> Result<()> {
        if let Some((pos, base_offset)) = mark.last_batch {
            if points.last().is_none_or(|p| u64::from(p.position) != pos) {
                if let Some(point) =
                    IndexPoint::new(files.base, base_offset, pos, mark.max_timestamp)
                {
                    points.push(point);
                }
            }
        }
        let p = &files.paths;
        segment::write_index(
            [(&files.index, &p.index), (&files.time, &p.time)],
            points,
            on_disk.min(points.len()),
            points.len(),
            true,
        )
        .await?;
        dma::truncate(&files.log, &p.log, mark.len).await?;
        dma::fdatasync(&files.log, &p.log).await?;
        dma::fdatasync(&files.index, &p.index).await?;
        dma::fdatasync(&files.time, &p.time).await?;
        Ok(())
    }

    async fn close_locked(&self) -> Result<()> {
        let (files, mark, mut points, on_disk) = {
            let s = self.state.borrow();
            let a = &s.active;
            (
                a.files.clone(),
                a.written.clone(),
                a.points[..a.written.points].to_vec(),
                a.points_on_disk,
            )
        };
        let res = self.seal(&files, &mark, &mut points, on_disk).await;
        if res.is_ok() {
            // The state at the end, so that the next open need not read the segment's batches.
            // Without it (a failed write, or a rename a crash undid) open reads them.
            let snapshot = self.state.borrow().producers.encode();
            if let Err(e) = segment::write_producers(&self.dir, mark.offset_end, snapshot).await {
                tracing::warn!(dir = %self.dir.display(), error = %e, "producer snapshot at close not written");
            }
        }
        {
            let mut s = self.state.borrow_mut();
            if res.is_ok() {
                s.durable_end = mark.offset_end;
            }
            s.status = Status::Closed;
            s.cache.clear();
            s.tail.clear();
        }
        self.readaheads.borrow_mut().clear();
        self.lock.borrow_mut().take();
        self.data.notify_all();
        self.progress.notify_all();
        res
    }

    /// Whether retention would delete a segment now (and expires idle producers' state).
    fn retention_due(&self, now: i64) -> Result<bool> {
        let mut s = self.state.borrow_mut();
        s.check_open()?;
        s.producers.expire(now);
        Ok(retention_count(&s, now) > 0)
    }

    /// Takes the closed segments that retention deletes out of the log (under the log's lock).
    /// Called after `retention_due` with the same `now`, which already expired producers.
    fn retention_victims(&self, now: i64) -> Result<Vec<Closed>> {
        let mut s = self.state.borrow_mut();
        s.check_open()?;
        let n = retention_count(&s, now);
        let victims: Vec<Closed> = s.closed.drain(..n).collect();
        s.cache
            .retain(|c| !victims.iter().any(|v| v.base == c.base));
        s.damage
            .retain(|r| !victims.iter().any(|v| v.base == r.segment_base.0));
        Ok(victims)
    }

    /// Deletes the files of segments already taken out of the log (`retention_victims`). A
    /// reader that planned a read in one of them before keeps its open file; one that has to
    /// open it finds it gone, as it would a moment later anyway.
    async fn delete_segments(&self, victims: Vec<Closed>) -> Result<RetentionReport> {
        let mut report = RetentionReport::default();
        for v in &victims {
            report.deleted_segments.push(Offset(v.base));
            report.deleted_bytes += v.size;
        }
        if !victims.is_empty() {
            segment::delete_files(&self.dir, victims.iter().map(|v| v.base).collect()).await?;
        }
        report.start_offset = Offset(self.state.borrow().start_offset());
        if !victims.is_empty() {
            tracing::info!(
                dir = %self.dir.display(),
                segments = victims.len(),
                bytes = report.deleted_bytes,
                start = report.start_offset.0,
                "retention deleted segments"
            );
        }
        Ok(report)
    }

    async fn truncate_locked(&self, offset: u64) -> Result<Offset> {
        let (end, seg) = {
            let s = self.state.borrow();
            s.check_open()?;
            let end = s.active.written.offset_end;
            if offset >= end {
                return Ok(Offset(end));
            }
            if offset < s.start_offset() {
                return Err(s.out_of_range(offset));
            }
            let seg = if offset >= s.active.files.base {
                None
            } else {
                Some(s.closed[s.closed.partition_point(|c| c.base <= offset) - 1])
            };
            (end, seg)
        };
        // Where the batch holding `offset` starts, in the segment that will become active.
        let (base, points, plan_file, len) = match seg {
            None => {
                let s = self.state.borrow();
                let a = &s.active;
                (
                    a.files.base,
                    a.points[..a.written.points].to_vec(),
                    a.files.log.clone(),
                    a.written.len,
                )
            }
            Some(c) => {
                let interval = self.state.borrow().config.index_interval_bytes;
                let paths = SegmentPaths::new(&self.dir, c.base);
                let (pts, _) = segment::load_closed_index(&paths, c.base, c.size, interval).await?;
                (c.base, pts, dma::open_ro(&paths.log).await?, c.size)
            }
        };
        let paths = SegmentPaths::new(&self.dir, base);
        let start = index::lookup_offset(&points, index::rel_for_lookup(offset, base))
            .map_or(WalkStart::origin(base), |p| WalkStart::at_point(base, &p));
        let mut cur = Cursor::new(plan_file, paths.log.clone(), len, CHUNK_BYTES_MAX);
        let (mut pos, mut expected) = (start.pos, start.offset);
        loop {
            let f = segment::check_batch(&mut cur, pos, expected)
                .await?
                .map_err(|(p, why)| Error::corrupt(&paths.log, p, why))?;
            if f.last_offset >= offset {
                break;
            }
            pos = f.pos + u64::from(f.len);
            expected = f.last_offset + 1;
        }
        let new_end = expected;
        let keep_points = points
            .iter()
            .take_while(|p| u64::from(p.position) < pos)
            .count();
        tracing::info!(dir = %self.dir.display(), from = end, to = new_end, "truncating log");
        let (doomed, interval) = {
            let mut s = self.state.borrow_mut();
            s.truncating = true;
            s.truncations += 1;
            s.discard(Error::Discarded(format!("log truncated to {new_end}")));
            s.cache.clear();
            s.tail.clear();
            self.readaheads.borrow_mut().clear();
            let mut doomed: Vec<u64> = s
                .closed
                .iter()
                .filter(|c| c.base > base)
                .map(|c| c.base)
                .collect();
            if s.active.files.base != base {
                doomed.push(s.active.files.base);
            }
            (doomed, s.config.index_interval_bytes)
        };
        // Snapshots above the new end go first, so that none is ever taken for the log grown
        // back to its offset.
        let res = match segment::remove_producers_above(&self.dir, new_end).await {
            Ok(()) => {
                self.truncate_files(base, &doomed, pos, keep_points, interval)
                    .await
            }
            Err(e) => Err(e),
        };
        let mut s = self.state.borrow_mut();
        s.truncating = false;
        s.truncations += 1;
        let out = match res {
            Ok(rec) => {
                s.closed.retain(|c| c.base < base);
                s.damage.retain(|r| {
                    r.segment_base.0 < base || (r.segment_base.0 == base && r.position < pos)
                });
                s.producers.forget_from(new_end);
                s.active = Active::from_recovered(rec, now_ms());
                s.durable_end = s.active.written.offset_end;
                s.sync_issued_end = s.durable_end;
                Ok(Offset(s.active.written.offset_end))
            }
            Err(e) => {
                s.status = Status::Failed(e.clone());
                Err(e)
            }
        };
        drop(s);
        self.data.notify_all();
        self.progress.notify_all();
        out
    }

    /// Removes segments `doomed` (newest first, so a crash leaves a shorter but consistent log),
    /// cuts segment `base` at `pos` with its first `keep_points` index points, and reopens it as
    /// the active segment.
    async fn truncate_files(
        &self,
        base: u64,
        doomed: &[u64],
        pos: u64,
        keep_points: usize,
        interval: u32,
    ) -> Result<Recovered> {
        if !doomed.is_empty() {
            segment::delete_files(&self.dir, doomed.iter().rev().copied().collect()).await?;
        }
        let p = SegmentPaths::new(&self.dir, base);
        let sizes = [
            crate::index::OFFSET_ENTRY_BYTES,
            crate::index::TIME_ENTRY_BYTES,
        ];
        for (path, size) in [&p.index, &p.time].into_iter().zip(sizes) {
            let f = dma::open_rw(path, true).await?;
            let want = (keep_points * size) as u64;
            if dma::file_size(&f, path).await? > want {
                dma::truncate(&f, path, want).await?;
                dma::fdatasync(&f, path).await?;
            }
        }
        let log = dma::open_rw(&p.log, false).await?;
        dma::truncate(&log, &p.log, pos).await?;
        dma::fdatasync(&log, &p.log).await?;
        segment::recover_active(&self.dir, base, interval).await
    }
}

/// How many closed segments, from the oldest, retention deletes at `now`: those older than
/// `retention_ms` (by their max timestamp) or whose removal leaves the log at least
/// `retention_bytes`.
fn retention_count(s: &State, now: i64) -> usize {
    let (rms, rbytes) = (s.config.retention_ms, s.config.retention_bytes);
    let mut total: i64 =
        (s.closed.iter().map(|c| c.size).sum::<u64>() + s.active.written.len) as i64;
    let mut n = 0;
    for c in &s.closed {
        let by_time = rms >= 0 && c.max_timestamp < now.saturating_sub(rms);
        let by_size = rbytes >= 0 && total - c.size as i64 >= rbytes;
        if !(by_time || by_size) {
            break;
        }
        total -= c.size as i64;
        n += 1;
    }
    n
}

/// Writes one flush job: the log write and the index writes in flight together.
async fn write_job(job: &mut Job) -> Result<()> {
    let f = &job.files;
    let log_buf = job.log.take();
    let log_fut = async {
        match log_buf {
            Some(buf) => buf.write(&f.log, &f.paths.log).await,
            None => Ok(()),
        }
    };
    let index_fut = async {
        if let Some(parts) = &job.index {
            let sizes = [
                crate::index::OFFSET_ENTRY_BYTES,
                crate::index::TIME_ENTRY_BYTES,
            ];
            let targets = [(&f.index, &f.paths.index), (&f.time, &f.paths.time)];
            for (((file, path), (pos, bytes)), size) in targets.into_iter().zip(parts).zip(sizes) {
                // The bytes before entry `index_from` in its block are on disk already.
                let tail_len = (job.index_from * size) as u64 - pos;
                let (tail, rest) = bytes.split_at(tail_len as usize);
                let mut wb = WriteBuf::new(file, *pos, tail, bytes.len());
                wb.push(file, rest);
                wb.write(file, path).await?;
            }
        }
        Ok::<(), Error>(())
    };
    let (a, b) = futures_lite::future::zip(log_fut, index_fut).await;
    a?;
    b
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
