//! Typed producers and consumers: a [`Producer`] or [`Consumer`] with a serializer (or
//! deserializer) for keys and one for values, as Kafka's `KafkaProducer<K, V>` and
//! `KafkaConsumer<K, V>` are built with a key and a value serde.
//!
//! A null key or value is `None` both ways: a [`TypedProducerRecord`] without a value is a
//! tombstone, and a tombstone reads back as a [`TypedConsumerRecord`] whose `value` is `None`
//! (never handed to the deserializer).
//!
//! ```no_run
//! # async fn f(client: quiver_client::Client) -> quiver_client::Result<()> {
//! use futures_util::StreamExt;
//! use quiver_client::{Consumer, ConsumerConfig, JsonSerde, Producer, ProducerConfig,
//!     StringSerde, TypedProducerRecord};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Order { id: u64, total_cents: u64 }
//!
//! let producer = Producer::new(client.clone(), ProducerConfig::default())?
//!     .typed::<str, Order, _, _>(StringSerde, JsonSerde);
//! let order = Order { id: 7, total_cents: 1250 };
//! producer.send(TypedProducerRecord::new("orders").key("customer-7").value(&order)).await?;
//! producer.send(TypedProducerRecord::new("orders").key("customer-8")).await?; // a tombstone
//! producer.close().await?;
//!
//! let mut consumer = Consumer::new(client, ConsumerConfig::default().group_id("billing"))
//!     .typed::<String, Order, _, _>(StringSerde, JsonSerde);
//! consumer.subscribe(vec!["orders".into()]).await?;
//! let mut records = consumer.stream();
//! while let Some(r) = records.next().await {
//!     let r = r?;
//!     match r.value {
//!         Some(order) => println!("{:?}: order {} for {}", r.key, order.id, order.total_cents),
//!         None => println!("{:?}: deleted", r.key),
//!     }
//! }
//! # Ok(()) }
//! ```

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use quiver_proto::{Offset, PartitionId, TimestampMs};

use crate::consumer::Consumer;
use crate::error::{Error, Result};
use crate::producer::{Delivery, Producer};
use crate::record::{
    ConsumerRecord, Header, IntoPayload, ProducerRecord, RecordMetadata, TimestampType,
    TopicPartition,
};
use crate::serialization::{Deserializer, Serializer};

/// A record to send with a [`TypedProducer`]: the key and value are borrowed and serialized
/// when the record is sent. Without a value it is a tombstone; without a key the partitioner
/// spreads it.
///
/// ```
/// use quiver_client::TypedProducerRecord;
/// let customer = String::from("customer-7");
/// let r: TypedProducerRecord<'_, String, u64> =
///     TypedProducerRecord::new("orders").key(&customer).value(&1250).header("v", "1");
/// assert_eq!(r.key, Some(&customer));
/// ```
pub struct TypedProducerRecord<'a, K: ?Sized, V: ?Sized> {
    /// The topic to write to.
    pub topic: String,
    /// The key; `None`: a null key.
    pub key: Option<&'a K>,
    /// The value; `None`: a tombstone.
    pub value: Option<&'a V>,
    /// Headers, in order.
    pub headers: Vec<Header>,
    /// Sends to this partition, bypassing the partitioner.
    pub partition: Option<PartitionId>,
    /// CreateTime; `None`: the producer's clock when the record is sent.
    pub timestamp: Option<TimestampMs>,
}

impl<K: ?Sized, V: ?Sized> Clone for TypedProducerRecord<'_, K, V> {
    fn clone(&self) -> Self {
        TypedProducerRecord {
            topic: self.topic.clone(),
            key: self.key,
            value: self.value,
            headers: self.headers.clone(),
            partition: self.partition,
            timestamp: self.timestamp,
        }
    }
}

impl<'a, K: ?Sized, V: ?Sized> TypedProducerRecord<'a, K, V> {
    /// A record for `topic` with no key, no value (a tombstone) and no headers.
    pub fn new(topic: impl Into<String>) -> Self {
        TypedProducerRecord {
            topic: topic.into(),
            key: None,
            value: None,
            headers: Vec::new(),
            partition: None,
            timestamp: None,
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: &'a K) -> Self {
        self.key = Some(key);
        self
    }

    /// Sets the value.
    pub fn value(mut self, value: &'a V) -> Self {
        self.value = Some(value);
        self
    }

    /// Appends a header (names may repeat; order is kept).
    pub fn header(mut self, key: impl Into<String>, value: impl IntoPayload) -> Self {
        self.headers.push(Header::new(key, value));
        self
    }

    /// Sends to this partition, bypassing the partitioner.
    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(PartitionId(partition));
        self
    }

