//! Metrics in Prometheus text format, and the tiny HTTP endpoint that serves them.
//!
//! Counters and histograms are plain atomics updated with `Relaxed` ordering from any shard:
//! no lock and no allocation on the request path. Per-partition figures (log size, offsets) are
//! published by each shard's housekeeping tick into a map behind a mutex that only the tick and
//! the scraper touch, never a request.
//!
//! The endpoint runs on its own small OS thread with blocking std I/O, not on a shard: a
//! scrape must not take time from a core that owns partitions, and its load is negligible.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Upper bounds of the latency histogram buckets, in microseconds (Prometheus renders seconds).
const LATENCY_BUCKETS_US: [u64; 17] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// API slots counted by number; API keys are small dense integers.
pub const API_SLOTS: usize = 64;

/// A latency histogram with fixed buckets (Prometheus' cumulative form is computed at scrape).
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn record(&self, elapsed: Duration) {
        let us = elapsed.as_micros().min(u64::MAX as u128) as u64;
        let i = LATENCY_BUCKETS_US.partition_point(|&b| b < us);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BUCKETS_US.iter().enumerate() {
            cumulative += self.buckets[i].load(Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{}\"}} {cumulative}",
                *bound as f64 / 1e6
            );
        }
        cumulative += self.buckets[LATENCY_BUCKETS_US.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_us.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {}", self.count.load(Relaxed));
    }
}

/// What a shard reports about one partition it owns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionStats {
    pub log_start_offset: u64,
    pub log_end_offset: u64,
    pub size_bytes: u64,
    pub segments: u64,
    /// Damaged ranges found in the log (unreadable offsets with intact data after them).
    pub corrupt_ranges: u64,
    /// What consumers may read up to.
    pub high_watermark: u64,
    /// In a cluster: whether this broker leads the partition, its replicas and ISR sizes.
    pub leader: bool,
    pub replicas: u64,
    pub isr: u64,
    /// On the leader: each follower's progress.
    pub followers: Vec<FollowerStats>,
}

/// One follower of a partition, as its leader sees it (for /metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FollowerStats {
    pub id: u32,
    /// Its durable end: the offset of its last fetch.
    pub fetch_offset: u64,
    /// Records behind the leader's end.
    pub lag_records: u64,
    /// About how many bytes behind (`PartitionLog::bytes_after`).
    pub lag_bytes: u64,
    /// Since it was last caught up.
    pub lag_ms: u64,
    /// Since its last fetch.
    pub last_fetch_ms: u64,
    /// Its fetches over the leader's last rate window, and the window's length.
    pub window_fetches: u32,
    pub window_ms: u64,
}

/// One shard's endpoint figures, as last published.
#[derive(Default)]
struct EndpointCounters {
    open: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
    retried: AtomicU64,
    read_timeouts: AtomicU64,
    write_timeouts: AtomicU64,
    cancelled: AtomicU64,
    frame_errors: AtomicU64,
    tasks: AtomicU64,
}

