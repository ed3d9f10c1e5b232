//! The brokers of a run: real `streamd` processes, each in its namespace, with its data directory
//! under the run's directory, advertising the relay's address so clients go through it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::lab::Lab;

/// One broker process (alive or not).
pub struct BrokerProc {
    /// Its id, from 1.
    pub id: u32,
    /// Where it listens.
    pub listen: SocketAddr,
    /// What it advertises (the relay).
    pub advertised: SocketAddr,
    /// Its data directory.
    pub data_dir: PathBuf,
    streamd: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// Starts so far.
    pub starts: u32,
}

impl BrokerProc {
    /// A broker not started yet.
    pub fn new(lab: &Lab, id: u32, port: u16, streamd: &Path, run_dir: &Path) -> BrokerProc {
        BrokerProc {
            id,
            listen: SocketAddr::new(lab.broker_ip(id), port),
            advertised: SocketAddr::new(lab.relay_ip(), port),
            data_dir: run_dir.join(format!("broker-{id}/data")),
            streamd: streamd.to_path_buf(),
            log: run_dir.join(format!("broker-{id}/streamd.log")),
            child: None,
            paused: false,
            starts: 0,
        }
    }

    /// Starts it and waits (at most 60 s) for its ready line.
    pub fn start(&mut self, lab: &Lab) -> Result<(), String> {
        std::fs::create_dir_all(&self.data_dir).map_err(|e| e.to_string())?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let streamd = self.streamd.to_string_lossy().into_owned();
        let mut child = lab
            .broker_command(self.id, &streamd)
            .args([
                "--listen",
                &self.listen.to_string(),
                "--advertised-host",
                &self.advertised.ip().to_string(),
                "--data-dir",
                &self.data_dir.to_string_lossy(),
                "--metrics-listen",
                "",
                // Short enough that a killed consumer's partitions move within a run.
                "--group-session-timeout-ms",
                "6000",
                "--group-heartbeat-interval-ms",
                "1000",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("{streamd}: {e}"))?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("streamd ready") {
                    let _ = tx.send(());
                }
            }
        });
        self.starts += 1;
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(()) => {
                self.child = Some(child);
                self.paused = false;
                Ok(())
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!(
                    "broker {} did not become ready; log tail:\n{}",
                    self.id,
                    self.log_tail(30)
                ))
            }
        }
    }

    /// Whether its process runs.
    pub fn alive(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Its pid, if running.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    fn signal(&self, sig: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) with a pid of a child this process started and has not reaped.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    /// SIGKILL, and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.paused = false;
    }

    /// SIGSTOP.
    pub fn pause(&mut self) {
        self.signal(libc::SIGSTOP);
        self.paused = true;
    }

    /// SIGCONT.
    pub fn resume(&mut self) {
        self.signal(libc::SIGCONT);
        self.paused = false;
    }

    /// SIGTERM and wait (at most 30 s, then SIGKILL). Returns its exit status code.
    pub fn stop(&mut self) -> Option<i32> {
        if self.paused {
            self.resume();
        }
        self.signal(libc::SIGTERM);
        let mut c = self.child.take()?;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status.code();
            }
            if std::time::Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Whether the log mentions a panic.
    pub fn log_has_panic(&self) -> bool {
        std::fs::read_to_string(&self.log)
            .map(|t| t.contains("panicked"))
            .unwrap_or(false)
    }
}

impl Drop for BrokerProc {
    fn drop(&mut self) {
        if self.paused {
            self.resume();
        }
        self.kill9();
    }
}
