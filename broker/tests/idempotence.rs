//! Idempotent produce against the real streamd: producer ids are never handed out twice (not
//! even across kill -9), a resent batch is written once and answered with its first offsets
//! (also after kill -9), and a batch that skips a sequence is refused and writes nothing.

use bytes::Bytes;
use quiver_proto::api::produce::{Acks, InitProducerIdRequest};
use quiver_proto::batch::{BatchBuilder, Compression};
use quiver_proto::{ErrorCode, TimestampMs};
use quiver_testkit::*;

fn pbatch(pid: i64, epoch: i16, seq: i32, records: u32) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None).producer(pid, epoch, seq);
    for i in 0..records {
        b.append(TimestampMs(1000 + i as i64), None, Some(b"v"), &[])
            .unwrap();
    }
    b.finish().unwrap()
}

async fn producer_id(client: &quiver_client::Client) -> (i64, i16) {
    let resp = client
        .call_any(&InitProducerIdRequest::default(), vec![])
        .await
        .expect("InitProducerId answered")
        .0;
    assert_eq!(resp.error_code, ErrorCode::None);
    (resp.producer_id as i64, resp.producer_epoch as i16)
}

/// (error, base offset) of producing `batch` to idem/0.
async fn send(client: &quiver_client::Client, batch: Bytes) -> (ErrorCode, u64) {
    let resp = produce(client, "idem", 0, &[batch], Acks::All).await;
    let p = &resp.topics[0].partitions[0];
    (p.error_code, p.base_offset.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resent_batches_are_written_once_and_gaps_refused_across_kill_9() {
    let mut broker = Broker::start(&[]);
    let client = broker.client().await;
    assert_eq!(create_topic(&client, "idem", 1, &[]).await, ErrorCode::None);
    let (a, epoch) = producer_id(&client).await;
    let (b, _) = producer_id(&client).await;
    assert_ne!(a, b);
    assert_eq!(epoch, 0);

    assert_eq!(
        send(&client, pbatch(a, 0, 0, 3)).await,
        (ErrorCode::None, 0)
    );
    // The same batch again (a retry whose answer was lost): its offsets, nothing written.
    assert_eq!(
        send(&client, pbatch(a, 0, 0, 3)).await,
        (ErrorCode::None, 0)
    );
    // Another producer, and a batch without a producer id, are independent of it.
    assert_eq!(
        send(&client, pbatch(b, 0, 0, 1)).await,
        (ErrorCode::None, 3)
    );
    assert_eq!(
        send(&client, pbatch(-1, -1, -1, 1)).await,
        (ErrorCode::None, 4)
    );
    // Skipping sequences 3 and 4 is refused.
    assert_eq!(
        send(&client, pbatch(a, 0, 5, 1)).await.0,
        ErrorCode::OutOfOrderSequence
    );
    assert_eq!(
        send(&client, pbatch(a, 0, 3, 2)).await,
        (ErrorCode::None, 5)
    );

    broker.kill9();
    broker.restart();
    let client = broker.client().await;
    // After kill -9 the log still knows producer a's last batch.
    assert_eq!(
        send(&client, pbatch(a, 0, 3, 2)).await,
        (ErrorCode::None, 5)
    );
    assert_eq!(
        send(&client, pbatch(a, 0, 6, 1)).await.0,
        ErrorCode::OutOfOrderSequence
    );
    assert_eq!(
        send(&client, pbatch(a, 0, 5, 1)).await,
        (ErrorCode::None, 7)
    );
    // Ids handed out before the kill are not handed out again.
    let (c, _) = producer_id(&client).await;
    assert!(c != a && c != b, "{c} was handed out before ({a}, {b})");
    // A stale epoch is refused once a newer one wrote.
    assert_eq!(
        send(&client, pbatch(a, 1, 0, 1)).await,
        (ErrorCode::None, 8)
    );
    assert_eq!(
        send(&client, pbatch(a, 0, 6, 1)).await.0,
        ErrorCode::InvalidProducerEpoch
    );

    // Nine records in all: each batch once.
    let (resp, records) = fetch(&client, "idem", 0, 0, 0).await;
    assert_eq!(resp.topics[0].partitions[0].error_code, ErrorCode::None);
    let count: u32 = quiver_proto::batch::BatchIter::new(&records)
        .map(|b| {
            quiver_proto::batch::header(b.unwrap())
                .unwrap()
                .record_count
                .get()
        })
        .sum();
    assert_eq!(count, 9);
}

/// A retry of a batch older than the last ones the broker remembers (its answer was lost while
/// later ones came back) is refused as a duplicate, not as a gap: a gap would make the producer
/// restart its sequence and write the batch again. Nothing is written, also after kill -9.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_older_than_those_remembered_is_a_duplicate_across_kill_9() {
    use quiver_proto::batch::IDEMPOTENT_BATCHES_KEPT;
    let mut broker = Broker::start(&[]);
    let client = broker.client().await;
    assert_eq!(create_topic(&client, "idem", 1, &[]).await, ErrorCode::None);
    let (a, _) = producer_id(&client).await;
    let n = IDEMPOTENT_BATCHES_KEPT as i32 + 3;
    for seq in 0..n {
        assert_eq!(
            send(&client, pbatch(a, 0, seq, 1)).await,
            (ErrorCode::None, seq as u64)
        );
    }
    for old in [0, 2] {
        assert_eq!(
            send(&client, pbatch(a, 0, old, 1)).await.0,
            ErrorCode::DuplicateSequence
        );
    }
    broker.kill9();
    broker.restart();
    let client = broker.client().await;
    assert_eq!(
        send(&client, pbatch(a, 0, 1, 1)).await.0,
        ErrorCode::DuplicateSequence
    );
    // The last batches are still answered with their offsets, and the sequence goes on.
    assert_eq!(
        send(&client, pbatch(a, 0, n - 1, 1)).await,
        (ErrorCode::None, n as u64 - 1)
    );
    assert_eq!(
        send(&client, pbatch(a, 0, n, 1)).await,
        (ErrorCode::None, n as u64)
    );
    let (resp, records) = fetch(&client, "idem", 0, 0, 0).await;
    assert_eq!(resp.topics[0].partitions[0].error_code, ErrorCode::None);
    let count = quiver_proto::batch::BatchIter::new(&records).count();
    assert_eq!(count, n as usize + 1, "each batch once");
}
