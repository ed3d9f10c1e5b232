//! The controller quorum at run time: a glommio task on shard 0 drives `cluster::raft`'s
//! `QuorumNode` over the brokers' QUIC transport, and the committed metadata log is applied, in
//! order, on every broker.
//!
//! Every broker of a cluster is a voter (combined mode) and runs one `Quorum` on shard 0:
//! - **In**: raft messages from peers (`deliver`, from the RaftMessage handler on any shard),
//!   proposals from this broker's controller (`MetadataLog::submit`), the transport's reports,
//!   and a tick every `TICK_MS`. They reach the driver task as `Event`s on a bounded channel.
//! - **The driver** (`drive`) hands events to the node, ticks it, and when raft has a `Ready`
//!   runs `poll_ready` on glommio's blocking pool (it writes and fdatasyncs the Raft store), so
//!   shard 0's partitions do not stall on it. Then it queues the messages for their peers
//!   (`transport`), and hands what was committed to the apply task.
//! - **Apply** (`apply_committed`, a task of its own): each committed command is applied to the
//!   `MetadataState`, in log order, on every broker; when the state changed, every shard of
//!   this broker gets the new snapshot (`Shard::broadcast_apply`: logs opened, closed,
//!   deleted) before the proposer on this broker hears the outcome. So an admin request is
//!   answered only when its change is committed by a majority and in force on the broker that
//!   answered. The driver never waits for it: opening a new topic's partition logs can take
//!   seconds on a busy disk, and a driver that stopped ticking and answering its peers that
//!   long would cost the quorum its leader (check-quorum) and the proposals in flight.
//! - **Compaction**: every `COMPACT_EVERY` applied entries, the state is written as the Raft
//!   snapshot and the log before it dropped; a voter too far behind receives the snapshot.
//!
//! Proposals are JSON `Proposal`s (an id and a `MetadataCommand`); a follower's proposal is
//! forwarded to the leader by raft itself. A proposal that does not commit within
//! `SUBMIT_TIMEOUT` (no leader, or lost in a change of leader) is answered `Unavailable`; it may
//! still commit later, which the state machine makes harmless (a topic created twice is
//! refused the second time).
//!
//! Fencing: the leader notes when it last heard from each voter. A registered broker silent for
//! `broker_session_timeout_ms` is fenced (`SetFenced`), and unfenced when heard from again, both
//! through the log, so every broker tells clients the same thing.

mod apply;
mod join;
mod sessions;
pub mod transport;

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_channel::{mpsc, oneshot};
use futures_util::StreamExt;
use raft::eraftpb::Message;
use serde::{Deserialize, Serialize};

use crate::cluster::controller::{remove_deleted_dirs, ProducerIdsIssued};
use crate::cluster::meta::{
    Applied, BrokerMeta, MetaError, MetadataCommand, MetadataState, PartitionMeta, TopicMeta,
};
use crate::cluster::metalog::{LocalFuture, Membership, MetadataLog, QuorumStatus};
use crate::cluster::raft::node::{Apply, NodeError, Output, QuorumNode, TICK_MS};
use crate::cluster::state::{Snapshot, TopicInfo};
use crate::cluster::topic::TopicConfig;
use crate::config::{Config, Voter};
use crate::runtime::Shard;

/// Longest a proposal waits to be committed and applied here.
pub const SUBMIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Applying committed metadata that takes this long is logged.
const SLOW_APPLY: Duration = Duration::from_secs(1);
/// Longest wait for the active controller's answer to a forwarded admin request.
pub const FORWARD_CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Events waiting for the driver before new ones are dropped (raft tolerates lost messages).
const EVENTS_MAX: usize = 8192;
/// Entries applied between two compactions of the Raft log.
const COMPACT_EVERY: u64 = 1000;
/// A broker the active controller has not heard from for this long, or not at all since it
/// became the leader, gets no new partitions (followers answer the leader's heartbeats every
/// 100 ms). Counting only what was heard in its own leadership keeps a leader just elected
/// after its predecessor died from placing partitions on the dead one (the messages it had from
/// it as a follower are recent); the window itself tolerates followers answering late on a
/// loaded machine (with 0.4 s, a busy CI machine placed a whole topic on the leader alone).
const PLACEMENT_LIVENESS: Duration = Duration::from_millis(1000);
/// How often the leader checks brokers' sessions.
const SESSION_CHECK: Duration = Duration::from_millis(100);

