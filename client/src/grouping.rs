//! Per-topic lists, the shape every request that names partitions has on the wire (produce,
//! fetch, list offsets, offset commit and fetch, group heartbeats), and their answers indexed.

use std::collections::HashMap;

use quiver_proto::PartitionId;

/// Groups `(topic, item)` pairs by topic and makes one entry of each group with `make(topic,
/// items)`: topics in the order they first appear, each topic's items in their order.
/// `[(a, 0), (b, 0), (a, 1)]` makes `[make(a, [0, 1]), make(b, [0])]`.
///
/// Topics are found by a linear search that starts with the last one seen: a request names
/// few topics, and its items usually come topic by topic.
pub(crate) fn by_topic<T: PartialEq, P, W>(
    items: impl IntoIterator<Item = (T, P)>,
    mut make: impl FnMut(T, Vec<P>) -> W,
) -> Vec<W> {
    let mut groups: Vec<(T, Vec<P>)> = Vec::new();
    for (topic, item) in items {
        let at = match groups.last() {
            Some((last, _)) if *last == topic => Some(groups.len() - 1),
            _ => groups.iter().position(|(t, _)| *t == topic),
        };
        match at {
            Some(i) => groups[i].1.push(item),
            None => groups.push((topic, vec![item])),
        }
    }
    groups
        .into_iter()
        .map(|(t, items)| make(t, items))
        .collect()
}

/// A response's per-topic lists indexed by (topic, partition), once: an answer may hold
/// 100,000 partitions, and a search through it for each partition asked would be quadratic.
/// `topics` gives each topic's name and partitions, `partition` each entry's number.
pub(crate) fn by_partition<'a, P>(
    topics: impl IntoIterator<Item = (&'a str, &'a [P])>,
    partition: impl Fn(&P) -> PartitionId,
) -> HashMap<(&'a str, PartitionId), &'a P> {
    topics
        .into_iter()
        .flat_map(|(name, parts)| parts.iter().map(move |p| (name, p)))
        .map(|(name, p)| ((name, partition(p)), p))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{by_partition, by_topic};
    use quiver_proto::PartitionId;

    #[test]
    fn answers_are_found_by_topic_and_partition() {
        let a = [(PartitionId(0), "a0"), (PartitionId(3), "a3")];
        let b = [(PartitionId(0), "b0")];
        let index = by_partition([("a", &a[..]), ("b", &b[..])], |p| p.0);
        assert_eq!(index.len(), 3);
        assert_eq!(index[&("a", PartitionId(3))].1, "a3");
        assert_eq!(index[&("b", PartitionId(0))].1, "b0");
        assert!(!index.contains_key(&("b", PartitionId(3))));
    }

    #[test]
    fn topics_keep_their_first_place_and_items_their_order() {
        let asked = [("a", 0), ("b", 0), ("a", 1), ("c", 5), ("b", 2), ("b", 1)];
        let topics = by_topic(asked, |t, ps| (t.to_string(), ps));
        assert_eq!(
            topics,
            vec![
                ("a".to_string(), vec![0, 1]),
                ("b".to_string(), vec![0, 2, 1]),
                ("c".to_string(), vec![5]),
            ]
        );
        let none: Vec<(String, Vec<u32>)> =
            by_topic(Vec::<(&str, u32)>::new(), |t, ps| (t.into(), ps));
        assert!(none.is_empty());
    }
}
