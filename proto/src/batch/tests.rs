use super::*;
use proptest::prelude::*;

type Rec = (
    i64,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(String, Vec<u8>)>,
);

fn build(codec: Compression, recs: &[Rec]) -> bytes::Bytes {
    let mut b = BatchBuilder::new(codec);
    for (ts, k, v, hs) in recs {
        let hs: Vec<(&str, &[u8])> = hs.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
        b.append(TimestampMs(*ts), k.as_deref(), v.as_deref(), &hs)
            .unwrap();
    }
    b.finish().unwrap()
}

fn read_back(bytes: &[u8]) -> Vec<Rec> {
    let view = BatchView::new(bytes, BatchLimits::default()).unwrap();
    let records = view.records().unwrap();
    records
        .iter()
        .map(|r| {
            let r = r.unwrap();
            let hs = r
                .headers()
                .map(|h| h.unwrap())
                .map(|(k, v)| (k.to_owned(), v.to_vec()));
            (
                r.timestamp.0,
                r.key.map(<[u8]>::to_vec),
                r.value.map(<[u8]>::to_vec),
                hs.collect(),
            )
        })
        .collect()
}

fn codec() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::None),
        Just(Compression::Lz4),
        Just(Compression::Zstd)
    ]
}

fn record() -> impl Strategy<Value = Rec> {
    (
        -1_000_000i64..1_000_000_000_000,
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
        proptest::collection::vec(
            ("[a-z]{0,8}", proptest::collection::vec(any::<u8>(), 0..20)),
            0..4,
        ),
    )
}

proptest! {
    #[test]
    fn roundtrip_all_codecs(codec in codec(), recs in proptest::collection::vec(record(), 1..50)) {
        let bytes = build(codec, &recs);
        let info = validate_deep(&bytes, BatchLimits::default()).unwrap();
        prop_assert_eq!(info.record_count as usize, recs.len());
        prop_assert_eq!(info.compression, codec);
        prop_assert_eq!(info.max_timestamp.0, recs.iter().map(|r| r.0).max().unwrap());
        prop_assert_eq!(read_back(&bytes), recs);
    }

    #[test]
    fn a_reused_buffer_builds_the_same_batch(
        codec in codec(),
        recs in proptest::collection::vec(record(), 1..20),
        junk in proptest::collection::vec(any::<u8>(), 0..2000),
    ) {
        let fresh = build(codec, &recs);
        let mut b = BatchBuilder::with_buffer(codec, junk);
        for (ts, k, v, hs) in &recs {
            let hs: Vec<(&str, &[u8])> = hs.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
            b.append(TimestampMs(*ts), k.as_deref(), v.as_deref(), &hs).unwrap();
        }
        prop_assert_eq!(b.finish().unwrap(), fresh);
    }

    #[test]
    fn the_running_crc_equals_one_pass_over_the_batch(
        sizes in proptest::collection::vec(0usize..9000, 1..40),
        producer in any::<bool>(),
    ) {
        // Records of up to 9,000 bytes: the builder's running CRC takes in 16 KiB at a time, so
        // batches end on and off those steps.
        let mut b = BatchBuilder::new(Compression::None);
        if producer {
            b = b.producer(7, 3, 1_000);
        }
        for (i, n) in sizes.iter().enumerate() {
            let value: Vec<u8> = (0..*n).map(|j| (i * 31 + j) as u8).collect();
            b.append(TimestampMs(i as i64), None, Some(&value), &[("h", b"x")]).unwrap();
        }
        let bytes = b.finish().unwrap();
        let stored = u32::from_le_bytes(bytes[16..20].try_into().unwrap());
        prop_assert_eq!(stored, compute_crc(&bytes));
        prop_assert!(validate(&bytes, BatchLimits::default()).is_ok());
    }

    #[test]
    fn hostile_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = validate_deep(&data, BatchLimits::default());
        for b in BatchIter::new(&data).flatten() {
            let _ = validate_deep(b, BatchLimits::default());
        }
    }

    #[test]
    fn any_flipped_byte_under_the_crc_is_caught(
        codec in codec(),
        recs in proptest::collection::vec(record(), 1..5),
        pos in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let mut bytes = build(codec, &recs).to_vec();
        let p = CRC_START + pos.index(bytes.len() - CRC_START);
        bytes[p] ^= 1 << bit;
        prop_assert!(validate(&bytes, BatchLimits::default()).is_err());
    }
}

