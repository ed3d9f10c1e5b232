//! `streamctl group` and `consume --group` against a real streamd: issue 6's acceptance tests 4
//! (committed offsets survive a broker restart, kill -9 included) and 6 (reset-offsets moves a
//! stopped group's offsets as asked, describe shows the lag).

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use quiver_testkit::{Broker, Process};
use serde_json::Value;

mod common;
use common::{assert_fails, ok, streamctl};

fn describe(b: &Broker, group: &str) -> Value {
    serde_json::from_str(&ok(&streamctl(
        b,
        &["group", "describe", group, "--output", "json"],
        None,
    )))
    .unwrap()
}

/// partition -> committed offset, per `group describe`.
fn committed(b: &Broker, group: &str) -> BTreeMap<u64, u64> {
    describe(b, group)["offsets"]
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

/// Writes `per_partition` lines `p<P>-<i>` to each partition of `topic`.
fn produce(b: &Broker, topic: &str, partitions: u32, per_partition: u32, tag: &str) {
    for p in 0..partitions {
        let input: String = (0..per_partition)
            .map(|i| format!("{tag}p{p}-{i}\n"))
            .collect();
        ok(&streamctl(
            b,
            &["produce", topic, "--partition", &p.to_string()],
            Some(input.as_bytes()),
        ));
    }
}

/// Acceptance 4: a group's committed offsets are the same after a graceful restart and after
/// kill -9 of the broker, and `consume --group` resumes from them.
#[test]
fn acceptance_4_committed_offsets_survive_a_restart_and_kill_9_and_consume_resumes_there() {
    let mut b = Broker::start(&[]);
    ok(&streamctl(
        &b,
        &["topic", "create", "ledger", "--partitions", "3"],
        None,
    ));
    produce(&b, "ledger", 3, 10, "");
    let consume = |b: &Broker, n: &str| {
        ok(&streamctl(
            b,
            &[
                "consume",
                "ledger",
                "--group",
                "g4",
                "--max-messages",
                n,
                "--timeout",
                "10s",
            ],
            None,
        ))
    };
    let mut printed: Vec<String> = consume(&b, "14").lines().map(str::to_string).collect();
    assert_eq!(printed.len(), 14);
    let before = committed(&b, "g4");
    assert_eq!(before.values().sum::<u64>(), 14, "{before:?}");

    b.terminate();
    b.restart();
    assert_eq!(committed(&b, "g4"), before, "after a graceful restart");

    printed.extend(consume(&b, "5").lines().map(str::to_string));
    let before = committed(&b, "g4");
    assert_eq!(before.values().sum::<u64>(), 19, "{before:?}");
    b.kill9();
    b.restart();
    assert_eq!(committed(&b, "g4"), before, "after kill -9");

    // The group resumes where it left off: the remaining eleven records, none twice.
    let rest = ok(&streamctl(
        &b,
        &["consume", "ledger", "--group", "g4", "--timeout", "3s"],
        None,
    ));
    printed.extend(rest.lines().map(str::to_string));
    printed.sort();
    let mut want: Vec<String> = (0..3)
        .flat_map(|p| (0..10).map(move |i| format!("p{p}-{i}")))
        .collect();
    want.sort();
    assert_eq!(printed, want);
    assert_eq!(
        committed(&b, "g4"),
        [(0, 10), (1, 10), (2, 10)].into(),
        "everything read is committed"
    );
}

fn reset(b: &Broker, args: &[&str]) -> Output {
    let mut all = vec!["group", "reset-offsets", "g6", "--topic", "events"];
    all.extend_from_slice(args);
    streamctl(b, &all, None)
}

/// The (current, new) pairs of a reset plan printed as JSON, by partition.
fn plan(out: &Output) -> Vec<(Option<u64>, u64)> {
    let v: Value = serde_json::from_str(&ok(out)).unwrap();
    v["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["current"].as_u64(), p["new"].as_u64().unwrap()))
        .collect()
}

/// Acceptance 6: reset-offsets is a dry run unless --execute; each of --to-earliest,
/// --to-latest, --to-offset, --to-datetime and --shift-by moves a stopped group's offsets as
/// asked, kept within [log start, log end]; it refuses while the group has members; describe
/// shows state, members with their partitions, and per partition committed, end and lag.
#[test]
fn acceptance_6_reset_offsets_moves_a_stopped_groups_offsets_and_describe_shows_the_lag() {
    let b = Broker::start(&[
        "--group-session-timeout-ms",
        "2000",
        "--group-heartbeat-interval-ms",
        "200",
    ]);
    ok(&streamctl(
        &b,
        &["topic", "create", "events", "--partitions", "2"],
        None,
    ));
    produce(&b, "events", 2, 10, "old-");
    std::thread::sleep(Duration::from_millis(50));
    let between = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    produce(&b, "events", 2, 10, "new-");

    // A group that never ran may have offsets set before it starts.
    let out = reset(&b, &["--to-offset", "5", "--execute"]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("reset 2 partitions of group g6"));
    assert_eq!(committed(&b, "g6"), [(0, 5), (1, 5)].into());

    // A dry run shows the plan and changes nothing, as text and as JSON.
    let out = reset(&b, &["--to-earliest"]);
    let text = ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("dry run"));
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        vec![
            vec!["TOPIC", "PARTITION", "CURRENT", "NEW"],
            vec!["events", "0", "5", "0"],
            vec!["events", "1", "5", "0"],
        ]
    );
    assert_eq!(
        plan(&reset(&b, &["--to-earliest", "--output", "json"])),
        vec![(Some(5), 0), (Some(5), 0)]
    );
    assert_eq!(
        committed(&b, "g6"),
        [(0, 5), (1, 5)].into(),
        "a dry run changes nothing"
    );

    // Each way to move, executed.
    // (arguments, partition -> committed offset after)
    type Case<'a> = (&'a [&'a str], [(u64, u64); 2]);
    let cases: &[Case] = &[
        (&["--to-earliest"], [(0, 0), (1, 0)]),
        (&["--to-latest"], [(0, 20), (1, 20)]),
        (&["--to-offset", "7", "--partition", "1"], [(0, 20), (1, 7)]),
        (&["--shift-by", "-3"], [(0, 17), (1, 4)]),
        (&["--shift-by", "100"], [(0, 20), (1, 20)]),
        (&["--shift-by", "-1000"], [(0, 0), (1, 0)]),
        (&["--to-offset", "1000"], [(0, 20), (1, 20)]),
        (&["--to-datetime", &between], [(0, 10), (1, 10)]),
    ];
    for (args, want) in cases {
        let mut args = args.to_vec();
        args.extend(["--execute", "--output", "json"]);
        let before = committed(&b, "g6");
        let planned = plan(&reset(&b, &args));
        let after = committed(&b, "g6");
        assert_eq!(after, BTreeMap::from(*want), "{args:?}");
        // The plan printed is what was done.
        let touched: Vec<u64> = if args.contains(&"--partition") {
            vec![1]
        } else {
            vec![0, 1]
        };
        let expected: Vec<(Option<u64>, u64)> = touched
            .iter()
            .map(|p| (before.get(p).copied(), after[p]))
            .collect();
        assert_eq!(planned, expected, "{args:?}");
    }

    // Describe: no members, and per partition committed, end and lag = end - committed.
    let d = describe(&b, "g6");
    assert_eq!(d["state"], "Empty");
    for o in d["offsets"].as_array().unwrap() {
        assert_eq!(
            (&o["committed"], &o["end"], &o["lag"]),
            (&Value::from(10), &Value::from(20), &Value::from(10)),
            "{d}"
        );
    }
    let text = ok(&streamctl(&b, &["group", "describe", "g6"], None));
    let row = text
        .lines()
        .find(|l| l.starts_with("events") && l.split_whitespace().nth(1) == Some("0"))
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        vec!["events", "0", "10", "20", "10", "-"],
        "{text}"
    );

    // With a member running, --execute refuses (a dry run still shows the plan).
    let mut member = Process::spawn(
        "member",
        {
            let mut c = Command::new(env!("CARGO_BIN_EXE_streamctl"));
            c.current_dir(&b.dir)
                .env_remove("STREAMCTL_BOOTSTRAP")
                .env_remove("STREAMCTL_CA_FILE")
                .args(["--bootstrap", &b.addr.to_string()])
                .args(["consume", "events", "--group", "g6"])
                .args(["--instance-id", "pod-1", "--assignor", "range"]);
            c
        },
        &b.dir,
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let d = loop {
        let d = describe(&b, "g6");
        let assigned = &d["members"][0]["assigned"];
        if d["state"] == "Stable" && *assigned == serde_json::json!([["events", [0, 1]]]) {
            break d;
        }
        assert!(Instant::now() < deadline, "the member did not join: {d}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(d["assignor"], "range", "{d}");
    assert_eq!(d["members"][0]["instance_id"], "pod-1", "{d}");
    let member_id = d["members"][0]["member_id"].as_str().unwrap().to_string();
    // It resumed from the reset offsets: the twenty new records, and none of the old.
    member
        .wait_for_line(Duration::from_secs(10), |l| l == "new-p1-9")
        .expect("the member reads from the committed offsets");
    let lines: Vec<String> = member.lines().into_iter().map(|(_, l)| l).collect();
    assert!(lines.iter().all(|l| l.starts_with("new-")), "{lines:?}");
    let text = ok(&streamctl(&b, &["group", "describe", "g6"], None));
    assert!(
        text.lines()
            .any(|l| l.starts_with(&member_id) && l.contains("pod-1") && l.ends_with("events:0,1")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("events") && l.ends_with(member_id.as_str())),
        "{text}"
    );
    assert_fails(
        &reset(&b, &["--to-earliest", "--execute"]),
        1,
        "active member",
    );
    ok(&reset(&b, &["--to-earliest"]));

    // Once the member is gone (killed: the group drops it after its session timeout), reset
    // works again.
    member.kill9();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !describe(&b, "g6")["members"].as_array().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the killed member stayed");
        std::thread::sleep(Duration::from_millis(100));
    }
    ok(&reset(&b, &["--to-earliest", "--execute"]));
    assert_eq!(committed(&b, "g6"), [(0, 0), (1, 0)].into());

    // Mistakes fail with one line.
    assert_fails(
        &reset(&b, &["--to-earliest", "--partition", "7"]),
        1,
        "partition 7 does not exist",
    );
    assert_fails(
        &streamctl(
            &b,
            &[
                "group",
                "reset-offsets",
                "fresh",
                "--topic",
                "events",
                "--shift-by",
                "1",
            ],
            None,
        ),
        1,
        "no committed offset",
    );
    assert_fails(
        &streamctl(
            &b,
            &[
                "group",
                "reset-offsets",
                "g6",
                "--topic",
                "nope",
                "--to-earliest",
            ],
            None,
        ),
        1,
        "nope",
    );
}
