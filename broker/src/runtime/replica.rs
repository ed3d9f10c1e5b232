//! A replicated partition's state on the shard that owns its log: on the leader, how far each
//! follower has come and the high watermark that follows from it; on a follower, the high
//! watermark its leader last told it (the floor it starts from if it comes to lead).
//!
//! **The high watermark** of a leader is the smallest durable end across the ISR (its own
//! included): each follower's last fetch offset counts as durable, because a follower fetches
//! from offset N only once its copy below N is on disk (it appends under the flush policy, as
//! the leader does). It only rises while one leader leads in one epoch; a new leader starts from
//! the floor it learned as a follower. A consumer reads below it, and an acks=all produce is
//! answered once it has passed the produce's last offset.
//!
//! Nothing here does I/O or knows the network: the handlers record a follower's fetch and read
//! the answer, `crate::replication` decides ISR changes from `Progress`.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use futures_channel::oneshot;
use quiver_proto::{LeaderEpoch, Offset};

/// One follower, as its leader sees it.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Its durable end: the offset of its last fetch.
    pub durable: Offset,
    /// When it last fetched.
    pub fetched_at: Instant,
    /// When it was last caught up: when it fetched at or past the leader's log end, or made a
    /// fetch that the next one shows it completed (Kafka's rule: a follower that keeps up with
    /// a log that keeps growing is never exactly at its end).
    pub caught_up_at: Instant,
    /// The leader's written end when it last fetched.
    pub leader_end_at_fetch: Offset,
    /// Fetches in the current rate window, and when that window started.
    pub window_fetches: u32,
    pub window_start: Instant,
    /// The last whole window: its fetches and length (`None` before one has passed).
    pub last_window: Option<(u32, std::time::Duration)>,
}

/// How long a fetch-rate window lasts.
pub const FETCH_RATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(5);

impl Progress {
    /// Fetches and the time they were counted over: the last whole window, or the current one
    /// before a window has passed.
    pub fn fetch_rate(&self, now: Instant) -> (u32, std::time::Duration) {
        match self.last_window {
            Some(w) if now.duration_since(self.window_start) < FETCH_RATE_WINDOW * 2 => w,
            // Nothing fetched for two windows: the current window says so.
            _ => (
                self.window_fetches,
                now.duration_since(self.window_start)
                    .max(std::time::Duration::from_millis(1)),
            ),
        }
    }
}

/// Where a partition stands as metadata says, kept beside its log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Role {
    pub leader: u32,
    pub leader_epoch: u32,
    pub partition_epoch: u32,
    pub isr: Vec<u32>,
    pub replicas: Vec<u32>,
}

/// A replicated partition's state on its owner shard.
pub struct ReplicaState {
    me: u32,
    role: RefCell<Role>,
    /// When this broker started leading in the current epoch.
    leading_since: Cell<Instant>,
    /// The high watermark then: where a follower that has not fetched since is taken to be.
    start_floor: Cell<Offset>,
    followers: RefCell<BTreeMap<u32, Progress>>,
    hw: Cell<Offset>,
    /// Woken when the high watermark may have moved or the role changed.
    waiters: RefCell<Vec<oneshot::Sender<()>>>,
    /// The leader's answers to "where does epoch E end" in the current epoch (its log only
    /// grows while it leads, so an old epoch's end stays put).
    epoch_ends: RefCell<HashMap<u32, Option<(LeaderEpoch, Offset)>>>,
    /// An ISR change is being proposed (one at a time per partition).
    pub isr_change_pending: Cell<bool>,
    /// Followers an ISR change being proposed adds: the high watermark counts them already
    /// (Kafka's "maximal ISR", KIP-497). Otherwise it could pass a joiner's end while the
    /// change commits, and the joiner, in the ISR then, could be elected (the preferred
    /// leader is, in the same entry) without records already acknowledged.
    joining: RefCell<Vec<u32>>,
}

