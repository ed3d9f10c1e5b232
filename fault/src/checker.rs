//! The checker: compares what was acknowledged, read and committed (the [`History`]) with what
//! every replica holds at the end ([`FinalState`]). Pure: no brokers, no clocks, no I/O.
//!
//! For each partition the replica with the highest high watermark (the first listed, on a tie)
//! is the log of record; records
//! below its high watermark are the ones consumers could see. Against it:
//! - an acknowledged produce (acks=1 or all) must be there, once, at the offset it was
//!   acknowledged with (`Lost`, `AckedNotVisible`, `OffsetMismatch`, `OffsetReused`);
//! - every record there must have been produced (`Phantom`), not refused (`FailedButWritten`),
//!   be the workload's (`Foreign`), appear once (`Duplicated`), follow its producer's order
//!   (`Reordered`), and offsets run without holes from the log start (`Gap`);
//! - a record a consumer read must still be at the offset it was read from (`ReadVanished`);
//! - every other replica must agree with it below both high watermarks (`ReplicasDisagree`).
//!
//! For each group and partition, acknowledged commits never go back in real-time order
//! (`CommitWentBack`), and a committed offset read after a commit was acknowledged is at least
//! that commit's (`CommittedReadWentBack`).
//!
//! A produce whose outcome is unknown (a timeout) may be present or absent, never twice. acks=0
//! promises nothing. acks=1 promises durability on the leader only: with
//! [`CheckConfig::acks1_may_be_lost`] (set when leadership moved during the run) its loss is
//! allowed, its duplication and reordering never.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::history::{Acks, FinalState, History, Micros, Op, Operation, Outcome, Tp, Written};

/// What the run allows.
#[derive(Clone, Copy, Debug, Default)]
pub struct CheckConfig {
    /// acks=1 records may be lost (leadership moved during the run).
    pub acks1_may_be_lost: bool,
}

/// The kinds of anomaly the checker reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    /// An acknowledged record is not in the log.
    Lost,
    /// An acknowledged record is in the log only above the high watermark (never visible).
    AckedNotVisible,
    /// A record is in the log more than once.
    Duplicated,
    /// A producer's records are in the log out of the order it sent them.
    Reordered,
    /// An acknowledged record is at another offset than it was acknowledged with.
    OffsetMismatch,
    /// Two acknowledged records were given the same offset.
    OffsetReused,
    /// The log's offsets skip one, or do not start at the log start.
    Gap,
    /// A record in the log that no one produced.
    Phantom,
    /// A record the broker refused (a definite failure) is in the log.
    FailedButWritten,
    /// A record in the log whose value is not the workload's.
    Foreign,
    /// A record a consumer read is not at that offset at the end.
    ReadVanished,
    /// Two replicas hold different records below both high watermarks.
    ReplicasDisagree,
    /// A partition whose replicas could not be read at the end: nothing about it is checked.
    Unchecked,
    /// An acknowledged commit lower than one acknowledged before it was invoked.
    CommitWentBack,
    /// A committed-offset read lower than a commit acknowledged before it was invoked.
    CommittedReadWentBack,
}

/// One anomaly, with the operations that show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    /// What is wrong.
    pub kind: Kind,
    /// Where.
    pub tp: Option<Tp>,
    /// In words, with the offsets and records involved.
    pub detail: String,
    /// The operations involved (history ids).
    pub ops: Vec<u64>,
}

/// What the checker found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Produces acknowledged with acks=1 or acks=all.
    pub acknowledged: u64,
    /// Produces whose outcome is unknown.
    pub unknown: u64,
    /// Produces that definitely failed.
    pub failed: u64,
    /// Records consumers read.
    pub reads: u64,
    /// Commits acknowledged.
    pub commits: u64,
    /// Every anomaly.
    pub anomalies: Vec<Anomaly>,
}

impl Report {
    /// How many anomalies of `kind`.
    pub fn count(&self, kind: Kind) -> usize {
        self.anomalies.iter().filter(|a| a.kind == kind).count()
    }

    /// Anomalies by kind.
    pub fn by_kind(&self) -> BTreeMap<Kind, usize> {
        let mut m = BTreeMap::new();
        for a in &self.anomalies {
            *m.entry(a.kind).or_default() += 1;
        }
        m
    }

    /// Whether nothing is wrong.
    pub fn is_valid(&self) -> bool {
        self.anomalies.is_empty()
    }

