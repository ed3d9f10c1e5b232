//! Record batches: the unit a producer sends, a segment stores and a consumer receives, byte for
//! byte. The broker never decodes and re-encodes records; it validates a batch once (header, CRC)
//! and stamps three fields in place.
//!
//! # Layout
//!
//! A batch is a fixed 64-byte little-endian header followed by the records section.
//!
//! ```text
//! offset size field              notes
//!      0    8 base_offset        u64, stamped by the broker; NOT under the CRC
//!      8    4 batch_len          u32, the whole batch, header included
//!     12    4 leader_epoch       u32, stamped by the leader (KIP-101); NOT under the CRC
//!     16    4 crc                u32, CRC-32 (crc32fast) of bytes [20, batch_len)
//!     20    1 version            u8, = 1
//!     21    1 reserved           u8, = 0
//!     22    2 attributes         u16: bits 0-2 codec (0 none, 1 lz4, 2 zstd),
//!                                     bit 3 timestamp type (0 CreateTime, 1 LogAppendTime),
//!                                     bit 4 transactional, bit 5 control, others 0
//!     24    4 last_offset_delta  u32, = record_count - 1 for every batch a producer sends
//!     28    8 base_timestamp     i64 ms, the first record's timestamp
//!     36    8 max_timestamp      i64 ms, the largest record timestamp (or the broker's clock
//!                                for LogAppendTime)
//!     44    8 producer_id        i64, -1 = none
//!     52    2 producer_epoch     i16, -1 = none
//!     54    4 base_sequence      i32, -1 = none
//!     58    4 record_count       u32, >= 1
//!     62    2 padding            = 0
//!     64    … records section    the records, or for a compressed batch:
//!                                u32 uncompressed length + the codec's stream of the records
//! ```
//!
//! Why the CRC leaves out `base_offset` and `leader_epoch`: the broker assigns both when it
//! appends, so it can stamp them without recomputing the CRC. The one case where the broker does
//! recompute it is [`set_log_append_time`]: LogAppendTime changes `attributes` and
//! `max_timestamp`, which are under the CRC.
//!
//! Each record (Kafka v2-like; "varint" is unsigned LEB128, "zigzag" is a zigzag LEB128 varint):
//!
//! ```text
//! length            varint   bytes of the record after this field
//! attributes        u8       = 0
//! timestamp_delta   zigzag   record timestamp - base_timestamp
//! offset_delta      varint   record offset - base_offset
//! key_len           zigzag   -1 = null key
//! key               bytes
//! value_len         zigzag   -1 = null value (a tombstone)
//! value             bytes
//! header_count      varint
//! per header:       key_len varint + key (UTF-8), value_len varint + value
//! ```
//!
//! # Hostile input
//!
//! Every decoder here takes untrusted bytes. None of them panics, and none allocates from a count
//! or length it has not first checked against the bytes actually present. A compressed section
//! may expand to at most [`decompressed_bytes_allowed`] (1024 times its size, at least 1 MiB,
//! at most [`DECOMPRESSED_BYTES_MAX`]), checked before decoding and enforced while the output is
//! produced; the zstd window is capped at [`ZSTD_WINDOW_LOG_MAX`]. `cargo fuzz run batch_reader`
//! exercises all of them.

mod builder;
mod records;

pub use builder::BatchBuilder;
pub use records::{HeaderIter, Record, RecordIter, Records};

