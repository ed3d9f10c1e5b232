//! Building a batch (the SDK's side).

use super::records::{uvarint_len, write_uvarint, write_zigzag};
use super::{
    BatchError, BatchHeader, Compression, TimestampType, ATTR_LOG_APPEND_TIME, BATCH_BYTES_MAX,
    BATCH_HEADER_BYTES, BATCH_VERSION, HEADERS_PER_RECORD_MAX, RECORDS_PER_BATCH_MAX,
};
use crate::types::TimestampMs;
use bytes::Bytes;
use std::io::Write;
use zerocopy::IntoBytes;

/// Accumulates records and produces one batch with base offset 0 (the broker assigns the real
/// one), leader epoch 0 and, unless set, no producer id/epoch/sequence (-1).
///
/// ```
/// use quiver_proto::batch::{BatchBuilder, BatchView, BatchLimits, Compression};
/// use quiver_proto::TimestampMs;
/// let mut b = BatchBuilder::new(Compression::Lz4);
/// b.append(TimestampMs(1_000), Some(b"k"), Some(b"v"), &[("trace", b"1")]).unwrap();
/// let bytes = b.finish().unwrap();
/// let view = BatchView::new(&bytes, BatchLimits::default()).unwrap();
/// let records = view.records().unwrap();
/// let r = records.iter().next().unwrap().unwrap();
/// assert_eq!(r.value, Some(&b"v"[..]));
/// ```
#[derive(Clone, Debug)]
pub struct BatchBuilder {
    compression: Compression,
    timestamp_type: TimestampType,
    /// The batch as it will be sent: `BATCH_HEADER_BYTES` reserved for the header, then the
    /// records section. Rationale: an uncompressed batch is finished in place, without copying
    /// the records behind a header.
    records: Vec<u8>,
    count: u32,
    base_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    attributes_extra: u16,
    /// CRC of the records section up to `crc_upto` (uncompressed batches only), kept up as
    /// records are appended. Rationale: hashed within `CRC_CHUNK` of being written the bytes
    /// are still in the core's cache; hashing a finished batch of a MiB reads it back from
    /// memory, at a fifth of the speed on the machines measured (bench/RESULTS.md).
    crc: crc32fast::Hasher,
    crc_upto: usize,
}

/// Bytes of records appended before the running CRC takes them in: small enough to still be
/// in the L1 cache, large enough for the wide CRC kernel (updates of ~100 bytes run at a tenth
/// of its speed).
const CRC_CHUNK: usize = 16 * 1024;

/// Most bytes of spare capacity announced to the cache ahead of the next append.
const PREFETCH_MAX: usize = 4096;

/// Asks the cache for the lines the next record of about `next` bytes will be written to, in
/// the exclusive state a store needs. Rationale: a reused batch buffer is cold (it went out and
/// came back answered), and each store into a cold line waits for the line to be read first;
/// profiles of the producer put most of `append`'s own time in such stalls (bench/RESULTS.md).
/// Asked for now, the lines arrive while the caller does its other per-record work. A hint only:
/// nothing is read or written, and only capacity the buffer owns is named.
#[inline]
fn prefetch_for_write(buf: &Vec<u8>, next: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_ET0};
        let spare = (buf.capacity() - buf.len()).min(next).min(PREFETCH_MAX);
        let start = buf.as_ptr().wrapping_add(buf.len());
        let mut at = 0;
        while at < spare {
            // SAFETY: a prefetch reads and writes no memory and cannot fault, whatever the
            // address; the SSE it needs is part of every x86_64 target.
            unsafe { _mm_prefetch::<_MM_HINT_ET0>(start.wrapping_add(at).cast()) };
            at += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (buf, next);
}

impl BatchBuilder {
    pub fn new(compression: Compression) -> BatchBuilder {
        BatchBuilder::with_capacity(compression, 0)
    }

    /// A builder whose buffer holds `bytes` of batch before it grows (a producer that knows its
    /// batch size avoids the copies of growing a buffer to it).
    pub fn with_capacity(compression: Compression, bytes: usize) -> BatchBuilder {
        let records = Vec::with_capacity(bytes.clamp(BATCH_HEADER_BYTES, BATCH_BYTES_MAX));
        BatchBuilder::with_buffer(compression, records)
    }

