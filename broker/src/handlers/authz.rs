//! The authorizer's part of each request that the handlers do not check inline: admin changes
//! split into the entries the principal may make (sent on to the controller) and those it may
//! not (answered here with an authorization error), and group requests' entries filtered.
//! Which operation each API needs follows Kafka (ARCHITECTURE.md, "Security").

use std::rc::Rc;

use quiver_proto::api::group::{
    OffsetCommitPartitionResponse, OffsetCommitRequest, OffsetCommitResponse,
    OffsetCommitTopicResponse, OffsetFetchRequest, OffsetFetchResponse,
};
use quiver_proto::api::metadata::{ConfigResourceType, CreateTopicsRequest};
use quiver_proto::api::AnyResponse;
use quiver_proto::ErrorCode;

use super::admin::may_create;
use super::common::Answer;
use crate::cluster::controller::AdminOp;
use crate::runtime::Shard;
use crate::security::acl::Operation;
use crate::security::Access;

/// Keeps the entries `keep` allows of a list; the others go to the second list.
fn split<T>(items: Vec<T>, mut keep: impl FnMut(&T) -> bool) -> (Vec<T>, Vec<T>) {
    items.into_iter().partition(|i| keep(i))
}

/// The op with only what `access` allows, and the refused part with its error code.
fn divide(access: &Access, op: AdminOp) -> (Option<AdminOp>, Vec<(AdminOp, ErrorCode)>) {
    let topic_denied = ErrorCode::TopicAuthorizationFailed;
    let cluster_denied = ErrorCode::ClusterAuthorizationFailed;
    let whole = |allowed: bool, op: AdminOp, code| {
        if allowed {
            (Some(op), Vec::new())
        } else {
            (None, vec![(op, code)])
        }
    };
    // A request naming nothing goes on as it is (the controller answers it, empty): there is
    // always an allowed part or a refused one.
    let parts = |ok: AdminOp, no: AdminOp, ok_empty: bool, no_empty: bool, code| {
        (
            (!ok_empty || no_empty).then_some(ok),
            if no_empty {
                Vec::new()
            } else {
                vec![(no, code)]
            },
        )
    };
    match op {
        AdminOp::CreateTopics(r) => {
            let (ok, no) = split(r.topics, |t| may_create(access, &t.name));
            let (ok_empty, no_empty) = (ok.is_empty(), no.is_empty());
            let with = |topics| {
                AdminOp::CreateTopics(CreateTopicsRequest {
                    topics,
                    timeout_ms: r.timeout_ms,
                    validate_only: r.validate_only,
                })
            };
            parts(with(ok), with(no), ok_empty, no_empty, topic_denied)
        }
        AdminOp::DeleteTopics(mut r) => {
            let (ok, no) = split(std::mem::take(&mut r.topic_names), |t| {
                access.topic(Operation::Delete, t)
            });
            let (ok_empty, no_empty) = (ok.is_empty(), no.is_empty());
            let mut refused = r.clone();
            refused.topic_names = no;
            r.topic_names = ok;
            parts(
                AdminOp::DeleteTopics(r),
                AdminOp::DeleteTopics(refused),
                ok_empty,
                no_empty,
                topic_denied,
            )
        }
        AdminOp::CreatePartitions(mut r) => {
            let (ok, no) = split(std::mem::take(&mut r.topics), |t| {
                access.topic(Operation::Alter, &t.name)
            });
            let (ok_empty, no_empty) = (ok.is_empty(), no.is_empty());
            let mut refused = r.clone();
            refused.topics = no;
            r.topics = ok;
            parts(
                AdminOp::CreatePartitions(r),
                AdminOp::CreatePartitions(refused),
                ok_empty,
                no_empty,
                topic_denied,
            )
        }
        AdminOp::AlterConfigs(mut r) => {
            let (ok, no) = split(std::mem::take(&mut r.resources), |res| {
                match res.resource_type {
                    ConfigResourceType::Topic => {
                        access.topic(Operation::AlterConfigs, &res.resource_name)
                    }
                    ConfigResourceType::Broker => access.cluster(Operation::AlterConfigs),
                    // Refused further on as not alterable.
                    _ => true,
                }
            });
            let (ok_empty, no_empty) = (ok.is_empty(), no.is_empty());
            let mut refused = r.clone();
            refused.resources = no;
            r.resources = ok;
            let code = if refused
                .resources
                .iter()
                .all(|res| res.resource_type == ConfigResourceType::Topic)
            {
                topic_denied
            } else {
                cluster_denied
            };
            parts(
                AdminOp::AlterConfigs(r),
                AdminOp::AlterConfigs(refused),
                ok_empty,
                no_empty,
                code,
            )
        }
        AdminOp::Reassign(r) => whole(
            access.cluster(Operation::Alter),
            AdminOp::Reassign(r),
            cluster_denied,
        ),
        AdminOp::InitProducerId(r) => whole(
            access.cluster(Operation::IdempotentWrite) || access.any_topic(Operation::Write),
            AdminOp::InitProducerId(r),
            cluster_denied,
        ),
        AdminOp::CreateAcls(r) => whole(
            access.cluster(Operation::Alter),
            AdminOp::CreateAcls(r),
            cluster_denied,
        ),
        AdminOp::DeleteAcls(r) => whole(
            access.cluster(Operation::Alter),
            AdminOp::DeleteAcls(r),
            cluster_denied,
        ),
        AdminOp::AlterQuotas(r) => whole(
            access.cluster(Operation::AlterConfigs),
            AdminOp::AlterQuotas(r),
            cluster_denied,
        ),
        AdminOp::AlterScram(r) => whole(
            access.cluster(Operation::Alter),
            AdminOp::AlterScram(r),
            cluster_denied,
        ),
        // The broker's own (auto-creation, internal topics): checked by its caller.
        op @ AdminOp::EnsureTopic { .. } => (Some(op), Vec::new()),
    }
}