use crate::types::{LeaderEpoch, Offset, TimestampMs};
use zerocopy::little_endian::{I16, I32, I64, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Bytes of the fixed header.
pub const BATCH_HEADER_BYTES: usize = 64;
/// Hard format limit on one batch, header included. The topic's `max.message.bytes` is a separate,
/// smaller runtime limit the broker applies. Rationale: the engine's recovery reads one whole batch
/// into memory, and a frame carries at least one batch.
pub const BATCH_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Bound on the records of one batch.
pub const RECORDS_PER_BATCH_MAX: u32 = 1 << 20;
/// Bound on the headers of one record.
pub const HEADERS_PER_RECORD_MAX: u32 = 1024;
/// Bound on a compressed batch's records section once decompressed: a decompression bomb stops
/// here, and no decoder allocates beyond it.
pub const DECOMPRESSED_BYTES_MAX: usize = 64 * 1024 * 1024;
/// A compressed records section may expand to at most this many times its size (or
/// [`DECOMPRESSED_BYTES_FLOOR`], whichever is larger, and never past [`DECOMPRESSED_BYTES_MAX`]).
/// Rationale: what a reader allocates stays proportional to the bytes it was given. The builder
/// sends a batch that would break this uncompressed instead.
pub const DECOMPRESSION_RATIO_MAX: usize = 1024;
/// Any compressed section may expand to this much, whatever its size.
pub const DECOMPRESSED_BYTES_FLOOR: usize = 1024 * 1024;
const _: () = assert!(DECOMPRESSED_BYTES_FLOOR <= DECOMPRESSED_BYTES_MAX);

/// The decompressed size a reader accepts for a compressed records section of `section_len`
/// bytes (length prefix included).
pub fn decompressed_bytes_allowed(section_len: usize) -> usize {
    section_len
        .saturating_mul(DECOMPRESSION_RATIO_MAX)
        .clamp(DECOMPRESSED_BYTES_FLOOR, DECOMPRESSED_BYTES_MAX)
}

/// Largest zstd window (log2 bytes) a reader accepts: 8 MiB. The builder compresses at level 3,
/// whose window is 2 MiB; a frame asking for more is refused rather than allocated.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 23;
/// The smallest encoded record: length(1) + attributes(1) + timestamp_delta(1) + offset_delta(1)
/// + key_len(1) + value_len(1) + header_count(1).
pub const RECORD_BYTES_MIN: usize = 7;
/// The only format version.
pub const BATCH_VERSION: u8 = 1;
/// Bytes the CRC skips: base_offset, batch_len, leader_epoch and the crc field itself.
pub const CRC_START: usize = 20;
/// The end of the header bytes under the CRC that LogAppendTime stamping changes (`attributes`
/// at 22 and `max_timestamp` at 36..44): [`ValidBatch::new_deep_log_append_time`] takes the
/// CRC of `[CRC_START, STAMPED_END)` apart from the rest.
const STAMPED_END: usize = 44;

const _: () = assert!(BATCH_HEADER_BYTES == std::mem::size_of::<BatchHeader>());
const _: () = assert!(BATCH_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(DECOMPRESSED_BYTES_MAX >= BATCH_BYTES_MAX);
// Even the smallest records must fit a maximal count in a maximal decompressed section.
const _: () = assert!(RECORDS_PER_BATCH_MAX as usize * RECORD_BYTES_MIN <= DECOMPRESSED_BYTES_MAX);

/// Attribute bits.
pub const ATTR_CODEC_MASK: u16 = 0b111;
pub const ATTR_LOG_APPEND_TIME: u16 = 1 << 3;
pub const ATTR_TRANSACTIONAL: u16 = 1 << 4;
pub const ATTR_CONTROL: u16 = 1 << 5;
const ATTR_KNOWN: u16 = ATTR_CODEC_MASK | ATTR_LOG_APPEND_TIME | ATTR_TRANSACTIONAL | ATTR_CONTROL;

/// The fixed batch header, read in place from the batch's bytes (see the module doc for the table).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct BatchHeader {
    pub base_offset: U64,
    pub batch_len: U32,
    pub leader_epoch: U32,
    pub crc: U32,
    pub version: u8,
    pub reserved: u8,
    pub attributes: U16,
    pub last_offset_delta: U32,
    pub base_timestamp: I64,
    pub max_timestamp: I64,
    pub producer_id: I64,
    pub producer_epoch: I16,
    pub base_sequence: I32,
    pub record_count: U32,
    pub padding: [u8; 2],
}

/// How the records section is compressed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Compression {
    #[default]
    None,
    Lz4,
    Zstd,
}

