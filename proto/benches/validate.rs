//! What the broker pays per produced batch: the cheap check (header + CRC) against the deep one
//! it now runs (every record decoded, decompressed first), by record size and codec.
//! `cargo bench -p quiver-proto --bench validate`; results in bench/RESULTS.md.
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use quiver_proto::batch::{self, BatchBuilder, BatchLimits, Compression};
use quiver_proto::TimestampMs;

fn batch(records: usize, value_len: usize, compression: Compression) -> Bytes {
    let mut b = BatchBuilder::new(compression);
    let value: Vec<u8> = (0..value_len).map(|i| (i * 7 % 251) as u8).collect();
    for i in 0..records {
        b.append(
            TimestampMs(1_700_000_000_000 + i as i64),
            Some(format!("key-{i}").as_bytes()),
            Some(&value),
            &[],
        )
        .unwrap();
    }
    b.finish().unwrap()
}

fn validate(c: &mut Criterion) {
    let mut g = c.benchmark_group("validate");
    for (name, records, value_len, codec) in [
        ("1KiB-records", 1000, 1000, Compression::None),
        ("100B-records", 10_000, 100, Compression::None),
        ("1KiB-records-lz4", 1000, 1000, Compression::Lz4),
        ("1KiB-records-zstd", 1000, 1000, Compression::Zstd),
    ] {
        let b = batch(records, value_len, codec);
        // Per byte of records as the producer meant them (uncompressed).
        g.throughput(Throughput::Bytes((records * (value_len + 10)) as u64));
        g.bench_with_input(BenchmarkId::new("crc", name), &b, |bench, b| {
            bench.iter(|| batch::validate(b, BatchLimits::default()).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("deep", name), &b, |bench, b| {
            bench.iter(|| batch::validate_deep(b, BatchLimits::default()).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, validate);
criterion_main!(benches);
