//! Group commit, as bookkeeping only: which offsets are staged, handed to the flusher, written,
//! covered by an fdatasync issued or completed, and what each waiting append is told. No I/O, no
//! glommio, no `RefCell`: the flusher task (`flush.rs`) does the writes and fdatasyncs and
//! reports back here, so every rule below is tested without a disk (the table at the bottom).
//!
//! # Call order
//!
//! One flusher at a time; it alone calls 2 and 3, and has at most one job out.
//!
//! 1. [`stage`](GroupCommit::stage): an append took offsets up to `end` (its bytes are in the
//!    log's pending buffer). Keep the [`Ticket`]; a duplicate's answer waits on
//!    [`ticket`](GroupCommit::ticket).
//! 2. [`take_job`](GroupCommit::take_job): the flusher's next step: a [`Job`] (write what was
//!    staged, `[from, end)`, then fdatasync if `sync`), [`Next::WaitForSync`] while
//!    [`SYNCS_IN_FLIGHT_MAX`] fdatasyncs are out, or [`Next::Idle`] (the flusher ends).
//! 3. [`written`](GroupCommit::written) when the job's write completed: returns the fdatasync to
//!    issue now, if the job asked for one; or [`write_failed`](GroupCommit::write_failed).
//! 4. [`synced`](GroupCommit::synced) or [`sync_failed`](GroupCommit::sync_failed) when an
//!    fdatasync completes, in any order (up to [`SYNCS_IN_FLIGHT_MAX`] are out, overlapping
//!    the next job's write).
//! 5. [`outcome`](GroupCommit::outcome) of a ticket, at any time: what its append is told.
//!
//! Out of band: [`discard`](GroupCommit::discard) then [`truncated`](GroupCommit::truncated)
//! for a truncation (no job is out then, but an fdatasync the interval timer started may be),
//! [`all_durable`](GroupCommit::all_durable) once close has fdatasynced everything written,
//! [`stop`](GroupCommit::stop) when the log stops taking appends,
//! [`request_sync`](GroupCommit::request_sync) when the interval timer fires
//! ([`sync_timer`](GroupCommit::sync_timer) says when to arm it), and
//! [`set_policy`](GroupCommit::set_policy).
//!
//! # Invariants
//!
//! * `durable <= written`, always; `written <= handed <= staged`, but for a job handed out
//!   before a failed fdatasync and written after it (the log has stopped by then; see
//!   [`written`]).
//! * Under [`FlushPolicy::Sync`] an append is acknowledged once an fdatasync issued after its
//!   bytes were written has completed; one fdatasync acknowledges every append written before it
//!   (group commit); the durable end only moves forward, to the end of the latest group whose
//!   fdatasync completed, whatever order they complete in. Under [`FlushPolicy::IntervalMs`] an
//!   append is acknowledged once written, and an fdatasync follows within the interval.
//! * An fdatasync issued before a truncation makes nothing durable once it has run (what it
//!   covered is cut, and its offsets are given again).
//! * A discard (failed write, failed fdatasync, truncation) forgets everything staged and not
//!   written, bumps the [`Generation`] (offsets past the written end are given again), and
//!   records what was acknowledged at that moment: an append of an older generation succeeded
//!   iff it was acknowledged before the first discard after it.
//!
//! [`written`]: GroupCommit::written

use crate::config::FlushPolicy;
use quiver_proto::Offset;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// fdatasyncs that may run while the flusher writes the next group.
pub(crate) const SYNCS_IN_FLIGHT_MAX: usize = 4;
/// Discard records kept so a waiting append can tell whether its bytes survived a failure.
pub(crate) const DISCARDS_KEPT: usize = 64;

/// Counts the discards of a log: the offsets past the written end are given again after each,
/// so an append's target offset means something only with the generation it was staged in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Generation(u64);

impl Generation {
    fn next(self) -> Generation {
        Generation(self.0 + 1)
    }
}

/// What an append waits for: the log's acknowledged end reaching `target` in `generation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ticket {
    pub generation: Generation,
    pub target: Offset,
}

/// What an append waiting on a [`Ticket`] is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Not yet acknowledged (the caller also checks whether the log has stopped).
    Waiting,
    /// Acknowledged under the flush policy.
    Acknowledged,
    /// Staged bytes were discarded since, but this append had been acknowledged before.
    Survived,
    /// Discarded (or acknowledged so long ago that the record of it is gone): it failed.
    Lost,
}