impl ReplicaState {
    pub fn new(me: u32, role: Role) -> ReplicaState {
        ReplicaState {
            me,
            role: RefCell::new(role),
            leading_since: Cell::new(Instant::now()),
            start_floor: Cell::new(Offset(0)),
            followers: RefCell::new(BTreeMap::new()),
            hw: Cell::new(Offset(0)),
            waiters: RefCell::new(Vec::new()),
            epoch_ends: RefCell::new(HashMap::new()),
            isr_change_pending: Cell::new(false),
            joining: RefCell::new(Vec::new()),
        }
    }

    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    pub fn leads(&self) -> bool {
        self.role.borrow().leader == self.me
    }

    pub fn leading_since(&self) -> Instant {
        self.leading_since.get()
    }

    /// New metadata for the partition. A new leader epoch forgets the followers' progress and
    /// the epoch answers; the high watermark is kept as a floor.
    pub fn set_role(&self, role: Role) {
        let changed = {
            let mut r = self.role.borrow_mut();
            if *r == role {
                false
            } else {
                if r.leader_epoch != role.leader_epoch || r.leader != role.leader {
                    self.followers.borrow_mut().clear();
                    self.epoch_ends.borrow_mut().clear();
                    self.leading_since.set(Instant::now());
                    self.start_floor.set(self.hw.get());
                }
                if r.partition_epoch != role.partition_epoch {
                    self.isr_change_pending.set(false);
                }
                *r = role;
                true
            }
        };
        if changed {
            self.wake();
        }
    }

    /// A follower fetched at `offset` while the leader's log ended at `leader_end`.
    pub fn record_fetch(&self, follower: u32, offset: Offset, leader_end: Offset) {
        let now = Instant::now();
        let mut f = self.followers.borrow_mut();
        let p = f.entry(follower).or_insert(Progress {
            durable: offset,
            fetched_at: now,
            caught_up_at: self.leading_since.get(),
            leader_end_at_fetch: Offset(u64::MAX),
            window_fetches: 0,
            window_start: now,
            last_window: None,
        });
        let in_window = now.duration_since(p.window_start);
        if in_window >= FETCH_RATE_WINDOW {
            p.last_window = Some((p.window_fetches, in_window));
            p.window_fetches = 0;
            p.window_start = now;
        }
        p.window_fetches = p.window_fetches.saturating_add(1);
        if offset >= leader_end {
            p.caught_up_at = now;
        } else if offset >= p.leader_end_at_fetch {
            p.caught_up_at = p.caught_up_at.max(p.fetched_at);
        }
        p.durable = offset;
        p.fetched_at = now;
        p.leader_end_at_fetch = leader_end;
        drop(f);
        self.wake();
    }

    /// Each follower's progress in this epoch.
    pub fn followers(&self) -> BTreeMap<u32, Progress> {
        self.followers.borrow().clone()
    }

    /// Every other replica's progress, for reporting: those that have not fetched in this
    /// epoch are taken to be where the high watermark was when this broker started leading,
    /// caught up last then, with no fetches; a follower stopped before its first fetch in a
    /// new epoch shows its growing lag instead of being left out.
    pub fn replica_progress(&self) -> BTreeMap<u32, Progress> {
        let mut all = self.followers();
        let since = self.leading_since.get();
        for r in self
            .role
            .borrow()
            .replicas
            .iter()
            .filter(|r| **r != self.me)
        {
            all.entry(*r).or_insert(Progress {
                durable: self.start_floor.get(),
                fetched_at: since,
                caught_up_at: since,
                leader_end_at_fetch: self.start_floor.get(),
                window_fetches: 0,
                window_start: since,
                last_window: None,
            });
        }
        all
    }

    /// The high watermark given the leader's own visible (durable) end, raised if it moved.
    /// On a follower: the floor its leader last told it, capped at its own end.
    pub fn high_watermark(&self, local: Offset) -> Offset {
        let role = self.role.borrow();
        let floor = self.hw.get();
        if role.leader != self.me {
            return floor.min(local);
        }
        let followers = self.followers.borrow();
        let joining = self.joining.borrow();
        let mut hw = local;
        for f in role
            .isr
            .iter()
            .chain(joining.iter())
            .filter(|f| **f != self.me)
        {
            hw = hw.min(followers.get(f).map_or(floor, |p| p.durable));
        }
        let hw = hw.max(floor).min(local);
        if hw > floor {
            self.hw.set(hw);
        }
        hw
    }

