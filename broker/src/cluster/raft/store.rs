//! `Store`: the durable `raft::Storage` of one quorum voter (log, hard state, conf state, snapshot).
//!
//! On disk, in the store's own directory:
//!
//! - `log`: append-only records (`codec`): entries, hard states and conf states, in the order
//!   they were written. Replay is last-writer-wins: an entry at index `i` drops every entry at or
//!   after `i` before it is added (that is how raft's conflicting suffix is overwritten without
//!   rewriting the file), the last hard state and conf state win.
//! - `snapshot`: one framed snapshot record, replaced atomically (tmp, fdatasync, rename, fsync
//!   of the directory).
//!
//! Hard state lives in the log, not in a file of its own: one `persist` of a `Ready` is one
//! write and one fdatasync, entries and hard state together, and a torn tail can lose the hard
//! state only with the entries after it, never a hard state without its entries.
//!
//! **Durability contract:** `persist`, `set_conf_state`, `apply_snapshot` and `compact` return
//! only after an fdatasync of what they wrote (and of the directory for a new or renamed file).
//! A caller sends a message that depends on a write (a vote, an append response) only after it
//! returned. After any write error the store refuses every later write (`StoreError::Failed`):
//! the file may end in a torn record that a later append would bury, so the process must stop
//! and recover on restart (STYLE 7: exit for environmental dead ends).
//!
//! **Recovery:** records are read from the start. At the first bad record (a length out of
//! bounds or past the end, a CRC mismatch, an undecodable payload), as in the engine:
//!
//! - if no valid record follows it, or the damage before the next valid one holds a whole
//!   aligned 4 KiB block of zeros (a multi-block write whose middle block never landed while
//!   later ones did), it is a torn tail, normal after a crash: nothing from there on was
//!   acknowledged, since its fdatasync never completed. The file is cut there and synced;
//! - otherwise it is corruption of acknowledged data: `open` fails with `Corrupt`. Unlike a
//!   partition log, a Raft log cannot skip a hole, and a voter that forgot what it acknowledged
//!   breaks the quorum's promises: the operator replaces the voter's directory instead.
//!
//! **Cost per call:** `persist` is one `write` of the encoded entries plus one fdatasync;
//! `set_conf_state` likewise; `apply_snapshot` and `compact` write the snapshot file and rewrite
//! the log with the entries kept (O(log bytes), two fdatasyncs and two directory fsyncs each);
//! `open` reads the whole log once. Reads (`raft::Storage`) are in memory: every entry is kept
//! in memory, which is right for the metadata log, whose entries are small and compacted.
//! Blocking std::fs calls: the broker runs them on glommio's blocking pool, like metadata writes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

use super::codec::{self, Framed, Record};

const LOG_FILE: &str = "log";
const SNAPSHOT_FILE: &str = "snapshot";
const TMP_SUFFIX: &str = ".tmp";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("raft store {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("raft store {path}: corrupt at byte {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("raft store {0}: an earlier write failed; restart to recover")]
    Failed(PathBuf),
}

/// The durable Raft state of one voter. Invariant: `entries` are contiguous and, when not
/// empty, start at `snapshot_index() + 1`.
pub struct Store {
    dir: PathBuf,
    log: File,
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: Snapshot,
    entries: Vec<Entry>,
    failed: bool,
}

