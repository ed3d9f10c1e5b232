//! Access control lists in Kafka's shape, and the decision they make (Kafka's `AclAuthorizer`):
//! a request is allowed when an Allow binding matches it and no Deny binding does; with no
//! matching Allow it is denied. Pure: no I/O, table-tested below.
//!
//! A binding matches a request when
//! - its resource type is the request's, and its name is the resource's name (`Literal`), or
//!   `*` (`Literal`, every resource of the type), or a prefix of it (`Prefixed`);
//! - its principal is the request's, or `User:*`;
//! - its host is the client's address, or `*`;
//! - its operation is the one asked, or `All`; and for an Allow binding also an operation that
//!   implies the one asked: `Read`, `Write`, `Delete` and `Alter` imply `Describe`, and
//!   `AlterConfigs` implies `DescribeConfigs` (as in Kafka; a Deny binding denies only what it
//!   names, and `All`).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// The kind of resource a binding protects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ResourceType {
    Topic,
    Group,
    Cluster,
    TransactionalId,
}

/// How a binding's name matches a resource's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PatternType {
    Literal,
    Prefixed,
}

/// What a request does to a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Operation {
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Permission {
    Allow,
    Deny,
}

/// The name of the one cluster resource (Kafka's "kafka-cluster").
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// A literal name or principal that matches every resource or user.
pub const WILDCARD: &str = "*";
/// The principal that matches every user.
pub const ANY_USER: &str = "User:*";

/// One binding.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Acl {
    pub resource_type: ResourceType,
    pub name: String,
    pub pattern: PatternType,
    /// `User:<name>`, or `User:*`.
    pub principal: String,
    /// A client IP address, or `*`.
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

impl Acl {
    /// Whether the binding is well formed: a principal `Type:name`, a name, and for the
    /// cluster a literal `kafka-cluster`.
    pub fn check(&self) -> Result<(), String> {
        match self.principal.split_once(':') {
            Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {}
            _ => {
                return Err(format!(
                    "principal '{}' is not of the form User:<name>",
                    self.principal
                ))
            }
        }
        if self.name.is_empty() {
            return Err("the resource name is empty".into());
        }
        if self.host.is_empty() {
            return Err("the host is empty (\"*\" is any host)".into());
        }
        if self.resource_type == ResourceType::Cluster
            && (self.name != CLUSTER_NAME || self.pattern != PatternType::Literal)
        {
            return Err(format!(
                "a cluster binding names the literal resource '{CLUSTER_NAME}'"
            ));
        }
        let fits = match self.resource_type {
            ResourceType::Topic => !matches!(
                self.operation,
                Operation::ClusterAction | Operation::IdempotentWrite
            ),
            ResourceType::Group => matches!(
                self.operation,
                Operation::All | Operation::Read | Operation::Describe | Operation::Delete
            ),
            ResourceType::Cluster => !matches!(self.operation, Operation::Read | Operation::Write),
            ResourceType::TransactionalId => {
                matches!(
                    self.operation,
                    Operation::All | Operation::Write | Operation::Describe
                )
            }
        };
        if !fits {
            return Err(format!(
                "{:?} does not apply to a {:?} resource",
                self.operation, self.resource_type
            ));
        }
        Ok(())
    }

    fn matches_resource(&self, name: &str) -> bool {
        match self.pattern {
            PatternType::Literal => self.name == name || self.name == WILDCARD,
            PatternType::Prefixed => name.starts_with(self.name.as_str()),
        }
    }

    fn matches_who(&self, principal: &str, host: &str) -> bool {
        (self.principal == principal || self.principal == ANY_USER)
            && (self.host == host || self.host == WILDCARD)
    }
}

/// The operations whose Allow binding also allows `op` (itself and `All` included).
fn allowed_by(op: Operation) -> &'static [Operation] {
    use Operation::*;
    match op {
        Describe => &[Describe, All, Read, Write, Delete, Alter],
        DescribeConfigs => &[DescribeConfigs, All, AlterConfigs],
        Read => &[Read, All],
        Write => &[Write, All],
        Create => &[Create, All],
        Delete => &[Delete, All],
        Alter => &[Alter, All],
        ClusterAction => &[ClusterAction, All],
        AlterConfigs => &[AlterConfigs, All],
        IdempotentWrite => &[IdempotentWrite, All],
        All => &[All],
    }
}

