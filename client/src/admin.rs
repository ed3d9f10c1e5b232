//! Administration: topics, partitions, configurations, and the cluster's description.

use std::collections::BTreeMap;

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
use crate::commit::OffsetAndMetadata;
use crate::consumer::list_offsets_raw;
use crate::error::{Error, Result};
use crate::group::find_coordinator;
use crate::grouping::by_topic;
use crate::record::TopicPartition;

/// A topic to create.
///
/// ```
/// use quiver_client::NewTopic;
/// let t = NewTopic::new("orders", 6).config("retention.ms", "86400000");
/// assert_eq!(t.partitions, Some(6));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    /// `None`: the broker's `default_partitions`.
    pub partitions: Option<u32>,
    /// `None`: the broker's default.
    pub replication_factor: Option<u16>,
    pub configs: BTreeMap<String, String>,
}

impl NewTopic {
    pub fn new(name: impl Into<String>, partitions: u32) -> NewTopic {
        NewTopic {
            name: name.into(),
            partitions: Some(partitions),
            ..NewTopic::default()
        }
    }

    pub fn replication_factor(mut self, r: u16) -> NewTopic {
        self.replication_factor = Some(r);
        self
    }

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
/// #   replicas: vec![], isr: vec![],
/// #   start_offset: Some(Offset(0)), end_offset: Some(Offset(10)) };
/// assert_eq!(p.end_offset.unwrap().0 - p.start_offset.unwrap().0, 10); // records retained
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PartitionDescription {
    #[serde(serialize_with = "ser_partition")]
    pub partition: PartitionId,
    #[serde(serialize_with = "ser_opt_broker")]
    pub leader: Option<BrokerId>,
    /// The leader's shard (core) that owns the partition, when the broker says.
    pub leader_shard: Option<u16>,
    #[serde(serialize_with = "ser_brokers")]
    pub replicas: Vec<BrokerId>,
    #[serde(serialize_with = "ser_brokers")]
    pub isr: Vec<BrokerId>,
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
    pub name: String,
    /// The topic's id, as a UUID string.
    pub id: String,
    pub internal: bool,
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
    pub name: String,
    pub value: Option<String>,
    /// `TopicOverride`, `StaticBroker`, `Default`, ...
    pub source: String,
    pub read_only: bool,
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
    pub fn set(name: impl Into<String>, value: impl Into<String>) -> AlterConfig {
        AlterConfig::Set(name.into(), value.into())
    }
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
    pub cluster_id: Option<String>,
    #[serde(serialize_with = "ser_opt_broker")]
    pub controller: Option<BrokerId>,
    pub brokers: Vec<BrokerDescription>,
}

/// One broker of a described cluster.
///
/// ```
/// # use quiver_client::admin::BrokerDescription;
/// let b = BrokerDescription { id: 1, host: "127.0.0.1".into(), port: 9092 };
/// assert_eq!(b.address(), "127.0.0.1:9092");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BrokerDescription {
    pub id: u32,
    pub host: String,
    pub port: u16,
}

impl BrokerDescription {
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
fn ser_opt_offset<S: serde::Serializer>(
    o: &Option<Offset>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match o {
        Some(o) => s.serialize_some(&o.0),
        None => s.serialize_none(),
    }
}

/// Creates, describes, changes and deletes topics; describes the cluster.
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
    pub fn new(client: Client) -> Admin {
        Admin {
            client,
            timeout_ms: 30_000,
        }
    }

    /// The client this admin uses.
    pub fn client(&self) -> &Client {
        &self.client
    }

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
        self.client.refresh_metadata(Some(vec![name])).await?;
        Ok(())
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
        let starts = list_offsets_raw(&self.client, &earliest).await?;
        let ends = list_offsets_raw(&self.client, &latest).await?;
        let offset_of = |list: &[(TopicPartition, Option<Offset>)], p: PartitionId| {
            list.iter()
                .find(|(tp, _)| tp.partition == p)
                .and_then(|(_, o)| *o)
        };
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
                    start_offset: offset_of(&starts, p.partition),
                    end_offset: offset_of(&ends, p.partition),
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

/// A consumer group as `list_groups` shows it.
///
/// ```no_run
/// # async fn f(admin: quiver_client::Admin) -> quiver_client::Result<()> {
/// for g in admin.list_groups().await? {
///     println!("{} ({})", g.group_id, g.state);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupListing {
    pub group_id: String,
    /// `Empty`, `Stable`, `Reconciling`, ...
    pub state: String,
}

