//! The per-core runtime: a shard (one glommio executor pinned to one core, and everything it
//! owns), the mesh that carries work between shards (typed requests, and closures run on the
//! owning core), and placement (which shard owns a partition). It knows partitions and logs,
//! not what an admin change or a group request is: those arrive as closures from `handlers`.

pub mod fan_in;
pub mod logs;
pub mod mesh;
pub mod placement;
pub mod replica;
pub mod replica_fetch;
pub mod shard;

pub use mesh::{ListedOffset, PartError, PartRead};
pub use placement::owner_of;
pub use shard::{Shard, ShardInit, ShardMsg};
