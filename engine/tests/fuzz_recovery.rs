//! The engine's fuzz targets as ordinary tests: segment recovery from damaged files, and the
//! sparse index parser, on seed inputs (valid logs written by the engine) plus deterministic
//! mutations of them, through the same checks as the cargo-fuzz targets `segment_recovery` and
//! `index_files` (`fuzz/`, run for a bounded time by `scripts/fuzz.sh`). How to replay a
//! failure: `proto/tests/fuzz_support/mutate.rs`.

#[path = "fuzz_support/checks.rs"]
mod checks;
#[path = "../../proto/tests/fuzz_support/mutate.rs"]
mod mutate;

use bytes::Bytes;
use checks::{IndexCase, Outcome, RecoveryCase, OFFSET_LIMIT};
use mutate::Rng;
use quiver_engine::fuzzing::index;
use quiver_proto::batch;
use std::future::Future;
use std::path::{Path, PathBuf};

/// Runs `f` on a fresh glommio executor after the I/O probe, in a new directory under the
/// integration tests' temporary directory (not /tmp, which may be a tmpfs: direct I/O needs a
/// real file system).
fn on_executor<F, Fut>(name: &str, f: F)
where
    F: FnOnce(PathBuf) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let root = tempfile::Builder::new()
        .prefix(name)
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let dir = root.path().to_path_buf();
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            quiver_engine::init_io_probe(&dir).await.unwrap();
            f(dir).await
        })
        .unwrap()
        .join()
        .unwrap();
}

