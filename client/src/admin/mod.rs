//! Administration: topics, partitions, configurations, the cluster's description, and (in
//! `users.rs` and `acls.rs`) SCRAM users and access control lists.

use std::collections::{BTreeMap, HashMap};

use quiver_proto::api::common::ConfigEntry as WireConfigEntry;
use quiver_proto::api::fetch::OffsetSpec;
use quiver_proto::api::metadata::{
    AlterConfigOp, AlterConfigsResource, AlterableConfig, ConfigResourceType, ConfigSource,
    CreatableTopic, CreatePartitionsRequest, CreatePartitionsTopic, CreateTopicsRequest,
    DeleteTopicsRequest, DescribeConfigsRequest, DescribeConfigsResource,
    IncrementalAlterConfigsRequest,
};
use quiver_proto::{BrokerId, ErrorCode, Offset, PartitionId};
use serde::Serialize;

use crate::client::{BrokerInfo, Client};
use crate::consumer::{list_offsets_lenient, list_offsets_raw};
use crate::error::{Error, Result};
use crate::record::TopicPartition;

mod acls;
mod groups;
mod quorum;
mod quotas;
mod replicas;
mod users;

pub use groups::{GroupDescription, GroupListing, GroupMember, GroupOffset, GroupState};
pub use quorum::{QuorumDescription, RegisteredBroker, VoterDescription};
pub use quotas::{
    QuotaDescription, QuotaEntity, QuotaName, CONSUMER_BYTE_RATE, PRODUCER_BYTE_RATE,
    REQUEST_PERCENTAGE,
};
pub use replicas::FollowerProgress;
pub use users::{ScramCredential, UserDescription};

/// A topic to create.
///
/// ```
/// use quiver_client::NewTopic;
/// let t = NewTopic::new("orders", 6).config("retention.ms", "86400000");
/// assert_eq!(t.partitions, Some(6));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewTopic {
    /// The topic's name.
    pub name: String,
    /// `None`: the broker's `default_partitions`.
    pub partitions: Option<u32>,
    /// `None`: the broker's default.
    pub replication_factor: Option<u16>,
    /// Topic configurations (`retention.ms`, ...); the rest take the broker's defaults.
    pub configs: BTreeMap<String, String>,
}

impl NewTopic {
    /// A topic with this many partitions.
    pub fn new(name: impl Into<String>, partitions: u32) -> NewTopic {
        NewTopic {
            name: name.into(),
            partitions: Some(partitions),
            ..NewTopic::default()
        }
    }

    /// Replicas per partition.
    pub fn replication_factor(mut self, r: u16) -> NewTopic {
        self.replication_factor = Some(r);
        self
    }

    /// Sets a topic configuration.
    pub fn config(mut self, name: impl Into<String>, value: impl Into<String>) -> NewTopic {
        self.configs.insert(name.into(), value.into());
        self
    }
}

/// One partition of a described topic.
///
/// ```
/// # use quiver_client::{PartitionDescription, PartitionId, Offset};
/// # let p = PartitionDescription { partition: PartitionId(0), leader: None, leader_shard: None,
/// #   replicas: vec![], isr: vec![], adding: vec![], removing: vec![], offline: vec![],
/// #   followers: vec![],
/// #   start_offset: Some(Offset(0)), end_offset: Some(Offset(10)) };
/// assert_eq!(p.end_offset.unwrap().0 - p.start_offset.unwrap().0, 10); // records retained
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PartitionDescription {
    /// The partition's number.
    #[serde(serialize_with = "ser_partition")]
    pub partition: PartitionId,
    /// The broker that leads it; `None` while it has no leader.
    #[serde(serialize_with = "ser_opt_broker")]
    pub leader: Option<BrokerId>,
    /// The leader's shard (core) that owns the partition, when the broker says.
    pub leader_shard: Option<u16>,
    /// The brokers holding a replica.
    #[serde(serialize_with = "ser_brokers")]
    pub replicas: Vec<BrokerId>,
    /// The replicas in sync with the leader.
    #[serde(serialize_with = "ser_brokers")]
    pub isr: Vec<BrokerId>,
    /// While a reassignment runs: the replicas being added (they join the ISR once caught up).
    #[serde(serialize_with = "ser_brokers")]
    pub adding: Vec<BrokerId>,
    /// While a reassignment runs: the replicas removed once every new one is in sync.
    #[serde(serialize_with = "ser_brokers")]
    pub removing: Vec<BrokerId>,
    /// Replicas that serve nothing: on a broker fenced or gone, or whose log of the partition
    /// could not be opened (the partition is offline when its leader's is).
    #[serde(serialize_with = "ser_brokers")]
    pub offline: Vec<BrokerId>,
    /// How far each follower is behind, as the leader sees it (empty when the leader did
    /// not say: a single broker, or a leader that is down).
    pub followers: Vec<FollowerProgress>,
    /// The log start offset (oldest retained record); `None` if it could not be read.
    #[serde(serialize_with = "ser_opt_offset")]
    pub start_offset: Option<Offset>,
    /// The high watermark (the next offset to be written); `None` if it could not be read.
    #[serde(serialize_with = "ser_opt_offset")]
    pub end_offset: Option<Offset>,
}

