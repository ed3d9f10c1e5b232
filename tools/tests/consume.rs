//! `streamctl consume` positions and output against a real streamd (issue 30): --until-end,
//! --tail and --from -N, --from @ms / a date / an RFC 3339 time, the warning for an offset out
//! of range, -f templates, --null-string, and flags that mean one thing in every command.

use std::time::{Duration, Instant};

use quiver_testkit::Broker;

mod common;
use common::{assert_fails, json_lines, ok, produce_lines, streamctl};

/// `partition offset` pairs of `-f '%p %o\n'` output.
fn positions(stdout: &str) -> Vec<(u32, u64)> {
    let mut v: Vec<(u32, u64)> = stdout
        .lines()
        .map(|l| {
            let (p, o) = l.split_once(' ').unwrap_or_else(|| panic!("{l}"));
            (p.parse().unwrap(), o.parse().unwrap())
        })
        .collect();
    v.sort_unstable();
    v
}

/// A topic of four partitions holding 5, 3, 0 and 1 records (`p<P>-<i>`).
fn four_partitions(b: &Broker, topic: &str) {
    ok(&streamctl(
        b,
        &["topic", "create", topic, "--partitions", "4"],
        None,
    ));
    for (p, n) in [(0, 5), (1, 3), (3, 1)] {
        let lines: Vec<String> = (0..n).map(|i| format!("p{p}-{i}")).collect();
        produce_lines(b, topic, p, &lines);
    }
}

fn consume(b: &Broker, topic: &str, flags: &[&str]) -> std::process::Output {
    let mut args = vec!["consume", topic];
    args.extend_from_slice(flags);
    streamctl(b, &args, None)
}

#[test]
fn until_end_reads_exactly_what_was_there_at_start_then_exits() {
    let b = Broker::start(&[]);
    four_partitions(&b, "t");
    let started = Instant::now();
    let out = ok(&consume(&b, "t", &["--until-end", "-f", "%p %o\\n"]));
    let all: Vec<(u32, u64)> = [(0, 0..5), (1, 0..3), (3, 0..1)]
        .into_iter()
        .flat_map(|(p, r)| r.map(move |o| (p, o)))
        .collect();
    assert_eq!(positions(&out), all);
    // Partition 2 was empty: done at once, not waited for.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // -e, from the end: nothing to read, and no wait.
    let started = Instant::now();
    assert_eq!(ok(&consume(&b, "t", &["-e", "--from", "end"])), "");
    assert!(started.elapsed() < Duration::from_secs(5));
    // One partition only.
    let out = ok(&consume(&b, "t", &["-e", "-p", "1", "-f", "%p %o\\n"]));
    assert_eq!(positions(&out), vec![(1, 0), (1, 1), (1, 2)]);

    // As a group member: the partitions it holds, to their end; the next run finds nothing.
    let out = ok(&consume(&b, "t", &["--group", "g", "-e", "-f", "%p %o\\n"]));
    assert_eq!(positions(&out), all);
    let started = Instant::now();
    assert_eq!(ok(&consume(&b, "t", &["--group", "g", "-e"])), "");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let d: serde_json::Value = serde_json::from_str(&ok(&streamctl(
        &b,
        &["group", "describe", "g", "-o", "json"],
        None,
    )))
    .unwrap();
    assert_eq!(d["topics"][0]["lag"], 0, "{d}");
}

#[test]
fn tail_and_from_minus_n_print_the_last_records_of_each_partition() {
    let b = Broker::start(&[]);
    four_partitions(&b, "t");
    let last_two = vec![(0, 3), (0, 4), (1, 1), (1, 2), (3, 0)];
    for flags in [
        &["--tail", "2", "-e", "-f", "%p %o\\n"][..],
        &["--from", "-2", "-e", "-f", "%p %o\\n"][..],
        &["--from=-2", "-e", "-f", "%p %o\\n"][..],
    ] {
        let out = ok(&consume(&b, "t", flags));
        assert_eq!(positions(&out), last_two, "{flags:?}");
    }
    let out = ok(&consume(&b, "t", &["--tail", "0", "-e"]));
    assert_eq!(out, "");
    let out = ok(&consume(&b, "t", &["--tail", "100", "-e", "-f", "%v\\n"]));
    assert_eq!(out.lines().count(), 9, "{out}");
    assert_fails(
        &consume(&b, "t", &["--tail", "2", "--from", "3"]),
        2,
        "cannot be used with",
    );
    assert_fails(
        &consume(&b, "t", &["--group", "g", "--tail", "2"]),
        1,
        "with --group",
    );
}

