//! What one shard asks of another over glommio's channel mesh: partition work, typed (append,
//! read, wait, list an offset, apply new metadata), and any other work as a closure run on the
//! receiving shard (`Shard::run_on`), whose answer comes back typed on a oneshot. Every message
//! is `Send` (it crosses threads); what a closure builds on the receiving core need not be.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use futures_channel::oneshot;
use quiver_engine::AppendInfo;
use quiver_proto::batch::ValidBatch;
use quiver_proto::{LeaderEpoch, Offset};

use quiver_engine::Records;
use quiver_proto::TimestampMs;

use crate::cluster::state::{PartKey, Snapshot, TopicInfo};

/// Work for the receiving shard (`S`: the shard type), run in a task of its own there.
pub type Task<S> = Box<dyn FnOnce(Rc<S>) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// Why a partition operation failed on its owner.
#[derive(Clone, Debug, thiserror::Error)]
pub enum PartError {
    /// The partition is not hosted by its owner (the topic was deleted meanwhile).
    #[error("partition is not hosted on this broker (topic deleted?)")]
    NotHosted,
    /// The partition's log failed to open (e.g. an I/O error during recovery).
    #[error("partition log is unavailable: {0}")]
    Failed(String),
    #[error(transparent)]
    Engine(#[from] quiver_engine::Error),
    #[error("broker is shutting down")]
    ShuttingDown,
}

/// What a read returns: the batches (or why not) and the partition's offsets at that moment.
#[derive(Clone, Debug)]
pub struct PartRead {
    pub records: Result<Records, PartError>,
    pub high_watermark: Offset,
    pub log_start: Offset,
}

/// What ListOffsets found on the partition's owner.
#[derive(Clone, Copy, Debug)]
pub struct ListedOffset {
    pub offset: Option<Offset>,
    pub timestamp: Option<TimestampMs>,
}

/// What one shard asks of another (`S`: the shard type, which runs `Run` tasks).
pub enum ShardMsg<S> {
    Append {
        key: PartKey,
        batches: Vec<ValidBatch>,
        /// The partition's leader epoch, stamped on every batch.
        epoch: LeaderEpoch,
        reply: oneshot::Sender<Result<AppendInfo, PartError>>,
    },
    /// Read these partitions (key, offset, per-partition limit), in order, spending at most
    /// `budget` bytes over all of them (`Shard::read_many_local`).
    Read {
        reads: Vec<(PartKey, Offset, usize)>,
        budget: usize,
        reply: oneshot::Sender<Vec<PartRead>>,
    },
    /// Resolve when any of these partitions has data at or beyond its offset, or at `deadline`.
    Wait {
        waits: Vec<(PartKey, Offset)>,
        deadline: Instant,
        reply: oneshot::Sender<()>,
    },
    /// New metadata: open, reconfigure or delete the logs this shard owns.
    Apply {
        snapshot: Arc<Snapshot>,
        deleted: Vec<Arc<TopicInfo>>,
        reply: oneshot::Sender<()>,
    },
    /// Anything else (`Shard::run_on`).
    Run(Task<S>),
}
