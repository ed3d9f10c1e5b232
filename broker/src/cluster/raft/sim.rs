//! Deterministic simulation of three `QuorumNode`s on a lossy network, a fake clock and real stores.
//!
//! The network drops, delays (so reorders) and duplicates messages as a seeded RNG (splitmix64)
//! decides; a node can be cut off from the others, or crash and restart from its store
//! directory, with or without a torn record at the end of its log. Each node's clock ticks
//! every `TICK_EVERY_MS` with a random skip (clock drift), which also breaks election ties
//! without raft-rs's own `thread_rng`: every run replays from its seed. A failing test prints
//! its seed; `QUIVER_SIM_SEED=<n>` runs only that one.
//!
//! Checked at every step (Raft paper, figure 3): Election Safety (one leader per term) and State
//! Machine Safety (every node applies the same entry at an index, in index order, with no gap;
//! a snapshot carries the state every other node had at its index).

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytes::Bytes;
use raft::eraftpb::{Message, MessageType};

use super::node::{Apply, QuorumNode};

const VOTERS: [u64; 3] = [1, 2, 3];
const TICK_EVERY_MS: u64 = 10;
/// Compact a node's log once it applied this many entries past its snapshot.
const COMPACT_EVERY: u64 = 40;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

/// The network's faults, in percent of messages, and its delay range in ms.
#[derive(Clone, Copy)]
struct Faults {
    loss: u64,
    duplicate: u64,
    delay_max_ms: u64,
}

const CALM: Faults = Faults {
    loss: 0,
    duplicate: 0,
    delay_max_ms: 2,
};
const ROUGH: Faults = Faults {
    loss: 15,
    duplicate: 10,
    delay_max_ms: 25,
};

/// A node's state machine: a hash chain of what it applied.
#[derive(Clone, Copy, Default)]
struct App {
    applied: u64,
    hash: u64,
}

fn chain(hash: u64, index: u64, term: u64, data: &[u8]) -> u64 {
    let mut h = crc32fast::Hasher::new();
    h.update(&hash.to_le_bytes());
    h.update(&index.to_le_bytes());
    h.update(&term.to_le_bytes());
    h.update(data);
    (hash.rotate_left(17) ^ u64::from(h.finalize())).wrapping_mul(0x100_0000_01B3)
}

