//! Consumer settings and the public enums: [`OffsetReset`], [`Assignor`],
//! [`RebalanceEvent`], [`ConsumerConfig`].

use std::time::Duration;

#[cfg(doc)]
use super::Consumer;
use crate::record::TopicPartition;

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
    /// Where a partition without a committed offset (or outside the retained log) starts
    /// (`auto.offset.reset`; default latest).
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
    /// How often auto-commit commits (`auto.commit.interval.ms`).
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
    /// Sets [`group_id`](ConsumerConfig::group_id): the group whose offsets this consumer uses
    /// (needed for `subscribe` and commits).
    pub fn group_id(mut self, g: impl Into<String>) -> ConsumerConfig {
        self.group_id = Some(g.into());
        self
    }
    /// Sets [`auto_offset_reset`](ConsumerConfig::auto_offset_reset): where a partition without
    /// a committed offset starts.
    pub fn auto_offset_reset(mut self, r: OffsetReset) -> ConsumerConfig {
        self.auto_offset_reset = r;
        self
    }
    /// Sets [`fetch_max_wait`](ConsumerConfig::fetch_max_wait).
    pub fn fetch_max_wait(mut self, d: Duration) -> ConsumerConfig {
        self.fetch_max_wait = d;
        self
    }
    /// Sets [`fetch_min_bytes`](ConsumerConfig::fetch_min_bytes).
    pub fn fetch_min_bytes(mut self, n: u32) -> ConsumerConfig {
        self.fetch_min_bytes = n;
        self
    }
    /// Sets [`fetch_max_bytes`](ConsumerConfig::fetch_max_bytes).
    pub fn fetch_max_bytes(mut self, n: u32) -> ConsumerConfig {
        self.fetch_max_bytes = n;
        self
    }
    /// Sets [`max_partition_fetch_bytes`](ConsumerConfig::max_partition_fetch_bytes).
    pub fn max_partition_fetch_bytes(mut self, n: u32) -> ConsumerConfig {
        self.max_partition_fetch_bytes = n;
        self
    }
    /// Sets [`max_poll_records`](ConsumerConfig::max_poll_records) (at least 1).
    pub fn max_poll_records(mut self, n: usize) -> ConsumerConfig {
        self.max_poll_records = n.max(1);
        self
    }
    /// Sets [`retry_backoff`](ConsumerConfig::retry_backoff).
    pub fn retry_backoff(mut self, d: Duration) -> ConsumerConfig {
        self.retry_backoff = d;
        self
    }
    /// Sets [`enable_auto_commit`](ConsumerConfig::enable_auto_commit).
    pub fn enable_auto_commit(mut self, on: bool) -> ConsumerConfig {
        self.enable_auto_commit = on;
        self
    }
    /// Sets [`auto_commit_interval`](ConsumerConfig::auto_commit_interval).
    pub fn auto_commit_interval(mut self, d: Duration) -> ConsumerConfig {
        self.auto_commit_interval = d;
        self
    }
    /// Sets [`rebalance_timeout`](ConsumerConfig::rebalance_timeout).
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
