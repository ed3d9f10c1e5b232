//! A deterministic simulation of the transport: drivers (`crate::driver`) of a server and its
//! clients, with no socket, on a virtual clock, joined by a network that loses, delays,
//! reorders and duplicates datagrams as a seeded RNG decides, and that can stall a node (a
//! frozen process: it neither reads nor sends) or partition everyone. Service futures are
//! polled here, by hand, between steps; nothing runs on glommio.
//!
//! A run replays from its seed (printed when a test fails): the network's faults come from it,
//! and so does quinn-proto's own RNG in each driver. TLS key shares and hash-map order still
//! differ from run to run, so identical packets are not promised; in practice a seed gives the
//! same run every time (same virtual times, same drops), since both only change bytes that no
//! decision here depends on.
//!
//! Rationale: the broker-to-broker replication will run on this transport; these runs check
//! what a socket test cannot reach on demand (a lost packet, a late one, a stalled peer).

#[cfg(test)]
mod tests;

use std::{
    cell::{Cell, RefCell},
    cmp::Reverse,
    collections::{BTreeSet, BinaryHeap, HashMap, VecDeque},
    future::Future,
    net::SocketAddr,
    pin::Pin,
    rc::Rc,
    sync::{Arc, OnceLock},
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use quiver_proto::frame::{self, Frame, FrameHeader};

use crate::{
    config::EndpointConfig,
    driver::{DialConn, DialEvent, Driver, SocketCaps, StreamKey},
    endpoint::quinn_configs,
    error::{CallError, ConnectError},
    service::{DynService, Response},
    tls,
};

/// A virtual clock; service futures sleep on it.
pub(crate) struct Clock {
    now: Cell<Instant>,
    /// Instants sleeping futures wait for, so the simulation knows to stop there.
    wakes: RefCell<BTreeSet<Instant>>,
}

impl Clock {
    pub fn now(&self) -> Instant {
        self.now.get()
    }

    /// A future ready once the clock reads `at` or later.
    pub fn sleep_until(self: &Rc<Self>, at: Instant) -> impl Future<Output = ()> + 'static {
        let clock = self.clone();
        std::future::poll_fn(move |_| {
            if clock.now() >= at {
                Poll::Ready(())
            } else {
                clock.wakes.borrow_mut().insert(at);
                Poll::Pending
            }
        })
    }
}

/// splitmix64: small, fast, and the same on every platform and crate version.
pub(crate) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }

    /// Uniform in [0, max).
    pub fn duration(&mut self, max: Duration) -> Duration {
        max.mul_f64(self.unit())
    }
}

/// What the network does to each datagram.
#[derive(Clone, Debug)]
pub(crate) struct Faults {
    /// Probability that a datagram is dropped.
    pub loss: f64,
    /// Probability that a datagram is delivered twice (each copy delayed on its own).
    pub duplicate: f64,
    /// One-way delay of every datagram.
    pub delay: Duration,
    /// Extra delay, uniform in [0, jitter): datagrams overtake one another.
    pub jitter: Duration,
    /// Datagrams larger than this are dropped (the path MTU).
    pub mtu: usize,
}

impl Faults {
    /// A clean network: 1 ms each way, nothing lost.
    pub fn none() -> Faults {
        Faults {
            loss: 0.0,
            duplicate: 0.0,
            delay: Duration::from_millis(1),
            jitter: Duration::ZERO,
            mtu: 65_527,
        }
    }
}

type Task = Pin<Box<dyn Future<Output = Option<Response>>>>;

/// Bytes a stalled node's socket holds before it drops what arrives (its receive buffer).
const STALLED_HELD_BYTES_MAX: usize = 8 << 20;

/// One endpoint: a driver, its running service futures and what its dial-out calls got.
pub(crate) struct Node {
    pub addr: SocketAddr,
    pub driver: Driver,
    service: Option<Rc<dyn DynService>>,
    tasks: Vec<(StreamKey, Task)>,
    /// Service futures dropped because their request was cancelled.
    pub services_cancelled: u64,
    pub connected: HashMap<u64, Result<(), ConnectError>>,
    /// Every outcome of each call, by token (more than one would be a bug).
    pub responses: HashMap<u64, Vec<Result<Frame, CallError>>>,
    /// While set and in the future, the node is frozen: it neither processes nor sends, and
    /// what arrives waits in its socket buffer.
    pub stalled_until: Option<Instant>,
    held: VecDeque<(SocketAddr, BytesMut)>,
    held_bytes: usize,
    send_buf: Vec<u8>,
}

impl Node {
    fn stalled(&self, now: Instant) -> bool {
        self.stalled_until.is_some_and(|t| t > now)
    }

