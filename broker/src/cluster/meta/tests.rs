//! The metadata state machine's tests: every command applied, refused, and carried through
//! the file's round trip.
use super::*;

fn topic(name: &str, partitions: u32) -> TopicMeta {
    TopicMeta {
        name: name.into(),
        id: new_topic_id(),
        partitions,
        replication_factor: 1,
        configs: BTreeMap::new(),
        created_ms: 1,
        placement: vec![],
    }
}

fn broker(id: u32) -> BrokerMeta {
    BrokerMeta {
        id,
        host: "h".into(),
        port: 1,
        rack: None,
        shard_count: 1,
        incarnation: 9,
        epoch: 0,
        fenced: true,
        controller_only: false,
        shutting_down: false,
    }
}

/// The cluster's commands: blocks of producer ids never overlap, the first cluster id
/// wins, registration unfences and stamps the epoch, fencing needs a registered broker,
/// and a placed topic grows only with placements for its new partitions.
#[test]
fn cluster_commands_apply_as_the_log_orders_them() {
    let mut s = MetadataState::default();
    let a = s.apply(&MetadataCommand::AllocateProducerIds { count: 1000 });
    let b = s.apply(&MetadataCommand::AllocateProducerIds { count: 1000 });
    assert_eq!(a.unwrap(), Applied::ProducerIds { start: 0 });
    assert_eq!(b.unwrap(), Applied::ProducerIds { start: 1000 });
    assert_eq!(s.producer_ids_reserved, 2000);

    let init = |id: &str| MetadataCommand::InitCluster {
        carried: vec![],
        producer_ids_reserved: 0,
        cluster_id: id.into(),
    };
    s.apply(&init("one")).unwrap();
    s.apply(&init("one")).unwrap();
    let v = s.version;
    assert!(matches!(
        s.apply(&init("two")),
        Err(MetaError::ClusterIdMismatch { .. })
    ));
    assert_eq!((s.cluster_id.as_deref(), s.version), (Some("one"), v));

    assert!(matches!(
        s.apply(&MetadataCommand::SetFenced {
            id: 2,
            fenced: true
        }),
        Err(MetaError::UnknownBroker(2))
    ));
    s.apply(&MetadataCommand::RegisterBroker(broker(2)))
        .unwrap();
    let b2 = &s.brokers[&2];
    assert!(!b2.fenced, "registration unfences");
    assert_eq!(b2.epoch, s.version);
    s.apply(&MetadataCommand::SetFenced {
        id: 2,
        fenced: true,
    })
    .unwrap();
    assert!(s.brokers[&2].fenced);

    let on = |r: &[u32]| PartitionMeta::new(r.to_vec());
    let mut placed = topic("p", 2);
    placed.placement = vec![on(&[1, 2]), on(&[2, 1])];
    let mut short = placed.clone();
    short.placement.pop();
    let mut twice = placed.clone();
    twice.placement[1] = on(&[2, 2]);
    let mut outsider = placed.clone();
    outsider.placement[0].isr = vec![1, 3];
    let mut unsynced = placed.clone();
    unsynced.placement[0].isr = vec![1];
    unsynced.placement[0].leader = 2;
    for (bad, why) in [
        (short, "a placement per partition"),
        (twice, "a broker once per partition"),
        (outsider, "the ISR within the replicas"),
        (unsynced, "the leader within the ISR"),
    ] {
        let v = s.version;
        assert!(
            matches!(
                s.apply(&MetadataCommand::CreateTopic(bad)),
                Err(MetaError::Invalid(_))
            ),
            "{why}"
        );
        assert_eq!(s.version, v, "a refused command changes nothing");
    }
    s.apply(&MetadataCommand::CreateTopic(placed)).unwrap();
    let grow = |total, placement| MetadataCommand::CreatePartitions {
        name: "p".into(),
        total,
        placement,
    };
    assert!(
        s.apply(&grow(3, vec![])).is_err(),
        "a placed topic needs placements"
    );
    assert!(
        s.apply(&grow(4, vec![on(&[1])])).is_err(),
        "one per new partition"
    );
    assert!(
        s.apply(&grow(3, vec![on(&[])])).is_err(),
        "a replica at least"
    );
    assert_eq!(s.topics["p"].partitions, 2, "refusals change nothing");
    s.apply(&grow(3, vec![on(&[2, 1])])).unwrap();
    let p2 = s.topics["p"].placed(2).unwrap();
    assert_eq!((p2.leader, &p2.isr[..]), (2, &[2u32, 1][..]));
    assert_eq!(s.topics["p"].partitions, 3);
}