#[test]
fn offsets_and_timestamps_are_absolute() {
    let recs: Vec<Rec> = (0..3)
        .map(|i| (100 + i, None, Some(vec![i as u8]), vec![]))
        .collect();
    let mut bytes = build(Compression::None, &recs).to_vec();
    set_base_offset(&mut bytes, Offset(1000)).unwrap();
    set_leader_epoch(&mut bytes, LeaderEpoch(7)).unwrap();
    // Both fields are outside the CRC: still valid without recomputing it.
    let view = BatchView::new(&bytes, BatchLimits::default()).unwrap();
    assert_eq!(view.base_offset(), Offset(1000));
    assert_eq!(view.last_offset(), Offset(1002));
    assert_eq!(view.leader_epoch(), LeaderEpoch(7));
    let recs = view.records().unwrap();
    let offsets: Vec<_> = recs.iter().map(|r| r.unwrap().offset.0).collect();
    assert_eq!(offsets, vec![1000, 1001, 1002]);
    let ts: Vec<_> = recs.iter().map(|r| r.unwrap().timestamp.0).collect();
    assert_eq!(ts, vec![100, 101, 102]);
}

#[test]
fn log_append_time_recomputes_crc_and_overrides_timestamps() {
    let recs: Vec<Rec> = (0..3).map(|i| (100 + i, None, None, vec![])).collect();
    let mut bytes = build(Compression::Zstd, &recs).to_vec();
    set_log_append_time(&mut bytes, TimestampMs(5_000)).unwrap();
    let info = validate_deep(&bytes, BatchLimits::default()).unwrap();
    assert_eq!(info.timestamp_type, TimestampType::LogAppendTime);
    assert_eq!(info.max_timestamp, TimestampMs(5_000));
    let view = BatchView::new(&bytes, BatchLimits::default()).unwrap();
    let recs = view.records().unwrap();
    assert!(recs
        .iter()
        .all(|r| r.unwrap().timestamp == TimestampMs(5_000)));
}

/// The one-pass LogAppendTime path gives the same bytes as stamping a copy and recomputing the
/// whole CRC, for every codec and for batches from one record to thousands; and it refuses what
/// `new_deep` refuses: a flipped bit in the stamped part of the header, in the rest of the header,
/// in the records, and a record newer than the producer's own `max_timestamp`.
#[test]
fn log_append_time_in_one_pass_matches_the_two_pass_stamp_and_refuses_what_new_deep_refuses() {
    let now = TimestampMs(9_999);
    for codec in [Compression::None, Compression::Lz4, Compression::Zstd] {
        for n in [1i64, 7, 3000] {
            let recs: Vec<Rec> = (0..n)
                .map(|i| (100 + i, Some(vec![i as u8; 3]), Some(vec![7; 50]), vec![]))
                .collect();
            let bytes = build(codec, &recs);
            let one =
                ValidBatch::new_deep_log_append_time(bytes.clone(), BatchLimits::default(), now)
                    .unwrap();
            let mut two = bytes.to_vec();
            set_log_append_time(&mut two, now).unwrap();
            assert_eq!(&one.bytes()[..], &two[..], "{codec:?} n={n}");
            assert_eq!(
                *one.info(),
                validate_deep(&two, BatchLimits::default()).unwrap()
            );
            for at in [CRC_START + 2, 30, STAMPED_END + 2, bytes.len() - 1] {
                let mut bad = bytes.to_vec();
                bad[at] ^= 0x10;
                let bad = bytes::Bytes::from(bad);
                let deep = ValidBatch::new_deep(bad.clone(), BatchLimits::default()).unwrap_err();
                let stamped =
                    ValidBatch::new_deep_log_append_time(bad, BatchLimits::default(), now)
                        .unwrap_err();
                assert_eq!(
                    std::mem::discriminant(&deep),
                    std::mem::discriminant(&stamped),
                    "{codec:?} n={n} byte {at}: {deep} vs {stamped}"
                );
            }
        }
    }
    // A CreateTime record newer than the batch's max_timestamp is refused before stamping, even
    // though stamping would replace max_timestamp.
    let mut lying = build(
        Compression::None,
        &[
            (100, None, Some(vec![1]), vec![]),
            (200, None, None, vec![]),
        ],
    )
    .to_vec();
    header_mut(&mut lying).unwrap().max_timestamp.set(150);
    let crc = compute_crc(&lying);
    header_mut(&mut lying).unwrap().crc.set(crc);
    let err = ValidBatch::new_deep_log_append_time(lying.into(), BatchLimits::default(), now)
        .unwrap_err();
    assert!(matches!(err, BatchError::BadRecord { .. }), "{err}");
}

