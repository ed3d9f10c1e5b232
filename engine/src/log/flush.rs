//! The flusher: one task per log that drives the group commit (`commit.rs`). It takes a job
//! (everything staged), writes it (log and index blocks at once), issues the fdatasync the job
//! asks for and goes on to the next job while that runs; each fdatasync reports back when it
//! completes. Under `IntervalMs`, a timer makes sure an fdatasync follows a write within the
//! interval.

use super::commit::{self, Next, SyncOrder};
use super::{Mark, Shared, State, Status};
use crate::config::FlushPolicy;
use crate::dma::{self, WriteBuf};
use crate::error::{Error, Result};
use crate::segment::{self, ActiveFiles};
use quiver_proto::Offset;
use std::rc::{Rc, Weak};
use std::time::Instant;

/// Index points the active segment's index files may lag behind its log by: they are written
/// once this many new points are due (and in full at roll and close), not with every group, so a
/// group is usually one write, not three. After a crash, open rebuilds the missing points from the
/// log (at most this many index intervals of it, 1 MiB at the default 4 KiB, walked anyway from
/// the last point on disk).
const INDEX_POINTS_PER_WRITE: usize = 256;

/// One flush cycle's work, taken from the state under one borrow: the group commit's job and the
/// bytes that go with it.
struct Job {
    files: ActiveFiles,
    log: Option<WriteBuf>,
    index: Option<[(u64, Vec<u8>); 2]>,
    index_from: usize,
    mark: Mark,
    commit: commit::Job,
    /// Under `FlushPolicy::Sync`: the log is written through an O_DSYNC descriptor, so the
    /// write is durable when it completes and no fdatasync follows it.
    dsync: bool,
}

