//! The controller quorum's Raft room (tikv raft-rs): a durable store and a sans-IO node.
//!
//! `store` is the `raft::Storage` on disk (log, hard state, conf state, snapshot) with the
//! engine's durability rules; `codec` its byte formats; `node` the `QuorumNode` that drives a
//! `raft::RawNode` over it: ticks, messages and proposals in, messages to send, committed
//! entries and leadership changes out. Not wired into the running broker yet: the metadata
//! still goes through `meta::FileMetadataStore`.

mod codec;
pub mod node;
pub mod store;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod store_tests;
