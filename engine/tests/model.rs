//! Property test (acceptance 1): random sequences of append, read, read-by-timestamp, truncate,
//! roll, retention, clean reopen and unclean reopen (the log dropped without close) against a
//! simple in-memory model of the log.
mod common;
use common::*;
use proptest::prelude::*;
use quiver_engine::{Error, FlushPolicy, LogConfig, PartitionLog};
use quiver_proto::{Offset, TimestampMs};

#[derive(Clone, Debug)]
enum Op {
    /// (records, value bytes, first timestamp) per batch.
    Append(Vec<(u32, usize, i64)>),
    Read {
        at: i64,
        max_bytes: usize,
    },
    Time(i64),
    Truncate(u64),
    Roll,
    Retention {
        bytes: i64,
    },
    Reopen,
    Drop,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => proptest::collection::vec((1u32..20, 0usize..400, 0i64..10_000), 1..4).prop_map(Op::Append),
        5 => (-3i64..1000, 1usize..20_000).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
        2 => (-10i64..11_000).prop_map(Op::Time),
        1 => any::<u64>().prop_map(Op::Truncate),
        1 => Just(Op::Roll),
        1 => (0i64..300_000).prop_map(|bytes| Op::Retention { bytes }),
        1 => Just(Op::Reopen),
        1 => Just(Op::Drop),
    ]
}

/// The model: batches in offset order (base, records, bytes after the base offset, timestamps).
#[derive(Default, Debug)]
struct Model {
    start: u64,
    end: u64,
    batches: Vec<(u64, u32, Vec<u8>, i64)>,
}

impl Model {
    fn containing(&self, offset: u64) -> usize {
        self.batches
            .iter()
            .position(|b| b.0 + b.1 as u64 > offset)
            .expect("offset in the log")
    }
}

thread_local! {
    /// The flush policy of the case being run (both policies go through the same model).
    static FLUSH: std::cell::Cell<FlushPolicy> = const { std::cell::Cell::new(FlushPolicy::Sync) };
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024,
        index_interval_bytes: 512,
        flush: FLUSH.with(|f| f.get()),
        ..LogConfig::default()
    }
}

