//! The fault suite (issue 25), first room: the history a run records and the checker that
//! judges it. A history is every operation a workload invoked with its outcome (acknowledged,
//! refused, unknown), every record consumers read and every offset committed; the final state is
//! what every replica of every partition holds when the run ends. [`checker::check`] compares
//! them and names each anomaly: acknowledged records lost, duplicated or reordered, offsets
//! given twice or skipped, reads that vanished, replicas that disagree, commits that went back.
//!
//! The runner (brokers in network namespaces, the nemesis, the workloads) builds on this and
//! lives beside it; the checker stays pure so that any history can be replayed and checked
//! again without brokers.

pub mod checker;
pub mod history;

pub use checker::{check, Anomaly, CheckConfig, Kind, Report};
pub use history::{
    Acks, FinalState, History, Micros, Op, Operation, Outcome, ReplicaLog, Stored, Tp, Written,
};
