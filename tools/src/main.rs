//! `streamctl`: produce, consume and administer a Quiver cluster from the shell.
//!
//! Errors are one line on stderr, `streamctl: <message>`, with exit code 1; usage errors exit
//! with 2.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use clap::{Args, Parser, Subcommand, ValueEnum};
use quiver_client::{
    Acks, Admin, AlterConfig, Assignor, Client, ClientConfig, ClientTls, Compression,
    ConfigResource, Consumer, ConsumerConfig, ConsumerRecord, NewTopic, Offset, OffsetReset,
    OffsetSpec, Producer, ProducerConfig, ProducerRecord, TimestampMs, TimestampType,
    TopicPartition,
};
use serde_json::{json, Map, Value};

/// `println!` that treats a closed stdout (`| head`) as the end of the output, not a crash.
macro_rules! outln {
    () => { emit(format_args!("")) };
    ($($arg:tt)*) => { emit(format_args!($($arg)*)) };
}

fn emit(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("streamctl: writing output: {e}");
        std::process::exit(1);
    }
}

const ENCODING_HELP: &str = "\
JSON output (--format json) prints one object per line:
  {\"topic\":\"t\",\"partition\":0,\"offset\":5,\"timestamp\":1700000000000,
   \"timestamp_type\":\"CreateTime\",\"key\":\"k\",\"value\":\"v\",
   \"headers\":[{\"key\":\"h\",\"value\":\"x\"}]}
Keys, values and header values that are valid UTF-8 appear as JSON strings (\"key\", \"value\");
bytes that are not valid UTF-8 appear instead as standard base64 (RFC 4648, with padding) under
\"key_base64\", \"value_base64\" (and \"value_base64\" in a header). A missing key or a tombstone
value is null. Nothing is ever replaced or lost: decoding the strings as UTF-8, or the base64
fields, gives back the exact bytes that were produced. The timestamp is milliseconds since the
Unix epoch.";

#[derive(Parser, Debug)]
#[command(
    name = "streamctl",
    version,
    about = "Produce, consume and administer a Quiver cluster.",
    long_about = "Produce, consume and administer a Quiver cluster.\n\n\
        With no options streamctl talks to a local streamd started with no flags: it connects \
        to 127.0.0.1:9092 and trusts the development CA that streamd writes to \
        ./data/tls/ca.pem (run streamctl from the directory streamd was started in, or pass \
        --ca-file)."
)]
struct Cli {
    /// Broker(s) to bootstrap from, comma-separated host:port.
    #[arg(
        long,
        short = 'b',
        env = "STREAMCTL_BOOTSTRAP",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    bootstrap: String,
    /// PEM file with the CA certificate(s) to trust. Default: ./data/tls/ca.pem (the
    /// development CA of a local streamd).
    #[arg(long, env = "STREAMCTL_CA_FILE", global = true)]
    ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for brokers that require mutual TLS.
    #[arg(
        long,
        env = "STREAMCTL_CLIENT_CERT",
        global = true,
        requires = "client_key"
    )]
    client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(
        long,
        env = "STREAMCTL_CLIENT_KEY",
        global = true,
        requires = "client_cert"
    )]
    client_key: Option<PathBuf>,
    /// How long one request may take (e.g. 30s, 500ms).
    #[arg(long, default_value = "30s", value_parser = parse_duration, global = true)]
    request_timeout: Duration,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write records: one per line of stdin (or --file).
    #[command(
        after_help = "Each line (without its trailing \\n) is one record's value; bytes are sent \
        as they are, so values need not be UTF-8. With --key-separator, the bytes before the first \
        separator are the key and the rest the value; a line without the separator has no key.\n\n\
        Example:\n  printf 'user-1:hello\\nuser-2:world\\n' | streamctl produce demo --key-separator : --header source=cli"
    )]
    Produce(ProduceArgs),
    /// Read records and print them, as text or JSON lines.
    #[command(after_help = ENCODING_HELP)]
    Consume(ConsumeArgs),
    /// Create, list, describe, alter, grow and delete topics.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Describe the cluster.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// List, describe, delete consumer groups and reset their offsets.
    #[command(subcommand)]
    Group(GroupCommand),
}