async fn check_op(log: &mut PartitionLog, m: &mut Model, op: Op, seed: &mut u64) {
    let dir = log.dir().to_path_buf();
    match op {
        Op::Append(specs) => {
            let bs: Vec<_> = specs
                .iter()
                .map(|&(n, len, ts)| {
                    *seed += 1;
                    batch(n, len, *seed, ts)
                })
                .collect();
            let info = log.append(&bs, None).await.unwrap();
            assert_eq!(info.base_offset.0, m.end);
            for (b, &(n, _, ts)) in bs.iter().zip(&specs) {
                m.batches.push((m.end, n, b.bytes()[8..].to_vec(), ts));
                m.end += n as u64;
            }
            assert_eq!(info.next_offset.0, m.end);
        }
        Op::Read { at, max_bytes } => {
            let off = (m.start as i64 + at).max(0) as u64;
            let res = log.read(Offset(off), max_bytes).await;
            if off < m.start || off > m.end {
                match res {
                    Err(Error::OffsetOutOfRange { start, end, .. }) => {
                        assert_eq!((start.0, end.0), (m.start, m.end))
                    }
                    other => panic!("read {off}: expected out of range, got {other:?}"),
                }
            } else if off == m.end {
                assert!(res.unwrap().is_empty());
            } else {
                let bytes = res.unwrap();
                let got = batches(&bytes);
                let i = m.containing(off);
                assert!(!got.is_empty());
                assert!(got.len() == 1 || bytes.len() <= max_bytes, "over max_bytes");
                for (k, g) in got.iter().enumerate() {
                    let want = &m.batches[i + k];
                    assert_eq!(
                        (g.0, g.1, &g.2),
                        (want.0, want.1, &want.2),
                        "batch {k} of read {off}"
                    );
                }
            }
        }
        Op::Time(ts) => {
            let want = m.batches.iter().find_map(|b| {
                (0..b.1)
                    .find(|&r| b.3 + r as i64 >= ts)
                    .map(|r| b.0 + r as u64)
            });
            let got = log.offset_for_timestamp(TimestampMs(ts)).await.unwrap();
            assert_eq!(got.map(|o| o.0), want, "offset_for_timestamp({ts})");
        }
        Op::Truncate(x) => {
            let span = m.end - m.start + 1;
            let off = m.start + x % span;
            let new_end = log.truncate(Offset(off)).await.unwrap().0;
            if off < m.end {
                let i = m.containing(off);
                m.batches.truncate(i);
                m.end = m.batches.last().map_or(m.start, |b| b.0 + b.1 as u64);
                if m.batches.is_empty() {
                    // Truncating the only segment to its base leaves it empty at its base.
                    m.end = new_end;
                }
            }
            assert_eq!(new_end, m.end);
        }
        Op::Roll => {
            log.roll().await.unwrap();
        }
        Op::Retention { bytes } => {
            log.set_config(LogConfig {
                retention_bytes: bytes,
                ..config()
            })
            .unwrap();
            let before = log.size_bytes();
            let bases = log.segment_bases();
            let r = log.apply_retention(TimestampMs(0)).await.unwrap();
            log.set_config(config()).unwrap();
            let new_start = r.start_offset.0;
            assert!(new_start >= m.start && new_start <= m.end);
            assert_eq!(log.size_bytes(), before - r.deleted_bytes);
            // The oldest segments go, never the active one; with no byte budget every closed
            // one goes.
            let k = r.deleted_segments.len();
            assert!(k < bases.len());
            assert_eq!(r.deleted_segments, bases[..k].to_vec());
            assert_eq!(log.segment_bases(), bases[k..].to_vec());
            if bytes == 0 {
                assert_eq!(log.segment_count(), 1);
            }
            m.batches.retain(|b| b.0 >= new_start);
            assert!(
                m.batches.first().is_none_or(|b| b.0 == new_start),
                "start at a batch"
            );
            m.start = new_start;
        }
        Op::Reopen => {
            log.close().await.unwrap();
            *log = PartitionLog::open(&dir, config()).await.unwrap();
        }
        Op::Drop => {
            // No close: recovery from zero-padded tails and unsynced index files. While the
            // old handle lives, the directory is locked.
            assert!(matches!(
                PartitionLog::open(&dir, config()).await,
                Err(Error::Locked { .. })
            ));
            let placeholder = PartitionLog::open(dir.with_extension("scratch"), config())
                .await
                .unwrap();
            drop(std::mem::replace(log, placeholder));
            // The dropped handle releases the directory lock once its in-flight I/O (a write
            // or fdatasync of the pipelined group commit) has finished: wait for that.
            let mut attempts = 0;
            *log = loop {
                match PartitionLog::open(&dir, config()).await {
                    Err(Error::Locked { .. }) if attempts < 5000 => {
                        attempts += 1;
                        glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
                    }
                    other => break other.unwrap(),
                }
            };
        }
    }
    assert_eq!(log.start_offset().0, m.start, "start after {m:?}");
    assert_eq!(log.end_offset().0, m.end);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn log_matches_model(
        ops in proptest::collection::vec(op(), 1..40),
        interval in proptest::option::of(1u64..20),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p");
        let flush = interval.map_or(FlushPolicy::Sync, FlushPolicy::IntervalMs);
        run(tmp.path(), move || async move {
            FLUSH.with(|f| f.set(flush));
            let mut log = PartitionLog::open(&dir, config()).await.unwrap();
            let mut m = Model::default();
            let mut seed = 0;
            for op in ops {
                check_op(&mut log, &mut m, op, &mut seed).await;
            }
            // Finally everything reads back, before and after an unclean reopen.
            let all = read_all(&log, m.start).await;
            let want: Vec<_> = m.batches.iter().map(|b| (b.0, b.1, b.2.clone())).collect();
            assert_eq!(all, want);
            drop(log);
            let log = reopen(&dir, config()).await;
            assert_eq!(read_all(&log, m.start).await, want);
            assert!(log.verify().await.unwrap().is_empty());
        });
    }
}
