//! Read-ahead for sequential readers.
//!
//! Reads are direct (no page cache), so a consumer that fetches a partition from the start waits
//! for the disk on every fetch: read, send, read, send. After a read that stopped short of the
//! readable end, the log starts reading the bytes that follow, sized like the read that was just
//! served, in the background. The next read that asks for exactly that offset takes those bytes
//! instead of waiting for the disk; everything else reads as before.
//!
//! Bounds: each log keeps at most [`PER_LOG`] read-aheads; every shard (glommio executor, one
//! thread) has a byte budget shared by all its logs ([`set_shard_budget`], default
//! [`SHARD_BUDGET_DEFAULT`]), and bytes nobody takes are dropped after [`TTL`]. A read-ahead that
//! does not fit the budget is simply not started.

use crate::dma;
use crate::error::Result;
use crate::notify::Notify;
use glommio::io::{DmaFile, ReadResult};
use quiver_proto::Offset;
use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Read-aheads one log keeps (two consumers reading one partition at different places each
/// keep theirs).
pub(crate) const PER_LOG: usize = 2;
/// Bytes read ahead on one shard at most, by default.
pub const SHARD_BUDGET_DEFAULT: usize = 64 * 1024 * 1024;
/// How long read-ahead bytes wait for their reader.
pub(crate) const TTL: Duration = Duration::from_secs(10);

thread_local! {
    static BUDGET: Cell<usize> = const { Cell::new(SHARD_BUDGET_DEFAULT) };
    static IN_USE: Cell<usize> = const { Cell::new(0) };
}

/// Process-wide: bytes read ahead, and of those, bytes a reader took.
static READ_BYTES: AtomicU64 = AtomicU64::new(0);
static TAKEN_BYTES: AtomicU64 = AtomicU64::new(0);

/// Bytes read ahead so far on every shard, and of those the bytes a read took (the rest were
/// replaced, expired, or outlived their log).
pub fn totals() -> (u64, u64) {
    (READ_BYTES.load(Relaxed), TAKEN_BYTES.load(Relaxed))
}

/// Sets the read-ahead byte budget of the calling shard (thread); 0 turns read-ahead off there.
pub fn set_shard_budget(bytes: usize) {
    BUDGET.with(|b| b.set(bytes));
}

/// Read-ahead bytes held on the calling shard now (started or waiting for their reader).
pub fn shard_bytes_in_use() -> usize {
    IN_USE.with(Cell::get)
}

/// Bytes of the shard budget held until dropped.
pub(crate) struct Reservation(usize);

impl Reservation {
    fn take(n: usize) -> Option<Reservation> {
        let budget = BUDGET.with(Cell::get);
        IN_USE.with(|u| {
            if n == 0 || u.get() + n > budget {
                return None;
            }
            u.set(u.get() + n);
            Some(Reservation(n))
        })
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        IN_USE.with(|u| u.set(u.get() - self.0));
    }
}

enum SlotState {
    Reading,
    Ready(ReadResult, Reservation),
    Failed,
    Gone,
}

struct Slot {
    state: RefCell<SlotState>,
    changed: Notify,
}

/// Where a read-ahead sits: the bytes of segment `base` from file position `pos`, where the batch
/// with base offset `offset` starts. Valid while the log's truncation count is `truncations`.
pub(crate) struct ReadAhead {
    pub base: Offset,
    pub pos: u64,
    pub offset: Offset,
    pub truncations: u64,
    slot: Rc<Slot>,
}

/// What a read starts from when its read-ahead was there: the bytes, their file position, and
/// the budget they hold until the read is done.
pub(crate) struct Preloaded {
    pub buf: ReadResult,
    pub pos: u64,
    pub offset: Offset,
    pub _reservation: Reservation,
}

/// Where to read ahead: `len` bytes of `file` from `pos`, holding the batch at `offset`.
pub(crate) struct Ahead {
    pub file: Rc<DmaFile>,
    pub path: PathBuf,
    pub base: Offset,
    pub pos: u64,
    pub offset: Offset,
    pub len: usize,
    pub truncations: u64,
}

impl ReadAhead {
    /// Starts reading in the background, if the shard's budget has room.
    pub(crate) fn start(a: Ahead) -> Option<ReadAhead> {
        let reservation = Reservation::take(a.len)?;
        let slot = Rc::new(Slot {
            state: RefCell::new(SlotState::Reading),
            changed: Notify::default(),
        });
        let weak: Weak<Slot> = Rc::downgrade(&slot);
        let (file, path, pos, len) = (a.file, a.path, a.pos, a.len);
        glommio::spawn_local(async move {
            let res: Result<ReadResult> = dma::read(&file, &path, pos, len).await;
            drop(file);
            // Dropped meanwhile (replaced, or the log closed): the bytes go now.
            let Some(slot) = weak.upgrade() else { return };
            *slot.state.borrow_mut() = match res {
                Ok(buf) => {
                    READ_BYTES.fetch_add(buf.len() as u64, Relaxed);
                    SlotState::Ready(buf, reservation)
                }
                Err(e) => {
                    tracing::debug!(error = %e, "read-ahead failed; the reader will read itself");
                    SlotState::Failed
                }
            };
            slot.changed.notify_all();
            drop(slot);
            glommio::timer::sleep(TTL).await;
            if let Some(slot) = weak.upgrade() {
                let mut s = slot.state.borrow_mut();
                if matches!(*s, SlotState::Ready(..)) {
                    *s = SlotState::Gone;
                }
            }
        })
        .detach();
        Some(ReadAhead {
            base: a.base,
            pos: a.pos,
            offset: a.offset,
            truncations: a.truncations,
            slot,
        })
    }

    /// The bytes, once read; `None` if the read failed or they expired (read them directly).
    pub(crate) async fn take(self) -> Option<Preloaded> {
        loop {
            let listen = self.slot.changed.listen();
            {
                let mut s = self.slot.state.borrow_mut();
                match std::mem::replace(&mut *s, SlotState::Gone) {
                    SlotState::Reading => *s = SlotState::Reading,
                    SlotState::Ready(buf, reservation) => {
                        TAKEN_BYTES.fetch_add(buf.len() as u64, Relaxed);
                        return Some(Preloaded {
                            buf,
                            pos: self.pos,
                            offset: self.offset,
                            _reservation: reservation,
                        });
                    }
                    SlotState::Failed | SlotState::Gone => return None,
                }
            }
            listen.await;
        }
    }
}
