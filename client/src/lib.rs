//! The Quiver Rust SDK: [`Producer`], [`Consumer`] and [`Admin`] for Quiver brokers (`streamd`),
//! over QUIC with TLS. Runs on tokio with quinn; never depends on glommio, engine, net or broker.
//!
//! ```no_run
//! use quiver_client::{Client, ClientConfig, Consumer, ConsumerConfig, Producer, ProducerConfig,
//!     ProducerRecord, TopicPartition};
//! use std::time::Duration;
//!
//! # async fn demo() -> quiver_client::Result<()> {
//! // Trusts ./data/tls/ca.pem (what `streamd` writes when started with no flags);
//! // use `.tls(ClientTls::from_ca_file(..)?)` for any other broker.
//! let client = Client::connect(ClientConfig::new("127.0.0.1:9092")).await?;
//!
//! let producer = Producer::new(client.clone(), ProducerConfig::default())?;
//! let meta = producer.send(ProducerRecord::new("orders").key("k1").value("hello")).await?;
//! println!("written to partition {} at offset {:?}", meta.partition, meta.offset);
//!
//! let mut consumer = Consumer::new(client, ConsumerConfig::default());
//! consumer.assign(vec![TopicPartition::new("orders", meta.partition.0)])?;
//! consumer.seek_to_beginning(&[TopicPartition::new("orders", meta.partition.0)]).await?;
//! for record in consumer.poll(Duration::from_secs(1)).await? {
//!     println!("{}@{}: {:?}", record.partition, record.offset, record.value_str());
//! }
//! # Ok(()) }
//! ```
//!
//! Errors are one type, [`Error`], whose [`Error::code`] gives the broker's [`ErrorCode`] when
//! there is one (`UnknownTopicOrPartition`, `MessageTooLarge`, ...).

pub mod admin;
pub mod client;
pub mod commit;
pub mod consumer;
pub mod error;
mod group;
mod grouping;
pub mod partitioner;
pub mod producer;
pub mod record;
pub mod serialization;
pub mod transport;

pub use admin::{
    Admin, AlterConfig, ClusterDescription, ConfigEntry, ConfigResource, GroupDescription,
    GroupListing, NewTopic, PartitionDescription, TopicDescription,
};
pub use client::{BrokerInfo, Client, ClientConfig, ClusterView, Node, PartitionInfo, TopicInfo};
pub use commit::{CommitHandle, OffsetAndMetadata};
pub use consumer::{Assignor, Consumer, ConsumerConfig, OffsetReset, RebalanceEvent};
pub use error::{Error, Result};
pub use partitioner::{DefaultPartitioner, Partitioner};
pub use producer::{Acks, Compression, Delivery, Producer, ProducerConfig};
pub use quiver_proto::api::fetch::OffsetSpec;
pub use quiver_proto::api::ApiKey;
pub use quiver_proto::{BrokerId, ErrorCode, Offset, PartitionId, TimestampMs};
pub use record::{
    ConsumerRecord, Header, ProducerRecord, RecordMetadata, TimestampType, TopicPartition,
};
#[cfg(feature = "protobuf")]
pub use serialization::ProtobufSerde;
pub use serialization::{BytesSerde, Deserializer, JsonSerde, Serializer, StringSerde};
pub use transport::{ClientTls, ConnectOptions, TransportError};

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> TimestampMs {
    TimestampMs(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
    )
}
