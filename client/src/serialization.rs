//! Serializers and deserializers: how typed keys and values become record bytes and back.
//!
//! Bytes ([`BytesSerde`]), UTF-8 strings ([`StringSerde`]), JSON through serde ([`JsonSerde`]),
//! and protobuf through prost (`ProtobufSerde`, behind the `protobuf` feature). Implement
//! [`Serializer`] / [`Deserializer`] for any other format.
//!
//! A [`TypedProducer`](crate::TypedProducer) and a [`TypedConsumer`](crate::TypedConsumer)
//! apply them to every record; a null key or value is `None` and never reaches them.
//!
//! ```
//! use quiver_client::{JsonSerde, ProducerRecord, Serializer, Deserializer};
//! #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
//! struct Order { id: u64, total_cents: u64 }
//!
//! let order = Order { id: 7, total_cents: 1250 };
//! let bytes = JsonSerde.serialize("orders", &order).unwrap();
//! let record = ProducerRecord::new("orders").key("7").value(bytes.clone());
//! let back: Order = JsonSerde.deserialize("orders", &bytes).unwrap();
//! assert_eq!(back, order);
//! # let _ = record;
//! ```

use bytes::Bytes;

use crate::error::{Error, Result};

/// Turns a `T` into record bytes. `topic` is given for formats that depend on it (schemas).
///
/// ```
/// use quiver_client::{Serializer, StringSerde};
/// assert_eq!(&StringSerde.serialize("t", "hé").unwrap()[..], "hé".as_bytes());
/// ```
pub trait Serializer<T: ?Sized> {
    /// The bytes of `data`, for a record of `topic`.
    fn serialize(&self, topic: &str, data: &T) -> Result<Bytes>;
}

/// Turns record bytes into a `T`.
///
/// ```
/// use quiver_client::{Deserializer, StringSerde};
/// let s: String = StringSerde.deserialize("t", b"hello").unwrap();
/// assert_eq!(s, "hello");
/// assert!(Deserializer::<String>::deserialize(&StringSerde, "t", &[0xff]).is_err());
/// ```
pub trait Deserializer<T> {
    /// The value `data` holds, from a record of `topic`.
    fn deserialize(&self, topic: &str, data: &[u8]) -> Result<T>;
}

/// Bytes as they are.
///
/// ```
/// use quiver_client::{BytesSerde, Serializer, Deserializer};
/// let b = BytesSerde.serialize("t", &[0u8, 255][..]).unwrap();
/// let v: Vec<u8> = BytesSerde.deserialize("t", &b).unwrap();
/// assert_eq!(v, vec![0, 255]);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct BytesSerde;

impl Serializer<[u8]> for BytesSerde {
    fn serialize(&self, _topic: &str, data: &[u8]) -> Result<Bytes> {
        Ok(Bytes::copy_from_slice(data))
    }
}

impl Serializer<Vec<u8>> for BytesSerde {
    fn serialize(&self, _topic: &str, data: &Vec<u8>) -> Result<Bytes> {
        Ok(Bytes::copy_from_slice(data))
    }
}

impl Serializer<Bytes> for BytesSerde {
    fn serialize(&self, _topic: &str, data: &Bytes) -> Result<Bytes> {
        Ok(data.clone())
    }
}

impl Deserializer<Vec<u8>> for BytesSerde {
    fn deserialize(&self, _topic: &str, data: &[u8]) -> Result<Vec<u8>> {
        Ok(data.to_vec())
    }
}

impl Deserializer<Bytes> for BytesSerde {
    fn deserialize(&self, _topic: &str, data: &[u8]) -> Result<Bytes> {
        Ok(Bytes::copy_from_slice(data))
    }
}

/// UTF-8 text; deserializing bytes that are not UTF-8 is an error, never a lossy conversion.
///
/// ```
/// use quiver_client::{Serializer, StringSerde};
/// assert_eq!(&StringSerde.serialize("t", &String::from("x")).unwrap()[..], b"x");
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct StringSerde;

impl Serializer<str> for StringSerde {
    fn serialize(&self, _topic: &str, data: &str) -> Result<Bytes> {
        Ok(Bytes::copy_from_slice(data.as_bytes()))
    }
}

impl Serializer<String> for StringSerde {
    fn serialize(&self, _topic: &str, data: &String) -> Result<Bytes> {
        Ok(Bytes::copy_from_slice(data.as_bytes()))
    }
}

impl Deserializer<String> for StringSerde {
    fn deserialize(&self, topic: &str, data: &[u8]) -> Result<String> {
        String::from_utf8(data.to_vec())
            .map_err(|e| Error::Serialization(format!("record of topic '{topic}': {e}")))
    }
}

/// JSON through serde_json.
///
/// ```
/// use quiver_client::{JsonSerde, Serializer, Deserializer};
/// let b = JsonSerde.serialize("t", &vec![1, 2]).unwrap();
/// assert_eq!(&b[..], b"[1,2]");
/// let v: Vec<u32> = JsonSerde.deserialize("t", &b).unwrap();
/// assert_eq!(v, vec![1, 2]);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonSerde;

impl<T: serde::Serialize + ?Sized> Serializer<T> for JsonSerde {
    fn serialize(&self, topic: &str, data: &T) -> Result<Bytes> {
        serde_json::to_vec(data)
            .map(Bytes::from)
            .map_err(|e| Error::Serialization(format!("JSON for topic '{topic}': {e}")))
    }
}

impl<T: serde::de::DeserializeOwned> Deserializer<T> for JsonSerde {
    fn deserialize(&self, topic: &str, data: &[u8]) -> Result<T> {
        serde_json::from_slice(data)
            .map_err(|e| Error::Serialization(format!("JSON of topic '{topic}': {e}")))
    }
}

/// Protobuf messages through prost (feature `protobuf`).
///
/// ```
/// # #[cfg(feature = "protobuf")] {
/// use quiver_client::{ProtobufSerde, Serializer, Deserializer};
/// #[derive(Clone, PartialEq, prost::Message)]
/// struct Ping { #[prost(uint64, tag = "1")] seq: u64 }
/// let b = ProtobufSerde.serialize("t", &Ping { seq: 9 }).unwrap();
/// let p: Ping = ProtobufSerde.deserialize("t", &b).unwrap();
/// assert_eq!(p.seq, 9);
/// # }
/// ```
#[cfg(feature = "protobuf")]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProtobufSerde;

#[cfg(feature = "protobuf")]
impl<T: prost::Message> Serializer<T> for ProtobufSerde {
    fn serialize(&self, _topic: &str, data: &T) -> Result<Bytes> {
        Ok(Bytes::from(data.encode_to_vec()))
    }
}

#[cfg(feature = "protobuf")]
impl<T: prost::Message + Default> Deserializer<T> for ProtobufSerde {
    fn deserialize(&self, topic: &str, data: &[u8]) -> Result<T> {
        T::decode(data)
            .map_err(|e| Error::Serialization(format!("protobuf of topic '{topic}': {e}")))
    }
}