impl Store {
    /// Opens (or creates) the store in `dir`, recovering as the module docs say.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(io_err(dir))?;
            // `parent()` of a relative one-component path is "", which names the current one.
            let parent = match dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            sync_dir(parent).map_err(io_err(parent))?;
        }
        for tmp in [LOG_FILE, SNAPSHOT_FILE] {
            let tmp = dir.join(format!("{tmp}{TMP_SUFFIX}"));
            if tmp.exists() {
                fs::remove_file(&tmp).map_err(io_err(&tmp))?;
            }
        }
        let snapshot = read_snapshot(&dir.join(SNAPSHOT_FILE))?;
        let log_path = dir.join(LOG_FILE);
        let existed = log_path.exists();
        let mut log = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&log_path)
            .map_err(io_err(&log_path))?;
        if !existed {
            sync_dir(dir).map_err(io_err(dir))?;
        }
        let mut bytes = Vec::new();
        log.read_to_end(&mut bytes).map_err(io_err(&log_path))?;
        let replayed = replay(&log_path, &bytes)?;
        if replayed.valid_bytes < bytes.len() {
            // A torn tail: cut it so the next append follows the last whole record.
            log.set_len(replayed.valid_bytes as u64)
                .map_err(io_err(&log_path))?;
            log.sync_all().map_err(io_err(&log_path))?;
        }
        let mut store = Store {
            dir: dir.to_path_buf(),
            log,
            hard_state: replayed.hard_state.unwrap_or_default(),
            conf_state: replayed
                .conf_state
                .unwrap_or_else(|| snapshot.get_metadata().get_conf_state().clone()),
            snapshot,
            entries: Vec::new(),
            failed: false,
        };
        store.entries = store.reconcile(replayed.base, replayed.entries, &log_path)?;
        // A crash between a snapshot's write and the log's rewrite leaves an older hard state.
        let (snap_index, snap_term) = (store.snapshot_index(), store.snapshot_term());
        store.hard_state.commit = store.hard_state.commit.max(snap_index);
        store.hard_state.term = store.hard_state.term.max(snap_term);
        if store.hard_state.commit > store.last() {
            return Err(StoreError::Corrupt {
                path: log_path,
                offset: replayed.valid_bytes as u64,
                reason: format!(
                    "commit {} is past the last entry {}",
                    store.hard_state.commit,
                    store.last()
                ),
            });
        }
        Ok(store)
    }

    /// Keeps the replayed entries that follow the snapshot. Entries at or below its index are
    /// leftovers of a crash before the log's rewrite; if the log's entry at the snapshot's index
    /// has another term, the entries after it belong to another history and are dropped too.
    fn reconcile(
        &self,
        base: u64,
        mut entries: Vec<Entry>,
        path: &Path,
    ) -> Result<Vec<Entry>, StoreError> {
        let snap_index = self.snapshot_index();
        if entries.is_empty() {
            return Ok(entries);
        }
        if base > snap_index + 1 {
            return Err(StoreError::Corrupt {
                path: path.to_path_buf(),
                offset: 0,
                reason: format!("log starts at {base}, after the snapshot's index {snap_index}"),
            });
        }
        let at_snap = snap_index.checked_sub(base).map(|i| i as usize);
        match at_snap {
            None => Ok(entries), // base == snap_index + 1
            Some(i) if i >= entries.len() => Ok(Vec::new()),
            Some(i) if entries[i].term != self.snapshot_term() => Ok(Vec::new()),
            Some(i) => Ok(entries.split_off(i + 1)),
        }
    }

    /// Sets the conf state of a new quorum (all voters known at the start). Durable on return.
    pub fn bootstrap(&mut self, voters: &[u64]) -> Result<(), StoreError> {
        self.set_conf_state(ConfState {
            voters: voters.to_vec(),
            ..ConfState::default()
        })
    }

    /// Whether the store holds any state (a conf state, a hard state or a snapshot).
    pub fn is_initialized(&self) -> bool {
        self.conf_state != ConfState::default() || self.hard_state != HardState::default()
    }

    /// Appends `entries` (which may overwrite a suffix, as raft's `Ready` asks) and the hard
    /// state, with one write and one fdatasync. Durable on return.
    pub fn persist(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), StoreError> {
        if entries.is_empty() && hard_state.is_none() {
            return Ok(());
        }
        if let Some(first) = entries.first() {
            assert!(
                first.index > self.snapshot_index() && first.index <= self.last() + 1,
                "append at {} to a log of [{}, {}]",
                first.index,
                self.first(),
                self.last()
            );
        }
        let mut buf = Vec::new();
        let mut payload = Vec::new();
        for e in entries {
            payload.clear();
            codec::encode_entry(&mut payload, e);
            codec::frame(&mut buf, &payload);
        }
        if let Some(hs) = hard_state {
            payload.clear();
            codec::encode_hard_state(&mut payload, hs);
            codec::frame(&mut buf, &payload);
        }
        self.append_synced(&buf)?;
        if let Some(first) = entries.first() {
            self.entries.truncate((first.index - self.first()) as usize);
            self.entries.extend_from_slice(entries);
        }
        if let Some(hs) = hard_state {
            self.hard_state = hs.clone();
        }
        Ok(())
    }

    /// Records the commit index raft reported after a `Ready` (in memory: a lower commit after
    /// a restart is safe, raft learns it again; it is written with the next hard state).
    pub fn set_commit(&mut self, commit: u64) {
        debug_assert!(commit <= self.last());
        self.hard_state.commit = self.hard_state.commit.max(commit);
    }

    /// Replaces the conf state. Durable on return.
    pub fn set_conf_state(&mut self, cs: ConfState) -> Result<(), StoreError> {
        let (mut buf, mut payload) = (Vec::new(), Vec::new());
        codec::encode_conf_state(&mut payload, &cs);
        codec::frame(&mut buf, &payload);
        self.append_synced(&buf)?;
        self.conf_state = cs;
        Ok(())
    }

    /// Installs a snapshot received from the leader: every entry is dropped, the commit and
    /// term move up to the snapshot's, its conf state becomes ours. Durable on return.
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StoreError> {
        let meta = snapshot.get_metadata();
        assert!(
            meta.index >= self.snapshot_index(),
            "snapshot older than ours"
        );
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.conf_state = meta.get_conf_state().clone();
        self.entries.clear();
        self.install(snapshot)
    }

    /// Compaction after a local snapshot: the application has applied every entry up to `index`
    /// (committed, in this log) and `data` is its state there. Entries up to `index` are
    /// dropped; `index` becomes the snapshot's. Durable on return.
    ///
    /// Example: entries [6, 12] after a snapshot at 5; `compact(9, ..)` leaves a snapshot at 9
    /// (with entry 9's term) and entries [10, 12]; `first_index()` is then 10 and `term(9)` is
    /// the snapshot's term.
    pub fn compact(&mut self, index: u64, data: bytes::Bytes) -> Result<(), StoreError> {
        assert!(
            index <= self.hard_state.commit,
            "compact({index}) past commit {}",
            self.hard_state.commit
        );
        if index <= self.snapshot_index() {
            return Ok(());
        }
        let term = self.entries[(index - self.first()) as usize].term;
        let mut snapshot = Snapshot {
            data,
            ..Snapshot::default()
        };
        let meta = snapshot.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(self.conf_state.clone());
        self.entries.drain(..(index + 1 - self.first()) as usize);
        self.install(snapshot)
    }

    /// Writes `snapshot` atomically, then rewrites the log with the conf state, hard state and
    /// the entries kept. A crash between the two is repaired by `open` (`reconcile`).
    fn install(&mut self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.check_writable()?;
        let mut buf = Vec::new();
        let mut payload = Vec::new();
        codec::encode_snapshot(&mut payload, &snapshot);
        codec::frame(&mut buf, &payload);
        let result = write_atomically(&self.dir, SNAPSHOT_FILE, &buf);
        self.fail_on_err(result, SNAPSHOT_FILE)?;
        self.snapshot = snapshot;

        buf.clear();
        for record in 0..2 {
            payload.clear();
            match record {
                0 => codec::encode_conf_state(&mut payload, &self.conf_state),
                _ => codec::encode_hard_state(&mut payload, &self.hard_state),
            }
            codec::frame(&mut buf, &payload);
        }
        for e in &self.entries {
            payload.clear();
            codec::encode_entry(&mut payload, e);
            codec::frame(&mut buf, &payload);
        }
        let result = write_atomically(&self.dir, LOG_FILE, &buf).and_then(|()| {
            OpenOptions::new()
                .read(true)
                .append(true)
                .open(self.dir.join(LOG_FILE))
        });
        self.log = self.fail_on_err(result, LOG_FILE)?;
        Ok(())
    }

    fn append_synced(&mut self, buf: &[u8]) -> Result<(), StoreError> {
        self.check_writable()?;
        let result = self.log.write_all(buf).and_then(|()| self.log.sync_data());
        self.fail_on_err(result, LOG_FILE)
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        if self.failed {
            return Err(StoreError::Failed(self.dir.clone()));
        }
        Ok(())
    }

    fn fail_on_err<T>(&mut self, result: io::Result<T>, file: &str) -> Result<T, StoreError> {
        result.map_err(|source| {
            self.failed = true;
            StoreError::Io {
                path: self.dir.join(file),
                source,
            }
        })
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// The latest snapshot (index 0 and no data if there is none).
    pub fn latest_snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    fn snapshot_term(&self) -> u64 {
        self.snapshot.get_metadata().term
    }

    fn first(&self) -> u64 {
        self.snapshot_index() + 1
    }

    fn last(&self) -> u64 {
        self.snapshot_index() + self.entries.len() as u64
    }
}

