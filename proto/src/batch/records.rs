//! Decoding the records section: varints, records, headers, and decompression into one bounded
//! buffer. Every length is checked against the bytes that remain before it is used.

use super::{
    BatchError, BatchInfo, Compression, TimestampType, HEADERS_PER_RECORD_MAX, ZSTD_WINDOW_LOG_MAX,
};
use crate::types::{Offset, TimestampMs};
use std::borrow::Cow;
use std::io::Read;

/// Unsigned LEB128, at most 10 bytes. `None` on truncation or overflow.
pub(crate) fn read_uvarint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        if i == 9 && b > 1 {
            return None;
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

pub(crate) fn read_zigzag(buf: &mut &[u8]) -> Option<i64> {
    let v = read_uvarint(buf)?;
    Some(((v >> 1) as i64) ^ -((v & 1) as i64))
}

pub(crate) fn write_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn write_zigzag(out: &mut Vec<u8>, v: i64) {
    write_uvarint(out, ((v << 1) ^ (v >> 63)) as u64);
}

pub(crate) fn uvarint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn take<'a>(buf: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
    if len > buf.len() {
        return None;
    }
    let (head, rest) = buf.split_at(len);
    *buf = rest;
    Some(head)
}

/// A nullable byte string: zigzag length (-1 = null) then the bytes.
fn read_nullable<'a>(buf: &mut &'a [u8]) -> Option<Option<&'a [u8]>> {
    match read_zigzag(buf)? {
        -1 => Some(None),
        n if n >= 0 => take(buf, usize::try_from(n).ok()?).map(Some),
        _ => None,
    }
}

/// The records of one batch, in a buffer that is either the batch's own bytes (uncompressed) or
/// one decompressed buffer of at most [`DECOMPRESSED_BYTES_MAX`] bytes.
#[derive(Clone, Debug)]
pub struct Records<'a> {
    buf: Cow<'a, [u8]>,
    count: u32,
    base_offset: Offset,
    base_timestamp: TimestampMs,
    /// Set for LogAppendTime batches: every record's timestamp is the batch's max timestamp.
    log_append_time: Option<TimestampMs>,
}

impl<'a> Records<'a> {
    pub(crate) fn new(
        section: &'a [u8],
        info: BatchInfo,
        base_offset: Offset,
        base_timestamp: TimestampMs,
    ) -> Result<Records<'a>, BatchError> {
        let buf = match info.compression {
            Compression::None => Cow::Borrowed(section),
            codec => Cow::Owned(decompress(codec, section)?),
        };
        let log_append_time =
            (info.timestamp_type == TimestampType::LogAppendTime).then_some(info.max_timestamp);
        Ok(Records {
            buf,
            count: info.record_count,
            base_offset,
            base_timestamp,
            log_append_time,
        })
    }

    /// The records section as decoded (decompressed if the batch is compressed).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn iter(&self) -> RecordIter<'_> {
        RecordIter {
            rest: &self.buf,
            index: 0,
            count: self.count,
            base_offset: self.base_offset,
            base_timestamp: self.base_timestamp,
            log_append_time: self.log_append_time,
            failed: false,
        }
    }
}

/// Decompresses a records section: a u32 LE uncompressed length, then the codec's stream. The
/// output grows only as the decoder produces bytes, and stops at the claimed length, which itself
/// is at most [`super::decompressed_bytes_allowed`] for the section.
fn decompress(codec: Compression, section: &[u8]) -> Result<Vec<u8>, BatchError> {
    let (len, stream) = section
        .split_first_chunk::<4>()
        .ok_or(BatchError::Decompress("missing length prefix".into()))?;
    let claimed = u32::from_le_bytes(*len) as usize;
    let allowed = super::decompressed_bytes_allowed(section.len());
    if claimed > allowed {
        return Err(BatchError::DecompressedTooLarge { max: allowed });
    }
    // Start from what the input can justify; read_to_end grows with real output only.
    let mut out = Vec::with_capacity(claimed.min(stream.len().saturating_mul(4) + 1024));
    let limit = claimed as u64 + 1;
    let res = match codec {
        Compression::Lz4 => lz4_flex::frame::FrameDecoder::new(stream)
            .take(limit)
            .read_to_end(&mut out),
        Compression::Zstd => zstd::stream::read::Decoder::with_buffer(stream).and_then(|mut d| {
            // The frame header names the window the decoder allocates: cap it, or a few hostile
            // bytes could make it allocate 128 MiB.
            d.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
            d.take(limit).read_to_end(&mut out)
        }),
        Compression::None => unreachable!("uncompressed sections are not decompressed"),
    };
    res.map_err(|e| BatchError::Decompress(e.to_string()))?;
    if out.len() != claimed {
        return Err(BatchError::Decompress(format!(
            "length prefix says {claimed} bytes, stream gave {}",
            out.len()
        )));
    }
    Ok(out)
}