    /// Sets the record's CreateTime.
    pub fn timestamp(mut self, timestamp: TimestampMs) -> Self {
        self.timestamp = Some(timestamp);
        self
    }
}

/// A [`Producer`] that serializes keys of type `K` with `KS` and values of type `V` with `VS`
/// (Kafka's `KafkaProducer<K, V>`). Made with [`Producer::typed`] or [`TypedProducer::new`];
/// cheap to clone when the serializers are. `K` and `V` may be unsized (`str`, `[u8]`): records
/// borrow them.
///
/// Sending works as with [`Producer`]: [`send`](Self::send) waits for the record's
/// acknowledgement, [`enqueue`](Self::enqueue) only for room in the buffer (the fast way to send
/// many), and [`close`](Self::close) before the program exits.
///
/// ```no_run
/// # async fn f(producer: quiver_client::Producer) -> quiver_client::Result<()> {
/// use quiver_client::{JsonSerde, StringSerde, TypedProducerRecord};
/// let producer = producer.typed::<str, serde_json::Value, _, _>(StringSerde, JsonSerde);
/// let v = serde_json::json!({"total": 12});
/// let delivery = producer.enqueue(TypedProducerRecord::new("orders").key("k").value(&v)).await?;
/// delivery.await?;
/// # Ok(()) }
/// ```
pub struct TypedProducer<K: ?Sized, V: ?Sized, KS, VS> {
    producer: Producer,
    key_serializer: KS,
    value_serializer: VS,
    _types: PhantomData<fn(&K, &V)>,
}

impl<K: ?Sized, V: ?Sized, KS: Clone, VS: Clone> Clone for TypedProducer<K, V, KS, VS> {
    fn clone(&self) -> Self {
        TypedProducer {
            producer: self.producer.clone(),
            key_serializer: self.key_serializer.clone(),
            value_serializer: self.value_serializer.clone(),
            _types: PhantomData,
        }
    }
}

impl Producer {
    /// This producer with a key and a value serializer: a [`TypedProducer`].
    pub fn typed<K: ?Sized, V: ?Sized, KS, VS>(
        self,
        key_serializer: KS,
        value_serializer: VS,
    ) -> TypedProducer<K, V, KS, VS>
    where
        KS: Serializer<K>,
        VS: Serializer<V>,
    {
        TypedProducer::new(self, key_serializer, value_serializer)
    }
}

impl<K: ?Sized, V: ?Sized, KS, VS> TypedProducer<K, V, KS, VS>
where
    KS: Serializer<K>,
    VS: Serializer<V>,
{
    /// `producer` with these serializers.
    pub fn new(producer: Producer, key_serializer: KS, value_serializer: VS) -> Self {
        TypedProducer {
            producer,
            key_serializer,
            value_serializer,
            _types: PhantomData,
        }
    }

    /// The record as bytes: its key and value serialized (a `None` stays null).
    pub fn serialize(&self, record: TypedProducerRecord<'_, K, V>) -> Result<ProducerRecord> {
        let topic = record.topic;
        let key = match record.key {
            Some(k) => Some(self.key_serializer.serialize(&topic, k)?),
            None => None,
        };
        let value = match record.value {
            Some(v) => Some(self.value_serializer.serialize(&topic, v)?),
            None => None,
        };
        Ok(ProducerRecord {
            topic,
            key,
            value,
            headers: record.headers,
            partition: record.partition,
            timestamp: record.timestamp,
        })
    }

    /// Serializes and sends a record, and waits for its acknowledgement
    /// ([`Producer::send`]: slow in a loop, see there).
    pub async fn send(&self, record: TypedProducerRecord<'_, K, V>) -> Result<RecordMetadata> {
        let record = self.serialize(record)?;
        self.producer.send(record).await
    }

    /// Serializes and buffers a record; the [`Delivery`] resolves when the broker answers
    /// ([`Producer::enqueue`]).
    pub async fn enqueue(&self, record: TypedProducerRecord<'_, K, V>) -> Result<Delivery> {
        let record = self.serialize(record)?;
        self.producer.enqueue(record).await
    }

    /// Serializes and buffers a record, its outcome going to the delivery listener
    /// ([`Producer::enqueue_with_opaque`]).
    pub async fn enqueue_with_opaque(
        &self,
        record: TypedProducerRecord<'_, K, V>,
        opaque: u64,
    ) -> Result<()> {
        let record = self.serialize(record)?;
        self.producer.enqueue_with_opaque(record, opaque).await
    }
}

