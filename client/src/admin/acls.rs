//! Access control lists, as Kafka's (`CreateAcls`, `DescribeAcls`, `DeleteAcls`): a request
//! is allowed when an Allow binding matches it and no Deny binding does. The bindings and
//! filters are the protocol's own types ([`AclBinding`], [`AclFilter`]), re-exported by the
//! crate.

use quiver_proto::api::acl::{
    AclBinding, AclFilter, CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest,
};
use quiver_proto::ErrorCode;

use super::Admin;
use crate::error::{Error, Result};

impl Admin {
    /// Adds these bindings (one that exists already is no change), all or, where the broker
    /// refuses one, the first refusal as an error naming that binding.
    ///
    /// ```no_run
    /// # async fn f(admin: quiver_client::Admin) -> quiver_client::Result<()> {
    /// use quiver_client::{AclBinding, AclOperation, AclPatternType, AclPermission, AclResourceType};
    /// admin.create_acls(vec![AclBinding {
    ///     resource_type: AclResourceType::Topic,
    ///     resource_name: "orders".into(),
    ///     pattern_type: AclPatternType::Literal,
    ///     principal: "User:alice".into(),
    ///     host: "*".into(),
    ///     operation: AclOperation::Read,
    ///     permission: AclPermission::Allow,
    /// }]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn create_acls(&self, bindings: Vec<AclBinding>) -> Result<()> {
        if bindings.is_empty() {
            return Ok(());
        }
        let req = CreateAclsRequest {
            creations: bindings,
        };
        let resp = self.client.call_controller(&req).await?;
        if resp.results.len() != req.creations.len() {
            return Err(Error::Protocol(format!(
                "CreateAcls answered {} results for {} bindings",
                resp.results.len(),
                req.creations.len()
            )));
        }
        for (binding, r) in req.creations.iter().zip(resp.results) {
            if r.error_code != ErrorCode::None {
                let said = r
                    .error_message
                    .unwrap_or_else(|| r.error_code.description().to_string());
                return Err(Error::broker(
                    r.error_code,
                    Some(format!("{}: {said}", describe(binding))),
                ));
            }
        }
        Ok(())
    }

    /// The bindings that match `filter` (every binding: [`AclFilter`] with `Any` types and
    /// `None` strings).
    pub async fn describe_acls(&self, filter: AclFilter) -> Result<Vec<AclBinding>> {
        let req = DescribeAclsRequest { filter };
        let resp = self.client.call_controller(&req).await?;
        if resp.error_code != ErrorCode::None {
            return Err(Error::broker(resp.error_code, resp.error_message));
        }
        Ok(resp.bindings)
    }

    /// Deletes every binding that matches any of `filters`; returns those deleted (a binding
    /// that several filters match, once per filter).
    pub async fn delete_acls(&self, filters: Vec<AclFilter>) -> Result<Vec<AclBinding>> {
        if filters.is_empty() {
            return Ok(Vec::new());
        }
        let asked = filters.len();
        let req = DeleteAclsRequest { filters };
        let resp = self.client.call_controller(&req).await?;
        if resp.filter_results.len() != asked {
            return Err(Error::Protocol(format!(
                "DeleteAcls answered {} results for {asked} filters",
                resp.filter_results.len()
            )));
        }
        let mut deleted = Vec::new();
        for r in resp.filter_results {
            if r.error_code != ErrorCode::None {
                return Err(Error::broker(r.error_code, r.error_message));
            }
            deleted.extend(r.matching_acls);
        }
        Ok(deleted)
    }
}

/// A binding in a line, for errors: `Allow User:alice from * to Read Topic orders (Literal)`.
fn describe(b: &AclBinding) -> String {
    format!(
        "{:?} {} from {} to {:?} {:?} '{}' ({:?})",
        b.permission,
        b.principal,
        b.host,
        b.operation,
        b.resource_type,
        b.resource_name,
        b.pattern_type
    )
}

#[cfg(test)]
mod tests {
    use quiver_proto::api::acl::{AclOperation, AclPatternType, AclPermission, AclResourceType};

    use super::*;

    #[test]
    fn a_binding_reads_as_a_sentence() {
        let b = AclBinding {
            resource_type: AclResourceType::Topic,
            resource_name: "orders".into(),
            pattern_type: AclPatternType::Prefixed,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: AclOperation::Read,
            permission: AclPermission::Deny,
        };
        assert_eq!(
            describe(&b),
            "Deny User:alice from * to Read Topic 'orders' (Prefixed)"
        );
    }
}
