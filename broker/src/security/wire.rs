//! ACLs between the wire's types (`proto::api::acl`) and the metadata's (`acl`), and Kafka's
//! binding filters (DescribeAcls, DeleteAcls).

use quiver_proto::api::acl::{
    AclBinding, AclFilter, AclOperation, AclPatternType, AclPermission, AclResourceType,
};

use super::acl::{Acl, Operation, PatternType, Permission, ResourceType};

fn resource_type(t: AclResourceType) -> Option<ResourceType> {
    Some(match t {
        AclResourceType::Topic => ResourceType::Topic,
        AclResourceType::Group => ResourceType::Group,
        AclResourceType::Cluster => ResourceType::Cluster,
        AclResourceType::TransactionalId => ResourceType::TransactionalId,
        _ => return None,
    })
}

fn operation(o: AclOperation) -> Option<Operation> {
    use Operation::*;
    Some(match o {
        AclOperation::All => All,
        AclOperation::Read => Read,
        AclOperation::Write => Write,
        AclOperation::Create => Create,
        AclOperation::Delete => Delete,
        AclOperation::Alter => Alter,
        AclOperation::Describe => Describe,
        AclOperation::ClusterAction => ClusterAction,
        AclOperation::DescribeConfigs => DescribeConfigs,
        AclOperation::AlterConfigs => AlterConfigs,
        AclOperation::IdempotentWrite => IdempotentWrite,
        _ => return None,
    })
}

/// A binding as the metadata keeps it, checked (`Acl::check`).
pub fn from_binding(b: &AclBinding) -> Result<Acl, String> {
    let acl = Acl {
        resource_type: resource_type(b.resource_type)
            .ok_or_else(|| format!("resource type {:?} cannot be bound", b.resource_type))?,
        name: b.resource_name.clone(),
        pattern: match b.pattern_type {
            AclPatternType::Literal => PatternType::Literal,
            AclPatternType::Prefixed => PatternType::Prefixed,
            other => return Err(format!("pattern type {other:?} cannot be bound")),
        },
        principal: b.principal.clone(),
        host: b.host.clone(),
        operation: operation(b.operation)
            .ok_or_else(|| format!("operation {:?} cannot be bound", b.operation))?,
        permission: match b.permission {
            AclPermission::Allow => Permission::Allow,
            AclPermission::Deny => Permission::Deny,
            other => return Err(format!("permission {other:?} cannot be bound")),
        },
    };
    acl.check()?;
    Ok(acl)
}

pub fn to_binding(a: &Acl) -> AclBinding {
    use Operation::*;
    AclBinding {
        resource_type: match a.resource_type {
            ResourceType::Topic => AclResourceType::Topic,
            ResourceType::Group => AclResourceType::Group,
            ResourceType::Cluster => AclResourceType::Cluster,
            ResourceType::TransactionalId => AclResourceType::TransactionalId,
        },
        resource_name: a.name.clone(),
        pattern_type: match a.pattern {
            PatternType::Literal => AclPatternType::Literal,
            PatternType::Prefixed => AclPatternType::Prefixed,
        },
        principal: a.principal.clone(),
        host: a.host.clone(),
        operation: match a.operation {
            All => AclOperation::All,
            Read => AclOperation::Read,
            Write => AclOperation::Write,
            Create => AclOperation::Create,
            Delete => AclOperation::Delete,
            Alter => AclOperation::Alter,
            Describe => AclOperation::Describe,
            ClusterAction => AclOperation::ClusterAction,
            DescribeConfigs => AclOperation::DescribeConfigs,
            AlterConfigs => AclOperation::AlterConfigs,
            IdempotentWrite => AclOperation::IdempotentWrite,
        },
        permission: match a.permission {
            Permission::Allow => AclPermission::Allow,
            Permission::Deny => AclPermission::Deny,
        },
    }
}

/// Whether `f` is a filter the broker can apply: no `Unknown` value.
pub fn check_filter(f: &AclFilter) -> Result<(), String> {
    if f.resource_type == AclResourceType::Unknown
        || f.pattern_type == AclPatternType::Unknown
        || f.operation == AclOperation::Unknown
        || f.permission == AclPermission::Unknown
    {
        return Err("a filter field is Unknown (use Any to match everything)".into());
    }
    Ok(())
}

