//! The process around the shards: the data directory's lock, CPU placement, signals.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Why the process cannot start. Each is an environmental dead end, reported and exited on, not
/// a bug (STYLE.md: exit for environmental dead ends, assert for bugs).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data directory {path} is in use by another streamd (lock {lock} is held)")]
    Locked { path: PathBuf, lock: PathBuf },
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Holds an exclusive lock on the data directory for the life of the process, so two brokers
/// can never write the same logs. The kernel drops the lock when the process dies, kill -9
/// included, so there is no stale lock to clean up.
pub struct DataDirLock {
    _file: File,
}

pub fn lock_data_dir(dir: &Path) -> Result<DataDirLock, StartError> {
    std::fs::create_dir_all(dir).map_err(|source| StartError::DataDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let lock = dir.join(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(|source| StartError::Lock {
            path: lock.clone(),
            source,
        })?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(StartError::Locked {
                path: dir.to_path_buf(),
                lock,
            });
        }
        return Err(StartError::Lock {
            path: lock,
            source: err,
        });
    }
    Ok(DataDirLock { _file: file })
}

/// The CPUs this process may run on (its affinity mask), in order. Shards are pinned to these,
/// not to 0..n, so a broker confined by a cgroup or `taskset` stays inside its CPUs.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return (0..crate::config::available_cores()).collect();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Set once SIGTERM or SIGINT arrives; shards watch it and begin a graceful stop.
#[derive(Clone, Default)]
pub struct ShutdownFlag(Arc<AtomicBool>);

impl ShutdownFlag {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    pub fn set(&self) {
        self.0.store(true, Ordering::Release)
    }
}

/// Starts a thread that sets `flag` on the first SIGTERM or SIGINT. A second signal exits at
/// once with status 130, for an operator who does not want to wait for the graceful stop.
pub fn watch_signals(flag: ShutdownFlag) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("streamd-signals".into())
        .spawn(move || {
            let mut seen = 0;
            for sig in signals.forever() {
                seen += 1;
                if seen == 1 {
                    tracing::info!(signal = sig, "stopping: finishing in-flight requests");
                    flag.set();
                } else {
                    tracing::warn!(signal = sig, "second signal: exiting now");
                    std::process::exit(130);
                }
            }
        })?;
    Ok(())
}

/// Files kept for everything but partitions' active logs: sockets, io_uring rings, the metrics
/// server, metadata writes, and index files open for a moment during writes. (A partition's
/// directory is held in memory, not by a lock file; its index files are opened per write.)
pub const FILES_RESERVED: u64 = 1024;
/// The fewest active-segment files a shard keeps open, whatever the open-file limit leaves: a
/// shard below it would reopen files on almost every request.
pub const OPEN_LOGS_PER_SHARD_MIN: u64 = 64;

/// How many partitions' active-segment files each of `shards` shards keeps open (the engine's
/// budget, `quiver_engine::set_open_logs_max`) under an open-file limit of `soft`: what is left
/// after [`files_reserved`], shared evenly. Past it, the least recently used idle file closes
/// and reopens when next needed, so the limit bounds open files, not partitions.
pub fn open_logs_per_shard(soft: u64, shards: usize) -> u64 {
    let shards = shards.max(1) as u64;
    (soft.saturating_sub(files_reserved(shards as usize)) / shards).max(OPEN_LOGS_PER_SHARD_MIN)
}

/// Files kept for everything but partitions' active logs on a broker of `shards` shards:
/// [`FILES_RESERVED`] and, per shard, the closed segments its reads may keep open
/// (`quiver_engine::CLOSED_FILES_PER_THREAD`).
pub fn files_reserved(shards: usize) -> u64 {
    FILES_RESERVED + shards as u64 * quiver_engine::CLOSED_FILES_PER_THREAD as u64
}

/// Memory a partition is counted at when the broker checks a create against its memory: an
/// idle partition costs about 1.8 KiB resident, one written and read about 6 KiB more (its
/// index points, producer state, write position, tail cache and readers' caches; measured with
/// 100,000 partitions, bench/RESULTS.md, "Partitions at scale"), so 16 KiB with room.
pub const PARTITION_MEMORY_BYTES: u64 = 16 * 1024;

/// Most partitions the broker's memory holds: half of it (the other half is for connections,
/// caches and the page cache) at [`PARTITION_MEMORY_BYTES`] each, and what that memory is (for
/// the refusal's message). `None` when the memory cannot be read.
pub fn partitions_by_memory() -> Option<(u64, String)> {
    let (bytes, what) = memory_limit()?;
    let n = bytes / 2 / PARTITION_MEMORY_BYTES;
    Some((
        n,
        format!(
            "the memory limit: {} MiB ({what}), half of it at {} KiB a partition",
            bytes >> 20,
            PARTITION_MEMORY_BYTES >> 10
        ),
    ))
}