impl Compression {
    pub fn bits(self) -> u16 {
        match self {
            Compression::None => 0,
            Compression::Lz4 => 1,
            Compression::Zstd => 2,
        }
    }

    pub fn from_bits(bits: u16) -> Option<Compression> {
        match bits & ATTR_CODEC_MASK {
            0 => Some(Compression::None),
            1 => Some(Compression::Lz4),
            2 => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// Who set the records' timestamps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TimestampType {
    /// The producer's clock, per record.
    #[default]
    CreateTime,
    /// The broker's clock at append: every record's timestamp is the batch's `max_timestamp`.
    LogAppendTime,
}

/// Why bytes are not a valid batch (or run of batches).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("{available} bytes cannot hold a batch; {needed} bytes needed")]
    Truncated { needed: usize, available: usize },
    #[error("batch_len {len} is outside [{min}, {max}]")]
    BadLength { len: usize, min: usize, max: usize },
    #[error("batch_len {len} does not match the {actual} bytes given")]
    LengthMismatch { len: usize, actual: usize },
    #[error("unsupported batch version {0}")]
    BadVersion(u8),
    #[error("reserved or padding bytes are not zero")]
    ReservedSet,
    #[error("unknown attribute bits {0:#06x}")]
    BadAttributes(u16),
    #[error("CRC mismatch: header says {expected:#010x}, bytes give {actual:#010x}")]
    CrcMismatch { expected: u32, actual: u32 },
    #[error("record count {count} is outside [1, {max}]")]
    BadRecordCount { count: u32, max: u32 },
    #[error("last_offset_delta {last_offset_delta} does not match record count {count}")]
    BadOffsetDelta { last_offset_delta: u32, count: u32 },
    #[error("max_timestamp {max} is below base_timestamp {base}")]
    BadTimestamps { base: i64, max: i64 },
    #[error("records section too small for {count} records ({len} bytes)")]
    RecordsTooSmall { count: u32, len: usize },
    #[error("decompressed records would exceed {max} bytes")]
    DecompressedTooLarge { max: usize },
    #[error("decompression failed: {0}")]
    Decompress(String),
    #[error("malformed record {index}: {what}")]
    BadRecord { index: u32, what: &'static str },
    #[error("record {index} has {count} headers, more than {max}")]
    TooManyHeaders { index: u32, count: u32, max: u32 },
    #[error("the batch would exceed {max} bytes")]
    TooLarge { max: usize },
    #[error("the batch holds no records")]
    Empty,
}

/// Limits the broker applies to a produced batch; never above the format's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    /// The topic's `max.message.bytes`, at most [`BATCH_BYTES_MAX`].
    pub batch_bytes_max: usize,
    /// At most [`RECORDS_PER_BATCH_MAX`].
    pub records_max: u32,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            batch_bytes_max: BATCH_BYTES_MAX,
            records_max: RECORDS_PER_BATCH_MAX,
        }
    }
}

/// What [`validate`] learned from a batch's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchInfo {
    pub batch_len: u32,
    pub record_count: u32,
    pub last_offset_delta: u32,
    pub compression: Compression,
    pub timestamp_type: TimestampType,
    pub base_timestamp: TimestampMs,
    pub max_timestamp: TimestampMs,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub transactional: bool,
    pub control: bool,
}

/// The header of `bytes`, read in place, if at least a header's worth of bytes is there.
pub fn header(bytes: &[u8]) -> Result<&BatchHeader, BatchError> {
    BatchHeader::ref_from_prefix(bytes)
        .map(|(h, _)| h)
        .map_err(|_| BatchError::Truncated {
            needed: BATCH_HEADER_BYTES,
            available: bytes.len(),
        })
}

/// The CRC the header of `batch` should carry: CRC-32 of bytes `[CRC_START, len)`.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32fast::hash(batch.get(CRC_START..).unwrap_or(&[]))
}

