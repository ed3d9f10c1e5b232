//! The admin operation: a topic, ACL, quota or credential change as it crosses the mesh to the
//! controller, how long its client asked to wait, and the answers that fail it or report its
//! timeout (the controller itself, which makes the change, is the parent module).

use std::collections::BTreeMap;

use quiver_proto::api::acl::{
    AclCreationResult, CreateAclsRequest, CreateAclsResponse, DeleteAclsFilterResult,
    DeleteAclsRequest, DeleteAclsResponse,
};
use quiver_proto::api::common::TopicResult;
use quiver_proto::api::metadata::{
    AlterConfigsResult, AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse,
    CreatableTopicResult, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest,
    CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, ReassignPartitionResult,
};
use quiver_proto::api::produce::{InitProducerIdRequest, InitProducerIdResponse};
use quiver_proto::api::quota::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, QuotaAlterResult,
};
use quiver_proto::api::user::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    AlterUserScramCredentialsResult,
};
use quiver_proto::api::AnyResponse;
use quiver_proto::ErrorCode;

/// A topic change, as it crosses the mesh to the controller.
#[derive(Clone, Debug)]
pub enum AdminOp {
    CreateTopics(CreateTopicsRequest),
    DeleteTopics(DeleteTopicsRequest),
    CreatePartitions(CreatePartitionsRequest),
    AlterConfigs(IncrementalAlterConfigsRequest),
    /// Moves partitions' replicas (`cluster::reassign`).
    Reassign(AlterPartitionReassignmentsRequest),
    /// Creates a topic if it is missing, with the broker's defaults unless given (auto-creation,
    /// and internal topics). `internal` allows a `__` name.
    EnsureTopic {
        name: String,
        partitions: u32,
        /// In a cluster, at most the brokers it may be placed on; 1 on a single broker.
        replication_factor: u16,
        configs: BTreeMap<String, String>,
        internal: bool,
    },
    /// A producer id and epoch for an idempotent producer.
    InitProducerId(InitProducerIdRequest),
    CreateAcls(CreateAclsRequest),
    DeleteAcls(DeleteAclsRequest),
    /// Creates, replaces or deletes SCRAM credentials.
    AlterScram(AlterUserScramCredentialsRequest),
    /// Sets or removes client quotas.
    AlterQuotas(AlterClientQuotasRequest),
}

impl AdminOp {
    /// How long the client asked to wait for the change to be in force (`timeout_ms` of
    /// CreateTopics, CreatePartitions and DeleteTopics); `None` for other changes or 0.
    pub fn timeout(&self) -> Option<std::time::Duration> {
        let ms = match self {
            AdminOp::CreateTopics(r) => r.timeout_ms,
            AdminOp::DeleteTopics(r) => r.timeout_ms,
            AdminOp::CreatePartitions(r) => r.timeout_ms,
            _ => 0,
        };
        (ms > 0).then(|| std::time::Duration::from_millis(u64::from(ms)))
    }

    /// `answer` (this op's) with every entry that succeeded marked `RequestTimedOut` with
    /// `message`: the change is made and durable, and still being applied (Kafka's answer to a
    /// CreateTopics whose timeout passed). Entries that failed keep their error.
    pub fn timed_out(answer: AnyResponse, message: &str) -> AnyResponse {
        let mark = |code: &mut ErrorCode, msg: &mut Option<String>| {
            if *code == ErrorCode::None {
                *code = ErrorCode::RequestTimedOut;
                *msg = Some(message.to_string());
            }
        };
        match answer {
            AnyResponse::CreateTopics(mut r) => {
                for t in &mut r.topics {
                    mark(&mut t.error_code, &mut t.error_message);
                }
                AnyResponse::CreateTopics(r)
            }
            AnyResponse::DeleteTopics(mut r) => {
                for t in &mut r.responses {
                    mark(&mut t.error_code, &mut t.error_message);
                }
                AnyResponse::DeleteTopics(r)
            }
            AnyResponse::CreatePartitions(mut r) => {
                for t in &mut r.results {
                    mark(&mut t.error_code, &mut t.error_message);
                }
                AnyResponse::CreatePartitions(r)
            }
            other => other,
        }
    }