/// The memory this process may use: its cgroup's limit (v2 `memory.max`, v1
/// `memory.limit_in_bytes`) when one is set below the machine's, else the machine's memory.
fn memory_limit() -> Option<(u64, &'static str)> {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })?;
    let cgroup =
        cgroup_memory_files(&std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default())
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .filter_map(|s| s.trim().parse::<u64>().ok())
            .min();
    Some(match cgroup {
        Some(c) if c < total => (c, "the cgroup's memory limit"),
        _ => (total, "the machine's memory"),
    })
}

/// The files that may hold a memory limit for this process, from its `/proc/self/cgroup`: its
/// cgroup's and every ancestor's (a parent's limit binds its children), for cgroup v2
/// (`0::/path`, `memory.max`) and v1 (`N:memory:/path`, `memory.limit_in_bytes`).
fn cgroup_memory_files(proc_cgroup: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (root, file) = if controllers.is_empty() {
            ("/sys/fs/cgroup", "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            ("/sys/fs/cgroup/memory", "memory.limit_in_bytes")
        } else {
            continue;
        };
        let mut at = std::path::Path::new(path.trim_start_matches('/'));
        loop {
            out.push(std::path::Path::new(root).join(at).join(file));
            match at.parent() {
                Some(p) => at = p,
                None => break,
            }
        }
    }
    out
}

/// Raises the soft open-file limit to the hard one (a broker holds files per partition; the
/// default soft limit of many systems, 1024, would stop it at a few hundred). Returns (soft,
/// hard) after the change.
pub fn raise_open_file_limit() -> (u64, u64) {
    // SAFETY: getrlimit/setrlimit read and write a plain struct we own.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return (1024, 1024);
        }
        if r.rlim_cur < r.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                r = raised;
            }
        }
        (r.rlim_cur as u64, r.rlim_max as u64)
    }
}

/// Exit status of a broker that stopped because some thread panicked.
pub const PANIC_EXIT_CODE: i32 = 101;

/// Makes a panic on any thread (a shard, the metrics server, start-up) end the whole process at
/// once with [`PANIC_EXIT_CODE`], after the default message and one log line naming the thread
/// (shards are named `shard-<n>`).
///
/// Why a hook and not `panic = "abort"`: without either, a panicking shard's thread unwinds and
/// ends while the others run on, so the broker stays up half alive (its partitions unreachable,
/// admin changes waiting for it for ever, SIGTERM waiting for it to drain). `panic = "abort"` in
/// a Cargo profile would stop that too, but it applies to every binary and library built with
/// the profile (the SDK must not abort the application that links it), it is ignored for tests,
/// and it dies with SIGABRT before the log says which shard. The hook is installed by streamd's
/// `main` only, logs through the broker's own log (JSON too), and exits with a status code.
/// `_exit` rather than `exit`: other threads may hold locks that atexit handlers would wait for;
/// nothing is lost that a kill -9 would not lose (acknowledged data is already durable).
pub fn exit_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed").to_string();
        // glommio names an executor's thread `<name>-<executor id>`: say which shard plainly.
        let name = match name
            .strip_prefix("shard-")
            .and_then(|r| r.split('-').next())
        {
            Some(n) if n.parse::<u32>().is_ok() => format!("shard-{n}"),
            _ => name,
        };
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(thread = %name, %location, %message, "a thread of streamd panicked; the broker exits");
        eprintln!("streamd: thread '{name}' panicked at {location}: {message}; exiting with status {PANIC_EXIT_CODE}");
        // SAFETY: _exit(2) ends the process without running anything else; it takes no pointers.
        unsafe { libc::_exit(PANIC_EXIT_CODE) }
    }));
}

#[cfg(test)]
mod tests {
    #[test]
    fn memory_limits_are_looked_for_in_the_cgroup_and_its_ancestors() {
        let v1 = "9:name=systemd:/\n4:memory:/api/abc\n0::/\n";
        let files: Vec<String> = super::cgroup_memory_files(v1)
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(
            files,
            [
                "/sys/fs/cgroup/memory/api/abc/memory.limit_in_bytes",
                "/sys/fs/cgroup/memory/api/memory.limit_in_bytes",
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                "/sys/fs/cgroup/memory.max",
            ]
        );
        let v2 = "0::/system.slice/quiver.service\n";
        assert_eq!(
            super::cgroup_memory_files(v2)[0],
            std::path::Path::new("/sys/fs/cgroup/system.slice/quiver.service/memory.max")
        );
    }

    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _held = lock_data_dir(dir.path()).unwrap();
        // flock locks belong to the open file description, so a second open in the same process
        // conflicts just as another process would.
        let err = lock_data_dir(dir.path())
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("in use by another streamd"), "{err}");
    }

    #[test]
    fn allowed_cpus_is_not_empty() {
        assert!(!allowed_cpus().is_empty());
    }
}
