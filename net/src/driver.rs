//! The per-core QUIC state machine around quinn-proto: connections, their streams, the byte
//! budget, timers and transmits. It does no waiting itself; the tasks in `endpoint.rs` feed it
//! datagrams, timer expiries and service completions, and it does the rest synchronously.
//!
//! Call order (the tasks follow it; nothing here is re-entered):
//! 1. `on_readable_socket`: one recvmmsg batch from the socket, datagrams to quinn-proto.
//! 2. `fire_timers(now)`: mark connections whose quinn timer or write deadline passed.
//! 3. `on_response` / `start_call` / `cancel_call` / `close`: application input.
//! 4. `drive(now)`: for each marked connection: timeouts, quinn events (streams opened,
//!    readable, writable, finished), reading request frames, writing responses, then transmits.
//! 5. `next_deadline()`: when the driver task must wake if nothing else happens.
//!
//! Ownership: one `Driver` per glommio executor (core), behind `Rc<RefCell<_>>`. No borrow of it
//! is ever held across an `.await`; service futures run in their own tasks and come back through
//! `on_response`.

use std::{
    cell::RefCell,
    cmp::Reverse,
    collections::{BTreeSet, BinaryHeap, HashMap, VecDeque},
    io::{self, IoSliceMut},
    net::{IpAddr, SocketAddr},
    rc::{Rc, Weak},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use quinn_proto::{
    ClientConfig, ConnectionError, ConnectionHandle, DatagramEvent, Dir, EcnCodepoint, Event,
    ReadableError, StreamEvent, StreamId, VarInt, WriteError,
};
use quinn_udp::RecvMeta;
use quiver_proto::frame::{self, Frame, FrameError, FrameHeader, FRAME_HEADER_BYTES};
use rustls::pki_types::CertificateDer;

use crate::{
    codes,
    config::EndpointConfig,
    error::{CallError, ConnectError},
    frame_reader::{FrameReader, QuinnChunks, ReadOutcome},
    limits::{Admission, Refusal},
    pool::{FramePool, POOL_BYTES_MAX},
    service::{DynService, Request, Response},
    sync::{oneshot, Cancel, Notify, OneshotReceiver, OneshotSender},
    tls::PeerIdentity,
    udp::UdpIo,
};

/// Datagrams one connection may emit per pass before others get a turn. Rationale: fairness
/// between connections on a core and a chance for the receive task to process ACKs, the same
/// reason quinn bounds its `drive_transmit`.
const TRANSMIT_DATAGRAMS_PER_PASS_MAX: usize = 64;
/// The most one UDP datagram (and so one GSO send) can carry: 65,535 minus the 8-byte UDP
/// header, rounded down.
const UDP_PAYLOAD_MAX: usize = 65_000;
/// A GRO receive buffer holds at most 64 KiB of coalesced segments.
const RECV_BUFFER_BYTES: usize = 64 * 1024;
/// How long closing connections get to deliver CONNECTION_CLOSE and drain at shutdown.
pub(crate) const SHUTDOWN_DRAIN_MAX: Duration = Duration::from_secs(2);

/// Where one recvmmsg writes: a buffer per batch slot. A slot's datagrams go to quinn-proto
/// without a copy: they are split off the slot's buffer, quinn-proto decrypts them in place and
/// hands stream data out as slices of them. Once every slice is dropped (stream data is copied
/// into request frames as it is read, in the same pass), the next receive takes the same buffer
/// back; a slot whose buffer is still held (data out of order, or not read yet) gets a new one.
pub(crate) struct RecvSlots {
    slots: Vec<RecvSlot>,
}

struct RecvSlot {
    buf: BytesMut,
    /// Where the buffer's allocation starts, to know it is the one zeroed at creation.
    base: usize,
}

impl RecvSlot {
    fn new() -> RecvSlot {
        let buf = BytesMut::zeroed(RECV_BUFFER_BYTES);
        let base = buf.as_ptr() as usize;
        RecvSlot { buf, base }
    }

    /// The whole buffer, writable: the same allocation when nothing split off it is still held
    /// (no copy, no allocation), otherwise a new one.
    fn whole(&mut self) -> &mut [u8] {
        if self.buf.len() != RECV_BUFFER_BYTES {
            self.buf.clear();
            if self.buf.try_reclaim(RECV_BUFFER_BYTES) && self.buf.as_ptr() as usize == self.base {
                // SAFETY: the buffer is back at the start of the allocation `new` made with
                // `RECV_BUFFER_BYTES` zeroed bytes (its base), and try_reclaim made room for
                // that many: every one of those bytes was initialised then and has only been
                // overwritten (by the kernel, by quinn-proto's in-place decryption) since.
                unsafe { self.buf.set_len(RECV_BUFFER_BYTES) }
            } else {
                *self = RecvSlot::new();
            }
        }
        &mut self.buf[..]
    }
}

impl RecvSlots {
    pub(crate) fn new() -> RecvSlots {
        RecvSlots {
            slots: (0..quinn_udp::BATCH_SIZE)
                .map(|_| RecvSlot::new())
                .collect(),
        }
    }
}

pub(crate) type Shared = Rc<RefCell<Driver>>;

/// A request ready for the service. Spawned by the task that drove the driver, after it let go
/// of its borrow: glommio runs a spawned task at once, and the service must never run inside
/// the driver's borrow.
pub(crate) struct Job {
    req: Request,
    ch: ConnectionHandle,
    conn_id: u64,
    id: StreamId,
    /// Set when the stream or the connection goes away while the service works: the service
    /// future is then dropped.
    cancel: Rc<Cancel>,
}

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
}

struct BlockedTransmit {
    contents: Vec<u8>,
    segment_size: Option<usize>,
    destination: SocketAddr,
}

