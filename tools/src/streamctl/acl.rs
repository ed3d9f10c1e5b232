//! `streamctl acl`: add, remove and list access control lists. The flags become bindings
//! (add) or filters (list, remove) in pure functions, [`bindings`] and [`filters`], tested
//! below; the rest asks the broker and prints, as kafka-acls.sh's flags would.

use quiver_client::{
    AclBinding, AclFilter, AclOperation, AclPatternType, AclPermission, AclResourceType, Admin,
    Client,
};
use quiver_tools::outln;
use serde_json::{json, Value};

use crate::args::{AclArgs, AclCommand, Output, PatternArg};
use crate::output::{print_json, print_table};
use crate::CliResult;

/// The name of the one cluster resource, as in Kafka.
const CLUSTER_NAME: &str = "kafka-cluster";
/// Any host.
const ANY_HOST: &str = "*";

/// Whether the flags make ACLs (add) or filters (list, remove): checked before connecting, a
/// usage error otherwise.
pub fn check(cmd: &AclCommand) -> Result<(), String> {
    match cmd {
        AclCommand::Add(a) => bindings(a).map(drop),
        AclCommand::Remove(a) => filters(a, Purpose::Remove).map(drop),
        AclCommand::List(a) => filters(a, Purpose::List).map(drop),
    }
}

pub async fn acl(client: &Client, cmd: &AclCommand) -> CliResult {
    let admin = Admin::new(client.clone());
    let e = |e: quiver_client::Error| e.to_string();
    match cmd {
        AclCommand::Add(a) => {
            let wanted = bindings(a)?;
            admin.create_acls(wanted.clone()).await.map_err(e)?;
            report(a.out.output, "added", wanted)
        }
        AclCommand::Remove(a) => {
            let deleted = admin
                .delete_acls(filters(a, Purpose::Remove)?)
                .await
                .map_err(e)?;
            report(a.out.output, "removed", deleted)
        }
        AclCommand::List(a) => {
            let mut found = Vec::new();
            for f in filters(a, Purpose::List)? {
                found.extend(admin.describe_acls(f).await.map_err(e)?);
            }
            let found = sorted(found);
            match a.out.output {
                Output::Json => print_json(&found.iter().map(to_json).collect::<Vec<_>>()),
                Output::Text => {
                    print_bindings(&found);
                    Ok(())
                }
            }
        }
    }
}

/// Prints what add or remove did: `verb` N ACLs, and them.
fn report(output: Output, verb: &str, bindings: Vec<AclBinding>) -> CliResult {
    let bindings = sorted(bindings);
    match output {
        Output::Json => {
            print_json(&json!({ verb: bindings.iter().map(to_json).collect::<Vec<_>>() }))
        }
        Output::Text => {
            let n = bindings.len();
            outln!("{verb} {n} ACL{}", if n == 1 { "" } else { "s" });
            if n > 0 {
                outln!();
                print_bindings(&bindings);
            }
            Ok(())
        }
    }
}

fn print_bindings(bindings: &[AclBinding]) {
    let rows: Vec<Vec<String>> = bindings.iter().map(row).collect();
    print_table(
        &[
            "RESOURCE_TYPE",
            "NAME",
            "PATTERN",
            "PRINCIPAL",
            "HOST",
            "OPERATION",
            "PERMISSION",
        ],
        &rows,
    );
}

fn row(b: &AclBinding) -> Vec<String> {
    vec![
        format!("{:?}", b.resource_type),
        b.resource_name.clone(),
        format!("{:?}", b.pattern_type),
        b.principal.clone(),
        b.host.clone(),
        format!("{:?}", b.operation),
        format!("{:?}", b.permission),
    ]
}

fn to_json(b: &AclBinding) -> Value {
    json!({
        "resource_type": format!("{:?}", b.resource_type),
        "name": b.resource_name,
        "pattern": format!("{:?}", b.pattern_type),
        "principal": b.principal,
        "host": b.host,
        "operation": format!("{:?}", b.operation),
        "permission": format!("{:?}", b.permission),
    })
}

/// Sorted as the table shows them, each once (filters that overlap find a binding twice).
fn sorted(mut bindings: Vec<AclBinding>) -> Vec<AclBinding> {
    bindings.sort_by_key(row);
    bindings.dedup();
    bindings
}