/// A topic: partitions with leaders, replicas, offsets, and its configuration.
///
/// ```no_run
/// # async fn f(admin: quiver_client::Admin) -> quiver_client::Result<()> {
/// let t = admin.describe_topic("orders").await?;
/// for p in &t.partitions {
///     println!("{} leader {:?} offsets {:?}..{:?}", p.partition, p.leader, p.start_offset, p.end_offset);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TopicDescription {
    /// The topic's name.
    pub name: String,
    /// The topic's id, as a UUID string.
    pub id: String,
    /// An internal topic (`__consumer_offsets`, ...).
    pub internal: bool,
    /// Its partitions, by number.
    pub partitions: Vec<PartitionDescription>,
    /// Every configuration with its value (overrides and defaults); empty in `list_topics`.
    pub configs: Vec<ConfigEntry>,
}

/// A configuration value and where it comes from.
///
/// ```
/// # use quiver_client::ConfigEntry;
/// let e = ConfigEntry { name: "retention.ms".into(), value: Some("1000".into()), source: "TopicOverride".into(), read_only: false, sensitive: false, note: None };
/// assert!(e.is_override());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConfigEntry {
    /// The configuration's name (`retention.ms`, ...).
    pub name: String,
    /// Its value; `None` for a sensitive one, or one without a value.
    pub value: Option<String>,
    /// `TopicOverride`, `StaticBroker`, `Default`, ...
    pub source: String,
    /// It cannot be changed while the broker runs.
    pub read_only: bool,
    /// Its value is not shown (a password).
    pub sensitive: bool,
    /// What the broker says the value means, when it changes a promise (for example
    /// `flush.ms` > 0: acknowledgements come before fsync).
    pub note: Option<String>,
}

impl ConfigEntry {
    /// Whether the value was set on the topic itself (not inherited).
    pub fn is_override(&self) -> bool {
        self.source == "TopicOverride"
    }
}

/// What a configuration belongs to.
///
/// ```
/// use quiver_client::ConfigResource;
/// let r = ConfigResource::Topic("orders".into());
/// # let _ = r;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigResource {
    /// A topic by name.
    Topic(String),
    /// A broker by id.
    Broker(BrokerId),
}

/// One change to a configuration.
///
/// ```
/// use quiver_client::AlterConfig;
/// let changes = vec![AlterConfig::set("retention.ms", "3600000"), AlterConfig::delete("segment.ms")];
/// # let _ = changes;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AlterConfig {
    /// Sets the value on the resource.
    Set(String, String),
    /// Removes the override: the value falls back to the default.
    Delete(String),
}

impl AlterConfig {
    /// Sets `name` to `value`.
    pub fn set(name: impl Into<String>, value: impl Into<String>) -> AlterConfig {
        AlterConfig::Set(name.into(), value.into())
    }
    /// Removes the override of `name`.
    pub fn delete(name: impl Into<String>) -> AlterConfig {
        AlterConfig::Delete(name.into())
    }
}

/// The cluster: its id, brokers and controller.
///
/// ```no_run
/// # async fn f(admin: quiver_client::Admin) -> quiver_client::Result<()> {
/// let c = admin.describe_cluster().await?;
/// println!("{} brokers, controller {:?}", c.brokers.len(), c.controller);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClusterDescription {
    /// The cluster's id.
    pub cluster_id: Option<String>,
    /// The broker that makes topic changes.
    #[serde(serialize_with = "ser_opt_broker")]
    pub controller: Option<BrokerId>,
    /// Its brokers.
    pub brokers: Vec<BrokerDescription>,
}

