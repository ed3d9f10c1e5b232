//! Ctrl-C in `streamctl consume --group` (issue 30): it stops fetching, commits exactly what it
//! printed, leaves the group and exits 130, so the next member gets the partitions at once
//! and reads exactly the rest; SIGTERM the same with 143.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use quiver_testkit::{Broker, Process};
use serde_json::Value;

mod common;
use common::{command, ok, produce_lines, streamctl};

const PARTITIONS: u32 = 3;
const PER_PARTITION: u64 = 1_000;

fn describe(b: &Broker, group: &str) -> Value {
    serde_json::from_str(&ok(&streamctl(
        b,
        &["group", "describe", group, "-o", "json"],
        None,
    )))
    .unwrap()
}

/// partition -> committed offset.
fn committed(d: &Value) -> BTreeMap<u64, u64> {
    d["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| !o["committed"].is_null())
        .map(|o| {
            (
                o["partition"].as_u64().unwrap(),
                o["committed"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// partition -> offsets, from `%p %o ...` lines, each partition's offsets checked to run on
/// from `from[p]` without a gap.
fn read_from(lines: &[String], from: &BTreeMap<u64, u64>) -> BTreeMap<u64, u64> {
    let mut next = from.clone();
    for l in lines {
        let mut it = l.split(' ');
        let p: u64 = it.next().unwrap().parse().unwrap();
        let o: u64 = it.next().unwrap().parse().unwrap();
        let n = next.entry(p).or_insert(0);
        assert_eq!(
            o, *n,
            "partition {p}: offset {o} after {n}: a gap or a repeat"
        );
        *n += 1;
    }
    next
}

#[test]
fn sigint_commits_exactly_what_was_printed_and_the_next_member_reads_the_rest_at_once() {
    // The default session timeout (45 s): a member that did not leave would keep its
    // partitions far longer than the next run below may take.
    let b = Broker::start(&[]);
    ok(&streamctl(
        &b,
        &[
            "topic",
            "create",
            "jobs",
            "--partitions",
            &PARTITIONS.to_string(),
        ],
        None,
    ));
    // Values large enough that the output far outgrows the pipe.
    let padding = "x".repeat(300);
    for p in 0..PARTITIONS {
        let lines: Vec<String> = (0..PER_PARTITION)
            .map(|i| format!("job-{p}-{i}-{padding}"))
            .collect();
        produce_lines(&b, "jobs", p, &lines);
    }

    let mut child = command(
        &b,
        &["consume", "jobs", "--group", "g", "-f", "%p %o %v\\n"],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let stdout = child.stdout.take().unwrap();
    // The reader takes 50 lines, then stops reading until told to go on: the pipe fills and
    // the consumer blocks in a write, in the middle of what poll handed it.
    let (first_tx, first_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        let mut input = BufReader::new(stdout).lines();
        for line in input.by_ref().take(50) {
            lines.push(line.unwrap());
        }
        let _ = first_tx.send(());
        let _ = go_rx.recv();
        lines.extend(input.map(Result::unwrap));
        lines
    });
    if first_rx.recv_timeout(Duration::from_secs(60)).is_err() {
        let _ = child.kill();
        panic!("the consumer printed nothing within 60 s");
    }
    std::thread::sleep(Duration::from_millis(500));
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    go_tx.send(()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("streamctl did not exit within 30 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let lines = reader.join().unwrap();
    let stderr = {
        use std::io::Read;
        let mut s = String::new();
        child.stderr.take().unwrap().read_to_string(&mut s).unwrap();
        s
    };
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("stopped by SIGINT after"), "{stderr}");
    let printed = read_from(&lines, &BTreeMap::new());
    let total: u64 = printed.values().sum();
    assert!(
        total > 50 && total < u64::from(PARTITIONS) * PER_PARTITION,
        "stopped mid-stream: {total} printed"
    );

    // Committed: exactly what was printed, per partition; the member left.
    let d = describe(&b, "g");
    let with_records: BTreeMap<u64, u64> =
        committed(&d).into_iter().filter(|(_, o)| *o > 0).collect();
    assert_eq!(with_records, printed, "{d}");
    assert_eq!(d["members"].as_array().unwrap().len(), 0, "{d}");
    let lag = u64::from(PARTITIONS) * PER_PARTITION - total;
    assert_eq!(d["topics"][0]["lag"], lag, "{d}");
    let text = ok(&streamctl(&b, &["group", "describe", "g"], None));
    assert!(
        text.lines().any(|l| l == format!("LAG       {lag}")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["jobs", "3", "0", &lag.to_string()]),
        "{text}"
    );

    // The next member gets every partition at once and reads exactly the rest.
    let started = Instant::now();
    let rest = ok(&streamctl(
        &b,
        &[
            "consume",
            "jobs",
            "--group",
            "g",
            "--until-end",
            "-f",
            "%p %o\\n",
        ],
        None,
    ));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(15), "took {took:?}");
    let rest: Vec<String> = rest.lines().map(str::to_string).collect();
    let after = read_from(&rest, &printed);
    assert_eq!(
        after,
        (0..u64::from(PARTITIONS))
            .map(|p| (p, PER_PARTITION))
            .collect::<BTreeMap<_, _>>()
    );
    let d = describe(&b, "g");
    assert_eq!(
        committed(&d).values().sum::<u64>(),
        3 * PER_PARTITION,
        "{d}"
    );
}

#[test]
fn sigterm_exits_143_after_committing_and_a_plain_consume_exits_130_on_sigint() {
    let b = Broker::start(&[]);
    ok(&streamctl(
        &b,
        &["topic", "create", "t", "--partitions", "2"],
        None,
    ));
    for p in 0..2 {
        produce_lines(
            &b,
            "t",
            p,
            &(0..10).map(|i| format!("{p}-{i}")).collect::<Vec<_>>(),
        );
    }
    let spawn = |name: &str, args: &[&str]| Process::spawn(name, command(&b, args), &b.dir);

    let mut member = spawn(
        "member",
        &["consume", "t", "--group", "g", "-f", "%p %o\\n"],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while member.lines().len() < 20 {
        assert!(Instant::now() < deadline, "{:?}", member.lines());
        std::thread::sleep(Duration::from_millis(20));
    }
    member.signal(15);
    assert_eq!(
        member.wait_exit(Duration::from_secs(30)),
        Some(143),
        "{}",
        member.stderr()
    );
    assert!(
        member
            .stderr()
            .contains("stopped by SIGTERM after 20 records"),
        "{}",
        member.stderr()
    );
    let d = describe(&b, "g");
    assert_eq!(committed(&d), [(0, 10), (1, 10)].into(), "{d}");
    assert_eq!(d["members"].as_array().unwrap().len(), 0, "{d}");

    let mut plain = spawn("plain", &["consume", "t"]);
    plain
        .wait_for_line(Duration::from_secs(30), |l| l == "1-9")
        .expect("reads the topic");
    plain.signal(2);
    assert_eq!(
        plain.wait_exit(Duration::from_secs(30)),
        Some(130),
        "{}",
        plain.stderr()
    );
}

/// The broker's own stop (SIGTERM) does not wait for a client that went away without closing
/// its connection: requests still being worked on get `shutdown_timeout_ms` (10 s), but an
/// answered one whose acknowledgement never comes costs at most half a second.
#[test]
fn a_client_that_vanished_does_not_hold_up_the_brokers_stop() {
    let mut b = Broker::start(&[]);
    ok(&streamctl(&b, &["topic", "create", "t"], None));
    produce_lines(&b, "t", 0, &["a".to_string()]);
    let mut member = Process::spawn(
        "member",
        command(&b, &["consume", "t", "--group", "g", "-f", "%v\\n"]),
        &b.dir,
    );
    member
        .wait_for_line(Duration::from_secs(30), |l| l == "a")
        .expect("reads the topic");
    // Gone without a word: its connection stays open on the broker, its last long-poll fetch
    // unacknowledged.
    member.kill9();
    let asked = Instant::now();
    assert_eq!(b.terminate(), Some(0));
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "stop took {took:?}, as if waiting out the 10 s grace for the vanished client; log:\n{}",
        b.log()
    );
}
