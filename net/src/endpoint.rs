//! The public face of one core's QUIC endpoint, and the three glommio tasks that own its I/O
//! and feed the sans-IO driver (`driver/`, whose call order they follow):
//!
//! - the receive task sleeps in io_uring until the socket has datagrams, drains it with
//!   recvmmsg/GRO one batch at a time and after each batch has the driver process the
//!   connections it touched (ACKs go out at once) and spawns the service tasks of the requests
//!   it completed;
//! - the driver task wakes on the driver's deadline (quinn-proto timers, read and write
//!   deadlines) and on application input (service responses, dial-out calls, closes) and sends
//!   the transmits of every connection that has something to send;
//! - the transmit task exists for the rare full socket buffer: it waits in io_uring until the
//!   kernel takes the blocked datagram, then lets the others send again.
//!
//! Service requests run in tasks of their own (`spawn_jobs`), dropped when the driver cancels
//! them; dial-out callers wait on oneshots that the driver's `DialEvent`s complete.

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    io,
    net::SocketAddr,
    rc::{Rc, Weak},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_lite::future;
use quinn_proto::crypto::rustls::{NoInitialCipherSuite, QuicClientConfig, QuicServerConfig};
use quiver_proto::frame::{self, Frame, FrameError, FrameHeader, FRAME_HEADER_BYTES};

use crate::{
    codes,
    config::EndpointConfig,
    driver::{DialConn, DialEvent, Driver, EndpointStats, Job, SocketCaps},
    error::{CallError, ConnectError},
    service::{DynService, Service},
    sync::{oneshot, Notify, OneshotSender},
    tls::PeerIdentity,
    udp::{to_udp_ecn, RecvSlots, UdpIo},
};

/// How long closing connections get to deliver CONNECTION_CLOSE and drain at shutdown.
const SHUTDOWN_DRAIN_MAX: Duration = Duration::from_secs(2);

/// How long answered requests' responses get to be acknowledged at shutdown.
const SHUTDOWN_DELIVERY_MAX: Duration = Duration::from_millis(500);

/// Why an endpoint could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("UDP socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS configuration unusable for QUIC: {0}")]
    Tls(#[from] NoInitialCipherSuite),
}

/// Builds an endpoint: a server side (TLS + service), a dial-out side (client TLS), or both.
pub struct EndpointBuilder {
    addr: SocketAddr,
    config: EndpointConfig,
    server: Option<(Arc<rustls::ServerConfig>, Rc<dyn DynService>)>,
    client_tls: Option<Arc<rustls::ClientConfig>>,
    socket: Option<socket2::Socket>,
}

impl EndpointBuilder {
    pub fn config(mut self, config: EndpointConfig) -> Self {
        self.config = config;
        self
    }

    /// Accept connections and serve their requests with `service`.
    pub fn server<S: Service>(mut self, tls: Arc<rustls::ServerConfig>, service: S) -> Self {
        self.server = Some((tls, Rc::new(service)));
        self
    }

    /// Use this bound socket (one of [`crate::bind_steered_group`]'s) instead of binding one.
    pub fn socket(mut self, socket: socket2::Socket) -> Self {
        self.socket = Some(socket);
        self
    }

    /// Allow dial-out (`Endpoint::connect`) with this client TLS configuration.
    pub fn client(mut self, tls: Arc<rustls::ClientConfig>) -> Self {
        self.client_tls = Some(tls);
        self
    }

