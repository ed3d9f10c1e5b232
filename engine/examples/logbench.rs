//! Storage-engine benchmark (issue 2, acceptance 5).
//!
//! Appends 1 KiB records in batches of 1000 with the default durable policy (fdatasync before each
//! append resolves), from several concurrent appenders on one executor, as a broker shard does
//! when many producers write to one partition: their appends share group commits. Then reads the
//! log back sequentially. Runs `dd ... oflag=direct` in the same directory first, as the baseline.
//!
//! ```text
//! cargo run --release -p quiver-engine --example logbench -- --dir /path/on/the/disk
//!     [--gib 1] [--appenders 4] [--records 1000] [--record-bytes 1024] [--rounds 3] [--keep]
//! ```
//!
//! The disk here is noisy (dd alone varies by a third from run to run), so each round measures
//! dd and then the engine back to back, and the medians of the rounds are reported beside every
//! round's figures. The sequential read runs once, on the last round's log.

use quiver_engine::{init_io_probe, LogConfig, PartitionLog};
use quiver_proto::batch::{BatchBuilder, BatchIter, BatchLimits, Compression, ValidBatch};
use quiver_proto::{Offset, TimestampMs};
use std::cell::Cell;
use std::path::PathBuf;
use std::process::Command;
use std::rc::Rc;
use std::time::Instant;

struct Args {
    dir: PathBuf,
    gib: u64,
    appenders: usize,
    records: u32,
    record_bytes: usize,
    rounds: usize,
    keep: bool,
}

fn args() -> Args {
    let mut a = Args {
        dir: PathBuf::from("."),
        gib: 1,
        appenders: 4,
        records: 1000,
        record_bytes: 1024,
        rounds: 3,
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().expect("missing value");
        match k.as_str() {
            "--dir" => a.dir = PathBuf::from(v()),
            "--gib" => a.gib = v().parse().expect("--gib N"),
            "--appenders" => a.appenders = v().parse().expect("--appenders N"),
            "--records" => a.records = v().parse().expect("--records N"),
            "--record-bytes" => a.record_bytes = v().parse().expect("--record-bytes N"),
            "--rounds" => a.rounds = v().parse().expect("--rounds N"),
            "--keep" => a.keep = true,
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn mbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

fn dd_baseline(dir: &std::path::Path, gib: u64) -> f64 {
    let file = dir.join("dd-baseline.tmp");
    let t = Instant::now();
    let out = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", file.display()))
        .arg("bs=1M")
        .arg(format!("count={}", 1024 * gib))
        .arg("oflag=direct")
        .output()
        .expect("run dd");
    let secs = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "dd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(&file);
    let line = String::from_utf8_lossy(&out.stderr);
    println!("dd: {}", line.lines().last().unwrap_or("").trim());
    mbps(gib << 30, secs)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let a = args();
    std::fs::create_dir_all(&a.dir).unwrap();
    let (mut dds, mut appends) = (Vec::new(), Vec::new());
    let mut read_mbps = 0.0;
    for round in 0..a.rounds {
        let dd = dd_baseline(&a.dir, a.gib);
        let last = round + 1 == a.rounds;
        let (append, read) = engine_round(&a, last);
        println!(
            "round {}: dd {dd:.0} MB/s, durable append {append:.0} MB/s ({:.0}% of dd)",
            round + 1,
            100.0 * append / dd
        );
        dds.push(dd);
        appends.push(append);
        if let Some(r) = read {
            read_mbps = r;
        }
    }
    let (dd, append) = (median(dds), median(appends));
    println!(
        "RESULT median of {} rounds: durable append {append:.0} MB/s = {:.0}% of dd oflag=direct {dd:.0} MB/s; \
         sequential read {read_mbps:.0} MB/s",
        a.rounds,
        100.0 * append / dd
    );
}

/// One engine round: appends to a fresh log; on the last round also reads it all back.
fn engine_round(a: &Args, read_back: bool) -> (f64, Option<f64>) {
    let log_dir = a.dir.join("logbench-partition");
    let _ = std::fs::remove_dir_all(&log_dir);
    let (gib, appenders, records, record_bytes, keep) = (
        a.gib,
        a.appenders,
        a.records,
        a.record_bytes,
        a.keep && read_back,
    );
    let probe_dir = a.dir.clone();
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            init_io_probe(&probe_dir).await.unwrap();
            let mut b = BatchBuilder::new(Compression::None);
            let value = vec![0xabu8; record_bytes];
            for i in 0..records {
                b.append(
                    TimestampMs(1_700_000_000_000 + i as i64),
                    None,
                    Some(&value),
                    &[],
                )
                .unwrap();
            }
            let batch = ValidBatch::new(b.finish().unwrap(), BatchLimits::default()).unwrap();
            let total_batches = (gib << 30).div_ceil(batch.len() as u64);
            let log = Rc::new(
                PartitionLog::open(&log_dir, LogConfig::default())
                    .await
                    .unwrap(),
            );
            let issued = Rc::new(Cell::new(0u64));
            let t = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..appenders {
                let (log, issued, batch) = (log.clone(), issued.clone(), batch.clone());
                tasks.push(glommio::spawn_local(async move {
                    let batches = [batch];
                    while issued.get() < total_batches {
                        issued.set(issued.get() + 1);
                        log.append(&batches, None).await.unwrap();
                    }
                }));
            }
            for t in tasks {
                t.await;
            }
            let secs = t.elapsed().as_secs_f64();
            let bytes = log.size_bytes();
            assert_eq!(log.durable_end(), log.end_offset());
            let append = mbps(bytes, secs);
            println!(
                "append: {} batches of {records} x {record_bytes} B, {appenders} appenders, \
                 durable (fdatasync before ack): {bytes} bytes in {secs:.2} s = {append:.0} MB/s",
                issued.get()
            );
            if !read_back {
                log.delete().await.unwrap();
                return (append, None);
            }
            // Sequential read of everything, 1 MiB per read, CRC-checked by the engine.
            let t = Instant::now();
            let mut next = 0u64;
            let mut read = 0u64;
            let end = log.end_offset().0;
            while next < end {
                let bytes = log.read(Offset(next), 1 << 20).await.unwrap();
                read += bytes.len() as u64;
                let last = BatchIter::new(&bytes).last().unwrap().unwrap();
                let h = quiver_proto::batch::header(last).unwrap();
                next = h.base_offset.get() + u64::from(h.last_offset_delta.get()) + 1;
            }
            let secs = t.elapsed().as_secs_f64();
            let readm = mbps(read, secs);
            println!("read: {read} bytes sequentially in {secs:.2} s = {readm:.0} MB/s");
            log.close().await.unwrap();
            if !keep {
                log.delete().await.ok();
                let _ = std::fs::remove_dir_all(&log_dir);
            }
            (append, Some(readm))
        })
        .unwrap()
        .join()
        .unwrap()
}