/// Kafka's `AclBindingFilter::matches`: every field given must match; `Match` takes the
/// bindings that apply to the literal name (the same literal name, `*`, or a prefix of it).
pub fn filter_matches(f: &AclFilter, a: &Acl) -> bool {
    let b = to_binding(a);
    let kind = f.resource_type == AclResourceType::Any || f.resource_type == b.resource_type;
    let name = match (&f.resource_name, f.pattern_type) {
        (None, AclPatternType::Any | AclPatternType::Match) => true,
        (None, p) => p == b.pattern_type,
        (Some(n), AclPatternType::Any) => *n == a.name,
        (Some(n), AclPatternType::Match) => match a.pattern {
            PatternType::Literal => a.name == *n || a.name == super::acl::WILDCARD,
            PatternType::Prefixed => n.starts_with(a.name.as_str()),
        },
        (Some(n), p) => p == b.pattern_type && *n == a.name,
    };
    let principal = f.principal.as_ref().is_none_or(|p| *p == a.principal);
    let host = f.host.as_ref().is_none_or(|h| *h == a.host);
    let op = f.operation == AclOperation::Any || f.operation == b.operation;
    let perm = f.permission == AclPermission::Any || f.permission == b.permission;
    kind && name && principal && host && op && perm
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(name: &str, pattern: PatternType, principal: &str, op: Operation) -> Acl {
        Acl {
            resource_type: ResourceType::Topic,
            name: name.into(),
            pattern,
            principal: principal.into(),
            host: "*".into(),
            operation: op,
            permission: Permission::Allow,
        }
    }

    fn any() -> AclFilter {
        AclFilter {
            resource_type: AclResourceType::Any,
            resource_name: None,
            pattern_type: AclPatternType::Any,
            principal: None,
            host: None,
            operation: AclOperation::Any,
            permission: AclPermission::Any,
        }
    }

    #[test]
    fn filters_match_as_kafkas_do() {
        let lit = acl("orders", PatternType::Literal, "User:a", Operation::Read);
        let star = acl("*", PatternType::Literal, "User:b", Operation::Write);
        let pre = acl("ord", PatternType::Prefixed, "User:a", Operation::Read);
        let named = |n: &str, p| AclFilter {
            resource_name: Some(n.into()),
            pattern_type: p,
            ..any()
        };
        // (filter, [lit, star, pre] matched?)
        let cases = [
            (any(), [true, true, true]),
            (
                named("orders", AclPatternType::Literal),
                [true, false, false],
            ),
            (named("orders", AclPatternType::Any), [true, false, false]),
            (named("orders", AclPatternType::Match), [true, true, true]),
            (named("ord", AclPatternType::Prefixed), [false, false, true]),
            (
                AclFilter {
                    principal: Some("User:a".into()),
                    ..any()
                },
                [true, false, true],
            ),
            (
                AclFilter {
                    operation: AclOperation::Write,
                    ..any()
                },
                [false, true, false],
            ),
            (
                AclFilter {
                    resource_type: AclResourceType::Group,
                    ..any()
                },
                [false, false, false],
            ),
        ];
        for (f, want) in cases {
            let got = [&lit, &star, &pre].map(|a| filter_matches(&f, a));
            assert_eq!(got, want, "{f:?}");
        }
    }

    #[test]
    fn bindings_round_trip_and_bad_ones_are_refused() {
        let a = acl("t", PatternType::Prefixed, "User:x", Operation::Describe);
        assert_eq!(from_binding(&to_binding(&a)).unwrap(), a);
        let mut b = to_binding(&a);
        b.pattern_type = AclPatternType::Match;
        assert!(from_binding(&b).is_err());
        let mut b = to_binding(&a);
        b.operation = AclOperation::Any;
        assert!(from_binding(&b).is_err());
        let mut b = to_binding(&a);
        b.principal = "nobody".into();
        assert!(from_binding(&b).is_err());
    }
}
