//! The nemesis: which faults happen when, drawn from a seed so that a seed replays the same
//! schedule, and what each fault does to the lab.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::relay::Impairment;

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL a broker; start it again after the fault's length.
    Kill,
    /// SIGSTOP a broker for longer than the group session timeout, then SIGCONT.
    Pause,
    /// Cut the clients off from a broker (nftables in its namespace drops their datagrams).
    Partition,
    /// Drop a share of the datagrams reaching a broker (nftables `numgen random`).
    Loss,
    /// Delay every datagram (the relay).
    Delay,
    /// Send a share of the datagrams twice (the relay).
    Duplicate,
    /// Delay datagrams by random amounts so that they overtake each other (the relay).
    Reorder,
    /// Fill the broker's filesystem (a loop-mounted ext4) to the last block.
    DiskFull,
    /// SIGKILL a consumer group member without it leaving the group (its connection is cut).
    KillConsumer,
    /// SIGKILL a broker and lose every write no completed fdatasync covered (each segment cut
    /// back to its size at its last fdatasync, from the broker's sync journal), as a loss of
    /// power would; start it again after the fault's length.
    PowerLoss,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 10] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::Loss,
        FaultKind::Delay,
        FaultKind::Duplicate,
        FaultKind::Reorder,
        FaultKind::DiskFull,
        FaultKind::KillConsumer,
        FaultKind::PowerLoss,
    ];

    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::Loss => "loss",
            FaultKind::Delay => "delay",
            FaultKind::Duplicate => "duplicate",
            FaultKind::Reorder => "reorder",
            FaultKind::DiskFull => "disk-full",
            FaultKind::KillConsumer => "kill-consumer",
            FaultKind::PowerLoss => "power-loss",
        }
    }

    /// Whether it needs network namespaces and nftables.
    pub fn needs_nft(self) -> bool {
        matches!(self, FaultKind::Partition | FaultKind::Loss)
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FaultKind {
    type Err = String;
    fn from_str(s: &str) -> Result<FaultKind, String> {
        FaultKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown fault {s:?}; known: {}", names.join(", "))
            })
    }
}

/// One scheduled fault.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Fault {
    /// What.
    pub kind: FaultKind,
    /// On which broker (from 1), or which consumer member (from 0) for `KillConsumer`.
    pub target: u32,
    /// When it starts, from the start of the run.
    pub at: Duration,
    /// How long it lasts (for `Kill`: how long the broker stays down).
    pub length: Duration,
    /// Its strength: percent for loss and duplication, milliseconds for delay and reordering.
    pub amount: u64,
}

impl Fault {
    /// What the relay does during the fault (relay faults only).
    pub fn impairment(&self) -> Option<Impairment> {
        let mut i = Impairment::default();
        match self.kind {
            FaultKind::Delay => {
                i.delay_ms = self.amount;
                i.jitter_ms = self.amount / 10;
            }
            FaultKind::Duplicate => i.duplicate_pct = self.amount as u32,
            FaultKind::Reorder => i.jitter_ms = self.amount,
            _ => return None,
        }
        Some(i)
    }

    /// The nftables rule of the fault (filter faults only), matching datagrams from `clients`
    /// (the clients' own address and the relay's).
    pub fn filter_rule(&self, clients: &[std::net::IpAddr]) -> Option<String> {
        let set: Vec<String> = clients.iter().map(|c| c.to_string()).collect();
        let from = format!("ip saddr {{ {} }}", set.join(", "));
        match self.kind {
            FaultKind::Partition => Some(format!("{from} drop")),
            FaultKind::Loss => Some(format!(
                "{from} numgen random mod 100 < {} drop",
                self.amount
            )),
            _ => None,
        }
    }
}

