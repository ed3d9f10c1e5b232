//! `QuorumNode`: one controller voter as a sans-IO state machine around `raft::RawNode<Store>`.
//!
//! No sockets, no clock, no tasks: time comes in as `tick`s, the network as `step`ped messages;
//! the only I/O is the node's own `Store`, whose calls block (the broker will run `poll_ready`
//! on glommio's blocking pool, like metadata writes). Call order, after raft-rs's own:
//!
//! 1. Inputs, any number of each: `tick()` every `TICK_MS` of the caller's clock, `step(m)` for
//!    every message received, `propose(data)` (leader only), `report_unreachable` and
//!    `report_snapshot` for every snapshot message once the transport knows its fate.
//! 2. `poll_ready()`: handles every pending `raft::Ready` in order. For each it installs a
//!    received snapshot, persists entries and hard state (one fdatasync), then collects the
//!    messages. It returns only after every write is durable, so every message in its `Output`
//!    may be sent at once, including the ones raft-rs says must follow persistence (vote and
//!    append responses). Batching many inputs before one `poll_ready` batches their fdatasyncs.
//! 3. Apply `Output::apply` in order (snapshots and committed entries), send
//!    `Output::messages`, note `Output::leadership`.
//! 4. Now and then, `compact(applied, state)` with the state machine's state at `applied`.
//!
//! Membership: the voters given to the first `open` never change. Learners (brokers that are
//! not voters: they receive the log and never vote) join through a conf change the leader
//! proposes (`propose_add_learner`); committed conf changes are applied here, in log order, and
//! reach the state machine as empty entries.

use std::path::Path;

use bytes::Bytes;
use raft::eraftpb::{
    ConfChange, ConfChangeSingle, ConfChangeType, ConfChangeV2, EntryType, Message, Snapshot,
};
use raft::prelude::ConfState;
use raft::{Config, RawNode, SnapshotStatus, StateRole};

use super::store::{Store, StoreError};

/// One tick of raft's logical clock, in the caller's milliseconds: an election starts 0.5 to
/// 1 s after the leader was last heard from, so a new leader is in place well within 2 s of
/// the old one's death; heartbeats go every 100 ms.
pub const TICK_MS: u64 = 50;
/// Ticks without a leader's word before a follower campaigns (randomized up to twice this).
pub const ELECTION_TICKS: usize = 10;
/// Ticks between a leader's heartbeats.
pub const HEARTBEAT_TICKS: usize = 2;
/// The most bytes of entries in one append message.
pub const APPEND_BYTES_MAX: u64 = 1024 * 1024;
/// The most append messages in flight to one follower.
pub const APPENDS_IN_FLIGHT_MAX: usize = 64;
const _: () = assert!(HEARTBEAT_TICKS < ELECTION_TICKS);

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The store failed: the process must stop (STYLE 7) and recover on restart.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Only the leader takes proposals; `leader` is the one this node knows of, if any.
    #[error("not the quorum's leader (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
    /// raft refused an input (a message for another node, a proposal dropped): not fatal.
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// A message that cannot be meant for this node, refused before raft sees it.
    #[error("refused: {0}")]
    Refused(String),
}

/// Who leads, as this node knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leadership {
    pub term: u64,
    /// `None` while the term has no known leader (an election is on).
    pub leader: Option<u64>,
}

/// What the state machine must apply, in this order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Apply {
    /// Replace the state with the snapshot's (the leader sent it; the log before it is gone).
    Snapshot { index: u64, term: u64, data: Bytes },
    /// A committed entry. `data` is empty for the entry each new leader appends: apply it as
    /// nothing, but it still moves the applied index.
    Entry { index: u64, term: u64, data: Bytes },
}

/// What one `poll_ready` asks of the caller.
#[derive(Debug, Default)]
pub struct Output {
    pub messages: Vec<Message>,
    pub apply: Vec<Apply>,
    /// Set when the term or the leader changed since the last `Output`.
    pub leadership: Option<Leadership>,
    /// Answers to `read_index`: (the caller's context, the commit index the leader confirmed
    /// while it still led). State applied up to that index is as new as any answer given.
    pub read_states: Vec<(Vec<u8>, u64)>,
}

