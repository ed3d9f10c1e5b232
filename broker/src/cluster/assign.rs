//! Where new partitions' replicas go in a cluster: a pure function of the live brokers (with
//! their racks), the replication factor, and a starting point the caller draws at random.
//!
//! The shape is Kafka's: brokers are ordered so that neighbours sit in different racks; a
//! partition's leader is the broker at `(start + p) mod n`, so one topic's leaders spread
//! evenly and many topics' leaders balance; its followers are the next brokers after the
//! leader, shifted by one more for each round of `n` partitions, so followers spread too. When
//! every broker names a rack, followers go first to racks the partition does not use yet, so a
//! partition spans `min(rf, racks)` racks. Racks named by some brokers and not others are
//! ignored (placement then only spreads over brokers), as a half-configured rack map cannot be
//! trusted to name failure domains.

use std::collections::{BTreeMap, BTreeSet};

/// A broker placement may use: its id and rack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placeable {
    pub id: u32,
    pub rack: Option<String>,
}

/// Replicas for partitions `first..first + count`, each `rf` brokers long, the leader first.
/// Errors when `rf` is 0 or more than the brokers given.
pub fn assign(
    brokers: &[Placeable],
    rf: usize,
    first: u32,
    count: u32,
    start: u64,
) -> Result<Vec<Vec<u32>>, String> {
    let n = brokers.len();
    if rf == 0 {
        return Err("replication factor must be at least 1".into());
    }
    if rf > n {
        let ids: Vec<String> = brokers.iter().map(|b| b.id.to_string()).collect();
        return Err(format!(
            "replication factor {rf} needs {rf} live brokers; {n} {} registered and unfenced ({})",
            if n == 1 { "is" } else { "are" },
            if ids.is_empty() {
                "none".to_string()
            } else {
                ids.join(", ")
            }
        ));
    }
    let ordered = rack_alternating(brokers);
    let racks: BTreeSet<&str> = ordered.iter().filter_map(|b| b.rack.as_deref()).collect();
    let rack_aware = ordered.iter().all(|b| b.rack.is_some());
    let out = (first..first + count)
        .map(|p| {
            let k = start.wrapping_add(u64::from(p));
            let leader = (k % n as u64) as usize;
            let mut chosen = vec![leader];
            if n > 1 {
                let shift = ((k / n as u64) % (n as u64 - 1)) as usize;
                let followers: Vec<usize> = (0..n - 1)
                    .map(|j| (leader + 1 + (shift + j) % (n - 1)) % n)
                    .collect();
                let mut used: BTreeSet<&str> = BTreeSet::new();
                used.extend(ordered[leader].rack.as_deref());
                if rack_aware {
                    for &f in &followers {
                        if chosen.len() == rf || used.len() == racks.len() {
                            break;
                        }
                        let rack = ordered[f].rack.as_deref().unwrap_or_default();
                        if used.insert(rack) {
                            chosen.push(f);
                        }
                    }
                }
                for &f in &followers {
                    if chosen.len() == rf {
                        break;
                    }
                    if !chosen.contains(&f) {
                        chosen.push(f);
                    }
                }
            }
            chosen.into_iter().map(|i| ordered[i].id).collect()
        })
        .collect();
    Ok(out)
}

