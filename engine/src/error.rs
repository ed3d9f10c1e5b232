//! The engine's typed errors. Cloneable (I/O errors are shared behind an `Arc`) so that one failed
//! group commit can fail every append that was waiting on it with the same cause.

use quiver_proto::Offset;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// The offset is not in the log. `end` is the next offset the log will assign; reading at
    /// exactly `end` is not an error (it returns no data), only beyond it.
    #[error("offset {requested} is out of range: the log holds [{start}, {end})")]
    OffsetOutOfRange {
        requested: Offset,
        start: Offset,
        end: Offset,
    },
    /// Bytes on disk that are not what the engine wrote: never served as data. `resume_at` is
    /// the first offset readable after the damaged range, when the engine knows it (a range it
    /// found at open or while rebuilding an index; see "Recovery and corruption policy").
    #[error("corrupt data in {} at byte {position}: {reason}{}", path.display(), resume_at.map_or(String::new(), |o| format!("; readable again from offset {o}")))]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
        resume_at: Option<quiver_proto::Offset>,
    },
    /// The device is full (ENOSPC, or a short write). The append was not stored; the log stays
    /// usable and a later append may succeed once space is freed.
    #[error("disk full writing {}: {source}", path.display())]
    DiskFull {
        path: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },
    #[error("I/O error ({op}) on {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },
    /// An append's bytes were discarded before becoming durable because an earlier write in the
    /// same group commit failed or the log was truncated under it.
    #[error("the append was discarded: {0}")]
    Discarded(String),
    #[error("an append of {bytes} bytes exceeds the maximum of {max}")]
    AppendTooLarge { bytes: u64, max: u64 },
    #[error("invalid log config: {0}")]
    InvalidConfig(String),
    /// Another `PartitionLog` of this process has the directory open.
    #[error("the log directory {} is in use by another open log", path.display())]
    Locked { path: PathBuf },
    #[error("the partition log is closed")]
    Closed,
    /// A replica's append whose batches do not continue the log where it ends (their base
    /// offsets are the leader's). Nothing of it was written.
    #[error("replicated batches start at offset {first} (or leave a gap at {gap_at}); the log ends at {end}")]
    NotContiguous {
        first: Offset,
        gap_at: Offset,
        end: Offset,
    },
    /// A replica's append whose source is no longer its leader (leadership moved while it
    /// was under way). Nothing of it was written.
    #[error("the replica no longer follows the leader these batches came from")]
    Superseded,
    /// An idempotent producer's batch that does not continue its sequence (see `producers`).
    /// Nothing of the append was written.
    #[error("{message}")]
    Sequence {
        kind: SequenceError,
        message: String,
    },
}

/// How a producer's batch fails the sequence check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SequenceError {
    /// Not the next sequence: an earlier batch is missing (resend in order), or the log has no
    /// state for the producer and the batch does not start at sequence 0.
    OutOfOrder,
    /// A batch already written, inside an append of several batches (resend it alone).
    Duplicate,
    /// An epoch older than the producer's current one.
    InvalidEpoch,
    /// A producer new to the log while it keeps state for `PRODUCERS_PER_LOG_MAX` producers.
    TooManyProducers,
}

impl Error {
    /// Wraps an I/O error with what was being done and on which file; ENOSPC becomes `DiskFull`.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, e: impl Into<io::Error>) -> Error {
        let e: io::Error = e.into();
        let path = path.into();
        if e.raw_os_error() == Some(libc::ENOSPC) || e.kind() == io::ErrorKind::StorageFull {
            Error::DiskFull {
                path,
                source: Arc::new(e),
            }
        } else {
            Error::Io {
                op,
                path,
                source: Arc::new(e),
            }
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, position: u64, reason: impl ToString) -> Error {
        Error::Corrupt {
            path: path.into(),
            position,
            reason: reason.to_string(),
            resume_at: None,
        }
    }
}
