//! The per-core QUIC state machine around quinn-proto: connections, their streams, the byte
//! budget, timers and transmits. Sans-IO: it owns no socket, no waker and no task. Datagrams,
//! timer expiries and application input go in (`handle_*` and the calls of step 3); transmits,
//! service jobs, dial-out events and the next deadline come out (`poll_*`). Time is an input
//! too: every call that needs it takes `now`, so a test can drive two drivers against each
//! other on a virtual clock (`crate::sim`).
//!
//! Call order (the tasks in `endpoint.rs` and the simulation follow it; nothing here is
//! re-entered, and nothing waits):
//! 1. `handle_datagram(now, ..)` for each datagram received (a GRO buffer split into its
//!    segments first, `udp::RecvSlots` does it without copying). Marks the connection.
//! 2. `handle_timeout(now)`: marks the connections whose quinn-proto timer or read or write
//!    deadline has passed.
//! 3. Application input: `handle_response` (a service's answer to a job), `connect`,
//!    `start_call`, `cancel_call`, `close`, `begin_shutdown`, `close_all`. Each marks the
//!    connections it touches.
//! 4. `poll_transmit(now, buf)` until it returns `None`: one pass. Its first call processes
//!    every marked connection (quinn-proto timeouts, events, reading request frames, writing
//!    responses, opening calls), then it yields their datagrams one transmit at a time, written
//!    into `buf` (GSO batches of at most 64 KiB, `segment_size` set), connection after
//!    connection, at most `TRANSMIT_DATAGRAMS_PER_PASS_MAX` datagrams each. A connection cut
//!    short is marked for the next pass: `has_work()` tells the caller to come back after
//!    letting others run. Call it after any input, also while sends are blocked: it is what
//!    processes the connections (it then yields nothing).
//!    A send that finds the socket full: keep the transmit, `handle_send_blocked()`, and call
//!    `handle_send_unblocked()` once it is out; meanwhile no transmit is yielded.
//! 5. `poll_job()`: requests whose frame is complete, for the service, each with the
//!    cancellation set when its stream or connection goes; the answer comes back in step 3.
//! 6. `poll_event()`: dial-out results (handshake done or failed, call answered or failed).
//! 7. `poll_timeout()`: when to call `handle_timeout` if nothing else happens first (after a
//!    pass, a deadline some connection still has: see `prune_timers`).
//!
//! Ownership: one `Driver` per glommio executor (core). The endpoint keeps it in a `RefCell`;
//! no borrow of it is held across an `.await`, and service futures run in tasks of their own.
//!
//! Files: this one holds the endpoint-wide part (datagrams in, passes, transmits, timers,
//! application input); `conn.rs` one connection (its quinn-proto events, budget, deadlines);
//! `server.rs` the server side of request streams; `dial.rs` the dial-out side.

mod conn;
mod dial;
mod server;

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, VecDeque},
    net::{IpAddr, SocketAddr},
    rc::Rc,
    sync::Arc,
    time::Instant,
};

use bytes::{Bytes, BytesMut};
use quinn_proto::{ClientConfig, ConnectionHandle, DatagramEvent, Dir, EcnCodepoint, VarInt};

use crate::{
    config::EndpointConfig,
    error::{CallError, ConnectError},
    limits::{Admission, Refusal},
    pool::{FramePool, POOL_BYTES_MAX},
    service::{DynService, Response},
    tls::PeerIdentity,
};

use conn::{fail_everything, process_conn, Conn, Ctx};
pub(crate) use dial::DialEvent;
pub(crate) use server::Job;

/// Datagrams one connection may emit per pass before others get a turn. Rationale: fairness
/// between connections on a core and a chance for the receive task to process ACKs, the same
/// reason quinn bounds its `drive_transmit`.
pub(crate) const TRANSMIT_DATAGRAMS_PER_PASS_MAX: usize = 64;
/// The most one UDP datagram (and so one GSO send) can carry: 65,535 minus the 8-byte UDP
/// header, rounded down.
pub(crate) const UDP_PAYLOAD_MAX: usize = 65_000;

