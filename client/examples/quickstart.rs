//! The first program: configured from the environment (so it runs from any directory), it
//! writes typed records (string keys, JSON values, and a tombstone) with a `TypedProducer`,
//! closes the producer, and reads them back with a consumer `Stream`.
//!
//! Start a broker with `cargo run --release --bin streamd` in the repository root, then from
//! anywhere:
//!
//!     QUIVER_CA_FILE=/path/to/repo/data/tls/ca.pem cargo run -p quiver-client --example quickstart -- [TOPIC] [COUNT]
//!
//! (`QUIVER_BOOTSTRAP` defaults to 127.0.0.1:9092; run from the directory streamd was started
//! in, the CA is found without `QUIVER_CA_FILE`.) It creates TOPIC (default `quickstart`, one
//! partition) if needed, writes COUNT orders (default 10) and a tombstone, and prints the
//! first COUNT + 1 records of the topic, one per line:
//!
//!     0@3 customer-0 Order { id: 3, total_cents: 750 }
//!     0@10 customer-0 deleted
//!     read 11 records

use std::time::Duration;

use quiver_client::{
    Admin, Client, ClientConfig, Consumer, ConsumerConfig, ErrorCode, JsonSerde, NewTopic,
    OffsetReset, Producer, ProducerConfig, StreamExt, StringSerde, TypedProducerRecord,
};

#[derive(serde::Serialize, serde::Deserialize, Debug)]
struct Order {
    id: u64,
    total_cents: u64,
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("quickstart: {e}");
        std::process::exit(1);
    }
}

async fn run() -> quiver_client::Result<()> {
    let mut args = std::env::args().skip(1);
    let topic = args.next().unwrap_or_else(|| "quickstart".into());
    let count: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10);

    let client = Client::connect(ClientConfig::from_env()?).await?;
    match Admin::new(client.clone())
        .create_topic(NewTopic::new(&topic, 1))
        .await
    {
        Err(e) if e.code() != Some(ErrorCode::TopicAlreadyExists) => return Err(e),
        _ => {}
    }

    let producer = Producer::new(client.clone(), ProducerConfig::default())?
        .typed::<str, Order, _, _>(StringSerde, JsonSerde);
    for id in 0..count {
        let customer = format!("customer-{}", id % 3);
        let order = Order {
            id,
            total_cents: 250 * id,
        };
        let record = TypedProducerRecord::new(&topic)
            .key(customer.as_str())
            .value(&order);
        // Returns once buffered. The Delivery (dropped here) would tell this record's outcome;
        // `close` below waits for every record and reports any that failed.
        drop(producer.enqueue(record).await?);
    }
    // No value: a tombstone for customer-0.
    producer
        .send(TypedProducerRecord::new(&topic).key("customer-0"))
        .await?;
    producer.close_timeout(Duration::from_secs(30)).await?;

    let config = ConsumerConfig::default().auto_offset_reset(OffsetReset::Earliest);
    let mut consumer =
        Consumer::new(client, config).typed::<String, Order, _, _>(StringSerde, JsonSerde);
    consumer.consumer_mut().assign_topic(&topic).await?;
    let mut records = consumer.stream().take(count as usize + 1);
    let mut n = 0;
    while let Some(r) = records.next().await {
        let r = r?;
        n += 1;
        let key = r.key.as_deref().unwrap_or("(no key)");
        match &r.value {
            Some(order) => println!("{}@{} {key} {order:?}", r.partition, r.offset),
            None => println!("{}@{} {key} deleted", r.partition, r.offset),
        }
    }
    println!("read {n} records");
    Ok(())
}
