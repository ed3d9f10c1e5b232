//! The public face of one core's QUIC endpoint, and the three glommio tasks that drive it:
//!
//! - the receive task sleeps in io_uring until the socket has datagrams, drains it with
//!   recvmmsg/GRO one batch at a time and after each batch drives the connections it touched
//!   (ACKs go out at once) and hands completed requests to the service;
//! - the driver task wakes on quinn-proto timers, write deadlines and application input
//!   (service responses, dial-out calls, closes) and drives the marked connections, gathering
//!   the transmits of every connection that has something to send;
//! - the transmit task exists for the rare full socket buffer: it waits in io_uring until the
//!   kernel takes the blocked datagram, then lets the others send again.

use std::{
    cell::RefCell,
    net::SocketAddr,
    rc::Rc,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_lite::future;
use quinn_proto::{
    crypto::rustls::{NoInitialCipherSuite, QuicClientConfig, QuicServerConfig},
    ConnectionHandle,
};
use quiver_proto::frame::{self, Frame, FrameError, FrameHeader, FRAME_HEADER_BYTES};

use crate::{
    codes,
    config::EndpointConfig,
    driver::{spawn_jobs, Driver, EndpointStats, RecvSlots, Shared, SHUTDOWN_DRAIN_MAX},
    error::{CallError, ConnectError},
    service::{DynService, Service},
    tls::PeerIdentity,
    udp::UdpIo,
};

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
        let transport = self.config.transport();
        let (server_config, service) = match self.server {
            Some((tls, service)) => {
                let crypto = QuicServerConfig::try_from(tls)?;
                let mut sc = quinn_proto::ServerConfig::with_crypto(Arc::new(crypto));
                sc.transport_config(transport.clone());
                // A connection stays on the core that accepted it (ARCHITECTURE.md): the socket
                // group routes by source port, so a client that changed address would land
                // elsewhere.
                sc.migration(false);
                (Some(Arc::new(sc)), Some(service))
            }
            None => (None, None),
        };
        let client_config = match self.client_tls {
            Some(tls) => {
                let crypto = QuicClientConfig::try_from(tls)?;
                let mut cc = quinn_proto::ClientConfig::new(Arc::new(crypto));
                cc.transport_config(transport);
                Some(cc)
            }
            None => None,
        };
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
        let driver = Driver::new(self.config, udp, server_config, client_config, service);
        glommio::spawn_local(recv_task(driver.clone())).detach();
        glommio::spawn_local(driver_task(driver.clone())).detach();
        glommio::spawn_local(transmit_task(driver.clone())).detach();
        Ok(Endpoint { driver, local_addr })
    }
}

/// One core's QUIC endpoint. `!Send`: it lives on the glommio executor that bound it, and so do
/// all its connections. Dropping the handle does not stop it; call `shutdown`.
pub struct Endpoint {
    driver: Shared,
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
        self.driver.borrow().stats()
    }

    /// Dials out from this endpoint's socket (broker to broker), completing the handshake.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<ClientConnection, ConnectError> {
        let (ch, id, rx) = {
            let mut d = self.driver.borrow_mut();
            if d.stopped {
                return Err(ConnectError::EndpointClosed);
            }
            let r = d.connect(addr, server_name, Instant::now())?;
            d.wake.notify();
            r
        };
        match rx.await {
            Some(Ok(())) => Ok(ClientConnection {
                driver: self.driver.clone(),
                ch,
                id,
                remote: addr,
            }),
            Some(Err(e)) => Err(e),
            None => Err(ConnectError::EndpointClosed),
        }
    }

    /// Graceful shutdown: refuse new connections and new streams, let requests in flight finish
    /// for up to `grace`, close every connection with `codes::SHUTDOWN` and the reason "broker
    /// shutting down", give the closes a moment to reach peers, then stop the tasks.
    pub async fn shutdown(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        let idle = {
            let mut d = self.driver.borrow_mut();
            if d.stopped {
                return;
            }
            d.begin_shutdown();
            d.wake.notify();
            d.idle_wake.clone()
        };
        loop {
            let now = Instant::now();
            if self.driver.borrow().requests_in_flight() == 0 || now >= deadline {
                break;
            }
            future::or(idle.wait(), glommio::timer::sleep(deadline - now)).await;
        }
        {
            let mut d = self.driver.borrow_mut();
            d.close_all(codes::SHUTDOWN, "broker shutting down", Instant::now());
            d.wake.notify();
        }
        let drain_deadline = Instant::now() + SHUTDOWN_DRAIN_MAX;
        loop {
            let now = Instant::now();
            if self.driver.borrow().connections() == 0 || now >= drain_deadline {
                break;
            }
            future::or(idle.wait(), glommio::timer::sleep(drain_deadline - now)).await;
        }
        let d = &mut *self.driver.borrow_mut();
        d.stopped = true;
        d.wake.notify();
        d.tx_wake.notify();
        d.stop_wake.notify();
    }
}

