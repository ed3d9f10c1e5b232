//! One run: the lab, the brokers, the workloads and the nemesis for one seed, then the final read
//! and the check. Everything it starts it stops, and it leaves its files in its directory.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quiver_client::{Admin, NewTopic};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::brokers::BrokerProc;
use crate::checker::{check, CheckConfig, Report};
use crate::disk::LoopDisk;
use crate::final_read::read_all;
use crate::history::{Acks, FinalState, History};
use crate::lab::Lab;
use crate::nemesis::{schedule, Fault, FaultKind};
use crate::plot::{draw, Span};
use crate::relay::{Impairment, Relay, RelayStats};
use crate::workload::{
    run_committed_reader, run_member, run_producer, ProducerSpec, Reach, Recorder,
};

/// What a run is asked to do.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// The seed of the fault schedule (and of the relay's coin flips).
    pub seed: u64,
    /// How long the workload runs.
    pub duration: Duration,
    /// The fault kinds to draw from.
    pub faults: Vec<FaultKind>,
    /// Partitions of the topic.
    pub partitions: u32,
    /// Records per second per producer.
    pub rate: u32,
    /// Consumer group members.
    pub consumers: u32,
    /// The streamd binary.
    pub streamd: PathBuf,
    /// Where the run's files go (a directory per seed below it).
    pub out: PathBuf,
    /// Use network namespaces when the machine allows.
    pub netns: bool,
    /// A stall (no acknowledged produce) longer than this is a problem (availability, which the
    /// checker does not judge); `None`: reported only.
    pub max_stall: Option<Duration>,
    /// Write history.json and final.json even when nothing is wrong (they are always written
    /// when something is; a long run's history is large).
    pub keep_history: bool,
}

/// What a run found.
#[derive(Serialize)]
pub struct RunResult {
    /// The seed.
    pub seed: u64,
    /// The report line.
    pub line: String,
    /// The checker's report.
    pub report: Report,
    /// Failures outside the checker's view (a broker that died on its own or would not start).
    pub problems: Vec<String>,
    /// Faults the machine could not make.
    pub skipped: Vec<String>,
    /// The faults as they happened.
    pub faults: Vec<Span>,
    /// What the relay did.
    pub relay: RelayCounts,
    /// The longest time without an acknowledged produce, from the first acknowledgement to the
    /// end of the workload: (seconds, from, to).
    pub longest_stall: Option<(f64, f64, f64)>,
    /// Where the files are.
    #[serde(skip)]
    pub dir: PathBuf,
}

/// [`RelayStats`] for the report.
#[derive(Serialize, Default)]
pub struct RelayCounts {
    datagrams: u64,
    dropped: u64,
    duplicated: u64,
    delayed: u64,
}

impl From<RelayStats> for RelayCounts {
    fn from(s: RelayStats) -> Self {
        RelayCounts {
            datagrams: s.datagrams,
            dropped: s.dropped,
            duplicated: s.duplicated,
            delayed: s.delayed,
        }
    }
}

impl RunResult {
    /// Whether the run found nothing wrong.
    pub fn ok(&self) -> bool {
        self.report.is_valid() && self.problems.is_empty()
    }
}

const TOPIC: &str = "quiver-fault";

