//! Access control lists (`proto/schema/acl.fbs`): CreateAcls, DescribeAcls, DeleteAcls, with
//! Kafka's authorizer semantics (allowed if an Allow binding matches and no Deny binding does).

use super::codec::{tables, wire_enum};
use crate::ErrorCode;

wire_enum! {
    /// The kind of resource an ACL protects.
    pub enum AclResourceType(AclResourceType) default Topic {
        Unknown,
        /// Filters only.
        Any,
        Topic,
        Group,
        Cluster,
        TransactionalId,
    }
}

wire_enum! {
    /// How a binding's resource name matches.
    pub enum AclPatternType(AclPatternType) default Literal {
        Unknown,
        /// Filters only.
        Any,
        /// Filters only: every binding that applies to the literal name given.
        Match,
        /// The name exactly; "*" is every resource.
        Literal,
        /// Every resource whose name starts with the name.
        Prefixed,
    }
}

wire_enum! {
    /// An operation on a resource.
    pub enum AclOperation(AclOperation) default Read {
        Unknown,
        /// Filters only.
        Any,
        All,
        Read,
        Write,
        Create,
        Delete,
        Alter,
        Describe,
        ClusterAction,
        DescribeConfigs,
        AlterConfigs,
        IdempotentWrite,
    }
}

wire_enum! {
    /// Allow or deny.
    pub enum AclPermission(AclPermission) default Allow {
        Unknown,
        /// Filters only.
        Any,
        Deny,
        Allow,
    }
}

tables! {
    /// One ACL.
    pub struct AclBinding(AclBinding, AclBindingArgs) {
        resource_type: AclResourceType = scalar,
        resource_name: String = string,
        pattern_type: AclPatternType = scalar,
        /// E.g. "User:alice"; "User:*" is every user.
        principal: String = string,
        /// "*" is any host.
        host: String = string,
        operation: AclOperation = scalar,
        permission: AclPermission = scalar,
    }

    /// A filter over bindings; `None` strings match anything.
    pub struct AclFilter(AclFilter, AclFilterArgs) {
        resource_type: AclResourceType = scalar,
        resource_name: Option<String> = opt_string,
        pattern_type: AclPatternType = scalar,
        principal: Option<String> = opt_string,
        host: Option<String> = opt_string,
        operation: AclOperation = scalar,
        permission: AclPermission = scalar,
    }

    /// CreateAcls request.
    pub struct CreateAclsRequest(CreateAclsRequest, CreateAclsRequestArgs) {
        creations: Vec<AclBinding> = tables,
    }

    pub struct AclCreationResult(AclCreationResult, AclCreationResultArgs) {
        error_code: ErrorCode = scalar,
        error_message: Option<String> = opt_string,
    }

    /// CreateAcls response.
    pub struct CreateAclsResponse(CreateAclsResponse, CreateAclsResponseArgs) {
        throttle_time_ms: u32 = scalar,
        results: Vec<AclCreationResult> = tables,
    }

    /// DescribeAcls request.
    pub struct DescribeAclsRequest(DescribeAclsRequest, DescribeAclsRequestArgs) {
        filter: AclFilter = table,
    }

    /// DescribeAcls response.
    pub struct DescribeAclsResponse(DescribeAclsResponse, DescribeAclsResponseArgs) {
        throttle_time_ms: u32 = scalar,
        error_code: ErrorCode = scalar,
        error_message: Option<String> = opt_string,
        bindings: Vec<AclBinding> = tables,
    }

    /// DeleteAcls request.
    pub struct DeleteAclsRequest(DeleteAclsRequest, DeleteAclsRequestArgs) {
        filters: Vec<AclFilter> = tables,
    }

    pub struct DeleteAclsFilterResult(DeleteAclsFilterResult, DeleteAclsFilterResultArgs) {
        error_code: ErrorCode = scalar,
        error_message: Option<String> = opt_string,
        matching_acls: Vec<AclBinding> = tables,
    }

    /// DeleteAcls response.
    pub struct DeleteAclsResponse(DeleteAclsResponse, DeleteAclsResponseArgs) {
        throttle_time_ms: u32 = scalar,
        filter_results: Vec<DeleteAclsFilterResult> = tables,
    }
}
