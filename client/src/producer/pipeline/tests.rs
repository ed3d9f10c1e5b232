//! Every retry, split and fencing case of one partition, as tables: each case is a sequence of
//! events (batches made, the sender looking, answers) and the trace of what the pipeline did.
//!
//! Trace lines:
//! - `r2: b3 e0s5, b4 e0s7`: the sender made request 2 of batches 3 and 4, stamped epoch 0 and
//!   first sequences 5 and 7 (no stamps without idempotence); `(request full)`: a ready batch
//!   did not fit.
//! - `wait +100ms`, `wait for answers`, `idle`: the sender sent nothing, and why.
//! - `b3 written at 10`, `b3 written, offset unknown`, `b3 failed: MessageTooLarge`,
//!   `b3 expired`, `b3 dropped (empty)`: what a batch's records are told.
//! - `again in 100ms: b3 b4` (after a backoff), `again in order: b3` (a sequence refusal: as
//!   soon as the batches before are answered), `again alone: b3 b4` (split, each in a request
//!   of its own).
//!
//! References: ARCHITECTURE.md, "Idempotent producers"; KIP-98 (idempotent producer) for
//! sequences and epochs; Kafka's `max.in.flight.requests.per.connection` for the order rule.

use std::fmt::Write;

use super::*;
use crate::transport::TransportError;

/// A batch of this many records, 1,000 bytes.
struct Records(usize);

impl Payload for Records {
    fn records(&self) -> usize {
        self.0
    }
    fn bytes(&self) -> usize {
        1000
    }
}

const LINGER: Duration = Duration::from_millis(5);
const DELIVERY_TIMEOUT: Duration = Duration::from_millis(1000);
const BACKOFF: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_millis(400);

#[derive(Clone, Copy)]
struct Setup {
    idempotent: bool,
    max_in_flight: usize,
    retries: u32,
    request_bytes_max: usize,
    /// The producer has its id (epoch 0) from the start.
    has_id: bool,
}

const IDEMPOTENT: Setup = Setup {
    idempotent: true,
    max_in_flight: 5,
    retries: u32::MAX,
    request_bytes_max: 1 << 20,
    has_id: true,
};

const PLAIN: Setup = Setup {
    idempotent: false,
    ..IDEMPOTENT
};

#[derive(Clone, Copy)]
enum Ev {
    /// `send` makes a batch of this many records and fills it (ready at once).
    Batch(usize),
    /// `send` makes a batch of this many records and leaves it open (ready after linger).
    Open(usize),
    /// This many full batches of this many records.
    Batches(usize, u32),
    /// Milliseconds pass.
    Sleep(u64),
    /// A flush: every batch made so far is ready.
    Flush,
    /// The producer closes: every batch is ready.
    Close,
    /// The producer gets its id (epoch 0).
    Id,
    /// The sender looks at the partition and makes at most one request of it.
    Send,
    /// Request `r` is answered: written at this base offset.
    Written(usize, u64),
    /// Request `r`'s batches of the partition are refused with this code.
    Refused(usize, ErrorCode),
    /// Request `r` got no answer: the connection was lost.
    Lost(usize),
    /// Request `r`'s batches could not be built (sealed), so none was sent.
    Unbuilt(usize),
    /// A close ran out of time: every queued batch fails (`close_timeout`).
    Abandon,
}

use Ev::*;

struct Case {
    name: &'static str,
    setup: Setup,
    events: &'static [Ev],
    expect: &'static str,
}

/// Runs every case and fails with the ones whose trace differs.
fn check(cases: &[Case]) {
    let mut failed = String::new();
    for case in cases {
        let got = run(case.setup, case.events);
        let want: Vec<&str> = case
            .expect
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let got: Vec<&str> = got.lines().collect();
        if got != want {
            let _ = writeln!(
                failed,
                "case '{}'\n--- expected\n{}\n--- got\n{}\n",
                case.name,
                want.join("\n"),
                got.join("\n")
            );
        }
    }
    assert!(failed.is_empty(), "\n{failed}");
}