/// What the driver task is handed.
pub enum Event {
    /// A message from voter `from` (checked by the handler: to us, from them).
    Step(Message, u32),
    /// A proposal from this broker's controller.
    Propose(u64, Vec<u8>),
    /// A peer could not be reached.
    Unreachable(u64),
    /// Whether a snapshot message reached a peer.
    SnapshotStatus(u64, bool),
    /// A read barrier (`Quorum::read_barrier`), by id.
    ReadIndex(u64),
}

/// A read barrier waiting: the index to have applied (once the leader said), and its waker.
type ReadBarrier = (Option<u64>, oneshot::Sender<()>);

/// One entry of the metadata log.
#[derive(Serialize, Deserialize)]
struct Proposal {
    /// Random, so the proposer can find the outcome of its own proposal.
    id: u64,
    cmd: MetadataCommand,
    /// A decision only the quorum's leader may take (fencing a broker it has not heard
    /// from): the term it led when it decided. The entry is refused unless it commits in that
    /// term, so a former leader's stale decision, proposed late and forwarded to the new
    /// leader by raft, changes nothing (it once fenced the new leader itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    leader_term: Option<u64>,
}

/// The quorum as one broker sees it (`Quorum::describe`).
pub struct QuorumView {
    pub term: u64,
    pub commit: u64,
    pub voters: Vec<VoterView>,
}

/// One voter in a `QuorumView`: its log end and lag (known on the leader only) and the time
/// since this broker last heard from it (`None` for itself or never heard).
pub struct VoterView {
    pub id: u32,
    pub log_end: Option<u64>,
    pub lag: Option<u64>,
    pub last_heard_ms: Option<u64>,
}

/// How often a learner that is not registered yet asks again (the controller may have
/// committed its registration and the log not reached it yet).
const LEARNER_REGISTER_EVERY: Duration = Duration::from_secs(3);

/// How often the leader checks for registered brokers that are not voters and not learners
/// yet, to add them (one conf change at a time).
const LEARNER_RECONCILE_EVERY: Duration = Duration::from_millis(200);

/// How long a broker with no data waits, once a leader is known, before it proposes the
/// cluster's creation itself (see `Quorum::join`).
const INIT_DEFER: Duration = Duration::from_secs(1);

/// Why the quorum could not start.
#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    #[error("controller quorum store in {dir}: {source}")]
    Node { dir: PathBuf, source: NodeError },
    #[error("controller quorum snapshot in {dir} does not decode: {message}")]
    Snapshot { dir: PathBuf, message: String },
    #[error("{path} (this broker's metadata from running alone) cannot be read: {source}")]
    SingleBrokerData {
        path: PathBuf,
        source: crate::cluster::meta::MetaError,
    },
    #[error("cannot bind the controller quorum's client endpoint on {ip}: {message}")]
    Bind {
        ip: std::net::IpAddr,
        message: String,
    },
}

/// The quorum's recovered state, read before the shards start.
pub struct Recovered {
    node: QuorumNode,
    state: MetadataState,
    applied: u64,
    /// The metadata of this broker's time alone, still to be carried into the cluster.
    carry: Option<MetadataState>,
}

impl Recovered {
    pub fn state(&self) -> &MetadataState {
        &self.state
    }

    /// The topics of this broker's time alone that are still to be carried into the cluster
    /// (their directories are live, not strays).
    pub fn carried_topics(&self) -> impl Iterator<Item = &TopicMeta> {
        self.carry.iter().flat_map(|s| s.topics.values())
    }
}

