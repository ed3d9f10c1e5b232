//! The command line: what each subcommand takes, its help text, and the parsers of durations,
//! separators and output formats. Flags mean one thing everywhere: `-p`/`--partition` one
//! partition, `--partitions` a count, `-o`/`--output` the output format, `-t`/`--topic` a
//! topic, `-K` a key separator, `-H` a header.

use std::path::PathBuf;
use std::time::Duration;

pub use quiver_tools::parse_duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use quiver_client::client::parse_mechanism;
use quiver_client::{Acks, AclOperation, Assignor, Compression, ScramMechanism, TimestampMs};

use crate::from::{parse_from, StartAt, FROM_HELP};
use crate::text::Template;

#[derive(Parser, Debug)]
#[command(
    name = "streamctl",
    version,
    about = "Produce, consume and administer a Quiver cluster.",
    long_about = "Produce, consume and administer a Quiver cluster.\n\n\
        With no options streamctl talks to a local streamd started with no flags: it connects \
        to 127.0.0.1:9092 and trusts the development CA that streamd writes to \
        ./data/tls/ca.pem (run streamctl from the directory streamd was started in, or pass \
        --ca-file).\n\n\
        A broker that requires authentication takes --user with its password from \
        --password-file (the file's first line), the STREAMCTL_PASSWORD environment variable, \
        or a prompt when stdin is a terminal."
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
    /// SASL SCRAM user to log in as, for brokers that require authentication. Its password
    /// comes from --password-file, else STREAMCTL_PASSWORD, else a prompt (stdin a terminal).
    #[arg(long, env = "STREAMCTL_USER", global = true, value_name = "NAME")]
    pub user: Option<String>,
    /// File whose first line is --user's password.
    #[arg(
        long,
        env = "STREAMCTL_PASSWORD_FILE",
        global = true,
        value_name = "PATH"
    )]
    pub password_file: Option<PathBuf>,
    /// SCRAM mechanism of --user: SCRAM-SHA-512 or SCRAM-SHA-256.
    #[arg(
        long,
        env = "STREAMCTL_SASL_MECHANISM",
        global = true,
        value_name = "MECHANISM",
        default_value = "SCRAM-SHA-512",
        value_parser = parse_mechanism
    )]
    pub sasl_mechanism: ScramMechanism,
    /// How long one request may take (e.g. 30s, 500ms).
    #[arg(long, default_value = "30s", value_parser = parse_duration, global = true)]
    pub request_timeout: Duration,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// A combination of flags that clap's declarations cannot refuse; shown with the usage.
    pub fn conflict(&self) -> Option<&'static str> {
        match &self.command {
            Command::Produce(p)
                if p.input == Input::Json && (p.key_separator.is_some() || p.null_empty) =>
            {
                Some(
                    "--key-separator and --null-empty apply to --input text; a JSON record \
                     names its key, and a null value, itself",
                )
            }
            _ => None,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Write records: one per line of stdin (or --file), as text or JSON lines.
    #[command(after_help = PRODUCE_HELP)]
    Produce(ProduceArgs),
    /// Read records and print them, as text, a template or JSON lines.
    #[command(after_help = CONSUME_HELP)]
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
    /// Create, delete and list SASL SCRAM users.
    #[command(subcommand)]
    User(UserCommand),
    /// Add, remove and list access control lists (ACLs).
    #[command(subcommand)]
    Acl(AclCommand),
    /// Set, remove and list client quotas (byte rates per user and client id).
    #[command(subcommand)]
    Quota(QuotaCommand),
}

#[derive(Subcommand, Debug)]
pub enum QuotaCommand {
    /// Set an entity's quotas (bytes per second).
    #[command(after_help = QUOTA_HELP)]
    Set {
        #[command(flatten)]
        entity: QuotaEntityArgs,
        /// Bytes per second the entity may produce.
        #[arg(long)]
        producer_byte_rate: Option<u64>,
        /// Bytes per second the entity may fetch.
        #[arg(long)]
        consumer_byte_rate: Option<u64>,
        /// Percent of one core's time the entity's requests may take (100: one second per
        /// second).
        #[arg(long)]
        request_percentage: Option<u64>,
    },
    /// Remove an entity's quotas (both, or those named).
    Remove {
        #[command(flatten)]
        entity: QuotaEntityArgs,
        /// Remove only the producer byte rate.
        #[arg(long)]
        producer_byte_rate: bool,
        /// Remove only the consumer byte rate.
        #[arg(long)]
        consumer_byte_rate: bool,
        /// Remove only the request percentage.
        #[arg(long)]
        request_percentage: bool,
    },
    /// List every entity's quotas.
    List {
        #[command(flatten)]
        out: OutputArgs,
    },
}