/// One flush cycle: write the offsets `[from, end)` staged (none when `from == end`: the job
/// only syncs), then issue an fdatasync if `sync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Job {
    pub from: Offset,
    pub end: Offset,
    pub sync: bool,
}

impl Job {
    /// Whether the job writes staged bytes (else it only syncs what is written).
    pub(crate) fn has_bytes(&self) -> bool {
        self.end > self.from
    }
}

/// The flusher's next step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    Job(Job),
    /// [`SYNCS_IN_FLIGHT_MAX`] fdatasyncs are out: wait for one to complete.
    WaitForSync,
    /// Nothing to write or sync (or the log stopped): the flusher ends.
    Idle,
}

/// An fdatasync to issue now; once it completes, every offset below `end` is durable, unless
/// the log was truncated meanwhile (`cut` tells).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SyncOrder {
    pub end: Offset,
    /// Truncations before it was issued.
    cut: u64,
}

#[derive(Clone, Copy, Debug)]
struct Discard {
    /// The generation the discard started.
    generation: Generation,
    /// The acknowledged end at that moment.
    acked: Offset,
}

/// The group-commit state of one log (see the module docs for the call order).
#[derive(Debug)]
pub(crate) struct GroupCommit {
    policy: FlushPolicy,
    /// The end of every offset given (the next append's base offset).
    staged: Offset,
    /// The end of what jobs have taken.
    handed: Offset,
    /// The end of what is in the file (readable).
    written: Offset,
    /// The end covered by the latest fdatasync issued (completed or not).
    sync_issued: Offset,
    /// The end covered by completed fdatasyncs.
    durable: Offset,
    syncs_in_flight: usize,
    /// When the latest fdatasync was issued (or the log opened).
    last_sync: Instant,
    /// The interval timer fired: the next job syncs.
    sync_requested: bool,
    generation: Generation,
    /// Oldest first, at most [`DISCARDS_KEPT`].
    discards: VecDeque<Discard>,
    /// The log takes no more jobs (closed, deleted, or failed).
    stopped: bool,
    /// Truncations so far: an fdatasync issued before one covers bytes that are gone.
    cuts: u64,
}

impl GroupCommit {
    /// A log whose every offset below `end` is written and durable (as open leaves it).
    pub(crate) fn new(end: Offset, policy: FlushPolicy, now: Instant) -> GroupCommit {
        GroupCommit {
            policy,
            staged: end,
            handed: end,
            written: end,
            sync_issued: end,
            durable: end,
            syncs_in_flight: 0,
            last_sync: now,
            sync_requested: false,
            generation: Generation::default(),
            discards: VecDeque::new(),
            stopped: false,
            cuts: 0,
        }
    }

    // Getters.

    /// The end of every offset given: the next append's base offset.
    pub(crate) fn staged_end(&self) -> Offset {
        self.staged
    }

    /// Offsets below this are in the file, and readable.
    pub(crate) fn written_end(&self) -> Offset {
        self.written
    }

    /// Offsets below this have been fdatasynced.
    pub(crate) fn durable_end(&self) -> Offset {
        self.durable
    }

    /// Offsets below this are acknowledged under the flush policy.
    pub(crate) fn ack_end(&self) -> Offset {
        match self.policy {
            FlushPolicy::Sync => self.durable,
            FlushPolicy::IntervalMs(_) => self.written,
        }
    }

    /// Whether bytes are staged that no job has taken yet.
    pub(crate) fn has_staged(&self) -> bool {
        self.staged > self.handed
    }

    pub(crate) fn syncs_in_flight(&self) -> usize {
        self.syncs_in_flight
    }

    /// Whether something written is not yet durable.
    pub(crate) fn unsynced(&self) -> bool {
        self.durable < self.written
    }

    // 1. Staging.

    /// An append took the offsets up to `end`; its ticket.
    pub(crate) fn stage(&mut self, end: Offset) -> Ticket {
        debug_assert!(end >= self.staged, "offsets are given in order");
        debug_assert!(!self.stopped, "a stopped log takes no appends");
        self.staged = end;
        self.ticket(end)
    }

    /// A ticket for `target` in the current generation (a duplicate's answer waits on the first
    /// write of it).
    pub(crate) fn ticket(&self, target: Offset) -> Ticket {
        Ticket {
            generation: self.generation,
            target,
        }
    }

    // 2. The flusher's next step.

