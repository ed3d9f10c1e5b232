//! Moving a partition's replicas to other brokers (Kafka's KIP-455), as pure functions of a
//! `PartitionMeta` that the metadata state machine applies in log order.
//!
//! A reassignment to `target` (the preferred leader first) runs in two steps:
//! 1. `start`: the replicas become `target` followed by the original replicas not in it; those
//!    of the target that were not replicas are `adding`, the originals not in the target are
//!    `removing`. Every broker that is now a replica opens the partition's log; an added one
//!    fetches from the leader from its log start like any follower, and the leader adds it to
//!    the ISR once it has caught up (`AlterIsr`). Nothing changes for producers and consumers.
//! 2. `complete`, when the whole target is in the ISR (checked at every ISR change and at the
//!    start): the replicas become the target, the removed ones leave the ISR, and if the leader
//!    was removed the first in-sync replica of the target leads, in a new epoch. A removed
//!    broker closes and deletes its copy when it sees the change.
//!
//! Invariant: a record acknowledged with acks=all is durable on every ISR member; the ISR only
//! loses removed replicas at completion, when it holds the whole target, so every replica that
//! stays holds every acknowledged record.

use super::election;
use super::partition::PartitionMeta;

/// Starts moving `p` to `target` (distinct broker ids, checked by the caller to be registered
/// brokers). A reassignment under way is replaced: its replicas being added that the new target
/// leaves out are dropped. Completes at once if the whole target is already in sync. Returns
/// whether the partition changed (its partition epoch is then bumped).
pub fn start(
    p: &mut PartitionMeta,
    target: &[u32],
    live: impl Fn(u32) -> bool,
) -> Result<bool, String> {
    if target.is_empty() {
        return Err("a partition needs at least one replica".into());
    }
    let before = p.clone();
    let original: Vec<u32> = p
        .replicas
        .iter()
        .copied()
        .filter(|r| !p.adding.contains(r))
        .collect();
    let mut replicas = target.to_vec();
    replicas.extend(original.iter().copied().filter(|r| !target.contains(r)));
    let isr: Vec<u32> = p
        .isr
        .iter()
        .copied()
        .filter(|r| replicas.contains(r))
        .collect();
    if isr.is_empty() {
        return Err(format!(
            "replicas {target:?} would leave partition without an in-sync replica (ISR {:?})",
            p.isr
        ));
    }
    p.adding = target
        .iter()
        .copied()
        .filter(|r| !original.contains(r))
        .collect();
    p.removing = original
        .iter()
        .copied()
        .filter(|r| !target.contains(r))
        .collect();
    p.replicas = replicas;
    p.isr = isr;
    if !p.replicas.contains(&p.leader) {
        // The leader was a replica being added by the reassignment this one replaces.
        p.leader = 0;
        election::reelect(p, &live, false);
        if p.leader != before.leader && p.leader_epoch == before.leader_epoch {
            p.leader_epoch = p.leader_epoch.wrapping_add(1);
        }
    }
    if *p != before {
        p.partition_epoch = before.partition_epoch.wrapping_add(1);
    }
    if !complete(p, &live) {
        // A reorder names a new preferred replica: it leads if it can (as after an ISR change).
        election::prefer(p, &live);
    }
    p.check()?;
    Ok(*p != before)
}