/// The resources the flags name, in the order of the flags' kinds.
fn resources(a: &AclArgs) -> Result<Vec<(AclResourceType, String)>, String> {
    let mut out = Vec::new();
    let named = [
        (AclResourceType::Topic, &a.topics),
        (AclResourceType::Group, &a.groups),
        (AclResourceType::TransactionalId, &a.transactional_ids),
    ];
    for (kind, names) in named {
        for name in names {
            if name.is_empty() {
                return Err(format!("a {kind:?} name is empty (* is every {kind:?})"));
            }
            out.push((kind, name.clone()));
        }
    }
    if a.cluster {
        out.push((AclResourceType::Cluster, CLUSTER_NAME.to_string()));
    }
    Ok(out)
}

/// A principal as `Type:name` (User:alice, User:*).
fn check_principal(p: &str) -> Result<(), String> {
    match p.split_once(':') {
        Some((kind, name)) if !kind.is_empty() && !name.is_empty() => Ok(()),
        _ => Err(format!(
            "principal '{p}' is not of the form User:<name> (User:* is every user)"
        )),
    }
}

/// Each permission with its principals and hosts, and the flags that give them (for errors).
fn sides(a: &AclArgs) -> [(AclPermission, &[String], &[String], &'static str); 2] {
    [
        (
            AclPermission::Allow,
            &a.allow_principals,
            &a.allow_hosts,
            "allow",
        ),
        (
            AclPermission::Deny,
            &a.deny_principals,
            &a.deny_hosts,
            "deny",
        ),
    ]
}

const NO_RESOURCE: &str =
    "name a resource: --topic NAME, --group NAME, --transactional-id ID or --cluster";

/// The bindings `acl add` creates: every principal x host x operation x resource.
pub fn bindings(a: &AclArgs) -> Result<Vec<AclBinding>, String> {
    let pattern_type = match a.resource_pattern_type {
        None | Some(PatternArg::Literal) => AclPatternType::Literal,
        Some(PatternArg::Prefixed) => AclPatternType::Prefixed,
        Some(p @ (PatternArg::Any | PatternArg::Match)) => {
            return Err(format!(
                "--resource-pattern-type {} is for list and remove; add takes literal or prefixed",
                format!("{p:?}").to_ascii_lowercase()
            ))
        }
    };
    let resources = resources(a)?;
    if resources.is_empty() {
        return Err(NO_RESOURCE.into());
    }
    if a.allow_principals.is_empty() && a.deny_principals.is_empty() {
        return Err(
            "name who the ACL is for: --allow-principal User:NAME or --deny-principal User:NAME"
                .into(),
        );
    }
    if a.operations.is_empty() {
        return Err("name an operation: --operation Read (Write, Describe, All, ...)".into());
    }
    if a.operations.contains(&AclOperation::Any) {
        return Err(
            "--operation Any is for list and remove; add takes All for every operation".into(),
        );
    }
    if a.cluster && pattern_type == AclPatternType::Prefixed {
        return Err(
            "--cluster is a literal resource: it takes no --resource-pattern-type prefixed".into(),
        );
    }
    let mut out = Vec::new();
    for (permission, principals, hosts, flag) in sides(a) {
        if principals.is_empty() {
            if !hosts.is_empty() {
                return Err(format!(
                    "--{flag}-host applies to --{flag}-principal ACLs: give the principal too"
                ));
            }
            continue;
        }
        let any_host = [ANY_HOST.to_string()];
        let hosts = if hosts.is_empty() {
            &any_host[..]
        } else {
            hosts
        };
        if hosts.iter().any(String::is_empty) {
            return Err(format!("a --{flag}-host is empty (* is any host)"));
        }
        for (resource_type, name) in &resources {
            for principal in principals {
                check_principal(principal)?;
                for host in hosts {
                    for operation in &a.operations {
                        out.push(AclBinding {
                            resource_type: *resource_type,
                            resource_name: name.clone(),
                            pattern_type,
                            principal: principal.clone(),
                            host: host.clone(),
                            operation: *operation,
                            permission,
                        });
                    }
                }
            }
        }
    }
    let mut seen = Vec::with_capacity(out.len());
    for b in out {
        if !seen.contains(&b) {
            seen.push(b);
        }
    }
    Ok(seen)
}

/// What the filters are for: their defaults differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    List,
    Remove,
}

