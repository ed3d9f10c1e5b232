//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use bytes::Bytes;
use quiver_engine::{init_io_probe, LogConfig, PartitionLog};
use quiver_proto::batch::{
    BatchBuilder, BatchIter, BatchLimits, BatchView, Compression, ValidBatch,
};
use quiver_proto::{Offset, TimestampMs};
use std::future::Future;
use std::path::Path;

/// Runs `f` on a fresh glommio executor (one per test), after the I/O probe.
pub fn run<F, Fut>(dir: &Path, f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let dir = dir.to_path_buf();
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            init_io_probe(&dir).await.unwrap();
            f().await
        })
        .unwrap()
        .join()
        .unwrap();
}

/// A batch of `n` records whose values are `value_len` bytes derived from `seed`, timestamps
/// starting at `ts`.
pub fn batch(n: u32, value_len: usize, seed: u64, ts: i64) -> ValidBatch {
    let mut b = BatchBuilder::new(Compression::None);
    for i in 0..n {
        let v: Vec<u8> = (0..value_len)
            .map(|j| (seed as usize * 31 + i as usize * 7 + j) as u8)
            .collect();
        b.append(
            TimestampMs(ts + i as i64),
            Some(&seed.to_le_bytes()),
            Some(&v),
            &[],
        )
        .unwrap();
    }
    ValidBatch::new(b.finish().unwrap(), BatchLimits::default()).unwrap()
}

/// Splits a read into (base offset, record count, bytes without the base offset) per batch.
pub fn batches(bytes: &Bytes) -> Vec<(u64, u32, Vec<u8>)> {
    BatchIter::new(bytes)
        .map(|b| {
            let b = b.expect("whole batches only");
            let v = BatchView::new(b, BatchLimits::default()).expect("valid batch");
            (v.base_offset().0, v.info().record_count, b[8..].to_vec())
        })
        .collect()
}

/// Reads the whole log from `from` to its readable end.
pub async fn read_all(log: &PartitionLog, from: u64) -> Vec<(u64, u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut next = from;
    while next < log.readable_end().0 {
        let bytes = log.read(Offset(next), 1 << 20).await.unwrap();
        let bs = batches(&bytes);
        assert!(!bs.is_empty(), "read at {next} returned nothing");
        for b in bs {
            assert!(
                b.0 <= next || out.is_empty() || b.0 == next,
                "gap at {next}"
            );
            next = b.0 + b.1 as u64;
            out.push(b);
        }
    }
    out
}

pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024,
        index_interval_bytes: 1024,
        ..LogConfig::default()
    }
}

/// Opens a log, waiting (briefly) for a dropped handle's in-flight I/O to release the directory.
pub async fn reopen(dir: &Path, config: LogConfig) -> PartitionLog {
    for _ in 0..200 {
        match PartitionLog::open(dir, config.clone()).await {
            Err(quiver_engine::Error::Locked { .. }) => {
                glommio::timer::sleep(std::time::Duration::from_millis(5)).await
            }
            other => return other.unwrap(),
        }
    }
    panic!("{} stayed locked", dir.display());
}
