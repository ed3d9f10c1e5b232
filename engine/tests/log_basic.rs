mod common;
use common::*;
use quiver_engine::{Error, PartitionLog};
use quiver_proto::Offset;

#[test]
fn append_read_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p0");
    run(tmp.path(), move || async move {
        let log = PartitionLog::open(&dir, small_config()).await.unwrap();
        assert_eq!(log.end_offset(), Offset(0));
        let mut expect = Vec::new();
        for i in 0..100u64 {
            let b = batch(
                1 + (i % 7) as u32,
                100 + (i as usize * 13) % 900,
                i,
                1000 + i as i64,
            );
            let info = log.append(std::slice::from_ref(&b), None).await.unwrap();
            assert_eq!(
                info.base_offset.0,
                expect
                    .iter()
                    .map(|(_, n, _): &(u64, u32, Vec<u8>)| *n as u64)
                    .sum::<u64>()
            );
            expect.push((
                info.base_offset.0,
                b.info().record_count,
                b.bytes()[8..].to_vec(),
            ));
        }
        assert!(log.segment_count() > 1, "small segments roll");
        assert_eq!(log.durable_end(), log.end_offset());
        assert_eq!(read_all(&log, 0).await, expect);
        // Reading from the middle of a batch returns that whole batch first.
        let (base, n, _) = expect[50].clone();
        if n > 1 {
            let got = batches(&log.read(Offset(base + 1), 1).await.unwrap());
            assert_eq!(got[0].0, base);
            assert_eq!(got.len(), 1, "max_bytes 1 still returns one whole batch");
        }
        let end = log.end_offset();
        assert!(log.read(end, 100).await.unwrap().is_empty());
        match log.read(end.plus(1), 100).await {
            Err(Error::OffsetOutOfRange { start, end: e, .. }) => {
                assert_eq!((start, e), (Offset(0), end));
            }
            other => panic!("{other:?}"),
        }
        log.close().await.unwrap();
        assert!(matches!(log.read(Offset(0), 10).await, Err(Error::Closed)));
        let log = PartitionLog::open(&dir, small_config()).await.unwrap();
        assert_eq!(log.end_offset(), end);
        assert_eq!(read_all(&log, 0).await, expect);
        // Appends continue at the old end after a reopen.
        let info = log.append(&[batch(3, 10, 999, 5000)], None).await.unwrap();
        assert_eq!(info.base_offset, end);
        log.close().await.unwrap();
    });
}