/// Fencing moves leaderships within the ISR on every broker alike; an ISR change needs the
/// epochs it was proposed in; a restart moves leaderships as a fence would.
#[test]
fn leaderships_follow_liveness_and_isr_changes_are_checked() {
    let mut s = MetadataState::default();
    for id in [1, 2, 3] {
        s.apply(&MetadataCommand::RegisterBroker(broker(id)))
            .unwrap();
    }
    let mut t = topic("r", 1);
    t.placement = vec![PartitionMeta::new(vec![1, 2, 3])];
    s.apply(&MetadataCommand::CreateTopic(t)).unwrap();
    let p = |s: &MetadataState| s.topics["r"].placement[0].clone();
    assert_eq!((p(&s).leader, &p(&s).isr[..]), (1, &[1u32, 2, 3][..]));

    let fence = |id, fenced| MetadataCommand::SetFenced { id, fenced };
    s.apply(&fence(1, true)).unwrap();
    let after = p(&s);
    assert_eq!((after.leader, &after.isr[..]), (2, &[2u32, 3][..]));
    assert_eq!((after.leader_epoch, after.partition_epoch), (1, 1));
    s.apply(&fence(1, false)).unwrap();
    assert_eq!(
        p(&s),
        after,
        "back, but out of sync until its leader says so"
    );

    let alter = |leader, le, pe, isr: &[u32]| MetadataCommand::AlterIsr {
        topic: "r".into(),
        partition: 0,
        leader,
        leader_epoch: le,
        partition_epoch: pe,
        isr: isr.to_vec(),
    };
    let v = s.version;
    assert!(matches!(
        s.apply(&alter(1, 0, 0, &[1, 2, 3])),
        Err(MetaError::Stale(_))
    ));
    assert!(matches!(
        s.apply(&alter(2, 1, 1, &[3])),
        Err(MetaError::Invalid(_))
    ));
    assert_eq!(s.version, v);
    s.apply(&alter(2, 1, 1, &[2, 3, 1])).unwrap();
    assert_eq!((p(&s).isr.len(), p(&s).partition_epoch), (3, 3));
    assert_eq!(
        (p(&s).leader, p(&s).leader_epoch),
        (1, 2),
        "back in sync, the preferred replica leads again"
    );
    assert!(
        matches!(s.apply(&alter(2, 1, 1, &[2])), Err(MetaError::Stale(_))),
        "the same epoch twice"
    );

    s.apply(&MetadataCommand::RegisterBroker(broker(2)))
        .unwrap();
    let moved = p(&s);
    assert_eq!(
        (moved.leader, &moved.isr[..]),
        (1, &[3u32, 1][..]),
        "2 restarted: 1 comes first"
    );
    assert_eq!(moved.leader_epoch, 2);

    // A controlled shutdown moves leaderships now and keeps the broker fenced.
    let incarnation = Some(s.brokers[&1].incarnation);
    s.apply(&MetadataCommand::ControlledShutdown { id: 1, incarnation })
        .unwrap();
    let stopped = p(&s);
    assert_eq!((stopped.leader, &stopped.isr[..]), (3, &[3u32][..]));
    assert!(s.brokers[&1].fenced && s.brokers[&1].shutting_down);
    let mut again = broker(1);
    again.incarnation += 1;
    s.apply(&MetadataCommand::RegisterBroker(again)).unwrap();
    assert!(!s.brokers[&1].shutting_down, "registering again clears it");
    // The old process's hand-over, committed late (retried), leaves the new one alone.
    let late = s.apply(&MetadataCommand::ControlledShutdown { id: 1, incarnation });
    assert!(matches!(late, Err(MetaError::Stale(_))), "{late:?}");
    assert!(!s.brokers[&1].fenced && !s.brokers[&1].shutting_down);
}