/// The brokers in an order where neighbours are in different racks (when every broker names
/// one): the first broker of each rack (racks by name, brokers by id), then the second of
/// each, and so on. Without racks: by id.
fn rack_alternating(brokers: &[Placeable]) -> Vec<Placeable> {
    let mut sorted = brokers.to_vec();
    sorted.sort_by_key(|b| b.id);
    sorted.dedup_by_key(|b| b.id);
    if !sorted.iter().all(|b| b.rack.is_some()) {
        return sorted;
    }
    let mut by_rack: BTreeMap<&str, Vec<&Placeable>> = BTreeMap::new();
    for b in &sorted {
        by_rack
            .entry(b.rack.as_deref().unwrap_or_default())
            .or_default()
            .push(b);
    }
    let deepest = by_rack.values().map(Vec::len).max().unwrap_or(0);
    let mut out = Vec::with_capacity(sorted.len());
    for i in 0..deepest {
        for members in by_rack.values() {
            if let Some(b) = members.get(i) {
                out.push((*b).clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn brokers(racks: &[Option<&str>]) -> Vec<Placeable> {
        racks
            .iter()
            .enumerate()
            .map(|(i, r)| Placeable {
                id: i as u32 + 1,
                rack: r.map(str::to_string),
            })
            .collect()
    }

    #[test]
    fn table() {
        let three = brokers(&[None, None, None]);
        // (brokers, rf, first, count, start, expected)
        type Case<'a> = (&'a [Placeable], usize, u32, u32, u64, Vec<Vec<u32>>);
        let cases: Vec<Case> = vec![
            (&three, 1, 0, 3, 0, vec![vec![1], vec![2], vec![3]]),
            (&three, 1, 0, 3, 1, vec![vec![2], vec![3], vec![1]]),
            (
                &three,
                3,
                0,
                3,
                0,
                vec![vec![1, 2, 3], vec![2, 3, 1], vec![3, 1, 2]],
            ),
            // The second round of partitions shifts followers by one.
            (&three, 2, 3, 3, 0, vec![vec![1, 3], vec![2, 1], vec![3, 2]]),
            // `first` continues a topic where it stopped.
            (&three, 2, 1, 1, 0, vec![vec![2, 3]]),
        ];
        for (b, rf, first, count, start, want) in cases {
            assert_eq!(
                assign(b, rf, first, count, start).unwrap(),
                want,
                "rf {rf} first {first} start {start}"
            );
        }
    }

    #[test]
    fn refusals_name_the_brokers_there_are() {
        let two = brokers(&[None, None]);
        let e = assign(&two, 3, 0, 1, 0).unwrap_err();
        assert!(
            e.contains("needs 3 live brokers; 2 are") && e.contains("1, 2"),
            "{e}"
        );
        assert!(assign(&two, 0, 0, 1, 0).is_err());
        let e = assign(&[], 1, 0, 1, 0).unwrap_err();
        assert!(e.contains("(none)"), "{e}");
    }

    #[test]
    fn racks_alternate_and_a_partition_spans_racks() {
        // Brokers 1, 2 in rack a; 3, 4 in rack b; 5, 6 in rack c.
        let b = brokers(&[
            Some("a"),
            Some("a"),
            Some("b"),
            Some("b"),
            Some("c"),
            Some("c"),
        ]);
        let order: Vec<u32> = rack_alternating(&b).iter().map(|b| b.id).collect();
        assert_eq!(order, vec![1, 3, 5, 2, 4, 6]);
        let rack = |id: u32| b[id as usize - 1].rack.clone().unwrap();
        for start in 0..12 {
            for r in assign(&b, 3, 0, 30, start).unwrap() {
                let racks: BTreeSet<String> = r.iter().map(|&id| rack(id)).collect();
                assert_eq!(racks.len(), 3, "{r:?} spans every rack");
            }
        }
        // A half-configured rack map is ignored: plain order by id.
        let half = brokers(&[Some("a"), None, Some("b")]);
        let ids: Vec<u32> = rack_alternating(&half).iter().map(|b| b.id).collect();
        assert_eq!(ids, vec![1, 2, 3]);
    }

    proptest! {
        #[test]
        fn every_partition_gets_distinct_live_replicas_and_leaders_balance(
            n in 1usize..8,
            rf_seed in 0usize..8,
            first in 0u32..50,
            count in 1u32..200,
            start in 0u64..1 << 40,
            racked in any::<bool>(),
        ) {
            let rf = rf_seed % n + 1;
            let racks: Vec<Option<&str>> = (0..n)
                .map(|i| racked.then_some(["x", "y", "z"][i % 3]))
                .collect();
            let b = brokers(&racks);
            let placed = assign(&b, rf, first, count, start).unwrap();
            prop_assert_eq!(placed.len(), count as usize);
            let mut leaders = vec![0u32; n + 1];
            for r in &placed {
                prop_assert_eq!(r.len(), rf);
                let distinct: BTreeSet<u32> = r.iter().copied().collect();
                prop_assert_eq!(distinct.len(), rf);
                prop_assert!(r.iter().all(|&id| id >= 1 && id as usize <= n));
                leaders[r[0] as usize] += 1;
            }
            let (lo, hi) = (
                leaders[1..].iter().min().unwrap(),
                leaders[1..].iter().max().unwrap(),
            );
            prop_assert!(hi - lo <= 1, "leaders {:?}", leaders);
        }

        #[test]
        fn replicas_balance_over_whole_rounds(n in 2usize..7, rf_seed in 0usize..7, rounds in 1u32..4, start in 0u64..1 << 40) {
            let rf = rf_seed % n + 1;
            let b = brokers(&vec![None; n]);
            // n * (n - 1) partitions give every (leader, shift) pair once per round.
            let count = (n * (n - 1)) as u32 * rounds;
            let aligned = start - start % (n * (n - 1)) as u64;
            let placed = assign(&b, rf, 0, count, aligned).unwrap();
            let mut held = vec![0u32; n + 1];
            for r in &placed {
                for &id in r {
                    held[id as usize] += 1;
                }
            }
            let first = held[1];
            prop_assert!(held[1..].iter().all(|&h| h == first), "held {:?}", held);
        }
    }
}
