//! Quiver's wire format, and only the wire: record batches, frames, the flatbuffers schema and
//! error codes. No I/O and no runtime live here (see ARCHITECTURE.md).

pub mod api;
pub mod batch;
pub mod error;
pub mod frame;
pub mod types;

pub use types::{BrokerId, LeaderEpoch, Offset, PartitionId, ShardId, TimestampMs};