#[derive(Subcommand, Debug)]
enum GroupCommand {
    /// List consumer groups.
    List {
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Members, their partitions, committed offsets and lag of a group.
    Describe {
        name: String,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Delete a group that has no members, and its committed offsets.
    Delete {
        name: String,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Move a stopped group's committed offsets: a dry run that shows the change unless
    /// --execute is given.
    #[command(after_help = RESET_HELP)]
    ResetOffsets(ResetArgs),
}

const RESET_HELP: &str = "\
Without --execute nothing changes: the table (or JSON with --output json) shows each partition's
current committed offset and the one it would get. New offsets are kept within the partition's
retained records, [log start, log end]. --execute refuses, changing nothing, while the group has
members: stop its consumers first (a running member would overwrite the reset with its own
position).

Examples:
  streamctl group reset-offsets billing --topic orders --to-earliest
  streamctl group reset-offsets billing --topic orders --partition 0 --shift-by -100 --execute
  streamctl group reset-offsets billing --topic orders --to-datetime 2024-05-01T12:00:00Z --execute";

#[derive(Args, Debug)]
#[command(group(
    clap::ArgGroup::new("to")
        .required(true)
        .args(["to_earliest", "to_latest", "to_offset", "to_datetime", "shift_by"])
))]
struct ResetArgs {
    /// The group.
    name: String,
    /// The topic whose offsets move.
    #[arg(long, short = 't')]
    topic: String,
    /// Only this partition (repeatable; default: every partition of the topic).
    #[arg(long = "partition", short = 'p')]
    partitions: Vec<u32>,
    /// To the oldest retained record.
    #[arg(long)]
    to_earliest: bool,
    /// To the end: only records written from now on will be read.
    #[arg(long)]
    to_latest: bool,
    /// To this offset.
    #[arg(long, value_name = "N")]
    to_offset: Option<u64>,
    /// To the first record at or after this time (RFC 3339, e.g. 2024-05-01T12:00:00Z); to
    /// the end where no record is that recent.
    #[arg(long, value_name = "TIME", value_parser = parse_datetime)]
    to_datetime: Option<TimestampMs>,
    /// By N records from the committed offset (negative: back, to read again).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    shift_by: Option<i64>,
    /// Commit the new offsets (default: only show them).
    #[arg(long)]
    execute: bool,
    #[command(flatten)]
    out: OutputArgs,
}