/// Opens this voter's Raft store under `<data_dir>/meta/quorum` and replays it: the latest
/// snapshot, then every committed entry after it. Blocking; runs before the shards start, so
/// the start sweep of topic directories sees every committed topic.
pub fn recover(config: &Config, voters: &[Voter]) -> Result<Recovered, QuorumError> {
    let dir = config.data_dir.join("meta").join("quorum");
    // A broker that ran alone has `meta/metadata.json`; it is renamed once its topics are in
    // the cluster, so while it is there, carrying them over is unfinished (`Quorum::join`).
    let carry = crate::cluster::meta::read_file_state(&config.data_dir).map_err(|source| {
        QuorumError::SingleBrokerData {
            path: config.data_dir.join("meta").join("metadata.json"),
            source,
        }
    })?;
    if let Some(c) = &carry {
        tracing::info!(
            topics = c.topics.len(),
            "this broker ran alone before: its topics will be carried into the cluster, placed on it"
        );
    }
    std::fs::create_dir_all(&dir).map_err(|e| QuorumError::Node {
        dir: dir.clone(),
        source: NodeError::Refused(e.to_string()),
    })?;
    let ids: Vec<u64> = voters.iter().map(|v| u64::from(v.id)).collect();
    let node_err = |source| QuorumError::Node {
        dir: dir.clone(),
        source,
    };
    let learner = config.roles() == Ok(crate::config::Roles::BrokerOnly);
    let mut node = if learner {
        QuorumNode::open_learner(u64::from(config.broker_id), &ids, &dir)
    } else {
        QuorumNode::open(u64::from(config.broker_id), &ids, &dir)
    }
    .map_err(node_err)?;
    let snap = node.latest_snapshot();
    let mut applied = snap.get_metadata().index;
    let mut state = decode_state(&snap.data).map_err(|message| QuorumError::Snapshot {
        dir: dir.clone(),
        message,
    })?;
    while node.has_ready() {
        let out = node.poll_ready().map_err(node_err)?;
        for a in out.apply {
            match a {
                Apply::Snapshot { index, data, .. } => {
                    state = decode_state(&data).map_err(|message| QuorumError::Snapshot {
                        dir: dir.clone(),
                        message,
                    })?;
                    applied = index;
                }
                Apply::Entry { index, data, .. } => {
                    applied = index;
                    if let Some(p) = decode_proposal(&data) {
                        let _ = state.apply(&p.cmd);
                    }
                }
            }
        }
    }
    tracing::info!(
        dir = %dir.display(),
        applied,
        version = state.version,
        topics = state.topics.len(),
        "controller quorum log replayed"
    );
    Ok(Recovered {
        node,
        state,
        applied,
        carry,
    })
}

fn decode_state(data: &[u8]) -> Result<MetadataState, String> {
    if data.is_empty() {
        return Ok(MetadataState::default());
    }
    serde_json::from_slice(data).map_err(|e| e.to_string())
}

fn decode_proposal(data: &[u8]) -> Option<Proposal> {
    if data.is_empty() {
        // The entry each new leader appends.
        return None;
    }
    match serde_json::from_slice(data) {
        Ok(p) => Some(p),
        Err(e) => {
            // Only brokers write the log, after encoding a command; a bug, not input.
            tracing::error!(error = %e, "a committed metadata entry does not decode; skipped");
            None
        }
    }
}

pub struct Quorum {
    me: u32,
    membership: Membership,
    voters: Vec<Voter>,
    events: mpsc::Sender<Event>,
    state: RefCell<MetadataState>,
    applied: Cell<u64>,
    compacted: Cell<u64>,
    waiters: RefCell<HashMap<u64, oneshot::Sender<Result<Applied, MetaError>>>>,
    /// Read barriers waiting: their id, the index to apply (once the leader said), the waker.
    reads: RefCell<HashMap<u64, ReadBarrier>>,
    status: Arc<QuorumStatus>,
    /// The cluster id this broker's data belongs to, if it has one yet.
    cluster_id: RefCell<Option<String>>,
    /// The metadata of this broker's time alone, until it is carried into the cluster. While
    /// it is, the id in `meta/cluster.id` is that broker's own and gives way to the cluster's.
    carry: RefCell<Option<MetadataState>>,
    /// A broker that is not a voter (`process_roles = "broker"`): a raft learner, which asks
    /// the controller to register it (`BrokerRegistration`) instead of proposing.
    learner: bool,
    /// The id this broker proposes if it is the first to fix the cluster's: the one its data
    /// has (its `meta/cluster.id`), if any.
    id_candidate: Option<String>,
    data_dir: PathBuf,
    defaults: TopicConfig,
    producer_ids: Arc<ProducerIdsIssued>,
    session_timeout: Duration,
    shard: OnceCell<Rc<Shard>>,
    /// On the leader: when each voter was last heard from (reset to "now" for every voter when
    /// this broker becomes leader, so sessions start afresh).
    last_heard: RefCell<HashMap<u32, Instant>>,
    /// When each voter was last heard from, by a message received (never reset): placement
    /// takes only brokers heard from within `PLACEMENT_LIVENESS`.
    last_message: RefCell<HashMap<u32, Instant>>,
    /// When this broker last became the quorum's leader (placement counts only messages since).
    leading_since: Cell<Instant>,
    /// The receiving end of `events` and the node, until `start` moves them into the driver.
    pending: RefCell<Option<(QuorumNode, mpsc::Receiver<Event>)>>,
    /// The quorum's client endpoint (set by `start`), and connections for forwarded requests.
    endpoint: OnceCell<Rc<quiver_net::Endpoint>>,
    /// When messages of another cluster were last reported (at most every 10 s).
    foreign_warned: Cell<Option<Instant>>,
    forward_conns: RefCell<HashMap<u32, quiver_net::ClientConnection>>,
    /// The other voters' hosts and ports (resolved at each dial; their certificates must
    /// name their hosts).
    peer_addrs: RefCell<BTreeMap<u32, transport::PeerAddr>>,
}

