//! Two drivers against each other with no socket and a virtual clock (`super::Sim`): every
//! request and response intact and exactly once whatever the network does, and each bound of
//! ARCHITECTURE.md's "Bounded memory per connection" kept when the peer misbehaves.
//!
//! Each scenario runs under seeds; a failure prints its seed, and `QUIVER_SIM_SEED=<n>` runs
//! that seed alone.

use std::{
    cell::RefCell,
    collections::HashMap,
    future::Future,
    rc::Rc,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use quiver_proto::frame::FrameHeader;

use super::{Clock, Faults, Rng, Sim};
use crate::{
    codes,
    config::EndpointConfig,
    error::{CallError, ConnectError},
    limits::ConnectionLimiter,
    service::{Request, Response, Service},
};

/// Echoes body and payload.
const API_ECHO: u16 = 1;
/// Body: u32 LE byte count; answers with that many payload bytes (`pattern`), 64 KiB chunks.
const API_BIG: u16 = 2;
/// Body: u32 LE milliseconds of virtual time to wait, then echoes.
const API_SLOW: u16 = 5;
/// Never answers (a long poll with nothing to say): ends only by cancellation.
const API_HANG: u16 = 7;
/// Admits the connection (as a service does once its client authenticated), then echoes.
const API_ADMIT: u16 = 8;

#[derive(Default)]
struct Counts {
    /// Calls by correlation id.
    calls: HashMap<u32, u32>,
    /// Service futures dropped before they answered.
    dropped: u64,
}

/// Counts futures dropped unfinished.
struct DropGuard {
    counts: Rc<RefCell<Counts>>,
    done: bool,
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        if !self.done {
            self.counts.borrow_mut().dropped += 1;
        }
    }
}

#[derive(Clone)]
struct TestService {
    clock: Rc<Clock>,
    counts: Rc<RefCell<Counts>>,
}

impl TestService {
    fn new(sim: &Sim) -> TestService {
        TestService {
            clock: sim.clock.clone(),
            counts: Rc::default(),
        }
    }
}

fn u32_body(body: &Bytes) -> u32 {
    u32::from_le_bytes(body[..4].try_into().expect("4-byte body"))
}

/// Deterministic bytes: a response of `len` is checkable without keeping a copy.
fn pattern(len: usize, salt: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
        .collect::<Vec<u8>>()
        .into()
}

#[allow(clippy::manual_async_fn)] // the trait's shape
impl Service for TestService {
    fn call(&self, req: Request) -> impl Future<Output = Response> + 'static {
        *self
            .counts
            .borrow_mut()
            .calls
            .entry(req.header.correlation_id)
            .or_default() += 1;
        let clock = self.clock.clone();
        let guard = DropGuard {
            counts: self.counts.clone(),
            done: false,
        };
        async move {
            let mut guard = guard; // the whole guard, not just its field, lives in the future
            let h = req.header;
            let answer = |body: Bytes, payload: Vec<Bytes>| Response {
                header: h,
                body,
                payload,
            };
            let resp = match h.api_key {
                API_ECHO => answer(req.body, vec![req.payload]),
                API_BIG => {
                    let n = u32_body(&req.body) as usize;
                    let all = pattern(n, h.correlation_id as u8);
                    let chunks = (0..n)
                        .step_by(64 * 1024)
                        .map(|at| all.slice(at..n.min(at + 64 * 1024)))
                        .collect();
                    answer(Bytes::new(), chunks)
                }
                API_SLOW => {
                    let ms = u32_body(&req.body);
                    let at = clock.now() + Duration::from_millis(ms.into());
                    clock.sleep_until(at).await;
                    answer(req.body, vec![req.payload])
                }
                API_HANG => std::future::pending().await,
                API_ADMIT => {
                    req.session.admit();
                    answer(req.body, vec![req.payload])
                }
                _ => answer(Bytes::new(), vec![]),
            };
            guard.done = true;
            resp
        }
    }
}