/// Runs one seed. Call from a thread without an async runtime: it makes its own after moving
/// into the clients' namespace.
pub fn run_one(spec: &RunSpec) -> Result<RunResult, String> {
    let dir = spec.out.join(format!("seed-{:#x}", spec.seed));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // Absolute, so that the paths in the broker's sync journal match the ones walked here.
    let dir = std::fs::canonicalize(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let lab = Lab::new(1, spec.netns);
    let mut skipped = lab.limits.clone();
    let mut kinds = spec.faults.clone();
    if !lab.nft {
        let cut: Vec<String> = kinds
            .iter()
            .filter(|k| k.needs_nft())
            .map(|k| k.name().to_string())
            .collect();
        if !cut.is_empty() {
            skipped.push(format!(
                "skipped {}: they need namespaces and nftables",
                cut.join(", ")
            ));
        }
        kinds.retain(|k| !k.needs_nft());
    }
    if spec.consumers == 0 {
        kinds.retain(|k| *k != FaultKind::KillConsumer);
    }
    let port = free_port(&lab)?;
    let mut broker = BrokerProc::new(&lab, 1, port, &spec.streamd, &dir);
    let disk = if kinds.contains(&FaultKind::DiskFull) {
        match LoopDisk::new(&dir.join("broker-1.img"), &broker.data_dir, 1 << 30) {
            Ok(d) => Some(d),
            Err(e) => {
                skipped.push(format!(
                    "skipped disk-full: no loop-mounted filesystem ({e})"
                ));
                kinds.retain(|k| *k != FaultKind::DiskFull);
                None
            }
        }
    } else {
        None
    };
    let faults = schedule(spec.seed, spec.duration, &kinds, 1, spec.consumers);
    broker.start(&lab)?;
    lab.enter_client_ns()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let broker = Arc::new(Mutex::new(broker));
    let lab = Arc::new(lab);
    let disk = Arc::new(disk);
    let result = runtime.block_on(drive(
        spec,
        &dir,
        lab.clone(),
        broker.clone(),
        disk.clone(),
        faults,
        skipped,
    ));
    drop(runtime);
    broker.lock().expect("broker lock").stop();
    drop(broker);
    drop(disk); // unmounted once the broker is gone
    drop(lab); // the namespaces go last
    result
}

fn free_port(lab: &Lab) -> Result<u16, String> {
    if lab.netns {
        return Ok(9092);
    }
    // Loopback: a port free on both the broker's and the relay's address.
    for _ in 0..20 {
        let s = std::net::UdpSocket::bind((lab.broker_ip(1), 0)).map_err(|e| e.to_string())?;
        let port = s.local_addr().map_err(|e| e.to_string())?.port();
        if std::net::UdpSocket::bind((lab.relay_ip(), port)).is_ok() {
            return Ok(port);
        }
    }
    Err("no free UDP port on 127.0.0.1 and 127.0.0.2".into())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    spec: &RunSpec,
    dir: &Path,
    lab: Arc<Lab>,
    broker: Arc<Mutex<BrokerProc>>,
    disk: Arc<Option<LoopDisk>>,
    faults: Vec<Fault>,
    skipped: Vec<String>,
) -> Result<RunResult, String> {
    let (listen, advertised, ca) = {
        let b = broker.lock().expect("broker lock");
        (b.listen, b.advertised, b.data_dir.join("tls/ca.pem"))
    };
    let relay = Relay::start(advertised, listen, spec.seed)
        .await
        .map_err(|e| format!("relay on {advertised}: {e}"))?;
    let reach = Reach {
        bootstrap: relay.addr.to_string(),
        ca,
    };
    let admin_client = reach
        .connect(Duration::from_secs(30))
        .await
        .map_err(|e| format!("connecting through the relay: {e}"))?;
    Admin::new(admin_client.clone())
        .create_topic(NewTopic::new(TOPIC, spec.partitions))
        .await
        .map_err(|e| format!("creating {TOPIC}: {e}"))?;
    admin_client.close().await;

    let start = Instant::now();
    let rec = Arc::new(Recorder::new(start));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut producers = Vec::new();
    for spec_p in [
        ProducerSpec {
            process: 0,
            acks: Acks::All,
            rate: spec.rate,
        },
        ProducerSpec {
            process: 1,
            acks: Acks::All,
            rate: spec.rate,
        },
        ProducerSpec {
            process: 2,
            acks: Acks::Leader,
            rate: spec.rate,
        },
    ] {
        producers.push(tokio::spawn(run_producer(
            spec_p,
            reach.clone(),
            TOPIC.into(),
            spec.partitions,
            rec.clone(),
            stop_rx.clone(),
        )));
    }
    let mut members = Vec::new();
    let mut kill_txs = Vec::new();
    for i in 0..spec.consumers {
        let (tx, rx) = mpsc::unbounded_channel();
        kill_txs.push(tx);
        members.push(tokio::spawn(run_member(
            10 + i,
            reach.clone(),
            TOPIC.into(),
            rec.clone(),
            stop_rx.clone(),
            rx,
        )));
    }
    let reader = tokio::spawn(run_committed_reader(
        100,
        reach.clone(),
        TOPIC.into(),
        spec.partitions,
        rec.clone(),
        Duration::from_millis(500),
        stop_rx.clone(),
    ));

    // The nemesis, in this task.
    let mut spans = Vec::new();
    let mut problems = Vec::new();
    for f in &faults {
        tokio::time::sleep_until((start + f.at).into()).await;
        let from = start.elapsed().as_secs_f64();
        if let Err(e) = apply(f, &lab, &broker, &disk, &relay, &kill_txs).await {
            problems.push(format!("fault {} at {:.1}s: {e}", f.kind, from));
        }
        spans.push(Span {
            kind: f.kind,
            target: f.target,
            from,
            to: start.elapsed().as_secs_f64(),
        });
        println!(
            "  {:>6.1}s {:<13} {:>5.1}s{}",
            from,
            f.kind.name(),
            f.length.as_secs_f64(),
            if f.amount > 0 {
                format!(" ({})", f.amount)
            } else {
                String::new()
            }
        );
    }
    tokio::time::sleep_until((start + spec.duration).into()).await;
    let _ = stop_tx.send(true);
    for p in producers {
        match tokio::time::timeout(Duration::from_secs(120), p).await {
            Ok(Ok(Err(e))) => problems.push(format!("a producer could not start: {e}")),
            Err(_) => problems.push("a producer did not finish within 120 s of the stop".into()),
            _ => {}
        }
    }
    for m in members {
        let _ = tokio::time::timeout(Duration::from_secs(30), m).await;
    }
    let _ = reader.await;
    let history = rec.history();

    // The broker must still be up: it never stops on its own.
    let alive = blocking({
        let broker = broker.clone();
        move || broker.lock().expect("broker lock").alive()
    })
    .await;
    if !alive {
        let tail = broker.lock().expect("broker lock").log_tail(30);
        problems.push(format!("broker 1 exited on its own; log tail:\n{tail}"));
        let b = broker.clone();
        let lab2 = lab.clone();
        if let Err(e) = blocking(move || b.lock().expect("broker lock").start(&lab2)).await {
            problems.push(e);
        }
    }
    if broker.lock().expect("broker lock").log_has_panic() {
        problems.push("broker 1 logged a panic".into());
    }

    let state = match reach.connect(Duration::from_secs(30)).await {
        Ok(c) => {
            let s = read_all(&c, 1, TOPIC, spec.partitions, Duration::from_secs(120)).await;
            c.close().await;
            s.unwrap_or_else(|e| {
                problems.push(format!("final read: {e}"));
                FinalState::default()
            })
        }
        Err(e) => {
            problems.push(format!("final read: cannot connect: {e}"));
            FinalState::default()
        }
    };
    // One broker: leadership never moves, so acks=1 must hold as acks=all does.
    let report = check(
        &history,
        &state,
        CheckConfig {
            acks1_may_be_lost: false,
        },
    );
    let mut kinds: Vec<FaultKind> = spans.iter().map(|s| s.kind).collect();
    kinds.sort();
    kinds.dedup();
    let line = report.line(spans.len(), kinds.len(), spec.seed);
    let longest_stall = longest_stall(&history, spec.duration.as_secs_f64());
    if let (Some(max), Some((gap, from, to))) = (spec.max_stall, longest_stall) {
        if gap > max.as_secs_f64() {
            problems.push(format!(
                "no produce was acknowledged for {gap:.1} s ({from:.1} s to {to:.1} s), more than --max-stall {} s",
                max.as_secs_f64()
            ));
        }
    }
    let result = RunResult {
        seed: spec.seed,
        line,
        report,
        problems,
        skipped,
        faults: spans,
        relay: relay.stats().into(),
        longest_stall,
        dir: dir.to_path_buf(),
    };
    let keep = spec.keep_history || !result.ok();
    write_files(
        dir,
        keep,
        &history,
        &state,
        &result,
        spec.duration.as_secs_f64(),
    )?;
    Ok(result)
}

/// The longest gap between acknowledged produces (by completion), from the first one to the end
/// of the workload at `end_s`: (seconds, from, to).
pub fn longest_stall(history: &History, end_s: f64) -> Option<(f64, f64, f64)> {
    let mut done: Vec<f64> = history
        .ops
        .iter()
        .filter(|o| matches!(o.op, crate::history::Op::Produce { .. }) && o.ok())
        .filter_map(|o| o.completed)
        .map(|us| us as f64 / 1e6)
        .collect();
    done.sort_by(f64::total_cmp);
    let first = *done.first()?;
    let mut best = (0.0, first, first);
    let mut prev = first;
    for t in done.iter().copied().chain([end_s.max(first)]) {
        if t - prev > best.0 {
            best = (t - prev, prev, t);
        }
        prev = t;
    }
    Some(best)
}

async fn apply(
    f: &Fault,
    lab: &Arc<Lab>,
    broker: &Arc<Mutex<BrokerProc>>,
    disk: &Arc<Option<LoopDisk>>,
    relay: &Relay,
    kill_txs: &[mpsc::UnboundedSender<Duration>],
) -> Result<(), String> {
    let b = broker.clone();
    match f.kind {
        FaultKind::Kill => {
            blocking(move || b.lock().expect("broker lock").kill9()).await;
            tokio::time::sleep(f.length).await;
            let b = broker.clone();
            let lab = lab.clone();
            blocking(move || b.lock().expect("broker lock").start(&lab)).await
        }
        FaultKind::PowerLoss => {
            let cut = blocking(move || {
                let mut b = b.lock().expect("broker lock");
                b.kill9();
                b.lose_unsynced_writes()
            })
            .await?;
            println!(
                "           power-loss cut {} bytes from {} segments",
                cut.1, cut.0
            );
            tokio::time::sleep(f.length).await;
            let b = broker.clone();
            let lab = lab.clone();
            blocking(move || b.lock().expect("broker lock").start(&lab)).await
        }
        FaultKind::Pause => {
            blocking(move || b.lock().expect("broker lock").pause()).await;
            tokio::time::sleep(f.length).await;
            let b = broker.clone();
            blocking(move || b.lock().expect("broker lock").resume()).await;
            Ok(())
        }
        FaultKind::Partition | FaultKind::Loss => {
            let rule = f
                .filter_rule(&[lab.client_ip(), lab.relay_ip()])
                .expect("a filter fault");
            let (l, t) = (lab.clone(), f.target);
            blocking(move || l.set_broker_filter(t, &[rule])).await?;
            tokio::time::sleep(f.length).await;
            let l = lab.clone();
            blocking(move || l.set_broker_filter(t, &[])).await
        }
        FaultKind::Delay | FaultKind::Duplicate | FaultKind::Reorder => {
            relay.set(f.impairment().expect("a relay fault"));
            tokio::time::sleep(f.length).await;
            relay.set(Impairment::default());
            Ok(())
        }
        FaultKind::DiskFull => {
            let d = disk.clone();
            let filled = blocking(move || d.as_ref().as_ref().map(LoopDisk::fill)).await;
            tokio::time::sleep(f.length).await;
            let d = disk.clone();
            blocking(move || {
                if let Some(d) = d.as_ref() {
                    d.free();
                }
            })
            .await;
            filled.unwrap_or(Err("no disk".into())).map(|_| ())
        }
        FaultKind::KillConsumer => {
            if let Some(tx) = kill_txs.get(f.target as usize) {
                let _ = tx.send(f.length);
            }
            tokio::time::sleep(f.length).await;
            Ok(())
        }
    }
}

fn write_files(
    dir: &Path,
    keep: bool,
    history: &History,
    state: &FinalState,
    result: &RunResult,
    duration_s: f64,
) -> Result<(), String> {
    let write = |name: &str, bytes: Vec<u8>| {
        std::fs::write(dir.join(name), bytes).map_err(|e| format!("{name}: {e}"))
    };
    if keep {
        write(
            "history.json",
            serde_json::to_vec(history).map_err(|e| e.to_string())?,
        )?;
        write(
            "final.json",
            serde_json::to_vec(state).map_err(|e| e.to_string())?,
        )?;
    }
    // Each anomaly with the history around it (100 ms either side).
    let context: Vec<serde_json::Value> = result
        .report
        .anomalies
        .iter()
        .take(100)
        .map(|a| {
            serde_json::json!({
                "anomaly": a,
                "around": history.around(&a.ops, 100_000),
            })
        })
        .collect();
    let report = serde_json::json!({ "run": result, "anomalies_with_history": context });
    write(
        "report.json",
        serde_json::to_vec_pretty(&report).map_err(|e| e.to_string())?,
    )?;
    draw(
        &dir.join("run.png"),
        &result.line,
        history,
        &result.faults,
        duration_s,
    )
}

#[cfg(test)]
mod tests {
    use super::longest_stall;
    use crate::history::{Acks, History, Op, Operation, Outcome, Tp, Written};

    fn acked(id: u64, done_s: f64, ok: bool) -> Operation {
        Operation {
            id,
            process: 0,
            invoked: 0,
            completed: Some((done_s * 1e6) as u64),
            op: Op::Produce {
                tp: Tp::new("t", 0),
                written: Written {
                    producer: 0,
                    seq: id,
                },
                acks: Acks::All,
            },
            outcome: if ok {
                Outcome::Ok {
                    offset: Some(id as i64),
                }
            } else {
                Outcome::Unknown("timed out".into())
            },
        }
    }

    #[test]
    fn the_longest_stall_is_between_acknowledgements_or_to_the_end() {
        let h = History {
            ops: vec![
                acked(0, 1.0, true),
                acked(1, 2.0, true),
                acked(2, 20.0, false),
                acked(3, 12.0, true),
            ],
        };
        assert_eq!(longest_stall(&h, 15.0), Some((10.0, 2.0, 12.0)));
        assert_eq!(longest_stall(&h, 30.0), Some((18.0, 12.0, 30.0)));
        assert_eq!(longest_stall(&History::default(), 30.0), None);
    }
}