/// Counters for one endpoint; see `Endpoint::stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointStats {
    pub connections: usize,
    pub connections_accepted: u64,
    /// New connections refused: shutting down, or over a connection cap.
    pub connections_refused: u64,
    /// New connections asked to prove their address first (QUIC Retry).
    pub connections_retried: u64,
    /// Server-side request streams currently open (reading, serving or writing).
    pub requests_in_flight: usize,
    /// The largest `requests_in_flight` reached.
    pub requests_in_flight_peak: usize,
    pub requests_served: u64,
    /// Bytes held for requests and unsent responses, summed over connections.
    pub inflight_bytes: u64,
    /// The largest `inflight_bytes` any single connection reached.
    pub inflight_bytes_peak_per_connection: u64,
    pub frame_errors: u64,
    pub write_timeouts: u64,
    /// Requests whose frame did not arrive whole within the read timeout.
    pub read_timeouts: u64,
    /// Requests whose service future was dropped because the peer stopped the stream or the
    /// connection went away before the answer.
    pub requests_cancelled: u64,
    /// Service tasks running now (requests being served, cancelled ones not included once
    /// they have stopped).
    pub service_tasks: usize,
    pub datagrams_received: u64,
    pub datagrams_sent: u64,
    /// sendmsg calls (each carries up to the GSO segment count of datagrams).
    pub send_calls: u64,
    /// Large frames read into a buffer an earlier frame had used (see `pool.rs`).
    pub frame_buffers_reused: u64,
    /// `handle_timeout` calls that found deadlines due but none that a connection still had (a
    /// deadline that had since moved or gone): a wake of the core for nothing. Each pass drops
    /// such deadlines from the top of the timer heap, so this stays zero.
    pub timer_wakes_stale: u64,
}

/// A server stream, named so that an answer finds it: the connection's handle, its id (handles
/// are reused, ids are not) and the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StreamKey {
    pub ch: ConnectionHandle,
    pub conn_id: u64,
    pub id: quinn_proto::StreamId,
}

/// A dial-out connection of this driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DialConn {
    pub ch: ConnectionHandle,
    pub id: u64,
}

/// What `poll_transmit` wrote into the caller's buffer.
#[derive(Debug)]
pub(crate) struct Transmit {
    pub destination: SocketAddr,
    pub ecn: Option<EcnCodepoint>,
    /// Bytes written at the start of the buffer.
    pub size: usize,
    /// GSO: the buffer holds datagrams of this size (the last one may be shorter).
    pub segment_size: Option<usize>,
    pub src_ip: Option<IpAddr>,
    /// A stateless answer (Retry, refusal, version negotiation, reset): best effort, sent once
    /// without waiting for room and not counted in the endpoint's send counters.
    pub stateless: bool,
}

impl Transmit {
    /// Datagrams in the transmit.
    pub fn datagrams(&self) -> usize {
        self.segment_size
            .map_or(1, |s| self.size.div_ceil(s.max(1)))
    }

    fn from_quinn(t: quinn_proto::Transmit, stateless: bool) -> Transmit {
        Transmit {
            destination: t.destination,
            ecn: t.ecn,
            size: t.size,
            segment_size: t.segment_size,
            src_ip: t.src_ip,
            stateless,
        }
    }
}

/// What the socket below the driver can do.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SocketCaps {
    /// GSO segments one send may carry (1: no GSO).
    pub gso_segments_max: usize,
    /// Whether the kernel may fragment sends (path MTU discovery needs unfragmented ones).
    pub may_fragment: bool,
}

pub(crate) struct Driver {
    pub cfg: EndpointConfig,
    endpoint: quinn_proto::Endpoint,
    server_config: Option<Arc<quinn_proto::ServerConfig>>,
    client_config: Option<ClientConfig>,
    conns: HashMap<ConnectionHandle, Conn>,
    service: Option<Rc<dyn DynService>>,
    transmit_segments_max: usize,
    /// The caller's last send found the socket full; nothing is yielded until it is out.
    send_blocked: bool,
    /// Connections marked by inputs, processed by the next pass.
    dirty: Vec<ConnectionHandle>,
    /// The pass in progress: connections processed, whose transmits are yielded in turn.
    pass: VecDeque<ConnectionHandle>,
    in_pass: bool,
    /// Datagrams the connection at the front of `pass` has yielded in this pass.
    pass_datagrams: usize,
    /// Stateless answers to send, ahead of connections' transmits (rare: Retry, refusals).
    stateless: VecDeque<(quinn_proto::Transmit, Vec<u8>)>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    shutting_down: bool,
    next_conn_id: u64,
    next_call_token: u64,
    stats: EndpointStats,
    /// Large request and response buffers, reused once their holders drop them.
    pool: FramePool,
    jobs: VecDeque<Job>,
    events: VecDeque<DialEvent>,
}