pub const QUOTA_HELP: &str = "\
An entity is a user (--user-name NAME, or --user-default for every user without a quota of
its own), a client id (--client-id ID, or --client-default), or both. Brokers apply the most
specific one, in Kafka's order; each user (or client) matched by a default has its own budget.

Examples:
  streamctl quota set --user-name alice --producer-byte-rate 1048576
  streamctl quota set --user-default --consumer-byte-rate 10485760
  streamctl quota set --client-id batch-jobs --request-percentage 25
  streamctl quota remove --user-name alice
  streamctl quota list";

#[derive(Args, Debug)]
pub struct QuotaEntityArgs {
    /// The user the quota is for (the principal's name without User:).
    #[arg(long, conflicts_with = "user_default")]
    pub user_name: Option<String>,
    /// The default for every user without a quota of its own.
    #[arg(long)]
    pub user_default: bool,
    /// The client id the quota is for.
    #[arg(long, conflicts_with = "client_default")]
    pub client_id: Option<String>,
    /// The default for every client id without a quota of its own.
    #[arg(long)]
    pub client_default: bool,
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user, or give an existing one a new password (for one mechanism).
    #[command(after_help = USER_CREATE_HELP)]
    Create(UserCreateArgs),
    /// Delete a user's credentials: every mechanism it has, or only --mechanism's.
    Delete {
        name: String,
        /// Only this mechanism's credential (default: every one the user has).
        #[arg(long, value_name = "MECHANISM", value_parser = parse_mechanism)]
        mechanism: Option<ScramMechanism>,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// List users with their mechanisms and iteration counts.
    List {
        /// Only these users (default: every user).
        names: Vec<String>,
        #[command(flatten)]
        out: OutputArgs,
    },
}

pub const USER_CREATE_HELP: &str = "\
The new user's password comes from --new-password-file (its first line), --new-password-stdin
(the first line of stdin), or, when stdin is a terminal, a prompt (asked twice, not echoed).
It never travels: streamctl salts it (a random 32-byte salt, PBKDF2 with --iterations) and
sends the salted password, from which the broker keeps what SCRAM needs to check a login.
(--password-file is the password streamctl itself logs in with, as --user.)

Examples:
  streamctl user create alice --new-password-file alice.pw
  printf '%s\\n' \"$PW\" | streamctl user create bob --mechanism SCRAM-SHA-256 --new-password-stdin
  streamctl --user admin --password-file admin.pw user list";

#[derive(Args, Debug)]
pub struct UserCreateArgs {
    /// The user's name.
    pub name: String,
    /// The mechanism the credential is for: SCRAM-SHA-512 or SCRAM-SHA-256.
    #[arg(
        long,
        value_name = "MECHANISM",
        default_value = "SCRAM-SHA-512",
        value_parser = parse_mechanism
    )]
    pub mechanism: ScramMechanism,
    /// PBKDF2 iterations (at least 4096).
    #[arg(long, default_value_t = quiver_client::Admin::DEFAULT_SCRAM_ITERATIONS)]
    pub iterations: u32,
    /// File whose first line is the new user's password.
    #[arg(long, value_name = "PATH", conflicts_with = "new_password_stdin")]
    pub new_password_file: Option<PathBuf>,
    /// Read the new user's password from the first line of stdin.
    #[arg(long)]
    pub new_password_stdin: bool,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Subcommand, Debug)]
pub enum AclCommand {
    /// Add ACLs: one for each principal, operation, resource (and host) given.
    #[command(after_help = ACL_HELP)]
    Add(AclArgs),
    /// Remove the ACLs the flags match (they are read as for list; a resource or a principal
    /// is required).
    #[command(after_help = ACL_HELP)]
    Remove(AclArgs),
    /// List ACLs, those the flags match (no flags: every ACL).
    #[command(after_help = ACL_HELP)]
    List(AclArgs),
}

