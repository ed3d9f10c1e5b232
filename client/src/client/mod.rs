//! The client: bootstrap, connections (one per broker, and one per shard of a broker with
//! several, each authenticated once when made, `sasl.rs`), cluster metadata, and its
//! configuration ([`ClientConfig`]).
//! `Producer`, `Consumer` and `Admin` are built on a [`Client`]; applications make one and pass
//! it on. Its raw calls (typed requests to a broker) are hidden from the documentation: they
//! are for streamctl, the benchmarks and tests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use quiver_proto::api::handshake::{
    ApiVersionsRequest, ApiVersionsResponse, SaslAuthenticateRequest, SaslAuthenticateResponse,
    SaslHandshakeRequest, SaslHandshakeResponse,
};
use quiver_proto::api::metadata::{MetadataRequest, MetadataResponse};
use quiver_proto::api::{self, ApiKey, Request, ResponseError};
use quiver_proto::{BrokerId, ErrorCode, PartitionId};

use crate::error::{BrokerAddr, Error, Result};
use crate::transport::{ClientTls, Connection, PendingCall, TransportError};

mod config;
mod sasl;

pub use config::{parse_mechanism, ClientConfig, SaslCredentials, DEFAULT_BOOTSTRAP};

/// One broker as metadata describes it.
///
/// ```no_run
/// # async fn f(client: quiver_client::Client) {
/// for (id, b) in &client.cluster().brokers {
///     println!("broker {id} at {}:{}", b.host, b.port);
/// }
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerInfo {
    /// The broker's id.
    pub id: BrokerId,
    /// The host name or address clients connect to.
    pub host: String,
    /// The QUIC (UDP) port.
    pub port: u16,
    /// Shards (cores) of the broker, each owning some partitions; 0 or 1 when the broker does
    /// not say. See [`Node`].
    pub shards: u16,
}

/// Where requests for a partition go: its leader, and the leader's shard (core) that owns it.
/// The client keeps one connection per broker and, for brokers with several shards, one per
/// shard, sent from a UDP source port the broker steers to that shard; a request for a
/// partition on its shard's connection is served without a hop between the broker's cores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Node {
    /// The broker.
    pub broker: BrokerId,
    /// `None`: the broker's shared connection (any shard).
    pub shard: Option<u16>,
}

impl Node {
    /// A broker's shared connection.
    pub fn broker(broker: BrokerId) -> Node {
        Node {
            broker,
            shard: None,
        }
    }
}

impl From<BrokerId> for Node {
    fn from(broker: BrokerId) -> Node {
        Node::broker(broker)
    }
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.shard {
            Some(s) => write!(f, "{}/{}", self.broker, s),
            None => write!(f, "{}", self.broker),
        }
    }
}

/// One partition as metadata describes it.
///
/// ```no_run
/// # async fn f(client: quiver_client::Client) -> quiver_client::Result<()> {
/// let t = client.topic("orders").await?;
/// let p = &t.partitions[0];
/// println!("partition {} led by {:?}, replicas {:?}, in sync {:?}", p.partition, p.leader, p.replicas, p.isr);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionInfo {
    /// The partition's number.
    pub partition: PartitionId,
    /// The broker that leads it; `None` while it has no leader.
    pub leader: Option<BrokerId>,
    /// The leader's shard that owns the partition, when the broker says.
    pub leader_shard: Option<u16>,
    /// The brokers that hold a replica.
    pub replicas: Vec<BrokerId>,
    /// The replicas in sync with the leader.
    pub isr: Vec<BrokerId>,
    /// While a reassignment runs: the replicas being added (catching up).
    pub adding: Vec<BrokerId>,
    /// While a reassignment runs: the replicas removed once the new ones are in sync.
    pub removing: Vec<BrokerId>,
    /// Replicas that serve nothing: on a broker that is fenced or gone, or whose log of the
    /// partition could not be opened (the partition is offline when its leader's is).
    pub offline: Vec<BrokerId>,
}

