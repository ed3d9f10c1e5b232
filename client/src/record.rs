//! The records users send and receive, and the small value types around them.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use quiver_proto::{Offset, PartitionId, TimestampMs};

/// What a key, a value or a header value can be made from: owned bytes are taken as they are
/// (no copy), borrowed ones are copied. So `.key(name.as_str())` and `.value(&buf[..n])` work
/// as well as `.value(String)` or `.value(Bytes)`.
///
/// ```
/// use quiver_client::{IntoPayload, ProducerRecord};
/// let name = String::from("customer-7");
/// let buf = [1u8, 2, 3, 4];
/// let r = ProducerRecord::new("orders").key(name.as_str()).value(&buf[..2]);
/// assert_eq!(r.key.as_deref(), Some(&b"customer-7"[..]));
/// assert_eq!(r.value.as_deref(), Some(&[1u8, 2][..]));
/// assert_eq!(&"x".into_payload()[..], b"x");
/// ```
pub trait IntoPayload {
    /// The bytes.
    fn into_payload(self) -> Bytes;
}

impl IntoPayload for Bytes {
    fn into_payload(self) -> Bytes {
        self
    }
}

impl IntoPayload for BytesMut {
    fn into_payload(self) -> Bytes {
        self.freeze()
    }
}

impl IntoPayload for String {
    fn into_payload(self) -> Bytes {
        Bytes::from(self)
    }
}

impl IntoPayload for Vec<u8> {
    fn into_payload(self) -> Bytes {
        Bytes::from(self)
    }
}

impl IntoPayload for Box<[u8]> {
    fn into_payload(self) -> Bytes {
        Bytes::from(self)
    }
}

impl<const N: usize> IntoPayload for [u8; N] {
    fn into_payload(self) -> Bytes {
        Bytes::copy_from_slice(&self)
    }
}

impl IntoPayload for Cow<'_, str> {
    fn into_payload(self) -> Bytes {
        match self {
            Cow::Borrowed(s) => Bytes::copy_from_slice(s.as_bytes()),
            Cow::Owned(s) => Bytes::from(s),
        }
    }
}

impl IntoPayload for Cow<'_, [u8]> {
    fn into_payload(self) -> Bytes {
        match self {
            Cow::Borrowed(s) => Bytes::copy_from_slice(s),
            Cow::Owned(s) => Bytes::from(s),
        }
    }
}

/// Borrowed data (`&str`, `&[u8]`, `&String`, `&Vec<u8>`, `&[u8; N]`, `&Bytes`, ...): copied.
impl<T: AsRef<[u8]> + ?Sized> IntoPayload for &T {
    fn into_payload(self) -> Bytes {
        Bytes::copy_from_slice(self.as_ref())
    }
}

/// A topic and one of its partitions.
///
/// ```
/// use quiver_client::TopicPartition;
/// let tp = TopicPartition::new("orders", 3);
/// assert_eq!(tp.to_string(), "orders/3");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// The topic's name.
    pub topic: String,
    /// The partition's number.
    pub partition: PartitionId,
}

impl TopicPartition {
    /// Partition `partition` of `topic`.
    pub fn new(topic: impl Into<String>, partition: u32) -> TopicPartition {
        TopicPartition {
            topic: topic.into(),
            partition: PartitionId(partition),
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition.0)
    }
}

/// One record header: a UTF-8 name and a byte value. A record's headers are ordered and may
/// repeat a name.
///
/// ```
/// use quiver_client::Header;
/// let h = Header::new("trace-id", "abc");
/// assert_eq!(&h.value[..], b"abc");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// The header's name.
    pub key: String,
    /// The header's value.
    pub value: Bytes,
}

impl Header {
    /// A header (the value may be borrowed: it is copied, see [`IntoPayload`]).
    pub fn new(key: impl Into<String>, value: impl IntoPayload) -> Header {
        Header {
            key: key.into(),
            value: value.into_payload(),
        }
    }
}

/// A record to send: topic, optional key, value, headers, and optionally an explicit partition
/// and timestamp. Built with chained setters. Keys and values take owned bytes as they are and
/// copy borrowed ones ([`IntoPayload`]). For typed keys and values, see
/// [`TypedProducer`](crate::TypedProducer).
///
/// ```
/// use quiver_client::ProducerRecord;
/// let r = ProducerRecord::new("orders")
///     .key("customer-42")
///     .value(&b"{\"total\": 12}"[..])
///     .header("source", "web");
/// assert_eq!(r.key.as_deref(), Some(&b"customer-42"[..]));
/// assert_eq!(r.headers.len(), 1);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerRecord {
    /// The topic to write to.
    pub topic: String,
    /// Decides the partition (same key, same partition) unless `partition` is set.
    pub key: Option<Bytes>,
    /// `None` is a tombstone (a null value).
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<Header>,
    /// Sends to this partition, bypassing the partitioner.
    pub partition: Option<PartitionId>,
    /// CreateTime in ms since the Unix epoch; `None`: the producer's clock when `send` is called.
    pub timestamp: Option<TimestampMs>,
}

impl ProducerRecord {
    /// A record for `topic` with no key, no value, no headers.
    pub fn new(topic: impl Into<String>) -> ProducerRecord {
        ProducerRecord {
            topic: topic.into(),
            ..ProducerRecord::default()
        }
    }

    /// Sets the key (same key, same partition).
    pub fn key(mut self, key: impl IntoPayload) -> ProducerRecord {
        self.key = Some(key.into_payload());
        self
    }

