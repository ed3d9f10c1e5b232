//! A shard: one glommio executor pinned to one core, and everything it owns.
//!
//! # What a shard owns
//! - The partition logs placed on it (`placement::owner_of`). A log is `!Send`, lives in this
//!   shard's `logs` map and is touched by no other thread; another shard that needs it sends a
//!   `ShardMsg` over the glommio channel mesh and awaits the reply on a oneshot channel.
//! - Its QUIC endpoint (one UDP socket with SO_REUSEPORT) and the connections the kernel hashed to
//!   it; a request is served on the shard that received it.
//! - A copy of the metadata snapshot (`Arc<Snapshot>`, replaced whole on change).
//! - The services it hosts for the rest of the broker: the group coordinator of the groups whose
//!   offsets partitions it owns, and on shard 0 the controller. The shard holds them; it does
//!   not know their requests, which reach it as closures (`run_on`).
//!
//! # What may not be held across an `.await`
//! A `RefCell` borrow of `logs` or `snapshot`: clone the `Rc<PartitionLog>` or the
//! `Arc<Snapshot>` out, drop the borrow, then await. Rationale: another task on this shard may
//! run at the await and borrow mutably (opening a log on a metadata change), which would panic.
//!
//! No lock is taken on the produce or fetch path: the mesh channels are lock-free single-producer
//! rings, and oneshot replies are atomics.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use glommio::channels::channel_mesh::Senders;
use quiver_engine::{AppendInfo, PartitionLog, Records};
use quiver_proto::api::fetch::OffsetSpec;
use quiver_proto::batch::ValidBatch;
use quiver_proto::{LeaderEpoch, Offset, ShardId, TimestampMs};

use super::logs;
use super::mesh::{ListedOffset, PartError, PartRead};
use super::replica::{ReplicaState, Role};

/// What one shard asks of another (`mesh::ShardMsg`, run by a `Shard`).
pub type ShardMsg = super::mesh::ShardMsg<Shard>;
type Task = super::mesh::Task<Shard>;
use crate::cluster::controller::{Controller, ProducerIdsIssued};
use crate::cluster::state::{PartKey, Snapshot, TopicInfo};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::process::ShutdownFlag;

pub struct Shard {
    pub id: ShardId,
    pub config: Arc<Config>,
    /// Authentication and authorization settings (from `config`).
    pub security: Arc<crate::security::SecurityConfig>,
    /// Client quotas' buckets, shared by every shard.
    pub quota_buckets: Arc<crate::security::quota::Buckets>,
    pub metrics: Arc<Metrics>,
    pub shutdown: ShutdownFlag,
    snapshot: RefCell<Arc<Snapshot>>,
    logs: RefCell<HashMap<PartKey, Slot>>,
    /// Partitions whose logs an apply is opening now (`apply_local`).
    opening: RefCell<std::collections::HashSet<PartKey>>,
    /// Replicated partitions' state (`replica`), beside their logs.
    replicas: RefCell<HashMap<PartKey, Rc<ReplicaState>>>,
    /// Woken when this shard takes a new snapshot.
    snapshot_waiters: RefCell<Vec<oneshot::Sender<()>>>,
    mesh: Option<Senders<ShardMsg>>,
    pub controller: Option<Rc<Controller>>,
    /// Producer ids handed out so far (shared by every shard; raised by the controller).
    pub producer_ids: Arc<ProducerIdsIssued>,
    /// Coordination of the consumer groups whose offsets partitions this shard owns.
    pub groups: crate::group::Coordinator,
    shard_count: usize,
    stopping: Cell<bool>,
    listen_port: Cell<u16>,
    cluster_id: RefCell<Arc<str>>,
    /// The controller quorum's status, in a cluster.
    pub quorum: Option<Arc<crate::cluster::metalog::QuorumStatus>>,
}

/// A partition on its owner.
#[derive(Clone)]
enum Slot {
    Open(Rc<PartitionLog>),
    /// Opening failed (e.g. an I/O error during recovery); requests get this reason.
    Failed(Box<str>),
}

/// What a shard is made of when it starts.
pub struct ShardInit {
    pub id: ShardId,
    /// How many shards the broker runs. Counted once, before the shards start: inside a shard
    /// the thread is pinned to one CPU, so counting the CPUs there would say 1.
    pub shard_count: usize,
    pub config: Arc<Config>,
    pub security: Arc<crate::security::SecurityConfig>,
    pub quota_buckets: Arc<crate::security::quota::Buckets>,
    pub metrics: Arc<Metrics>,
    pub shutdown: ShutdownFlag,
    pub snapshot: Arc<Snapshot>,
    pub mesh: Option<Senders<ShardMsg>>,
    /// Shard 0's.
    pub controller: Option<Controller>,
    pub producer_ids: Arc<ProducerIdsIssued>,
    pub quorum: Option<Arc<crate::cluster::metalog::QuorumStatus>>,
}