pub(crate) struct Driver {
    pub cfg: EndpointConfig,
    endpoint: quinn_proto::Endpoint,
    server_config: Option<Arc<quinn_proto::ServerConfig>>,
    client_config: Option<ClientConfig>,
    conns: HashMap<ConnectionHandle, Conn>,
    service: Option<Rc<dyn DynService>>,
    pub udp: Rc<UdpIo>,
    send_buf: Vec<u8>,
    transmit_segments_max: usize,
    blocked: Option<BlockedTransmit>,
    tx_busy: bool,
    dirty: Vec<ConnectionHandle>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    shutting_down: bool,
    pub stopped: bool,
    next_conn_id: u64,
    next_call_token: u64,
    weak_self: Weak<RefCell<Driver>>,
    /// Wakes the driver task (service completions, calls, closes).
    pub wake: Rc<Notify>,
    /// Wakes the transmit task when a send hit a full socket buffer.
    pub tx_wake: Rc<Notify>,
    /// Wakes a shutdown in progress when requests or connections drain.
    pub idle_wake: Rc<Notify>,
    /// Wakes the receive task so that it can exit.
    pub stop_wake: Rc<Notify>,
    stats: EndpointStats,
    /// Large request and response buffers, reused once their holders drop them.
    pool: FramePool,
    jobs: Vec<Job>,
    /// While the driver task sleeps: until when (`None`: until woken). A timer armed earlier
    /// than that by the receive task must wake it, or the timer would be missed.
    pub driver_sleep: Option<Option<Instant>>,
}

struct Conn {
    id: u64,
    inner: quinn_proto::Connection,
    streams: HashMap<StreamId, StreamState>,
    inflight_bytes: u64,
    frame_errors: u32,
    identity: Option<Arc<PeerIdentity>>,
    /// Request streams whose frame length is known, waiting for budget, oldest first.
    parked: VecDeque<StreamId>,
    /// Write deadlines in the order responses became ready, which is deadline order.
    deadlines: VecDeque<(Instant, StreamId)>,
    /// Read deadlines of the streams still reading their request, exactly those (an entry goes
    /// when its stream's frame is read, parks or ends), so the set never outgrows the streams.
    read_deadlines: BTreeSet<(Instant, StreamId)>,
    /// The peer's IP address as counted by the connection limiter (accepted connections only).
    counted_ip: Option<IpAddr>,
    pending_calls: VecDeque<PendingCall>,
    connect_waiters: Vec<OneshotSender<Result<(), ConnectError>>>,
    connected: bool,
    lost: Option<ConnectionError>,
    queued: bool,
    timer: Option<Instant>,
    serving: usize,
}

enum StreamState {
    Server(ServerStream),
    Call(CallStream),
}

struct ServerStream {
    reader: FrameReader,
    phase: Phase,
    /// Budget bytes this stream holds (request buffer, then unsent response bytes).
    charged: u64,
    /// Write deadline, once the response is being written.
    deadline: Option<Instant>,
    /// Read deadline, while the request is being read (not while parked for budget).
    read_deadline: Option<Instant>,
    /// The service's cancellation, while it serves this request.
    cancel: Option<Rc<Cancel>>,
}

enum Phase {
    Reading,
    Parked,
    Serving,
    Writing(Outgoing),
    Finishing,
}

struct Outgoing {
    chunks: Vec<Bytes>,
    next: usize,
}

struct CallStream {
    token: u64,
    send: Option<Outgoing>,
    reader: FrameReader,
    reply: Option<OneshotSender<Result<Frame, CallError>>>,
}

struct PendingCall {
    token: u64,
    chunks: Vec<Bytes>,
    reply: OneshotSender<Result<Frame, CallError>>,
}

fn read_frame(
    inner: &mut quinn_proto::Connection,
    id: StreamId,
    reader: &mut FrameReader,
    frame_bytes_max: usize,
) -> ReadOutcome {
    let mut stream = inner.recv_stream(id);
    let mut chunks = match stream.read(true) {
        Ok(c) => c,
        Err(ReadableError::ClosedStream) => return ReadOutcome::Closed,
        // Only ordered reads are ever made on a stream.
        Err(ReadableError::IllegalOrderedRead) => return ReadOutcome::Closed,
    };
    let outcome = reader.read(&mut QuinnChunks(&mut chunks), frame_bytes_max);
    // Whether credit must be sent is moot: the connection is polled for transmits after every
    // pass that touched it.
    let _ = chunks.finalize();
    outcome
}

fn varint(code: u32) -> VarInt {
    VarInt::from_u32(code)
}

fn to_udp_ecn(e: EcnCodepoint) -> quinn_udp::EcnCodepoint {
    match e {
        EcnCodepoint::Ect0 => quinn_udp::EcnCodepoint::Ect0,
        EcnCodepoint::Ect1 => quinn_udp::EcnCodepoint::Ect1,
        EcnCodepoint::Ce => quinn_udp::EcnCodepoint::Ce,
    }
}

fn from_udp_ecn(e: quinn_udp::EcnCodepoint) -> EcnCodepoint {
    match e {
        quinn_udp::EcnCodepoint::Ect0 => EcnCodepoint::Ect0,
        quinn_udp::EcnCodepoint::Ect1 => EcnCodepoint::Ect1,
        quinn_udp::EcnCodepoint::Ce => EcnCodepoint::Ce,
    }
}

impl Conn {
    fn new(id: u64, inner: quinn_proto::Connection) -> Conn {
        Conn {
            id,
            inner,
            streams: HashMap::new(),
            inflight_bytes: 0,
            frame_errors: 0,
            identity: None,
            parked: VecDeque::new(),
            deadlines: VecDeque::new(),
            read_deadlines: BTreeSet::new(),
            counted_ip: None,
            pending_calls: VecDeque::new(),
            connect_waiters: Vec::new(),
            connected: false,
            lost: None,
            queued: false,
            timer: None,
            serving: 0,
        }
    }

    fn admits(&self, bytes: u64, budget: u64) -> bool {
        self.inflight_bytes == 0 || self.inflight_bytes + bytes <= budget
    }

    /// Forgets a server stream, returning its budget; a service still working on it is
    /// cancelled.
    fn drop_server_stream(&mut self, id: StreamId, stats: &mut EndpointStats) {
        if let Some(StreamState::Server(mut s)) = self.streams.remove(&id) {
            unset_read_deadline(&mut self.read_deadlines, id, &mut s.read_deadline);
            if let Some(cancel) = s.cancel.take() {
                cancel.cancel();
                stats.requests_cancelled += 1;
            }
            let charged = s.charged;
            release(&mut self.inflight_bytes, &mut s, charged, stats);
            self.serving -= 1;
            stats.requests_in_flight -= 1;
        }
    }
}

fn charge(inflight: &mut u64, s: &mut ServerStream, bytes: u64, stats: &mut EndpointStats) {
    s.charged += bytes;
    *inflight += bytes;
    stats.inflight_bytes += bytes;
    stats.inflight_bytes_peak_per_connection =
        stats.inflight_bytes_peak_per_connection.max(*inflight);
}

