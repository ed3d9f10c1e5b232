//! How a segment's files are named: `<base offset, 20 digits>.log`, `.index` and `.timeindex`
//! in the partition's directory. Apart from `segment`, so that `files` (which reopens an active
//! segment's log by name) needs nothing else of it.

use quiver_proto::Offset;
use std::path::{Path, PathBuf};

pub(crate) const LOG_EXT: &str = "log";
pub(crate) const INDEX_EXT: &str = "index";
pub(crate) const TIME_EXT: &str = "timeindex";

pub(crate) fn file_name(base: Offset, ext: &str) -> String {
    format!("{:020}.{ext}", base.0)
}

/// The base offset named by a segment file name, and its extension.
pub(crate) fn parse_file_name(name: &str) -> Option<(Offset, &str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((Offset(stem.parse().ok()?), ext))
}

#[derive(Clone, Debug)]
pub(crate) struct SegmentPaths {
    pub log: PathBuf,
    pub index: PathBuf,
    pub time: PathBuf,
}

impl SegmentPaths {
    pub(crate) fn new(dir: &Path, base: Offset) -> SegmentPaths {
        SegmentPaths {
            log: log_path(dir, base),
            index: dir.join(file_name(base, INDEX_EXT)),
            time: dir.join(file_name(base, TIME_EXT)),
        }
    }
}

/// The log file of the segment at `base` in `dir`.
pub(crate) fn log_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(file_name(base, LOG_EXT))
}
