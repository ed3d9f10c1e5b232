//! Deterministic input mutation for the cheap fuzz tests (`cargo test`), shared by proto, engine
//! and broker tests (`#[path]`-included, so it has no dependencies). The cargo-fuzz targets run
//! the same checks under libFuzzer (`scripts/fuzz.sh`); these tests run them everywhere, on the
//! seed inputs plus a few thousand mutations of them, from a fixed seed.
//!
//! Reproducing a failure: the panic message is preceded by a line naming the target, the seed
//! and the case number, and the failing input is written to
//! `<target dir>/tmp/fuzz-failures/<target>-<seed>-<case>` (or under `QUIVER_FUZZ_FAILURES`).
//! Rerun with `QUIVER_FUZZ_SEED=<seed>` to replay the same sequence, or feed the file to the
//! cargo-fuzz target (scripts/fuzz.sh prints the command). `QUIVER_FUZZ_CASES=<n>` changes the
//! number of mutated cases (more for a longer run by hand).
#![allow(dead_code)]

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::Once;

/// SplitMix64: tiny, seedable and the same on every platform and Rust version, so a seed
/// printed by a failing run replays the same inputs anywhere.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability 1/n.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// The seed of a run: `QUIVER_FUZZ_SEED` if set, else `default`.
pub fn seed(default: u64) -> u64 {
    match std::env::var("QUIVER_FUZZ_SEED") {
        Ok(s) => s.parse().expect("QUIVER_FUZZ_SEED is a u64"),
        Err(_) => default,
    }
}

/// The number of mutated cases of a run: `QUIVER_FUZZ_CASES` if set, else `default`.
pub fn cases(default: usize) -> usize {
    match std::env::var("QUIVER_FUZZ_CASES") {
        Ok(s) => s.parse().expect("QUIVER_FUZZ_CASES is a count"),
        Err(_) => default,
    }
}

/// Values that often sit on a boundary of a length or count check.
const INTERESTING_U32: [u32; 10] = [
    0,
    1,
    7,
    63,
    64,
    255,
    4096,
    0x7fff_ffff,
    0x8000_0000,
    u32::MAX,
];

/// One random mutation of `data`, with `others` (valid inputs) as material for splices.
pub fn mutate_once(rng: &mut Rng, data: &mut Vec<u8>, others: &[Vec<u8>]) {
    let len = data.len();
    match rng.below(10) {
        // Flip one to four bits.
        0 if len > 0 => {
            for _ in 0..=rng.below(4) {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
        }
        // Set a byte to a boundary value or a random one.
        1 if len > 0 => {
            let i = rng.below(len);
            let random = rng.next_u64() as u8;
            data[i] = *rng.pick(&[0u8, 1, 0x7f, 0x80, 0xfe, 0xff, random]);
        }
        // Cut the tail.
        2 if len > 0 => data.truncate(rng.below(len)),
        // Cut the head.
        3 if len > 0 => {
            data.drain(..rng.below(len));
        }
        // Splice: a prefix of this input and a suffix of another (or of itself).
        4 => {
            let other = if others.is_empty() {
                data.clone()
            } else {
                rng.pick(others).clone()
            };
            let at = rng.below(len + 1);
            let from = rng.below(other.len() + 1);
            data.truncate(at);
            data.extend_from_slice(&other[from..]);
        }
        // Insert random bytes.
        5 => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(16);
            let bytes = rng.bytes(n);
            data.splice(at..at, bytes);
        }
        // Duplicate a chunk (a repeated batch, entry or record).
        6 if len > 0 => {
            let from = rng.below(len);
            let n = 1 + rng.below((len - from).min(256));
            let chunk = data[from..from + n].to_vec();
            let at = rng.below(len + 1);
            data.splice(at..at, chunk);
        }
        // Delete a chunk.
        7 if len > 0 => {
            let from = rng.below(len);
            let n = 1 + rng.below((len - from).min(64));
            data.drain(from..from + n);
        }
        // Overwrite a little-endian u32 with a boundary value (lengths, counts, offsets).
        8 if len >= 4 => {
            let i = rng.below(len - 3);
            let mut v = *rng.pick(&INTERESTING_U32);
            if rng.one_in(3) {
                v = v.wrapping_add(rng.below(3) as u32).wrapping_sub(1);
            }
            data[i..i + 4].copy_from_slice(&v.to_le_bytes());
        }
        // Random bytes of a random length.
        _ => {
            let n = rng.below(128);
            *data = rng.bytes(n);
        }
    }
}

/// A mutated copy of one of `seeds`: one to three stacked mutations.
pub fn mutated(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data = if seeds.is_empty() {
        Vec::new()
    } else {
        rng.pick(seeds).clone()
    };
    for _ in 0..=rng.below(3) {
        mutate_once(rng, &mut data, seeds);
    }
    data
}

struct Current {
    target: String,
    seed: u64,
    case: usize,
    input: Vec<u8>,
}

thread_local! {
    static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// Where failing inputs are written.
fn failure_dir() -> PathBuf {
    match std::env::var_os("QUIVER_FUZZ_FAILURES") {
        Some(d) => PathBuf::from(d),
        None => option_env!("CARGO_TARGET_TMPDIR")
            .map_or_else(std::env::temp_dir, PathBuf::from)
            .join("fuzz-failures"),
    }
}

/// Records the case about to run on this thread, so that a panic while it runs prints how to
/// replay it and saves the input. Cleared by [`case_done`].
pub fn case_start(target: &str, seed: u64, case: usize, input: &[u8]) {
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            CURRENT.with(|c| {
                if let Some(c) = c.borrow().as_ref() {
                    let dir = failure_dir();
                    let file = dir.join(format!("{}-{}-{}", c.target, c.seed, c.case));
                    let saved = std::fs::create_dir_all(&dir)
                        .and_then(|()| std::fs::write(&file, &c.input))
                        .map(|()| file.display().to_string())
                        .unwrap_or_else(|e| format!("(not saved: {e})"));
                    let hex: String = c
                        .input
                        .iter()
                        .take(256)
                        .map(|b| format!("{b:02x}"))
                        .collect();
                    eprintln!(
                        "fuzz target {} failed on case {} of seed {} (QUIVER_FUZZ_SEED={} \
                         replays it); input of {} bytes saved to {saved}; first bytes: {hex}",
                        c.target,
                        c.case,
                        c.seed,
                        c.seed,
                        c.input.len()
                    );
                }
            });
            default(info);
        }));
    });
    CURRENT.with(|c| {
        *c.borrow_mut() = Some(Current {
            target: target.to_string(),
            seed,
            case,
            input: input.to_vec(),
        })
    });
}

/// The case started last on this thread ended without a panic.
pub fn case_done() {
    CURRENT.with(|c| *c.borrow_mut() = None);
}

/// Runs `check` on every seed, then on `n` mutations of them (case numbers after the seeds').
/// Returns the number of inputs checked.
pub fn run(
    target: &str,
    seed: u64,
    n: usize,
    seeds: &[Vec<u8>],
    mut check: impl FnMut(&[u8]),
) -> usize {
    for (i, s) in seeds.iter().enumerate() {
        case_start(target, seed, i, s);
        check(s);
        case_done();
    }
    let mut rng = Rng::new(seed);
    for i in 0..n {
        let input = mutated(&mut rng, seeds);
        case_start(target, seed, seeds.len() + i, &input);
        check(&input);
        case_done();
    }
    seeds.len() + n
}
