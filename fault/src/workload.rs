//! The workloads, through the SDK: producers writing unique, numbered values (idempotent at
//! acks=all, and at acks=1), consumer group members reading and committing, and a reader of the
//! group's committed offsets. Every operation goes into the [`Recorder`] when invoked and when
//! its outcome is known.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quiver_client::{
    Admin, Client, ClientConfig, ClientTls, Consumer, ConsumerConfig, Error, Offset, OffsetReset,
    Producer, ProducerConfig, ProducerRecord, TopicPartition,
};
use tokio::sync::{watch, Semaphore};

use crate::history::{Acks, History, Micros, Op, Operation, Outcome, Tp, Written};

/// Collects the history as the run goes.
pub struct Recorder {
    start: Instant,
    ops: Mutex<Vec<Operation>>,
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new(start: Instant) -> Recorder {
        Recorder {
            start,
            ops: Mutex::new(Vec::new()),
        }
    }

    /// Microseconds since the start.
    pub fn now(&self) -> Micros {
        self.start.elapsed().as_micros() as Micros
    }

    /// Records an invocation; its outcome is unknown until [`Recorder::complete`].
    pub fn invoke(&self, process: u32, op: Op) -> u64 {
        let invoked = self.now();
        let mut ops = self.ops.lock().expect("recorder lock");
        let id = ops.len() as u64;
        ops.push(Operation {
            id,
            process,
            invoked,
            completed: None,
            op,
            outcome: Outcome::Unknown("in flight when the run ended".into()),
        });
        id
    }

    /// Records the outcome of operation `id`.
    pub fn complete(&self, id: u64, outcome: Outcome) {
        let now = self.now();
        let mut ops = self.ops.lock().expect("recorder lock");
        if let Some(op) = ops.get_mut(id as usize) {
            op.completed = Some(now);
            op.outcome = outcome;
        }
    }

    /// Records an operation that happened at once (a record read).
    pub fn instant(&self, process: u32, op: Op) {
        let id = self.invoke(process, op);
        self.complete(id, Outcome::Ok { offset: None });
    }

    /// The history so far.
    pub fn history(&self) -> History {
        History {
            ops: self.ops.lock().expect("recorder lock").clone(),
        }
    }
}

/// How clients reach the brokers.
#[derive(Clone)]
pub struct Reach {
    /// The bootstrap address (the relay).
    pub bootstrap: String,
    /// The development CA of the run's brokers.
    pub ca: PathBuf,
}

impl Reach {
    /// Connects, retrying for up to `patience` (the broker may be down or cut off).
    pub async fn connect(&self, patience: Duration) -> Result<Client, Error> {
        let deadline = Instant::now() + patience;
        loop {
            let config = ClientConfig::new(&self.bootstrap)
                .tls(ClientTls::from_ca_file(&self.ca)?)
                .request_timeout(Duration::from_secs(5));
            match Client::connect(config).await {
                Ok(c) => return Ok(c),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }
}

/// What a produce error says about the record: refused for sure, or maybe written.
fn produce_outcome(e: &Error) -> Outcome {
    match e {
        // Refused by the client before anything was sent.
        Error::Record(_) | Error::Config(_) => Outcome::Fail(e.to_string()),
        _ => Outcome::Unknown(e.to_string()),
    }
}

/// One producer of the workload.
#[derive(Clone, Copy, Debug)]
pub struct ProducerSpec {
    /// Its process number in the history.
    pub process: u32,
    /// acks=1 or acks=all (both idempotent).
    pub acks: Acks,
    /// Records per second it aims for.
    pub rate: u32,
}

/// Produces until `stop`, then waits (at most 30 s) for what is in flight.
pub async fn run_producer(
    spec: ProducerSpec,
    reach: Reach,
    topic: String,
    partitions: u32,
    rec: Arc<Recorder>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Error> {
    let client = reach.connect(Duration::from_secs(60)).await?;
    let acks = match spec.acks {
        Acks::All => quiver_client::Acks::All,
        Acks::Leader => quiver_client::Acks::Leader,
        Acks::None => quiver_client::Acks::None,
    };
    let producer = Producer::new(
        client.clone(),
        ProducerConfig::default()
            .acks(acks)
            .linger(Duration::from_millis(5))
            .request_timeout(Duration::from_secs(5))
            .delivery_timeout(Duration::from_secs(30))
            .max_block(Duration::from_secs(30)),
    )?;
    let in_flight = Arc::new(Semaphore::new(20_000));
    let mut seqs = vec![0u64; partitions as usize];
    let tick = Duration::from_millis(10);
    let per_tick = (spec.rate as u64 * tick.as_millis() as u64 / 1000).max(1);
    let mut next = tokio::time::Instant::now();
    let mut p = 0u32;
    while !*stop.borrow() {
        for _ in 0..per_tick {
            let permit = in_flight.clone().acquire_owned().await.expect("open");
            let partition = p % partitions;
            p = p.wrapping_add(1);
            let written = Written {
                producer: spec.process,
                seq: seqs[partition as usize],
            };
            seqs[partition as usize] += 1;
            let id = rec.invoke(
                spec.process,
                Op::Produce {
                    tp: Tp::new(&topic, partition),
                    written,
                    acks: spec.acks,
                },
            );
            let record = ProducerRecord::new(topic.clone())
                .partition(partition)
                .value(written.encode());
            match producer.enqueue(record).await {
                Ok(delivery) => {
                    let rec = rec.clone();
                    tokio::spawn(async move {
                        let outcome = match delivery.await {
                            Ok(meta) => Outcome::Ok {
                                offset: meta.offset.map(|o| o.0 as i64),
                            },
                            Err(e) => produce_outcome(&e),
                        };
                        rec.complete(id, outcome);
                        drop(permit);
                    });
                }
                Err(e) => rec.complete(id, produce_outcome(&e)),
            }
        }
        next += tick;
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stop.changed() => {}
        }
        if tokio::time::Instant::now() > next + Duration::from_secs(1) {
            next = tokio::time::Instant::now(); // fell behind (back-pressure): do not burst
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), producer.flush()).await;
    let _ = tokio::time::timeout(Duration::from_secs(30), in_flight.acquire_many(20_000)).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), producer.close()).await;
    client.close().await;
    Ok(())
}

