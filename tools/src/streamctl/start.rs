//! Where `consume` starts and, with `--until-end`, where it stops: each partition's retained
//! range, read once when consume starts; what `--from` means within it; and the warning when
//! an asked offset is not there.

use std::collections::BTreeMap;

use quiver_client::{Admin, Client, Consumer, Offset, OffsetSpec, TopicPartition};

use crate::from::{StartAt, EPOCH_MS_LOOKALIKE_MIN};
use crate::CliResult;

/// A partition's retained offsets when consume started: `[start, end)`, `end` being the high
/// watermark (the next offset to be written).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub start: Offset,
    pub end: Offset,
}

impl Range {
    /// Nothing to read up to `end`: the partition was empty.
    pub fn is_empty(self) -> bool {
        self.end <= self.start
    }
}

/// Each partition's range, now (two ListOffsets rounds).
pub async fn ranges(
    client: &Client,
    tps: &[TopicPartition],
) -> CliResult<BTreeMap<TopicPartition, Range>> {
    let admin = Admin::new(client.clone());
    let ask = |spec: OffsetSpec| -> Vec<(TopicPartition, OffsetSpec)> {
        tps.iter().map(|tp| (tp.clone(), spec)).collect()
    };
    let e = |e: quiver_client::Error| e.to_string();
    let starts = admin
        .list_offsets(&ask(OffsetSpec::Earliest))
        .await
        .map_err(e)?;
    let ends: BTreeMap<TopicPartition, Option<Offset>> = admin
        .list_offsets(&ask(OffsetSpec::Latest))
        .await
        .map_err(e)?
        .into_iter()
        .collect();
    starts
        .into_iter()
        .map(|(tp, start)| {
            let end = ends.get(&tp).copied().flatten();
            match (start, end) {
                (Some(start), Some(end)) => Ok((tp, Range { start, end })),
                _ => Err(format!(
                    "{tp}: the broker gave no offsets (no leader?); try again"
                )),
            }
        })
        .collect()
}

/// Where `--from` (other than a time) puts one partition, and the warning to print when the
/// asked offset is out of its range: then the oldest record, as the reset policy says.
pub fn place(tp: &TopicPartition, from: StartAt, range: Range) -> (Offset, Option<String>) {
    match from {
        StartAt::Beginning => (range.start, None),
        StartAt::End => (range.end, None),
        StartAt::Tail(n) => (
            Offset(range.end.0.saturating_sub(n).max(range.start.0)),
            None,
        ),
        StartAt::Offset(o) if (range.start.0..=range.end.0).contains(&o) => (Offset(o), None),
        StartAt::Offset(o) => (range.start, Some(out_of_range(tp, o, range))),
        StartAt::Time(_) => unreachable!("times are placed by the broker (offsets for time)"),
    }
}

fn out_of_range(tp: &TopicPartition, asked: u64, range: Range) -> String {
    let holds = if range.is_empty() {
        format!("holds no records (its next offset is {})", range.end)
    } else {
        format!("holds offsets {} to {}", range.start, range.end.0 - 1)
    };
    let hint = if asked >= EPOCH_MS_LOOKALIKE_MIN {
        format!(" (to start from a time in milliseconds, write --from @{asked})")
    } else {
        String::new()
    };
    format!(
        "streamctl: warning: partition {} of {} {holds}: offset {asked} is out of range; \
         reading from {}, the oldest record, instead{hint}",
        tp.partition.0, tp.topic, range.start
    )
}

/// Seeks every partition as `from` says (times through the broker's offsets for time) and
/// prints a warning for each asked offset that is out of range.
pub async fn seek_all(
    consumer: &mut Consumer,
    from: StartAt,
    ranges: &BTreeMap<TopicPartition, Range>,
) -> CliResult {
    let tps: Vec<TopicPartition> = ranges.keys().cloned().collect();
    if let StartAt::Time(t) = from {
        return consumer
            .seek_to_timestamp(&tps, t)
            .await
            .map_err(|e| e.to_string());
    }
    for (tp, range) in ranges {
        let (offset, warning) = place(tp, from, *range);
        if let Some(w) = warning {
            eprintln!("{w}");
        }
        consumer.seek(tp, offset).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_places_each_partition_within_its_range() {
        let r = |start, end| Range {
            start: Offset(start),
            end: Offset(end),
        };
        // (from, range, offset, warned)
        let cases: &[(StartAt, Range, u64, bool)] = &[
            (StartAt::Beginning, r(5, 10), 5, false),
            (StartAt::End, r(5, 10), 10, false),
            (StartAt::Offset(7), r(5, 10), 7, false),
            (StartAt::Offset(5), r(5, 10), 5, false),
            // The end is a position too: the next record written.
            (StartAt::Offset(10), r(5, 10), 10, false),
            (StartAt::Offset(11), r(5, 10), 5, true),
            (StartAt::Offset(4), r(5, 10), 5, true),
            (StartAt::Offset(2000), r(0, 0), 0, true),
            (StartAt::Tail(3), r(5, 10), 7, false),
            (StartAt::Tail(5), r(5, 10), 5, false),
            (StartAt::Tail(50), r(5, 10), 5, false),
            (StartAt::Tail(0), r(5, 10), 10, false),
            (StartAt::Tail(3), r(0, 0), 0, false),
        ];
        let tp = TopicPartition::new("orders", 3);
        for (from, range, offset, warned) in cases {
            let (o, w) = place(&tp, *from, *range);
            assert_eq!(
                (o.0, w.is_some()),
                (*offset, *warned),
                "{from:?} in {range:?}"
            );
        }
    }

    #[test]
    fn the_warning_names_partition_offset_range_and_what_is_used() {
        let tp = TopicPartition::new("orders", 3);
        let range = Range {
            start: Offset(0),
            end: Offset(1000),
        };
        let (_, w) = place(&tp, StartAt::Offset(2000), range);
        assert_eq!(
            w.unwrap(),
            "streamctl: warning: partition 3 of orders holds offsets 0 to 999: offset 2000 is \
             out of range; reading from 0, the oldest record, instead"
        );
        let (_, w) = place(&tp, StartAt::Offset(1_700_000_000_000), range);
        assert!(w.unwrap().ends_with("write --from @1700000000000)"));
        let empty = Range {
            start: Offset(7),
            end: Offset(7),
        };
        let (_, w) = place(&tp, StartAt::Offset(9), empty);
        assert!(w
            .unwrap()
            .contains("holds no records (its next offset is 7)"));
    }
}
