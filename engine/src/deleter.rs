//! The process's one segment deleter: a thread that frees the space of segment files already
//! renamed away from their logs (`segment::delete_files`), paced.
//!
//! Why a thread of its own, paced: the root filesystem here is ext4 mounted with `discard`, and
//! ext4 frees a file's extents (and discards them at the next journal commit) inside `unlink`,
//! 33 ms for a 256 MiB segment, while every fdatasync of the other logs waits for that commit. In
//! a test beside a writer doing 1 MiB writes with fdatasync (normally 0.5 ms, p99 0.8 ms), a
//! plain unlink held the writer 34 ms; shrinking the file in 8 MiB steps, each synced, 2 ms
//! apart, held it at most 1.9 ms. Retention deleting segments this way took the e2e benchmark's
//! p99 from 73-143 ms (plain unlink on the core) to the figures in bench/RESULTS.md. Deleting is
//! slow on purpose (about 0.1 s per 256 MiB), and one thread keeps the discards of many logs from
//! piling onto the same commits. It also keeps the slow part off glommio's blocking pool, which
//! the shard's own truncates and renames go through.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, OnceLock};
use std::time::Duration;

/// A file shrinks by this much per step.
const STEP_BYTES: u64 = 8 * 1024 * 1024;
/// Pause after each step.
const STEP_PAUSE: Duration = Duration::from_millis(2);

/// What the deleter is asked to delete.
enum Job {
    /// Files already out of every log.
    Files(Vec<PathBuf>),
    /// A directory already out of use, with everything in it.
    Dir(PathBuf),
}

impl Job {
    fn run(self) {
        match self {
            Job::Files(files) => files.iter().for_each(|f| delete(f)),
            Job::Dir(dir) => delete_dir(&dir),
        }
    }
}

static QUEUE: OnceLock<Option<mpsc::Sender<Job>>> = OnceLock::new();

/// Queues `files` (already out of every log) to be deleted.
pub(crate) fn submit(files: Vec<PathBuf>) {
    if !files.is_empty() {
        queue(Job::Files(files));
    }
}

/// Deletes directory `dir` and everything in it in the background, paced like segment files
/// (each file shrinks in synced steps before it goes). For directories nothing uses any more:
/// a deleted log's, a deleted topic's. Rename it out of its users' way first; a crash part way
/// leaves it to be found by that name.
pub fn delete_dir_paced(dir: PathBuf) {
    queue(Job::Dir(dir));
}

/// Hands a job to the deleter thread (started on first use). If the thread cannot be started,
/// the job runs here, at once.
fn queue(job: Job) {
    let queue = QUEUE.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name("segment-deleter".into())
            .spawn(move || rx.into_iter().for_each(Job::run));
        match spawned {
            Ok(_) => Some(tx),
            Err(e) => {
                tracing::warn!(error = %e, "no segment deleter thread; deleting inline");
                None
            }
        }
    });
    let unsent = match queue {
        Some(tx) => tx.send(job).err().map(|mpsc::SendError(job)| job),
        None => Some(job),
    };
    if let Some(job) = unsent {
        job.run();
    }
}

/// Every file below `dir` paced, then the (now small) tree at once.
fn delete_dir(dir: &Path) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(entry.path()),
                Ok(t) if t.is_file() => delete(&entry.path()),
                _ => {}
            }
        }
    }
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "could not delete a directory");
        }
    }
}

fn delete(path: &Path) {
    if let Err(e) = shrink(path).and_then(|()| std::fs::remove_file(path)) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "could not delete a segment file");
        }
    }
}

/// Shrinks the file to under one step, a synced step at a time.
fn shrink(path: &Path) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new().write(true).open(path)?;
    let mut len = f.metadata()?.len();
    while len > STEP_BYTES {
        len -= STEP_BYTES;
        f.set_len(len)?;
        f.sync_all()?;
        std::thread::sleep(STEP_PAUSE);
    }
    Ok(())
}