pub struct QuorumNode {
    raw: RawNode<Store>,
    reported: Leadership,
}

impl QuorumNode {
    /// Opens voter `id`'s store in `dir`; a new store is bootstrapped with `voters` (every voter
    /// of a new quorum is given the same list). The state machine restarts from
    /// `latest_snapshot()`, and `poll_ready` then hands it the committed entries after it.
    pub fn open(id: u64, voters: &[u64], dir: &Path) -> Result<QuorumNode, NodeError> {
        Self::open_with(id, voters, dir, (ELECTION_TICKS, 2 * ELECTION_TICKS))
    }

    /// `open` with the election timeout drawn from `election_ticks` (`[min, max)` ticks). raft-rs
    /// draws it with `rand::thread_rng`; the simulation passes a one-value range and jitters
    /// the ticks itself, from its seed, so that a run replays.
    pub fn open_with(
        id: u64,
        voters: &[u64],
        dir: &Path,
        election_ticks: (usize, usize),
    ) -> Result<QuorumNode, NodeError> {
        assert!(
            id != 0 && voters.contains(&id),
            "voter {id} not in {voters:?}"
        );
        Self::open_member(id, voters, false, dir, election_ticks)
    }

    /// Opens learner `id`'s store in `dir` (a broker that is not a voter): it starts knowing
    /// the voters and itself as a learner, and receives the log once the leader has added it
    /// (`propose_add_learner`).
    pub fn open_learner(id: u64, voters: &[u64], dir: &Path) -> Result<QuorumNode, NodeError> {
        assert!(
            id != 0 && !voters.contains(&id),
            "learner {id} among the voters {voters:?}"
        );
        Self::open_member(id, voters, true, dir, (ELECTION_TICKS, 2 * ELECTION_TICKS))
    }

