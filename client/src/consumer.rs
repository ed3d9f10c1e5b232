//! The consumer: assigned partitions, long-poll fetches, seeks, pause/resume, commits.
//!
//! `poll` returns records from a buffer; fetches fill it. One fetch per broker shard
//! ([`crate::Node`]) is outstanding at a time, on that shard's connection, covering every
//! assigned, unpaused partition the shard owns and that has less than
//! `max_partition_fetch_bytes` of records waiting in the buffer: the next records are on their
//! way while the application works on the last (pipelining), and the buffer holds about two
//! fetches per partition at most. The broker holds a fetch up to `fetch_max_wait` until
//! `fetch_min_bytes` are there. Records are decoded (CRC checked, decompressed) in the fetch
//! task, off the caller's task; uncompressed keys and values are slices of the fetched bytes, not
//! copies.
//!
//! Groups: with `subscribe` (or `subscribe_pattern`), a background task heartbeats to the
//! group's coordinator (KIP-848) and `poll` applies the partitions the broker assigns,
//! committing the positions of those it gives up (auto-commit or `commit_on_revoke`) before
//! letting them go, and sending `RebalanceEvent`s to whoever asked for them. Commits, sync or
//! async, go through one task in order (`commit.rs`).
//!
//! Positions: `position(tp)` is the offset of the next record `poll` will return. A partition
//! without a position gets one on the next `poll`: its group's committed offset if there is
//! one, else `auto_offset_reset` (earliest, latest, or an error with `None`). A fetch that
//! falls outside the retained log (`OffsetOutOfRange`) is handled the same way.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use quiver_proto::api::fetch::{
    FetchPartition, FetchRequest, FetchResponse, FetchTopic, IsolationLevel, ListOffsetsPartition,
    ListOffsetsRequest, ListOffsetsTopic, OffsetSpec,
};
use quiver_proto::api::group::{OffsetFetchRequest, NO_GENERATION};
use quiver_proto::api::{ApiKey, TopicPartitions};
use quiver_proto::batch::{BatchError, BatchIter, BatchLimits, BatchView, Compression};
use quiver_proto::{BrokerId, ErrorCode, Offset, PartitionId, TimestampMs};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::client::{Client, Node};
use crate::commit::{CommitHandle, Committer, OffsetAndMetadata};
use crate::error::{Error, Result};
use crate::group::{
    check_topics, compile_pattern, find_coordinator, MemberOptions, Membership, Subscription,
};
use crate::record::{ConsumerRecord, Header, TopicPartition};

/// Where a partition without a usable position starts (`auto.offset.reset`).
///
/// ```
/// use quiver_client::OffsetReset;
/// assert_eq!("earliest".parse::<OffsetReset>().unwrap(), OffsetReset::Earliest);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum OffsetReset {
    /// The oldest retained record.
    Earliest,
    /// The next record to be written (only new records).
    #[default]
    Latest,
    /// No automatic choice: `poll` fails with the error that left the position undefined.
    None,
}

impl std::str::FromStr for OffsetReset {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<OffsetReset, String> {
        match s {
            "earliest" => Ok(OffsetReset::Earliest),
            "latest" => Ok(OffsetReset::Latest),
            "none" => Ok(OffsetReset::None),
            other => Err(format!(
                "auto_offset_reset must be earliest, latest or none, not '{other}'"
            )),
        }
    }
}

/// How the broker spreads a group's partitions over its members (`server_assignor` in the
/// KIP-848 heartbeat). The broker computes the assignment; the first member to join picks
/// the assignor, and a member asking for another one while the group has members is refused
/// (`UnsupportedAssignor`).
///
/// ```
/// use quiver_client::Assignor;
/// assert_eq!("round-robin".parse::<Assignor>().unwrap(), Assignor::RoundRobin);
/// assert_eq!(Assignor::Sticky.name(), "sticky");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Assignor {
    /// Per topic, contiguous ranges of partitions to the members subscribed to it.
    Range,
    /// All partitions dealt to members in turn.
    RoundRobin,
    /// Balanced, moving as few partitions as possible when members come and go (the broker's
    /// default).
    Sticky,
}

impl Assignor {
    /// The name the broker knows it by.
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "roundrobin",
            Assignor::Sticky => "sticky",
        }
    }
}

impl std::str::FromStr for Assignor {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Assignor, String> {
        match s {
            "range" => Ok(Assignor::Range),
            "roundrobin" | "round-robin" => Ok(Assignor::RoundRobin),
            "sticky" => Ok(Assignor::Sticky),
            other => Err(format!(
                "assignor must be range, roundrobin or sticky, not '{other}'"
            )),
        }
    }
}

impl std::fmt::Display for Assignor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A change of a subscribed consumer's partitions, delivered on the channel that
/// [`Consumer::rebalance_events`] returns, in the order the changes were applied.
///
/// The consumer applies changes inside `poll`, so once an event is sent, `poll` no longer
/// returns records of revoked or lost partitions, and returns records of assigned ones.
///
/// ```
/// use quiver_client::{RebalanceEvent, TopicPartition};
/// let e = RebalanceEvent::Assigned(vec![TopicPartition::new("orders", 0)]);
/// match e {
///     RebalanceEvent::Assigned(tps) => assert_eq!(tps[0].partition.0, 0),
///     RebalanceEvent::Revoked(_) | RebalanceEvent::Lost(_) => unreachable!(),
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RebalanceEvent {
    /// These partitions are now this member's (incremental: only the new ones).
    Assigned(Vec<TopicPartition>),
    /// These partitions were given up in a rebalance (or on close). With auto-commit or
    /// `commit_on_revoke`, their positions were committed before they were given up, so
    /// their next owner starts right after the last record `poll` returned here.
    Revoked(Vec<TopicPartition>),
    /// The member was fenced (its session expired, or another member with its instance id
    /// replaced it): these partitions may already be another member's, nothing was committed
    /// for them, and the consumer rejoins the group.
    Lost(Vec<TopicPartition>),
}

/// Consumer settings, named like the Kafka settings they mirror.
///
/// ```
/// use quiver_client::{ConsumerConfig, OffsetReset};
/// use std::time::Duration;
/// let config = ConsumerConfig::default()
///     .auto_offset_reset(OffsetReset::Earliest)
///     .fetch_max_wait(Duration::from_millis(100))
///     .max_poll_records(10_000);
/// assert_eq!(config.max_poll_records, 10_000);
/// ```
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// The group whose committed offsets this consumer uses and commits (`group.id`).
    pub group_id: Option<String>,
    pub auto_offset_reset: OffsetReset,
    /// How long the broker may hold a fetch waiting for `fetch_min_bytes` (`fetch.max.wait.ms`).
    pub fetch_max_wait: Duration,
    /// Bytes the broker waits for before answering a fetch (`fetch.min.bytes`), within
    /// `fetch_max_wait`.
    pub fetch_min_bytes: u32,
    /// Bytes one fetch answer may carry (`fetch.max.bytes`); the first batch always comes whole.
    pub fetch_max_bytes: u32,
    /// Bytes one partition may contribute to a fetch (`max.partition.fetch.bytes`).
    pub max_partition_fetch_bytes: u32,
    /// Records one `poll` returns at most (`max.poll.records`).
    pub max_poll_records: usize,
    /// Wait after a failed fetch or metadata error before that partition is fetched again.
    pub retry_backoff: Duration,
    /// With a `group_id`: commit positions every `auto_commit_interval`, before partitions are
    /// given up in a rebalance, and on `close` (`enable.auto.commit`; default true).
    pub enable_auto_commit: bool,
    pub auto_commit_interval: Duration,
    /// How long a group member may take to give up partitions the group moves elsewhere.
    pub rebalance_timeout: Duration,
    /// Static membership (`group.instance.id`): a stable id for this consumer instance (a pod
    /// name, a host name). A consumer that restarts with the same id within the session
    /// timeout takes its predecessor's partitions back without a rebalance; `close` tells the
    /// broker it will be back (epoch -2) instead of leaving the group.
    pub instance_id: Option<String>,
    /// The broker-side assignor to ask for; `None` leaves it to the broker (sticky unless
    /// streamd is configured otherwise).
    pub assignor: Option<Assignor>,
    /// A subscribed consumer commits the positions of partitions it gives up in a rebalance,
    /// or on `close`, even with `enable_auto_commit` off, so the next owner resumes right after
    /// the last record `poll` returned (default true). The position counts as processed: the
    /// application is done with a batch when it calls `poll` again. Turn it off when records
    /// are processed elsewhere after `poll` returns, and commit what was processed yourself.
    pub commit_on_revoke: bool,
    /// How often a pattern subscription lists the cluster's topics again to pick up new
    /// and deleted ones (`metadata.max.age.ms`).
    pub metadata_max_age: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            group_id: None,
            auto_offset_reset: OffsetReset::Latest,
            fetch_max_wait: Duration::from_millis(500),
            fetch_min_bytes: 1,
            fetch_max_bytes: 50 << 20,
            max_partition_fetch_bytes: 1 << 20,
            max_poll_records: 1000,
            retry_backoff: Duration::from_millis(100),
            enable_auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            rebalance_timeout: Duration::from_secs(60),
            instance_id: None,
            assignor: None,
            commit_on_revoke: true,
            metadata_max_age: Duration::from_secs(30),
        }
    }
}