    /// The report line: "12,408 acknowledged, 0 lost, 0 duplicated, 0 reordered across 57
    /// faults of 6 kinds, seed 0x2a", then every other kind of anomaly found.
    pub fn line(&self, faults: usize, fault_kinds: usize, seed: u64) -> String {
        let mut s = format!(
            "{} acknowledged, {} lost, {} duplicated, {} reordered across {} faults of {} kinds, seed {:#x}",
            thousands(self.acknowledged),
            self.count(Kind::Lost),
            self.count(Kind::Duplicated),
            self.count(Kind::Reordered),
            faults,
            fault_kinds,
            seed
        );
        let others: Vec<String> = self
            .by_kind()
            .into_iter()
            .filter(|(k, _)| !matches!(k, Kind::Lost | Kind::Duplicated | Kind::Reordered))
            .map(|(k, n)| format!("{n} {k:?}"))
            .collect();
        if !others.is_empty() {
            s.push_str("; also ");
            s.push_str(&others.join(", "));
        }
        s
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Checks `history` against `state`.
pub fn check(history: &History, state: &FinalState, config: CheckConfig) -> Report {
    let mut report = Report::default();
    let mut produces: BTreeMap<&Tp, Vec<&Operation>> = BTreeMap::new();
    let mut reads: BTreeMap<&Tp, Vec<&Operation>> = BTreeMap::new();
    let mut commits: BTreeMap<(&str, &Tp), Vec<&Operation>> = BTreeMap::new();
    for op in &history.ops {
        match &op.op {
            Op::Produce { tp, acks, .. } => {
                match (&op.outcome, acks) {
                    (Outcome::Ok { .. }, Acks::Leader | Acks::All) => report.acknowledged += 1,
                    (Outcome::Ok { .. }, Acks::None) => {}
                    (Outcome::Fail(_), _) => report.failed += 1,
                    (Outcome::Unknown(_), _) => report.unknown += 1,
                }
                produces.entry(tp).or_default().push(op);
            }
            Op::Read { tp, .. } => {
                report.reads += 1;
                reads.entry(tp).or_default().push(op);
            }
            Op::Commit { group, tp, .. } | Op::FetchCommitted { group, tp } => {
                if matches!(op.op, Op::Commit { .. }) && op.ok() {
                    report.commits += 1;
                }
                commits.entry((group, tp)).or_default().push(op);
            }
        }
    }
    let mut tps: Vec<&Tp> = produces.keys().chain(reads.keys()).copied().collect();
    tps.extend(state.partitions.keys());
    tps.sort();
    tps.dedup();
    for tp in tps {
        check_partition(
            tp,
            produces.get(tp).map(Vec::as_slice).unwrap_or(&[]),
            reads.get(tp).map(Vec::as_slice).unwrap_or(&[]),
            state,
            config,
            &mut report.anomalies,
        );
    }
    for ((_, tp), ops) in commits {
        check_commits(tp, &ops, &mut report.anomalies);
    }
    report
}

fn anomaly(kind: Kind, tp: &Tp, detail: String, ops: Vec<u64>) -> Anomaly {
    Anomaly {
        kind,
        tp: Some(tp.clone()),
        detail,
        ops,
    }
}

fn check_partition(
    tp: &Tp,
    produces: &[&Operation],
    reads: &[&Operation],
    state: &FinalState,
    config: CheckConfig,
    out: &mut Vec<Anomaly>,
) {
    let replicas = state.partitions.get(tp).map(Vec::as_slice).unwrap_or(&[]);
    // The first replica with the highest high watermark (runners list the leader first).
    let highest = replicas.iter().map(|r| r.high_watermark).max();
    let Some(main) = replicas.iter().find(|r| Some(r.high_watermark) == highest) else {
        out.push(anomaly(
            Kind::Unchecked,
            tp,
            "no replica of the partition was read at the end".into(),
            Vec::new(),
        ));
        return;
    };
    let visible: Vec<_> = main
        .records
        .iter()
        .filter(|r| r.offset < main.high_watermark)
        .collect();

    // Offsets run from the log start without holes.
    let mut expect = main.log_start;
    for r in &visible {
        if r.offset != expect {
            out.push(anomaly(
                Kind::Gap,
                tp,
                format!(
                    "broker {}: offset {} follows {} (log start {}, high watermark {})",
                    main.broker,
                    r.offset,
                    expect - 1,
                    main.log_start,
                    main.high_watermark
                ),
                Vec::new(),
            ));
        }
        expect = r.offset + 1;
    }
    if expect < main.high_watermark && !visible.is_empty() {
        out.push(anomaly(
            Kind::Gap,
            tp,
            format!(
                "broker {}: records end at {} below the high watermark {}",
                main.broker,
                expect - 1,
                main.high_watermark
            ),
            Vec::new(),
        ));
    }

    // Where each record is; what is at each offset.
    let mut positions: HashMap<Written, Vec<i64>> = HashMap::new();
    let at: HashMap<i64, Option<Written>> =
        main.records.iter().map(|r| (r.offset, r.written)).collect();
    for r in &visible {
        match r.written {
            Some(w) => positions.entry(w).or_default().push(r.offset),
            None => out.push(anomaly(
                Kind::Foreign,
                tp,
                format!(
                    "offset {} holds a value that is not the workload's",
                    r.offset
                ),
                Vec::new(),
            )),
        }
    }
    let produced: HashMap<Written, &Operation> = produces
        .iter()
        .filter_map(|op| match &op.op {
            Op::Produce { written, .. } => Some((*written, *op)),
            _ => None,
        })
        .collect();

    let mut dups: Vec<(&Written, &Vec<i64>)> =
        positions.iter().filter(|(_, o)| o.len() > 1).collect();
    dups.sort();
    for (w, offsets) in dups {
        out.push(anomaly(
            Kind::Duplicated,
            tp,
            format!("{w} is at offsets {offsets:?}"),
            produced.get(w).map(|o| vec![o.id]).unwrap_or_default(),
        ));
    }

    // Each producer's records in the order it sent them.
    let mut last: HashMap<u32, (u64, i64)> = HashMap::new();
    for r in &visible {
        let Some(w) = r.written else { continue };
        if positions[&w][0] != r.offset {
            continue; // a second copy: reported as duplicated
        }
        if let Some(&(seq, offset)) = last.get(&w.producer) {
            if w.seq < seq {
                out.push(anomaly(
                    Kind::Reordered,
                    tp,
                    format!(
                        "{w} at offset {} comes after p{}#{seq} at offset {offset}",
                        r.offset, w.producer
                    ),
                    [produced.get(&w), produced.get(&Written { seq, ..w })]
                        .into_iter()
                        .flatten()
                        .map(|o| o.id)
                        .collect(),
                ));
            }
        }
        let e = last.entry(w.producer).or_insert((w.seq, r.offset));
        if w.seq >= e.0 {
            *e = (w.seq, r.offset);
        }
    }

    // Every record was produced, and not refused.
    let mut phantoms: Vec<(&Written, i64)> = positions
        .iter()
        .filter(|(w, _)| !produced.contains_key(w))
        .map(|(w, o)| (w, o[0]))
        .collect();
    phantoms.sort();
    for (w, offset) in phantoms {
        out.push(anomaly(
            Kind::Phantom,
            tp,
            format!("{w} at offset {offset} was never produced"),
            Vec::new(),
        ));
    }

    // Every acknowledged record, once, where it was acknowledged.
    let mut acked_at: HashMap<i64, &Operation> = HashMap::new();
    for op in produces {
        let Op::Produce { written, acks, .. } = &op.op else {
            continue;
        };
        let found = positions.get(written).map(|o| o[0]);
        match &op.outcome {
            Outcome::Fail(why) => {
                if let Some(offset) = found {
                    out.push(anomaly(
                        Kind::FailedButWritten,
                        tp,
                        format!("{written} was refused ({why}) but is at offset {offset}"),
                        vec![op.id],
                    ));
                }
            }
            Outcome::Unknown(_) => {}
            Outcome::Ok { offset } => {
                if *acks == Acks::None {
                    continue;
                }
                if let Some(o) = offset {
                    if *o < main.log_start {
                        continue; // deleted by retention
                    }
                    if let Some(other) = acked_at.insert(*o, op) {
                        out.push(anomaly(
                            Kind::OffsetReused,
                            tp,
                            format!(
                                "offset {o} was acknowledged for {written} and for another record"
                            ),
                            vec![other.id, op.id],
                        ));
                    }
                }
                let may_be_lost = *acks == Acks::Leader && config.acks1_may_be_lost;
                match (found, offset) {
                    (Some(p), Some(o)) if p != *o => out.push(anomaly(
                        Kind::OffsetMismatch,
                        tp,
                        format!("{written} was acknowledged at offset {o} but is at {p}"),
                        vec![op.id],
                    )),
                    (Some(_), _) => {}
                    (None, _) if may_be_lost => {}
                    (None, o) => {
                        let above = main
                            .records
                            .iter()
                            .find(|r| r.written == Some(*written))
                            .map(|r| r.offset);
                        let (kind, detail) = match above {
                            Some(p) => (
                                Kind::AckedNotVisible,
                                format!(
                                    "{written} (acknowledged at {o:?}) is at {p}, above the high watermark {}",
                                    main.high_watermark
                                ),
                            ),
                            None => (
                                Kind::Lost,
                                format!("{written} was acknowledged at offset {o:?} and is gone"),
                            ),
                        };
                        out.push(anomaly(kind, tp, detail, vec![op.id]));
                    }
                }
            }
        }
    }

    // What consumers read stays where they read it.
    for op in reads {
        let Op::Read {
            offset, written, ..
        } = &op.op
        else {
            continue;
        };
        if *offset < main.log_start {
            continue;
        }
        let now = if *offset < main.high_watermark {
            at.get(offset).copied()
        } else {
            None
        };
        if now != Some(*written) {
            let show =
                |w: Option<Written>| w.map_or("a foreign value".to_string(), |w| w.to_string());
            out.push(anomaly(
                Kind::ReadVanished,
                tp,
                format!(
                    "{} was read at offset {offset}; at the end the log holds {}",
                    show(*written),
                    now.map_or("nothing visible there".to_string(), show)
                ),
                vec![op.id],
            ));
        }
    }

    // Replicas agree below both high watermarks.
    for r in replicas {
        if std::ptr::eq(r, main) {
            continue;
        }
        let from = r.log_start.max(main.log_start);
        let to = r.high_watermark.min(main.high_watermark);
        let theirs: HashMap<i64, Option<Written>> =
            r.records.iter().map(|s| (s.offset, s.written)).collect();
        if let Some(offset) =
            (from..to).find(|o| theirs.get(o).copied().flatten() != at.get(o).copied().flatten())
        {
            out.push(anomaly(
                Kind::ReplicasDisagree,
                tp,
                format!(
                    "broker {} and broker {} differ at offset {offset} (below both high watermarks, {to})",
                    main.broker, r.broker
                ),
                Vec::new(),
            ));
        }
    }
}

fn check_commits(tp: &Tp, ops: &[&Operation], out: &mut Vec<Anomaly>) {
    // Acknowledged commits by completion time: (completed, offset, id).
    let mut acked: Vec<(Micros, i64, u64)> = ops
        .iter()
        .filter(|o| o.ok())
        .filter_map(|o| match (&o.op, o.completed) {
            (Op::Commit { offset, .. }, Some(done)) => Some((done, *offset, o.id)),
            _ => None,
        })
        .collect();
    acked.sort();
    // For an operation invoked at t: the highest commit acknowledged before t.
    let highest_before = |t: Micros| -> Option<(i64, u64)> {
        acked
            .iter()
            .take_while(|(done, _, _)| *done < t)
            .map(|(_, offset, id)| (*offset, *id))
            .max_by_key(|(offset, _)| *offset)
    };
    for op in ops {
        match &op.op {
            Op::Commit { offset, group, .. } if op.ok() => {
                if let Some((high, id)) = highest_before(op.invoked) {
                    if *offset < high {
                        out.push(anomaly(
                            Kind::CommitWentBack,
                            tp,
                            format!(
                                "group {group} committed {offset} after {high} was acknowledged"
                            ),
                            vec![id, op.id],
                        ));
                    }
                }
            }
            Op::FetchCommitted { group, .. } if op.ok() => {
                let read = op.ok_offset().unwrap_or(-1);
                if let Some((high, id)) = highest_before(op.invoked) {
                    if read < high {
                        out.push(anomaly(
                            Kind::CommittedReadWentBack,
                            tp,
                            format!(
                                "group {group}'s committed offset read as {read} after {high} was acknowledged"
                            ),
                            vec![id, op.id],
                        ));
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
