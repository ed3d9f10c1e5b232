//! Quiver's storage engine: one durable, segmented log per partition on glommio direct I/O.
//!
//! The engine knows a batch only as "validated header + opaque bytes" ([`quiver_proto::batch`]
//! validates it; the engine stamps the base offset and, if asked, the leader epoch, both outside
//! the CRC). It knows nothing of topics, the network or replication policy. The API is
//! [`PartitionLog`]: one per partition, owned by the glommio executor (shard) that owns the
//! partition. Call [`init_io_probe`] once per executor before opening logs.
//!
//! # Layout on disk
//!
//! One directory per log, holding segments named by their base offset (20 digits):
//!
//! ```text
//! 00000000000000000000.log        batches, byte for byte as produced (offsets stamped)
//! 00000000000000000000.index      sparse offset index: (rel offset u32, position u32)
//! 00000000000000000000.timeindex  sparse time index: (running max timestamp i64, rel offset u32)
//! 00000000000000052311.log        the next segment starts at the offset after the last one
//! ...
//! ```
//!
//! A directory is held by one `PartitionLog` at a time in a process (a process-wide set, no lock
//! file: `log/open.rs`); the broker keeps other processes out with a lock on its data directory.
//!
//! The last segment is the active one; all others are closed and never written again. A segment
//! rolls when an append would take it past `segment_bytes` (default 1 GiB) or it is older than
//! `segment_ms` (default 7 days, counted from the file's creation). Index points are taken every
//! `index_interval_bytes` (default 4096) of log and at the last batch when a segment closes, so
//! a closed segment's last time-index entry is its max timestamp. See `index.rs` for a worked
//! example.
//!
//! # Writes and the durability contract
//!
//! All writes are O_DIRECT through glommio `DmaFile`s, in whole 4 KiB blocks at aligned
//! positions. The partial last block of each file stays resident and is rewritten whole, with the
//! new bytes after it, by the next write; bytes past the logical end of that block are zeros.
//! Appends copy their batches into a pending write buffer (allocated while bytes are pending,
//! freed once written) and one flusher task per log writes everything staged as one group: the
//! log's blocks in buffers that double up to 8 MiB, and, once 256 new index points are due, the
//! index blocks in flight beside them (the index files lag the log by fewer than 256 points
//! until roll or close writes them in full; recovery rebuilds the missing ones from the log).
//!
//! * [`FlushPolicy::Sync`] (default): an append resolves only once its bytes are durable. The
//!   active segment's log file is written through an O_DSYNC descriptor, so a group's write is
//!   durable when it completes (the kernel writes the inode if it must and flushes the device's
//!   cache before completing it: what an fdatasync issued then would do, for that write and
//!   every one completed before it), and no fdatasync follows; the file is preallocated a window
//!   ahead of its writes (a quarter of its length, 16 KiB to 8 MiB, cut at seal, close and
//!   recovery), and a group's rewrite of the partial block the last one left is written apart
//!   from its new blocks, so that its writes complete without an io_uring worker. One write
//!   covers every append in its group (group commit). A group with no log bytes to write is
//!   made durable by an fdatasync instead, and the flusher writes the next group while that
//!   runs (at most four in flight). A new segment's directory entry is fsynced before anything
//!   is appended to it.
//! * [`FlushPolicy::IntervalMs`]: an append resolves once written (handed to the device with
//!   O_DIRECT); an fdatasync follows within the interval. A crash may lose that window.
//!
//! Index files are written in the same groups but not fdatasynced on the hot path: they are
//! derived data, checked at open against the log, and fdatasynced when a segment closes.
//!
//! A failed write (ENOSPC is [`Error::DiskFull`]) fails every append not yet written, cuts the
//! file back to its last good byte and leaves the log usable. A failed fdatasync fails the
//! waiting appends and stops the log taking appends until it is reopened: after a failed
//! fdatasync what reached the disk is unknown, and reopening recovers from what is there. (A
//! failed O_DSYNC write is a failed write: nothing of it is acknowledged.)
//!
//! # Reads
//!
//! Reads come from the files by direct I/O: no page cache. A read finds its segment, takes the
//! nearest index point at or below the offset, reads one window (`max_bytes` + 256 KiB) and
//! returns whole batches from the one holding the offset, copied once into `Bytes` (glommio's
//! read buffers are not `Send`). There is no per-record work, but every batch served is
//! CRC-checked (one pass, several GB/s) and must carry the expected base offset. Offsets below
//! the readable end are visible; appends become readable when written (under `Sync`, in the same
//! group step that makes them durable).
//!
//! The one data cache is read-ahead ([`readahead`]): a read that stopped short of the readable
//! end starts reading the next window in the background, and a read for exactly the offset after
//! it takes those bytes, so a consumer catching up does not wait for the disk between fetches
//! (measured: one consumer of 2 partitions, 630 to 830+ MB/s). Its bytes are bounded per shard
//! and expire unread after 10 s; a truncation, close or delete drops them.
//!
//! # Files per log
//!
//! An open log keeps at most one file descriptor: its active segment's log, and only while the
//! thread's budget allows (`files.rs`, [`set_open_logs_max`]: past it the least recently used
//! idle file closes and is reopened by the next write, fdatasync or read that needs it; an
//! fdatasync covers the file, not the descriptor, so durability does not change). The active
//! segment's two index files are opened for each write of index blocks (every 256 points, at
//! roll, close and truncation) and closed after it; the directory is held in a process-wide set
//! rather than by a lock file. Closed segments being read stay open in the log's cache (two at
//! most), and all the logs of one thread together keep at most [`CLOSED_FILES_PER_THREAD`] of
//! them (the one loaded longest ago is let go first). So a thread's open files are bounded
//! whatever the number of logs.
//!
//! # Memory per log
//!
//! Resident, per log:
//! * the partial last block of the active segment's log twice (the written and the handed-off
//!   view): at most 2 x 4 KiB;
//! * the active segment's index points, 16 bytes per `index_interval_bytes` of data in it:
//!   4 MiB for a full 1 GiB segment at the defaults, 16 KiB for a 4 MiB one;
//! * the index points and open file of the two closed segments read last (a read that moves to
//!   a third replaces the older): twice the same bound;
//! * 24 bytes per closed segment (base, size, max timestamp).
//!
//! Transient: pending write buffers while appends are in flight (the bytes appended, in buffers
//! of at most 1 MiB), one read window per read in progress, and up to two read-aheads (within
//! the shard's read-ahead budget). At the defaults the worst case
//! is about 12 MiB (a full 1 GiB active segment and two full old segments being read); an idle
//! log whose active segment holds a few MiB costs a few tens of KiB, so thousands of partitions
//! per core fit in memory.
//!
//! # Recovery and corruption policy
//!
//! At open, closed segments are listed with their size and their max timestamp (the last entry
//! of the time index); an index that is missing or whose two files disagree in length is rebuilt
//! by walking the segment. Closed segments are not re-read in full at open (that would cost a
//! scan of all retained data per start); they were checked when written.
//!
//! The active segment is recovered from its last known-good point: the last index point that
//! still names a whole batch with a valid CRC and the expected offset. From there every batch is
//! checked (header sanity, expected base offset, whole batch present, CRC). At the first batch
//! that fails:
//!
//! * if nothing intact follows it (a partial last batch, zero padding, garbage to the end), or
//!   the damage holds a whole 4 KiB block of zeros (a write the device never finished: a crash
//!   in the middle of a group, whose later blocks may have landed), it is a torn tail: the log is
//!   cut there. Nothing from there on was acknowledged, since its fdatasync never completed. The
//!   cut is logged with its position and size (zero padding is not); index points past it are
//!   dropped and the index files cut to match;
//! * otherwise it is corruption with intact data after it (`segment::next_intact` finds the next
//!   batch that passes every check, its base offset confirmed by the batch after it): the damaged
//!   range is skipped and recorded ([`PartitionLog::corrupt_ranges`], logged at error level), an
//!   index point is put at the intact batch so lookups past the damage start beyond it, and the
//!   walk goes on. Nothing intact is cut, and the log's end stays where it was, so no offset is
//!   ever given twice.
//!
//! ```text
//! active segment 0, 20 batches of 3 records; batch 10 (offsets 30..=32) has a flipped byte
//! before: [0..=29 ok] [30..=32 bad CRC] [33..=59 ok]  -> old policy cut at 30, end 30
//! now:    [0..=29 ok] [hole 30..33]     [33..=59 ok]  -> end 60; read(31) is Corrupt
//!                                                        { resume_at: Some(33) }
//! ```
//!
//! After a crash, open fdatasyncs the recovered active segment before it is served: bytes
//! written but not yet synced may be readable now and gone after a power loss. A clean close
//! leaves a producer snapshot at the log's end, and then there is nothing to sync.
//!
//! A corrupt batch is never served. A read that reaches it returns the good batches before it,
//! and a read that starts at it fails with [`Error::Corrupt`] carrying the segment's path, the
//! byte position and, when known, `resume_at`: the first offset readable after it (the end of a
//! recorded range, else the segment's next index point, else the next segment's base). Closed
//! segments are not re-read at open, so damage there is found by the read that meets it, or when
//! its index is rebuilt (which skips and records it like recovery does); [`PartitionLog::verify`]
//! scrubs a whole log on demand and reports every damaged range. Note that `base_offset` and
//! `leader_epoch` are outside the CRC by design (they are stamped after validation): a flipped
//! base offset is caught by the density check, a flipped leader epoch is not detectable.