/// Runs the recovery check on one case, in a directory of its own removed afterwards.
async fn recover(root: &Path, seed: u64, case_no: usize, case: &RecoveryCase) -> Outcome {
    mutate::case_start("segment_recovery", seed, case_no, &case.encode());
    let dir = checks::fresh_dir(root, "case");
    let outcome = checks::check_recovery(&dir, case).await;
    mutate::case_done();
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

#[test]
fn segment_recovery_survives_damaged_files() {
    on_executor("fuzz-recovery", |root| async move {
        let seeds = checks::recovery_seeds(&root.join("seeds")).await;
        let seed = mutate::seed(0x5e92ec0);
        for (i, case) in seeds.iter().enumerate() {
            // Each seed is its own encoding's decoding: the fuzz target sees what we check.
            assert_eq!(&RecoveryCase::decode(&case.encode()), case);
            let o = recover(&root, seed, i, case).await;
            assert!(o.opened && o.batches_served > 0, "{o:?}");
        }
        let mut rng = Rng::new(seed);
        let (n, mut opened, mut served) = (mutate::cases(200), 0, 0);
        for i in 0..n {
            let mut case = rng.pick(&seeds).clone();
            for _ in 0..=rng.below(3) {
                mutate_recovery(&mut rng, &mut case, &seeds);
            }
            case.reopen = rng.one_in(4);
            let o = recover(&root, seed, seeds.len() + i, &case).await;
            opened += usize::from(o.opened);
            served += usize::from(o.batches_served > 0);
        }
        eprintln!("segment_recovery: {n} damaged logs, {opened} opened, {served} served batches");
        // The mutations are mostly survivable damage: most logs open and serve something.
        assert!(
            opened * 2 > n && served * 3 > n,
            "the mutations no longer reach recovery"
        );
    });
}

#[test]
fn index_parser_survives_damaged_files() {
    on_executor("fuzz-index", |root| async move {
        let recovery = checks::recovery_seeds(&root.join("seeds")).await;
        let seeds = checks::index_seeds(&recovery);
        let encoded: Vec<Vec<u8>> = seeds.iter().map(IndexCase::encode).collect();
        for s in &seeds {
            assert_eq!(&IndexCase::decode(&s.encode()), s);
        }
        let seed = mutate::seed(0x1dec5);
        // Structured mutations (entries, lengths, the mode) ...
        let mut rng = Rng::new(seed);
        for (i, s) in seeds.iter().enumerate() {
            mutate::case_start("index_files", seed, i, &s.encode());
            checks::check_index(s);
            mutate::case_done();
        }
        for i in 0..mutate::cases(5000) {
            let mut c = rng.pick(&seeds).clone();
            for _ in 0..=rng.below(3) {
                mutate_index(&mut rng, &mut c, &seeds);
            }
            mutate::case_start("index_files", seed, seeds.len() + i, &c.encode());
            checks::check_index(&c);
            mutate::case_done();
        }
        // ... and byte mutations of the target's raw input.
        mutate::run(
            "index_files",
            seed ^ 1,
            mutate::cases(5000),
            &encoded,
            |data| checks::check_index(&IndexCase::decode(data)),
        );
    });
}

/// A damaged file found by an earlier run of these checks stays fixed: add cases here as
/// (name, encoded input) when a failure is fixed.
#[test]
fn recovery_regressions() {
    let cases: &[(&str, &[u8])] = &[
        // A second segment whose base is 0 is the first segment: decode moves it to 1.
        (
            "next segment at base 1",
            &[4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ),
        // Nothing at all: an empty log.
        ("empty input", &[]),
    ];
    on_executor("fuzz-regressions", move |root| async move {
        for (i, (name, data)) in cases.iter().enumerate() {
            let case = RecoveryCase::decode(data);
            eprintln!("regression case {name}");
            recover(&root, 0, i, &case).await;
        }
    });
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Found by `segment_recovery`: segment 0 holds two one-record batches (offsets 0 and 1), and a
/// second segment, empty, is named for base offset 1. A read at 0 is planned in segment 0 and
/// bounded by its bytes only, so it serves offset 1 too; the log's end is 1, so the next append
/// is given offset 1 as well: one offset, two different batches. A read in a closed segment
/// should stop at the next segment's base (or open should refuse or cut the overlap).
/// Fixed: a read plan carries the next segment's base, and a batch running past it is not
/// served (it is damage).
#[test]
fn closed_segment_serves_offsets_of_the_next_segment() {
    const INPUT: &str =
        "040000000000000000ae000000000000000000000057000000000000009576eb3c01000000\
        000000000068e5cf8b0100000068e5cf8b010000ffffffffffffffffffffffffffff0100000000001600\
        00001000000000000000000800010203010168017601000000000000005700000000000000dc90ed2101\
        000000000000000a68e5cf8b0100000a68e5cf8b010000ffffffffffffffffffffffffffff0100000000\
        0016000000100100000000000000081f202122010168017600000000";
    let case = RecoveryCase::decode(&unhex(INPUT));
    on_executor("fuzz-repro-cross", move |root| async move {
        let dir = root.join("log");
        case.write(&dir);
        let log = quiver_engine::PartitionLog::open(&dir, checks::recovery_config())
            .await
            .unwrap();
        assert_eq!(
            log.segment_bases(),
            [quiver_proto::Offset(0), quiver_proto::Offset(1)]
        );
        let bytes = log.read(quiver_proto::Offset(0), 1 << 20).await.unwrap();
        let mut served_end = 0;
        for b in batch::BatchIter::new(&bytes) {
            let h = batch::header(b.unwrap()).unwrap();
            served_end = h.base_offset.get() + u64::from(h.last_offset_delta.get()) + 1;
        }
        let info = log
            .append(std::slice::from_ref(&checks::append_batch()), None)
            .await
            .unwrap();
        assert!(
            info.base_offset.0 >= served_end,
            "offset {} was served from segment 0 and then given to a new append",
            info.base_offset
        );
        log.close().await.unwrap();
    });
}

/// Found by `segment_recovery`: the active segment 0 holds two batches of idempotent producer
/// 17 (sequences 0..=1 and 2..=3); the index names the second one (offset 2), so recovery
/// checks from there on and keeps the first as it is, but its base offset (outside the CRC)
/// reads `u64::MAX`. Rebuilding the producers' state at open reads that header and computes
/// `base_offset + last_offset_delta` unchecked (`Producers::record`): `PartitionLog::open`
/// panics with an overflow in builds with overflow checks, and in release builds the producer's
/// range wraps, so a retry of its first batch is answered with offsets the log does not hold.
/// The state should be rebuilt only from batches whose offsets recovery checked (or the walk
/// should check them as it goes). Fixed: the header walk checks each batch's base offset against
/// the density of offsets from the segment's base and stops at the first that breaks it, and
/// producer state never adds an offset without saturation.
#[test]
fn producer_state_trusts_unchecked_base_offsets() {
    const INPUT: &str = "03e4000000ffffffffffffffff72000000000000008b0ce15f01000000010000000068e5\
        cf8b0100000168e5cf8b01000011000000000000000000000000000200000000001a000000100000000000\
        000000100001020304050607010168017616000201100000000000000000100708090a0b0c0d0e000200\
        00000000000072000000000000008f24f28901000000010000001468e5cf8b0100001568e5cf8b010000\
        11000000000000000000020000000200000000001a000000100200000000000000103e3f404142434445\
        0101680176160002011002000000000000001045464748494a4b4c000800000002000000720000000c00\
        00006468e5cf8b01000002000000";
    let case = RecoveryCase::decode(&unhex(INPUT));
    on_executor("fuzz-repro-producers", move |root| async move {
        let dir = root.join("log");
        case.write(&dir);
        let log = quiver_engine::PartitionLog::open(&dir, checks::recovery_config())
            .await
            .unwrap();
        let end = log.end_offset();
        assert_eq!(end, quiver_proto::Offset(4));
        // A retry of the first batch, exactly as it was written.
        let first = batch::BatchIter::new(&case.first.log)
            .next()
            .unwrap()
            .unwrap();
        let retry =
            batch::ValidBatch::new(Bytes::copy_from_slice(first), batch::BatchLimits::default())
                .unwrap();
        if let Ok(info) = log.append(std::slice::from_ref(&retry), None).await {
            assert!(
                info.base_offset <= end && info.next_offset <= end,
                "a retry was answered with offsets {}..{} of a log ending at {end}",
                info.base_offset,
                info.next_offset
            );
        }
        log.close().await.unwrap();
    });
}

/// Writes the seeds of the engine's cargo-fuzz targets into `$QUIVER_FUZZ_SEEDS/<target>/`
/// (what `scripts/fuzz.sh` does before fuzzing; nothing is checked in).
#[test]
#[ignore = "writes files; run by scripts/fuzz.sh"]
fn write_fuzz_seeds() {
    let out = PathBuf::from(std::env::var("QUIVER_FUZZ_SEEDS").expect("set QUIVER_FUZZ_SEEDS"));
    on_executor("fuzz-seeds", move |root| async move {
        let recovery = checks::recovery_seeds(&root.join("seeds")).await;
        let index = checks::index_seeds(&recovery);
        let targets = [
            (
                "segment_recovery",
                recovery
                    .iter()
                    .map(RecoveryCase::encode)
                    .collect::<Vec<_>>(),
            ),
            ("index_files", index.iter().map(IndexCase::encode).collect()),
        ];
        for (target, seeds) in targets {
            let d = out.join(target);
            std::fs::create_dir_all(&d).unwrap();
            for (i, s) in seeds.iter().enumerate() {
                std::fs::write(d.join(format!("seed-{i:03}")), s).unwrap();
            }
        }
    });
}

/// Positions and lengths of the batches of a segment's framed prefix.
fn batch_positions(log: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut it = batch::BatchIter::new(log);
    loop {
        let pos = it.position();
        match it.next() {
            Some(Ok(b)) => out.push((pos, b.len())),
            _ => break,
        }
    }
    out
}

/// One past the last offset of the batches framed in `log`.
fn framed_end(log: &[u8]) -> u64 {
    batch_positions(log)
        .iter()
        .map(|&(p, _)| {
            let h = batch::header(&log[p..]).unwrap();
            let last = h
                .base_offset
                .get()
                .saturating_add(u64::from(h.last_offset_delta.get()));
            last.saturating_add(1)
        })
        .max()
        .unwrap_or(1)
        .clamp(1, OFFSET_LIMIT - 1)
}

/// One structural mutation of a recovery case: byte mutations of one file (spliced with the
/// seeds' files of that kind), a file removed, swapped or replaced by random bytes, a batch's
/// base offset (outside the CRC) rewritten, a cut at or inside a batch, the second segment
/// moved, added or removed, the producer snapshot damaged.
fn mutate_recovery(rng: &mut Rng, case: &mut RecoveryCase, seeds: &[RecoveryCase]) {
    let logs: Vec<Vec<u8>> = seeds.iter().map(|s| s.first.log.clone()).collect();
    let indexes: Vec<Vec<u8>> = seeds.iter().filter_map(|s| s.first.index.clone()).collect();
    let times: Vec<Vec<u8>> = seeds.iter().filter_map(|s| s.first.time.clone()).collect();
    let first_end = framed_end(&case.first.log);
    let op = rng.below(12);
    if op == 8 {
        // The second segment: moved, added or removed.
        let base = match rng.below(4) {
            0 => first_end,
            1 => first_end.saturating_sub(1 + rng.below(5) as u64).max(1),
            2 => first_end + 1 + rng.below(5) as u64,
            _ => 1 + rng.next_u64() % 100_000,
        };
        match &mut case.next {
            Some((b, _)) if rng.one_in(3) => *b = base,
            Some(_) if rng.one_in(2) => case.next = None,
            _ => case.next = Some((base, rng.pick(seeds).first.clone())),
        }
        return;
    }
    if op == 10 {
        // The producer snapshot: damaged (its CRC fixed up or not), moved, or dropped.
        match &mut case.producers {
            Some((o, p)) => match rng.below(4) {
                0 => *o = rng.next_u64() % 100,
                1 => case.producers = None,
                _ => {
                    mutate::mutate_once(rng, p, &[]);
                    case.fix_producers_crc = rng.one_in(2);
                }
            },
            None => case.producers = seeds.iter().find_map(|s| s.producers.clone()),
        }
        return;
    }
    let seg = match &mut case.next {
        Some((_, n)) if rng.one_in(2) => n,
        _ => &mut case.first,
    };
    match op {
        0..=2 => mutate::mutate_once(rng, &mut seg.log, &logs),
        3 => match &mut seg.index {
            Some(i) => mutate::mutate_once(rng, i, &indexes),
            None => {
                let n = rng.below(64);
                seg.index = Some(rng.bytes(n))
            }
        },
        4 => match &mut seg.time {
            Some(t) => mutate::mutate_once(rng, t, &times),
            None => {
                let n = rng.below(64);
                seg.time = Some(rng.bytes(n))
            }
        },
        5 => match rng.below(3) {
            0 => seg.index = None,
            1 => seg.time = None,
            _ => {
                seg.index = None;
                seg.time = None;
            }
        },
        6 => {
            // A batch's base offset, which the CRC does not cover, off by a little or a lot.
            let pos = batch_positions(&seg.log);
            if !pos.is_empty() {
                let (p, _) = *rng.pick(&pos);
                let old = u64::from_le_bytes(seg.log[p..p + 8].try_into().unwrap());
                let new = match rng.below(4) {
                    0 => old.wrapping_add(1),
                    1 => old.wrapping_sub(1),
                    2 => old.wrapping_add(1000),
                    _ => rng.next_u64() % OFFSET_LIMIT,
                };
                seg.log[p..p + 8].copy_from_slice(&new.to_le_bytes());
            }
        }
        7 => {
            // Cut at a batch boundary, or inside a batch.
            let pos = batch_positions(&seg.log);
            if !pos.is_empty() {
                let (p, len) = *rng.pick(&pos);
                let cut = if rng.one_in(2) { p } else { p + rng.below(len) };
                seg.log.truncate(cut);
            }
        }
        9 => {
            // Another seed's index file beside this log.
            let other = &rng.pick(seeds).first;
            if rng.one_in(2) {
                seg.index = other.index.clone();
            } else {
                seg.time = other.time.clone();
            }
        }
        _ => {
            // Random bytes in place of a whole file.
            let n = rng.below(4096);
            match rng.below(3) {
                0 => seg.log = rng.bytes(n),
                1 => seg.index = Some(rng.bytes(n / 8)),
                _ => seg.time = Some(rng.bytes(n / 8)),
            }
        }
    }
}

/// One structural mutation of an index case: an entry's field nudged so that it ties or
/// crosses a neighbour, the two files' entries disagreeing, a file cut or padded with zeros,
/// the log length moved onto or around a position, the closed/active mode flipped, or byte
/// mutations of one file.
fn mutate_index(rng: &mut Rng, c: &mut IndexCase, seeds: &[IndexCase]) {
    const O: usize = index::OFFSET_ENTRY_BYTES;
    const T: usize = index::TIME_ENTRY_BYTES;
    let n = (c.offset_file.len() / O).min(c.time_file.len() / T);
    match rng.below(8) {
        0 if n > 0 => {
            // Nudge one field of entry i: rel offset (both files), position or timestamp.
            let i = rng.below(n);
            let delta = [-1i64, 1, -1000, 1000][rng.below(4)];
            match rng.below(4) {
                0 | 1 => {
                    let at = i * O;
                    let v = u32::from_le_bytes(c.offset_file[at..at + 4].try_into().unwrap());
                    let v = (i64::from(v) + delta).clamp(0, i64::from(u32::MAX)) as u32;
                    c.offset_file[at..at + 4].copy_from_slice(&v.to_le_bytes());
                    if rng.one_in(4) {
                        return; // the files now disagree
                    }
                    c.time_file[i * T + 8..i * T + 12].copy_from_slice(&v.to_le_bytes());
                }
                2 => {
                    let at = i * O + 4;
                    let v = u32::from_le_bytes(c.offset_file[at..at + 4].try_into().unwrap());
                    let v = (i64::from(v) + delta).clamp(0, i64::from(u32::MAX)) as u32;
                    c.offset_file[at..at + 4].copy_from_slice(&v.to_le_bytes());
                }
                _ => {
                    let at = i * T;
                    let v = i64::from_le_bytes(c.time_file[at..at + 8].try_into().unwrap());
                    c.time_file[at..at + 8].copy_from_slice(&v.saturating_add(delta).to_le_bytes());
                }
            }
        }
        1 => {
            // Cut one file, at an entry boundary or not.
            let f = if rng.one_in(2) {
                &mut c.offset_file
            } else {
                &mut c.time_file
            };
            let len = f.len();
            f.truncate(if rng.one_in(2) {
                len / 2
            } else {
                rng.below(len + 1)
            });
        }
        2 => {
            // Zero padding, as the active segment's files have.
            let to = c.offset_file.len() + rng.below(64);
            c.offset_file.resize(to, 0);
            let to = c.time_file.len() + rng.below(96);
            c.time_file.resize(to, 0);
        }
        3 => {
            // The log length on, just past or just before an entry's position.
            let pos: Vec<u64> = c
                .offset_file
                .chunks_exact(O)
                .map(|e| u64::from(u32::from_le_bytes(e[4..8].try_into().unwrap())))
                .collect();
            c.log_len = match pos.as_slice() {
                [] => rng.next_u64() % 100_000,
                p => (rng.pick(p) + rng.below(3) as u64).saturating_sub(1),
            };
        }
        4 => c.exact = !c.exact,
        5 => {
            let others: Vec<Vec<u8>> = seeds.iter().map(|s| s.offset_file.clone()).collect();
            mutate::mutate_once(rng, &mut c.offset_file, &others);
        }
        6 => {
            let others: Vec<Vec<u8>> = seeds.iter().map(|s| s.time_file.clone()).collect();
            mutate::mutate_once(rng, &mut c.time_file, &others);
        }
        _ => {
            // An entry repeated (a duplicate point).
            if n > 0 {
                let i = rng.below(n);
                let e = c.offset_file[i * O..(i + 1) * O].to_vec();
                c.offset_file.splice(i * O..i * O, e);
                let e = c.time_file[i * T..(i + 1) * T].to_vec();
                c.time_file.splice(i * T..i * T, e);
            }
        }
    }
}
