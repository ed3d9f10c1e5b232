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
use crate::security::acl::Operation;
use crate::security::Access;

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
        sasl_mechanisms: shard
            .security
            .mechanisms
            .iter()
            .map(|m| m.name().to_string())
            .collect(),
    }
}

/// Whether `access` may create topic `name` (Create on the cluster, or on the topic).
pub(super) fn may_create(access: &Access, name: &str) -> bool {
    access.cluster(Operation::Create) || access.topic(Operation::Create, name)
}

/// Creates the topics that do not exist yet (auto.create.topics), with broker defaults: those
/// `access` may create.
pub(super) async fn auto_create<'a>(
    shard: &Rc<Shard>,
    names: impl Iterator<Item = &'a str>,
    access: &Access,
) {
    let snapshot = shard.snapshot();
    let missing: Vec<String> = names
        .filter(|n| {
            snapshot.topic(n).is_none()
                && may_create(access, n)
                && crate::cluster::topic::validate_name(n).is_ok()
                && !crate::cluster::topic::is_internal(n)
        })
        .map(str::to_string)
        .collect();
    for name in missing {
        let op = AdminOp::EnsureTopic {
            name,
            partitions: shard.config.default_partitions,
            replication_factor: 1,
            configs: BTreeMap::new(),
            internal: false,
        };
        let _ = change(shard, op).await;
    }
}