    /// Steps 1 to 7 of the driver's call order at `now`; datagrams to send go to `out`.
    /// Returns whether anything happened.
    fn step(&mut self, now: Instant, out: &mut Vec<(SocketAddr, SocketAddr, BytesMut)>) -> bool {
        if self.stalled(now) {
            return false;
        }
        let mut progressed = false;
        while let Some((from, data)) = self.held.pop_front() {
            self.driver.handle_datagram(now, from, None, None, data);
            progressed = true;
        }
        self.held_bytes = 0;
        self.driver.handle_timeout(now);
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut i = 0;
        while i < self.tasks.len() {
            match self.tasks[i].1.as_mut().poll(&mut cx) {
                Poll::Pending => i += 1,
                Poll::Ready(resp) => {
                    let (key, _) = self.tasks.swap_remove(i);
                    match resp {
                        Some(resp) => self.driver.handle_response(now, key, resp),
                        None => self.services_cancelled += 1,
                    }
                    progressed = true;
                }
            }
        }
        loop {
            while let Some(t) = self.driver.poll_transmit(now, &mut self.send_buf) {
                let seg = t.segment_size.unwrap_or(t.size).max(1);
                for d in self.send_buf[..t.size].chunks(seg) {
                    out.push((self.addr, t.destination, BytesMut::from(d)));
                }
                progressed = true;
            }
            while let Some(job) = self.driver.poll_job() {
                let svc = self.service.clone().expect("jobs only on a server");
                let cancel = job.cancel;
                let call = svc.call(job.req);
                let task: Task = Box::pin(futures_lite::future::or(
                    async move { Some(call.await) },
                    async move {
                        cancel.cancelled().await;
                        None
                    },
                ));
                self.tasks.push((job.key, task));
                progressed = true;
            }
            while let Some(ev) = self.driver.poll_event() {
                match ev {
                    DialEvent::Connected { conn_id, result } => {
                        self.connected.insert(conn_id, result);
                    }
                    DialEvent::Response { token, result } => {
                        self.responses.entry(token).or_default().push(result);
                    }
                }
                progressed = true;
            }
            if !self.driver.has_work() {
                return progressed;
            }
        }
    }
}

struct InFlight {
    at: Instant,
    seq: u64,
    from: SocketAddr,
    to: SocketAddr,
    data: BytesMut,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The nodes, the network between them and the clock.
pub(crate) struct Sim {
    pub seed: u64,
    pub clock: Rc<Clock>,
    pub rng: Rng,
    pub faults: Faults,
    /// Every datagram is dropped while set.
    pub partitioned: bool,
    pub nodes: Vec<Node>,
    in_flight: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    /// Datagrams the network carried (copies included) and dropped.
    pub delivered: u64,
    pub dropped: u64,
}

/// The development CA's server and client TLS configurations, made once per test process.
fn tls_configs() -> &'static (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    static CONFIGS: OnceLock<(Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>)> =
        OnceLock::new();
    CONFIGS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temporary directory");
        let certs = tls::ensure_dev_certs(dir.path()).expect("development certificates");
        (
            tls::server_config(&certs.server_files()).expect("server TLS"),
            tls::client_config(&certs.client_files()).expect("client TLS"),
        )
    })
}

/// A frame as the chunks a call writes.
pub(crate) fn frame_chunks(header: FrameHeader, body: Bytes, payload: Vec<Bytes>) -> Vec<Bytes> {
    let payload_len: usize = payload.iter().map(Bytes::len).sum();
    let mut chunks = vec![Bytes::copy_from_slice(
        &frame::encode_header(&header, body.len(), payload_len).expect("frame fits"),
    )];
    if !body.is_empty() {
        chunks.push(body);
    }
    chunks.extend(payload.into_iter().filter(|p| !p.is_empty()));
    chunks
}

impl Sim {
    pub fn new(seed: u64, faults: Faults) -> Sim {
        Sim {
            seed,
            clock: Rc::new(Clock {
                now: Cell::new(Instant::now()),
                wakes: RefCell::new(BTreeSet::new()),
            }),
            rng: Rng::new(seed),
            faults,
            partitioned: false,
            nodes: Vec::new(),
            in_flight: BinaryHeap::new(),
            seq: 0,
            delivered: 0,
            dropped: 0,
        }
    }

    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    fn add_node(&mut self, cfg: EndpointConfig, service: Option<Rc<dyn DynService>>) -> usize {
        let (server_tls, client_tls) = tls_configs();
        let (server_config, client_config) = quinn_configs(
            &cfg,
            service.as_ref().map(|_| server_tls.clone()),
            Some(client_tls.clone()),
        )
        .expect("QUIC-capable TLS");
        let i = self.nodes.len();
        let mut rng_seed = [0u8; 32];
        rng_seed[..8].copy_from_slice(&self.seed.to_le_bytes());
        rng_seed[8] = i as u8;
        let caps = SocketCaps {
            gso_segments_max: 10,
            may_fragment: false,
        };
        let driver = Driver::new(
            cfg,
            server_config,
            client_config,
            service.clone(),
            caps,
            Some(rng_seed),
        );
        let addr = SocketAddr::from(([192, 0, 2, 1 + i as u8], 4433));
        self.nodes.push(Node {
            addr,
            driver,
            service,
            tasks: Vec::new(),
            services_cancelled: 0,
            connected: HashMap::new(),
            responses: HashMap::new(),
            stalled_until: None,
            held: VecDeque::new(),
            held_bytes: 0,
            send_buf: Vec::new(),
        });
        i
    }

