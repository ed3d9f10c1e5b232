//! `streambench`: load generator and latency meter for Quiver, built on the SDK.
//!
//! Modes:
//! - `produce`: producers send records as fast as possible or at `--rate`; latency is from the
//!   send to the broker's acknowledgement.
//! - `consume`: the topic is filled to `--records` (not measured), then consumers read it from
//!   the beginning; throughput only.
//! - `e2e`: producers and consumers at once; latency is from the send to the record's receipt
//!   by a consumer (the send time travels in the first 8 bytes of each value).
//! - `probe`: one record every `1 / --rate` s, read back at once; prints the gaps (wall clock)
//!   with no acknowledgement or no record received: a failover's outage as clients see it
//!   (`probe.rs`).
//!
//! Coordinated omission: with `--rate`, each record has an intended send time on a fixed
//! schedule (`start + i / rate` per producer), and its latency is measured from that time, not
//! from when the producer got around to sending it. A stall therefore shows up in the latency of
//! every record that should have been sent during it, as it would for a real client sending at
//! that rate. Without `--rate` there is no schedule, and latency is from the send call (which
//! includes any wait for buffer space).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, Parser, ValueEnum};
use hdrhistogram::Histogram;
use quiver_client::{
    Acks, Admin, Client, ClientConfig, ClientTls, Compression, Consumer, ConsumerConfig, Error,
    ErrorCode, NewTopic, OffsetSpec, Producer, ProducerConfig, ProducerRecord, SaslCredentials,
    ScramMechanism, TimestampMs, TopicPartition,
};
use quiver_tools::credentials::{self, PasswordEnv};
use quiver_tools::outln;
use rand::RngCore;

mod probe;
use serde_json::json;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "streambench",
    version,
    about = "Load generator and latency meter for Quiver.",
    after_help = "Examples:\n  \
        streambench produce --records 200000 --record-size 1024\n  \
        streambench produce --rate 20000 --duration 30s --warmup 5s --acks all\n  \
        streambench consume --records 500000 --consumers 2\n  \
        streambench e2e --rate 5000 --duration 20s --warmup 2s --json"
)]
struct Cli {
    /// What to measure.
    #[arg(value_enum)]
    mode: Mode,
    #[command(flatten)]
    opts: Opts,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Send records; latency from send to acknowledgement.
    Produce,
    /// Read a filled topic from the beginning; throughput.
    Consume,
    /// Send and receive at once; latency from send to receipt.
    E2e,
    /// A record every 1/--rate s, read back at once; the gaps with no ack or no record.
    Probe,
}

