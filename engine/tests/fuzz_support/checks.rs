//! What the engine's fuzz targets check, how their inputs are laid out, and their seeds: used by
//! the cheap tests (`engine/tests/fuzz_recovery.rs`) and by the cargo-fuzz targets
//! `segment_recovery` and `index_files` (`fuzz/fuzz_targets/`, which include this file).
#![allow(dead_code)]

use bytes::Bytes;
use quiver_engine::fuzzing::index::{self, IndexDamage, IndexPoint};
use quiver_engine::{FlushPolicy, LogConfig, PartitionLog, INDEX_INTERVAL_BYTES_MIN};
use quiver_proto::batch::{self, BatchBuilder, BatchIter, BatchLimits, Compression, ValidBatch};
use quiver_proto::{Offset, TimestampMs};
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------------------
// Segment recovery

/// The files of one segment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SegmentFiles {
    pub log: Vec<u8>,
    /// `None`: the file is absent.
    pub index: Option<Vec<u8>>,
    pub time: Option<Vec<u8>>,
}

/// A log directory to recover: segment 0, optionally a second segment at `next_base`, and
/// optionally a producer-state snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryCase {
    pub first: SegmentFiles,
    /// (base offset, files) of a second segment.
    pub next: Option<(u64, SegmentFiles)>,
    /// (offset, bytes) of a `<offset>.producers` snapshot.
    pub producers: Option<(u64, Vec<u8>)>,
    /// Recompute the snapshot's trailing CRC before writing it, so that hostile bytes reach its
    /// decoder rather than stop at the checksum.
    pub fix_producers_crc: bool,
    /// After the append, close, reopen and read it again (the step costs as much as the rest of
    /// the check, in fdatasyncs, so not every case takes it).
    pub reopen: bool,
}

/// Second-segment bases and snapshot offsets are taken below this: offsets near `u64::MAX` are
/// out of scope (a log never gets there; 2^48 records is 89 years at 100k records/s).
pub const OFFSET_LIMIT: u64 = 1 << 48;

const F_INDEX: u8 = 1;
const F_TIME: u8 = 2;
const F_NEXT: u8 = 4;
const F_NEXT_INDEX: u8 = 8;
const F_NEXT_TIME: u8 = 16;
const F_PRODUCERS: u8 = 32;
const F_FIX_CRC: u8 = 64;
const F_REOPEN: u8 = 128;

impl RecoveryCase {
    /// The input layout of the `segment_recovery` fuzz target:
    ///
    /// ```text
    /// flags u8 (1 .index, 2 .timeindex, 4 second segment, 8 its .index, 16 its .timeindex,
    ///           32 producer snapshot, 64 fix the snapshot's CRC, 128 reopen at the end)
    /// [second segment's base u64 LE]   [snapshot offset u64 LE]      (when flagged)
    /// then each present file as u32 LE length + bytes: log, index, timeindex, second log,
    /// second index, second timeindex, snapshot
    /// ```
    /// Decoding never fails: a short input leaves the remaining files empty, and a length past
    /// the end takes what is left.
    pub fn decode(data: &[u8]) -> RecoveryCase {
        let mut r = Reader(data);
        let flags = r.u8();
        let next_base = (flags & F_NEXT != 0).then(|| 1 + r.u64() % (OFFSET_LIMIT - 1));
        let producers_at = (flags & F_PRODUCERS != 0).then(|| r.u64() % OFFSET_LIMIT);
        let first = SegmentFiles {
            log: r.section(),
            index: (flags & F_INDEX != 0).then(|| r.section()),
            time: (flags & F_TIME != 0).then(|| r.section()),
        };
        let next = next_base.map(|base| {
            let log = r.section();
            let index = (flags & F_NEXT_INDEX != 0).then(|| r.section());
            let time = (flags & F_NEXT_TIME != 0).then(|| r.section());
            (base, SegmentFiles { log, index, time })
        });
        let producers = producers_at.map(|o| (o, r.section()));
        RecoveryCase {
            first,
            next,
            producers,
            fix_producers_crc: flags & F_FIX_CRC != 0,
            reopen: flags & F_REOPEN != 0,
        }
    }