impl ConsumerConfig {
    pub fn group_id(mut self, g: impl Into<String>) -> ConsumerConfig {
        self.group_id = Some(g.into());
        self
    }
    pub fn auto_offset_reset(mut self, r: OffsetReset) -> ConsumerConfig {
        self.auto_offset_reset = r;
        self
    }
    pub fn fetch_max_wait(mut self, d: Duration) -> ConsumerConfig {
        self.fetch_max_wait = d;
        self
    }
    pub fn fetch_min_bytes(mut self, n: u32) -> ConsumerConfig {
        self.fetch_min_bytes = n;
        self
    }
    pub fn fetch_max_bytes(mut self, n: u32) -> ConsumerConfig {
        self.fetch_max_bytes = n;
        self
    }
    pub fn max_partition_fetch_bytes(mut self, n: u32) -> ConsumerConfig {
        self.max_partition_fetch_bytes = n;
        self
    }
    pub fn max_poll_records(mut self, n: usize) -> ConsumerConfig {
        self.max_poll_records = n.max(1);
        self
    }
    pub fn retry_backoff(mut self, d: Duration) -> ConsumerConfig {
        self.retry_backoff = d;
        self
    }
    pub fn enable_auto_commit(mut self, on: bool) -> ConsumerConfig {
        self.enable_auto_commit = on;
        self
    }
    pub fn auto_commit_interval(mut self, d: Duration) -> ConsumerConfig {
        self.auto_commit_interval = d;
        self
    }
    pub fn rebalance_timeout(mut self, d: Duration) -> ConsumerConfig {
        self.rebalance_timeout = d;
        self
    }

    /// Static membership: see [`ConsumerConfig::instance_id`].
    ///
    /// ```
    /// use quiver_client::ConsumerConfig;
    /// let config = ConsumerConfig::default().group_id("billing").instance_id("billing-pod-3");
    /// assert_eq!(config.instance_id.as_deref(), Some("billing-pod-3"));
    /// ```
    pub fn instance_id(mut self, id: impl Into<String>) -> ConsumerConfig {
        self.instance_id = Some(id.into());
        self
    }

    /// The broker-side assignor this member asks for.
    ///
    /// ```
    /// use quiver_client::{Assignor, ConsumerConfig};
    /// let config = ConsumerConfig::default().group_id("billing").assignor(Assignor::Range);
    /// assert_eq!(config.assignor, Some(Assignor::Range));
    /// ```
    pub fn assignor(mut self, a: Assignor) -> ConsumerConfig {
        self.assignor = Some(a);
        self
    }

    /// See [`ConsumerConfig::commit_on_revoke`].
    ///
    /// ```
    /// use quiver_client::ConsumerConfig;
    /// let config = ConsumerConfig::default().enable_auto_commit(false).commit_on_revoke(false);
    /// assert!(!config.commit_on_revoke);
    /// ```
    pub fn commit_on_revoke(mut self, on: bool) -> ConsumerConfig {
        self.commit_on_revoke = on;
        self
    }

    /// See [`ConsumerConfig::metadata_max_age`].
    ///
    /// ```
    /// use quiver_client::ConsumerConfig;
    /// use std::time::Duration;
    /// let config = ConsumerConfig::default().metadata_max_age(Duration::from_secs(5));
    /// assert_eq!(config.metadata_max_age, Duration::from_secs(5));
    /// ```
    pub fn metadata_max_age(mut self, d: Duration) -> ConsumerConfig {
        self.metadata_max_age = d;
        self
    }
}

#[derive(Debug, Default)]
struct PartState {
    /// Next offset `poll` returns; `None` until resolved.
    position: Option<Offset>,
    /// Next offset to fetch (ahead of `position` by the buffered records).
    fetch_position: Option<Offset>,
    paused: bool,
    in_flight: bool,
    /// Records of this partition in the buffer, and their bytes.
    buffered: usize,
    buffered_bytes: usize,
    backoff_until: Option<Instant>,
    /// Why the position is unknown, when a fetch said so (for `OffsetReset::None`).
    reset_reason: Option<Error>,
    high_watermark: Option<Offset>,
}

/// The result of one partition in a fetch, decoded in the fetch task.
enum PartResult {
    Records {
        records: Vec<ConsumerRecord>,
        next: Offset,
        high_watermark: Offset,
    },
    Failed(ErrorCode, String),
    Corrupt(String),
}

struct FetchDone {
    broker: Node,
    asked: Vec<(TopicPartition, Offset)>,
    result: Result<Vec<(TopicPartition, Offset, PartResult)>>,
}

/// Reads records from assigned partitions.
///
/// Not shared between tasks (`&mut self` methods, like Kafka's consumer); move it into the task
/// that consumes. Dropping it cancels its outstanding fetches.
///
/// ```no_run
/// # async fn f() -> quiver_client::Result<()> {
/// use quiver_client::{Client, ClientConfig, Consumer, ConsumerConfig, OffsetReset, TopicPartition};
/// use std::time::Duration;
/// let client = Client::connect(ClientConfig::new("127.0.0.1:9092")).await?;
/// let mut consumer = Consumer::new(client, ConsumerConfig::default().auto_offset_reset(OffsetReset::Earliest));
/// consumer.assign(vec![TopicPartition::new("orders", 0), TopicPartition::new("orders", 1)])?;
/// loop {
///     for r in consumer.poll(Duration::from_secs(1)).await? {
///         println!("{}/{}@{} {:?} {:?}", r.topic, r.partition, r.offset, r.key_str(), r.value_str());
///     }
/// }
/// # }
/// ```
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    assignment: BTreeMap<TopicPartition, PartState>,
    buffer: VecDeque<ConsumerRecord>,
    fetches: FuturesUnordered<JoinHandle<FetchDone>>,
    brokers_in_flight: HashSet<Node>,
    topic_names: HashMap<String, Arc<str>>,
    warned_no_groups: bool,
    /// Set by `subscribe`: the group decides the assignment.
    membership: Option<Membership>,
    last_auto_commit: Instant,
    /// The commit task, started by the first commit (it needs the runtime).
    committer: std::sync::OnceLock<Committer>,
    /// Where rebalance events go, once asked for.
    events: Option<mpsc::UnboundedSender<RebalanceEvent>>,
}

