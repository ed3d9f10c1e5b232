//! One consumer group's membership and assignment: a plain state machine (no I/O, no clock of
//! its own), driven by heartbeats and by `expire` with the time passed in. Testable without a
//! broker.
//!
//! # The protocol (Kafka's KIP-848 consumer protocol, simplified)
//! Assignment is computed here, on the broker, not by a group leader. Rationale: one place
//! sees every member, the topics' partition counts and the previous assignment, so it can move
//! only what must move; no member has to run an assignor, and a slow member cannot hold the
//! whole group in a rebalance barrier.
//!
//! - A member joins with epoch 0, leaves with -1 (a static member leaves for a while with -2),
//!   and otherwise heartbeats with the epoch it was last given.
//! - The **group epoch** grows whenever membership, a subscription or a subscribed topic's
//!   partition count changes; a new **target assignment** is then computed by the group's
//!   assignor (range, round-robin or sticky).
//! - **Incremental reconciliation**: a member keeps the partitions it has that stay in its
//!   target. A partition that moves is first *revoked* from its current owner (the owner's
//!   heartbeat answer omits it); only when the owner confirms, with a heartbeat whose owned
//!   partitions no longer include it, is it given to its new owner. Partitions that do not move
//!   keep flowing throughout.
//! - **Fencing**: every answer carries the member's epoch; a heartbeat or commit with an older
//!   epoch is refused (`FencedMemberEpoch` / `StaleMemberEpoch`), and a removed member is
//!   unknown (`UnknownMemberId`), so a zombie cannot commit or hold partitions.
//! - A member that misses its session timeout, or does not give up revoked partitions within
//!   its rebalance timeout, is removed and its partitions freed.
//! - **Static membership**: a member with an instance id that rejoins (a restarted process)
//!   takes over its predecessor's assignment without a new group epoch; the predecessor is
//!   fenced.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use quiver_proto::ErrorCode;

/// A topic partition, by name (as clients name them).
pub type Tp = (String, u32);

/// How partitions are spread over members.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Assignor {
    /// Per topic, contiguous ranges of partitions to the members subscribed to it.
    Range,
    /// All partitions in (topic, partition) order dealt to members in turn.
    RoundRobin,
    /// Balanced, moving as few partitions as possible from the previous assignment.
    Sticky,
}

impl Assignor {
    pub fn parse(name: &str) -> Option<Assignor> {
        match name {
            "range" => Some(Assignor::Range),
            "roundrobin" | "round-robin" => Some(Assignor::RoundRobin),
            "sticky" | "uniform" | "cooperative-sticky" => Some(Assignor::Sticky),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "roundrobin",
            Assignor::Sticky => "sticky",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub epoch: i32,
    pub previous_epoch: i32,
    pub subscribed: BTreeSet<String>,
    /// What the member has been told it may own.
    pub assigned: BTreeSet<Tp>,
    /// Taken from the member, not yet confirmed given up; nobody else gets these meanwhile.
    pub revoking: BTreeSet<Tp>,
    /// The assignment last sent, so unchanged answers can omit it.
    sent: Option<BTreeSet<Tp>>,
    pub session_deadline: Instant,
    pub revoke_deadline: Option<Instant>,
    pub rebalance_timeout: Duration,
    pub client_host: String,
    /// The principal that joined with this member id: only it may heartbeat, commit or leave
    /// as this member.
    pub principal: String,
    /// A static member that left with epoch -2: its assignment waits for it until its session
    /// expires.
    pub away: bool,
}

/// What a heartbeat carries.
#[derive(Clone, Debug, Default)]
pub struct HeartbeatIn {
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rebalance_timeout: Option<Duration>,
    pub subscribed: Option<Vec<String>>,
    pub assignor: Option<String>,
    pub owned: Option<Vec<Tp>>,
    pub client_host: String,
    /// Who sends it (`security::Access::principal`).
    pub principal: String,
}

/// What a heartbeat gets back.
#[derive(Clone, Debug, PartialEq)]
pub struct HeartbeatOut {
    pub member_id: String,
    pub member_epoch: i32,
    /// The full new assignment, or `None` when unchanged since the last answer.
    pub assignment: Option<Vec<Tp>>,
}

/// Group-level settings from the broker.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub session_timeout: Duration,
    pub default_rebalance_timeout: Duration,
    pub default_assignor: Assignor,
}

#[derive(Clone, Debug)]
pub struct Group {
    pub id: String,
    pub epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: Assignor,
    pub members: BTreeMap<String, Member>,
    pub target: BTreeMap<String, BTreeSet<Tp>>,
    /// Partition counts of subscribed topics, as of the target.
    pub partition_counts: BTreeMap<String, u32>,
    /// When the group last had no members (for offset expiry).
    pub empty_since: Option<Instant>,
}

/// Group states as DescribeGroups and ListGroups report them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Empty,
    Reconciling,
    Stable,
}