/// The cheap check the broker runs once per produced batch, and the engine runs on every batch it
/// reads back from disk: `bytes` is exactly one batch whose header is sane and whose CRC matches.
/// No per-record work (the CRC is one pass over the bytes).
pub fn validate(bytes: &[u8], limits: BatchLimits) -> Result<BatchInfo, BatchError> {
    let info = validate_whole_header(bytes, limits)?;
    check_crc(bytes, compute_crc(bytes))?;
    Ok(info)
}

/// [`validate_header`], and `bytes` is exactly the batch its header says.
fn validate_whole_header(bytes: &[u8], limits: BatchLimits) -> Result<BatchInfo, BatchError> {
    let info = validate_header(bytes, limits)?;
    if info.batch_len as usize != bytes.len() {
        return Err(BatchError::LengthMismatch {
            len: info.batch_len as usize,
            actual: bytes.len(),
        });
    }
    Ok(info)
}

fn check_crc(bytes: &[u8], actual: u32) -> Result<(), BatchError> {
    let expected = header(bytes)?.crc.get();
    if expected != actual {
        return Err(BatchError::CrcMismatch { expected, actual });
    }
    Ok(())
}

/// Header sanity alone (no CRC, and `bytes` may hold more than this batch or only its header).
/// The engine uses it to walk a segment before it has the whole batch in hand.
pub fn validate_header(bytes: &[u8], limits: BatchLimits) -> Result<BatchInfo, BatchError> {
    let h = header(bytes)?;
    let len = h.batch_len.get() as usize;
    let max = limits.batch_bytes_max.min(BATCH_BYTES_MAX);
    if !(BATCH_HEADER_BYTES..=max).contains(&len) {
        return Err(BatchError::BadLength {
            len,
            min: BATCH_HEADER_BYTES,
            max,
        });
    }
    if h.version != BATCH_VERSION {
        return Err(BatchError::BadVersion(h.version));
    }
    if h.reserved != 0 || h.padding != [0, 0] {
        return Err(BatchError::ReservedSet);
    }
    let attrs = h.attributes.get();
    let compression = match Compression::from_bits(attrs) {
        Some(c) if attrs & !ATTR_KNOWN == 0 => c,
        _ => return Err(BatchError::BadAttributes(attrs)),
    };
    let count = h.record_count.get();
    let records_max = limits.records_max.min(RECORDS_PER_BATCH_MAX);
    if count == 0 || count > records_max {
        return Err(BatchError::BadRecordCount {
            count,
            max: records_max,
        });
    }
    let last_offset_delta = h.last_offset_delta.get();
    if last_offset_delta != count - 1 {
        return Err(BatchError::BadOffsetDelta {
            last_offset_delta,
            count,
        });
    }
    let (base, maxts) = (h.base_timestamp.get(), h.max_timestamp.get());
    let timestamp_type = if attrs & ATTR_LOG_APPEND_TIME != 0 {
        TimestampType::LogAppendTime
    } else {
        TimestampType::CreateTime
    };
    if timestamp_type == TimestampType::CreateTime && maxts < base {
        return Err(BatchError::BadTimestamps { base, max: maxts });
    }
    let records_len = len - BATCH_HEADER_BYTES;
    // An uncompressed section holds every record; a compressed one at least its length prefix.
    let min_records_len = match compression {
        Compression::None => count as usize * RECORD_BYTES_MIN,
        _ => 4,
    };
    if records_len < min_records_len {
        return Err(BatchError::RecordsTooSmall {
            count,
            len: records_len,
        });
    }
    Ok(BatchInfo {
        batch_len: len as u32,
        record_count: count,
        last_offset_delta,
        compression,
        timestamp_type,
        base_timestamp: TimestampMs(base),
        max_timestamp: TimestampMs(maxts),
        producer_id: h.producer_id.get(),
        producer_epoch: h.producer_epoch.get(),
        base_sequence: h.base_sequence.get(),
        transactional: attrs & ATTR_TRANSACTIONAL != 0,
        control: attrs & ATTR_CONTROL != 0,
    })
}