#[derive(Args, Debug, Clone)]
struct Opts {
    /// Broker(s) to bootstrap from.
    #[arg(
        long,
        short = 'b',
        env = "STREAMBENCH_BOOTSTRAP",
        default_value = "127.0.0.1:9092"
    )]
    bootstrap: String,
    /// CA file to trust (default: ./data/tls/ca.pem, the development CA of a local streamd).
    #[arg(long, env = "STREAMBENCH_CA_FILE")]
    ca_file: Option<std::path::PathBuf>,
    /// PEM client certificate chain, for brokers that require mutual TLS.
    #[arg(long, env = "STREAMBENCH_CLIENT_CERT", requires = "client_key")]
    client_cert: Option<std::path::PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long, env = "STREAMBENCH_CLIENT_KEY", requires = "client_cert")]
    client_key: Option<std::path::PathBuf>,
    /// SASL SCRAM user to log in as, for brokers that require authentication. Its password
    /// comes from --password-file, else STREAMBENCH_PASSWORD, else a prompt (stdin a
    /// terminal).
    #[arg(long, env = "STREAMBENCH_USER", value_name = "NAME")]
    user: Option<String>,
    /// File whose first line is --user's password.
    #[arg(long, env = "STREAMBENCH_PASSWORD_FILE", value_name = "PATH")]
    password_file: Option<std::path::PathBuf>,
    /// SCRAM mechanism of --user: SCRAM-SHA-512 or SCRAM-SHA-256.
    #[arg(
        long,
        env = "STREAMBENCH_SASL_MECHANISM",
        value_name = "MECHANISM",
        default_value = "SCRAM-SHA-512",
        value_parser = quiver_client::client::parse_mechanism
    )]
    sasl_mechanism: ScramMechanism,
    /// The credentials of --user, read once at start (every connection uses them).
    #[arg(skip)]
    sasl: Option<SaslCredentials>,
    /// Topic to use; created with --partitions if missing.
    #[arg(long, default_value = "streambench")]
    topic: String,
    /// Partitions of the topic when streambench creates it.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Producer tasks, each with its own connection.
    #[arg(long, default_value_t = 1)]
    producers: u32,
    /// Consumer tasks (consume, e2e), each with its own connection; partitions are split
    /// between them.
    #[arg(long, default_value_t = 1)]
    consumers: u32,
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// Producer batch size in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    batch_size: usize,
    /// Producer linger (e.g. 5ms).
    #[arg(long, default_value = "5ms", value_parser = quiver_tools::parse_duration)]
    linger: Duration,
    /// acks: 0, 1 or all.
    #[arg(long, default_value = "1")]
    acks: Acks,
    /// Batch compression.
    #[arg(long, value_enum, default_value_t = CompressionArg::None)]
    compression: CompressionArg,
    /// Produce requests in flight per broker and producer (the SDK's default, 5).
    #[arg(long, default_value_t = 5)]
    max_in_flight: usize,
    /// Producer buffer memory in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    buffer_memory: usize,
    /// Largest produce request in bytes (default: the SDK's, 4 MiB).
    #[arg(long)]
    max_request_size: Option<usize>,
    /// Records per second over all producers; 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// How long to measure, after the warm-up (ignored when --records is given).
    #[arg(long, default_value = "10s", value_parser = quiver_tools::parse_duration)]
    duration: Duration,
    /// Measure this many records instead of a duration (consume: fill the topic to at least
    /// this many first, then read all of it; default 200000).
    #[arg(long)]
    records: Option<u64>,
    /// Load applied before measuring starts; its records count in neither latency nor
    /// throughput.
    #[arg(long, default_value = "0s", value_parser = quiver_tools::parse_duration)]
    warmup: Duration,
    /// Largest UDP payload of a QUIC packet the client discovers up to and accepts (1200 to
    /// 65527; 1452 is what a 1500-byte Ethernet path allows).
    #[arg(long, default_value_t = quiver_client::transport::MAX_UDP_PAYLOAD,
          value_parser = clap::value_parser!(u16)
              .range(1200..=i64::from(quiver_client::transport::MAX_UDP_PAYLOAD)))]
    max_udp_payload: u16,
    /// Print one JSON object with the results instead of text.
    #[arg(long)]
    json: bool,
    /// probe: report silences longer than this in acknowledgements or records received.
    #[arg(long, default_value = "100ms", value_parser = quiver_tools::parse_duration)]
    gap: Duration,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum CompressionArg {
    None,
    Lz4,
    Zstd,
}

impl CompressionArg {
    fn codec(self) -> Compression {
        match self {
            CompressionArg::None => Compression::None,
            CompressionArg::Lz4 => Compression::Lz4,
            CompressionArg::Zstd => Compression::Zstd,
        }
    }
    fn name(self) -> &'static str {
        match self {
            CompressionArg::None => "none",
            CompressionArg::Lz4 => "lz4",
            CompressionArg::Zstd => "zstd",
        }
    }
}

/// Latencies in microseconds, 1 µs to 10 minutes, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

/// Shared counters and the run's clock. The counters are written for every record, by the
/// producing tasks (`issued`, `sent_total`) and by the delivery reports and consumers (the
/// others), on different threads: each has its own cache line, so one side's writes do not take
/// the line from under the other's (at 100-byte records the two sides' counters sharing lines
/// cost several percent of streambench).
struct Run {
    opts: Opts,
    mode: Mode,
    /// Zero point for timestamps embedded in e2e values.
    base: Instant,
    /// The wall clock at `base`, in milliseconds since the Unix epoch: records' timestamps are
    /// derived from the one clock read per record the run makes anyway, so the SDK does not read
    /// the clock again for each (a clock read per record showed in the benchmark's profile).
    base_wall_ms: i64,
    /// Measuring starts here (after the warm-up).
    measure_from: Instant,
    /// Duration mode: sending stops here.
    send_until: Option<Instant>,
    /// Records mode: measured records issued so far.
    issued: Padded<AtomicU64>,
    stop: Padded<AtomicBool>,
    /// Measured records acknowledged (produce) or received (consume, e2e), and their bytes.
    records: Padded<AtomicU64>,
    bytes: Padded<AtomicU64>,
    /// All records sent (also during warm-up), and how many of them were acknowledged.
    sent_total: Padded<AtomicU64>,
    acked_total: Padded<AtomicU64>,
    received_total: Padded<AtomicU64>,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// When the last measured record completed.
    /// Nanoseconds after `base` (0: none yet).
    last_done: Padded<AtomicU64>,
}

