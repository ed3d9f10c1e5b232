//! streamd, the Quiver broker: the one crate that joins proto, engine and net.
//!
//! See ARCHITECTURE.md for the map; `shard` says what each core owns, `run` the order of start
//! and stop, `handlers` the APIs, `controller` how topics change.

pub mod config;
pub mod controller;
pub mod group;
pub mod handlers;
pub mod identity;
pub mod logs;
pub mod meta;
pub mod metrics;
pub mod process;
pub mod run;
pub mod shard;
pub mod state;
pub mod topic;

/// Milliseconds since the Unix epoch, by the wall clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
