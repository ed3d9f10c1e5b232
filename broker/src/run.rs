//! Starting and stopping the broker: the process, its shards, and the order things happen in.
//!
//! Start: lock the data directory; load TLS and metadata; bind one UDP socket per shard on the
//! QUIC address, in shard order, as a group steered by source port (port 0 becomes a real
//! port); start one glommio executor per shard, pinned to one allowed CPU. Each shard joins the
//! channel mesh, opens (recovers) the logs placed on it, starts its endpoint on its socket and
//! reports ready. When every shard is
//! ready the broker prints one line, `streamd ready quic=ADDR metrics=ADDR`, and /health and /ready
//! turn 200 (/health says 503 "degraded" while a partition log could not be opened).
//!
//! Stop (SIGTERM or SIGINT): in a cluster, first the broker's leaderships move to in-sync
//! followers (`controlled_shutdown`, at most 5 s); then every shard stops accepting connections
//! and lets in-flight requests
//! finish (up to `shutdown_timeout_ms`); once all shards have drained (a request on one shard may
//! still need a log on another), each flushes and closes its logs, and the process exits 0.

use socket2::Socket;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use glommio::channels::channel_mesh::{MeshBuilder, Senders};
use glommio::{LocalExecutorBuilder, Placement};
use quiver_net::{Endpoint, EndpointConfig};
use quiver_proto::api::ApiKey;
use quiver_proto::ShardId;

use crate::cluster::controller::Controller;
use crate::cluster::meta::{FileMetadataStore, MetadataState, MetadataStore};
use crate::cluster::metalog::{FileLog, MetadataLog, QuorumStatus};
use crate::cluster::state::Snapshot;
use crate::cluster::topic::TopicConfig;
use crate::config::Config;
use crate::handlers::Handler;
use crate::metrics::{serve_http, Metrics};
use crate::process::{allowed_cpus, lock_data_dir, watch_signals, ShutdownFlag};
use crate::runtime::{Shard, ShardMsg};

/// Messages waiting between two shards before a sender waits.
const MESH_CHANNEL_CAPACITY: usize = 1024;
/// How often a shard checks the shutdown flag; bounds how long a stop takes to begin.
const SHUTDOWN_POLL: Duration = Duration::from_millis(50);
/// How often a shard publishes its figures for /metrics.
const STATS_INTERVAL: Duration = Duration::from_secs(2);

