//! Tests of `store`: round trips, recovery of torn tails, refusal of corruption, compaction.

use std::fs::OpenOptions;
use std::io::Write;

use bytes::Bytes;
use raft::eraftpb::{Entry, HardState, Snapshot};
use raft::{GetEntriesContext, Storage, StorageError};

use super::store::{Store, StoreError};

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: Bytes::from(format!("entry {index} of term {term}")),
        ..Entry::default()
    }
}

fn hs(term: u64, vote: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote,
        commit,
        ..HardState::default()
    }
}

fn all(store: &Store) -> Vec<(u64, u64)> {
    let (lo, hi) = (
        store.first_index().unwrap(),
        store.last_index().unwrap() + 1,
    );
    let got = store
        .entries(lo, hi, None, GetEntriesContext::empty(false))
        .unwrap();
    got.iter().map(|e| (e.index, e.term)).collect()
}

fn append_raw(dir: &std::path::Path, bytes: &[u8]) {
    let mut f = OpenOptions::new()
        .append(true)
        .open(dir.join("log"))
        .unwrap();
    f.write_all(bytes).unwrap();
}

fn store_err(e: raft::Error) -> StorageError {
    match e {
        raft::Error::Store(e) => e,
        other => panic!("not a storage error: {other:?}"),
    }
}

#[test]
fn round_trip_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path()).unwrap();
    assert!(!s.is_initialized());
    s.bootstrap(&[1, 2, 3]).unwrap();
    s.persist(&[entry(1, 1), entry(2, 1), entry(3, 1)], Some(&hs(1, 2, 2)))
        .unwrap();
    // Raft overwrites a conflicting suffix: 3 of term 1 gives way to 3 and 4 of term 2.
    s.persist(&[entry(3, 2), entry(4, 2)], Some(&hs(2, 3, 3)))
        .unwrap();
    assert_eq!(all(&s), vec![(1, 1), (2, 1), (3, 2), (4, 2)]);
    drop(s);

    let s = Store::open(dir.path()).unwrap();
    assert_eq!(all(&s), vec![(1, 1), (2, 1), (3, 2), (4, 2)]);
    let state = s.initial_state().unwrap();
    assert_eq!(state.hard_state, hs(2, 3, 3));
    assert_eq!(state.conf_state.voters, vec![1, 2, 3]);
    let e = s
        .entries(3, 4, None, GetEntriesContext::empty(false))
        .unwrap();
    assert_eq!(e[0].data, Bytes::from("entry 3 of term 2"));
}

#[test]
fn a_new_directory_is_created_nested_or_relative() {
    let dir = tempfile::tempdir().unwrap();
    Store::open(&dir.path().join("a/b/voter-1")).unwrap();
    // Relative to the current directory: its parent is "", synced as ".".
    let name = format!("raft-store-test-{}", std::process::id());
    let relative = std::path::Path::new(&name);
    let opened = Store::open(relative).map(drop);
    std::fs::remove_dir_all(relative).unwrap();
    opened.unwrap();
}

#[test]
fn storage_queries_follow_raft_semantics() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path()).unwrap();
    // Empty: first 1, last 0, term(0) = 0.
    assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (1, 0));
    assert_eq!(s.term(0).unwrap(), 0);
    assert_eq!(store_err(s.term(1).unwrap_err()), StorageError::Unavailable);

    s.persist(
        &(1..=10).map(|i| entry(i, 1 + i / 4)).collect::<Vec<_>>(),
        Some(&hs(3, 1, 8)),
    )
    .unwrap();
    s.compact(5, Bytes::from_static(b"state at 5")).unwrap();
    assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (6, 10));
    assert_eq!(
        s.term(5).unwrap(),
        2,
        "the snapshot keeps the term of its index"
    );
    assert_eq!(store_err(s.term(4).unwrap_err()), StorageError::Compacted);
    assert_eq!(
        store_err(s.term(11).unwrap_err()),
        StorageError::Unavailable
    );
    let ctx = || GetEntriesContext::empty(false);
    assert_eq!(
        store_err(s.entries(5, 7, None, ctx()).unwrap_err()),
        StorageError::Compacted
    );
    assert_eq!(
        store_err(s.entries(6, 12, None, ctx()).unwrap_err()),
        StorageError::Unavailable
    );
    // max_size: always at least one entry, then only what fits.
    assert_eq!(s.entries(6, 11, 0, ctx()).unwrap().len(), 1);
    assert_eq!(s.entries(6, 11, None, ctx()).unwrap().len(), 5);
    let snap = s.snapshot(0, 2).unwrap();
    assert_eq!(
        (snap.get_metadata().index, snap.get_metadata().term),
        (5, 2)
    );
    assert_eq!(
        store_err(s.snapshot(6, 2).unwrap_err()),
        StorageError::SnapshotTemporarilyUnavailable
    );
}