fn run(setup: Setup, events: &[Ev]) -> String {
    let mut now = Instant::now();
    let mut p = PartitionPipeline::<Records>::default();
    let mut next_id = 1;
    let mut flush_upto = 0;
    let mut closing = false;
    let mut has_id = setup.has_id;
    let policy = RetryPolicy {
        retries: setup.retries,
        backoff: BACKOFF,
        backoff_max: BACKOFF_MAX,
    };
    let mut requests: Vec<Option<(u64, Vec<Queued<Records>>)>> = Vec::new();
    let mut trace = String::new();
    for &ev in events {
        let mut push = |records: usize, full: bool| {
            p.push(next_id, now, now + DELIVERY_TIMEOUT, Records(records));
            p.last_mut().expect("pushed").full = full;
            next_id += 1;
        };
        match ev {
            Batch(n) => push(n, true),
            Open(n) => push(n, false),
            Batches(count, n) => (0..count).for_each(|_| push(n as usize, true)),
            Sleep(ms) => now += Duration::from_millis(ms),
            Flush => flush_upto = next_id - 1,
            Close => closing = true,
            Id => has_id = true,
            Send => {
                let turn = Turn {
                    now,
                    linger: LINGER,
                    flush_upto,
                    closing,
                    idempotent: setup.idempotent,
                    producer_epoch: has_id.then_some(0),
                    max_in_flight: setup.max_in_flight,
                };
                send(&mut trace, &mut p, &turn, setup, &mut requests);
            }
            Written(r, base) => {
                let outcome = Outcome::Written {
                    base: Some(Offset(base)),
                    log_append_time: None,
                };
                let request = answered(&mut requests, r);
                answer(&mut trace, &mut p, request, Some(outcome), &policy, now);
            }
            Refused(r, code) => {
                let outcome = Outcome::Failed(Error::broker(code, None));
                let request = answered(&mut requests, r);
                answer(&mut trace, &mut p, request, Some(outcome), &policy, now);
            }
            Lost(r) => {
                let lost = TransportError::ConnectionLost("reset by peer".into());
                let outcome = Outcome::Failed(Error::from(lost));
                let request = answered(&mut requests, r);
                answer(&mut trace, &mut p, request, Some(outcome), &policy, now);
            }
            Unbuilt(r) => {
                let request = answered(&mut requests, r);
                answer(&mut trace, &mut p, request, None, &policy, now);
            }
            Abandon => {
                let mut gone = Vec::new();
                p.abandon(&mut gone);
                for b in gone {
                    let _ = writeln!(trace, "b{} abandoned", b.id);
                }
            }
        }
    }
    trace
}

type Request = (u64, Vec<Queued<Records>>);

fn answered(requests: &mut [Option<Request>], r: usize) -> Request {
    requests[r - 1].take().expect("a request is answered once")
}

/// The sender's turn at the partition: what `collect` does for it.
fn send(
    trace: &mut String,
    p: &mut PartitionPipeline<Records>,
    turn: &Turn,
    setup: Setup,
    requests: &mut Vec<Option<Request>>,
) {
    let mut gone = Vec::new();
    let ready = p.prepare(turn, &mut gone);
    for b in &gone {
        let what = if b.batch.0 == 0 {
            "dropped (empty)"
        } else {
            "expired"
        };
        let _ = writeln!(trace, "b{} {what}", b.id);
    }
    match ready {
        Ready::Send => {
            let mut bytes = 0;
            let mut out = Vec::new();
            let taken = p.take(turn, &mut bytes, setup.request_bytes_max, &mut out);
            let Some((first, count)) = taken.first else {
                let _ = writeln!(trace, "nothing taken");
                return;
            };
            assert_eq!((first, count), (out[0].id, out.len()));
            let full = if taken.request_full {
                " (request full)"
            } else {
                ""
            };
            let _ = writeln!(
                trace,
                "r{}: {}{full}",
                requests.len() + 1,
                request_line(&out)
            );
            requests.push(Some((first, out)));
        }
        Ready::At(at) => {
            let _ = writeln!(trace, "wait +{}ms", (at - turn.now).as_millis());
        }
        Ready::Answer => trace.push_str("wait for answers\n"),
        Ready::Idle => trace.push_str("idle\n"),
    }
}

