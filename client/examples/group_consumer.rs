//! A consumer-group member that prints what it processes as JSON lines, commits only what it
//! has printed, and can be killed at any moment: the group's other members (or its own next
//! run) resume from the committed offsets. Integration tests run it as a real process.
//!
//! Start a broker with `cargo run --release --bin streamd`, create a topic, then from the
//! same directory run a few of these side by side and watch the partitions being shared:
//!
//!     cargo run -p quiver-client --example group_consumer -- --group billing --topic orders
//!
//! Options:
//!
//!     --bootstrap HOST:PORT     broker (default 127.0.0.1:9092)
//!     --ca-file PEM             CA to trust (default ./data/tls/ca.pem)
//!     --group G                 the group (required)
//!     --topic T                 subscribe to T (repeatable) ...
//!     --pattern REGEX           ... or to every topic whose name matches
//!     --instance-id ID          static membership
//!     --assignor NAME           range, roundrobin or sticky
//!     --commit MODE             sync (default), async, or auto (auto-commit every 1 s)
//!     --from earliest|latest    where partitions without a committed offset start (earliest)
//!     --stop-before-commit N    fault injection for tests: after printing N records, stop the
//!                               whole process with SIGSTOP before committing them (a frozen
//!                               zombie), once; SIGCONT resumes it right there
//!
//! Output, one JSON object per line, flushed as it is written:
//!
//!     {"type":"joined","member_id":"..."}
//!     {"type":"assigned","partitions":[["orders",0],["orders",3]]}
//!     {"type":"record","topic":"orders","partition":0,"offset":17,"value":"..."}
//!     {"type":"revoked","partitions":[...]}        {"type":"lost","partitions":[...]}
//!     {"type":"commit_failed","code":"UnknownMemberId","error":"..."}
//!     {"type":"closed"}                            (after SIGTERM: committed and left)

use std::io::Write;
use std::time::Duration;

use quiver_client::{
    Assignor, Client, ClientConfig, ClientTls, CommitHandle, Consumer, ConsumerConfig, OffsetReset,
    RebalanceEvent, TopicPartition,
};
use serde_json::json;

#[derive(Clone, Copy, PartialEq, Eq)]
enum CommitMode {
    Sync,
    Async,
    Auto,
}

struct Args {
    bootstrap: String,
    ca_file: Option<String>,
    group: String,
    topics: Vec<String>,
    pattern: Option<String>,
    instance_id: Option<String>,
    assignor: Option<Assignor>,
    commit: CommitMode,
    from: OffsetReset,
    stop_before_commit: Option<u64>,
}

fn usage(message: &str) -> ! {
    eprintln!("group_consumer: {message}");
    eprintln!(
        "usage: group_consumer --group G (--topic T... | --pattern RE) [--bootstrap HOST:PORT] \
         [--ca-file PEM] [--instance-id ID] [--assignor range|roundrobin|sticky] \
         [--commit sync|async|auto] [--from earliest|latest] [--stop-before-commit N]"
    );
    std::process::exit(2);
}

fn parse_args() -> Args {
    let mut a = Args {
        bootstrap: "127.0.0.1:9092".into(),
        ca_file: None,
        group: String::new(),
        topics: Vec::new(),
        pattern: None,
        instance_id: None,
        assignor: None,
        commit: CommitMode::Sync,
        from: OffsetReset::Earliest,
        stop_before_commit: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--bootstrap" => a.bootstrap = value(),
            "--ca-file" => a.ca_file = Some(value()),
            "--group" => a.group = value(),
            "--topic" => a.topics.push(value()),
            "--pattern" => a.pattern = Some(value()),
            "--instance-id" => a.instance_id = Some(value()),
            "--assignor" => {
                a.assignor = Some(value().parse().unwrap_or_else(|e: String| usage(&e)))
            }
            "--commit" => {
                a.commit = match value().as_str() {
                    "sync" => CommitMode::Sync,
                    "async" => CommitMode::Async,
                    "auto" => CommitMode::Auto,
                    other => usage(&format!("unknown commit mode '{other}'")),
                }
            }
            "--from" => a.from = value().parse().unwrap_or_else(|e: String| usage(&e)),
            "--stop-before-commit" => {
                a.stop_before_commit =
                    Some(value().parse().unwrap_or_else(|_| {
                        usage("--stop-before-commit needs a number of records")
                    }))
            }
            other => usage(&format!("unknown option '{other}'")),
        }
    }
    if a.group.is_empty() {
        usage("--group is required");
    }
    if a.topics.is_empty() == a.pattern.is_none() {
        usage("give --topic (one or more) or --pattern");
    }
    a
}

