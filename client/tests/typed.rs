//! The SDK's shape for a new user, against a real `streamd`: typed producers and consumers
//! (tombstones and null keys as `None`), the consumer as a `Stream`, and keys and values
//! borrowed from the caller.

use std::time::{Duration, Instant};

use quiver_client::{
    Admin, Client, Consumer, ConsumerConfig, Error, JsonSerde, NewTopic, OffsetReset, Producer,
    ProducerConfig, ProducerRecord, StreamExt, StringSerde, TopicPartition, TypedProducerRecord,
};
use quiver_testkit::Broker;

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Clone)]
struct Order {
    id: u64,
    customer: String,
}

async fn topic(client: &Client, name: &str, partitions: u32) {
    Admin::new(client.clone())
        .create_topic(NewTopic::new(name, partitions))
        .await
        .expect("topic created");
}

fn reader(client: &Client, topic: &str) -> Consumer {
    let mut c = Consumer::new(
        client.clone(),
        ConsumerConfig::default()
            .auto_offset_reset(OffsetReset::Earliest)
            .fetch_max_wait(Duration::from_millis(50)),
    );
    c.assign(vec![TopicPartition::new(topic, 0)]).unwrap();
    c
}

#[tokio::test]
async fn typed_records_round_trip_with_null_keys_and_tombstones_as_none() {
    let b = Broker::start(&[]);
    let client = b.client().await;
    topic(&client, "typed", 1).await;
    let producer = Producer::new(client.clone(), ProducerConfig::default())
        .unwrap()
        .typed::<str, Order, _, _>(StringSerde, JsonSerde);
    let orders: Vec<Order> = (0..3)
        .map(|id| Order {
            id,
            customer: format!("c{id}"),
        })
        .collect();
    for o in &orders {
        producer
            .send(
                TypedProducerRecord::new("typed")
                    .key(o.customer.as_str())
                    .value(o)
                    .header("schema", "order-v1"),
            )
            .await
            .unwrap();
    }
    // A tombstone (a key, no value) and a record without a key.
    producer
        .send(TypedProducerRecord::new("typed").key("c1"))
        .await
        .unwrap();
    let keyless = Order {
        id: 9,
        customer: "anonymous".into(),
    };
    producer
        .send(TypedProducerRecord::new("typed").value(&keyless))
        .await
        .unwrap();
    producer.close().await.unwrap();

    let mut consumer =
        reader(&client, "typed").typed::<String, Order, _, _>(StringSerde, JsonSerde);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < 5 {
        assert!(Instant::now() < deadline, "read {got:?}");
        got.extend(consumer.poll(Duration::from_millis(200)).await.unwrap());
    }
    for (i, o) in orders.iter().enumerate() {
        assert_eq!(got[i].key.as_deref(), Some(o.customer.as_str()));
        assert_eq!(got[i].value.as_ref(), Some(o));
        assert_eq!(
            got[i].header("schema").map(|v| &v[..]),
            Some(&b"order-v1"[..])
        );
        assert_eq!(got[i].offset.0, i as u64);
        assert_eq!(&*got[i].topic, "typed");
    }
    assert_eq!(got[3].key.as_deref(), Some("c1"));
    assert_eq!(got[3].value, None, "a tombstone is None, not an error");
    assert_eq!(got[4].key, None, "a null key is None");
    assert_eq!(got[4].value.as_ref(), Some(&keyless));
}

