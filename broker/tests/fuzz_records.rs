//! The broker's fuzz targets as ordinary tests: the offsets records of `__consumer_offsets` and
//! `meta/metadata.json`, on seed inputs plus deterministic mutations of them, through the same
//! checks as the cargo-fuzz targets `offsets_records` and `metadata_json` (`fuzz/`, run for a
//! bounded time by `scripts/fuzz.sh`). How to replay a failure:
//! `proto/tests/fuzz_support/mutate.rs`.

#[path = "fuzz_support/checks.rs"]
mod checks;
#[path = "../../proto/tests/fuzz_support/mutate.rs"]
mod mutate;

use mutate::Rng;
use quiver_broker::cluster::meta::{FileMetadataStore, MetadataCommand, MetadataStore};
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(name)
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

#[test]
fn offsets_records_survive_mutated_bytes() {
    let seeds = checks::records_seeds();
    mutate::run(
        "offsets_records",
        mutate::seed(0x0ff5e7),
        mutate::cases(20_000),
        &seeds,
        checks::offsets_records,
    );
}

/// A mutation of a metadata input that keeps its checksum right (so that it reaches the JSON
/// parser and the state it builds): JSON-aware edits of the body, then the fix-up flag.
fn mutate_json(rng: &mut Rng, input: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    let file = checks::metadata_file(input);
    let n = file.iter().position(|&b| b == b'\n').map_or(0, |n| n + 1);
    let mut body = file[n..].to_vec();
    let tokens: [&[u8]; 12] = [
        b"18446744073709551615",
        b"-1",
        b"0",
        b"4294967296",
        b"null",
        b"\"\"",
        b"{}",
        b"[]",
        b"\"\\u0000\"",
        b"1e400",
        b"\"partitions\": 0",
        b"\"version\": 18446744073709551615",
    ];
    match rng.below(3) {
        // A JSON value or fragment in place of some bytes.
        0 if !body.is_empty() => {
            let at = rng.below(body.len());
            let len = rng.below((body.len() - at).min(24) + 1);
            body.splice(at..at + len, rng.pick(&tokens).iter().copied());
        }
        // A number replaced by a boundary value.
        1 => {
            let digits: Vec<usize> = (0..body.len())
                .filter(|&i| body[i].is_ascii_digit())
                .collect();
            if !digits.is_empty() {
                let at = *rng.pick(&digits);
                let end = (at..body.len())
                    .find(|&i| !body[i].is_ascii_digit())
                    .unwrap_or(body.len());
                body.splice(at..end, rng.pick(&tokens[..4]).iter().copied());
            }
        }
        // Byte mutations of the body.
        _ => {
            let bodies: Vec<Vec<u8>> = seeds.iter().map(|s| checks::metadata_file(s)).collect();
            mutate::mutate_once(rng, &mut body, &bodies);
        }
    }
    *input = vec![1];
    input.extend_from_slice(&checks::header_for(&body));
    input.extend_from_slice(&body);
}

#[test]
fn metadata_json_survives_mutated_files() {
    let tmp = scratch("fuzz-meta");
    let seeds = checks::metadata_seeds(&tmp.path().join("seeds"));
    let data_dir = tmp.path().join("data");
    let seed = mutate::seed(0x3e7a);
    let mut opened = 0;
    let mut check = |data: &[u8]| {
        opened += usize::from(checks::metadata_json(
            &data_dir,
            &checks::metadata_file(data),
        ));
    };
    // Raw byte mutations (the checksum mostly fails, or the flag fixes it up)...
    mutate::run(
        "metadata_json",
        seed,
        mutate::cases(1500),
        &seeds,
        &mut check,
    );
    // ... and edits that keep the checksum right, to reach the JSON parser.
    let mut rng = Rng::new(seed ^ 1);
    let n = mutate::cases(1500);
    for i in 0..n {
        let mut input = rng.pick(&seeds).clone();
        for _ in 0..=rng.below(2) {
            mutate_json(&mut rng, &mut input, &seeds);
        }
        mutate::case_start("metadata_json", seed ^ 1, i, &input);
        check(&input);
        mutate::case_done();
    }
    eprintln!(
        "metadata_json: {opened} of {} files opened",
        seeds.len() + 2 * n
    );
    assert!(
        opened > n / 10,
        "the mutations no longer reach the JSON parser"
    );
}

/// Found by `metadata_json`: a metadata file with a right checksum and `"version":
/// 18446744073709551615` opens, and the next command overflows `version += 1` in
/// `MetadataState::apply` (a panic with overflow checks; version 0 again in release builds).
/// `open` should refuse a version that cannot grow, or `apply` should fail the command.
/// Fixed: open refuses a version that cannot grow (the file is damaged), and `apply` never wraps.
#[test]
fn metadata_version_overflows_on_next_change() {
    let body: &[u8] = br#"{"version":18446744073709551615,"topics":{},"producer_ids_reserved":0}"#;
    let tmp = scratch("fuzz-meta-repro");
    let mut file = checks::header_for(body);
    file.extend_from_slice(body);
    std::fs::create_dir_all(tmp.path().join("meta")).unwrap();
    std::fs::write(tmp.path().join("meta/metadata.json"), &file).unwrap();
    let Ok(mut store) = FileMetadataStore::open(tmp.path()) else {
        return; // refused at open: fixed
    };
    let before = store.state().version;
    if let Ok(s) = store.submit(MetadataCommand::ReserveProducerIds { up_to: 1 }) {
        assert!(
            s.version > before,
            "the version went from {before} to {}",
            s.version
        );
    }
}

/// Writes the seeds of the broker's cargo-fuzz targets into `$QUIVER_FUZZ_SEEDS/<target>/`
/// (what `scripts/fuzz.sh` does before fuzzing; nothing is checked in).
#[test]
#[ignore = "writes files; run by scripts/fuzz.sh"]
fn write_fuzz_seeds() {
    let out = PathBuf::from(std::env::var("QUIVER_FUZZ_SEEDS").expect("set QUIVER_FUZZ_SEEDS"));
    let tmp = scratch("fuzz-meta-seeds");
    for (target, seeds) in [
        ("offsets_records", checks::records_seeds()),
        (
            "metadata_json",
            checks::metadata_seeds(&tmp.path().join("s")),
        ),
    ] {
        write_seeds(&out.join(target), &seeds);
    }
}

fn write_seeds(dir: &Path, seeds: &[Vec<u8>]) {
    std::fs::create_dir_all(dir).unwrap();
    for (i, s) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:03}")), s).unwrap();
    }
}
