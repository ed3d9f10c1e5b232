//! DescribeAcls and DescribeUserScramCredentials, answered by any broker from its metadata
//! snapshot (changes go to the controller, `authz::admin`).

use quiver_proto::api::acl::{DescribeAclsRequest, DescribeAclsResponse};
use quiver_proto::api::quota::{
    DescribeClientQuotasRequest, DescribeClientQuotasResponse, QuotaDescribeEntry, QuotaValue,
};
use quiver_proto::api::user::{
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
    DescribeUserScramCredentialsResult, ScramCredentialInfo,
};
use quiver_proto::ErrorCode;

use crate::runtime::Shard;
use crate::security::acl::{Acl, Operation};
use crate::security::{wire, Access};

fn refused(shard: &Shard, access: &Access) -> Option<String> {
    if access.cluster(Operation::Describe) {
        return None;
    }
    shard.metrics.denied();
    Some(format!(
        "{} may not describe the cluster's security (Describe on the cluster)",
        access.principal()
    ))
}

pub(super) fn describe_acls(
    shard: &Shard,
    req: DescribeAclsRequest,
    access: &Access,
) -> DescribeAclsResponse {
    if let Some(why) = refused(shard, access) {
        return DescribeAclsResponse {
            error_code: ErrorCode::ClusterAuthorizationFailed,
            error_message: Some(why),
            ..Default::default()
        };
    }
    if let Err(why) = wire::check_filter(&req.filter) {
        return DescribeAclsResponse {
            error_code: ErrorCode::InvalidRequest,
            error_message: Some(why),
            ..Default::default()
        };
    }
    let snapshot = shard.snapshot();
    let mut acls: Vec<&Acl> = snapshot
        .security
        .acls
        .iter()
        .filter(|a| wire::filter_matches(&req.filter, a))
        .collect();
    acls.sort();
    DescribeAclsResponse {
        bindings: acls.into_iter().map(wire::to_binding).collect(),
        ..Default::default()
    }
}

pub(super) fn describe_users(
    shard: &Shard,
    req: DescribeUserScramCredentialsRequest,
    access: &Access,
) -> DescribeUserScramCredentialsResponse {
    if let Some(why) = refused(shard, access) {
        return DescribeUserScramCredentialsResponse {
            error_code: ErrorCode::ClusterAuthorizationFailed,
            error_message: Some(why),
            ..Default::default()
        };
    }
    let snapshot = shard.snapshot();
    let users = &snapshot.security.users;
    let describe = |user: &str| match users.get(user) {
        Some(creds) => DescribeUserScramCredentialsResult {
            user: user.to_string(),
            credential_infos: creds
                .iter()
                .map(|(m, c)| ScramCredentialInfo {
                    mechanism: m.clone(),
                    iterations: c.iterations,
                })
                .collect(),
            ..Default::default()
        },
        None => DescribeUserScramCredentialsResult {
            user: user.to_string(),
            error_code: ErrorCode::ResourceNotFound,
            error_message: Some(format!("user '{user}' has no credential")),
            ..Default::default()
        },
    };
    let results = match &req.users {
        None => users.keys().map(|u| describe(u)).collect(),
        Some(names) => names.iter().map(|u| describe(u)).collect(),
    };
    DescribeUserScramCredentialsResponse {
        results,
        ..Default::default()
    }
}

/// DescribeClientQuotas: DescribeConfigs on the cluster (as Kafka); the entities the filter
/// matches (each component's part: 0 the name given, 1 the default, 2 any; `strict`: no other
/// parts).
pub(super) fn describe_quotas(
    shard: &Shard,
    req: DescribeClientQuotasRequest,
    access: &Access,
) -> DescribeClientQuotasResponse {
    use crate::security::quota::{entity_parts, EntityName, QuotaEntity};
    if !access.cluster(Operation::DescribeConfigs) {
        shard.metrics.denied();
        return DescribeClientQuotasResponse {
            error_code: ErrorCode::ClusterAuthorizationFailed,
            error_message: Some(format!(
                "{} may not describe quotas (DescribeConfigs on the cluster)",
                access.principal()
            )),
            ..Default::default()
        };
    }
    for c in &req.components {
        let bad_type = c.entity_type != "user" && c.entity_type != "client-id";
        if bad_type || c.match_type > 2 || (c.match_type == 0 && c.name.is_none()) {
            return DescribeClientQuotasResponse {
                error_code: ErrorCode::InvalidRequest,
                error_message: Some(format!(
                    "filter component '{}' (match type {}) is not valid",
                    c.entity_type, c.match_type
                )),
                ..Default::default()
            };
        }
    }
    let part = |e: &QuotaEntity, kind: &str| -> Option<EntityName> {
        match kind {
            "user" => e.user.clone(),
            _ => e.client_id.clone(),
        }
    };
    let matches = |e: &QuotaEntity| {
        let each = req
            .components
            .iter()
            .all(|c| match (c.match_type, part(e, &c.entity_type)) {
                (0, Some(EntityName::Name(n))) => c.name.as_deref() == Some(n.as_str()),
                (1, Some(EntityName::Default)) => true,
                (2, Some(_)) => true,
                _ => false,
            });
        let named = |kind: &str| req.components.iter().any(|c| c.entity_type == kind);
        let strict_ok = !req.strict
            || ((e.user.is_none() || named("user"))
                && (e.client_id.is_none() || named("client-id")));
        each && strict_ok
    };
    let snapshot = shard.snapshot();
    let entries = snapshot
        .security
        .quotas
        .iter()
        .filter(|q| matches(&q.entity))
        .map(|q| QuotaDescribeEntry {
            entity: entity_parts(&q.entity),
            values: q
                .values
                .iter()
                .map(|(k, v)| QuotaValue {
                    key: k.clone(),
                    value: *v,
                })
                .collect(),
        })
        .collect();
    DescribeClientQuotasResponse {
        entries,
        ..Default::default()
    }
}
