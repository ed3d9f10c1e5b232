//! README's "A cluster of three brokers", as written: `deploy/local-cluster.sh start` brings up
//! three brokers in one command, `streamctl cluster describe` shows them and the quorum, a
//! topic with replication factor 3 is created and described on it; then its replication
//! block: records produced, a broker killed -9, its partitions led by others, more produced,
//! every record read back, the broker started again and back in every ISR; and `stop` stops
//! them all.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// Stops the cluster when the test ends, passed or not.
struct Stop {
    repo: PathBuf,
    dir: PathBuf,
    base: u16,
}

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = script(&self.repo, &self.dir, self.base, "stop");
    }
}

fn script(repo: &Path, dir: &Path, base: u16, verb: &str) -> Output {
    Command::new("bash")
        .arg(repo.join("deploy/local-cluster.sh"))
        .arg(verb)
        .env("STREAMD", quiver_testkit::streamd_path())
        .env("QUIVER_LOCAL_CLUSTER_DIR", dir)
        .env("QUIVER_LOCAL_CLUSTER_PORT", base.to_string())
        .output()
        .expect("bash runs")
}

/// Three consecutive free UDP ports (and the metrics ports 552 above them are TCP; taken ones
/// would fail the start with a clear log).
fn free_base() -> u16 {
    for _ in 0..100 {
        let base = 20_000 + rand::random::<u16>() % 10_000;
        let socks: Vec<_> = (0..3)
            .filter_map(|i| UdpSocket::bind(("127.0.0.1", base + i)).ok())
            .collect();
        if socks.len() == 3 {
            return base;
        }
    }
    panic!("no three consecutive free UDP ports");
}

fn streamctl(dir: &Path, base: u16, args: &[&str]) -> String {
    let out = Command::new(quiver_testkit::bin_path("streamctl"))
        .args(args)
        .env(
            "STREAMCTL_BOOTSTRAP",
            format!("127.0.0.1:{},127.0.0.1:{}", base, base + 1),
        )
        .env("STREAMCTL_CA_FILE", dir.join("ca/ca.pem"))
        .output()
        .expect("streamctl runs");
    assert!(
        out.status.success(),
        "streamctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `streamctl` with `input` on its standard input.
fn streamctl_in(dir: &Path, base: u16, args: &[&str], input: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(quiver_testkit::bin_path("streamctl"))
        .args(args)
        .env(
            "STREAMCTL_BOOTSTRAP",
            format!("127.0.0.1:{},127.0.0.1:{}", base, base + 1),
        )
        .env("STREAMCTL_CA_FILE", dir.join("ca/ca.pem"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("streamctl runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "streamctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A described partition's ISR, sorted.
fn isr_of(p: &Value) -> Vec<u64> {
    let mut isr: Vec<u64> = p["isr"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_u64().unwrap())
        .collect();
    isr.sort();
    isr
}

#[test]
fn the_readme_cluster_starts_in_one_command_and_holds_a_topic_with_three_replicas() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("local-cluster");
    let base = free_base();
    let _stop = Stop {
        repo: repo.to_path_buf(),
        dir: dir.clone(),
        base,
    };
    let started = script(repo, &dir, base, "start");
    let logs = || {
        (1..=3)
            .map(|i| {
                let log = std::fs::read_to_string(dir.join(format!("broker-{i}.log")));
                format!("broker {i}:\n{}", log.unwrap_or_default())
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        started.status.success(),
        "start: {}\n{}",
        String::from_utf8_lossy(&started.stderr),
        logs()
    );

    let c: Value = serde_json::from_str(&streamctl(
        &dir,
        base,
        &["cluster", "describe", "-o", "json"],
    ))
    .unwrap();
    let ids = |v: &Value| -> Vec<u64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|b| b["id"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(ids(&c["brokers"]), vec![1, 2, 3], "{c}");
    assert_eq!(ids(&c["voters"]), vec![1, 2, 3], "{c}");
    assert!(c["term"].as_u64().unwrap() >= 1, "{c}");
    let text = streamctl(&dir, base, &["cluster", "describe"]);
    for want in ["TERM", "COMMITTED", "VOTER", "LAG", "live"] {
        assert!(text.contains(want), "{want}: {text}");
    }
    // Every broker column has its header (the role once sat under SHARDS).
    let header = text.lines().find(|l| l.starts_with("BROKER")).unwrap_or("");
    assert!(
        header.contains("ROLE") && header.contains("SHARDS"),
        "{text}"
    );

    streamctl(
        &dir,
        base,
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "6",
            "--replication-factor",
            "3",
        ],
    );
    let d: Value = serde_json::from_str(&streamctl(
        &dir,
        base,
        &["topic", "describe", "orders", "-o", "json"],
    ))
    .unwrap();
    let partitions = d["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 6);
    for p in partitions {
        let mut replicas: Vec<u64> = p["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_u64().unwrap())
            .collect();
        assert_eq!(p["leader"], p["replicas"][0], "{p}");
        replicas.sort();
        assert_eq!(replicas, vec![1, 2, 3], "{p}");
        assert_eq!(isr_of(p), vec![1, 2, 3], "new and empty, all in sync: {p}");
    }

    // README: replication on the local cluster.
    streamctl(
        &dir,
        base,
        &[
            "topic",
            "create",
            "payments",
            "--partitions",
            "3",
            "--replication-factor",
            "3",
            "--config",
            "min.insync.replicas=2",
        ],
    );
    let lines = |from: u32, to: u32| (from..=to).map(|i| format!("{i}\n")).collect::<String>();
    streamctl_in(&dir, base, &["produce", "payments"], &lines(1, 1000));
    let pid = std::fs::read_to_string(dir.join("broker-2.pid")).unwrap();
    let killed = Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .unwrap();
    assert!(killed.success());
    let describe = || -> Value {
        serde_json::from_str(&streamctl(
            &dir,
            base,
            &["topic", "describe", "payments", "-o", "json"],
        ))
        .unwrap()
    };
    let wait = |what: &str, check: &dyn Fn(&Value) -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
        loop {
            let d = describe();
            if d["partitions"].as_array().unwrap().iter().all(check) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: {d}\n{}",
                logs()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    wait("leaders moved off broker 2", &|p| {
        p["leader"].as_u64().is_some_and(|l| l != 2) && !isr_of(p).contains(&2)
    });
    streamctl_in(&dir, base, &["produce", "payments"], &lines(1001, 2000));
    let read = streamctl(
        &dir,
        base,
        &["consume", "payments", "--from", "earliest", "--until-end"],
    );
    let mut got: Vec<u32> = read.lines().map(|l| l.parse().unwrap()).collect();
    got.sort();
    assert_eq!(got, (1..=2000).collect::<Vec<u32>>(), "every record, once");
    let again = script(repo, &dir, base, "start");
    assert!(again.status.success(), "{}", logs());
    wait("broker 2 back in every ISR", &|p| {
        isr_of(p) == vec![1, 2, 3]
    });

    let stopped = script(repo, &dir, base, "stop");
    let out = String::from_utf8_lossy(&stopped.stdout);
    assert_eq!(out.matches("stopped").count(), 3, "{out}");
    let status = String::from_utf8_lossy(&script(repo, &dir, base, "status").stdout).to_string();
    assert_eq!(status.matches(": stopped").count(), 3, "{status}");
}