impl PartitionInfo {
    /// Where requests for this partition go, `None` without a leader.
    pub fn leader_node(&self) -> Option<Node> {
        self.leader.map(|broker| Node {
            broker,
            shard: self.leader_shard,
        })
    }
}

/// One topic as metadata describes it.
///
/// ```no_run
/// # async fn f(client: quiver_client::Client) -> quiver_client::Result<()> {
/// let t = client.topic("orders").await?;
/// println!("{} has {} partitions", t.name, t.partitions.len());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicInfo {
    /// The topic's name.
    pub name: String,
    /// The topic's id (a UUID as a number).
    pub id: u128,
    /// An internal topic (`__consumer_offsets`, ...).
    pub internal: bool,
    /// Its partitions, by number.
    pub partitions: Vec<PartitionInfo>,
}

/// What the client knows of the cluster: a snapshot, replaced on refresh.
///
/// ```no_run
/// # async fn f(client: quiver_client::Client) -> quiver_client::Result<()> {
/// let view = client.refresh_metadata(None).await?;
/// println!("controller {:?}, {} topics", view.controller, view.topics.len());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct ClusterView {
    /// The brokers, by id.
    pub brokers: HashMap<BrokerId, BrokerInfo>,
    /// The broker that makes topic changes.
    pub controller: Option<BrokerId>,
    /// The cluster's id.
    pub cluster_id: Option<String>,
    /// The topics the client has loaded, by name.
    /// Shared: a view is copied on every refresh, and a topic may have 100,000 partitions.
    pub topics: HashMap<String, Arc<TopicInfo>>,
}

/// A handle on a cluster; cheap to clone, `Send + Sync`. Producers, consumers and admins made
/// from one `Client` share its connections and its metadata.
///
/// ```no_run
/// # async fn f() -> quiver_client::Result<()> {
/// use quiver_client::{Client, ClientConfig};
/// // Trusts ./data/tls/ca.pem, the CA a local `streamd` writes on first start.
/// let client = Client::connect(ClientConfig::new("127.0.0.1:9092")).await?;
/// let leader = client.leader("orders", quiver_client::PartitionId(0)).await?;
/// # let _ = leader; Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    tls: ClientTls,
    correlation: AtomicU32,
    connections: tokio::sync::Mutex<HashMap<ConnKey, Connection>>,
    cluster: RwLock<Arc<ClusterView>>,
    /// Bumped each time `cluster` is replaced: what a cache of it checks to stay current.
    metadata_generation: AtomicU64,
    /// The broker that answered the bootstrap, used for calls that any broker can serve.
    bootstrap: RwLock<Option<(SocketAddr, String)>>,
    /// Resolved addresses of brokers by id (cleared when metadata changes a broker's address).
    addrs: RwLock<HashMap<BrokerId, (SocketAddr, String)>>,
    /// What the bootstrap broker answered to ApiVersions, asked once on first need.
    api_versions: tokio::sync::OnceCell<ApiVersionsResponse>,
}

/// A connection's key: the broker's address, and for a shard's own connection the shard and
/// the broker's shard count (the source port is chosen modulo the count).
type ConnKey = (SocketAddr, Option<(u16, u16)>);

