//! Types shared by many APIs (`proto/schema/common.fbs`): payload references, ids, leader hints,
//! topic/partition lists, configuration entries, and the `ErrorResponse` body.

use std::fmt;

use bytes::Bytes;

use super::codec::tables;
use crate::{fb, BrokerId, ErrorCode, LeaderEpoch};

/// A byte range in a frame's payload section: how a body refers to record batches and other
/// large opaque bytes without copying them into the flatbuffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PayloadRef {
    /// Byte offset from the start of the payload section.
    pub offset: u32,
    /// Number of bytes.
    pub len: u32,
}

/// Why a payload reference or payload is not usable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("payload reference {offset}+{len} exceeds the {payload_len}-byte payload")]
    OutOfBounds {
        offset: u32,
        len: u32,
        payload_len: usize,
    },
    #[error("payload would exceed {max} bytes")]
    TooLarge { max: u64 },
}

impl PayloadRef {
    /// Zero bytes at offset zero.
    pub const EMPTY: PayloadRef = PayloadRef { offset: 0, len: 0 };

    pub fn new(offset: u32, len: u32) -> PayloadRef {
        PayloadRef { offset, len }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The referenced bytes of `payload` (the frame's payload section), without copying.
    ///
    /// ```
    /// # use quiver_proto::api::PayloadRef;
    /// let payload = bytes::Bytes::from_static(b"abcdef");
    /// assert_eq!(&PayloadRef::new(2, 3).slice(&payload).unwrap()[..], b"cde");
    /// assert!(PayloadRef::new(4, 3).slice(&payload).is_err());
    /// ```
    pub fn slice(&self, payload: &Bytes) -> Result<Bytes, PayloadError> {
        let range = self.checked_range(payload.len())?;
        Ok(payload.slice(range))
    }

    /// Like `slice`, for a borrowed payload.
    pub fn slice_of<'a>(&self, payload: &'a [u8]) -> Result<&'a [u8], PayloadError> {
        let range = self.checked_range(payload.len())?;
        Ok(&payload[range])
    }

    fn checked_range(&self, payload_len: usize) -> Result<std::ops::Range<usize>, PayloadError> {
        // u64 arithmetic: offset + len cannot overflow, on any target.
        let end = u64::from(self.offset) + u64::from(self.len);
        if end > payload_len as u64 {
            return Err(PayloadError::OutOfBounds {
                offset: self.offset,
                len: self.len,
                payload_len,
            });
        }
        Ok(self.offset as usize..end as usize)
    }

    pub(crate) fn from_fb(r: &fb::PayloadRef) -> PayloadRef {
        PayloadRef {
            offset: r.offset(),
            len: r.len(),
        }
    }

    pub(crate) fn to_fb(self) -> fb::PayloadRef {
        fb::PayloadRef::new(self.offset, self.len)
    }
}

/// Collects the payload section of a frame being built: each pushed chunk is kept as the
/// `Bytes` it is (no copy) and gets a `PayloadRef`; the sender writes `chunks()` after the body.
///
/// ```
/// # use quiver_proto::api::PayloadBuilder;
/// # use bytes::Bytes;
/// let mut p = PayloadBuilder::new();
/// let a = p.push(Bytes::from_static(b"batch-a")).unwrap();
/// let b = p.push_all([Bytes::from_static(b"bat"), Bytes::from_static(b"ch-b")]).unwrap();
/// assert_eq!((a.offset, a.len, b.offset, b.len), (0, 7, 7, 7));
/// assert_eq!(p.len(), 14);
/// assert_eq!(p.chunks().len(), 3);
/// ```
#[derive(Clone, Debug, Default)]
pub struct PayloadBuilder {
    chunks: Vec<Bytes>,
    len: u64,
}

impl PayloadBuilder {
    /// The payload section of a frame is addressed with u32 offsets.
    pub const BYTES_MAX: u64 = u32::MAX as u64;

    pub fn new() -> PayloadBuilder {
        PayloadBuilder::default()
    }

    /// Appends one chunk; returns the reference to it.
    pub fn push(&mut self, chunk: Bytes) -> Result<PayloadRef, PayloadError> {
        self.push_all([chunk])
    }

    /// Appends chunks that together form one referenced range (e.g. a partition's batches read
    /// from several segments); returns the reference to all of them.
    pub fn push_all(
        &mut self,
        chunks: impl IntoIterator<Item = Bytes>,
    ) -> Result<PayloadRef, PayloadError> {
        let start = self.len;
        let chunks_before = self.chunks.len();
        for chunk in chunks {
            self.len += chunk.len() as u64;
            if !chunk.is_empty() {
                self.chunks.push(chunk);
            }
        }
        if self.len > Self::BYTES_MAX {
            self.chunks.truncate(chunks_before);
            self.len = start;
            return Err(PayloadError::TooLarge {
                max: Self::BYTES_MAX,
            });
        }
        Ok(PayloadRef {
            offset: start as u32,
            len: (self.len - start) as u32,
        })
    }

    /// Total bytes so far.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunks, in order: the payload section is their concatenation.
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    pub fn into_chunks(self) -> Vec<Bytes> {
        self.chunks
    }
}

/// A 128-bit id (topic ids, broker incarnation ids).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uuid(pub u128);

impl Uuid {
    pub(crate) fn from_fb(u: &fb::Uuid) -> Uuid {
        Uuid((u128::from(u.hi()) << 64) | u128::from(u.lo()))
    }

    pub(crate) fn to_fb(self) -> fb::Uuid {
        fb::Uuid::new((self.0 >> 64) as u64, self.0 as u64)
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0.to_be_bytes();
        for (i, byte) in b.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// A supported version range of one API, inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VersionRange {
    pub min: u16,
    pub max: u16,
}

impl VersionRange {
    pub const fn new(min: u16, max: u16) -> VersionRange {
        VersionRange { min, max }
    }