thread_local! {
    static QUORUM: RefCell<Option<Rc<Quorum>>> = const { RefCell::new(None) };
}

/// The quorum of this broker, on shard 0 (`None` elsewhere, or on a single broker).
pub fn on_this_shard() -> Option<Rc<Quorum>> {
    QUORUM.with(|q| q.borrow().clone())
}

impl Quorum {
    /// Made on shard 0 from what `recover` read.
    pub fn new(
        config: &Config,
        voters: Vec<Voter>,
        recovered: Recovered,
        cluster_id: Option<String>,
        status: Arc<QuorumStatus>,
        defaults: TopicConfig,
        producer_ids: Arc<ProducerIdsIssued>,
    ) -> Rc<Quorum> {
        let (tx, rx) = mpsc::channel(EVENTS_MAX);
        let membership = Membership {
            me: config.broker_id,
            voters: voters.iter().map(|v| v.id).collect(),
        };
        let applied = recovered.applied;
        // A broker that ran alone has an id of its own: it proposes it, but does not hold
        // other brokers' messages to it, and takes the cluster's if another is fixed first.
        let id_candidate = cluster_id.clone();
        let cluster_id = if recovered.carry.is_some() {
            None
        } else {
            cluster_id
        };
        let q = Rc::new(Quorum {
            me: config.broker_id,
            membership,
            voters,
            events: tx,
            state: RefCell::new(recovered.state),
            applied: Cell::new(applied),
            compacted: Cell::new(applied),
            waiters: RefCell::new(HashMap::new()),
            reads: RefCell::new(HashMap::new()),
            status,
            cluster_id: RefCell::new(cluster_id),
            carry: RefCell::new(recovered.carry),
            id_candidate,
            learner: config.roles() == Ok(crate::config::Roles::BrokerOnly),
            data_dir: config.data_dir.clone(),
            defaults,
            producer_ids,
            session_timeout: Duration::from_millis(config.broker_session_timeout_ms),
            shard: OnceCell::new(),
            last_heard: RefCell::new(HashMap::new()),
            last_message: RefCell::new(HashMap::new()),
            leading_since: Cell::new(Instant::now()),
            pending: RefCell::new(Some((recovered.node, rx))),
            endpoint: OnceCell::new(),
            foreign_warned: Cell::new(None),
            forward_conns: RefCell::new(HashMap::new()),
            peer_addrs: RefCell::new(BTreeMap::new()),
        });
        QUORUM.with(|slot| *slot.borrow_mut() = Some(q.clone()));
        q
    }

    /// Starts the driver, the peers' senders (from a client endpoint of their own, bound on
    /// `local_ip`) and the leader's session check. Call once, on shard 0, after the shard exists.
    pub fn start(
        self: &Rc<Self>,
        shard: Rc<Shard>,
        local_ip: std::net::IpAddr,
        client_tls: Arc<rustls::ClientConfig>,
    ) -> Result<(), QuorumError> {
        let _ = self.shard.set(shard);
        let Some((node, rx)) = self.pending.borrow_mut().take() else {
            return Ok(());
        };
        let endpoint_config = quiver_net::EndpointConfig {
            // Admin requests forwarded to the controller take their time (a commit, then every
            // shard applies it); raft calls are bounded by PEER_CALL_TIMEOUT on their own.
            call_timeout: FORWARD_CALL_TIMEOUT,
            ..quiver_net::EndpointConfig::default()
        };
        let endpoint = quiver_net::Endpoint::builder(SocketAddr::new(local_ip, 0))
            .config(endpoint_config)
            .client(client_tls)
            .bind()
            .map_err(|e| QuorumError::Bind {
                ip: local_ip,
                message: e.to_string(),
            })?;
        let endpoint = Rc::new(endpoint);
        let _ = self.endpoint.set(endpoint.clone());
        let mut peers = BTreeMap::new();
        for v in self.voters.iter().filter(|v| v.id != self.me) {
            let addr = transport::PeerAddr {
                host: v.host.clone(),
                port: v.port,
            };
            self.peer_addrs.borrow_mut().insert(v.id, addr.clone());
            let me = self.clone();
            let cluster_id: Rc<dyn Fn() -> String> =
                Rc::new(move || me.cluster_id.borrow().clone().unwrap_or_default());
            peers.insert(
                v.id,
                transport::spawn_peer(
                    self.me,
                    v.id,
                    addr,
                    endpoint.clone(),
                    cluster_id,
                    self.events.clone(),
                ),
            );
        }
        let (apply_tx, apply_rx) = mpsc::unbounded();
        glommio::spawn_local(self.clone().apply_committed(apply_rx)).detach();
        glommio::spawn_local(self.clone().drive(node, rx, peers, apply_tx)).detach();
        glommio::spawn_local(self.clone().check_sessions()).detach();
        Ok(())
    }