fn header(api_key: u16, correlation_id: u32) -> FrameHeader {
    FrameHeader {
        api_key,
        api_version: 0,
        correlation_id,
        flags: 0,
    }
}

/// Runs `scenario` for each seed (or only `QUIVER_SIM_SEED`), saying which seed failed.
fn with_seeds(seeds: &[u64], scenario: impl Fn(u64)) {
    struct Say(u64);
    impl Drop for Say {
        fn drop(&mut self) {
            if std::thread::panicking() {
                eprintln!(
                    "simulation failed with seed {} (QUIVER_SIM_SEED={0})",
                    self.0
                );
            }
        }
    }
    let only = std::env::var("QUIVER_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok());
    for &seed in only
        .as_slice()
        .iter()
        .chain(if only.is_some() { &[][..] } else { seeds })
    {
        let _say = Say(seed);
        let started = Instant::now();
        scenario(seed);
        eprintln!("seed {seed}: {:?}", started.elapsed());
    }
}

/// A server's configuration with its own connection limiter (the default one is per call, but
/// say so).
fn server_cfg() -> EndpointConfig {
    EndpointConfig {
        connection_limiter: Arc::new(ConnectionLimiter::with_retry_above(100, 100, 100)),
        ..EndpointConfig::default()
    }
}

/// The server's budget and request count are back to nothing.
fn assert_drained(sim: &mut Sim, server: usize) {
    let ok = sim.run_until(Duration::from_secs(10), |s| {
        let st = s.nodes[server].driver.stats();
        st.inflight_bytes == 0 && st.requests_in_flight == 0
    });
    let st = sim.nodes[server].driver.stats();
    assert!(
        ok,
        "seed {}: budget or streams left: {} bytes, {} requests",
        sim.seed, st.inflight_bytes, st.requests_in_flight
    );
}

/// Requests and responses of 0 bytes to 3 MB, under 10 to 30% loss with reordering
/// and duplication: each is served once, each answer arrives once and intact (RFC 9000,
/// section 13.3: QUIC retransmits information, not packets; duplicates are discarded by packet
/// number, section 12.3).
#[test]
fn every_size_arrives_intact_and_once_under_loss_reordering_and_duplication() {
    with_seeds(&[1, 2, 3, 4, 5, 6], |seed| {
        let loss = [0.1, 0.2, 0.3][(seed as usize - 1) % 3];
        // Seeds 4 and 5: an Ethernet path, whose MTU both ends know (as the SDK announces its
        // route's), so packets of about 1,450 bytes; the others: loopback-sized packets. Not 30%
        // loss with small packets: both directions carry bulk data here, and quinn-proto
        // 0.11.19 sends no ACK while a connection is congestion-blocked with stream data
        // queued, so at 30% the connection crawls on probe timeouts (see
        // `bulk_both_ways_under_heavy_loss_with_small_packets`).
        let udp_payload_max = if seed == 4 || seed == 5 {
            1_472
        } else {
            65_527
        };
        // Jitter below the round trip: datagrams overtake their neighbours (reordering) without
        // making every packet look lost to quinn-proto's loss detection.
        let faults = Faults {
            loss,
            duplicate: 0.1,
            delay: Duration::from_millis(5),
            jitter: Duration::from_millis(3),
            mtu: usize::from(udp_payload_max),
        };
        let mut sim = Sim::new(seed, faults);
        let svc = TestService::new(&sim);
        let counts = svc.counts.clone();
        let server = sim.add_server(
            // Streams are sent one after another, so under 30% loss the last request starts
            // arriving long after its stream opened; and quinn-proto's probe timeout, doubled
            // at each probe lost, can go quiet for longer than the 30 s idle timeout. This test
            // is about integrity, not time.
            EndpointConfig {
                write_timeout: Duration::from_secs(300),
                read_timeout: Duration::from_secs(300),
                idle_timeout: Duration::from_secs(300),
                udp_payload_max,
                ..server_cfg()
            },
            svc,
        );
        let client = sim.add_client(EndpointConfig {
            idle_timeout: Duration::from_secs(300),
            udp_payload_max,
            ..EndpointConfig::default()
        });
        let conn = sim.connect_ok(client, server);

        let mut rng = Rng::new(seed);
        let sizes = [
            0usize, 1, 100, 1_199, 1_500, 16_384, 65_536, 300_000, 1_000_000, 2_500_000,
        ];
        let mut expect = HashMap::new();
        let mut id = 0;
        for &n in &sizes {
            id += 1;
            let payload = pattern(n, rng.next_u64() as u8);
            let t = sim.call(
                client,
                conn,
                header(API_ECHO, id),
                Bytes::from_static(b"echo"),
                vec![payload.clone()],
            );
            expect.insert(t, (id, Bytes::from_static(b"echo"), payload));
        }
        for n in [1usize, 70_000, 3_000_000] {
            id += 1;
            let t = sim.call(
                client,
                conn,
                header(API_BIG, id),
                Bytes::copy_from_slice(&(n as u32).to_le_bytes()),
                vec![],
            );
            expect.insert(t, (id, Bytes::new(), pattern(n, id as u8)));
        }
        let started = sim.now();
        let limit = Duration::from_secs(300);
        let done = sim.run_until(limit, |s| s.nodes[client].responses.len() == expect.len());
        assert!(
            done,
            "seed {seed}: {} of {} answers after {limit:?} (loss {loss})",
            sim.nodes[client].responses.len(),
            expect.len(),
        );
        eprintln!(
            "seed {seed}: loss {loss}: answered in {:?} of virtual time, {} datagrams dropped",
            sim.now() - started,
            sim.dropped
        );
        // Let late duplicates and retransmissions land: still one answer each.
        sim.run_for(Duration::from_secs(1));
        for (token, (id, body, payload)) in &expect {
            let got = &sim.nodes[client].responses[token];
            assert_eq!(
                got.len(),
                1,
                "seed {seed}: call {id} answered {} times",
                got.len()
            );
            let frame = got[0].as_ref().unwrap_or_else(|e| panic!("call {id}: {e}"));
            assert_eq!(frame.header.correlation_id, *id);
            assert_eq!(&frame.body, body, "call {id}: body");
            assert!(frame.payload == *payload, "call {id}: payload differs");
            assert_eq!(
                counts.borrow().calls[id],
                1,
                "call {id} served more than once"
            );
        }
        assert!(sim.dropped > 0, "the network dropped nothing");
        assert_drained(&mut sim, server);
    });
}

/// Bulk data both ways (a 2.5 MB request and a 3 MB answer at once) under 30% loss with
/// 1,450-byte packets, with the default timeouts. Fails with quinn-proto 0.11.19: its
/// `poll_transmit` skips the application space, ACK frames included, while the connection is
/// congestion-blocked with stream data queued, so both ends stop acknowledging what they
/// receive; only probe timeouts, backing off, carry ACKs: the request misses its 30 s read
/// timeout, or the connection goes quiet past its 30 s idle timeout. Two bare quinn-proto
/// endpoints (no driver) on the same network stall the same way: 3 MB each way at 30% loss
/// ended in idle timeouts after 80 to 200 s of virtual time with a third or less delivered
/// (seeds 1 to 3), while at 20% they took 25 to 49 s. Run it after upgrading quinn-proto.
#[test]
#[ignore = "quinn-proto 0.11.19 sends no ACK while congestion-blocked with data queued"]
fn bulk_both_ways_under_heavy_loss_with_small_packets() {
    with_seeds(&[2], |seed| {
        let faults = Faults {
            loss: 0.3,
            duplicate: 0.1,
            delay: Duration::from_millis(5),
            jitter: Duration::from_millis(3),
            mtu: 1_472,
        };
        let mut sim = Sim::new(seed, faults);
        let svc = TestService::new(&sim);
        let server = sim.add_server(
            EndpointConfig {
                udp_payload_max: 1_472,
                ..server_cfg()
            },
            svc,
        );
        let client = sim.add_client(EndpointConfig {
            udp_payload_max: 1_472,
            ..EndpointConfig::default()
        });
        let conn = sim.connect_ok(client, server);
        let up = sim.call(
            client,
            conn,
            header(API_ECHO, 1),
            Bytes::new(),
            vec![pattern(2_500_000, 1)],
        );
        let down = sim.call(
            client,
            conn,
            header(API_BIG, 2),
            Bytes::copy_from_slice(&3_000_000u32.to_le_bytes()),
            vec![],
        );
        assert!(sim.run_until(Duration::from_secs(120), |s| {
            let r = &s.nodes[client].responses;
            r.contains_key(&up) && r.contains_key(&down)
        }));
        for t in [up, down] {
            let got = &sim.nodes[client].responses[&t];
            assert!(got[0].is_ok(), "seed {seed}: {:?}", got[0].as_ref().err());
        }
    });
}

/// A client that stops reading (a frozen process) while a response is on its way: the write
/// deadline resets the response with `WRITE_TIMEOUT` and returns its budget, and the client
/// hears of it once it wakes.
#[test]
fn a_stalled_client_has_its_response_reset_at_the_write_deadline() {
    with_seeds(&[11, 12], |seed| {
        let mut sim = Sim::new(seed, Faults::none());
        let svc = TestService::new(&sim);
        let server = sim.add_server(
            EndpointConfig {
                write_timeout: Duration::from_secs(2),
                ..server_cfg()
            },
            svc,
        );
        // A small stream window: the server cannot hand the whole response to QUIC.
        let client = sim.add_client(EndpointConfig {
            stream_receive_window: 256 * 1024,
            ..EndpointConfig::default()
        });
        let conn = sim.connect_ok(client, server);
        let n = 4_000_000u32;
        let t = sim.call(
            client,
            conn,
            header(API_BIG, 1),
            Bytes::copy_from_slice(&n.to_le_bytes()),
            vec![],
        );
        assert!(sim.run_until(Duration::from_secs(5), |s| s.nodes[server]
            .driver
            .stats()
            .requests_served
            == 1));
        sim.stall(client, Duration::from_secs(6));
        let held = sim.nodes[server].driver.stats().inflight_bytes;
        assert!(held > 3_000_000, "response held: {held}");
        let reset_at = sim.now() + Duration::from_secs(2);
        assert!(sim.run_until(Duration::from_secs(4), |s| s.nodes[server]
            .driver
            .stats()
            .write_timeouts
            == 1));
        assert!(sim.now() >= reset_at && sim.now() < reset_at + Duration::from_millis(100));
        let st = sim.nodes[server].driver.stats();
        assert_eq!((st.inflight_bytes, st.requests_in_flight), (0, 0));
        assert!(sim.run_until(Duration::from_secs(10), |s| s.nodes[client]
            .responses
            .contains_key(&t)));
        match &sim.nodes[client].responses[&t][..] {
            [Err(CallError::StreamReset { code })] => {
                assert_eq!(*code, u64::from(codes::WRITE_TIMEOUT))
            }
            other => panic!("seed {seed}: {other:?}"),
        }
    });
}

/// A client that gives up (resets the request, stops the response) mid-request, while the
/// service works, and mid-response: the service future is dropped at once, counted, and every
/// byte of budget comes back (ARCHITECTURE.md, "Bounded memory per connection").
#[test]
fn a_client_that_gives_up_cancels_the_service_and_leaks_no_budget() {
    with_seeds(&[21, 22], |seed| {
        let faults = Faults {
            loss: 0.05,
            jitter: Duration::from_millis(2),
            ..Faults::none()
        };
        let mut sim = Sim::new(seed, faults);
        let svc = TestService::new(&sim);
        let counts = svc.counts.clone();
        let server = sim.add_server(server_cfg(), svc);
        let client = sim.add_client(EndpointConfig {
            stream_receive_window: 256 * 1024,
            ..EndpointConfig::default()
        });
        let conn = sim.connect_ok(client, server);
        let stats = |s: &Sim| s.nodes[server].driver.stats();

        // Mid-request: part of a 4 MB request is in.
        let t1 = sim.call(
            client,
            conn,
            header(API_ECHO, 1),
            Bytes::new(),
            vec![pattern(4_000_000, 1)],
        );
        assert!(sim.run_until(Duration::from_secs(5), |s| stats(s).inflight_bytes > 0));
        sim.nodes[client].driver.cancel_call(conn, t1);
        assert_drained(&mut sim, server);
        assert!(!counts.borrow().calls.contains_key(&1), "never served");

        // While served: a long poll.
        let t2 = sim.call(client, conn, header(API_HANG, 2), Bytes::new(), vec![]);
        assert!(sim.run_until(Duration::from_secs(5), |_| counts
            .borrow()
            .calls
            .contains_key(&2)));
        sim.run_for(Duration::from_millis(50));
        sim.nodes[client].driver.cancel_call(conn, t2);
        assert!(sim.run_until(Duration::from_secs(5), |s| s.nodes[server]
            .services_cancelled
            == 1));
        assert_eq!(counts.borrow().dropped, 1, "the service future was dropped");
        assert_eq!(stats(&sim).requests_cancelled, 1);
        assert_drained(&mut sim, server);

        // Mid-response: a 4 MB answer the client's window holds back.
        let t3 = sim.call(
            client,
            conn,
            header(API_BIG, 3),
            Bytes::copy_from_slice(&4_000_000u32.to_le_bytes()),
            vec![],
        );
        assert!(sim.run_until(Duration::from_secs(5), |s| stats(s).requests_served == 1));
        sim.run_for(Duration::from_millis(20));
        assert!(
            stats(&sim).inflight_bytes > 0,
            "response still being written"
        );
        sim.nodes[client].driver.cancel_call(conn, t3);
        assert_drained(&mut sim, server);

        for t in [t1, t2, t3] {
            assert!(
                !sim.nodes[client].responses.contains_key(&t),
                "a cancelled call has no outcome"
            );
        }
        // The connection still serves.
        let t4 = sim.call(
            client,
            conn,
            header(API_ECHO, 4),
            Bytes::from_static(b"ok"),
            vec![],
        );
        assert!(sim.run_until(Duration::from_secs(5), |s| s.nodes[client]
            .responses
            .contains_key(&t4)));
        assert!(sim.nodes[client].responses[&t4][0].is_ok());
    });
}

/// Requests a few milliseconds apart (a quiet producer): timers fire (loss detection, ACK
/// delay, keep-alive) and move with every ACK, yet the server never sleeps until a deadline no
/// connection has any more. On a broker each such deadline was a wake of the core for nothing.
#[test]
fn spaced_requests_wake_the_server_for_no_deadline_that_moved() {
    with_seeds(&[51, 52], |seed| {
        let mut sim = Sim::new(seed, Faults::none());
        let svc = TestService::new(&sim);
        let server = sim.add_server(server_cfg(), svc);
        let client = sim.add_client(EndpointConfig::default());
        let conn = sim.connect_ok(client, server);
        for i in 0..40u32 {
            let body = Bytes::copy_from_slice(&i.to_le_bytes());
            let t = sim.call(
                client,
                conn,
                header(API_ECHO, i),
                body,
                vec![pattern(1000, 7)],
            );
            assert!(
                sim.run_until(Duration::from_secs(5), |s| s.nodes[client]
                    .responses
                    .contains_key(&t)),
                "seed {seed}: request {i} unanswered"
            );
            sim.run_for(Duration::from_millis(3 + u64::from(i % 5)));
        }
        // Quiet long enough for every loss-detection and ACK timer to come due.
        sim.run_for(Duration::from_secs(2));
        let st = sim.nodes[server].driver.stats();
        assert_eq!(st.requests_served, 40, "seed {seed}");
        assert_eq!(
            st.timer_wakes_stale, 0,
            "seed {seed}: the server woke for deadlines that had moved"
        );
    });
}

/// A connection with no packets for `idle_timeout` is closed on both sides, and the server's
/// connection count (the limiter's) goes back down.
#[test]
fn idle_timeout_closes_a_silent_connection_on_both_sides() {
    with_seeds(&[31], |seed| {
        let mut sim = Sim::new(seed, Faults::none());
        let quiet = |cfg: EndpointConfig| EndpointConfig {
            idle_timeout: Duration::from_secs(3),
            keep_alive_interval: None,
            ..cfg
        };
        let svc = TestService::new(&sim);
        let scfg = quiet(server_cfg());
        let limiter = scfg.connection_limiter.clone();
        let server = sim.add_server(scfg, svc);
        let client = sim.add_client(quiet(EndpointConfig::default()));
        let conn = sim.connect_ok(client, server);
        let t = sim.call(
            client,
            conn,
            header(API_SLOW, 1),
            Bytes::copy_from_slice(&100u32.to_le_bytes()),
            vec![],
        );
        assert!(sim.run_until(Duration::from_secs(5), |s| s.nodes[client]
            .responses
            .contains_key(&t)));
        assert_eq!(limiter.connections(), 1);
        let quiet_from = sim.now();
        assert!(sim.run_until(Duration::from_secs(20), |s| {
            s.nodes[server].driver.connections() == 0 && s.nodes[client].driver.connections() == 0
        }));
        let after = sim.now() - quiet_from;
        assert!(
            after >= Duration::from_secs(3) && after < Duration::from_secs(6),
            "closed after {after:?}"
        );
        assert_eq!(limiter.connections(), 0);
        assert!(matches!(
            sim.nodes[client].driver.start_call(conn, vec![]),
            Err(CallError::ConnectionGone)
        ));
    });
}

/// With an admission deadline, a connection the service has not admitted in time is closed
/// (and its slot in the limiter returned), whatever it sends meanwhile; one it admitted stays.
#[test]
fn a_connection_not_admitted_in_time_is_closed() {
    with_seeds(&[41], |seed| {
        let mut sim = Sim::new(seed, Faults::none());
        let svc = TestService::new(&sim);
        let scfg = EndpointConfig {
            admit_timeout: Some(Duration::from_secs(2)),
            ..server_cfg()
        };
        let limiter = scfg.connection_limiter.clone();
        let server = sim.add_server(scfg, svc);
        let client = sim.add_client(EndpointConfig::default());
        let admitted = sim.connect_ok(client, server);
        let idle = sim.connect_ok(client, server);
        let body = || Bytes::from_static(b"abcd");
        let a = sim.call(client, admitted, header(API_ADMIT, 1), body(), vec![]);
        // The other keeps talking, which does not admit it.
        let e = sim.call(client, idle, header(API_ECHO, 2), body(), vec![]);
        assert!(sim.run_until(Duration::from_secs(1), |s| {
            let r = &s.nodes[client].responses;
            r.contains_key(&a) && r.contains_key(&e)
        }));
        assert_eq!(limiter.connections(), 2);
        assert!(sim.run_until(Duration::from_secs(5), |s| s.nodes[server]
            .driver
            .connections()
            == 1));
        assert_eq!(limiter.connections(), 1);
        sim.run_for(Duration::from_secs(5));
        assert_eq!(
            sim.nodes[server].driver.connections(),
            1,
            "the admitted one stays"
        );
        let again = sim.call(client, admitted, header(API_ECHO, 3), body(), vec![]);
        assert!(sim.run_until(Duration::from_secs(2), |s| s.nodes[client]
            .responses
            .contains_key(&again)));
        assert!(matches!(
            sim.nodes[client].driver.start_call(idle, vec![]),
            Err(CallError::ConnectionGone)
        ));
    });
}

/// A request whose frame stops arriving (the client froze mid-upload) is reset with
/// `READ_TIMEOUT` `read_timeout` after its stream opened, and its buffer is returned.
#[test]
fn the_read_timeout_resets_a_request_that_stops_arriving() {
    with_seeds(&[41, 42], |seed| {
        let mut sim = Sim::new(seed, Faults::none());
        let svc = TestService::new(&sim);
        let counts = svc.counts.clone();
        let server = sim.add_server(
            EndpointConfig {
                read_timeout: Duration::from_secs(2),
                ..server_cfg()
            },
            svc,
        );
        let client = sim.add_client(EndpointConfig::default());
        let conn = sim.connect_ok(client, server);
        let opened = sim.now();
        let t = sim.call(
            client,
            conn,
            header(API_ECHO, 1),
            Bytes::new(),
            vec![pattern(8_000_000, 1)],
        );
        assert!(sim.run_until(Duration::from_secs(5), |s| s.nodes[server]
            .driver
            .stats()
            .inflight_bytes
            > 0));
        sim.stall(client, Duration::from_secs(5));
        assert!(sim.run_until(Duration::from_secs(5), |s| s.nodes[server]
            .driver
            .stats()
            .read_timeouts
            == 1));
        assert!(sim.now() - opened >= Duration::from_secs(2));
        assert!(sim.now() - opened < Duration::from_millis(2_200));
        let st = sim.nodes[server].driver.stats();
        assert_eq!((st.inflight_bytes, st.requests_in_flight), (0, 0));
        assert!(counts.borrow().calls.is_empty(), "never served");
        assert!(sim.run_until(Duration::from_secs(10), |s| s.nodes[client]
            .responses
            .contains_key(&t)));
        match &sim.nodes[client].responses[&t][..] {
            [Err(CallError::StreamReset { code })] => {
                assert_eq!(*code, u64::from(codes::READ_TIMEOUT))
            }
            other => panic!("seed {seed}: {other:?}"),
        }
    });
}

/// The connection caps of `limits.rs` without sockets: past the cap a new connection is
/// refused (the client's handshake fails), below it one must answer a Retry first and then
/// gets in; a closed connection frees its place.
#[test]
fn connection_caps_refuse_and_retry_without_sockets() {
    with_seeds(&[51], |seed| {
        let mut sim = Sim::new(seed, Faults::none());
        let svc = TestService::new(&sim);
        // One connection at most; Retry from the first on.
        let limiter = Arc::new(ConnectionLimiter::with_retry_above(1, 1, 0));
        let server = sim.add_server(
            EndpointConfig {
                connection_limiter: limiter.clone(),
                ..EndpointConfig::default()
            },
            svc,
        );
        let a = sim.add_client(EndpointConfig::default());
        let b = sim.add_client(EndpointConfig::default());

        let conn_a = sim.connect_ok(a, server);
        let st = sim.nodes[server].driver.stats();
        assert_eq!((st.connections_retried, st.connections_accepted), (1, 1));
        let t = sim.call(
            a,
            conn_a,
            header(API_ECHO, 1),
            Bytes::from_static(b"x"),
            vec![],
        );
        assert!(sim.run_until(Duration::from_secs(5), |s| s.nodes[a]
            .responses
            .contains_key(&t)));

        let conn_b = sim.connect(b, server);
        assert!(sim.run_until(Duration::from_secs(10), |s| s.nodes[b]
            .connected
            .contains_key(&conn_b.id)));
        assert!(
            matches!(
                sim.nodes[b].connected[&conn_b.id],
                Err(ConnectError::Lost(_))
            ),
            "{:?}",
            sim.nodes[b].connected[&conn_b.id]
        );
        assert_eq!(sim.nodes[server].driver.stats().connections_refused, 1);

        let now = sim.now();
        sim.nodes[a]
            .driver
            .close(now, conn_a, codes::CLOSED_BY_APPLICATION, "done");
        assert!(sim.run_until(Duration::from_secs(10), |_| limiter.connections() == 0));
        sim.connect_ok(b, server);
        assert_eq!(sim.nodes[server].driver.stats().connections_accepted, 2);
    });
}

/// Shutdown: new connections are refused, the request in flight is answered, then every
/// connection closes and drains on both sides.
#[test]
fn shutdown_finishes_requests_then_closes_everything() {
    with_seeds(&[61], |seed| {
        let mut sim = Sim::new(seed, Faults::none());
        let svc = TestService::new(&sim);
        let server = sim.add_server(server_cfg(), svc);
        let a = sim.add_client(EndpointConfig::default());
        let b = sim.add_client(EndpointConfig::default());
        let conn = sim.connect_ok(a, server);
        let t = sim.call(
            a,
            conn,
            header(API_SLOW, 1),
            Bytes::copy_from_slice(&500u32.to_le_bytes()),
            vec![],
        );
        assert!(sim.run_until(Duration::from_secs(5), |s| s.nodes[server]
            .driver
            .requests_in_flight()
            == 1));
        sim.nodes[server].driver.begin_shutdown();
        let refused = sim.connect(b, server);
        assert!(sim.run_until(Duration::from_secs(5), |s| s.nodes[a]
            .responses
            .contains_key(&t)
            && s.nodes[b].connected.contains_key(&refused.id)));
        assert!(sim.nodes[a].responses[&t][0].is_ok());
        assert!(sim.nodes[b].connected[&refused.id].is_err());
        // The stream goes once the client has acknowledged the whole answer.
        assert!(sim.run_until(Duration::from_secs(5), |s| s.nodes[server]
            .driver
            .requests_in_flight()
            == 0));
        let now = sim.now();
        sim.nodes[server]
            .driver
            .close_all(now, codes::SHUTDOWN, "broker shutting down");
        assert!(sim.run_until(Duration::from_secs(5), |s| {
            s.nodes[server].driver.connections() == 0 && s.nodes[a].driver.connections() == 0
        }));
    });
}

/// The path's MTU falls mid-transfer (a route change): the large packets path MTU discovery
/// found are lost until quinn-proto's black hole detection falls back, and the transfer
/// completes.
#[test]
fn a_transfer_survives_the_path_mtu_falling() {
    with_seeds(&[71], |seed| {
        let mut sim = Sim::new(seed, Faults::none());
        let svc = TestService::new(&sim);
        let server = sim.add_server(server_cfg(), svc);
        let client = sim.add_client(EndpointConfig::default());
        let conn = sim.connect_ok(client, server);
        let n = 2_000_000u32;
        let warm = sim.call(
            client,
            conn,
            header(API_BIG, 1),
            Bytes::copy_from_slice(&n.to_le_bytes()),
            vec![],
        );
        assert!(sim.run_until(Duration::from_secs(10), |s| s.nodes[client]
            .responses
            .contains_key(&warm)));
        let t = sim.call(
            client,
            conn,
            header(API_BIG, 2),
            Bytes::copy_from_slice(&n.to_le_bytes()),
            vec![],
        );
        sim.run_for(Duration::from_millis(3));
        sim.faults.mtu = 1_400;
        assert!(
            sim.run_until(Duration::from_secs(60), |s| s.nodes[client]
                .responses
                .contains_key(&t)),
            "seed {seed}: no answer after the MTU fell"
        );
        let frame = sim.nodes[client].responses[&t][0].as_ref().expect("answer");
        assert!(frame.payload == pattern(n as usize, 2));
    });
}