    /// A builder that writes into `buffer`, whatever it holds (a producer reuses the buffers of
    /// batches sent and answered: no allocation, and no page faults on fresh memory).
    pub fn with_buffer(compression: Compression, mut buffer: Vec<u8>) -> BatchBuilder {
        buffer.clear();
        buffer.resize(BATCH_HEADER_BYTES, 0);
        let records = buffer;
        BatchBuilder {
            compression,
            timestamp_type: TimestampType::CreateTime,
            records,
            count: 0,
            base_timestamp: 0,
            max_timestamp: i64::MIN,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            attributes_extra: 0,
            crc: crc32fast::Hasher::new(),
            crc_upto: BATCH_HEADER_BYTES,
        }
    }

    /// LogAppendTime marks the batch so; the broker then stamps the time with
    /// [`super::set_log_append_time`]. Default CreateTime.
    pub fn timestamp_type(mut self, t: TimestampType) -> BatchBuilder {
        self.timestamp_type = t;
        self
    }

    /// Idempotent producer fields (KIP-98).
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Sets the transactional bit.
    pub fn transactional(mut self, on: bool) -> Self {
        if on {
            self.attributes_extra |= super::ATTR_TRANSACTIONAL;
        } else {
            self.attributes_extra &= !super::ATTR_TRANSACTIONAL;
        }
        self
    }