/// Appends `more`'s entries to `into` (two answers of the same API).
fn merge(into: &mut AnyResponse, more: AnyResponse) {
    match (into, more) {
        (AnyResponse::CreateTopics(a), AnyResponse::CreateTopics(b)) => a.topics.extend(b.topics),
        (AnyResponse::DeleteTopics(a), AnyResponse::DeleteTopics(b)) => {
            a.responses.extend(b.responses)
        }
        (AnyResponse::CreatePartitions(a), AnyResponse::CreatePartitions(b)) => {
            a.results.extend(b.results)
        }
        (AnyResponse::IncrementalAlterConfigs(a), AnyResponse::IncrementalAlterConfigs(b)) => {
            a.responses.extend(b.responses)
        }
        _ => {}
    }
}

/// An admin change, authorized: what `access` may do goes to the controller, the rest is
/// refused entry by entry.
pub(super) async fn admin(shard: &Rc<Shard>, access: &Access, op: AdminOp) -> Answer {
    let (allowed, refused) = divide(access, op);
    let mut answer = match allowed {
        Some(op) => Some(super::admin::answer(shard, op).await),
        None => None,
    };
    for (op, code) in refused {
        shard.metrics.denied();
        let message = format!("{} is not authorized for this", access.principal());
        let body = op.failed(code, &message);
        match &mut answer {
            Some(a) => {
                merge(&mut a.body, body);
                a.failed = true;
            }
            None => {
                answer = Some(Answer {
                    body,
                    payload: Vec::new(),
                    failed: true,
                })
            }
        }
    }
    answer.expect("divide gives an allowed part or a refused one")
}

