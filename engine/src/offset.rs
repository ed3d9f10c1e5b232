//! Offset arithmetic the engine needs beyond what [`Offset`] offers.
//!
//! Every offset inside the engine is a [`quiver_proto::Offset`], the type of its public API, so
//! an offset never passes for a byte position, a generation or a count: those stay `u64` (byte
//! positions, counts) or have their own type (`log::commit::Generation`). Differences of two
//! offsets are counts (`u64`); an offset plus a count is an offset.

use quiver_proto::Offset;

/// Past every offset a log can hold: the limit of a segment that has no next one.
pub(crate) const OFFSET_MAX: Offset = Offset(u64::MAX);

pub(crate) trait OffsetExt {
    /// Offsets from `base` up to `self` (`self - base`); the caller knows `self >= base`.
    fn since(self, base: Offset) -> u64;
    /// `self - base`, or `None` below `base`.
    fn checked_since(self, base: Offset) -> Option<u64>;
    /// `self + n`, stopping at [`OFFSET_MAX`]: for numbers read from disk, never trusted to add
    /// without overflow.
    fn saturating_plus(self, n: u64) -> Offset;
}

impl OffsetExt for Offset {
    fn since(self, base: Offset) -> u64 {
        self.0 - base.0
    }

    fn checked_since(self, base: Offset) -> Option<u64> {
        self.0.checked_sub(base.0)
    }

    fn saturating_plus(self, n: u64) -> Offset {
        Offset(self.0.saturating_add(n))
    }
}
