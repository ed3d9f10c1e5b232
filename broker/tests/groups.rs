//! Consumer groups through the real broker with raw protocol calls (the SDK's group consumer is
//! tested in client/ and tools/): membership, committed offsets across kill -9, fencing.

use std::collections::BTreeMap;

use quiver_client::Client;
use quiver_proto::api::common::TopicPartitions;
use quiver_proto::api::group::{
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, DeleteGroupsRequest,
    DescribeGroupsRequest, GroupState, ListGroupsRequest, OffsetCommitPartition,
    OffsetCommitRequest, OffsetCommitTopic, OffsetFetchRequest,
};
use quiver_proto::api::metadata::MetadataRequest;
use quiver_proto::{ErrorCode, Offset, PartitionId};
use quiver_testkit::*;

async fn heartbeat(
    c: &Client,
    member: &str,
    epoch: i32,
    owned: Option<&[(String, u32)]>,
) -> ConsumerGroupHeartbeatResponse {
    let req = ConsumerGroupHeartbeatRequest {
        group_id: "g".into(),
        member_id: member.into(),
        member_epoch: epoch,
        subscribed_topic_names: (epoch == 0).then(|| vec!["t".to_string()]),
        topic_partitions: owned.map(|o| {
            let mut by: BTreeMap<&str, Vec<PartitionId>> = BTreeMap::new();
            for (t, p) in o {
                by.entry(t).or_default().push(PartitionId(*p));
            }
            by.into_iter()
                .map(|(t, ps)| TopicPartitions {
                    topic: t.into(),
                    partitions: ps,
                })
                .collect()
        }),
        ..Default::default()
    };
    c.call_any(&req, vec![]).await.unwrap().0
}

async fn commit(c: &Client, member: &str, epoch: i32, partition: u32, offset: u64) -> ErrorCode {
    commit_in(c, "g", member, epoch, partition, offset).await
}

/// Commits `offset` for partition `partition` of topic "t" in `group`; the partition's error code.
async fn commit_in(
    c: &Client,
    group: &str,
    member: &str,
    epoch: i32,
    partition: u32,
    offset: u64,
) -> ErrorCode {
    let req = OffsetCommitRequest {
        group_id: group.into(),
        generation_id_or_member_epoch: epoch,
        member_id: member.into(),
        group_instance_id: None,
        topics: vec![OffsetCommitTopic {
            name: "t".into(),
            partitions: vec![OffsetCommitPartition {
                partition: PartitionId(partition),
                committed_offset: Offset(offset),
                committed_leader_epoch: None,
                committed_metadata: Some("m".into()),
            }],
        }],
    };
    c.call_any(&req, vec![]).await.unwrap().0.topics[0].partitions[0].error_code
}

async fn committed(c: &Client) -> BTreeMap<u32, u64> {
    let req = OffsetFetchRequest {
        group_id: "g".into(),
        member_epoch: -1,
        ..Default::default()
    };
    let resp = c.call_any(&req, vec![]).await.unwrap().0;
    assert_eq!(resp.error_code, ErrorCode::None);
    resp.topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (p.partition.0, p.committed_offset.unwrap().0))
        })
        .collect()
}

struct Member {
    id: String,
    epoch: i32,
    owned: Vec<(String, u32)>,
}

impl Member {
    async fn beat(&mut self, c: &Client) {
        let r = heartbeat(c, &self.id, self.epoch, Some(&self.owned)).await;
        assert_eq!(r.error_code, ErrorCode::None, "{r:?}");
        self.epoch = r.member_epoch;
        if let Some(a) = r.assignment {
            self.owned = a
                .topic_partitions
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| (t.topic.clone(), p.0)))
                .collect();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_share_partitions_offsets_survive_kill_9_and_zombies_are_fenced() {
    let mut broker = Broker::start(&[
        "--group-session-timeout-ms",
        "1500",
        "--group-heartbeat-interval-ms",
        "200",
    ]);
    let c = broker.client().await;
    assert_eq!(create_topic(&c, "t", 6, &[]).await, ErrorCode::None);

    // The internal offsets topic exists but is hidden unless asked for by name.
    let all = c
        .call_any(&MetadataRequest::default(), vec![])
        .await
        .unwrap()
        .0;
    assert!(all.topics.iter().all(|t| !t.name.starts_with("__")));
    let asked = c
        .call_any(
            &MetadataRequest {
                topics: Some(vec!["__consumer_offsets".into()]),
                allow_auto_topic_creation: false,
            },
            vec![],
        )
        .await
        .unwrap()
        .0;
    assert_eq!(asked.topics[0].error_code, ErrorCode::None);
    assert!(asked.topics[0].is_internal);

    // Three members join; after a few heartbeats each owns two partitions, none twice.
    let mut members: Vec<Member> = ["m1", "m2", "m3"]
        .iter()
        .map(|id| Member {
            id: id.to_string(),
            epoch: 0,
            owned: vec![],
        })
        .collect();
    for _ in 0..6 {
        for m in members.iter_mut() {
            m.beat(&c).await;
        }
    }
    let mut all_owned: Vec<(String, u32)> = members.iter().flat_map(|m| m.owned.clone()).collect();
    all_owned.sort();
    assert_eq!(
        all_owned,
        (0..6).map(|p| ("t".to_string(), p)).collect::<Vec<_>>()
    );
    assert!(members.iter().all(|m| m.owned.len() == 2));
    let described = c
        .call_any(
            &DescribeGroupsRequest {
                groups: vec!["g".into()],
            },
            vec![],
        )
        .await
        .unwrap()
        .0;
    assert_eq!(described.groups[0].group_state, GroupState::Stable);
    assert_eq!(described.groups[0].members.len(), 3);

    // Members commit what they consumed.
    for (i, m) in members.iter().enumerate() {
        for (_, p) in &m.owned {
            assert_eq!(
                commit(&c, &m.id, m.epoch, *p, 100 + i as u64).await,
                ErrorCode::None
            );
        }
    }
    let before = committed(&c).await;
    assert_eq!(before.len(), 6);

    // m3 stops heartbeating: after its session timeout it is gone, and its late commit is
    // refused as a zombie's.
    let zombie = members.pop().unwrap();
    for _ in 0..12 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        for m in members.iter_mut() {
            m.beat(&c).await;
        }
    }
    assert_eq!(
        commit(&c, &zombie.id, zombie.epoch, zombie.owned[0].1, 999).await,
        ErrorCode::UnknownMemberId
    );
    assert!(
        members.iter().all(|m| m.owned.len() == 3),
        "the survivors took over: {:?}",
        members.iter().map(|m| &m.owned).collect::<Vec<_>>()
    );
    // A stale epoch of a live member is refused too.
    assert_eq!(
        commit(&c, &members[0].id, members[0].epoch - 100, 0, 5).await,
        ErrorCode::StaleMemberEpoch
    );
    assert_eq!(
        committed(&c).await,
        before,
        "refused commits changed nothing"
    );

