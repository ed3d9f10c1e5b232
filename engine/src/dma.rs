//! Direct-I/O plumbing over glommio's `DmaFile`: opening, whole-block writes built from a resident
//! partial tail block, and reads.
//!
//! O_DIRECT writes whole aligned blocks. A log's logical length is rarely aligned, so the last
//! block is partial: its bytes stay resident (`tail`, under [`BLOCK`] bytes) and the next write
//! starts at that block's aligned position with those bytes in front, so the block is rewritten
//! whole. Bytes past the logical end of the last block are zero on disk (recovery tells torn data
//! from padding by that).

use crate::error::{Error, Result};
use glommio::io::{DmaBuffer, DmaFile, OpenOptions, ReadResult};
use std::io;
use std::path::Path;
use std::rc::Rc;

/// The engine's write and tail granularity. Every device glommio reports here aligns to 512 or
/// 4096 bytes, both of which divide it.
pub(crate) const BLOCK: usize = 4096;
/// The unit of reads: the largest single read buffer, and the window of the cursors that walk a
/// segment.
pub(crate) const CHUNK_BYTES_MAX: usize = 1024 * 1024;
/// Largest single write buffer: a group commit bigger than this is written as several buffers in
/// flight at once.
const WRITE_CHUNK_MAX: usize = 8 * 1024 * 1024;
/// A full write buffer grows by copying into one twice its size up to this size; past it, a new
/// one twice the size starts (no copy).
const CHUNK_GROW_MAX: usize = 1024 * 1024;
const _: () = assert!(CHUNK_BYTES_MAX.is_multiple_of(BLOCK));

pub(crate) fn align_down(v: u64) -> u64 {
    v & !(BLOCK as u64 - 1)
}

pub(crate) fn align_up(v: u64) -> u64 {
    align_down(v + BLOCK as u64 - 1)
}

/// Opens (creating if asked) a file for direct reads and writes.
pub(crate) async fn open_rw(path: &Path, create: bool) -> Result<Rc<DmaFile>> {
    open_rw_with(path, create, 0).await
}

/// `open_rw` with extra open(2) flags.
async fn open_rw_with(path: &Path, create: bool, flags: i32) -> Result<Rc<DmaFile>> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .custom_flags(flags)
        .dma_open(path)
        .await
        .map_err(|e| Error::io("open", path, e))?;
    if !(BLOCK as u64).is_multiple_of(f.alignment()) {
        return Err(Error::io(
            "open",
            path,
            io::Error::other(format!(
                "direct I/O alignment {} does not divide {BLOCK}",
                f.alignment()
            )),
        ));
    }
    Ok(Rc::new(f))
}

/// Opens an active segment's log file for direct reads and writes; with `dsync`, O_DSYNC: each
/// write is durable when it completes (the kernel flushes the device's cache after it, and
/// writes the inode first if the write changed its size or allocation), so no fdatasync follows.
pub(crate) async fn open_log_rw(path: &Path, dsync: bool) -> Result<Rc<DmaFile>> {
    open_rw_with(path, false, if dsync { libc::O_DSYNC } else { 0 }).await
}

/// Opens a file for direct reads only.
pub(crate) async fn open_ro(path: &Path) -> Result<Rc<DmaFile>> {
    let f = DmaFile::open(path)
        .await
        .map_err(|e| Error::io("open", path, e))?;
    Ok(Rc::new(f))
}

/// Closes a file now if this is its last handle (otherwise the last handle's drop closes it).
/// A close's error is of no use: everything that had to reach the disk was fdatasynced.
pub(crate) async fn close(file: Rc<DmaFile>) {
    if let Ok(f) = Rc::try_unwrap(file) {
        let _ = f.close().await;
    }
}

pub(crate) async fn file_size(file: &DmaFile, path: &Path) -> Result<u64> {
    file.file_size()
        .await
        .map_err(|e| Error::io("stat", path, e))
}