/// One JSON line on stdout, flushed: a killed process has printed exactly what it processed.
fn say(v: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{v}").and_then(|()| out.flush()).is_err() {
        // Nobody reads any more: stop.
        std::process::exit(0);
    }
}

fn partitions(tps: &[TopicPartition]) -> serde_json::Value {
    json!(tps
        .iter()
        .map(|tp| json!([tp.topic, tp.partition.0]))
        .collect::<Vec<_>>())
}

fn print_event(e: RebalanceEvent) {
    say(match e {
        RebalanceEvent::Assigned(tps) => {
            json!({"type": "assigned", "partitions": partitions(&tps)})
        }
        RebalanceEvent::Revoked(tps) => json!({"type": "revoked", "partitions": partitions(&tps)}),
        RebalanceEvent::Lost(tps) => json!({"type": "lost", "partitions": partitions(&tps)}),
    });
}

fn commit_failed(e: &quiver_client::Error) {
    say(json!({
        "type": "commit_failed",
        "code": e.code().map(|c| c.name()),
        "error": e.to_string(),
    }));
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    if let Err(e) = run(args).await {
        say(json!({"type": "error", "error": e.to_string()}));
        std::process::exit(1);
    }
}

async fn run(mut args: Args) -> quiver_client::Result<()> {
    let mut config = ClientConfig::new(&args.bootstrap);
    if let Some(ca) = &args.ca_file {
        config = config.tls(ClientTls::from_ca_file(ca)?);
    }
    let client = Client::connect(config).await?;
    let mut cc = ConsumerConfig::default()
        .group_id(&args.group)
        .auto_offset_reset(args.from)
        .fetch_max_wait(Duration::from_millis(200))
        .max_poll_records(100)
        .enable_auto_commit(args.commit == CommitMode::Auto)
        .auto_commit_interval(Duration::from_secs(1))
        .metadata_max_age(Duration::from_secs(1));
    if let Some(id) = &args.instance_id {
        cc = cc.instance_id(id);
    }
    if let Some(a) = args.assignor {
        cc = cc.assignor(a);
    }
    let mut consumer = Consumer::new(client, cc);
    let mut events = consumer.rebalance_events();
    match &args.pattern {
        Some(p) => consumer.subscribe_pattern(p).await?,
        None => consumer.subscribe(args.topics.clone()).await?,
    }
    say(json!({"type": "joined", "member_id": consumer.member_id()}));

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| quiver_client::Error::Config(format!("SIGTERM handler: {e}")))?;
    let mut printed = 0u64;
    let mut pending: Vec<CommitHandle> = Vec::new();
    loop {
        let records = tokio::select! {
            _ = sigterm.recv() => break,
            r = consumer.poll(Duration::from_millis(200)) => r?,
        };
        while let Ok(e) = events.try_recv() {
            print_event(e);
        }
        if records.is_empty() {
            continue;
        }
        for r in &records {
            say(json!({
                "type": "record",
                "topic": &*r.topic,
                "partition": r.partition.0,
                "offset": r.offset.0,
                "value": r.value_str(),
            }));
        }
        printed += records.len() as u64;
        if args.stop_before_commit.is_some_and(|n| printed >= n) {
            // A frozen process: everything stops here, heartbeats included, until SIGCONT.
            // Once: resumed, it goes on as the zombie it now is.
            args.stop_before_commit = None;
            // SAFETY: raise only sends a signal to this process.
            unsafe { libc::raise(libc::SIGSTOP) };
        }
        match args.commit {
            CommitMode::Sync => {
                if let Err(e) = consumer.commit().await {
                    commit_failed(&e);
                }
            }
            CommitMode::Async => {
                pending.push(consumer.commit_async());
                // Report finished ones without waiting for the others.
                let mut still = Vec::new();
                for mut h in pending.drain(..) {
                    match futures_poll_once(&mut h) {
                        Some(Err(e)) => commit_failed(&e),
                        Some(Ok(())) => {}
                        None => still.push(h),
                    }
                }
                pending = still;
            }
            CommitMode::Auto => {}
        }
    }
    for h in pending {
        if let Err(e) = h.await {
            commit_failed(&e);
        }
    }
    let result = consumer.close().await;
    while let Ok(e) = events.try_recv() {
        print_event(e);
    }
    if let Err(e) = &result {
        commit_failed(e);
    }
    say(json!({"type": "closed"}));
    Ok(())
}

/// The handle's outcome if it is already there.
fn futures_poll_once(h: &mut CommitHandle) -> Option<quiver_client::Result<()>> {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};
    let mut cx = Context::from_waker(Waker::noop());
    match Pin::new(h).poll(&mut cx) {
        Poll::Ready(r) => Some(r),
        Poll::Pending => None,
    }
}
