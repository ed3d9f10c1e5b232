//! File descriptors: an open log keeps one (its active segment's log), and the closed segments
//! that reads keep open are bounded per thread (`CLOSED_FILES_PER_THREAD`), whatever the number
//! of logs. Counted in /proc/self/fd; the test is its own process, so nothing else opens files
//! meanwhile.

mod common;

use common::{batch, run, small_config};
use quiver_engine::{PartitionLog, CLOSED_FILES_PER_THREAD};
use quiver_proto::Offset;

/// The tests count the process's descriptors: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn a_log_holds_one_descriptor_and_reads_of_closed_segments_are_bounded_per_thread() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(dir.path(), move || async move {
        // Enough logs that two closed segments read in each exceed the thread's bound.
        let logs_n = CLOSED_FILES_PER_THREAD / 2 + 40;
        let before = open_fds();
        let mut logs = Vec::new();
        for i in 0..logs_n {
            let log = PartitionLog::open(root.join(format!("p{i}")), small_config())
                .await
                .unwrap();
            logs.push(log);
        }
        let held = open_fds() - before;
        assert!(
            held <= logs_n + 8,
            "{logs_n} open logs hold {held} descriptors"
        );

        // Three segments each (64 KiB segments, 30 KB appends), index blocks written at roll;
        // the logs written at once, each one append after another.
        futures_util::future::join_all(logs.iter().enumerate().map(|(i, log)| async move {
            for j in 0..7u64 {
                log.append(&[batch(5, 6_000, i as u64 * 100 + j, 1_000)], None)
                    .await
                    .unwrap();
            }
        }))
        .await;
        let after_writes = open_fds() - before;
        assert!(
            after_writes <= logs_n + 8,
            "{logs_n} logs written hold {after_writes} descriptors"
        );

        // A read in each of the two closed segments of every log.
        for log in &logs {
            for offset in [0, 10] {
                let bytes = log.read(Offset(offset), 1 << 16).await.unwrap();
                assert!(!bytes.is_empty());
            }
        }
        let reading = open_fds() - before;
        assert!(
            reading <= logs_n + CLOSED_FILES_PER_THREAD + 8,
            "{logs_n} logs with closed segments read hold {reading} descriptors (bound {})",
            logs_n + CLOSED_FILES_PER_THREAD
        );
        // Every log still reads its old segments (loaded again once let go).
        for log in &logs {
            assert!(!log.read(Offset(0), 1 << 16).await.unwrap().is_empty());
        }
        for log in logs {
            log.close().await.unwrap();
        }
        let left = open_fds().saturating_sub(before);
        assert!(left <= 8, "{left} descriptors left after closing every log");
    });
}

#[test]
fn a_directory_is_held_by_one_log_and_no_lock_file_is_made() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(dir.path(), move || async move {
        let path = root.join("p0");
        let log = PartitionLog::open(&path, small_config()).await.unwrap();
        // The same directory under another spelling is the same log.
        let other = root.join("p0/../p0");
        assert!(matches!(
            PartitionLog::open(&other, small_config()).await,
            Err(quiver_engine::Error::Locked { .. })
        ));
        assert!(!path.join(".lock").exists());
        log.close().await.unwrap();
        let again = PartitionLog::open(&other, small_config()).await.unwrap();
        again.close().await.unwrap();
    });
}

/// With a budget of open active-segment files smaller than the logs, logs written and read all
/// at once (writes, fdatasyncs and reads of other logs closing and reopening their files) keep
/// every record, within the budget; after a close and reopen too.
#[test]
fn logs_beyond_the_open_file_budget_write_and_read_through_reopened_files() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(dir.path(), move || async move {
        const BUDGET: usize = 16;
        const LOGS: usize = 120;
        quiver_engine::set_open_logs_max(BUDGET);
        let before = open_fds();
        let mut logs = Vec::new();
        for i in 0..LOGS {
            let log = PartitionLog::open(root.join(format!("q{i}")), small_config())
                .await
                .unwrap();
            logs.push(std::rc::Rc::new(log));
        }
        assert!(quiver_engine::open_logs() <= BUDGET);
        let idle = open_fds() - before;
        assert!(
            idle <= BUDGET + 8,
            "{LOGS} idle logs hold {idle} descriptors"
        );
        // Three rounds of one append to every log at once (durable: each awaits its
        // fdatasync), so files close and reopen between a write and its sync.
        // The most descriptors open at any moment while they run: a reopen makes room (closes
        // an idle file, or waits for one to fall idle) before it opens.
        let peak = std::rc::Rc::new(std::cell::Cell::new(0usize));
        let sampling = std::rc::Rc::new(std::cell::Cell::new(true));
        let sampler = {
            let (peak, sampling) = (peak.clone(), sampling.clone());
            glommio::spawn_local(async move {
                while sampling.get() {
                    peak.set(peak.get().max(open_fds() - before));
                    glommio::timer::sleep(std::time::Duration::from_micros(200)).await;
                }
            })
        };
        for round in 0..3u64 {
            let tasks: Vec<_> = logs
                .iter()
                .enumerate()
                .map(|(i, log)| {
                    let log = log.clone();
                    glommio::spawn_local(async move {
                        log.append(&[batch(4, 900, i as u64 * 10 + round, 1_000)], None)
                            .await
                            .unwrap()
                    })
                })
                .collect();
            for t in tasks {
                t.await;
            }
        }
        sampling.set(false);
        sampler.await;
        assert!(
            peak.get() <= BUDGET + 8,
            "{} descriptors open at the peak of {LOGS} logs written at once with a budget of {BUDGET}",
            peak.get()
        );
        assert!(quiver_engine::open_logs() <= BUDGET + 1);
        for log in &logs {
            let got = common::read_all(log, 0).await;
            assert_eq!(got.len(), 3);
            assert_eq!(got.iter().map(|b| b.1).sum::<u32>(), 12);
        }
        let busy = open_fds() - before;
        assert!(
            busy <= BUDGET + 8,
            "{busy} descriptors with a budget of {BUDGET}"
        );
        for log in logs {
            std::rc::Rc::try_unwrap(log)
                .ok()
                .unwrap()
                .close()
                .await
                .unwrap();
        }
        for i in 0..LOGS {
            let log = PartitionLog::open(root.join(format!("q{i}")), small_config())
                .await
                .unwrap();
            assert_eq!(log.end_offset().0, 12, "log {i} after reopening");
            let got = common::read_all(&log, 0).await;
            assert_eq!(got.len(), 3);
            log.close().await.unwrap();
        }
        quiver_engine::set_open_logs_max(usize::MAX);
    });
}
