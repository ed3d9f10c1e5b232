//! What one request may ask for: the bounds every request is held to right after it is decoded,
//! in one place, so no handler allocates or answers in proportion to a count it did not check.
//!
//! Rules (each refused with `InvalidRequest` and a message saying which rule, before any work):
//! - A request names at most [`REQUEST_ENTRIES_MAX`] entries in all: topic-partitions, topics,
//!   resources, configs, groups, keys, counted over every list it holds. Rationale: each entry
//!   costs the broker a lookup and the response an entry; the bound keeps the response of one
//!   request far below the frame limit (100,000 entries of about 64 bytes is 6.4 MB).
//! - A request names an entry at most once where a repeat would mean the same work twice: one
//!   (topic, partition) per Produce, Fetch, ReplicaFetch, ListOffsets, OffsetCommit and
//!   OffsetFetch; one topic
//!   per CreateTopics, DeleteTopics and CreatePartitions; one (topic, partition) per
//!   AlterPartitionReassignments; one resource per DescribeConfigs and
//!   IncrementalAlterConfigs, and one config per resource in the latter; one group per
//!   DescribeGroups and DeleteGroups; one user per DescribeUserScramCredentials and one
//!   (user, mechanism) per AlterUserScramCredentials. (Metadata is answered once per distinct topic instead: a
//!   repeated name there is harmless and some clients send one.)
//! - Produce: the payload references of its partitions do not overlap, so each payload byte is
//!   appended at most once (see `frame.rs`). Empty references overlap nothing.
//! - Every name (topic, group, member, instance, resource, config key) is at most
//!   [`NAME_BYTES_MAX`] bytes, and every other string at most [`STRING_BYTES_MAX`]. Rationale:
//!   names are echoed in responses; without a bound, a request of one 60 MB name would be
//!   answered with 60 MB more than it sent. Names longer than a topic or group may be, but
//!   within the bound, still get their per-entry error (`InvalidTopic`, `InvalidGroupId`).

use std::collections::HashSet;

use super::{AnyRequest, PayloadRef};

/// Most entries one request may name, over all its lists.
pub const REQUEST_ENTRIES_MAX: usize = 100_000;
/// Longest name in a request (topic, group, member, resource, config key). Topics are at most
/// 249 bytes and groups 255 (their own checks say so per entry); this bound only keeps absurd
/// names from being echoed.
pub const NAME_BYTES_MAX: usize = 1024;
/// Longest other string in a request (config values, offset metadata, client names).
pub const STRING_BYTES_MAX: usize = 64 * 1024;

/// Why a decoded request is refused by these rules.
pub type Violation = String;

struct Checker {
    entries: usize,
}

impl Checker {
    fn count(&mut self, n: usize) -> Result<(), Violation> {
        self.entries = self.entries.saturating_add(n);
        if self.entries > REQUEST_ENTRIES_MAX {
            return Err(format!(
                "the request names more than {REQUEST_ENTRIES_MAX} entries"
            ));
        }
        Ok(())
    }

    fn name(&self, what: &str, s: &str) -> Result<(), Violation> {
        if s.len() > NAME_BYTES_MAX {
            return Err(format!(
                "a {what} of {} bytes is longer than the {NAME_BYTES_MAX} bytes any name may have",
                s.len()
            ));
        }
        Ok(())
    }

    fn opt_name(&self, what: &str, s: &Option<String>) -> Result<(), Violation> {
        s.as_deref().map_or(Ok(()), |s| self.name(what, s))
    }

    fn string(&self, what: &str, s: &str) -> Result<(), Violation> {
        if s.len() > STRING_BYTES_MAX {
            return Err(format!(
                "a {what} of {} bytes is longer than the {STRING_BYTES_MAX} bytes allowed",
                s.len()
            ));
        }
        Ok(())
    }

    fn opt_string(&self, what: &str, s: &Option<String>) -> Result<(), Violation> {
        s.as_deref().map_or(Ok(()), |s| self.string(what, s))
    }