pub const ACL_HELP: &str = "\
A request is allowed when an Allow ACL matches it and no Deny ACL does; without a matching
Allow it is denied. An ACL names a principal (User:alice; User:* is every user), a host (* is
any), an operation (All, Read, Write, Create, Delete, Alter, Describe, ClusterAction,
DescribeConfigs, AlterConfigs, IdempotentWrite; any case) and a resource: --topic, --group,
--transactional-id (a name, * for every one; or with --resource-pattern-type prefixed, every
name that starts with it) or --cluster.

add makes the ACLs every combination of the flags names: principals x hosts x operations x
resources; --allow-host and --deny-host default to *. list and remove match by the flags given:
a flag not given matches anything (list with no flags shows every ACL), --resource-pattern-type
any (list's default, and remove's without a resource) matches literal and prefixed ACLs of that
exact name, match every ACL that applies to the name, literal (remove's default with a
resource) or prefixed only that kind.

Examples:
  streamctl acl add --allow-principal User:alice --operation Read --operation Describe --topic orders
  streamctl acl add --allow-principal User:alice --operation Read --group billing
  streamctl acl add --allow-principal User:app --operation Write --topic logs- --resource-pattern-type prefixed
  streamctl acl add --deny-principal User:mallory --deny-host 10.0.0.9 --operation All --topic '*'
  streamctl acl list --topic orders --resource-pattern-type match
  streamctl acl remove --allow-principal User:alice --topic orders";