    /// The inverse of [`RecoveryCase::decode`] (for bases and offsets below [`OFFSET_LIMIT`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut flags = 0;
        let mut set = |cond: bool, bit: u8| {
            if cond {
                flags |= bit
            }
        };
        set(self.first.index.is_some(), F_INDEX);
        set(self.first.time.is_some(), F_TIME);
        if let Some((_, n)) = &self.next {
            set(true, F_NEXT);
            set(n.index.is_some(), F_NEXT_INDEX);
            set(n.time.is_some(), F_NEXT_TIME);
        }
        set(self.producers.is_some(), F_PRODUCERS);
        set(self.fix_producers_crc, F_FIX_CRC);
        set(self.reopen, F_REOPEN);
        let mut out = vec![flags];
        if let Some((base, _)) = &self.next {
            out.extend_from_slice(&(base - 1).to_le_bytes());
        }
        if let Some((o, _)) = &self.producers {
            out.extend_from_slice(&o.to_le_bytes());
        }
        let mut section = |b: &[u8]| {
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        };
        fn files(s: &SegmentFiles) -> [Option<&Vec<u8>>; 3] {
            [Some(&s.log), s.index.as_ref(), s.time.as_ref()]
        }
        for f in files(&self.first).into_iter().flatten() {
            section(f);
        }
        if let Some((_, n)) = &self.next {
            for f in files(n).into_iter().flatten() {
                section(f);
            }
        }
        if let Some((_, p)) = &self.producers {
            section(p);
        }
        out
    }

    /// Writes the case's files into `dir` (which must be empty).
    pub fn write(&self, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        let seg = |base: u64, s: &SegmentFiles| {
            let name = |ext: &str| dir.join(format!("{base:020}.{ext}"));
            std::fs::write(name("log"), &s.log).unwrap();
            if let Some(b) = &s.index {
                std::fs::write(name("index"), b).unwrap();
            }
            if let Some(b) = &s.time {
                std::fs::write(name("timeindex"), b).unwrap();
            }
        };
        seg(0, &self.first);
        if let Some((base, n)) = &self.next {
            seg(*base, n);
        }
        if let Some((o, p)) = &self.producers {
            let mut bytes = p.clone();
            if self.fix_producers_crc && bytes.len() >= 4 {
                let body = bytes.len() - 4;
                let crc = crc32fast::hash(&bytes[..body]);
                bytes[body..].copy_from_slice(&crc.to_le_bytes());
            }
            std::fs::write(dir.join(format!("{o:020}.producers")), bytes).unwrap();
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }

    fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }

    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        let t = self.take(8);
        b[..t.len()].copy_from_slice(t);
        u64::from_le_bytes(b)
    }

    fn section(&mut self) -> Vec<u8> {
        let mut b = [0u8; 4];
        let t = self.take(4);
        b[..t.len()].copy_from_slice(t);
        let n = u32::from_le_bytes(b) as usize;
        self.take(n).to_vec()
    }
}

/// The configuration the recovery checks open logs with: the smallest segments and index
/// interval, so small inputs hold several index points and an append may roll.
pub fn recovery_config() -> LogConfig {
    LogConfig {
        segment_bytes: quiver_engine::SEGMENT_BYTES_MIN,
        index_interval_bytes: INDEX_INTERVAL_BYTES_MIN,
        flush: FlushPolicy::Sync,
        ..LogConfig::default()
    }
}

/// Reads at most this many times per pass, so a check always ends.
const READS_PER_PASS_MAX: usize = 2_000;

/// What [`check_recovery`] saw, for the tests' statistics.
#[derive(Clone, Copy, Debug, Default)]
pub struct Outcome {
    /// The log opened.
    pub opened: bool,
    /// Batches served (by all reads).
    pub batches_served: usize,
}