/// Reads `[pos, pos + len)`; fewer bytes come back only at the end of the file.
pub(crate) async fn read(file: &DmaFile, path: &Path, pos: u64, len: usize) -> Result<ReadResult> {
    file.read_at(pos, len)
        .await
        .map_err(|e| Error::io("read", path, e))
}

/// Reads a whole (small) file: index files.
pub(crate) async fn read_all(file: &DmaFile, path: &Path) -> Result<Vec<u8>> {
    let size = file_size(file, path).await?;
    let mut out = Vec::with_capacity(size as usize);
    while (out.len() as u64) < size {
        let want = ((size - out.len() as u64) as usize).min(8 * CHUNK_BYTES_MAX);
        let r = read(file, path, out.len() as u64, want).await?;
        if r.is_empty() {
            break;
        }
        out.extend_from_slice(&r);
    }
    Ok(out)
}

pub(crate) async fn truncate(file: &DmaFile, path: &Path, len: u64) -> Result<()> {
    file.truncate(len)
        .await
        .map_err(|e| Error::io("truncate", path, e))?;
    sync_journal::record_truncate(path, len);
    Ok(())
}

pub(crate) async fn fdatasync(file: &DmaFile, path: &Path) -> Result<()> {
    // The size before the fdatasync is issued: every write completed by then is covered. Its
    // place in the journal's order is taken now, at issue, not at completion.
    let journal_size = match sync_journal::enabled() {
        true => Some((file_size(file, path).await?, sync_journal::next_seq())),
        false => None,
    };
    file.fdatasync()
        .await
        .map_err(|e| Error::io("fdatasync", path, e))?;
    SYNC_COUNTS
        .0
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if let Some((size, seq)) = journal_size {
        sync_journal::record_sync(path, seq, size);
    }
    Ok(())
}

/// An O_DSYNC write completed: for the power-loss fault's journal, an fdatasync that left the
/// file's durable bytes ending at `size` (the log's length after the write). The path is built
/// only when the journal is on.
pub(crate) fn record_dsync_write(path: impl FnOnce() -> std::path::PathBuf, size: u64) {
    SYNC_COUNTS
        .2
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if sync_journal::enabled() {
        sync_journal::record_sync(&path(), sync_journal::next_seq(), size);
    }
}

/// A test hook for the fault suite's power-loss fault (`streamfault`'s `power-loss`): with
/// `STREAMD_FAULT_SYNC_JOURNAL=<file>` in the environment, every completed fdatasync appends
/// `s <seq> <size> <path>` to that file (the size the file had when the fdatasync was issued,
/// and a sequence number taken then), and every truncation `t <seq> <len> <path>`. Up to
/// `SYNCS_IN_FLIGHT_MAX` fdatasyncs overlap and complete in any order, so lines are not in
/// issue order: the suite replays them by sequence number (a sync raises what is durable, a
/// truncation caps it) and, after a SIGKILL, cuts every segment back to that, which is what a
/// loss of power would leave of writes no fdatasync covered. Not a setting: without the variable
/// it costs one check per fdatasync.
mod sync_journal {
    use std::io::Write;
    use std::path::Path;
    use std::sync::{Mutex, OnceLock};

    fn journal() -> &'static Option<Mutex<std::fs::File>> {
        static JOURNAL: OnceLock<Option<Mutex<std::fs::File>>> = OnceLock::new();
        JOURNAL.get_or_init(|| {
            let path = std::env::var_os("STREAMD_FAULT_SYNC_JOURNAL")?;
            match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
            {
                Ok(f) => Some(Mutex::new(f)),
                Err(e) => {
                    tracing::error!(path = ?path, error = %e, "cannot open the sync journal");
                    None
                }
            }
        })
    }

    pub(super) fn enabled() -> bool {
        journal().is_some()
    }

    /// The next sequence number (the order of issue).
    pub(super) fn next_seq() -> u64 {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// One line per completed fdatasync; a blocking append of a few dozen bytes to the page
    /// cache, which a SIGKILL does not lose.
    pub(super) fn record_sync(path: &Path, seq: u64, size: u64) {
        write(&format!("s {seq} {size} {}\n", path.display()));
    }

    /// One line per truncation, numbered when it has happened.
    pub(super) fn record_truncate(path: &Path, len: u64) {
        if enabled() {
            write(&format!("t {} {len} {}\n", next_seq(), path.display()));
        }
    }

    fn write(line: &str) {
        if let Some(f) = journal() {
            let _ = f
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .write_all(line.as_bytes());
        }
    }
}