/// Every binding, indexed for the decision: literal ones by (type, name), prefixed ones by
/// type. A decision reads the literal bindings of the name and of `*`, and the prefixed ones
/// of the type.
#[derive(Clone, Debug, Default)]
pub struct AclIndex {
    literal: HashMap<(ResourceType, String), Vec<Acl>>,
    prefixed: HashMap<ResourceType, Vec<Acl>>,
    count: usize,
}

impl AclIndex {
    pub fn new<'a>(acls: impl IntoIterator<Item = &'a Acl>) -> AclIndex {
        let mut index = AclIndex::default();
        for a in acls {
            index.count += 1;
            match a.pattern {
                PatternType::Literal => index
                    .literal
                    .entry((a.resource_type, a.name.clone()))
                    .or_default()
                    .push(a.clone()),
                PatternType::Prefixed => index
                    .prefixed
                    .entry(a.resource_type)
                    .or_default()
                    .push(a.clone()),
            }
        }
        index
    }

    pub fn len(&self) -> usize {
        self.count
    }

    /// Every binding.
    pub fn iter(&self) -> impl Iterator<Item = &Acl> {
        self.literal
            .values()
            .flatten()
            .chain(self.prefixed.values().flatten())
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The bindings that apply to resource `name` of type `kind`.
    fn applying<'a>(&'a self, kind: ResourceType, name: &'a str) -> impl Iterator<Item = &'a Acl> {
        let literal = |n: &str| {
            self.literal
                .get(&(kind, n.to_string()))
                .into_iter()
                .flatten()
        };
        literal(name)
            .chain(
                if name == WILDCARD {
                    None
                } else {
                    Some(literal(WILDCARD))
                }
                .into_iter()
                .flatten(),
            )
            .chain(self.prefixed.get(&kind).into_iter().flatten())
            .filter(move |a| a.matches_resource(name))
    }

    /// Whether `principal` at `host` may do `op` on resource `name` of type `kind`.
    pub fn allows(
        &self,
        principal: &str,
        host: &str,
        op: Operation,
        kind: ResourceType,
        name: &str,
    ) -> bool {
        let mut allowed = false;
        for a in self.applying(kind, name) {
            if !a.matches_who(principal, host) {
                continue;
            }
            match a.permission {
                Permission::Deny if a.operation == op || a.operation == Operation::All => {
                    return false
                }
                Permission::Deny => {}
                Permission::Allow => allowed |= allowed_by(op).contains(&a.operation),
            }
        }
        allowed
    }

    /// Whether `principal` at `host` may do `op` on some resource of type `kind` (Kafka's
    /// `authorizeByResourceType`: an Allow of any name or prefix not cancelled by a Deny of the
    /// same literal name, of `*`, or of a prefix of it).
    pub fn allows_any(
        &self,
        principal: &str,
        host: &str,
        op: Operation,
        kind: ResourceType,
    ) -> bool {
        let who = |a: &&Acl| a.resource_type == kind && a.matches_who(principal, host);
        let all = || {
            self.literal
                .values()
                .flatten()
                .chain(self.prefixed.values().flatten())
                .filter(who)
        };
        let denies = |allow: &Acl| {
            all().any(|d| {
                d.permission == Permission::Deny
                    && (d.operation == op || d.operation == Operation::All)
                    && match d.pattern {
                        PatternType::Literal => {
                            d.name == WILDCARD
                                || (d.name == allow.name && allow.pattern == PatternType::Literal)
                        }
                        PatternType::Prefixed => allow.name.starts_with(d.name.as_str()),
                    }
            })
        };
        all().any(|a| {
            a.permission == Permission::Allow && allowed_by(op).contains(&a.operation) && !denies(a)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Operation::*;
    use PatternType::*;
    use Permission::*;
    use ResourceType::*;

    fn acl(
        kind: ResourceType,
        name: &str,
        pattern: PatternType,
        principal: &str,
        host: &str,
        op: Operation,
        perm: Permission,
    ) -> Acl {
        Acl {
            resource_type: kind,
            name: name.into(),
            pattern,
            principal: principal.into(),
            host: host.into(),
            operation: op,
            permission: perm,
        }
    }

    #[test]
    fn the_decision_follows_kafkas_rules() {
        let acls = [
            acl(Topic, "orders", Literal, "User:alice", "*", Write, Allow),
            acl(Topic, "logs-", Prefixed, "User:alice", "*", Read, Allow),
            acl(Topic, "logs-secret", Literal, "User:alice", "*", Read, Deny),
            acl(Topic, "*", Literal, "User:*", "*", Describe, Allow),
            acl(
                Topic, "metrics", Literal, "User:bob", "10.0.0.1", All, Allow,
            ),
            acl(Topic, "metrics", Literal, "User:*", "*", Write, Deny),
            acl(Group, "app", Literal, "User:alice", "*", Read, Allow),
            acl(
                Cluster,
                CLUSTER_NAME,
                Literal,
                "User:ops",
                "*",
                AlterConfigs,
                Allow,
            ),
        ];
        let index = AclIndex::new(&acls);
        // (principal, host, operation, type, name, allowed?)
        let cases = [
            ("User:alice", "1.2.3.4", Write, Topic, "orders", true),
            ("User:alice", "1.2.3.4", Read, Topic, "orders", false),
            // Write implies Describe (and so does the wildcard Describe for everyone).
            ("User:alice", "1.2.3.4", Describe, Topic, "orders", true),
            ("User:carol", "1.2.3.4", Describe, Topic, "anything", true),
            ("User:carol", "1.2.3.4", Read, Topic, "anything", false),
            // Prefixed.
            ("User:alice", "1.2.3.4", Read, Topic, "logs-app", true),
            ("User:alice", "1.2.3.4", Read, Topic, "logs", false),
            // Deny wins over a prefixed Allow.
            ("User:alice", "1.2.3.4", Read, Topic, "logs-secret", false),
            // A Deny denies only its operation: Describe through the wildcard still holds.
            (
                "User:alice",
                "1.2.3.4",
                Describe,
                Topic,
                "logs-secret",
                true,
            ),
            // Host.
            ("User:bob", "10.0.0.1", Read, Topic, "metrics", true),
            ("User:bob", "10.0.0.2", Read, Topic, "metrics", false),
            // Deny for every user beats bob's All.
            ("User:bob", "10.0.0.1", Write, Topic, "metrics", false),
            // Types do not mix: a group named like a topic.
            ("User:alice", "1.2.3.4", Read, Group, "app", true),
            ("User:alice", "1.2.3.4", Read, Topic, "app", false),
            ("User:alice", "1.2.3.4", Describe, Group, "app", true),
            // AlterConfigs implies DescribeConfigs, not the other way round.
            (
                "User:ops",
                "1.2.3.4",
                DescribeConfigs,
                Cluster,
                CLUSTER_NAME,
                true,
            ),
            ("User:ops", "1.2.3.4", Alter, Cluster, CLUSTER_NAME, false),
            // No binding at all: denied.
            ("User:nobody", "1.2.3.4", Write, Topic, "orders", false),
        ];
        for (p, h, op, kind, name, want) in cases {
            assert_eq!(
                index.allows(p, h, op, kind, name),
                want,
                "{p} {h} {op:?} {kind:?} {name}"
            );
        }
    }

    #[test]
    fn some_resource_of_a_type() {
        let acls = [
            acl(Topic, "a-", Prefixed, "User:alice", "*", Write, Allow),
            acl(Topic, "b", Literal, "User:bob", "*", Write, Allow),
            acl(Topic, "*", Literal, "User:bob", "*", Write, Deny),
            acl(Topic, "c", Literal, "User:carol", "*", Write, Allow),
            acl(Topic, "c", Prefixed, "User:carol", "*", Write, Deny),
        ];
        let index = AclIndex::new(&acls);
        assert!(index.allows_any("User:alice", "h", Write, Topic));
        assert!(!index.allows_any("User:alice", "h", Read, Topic));
        assert!(!index.allows_any("User:bob", "h", Write, Topic));
        assert!(!index.allows_any("User:carol", "h", Write, Topic));
        assert!(!index.allows_any("User:alice", "h", Write, Group));
    }

    #[test]
    fn malformed_bindings_are_refused() {
        let ok = acl(Topic, "t", Literal, "User:a", "*", Read, Allow);
        assert!(ok.check().is_ok());
        let bad = [
            acl(Topic, "t", Literal, "alice", "*", Read, Allow),
            acl(Topic, "t", Literal, "User:", "*", Read, Allow),
            acl(Topic, "", Literal, "User:a", "*", Read, Allow),
            acl(Topic, "t", Literal, "User:a", "", Read, Allow),
            acl(Cluster, "other", Literal, "User:a", "*", Alter, Allow),
            acl(Group, "g", Literal, "User:a", "*", Write, Allow),
            acl(Topic, "t", Literal, "User:a", "*", ClusterAction, Allow),
        ];
        for b in bad {
            assert!(b.check().is_err(), "{b:?}");
        }
    }
}