    /// Sets the value (without one the record is a tombstone).
    pub fn value(mut self, value: impl IntoPayload) -> ProducerRecord {
        self.value = Some(value.into_payload());
        self
    }

    /// Appends a header (names may repeat; order is kept).
    pub fn header(mut self, key: impl Into<String>, value: impl IntoPayload) -> ProducerRecord {
        self.headers.push(Header::new(key, value));
        self
    }

    /// Sends to this partition, bypassing the partitioner.
    pub fn partition(mut self, partition: u32) -> ProducerRecord {
        self.partition = Some(PartitionId(partition));
        self
    }

    /// Sets the record's CreateTime.
    pub fn timestamp(mut self, timestamp: TimestampMs) -> ProducerRecord {
        self.timestamp = Some(timestamp);
        self
    }

    /// Bytes the record takes in a batch, about: what the memory bound counts.
    pub(crate) fn estimated_size(&self) -> usize {
        // Length, attributes and deltas take at most ~21 bytes; keys and values a length varint.
        const RECORD_OVERHEAD: usize = 32;
        RECORD_OVERHEAD
            + self.key.as_ref().map_or(0, |k| k.len() + 5)
            + self.value.as_ref().map_or(0, |v| v.len() + 5)
            + self
                .headers
                .iter()
                .map(|h| h.key.len() + h.value.len() + 10)
                .sum::<usize>()
    }
}

/// Where a sent record landed.
///
/// ```
/// use quiver_client::RecordMetadata;
/// use quiver_client::{Offset, PartitionId, TimestampMs};
/// let m = RecordMetadata { topic: "t".into(), partition: PartitionId(0), offset: Some(Offset(7)), timestamp: TimestampMs(1) };
/// assert_eq!(m.offset, Some(Offset(7)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordMetadata {
    /// Shared with the other records of its batch (no allocation per record).
    pub topic: std::sync::Arc<str>,
    /// The partition it was written to.
    pub partition: PartitionId,
    /// The record's offset; `None` with acks=0, where the broker's answer is not awaited.
    pub offset: Option<Offset>,
    /// The record's timestamp: its CreateTime, or the broker's append time for topics with
    /// `message.timestamp.type=LogAppendTime`.
    pub timestamp: TimestampMs,
}

/// Who set a consumed record's timestamp.
pub use quiver_proto::batch::TimestampType;

/// A record read from a partition.
///
/// ```
/// # use quiver_client::{ConsumerRecord, Offset, PartitionId, TimestampMs, TimestampType};
/// # let r = ConsumerRecord { topic: "t".into(), partition: PartitionId(0), offset: Offset(0),
/// #   timestamp: TimestampMs(0), timestamp_type: TimestampType::CreateTime, key: None,
/// #   value: Some(bytes::Bytes::from_static(b"hi")), headers: vec![] };
/// println!("{}/{}@{}: {:?}", r.topic, r.partition, r.offset, r.value_str());
/// assert_eq!(r.value_str(), Some("hi"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// The topic it was read from.
    pub topic: Arc<str>,
    /// The partition it was read from.
    pub partition: PartitionId,
    /// Its offset in the partition.
    pub offset: Offset,
    /// Its timestamp (see `timestamp_type`).
    pub timestamp: TimestampMs,
    /// Who set the timestamp: the producer (CreateTime) or the broker (LogAppendTime).
    pub timestamp_type: TimestampType,
    /// The key; `None`: a null key.
    pub key: Option<Bytes>,
    /// `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<Header>,
}

impl ConsumerRecord {
    /// The value as UTF-8, if it is present and valid UTF-8.
    pub fn value_str(&self) -> Option<&str> {
        self.value
            .as_deref()
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The key as UTF-8, if it is present and valid UTF-8.
    pub fn key_str(&self) -> Option<&str> {
        self.key
            .as_deref()
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The first header with this name.
    pub fn header(&self, key: &str) -> Option<&Bytes> {
        self.headers.iter().find(|h| h.key == key).map(|h| &h.value)
    }

    /// The value decoded with a deserializer (see [`crate::serialization`]); `None` for a
    /// tombstone (a null value), which is never handed to the deserializer.
    ///
    /// ```
    /// # use quiver_client::{ConsumerRecord, Offset, PartitionId, TimestampMs, TimestampType, StringSerde};
    /// # let mut r = ConsumerRecord { topic: "t".into(), partition: PartitionId(0), offset: Offset(0),
    /// #   timestamp: TimestampMs(0), timestamp_type: TimestampType::CreateTime, key: None,
    /// #   value: Some(bytes::Bytes::from_static(b"hi")), headers: vec![] };
    /// let v: Option<String> = r.deserialize_value(&StringSerde)?;
    /// assert_eq!(v.as_deref(), Some("hi"));
    /// r.value = None; // a tombstone
    /// assert_eq!(r.deserialize_value::<String, _>(&StringSerde)?, None);
    /// # Ok::<(), quiver_client::Error>(())
    /// ```
    pub fn deserialize_value<T, D: crate::serialization::Deserializer<T>>(
        &self,
        deserializer: &D,
    ) -> crate::Result<Option<T>> {
        self.value
            .as_deref()
            .map(|v| deserializer.deserialize(&self.topic, v))
            .transpose()
    }

    /// The key decoded with a deserializer; `None` for a null key.
    pub fn deserialize_key<T, D: crate::serialization::Deserializer<T>>(
        &self,
        deserializer: &D,
    ) -> crate::Result<Option<T>> {
        self.key
            .as_deref()
            .map(|k| deserializer.deserialize(&self.topic, k))
            .transpose()
    }
}
