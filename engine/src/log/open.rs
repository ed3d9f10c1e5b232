//! Opening a log: the directory (made durable, locked), the closed segments listed with their
//! max timestamps, the active segment recovered (`segment::recover_active`), its tail
//! fdatasynced after a crash, and the producers' state rebuilt.

use super::commit::GroupCommit;
use super::{now_ms, Active, Closed, CorruptRange, PartitionLog, Shared, State, Status};
use crate::config::LogConfig;
use crate::dma;
use crate::error::{Error, Result};
use crate::producers::Producers;
use crate::segment::{self, Recovered, SegmentPaths};
use crate::tail::TailCache;
use quiver_proto::Offset;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

impl PartitionLog {
    /// Opens the log in `dir` (creating it if absent) and recovers it: closed segments are
    /// listed, each with its size and max timestamp from its time index (rebuilding missing or
    /// damaged indexes); the last segment's tail is validated batch by batch from its last good
    /// index point, and a torn or corrupt tail is cut (and logged).
    pub async fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<PartitionLog> {
        Self::open_inner(dir.as_ref(), config, None).await
    }

    /// Like [`open`](Self::open), except that the directory syncs a new log needs (its
    /// directory in its parent, its files in its directory) are added to `syncs` instead of
    /// made here. The caller must complete [`DirSyncs::sync`] before it appends to the log:
    /// until then a crash may take the new directory back. Many logs created at once then
    /// cost one journal commit instead of two each.
    pub async fn open_deferring_dir_syncs(
        dir: impl AsRef<Path>,
        config: LogConfig,
        syncs: &DirSyncs,
    ) -> Result<PartitionLog> {
        Self::open_inner(dir.as_ref(), config, Some(syncs)).await
    }

    async fn open_inner(
        dir: &Path,
        config: LogConfig,
        defer: Option<&DirSyncs>,
    ) -> Result<PartitionLog> {
        config.validate()?;
        let dir: Rc<Path> = dir.into();
        create_dir_durable(&dir, defer).await?;
        let lock = DirLock::take(&dir)?;
        let mut files: BTreeMap<Offset, Vec<String>> = BTreeMap::new();
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io("list dir", &*dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list dir", &*dir, e))?;
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
        let bases: Vec<Offset> = files.keys().copied().collect();
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
        let active_base = bases.last().copied().unwrap_or(Offset::ZERO);
        let rec = segment::recover_active(&dir, active_base, interval).await?;
        if bases.is_empty() {
            match defer {
                Some(d) => d.add(&dir),
                None => dma::sync_dir(&dir).await?,
            }
        }
        // What recovery found is served, and a retried batch found in it is answered as written
        // (`Verdict::Duplicate`), only once it is durable: after a crash, bytes written but not
        // yet fdatasynced may be readable now and gone after a power loss. A clean close leaves
        // a producer snapshot at the log's end, after its last fdatasync; then nothing is owed.
        let closed_cleanly = loose_snapshots.contains(&rec.next_offset);
        // Sealed as a clean close leaves it: a producer snapshot at the end, and every index
        // point on disk (recovery rebuilds missing ones in memory only).
        let sealed = (closed_cleanly || rec.len == 0) && rec.points_on_disk == rec.points.len();
        let sealed_at = sealed.then_some((rec.files.base, rec.len, 0));
        if rec.len > 0 && !closed_cleanly {
            let log = rec.files.log.get().await?;
            dma::fdatasync(&log, &rec.files.log.path()).await?;
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
        // Everything recovered is written, and durable (synced above, or before a clean close).
        let end = rec.next_offset;
        let active = Active::from_recovered(rec, now);
        tracing::debug!(dir = %dir.display(), segments = closed.len() + 1, end = end.0, "log opened");
        let state = State {
            commit: GroupCommit::new(end, config.flush, Instant::now()),
            config,
            closed,
            active,
            flushing: false,
            sync_timer_armed: false,
            exclusive: false,
            exclusive_waiting: 0,
            truncating: false,
            truncations: 0,
            rolling_appends: 0,
            last_failure: None,
            status: Status::Open,
            cache: Vec::new(),
            tail: TailCache::default(),
            tail_from: end,
            tail_read_at: None,
            handle_dropped: false,
            producers,
            damage,
            sealed_at,
        };
        let shared = Rc::new(Shared {
            dir,
            lock: RefCell::new(Some(lock)),
            state: RefCell::new(state),
            data: Default::default(),
            progress: Default::default(),
            readaheads: RefCell::new(Vec::new()),
        });
        Ok(PartitionLog { shared })
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
                    tracing::warn!(dir = %dir.display(), offset = rec.next_offset.0, "producer snapshot unreadable; reading the segment's batches instead")
                }
            }
        }
    }
    let mut producers = match segment::read_producers(dir, base).await? {
        None => Producers::default(),
        Some(bytes) => Producers::decode(&bytes).unwrap_or_else(|| {
            tracing::warn!(dir = %dir.display(), base = base.0, "producer snapshot unreadable; producers start over");
            Producers::default()
        }),
    };
    segment::walk_headers(
        &rec.files.log.get().await?,
        &rec.files.log.path(),
        rec.files.base,
        rec.len,
        &rec.holes,
        |info, base_offset| producers.record(info, base_offset, now),
    )
    .await?;
    Ok(producers)
}