    /// The response that fails every item of this request with `code`.
    pub fn failed(&self, code: ErrorCode, message: &str) -> AnyResponse {
        let msg = Some(message.to_string());
        match self {
            AdminOp::CreateTopics(r) => AnyResponse::CreateTopics(CreateTopicsResponse {
                throttle_time_ms: 0,
                topics: r
                    .topics
                    .iter()
                    .map(|t| CreatableTopicResult {
                        name: t.name.clone(),
                        error_code: code,
                        error_message: msg.clone(),
                        ..Default::default()
                    })
                    .collect(),
            }),
            AdminOp::DeleteTopics(r) => AnyResponse::DeleteTopics(DeleteTopicsResponse {
                throttle_time_ms: 0,
                responses: r
                    .topic_names
                    .iter()
                    .map(|n| TopicResult {
                        name: n.clone(),
                        error_code: code,
                        error_message: msg.clone(),
                    })
                    .collect(),
            }),
            AdminOp::CreatePartitions(r) => {
                AnyResponse::CreatePartitions(CreatePartitionsResponse {
                    throttle_time_ms: 0,
                    results: r
                        .topics
                        .iter()
                        .map(|t| TopicResult {
                            name: t.name.clone(),
                            error_code: code,
                            error_message: msg.clone(),
                        })
                        .collect(),
                })
            }
            AdminOp::AlterConfigs(r) => {
                AnyResponse::IncrementalAlterConfigs(IncrementalAlterConfigsResponse {
                    throttle_time_ms: 0,
                    responses: r
                        .resources
                        .iter()
                        .map(|res| AlterConfigsResult {
                            error_code: code,
                            error_message: msg.clone(),
                            resource_type: res.resource_type,
                            resource_name: res.resource_name.clone(),
                        })
                        .collect(),
                })
            }
            AdminOp::Reassign(r) => {
                AnyResponse::AlterPartitionReassignments(AlterPartitionReassignmentsResponse {
                    throttle_time_ms: 0,
                    results: r
                        .partitions
                        .iter()
                        .map(|p| ReassignPartitionResult {
                            topic: p.topic.clone(),
                            partition: p.partition,
                            error_code: code,
                            error_message: msg.clone(),
                        })
                        .collect(),
                })
            }
            AdminOp::InitProducerId(_) => AnyResponse::InitProducerId(InitProducerIdResponse {
                error_code: code,
                ..Default::default()
            }),
            AdminOp::CreateAcls(r) => AnyResponse::CreateAcls(CreateAclsResponse {
                throttle_time_ms: 0,
                results: r
                    .creations
                    .iter()
                    .map(|_| AclCreationResult {
                        error_code: code,
                        error_message: msg.clone(),
                    })
                    .collect(),
            }),
            AdminOp::DeleteAcls(r) => AnyResponse::DeleteAcls(DeleteAclsResponse {
                throttle_time_ms: 0,
                filter_results: r
                    .filters
                    .iter()
                    .map(|_| DeleteAclsFilterResult {
                        error_code: code,
                        error_message: msg.clone(),
                        matching_acls: Vec::new(),
                    })
                    .collect(),
            }),
            AdminOp::AlterQuotas(r) => AnyResponse::AlterClientQuotas(AlterClientQuotasResponse {
                throttle_time_ms: 0,
                entries: r
                    .entries
                    .iter()
                    .map(|e| QuotaAlterResult {
                        error_code: code,
                        error_message: msg.clone(),
                        entity: e.entity.clone(),
                    })
                    .collect(),
            }),
            AdminOp::AlterScram(r) => {
                let mut users: Vec<&String> = r
                    .deletions
                    .iter()
                    .map(|d| &d.name)
                    .chain(r.upsertions.iter().map(|u| &u.name))
                    .collect();
                users.sort();
                users.dedup();
                AnyResponse::AlterUserScramCredentials(AlterUserScramCredentialsResponse {
                    throttle_time_ms: 0,
                    results: users
                        .into_iter()
                        .map(|u| AlterUserScramCredentialsResult {
                            user: u.clone(),
                            error_code: code,
                            error_message: msg.clone(),
                        })
                        .collect(),
                })
            }
            AdminOp::EnsureTopic { name, .. } => AnyResponse::CreateTopics(CreateTopicsResponse {
                throttle_time_ms: 0,
                topics: vec![CreatableTopicResult {
                    name: name.clone(),
                    error_code: code,
                    error_message: msg,
                    ..Default::default()
                }],
            }),
        }
    }
}
