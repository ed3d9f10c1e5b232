//! DescribeAcls and DescribeUserScramCredentials, answered by any broker from its metadata
//! snapshot (changes go to the controller, `authz::admin`).

use quiver_proto::api::acl::{DescribeAclsRequest, DescribeAclsResponse};
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