/// What the request task does with an answer (`None`: its batches could not be built).
fn answer(
    trace: &mut String,
    p: &mut PartitionPipeline<Records>,
    (first, batches): Request,
    outcome: Option<Outcome>,
    policy: &RetryPolicy,
    now: Instant,
) {
    let mut a = Answered::new(first);
    let Some(outcome) = outcome else {
        for b in &batches {
            a.not_sent(b);
            let _ = writeln!(trace, "b{} failed: not built", b.id);
        }
        p.settle(a);
        return;
    };
    let ids: Vec<String> = batches.iter().map(|b| format!("b{}", b.id)).collect();
    let mut done = Vec::new();
    let verdict = a.answer(batches, &outcome, policy, now, &mut done);
    trace_decided(trace, &done);
    if let Verdict::Again { backoff, alone, .. } = verdict {
        let how = match (backoff, alone) {
            (Some(b), _) => format!("in {}ms", b.as_millis()),
            (None, true) => "alone".to_string(),
            (None, false) => "in order".to_string(),
        };
        let _ = writeln!(trace, "again {how}: {}", ids.join(" "));
    }
    p.settle(a);
}

fn stamp(b: &Queued<Records>) -> String {
    match b.seq {
        Some((epoch, seq)) => format!("b{} e{epoch}s{seq}", b.id),
        None => format!("b{}", b.id),
    }
}

fn request_line(batches: &[Queued<Records>]) -> String {
    if batches.len() > 4 {
        let (first, last) = (&batches[0], &batches[batches.len() - 1]);
        return format!(
            "{} .. {} ({} batches)",
            stamp(first),
            stamp(last),
            batches.len()
        );
    }
    let all: Vec<String> = batches.iter().map(stamp).collect();
    all.join(", ")
}

fn trace_decided(trace: &mut String, done: &[Decided<Records>]) {
    let all_written = done
        .iter()
        .all(|d| matches!(d.outcome, Outcome::Written { base: Some(_), .. }));
    if done.len() > 4 && all_written {
        let Outcome::Written { base: Some(b), .. } = done[0].outcome else {
            unreachable!("all written");
        };
        let last = done[done.len() - 1].id;
        let _ = writeln!(trace, "b{} .. b{last} written from {}", done[0].id, b.0);
        return;
    }
    for d in done {
        let _ = match &d.outcome {
            Outcome::Written { base: Some(o), .. } => {
                writeln!(trace, "b{} written at {}", d.id, o.0)
            }
            Outcome::Written { base: None, .. } => {
                writeln!(trace, "b{} written, offset unknown", d.id)
            }
            Outcome::Failed(e) => {
                let why = e.code().map_or("transport", ErrorCode::name);
                writeln!(trace, "b{} failed: {why}", d.id)
            }
        };
    }
}

#[test]
fn batches_are_numbered_and_sent_in_order() {
    check(&[
        Case {
            name: "sequences count records, from 0, in the order batches were made",
            setup: IDEMPOTENT,
            events: &[Batch(3), Batch(2), Send, Written(1, 10), Batch(4), Send],
            expect: "
                r1: b1 e0s0, b2 e0s3
                b1 written at 10
                b2 written at 13
                r2: b3 e0s5
            ",
        },
        Case {
            name: "without idempotence nothing is stamped",
            setup: PLAIN,
            events: &[Batch(3), Batch(2), Send, Written(1, 0)],
            expect: "
                r1: b1, b2
                b1 written at 0
                b2 written at 3
            ",
        },
        Case {
            name: "an open batch waits for linger, unless a flush or close makes it ready",
            setup: IDEMPOTENT,
            events: &[
                Open(1),
                Send,
                Flush,
                Send,
                Open(1),
                Send,
                Close,
                Send,
                Open(1),
                Sleep(5),
                Send,
            ],
            expect: "
                wait +5ms
                r1: b1 e0s0
                wait +5ms
                r2: b2 e0s1
                r3: b3 e0s2
            ",
        },
        Case {
            name: "a batch is ready once another opens behind it; the open one waits",
            setup: IDEMPOTENT,
            events: &[Open(1), Open(1), Send, Send, Sleep(5), Send],
            expect: "
                r1: b1 e0s0
                wait +5ms
                r2: b2 e0s1
            ",
        },
        Case {
            name: "a request holds what fits; its first batch always fits",
            setup: Setup {
                request_bytes_max: 2500,
                ..IDEMPOTENT
            },
            events: &[Batch(1), Batch(1), Batch(1), Send, Send],
            expect: "
                r1: b1 e0s0, b2 e0s1 (request full)
                r2: b3 e0s2
            ",
        },
        Case {
            name: "an empty batch (its only record failed to append) is dropped",
            setup: IDEMPOTENT,
            events: &[Batch(0), Batch(1), Send],
            expect: "
                b1 dropped (empty)
                r1: b2 e0s0
            ",
        },
    ]);
}