struct Sim {
    seed: u64,
    rng: Rng,
    now_ms: u64,
    faults: Faults,
    _root: tempfile::TempDir,
    dirs: Vec<PathBuf>,
    nodes: Vec<Option<QuorumNode>>,
    apps: Vec<App>,
    /// A node cut off from the others, both ways.
    isolated: Option<u64>,
    /// (deliver at ms, message), delivered in time order.
    in_flight: Vec<(u64, Message)>,
    /// Election Safety: the one leader seen for each term.
    leaders: BTreeMap<u64, u64>,
    /// State Machine Safety: what was applied at each index, and the hash chain after it.
    applied: BTreeMap<u64, (u64, Bytes, u64)>,
    proposals: u64,
    /// Counts printed at the end, to show what a seed exercised.
    snapshots_applied: u64,
    restarts: u64,
    delivered: u64,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        // Shown with a failure's output, even when raft-rs itself panics.
        eprintln!("seed {seed}: QUIVER_SIM_SEED={seed} replays it");
        // The simulation checks the logic, not the disk: a RAM file system keeps fdatasync cheap.
        let shm = std::path::Path::new("/dev/shm");
        let root = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .unwrap();
        let dirs: Vec<PathBuf> = VOTERS
            .iter()
            .map(|id| root.path().join(format!("voter-{id}")))
            .collect();
        let nodes = VOTERS
            .iter()
            .zip(&dirs)
            .map(|(id, dir)| Some(open(*id, dir)))
            .collect();
        Sim {
            seed,
            rng: Rng(seed),
            now_ms: 0,
            faults: CALM,
            _root: root,
            dirs,
            nodes,
            apps: vec![App::default(); VOTERS.len()],
            isolated: None,
            in_flight: Vec::new(),
            leaders: BTreeMap::new(),
            applied: BTreeMap::new(),
            proposals: 0,
            snapshots_applied: 0,
            restarts: 0,
            delivered: 0,
        }
    }

    fn node(&mut self, id: u64) -> Option<&mut QuorumNode> {
        self.nodes[(id - 1) as usize].as_mut()
    }

    fn leader(&self) -> Option<u64> {
        let leaders: Vec<u64> = self
            .nodes
            .iter()
            .flatten()
            .filter(|n| n.is_leader())
            .map(|n| n.id())
            .collect();
        // An old leader may not know yet that a newer one exists: take the one of the highest term.
        leaders
            .into_iter()
            .max_by_key(|id| self.nodes[(id - 1) as usize].as_ref().unwrap().term())
    }

    /// One millisecond: deliveries due, ticks, then every node's `Ready`s.
    fn step(&mut self) {
        self.now_ms += 1;
        let now = self.now_ms;
        let mut due = Vec::new();
        self.in_flight.retain(|(at, m)| {
            if *at <= now {
                due.push(m.clone());
            }
            *at > now
        });
        for m in due {
            self.deliver(m);
        }
        if now.is_multiple_of(TICK_EVERY_MS) {
            for i in 0..self.nodes.len() {
                let skip = self.rng.percent(20);
                if let (Some(node), false) = (self.nodes[i].as_mut(), skip) {
                    node.tick();
                }
            }
        }
        for id in VOTERS {
            self.poll(id);
        }
    }

    fn poll(&mut self, id: u64) {
        let seed = self.seed;
        let Some(node) = self.node(id) else { return };
        let out = node
            .poll_ready()
            .unwrap_or_else(|e| panic!("seed {seed}: node {id}: {e}"));
        let (is_leader, term) = (node.is_leader(), node.term());
        if is_leader {
            let first = *self.leaders.entry(term).or_insert(id);
            assert_eq!(first, id, "seed {seed}: two leaders in term {term}");
        }
        for apply in out.apply {
            self.apply(id, apply);
        }
        let app = self.apps[(id - 1) as usize];
        let node = self.node(id).expect("polled above");
        if app.applied >= node.latest_snapshot().get_metadata().index + COMPACT_EVERY {
            node.compact(app.applied, Bytes::copy_from_slice(&app.hash.to_le_bytes()))
                .unwrap();
        }
        for m in out.messages {
            self.send(m);
        }
    }

    fn apply(&mut self, id: u64, apply: Apply) {
        let seed = self.seed;
        let app = &mut self.apps[(id - 1) as usize];
        match apply {
            Apply::Snapshot { index, data, .. } => {
                let hash = u64::from_le_bytes(data[..].try_into().expect("8 bytes"));
                let (_, _, expected) = self
                    .applied
                    .get(&index)
                    .expect("a snapshot of applied state");
                assert_eq!(
                    hash, *expected,
                    "seed {seed}: node {id}: snapshot at {index} differs"
                );
                *app = App {
                    applied: index,
                    hash,
                };
                self.snapshots_applied += 1;
            }
            Apply::Entry { index, term, data } => {
                assert_eq!(
                    index,
                    app.applied + 1,
                    "seed {seed}: node {id} applies out of order"
                );
                app.hash = chain(app.hash, index, term, &data);
                app.applied = index;
                let seen = self
                    .applied
                    .entry(index)
                    .or_insert_with(|| (term, data.clone(), app.hash));
                assert_eq!(
                    (seen.0, &seen.1, seen.2),
                    (term, &data, app.hash),
                    "seed {seed}: node {id} diverges at {index}"
                );
            }
        }
    }

    fn is_cut(&self, m: &Message) -> bool {
        let cut = |id: u64| self.isolated == Some(id) || self.nodes[(id - 1) as usize].is_none();
        cut(m.from) || cut(m.to)
    }

    /// A snapshot goes over a stream whose outcome the transport sees, and raft must be told
    /// (a follower's progress waits in the snapshot state until it is).
    fn report_snapshot(&mut self, m: &Message, delivered: bool) {
        if m.get_msg_type() == MessageType::MsgSnapshot {
            if let Some(node) = self.node(m.from) {
                node.report_snapshot(m.to, delivered);
            }
        }
    }

    /// Delivers a message due now, unless a partition or a crash came between.
    fn deliver(&mut self, m: Message) {
        if self.is_cut(&m) {
            self.report_snapshot(&m, false);
            return;
        }
        self.delivered += 1;
        self.report_snapshot(&m, true);
        let node = self.node(m.to).expect("not cut");
        // A refused message (a stale one, for instance) is no fault of the node.
        let _ = node.step(m);
    }

    fn send(&mut self, m: Message) {
        if self.is_cut(&m) || self.rng.percent(self.faults.loss) {
            self.report_snapshot(&m, false);
            return;
        }
        let copies = if self.rng.percent(self.faults.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let at = self.now_ms + 1 + self.rng.below(self.faults.delay_max_ms);
            self.in_flight.push((at, m.clone()));
        }
    }

    fn run(&mut self, ms: u64) {
        for _ in 0..ms {
            self.step();
        }
    }

    /// Proposes through the current leader, if any; returns the data proposed.
    fn propose(&mut self) -> Option<Bytes> {
        let leader = self.leader()?;
        self.proposals += 1;
        let data = format!("seed {} proposal {}", self.seed, self.proposals);
        self.node(leader)?.propose(data.clone().into_bytes()).ok()?;
        self.poll(leader);
        Some(Bytes::from(data))
    }

    fn is_committed(&self, data: &Bytes) -> bool {
        self.applied.values().any(|(_, d, _)| d == data)
    }

    /// Crashes a node: its process and everything it had not made durable are gone; what it
    /// already sent may still arrive. With `torn`, its last write was cut halfway.
    fn crash(&mut self, id: u64, torn: bool) {
        self.nodes[(id - 1) as usize] = None;
        if torn {
            use std::io::Write;
            // Half of a plausible entry record: a length and CRC with only part of the payload.
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(self.dirs[(id - 1) as usize].join("log"))
                .unwrap();
            f.write_all(&[64, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 0, 7, 0, 0, 0])
                .unwrap();
        }
    }

    fn restart(&mut self, id: u64) {
        let node = open(id, &self.dirs[(id - 1) as usize]);
        let snap = node.latest_snapshot().clone();
        let hash = if snap.data.is_empty() {
            0
        } else {
            u64::from_le_bytes(snap.data[..].try_into().unwrap())
        };
        self.apps[(id - 1) as usize] = App {
            applied: snap.get_metadata().index,
            hash,
        };
        self.nodes[(id - 1) as usize] = Some(node);
        self.restarts += 1;
    }

    /// Runs calmly until every node has applied the same last index and a fresh proposal commits
    /// everywhere; panics after `bound_ms`.
    fn converge(&mut self, bound_ms: u64) {
        self.faults = CALM;
        self.isolated = None;
        let start = self.now_ms;
        let mut proposed: Option<Bytes> = None;
        while self.now_ms - start < bound_ms {
            self.run(10);
            if proposed.is_none() {
                proposed = self.propose();
            }
            let last = self.applied.keys().next_back().copied().unwrap_or(0);
            let everywhere = self.apps.iter().all(|a| a.applied == last);
            if everywhere && proposed.as_ref().is_some_and(|p| self.is_committed(p)) {
                eprintln!(
                    "seed {}: {} ms, {} entries applied, {} terms with a leader (last {}), {} snapshots installed, {} restarts, {} messages delivered",
                    self.seed,
                    self.now_ms,
                    last,
                    self.leaders.len(),
                    self.leaders.keys().next_back().unwrap_or(&0),
                    self.snapshots_applied,
                    self.restarts,
                    self.delivered
                );
                return;
            }
        }
        panic!(
            "seed {}: no convergence in {bound_ms} ms: applied {:?}",
            self.seed,
            self.apps.iter().map(|a| a.applied).collect::<Vec<_>>()
        );
    }
}