#[derive(Args, Debug, Default)]
pub struct AclArgs {
    /// Principal an Allow ACL is for, e.g. User:alice (repeatable).
    #[arg(long = "allow-principal", value_name = "PRINCIPAL")]
    pub allow_principals: Vec<String>,
    /// Principal a Deny ACL is for, e.g. User:mallory (repeatable).
    #[arg(long = "deny-principal", value_name = "PRINCIPAL")]
    pub deny_principals: Vec<String>,
    /// Host (client IP address) the Allow ACLs apply to (repeatable; add: default *).
    #[arg(long = "allow-host", value_name = "HOST")]
    pub allow_hosts: Vec<String>,
    /// Host (client IP address) the Deny ACLs apply to (repeatable; add: default *).
    #[arg(long = "deny-host", value_name = "HOST")]
    pub deny_hosts: Vec<String>,
    /// Operation: All, Read, Write, Create, Delete, Alter, Describe, ClusterAction,
    /// DescribeConfigs, AlterConfigs, IdempotentWrite (repeatable; any case).
    #[arg(long = "operation", value_name = "OPERATION", value_parser = parse_operation)]
    pub operations: Vec<AclOperation>,
    /// A topic (repeatable; * is every topic).
    #[arg(long = "topic", short = 't', value_name = "NAME")]
    pub topics: Vec<String>,
    /// A consumer group (repeatable; * is every group).
    #[arg(long = "group", short = 'g', value_name = "NAME")]
    pub groups: Vec<String>,
    /// The cluster (cluster-wide operations: creating topics, describing configs, ...).
    #[arg(long)]
    pub cluster: bool,
    /// A transactional id (repeatable; * is every one).
    #[arg(long = "transactional-id", value_name = "ID")]
    pub transactional_ids: Vec<String>,
    /// How resource names match: literal or prefixed (add, remove: default literal); list and
    /// remove also take any and match.
    #[arg(long, value_enum, value_name = "TYPE")]
    pub resource_pattern_type: Option<PatternArg>,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PatternArg {
    /// The name exactly (* is every resource of the type).
    Literal,
    /// Every resource whose name starts with the name.
    Prefixed,
    /// Filters: literal and prefixed ACLs of the name.
    Any,
    /// Filters: every ACL that applies to the name (literal, *, and prefixes of it).
    Match,
}

/// An ACL operation by name, any case (`read`, `DescribeConfigs`, `describe-configs`).
pub fn parse_operation(s: &str) -> Result<AclOperation, String> {
    let wanted: String = s
        .chars()
        .filter(|c| !matches!(c, '-' | '_'))
        .collect::<String>()
        .to_ascii_lowercase();
    AclOperation::ALL
        .iter()
        .copied()
        .filter(|op| !matches!(op, AclOperation::Unknown))
        .find(|op| format!("{op:?}").to_ascii_lowercase() == wanted)
        .ok_or_else(|| {
            format!(
                "'{s}' is not an operation: use All, Read, Write, Create, Delete, Alter, \
                 Describe, ClusterAction, DescribeConfigs, AlterConfigs or IdempotentWrite"
            )
        })
}

pub const PRODUCE_HELP: &str = r#"Text input (the default): each line, without its trailing \n, is one record's value; bytes are
sent as they are, so values need not be UTF-8. Empty lines are skipped. With -K SEP, the bytes
before the first SEP are the key and the rest is the value, as it is; a line without SEP has no
key. In the key, \SEP stands for SEP and \\ for a backslash (consume -K writes keys that way).
With --null-empty, an empty value (the line `user-1:` with -K :) is sent as null: a tombstone.
--header applies to every record.

JSON input (--input json) reads what consume --output json prints, one object per line, and
writes the same records: key or key_base64, value or value_base64 (null or absent: no key, a
tombstone), headers ([{"key":"h","value":"v"}, ...] or {"h":"v"}; value_base64 for bytes),
partition (--partition overrides it) and timestamp (ms since the Unix epoch, kept as the
record's CreateTime). topic, offset and timestamp_type are ignored, so what consume printed
from one topic can be written to another; any other field is an error. Blank lines are
skipped.

Examples:
  printf 'user-1:hello\nuser-2:world\n' | streamctl produce demo -K : --header source=cli
  printf 'user-1:\n' | streamctl produce demo -K : --null-empty        # a tombstone for user-1
  streamctl consume orders -o json --until-end | streamctl produce orders-copy --input json"#;

pub const CONSUME_HELP: &str = r#"Stopping: -n N after N records, --timeout D after D without a record, --until-end (-e) at the
end each partition had when consume started. Ctrl-C (SIGINT) or SIGTERM stops fetching and,
with --group, commits exactly what was printed and leaves the group; the exit code is then 130
(SIGINT) or 143 (SIGTERM). A second signal exits at once, committing nothing more.

Text output (the default) prints each value's bytes and a newline; -K SEP prints KEY SEP VALUE,
with SEP and backslashes in the key escaped by a backslash, as produce -K reads it back. A
template (-f) prints what it says, with no newline added:
  %k key  %v value  %t topic  %p partition  %o offset  %T timestamp (ms)
  %h headers (name=value,...)  %% a percent sign;  \n \t \r \\ as in C
In text and templates an absent key and a null value (a tombstone) print as --null-string:
nothing by default, as with kcat; --null-string NULL tells them from empty ones. JSON output
always tells them apart: null, or "".

JSON output (--output json, or -F json) prints one object per line:
  {"topic":"t","partition":0,"offset":5,"timestamp":1700000000000,
   "timestamp_type":"CreateTime","key":"k","value":"v",
   "headers":[{"key":"h","value":"x"}]}
Keys, values and header values that are valid UTF-8 appear as JSON strings ("key", "value");
bytes that are not valid UTF-8 appear instead as standard base64 (RFC 4648, with padding) under
"key_base64", "value_base64" (and "value_base64" in a header). A missing key or a tombstone
value is null. Nothing is ever replaced or lost: decoding the strings as UTF-8, or the base64
fields, gives back the exact bytes that were produced. The timestamp is milliseconds since the
Unix epoch. produce --input json reads these lines back into the same records.

Examples:
  streamctl consume orders --tail 5 --until-end          # the last 5 of each partition, then exit
  streamctl consume orders --from 2026-12-05 -e -f '%p %o %k=%v\n'
  streamctl consume orders --group billing               # Ctrl-C commits what was printed"#;

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
    /// To the first record at or after this time (RFC 3339, e.g. 2024-05-01T12:00:00Z, or a
    /// date, 2024-05-01, midnight UTC); to the end where no record is that recent.
    #[arg(long, value_name = "TIME", value_parser = crate::from::parse_time)]
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
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// What each input line is: a value (text; see -K) or a JSON record as consume
    /// --output json prints it.
    #[arg(long, value_enum, default_value_t = Input::Text)]
    pub input: Input,
    /// Text input: the bytes before the first SEP of a line are the key (\SEP and \\ escape
    /// in the key), the rest the value.
    #[arg(long, short = 'K', value_name = "SEP", value_parser = parse_separator)]
    pub key_separator: Option<String>,
    /// Text input: send an empty value (after the key separator) as null, a tombstone.
    #[arg(long, requires = "key_separator")]
    pub null_empty: bool,
    /// Header for every record, as KEY=VALUE (repeatable).
    #[arg(long = "header", short = 'H', value_parser = parse_key_value)]
    pub headers: Vec<(String, String)>,
    /// Write every record to this partition (default: the JSON record's partition, else by
    /// key, or spread when there is no key).
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Input {
    /// One value per line (and a key with -K).
    Text,
    /// One JSON record per line, as consume --output json prints it.
    Json,
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
    /// Where to start in each partition: beginning (default), end, an offset (42), the last N
    /// records (-10), a time (@1700000000000 in ms, 2026-12-05, 2026-12-05T10:00:00Z).
    #[arg(
        long,
        value_name = "POSITION",
        value_parser = parse_from,
        allow_hyphen_values = true,
        long_help = FROM_HELP
    )]
    pub from: Option<StartAt>,
    /// Start at the last N records of each partition (--from -N).
    #[arg(long, value_name = "N", conflicts_with = "from")]
    pub tail: Option<u64>,
    /// Exit once every partition is read up to the end it had when consume started
    /// (partitions empty then are done at once), like kcat -e.
    #[arg(long, short = 'e')]
    pub until_end: bool,
    /// Read only this partition (repeatable; default: every partition).
    #[arg(long = "partition", short = 'p')]
    pub partitions: Vec<u32>,
    /// Read as a member of this consumer group: the group splits the topic's partitions
    /// between its members and remembers (commits) how far they read; --from then only
    /// applies to partitions the group has no committed offset for (beginning or end).
    /// With --until-end: exit once the partitions this member holds are read to their end.
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
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Output format: text or json (see below).
    #[arg(
        long,
        short = 'o',
        visible_alias = "format",
        visible_short_alias = 'F',
        value_name = "FORMAT",
        default_value = "text",
        value_parser = parse_consume_output
    )]
    pub output: Output,
    /// Print each record through this template, e.g. '%k=%v\n' (see below).
    #[arg(
        long,
        short = 'f',
        value_name = "TEMPLATE",
        value_parser = Template::parse,
        conflicts_with_all = ["output", "key_separator"]
    )]
    pub template: Option<Template>,
    /// Text output: print KEY SEP VALUE (the inverse of produce --key-separator).
    #[arg(long, short = 'K', value_name = "SEP", value_parser = parse_separator)]
    pub key_separator: Option<String>,
    /// Text and template output: print an absent key or a null value as this (default:
    /// nothing).
    #[arg(long, value_name = "STRING")]
    pub null_string: Option<String>,
}