    // Committed offsets survive kill -9.
    broker.kill9();
    broker.restart();
    let c = broker.client().await;
    assert_eq!(committed(&c).await, before);
    // Members are forgotten with the restart: the old ids are unknown and must rejoin.
    let r = heartbeat(&c, &members[0].id, members[0].epoch, None).await;
    assert_eq!(r.error_code, ErrorCode::UnknownMemberId);

    // An empty group can be listed, described and deleted; its offsets go with it.
    let listed = c
        .call_any(&ListGroupsRequest::default(), vec![])
        .await
        .unwrap()
        .0;
    assert!(
        listed
            .groups
            .iter()
            .any(|g| g.group_id == "g" && g.group_state == GroupState::Empty),
        "{listed:?}"
    );
    let r = c
        .call_any(
            &DeleteGroupsRequest {
                groups_names: vec!["g".into(), "nope".into()],
            },
            vec![],
        )
        .await
        .unwrap()
        .0;
    assert_eq!(r.results[0].error_code, ErrorCode::None);
    assert_eq!(r.results[1].error_code, ErrorCode::GroupIdNotFound);
    assert!(committed(&c).await.is_empty());
    broker.kill9();
    broker.restart();
    let c = broker.client().await;
    assert!(
        committed(&c).await.is_empty(),
        "deleted offsets stay deleted after a restart"
    );
}

/// A commit from a member that is being replaced (a static member's new incarnation joins while
/// the old one's commit is in flight) either lands before the takeover, so the new owner reads
/// it, or is refused: never accepted after the new owner has read the older offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_never_reads_an_offset_older_than_an_accepted_commit() {
    let broker = Broker::start(&["--shards", "1"]);
    let a = broker.client().await;
    let b = broker.client().await;
    assert_eq!(create_topic(&a, "t", 1, &[]).await, ErrorCode::None);
    let join = |c: Client, group: String, member: &'static str| async move {
        let req = ConsumerGroupHeartbeatRequest {
            group_id: group,
            member_id: member.into(),
            member_epoch: 0,
            instance_id: Some("pod".into()),
            subscribed_topic_names: Some(vec!["t".to_string()]),
            topic_partitions: Some(vec![]),
            ..Default::default()
        };
        let r = c.call_any(&req, vec![]).await.unwrap().0;
        assert_eq!(r.error_code, ErrorCode::None, "{r:?}");
        r.member_epoch
    };
    let commit_to = |c: Client, group: String, member: &'static str, epoch: i32, offset: u64| async move {
        commit_in(&c, &group, member, epoch, 0, offset).await
    };
    let fetch_of = |c: Client, group: String| async move {
        let req = OffsetFetchRequest {
            group_id: group,
            member_epoch: -1,
            ..Default::default()
        };
        let resp = c.call_any(&req, vec![]).await.unwrap().0;
        resp.topics
            .first()
            .and_then(|t| t.partitions.first())
            .and_then(|p| p.committed_offset)
            .map(|o| o.0)
    };
    let mut accepted = 0;
    for i in 0..60u64 {
        let group = format!("g{i}");
        let epoch = join(a.clone(), group.clone(), "a").await;
        assert_eq!(
            commit_to(a.clone(), group.clone(), "a", epoch, 10).await,
            ErrorCode::None
        );
        let late = tokio::spawn(commit_to(a.clone(), group.clone(), "a", epoch, 100));
        tokio::time::sleep(std::time::Duration::from_micros((i % 6) * 60)).await;
        join(b.clone(), group.clone(), "b").await;
        let seen = fetch_of(b.clone(), group.clone()).await;
        match late.await.unwrap() {
            ErrorCode::None => {
                accepted += 1;
                assert_eq!(
                    seen,
                    Some(100),
                    "group {group}: the late commit was accepted but the new owner read {seen:?}"
                );
            }
            code => {
                assert_eq!(code, ErrorCode::UnknownMemberId, "group {group}");
                assert_eq!(seen, Some(10), "group {group}");
            }
        }
    }
    eprintln!("{accepted} of 60 late commits landed before the takeover; the rest were refused");
}
