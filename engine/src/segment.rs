//! One segment: `<base offset, 20 digits>.log` with its `.index` and `.timeindex`. Walking the
//! batches of a segment (recovery, index rebuild, reads), and opening the active segment.

use crate::dma::{self, align_down, WriteBuf, BLOCK, CHUNK_BYTES_MAX};
use crate::error::{Error, Result};
use crate::index::{self, IndexPoint, OFFSET_ENTRY_BYTES, TIME_ENTRY_BYTES};
use crate::offset::OffsetExt;
use glommio::io::{DmaFile, ReadResult};
use quiver_proto::batch::{self, BatchLimits, BATCH_HEADER_BYTES};
use quiver_proto::Offset;
use std::path::{Path, PathBuf};
use std::rc::Rc;

pub(crate) use crate::names::{file_name, parse_file_name, SegmentPaths, LOG_EXT};

/// What segment files being deleted are renamed to first (`<name>.deleted`). Open removes any
/// it finds.
pub(crate) const DELETED_SUFFIX: &str = ".deleted";

/// `path` with `suffix` appended to its last component (`00…0.log` -> `00…0.log.deleted`).
pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// fsyncs directory `dir` from a blocking context (glommio's blocking pool); on the core,
/// `dma::sync_dir`.
fn sync_dir_blocking(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync dir", dir, e))
}

/// Deletes the files of segments `bases` in `dir`. Here they are renamed to `<name>.deleted` and
/// the directory is synced, so the log no longer has them, and a crash from then on leaves only
/// `.deleted` files, which open removes; the process's deleter thread (`crate::deleter`) frees
/// their space afterwards, paced so that the other logs' fdatasyncs do not wait on it. The
/// renames run on glommio's blocking pool, off the core.
pub(crate) async fn delete_files(dir: &Path, bases: Vec<Offset>) -> Result<()> {
    let dir = dir.to_path_buf();
    let renamed = glommio::executor()
        .spawn_blocking(move || rename_for_deletion(&dir, &bases))
        .await?;
    crate::deleter::submit(renamed);
    Ok(())
}

/// Renames each existing file of `bases`, in that order, to `<name>.deleted`, syncs `dir`, and
/// returns the new names.
fn rename_for_deletion(dir: &Path, bases: &[Offset]) -> Result<Vec<PathBuf>> {
    let mut renamed = Vec::with_capacity(bases.len() * 3);
    for &base in bases {
        let p = SegmentPaths::new(dir, base);
        // The log first: index files and snapshots left behind are removed at open.
        let snapshot = dir.join(file_name(base, PRODUCERS_EXT));
        for path in [p.log, p.index, p.time, snapshot] {
            let to = with_suffix(&path, DELETED_SUFFIX);
            match std::fs::rename(&path, &to) {
                Ok(()) => renamed.push(to),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("rename segment", &path, e)),
            }
        }
    }
    sync_dir_blocking(dir)?;
    Ok(renamed)
}

/// A producer-state snapshot, `<offset>.producers`: the producers' state at that offset. Roll
/// writes one at each new segment's base, before the segment itself, and it stays with its
/// segment until retention or truncation deletes both (so a log truncated back into a closed
/// segment still has that segment's snapshot); a clean close writes one at the log's end, so
/// that the next open need not read the active segment's batch headers to rebuild the state. A
/// snapshot at offset O stays true while the log never goes below O, so truncation removes the
/// snapshots above its new end before it cuts anything (`remove_producers_above`).
pub(crate) const PRODUCERS_EXT: &str = "producers";

/// The offsets of the producer snapshots in `dir`.
pub(crate) fn producer_snapshots(dir: &Path) -> Result<Vec<Offset>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io("list dir", dir, e))? {
        let entry = entry.map_err(|e| Error::io("list dir", dir, e))?;
        let name = entry.file_name();
        if let Some((offset, PRODUCERS_EXT)) = parse_file_name(&name.to_string_lossy()) {
            out.push(offset);
        }
    }
    Ok(out)
}