#[test]
fn requests_in_flight_are_bounded() {
    check(&[
        Case {
            name: "without idempotence a partition has one request in flight",
            setup: PLAIN,
            events: &[Batch(1), Send, Batch(1), Send, Written(1, 0), Send],
            expect: "
                r1: b1
                wait for answers
                b1 written at 0
                r2: b2
            ",
        },
        Case {
            name: "with idempotence, max_in_flight requests of a partition",
            setup: IDEMPOTENT,
            events: &[
                Batch(1),
                Send,
                Batch(1),
                Send,
                Batch(1),
                Send,
                Batch(1),
                Send,
                Batch(1),
                Send,
                Batch(1),
                Send,
                Written(1, 0),
                Send,
            ],
            expect: "
                r1: b1 e0s0
                r2: b2 e0s1
                r3: b3 e0s2
                r4: b4 e0s3
                r5: b5 e0s4
                wait for answers
                b1 written at 0
                r6: b6 e0s5
            ",
        },
        Case {
            name: "at most IDEMPOTENT_BATCHES_KEPT (32) batches unanswered",
            setup: IDEMPOTENT,
            events: &[
                Batches(20, 1),
                Send,
                Batches(13, 1),
                Send,
                Send,
                Written(1, 0),
                Send,
            ],
            expect: "
                r1: b1 e0s0 .. b20 e0s19 (20 batches)
                r2: b21 e0s20 .. b32 e0s31 (12 batches)
                wait for answers
                b1 .. b20 written from 0
                r3: b33 e0s32
            ",
        },
        Case {
            name: "an idempotent producer sends nothing before it has an id; an unnumbered \
                   batch that expires leaves no gap",
            setup: Setup {
                has_id: false,
                ..IDEMPOTENT
            },
            events: &[Batch(1), Send, Sleep(1000), Send, Id, Batch(1), Send],
            expect: "
                idle
                b1 expired
                idle
                r1: b2 e0s0
            ",
        },
    ]);
}