impl<K: ?Sized, V: ?Sized, KS, VS> TypedProducer<K, V, KS, VS> {
    /// [`Producer::flush`].
    pub async fn flush(&self) -> Result<()> {
        self.producer.flush().await
    }

    /// [`Producer::flush_timeout`].
    pub async fn flush_timeout(&self, timeout: Duration) -> Result<()> {
        self.producer.flush_timeout(timeout).await
    }

    /// [`Producer::close`]: call it before the program exits.
    pub async fn close(&self) -> Result<()> {
        self.producer.close().await
    }

    /// [`Producer::close_timeout`].
    pub async fn close_timeout(&self, timeout: Duration) -> Result<()> {
        self.producer.close_timeout(timeout).await
    }

    /// The untyped producer (shares this one's buffer).
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    /// The untyped producer, without the serializers.
    pub fn into_inner(self) -> Producer {
        self.producer
    }
}

/// A record read by a [`TypedConsumer`]: [`ConsumerRecord`] with its key and value
/// deserialized. A null key or value (a tombstone) is `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypedConsumerRecord<K, V> {
    /// The topic it was read from.
    pub topic: Arc<str>,
    /// The partition it was read from.
    pub partition: PartitionId,
    /// Its offset in the partition.
    pub offset: Offset,
    /// Its timestamp (see `timestamp_type`).
    pub timestamp: TimestampMs,
    /// Who set the timestamp.
    pub timestamp_type: TimestampType,
    /// The key; `None`: a null key.
    pub key: Option<K>,
    /// The value; `None`: a tombstone.
    pub value: Option<V>,
    /// Headers, in order.
    pub headers: Vec<crate::Header>,
}

impl<K, V> TypedConsumerRecord<K, V> {
    /// The first header with this name.
    pub fn header(&self, key: &str) -> Option<&bytes::Bytes> {
        self.headers.iter().find(|h| h.key == key).map(|h| &h.value)
    }

    /// The record's topic and partition.
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition::new(&*self.topic, self.partition.0)
    }
}

/// A record's key and value, deserialized; an error names the record.
fn decode<K, V>(
    r: &ConsumerRecord,
    keys: &impl Deserializer<K>,
    values: &impl Deserializer<V>,
) -> Result<(Option<K>, Option<V>)> {
    let at = |what: &str, e: Error| {
        Error::Serialization(format!(
            "the {what} of {}/{} at offset {}: {e}",
            r.topic, r.partition.0, r.offset
        ))
    };
    let key = r.deserialize_key(keys).map_err(|e| at("key", e))?;
    let value = r.deserialize_value(values).map_err(|e| at("value", e))?;
    Ok((key, value))
}

/// The typed record of `r` with its decoded key and value.
fn typed<K, V>(
    r: ConsumerRecord,
    (key, value): (Option<K>, Option<V>),
) -> TypedConsumerRecord<K, V> {
    TypedConsumerRecord {
        topic: r.topic,
        partition: r.partition,
        offset: r.offset,
        timestamp: r.timestamp,
        timestamp_type: r.timestamp_type,
        key,
        value,
        headers: r.headers,
    }
}

/// `r` deserialized.
fn deserialize<K, V>(
    r: ConsumerRecord,
    keys: &impl Deserializer<K>,
    values: &impl Deserializer<V>,
) -> Result<TypedConsumerRecord<K, V>> {
    let decoded = decode(&r, keys, values)?;
    Ok(typed(r, decoded))
}

