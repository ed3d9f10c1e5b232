//! Test support shared by every crate's integration tests: starts the real `streamd` binary on
//! loopback in a temporary directory, stops it gently (SIGTERM) or not (SIGKILL), and gives a
//! client that trusts its development CA. A dev-dependency only; nothing ships it.
//!
//! [`hostile`] is a client that forges what it sends, for tests of bad input.

pub mod cluster;
pub mod hostile;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quiver_client::{Client, ClientConfig, ClientTls};
use quiver_proto::api::fetch::{FetchPartition, FetchRequest, FetchResponse, FetchTopic};
use quiver_proto::api::metadata::{CreatableTopic, CreateTopicsRequest};
use quiver_proto::api::produce::{
    Acks, PartitionProduceData, ProduceRequest, ProduceResponse, TopicProduceData,
};
use quiver_proto::api::{common::ConfigEntry, PayloadBuilder};
use quiver_proto::{ErrorCode, Offset, PartitionId};

/// A running streamd in its own temporary working directory.
pub struct Broker {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub addr: SocketAddr,
    pub metrics: SocketAddr,
    pub args: Vec<String>,
    /// The address `--listen` binds (127.0.0.1 unless a test sets another loopback address).
    pub listen_ip: std::net::IpAddr,
    /// Environment variables set for the process (besides the test's own).
    pub envs: Vec<(String, String)>,
    /// The CA file clients trust, when not the broker's own development CA (a cluster's
    /// brokers share one).
    pub ca_file: Option<PathBuf>,
    /// The process's open-file limit (soft and hard, set before it starts), when a test needs
    /// one lower than the machine's.
    pub open_files: Option<u64>,
    /// A cgroup's `cgroup.procs` the process joins before it starts (a test that gives the
    /// broker less memory than the machine has).
    pub cgroup_procs: Option<PathBuf>,
    _temp: Option<tempfile::TempDir>,
}

/// A streamd process started and not yet ready (`Broker::launch`).
pub struct Launch {
    child: Child,
    ready: std::sync::mpsc::Receiver<String>,
}

impl Broker {
    /// Starts streamd with `extra` flags on ephemeral ports.
    pub fn start(extra: &[&str]) -> Broker {
        Broker::start_with_env(extra, &[])
    }

    /// Starts streamd with `extra` flags and `envs` set in its environment.
    pub fn start_with_env(extra: &[&str], envs: &[(&str, &str)]) -> Broker {
        let mut b = Broker::unstarted(extra);
        b.envs = envs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        b.spawn(None);
        b
    }

    /// Starts streamd with `extra` flags and the ACL authorizer on, where ACLs (not a super
    /// user) allow every principal everything: `User:*` may do All on every topic (`*`), every
    /// group (`*`) and the cluster. Each request then goes through the ACL decision, as it
    /// does on a secured broker. The ACLs are made on a first start with `User:ANONYMOUS` as a
    /// super user; the broker is then restarted without it.
    pub async fn start_authorized(extra: &[&str]) -> Broker {
        use quiver_client::{
            AclBinding, AclOperation, AclPatternType, AclPermission, AclResourceType, Admin,
        };
        let first: Vec<&str> = extra
            .iter()
            .copied()
            .chain(["--authorizer", "true", "--super-users", "User:ANONYMOUS"])
            .collect();
        let mut b = Broker::start(&first);
        let bind = |resource_type, name: &str| AclBinding {
            resource_type,
            resource_name: name.into(),
            pattern_type: AclPatternType::Literal,
            principal: "User:*".into(),
            host: "*".into(),
            operation: AclOperation::All,
            permission: AclPermission::Allow,
        };
        Admin::new(b.client().await)
            .create_acls(vec![
                bind(AclResourceType::Topic, "*"),
                bind(AclResourceType::Group, "*"),
                bind(AclResourceType::Cluster, "kafka-cluster"),
            ])
            .await
            .expect("ACLs made");
        b.terminate();
        b.args = extra
            .iter()
            .map(|s| s.to_string())
            .chain(["--authorizer".to_string(), "true".to_string()])
            .collect();
        b.restart();
        // Really on, and without the super user.
        let admin = Admin::new(b.client().await);
        let configs = admin
            .describe_configs(quiver_client::ConfigResource::Broker(
                quiver_proto::BrokerId(1),
            ))
            .await
            .expect("broker configs");
        let value = |name: &str| {
            configs
                .iter()
                .find(|c| c.name == name)
                .and_then(|c| c.value.clone())
        };
        assert_eq!(value("authorizer").as_deref(), Some("true"));
        assert_eq!(value("super_users").as_deref(), Some(""));
        b
    }

