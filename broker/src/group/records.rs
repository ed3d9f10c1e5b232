//! The records of `__consumer_offsets`: one record per committed partition offset, keyed so the
//! latest record for a key wins when the log is replayed, and a tombstone (no value) deletes.
//!
//! ```text
//! key   = version u8 (1) | kind u8 (1 = offset) | group  u16-len + UTF-8
//!                        | topic u16-len + UTF-8 | partition u32 LE
//! value = version u8 (1) | offset u64 LE | leader epoch i64 LE (-1: none) | commit time ms i64 LE
//!                        | metadata u16-len + UTF-8
//! ```
//! Fixed little-endian fields and explicit lengths: decoding checks every length against what is
//! left and fails with a message rather than panic, since these bytes come back from disk.

use bytes::{BufMut, BytesMut};

const VERSION: u8 = 1;
const KIND_OFFSET: u8 = 1;
/// Longest metadata string stored with an offset (Kafka's offset.metadata.max.bytes).
pub const METADATA_BYTES_MAX: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OffsetKey {
    pub group: String,
    pub topic: String,
    pub partition: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: u64,
    pub leader_epoch: Option<u32>,
    pub commit_ms: i64,
    pub metadata: String,
}

fn put_str(out: &mut BytesMut, s: &str) {
    let len = u16::try_from(s.len()).expect("names and metadata are bounded well below 64 KiB");
    out.put_u16_le(len);
    out.put_slice(s.as_bytes());
}

pub fn encode_key(k: &OffsetKey) -> Vec<u8> {
    let mut out = BytesMut::with_capacity(2 + 4 + k.group.len() + k.topic.len() + 4);
    out.put_u8(VERSION);
    out.put_u8(KIND_OFFSET);
    put_str(&mut out, &k.group);
    put_str(&mut out, &k.topic);
    out.put_u32_le(k.partition);
    out.to_vec()
}

pub fn encode_value(v: &OffsetValue) -> Vec<u8> {
    let mut out = BytesMut::with_capacity(1 + 8 + 8 + 8 + 2 + v.metadata.len());
    out.put_u8(VERSION);
    out.put_u64_le(v.offset);
    out.put_i64_le(v.leader_epoch.map_or(-1, i64::from));
    out.put_i64_le(v.commit_ms);
    put_str(&mut out, &v.metadata);
    out.to_vec()
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err(format!("needs {n} more bytes, {} left", self.0.len()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn string(&mut self) -> Result<String, String> {
        let len = u16::from_le_bytes(self.take(2)?.try_into().expect("2")) as usize;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| "string is not UTF-8".to_string())
    }
}

pub fn decode_key(bytes: &[u8]) -> Result<OffsetKey, String> {
    let mut r = Reader(bytes);
    let (version, kind) = (r.u8()?, r.u8()?);
    if version != VERSION || kind != KIND_OFFSET {
        return Err(format!("unknown key version {version} kind {kind}"));
    }
    Ok(OffsetKey {
        group: r.string()?,
        topic: r.string()?,
        partition: r.u32()?,
    })
}

pub fn decode_value(bytes: &[u8]) -> Result<OffsetValue, String> {
    let mut r = Reader(bytes);
    let version = r.u8()?;
    if version != VERSION {
        return Err(format!("unknown value version {version}"));
    }
    let offset = r.u64()?;
    let epoch = r.u64()? as i64;
    let commit_ms = r.u64()? as i64;
    let metadata = r.string()?;
    Ok(OffsetValue {
        offset,
        leader_epoch: u32::try_from(epoch).ok(),
        commit_ms,
        metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_hostile_bytes_are_errors() {
        let k = OffsetKey {
            group: "g".into(),
            topic: "orders.v2".into(),
            partition: 7,
        };
        let v = OffsetValue {
            offset: 42,
            leader_epoch: Some(3),
            commit_ms: 1_700_000_000_000,
            metadata: "m".into(),
        };
        assert_eq!(decode_key(&encode_key(&k)).unwrap(), k);
        assert_eq!(decode_value(&encode_value(&v)).unwrap(), v);
        let none = OffsetValue {
            leader_epoch: None,
            ..v.clone()
        };
        assert_eq!(decode_value(&encode_value(&none)).unwrap(), none);
        let key = encode_key(&k);
        for cut in 0..key.len() {
            assert!(decode_key(&key[..cut]).is_err());
        }
        assert!(decode_key(&[1, 1, 0xff, 0xff]).is_err());
        assert!(decode_value(&[9]).is_err());
    }
}