pub(super) async fn metadata(
    shard: &Rc<Shard>,
    req: MetadataRequest,
    access: &Access,
) -> MetadataResponse {
    if let (Some(names), true) = (
        &req.topics,
        req.allow_auto_topic_creation && shard.config.auto_create_topics,
    ) {
        auto_create(shard, names.iter().map(String::as_str), access).await;
    }
    let snapshot = shard.snapshot();
    let me = shard.config.broker_id;
    let describe = |name: &str| -> MetadataTopic {
        // Checked before the topic's existence, which it would otherwise tell.
        if !access.topic(Operation::Describe, name) {
            shard.metrics.denied();
            return MetadataTopic {
                error_code: ErrorCode::TopicAuthorizationFailed,
                name: name.to_string(),
                ..Default::default()
            };
        }
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
                    .map(|p| {
                        let partition = PartitionId(p);
                        let leader = snapshot.live_leader(info, partition);
                        // The leader's core that owns it: placement is a pure function of the
                        // topic id and the leader's shard count.
                        let shards = match leader {
                            Some(l) if l != me => snapshot
                                .brokers
                                .get(&l)
                                .map_or(0, |b| usize::from(b.shard_count)),
                            Some(_) => shard.shard_count(),
                            None => 0,
                        };
                        // This broker's log of it could not be opened: its replica here is
                        // offline, and so is the partition if this broker leads it.
                        let here_offline = shard.metrics.is_log_offline(&info.meta.name, p);
                        let log_offline = leader == Some(me) && here_offline;
                        MetadataPartition {
                            error_code: match leader {
                                Some(_) if log_offline => ErrorCode::StorageError,
                                Some(_) => ErrorCode::None,
                                None => ErrorCode::LeaderNotAvailable,
                            },
                            partition,
                            leader: leader.map(BrokerId),
                            leader_epoch: LeaderEpoch(info.leader_epoch(partition)),
                            replicas: info
                                .replicas(partition, me)
                                .into_iter()
                                .map(BrokerId)
                                .collect(),
                            isr: info.isr(partition, me).into_iter().map(BrokerId).collect(),
                            // Replicas on brokers that are fenced or gone: they serve nothing.
                            offline_replicas: info
                                .replicas(partition, me)
                                .into_iter()
                                .filter(|r| !snapshot.is_live(*r) || (*r == me && here_offline))
                                .map(BrokerId)
                                .collect(),
                            leader_shard: (shards > 0).then(|| {
                                crate::runtime::owner_of(info.id, partition, shards).0 as u16
                            }),
                            adding_replicas: info
                                .meta
                                .placed(p)
                                .map(|m| m.adding.iter().copied().map(BrokerId).collect())
                                .unwrap_or_default(),
                            removing_replicas: info
                                .meta
                                .placed(p)
                                .map(|m| m.removing.iter().copied().map(BrokerId).collect())
                                .unwrap_or_default(),
                        }
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
            // Every topic the principal may describe; the others are left out.
            let mut names: Vec<&String> = snapshot
                .topics
                .iter()
                .filter(|(n, t)| !t.internal && access.topic(Operation::Describe, n))
                .map(|(n, _)| n)
                .collect();
            names.sort();
            names.into_iter().map(|n| describe(n)).collect()
        }
    };
    let (brokers, controller_id) = match &shard.quorum {
        None => (
            vec![MetadataBroker {
                broker_id: BrokerId(me),
                host: shard.config.advertised_host(),
                port: shard.listen_port(),
                rack: None,
                shard_count: shard.shard_count() as u16,
            }],
            Some(BrokerId(me)),
        ),
        // A cluster's live brokers: registered, not fenced, not controller-only.
        Some(quorum) => (
            snapshot
                .brokers
                .values()
                .filter(|b| !b.fenced && !b.controller_only)
                .map(|b| MetadataBroker {
                    broker_id: BrokerId(b.id),
                    host: b.host.clone(),
                    port: b.port,
                    rack: b.rack.clone(),
                    shard_count: b.shard_count,
                })
                .collect(),
            quorum.leader().map(BrokerId),
        ),
    };
    // Clients send admin requests to the controller Metadata names, and any broker forwards
    // them to the quorum's leader: when that leader is a controller-only voter (not a broker a
    // client may reach), name this broker, or another listed one (as KRaft does).
    let listed = |id: &BrokerId| brokers.iter().any(|b| b.broker_id == *id);
    let controller_id = match controller_id {
        Some(c) if !listed(&c) => {
            let me = BrokerId(me);
            Some(if listed(&me) {
                me
            } else {
                brokers.first().map_or(c, |b| b.broker_id)
            })
        }
        other => other,
    };
    MetadataResponse {
        throttle_time_ms: 0,
        brokers,
        cluster_id: Some(shard.cluster_id().to_string()),
        controller_id,
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
            let timeout = op.timeout();
            let (answer, plan) = turn.change(op).await;
            let Some(plan) = plan else {
                return answer;
            };
            // The change is durable; applying it may take long (a topic of 100,000 partitions
            // opens 100,000 logs). It runs to its end in a task of its own, which holds the
            // controller's turn until then; the client is answered when it ends, or when the
            // timeout it gave passes (RequestTimedOut: made, not yet in force), whichever is
            // first, so it is not left to give up on its own.
            let partitions: u64 = plan
                .snapshot
                .topics
                .values()
                .map(|t| u64::from(t.meta.partitions))
                .sum();
            let applied = glommio::spawn_local(async move {
                shard
                    .broadcast_apply(plan.snapshot.clone(), plan.deleted.clone())
                    .await;
                turn.finish(&plan);
            })
            // Detached: dropping the handle when the timeout wins does not cancel it.
            .detach();
            let Some(timeout) = timeout else {
                applied.await;
                return answer;
            };
            let timer = async {
                glommio::timer::sleep(timeout).await;
                false
            };
            if futures_lite::future::or(async { applied.await; true }, timer).await {
                answer
            } else {
                AdminOp::timed_out(
                    answer,
                    &format!(
                        "the change is made but not yet in force after the {} ms asked: the brokers are still applying it (opening or closing partition logs; {partitions} partitions in all); it is served once they are",
                        timeout.as_millis()
                    ),
                )
            }
        })
        .await
        .unwrap_or(stopping)
}

