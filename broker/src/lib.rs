//! streamd, the Quiver broker: the one crate that joins proto, engine and net.
//!
//! The broker's parts, each a room of its own (ARCHITECTURE.md has the map and the rules):
//! - `runtime`: the per-core machinery: shards, the mesh between them, partition placement;
//! - `handlers`: the API, one module per family, dispatched from the transport;
//! - `group`: the consumer group coordinator and its offsets records;
//! - `cluster`: what the cluster knows: topics and their configs, the metadata state and store,
//!   the controller that changes them, the Raft core (later replication);
//! - `quorum`: a cluster's controller quorum at run time: the Raft node driven on shard 0, its
//!   messages over the QUIC transport, the committed metadata log applied on every shard;
//! - `security`: principals, SASL, ACLs and stored credentials (pure: no shard, no I/O);
//! - `run` (start and stop), `config`, `metrics`, `process`, `identity`.
//!
//! Dependencies between them point one way: `handlers` and `run` use the rest; `quorum` uses
//! `runtime` and `cluster`; `runtime` uses
//! `cluster`'s types and hosts `group`'s coordinator; `cluster` and `group` use neither
//! `runtime` nor `handlers` (a test, `tests/layout.rs`, checks that no file imports a file that
//! imports it back).

pub mod cluster;
pub mod config;
pub mod group;
pub mod handlers;
pub mod identity;
pub mod metrics;
pub mod process;
pub mod quorum;
pub mod replication;
pub mod run;
pub mod runtime;
pub mod security;

/// Milliseconds since the Unix epoch, by the wall clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