/// The group the consumers share.
pub const GROUP: &str = "quiver-fault";

/// One consumer group member: reads, records every record, commits what it read after each
/// poll. Killed (its connection cut, no LeaveGroup) when `kill` fires, and back after the
/// fault's length.
pub async fn run_member(
    process: u32,
    reach: Reach,
    topic: String,
    rec: Arc<Recorder>,
    mut stop: watch::Receiver<bool>,
    mut kill: tokio::sync::mpsc::UnboundedReceiver<Duration>,
) {
    while !*stop.borrow() {
        let Ok(client) = reach.connect(Duration::from_secs(10)).await else {
            continue;
        };
        let mut consumer = Consumer::new(
            client.clone(),
            ConsumerConfig::default()
                .group_id(GROUP)
                .enable_auto_commit(false)
                .auto_offset_reset(OffsetReset::Earliest),
        );
        if consumer.subscribe(vec![topic.clone()]).await.is_err() {
            client.close().await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        let down = loop {
            tokio::select! {
                _ = stop.changed() => {
                    if *stop.borrow() {
                        let _ = tokio::time::timeout(Duration::from_secs(10), consumer.close()).await;
                        client.close().await;
                        return;
                    }
                }
                d = kill.recv() => break d.unwrap_or(Duration::ZERO),
                polled = consumer.poll(Duration::from_millis(500)) => {
                    let Ok(records) = polled else { continue };
                    let mut next: BTreeMap<u32, i64> = BTreeMap::new();
                    for r in &records {
                        let tp = Tp::new(r.topic.as_ref(), r.partition.0);
                        let written = r.value.as_deref().and_then(Written::decode);
                        rec.instant(process, Op::Read { tp, offset: r.offset.0 as i64, written });
                        next.insert(r.partition.0, r.offset.0 as i64 + 1);
                    }
                    if next.is_empty() {
                        continue;
                    }
                    let offsets: Vec<(TopicPartition, Offset)> = next
                        .iter()
                        .map(|(p, o)| (TopicPartition::new(&topic, *p), Offset(*o as u64)))
                        .collect();
                    let ids: Vec<u64> = next
                        .iter()
                        .map(|(p, o)| rec.invoke(process, Op::Commit {
                            group: GROUP.into(),
                            tp: Tp::new(&topic, *p),
                            offset: *o,
                        }))
                        .collect();
                    let outcome = match consumer.commit_offsets(&offsets).await {
                        Ok(()) => Outcome::Ok { offset: None },
                        Err(e @ Error::Broker { .. }) => Outcome::Fail(e.to_string()),
                        Err(e) => Outcome::Unknown(e.to_string()),
                    };
                    for id in ids {
                        rec.complete(id, outcome.clone());
                    }
                }
            }
        };
        // A crash: the connection goes first, so the consumer cannot leave the group.
        client.close().await;
        drop(consumer);
        tokio::select! {
            _ = tokio::time::sleep(down) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Reads the group's committed offsets every `every` until `stop`.
pub async fn run_committed_reader(
    process: u32,
    reach: Reach,
    topic: String,
    partitions: u32,
    rec: Arc<Recorder>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut client = None;
    while !*stop.borrow() {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => break,
        }
        if client.is_none() {
            client = reach.connect(Duration::from_secs(2)).await.ok();
        }
        let Some(c) = &client else { continue };
        let ids: Vec<(u32, u64)> = (0..partitions)
            .map(|p| {
                (
                    p,
                    rec.invoke(
                        process,
                        Op::FetchCommitted {
                            group: GROUP.into(),
                            tp: Tp::new(&topic, p),
                        },
                    ),
                )
            })
            .collect();
        match Admin::new(c.clone()).list_group_offsets(GROUP).await {
            Ok(list) => {
                for (p, id) in ids {
                    let offset = list
                        .iter()
                        .find(|(tp, _)| tp.topic == topic && tp.partition.0 == p)
                        .map(|(_, o)| o.offset.0 as i64);
                    rec.complete(id, Outcome::Ok { offset });
                }
            }
            Err(e) => {
                for (_, id) in ids {
                    rec.complete(id, Outcome::Fail(e.to_string()));
                }
            }
        }
    }
}
