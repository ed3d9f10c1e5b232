//! Ends of life, against a real `streamd`: a producer dropped with records unsent says so (and
//! still sends them while the runtime runs), `flush` and `close` report records that failed,
//! `close_timeout` gives up on a broker that is gone, and a group member dropped without
//! `close` leaves its group at once.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quiver_client::{
    Admin, Client, Consumer, ConsumerConfig, Error, ErrorCode, NewTopic, OffsetReset, Producer,
    ProducerConfig, ProducerRecord, TopicPartition,
};
use quiver_testkit::Broker;

async fn topic(client: &Client, topic: NewTopic) {
    Admin::new(client.clone())
        .create_topic(topic)
        .await
        .expect("topic created");
}

/// Log lines written while it is the thread's default subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Records of one partition from the start, until `want` or 20 s.
async fn read(client: &Client, topic: &str, want: usize) -> Vec<String> {
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
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < want && Instant::now() < deadline {
        for r in consumer.poll(Duration::from_millis(200)).await.unwrap() {
            got.push(r.value_str().unwrap().to_string());
        }
    }
    got
}

/// The first-hour bug: 100 records enqueued, the producer dropped, `main` returned: none
/// written, and no word about it. Now the drop logs an error with the count; and while the
/// runtime runs they are still sent.
#[tokio::test(flavor = "current_thread")]
async fn a_producer_dropped_with_records_unsent_logs_how_many_and_still_sends_them() {
    let b = Broker::start(&[]);
    let client = b.client().await;
    topic(&client, NewTopic::new("dropped", 1)).await;
    let log = Captured::default();
    let sink = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // A long linger: nothing leaves before the drop.
    let producer = Producer::new(
        client.clone(),
        ProducerConfig::default().linger(Duration::from_secs(60)),
    )
    .unwrap();
    for i in 0..100 {
        drop(
            producer
                .enqueue(ProducerRecord::new("dropped").value(format!("{i}")))
                .await
                .unwrap(),
        );
    }
    drop(producer);
    let text = log.text();
    assert!(
        text.contains("ERROR") && text.contains("100 record(s) not yet acknowledged"),
        "{text}"
    );
    assert!(
        text.contains("call Producer::close()"),
        "names the fix: {text}"
    );
    // The runtime lives on: the sender sends them after all.
    let got = read(&client, "dropped", 100).await;
    let want: Vec<String> = (0..100).map(|i| i.to_string()).collect();
    assert_eq!(got, want);
}

/// A producer closed as it should be logs nothing at the drop.
#[tokio::test(flavor = "current_thread")]
async fn a_closed_producer_drops_quietly() {
    let b = Broker::start(&[]);
    let client = b.client().await;
    topic(&client, NewTopic::new("closed", 1)).await;
    let log = Captured::default();
    let sink = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let producer = Producer::new(client.clone(), ProducerConfig::default()).unwrap();
    for i in 0..100 {
        drop(
            producer
                .enqueue(ProducerRecord::new("closed").value(format!("{i}")))
                .await
                .unwrap(),
        );
    }
    producer.close().await.unwrap();
    drop(producer);
    assert!(!log.text().contains("ERROR"), "{}", log.text());
}

/// `flush` reports records the broker refused, with the count and the first error, once;
/// each record's own delivery says the same.
#[tokio::test]
async fn flush_reports_failed_records_with_their_count_and_first_error() {
    let b = Broker::start(&[]);
    let client = b.client().await;
    topic(
        &client,
        NewTopic::new("small", 1).config("max.message.bytes", "2048"),
    )
    .await;
    // Small batches: each 10 KB record (over the topic's 2 KB) is a batch of its own, and
    // only it fails.
    let producer =
        Producer::new(client.clone(), ProducerConfig::default().batch_size(1024)).unwrap();
    let mut big = Vec::new();
    let mut small = Vec::new();
    for i in 0..2u8 {
        let record = ProducerRecord::new("small").value(vec![i; 10_000]);
        big.push(producer.enqueue(record).await.unwrap());
        let record = ProducerRecord::new("small").value(format!("fits {i}"));
        small.push(producer.enqueue(record).await.unwrap());
    }
    match producer.flush().await {
        Err(Error::DeliveryFailed { failed, first }) => {
            assert_eq!(failed, 2);
            assert_eq!(first.code(), Some(ErrorCode::MessageTooLarge), "{first}");
        }
        other => panic!("expected DeliveryFailed, got {other:?}"),
    }
    // Reported once: the next flush has nothing to report.
    producer.flush().await.unwrap();
    for d in big {
        let e = d.await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::MessageTooLarge), "{e}");
    }
    let offsets: Vec<u64> = futures_util::future::join_all(small)
        .await
        .into_iter()
        .map(|m| m.unwrap().offset.unwrap().0)
        .collect();
    assert_eq!(offsets, [0, 1]);
    producer.close().await.unwrap();
}

