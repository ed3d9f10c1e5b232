//! The broker's view of an engine log: topic config to log config, and what consumers may see.

use quiver_engine::{FlushPolicy, LogConfig, PartitionLog};
use quiver_proto::Offset;

use crate::cluster::topic::TopicConfig;

/// Logs a shard opens (or closes) at once when a metadata change places many partitions on
/// it, at start and at stop. Rationale: a new log costs two directory fsyncs and a recovering
/// one a few small reads; one at a time, 100,000 partitions took minutes, each waiting on the
/// disk alone. Sixty-four in flight let the file system's journal commit many at once while
/// keeping a shard's other work (its share of the core, the memory of logs half opened)
/// bounded.
pub const OPENS_IN_FLIGHT: usize = 64;

/// The engine config a topic's config implies.
pub fn log_config(c: &TopicConfig) -> LogConfig {
    LogConfig {
        segment_bytes: c.segment_bytes,
        segment_ms: c.segment_ms.max(1) as u64,
        retention_ms: c.retention_ms,
        retention_bytes: c.retention_bytes,
        flush: if c.flush_ms == 0 {
            FlushPolicy::Sync
        } else {
            FlushPolicy::IntervalMs(c.flush_ms)
        },
        ..LogConfig::default()
    }
}

/// The high watermark on a single broker: the end of what a consumer may read.
///
/// Under the default flush policy a record becomes visible once it is durable, the same moment
/// its producer is acknowledged; a consumer therefore never sees a record that a crash could
/// take back (and an offset it commits always survives). A topic with interval flushing has
/// opted into a loss window, and its records become visible as soon as they are written.
pub fn visible_end(log: &PartitionLog) -> Offset {
    match log.config().flush {
        FlushPolicy::Sync => log.durable_end(),
        FlushPolicy::IntervalMs(_) => log.readable_end(),
    }
}

/// Resolves once the record at `offset` is visible (or the log changed under the waiter, e.g.
/// truncated or closed: the caller re-reads and sees). Woken by the engine, never by polling.
pub async fn wait_visible(log: &PartitionLog, offset: Offset) {
    match log.config().flush {
        FlushPolicy::Sync => log.wait_for_durable(offset).await,
        FlushPolicy::IntervalMs(_) => log.wait_for_data(offset).await,
    }
}
