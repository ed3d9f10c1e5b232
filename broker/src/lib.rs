//! streamd, the Quiver broker: the one crate that joins proto, engine and net.

pub mod config;
pub mod metrics;