fn release(inflight: &mut u64, s: &mut ServerStream, bytes: u64, stats: &mut EndpointStats) {
    let bytes = bytes.min(s.charged);
    s.charged -= bytes;
    *inflight -= bytes;
    stats.inflight_bytes -= bytes;
}

/// What `drive` needs besides the connection, borrowed from the driver's other fields.
struct Ctx<'a> {
    cfg: &'a EndpointConfig,
    service: Option<&'a Rc<dyn DynService>>,
    jobs: &'a mut Vec<Job>,
    stats: &'a mut EndpointStats,
    pool: &'a mut FramePool,
    now: Instant,
    ch: ConnectionHandle,
}

impl Driver {
    pub fn new(
        cfg: EndpointConfig,
        udp: UdpIo,
        server_config: Option<Arc<quinn_proto::ServerConfig>>,
        client_config: Option<ClientConfig>,
        service: Option<Rc<dyn DynService>>,
    ) -> Shared {
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
            !udp.may_fragment(),
            None,
        );
        let transmit_segments_max = udp.max_gso_segments().max(1);
        Rc::new_cyclic(|weak_self| {
            RefCell::new(Driver {
                cfg,
                endpoint,
                server_config,
                client_config,
                conns: HashMap::new(),
                service,
                udp: Rc::new(udp),
                send_buf: Vec::with_capacity(64 * 1024),
                transmit_segments_max,
                blocked: None,
                tx_busy: false,
                dirty: Vec::new(),
                timers: BinaryHeap::new(),
                shutting_down: false,
                stopped: false,
                next_conn_id: 1,
                next_call_token: 1,
                weak_self: weak_self.clone(),
                wake: Rc::new(Notify::default()),
                tx_wake: Rc::new(Notify::default()),
                idle_wake: Rc::new(Notify::default()),
                stop_wake: Rc::new(Notify::default()),
                stats: EndpointStats::default(),
                pool: FramePool::new(POOL_BYTES_MAX),
                jobs: Vec::new(),
                driver_sleep: None,
            })
        })
    }

    pub fn stats(&self) -> EndpointStats {
        let mut s = self.stats.clone();
        s.connections = self.conns.len();
        s.frame_buffers_reused = self.pool.reused;
        s
    }

    fn mark(&mut self, ch: ConnectionHandle) {
        if let Some(c) = self.conns.get_mut(&ch) {
            if !c.queued {
                c.queued = true;
                self.dirty.push(ch);
            }
        }
    }

    pub fn take_jobs(&mut self) -> Vec<Job> {
        std::mem::take(&mut self.jobs)
    }

    pub fn has_work(&self) -> bool {
        !self.dirty.is_empty()
    }

    // ---- 1. datagrams in -------------------------------------------------------------------

    /// One recvmmsg batch, fed to quinn-proto. Returns whether the socket may still hold
    /// datagrams.
    pub fn on_readable_socket(&mut self, recv: &mut RecvSlots, now: Instant) -> bool {
        let mut metas = [RecvMeta::default(); quinn_udp::BATCH_SIZE];
        let n = {
            let mut iovs: Vec<IoSliceMut<'_>> = recv
                .slots
                .iter_mut()
                .map(|s| IoSliceMut::new(s.whole()))
                .collect();
            match self.udp.recv(&mut iovs, &mut metas) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => {
                    // ICMP errors and the like: UDP is lossy anyway; carry on.
                    tracing::debug!(error = %e, "recv error");
                    return false;
                }
            }
        };
        for (slot, meta) in recv.slots.iter_mut().zip(&metas).take(n) {
            // A GRO batch is split off its slot, and its segments off it, without copying.
            let mut data = slot.buf.split_to(meta.len);
            let stride = meta.stride.max(1);
            while !data.is_empty() {
                let seg = data.split_to(stride.min(data.len()));
                self.stats.datagrams_received += 1;
                self.on_datagram(now, meta, seg);
            }
        }
        true
    }

    fn on_datagram(&mut self, now: Instant, meta: &RecvMeta, data: BytesMut) {
        let mut response = Vec::new();
        let event = self.endpoint.handle(
            now,
            meta.addr,
            meta.dst_ip,
            meta.ecn.map(from_udp_ecn),
            data,
            &mut response,
        );
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
                    self.send_response(&t, &response);
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
                            Ok(t) => self.send_response(&t, &response),
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
                        self.send_response(&t, &response);
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
                        self.conns.insert(ch, c);
                        self.mark(ch);
                    }
                    Err(e) => {
                        limiter.release(ip);
                        tracing::debug!(cause = %e.cause, "incoming connection failed");
                        if let Some(t) = e.response {
                            self.send_response(&t, &response);
                        }
                    }
                }
            }
            Some(DatagramEvent::Response(t)) => self.send_response(&t, &response),
            None => {}
        }
    }

    fn send_response(&mut self, t: &quinn_proto::Transmit, buf: &[u8]) {
        if self.tx_busy {
            return; // A stateless response is best effort; the peer retries.
        }
        let _ = self.udp.send(&quinn_udp::Transmit {
            destination: t.destination,
            ecn: t.ecn.map(to_udp_ecn),
            contents: &buf[..t.size],
            segment_size: t.segment_size,
            src_ip: t.src_ip,
        });
    }

    // ---- 2. timers ---------------------------------------------------------------------------

    pub fn fire_timers(&mut self, now: Instant) {
        while let Some(Reverse((t, ch))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            let ch = ConnectionHandle(ch);
            if let Some(c) = self.conns.get_mut(&ch).filter(|c| c.timer == Some(t)) {
                // Forget the fired timer so that `drive` pushes the next one even if quinn
                // reports the same instant again.
                c.timer = None;
                self.mark(ch);
            }
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

    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    // ---- 3. application input ----------------------------------------------------------------

    pub fn on_response(
        &mut self,
        ch: ConnectionHandle,
        conn_id: u64,
        id: StreamId,
        resp: Response,
        now: Instant,
    ) {
        let Some(conn) = self.conns.get_mut(&ch).filter(|c| c.id == conn_id) else {
            return; // The connection went away while the service worked.
        };
        let Some(StreamState::Server(mut s)) = conn.streams.remove(&id) else {
            return; // The peer reset the stream meanwhile.
        };
        s.cancel = None;
        let charged = s.charged;
        release(&mut conn.inflight_bytes, &mut s, charged, &mut self.stats);
        self.stats.requests_served += 1;
        start_writing(
            conn,
            id,
            s,
            resp,
            self.cfg.write_timeout,
            now,
            &mut self.stats,
        );
        self.mark(ch);
    }

    #[allow(clippy::type_complexity)]
    pub fn connect(
        &mut self,
        addr: SocketAddr,
        server_name: &str,
        now: Instant,
    ) -> Result<
        (
            ConnectionHandle,
            u64,
            OneshotReceiver<Result<(), ConnectError>>,
        ),
        ConnectError,
    > {
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
        let (tx, rx) = oneshot();
        c.connect_waiters.push(tx);
        self.conns.insert(ch, c);
        self.mark(ch);
        Ok((ch, id, rx))
    }

    #[allow(clippy::type_complexity)]
    pub fn start_call(
        &mut self,
        ch: ConnectionHandle,
        conn_id: u64,
        chunks: Vec<Bytes>,
    ) -> Result<(u64, OneshotReceiver<Result<Frame, CallError>>), CallError> {
        let conn = self
            .conns
            .get_mut(&ch)
            .filter(|c| c.id == conn_id)
            .ok_or(CallError::ConnectionGone)?;
        if let Some(reason) = &conn.lost {
            return Err(CallError::ConnectionLost(reason.clone()));
        }
        let token = self.next_call_token;
        self.next_call_token += 1;
        let (tx, rx) = oneshot();
        conn.pending_calls.push_back(PendingCall {
            token,
            chunks,
            reply: tx,
        });
        self.mark(ch);
        Ok((token, rx))
    }

    /// The caller gave up (timeout or dropped future): reset the stream so the peer stops too.
    pub fn cancel_call(&mut self, ch: ConnectionHandle, conn_id: u64, token: u64) {
        let Some(conn) = self.conns.get_mut(&ch).filter(|c| c.id == conn_id) else {
            return;
        };
        conn.pending_calls.retain(|p| p.token != token);
        let id = conn.streams.iter().find_map(|(id, s)| match s {
            StreamState::Call(c) if c.token == token => Some(*id),
            _ => None,
        });
        if let Some(id) = id {
            conn.streams.remove(&id);
            let _ = conn.inner.send_stream(id).reset(varint(codes::CANCELLED));
            let _ = conn.inner.recv_stream(id).stop(varint(codes::CANCELLED));
            self.mark(ch);
        }
    }

    pub fn close(
        &mut self,
        ch: ConnectionHandle,
        conn_id: u64,
        code: u32,
        reason: &str,
        now: Instant,
    ) {
        if let Some(c) = self.conns.get_mut(&ch).filter(|c| c.id == conn_id) {
            c.inner
                .close(now, varint(code), Bytes::copy_from_slice(reason.as_bytes()));
            self.mark(ch);
        }
    }

    pub fn peer_identity(&self, ch: ConnectionHandle, conn_id: u64) -> Option<Arc<PeerIdentity>> {
        self.conns
            .get(&ch)
            .filter(|c| c.id == conn_id)
            .and_then(|c| c.identity.clone())
    }

    pub fn begin_shutdown(&mut self) {
        self.shutting_down = true;
        let chs: Vec<_> = self.conns.keys().copied().collect();
        for ch in chs {
            if let Some(c) = self.conns.get_mut(&ch) {
                // No new request streams beyond those already granted.
                c.inner
                    .set_max_concurrent_streams(Dir::Bi, VarInt::from_u32(0));
            }
            self.mark(ch);
        }
    }

    pub fn requests_in_flight(&self) -> usize {
        self.conns.values().map(|c| c.serving).sum()
    }

    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    pub fn close_all(&mut self, code: u32, reason: &str, now: Instant) {
        let chs: Vec<_> = self.conns.keys().copied().collect();
        for ch in chs {
            if let Some(c) = self.conns.get_mut(&ch) {
                c.inner
                    .close(now, varint(code), Bytes::copy_from_slice(reason.as_bytes()));
            }
            self.mark(ch);
        }
    }

    // ---- transmit blocking ---------------------------------------------------------------------

    pub fn take_blocked(&mut self) -> Option<(Vec<u8>, Option<usize>, SocketAddr)> {
        self.blocked
            .take()
            .map(|b| (b.contents, b.segment_size, b.destination))
    }

    pub fn unblock(&mut self) {
        self.tx_busy = false;
        let chs: Vec<_> = self.conns.keys().copied().collect();
        for ch in chs {
            self.mark(ch);
        }
    }

    // ---- 4. drive ----------------------------------------------------------------------------

    /// Processes every marked connection once. Connections that still have work (a transmit
    /// pass cut short) are marked again; `has_work` tells the caller to come back after yielding.
    pub fn drive(&mut self, now: Instant) {
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
                fail_everything(&mut conn, &mut self.stats);
                if let Some(ip) = conn.counted_ip {
                    self.cfg.connection_limiter.release(ip);
                }
                continue;
            }
            // New connection ids may have produced events; process them before transmitting.
            let mut ctx = Ctx {
                cfg: &self.cfg,
                service: self.service.as_ref(),
                jobs: &mut self.jobs,
                stats: &mut self.stats,
                pool: &mut self.pool,
                now,
                ch,
            };
            process_conn(&mut ctx, conn);

            // Transmit.
            let mut more = false;
            if !self.tx_busy {
                let mut datagrams = 0;
                // A UDP send carries at most 64 KiB, GSO segments included: a larger batch
                // fails with EMSGSIZE, which quinn-udp treats as a lost MTU probe and drops.
                let mtu = usize::from(conn.inner.current_mtu()).max(1);
                let segments_max = self.transmit_segments_max.min(UDP_PAYLOAD_MAX / mtu).max(1);
                loop {
                    self.send_buf.clear();
                    let Some(t) = conn
                        .inner
                        .poll_transmit(now, segments_max, &mut self.send_buf)
                    else {
                        break;
                    };
                    let segments = t.segment_size.map_or(1, |s| t.size.div_ceil(s));
                    let udp_t = quinn_udp::Transmit {
                        destination: t.destination,
                        ecn: t.ecn.map(to_udp_ecn),
                        contents: &self.send_buf[..t.size],
                        segment_size: t.segment_size,
                        src_ip: t.src_ip,
                    };
                    match self.udp.send(&udp_t) {
                        Ok(()) => {
                            self.stats.send_calls += 1;
                            self.stats.datagrams_sent += segments as u64;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            self.blocked = Some(BlockedTransmit {
                                contents: self.send_buf[..t.size].to_vec(),
                                segment_size: t.segment_size,
                                destination: t.destination,
                            });
                            self.tx_busy = true;
                            self.tx_wake.notify();
                            break;
                        }
                        Err(e) => tracing::debug!(error = %e, "send error"),
                    }
                    datagrams += segments;
                    if datagrams >= TRANSMIT_DATAGRAMS_PER_PASS_MAX {
                        more = true;
                        break;
                    }
                }
            }

            // Timer: quinn's next timeout or the oldest read or write deadline, whichever is
            // first.
            let mut timer = conn.inner.poll_timeout();
            for &(d, _) in conn
                .deadlines
                .front()
                .into_iter()
                .chain(conn.read_deadlines.first())
            {
                timer = Some(timer.map_or(d, |t| t.min(d)));
            }
            if timer != conn.timer {
                conn.timer = timer;
                if let Some(t) = timer {
                    self.timers.push(Reverse((t, ch.0)));
                    if let Some(until) = self.driver_sleep {
                        if until.is_none_or(|u| t < u) {
                            self.driver_sleep = None;
                            self.wake.notify();
                        }
                    }
                }
            }
            if more {
                conn.queued = true;
                self.dirty.push(ch);
            }
        }
        if self.shutting_down {
            self.idle_wake.notify();
        }
    }
}