/// A reassignment through the state machine: refused for an unknown, repeated or
/// controller-only broker and an unknown partition (nothing changes); started, it completes
/// at the ISR change that brings the whole target in sync, and the leader moves then.
#[test]
fn a_reassignment_completes_with_the_isr_change_that_syncs_its_target() {
    let mut s = MetadataState::default();
    for id in [1, 2, 3] {
        s.apply(&MetadataCommand::RegisterBroker(broker(id)))
            .unwrap();
    }
    let mut only = broker(4);
    only.controller_only = true;
    s.apply(&MetadataCommand::RegisterBroker(only)).unwrap();
    let mut t = topic("m", 1);
    t.placement = vec![PartitionMeta::new(vec![1, 2])];
    s.apply(&MetadataCommand::CreateTopic(t)).unwrap();
    let p = |s: &MetadataState| s.topics["m"].placement[0].clone();
    let to = |topic: &str, partition, replicas: &[u32]| MetadataCommand::Reassign {
        topic: topic.into(),
        partition,
        replicas: replicas.to_vec(),
    };
    let v = s.version;
    for (cmd, why) in [
        (to("m", 0, &[3, 9]), "an unknown broker"),
        (to("m", 0, &[3, 3]), "a broker twice"),
        (to("m", 0, &[3, 4]), "a controller-only broker"),
        (to("m", 1, &[3]), "no such partition"),
        (to("x", 0, &[3]), "no such topic"),
        (to("m", 0, &[]), "no replica"),
    ] {
        assert!(s.apply(&cmd).is_err(), "{why}");
        assert_eq!(s.version, v, "{why}: nothing changes");
    }
    s.apply(&to("m", 0, &[3, 2])).unwrap();
    let moving = p(&s);
    assert_eq!(
        (
            &moving.replicas[..],
            &moving.adding[..],
            &moving.removing[..]
        ),
        (&[3u32, 2, 1][..], &[3u32][..], &[1u32][..])
    );
    assert_eq!(
        (moving.leader, moving.leader_epoch),
        (1, 0),
        "1 leads meanwhile"
    );
    moving.check().unwrap();
    let grow = MetadataCommand::AlterIsr {
        topic: "m".into(),
        partition: 0,
        leader: 1,
        leader_epoch: moving.leader_epoch,
        partition_epoch: moving.partition_epoch,
        isr: vec![1, 2, 3],
    };
    s.apply(&grow).unwrap();
    let done = p(&s);
    assert_eq!(
        (
            &done.replicas[..],
            &done.isr[..],
            done.leader,
            done.leader_epoch
        ),
        (&[3u32, 2][..], &[2u32, 3][..], 3, 1),
        "3 in sync: 1 goes, 3 (first) leads in a new epoch"
    );
    assert!(!done.reassigning());
}

#[test]
fn commands_apply_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = FileMetadataStore::open(dir.path()).unwrap();
    s.submit(MetadataCommand::CreateTopic(topic("a", 3)))
        .unwrap();
    s.submit(MetadataCommand::CreateTopic(topic("b", 1)))
        .unwrap();
    s.submit(MetadataCommand::CreatePartitions {
        name: "a".into(),
        total: 5,
        placement: vec![],
    })
    .unwrap();
    let mut set = BTreeMap::new();
    set.insert("retention.ms".to_string(), "1000".to_string());
    s.submit(MetadataCommand::AlterConfigs {
        name: "a".into(),
        set,
        remove: vec![],
    })
    .unwrap();
    s.submit(MetadataCommand::DeleteTopic { name: "b".into() })
        .unwrap();
    let before = s.state().clone();
    assert_eq!(before.version, 5);

    let s2 = FileMetadataStore::open(dir.path()).unwrap();
    assert_eq!(s2.state(), &before);
    assert_eq!(s2.state().topics["a"].partitions, 5);
    assert_eq!(s2.state().topics["a"].configs["retention.ms"], "1000");
    assert!(!s2.state().topics.contains_key("b"));
}

#[test]
fn refused_commands_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = FileMetadataStore::open(dir.path()).unwrap();
    s.submit(MetadataCommand::CreateTopic(topic("a", 3)))
        .unwrap();
    assert!(matches!(
        s.submit(MetadataCommand::CreateTopic(topic("a", 1))),
        Err(MetaError::TopicExists(_))
    ));
    assert!(matches!(
        s.submit(MetadataCommand::CreatePartitions {
            name: "a".into(),
            total: 3,
            placement: vec![],
        }),
        Err(MetaError::PartitionsCannotShrink { current: 3, .. })
    ));
    assert!(matches!(
        s.submit(MetadataCommand::DeleteTopic { name: "zz".into() }),
        Err(MetaError::UnknownTopic(_))
    ));
    assert_eq!(s.state().version, 1);
    assert_eq!(
        FileMetadataStore::open(dir.path()).unwrap().state().version,
        1
    );
}

#[test]
fn a_missing_file_beside_topic_directories_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = FileMetadataStore::open(dir.path()).unwrap();
    let t = topic("a", 1);
    s.submit(MetadataCommand::CreateTopic(t.clone())).unwrap();
    drop(s);
    let topics = dir.path().join("topics");
    fs::create_dir_all(topics.join(t.dir_name()).join("0")).unwrap();
    fs::remove_file(dir.path().join("meta/metadata.json")).unwrap();
    let err = FileMetadataStore::open(dir.path())
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("is missing") && err.contains("1 topic directories"),
        "{err}"
    );
    // Only directories being deleted (or put aside) left: a start may go on, empty.
    fs::rename(
        topics.join(t.dir_name()),
        topics.join(format!(".deleted.{}", t.dir_name())),
    )
    .unwrap();
    fs::create_dir_all(topics.join("b.0123.stray")).unwrap();
    let s = FileMetadataStore::open(dir.path()).unwrap();
    assert!(s.state().topics.is_empty());
}