/// One record, borrowed from its batch (or from the decompressed buffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// Absolute: base offset + offset delta.
    pub offset: Offset,
    /// Absolute: base timestamp + timestamp delta, or the batch's max timestamp for LogAppendTime.
    pub timestamp: TimestampMs,
    pub key: Option<&'a [u8]>,
    /// `None` is a tombstone.
    pub value: Option<&'a [u8]>,
    header_count: u32,
    headers: &'a [u8],
    index: u32,
}

impl<'a> Record<'a> {
    pub fn header_count(&self) -> u32 {
        self.header_count
    }

    /// The headers, in order: (UTF-8 key, value).
    pub fn headers(&self) -> HeaderIter<'a> {
        HeaderIter {
            rest: self.headers,
            left: self.header_count,
            index: self.index,
        }
    }
}

/// Iterates the records of a batch; ends after the first error.
#[derive(Clone, Debug)]
pub struct RecordIter<'a> {
    rest: &'a [u8],
    index: u32,
    count: u32,
    base_offset: Offset,
    base_timestamp: TimestampMs,
    log_append_time: Option<TimestampMs>,
    failed: bool,
}

impl<'a> RecordIter<'a> {
    fn fail(&mut self, what: &'static str) -> Option<Result<Record<'a>, BatchError>> {
        self.failed = true;
        Some(Err(BatchError::BadRecord {
            index: self.index,
            what,
        }))
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<Record<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if self.index == self.count {
            if !self.rest.is_empty() {
                return self.fail("bytes after the last record");
            }
            return None;
        }
        let Some(len) = read_uvarint(&mut self.rest) else {
            return self.fail("truncated record length");
        };
        let Some(mut body) = usize::try_from(len)
            .ok()
            .and_then(|l| take(&mut self.rest, l))
        else {
            return self.fail("record length beyond the batch");
        };
        let Some((&attributes, rest)) = body.split_first() else {
            return self.fail("empty record");
        };
        body = rest;
        if attributes != 0 {
            return self.fail("record attributes are not zero");
        }
        let Some(ts_delta) = read_zigzag(&mut body) else {
            return self.fail("bad timestamp delta");
        };
        let Some(offset_delta) = read_uvarint(&mut body).and_then(|d| u32::try_from(d).ok()) else {
            return self.fail("bad offset delta");
        };
        let Some(key) = read_nullable(&mut body) else {
            return self.fail("bad key");
        };
        let Some(value) = read_nullable(&mut body) else {
            return self.fail("bad value");
        };
        let Some(header_count) = read_uvarint(&mut body) else {
            return self.fail("bad header count");
        };
        if header_count > u64::from(HEADERS_PER_RECORD_MAX) {
            self.failed = true;
            return Some(Err(BatchError::TooManyHeaders {
                index: self.index,
                count: u32::try_from(header_count).unwrap_or(u32::MAX),
                max: HEADERS_PER_RECORD_MAX,
            }));
        }
        let timestamp = match self.log_append_time {
            Some(t) => t,
            None => match self.base_timestamp.0.checked_add(ts_delta) {
                Some(t) => TimestampMs(t),
                None => return self.fail("timestamp overflows"),
            },
        };
        let Some(offset) = self.base_offset.0.checked_add(u64::from(offset_delta)) else {
            return self.fail("offset overflows");
        };
        let record = Record {
            offset: Offset(offset),
            timestamp,
            key,
            value,
            header_count: header_count as u32,
            headers: body,
            index: self.index,
        };
        self.index += 1;
        Some(Ok(record))
    }
}

/// Iterates a record's headers; checks that the headers fill the record exactly.
#[derive(Clone, Debug)]
pub struct HeaderIter<'a> {
    rest: &'a [u8],
    left: u32,
    index: u32,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = Result<(&'a str, &'a [u8]), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        let bad = |index, what| Some(Err(BatchError::BadRecord { index, what }));
        if self.left == 0 {
            if !self.rest.is_empty() {
                self.rest = &[];
                return bad(self.index, "bytes after the last header");
            }
            return None;
        }
        self.left -= 1;
        let mut parse = || {
            let klen = usize::try_from(read_uvarint(&mut self.rest)?).ok()?;
            let key = take(&mut self.rest, klen)?;
            let vlen = usize::try_from(read_uvarint(&mut self.rest)?).ok()?;
            let value = take(&mut self.rest, vlen)?;
            Some((key, value))
        };
        match parse() {
            Some((key, value)) => match std::str::from_utf8(key) {
                Ok(key) => Some(Ok((key, value))),
                Err(_) => {
                    self.left = 0;
                    self.rest = &[];
                    bad(self.index, "header key is not UTF-8")
                }
            },
            None => {
                self.left = 0;
                self.rest = &[];
                bad(self.index, "truncated header")
            }
        }
    }
}
