//! Reads every partition of a topic from the beginning and prints the records, decoding JSON
//! values; exits after two seconds without new records.
//!
//! Start a broker with `cargo run --release --bin streamd` in the repository root, produce with
//! the producer example, then, from the same directory:
//!
//!     cargo run -p quiver-client --example consumer -- [BOOTSTRAP] [TOPIC]

use std::time::{Duration, Instant};

use quiver_client::{Client, ClientConfig, Consumer, ConsumerConfig, JsonSerde, OffsetReset};

#[derive(serde::Deserialize, Debug)]
#[allow(dead_code)] // the fields are printed with Debug
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

    let client = Client::connect(ClientConfig::new(&bootstrap)).await?;
    let mut consumer = Consumer::new(
        client,
        ConsumerConfig::default().auto_offset_reset(OffsetReset::Earliest),
    );
    let partitions = consumer.assign_topic(&topic).await?;
    consumer.seek_to_beginning(&partitions).await?;

    let mut last = Instant::now();
    let mut n = 0u64;
    while last.elapsed() < Duration::from_secs(2) {
        for r in consumer.poll(Duration::from_millis(500)).await? {
            last = Instant::now();
            n += 1;
            match r.deserialize_value::<Order, _>(&JsonSerde) {
                Ok(None) => println!("{}/{}@{} tombstone", r.topic, r.partition, r.offset),
                Ok(Some(order)) => println!(
                    "{}/{}@{} key={:?} schema={:?} {order:?}",
                    r.topic,
                    r.partition,
                    r.offset,
                    r.key_str(),
                    r.header("schema")
                        .map(|v| String::from_utf8_lossy(v).into_owned()),
                ),
                Err(_) => println!("{}/{}@{} {:?}", r.topic, r.partition, r.offset, r.value),
            }
        }
    }
    for tp in &partitions {
        println!("{tp}: position {:?}", consumer.position(tp));
    }
    println!("read {n} records");
    Ok(())
}