/// Recovers `case` written into `dir` (an empty directory on a file system with O_DIRECT) and
/// checks what the engine promises about hostile files (engine/src/lib.rs, "Recovery and
/// corruption policy"):
/// - `PartitionLog::open` does not panic: it fails with an error or it succeeds;
/// - after a successful open, reading forward from `start_offset()` (and from every segment's
///   base) towards `readable_end()` does not panic; a read may fail, but one that succeeds
///   returns whole batches, each passing `quiver_proto::batch::validate`, the first holding the
///   offset asked for and the others following it without a gap, none past the base of the
///   segment after the one read; `verify` and `offset_for_timestamp` do not panic either;
/// - a new append succeeds at the log's end offset, which is not below any offset served
///   before, and reads back byte for byte as appended (with its base offset stamped), also
///   after a close and a reopen (when the case asks for it: `RecoveryCase::reopen`).
///
/// Must run on a glommio executor whose `init_io_probe` has run.
pub async fn check_recovery(dir: &Path, case: &RecoveryCase) -> Outcome {
    let mut outcome = Outcome::default();
    case.write(dir);
    let config = recovery_config();
    let log = match PartitionLog::open(dir, config.clone()).await {
        Ok(log) => log,
        Err(_) => return outcome,
    };
    outcome.opened = true;
    let start = log.start_offset().0;
    let end = log.readable_end().0;
    assert!(start <= end, "start {start} past the readable end {end}");
    assert_eq!(log.end_offset().0, end, "nothing is pending after open");
    let bases: Vec<u64> = log.segment_bases().iter().map(|b| b.0).collect();
    let mut served_end = start;
    let mut from = vec![start];
    from.extend(bases.iter().copied().filter(|&b| b > start && b < end));
    for f in from {
        served_end = served_end.max(read_forward(&log, &bases, f, end, &mut outcome).await);
    }
    let _ = log.verify().await;
    for ts in [i64::MIN, 0, 1_700_000_000_000, 1_700_000_000_005, i64::MAX] {
        let _ = log.offset_for_timestamp(TimestampMs(ts)).await;
    }

    let appended = append_batch();
    let end_before = log.end_offset();
    let info = log
        .append(std::slice::from_ref(&appended), None)
        .await
        .unwrap_or_else(|e| panic!("append after a successful open failed: {e}"));
    assert_eq!(
        info.base_offset, end_before,
        "an append goes at the end offset"
    );
    assert!(
        info.base_offset.0 >= served_end,
        "append given offset {}, below offset {} already served",
        info.base_offset,
        served_end - 1
    );
    let mut want = appended.bytes().to_vec();
    batch::set_base_offset(&mut want, info.base_offset).unwrap();
    let got = log
        .read(info.base_offset, 1 << 20)
        .await
        .expect("read the append back");
    assert_eq!(&got[..], &want[..], "the append reads back as written");
    log.close().await.expect("close after a successful append");
    drop(log);
    if !case.reopen {
        return outcome;
    }

    let log = PartitionLog::open(dir, config)
        .await
        .expect("reopen after a clean close");
    assert_eq!(
        log.end_offset(),
        info.next_offset,
        "the reopened log ends after the append"
    );
    let got = log
        .read(info.base_offset, 1 << 20)
        .await
        .expect("read the append after reopen");
    assert_eq!(&got[..], &want[..], "the append survives close and reopen");
    log.close().await.expect("close after reopen");
    outcome
}

/// Reads from `from` towards `end`; returns one past the highest offset served (within the
/// segments read).
async fn read_forward(
    log: &PartitionLog,
    bases: &[u64],
    from: u64,
    end: u64,
    outcome: &mut Outcome,
) -> u64 {
    let mut next = from;
    let mut served_end = from;
    for _ in 0..READS_PER_PASS_MAX {
        if next >= end {
            break;
        }
        let Ok(bytes) = log.read(Offset(next), 16 * 1024).await else {
            break;
        };
        assert!(
            !bytes.is_empty(),
            "a read at {next}, below the readable end {end}, returned nothing"
        );
        // The base of the segment after the one holding `next`.
        let segment_end = bases
            .iter()
            .copied()
            .find(|&b| b > next)
            .unwrap_or(u64::MAX);
        let mut expected: Option<u64> = None;
        for b in BatchIter::new(&bytes) {
            let b = b.unwrap_or_else(|e| panic!("a read at {next} served a partial batch: {e}"));
            let info = batch::validate(b, BatchLimits::default()).unwrap_or_else(|e| {
                panic!("a read at {next} served a batch failing validate: {e}")
            });
            let base = batch::header(b).expect("validated").base_offset.get();
            let last = base.saturating_add(u64::from(info.last_offset_delta));
            match expected {
                None => assert!(
                    base <= next && next <= last,
                    "a read at {next} served a first batch of offsets {base}..={last}"
                ),
                Some(e) => assert_eq!(base, e, "a read at {next} served batches with a gap"),
            }
            expected = Some(last.saturating_add(1));
            outcome.batches_served += 1;
            // A closed segment serves only its own offsets (a damaged one whose batches run past
            // the next segment's base stops short of them).
            assert!(
                last < segment_end,
                "a read at {next} served offsets {base}..={last}, past the next segment's base \
                 {segment_end}"
            );
            served_end = served_end.max(last.saturating_add(1));
        }
        next = expected.expect("non-empty");
    }
    served_end
}