fn open(id: u64, dir: &std::path::Path) -> QuorumNode {
    QuorumNode::open_with(id, &VOTERS, dir, (10, 11)).unwrap()
}

/// The seeds to run: `QUIVER_SIM_SEED` alone if set, else `defaults`.
fn seeds(defaults: std::ops::Range<u64>) -> Vec<u64> {
    match std::env::var("QUIVER_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("QUIVER_SIM_SEED is a number")],
        Err(_) => defaults.collect(),
    }
}

#[test]
fn random_faults_keep_one_leader_per_term_and_one_log() {
    for seed in seeds(1..9) {
        let mut sim = Sim::new(seed);
        sim.faults = ROUGH;
        for round in 0..40 {
            // Each round of 300 ms: maybe a fault (at the leader half the time), proposals
            // through whoever leads.
            let victim = match sim.leader() {
                Some(leader) if sim.rng.percent(50) => leader,
                _ => 1 + sim.rng.below(3),
            };
            match sim.rng.below(5) {
                0 => sim.isolated = Some(victim),
                1 => sim.isolated = None,
                2 => {
                    let torn = sim.rng.percent(50);
                    sim.crash(victim, torn);
                }
                _ => {}
            }
            for _ in 0..30 {
                sim.run(10);
                if sim.rng.percent(30) {
                    sim.propose();
                }
            }
            for id in VOTERS {
                if sim.nodes[(id - 1) as usize].is_none() && (round % 2 == 1 || sim.rng.percent(50))
                {
                    sim.restart(id);
                }
            }
        }
        for id in VOTERS {
            if sim.nodes[(id - 1) as usize].is_none() {
                sim.restart(id);
            }
        }
        sim.converge(20_000);
        assert!(
            sim.applied.len() > 20,
            "seed {seed}: only {} entries committed",
            sim.applied.len()
        );
    }
}