    fn open_member(
        id: u64,
        voters: &[u64],
        learner: bool,
        dir: &Path,
        election_ticks: (usize, usize),
    ) -> Result<QuorumNode, NodeError> {
        let mut store = Store::open(dir)?;
        if !store.is_initialized() {
            store.set_conf_state(ConfState {
                voters: voters.to_vec(),
                learners: if learner { vec![id] } else { Vec::new() },
                ..ConfState::default()
            })?;
        }
        let config = Config {
            id,
            election_tick: ELECTION_TICKS,
            min_election_tick: election_ticks.0,
            max_election_tick: election_ticks.1,
            heartbeat_tick: HEARTBEAT_TICKS,
            applied: store.snapshot_index(),
            max_size_per_msg: APPEND_BYTES_MAX,
            max_inflight_msgs: APPENDS_IN_FLIGHT_MAX,
            // A leader cut off from a majority steps down; a rejoining node cannot depose a
            // healthy leader. Both are what a metadata quorum wants.
            check_quorum: true,
            pre_vote: true,
            ..Config::default()
        };
        // raft-rs logs through slog; discarded until the broker bridges it to tracing.
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&config, store, &logger)?;
        let reported = Leadership {
            term: raw.raft.term,
            leader: None,
        };
        Ok(QuorumNode { raw, reported })
    }

    pub fn tick(&mut self) {
        self.raw.tick();
    }

    /// Hands raft a message from a peer. An error means the message was refused, not that the
    /// node is broken: log it and go on.
    ///
    /// Messages raft-rs would panic on are refused first: one addressed to another node, one
    /// claiming to come from this node, and a heartbeat whose commit index lies past this node's
    /// log (raft-rs asserts on it; a real leader never sends one, since it commits for a
    /// follower only up to what that follower acknowledged).
    pub fn step(&mut self, message: Message) -> Result<(), NodeError> {
        let me = self.raw.raft.id;
        if message.to != me || message.from == me || message.from == raft::INVALID_ID {
            return Err(NodeError::Refused(format!(
                "{:?} from {} to {}",
                message.get_msg_type(),
                message.from,
                message.to
            )));
        }
        if message.get_msg_type() == raft::eraftpb::MessageType::MsgHeartbeat
            && message.commit > self.raw.raft.raft_log.last_index()
        {
            // raft-rs asserts a heartbeat's commit is within the log. A leader sends at most
            // what the follower acknowledged; more is a forgery or a follower that lost its
            // store, and refusing it is safe (the leader's appends repair the follower).
            return Err(NodeError::Refused(format!(
                "heartbeat from {} commits {} past the log's end {}",
                message.from,
                message.commit,
                self.raw.raft.raft_log.last_index()
            )));
        }
        Ok(self.raw.step(message)?)
    }

    /// Proposes `data` for the log: appended here on the leader, forwarded to the leader by a
    /// follower (raft-rs's `MsgPropose`, carried like any message). Commitment shows up in a
    /// later `Output`; a proposal lost on the way (the leader changed) never does, so the
    /// caller waits with a deadline.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(), NodeError> {
        if self.leader().is_none() {
            return Err(NodeError::NotLeader { leader: None });
        }
        Ok(self.raw.propose(Vec::new(), data)?)
    }

    /// Asks the leader for its commit index, confirmed by a round of heartbeats (raft's
    /// ReadIndex): the answer comes in a later `Output::read_states` with `ctx`, or never (no
    /// leader, a lost message), so the caller waits with a deadline.
    pub fn read_index(&mut self, ctx: Vec<u8>) {
        self.raw.read_index(ctx);
    }

    /// Whether `poll_ready` has anything to do.
    pub fn has_ready(&self) -> bool {
        self.raw.has_ready()
    }

    /// On the leader: every voter's id and the index of the last entry known to be on it.
    pub fn progress(&self) -> Vec<(u64, u64)> {
        if !self.is_leader() {
            return Vec::new();
        }
        let mut out: Vec<(u64, u64)> = self
            .raw
            .raft
            .prs()
            .iter()
            .map(|(id, pr)| (*id, pr.matched))
            .collect();
        out.sort_unstable();
        out
    }

    /// The index of the last entry in this node's log.
    pub fn last_index(&self) -> u64 {
        self.raw.raft.raft_log.last_index()
    }

    /// The transport could not reach `to`: raft slows down replication to it.
    pub fn report_unreachable(&mut self, to: u64) {
        self.raw.report_unreachable(to);
    }

    /// Whether a snapshot message reached `to`. Must be called for every `MsgSnapshot` sent,
    /// delivered or not: until it is, raft keeps that follower in the snapshot state and sends it
    /// nothing, even after the follower answered (the simulation found followers stuck for good).
    pub fn report_snapshot(&mut self, to: u64, delivered: bool) {
        let status = if delivered {
            SnapshotStatus::Finish
        } else {
            SnapshotStatus::Failure
        };
        self.raw.report_snapshot(to, status);
    }

    /// Handles every pending `Ready`: the call order's step 2.
    pub fn poll_ready(&mut self) -> Result<Output, NodeError> {
        let mut out = Output::default();
        while self.raw.has_ready() {
            let mut rd = self.raw.ready();
            out.messages.extend(rd.take_messages());
            out.read_states.extend(
                rd.take_read_states()
                    .into_iter()
                    .map(|r| (r.request_ctx, r.index)),
            );
            if *rd.snapshot() != Snapshot::default() {
                let snapshot = rd.snapshot().clone();
                let meta = snapshot.get_metadata();
                out.apply.push(Apply::Snapshot {
                    index: meta.index,
                    term: meta.term,
                    data: snapshot.data.clone(),
                });
                self.raw.mut_store().apply_snapshot(snapshot)?;
            }
            self.take_committed(&mut out, rd.take_committed_entries())?;
            self.raw.mut_store().persist(rd.entries(), rd.hs())?;
            // Durable now: the responses that promise it may go.
            out.messages.extend(rd.take_persisted_messages());
            let mut light = self.raw.advance(rd);
            if let Some(commit) = light.commit_index() {
                self.raw.mut_store().set_commit(commit);
            }
            out.messages.extend(light.take_messages());
            self.take_committed(&mut out, light.take_committed_entries())?;
            self.raw.advance_apply();
        }
        let now = Leadership {
            term: self.raw.raft.term,
            leader: self.leader(),
        };
        if now != self.reported {
            self.reported = now;
            out.leadership = Some(now);
        }
        Ok(out)
    }

    /// Compaction: the state machine has applied every entry up to `applied` and `state` is its
    /// state there. Entries up to `applied` leave the log; followers too far behind get `state`
    /// as a snapshot. Durable on return.
    pub fn compact(&mut self, applied: u64, state: Bytes) -> Result<(), NodeError> {
        Ok(self.raw.mut_store().compact(applied, state)?)
    }

    /// Committed entries, in order, for the state machine. A conf change is applied here (and
    /// its new conf state made durable) and reaches the state machine as an empty entry. One
    /// that does not decode or that raft refuses is skipped (never proposed by a broker: a bug
    /// or a forgery, logged), the applied index moving past it all the same.
    fn take_committed(
        &mut self,
        out: &mut Output,
        entries: Vec<raft::eraftpb::Entry>,
    ) -> Result<(), NodeError> {
        for e in entries {
            let data = if e.get_entry_type() == EntryType::EntryNormal {
                e.data
            } else {
                match decode_conf_change(&e) {
                    Ok(cc) => {
                        let cs = self.raw.apply_conf_change(&cc);
                        self.record_conf_change(e.index, cs)?
                    }
                    Err(err) => {
                        tracing::error!(index = e.index, error = %err, "a committed conf change does not decode; skipped")
                    }
                }
                Bytes::new()
            };
            out.apply.push(Apply::Entry {
                index: e.index,
                term: e.term,
                data,
            });
        }
        Ok(())
    }

    /// Makes an applied conf change's new conf state durable (or logs raft's refusal).
    fn record_conf_change(
        &mut self,
        index: u64,
        applied: raft::Result<ConfState>,
    ) -> Result<(), NodeError> {
        match applied {
            Ok(cs) => {
                tracing::info!(index, voters = ?cs.voters, learners = ?cs.learners, "controller quorum membership changed");
                self.raw.mut_store().set_conf_state(cs)?;
            }
            Err(err) => {
                tracing::error!(index, error = %err, "a committed conf change was refused by raft; skipped");
            }
        }
        Ok(())
    }

    /// On the leader: proposes that broker `id` join as a learner. Raft takes one conf change
    /// at a time; a proposal while another is pending is refused (try again later).
    pub fn propose_add_learner(&mut self, id: u64) -> Result<(), NodeError> {
        if !self.is_leader() {
            return Err(NodeError::NotLeader {
                leader: self.leader(),
            });
        }
        if self.raw.raft.has_pending_conf() {
            return Err(NodeError::Refused("a conf change is pending".into()));
        }
        let cc = single_change(ConfChangeType::AddLearnerNode, id);
        Ok(self.raw.propose_conf_change(Vec::new(), cc)?)
    }

    /// The learners raft replicates to (as of the last applied conf change).
    pub fn learners(&self) -> Vec<u64> {
        self.raw
            .raft
            .prs()
            .conf()
            .learners()
            .iter()
            .copied()
            .collect()
    }

    pub fn id(&self) -> u64 {
        self.raw.raft.id
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    pub fn leader(&self) -> Option<u64> {
        Some(self.raw.raft.leader_id).filter(|id| *id != raft::INVALID_ID)
    }

    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    /// The snapshot the state machine restarts from (index 0, no data, if none).
    pub fn latest_snapshot(&self) -> &Snapshot {
        self.raw.store().latest_snapshot()
    }
}

/// A conf change of one node, in raft's second form.
fn single_change(kind: ConfChangeType, id: u64) -> ConfChangeV2 {
    let mut single = ConfChangeSingle::default();
    single.set_change_type(kind);
    single.node_id = id;
    let mut cc = ConfChangeV2::default();
    cc.set_changes(vec![single].into());
    cc
}

/// A committed conf change entry, in the second form (one of the first form, which brokers
/// never propose, is read as its one change).
fn decode_conf_change(e: &raft::eraftpb::Entry) -> Result<ConfChangeV2, protobuf::ProtobufError> {
    use protobuf::Message as _;
    if e.get_entry_type() == EntryType::EntryConfChange {
        let v1 = ConfChange::parse_from_bytes(&e.data)?;
        return Ok(single_change(v1.get_change_type(), v1.node_id));
    }
    ConfChangeV2::parse_from_bytes(&e.data)
}
