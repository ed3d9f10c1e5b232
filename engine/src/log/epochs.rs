//! Leader epochs along the log (KIP-101, KIP-320): where each epoch ends, read from the batches'
//! headers. A leader stamps its epoch on every batch and a follower copies batches as they are,
//! after cutting any suffix that differs from its leader's, so epochs never go down along a
//! log: a binary search over offsets finds where one ends, with no index of its own to keep
//! durable (a handful of header reads, on the rare divergence check).

use super::PartitionLog;
use crate::error::Result;
use quiver_proto::batch;
use quiver_proto::{LeaderEpoch, Offset};

/// One batch's offsets and epoch.
#[derive(Clone, Copy, Debug)]
struct Span {
    base: Offset,
    /// One past its last offset.
    next: Offset,
    epoch: LeaderEpoch,
}

impl PartitionLog {
    /// The largest leader epoch at or below `epoch` that the log holds, and where it ends: the
    /// first offset of a later epoch, or the readable end. `None` when the log holds no batch of
    /// such an epoch (it is empty, or every batch has a larger one).
    pub async fn epoch_end(&self, epoch: LeaderEpoch) -> Result<Option<(LeaderEpoch, Offset)>> {
        let (start, end) = (self.start_offset(), self.readable_end());
        // The first offset of a batch with an epoch above `epoch`, in [lo, hi].
        let (mut lo, mut hi) = (start, end);
        while lo < hi {
            let mid = Offset(lo.0 + (hi.0 - lo.0) / 2);
            let Some(s) = self.span_at(mid).await? else {
                break;
            };
            if s.epoch > epoch {
                hi = s.base.max(lo);
            } else {
                lo = s.next;
            }
        }
        if lo <= start {
            return Ok(None);
        }
        Ok(self.span_at(Offset(lo.0 - 1)).await?.map(|s| (s.epoch, lo)))
    }

    /// The leader epoch of the last readable batch (`None` for an empty log): what a follower
    /// tells its leader it fetched last.
    pub async fn last_epoch(&self) -> Result<Option<LeaderEpoch>> {
        let (start, end) = (self.start_offset(), self.readable_end());
        if end <= start {
            return Ok(None);
        }
        Ok(self.span_at(Offset(end.0 - 1)).await?.map(|s| s.epoch))
    }

    /// The batch holding `offset`.
    async fn span_at(&self, offset: Offset) -> Result<Option<Span>> {
        let bytes = self.read(offset, 1).await?;
        let Ok(h) = batch::header(&bytes) else {
            return Ok(None);
        };
        let base = Offset(h.base_offset.get());
        Ok(Some(Span {
            base,
            next: base.plus(u64::from(h.last_offset_delta.get()) + 1),
            epoch: LeaderEpoch(h.leader_epoch.get()),
        }))
    }
}