    /// Messages from voter `from`, sent for `cluster_id` ("" from a broker that has none yet).
    pub fn deliver(
        &self,
        from: u32,
        cluster_id: &str,
        messages: Vec<Message>,
    ) -> Result<(), quiver_proto::ErrorCode> {
        if let Some(ours) = self.cluster_id.borrow().as_deref() {
            if !cluster_id.is_empty() && cluster_id != ours {
                let last = self.foreign_warned.get();
                if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    self.foreign_warned.set(Some(Instant::now()));
                    tracing::error!(
                        from,
                        theirs = cluster_id,
                        ours,
                        "raft messages from broker {from} of another cluster ({cluster_id}) refused: this broker's data belongs to cluster {ours}. A broker joins a cluster only with that cluster's data or an empty data directory"
                    );
                }
                return Err(quiver_proto::ErrorCode::InconsistentClusterId);
            }
        }
        let mut events = self.events.clone();
        for m in messages {
            // A full queue drops the rest: raft resends.
            if events.try_send(Event::Step(m, from)).is_err() {
                break;
            }
        }
        Ok(())
    }

    /// Sends a request frame to voter `to` and returns its answer: an admin request this
    /// broker forwards to the active controller. One connection per voter, made on first use
    /// and made again after a failure.
    pub async fn forward(
        &self,
        to: u32,
        header: quiver_proto::frame::FrameHeader,
        body: bytes::Bytes,
    ) -> Result<quiver_proto::frame::Frame, String> {
        let endpoint = self
            .endpoint
            .get()
            .ok_or("the quorum has not started")?
            .clone();
        let existing = self.forward_conns.borrow().get(&to).cloned();
        let conn = match existing {
            Some(c) => c,
            None => {
                let addr = self
                    .peer_addrs
                    .borrow()
                    .get(&to)
                    .cloned()
                    .ok_or_else(|| format!("broker {to} is not another voter"))?;
                let c = transport::dial(&endpoint, &addr)
                    .await
                    .map_err(|why| format!("connecting to broker {to}: {why}"))?;
                self.forward_conns.borrow_mut().insert(to, c.clone());
                c
            }
        };
        match conn.call(header, body, Vec::new()).await {
            Ok(frame) => Ok(frame),
            Err(e) => {
                self.forward_conns.borrow_mut().remove(&to);
                conn.close("forwarded call failed");
                Err(format!("forwarding to broker {to}: {e}"))
            }
        }
    }

    pub fn status(&self) -> &Arc<QuorumStatus> {
        &self.status
    }

    /// Whether every voter has registered (as a broker or as controller-only).
    pub fn voters_registered(&self) -> bool {
        let state = self.state.borrow();
        self.membership
            .voters
            .iter()
            .all(|v| state.brokers.contains_key(v))
    }

    /// The cluster id once the log has fixed it.
    pub fn cluster_id(&self) -> Option<String> {
        self.cluster_id.borrow().clone()
    }

    /// The quorum as this broker sees it: term, commit index, and each voter's log end, lag
    /// and time since heard. Log ends and lags are known on the leader only (raft keeps each
    /// follower's progress there), times since heard for the other voters.
    pub fn describe(&self) -> QuorumView {
        let reading = self.status.read();
        let progress: HashMap<u64, u64> = reading.progress.iter().copied().collect();
        let heard = self.last_message.borrow();
        let leading = reading.leader == Some(self.me);
        let voters = self
            .membership
            .voters
            .iter()
            .map(|&id| {
                let end = if leading {
                    progress.get(&u64::from(id)).copied()
                } else {
                    None
                };
                let lag = end.map(|e| reading.commit.saturating_sub(e));
                let since = (id != self.me)
                    .then(|| heard.get(&id))
                    .flatten()
                    .map(|t| t.elapsed().as_millis() as u64);
                VoterView {
                    id,
                    log_end: end,
                    lag,
                    last_heard_ms: since,
                }
            })
            .collect();
        QuorumView {
            term: reading.term,
            commit: reading.commit,
            voters,
        }
    }

    /// Waits until this broker has applied everything the quorum had committed when the barrier
    /// was asked for (raft's ReadIndex, confirmed by the leader): after it, this broker's
    /// metadata holds every change answered before, wherever it was made. A broker that
    /// forwarded a change to the controller passes one before it answers, so its client reads
    /// its own write from it.
    pub async fn read_barrier(&self) -> Result<(), MetaError> {
        let id = rand::random::<u64>();
        let (tx, rx) = oneshot::channel();
        self.reads.borrow_mut().insert(id, (None, tx));
        if self.events.clone().try_send(Event::ReadIndex(id)).is_err() {
            self.reads.borrow_mut().remove(&id);
            return Err(MetaError::Unavailable(
                "the controller quorum's queue is full".into(),
            ));
        }
        if let Some(Ok(())) = within(SUBMIT_TIMEOUT, rx).await {
            return Ok(());
        }
        self.reads.borrow_mut().remove(&id);
        Err(MetaError::Unavailable(format!(
            "this broker did not catch up with the controller within {} s",
            SUBMIT_TIMEOUT.as_secs()
        )))
    }

    /// Wakes the read barriers whose index is applied.
    fn wake_reads(&self) {
        let applied = self.applied.get();
        let ready: Vec<u64> = self
            .reads
            .borrow()
            .iter()
            .filter(|(_, (index, _))| index.is_some_and(|i| i <= applied))
            .map(|(id, _)| *id)
            .collect();
        for id in ready {
            if let Some((_, tx)) = self.reads.borrow_mut().remove(&id) {
                let _ = tx.send(());
            }
        }
    }

    /// Proposes `cmd` and returns once it is committed and applied here (or refused by the
    /// state machine): how a partition's leader changes its ISR.
    pub async fn propose(&self, cmd: MetadataCommand) -> Result<Applied, MetaError> {
        self.submit_cmd(cmd).await
    }

    async fn submit_cmd(&self, cmd: MetadataCommand) -> Result<Applied, MetaError> {
        self.submit_proposal(cmd, None).await
    }

    /// [`submit_cmd`](Self::submit_cmd) for a decision of the quorum's leader: refused now if
    /// this broker does not lead, and by the state machine if it commits in another term.
    pub(super) async fn submit_as_leader(
        &self,
        cmd: MetadataCommand,
    ) -> Result<Applied, MetaError> {
        let term = self.status.read().term;
        if self.status.leader() != Some(self.me) {
            return Err(MetaError::Stale(format!(
                "broker {} no longer leads the controller quorum",
                self.me
            )));
        }
        self.submit_proposal(cmd, Some(term)).await
    }

    async fn submit_proposal(
        &self,
        cmd: MetadataCommand,
        leader_term: Option<u64>,
    ) -> Result<Applied, MetaError> {
        let id = rand::random::<u64>();
        let data = serde_json::to_vec(&Proposal {
            id,
            cmd,
            leader_term,
        })
        .expect("a command encodes");
        let (tx, rx) = oneshot::channel();
        self.waiters.borrow_mut().insert(id, tx);
        if self
            .events
            .clone()
            .try_send(Event::Propose(id, data))
            .is_err()
        {
            self.waiters.borrow_mut().remove(&id);
            return Err(MetaError::Unavailable(
                "the controller quorum's queue is full".into(),
            ));
        }
        match within(SUBMIT_TIMEOUT, rx).await {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(MetaError::Unavailable(
                "the controller quorum stopped".into(),
            )),
            None => {
                self.waiters.borrow_mut().remove(&id);
                let leader = match self.status.leader() {
                    Some(l) => format!("broker {l} leads it"),
                    None => "it has no leader".to_string(),
                };
                let reading = self.status.read();
                let heard: Vec<String> = self
                    .last_message
                    .borrow()
                    .iter()
                    .map(|(id, at)| format!("{id}: {} ms ago", at.elapsed().as_millis()))
                    .collect();
                tracing::warn!(
                    term = reading.term,
                    commit = reading.commit,
                    applied = self.applied.get(),
                    progress = ?reading.progress,
                    heard_from = ?heard,
                    "a proposal was not committed and applied within {} s ({leader})",
                    SUBMIT_TIMEOUT.as_secs()
                );
                Err(MetaError::Unavailable(format!(
                    "not committed within {} s ({leader}); it may still commit",
                    SUBMIT_TIMEOUT.as_secs()
                )))
            }
        }
    }

    async fn drive(
        self: Rc<Self>,
        mut node: QuorumNode,
        mut rx: mpsc::Receiver<Event>,
        mut peers: BTreeMap<u32, transport::PeerQueue>,
        apply: mpsc::UnboundedSender<Vec<Apply>>,
    ) {
        let tick = Duration::from_millis(TICK_MS);
        let mut next_tick = Instant::now() + tick;
        let mut dropped_warned = false;
        let mut reconciled = Instant::now();
        loop {
            if node.is_leader() && reconciled.elapsed() >= LEARNER_RECONCILE_EVERY {
                reconciled = Instant::now();
                self.add_learners(&mut node);
            }
            let now = Instant::now();
            if now < next_tick {
                let wait = next_tick - now;
                if let Some(e) = within(wait, rx.next()).await.flatten() {
                    self.handle(&mut node, e);
                }
            }
            // Everything queued meanwhile, bounded so ticks keep their pace.
            for _ in 0..EVENTS_MAX {
                match rx.try_recv() {
                    Ok(e) => self.handle(&mut node, e),
                    Err(_) => break,
                }
            }
            if Instant::now() >= next_tick {
                node.tick();
                next_tick += tick;
                if next_tick < Instant::now() {
                    next_tick = Instant::now() + tick;
                }
            }
            if node.has_ready() {
                let (back, out) = glommio::executor()
                    .spawn_blocking(move || {
                        let out = node.poll_ready();
                        (node, out)
                    })
                    .await;
                node = back;
                match out {
                    Ok(out) => {
                        for m in &out.messages {
                            let to = u32::try_from(m.to).unwrap_or(0);
                            if let std::collections::btree_map::Entry::Vacant(e) = peers.entry(to) {
                                if let Some(q) = self.learner_peer(to) {
                                    e.insert(q);
                                }
                            }
                            match peers.get(&to) {
                                Some(q) => {
                                    if !q.push(m.clone()) && !dropped_warned {
                                        tracing::warn!(
                                            peer = to,
                                            "raft messages dropped: the peer's queue is full"
                                        );
                                        dropped_warned = true;
                                    }
                                }
                                None => tracing::debug!(to, "raft message for an unknown voter"),
                            }
                        }
                        self.after_ready(&mut node, out, &apply);
                    }
                    Err(e) => {
                        // The store failed: stop, and recover from the log on restart.
                        tracing::error!(error = %e, "controller quorum store failed; stopping");
                        std::process::exit(70);
                    }
                }
            }
            self.status.set(
                node.leader(),
                node.term(),
                node.commit_index(),
                self.applied.get(),
            );
            self.status.set_progress(node.progress());
        }
    }

    /// On the leader: the first registered broker that is neither a voter nor a learner yet
    /// (nor controller-only) is proposed as a learner (raft takes one conf change at a time;
    /// the next waits for the next round).
    fn add_learners(&self, node: &mut QuorumNode) {
        let learners = node.learners();
        let next = self
            .state
            .borrow()
            .brokers
            .values()
            .find(|b| {
                !b.controller_only
                    && !self.membership.voters.contains(&b.id)
                    && !learners.contains(&u64::from(b.id))
            })
            .map(|b| b.id);
        if let Some(id) = next {
            match node.propose_add_learner(u64::from(id)) {
                Ok(()) => tracing::info!(
                    broker = id,
                    "adding a broker to the controller quorum as a learner"
                ),
                Err(e) => tracing::debug!(broker = id, error = %e, "adding a learner waits"),
            }
        }
    }

    /// A sender for learner `id`, at the address it registered with; `None` if it has not.
    fn learner_peer(self: &Rc<Self>, id: u32) -> Option<transport::PeerQueue> {
        let addr = {
            let state = self.state.borrow();
            let b = state.brokers.get(&id)?;
            transport::PeerAddr {
                host: b.host.clone(),
                port: b.port,
            }
        };
        let endpoint = self.endpoint.get()?.clone();
        let me = self.clone();
        let cluster_id: Rc<dyn Fn() -> String> =
            Rc::new(move || me.cluster_id.borrow().clone().unwrap_or_default());
        Some(transport::spawn_peer(
            self.me,
            id,
            addr,
            endpoint,
            cluster_id,
            self.events.clone(),
        ))
    }

    fn handle(&self, node: &mut QuorumNode, event: Event) {
        match event {
            Event::Step(m, from) => {
                self.last_heard.borrow_mut().insert(from, Instant::now());
                self.last_message.borrow_mut().insert(from, Instant::now());
                if let Err(e) = node.step(m) {
                    tracing::debug!(from, error = %e, "raft message refused");
                }
            }
            Event::Propose(id, data) => {
                if let Err(e) = node.propose(data) {
                    let waiter = self.waiters.borrow_mut().remove(&id);
                    if let Some(w) = waiter {
                        let _ = w.send(Err(MetaError::Unavailable(format!(
                            "the controller quorum has no leader ({e})"
                        ))));
                    }
                }
            }
            Event::ReadIndex(id) => node.read_index(id.to_le_bytes().to_vec()),
            Event::Unreachable(id) => node.report_unreachable(id),
            Event::SnapshotStatus(id, delivered) => node.report_snapshot(id, delivered),
        }
    }

    /// After a `Ready`: leadership news, read barriers' indexes, the committed entries handed
    /// to the apply task, and compaction once enough is applied.
    fn after_ready(
        &self,
        node: &mut QuorumNode,
        out: Output,
        apply: &mpsc::UnboundedSender<Vec<Apply>>,
    ) {
        if let Some(l) = out.leadership {
            match l.leader {
                Some(id) => tracing::info!(leader = id, term = l.term, "controller quorum leader"),
                None => tracing::info!(term = l.term, "controller quorum election"),
            }
            if l.leader == Some(u64::from(self.me)) {
                // A new leader starts every session afresh, learners' too.
                let now = Instant::now();
                self.leading_since.set(now);
                let mut heard = self.last_heard.borrow_mut();
                for v in &self.voters {
                    heard.insert(v.id, now);
                }
                for id in self.state.borrow().brokers.keys() {
                    heard.insert(*id, now);
                }
            }
        }
        for (ctx, index) in &out.read_states {
            if let Ok(id) = <[u8; 8]>::try_from(ctx.as_slice()) {
                if let Some(read) = self.reads.borrow_mut().get_mut(&u64::from_le_bytes(id)) {
                    read.0 = Some(*index);
                }
            }
        }
        if !out.apply.is_empty() && apply.unbounded_send(out.apply).is_err() {
            tracing::error!("the controller quorum's apply task stopped; stopping");
            std::process::exit(70);
        }
        self.wake_reads();
        // The apply task changes the state and the applied index together, with no await
        // between them: whenever this runs, the state is the one at `applied`.
        if self.applied.get() >= self.compacted.get() + COMPACT_EVERY {
            let applied = self.applied.get();
            let data = serde_json::to_vec(&*self.state.borrow()).expect("state encodes");
            // A rare, small write; the node is not borrowed elsewhere.
            match node.compact(applied, data.into()) {
                Ok(()) => self.compacted.set(applied),
                Err(e) => tracing::warn!(error = %e, "compacting the controller quorum log failed"),
            }
        }
    }
}

