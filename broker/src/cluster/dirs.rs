//! Where topics live on disk, and the start sweep that finishes what a crash left there. The one
//! place that names a topic's directory: `<data_dir>/topics/<name>.<id>/<partition>/`, renamed to
//! `.deleted.<name>.<id>` while it is being deleted and to `<name>.<id>.stray` when the metadata
//! does not hold it. Knows names and paths only, not metadata: callers say which directories
//! are live and which were deleted.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use quiver_proto::PartitionId;

const DELETED_TOPIC_PREFIX: &str = ".deleted.";
/// What a directory of `topics/` that the metadata does not hold is renamed to.
pub const STRAY_SUFFIX: &str = ".stray";

/// Bytes a topic directory's name adds to the topic's name at most: `.deleted.` before it (while
/// it is deleted) and `.<32 hex digits>` after it. A topic name longer than the file system's
/// name limit minus this is refused at create (`topic::check_name_fits`).
pub const TOPIC_DIR_NAME_OVERHEAD: usize = DELETED_TOPIC_PREFIX.len() + 1 + 32;

/// A topic directory's name, `<name>.<id>`: the start sweep puts aside any directory not named
/// so for a topic the metadata holds.
pub fn topic_dir_name(name: &str, id: &str) -> String {
    format!("{name}.{id}")
}

/// Where a topic's partition logs live: `<data_dir>/topics/<dir_name>/`.
pub fn topic_dir(data_dir: &Path, dir_name: &str) -> PathBuf {
    data_dir.join("topics").join(dir_name)
}

/// One partition's log directory: `<data_dir>/topics/<dir_name>/<partition>/`.
pub fn partition_dir(data_dir: &Path, dir_name: &str, partition: PartitionId) -> PathBuf {
    topic_dir(data_dir, dir_name).join(partition.0.to_string())
}

/// Where a deleted topic's directory goes until the engine's deleter has removed it:
/// `<data_dir>/topics/.deleted.<dir_name>`. Start removes any left by a crash (`sweep`).
pub fn deleted_topic_dir(data_dir: &Path, dir_name: &str) -> PathBuf {
    data_dir
        .join("topics")
        .join(format!("{DELETED_TOPIC_PREFIX}{dir_name}"))
}

/// Where a deleted topic's directory goes on its way out: `deleted_topic_dir`, or, when a
/// directory of that name is still there (its paced deletion was cut short by a crash, and
/// the topic's directory was found again), the same name with `.1`, `.2`, ... appended. Every
/// such name starts with the deleted prefix, so a later start finishes it.
pub fn free_deleted_topic_dir(data_dir: &Path, dir_name: &str) -> PathBuf {
    let first = deleted_topic_dir(data_dir, dir_name);
    let mut to = first.clone();
    let mut n = 1;
    while to.exists() {
        to = first.with_file_name(format!("{DELETED_TOPIC_PREFIX}{dir_name}.{n}"));
        n += 1;
    }
    to
}

/// Directories in `topics` that look like live topics: neither being deleted nor put aside.
pub fn topic_dirs_on_disk(topics: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(topics) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(DELETED_TOPIC_PREFIX) && !is_stray(n))
        .collect();
    out.sort();
    out
}

fn is_stray(name: &str) -> bool {
    name.ends_with(STRAY_SUFFIX) || name.contains(&format!("{STRAY_SUFFIX}."))
}

/// What the start sweep did with the directories of `topics/`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Deletions a crash interrupted, finished now (handed to the paced deleter).
    pub deleted: Vec<String>,
    /// Directories the metadata does not hold, renamed to `<name>.stray` and kept.
    pub strays: Vec<String>,
}

/// Finishes what a crash left in `topics/`, deleting only what the metadata says was deleted:
/// - `.deleted.<name>.<id>` directories (a deletion interrupted after its rename) and the
///   directories named in `deleted` (interrupted between the deletion's commit and the rename)
///   go to the engine's paced deleter;
/// - any other directory not in `live` is renamed to `<dir>.stray` (or `<dir>.stray.<n>` if
///   that exists) and logged, never deleted: it may be data that metadata lost, and an operator
///   decides. Its logs are never opened again.
pub fn sweep(data_dir: &Path, live: &HashSet<String>, deleted: &HashSet<&str>) -> Sweep {
    let mut sweep = Sweep::default();
    let topics = data_dir.join("topics");
    let Ok(entries) = std::fs::read_dir(&topics) else {
        return sweep;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) || live.contains(&name) || is_stray(&name) {
            continue;
        }
        if name.starts_with(DELETED_TOPIC_PREFIX) {
            sweep.deleted.push(name);
            quiver_engine::delete_dir_paced(entry.path());
        } else if deleted.contains(name.as_str()) {
            let to = free_deleted_topic_dir(data_dir, &name);
            if let Err(e) = std::fs::rename(entry.path(), &to) {
                tracing::warn!(dir = %entry.path().display(), error = %e, "cannot move aside the directory of a deleted topic");
                continue;
            }
            tracing::info!(dir = %entry.path().display(), "finishing the deletion of a topic a crash interrupted");
            sweep.deleted.push(name);
            quiver_engine::delete_dir_paced(to);
        } else {
            let mut to = topics.join(format!("{name}{STRAY_SUFFIX}"));
            let mut n = 1;
            while to.exists() {
                to = topics.join(format!("{name}{STRAY_SUFFIX}.{n}"));
                n += 1;
            }
            match std::fs::rename(entry.path(), &to) {
                Ok(()) => {
                    tracing::warn!(dir = %entry.path().display(), moved_to = %to.display(), "a topic directory the metadata does not hold was put aside, not deleted; remove it once it is known to be unneeded");
                    sweep.strays.push(name);
                }
                Err(e) => {
                    tracing::warn!(dir = %entry.path().display(), error = %e, "cannot put aside a topic directory the metadata does not hold; it is left as it is")
                }
            }
        }
    }
    if !sweep.deleted.is_empty() || !sweep.strays.is_empty() {
        if let Err(e) = std::fs::File::open(&topics).and_then(|d| d.sync_all()) {
            tracing::warn!(dir = %topics.display(), error = %e, "cannot sync the topics directory after the start sweep");
        }
    }
    sweep
}