/// The batch each check appends.
pub fn append_batch() -> ValidBatch {
    let mut b = BatchBuilder::new(Compression::None);
    for i in 0..3u8 {
        b.append(
            TimestampMs(1_800_000_000_000),
            Some(&[i]),
            Some(b"appended after recovery"),
            &[],
        )
        .unwrap();
    }
    ValidBatch::new(b.finish().unwrap(), BatchLimits::default()).unwrap()
}

/// A batch of `n` records of about `value_len` bytes each.
pub fn seed_batch(compression: Compression, n: u32, value_len: usize, seed: u64) -> ValidBatch {
    let mut b = BatchBuilder::new(compression);
    for i in 0..n {
        let v: Vec<u8> = (0..value_len)
            .map(|j| (seed as usize * 31 + i as usize * 7 + j) as u8)
            .collect();
        b.append(
            TimestampMs(1_700_000_000_000 + seed as i64 * 10 + i64::from(i)),
            Some(&seed.to_le_bytes()),
            Some(&v),
            if i == 0 { &[("h", b"v")] } else { &[] },
        )
        .unwrap();
    }
    ValidBatch::new(b.finish().unwrap(), BatchLimits::default()).unwrap()
}

/// A batch of producer `pid` (epoch 0) starting at sequence `seq`.
fn producer_batch(n: u32, pid: i64, seq: i32, seed: u64) -> ValidBatch {
    let mut bytes = seed_batch(Compression::None, n, 40, seed)
        .into_bytes()
        .to_vec();
    batch::set_producer(&mut bytes, pid, 0, seq).unwrap();
    ValidBatch::new(Bytes::from(bytes), BatchLimits::default()).unwrap()
}

fn read_if_exists(p: &Path) -> Option<Vec<u8>> {
    std::fs::read(p).ok()
}

fn segment_files(dir: &Path, base: u64) -> SegmentFiles {
    let name = |ext: &str| dir.join(format!("{base:020}.{ext}"));
    SegmentFiles {
        log: std::fs::read(name("log")).unwrap(),
        index: read_if_exists(&name("index")),
        time: read_if_exists(&name("timeindex")),
    }
}

/// Reads a log directory's files back as a case (segment 0 first, at most one more segment,
/// the snapshot at the log's end if there is one).
fn case_from_dir(dir: &Path) -> RecoveryCase {
    let mut bases = Vec::new();
    let mut snapshots = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".log") {
            bases.push(stem.parse::<u64>().unwrap());
        } else if let Some(stem) = name.strip_suffix(".producers") {
            snapshots.push(stem.parse::<u64>().unwrap());
        }
    }
    bases.sort_unstable();
    snapshots.sort_unstable();
    assert_eq!(bases[0], 0);
    RecoveryCase {
        first: segment_files(dir, 0),
        next: bases.get(1).map(|&b| (b, segment_files(dir, b))),
        producers: snapshots.last().map(|&o| {
            (
                o,
                std::fs::read(dir.join(format!("{o:020}.producers"))).unwrap(),
            )
        }),
        fix_producers_crc: false,
        reopen: true,
    }
}