impl Group {
    pub fn new(id: &str, settings: &Settings, now: Instant) -> Group {
        Group {
            id: id.to_string(),
            epoch: 0,
            assignment_epoch: 0,
            assignor: settings.default_assignor,
            members: BTreeMap::new(),
            target: BTreeMap::new(),
            partition_counts: BTreeMap::new(),
            empty_since: Some(now),
        }
    }

    pub fn state(&self) -> State {
        if self.members.is_empty() {
            return State::Empty;
        }
        let settled = self.members.values().all(|m| {
            m.revoking.is_empty() && self.target.get(&m.id).is_none_or(|t| *t == m.assigned)
        });
        if settled {
            State::Stable
        } else {
            State::Reconciling
        }
    }

    /// Every topic some member subscribes to.
    pub fn subscribed_topics(&self) -> BTreeSet<String> {
        self.members
            .values()
            .flat_map(|m| m.subscribed.iter().cloned())
            .collect()
    }

    /// Handles one heartbeat. `partitions(topic)` gives a topic's current partition count
    /// (None: the topic does not exist).
    pub fn heartbeat(
        &mut self,
        hb: HeartbeatIn,
        now: Instant,
        settings: &Settings,
        partitions: &dyn Fn(&str) -> Option<u32>,
    ) -> Result<HeartbeatOut, (ErrorCode, String)> {
        // A member is its principal's: another one cannot heartbeat, leave or rejoin as it
        // (it is told the member is unknown, as if it did not exist), nor take over its
        // static instance id.
        if self
            .members
            .get(&hb.member_id)
            .is_some_and(|m| m.principal != hb.principal)
        {
            return Err(unknown(&hb.member_id));
        }
        if let Some(iid) = hb.instance_id.as_ref().filter(|_| hb.member_epoch == 0) {
            let owner = self
                .members
                .values()
                .find(|m| m.instance_id.as_ref() == Some(iid));
            if owner.is_some_and(|m| m.principal != hb.principal) {
                return Err((
                    ErrorCode::FencedInstanceId,
                    format!("instance id '{iid}' is held by another principal's member"),
                ));
            }
        }
        if let Some(name) = &hb.assignor {
            let a = Assignor::parse(name).ok_or_else(|| {
                (
                    ErrorCode::UnsupportedAssignor,
                    format!("unknown assignor '{name}' (range, roundrobin, sticky)"),
                )
            })?;
            if self.members.is_empty() || self.members.keys().all(|id| *id == hb.member_id) {
                self.assignor = a;
            } else if a != self.assignor {
                return Err((
                    ErrorCode::UnsupportedAssignor,
                    format!(
                        "group uses assignor '{}'; all members must agree",
                        self.assignor.name()
                    ),
                ));
            }
        }
        let mut changed = false;
        match hb.member_epoch {
            -1 => {
                if self.remove(&hb.member_id) {
                    self.bump(now, partitions);
                }
                return Ok(HeartbeatOut {
                    member_id: hb.member_id,
                    member_epoch: -1,
                    assignment: None,
                });
            }
            -2 => {
                let m = self
                    .members
                    .get_mut(&hb.member_id)
                    .ok_or_else(|| unknown(&hb.member_id))?;
                if m.instance_id.is_none() {
                    return Err((
                        ErrorCode::InvalidRequest,
                        "epoch -2 (temporary leave) is for static members only".into(),
                    ));
                }
                m.away = true;
                return Ok(HeartbeatOut {
                    member_id: hb.member_id,
                    member_epoch: -2,
                    assignment: None,
                });
            }
            0 => {
                if hb.member_id.is_empty() {
                    return Err((
                        ErrorCode::InvalidRequest,
                        "a joining member must send its member id (a UUID it chose)".into(),
                    ));
                }
                let subscribed: BTreeSet<String> = hb
                    .subscribed
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                if subscribed.is_empty() {
                    return Err((
                        ErrorCode::InvalidRequest,
                        "a joining member must subscribe to at least one topic".into(),
                    ));
                }
                let predecessor = hb.instance_id.as_ref().and_then(|iid| {
                    self.members
                        .values()
                        .find(|m| m.instance_id.as_ref() == Some(iid))
                        .map(|m| m.id.clone())
                });
                let rebalance_timeout = hb
                    .rebalance_timeout
                    .unwrap_or(settings.default_rebalance_timeout);
                let mut member = Member {
                    id: hb.member_id.clone(),
                    instance_id: hb.instance_id.clone(),
                    epoch: 0,
                    previous_epoch: -1,
                    subscribed: subscribed.clone(),
                    assigned: BTreeSet::new(),
                    revoking: BTreeSet::new(),
                    sent: None,
                    session_deadline: now + settings.session_timeout,
                    revoke_deadline: None,
                    rebalance_timeout,
                    client_host: hb.client_host.clone(),
                    principal: hb.principal.clone(),
                    away: false,
                };
                match predecessor {
                    Some(old_id) if old_id != hb.member_id => {
                        // A static member's new incarnation: it takes over the old one's
                        // assignment and place, and the old member id is fenced.
                        let old = self.members.remove(&old_id).expect("found above");
                        member.assigned = old.assigned;
                        member.revoking = old.revoking;
                        member.epoch = old.epoch;
                        if let Some(t) = self.target.remove(&old_id) {
                            self.target.insert(member.id.clone(), t);
                        }
                        let same_subscription = old.subscribed == subscribed;
                        self.members.insert(member.id.clone(), member);
                        if !same_subscription {
                            changed = true;
                        }
                    }
                    _ => {
                        // A new member, or one that rejoins after being fenced: it starts empty.
                        if let Some(old) = self.members.remove(&hb.member_id) {
                            let _ = old;
                            self.target.remove(&hb.member_id);
                        }
                        self.members.insert(member.id.clone(), member);
                        changed = true;
                    }
                }
                self.empty_since = None;
            }
            epoch => {
                let m = self
                    .members
                    .get_mut(&hb.member_id)
                    .ok_or_else(|| unknown(&hb.member_id))?;
                if epoch != m.epoch && epoch != m.previous_epoch {
                    return Err((
                        ErrorCode::FencedMemberEpoch,
                        format!(
                            "member epoch {epoch} is not current ({}); rejoin with epoch 0",
                            m.epoch
                        ),
                    ));
                }
                m.session_deadline = now + settings.session_timeout;
                m.away = false;
                if let Some(t) = hb.rebalance_timeout {
                    m.rebalance_timeout = t;
                }
                if let Some(subs) = &hb.subscribed {
                    let subs: BTreeSet<String> = subs.iter().cloned().collect();
                    if subs != m.subscribed {
                        m.subscribed = subs;
                        changed = true;
                    }
                }
            }
        }

        // A subscribed topic that grew (or appeared, or went) changes the target too.
        let counts = self.current_counts(partitions);
        if changed || counts != self.partition_counts {
            self.bump(now, partitions);
        }

        let member_id = hb.member_id.clone();
        if let Some(owned) = hb.owned {
            let owned: BTreeSet<Tp> = owned.into_iter().collect();
            let m = self.members.get_mut(&member_id).expect("present");
            // Revocations the member confirms by no longer owning them are done.
            m.revoking.retain(|tp| owned.contains(tp));
            if m.revoking.is_empty() {
                m.revoke_deadline = None;
            }
        }
        self.reconcile(&member_id, now);
        let m = self.members.get_mut(&member_id).expect("present");
        let assignment = if m.sent.as_ref() != Some(&m.assigned) {
            m.sent = Some(m.assigned.clone());
            Some(m.assigned.iter().cloned().collect())
        } else {
            None
        };
        Ok(HeartbeatOut {
            member_id,
            member_epoch: m.epoch,
            assignment,
        })
    }