/// With the broker gone, `flush_timeout` says how many records wait, and `close_timeout` fails
/// them within about its timeout (not after `delivery_timeout`) and reports the count.
#[tokio::test]
async fn close_timeout_fails_what_a_dead_broker_never_acknowledged() {
    let mut b = Broker::start(&[]);
    let client = b.client().await;
    topic(&client, NewTopic::new("gone", 1)).await;
    let producer = Producer::new(client.clone(), ProducerConfig::default()).unwrap();
    // Metadata and a producer id first, as an application that has been running.
    producer
        .send(ProducerRecord::new("gone").value("before"))
        .await
        .unwrap();
    b.kill9();
    let mut deliveries = Vec::new();
    for i in 0..50 {
        deliveries.push(
            producer
                .enqueue(ProducerRecord::new("gone").value(format!("{i}")))
                .await
                .unwrap(),
        );
    }
    let err = producer
        .flush_timeout(Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err}");
    assert!(err.to_string().contains("50 record(s)"), "{err}");
    let t = Instant::now();
    let err = producer
        .close_timeout(Duration::from_secs(2))
        .await
        .unwrap_err();
    let took = t.elapsed();
    assert!(took < Duration::from_secs(5), "close took {took:?}");
    match &err {
        Error::DeliveryFailed { failed, first } => {
            assert_eq!(*failed, 50, "{err}");
            assert!(first.to_string().contains("close_timeout"), "{first}");
        }
        other => panic!("expected DeliveryFailed, got {other:?}"),
    }
    for d in deliveries {
        let e = tokio::time::timeout(Duration::from_secs(2), d)
            .await
            .expect("every delivery is answered")
            .unwrap_err();
        assert!(e.to_string().contains("close_timeout"), "{e}");
    }
    assert!(matches!(
        producer
            .enqueue(ProducerRecord::new("gone").value("late"))
            .await,
        Err(Error::Closed)
    ));
}

/// A group member dropped without `close` (an early `?` return) leaves the group at once: the
/// next member gets every partition in far less than the session timeout (30 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_group_member_leaves_and_the_next_gets_its_partitions_at_once() {
    let b = Broker::start(&["--group-session-timeout-ms", "30000"]);
    let client = b.client().await;
    topic(&client, NewTopic::new("members", 4)).await;
    let config = ConsumerConfig::default()
        .group_id("leavers")
        .fetch_max_wait(Duration::from_millis(50));
    let mut first = Consumer::new(client.clone(), config.clone());
    first.subscribe(vec!["members".into()]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while first.assignment().len() < 4 {
        assert!(
            Instant::now() < deadline,
            "the first member got {:?}",
            first.assignment()
        );
        first.poll(Duration::from_millis(100)).await.unwrap();
    }
    // An early return drops it.
    let failing = async move {
        let _member = first;
        Err::<(), _>("something went wrong")
    };
    assert!(failing.await.is_err());

    let t = Instant::now();
    let mut second = Consumer::new(client.clone(), config);
    second.subscribe(vec!["members".into()]).await.unwrap();
    while second.assignment().len() < 4 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "after {:?} the second member has {:?}: the first still holds the rest",
            t.elapsed(),
            second.assignment()
        );
        second.poll(Duration::from_millis(100)).await.unwrap();
    }
    assert!(t.elapsed() < Duration::from_secs(10));
    second.close().await.unwrap();
}
