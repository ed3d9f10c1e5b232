//! streamd, the Quiver broker: the one crate that joins proto, engine and net.

pub mod config;
pub mod meta;
pub mod metrics;
pub mod process;
pub mod topic;