#[test]
fn retries() {
    check(&[
        Case {
            name: "a retriable error: again after a doubling backoff; a numbered batch alone, \
                   once nothing older is in flight",
            setup: IDEMPOTENT,
            events: &[
                Batch(1),
                Batch(1),
                Send,
                Refused(1, ErrorCode::NotLeaderOrFollower),
                Send,
                Sleep(100),
                Send,
                Send,
                Refused(2, ErrorCode::RequestTimedOut),
                Send,
                Sleep(200),
                Send,
                Written(3, 7),
                Send,
                Written(4, 8),
            ],
            expect: "
                r1: b1 e0s0, b2 e0s1
                again in 100ms: b1 b2
                wait +100ms
                r2: b1 e0s0
                wait for answers
                again in 200ms: b1
                wait +200ms
                r3: b1 e0s0
                b1 written at 7
                r4: b2 e0s1
                b2 written at 8
            ",
        },
        Case {
            name: "a lost connection is retried; without idempotence the batch goes back to \
                   the front and travels with the rest",
            setup: PLAIN,
            events: &[
                Batch(1),
                Send,
                Batch(1),
                Lost(1),
                Send,
                Sleep(100),
                Send,
                Written(2, 0),
            ],
            expect: "
                r1: b1
                again in 100ms: b1
                wait +100ms
                r2: b1, b2
                b1 written at 0
                b2 written at 1
            ",
        },
        Case {
            name: "requests that fail back put their batches back in the order made",
            setup: IDEMPOTENT,
            events: &[
                Batch(1),
                Send,
                Batch(1),
                Send,
                Lost(2),
                Lost(1),
                Sleep(100),
                Send,
                Send,
                Written(3, 0),
                Send,
            ],
            expect: "
                r1: b1 e0s0
                r2: b2 e0s1
                again in 100ms: b2
                again in 100ms: b1
                r3: b1 e0s0
                wait for answers
                b1 written at 0
                r4: b2 e0s1
            ",
        },
        Case {
            name: "the backoff doubles, up to retry_backoff_max, until the next attempt would \
                   end past the delivery timeout",
            setup: IDEMPOTENT,
            events: &[
                Batch(1),
                Send,
                Refused(1, ErrorCode::RequestTimedOut),
                Sleep(100),
                Send,
                Refused(2, ErrorCode::RequestTimedOut),
                Sleep(200),
                Send,
                Refused(3, ErrorCode::RequestTimedOut),
                Sleep(400),
                Send,
                Refused(4, ErrorCode::RequestTimedOut),
            ],
            expect: "
                r1: b1 e0s0
                again in 100ms: b1
                r2: b1 e0s0
                again in 200ms: b1
                r3: b1 e0s0
                again in 400ms: b1
                r4: b1 e0s0
                b1 failed: RequestTimedOut
            ",
        },
        Case {
            name: "a broker gone or a leader moving: tried again at the first backoff (the \
                   metadata refresh in between finds the new leader), until the delivery timeout",
            setup: IDEMPOTENT,
            events: &[
                Batch(1),
                Send,
                Lost(1),
                Sleep(100),
                Send,
                Refused(2, ErrorCode::NotLeaderOrFollower),
                Sleep(100),
                Send,
                Lost(3),
                Sleep(100),
                Send,
                Written(4, 0),
            ],
            expect: "
                r1: b1 e0s0
                again in 100ms: b1
                r2: b1 e0s0
                again in 100ms: b1
                r3: b1 e0s0
                again in 100ms: b1
                r4: b1 e0s0
                b1 written at 0
            ",
        },
        Case {
            name: "retries run out: the batch fails, and the partition moves to the next epoch",
            setup: Setup {
                retries: 1,
                ..IDEMPOTENT
            },
            events: &[
                Batch(1),
                Send,
                Refused(1, ErrorCode::NotLeaderOrFollower),
                Sleep(100),
                Send,
                Refused(2, ErrorCode::NotLeaderOrFollower),
                Batch(1),
                Send,
            ],
            expect: "
                r1: b1 e0s0
                again in 100ms: b1
                r2: b1 e0s0
                b1 failed: NotLeaderOrFollower
                r3: b2 e1s0
            ",
        },
        Case {
            name: "an error that is not retriable fails the batch at once",
            setup: PLAIN,
            events: &[Batch(1), Send, Refused(1, ErrorCode::InvalidTopic)],
            expect: "
                r1: b1
                b1 failed: InvalidTopic
            ",
        },
    ]);
}

#[test]
fn delivery_timeouts() {
    check(&[
        Case {
            name: "a retry that would end past the delivery timeout fails now",
            setup: IDEMPOTENT,
            events: &[
                Batch(1),
                Send,
                Sleep(950),
                Refused(1, ErrorCode::NotLeaderOrFollower),
                Batch(1),
                Send,
            ],
            expect: "
                r1: b1 e0s0
                b1 failed: NotLeaderOrFollower
                r2: b2 e1s0
            ",
        },
        Case {
            name: "queued batches past their delivery timeout expire, oldest first; a \
                   numbered one moves the partition to the next epoch",
            setup: IDEMPOTENT,
            events: &[
                Batch(1),
                Send,
                Refused(1, ErrorCode::NotLeaderOrFollower),
                Batch(1),
                Sleep(1000),
                Send,
                Batch(1),
                Send,
            ],
            expect: "
                r1: b1 e0s0
                again in 100ms: b1
                b1 expired
                b2 expired
                idle
                r2: b3 e1s0
            ",
        },
        Case {
            name: "a close that runs out of time fails the queued batches, not those in \
                   flight; the numbered ones leave a gap",
            setup: IDEMPOTENT,
            events: &[
                Batch(1),
                Send,
                Batch(1),
                Send,
                Refused(1, ErrorCode::NotLeaderOrFollower),
                Batch(1),
                Abandon,
                Written(2, 5),
                Batch(1),
                Send,
            ],
            expect: "
                r1: b1 e0s0
                r2: b2 e0s1
                again in 100ms: b1
                b1 abandoned
                b3 abandoned
                b2 written at 5
                r3: b4 e1s0
            ",
        },
        Case {
            name: "without idempotence an expired batch just fails",
            setup: PLAIN,
            events: &[Open(1), Sleep(1000), Batch(1), Send],
            expect: "
                b1 expired
                r1: b2
            ",
        },
    ]);
}