    /// Binds the UDP socket and starts the endpoint's tasks on the current glommio executor.
    /// Panics if called outside a glommio executor (a bug in the caller, not input).
    pub fn bind(self) -> Result<Endpoint, BindError> {
        let (server_tls, service) = match self.server {
            Some((tls, service)) => (Some(tls), Some(service)),
            None => (None, None),
        };
        let (server_config, client_config) =
            quinn_configs(&self.config, server_tls, self.client_tls)?;
        let udp = match self.socket {
            Some(socket) => UdpIo::from_socket(socket, self.config.socket_buffer_bytes)?,
            None => UdpIo::bind(
                self.addr,
                self.config.reuse_port,
                self.config.socket_buffer_bytes,
            )?,
        };
        let local_addr = udp.local_addr();
        tracing::debug!(
            %local_addr,
            gso = udp.max_gso_segments(),
            gro = udp.gro_segments(),
            "endpoint bound"
        );
        let caps = SocketCaps {
            gso_segments_max: udp.max_gso_segments(),
            may_fragment: udp.may_fragment(),
        };
        let driver = Driver::new(
            self.config,
            server_config,
            client_config,
            service.clone(),
            caps,
            None,
        );
        let shared = Rc::new(Shared {
            driver: RefCell::new(driver),
            udp,
            service,
            wake: Notify::default(),
            tx_wake: Notify::default(),
            idle_wake: Notify::default(),
            stop_wake: Notify::default(),
            stopped: Cell::new(false),
            driver_sleep: Cell::new(None),
            io: RefCell::new(Io {
                send_buf: Vec::with_capacity(64 * 1024),
                blocked: None,
                connects: HashMap::new(),
                calls: HashMap::new(),
                service_tasks: 0,
                datagrams_sent: 0,
                send_calls: 0,
            }),
        });
        glommio::spawn_local(recv_task(shared.clone())).detach();
        glommio::spawn_local(driver_task(shared.clone())).detach();
        glommio::spawn_local(transmit_task(shared.clone())).detach();
        Ok(Endpoint { shared, local_addr })
    }
}