/// fsyncs a directory, so that files created or removed in it stay so after a crash.
pub(crate) async fn sync_dir(dir: &Path) -> Result<()> {
    let d = glommio::io::Directory::open(dir)
        .await
        .map_err(|e| Error::io("open dir", dir, e))?;
    d.sync().await.map_err(|e| Error::io("fsync dir", dir, e))?;
    let _ = d.close().await;
    SYNC_COUNTS
        .1
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// (file fdatasyncs, directory fsyncs, O_DSYNC log writes) completed by the engine in this
/// process.
static SYNC_COUNTS: (
    std::sync::atomic::AtomicU64,
    std::sync::atomic::AtomicU64,
    std::sync::atomic::AtomicU64,
) = (
    std::sync::atomic::AtomicU64::new(0),
    std::sync::atomic::AtomicU64::new(0),
    std::sync::atomic::AtomicU64::new(0),
);

/// Syncs the engine has completed in this process, for metrics and for tests of what is made
/// durable when.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncCounts {
    /// fdatasyncs of segment and index files.
    pub files: u64,
    /// fsyncs of directories (new files and directories, renames, removals).
    pub dirs: u64,
    /// Group commits made durable by their own O_DSYNC log write, with no fdatasync.
    pub dsync_writes: u64,
}

/// The counts so far.
pub fn sync_counts() -> SyncCounts {
    use std::sync::atomic::Ordering::Relaxed;
    SyncCounts {
        files: SYNC_COUNTS.0.load(Relaxed),
        dirs: SYNC_COUNTS.1.load(Relaxed),
        dsync_writes: SYNC_COUNTS.2.load(Relaxed),
    }
}

/// Bytes staged for one write at a block-aligned file position: the resident tail first, then
/// appended bytes. Buffers are allocated while bytes are pending and freed once written.
pub(crate) struct WriteBuf {
    file_pos: u64,
    /// Every chunk but the last is full; the last holds `last_filled` bytes.
    chunks: Vec<DmaBuffer>,
    last_filled: usize,
    total: usize,
    /// It starts by rewriting the partial block a previous write left (the tail given to `new`).
    rewrites_first_block: bool,
}

/// A write of at most this many bytes that rewrites a partial first block writes that block by
/// itself when asked (`write`'s `split_head`): a direct write that is all overwrite, or all new
/// preallocated blocks, completes in the submitting thread, while one spanning both goes to an
/// io_uring worker (ext4 takes it only as one kind of extent). Above it the copy costs more than
/// the hand-off, and one write keeps one cache flush.
const SPLIT_HEAD_MAX: usize = 256 * 1024;

impl WriteBuf {
    /// Starts at `file_pos` (aligned) with `tail` (the bytes of the partial block there).
    pub(crate) fn new(file_pos: u64, tail: &[u8], hint: usize) -> WriteBuf {
        debug_assert_eq!(file_pos % BLOCK as u64, 0);
        debug_assert!(tail.len() < BLOCK);
        let cap = (align_up((tail.len() + hint) as u64) as usize).clamp(BLOCK, WRITE_CHUNK_MAX);
        let mut wb = WriteBuf {
            file_pos,
            chunks: vec![glommio::allocate_dma_buffer(cap)],
            last_filled: 0,
            total: 0,
            rewrites_first_block: !tail.is_empty(),
        };
        wb.push(tail);
        wb
    }

    /// File position just past the staged bytes: the logical end after this write.
    pub(crate) fn end(&self) -> u64 {
        self.file_pos + self.total as u64
    }