/// The broker's metrics. One instance, shared by every shard through an `Arc`.
pub struct Metrics {
    requests: [AtomicU64; API_SLOTS],
    request_errors: [AtomicU64; API_SLOTS],
    api_names: fn(u16) -> Option<&'static str>,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Record batch bytes this broker served to its followers (ReplicaFetch).
    pub replica_bytes_out: AtomicU64,
    /// Record batch bytes this broker copied from its leaders.
    pub replica_bytes_in: AtomicU64,
    /// ISR changes this broker's partitions went through as leader: shrinks and expansions
    /// committed.
    pub isr_shrinks: AtomicU64,
    pub isr_expands: AtomicU64,
    /// Partitions without a live leader in this broker's metadata (set by shard 0).
    pub offline_partitions: AtomicU64,
    /// SASL exchanges that failed (wrong password, unknown user, malformed messages).
    pub authentication_failures: AtomicU64,
    /// Requests (or entries of one) the authorizer refused.
    pub authorization_denials: AtomicU64,
    /// Bytes fetch read from logs, served or not (a fetch reads within its response limit, so
    /// this stays close to `bytes_out`).
    pub fetch_bytes_read: AtomicU64,
    /// Messages one shard sent another over the mesh (work for the owner of a partition, a
    /// group or the controller): the cross-core hops requests cost.
    pub shard_messages: AtomicU64,
    pub records_in: AtomicU64,
    pub produce_latency: Histogram,
    pub fetch_latency: Histogram,
    /// Per shard: what its endpoint counted, published by each shard's tick.
    endpoints: Vec<EndpointCounters>,
    /// Keyed by the topic's name shared by its partitions (one allocation per topic, not per
    /// partition: 100,000 partitions on a broker).
    partitions: Mutex<BTreeMap<(Arc<str>, u32), PartitionStats>>,
    /// Partition logs of this broker that could not be opened, and why: their partitions are
    /// offline here (Metadata says so, /health says degraded) until an open succeeds.
    offline_logs: Mutex<BTreeMap<(String, u32), String>>,
    /// `offline_logs`'s length, read without the lock (Metadata asks for every partition).
    offline_count: AtomicU64,
    ready: AtomicBool,
}

impl Metrics {
    /// `api_names` names an API key for the `api` label (None: counted as "unknown").
    pub fn new(api_names: fn(u16) -> Option<&'static str>, shards: usize) -> Metrics {
        Metrics {
            requests: std::array::from_fn(|_| AtomicU64::new(0)),
            request_errors: std::array::from_fn(|_| AtomicU64::new(0)),
            api_names,
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            replica_bytes_out: AtomicU64::new(0),
            authentication_failures: AtomicU64::new(0),
            authorization_denials: AtomicU64::new(0),
            replica_bytes_in: AtomicU64::new(0),
            isr_shrinks: AtomicU64::new(0),
            offline_partitions: AtomicU64::new(0),
            isr_expands: AtomicU64::new(0),
            fetch_bytes_read: AtomicU64::new(0),
            shard_messages: AtomicU64::new(0),
            records_in: AtomicU64::new(0),
            produce_latency: Histogram::default(),
            fetch_latency: Histogram::default(),
            endpoints: (0..shards.max(1))
                .map(|_| EndpointCounters::default())
                .collect(),
            partitions: Mutex::new(BTreeMap::new()),
            offline_logs: Mutex::new(BTreeMap::new()),
            offline_count: AtomicU64::new(0),
            ready: AtomicBool::new(false),
        }
    }

    fn slot(&self, api_key: u16) -> usize {
        match (self.api_names)(api_key) {
            Some(_) if (api_key as usize) < API_SLOTS - 1 => api_key as usize,
            _ => API_SLOTS - 1,
        }
    }

    pub fn authentication_failed(&self) {
        self.authentication_failures.fetch_add(1, Relaxed);
    }

    pub fn denied(&self) {
        self.authorization_denials.fetch_add(1, Relaxed);
    }

    /// Counts one request (and whether it was answered with an error).
    pub fn request(&self, api_key: u16, failed: bool) {
        let slot = self.slot(api_key);
        self.requests[slot].fetch_add(1, Relaxed);
        if failed {
            self.request_errors[slot].fetch_add(1, Relaxed);
        }
    }

    /// Replaces what one shard reported about its partitions. `owned` lists every partition the
    /// shard owns, so partitions it gave up (deleted topics) disappear.
    pub fn publish_partitions(
        &self,
        owned: impl IntoIterator<Item = ((Arc<str>, u32), PartitionStats)>,
        drop: &[(Arc<str>, u32)],
    ) {
        let mut map = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        for key in drop {
            map.remove(key);
        }
        for (key, stats) in owned {
            map.insert(key, stats);
        }
    }