/// Removes the producer snapshots above `offset`, durably (the directory is synced), off the
/// core.
pub(crate) async fn remove_producers_above(dir: &Path, offset: Offset) -> Result<()> {
    let dir = dir.to_path_buf();
    glommio::executor()
        .spawn_blocking(move || {
            let above: Vec<Offset> = producer_snapshots(&dir)?
                .into_iter()
                .filter(|&o| o > offset)
                .collect();
            if above.is_empty() {
                return Ok(());
            }
            for o in above {
                let path = dir.join(file_name(o, PRODUCERS_EXT));
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("remove producer snapshot", &path, e)),
                }
            }
            sync_dir_blocking(&dir)
        })
        .await
}

/// Writes the producer snapshot at `offset` (temp file, fsync, rename; a caller that needs the
/// rename to survive a crash syncs the directory), off the core.
pub(crate) async fn write_producers(dir: &Path, offset: Offset, bytes: Vec<u8>) -> Result<()> {
    let path = dir.join(file_name(offset, PRODUCERS_EXT));
    glommio::executor()
        .spawn_blocking(move || {
            use std::io::Write;
            let tmp = with_suffix(&path, ".tmp");
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })
        .await
        .map_err(|e| Error::io("write producer snapshot", dir, e))
}

/// The producer snapshot at `offset`, if there is one.
pub(crate) async fn read_producers(dir: &Path, offset: Offset) -> Result<Option<Vec<u8>>> {
    let path = dir.join(file_name(offset, PRODUCERS_EXT));
    glommio::executor()
        .spawn_blocking(move || match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read producer snapshot", path, e)),
        })
        .await
}

