//! A cluster of real streamd processes on loopback: each with its own data directory and QUIC
//! port, all voters of one controller quorum, sharing one development CA.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use quiver_client::{Client, ClientConfig, ClientTls};

use crate::Broker;

/// Brokers a [`Cluster`] may add beyond its voters (its CA permits their names).
const SPARE_BROKERS: usize = 2;

/// Brokers numbered 1..=n; `brokers[i]` has id i + 1.
pub struct Cluster {
    pub brokers: Vec<Broker>,
    /// The shared development CA's directory.
    pub ca_dir: PathBuf,
    /// The QUIC ports, fixed for the cluster's life (the voters list names them).
    pub ports: Vec<u16>,
    /// How many of the brokers (the first) are voters.
    pub voter_count: usize,
    _temp: tempfile::TempDir,
}

/// UDP ports free on loopback now (bound, read, released). Another process may take one before
/// the broker binds it; the broker then fails to start and says so.
pub fn free_udp_ports(n: usize) -> Vec<u16> {
    let sockets: Vec<UdpSocket> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("a free UDP port"))
        .collect();
    sockets
        .iter()
        .map(|s| s.local_addr().unwrap().port())
        .collect()
}

impl Cluster {
    /// Starts `n` brokers at once with `extra` flags each, and waits until every one is ready
    /// (joined the quorum, registered, offsets topic in place).
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        let mut cluster = Cluster::unstarted(n, extra);
        let all: Vec<usize> = (0..n).collect();
        cluster.launch(&all);
        cluster
    }

    /// `n` brokers set up (ports, voters, directories) and not started: `launch` them.
    pub fn unstarted(n: usize, extra: &[&str]) -> Cluster {
        let temp = tempfile::tempdir().expect("temp dir");
        let ca_dir = temp.path().join("ca");
        // The shared development CA, made ahead (as an operator does with `--make-dev-ca`) for
        // the brokers' names and room for brokers added later (`add_broker_only`): a CA signs
        // only for the names it was made for, and the brokers running when one is added would
        // not trust a CA widened afterwards.
        let names: Vec<String> = (1..=n + SPARE_BROKERS)
            .map(|id| format!("quiver-broker-{id}"))
            .collect();
        let made = std::process::Command::new(crate::streamd_path())
            .args(["--make-dev-ca", &names.join(","), "--dev-ca-dir"])
            .arg(&ca_dir)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("streamd --make-dev-ca");
        assert!(
            made.status.success(),
            "streamd --make-dev-ca: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        let ports = free_udp_ports(n);
        let voters: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1))
            .collect();
        let voters = voters.join(",");
        let brokers = (0..n)
            .map(|i| {
                let id = (i + 1).to_string();
                let ca = ca_dir.display().to_string();
                let mut args: Vec<&str> = vec![
                    "--broker-id",
                    &id,
                    "--controller-voters",
                    &voters,
                    "--dev-ca-dir",
                    &ca,
                    "--shards",
                    "1",
                ];
                args.extend_from_slice(extra);
                let mut b = Broker::unstarted(&args);
                b.ca_file = Some(ca_dir.join("ca.pem"));
                b
            })
            .collect();
        Cluster {
            brokers,
            ca_dir,
            voter_count: ports.len(),
            ports,
            _temp: temp,
        }
    }

    /// Starts the brokers at `indexes` (stopped ones) at once, on their ports, and waits for
    /// each to be ready; panics with the logs of those that are not within 60 s.
    pub fn launch(&mut self, indexes: &[usize]) {
        let launches: Vec<(usize, crate::Launch)> = indexes
            .iter()
            .map(|&i| {
                let port = self.ports[i];
                (i, self.brokers[i].launch(Some(port)))
            })
            .collect();
        let mut failures = Vec::new();
        for (i, l) in launches {
            if let Err(log) = self.brokers[i].wait_ready(l, Duration::from_secs(60)) {
                failures.push(format!("broker {} log:\n{log}", i + 1));
            }
        }
        if !failures.is_empty() {
            panic!(
                "cluster brokers did not become ready:\n{}",
                failures.join("\n")
            );
        }
    }

    /// Adds a broker that is not a voter (`--process-roles broker`), id `brokers.len() + 1`,
    /// on a port of its own, not started (`launch` it); its index.
    pub fn add_broker_only(&mut self, extra: &[&str]) -> usize {
        let voters: String = self
            .ports
            .iter()
            .take(self.voter_count)
            .enumerate()
            .map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        assert!(
            self.brokers.len() < self.voter_count + SPARE_BROKERS,
            "the cluster's development CA permits {SPARE_BROKERS} brokers beyond the voters"
        );
        let id = (self.brokers.len() + 1).to_string();
        let ca = self.ca_dir.display().to_string();
        let mut args: Vec<&str> = vec![
            "--broker-id",
            &id,
            "--controller-voters",
            &voters,
            "--process-roles",
            "broker",
            "--dev-ca-dir",
            &ca,
            "--shards",
            "1",
        ];
        args.extend_from_slice(extra);
        let mut b = Broker::unstarted(&args);
        b.ca_file = Some(self.ca_dir.join("ca.pem"));
        self.brokers.push(b);
        self.ports.push(free_udp_ports(1)[0]);
        self.brokers.len() - 1
    }

    /// `host:port` of every broker, for bootstrapping.
    pub fn bootstrap(&self) -> Vec<SocketAddr> {
        self.ports
            .iter()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
            .collect()
    }

    pub fn ca(&self) -> PathBuf {
        self.ca_dir.join("ca.pem")
    }

    /// A client bootstrapped from the brokers at `indexes`.
    pub async fn client_via(&self, indexes: &[usize]) -> Client {
        let bootstrap: Vec<String> = indexes
            .iter()
            .map(|&i| SocketAddr::from(([127, 0, 0, 1], self.ports[i])).to_string())
            .collect();
        let config = ClientConfig::new(bootstrap.join(","))
            .tls(ClientTls::from_ca_file(self.ca()).unwrap())
            .request_timeout(Duration::from_secs(10));
        Client::connect(config).await.expect("client connects")
    }

    /// A client bootstrapped from every broker.
    pub async fn client(&self) -> Client {
        let all: Vec<usize> = (0..self.brokers.len()).collect();
        self.client_via(&all).await
    }

    /// Waits (up to `timeout`) until `check` holds, polling every 50 ms; the time it took.
    pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if check() {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Every broker's log (every run of it), for a failing test's message.
    pub fn logs(&self) -> String {
        self.brokers
            .iter()
            .enumerate()
            .map(|(i, b)| format!("---- broker {} ----\n{}", i + 1, b.full_log()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