#[test]
fn from_a_time_in_ms_a_date_or_an_rfc3339_time() {
    let b = Broker::start(&[]);
    ok(&streamctl(
        &b,
        &["topic", "create", "t", "--partitions", "2"],
        None,
    ));
    // (partition, timestamp)
    let stamps = [
        (0, "2026-12-04T12:00:00Z"),
        (0, "2026-12-05T09:00:00Z"),
        (0, "2026-12-05T10:00:00Z"),
        (0, "2026-12-06T00:00:00Z"),
        (1, "2026-12-04T23:59:59.999Z"),
        (1, "2026-12-05T00:00:00Z"),
    ];
    let ms = |t: &str| {
        let t =
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).unwrap();
        (t.unix_timestamp_nanos() / 1_000_000) as i64
    };
    let input: String = stamps
        .iter()
        .map(|(p, t)| {
            format!(
                "{{\"value\":\"{t}\",\"partition\":{p},\"timestamp\":{}}}\n",
                ms(t)
            )
        })
        .collect();
    ok(&streamctl(
        &b,
        &["produce", "t", "--input", "json"],
        Some(input.as_bytes()),
    ));
    let values = |from: &str| {
        let out = ok(&consume(&b, "t", &["--from", from, "-e", "-f", "%v\\n"]));
        let mut v: Vec<String> = out.lines().map(str::to_string).collect();
        v.sort();
        v
    };
    let after = |t0: &str| {
        let mut v: Vec<String> = stamps
            .iter()
            .filter(|(_, t)| ms(t) >= ms(t0))
            .map(|(_, t)| t.to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(values("2026-12-05"), after("2026-12-05T00:00:00Z"));
    assert_eq!(
        values("2026-12-05T10:00:00Z"),
        after("2026-12-05T10:00:00Z")
    );
    assert_eq!(values("2026-12-05T09:30:00"), after("2026-12-05T09:30:00Z"));
    assert_eq!(
        values("2026-12-05T11:00:00+02:00"),
        after("2026-12-05T09:00:00Z")
    );
    let at = format!("@{}", ms("2026-12-05T10:00:00Z"));
    assert_eq!(values(&at), after("2026-12-05T10:00:00Z"));
    assert_eq!(values("@0").len(), 6);
    assert_eq!(values("2030-01-01"), Vec::<String>::new());
    // The record's timestamp is what --input json asked for.
    let out = ok(&consume(&b, "t", &["-e", "-p", "1", "-f", "%T\\n"]));
    assert_eq!(
        out,
        format!(
            "{}\n{}\n",
            ms("2026-12-04T23:59:59.999Z"),
            ms("2026-12-05T00:00:00Z")
        )
    );
}

#[test]
fn an_offset_out_of_range_warns_and_names_what_is_read_instead() {
    let b = Broker::start(&[]);
    ok(&streamctl(
        &b,
        &["topic", "create", "t", "--partitions", "2"],
        None,
    ));
    produce_lines(&b, "t", 0, &["a".into(), "b".into(), "c".into()]);
    // In range for partition 0, past the end of the empty partition 1.
    let out = consume(&b, "t", &["--from", "2", "-e", "-f", "%p %o\\n"]);
    assert_eq!(positions(&ok(&out)), vec![(0, 2)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        "streamctl: warning: partition 1 of t holds no records (its next offset is 0): offset \
         2 is out of range; reading from 0, the oldest record, instead"
    );
    // Past the end of both: warned twice, and everything read from the oldest.
    let out = consume(&b, "t", &["--from", "2000", "-e", "-f", "%p %o\\n"]);
    assert_eq!(positions(&ok(&out)), vec![(0, 0), (0, 1), (0, 2)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "partition 0 of t holds offsets 0 to 2: offset 2000 is out of range; reading from \
             0, the oldest record, instead"
        ),
        "{stderr}"
    );
    assert_eq!(stderr.matches("warning").count(), 2, "{stderr}");
    // The end itself is in range: nothing to read yet, and no warning.
    let out = consume(&b, "t", &["--from", "3", "-p", "0", "-e"]);
    assert_eq!(ok(&out), "");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    // A number that looks like a time gets a hint.
    let out = consume(&b, "t", &["--from", "1700000000000", "-p", "0", "-e"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("write --from @1700000000000"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn templates_and_null_strings_show_every_field_and_tell_null_from_empty() {
    let b = Broker::start(&[]);
    ok(&streamctl(
        &b,
        &["topic", "create", "t", "--partitions", "1"],
        None,
    ));
    let input = concat!(
        r#"{"key":"k","value":"v","headers":[{"key":"a","value":"1"},{"key":"b","value":"2"}],"timestamp":1234}"#,
        "\n",
        r#"{"key":null,"value":null}"#,
        "\n",
        r#"{"key":"","value":""}"#,
        "\n",
    );
    ok(&streamctl(
        &b,
        &["produce", "t", "--input", "json"],
        Some(input.as_bytes()),
    ));
    let out = ok(&consume(
        &b,
        "t",
        &[
            "-e",
            "-n",
            "1",
            "-f",
            "k=%k v=%v p=%p o=%o T=%T h=%h t=%t 100%%\\t|\\n",
        ],
    ));
    assert_eq!(out, "k=k v=v p=0 o=0 T=1234 h=a=1,b=2 t=t 100%\t|\n");
    let out = ok(&consume(&b, "t", &["-e", "-f", "[%k][%v]\\n"]));
    assert_eq!(out, "[k][v]\n[][]\n[][]\n");
    let out = ok(&consume(
        &b,
        "t",
        &["-e", "--null-string", "NULL", "-f", "[%k][%v]\\n"],
    ));
    assert_eq!(out, "[k][v]\n[NULL][NULL]\n[][]\n");
    let out = ok(&consume(
        &b,
        "t",
        &["-e", "-K", ":", "--null-string", "NULL"],
    ));
    assert_eq!(out, "k:v\nNULL:NULL\n:\n");
    // JSON always tells them apart.
    let v = json_lines(&ok(&consume(&b, "t", &["-e", "-o", "json"])));
    assert!(v[1]["key"].is_null() && v[1]["value"].is_null());
    assert_eq!((&v[2]["key"], &v[2]["value"]), (&"".into(), &"".into()));
    assert_fails(&consume(&b, "t", &["-f", "%q"]), 2, "unknown field %q");
    assert_fails(
        &consume(&b, "t", &["-f", "%v", "-o", "json"]),
        2,
        "cannot be used with",
    );
}

#[test]
fn flags_mean_the_same_in_every_command() {
    let b = Broker::start(&[]);
    // --partitions is a count, in create and in add-partitions (--total still works).
    ok(&streamctl(
        &b,
        &["topic", "create", "t", "--partitions", "2"],
        None,
    ));
    let out = ok(&streamctl(
        &b,
        &["topic", "add-partitions", "t", "--partitions", "3"],
        None,
    ));
    assert_eq!(out.trim(), "topic t now has 3 partitions");
    ok(&streamctl(
        &b,
        &["topic", "add-partitions", "t", "--total", "4"],
        None,
    ));
    // -p is one partition, in produce and consume.
    produce_lines(&b, "t", 3, &["x".into()]);
    ok(&streamctl(&b, &["produce", "t", "-p", "3"], Some(b"y\n")));
    let out = ok(&consume(&b, "t", &["-p", "3", "-e"]));
    assert_eq!(out, "x\ny\n");
    // -o / --output is the output format everywhere; consume also takes -F / --format.
    for flags in [
        ["-o", "json"],
        ["--output", "json"],
        ["-F", "json"],
        ["--format", "json"],
    ] {
        let mut args = vec!["-p", "3", "-e"];
        args.extend_from_slice(&flags);
        let v = json_lines(&ok(&consume(&b, "t", &args)));
        assert_eq!(v.len(), 2, "{flags:?}");
        assert_eq!(v[0]["value"], "x");
    }
    for args in [
        &["topic", "list", "-o", "json"][..],
        &["topic", "describe", "t", "-o", "json"][..],
        &["cluster", "describe", "-o", "json"][..],
        &["group", "list", "-o", "json"][..],
    ] {
        let out = ok(&streamctl(&b, args, None));
        serde_json::from_str::<serde_json::Value>(&out).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    }
    // kcat's and rpk's -o (an offset) gets a pointer to --from.
    assert_fails(
        &consume(&b, "t", &["-o", "beginning"]),
        2,
        "--from beginning",
    );
    assert_fails(
        &streamctl(&b, &["produce", "t", "--input", "json", "-K", ":"], None),
        2,
        "apply to --input text",
    );
    assert_fails(
        &streamctl(&b, &["produce", "t", "--null-empty"], Some(b"x\n")),
        2,
        "--key-separator",
    );
    assert_fails(
        &streamctl(&b, &["produce", "t", "-K", "\\"], Some(b"x\n")),
        2,
        "backslash",
    );
}
