//! Entry points for fuzz targets and hostile-input tests (`engine/tests/fuzz_recovery.rs`,
//! `fuzz/fuzz_targets/index_files.rs`): thin wrappers that reach crate-private parsers. Not an
//! API: hidden from the docs, and free to change with the parsers they wrap.

/// The sparse index parser (`index.rs`) as the fuzzers see it.
pub mod index {
    use crate::index as inner;

    /// One index point: entry `i` of `.index` and entry `i` of `.timeindex` together.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct IndexPoint {
        pub rel_offset: u32,
        pub position: u32,
        pub max_timestamp: i64,
    }

    /// Why index files cannot be used as they are (mirrors the private `IndexDamage`).
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum IndexDamage {
        /// A file's length is not a whole number of entries (closed segments only).
        Length,
        /// The two files disagree on entry `i`, or it does not increase on the one before.
        Inconsistent(usize),
        /// Entry `i` points at or past the end of the log.
        BeyondLog(usize),
    }

    /// Bytes of one `.index` entry and of one `.timeindex` entry.
    pub const OFFSET_ENTRY_BYTES: usize = inner::OFFSET_ENTRY_BYTES;
    pub const TIME_ENTRY_BYTES: usize = inner::TIME_ENTRY_BYTES;

    fn to_inner(p: &IndexPoint) -> inner::IndexPoint {
        inner::IndexPoint {
            rel_offset: p.rel_offset,
            position: p.position,
            max_timestamp: p.max_timestamp,
        }
    }

    fn from_inner(p: inner::IndexPoint) -> IndexPoint {
        IndexPoint {
            rel_offset: p.rel_offset,
            position: p.position,
            max_timestamp: p.max_timestamp,
        }
    }

    /// `index::parse`: both files into index points, for a log of `log_len` bytes; `exact` for a
    /// closed segment's files.
    pub fn parse(
        offset_file: &[u8],
        time_file: &[u8],
        log_len: u64,
        exact: bool,
    ) -> Result<Vec<IndexPoint>, IndexDamage> {
        inner::parse(offset_file, time_file, log_len, exact)
            .map(|points| points.into_iter().map(from_inner).collect())
            .map_err(|d| match d {
                inner::IndexDamage::Length => IndexDamage::Length,
                inner::IndexDamage::Inconsistent(i) => IndexDamage::Inconsistent(i),
                inner::IndexDamage::BeyondLog(i) => IndexDamage::BeyondLog(i),
            })
    }

    /// `index::lookup_offset`: the last point at or before `rel_offset`.
    pub fn lookup_offset(points: &[IndexPoint], rel_offset: u32) -> Option<IndexPoint> {
        let inner: Vec<_> = points.iter().map(to_inner).collect();
        inner::lookup_offset(&inner, rel_offset).map(from_inner)
    }

    /// `index::lookup_time`: the last point whose running max timestamp is below `ts`.
    pub fn lookup_time(points: &[IndexPoint], ts: i64) -> Option<IndexPoint> {
        let inner: Vec<_> = points.iter().map(to_inner).collect();
        inner::lookup_time(&inner, ts).map(from_inner)
    }

    /// The two files' bytes for `points`, as the engine writes them.
    pub fn encode(points: &[IndexPoint]) -> (Vec<u8>, Vec<u8>) {
        let o = points
            .iter()
            .flat_map(|p| to_inner(p).offset_bytes())
            .collect();
        let t = points
            .iter()
            .flat_map(|p| to_inner(p).time_bytes())
            .collect();
        (o, t)
    }
}