mod config;
mod deleter;
mod dma;
mod error;
mod files;
#[doc(hidden)]
pub mod fuzzing;
mod index;
mod log;
mod names;
mod notify;
mod offset;
mod producers;
pub mod readahead;
mod segment;
pub mod tail;

pub use config::{
    FlushPolicy, LogConfig, INDEX_INTERVAL_BYTES_MIN, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN,
};
pub use deleter::delete_dir_paced;
pub use dma::{sync_counts, SyncCounts};
pub use error::{Error, Result, SequenceError};
pub use files::{open_logs, set_open_logs_max};
pub use log::{
    AppendInfo, CorruptRange, DirSyncs, PartitionLog, Records, RetentionReport, APPEND_BYTES_MAX,
    APPEND_OFFSETS_MAX, CLOSED_FILES_PER_THREAD, READ_BYTES_MAX,
};

use std::path::Path;

/// Name of the file [`init_io_probe`] keeps in the data directory.
pub const IO_PROBE_FILE: &str = ".quiver-io-probe";

/// Call once per executor at startup, before opening any log on the device holding `dir`.
///
/// glommio probes whether a device supports polled I/O on the first file it opens there and
/// caches the answer; if that first file is empty the probe reads nothing and concludes wrongly,
/// and later reads fail with EOPNOTSUPP. This writes a one-block file in `dir` (if absent) and
/// opens it with direct I/O so the probe sees real data.
pub async fn init_io_probe(dir: impl AsRef<Path>) -> Result<()> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create dir", dir, e))?;
    let path = dir.join(IO_PROBE_FILE);
    let ok = std::fs::metadata(&path).is_ok_and(|m| m.len() >= dma::BLOCK as u64);
    if !ok {
        std::fs::write(&path, vec![0u8; dma::BLOCK]).map_err(|e| Error::io("write", &path, e))?;
    }
    let f = dma::open_ro(&path).await?;
    dma::read(&f, &path, 0, dma::BLOCK).await?;
    Ok(())
}