    /// Hands out everything staged (and an fdatasync when the policy says one is due), waits
    /// while [`SYNCS_IN_FLIGHT_MAX`] are out, or says there is nothing to do.
    pub(crate) fn take_job(&mut self, now: Instant) -> Next {
        if self.syncs_in_flight >= SYNCS_IN_FLIGHT_MAX {
            return Next::WaitForSync;
        }
        if self.stopped {
            return Next::Idle;
        }
        let sync_due = match self.policy {
            FlushPolicy::Sync => true,
            FlushPolicy::IntervalMs(ms) => {
                self.sync_requested
                    || now.saturating_duration_since(self.last_sync) >= Duration::from_millis(ms)
            }
        };
        let sync_needed = self.sync_issued < self.written;
        let work = self.has_staged() || (sync_needed && sync_due);
        if !work {
            return Next::Idle;
        }
        if sync_due {
            self.sync_requested = false;
        }
        let job = Job {
            from: self.handed,
            end: self.staged,
            sync: sync_due,
        };
        self.handed = self.staged;
        Next::Job(job)
    }

    // 3. The job's write completed.

    /// `job`'s write completed: its offsets are readable. Returns the fdatasync to issue now
    /// (it covers every write completed so far), if the job asked for one.
    ///
    /// A job handed out before a failed fdatasync may complete after it: its bytes are in the
    /// file, so they count as written (and its fdatasync is issued), though the log has stopped
    /// and the appends in it were already told they failed.
    pub(crate) fn written(&mut self, job: Job, now: Instant) -> Option<SyncOrder> {
        self.written = job.end;
        if !job.sync {
            return None;
        }
        self.syncs_in_flight += 1;
        self.sync_issued = job.end;
        self.last_sync = now;
        Some(SyncOrder {
            end: job.end,
            cut: self.cuts,
        })
    }

    /// The job's write failed: everything not yet written is discarded (the log stays usable).
    pub(crate) fn write_failed(&mut self) {
        self.discard();
    }

    // 4. An fdatasync completed.

    /// `order`'s fdatasync completed: every offset below its end is durable, unless the log was
    /// truncated since it was issued (the interval timer can start one while a truncation runs):
    /// then what it covered is gone, and the offsets past the new end are given again.
    pub(crate) fn synced(&mut self, order: SyncOrder) {
        self.syncs_in_flight -= 1;
        if order.cut == self.cuts {
            self.durable = self.durable.max(order.end);
        }
        debug_assert!(self.durable <= self.written, "durable past written");
    }

    /// An fdatasync failed: what reached the disk is unknown, so everything not acknowledged is
    /// discarded and the log stops (reopening recovers from what is there).
    pub(crate) fn sync_failed(&mut self) {
        self.syncs_in_flight -= 1;
        self.discard();
        self.stopped = true;
    }

    // 5. What a waiting append is told.

    pub(crate) fn outcome(&self, t: Ticket) -> Outcome {
        if t.generation == self.generation {
            return if self.ack_end() >= t.target {
                Outcome::Acknowledged
            } else {
                Outcome::Waiting
            };
        }
        let first_discard = t.generation.next();
        match self.discards.iter().find(|d| d.generation == first_discard) {
            Some(d) if d.acked >= t.target => Outcome::Survived,
            _ => Outcome::Lost,
        }
    }

    // Out of band.

    /// Forgets every staged offset not yet written (a failed write or fdatasync, a truncation)
    /// and records what was acknowledged, for the appends still waiting.
    pub(crate) fn discard(&mut self) {
        self.generation = self.generation.next();
        let acked = self.ack_end();
        self.discards.push_back(Discard {
            generation: self.generation,
            acked,
        });
        if self.discards.len() > DISCARDS_KEPT {
            self.discards.pop_front();
        }
        self.staged = self.written;
        self.handed = self.written;
    }

    /// The log was truncated to `end` (after [`discard`](GroupCommit::discard), with no job
    /// out): its files were cut there and fdatasynced. An fdatasync still out no longer counts.
    pub(crate) fn truncated(&mut self, end: Offset) {
        self.cuts += 1;
        self.staged = end;
        self.handed = end;
        self.written = end;
        self.sync_issued = end;
        self.durable = end;
    }

    /// Everything written was fdatasynced outside the flusher (close sealed the segment).
    pub(crate) fn all_durable(&mut self) {
        self.durable = self.written;
    }

    /// The log takes no more appends (closed, deleted, or failed): no more jobs.
    pub(crate) fn stop(&mut self) {
        self.stopped = true;
    }

    /// The interval timer fired: the next job syncs, due or not.
    pub(crate) fn request_sync(&mut self) {
        self.sync_requested = true;
    }

