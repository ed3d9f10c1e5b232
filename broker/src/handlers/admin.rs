//! ApiVersions, Metadata, DescribeConfigs (answered by any shard from its snapshot) and topic
//! changes (forwarded to the controller).

use std::collections::BTreeMap;
use std::rc::Rc;

use quiver_proto::api::common::{ApiVersionRange, Uuid};
use quiver_proto::api::handshake::ApiVersionsResponse;
use quiver_proto::api::metadata::{
    ConfigResourceType, ConfigSource, ConfigType, DescribeConfigsEntry, DescribeConfigsRequest,
    DescribeConfigsResponse, DescribeConfigsResult, MetadataBroker, MetadataPartition,
    MetadataRequest, MetadataResponse, MetadataTopic,
};
use quiver_proto::api::AnyResponse;
use quiver_proto::{BrokerId, ErrorCode, LeaderEpoch, PartitionId, ShardId};

use super::common::{Answer, SERVED};
use crate::cluster::controller::AdminOp;
use crate::runtime::Shard;

pub(super) fn api_versions(shard: &Shard) -> ApiVersionsResponse {
    ApiVersionsResponse {
        error_code: ErrorCode::None,
        api_keys: SERVED
            .iter()
            .map(|api| {
                let v = api.versions();
                ApiVersionRange {
                    api_key: api.as_u16(),
                    min_version: v.min,
                    max_version: v.max,
                }
            })
            .collect(),
        throttle_time_ms: 0,
        broker_id: BrokerId(shard.config.broker_id),
        cluster_id: Some(shard.cluster_id().to_string()),
        sasl_mechanisms: Vec::new(),
    }
}

/// Creates the topics that do not exist yet (auto.create.topics), with broker defaults.
pub(super) async fn auto_create<'a>(shard: &Rc<Shard>, names: impl Iterator<Item = &'a str>) {
    let snapshot = shard.snapshot();
    let missing: Vec<String> = names
        .filter(|n| {
            snapshot.topic(n).is_none()
                && crate::cluster::topic::validate_name(n).is_ok()
                && !crate::cluster::topic::is_internal(n)
        })
        .map(str::to_string)
        .collect();
    for name in missing {
        let op = AdminOp::EnsureTopic {
            name,
            partitions: shard.config.default_partitions,
            configs: BTreeMap::new(),
            internal: false,
        };
        let _ = change(shard, op).await;
    }
}

pub(super) async fn metadata(shard: &Rc<Shard>, req: MetadataRequest) -> MetadataResponse {
    if let (Some(names), true) = (
        &req.topics,
        req.allow_auto_topic_creation && shard.config.auto_create_topics,
    ) {
        auto_create(shard, names.iter().map(String::as_str)).await;
    }
    let snapshot = shard.snapshot();
    let me = BrokerId(shard.config.broker_id);
    let describe = |name: &str| -> MetadataTopic {
        match snapshot.topic(name) {
            None => MetadataTopic {
                error_code: ErrorCode::UnknownTopicOrPartition,
                name: name.to_string(),
                ..Default::default()
            },
            Some(info) => MetadataTopic {
                error_code: ErrorCode::None,
                name: name.to_string(),
                topic_id: Uuid(info.id),
                is_internal: info.internal,
                partitions: (0..info.meta.partitions)
                    .map(|p| MetadataPartition {
                        error_code: ErrorCode::None,
                        partition: PartitionId(p),
                        leader: Some(me),
                        leader_epoch: LeaderEpoch(0),
                        replicas: vec![me],
                        isr: vec![me],
                        offline_replicas: Vec::new(),
                        leader_shard: Some(shard.owner(info, PartitionId(p)).0 as u16),
                    })
                    .collect(),
            },
        }
    };
    let topics = match &req.topics {
        // Each distinct name once, in the order first asked: a repeated name adds nothing.
        Some(names) => {
            let mut seen = std::collections::HashSet::new();
            names
                .iter()
                .filter(|n| seen.insert(n.as_str()))
                .map(|n| describe(n))
                .collect()
        }
        None => {
            let mut names: Vec<&String> = snapshot
                .topics
                .iter()
                .filter(|(_, t)| !t.internal)
                .map(|(n, _)| n)
                .collect();
            names.sort();
            names.into_iter().map(|n| describe(n)).collect()
        }
    };
    MetadataResponse {
        throttle_time_ms: 0,
        brokers: vec![MetadataBroker {
            broker_id: me,
            host: shard.config.advertised_host(),
            port: shard.listen_port(),
            rack: None,
            shard_count: shard.shard_count() as u16,
        }],
        cluster_id: Some(shard.cluster_id().to_string()),
        controller_id: Some(me),
        topics,
    }
}

