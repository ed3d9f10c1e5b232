//! Who leads a partition and who is in sync as brokers come and go, and the checks on an ISR
//! change a leader proposes. Pure functions of a `PartitionMeta` that the metadata state machine
//! applies in log order on every broker, so every broker elects the same leader at the same
//! entry (the state machine is the controller's one arbiter; nothing else writes a leader).
//!
//! The rules (Kafka's, with Quiver's stronger ISR: a member holds every acknowledged record
//! *durably*, since acks=all waits for each member's fdatasync):
//! - A broker that is fenced (its session lapsed, or it stopped) leaves every ISR, except that
//!   an ISR is never emptied: its last member stays, as the one replica known to hold every
//!   acknowledged record, and leads again when it returns.
//! - A partition whose leader is not live gets the first live ISR member in replica order (the
//!   preferred leader first); with none, no leader (0) until one returns, unless the topic sets
//!   `unclean.leader.election.enable`, which takes any live replica and may lose records.
//! - A broker that registers again (a restart: its unflushed tail is gone) is treated as having
//!   been fenced and then unfenced: its leaderships move, or, where it was the last ISR member,
//!   stay with a new epoch, so followers that copied a tail it lost truncate it (KIP-101).
//! - Every change of leader bumps the leader epoch; every change at all bumps the partition
//!   epoch, which an ISR change must name (optimistic concurrency, as KIP-497's AlterPartition).

use super::partition::PartitionMeta;

/// Topic config that allows electing a replica outside the ISR (and losing records).
pub const UNCLEAN_ELECTION: &str = "unclean.leader.election.enable";

/// Re-elects after a change of liveness (`live` says which brokers may hold a leadership).
/// Returns whether the partition changed (its partition epoch is then bumped).
pub fn reelect(p: &mut PartitionMeta, live: impl Fn(u32) -> bool, unclean: bool) -> bool {
    let before = p.clone();
    let alive: Vec<u32> = p.isr.iter().copied().filter(|b| live(*b)).collect();
    if !alive.is_empty() {
        p.isr = alive;
    } else if p.isr.len() > 1 {
        // Nobody in sync is live: keep one member, the leader if it is one.
        let last = if p.isr.contains(&p.leader) {
            p.leader
        } else {
            p.isr[0]
        };
        p.isr = vec![last];
    }
    let leads = p.leader != 0 && live(p.leader) && p.isr.contains(&p.leader);
    if !leads {
        let clean = p
            .replicas
            .iter()
            .copied()
            .find(|r| p.isr.contains(r) && live(*r));
        p.leader = match clean {
            Some(l) => l,
            None if unclean => match p.replicas.iter().copied().find(|r| live(*r)) {
                Some(l) => {
                    p.isr = vec![l];
                    l
                }
                None => 0,
            },
            None => 0,
        };
    }
    if p.leader != before.leader {
        p.leader_epoch = p.leader_epoch.wrapping_add(1);
    }
    let changed = *p != before;
    if changed {
        p.partition_epoch = p.partition_epoch.wrapping_add(1);
    }
    changed
}

/// After broker `id` registered again (restarted): its leaderships move as if it had been
/// fenced, then it counts as live again (it may take back a leadership nobody else could hold,
/// with a new epoch).
pub fn restarted(
    p: &mut PartitionMeta,
    id: u32,
    live: impl Fn(u32) -> bool,
    unclean: bool,
) -> bool {
    if !p.replicas.contains(&id) {
        return false;
    }
    let away = reelect(p, |b| b != id && live(b), unclean);
    let back = reelect(p, &live, unclean);
    away || back
}

/// Preferred-leader election: once the preferred replica (the first) is back in the ISR and
/// live, it leads again, in a new epoch (so leaderships return to where placement balanced them
/// after a broker comes back). Returns whether the leader changed.
pub fn prefer(p: &mut PartitionMeta, live: impl Fn(u32) -> bool) -> bool {
    let Some(&preferred) = p.replicas.first() else {
        return false;
    };
    if p.leader == preferred || !p.isr.contains(&preferred) || !live(preferred) {
        return false;
    }
    p.leader = preferred;
    p.leader_epoch = p.leader_epoch.wrapping_add(1);
    p.partition_epoch = p.partition_epoch.wrapping_add(1);
    true
}

