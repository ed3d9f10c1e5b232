//! The controller's security changes: ACLs (CreateAcls, DeleteAcls) and SCRAM credentials
//! (AlterUserScramCredentials), each made durable as metadata commands. The caller has already
//! authorized the request (Alter on the cluster).

use quiver_proto::api::acl::{
    AclCreationResult, CreateAclsRequest, CreateAclsResponse, DeleteAclsFilterResult,
    DeleteAclsRequest, DeleteAclsResponse,
};
use quiver_proto::api::user::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    AlterUserScramCredentialsResult,
};
use quiver_proto::scram::{Credential, Mechanism};
use quiver_proto::ErrorCode;

use super::{Controller, ItemResult};
use crate::cluster::meta::MetadataCommand;
use crate::security::acl::Acl;
use crate::security::quota;
use crate::security::users::{check_user_name, StoredCredential};
use crate::security::wire;
use quiver_proto::api::quota::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, QuotaAlterEntry, QuotaAlterResult,
};

impl Controller {
    /// Each valid binding is added (all of them in one metadata command); an invalid one is
    /// answered with why and adds nothing.
    pub(super) async fn create_acls(&self, r: CreateAclsRequest) -> CreateAclsResponse {
        let checked: Vec<Result<Acl, String>> =
            r.creations.iter().map(wire::from_binding).collect();
        let valid: Vec<Acl> = checked
            .iter()
            .filter_map(|c| c.as_ref().ok().cloned())
            .collect();
        let submitted = if valid.is_empty() {
            Ok(())
        } else {
            self.submit(MetadataCommand::CreateAcls { acls: valid })
                .await
                .map(|_| ())
        };
        let results = checked
            .into_iter()
            .map(|c| {
                let (error_code, error_message) = match (c, &submitted) {
                    (Err(why), _) => (ErrorCode::InvalidRequest, Some(why)),
                    (Ok(_), Err((code, why))) => (*code, Some(why.clone())),
                    (Ok(_), Ok(())) => (ErrorCode::None, None),
                };
                AclCreationResult {
                    error_code,
                    error_message,
                }
            })
            .collect();
        CreateAclsResponse {
            throttle_time_ms: 0,
            results,
        }
    }

    /// Every binding a filter matches is removed (all filters' in one command); each filter's
    /// result lists what it matched.
    pub(super) async fn delete_acls(&self, r: DeleteAclsRequest) -> DeleteAclsResponse {
        let matched: Vec<Result<Vec<Acl>, String>> = {
            let state = self.log.state();
            r.filters
                .iter()
                .map(|f| {
                    wire::check_filter(f)?;
                    Ok(state
                        .acls
                        .iter()
                        .filter(|a| wire::filter_matches(f, a))
                        .cloned()
                        .collect())
                })
                .collect()
        };
        let mut all: Vec<Acl> = matched.iter().flatten().flatten().cloned().collect();
        all.sort();
        all.dedup();
        let submitted = if all.is_empty() {
            Ok(())
        } else {
            self.submit(MetadataCommand::DeleteAcls { acls: all })
                .await
                .map(|_| ())
        };
        let filter_results = matched
            .into_iter()
            .map(|m| match (m, &submitted) {
                (Err(why), _) => DeleteAclsFilterResult {
                    error_code: ErrorCode::InvalidRequest,
                    error_message: Some(why),
                    matching_acls: Vec::new(),
                },
                (Ok(_), Err((code, why))) => DeleteAclsFilterResult {
                    error_code: *code,
                    error_message: Some(why.clone()),
                    matching_acls: Vec::new(),
                },
                (Ok(acls), Ok(())) => DeleteAclsFilterResult {
                    error_code: ErrorCode::None,
                    error_message: None,
                    matching_acls: acls.iter().map(wire::to_binding).collect(),
                },
            })
            .collect();
        DeleteAclsResponse {
            throttle_time_ms: 0,
            filter_results,
        }
    }