/// Directories to fsync later, for logs opened with
/// [`PartitionLog::open_deferring_dir_syncs`]: each named once however many logs added it.
#[derive(Default)]
pub struct DirSyncs {
    dirs: RefCell<std::collections::BTreeSet<PathBuf>>,
}

impl DirSyncs {
    fn add(&self, dir: &Path) {
        self.dirs.borrow_mut().insert(dir.to_path_buf());
    }

    /// How many directories wait for their fsync.
    pub fn len(&self) -> usize {
        self.dirs.borrow().len()
    }

    /// Whether none does.
    pub fn is_empty(&self) -> bool {
        self.dirs.borrow().is_empty()
    }

    /// fsyncs every directory added, `in_flight` at a time. The first forces the file
    /// system's journal commit that holds all their new entries; the others find it done.
    pub async fn sync(&self, in_flight: usize) -> Result<()> {
        let dirs = std::mem::take(&mut *self.dirs.borrow_mut());
        let first_error = RefCell::new(None);
        futures_util::StreamExt::for_each_concurrent(
            futures_util::stream::iter(dirs.iter()),
            in_flight.max(1),
            |d| async {
                if let Err(e) = dma::sync_dir(d).await {
                    first_error.borrow_mut().get_or_insert(e);
                }
            },
        )
        .await;
        first_error.into_inner().map_or(Ok(()), Err)
    }
}

/// Creates `dir` and any missing parents, each made durable in its parent (fsync of the parent
/// after the create, or added to `defer`), so that a log whose first append was acknowledged
/// cannot lose its directory, or its topic's, to a crash.
async fn create_dir_durable(dir: &Path, defer: Option<&DirSyncs>) -> Result<()> {
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
            match defer {
                Some(d) => d.add(parent),
                None => dma::sync_dir(parent).await?,
            }
        }
    }
    Ok(())
}

/// A log directory held open by this process: at most one `PartitionLog` per directory at a
/// time (another shard's, or a handle dropped with I/O still in flight, is refused with
/// [`Error::Locked`]). Held in a process-wide set, not by a lock file: a lock file held open
/// per log cost a file descriptor per partition, a quarter of a broker's budget. Another
/// process is kept out by its owner: the broker holds an exclusive lock on its whole data
/// directory (`<data_dir>/.lock`) while it runs.
pub(crate) struct DirLock {
    /// The directory's (device, inode): one directory under two spellings (a relative path, a
    /// symlink) is one log, and the key holds no copy of the path.
    key: (u64, u64),
}

fn open_dirs() -> &'static Mutex<HashSet<(u64, u64)>> {
    static OPEN: OnceLock<Mutex<HashSet<(u64, u64)>>> = OnceLock::new();
    OPEN.get_or_init(Default::default)
}

impl DirLock {
    /// Takes `dir` (which exists) for this log, or `Error::Locked` if a log has it.
    pub(crate) fn take(dir: &Path) -> Result<DirLock> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(dir).map_err(|e| Error::io("stat dir", dir, e))?;
        let key = (m.dev(), m.ino());
        let mut open = open_dirs().lock().unwrap_or_else(|e| e.into_inner());
        if !open.insert(key) {
            return Err(Error::Locked {
                path: dir.to_path_buf(),
            });
        }
        Ok(DirLock { key })
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        open_dirs()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

/// A closed segment's max timestamp from the last entry of its time index, rebuilding the
/// indexes if they are missing or inconsistent.
async fn closed_max_timestamp(
    paths: &SegmentPaths,
    base: Offset,
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