    /// A broker in a fresh temporary directory, not started yet (`spawn` or `try_spawn` it).
    pub fn unstarted(extra: &[&str]) -> Broker {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().to_path_buf();
        let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Broker {
            child: None,
            dir,
            addr: "0.0.0.0:0".parse().unwrap(),
            metrics: "0.0.0.0:0".parse().unwrap(),
            args,
            listen_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            envs: Vec::new(),
            ca_file: None,
            open_files: None,
            cgroup_procs: None,
            _temp: Some(temp),
        }
    }

    /// (Re)starts the process in the same directory; `port` asks for a specific QUIC port.
    pub fn spawn(&mut self, port: Option<u16>) {
        if let Err(log) = self.try_spawn(port) {
            panic!("streamd did not become ready; log:\n{log}");
        }
    }

    /// Starts the process and waits for it to be ready; on failure, its log.
    pub fn try_spawn(&mut self, port: Option<u16>) -> Result<(), String> {
        let launch = self.launch(port);
        self.wait_ready(launch, Duration::from_secs(60))
    }

    /// Starts the process without waiting for it (several brokers of a cluster start at once:
    /// none is ready before a majority runs).
    pub fn launch(&mut self, port: Option<u16>) -> Launch {
        let listen = SocketAddr::new(self.listen_ip, port.unwrap_or(0)).to_string();
        // An earlier run's log goes on in `streamd.earlier.log` (`full_log`): a failing test
        // after a restart shows what happened before it too.
        let log = self.dir.join("streamd.log");
        if let Ok(earlier) = std::fs::read(&log) {
            use std::io::Write as _;
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join("streamd.earlier.log"))
            {
                let _ = f.write_all(&earlier);
                let _ = writeln!(f, "---- (the process stopped; started again) ----");
            }
        }
        let mut command = Command::new(streamd_path());
        let open_files = self.open_files;
        let cgroup = self.cgroup_procs.as_ref().map(|p| {
            use std::os::unix::ffi::OsStrExt;
            std::ffi::CString::new(p.as_os_str().as_bytes()).expect("a path without NUL")
        });
        if open_files.is_some() || cgroup.is_some() {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit, open, write and close are async-signal-safe and touch only
            // what was made before the fork; nothing allocates between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    if let Some(n) = open_files {
                        let limit = libc::rlimit {
                            rlim_cur: n as libc::rlim_t,
                            rlim_max: n as libc::rlim_t,
                        };
                        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    if let Some(procs) = &cgroup {
                        // "0" moves the writing process itself.
                        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                        if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                            return Err(std::io::Error::last_os_error());
                        }
                        libc::close(fd);
                    }
                    Ok(())
                });
            }
        }
        let mut child = command
            .current_dir(&self.dir)
            .args([
                "--listen",
                &listen,
                "--metrics-listen",
                "127.0.0.1:0",
                "--log-level",
                &std::env::var("QUIVER_TEST_LOG_LEVEL").unwrap_or_else(|_| "info".into()),
            ])
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(self.dir.join("streamd.log")).unwrap(),
            ))
            .spawn()
            .expect("streamd starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("streamd ready ") {
                    let _ = tx.send(rest.to_string());
                }
            }
        });
        Launch { child, ready: rx }
    }

    /// Waits for a launched process to say it is ready; on failure (or after `timeout`) kills
    /// it and returns its log.
    pub fn wait_ready(&mut self, launch: Launch, timeout: Duration) -> Result<(), String> {
        let Launch {
            mut child,
            ready: rx,
        } = launch;
        let ready = match rx.recv_timeout(timeout) {
            Ok(r) => r,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(self.log());
            }
        };
        for part in ready.split_whitespace() {
            if let Some(a) = part.strip_prefix("quic=") {
                self.addr = a.parse().unwrap();
            }
            if let Some(a) = part.strip_prefix("metrics=") {
                self.metrics = a.parse().unwrap();
            }
        }
        self.child = Some(child);
        Ok(())
    }

    /// The log of the process running now (or last).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("streamd.log")).unwrap_or_default()
    }

    /// The logs of every run of this broker, the earliest first.
    pub fn full_log(&self) -> String {
        let earlier =
            std::fs::read_to_string(self.dir.join("streamd.earlier.log")).unwrap_or_default();
        earlier + &self.log()
    }

    pub fn ca(&self) -> PathBuf {
        self.ca_file
            .clone()
            .unwrap_or_else(|| self.dir.join("data/tls/ca.pem"))
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub async fn client(&self) -> Client {
        let config = ClientConfig::new(self.addr.to_string())
            .tls(ClientTls::from_ca_file(self.ca()).unwrap());
        Client::connect(config).await.expect("client connects")
    }

    /// A client whose requests (and connection idle time) give up after `timeout`.
    pub async fn client_with_timeout(&self, timeout: Duration) -> Client {
        let mut config = ClientConfig::new(self.addr.to_string())
            .tls(ClientTls::from_ca_file(self.ca()).unwrap())
            .request_timeout(timeout);
        config.connect.idle_timeout = timeout;
        Client::connect(config).await.expect("client connects")
    }

    /// SIGSTOP, and waits until every thread of the broker is stopped. kill(2) only starts a
    /// group stop: the thread the signal picks must be scheduled to take it and mark the others,
    /// and on a loaded machine another thread may meanwhile answer a request for milliseconds.
    pub fn freeze(&self) {
        let pid = self.child.as_ref().expect("a running broker").id() as i32;
        // SAFETY: kill(2) takes plain integers; the pid is our own child's, not yet waited for.
        let rc = unsafe { libc::kill(pid, libc::SIGSTOP) };
        assert_eq!(rc, 0, "kill({pid}, SIGSTOP) failed");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !all_threads_stopped(pid) {
            assert!(
                Instant::now() < deadline,
                "broker {pid} not stopped after 10 s"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM and wait; returns the exit status code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        // SAFETY: kill(2) takes plain integers and touches no memory of ours; the pid is our own
        // child's, not yet waited for, so it cannot name a reused process.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                c.kill().unwrap();
                panic!(
                    "streamd did not stop within 30 s of SIGTERM; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Restarts in the same directory, on the same port when it is still free. (Clients'
    /// ephemeral UDP ports come from the same range, so another test may have taken it; then a
    /// new port is used and `addr` says which.)
    pub fn restart(&mut self) {
        let port = self.addr.port();
        if let Err(log) = self.try_spawn(Some(port)) {
            if !log.contains("Address already in use") {
                panic!("streamd did not restart; log:\n{log}");
            }
            eprintln!("testkit: port {port} was taken, restarting on a new port; log:\n{log}");
            self.spawn(None);
        }
    }

    /// Waits (at most `timeout`) for the process to exit by itself; its exit code (`None` if it
    /// is still running, or was ended by a signal).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.child.as_mut()?;
            if let Some(status) = c.try_wait().expect("try_wait") {
                self.child = None;
                return status.code();
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process's resident memory, in KiB (from /proc).
    pub fn rss_kib(&self) -> u64 {
        let pid = self.child.as_ref().expect("running").id();
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// The sum of a metric's samples (over its labels) on /metrics; 0 if it has none.
    pub fn metric(&self, name: &str) -> f64 {
        self.metrics_text()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.strip_prefix(name))
            .filter(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            .filter_map(|rest| rest.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Checks that an ordinary producer and consumer (the SDK, idempotence on) still work: a
    /// new topic, `n` records produced and read back in order. Panics otherwise.
    pub async fn assert_serves_clients(&self, topic: &str, n: usize) {
        use quiver_client::{
            Admin, Consumer, ConsumerConfig, NewTopic, OffsetReset, Producer, ProducerConfig,
            ProducerRecord,
        };
        let client = self.client().await;
        Admin::new(client.clone())
            .create_topic(NewTopic::new(topic, 2))
            .await
            .expect("topic created");
        let producer = Producer::new(client.clone(), ProducerConfig::default()).unwrap();
        let mut deliveries = Vec::with_capacity(n);
        for i in 0..n {
            deliveries.push(
                producer
                    .enqueue(
                        ProducerRecord::new(topic)
                            .key(b"k".to_vec())
                            .value(format!("{i:06}").into_bytes()),
                    )
                    .await
                    .expect("enqueued"),
            );
        }
        producer.flush().await.expect("flushed");
        for d in deliveries {
            d.await.expect("every record written");
        }
        let mut consumer = Consumer::new(
            client.clone(),
            ConsumerConfig::default().auto_offset_reset(OffsetReset::Earliest),
        );
        consumer.assign_topic(topic).await.unwrap();
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while got.len() < n {
            assert!(
                Instant::now() < deadline,
                "read {} of {n} records",
                got.len()
            );
            for r in consumer.poll(Duration::from_millis(500)).await.unwrap() {
                got.push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
            }
        }
        let want: Vec<String> = (0..n).map(|i| format!("{i:06}")).collect();
        assert_eq!(got, want, "one key: every record once, in order");
    }

    pub fn metrics_text(&self) -> String {
        self.http_get("/metrics")
    }

    /// The metrics endpoint's whole answer (status line, headers, body) to `GET path`.
    pub fn http_get(&self, path: &str) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.metrics).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub async fn create_topic(
    client: &Client,
    name: &str,
    partitions: u32,
    configs: &[(&str, &str)],
) -> ErrorCode {
    let req = CreateTopicsRequest {
        topics: vec![CreatableTopic {
            name: name.to_string(),
            num_partitions: Some(partitions),
            replication_factor: None,
            assignments: vec![],
            configs: configs
                .iter()
                .map(|(k, v)| ConfigEntry {
                    name: k.to_string(),
                    value: Some(v.to_string()),
                })
                .collect(),
        }],
        timeout_ms: 10_000,
        validate_only: false,
    };
    let resp = client
        .call_controller(&req)
        .await
        .expect("create topics answered");
    resp.topics[0].error_code
}

/// Produces record batches (already built) to one partition.
pub async fn produce(
    client: &Client,
    topic: &str,
    partition: u32,
    batches: &[Bytes],
    acks: Acks,
) -> ProduceResponse {
    produce_wide(client, topic, &[partition], batches, acks).await
}

/// Produces the same record batches (already built) to each of `partitions` in one request.
pub async fn produce_wide(
    client: &Client,
    topic: &str,
    partitions: &[u32],
    batches: &[Bytes],
    acks: Acks,
) -> ProduceResponse {
    let mut payload = PayloadBuilder::new();
    let partitions = partitions
        .iter()
        .map(|&p| PartitionProduceData {
            partition: PartitionId(p),
            records: payload.push_all(batches.iter().cloned()).unwrap(),
        })
        .collect();
    let req = ProduceRequest {
        transactional_id: None,
        acks,
        timeout_ms: 30_000,
        topics: vec![TopicProduceData {
            name: topic.to_string(),
            partitions,
        }],
    };
    client
        .call_any(&req, payload.into_chunks())
        .await
        .expect("produce answered")
        .0
}

/// One fetch of one partition; returns the response and the records bytes for it.
pub async fn fetch(
    client: &Client,
    topic: &str,
    partition: u32,
    offset: u64,
    max_wait_ms: u32,
) -> (FetchResponse, Bytes) {
    let req = FetchRequest {
        max_wait_ms,
        min_bytes: 1,
        max_bytes: 64 << 20,
        isolation_level: Default::default(),
        topics: vec![FetchTopic {
            name: topic.to_string(),
            partitions: vec![FetchPartition {
                partition: PartitionId(partition),
                fetch_offset: Offset(offset),
                partition_max_bytes: 8 << 20,
                current_leader_epoch: None,
            }],
        }],
        rack_id: None,
    };
    let (resp, payload) = client
        .call_any(&req, Vec::new())
        .await
        .expect("fetch answered");
    let records = resp.topics[0].partitions[0]
        .records
        .slice(&payload)
        .unwrap();
    (resp, records)
}

/// Whether every thread of `pid` is stopped (state `T` or `t` in /proc/PID/task/*/stat).
pub fn all_threads_stopped(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        // A thread that exited meanwhile is not one that could answer.
        stat_state(&task.path().join("stat")).is_none_or(|state| state == "T" || state == "t")
    })
}

/// The state letter of a /proc `stat` file (a process's or a thread's), `None` if unreadable.
fn stat_state(path: &Path) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    // pid (comm) STATE ...; comm may hold spaces, so look after the last ')'.
    let (_, rest) = s.rsplit_once(')')?;
    rest.split_whitespace().next().map(str::to_string)
}

/// The `streamd` built with the tests: it sits beside the test executable's `deps/` directory.
/// `cargo test --workspace` builds it before any test runs; `cargo test -p <crate>` may not, so
/// the message says what to do.
pub fn streamd_path() -> PathBuf {
    bin_path("streamd")
}

/// A workspace binary (`streamd`, `streamctl`, `streambench`) from the same target directory.
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` (or `cargo test --workspace`) first",
        path.display()
    );
    path
}

/// An example program of a workspace package (`target/<profile>/examples/<name>`), built by
/// `cargo test` for that package (and by `cargo test --workspace`) before tests run.
pub fn example_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let path = dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo test` for the package that has the example (it builds \
         examples before running tests)",
        path.display()
    );
    path
}

/// A child process whose stdout lines are collected (with when each arrived) by a reader
/// thread, so a test can wait for output while the process runs, and can stop, freeze or kill
/// it. Stderr goes to `<name>.stderr` in `log_dir`. Killed with SIGKILL when dropped.
pub struct Process {
    pub name: String,
    pub child: Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<(Instant, String)>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    stderr_path: PathBuf,
}

impl Process {
    /// Spawns `cmd` with stdout piped and stderr to a file.
    pub fn spawn(name: &str, mut cmd: Command, log_dir: &Path) -> Process {
        let stderr_path = log_dir.join(format!("{name}.stderr"));
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(&stderr_path).expect("stderr file"),
            ))
            .spawn()
            .unwrap_or_else(|e| panic!("{name} did not start: {e}"));
        let stdout = child.stdout.take().expect("piped");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((Instant::now(), line));
            }
        });
        Process {
            name: name.to_string(),
            child,
            lines,
            reader: Some(reader),
            stderr_path,
        }
    }

    /// Every stdout line so far, with the time it was read.
    pub fn lines(&self) -> Vec<(Instant, String)> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until a line satisfies `pred`; returns it, or `None` after `timeout`.
    pub fn wait_for_line(
        &self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<(Instant, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.lines().into_iter().find(|(_, l)| pred(l)) {
                return Some(l);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends a signal (SIGSTOP, SIGCONT, SIGTERM, ...).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal}) failed", self.pid());
    }

    /// Whether the process is stopped (SIGSTOP), per /proc.
    pub fn is_stopped(&self) -> bool {
        stat_state(Path::new(&format!("/proc/{}/stat", self.pid())))
            .is_some_and(|state| state == "T" || state == "t")
    }

    /// SIGKILL, then waits for the process and for its output to be read to the end.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }

    /// Waits (at most `timeout`) for the process to exit by itself; its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                return status.code();
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
