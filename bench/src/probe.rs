//! `streambench probe`: how long clients go without an acknowledgement or a record while the
//! cluster fails over. One producer sends a record every `1 / --rate` seconds (linger 0, the
//! run's --acks), one consumer reads every partition from its end; each acknowledgement and
//! each record received is stamped with the wall clock. At the end the probe prints every gap
//! longer than `--gap` in either stream, as wall-clock ms since the Unix epoch, so a script
//! that killed a broker at time T reads the outage as the end of the gap holding T minus T:
//! the time to the first successful produce and to the first consumed record after the kill.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quiver_client::{Consumer, ConsumerConfig, OffsetReset, Producer, ProducerRecord};
use quiver_tools::outln;
use serde_json::json;

use super::{connect, ensure_topic, producer_config, Opts};

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Gaps longer than `min_ms` between consecutive times (sorted), as (from, to).
fn gaps(times: &mut [i64], min_ms: i64) -> Vec<(i64, i64)> {
    times.sort_unstable();
    times
        .windows(2)
        .filter(|w| w[1] - w[0] > min_ms)
        .map(|w| (w[0], w[1]))
        .collect()
}

pub(super) async fn probe(opts: &Opts, gap: Duration) -> Result<(), String> {
    if opts.rate <= 0.0 {
        return Err("probe needs --rate (records per second), e.g. --rate 200".into());
    }
    let admin_client = connect(opts).await?;
    ensure_topic(&admin_client, opts).await?;
    let client = connect(opts).await?;
    client.topic(&opts.topic).await.map_err(|e| e.to_string())?;
    let config = producer_config(opts).linger(Duration::ZERO);
    let producer = Producer::new(client, config).map_err(|e| e.to_string())?;
    let mut consumer = Consumer::new(
        connect(opts).await?,
        ConsumerConfig::default().auto_offset_reset(OffsetReset::Latest),
    );
    consumer
        .assign_topic(&opts.topic)
        .await
        .map_err(|e| e.to_string())?;
    // The consumer's position is taken before the first send.
    let _ = consumer.poll(Duration::from_millis(10)).await;

    let acks = Arc::new(Mutex::new(Vec::<i64>::new()));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let received = Arc::new(Mutex::new(Vec::<i64>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (r_stop, r_received) = (stop.clone(), received.clone());
    let reader = tokio::spawn(async move {
        let mut errors = 0u64;
        while !r_stop.load(std::sync::atomic::Ordering::Relaxed) {
            match consumer.poll(Duration::from_millis(100)).await {
                Ok(records) => {
                    let now = wall_ms();
                    r_received
                        .lock()
                        .unwrap()
                        .extend(std::iter::repeat_n(now, records.len()));
                }
                Err(_) => {
                    errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        errors
    });

    let started = wall_ms();
    let t0 = Instant::now();
    let every = Duration::from_secs_f64(1.0 / opts.rate);
    let mut pending = Vec::new();
    let mut i = 0u64;
    while t0.elapsed() < opts.duration {
        let due = t0 + every.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let record = ProducerRecord::new(&opts.topic).value(i.to_be_bytes().to_vec());
        match producer.enqueue(record).await {
            Ok(delivery) => {
                let (acks, failures) = (acks.clone(), failures.clone());
                pending.push(tokio::spawn(async move {
                    match delivery.await {
                        Ok(_) => acks.lock().unwrap().push(wall_ms()),
                        Err(e) => failures.lock().unwrap().push(e.to_string()),
                    }
                }));
            }
            Err(e) => failures.lock().unwrap().push(e.to_string()),
        }
        i += 1;
    }
    let _ = producer.flush().await;
    for p in pending {
        let _ = p.await;
    }
    // Let the consumer catch the last records.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let poll_errors = reader.await.unwrap_or(0);
    let ended = wall_ms();
    let min = gap.as_millis() as i64;
    let mut acks = acks.lock().unwrap().clone();
    let mut received = received.lock().unwrap().clone();
    let (acked, read) = (acks.len(), received.len());
    let ack_gaps = gaps(&mut acks, min);
    let read_gaps = gaps(&mut received, min);
    let (last_ack, last_read) = (acks.last().copied(), received.last().copied());
    let failures = failures.lock().unwrap().clone();
    if opts.json {
        let list = |g: &[(i64, i64)]| {
            g.iter()
                .map(|(a, b)| json!({"from_ms": a, "to_ms": b, "ms": b - a}))
                .collect::<Vec<_>>()
        };
        outln!(
            "{}",
            json!({
                "mode": "probe",
                "topic": opts.topic,
                "acks": format!("{:?}", opts.acks),
                "rate": opts.rate,
                "started_ms": started,
                "ended_ms": ended,
                "sent": i,
                "acknowledged": acked,
                "failed": failures.len(),
                "first_failures": failures.iter().take(5).collect::<Vec<_>>(),
                "received": read,
                "poll_errors": poll_errors,
                "ack_gaps": list(&ack_gaps),
                "receive_gaps": list(&read_gaps),
                "last_ack_ms": last_ack,
                "last_receive_ms": last_read,
            })
        );
    } else {
        outln!(
            "probe {}: sent {i}, acknowledged {acked}, failed {}, received {read} ({poll_errors} poll errors)",
            opts.topic,
            failures.len()
        );
        for (what, g) in [("no ack", &ack_gaps), ("no record", &read_gaps)] {
            for (a, b) in g {
                outln!("{what} from {a} to {b} ms since the epoch: {} ms", b - a);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::gaps;

    #[test]
    fn gaps_are_the_silences_longer_than_the_bound() {
        let mut t = vec![30, 10, 20, 500, 510, 1500];
        assert_eq!(gaps(&mut t, 100), vec![(30, 500), (510, 1500)]);
        assert!(gaps(&mut [], 100).is_empty());
        assert!(gaps(&mut [5], 100).is_empty());
    }
}