/// Everything short of endpoint events and transmits for one connection.
fn process_conn(ctx: &mut Ctx<'_>, conn: &mut Conn) {
    if conn.inner.poll_timeout().is_some_and(|t| t <= ctx.now) {
        conn.inner.handle_timeout(ctx.now);
    }
    expire_writes(ctx, conn);
    expire_reads(ctx, conn);

    while let Some(ev) = conn.inner.poll() {
        match ev {
            Event::Connected => {
                conn.connected = true;
                conn.identity = conn
                    .inner
                    .crypto_session()
                    .peer_identity()
                    .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
                    .and_then(|certs| certs.first().and_then(PeerIdentity::from_cert))
                    .map(Arc::new);
                for w in conn.connect_waiters.drain(..) {
                    w.send(Ok(()));
                }
            }
            Event::ConnectionLost { reason } => {
                tracing::debug!(conn = conn.id, %reason, "connection lost");
                conn.lost = Some(reason);
                fail_everything(conn, ctx.stats);
            }
            Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) => {
                // quinn-proto reports `Opened` ahead of the `Readable` events already queued, so
                // when the last bytes of one request and the whole of the next arrive together,
                // the next would be read (and served) first. Requests are served in the order
                // the peer opened their streams: the streams already open read what came first.
                read_open_streams(ctx, conn);
                while let Some(id) = conn.inner.streams().accept(Dir::Bi) {
                    if ctx.service.is_none() {
                        // A dial-out-only endpoint serves nothing.
                        let _ = conn
                            .inner
                            .recv_stream(id)
                            .stop(varint(codes::STREAM_PROTOCOL));
                        let _ = conn
                            .inner
                            .send_stream(id)
                            .reset(varint(codes::STREAM_PROTOCOL));
                        continue;
                    }
                    let read_deadline = ctx.now + ctx.cfg.read_timeout;
                    conn.read_deadlines.insert((read_deadline, id));
                    conn.streams.insert(
                        id,
                        StreamState::Server(ServerStream {
                            reader: FrameReader::default(),
                            phase: Phase::Reading,
                            charged: 0,
                            deadline: None,
                            read_deadline: Some(read_deadline),
                            cancel: None,
                        }),
                    );
                    conn.serving += 1;
                    ctx.stats.requests_in_flight += 1;
                    ctx.stats.requests_in_flight_peak = ctx
                        .stats
                        .requests_in_flight_peak
                        .max(ctx.stats.requests_in_flight);
                    server_read(ctx, conn, id);
                }
            }
            Event::Stream(StreamEvent::Opened { dir: Dir::Uni }) => {
                // Refused by the transport parameters (limit 0); quinn-proto closes the
                // connection before this could happen, but never leave a stream unread.
                while let Some(id) = conn.inner.streams().accept(Dir::Uni) {
                    let _ = conn
                        .inner
                        .recv_stream(id)
                        .stop(varint(codes::STREAM_PROTOCOL));
                }
            }
            Event::Stream(StreamEvent::Readable { id }) => match conn.streams.get(&id) {
                Some(StreamState::Server(_)) => server_read(ctx, conn, id),
                Some(StreamState::Call(_)) => call_read(ctx, conn, id),
                None => {}
            },
            Event::Stream(StreamEvent::Writable { id }) => match conn.streams.get(&id) {
                Some(StreamState::Server(_)) => server_write(ctx, conn, id),
                Some(StreamState::Call(_)) => call_write(conn, id),
                None => {}
            },
            Event::Stream(StreamEvent::Finished { id }) => {
                if let Some(StreamState::Server(s)) = conn.streams.get(&id) {
                    if matches!(s.phase, Phase::Finishing) {
                        conn.drop_server_stream(id, ctx.stats);
                    }
                }
            }
            Event::Stream(StreamEvent::Stopped { id, error_code }) => {
                match conn.streams.get_mut(&id) {
                    Some(StreamState::Server(_)) => {
                        tracing::debug!(conn = conn.id, %id, %error_code, "peer stopped a response");
                        let _ = conn.inner.send_stream(id).reset(error_code);
                        conn.drop_server_stream(id, ctx.stats);
                    }
                    Some(StreamState::Call(c)) => {
                        // The server refused the rest of our request; its response (often an error
                        // frame) may still come on the receive side.
                        c.send = None;
                    }
                    None => {}
                }
            }
            Event::Stream(StreamEvent::Available { dir: Dir::Bi }) => {}
            Event::Stream(StreamEvent::Available { dir: Dir::Uni }) => {}
            Event::HandshakeDataReady | Event::DatagramReceived | Event::DatagramsUnblocked => {}
        }
    }
    open_pending_calls(conn);
    resume_parked(ctx, conn);

    if conn.frame_errors > ctx.cfg.frame_errors_max && !conn.inner.is_closed() {
        tracing::info!(
            conn = conn.id,
            errors = conn.frame_errors,
            "closing abusive connection"
        );
        conn.inner.close(
            ctx.now,
            varint(codes::CONNECTION_ABUSE),
            Bytes::from_static(b"too many malformed frames"),
        );
    }
}