#[derive(Args, Debug)]
struct ProduceArgs {
    /// Topic to write to.
    topic: String,
    /// Read records from this file instead of stdin.
    #[arg(long, short = 'f')]
    file: Option<PathBuf>,
    /// Split each line at the first occurrence of SEP into key and value.
    #[arg(long, short = 'K')]
    key_separator: Option<String>,
    /// Header for every record, as KEY=VALUE (repeatable).
    #[arg(long = "header", short = 'H', value_parser = parse_key_value)]
    headers: Vec<(String, String)>,
    /// Write every record to this partition (default: by key, or spread when there is none).
    #[arg(long, short = 'p')]
    partition: Option<u32>,
    /// How many replicas must have each record: 0, 1 or all.
    #[arg(long, default_value = "all")]
    acks: Acks,
    /// Compression of record batches.
    #[arg(long, short = 'z', value_enum, default_value_t = CompressionArg::None)]
    compression: CompressionArg,
    /// How long a batch may wait for more records.
    #[arg(long, default_value = "5ms", value_parser = parse_duration)]
    linger: Duration,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum CompressionArg {
    None,
    Lz4,
    Zstd,
}

impl std::convert::From<CompressionArg> for Compression {
    fn from(c: CompressionArg) -> Compression {
        match c {
            CompressionArg::None => Compression::None,
            CompressionArg::Lz4 => Compression::Lz4,
            CompressionArg::Zstd => Compression::Zstd,
        }
    }
}

#[derive(Args, Debug)]
struct ConsumeArgs {
    /// Topic to read.
    topic: String,
    /// Where to start: beginning, end, an offset, or an RFC 3339 time
    /// (2024-05-01T12:00:00Z; the first record at or after it).
    #[arg(long, short = 'o', default_value = "beginning", value_parser = parse_from)]
    from: StartAt,
    /// Read only this partition (repeatable; default: every partition).
    #[arg(long = "partition", short = 'p')]
    partitions: Vec<u32>,
    /// Read as a member of this consumer group: the group splits the topic's partitions
    /// between its members and remembers (commits) how far they read; --from then only
    /// applies to partitions the group has no committed offset for (beginning or end).
    #[arg(long, short = 'g', conflicts_with = "partitions")]
    group: Option<String>,
    /// With --group: static membership. A stable id for this consumer (a host or pod name);
    /// restarted with the same id within the group's session timeout, it gets its partitions
    /// back without a rebalance, and on exit it does not leave the group (the partitions wait
    /// for it until the session timeout).
    #[arg(long, requires = "group")]
    instance_id: Option<String>,
    /// With --group: how the broker spreads partitions over the group's members. All members
    /// must agree; the first to join decides.
    #[arg(long, value_enum, requires = "group")]
    assignor: Option<AssignorArg>,
    /// Exit after printing this many records.
    #[arg(long, short = 'n')]
    max_messages: Option<u64>,
    /// Exit when no record arrives for this long (e.g. 5s, 500ms). Default: wait forever.
    #[arg(long, short = 't', value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Output format.
    #[arg(long, short = 'F', value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Text format: print KEY SEP VALUE (the inverse of produce --key-separator).
    #[arg(long, short = 'K')]
    key_separator: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum AssignorArg {
    /// Contiguous ranges of each topic's partitions.
    Range,
    /// Partitions dealt to members in turn.
    Roundrobin,
    /// Balanced, moving as few partitions as possible (the broker's default).
    Sticky,
}

impl From<AssignorArg> for Assignor {
    fn from(a: AssignorArg) -> Assignor {
        match a {
            AssignorArg::Range => Assignor::Range,
            AssignorArg::Roundrobin => Assignor::RoundRobin,
            AssignorArg::Sticky => Assignor::Sticky,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    /// The value's bytes as they are, one record per line.
    Text,
    /// One JSON object per record and line (see below).
    Json,
}

#[derive(Clone, Debug)]
enum StartAt {
    Beginning,
    End,
    Offset(u64),
    Time(TimestampMs),
}

#[derive(Args, Debug, Clone, Copy)]
struct OutputArgs {
    /// Output format of the command.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        /// Partition count (default: the broker's default_partitions).
        #[arg(long, short = 'p')]
        partitions: Option<u32>,
        /// Replication factor (default: the broker's).
        #[arg(long, short = 'r')]
        replication_factor: Option<u16>,
        /// Topic configuration KEY=VALUE (repeatable), e.g. retention.ms=86400000.
        #[arg(long = "config", short = 'c', value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// List topics.
    List {
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Partitions (leader, replicas, ISR, start and end offsets) and configuration of a topic.
    Describe {
        name: String,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Delete a topic and its records.
    Delete {
        name: String,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Change a topic's configuration.
    Alter {
        name: String,
        /// Set KEY=VALUE on the topic (repeatable).
        #[arg(long = "set", value_parser = parse_key_value)]
        set: Vec<(String, String)>,
        /// Remove the topic's value of KEY, back to the default (repeatable).
        #[arg(long = "delete")]
        delete: Vec<String>,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Grow a topic to a new total number of partitions.
    AddPartitions {
        name: String,
        /// The new total partition count.
        #[arg(long, short = 'p')]
        total: u32,
        #[command(flatten)]
        out: OutputArgs,
    },
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// Brokers, controller and cluster id.
    Describe {
        #[command(flatten)]
        out: OutputArgs,
    },
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got '{s}'")),
    }
}

/// `500ms`, `5s`, `2m`, `1h`, or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (try 500ms, 5s, 2m, 1h)"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        other => {
            return Err(format!(
                "unknown unit '{other}' in '{s}' (use ms, s, m or h)"
            ))
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("'{s}' is not a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_datetime(s: &str) -> Result<TimestampMs, String> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("'{s}' is not an RFC 3339 time such as 2024-05-01T12:00:00Z ({e})"))?;
    Ok(TimestampMs((t.unix_timestamp_nanos() / 1_000_000) as i64))
}

fn parse_from(s: &str) -> Result<StartAt, String> {
    match s {
        "beginning" | "earliest" | "start" => return Ok(StartAt::Beginning),
        "end" | "latest" => return Ok(StartAt::End),
        _ => {}
    }
    if let Ok(n) = s.parse::<u64>() {
        return Ok(StartAt::Offset(n));
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("'{s}' is not beginning, end, an offset or an RFC 3339 time ({e})"))?;
    let ms = t.unix_timestamp_nanos() / 1_000_000;
    Ok(StartAt::Time(TimestampMs(ms as i64)))
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => fail(&format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => {}
        Err(e) => fail(&e),
    }
}

fn fail(message: &str) -> ! {
    // One line, whatever the message holds.
    let line = message.replace('\n', " ");
    eprintln!("streamctl: {line}");
    std::process::exit(1);
}

type CliResult<T = ()> = Result<T, String>;

async fn connect(cli: &Cli) -> CliResult<Client> {
    let mut tls = match &cli.ca_file {
        Some(path) => ClientTls::from_ca_file(path).map_err(|e| e.to_string())?,
        None => ClientTls::dev_default().map_err(|e| e.to_string())?,
    };
    if let (Some(cert), Some(key)) = (&cli.client_cert, &cli.client_key) {
        tls = tls.with_client_cert(cert, key).map_err(|e| e.to_string())?;
    }
    let mut config = ClientConfig::new(&cli.bootstrap)
        .tls(tls)
        .request_timeout(cli.request_timeout)
        .client_id(format!("streamctl/{}", env!("CARGO_PKG_VERSION")));
    config.connect.connect_timeout = cli.request_timeout.min(Duration::from_secs(5));
    Client::connect(config)
        .await
        .map_err(|e| format!("cannot reach a broker at {}: {e}", cli.bootstrap))
}

async fn run(cli: Cli) -> CliResult {
    let client = connect(&cli).await?;
    let result = match &cli.command {
        Command::Produce(a) => produce(&client, a).await,
        Command::Consume(a) => consume(&client, a).await,
        Command::Topic(t) => topic(&client, t).await,
        Command::Cluster(ClusterCommand::Describe { out }) => cluster(&client, *out).await,
        Command::Group(g) => group(&client, g).await,
    };
    client.close().await;
    result
}

async fn produce(client: &Client, a: &ProduceArgs) -> CliResult {
    let config = ProducerConfig::default()
        .acks(a.acks)
        .compression(a.compression.into())
        .linger(a.linger)
        .delivery_timeout(Duration::from_secs(60))
        .max_block(Duration::from_secs(60));
    let producer = Producer::new(client.clone(), config).map_err(|e| e.to_string())?;
    let input: Box<dyn Read> = match &a.file {
        Some(p) => Box::new(
            std::fs::File::open(p).map_err(|e| format!("cannot open {}: {e}", p.display()))?,
        ),
        None => Box::new(std::io::stdin().lock()),
    };
    let mut reader = BufReader::with_capacity(1 << 20, input);
    let separator = a.key_separator.as_ref().map(|s| s.as_bytes().to_vec());
    if separator.as_ref().is_some_and(|s| s.is_empty()) {
        return Err("--key-separator must not be empty".into());
    }
    let mut pending = VecDeque::new();
    let mut line = Vec::new();
    let mut count = 0u64;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("reading input: {e}"))?;
        if n == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        let mut record = ProducerRecord::new(&a.topic);
        match separator
            .as_deref()
            .and_then(|sep| find(&line, sep).map(|i| (i, sep.len())))
        {
            Some((i, len)) => {
                record = record
                    .key(Bytes::copy_from_slice(&line[..i]))
                    .value(Bytes::copy_from_slice(&line[i + len..]));
            }
            None => record = record.value(Bytes::copy_from_slice(&line)),
        }
        for (k, v) in &a.headers {
            record = record.header(k.clone(), Bytes::copy_from_slice(v.as_bytes()));
        }
        if let Some(p) = a.partition {
            record = record.partition(p);
        }
        let delivery = producer.enqueue(record).await.map_err(|e| e.to_string())?;
        pending.push_back(delivery);
        count += 1;
        // Bound what is held while streaming a large input.
        if pending.len() >= 100_000 {
            let d = pending.pop_front().expect("not empty");
            d.await.map_err(|e| e.to_string())?;
        }
    }
    producer.flush().await.map_err(|e| e.to_string())?;
    for d in pending {
        d.await.map_err(|e| e.to_string())?;
    }
    producer.close().await.map_err(|e| e.to_string())?;
    let verb = if a.acks == Acks::None {
        "sent"
    } else {
        "produced"
    };
    let s = if count == 1 { "" } else { "s" };
    eprintln!("streamctl: {verb} {count} record{s} to {}", a.topic);
    Ok(())
}

/// `consume --group`: subscribe, print, and commit what was printed.
async fn consume_group(client: &Client, a: &ConsumeArgs, group: &str) -> CliResult {
    let offset_reset = match a.from {
        StartAt::Beginning => OffsetReset::Earliest,
        StartAt::End => OffsetReset::Latest,
        _ => {
            return Err(
                "with --group, --from can only be beginning or end (the group's committed \
                 offsets say where to resume)"
                    .into(),
            )
        }
    };
    let mut config = ConsumerConfig::default()
        .group_id(group)
        .auto_offset_reset(offset_reset)
        .fetch_max_wait(Duration::from_millis(500));
    if let Some(id) = &a.instance_id {
        config = config.instance_id(id);
    }
    if let Some(assignor) = a.assignor {
        config = config.assignor(assignor.into());
    }
    let mut consumer = Consumer::new(client.clone(), config);
    consumer
        .subscribe(vec![a.topic.clone()])
        .await
        .map_err(|e| e.to_string())?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut printed = 0u64;
    let mut last_record = Instant::now();
    let separator = a.key_separator.as_deref().map(str::as_bytes);
    let mut unprinted: Vec<(TopicPartition, Offset)> = Vec::new();
    let mut write_error = None;
    'outer: loop {
        let wait = match a.timeout {
            Some(t) => {
                let left = t.saturating_sub(last_record.elapsed());
                if left.is_zero() {
                    break;
                }
                left.min(Duration::from_secs(1))
            }
            None => Duration::from_secs(1),
        };
        let records = consumer.poll(wait).await.map_err(|e| e.to_string())?;
        if !records.is_empty() {
            last_record = Instant::now();
        }
        for (i, r) in records.iter().enumerate() {
            if a.max_messages.is_some_and(|m| printed >= m) {
                // Not printed: the group resumes from the first of these, per partition.
                for r in &records[i..] {
                    let tp = TopicPartition::new(&*r.topic, r.partition.0);
                    if !unprinted.iter().any(|(t, _)| *t == tp) {
                        unprinted.push((tp, r.offset));
                    }
                }
                break 'outer;
            }
            let written = match a.format {
                Format::Text => write_text(&mut out, r, separator),
                Format::Json => write_json(&mut out, r),
            };
            if let Err(e) = written {
                write_error = Some(e);
                break 'outer;
            }
            printed += 1;
        }
        if let Err(e) = out.flush() {
            write_error = Some(e);
            break;
        }
        if a.max_messages.is_some_and(|m| printed >= m) {
            break;
        }
    }
    let _ = out.flush();
    for (tp, offset) in unprinted {
        consumer.seek(&tp, offset).map_err(|e| e.to_string())?;
    }
    // Commits the positions (everything printed) and leaves the group.
    consumer.close().await.map_err(|e| e.to_string())?;
    match write_error {
        Some(e) => broken_pipe_ok(e),
        None => Ok(()),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn consume(client: &Client, a: &ConsumeArgs) -> CliResult {
    if let Some(group) = &a.group {
        return consume_group(client, a, group).await;
    }
    let offset_reset = match a.from {
        StartAt::End => OffsetReset::Latest,
        _ => OffsetReset::Earliest,
    };
    let mut consumer = Consumer::new(
        client.clone(),
        ConsumerConfig::default()
            .auto_offset_reset(offset_reset)
            .fetch_max_wait(Duration::from_millis(500)),
    );
    let topic = client.topic(&a.topic).await.map_err(|e| e.to_string())?;
    let count = topic.partitions.len() as u32;
    let tps: Vec<TopicPartition> = if a.partitions.is_empty() {
        (0..count)
            .map(|p| TopicPartition::new(&a.topic, p))
            .collect()
    } else {
        for p in &a.partitions {
            if *p >= count {
                return Err(format!(
                    "topic '{}' has {count} partitions; partition {p} does not exist",
                    a.topic
                ));
            }
        }
        a.partitions
            .iter()
            .map(|p| TopicPartition::new(&a.topic, *p))
            .collect()
    };
    consumer.assign(tps.clone()).map_err(|e| e.to_string())?;
    match &a.from {
        StartAt::Beginning => consumer.seek_to_beginning(&tps).await,
        StartAt::End => consumer.seek_to_end(&tps).await,
        StartAt::Offset(o) => tps.iter().try_for_each(|tp| consumer.seek(tp, Offset(*o))),
        StartAt::Time(t) => consumer.seek_to_timestamp(&tps, *t).await,
    }
    .map_err(|e| e.to_string())?;

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut printed = 0u64;
    let mut last_record = Instant::now();
    let separator = a.key_separator.as_deref().map(str::as_bytes);
    'outer: loop {
        if a.max_messages.is_some_and(|m| printed >= m) {
            break;
        }
        let wait = match a.timeout {
            Some(t) => {
                let left = t.saturating_sub(last_record.elapsed());
                if left.is_zero() {
                    break;
                }
                left.min(Duration::from_secs(1))
            }
            None => Duration::from_secs(1),
        };
        let records = consumer.poll(wait).await.map_err(|e| e.to_string())?;
        if !records.is_empty() {
            last_record = Instant::now();
        }
        for r in &records {
            let written = match a.format {
                Format::Text => write_text(&mut out, r, separator),
                Format::Json => write_json(&mut out, r),
            };
            if let Err(e) = written {
                return broken_pipe_ok(e);
            }
            printed += 1;
            if a.max_messages.is_some_and(|m| printed >= m) {
                break 'outer;
            }
        }
        if let Err(e) = out.flush() {
            return broken_pipe_ok(e);
        }
    }
    if let Err(e) = out.flush() {
        return broken_pipe_ok(e);
    }
    Ok(())
}

/// A reader that went away (`| head`) ends the output; that is not an error.
fn broken_pipe_ok(e: std::io::Error) -> CliResult {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(format!("writing output: {e}"))
    }
}

fn write_text(
    out: &mut impl Write,
    r: &ConsumerRecord,
    separator: Option<&[u8]>,
) -> std::io::Result<()> {
    if let Some(sep) = separator {
        if let Some(k) = &r.key {
            out.write_all(k)?;
        }
        out.write_all(sep)?;
    }
    if let Some(v) = &r.value {
        out.write_all(v)?;
    }
    out.write_all(b"\n")
}

/// `name` as a string when the bytes are UTF-8, else `name_base64`; null when absent.
fn put_bytes(obj: &mut Map<String, Value>, name: &str, bytes: Option<&[u8]>) {
    match bytes {
        None => {
            obj.insert(name.to_string(), Value::Null);
        }
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => {
                obj.insert(name.to_string(), Value::String(s.to_string()));
            }
            Err(_) => {
                obj.insert(
                    format!("{name}_base64"),
                    Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
                );
            }
        },
    }
}

fn record_json(r: &ConsumerRecord) -> Value {
    let mut obj = Map::new();
    obj.insert("topic".into(), json!(&*r.topic));
    obj.insert("partition".into(), json!(r.partition.0));
    obj.insert("offset".into(), json!(r.offset.0));
    obj.insert("timestamp".into(), json!(r.timestamp.0));
    obj.insert(
        "timestamp_type".into(),
        json!(match r.timestamp_type {
            TimestampType::CreateTime => "CreateTime",
            TimestampType::LogAppendTime => "LogAppendTime",
        }),
    );
    put_bytes(&mut obj, "key", r.key.as_deref());
    put_bytes(&mut obj, "value", r.value.as_deref());
    let headers: Vec<Value> = r
        .headers
        .iter()
        .map(|h| {
            let mut o = Map::new();
            o.insert("key".into(), json!(h.key));
            put_bytes(&mut o, "value", Some(&h.value));
            Value::Object(o)
        })
        .collect();
    obj.insert("headers".into(), Value::Array(headers));
    Value::Object(obj)
}

fn write_json(out: &mut impl Write, r: &ConsumerRecord) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, &record_json(r))?;
    out.write_all(b"\n")
}

fn print_json(v: &impl serde::Serialize) -> CliResult {
    let s = serde_json::to_string_pretty(v).map_err(|e| e.to_string())?;
    outln!("{s}");
    Ok(())
}

async fn topic(client: &Client, cmd: &TopicCommand) -> CliResult {
    let admin = Admin::new(client.clone());
    let e = |e: quiver_client::Error| e.to_string();
    match cmd {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
            out,
        } => {
            let mut t = NewTopic {
                name: name.clone(),
                partitions: *partitions,
                replication_factor: *replication_factor,
                ..NewTopic::default()
            };
            for (k, v) in configs {
                t = t.config(k.clone(), v.clone());
            }
            admin.create_topic(t).await.map_err(e)?;
            let d = admin.describe_topic(name).await.map_err(e)?;
            match out.output {
                Output::Json => print_json(&json!({"created": name, "topic": d})),
                Output::Text => {
                    outln!(
                        "created topic {name} with {} partition{}",
                        d.partitions.len(),
                        if d.partitions.len() == 1 { "" } else { "s" }
                    );
                    Ok(())
                }
            }
        }
        TopicCommand::List { out } => {
            let topics = admin.list_topics().await.map_err(e)?;
            match out.output {
                Output::Json => print_json(&topics),
                Output::Text => {
                    let rows: Vec<Vec<String>> = topics
                        .iter()
                        .map(|t| {
                            let rf = t.partitions.first().map_or(0, |p| p.replicas.len());
                            vec![
                                t.name.clone(),
                                t.partitions.len().to_string(),
                                rf.to_string(),
                            ]
                        })
                        .collect();
                    print_table(&["NAME", "PARTITIONS", "REPLICAS"], &rows);
                    Ok(())
                }
            }
        }
        TopicCommand::Describe { name, out } => {
            let d = admin.describe_topic(name).await.map_err(e)?;
            match out.output {
                Output::Json => print_json(&d),
                Output::Text => {
                    outln!("NAME        {}", d.name);
                    outln!("ID          {}", d.id);
                    outln!("PARTITIONS  {}", d.partitions.len());
                    outln!();
                    let ids = |v: &[quiver_client::BrokerId]| {
                        v.iter()
                            .map(|b| b.0.to_string())
                            .collect::<Vec<_>>()
                            .join(",")
                    };
                    let opt = |o: Option<Offset>| o.map_or("-".to_string(), |o| o.0.to_string());
                    let rows: Vec<Vec<String>> = d
                        .partitions
                        .iter()
                        .map(|p| {
                            vec![
                                p.partition.0.to_string(),
                                p.leader.map_or("-".into(), |l| l.0.to_string()),
                                p.leader_shard.map_or("-".into(), |s| s.to_string()),
                                ids(&p.replicas),
                                ids(&p.isr),
                                opt(p.start_offset),
                                opt(p.end_offset),
                            ]
                        })
                        .collect();
                    print_table(
                        &[
                            "PARTITION",
                            "LEADER",
                            "SHARD",
                            "REPLICAS",
                            "ISR",
                            "START",
                            "END",
                        ],
                        &rows,
                    );
                    outln!();
                    let rows: Vec<Vec<String>> = d
                        .configs
                        .iter()
                        .map(|c| {
                            vec![
                                c.name.clone(),
                                c.value.clone().unwrap_or_else(|| "-".into()),
                                c.source.clone(),
                            ]
                        })
                        .collect();
                    print_table(&["CONFIG", "VALUE", "SOURCE"], &rows);
                    for c in &d.configs {
                        if let Some(note) = &c.note {
                            outln!("note: {}: {note}", c.name);
                        }
                    }
                    Ok(())
                }
            }
        }
        TopicCommand::Delete { name, out } => {
            admin.delete_topic(name).await.map_err(e)?;
            match out.output {
                Output::Json => print_json(&json!({ "deleted": name })),
                Output::Text => {
                    outln!("deleted topic {name}");
                    Ok(())
                }
            }
        }
        TopicCommand::Alter {
            name,
            set,
            delete,
            out,
        } => {
            if set.is_empty() && delete.is_empty() {
                return Err("nothing to change: give --set KEY=VALUE or --delete KEY".into());
            }
            let mut changes: Vec<AlterConfig> = set
                .iter()
                .map(|(k, v)| AlterConfig::set(k.clone(), v.clone()))
                .collect();
            changes.extend(delete.iter().map(|k| AlterConfig::delete(k.clone())));
            admin
                .alter_configs(ConfigResource::Topic(name.clone()), changes)
                .await
                .map_err(e)?;
            let configs = admin
                .describe_configs(ConfigResource::Topic(name.clone()))
                .await
                .map_err(e)?;
            match out.output {
                Output::Json => print_json(&json!({ "altered": name, "configs": configs })),
                Output::Text => {
                    outln!("altered topic {name}");
                    Ok(())
                }
            }
        }
        TopicCommand::AddPartitions { name, total, out } => {
            admin.create_partitions(name, *total).await.map_err(e)?;
            match out.output {
                Output::Json => print_json(&json!({ "topic": name, "partitions": total })),
                Output::Text => {
                    outln!("topic {name} now has {total} partitions");
                    Ok(())
                }
            }
        }
    }
}

