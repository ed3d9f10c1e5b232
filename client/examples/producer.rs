//! Sends keyed JSON records with a header, many in flight at once, and prints where they went.
//!
//! Start a broker with `cargo run --release --bin streamd` in the repository root, create the
//! topic (`cargo run -p quiver-client --example admin`), then, from the same directory:
//!
//!     cargo run -p quiver-client --example producer -- [BOOTSTRAP] [TOPIC] [COUNT]

use std::time::Duration;

use quiver_client::{
    Acks, Client, ClientConfig, Compression, JsonSerde, Producer, ProducerConfig, ProducerRecord,
    Serializer,
};

#[derive(serde::Serialize)]
struct Order {
    id: u64,
    customer: String,
    total_cents: u64,
}

#[tokio::main]
async fn main() -> quiver_client::Result<()> {
    let mut args = std::env::args().skip(1);
    let bootstrap = args.next().unwrap_or_else(|| "127.0.0.1:9092".into());
    let topic = args.next().unwrap_or_else(|| "example-orders".into());
    let count: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);

    let client = Client::connect(ClientConfig::new(&bootstrap)).await?;
    let producer = Producer::new(
        client,
        ProducerConfig::default()
            .acks(Acks::All)
            .compression(Compression::Lz4)
            .linger(Duration::from_millis(10)),
    )?;

    // One awaited send: the simplest way.
    let first = Order {
        id: 0,
        customer: "customer-0".into(),
        total_cents: 100,
    };
    let meta = producer
        .send(
            ProducerRecord::new(&topic)
                .key(first.customer.clone())
                .value(JsonSerde.serialize(&topic, &first)?)
                .header("schema", "order-v1"),
        )
        .await?;
    println!(
        "order 0 -> partition {} offset {:?}",
        meta.partition, meta.offset
    );

    // Many in flight: enqueue returns once the record is buffered.
    let mut deliveries = Vec::new();
    for id in 1..count {
        let order = Order {
            id,
            customer: format!("customer-{}", id % 10),
            total_cents: id * 7,
        };
        let record = ProducerRecord::new(&topic)
            .key(order.customer.clone())
            .value(JsonSerde.serialize(&topic, &order)?)
            .header("schema", "order-v1");
        deliveries.push(producer.enqueue(record).await?);
    }
    let mut per_partition = std::collections::BTreeMap::new();
    for d in deliveries {
        let meta = d.await?;
        *per_partition.entry(meta.partition.0).or_insert(0u64) += 1;
    }
    println!("sent {count} orders; per partition: {per_partition:?}");
    producer.close().await
}