fn fail_everything(conn: &mut Conn, stats: &mut EndpointStats) {
    let reason = conn.lost.clone().unwrap_or(ConnectionError::LocallyClosed);
    for w in conn.connect_waiters.drain(..) {
        w.send(Err(ConnectError::Lost(reason.clone())));
    }
    for p in conn.pending_calls.drain(..) {
        p.reply.send(Err(CallError::ConnectionLost(reason.clone())));
    }
    let ids: Vec<_> = conn.streams.keys().copied().collect();
    for id in ids {
        match conn.streams.get_mut(&id) {
            Some(StreamState::Call(c)) => {
                if let Some(r) = c.reply.take() {
                    r.send(Err(CallError::ConnectionLost(reason.clone())));
                }
                conn.streams.remove(&id);
            }
            Some(StreamState::Server(_)) => conn.drop_server_stream(id, stats),
            None => {}
        }
    }
    conn.parked.clear();
    conn.deadlines.clear();
    conn.read_deadlines.clear();
}

/// Takes a stream's read deadline out of its slot and out of the connection's set.
fn unset_read_deadline(
    set: &mut BTreeSet<(Instant, StreamId)>,
    id: StreamId,
    slot: &mut Option<Instant>,
) {
    if let Some(d) = slot.take() {
        set.remove(&(d, id));
    }
}