#[test]
fn minority_partition_cannot_commit() {
    // Raft paper 5.4: a leader cut off from the majority cannot commit; the majority can.
    for seed in seeds(10..14) {
        let mut sim = Sim::new(seed);
        sim.converge(5_000);
        let old = sim.leader().expect("a leader after convergence");
        sim.isolated = Some(old);
        let stranded: Vec<Bytes> = (0..5).filter_map(|_| sim.propose()).collect();
        assert!(
            !stranded.is_empty(),
            "seed {seed}: the cut-off leader took no proposal"
        );
        sim.run(3_000);
        assert!(
            !sim.node(old).unwrap().is_leader(),
            "seed {seed}: check_quorum keeps the cut-off leader"
        );
        // The majority elected another leader and commits through it.
        let fresh = sim.propose().expect("the majority has a leader");
        sim.run(500);
        assert!(
            sim.is_committed(&fresh),
            "seed {seed}: the majority did not commit"
        );
        sim.converge(5_000);
        for p in &stranded {
            assert!(
                !sim.is_committed(p),
                "seed {seed}: a minority's proposal committed"
            );
        }
    }
}

#[test]
fn restarted_node_catches_up_even_with_a_torn_tail() {
    for seed in seeds(20..24) {
        let torn = seed % 2 == 0;
        let mut sim = Sim::new(seed);
        sim.converge(5_000);
        let down = 1 + sim.rng.below(3);
        sim.crash(down, torn);
        sim.faults = ROUGH;
        // Enough entries that the others compact past everything the crashed node has.
        for _ in 0..(3 * COMPACT_EVERY) {
            sim.propose();
            sim.run(20);
        }
        sim.restart(down);
        sim.converge(10_000);
        assert!(
            sim.applied.len() as u64 > COMPACT_EVERY,
            "seed {seed}: too little committed"
        );
    }
}

/// Ticks `node` until it sends a message of type `kind`; returns its messages of that kind.
fn tick_until(node: &mut QuorumNode, kind: MessageType) -> Vec<Message> {
    for _ in 0..100 {
        node.tick();
        let out = node.poll_ready().unwrap();
        let found: Vec<Message> = out
            .messages
            .into_iter()
            .filter(|m| m.get_msg_type() == kind)
            .collect();
        if !found.is_empty() {
            return found;
        }
    }
    panic!("node {} sent no {kind:?} in 100 ticks", node.id());
}

/// Steps `m` into `node` and returns what it answers.
fn answer(node: &mut QuorumNode, m: &Message) -> Vec<Message> {
    node.step(m.clone()).unwrap();
    node.poll_ready().unwrap().messages
}