async fn recv_task(driver: Shared) {
    let (udp, stop) = {
        let d = driver.borrow();
        (d.udp.clone(), d.stop_wake.clone())
    };
    let mut recv = RecvSlots::new();
    let mut more = false;
    loop {
        if driver.borrow().stopped {
            return;
        }
        if !more {
            let readable = future::or(async { Some(udp.readable().await) }, async {
                stop.wait().await;
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
        // One recvmmsg batch, then the connections it touched are driven (stream data is read
        // while still in cache, ACKs go out) and the requests it completed are handed to the
        // service before the next batch: a request's response does not wait for the socket to
        // be drained.
        let (m, wake, jobs) = {
            let mut d = driver.borrow_mut();
            let now = Instant::now();
            let m = d.on_readable_socket(&mut recv, now);
            d.drive(now);
            (m, d.has_work().then(|| d.wake.clone()), d.take_jobs())
        };
        more = m;
        spawn_jobs(&driver, jobs);
        if let Some(w) = wake {
            w.notify();
        }
        if more {
            // Let the service tasks and the driver task (responses) run between batches.
            future::yield_now().await;
        }
    }
}

async fn driver_task(driver: Shared) {
    let wake = driver.borrow().wake.clone();
    loop {
        let (deadline, work, jobs) = {
            let mut d = driver.borrow_mut();
            if d.stopped {
                return;
            }
            d.driver_sleep = None;
            let now = Instant::now();
            d.fire_timers(now);
            d.drive(now);
            (d.next_deadline(), d.has_work(), d.take_jobs())
        };
        spawn_jobs(&driver, jobs);
        if work {
            future::yield_now().await;
            continue;
        }
        driver.borrow_mut().driver_sleep = Some(deadline);
        match deadline {
            Some(t) => {
                let now = Instant::now();
                if t > now {
                    future::or(wake.wait(), glommio::timer::sleep(t - now)).await;
                }
            }
            None => wake.wait().await,
        }
    }
}

async fn transmit_task(driver: Shared) {
    let (udp, tx_wake) = {
        let d = driver.borrow();
        (d.udp.clone(), d.tx_wake.clone())
    };
    loop {
        tx_wake.wait().await;
        let blocked = {
            let mut d = driver.borrow_mut();
            if d.stopped {
                return;
            }
            d.take_blocked()
        };
        if let Some((contents, segment_size, destination)) = blocked {
            if let Err(e) = udp.send_waiting(&contents, segment_size, destination).await {
                tracing::debug!(error = %e, "blocked send failed");
            }
        }
        let mut d = driver.borrow_mut();
        d.unblock();
        d.wake.notify();
    }
}

/// A dial-out connection (broker to broker). Cheap to clone; `!Send` like its endpoint.
#[derive(Clone)]
pub struct ClientConnection {
    driver: Shared,
    ch: ConnectionHandle,
    id: u64,
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
            let mut d = self.driver.borrow_mut();
            if d.stopped {
                return Err(CallError::EndpointClosed);
            }
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
            let (token, rx) = d.start_call(self.ch, self.id, chunks)?;
            d.wake.notify();
            (token, rx, d.cfg.call_timeout)
        };
        let mut guard = CancelOnDrop {
            driver: &self.driver,
            ch: self.ch,
            id: self.id,
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
        let mut d = self.driver.borrow_mut();
        d.close(
            self.ch,
            self.id,
            codes::CLOSED_BY_APPLICATION,
            reason,
            Instant::now(),
        );
        d.wake.notify();
    }

    /// The server certificate's names.
    pub fn peer_identity(&self) -> Option<Arc<PeerIdentity>> {
        self.driver.borrow().peer_identity(self.ch, self.id)
    }

    pub fn remote_address(&self) -> SocketAddr {
        self.remote
    }
}

/// Resets a call's stream when its future is dropped or times out before the response.
struct CancelOnDrop<'a> {
    driver: &'a RefCell<Driver>,
    ch: ConnectionHandle,
    id: u64,
    token: u64,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(mut d) = self.driver.try_borrow_mut() {
            d.cancel_call(self.ch, self.id, self.token);
            d.wake.notify();
        }
    }
}