    fn current_counts(&self, partitions: &dyn Fn(&str) -> Option<u32>) -> BTreeMap<String, u32> {
        self.subscribed_topics()
            .into_iter()
            .filter_map(|t| partitions(&t).map(|n| (t, n)))
            .collect()
    }

    /// A new group epoch and target assignment.
    fn bump(&mut self, now: Instant, partitions: &dyn Fn(&str) -> Option<u32>) {
        self.epoch += 1;
        self.partition_counts = self.current_counts(partitions);
        self.target = compute_target(
            self.assignor,
            &self.members,
            &self.partition_counts,
            &self.target,
        );
        self.assignment_epoch = self.epoch;
        if self.members.is_empty() {
            self.empty_since = Some(now);
        }
    }

    /// Moves one member towards its target: revoke what it must give up, grant what is free.
    fn reconcile(&mut self, member_id: &str, now: Instant) {
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let taken: BTreeSet<Tp> = self
            .members
            .values()
            .filter(|m| m.id != member_id)
            .flat_map(|m| m.assigned.iter().chain(m.revoking.iter()).cloned())
            .collect();
        let group_epoch = self.epoch;
        let m = self.members.get_mut(member_id).expect("present");
        let before = (m.assigned.clone(), m.revoking.len());
        let revoke: Vec<Tp> = m.assigned.difference(&target).cloned().collect();
        for tp in revoke {
            m.assigned.remove(&tp);
            m.revoking.insert(tp);
        }
        if !m.revoking.is_empty() && m.revoke_deadline.is_none() {
            m.revoke_deadline = Some(now + m.rebalance_timeout);
        }
        // Grants wait until the member has given up what it must (KIP-848: revoke first).
        if m.revoking.is_empty() {
            for tp in target.iter() {
                if !taken.contains(tp) {
                    m.assigned.insert(tp.clone());
                }
            }
        }
        if (m.assigned.clone(), m.revoking.len()) != before || m.epoch == 0 {
            m.previous_epoch = m.epoch;
            m.epoch = group_epoch.max(1);
        }
    }