impl Driver {
    /// `service`: the server side (accepts connections; `reject` is asked synchronously for
    /// the answer to a malformed frame); `None` for a dial-out-only driver. `rng_seed` makes
    /// quinn-proto's own choices (connection ids, tokens) repeatable, for simulations.
    pub fn new(
        cfg: EndpointConfig,
        server_config: Option<Arc<quinn_proto::ServerConfig>>,
        client_config: Option<ClientConfig>,
        service: Option<Rc<dyn DynService>>,
        caps: SocketCaps,
        rng_seed: Option<[u8; 32]>,
    ) -> Driver {
        let mut endpoint_config = match &cfg.stateless_reset_secret {
            Some(secret) => {
                let mut c = quinn_proto::EndpointConfig::new(Arc::new(aws_lc_rs::hmac::Key::new(
                    aws_lc_rs::hmac::HMAC_SHA256,
                    &secret.0[..],
                )));
                // quinn-proto drops a packet whose connection id fails its generator's check
                // before it would answer with a reset, so the generator's key must survive the
                // restart too: derive it from the same secret.
                let cid_key = u64::from_le_bytes(secret.0[..8].try_into().expect("8 bytes"));
                c.cid_generator(move || {
                    Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
                });
                c
            }
            None => quinn_proto::EndpointConfig::default(),
        };
        endpoint_config
            .max_udp_payload_size(cfg.udp_payload_limit())
            .expect("clamped to the allowed range");
        let endpoint = quinn_proto::Endpoint::new(
            Arc::new(endpoint_config),
            server_config.clone(),
            // Path MTU discovery needs unfragmented sends; quinn-udp sets IP_DONTFRAG where the
            // platform has it and reports whether fragmentation may still happen.
            !caps.may_fragment,
            rng_seed,
        );
        Driver {
            cfg,
            endpoint,
            server_config,
            client_config,
            conns: HashMap::new(),
            service,
            transmit_segments_max: caps.gso_segments_max.max(1),
            send_blocked: false,
            dirty: Vec::new(),
            pass: VecDeque::new(),
            in_pass: false,
            pass_datagrams: 0,
            stateless: VecDeque::new(),
            timers: BinaryHeap::new(),
            shutting_down: false,
            next_conn_id: 1,
            next_call_token: 1,
            stats: EndpointStats::default(),
            pool: FramePool::new(POOL_BYTES_MAX),
            jobs: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    // ---- getters -----------------------------------------------------------------------------

    /// The driver's counters (the send counters and service tasks are the caller's to add).
    pub fn stats(&self) -> EndpointStats {
        let mut s = self.stats.clone();
        s.connections = self.conns.len();
        s.frame_buffers_reused = self.pool.reused;
        s
    }

    /// Connections marked for another pass (a transmit pass cut short): call `poll_transmit`
    /// again after letting other tasks run.
    pub fn has_work(&self) -> bool {
        !self.dirty.is_empty()
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    pub fn requests_in_flight(&self) -> usize {
        self.conns.values().map(|c| c.serving).sum()
    }

    /// Requests the broker still works on: being read or served, not yet answered. Responses
    /// being written, or written and waiting for the peer's acknowledgement, do not count (a
    /// peer that went away never acknowledges).
    pub fn requests_unanswered(&self) -> usize {
        self.conns
            .values()
            .flat_map(|c| c.streams.values())
            .filter(|s| {
                matches!(
                    s,
                    conn::StreamState::Server(server::ServerStream {
                        phase: server::Phase::Reading
                            | server::Phase::Parked
                            | server::Phase::Serving,
                        ..
                    })
                )
            })
            .count()
    }

    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    pub fn peer_identity(&self, conn: DialConn) -> Option<Arc<PeerIdentity>> {
        self.conns
            .get(&conn.ch)
            .filter(|c| c.id == conn.id)
            .and_then(|c| c.identity.clone())
    }

    fn mark(&mut self, ch: ConnectionHandle) {
        if let Some(c) = self.conns.get_mut(&ch) {
            if !c.queued {
                c.queued = true;
                self.dirty.push(ch);
            }
        }
    }

    fn mark_all(&mut self) {
        let chs: Vec<_> = self.conns.keys().copied().collect();
        for ch in chs {
            self.mark(ch);
        }
    }

    // ---- 1. datagrams in -------------------------------------------------------------------

    /// One received datagram (one GRO segment), handed to quinn-proto without a copy: it is
    /// decrypted in place and stream data is lent out as slices of it.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        local_ip: Option<IpAddr>,
        ecn: Option<EcnCodepoint>,
        data: BytesMut,
    ) {
        self.stats.datagrams_received += 1;
        let mut response = Vec::new();
        let event = self
            .endpoint
            .handle(now, remote, local_ip, ecn, data, &mut response);
        match event {
            Some(DatagramEvent::ConnectionEvent(ch, ev)) => {
                if let Some(c) = self.conns.get_mut(&ch) {
                    c.inner.handle_event(ev);
                    self.mark(ch);
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                if self.shutting_down || self.service.is_none() {
                    self.stats.connections_refused += 1;
                    let t = self.endpoint.refuse(incoming, &mut response);
                    self.queue_stateless(t, response);
                    return;
                }
                let ip = incoming.remote_address().ip();
                let limiter = self.cfg.connection_limiter.clone();
                match limiter.admit(
                    ip,
                    incoming.remote_address_validated(),
                    incoming.may_retry(),
                ) {
                    Admission::Accept => {}
                    Admission::Retry => {
                        self.stats.connections_retried += 1;
                        match self.endpoint.retry(incoming, &mut response) {
                            Ok(t) => self.queue_stateless(t, response),
                            Err(e) => self.endpoint.ignore(e.into_incoming()),
                        }
                        return;
                    }
                    Admission::Refuse(why) => {
                        self.stats.connections_refused += 1;
                        tracing::debug!(%ip, reason = match why {
                            Refusal::Total => "connection cap",
                            Refusal::PerIp => "per-address connection cap",
                        }, "connection refused");
                        let t = self.endpoint.refuse(incoming, &mut response);
                        self.queue_stateless(t, response);
                        return;
                    }
                }
                match self
                    .endpoint
                    .accept(incoming, now, &mut response, self.server_config.clone())
                {
                    Ok((ch, conn)) => {
                        self.stats.connections_accepted += 1;
                        let id = self.next_conn_id;
                        self.next_conn_id += 1;
                        let mut c = Conn::new(id, conn);
                        c.counted_ip = Some(ip);
                        c.admit_deadline = self.cfg.admit_timeout.map(|t| now + t);
                        self.conns.insert(ch, c);
                        self.mark(ch);
                    }
                    Err(e) => {
                        limiter.release(ip);
                        tracing::debug!(cause = %e.cause, "incoming connection failed");
                        if let Some(t) = e.response {
                            self.queue_stateless(t, response);
                        }
                    }
                }
            }
            Some(DatagramEvent::Response(t)) => self.queue_stateless(t, response),
            None => {}
        }
    }

    fn queue_stateless(&mut self, t: quinn_proto::Transmit, buf: Vec<u8>) {
        if self.send_blocked {
            return; // A stateless answer is best effort; the peer retries.
        }
        self.stateless.push_back((t, buf));
    }

    // ---- 2. timers ---------------------------------------------------------------------------

    pub fn handle_timeout(&mut self, now: Instant) {
        let (mut due, mut fired) = (0u32, 0u32);
        while let Some(Reverse((t, ch))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            due += 1;
            let ch = ConnectionHandle(ch);
            if let Some(c) = self.conns.get_mut(&ch).filter(|c| c.timer == Some(t)) {
                // Forget the fired timer so that the pass pushes the next one even if quinn
                // reports the same instant again.
                c.timer = None;
                self.mark(ch);
                fired += 1;
            }
        }
        if due > 0 && fired == 0 {
            self.stats.timer_wakes_stale += 1;
        }
        // Stale entries (timers that moved) pile up under steady traffic; rebuild when they
        // dominate.
        if self.timers.len() > 4 * self.conns.len() + 1024 {
            self.timers = self
                .conns
                .iter()
                .filter_map(|(ch, c)| c.timer.map(|t| Reverse((t, ch.0))))
                .collect();
        }
    }

    /// The earliest deadline of any connection. After a pass it is one a connection still has
    /// (`prune_timers`); deeper in the heap may lie deadlines that have since moved, which
    /// `handle_timeout` skips.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    /// Drops deadlines that have moved or gone (their connection's timer is another, or the
    /// connection is gone) from the top of the heap, so that `poll_timeout` names a live one.
    /// A moved deadline is left behind whenever quinn pushes a timer later (each ACK moves the
    /// loss-detection timer); on top of the heap it made the core sleep until then and wake for
    /// nothing (bench/RESULTS.md, issue 29: 31 of a shard's 70 wake-ups in 50 ms of e2e at 200
    /// rec/s found an expired timer and nothing else to do).
    fn prune_timers(&mut self) {
        while let Some(&Reverse((t, ch))) = self.timers.peek() {
            let live = self
                .conns
                .get(&ConnectionHandle(ch))
                .is_some_and(|c| c.timer == Some(t));
            if live {
                break;
            }
            self.timers.pop();
        }
    }

    // ---- 3. application input ----------------------------------------------------------------

    /// The service's answer to the job of stream `key`.
    pub fn handle_response(&mut self, now: Instant, key: StreamKey, resp: Response) {
        let Some(conn) = self.conns.get_mut(&key.ch).filter(|c| c.id == key.conn_id) else {
            return; // The connection went away while the service worked.
        };
        if !server::answer(conn, key.id, resp, &self.cfg, now, &mut self.stats) {
            return; // The peer reset the stream meanwhile.
        }
        self.mark(key.ch);
    }

    /// Starts a dial-out connection; `DialEvent::Connected` tells how the handshake ends.
    pub fn connect(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<DialConn, ConnectError> {
        if self.shutting_down {
            return Err(ConnectError::EndpointClosed);
        }
        let config = self
            .client_config
            .clone()
            .ok_or(ConnectError::NoClientConfig)?;
        let (ch, conn) = self.endpoint.connect(now, config, addr, server_name)?;
        let id = self.next_conn_id;
        self.next_conn_id += 1;
        let mut c = Conn::new(id, conn);
        c.awaiting_connect = true;
        self.conns.insert(ch, c);
        self.mark(ch);
        Ok(DialConn { ch, id })
    }

    /// Queues one request frame (as chunks) on a new stream of `conn`; returns the token that
    /// `DialEvent::Response` will carry.
    pub fn start_call(&mut self, conn: DialConn, chunks: Vec<Bytes>) -> Result<u64, CallError> {
        let c = self
            .conns
            .get_mut(&conn.ch)
            .filter(|c| c.id == conn.id)
            .ok_or(CallError::ConnectionGone)?;
        if let Some(reason) = &c.lost {
            return Err(CallError::ConnectionLost(reason.clone()));
        }
        let token = self.next_call_token;
        self.next_call_token += 1;
        dial::queue_call(c, token, chunks);
        self.mark(conn.ch);
        Ok(token)
    }

    /// The caller gave up (timeout or dropped future): reset the stream so the peer stops too.
    /// No event follows for the token.
    pub fn cancel_call(&mut self, conn: DialConn, token: u64) {
        let Some(c) = self.conns.get_mut(&conn.ch).filter(|c| c.id == conn.id) else {
            return;
        };
        if dial::cancel(c, token) {
            self.mark(conn.ch);
        }
    }

    pub fn close(&mut self, now: Instant, conn: DialConn, code: u32, reason: &str) {
        if let Some(c) = self.conns.get_mut(&conn.ch).filter(|c| c.id == conn.id) {
            c.inner.close(
                now,
                VarInt::from_u32(code),
                Bytes::copy_from_slice(reason.as_bytes()),
            );
            self.mark(conn.ch);
        }
    }

    /// Refuses new connections and new request streams from now on.
    pub fn begin_shutdown(&mut self) {
        self.shutting_down = true;
        for c in self.conns.values_mut() {
            // No new request streams beyond those already granted.
            c.inner
                .set_max_concurrent_streams(Dir::Bi, VarInt::from_u32(0));
        }
        self.mark_all();
    }

    pub fn close_all(&mut self, now: Instant, code: u32, reason: &str) {
        for c in self.conns.values_mut() {
            c.inner.close(
                now,
                VarInt::from_u32(code),
                Bytes::copy_from_slice(reason.as_bytes()),
            );
        }
        self.mark_all();
    }

    /// The caller's send of the last transmit found the socket buffer full; it keeps the
    /// transmit and sends it when there is room.
    pub fn handle_send_blocked(&mut self) {
        self.send_blocked = true;
    }

    /// The blocked transmit is out: every connection gets to send again.
    pub fn handle_send_unblocked(&mut self) {
        self.send_blocked = false;
        self.mark_all();
    }

    // ---- 4. transmits ------------------------------------------------------------------------

    /// The next transmit of the pass, written into `buf` (cleared first); `None` ends the pass.
    /// See the call order at the top of this file.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        if !self.in_pass {
            self.begin_pass(now);
        }
        buf.clear();
        if self.send_blocked {
            self.stateless.clear();
        } else if let Some((t, bytes)) = self.stateless.pop_front() {
            buf.extend_from_slice(&bytes[..t.size]);
            return Some(Transmit::from_quinn(t, true));
        }
        while let Some(&ch) = self.pass.front() {
            if !self.send_blocked {
                if let Some(t) = self.transmit_one(now, ch, buf) {
                    return Some(t);
                }
            }
            self.pass.pop_front();
            self.pass_datagrams = 0;
            self.end_turn(ch, false);
        }
        self.in_pass = false;
        self.prune_timers();
        None
    }

    /// Processes every marked connection: its timeouts, quinn-proto events, streams, endpoint
    /// events; a drained one is forgotten, the others queue for their transmits.
    fn begin_pass(&mut self, now: Instant) {
        self.in_pass = true;
        self.pass_datagrams = 0;
        let batch = std::mem::take(&mut self.dirty);
        for ch in batch {
            let Some(conn) = self.conns.get_mut(&ch) else {
                continue;
            };
            conn.queued = false;
            let mut ctx = Ctx {
                cfg: &self.cfg,
                service: self.service.as_ref(),
                jobs: &mut self.jobs,
                events: &mut self.events,
                stats: &mut self.stats,
                pool: &mut self.pool,
                now,
                ch,
            };
            process_conn(&mut ctx, conn);

            // Endpoint events (connection ids, drained).
            let mut drained = false;
            while let Some(ev) = conn.inner.poll_endpoint_events() {
                drained |= ev.is_drained();
                if let Some(back) = self.endpoint.handle_event(ch, ev) {
                    conn.inner.handle_event(back);
                }
            }
            if drained {
                let mut conn = self.conns.remove(&ch).expect("present");
                fail_everything(&mut conn, &mut self.stats, &mut self.events);
                if let Some(ip) = conn.counted_ip {
                    self.cfg.connection_limiter.release(ip);
                }
                continue;
            }
            // New connection ids may have produced events; process them before transmitting.
            process_conn(&mut ctx, conn);
            self.pass.push_back(ch);
        }
    }

    /// One transmit of connection `ch`, or `None` when it has nothing more to send.
    fn transmit_one(
        &mut self,
        now: Instant,
        ch: ConnectionHandle,
        buf: &mut Vec<u8>,
    ) -> Option<Transmit> {
        let conn = self.conns.get_mut(&ch)?;
        // A UDP send carries at most 64 KiB, GSO segments included: a larger batch fails with
        // EMSGSIZE, which quinn-udp treats as a lost MTU probe and drops.
        let mtu = usize::from(conn.inner.current_mtu()).max(1);
        let segments_max = self.transmit_segments_max.min(UDP_PAYLOAD_MAX / mtu).max(1);
        let t = Transmit::from_quinn(conn.inner.poll_transmit(now, segments_max, buf)?, false);
        self.pass_datagrams += t.datagrams();
        if self.pass_datagrams >= TRANSMIT_DATAGRAMS_PER_PASS_MAX {
            self.pass.pop_front();
            self.pass_datagrams = 0;
            self.end_turn(ch, true);
        }
        Some(t)
    }

    /// A connection's turn in the pass is over: arm its timer, and mark it again if it was cut
    /// short.
    fn end_turn(&mut self, ch: ConnectionHandle, more: bool) {
        let Some(conn) = self.conns.get_mut(&ch) else {
            return;
        };
        // quinn's next timeout or the oldest read or write deadline, whichever is first.
        let timer = conn.next_timer();
        if timer != conn.timer {
            conn.timer = timer;
            if let Some(t) = timer {
                self.timers.push(Reverse((t, ch.0)));
            }
        }
        if more {
            conn.queued = true;
            self.dirty.push(ch);
        }
    }

    // ---- 5, 6. jobs and events ---------------------------------------------------------------

    /// A request ready for the service. Run it outside any borrow of the driver: the service
    /// must never run inside the driver's call.
    pub fn poll_job(&mut self) -> Option<Job> {
        self.jobs.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<DialEvent> {
        self.events.pop_front()
    }
}
