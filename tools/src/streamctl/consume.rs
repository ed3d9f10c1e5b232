//! `streamctl consume`: by partition or as a group member, printing records as text, through a
//! template or as JSON lines, until -n, --timeout, --until-end or a signal says stop.
//!
//! What "printed" means, and why it matters for a group: a record counts as printed once the
//! write that carries it to stdout returned. Every record `poll` handed out and that was not
//! printed (past the end with --until-end, after -n, after a signal, or lost with a failed
//! write) is given back at once with a seek to the first of them, per partition, so the
//! consumer's positions are always "after the last printed record", and the group's commit,
//! whether the periodic one or the one `close` makes on the way out, commits exactly that.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quiver_client::{
    Client, Consumer, ConsumerConfig, ConsumerRecord, Offset, OffsetReset, TopicPartition,
};
use tokio::signal::unix::{signal, SignalKind};

use crate::args::{ConsumeArgs, Output};
use crate::from::StartAt;
use crate::start::{ranges, seek_all, Range};
use crate::text::{write_line, Template};
use crate::{json, CliResult, Exit};

/// The longest one `poll` waits, so that a signal is seen within about this long.
const POLL_SLICE: Duration = Duration::from_millis(200);

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

/// How records are printed.
enum Printer {
    Line {
        separator: Option<Vec<u8>>,
        null: Vec<u8>,
    },
    Template {
        template: Template,
        null: Vec<u8>,
    },
    Json,
}

impl Printer {
    fn new(a: &ConsumeArgs) -> Printer {
        let null = a.null_string.as_deref().unwrap_or("").as_bytes().to_vec();
        match (&a.template, a.output) {
            (Some(t), _) => Printer::Template {
                template: t.clone(),
                null,
            },
            (None, Output::Json) => Printer::Json,
            (None, Output::Text) => Printer::Line {
                separator: a.key_separator.as_ref().map(|s| s.as_bytes().to_vec()),
                null,
            },
        }
    }

    fn write(&self, out: &mut impl Write, r: &ConsumerRecord) -> std::io::Result<()> {
        match self {
            Printer::Line { separator, null } => write_line(out, r, separator.as_deref(), null),
            Printer::Template { template, null } => template.write(out, r, null),
            Printer::Json => {
                serde_json::to_writer(&mut *out, &json::encode(r))?;
                out.write_all(b"\n")
            }
        }
    }
}

/// SIGINT and SIGTERM, caught: the first asks for a clean stop, a second exits at once.
struct Signals {
    caught: Arc<AtomicI32>,
}

impl Signals {
    fn install() -> CliResult<Signals> {
        let e = |e: std::io::Error| format!("cannot handle signals: {e}");
        let mut int = signal(SignalKind::interrupt()).map_err(e)?;
        let mut term = signal(SignalKind::terminate()).map_err(e)?;
        let caught = Arc::new(AtomicI32::new(0));
        let seen = caught.clone();
        tokio::spawn(async move {
            loop {
                let n = tokio::select! {
                    _ = int.recv() => SIGINT,
                    _ = term.recv() => SIGTERM,
                };
                if seen.swap(n, Ordering::SeqCst) != 0 {
                    eprintln!("streamctl: second signal: exiting now");
                    std::process::exit(128 + n);
                }
            }
        });
        Ok(Signals { caught })
    }

    fn caught(&self) -> Option<i32> {
        match self.caught.load(Ordering::SeqCst) {
            0 => None,
            n => Some(n),
        }
    }
}

/// Why reading stopped.
enum Stop {
    Done,
    Signal(i32),
    WriteFailed(std::io::Error),
}