impl ConsumeArgs {
    /// `--from`, or `--tail`, or the beginning.
    pub fn start(&self) -> StartAt {
        match (self.from, self.tail) {
            (Some(f), _) => f,
            (None, Some(n)) => StartAt::Tail(n),
            (None, None) => StartAt::Beginning,
        }
    }
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

#[derive(Args, Debug, Clone, Copy, Default)]
pub struct OutputArgs {
    /// Output format of the command.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Default)]
pub enum Output {
    #[default]
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        /// Partition count (default: the broker's default_partitions).
        #[arg(long)]
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
        #[arg(long = "partitions", visible_alias = "total", value_name = "N")]
        partitions: u32,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Move a partition's replicas to other brokers (new ones catch up and join the ISR
    /// before the removed ones go; watch with `topic describe`).
    Reassign {
        name: String,
        /// The partition to move.
        #[arg(long, value_name = "N")]
        partition: u32,
        /// Its new replicas, broker ids, the preferred leader first (e.g. 1,2,3).
        #[arg(long, value_name = "IDS", value_delimiter = ',', required = true)]
        replicas: Vec<u32>,
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

/// A key separator: not empty, and without a backslash (which escapes it in keys).
pub fn parse_separator(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("the key separator must not be empty".into());
    }
    if s.contains('\\') {
        return Err(
            "the key separator must not hold a backslash: it escapes the separator in keys".into(),
        );
    }
    Ok(s.to_string())
}

/// consume's --output: `text` or `json`, and a pointer to --from for kcat's and rpk's `-o
/// beginning`.
pub fn parse_consume_output(s: &str) -> Result<Output, String> {
    match s {
        "text" => Ok(Output::Text),
        "json" => Ok(Output::Json),
        _ if crate::from::parse_from(s).is_ok() => Err(format!(
            "'{s}' is not an output format (text or json); to choose where to start, use \
             --from {s} (-o in kcat and rpk)"
        )),
        _ => Err(format!("'{s}' is not an output format: use text or json")),
    }
}
