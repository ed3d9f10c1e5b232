//! Creates a topic, shows it, changes a setting, and lists the cluster.
//!
//! Start a broker with `cargo run --release --bin streamd` in the repository root, then, from
//! the same directory (so ./data/tls/ca.pem is trusted):
//!
//!     cargo run -p quiver-client --example admin -- [BOOTSTRAP] [TOPIC]

use quiver_client::{
    Admin, AlterConfig, Client, ClientConfig, ConfigResource, ErrorCode, NewTopic,
};

#[tokio::main]
async fn main() -> quiver_client::Result<()> {
    let mut args = std::env::args().skip(1);
    let bootstrap = args.next().unwrap_or_else(|| "127.0.0.1:9092".into());
    let topic = args.next().unwrap_or_else(|| "example-orders".into());

    let admin = Admin::new(Client::connect(ClientConfig::new(&bootstrap)).await?);

    let cluster = admin.describe_cluster().await?;
    for b in &cluster.brokers {
        println!("broker {} at {}", b.id, b.address());
    }

    match admin
        .create_topic(NewTopic::new(&topic, 3).config("retention.ms", "86400000"))
        .await
    {
        Ok(()) => println!("created {topic}"),
        Err(e) if e.code() == Some(ErrorCode::TopicAlreadyExists) => {
            println!("{topic} exists already")
        }
        Err(e) => return Err(e),
    }
    admin
        .alter_configs(
            ConfigResource::Topic(topic.clone()),
            vec![AlterConfig::set("retention.ms", "172800000")],
        )
        .await?;

    let t = admin.describe_topic(&topic).await?;
    println!("{} ({}):", t.name, t.id);
    for p in &t.partitions {
        println!(
            "  partition {} leader {:?} offsets {:?}..{:?}",
            p.partition, p.leader, p.start_offset, p.end_offset
        );
    }
    for c in t.configs.iter().filter(|c| c.is_override()) {
        println!("  {} = {}", c.name, c.value.as_deref().unwrap_or("-"));
    }
    for t in admin.list_topics().await? {
        println!("topic {} with {} partitions", t.name, t.partitions.len());
    }
    Ok(())
}