    pub(crate) fn push(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let last = self.chunks.last_mut().expect("at least one chunk");
            let room = last.len() - self.last_filled;
            if room == 0 {
                let cap = last.len();
                if cap * 2 <= CHUNK_GROW_MAX {
                    // Grow the last chunk (doubling) rather than leave a partial one behind.
                    let new_cap = (cap * 2)
                        .max(align_up((self.last_filled + bytes.len()) as u64) as usize)
                        .min(CHUNK_GROW_MAX);
                    let mut grown = glommio::allocate_dma_buffer(new_cap);
                    grown.as_bytes_mut()[..self.last_filled]
                        .copy_from_slice(&last.as_bytes()[..self.last_filled]);
                    *last = grown;
                } else {
                    // A new chunk twice the last (no copy): a large write is a few writes.
                    let cap = (align_up(bytes.len() as u64) as usize)
                        .max(cap * 2)
                        .clamp(BLOCK, WRITE_CHUNK_MAX);
                    self.chunks.push(glommio::allocate_dma_buffer(cap));
                    self.last_filled = 0;
                }
                continue;
            }
            let n = room.min(bytes.len());
            last.as_bytes_mut()[self.last_filled..self.last_filled + n]
                .copy_from_slice(&bytes[..n]);
            self.last_filled += n;
            self.total += n;
            bytes = &bytes[n..];
        }
    }

    /// The bytes of the final partial block (what stays resident after the write).
    pub(crate) fn tail(&self) -> Vec<u8> {
        let keep = (self.end() % BLOCK as u64) as usize;
        let last = self.chunks.last().expect("at least one chunk");
        if keep <= self.last_filled {
            last.as_bytes()[self.last_filled - keep..self.last_filled].to_vec()
        } else {
            // Chunks are block multiples, so the partial block lies within the last chunk.
            unreachable!("partial block spans chunks")
        }
    }

    /// Writes every chunk (concurrently), the last one zero-padded to a whole block; with
    /// `split_head`, a rewritten first block as a write of its own (see [`SPLIT_HEAD_MAX`]).
    pub(crate) async fn write(
        mut self,
        file: &Rc<DmaFile>,
        path: &Path,
        split_head: bool,
    ) -> Result<()> {
        if self.total == 0 {
            return Ok(());
        }
        let last = self.chunks.last_mut().expect("at least one chunk");
        let padded = align_up(self.last_filled as u64) as usize;
        last.as_bytes_mut()[self.last_filled..padded].fill(0);
        last.trim_to_size(padded);
        if split_head
            && self.rewrites_first_block
            && self.total <= SPLIT_HEAD_MAX
            && self.chunks[0].len() > BLOCK
        {
            let first = self.chunks.remove(0);
            let mut head = glommio::allocate_dma_buffer(BLOCK);
            head.as_bytes_mut()
                .copy_from_slice(&first.as_bytes()[..BLOCK]);
            let mut rest = glommio::allocate_dma_buffer(first.len() - BLOCK);
            rest.as_bytes_mut()
                .copy_from_slice(&first.as_bytes()[BLOCK..]);
            self.chunks.insert(0, rest);
            self.chunks.insert(0, head);
        }
        let mut pos = self.file_pos;
        let mut tasks = Vec::with_capacity(self.chunks.len());
        for c in self.chunks {
            let len = c.len();
            let f = file.clone();
            let at = pos;
            tasks.push(glommio::spawn_local(async move {
                let r = f.write_at(c, at).await;
                (at, len, r)
            }));
            pos += len as u64;
        }
        let mut first_err = None;
        for t in tasks {
            let (at, len, r) = t.await;
            let err = match r {
                Ok(n) if n == len => continue,
                Ok(n) => Error::io(
                    "write",
                    path,
                    io::Error::new(
                        io::ErrorKind::StorageFull,
                        format!("short write at {at}: {n} of {len} bytes"),
                    ),
                ),
                Err(e) => Error::io("write", path, e),
            };
            first_err.get_or_insert(err);
        }
        first_err.map_or(Ok(()), Err)
    }
}
