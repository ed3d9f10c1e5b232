//! The fault suite (issue 25): workloads whose every operation is recorded, faults injected into
//! real `streamd` processes while they run, and a checker that compares what was acknowledged
//! with what the brokers hold at the end.
//!
//! - `history.rs`: what a run records (every operation with its outcome: acknowledged, refused,
//!   unknown; records read; offsets committed) and what every replica holds at the end.
//! - `checker.rs`: a pure function from a history and a final state to a report of anomalies.
//! - `lab.rs`: brokers and clients in network namespaces joined by a bridge (or loopback).
//! - `relay.rs`: a UDP relay that delays, duplicates and reorders datagrams (no netem here).
//! - `disk.rs`: a loop-mounted ext4 per broker, for the disk-full fault.
//! - `brokers.rs`: the streamd processes (start, SIGKILL, SIGSTOP/SIGCONT, SIGTERM).
//! - `nemesis.rs`: the fault schedule drawn from a seed, and what each fault does.
//! - `workload.rs`: producers (acks=all and acks=1, idempotent), group members, a reader of
//!   committed offsets, all through the SDK, and the recorder.
//! - `final_read.rs`: every partition read from its log start to its high watermark.
//! - `plot.rs`: the run's picture, throughput and latency with faults as bands.
//! - `run.rs`: one run end to end; `main.rs`: the `streamfault` command.

pub mod brokers;
pub mod checker;
pub mod disk;
pub mod final_read;
pub mod history;
pub mod lab;
pub mod nemesis;
pub mod plot;
pub mod relay;
pub mod run;
pub mod workload;

pub use checker::{check, Anomaly, CheckConfig, Kind, Report};
pub use history::{
    Acks, FinalState, History, Micros, Op, Operation, Outcome, ReplicaLog, Stored, Tp, Written,
};

/// Checks a recorded run again from its directory (history.json and final.json). Runs with one
/// broker, where acks=1 may not be lost.
pub fn recheck(dir: &std::path::Path) -> Result<Report, String> {
    let read = |name: &str| -> Result<Vec<u8>, String> {
        std::fs::read(dir.join(name)).map_err(|e| format!("{}: {e}", dir.join(name).display()))
    };
    let history: History =
        serde_json::from_slice(&read("history.json")?).map_err(|e| format!("history.json: {e}"))?;
    let state: FinalState =
        serde_json::from_slice(&read("final.json")?).map_err(|e| format!("final.json: {e}"))?;
    Ok(check(&history, &state, CheckConfig::default()))
}