pub async fn consume(client: &Client, a: &ConsumeArgs) -> CliResult<Exit> {
    // First, so that no record is read before a signal would be caught.
    let signals = Signals::install()?;
    let printer = Printer::new(a);
    let start = a.start();
    let topic = client.topic(&a.topic).await.map_err(|e| e.to_string())?;
    let count = topic.partitions.len() as u32;
    let (mut consumer, ranges) = match &a.group {
        Some(group) => {
            let consumer = join(client, a, group, start).await?;
            // With --until-end, where every partition ends now: this member reads those it
            // is given up to there.
            let ranges = if a.until_end {
                let all: Vec<TopicPartition> = (0..count)
                    .map(|p| TopicPartition::new(&a.topic, p))
                    .collect();
                ranges(client, &all).await?
            } else {
                BTreeMap::new()
            };
            (consumer, ranges)
        }
        None => {
            let tps = chosen_partitions(a, count)?;
            let reset = match start {
                StartAt::End => OffsetReset::Latest,
                _ => OffsetReset::Earliest,
            };
            let mut consumer = Consumer::new(
                client.clone(),
                ConsumerConfig::default()
                    .auto_offset_reset(reset)
                    .fetch_max_wait(Duration::from_millis(500)),
            );
            consumer.assign(tps.clone()).map_err(|e| e.to_string())?;
            let ranges = ranges(client, &tps).await?;
            seek_all(&mut consumer, start, &ranges).await?;
            (consumer, ranges)
        }
    };
    let ends = a.until_end.then_some(&ranges);
    let outcome = read(&mut consumer, a, &printer, &signals, ends).await;
    // A member commits its positions (what was printed) and leaves the group, after an
    // error too.
    let closed = match &a.group {
        Some(_) => consumer.close().await.map_err(|e| e.to_string()),
        None => Ok(()),
    };
    let (stop, printed) = outcome?;
    closed?;
    match stop {
        Stop::Done => Ok(Exit::Success),
        Stop::Signal(n) => {
            let name = if n == SIGINT { "SIGINT" } else { "SIGTERM" };
            let s = if printed == 1 { "" } else { "s" };
            let committed = match &a.group {
                Some(g) => format!("; group {g} committed what was printed"),
                None => String::new(),
            };
            eprintln!("streamctl: stopped by {name} after {printed} record{s}{committed}");
            Ok(Exit::Code(128 + n))
        }
        Stop::WriteFailed(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(Exit::Success),
        Stop::WriteFailed(e) => Err(format!("writing output: {e}")),
    }
}

/// `--group`: a member subscribed to the topic.
async fn join(
    client: &Client,
    a: &ConsumeArgs,
    group: &str,
    start: StartAt,
) -> CliResult<Consumer> {
    let offset_reset = match start {
        StartAt::Beginning => OffsetReset::Earliest,
        StartAt::End => OffsetReset::Latest,
        _ => {
            return Err(
                "with --group, --from can only be beginning or end (the group's committed \
                 offsets say where to resume)"
                    .into(),
            )
        }
    };
    let mut config = ConsumerConfig::default()
        .group_id(group)
        .auto_offset_reset(offset_reset)
        .fetch_max_wait(Duration::from_millis(500));
    if let Some(id) = &a.instance_id {
        config = config.instance_id(id);
    }
    if let Some(assignor) = a.assignor {
        config = config.assignor(assignor.into());
    }
    let mut consumer = Consumer::new(client.clone(), config);
    consumer
        .subscribe(vec![a.topic.clone()])
        .await
        .map_err(|e| e.to_string())?;
    Ok(consumer)
}

/// `--partition`s, checked against the topic, or every partition.
fn chosen_partitions(a: &ConsumeArgs, count: u32) -> CliResult<Vec<TopicPartition>> {
    if a.partitions.is_empty() {
        return Ok((0..count)
            .map(|p| TopicPartition::new(&a.topic, p))
            .collect());
    }
    let mut ps = a.partitions.clone();
    ps.sort_unstable();
    ps.dedup();
    if let Some(p) = ps.iter().find(|p| **p >= count) {
        return Err(format!(
            "topic '{}' has {count} partitions; partition {p} does not exist",
            a.topic
        ));
    }
    Ok(ps
        .iter()
        .map(|p| TopicPartition::new(&a.topic, *p))
        .collect())
}

/// Whether a partition is read up to where it ended when consume started.
fn read_to_end(consumer: &Consumer, tp: &TopicPartition, range: Option<&Range>) -> bool {
    match range {
        // Created since: it had nothing then.
        None => true,
        Some(r) if r.is_empty() => true,
        Some(r) => consumer.position(tp).is_some_and(|p| p >= r.end),
    }
}

/// Polls and prints until told to stop; returns why, and how many records were printed.
async fn read(
    consumer: &mut Consumer,
    a: &ConsumeArgs,
    printer: &Printer,
    signals: &Signals,
    ends: Option<&BTreeMap<TopicPartition, Range>>,
) -> CliResult<(Stop, u64)> {
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut printed = 0u64;
    let mut last_record = Instant::now();
    let limit_reached = |printed: u64| a.max_messages.is_some_and(|m| printed >= m);
    let stop = loop {
        if let Some(n) = signals.caught() {
            break Stop::Signal(n);
        }
        if limit_reached(printed) {
            break Stop::Done;
        }
        if let Some(ends) = ends {
            let assigned = consumer.assignment();
            // A group member may hold nothing yet: it is not done before it has joined.
            if !assigned.is_empty()
                && assigned
                    .iter()
                    .all(|tp| read_to_end(consumer, tp, ends.get(tp)))
            {
                break Stop::Done;
            }
        }
        let wait = match a.timeout {
            Some(t) => {
                let left = t.saturating_sub(last_record.elapsed());
                if left.is_zero() {
                    break Stop::Done;
                }
                left.min(POLL_SLICE)
            }
            None => POLL_SLICE,
        };
        let records = consumer.poll(wait).await.map_err(|e| e.to_string())?;
        if !records.is_empty() {
            last_record = Instant::now();
        }
        // Per partition, the first record written since the last flush, and the first not
        // printed.
        let mut written: BTreeMap<TopicPartition, Offset> = BTreeMap::new();
        let mut held: BTreeMap<TopicPartition, Offset> = BTreeMap::new();
        let mut failed = None;
        for r in &records {
            let tp = TopicPartition::new(&*r.topic, r.partition.0);
            let past_end = ends
                .and_then(|e| e.get(&tp))
                .is_some_and(|range| r.offset >= range.end);
            if past_end || failed.is_some() || signals.caught().is_some() || limit_reached(printed)
            {
                keep_first(&mut held, tp, r.offset);
                continue;
            }
            match printer.write(&mut out, r) {
                Ok(()) => {
                    keep_first(&mut written, tp, r.offset);
                    printed += 1;
                }
                Err(e) => {
                    failed = Some(e);
                    keep_first(&mut held, tp, r.offset);
                }
            }
        }
        if let Err(e) = out.flush() {
            // What was written since the last flush may not have reached the reader.
            for (tp, o) in written {
                keep_first(&mut held, tp, o);
            }
            failed.get_or_insert(e);
        }
        for (tp, o) in &held {
            consumer.seek(tp, *o).map_err(|e| e.to_string())?;
        }
        if let Some(ends) = ends {
            // Partitions read to their end fetch no more.
            let paused = consumer.paused();
            let done: Vec<TopicPartition> = consumer
                .assignment()
                .into_iter()
                .filter(|tp| !paused.contains(tp) && read_to_end(consumer, tp, ends.get(tp)))
                .collect();
            consumer.pause(&done).map_err(|e| e.to_string())?;
        }
        if let Some(e) = failed {
            break Stop::WriteFailed(e);
        }
    };
    Ok((stop, printed))
}

/// Records `offset` for `tp` unless an earlier one is there.
fn keep_first(map: &mut BTreeMap<TopicPartition, Offset>, tp: TopicPartition, offset: Offset) {
    map.entry(tp)
        .and_modify(|o| *o = (*o).min(offset))
        .or_insert(offset);
}