/// A value alone on its cache line (128 bytes: two lines, for the adjacent-line prefetcher).
#[repr(align(128))]
struct Padded<T>(T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl Run {
    fn error(&self, e: &dyn std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap();
        if first.is_none() {
            *first = Some(e.to_string());
        }
    }

    fn done_measured(&self, bytes: u64, at: Instant) {
        self.records.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        let nanos = at.saturating_duration_since(self.base).as_nanos() as u64;
        self.last_done.fetch_max(nanos.max(1), Ordering::Relaxed);
    }

    /// Whether the next record may be sent, and whether it is measured.
    fn next_send(&self, now: Instant) -> Option<bool> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        if now < self.measure_from {
            return Some(false);
        }
        match self.opts.records {
            Some(n) => {
                if self.issued.fetch_add(1, Ordering::Relaxed) < n {
                    Some(true)
                } else {
                    None
                }
            }
            None => {
                if self.send_until.is_some_and(|t| now >= t) {
                    None
                } else {
                    Some(true)
                }
            }
        }
    }
}

fn main() {
    let cli = Cli::parse();
    // Diagnostics on stderr only when asked for (RUST_LOG=quiver_client=debug, ...).
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = runtime.block_on(run(cli)) {
        eprintln!("streambench: {}", e.replace('\n', " "));
        std::process::exit(1);
    }
}

async fn connect(opts: &Opts) -> Result<Client, String> {
    let mut tls = match &opts.ca_file {
        Some(p) => ClientTls::from_ca_file(p),
        None => ClientTls::dev_default(),
    }
    .map_err(|e| e.to_string())?;
    if let (Some(cert), Some(key)) = (&opts.client_cert, &opts.client_key) {
        tls = tls.with_client_cert(cert, key).map_err(|e| e.to_string())?;
    }
    let mut config = ClientConfig::new(&opts.bootstrap).tls(tls);
    config.connect.udp_payload_max = opts.max_udp_payload;
    config.sasl = opts.sasl.clone();
    Client::connect(config).await.map_err(|e| match e {
        Error::Authentication { .. } => format!("cannot log in at {}: {e}", opts.bootstrap),
        e => format!("cannot reach a broker at {}: {e}", opts.bootstrap),
    })
}