#[test]
fn batch_iter_yields_whole_batches_then_reports_the_partial_one() {
    let a = build(Compression::None, &[(1, None, Some(vec![1; 10]), vec![])]);
    let b = build(Compression::Lz4, &[(2, Some(vec![2]), None, vec![])]);
    let mut all = a.to_vec();
    all.extend_from_slice(&b);
    all.extend_from_slice(&a[..a.len() - 1]);
    let mut it = BatchIter::new(&all);
    assert_eq!(it.next().unwrap().unwrap(), &a[..]);
    assert_eq!(it.next().unwrap().unwrap(), &b[..]);
    assert_eq!(it.position(), a.len() + b.len());
    assert!(matches!(it.next(), Some(Err(BatchError::Truncated { .. }))));
    assert!(it.next().is_none());
}

#[test]
fn header_checks_reject_nonsense() {
    let good = build(Compression::None, &[(1, None, Some(vec![1; 10]), vec![])]).to_vec();
    let limits = BatchLimits::default();
    let check = |f: &dyn Fn(&mut Vec<u8>), want: fn(&BatchError) -> bool| {
        let mut b = good.clone();
        f(&mut b);
        let err = validate(&b, limits).unwrap_err();
        assert!(want(&err), "unexpected {err:?}");
    };
    check(&|b| b[20] = 2, |e| matches!(e, BatchError::BadVersion(2)));
    check(&|b| b[22] = 7, |e| {
        matches!(e, BatchError::BadAttributes(_))
    });
    check(&|b| b[8..12].copy_from_slice(&10u32.to_le_bytes()), |e| {
        matches!(e, BatchError::BadLength { .. })
    });
    check(&|b| b.truncate(40), |e| {
        matches!(e, BatchError::Truncated { .. })
    });
    check(&|b| b.push(0), |e| {
        matches!(e, BatchError::LengthMismatch { .. })
    });
    check(&|b| b[58..62].copy_from_slice(&0u32.to_le_bytes()), |e| {
        matches!(e, BatchError::BadRecordCount { .. })
    });
    check(&|b| b[24..28].copy_from_slice(&5u32.to_le_bytes()), |e| {
        matches!(e, BatchError::BadOffsetDelta { .. })
    });
    let small = BatchLimits {
        batch_bytes_max: 70,
        records_max: 10,
    };
    assert!(matches!(
        validate(&good, small),
        Err(BatchError::BadLength { max: 70, .. })
    ));
}

#[test]
fn decompression_bomb_is_refused_before_allocating() {
    // A zstd batch whose length prefix claims more than the bound.
    let recs: Vec<Rec> = vec![(1, None, Some(vec![0; 1000]), vec![])];
    let mut bytes = build(Compression::Zstd, &recs).to_vec();
    let claim = (decompressed_bytes_allowed(bytes.len() - 64) as u32 + 1).to_le_bytes();
    bytes[64..68].copy_from_slice(&claim);
    let crc = compute_crc(&bytes);
    bytes[16..20].copy_from_slice(&crc.to_le_bytes());
    let view = BatchView::new(&bytes, BatchLimits::default()).unwrap();
    assert!(matches!(
        view.records(),
        Err(BatchError::DecompressedTooLarge { .. })
    ));
    // A prefix that lies about a smaller size is caught when the stream runs past it.
    let mut bytes = build(Compression::Lz4, &recs).to_vec();
    bytes[64..68].copy_from_slice(&10u32.to_le_bytes());
    let crc = compute_crc(&bytes);
    bytes[16..20].copy_from_slice(&crc.to_le_bytes());
    let view = BatchView::new(&bytes, BatchLimits::default()).unwrap();
    assert!(matches!(view.records(), Err(BatchError::Decompress(_))));
}

#[test]
fn builder_refuses_empty_and_oversized() {
    assert_eq!(
        BatchBuilder::new(Compression::None).finish(),
        Err(BatchError::Empty)
    );
    let mut b = BatchBuilder::new(Compression::None);
    let big = vec![0u8; BATCH_BYTES_MAX];
    assert!(matches!(
        b.append(TimestampMs(0), None, Some(&big), &[]),
        Err(BatchError::TooLarge { .. })
    ));
    assert_eq!(b.record_count(), 0);
}