/// The filters of `acl list` and `acl remove`: a flag not given matches anything. The pattern
/// type is any unless given, except for remove naming a resource, where it is literal (what
/// add made by default, as kafka-acls.sh). Remove refuses to run with neither a resource nor a
/// principal: it would remove every ACL.
pub fn filters(a: &AclArgs, purpose: Purpose) -> Result<Vec<AclFilter>, String> {
    let resources = resources(a)?;
    let principals = a.allow_principals.iter().chain(&a.deny_principals);
    for p in principals {
        check_principal(p)?;
    }
    if purpose == Purpose::Remove
        && resources.is_empty()
        && a.allow_principals.is_empty()
        && a.deny_principals.is_empty()
    {
        return Err(format!(
            "refusing to remove every ACL: {NO_RESOURCE}, or a principal (--allow-principal, \
             --deny-principal)"
        ));
    }
    let pattern_type = match a.resource_pattern_type {
        Some(PatternArg::Literal) => AclPatternType::Literal,
        Some(PatternArg::Prefixed) => AclPatternType::Prefixed,
        Some(PatternArg::Any) => AclPatternType::Any,
        Some(PatternArg::Match) => AclPatternType::Match,
        None if purpose == Purpose::Remove && !resources.is_empty() => AclPatternType::Literal,
        None => AclPatternType::Any,
    };
    let resources: Vec<(AclResourceType, Option<String>)> = if resources.is_empty() {
        vec![(AclResourceType::Any, None)]
    } else {
        resources.into_iter().map(|(t, n)| (t, Some(n))).collect()
    };
    let mut who: Vec<(AclPermission, Option<String>, Option<String>)> = Vec::new();
    for (permission, principals, hosts, _) in sides(a) {
        if principals.is_empty() && hosts.is_empty() {
            continue;
        }
        let principals: Vec<Option<String>> = some_or_any(principals);
        let hosts: Vec<Option<String>> = some_or_any(hosts);
        for p in &principals {
            for h in &hosts {
                who.push((permission, p.clone(), h.clone()));
            }
        }
    }
    if who.is_empty() {
        who.push((AclPermission::Any, None, None));
    }
    let operations = if a.operations.is_empty() {
        vec![AclOperation::Any]
    } else {
        a.operations.clone()
    };
    let mut out = Vec::new();
    for (resource_type, resource_name) in &resources {
        for (permission, principal, host) in &who {
            for operation in &operations {
                out.push(AclFilter {
                    resource_type: *resource_type,
                    resource_name: resource_name.clone(),
                    pattern_type,
                    principal: principal.clone(),
                    host: host.clone(),
                    operation: *operation,
                    permission: *permission,
                });
            }
        }
    }
    Ok(out)
}