async fn run(cli: Cli) -> Result<(), String> {
    let mut opts = cli.opts.clone();
    // Once, before any connection: a prompt asks only once, whatever the number of clients.
    opts.sasl = credentials::login(
        opts.user.as_deref(),
        opts.password_file.as_deref(),
        PasswordEnv::read("STREAMBENCH_PASSWORD"),
        opts.sasl_mechanism,
    )?;
    if cli.mode == Mode::Probe {
        return probe::probe(&opts, opts.gap).await;
    }
    if opts.producers == 0 || opts.consumers == 0 {
        return Err("--producers and --consumers must be at least 1".into());
    }
    if cli.mode == Mode::E2e && opts.record_size < 9 {
        return Err(
            "e2e needs --record-size of at least 9 (the send time and whether the record is \
             measured travel in the value)"
                .into(),
        );
    }
    if opts.rate < 0.0 || !opts.rate.is_finite() {
        return Err("--rate must be 0 or a positive number".into());
    }
    let admin_client = connect(&opts).await?;
    let partitions = ensure_topic(&admin_client, &opts).await?;

    let mut fill_note = None;
    if cli.mode == Mode::Consume {
        fill_note = Some(fill(&admin_client, &opts, &partitions).await?);
    }

    // Connections and seeks happen before the clock starts.
    let producers = match cli.mode {
        Mode::Produce | Mode::E2e => make_producers(&opts).await?,
        Mode::Consume | Mode::Probe => Vec::new(),
    };
    let consumers = match cli.mode {
        Mode::Consume => {
            let ends = end_offsets(&admin_client, &partitions).await?;
            make_consumers(&opts, &partitions, Some(ends), true).await?
        }
        Mode::E2e => make_consumers(&opts, &partitions, None, false).await?,
        Mode::Produce | Mode::Probe => Vec::new(),
    };

    let base = Instant::now();
    let base_wall_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let measure_from = base + opts.warmup;
    let run = Arc::new(Run {
        opts: opts.clone(),
        mode: cli.mode,
        base,
        base_wall_ms,
        measure_from,
        send_until: opts.records.is_none().then(|| measure_from + opts.duration),
        issued: Padded(AtomicU64::new(0)),
        stop: Padded(AtomicBool::new(false)),
        records: Padded(AtomicU64::new(0)),
        bytes: Padded(AtomicU64::new(0)),
        sent_total: Padded(AtomicU64::new(0)),
        acked_total: Padded(AtomicU64::new(0)),
        received_total: Padded(AtomicU64::new(0)),
        errors: AtomicU64::new(0),
        first_error: Mutex::new(None),
        last_done: Padded(AtomicU64::new(0)),
    });
    let progress = progress(run.clone());

    let mut latency = histogram();
    match cli.mode {
        // Answered by `probe::probe` before any of this.
        Mode::Probe => {}
        Mode::Produce => {
            for h in run_producers(&run, producers).await? {
                latency.add(h).map_err(|e| e.to_string())?;
            }
        }
        Mode::Consume => {
            let tasks = spawn_consumers(&run, consumers);
            for t in tasks {
                let h = t.await.map_err(|e| e.to_string())??;
                latency.add(h).map_err(|e| e.to_string())?;
            }
        }
        Mode::E2e => {
            // The consumers are at the end of every partition before the first send.
            let consumers = spawn_consumers(&run, consumers);
            run_producers(&run, producers).await?;
            // Wait until every sent record arrived (or 30 s pass), then stop the consumers.
            let deadline = Instant::now() + Duration::from_secs(30);
            while run.received_total.load(Ordering::Relaxed)
                < run.sent_total.load(Ordering::Relaxed)
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            run.stop.store(true, Ordering::Relaxed);
            for t in consumers {
                let h = t.await.map_err(|e| e.to_string())??;
                latency.add(h).map_err(|e| e.to_string())?;
            }
            let lost = run
                .sent_total
                .load(Ordering::Relaxed)
                .saturating_sub(run.received_total.load(Ordering::Relaxed));
            if lost > 0 {
                run.error(&format!(
                    "{lost} sent records were not received within 30 s"
                ));
            }
        }
    }
    run.stop.store(true, Ordering::Relaxed);
    progress.finish();
    report(&run, &latency, partitions.len(), fill_note)
}

async fn ensure_topic(client: &Client, opts: &Opts) -> Result<Vec<TopicPartition>, String> {
    let admin = Admin::new(client.clone());
    let t = match client.topic(&opts.topic).await {
        Ok(t) => t,
        Err(e) if e.code() == Some(ErrorCode::UnknownTopicOrPartition) => {
            match admin
                .create_topic(NewTopic::new(&opts.topic, opts.partitions))
                .await
            {
                Ok(()) => {}
                Err(e) if e.code() == Some(ErrorCode::TopicAlreadyExists) => {}
                Err(e) => return Err(format!("creating topic '{}': {e}", opts.topic)),
            }
            client.topic(&opts.topic).await.map_err(|e| e.to_string())?
        }
        Err(e) => return Err(e.to_string()),
    };
    Ok(t.partitions
        .iter()
        .map(|p| TopicPartition::new(&opts.topic, p.partition.0))
        .collect())
}