/// What a leader may propose for its partition's ISR (`AlterIsr`): in the epochs it names, the
/// new ISR made of distinct replicas, the leader among them, and any member it adds live.
pub fn check_isr_change(
    p: &PartitionMeta,
    leader: u32,
    leader_epoch: u32,
    partition_epoch: u32,
    isr: &[u32],
    live: impl Fn(u32) -> bool,
) -> Result<(), IsrRefusal> {
    if p.leader != leader || p.leader_epoch != leader_epoch || p.partition_epoch != partition_epoch
    {
        return Err(IsrRefusal::Stale(format!(
            "proposed by broker {leader} in leader epoch {leader_epoch}, partition epoch \
             {partition_epoch}; now broker {} leads in leader epoch {}, partition epoch {}",
            p.leader, p.leader_epoch, p.partition_epoch
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    for b in isr {
        if !p.replicas.contains(b) || !seen.insert(*b) {
            return Err(IsrRefusal::Invalid(format!(
                "ISR {isr:?} names {b}, not a replica or named twice"
            )));
        }
        if !p.isr.contains(b) && !live(*b) {
            return Err(IsrRefusal::Invalid(format!(
                "broker {b} is fenced and cannot join the ISR"
            )));
        }
    }
    if !seen.contains(&leader) {
        return Err(IsrRefusal::Invalid(format!(
            "ISR {isr:?} leaves out its leader {leader}"
        )));
    }
    Ok(())
}

/// Why an ISR change is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum IsrRefusal {
    /// The leader's view is old: it refreshes and proposes again if still needed.
    Stale(String),
    Invalid(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(replicas: &[u32], leader: u32, isr: &[u32]) -> PartitionMeta {
        PartitionMeta {
            replicas: replicas.to_vec(),
            leader,
            leader_epoch: 5,
            isr: isr.to_vec(),
            partition_epoch: 9,
            adding: vec![],
            removing: vec![],
        }
    }

    /// (case, before, live brokers, unclean allowed, leader after, ISR after, leader epoch after)
    #[test]
    fn reelection_table() {
        type Case<'a> = (&'a str, PartitionMeta, &'a [u32], bool, u32, &'a [u32], u32);
        let cases: &[Case] = &[
            (
                "all live: nothing changes",
                part(&[1, 2, 3], 1, &[1, 2, 3]),
                &[1, 2, 3],
                false,
                1,
                &[1, 2, 3],
                5,
            ),
            (
                "a follower fenced leaves the ISR",
                part(&[1, 2, 3], 1, &[1, 2, 3]),
                &[1, 2],
                false,
                1,
                &[1, 2],
                5,
            ),
            (
                "the leader fenced: the next ISR member in replica order leads",
                part(&[1, 2, 3], 1, &[1, 3, 2]),
                &[2, 3],
                false,
                2,
                &[3, 2],
                6,
            ),
            (
                "a live replica out of sync is not elected",
                part(&[1, 2, 3], 1, &[1, 3]),
                &[2, 3],
                false,
                3,
                &[3],
                6,
            ),
            (
                "the last ISR member fenced: no leader, it stays in the ISR",
                part(&[1, 2, 3], 1, &[1]),
                &[2, 3],
                false,
                0,
                &[1],
                6,
            ),
            (
                "the last ISR member back: it leads again",
                part(&[1, 2, 3], 0, &[1]),
                &[1, 2, 3],
                false,
                1,
                &[1],
                6,
            ),
            (
                "unclean election takes a live replica out of sync",
                part(&[1, 2, 3], 1, &[1]),
                &[2, 3],
                true,
                2,
                &[2],
                6,
            ),
            (
                "nobody live: no leader, one member kept",
                part(&[1, 2], 1, &[1, 2]),
                &[],
                true,
                0,
                &[1],
                6,
            ),
        ];
        for (name, before, live, unclean, leader, isr, epoch) in cases {
            let mut p = before.clone();
            let changed = reelect(&mut p, |b| live.contains(&b), *unclean);
            assert_eq!(
                (p.leader, &p.isr[..], p.leader_epoch),
                (*leader, *isr, *epoch),
                "{name}"
            );
            assert_eq!(changed, p != *before, "{name}");
            let bumped = if changed {
                before.partition_epoch + 1
            } else {
                before.partition_epoch
            };
            assert_eq!(p.partition_epoch, bumped, "{name}: partition epoch");
            if p.leader != 0 {
                p.check().unwrap();
            }
        }
    }

    #[test]
    fn a_restarted_broker_gives_up_its_leaderships_or_takes_a_new_epoch() {
        let all = |_| true;
        let mut p = part(&[1, 2, 3], 1, &[1, 2, 3]);
        assert!(restarted(&mut p, 1, all, false));
        assert_eq!((p.leader, &p.isr[..], p.leader_epoch), (2, &[2, 3][..], 6));
        let mut alone = part(&[1, 2], 1, &[1]);
        assert!(restarted(&mut alone, 1, all, false));
        assert_eq!((alone.leader, &alone.isr[..]), (1, &[1][..]));
        assert!(
            alone.leader_epoch > 5,
            "a new epoch: followers truncate what it lost"
        );
        let mut other = part(&[2, 3], 2, &[2, 3]);
        assert!(!restarted(&mut other, 1, all, false), "not a replica");
    }

    #[test]
    fn the_preferred_replica_leads_again_once_back_in_sync() {
        let mut p = part(&[1, 2, 3], 2, &[2, 3]);
        assert!(!prefer(&mut p, |_| true), "not in sync yet");
        p.isr = vec![2, 3, 1];
        assert!(!prefer(&mut p, |b| b != 1), "not live");
        assert!(prefer(&mut p, |_| true));
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (1, 6, 10));
        assert!(!prefer(&mut p, |_| true), "already leads");
    }

    /// (case, leader, leader epoch, partition epoch, proposed ISR, refused how)
    #[test]
    fn isr_change_checks() {
        let p = part(&[1, 2, 3], 1, &[1, 2]);
        let live = |b| b != 3;
        type Case<'a> = (&'a str, u32, u32, u32, &'a [u32], Option<bool>);
        let cases: &[Case] = &[
            ("shrink", 1, 5, 9, &[1], None),
            ("expand to a live replica", 1, 5, 9, &[1, 2], None),
            ("another leader", 2, 5, 9, &[2], Some(true)),
            ("old leader epoch", 1, 4, 9, &[1], Some(true)),
            ("old partition epoch", 1, 5, 8, &[1], Some(true)),
            ("without the leader", 1, 5, 9, &[2], Some(false)),
            ("a stranger", 1, 5, 9, &[1, 4], Some(false)),
            ("twice", 1, 5, 9, &[1, 1], Some(false)),
            ("a fenced broker added", 1, 5, 9, &[1, 2, 3], Some(false)),
        ];
        for (name, leader, le, pe, isr, want) in cases {
            let got = check_isr_change(&p, *leader, *le, *pe, isr, live);
            let how = got.err().map(|e| matches!(e, IsrRefusal::Stale(_)));
            assert_eq!(how, *want, "{name}");
        }
    }
}