/// The deep check: [`validate`], then decompress and walk every record and header. The broker
/// runs it once per produced batch ([`ValidBatch::new_deep`]), so what it stores always decodes;
/// a read back from disk gets only [`validate`] (the CRC then vouches for the records).
pub fn validate_deep(bytes: &[u8], limits: BatchLimits) -> Result<BatchInfo, BatchError> {
    let info = validate(bytes, limits)?;
    check_records(bytes, info)?;
    Ok(info)
}

/// The per-record half of [`validate_deep`], on a batch whose header and CRC passed.
fn check_records(bytes: &[u8], info: BatchInfo) -> Result<(), BatchError> {
    let view = BatchView { bytes, info };
    let records = view.records()?;
    let mut n = 0u32;
    let mut prev_delta: Option<u32> = None;
    for r in records.iter() {
        let r = r?;
        // Records carry a 32-bit offset delta, so this always fits; never truncated.
        let delta = u32::try_from(r.offset.0 - view.base_offset().0).map_err(|_| {
            BatchError::BadRecord {
                index: n,
                what: "offset delta out of range",
            }
        })?;
        if prev_delta.is_some_and(|p| delta <= p) || delta > info.last_offset_delta {
            return Err(BatchError::BadRecord {
                index: n,
                what: "offset delta out of order",
            });
        }
        if info.timestamp_type == TimestampType::CreateTime && r.timestamp.0 > info.max_timestamp.0
        {
            return Err(BatchError::BadRecord {
                index: n,
                what: "timestamp above max_timestamp",
            });
        }
        for h in r.headers() {
            h?;
        }
        prev_delta = Some(delta);
        n += 1;
    }
    if n != info.record_count {
        return Err(BatchError::BadRecord {
            index: n,
            what: "record count differs from header",
        });
    }
    if prev_delta != Some(info.last_offset_delta) {
        return Err(BatchError::BadRecord {
            index: n,
            what: "last offset delta differs",
        });
    }
    Ok(())
}

/// A batch that passed [`validate`]: the type the engine's append takes, so unvalidated bytes
/// cannot reach a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidBatch {
    bytes: bytes::Bytes,
    info: BatchInfo,
}

impl ValidBatch {
    /// Validates `bytes` (one whole batch) and wraps it.
    pub fn new(bytes: bytes::Bytes, limits: BatchLimits) -> Result<ValidBatch, BatchError> {
        let info = validate(&bytes, limits)?;
        Ok(ValidBatch { bytes, info })
    }

    /// Validates `bytes` (one whole batch) with [`validate_deep`]: besides the header and CRC,
    /// every record is decoded (after decompression) and their count, offsets and timestamps
    /// must agree with the header. What the broker runs on a produced batch, so that no
    /// consumer ever meets a stored batch it cannot decode.
    pub fn new_deep(bytes: bytes::Bytes, limits: BatchLimits) -> Result<ValidBatch, BatchError> {
        let info = validate_deep(&bytes, limits)?;
        Ok(ValidBatch { bytes, info })
    }