/// Valid log directories written by the engine, as cases: one segment left as a crash leaves
/// it (zero-padded tail, index files lagging), the same closed cleanly, two segments (a roll),
/// compressed batches, and an idempotent producer's batches with their snapshot. Each log is a
/// few KiB, so mutations of it stay cheap. Runs on a glommio executor; `scratch` is an empty
/// directory.
pub async fn recovery_seeds(scratch: &Path) -> Vec<RecoveryCase> {
    let config = recovery_config();
    let mut out = Vec::new();
    for variant in 0..5u64 {
        let dir = scratch.join(format!("seed-{variant}"));
        let log = PartitionLog::open(&dir, config.clone()).await.unwrap();
        for i in 0..12u64 {
            let b = match variant {
                3 => seed_batch(
                    [Compression::Lz4, Compression::Zstd][i as usize % 2],
                    4,
                    200,
                    i,
                ),
                4 => producer_batch(2, 17, 2 * i as i32, i),
                _ => seed_batch(
                    Compression::None,
                    1 + (i % 3) as u32,
                    60 + 40 * i as usize,
                    i,
                ),
            };
            log.append(std::slice::from_ref(&b), None).await.unwrap();
            if variant == 2 && i == 6 {
                assert!(log.roll().await.unwrap());
            }
        }
        if variant == 0 {
            drop(log); // as after a crash
            glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
        } else {
            log.close().await.unwrap();
        }
        out.push(case_from_dir(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
    }
    out
}

/// A fresh directory for one check under `root`, removed first if a previous run left it.
pub fn fresh_dir(root: &Path, name: &str) -> PathBuf {
    let d = root.join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

// ---------------------------------------------------------------------------------------------
// Index files

/// An input of the `index_files` target: both files, the log length they are checked against,
/// and whether they belong to a closed segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexCase {
    pub offset_file: Vec<u8>,
    pub time_file: Vec<u8>,
    pub log_len: u64,
    pub exact: bool,
}

impl IndexCase {
    /// `exact u8 (bit 0) | log_len u32 LE | offset file length u16 LE | offset file | time file`;
    /// a short input leaves the rest empty.
    pub fn decode(data: &[u8]) -> IndexCase {
        let mut r = Reader(data);
        let exact = r.u8() & 1 == 1;
        let mut l = [0u8; 4];
        let t = r.take(4);
        l[..t.len()].copy_from_slice(t);
        let mut s = [0u8; 2];
        let t = r.take(2);
        s[..t.len()].copy_from_slice(t);
        let offset_file = r.take(u16::from_le_bytes(s) as usize).to_vec();
        let time_file = r.0.to_vec();
        IndexCase {
            offset_file,
            time_file,
            log_len: u64::from(u32::from_le_bytes(l)),
            exact,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![u8::from(self.exact)];
        out.extend_from_slice(&(self.log_len.min(u64::from(u32::MAX)) as u32).to_le_bytes());
        let n = self.offset_file.len().min(usize::from(u16::MAX));
        out.extend_from_slice(&(n as u16).to_le_bytes());
        out.extend_from_slice(&self.offset_file[..n]);
        out.extend_from_slice(&self.time_file);
        out
    }
}

/// The sparse index parser and its lookups on arbitrary files (`engine/src/index.rs`):
/// - no panic;
/// - parsed points are strictly increasing in offset and position, their running max timestamp
///   never decreases, and every position is within the log;
/// - they are the files' leading entries: for a closed segment (`exact`) all of them, the files
///   being whole entries of equal count; for the active segment a prefix, ending at most at the
///   shorter file or at the first all-zero entry;
/// - damage at entry `i` means the `i` entries before it parse;
/// - lookups return the last point at or before the offset, and the last point whose max
///   timestamp is below the time (checked against a scan).
pub fn check_index(c: &IndexCase) {
    let (o, t) = (&c.offset_file[..], &c.time_file[..]);
    let (n_off, n_time) = (
        o.len() / index::OFFSET_ENTRY_BYTES,
        t.len() / index::TIME_ENTRY_BYTES,
    );
    match index::parse(o, t, c.log_len, c.exact) {
        Ok(points) => {
            for w in points.windows(2) {
                assert!(
                    w[0].rel_offset < w[1].rel_offset,
                    "offsets not increasing: {w:?}"
                );
                assert!(
                    w[0].position < w[1].position,
                    "positions not increasing: {w:?}"
                );
                assert!(
                    w[0].max_timestamp <= w[1].max_timestamp,
                    "time went back: {w:?}"
                );
            }
            for p in &points {
                assert!(
                    u64::from(p.position) < c.log_len,
                    "{p:?} beyond a log of {}",
                    c.log_len
                );
            }
            let (eo, et) = index::encode(&points);
            assert!(
                o.starts_with(&eo),
                "points are not the offset file's leading entries"
            );
            assert!(
                t.starts_with(&et),
                "points are not the time file's leading entries"
            );
            if c.exact {
                assert_eq!(
                    eo.len(),
                    o.len(),
                    "a closed segment's index parses whole or fails"
                );
                assert_eq!(
                    et.len(),
                    t.len(),
                    "a closed segment's index parses whole or fails"
                );
            } else {
                assert!(points.len() <= n_off.min(n_time));
                if points.len() < n_off.min(n_time) {
                    let i = points.len();
                    let zero = |b: &[u8]| b.iter().all(|&x| x == 0);
                    assert!(
                        zero(&o[i * index::OFFSET_ENTRY_BYTES..][..index::OFFSET_ENTRY_BYTES])
                            || zero(&t[i * index::TIME_ENTRY_BYTES..][..index::TIME_ENTRY_BYTES]),
                        "active-segment parse stopped at entry {i}, which is not zero padding"
                    );
                }
            }
            check_lookups(&points);
        }
        Err(IndexDamage::Length) => {
            assert!(
                c.exact,
                "only a closed segment's index is refused for its length"
            );
            assert!(
                o.len() % index::OFFSET_ENTRY_BYTES != 0
                    || t.len() % index::TIME_ENTRY_BYTES != 0
                    || n_off != n_time
            );
        }
        Err(IndexDamage::Inconsistent(i) | IndexDamage::BeyondLog(i)) => {
            assert!(
                i < n_off.min(n_time),
                "damage at entry {i} of {n_off}/{n_time}"
            );
            let before = index::parse(
                &o[..i * index::OFFSET_ENTRY_BYTES],
                &t[..i * index::TIME_ENTRY_BYTES],
                c.log_len,
                c.exact,
            );
            assert_eq!(
                before.map(|p| p.len()),
                Ok(i),
                "the entries before the damage parse"
            );
        }
    }
}

fn check_lookups(points: &[IndexPoint]) {
    let mut rels = vec![0, 1, u32::MAX];
    let mut times = vec![i64::MIN, 0, i64::MAX];
    for p in points {
        rels.extend([
            p.rel_offset.saturating_sub(1),
            p.rel_offset,
            p.rel_offset.saturating_add(1),
        ]);
        times.extend([
            p.max_timestamp.saturating_sub(1),
            p.max_timestamp,
            p.max_timestamp.saturating_add(1),
        ]);
    }
    for rel in rels {
        let want = points.iter().rev().find(|p| p.rel_offset <= rel).copied();
        assert_eq!(
            index::lookup_offset(points, rel),
            want,
            "lookup_offset({rel})"
        );
    }
    for ts in times {
        let want = points.iter().rev().find(|p| p.max_timestamp < ts).copied();
        assert_eq!(index::lookup_time(points, ts), want, "lookup_time({ts})");
    }
}

/// Seeds of `index_files`: each recovery seed's index files (with their log's length; exact
/// for closed segments and cleanly closed logs), the files with zero padding as the active
/// segment's are, and the worked example of `engine/src/index.rs`.
pub fn index_seeds(recovery: &[RecoveryCase]) -> Vec<IndexCase> {
    let mut out = Vec::new();
    for case in recovery {
        let segs = std::iter::once(&case.first).chain(case.next.as_ref().map(|(_, s)| s));
        for s in segs {
            if let (Some(i), Some(t)) = (&s.index, &s.time) {
                let exact = i.len() % index::OFFSET_ENTRY_BYTES == 0
                    && t.len() % index::TIME_ENTRY_BYTES == 0
                    && i.len() / index::OFFSET_ENTRY_BYTES == t.len() / index::TIME_ENTRY_BYTES;
                out.push(IndexCase {
                    offset_file: i.clone(),
                    time_file: t.clone(),
                    log_len: s.log.len() as u64,
                    exact,
                });
            }
        }
    }
    let worked = [
        IndexPoint {
            rel_offset: 30,
            position: 4500,
            max_timestamp: 10,
        },
        IndexPoint {
            rel_offset: 60,
            position: 9000,
            max_timestamp: 20,
        },
        IndexPoint {
            rel_offset: 90,
            position: 13500,
            max_timestamp: 20,
        },
    ];
    let (o, t) = index::encode(&worked);
    out.push(IndexCase {
        offset_file: o.clone(),
        time_file: t.clone(),
        log_len: 15_000,
        exact: true,
    });
    let (mut po, mut pt) = (o, t);
    po.resize(4096, 0);
    pt.resize(4096, 0);
    out.push(IndexCase {
        offset_file: po,
        time_file: pt,
        log_len: 15_000,
        exact: false,
    });
    out
}