    /// Names that must be distinct within one list.
    fn distinct<'a>(
        &mut self,
        what: &str,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), Violation> {
        let mut seen = HashSet::new();
        for n in names {
            self.count(1)?;
            self.name(what, n)?;
            if !seen.insert(n) {
                return Err(format!("{what} '{}' is listed more than once", clip(n)));
            }
        }
        Ok(())
    }

    /// (topic, partition) pairs that must be distinct within the request.
    fn distinct_partitions<'a>(
        &mut self,
        pairs: impl IntoIterator<Item = (&'a str, u32)>,
    ) -> Result<(), Violation> {
        let mut seen = HashSet::new();
        for (t, p) in pairs {
            self.count(1)?;
            if !seen.insert((t, p)) {
                return Err(format!(
                    "partition {p} of topic '{}' is listed more than once",
                    clip(t)
                ));
            }
        }
        Ok(())
    }
}

/// A name cut for an error message, so the message stays short whatever the name.
fn clip(s: &str) -> String {
    if s.len() <= 64 {
        return s.to_string();
    }
    let mut end = 64;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Whether any two non-empty references share a byte. `refs` need not be sorted.
pub fn payload_refs_overlap(refs: &[PayloadRef]) -> Option<(PayloadRef, PayloadRef)> {
    let mut sorted: Vec<PayloadRef> = refs.iter().copied().filter(|r| r.len > 0).collect();
    sorted.sort_unstable_by_key(|r| (r.offset, r.len));
    sorted.windows(2).find_map(|w| {
        let end = u64::from(w[0].offset) + u64::from(w[0].len);
        (u64::from(w[1].offset) < end).then_some((w[0], w[1]))
    })
}

/// Checks a decoded request against the rules above.
pub fn check(req: &AnyRequest) -> Result<(), Violation> {
    let mut c = Checker { entries: 0 };
    match req {
        AnyRequest::Produce(r) => {
            c.opt_name("transactional id", &r.transactional_id)?;
            for t in &r.topics {
                c.name("topic name", &t.name)?;
            }
            c.distinct_partitions(r.topics.iter().flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| (t.name.as_str(), p.partition.0))
            }))?;
            let refs: Vec<PayloadRef> = r
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.records))
                .collect();
            if let Some((a, b)) = payload_refs_overlap(&refs) {
                return Err(format!(
                    "payload references overlap ({}+{} and {}+{}): each payload byte may be \
                     appended once",
                    a.offset, a.len, b.offset, b.len
                ));
            }
        }
        AnyRequest::Fetch(r) => {
            c.opt_string("rack id", &r.rack_id)?;
            for t in &r.topics {
                c.name("topic name", &t.name)?;
            }
            c.distinct_partitions(r.topics.iter().flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| (t.name.as_str(), p.partition.0))
            }))?;
        }
        AnyRequest::ReplicaFetch(r) => {
            for t in &r.topics {
                c.name("topic name", &t.name)?;
            }
            c.distinct_partitions(r.topics.iter().flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| (t.name.as_str(), p.partition.0))
            }))?;
        }
        AnyRequest::ListOffsets(r) => {
            for t in &r.topics {
                c.name("topic name", &t.name)?;
            }
            c.distinct_partitions(r.topics.iter().flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| (t.name.as_str(), p.partition.0))
            }))?;
        }
        AnyRequest::Metadata(r) => {
            for n in r.topics.iter().flatten() {
                c.count(1)?;
                c.name("topic name", n)?;
            }
        }
        AnyRequest::CreateTopics(r) => {
            c.distinct("topic", r.topics.iter().map(|t| t.name.as_str()))?;
            for t in &r.topics {
                c.count(t.assignments.len())?;
                for a in &t.assignments {
                    c.count(a.broker_ids.len())?;
                }
                c.distinct("config", t.configs.iter().map(|e| e.name.as_str()))?;
                for e in &t.configs {
                    c.opt_string("config value", &e.value)?;
                }
            }
        }
        AnyRequest::DeleteTopics(r) => {
            c.distinct("topic", r.topic_names.iter().map(String::as_str))?;
        }
        AnyRequest::CreatePartitions(r) => {
            c.distinct("topic", r.topics.iter().map(|t| t.name.as_str()))?;
            for t in &r.topics {
                c.count(t.assignments.len())?;
                for a in &t.assignments {
                    c.count(a.broker_ids.len())?;
                }
            }
        }
        AnyRequest::AlterPartitionReassignments(r) => {
            let mut seen = HashSet::new();
            for p in &r.partitions {
                c.count(1)?;
                c.count(p.replicas.len())?;
                c.name("topic name", &p.topic)?;
                if !seen.insert((p.topic.as_str(), p.partition)) {
                    return Err(format!(
                        "partition {} of '{}' is listed more than once",
                        p.partition.0,
                        clip(&p.topic)
                    ));
                }
            }
        }
        AnyRequest::DescribeConfigs(r) => {
            let mut seen = HashSet::new();
            for res in &r.resources {
                c.count(1)?;
                c.name("resource name", &res.resource_name)?;
                if !seen.insert((res.resource_type, res.resource_name.as_str())) {
                    return Err(format!(
                        "resource {:?} '{}' is listed more than once",
                        res.resource_type,
                        clip(&res.resource_name)
                    ));
                }
                c.distinct("config", res.configuration_keys.iter().map(String::as_str))?;
            }
        }
        AnyRequest::IncrementalAlterConfigs(r) => {
            let mut seen = HashSet::new();
            for res in &r.resources {
                c.count(1)?;
                c.name("resource name", &res.resource_name)?;
                if !seen.insert((res.resource_type, res.resource_name.as_str())) {
                    return Err(format!(
                        "resource {:?} '{}' is listed more than once",
                        res.resource_type,
                        clip(&res.resource_name)
                    ));
                }
                c.distinct("config", res.configs.iter().map(|e| e.name.as_str()))?;
                for e in &res.configs {
                    c.opt_string("config value", &e.value)?;
                }
            }
        }
        AnyRequest::FindCoordinator(r) => {
            c.distinct("key", r.keys.iter().map(String::as_str))?;
        }
        AnyRequest::ConsumerGroupHeartbeat(r) => {
            c.name("group id", &r.group_id)?;
            c.name("member id", &r.member_id)?;
            c.opt_name("instance id", &r.instance_id)?;
            c.opt_name("rack id", &r.rack_id)?;
            c.opt_name("assignor", &r.server_assignor)?;
            for n in r.subscribed_topic_names.iter().flatten() {
                c.count(1)?;
                c.name("topic name", n)?;
            }
            for tp in r.topic_partitions.iter().flatten() {
                c.count(1)?;
                c.name("topic name", &tp.topic)?;
                c.count(tp.partitions.len())?;
            }
        }
        AnyRequest::OffsetCommit(r) => {
            c.name("group id", &r.group_id)?;
            c.name("member id", &r.member_id)?;
            c.opt_name("instance id", &r.group_instance_id)?;
            for t in &r.topics {
                c.name("topic name", &t.name)?;
                for p in &t.partitions {
                    c.opt_string("offset metadata", &p.committed_metadata)?;
                }
            }
            c.distinct_partitions(r.topics.iter().flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| (t.name.as_str(), p.partition.0))
            }))?;
        }
        AnyRequest::OffsetFetch(r) => {
            c.name("group id", &r.group_id)?;
            c.opt_name("member id", &r.member_id)?;
            for t in r.topics.iter().flatten() {
                c.name("topic name", &t.topic)?;
            }
            c.distinct_partitions(
                r.topics
                    .iter()
                    .flatten()
                    .flat_map(|t| t.partitions.iter().map(move |p| (t.topic.as_str(), p.0))),
            )?;
        }
        AnyRequest::DescribeGroups(r) => {
            c.distinct("group", r.groups.iter().map(String::as_str))?;
        }
        AnyRequest::DeleteGroups(r) => {
            c.distinct("group", r.groups_names.iter().map(String::as_str))?;
        }
        AnyRequest::ListGroups(r) => {
            c.count(r.states_filter.len() + r.types_filter.len())?;
        }
        AnyRequest::InitProducerId(r) => {
            c.opt_name("transactional id", &r.transactional_id)?;
        }
        AnyRequest::ApiVersions(r) => {
            c.string("client software name", &r.client_software_name)?;
            c.string("client software version", &r.client_software_version)?;
            c.opt_name("client id", &r.client_id)?;
        }
        AnyRequest::SaslHandshake(r) => {
            c.name("mechanism", &r.mechanism)?;
        }
        // A SCRAM message is at most 1 KiB (`scram::MESSAGE_BYTES_MAX`); the exchange refuses
        // a longer one with its own message.
        AnyRequest::SaslAuthenticate(r) if r.auth_bytes.len() > STRING_BYTES_MAX => {
            return Err(format!(
                "SASL bytes of {} are more than {STRING_BYTES_MAX}",
                r.auth_bytes.len()
            ));
        }
        AnyRequest::CreateAcls(r) => {
            for b in &r.creations {
                c.count(1)?;
                acl_binding(&c, b)?;
            }
        }
        AnyRequest::DescribeAcls(r) => {
            acl_filter(&c, &r.filter)?;
        }
        AnyRequest::DeleteAcls(r) => {
            for f in &r.filters {
                c.count(1)?;
                acl_filter(&c, f)?;
            }
        }
        AnyRequest::AlterClientQuotas(r) => {
            for e in &r.entries {
                c.count(1 + e.entity.len() + e.ops.len())?;
                for part in &e.entity {
                    c.name("entity type", &part.entity_type)?;
                    c.opt_name("entity name", &part.entity_name)?;
                }
                c.distinct("quota key", e.ops.iter().map(|o| o.key.as_str()))?;
            }
        }
        AnyRequest::DescribeClientQuotas(r) => {
            for part in &r.components {
                c.count(1)?;
                c.name("entity type", &part.entity_type)?;
                c.opt_name("entity name", &part.name)?;
            }
        }
        AnyRequest::DescribeUserScramCredentials(r) => {
            let users = r.users.iter().flatten();
            c.distinct("user", users.map(String::as_str))?;
        }
        AnyRequest::AlterUserScramCredentials(r) => {
            let mut seen = HashSet::new();
            let named = r
                .deletions
                .iter()
                .map(|d| (d.name.as_str(), d.mechanism.as_str()))
                .chain(
                    r.upsertions
                        .iter()
                        .map(|u| (u.name.as_str(), u.mechanism.as_str())),
                );
            for (user, mechanism) in named {
                c.count(1)?;
                c.name("user", user)?;
                c.name("mechanism", mechanism)?;
                if !seen.insert((user, mechanism)) {
                    return Err(format!(
                        "user '{}' and mechanism '{}' are named more than once",
                        clip(user),
                        clip(mechanism)
                    ));
                }
            }
            for u in &r.upsertions {
                if u.salt.len() > NAME_BYTES_MAX || u.salted_password.len() > NAME_BYTES_MAX {
                    return Err(format!(
                        "a salt or salted password longer than {NAME_BYTES_MAX} bytes"
                    ));
                }
            }
        }
        // APIs this broker does not serve are refused by the dispatcher before any work; their
        // lists are never walked.
        _ => {}
    }
    Ok(())
}

