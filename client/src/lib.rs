//! The Quiver Rust SDK. Runs on tokio with quinn; never depends on glommio, engine, net or broker.

pub mod client;
pub mod error;
pub mod transport;

pub use client::{BrokerInfo, Client, ClientConfig, ClusterView, PartitionInfo, TopicInfo};
pub use error::{Error, Result};
pub use quiver_proto::{ErrorCode, Offset, PartitionId, TimestampMs};
pub use transport::{ClientTls, ConnectOptions, TransportError};