    /// Deletions, then upsertions, each its own metadata command; one result per user named,
    /// carrying its first failure.
    pub(super) async fn alter_scram(
        &self,
        r: AlterUserScramCredentialsRequest,
    ) -> AlterUserScramCredentialsResponse {
        let mut results: Vec<AlterUserScramCredentialsResult> = Vec::new();
        let mut record = |user: &str, outcome: ItemResult<()>| {
            let i = match results.iter().position(|x| x.user == user) {
                Some(i) => i,
                None => {
                    results.push(AlterUserScramCredentialsResult {
                        user: user.to_string(),
                        ..Default::default()
                    });
                    results.len() - 1
                }
            };
            if let (Err((code, why)), ErrorCode::None) = (outcome, results[i].error_code) {
                results[i].error_code = code;
                results[i].error_message = Some(why);
            }
        };
        for d in &r.deletions {
            let outcome = match mechanism(&d.mechanism) {
                Err(e) => Err(e),
                Ok(m) => {
                    let has = self
                        .log
                        .state()
                        .scram
                        .get(&d.name)
                        .is_some_and(|c| c.contains_key(m.name()));
                    if has {
                        self.submit(MetadataCommand::DeleteScram {
                            user: d.name.clone(),
                            mechanism: m.name().to_string(),
                        })
                        .await
                        .map(|_| ())
                    } else {
                        Err((
                            ErrorCode::ResourceNotFound,
                            format!("user '{}' has no {} credential", d.name, m.name()),
                        ))
                    }
                }
            };
            record(&d.name, outcome);
        }
        for u in &r.upsertions {
            let outcome = match check(u) {
                Err(e) => Err(e),
                Ok(credential) => {
                    // The cluster's decoy secret comes with its first user.
                    let decoy_key = self
                        .log
                        .state()
                        .scram_decoy_key
                        .is_none()
                        .then(crate::security::users::new_decoy_key);
                    self.submit(MetadataCommand::UpsertScram {
                        user: u.name.clone(),
                        mechanism: credential.mechanism.name().to_string(),
                        credential: StoredCredential::from_credential(&credential),
                        decoy_key,
                    })
                    .await
                    .map(|_| ())
                }
            };
            record(&u.name, outcome);
        }
        AlterUserScramCredentialsResponse {
            throttle_time_ms: 0,
            results,
        }
    }
}

impl Controller {
    /// Each entry's changes are checked and made as one metadata command.
    pub(super) async fn alter_quotas(
        &self,
        r: AlterClientQuotasRequest,
    ) -> AlterClientQuotasResponse {
        let mut entries = Vec::with_capacity(r.entries.len());
        for e in &r.entries {
            let outcome = match quota_change(e) {
                Err(why) => Err((ErrorCode::InvalidRequest, why)),
                Ok(_) if r.validate_only => Ok(()),
                Ok(cmd) => self.submit(cmd).await.map(|_| ()),
            };
            let (error_code, error_message) = match outcome {
                Ok(()) => (ErrorCode::None, None),
                Err((c, m)) => (c, Some(m)),
            };
            entries.push(QuotaAlterResult {
                error_code,
                error_message,
                entity: e.entity.clone(),
            });
        }
        AlterClientQuotasResponse {
            throttle_time_ms: 0,
            entries,
        }
    }
}

fn quota_change(e: &QuotaAlterEntry) -> Result<MetadataCommand, String> {
    let entity = quota::entity_from_parts(&e.entity)?;
    let mut set = std::collections::BTreeMap::new();
    let mut remove = Vec::new();
    for op in &e.ops {
        if op.remove {
            remove.push(op.key.clone());
        } else {
            set.insert(op.key.clone(), op.value);
        }
    }
    quota::check_change(&entity, &set, &remove)?;
    Ok(MetadataCommand::AlterQuotas {
        entity,
        set,
        remove,
    })
}

fn mechanism(name: &str) -> ItemResult<Mechanism> {
    Mechanism::from_name(name).ok_or_else(|| {
        (
            ErrorCode::UnsupportedSaslMechanism,
            format!("'{name}' is not SCRAM-SHA-256 or SCRAM-SHA-512"),
        )
    })
}

fn check(u: &quiver_proto::api::user::ScramCredentialUpsertion) -> ItemResult<Credential> {
    check_user_name(&u.name).map_err(|why| (ErrorCode::InvalidRequest, why))?;
    let m = mechanism(&u.mechanism)?;
    Credential::from_salted_password(m, &u.salt, u.iterations, &u.salted_password)
        .map_err(|e| (ErrorCode::UnacceptableCredential, e.to_string()))
}