    /// What a follower learns from its leader's answer.
    /// Followers that an ISR change being proposed adds (empty once it is decided).
    pub fn set_joining(&self, joining: Vec<u32>) {
        *self.joining.borrow_mut() = joining;
    }

    pub fn learn_high_watermark(&self, hw: Offset) {
        if hw > self.hw.get() {
            self.hw.set(hw);
        }
    }

    /// Resolves when the high watermark may have moved or the role changed.
    pub fn changed(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut w = self.waiters.borrow_mut();
        w.retain(|t| !t.is_canceled());
        w.push(tx);
        rx
    }

    /// Wakes every waiter (the leader's own log became more durable, a follower fetched).
    pub fn wake(&self) {
        for tx in self.waiters.borrow_mut().drain(..) {
            let _ = tx.send(());
        }
    }

    pub fn epoch_end_memo(&self, epoch: u32) -> Option<Option<(LeaderEpoch, Offset)>> {
        self.epoch_ends.borrow().get(&epoch).copied()
    }

    pub fn remember_epoch_end(&self, epoch: u32, end: Option<(LeaderEpoch, Offset)>) {
        self.epoch_ends.borrow_mut().insert(epoch, end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(leader: u32, epoch: u32, isr: &[u32]) -> Role {
        Role {
            leader,
            leader_epoch: epoch,
            partition_epoch: epoch,
            isr: isr.to_vec(),
            replicas: vec![1, 2, 3],
        }
    }

    /// The high watermark is the least durable end over the ISR, never falls while one leader
    /// leads, and a follower's floor carries into its leadership.
    #[test]
    fn a_follower_being_added_to_the_isr_holds_the_high_watermark_back() {
        // ISR [1, 3]; 2 caught up to the high watermark and is being added.
        let s = ReplicaState::new(1, role(1, 1, &[1, 3]));
        s.record_fetch(3, Offset(100), Offset(100));
        s.record_fetch(2, Offset(90), Offset(100));
        assert_eq!(s.high_watermark(Offset(90)), Offset(90));
        s.set_joining(vec![2]);
        s.record_fetch(3, Offset(120), Offset(120));
        assert_eq!(
            s.high_watermark(Offset(120)),
            Offset(90),
            "not past what the joiner holds while the change commits"
        );
        s.record_fetch(2, Offset(110), Offset(120));
        assert_eq!(s.high_watermark(Offset(120)), Offset(110));
        // Decided (here: refused): only the ISR counts again.
        s.set_joining(Vec::new());
        assert_eq!(s.high_watermark(Offset(120)), Offset(120));
    }

    #[test]
    fn the_high_watermark_follows_the_slowest_in_sync_replica() {
        let s = ReplicaState::new(1, role(1, 1, &[1, 2, 3]));
        assert_eq!(
            s.high_watermark(Offset(100)),
            Offset(0),
            "nobody has fetched"
        );
        s.record_fetch(2, Offset(80), Offset(100));
        assert_eq!(
            s.high_watermark(Offset(100)),
            Offset(0),
            "3 has not fetched"
        );
        s.record_fetch(3, Offset(60), Offset(100));
        assert_eq!(s.high_watermark(Offset(100)), Offset(60));
        assert_eq!(
            s.high_watermark(Offset(50)),
            Offset(50),
            "capped at the leader's own"
        );
        s.record_fetch(3, Offset(100), Offset(100));
        assert_eq!(s.high_watermark(Offset(100)), Offset(80));
        // 2 leaves the ISR: 3 and the leader decide.
        s.set_role(Role {
            partition_epoch: 2,
            ..role(1, 1, &[1, 3])
        });
        assert_eq!(s.high_watermark(Offset(100)), Offset(100));
        s.set_role(Role {
            partition_epoch: 3,
            ..role(1, 1, &[1, 2, 3])
        });
        assert_eq!(s.high_watermark(Offset(100)), Offset(100), "never falls");

        // On a follower, what its leader said, within its own log; leading later, the floor.
        let f = ReplicaState::new(2, role(1, 1, &[1, 2]));
        f.learn_high_watermark(Offset(40));
        f.learn_high_watermark(Offset(30));
        assert_eq!(f.high_watermark(Offset(35)), Offset(35));
        assert_eq!(f.high_watermark(Offset(90)), Offset(40));
        f.set_role(role(2, 2, &[2, 1]));
        assert_eq!(
            f.high_watermark(Offset(90)),
            Offset(40),
            "1 has not fetched yet"
        );
        f.record_fetch(1, Offset(90), Offset(90));
        assert_eq!(f.high_watermark(Offset(90)), Offset(90));
    }

    #[test]
    fn the_fetch_rate_is_counted_over_whole_windows() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + std::time::Duration::from_millis(ms);
        let mut p = Progress {
            durable: Offset(0),
            fetched_at: t0,
            caught_up_at: t0,
            leader_end_at_fetch: Offset(0),
            window_fetches: 3,
            window_start: t0,
            last_window: None,
        };
        // Before a window has passed: the current one, over its length so far.
        assert_eq!(
            p.fetch_rate(at(1500)),
            (3, std::time::Duration::from_millis(1500))
        );
        // A whole window passed: it is the answer until two windows go by without one.
        p.last_window = Some((50, FETCH_RATE_WINDOW));
        p.window_fetches = 1;
        assert_eq!(p.fetch_rate(at(1000)), (50, FETCH_RATE_WINDOW));
        let silent = FETCH_RATE_WINDOW * 2 + std::time::Duration::from_secs(1);
        assert_eq!(
            p.fetch_rate(t0 + silent),
            (1, silent),
            "a follower gone quiet"
        );

        // record_fetch counts into the window.
        let s = ReplicaState::new(1, role(1, 1, &[1, 2]));
        for _ in 0..4 {
            s.record_fetch(2, Offset(1), Offset(1));
        }
        assert_eq!(s.followers()[&2].window_fetches, 4);
        // A replica that has not fetched in this epoch is reported too, where the high
        // watermark was when this broker started leading (not where it is now: it rises once
        // the quiet one leaves the ISR).
        let quiet = ReplicaState::new(1, role(2, 1, &[1, 2, 3]));
        quiet.learn_high_watermark(Offset(7));
        quiet.set_role(role(1, 2, &[1, 2, 3]));
        quiet.record_fetch(2, Offset(9), Offset(9));
        quiet.set_role(Role {
            partition_epoch: 3,
            ..role(1, 2, &[1, 2])
        });
        assert_eq!(quiet.high_watermark(Offset(9)), Offset(9));
        let all = quiet.replica_progress();
        assert_eq!(all.keys().copied().collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!((all[&3].durable, all[&3].window_fetches), (Offset(7), 0));
    }

    #[test]
    fn a_follower_is_caught_up_when_it_reaches_the_leaders_end() {
        let s = ReplicaState::new(1, role(1, 1, &[1, 2]));
        let start = s.leading_since();
        s.record_fetch(2, Offset(5), Offset(10));
        assert_eq!(s.followers()[&2].caught_up_at, start);
        s.record_fetch(2, Offset(8), Offset(20));
        let first = s.followers()[&2].fetched_at;
        assert_eq!(
            s.followers()[&2].caught_up_at,
            start,
            "behind both ends it saw"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
        s.record_fetch(2, Offset(20), Offset(30));
        assert_eq!(
            s.followers()[&2].caught_up_at,
            first,
            "reached the end its last fetch saw: caught up as of that fetch"
        );
        s.record_fetch(2, Offset(30), Offset(30));
        assert!(s.followers()[&2].caught_up_at > first);
        s.set_role(role(1, 2, &[1, 2]));
        assert!(s.followers().is_empty(), "a new epoch starts over");
    }
}
