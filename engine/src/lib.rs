//! Quiver's storage engine: one durable, segmented log per partition on glommio direct I/O.
//!
//! (Full design notes below; see `PartitionLog` for the API.)

mod config;
mod dma;
mod error;
mod index;
mod log;
mod notify;
mod segment;

pub use config::{
    FlushPolicy, LogConfig, INDEX_INTERVAL_BYTES_MIN, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN,
};
pub use error::{Error, Result};
pub use log::{AppendInfo, PartitionLog, RetentionReport, READ_BYTES_MAX};

use std::path::Path;

/// Name of the file [`init_io_probe`] keeps in the data directory.
pub const IO_PROBE_FILE: &str = ".quiver-io-probe";

/// Call once per executor at startup, before opening any log on the device holding `dir`.
///
/// glommio probes whether a device supports polled I/O on the first file it opens there and
/// caches the answer; if that first file is empty the probe reads nothing and concludes wrongly,
/// and later reads fail with EOPNOTSUPP. This writes a one-block file in `dir` (if absent) and
/// opens it with direct I/O so the probe sees real data.
pub async fn init_io_probe(dir: impl AsRef<Path>) -> Result<()> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create dir", dir, e))?;
    let path = dir.join(IO_PROBE_FILE);
    let ok = std::fs::metadata(&path).is_ok_and(|m| m.len() >= dma::BLOCK as u64);
    if !ok {
        std::fs::write(&path, vec![0u8; dma::BLOCK]).map_err(|e| Error::io("write", &path, e))?;
    }
    let f = dma::open_ro(&path).await?;
    dma::read(&f, &path, 0, dma::BLOCK).await?;
    Ok(())
}