/// Completes a reassignment once every replica of its target is in the ISR: the removed
/// replicas go, and leadership moves if the leader was one of them (to the first in-sync,
/// live replica of the target, in a new epoch), then to the preferred replica if it can lead.
/// Returns whether it completed.
pub fn complete(p: &mut PartitionMeta, live: impl Fn(u32) -> bool) -> bool {
    if !p.reassigning() {
        return false;
    }
    let target = p.target();
    if !target.iter().all(|r| p.isr.contains(r)) {
        return false;
    }
    let leader = p.leader;
    p.isr.retain(|r| target.contains(r));
    p.replicas = target;
    p.adding.clear();
    p.removing.clear();
    if !p.replicas.contains(&p.leader) || !live(p.leader) {
        p.leader = p
            .replicas
            .iter()
            .copied()
            .find(|r| p.isr.contains(r) && live(*r))
            .unwrap_or(0);
    }
    if p.leader != leader {
        p.leader_epoch = p.leader_epoch.wrapping_add(1);
    }
    p.partition_epoch = p.partition_epoch.wrapping_add(1);
    election::prefer(p, live);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(replicas: &[u32], leader: u32, isr: &[u32]) -> PartitionMeta {
        PartitionMeta {
            leader,
            isr: isr.to_vec(),
            leader_epoch: 5,
            partition_epoch: 9,
            ..PartitionMeta::new(replicas.to_vec())
        }
    }

    /// (case, before, target, replicas, adding, removing, ISR, leader, leader epoch) after start.
    #[test]
    fn starting_a_reassignment_table() {
        type Case<'a> = (
            &'a str,
            PartitionMeta,
            &'a [u32],
            &'a [u32],
            &'a [u32],
            &'a [u32],
            &'a [u32],
            u32,
            u32,
        );
        let live = |_| true;
        let cases: &[Case] = &[
            (
                "move a follower: the new one is added, the old kept until it is in sync",
                part(&[1, 2], 1, &[1, 2]),
                &[1, 3],
                &[1, 3, 2],
                &[3],
                &[2],
                &[1, 2],
                1,
                5,
            ),
            (
                "move the leader away: it leads until the target is in sync",
                part(&[1, 2], 1, &[1, 2]),
                &[3, 2],
                &[3, 2, 1],
                &[3],
                &[1],
                &[1, 2],
                1,
                5,
            ),
            (
                "shrink within the ISR completes at once; the leader moves",
                part(&[1, 2, 3], 1, &[1, 2, 3]),
                &[2, 3],
                &[2, 3],
                &[],
                &[],
                &[2, 3],
                2,
                6,
            ),
            (
                "reorder completes at once; the new preferred replica leads",
                part(&[1, 2, 3], 1, &[1, 2, 3]),
                &[3, 1, 2],
                &[3, 1, 2],
                &[],
                &[],
                &[1, 2, 3],
                3,
                6,
            ),
            (
                "shrink to an out-of-sync replica waits for it",
                part(&[1, 2, 3], 1, &[1, 2]),
                &[1, 3],
                &[1, 3, 2],
                &[],
                &[2],
                &[1, 2],
                1,
                5,
            ),
            (
                "grow: RF 2 to 3 (and the preferred replica, in sync, leads)",
                part(&[1, 2], 2, &[1, 2]),
                &[1, 2, 3],
                &[1, 2, 3],
                &[3],
                &[],
                &[1, 2],
                1,
                6,
            ),
        ];
        for (name, before, target, replicas, adding, removing, isr, leader, epoch) in cases {
            let mut p = before.clone();
            let changed = start(&mut p, target, live).unwrap();
            assert!(changed, "{name}");
            assert_eq!(
                (
                    &p.replicas[..],
                    &p.adding[..],
                    &p.removing[..],
                    &p.isr[..],
                    p.leader,
                    p.leader_epoch
                ),
                (*replicas, *adding, *removing, *isr, *leader, *epoch),
                "{name}"
            );
            assert!(p.partition_epoch > before.partition_epoch, "{name}");
            p.check().unwrap();
        }
    }

    #[test]
    fn a_reassignment_completes_when_the_target_is_in_sync() {
        let live = |_| true;
        let mut p = part(&[1, 2], 1, &[1, 2]);
        start(&mut p, &[3, 2], live).unwrap();
        assert!(!complete(&mut p, live), "3 is not in sync yet");
        // The leader adds 3 to the ISR once it has caught up.
        p.isr = vec![1, 2, 3];
        let epoch = p.partition_epoch;
        assert!(complete(&mut p, live));
        assert_eq!(
            (&p.replicas[..], &p.isr[..], p.leader, p.leader_epoch),
            (&[3, 2][..], &[2, 3][..], 3, 6)
        );
        assert!(!p.reassigning());
        assert!(p.partition_epoch > epoch);
        assert!(!complete(&mut p, live), "nothing left to complete");
    }

    #[test]
    fn a_removed_leader_gives_way_to_a_live_target_replica() {
        let mut p = part(&[1, 2], 1, &[1, 2]);
        start(&mut p, &[3, 2], |_| true).unwrap();
        p.isr = vec![1, 2, 3];
        // 3, the preferred replica, is fenced as the reassignment completes: 2 leads.
        assert!(complete(&mut p, |b| b != 3));
        assert_eq!((p.leader, p.leader_epoch), (2, 6));
    }

    #[test]
    fn a_new_target_replaces_one_under_way() {
        let live = |_| true;
        let mut p = part(&[1, 2], 1, &[1, 2]);
        start(&mut p, &[1, 3], live).unwrap();
        assert_eq!(&p.replicas[..], &[1, 3, 2]);
        // Change of mind before 3 caught up: 4 instead; 3 is dropped, 2 still removed.
        start(&mut p, &[1, 4], live).unwrap();
        assert_eq!(
            (&p.replicas[..], &p.adding[..], &p.removing[..]),
            (&[1, 4, 2][..], &[4][..], &[2][..])
        );
        // Back to where it was: completes at once.
        start(&mut p, &[1, 2], live).unwrap();
        assert_eq!(
            (&p.replicas[..], p.reassigning(), &p.isr[..]),
            (&[1, 2][..], false, &[1, 2][..])
        );
    }

    #[test]
    fn a_target_that_leaves_no_replica_in_sync_is_refused() {
        // 3 is being added and is the only one in sync (1 and 2 fell out): dropping it is refused.
        let mut p = part(&[1, 2], 1, &[1, 2]);
        start(&mut p, &[3, 2], |_| true).unwrap();
        p.isr = vec![3];
        p.leader = 3;
        let before = p.clone();
        assert!(start(&mut p, &[1, 2], |_| true).is_err());
        assert_eq!(
            p, before,
            "unchanged on error (the state machine applies to a copy)"
        );
    }
}