/// One broker of a described cluster.
///
/// ```
/// # use quiver_client::BrokerDescription;
/// let b = BrokerDescription { id: 1, host: "127.0.0.1".into(), port: 9092 };
/// assert_eq!(b.address(), "127.0.0.1:9092");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BrokerDescription {
    /// The broker's id.
    pub id: u32,
    /// The host name or address clients connect to.
    pub host: String,
    /// The QUIC (UDP) port.
    pub port: u16,
}

impl BrokerDescription {
    /// `host:port` (IPv6 hosts in brackets).
    pub fn address(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn ser_partition<S: serde::Serializer>(
    p: &PartitionId,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u32(p.0)
}
fn ser_opt_broker<S: serde::Serializer>(
    b: &Option<BrokerId>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match b {
        Some(b) => s.serialize_some(&b.0),
        None => s.serialize_none(),
    }
}
fn ser_brokers<S: serde::Serializer>(b: &[BrokerId], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_seq(b.iter().map(|b| b.0))
}
fn ser_broker<S: serde::Serializer>(b: &BrokerId, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u32(b.0)
}
fn ser_offset<S: serde::Serializer>(o: &Offset, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u64(o.0)
}
fn ser_opt_offset<S: serde::Serializer>(
    o: &Option<Offset>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match o {
        Some(o) => s.serialize_some(&o.0),
        None => s.serialize_none(),
    }
}

/// Creates, describes, changes and deletes topics; describes the cluster; manages SCRAM users
/// ([`Admin::create_user`]) and ACLs ([`Admin::create_acls`]).
///
/// ```no_run
/// # async fn f() -> quiver_client::Result<()> {
/// use quiver_client::{Admin, AlterConfig, Client, ClientConfig, ConfigResource, NewTopic};
/// let admin = Admin::new(Client::connect(ClientConfig::new("127.0.0.1:9092")).await?);
/// admin.create_topic(NewTopic::new("orders", 3).config("retention.ms", "86400000")).await?;
/// admin.alter_configs(ConfigResource::Topic("orders".into()), vec![AlterConfig::set("retention.ms", "3600000")]).await?;
/// admin.create_partitions("orders", 6).await?;
/// println!("{:?}", admin.describe_topic("orders").await?);
/// admin.delete_topic("orders").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Admin {
    client: Client,
    timeout_ms: u32,
}

impl Admin {
    /// An admin on `client`.
    pub fn new(client: Client) -> Admin {
        // The broker is asked to answer within four fifths of the client's request timeout, so
        // a change still being applied (a topic of 100,000 partitions) is answered
        // RequestTimedOut, saying so, before the client would give up on the call.
        let call = client.call_timeout();
        let timeout_ms = (call.as_millis() * 4 / 5).clamp(1, u128::from(u32::MAX)) as u32;
        Admin { client, timeout_ms }
    }

    /// The client this admin uses.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// How long `create_topic` waits for the new topic to be served by the broker it asks for
    /// metadata (in a cluster, it may apply the change a heartbeat after the controller).
    const CREATED_VISIBLE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

    /// Creates one topic; fails with `TopicAlreadyExists`, `InvalidTopic`, `InvalidConfig`, ...
    pub async fn create_topic(&self, topic: NewTopic) -> Result<()> {
        let name = topic.name.clone();
        let req = CreateTopicsRequest {
            topics: vec![CreatableTopic {
                name: topic.name,
                num_partitions: topic.partitions,
                replication_factor: topic.replication_factor,
                assignments: Vec::new(),
                configs: topic
                    .configs
                    .into_iter()
                    .map(|(name, value)| WireConfigEntry {
                        name,
                        value: Some(value),
                    })
                    .collect(),
            }],
            timeout_ms: self.timeout_ms,
            validate_only: false,
        };
        let resp = self.client.call_controller(&req).await?;
        let r = resp
            .topics
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| Error::Protocol(format!("no CreateTopics result for '{name}'")))?;
        if r.error_code != ErrorCode::None {
            return Err(Error::broker(r.error_code, r.error_message));
        }
        // In a cluster the broker that answers Metadata may apply the new topic a moment after
        // the controller answered: wait (briefly) until it serves it, every partition led, so
        // the caller can produce at once.
        let deadline = std::time::Instant::now() + Self::CREATED_VISIBLE_WAIT;
        loop {
            let view = self
                .client
                .refresh_metadata(Some(vec![name.clone()]))
                .await?;
            let visible = view.topics.get(&name).is_some_and(|t| {
                t.id == r.topic_id.0 && t.partitions.iter().all(|p| p.leader.is_some())
            });
            if visible || std::time::Instant::now() >= deadline {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Deletes a topic and its records.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let req = DeleteTopicsRequest {
            topic_names: vec![name.to_string()],
            timeout_ms: self.timeout_ms,
        };
        let resp = self.client.call_controller(&req).await?;
        let r = resp
            .responses
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| Error::Protocol(format!("no DeleteTopics result for '{name}'")))?;
        if r.error_code != ErrorCode::None {
            return Err(Error::broker(r.error_code, r.error_message));
        }
        self.client
            .refresh_metadata(Some(vec![name.to_string()]))
            .await?;
        Ok(())
    }