fn expire_writes(ctx: &mut Ctx<'_>, conn: &mut Conn) {
    while let Some(&(deadline, id)) = conn.deadlines.front() {
        if deadline > ctx.now {
            break;
        }
        conn.deadlines.pop_front();
        let expired = matches!(
            conn.streams.get(&id),
            Some(StreamState::Server(s)) if s.deadline == Some(deadline)
        );
        if expired {
            tracing::debug!(conn = conn.id, %id, "response write timed out");
            ctx.stats.write_timeouts += 1;
            let _ = conn
                .inner
                .send_stream(id)
                .reset(varint(codes::WRITE_TIMEOUT));
            let _ = conn
                .inner
                .recv_stream(id)
                .stop(varint(codes::WRITE_TIMEOUT));
            conn.drop_server_stream(id, ctx.stats);
        }
    }
}

/// Stops the request streams whose frame did not arrive whole in time (`read_timeout`).
fn expire_reads(ctx: &mut Ctx<'_>, conn: &mut Conn) {
    while let Some(&(deadline, id)) = conn.read_deadlines.first() {
        if deadline > ctx.now {
            break;
        }
        conn.read_deadlines.pop_first();
        let expired = match conn.streams.get_mut(&id) {
            Some(StreamState::Server(s)) if s.read_deadline == Some(deadline) => {
                s.read_deadline = None;
                true
            }
            _ => false,
        };
        if expired {
            tracing::debug!(conn = conn.id, %id, "request read timed out");
            ctx.stats.read_timeouts += 1;
            let _ = conn.inner.recv_stream(id).stop(varint(codes::READ_TIMEOUT));
            let _ = conn
                .inner
                .send_stream(id)
                .reset(varint(codes::READ_TIMEOUT));
            conn.parked.retain(|p| *p != id);
            conn.drop_server_stream(id, ctx.stats);
        }
    }
}

fn server_read(ctx: &mut Ctx<'_>, conn: &mut Conn, id: StreamId) {
    let frame_max = ctx.cfg.frame_bytes_max;
    loop {
        let Some(StreamState::Server(s)) = conn.streams.get_mut(&id) else {
            return;
        };
        if !matches!(s.phase, Phase::Reading) {
            return; // Parked streams wait for budget; later phases read nothing more.
        }
        match read_frame(&mut conn.inner, id, &mut s.reader, frame_max) {
            ReadOutcome::Blocked => return,
            ReadOutcome::NeedAlloc(total) => {
                let admitted = conn.parked.is_empty()
                    && (conn.inflight_bytes == 0
                        || conn.inflight_bytes + total as u64 <= ctx.cfg.inflight_bytes_max);
                if admitted {
                    s.reader.alloc(ctx.pool);
                    charge(&mut conn.inflight_bytes, s, total as u64, ctx.stats);
                } else {
                    // Waiting for our budget is not the peer's delay: no read deadline meanwhile.
                    s.phase = Phase::Parked;
                    unset_read_deadline(&mut conn.read_deadlines, id, &mut s.read_deadline);
                    conn.parked.push_back(id);
                    return;
                }
            }
            ReadOutcome::Done { bytes, fin } => {
                ctx.pool.lend(&bytes);
                if !fin {
                    // The frame is complete; whatever follows is not ours to read. Usually the
                    // FIN is already here and this does not run.
                    let _ = conn.inner.recv_stream(id).stop(varint(codes::NO_ERROR));
                }
                unset_read_deadline(&mut conn.read_deadlines, id, &mut s.read_deadline);
                match frame::decode(bytes, frame_max) {
                    Ok(frame) => {
                        s.phase = Phase::Serving;
                        spawn_service(ctx, conn, id, frame);
                    }
                    Err(e) => {
                        let header = s.reader.header();
                        reject(ctx, conn, id, header, e);
                    }
                }
                return;
            }
            ReadOutcome::Invalid(e) => {
                let header = s.reader.header();
                reject(ctx, conn, id, header, e);
                return;
            }
            ReadOutcome::Reset(code) => {
                tracing::debug!(conn = conn.id, %id, %code, "request stream reset by peer");
                let _ = conn.inner.send_stream(id).reset(varint(codes::CANCELLED));
                conn.drop_server_stream(id, ctx.stats);
                return;
            }
            ReadOutcome::Closed => {
                conn.drop_server_stream(id, ctx.stats);
                return;
            }
        }
    }
}

