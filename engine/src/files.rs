//! The active segments' log files, opened on demand and kept open within a per-thread budget.
//!
//! A broker may hold far more partitions than it may hold open files (100,000 partitions, a
//! 20,000-file limit). Each log's active segment file is a [`LogFile`]: a path and, while it is
//! open, the `DmaFile`. The files open on one thread (a broker's shard) are kept in least
//! recently used order; past the thread's budget ([`set_open_logs_max`]) the least recently used
//! file that nothing is using (no write, read or fdatasync holds it) is closed, and opened again
//! by the next operation that needs it. A file in use is never closed under it, so the budget
//! can be exceeded for as long as more files are in use at once than it allows.
//!
//! Closing a file does not weaken durability: an fdatasync flushes the file (its inode), not the
//! descriptor it is issued on, so one issued on a reopened descriptor covers what was written
//! through the closed one.

use crate::dma;
use crate::error::Result;
use glommio::io::DmaFile;
use quiver_proto::Offset;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::task::{Poll, Waker};

/// The default budget of open active-segment files per thread: no limit until the owner sets
/// one (an engine used alone, in tests and tools, keeps every log's file open).
const UNLIMITED: usize = usize::MAX;

thread_local! {
    static OPEN: RefCell<Lru> = const {
        RefCell::new(Lru {
            max: UNLIMITED,
            tick: 0,
            order: BTreeMap::new(),
            opening: 0,
            waiters: VecDeque::new(),
        })
    };
}

/// Open files of this thread by the tick they were last used at (oldest first).
struct Lru {
    max: usize,
    tick: u64,
    order: BTreeMap<u64, Weak<Slot>>,
    /// Reopens in flight (counted against the budget before they complete).
    opening: usize,
    /// Reopens waiting for room: every open file is in use.
    waiters: VecDeque<Waker>,
}

impl Lru {
    fn has_room(&self) -> bool {
        self.order.len() + self.opening < self.max
    }
}

/// How long a reopen waiting for room sleeps before it looks again, should a wake be lost to
/// a waiter that was cancelled.
const ROOM_RECHECK: std::time::Duration = std::time::Duration::from_millis(20);

/// A reopen counted in flight (`Lru::opening`) until this is dropped: when the open completes
/// or fails, and also when the future holding it is cancelled (a fetch given up mid-read), which
/// would otherwise leave the count raised and the budget smaller for good.
struct Opening;

impl Drop for Opening {
    fn drop(&mut self) {
        let _ = OPEN.try_with(|o| o.borrow_mut().opening -= 1);
        let _ = OPEN.try_with(|_| wake_waiters());
    }
}

/// Waits until this thread may open one more file within its budget (closing an idle one to
/// make room if it can), and counts the open as in flight while the returned guard lives.
/// Opening first and closing after ran a broker at its budget out of descriptors when one
/// request reopened thousands of files.
async fn room_for_one() -> Opening {
    loop {
        evict_for(1);
        let ready = OPEN.with(|o| {
            let mut o = o.borrow_mut();
            if o.has_room() {
                o.opening += 1;
                true
            } else {
                false
            }
        });
        if ready {
            return Opening;
        }
        let mut registered = false;
        let wait = std::future::poll_fn(|cx| {
            if registered {
                return Poll::Ready(());
            }
            registered = true;
            OPEN.with(|o| o.borrow_mut().waiters.push_back(cx.waker().clone()));
            Poll::Pending
        });
        futures_lite::future::or(wait, async {
            glommio::timer::sleep(ROOM_RECHECK).await;
        })
        .await;
    }
}

/// Wakes as many waiting reopens as there is room for.
fn wake_waiters() {
    let wake: Vec<Waker> = OPEN.with(|o| {
        let mut o = o.borrow_mut();
        // At least one: the caller just let a file fall idle, which the waiter may close to
        // make its room (evict keeps idle files open while within the budget).
        let room = o.max.saturating_sub(o.order.len() + o.opening).max(1);
        let n = room.min(o.waiters.len());
        o.waiters.drain(..n).collect()
    });
    for w in wake {
        w.wake();
    }
}

/// Sets how many active-segment files this thread keeps open (at least 1). Call it on each
/// shard before opening logs; files already open past it close as they fall idle.
pub fn set_open_logs_max(max: usize) {
    OPEN.with(|o| o.borrow_mut().max = max.max(1));
    evict();
}

/// Active-segment files open on this thread now.
pub fn open_logs() -> usize {
    OPEN.with(|o| o.borrow().order.len())
}

