//! What the cluster knows and who changes it: topics and their configs (`topic`), the metadata
//! state machine and its store (`meta`), the immutable snapshot every shard reads (`state`), and
//! the controller, the one place metadata changes (`controller`), and where topics live on disk
//! (`dirs`), and the Raft quorum's core (`raft`: a durable store and a sans-IO node, not wired
//! in yet; it will replace the file store). Later: replication. Nothing here knows shards or the transport: the
//! controller returns what must be applied, and the runtime applies it.

pub mod controller;
pub mod dirs;
pub mod meta;
pub mod raft;
pub mod state;
pub mod topic;
