//! The idempotent producer (the default) keeps several requests per partition in flight and
//! still writes every record once, in order, even when the broker is killed with SIGKILL in the
//! middle and the producer retries what it sent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quiver_client::{
    Admin, Consumer, ConsumerConfig, NewTopic, OffsetReset, Producer, ProducerConfig,
    ProducerRecord, TopicPartition,
};
use quiver_testkit::Broker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_records_survive_kill_9_once_each_and_in_order() {
    let mut broker = Broker::start(&[]);
    let client = broker.client_with_timeout(Duration::from_secs(5)).await;
    Admin::new(client.clone())
        .create_topic(NewTopic::new("once", 1))
        .await
        .unwrap();
    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let (a, f) = (acked.clone(), failed.clone());
    let config = ProducerConfig::default()
        .max_in_flight_per_broker(5)
        // Small batches, many to a request: far more batches than requests go unanswered, and
        // what the broker remembers to recognize a retry is counted in batches.
        .batch_size(2 * 1024)
        .linger(Duration::ZERO)
        .retry_backoff(Duration::from_millis(20))
        .on_delivery(move |_, r| {
            match r {
                Ok(_) => a.fetch_add(1, Ordering::Relaxed),
                Err(_) => f.fetch_add(1, Ordering::Relaxed),
            };
        });
    assert!(config.enable_idempotence, "idempotence is the default");
    let producer = Producer::new(client.clone(), config).unwrap();
    // Records keep going until the broker has been killed with requests in flight (once some
    // records are acknowledged), and for 20,000 more after.
    let mut killed_at: Option<u64> = None;
    let mut i = 0u64;
    while killed_at.is_none_or(|k| i < k + 20_000) {
        let record = ProducerRecord::new("once").value(format!("{i:08}").into_bytes());
        producer.enqueue_with_opaque(record, i).await.unwrap();
        i += 1;
        if killed_at.is_none() && acked.load(Ordering::Relaxed) > 5_000 {
            broker.kill9();
            broker.restart();
            killed_at = Some(i);
        }
        assert!(i < 20_000_000, "no acknowledgements");
    }
    let n = i;
    producer.flush().await.unwrap();
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert_eq!(acked.load(Ordering::Relaxed), n);

    // Every value once, in the order sent.
    let want: Vec<String> = (0..n).map(|i| format!("{i:08}")).collect();
    let got = read_values(&client, "once", want.len()).await;
    if let Some(at) = (0..want.len().max(got.len())).find(|&i| got.get(i) != want.get(i)) {
        panic!(
            "read {} values for {} sent; first difference at {at}: read {:?} where {:?} was sent \
             (the kill came after record {killed_at:?}); read around it: {:?}",
            got.len(),
            want.len(),
            got.get(at),
            want.get(at),
            &got[at.saturating_sub(3)..(at + 5).min(got.len())],
        );
    }
    let end = Admin::new(client.clone())
        .describe_topic("once")
        .await
        .unwrap()
        .partitions[0]
        .end_offset
        .unwrap();
    assert_eq!(end.0, n, "no record was written twice");
}

/// A record's opaque value and its offset, or why it failed.
type Outcome = (u64, Result<u64, quiver_client::ErrorCode>);

/// A numbered batch the broker refuses for good (too large for the topic) leaves a gap in the
/// partition's sequence: the batches behind it are refused as out of order, the partition moves
/// to a new epoch, and every other record is still written once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_refused_for_good_does_not_stop_the_partition() {
    let broker = Broker::start(&[]);
    let client = broker.client().await;
    Admin::new(client.clone())
        .create_topic(NewTopic::new("gap", 1).config("max.message.bytes", "20000"))
        .await
        .unwrap();
    let outcomes: Arc<std::sync::Mutex<Vec<Outcome>>> = Arc::default();
    let sink = outcomes.clone();
    let config = ProducerConfig::default()
        .max_in_flight_per_broker(5)
        .batch_size(4 * 1024)
        .linger(Duration::ZERO)
        .on_delivery(move |opaque, r| {
            let r = r
                .map(|m| m.offset.unwrap().0)
                .map_err(|e| e.code().expect("a broker error"));
            sink.lock().unwrap().push((opaque, r));
        });
    let producer = Producer::new(client.clone(), config).unwrap();
    const N: u64 = 3_000;
    const HUGE: u64 = 1_000;
    for i in 0..N {
        let value = if i == HUGE {
            vec![b'x'; 60_000]
        } else {
            format!("{i:08}").into_bytes()
        };
        let record = ProducerRecord::new("gap").value(value);
        producer.enqueue_with_opaque(record, i).await.unwrap();
    }
    // The flush reports the one failure the listener was told of.
    match producer.flush().await {
        Err(quiver_client::Error::DeliveryFailed { failed, first }) => {
            assert_eq!(failed, 1);
            assert_eq!(
                first.code(),
                Some(quiver_client::ErrorCode::MessageTooLarge)
            );
        }
        other => panic!("expected one failed record, got {other:?}"),
    }
    let outcomes = outcomes.lock().unwrap().clone();
    assert_eq!(outcomes.len() as u64, N);
    for (i, r) in &outcomes {
        match r {
            Ok(_) => assert_ne!(*i, HUGE),
            Err(code) => {
                assert_eq!(*i, HUGE, "record {i} failed with {code:?}");
                assert_eq!(*code, quiver_client::ErrorCode::MessageTooLarge);
            }
        }
    }
    // The producer goes on after it.
    producer
        .send(ProducerRecord::new("gap").value(format!("{N:08}").into_bytes()))
        .await
        .unwrap();

    let want: Vec<String> = (0..=N)
        .filter(|&i| i != HUGE)
        .map(|i| format!("{i:08}"))
        .collect();
    let got = read_values(&client, "gap", want.len()).await;
    assert_eq!(got, want);
}

/// The first `n` values of partition 0 of `topic`, as text.
async fn read_values(client: &quiver_client::Client, topic: &str, n: usize) -> Vec<String> {
    let mut consumer = Consumer::new(
        client.clone(),
        ConsumerConfig::default()
            .auto_offset_reset(OffsetReset::Earliest)
            .fetch_max_wait(Duration::from_millis(50)),
    );
    consumer
        .assign(vec![TopicPartition::new(topic, 0)])
        .unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < n {
        assert!(Instant::now() < deadline, "read {} of {n}", got.len());
        for r in consumer.poll(Duration::from_millis(200)).await.unwrap() {
            got.push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
        }
    }
    got
}