/// One active segment's log file: opened on demand, closed when idle and over budget.
#[derive(Clone)]
pub(crate) struct LogFile {
    slot: Rc<Slot>,
}

struct Slot {
    /// The log's directory (shared with the log) and the segment's base: the file's path.
    dir: Rc<Path>,
    base: Offset,
    file: RefCell<Option<Rc<DmaFile>>>,
    /// The tick this file is listed under in the thread's order while it is open.
    tick: Cell<Option<u64>>,
    /// Whether the open descriptor (or the next one opened) has O_DSYNC. Only the log's
    /// flusher changes it (`get_for_write`), and a descriptor of the other kind is never kept.
    dsync: Cell<bool>,
    /// How far the file is known to be preallocated (0: not known since it was opened).
    allocated: Cell<u64>,
    /// Preallocation failed other than for space (the file system cannot): not tried again.
    no_prealloc: Cell<bool>,
}

/// Preallocation ahead of a log's writes (O_DSYNC files): a quarter of the file's length, at
/// least this much ...
const PREALLOC_MIN: u64 = 16 * 1024;
/// ... and at most this much. A window too small puts an fallocate (through an io_uring
/// worker, waited for by the write) in the way every few writes: 1 MiB windows at 37 MB/s a
/// partition gave a p99.9 of 54-82 ms end to end, 8 MiB 9-16 ms. Beyond the log's length, a file
/// holds at most this much (unwritten, reading as zeros) until it is sealed or recovered.
const PREALLOC_MAX: u64 = 8 << 20;

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(t) = self.tick.get() {
            let _ = OPEN.try_with(|o| o.borrow_mut().order.remove(&t));
            let _ = OPEN.try_with(|_| wake_waiters());
        }
    }
}

impl LogFile {
    /// A file just opened (`file`, the log of the segment at `base` in `dir`), counted in the
    /// thread's budget.
    pub(crate) fn new(dir: &Rc<Path>, base: Offset, file: Rc<DmaFile>) -> LogFile {
        let lf = LogFile {
            slot: Rc::new(Slot {
                dir: dir.clone(),
                base,
                file: RefCell::new(Some(file)),
                tick: Cell::new(None),
                dsync: Cell::new(false),
                allocated: Cell::new(0),
                no_prealloc: Cell::new(false),
            }),
        };
        lf.touch();
        evict();
        lf
    }

    /// The file's path.
    pub(crate) fn path(&self) -> PathBuf {
        crate::names::log_path(&self.slot.dir, self.slot.base)
    }

    /// The directory it is in.
    pub(crate) fn dir(&self) -> &Path {
        &self.slot.dir
    }

    /// The file if it is open now (marked used), without opening it.
    pub(crate) fn now(&self) -> Option<Rc<DmaFile>> {
        let f = self.slot.file.borrow().clone();
        if f.is_some() {
            self.touch();
        }
        f
    }

    /// The file, opened again if it was closed.
    pub(crate) async fn get(&self) -> Result<Rc<DmaFile>> {
        Ok(self.get_with_mode().await?.0)
    }

    /// The file for the log's next write, with O_DSYNC if `dsync` (a descriptor of the other
    /// kind is let go first: O_DSYNC cannot be changed on an open one). Only the flusher calls
    /// it, so the mode cannot change again before the descriptor is returned.
    pub(crate) async fn get_for_write(&self, dsync: bool) -> Result<Rc<DmaFile>> {
        if self.slot.dsync.get() != dsync {
            self.slot.dsync.set(dsync);
            if let Some(f) = self.slot.file.borrow_mut().take() {
                if let Some(t) = self.slot.tick.take() {
                    OPEN.with(|o| o.borrow_mut().order.remove(&t));
                }
                glommio::spawn_local(dma::close(f)).detach();
            }
        }
        let (file, mode) = self.get_with_mode().await?;
        debug_assert_eq!(mode, dsync, "only the flusher switches the mode");
        Ok(file)
    }

    /// The file and whether its descriptor has O_DSYNC.
    async fn get_with_mode(&self) -> Result<(Rc<DmaFile>, bool)> {
        if let Some(f) = self.now() {
            return Ok((f, self.slot.dsync.get()));
        }
        let opening = room_for_one().await;
        // Another task may have opened it while this one waited.
        if let Some(f) = self.now() {
            return Ok((f, self.slot.dsync.get()));
        }
        let dsync = self.slot.dsync.get();
        let opened = dma::open_log_rw(&self.path(), dsync).await;
        // No longer in flight: open (and listed by `touch` below) or failed.
        drop(opening);
        let opened = opened?;
        self.slot.allocated.set(0);
        // Another task may have opened it meanwhile: one descriptor per file. One opened in
        // the other mode (switched while this open ran) serves this caller only.
        if self.slot.dsync.get() != dsync {
            return Ok((opened, dsync));
        }
        let f = {
            let mut slot = self.slot.file.borrow_mut();
            match &*slot {
                Some(f) => f.clone(),
                None => {
                    *slot = Some(opened.clone());
                    opened
                }
            }
        };
        self.touch();
        evict();
        Ok((f, dsync))
    }