/// `fut`'s output, or `None` if it takes longer than `limit`.
pub(crate) async fn within<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}

fn cluster_id_file(data_dir: &Path) -> PathBuf {
    data_dir.join("meta").join("cluster.id")
}

/// The quorum as the controller's `MetadataLog`.
pub struct QuorumLog(pub Rc<Quorum>);

impl MetadataLog for QuorumLog {
    fn state(&self) -> std::cell::Ref<'_, MetadataState> {
        self.0.state.borrow()
    }

    fn submit(&self, cmd: MetadataCommand) -> LocalFuture<'_, Result<Applied, MetaError>> {
        Box::pin(self.0.submit_cmd(cmd))
    }

    fn applies_itself(&self) -> bool {
        true
    }

    fn cluster_member(&self) -> Option<&Membership> {
        Some(&self.0.membership)
    }

    fn placeable_brokers(&self) -> Vec<u32> {
        let q = &self.0;
        let heard = q.last_message.borrow();
        let since = q.leading_since.get();
        q.state
            .borrow()
            .brokers
            .values()
            .filter(|b| !b.fenced && !b.controller_only)
            .filter(|b| {
                b.id == q.me
                    || heard
                        .get(&b.id)
                        .is_some_and(|t| *t >= since && t.elapsed() < PLACEMENT_LIVENESS)
            })
            .map(|b| b.id)
            .collect()
    }
}