/// One member of a described group.
///
/// ```
/// # use quiver_client::admin::GroupMember;
/// let m = GroupMember { member_id: "m1".into(), instance_id: Some("pod-1".into()),
///     client_host: None, member_epoch: 3, subscribed_topics: vec!["orders".into()],
///     assigned: vec![("orders".into(), vec![0, 1])], target: vec![("orders".into(), vec![0, 1])] };
/// assert_eq!(m.assigned[0].1.len(), 2);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupMember {
    pub member_id: String,
    /// The static member's instance id (`ConsumerConfig::instance_id`), if any.
    pub instance_id: Option<String>,
    pub client_host: Option<String>,
    pub member_epoch: i32,
    pub subscribed_topics: Vec<String>,
    /// (topic, partitions) the member owns now.
    pub assigned: Vec<(String, Vec<u32>)>,
    /// (topic, partitions) the broker's assignor means the member to own; differs from
    /// `assigned` while the group reconciles.
    pub target: Vec<(String, Vec<u32>)>,
}

/// A partition's committed offset in a group, with the partition's end and the lag between.
///
/// ```
/// # use quiver_client::admin::GroupOffset;
/// let o = GroupOffset { topic: "orders".into(), partition: 0, committed: Some(90),
///     metadata: None, end: Some(100), lag: Some(10), member_id: Some("m1".into()) };
/// assert_eq!(o.lag, Some(10));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupOffset {
    pub topic: String,
    pub partition: u32,
    /// The committed offset (the next record the group reads); `None`: nothing committed.
    pub committed: Option<u64>,
    /// The metadata string committed with it.
    pub metadata: Option<String>,
    /// The partition's log end offset (high watermark); `None` if the topic is gone.
    pub end: Option<u64>,
    /// `end - committed`: records the group has not consumed yet.
    pub lag: Option<u64>,
    /// The member that owns the partition now, if any.
    pub member_id: Option<String>,
}

/// A consumer group: state, members with their partitions, committed offsets and lag.
///
/// ```no_run
/// # async fn f(admin: quiver_client::Admin) -> quiver_client::Result<()> {
/// let g = admin.describe_group("billing").await?;
/// let lag: u64 = g.offsets.iter().filter_map(|o| o.lag).sum();
/// println!("{}: {} members, lag {lag}", g.group_id, g.members.len());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupDescription {
    pub group_id: String,
    /// `Empty`, `Stable` (every member owns its target) or `Reconciling`.
    pub state: String,
    /// The broker-side assignor the group uses (`range`, `roundrobin`, `sticky`).
    pub assignor: Option<String>,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub members: Vec<GroupMember>,
    /// Every partition the group has a committed offset for or a member owns, in order.
    pub offsets: Vec<GroupOffset>,
}

fn topic_partition_lists(tps: Vec<quiver_proto::api::TopicPartitions>) -> Vec<(String, Vec<u32>)> {
    tps.into_iter()
        .map(|t| (t.topic, t.partitions.into_iter().map(|p| p.0).collect()))
        .collect()
}

impl Admin {
    /// Calls `group`'s coordinator with `req`, once the cluster is known to serve its API
    /// (`what` names the operation in the error if it does not).
    async fn call_coordinator<R: quiver_proto::api::Request>(
        &self,
        group: &str,
        what: &str,
        req: &R,
    ) -> Result<R::Response> {
        self.client.require(R::API, what).await?;
        let coordinator = find_coordinator(&self.client, group).await?;
        Ok(self
            .client
            .call_broker(coordinator, req, Vec::new())
            .await?
            .0)
    }

