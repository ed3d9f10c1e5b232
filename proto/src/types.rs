//! One newtype per kind of number, so an offset can never be passed where a partition id is
//! expected. Rationale: Redpanda's `model/fundamental.h`; mixing these up is a silent data bug.

use std::fmt;

macro_rules! newtype {
    ($(#[$m:meta])* $name:ident($inner:ty)) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl From<$inner> for $name {
            fn from(v: $inner) -> Self {
                Self(v)
            }
        }
    };
}

newtype!(
    /// Position of a record in a partition log. Starts at 0, grows by one per record, never reused.
    Offset(u64)
);
newtype!(
    /// Index of a partition within its topic.
    PartitionId(u32)
);
newtype!(
    /// A broker's integer id in the cluster.
    BrokerId(u32)
);
newtype!(
    /// The epoch of a partition's leadership (KIP-101); stamped into each batch by the leader.
    LeaderEpoch(u32)
);
newtype!(
    /// Index of a shard (one glommio executor pinned to one core) within a broker.
    ShardId(u32)
);
newtype!(
    /// Milliseconds since the Unix epoch.
    TimestampMs(i64)
);

impl Offset {
    pub const ZERO: Offset = Offset(0);

    /// `self + n`, for walking offsets.
    #[must_use]
    pub fn plus(self, n: u64) -> Offset {
        Offset(self.0 + n)
    }
}