impl Shard {
    pub fn new(init: ShardInit) -> Shard {
        let groups = crate::group::Coordinator::new(&init.config);
        Shard {
            id: init.id,
            config: init.config,
            security: init.security,
            quota_buckets: init.quota_buckets,
            metrics: init.metrics,
            shutdown: init.shutdown,
            snapshot: RefCell::new(init.snapshot),
            logs: RefCell::new(HashMap::new()),
            opening: RefCell::new(Default::default()),
            replicas: RefCell::new(HashMap::new()),
            snapshot_waiters: RefCell::new(Vec::new()),
            mesh: init.mesh,
            controller: init.controller.map(Rc::new),
            producer_ids: init.producer_ids,
            groups,
            shard_count: init.shard_count,
            stopping: Cell::new(false),
            listen_port: Cell::new(0),
            cluster_id: RefCell::new(Arc::from("")),
            quorum: init.quorum,
        }
    }

    /// The QUIC port clients reach this broker on (known once the endpoint is bound).
    pub fn listen_port(&self) -> u16 {
        self.listen_port.get()
    }

    pub fn set_listen_port(&self, port: u16) {
        self.listen_port.set(port);
    }

    /// The cluster this broker belongs to (created on first start, `<data_dir>/meta/cluster.id`).
    pub fn cluster_id(&self) -> Arc<str> {
        self.cluster_id.borrow().clone()
    }

    pub fn set_cluster_id(&self, id: Arc<str>) {
        *self.cluster_id.borrow_mut() = id;
    }