    fn remove(&mut self, member_id: &str) -> bool {
        let removed = self.members.remove(member_id).is_some();
        self.target.remove(member_id);
        removed
    }

    /// Removes members whose session expired or who held revoked partitions past their
    /// rebalance timeout. Returns who was removed and why.
    pub fn expire(
        &mut self,
        now: Instant,
        partitions: &dyn Fn(&str) -> Option<u32>,
    ) -> Vec<(String, &'static str)> {
        let gone: Vec<(String, &'static str)> = self
            .members
            .values()
            .filter_map(|m| {
                if m.session_deadline <= now {
                    Some((m.id.clone(), "session timeout"))
                } else if m.revoke_deadline.is_some_and(|d| d <= now) {
                    Some((
                        m.id.clone(),
                        "rebalance timeout: revoked partitions not released",
                    ))
                } else {
                    None
                }
            })
            .collect();
        for (id, _) in &gone {
            self.remove(id);
        }
        if !gone.is_empty() {
            self.bump(now, partitions);
        }
        gone
    }

    /// Whether `member_id` at `epoch`, sent by `principal`, may commit offsets for this group
    /// now.
    pub fn check_commit(
        &self,
        member_id: &str,
        epoch: i32,
        principal: &str,
    ) -> Result<(), (ErrorCode, String)> {
        if member_id.is_empty() && epoch < 0 {
            if self.members.is_empty() {
                return Ok(());
            }
            return Err((
                ErrorCode::UnknownMemberId,
                format!("group '{}' has active members; commits must come from a member (stop the group to reset its offsets)", self.id),
            ));
        }
        let m = self
            .members
            .get(member_id)
            .filter(|m| m.principal == principal)
            .ok_or_else(|| unknown(member_id))?;
        if epoch != m.epoch && epoch != m.previous_epoch {
            return Err((
                ErrorCode::StaleMemberEpoch,
                format!("member epoch {epoch} is stale (current {})", m.epoch),
            ));
        }
        Ok(())
    }
}

fn unknown(member_id: &str) -> (ErrorCode, String) {
    (ErrorCode::UnknownMemberId, format!("member '{member_id}' is not in the group (removed, replaced, or never joined); rejoin with epoch 0"))
}

/// The target assignment for `members` over the subscribed topics' partitions.
pub fn compute_target(
    assignor: Assignor,
    members: &BTreeMap<String, Member>,
    counts: &BTreeMap<String, u32>,
    previous: &BTreeMap<String, BTreeSet<Tp>>,
) -> BTreeMap<String, BTreeSet<Tp>> {
    let mut out: BTreeMap<String, BTreeSet<Tp>> = members
        .keys()
        .map(|id| (id.clone(), BTreeSet::new()))
        .collect();
    if members.is_empty() {
        return out;
    }
    let subscribers = |topic: &str| -> Vec<&String> {
        members
            .values()
            .filter(|m| m.subscribed.contains(topic))
            .map(|m| &m.id)
            .collect()
    };
    match assignor {
        Assignor::Range => {
            for (topic, &n) in counts {
                let subs = subscribers(topic);
                if subs.is_empty() {
                    continue;
                }
                let (per, extra) = (n as usize / subs.len(), n as usize % subs.len());
                let mut p = 0u32;
                for (i, id) in subs.iter().enumerate() {
                    let take = per + usize::from(i < extra);
                    for _ in 0..take {
                        out.get_mut(*id).expect("member").insert((topic.clone(), p));
                        p += 1;
                    }
                }
            }
        }
        Assignor::RoundRobin => {
            let ids: Vec<&String> = members.keys().collect();
            let mut next = 0usize;
            for (topic, &n) in counts {
                for p in 0..n {
                    // The next member in turn that subscribes to this topic.
                    for step in 0..ids.len() {
                        let id = ids[(next + step) % ids.len()];
                        if members[id].subscribed.contains(topic) {
                            out.get_mut(id).expect("member").insert((topic.clone(), p));
                            next = (next + step + 1) % ids.len();
                            break;
                        }
                    }
                }
            }
        }
        Assignor::Sticky => {
            let all: Vec<Tp> = counts
                .iter()
                .flat_map(|(t, &n)| (0..n).map(move |p| (t.clone(), p)))
                .collect();
            let eligible = |tp: &Tp, id: &str| members[id].subscribed.contains(&tp.0);
            // Ceiling of a fair share: with M members and T partitions nobody needs more.
            let quota = all.len().div_ceil(members.len()).max(1);
            let mut owner: BTreeMap<Tp, String> = BTreeMap::new();
            for (id, prev) in previous {
                if !members.contains_key(id) {
                    continue;
                }
                for tp in prev {
                    let exists = counts.get(&tp.0).is_some_and(|&n| tp.1 < n);
                    if exists
                        && eligible(tp, id)
                        && out[id].len() < quota
                        && !owner.contains_key(tp)
                    {
                        out.get_mut(id).expect("member").insert(tp.clone());
                        owner.insert(tp.clone(), id.clone());
                    }
                }
            }
            for tp in &all {
                if owner.contains_key(tp) {
                    continue;
                }
                let best = members
                    .keys()
                    .filter(|id| eligible(tp, id))
                    .min_by_key(|id| (out[*id].len(), (*id).clone()));
                if let Some(id) = best {
                    out.get_mut(id).expect("member").insert(tp.clone());
                    owner.insert(tp.clone(), id.clone());
                }
            }
            // Even out: move from the fullest to the emptiest while that narrows the spread.
            loop {
                let (max_id, max_n) = out
                    .iter()
                    .map(|(id, s)| (id.clone(), s.len()))
                    .max_by_key(|(id, n)| (*n, std::cmp::Reverse(id.clone())))
                    .expect("members");
                let movable = out[&max_id].iter().find_map(|tp| {
                    members
                        .keys()
                        .filter(|id| {
                            **id != max_id && eligible(tp, id) && out[*id].len() + 1 < max_n
                        })
                        .min_by_key(|id| (out[*id].len(), (*id).clone()))
                        .map(|to| (tp.clone(), to.clone()))
                });
                match movable {
                    Some((tp, to)) => {
                        out.get_mut(&max_id).expect("member").remove(&tp);
                        out.get_mut(&to).expect("member").insert(tp);
                    }
                    None => break,
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: Settings = Settings {
        session_timeout: Duration::from_secs(10),
        default_rebalance_timeout: Duration::from_secs(30),
        default_assignor: Assignor::Sticky,
    };

    fn six(topic: &str) -> Option<u32> {
        (topic == "t").then_some(6)
    }

    fn join(g: &mut Group, id: &str, now: Instant) -> HeartbeatOut {
        let hb = HeartbeatIn {
            member_id: id.into(),
            member_epoch: 0,
            subscribed: Some(vec!["t".into()]),
            ..Default::default()
        };
        g.heartbeat(hb, now, &SETTINGS, &six).unwrap()
    }

    /// A heartbeat that reports owning exactly what the member was last told.
    fn beat(g: &mut Group, id: &str, now: Instant) -> HeartbeatOut {
        let m = &g.members[id];
        let owned: Vec<Tp> = m.sent.clone().unwrap_or_default().into_iter().collect();
        let hb = HeartbeatIn {
            member_id: id.into(),
            member_epoch: m.epoch,
            owned: Some(owned),
            ..Default::default()
        };
        g.heartbeat(hb, now, &SETTINGS, &six).unwrap()
    }

    /// Heartbeats every member until nothing changes; returns each member's partitions.
    fn settle(g: &mut Group, now: Instant) -> BTreeMap<String, BTreeSet<Tp>> {
        for _ in 0..10 {
            let ids: Vec<String> = g.members.keys().cloned().collect();
            for id in ids {
                beat(g, &id, now);
            }
        }
        assert_eq!(g.state(), State::Stable);
        g.members
            .iter()
            .map(|(id, m)| (id.clone(), m.assigned.clone()))
            .collect()
    }

    fn no_partition_twice(g: &Group) {
        let mut seen = BTreeSet::new();
        for m in g.members.values() {
            for tp in m.assigned.iter().chain(&m.revoking) {
                assert!(seen.insert(tp.clone()), "{tp:?} held twice");
            }
        }
    }

    #[test]
    fn three_members_share_six_partitions_two_each_with_every_assignor() {
        for assignor in [Assignor::Range, Assignor::RoundRobin, Assignor::Sticky] {
            let now = Instant::now();
            let mut g = Group::new(
                "g",
                &Settings {
                    default_assignor: assignor,
                    ..SETTINGS
                },
                now,
            );
            for id in ["a", "b", "c"] {
                join(&mut g, id, now);
            }
            let got = settle(&mut g, now);
            no_partition_twice(&g);
            assert!(got.values().all(|s| s.len() == 2), "{assignor:?}: {got:?}");
            assert_eq!(got.values().map(BTreeSet::len).sum::<usize>(), 6);
        }
    }

    #[test]
    fn range_gives_contiguous_ranges_and_roundrobin_deals_in_turn() {
        let members: BTreeMap<String, Member> = ["a", "b"]
            .iter()
            .map(|id| {
                let now = Instant::now();
                let mut g = Group::new("g", &SETTINGS, now);
                join(&mut g, id, now);
                (id.to_string(), g.members.remove(*id).unwrap())
            })
            .collect();
        let counts: BTreeMap<String, u32> = [("t".to_string(), 5)].into();
        let tps = |v: &[u32]| {
            v.iter()
                .map(|p| ("t".to_string(), *p))
                .collect::<BTreeSet<_>>()
        };
        let range = compute_target(Assignor::Range, &members, &counts, &BTreeMap::new());
        assert_eq!(range["a"], tps(&[0, 1, 2]));
        assert_eq!(range["b"], tps(&[3, 4]));
        let rr = compute_target(Assignor::RoundRobin, &members, &counts, &BTreeMap::new());
        assert_eq!(rr["a"], tps(&[0, 2, 4]));
        assert_eq!(rr["b"], tps(&[1, 3]));
    }

    #[test]
    fn a_partition_moves_only_after_its_owner_gives_it_up() {
        let now = Instant::now();
        let mut g = Group::new("g", &SETTINGS, now);
        join(&mut g, "a", now);
        settle(&mut g, now);
        assert_eq!(g.members["a"].assigned.len(), 6);

        // b joins: nothing is free yet, a still owns all six, so b's first answer is empty.
        let b = join(&mut g, "b", now);
        assert_eq!(b.assignment.as_deref(), Some(&[][..]));
        assert_eq!(
            beat(&mut g, "b", now).assignment,
            None,
            "unchanged answers omit the assignment"
        );
        // a is told to keep three (the answer omits the three it must revoke).
        let a = beat(&mut g, "a", now);
        let kept = a.assignment.unwrap();
        assert_eq!(kept.len(), 3);
        assert_eq!(g.members["a"].revoking.len(), 3);
        // Until a confirms, b still gets nothing.
        assert_eq!(beat(&mut g, "b", now).assignment, None);
        assert!(g.members["b"].assigned.is_empty());
        no_partition_twice(&g);
        // a confirms by owning only what it kept; now b gets the three.
        let hb = HeartbeatIn {
            member_id: "a".into(),
            member_epoch: g.members["a"].epoch,
            owned: Some(kept.clone()),
            ..Default::default()
        };
        g.heartbeat(hb, now, &SETTINGS, &six).unwrap();
        let b = beat(&mut g, "b", now).assignment.unwrap();
        assert_eq!(b.len(), 3);
        assert!(b.iter().all(|tp| !kept.contains(tp)));
        no_partition_twice(&g);
        assert_eq!(g.state(), State::Stable);
    }

    #[test]
    fn a_dead_member_frees_its_partitions_and_the_others_keep_theirs() {
        let t0 = Instant::now();
        let mut g = Group::new("g", &SETTINGS, t0);
        for id in ["a", "b", "c"] {
            join(&mut g, id, t0);
        }
        let before = settle(&mut g, t0);
        // a and b keep heartbeating; c stops.
        let t1 = t0 + Duration::from_secs(6);
        beat(&mut g, "a", t1);
        beat(&mut g, "b", t1);
        let t2 = t0 + Duration::from_secs(11);
        let gone = g.expire(t2, &six);
        assert_eq!(gone, vec![("c".to_string(), "session timeout")]);
        let after = settle(&mut g, t2);
        for id in ["a", "b"] {
            assert!(
                before[id].is_subset(&after[id]),
                "{id} kept its partitions: {:?} -> {:?}",
                before[id],
                after[id]
            );
            assert_eq!(after[id].len(), 3);
        }
    }

    #[test]
    fn zombies_are_fenced() {
        let now = Instant::now();
        let mut g = Group::new("g", &SETTINGS, now);
        join(&mut g, "a", now);
        join(&mut g, "b", now);
        settle(&mut g, now);
        let epoch = g.members["a"].epoch;
        // An old epoch is refused, for heartbeats and for commits.
        let old = HeartbeatIn {
            member_id: "a".into(),
            member_epoch: epoch - 5,
            ..Default::default()
        };
        assert_eq!(
            g.heartbeat(old, now, &SETTINGS, &six).unwrap_err().0,
            ErrorCode::FencedMemberEpoch
        );
        assert_eq!(
            g.check_commit("a", epoch - 5, "").unwrap_err().0,
            ErrorCode::StaleMemberEpoch
        );
        assert_eq!(g.check_commit("a", epoch, ""), Ok(()));
        // A removed member is unknown.
        g.expire(now + Duration::from_secs(60), &six);
        assert_eq!(
            g.check_commit("a", epoch, "").unwrap_err().0,
            ErrorCode::UnknownMemberId
        );
        let hb = HeartbeatIn {
            member_id: "a".into(),
            member_epoch: epoch,
            ..Default::default()
        };
        assert_eq!(
            g.heartbeat(hb, now, &SETTINGS, &six).unwrap_err().0,
            ErrorCode::UnknownMemberId
        );
        // Outsiders may commit only to an empty group.
        assert_eq!(g.check_commit("", -1, ""), Ok(()));
        join(&mut g, "c", now);
        assert_eq!(
            g.check_commit("", -1, "").unwrap_err().0,
            ErrorCode::UnknownMemberId
        );
    }

    #[test]
    fn a_member_is_its_principals_alone() {
        let now = Instant::now();
        let mut g = Group::new("g", &SETTINGS, now);
        let join_as = |g: &mut Group, id: &str, iid: Option<&str>, who: &str| {
            let hb = HeartbeatIn {
                member_id: id.into(),
                member_epoch: 0,
                instance_id: iid.map(str::to_string),
                subscribed: Some(vec!["t".into()]),
                principal: who.into(),
                ..Default::default()
            };
            g.heartbeat(hb, now, &SETTINGS, &six)
        };
        join_as(&mut g, "a", Some("pod-a"), "User:alice").unwrap();
        let epoch = g.members["a"].epoch;
        // (member epoch, principal, refused with?)
        let cases = [
            (epoch, "User:mallory", Some(ErrorCode::UnknownMemberId)),
            (-1, "User:mallory", Some(ErrorCode::UnknownMemberId)),
            (0, "User:mallory", Some(ErrorCode::UnknownMemberId)),
            (epoch, "User:alice", None),
        ];
        for (e, who, want) in cases {
            let hb = HeartbeatIn {
                member_id: "a".into(),
                member_epoch: e,
                subscribed: (e == 0).then(|| vec!["t".into()]),
                principal: who.into(),
                ..Default::default()
            };
            let got = g.heartbeat(hb, now, &SETTINGS, &six).err().map(|e| e.0);
            assert_eq!(got, want, "epoch {e} as {who}");
            assert!(g.members.contains_key("a"), "the member stays");
        }
        // Another principal's new member cannot take over alice's static instance id.
        assert_eq!(
            join_as(&mut g, "m", Some("pod-a"), "User:mallory")
                .unwrap_err()
                .0,
            ErrorCode::FencedInstanceId
        );
        // Nor commit as her member.
        let epoch = g.members["a"].epoch;
        assert_eq!(
            g.check_commit("a", epoch, "User:mallory").unwrap_err().0,
            ErrorCode::UnknownMemberId
        );
        assert_eq!(g.check_commit("a", epoch, "User:alice"), Ok(()));
    }

    #[test]
    fn a_static_member_restarts_without_a_rebalance_and_fences_its_predecessor() {
        let now = Instant::now();
        let mut g = Group::new("g", &SETTINGS, now);
        for (id, iid) in [("a1", "pod-a"), ("b1", "pod-b")] {
            let hb = HeartbeatIn {
                member_id: id.into(),
                member_epoch: 0,
                instance_id: Some(iid.into()),
                subscribed: Some(vec!["t".into()]),
                ..Default::default()
            };
            g.heartbeat(hb, now, &SETTINGS, &six).unwrap();
        }
        let before = settle(&mut g, now);
        let epoch = g.epoch;
        // pod-a's process restarts with a new member id.
        let hb = HeartbeatIn {
            member_id: "a2".into(),
            member_epoch: 0,
            instance_id: Some("pod-a".into()),
            subscribed: Some(vec!["t".into()]),
            ..Default::default()
        };
        let out = g.heartbeat(hb, now, &SETTINGS, &six).unwrap();
        assert_eq!(g.epoch, epoch, "no new group epoch: no rebalance");
        let got: BTreeSet<Tp> = out.assignment.unwrap().into_iter().collect();
        assert_eq!(got, before["a1"]);
        assert_eq!(
            g.check_commit("a1", 1, "").unwrap_err().0,
            ErrorCode::UnknownMemberId
        );
        assert_eq!(settle(&mut g, now)["b1"], before["b1"]);
    }

    #[test]
    fn new_partitions_are_assigned_when_a_topic_grows() {
        let now = Instant::now();
        let mut g = Group::new("g", &SETTINGS, now);
        join(&mut g, "a", now);
        join(&mut g, "b", now);
        settle(&mut g, now);
        let eight = |t: &str| (t == "t").then_some(8);
        for _ in 0..4 {
            for id in ["a", "b"] {
                let m = &g.members[id];
                let owned: Vec<Tp> = m.sent.clone().unwrap_or_default().into_iter().collect();
                let hb = HeartbeatIn {
                    member_id: id.into(),
                    member_epoch: m.epoch,
                    owned: Some(owned),
                    ..Default::default()
                };
                g.heartbeat(hb, now, &SETTINGS, &eight).unwrap();
            }
        }
        assert_eq!(
            g.members
                .values()
                .map(|m| m.assigned.len())
                .collect::<Vec<_>>(),
            vec![4, 4]
        );
    }
}