    /// Grows a topic to `total` partitions (never shrinks).
    pub async fn create_partitions(&self, name: &str, total: u32) -> Result<()> {
        let req = CreatePartitionsRequest {
            topics: vec![CreatePartitionsTopic {
                name: name.to_string(),
                count: total,
                assignments: Vec::new(),
            }],
            timeout_ms: self.timeout_ms,
            validate_only: false,
        };
        let resp = self.client.call_controller(&req).await?;
        let r = resp
            .results
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| Error::Protocol(format!("no CreatePartitions result for '{name}'")))?;
        if r.error_code != ErrorCode::None {
            return Err(Error::broker(r.error_code, r.error_message));
        }
        self.client
            .refresh_metadata(Some(vec![name.to_string()]))
            .await?;
        Ok(())
    }

    /// Every topic (internal ones excluded), sorted by name, without configs or offsets.
    pub async fn list_topics(&self) -> Result<Vec<TopicDescription>> {
        let view = self.client.refresh_metadata(None).await?;
        let mut topics: Vec<TopicDescription> = view
            .topics
            .values()
            .filter(|t| !t.internal)
            .map(|t| TopicDescription {
                name: t.name.clone(),
                id: quiver_proto::api::Uuid(t.id).to_string(),
                internal: t.internal,
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| PartitionDescription {
                        partition: p.partition,
                        leader: p.leader,
                        leader_shard: p.leader_shard,
                        replicas: p.replicas.clone(),
                        isr: p.isr.clone(),
                        adding: p.adding.clone(),
                        removing: p.removing.clone(),
                        offline: p.offline.clone(),
                        followers: Vec::new(),
                        start_offset: None,
                        end_offset: None,
                    })
                    .collect(),
                configs: Vec::new(),
            })
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    /// One topic: partitions (with start and end offsets) and every configuration.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        let view = self
            .client
            .refresh_metadata(Some(vec![name.to_string()]))
            .await?;
        let t = view.topics.get(name).ok_or_else(|| {
            Error::broker(
                ErrorCode::UnknownTopicOrPartition,
                Some(format!("topic '{name}' does not exist")),
            )
        })?;
        let tps: Vec<TopicPartition> = t
            .partitions
            .iter()
            .map(|p| TopicPartition::new(name, p.partition.0))
            .collect();
        let earliest: Vec<_> = tps
            .iter()
            .map(|tp| (tp.clone(), OffsetSpec::Earliest))
            .collect();
        let latest: Vec<_> = tps
            .iter()
            .map(|tp| (tp.clone(), OffsetSpec::Latest))
            .collect();
        // A partition whose leader is down has no offsets to show; the rest are described.
        let numbers: Vec<PartitionId> = t.partitions.iter().map(|p| p.partition).collect();
        let (starts, ends, followers) = futures_util::future::join3(
            list_offsets_lenient(&self.client, &earliest),
            list_offsets_lenient(&self.client, &latest),
            replicas::follower_progress(&self.client, name, &numbers),
        )
        .await;
        let by_partition = |list: Vec<(TopicPartition, Option<Offset>)>| {
            list.into_iter()
                .filter_map(|(tp, o)| Some((tp.partition, o?)))
                .collect::<HashMap<PartitionId, Offset>>()
        };
        let (starts, ends) = (by_partition(starts), by_partition(ends));
        let configs = self
            .describe_configs(ConfigResource::Topic(name.to_string()))
            .await?;
        Ok(TopicDescription {
            name: t.name.clone(),
            id: quiver_proto::api::Uuid(t.id).to_string(),
            internal: t.internal,
            partitions: t
                .partitions
                .iter()
                .map(|p| PartitionDescription {
                    partition: p.partition,
                    leader: p.leader,
                    leader_shard: p.leader_shard,
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                    adding: p.adding.clone(),
                    removing: p.removing.clone(),
                    offline: p.offline.clone(),
                    followers: followers.get(&p.partition).cloned().unwrap_or_default(),
                    start_offset: starts.get(&p.partition).copied(),
                    end_offset: ends.get(&p.partition).copied(),
                })
                .collect(),
            configs,
        })
    }

    /// The configurations of a topic or broker, sorted by name.
    pub async fn describe_configs(&self, resource: ConfigResource) -> Result<Vec<ConfigEntry>> {
        let (resource_type, resource_name) = wire_resource(&resource);
        let req = DescribeConfigsRequest {
            resources: vec![DescribeConfigsResource {
                resource_type,
                resource_name: resource_name.clone(),
                configuration_keys: Vec::new(),
            }],
            include_documentation: false,
        };
        let (resp, _) = match &resource {
            ConfigResource::Broker(id) => self.client.call_broker(*id, &req, Vec::new()).await?,
            ConfigResource::Topic(_) => self.client.call_any(&req, Vec::new()).await?,
        };
        let r = resp.results.into_iter().next().ok_or_else(|| {
            Error::Protocol(format!("no DescribeConfigs result for '{resource_name}'"))
        })?;
        if r.error_code != ErrorCode::None {
            return Err(Error::broker(r.error_code, r.error_message));
        }
        let mut out: Vec<ConfigEntry> = r
            .configs
            .into_iter()
            .map(|c| ConfigEntry {
                name: c.name,
                value: if c.is_sensitive { None } else { c.value },
                source: source_name(c.config_source).to_string(),
                read_only: c.read_only,
                sensitive: c.is_sensitive,
                note: c.documentation,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Changes configurations (set or delete overrides), all or none.
    pub async fn alter_configs(
        &self,
        resource: ConfigResource,
        changes: Vec<AlterConfig>,
    ) -> Result<()> {
        let (resource_type, resource_name) = wire_resource(&resource);
        let req = IncrementalAlterConfigsRequest {
            resources: vec![AlterConfigsResource {
                resource_type,
                resource_name: resource_name.clone(),
                configs: changes
                    .into_iter()
                    .map(|c| match c {
                        AlterConfig::Set(name, value) => AlterableConfig {
                            name,
                            op: AlterConfigOp::Set,
                            value: Some(value),
                        },
                        AlterConfig::Delete(name) => AlterableConfig {
                            name,
                            op: AlterConfigOp::Delete,
                            value: None,
                        },
                    })
                    .collect(),
            }],
            validate_only: false,
        };
        let resp = self.client.call_controller(&req).await?;
        let r = resp.responses.into_iter().next().ok_or_else(|| {
            Error::Protocol(format!(
                "no IncrementalAlterConfigs result for '{resource_name}'"
            ))
        })?;
        if r.error_code != ErrorCode::None {
            return Err(Error::broker(r.error_code, r.error_message));
        }
        Ok(())
    }

    /// The cluster's id, brokers and controller.
    pub async fn describe_cluster(&self) -> Result<ClusterDescription> {
        let view = self.client.refresh_metadata(Some(Vec::new())).await?;
        let mut brokers: Vec<BrokerDescription> = view
            .brokers
            .values()
            .map(|b: &BrokerInfo| BrokerDescription {
                id: b.id.0,
                host: b.host.clone(),
                port: b.port,
            })
            .collect();
        brokers.sort_by_key(|b| b.id);
        Ok(ClusterDescription {
            cluster_id: view.cluster_id.clone(),
            controller: view.controller,
            brokers,
        })
    }

    /// Offsets of partitions by spec: earliest, latest, or the first at or after a time
    /// (`None` when no record is that recent).
    pub async fn list_offsets(
        &self,
        asked: &[(TopicPartition, OffsetSpec)],
    ) -> Result<Vec<(TopicPartition, Option<Offset>)>> {
        list_offsets_raw(&self.client, asked).await
    }
}

fn wire_resource(r: &ConfigResource) -> (ConfigResourceType, String) {
    match r {
        ConfigResource::Topic(t) => (ConfigResourceType::Topic, t.clone()),
        ConfigResource::Broker(b) => (ConfigResourceType::Broker, b.0.to_string()),
    }
}

fn source_name(s: ConfigSource) -> &'static str {
    match s {
        ConfigSource::TopicOverride => "TopicOverride",
        ConfigSource::DynamicBroker => "DynamicBroker",
        ConfigSource::DynamicDefaultBroker => "DynamicDefaultBroker",
        ConfigSource::StaticBroker => "StaticBroker",
        ConfigSource::Default => "Default",
        _ => "Unknown",
    }
}