    /// Sets the cluster id on every shard (a cluster's broker learns it after it starts).
    pub async fn broadcast_cluster_id(self: &Rc<Self>, id: Arc<str>) {
        for i in 0..self.shard_count {
            let id = id.clone();
            self.run_on(ShardId(i as u32), move |s| async move {
                s.set_cluster_id(id);
            })
            .await;
        }
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    pub fn shard_count(&self) -> usize {
        self.shard_count
    }

    /// The shard that owns a partition of `topic`.
    pub fn owner(&self, topic: &TopicInfo, partition: quiver_proto::PartitionId) -> ShardId {
        super::placement::owner_of(topic.id, partition, self.shard_count)
    }

    pub(crate) fn log(&self, key: &PartKey) -> Result<Rc<PartitionLog>, PartError> {
        if self.stopping.get() {
            return Err(PartError::ShuttingDown);
        }
        match self.logs.borrow().get(key) {
            Some(Slot::Open(log)) => Ok(log.clone()),
            Some(Slot::Failed(why)) => Err(PartError::Failed(why.to_string())),
            None => Err(PartError::NotHosted),
        }
    }

    /// A replicated partition's state, when this shard owns a replica of it.
    pub fn replica_state(&self, key: &PartKey) -> Option<Rc<ReplicaState>> {
        self.replicas.borrow().get(key).cloned()
    }

    /// Every replicated partition this shard owns a replica of.
    pub fn replica_states(&self) -> Vec<(PartKey, Rc<ReplicaState>)> {
        self.replicas
            .borrow()
            .iter()
            .map(|(k, r)| (*k, r.clone()))
            .collect()
    }

    /// Resolves when this shard next takes a new snapshot.
    pub fn snapshot_changed(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut w = self.snapshot_waiters.borrow_mut();
        w.retain(|t| !t.is_canceled());
        w.push(tx);
        rx
    }

    /// What a consumer of the partition may read up to: the high watermark (`replica`) of a
    /// replicated partition, the log's visible end (`logs::visible_end`) otherwise.
    pub fn visible_end(&self, key: &PartKey, log: &PartitionLog) -> Offset {
        let local = logs::visible_end(log);
        match self.replica_state(key) {
            Some(r) => r.high_watermark(local),
            None => local,
        }
    }

    /// Resolves once the record at `offset` is visible (`visible_end`), or something changed
    /// under the waiter (the caller looks again).
    async fn wait_visible(&self, key: &PartKey, log: Rc<PartitionLog>, offset: Offset) {
        match self.replica_state(key) {
            None => logs::wait_visible(&log, offset).await,
            Some(r) => {
                let changed = r.changed();
                let local = logs::visible_end(&log);
                if r.high_watermark(local) > offset {
                    return;
                }
                if local > offset {
                    // Only a follower's fetch or a change of role moves it now.
                    let _ = changed.await;
                    return;
                }
                futures_lite::future::or(logs::wait_visible(&log, offset), async {
                    let _ = changed.await;
                })
                .await;
            }
        }
    }

    /// On the partition's leader: waits until every in-sync replica holds `end` durably (the
    /// high watermark reached it), for an acks=all produce. `Ok(false)` at the deadline;
    /// `NotHosted` if this broker stopped leading meanwhile.
    pub async fn wait_replicated_local(
        &self,
        key: PartKey,
        end: Offset,
        deadline: Instant,
    ) -> Result<bool, PartError> {
        // Only replicated partitions are waited for (their callers check), and every one this
        // broker holds a replica of has a state: none means it no longer does (a reassignment
        // removed it since the append), and the batches may never reach the new replicas.
        let Some(r) = self.replica_state(&key) else {
            return Err(PartError::NotHosted);
        };
        loop {
            let log = self.log(&key)?;
            if !r.leads() {
                return Err(PartError::NotHosted);
            }
            let changed = r.changed();
            let local = logs::visible_end(&log);
            if r.high_watermark(local) >= end {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            let moved = async {
                if local >= end {
                    // Only a follower's fetch or a change of role moves it now.
                    let _ = changed.await;
                } else {
                    futures_lite::future::or(
                        async {
                            let _ = changed.await;
                        },
                        logs::wait_visible(&log, Offset(end.0 - 1)),
                    )
                    .await;
                }
            };
            futures_lite::future::or(moved, sleep_until(deadline)).await;
        }
    }

    /// [`Shard::wait_replicated_local`] on the partition's owner.
    pub async fn wait_replicated_on(
        self: &Rc<Self>,
        owner: ShardId,
        key: PartKey,
        end: Offset,
        deadline: Instant,
    ) -> Result<bool, PartError> {
        self.run_on(owner, move |s| async move {
            s.wait_replicated_local(key, end, deadline).await
        })
        .await
        .unwrap_or(Err(PartError::ShuttingDown))
    }

    /// Every open log this shard owns, with its key.
    pub fn open_logs(&self) -> Vec<(PartKey, Rc<PartitionLog>)> {
        self.logs
            .borrow()
            .iter()
            .filter_map(|(k, s)| match s {
                Slot::Open(l) => Some((*k, l.clone())),
                Slot::Failed(_) => None,
            })
            .collect()
    }

    // ---- sending work to the owner ---------------------------------------------------------

    pub(crate) async fn send_to(&self, to: ShardId, msg: ShardMsg) {
        let mesh = self.mesh.as_ref().expect("a remote owner implies a mesh");
        self.metrics
            .shard_messages
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if mesh.send_to(to.0 as usize, msg).await.is_err() {
            // The peer's receiver is gone: it is stopping. The reply sender inside the message
            // is dropped with it, which the caller sees as a cancelled reply.
            tracing::debug!(to = to.0, "shard message not delivered: peer stopping");
        }
    }

    /// Appends on the partition's owner, here or across the mesh, every batch stamped with
    /// the partition's leader epoch `epoch` (what a follower will find its log by, KIP-101).
    pub async fn append_on(
        self: &Rc<Self>,
        owner: ShardId,
        key: PartKey,
        batches: Vec<ValidBatch>,
        epoch: LeaderEpoch,
    ) -> Result<AppendInfo, PartError> {
        if owner == self.id {
            return self.append_local(key, &batches, epoch).await;
        }
        let (reply, rx) = oneshot::channel();
        self.send_to(
            owner,
            ShardMsg::Append {
                key,
                batches,
                epoch,
                reply,
            },
        )
        .await;
        rx.await.unwrap_or(Err(PartError::ShuttingDown))
    }

    /// Reads partitions owned by `owner`: one message for all of them, answered in the order
    /// asked (see [`Shard::read_many_local`]).
    pub async fn read_on(
        self: &Rc<Self>,
        owner: ShardId,
        reads: Vec<(PartKey, Offset, usize)>,
        budget: usize,
    ) -> Vec<PartRead> {
        if owner == self.id {
            return self.read_many_local(reads, budget).await;
        }
        let n = reads.len();
        let (reply, rx) = oneshot::channel();
        self.send_to(
            owner,
            ShardMsg::Read {
                reads,
                budget,
                reply,
            },
        )
        .await;
        rx.await.unwrap_or_else(|_| {
            (0..n)
                .map(|_| PartRead {
                    records: Err(PartError::ShuttingDown),
                    high_watermark: Offset(0),
                    log_start: Offset(0),
                })
                .collect()
        })
    }

    /// Waits until one of `waits` (grouped by owner) has data, or the deadline passes.
    pub async fn wait_any(
        self: &Rc<Self>,
        by_owner: HashMap<ShardId, Vec<(PartKey, Offset)>>,
        deadline: Instant,
    ) {
        let mut futures: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>> = Vec::new();
        for (owner, waits) in by_owner {
            if owner == self.id {
                let me = self.clone();
                futures.push(Box::pin(
                    async move { me.wait_local(&waits, deadline).await },
                ));
            } else {
                let (reply, rx) = oneshot::channel();
                self.send_to(
                    owner,
                    ShardMsg::Wait {
                        waits,
                        deadline,
                        reply,
                    },
                )
                .await;
                futures.push(Box::pin(async move {
                    let _ = rx.await;
                }));
            }
        }
        if futures.is_empty() {
            return;
        }
        // Whichever owner answers first ends the wait; dropping the other receivers cancels
        // their waits on the owners (they watch for it).
        let any = futures_util::future::select_all(futures);
        futures_lite::future::or(async { any.await.0 }, sleep_until(deadline)).await;
    }

    /// Runs `f` on shard `on` in a task of its own and returns what it returns: the one way
    /// work other than reading and appending crosses the mesh (admin changes for the
    /// controller, group requests for their coordinator), each with its own typed answer. The
    /// task runs to its end even if the caller stops waiting, so a change cannot stop half-way.
    /// `None` if `on` is stopping and never ran it.
    pub async fn run_on<T, F, Fut>(self: &Rc<Self>, on: ShardId, f: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T> + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let task: Task = Box::new(move |shard| {
            Box::pin(async move {
                let _ = reply.send(f(shard).await);
            })
        });
        if on == self.id {
            spawn_task(self.clone(), task);
        } else {
            self.send_to(on, ShardMsg::Run(task)).await;
        }
        rx.await.ok()
    }

    /// Applies new metadata on every shard (this one included) and returns once all have.
    pub async fn broadcast_apply(
        self: &Rc<Self>,
        snapshot: Arc<Snapshot>,
        deleted: Vec<Arc<TopicInfo>>,
    ) {
        let mut waits = Vec::new();
        for s in 0..self.shard_count as u32 {
            if s == self.id.0 {
                continue;
            }
            let (reply, rx) = oneshot::channel();
            self.send_to(
                ShardId(s),
                ShardMsg::Apply {
                    snapshot: snapshot.clone(),
                    deleted: deleted.clone(),
                    reply,
                },
            )
            .await;
            waits.push(rx);
        }
        self.apply_local(snapshot, &deleted).await;
        for rx in waits {
            let _ = rx.await;
        }
    }

    // ---- work on the owner -----------------------------------------------------------------

    /// Serves a message from another shard, each in its own task so a long-poll does not block
    /// the next message.
    pub fn serve_msg(self: &Rc<Self>, msg: ShardMsg) {
        let me = self.clone();
        glommio::spawn_local(async move {
            match msg {
                ShardMsg::Append {
                    key,
                    batches,
                    epoch,
                    reply,
                } => {
                    let r = me.append_local(key, &batches, epoch).await;
                    let _ = reply.send(r);
                }
                ShardMsg::Read {
                    reads,
                    budget,
                    reply,
                } => {
                    let r = me.read_many_local(reads, budget).await;
                    let _ = reply.send(r);
                }
                ShardMsg::Wait {
                    waits,
                    deadline,
                    mut reply,
                } => {
                    let cancelled = reply.cancellation();
                    futures_lite::future::or(me.wait_local(&waits, deadline), cancelled).await;
                    let _ = reply.send(());
                }
                ShardMsg::Run(task) => task(me.clone()).await,
                ShardMsg::Apply {
                    snapshot,
                    deleted,
                    reply,
                } => {
                    me.apply_local(snapshot, &deleted).await;
                    let _ = reply.send(());
                }
            }
        })
        .detach();
    }

    pub async fn append_local(
        &self,
        key: PartKey,
        batches: &[ValidBatch],
        epoch: LeaderEpoch,
    ) -> Result<AppendInfo, PartError> {
        let log = self.log(&key)?;
        // The request was checked against the snapshot it started with; the append runs now.
        // A replicated partition takes it only if this broker still leads in that epoch: so
        // the epochs along its log never go down, and a deposed leader writes nothing.
        if let Some(r) = self.replica_state(&key) {
            let role = r.role();
            if role.leader != self.config.broker_id || role.leader_epoch != epoch.0 {
                return Err(PartError::NotHosted);
            }
        }
        Ok(log.append(batches, Some(epoch)).await?)
    }

    /// Reads whole batches below the high watermark. The high watermark is what a consumer may
    /// see: on one broker, what is durable under the topic's flush policy (`logs::visible_end`).
    ///
    /// Reads several partitions of this shard, in the order given, within a byte budget: the
    /// memory one fetch can hold is its budget (plus at most one batch past it), not the
    /// per-partition limit times the number of partitions. Partitions that need no I/O (nothing
    /// new, an error) answer at once; the rest are read concurrently in waves whose limits add
    /// up to what is left of the budget. Once the budget is spent the remaining partitions
    /// answer with no records and their current offsets (the next fetch reads them).
    pub async fn read_many_local(
        &self,
        reads: Vec<(PartKey, Offset, usize)>,
        budget: usize,
    ) -> Vec<PartRead> {
        let mut out: Vec<Option<PartRead>> = Vec::with_capacity(reads.len());
        // (index, log, answer without records yet, per-partition limit)
        let mut pending = Vec::new();
        for (i, (key, offset, max)) in reads.iter().enumerate() {
            match self.read_without_io(key, *offset) {
                Ok(done) => out.push(Some(done)),
                Err((log, answer)) => {
                    out.push(None);
                    pending.push((i, log, answer, *max));
                }
            }
        }
        let mut left = budget.max(1);
        let mut pending = pending.into_iter().peekable();
        while pending.peek().is_some() {
            if left == 0 {
                // Budget spent: the rest answer with their offsets and no records.
                for (i, _, answer, _) in pending.by_ref() {
                    out[i] = Some(answer);
                }
                break;
            }
            // One wave: the next partitions whose limits fit in what is left.
            let mut wave = Vec::new();
            let mut reserved = 0usize;
            while reserved < left {
                let Some((i, log, answer, max)) = pending.next() else {
                    break;
                };
                let max = max.min(left - reserved);
                reserved += max;
                wave.push((i, log, answer, max));
            }
            let results = futures_util::future::join_all(wave.into_iter().map(
                |(i, log, mut answer, max)| {
                    let offset = reads[i].1;
                    async move {
                        // Cut at the high watermark taken with the answer, so it is
                        // self-consistent.
                        answer.records = log
                            .read_records(offset, max, answer.high_watermark)
                            .await
                            .map_err(PartError::Engine);
                        (i, answer)
                    }
                },
            ))
            .await;
            for (i, r) in results {
                if let Ok(b) = &r.records {
                    left = left.saturating_sub(b.len);
                }
                out[i] = Some(r);
            }
        }
        out.into_iter()
            .map(|r| r.expect("every partition answered"))
            .collect()
    }

    /// The answer for a partition when it needs no I/O: `Ok` with an error or with no records
    /// (nothing visible at `offset` yet). `Err` hands back the log and the answer's offsets
    /// when records must be read.
    fn read_without_io(
        &self,
        key: &PartKey,
        offset: Offset,
    ) -> Result<PartRead, (Rc<PartitionLog>, PartRead)> {
        let log = match self.log(key) {
            Ok(l) => l,
            Err(e) => {
                return Ok(PartRead {
                    records: Err(e),
                    high_watermark: Offset(0),
                    log_start: Offset(0),
                })
            }
        };
        let hw = self.visible_end(key, &log);
        let empty = PartRead {
            records: Ok(Records {
                next: offset,
                ..Records::default()
            }),
            high_watermark: hw,
            log_start: log.start_offset(),
        };
        // At the visible end, or appended but not yet visible: nothing to return yet, and not
        // an error.
        if offset == hw || (offset > hw && offset <= log.end_offset()) {
            log.reader_at_end();
            Ok(empty)
        } else {
            Err((log, empty))
        }
    }

    async fn wait_local(&self, waits: &[(PartKey, Offset)], deadline: Instant) {
        let mut futures: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>> = Vec::new();
        for (key, offset) in waits {
            if let Ok(log) = self.log(key) {
                futures.push(Box::pin(self.wait_visible(key, log, *offset)));
            }
        }
        if futures.is_empty() {
            return;
        }
        // One wait per partition, each registering this task's waker: through `fan_in`, or
        // 32,768 of them would end the broker (glommio's waker count).
        let any = futures_util::future::select_all(futures);
        super::fan_in::fan_in(futures_lite::future::or(
            async { any.await.0 },
            sleep_until(deadline),
        ))
        .await;
    }

    pub(crate) async fn list_offset_local(
        &self,
        key: PartKey,
        spec: OffsetSpec,
    ) -> Result<ListedOffset, PartError> {
        let log = self.log(&key)?;
        Ok(match spec {
            OffsetSpec::Earliest => ListedOffset {
                offset: Some(log.start_offset()),
                timestamp: None,
            },
            OffsetSpec::Latest => ListedOffset {
                offset: Some(self.visible_end(&key, &log)),
                timestamp: None,
            },
            OffsetSpec::Timestamp(ts) => {
                let found = log.offset_for_timestamp(ts).await?;
                // Only what a consumer could read counts.
                let found = found.filter(|o| *o < self.visible_end(&key, &log));
                ListedOffset {
                    offset: found,
                    timestamp: found.map(|_| ts),
                }
            }
        })
    }

    /// Takes a new snapshot: opens partitions newly placed here, applies config changes, and
    /// closes and deletes the logs of deleted topics.
    pub async fn apply_local(self: &Rc<Self>, snapshot: Arc<Snapshot>, deleted: &[Arc<TopicInfo>]) {
        *self.snapshot.borrow_mut() = snapshot.clone();
        let now_leading = self.apply_roles(&snapshot);
        for topic in deleted {
            let doomed: Vec<(PartKey, Slot)> = {
                let mut logs = self.logs.borrow_mut();
                let keys: Vec<PartKey> = logs
                    .keys()
                    .filter(|k| k.topic_id == topic.id)
                    .copied()
                    .collect();
                keys.into_iter()
                    .filter_map(|k| logs.remove(&k).map(|s| (k, s)))
                    .collect()
            };
            for (key, slot) in doomed {
                if let Slot::Open(log) = slot {
                    if let Err(e) = log.delete().await {
                        tracing::error!(topic = %topic.meta.name, partition = key.partition.0, error = %e, "deleting a partition log failed");
                    }
                }
            }
            self.metrics.forget_topic(&topic.meta.name);
        }
        self.drop_moved_replicas(&snapshot).await;
        let mut to_open = Vec::new();
        for topic in snapshot.topics.values() {
            let log_config = logs::log_config(&topic.config);
            for p in 0..topic.meta.partitions {
                let partition = quiver_proto::PartitionId(p);
                if self.owner(topic, partition) != self.id
                    || !topic.is_replica(partition, snapshot.me)
                {
                    continue;
                }
                let key = topic.key(partition);
                let existing = self.logs.borrow().get(&key).cloned();
                match existing {
                    Some(Slot::Open(log)) => {
                        if log.config() != log_config {
                            if let Err(e) = log.set_config(log_config.clone()) {
                                tracing::error!(topic = %topic.meta.name, partition = p, error = %e, "applying topic config failed");
                            }
                        }
                    }
                    // A log that could not be opened is tried again with each new snapshot (the
                    // cause may be gone: a descriptor freed, a directory repaired). One already
                    // being opened (by an earlier snapshot's apply) is left to it.
                    Some(Slot::Failed(_)) | None => {
                        if self.opening.borrow_mut().insert(key) {
                            to_open.push((topic.clone(), partition, existing.is_some()));
                        }
                    }
                }
            }
        }
        // Many at once (`logs::OPENS_IN_FLIGHT`): a recovering log's reads overlap instead of
        // queueing one behind another, and new logs' directory syncs are made together after
        // all are created (one journal commit, not two per partition), before any is served.
        let syncs = quiver_engine::DirSyncs::default();
        let opened = RefCell::new(Vec::with_capacity(to_open.len()));
        futures_util::StreamExt::for_each_concurrent(
            futures_util::stream::iter(to_open),
            logs::OPENS_IN_FLIGHT,
            |(topic, partition, retry)| {
                let (syncs, opened) = (&syncs, &opened);
                async move {
                    slow_open_fault().await;
                    let dir = crate::cluster::dirs::partition_dir(
                        &self.config.data_dir,
                        &topic.meta.dir_name(),
                        partition,
                    );
                    let log_config = logs::log_config(&topic.config);
                    let r = PartitionLog::open_deferring_dir_syncs(&dir, log_config, syncs).await;
                    opened.borrow_mut().push((topic, partition, retry, r));
                }
            },
        )
        .await;
        let mut opened = opened.into_inner();
        if let Err(e) = syncs.sync(logs::OPENS_IN_FLIGHT).await {
            // Which new directory did not sync is not known: none of this batch is served.
            tracing::error!(error = %e, "syncing new partition directories failed");
            for (_, _, _, r) in &mut opened {
                if let Ok(log) = r {
                    let _ = log.close().await;
                    *r = Err(e.clone());
                }
            }
        }
        for (topic, partition, retry, r) in opened {
            self.place_slot(&topic, partition, retry, r).await;
            self.opening.borrow_mut().remove(&topic.key(partition));
        }
        // A follower of an offsets partition copied commits its coordinator never applied:
        // leading it now, the coordinator replays the log (the group coordinator moves with the
        // partition's leader). In a task of its own: applying metadata (which the controller
        // quorum waits for) never waits for a replay; meanwhile its groups' requests are
        // answered CoordinatorLoadInProgress.
        if let Some(offsets) = snapshot.topic(crate::group::OFFSETS_TOPIC) {
            for key in now_leading.iter().filter(|k| k.topic_id == offsets.id) {
                if let Ok(log) = self.log(key) {
                    self.groups.unload(key.partition);
                    let me = self.clone();
                    let partition = key.partition;
                    glommio::spawn_local(async move { me.groups.load(partition, log).await })
                        .detach();
                }
            }
        }
    }

    /// Puts the log of `partition` (placed on this shard), just opened, into its slot, or
    /// records why it could not be opened. `retry`: a slot that failed before was tried again.
    async fn place_slot(
        self: &Rc<Self>,
        topic: &Arc<TopicInfo>,
        partition: quiver_proto::PartitionId,
        retry: bool,
        opened: quiver_engine::Result<PartitionLog>,
    ) {
        let p = partition.0;
        let key = topic.key(partition);
        let slot = match opened {
            Ok(log) => {
                // The topic was deleted while its log opened: the deletion found no log to
                // delete, so this one goes now.
                let alive = self
                    .snapshot
                    .borrow()
                    .topic(&topic.meta.name)
                    .is_some_and(|t| t.id == topic.id);
                if !alive {
                    if let Err(e) = log.delete().await {
                        tracing::error!(topic = %topic.meta.name, partition = p, error = %e, "deleting a partition log failed");
                    }
                    return;
                }
                if retry {
                    tracing::info!(topic = %topic.meta.name, partition = p, "partition log opened on a retry: online again");
                }
                self.metrics.log_opened(&topic.meta.name, p);
                let log = Rc::new(log);
                if topic.meta.name == crate::group::OFFSETS_TOPIC {
                    self.groups.load(partition, log.clone()).await;
                }
                Slot::Open(log)
            }
            Err(e) => {
                if !retry {
                    tracing::error!(topic = %topic.meta.name, partition = p, error = %e, "opening partition log failed: the partition is offline on this broker");
                }
                self.metrics.log_failed(&topic.meta.name, p, &e.to_string());
                Slot::Failed(e.to_string().into())
            }
        };
        self.logs.borrow_mut().insert(key, slot);
    }

    /// Keeps each replicated partition's role (leader, epochs, ISR) as the snapshot says, for
    /// the partitions this shard owns a replica of; forgets the others. Returns the partitions
    /// this broker has just come to lead (it followed them before).
    /// Closes and deletes the logs of partitions this broker no longer holds a replica of
    /// while their topic lives on (a reassignment moved the replica away; `cluster::reassign`
    /// removes it only once the partition's new replicas are all in sync). Deleted topics'
    /// logs go with the topic.
    async fn drop_moved_replicas(&self, snapshot: &Snapshot) {
        let by_id: HashMap<u128, &Arc<TopicInfo>> =
            snapshot.topics.values().map(|t| (t.id, t)).collect();
        let moved: Vec<(PartKey, Slot, Arc<TopicInfo>)> = {
            let mut logs = self.logs.borrow_mut();
            let keys: Vec<(PartKey, Arc<TopicInfo>)> = logs
                .keys()
                .filter_map(|k| {
                    let topic = by_id.get(&{ k.topic_id })?;
                    (topic.meta.is_placed() && !topic.is_replica(k.partition, snapshot.me))
                        .then(|| (*k, (*topic).clone()))
                })
                .collect();
            keys.into_iter()
                .filter_map(|(k, t)| logs.remove(&k).map(|s| (k, s, t)))
                .collect()
        };
        for (key, slot, topic) in moved {
            let name = &topic.meta.name;
            let partition = key.partition.0;
            if name == crate::group::OFFSETS_TOPIC {
                self.groups.unload(key.partition);
            }
            self.metrics.forget_partition(name, partition);
            if let Slot::Open(log) = slot {
                match log.delete().await {
                    Ok(()) => {
                        tracing::info!(topic = %name, partition, "replica moved away: log deleted")
                    }
                    Err(e) => {
                        tracing::error!(topic = %name, partition, error = %e, "deleting a moved replica's log failed")
                    }
                }
            }
        }
    }

    fn apply_roles(&self, snapshot: &Snapshot) -> Vec<PartKey> {
        let mut now_leading = Vec::new();
        let mut keep = std::collections::HashSet::new();
        for topic in snapshot.topics.values() {
            for (p, m) in topic.meta.placement.iter().enumerate() {
                let partition = quiver_proto::PartitionId(p as u32);
                if !m.replicas.contains(&snapshot.me) || self.owner(topic, partition) != self.id {
                    continue;
                }
                let key = topic.key(partition);
                keep.insert(key);
                if topic.meta.name == crate::group::OFFSETS_TOPIC {
                    self.groups.set_leader_epoch(partition, m.leader_epoch);
                }
                let role = Role {
                    leader: m.leader,
                    leader_epoch: m.leader_epoch,
                    partition_epoch: m.partition_epoch,
                    isr: m.isr.clone(),
                    replicas: m.replicas.clone(),
                };
                let existing = self.replicas.borrow().get(&key).cloned();
                match existing {
                    Some(r) => {
                        if !r.leads() && role.leader == snapshot.me {
                            now_leading.push(key);
                        }
                        r.set_role(role)
                    }
                    None => {
                        let r = Rc::new(ReplicaState::new(snapshot.me, role));
                        self.replicas.borrow_mut().insert(key, r);
                    }
                }
            }
        }
        let gone: Vec<Rc<ReplicaState>> = {
            let mut replicas = self.replicas.borrow_mut();
            let keys: Vec<PartKey> = replicas
                .keys()
                .filter(|k| !keep.contains(k))
                .copied()
                .collect();
            keys.iter().filter_map(|k| replicas.remove(k)).collect()
        };
        for r in gone {
            // No longer a replica here: anything waiting on it (an acks=all produce) is told
            // it does not lead, rather than reading the high watermark of a role it lost.
            let mut role = r.role();
            role.leader = 0;
            role.isr.clear();
            r.set_role(role);
            r.wake();
        }
        for tx in self.snapshot_waiters.borrow_mut().drain(..) {
            let _ = tx.send(());
        }
        now_leading
    }

    /// Applies retention to every log this shard owns.
    pub async fn retention_pass(&self) {
        let now = TimestampMs(crate::now_ms());
        for (key, log) in self.open_logs() {
            match log.apply_retention(now).await {
                Ok(report) if !report.deleted_segments.is_empty() => {
                    tracing::info!(
                        topic_id = format!("{:032x}", { key.topic_id }),
                        partition = key.partition.0,
                        segments = report.deleted_segments.len(),
                        bytes = report.deleted_bytes,
                        start_offset = report.start_offset.0,
                        "retention deleted segments"
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(partition = key.partition.0, error = %e, "retention failed")
                }
            }
        }
    }

    /// How far each follower of a partition this shard leads is behind (empty where it does
    /// not lead, or the partition is not replicated).
    pub fn follower_progress(
        &self,
        key: &PartKey,
    ) -> Vec<quiver_proto::api::fetch::FollowerProgress> {
        let (Some(r), Ok(log)) = (self.replica_state(key), self.log(key)) else {
            return Vec::new();
        };
        if !r.leads() {
            return Vec::new();
        }
        follower_stats(&r, &log)
            .into_iter()
            .map(|f| quiver_proto::api::fetch::FollowerProgress {
                broker_id: quiver_proto::BrokerId(f.id),
                fetch_offset: Offset(f.fetch_offset),
                lag_records: f.lag_records,
                lag_bytes: f.lag_bytes,
                lag_ms: f.lag_ms,
                last_fetch_ms: f.last_fetch_ms,
                window_fetches: f.window_fetches,
                window_ms: u32::try_from(f.window_ms).unwrap_or(u32::MAX),
            })
            .collect()
    }

    /// Publishes per-partition figures for /metrics (and, on shard 0, the partitions without a
    /// live leader, from metadata every shard shares).
    pub fn publish_stats(&self) {
        let snapshot = self.snapshot();
        if self.id == ShardId(0) {
            let offline: usize = snapshot
                .topics
                .values()
                .filter(|t| t.meta.is_placed())
                .map(|t| {
                    (0..t.meta.partitions)
                        .filter(|p| {
                            snapshot
                                .live_leader(t, quiver_proto::PartitionId(*p))
                                .is_none()
                        })
                        .count()
                })
                .sum();
            self.metrics
                .offline_partitions
                .store(offline as u64, std::sync::atomic::Ordering::Relaxed);
        }
        // One name per topic, shared by its partitions' keys.
        let names: HashMap<u128, Arc<str>> = snapshot
            .topics
            .values()
            .map(|t| (t.id, Arc::from(t.meta.name.as_str())))
            .collect();
        let stats = self.open_logs().into_iter().filter_map(|(key, log)| {
            let name = names.get(&{ key.topic_id })?;
            Some(((name.clone(), key.partition.0), {
                let replica = self.replica_state(&key);
                let role = replica.as_ref().map(|r| r.role());
                let leader = replica.as_ref().is_none_or(|r| r.leads());
                let followers = match &replica {
                    Some(r) if leader => follower_stats(r, &log),
                    _ => Vec::new(),
                };
                crate::metrics::PartitionStats {
                    log_start_offset: log.start_offset().0,
                    log_end_offset: log.end_offset().0,
                    size_bytes: log.size_bytes(),
                    segments: log.segment_count() as u64,
                    corrupt_ranges: log.corrupt_ranges().len() as u64,
                    high_watermark: self.visible_end(&key, &log).0,
                    leader,
                    replicas: role.as_ref().map_or(1, |r| r.replicas.len() as u64),
                    isr: role.as_ref().map_or(1, |r| r.isr.len() as u64),
                    followers,
                }
            }))
        });
        self.metrics
            .publish_partitions(stats.collect::<Vec<_>>(), &[]);
    }

    /// Refuses new partition work, then flushes and closes every log.
    pub async fn close_logs(&self) {
        self.stopping.set(true);
        let all: Vec<(PartKey, Slot)> = self.logs.borrow_mut().drain().collect();
        // Many at once, as they were opened: each written log's seal is three fdatasyncs.
        futures_util::StreamExt::for_each_concurrent(
            futures_util::stream::iter(all),
            logs::OPENS_IN_FLIGHT,
            |(key, slot)| async move {
                if let Slot::Open(log) = slot {
                    if let Err(e) = log.close().await {
                        tracing::error!(partition = key.partition.0, error = %e, "closing a log failed");
                    }
                }
            },
        )
        .await;
    }
}

/// Runs a mesh task on this shard, in a task of its own.
fn spawn_task(shard: Rc<Shard>, task: Task) {
    glommio::spawn_local(async move { task(shard).await }).detach();
}

pub async fn sleep_until(deadline: Instant) {
    let now = Instant::now();
    if deadline > now {
        glommio::timer::sleep(deadline - now).await;
    }
}

/// Upper bound for one cross-shard wait: even a cancelled fetch's waiters go by then.
pub const WAIT_MAX: Duration = Duration::from_secs(60);

/// Test builds only: `STREAMD_FAULT_SLOW_OPEN_MS=<n>` makes opening a partition log that a
/// metadata change placed here take n ms longer, as on a disk busy with other fsyncs (the
/// cluster tests check that the controller quorum keeps its leader meanwhile).
async fn slow_open_fault() {
    #[cfg(debug_assertions)]
    if let Some(ms) = std::env::var("STREAMD_FAULT_SLOW_OPEN_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        glommio::timer::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

/// On a partition's leader: each other replica's progress as figures (what /metrics and
/// ListOffsets' follower progress report).
fn follower_stats(r: &ReplicaState, log: &PartitionLog) -> Vec<crate::metrics::FollowerStats> {
    let end = log.readable_end().0;
    let now = Instant::now();
    r.replica_progress()
        .into_iter()
        .map(|(id, p)| {
            let (fetches, window) = p.fetch_rate(now);
            crate::metrics::FollowerStats {
                id,
                fetch_offset: p.durable.0,
                lag_records: end.saturating_sub(p.durable.0),
                lag_bytes: log.bytes_after(p.durable),
                lag_ms: now.duration_since(p.caught_up_at).as_millis() as u64,
                last_fetch_ms: now.duration_since(p.fetched_at).as_millis() as u64,
                window_fetches: fetches,
                window_ms: window.as_millis() as u64,
            }
        })
        .collect()
}