impl Client {
    /// Connects to the first bootstrap broker that answers and loads the cluster's metadata.
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        if config.bootstrap.is_empty() {
            return Err(Error::Config("no bootstrap server given".into()));
        }
        let tls = match &config.tls {
            Some(t) => t.clone(),
            None => ClientTls::dev_default().map_err(|e| match e {
                TransportError::Config(message) => Error::Config(message),
                other => Error::from(other),
            })?,
        };
        let client = Client {
            inner: Arc::new(Inner {
                config,
                tls,
                correlation: AtomicU32::new(1),
                connections: tokio::sync::Mutex::new(HashMap::new()),
                cluster: RwLock::new(Arc::new(ClusterView::default())),
                metadata_generation: AtomicU64::new(0),
                bootstrap: RwLock::new(None),
                addrs: RwLock::new(HashMap::new()),
                api_versions: tokio::sync::OnceCell::new(),
            }),
        };
        let mut last = None;
        for server in client.inner.config.bootstrap.clone() {
            match client.bootstrap_from(&server).await {
                Ok(()) => return Ok(client),
                Err(e) => {
                    tracing::debug!(server = %server, error = %e, "bootstrap server did not answer");
                    last = Some(e);
                }
            }
        }
        Err(last.expect("at least one bootstrap server was tried"))
    }

    async fn bootstrap_from(&self, server: &str) -> Result<()> {
        let (addr, host) = resolve(server).await?;
        let key = (addr, None);
        let conn = self.connection(key, &host, None).await?;
        let (resp, _) = self
            .call_on::<MetadataRequest>(
                &conn,
                key,
                &MetadataRequest {
                    topics: None,
                    allow_auto_topic_creation: false,
                },
                Vec::new(),
            )
            .await?;
        *self.inner.bootstrap.write().expect("not poisoned") = Some((addr, host));
        self.install(resp, true);
        Ok(())
    }

    /// The cluster as last seen.
    pub fn cluster(&self) -> Arc<ClusterView> {
        self.inner.cluster.read().expect("not poisoned").clone()
    }

    /// How long one call may take (`ClientConfig::request_timeout`).
    pub fn call_timeout(&self) -> std::time::Duration {
        self.inner.config.connect.call_timeout
    }

    /// Reloads metadata for these topics (all topics when `None`) and returns the new view.
    pub async fn refresh_metadata(&self, topics: Option<Vec<String>>) -> Result<Arc<ClusterView>> {
        let all = topics.is_none();
        let (resp, _) = self
            .call_any(
                &MetadataRequest {
                    topics,
                    allow_auto_topic_creation: false,
                },
                Vec::new(),
            )
            .await?;
        Ok(self.install(resp, all))
    }

    /// The names of every topic that exists now, internal topics left out (they are listed
    /// only when asked for by name); refreshes the cached metadata on the way.
    pub(crate) async fn topic_names(&self) -> Result<Vec<String>> {
        let view = self.refresh_metadata(None).await?;
        let mut names: Vec<String> = view
            .topics
            .values()
            .filter(|t| !t.internal)
            .map(|t| t.name.clone())
            .collect();
        names.sort();
        Ok(names)
    }

    /// The bootstrap broker's ApiVersions answer, asked on first use and cached.
    #[doc(hidden)]
    pub async fn api_versions(&self) -> Result<&ApiVersionsResponse> {
        self.inner
            .api_versions
            .get_or_try_init(|| async {
                let req = ApiVersionsRequest {
                    client_software_name: "quiver-rust".into(),
                    client_software_version: env!("CARGO_PKG_VERSION").into(),
                    client_id: Some(self.inner.config.client_id.clone()),
                };
                Ok::<_, Error>(self.call_any(&req, Vec::new()).await?.0)
            })
            .await
    }

    /// Whether the cluster serves `api` (per the bootstrap broker's ApiVersions).
    pub async fn supports(&self, api: ApiKey) -> Result<bool> {
        let versions = self.api_versions().await?;
        Ok(versions
            .api_keys
            .iter()
            .any(|r| r.api_key == api.as_u16() && (r.min_version..=r.max_version).contains(&0)))
    }

    /// `Ok` if the cluster serves `api`, else a typed [`Error::Unsupported`] naming it.
    pub async fn require(&self, api: ApiKey, what: &str) -> Result<()> {
        if self.supports(api).await? {
            return Ok(());
        }
        Err(Error::Unsupported {
            api: api.name(),
            reason: format!(
                "{what} needs the {} API, which this broker does not serve",
                api.name()
            ),
        })
    }

    /// Installs a metadata answer; `all`: it lists every topic, so topics it leaves out were
    /// deleted and leave the cache.
    fn install(&self, resp: MetadataResponse, all: bool) -> Arc<ClusterView> {
        let mut guard = self.inner.cluster.write().expect("not poisoned");
        let mut view = (**guard).clone();
        if all {
            // Internal topics are listed only when asked for by name: they stay.
            view.topics
                .retain(|name, t| t.internal || resp.topics.iter().any(|r| r.name == *name));
        }
        view.cluster_id = resp.cluster_id.clone();
        view.brokers = resp
            .brokers
            .into_iter()
            .map(|b| {
                (
                    b.broker_id,
                    BrokerInfo {
                        id: b.broker_id,
                        host: b.host,
                        port: b.port,
                        shards: b.shard_count,
                    },
                )
            })
            .collect();
        view.controller = resp.controller_id;
        {
            // Forget resolved addresses of brokers whose address changed or that left.
            let mut addrs = self.inner.addrs.write().expect("not poisoned");
            addrs.retain(|id, (addr, host)| {
                view.brokers.get(id).is_some_and(|b| {
                    b.port == addr.port()
                        && b.host.trim_start_matches('[').trim_end_matches(']') == host
                })
            });
        }
        for t in resp.topics {
            if t.error_code == ErrorCode::UnknownTopicOrPartition {
                view.topics.remove(&t.name);
                continue;
            }
            if t.error_code != ErrorCode::None {
                continue;
            }
            let mut partitions: Vec<PartitionInfo> = t
                .partitions
                .into_iter()
                .map(|p| PartitionInfo {
                    partition: p.partition,
                    leader: p.leader,
                    leader_shard: p.leader_shard,
                    replicas: p.replicas,
                    isr: p.isr,
                    adding: p.adding_replicas,
                    removing: p.removing_replicas,
                    offline: p.offline_replicas,
                })
                .collect();
            partitions.sort_by_key(|p| p.partition);
            view.topics.insert(
                t.name.clone(),
                Arc::new(TopicInfo {
                    name: t.name,
                    id: t.topic_id.0,
                    internal: t.is_internal,
                    partitions,
                }),
            );
        }
        let view = Arc::new(view);
        *guard = view.clone();
        self.inner
            .metadata_generation
            .fetch_add(1, Ordering::Release);
        view
    }

    /// A topic's metadata, loading it if the client has not seen the topic yet. Shared with
    /// the client's cache, not copied.
    pub async fn topic(&self, name: &str) -> Result<Arc<TopicInfo>> {
        if let Some(t) = self.cluster().topics.get(name) {
            return Ok(t.clone());
        }
        let (resp, _) = self
            .call_any(
                &MetadataRequest {
                    topics: Some(vec![name.to_string()]),
                    allow_auto_topic_creation: false,
                },
                Vec::new(),
            )
            .await?;
        // A topic this principal may not describe is not a missing one: say so, and the
        // producer and consumer do not wait for it to appear.
        let refused = resp
            .topics
            .iter()
            .find(|t| t.name == name && t.error_code == ErrorCode::TopicAuthorizationFailed)
            .map(|t| t.error_code);
        let view = self.install(resp, false);
        if let Some(code) = refused {
            return Err(Error::broker(
                code,
                Some(format!("not authorized to describe topic '{name}'")),
            ));
        }
        view.topics.get(name).cloned().ok_or_else(|| {
            Error::broker(
                ErrorCode::UnknownTopicOrPartition,
                Some(format!("topic '{name}' does not exist")),
            )
        })
    }

    /// Changes whenever the cached metadata is replaced: a value derived from the cache stays
    /// right while this stays the same (read it before deriving).
    pub(crate) fn metadata_generation(&self) -> u64 {
        self.inner.metadata_generation.load(Ordering::Acquire)
    }

    /// A topic's partition count from cached metadata, without copying the topic's metadata.
    pub(crate) fn cached_partition_count(&self, name: &str) -> Option<u32> {
        let guard = self.inner.cluster.read().expect("not poisoned");
        guard.topics.get(name).map(|t| t.partitions.len() as u32)
    }

    /// The broker leading a partition, from cached metadata.
    pub async fn leader(&self, topic: &str, partition: PartitionId) -> Result<BrokerId> {
        // From the cached view without copying the topic: callers ask for every partition of a
        // topic in turn, and a topic may have 100,000.
        let cluster = self.cluster();
        if let Some(p) = cluster
            .topics
            .get(topic)
            .and_then(|t| t.partitions.get(partition.0 as usize))
        {
            if let Some(leader) = p.leader {
                return Ok(leader);
            }
        }
        drop(cluster);
        let t = self.topic(topic).await?;
        let p = t.partitions.get(partition.0 as usize).ok_or_else(|| {
            Error::broker(
                ErrorCode::UnknownTopicOrPartition,
                Some(format!(
                    "topic '{topic}' has {} partitions; partition {} does not exist",
                    t.partitions.len(),
                    partition.0
                )),
            )
        })?;
        p.leader.ok_or_else(|| {
            Error::broker(
                ErrorCode::LeaderNotAvailable,
                Some(format!("{topic}/{} has no leader", partition.0)),
            )
        })
    }

    /// Calls any broker, for requests every broker can serve: the broker that answered last,
    /// or, when it cannot be reached, the other known brokers and then the bootstrap list (the
    /// one that answers is used from then on). A request that was sent and then lost is tried
    /// elsewhere only if reading it twice does no harm (metadata, offsets, configs).
    #[doc(hidden)]
    pub async fn call_any<R: Request>(
        &self,
        req: &R,
        payload: Vec<Bytes>,
    ) -> Result<(R::Response, Bytes)> {
        let target = self.inner.bootstrap.read().expect("not poisoned").clone();
        let first = match target {
            Some(t) => t,
            None => resolve(&self.inner.config.bootstrap[0]).await?,
        };
        let err = match self.call_at::<R>(&first, req, payload.clone()).await {
            Ok(r) => return Ok(r),
            Err((sent, e)) => {
                let transport =
                    matches!(&e, Error::Transport { error, .. } if error.is_retriable());
                if !transport || (sent && !idempotent(R::API)) {
                    return Err(e);
                }
                e
            }
        };
        let mut candidates: Vec<String> = self
            .cluster()
            .brokers
            .values()
            .map(|b| format!("{}:{}", b.host, b.port))
            .collect();
        candidates.sort();
        candidates.extend(self.inner.config.bootstrap.iter().cloned());
        candidates.dedup();
        for c in candidates {
            let Ok(next) = resolve(&c).await else {
                continue;
            };
            if next.0 == first.0 {
                continue;
            }
            if let Ok(r) = self.call_at::<R>(&next, req, payload.clone()).await {
                tracing::debug!(from = %first.0, to = %next.0, "switched to another broker");
                *self.inner.bootstrap.write().expect("not poisoned") = Some(next);
                return Ok(r);
            }
        }
        Err(err)
    }

    /// One call to one address. The error says whether the request was sent.
    async fn call_at<R: Request>(
        &self,
        (addr, host): &(SocketAddr, String),
        req: &R,
        payload: Vec<Bytes>,
    ) -> std::result::Result<(R::Response, Bytes), (bool, Error)> {
        let key = (*addr, None);
        let conn = self
            .connection(key, host, None)
            .await
            .map_err(|e| (false, e))?;
        self.call_on::<R>(&conn, key, req, payload)
            .await
            .inspect_err(|e| self.forget_on_error(key, e))
            .map_err(|e| (true, e))
    }

    /// Calls one broker by id (the leader of a partition, the group coordinator), on its shared
    /// connection, or one shard of it on that shard's connection (a [`Node`]).
    #[doc(hidden)]
    pub async fn call_broker<R: Request>(
        &self,
        broker: impl Into<Node>,
        req: &R,
        payload: Vec<Bytes>,
    ) -> Result<(R::Response, Bytes)> {
        self.start_call_broker(broker, req, payload)
            .await?
            .response()
            .await
    }

    /// The first half of [`call_broker`](Self::call_broker): returns once the request is
    /// written to the broker (bulk requests on a connection are written one after another, in
    /// the order they get here); [`PendingResponse::response`] reads the answer.
    #[doc(hidden)]
    pub async fn start_call_broker<R: Request>(
        &self,
        broker: impl Into<Node>,
        req: &R,
        payload: Vec<Bytes>,
    ) -> Result<PendingResponse<R>> {
        self.start_call_node(broker.into(), req, payload, false)
            .await
    }

    /// [`start_call_broker`](Self::start_call_broker) for a request that must reach the broker
    /// after every request started before it on the connection, small or not
    /// ([`Connection::start_call_in_order`](crate::transport::Connection::start_call_in_order)):
    /// an idempotent producer's pipelined requests.
    #[doc(hidden)]
    pub async fn start_call_broker_in_order<R: Request>(
        &self,
        broker: impl Into<Node>,
        req: &R,
        payload: Vec<Bytes>,
    ) -> Result<PendingResponse<R>> {
        self.start_call_node(broker.into(), req, payload, true)
            .await
    }

    async fn start_call_node<R: Request>(
        &self,
        node: Node,
        req: &R,
        payload: Vec<Bytes>,
        in_order: bool,
    ) -> Result<PendingResponse<R>> {
        let (key, conn) = self.node_connection(node).await?;
        match conn
            .start_framed(
                self.next_header::<R>(),
                req.encode_bytes(),
                payload,
                in_order,
            )
            .await
        {
            Ok(call) => Ok(PendingResponse {
                client: self.clone(),
                key,
                node,
                call,
                _api: std::marker::PhantomData,
            }),
            Err(e) => {
                let e = self.at(key, Some(node), e);
                self.forget_on_error(key, &e);
                Err(e)
            }
        }
    }

    /// Sends a request to one broker and returns once it is written, without waiting for the
    /// answer (acks=0 produce).
    #[doc(hidden)]
    pub async fn send_broker_oneway<R: Request>(
        &self,
        broker: impl Into<Node>,
        req: &R,
        payload: Vec<Bytes>,
    ) -> Result<()> {
        let node = broker.into();
        let (key, conn) = self.node_connection(node).await?;
        conn.send_only(self.next_header::<R>(), req.encode_bytes(), payload)
            .await
            .map_err(|e| self.at(key, Some(node), e))
            .inspect_err(|e| self.forget_on_error(key, e))
    }

    /// The connection for a node: the broker's shared one, or, for a shard of a broker with
    /// several, the shard's own (sent from a source port the broker steers to it).
    async fn node_connection(&self, node: Node) -> Result<(ConnKey, Connection)> {
        let broker = node.broker;
        let cached = self
            .inner
            .addrs
            .read()
            .expect("not poisoned")
            .get(&broker)
            .cloned();
        let (addr, host) = match cached {
            Some(a) => a,
            None => {
                let info = match self.cluster().brokers.get(&broker) {
                    Some(b) => b.clone(),
                    None => self
                        .refresh_metadata(None)
                        .await?
                        .brokers
                        .get(&broker)
                        .cloned()
                        .ok_or_else(|| {
                            Error::broker(
                                ErrorCode::BrokerNotAvailable,
                                Some(format!("broker {broker} is not in the cluster metadata")),
                            )
                        })?,
                };
                let resolved = resolve(&format!("{}:{}", info.host, info.port)).await?;
                self.inner
                    .addrs
                    .write()
                    .expect("not poisoned")
                    .insert(broker, resolved.clone());
                resolved
            }
        };
        let shards = self.cluster().brokers.get(&broker).map_or(0, |b| b.shards);
        let key = match node.shard {
            Some(s) if shards > 1 && s < shards => (addr, Some((s, shards))),
            _ => (addr, None),
        };
        let conn = self.connection(key, &host, Some(node)).await?;
        Ok((key, conn))
    }

    /// Calls the controller (topic changes).
    #[doc(hidden)]
    pub async fn call_controller<R: Request>(&self, req: &R) -> Result<R::Response> {
        let controller = match self.cluster().controller {
            Some(c) => c,
            None => self
                .refresh_metadata(None)
                .await?
                .controller
                .ok_or_else(|| Error::broker(ErrorCode::NotController, None))?,
        };
        match self.call_broker(controller, req, Vec::new()).await {
            Ok((resp, _)) => Ok(resp),
            // The controller may be gone (a cluster elects another): ask the cluster who it is
            // now and try once more, there or at any other broker (every broker of a cluster
            // forwards admin requests to the active controller).
            Err(e @ Error::Transport { .. }) => {
                let view = self.refresh_metadata(None).await.map_err(|_| e)?;
                let next = view
                    .controller
                    .filter(|c| *c != controller)
                    .or_else(|| view.brokers.keys().copied().find(|b| *b != controller));
                match next {
                    Some(n) => Ok(self.call_broker(n, req, Vec::new()).await?.0),
                    None => Err(self.refresh_failed_controller(controller)),
                }
            }
            Err(e) => Err(e),
        }
    }

    fn refresh_failed_controller(&self, controller: BrokerId) -> Error {
        Error::broker(
            ErrorCode::NotController,
            Some(format!(
                "broker {} (the controller) did not answer and no other broker is known",
                controller.0
            )),
        )
    }

    /// The frame header of this client's next request of type `R` (a new correlation id).
    fn next_header<R: Request>(&self) -> quiver_proto::frame::FrameHeader {
        let correlation = self.inner.correlation.fetch_add(1, Ordering::Relaxed);
        api::request_header(R::API, 0, correlation)
    }

    fn decode<R: Request>(frame: &quiver_proto::frame::Frame) -> Result<R::Response> {
        match api::decode_response::<R>(frame) {
            Ok(resp) => Ok(resp),
            Err(ResponseError::Refused(e)) if e.error_code == ErrorCode::AuthenticationRequired => {
                Err(sasl::required(e.message.as_deref()))
            }
            Err(ResponseError::Refused(e)) => Err(Error::Refused(e)),
            Err(e) => Err(Error::Protocol(e.to_string())),
        }
    }

    async fn call_on<R: Request>(
        &self,
        conn: &Connection,
        key: ConnKey,
        req: &R,
        payload: Vec<Bytes>,
    ) -> Result<(R::Response, Bytes)> {
        let frame = conn
            .call(self.next_header::<R>(), req.encode_bytes(), payload)
            .await
            .map_err(|e| self.at(key, None, e))?;
        Self::decode::<R>(&frame).map(|resp| (resp, frame.payload))
    }

    /// A transport error with the broker it happened with: its address, and its id when the
    /// caller or the resolved addresses know it.
    fn at(&self, key: ConnKey, node: Option<Node>, error: TransportError) -> Error {
        Error::Transport {
            broker: Some(self.broker_addr(key, node)),
            error,
        }
    }

    /// The broker of a connection: its address, and its id when the caller or the resolved
    /// addresses know it.
    fn broker_addr(&self, key: ConnKey, node: Option<Node>) -> BrokerAddr {
        let addr = key.0;
        let node = node.or_else(|| {
            let addrs = self.inner.addrs.read().expect("not poisoned");
            addrs
                .iter()
                .find(|(_, (a, _))| *a == addr)
                .map(|(id, _)| Node {
                    broker: *id,
                    shard: key.1.map(|(s, _)| s),
                })
        });
        BrokerAddr { addr, node }
    }

    fn forget_on_error(&self, key: ConnKey, e: &Error) {
        if let Error::Transport { error: t, .. } = e {
            // A request that timed out suggests a broker that died without closing the
            // connection (SIGKILL, a lost host): QUIC would notice only at the idle timeout, so
            // the next call opens a fresh connection instead. Calls still running on the old
            // one finish or time out on their own.
            if t.is_connection_error() || matches!(t, crate::TransportError::Timeout(_)) {
                if let Ok(mut conns) = self.inner.connections.try_lock() {
                    conns.remove(&key);
                }
            }
        }
    }

    async fn connection(&self, key: ConnKey, host: &str, node: Option<Node>) -> Result<Connection> {
        let mut conns = self.inner.connections.lock().await;
        if let Some(c) = conns.get(&key) {
            if c.quinn().close_reason().is_none() {
                return Ok(c.clone());
            }
            conns.remove(&key);
        }
        let conn = Connection::connect_steered(
            key.0,
            host,
            &self.inner.tls,
            self.inner.config.connect.clone(),
            key.1,
        )
        .await
        .map_err(|e| self.at(key, node, e))?;
        // Each connection says which application it serves (Kafka's client.id), which the
        // broker keeps for the connection: client-id quotas apply to it.
        let hello = ApiVersionsRequest {
            client_software_name: "quiver-rust".into(),
            client_software_version: env!("CARGO_PKG_VERSION").into(),
            client_id: Some(self.inner.config.client_id.clone()),
        };
        if let Err(e) = self.call_on(&conn, key, &hello, Vec::new()).await {
            conn.close("handshake failed");
            return Err(e);
        }
        if let Some(credentials) = &self.inner.config.sasl {
            // Before the connection is shared: no other request may go ahead of the exchange.
            let new = NewConnection {
                client: self,
                conn: &conn,
                key,
                node,
            };
            if let Err(e) = sasl::authenticate(&new, credentials).await {
                conn.close("authentication failed");
                return Err(match e {
                    Error::Authentication { code, message } => Error::Authentication {
                        code,
                        message: format!("{}: {message}", self.broker_addr(key, node)),
                    },
                    other => other,
                });
            }
        }
        conns.insert(key, conn.clone());
        Ok(conn)
    }

    /// Closes every connection.
    pub async fn close(&self) {
        for (_, c) in self.inner.connections.lock().await.drain() {
            c.close("client closed");
        }
    }
}