    /// What one shard's endpoint reports about its connections and requests.
    pub fn set_endpoint(&self, shard: usize, stats: &quiver_net::EndpointStats) {
        if let Some(c) = self.endpoints.get(shard) {
            c.open.store(stats.connections as u64, Relaxed);
            c.accepted.store(stats.connections_accepted, Relaxed);
            c.refused.store(stats.connections_refused, Relaxed);
            c.retried.store(stats.connections_retried, Relaxed);
            c.read_timeouts.store(stats.read_timeouts, Relaxed);
            c.write_timeouts.store(stats.write_timeouts, Relaxed);
            c.cancelled.store(stats.requests_cancelled, Relaxed);
            c.frame_errors.store(stats.frame_errors, Relaxed);
            c.tasks.store(stats.service_tasks as u64, Relaxed);
        }
    }

    /// Forgets a deleted topic's partitions.
    pub fn forget_topic(&self, topic: &str) {
        let mut map = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|(t, _), _| &**t != topic);
        let mut offline = self.offline_logs.lock().unwrap_or_else(|p| p.into_inner());
        offline.retain(|(t, _), _| t != topic);
        self.offline_count.store(offline.len() as u64, Relaxed);
    }

    /// A partition's log could not be opened (`why`): offline here until [`Self::log_opened`].
    pub fn log_failed(&self, topic: &str, partition: u32, why: &str) {
        let mut offline = self.offline_logs.lock().unwrap_or_else(|p| p.into_inner());
        offline.insert((topic.to_string(), partition), why.to_string());
        self.offline_count.store(offline.len() as u64, Relaxed);
    }

    /// A partition's log is open (again).
    pub fn log_opened(&self, topic: &str, partition: u32) {
        let mut offline = self.offline_logs.lock().unwrap_or_else(|p| p.into_inner());
        if !offline.is_empty() {
            offline.remove(&(topic.to_string(), partition));
            self.offline_count.store(offline.len() as u64, Relaxed);
        }
    }

    /// Whether this broker's log of the partition could not be opened.
    pub fn is_log_offline(&self, topic: &str, partition: u32) -> bool {
        if self.offline_count.load(Relaxed) == 0 {
            return false;
        }
        let offline = self.offline_logs.lock().unwrap_or_else(|p| p.into_inner());
        offline.contains_key(&(topic.to_string(), partition))
    }

    /// How many of this broker's partition logs could not be opened, and the first few with
    /// why (for /health).
    pub fn offline_logs(&self, first: usize) -> (usize, Vec<String>) {
        let offline = self.offline_logs.lock().unwrap_or_else(|p| p.into_inner());
        let named = offline
            .iter()
            .take(first)
            .map(|((t, p), why)| format!("{t}/{p}: {why}"))
            .collect();
        (offline.len(), named)
    }

    /// Forgets one partition (its replica moved to other brokers).
    pub fn forget_partition(&self, topic: &str, partition: u32) {
        let mut map = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|(t, p), _| &**t != topic || *p != partition);
        drop(map);
        self.log_opened(topic, partition);
    }

    /// Marks the broker ready (listening, logs recovered); /health answers 200 from then on.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Relaxed)
    }

    /// The whole exposition, in Prometheus text format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let _ = writeln!(out, "# HELP quiver_requests_total Requests answered, by API.\n# TYPE quiver_requests_total counter");
        self.render_per_api(&mut out, "quiver_requests_total", &self.requests);
        let _ = writeln!(
            out,
            "# HELP quiver_request_errors_total Requests answered with an error, by API.\n# TYPE quiver_request_errors_total counter"
        );
        self.render_per_api(
            &mut out,
            "quiver_request_errors_total",
            &self.request_errors,
        );
        let (ahead, taken) = quiver_engine::readahead::totals();
        for (name, help, v) in [
            (
                "quiver_bytes_in_total",
                "Record batch bytes accepted by produce.",
                self.bytes_in.load(Relaxed),
            ),
            (
                "quiver_bytes_out_total",
                "Record batch bytes served by fetch.",
                self.bytes_out.load(Relaxed),
            ),
            (
                "quiver_replica_bytes_out_total",
                "Record batch bytes served to followers (ReplicaFetch).",
                self.replica_bytes_out.load(Relaxed),
            ),
            (
                "quiver_replica_bytes_in_total",
                "Record batch bytes copied from leaders.",
                self.replica_bytes_in.load(Relaxed),
            ),
            (
                "quiver_isr_shrinks_total",
                "ISR shrinks committed for partitions this broker leads.",
                self.isr_shrinks.load(Relaxed),
            ),
            (
                "quiver_isr_expands_total",
                "ISR expansions committed for partitions this broker leads.",
                self.isr_expands.load(Relaxed),
            ),
            (
                "quiver_fetch_bytes_read_total",
                "Record batch bytes fetch read from logs, served or not.",
                self.fetch_bytes_read.load(Relaxed),
            ),
            (
                "quiver_shard_messages_total",
                "Messages one shard sent another (work on a partition, group or controller it does not own).",
                self.shard_messages.load(Relaxed),
            ),
            (
                "quiver_records_in_total",
                "Records accepted by produce.",
                self.records_in.load(Relaxed),
            ),
            (
                "quiver_fetch_readahead_bytes_total",
                "Bytes read ahead of sequential readers.",
                ahead,
            ),
            (
                "quiver_fetch_readahead_taken_bytes_total",
                "Bytes read ahead that a read then took (the rest expired or were replaced).",
                taken,
            ),
            (
                "quiver_fetch_tail_cache_bytes_total",
                "Bytes fetch served from memory: batches appended last, not read from disk.",
                quiver_engine::tail::served_bytes(),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        let sum = |f: fn(&EndpointCounters) -> &AtomicU64| -> u64 {
            self.endpoints.iter().map(|c| f(c).load(Relaxed)).sum()
        };
        let _ = writeln!(
            out,
            "# HELP quiver_connections Open QUIC connections.\n# TYPE quiver_connections gauge\nquiver_connections {}",
            sum(|c| &c.open)
        );
        let _ = writeln!(
            out,
            "# HELP quiver_requests_in_service Requests being served now (a task each).\n# TYPE quiver_requests_in_service gauge\nquiver_requests_in_service {}",
            sum(|c| &c.tasks)
        );
        for (name, help, v) in [
            (
                "quiver_connections_accepted_total",
                "QUIC connections accepted.",
                sum(|c| &c.accepted),
            ),
            (
                "quiver_connections_refused_total",
                "QUIC connections refused (over a connection cap, or shutting down).",
                sum(|c| &c.refused),
            ),
            (
                "quiver_connections_retried_total",
                "New QUIC connections asked to prove their address first (Retry).",
                sum(|c| &c.retried),
            ),
            (
                "quiver_request_read_timeouts_total",
                "Requests dropped because their frame did not arrive whole in time.",
                sum(|c| &c.read_timeouts),
            ),
            (
                "quiver_response_write_timeouts_total",
                "Responses dropped because the client did not read them in time.",
                sum(|c| &c.write_timeouts),
            ),
            (
                "quiver_requests_cancelled_total",
                "Requests whose work was dropped because the client stopped the stream or left.",
                sum(|c| &c.cancelled),
            ),
            (
                "quiver_frame_errors_total",
                "Malformed request frames.",
                sum(|c| &c.frame_errors),
            ),
            (
                "quiver_offsets_replay_skipped_records_total",
                "Records of __consumer_offsets that replay could not decode and skipped.",
                crate::group::OFFSETS_RECORDS_SKIPPED.load(Relaxed),
            ),
            (
                "quiver_offsets_replay_skipped_ranges_total",
                "Ranges of __consumer_offsets replay could not read (corrupt) and skipped.",
                crate::group::OFFSETS_RANGES_SKIPPED.load(Relaxed),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        self.produce_latency.render(
            &mut out,
            "quiver_produce_latency_seconds",
            "Produce request latency, receipt to answer.",
        );
        self.fetch_latency.render(
            &mut out,
            "quiver_fetch_latency_seconds",
            "Fetch request latency, receipt to answer (long-poll waits included).",
        );

        let map = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(out, "# HELP quiver_partitions Partitions hosted by this broker.\n# TYPE quiver_partitions gauge\nquiver_partitions {}", map.len());
        let under = map
            .values()
            .filter(|s| s.leader && s.isr < s.replicas)
            .count();
        let _ = writeln!(out, "# HELP quiver_under_replicated_partitions Partitions this broker leads with fewer replicas in sync than placed.\n# TYPE quiver_under_replicated_partitions gauge\nquiver_under_replicated_partitions {under}");
        let _ = writeln!(out, "# HELP quiver_authentication_failures_total SASL exchanges that failed.\n# TYPE quiver_authentication_failures_total counter\nquiver_authentication_failures_total {}", self.authentication_failures.load(Relaxed));
        let _ = writeln!(out, "# HELP quiver_authorization_denials_total Requests, or entries of one, the ACL authorizer refused.\n# TYPE quiver_authorization_denials_total counter\nquiver_authorization_denials_total {}", self.authorization_denials.load(Relaxed));
        let _ = writeln!(out, "# HELP quiver_offline_partitions Partitions without a live leader, as this broker's metadata says (cluster-wide).\n# TYPE quiver_offline_partitions gauge\nquiver_offline_partitions {}", self.offline_partitions.load(Relaxed));
        let _ = writeln!(out, "# HELP quiver_partition_logs_offline Partition logs of this broker that could not be opened (their partitions are offline here; /health says degraded).\n# TYPE quiver_partition_logs_offline gauge\nquiver_partition_logs_offline {}", self.offline_logs(0).0);
        type FollowerValue = fn(&FollowerStats) -> String;
        let follower_gauges: [(&str, &str, FollowerValue); 4] = [
            (
                "quiver_replica_lag_records",
                "On a partition's leader: how many records a follower is behind the leader's log end.",
                |f| f.lag_records.to_string(),
            ),
            (
                "quiver_replica_lag_bytes",
                "On a partition's leader: about how many bytes a follower is behind the leader's log end.",
                |f| f.lag_bytes.to_string(),
            ),
            (
                "quiver_replica_lag_seconds",
                "On a partition's leader: seconds since a follower was last caught up with the leader's log end.",
                |f| format!("{:.3}", f.lag_ms as f64 / 1000.0),
            ),
            (
                "quiver_replica_fetch_rate",
                "On a partition's leader: a follower's fetches per second over the last 5 s.",
                |f| {
                    format!(
                        "{:.2}",
                        f64::from(f.window_fetches) * 1000.0 / f.window_ms.max(1) as f64
                    )
                },
            ),
        ];
        for (name, help, value) in follower_gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for ((topic, partition), stats) in map.iter() {
                for f in &stats.followers {
                    let _ = writeln!(
                        out,
                        "{name}{{topic=\"{}\",partition=\"{partition}\",follower=\"{}\"}} {}",
                        escape_label(topic),
                        f.id,
                        value(f)
                    );
                }
            }
        }
        for (name, help, get) in [
            (
                "quiver_log_size_bytes",
                "Bytes of a partition's log on disk.",
                (|s: &PartitionStats| s.size_bytes) as fn(&PartitionStats) -> u64,
            ),
            (
                "quiver_log_segments",
                "Segments of a partition's log.",
                |s| s.segments,
            ),
            (
                "quiver_log_start_offset",
                "A partition's log start offset.",
                |s| s.log_start_offset,
            ),
            (
                "quiver_log_end_offset",
                "A partition's log end offset.",
                |s| s.log_end_offset,
            ),
            (
                "quiver_high_watermark",
                "A partition's high watermark: what consumers may read up to.",
                |s| s.high_watermark,
            ),
            (
                "quiver_partition_isr",
                "In a cluster: a partition's in-sync replicas, as metadata holds them.",
                |s| s.isr,
            ),
            (
                "quiver_log_corrupt_ranges",
                "Damaged ranges found in a partition's log: their offsets fail to read, intact data after them is kept.",
                |s| s.corrupt_ranges,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for ((topic, partition), stats) in map.iter() {
                let _ = writeln!(
                    out,
                    "{name}{{topic=\"{}\",partition=\"{partition}\"}} {}",
                    escape_label(topic),
                    get(stats)
                );
            }
        }
        out
    }

    fn render_per_api(&self, out: &mut String, name: &str, counters: &[AtomicU64; API_SLOTS]) {
        for (slot, c) in counters.iter().enumerate() {
            let v = c.load(Relaxed);
            if v == 0 {
                continue;
            }
            let api = if slot == API_SLOTS - 1 {
                "unknown"
            } else {
                (self.api_names)(slot as u16).unwrap_or("unknown")
            };
            let _ = writeln!(out, "{name}{{api=\"{api}\"}} {v}");
        }
    }
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Scrapes served at once; one more is answered `503` at once and closed. Rationale: a scraper
/// or health probe must be answered even while a few clients hold connections open.
pub const HTTP_CONNECTIONS_MAX: usize = 16;
/// Time one HTTP connection gets, from accept to the last byte of the answer, however slowly its
/// client sends or reads. Rationale: a client that trickles its request one byte a second would
/// otherwise hold a connection slot as long as it likes.
pub const HTTP_CONNECTION_DEADLINE: Duration = Duration::from_secs(2);
/// Most bytes of request line and headers read from one HTTP request.
pub const HTTP_REQUEST_BYTES_MAX: u64 = 16 * 1024;

/// Serves /metrics and /health on `addr` from a background thread until the process exits.
/// Returns the bound address (the port may be 0 in tests).
///
/// Each connection gets a thread of its own (at most [`HTTP_CONNECTIONS_MAX`]) and at most
/// [`HTTP_CONNECTION_DEADLINE`] in all, so one slow client cannot stall /health or /metrics.
pub fn serve_http(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let active = Arc::new(AtomicU64::new(0));
    std::thread::Builder::new()
        .name("streamd-metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if active.load(Relaxed) >= HTTP_CONNECTIONS_MAX as u64 {
                    busy(stream);
                    continue;
                }
                active.fetch_add(1, Relaxed);
                let (metrics, held) = (metrics.clone(), active.clone());
                let spawned = std::thread::Builder::new()
                    .name("streamd-http".into())
                    .spawn(move || {
                        let _ = answer(stream, &metrics, Instant::now() + HTTP_CONNECTION_DEADLINE);
                        held.fetch_sub(1, Relaxed);
                    });
                if spawned.is_err() {
                    active.fetch_sub(1, Relaxed);
                }
            }
        })?;
    Ok(bound)
}