    /// Under [`FlushPolicy::IntervalMs`] with written bytes not yet durable, how long until an
    /// fdatasync is due: the flusher arms a timer for it, so the fdatasync happens within the
    /// interval even if no append comes.
    pub(crate) fn sync_timer(&self, now: Instant) -> Option<Duration> {
        let FlushPolicy::IntervalMs(ms) = self.policy else {
            return None;
        };
        if !self.unsynced() || self.stopped {
            return None;
        }
        Some(
            Duration::from_millis(ms).saturating_sub(now.saturating_duration_since(self.last_sync)),
        )
    }

    /// The flush policy changed (it applies from the next job).
    pub(crate) fn set_policy(&mut self, policy: FlushPolicy) {
        self.policy = policy;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Outcome::{Acknowledged as Ack, Lost, Survived, Waiting};

    /// What the flusher must get from `take_job`.
    #[derive(Clone, Copy, Debug)]
    enum Want {
        /// A job writing up to `end` (from the previous job's end), syncing or not.
        Job(u64, bool),
        WaitForSync,
        Idle,
    }

    #[derive(Clone, Copy, Debug)]
    enum Ev {
        /// An append takes offsets up to this end; its ticket is the next of the case.
        Stage(u64),
        /// A duplicate of an append up to this end: a ticket, nothing staged.
        Duplicate(u64),
        /// The flusher asks for its next step.
        Take(Want),
        /// The job taken last is written; the fdatasync it asks for is issued at once.
        Written,
        WriteFailed,
        /// The fdatasync that is `i`th oldest of those in flight completes, or fails.
        Synced(usize),
        SyncFailed(usize),
        /// Truncation to this end: discard, then the files are cut.
        Truncate(u64),
        /// Milliseconds pass.
        Sleep(u64),
        /// The interval timer fires.
        Timer,
        /// Expect (acknowledged end, durable end).
        Ends(u64, u64),
        /// Expect the outcome of every ticket so far, in order.
        Outcomes(&'static [Outcome]),
        /// Expect what `sync_timer` says, in ms.
        TimerIn(Option<u64>),
    }
    use Ev::*;

    const SYNC: FlushPolicy = FlushPolicy::Sync;
    const INTERVAL_100: FlushPolicy = FlushPolicy::IntervalMs(100);

    fn check(name: &str, policy: FlushPolicy, events: &[Ev]) {
        let mut now = Instant::now();
        let mut c = GroupCommit::new(Offset(0), policy, now);
        let mut tickets = Vec::new();
        let mut job = None;
        let mut syncs: Vec<SyncOrder> = Vec::new();
        // Where the next job must start: the end of the last one, or the written end after a
        // discard.
        let mut handed = Offset(0);
        for (i, ev) in events.iter().enumerate() {
            let at = format!("{name}: event {i} {ev:?}");
            match *ev {
                Stage(end) => tickets.push(c.stage(Offset(end))),
                Duplicate(end) => tickets.push(c.ticket(Offset(end))),
                Take(want) => {
                    let got = c.take_job(now);
                    match (want, got) {
                        (Want::Job(end, sync), Next::Job(j)) => {
                            assert_eq!(j.from, handed, "{at}: where the job starts");
                            assert_eq!((j.end, j.sync), (Offset(end), sync), "{at}");
                            assert_eq!(j.has_bytes(), j.end > j.from);
                            handed = j.end;
                            job = Some(j);
                        }
                        (Want::WaitForSync, Next::WaitForSync) | (Want::Idle, Next::Idle) => {}
                        (want, got) => panic!("{at}: wanted {want:?}, got {got:?}"),
                    }
                }
                Written => {
                    let j = job.take().unwrap_or_else(|| panic!("{at}: no job out"));
                    syncs.extend(c.written(j, now));
                }
                WriteFailed => {
                    job.take().unwrap_or_else(|| panic!("{at}: no job out"));
                    c.write_failed();
                    handed = c.written_end();
                }
                Synced(i) => c.synced(syncs.remove(i)),
                SyncFailed(i) => {
                    syncs.remove(i);
                    c.sync_failed();
                    handed = c.written_end();
                }
                Truncate(end) => {
                    assert!(job.is_none(), "{at}: a job is out");
                    c.discard();
                    c.truncated(Offset(end));
                    handed = Offset(end);
                }
                Sleep(ms) => now += Duration::from_millis(ms),
                Timer => c.request_sync(),
                Ends(ack, durable) => assert_eq!(
                    (c.ack_end(), c.durable_end()),
                    (Offset(ack), Offset(durable)),
                    "{at}: (acknowledged, durable)"
                ),
                Outcomes(want) => {
                    let got: Vec<Outcome> = tickets.iter().map(|&t| c.outcome(t)).collect();
                    assert_eq!(got, want, "{at}");
                }
                TimerIn(want) => {
                    assert_eq!(c.sync_timer(now), want.map(Duration::from_millis), "{at}")
                }
            }
        }
        assert!(
            c.durable_end() <= c.written_end(),
            "{name}: durable past written"
        );
    }

    #[test]
    fn group_commit_cases() {
        use Want::{Idle, Job as J, WaitForSync as Full};
        // Each case: its name (the rule it checks), the flush policy, then the events in order,
        // with what must hold between them.
        #[rustfmt::skip]
        let cases: &[(&str, FlushPolicy, &[Ev])] = &[
            (
                "sync: one fdatasync acknowledges every append written before it (group commit)",
                SYNC,
                &[
                    Stage(5), Stage(8), Stage(12),
                    Take(J(12, true)), Outcomes(&[Waiting, Waiting, Waiting]),
                    Written, Ends(0, 0), Outcomes(&[Waiting, Waiting, Waiting]),
                    Synced(0), Ends(12, 12), Outcomes(&[Ack, Ack, Ack]),
                    Take(Idle),
                ],
            ),
            (
                "sync: an append is acknowledged only by an fdatasync issued after its write completed",
                SYNC,
                &[
                    Stage(5), Take(J(5, true)), Written,
                    Stage(9), Take(J(9, true)), Outcomes(&[Waiting, Waiting]),
                    Synced(0), Ends(5, 5), Outcomes(&[Ack, Waiting]),
                    Written, Ends(5, 5), Outcomes(&[Ack, Waiting]),
                    Synced(0), Ends(9, 9), Outcomes(&[Ack, Ack]),
                ],
            ),
            (
                "sync: at most SYNCS_IN_FLIGHT_MAX fdatasyncs in flight while the next group is written",
                SYNC,
                &[
                    Stage(1), Take(J(1, true)), Written,
                    Stage(2), Take(J(2, true)), Written,
                    Stage(3), Take(J(3, true)), Written,
                    Stage(4), Take(J(4, true)), Written,
                    Stage(5), Take(Full), Ends(0, 0),
                    Synced(0), Ends(1, 1),
                    Take(J(5, true)), Written, Take(Full),
                    Synced(0), Synced(0), Synced(0), Synced(0), Ends(5, 5),
                    Outcomes(&[Ack, Ack, Ack, Ack, Ack]), Take(Idle),
                ],
            ),
            (
                "sync: the durable end only moves forward, whatever order fdatasyncs complete in",
                SYNC,
                &[
                    Stage(5), Take(J(5, true)), Written,
                    Stage(9), Take(J(9, true)), Written,
                    Synced(1), Ends(9, 9), Outcomes(&[Ack, Ack]),
                    Synced(0), Ends(9, 9),
                ],
            ),
            (
                "sync: a duplicate is answered once the first write of it is acknowledged",
                SYNC,
                &[
                    Stage(5), Take(J(5, true)), Duplicate(5), Outcomes(&[Waiting, Waiting]),
                    Written, Synced(0), Outcomes(&[Ack, Ack]),
                ],
            ),
            (
                "a failed write fails every append staged and not acknowledged at the failure \
                 (a written one whose fdatasync is in flight too), and the log stays usable",
                SYNC,
                &[
                    Stage(5), Take(J(5, true)), Written,
                    Stage(9), Stage(12), Take(J(12, true)),
                    WriteFailed, Ends(0, 0), Outcomes(&[Lost, Lost, Lost]),
                    // The earlier fdatasync still makes what it covers durable.
                    Synced(0), Ends(5, 5), Outcomes(&[Lost, Lost, Lost]),
                    // Offsets past the written end are given again.
                    Stage(7), Take(J(7, true)), Written, Synced(0),
                    Ends(7, 7), Outcomes(&[Lost, Lost, Lost, Ack]),
                ],
            ),
            (
                "an append acknowledged before a discard survives it; one staged after it fails",
                SYNC,
                &[
                    Stage(5), Take(J(5, true)), Written, Synced(0),
                    Stage(9), Take(J(9, true)), WriteFailed,
                    Ends(5, 5), Outcomes(&[Survived, Lost]),
                ],
            ),
            (
                "a failed fdatasync fails the appends not acknowledged and stops the log",
                SYNC,
                &[
                    Stage(5), Take(J(5, true)), Written,
                    Stage(9), Take(J(9, true)), Written,
                    Synced(0), Ends(5, 5),
                    SyncFailed(0), Ends(5, 5), Outcomes(&[Survived, Lost]),
                    // Nothing more is written or synced, though the written end is not durable.
                    Take(Idle),
                ],
            ),
            (
                "a failed fdatasync while a write is out: that write still counts as written",
                SYNC,
                &[
                    Stage(5), Take(J(5, true)), Written,
                    Stage(9), Take(J(9, true)),
                    SyncFailed(0), Outcomes(&[Lost, Lost]),
                    Written, Ends(0, 0), Outcomes(&[Lost, Lost]),
                    Synced(0), Ends(9, 9), Outcomes(&[Lost, Lost]), Take(Idle),
                ],
            ),
            (
                "interval: an append is acknowledged once written; an fdatasync follows within \
                 the interval",
                INTERVAL_100,
                &[
                    Stage(5), Take(J(5, false)), Outcomes(&[Waiting]),
                    Written, Ends(5, 0), Outcomes(&[Ack]), TimerIn(Some(100)),
                    Take(Idle), Sleep(60), TimerIn(Some(40)),
                    Stage(9), Take(J(9, false)), Written, Ends(9, 0),
                    Sleep(40), TimerIn(Some(0)),
                    Take(J(9, true)), Written, Ends(9, 0), Synced(0), Ends(9, 9),
                    TimerIn(None), Take(Idle),
                ],
            ),
            (
                "interval: the timer firing makes the next job sync before the interval is up",
                INTERVAL_100,
                &[
                    Stage(5), Take(J(5, false)), Written, Sleep(10), Take(Idle),
                    Timer, Take(J(5, true)), Written, Synced(0), Ends(5, 5),
                    // The request was used up.
                    Stage(6), Take(J(6, false)), Written, Ends(6, 5),
                ],
            ),
            (
                "interval: a failed write fails only what was not written (written is acknowledged)",
                INTERVAL_100,
                &[
                    Stage(5), Take(J(5, false)), Written,
                    Stage(9), Take(J(9, false)), WriteFailed,
                    Ends(5, 0), Outcomes(&[Survived, Lost]),
                ],
            ),
            (
                "truncation bumps the generation: acknowledged appends survive, offsets past the \
                 new end are given again",
                SYNC,
                &[
                    Stage(5), Take(J(5, true)), Written, Synced(0),
                    Stage(9), Take(J(9, true)), Written, Synced(0),
                    Truncate(5), Ends(5, 5), Outcomes(&[Survived, Survived]),
                    Stage(7), Take(J(7, true)), Written, Synced(0),
                    Ends(7, 7), Outcomes(&[Survived, Survived, Ack]),
                ],
            ),
            (
                "truncation: an fdatasync issued before it makes nothing durable after it",
                INTERVAL_100,
                &[
                    Stage(5), Take(J(5, false)), Written, Sleep(100),
                    // The timer's fdatasync runs while a truncation cuts the log.
                    Take(J(5, true)), Written, Truncate(2), Ends(2, 2),
                    Synced(0), Ends(2, 2),
                    Stage(7), Take(J(7, false)), Written, Ends(7, 2),
                    Sleep(100), Take(J(7, true)), Written, Synced(0), Ends(7, 7),
                ],
            ),
            (
                "a ticket of an older generation is judged by the first discard after it",
                INTERVAL_100,
                &[
                    Stage(5), Take(J(5, false)), Written,
                    Stage(9), Take(J(9, false)), WriteFailed,
                    Stage(6), Take(J(6, false)), WriteFailed,
                    Outcomes(&[Survived, Lost, Lost]),
                ],
            ),
        ];
        for (name, policy, events) in cases {
            check(name, *policy, events);
        }
    }

    #[test]
    fn discard_records_are_bounded() {
        let now = Instant::now();
        let mut c = GroupCommit::new(Offset(0), INTERVAL_100, now);
        let acked = c.stage(Offset(1));
        let Next::Job(j) = c.take_job(now) else {
            panic!("a job")
        };
        c.written(j, now);
        for _ in 0..DISCARDS_KEPT {
            c.discard();
        }
        assert_eq!(c.outcome(acked), Outcome::Survived);
        c.discard();
        // The record of the discard after it is gone: no longer known, so not claimed.
        assert_eq!(c.outcome(acked), Outcome::Lost);
    }
}