/// Where a cluster's admin request is checked: here (this broker is the active controller),
/// or at the leader (`Some`); waits up to the quorum's submit timeout for one to be elected.
pub(super) async fn active_controller(shard: &Shard) -> Result<Option<u32>, String> {
    let Some(quorum) = &shard.quorum else {
        return Ok(None);
    };
    let me = shard.config.broker_id;
    let deadline = std::time::Instant::now() + crate::quorum::SUBMIT_TIMEOUT;
    loop {
        match quorum.leader() {
            Some(l) if l == me && quorum.is_active_controller(me) => return Ok(None),
            Some(l) if l != me => return Ok(Some(l)),
            _ => {}
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!(
                "the controller quorum has no active controller after {} s",
                crate::quorum::SUBMIT_TIMEOUT.as_secs()
            ));
        }
        glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Sends `req` to the active controller, broker `to`, and returns its answer.
pub(super) async fn forward<R: quiver_proto::api::Request>(
    shard: &Rc<Shard>,
    to: u32,
    req: &R,
) -> Result<R::Response, String> {
    let header = quiver_proto::api::request_header(R::API, 0, 0);
    let body = quiver_proto::api::Message::encode_bytes(req);
    let frame = shard
        .run_on(ShardId(0), move |_| async move {
            match crate::quorum::on_this_shard() {
                Some(q) => q.forward(to, header, body).await,
                None => Err("no controller quorum on this broker".to_string()),
            }
        })
        .await
        .ok_or("broker shutting down")??;
    quiver_proto::api::decode_response::<R>(&frame).map_err(|e| e.to_string())
}

/// A read-only request for the active controller: sent there (`Ok(Some)`, its answer), or
/// `Ok(None)` when this broker is it. A controller that stops leading before it answers (it
/// died: its connection would only time out) is left for the next one as soon as this broker
/// sees the change; a failed call is tried again; both until the quorum's submit timeout.
pub(super) async fn to_active_controller<R: quiver_proto::api::Request>(
    shard: &Rc<Shard>,
    req: &R,
) -> Result<Option<R::Response>, String> {
    let Some(quorum) = shard.quorum.clone() else {
        return Ok(None);
    };
    let deadline = std::time::Instant::now() + crate::quorum::SUBMIT_TIMEOUT;
    loop {
        let to = match active_controller(shard).await? {
            None => return Ok(None),
            Some(l) => l,
        };
        let call = async { Some(forward(shard, to, req).await) };
        let deposed = async {
            while quorum.leader() == Some(to) {
                glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
            }
            None
        };
        let failed = match futures_lite::future::or(call, deposed).await {
            Some(Ok(answer)) => return Ok(Some(answer)),
            Some(Err(why)) => why,
            None => format!("broker {to} stopped leading the controller quorum"),
        };
        if std::time::Instant::now() >= deadline {
            return Err(format!("forwarding to the controller: {failed}"));
        }
        glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// In a cluster, a topic change goes to the active controller (the quorum's leader, whose
/// state holds every committed change), so that one client's changes are checked in order
/// against all that came before, whichever broker it talks to. `None`: check it here.
///
/// A forwarded request whose target stops leading before it answers (it died, or lost an
/// election) is sent again to the next leader, until the quorum's submit timeout: the old
/// leader may have committed it, and then the next one refuses it as done (a topic that
/// already exists), as Kafka's controller does for a retried request.
async fn forwarded(shard: &Rc<Shard>, op: &AdminOp) -> Option<AnyResponse> {
    let quorum = shard.quorum.clone()?;
    if matches!(op, AdminOp::InitProducerId(_) | AdminOp::EnsureTopic { .. }) {
        // Producer ids come from this broker's own block; internal topics are ensured here
        // (the state machine refuses a second creation).
        return None;
    }
    let deadline = std::time::Instant::now() + crate::quorum::SUBMIT_TIMEOUT;
    loop {
        let to = match active_controller(shard).await {
            Ok(None) => return None,
            Ok(Some(l)) => l,
            Err(why) => return Some(op.failed(ErrorCode::RequestTimedOut, &why)),
        };
        let call = async { Some(forward_op(shard, to, op).await) };
        let deposed = async {
            while quorum.leader() == Some(to) {
                glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
            }
            None
        };
        match futures_lite::future::or(call, deposed).await {
            Some(None) => return None,
            Some(Some(Ok(answer))) => {
                // Answer only once this broker has the change too, so the client that made
                // it reads it here (its next Metadata may come to this broker).
                read_barrier(shard).await;
                return Some(answer);
            }
            // The call failed (a connection lost, a controller busy past the call timeout):
            // sent again, to whoever leads then, until the deadline, as for a deposed one.
            Some(Some(Err(why))) if std::time::Instant::now() >= deadline => {
                return Some(op.failed(ErrorCode::NotController, &why))
            }
            Some(Some(Err(why))) => {
                tracing::debug!(to, error = %why, "forwarding to the controller failed; sending it again");
                glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
            }
            None if std::time::Instant::now() < deadline => {
                tracing::debug!(
                    from = to,
                    "the controller changed while a request was forwarded to it; sending it again"
                );
            }
            None => {
                return Some(op.failed(
                    ErrorCode::RequestTimedOut,
                    "the controller changed and no new one took the request in time",
                ))
            }
        }
    }
}

/// Waits until this broker has applied what the controller had committed (a `Quorum` read
/// barrier, on shard 0); a barrier that times out is logged and the answer goes anyway.
async fn read_barrier(shard: &Rc<Shard>) {
    let result = shard
        .run_on(ShardId(0), |_| async move {
            match crate::quorum::on_this_shard() {
                Some(q) => q.read_barrier().await.map_err(|e| e.to_string()),
                None => Ok(()),
            }
        })
        .await;
    if let Some(Err(why)) = result {
        tracing::warn!(error = %why, "answering a forwarded change before this broker applied it");
    }
}

/// `op` forwarded to broker `to`, with its answer; `None` for what is never forwarded.
async fn forward_op(
    shard: &Rc<Shard>,
    to: u32,
    op: &AdminOp,
) -> Option<Result<AnyResponse, String>> {
    Some(match op {
        AdminOp::CreateTopics(r) => forward(shard, to, r).await.map(AnyResponse::from),
        AdminOp::DeleteTopics(r) => forward(shard, to, r).await.map(AnyResponse::from),
        AdminOp::CreatePartitions(r) => forward(shard, to, r).await.map(AnyResponse::from),
        AdminOp::AlterConfigs(r) => forward(shard, to, r).await.map(AnyResponse::from),
        AdminOp::Reassign(r) => forward(shard, to, r).await.map(AnyResponse::from),
        AdminOp::CreateAcls(r) => forward(shard, to, r).await.map(AnyResponse::from),
        AdminOp::DeleteAcls(r) => forward(shard, to, r).await.map(AnyResponse::from),
        AdminOp::AlterScram(r) => forward(shard, to, r).await.map(AnyResponse::from),
        AdminOp::AlterQuotas(r) => forward(shard, to, r).await.map(AnyResponse::from),
        AdminOp::InitProducerId(_) | AdminOp::EnsureTopic { .. } => return None,
    })
}

/// [`change`], as a handler's answer.
pub(super) async fn answer(shard: &Rc<Shard>, op: AdminOp) -> Answer {
    let body = match forwarded(shard, &op).await {
        Some(body) => body,
        None => change(shard, op).await,
    };
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
        AnyResponse::AlterPartitionReassignments(r) => {
            r.results.iter().any(|t| t.error_code != ErrorCode::None)
        }
        AnyResponse::CreateAcls(r) => r.results.iter().any(|t| t.error_code != ErrorCode::None),
        AnyResponse::DeleteAcls(r) => r
            .filter_results
            .iter()
            .any(|t| t.error_code != ErrorCode::None),
        AnyResponse::AlterUserScramCredentials(r) => {
            r.results.iter().any(|t| t.error_code != ErrorCode::None)
        }
        AnyResponse::AlterClientQuotas(r) => {
            r.entries.iter().any(|t| t.error_code != ErrorCode::None)
        }
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
    access: &Access,
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
            let allowed = match res.resource_type {
                ConfigResourceType::Topic => {
                    access.topic(Operation::DescribeConfigs, &res.resource_name)
                }
                ConfigResourceType::Broker => access.cluster(Operation::DescribeConfigs),
                _ => true,
            };
            match res.resource_type {
                _ if !allowed => {
                    shard.metrics.denied();
                    out.error_code = match res.resource_type {
                        ConfigResourceType::Topic => ErrorCode::TopicAuthorizationFailed,
                        _ => ErrorCode::ClusterAuthorizationFailed,
                    };
                    out.error_message = Some(format!(
                        "{} may not describe these configs",
                        access.principal()
                    ));
                }
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