impl Shared {
    /// Starts the flusher task unless it is running.
    pub(super) fn kick(this: &Rc<Shared>) {
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
    /// while that fdatasync runs. Up to [`commit::SYNCS_IN_FLIGHT_MAX`] fdatasyncs overlap with
    /// writes; each covers every write completed before it was issued, so the durable end only
    /// moves forward, to the end of the latest group whose fdatasync completed.
    async fn flusher(this: Rc<Shared>) {
        loop {
            let listen = this.progress.listen();
            let job = {
                let mut s = this.state.borrow_mut();
                match s.commit.take_job(Instant::now()) {
                    Next::Job(j) => Some(take_bytes(&mut s, j)),
                    Next::WaitForSync => None,
                    Next::Idle => {
                        s.flushing = false;
                        drop(s);
                        this.progress.notify_all();
                        this.release_lock_if_idle();
                        return;
                    }
                }
            };
            let Some(mut job) = job else {
                listen.await;
                continue;
            };
            let res = write_job(&mut job).await;
            crate::files::release();
            let mut cleanup = None;
            {
                let mut s = this.state.borrow_mut();
                match res {
                    Ok(durable) => {
                        s.active.written = job.mark.clone();
                        if job.index.is_some() {
                            s.active.points_on_disk = s.active.points_on_disk.max(job.mark.points);
                        }
                        if let Some(order) = s.commit.written(job.commit, Instant::now()) {
                            if durable {
                                // An O_DSYNC write: the kernel flushed it (and every write to
                                // the file completed before it) when it completed, which is
                                // what an fdatasync issued now would do.
                                dma::record_dsync_write(|| job.files.log.path(), job.mark.len);
                                s.commit.synced(order);
                            } else {
                                let (sh, files) = (this.clone(), job.files.clone());
                                glommio::spawn_local(Shared::sync(sh, files, order)).detach();
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "log write failed; discarding unwritten appends");
                        s.commit.write_failed();
                        s.drop_unwritten(e);
                        cleanup = Some((s.active.files.clone(), s.active.written.len));
                    }
                }
            }
            this.data.notify_all();
            this.progress.notify_all();
            if let Some((files, len)) = cleanup {
                // Cut what the failed write may have left past the last good byte, so it can
                // never be mistaken for data after a later crash.
                files.log.forget_preallocation();
                let cut = match files.log.get().await {
                    Ok(log) => dma::truncate(&log, &files.log.path(), len).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = cut {
                    this.state
                        .borrow_mut()
                        .set_status(Status::Failed(Box::new(e)));
                }
            }
            Shared::arm_sync_timer(&this);
        }
    }

    /// One fdatasync covering every write completed before it; moves the durable end to its end.
    async fn sync(this: Rc<Shared>, files: ActiveFiles, order: SyncOrder) {
        let res = match files.log.get().await {
            Ok(log) => dma::fdatasync(&log, &files.log.path()).await,
            Err(e) => Err(e),
        };
        crate::files::release();
        {
            let mut s = this.state.borrow_mut();
            match res {
                Ok(()) => s.commit.synced(order),
                Err(e) => {
                    // What reached the disk is unknown: stop taking appends; reopening recovers
                    // from what is there.
                    tracing::error!(error = %e, "fdatasync failed; the log stops taking appends");
                    s.commit.sync_failed();
                    s.drop_unwritten(e.clone());
                    s.set_status(Status::Failed(Box::new(e)));
                }
            }
        }
        this.data.notify_all();
        this.progress.notify_all();
        this.release_lock_if_idle();
    }

    /// Under `IntervalMs`, makes sure an fdatasync happens within the interval of the first
    /// unsynced write, even if no further append comes.
    fn arm_sync_timer(this: &Rc<Shared>) {
        let delay = {
            let mut s = this.state.borrow_mut();
            if s.sync_timer_armed {
                return;
            }
            let Some(delay) = s.commit.sync_timer(Instant::now()) else {
                return;
            };
            s.sync_timer_armed = true;
            delay
        };
        let weak: Weak<Shared> = Rc::downgrade(this);
        glommio::spawn_local(async move {
            glommio::timer::sleep(delay).await;
            if let Some(sh) = weak.upgrade() {
                {
                    let mut s = sh.state.borrow_mut();
                    s.sync_timer_armed = false;
                    s.commit.request_sync();
                }
                Shared::kick(&sh);
            }
        })
        .detach();
    }
}

/// The bytes of the group commit's job `j`: the pending write buffer (if it writes anything),
/// and the index blocks once enough new points are due.
fn take_bytes(s: &mut State, j: commit::Job) -> Job {
    let a = &mut s.active;
    let pending = a.pending.take();
    debug_assert_eq!(
        pending.is_some(),
        j.has_bytes(),
        "staged bytes and offsets agree"
    );
    // From the first point not yet in the files (after recovery, points rebuilt by the walk
    // are written with the next group).
    let index_from = a.points_on_disk.min(a.handed.points);
    let (log, mark) = match pending {
        Some(p) => {
            let mut mark = p.mark;
            mark.tail = p.buf.tail().into();
            (Some(p.buf), mark)
        }
        None => (None, a.handed.clone()),
    };
    let index = (mark.points >= index_from + INDEX_POINTS_PER_WRITE)
        .then(|| segment::index_bytes(&a.points, index_from, mark.points));
    a.handed = mark.clone();
    Job {
        files: a.files.clone(),
        log,
        index,
        index_from,
        mark,
        commit: j,
        dsync: s.config.flush == FlushPolicy::Sync,
    }
}

/// Writes one flush job: the log write and the index writes in flight together. True when the
/// log write went through an O_DSYNC descriptor: durable at its completion.
async fn write_job(job: &mut Job) -> Result<bool> {
    let f = &job.files;
    let log_buf = job.log.take();
    let dsync = job.dsync;
    let log_fut = async {
        match log_buf {
            Some(buf) => {
                let file = f.log.get_for_write(dsync).await?;
                if dsync {
                    f.log.preallocate(&file, buf.end()).await;
                }
                buf.write(&file, &f.log.path(), dsync).await?;
                Ok(dsync)
            }
            None => Ok(false),
        }
    };
    let index_fut = async {
        if let Some(parts) = &job.index {
            let sizes = [
                crate::index::OFFSET_ENTRY_BYTES,
                crate::index::TIME_ENTRY_BYTES,
            ];
            // Opened for this write and closed after it (`segment::ActiveFiles`).
            let paths = f.paths();
            let [index, time] = segment::open_index_files(&paths).await?;
            let targets = [(&index, &paths.index), (&time, &paths.time)];
            for (((file, path), (pos, bytes)), size) in targets.into_iter().zip(parts).zip(sizes) {
                // The bytes before entry `index_from` in its block are on disk already.
                let tail_len = (job.index_from * size) as u64 - pos;
                let (tail, rest) = bytes.split_at(tail_len as usize);
                let mut wb = WriteBuf::new(*pos, tail, bytes.len());
                wb.push(rest);
                wb.write(file, path, false).await?;
            }
            crate::dma::close(index).await;
            crate::dma::close(time).await;
        }
        Ok::<(), Error>(())
    };
    let (a, b) = futures_lite::future::zip(log_fut, index_fut).await;
    let durable = a?;
    b?;
    Ok(durable)
}

impl super::PartitionLog {
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
                if s.commit.durable_end() > offset
                    || s.truncations != truncations
                    || !matches!(s.status, Status::Open)
                {
                    return;
                }
            }
            listen.await;
        }
    }
}
