//! Client quotas (Kafka's KIP-546): byte rates for a user, a client id, or both, with defaults.
//! A broker holds back a client past its quota and says so in `throttle_time_ms`; the producer
//! and consumer wait that long before their next request to it.

use quiver_proto::api::quota::{
    AlterClientQuotasRequest, DescribeClientQuotasRequest, QuotaAlterEntry, QuotaEntityPart,
    QuotaOp,
};
use quiver_proto::ErrorCode;
use serde::Serialize;

use super::Admin;
use crate::error::{Error, Result};

/// The producer's bytes per second (record batches produced).
pub const PRODUCER_BYTE_RATE: &str = "producer_byte_rate";
/// The consumer's bytes per second (record batches fetched).
pub const CONSUMER_BYTE_RATE: &str = "consumer_byte_rate";
/// Percent of one core's time the requests may take on a broker (100: one second per second).
pub const REQUEST_PERCENTAGE: &str = "request_percentage";

/// One part of a quota's entity: a name, or the default for all names without a quota of
/// their own.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum QuotaName {
    /// Every user (or client id) without a quota of its own; each has its own budget.
    Default,
    /// This one.
    Name(String),
}

/// Whom a quota is for: a user (the principal's name without `User:`), a client id
/// (`ClientConfig::client_id`), or both.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct QuotaEntity {
    /// The user, `None`: not part of the entity.
    pub user: Option<QuotaName>,
    /// The client id, `None`: not part of the entity.
    pub client_id: Option<QuotaName>,
}

impl QuotaEntity {
    /// The quota of one user.
    pub fn user(name: impl Into<String>) -> QuotaEntity {
        QuotaEntity {
            user: Some(QuotaName::Name(name.into())),
            client_id: None,
        }
    }

    fn parts(&self) -> Vec<QuotaEntityPart> {
        let part = |kind: &str, n: &QuotaName| QuotaEntityPart {
            entity_type: kind.to_string(),
            entity_name: match n {
                QuotaName::Default => None,
                QuotaName::Name(s) => Some(s.clone()),
            },
        };
        self.user
            .iter()
            .map(|n| part("user", n))
            .chain(self.client_id.iter().map(|n| part("client-id", n)))
            .collect()
    }

    fn from_parts(parts: &[QuotaEntityPart]) -> QuotaEntity {
        let mut e = QuotaEntity::default();
        for p in parts {
            let name = match &p.entity_name {
                Some(n) => QuotaName::Name(n.clone()),
                None => QuotaName::Default,
            };
            match p.entity_type.as_str() {
                "user" => e.user = Some(name),
                "client-id" => e.client_id = Some(name),
                _ => {}
            }
        }
        e
    }
}

/// One entity's quotas ([`Admin::describe_quotas`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QuotaDescription {
    /// Whom the quotas are for.
    pub entity: QuotaEntity,
    /// (key, value), e.g. (`producer_byte_rate`, 1048576).
    pub values: Vec<(String, u64)>,
}

impl Admin {
    /// Sets (`Some`) or removes (`None`) quotas of `entity`, by key ([`PRODUCER_BYTE_RATE`],
    /// [`CONSUMER_BYTE_RATE`]).
    ///
    /// ```no_run
    /// # async fn f(admin: quiver_client::Admin) -> quiver_client::Result<()> {
    /// use quiver_client::{QuotaEntity, PRODUCER_BYTE_RATE};
    /// admin.alter_quotas(&QuotaEntity::user("alice"), &[(PRODUCER_BYTE_RATE, Some(1 << 20))]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn alter_quotas(
        &self,
        entity: &QuotaEntity,
        changes: &[(&str, Option<u64>)],
    ) -> Result<()> {
        if entity.user.is_none() && entity.client_id.is_none() {
            return Err(Error::Config(
                "a quota names a user, a client id, or both".into(),
            ));
        }
        let req = AlterClientQuotasRequest {
            entries: vec![QuotaAlterEntry {
                entity: entity.parts(),
                ops: changes
                    .iter()
                    .map(|(key, value)| QuotaOp {
                        key: key.to_string(),
                        value: value.unwrap_or(0),
                        remove: value.is_none(),
                    })
                    .collect(),
            }],
            validate_only: false,
        };
        let resp = self.client.call_controller(&req).await?;
        let r = resp
            .entries
            .into_iter()
            .next()
            .ok_or_else(|| Error::Protocol("no AlterClientQuotas result".into()))?;
        if r.error_code != ErrorCode::None {
            return Err(Error::broker(r.error_code, r.error_message));
        }
        Ok(())
    }

    /// Every entity's quotas.
    pub async fn describe_quotas(&self) -> Result<Vec<QuotaDescription>> {
        let req = DescribeClientQuotasRequest {
            components: Vec::new(),
            strict: false,
        };
        let resp = self.client.call_controller(&req).await?;
        if resp.error_code != ErrorCode::None {
            return Err(Error::broker(resp.error_code, resp.error_message));
        }
        let mut out: Vec<QuotaDescription> = resp
            .entries
            .into_iter()
            .map(|e| QuotaDescription {
                entity: QuotaEntity::from_parts(&e.entity),
                values: e.values.into_iter().map(|v| (v.key, v.value)).collect(),
            })
            .collect();
        out.sort_by(|a, b| a.entity.cmp(&b.entity));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entity_goes_to_parts_and_back() {
        for e in [
            QuotaEntity::user("alice"),
            QuotaEntity {
                user: Some(QuotaName::Default),
                client_id: Some(QuotaName::Name("app".into())),
            },
            QuotaEntity {
                user: None,
                client_id: Some(QuotaName::Default),
            },
        ] {
            assert_eq!(QuotaEntity::from_parts(&e.parts()), e);
        }
    }
}