    /// Adds one record. Fails, leaving the builder unchanged, when the record would take the batch
    /// past [`BATCH_BYTES_MAX`] (uncompressed) or [`RECORDS_PER_BATCH_MAX`], or it has more than
    /// [`HEADERS_PER_RECORD_MAX`] headers.
    pub fn append(
        &mut self,
        timestamp: TimestampMs,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, &[u8])],
    ) -> Result<(), BatchError> {
        if self.count >= RECORDS_PER_BATCH_MAX {
            return Err(BatchError::BadRecordCount {
                count: self.count + 1,
                max: RECORDS_PER_BATCH_MAX,
            });
        }
        if headers.len() > HEADERS_PER_RECORD_MAX as usize {
            return Err(BatchError::TooManyHeaders {
                index: self.count,
                count: headers.len() as u32,
                max: HEADERS_PER_RECORD_MAX,
            });
        }
        let base = if self.count == 0 {
            timestamp.0
        } else {
            self.base_timestamp
        };
        let ts_delta = timestamp.0.wrapping_sub(base);
        let body_len = 1
            + zigzag_len(ts_delta)
            + uvarint_len(u64::from(self.count))
            + nullable_len(key)
            + nullable_len(value)
            + uvarint_len(headers.len() as u64)
            + headers
                .iter()
                .map(|(k, v)| {
                    uvarint_len(k.len() as u64) + k.len() + uvarint_len(v.len() as u64) + v.len()
                })
                .sum::<usize>();
        let record_len = uvarint_len(body_len as u64) + body_len;
        if self.records.len() + record_len > BATCH_BYTES_MAX {
            return Err(BatchError::TooLarge {
                max: BATCH_BYTES_MAX,
            });
        }
        let r = &mut self.records;
        write_uvarint(r, body_len as u64);
        r.push(0); // attributes
        write_zigzag(r, ts_delta);
        write_uvarint(r, u64::from(self.count));
        write_nullable(r, key);
        write_nullable(r, value);
        write_uvarint(r, headers.len() as u64);
        for (k, v) in headers {
            write_uvarint(r, k.len() as u64);
            r.extend_from_slice(k.as_bytes());
            write_uvarint(r, v.len() as u64);
            r.extend_from_slice(v);
        }
        if self.count == 0 {
            self.base_timestamp = timestamp.0;
        }
        self.max_timestamp = self.max_timestamp.max(timestamp.0);
        self.count += 1;
        if self.compression == Compression::None && self.records.len() - self.crc_upto >= CRC_CHUNK
        {
            self.crc.update(&self.records[self.crc_upto..]);
            self.crc_upto = self.records.len();
        }
        prefetch_for_write(&self.records, record_len);
        Ok(())
    }

    pub fn record_count(&self) -> u32 {
        self.count
    }

    /// The batch's size if finished now without compression (an upper bound in practice).
    pub fn estimated_size(&self) -> usize {
        self.records.len()
    }

    /// Compresses the records section if asked, fills the header and computes the CRC. A section
    /// that compresses by more than [`super::DECOMPRESSION_RATIO_MAX`] (and past 1 MiB) is sent
    /// uncompressed, since readers refuse such ratios.
    pub fn finish(self) -> Result<Bytes, BatchError> {
        if self.count == 0 {
            return Err(BatchError::Empty);
        }
        let mut codec = self.compression;
        let mut out = self.records;
        // The CRC of the records section as it will be sent, when it is not compressed.
        let section_crc = (codec == Compression::None).then(|| {
            let mut crc = self.crc;
            crc.update(&out[self.crc_upto..]);
            crc
        });
        if codec != Compression::None {
            let section = &out[BATCH_HEADER_BYTES..];
            let mut compressed = Vec::with_capacity(BATCH_HEADER_BYTES + section.len() / 2 + 64);
            compressed.resize(BATCH_HEADER_BYTES, 0);
            compressed.extend_from_slice(&(section.len() as u32).to_le_bytes());
            compress(codec, section, &mut compressed)?;
            let compressed_len = compressed.len() - BATCH_HEADER_BYTES;
            if section.len() > super::decompressed_bytes_allowed(compressed_len) {
                // Compresses better than readers accept (they bound what a batch may make them
                // allocate): send it as it is.
                codec = Compression::None;
            } else {
                out = compressed;
            }
        }
        if out.len() > BATCH_BYTES_MAX {
            return Err(BatchError::TooLarge {
                max: BATCH_BYTES_MAX,
            });
        }
        let mut attributes = codec.bits() | self.attributes_extra;
        if self.timestamp_type == TimestampType::LogAppendTime {
            attributes |= ATTR_LOG_APPEND_TIME;
        }
        let header = BatchHeader {
            base_offset: 0.into(),
            batch_len: (out.len() as u32).into(),
            leader_epoch: 0.into(),
            crc: 0.into(),
            version: BATCH_VERSION,
            reserved: 0,
            attributes: attributes.into(),
            last_offset_delta: (self.count - 1).into(),
            base_timestamp: self.base_timestamp.into(),
            max_timestamp: self.max_timestamp.into(),
            producer_id: self.producer_id.into(),
            producer_epoch: self.producer_epoch.into(),
            base_sequence: self.base_sequence.into(),
            record_count: self.count.into(),
            padding: [0; 2],
        };
        out[..BATCH_HEADER_BYTES].copy_from_slice(header.as_bytes());
        let crc = match section_crc {
            Some(section) => {
                let mut crc = crc32fast::Hasher::new();
                crc.update(&out[super::CRC_START..BATCH_HEADER_BYTES]);
                crc.combine(&section);
                crc.finalize()
            }
            None => super::compute_crc(&out),
        };
        out[16..20].copy_from_slice(&crc.to_le_bytes());
        Ok(Bytes::from(out))
    }
}

fn compress(codec: Compression, input: &[u8], out: &mut Vec<u8>) -> Result<(), BatchError> {
    let err = |e: std::io::Error| BatchError::Decompress(format!("compression failed: {e}"));
    match codec {
        Compression::Lz4 => {
            let mut enc = lz4_flex::frame::FrameEncoder::new(out);
            enc.write_all(input).map_err(err)?;
            enc.finish().map_err(|e| err(e.into()))?;
        }
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(out, 3).map_err(err)?;
            enc.write_all(input).map_err(err)?;
            enc.finish().map_err(err)?;
        }
        Compression::None => out.extend_from_slice(input),
    }
    Ok(())
}

fn zigzag_len(v: i64) -> usize {
    uvarint_len(((v << 1) ^ (v >> 63)) as u64)
}

fn nullable_len(b: Option<&[u8]>) -> usize {
    match b {
        None => 1,
        Some(b) => zigzag_len(b.len() as i64) + b.len(),
    }
}

fn write_nullable(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => write_zigzag(out, -1),
        Some(b) => {
            write_zigzag(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}