#[test]
fn a_vote_survives_a_restart() {
    // Raft paper 5.2 and figure 2: votedFor is persistent state, written before the vote is
    // answered. Node 2 votes for 1 in term 1, the answer is lost, node 2 restarts; node 3 then
    // asks for its vote in term 1 and must be refused, or term 1 could have two leaders.
    let root = tempfile::tempdir().unwrap();
    let dir = |id: u64| root.path().join(format!("voter-{id}"));
    let mut n1 = open(1, &dir(1));
    let mut n2 = open(2, &dir(2));
    let mut n3 = open(3, &dir(3));

    let pre_vote = tick_until(&mut n1, MessageType::MsgRequestPreVote);
    let to_2 = |ms: &[Message]| ms.iter().find(|m| m.to == 2).cloned().unwrap();
    // With node 2's pre-vote, node 1 becomes a candidate of term 1 and asks for votes.
    let mut vote = Vec::new();
    for granted in answer(&mut n2, &to_2(&pre_vote)) {
        vote.extend(answer(&mut n1, &granted));
    }
    let vote_request = to_2(&vote);
    assert_eq!(
        (vote_request.get_msg_type(), vote_request.term),
        (MessageType::MsgRequestVote, 1)
    );
    let lost_grant = answer(&mut n2, &vote_request);
    assert!(
        lost_grant.iter().all(|m| !m.reject),
        "node 2 grants its vote to 1"
    );

    drop(n2);
    let mut n2 = open(2, &dir(2));
    assert_eq!(n2.term(), 1);

    // Node 3 campaigns; whatever node 2 answers goes back to node 3.
    let mut to_n2 = tick_until(&mut n3, MessageType::MsgRequestPreVote);
    for _ in 0..4 {
        let mut back = Vec::new();
        for m in to_n2.iter().filter(|m| m.to == 2) {
            back.extend(answer(&mut n2, m));
        }
        to_n2.clear();
        for m in back.iter().filter(|m| m.to == 3) {
            to_n2.extend(answer(&mut n3, m));
        }
    }
    // The lost grant arrives after all: node 1 leads term 1, and node 3 must not.
    for m in &lost_grant {
        answer(&mut n1, m);
    }
    assert!(n1.is_leader() && n1.term() == 1, "node 1 leads term 1");
    assert!(!(n3.is_leader() && n3.term() == 1), "two leaders in term 1");
}

/// Messages raft-rs would panic on never reach it: one for another node, one from itself, and
/// a heartbeat committing past the log (from a leader of any term).
#[test]
fn forged_messages_are_refused_before_raft_sees_them() {
    use raft::eraftpb::{Message, MessageType};
    let dir = tempfile::tempdir().unwrap();
    let mut node = super::node::QuorumNode::open(1, &[1, 2, 3], dir.path()).unwrap();
    let msg = |t: MessageType, from: u64, to: u64, term: u64, commit: u64| {
        let mut m = Message::default();
        m.set_msg_type(t);
        m.from = from;
        m.to = to;
        m.term = term;
        m.commit = commit;
        m
    };
    for m in [
        msg(MessageType::MsgHeartbeat, 2, 3, 1, 0),
        msg(MessageType::MsgHeartbeat, 1, 1, 1, 0),
        msg(MessageType::MsgHeartbeat, 0, 1, 1, 0),
        msg(MessageType::MsgHeartbeat, 2, 1, 5, 1_000_000),
        msg(MessageType::MsgHeartbeat, 2, 1, 0, 1),
    ] {
        assert!(
            matches!(
                node.step(m.clone()),
                Err(super::node::NodeError::Refused(_))
            ),
            "{m:?}"
        );
    }
    // An ordinary vote request goes to raft.
    let mut vote = msg(MessageType::MsgRequestVote, 2, 1, 2, 0);
    vote.log_term = 0;
    assert!(node.step(vote).is_ok());
    assert!(node.poll_ready().is_ok());
}

