//! Changes to the segment set, each under the exclusive right (`Shared::exclusive`: nothing
//! staged, no flush or fdatasync out, appends held off) and in a detached task: roll (seal the
//! active segment, start the next), close, delete, retention, truncation; and `verify`, which
//! scrubs every segment.

use super::{
    now_ms, run_detached, Active, Closed, Mark, PartitionLog, RetentionReport, Shared, State,
    Status,
};
use crate::dma::{self, CHUNK_BYTES_MAX};
use crate::error::{Error, Result};
use crate::index::{self, IndexPoint};
use crate::segment::{self, ActiveFiles, Cursor, Recovered, SegmentPaths, WalkStart};
use quiver_proto::{Offset, TimestampMs};

impl PartitionLog {
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
            sh.truncate_locked(offset).await
        })
        .await
    }

    /// Empties the log and starts it again at `offset`, past its end: what a follower does
    /// when everything it holds lies below its leader's log start (retention deleted the rest
    /// on the leader; Kafka's "truncate fully and start at"). Every segment goes, then an empty
    /// segment is made at `offset` with an empty producers' snapshot; a crash in between
    /// leaves an empty log, which asks again from offset 0 and comes back here. Returns false
    /// (and changes nothing) when `offset` is not past the end.
    pub async fn restart_at(&self, offset: Offset) -> Result<bool> {
        let sh = self.shared.clone();
        run_detached(async move {
            let _g = Shared::exclusive(&sh, false).await?;
            sh.restart_locked(offset).await
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
                s.set_status(Status::Deleted);
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
            let dir = sh.dir.to_path_buf();
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
            let mut v: Vec<(Offset, u64)> = s.closed.iter().map(|c| (c.base, c.size)).collect();
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
                    resume_at: Some(h.next),
                });
            }
            if let Some((pos, why)) = w.stop {
                tracing::error!(segment = %paths.log.display(), position = pos, %why, "verify: corrupt batch");
                found.push(Error::corrupt(&paths.log, pos, why));
            }
        }
        Ok(found)
    }
}