    /// Preallocates the file past `end` (the log's length after the coming write) when it is
    /// not yet, a window ahead ([`PREALLOC_MIN`], [`PREALLOC_MAX`]), so the write neither
    /// extends the file nor spans written and new blocks and completes without an io_uring
    /// worker. Best effort: without it the write still succeeds (it extends the file, in a
    /// worker), so a failure (the disk full, a file system without fallocate) is only noted.
    pub(crate) async fn preallocate(&self, file: &DmaFile, end: u64) {
        if self.slot.no_prealloc.get() || end <= self.slot.allocated.get() {
            return;
        }
        let window = (end / 4).clamp(PREALLOC_MIN, PREALLOC_MAX);
        let to = dma::align_up(end + window);
        match file.pre_allocate(to, false).await {
            Ok(()) => self.slot.allocated.set(to),
            Err(e) => {
                let e: std::io::Error = e.into();
                if e.raw_os_error() != Some(libc::ENOSPC) {
                    self.slot.no_prealloc.set(true);
                }
                tracing::debug!(file = %self.path().display(), error = %e, "preallocation failed; writes extend the file");
            }
        }
    }

    /// The file was cut: what was preallocated past the cut is not known any more.
    pub(crate) fn forget_preallocation(&self) {
        self.slot.allocated.set(0);
    }

    fn touch(&self) {
        OPEN.with(|o| {
            let mut o = o.borrow_mut();
            if let Some(t) = self.slot.tick.get() {
                o.order.remove(&t);
            }
            o.tick += 1;
            let t = o.tick;
            o.order.insert(t, Rc::downgrade(&self.slot));
            self.slot.tick.set(Some(t));
        });
    }
}

/// Closes idle files past the budget: called where a file falls idle (a write, an fdatasync or
/// a read done), since one in use when another was opened could not be closed then.
pub(crate) fn release() {
    evict();
    wake_waiters();
}

/// Closes the least recently used idle files while more than the budget are open.
fn evict() {
    evict_for(0);
}

/// Closes the least recently used idle files while more than the budget less `more` (files
/// about to be opened) are open, or in flight.
fn evict_for(more: usize) {
    let mut closing = Vec::new();
    OPEN.with(|o| {
        let mut o = o.borrow_mut();
        let want = o.order.len() + o.opening + more;
        if want <= o.max {
            return;
        }
        let mut excess = want - o.max;
        let mut gone = Vec::new();
        for (&t, weak) in o.order.iter() {
            if excess == 0 {
                break;
            }
            let Some(slot) = weak.upgrade() else {
                gone.push(t);
                excess -= 1;
                continue;
            };
            let idle = slot
                .file
                .borrow()
                .as_ref()
                .is_some_and(|f| Rc::strong_count(f) == 1);
            if idle {
                if let Some(f) = slot.file.borrow_mut().take() {
                    closing.push(f);
                }
                slot.tick.set(None);
                gone.push(t);
                excess -= 1;
            }
        }
        for t in gone {
            o.order.remove(&t);
        }
    });
    for f in closing {
        glommio::spawn_local(dma::close(f)).detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reopen whose future is dropped while its open is in flight (a fetch given up) gives its
    /// place in the budget back: a count left raised would shrink the budget for good, and with
    /// enough of them every later reopen would wait forever.
    #[test]
    fn a_cancelled_reopen_gives_its_place_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let root: Rc<Path> = path.as_path().into();
                let base = Offset(0);
                let file = dma::open_rw(&crate::names::log_path(&root, base), true)
                    .await
                    .unwrap();
                let lf = LogFile::new(&root, base, file);
                let closing = lf.slot.file.borrow_mut().take().unwrap();
                dma::close(closing).await;
                for _ in 0..3 {
                    let first = futures_lite::future::poll_once(Box::pin(lf.get())).await;
                    assert!(first.is_none(), "the open is in flight, not done at once");
                    assert_eq!(OPEN.with(|o| o.borrow().opening), 0);
                }
                assert!(lf.get().await.is_ok());
                assert_eq!(OPEN.with(|o| o.borrow().opening), 0);
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
