//! Helpers shared by streamctl's integration tests: run the built binary against a test broker
//! and check how it exited.
#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

use quiver_testkit::Broker;

/// Runs streamctl in the broker's working directory (so it finds the development CA at
/// ./data/tls/ca.pem), bootstrapping from it, with `stdin` as its input.
pub fn streamctl(b: &Broker, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_streamctl"))
        .current_dir(&b.dir)
        .env_remove("STREAMCTL_BOOTSTRAP")
        .env_remove("STREAMCTL_CA_FILE")
        .arg("--bootstrap")
        .arg(b.addr.to_string())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("streamctl runs");
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(data) = stdin {
            input.write_all(data).unwrap();
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