    /// [`ValidBatch::new_deep`] for a topic that keeps LogAppendTime: validates `bytes` as the
    /// producer sent it (so a CreateTime record's timestamp is checked against the producer's
    /// `max_timestamp`), then returns a copy switched to LogAppendTime at `now`: the attribute
    /// bit and `max_timestamp` set and the CRC recomputed.
    ///
    /// One CRC pass over the batch, not two: the CRC is taken in two parts, the header bytes
    /// `[CRC_START, STAMPED_END)` that stamping changes and the rest; the old CRC is checked
    /// from both, and the new one needs only the 24 stamped header bytes again, combined with
    /// the rest's (crc32fast's `combine`, a few multiplications whatever the batch's length).
    pub fn new_deep_log_append_time(
        bytes: bytes::Bytes,
        limits: BatchLimits,
        now: TimestampMs,
    ) -> Result<ValidBatch, BatchError> {
        let mut info = validate_whole_header(&bytes, limits)?;
        let mut rest = crc32fast::Hasher::new();
        rest.update(&bytes[STAMPED_END..]);
        let crc_with = |head: &[u8]| {
            let mut h = crc32fast::Hasher::new();
            h.update(head);
            h.combine(&rest);
            h.finalize()
        };
        check_crc(&bytes, crc_with(&bytes[CRC_START..STAMPED_END]))?;
        check_records(&bytes, info)?;
        let mut owned = bytes::BytesMut::from(&bytes[..]);
        let h = header_mut(&mut owned)?;
        h.attributes.set(h.attributes.get() | ATTR_LOG_APPEND_TIME);
        h.max_timestamp.set(now.0);
        let crc = crc_with(&owned[CRC_START..STAMPED_END]);
        header_mut(&mut owned)?.crc.set(crc);
        info.timestamp_type = TimestampType::LogAppendTime;
        info.max_timestamp = now;
        Ok(ValidBatch {
            bytes: owned.freeze(),
            info,
        })
    }

    pub fn bytes(&self) -> &bytes::Bytes {
        &self.bytes
    }

    pub fn info(&self) -> &BatchInfo {
        &self.info
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Offsets this batch takes in a log: `last_offset_delta + 1`.
    pub fn offset_count(&self) -> u64 {
        u64::from(self.info.last_offset_delta) + 1
    }

    pub fn into_bytes(self) -> bytes::Bytes {
        self.bytes
    }
}

/// A validated batch, borrowed: header accessors and the records.
#[derive(Clone, Copy, Debug)]
pub struct BatchView<'a> {
    bytes: &'a [u8],
    info: BatchInfo,
}

impl<'a> BatchView<'a> {
    /// Runs [`validate`] and returns the view.
    pub fn new(bytes: &'a [u8], limits: BatchLimits) -> Result<BatchView<'a>, BatchError> {
        let info = validate(bytes, limits)?;
        Ok(BatchView { bytes, info })
    }

    pub fn info(&self) -> &BatchInfo {
        &self.info
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    fn header(&self) -> &'a BatchHeader {
        // validate() has checked that the header is there.
        BatchHeader::ref_from_prefix(self.bytes)
            .map(|(h, _)| h)
            .expect("validated header")
    }

    pub fn base_offset(&self) -> Offset {
        Offset(self.header().base_offset.get())
    }

    pub fn last_offset(&self) -> Offset {
        self.base_offset()
            .plus(u64::from(self.info.last_offset_delta))
    }

    pub fn leader_epoch(&self) -> LeaderEpoch {
        LeaderEpoch(self.header().leader_epoch.get())
    }

    /// The records, decompressed into one bounded buffer if the batch is compressed.
    pub fn records(&self) -> Result<Records<'a>, BatchError> {
        Records::new(
            &self.bytes[BATCH_HEADER_BYTES..],
            self.info,
            self.base_offset(),
            self.info.base_timestamp,
        )
    }
}

/// Stamps the base offset in place (outside the CRC). `batch` must hold at least a header.
pub fn set_base_offset(batch: &mut [u8], offset: Offset) -> Result<(), BatchError> {
    header_mut(batch)?.base_offset.set(offset.0);
    Ok(())
}

/// Stamps the leader epoch in place (outside the CRC).
pub fn set_leader_epoch(batch: &mut [u8], epoch: LeaderEpoch) -> Result<(), BatchError> {
    header_mut(batch)?.leader_epoch.set(epoch.0);
    Ok(())
}

/// Switches a batch to LogAppendTime at `now`: sets the timestamp-type bit and `max_timestamp`,
/// both under the CRC, so this recomputes the CRC. It is the one place the broker recomputes a
/// CRC; call it only on a batch that passed [`validate`].
pub fn set_log_append_time(batch: &mut [u8], now: TimestampMs) -> Result<(), BatchError> {
    let h = header_mut(batch)?;
    let attrs = h.attributes.get();
    h.attributes.set(attrs | ATTR_LOG_APPEND_TIME);
    h.max_timestamp.set(now.0);
    let len = (h.batch_len.get() as usize).min(batch.len());
    let crc = compute_crc(&batch[..len]);
    header_mut(batch)?.crc.set(crc);
    Ok(())
}

