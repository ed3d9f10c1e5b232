//! streamd's configuration: built-in defaults, overridden by a TOML file, overridden by
//! `STREAMD_*` environment variables, overridden by flags.
//!
//! Every setting is declared once, in the `settings!` table below, with its type, default, flag,
//! environment variable and help text; the flag parser, the TOML reader, the resolved `Config`
//! and `deploy/streamd.toml` all follow from it. Rationale: a setting that is documented in one
//! place and parsed in another drifts; one table cannot.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Parser, ValueEnum};
use serde::Deserialize;

/// How logs are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Which clock a topic's record timestamps come from (Kafka's `message.timestamp.type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimestampType {
    /// The producer's timestamp is kept.
    CreateTime,
    /// The broker stamps each batch with the time it appended it.
    LogAppendTime,
}

impl TimestampType {
    pub fn as_str(self) -> &'static str {
        match self {
            TimestampType::CreateTime => "CreateTime",
            TimestampType::LogAppendTime => "LogAppendTime",
        }
    }
}

fn unquote(s: String) -> String {
    match s.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) => inner.to_string(),
        None => s,
    }
}

/// How a setting's value is written in the TOML file.
trait TomlRepr {
    fn toml(&self) -> String;
}

macro_rules! toml_display {
    ($($t:ty),*) => { $( impl TomlRepr for $t { fn toml(&self) -> String { self.to_string() } } )* };
}
toml_display!(u16, u32, u64, i64, bool);

macro_rules! toml_quoted {
    ($($t:ty),*) => {
        // Debug of a string is quoted and escaped the way TOML's basic strings are.
        $( impl TomlRepr for $t { fn toml(&self) -> String { format!("{:?}", self.to_string()) } } )*
    };
}
toml_quoted!(String, SocketAddr);

impl TomlRepr for PathBuf {
    fn toml(&self) -> String {
        format!("{:?}", self.display().to_string())
    }
}

macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])+
        $field:ident: $ty:ty = $default:expr, env $env:literal $(, value_enum $ve:ident)?;
    )*) => {
        /// Flags and environment variables. Every one is optional: what is not given falls
        /// through to the TOML file, then to the built-in default.
        #[derive(clap::Args, Debug, Default)]
        pub struct Overrides {
            $(
                $(#[doc = $doc])+
                #[arg(long, env = $env)]
                pub $field: Option<$ty>,
            )*
        }

        /// The TOML file: the same settings, by the same names, all optional.
        #[derive(Deserialize, Debug, Default)]
        #[serde(deny_unknown_fields)]
        pub struct FileSettings {
            $( pub $field: Option<$ty>, )*
        }

        /// The resolved configuration the broker runs with.
        #[derive(Clone, Debug)]
        pub struct Config {
            $( $(#[doc = $doc])+ pub $field: $ty, )*
        }

        impl Config {
            fn merge(flags: Overrides, file: FileSettings) -> Config {
                Config {
                    $( $field: flags.$field.or(file.$field).unwrap_or_else(|| $default), )*
                }
            }

            /// Built-in defaults, as if no file, variable or flag were given.
            pub fn defaults() -> Config {
                Config::merge(Overrides::default(), FileSettings::default())
            }

            /// (setting, value) for every setting as resolved, for DescribeConfigs of the broker.
            pub fn values(&self) -> Vec<(&'static str, String)> {
                vec![ $( (stringify!($field), unquote(settings!(@toml self.$field $(, $ve)?))), )* ]
            }

            /// (setting, default as written in TOML) for every setting, for `--help`.
            pub fn default_values() -> Vec<(&'static str, String)> {
                let d = Config::defaults();
                vec![ $( (stringify!($field), settings!(@toml d.$field $(, $ve)?)), )* ]
            }

            /// A commented TOML file listing every setting at its default
            /// (`streamd --print-default-config`; the source of `deploy/streamd.toml`).
            pub fn default_toml() -> String {
                let d = Config::defaults();
                let mut out = String::from(
                    "# streamd configuration. Every setting is shown at its default.\n\
                     # Precedence: flags > STREAMD_* environment variables > this file > defaults.\n",
                );
                $(
                    out.push('\n');
                    $( let _ = writeln!(out, "#{}", $doc); )+
                    let _ = writeln!(out, "# flag: --{}   env: {}",
                        stringify!($field).replace('_', "-"), $env);
                    let _ = writeln!(out, "{} = {}", stringify!($field),
                        settings!(@toml d.$field $(, $ve)?));
                )*
                out
            }
        }
    };
    (@toml $v:expr) => { TomlRepr::toml(&$v) };
    (@toml $v:expr, $ve:ident) => { format!("{:?}", $v.to_possible_value().expect("visible").get_name()) };
}

settings! {
    /// Directory for logs, metadata and the development certificate. Created if missing.
    data_dir: PathBuf = PathBuf::from("data"), env "STREAMD_DATA_DIR";
    /// UDP address the QUIC listener binds (one socket per shard, SO_REUSEPORT, steered by the
    /// client's source port).
    listen: SocketAddr = "127.0.0.1:9092".parse().expect("valid"), env "STREAMD_LISTEN";
    /// Host name or address given to clients in metadata. Empty: the listen address's IP.
    advertised_host: String = String::new(), env "STREAMD_ADVERTISED_HOST";
    /// This broker's id in the cluster (1 or more).
    broker_id: u32 = 1, env "STREAMD_BROKER_ID";
    /// The controller quorum's voters, as `id@host:port` separated by commas (the QUIC address
    /// each listens on), e.g. "1@10.0.0.1:9092,2@10.0.0.2:9092,3@10.0.0.3:9092". Every broker
    /// of a cluster is a voter and lists the same voters (combined mode). Empty: this broker
    /// runs alone, as a cluster of one without a quorum.
    controller_voters: String = String::new(), env "STREAMD_CONTROLLER_VOTERS";
    /// What this process is in a cluster: "broker,controller" (a voter of the controller quorum
    /// that also holds partitions, as a small KRaft cluster's nodes), "controller" (a voter
    /// that holds no partitions and is not offered to clients as a broker) or "broker" (a
    /// broker that is not a voter and is not listed in controller_voters: it follows the
    /// metadata log as a raft learner). Ignored without controller_voters.
    process_roles: String = "broker,controller".to_string(), env "STREAMD_PROCESS_ROLES";
    /// The broker's rack (failure domain), given to clients in metadata. Empty: none.
    rack: String = String::new(), env "STREAMD_RACK";
    /// A broker of a cluster the controller has not heard from for this long is fenced: its
    /// partitions move to in-sync followers, and it is unfenced when heard from again. Voters
    /// hear each other every 100 ms; 1.5 s makes a dead leader's partitions move within 2 s
    /// (Kafka's broker.session.timeout.ms is 9 s). Raise it where a broker may stall longer.
    broker_session_timeout_ms: u64 = 1_500, env "STREAMD_BROKER_SESSION_TIMEOUT_MS";
    /// A follower that has not caught up with its leader's log end for this long leaves the
    /// partition's ISR (Kafka's replica.lag.time.max.ms), and rejoins once it has.
    replica_lag_time_max_ms: u64 = 10_000, env "STREAMD_REPLICA_LAG_TIME_MAX_MS";
    /// Directory of the development CA (ca.pem, ca.key), when brokers of one cluster share one
    /// (it is created there if missing). Empty: <data_dir>/tls. Used only without tls_cert.
    dev_ca_dir: PathBuf = PathBuf::new(), env "STREAMD_DEV_CA_DIR";
    /// PEM CA bundle a broker trusts for the other brokers' certificates. Empty: the
    /// development CA (with the development certificate), else the CA of tls_client_ca.
    tls_peer_ca: PathBuf = PathBuf::new(), env "STREAMD_TLS_PEER_CA";
    /// Number of shards (one glommio executor pinned per core). 0: one per available core.
    shards: u32 = 0, env "STREAMD_SHARDS";
    /// TCP address of the HTTP endpoint serving /metrics (Prometheus), /health and /ready. Empty: off.
    metrics_listen: String = "127.0.0.1:9644".to_string(), env "STREAMD_METRICS_LISTEN";
    /// PEM certificate chain for QUIC. Empty: a development CA and certificate are created in
    /// <data_dir>/tls on first start and reused afterwards.
    tls_cert: PathBuf = PathBuf::new(), env "STREAMD_TLS_CERT";
    /// PEM private key matching tls_cert.
    tls_key: PathBuf = PathBuf::new(), env "STREAMD_TLS_KEY";
    /// PEM CA bundle for client certificates. Set: mutual TLS is required of every client.
    tls_client_ca: PathBuf = PathBuf::new(), env "STREAMD_TLS_CLIENT_CA";
    /// SASL mechanisms clients may authenticate with, comma-separated: SCRAM-SHA-256,
    /// SCRAM-SHA-512. Users are made with `streamctl user create`. Empty: none.
    sasl_mechanisms: String = String::new(), env "STREAMD_SASL_MECHANISMS";
    /// Whether a client that neither authenticates (SASL) nor presents a client certificate
    /// may make requests, as User:ANONYMOUS. false: such a connection may only ask
    /// ApiVersions and authenticate, and is closed after authentication_timeout_ms.
    allow_anonymous: bool = true, env "STREAMD_ALLOW_ANONYMOUS";
    /// With anonymous access off, a connection that has not authenticated this long after it
    /// opened is closed.
    authentication_timeout_ms: u64 = 10_000, env "STREAMD_AUTHENTICATION_TIMEOUT_MS";
    /// Turns the ACL authorizer on: every request is denied unless an ACL allows it
    /// (`streamctl acl add`); super_users and the cluster's brokers are always allowed.
    authorizer: bool = false, env "STREAMD_AUTHORIZER";
    /// Principals the authorizer always allows, separated by semicolons, e.g.
    /// "User:admin;User:ops".
    super_users: String = String::new(), env "STREAMD_SUPER_USERS";
    /// How a client certificate gives a principal (Kafka's ssl.principal.mapping.rules):
    /// RULE:pattern/replacement/[L|U] and DEFAULT (the subject's common name), tried in
    /// order on "CN=<common name>" and then on each "DNS:<name>" of the certificate.
    ssl_principal_mapping_rules: String = "DEFAULT".to_string(), env "STREAMD_SSL_PRINCIPAL_MAPPING_RULES";
    /// Log filter (error, warn, info, debug, trace, or a tracing directive such as
    /// "info,quiver_engine=debug"). Empty: RUST_LOG if set, else "info".
    log_level: String = String::new(), env "STREAMD_LOG_LEVEL";
    /// Log format.
    log_format: LogFormat = LogFormat::Text, env "STREAMD_LOG_FORMAT", value_enum possible;
    /// Create a topic with default settings when a client produces to or fetches from one that
    /// does not exist.
    auto_create_topics: bool = false, env "STREAMD_AUTO_CREATE_TOPICS";
    /// Partitions of a topic created without a partition count.
    default_partitions: u32 = 1, env "STREAMD_DEFAULT_PARTITIONS";
    /// Default retention.ms: how long a closed segment is kept after its newest record. -1: forever.
    default_retention_ms: i64 = 7 * 24 * 3600 * 1000, env "STREAMD_DEFAULT_RETENTION_MS";
    /// Default retention.bytes: the size a partition is trimmed to. -1: no limit.
    default_retention_bytes: i64 = -1, env "STREAMD_DEFAULT_RETENTION_BYTES";
    /// Default segment.bytes: a segment is rolled when it would grow past this.
    default_segment_bytes: u64 = 1 << 30, env "STREAMD_DEFAULT_SEGMENT_BYTES";
    /// Default segment.ms: a segment is rolled once its first record is this old.
    default_segment_ms: i64 = 7 * 24 * 3600 * 1000, env "STREAMD_DEFAULT_SEGMENT_MS";
    /// Default max.message.bytes: the largest record batch a topic accepts.
    default_max_message_bytes: u32 = 4 << 20, env "STREAMD_DEFAULT_MAX_MESSAGE_BYTES";
    /// Default flush.ms: 0 makes every acknowledged produce durable before it is answered (the
    /// log is written with O_DSYNC, or fdatasynced); N > 0 syncs every N ms instead and
    /// acknowledges before the sync.
    default_flush_ms: u64 = 0, env "STREAMD_DEFAULT_FLUSH_MS";
    /// Default message.timestamp.type.
    default_timestamp_type: TimestampType = TimestampType::CreateTime, env "STREAMD_DEFAULT_TIMESTAMP_TYPE", value_enum possible;
    /// How often each shard applies retention to its partitions.
    retention_check_interval_ms: u64 = 300_000, env "STREAMD_RETENTION_CHECK_INTERVAL_MS";
    /// Partitions of the internal topic __consumer_offsets, created on first start (groups are
    /// spread over them by id). Changing it later does not move existing groups.
    offsets_topic_partitions: u32 = 16, env "STREAMD_OFFSETS_TOPIC_PARTITIONS";
    /// Replicas of each __consumer_offsets partition in a cluster (at most the voters that are
    /// brokers), so committed offsets survive a broker's loss. 1 on a single broker.
    offsets_topic_replication_factor: u16 = 3, env "STREAMD_OFFSETS_TOPIC_REPLICATION_FACTOR";
    /// Offsets of a consumer group with no members are deleted after this long.
    offsets_retention_ms: i64 = 7 * 24 * 3600 * 1000, env "STREAMD_OFFSETS_RETENTION_MS";
    /// A group member with no heartbeat for this long is removed and its partitions reassigned.
    group_session_timeout_ms: u64 = 45_000, env "STREAMD_GROUP_SESSION_TIMEOUT_MS";
    /// How often members are asked to heartbeat.
    group_heartbeat_interval_ms: u64 = 5_000, env "STREAMD_GROUP_HEARTBEAT_INTERVAL_MS";
    /// How long a member may take to give up revoked partitions when it does not say.
    group_rebalance_timeout_ms: u64 = 60_000, env "STREAMD_GROUP_REBALANCE_TIMEOUT_MS";
    /// Assignor for groups that do not name one: sticky, range or roundrobin.
    group_assignor: String = "sticky".to_string(), env "STREAMD_GROUP_ASSIGNOR";
    /// Largest request or response frame, in bytes, refused before it is read.
    max_frame_bytes: u32 = 64 << 20, env "STREAMD_MAX_FRAME_BYTES";
    /// Most record bytes one fetch response carries (a fetch asking more, or giving 0, gets
    /// this). Must leave room under max_frame_bytes for the response's body.
    fetch_max_bytes: u32 = 55 << 20, env "STREAMD_FETCH_MAX_BYTES";
    /// Most partitions this broker holds in the topics clients create (internal topics, such
    /// as the 16 of `__consumer_offsets`, are not counted). A create or add-partitions past it
    /// is refused, naming this setting; so is one past what half the memory holds at 16 KiB a
    /// partition, naming the memory. The open-file limit does not bound it: partitions' files
    /// are opened on demand within a budget the limit sets.
    max_partitions: u32 = 100_000, env "STREAMD_MAX_PARTITIONS";
    /// Most QUIC connections the broker holds, over all shards. Past half of it, a new client
    /// must first prove its address (QUIC Retry); at it, new connections are refused.
    max_connections: u32 = 10_000, env "STREAMD_MAX_CONNECTIONS";
    /// Most QUIC connections from one IP address.
    max_connections_per_ip: u32 = 1_000, env "STREAMD_MAX_CONNECTIONS_PER_IP";
    /// A request whose frame has not arrived whole this long after its stream opened is
    /// dropped (its stream reset), so a client that stalls mid-request holds nothing.
    request_read_timeout_ms: u64 = 30_000, env "STREAMD_REQUEST_READ_TIMEOUT_MS";
    /// Bytes each shard may hold read ahead of consumers reading sequentially (a fetch that
    /// stopped short of a partition's end starts reading what follows). 0: no read-ahead.
    readahead_bytes_per_shard: u64 = 64 << 20, env "STREAMD_READAHEAD_BYTES_PER_SHARD";
    /// Memory each shard sets aside for direct I/O buffers (write groups, disk reads), registered
    /// with io_uring and reused. A buffer that does not fit comes from the heap, which maps a
    /// large block afresh each time, so the kernel faults in and zeroes every page of it again.
    io_memory_bytes_per_shard: u64 = 64 << 20, env "STREAMD_IO_MEMORY_BYTES_PER_SHARD";
    /// Bytes of the batches appended last each shard keeps in memory, so that consumers at the
    /// end of a partition are served without reading the disk (at most 4 MiB per partition).
    /// 0: every fetch reads the segment files.
    tail_cache_bytes_per_shard: u64 = 32 << 20, env "STREAMD_TAIL_CACHE_BYTES_PER_SHARD";
    /// Longest a fetch may wait for data (a request asking more is capped to this).
    fetch_max_wait_ms: u64 = 30_000, env "STREAMD_FETCH_MAX_WAIT_MS";
    /// A connection with no traffic for this long is closed (keep-alives count as traffic).
    idle_timeout_ms: u64 = 30_000, env "STREAMD_IDLE_TIMEOUT_MS";
    /// Largest UDP payload of a QUIC packet (1200 to 65527): path MTU discovery searches up to
    /// it, and clients are told the broker accepts it. Discovery keeps only what the path
    /// delivers (1452 on 1500-byte Ethernet; 65507 on loopback).
    max_udp_payload_bytes: u16 = quiver_net::MAX_UDP_PAYLOAD, env "STREAMD_MAX_UDP_PAYLOAD_BYTES";
    /// On SIGTERM/SIGINT, how long in-flight requests get to finish before the broker exits.
    shutdown_timeout_ms: u64 = 10_000, env "STREAMD_SHUTDOWN_TIMEOUT_MS";
}

/// streamd: the Quiver event-streaming broker.
///
/// With no flags it stores data in ./data, serves QUIC on 127.0.0.1:9092 with one shard per
/// core and a development certificate created in ./data/tls, and serves metrics on
/// http://127.0.0.1:9644/metrics.
#[derive(Parser, Debug)]
#[command(name = "streamd", version, about, long_about)]
pub struct Cli {
    /// TOML configuration file (every key is a setting below, in snake_case).
    #[arg(long, env = "STREAMD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print a commented configuration file with every setting at its default, and exit.
    #[arg(long)]
    pub print_default_config: bool,

    /// Issue a client certificate with this common name from the development CA (the one in
    /// dev_ca_dir, which must exist, else <data_dir>/tls, made if missing), write NAME.pem and
    /// NAME.key (0600) to the current directory, and exit. For mutual TLS in development: a broker with
    /// tls_client_ca set to that CA's ca.pem knows the client as User:NAME.
    #[arg(long, value_name = "NAME")]
    pub issue_client_cert: Option<String>,

    /// Make the development CA (in dev_ca_dir, else <data_dir>/tls) that may sign for these
    /// names (comma-separated DNS names and addresses; localhost, loopback and this host's name
    /// always), or widen the one there (same key) to permit them too, and exit. A development
    /// CA signs only for the names it was made for (X.509 name constraints). For a cluster's
    /// shared CA, name every broker: quiver-broker-<id> and the hosts clients dial.
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub make_dev_ca: Option<Vec<String>>,

    #[command(flatten)]
    pub overrides: Overrides,
}

impl Cli {
    /// Parses the command line, with each setting's default shown in `--help`.
    pub fn parse_with_defaults() -> Cli {
        use clap::{CommandFactory, FromArgMatches};
        let mut cmd = Cli::command();
        for (field, default) in Config::default_values() {
            cmd = cmd.mut_arg(field, |a| {
                let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
                let shown = if default == "\"\"" {
                    "(empty)".to_string()
                } else {
                    default
                };
                a.help(format!("{help} [default: {shown}]"))
            });
        }
        let matches = cmd.get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

/// A setting that cannot work, said before anything starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid setting {name} = {value}: {why}")]
    Invalid {
        name: &'static str,
        value: String,
        why: String,
    },
}

impl Config {
    /// Resolves flags, environment, the file and defaults, then checks the result.
    pub fn load(cli: Cli) -> Result<Config, ConfigError> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileSettings::default(),
        };
        let config = Config::merge(cli.overrides, file);
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        fn bad(name: &'static str, value: impl ToString, why: &str) -> ConfigError {
            ConfigError::Invalid {
                name,
                value: value.to_string(),
                why: why.to_string(),
            }
        }
        let cores = available_cores();
        if self.shards as usize > cores {
            return Err(bad(
                "shards",
                self.shards,
                &format!("this machine has {cores} usable cores"),
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(bad("data_dir", "\"\"", "must name a directory"));
        }
        if !self.metrics_listen.is_empty() && self.metrics_listen.parse::<SocketAddr>().is_err() {
            return Err(bad(
                "metrics_listen",
                &self.metrics_listen,
                "expected IP:PORT, or empty to turn it off",
            ));
        }
        if !(IO_MEMORY_MIN..=IO_MEMORY_MAX).contains(&self.io_memory_bytes_per_shard) {
            return Err(bad(
                "io_memory_bytes_per_shard",
                self.io_memory_bytes_per_shard,
                &format!("must be from {IO_MEMORY_MIN} to {IO_MEMORY_MAX}"),
            ));
        }
        let cert = !self.tls_cert.as_os_str().is_empty();
        let key = !self.tls_key.as_os_str().is_empty();
        if cert != key {
            return Err(bad(
                "tls_cert/tls_key",
                "",
                "set both, or neither for the development certificate",
            ));
        }
        for (name, path) in [
            ("tls_cert", &self.tls_cert),
            ("tls_key", &self.tls_key),
            ("tls_client_ca", &self.tls_client_ca),
        ] {
            if !path.as_os_str().is_empty() && !path.is_file() {
                return Err(bad(name, path.display(), "no such file"));
            }
        }
        if self.default_partitions == 0 {
            return Err(bad(
                "default_partitions",
                0,
                "a topic needs at least one partition",
            ));
        }
        if self.default_retention_ms < -1 || self.default_retention_ms == 0 {
            return Err(bad(
                "default_retention_ms",
                self.default_retention_ms,
                "must be positive, or -1 for forever",
            ));
        }
        if self.default_retention_bytes < -1 || self.default_retention_bytes == 0 {
            return Err(bad(
                "default_retention_bytes",
                self.default_retention_bytes,
                "must be positive, or -1 for no limit",
            ));
        }
        if self.default_segment_bytes < SEGMENT_BYTES_MIN {
            return Err(bad(
                "default_segment_bytes",
                self.default_segment_bytes,
                &format!("must be at least {SEGMENT_BYTES_MIN}"),
            ));
        }
        if self.default_segment_ms <= 0 {
            return Err(bad(
                "default_segment_ms",
                self.default_segment_ms,
                "must be positive",
            ));
        }
        if self.default_max_message_bytes < 1024 {
            return Err(bad(
                "default_max_message_bytes",
                self.default_max_message_bytes,
                "must be at least 1024",
            ));
        }
        if (self.default_max_message_bytes as u64) + 4096 > self.max_frame_bytes as u64 {
            return Err(bad(
                "max_frame_bytes",
                self.max_frame_bytes,
                "must exceed default_max_message_bytes by at least 4096",
            ));
        }
        if self.fetch_max_bytes == 0
            || u64::from(self.fetch_max_bytes) + FETCH_BODY_ROOM > u64::from(self.max_frame_bytes)
        {
            return Err(bad(
                "fetch_max_bytes",
                self.fetch_max_bytes,
                &format!(
                    "must be positive and leave {FETCH_BODY_ROOM} bytes under max_frame_bytes ({}) for the response body",
                    self.max_frame_bytes
                ),
            ));
        }
        if self.max_partitions == 0 {
            return Err(bad("max_partitions", 0, "must be positive"));
        }
        if self.max_connections == 0
            || self.max_connections_per_ip == 0
            || self.max_connections_per_ip > self.max_connections
        {
            return Err(bad(
                "max_connections_per_ip",
                self.max_connections_per_ip,
                &format!(
                    "both connection caps must be positive, and the per-address one at most max_connections ({})",
                    self.max_connections
                ),
            ));
        }
        if self.request_read_timeout_ms == 0 {
            return Err(bad("request_read_timeout_ms", 0, "must be positive"));
        }
        if !(1200..=quiver_net::MAX_UDP_PAYLOAD).contains(&self.max_udp_payload_bytes) {
            return Err(bad(
                "max_udp_payload_bytes",
                self.max_udp_payload_bytes,
                "must be 1200 to 65527",
            ));
        }
        if self.fetch_max_wait_ms == 0
            || self.idle_timeout_ms == 0
            || self.retention_check_interval_ms == 0
        {
            return Err(bad(
                "fetch_max_wait_ms/idle_timeout_ms/retention_check_interval_ms",
                0,
                "must be positive",
            ));
        }
        if self.offsets_topic_partitions == 0 || self.offsets_topic_partitions > 1000 {
            return Err(bad(
                "offsets_topic_partitions",
                self.offsets_topic_partitions,
                "must be between 1 and 1000",
            ));
        }
        if self.offsets_topic_replication_factor == 0 {
            return Err(bad(
                "offsets_topic_replication_factor",
                0,
                "must be 1 or more",
            ));
        }
        if self.offsets_retention_ms <= 0 {
            return Err(bad(
                "offsets_retention_ms",
                self.offsets_retention_ms,
                "must be positive",
            ));
        }
        if self.group_session_timeout_ms == 0
            || self.group_heartbeat_interval_ms == 0
            || self.group_rebalance_timeout_ms == 0
        {
            return Err(bad("group_*_ms", 0, "must be positive"));
        }
        if self.group_heartbeat_interval_ms >= self.group_session_timeout_ms {
            return Err(bad(
                "group_heartbeat_interval_ms",
                self.group_heartbeat_interval_ms,
                "must be below group_session_timeout_ms, or members would expire between heartbeats",
            ));
        }
        if !matches!(
            self.group_assignor.as_str(),
            "sticky" | "range" | "roundrobin"
        ) {
            return Err(bad(
                "group_assignor",
                &self.group_assignor,
                "must be sticky, range or roundrobin",
            ));
        }
        if self.broker_id == 0 {
            return Err(bad("broker_id", 0, "must be 1 or more"));
        }
        if let Err(why) = self.roles() {
            return Err(bad("process_roles", &self.process_roles, &why));
        }
        if let Err(why) = self.voters() {
            return Err(bad("controller_voters", &self.controller_voters, &why));
        }
        if self.broker_session_timeout_ms < 1000 {
            return Err(bad(
                "broker_session_timeout_ms",
                self.broker_session_timeout_ms,
                "must be at least 1000",
            ));
        }
        if self.replica_lag_time_max_ms < 100 {
            return Err(bad(
                "replica_lag_time_max_ms",
                self.replica_lag_time_max_ms,
                "must be at least 100",
            ));
        }
        if !self.tls_peer_ca.as_os_str().is_empty() && !self.tls_peer_ca.is_file() {
            return Err(bad(
                "tls_peer_ca",
                self.tls_peer_ca.display(),
                "no such file",
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(self.log_filter()).is_err() {
            return Err(bad(
                "log_level",
                &self.log_level,
                "not a level or tracing filter directive",
            ));
        }
        Ok(())
    }

    /// The log filter in force: the setting, else RUST_LOG, else "info".
    pub fn log_filter(&self) -> String {
        if !self.log_level.is_empty() {
            return self.log_level.clone();
        }
        std::env::var("RUST_LOG")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "info".to_string())
    }

    /// Number of shards to run: the setting, or one per usable core.
    pub fn shard_count(&self) -> usize {
        if self.shards == 0 {
            available_cores()
        } else {
            self.shards as usize
        }
    }

    /// The metrics address, if the endpoint is on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listen.parse().ok()
    }

    /// The controller quorum's voters, ascending by id; empty when this broker runs alone.
    /// Refuses a list that is malformed, repeats an id or an address, or leaves this broker
    /// out (every broker of a cluster is a voter).
    pub fn voters(&self) -> Result<Vec<Voter>, String> {
        let text = self.controller_voters.trim();
        if text.is_empty() {
            return Ok(Vec::new());
        }
        let mut voters: Vec<Voter> = Vec::new();
        for item in text.split(',').map(str::trim) {
            let (id, addr) = item
                .split_once('@')
                .ok_or_else(|| format!("'{item}' is not id@host:port"))?;
            let id: u32 = id
                .parse()
                .ok()
                .filter(|id| *id > 0)
                .ok_or_else(|| format!("'{id}' in '{item}' is not a broker id (1 or more)"))?;
            let (host, port) = addr
                .rsplit_once(':')
                .ok_or_else(|| format!("'{addr}' in '{item}' has no port"))?;
            let port: u16 = port
                .parse()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("'{port}' in '{item}' is not a port"))?;
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            if host.is_empty() {
                return Err(format!("'{item}' has no host"));
            }
            if voters.iter().any(|v| v.id == id) {
                return Err(format!("broker id {id} is listed twice"));
            }
            if voters.iter().any(|v| v.host == host && v.port == port) {
                return Err(format!("{host}:{port} is listed twice"));
            }
            voters.push(Voter { id, host, port });
        }
        let listed = voters.iter().any(|v| v.id == self.broker_id);
        let broker_only = self.roles() == Ok(Roles::BrokerOnly);
        if !listed && !broker_only {
            return Err(format!(
                "this broker (broker_id {}) is not among the voters; a voter must be listed (or set process_roles = \"broker\" for a broker that is not a voter)",
                self.broker_id
            ));
        }
        if listed && broker_only {
            return Err(format!(
                "this broker (broker_id {}) is listed as a voter, but process_roles = \"broker\" says it is not one",
                self.broker_id
            ));
        }
        voters.sort_by_key(|v| v.id);
        Ok(voters)
    }

    /// Whether this process holds partitions (a broker) besides voting in the controller
    /// quorum: false for a controller-only voter (`process_roles = "controller"`).
    pub fn roles(&self) -> Result<Roles, String> {
        let mut roles: Vec<&str> = self
            .process_roles
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .collect();
        roles.sort_unstable();
        roles.dedup();
        match roles[..] {
            ["broker", "controller"] => Ok(Roles::Combined),
            ["controller"] => Ok(Roles::ControllerOnly),
            ["broker"] => Ok(Roles::BrokerOnly),
            _ => Err("must be \"broker,controller\", \"controller\" or \"broker\"".into()),
        }
    }

    /// Host given to clients in metadata.
    pub fn advertised_host(&self) -> String {
        if self.advertised_host.is_empty() {
            self.listen.ip().to_string()
        } else {
            self.advertised_host.clone()
        }
    }
}

/// What a process of a cluster is (`process_roles`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Roles {
    /// A voter of the controller quorum that also holds partitions.
    Combined,
    /// A voter that holds no partitions and is not a broker to clients.
    ControllerOnly,
    /// A broker that is not a voter: it follows the metadata log as a raft learner.
    BrokerOnly,
}

/// One voter of the controller quorum: a broker id and the QUIC address it listens on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Voter {
    pub id: u32,
    pub host: String,
    pub port: u16,
}

/// Room a fetch response keeps under the frame limit for its body (partition entries, names):
/// a request names at most 100,000 entries (`proto::api::limits`), about 6.4 MB of body with
/// short names; more than that is refused whole rather than cut.
pub const FETCH_BODY_ROOM: u64 = 8 << 20;

/// The smallest segment.bytes accepted: the engine's own minimum (a topic set below it would
/// have logs that cannot open).
pub const SEGMENT_BYTES_MIN: u64 = quiver_engine::SEGMENT_BYTES_MIN;

/// Bounds of io_memory_bytes_per_shard: glommio's buddy allocator needs room for its own
/// bookkeeping, and the whole region is allocated when the shard starts (and pinned, when
/// io_uring can register it).
const IO_MEMORY_MIN: u64 = 1 << 20;
const IO_MEMORY_MAX: u64 = 16 << 30;

fn read_file(path: &Path) -> Result<FileSettings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Cores this process may run on (its affinity mask), at least 1.
pub fn available_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        let mut all = vec!["streamd"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).expect("parses")
    }

    /// Each process_roles value: the roles it gives, or a piece of the refusal.
    #[test]
    fn process_roles_parse_or_are_refused_with_the_reason() {
        let cases: &[(&str, Result<Roles, &str>)] = &[
            ("broker,controller", Ok(Roles::Combined)),
            (" controller , broker ", Ok(Roles::Combined)),
            ("controller", Ok(Roles::ControllerOnly)),
            ("controller,controller", Ok(Roles::ControllerOnly)),
            ("broker", Ok(Roles::BrokerOnly)),
            ("", Err("must be")),
            ("voter", Err("must be")),
        ];
        for (text, want) in cases {
            let mut c = Config::defaults();
            c.process_roles = text.to_string();
            match (c.roles(), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, *want, "{text:?}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{text:?}: {got}"),
                (got, want) => panic!("{text:?}: {got:?}, wanted {want:?}"),
            }
        }
    }

    /// Each voter list: the voters it gives, or a piece of the refusal.
    #[test]
    fn voter_lists_parse_or_are_refused_with_the_reason() {
        let v = |id, host: &str, port| Voter {
            id,
            host: host.into(),
            port,
        };
        let ok: &[(&str, u32, Vec<Voter>)] = &[
            ("", 1, vec![]),
            ("1@127.0.0.1:9092", 1, vec![v(1, "127.0.0.1", 9092)]),
            (
                " 3@c:3 , 1@a:1,2@b:2 ",
                2,
                vec![v(1, "a", 1), v(2, "b", 2), v(3, "c", 3)],
            ),
            ("1@[::1]:9092", 1, vec![v(1, "::1", 9092)]),
        ];
        for (text, me, want) in ok {
            let mut c = Config::defaults();
            c.controller_voters = text.to_string();
            c.broker_id = *me;
            assert_eq!(&c.voters().unwrap(), want, "{text:?}");
        }
        let bad: &[(&str, u32, &str)] = &[
            ("1@a:1,2@b:2", 3, "not among the voters"),
            ("1@a:1,1@b:2", 1, "listed twice"),
            ("1@a:1,2@a:1", 1, "a:1 is listed twice"),
            ("1@a", 1, "no port"),
            ("1@a:0", 1, "not a port"),
            ("1@a:99999", 1, "not a port"),
            ("0@a:1", 1, "not a broker id"),
            ("x@a:1", 1, "not a broker id"),
            ("a:1", 1, "not id@host:port"),
            ("1@:1", 1, "no host"),
            ("1@a:1,", 1, "not id@host:port"),
        ];
        for (text, me, want) in bad {
            let mut c = Config::defaults();
            c.controller_voters = text.to_string();
            c.broker_id = *me;
            let err = c.voters().unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
        // A broker-only process is not listed; a listed one is not broker-only.
        let mut c = Config::defaults();
        c.controller_voters = "1@a:1,2@b:2,3@c:3".into();
        c.process_roles = "broker".into();
        c.broker_id = 4;
        assert_eq!(c.voters().unwrap().len(), 3);
        c.broker_id = 2;
        let err = c.voters().unwrap_err();
        assert!(err.contains("listed as a voter"), "{err}");
    }

    #[test]
    fn defaults_need_no_flags() {
        let c = Config::load(parse(&[])).expect("defaults are valid");
        assert_eq!(c.listen, "127.0.0.1:9092".parse::<SocketAddr>().unwrap());
        assert_eq!(c.data_dir, PathBuf::from("data"));
        assert_eq!(c.default_retention_ms, 604_800_000);
        assert_eq!(c.default_flush_ms, 0);
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(
            &path,
            "broker_id = 7\ndefault_partitions = 3\nlog_format = \"json\"\n",
        )
        .unwrap();
        let c = Config::load(parse(&[
            "--config",
            path.to_str().unwrap(),
            "--broker-id",
            "9",
        ]))
        .unwrap();
        assert_eq!(c.broker_id, 9, "flag wins over file");
        assert_eq!(c.default_partitions, 3, "file wins over default");
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.shards, 0, "default kept");
    }

    #[test]
    fn unknown_file_key_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(&path, "brokr_id = 7\n").unwrap();
        let err = Config::load(parse(&["--config", path.to_str().unwrap()]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("brokr_id"), "{err}");
    }

    #[test]
    fn bad_values_are_clear_errors() {
        for (args, needle) in [
            (&["--default-partitions", "0"][..], "default_partitions"),
            (&["--default-retention-ms", "0"][..], "default_retention_ms"),
            (
                &["--default-segment-bytes", "100"][..],
                "default_segment_bytes",
            ),
            (&["--metrics-listen", "nonsense"][..], "metrics_listen"),
            (
                &[
                    "--tls-cert",
                    "/nonexistent.pem",
                    "--tls-key",
                    "/nonexistent.key",
                ][..],
                "tls_cert",
            ),
            (&["--tls-cert", "/etc/hostname"][..], "tls_cert/tls_key"),
            (&["--shards", "100000"][..], "shards"),
            (
                &["--max-udp-payload-bytes", "1000"][..],
                "max_udp_payload_bytes",
            ),
            (
                &["--io-memory-bytes-per-shard", "4096"][..],
                "io_memory_bytes_per_shard",
            ),
            (&["--fetch-max-bytes", "0"][..], "fetch_max_bytes"),
            (&["--fetch-max-bytes", "66060288"][..], "fetch_max_bytes"),
            (&["--max-partitions", "0"][..], "max_partitions"),
            (
                &["--max-connections", "10", "--max-connections-per-ip", "11"][..],
                "max_connections_per_ip",
            ),
            (
                &["--request-read-timeout-ms", "0"][..],
                "request_read_timeout_ms",
            ),
        ] {
            let err = Config::load(parse(args)).unwrap_err().to_string();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn default_toml_parses_back_to_the_defaults() {
        let text = Config::default_toml();
        let file: FileSettings = toml::from_str(&text).expect("default config is valid TOML");
        let c = Config::merge(Overrides::default(), file);
        let d = Config::defaults();
        assert_eq!(format!("{c:?}"), format!("{d:?}"));
    }
}

#[cfg(test)]
mod deploy_tests {
    /// deploy/streamd.toml is the commented list of every setting at its default; this keeps it
    /// true. Regenerate with `cargo run --bin streamd -- --print-default-config > deploy/streamd.toml`.
    #[test]
    fn deploy_example_config_matches_the_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/streamd.toml");
        let on_disk = std::fs::read_to_string(path).expect("deploy/streamd.toml exists");
        assert_eq!(
            on_disk,
            super::Config::default_toml(),
            "deploy/streamd.toml is stale: regenerate it with `cargo run --bin streamd -- --print-default-config > deploy/streamd.toml`"
        );
    }
}
