//! The command line: what each subcommand takes, its help text, and the parsers of durations,
//! times and start positions.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use quiver_client::{Acks, Assignor, Compression, TimestampMs};

pub const ENCODING_HELP: &str = "\
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
pub struct Cli {
    /// Broker(s) to bootstrap from, comma-separated host:port.
    #[arg(
        long,
        short = 'b',
        env = "STREAMCTL_BOOTSTRAP",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    pub bootstrap: String,
    /// PEM file with the CA certificate(s) to trust. Default: ./data/tls/ca.pem (the
    /// development CA of a local streamd).
    #[arg(long, env = "STREAMCTL_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for brokers that require mutual TLS.
    #[arg(
        long,
        env = "STREAMCTL_CLIENT_CERT",
        global = true,
        requires = "client_key"
    )]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(
        long,
        env = "STREAMCTL_CLIENT_KEY",
        global = true,
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,
    /// How long one request may take (e.g. 30s, 500ms).
    #[arg(long, default_value = "30s", value_parser = parse_duration, global = true)]
    pub request_timeout: Duration,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
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
pub enum GroupCommand {
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

pub const RESET_HELP: &str = "\
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
pub struct ResetArgs {
    /// The group.
    pub name: String,
    /// The topic whose offsets move.
    #[arg(long, short = 't')]
    pub topic: String,
    /// Only this partition (repeatable; default: every partition of the topic).
    #[arg(long = "partition", short = 'p')]
    pub partitions: Vec<u32>,
    /// To the oldest retained record.
    #[arg(long)]
    pub to_earliest: bool,
    /// To the end: only records written from now on will be read.
    #[arg(long)]
    pub to_latest: bool,
    /// To this offset.
    #[arg(long, value_name = "N")]
    pub to_offset: Option<u64>,
    /// To the first record at or after this time (RFC 3339, e.g. 2024-05-01T12:00:00Z); to
    /// the end where no record is that recent.
    #[arg(long, value_name = "TIME", value_parser = parse_datetime)]
    pub to_datetime: Option<TimestampMs>,
    /// By N records from the committed offset (negative: back, to read again).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub shift_by: Option<i64>,
    /// Commit the new offsets (default: only show them).
    #[arg(long)]
    pub execute: bool,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// Topic to write to.
    pub topic: String,
    /// Read records from this file instead of stdin.
    #[arg(long, short = 'f')]
    pub file: Option<PathBuf>,
    /// Split each line at the first occurrence of SEP into key and value.
    #[arg(long, short = 'K')]
    pub key_separator: Option<String>,
    /// Header for every record, as KEY=VALUE (repeatable).
    #[arg(long = "header", short = 'H', value_parser = parse_key_value)]
    pub headers: Vec<(String, String)>,
    /// Write every record to this partition (default: by key, or spread when there is none).
    #[arg(long, short = 'p')]
    pub partition: Option<u32>,
    /// How many replicas must have each record: 0, 1 or all.
    #[arg(long, default_value = "all")]
    pub acks: Acks,
    /// Compression of record batches.
    #[arg(long, short = 'z', value_enum, default_value_t = CompressionArg::None)]
    pub compression: CompressionArg,
    /// How long a batch may wait for more records.
    #[arg(long, default_value = "5ms", value_parser = parse_duration)]
    pub linger: Duration,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum CompressionArg {
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
pub struct ConsumeArgs {
    /// Topic to read.
    pub topic: String,
    /// Where to start: beginning, end, an offset, or an RFC 3339 time
    /// (2024-05-01T12:00:00Z; the first record at or after it).
    #[arg(long, short = 'o', default_value = "beginning", value_parser = parse_from)]
    pub from: StartAt,
    /// Read only this partition (repeatable; default: every partition).
    #[arg(long = "partition", short = 'p')]
    pub partitions: Vec<u32>,
    /// Read as a member of this consumer group: the group splits the topic's partitions
    /// between its members and remembers (commits) how far they read; --from then only
    /// applies to partitions the group has no committed offset for (beginning or end).
    #[arg(long, short = 'g', conflicts_with = "partitions")]
    pub group: Option<String>,
    /// With --group: static membership. A stable id for this consumer (a host or pod name);
    /// restarted with the same id within the group's session timeout, it gets its partitions
    /// back without a rebalance, and on exit it does not leave the group (the partitions wait
    /// for it until the session timeout).
    #[arg(long, requires = "group")]
    pub instance_id: Option<String>,
    /// With --group: how the broker spreads partitions over the group's members. All members
    /// must agree; the first to join decides.
    #[arg(long, value_enum, requires = "group")]
    pub assignor: Option<AssignorArg>,
    /// Exit after printing this many records.
    #[arg(long, short = 'n')]
    pub max_messages: Option<u64>,
    /// Exit when no record arrives for this long (e.g. 5s, 500ms). Default: wait forever.
    #[arg(long, short = 't', value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Output format.
    #[arg(long, short = 'F', value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Text format: print KEY SEP VALUE (the inverse of produce --key-separator).
    #[arg(long, short = 'K')]
    pub key_separator: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AssignorArg {
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
pub enum Format {
    /// The value's bytes as they are, one record per line.
    Text,
    /// One JSON object per record and line (see below).
    Json,
}

#[derive(Clone, Debug)]
pub enum StartAt {
    Beginning,
    End,
    Offset(u64),
    Time(TimestampMs),
}

#[derive(Args, Debug, Clone, Copy)]
pub struct OutputArgs {
    /// Output format of the command.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
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
pub enum ClusterCommand {
    /// Brokers, controller and cluster id.
    Describe {
        #[command(flatten)]
        out: OutputArgs,
    },
}

pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got '{s}'")),
    }
}

/// `500ms`, `5s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
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

pub fn parse_datetime(s: &str) -> Result<TimestampMs, String> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("'{s}' is not an RFC 3339 time such as 2024-05-01T12:00:00Z ({e})"))?;
    Ok(TimestampMs((t.unix_timestamp_nanos() / 1_000_000) as i64))
}

pub fn parse_from(s: &str) -> Result<StartAt, String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
}