/// OffsetCommit: Read on the group (checked by the caller) and on each topic; the topics it
/// may not read are taken out of the request and answered `TopicAuthorizationFailed`.
pub(super) fn commit_split(
    access: &Access,
    req: &mut OffsetCommitRequest,
) -> Vec<OffsetCommitTopicResponse> {
    let (ok, no) = split(std::mem::take(&mut req.topics), |t| {
        access.topic(Operation::Read, &t.name)
    });
    req.topics = ok;
    no.into_iter()
        .map(|t| OffsetCommitTopicResponse {
            name: t.name,
            partitions: t
                .partitions
                .iter()
                .map(|p| OffsetCommitPartitionResponse {
                    partition: p.partition,
                    error_code: ErrorCode::TopicAuthorizationFailed,
                })
                .collect(),
        })
        .collect()
}

pub(super) fn commit_merge(
    resp: &mut OffsetCommitResponse,
    refused: Vec<OffsetCommitTopicResponse>,
) {
    resp.topics.extend(refused);
}

/// OffsetFetch: topics named but not describable are answered `TopicAuthorizationFailed`;
/// asked for all, they are left out.
pub(super) fn fetch_filter(
    access: &Access,
    req: &OffsetFetchRequest,
    resp: &mut OffsetFetchResponse,
) {
    match &req.topics {
        None => resp
            .topics
            .retain(|t| access.topic(Operation::Describe, &t.name)),
        Some(_) => {
            for t in &mut resp.topics {
                if !access.topic(Operation::Describe, &t.name) {
                    for p in &mut t.partitions {
                        *p = quiver_proto::api::group::OffsetFetchPartition {
                            partition: p.partition,
                            error_code: ErrorCode::TopicAuthorizationFailed,
                            ..Default::default()
                        };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_proto::api::metadata::{
        CreatePartitionsRequest, CreatePartitionsTopic, DeleteTopicsRequest,
        IncrementalAlterConfigsRequest,
    };

    fn deny_all() -> Access {
        let config = crate::security::SecurityConfig {
            authorizer: true,
            ..Default::default()
        };
        Access::new(
            "User:nobody".into(),
            std::net::Ipv4Addr::LOCALHOST.into(),
            false,
            &config,
            std::sync::Arc::default(),
        )
    }

    /// Found by fuzz_handlers: a DeleteTopics naming no topic left neither part, and the
    /// dispatcher's expect ended the process. Every op, empty or not, allowed or not, has a
    /// part to answer from.
    #[test]
    fn every_request_has_a_part_to_answer_from_empty_ones_too() {
        let ops = || {
            vec![
                AdminOp::CreateTopics(CreateTopicsRequest::default()),
                AdminOp::DeleteTopics(DeleteTopicsRequest::default()),
                AdminOp::DeleteTopics(DeleteTopicsRequest {
                    topic_names: vec!["a".into(), "b".into()],
                    timeout_ms: 0,
                }),
                AdminOp::CreatePartitions(CreatePartitionsRequest::default()),
                AdminOp::CreatePartitions(CreatePartitionsRequest {
                    topics: vec![CreatePartitionsTopic::default()],
                    ..Default::default()
                }),
                AdminOp::AlterConfigs(IncrementalAlterConfigsRequest::default()),
                AdminOp::CreateAcls(Default::default()),
                AdminOp::DeleteAcls(Default::default()),
                AdminOp::AlterScram(Default::default()),
                AdminOp::AlterQuotas(Default::default()),
                AdminOp::Reassign(Default::default()),
                AdminOp::InitProducerId(Default::default()),
            ]
        };
        for access in [deny_all(), Access::unrestricted(Default::default())] {
            for op in ops() {
                let name = format!("{op:?}");
                let (allowed, refused) = divide(&access, op);
                assert!(allowed.is_some() || !refused.is_empty(), "{name}");
            }
        }
        // Denied entries are refused, and an allowed principal's go on whole.
        let two = || {
            AdminOp::DeleteTopics(DeleteTopicsRequest {
                topic_names: vec!["a".into(), "b".into()],
                timeout_ms: 0,
            })
        };
        let (allowed, refused) = divide(&deny_all(), two());
        assert!(allowed.is_none());
        assert_eq!(refused.len(), 1);
        let (allowed, refused) = divide(&Access::unrestricted(Default::default()), two());
        assert!(allowed.is_some() && refused.is_empty());
    }
}