fn acl_binding(c: &Checker, b: &super::acl::AclBinding) -> Result<(), Violation> {
    c.name("resource name", &b.resource_name)?;
    c.name("principal", &b.principal)?;
    c.name("host", &b.host)
}

fn acl_filter(c: &Checker, f: &super::acl::AclFilter) -> Result<(), Violation> {
    c.opt_name("resource name", &f.resource_name)?;
    c.opt_name("principal", &f.principal)?;
    c.opt_name("host", &f.host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fetch::{FetchPartition, FetchRequest, FetchTopic};
    use crate::api::metadata::MetadataRequest;
    use crate::api::produce::{PartitionProduceData, ProduceRequest, TopicProduceData};
    use crate::{Offset, PartitionId};

    fn fetch(topics: &[(&str, &[u32])]) -> AnyRequest {
        AnyRequest::Fetch(FetchRequest {
            topics: topics
                .iter()
                .map(|(name, parts)| FetchTopic {
                    name: name.to_string(),
                    partitions: parts
                        .iter()
                        .map(|&p| FetchPartition {
                            partition: PartitionId(p),
                            fetch_offset: Offset(0),
                            partition_max_bytes: 0,
                            current_leader_epoch: None,
                        })
                        .collect(),
                })
                .collect(),
            ..Default::default()
        })
    }

    fn produce(parts: &[(&str, u32, u32, u32)]) -> AnyRequest {
        AnyRequest::Produce(ProduceRequest {
            topics: parts
                .iter()
                .map(|&(name, p, off, len)| TopicProduceData {
                    name: name.to_string(),
                    partitions: vec![PartitionProduceData {
                        partition: PartitionId(p),
                        records: PayloadRef::new(off, len),
                    }],
                })
                .collect(),
            ..Default::default()
        })
    }

    /// (request, expected: None = accepted, Some(needle) = refused with a message holding it)
    /// AlterUserScramCredentials deleting `del` and upserting `up` (user, mechanism).
    fn scram(del: &[(&str, &str)], up: &[(&str, &str)]) -> AnyRequest {
        use crate::api::user::{
            AlterUserScramCredentialsRequest, ScramCredentialDeletion, ScramCredentialUpsertion,
        };
        AnyRequest::AlterUserScramCredentials(AlterUserScramCredentialsRequest {
            deletions: del
                .iter()
                .map(|(u, m)| ScramCredentialDeletion {
                    name: u.to_string(),
                    mechanism: m.to_string(),
                })
                .collect(),
            upsertions: up
                .iter()
                .map(|(u, m)| ScramCredentialUpsertion {
                    name: u.to_string(),
                    mechanism: m.to_string(),
                    ..Default::default()
                })
                .collect(),
        })
    }

    /// AlterClientQuotas setting `keys` for one user.
    fn quota(keys: &[&str]) -> AnyRequest {
        use crate::api::quota::{
            AlterClientQuotasRequest, QuotaAlterEntry, QuotaEntityPart, QuotaOp,
        };
        AnyRequest::AlterClientQuotas(AlterClientQuotasRequest {
            entries: vec![QuotaAlterEntry {
                entity: vec![QuotaEntityPart {
                    entity_type: "user".into(),
                    entity_name: Some("alice".into()),
                }],
                ops: keys
                    .iter()
                    .map(|k| QuotaOp {
                        key: k.to_string(),
                        value: 1,
                        remove: false,
                    })
                    .collect(),
            }],
            validate_only: false,
        })
    }

    #[test]
    fn table_of_requests() {
        let many: Vec<u32> = (0..=REQUEST_ENTRIES_MAX as u32).collect();
        let long = "x".repeat(NAME_BYTES_MAX + 1);
        let cases: Vec<(&str, AnyRequest, Option<&str>)> = vec![
            (
                "distinct fetch",
                fetch(&[("a", &[0, 1]), ("b", &[0])]),
                None,
            ),
            (
                "one partition twice",
                fetch(&[("a", &[0, 0])]),
                Some("listed more than once"),
            ),
            (
                "one partition twice across two entries of a topic",
                fetch(&[("a", &[0]), ("a", &[0])]),
                Some("listed more than once"),
            ),
            (
                "too many entries",
                fetch(&[("a", &many)]),
                Some("more than 100000 entries"),
            ),
            (
                "long topic name",
                fetch(&[(long.as_str(), &[0])]),
                Some("longer than"),
            ),
            (
                "disjoint payloads",
                produce(&[("a", 0, 0, 10), ("a", 1, 10, 5), ("b", 0, 15, 1)]),
                None,
            ),
            (
                "overlapping payloads",
                produce(&[("a", 0, 0, 10), ("a", 1, 9, 5)]),
                Some("overlap"),
            ),
            (
                "the same payload twice",
                produce(&[("a", 0, 0, 10), ("b", 0, 0, 10)]),
                Some("overlap"),
            ),
            (
                "empty references overlap nothing",
                produce(&[("a", 0, 0, 0), ("b", 0, 0, 0)]),
                None,
            ),
            (
                "a produce partition twice",
                produce(&[("a", 0, 0, 10), ("a", 0, 10, 10)]),
                Some("listed more than once"),
            ),
            (
                "metadata repeats are answered once, not refused",
                AnyRequest::Metadata(MetadataRequest {
                    topics: Some(vec!["a".into(); 1000]),
                    allow_auto_topic_creation: false,
                }),
                None,
            ),
            (
                "a credential named twice",
                scram(&[("alice", "SCRAM-SHA-256")], &[("alice", "SCRAM-SHA-256")]),
                Some("more than once"),
            ),
            (
                "one user, two mechanisms",
                scram(&[("alice", "SCRAM-SHA-256")], &[("alice", "SCRAM-SHA-512")]),
                None,
            ),
            (
                "a quota key twice",
                quota(&["producer_byte_rate", "producer_byte_rate"]),
                Some("more than once"),
            ),
            (
                "two quota keys",
                quota(&["producer_byte_rate", "consumer_byte_rate"]),
                None,
            ),
            (
                "SASL bytes past the string bound",
                AnyRequest::SaslAuthenticate(super::super::handshake::SaslAuthenticateRequest {
                    auth_bytes: vec![b'x'; STRING_BYTES_MAX + 1],
                }),
                Some("SASL bytes"),
            ),
            (
                "an ACL principal past the name bound",
                AnyRequest::CreateAcls(super::super::acl::CreateAclsRequest {
                    creations: vec![super::super::acl::AclBinding {
                        principal: long.clone(),
                        ..Default::default()
                    }],
                }),
                Some("longer than"),
            ),
            (
                "metadata of a million names",
                AnyRequest::Metadata(MetadataRequest {
                    topics: Some(vec!["a".into(); 1_000_000]),
                    allow_auto_topic_creation: false,
                }),
                Some("more than"),
            ),
        ];
        for (what, req, want) in cases {
            match (check(&req), want) {
                (Ok(()), None) => {}
                (Err(e), Some(needle)) => assert!(e.contains(needle), "{what}: {e}"),
                (got, want) => panic!("{what}: got {got:?}, wanted {want:?}"),
            }
        }
    }

    #[test]
    fn overlap_is_found_whatever_the_order() {
        let refs = [
            PayloadRef::new(100, 10),
            PayloadRef::new(0, 50),
            PayloadRef::new(49, 2),
        ];
        assert!(payload_refs_overlap(&refs).is_some());
        let refs = [
            PayloadRef::new(100, 10),
            PayloadRef::new(0, 50),
            PayloadRef::new(50, 50),
        ];
        assert_eq!(payload_refs_overlap(&refs), None);
        // u32 ends do not wrap.
        let refs = [PayloadRef::new(u32::MAX, u32::MAX), PayloadRef::new(0, 1)];
        assert_eq!(payload_refs_overlap(&refs), None);
    }
}
