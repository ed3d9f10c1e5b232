//! Delivery reports through the producer's listener (`enqueue_with_opaque`): every record is
//! reported exactly once, with its opaque value, partition and offset.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use quiver_client::{Admin, NewTopic, Producer, ProducerConfig, ProducerRecord};
use quiver_testkit::Broker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_is_reported_once_with_its_opaque_value_and_offset() {
    let broker = Broker::start(&[]);
    let client = broker.client().await;
    Admin::new(client.clone())
        .create_topic(NewTopic::new("d", 3))
        .await
        .unwrap();
    let reports: Arc<Mutex<BTreeMap<u64, (u32, u64)>>> = Arc::default();
    let sink = reports.clone();
    let config = ProducerConfig::default().on_delivery(move |opaque, result| {
        let meta = result.expect("delivered");
        let previous = sink
            .lock()
            .unwrap()
            .insert(opaque, (meta.partition.0, meta.offset.unwrap().0));
        assert!(previous.is_none(), "record {opaque} reported twice");
    });
    let producer = Producer::new(client.clone(), config).unwrap();
    for i in 0..5_000u64 {
        let record = ProducerRecord::new("d")
            .key(format!("k{}", i % 17))
            .value(i.to_le_bytes().to_vec());
        producer.enqueue_with_opaque(record, i).await.unwrap();
    }
    producer.flush().await.unwrap();
    let reports = reports.lock().unwrap().clone();
    assert_eq!(reports.len(), 5_000);
    // Offsets are dense per partition and follow send order.
    let mut by_partition: BTreeMap<u32, Vec<(u64, u64)>> = BTreeMap::new();
    for (opaque, (p, offset)) in &reports {
        by_partition.entry(*p).or_default().push((*opaque, *offset));
    }
    for (p, mut v) in by_partition {
        v.sort();
        let offsets: Vec<u64> = v.iter().map(|(_, o)| *o).collect();
        assert_eq!(
            offsets,
            (0..offsets.len() as u64).collect::<Vec<_>>(),
            "partition {p}"
        );
    }

    // Without a listener the call is refused, not silently dropped.
    let plain = Producer::new(client, ProducerConfig::default()).unwrap();
    let err = plain
        .enqueue_with_opaque(ProducerRecord::new("d").value("x"), 1)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("on_delivery"), "{err}");
}