/// A broker that is not a voter joins as a learner: the leader adds it by a conf change, it
/// receives the whole log (through a snapshot when the log was compacted), applies the same
/// entries as the voters, never campaigns even when it hears no leader, and keeps its place
/// across a restart.
#[test]
fn a_learner_receives_the_log_and_never_campaigns() {
    use super::node::QuorumNode;
    use std::collections::BTreeMap;
    let root = tempfile::tempdir().unwrap();
    let dir = |id: u64| root.path().join(format!("node-{id}"));
    let mut nodes: BTreeMap<u64, QuorumNode> =
        VOTERS.iter().map(|&id| (id, open(id, &dir(id)))).collect();
    nodes.insert(4, QuorumNode::open_learner(4, &VOTERS, &dir(4)).unwrap());
    type Applied = BTreeMap<u64, Vec<(u64, Bytes)>>;
    let mut applied: Applied = BTreeMap::new();
    let mut snapshots: BTreeMap<u64, u64> = BTreeMap::new();
    // Runs `ticks` ticks, each followed by every message delivered straight to its addressee
    // until none is left.
    fn run(
        nodes: &mut BTreeMap<u64, QuorumNode>,
        applied: &mut Applied,
        snapshots: &mut BTreeMap<u64, u64>,
        ticks: u32,
    ) {
        for _ in 0..ticks {
            for n in nodes.values_mut() {
                n.tick();
            }
            let mut queue: Vec<Message> = Vec::new();
            loop {
                for (id, n) in nodes.iter_mut() {
                    let out = n.poll_ready().unwrap();
                    for a in out.apply {
                        match a {
                            Apply::Entry { index, data, .. } => {
                                applied.entry(*id).or_default().push((index, data))
                            }
                            Apply::Snapshot { index, .. } => {
                                snapshots.insert(*id, index);
                                applied.entry(*id).or_default().retain(|(i, _)| *i > index);
                            }
                        }
                    }
                    queue.extend(out.messages);
                }
                if queue.is_empty() {
                    break;
                }
                for m in queue.drain(..) {
                    if let Some(n) = nodes.get_mut(&m.to) {
                        let _ = n.step(m);
                    }
                }
            }
        }
    }
    // Node 1's clock runs ahead (all share one election timeout here): it campaigns first.
    for _ in 0..9 {
        nodes.get_mut(&1).unwrap().tick();
    }
    run(&mut nodes, &mut applied, &mut snapshots, 60);
    let leader = *nodes
        .iter()
        .find(|(_, n)| n.is_leader())
        .expect("a leader")
        .0;
    assert_ne!(leader, 4, "the learner never leads");
    for i in 0..30u32 {
        nodes
            .get_mut(&leader)
            .unwrap()
            .propose(format!("before-{i}").into_bytes())
            .unwrap();
        run(&mut nodes, &mut applied, &mut snapshots, 1);
    }
    // Compacted: the learner can only catch up from a snapshot.
    let commit = nodes[&leader].commit_index();
    nodes
        .get_mut(&leader)
        .unwrap()
        .compact(commit, Bytes::from_static(b"state"))
        .unwrap();
    assert!(
        !applied.contains_key(&4),
        "nothing reaches a learner not yet added"
    );
    nodes
        .get_mut(&leader)
        .unwrap()
        .propose_add_learner(4)
        .unwrap();
    run(&mut nodes, &mut applied, &mut snapshots, 20);
    assert_eq!(nodes[&leader].learners(), vec![4]);
    assert_eq!(
        snapshots.get(&4),
        Some(&commit),
        "caught up from the snapshot"
    );
    for i in 0..10u32 {
        nodes
            .get_mut(&leader)
            .unwrap()
            .propose(format!("after-{i}").into_bytes())
            .unwrap();
        run(&mut nodes, &mut applied, &mut snapshots, 1);
    }
    run(&mut nodes, &mut applied, &mut snapshots, 5);
    let tail = |id: u64| -> Vec<(u64, Bytes)> {
        applied[&id]
            .iter()
            .filter(|(i, _)| *i > commit)
            .cloned()
            .collect()
    };
    assert_eq!(
        tail(4),
        tail(leader),
        "the learner applies what the voters apply"
    );
    assert!(tail(4).iter().any(|(_, d)| d.as_ref() == b"after-9"));
    // Alone (its voters silent), the learner never campaigns.
    let mut learner = nodes.remove(&4).unwrap();
    drop(nodes);
    for _ in 0..200 {
        learner.tick();
        let out = learner.poll_ready().unwrap();
        assert!(
            out.messages.is_empty(),
            "a learner asks for no votes: {:?}",
            out.messages
        );
    }
    drop(learner);
    let again = QuorumNode::open_learner(4, &VOTERS, &dir(4)).unwrap();
    assert_eq!(again.learners(), vec![4], "its place survives a restart");
}