/// Draws the faults of a run of `duration` from `seed`: one at a time, separated by quiet gaps
/// of 1 to 4 s, none starting in the last 5 s (the run ends healed). The same arguments give the
/// same schedule.
pub fn schedule(
    seed: u64,
    duration: Duration,
    kinds: &[FaultKind],
    brokers: u32,
    consumers: u32,
) -> Vec<Fault> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut faults = Vec::new();
    if kinds.is_empty() {
        return faults;
    }
    let end = duration.saturating_sub(Duration::from_secs(5));
    let mut t = Duration::from_millis(rng.gen_range(1_000..3_000));
    while t < end {
        let kind = kinds[rng.gen_range(0..kinds.len())];
        let ms = |rng: &mut StdRng, lo: u64, hi: u64| Duration::from_millis(rng.gen_range(lo..=hi));
        let (length, amount) = match kind {
            FaultKind::Kill | FaultKind::PowerLoss => (ms(&mut rng, 200, 3_000), 0),
            // Longer than the run's group session timeout (6 s).
            FaultKind::Pause => (ms(&mut rng, 6_500, 9_000), 0),
            FaultKind::Partition => (ms(&mut rng, 1_000, 8_000), 0),
            FaultKind::Loss => (ms(&mut rng, 2_000, 8_000), rng.gen_range(10..=40)),
            FaultKind::Delay => (ms(&mut rng, 2_000, 8_000), rng.gen_range(20..=150)),
            FaultKind::Duplicate => (ms(&mut rng, 2_000, 8_000), rng.gen_range(10..=40)),
            FaultKind::Reorder => (ms(&mut rng, 2_000, 8_000), rng.gen_range(5..=40)),
            FaultKind::DiskFull => (ms(&mut rng, 1_000, 5_000), 0),
            FaultKind::KillConsumer => (ms(&mut rng, 500, 4_000), 0),
        };
        let target = match kind {
            FaultKind::KillConsumer => rng.gen_range(0..consumers.max(1)),
            _ => rng.gen_range(1..=brokers.max(1)),
        };
        faults.push(Fault {
            kind,
            target,
            at: t,
            length,
            amount,
        });
        t += length + ms(&mut rng, 1_000, 4_000);
    }
    faults
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_the_same_schedule_and_another_seed_does_not() {
        let kinds = FaultKind::ALL;
        let a = schedule(42, Duration::from_secs(120), &kinds, 1, 2);
        let b = schedule(42, Duration::from_secs(120), &kinds, 1, 2);
        let c = schedule(43, Duration::from_secs(120), &kinds, 1, 2);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.len() >= 8, "{}", a.len());
    }

    #[test]
    fn faults_do_not_overlap_and_end_before_the_run_does() {
        for seed in 0..50 {
            let d = Duration::from_secs(60);
            let s = schedule(seed, d, &FaultKind::ALL, 3, 2);
            for w in s.windows(2) {
                assert!(w[0].at + w[0].length < w[1].at, "seed {seed}: {w:?}");
            }
            for f in &s {
                assert!(f.at < d - Duration::from_secs(5), "seed {seed}: {f:?}");
                match f.kind {
                    FaultKind::KillConsumer => assert!(f.target < 2),
                    _ => assert!((1..=3).contains(&f.target)),
                }
                if f.kind == FaultKind::Pause {
                    assert!(f.length > Duration::from_secs(6));
                }
            }
        }
    }

    #[test]
    fn only_the_kinds_asked_for() {
        let s = schedule(7, Duration::from_secs(300), &[FaultKind::Kill], 1, 0);
        assert!(!s.is_empty());
        assert!(s.iter().all(|f| f.kind == FaultKind::Kill));
        assert!(schedule(7, Duration::from_secs(300), &[], 1, 0).is_empty());
    }

    #[test]
    fn names_parse_back_and_unknown_names_are_refused() {
        for k in FaultKind::ALL {
            assert_eq!(k.name().parse::<FaultKind>(), Ok(k));
        }
        let e = "flood".parse::<FaultKind>().unwrap_err();
        assert!(e.contains("kill, pause"), "{e}");
    }

    #[test]
    fn each_fault_says_what_it_does() {
        let f = |kind, amount| Fault {
            kind,
            target: 1,
            at: Duration::ZERO,
            length: Duration::from_secs(1),
            amount,
        };
        let client: &[std::net::IpAddr] =
            &["198.18.0.1".parse().unwrap(), "198.18.0.2".parse().unwrap()];
        assert_eq!(
            f(FaultKind::Loss, 30).filter_rule(client).unwrap(),
            "ip saddr { 198.18.0.1, 198.18.0.2 } numgen random mod 100 < 30 drop"
        );
        assert_eq!(
            f(FaultKind::Partition, 0).filter_rule(client).unwrap(),
            "ip saddr { 198.18.0.1, 198.18.0.2 } drop"
        );
        assert_eq!(f(FaultKind::Delay, 50).impairment().unwrap().delay_ms, 50);
        assert_eq!(
            f(FaultKind::Duplicate, 20)
                .impairment()
                .unwrap()
                .duplicate_pct,
            20
        );
        assert_eq!(
            f(FaultKind::Reorder, 30).impairment().unwrap().jitter_ms,
            30
        );
        assert!(f(FaultKind::Kill, 0).impairment().is_none());
        assert!(f(FaultKind::Kill, 0).filter_rule(client).is_none());
    }
}