impl Drop for Consumer {
    fn drop(&mut self) {
        for f in self.fetches.iter() {
            f.abort();
        }
    }
}

impl Consumer {
    pub fn new(client: Client, config: ConsumerConfig) -> Consumer {
        Consumer {
            client,
            config,
            assignment: BTreeMap::new(),
            buffer: VecDeque::new(),
            fetches: FuturesUnordered::new(),
            brokers_in_flight: HashSet::new(),
            topic_names: HashMap::new(),
            warned_no_groups: false,
            membership: None,
            last_auto_commit: Instant::now(),
            committer: std::sync::OnceLock::new(),
            events: None,
        }
    }

    /// Joins the consumer's group (`group_id`) and reads the partitions of `topics` that the
    /// group assigns to this member; the other members get the rest, and the split changes as
    /// members come and go or topics grow. Each partition starts at the group's committed
    /// offset (else `auto_offset_reset`). Calling it again changes the subscription.
    ///
    /// ```no_run
    /// # async fn f(client: quiver_client::Client) -> quiver_client::Result<()> {
    /// use quiver_client::{Consumer, ConsumerConfig};
    /// use std::time::Duration;
    /// let mut consumer = Consumer::new(client, ConsumerConfig::default().group_id("billing"));
    /// consumer.subscribe(vec!["orders".into()]).await?;
    /// loop {
    ///     for r in consumer.poll(Duration::from_secs(1)).await? {
    ///         println!("{}/{}@{}", r.topic, r.partition, r.offset);
    ///     }
    ///     consumer.commit().await?; // or rely on auto-commit
    /// }
    /// # }
    /// ```
    pub async fn subscribe(&mut self, topics: Vec<String>) -> Result<()> {
        check_topics(&topics)?;
        for t in &topics {
            self.client.topic(t).await?;
        }
        self.join(Subscription::Topics(topics)).await
    }

