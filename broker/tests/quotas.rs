//! Client quotas against a real `streamd`: a producer and a consumer past their byte rates get
//! their quota (measured over seconds, the way a user would), quotas are set, listed and
//! removed through the SDK, and a bad one is refused.

use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use quiver_client::{
    Admin, Client, ClientConfig, ClientTls, Consumer, ConsumerConfig, ErrorCode, NewTopic,
    OffsetReset, Producer, ProducerConfig, ProducerRecord, QuotaEntity, QuotaName, TopicPartition,
    CONSUMER_BYTE_RATE, PRODUCER_BYTE_RATE,
};
use quiver_testkit::Broker;

async fn client_as(b: &Broker, client_id: &str) -> Client {
    let config = ClientConfig::new(b.addr.to_string())
        .tls(ClientTls::from_ca_file(b.ca()).unwrap())
        .client_id(client_id);
    Client::connect(config).await.expect("client connects")
}

fn client_entity(id: &str) -> QuotaEntity {
    QuotaEntity {
        user: None,
        client_id: Some(QuotaName::Name(id.into())),
    }
}

const VALUE: usize = 1024;

/// Produces as fast as it can for `warm_up` and then `span` (at most `outstanding` records
/// unanswered); returns the value bytes acknowledged within `span` (the first requests, sent
/// before any throttle, are not the steady rate).
async fn produce_flat_out(client: &Client, topic: &str, warm_up: Duration, span: Duration) -> u64 {
    let producer = Producer::new(
        client.clone(),
        // Requests of at most 64 KiB: the quota holds whole requests back, so a request is
        // the grain of the rate (five 1 MiB requests in flight at 512 KiB/s would answer in
        // 2-second steps, and a 10-second window would see 4 or 6 of them).
        ProducerConfig::default()
            .linger(Duration::from_millis(2))
            .max_request_size(64 * 1024),
    )
    .unwrap();
    let value = vec![7u8; VALUE];
    let start = Instant::now();
    let end = warm_up + span;
    let mut pending = FuturesUnordered::new();
    let mut acked = 0u64;
    let outstanding = 4096;
    while start.elapsed() < end {
        while pending.len() < outstanding {
            let p = producer.clone();
            let v = value.clone();
            let t = topic.to_string();
            pending.push(async move { p.send(ProducerRecord::new(t).value(v)).await });
        }
        match tokio::time::timeout(end.saturating_sub(start.elapsed()), pending.next()).await {
            Ok(Some(r)) => {
                r.expect("produced");
                if start.elapsed() >= warm_up {
                    acked += VALUE as u64;
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    // What is still unanswered at the end is not counted (it was not acknowledged in time).
    drop(pending);
    let _ = producer.close_timeout(Duration::from_secs(1)).await;
    acked
}

#[tokio::test]
async fn a_producer_ten_times_over_its_quota_gets_its_quota() {
    let b = Broker::start(&[]);
    let admin = Admin::new(b.client().await);
    admin.create_topic(NewTopic::new("q", 1)).await.unwrap();
    const RATE: u64 = 512 * 1024;
    admin
        .alter_quotas(
            &client_entity("throttled"),
            &[(PRODUCER_BYTE_RATE, Some(RATE))],
        )
        .await
        .unwrap();

    // Unthrottled, the same loop moves at least ten times the quota: the throttled run below
    // really is ten times over.
    let free = produce_flat_out(
        &client_as(&b, "free").await,
        "q",
        Duration::ZERO,
        Duration::from_secs(2),
    )
    .await;
    assert!(free >= 10 * RATE * 2, "unthrottled: {free} bytes in 2 s");

    let span = Duration::from_secs(10);
    let got = produce_flat_out(
        &client_as(&b, "throttled").await,
        "q",
        Duration::from_secs(2),
        span,
    )
    .await;
    let rate = got as f64 / span.as_secs_f64();
    // Record batches carry a little more than their values (headers, offsets): the broker
    // counts those bytes, so the values' rate is a little under the quota.
    eprintln!("throttled producer: {rate:.0} B/s of values against a quota of {RATE} B/s; unthrottled {} B/s", free / 2);
    assert!(
        rate >= RATE as f64 * 0.9 && rate <= RATE as f64 * 1.1,
        "{rate:.0} B/s against a quota of {RATE}"
    );
}

#[tokio::test]
async fn a_consumer_over_its_quota_is_held_to_it() {
    let b = Broker::start(&[]);
    let client = b.client().await;
    let admin = Admin::new(client.clone());
    admin.create_topic(NewTopic::new("r", 1)).await.unwrap();
    // 8 MiB to read, written unthrottled.
    let producer = Producer::new(client.clone(), ProducerConfig::default()).unwrap();
    let mut pending = FuturesUnordered::new();
    for _ in 0..8 * 1024 {
        let p = producer.clone();
        pending.push(async move {
            p.send(ProducerRecord::new("r").value(vec![1u8; VALUE]))
                .await
        });
    }
    while let Some(r) = pending.next().await {
        r.unwrap();
    }
    const RATE: u64 = 1024 * 1024;
    admin
        .alter_quotas(
            &client_entity("reader"),
            &[(CONSUMER_BYTE_RATE, Some(RATE))],
        )
        .await
        .unwrap();
    let reader = client_as(&b, "reader").await;
    let mut consumer = Consumer::new(
        reader,
        ConsumerConfig::default()
            .auto_offset_reset(OffsetReset::Earliest)
            .max_partition_fetch_bytes(64 * 1024)
            .fetch_max_wait(Duration::from_millis(50)),
    );
    consumer.assign(vec![TopicPartition::new("r", 0)]).unwrap();
    let span = Duration::from_secs(5);
    let start = Instant::now();
    let mut got = 0u64;
    while start.elapsed() < span {
        for r in consumer.poll(Duration::from_millis(100)).await.unwrap() {
            got += r.value.map_or(0, |v| v.len() as u64);
        }
    }
    let rate = got as f64 / start.elapsed().as_secs_f64();
    eprintln!("throttled consumer: {rate:.0} B/s of values against a quota of {RATE} B/s");
    assert!(
        rate >= RATE as f64 * 0.8 && rate <= RATE as f64 * 1.15,
        "{rate:.0} B/s against a quota of {RATE}"
    );
}

#[tokio::test]
async fn quotas_are_set_listed_and_removed_and_bad_ones_refused() {
    let b = Broker::start(&[]);
    let admin = Admin::new(b.client().await);
    let alice = QuotaEntity::user("alice");
    let users = QuotaEntity {
        user: Some(QuotaName::Default),
        client_id: None,
    };
    admin
        .alter_quotas(
            &alice,
            &[
                (PRODUCER_BYTE_RATE, Some(1000)),
                (CONSUMER_BYTE_RATE, Some(2000)),
            ],
        )
        .await
        .unwrap();
    admin
        .alter_quotas(&users, &[(CONSUMER_BYTE_RATE, Some(5000))])
        .await
        .unwrap();
    let listed = admin.describe_quotas().await.unwrap();
    let values = |e: &QuotaEntity| {
        listed
            .iter()
            .find(|q| q.entity == *e)
            .map(|q| q.values.clone())
            .unwrap_or_default()
    };
    assert_eq!(
        values(&alice),
        vec![
            (CONSUMER_BYTE_RATE.to_string(), 2000),
            (PRODUCER_BYTE_RATE.to_string(), 1000)
        ]
    );
    assert_eq!(values(&users), vec![(CONSUMER_BYTE_RATE.to_string(), 5000)]);
    // Removing the last value removes the entity.
    admin
        .alter_quotas(
            &alice,
            &[(PRODUCER_BYTE_RATE, None), (CONSUMER_BYTE_RATE, None)],
        )
        .await
        .unwrap();
    let listed = admin.describe_quotas().await.unwrap();
    assert!(listed.iter().all(|q| q.entity != alice), "{listed:?}");
    // Refused: an unknown key, a zero rate; nothing changes.
    for bad in [
        ("producer_rate", Some(50)),
        (PRODUCER_BYTE_RATE, Some(0)),
        ("nonsense", Some(1)),
    ] {
        let e = admin.alter_quotas(&alice, &[bad]).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::InvalidRequest), "{bad:?}: {e}");
    }
    assert_eq!(admin.describe_quotas().await.unwrap().len(), 1);
}

/// Metadata requests back to back, for `span`: how many were answered, and the largest
/// throttle time among them.
async fn metadata_flat_out(client: &Client, span: Duration) -> (u32, u32) {
    use quiver_proto::api::metadata::MetadataRequest;
    let start = Instant::now();
    let (mut answered, mut throttled) = (0, 0);
    while start.elapsed() < span {
        let req = MetadataRequest {
            topics: None,
            allow_auto_topic_creation: false,
        };
        let (resp, _) = client.call_any(&req, Vec::new()).await.unwrap();
        answered += 1;
        throttled = throttled.max(resp.throttle_time_ms);
    }
    (answered, throttled)
}

#[tokio::test]
async fn a_client_over_its_request_time_share_is_held_back() {
    let b = Broker::start(&[]);
    let admin = Admin::new(b.client().await);
    // 100 topics make a Metadata answer cost the shard some time to build.
    for i in 0..100 {
        admin
            .create_topic(NewTopic::new(format!("t{i}"), 1))
            .await
            .unwrap();
    }
    // 1% of a core: 10 ms of running time per second.
    admin
        .alter_quotas(&client_entity("busy"), &[("request_percentage", Some(1))])
        .await
        .unwrap();
    let span = Duration::from_secs(3);
    let (free, free_throttle) = metadata_flat_out(&client_as(&b, "idle").await, span).await;
    let (busy, busy_throttle) = metadata_flat_out(&client_as(&b, "busy").await, span).await;
    eprintln!(
        "metadata requests in {span:?}: {free} unthrottled, {busy} at 1% of a core (throttle up to {busy_throttle} ms)"
    );
    assert_eq!(free_throttle, 0);
    assert!(busy_throttle > 0, "never throttled");
    assert!(busy * 3 < free, "{busy} throttled against {free} free");
}