async fn end_offsets(
    client: &Client,
    partitions: &[TopicPartition],
) -> Result<Vec<(TopicPartition, u64, u64)>, String> {
    let admin = Admin::new(client.clone());
    let starts = admin
        .list_offsets(
            &partitions
                .iter()
                .map(|tp| (tp.clone(), OffsetSpec::Earliest))
                .collect::<Vec<_>>(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let ends = admin
        .list_offsets(
            &partitions
                .iter()
                .map(|tp| (tp.clone(), OffsetSpec::Latest))
                .collect::<Vec<_>>(),
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(starts
        .into_iter()
        .zip(ends)
        .map(|((tp, s), (_, e))| (tp, s.map_or(0, |o| o.0), e.map_or(0, |o| o.0)))
        .collect())
}

/// Consume mode: makes sure the topic holds at least `--records` records (default 200 000).
async fn fill(
    client: &Client,
    opts: &Opts,
    partitions: &[TopicPartition],
) -> Result<String, String> {
    let want = opts.records.unwrap_or(200_000);
    let have: u64 = end_offsets(client, partitions)
        .await?
        .iter()
        .map(|(_, s, e)| e - s)
        .sum();
    if have >= want {
        return Ok(format!("topic already held {have} records"));
    }
    let missing = want - have;
    eprintln!(
        "streambench: filling '{}' with {missing} records first (not measured)",
        opts.topic
    );
    let producer =
        Producer::new(client.clone(), producer_config(opts)).map_err(|e| e.to_string())?;
    let pool = payload_pool();
    let mut pending = std::collections::VecDeque::new();
    for i in 0..missing {
        let value = slice_of(&pool, i, opts.record_size);
        let d = producer
            .enqueue(ProducerRecord::new(&opts.topic).value(value))
            .await
            .map_err(|e| e.to_string())?;
        pending.push_back(d);
        if pending.len() > 50_000 {
            pending
                .pop_front()
                .unwrap()
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    producer.flush().await.map_err(|e| e.to_string())?;
    for d in pending {
        d.await.map_err(|e| e.to_string())?;
    }
    Ok(format!("filled with {missing} records first"))
}

fn producer_config(opts: &Opts) -> ProducerConfig {
    let config = ProducerConfig::default()
        .acks(opts.acks)
        .compression(opts.compression.codec())
        .batch_size(opts.batch_size)
        .linger(opts.linger)
        .buffer_memory(opts.buffer_memory.max(opts.batch_size * 2))
        .max_in_flight_per_broker(opts.max_in_flight.max(1));
    match opts.max_request_size {
        Some(bytes) => config.max_request_size(bytes),
        None => config,
    }
}

/// 1 MiB of random bytes; values are slices of it (no copy per record).
fn payload_pool() -> Bytes {
    let mut v = vec![0u8; 1 << 20];
    rand::thread_rng().fill_bytes(&mut v);
    Bytes::from(v)
}

fn slice_of(pool: &Bytes, i: u64, size: usize) -> Bytes {
    if size >= pool.len() {
        return Bytes::from(vec![0xa5u8; size]);
    }
    let start = ((i as usize).wrapping_mul(7919)) % (pool.len() - size);
    pool.slice(start..start + size)
}

/// Where one producer's delivery reports go: the run's counters and this producer's latency
/// histogram. Records are reported through the producer's delivery listener (no future per
/// record), with the intended send time and whether it is measured packed into the opaque value.
struct Sink {
    run: std::sync::OnceLock<Arc<Run>>,
    hist: Mutex<Histogram<u64>>,
}

impl Sink {
    fn deliver(&self, opaque: u64, result: quiver_client::Result<quiver_client::RecordMetadata>) {
        let Some(run) = self.run.get() else { return };
        match result {
            Ok(_) => {
                run.acked_total.fetch_add(1, Ordering::Relaxed);
                if opaque & 1 == 1 && run.mode == Mode::Produce {
                    let now = Instant::now();
                    let intended = run.base + Duration::from_nanos(opaque >> 1);
                    let us = now.saturating_duration_since(intended).as_micros() as u64;
                    let mut hist = self.hist.lock().unwrap();
                    let high = hist.high();
                    let _ = hist.record(us.clamp(1, high));
                    drop(hist);
                    run.done_measured(run.opts.record_size as u64, now);
                }
            }
            Err(e) => run.error(&e),
        }
    }
}

async fn make_producers(opts: &Opts) -> Result<Vec<(Producer, Arc<Sink>)>, String> {
    let mut out = Vec::new();
    for _ in 0..opts.producers {
        let client = connect(opts).await?;
        // Metadata of the topic is loaded now, not on the first send.
        client.topic(&opts.topic).await.map_err(|e| e.to_string())?;
        let sink = Arc::new(Sink {
            run: std::sync::OnceLock::new(),
            hist: Mutex::new(histogram()),
        });
        let reports = sink.clone();
        let config = producer_config(opts)
            .on_delivery(move |opaque, result| reports.deliver(opaque, result));
        out.push((
            Producer::new(client, config).map_err(|e| e.to_string())?,
            sink,
        ));
    }
    Ok(out)
}

async fn run_producers(
    run: &Arc<Run>,
    producers: Vec<(Producer, Arc<Sink>)>,
) -> Result<Vec<Histogram<u64>>, String> {
    let mut tasks = Vec::new();
    let pool = payload_pool();
    for (id, (producer, sink)) in producers.into_iter().enumerate() {
        let _ = sink.run.set(run.clone());
        tasks.push(tokio::spawn(producer_task(
            run.clone(),
            producer,
            sink,
            id as u32,
            pool.clone(),
        )));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.map_err(|e| e.to_string())?);
    }
    Ok(out)
}

async fn producer_task(
    run: Arc<Run>,
    producer: Producer,
    sink: Arc<Sink>,
    id: u32,
    pool: Bytes,
) -> Histogram<u64> {
    let opts = &run.opts;
    let interval =
        (opts.rate > 0.0).then(|| Duration::from_secs_f64(f64::from(opts.producers) / opts.rate));
    let started = Instant::now();
    let mut i: u64 = 0;
    loop {
        // One clock read per record when unthrottled (it showed in the benchmark's profile).
        let (intended, now) = match interval {
            Some(iv) => {
                let at = started + iv.mul_f64(i as f64);
                if at > Instant::now() {
                    tokio::time::sleep_until(at.into()).await;
                }
                (at, Instant::now())
            }
            None => {
                let now = Instant::now();
                (now, now)
            }
        };
        let Some(measured) = run.next_send(now) else {
            break;
        };
        let value = if run.mode == Mode::E2e {
            // The intended send time, so e2e latency is corrected for coordinated omission too.
            let mut v = Vec::with_capacity(opts.record_size);
            let nanos = intended.duration_since(run.base).as_nanos() as u64;
            v.extend_from_slice(&nanos.to_le_bytes());
            v.push(u8::from(measured));
            v.extend_from_slice(&slice_of(&pool, i, opts.record_size.saturating_sub(9)));
            Bytes::from(v)
        } else {
            slice_of(&pool, i + u64::from(id) * 1_000_003, opts.record_size)
        };
        // The intended send time (so a set rate is corrected for coordinated omission) and
        // whether the record is measured, for the delivery report.
        let opaque =
            ((intended.duration_since(run.base).as_nanos() as u64) << 1) | u64::from(measured);
        let timestamp =
            TimestampMs(run.base_wall_ms + now.duration_since(run.base).as_millis() as i64);
        let record = ProducerRecord::new(&opts.topic)
            .value(value)
            .timestamp(timestamp);
        match producer.enqueue_with_opaque(record, opaque).await {
            Ok(()) => {
                run.sent_total.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                run.error(&e);
                if matches!(e, quiver_client::Error::Closed) {
                    break;
                }
            }
        }
        i += 1;
    }
    let _ = producer.flush().await;
    let _ = producer.close().await;
    let hist = sink.hist.lock().unwrap().clone();
    hist
}

/// A consumer and, when it reads a filled topic, the end offset it reads each partition to.
type Reader = (Consumer, Option<Vec<(TopicPartition, u64)>>);

type ConsumerTask = tokio::task::JoinHandle<Result<Histogram<u64>, String>>;

fn spawn_consumers(run: &Arc<Run>, consumers: Vec<Reader>) -> Vec<ConsumerTask> {
    consumers
        .into_iter()
        .map(|(c, target)| tokio::spawn(consumer_task(run.clone(), c, target)))
        .collect()
}

/// Consumers on disjoint sets of partitions, positioned. `until`: each stops after the records
/// up to these end offsets (consume mode); `None`: they run until `run.stop` (e2e).
async fn make_consumers(
    opts: &Opts,
    partitions: &[TopicPartition],
    until: Option<Vec<(TopicPartition, u64, u64)>>,
    from_beginning: bool,
) -> Result<Vec<Reader>, String> {
    let mut out = Vec::new();
    let n = opts.consumers.min(partitions.len() as u32).max(1) as usize;
    for c in 0..n {
        let mine: Vec<TopicPartition> = partitions
            .iter()
            .enumerate()
            .filter(|(i, _)| i % n == c)
            .map(|(_, tp)| tp.clone())
            .collect();
        let client = connect(opts).await?;
        let mut consumer = Consumer::new(
            client,
            ConsumerConfig::default()
                .fetch_max_wait(Duration::from_millis(100))
                .max_poll_records(100_000)
                .max_partition_fetch_bytes(4 << 20),
        );
        consumer.assign(mine.clone()).map_err(|e| e.to_string())?;
        if from_beginning {
            consumer.seek_to_beginning(&mine).await
        } else {
            consumer.seek_to_end(&mine).await
        }
        .map_err(|e| e.to_string())?;
        let target: Option<Vec<(TopicPartition, u64)>> = until.as_ref().map(|u| {
            u.iter()
                .filter(|(tp, _, _)| mine.contains(tp))
                .map(|(tp, _, e)| (tp.clone(), *e))
                .collect()
        });
        out.push((consumer, target));
    }
    Ok(out)
}

async fn consumer_task(
    run: Arc<Run>,
    mut consumer: Consumer,
    target: Option<Vec<(TopicPartition, u64)>>,
) -> Result<Histogram<u64>, String> {
    let mut hist = histogram();
    loop {
        // Done at the end offsets taken before reading, by position rather than by a count of
        // records: retention may delete the oldest segment between that snapshot and the read.
        if let Some(t) = &target {
            if t.iter()
                .all(|(tp, end)| consumer.position(tp).is_some_and(|p| p.0 >= *end))
            {
                break;
            }
        }
        if target.is_none() && run.stop.load(Ordering::Relaxed) {
            break;
        }
        let records = consumer
            .poll(Duration::from_millis(100))
            .await
            .map_err(|e| e.to_string())?;
        let now = Instant::now();
        for r in &records {
            run.received_total.fetch_add(1, Ordering::Relaxed);
            let bytes = r.value.as_ref().map_or(0, |v| v.len()) as u64
                + r.key.as_ref().map_or(0, |k| k.len()) as u64;
            match run.mode {
                Mode::E2e => {
                    let Some(v) = r.value.as_deref().filter(|v| v.len() >= 9) else {
                        continue;
                    };
                    let sent = u64::from_le_bytes(v[..8].try_into().expect("8 bytes"));
                    let measured = v[8] == 1;
                    if measured {
                        let at = now.duration_since(run.base).as_nanos() as u64;
                        let us = at.saturating_sub(sent) / 1000;
                        let _ = hist.record(us.clamp(1, hist.high()));
                        run.done_measured(bytes, now);
                    }
                }
                _ => {
                    if now >= run.measure_from {
                        run.done_measured(bytes, now);
                    }
                }
            }
        }
    }
    Ok(hist)
}

struct Progress {
    bar: indicatif::ProgressBar,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    fn finish(self) {
        self.task.abort();
        self.bar.finish_and_clear();
    }
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
fn progress(run: Arc<Run>) -> Progress {
    let opts = &run.opts;
    let (len, by_records) = match (run.mode, opts.records) {
        (_, Some(n)) => (n, true),
        (Mode::Consume, None) => (200_000, true),
        (_, None) => ((opts.warmup + opts.duration).as_millis() as u64, false),
    };
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(len),
        indicatif::ProgressDrawTarget::stderr(),
    );
    let template = if by_records {
        "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} records  {msg}"
    } else {
        "{spinner} [{elapsed_precise}] {bar:40} {msg}"
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let b = bar.clone();
    let task = tokio::spawn(async move {
        let mut last = (Instant::now(), 0u64, 0u64);
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = Instant::now();
            let records = run.records.load(Ordering::Relaxed);
            let bytes = run.bytes.load(Ordering::Relaxed);
            let dt = now.duration_since(last.0).as_secs_f64().max(1e-3);
            let rps = (records - last.1) as f64 / dt;
            let mbps = (bytes - last.2) as f64 / dt / 1e6;
            last = (now, records, bytes);
            if by_records {
                b.set_position(records);
            } else {
                b.set_position(now.duration_since(run.base).as_millis() as u64);
            }
            let phase = if now < run.measure_from {
                "warm-up "
            } else {
                ""
            };
            b.set_message(format!("{phase}{rps:.0} records/s  {mbps:.1} MB/s"));
        }
    });
    Progress { bar, task }
}

fn report(
    run: &Run,
    latency: &Histogram<u64>,
    partitions: usize,
    fill_note: Option<String>,
) -> Result<(), String> {
    let opts = &run.opts;
    let records = run.records.load(Ordering::Relaxed);
    let bytes = run.bytes.load(Ordering::Relaxed);
    let errors = run.errors.load(Ordering::Relaxed);
    let end = match run.last_done.load(Ordering::Relaxed) {
        0 => Instant::now(),
        nanos => run.base + Duration::from_nanos(nanos),
    };
    let seconds = end
        .saturating_duration_since(run.measure_from)
        .as_secs_f64()
        .max(1e-6);
    let rps = records as f64 / seconds;
    let mbps = bytes as f64 / seconds / 1e6;
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    let has_latency = run.mode != Mode::Consume && !latency.is_empty();
    let mode = match run.mode {
        Mode::Produce => "produce",
        Mode::Consume => "consume",
        Mode::E2e => "e2e",
        Mode::Probe => "probe",
    };
    let acks = match opts.acks {
        Acks::None => "0",
        Acks::Leader => "1",
        Acks::All => "all",
    };
    let first_error = run.first_error.lock().unwrap().clone();
    if opts.json {
        let latency_json = has_latency.then(|| {
            json!({
                "p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "p99_9": ms(0.999),
                "p99_99": ms(0.9999), "max": latency.max() as f64 / 1000.0,
                "mean": latency.mean() / 1000.0, "count": latency.len(),
            })
        });
        let out = json!({
            "mode": mode,
            "records": records,
            "bytes": bytes,
            "seconds": seconds,
            "records_per_sec": rps,
            "mb_per_sec": mbps,
            "latency_ms": latency_json,
            "errors": errors,
            "first_error": first_error,
            "config": {
                "topic": opts.topic, "partitions": partitions, "producers": opts.producers,
                "consumers": opts.consumers, "record_size": opts.record_size,
                "batch_size": opts.batch_size, "linger_ms": opts.linger.as_secs_f64() * 1000.0,
                "acks": acks, "compression": opts.compression.name(), "rate": opts.rate,
                "warmup_s": opts.warmup.as_secs_f64(),
                "duration_s": opts.records.is_none().then_some(opts.duration.as_secs_f64()),
                "target_records": opts.records, "max_in_flight": opts.max_in_flight,
                "coordinated_omission_corrected": opts.rate > 0.0,
            },
        });
        outln!("{out}");
    } else {
        outln!(
            "streambench {mode}: topic {} ({partitions} partitions), {} producer(s), {} consumer(s), \
             {} B records, acks={acks}, compression={}, batch {} B, linger {:?}, rate {}",
            opts.topic,
            opts.producers,
            opts.consumers,
            opts.record_size,
            opts.compression.name(),
            opts.batch_size,
            opts.linger,
            if opts.rate > 0.0 { format!("{} records/s", opts.rate) } else { "max".into() },
        );
        if let Some(note) = fill_note {
            outln!("  {note}");
        }
        outln!(
            "  {records} records, {:.1} MB in {seconds:.2} s: {rps:.0} records/s, {mbps:.2} MB/s",
            bytes as f64 / 1e6
        );
        if has_latency {
            let what = if run.mode == Mode::E2e {
                "send to receipt"
            } else {
                "send to ack"
            };
            let co = if opts.rate > 0.0 {
                ", from intended send times"
            } else {
                ""
            };
            outln!(
                "  latency ({what}{co}), ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  p99.99 {:.3}  max {:.3}",
                ms(0.5), ms(0.9), ms(0.99), ms(0.999), ms(0.9999), latency.max() as f64 / 1000.0
            );
        }
        if errors > 0 {
            outln!(
                "  errors: {errors} (first: {})",
                first_error.as_deref().unwrap_or("")
            );
        }
    }
    if records == 0 {
        return Err(match first_error {
            Some(e) => format!("no record was measured: {e}"),
            None => "no record was measured (is the warm-up longer than the run?)".into(),
        });
    }
    Ok(())
}