impl Shared {
    /// Seals the active segment (roll point, exact file lengths, fdatasync) and opens a new one
    /// at the end offset. Caller holds the exclusive guard.
    pub(super) async fn roll_locked(&self) -> Result<bool> {
        let (files, mark, end, mut points, on_disk, interval) = {
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
                s.commit.written_end(),
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
        segment::write_producers(&self.dir, end, snapshot).await?;
        dma::sync_dir(&self.dir).await?;
        let rec = segment::recover_active(&self.dir, end, interval).await?;
        dma::sync_dir(&self.dir).await?;
        {
            let mut s = self.state.borrow_mut();
            s.closed.push(Closed {
                base: files.base,
                size: mark.len,
                max_timestamp: mark.max_timestamp,
            });
            // The new segment is empty: the group commit's ends stay where they are.
            debug_assert_eq!(rec.next_offset, s.commit.written_end());
            s.active = Active::from_recovered(rec, now_ms());
        }
        tracing::debug!(dir = %self.dir.display(), base = end.0, "rolled to a new segment");
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
        let p = &files.paths();
        let [index, time] = segment::open_index_files(p).await?;
        segment::write_index(
            [(&index, &p.index), (&time, &p.time)],
            points,
            on_disk.min(points.len()),
            points.len(),
            true,
        )
        .await?;
        let log = files.log.get().await?;
        dma::truncate(&log, &p.log, mark.len).await?;
        dma::fdatasync(&log, &p.log).await?;
        dma::fdatasync(&index, &p.index).await?;
        dma::fdatasync(&time, &p.time).await?;
        dma::close(index).await;
        dma::close(time).await;
        Ok(())
    }

    async fn close_locked(&self) -> Result<()> {
        let (files, mark, end, mut points, on_disk, untouched) = {
            let s = self.state.borrow();
            let a = &s.active;
            let now = (a.files.base, a.written.len, s.truncations);
            (
                a.files.clone(),
                a.written.clone(),
                s.commit.written_end(),
                a.points[..a.written.points].to_vec(),
                a.points_on_disk,
                matches!(s.status, Status::Open) && s.sealed_at == Some(now),
            )
        };
        // Untouched since an open that found it sealed (or empty): the files are already as a
        // seal leaves them, durable, with the producer snapshot at the end.
        let res = if untouched {
            Ok(())
        } else {
            self.seal(&files, &mark, &mut points, on_disk).await
        };
        if res.is_ok() && !untouched {
            // The state at the end, so that the next open need not read the segment's batches.
            // Without it (a failed write, or a rename a crash undid) open reads them.
            let snapshot = self.state.borrow().producers.encode();
            if let Err(e) = segment::write_producers(&self.dir, end, snapshot).await {
                tracing::warn!(dir = %self.dir.display(), error = %e, "producer snapshot at close not written");
            }
        }
        {
            let mut s = self.state.borrow_mut();
            if res.is_ok() {
                s.commit.all_durable();
            }
            s.set_status(Status::Closed);
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
            .retain(|r| !victims.iter().any(|v| v.base == r.segment_base));
        Ok(victims)
    }

    /// Deletes the files of segments already taken out of the log (`retention_victims`). A
    /// reader that planned a read in one of them before keeps its open file; one that has to
    /// open it finds it gone, as it would a moment later anyway.
    async fn delete_segments(&self, victims: Vec<Closed>) -> Result<RetentionReport> {
        let mut report = RetentionReport::default();
        for v in &victims {
            report.deleted_segments.push(v.base);
            report.deleted_bytes += v.size;
        }
        if !victims.is_empty() {
            segment::delete_files(&self.dir, victims.iter().map(|v| v.base).collect()).await?;
        }
        report.start_offset = self.state.borrow().start_offset();
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

    async fn restart_locked(&self, offset: Offset) -> Result<bool> {
        let (doomed, interval, end) = {
            let mut s = self.state.borrow_mut();
            s.check_open()?;
            let end = s.commit.written_end();
            if offset <= end {
                return Ok(false);
            }
            s.truncating = true;
            s.truncations += 1;
            s.commit.discard();
            s.drop_unwritten(Error::Discarded(format!("log restarted at {offset}")));
            s.cache.clear();
            s.tail.clear();
            self.readaheads.borrow_mut().clear();
            let mut doomed: Vec<Offset> = s.closed.iter().map(|c| c.base).collect();
            doomed.push(s.active.files.base);
            (doomed, s.config.index_interval_bytes, end)
        };
        tracing::info!(dir = %self.dir.display(), from = end.0, to = offset.0, "log emptied to start again past its end");
        let res: Result<Recovered> = async {
            // Newest first, so a crash leaves a shorter log, never one with a gap.
            segment::delete_files(&self.dir, doomed.iter().rev().copied().collect()).await?;
            segment::remove_producers_above(&self.dir, Offset(0)).await?;
            let empty = super::Producers::default().encode();
            segment::write_producers(&self.dir, offset, empty).await?;
            dma::sync_dir(&self.dir).await?;
            let rec = segment::recover_active(&self.dir, offset, interval).await?;
            dma::sync_dir(&self.dir).await?;
            Ok(rec)
        }
        .await;
        let mut s = self.state.borrow_mut();
        s.truncating = false;
        s.truncations += 1;
        let out = match res {
            Ok(rec) => {
                s.closed.clear();
                s.damage.clear();
                s.producers = super::Producers::default();
                s.active = Active::from_recovered(rec, now_ms());
                s.commit.truncated(offset);
                Ok(true)
            }
            Err(e) => {
                s.set_status(Status::Failed(Box::new(e.clone())));
                Err(e)
            }
        };
        drop(s);
        self.data.notify_all();
        self.progress.notify_all();
        out
    }

    async fn truncate_locked(&self, offset: Offset) -> Result<Offset> {
        let (end, seg) = {
            let s = self.state.borrow();
            s.check_open()?;
            let end = s.commit.written_end();
            if offset >= end {
                return Ok(end);
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
                let (base, points, file, len) = {
                    let s = self.state.borrow();
                    let a = &s.active;
                    (
                        a.files.base,
                        a.points[..a.written.points].to_vec(),
                        a.files.log.clone(),
                        a.written.len,
                    )
                };
                (base, points, file.get().await?, len)
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
            expected = f.last_offset.plus(1);
        }
        let new_end = expected;
        let keep_points = points
            .iter()
            .take_while(|p| u64::from(p.position) < pos)
            .count();
        tracing::info!(dir = %self.dir.display(), from = end.0, to = new_end.0, "truncating log");
        let (doomed, interval) = {
            let mut s = self.state.borrow_mut();
            s.truncating = true;
            s.truncations += 1;
            s.commit.discard();
            s.drop_unwritten(Error::Discarded(format!("log truncated to {new_end}")));
            s.cache.clear();
            s.tail.clear();
            self.readaheads.borrow_mut().clear();
            let mut doomed: Vec<Offset> = s
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
                    r.segment_base < base || (r.segment_base == base && r.position < pos)
                });
                s.producers.forget_from(new_end);
                let recovered_end = rec.next_offset;
                s.active = Active::from_recovered(rec, now_ms());
                s.commit.truncated(recovered_end);
                Ok(recovered_end)
            }
            Err(e) => {
                s.set_status(Status::Failed(Box::new(e.clone())));
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
        base: Offset,
        doomed: &[Offset],
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
            dma::close(f).await;
        }
        let log = dma::open_rw(&p.log, false).await?;
        dma::truncate(&log, &p.log, pos).await?;
        dma::fdatasync(&log, &p.log).await?;
        dma::close(log).await;
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
