//! Crash test (acceptance 2): a child process appends and syncs in a loop, printing each range it
//! saw become durable; the parent kills it with SIGKILL at random moments, reopens the log and
//! checks that every range reported durable reads back byte for byte, that offsets are dense from
//! the start and that no partial batch is visible. The child is this same test binary, re-run
//! with `CRASH_CHILD_DIR` set.
mod common;
use common::*;
use quiver_engine::{LogConfig, PartitionLog};
use quiver_proto::Offset;
use rand::{Rng, SeedableRng};
use std::io::Read;
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::Duration;

const ROUNDS: usize = 24;

fn config() -> LogConfig {
    // Small segments so that rolls happen under the knife too.
    LogConfig {
        segment_bytes: 256 * 1024,
        index_interval_bytes: 1024,
        ..LogConfig::default()
    }
}

/// The batch a child appends with `seed`: size and content follow from the seed, so the parent
/// can rebuild it.
fn seeded_batch(seed: u64) -> quiver_proto::batch::ValidBatch {
    batch(
        1 + (seed % 13) as u32,
        (seed as usize * 37) % 1500,
        seed,
        seed as i64,
    )
}

/// The child: never returns on its own; it is killed.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var("CRASH_CHILD_DIR") else {
        return;
    };
    let round: u64 = std::env::var("CRASH_CHILD_ROUND").unwrap().parse().unwrap();
    let dir = std::path::PathBuf::from(dir);
    let probe = dir.parent().unwrap().to_path_buf();
    run(&probe, move || async move {
        let log = Rc::new(PartitionLog::open(&dir, config()).await.unwrap());
        let mut tasks = Vec::new();
        for t in 0..4u64 {
            let log = log.clone();
            tasks.push(glommio::spawn_local(async move {
                for i in 0u64.. {
                    let seed = round << 40 | t << 32 | i;
                    let info = log.append(&[seeded_batch(seed)], None).await.unwrap();
                    // One line per durable append, written in one call.
                    println!(
                        "DURABLE {} {} {}",
                        info.base_offset.0, info.next_offset.0, seed
                    );
                }
            }));
        }
        for t in tasks {
            t.await;
        }
    });
}

#[test]
fn sigkill_never_loses_durable_appends() {
    if std::env::var("CRASH_CHILD_DIR").is_ok() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    let mut rng = rand::rngs::StdRng::seed_from_u64(
        std::env::var("CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5eed),
    );
    let exe = std::env::current_exe().unwrap();
    // Everything ever reported durable: (base, next, seed).
    let mut durable: Vec<(u64, u64, u64)> = Vec::new();
    let mut total_reported = 0;
    let mut seen = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env("CRASH_CHILD_DIR", &dir)
            .env("CRASH_CHILD_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.gen_range(30..400)));
        child.kill().unwrap(); // SIGKILL
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        child.wait().unwrap();
        // Only whole lines count: the kill may cut the last one.
        let complete = &out[..out.rfind('\n').map_or(0, |i| i + 1)];
        for line in complete.lines().filter(|l| l.starts_with("DURABLE ")) {
            let v: Vec<u64> = line[8..].split(' ').map(|x| x.parse().unwrap()).collect();
            durable.push((v[0], v[1], v[2]));
            total_reported += 1;
        }
        // The appends reported this round, and in the last round every one ever reported.
        let check = if round == ROUNDS - 1 {
            durable.clone()
        } else {
            durable[seen..].to_vec()
        };
        seen = durable.len();
        let d = dir.clone();
        run(tmp.path(), move || async move {
            let log = PartitionLog::open(&d, config()).await.unwrap();
            assert_eq!(log.start_offset(), Offset(0));
            let max_durable = check.iter().map(|c| c.1).max().unwrap_or(0);
            assert!(
                log.durable_end() == log.end_offset(),
                "recovered data is durable"
            );
            assert!(
                log.end_offset().0 >= max_durable,
                "lost durable data: end {} < {max_durable}",
                log.end_offset()
            );
            // Dense from the start, whole batches only (read_all and batches() check both).
            let all = read_all(&log, 0).await;
            let mut next = 0;
            for b in &all {
                assert_eq!(b.0, next, "offsets dense");
                next = b.0 + b.1 as u64;
            }
            assert_eq!(next, log.end_offset().0);
            // Every durable append reads back byte for byte (offsets change nothing else).
            for &(base, end, seed) in &check {
                let want = seeded_batch(seed);
                let got = batches(&log.read(Offset(base), 1).await.unwrap());
                assert_eq!(got[0].0, base);
                assert_eq!(got[0].0 + got[0].1 as u64, end);
                assert_eq!(
                    got[0].2,
                    want.bytes()[8..].to_vec(),
                    "bytes of the batch at {base}"
                );
            }
            log.close().await.unwrap();
        });
    }
    assert!(
        total_reported > ROUNDS,
        "the child made progress: {total_reported} durable appends"
    );
    eprintln!("{ROUNDS} SIGKILL rounds, {total_reported} durable appends verified");
}