/// Each value, or one `None` (anything) when there are none.
fn some_or_any(values: &[String]) -> Vec<Option<String>> {
    if values.is_empty() {
        vec![None]
    } else {
        values.iter().cloned().map(Some).collect()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::args::{Cli, Command};

    /// The AclArgs of `streamctl acl <verb> <flags>`.
    fn args(flags: &str) -> AclArgs {
        let line = format!("streamctl acl list {flags}");
        let cli = Cli::try_parse_from(line.split_whitespace()).unwrap();
        match cli.command {
            Command::Acl(AclCommand::List(a)) => a,
            other => panic!("{other:?}"),
        }
    }

    /// A binding as one line: `Allow User:a * Read Topic t Literal`.
    fn line(b: &AclBinding) -> String {
        format!(
            "{:?} {} {} {:?} {:?} {} {:?}",
            b.permission,
            b.principal,
            b.host,
            b.operation,
            b.resource_type,
            b.resource_name,
            b.pattern_type
        )
    }

    fn filter_line(f: &AclFilter) -> String {
        let s = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        format!(
            "{:?} {} {} {:?} {:?} {} {:?}",
            f.permission,
            s(&f.principal),
            s(&f.host),
            f.operation,
            f.resource_type,
            s(&f.resource_name),
            f.pattern_type
        )
    }

    #[test]
    fn add_makes_every_combination_of_the_flags() {
        // (flags, the bindings made)
        let cases: &[(&str, &[&str])] = &[
            (
                "--allow-principal User:alice --operation read --topic orders",
                &["Allow User:alice * Read Topic orders Literal"],
            ),
            (
                "--allow-principal User:a --allow-principal User:b --operation Read \
                 --operation describe --topic t --group g",
                &[
                    "Allow User:a * Read Topic t Literal",
                    "Allow User:a * Describe Topic t Literal",
                    "Allow User:b * Read Topic t Literal",
                    "Allow User:b * Describe Topic t Literal",
                    "Allow User:a * Read Group g Literal",
                    "Allow User:a * Describe Group g Literal",
                    "Allow User:b * Read Group g Literal",
                    "Allow User:b * Describe Group g Literal",
                ],
            ),
            (
                "--deny-principal User:m --deny-host 10.0.0.9 --allow-principal User:* \
                 --operation ALL --topic logs- --resource-pattern-type prefixed",
                &[
                    "Allow User:* * All Topic logs- Prefixed",
                    "Deny User:m 10.0.0.9 All Topic logs- Prefixed",
                ],
            ),
            (
                "--allow-principal User:admin --operation describe-configs --operation \
                 IDEMPOTENT_WRITE --cluster",
                &[
                    "Allow User:admin * DescribeConfigs Cluster kafka-cluster Literal",
                    "Allow User:admin * IdempotentWrite Cluster kafka-cluster Literal",
                ],
            ),
            (
                "--allow-principal User:a --operation Write --operation write \
                 --transactional-id tx",
                &["Allow User:a * Write TransactionalId tx Literal"],
            ),
        ];
        for (flags, want) in cases {
            let got: Vec<String> = bindings(&args(flags)).unwrap().iter().map(line).collect();
            assert_eq!(got, *want, "{flags}");
        }
    }

    #[test]
    fn add_refuses_what_cannot_make_an_acl() {
        // (flags, words of the error)
        let cases: &[(&str, &str)] = &[
            ("--allow-principal User:a --operation Read", "name a resource"),
            ("--operation Read --topic t", "--allow-principal"),
            ("--allow-principal User:a --topic t", "--operation"),
            ("--allow-principal alice --operation Read --topic t", "User:<name>"),
            ("--allow-principal User: --operation Read --topic t", "User:<name>"),
            (
                "--allow-principal User:a --operation Any --topic t",
                "list and remove",
            ),
            (
                "--allow-principal User:a --operation Read --topic t --resource-pattern-type match",
                "list and remove",
            ),
            (
                "--allow-principal User:a --operation Alter --cluster --resource-pattern-type prefixed",
                "literal resource",
            ),
            (
                "--allow-principal User:a --deny-host 1.2.3.4 --operation Read --topic t",
                "--deny-host applies to --deny-principal",
            ),
        ];
        for (flags, words) in cases {
            let err = bindings(&args(flags)).unwrap_err();
            assert!(err.contains(words), "{flags}: {err}");
        }
        let err = Cli::try_parse_from("streamctl acl add --operation Reed".split_whitespace())
            .unwrap_err()
            .to_string();
        assert!(err.contains("'Reed' is not an operation"), "{err}");
    }

    #[test]
    fn list_and_remove_filter_by_the_flags_given() {
        use Purpose::{List, Remove};
        // (flags, purpose, the filters)
        let cases: &[(&str, Purpose, &[&str])] = &[
            ("", List, &["Any - - Any Any - Any"]),
            ("--topic orders", List, &["Any - - Any Topic orders Any"]),
            (
                "--topic orders",
                Remove,
                &["Any - - Any Topic orders Literal"],
            ),
            (
                "--topic orders --resource-pattern-type match",
                Remove,
                &["Any - - Any Topic orders Match"],
            ),
            (
                "--allow-principal User:alice",
                Remove,
                &["Allow User:alice - Any Any - Any"],
            ),
            (
                "--deny-host 10.0.0.9 --operation read --group g",
                List,
                &["Deny - 10.0.0.9 Read Group g Any"],
            ),
            (
                "--allow-principal User:a --deny-principal User:b --cluster",
                List,
                &[
                    "Allow User:a - Any Cluster kafka-cluster Any",
                    "Deny User:b - Any Cluster kafka-cluster Any",
                ],
            ),
        ];
        for (flags, purpose, want) in cases {
            let got: Vec<String> = filters(&args(flags), *purpose)
                .unwrap()
                .iter()
                .map(filter_line)
                .collect();
            assert_eq!(got, *want, "{flags} ({purpose:?})");
        }
        let err = filters(&args("--operation Read"), Remove).unwrap_err();
        assert!(err.contains("refusing to remove every ACL"), "{err}");
        let err = filters(&args("--allow-principal bob"), List).unwrap_err();
        assert!(err.contains("User:<name>"), "{err}");
    }

    #[test]
    fn listed_bindings_are_sorted_and_shown_once() {
        let b = |name: &str| AclBinding {
            resource_name: name.into(),
            principal: "User:a".into(),
            host: "*".into(),
            ..AclBinding::default()
        };
        let got: Vec<String> = sorted(vec![b("z"), b("a"), b("z")])
            .iter()
            .map(|b| b.resource_name.clone())
            .collect();
        assert_eq!(got, ["a", "z"]);
        assert_eq!(
            to_json(&b("t")),
            json!({"resource_type": "Topic", "name": "t", "pattern": "Literal",
                   "principal": "User:a", "host": "*", "operation": "Read",
                   "permission": "Allow"})
        );
    }
}