#[test]
fn sequence_refusals() {
    check(&[
        Case {
            name: "a request that overtook is refused out of order: again alone, no backoff, \
                   once the requests before it are answered; the epoch stays",
            setup: IDEMPOTENT,
            events: &[
                Batch(1),
                Send,
                Batch(1),
                Send,
                Refused(2, ErrorCode::OutOfOrderSequence),
                Send,
                Written(1, 0),
                Send,
                Written(3, 1),
            ],
            expect: "
                r1: b1 e0s0
                r2: b2 e0s1
                again in order: b2
                wait for answers
                b1 written at 0
                r3: b2 e0s1
                b2 written at 1
            ",
        },
        Case {
            name: "out of order with nothing older unanswered: the broker lost the producer's \
                   state, so the partition moves to the next epoch and numbers from 0",
            setup: IDEMPOTENT,
            events: &[
                Batch(1),
                Send,
                Written(1, 0),
                Batch(1),
                Batch(1),
                Send,
                Refused(2, ErrorCode::OutOfOrderSequence),
                Send,
                Send,
                Written(3, 5),
                Send,
            ],
            expect: "
                r1: b1 e0s0
                b1 written at 0
                r2: b2 e0s1, b3 e0s2
                again in order: b2 b3
                r3: b2 e1s0
                wait for answers
                b2 written at 5
                r4: b3 e1s1
            ",
        },
        Case {
            name: "the retry of a batch older than the kept window is refused as a duplicate: \
                   written once, offset unknown, not a gap",
            setup: IDEMPOTENT,
            events: &[
                Batch(1),
                Send,
                Lost(1),
                Sleep(100),
                Send,
                Refused(2, ErrorCode::DuplicateSequence),
                Batch(1),
                Send,
            ],
            expect: "
                r1: b1 e0s0
                again in 100ms: b1
                r2: b1 e0s0
                b1 written, offset unknown
                r3: b2 e0s1
            ",
        },
        Case {
            name: "batches refused together as duplicates go again, each alone, so that the \
                   answer's one offset is the batch's",
            setup: IDEMPOTENT,
            events: &[
                Batch(1),
                Batch(1),
                Send,
                Refused(1, ErrorCode::DuplicateSequence),
                Send,
                Send,
                Written(2, 0),
                Send,
            ],
            expect: "
                r1: b1 e0s0, b2 e0s1
                again in order: b1 b2
                r2: b1 e0s0
                wait for answers
                b1 written at 0
                r3: b2 e0s1
            ",
        },
        Case {
            name: "without idempotence a sequence error is an error like another",
            setup: PLAIN,
            events: &[Batch(1), Send, Refused(1, ErrorCode::OutOfOrderSequence)],
            expect: "
                r1: b1
                b1 failed: OutOfOrderSequence
            ",
        },
    ]);
}

