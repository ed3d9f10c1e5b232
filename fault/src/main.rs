//! `streamfault`: runs the fault suite against real `streamd` processes and checks the history.
//!
//! ```text
//! streamfault --duration 60s --seed 1 --seed 2          # bounded runs (CI)
//! streamfault --duration 30m --seed 0x5eed              # a long run by hand
//! streamfault --check target/fault/seed-0x1             # check a recorded run again
//! ```
//!
//! Each run prints one line ("12,408 acknowledged, 0 lost, 0 duplicated, 0 reordered across 57
//! faults of 6 kinds, seed 0x..."), and leaves report.json (every anomaly with the history around
//! it) and run.png in `<out>/seed-<seed>/`, with history.json and final.json when something was
//! wrong or `--keep-history` asks. The exit status is
//! 1 when any run found an anomaly or a broker failed outside the checker's view.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use quiver_fault::nemesis::FaultKind;
use quiver_fault::run::{run_one, RunSpec};

#[derive(Parser, Debug)]
#[command(
    name = "streamfault",
    about = "Quiver's fault suite: faults injected into real brokers while workloads run, and a checker of every acknowledgement"
)]
struct Args {
    /// How long each run's workload runs (e.g. 90s, 30m).
    #[arg(long, default_value = "60s", value_parser = quiver_tools::parse_duration)]
    duration: Duration,
    /// Seeds of the fault schedules, one run each (decimal or 0x hex); a random one if none.
    #[arg(long = "seed", value_parser = parse_seed)]
    seeds: Vec<u64>,
    /// Fault kinds to draw from, comma-separated (default: all the machine supports).
    #[arg(long, value_delimiter = ',')]
    faults: Vec<FaultKind>,
    /// Partitions of the workload's topic.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Records per second of each of the three producers.
    #[arg(long, default_value_t = 500)]
    rate: u32,
    /// Consumer group members.
    #[arg(long, default_value_t = 2)]
    consumers: u32,
    /// Where runs leave their files.
    #[arg(long, default_value = "target/fault")]
    out: PathBuf,
    /// The streamd binary (default: beside this one).
    #[arg(long)]
    streamd: Option<PathBuf>,
    /// Run on loopback without network namespaces (fewer faults).
    #[arg(long)]
    no_netns: bool,
    /// Fail a run in which no produce is acknowledged for longer than this (e.g. 60s); without
    /// it the longest such stall is reported only.
    #[arg(long, value_parser = quiver_tools::parse_duration)]
    max_stall: Option<Duration>,
    /// Keep history.json and final.json of runs that found nothing (kept anyway otherwise).
    #[arg(long)]
    keep_history: bool,
    /// Check a recorded run's directory again instead of running.
    #[arg(long)]
    check: Option<PathBuf>,
}

fn parse_seed(s: &str) -> Result<u64, String> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    }
    .map_err(|_| format!("not a seed: {s:?}"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(dir) = &args.check {
        return match quiver_fault::recheck(dir) {
            Ok(report) => {
                println!("{}", report.line(0, 0, 0));
                for a in &report.anomalies {
                    println!("  {:?} {}", a.kind, a.detail);
                }
                if report.is_valid() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("streamfault: {e}");
                ExitCode::from(2)
            }
        };
    }
    let streamd = args.streamd.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("streamd")))
            .unwrap_or_else(|| PathBuf::from("streamd"))
    });
    let seeds = if args.seeds.is_empty() {
        vec![rand::random::<u32>() as u64]
    } else {
        args.seeds.clone()
    };
    let faults = if args.faults.is_empty() {
        FaultKind::ALL.to_vec()
    } else {
        args.faults.clone()
    };
    let mut all_ok = true;
    for seed in seeds {
        let spec = RunSpec {
            seed,
            duration: args.duration,
            faults: faults.clone(),
            partitions: args.partitions,
            rate: args.rate,
            consumers: args.consumers,
            streamd: streamd.clone(),
            out: args.out.clone(),
            netns: !args.no_netns,
            keep_history: args.keep_history,
            max_stall: args.max_stall,
        };
        println!("streamfault: seed {seed:#x}, {:?}", args.duration);
        // Each run in its own thread: it moves the thread into the lab's client namespace.
        let result = std::thread::spawn(move || run_one(&spec))
            .join()
            .unwrap_or_else(|_| Err("the run panicked".into()));
        match result {
            Ok(r) => {
                for s in &r.skipped {
                    println!("  note: {s}");
                }
                println!("{}", r.line);
                if let Some((gap, from, to)) = r.longest_stall {
                    println!(
                        "  longest time without an acknowledgement: {gap:.1} s ({from:.1} s to {to:.1} s)"
                    );
                }
                for a in r.report.anomalies.iter().take(20) {
                    println!("  ANOMALY {:?} {}", a.kind, a.detail);
                }
                for p in &r.problems {
                    println!("  PROBLEM {p}");
                }
                println!("  files: {}", r.dir.display());
                all_ok &= r.ok();
            }
            Err(e) => {
                println!("  run failed: {e}");
                all_ok = false;
            }
        }
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