/// A connection being authenticated, not yet in the client's map.
struct NewConnection<'a> {
    client: &'a Client,
    conn: &'a Connection,
    key: ConnKey,
    node: Option<Node>,
}

impl NewConnection<'_> {
    async fn call<R: Request>(&self, req: &R) -> Result<R::Response> {
        let frame = self
            .conn
            .call(
                self.client.next_header::<R>(),
                req.encode_bytes(),
                Vec::new(),
            )
            .await
            .map_err(|e| self.client.at(self.key, self.node, e))?;
        Client::decode::<R>(&frame)
    }
}

impl sasl::SaslBroker for NewConnection<'_> {
    async fn handshake(&self, req: &SaslHandshakeRequest) -> Result<SaslHandshakeResponse> {
        self.call(req).await
    }

    async fn authenticate(
        &self,
        req: &SaslAuthenticateRequest,
    ) -> Result<SaslAuthenticateResponse> {
        self.call(req).await
    }
}

/// `host:port` to an address and the name to check the broker's certificate against.
async fn resolve(server: &str) -> Result<(SocketAddr, String)> {
    let (host, _port) = server
        .rsplit_once(':')
        .ok_or_else(|| Error::Config(format!("bootstrap server '{server}' is not host:port")))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let mut addrs = tokio::net::lookup_host(server)
        .await
        .map_err(|e| Error::Config(format!("cannot resolve '{server}': {e}")))?;
    let addr = addrs
        .next()
        .ok_or_else(|| Error::Config(format!("'{server}' resolves to no address")))?;
    Ok((addr, host))
}

/// Requests that may be sent twice without changing anything.
fn idempotent(api: ApiKey) -> bool {
    matches!(
        api,
        ApiKey::Metadata
            | ApiKey::ApiVersions
            | ApiKey::ListOffsets
            | ApiKey::DescribeConfigs
            | ApiKey::DescribeCluster
            | ApiKey::FindCoordinator
            | ApiKey::OffsetFetch
            | ApiKey::Fetch
    )
}

/// A request written to a broker, its answer not yet read ([`Client::start_call_broker`]).
#[doc(hidden)]
pub struct PendingResponse<R: Request> {
    client: Client,
    key: ConnKey,
    node: Node,
    call: PendingCall,
    _api: std::marker::PhantomData<fn() -> R>,
}

impl<R: Request> PendingResponse<R> {
    /// The answer, and its payload.
    pub async fn response(self) -> Result<(R::Response, Bytes)> {
        let result = match self.call.response().await {
            Ok(frame) => Client::decode::<R>(&frame).map(|resp| (resp, frame.payload)),
            Err(e) => Err(self.client.at(self.key, Some(self.node), e)),
        };
        result.inspect_err(|e| self.client.forget_on_error(self.key, e))
    }
}