    /// A node that serves requests with `service` (and may dial out).
    pub fn add_server(&mut self, cfg: EndpointConfig, service: impl DynService + 'static) -> usize {
        self.add_node(cfg, Some(Rc::new(service)))
    }

    /// A dial-out-only node.
    pub fn add_client(&mut self, cfg: EndpointConfig) -> usize {
        self.add_node(cfg, None)
    }

    /// Starts a connection from `client` to `server`; `Node::connected` tells how it ends.
    pub fn connect(&mut self, client: usize, server: usize) -> DialConn {
        let (now, to) = (self.now(), self.nodes[server].addr);
        self.nodes[client]
            .driver
            .connect(now, to, "localhost")
            .expect("connect starts")
    }

    /// Connects and runs until the handshake ends; panics if it fails.
    pub fn connect_ok(&mut self, client: usize, server: usize) -> DialConn {
        let conn = self.connect(client, server);
        let done = self.run_until(Duration::from_secs(30), |s| {
            s.nodes[client].connected.contains_key(&conn.id)
        });
        assert!(done, "handshake did not end");
        match &self.nodes[client].connected[&conn.id] {
            Ok(()) => conn,
            Err(e) => panic!("handshake failed: {e}"),
        }
    }

    /// Starts a call; its outcome lands in `Node::responses[token]`.
    pub fn call(
        &mut self,
        client: usize,
        conn: DialConn,
        header: FrameHeader,
        body: Bytes,
        payload: Vec<Bytes>,
    ) -> u64 {
        self.nodes[client]
            .driver
            .start_call(conn, frame_chunks(header, body, payload))
            .expect("call starts")
    }

    /// Stalls node `i` for `d` from now.
    pub fn stall(&mut self, i: usize, d: Duration) {
        self.nodes[i].stalled_until = Some(self.now() + d);
    }

    /// Runs until `done` holds or `limit` of virtual time has passed; returns whether `done`
    /// held.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&mut Sim) -> bool) -> bool {
        let end = self.now() + limit;
        loop {
            self.settle();
            if done(self) {
                return true;
            }
            let now = self.now();
            match self.next_event() {
                Some(t) if t <= end => self.clock.now.set(t.max(now + Duration::from_micros(1))),
                _ => {
                    self.clock.now.set(end);
                    self.settle();
                    return done(self);
                }
            }
        }
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        self.run_until(d, |_| false);
    }

    /// Everything due now, until nothing more happens at this instant.
    fn settle(&mut self) {
        let mut out = Vec::new();
        for _ in 0..100_000 {
            let now = self.now();
            let mut progressed = false;
            while self.in_flight.peek().is_some_and(|p| p.0.at <= now) {
                let p = self.in_flight.pop().expect("peeked").0;
                progressed = true;
                let Some(node) = self.nodes.iter_mut().find(|n| n.addr == p.to) else {
                    continue;
                };
                if node.stalled(now) {
                    if node.held_bytes + p.data.len() <= STALLED_HELD_BYTES_MAX {
                        node.held_bytes += p.data.len();
                        node.held.push_back((p.from, p.data));
                    }
                    continue;
                }
                node.driver.handle_datagram(now, p.from, None, None, p.data);
            }
            for node in &mut self.nodes {
                progressed |= node.step(now, &mut out);
            }
            for (from, to, data) in out.drain(..) {
                self.route(from, to, data);
            }
            if !progressed {
                return;
            }
        }
        panic!("seed {}: no quiescence at one instant", self.seed);
    }

    fn route(&mut self, from: SocketAddr, to: SocketAddr, data: BytesMut) {
        if self.partitioned || data.len() > self.faults.mtu || self.rng.chance(self.faults.loss) {
            self.dropped += 1;
            return;
        }
        let copies = if self.rng.chance(self.faults.duplicate) {
            2
        } else {
            1
        };
        // The last copy takes the buffer, an earlier one clones it.
        let mut data = Some(data);
        for c in 0..copies {
            let at = self.now() + self.faults.delay + self.rng.duration(self.faults.jitter);
            let bytes = if c + 1 == copies {
                data.take().expect("taken once")
            } else {
                data.as_ref().expect("still here").clone()
            };
            self.seq += 1;
            self.delivered += 1;
            self.in_flight.push(Reverse(InFlight {
                at,
                seq: self.seq,
                from,
                to,
                data: bytes,
            }));
        }
    }

    /// The next instant something is due: a datagram, a driver's deadline, a sleeping service.
    fn next_event(&self) -> Option<Instant> {
        let now = self.now();
        let mut next = self.in_flight.peek().map(|p| p.0.at);
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for node in &self.nodes {
            match node.stalled_until.filter(|t| *t > now) {
                Some(t) => consider(t),
                None => {
                    if let Some(t) = node.driver.poll_timeout() {
                        consider(t);
                    }
                }
            }
        }
        let mut wakes = self.clock.wakes.borrow_mut();
        while wakes.first().is_some_and(|t| *t <= now) {
            wakes.pop_first();
        }
        if let Some(&t) = wakes.first() {
            consider(t);
        }
        next
    }
}