async fn cluster(client: &Client, out: OutputArgs) -> CliResult {
    let admin = Admin::new(client.clone());
    let c = admin.describe_cluster().await.map_err(|e| e.to_string())?;
    match out.output {
        Output::Json => print_json(&c),
        Output::Text => {
            outln!(
                "CLUSTER     {}",
                c.cluster_id.as_deref().unwrap_or("(no id)")
            );
            outln!(
                "CONTROLLER  {}",
                c.controller.map_or("-".into(), |b| b.0.to_string())
            );
            outln!();
            let rows: Vec<Vec<String>> = c
                .brokers
                .iter()
                .map(|b| {
                    vec![
                        b.id.to_string(),
                        b.address(),
                        if Some(b.id) == c.controller.map(|c| c.0) {
                            "yes".into()
                        } else {
                            "".into()
                        },
                    ]
                })
                .collect();
            print_table(&["BROKER", "ADDRESS", "CONTROLLER"], &rows);
            Ok(())
        }
    }
}

async fn group(client: &Client, cmd: &GroupCommand) -> CliResult {
    let admin = Admin::new(client.clone());
    let e = |e: quiver_client::Error| e.to_string();
    match cmd {
        GroupCommand::List { out } => {
            let groups = admin.list_groups().await.map_err(e)?;
            match out.output {
                Output::Json => print_json(&groups),
                Output::Text => {
                    let rows: Vec<Vec<String>> = groups
                        .iter()
                        .map(|g| vec![g.group_id.clone(), g.state.clone()])
                        .collect();
                    print_table(&["GROUP", "STATE"], &rows);
                    Ok(())
                }
            }
        }
        GroupCommand::Describe { name, out } => {
            let g = admin.describe_group(name).await.map_err(e)?;
            match out.output {
                Output::Json => print_json(&g),
                Output::Text => {
                    outln!("GROUP     {}", g.group_id);
                    outln!("STATE     {}", g.state);
                    outln!("ASSIGNOR  {}", g.assignor.as_deref().unwrap_or("-"));
                    outln!("EPOCH     {}", g.group_epoch);
                    outln!("MEMBERS   {}", g.members.len());
                    if !g.members.is_empty() {
                        outln!();
                        let rows: Vec<Vec<String>> = g
                            .members
                            .iter()
                            .map(|m| {
                                vec![
                                    m.member_id.clone(),
                                    m.instance_id.clone().unwrap_or_else(|| "-".into()),
                                    m.client_host.clone().unwrap_or_default(),
                                    m.member_epoch.to_string(),
                                    partition_list(&m.assigned),
                                ]
                            })
                            .collect();
                        print_table(
                            &["MEMBER", "INSTANCE", "HOST", "EPOCH", "PARTITIONS"],
                            &rows,
                        );
                    }
                    outln!();
                    let opt = |o: Option<u64>| o.map_or("-".to_string(), |o| o.to_string());
                    let rows: Vec<Vec<String>> = g
                        .offsets
                        .iter()
                        .map(|o| {
                            vec![
                                o.topic.clone(),
                                o.partition.to_string(),
                                opt(o.committed),
                                opt(o.end),
                                opt(o.lag),
                                o.member_id.clone().unwrap_or_else(|| "-".into()),
                            ]
                        })
                        .collect();
                    print_table(
                        &["TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "MEMBER"],
                        &rows,
                    );
                    Ok(())
                }
            }
        }
        GroupCommand::ResetOffsets(r) => reset_offsets(&admin, r).await,
        GroupCommand::Delete { name, out } => {
            admin.delete_group(name).await.map_err(e)?;
            match out.output {
                Output::Json => print_json(&json!({ "deleted": name })),
                Output::Text => {
                    outln!("deleted group {name}");
                    Ok(())
                }
            }
        }
    }
}

/// `orders:0,1 payments:3`
fn partition_list(assigned: &[(String, Vec<u32>)]) -> String {
    assigned
        .iter()
        .map(|(t, ps)| {
            let ps: Vec<String> = ps.iter().map(u32::to_string).collect();
            format!("{t}:{}", ps.join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// One partition of a reset plan.
#[derive(serde::Serialize)]
struct Reset {
    topic: String,
    partition: u32,
    /// The committed offset now; `None`: nothing committed.
    current: Option<u64>,
    new: u64,
}

/// `group reset-offsets`: works out each partition's new offset, shows the plan, and with
/// `--execute` commits it from outside the group (which the broker allows only while the
/// group has no members).
async fn reset_offsets(admin: &Admin, r: &ResetArgs) -> CliResult {
    let e = |e: quiver_client::Error| e.to_string();
    let group = &r.name;
    let topic = admin.describe_topic(&r.topic).await.map_err(e)?;
    let count = topic.partitions.len() as u32;
    let mut partitions: Vec<u32> = if r.partitions.is_empty() {
        (0..count).collect()
    } else {
        r.partitions.clone()
    };
    partitions.sort_unstable();
    partitions.dedup();
    if let Some(p) = partitions.iter().find(|p| **p >= count) {
        return Err(format!(
            "topic '{}' has {count} partitions; partition {p} does not exist",
            r.topic
        ));
    }
    if r.execute {
        match admin.describe_group(group).await {
            Ok(g) if !g.members.is_empty() => {
                return Err(format!(
                    "group '{group}' has {} active member{}; stop its consumers before resetting \
                     its offsets (nothing was changed)",
                    g.members.len(),
                    if g.members.len() == 1 { "" } else { "s" }
                ))
            }
            Ok(_) => {}
            // A group that never committed: offsets may be set for it before it starts.
            Err(err) if err.code() == Some(quiver_client::ErrorCode::GroupIdNotFound) => {}
            Err(err) => return Err(err.to_string()),
        }
    }
    let committed: std::collections::HashMap<TopicPartition, u64> = admin
        .list_group_offsets(group)
        .await
        .map_err(e)?
        .into_iter()
        .map(|(tp, o)| (tp, o.offset.0))
        .collect();
    let by_time = match r.to_datetime {
        Some(t) => {
            let asked: Vec<(TopicPartition, OffsetSpec)> = partitions
                .iter()
                .map(|p| (TopicPartition::new(&r.topic, *p), OffsetSpec::Timestamp(t)))
                .collect();
            admin.list_offsets(&asked).await.map_err(e)?
        }
        None => Vec::new(),
    };
    let mut plan = Vec::with_capacity(partitions.len());
    for p in partitions {
        let tp = TopicPartition::new(&r.topic, p);
        let d = &topic.partitions[p as usize];
        let (start, end) = match (d.start_offset, d.end_offset) {
            (Some(s), Some(e)) => (s.0, e.0),
            _ => return Err(format!("{tp} has no known offsets (no leader?); try again")),
        };
        let current = committed.get(&tp).copied();
        let wanted: i128 = if r.to_earliest {
            i128::from(start)
        } else if r.to_latest {
            i128::from(end)
        } else if let Some(o) = r.to_offset {
            i128::from(o)
        } else if r.to_datetime.is_some() {
            let found = by_time.iter().find(|(t, _)| *t == tp).and_then(|(_, o)| *o);
            i128::from(found.map_or(end, |o| o.0))
        } else if let Some(n) = r.shift_by {
            let c = current.ok_or_else(|| {
                format!(
                    "{tp} has no committed offset in group '{group}' to shift from; use \
                     --to-earliest, --to-latest, --to-offset or --to-datetime"
                )
            })?;
            i128::from(c) + i128::from(n)
        } else {
            unreachable!("clap requires one of the --to options")
        };
        let new = wanted.clamp(i128::from(start), i128::from(end)) as u64;
        plan.push(Reset {
            topic: r.topic.clone(),
            partition: p,
            current,
            new,
        });
    }
    if r.execute {
        let offsets: Vec<(TopicPartition, Offset)> = plan
            .iter()
            .map(|x| (TopicPartition::new(&x.topic, x.partition), Offset(x.new)))
            .collect();
        admin
            .alter_group_offsets(group, &offsets)
            .await
            .map_err(e)?;
    }
    match r.out.output {
        Output::Json => print_json(&json!({
            "group": group,
            "executed": r.execute,
            "partitions": plan,
        }))?,
        Output::Text => {
            let rows: Vec<Vec<String>> = plan
                .iter()
                .map(|x| {
                    vec![
                        x.topic.clone(),
                        x.partition.to_string(),
                        x.current.map_or("-".into(), |c| c.to_string()),
                        x.new.to_string(),
                    ]
                })
                .collect();
            print_table(&["TOPIC", "PARTITION", "CURRENT", "NEW"], &rows);
        }
    }
    if r.execute {
        eprintln!(
            "streamctl: reset {} partition{} of group {group}",
            plan.len(),
            if plan.len() == 1 { "" } else { "s" }
        );
    } else {
        eprintln!("streamctl: dry run, nothing changed; add --execute to commit these offsets");
    }
    Ok(())
}

fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        outln!("{}", s.trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn from_accepts_names_offsets_and_rfc3339_times() {
        assert!(matches!(
            parse_from("beginning").unwrap(),
            StartAt::Beginning
        ));
        assert!(matches!(parse_from("end").unwrap(), StartAt::End));
        assert!(matches!(parse_from("42").unwrap(), StartAt::Offset(42)));
        match parse_from("2024-05-01T12:00:00.250+02:00").unwrap() {
            StartAt::Time(t) => assert_eq!(t.0, 1_714_557_600_250),
            other => panic!("{other:?}"),
        }
        assert!(parse_from("yesterday").is_err());
    }

    #[test]
    fn json_uses_strings_for_utf8_and_base64_otherwise() {
        let r = ConsumerRecord {
            topic: "t".into(),
            partition: quiver_client::PartitionId(1),
            offset: Offset(2),
            timestamp: TimestampMs(3),
            timestamp_type: TimestampType::CreateTime,
            key: Some(Bytes::from_static("ключ".as_bytes())),
            value: Some(Bytes::from_static(&[0xff, 0x00])),
            headers: vec![quiver_client::Header::new("h", Bytes::from_static(&[0xc3]))],
        };
        let v = record_json(&r);
        assert_eq!(v["key"], "ключ");
        assert_eq!(v["value_base64"], "/wA=");
        assert!(v.get("value").is_none());
        assert_eq!(v["headers"][0]["value_base64"], "ww==");
        let tomb = ConsumerRecord {
            key: None,
            value: None,
            headers: vec![],
            ..r
        };
        let v = record_json(&tomb);
        assert!(v["key"].is_null() && v["value"].is_null());
    }
}