#[test]
fn compaction_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path()).unwrap();
    s.bootstrap(&[1, 2, 3]).unwrap();
    s.persist(
        &(1..=12).map(|i| entry(i, 1)).collect::<Vec<_>>(),
        Some(&hs(1, 1, 12)),
    )
    .unwrap();
    s.compact(9, Bytes::from_static(b"nine")).unwrap();
    s.persist(&[entry(13, 2)], Some(&hs(2, 1, 12))).unwrap();
    let log_len = std::fs::metadata(dir.path().join("log")).unwrap().len();
    drop(s);
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(all(&s), vec![(10, 1), (11, 1), (12, 1), (13, 2)]);
    assert_eq!(s.latest_snapshot().data, Bytes::from_static(b"nine"));
    assert_eq!(s.conf_state().voters, vec![1, 2, 3]);
    assert_eq!(s.hard_state(), &hs(2, 1, 12));
    assert_eq!(
        std::fs::metadata(dir.path().join("log")).unwrap().len(),
        log_len
    );
}

#[test]
fn leader_snapshot_replaces_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path()).unwrap();
    s.persist(&[entry(1, 1), entry(2, 1)], Some(&hs(1, 1, 1)))
        .unwrap();
    let mut snap = Snapshot {
        data: Bytes::from_static(b"leader's state at 20"),
        ..Snapshot::default()
    };
    snap.mut_metadata().index = 20;
    snap.mut_metadata().term = 4;
    snap.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
    s.apply_snapshot(snap).unwrap();
    assert_eq!(
        (s.first_index().unwrap(), s.last_index().unwrap()),
        (21, 20)
    );
    assert_eq!(s.term(20).unwrap(), 4);
    drop(s);
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(
        (s.first_index().unwrap(), s.last_index().unwrap()),
        (21, 20)
    );
    assert_eq!((s.hard_state().term, s.hard_state().commit), (4, 20));
    assert_eq!(s.conf_state().voters, vec![1, 2, 3]);
}

#[test]
fn torn_tail_is_truncated() {
    // Each kind of tail a crash mid-write can leave: half a record, a frame with garbage,
    // zeros (a file extended before its data landed), and random bytes.
    let half_record = {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        s.persist(&[entry(1, 1)], None).unwrap();
        let bytes = std::fs::read(dir.path().join("log")).unwrap();
        bytes[..bytes.len() / 2].to_vec()
    };
    let tails: Vec<Vec<u8>> = vec![
        half_record,
        vec![40, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9],
        vec![0; 4096],
        (0..777u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect(),
    ];
    for tail in tails {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        s.persist(&[entry(1, 1), entry(2, 1)], Some(&hs(1, 1, 2)))
            .unwrap();
        drop(s);
        let len = std::fs::metadata(dir.path().join("log")).unwrap().len();
        append_raw(dir.path(), &tail);
        let mut s = Store::open(dir.path()).unwrap();
        assert_eq!(all(&s), vec![(1, 1), (2, 1)]);
        assert_eq!(
            std::fs::metadata(dir.path().join("log")).unwrap().len(),
            len,
            "cut at the tail"
        );
        // And the next append follows the last whole record.
        s.persist(&[entry(3, 1)], None).unwrap();
        drop(s);
        assert_eq!(
            all(&Store::open(dir.path()).unwrap()),
            vec![(1, 1), (2, 1), (3, 1)]
        );
    }
}

#[test]
fn a_lost_block_inside_the_last_write_is_a_torn_tail() {
    // One persist of ~12 KiB whose second 4 KiB block never reached the device, while the
    // blocks after it did: nothing of that write was acknowledged, so it is cut whole.
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path()).unwrap();
    s.persist(&[entry(1, 1)], Some(&hs(1, 1, 1))).unwrap();
    let kept = std::fs::metadata(dir.path().join("log")).unwrap().len() as usize;
    let big: Vec<Entry> = (2..=40)
        .map(|i| Entry {
            data: Bytes::from(vec![7u8; 300]),
            ..entry(i, 1)
        })
        .collect();
    s.persist(&big, Some(&hs(1, 1, 30))).unwrap();
    drop(s);
    let path = dir.path().join("log");
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 3 * 4096);
    bytes[4096..8192].fill(0);
    std::fs::write(&path, &bytes).unwrap();
    let s = Store::open(dir.path()).unwrap();
    let survivors = all(&s);
    assert!(
        survivors.len() < 40 && survivors[0] == (1, 1),
        "{survivors:?}"
    );
    assert!(std::fs::metadata(&path).unwrap().len() as usize >= kept);
    assert!(std::fs::metadata(&path).unwrap().len() < 4096);
}

#[test]
fn corruption_before_the_tail_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path()).unwrap();
    s.persist(&[entry(1, 1), entry(2, 1), entry(3, 1)], Some(&hs(1, 1, 3)))
        .unwrap();
    drop(s);
    let path = dir.path().join("log");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 0x40; // inside the first entry's payload
    std::fs::write(&path, &bytes).unwrap();
    match Store::open(dir.path()) {
        Err(StoreError::Corrupt { offset: 0, .. }) => {}
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("corruption before the tail was accepted"),
    }
}

#[test]
fn damaged_snapshot_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path()).unwrap();
    s.persist(&[entry(1, 1), entry(2, 1)], Some(&hs(1, 1, 2)))
        .unwrap();
    s.compact(2, Bytes::from_static(b"two")).unwrap();
    drop(s);
    let path = dir.path().join("snapshot");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    assert!(matches!(
        Store::open(dir.path()),
        Err(StoreError::Corrupt { .. })
    ));
}
