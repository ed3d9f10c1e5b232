//! A follower's side of replication in the engine: batches appended as the leader stored them
//! (offsets and epochs kept, nothing else accepted), and where each leader epoch ends.

mod common;
use bytes::Bytes;
use common::*;
use quiver_engine::{Error, PartitionLog};
use quiver_proto::batch::{BatchLimits, ValidBatch};
use quiver_proto::{LeaderEpoch, Offset};

/// Every batch of `log` as stored, from offset 0.
async fn stored(log: &PartitionLog) -> Vec<ValidBatch> {
    let mut out = Vec::new();
    let mut at = log.start_offset();
    while at < log.readable_end() {
        let bytes = log.read(at, 1 << 20).await.unwrap();
        let mut pos = 0;
        for (base, n, _) in batches(&bytes) {
            let len = quiver_proto::batch::header(&bytes[pos..])
                .unwrap()
                .batch_len
                .get() as usize;
            out.push(ValidBatch::new(bytes.slice(pos..pos + len), BatchLimits::default()).unwrap());
            pos += len;
            at = Offset(base + u64::from(n));
        }
    }
    out
}

#[test]
fn a_follower_keeps_its_leaders_offsets_and_epochs_and_finds_where_epochs_end() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    run(tmp.path(), move || async move {
        let leader = PartitionLog::open(root.join("leader"), small_config())
            .await
            .unwrap();
        // Epochs 1, 1, 3, 3, 3, 7 over 60 batches of 1 to 5 records.
        let epoch_of = |i: u64| match i {
            0..=19 => 1,
            20..=49 => 3,
            _ => 7,
        };
        let mut starts = Vec::new();
        for i in 0..60u64 {
            let b = batch(1 + (i % 5) as u32, 200, i, 1000 + i as i64);
            let info = leader
                .append(&[b], Some(LeaderEpoch(epoch_of(i))))
                .await
                .unwrap();
            starts.push(info.base_offset);
        }
        let end = leader.end_offset();
        let (e3_start, e7_start) = (starts[20], starts[50]);
        assert_eq!(leader.last_epoch().await.unwrap(), Some(LeaderEpoch(7)));

        // (asked, answer)
        let cases = [
            (0, None),
            (1, Some((1, e3_start))),
            (2, Some((1, e3_start))),
            (3, Some((3, e7_start))),
            (6, Some((3, e7_start))),
            (7, Some((7, end))),
            (100, Some((7, end))),
        ];
        for (asked, want) in cases {
            let got = leader.epoch_end(LeaderEpoch(asked)).await.unwrap();
            assert_eq!(got, want.map(|(e, o)| (LeaderEpoch(e), o)), "epoch {asked}");
        }

        // The follower takes the leader's batches in pieces, as stored.
        let all = stored(&leader).await;
        assert_eq!(all.len(), 60);
        let follower = PartitionLog::open(root.join("follower"), small_config())
            .await
            .unwrap();
        assert_eq!(follower.last_epoch().await.unwrap(), None);
        for chunk in all.chunks(7) {
            follower.append_replica(chunk, &|| true).await.unwrap();
        }
        assert_eq!(follower.end_offset(), end);
        assert_eq!(follower.durable_end(), end);
        let copy = stored(&follower).await;
        for (a, b) in all.iter().zip(&copy) {
            assert_eq!(a.bytes(), b.bytes(), "byte for byte");
        }
        assert_eq!(
            follower.epoch_end(LeaderEpoch(3)).await.unwrap(),
            Some((LeaderEpoch(3), e7_start))
        );

        // A gap, a repeat, or batches out of order write nothing.
        let extra = |from: Offset| {
            let mut bytes = batch(2, 100, 99, 5000).bytes().to_vec();
            quiver_proto::batch::set_base_offset(&mut bytes, from).unwrap();
            ValidBatch::new(Bytes::from(bytes), BatchLimits::default()).unwrap()
        };
        for bad in [
            vec![extra(end.plus(1))],
            vec![extra(Offset(end.0 - 1))],
            vec![extra(end), extra(end)],
        ] {
            let got = follower.append_replica(&bad, &|| true).await;
            assert!(matches!(got, Err(Error::NotContiguous { .. })), "{got:?}");
            assert_eq!(follower.end_offset(), end);
        }
        follower
            .append_replica(&[extra(end), extra(end.plus(2))], &|| true)
            .await
            .unwrap();
        assert_eq!(follower.end_offset(), end.plus(4));

        // Divergence: the follower cuts back to where epoch 3 ends and takes epoch 7 again.
        follower.truncate(e7_start).await.unwrap();
        assert_eq!(follower.last_epoch().await.unwrap(), Some(LeaderEpoch(3)));
        follower.append_replica(&all[50..], &|| true).await.unwrap();
        assert_eq!(follower.end_offset(), end);
        leader.close().await.unwrap();
        follower.close().await.unwrap();
        let again = PartitionLog::open(root.join("follower"), small_config())
            .await
            .unwrap();
        assert_eq!(
            again.epoch_end(LeaderEpoch(5)).await.unwrap(),
            Some((LeaderEpoch(3), e7_start))
        );
        again.close().await.unwrap();
    });
}

/// A follower whose whole log lies below its leader's log start empties it and starts again at
/// the leader's start: the old segments go, appends continue from there, and a reopen finds the
/// log where it was left.
#[test]
fn a_follower_behind_its_leaders_log_start_starts_again_there() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    run(tmp.path(), move || async move {
        let leader = PartitionLog::open(root.join("leader"), small_config())
            .await
            .unwrap();
        for i in 0..200u64 {
            leader
                .append(&[batch(3, 400, i, 1000 + i as i64)], Some(LeaderEpoch(2)))
                .await
                .unwrap();
        }
        let all = stored(&leader).await;
        let follower = PartitionLog::open(root.join("follower"), small_config())
            .await
            .unwrap();
        follower.append_replica(&all[..20], &|| true).await.unwrap();
        let behind = follower.end_offset();
        assert!(
            !follower.restart_at(behind).await.unwrap(),
            "at its own end: nothing to do"
        );
        assert!(!follower.restart_at(Offset(5)).await.unwrap());
        assert_eq!(follower.end_offset(), behind, "unchanged");

        // The leader's start is past the follower's end (batch 150 onwards kept).
        let start = Offset(150 * 3);
        assert!(follower.restart_at(start).await.unwrap());
        assert_eq!(
            (follower.start_offset(), follower.end_offset()),
            (start, start)
        );
        assert_eq!(follower.segment_count(), 1);
        assert!(follower.read(start, 100).await.unwrap().is_empty());
        assert!(matches!(
            follower.read(Offset(0), 100).await,
            Err(Error::OffsetOutOfRange { .. })
        ));
        follower
            .append_replica(&all[150..], &|| true)
            .await
            .unwrap();
        assert_eq!(follower.end_offset(), leader.end_offset());
        let copied: Vec<Vec<u8>> = stored(&follower)
            .await
            .iter()
            .map(|b| b.bytes().to_vec())
            .collect();
        let want: Vec<Vec<u8>> = all[150..].iter().map(|b| b.bytes().to_vec()).collect();
        assert_eq!(
            copied, want,
            "the leader's batches from its start, as stored"
        );
        follower.close().await.unwrap();
        let again = PartitionLog::open(root.join("follower"), small_config())
            .await
            .unwrap();
        assert_eq!(
            (again.start_offset(), again.end_offset()),
            (start, leader.end_offset())
        );
        assert!(again.verify().await.unwrap().is_empty());
    });
}