    pub fn contains(&self, version: u16) -> bool {
        self.min <= version && version <= self.max
    }
}

impl fmt::Display for VersionRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..={}", self.min, self.max)
    }
}

tables! {
    /// The versions of one API a broker supports.
    pub struct ApiVersionRange(ApiVersionRange, ApiVersionRangeArgs) {
        /// Raw API key (may be one this build does not know, when read from a newer broker).
        api_key: u16 = scalar,
        min_version: u16 = scalar,
        max_version: u16 = scalar,
    }

    /// Body of a response frame with `FLAG_ERROR_RESPONSE`: the request was not served.
    /// Build one with `api::error_response` or `RequestError::to_error_response`.
    pub struct ErrorResponse(ErrorResponse, ErrorResponseArgs) {
        error_code: ErrorCode = scalar,
        message: Option<String> = opt_string,
        /// The API key of the refused request, as received.
        api_key: u16 = scalar,
        /// Supported versions of that API; absent if the API is unknown.
        min_version: Option<u16> = opt,
        max_version: Option<u16> = opt,
        /// Every supported API; filled for `UnknownApi` (and for a refused ApiVersions call).
        supported_apis: Vec<ApiVersionRange> = tables,
    }

    /// The leader to talk to, sent with `NotLeaderOrFollower` (KIP-951 style).
    pub struct LeaderHint(LeaderHint, LeaderHintArgs) {
        leader_id: BrokerId = scalar,
        leader_epoch: LeaderEpoch = scalar,
    }

    /// A topic and some of its partitions.
    pub struct TopicPartitions(TopicPartitions, TopicPartitionsArgs) {
        topic: String = string,
        partitions: Vec<crate::PartitionId> = scalars,
    }

    /// A configuration name and value; `value: None` means null (the default).
    pub struct ConfigEntry(ConfigEntry, ConfigEntryArgs) {
        name: String = string,
        value: Option<String> = opt_string,
    }

    /// Result for one topic of an admin request.
    pub struct TopicResult(TopicResult, TopicResultArgs) {
        name: String = string,
        error_code: ErrorCode = scalar,
        error_message: Option<String> = opt_string,
    }
}

impl ErrorResponse {
    /// The supported version range carried, if both ends are present.
    pub fn supported_versions(&self) -> Option<VersionRange> {
        Some(VersionRange::new(self.min_version?, self.max_version?))
    }
}

impl fmt::Display for ErrorResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "api key {}: {}", self.api_key, self.error_code.name())?;
        if let Some(m) = &self.message {
            write!(f, ": {m}")?;
        }
        if let Some(r) = self.supported_versions() {
            write!(f, " (supported versions {r})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
impl super::codec::testing::Gen for PayloadRef {
    fn strategy() -> proptest::strategy::BoxedStrategy<Self> {
        use proptest::prelude::*;
        (any::<u32>(), any::<u32>())
            .prop_map(|(offset, len)| PayloadRef { offset, len })
            .boxed()
    }
}

#[cfg(test)]
impl super::codec::testing::Gen for Uuid {
    fn strategy() -> proptest::strategy::BoxedStrategy<Self> {
        use proptest::prelude::*;
        any::<u128>().prop_map(Uuid).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_ref_bounds_are_checked_without_overflow() {
        let payload = Bytes::from_static(b"0123456789");
        let cases: &[(u32, u32, Option<&[u8]>)] = &[
            (0, 0, Some(b"")),
            (0, 10, Some(b"0123456789")),
            (10, 0, Some(b"")),
            (9, 1, Some(b"9")),
            (9, 2, None),
            (11, 0, None),
            (u32::MAX, 1, None),
            (1, u32::MAX, None),
            (u32::MAX, u32::MAX, None),
        ];
        for &(offset, len, want) in cases {
            let r = PayloadRef::new(offset, len);
            match want {
                Some(bytes) => {
                    assert_eq!(&r.slice(&payload).unwrap()[..], bytes, "{r:?}");
                    assert_eq!(r.slice_of(&payload).unwrap(), bytes, "{r:?}");
                }
                None => {
                    assert!(
                        matches!(r.slice(&payload), Err(PayloadError::OutOfBounds { .. })),
                        "{r:?}"
                    );
                    assert!(r.slice_of(&payload).is_err(), "{r:?}");
                }
            }
        }
    }

    #[test]
    fn payload_builder_hands_out_contiguous_refs_and_keeps_chunks() {
        let mut p = PayloadBuilder::new();
        let a = p.push(Bytes::from_static(b"aaa")).unwrap();
        let empty = p.push(Bytes::new()).unwrap();
        let b = p
            .push_all([Bytes::from_static(b"bb"), Bytes::from_static(b"b")])
            .unwrap();
        assert_eq!(a, PayloadRef::new(0, 3));
        assert_eq!(empty, PayloadRef::new(3, 0));
        assert_eq!(b, PayloadRef::new(3, 3));
        let joined: Vec<u8> = p.chunks().iter().flat_map(|c| c.to_vec()).collect();
        let joined = Bytes::from(joined);
        assert_eq!(&a.slice(&joined).unwrap()[..], b"aaa");
        assert_eq!(&b.slice(&joined).unwrap()[..], b"bbb");
        // Empty chunks are not kept: the sender has nothing to write for them.
        assert_eq!(p.chunks().len(), 3);
    }

    #[test]
    fn uuid_round_trips_through_the_struct_and_prints_like_a_uuid() {
        let u = Uuid(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210);
        assert_eq!(Uuid::from_fb(&u.to_fb()), u);
        assert_eq!(u.to_string(), "01234567-89ab-cdef-fedc-ba9876543210");
    }
}