/// A record that does not deserialize is an error naming it, once; the records around it
/// are not lost.
#[tokio::test]
async fn a_record_that_does_not_deserialize_is_reported_once_and_the_rest_follow() {
    let b = Broker::start(&[]);
    let client = b.client().await;
    topic(&client, "mixed", 1).await;
    let producer = Producer::new(client.clone(), ProducerConfig::default()).unwrap();
    for v in [
        r#"{"id":0,"customer":"a"}"#,
        "not json",
        r#"{"id":2,"customer":"c"}"#,
    ] {
        drop(
            producer
                .enqueue(ProducerRecord::new("mixed").value(v))
                .await
                .unwrap(),
        );
    }
    producer.close().await.unwrap();
    let mut consumer =
        reader(&client, "mixed").typed::<String, Order, _, _>(StringSerde, JsonSerde);
    let mut ids = Vec::new();
    let mut errors = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while ids.len() < 2 {
        assert!(Instant::now() < deadline, "read {ids:?}, errors {errors:?}");
        match consumer.poll(Duration::from_millis(200)).await {
            Ok(records) => ids.extend(records.into_iter().map(|r| r.value.unwrap().id)),
            Err(e) => errors.push(e),
        }
    }
    assert_eq!(ids, [0, 2]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = errors[0].to_string();
    assert!(matches!(errors[0], Error::Serialization(_)), "{e}");
    assert!(e.contains("mixed/0 at offset 1"), "{e}");
}

/// The consumer as a `Stream`: N records one at a time; records polled but not yet taken
/// stay with the consumer when the stream is dropped.
#[tokio::test]
async fn a_consumer_stream_yields_records_one_at_a_time_and_loses_none_when_dropped() {
    let b = Broker::start(&[]);
    let client = b.client().await;
    topic(&client, "streamed", 1).await;
    let producer = Producer::new(client.clone(), ProducerConfig::default()).unwrap();
    for i in 0..100 {
        drop(
            producer
                .enqueue(ProducerRecord::new("streamed").value(format!("{i}")))
                .await
                .unwrap(),
        );
    }
    producer.close().await.unwrap();
    let mut consumer = reader(&client, "streamed");
    // One fetch brings all 100: the stream takes 10 and leaves 90 buffered.
    let first: Vec<String> = tokio::time::timeout(
        Duration::from_secs(20),
        consumer
            .stream()
            .take(10)
            .map(|r| r.unwrap().value_str().unwrap().to_string())
            .collect(),
    )
    .await
    .unwrap();
    assert_eq!(first, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());
    let tp = TopicPartition::new("streamed", 0);
    assert_eq!(
        consumer.position(&tp).unwrap().0,
        10,
        "the position of the next record"
    );
    // The rest, again from a stream, in order.
    let mut stream = consumer.stream();
    for want in 10..100 {
        let r = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(r.offset.0, want);
        assert_eq!(r.value_str(), Some(want.to_string().as_str()));
    }
    drop(stream);
    assert_eq!(consumer.position(&tp).unwrap().0, 100);

    // The typed stream too.
    let mut typed = consumer.typed::<String, String, _, _>(StringSerde, StringSerde);
    typed
        .consumer_mut()
        .seek(&tp, quiver_client::Offset(95))
        .unwrap();
    let values: Vec<Option<String>> = typed
        .stream()
        .take(5)
        .map(|r| r.unwrap().value)
        .collect()
        .await;
    assert_eq!(
        values,
        (95..100).map(|i| Some(i.to_string())).collect::<Vec<_>>()
    );
}

/// Keys, values and headers borrowed from the caller's data (copied), not only `'static` ones.
#[tokio::test]
async fn borrowed_keys_and_values_are_accepted_and_copied() {
    let b = Broker::start(&[]);
    let client = b.client().await;
    topic(&client, "borrowed", 1).await;
    let producer = Producer::new(client.clone(), ProducerConfig::default()).unwrap();
    for i in 0..3 {
        let key = format!("user-{i}");
        let buf = vec![b'v', b'0' + i as u8, b'!', b'?'];
        let header = String::from("trace");
        let record = ProducerRecord::new("borrowed")
            .key(key.as_str())
            .value(&buf[..3])
            .header("h", &header);
        drop(producer.enqueue(record).await.unwrap());
        // The caller's buffers may go away at once: the record has its own copy.
        drop((key, buf, header));
    }
    let array = [1u8, 2, 3];
    let borrowed: &[u8; 3] = &array;
    producer
        .send(ProducerRecord::new("borrowed").key(borrowed).value(array))
        .await
        .unwrap();
    producer.close().await.unwrap();
    let mut consumer = reader(&client, "borrowed");
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < 4 {
        assert!(Instant::now() < deadline);
        got.extend(consumer.poll(Duration::from_millis(200)).await.unwrap());
    }
    for (i, r) in got.iter().take(3).enumerate() {
        assert_eq!(r.key_str(), Some(format!("user-{i}").as_str()));
        assert_eq!(r.value_str(), Some(format!("v{i}!").as_str()));
        assert_eq!(r.header("h").map(|v| &v[..]), Some(&b"trace"[..]));
    }
    assert_eq!(got[3].key.as_deref(), Some(&[1u8, 2, 3][..]));
    assert_eq!(got[3].value.as_deref(), Some(&[1u8, 2, 3][..]));
}