/// A [`Consumer`] that deserializes keys with `KD` and values with `VD` (Kafka's
/// `KafkaConsumer<K, V>`). Made with [`Consumer::typed`] or [`TypedConsumer::new`].
///
/// [`poll`](Self::poll) returns typed records, [`stream`](Self::stream) yields them one at a
/// time. Everything else (seek, pause, positions, commits) is the [`Consumer`]'s, through
/// [`consumer_mut`](Self::consumer_mut); the most used calls are here too.
///
/// A record whose key or value does not deserialize is reported as an
/// [`Error::Serialization`] naming its topic, partition and offset, once: the consumer's
/// position is past it, and the next `poll` goes on after it (to stop at it instead, `seek`
/// back to that offset).
///
/// ```no_run
/// # async fn f(consumer: quiver_client::Consumer) -> quiver_client::Result<()> {
/// use quiver_client::{JsonSerde, StringSerde};
/// use std::time::Duration;
/// let mut consumer = consumer.typed::<String, serde_json::Value, _, _>(StringSerde, JsonSerde);
/// consumer.subscribe(vec!["orders".into()]).await?;
/// for r in consumer.poll(Duration::from_secs(1)).await? {
///     println!("{}@{} {:?} {:?}", r.partition, r.offset, r.key, r.value);
/// }
/// # Ok(()) }
/// ```
pub struct TypedConsumer<K, V, KD, VD> {
    consumer: Consumer,
    key_deserializer: KD,
    value_deserializer: VD,
    _types: PhantomData<fn() -> (K, V)>,
}

impl Consumer {
    /// This consumer with a key and a value deserializer: a [`TypedConsumer`].
    pub fn typed<K, V, KD, VD>(
        self,
        key_deserializer: KD,
        value_deserializer: VD,
    ) -> TypedConsumer<K, V, KD, VD>
    where
        KD: Deserializer<K>,
        VD: Deserializer<V>,
    {
        TypedConsumer::new(self, key_deserializer, value_deserializer)
    }
}

impl<K, V, KD, VD> TypedConsumer<K, V, KD, VD>
where
    KD: Deserializer<K>,
    VD: Deserializer<V>,
{
    /// `consumer` with these deserializers.
    pub fn new(consumer: Consumer, key_deserializer: KD, value_deserializer: VD) -> Self {
        TypedConsumer {
            consumer,
            key_deserializer,
            value_deserializer,
            _types: PhantomData,
        }
    }

    /// [`Consumer::poll`], with each record's key and value deserialized. A record that does
    /// not deserialize fails the call (see [`TypedConsumer`]); the records polled with it are
    /// returned by the next call.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<TypedConsumerRecord<K, V>>> {
        let mut records = self.consumer.poll(timeout).await?;
        let mut decoded = Vec::with_capacity(records.len());
        let mut failed = None;
        for (i, r) in records.iter().enumerate() {
            match decode(r, &self.key_deserializer, &self.value_deserializer) {
                Ok(d) => decoded.push(d),
                Err(e) => {
                    failed = Some((i, e));
                    break;
                }
            }
        }
        if let Some((i, e)) = failed {
            // The error is returned alone: the other records go back to the consumer, for the
            // next poll, and only the bad one is skipped.
            records.remove(i);
            self.consumer.rewind(records);
            return Err(e);
        }
        Ok(records
            .into_iter()
            .zip(decoded)
            .map(|(r, d)| typed(r, d))
            .collect())
    }

    /// A stream of this consumer's records, deserialized: [`Consumer::stream`] with each item
    /// typed. A record that does not deserialize is yielded as an error, and the stream goes
    /// on after it.
    pub fn stream(&mut self) -> impl Stream<Item = Result<TypedConsumerRecord<K, V>>> + '_ {
        let keys = &self.key_deserializer;
        let values = &self.value_deserializer;
        self.consumer
            .stream()
            .map(move |r| r.and_then(|r| deserialize(r, keys, values)))
    }
}

impl<K, V, KD, VD> TypedConsumer<K, V, KD, VD> {
    /// [`Consumer::subscribe`].
    pub async fn subscribe(&mut self, topics: Vec<String>) -> Result<()> {
        self.consumer.subscribe(topics).await
    }

    /// [`Consumer::assign`].
    pub fn assign(&mut self, partitions: Vec<TopicPartition>) -> Result<()> {
        self.consumer.assign(partitions)
    }

    /// [`Consumer::commit`].
    pub async fn commit(&mut self) -> Result<()> {
        self.consumer.commit().await
    }

    /// [`Consumer::close`]: commits (per the configuration) and leaves the group.
    pub async fn close(self) -> Result<()> {
        self.consumer.close().await
    }

    /// The untyped consumer.
    pub fn consumer(&self) -> &Consumer {
        &self.consumer
    }

    /// The untyped consumer, for every other call (seek, pause, positions, commits).
    pub fn consumer_mut(&mut self) -> &mut Consumer {
        &mut self.consumer
    }

    /// The untyped consumer, without the deserializers.
    pub fn into_inner(self) -> Consumer {
        self.consumer
    }
}
