//! proto's fuzz targets as ordinary tests: the seed inputs plus a few thousand deterministic
//! mutations of them (bit flips, truncations, splices...) through the same checks as the
//! cargo-fuzz targets (`proto/fuzz/`, run for a bounded time by `scripts/fuzz.sh`). These run
//! everywhere `cargo test` does, stable toolchain included. How to replay a failure:
//! `fuzz_support/mutate.rs`.

#[path = "fuzz_support/checks.rs"]
mod checks;
#[path = "fuzz_support/mutate.rs"]
mod mutate;

use quiver_proto::api::{AnyRequest, ApiKey};

#[test]
fn batch_reader_survives_mutated_batches() {
    let seeds = checks::batch_seeds();
    let n = mutate::run(
        "batch_reader",
        mutate::seed(0xba7c4),
        mutate::cases(5000),
        &seeds,
        checks::batch_reader,
    );
    assert!(n > seeds.len());
}

#[test]
fn frame_decode_survives_mutated_frames() {
    let seeds = checks::frame_seeds();
    mutate::run(
        "frame_decode",
        mutate::seed(0xf4a3e),
        mutate::cases(5000),
        &seeds,
        checks::frame_decode,
    );
}

#[test]
fn request_decode_survives_mutated_bodies() {
    let seeds = checks::request_seeds();
    mutate::run(
        "request_decode",
        mutate::seed(0x4e9dec),
        mutate::cases(5000),
        &seeds,
        checks::request_decode,
    );
}

/// The seeds themselves decode, each as its own API's request only: so the mutations above
/// start from bodies that reach every decoder.
#[test]
fn every_seed_request_decodes_as_itself() {
    for req in checks::seed_requests() {
        let body = req.encode();
        assert_eq!(AnyRequest::decode(req.api(), &body).as_ref(), Ok(&req));
    }
    for &api in ApiKey::ALL {
        assert_eq!(checks::default_request(api).api(), api);
        assert_eq!(checks::default_response(api).api(), api);
    }
}

/// Writes the seeds of proto's cargo-fuzz targets into `$QUIVER_FUZZ_SEEDS/<target>/` (what
/// `scripts/fuzz.sh` does before fuzzing; nothing is checked in).
#[test]
#[ignore = "writes files; run by scripts/fuzz.sh"]
fn write_fuzz_seeds() {
    let dir = std::env::var("QUIVER_FUZZ_SEEDS").expect("set QUIVER_FUZZ_SEEDS");
    for (target, seeds) in [
        ("batch_reader", checks::batch_seeds()),
        ("frame_decode", checks::frame_seeds()),
        ("request_decode", checks::request_seeds()),
    ] {
        let d = std::path::Path::new(&dir).join(target);
        std::fs::create_dir_all(&d).unwrap();
        for (i, s) in seeds.iter().enumerate() {
            std::fs::write(d.join(format!("seed-{i:03}")), s).unwrap();
        }
    }
}