    /// Like [`subscribe`](Consumer::subscribe), to every topic whose whole name matches the
    /// regular expression `pattern` (`regex` crate syntax; `orders-.*` matches `orders-eu`, not
    /// `old-orders-eu`). Internal topics never match. The topics are listed again every
    /// `metadata_max_age`, so topics created (or deleted) later join (or leave) the
    /// subscription. A pattern that matches nothing yet is not an error: the consumer joins
    /// the group once a topic matches.
    ///
    /// ```no_run
    /// # async fn f(client: quiver_client::Client) -> quiver_client::Result<()> {
    /// use quiver_client::{Consumer, ConsumerConfig};
    /// use std::time::Duration;
    /// let config = ConsumerConfig::default()
    ///     .group_id("audit")
    ///     .metadata_max_age(Duration::from_secs(10));
    /// let mut consumer = Consumer::new(client, config);
    /// consumer.subscribe_pattern("orders-.*").await?;
    /// for r in consumer.poll(Duration::from_secs(1)).await? {
    ///     println!("{}/{}@{}", r.topic, r.partition, r.offset);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn subscribe_pattern(&mut self, pattern: &str) -> Result<()> {
        let re = compile_pattern(pattern)?;
        self.join(Subscription::Pattern(re)).await
    }

    async fn join(&mut self, subscription: Subscription) -> Result<()> {
        let group = self.group()?.to_string();
        if self
            .config
            .instance_id
            .as_deref()
            .is_some_and(str::is_empty)
        {
            return Err(Error::Config("instance_id must not be empty".into()));
        }
        self.client
            .require(ApiKey::ConsumerGroupHeartbeat, "joining a consumer group")
            .await?;
        match &self.membership {
            Some(m) => m.set_subscription(subscription),
            None => {
                self.apply_assignment(Vec::new());
                self.membership = Some(Membership::start(
                    self.client.clone(),
                    MemberOptions {
                        group_id: group,
                        subscription,
                        instance_id: self.config.instance_id.clone(),
                        assignor: self.config.assignor.map(|a| a.name().to_string()),
                        rebalance_timeout: self.config.rebalance_timeout,
                        retry_backoff: self.config.retry_backoff,
                        metadata_max_age: self.config.metadata_max_age,
                    },
                ));
            }
        }
        Ok(())
    }

    /// The topics this consumer is subscribed to now (for a pattern, the topics it matched
    /// when the cluster's topics were last listed); empty when not subscribed.
    ///
    /// ```no_run
    /// # async fn f(mut consumer: quiver_client::Consumer) -> quiver_client::Result<()> {
    /// consumer.subscribe_pattern("orders-.*").await?;
    /// consumer.poll(std::time::Duration::from_secs(1)).await?;
    /// println!("reading {:?}", consumer.subscription());
    /// # Ok(()) }
    /// ```
    pub fn subscription(&self) -> Vec<String> {
        self.membership
            .as_ref()
            .map(Membership::subscribed)
            .unwrap_or_default()
    }

    /// A channel of this consumer's [`RebalanceEvent`]s: partitions assigned, revoked and
    /// lost, in order. Events are sent from `poll` (and `close`), where changes are applied.
    /// Calling it again replaces the channel; events nobody receives are dropped.
    ///
    /// ```no_run
    /// # async fn f(client: quiver_client::Client) -> quiver_client::Result<()> {
    /// use quiver_client::{Consumer, ConsumerConfig, RebalanceEvent};
    /// use std::time::Duration;
    /// let mut consumer = Consumer::new(client, ConsumerConfig::default().group_id("billing"));
    /// let mut events = consumer.rebalance_events();
    /// consumer.subscribe(vec!["orders".into()]).await?;
    /// loop {
    ///     let records = consumer.poll(Duration::from_secs(1)).await?;
    ///     while let Ok(event) = events.try_recv() {
    ///         match event {
    ///             RebalanceEvent::Assigned(tps) => println!("now reading {tps:?}"),
    ///             RebalanceEvent::Revoked(tps) => println!("handed over {tps:?}"),
    ///             RebalanceEvent::Lost(tps) => println!("fenced; lost {tps:?}"),
    ///         }
    ///     }
    ///     // ... process records ...
    /// #   drop(records);
    /// }
    /// # }
    /// ```
    pub fn rebalance_events(&mut self) -> mpsc::UnboundedReceiver<RebalanceEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.events = Some(tx);
        rx
    }

    fn emit(&mut self, event: RebalanceEvent) {
        let gone = match &self.events {
            Some(tx) => tx.send(event).is_err(),
            None => false,
        };
        if gone {
            self.events = None;
        }
    }

    /// Commits (with auto-commit, or `commit_on_revoke` for a group member), leaves the group
    /// if subscribed, and stops fetching. A static member (`instance_id`) does not leave: it
    /// tells the broker it will be back, and its partitions wait for it until the session
    /// timeout.
    pub async fn close(mut self) -> Result<()> {
        let commit = self.config.group_id.is_some()
            && (self.config.enable_auto_commit
                || (self.membership.is_some() && self.config.commit_on_revoke));
        let lost = self
            .membership
            .as_ref()
            .is_some_and(|m| m.shared.state.lock().expect("not poisoned").lost);
        let committed = if commit && !lost {
            self.commit().await
        } else {
            Ok(())
        };
        if let Some(m) = self.membership.take() {
            let held = self.assignment();
            if !held.is_empty() {
                self.emit(if lost {
                    RebalanceEvent::Lost(held)
                } else {
                    RebalanceEvent::Revoked(held)
                });
            }
            m.leave(Duration::from_secs(5)).await;
        }
        committed
    }

    /// This member's id in its group, once subscribed.
    pub fn member_id(&self) -> Option<String> {
        self.membership.as_ref().map(|m| m.shared.member_id.clone())
    }

    /// Applies the group's newest assignment, if it changed: commits what is given up (with
    /// auto-commit or `commit_on_revoke`), then takes the new set and tells the heartbeat task
    /// it now owns it. After a fencing, drops every partition without committing instead.
    async fn sync_group(&mut self) -> Result<()> {
        let Some(shared) = self.membership.as_ref().map(|m| m.shared.clone()) else {
            return Ok(());
        };
        let (target, generation) = {
            let mut st = shared.state.lock().expect("not poisoned");
            if let Some(e) = st.fatal.take() {
                return Err(e);
            }
            if st.lost {
                // Fenced: these partitions may be another member's already. Positions are
                // forgotten, so partitions assigned again start from the committed offsets.
                let lost: Vec<TopicPartition> = self.assignment.keys().cloned().collect();
                self.apply_assignment(Vec::new());
                st.owned.clear();
                st.target.clear();
                st.lost = false;
                st.epoch = quiver_proto::api::group::JOIN_EPOCH;
                drop(st);
                shared.nudge.notify_one();
                tracing::info!(group = %shared.group_id, partitions = ?lost, "partitions lost; rejoining");
                if !lost.is_empty() {
                    self.emit(RebalanceEvent::Lost(lost));
                }
                return Ok(());
            }
            if st.target == st.owned {
                return Ok(());
            }
            (st.target.clone(), st.generation)
        };
        let revoked: Vec<TopicPartition> = self
            .assignment
            .keys()
            .filter(|tp| !target.contains(*tp))
            .cloned()
            .collect();
        let commit: Vec<(TopicPartition, Offset)> = revoked
            .iter()
            .filter_map(|tp| self.position(tp).map(|o| (tp.clone(), o)))
            .collect();
        if !commit.is_empty() && (self.config.enable_auto_commit || self.config.commit_on_revoke) {
            if let Err(e) = self.commit_offsets(&commit).await {
                tracing::warn!(error = %e, "committing revoked partitions failed");
            }
        }
        let added: Vec<TopicPartition> = target
            .iter()
            .filter(|tp| !self.assignment.contains_key(*tp))
            .cloned()
            .collect();
        {
            let mut st = shared.state.lock().expect("not poisoned");
            if st.lost || st.generation != generation {
                // Fenced while committing: the next turn drops everything.
                return Ok(());
            }
            self.apply_assignment(target.iter().cloned().collect());
            st.owned = target;
        }
        shared.nudge.notify_one();
        if !revoked.is_empty() {
            self.emit(RebalanceEvent::Revoked(revoked));
        }
        if !added.is_empty() {
            self.emit(RebalanceEvent::Assigned(added));
        }
        Ok(())
    }

    /// Queues a commit of every position if auto-commit is due; never waits for it.
    fn auto_commit(&mut self) {
        if self.config.group_id.is_none()
            || !self.config.enable_auto_commit
            || self.last_auto_commit.elapsed() < self.config.auto_commit_interval
        {
            return;
        }
        self.last_auto_commit = Instant::now();
        let offsets = self.positions();
        let identity = self.membership.as_ref().map(Membership::commit_identity);
        match self.committer() {
            Ok(c) => c.queue_auto(offsets, identity),
            Err(e) => tracing::warn!(error = %e, "auto-commit failed"),
        }
    }

    /// Every assigned partition's position, as offsets to commit.
    fn positions(&self) -> Vec<(TopicPartition, OffsetAndMetadata)> {
        self.assignment
            .iter()
            .filter_map(|(tp, s)| s.position.map(|o| (tp.clone(), OffsetAndMetadata::new(o))))
            .collect()
    }

    fn committer(&self) -> Result<&Committer> {
        let group = self.group()?;
        Ok(self.committer.get_or_init(|| {
            Committer::start(
                self.client.clone(),
                group.to_string(),
                self.config.retry_backoff,
            )
        }))
    }

    /// Reads exactly these partitions from now on (replacing any earlier assignment).
    /// Partitions kept from the previous assignment keep their positions; new ones start per
    /// the committed offset or `auto_offset_reset`, unless `seek` says otherwise.
    pub fn assign(&mut self, partitions: Vec<TopicPartition>) -> Result<()> {
        if self.membership.is_some() {
            return Err(Error::Config(
                "this consumer subscribed to a group, which decides its partitions; use another \
                 consumer for manually assigned partitions"
                    .into(),
            ));
        }
        self.apply_assignment(partitions);
        Ok(())
    }

    fn apply_assignment(&mut self, partitions: Vec<TopicPartition>) {
        let keep: HashSet<TopicPartition> = partitions.iter().cloned().collect();
        self.assignment.retain(|tp, _| keep.contains(tp));
        self.buffer
            .retain(|r| keep.contains(&TopicPartition::new(&*r.topic, r.partition.0)));
        for tp in partitions {
            self.topic_names
                .entry(tp.topic.clone())
                .or_insert_with(|| Arc::from(tp.topic.as_str()));
            self.assignment.entry(tp).or_default();
        }
    }

    /// Every partition of `topic`, from the cluster's metadata. Fails with
    /// `UnknownTopicOrPartition` if the topic does not exist.
    pub async fn assign_topic(&mut self, topic: &str) -> Result<Vec<TopicPartition>> {
        let t = self.client.topic(topic).await?;
        let tps: Vec<TopicPartition> = t
            .partitions
            .iter()
            .map(|p| TopicPartition::new(topic, p.partition.0))
            .collect();
        let mut all: Vec<TopicPartition> = self.assignment.keys().cloned().collect();
        all.extend(tps.iter().cloned());
        self.assign(all)?;
        Ok(tps)
    }

    /// The assigned partitions.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.assignment.keys().cloned().collect()
    }

    fn state(&mut self, tp: &TopicPartition) -> Result<&mut PartState> {
        self.assignment
            .get_mut(tp)
            .ok_or_else(|| Error::Config(format!("{tp} is not assigned to this consumer")))
    }

    fn drop_buffered(&mut self, tp: &TopicPartition) {
        self.buffer
            .retain(|r| !(r.partition == tp.partition && *r.topic == *tp.topic));
        if let Some(st) = self.assignment.get_mut(tp) {
            st.buffered = 0;
            st.buffered_bytes = 0;
        }
    }

    /// The next `poll` returns records of `tp` from `offset` on.
    pub fn seek(&mut self, tp: &TopicPartition, offset: Offset) -> Result<()> {
        self.state(tp)?;
        self.drop_buffered(tp);
        let st = self.state(tp)?;
        st.position = Some(offset);
        st.fetch_position = Some(offset);
        st.reset_reason = None;
        st.backoff_until = None;
        Ok(())
    }

    /// Seeks to the oldest retained record of each partition.
    pub async fn seek_to_beginning(&mut self, tps: &[TopicPartition]) -> Result<()> {
        self.seek_to_spec(tps, |_| OffsetSpec::Earliest).await
    }

    /// Seeks past the newest record of each partition (only records written from now on).
    pub async fn seek_to_end(&mut self, tps: &[TopicPartition]) -> Result<()> {
        self.seek_to_spec(tps, |_| OffsetSpec::Latest).await
    }

    /// Seeks each partition to its first record with a timestamp at or after `timestamp`; to
    /// the end of the partition when there is none.
    pub async fn seek_to_timestamp(
        &mut self,
        tps: &[TopicPartition],
        timestamp: TimestampMs,
    ) -> Result<()> {
        self.seek_to_spec(tps, |_| OffsetSpec::Timestamp(timestamp))
            .await
    }

    async fn seek_to_spec(
        &mut self,
        tps: &[TopicPartition],
        spec: impl Fn(&TopicPartition) -> OffsetSpec,
    ) -> Result<()> {
        for tp in tps {
            self.state(tp)?;
        }
        let asked: Vec<(TopicPartition, OffsetSpec)> =
            tps.iter().map(|tp| (tp.clone(), spec(tp))).collect();
        let found = list_offsets(&self.client, &asked).await?;
        for (tp, offset) in found {
            self.seek(&tp, offset)?;
        }
        Ok(())
    }

    /// For each partition, the first offset whose record timestamp is at or after
    /// `timestamp`, or `None` when no record is that recent.
    pub async fn offsets_for_time(
        &self,
        tps: &[TopicPartition],
        timestamp: TimestampMs,
    ) -> Result<Vec<(TopicPartition, Option<Offset>)>> {
        let asked: Vec<(TopicPartition, OffsetSpec)> = tps
            .iter()
            .map(|tp| (tp.clone(), OffsetSpec::Timestamp(timestamp)))
            .collect();
        list_offsets_raw(&self.client, &asked).await
    }

    /// The offset of the next record `poll` will return for `tp`; `None` until known.
    pub fn position(&self, tp: &TopicPartition) -> Option<Offset> {
        self.assignment.get(tp).and_then(|s| s.position)
    }

    /// The partition's high watermark as of the last fetch (records below it are readable).
    pub fn high_watermark(&self, tp: &TopicPartition) -> Option<Offset> {
        self.assignment.get(tp).and_then(|s| s.high_watermark)
    }

    /// Stops returning and fetching records of these partitions until `resume`. Positions stay;
    /// records already buffered are fetched again after `resume`.
    pub fn pause(&mut self, tps: &[TopicPartition]) -> Result<()> {
        for tp in tps {
            self.state(tp)?;
            self.drop_buffered(tp);
            let st = self.state(tp)?;
            st.paused = true;
            st.fetch_position = st.position;
        }
        Ok(())
    }

    pub fn resume(&mut self, tps: &[TopicPartition]) -> Result<()> {
        for tp in tps {
            self.state(tp)?.paused = false;
        }
        Ok(())
    }

    /// The paused partitions.
    pub fn paused(&self) -> Vec<TopicPartition> {
        self.assignment
            .iter()
            .filter(|(_, s)| s.paused)
            .map(|(tp, _)| tp.clone())
            .collect()
    }

    /// Returns buffered records, or waits up to `timeout` for a fetch to bring some. An empty
    /// vector means nothing arrived in time. Transient errors (lost leaders, lost connections)
    /// are retried inside; errors the application must see (an unknown topic, an offset out of
    /// range with `OffsetReset::None`, a corrupt batch) are returned.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.sync_group().await?;
            self.auto_commit();
            // A group member looks at its assignment at least this often while it waits.
            let wait_until = if self.membership.is_some() {
                deadline.min(tokio::time::Instant::now() + Duration::from_millis(100))
            } else {
                deadline
            };
            self.resolve_positions().await?;
            self.start_fetches().await?;
            if !self.buffer.is_empty() {
                let out = self.drain();
                // Refill partitions whose buffered records were all handed out.
                self.start_fetches().await?;
                return Ok(out);
            }
            if self.fetches.is_empty() {
                let wake = self
                    .assignment
                    .values()
                    .filter_map(|s| s.backoff_until)
                    .min()
                    .map(tokio::time::Instant::from_std)
                    .unwrap_or(wait_until)
                    .min(wait_until);
                tokio::time::sleep_until(wake).await;
                if tokio::time::Instant::now() >= deadline {
                    return Ok(Vec::new());
                }
                continue;
            }
            match tokio::time::timeout_at(wait_until, self.fetches.next()).await {
                Err(_) if tokio::time::Instant::now() >= deadline => return Ok(Vec::new()),
                Err(_) => {}
                Ok(None) => {}
                Ok(Some(Err(join))) => {
                    return Err(Error::Protocol(format!("fetch task failed: {join}")))
                }
                Ok(Some(Ok(done))) => self.apply(done)?,
            }
        }
    }

    fn drain(&mut self) -> Vec<ConsumerRecord> {
        let n = self.buffer.len().min(self.config.max_poll_records);
        let out: Vec<ConsumerRecord> = self.buffer.drain(..n).collect();
        // Per partition: records handed out, their bytes, the last offset.
        let mut handed: Vec<(&ConsumerRecord, usize, usize, Offset)> = Vec::new();
        for r in &out {
            let bytes = record_bytes(r);
            match handed
                .iter_mut()
                .find(|(h, ..)| h.partition == r.partition && h.topic == r.topic)
            {
                Some(h) => {
                    h.1 += 1;
                    h.2 += bytes;
                    h.3 = r.offset;
                }
                None => handed.push((r, 1, bytes, r.offset)),
            }
        }
        for (r, count, bytes, last) in handed {
            let tp = TopicPartition::new(&*r.topic, r.partition.0);
            if let Some(st) = self.assignment.get_mut(&tp) {
                st.position = Some(last.plus(1));
                st.buffered = st.buffered.saturating_sub(count);
                st.buffered_bytes = st.buffered_bytes.saturating_sub(bytes);
                if st.buffered == 0 {
                    // Skipped offsets (control batches) after the last record count as read.
                    st.position = st.fetch_position;
                }
            }
        }
        out
    }

    /// Gives partitions without a position one: the committed offset, else the reset policy.
    async fn resolve_positions(&mut self) -> Result<()> {
        let missing: Vec<TopicPartition> = self
            .assignment
            .iter()
            .filter(|(_, s)| s.position.is_none() && !s.paused)
            .map(|(tp, _)| tp.clone())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let mut unresolved = missing.clone();
        if self.config.group_id.is_some() {
            match self.committed(&missing).await {
                Ok(committed) => {
                    for (tp, offset) in committed {
                        if let Some(o) = offset {
                            self.seek(&tp, o)?;
                            unresolved.retain(|t| *t != tp);
                        }
                    }
                }
                Err(Error::Unsupported { .. }) => {
                    if !self.warned_no_groups {
                        tracing::warn!(
                            "the broker does not serve committed offsets (OffsetFetch); \
                             starting per auto_offset_reset"
                        );
                        self.warned_no_groups = true;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        if unresolved.is_empty() {
            return Ok(());
        }
        let spec = match self.config.auto_offset_reset {
            OffsetReset::Earliest => OffsetSpec::Earliest,
            OffsetReset::Latest => OffsetSpec::Latest,
            OffsetReset::None => {
                let tp = &unresolved[0];
                let reason = self
                    .assignment
                    .get_mut(tp)
                    .and_then(|s| s.reset_reason.take());
                return Err(reason.unwrap_or_else(|| {
                    Error::Config(format!(
                        "{tp} has no committed offset and auto_offset_reset is none: seek first"
                    ))
                }));
            }
        };
        let asked: Vec<(TopicPartition, OffsetSpec)> =
            unresolved.into_iter().map(|tp| (tp, spec)).collect();
        for (tp, offset) in list_offsets(&self.client, &asked).await? {
            self.seek(&tp, offset)?;
        }
        Ok(())
    }

    /// Sends one fetch per broker shard for the partitions that need records and have none
    /// pending.
    async fn start_fetches(&mut self) -> Result<()> {
        let now = Instant::now();
        // A partition is fetched again while fewer than one fetch's worth of its records wait
        // in the buffer: the next records are on their way while the application works, and
        // the buffer holds at most about two fetches per partition.
        let refill_below = self.config.max_partition_fetch_bytes as usize;
        let eligible: Vec<(TopicPartition, Offset)> = self
            .assignment
            .iter()
            .filter(|(_, s)| {
                !s.paused
                    && !s.in_flight
                    && s.buffered_bytes < refill_below
                    && s.backoff_until.is_none_or(|t| t <= now)
            })
            .filter_map(|(tp, s)| s.fetch_position.map(|o| (tp.clone(), o)))
            .collect();
        if eligible.is_empty() {
            return Ok(());
        }
        let mut by_broker: BTreeMap<Node, Vec<(TopicPartition, Offset)>> = BTreeMap::new();
        for (tp, offset) in eligible {
            match self.leader_of(&tp).await {
                Ok(Some(b)) => {
                    if !self.brokers_in_flight.contains(&b) {
                        by_broker.entry(b).or_default().push((tp, offset));
                    }
                }
                Ok(None) => self.back_off(&tp, now),
                Err(e) => return Err(e),
            }
        }
        for (broker, asked) in by_broker {
            for (tp, _) in &asked {
                if let Some(st) = self.assignment.get_mut(tp) {
                    st.in_flight = true;
                    st.backoff_until = None;
                }
            }
            self.brokers_in_flight.insert(broker);
            let names: Vec<Arc<str>> = asked
                .iter()
                .map(|(tp, _)| {
                    self.topic_names
                        .entry(tp.topic.clone())
                        .or_insert_with(|| Arc::from(tp.topic.as_str()))
                        .clone()
                })
                .collect();
            let client = self.client.clone();
            let config = self.config.clone();
            self.fetches.push(tokio::spawn(fetch_task(
                client, config, broker, asked, names,
            )));
        }
        Ok(())
    }

    fn back_off(&mut self, tp: &TopicPartition, now: Instant) {
        if let Some(st) = self.assignment.get_mut(tp) {
            st.backoff_until = Some(now + self.config.retry_backoff);
        }
    }

    /// The leader (and its shard) from cached metadata; `Ok(None)` (after starting a refresh)
    /// when there is none now; an error if the topic or partition does not exist.
    async fn leader_of(&self, tp: &TopicPartition) -> Result<Option<Node>> {
        let cluster = self.client.cluster();
        if let Some(t) = cluster.topics.get(&tp.topic) {
            if let Some(p) = t.partitions.get(tp.partition.0 as usize) {
                return Ok(p.leader_node());
            }
        }
        let t = self.client.topic(&tp.topic).await?;
        match t.partitions.get(tp.partition.0 as usize) {
            Some(p) => Ok(p.leader_node()),
            None => {
                // Perhaps partitions were added since the cache was filled.
                let view = self
                    .client
                    .refresh_metadata(Some(vec![tp.topic.clone()]))
                    .await?;
                let t = view.topics.get(&tp.topic);
                match t.and_then(|t| t.partitions.get(tp.partition.0 as usize)) {
                    Some(p) => Ok(p.leader_node()),
                    None => Err(Error::broker(
                        ErrorCode::UnknownTopicOrPartition,
                        Some(format!("partition {tp} does not exist")),
                    )),
                }
            }
        }
    }

    fn apply(&mut self, done: FetchDone) -> Result<()> {
        self.brokers_in_flight.remove(&done.broker);
        for (tp, _) in &done.asked {
            if let Some(st) = self.assignment.get_mut(tp) {
                st.in_flight = false;
            }
        }
        let now = Instant::now();
        let parts = match done.result {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(broker = %done.broker, error = %e, "fetch failed; retrying");
                for (tp, _) in &done.asked {
                    self.back_off(tp, now);
                }
                self.refresh_metadata_in_background();
                return Ok(());
            }
        };
        let mut refresh = false;
        for (tp, asked_offset, result) in parts {
            let Some(st) = self.assignment.get_mut(&tp) else {
                continue; // unassigned meanwhile
            };
            if st.paused || st.fetch_position != Some(asked_offset) {
                continue; // paused or sought meanwhile: this answer is stale
            }
            match result {
                PartResult::Records {
                    records,
                    next,
                    high_watermark,
                } => {
                    st.high_watermark = Some(high_watermark);
                    st.fetch_position = Some(next);
                    st.buffered += records.len();
                    st.buffered_bytes += records.iter().map(record_bytes).sum::<usize>();
                    if st.buffered == 0 {
                        st.position = Some(next);
                    }
                    self.buffer.extend(records);
                }
                PartResult::Failed(code, message) => match code {
                    ErrorCode::OffsetOutOfRange => {
                        let e = Error::broker(code, Some(message));
                        tracing::debug!(%tp, error = %e, "fetch position out of range; resetting");
                        st.position = None;
                        st.fetch_position = None;
                        st.reset_reason = Some(e);
                    }
                    c if c.is_retriable() => {
                        refresh = true;
                        st.backoff_until = Some(now + self.config.retry_backoff);
                    }
                    c => return Err(Error::broker(c, Some(message))),
                },
                PartResult::Corrupt(message) => {
                    return Err(Error::Record(format!(
                        "{tp} at offset {}: {message}",
                        asked_offset
                    )))
                }
            }
        }
        if refresh {
            self.refresh_metadata_in_background();
        }
        Ok(())
    }

    fn refresh_metadata_in_background(&self) {
        let client = self.client.clone();
        let topics: Vec<String> = self.topic_names.keys().cloned().collect();
        tokio::spawn(async move {
            let _ = client.refresh_metadata(Some(topics)).await;
        });
    }

    /// Commits the current position of every assigned partition for the consumer's group,
    /// and waits for the broker's answer (after any commit queued before it).
    ///
    /// Needs `group_id`. A subscribed member commits as itself: a member that was fenced (its
    /// session expired, or it was replaced) is refused with `UnknownMemberId`, one whose epoch
    /// is out of date with `StaleMemberEpoch` ([`Error::code`] tells which). A consumer with
    /// assigned partitions commits from outside the group, which the broker accepts while
    /// the group has no members. Errors that may pass (no coordinator yet, a lost
    /// connection) are retried for up to 30 s. Against a broker without consumer groups this
    /// fails with [`Error::Unsupported`].
    ///
    /// ```no_run
    /// # async fn f(mut consumer: quiver_client::Consumer) -> quiver_client::Result<()> {
    /// use quiver_client::ErrorCode;
    /// use std::time::Duration;
    /// let records = consumer.poll(Duration::from_secs(1)).await?;
    /// // ... process the records ...
    /// match consumer.commit().await {
    ///     Ok(()) => {}
    ///     Err(e) if e.code() == Some(ErrorCode::UnknownMemberId) => {
    ///         // This member was fenced; its partitions went to others, which will read
    ///         // these records again. The next poll rejoins the group.
    ///     }
    ///     Err(e) => return Err(e),
    /// }
    /// # drop(records); Ok(()) }
    /// ```
    pub async fn commit(&mut self) -> Result<()> {
        let offsets = self.positions();
        self.queue_commit(offsets)?.await
    }

    /// Queues a commit of every assigned partition's current position and returns at once:
    /// `poll` goes on while the commit is sent. Commits are sent one at a time in the order
    /// they were made, so a later commit never lands before an earlier one, and `commit`
    /// waits for those queued before it. Await the handle for the outcome, or drop it (a
    /// failure is then logged).
    ///
    /// ```no_run
    /// # async fn f(mut consumer: quiver_client::Consumer) -> quiver_client::Result<()> {
    /// use std::time::Duration;
    /// let mut pending = Vec::new();
    /// for _ in 0..10 {
    ///     let records = consumer.poll(Duration::from_secs(1)).await?;
    ///     // ... process the records ...
    /// #   drop(records);
    ///     pending.push(consumer.commit_async());
    /// }
    /// for p in pending {
    ///     if let Err(e) = p.await {
    ///         eprintln!("a commit failed: {e}");
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn commit_async(&self) -> CommitHandle {
        let offsets = self.positions();
        self.queue_or_fail(offsets)
    }

    /// Commits these offsets (each the next record to read) for the consumer's group, and
    /// waits for the answer.
    ///
    /// ```no_run
    /// # async fn f(consumer: quiver_client::Consumer) -> quiver_client::Result<()> {
    /// use quiver_client::{Offset, TopicPartition};
    /// // Records up to offset 41 of orders/0 are processed: resume at 42.
    /// consumer.commit_offsets(&[(TopicPartition::new("orders", 0), Offset(42))]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn commit_offsets(&self, offsets: &[(TopicPartition, Offset)]) -> Result<()> {
        let offsets = offsets
            .iter()
            .map(|(tp, o)| (tp.clone(), OffsetAndMetadata::new(*o)))
            .collect();
        self.queue_commit(offsets)?.await
    }

    /// Queues a commit of these offsets, with an optional metadata string each (stored with
    /// the offset and returned by `Admin::list_group_offsets`), and returns at once.
    ///
    /// ```no_run
    /// # async fn f(consumer: quiver_client::Consumer) -> quiver_client::Result<()> {
    /// use quiver_client::{Offset, OffsetAndMetadata, TopicPartition};
    /// let tp = TopicPartition::new("orders", 0);
    /// let handle = consumer.commit_offsets_async(vec![
    ///     (tp, OffsetAndMetadata::new(Offset(42)).metadata("invoice run 2024-05-01")),
    /// ]);
    /// handle.await?;
    /// # Ok(()) }
    /// ```
    pub fn commit_offsets_async(
        &self,
        offsets: Vec<(TopicPartition, OffsetAndMetadata)>,
    ) -> CommitHandle {
        self.queue_or_fail(offsets)
    }

    fn queue_commit(
        &self,
        offsets: Vec<(TopicPartition, OffsetAndMetadata)>,
    ) -> Result<CommitHandle> {
        let committer = self.committer()?;
        let identity = self.membership.as_ref().map(Membership::commit_identity);
        Ok(committer.queue(offsets, identity))
    }

    /// Like `queue_commit`, with a configuration error delivered through the handle.
    fn queue_or_fail(&self, offsets: Vec<(TopicPartition, OffsetAndMetadata)>) -> CommitHandle {
        match self.queue_commit(offsets) {
            Ok(h) => h,
            Err(e) => CommitHandle::failed(e),
        }
    }

    /// The group's committed offsets for these partitions (`None`: nothing committed).
    pub async fn committed(
        &self,
        tps: &[TopicPartition],
    ) -> Result<Vec<(TopicPartition, Option<Offset>)>> {
        let group = self.group()?;
        self.client
            .require(ApiKey::OffsetFetch, "reading committed offsets")
            .await?;
        let coordinator = self.coordinator(group).await?;
        let mut topics: Vec<TopicPartitions> = Vec::new();
        for tp in tps {
            match topics.iter_mut().find(|t| t.topic == tp.topic) {
                Some(t) => t.partitions.push(tp.partition),
                None => topics.push(TopicPartitions {
                    topic: tp.topic.clone(),
                    partitions: vec![tp.partition],
                }),
            }
        }
        let req = OffsetFetchRequest {
            group_id: group.to_string(),
            member_id: None,
            member_epoch: NO_GENERATION,
            topics: Some(topics),
            require_stable: false,
        };
        let (resp, _) = self
            .client
            .call_broker(coordinator, &req, Vec::new())
            .await?;
        if resp.error_code != ErrorCode::None {
            return Err(Error::broker(resp.error_code, None));
        }
        let mut out = Vec::new();
        for t in resp.topics {
            for p in t.partitions {
                if p.error_code != ErrorCode::None {
                    return Err(Error::broker(p.error_code, p.metadata.clone()));
                }
                out.push((
                    TopicPartition::new(&t.name, p.partition.0),
                    p.committed_offset,
                ));
            }
        }
        Ok(out)
    }

    fn group(&self) -> Result<&str> {
        self.config.group_id.as_deref().ok_or_else(|| {
            Error::Config(
                "committed offsets belong to a group: set ConsumerConfig::group_id".into(),
            )
        })
    }

    async fn coordinator(&self, group: &str) -> Result<BrokerId> {
        find_coordinator(&self.client, group).await
    }

    /// The client this consumer uses.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// Bytes a buffered record holds, for the buffer's bound.
fn record_bytes(r: &ConsumerRecord) -> usize {
    r.key.as_ref().map_or(0, Bytes::len)
        + r.value.as_ref().map_or(0, Bytes::len)
        + r.headers
            .iter()
            .map(|h| h.key.len() + h.value.len())
            .sum::<usize>()
}

async fn fetch_task(
    client: Client,
    config: ConsumerConfig,
    broker: Node,
    asked: Vec<(TopicPartition, Offset)>,
    names: Vec<Arc<str>>,
) -> FetchDone {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for (tp, offset) in &asked {
        let part = FetchPartition {
            partition: tp.partition,
            fetch_offset: *offset,
            partition_max_bytes: config.max_partition_fetch_bytes,
            current_leader_epoch: None,
        };
        match topics.iter_mut().find(|t| t.name == tp.topic) {
            Some(t) => t.partitions.push(part),
            None => topics.push(FetchTopic {
                name: tp.topic.clone(),
                partitions: vec![part],
            }),
        }
    }
    let req = FetchRequest {
        max_wait_ms: config.fetch_max_wait.as_millis().min(u128::from(u32::MAX)) as u32,
        min_bytes: config.fetch_min_bytes,
        max_bytes: config.fetch_max_bytes,
        isolation_level: IsolationLevel::ReadUncommitted,
        topics,
        rack_id: None,
    };
    let result = client
        .call_broker::<FetchRequest>(broker, &req, Vec::new())
        .await
        .and_then(|(resp, payload)| decode_fetch(&resp, &payload, &asked, &names));
    FetchDone {
        broker,
        asked,
        result,
    }
}

fn decode_fetch(
    resp: &FetchResponse,
    payload: &Bytes,
    asked: &[(TopicPartition, Offset)],
    names: &[Arc<str>],
) -> Result<Vec<(TopicPartition, Offset, PartResult)>> {
    if resp.error_code != ErrorCode::None {
        return Err(Error::broker(resp.error_code, None));
    }
    let mut out = Vec::with_capacity(asked.len());
    for ((tp, offset), name) in asked.iter().zip(names) {
        let p = resp
            .topics
            .iter()
            .filter(|t| t.name == tp.topic)
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.partition == tp.partition);
        let Some(p) = p else {
            continue; // not answered: fetched again next time
        };
        let result = if p.error_code != ErrorCode::None {
            let message = match p.error_code {
                ErrorCode::OffsetOutOfRange => format!(
                    "offset {offset} of {tp} is outside the retained range [{}, {}]",
                    p.log_start_offset, p.high_watermark
                ),
                c => format!("{tp}: {}", c.description()),
            };
            PartResult::Failed(p.error_code, message)
        } else {
            match p.records.slice(payload) {
                Err(e) => PartResult::Corrupt(format!("records reference: {e}")),
                Ok(bytes) => match decode_records(name, tp.partition, *offset, &bytes) {
                    Ok((records, next)) => PartResult::Records {
                        records,
                        next,
                        high_watermark: p.high_watermark,
                    },
                    Err(e) => PartResult::Corrupt(e),
                },
            }
        };
        out.push((tp.clone(), *offset, result));
    }
    Ok(out)
}

/// Decodes fetched batches into records at or after `from`; returns them and the offset to
/// fetch next. A fetch may start with a batch that begins before `from` (records below it are
/// skipped) and may end with a partial batch (ignored; fetched whole next time).
pub(crate) fn decode_records(
    topic: &Arc<str>,
    partition: PartitionId,
    from: Offset,
    bytes: &Bytes,
) -> std::result::Result<(Vec<ConsumerRecord>, Offset), String> {
    let mut records = Vec::new();
    let mut next = from;
    for batch in BatchIter::new(bytes) {
        let batch = match batch {
            Ok(b) => b,
            Err(BatchError::Truncated { .. }) => break,
            Err(e) => return Err(format!("batch framing: {e}")),
        };
        let view =
            BatchView::new(batch, BatchLimits::default()).map_err(|e| format!("batch: {e}"))?;
        if view.last_offset() < from {
            continue;
        }
        next = next.max(view.last_offset().plus(1));
        if view.info().control {
            continue;
        }
        let copy = view.info().compression != Compression::None;
        let timestamp_type = view.info().timestamp_type;
        let take = |s: &[u8]| {
            if copy {
                Bytes::copy_from_slice(s)
            } else {
                bytes.slice_ref(s)
            }
        };
        let decoded = view.records().map_err(|e| format!("records: {e}"))?;
        for r in decoded.iter() {
            let r = r.map_err(|e| format!("record: {e}"))?;
            if r.offset < from {
                continue;
            }
            let mut headers = Vec::with_capacity(r.header_count() as usize);
            for h in r.headers() {
                let (k, v) = h.map_err(|e| format!("header: {e}"))?;
                headers.push(Header {
                    key: k.to_string(),
                    value: take(v),
                });
            }
            records.push(ConsumerRecord {
                topic: topic.clone(),
                partition,
                offset: r.offset,
                timestamp: r.timestamp,
                timestamp_type,
                key: r.key.map(take),
                value: r.value.map(take),
                headers,
            });
        }
    }
    Ok((records, next))
}

/// ListOffsets for each (partition, spec), grouped by leader; `None` where no offset matches.
pub(crate) async fn list_offsets_raw(
    client: &Client,
    asked: &[(TopicPartition, OffsetSpec)],
) -> Result<Vec<(TopicPartition, Option<Offset>)>> {
    let mut by_broker: BTreeMap<BrokerId, Vec<&(TopicPartition, OffsetSpec)>> = BTreeMap::new();
    for a in asked {
        let leader = client.leader(&a.0.topic, a.0.partition).await?;
        by_broker.entry(leader).or_default().push(a);
    }
    let mut out = Vec::with_capacity(asked.len());
    for (broker, items) in by_broker {
        let mut topics: Vec<ListOffsetsTopic> = Vec::new();
        for (tp, spec) in &items {
            let part = ListOffsetsPartition {
                partition: tp.partition,
                current_leader_epoch: None,
                timestamp: *spec,
            };
            match topics.iter_mut().find(|t| t.name == tp.topic) {
                Some(t) => t.partitions.push(part),
                None => topics.push(ListOffsetsTopic {
                    name: tp.topic.clone(),
                    partitions: vec![part],
                }),
            }
        }
        let req = ListOffsetsRequest {
            isolation_level: IsolationLevel::ReadUncommitted,
            topics,
        };
        let (resp, _) = client.call_broker(broker, &req, Vec::new()).await?;
        for (tp, _) in items {
            let p = resp
                .topics
                .iter()
                .filter(|t| t.name == tp.topic)
                .flat_map(|t| t.partitions.iter())
                .find(|p| p.partition == tp.partition)
                .ok_or_else(|| Error::Protocol(format!("no ListOffsets answer for {tp}")))?;
            if p.error_code != ErrorCode::None {
                return Err(Error::broker(
                    p.error_code,
                    Some(format!(
                        "listing offsets of {tp}: {}",
                        p.error_code.description()
                    )),
                ));
            }
            out.push((tp.clone(), p.offset));
        }
    }
    Ok(out)
}

/// Like [`list_offsets_raw`], with "no record that recent" resolved to the partition's end.
pub(crate) async fn list_offsets(
    client: &Client,
    asked: &[(TopicPartition, OffsetSpec)],
) -> Result<Vec<(TopicPartition, Offset)>> {
    let found = list_offsets_raw(client, asked).await?;
    let missing: Vec<(TopicPartition, OffsetSpec)> = found
        .iter()
        .filter(|(_, o)| o.is_none())
        .map(|(tp, _)| (tp.clone(), OffsetSpec::Latest))
        .collect();
    let ends: HashMap<TopicPartition, Option<Offset>> = if missing.is_empty() {
        HashMap::new()
    } else {
        list_offsets_raw(client, &missing)
            .await?
            .into_iter()
            .collect()
    };
    found
        .into_iter()
        .map(|(tp, o)| {
            let o = o
                .or_else(|| ends.get(&tp).copied().flatten())
                .ok_or_else(|| {
                    Error::Protocol(format!("the broker gave no end offset for {tp}"))
                })?;
            Ok((tp, o))
        })
        .collect()
}

/// Applications move a consumer into a spawned task and await its calls there: the consumer
/// and the futures of its calls must be `Send` (no `std::sync` guard held across an await).
/// Checked when this compiles.
#[allow(dead_code)]
fn consumer_calls_are_send(c: &mut Consumer) {
    fn send<T: Send>(_: &T) {}
    send(c);
    send(&c.poll(Duration::ZERO));
    send(&c.commit());
    send(&c.commit_async());
    send(&c.subscribe(Vec::new()));
    send(&c.subscribe_pattern(""));
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_proto::batch::BatchBuilder;

    fn batch(base: u64, n: u32, compression: Compression) -> Bytes {
        let mut b = BatchBuilder::new(compression);
        for i in 0..n {
            b.append(
                TimestampMs(1000 + i64::from(i)),
                Some(format!("k{i}").as_bytes()),
                Some(&[0xff, 0x00, i as u8]),
                &[("h", &[0x80])],
            )
            .unwrap();
        }
        let mut bytes = b.finish().unwrap().to_vec();
        quiver_proto::batch::set_base_offset(&mut bytes, Offset(base)).unwrap();
        Bytes::from(bytes)
    }

    #[test]
    fn decode_skips_records_below_the_fetch_offset_and_a_trailing_partial_batch() {
        let topic: Arc<str> = Arc::from("t");
        for compression in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let mut all = Vec::new();
            all.extend_from_slice(&batch(10, 5, compression));
            all.extend_from_slice(&batch(15, 3, compression));
            let partial = batch(18, 2, compression);
            all.extend_from_slice(&partial[..partial.len() - 3]);
            let bytes = Bytes::from(all);
            let (records, next) =
                decode_records(&topic, PartitionId(0), Offset(12), &bytes).unwrap();
            let offsets: Vec<u64> = records.iter().map(|r| r.offset.0).collect();
            assert_eq!(offsets, vec![12, 13, 14, 15, 16, 17], "{compression:?}");
            assert_eq!(next, Offset(18));
            assert_eq!(records[0].key.as_deref(), Some(&b"k2"[..]));
            assert_eq!(records[0].value.as_deref(), Some(&[0xff, 0x00, 2][..]));
            assert_eq!(records[0].headers[0].value.as_ref(), &[0x80]);
            assert_eq!(records[0].timestamp, TimestampMs(1002));
        }
    }

    #[test]
    fn decode_refuses_a_corrupt_batch() {
        let topic: Arc<str> = Arc::from("t");
        let mut b = batch(0, 2, Compression::None).to_vec();
        let last = b.len() - 1;
        b[last] ^= 0x55;
        let err = decode_records(&topic, PartitionId(0), Offset(0), &Bytes::from(b)).unwrap_err();
        assert!(err.contains("CRC"), "{err}");
    }
}