impl raft::Storage for Store {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let from = (low - self.first()) as usize;
        let to = (high - self.first()) as usize;
        // At least one entry when any is asked for, then as many as fit in max_size.
        let mut size = 0u64;
        let mut out = Vec::new();
        for e in &self.entries[from..to] {
            size = size.saturating_add(codec::entry_size(e));
            if !out.is_empty() && size > max_size {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.snapshot_index() {
            return Ok(self.snapshot_term());
        }
        if idx < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(self.entries[(idx - self.first()) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    /// The latest snapshot, for follower `to`. A learner added after the snapshot was taken
    /// is not in its conf state, and raft-rs would refuse to restore it there; so for a `to`
    /// that the current conf state lists as a learner, the copy sent lists it too. Safe because
    /// learners are only ever added: the entry that added it, applied again after the snapshot,
    /// changes nothing.
    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        if self.snapshot_index() < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let mut snapshot = self.snapshot.clone();
        let cs = snapshot.mut_metadata().mut_conf_state();
        if self.conf_state.learners.contains(&to) && !cs.learners.contains(&to) {
            cs.learners.push(to);
        }
        Ok(snapshot)
    }
}

struct Replayed {
    /// The index of `entries[0]`.
    base: u64,
    entries: Vec<Entry>,
    hard_state: Option<HardState>,
    conf_state: Option<ConfState>,
    /// Where the last whole record ends.
    valid_bytes: usize,
}

fn replay(path: &Path, bytes: &[u8]) -> Result<Replayed, StoreError> {
    let mut out = Replayed {
        base: 0,
        entries: Vec::new(),
        hard_state: None,
        conf_state: None,
        valid_bytes: 0,
    };
    let mut pos = 0;
    loop {
        let record = match codec::unframe(bytes, pos) {
            Framed::End => break,
            Framed::Record(payload, len) => codec::decode_record(payload).map(|r| (r, len)),
            Framed::Bad => None,
        };
        let Some((record, len)) = record else {
            if let Some(valid_at) = next_valid_record(bytes, pos + 1)
                .filter(|valid_at| !holds_zero_block(&bytes[..*valid_at], pos))
            {
                return Err(StoreError::Corrupt {
                    path: path.to_path_buf(),
                    offset: pos as u64,
                    reason: format!("a bad record with a valid one after it at byte {valid_at}"),
                });
            }
            break; // a torn tail
        };
        match record {
            Record::Entry(e) => {
                if out.entries.is_empty() || e.index < out.base {
                    out.base = e.index;
                    out.entries.clear();
                } else if e.index > out.base + out.entries.len() as u64 {
                    return Err(StoreError::Corrupt {
                        path: path.to_path_buf(),
                        offset: pos as u64,
                        reason: format!(
                            "entry {} leaves a gap after {}",
                            e.index,
                            out.base + out.entries.len() as u64 - 1
                        ),
                    });
                }
                out.entries.truncate((e.index - out.base) as usize);
                out.entries.push(e);
            }
            Record::HardState(hs) => out.hard_state = Some(hs),
            Record::ConfState(cs) => out.conf_state = Some(cs),
        }
        pos += len;
        out.valid_bytes = pos;
    }
    Ok(out)
}

/// The first position at or after `from` where a whole, decodable record starts. Only called
/// on a bad record, and the scan is over what follows it: the torn tail of the last write.
fn next_valid_record(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len()).find(|&p| match codec::unframe(bytes, p) {
        Framed::Record(payload, _) => codec::decode_record(payload).is_some(),
        _ => false,
    })
}

/// The size of the blocks a device writes whole (or not at all).
const BLOCK_BYTES: usize = 4096;

/// Whether `bytes[from..]` holds a whole `BLOCK_BYTES`-aligned block of zeros.
fn holds_zero_block(bytes: &[u8], from: usize) -> bool {
    let first = from.div_ceil(BLOCK_BYTES) * BLOCK_BYTES;
    (first..bytes.len()).step_by(BLOCK_BYTES).any(|start| {
        bytes
            .get(start..start + BLOCK_BYTES)
            .is_some_and(|b| b.iter().all(|x| *x == 0))
    })
}

fn read_snapshot(path: &Path) -> Result<Snapshot, StoreError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Snapshot::default()),
        Err(source) => {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    // Written atomically: any damage is corruption, never a torn write.
    match codec::unframe(&bytes, 0) {
        Framed::Record(payload, len) if len == bytes.len() => codec::decode_snapshot(payload),
        _ => None,
    }
    .ok_or_else(|| StoreError::Corrupt {
        path: path.to_path_buf(),
        offset: 0,
        reason: "bad snapshot record".into(),
    })
}

/// Writes `name` in `dir` so that a crash leaves the old file or the new one: a temporary
/// file, fdatasync, rename over `name`, fsync of the directory.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