/// Answers a connection past [`HTTP_CONNECTIONS_MAX`] with `503` and closes it, without waiting
/// for its client: what it has sent so far is read first (a socket closed with unread data is
/// reset, and its client might never see the answer).
fn busy(stream: TcpStream) {
    let _ = stream.set_nonblocking(true);
    let mut sink = [0u8; 1024];
    while matches!((&stream).read(&mut sink), Ok(n) if n > 0) {}
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let _ = (&stream).write_all(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\nConnection: close\r\n\r\nbusy\n",
    );
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// Reads from a TCP stream until a deadline: each read may wait only for what is left.
struct UntilDeadline {
    stream: TcpStream,
    until: Instant,
}

impl UntilDeadline {
    fn left(&self) -> std::io::Result<Duration> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        Ok(left)
    }
}

impl Read for UntilDeadline {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.left()?;
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

fn answer(stream: TcpStream, metrics: &Metrics, until: Instant) -> std::io::Result<()> {
    let mut reader = BufReader::new(UntilDeadline { stream, until }).take(HTTP_REQUEST_BYTES_MAX);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Drain the headers (bounded) so the client sees a clean response, not a reset.
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        ("GET", "/health") if metrics.is_ready() => match metrics.offline_logs(5) {
            (0, _) => ("200 OK", "text/plain; charset=utf-8", "ok\n".to_string()),
            (n, first) => (
                "503 Service Unavailable",
                "text/plain; charset=utf-8",
                format!(
                    "degraded: {n} partition logs could not be opened on this broker (offline here; the others serve): {}\n",
                    first.join("; ")
                ),
            ),
        },
        // Readiness for probes: serving (listening, logs recovered), degraded or not; a broker
        // that serves most partitions is better in a service than out of it.
        ("GET", "/ready") if metrics.is_ready() => {
            ("200 OK", "text/plain; charset=utf-8", "ready\n".to_string())
        }
        ("GET", "/health" | "/ready") => (
            "503 Service Unavailable",
            "text/plain; charset=utf-8",
            "starting\n".to_string(),
        ),
        ("GET", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "try /metrics, /health or /ready\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "GET only\n".to_string(),
        ),
    };
    let wrapped = reader.into_inner().into_inner();
    let mut stream = wrapped.stream;
    let left = until.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(std::io::ErrorKind::TimedOut.into());
    }
    stream.set_write_timeout(Some(left))?;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(k: u16) -> Option<&'static str> {
        match k {
            0 => Some("produce"),
            1 => Some("fetch"),
            _ => None,
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.record(Duration::from_micros(40));
        h.record(Duration::from_micros(900));
        h.record(Duration::from_secs(60));
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.00005\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.001\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"10\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count 3\n"), "{out}");
    }

    #[test]
    fn per_api_counters_and_partition_gauges_render() {
        let m = Metrics::new(names, 2);
        m.request(0, false);
        m.request(0, true);
        m.request(999, false);
        m.publish_partitions(
            [(
                (Arc::from("t\"x"), 2),
                PartitionStats {
                    size_bytes: 42,
                    ..Default::default()
                },
            )],
            &[],
        );
        let out = m.render();
        assert!(
            out.contains("quiver_requests_total{api=\"produce\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("quiver_request_errors_total{api=\"produce\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("quiver_requests_total{api=\"unknown\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("quiver_log_size_bytes{topic=\"t\\\"x\",partition=\"2\"} 42\n"),
            "{out}"
        );
        m.forget_topic("t\"x");
        assert!(m.render().contains("quiver_partitions 0\n"));
    }

    #[test]
    fn http_endpoint_serves_metrics_and_health() {
        let m = Arc::new(Metrics::new(names, 2));
        let addr = serve_http("127.0.0.1:0".parse().unwrap(), m.clone()).unwrap();
        let get = |path: &str| {
            let mut s = TcpStream::connect(addr).unwrap();
            write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        assert!(get("/health").starts_with("HTTP/1.1 503"));
        assert!(get("/ready").starts_with("HTTP/1.1 503"));
        m.set_ready(true);
        assert!(get("/health").starts_with("HTTP/1.1 200"));
        assert!(get("/ready").starts_with("HTTP/1.1 200"));
        // A log that could not be opened: degraded, named, counted; still ready.
        m.log_failed("t", 3, "Not a directory");
        let health = get("/health");
        assert!(health.starts_with("HTTP/1.1 503"), "{health}");
        assert!(
            health.contains("degraded: 1 partition logs")
                && health.contains("t/3: Not a directory"),
            "{health}"
        );
        assert!(get("/ready").starts_with("HTTP/1.1 200"));
        assert!(m.is_log_offline("t", 3) && !m.is_log_offline("t", 2));
        assert!(get("/metrics").contains("quiver_partition_logs_offline 1\n"));
        m.log_opened("t", 3);
        assert!(get("/health").starts_with("HTTP/1.1 200"));
        assert!(get("/metrics").contains("quiver_partition_logs_offline 0\n"));
        let metrics = get("/metrics");
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(metrics.contains("# TYPE quiver_produce_latency_seconds histogram"));
        assert!(get("/nope").starts_with("HTTP/1.1 404"));
    }
}