#[test]
fn fencing() {
    check(&[
        Case {
            name: "InvalidProducerEpoch fails for good; the partition waits for its requests in \
                   flight, then moves to the next epoch and numbers from 0",
            setup: IDEMPOTENT,
            events: &[
                Batch(1),
                Send,
                Batch(1),
                Send,
                Batch(1),
                Refused(1, ErrorCode::InvalidProducerEpoch),
                Send,
                Written(2, 0),
                Send,
            ],
            expect: "
                r1: b1 e0s0
                r2: b2 e0s1
                b1 failed: InvalidProducerEpoch
                wait for answers
                b2 written at 0
                r3: b3 e1s0
            ",
        },
        Case {
            name: "UnknownProducerId fails for good and moves the partition to the next epoch",
            setup: IDEMPOTENT,
            events: &[
                Batch(2),
                Batch(1),
                Send,
                Refused(1, ErrorCode::UnknownProducerId),
                Batch(1),
                Send,
            ],
            expect: "
                r1: b1 e0s0, b2 e0s2
                b1 failed: UnknownProducerId
                b2 failed: UnknownProducerId
                r2: b3 e1s0
            ",
        },
        Case {
            name: "a batch that cannot be built fails, and moves the partition to the next epoch",
            setup: IDEMPOTENT,
            events: &[Batch(1), Batch(1), Send, Unbuilt(1), Batch(1), Send],
            expect: "
                r1: b1 e0s0, b2 e0s1
                b1 failed: not built
                b2 failed: not built
                r2: b3 e1s0
            ",
        },
        Case {
            name: "the next epoch renumbers every batch still queued, retried ones included",
            setup: IDEMPOTENT,
            events: &[
                Batch(1),
                Send,
                Batch(2),
                Send,
                Batch(3),
                Lost(2),
                Refused(1, ErrorCode::InvalidProducerEpoch),
                Sleep(100),
                Send,
                Send,
                Written(3, 0),
                Written(4, 2),
            ],
            expect: "
                r1: b1 e0s0
                r2: b2 e0s1
                again in 100ms: b2
                b1 failed: InvalidProducerEpoch
                r3: b2 e1s0
                r4: b3 e1s2
                b2 written at 0
                b3 written at 2
            ",
        },
    ]);
}

#[test]
fn splits() {
    check(&[
        Case {
            name: "MessageTooLarge for several batches: each again alone, no backoff; only the \
                   bad one fails, and the partition moves to the next epoch",
            setup: IDEMPOTENT,
            events: &[
                Batch(1),
                Batch(1),
                Batch(1),
                Send,
                Refused(1, ErrorCode::MessageTooLarge),
                Send,
                Send,
                Written(2, 0),
                Send,
                Refused(3, ErrorCode::MessageTooLarge),
                Send,
                Written(4, 1),
            ],
            expect: "
                r1: b1 e0s0, b2 e0s1, b3 e0s2
                again alone: b1 b2 b3
                r2: b1 e0s0
                wait for answers
                b1 written at 0
                r3: b2 e0s1
                b2 failed: MessageTooLarge
                r4: b3 e1s0
                b3 written at 1
            ",
        },
        Case {
            name: "RecordListTooLarge splits without idempotence too",
            setup: PLAIN,
            events: &[
                Batch(1),
                Batch(1),
                Send,
                Refused(1, ErrorCode::RecordListTooLarge),
                Send,
                Written(2, 0),
                Send,
                Written(3, 1),
            ],
            expect: "
                r1: b1, b2
                again alone: b1 b2
                r2: b1
                b1 written at 0
                r3: b2
                b2 written at 1
            ",
        },
        Case {
            name: "InvalidRecord and CorruptMessage split several batches",
            setup: PLAIN,
            events: &[
                Batch(1),
                Batch(1),
                Send,
                Refused(1, ErrorCode::InvalidRecord),
                Batch(1),
                Batch(1),
                Send,
                Written(2, 0),
                Send,
                Written(3, 1),
                Send,
                Refused(4, ErrorCode::CorruptMessage),
            ],
            expect: "
                r1: b1, b2
                again alone: b1 b2
                r2: b1
                b1 written at 0
                r3: b2
                b2 written at 1
                r4: b3, b4
                again alone: b3 b4
            ",
        },
        Case {
            name: "one batch too large fails; one invalid fails; one corrupt is retried (the \
                   bytes may have been damaged on the way)",
            setup: PLAIN,
            events: &[
                Batch(1),
                Send,
                Refused(1, ErrorCode::MessageTooLarge),
                Batch(1),
                Send,
                Refused(2, ErrorCode::InvalidRecord),
                Batch(1),
                Send,
                Refused(3, ErrorCode::CorruptMessage),
            ],
            expect: "
                r1: b1
                b1 failed: MessageTooLarge
                r2: b2
                b2 failed: InvalidRecord
                r3: b3
                again in 100ms: b3
            ",
        },
    ]);
}

#[test]
fn the_backoff_doubles_up_to_its_maximum() {
    let policy = RetryPolicy {
        retries: u32::MAX,
        backoff: BACKOFF,
        backoff_max: BACKOFF_MAX,
    };
    let waits: Vec<u128> = (1..=6).map(|a| policy.backoff(a).as_millis()).collect();
    assert_eq!(waits, [100, 200, 400, 400, 400, 400]);
}