#[test]
fn deleted_topics_are_remembered_newest_last_and_bounded() {
    let mut state = MetadataState::default();
    for i in 0..(DELETED_TOPICS_KEPT + 5) {
        let t = topic(&format!("t{i}"), 1);
        state
            .apply(&MetadataCommand::CreateTopic(t.clone()))
            .unwrap();
        state
            .apply(&MetadataCommand::DeleteTopic {
                name: t.name.clone(),
            })
            .unwrap();
        assert_eq!(state.deleted_topic_dirs.last(), Some(&t.dir_name()));
    }
    assert_eq!(state.deleted_topic_dirs.len(), DELETED_TOPICS_KEPT);
    assert!(state.deleted_topic_dirs[0].starts_with("t5."));
}

#[test]
fn a_damaged_file_is_reported_not_guessed() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = FileMetadataStore::open(dir.path()).unwrap();
    s.submit(MetadataCommand::CreateTopic(topic("a", 3)))
        .unwrap();
    let path = dir.path().join("meta/metadata.json");
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x20;
    fs::write(&path, bytes).unwrap();
    let err = FileMetadataStore::open(dir.path())
        .err()
        .expect("corruption detected")
        .to_string();
    assert!(err.contains("checksum mismatch"), "{err}");
}

#[test]
fn users_and_acls_change_only_through_valid_commands() {
    use crate::security::acl::{Operation, PatternType, Permission, ResourceType};
    use quiver_proto::scram::{Credential, Mechanism};
    let mut s = MetadataState::default();
    let cred = StoredCredential::from_credential(
        &Credential::new(Mechanism::Sha256, "pw", &[1; 16], 4096).unwrap(),
    );
    let upsert = |user: &str, mechanism: &str| MetadataCommand::UpsertScram {
        user: user.into(),
        mechanism: mechanism.into(),
        credential: cred.clone(),
        decoy_key: Some("00ff".into()),
    };
    let acl = |name: &str, principal: &str| Acl {
        resource_type: ResourceType::Topic,
        name: name.into(),
        pattern: PatternType::Literal,
        principal: principal.into(),
        host: "*".into(),
        operation: Operation::Read,
        permission: Permission::Allow,
    };
    s.apply(&upsert("alice", "SCRAM-SHA-256")).unwrap();
    s.apply(&upsert("alice", "SCRAM-SHA-512")).unwrap();
    s.apply(&MetadataCommand::CreateAcls {
        acls: vec![acl("t", "User:alice"), acl("t", "User:alice")],
    })
    .unwrap();
    assert_eq!(s.acls.len(), 1, "a binding is held once");
    let v = s.version;
    // Each refused, and nothing changes.
    for (cmd, why) in [
        (upsert("", "SCRAM-SHA-256"), "an empty user"),
        (upsert("bob", "PLAIN"), "an unknown mechanism"),
        (
            MetadataCommand::DeleteScram {
                user: "bob".into(),
                mechanism: "SCRAM-SHA-256".into(),
            },
            "a user without that credential",
        ),
        (
            MetadataCommand::CreateAcls {
                acls: vec![acl("u", "User:bob"), acl("t", "bob")],
            },
            "a malformed binding among good ones",
        ),
    ] {
        assert!(s.apply(&cmd).is_err(), "{why}");
        assert_eq!(s.version, v, "{why}");
    }
    assert_eq!(s.acls.len(), 1);
    // The user goes with its last credential; a deletion takes exactly its bindings.
    for m in ["SCRAM-SHA-256", "SCRAM-SHA-512"] {
        s.apply(&MetadataCommand::DeleteScram {
            user: "alice".into(),
            mechanism: m.into(),
        })
        .unwrap();
    }
    assert!(s.scram.is_empty());
    s.apply(&MetadataCommand::DeleteAcls {
        acls: vec![acl("t", "User:alice")],
    })
    .unwrap();
    assert!(s.acls.is_empty());
    // They survive the file's round trip.
    s.apply(&upsert("carol", "SCRAM-SHA-256")).unwrap();
    let json = serde_json::to_string(&s).unwrap();
    let back: MetadataState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
}