#[test]
fn varints_roundtrip_and_reject_overlong() {
    for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
        let mut out = Vec::new();
        records::write_uvarint(&mut out, v);
        assert_eq!(out.len(), records::uvarint_len(v));
        assert_eq!(records::read_uvarint(&mut &out[..]), Some(v));
    }
    for v in [0i64, -1, 1, i64::MIN, i64::MAX] {
        let mut out = Vec::new();
        records::write_zigzag(&mut out, v);
        assert_eq!(records::read_zigzag(&mut &out[..]), Some(v));
    }
    assert_eq!(records::read_uvarint(&mut &[0xff; 11][..]), None);
    assert_eq!(records::read_uvarint(&mut &[0x80][..]), None);
}

#[test]
fn large_batches_roundtrip_with_every_codec() {
    // Near the format limit, with data that compresses well and data that does not.
    for codec in [Compression::None, Compression::Lz4, Compression::Zstd] {
        let mut b = BatchBuilder::new(codec);
        let mut state = 0x9e37_79b9_u64;
        for i in 0..12_000u32 {
            let v: Vec<u8> = (0..1000)
                .map(|j| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                    if i % 2 == 0 {
                        (j % 7) as u8
                    } else {
                        (state >> 56) as u8
                    }
                })
                .collect();
            b.append(TimestampMs(i as i64), None, Some(&v), &[])
                .unwrap();
        }
        let bytes = b.finish().unwrap();
        let info = validate_deep(&bytes, BatchLimits::default()).unwrap();
        assert_eq!(info.record_count, 12_000);
    }
}

#[test]
fn extreme_ratios_are_sent_uncompressed_and_refused_when_forged() {
    // One 12 MiB value of zeros: zstd compresses it far beyond 1024:1, so the builder sends it
    // uncompressed; lz4's format caps its ratio near 255:1, so it stays compressed.
    let zeros = vec![0u8; 12 << 20];
    for codec in [Compression::Lz4, Compression::Zstd] {
        let mut b = BatchBuilder::new(codec);
        b.append(TimestampMs(1), None, Some(&zeros), &[]).unwrap();
        let bytes = b.finish().unwrap();
        let info = validate_deep(&bytes, BatchLimits::default()).unwrap();
        let want = if codec == Compression::Zstd {
            Compression::None
        } else {
            Compression::Lz4
        };
        assert_eq!(info.compression, want, "{codec:?}");
    }
    // Ordinary data stays compressed.
    let text: Vec<u8> = (0..4096u32)
        .map(|i| b"the quick brown fox "[(i % 20) as usize] ^ (i % 251) as u8)
        .collect();
    let mut b = BatchBuilder::new(Compression::Zstd);
    for i in 0..100 {
        b.append(TimestampMs(i), None, Some(&text), &[]).unwrap();
    }
    let bytes = b.finish().unwrap();
    let info = validate_deep(&bytes, BatchLimits::default()).unwrap();
    assert_eq!(info.compression, Compression::Zstd);
    // A forged length prefix above the ratio is refused before anything is decoded.
    let small: Vec<Rec> = vec![(1, None, Some(vec![7; 100]), vec![])];
    let mut bytes = build(Compression::Lz4, &small).to_vec();
    let allowed = decompressed_bytes_allowed(bytes.len() - 64);
    assert_eq!(allowed, DECOMPRESSED_BYTES_FLOOR);
    bytes[64..68].copy_from_slice(&(allowed as u32 + 1).to_le_bytes());
    let crc = compute_crc(&bytes);
    bytes[16..20].copy_from_slice(&crc.to_le_bytes());
    let view = BatchView::new(&bytes, BatchLimits::default()).unwrap();
    assert!(
        matches!(view.records(), Err(BatchError::DecompressedTooLarge { max }) if max == allowed)
    );
}

#[test]
fn sequences_compare_across_the_wrap() {
    assert!(sequence_at_or_before(5, 5));
    assert!(sequence_at_or_before(0, 5));
    assert!(!sequence_at_or_before(6, 5));
    // Across the wrap from i32::MAX to 0.
    assert!(sequence_at_or_before(i32::MAX - 3, 2));
    assert!(!sequence_at_or_before(3, i32::MAX - 2));
    assert_eq!(sequence_add(i32::MAX - 1, 4), 2);
    // Half the space behind `last` is before it; the other half is after.
    assert!(sequence_at_or_before(0, (1 << 30) - 1));
    assert!(!sequence_at_or_before(0, 1 << 30));
}
