#![no_main]
//! The record-batch reader on hostile bytes: framing (BatchIter), the cheap check (validate),
//! the deep check (decompress + walk every record and header) and the in-place setters. None may
//! panic, and none may allocate more than the input justifies (libFuzzer's -rss_limit_mb and
//! -malloc_limit_mb catch the latter).
use libfuzzer_sys::fuzz_target;
use quiver_proto::batch::{self, BatchIter, BatchLimits, BatchView};
use quiver_proto::{Offset, TimestampMs};

fuzz_target!(|data: &[u8]| {
    let limits = BatchLimits::default();
    // The input as one batch, CRC and all (random bytes rarely pass the CRC, so also try with a
    // CRC fixed up, to reach the record decoder).
    let _ = batch::validate_deep(data, limits);
    let mut fixed = data.to_vec();
    if fixed.len() >= batch::BATCH_HEADER_BYTES {
        let crc = batch::compute_crc(&fixed);
        fixed[16..20].copy_from_slice(&crc.to_le_bytes());
        // Keep batch_len consistent with the input so the deep path is reached more often.
        let len = (fixed.len() as u32).to_le_bytes();
        let mut with_len = fixed.clone();
        with_len[8..12].copy_from_slice(&len);
        let crc = batch::compute_crc(&with_len);
        with_len[16..20].copy_from_slice(&crc.to_le_bytes());
        for candidate in [&fixed, &with_len] {
            if let Ok(view) = BatchView::new(candidate, limits) {
                if let Ok(records) = view.records() {
                    for r in records.iter() {
                        match r {
                            Ok(r) => {
                                for h in r.headers() {
                                    let _ = h;
                                }
                            }
                            Err(_) => break,
                        }
                    }
                }
                let mut copy = candidate.to_vec();
                batch::set_base_offset(&mut copy, Offset(u64::MAX)).unwrap();
                batch::set_log_append_time(&mut copy, TimestampMs(i64::MIN)).unwrap();
                assert!(batch::validate(&copy, limits).is_ok());
            }
            let _ = batch::validate_deep(candidate, limits);
        }
    }
    // The input as a fetch response: many concatenated batches.
    for b in BatchIter::new(data) {
        match b {
            Ok(b) => {
                let _ = batch::validate_deep(b, limits);
            }
            Err(_) => break,
        }
    }
});
