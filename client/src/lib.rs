//! The Quiver Rust SDK: [`Producer`], [`Consumer`] and [`Admin`] for Quiver brokers (`streamd`),
//! over QUIC with TLS. Runs on tokio with quinn; never depends on glommio, engine, net or broker.
//!
//! ```no_run
//! use quiver_client::{Client, ClientConfig, Consumer, ConsumerConfig, JsonSerde, OffsetReset,
//!     Producer, ProducerConfig, StreamExt, StringSerde, TypedProducerRecord};
//!
//! #[derive(serde::Serialize, serde::Deserialize, Debug)]
//! struct Order { id: u64, total_cents: u64 }
//!
//! # async fn demo() -> quiver_client::Result<()> {
//! // QUIVER_BOOTSTRAP (default 127.0.0.1:9092) and QUIVER_CA_FILE (default ./data/tls/ca.pem:
//! // the development CA of a streamd started in this directory).
//! let client = Client::connect(ClientConfig::from_env()?).await?;
//!
//! // Keys as strings, values as JSON.
//! let producer = Producer::new(client.clone(), ProducerConfig::default())?
//!     .typed::<str, Order, _, _>(StringSerde, JsonSerde);
//! for id in 0..100 {
//!     let order = Order { id, total_cents: 250 * id };
//!     let record = TypedProducerRecord::new("orders").key("customer-1").value(&order);
//!     // Returns once buffered: many records share a request (`send` waits for each one).
//!     // The Delivery it returns (dropped here) tells this record's outcome.
//!     drop(producer.enqueue(record).await?);
//! }
//! // Before exiting: sends what is buffered, and fails if any record was not written.
//! producer.close().await?;
//!
//! let config = ConsumerConfig::default().group_id("billing").auto_offset_reset(OffsetReset::Earliest);
//! let mut consumer = Consumer::new(client, config).typed::<String, Order, _, _>(StringSerde, JsonSerde);
//! consumer.subscribe(vec!["orders".into()]).await?;
//! let mut records = consumer.stream().take(100);
//! while let Some(r) = records.next().await {
//!     let r = r?;
//!     // A null value (a tombstone) is `None`.
//!     println!("{}@{} {:?}: {:?}", r.partition, r.offset, r.key, r.value);
//! }
//! drop(records);
//! consumer.close().await?; // commits, and leaves the group at once
//! # Ok(()) }
//! ```
//!
//! Where to start:
//! - [`ClientConfig`]: in code, [`from_env`](ClientConfig::from_env) (`QUIVER_*`), or
//!   [`from_properties`](ClientConfig::from_properties) (`bootstrap.servers`,
//!   `ssl.ca.location`, ...). Without a CA file the client trusts `./data/tls/ca.pem`, relative
//!   to the working directory.
//! - [`Producer`] with bytes ([`ProducerRecord`]) or [`TypedProducer`] with serializers;
//!   [`Producer::close`] before exit.
//! - [`Consumer`] with [`poll`](Consumer::poll) or [`stream`](Consumer::stream), or
//!   [`TypedConsumer`]; [`Consumer::close`] when done.
//! - [`Admin`] for topics, configurations, groups, users and ACLs.
//! - Brokers that require authentication: [`ClientConfig::sasl`] (or `QUIVER_SASL_USERNAME`
//!   and `QUIVER_SASL_PASSWORD`); every connection authenticates with SASL SCRAM before its
//!   first request, and a refusal is [`Error::Authentication`], never retried.
//!
//! Errors are one type, [`Error`], whose [`Error::code`] gives the broker's [`ErrorCode`] when
//! there is one (`UnknownTopicOrPartition`, `MessageTooLarge`, ...); errors of a connection
//! name the broker's address.
//!
//! [`transport`] is the low-level QUIC layer; applications need nothing there but
//! [`ClientTls`].

#![deny(missing_docs)]

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
pub mod typed;

/// The `bytes` crate the SDK's keys, values and headers are made of.
pub use bytes;
/// `Stream` and its combinators (`next`, `take`, ...), for [`Consumer::stream`] without
/// another dependency.
pub use futures_util::{Stream, StreamExt};

pub use admin::{
    Admin, AlterConfig, BrokerDescription, ClusterDescription, ConfigEntry, ConfigResource,
    FollowerProgress, GroupDescription, GroupListing, GroupMember, GroupOffset, GroupState,
    NewTopic, PartitionDescription, QuorumDescription, QuotaDescription, QuotaEntity, QuotaName,
    RegisteredBroker, ScramCredential, TopicDescription, UserDescription, VoterDescription,
    CONSUMER_BYTE_RATE, PRODUCER_BYTE_RATE, REQUEST_PERCENTAGE,
};
pub use client::{
    BrokerInfo, Client, ClientConfig, ClusterView, Node, PartitionInfo, SaslCredentials, TopicInfo,
};
pub use commit::{CommitHandle, OffsetAndMetadata};
pub use consumer::{
    Assignor, Consumer, ConsumerConfig, ConsumerStream, OffsetReset, RebalanceEvent,
};
pub use error::{BrokerAddr, Error, Result};
pub use partitioner::{DefaultPartitioner, Partitioner};
pub use producer::{Acks, Compression, Delivery, Producer, ProducerConfig};
pub use quiver_proto::api::acl::{
    AclBinding, AclFilter, AclOperation, AclPatternType, AclPermission, AclResourceType,
};
pub use quiver_proto::api::fetch::OffsetSpec;
pub use quiver_proto::api::ApiKey;
/// SCRAM-SHA-256 or SCRAM-SHA-512: what [`SaslCredentials`] authenticate with and what
/// [`Admin::create_user`] makes a credential for.
pub use quiver_proto::scram::Mechanism as ScramMechanism;
pub use quiver_proto::{BrokerId, ErrorCode, Offset, PartitionId, TimestampMs};
pub use record::{
    ConsumerRecord, Header, IntoPayload, ProducerRecord, RecordMetadata, TimestampType,
    TopicPartition,
};
#[cfg(feature = "protobuf")]
pub use serialization::ProtobufSerde;
pub use serialization::{BytesSerde, Deserializer, JsonSerde, Serializer, StringSerde};
pub use transport::{ClientTls, ConnectOptions, TransportError};
pub use typed::{TypedConsumer, TypedConsumerRecord, TypedProducer, TypedProducerRecord};

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> TimestampMs {
    TimestampMs(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
    )
}
