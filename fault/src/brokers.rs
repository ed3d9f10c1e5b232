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
    /// The sync journal streamd keeps for the power-loss fault.
    journal: PathBuf,
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
            journal: run_dir.join(format!("broker-{id}/sync-journal")),
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
            .env("STREAMD_FAULT_SYNC_JOURNAL", &self.journal)
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

    /// After a SIGKILL: what a loss of power would have left. Every segment file under the data
    /// directory (`*.log`, and its `*.index` and `*.timeindex`) is cut back to its size at its
    /// last completed fdatasync (0 when it never had one), from the sync journal. Returns (files
    /// cut, bytes cut).
    pub fn lose_unsynced_writes(&self) -> Result<(u64, u64), String> {
        if self.child.is_some() {
            return Err("the broker still runs".into());
        }
        let text = std::fs::read_to_string(&self.journal).unwrap_or_default();
        let durable = durable_sizes(&text);
        let mut segments = Vec::new();
        walk(&self.data_dir, &mut segments);
        let (mut files, mut bytes) = (0, 0);
        for path in segments {
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let keep = durable
                .get(path.to_string_lossy().as_ref())
                .copied()
                .unwrap_or(0);
            if len > keep {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                f.set_len(keep)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                f.sync_all()
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                files += 1;
                bytes += len - keep;
            }
        }
        Ok((files, bytes))
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

/// What of each file is durable, from the engine's sync journal (`engine/src/dma.rs`): lines
/// `s <seq> <size> <path>` (an fdatasync issued as number `seq` when the file had `size` bytes,
/// completed) and `t <seq> <len> <path>` (a truncation to `len`). Fdatasyncs overlap and
/// complete in any order, so the lines are replayed in the order of their numbers: a sync raises
/// the durable size to its size, a truncation caps it at its length. Malformed lines are skipped.
pub fn durable_sizes(journal: &str) -> std::collections::HashMap<String, u64> {
    let mut events: Vec<(u64, bool, u64, &str)> = journal
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(4, ' ');
            let kind = parts.next()?;
            let seq = parts.next()?.parse().ok()?;
            let size = parts.next()?.parse().ok()?;
            let path = parts.next().filter(|p| !p.is_empty())?;
            match kind {
                "s" => Some((seq, true, size, path)),
                "t" => Some((seq, false, size, path)),
                _ => None,
            }
        })
        .collect();
    events.sort_by_key(|e| e.0);
    let mut m = std::collections::HashMap::new();
    for (_, sync, size, path) in events {
        let durable = m.entry(path.to_string()).or_insert(0u64);
        *durable = if sync {
            (*durable).max(size)
        } else {
            (*durable).min(size)
        };
    }
    m
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else if p
            .extension()
            .is_some_and(|x| x == "log" || x == "index" || x == "timeindex")
        {
            out.push(p);
        }
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

#[cfg(test)]
mod tests {
    /// Syncs complete out of order (the CI run that found this: a later, larger sync journaled
    /// before an earlier, smaller one made the suite cut acknowledged records); truncations cap
    /// what syncs issued before them made durable, and later syncs count again.
    #[test]
    fn journaled_syncs_replay_in_issue_order() {
        let journal = "s 2 12288 /d/a.log\n\
                       s 1 4096 /d/a.log\n\
                       s 0 8192 /d/b.log\n\
                       s 3 16384 /d/b.log\n\
                       t 4 4096 /d/b.log\n\
                       s 6 8192 /d/c.log\n\
                       t 5 0 /d/c.log\n\
                       s 9 3 /d/with space.log\n\
                       bad line\n\
                       s x 5 /d/x.log\n\
                       s 7 5\n";
        let m = super::durable_sizes(journal);
        assert_eq!(
            m["/d/a.log"], 12288,
            "the larger sync, whatever its line's place"
        );
        assert_eq!(m["/d/b.log"], 4096, "capped by the truncation after it");
        assert_eq!(m["/d/c.log"], 8192, "a sync after the truncation counts");
        assert_eq!(m["/d/with space.log"], 3);
        assert_eq!(m.len(), 4);
    }
}