/// Why the broker could not run. Printed as one line; the process exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Start(#[from] crate::process::StartError),
    #[error("TLS: {0}")]
    Tls(#[from] quiver_net::tls::TlsError),
    #[error("metadata: {0}")]
    Meta(#[from] crate::cluster::meta::MetaError),
    #[error("metadata holds an invalid topic config: {0}")]
    TopicConfig(#[from] crate::cluster::topic::ConfigValueError),
    #[error("cannot listen on {addr} (UDP): {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("security settings: {0}")]
    Security(String),
    #[error("broker identity: {0}")]
    Identity(#[from] crate::identity::IdentityError),
    #[error(transparent)]
    Quorum(#[from] crate::quorum::QuorumError),
    #[error("signals: {0}")]
    Signals(std::io::Error),
    #[error("shard {shard}: {message}")]
    Shard { shard: usize, message: String },
}

pub fn run(mut config: Config) -> Result<(), RunError> {
    let _lock = lock_data_dir(&config.data_dir)?;
    // Absolute from here on: glommio opens directories relative to nothing (a relative path
    // fails with EBADF), and logs should name real paths.
    config.data_dir = std::fs::canonicalize(&config.data_dir).map_err(|source| {
        crate::process::StartError::DataDir {
            path: config.data_dir.clone(),
            source,
        }
    })?;
    let config = Arc::new(config);
    let security = Arc::new(
        crate::security::SecurityConfig::from_config(&config).map_err(RunError::Security)?,
    );
    let quota_buckets = Arc::new(crate::security::quota::Buckets::default());
    // Validated by Config::load.
    let voters = config.voters().unwrap_or_default();
    let clustered = !voters.is_empty();
    let (tls, peer_tls) = server_tls(&config, clustered)?;
    let identity = crate::identity::Identity::load(&config.data_dir, !clustered)?;
    crate::identity::enforce_private_files(&config.data_dir);
    let reset_secret = quiver_net::StatelessResetSecret(Arc::new(identity.reset_secret));
    let cluster_id: Arc<str> = identity.cluster_id.clone().unwrap_or_default().into();
    // Metadata: the file of a broker running alone, or the replayed log of a cluster's quorum.
    let (source, state): (MetaSource, MetadataState) = if clustered {
        let recovered = crate::quorum::recover(&config, &voters)?;
        let state = recovered.state().clone();
        // Topics still to be carried in from this broker's time alone are live, not strays.
        let mut on_disk = state.clone();
        for t in recovered.carried_topics() {
            on_disk
                .topics
                .entry(t.name.clone())
                .or_insert_with(|| t.clone());
        }
        crate::cluster::state::sweep_topic_dirs(&config.data_dir, &on_disk);
        (
            MetaSource::Quorum(Box::new(recovered), identity.cluster_id),
            state,
        )
    } else {
        let store = FileMetadataStore::open(&config.data_dir)?;
        let state = store.state().clone();
        crate::cluster::state::sweep_topic_dirs(&config.data_dir, &state);
        (MetaSource::File(store), state)
    };
    let producer_ids = Arc::new(crate::cluster::controller::ProducerIdsIssued::new(
        state.producer_ids_reserved,
    ));
    let quorum_status =
        clustered.then(|| Arc::new(QuorumStatus::new(voters.iter().map(|v| v.id).collect())));
    let (limits, open_logs_per_shard) = controller_limits(&config);
    let defaults = TopicConfig::defaults(&config);
    let shards = config.shard_count();
    let snapshot = Arc::new(Snapshot::build(&state, &defaults, config.broker_id)?);
    let (sockets, listen) = bind_listen(config.listen, shards)?;
    let mut sockets = sockets.into_iter();
    let metrics = Arc::new(Metrics::new(
        |k| ApiKey::from_u16(k).map(ApiKey::name),
        shards,
    ));
    let metrics_addr = match config.metrics_addr() {
        Some(addr) => Some(
            serve_http(addr, metrics.clone())
                .map_err(|source| RunError::Metrics { addr, source })?,
        ),
        None => None,
    };
    let shutdown = ShutdownFlag::default();
    watch_signals(shutdown.clone()).map_err(RunError::Signals)?;
    let connection_limiter = Arc::new(quiver_net::ConnectionLimiter::new(
        config.max_connections as usize,
        config.max_connections_per_ip as usize,
    ));

    let cpus = allowed_cpus();
    let mesh =
        (shards > 1).then(|| MeshBuilder::<ShardMsg, _>::full(shards, MESH_CHANNEL_CAPACITY));
    let drained = Arc::new(AtomicUsize::new(0));
    let handed_off = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel::<Result<usize, String>>();
    let mut source = Some(source);
    let mut handles = Vec::with_capacity(shards);
    // Validated to fit (at most 16 GiB).
    let io_memory = usize::try_from(config.io_memory_bytes_per_shard).unwrap_or(usize::MAX);
    for i in 0..shards {
        let ctx = ShardContext {
            id: ShardId(i as u32),
            shard_count: shards,
            open_logs_max: open_logs_per_shard,
            config: config.clone(),
            security: security.clone(),
            quota_buckets: quota_buckets.clone(),
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
            snapshot: snapshot.clone(),
            mesh: mesh.clone(),
            source: if i == 0 { source.take() } else { None },
            voters: voters.clone(),
            quorum_status: quorum_status.clone(),
            peer_tls: peer_tls.clone(),
            defaults: defaults.clone(),
            tls: tls.clone(),
            reset_secret: reset_secret.clone(),
            cluster_id: cluster_id.clone(),
            producer_ids: producer_ids.clone(),
            limits: limits.clone(),
            connection_limiter: connection_limiter.clone(),
            listen,
            socket: sockets
                .next()
                .expect("bind_listen binds one socket per shard"),
            drained: drained.clone(),
            handed_off: handed_off.clone(),
            ready: ready_tx.clone(),
        };
        let cpu = cpus[i % cpus.len()];
        let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("shard-{i}"))
            .io_memory(io_memory)
            .spawn(move || shard_main(ctx))
            .map_err(|e| RunError::Shard {
                shard: i,
                message: format!("cannot start executor on CPU {cpu}: {e}"),
            })?;
        handles.push(handle);
    }
    drop(ready_tx);

    for _ in 0..shards {
        match ready_rx.recv() {
            Ok(Ok(_)) => {}
            Ok(Err(message)) => return Err(RunError::Shard { shard: 0, message }),
            Err(_) => {
                return Err(RunError::Shard {
                    shard: 0,
                    message: "a shard stopped during start-up".into(),
                })
            }
        }
    }
    metrics.set_ready(true);
    let metrics_text = metrics_addr.map_or_else(|| "off".to_string(), |a| a.to_string());
    tracing::info!(quic = %listen, metrics = %metrics_text, shards, data_dir = %config.data_dir.display(), "streamd ready");
    // One machine-readable line on stdout, for scripts and tests that start streamd.
    println!("streamd ready quic={listen} metrics={metrics_text}");

    let mut failure = None;
    for (i, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(message)) => failure = Some(RunError::Shard { shard: i, message }),
            Err(e) => {
                failure = Some(RunError::Shard {
                    shard: i,
                    message: format!("executor failed: {e}"),
                })
            }
        }
    }
    match failure {
        Some(e) => Err(e),
        None => {
            tracing::info!("streamd stopped");
            Ok(())
        }
    }
}

/// The controller's limits (the partition cap, the file system's name limit) and how many
/// active-segment files each shard keeps open under the open-file limit (raised to the hard
/// limit first).
fn controller_limits(config: &Config) -> (crate::cluster::controller::Limits, usize) {
    let (soft, hard) = crate::process::raise_open_file_limit();
    let shards = config.shard_count();
    let open_logs = crate::process::open_logs_per_shard(soft, shards);
    tracing::info!(
        soft,
        hard,
        open_logs_per_shard = open_logs,
        "open-file limit: partitions' files beyond the budget are opened on demand"
    );
    // Partitions are bounded by the setting and by memory, whichever is lower; the refusal
    // names the one that binds.
    let mut partitions_max = u64::from(config.max_partitions);
    let mut partitions_max_source = "the max_partitions setting".to_string();
    if let Some((by_memory, source)) = crate::process::partitions_by_memory() {
        tracing::info!(partitions = by_memory, "{source}");
        if by_memory < partitions_max {
            tracing::warn!(
                max_partitions = config.max_partitions,
                by_memory,
                "memory holds fewer partitions than max_partitions allows: {source}"
            );
            (partitions_max, partitions_max_source) = (by_memory, source);
        }
    }
    let limits = crate::cluster::controller::Limits {
        partitions_max,
        partitions_max_source,
        file_name_max: crate::cluster::topic::file_name_max(&config.data_dir),
    };
    (limits, usize::try_from(open_logs).unwrap_or(usize::MAX))
}

/// The QUIC server's TLS configuration, and what this broker trusts when it dials another (the
/// development CA, `tls_peer_ca`, or failing both the client CA; `None` if nothing names one).
///
/// In a cluster, brokers prove who they are to each other: this broker's certificate must name
/// it as `quiver-broker-<id>` (development certificates do), it presents that certificate when
/// it dials another broker, and it accepts (without requiring) client certificates signed by
/// the peer CA, so that a request can be told to come from broker N (`RaftMessage` must).
#[allow(clippy::type_complexity)]
fn server_tls(
    config: &Config,
    clustered: bool,
) -> Result<(Arc<rustls::ServerConfig>, Option<Arc<rustls::ClientConfig>>), RunError> {
    use quiver_net::tls;
    let client_ca =
        (!config.tls_client_ca.as_os_str().is_empty()).then(|| config.tls_client_ca.clone());
    let broker_name = crate::identity::broker_name(config.broker_id);
    let (files, dev_ca) = if config.tls_cert.as_os_str().is_empty() {
        // The certificate names what clients dial: the listen address and the advertised host;
        // in a cluster, the broker too.
        let mut names = vec![config.listen.ip().to_string(), config.advertised_host()];
        if clustered {
            names.push(broker_name.clone());
        }
        let dev = if config.dev_ca_dir.as_os_str().is_empty() {
            tls::ensure_dev_certs_for(&config.data_dir, &names)?
        } else {
            // A shared CA made by this start permits every voter's names too, so the brokers
            // starting after this one find theirs in it.
            let mut voters = Vec::new();
            for v in config.voters().unwrap_or_default() {
                voters.push(crate::identity::broker_name(v.id));
                voters.push(v.host);
            }
            tls::ensure_dev_certs_shared(&config.data_dir, &config.dev_ca_dir, &names, &voters)?
        };
        tracing::info!(ca = %dev.ca_cert.display(), "using the development certificate; clients trust it with the CA file");
        let ca = dev.ca_cert.clone();
        (
            tls::ServerTlsFiles {
                client_ca: client_ca.clone(),
                ..dev.server_files()
            },
            Some(ca),
        )
    } else {
        (
            tls::ServerTlsFiles {
                cert_chain: config.tls_cert.clone(),
                key: config.tls_key.clone(),
                client_ca: client_ca.clone(),
                peer_ca: None,
            },
            None,
        )
    };
    let peer_ca = if !config.tls_peer_ca.as_os_str().is_empty() {
        Some(config.tls_peer_ca.clone())
    } else {
        dev_ca.or(client_ca)
    };
    if !clustered {
        let peer = match peer_ca {
            Some(ca) => Some(tls::client_config(&tls::ClientTlsFiles {
                ca_files: vec![ca],
                identity: None,
            })?),
            None => None,
        };
        return Ok((tls::server_config(&files)?, peer));
    }
    let names = tls::load_certs(&files.cert_chain)?
        .first()
        .and_then(tls::PeerIdentity::from_cert)
        .map(|id| id.dns_names)
        .unwrap_or_default();
    if !names.contains(&broker_name) {
        return Err(RunError::Shard {
            shard: 0,
            message: format!(
                "the broker certificate {} does not name {broker_name} (it names: {}): brokers of a cluster prove who they are to each other with it, so each broker's certificate must carry `{broker_name}` as a DNS name (development certificates do)",
                files.cert_chain.display(),
                names.join(", ")
            ),
        });
    }
    let Some(peer_ca) = peer_ca else {
        return Ok((tls::server_config(&files)?, None));
    };
    let peer = tls::client_config(&tls::ClientTlsFiles {
        ca_files: vec![peer_ca.clone()],
        identity: Some((files.cert_chain.clone(), files.key.clone())),
    })?;
    let files = tls::ServerTlsFiles {
        peer_ca: Some(peer_ca),
        ..files
    };
    Ok((tls::server_config(&files)?, Some(peer)))
}

/// Binds the shards' UDP sockets, one per shard, as a group steered by source port
/// (`quiver_net::bind_steered_group`): socket i is shard i's, and a client reaches shard i from
/// a source port p with p % shards == i. Returns them with the address they share. The first
/// socket is bound without SO_REUSEPORT, so a port anything else holds (another streamd
/// included) is refused, and port 0 becomes a concrete port.
///
/// A broker killed with SIGKILL releases its sockets only when the kernel has torn down its
/// io_uring instances, which happens asynchronously after the process is gone; a restart right
/// after a crash can therefore find the port still held for a moment. Waiting a few seconds for
/// it beats failing, and a port held by a live process stays held and is reported.
fn bind_listen(addr: SocketAddr, shards: usize) -> Result<(Vec<Socket>, SocketAddr), RunError> {
    let deadline = std::time::Instant::now() + LISTEN_RETRY_MAX;
    let mut warned = false;
    loop {
        match quiver_net::bind_steered_group(addr, shards) {
            Ok(bound) => return Ok(bound),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                if !warned {
                    tracing::warn!(%addr, "address in use; waiting for it to be released");
                    warned = true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(source) => return Err(RunError::Listen { addr, source }),
        }
    }
}

/// How long start-up waits for a busy QUIC address to be released.
const LISTEN_RETRY_MAX: Duration = Duration::from_secs(5);

/// Where shard 0's controller gets metadata from.
enum MetaSource {
    File(FileMetadataStore),
    /// A cluster's quorum as recovered, with the cluster id this broker's data has, if any.
    Quorum(Box<crate::quorum::Recovered>, Option<String>),
}

struct ShardContext {
    id: ShardId,
    shard_count: usize,
    /// Active-segment files this shard keeps open (`quiver_engine::set_open_logs_max`).
    open_logs_max: usize,
    config: Arc<Config>,
    security: Arc<crate::security::SecurityConfig>,
    quota_buckets: Arc<crate::security::quota::Buckets>,
    metrics: Arc<Metrics>,
    shutdown: ShutdownFlag,
    snapshot: Arc<Snapshot>,
    mesh: Option<MeshBuilder<ShardMsg, glommio::channels::channel_mesh::Full>>,
    /// Shard 0's: where metadata comes from.
    source: Option<MetaSource>,
    voters: Vec<crate::config::Voter>,
    quorum_status: Option<Arc<QuorumStatus>>,
    /// What a broker trusts when it dials another (the quorum's messages).
    peer_tls: Option<Arc<rustls::ClientConfig>>,
    defaults: TopicConfig,
    tls: Arc<rustls::ServerConfig>,
    reset_secret: quiver_net::StatelessResetSecret,
    cluster_id: Arc<str>,
    producer_ids: Arc<crate::cluster::controller::ProducerIdsIssued>,
    limits: crate::cluster::controller::Limits,
    connection_limiter: Arc<quiver_net::ConnectionLimiter>,
    listen: SocketAddr,
    /// This shard's socket of the steered group.
    socket: Socket,
    drained: Arc<AtomicUsize>,
    /// Set by shard 0 once a stopping broker's leaderships have moved (or it gave up).
    handed_off: Arc<std::sync::atomic::AtomicBool>,
    ready: mpsc::Sender<Result<usize, String>>,
}

async fn shard_main(ctx: ShardContext) -> Result<(), String> {
    let ready = ctx.ready.clone();
    match shard_start(ctx).await {
        Ok(run) => run.await,
        Err(message) => {
            let _ = ready.send(Err(message.clone()));
            Err(message)
        }
    }
}

/// Brings a shard up; returns the future that runs it until shutdown.
async fn shard_start(
    ctx: ShardContext,
) -> Result<impl std::future::Future<Output = Result<(), String>>, String> {
    let id = ctx.id;
    let socket = ctx.socket;
    quiver_engine::init_io_probe(&ctx.config.data_dir)
        .await
        .map_err(|e| format!("I/O probe: {e}"))?;
    quiver_engine::set_open_logs_max(ctx.open_logs_max);
    quiver_engine::readahead::set_shard_budget(
        usize::try_from(ctx.config.readahead_bytes_per_shard).unwrap_or(usize::MAX),
    );
    quiver_engine::tail::set_shard_budget(
        usize::try_from(ctx.config.tail_cache_bytes_per_shard).unwrap_or(usize::MAX),
    );
    let (senders, receivers): (Option<Senders<ShardMsg>>, _) = match ctx.mesh {
        Some(mesh) => {
            let (s, r) = mesh
                .join()
                .await
                .map_err(|_| "joining the shard mesh failed".to_string())?;
            (Some(s), Some(r))
        }
        None => (None, None),
    };
    let mut quorum = None;
    let controller = ctx.source.map(|source| {
        let log: Rc<dyn MetadataLog> = match source {
            MetaSource::File(store) => Rc::new(FileLog::new(Box::new(store))),
            MetaSource::Quorum(recovered, cluster_id) => {
                let q = crate::quorum::Quorum::new(
                    &ctx.config,
                    ctx.voters.clone(),
                    *recovered,
                    cluster_id,
                    ctx.quorum_status
                        .clone()
                        .expect("a cluster has a quorum status"),
                    ctx.defaults.clone(),
                    ctx.producer_ids.clone(),
                );
                quorum = Some(q.clone());
                Rc::new(crate::quorum::QuorumLog(q))
            }
        };
        Controller::new(
            log,
            ctx.snapshot.clone(),
            ctx.config.data_dir.clone(),
            ctx.defaults.clone(),
            ctx.config.default_partitions,
            ctx.producer_ids.clone(),
            ctx.limits.clone(),
        )
    });
    let shard = Rc::new(Shard::new(crate::runtime::ShardInit {
        id,
        shard_count: ctx.shard_count,
        config: ctx.config.clone(),
        security: ctx.security.clone(),
        quota_buckets: ctx.quota_buckets.clone(),
        metrics: ctx.metrics.clone(),
        shutdown: ctx.shutdown.clone(),
        snapshot: ctx.snapshot.clone(),
        mesh: senders,
        controller,
        producer_ids: ctx.producer_ids.clone(),
        quorum: ctx.quorum_status.clone(),
    }));
    shard.set_listen_port(ctx.listen.port());
    shard.set_cluster_id(ctx.cluster_id.clone());

    // Recover this shard's logs before serving anything; messages from other shards wait in
    // the mesh until then.
    shard.apply_local(ctx.snapshot.clone(), &[]).await;
    if let Some(mut receivers) = receivers {
        for (_peer, rx) in receivers.streams() {
            let shard = shard.clone();
            glommio::spawn_local(async move {
                while let Some(msg) = rx.recv().await {
                    shard.serve_msg(msg);
                }
            })
            .detach();
        }
    }

    // The controller makes sure the internal offsets topic exists before the broker says it is
    // ready; every shard has then opened and replayed its offsets partitions. (A cluster's
    // broker does it once it has joined, below: that takes its endpoint serving.)
    if shard.controller.is_some() && quorum.is_none() {
        let op = offsets_topic(&ctx.config);
        if let quiver_proto::api::AnyResponse::CreateTopics(r) =
            crate::handlers::admin_change(&shard, op).await
        {
            if let Some(t) = r
                .topics
                .iter()
                .find(|t| t.error_code != quiver_proto::ErrorCode::None)
            {
                return Err(format!(
                    "creating {}: {:?} {}",
                    crate::group::OFFSETS_TOPIC,
                    t.error_code,
                    t.error_message.clone().unwrap_or_default()
                ));
            }
        }
    }

    let endpoint_config = EndpointConfig {
        frame_bytes_max: ctx.config.max_frame_bytes as usize,
        idle_timeout: Duration::from_millis(ctx.config.idle_timeout_ms),
        udp_payload_max: ctx.config.max_udp_payload_bytes,
        reuse_port: true,
        stateless_reset_secret: Some(ctx.reset_secret.clone()),
        read_timeout: Duration::from_millis(ctx.config.request_read_timeout_ms),
        connection_limiter: ctx.connection_limiter.clone(),
        // Without anonymous access, a connection must authenticate within the deadline (a
        // verified client certificate does at the handshake).
        admit_timeout: (!ctx.security.allow_anonymous)
            .then_some(ctx.security.authentication_timeout),
        ..EndpointConfig::default()
    };
    let endpoint = Endpoint::builder(ctx.listen)
        .config(endpoint_config)
        .server(
            ctx.tls.clone(),
            Handler {
                shard: shard.clone(),
            },
        )
        .socket(socket)
        .bind()
        .map_err(|e| format!("binding {}: {e}", ctx.listen))?;
    tracing::debug!(shard = id.0, addr = %endpoint.local_addr(), partitions = shard.open_logs().len(), "shard serving");

    let endpoint = Rc::new(endpoint);
    if let Some(q) = &quorum {
        let joining = Joining {
            config: &ctx.config,
            listen: ctx.listen,
            shard_count: ctx.shard_count,
            peer_tls: ctx.peer_tls.clone(),
        };
        join_cluster(&shard, q, joining, endpoint.local_addr()).await?;
    }
    // In a cluster, every shard copies the partitions it follows from their leaders.
    if !ctx.config.voters().unwrap_or_default().is_empty() {
        if let Some(tls) = ctx.peer_tls.clone() {
            crate::replication::start(shard.clone(), endpoint.local_addr().ip(), tls)?;
        }
    }
    spawn_background(&shard);
    {
        let (shard, endpoint) = (shard.clone(), endpoint.clone());
        glommio::spawn_local(async move {
            loop {
                shard
                    .metrics
                    .set_endpoint(shard.id.0 as usize, &endpoint.stats());
                glommio::timer::sleep(STATS_INTERVAL).await;
            }
        })
        .detach();
    }
    let _ = ctx.ready.send(Ok(id.0 as usize));
    inject_panic_fault(id);

    let shards = shard.shard_count();
    Ok(async move {
        while !shard.shutdown.is_set() {
            glommio::timer::sleep(SHUTDOWN_POLL).await;
        }
        // In a cluster, leaderships move away before anything stops serving (shard 0, where
        // the quorum runs, asks; the other shards wait for it, within a bound).
        if shard.id.0 == 0 {
            if quorum.is_some() {
                controlled_shutdown(&shard).await;
            }
            ctx.handed_off.store(true, Ordering::Release);
        } else {
            let waited = std::time::Instant::now();
            while !ctx.handed_off.load(Ordering::Acquire) && waited.elapsed() < HANDOFF_MAX {
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
        let grace = Duration::from_millis(shard.config.shutdown_timeout_ms);
        endpoint.shutdown(grace).await;
        // Keep serving other shards' partition requests until every shard has drained.
        ctx.drained.fetch_add(1, Ordering::AcqRel);
        while ctx.drained.load(Ordering::Acquire) < shards {
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        shard.close_logs().await;
        tracing::debug!(shard = id.0, "shard stopped");
        Ok(())
    })
}

/// Longest a stopping broker waits for its leaderships to move away before it stops anyway.
const HANDOFF_MAX: Duration = Duration::from_secs(5);
/// How long one attempt at the hand-over waits for its commit.
const HANDOFF_ATTEMPT: Duration = Duration::from_millis(1500);
/// How long a stopping broker's quorum may have no leader before it gives the hand-over up.
const NO_QUORUM_WAIT: Duration = Duration::from_millis(1500);

/// A cluster's broker stopping cleanly: asks the quorum to move its leaderships to in-sync
/// followers and take it out of every ISR (`ControlledShutdown`), and waits until that is
/// committed and applied here (so this broker answers `NotLeaderOrFollower` from now on and
/// clients move), at most `HANDOFF_MAX`.
async fn controlled_shutdown(shard: &Rc<Shard>) {
    let Some(q) = crate::quorum::on_this_shard() else {
        return;
    };
    let me = shard.config.broker_id;
    let led = shard
        .snapshot()
        .topics
        .values()
        .flat_map(|t| t.meta.placement.iter())
        .filter(|p| p.leader == me)
        .count();
    let started = std::time::Instant::now();
    let cmd = crate::cluster::meta::MetadataCommand::ControlledShutdown {
        id: me,
        incarnation: crate::cluster::state::incarnation(),
    };
    // The last brokers of a cluster stopping: once the quorum has had no leader for a while
    // (no majority left), nothing can commit and nobody could take the leaderships over.
    let leaderless = async {
        let mut since: Option<std::time::Instant> = None;
        loop {
            match (shard.quorum.as_ref().and_then(|s| s.leader()), since) {
                (Some(_), _) => since = None,
                (None, None) => since = Some(std::time::Instant::now()),
                (None, Some(t)) if t.elapsed() >= NO_QUORUM_WAIT => return,
                (None, Some(_)) => {}
            }
            glommio::timer::sleep(Duration::from_millis(50)).await;
        }
    };
    // In short attempts: a proposal made while the leader was changing (a broker stopped just
    // before this one, say) is lost with it, and is made again to the next leader; one that
    // commits twice, or late, is harmless (the same incarnation, or a stale one).
    let attempts = async {
        let mut last = None;
        loop {
            match crate::quorum::within(HANDOFF_ATTEMPT, q.propose(cmd.clone())).await {
                Some(Ok(applied)) => return Ok(applied),
                Some(Err(crate::cluster::meta::MetaError::Stale(why))) => {
                    return Err(crate::cluster::meta::MetaError::Stale(why))
                }
                Some(Err(e)) => last = Some(e),
                None => {}
            }
            if started.elapsed() + HANDOFF_ATTEMPT > HANDOFF_MAX {
                return Err(last.unwrap_or_else(|| {
                    crate::cluster::meta::MetaError::Unavailable(format!(
                        "not committed within {} s",
                        HANDOFF_MAX.as_secs()
                    ))
                }));
            }
            glommio::timer::sleep(Duration::from_millis(100)).await;
        }
    };
    let proposed = futures_lite::future::or(attempts, async {
        leaderless.await;
        Err(crate::cluster::meta::MetaError::Unavailable(format!(
            "the controller quorum has had no leader for {} ms (no majority left)",
            NO_QUORUM_WAIT.as_millis()
        )))
    });
    match proposed.await {
        Ok(_) => tracing::info!(
            leaderships = led,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "controlled shutdown: leaderships moved to in-sync followers"
        ),
        Err(e) => tracing::warn!(error = %e, "controlled shutdown not committed; stopping anyway"),
    }
}

/// How long a broker joining a cluster waits for every voter to register before it makes sure
/// the offsets topic exists (see `join_cluster`).
const OFFSETS_PLACEMENT_WAIT: Duration = Duration::from_secs(5);

/// The internal offsets topic as the controller ensures it at start: kept for ever, in 64 MiB
/// segments.
fn offsets_topic(config: &Config) -> crate::cluster::controller::AdminOp {
    crate::cluster::controller::AdminOp::EnsureTopic {
        name: crate::group::OFFSETS_TOPIC.to_string(),
        partitions: config.offsets_topic_partitions,
        replication_factor: config.offsets_topic_replication_factor,
        configs: [
            ("retention.ms".to_string(), "-1".to_string()),
            ("segment.bytes".to_string(), (64u64 << 20).to_string()),
        ]
        .into(),
        internal: true,
    }
}

/// A cluster's broker, on shard 0 with its endpoint serving: starts the quorum, waits until the
/// cluster id is fixed and this broker is registered (retrying, and saying so, while no
/// majority of voters is up), then makes sure the offsets topic exists.
struct Joining<'a> {
    config: &'a Config,
    listen: SocketAddr,
    shard_count: usize,
    peer_tls: Option<Arc<rustls::ClientConfig>>,
}

async fn join_cluster(
    shard: &Rc<Shard>,
    quorum: &Rc<crate::quorum::Quorum>,
    ctx: Joining<'_>,
    local: SocketAddr,
) -> Result<(), String> {
    let peer_tls = ctx
        .peer_tls
        .clone()
        .ok_or("a cluster needs a CA to verify the other brokers (tls_peer_ca)")?;
    quorum
        .start(shard.clone(), local.ip(), peer_tls)
        .map_err(|e| e.to_string())?;
    let me = crate::cluster::meta::BrokerMeta {
        id: ctx.config.broker_id,
        host: ctx.config.advertised_host(),
        port: ctx.listen.port(),
        rack: (!ctx.config.rack.is_empty()).then(|| ctx.config.rack.clone()),
        shard_count: ctx.shard_count as u16,
        incarnation: {
            let i = rand::random();
            crate::cluster::state::set_incarnation(i);
            i
        },
        epoch: 0,
        fenced: false,
        controller_only: ctx.config.roles() == Ok(crate::config::Roles::ControllerOnly),
        shutting_down: false,
    };
    let controller_only = me.controller_only;
    quorum.join(me).await?;
    // The offsets topic is placed over the voters that are brokers, so it waits (a little) to
    // know which are: until every voter has registered, or OFFSETS_PLACEMENT_WAIT has passed
    // (a voter down at the cluster's first start is then taken to be a broker).
    let waited = std::time::Instant::now();
    while !controller_only
        && !quorum.voters_registered()
        && waited.elapsed() < OFFSETS_PLACEMENT_WAIT
    {
        glommio::timer::sleep(Duration::from_millis(50)).await;
    }
    let op = offsets_topic(ctx.config);
    // A controller-only voter holds no partitions: the brokers make the offsets topic.
    let mut made = controller_only;
    while !made {
        let failure = match crate::handlers::admin_change(shard, op.clone()).await {
            quiver_proto::api::AnyResponse::CreateTopics(r) => r
                .topics
                .into_iter()
                .find(|t| {
                    !matches!(
                        t.error_code,
                        quiver_proto::ErrorCode::None | quiver_proto::ErrorCode::TopicAlreadyExists
                    )
                })
                .map(|t| format!("{:?} {}", t.error_code, t.error_message.unwrap_or_default())),
            _ => None,
        };
        match failure {
            None => made = true,
            Some(why) => {
                tracing::warn!(topic = crate::group::OFFSETS_TOPIC, error = %why, "creating the offsets topic; retrying");
                glommio::timer::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    tracing::info!(
        broker = ctx.config.broker_id,
        cluster = %quorum.cluster_id().unwrap_or_default(),
        "joined the cluster"
    );
    Ok(())
}

/// Test builds only: `STREAMD_FAULT_PANIC_SHARD=<n>` makes shard n panic shortly after the broker
/// is ready, so a test can check that a panicking shard takes the whole process down
/// (`process::exit_on_panic`). Release builds have no such switch.
fn inject_panic_fault(id: ShardId) {
    #[cfg(debug_assertions)]
    if std::env::var("STREAMD_FAULT_PANIC_SHARD")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        == Some(id.0)
    {
        glommio::spawn_local(async move {
            glommio::timer::sleep(Duration::from_millis(200)).await;
            panic!(
                "fault injected by STREAMD_FAULT_PANIC_SHARD on shard {}",
                id.0
            );
        })
        .detach();
    }
    #[cfg(not(debug_assertions))]
    let _ = id;
}

/// How often group members' session and rebalance deadlines are checked.
const GROUP_SWEEP: Duration = Duration::from_millis(100);
/// How often empty groups' offsets are checked for expiry.
const OFFSETS_EXPIRY_SWEEP: Duration = Duration::from_secs(60);

fn spawn_background(shard: &Rc<Shard>) {
    let s = shard.clone();
    glommio::spawn_local(async move {
        let mut last_expiry = std::time::Instant::now();
        loop {
            glommio::timer::sleep(GROUP_SWEEP).await;
            let snapshot = s.snapshot();
            let partitions = |t: &str| {
                snapshot
                    .topic(t)
                    .filter(|i| !i.internal)
                    .map(|i| i.meta.partitions)
            };
            s.groups.expire_members(&partitions);
            if last_expiry.elapsed() >= OFFSETS_EXPIRY_SWEEP {
                last_expiry = std::time::Instant::now();
                let Some(info) = snapshot.topic(crate::group::OFFSETS_TOPIC) else {
                    continue;
                };
                for (group, p) in s.groups.expired_groups(info.meta.partitions) {
                    if let Ok(log) = s.log(&info.key(p)) {
                        s.groups
                            .delete_expired(&log, &group, info.meta.partitions)
                            .await;
                    }
                }
            }
        }
    })
    .detach();
    let s = shard.clone();
    glommio::spawn_local(async move {
        let interval = Duration::from_millis(s.config.retention_check_interval_ms);
        loop {
            glommio::timer::sleep(interval).await;
            if s.shutdown.is_set() {
                return;
            }
            s.retention_pass().await;
        }
    })
    .detach();
    let s = shard.clone();
    glommio::spawn_local(async move {
        loop {
            s.publish_stats();
            glommio::timer::sleep(STATS_INTERVAL).await;
        }
    })
    .detach();
}