/// Runs an admin change on the controller (shard 0): waits for its turn, makes the change
/// durable, has every shard apply it, then answers. The whole of it runs in a task on shard 0
/// (`Shard::run_on`), so a client that goes away cannot stop it between the metadata write and
/// its application.
pub async fn change(shard: &Rc<Shard>, op: AdminOp) -> AnyResponse {
    let stopping = op.failed(ErrorCode::BrokerShuttingDown, "broker is shutting down");
    shard
        .run_on(ShardId(0), move |shard| async move {
            let Some(controller) = shard.controller.clone() else {
                return op.failed(
                    ErrorCode::NotController,
                    "admin request reached a shard without the controller",
                );
            };
            let Some(turn) = controller.turn().await else {
                return op.failed(ErrorCode::BrokerShuttingDown, "controller is stopping");
            };
            let (answer, plan) = turn.change(op).await;
            if let Some(plan) = plan {
                shard
                    .broadcast_apply(plan.snapshot.clone(), plan.deleted.clone())
                    .await;
                turn.finish(&plan);
            }
            answer
        })
        .await
        .unwrap_or(stopping)
}

/// [`change`], as a handler's answer.
pub(super) async fn answer(shard: &Rc<Shard>, op: AdminOp) -> Answer {
    let body = change(shard, op).await;
    let failed = match &body {
        AnyResponse::CreateTopics(r) => r.topics.iter().any(|t| t.error_code != ErrorCode::None),
        AnyResponse::DeleteTopics(r) => r.responses.iter().any(|t| t.error_code != ErrorCode::None),
        AnyResponse::CreatePartitions(r) => {
            r.results.iter().any(|t| t.error_code != ErrorCode::None)
        }
        AnyResponse::IncrementalAlterConfigs(r) => {
            r.responses.iter().any(|t| t.error_code != ErrorCode::None)
        }
        AnyResponse::InitProducerId(r) => r.error_code != ErrorCode::None,
        _ => false,
    };
    Answer {
        body,
        payload: Vec::new(),
        failed,
    }
}

pub(super) fn describe_configs(
    shard: &Shard,
    req: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let snapshot = shard.snapshot();
    let results = req
        .resources
        .iter()
        .map(|res| {
            let mut out = DescribeConfigsResult {
                resource_type: res.resource_type,
                resource_name: res.resource_name.clone(),
                ..Default::default()
            };
            let wanted = |k: &str| {
                res.configuration_keys.is_empty() || res.configuration_keys.iter().any(|w| w == k)
            };
            match res.resource_type {
                ConfigResourceType::Topic => match snapshot.topic(&res.resource_name) {
                    None => {
                        out.error_code = ErrorCode::UnknownTopicOrPartition;
                        out.error_message =
                            Some(format!("topic '{}' does not exist", res.resource_name));
                    }
                    Some(info) => {
                        out.configs = info
                            .config
                            .entries()
                            .into_iter()
                            .filter(|(k, _)| wanted(k))
                            .map(|(k, v)| DescribeConfigsEntry {
                                name: k.to_string(),
                                value: Some(v),
                                read_only: false,
                                config_source: if info.meta.configs.contains_key(k) {
                                    ConfigSource::TopicOverride
                                } else {
                                    ConfigSource::StaticBroker
                                },
                                is_sensitive: false,
                                config_type: if k == "cleanup.policy"
                                    || k == "message.timestamp.type"
                                {
                                    ConfigType::String
                                } else {
                                    ConfigType::Long
                                },
                                documentation: config_note(k, &info.config),
                            })
                            .collect();
                    }
                },
                ConfigResourceType::Broker
                    if !res.resource_name.is_empty()
                        && res.resource_name != shard.config.broker_id.to_string() =>
                {
                    // One broker's settings, asked by its id (or by no name): without this check
                    // every distinct name repeated the whole list, a hundredfold amplification.
                    out.error_code = ErrorCode::ResourceNotFound;
                    out.error_message = Some(format!(
                        "this is broker {}; ask broker '{}' for its own configs",
                        shard.config.broker_id, res.resource_name
                    ));
                }
                ConfigResourceType::Broker => {
                    out.configs = shard
                        .config
                        .values()
                        .into_iter()
                        .filter(|(k, _)| wanted(k))
                        .map(|(k, v)| DescribeConfigsEntry {
                            name: k.to_string(),
                            value: Some(v),
                            read_only: true,
                            config_source: ConfigSource::StaticBroker,
                            is_sensitive: false,
                            config_type: ConfigType::String,
                            documentation: None,
                        })
                        .collect();
                }
                other => {
                    out.error_code = ErrorCode::InvalidRequest;
                    out.error_message =
                        Some(format!("cannot describe configs of {other:?} resources"));
                }
            }
            out
        })
        .collect();
    DescribeConfigsResponse {
        throttle_time_ms: 0,
        results,
    }
}

/// A note shown with a topic config when its value changes what an acknowledgement means.
/// `flush.ms` > 0: produce requests are answered before their records are fdatasynced, so a
/// power loss (not a crash of streamd alone) can lose up to that much acknowledged data.
fn config_note(key: &str, config: &crate::cluster::topic::TopicConfig) -> Option<String> {
    match key {
        "flush.ms" if config.flush_ms > 0 => Some(format!(
            "acknowledgements come before fsync: produce requests are answered once written, and synced every {} ms, so a power loss may lose up to {} ms of acknowledged records",
            config.flush_ms, config.flush_ms
        )),
        _ => None,
    }
}