/// Reads every server stream still reading its request, oldest first.
fn read_open_streams(ctx: &mut Ctx<'_>, conn: &mut Conn) {
    let mut reading: Vec<StreamId> = conn
        .streams
        .iter()
        .filter(|(_, s)| {
            matches!(
                s,
                StreamState::Server(ServerStream {
                    phase: Phase::Reading,
                    ..
                })
            )
        })
        .map(|(id, _)| *id)
        .collect();
    reading.sort_unstable_by_key(|id| id.index());
    for id in reading {
        server_read(ctx, conn, id);
    }
}

fn resume_parked(ctx: &mut Ctx<'_>, conn: &mut Conn) {
    while let Some(&id) = conn.parked.front() {
        let total = match conn.streams.get(&id) {
            Some(StreamState::Server(s)) => s.reader.total.expect("parked after the prefix"),
            _ => {
                conn.parked.pop_front();
                continue;
            }
        };
        if !conn.admits(total as u64, ctx.cfg.inflight_bytes_max) {
            return;
        }
        conn.parked.pop_front();
        if let Some(StreamState::Server(s)) = conn.streams.get_mut(&id) {
            s.reader.alloc(ctx.pool);
            s.phase = Phase::Reading;
            let deadline = ctx.now + ctx.cfg.read_timeout;
            s.read_deadline = Some(deadline);
            conn.read_deadlines.insert((deadline, id));
            charge(&mut conn.inflight_bytes, s, total as u64, ctx.stats);
        }
        server_read(ctx, conn, id);
    }
}

fn reject(
    ctx: &mut Ctx<'_>,
    conn: &mut Conn,
    id: StreamId,
    header: Option<FrameHeader>,
    err: FrameError,
) {
    tracing::debug!(conn = conn.id, %id, error = %err, "malformed request frame");
    ctx.stats.frame_errors += 1;
    conn.frame_errors += 1;
    let code = varint(codes::for_frame_error(&err));
    // Whatever else the peer sends on this stream is not read.
    let _ = conn.inner.recv_stream(id).stop(code);
    let response = ctx.service.and_then(|svc| svc.reject(header, &err));
    let Some(StreamState::Server(mut s)) = conn.streams.remove(&id) else {
        return;
    };
    let charged = s.charged;
    release(&mut conn.inflight_bytes, &mut s, charged, ctx.stats);
    match response {
        Some(resp) => {
            start_writing(conn, id, s, resp, ctx.cfg.write_timeout, ctx.now, ctx.stats);
        }
        None => {
            let _ = conn.inner.send_stream(id).reset(code);
            conn.streams.insert(id, StreamState::Server(s));
            conn.drop_server_stream(id, ctx.stats);
        }
    }
}

fn spawn_service(ctx: &mut Ctx<'_>, conn: &mut Conn, id: StreamId, frame: Frame) {
    let cancel = Rc::new(Cancel::default());
    if let Some(StreamState::Server(s)) = conn.streams.get_mut(&id) {
        s.cancel = Some(cancel.clone());
    }
    let req = Request {
        header: frame.header,
        body: frame.body,
        payload: frame.payload,
        peer: conn.inner.remote_address(),
        connection_id: conn.id,
        identity: conn.identity.clone(),
    };
    ctx.jobs.push(Job {
        req,
        ch: ctx.ch,
        conn_id: conn.id,
        id,
        cancel,
    });
}

/// Starts one service task per job. Call with no borrow of the driver held.
pub(crate) fn spawn_jobs(driver: &Shared, jobs: Vec<Job>) {
    if jobs.is_empty() {
        return;
    }
    let (svc, weak, wake) = {
        let mut d = driver.borrow_mut();
        let Some(svc) = d.service.clone() else {
            return;
        };
        d.stats.service_tasks += jobs.len();
        (svc, d.weak_self.clone(), d.wake.clone())
    };
    for job in jobs {
        let (svc, weak, wake) = (svc.clone(), weak.clone(), wake.clone());
        glommio::spawn_local(async move {
            // A request whose peer went away is dropped where it waits (a long-poll fetch, a
            // wait for budget), so a loop of open, wait, cancel holds no task or memory.
            let call = async { Some(svc.call(job.req).await) };
            let cancelled = async {
                job.cancel.cancelled().await;
                None
            };
            let resp = futures_lite::future::or(call, cancelled).await;
            if let Some(driver) = weak.upgrade() {
                let mut d = driver.borrow_mut();
                d.stats.service_tasks -= 1;
                if let Some(resp) = resp {
                    d.on_response(job.ch, job.conn_id, job.id, resp, Instant::now());
                    drop(d);
                    wake.notify();
                }
            }
        })
        .detach();
    }
}

fn start_writing(
    conn: &mut Conn,
    id: StreamId,
    mut s: ServerStream,
    resp: Response,
    write_timeout: Duration,
    now: Instant,
    stats: &mut EndpointStats,
) {
    let header = match frame::encode_header(
        &resp.header,
        resp.body.len(),
        resp.wire_len() - resp.body.len() - FRAME_HEADER_BYTES,
    ) {
        Ok(h) => h,
        Err(e) => {
            // A service bug, not the peer's doing: say so on the stream rather than panic.
            tracing::error!(conn = conn.id, %id, error = %e, "response cannot be framed");
            let _ = conn
                .inner
                .send_stream(id)
                .reset(varint(codes::RESPONSE_TOO_LARGE));
            conn.streams.insert(id, StreamState::Server(s));
            conn.drop_server_stream(id, stats);
            return;
        }
    };
    let mut chunks = Vec::with_capacity(2 + resp.payload.len());
    chunks.push(Bytes::copy_from_slice(&header));
    if !resp.body.is_empty() {
        chunks.push(resp.body);
    }
    chunks.extend(resp.payload.into_iter().filter(|p| !p.is_empty()));
    let total: u64 = chunks.iter().map(|c| c.len() as u64).sum();
    prioritise(&mut conn.inner, id, total);
    charge(&mut conn.inflight_bytes, &mut s, total, stats);
    unset_read_deadline(&mut conn.read_deadlines, id, &mut s.read_deadline);
    let deadline = now + write_timeout;
    s.deadline = Some(deadline);
    s.phase = Phase::Writing(Outgoing { chunks, next: 0 });
    conn.deadlines.push_back((deadline, id));
    conn.streams.insert(id, StreamState::Server(s));
    write_server_stream(conn, id, stats);
}