/// Calls `f` with the header and base offset of every batch in `[0, end)` of a segment log
/// already recovered, reading in windows of 64 KiB: a large batch costs one small read for its
/// header, not a read of its records. `holes` (damage recovery found, with intact batches after)
/// are stepped over. Damage recovery did not see (before the last index point, which recovery
/// does not re-read: a bad header, or a base offset that breaks the density of offsets from
/// `base`) is skipped to the next intact batch ([`next_intact`]) with a warning, or ends the
/// walk if nothing intact follows; the log still opens. Only batches at the offsets they must
/// have are given to `f`.
pub(crate) async fn walk_headers(
    file: &Rc<DmaFile>,
    path: &Path,
    base: Offset,
    end: u64,
    holes: &[Hole],
    mut f: impl FnMut(&batch::BatchInfo, Offset),
) -> Result<()> {
    let mut cur = Cursor::new(file.clone(), path.to_path_buf(), end, 64 * 1024);
    let (mut pos, mut expected) = (0u64, base);
    while pos < end {
        if let Some(h) = holes.iter().find(|h| h.pos == pos) {
            (pos, expected) = (h.end, h.next);
            continue;
        }
        let info = if cur.ensure(pos, BATCH_HEADER_BYTES).await? {
            let hdr = cur.slice(pos, BATCH_HEADER_BYTES);
            batch::validate_header(hdr, BatchLimits::default())
                .map_err(|e| e.to_string())
                .and_then(|info| {
                    let at = Offset(batch::header(hdr).expect("checked").base_offset.get());
                    if at == expected {
                        Ok(info)
                    } else {
                        Err(format!("batch base offset {at}, expected {expected}"))
                    }
                })
        } else {
            Err("partial batch header".to_string())
        };
        match info {
            Ok(info) => {
                f(&info, expected);
                pos += u64::from(info.batch_len);
                expected = expected.plus(u64::from(info.last_offset_delta) + 1);
            }
            Err(why) => {
                // Go on from the next intact batch, so producers seen after the damage keep
                // their state (without it, a retry of one of their batches could be written
                // twice); what the damaged range held is unknown.
                match next_intact(&mut cur, pos, expected, false).await? {
                    Some(next) => {
                        tracing::warn!(segment = %path.display(), position = pos, resumed_at = next.pos, %why, "damaged batch while rebuilding producer state; skipped to the next intact batch");
                        (pos, expected) = (next.pos, next.base_offset);
                    }
                    None => {
                        tracing::warn!(segment = %path.display(), position = pos, %why, "damaged batch while rebuilding producer state; producers seen only after it start over");
                        break;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Reads a segment's bytes through a window: sequential walks cost one large read per window,
/// not one per batch.
pub(crate) struct Cursor {
    pub file: Rc<DmaFile>,
    pub path: PathBuf,
    /// Bytes of the segment that may be read (the logical length, not the padded file size).
    pub end: u64,
    window: usize,
    buf: Option<ReadResult>,
    buf_pos: u64,
}

impl Cursor {
    pub(crate) fn new(file: Rc<DmaFile>, path: PathBuf, end: u64, window: usize) -> Cursor {
        Cursor {
            file,
            path,
            end,
            window: window.max(BLOCK),
            buf: None,
            buf_pos: 0,
        }
    }

    /// Makes `[pos, pos + len)` resident; `false` if it runs past `end` (or the file is shorter).
    pub(crate) async fn ensure(&mut self, pos: u64, len: usize) -> Result<bool> {
        if pos + len as u64 > self.end {
            return Ok(false);
        }
        if let Some(b) = &self.buf {
            if pos >= self.buf_pos && pos + len as u64 <= self.buf_pos + b.len() as u64 {
                return Ok(true);
            }
        }
        let want = ((self.end - pos) as usize).min(len.max(self.window));
        self.buf = None; // release the old window before taking a new one
        let r = dma::read(&self.file, &self.path, pos, want).await?;
        let got = r.len();
        self.buf = Some(r);
        self.buf_pos = pos;
        Ok(got >= len)
    }

    /// Makes `buf`, the segment's bytes from `pos`, resident (bytes read ahead).
    pub(crate) fn preload(&mut self, pos: u64, buf: ReadResult) {
        self.buf = Some(buf);
        self.buf_pos = pos;
    }

    /// Bytes made resident by the last successful `ensure`.
    pub(crate) fn slice(&self, pos: u64, len: usize) -> &[u8] {
        let b = self.buf.as_ref().expect("ensure() first");
        let at = (pos - self.buf_pos) as usize;
        &b[at..at + len]
    }
}

/// One batch found by a walk.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Found {
    pub pos: u64,
    pub len: u32,
    pub base_offset: Offset,
    pub last_offset: Offset,
    pub max_timestamp: i64,
}

/// Why a walk stopped before the end.
pub(crate) type Stop = (u64, String);

/// Reads and fully checks the batch at `pos`: a whole header that passes sanity checks, the
/// expected base offset (offsets are dense, so a stale or shifted batch is caught even though the
/// base offset is not under the CRC), the whole batch present, and its CRC.
pub(crate) async fn check_batch(
    cur: &mut Cursor,
    pos: u64,
    expected_offset: Offset,
) -> Result<Result<Found, Stop>> {
    if !cur.ensure(pos, BATCH_HEADER_BYTES).await? {
        return Ok(Err((pos, "partial batch header".into())));
    }
    let info =
        match batch::validate_header(cur.slice(pos, BATCH_HEADER_BYTES), BatchLimits::default()) {
            Ok(i) => i,
            Err(e) => return Ok(Err((pos, format!("bad batch header: {e}")))),
        };
    let hdr = batch::header(cur.slice(pos, BATCH_HEADER_BYTES)).expect("checked");
    let base_offset = Offset(hdr.base_offset.get());
    if base_offset != expected_offset {
        return Ok(Err((
            pos,
            format!("batch base offset {base_offset}, expected {expected_offset}"),
        )));
    }
    let len = info.batch_len as usize;
    if !cur.ensure(pos, len).await? {
        return Ok(Err((pos, format!("partial batch: {len} bytes announced"))));
    }
    if let Err(e) = batch::validate(cur.slice(pos, len), BatchLimits::default()) {
        return Ok(Err((pos, e.to_string())));
    }
    Ok(Ok(Found {
        pos,
        len: info.batch_len,
        base_offset,
        last_offset: base_offset.plus(u64::from(info.last_offset_delta)),
        max_timestamp: info.max_timestamp.0,
    }))
}

/// Where a walk starts, and the index state there.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WalkStart {
    pub pos: u64,
    pub offset: Offset,
    /// Running max timestamp of every batch before `pos` (i64::MIN if none).
    pub max_timestamp: i64,
    /// Position of the last index point at or before `pos` (0 if none).
    pub last_index_pos: u64,
}

impl WalkStart {
    pub(crate) fn at_point(base: Offset, p: &IndexPoint) -> WalkStart {
        WalkStart {
            pos: u64::from(p.position),
            offset: p.offset(base),
            max_timestamp: p.max_timestamp,
            last_index_pos: u64::from(p.position),
        }
    }

    pub(crate) fn origin(base: Offset) -> WalkStart {
        WalkStart {
            pos: 0,
            offset: base,
            max_timestamp: i64::MIN,
            last_index_pos: 0,
        }
    }
}

/// A damaged range inside a segment with intact batches after it (see "Recovery and corruption
/// policy" in lib.rs): bytes `[pos, end)` hold no batch that checks, and offsets
/// `[first, next)` are unreadable; the batch at `end` starts at offset `next`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Hole {
    pub pos: u64,
    pub end: u64,
    pub first: Offset,
    pub next: Offset,
    pub reason: String,
}

/// What a walk does at a batch that fails its check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OnDamage {
    /// Stop there (the caller decides what the rest is).
    Stop,
    /// Look for the next intact batch and go on from it, recording a [`Hole`]. For sealed
    /// segments, whose every byte was fdatasynced: damage there is corruption.
    Skip,
    /// As `Skip`, but damage that looks like a write the device never finished (a whole 4 KiB
    /// block of zeros inside it) ends the walk instead: for the active segment, where a crash
    /// during a write leaves exactly that, and what follows it was never acknowledged.
    SkipUnlessTorn,
}

/// The result of a validating walk over `[start.pos, cur.end)`.
#[derive(Clone, Debug)]
pub(crate) struct Walk {
    /// End of the last good batch.
    pub valid_len: u64,
    pub next_offset: Offset,
    pub max_timestamp: i64,
    pub last_batch: Option<Found>,
    pub last_index_pos: u64,
    /// Damaged ranges skipped (only with `OnDamage::Skip*`).
    pub holes: Vec<Hole>,
    pub stop: Option<Stop>,
}

/// Walks and checks every batch from `start` to the end of `cur`, appending index points every
/// `interval` bytes to `points` (and one at the first intact batch after each hole, so lookups
/// past a hole start beyond it). At a batch that fails [`check_batch`] it stops, or skips to the
/// next intact batch as `on_damage` says.
pub(crate) async fn walk(
    cur: &mut Cursor,
    base: Offset,
    start: WalkStart,
    interval: u32,
    points: &mut Vec<IndexPoint>,
    on_damage: OnDamage,
) -> Result<Walk> {
    let mut w = Walk {
        valid_len: start.pos,
        next_offset: start.offset,
        max_timestamp: start.max_timestamp,
        last_batch: None,
        last_index_pos: start.last_index_pos,
        holes: Vec::new(),
        stop: None,
    };
    let mut force_point = false;
    while w.valid_len < cur.end {
        let found = match check_batch(cur, w.valid_len, w.next_offset).await? {
            Ok(f) => f,
            Err(stop) => {
                if on_damage != OnDamage::Stop {
                    let torn_ends = on_damage == OnDamage::SkipUnlessTorn;
                    if let Some(f) = next_intact(cur, stop.0, w.next_offset, torn_ends).await? {
                        w.holes.push(Hole {
                            pos: stop.0,
                            end: f.pos,
                            first: w.next_offset,
                            next: f.base_offset,
                            reason: stop.1,
                        });
                        w.valid_len = f.pos;
                        w.next_offset = f.base_offset;
                        force_point = true;
                        continue;
                    }
                }
                w.stop = Some(stop);
                break;
            }
        };
        // A batch the index cannot address is not one this engine wrote (it rolls first).
        let Some(point) = IndexPoint::new(
            base,
            found.base_offset,
            found.pos,
            w.max_timestamp.max(found.max_timestamp),
        )
        .filter(|_| found.last_offset.since(base) <= crate::index::SEGMENT_OFFSETS_MAX) else {
            w.stop = Some((
                found.pos,
                "batch beyond what the segment's index can address".into(),
            ));
            break;
        };
        w.max_timestamp = point.max_timestamp;
        if force_point || found.pos - w.last_index_pos >= u64::from(interval) {
            points.push(point);
            w.last_index_pos = found.pos;
            force_point = false;
        }
        w.valid_len = found.pos + u64::from(found.len);
        w.next_offset = found.last_offset.plus(1);
        w.last_batch = Some(found);
    }
    Ok(w)
}

/// The first intact batch after the damaged one at `from`: a header that looks like one of ours
/// with a base offset at or past `expected`, whose whole batch passes [`check_batch`], and whose
/// base offset (outside the CRC) is confirmed by the batch after it or, for the last batch of the
/// segment, is within one offset per byte skipped. `None` if there is none, or (with
/// `torn_ends`) if the damage holds a whole 4 KiB block of zeros: the shape a crash leaves when a
/// write reached the device only in part, whose batches were never acknowledged.
///
/// Scans byte by byte with a cheap header filter first; only candidates are CRC-checked. Runs
/// only on damage, so its cost (one pass over the rest of the segment at worst) is paid rarely.
pub(crate) async fn next_intact(
    cur: &mut Cursor,
    from: u64,
    expected: Offset,
    torn_ends: bool,
) -> Result<Option<Found>> {
    let mut pos = from + 1;
    while pos + BATCH_HEADER_BYTES as u64 <= cur.end {
        if !cur.ensure(pos, BATCH_HEADER_BYTES).await? {
            return Ok(None);
        }
        let candidate = {
            let h = cur.slice(pos, BATCH_HEADER_BYTES);
            batch::validate_header(h, BatchLimits::default())
                .ok()
                .map(|info| {
                    (
                        Offset(batch::header(h).expect("checked").base_offset.get()),
                        info.batch_len,
                    )
                })
                .filter(|(b, len)| *b >= expected && pos + u64::from(*len) <= cur.end)
        };
        if let Some((b, _)) = candidate {
            if let Ok(f) = check_batch(cur, pos, b).await? {
                let after = f.pos + u64::from(f.len);
                let confirmed = if after + BATCH_HEADER_BYTES as u64 <= cur.end {
                    check_batch(cur, after, f.last_offset.plus(1))
                        .await?
                        .is_ok()
                } else {
                    false
                };
                let plausible = f.base_offset.since(expected) <= f.pos - from;
                if confirmed || plausible {
                    if torn_ends && holds_zero_block(cur, from, f.pos).await? {
                        return Ok(None);
                    }
                    return Ok(Some(f));
                }
            }
        }
        pos += 1;
    }
    Ok(None)
}

/// Whether `[from, to)` holds a whole, aligned block of zeros.
async fn holds_zero_block(cur: &mut Cursor, from: u64, to: u64) -> Result<bool> {
    let mut b = from.div_ceil(BLOCK as u64) * BLOCK as u64;
    while b + BLOCK as u64 <= to {
        if cur.ensure(b, BLOCK).await? && cur.slice(b, BLOCK).iter().all(|&x| x == 0) {
            return Ok(true);
        }
        b += BLOCK as u64;
    }
    Ok(false)
}

/// Whether `[from, to)` of the file is all zero (direct I/O padding rather than torn data).
async fn all_zero(file: &Rc<DmaFile>, path: &Path, from: u64, to: u64) -> Result<bool> {
    let mut pos = from;
    while pos < to {
        let want = ((to - pos) as usize).min(CHUNK_BYTES_MAX);
        let r = dma::read(file, path, pos, want).await?;
        if r.is_empty() {
            break;
        }
        if r.iter().any(|&b| b != 0) {
            return Ok(false);
        }
        pos += r.len() as u64;
    }
    Ok(true)
}

/// Serialized index bytes for points `[from, to)`, ready to write at the block that holds entry
/// `from`: returns (file position, bytes) for the offset index and the time index.
pub(crate) fn index_bytes(points: &[IndexPoint], from: usize, to: usize) -> [(u64, Vec<u8>); 2] {
    fn one<const N: usize>(
        points: &[IndexPoint],
        from: usize,
        to: usize,
        enc: impl Fn(&IndexPoint) -> [u8; N],
    ) -> (u64, Vec<u8>) {
        let start_byte = (from * N) as u64;
        let block = align_down(start_byte);
        let first = (block as usize) / N;
        let skip = block as usize - first * N;
        let mut out: Vec<u8> = points[first..to].iter().flat_map(&enc).collect();
        out.drain(..skip);
        (block, out)
    }
    [
        one(points, from, to, |p: &IndexPoint| p.offset_bytes()),
        one(points, from, to, |p: &IndexPoint| p.time_bytes()),
    ]
}

/// Writes index points `[from, to)` into both index files (entries before `from` are already
/// there); `exact` then cuts both files to exactly `to` entries.
pub(crate) async fn write_index(
    files: [(&Rc<DmaFile>, &Path); 2],
    points: &[IndexPoint],
    from: usize,
    to: usize,
    exact: bool,
) -> Result<()> {
    let sizes = [OFFSET_ENTRY_BYTES, TIME_ENTRY_BYTES];
    if to > from {
        let parts = index_bytes(points, from, to);
        for (((file, path), (pos, bytes)), size) in files.iter().zip(parts).zip(sizes) {
            // The bytes before entry `from` in its block are already on disk: they are the tail.
            let tail_len = (from * size) as u64 - pos;
            let (tail, rest) = bytes.split_at(tail_len as usize);
            let mut wb = WriteBuf::new(pos, tail, bytes.len());
            wb.push(rest);
            wb.write(file, path, false).await?;
        }
    }
    if exact {
        for ((file, path), size) in files.into_iter().zip(sizes) {
            dma::truncate(file, path, (to * size) as u64).await?;
        }
    }
    Ok(())
}

/// The active segment after recovery.
pub(crate) struct Recovered {
    pub files: ActiveFiles,
    pub points: Vec<IndexPoint>,
    /// Points already in the index files.
    pub points_on_disk: usize,
    pub len: u64,
    pub tail: Vec<u8>,
    pub next_offset: Offset,
    pub max_timestamp: i64,
    /// (position, base offset) of the last batch.
    pub last_batch: Option<(u64, Offset)>,
    /// Wall-clock ms the segment file was created, if the file system knows.
    pub created_ms: Option<i64>,
    /// Damaged ranges the recovery walk skipped (intact batches follow each).
    pub holes: Vec<Hole>,
}

/// The active segment's open file: its log. Its two index files are not kept open (a
/// descriptor each per partition would bound how many partitions a broker holds): they are
/// opened for each write of index blocks (every `INDEX_POINTS_PER_WRITE` points), at roll, close
/// and truncation ([`open_index_files`]).
///
/// No path is kept: they are derived from the log's directory (shared with the log) and the
/// base when needed, so an idle partition holds one path, its directory's, not four.
#[derive(Clone)]
pub(crate) struct ActiveFiles {
    pub base: Offset,
    /// Opened on demand within the thread's budget (`crate::files`).
    pub log: crate::files::LogFile,
}

impl ActiveFiles {
    /// The segment's three paths (the log's, and its index files' derived from it).
    pub(crate) fn paths(&self) -> SegmentPaths {
        SegmentPaths::new(self.log.dir(), self.base)
    }
}

/// Opens a segment's offset and time index files (created if absent) for reads and writes.
pub(crate) async fn open_index_files(paths: &SegmentPaths) -> Result<[Rc<DmaFile>; 2]> {
    let index = dma::open_rw(&paths.index, true).await?;
    let time = dma::open_rw(&paths.time, true).await?;
    Ok([index, time])
}

/// Opens (creating if absent) the segment at `base` as the active one and recovers its tail:
/// keeps the index points that still describe real batches, re-walks the log from the last one,
/// cuts whatever follows the last whole, valid batch (logging what was cut unless it is only
/// zero padding) and cuts the index files to the points that remain.
pub(crate) async fn recover_active(
    dir: &Rc<Path>,
    base: Offset,
    interval: u32,
) -> Result<Recovered> {
    let paths = SegmentPaths::new(dir, base);
    let log = dma::open_rw(&paths.log, true).await?;
    let [index, time] = open_index_files(&paths).await?;
    let log_size = dma::file_size(&log, &paths.log).await?;
    let ib = dma::read_all(&index, &paths.index).await?;
    let tb = dma::read_all(&time, &paths.time).await?;
    let mut points = match index::parse(&ib, &tb, log_size, false) {
        Ok(p) => p,
        Err(damage) => {
            tracing::warn!(segment = %paths.log.display(), ?damage, "index damaged; rebuilding");
            Vec::new()
        }
    };
    let mut cur = Cursor::new(log.clone(), paths.log.clone(), log_size, CHUNK_BYTES_MAX);
    // The last point that still names a whole, valid batch is the last known-good position.
    while let Some(p) = points.last() {
        if check_batch(&mut cur, u64::from(p.position), p.offset(base))
            .await?
            .is_ok()
        {
            break;
        }
        tracing::warn!(segment = %paths.log.display(), point = ?p, "dropping stale index point");
        points.pop();
    }
    let points_on_disk = points.len();
    let start = points
        .last()
        .map_or(WalkStart::origin(base), |p| WalkStart::at_point(base, p));
    let w = walk(
        &mut cur,
        base,
        start,
        interval,
        &mut points,
        OnDamage::SkipUnlessTorn,
    )
    .await?;
    for h in &w.holes {
        tracing::error!(
            segment = %paths.log.display(),
            position = h.pos,
            damaged_bytes = h.end - h.pos,
            offsets = format!("{}..{}", h.first, h.next),
            reason = %h.reason,
            "corrupt batch inside the active segment: intact batches follow it and are kept; reads of its offsets fail"
        );
    }
    if let Some((pos, reason)) = &w.stop {
        if all_zero(&log, &paths.log, *pos, log_size).await? {
            tracing::debug!(segment = %paths.log.display(), pos, "tail is zero padding");
        } else {
            tracing::warn!(
                segment = %paths.log.display(),
                position = pos,
                cut_bytes = log_size - pos,
                next_offset = w.next_offset.0,
                %reason,
                "recovery cut a torn or corrupt tail"
            );
        }
    }
    if log_size != w.valid_len {
        dma::truncate(&log, &paths.log, w.valid_len).await?;
        dma::fdatasync(&log, &paths.log).await?;
    }
    for (file, path, size) in [
        (&index, &paths.index, OFFSET_ENTRY_BYTES),
        (&time, &paths.time, TIME_ENTRY_BYTES),
    ] {
        let want = (points_on_disk * size) as u64;
        if dma::file_size(file, path).await? != want {
            dma::truncate(file, path, want).await?;
        }
    }
    dma::close(index).await;
    dma::close(time).await;
    let tail_pos = align_down(w.valid_len);
    let tail = if tail_pos < w.valid_len {
        dma::read(
            &log,
            &paths.log,
            tail_pos,
            (w.valid_len - tail_pos) as usize,
        )
        .await?
        .to_vec()
    } else {
        Vec::new()
    };
    if tail.len() as u64 != w.valid_len - tail_pos {
        return Err(Error::corrupt(
            &paths.log,
            tail_pos,
            "short read of the tail block",
        ));
    }
    // segment.ms counts from the segment file's creation (its birth time), not from producer
    // timestamps, which may be anything.
    let created_ms = std::fs::metadata(&paths.log)
        .and_then(|m| m.created())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64);
    // The last batch is needed at roll; if the walk started at a point and found nothing after
    // it, the point's own batch is the last.
    let last_batch = w.last_batch.map(|f| (f.pos, f.base_offset));
    Ok(Recovered {
        files: ActiveFiles {
            base,
            log: crate::files::LogFile::new(dir, base, log),
        },
        points,
        points_on_disk,
        len: w.valid_len,
        tail,
        next_offset: w.next_offset,
        max_timestamp: w.max_timestamp,
        last_batch,
        created_ms,
        holes: w.holes,
    })
}

/// Rebuilds a closed segment's index files by walking all of it. Damage is skipped to the next
/// intact batch (a sealed segment was fdatasynced whole, so it is corruption, not a torn write)
/// and reported; damage with nothing intact after it ends the walk.
pub(crate) async fn rebuild_closed_index(
    paths: &SegmentPaths,
    base: Offset,
    interval: u32,
) -> Result<Rebuilt> {
    let log = dma::open_ro(&paths.log).await?;
    let size = dma::file_size(&log, &paths.log).await?;
    let mut cur = Cursor::new(log, paths.log.clone(), size, CHUNK_BYTES_MAX);
    let mut points = Vec::new();
    let w = walk(
        &mut cur,
        base,
        WalkStart::origin(base),
        interval,
        &mut points,
        OnDamage::Skip,
    )
    .await?;
    for h in &w.holes {
        tracing::error!(
            segment = %paths.log.display(), position = h.pos, offsets = format!("{}..{}", h.first, h.next), reason = %h.reason,
            "corrupt batch in a closed segment: reads of its offsets fail; intact batches after it stay readable"
        );
    }
    if let Some((pos, reason)) = &w.stop {
        tracing::error!(
            segment = %paths.log.display(), position = pos, %reason,
            "corrupt batch in a closed segment: reads reaching it fail with Error::Corrupt"
        );
    }
    // The roll point: the last batch is always an index point in a closed segment.
    if let Some(f) = w.last_batch {
        if points.last().is_none_or(|p| u64::from(p.position) != f.pos) {
            // The walk stopped before any batch the index cannot address.
            if let Some(point) = IndexPoint::new(base, f.base_offset, f.pos, w.max_timestamp) {
                points.push(point);
            }
        }
    }
    let [index, time] = open_index_files(paths).await?;
    dma::truncate(&index, &paths.index, 0).await?;
    dma::truncate(&time, &paths.time, 0).await?;
    write_index(
        [(&index, &paths.index), (&time, &paths.time)],
        &points,
        0,
        points.len(),
        true,
    )
    .await?;
    dma::fdatasync(&index, &paths.index).await?;
    dma::fdatasync(&time, &paths.time).await?;
    dma::close(index).await;
    dma::close(time).await;
    Ok(Rebuilt {
        points,
        max_timestamp: w.max_timestamp,
        holes: w.holes,
    })
}

/// A closed segment's index as rebuilt from its log.
pub(crate) struct Rebuilt {
    pub points: Vec<IndexPoint>,
    pub max_timestamp: i64,
    /// Damaged ranges with intact batches after them.
    pub holes: Vec<Hole>,
}

/// Loads a closed segment's index points, rebuilding the files if they are damaged (and then
/// also returns the damaged ranges the rebuild found).
pub(crate) async fn load_closed_index(
    paths: &SegmentPaths,
    base: Offset,
    log_size: u64,
    interval: u32,
) -> Result<(Vec<IndexPoint>, Vec<Hole>)> {
    let read = |p: PathBuf| async move {
        match dma::open_ro(&p).await {
            Ok(f) => dma::read_all(&f, &p).await,
            Err(_) => Ok(Vec::new()),
        }
    };
    let ib = read(paths.index.clone()).await?;
    let tb = read(paths.time.clone()).await?;
    match index::parse(&ib, &tb, log_size, true) {
        Ok(p) if !p.is_empty() || log_size == 0 => Ok((p, Vec::new())),
        other => {
            tracing::warn!(segment = %paths.log.display(), damage = ?other.err(), "closed segment index missing or damaged; rebuilding");
            let r = rebuild_closed_index(paths, base, interval).await?;
            Ok((r.points, r.holes))
        }
    }
}