/// Batches of one partition an idempotent producer may have unanswered at once. The broker
/// remembers each producer's last this many batches per partition, so a retry of any of them is
/// answered with the offsets it got the first time. (A request may carry several batches of a
/// partition, so this counts batches, not requests.)
pub const IDEMPOTENT_BATCHES_KEPT: usize = 32;

/// Whether `seq` is `last` or comes before it in the wrapping sequence space: within the half
/// of the space that ends at `last`.
pub fn sequence_at_or_before(seq: i32, last: i32) -> bool {
    (i64::from(last) - i64::from(seq)).rem_euclid(i64::from(i32::MAX) + 1) < 1 << 30
}

/// `seq + n` in an idempotent producer's sequence space (`base_sequence`), which wraps from
/// `i32::MAX` to 0 (as Kafka's does).
pub fn sequence_add(seq: i32, n: u32) -> i32 {
    ((i64::from(seq) + i64::from(n)) % (i64::from(i32::MAX) + 1)) as i32
}

/// Stamps a producer's id, epoch and first sequence on a built batch and recomputes its CRC
/// (the fields are under it). For an idempotent producer that restarts a partition's sequences
/// and must resend batches it already built.
pub fn set_producer(
    batch: &mut [u8],
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Result<(), BatchError> {
    let h = header_mut(batch)?;
    h.producer_id.set(producer_id);
    h.producer_epoch.set(producer_epoch);
    h.base_sequence.set(base_sequence);
    let len = (h.batch_len.get() as usize).min(batch.len());
    let crc = compute_crc(&batch[..len]);
    header_mut(batch)?.crc.set(crc);
    Ok(())
}

fn header_mut(batch: &mut [u8]) -> Result<&mut BatchHeader, BatchError> {
    let available = batch.len();
    BatchHeader::mut_from_prefix(batch)
        .map(|(h, _)| h)
        .map_err(|_| BatchError::Truncated {
            needed: BATCH_HEADER_BYTES,
            available,
        })
}

/// Walks a byte range holding concatenated batches (what a fetch returns), yielding each whole
/// batch. Only the framing is checked (header present, `batch_len` sane); run [`validate`] on each
/// batch for the CRC. A partial batch at the end yields one `Err(Truncated)`, then the iterator
/// ends; so does a nonsensical `batch_len` (`BadLength`), since nothing after it can be framed.
#[derive(Clone, Debug)]
pub struct BatchIter<'a> {
    rest: &'a [u8],
    position: usize,
    done: bool,
}

impl<'a> BatchIter<'a> {
    pub fn new(bytes: &'a [u8]) -> BatchIter<'a> {
        BatchIter {
            rest: bytes,
            position: 0,
            done: false,
        }
    }

    /// Byte position of the next batch within the original range.
    pub fn position(&self) -> usize {
        self.position
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<&'a [u8], BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.rest.is_empty() {
            return None;
        }
        let h = match header(self.rest) {
            Ok(h) => h,
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        let len = h.batch_len.get() as usize;
        if !(BATCH_HEADER_BYTES..=BATCH_BYTES_MAX).contains(&len) {
            self.done = true;
            return Some(Err(BatchError::BadLength {
                len,
                min: BATCH_HEADER_BYTES,
                max: BATCH_BYTES_MAX,
            }));
        }
        if len > self.rest.len() {
            self.done = true;
            return Some(Err(BatchError::Truncated {
                needed: len,
                available: self.rest.len(),
            }));
        }
        let (batch, rest) = self.rest.split_at(len);
        self.rest = rest;
        self.position += len;
        Some(Ok(batch))
    }
}

#[cfg(test)]
mod tests;
