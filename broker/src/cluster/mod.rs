//! What the cluster knows and who changes it: topics and their configs (`topic`), the metadata
//! state machine and its single-broker store (`meta`), where commands go and the state they
//! made (`metalog`: the `MetadataLog` trait, its file form, the quorum's status), the immutable
//! snapshot every shard reads (`state`), the controller, the one place metadata changes are
//! checked (`controller`), where topics live on disk (`dirs`), and the Raft quorum's core
//! (`raft`: a durable store and a sans-IO node; `crate::quorum` runs it), who leads and who is
//! in sync (`election`), and moving replicas (`reassign`).
//! Nothing here knows shards or the transport: the controller returns what must be applied, and
//! the runtime applies it.

pub mod assign;
pub mod controller;
pub mod dirs;
pub mod election;
pub mod meta;
pub mod metalog;
pub mod partition;
pub mod raft;
pub mod reassign;
pub mod state;
pub mod topic;
