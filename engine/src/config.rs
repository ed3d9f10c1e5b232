//! Per-log configuration, with Kafka's defaults.

use crate::error::{Error, Result};

/// When appended bytes become durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Durable before an append resolves (group commit: one O_DSYNC write, or one fdatasync,
    /// covers every append that was staged while the previous one ran). The default.
    #[default]
    Sync,
    /// An append resolves once its bytes are written to the file (O_DIRECT: handed to the device);
    /// fdatasync runs at most this many milliseconds later. A crash may lose that window.
    IntervalMs(u64),
}

/// Bounds on configuration values.
pub const SEGMENT_BYTES_MIN: u64 = 64 * 1024;
/// Index entries hold a segment position as u32; a segment may overrun `segment_bytes` by one
/// append (at most a frame, 64 MiB), so the configured size stays well under 4 GiB.
pub const SEGMENT_BYTES_MAX: u64 = 2 * 1024 * 1024 * 1024;
pub const INDEX_INTERVAL_BYTES_MIN: u32 = 512;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll the active segment when an append would take it past this size. Kafka
    /// `segment.bytes`, default 1 GiB.
    pub segment_bytes: u64,
    /// Roll the active segment when its first batch is older than this. Kafka `segment.ms`,
    /// default 7 days.
    pub segment_ms: u64,
    /// Delete closed segments whose max timestamp is older than this; -1 keeps forever. Kafka
    /// `retention.ms`, default 7 days.
    pub retention_ms: i64,
    /// Delete the oldest closed segments while the log is larger than this; -1 is unlimited.
    /// Kafka `retention.bytes`, default -1.
    pub retention_bytes: i64,
    pub flush: FlushPolicy,
    /// Bytes of log between two sparse index entries. Kafka `index.interval.bytes`, default 4096.
    pub index_interval_bytes: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1024 * 1024 * 1024,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            flush: FlushPolicy::Sync,
            index_interval_bytes: 4096,
        }
    }
}

impl LogConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |s: String| Err(Error::InvalidConfig(s));
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return bad(format!(
                "segment_bytes {} outside [{SEGMENT_BYTES_MIN}, {SEGMENT_BYTES_MAX}]",
                self.segment_bytes
            ));
        }
        if self.segment_ms == 0 {
            return bad("segment_ms must be positive".into());
        }
        if self.retention_ms < -1 || self.retention_bytes < -1 {
            return bad("retention_ms and retention_bytes are -1 or non-negative".into());
        }
        if self.index_interval_bytes < INDEX_INTERVAL_BYTES_MIN {
            return bad(format!(
                "index_interval_bytes below {INDEX_INTERVAL_BYTES_MIN}"
            ));
        }
        if self.flush == FlushPolicy::IntervalMs(0) {
            return bad("flush interval must be positive (use FlushPolicy::Sync)".into());
        }
        Ok(())
    }
}