/// quinn-proto's server and client configurations for TLS configurations and these limits.
pub(crate) fn quinn_configs(
    config: &EndpointConfig,
    server_tls: Option<Arc<rustls::ServerConfig>>,
    client_tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<
    (
        Option<Arc<quinn_proto::ServerConfig>>,
        Option<quinn_proto::ClientConfig>,
    ),
    NoInitialCipherSuite,
> {
    let transport = config.transport();
    let server_config = match server_tls {
        Some(tls) => {
            let crypto = QuicServerConfig::try_from(tls)?;
            let mut sc = quinn_proto::ServerConfig::with_crypto(Arc::new(crypto));
            sc.transport_config(transport.clone());
            // A connection stays on the core that accepted it (ARCHITECTURE.md): the socket
            // group routes by source port, so a client that changed address would land
            // elsewhere.
            sc.migration(false);
            Some(Arc::new(sc))
        }
        None => None,
    };
    let client_config = match client_tls {
        Some(tls) => {
            let crypto = QuicClientConfig::try_from(tls)?;
            let mut cc = quinn_proto::ClientConfig::new(Arc::new(crypto));
            cc.transport_config(transport);
            Some(cc)
        }
        None => None,
    };
    Ok((server_config, client_config))
}

/// What the endpoint's tasks share: the driver, the socket, the wakers. Lives on one executor.
struct Shared {
    driver: RefCell<Driver>,
    udp: UdpIo,
    service: Option<Rc<dyn DynService>>,
    /// Wakes the driver task (service completions, calls, closes, an earlier deadline).
    wake: Notify,
    /// Wakes the transmit task when a send hit a full socket buffer.
    tx_wake: Notify,
    /// Wakes a shutdown in progress when requests or connections drain.
    idle_wake: Notify,
    /// Wakes the receive task so that it can exit.
    stop_wake: Notify,
    stopped: Cell<bool>,
    /// While the driver task sleeps: until when (`None`: until woken). A deadline armed
    /// earlier than that by the receive task must wake it, or the deadline would be missed.
    driver_sleep: Cell<Option<Option<Instant>>>,
    io: RefCell<Io>,
}

/// The I/O side's state, borrowed only with the driver's borrow held or alone, never across an
/// `.await`.
struct Io {
    /// Where the driver writes each transmit; one buffer, reused.
    send_buf: Vec<u8>,
    /// A transmit that found the socket buffer full, for the transmit task.
    blocked: Option<BlockedTransmit>,
    /// Dial-out handshakes waited for, by connection id.
    connects: HashMap<u64, OneshotSender<Result<(), ConnectError>>>,
    /// Dial-out calls waited for, by token.
    calls: HashMap<u64, OneshotSender<Result<Frame, CallError>>>,
    service_tasks: usize,
    datagrams_sent: u64,
    send_calls: u64,
}

struct BlockedTransmit {
    contents: Vec<u8>,
    segment_size: Option<usize>,
    destination: SocketAddr,
}

impl Shared {
    /// Steps 4 to 6 of the driver's call order: one pass of transmits sent, its jobs collected
    /// into `jobs` (spawn them once the borrow is let go), its dial-out events delivered.
    fn pump(&self, d: &mut Driver, now: Instant, jobs: &mut Vec<Job>) {
        let io = &mut *self.io.borrow_mut();
        while let Some(t) = d.poll_transmit(now, &mut io.send_buf) {
            let contents = &io.send_buf[..t.size];
            let sent = self.udp.send(&quinn_udp::Transmit {
                destination: t.destination,
                ecn: t.ecn.map(to_udp_ecn),
                contents,
                segment_size: t.segment_size,
                src_ip: t.src_ip,
            });
            if t.stateless {
                continue; // Best effort; the peer retries.
            }
            match sent {
                Ok(()) => {
                    io.send_calls += 1;
                    io.datagrams_sent += t.datagrams() as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    io.blocked = Some(BlockedTransmit {
                        contents: contents.to_vec(),
                        segment_size: t.segment_size,
                        destination: t.destination,
                    });
                    d.handle_send_blocked();
                    self.tx_wake.notify();
                }
                Err(e) => tracing::debug!(error = %e, "send error"),
            }
        }
        jobs.extend(std::iter::from_fn(|| d.poll_job()));
        while let Some(ev) = d.poll_event() {
            match ev {
                DialEvent::Connected { conn_id, result } => {
                    if let Some(tx) = io.connects.remove(&conn_id) {
                        tx.send(result);
                    }
                }
                DialEvent::Response { token, result } => {
                    if let Some(tx) = io.calls.remove(&token) {
                        if tx.is_wanted() {
                            tx.send(result);
                        }
                    }
                }
            }
        }
        if d.is_shutting_down() {
            self.idle_wake.notify();
        }
    }

    fn stats(&self) -> EndpointStats {
        let mut s = self.driver.borrow().stats();
        let io = self.io.borrow();
        s.service_tasks = io.service_tasks;
        s.datagrams_sent = io.datagrams_sent;
        s.send_calls = io.send_calls;
        s
    }
}

/// One core's QUIC endpoint. `!Send`: it lives on the glommio executor that bound it, and so do
/// all its connections. Dropping the handle does not stop it; call `shutdown`.
pub struct Endpoint {
    shared: Rc<Shared>,
    local_addr: SocketAddr,
}

impl Endpoint {
    pub fn builder(addr: SocketAddr) -> EndpointBuilder {
        EndpointBuilder {
            addr,
            config: EndpointConfig::default(),
            server: None,
            client_tls: None,
            socket: None,
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn stats(&self) -> EndpointStats {
        self.shared.stats()
    }

    /// Dials out from this endpoint's socket (broker to broker), completing the handshake.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<ClientConnection, ConnectError> {
        let (conn, rx) = {
            if self.shared.stopped.get() {
                return Err(ConnectError::EndpointClosed);
            }
            let conn =
                self.shared
                    .driver
                    .borrow_mut()
                    .connect(Instant::now(), addr, server_name)?;
            let (tx, rx) = oneshot();
            self.shared.io.borrow_mut().connects.insert(conn.id, tx);
            self.shared.wake.notify();
            (conn, rx)
        };
        match rx.await {
            Some(Ok(())) => Ok(ClientConnection {
                shared: self.shared.clone(),
                conn,
                remote: addr,
            }),
            Some(Err(e)) => Err(e),
            None => Err(ConnectError::EndpointClosed),
        }
    }

    /// Graceful shutdown: refuse new connections and new streams, let requests in flight be
    /// answered for up to `grace`, then give responses still being delivered up to
    /// `SHUTDOWN_DELIVERY_MAX` more (within `grace`) to be acknowledged, close every connection
    /// with `codes::SHUTDOWN` and the reason "broker shutting down", give the closes a moment
    /// to reach peers, then stop the tasks. A client that went away without closing its
    /// connection never acknowledges its last response; it costs the stop at most
    /// `SHUTDOWN_DELIVERY_MAX`, not `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        let shared = &self.shared;
        if shared.stopped.get() {
            return;
        }
        let deadline = Instant::now() + grace;
        shared.driver.borrow_mut().begin_shutdown();
        shared.wake.notify();
        let mut delivery_deadline = None;
        loop {
            let now = Instant::now();
            let (in_flight, unanswered) = {
                let d = shared.driver.borrow();
                (d.requests_in_flight(), d.requests_unanswered())
            };
            if in_flight == 0 || now >= deadline {
                break;
            }
            if unanswered == 0 {
                let until = *delivery_deadline.get_or_insert(now + SHUTDOWN_DELIVERY_MAX);
                if now >= until {
                    break;
                }
            }
            let deadline = delivery_deadline.map_or(deadline, |d: Instant| d.min(deadline));
            future::or(
                shared.idle_wake.wait(),
                glommio::timer::sleep(deadline - now),
            )
            .await;
        }
        shared.driver.borrow_mut().close_all(
            Instant::now(),
            codes::SHUTDOWN,
            "broker shutting down",
        );
        shared.wake.notify();
        let drain_deadline = Instant::now() + SHUTDOWN_DRAIN_MAX;
        loop {
            let now = Instant::now();
            if shared.driver.borrow().connections() == 0 || now >= drain_deadline {
                break;
            }
            future::or(
                shared.idle_wake.wait(),
                glommio::timer::sleep(drain_deadline - now),
            )
            .await;
        }
        shared.stopped.set(true);
        shared.wake.notify();
        shared.tx_wake.notify();
        shared.stop_wake.notify();
    }
}

async fn recv_task(shared: Rc<Shared>) {
    let mut recv = RecvSlots::new();
    let mut jobs = Vec::new();
    let mut more = false;
    loop {
        if shared.stopped.get() {
            return;
        }
        if !more {
            let readable = future::or(async { Some(shared.udp.readable().await) }, async {
                shared.stop_wake.wait().await;
                None
            })
            .await;
            match readable {
                None => continue,
                Some(Err(e)) => {
                    // A pending socket error (e.g. an ICMP report) is consumed by the failed
                    // peek; pause briefly so a persistent one cannot spin the core.
                    tracing::debug!(error = %e, "socket wait failed");
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                Some(Ok(())) => {}
            }
        }
        // One recvmmsg batch, then the connections it touched are processed (stream data is
        // read while still in cache, ACKs go out) and the requests it completed are handed to
        // the service before the next batch: a request's response does not wait for the socket
        // to be drained.
        let wake = {
            let d = &mut *shared.driver.borrow_mut();
            let now = Instant::now();
            more = recv.recv(&shared.udp, |remote, local_ip, ecn, data| {
                d.handle_datagram(now, remote, local_ip, ecn, data)
            });
            shared.pump(d, now, &mut jobs);
            // The driver task sleeps until its deadline: wake it for more work or for a
            // deadline this pass armed earlier than that.
            let earlier = match (shared.driver_sleep.get(), d.poll_timeout()) {
                (Some(until), Some(t)) => until.is_none_or(|u| t < u),
                _ => false,
            };
            if earlier {
                shared.driver_sleep.set(None);
            }
            earlier || d.has_work()
        };
        spawn_jobs(&shared, &mut jobs);
        if wake {
            shared.wake.notify();
        }
        if more {
            // Let the service tasks and the driver task (responses) run between batches.
            future::yield_now().await;
        }
    }
}

async fn driver_task(shared: Rc<Shared>) {
    let mut jobs = Vec::new();
    loop {
        if shared.stopped.get() {
            return;
        }
        let (deadline, work) = {
            let d = &mut *shared.driver.borrow_mut();
            shared.driver_sleep.set(None);
            let now = Instant::now();
            d.handle_timeout(now);
            shared.pump(d, now, &mut jobs);
            (d.poll_timeout(), d.has_work())
        };
        spawn_jobs(&shared, &mut jobs);
        if work {
            future::yield_now().await;
            continue;
        }
        shared.driver_sleep.set(Some(deadline));
        match deadline {
            Some(t) => {
                let now = Instant::now();
                if t > now {
                    future::or(shared.wake.wait(), glommio::timer::sleep(t - now)).await;
                }
            }
            None => shared.wake.wait().await,
        }
    }
}

async fn transmit_task(shared: Rc<Shared>) {
    loop {
        shared.tx_wake.wait().await;
        if shared.stopped.get() {
            return;
        }
        let blocked = shared.io.borrow_mut().blocked.take();
        if let Some(b) = blocked {
            if let Err(e) = shared
                .udp
                .send_waiting(&b.contents, b.segment_size, b.destination)
                .await
            {
                tracing::debug!(error = %e, "blocked send failed");
            }
        }
        shared.driver.borrow_mut().handle_send_unblocked();
        shared.wake.notify();
    }
}

/// Starts one service task per job (step 5). Call with no borrow of the driver held: glommio
/// may run a spawned task at once, and the service must never run inside the driver's borrow.
fn spawn_jobs(shared: &Rc<Shared>, jobs: &mut Vec<Job>) {
    if jobs.is_empty() {
        return;
    }
    let Some(svc) = shared.service.clone() else {
        jobs.clear();
        return;
    };
    shared.io.borrow_mut().service_tasks += jobs.len();
    for job in jobs.drain(..) {
        let svc = svc.clone();
        let weak: Weak<Shared> = Rc::downgrade(shared);
        glommio::spawn_local(async move {
            let Job { req, key, cancel } = job;
            // A request whose peer went away is dropped where it waits (a long-poll fetch, a
            // wait for budget), so a loop of open, wait, cancel holds no task or memory.
            let call = async { Some(svc.call(req).await) };
            let cancelled = async {
                cancel.cancelled().await;
                None
            };
            let resp = future::or(call, cancelled).await;
            if let Some(shared) = weak.upgrade() {
                shared.io.borrow_mut().service_tasks -= 1;
                if let Some(resp) = resp {
                    shared
                        .driver
                        .borrow_mut()
                        .handle_response(Instant::now(), key, resp);
                    shared.wake.notify();
                }
            }
        })
        .detach();
    }
}

/// A dial-out connection (broker to broker). Cheap to clone; `!Send` like its endpoint.
#[derive(Clone)]
pub struct ClientConnection {
    shared: Rc<Shared>,
    conn: DialConn,
    remote: SocketAddr,
}

impl ClientConnection {
    /// Sends one request frame on a new stream and waits for its response frame. Calls on one
    /// connection run concurrently, up to the peer's stream limit (then they queue).
    pub async fn call(
        &self,
        header: FrameHeader,
        body: Bytes,
        payload: Vec<Bytes>,
    ) -> Result<Frame, CallError> {
        let payload_len: usize = payload.iter().map(Bytes::len).sum();
        let (token, rx, timeout) = {
            if self.shared.stopped.get() {
                return Err(CallError::EndpointClosed);
            }
            let mut d = self.shared.driver.borrow_mut();
            let total = FRAME_HEADER_BYTES + body.len() + payload_len;
            if total > d.cfg.frame_bytes_max {
                return Err(CallError::Frame(FrameError::TooLarge {
                    len: total,
                    max: d.cfg.frame_bytes_max,
                }));
            }
            let mut chunks = Vec::with_capacity(2 + payload.len());
            chunks.push(Bytes::copy_from_slice(
                &frame::encode_header(&header, body.len(), payload_len)
                    .map_err(CallError::Frame)?,
            ));
            if !body.is_empty() {
                chunks.push(body);
            }
            chunks.extend(payload.into_iter().filter(|p| !p.is_empty()));
            let token = d.start_call(self.conn, chunks)?;
            let (tx, rx) = oneshot();
            self.shared.io.borrow_mut().calls.insert(token, tx);
            self.shared.wake.notify();
            (token, rx, d.cfg.call_timeout)
        };
        let mut guard = CancelOnDrop {
            shared: &self.shared,
            conn: self.conn,
            token,
            armed: true,
        };
        let outcome = future::or(async { Some(rx.await) }, async {
            glommio::timer::sleep(timeout).await;
            None
        })
        .await;
        match outcome {
            Some(Some(result)) => {
                guard.armed = false;
                result
            }
            Some(None) => {
                guard.armed = false;
                Err(CallError::ConnectionGone)
            }
            None => Err(CallError::Timeout(timeout)),
        }
    }

    /// Closes the connection with `codes::CLOSED_BY_APPLICATION` and `reason`.
    pub fn close(&self, reason: &str) {
        self.shared.driver.borrow_mut().close(
            Instant::now(),
            self.conn,
            codes::CLOSED_BY_APPLICATION,
            reason,
        );
        self.shared.wake.notify();
    }

    /// The server certificate's names.
    pub fn peer_identity(&self) -> Option<Arc<PeerIdentity>> {
        self.shared.driver.borrow().peer_identity(self.conn)
    }

    pub fn remote_address(&self) -> SocketAddr {
        self.remote
    }
}

/// Resets a call's stream when its future is dropped or times out before the response.
struct CancelOnDrop<'a> {
    shared: &'a Shared,
    conn: DialConn,
    token: u64,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(mut io) = self.shared.io.try_borrow_mut() {
            io.calls.remove(&self.token);
        }
        if let Ok(mut d) = self.shared.driver.try_borrow_mut() {
            d.cancel_call(self.conn, self.token);
            self.shared.wake.notify();
        }
    }
}
