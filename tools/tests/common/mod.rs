//! Helpers shared by streamctl's integration tests: run the built binary against a test broker
//! and check how it exited.
#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

use quiver_testkit::Broker;

/// streamctl as a user runs it next to the broker: in the broker's working directory (so it
/// finds the development CA at ./data/tls/ca.pem), bootstrapping from it, with `args`.
pub fn command(b: &Broker, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_streamctl"));
    c.current_dir(&b.dir)
        .env_remove("STREAMCTL_BOOTSTRAP")
        .env_remove("STREAMCTL_CA_FILE")
        .arg("--bootstrap")
        .arg(b.addr.to_string())
        .args(args);
    c
}

/// Runs streamctl (see [`command`]) with `stdin` as its input, and waits for it.
pub fn streamctl(b: &Broker, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = command(b, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("streamctl runs");
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(data) = stdin {
            // A process that refused its arguments may be gone before reading its input.
            if let Err(e) = input.write_all(data) {
                assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
            }
        }
    }
    child.wait_with_output().unwrap()
}

pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "streamctl failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// One line on stderr starting with `streamctl: `, exit code `code`.
pub fn assert_fails(out: &Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    if code == 1 {
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.starts_with("streamctl: "), "{stderr}");
    }
    assert!(stderr.contains(needle), "expected '{needle}' in: {stderr}");
}

/// Each line of `stdout` as a JSON object.
pub fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Writes `lines` (each ended with \n) to one partition of `topic` with `streamctl produce`.
pub fn produce_lines(b: &Broker, topic: &str, partition: u32, lines: &[String]) {
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    ok(&streamctl(
        b,
        &["produce", topic, "--partition", &partition.to_string()],
        Some(input.as_bytes()),
    ));
}