    /// Every consumer group, sorted by id.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        use quiver_proto::api::group::ListGroupsRequest;
        self.client
            .require(quiver_proto::api::ApiKey::ListGroups, "listing groups")
            .await?;
        let view = self.client.refresh_metadata(Some(Vec::new())).await?;
        let mut out: Vec<GroupListing> = Vec::new();
        let req = ListGroupsRequest {
            states_filter: Vec::new(),
            types_filter: Vec::new(),
        };
        let mut brokers: Vec<BrokerId> = view.brokers.keys().copied().collect();
        brokers.sort();
        for b in brokers {
            let (resp, _) = self.client.call_broker(b, &req, Vec::new()).await?;
            if resp.error_code != ErrorCode::None {
                return Err(Error::broker(resp.error_code, None));
            }
            out.extend(resp.groups.into_iter().map(|g| GroupListing {
                group_id: g.group_id,
                state: format!("{:?}", g.group_state),
            }));
        }
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out.dedup_by(|a, b| a.group_id == b.group_id);
        Ok(out)
    }

    /// A group's committed offsets (with their metadata strings), by partition, in order.
    ///
    /// ```no_run
    /// # async fn f(admin: quiver_client::Admin) -> quiver_client::Result<()> {
    /// for (tp, o) in admin.list_group_offsets("billing").await? {
    ///     println!("{tp}: {} {:?}", o.offset, o.metadata);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list_group_offsets(
        &self,
        group: &str,
    ) -> Result<Vec<(TopicPartition, OffsetAndMetadata)>> {
        use quiver_proto::api::group::{OffsetFetchRequest, NO_GENERATION};
        let resp = self
            .call_coordinator(
                group,
                "reading committed offsets",
                &OffsetFetchRequest {
                    group_id: group.to_string(),
                    member_id: None,
                    member_epoch: NO_GENERATION,
                    topics: None,
                    require_stable: false,
                },
            )
            .await?;
        if resp.error_code != ErrorCode::None {
            return Err(Error::broker(resp.error_code, None));
        }
        let mut out = Vec::new();
        for t in resp.topics {
            for p in t.partitions {
                if let Some(offset) = p.committed_offset {
                    out.push((
                        TopicPartition::new(&t.name, p.partition.0),
                        OffsetAndMetadata {
                            offset,
                            metadata: p.metadata.filter(|m| !m.is_empty()),
                        },
                    ));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Sets a group's committed offsets from outside the group (Kafka's
    /// `alterConsumerGroupOffsets`): what `streamctl group reset-offsets --execute` does. The
    /// broker accepts it only while the group has no members (a running member would
    /// overwrite it with its own position); otherwise it fails with `UnknownMemberId`. The
    /// offsets are written as given: check them against the partitions' start and end first.
    ///
    /// ```no_run
    /// # async fn f(admin: quiver_client::Admin) -> quiver_client::Result<()> {
    /// use quiver_client::{Offset, TopicPartition};
    /// // Replay orders/0 from offset 100 the next time the billing group starts.
    /// admin.alter_group_offsets("billing", &[(TopicPartition::new("orders", 0), Offset(100))]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn alter_group_offsets(
        &self,
        group: &str,
        offsets: &[(TopicPartition, Offset)],
    ) -> Result<()> {
        use quiver_proto::api::group::{
            OffsetCommitPartition, OffsetCommitRequest, OffsetCommitTopic, NO_GENERATION,
        };
        if offsets.is_empty() {
            return Ok(());
        }
        let parts = offsets.iter().map(|(tp, o)| {
            let part = OffsetCommitPartition {
                partition: tp.partition,
                committed_offset: *o,
                committed_leader_epoch: None,
                committed_metadata: None,
            };
            (&tp.topic, part)
        });
        let topics = by_topic(parts, |name, partitions| OffsetCommitTopic {
            name: name.clone(),
            partitions,
        });
        let req = OffsetCommitRequest {
            group_id: group.to_string(),
            generation_id_or_member_epoch: NO_GENERATION,
            member_id: String::new(),
            group_instance_id: None,
            topics,
        };
        let resp = self
            .call_coordinator(group, "changing committed offsets", &req)
            .await?;
        for t in resp.topics {
            for p in t.partitions {
                match p.error_code {
                    ErrorCode::None => {}
                    ErrorCode::UnknownMemberId => {
                        return Err(Error::broker(
                            ErrorCode::UnknownMemberId,
                            Some(format!(
                                "group '{group}' has active members; stop them before changing \
                                 its offsets"
                            )),
                        ))
                    }
                    c => {
                        return Err(Error::broker(
                            c,
                            Some(format!(
                                "setting the offset of {}/{} for group '{group}': {}",
                                t.name,
                                p.partition.0,
                                c.description()
                            )),
                        ))
                    }
                }
            }
        }
        Ok(())
    }

    /// A group's state, members and committed offsets (with each partition's end and lag).
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        use quiver_proto::api::group::DescribeGroupsRequest;
        let resp = self
            .call_coordinator(
                group,
                "describing groups",
                &DescribeGroupsRequest {
                    groups: vec![group.to_string()],
                },
            )
            .await?;
        let g = resp
            .groups
            .into_iter()
            .find(|g| g.group_id == group)
            .ok_or_else(|| Error::Protocol(format!("no DescribeGroups answer for '{group}'")))?;
        if g.error_code != ErrorCode::None {
            return Err(Error::broker(g.error_code, g.error_message));
        }
        let members: Vec<GroupMember> = g
            .members
            .into_iter()
            .map(|m| GroupMember {
                member_id: m.member_id,
                instance_id: m.group_instance_id,
                client_host: m.client_host,
                member_epoch: m.member_epoch,
                subscribed_topics: m.subscribed_topic_names,
                assigned: topic_partition_lists(m.assigned),
                target: topic_partition_lists(m.target_assignment),
            })
            .collect();
        // Every partition with a commit or an owner.
        let mut rows: BTreeMap<TopicPartition, (Option<OffsetAndMetadata>, Option<String>)> =
            BTreeMap::new();
        for (tp, o) in self.list_group_offsets(group).await? {
            rows.entry(tp).or_default().0 = Some(o);
        }
        for m in &members {
            for (topic, ps) in &m.assigned {
                for p in ps {
                    rows.entry(TopicPartition::new(topic, *p)).or_default().1 =
                        Some(m.member_id.clone());
                }
            }
        }
        let mut ends: BTreeMap<TopicPartition, Offset> = BTreeMap::new();
        let asked = rows
            .keys()
            .map(|tp| (&tp.topic, (tp.clone(), OffsetSpec::Latest)));
        // A topic at a time: a deleted topic fails its own listing only.
        for asked in by_topic(asked, |_, asked| asked) {
            // A deleted topic has no end; its committed offsets are still shown.
            if let Ok(found) = list_offsets_raw(&self.client, &asked).await {
                ends.extend(found.into_iter().filter_map(|(tp, o)| o.map(|o| (tp, o))));
            }
        }
        let offsets = rows
            .into_iter()
            .map(|(tp, (c, owner))| {
                let end = ends.get(&tp).copied();
                let committed = c.as_ref().map(|c| c.offset);
                GroupOffset {
                    topic: tp.topic.clone(),
                    partition: tp.partition.0,
                    committed: committed.map(|o| o.0),
                    metadata: c.and_then(|c| c.metadata),
                    end: end.map(|o| o.0),
                    lag: match (committed, end) {
                        (Some(c), Some(e)) => Some(e.0.saturating_sub(c.0)),
                        _ => None,
                    },
                    member_id: owner,
                }
            })
            .collect();
        Ok(GroupDescription {
            group_id: g.group_id,
            state: format!("{:?}", g.group_state),
            assignor: g.protocol_data.filter(|a| !a.is_empty()),
            group_epoch: g.group_epoch,
            assignment_epoch: g.assignment_epoch,
            members,
            offsets,
        })
    }

    /// Deletes a group with no members, and its committed offsets.
    pub async fn delete_group(&self, group: &str) -> Result<()> {
        use quiver_proto::api::group::DeleteGroupsRequest;
        let resp = self
            .call_coordinator(
                group,
                "deleting groups",
                &DeleteGroupsRequest {
                    groups_names: vec![group.to_string()],
                },
            )
            .await?;
        let r = resp
            .results
            .into_iter()
            .find(|r| r.group_id == group)
            .ok_or_else(|| Error::Protocol(format!("no DeleteGroups answer for '{group}'")))?;
        if r.error_code != ErrorCode::None {
            return Err(Error::broker(
                r.error_code,
                Some(format!("group '{group}': {}", r.error_code.description())),
            ));
        }
        Ok(())
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