/// Small frames go out ahead of bulk ones queued on the connection (streams are sent one after
/// another, see `EndpointConfig::transport`).
fn prioritise(inner: &mut quinn_proto::Connection, id: StreamId, frame_bytes: u64) {
    let priority = frame::send_priority(usize::try_from(frame_bytes).unwrap_or(usize::MAX));
    // Fails only for a stream already closed, which the write that follows reports.
    let _ = inner.send_stream(id).set_priority(priority);
}

fn server_write(ctx: &mut Ctx<'_>, conn: &mut Conn, id: StreamId) {
    write_server_stream(conn, id, ctx.stats);
}

fn write_server_stream(conn: &mut Conn, id: StreamId, stats: &mut EndpointStats) {
    loop {
        let Some(StreamState::Server(s)) = conn.streams.get_mut(&id) else {
            return;
        };
        let Phase::Writing(out) = &mut s.phase else {
            return;
        };
        if out.next == out.chunks.len() {
            match conn.inner.send_stream(id).finish() {
                Ok(()) => s.phase = Phase::Finishing,
                Err(_) => conn.drop_server_stream(id, stats),
            }
            return;
        }
        match conn
            .inner
            .send_stream(id)
            .write_chunks(&mut out.chunks[out.next..])
        {
            Ok(w) => {
                out.next += w.chunks;
                release(&mut conn.inflight_bytes, s, w.bytes as u64, stats);
                if w.bytes == 0 && w.chunks == 0 {
                    return;
                }
            }
            Err(WriteError::Blocked) => return,
            Err(WriteError::Stopped(code)) => {
                tracing::debug!(conn = conn.id, %id, %code, "peer stopped reading a response");
                let _ = conn.inner.send_stream(id).reset(code);
                conn.drop_server_stream(id, stats);
                return;
            }
            Err(WriteError::ClosedStream) => {
                conn.drop_server_stream(id, stats);
                return;
            }
        }
    }
}

fn open_pending_calls(conn: &mut Conn) {
    while !conn.pending_calls.is_empty() {
        if conn.lost.is_some() || conn.inner.is_closed() {
            return;
        }
        let Some(id) = conn.inner.streams().open(Dir::Bi) else {
            return; // At the peer's stream limit; `Available` will bring us back.
        };
        let p = conn.pending_calls.pop_front().expect("non-empty");
        let total: u64 = p.chunks.iter().map(|c| c.len() as u64).sum();
        prioritise(&mut conn.inner, id, total);
        conn.streams.insert(
            id,
            StreamState::Call(CallStream {
                token: p.token,
                send: Some(Outgoing {
                    chunks: p.chunks,
                    next: 0,
                }),
                reader: FrameReader::default(),
                reply: Some(p.reply),
            }),
        );
        call_write(conn, id);
    }
}

fn call_write(conn: &mut Conn, id: StreamId) {
    let Some(StreamState::Call(c)) = conn.streams.get_mut(&id) else {
        return;
    };
    let Some(out) = c.send.as_mut() else {
        return;
    };
    loop {
        if out.next == out.chunks.len() {
            let _ = conn.inner.send_stream(id).finish();
            c.send = None;
            return;
        }
        match conn
            .inner
            .send_stream(id)
            .write_chunks(&mut out.chunks[out.next..])
        {
            Ok(w) => {
                out.next += w.chunks;
                if w.bytes == 0 && w.chunks == 0 {
                    return;
                }
            }
            Err(WriteError::Blocked) => return,
            Err(WriteError::Stopped(_)) | Err(WriteError::ClosedStream) => {
                c.send = None;
                return;
            }
        }
    }
}

fn call_read(ctx: &mut Ctx<'_>, conn: &mut Conn, id: StreamId) {
    let frame_max = ctx.cfg.frame_bytes_max;
    loop {
        let Some(StreamState::Call(c)) = conn.streams.get_mut(&id) else {
            return;
        };
        let result = match read_frame(&mut conn.inner, id, &mut c.reader, frame_max) {
            ReadOutcome::Blocked => return,
            ReadOutcome::NeedAlloc(_) => {
                // The response was asked for; its size is already bounded by frame_bytes_max.
                c.reader.alloc(ctx.pool);
                continue;
            }
            ReadOutcome::Done { bytes, fin } => {
                ctx.pool.lend(&bytes);
                if !fin {
                    let _ = conn.inner.recv_stream(id).stop(varint(codes::NO_ERROR));
                }
                frame::decode(bytes, frame_max).map_err(CallError::Frame)
            }
            ReadOutcome::Invalid(e) => {
                let _ = conn
                    .inner
                    .recv_stream(id)
                    .stop(varint(codes::for_frame_error(&e)));
                Err(CallError::Frame(e))
            }
            ReadOutcome::Reset(code) => Err(CallError::StreamReset {
                code: code.into_inner(),
            }),
            ReadOutcome::Closed => Err(CallError::ConnectionGone),
        };
        let Some(StreamState::Call(mut c)) = conn.streams.remove(&id) else {
            unreachable!("checked above");
        };
        if c.send.is_some() {
            // The answer came before the request was fully sent (an early error response).
            let _ = conn.inner.send_stream(id).reset(varint(codes::CANCELLED));
        }
        if let Some(r) = c.reply.take() {
            if r.is_wanted() {
                r.send(result);
            }
        }
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slot whose datagrams were all dropped gives back the same allocation without copying;
    /// one whose datagram is still held gets a new buffer, and the held datagram keeps its bytes.
    #[test]
    fn a_receive_slot_is_reused_once_free_and_replaced_while_held() {
        let mut slot = RecvSlot::new();
        let base = slot.base;
        slot.whole()[..5].copy_from_slice(b"hello");
        let first = slot.buf.split_to(5).freeze();
        assert_eq!(&first[..], b"hello");
        drop(first);
        let again = slot.whole();
        assert_eq!(again.len(), RECV_BUFFER_BYTES);
        assert_eq!(
            again.as_ptr() as usize,
            base,
            "a free slot keeps its allocation"
        );

        slot.whole()[..5].copy_from_slice(b"world");
        let held = slot.buf.split_to(5).freeze();
        let fresh = slot.whole();
        assert_eq!(fresh.len(), RECV_BUFFER_BYTES);
        assert_ne!(
            fresh.as_ptr() as usize,
            base,
            "a held slot is not written over"
        );
        fresh[..5].copy_from_slice(b"xxxxx");
        assert_eq!(&held[..], b"world");
    }
}
