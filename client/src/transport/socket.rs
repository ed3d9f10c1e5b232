//! The SDK's UDP socket under quinn: a transmit split into sends that fit, a broker whose port
//! refuses packets raised at once ([`PeerGone`]), a source port steered to a broker's shard, and
//! the route's MTU as the ceiling of path MTU discovery. The connection and its calls are in
//! the parent module.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use quiver_sockbuf::size_buffers;

use super::ConnectOptions;

/// The most one UDP send may carry, GSO segments included (the IPv4 total length is 16 bits).
const UDP_SEND_BYTES_MAX: usize = 65_000;

/// Attempts at binding a source port of the wanted residue before settling for any port.
const STEERED_BIND_ATTEMPTS: usize = 64;

/// An endpoint whose UDP source port p has `p % shards == shard`: random ports of that residue
/// in the usual ephemeral range, until one is free.
pub(super) fn steered_endpoint(
    bind: SocketAddr,
    peer: SocketAddr,
    shard: u16,
    shards: u16,
    opts: &ConnectOptions,
    payload_max: u16,
    gone: &Arc<PeerGone>,
) -> std::io::Result<quinn::Endpoint> {
    use rand::Rng;
    const LOW: u32 = 32_768;
    const HIGH: u32 = 61_000;
    let (shard, shards) = (u32::from(shard), u32::from(shards.max(1)));
    let mut rng = rand::thread_rng();
    for _ in 0..STEERED_BIND_ATTEMPTS {
        let base = rng.gen_range(LOW..HIGH);
        let port = base - base % shards + shard % shards;
        let mut at = bind;
        at.set_port(port as u16);
        match client_endpoint(
            at,
            peer,
            opts.socket_buffer_bytes,
            payload_max,
            gone.clone(),
        ) {
            Ok(e) => return Ok(e),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(e),
        }
    }
    tracing::debug!(
        shard,
        shards,
        "no free source port for the shard; connecting from any port"
    );
    client_endpoint(
        bind,
        peer,
        opts.socket_buffer_bytes,
        payload_max,
        gone.clone(),
    )
}

/// The SDK's UDP socket: quinn's own, except that a transmit of several GSO segments larger than
/// one UDP send may carry is split into sends that fit. quinn batches up to 10 segments of the
/// current MTU per transmit; once MTU discovery has grown packets past 6.5 KB that exceeds 64
/// KiB, and the kernel refuses the send with EMSGSIZE, which quinn-udp takes for a failed MTU
/// probe and drops silently: every large batch would be lost.
///
/// Its socket is connected to the one broker it talks to, so the kernel reports an ICMP "port
/// unreachable" for it: the broker's process is gone (killed, crashed) while its host lives.
/// That error (`ECONNREFUSED` on the next receive or send) is taken out of quinn's way and
/// raised on [`PeerGone`], which fails the connection's calls at once, as a TCP reset would;
/// without it a call to a dead broker waited for its timeout (30 s) before the client moved to
/// the new leader (`bench/replication.sh` measured 35 s to the first acks=all produce after a
/// leader's kill -9).
#[derive(Debug)]
struct SplitSends {
    io: Arc<tokio::net::UdpSocket>,
    state: quinn::udp::UdpSocketState,
    gone: Arc<PeerGone>,
}

/// Raised when the broker's UDP port refuses packets (its process is gone).
#[derive(Debug, Default)]
pub(crate) struct PeerGone {
    raised: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
    /// The connection's socket, for [`PeerGone::probe`].
    socket: std::sync::OnceLock<Arc<tokio::net::UdpSocket>>,
}

/// How often a call waiting for its answer checks that the broker's port still takes packets.
pub(super) const PROBE_EVERY: Duration = Duration::from_millis(250);
/// The same while a handshake is under way: the kernel's "port unreachable" for the first
/// handshake packet is only reported by the next send, and quinn's first retransmission of it
/// comes after about a second.
pub(super) const CONNECT_PROBE_EVERY: Duration = Duration::from_millis(50);

impl PeerGone {
    /// Sends an empty datagram to the broker: a live one drops it (it is no QUIC packet); a
    /// dead one's host answers "port unreachable", which raises this. A call that waits for an
    /// answer sends nothing else: without it, a broker killed after acknowledging the request
    /// went unnoticed until the next keep-alive (5 s).
    pub(super) fn probe(&self) {
        if let Some(socket) = self.socket.get() {
            match socket.try_send(&[]) {
                Err(e) if refused(&e) => self.raise(),
                _ => {}
            }
        }
    }

    fn raise(&self) {
        self.raised.store(true, std::sync::atomic::Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    fn is_raised(&self) -> bool {
        self.raised.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Resolves once raised.
    pub(super) async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_raised() {
                return;
            }
            notified.await;
        }
    }
}

fn refused(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::ConnectionRefused
}

impl SplitSends {
    /// `socket` (non-blocking is set here) on the running tokio runtime.
    fn new(socket: std::net::UdpSocket, gone: Arc<PeerGone>) -> std::io::Result<SplitSends> {
        let state = quinn::udp::UdpSocketState::new((&socket).into())?;
        socket.set_nonblocking(true)?;
        let io = Arc::new(tokio::net::UdpSocket::from_std(socket)?);
        let _ = gone.socket.set(io.clone());
        Ok(SplitSends { io, state, gone })
    }

    /// One send, with quinn's own rules for errors (only WouldBlock is returned: a datagram
    /// that cannot go is lost, as on the wire; EMSGSIZE is a failed MTU probe), except that
    /// the broker's port refusing packets raises `gone`.
    fn send_one(&self, transmit: &quinn::udp::Transmit) -> std::io::Result<()> {
        let sent = self.io.try_io(tokio::io::Interest::WRITABLE, || {
            self.state.try_send((&*self.io).into(), transmit)
        });
        match sent {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Err(e),
            Err(e) if refused(&e) => {
                self.gone.raise();
                Ok(())
            }
            Err(e) => {
                tracing::trace!(error = %e, "UDP send failed; the datagram is lost");
                Ok(())
            }
        }
    }
}

/// Wakes quinn when the socket can take a send again.
#[derive(Debug)]
struct Writable(Arc<tokio::net::UdpSocket>);

impl quinn::UdpPoller for Writable {
    fn poll_writable(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.0.poll_send_ready(cx)
    }
}

impl quinn::AsyncUdpSocket for SplitSends {
    fn create_io_poller(self: Arc<Self>) -> std::pin::Pin<Box<dyn quinn::UdpPoller>> {
        Box::pin(Writable(self.io.clone()))
    }

    fn try_send(&self, transmit: &quinn::udp::Transmit) -> std::io::Result<()> {
        let segment = match transmit.segment_size {
            Some(s) if transmit.contents.len() > UDP_SEND_BYTES_MAX && s > 0 => s,
            _ => return self.send_one(transmit),
        };
        let per_send = (UDP_SEND_BYTES_MAX / segment).max(1) * segment;
        // A later part that would block makes the whole transmit be retried: the parts already
        // sent then arrive twice, and QUIC drops the duplicate packets.
        for part in transmit.contents.chunks(per_send) {
            self.send_one(&quinn::udp::Transmit {
                destination: transmit.destination,
                ecn: transmit.ecn,
                contents: part,
                segment_size: (part.len() > segment).then_some(segment),
                src_ip: transmit.src_ip,
            })?;
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut std::task::Context,
        bufs: &mut [std::io::IoSliceMut<'_>],
        meta: &mut [quinn::udp::RecvMeta],
    ) -> std::task::Poll<std::io::Result<usize>> {
        loop {
            std::task::ready!(self.io.poll_recv_ready(cx))?;
            let got = self.io.try_io(tokio::io::Interest::READABLE, || {
                self.state.recv((&*self.io).into(), bufs, meta)
            });
            match got {
                Ok(n) => return std::task::Poll::Ready(Ok(n)),
                // Reported once; the socket goes on.
                Err(e) if refused(&e) => self.gone.raise(),
                // WouldBlock (readiness cleared: poll again), or an error quinn would skip too.
                Err(_) => {}
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.io.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.state.gro_segments()
    }

    fn may_fragment(&self) -> bool {
        self.state.may_fragment()
    }
}

/// A client endpoint on its own UDP socket, with the socket buffers asked for (best effort:
/// the kernel clamps them to its maximum), announcing `udp_payload_max` (1,200 to 65,527).
pub(super) fn client_endpoint(
    bind: SocketAddr,
    peer: SocketAddr,
    buffer_bytes: usize,
    udp_payload_max: u16,
    gone: Arc<PeerGone>,
) -> std::io::Result<quinn::Endpoint> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(bind),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if bind.is_ipv6() {
        let _ = socket.set_only_v6(false);
    }
    size_buffers(&socket, buffer_bytes);
    socket.bind(&bind.into())?;
    // Connected to the broker: the kernel then reports its port refusing packets (`PeerGone`).
    // Best effort: unconnected, the client still works and waits for timeouts instead.
    if let Err(e) = socket.connect(&peer.into()) {
        tracing::debug!(%peer, error = %e, "UDP socket not connected to the broker");
    }
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime (tokio) is running"))?;
    let mut config = quinn::EndpointConfig::default();
    config
        .max_udp_payload_size(udp_payload_max)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let socket = Arc::new(SplitSends::new(socket.into(), gone)?);
    quinn::Endpoint::new_with_abstract_socket(config, None, socket, runtime)
}

/// The largest UDP payload the route to `addr` carries as far as this host knows: the MTU the
/// kernel holds for that destination (`IP_MTU` of a socket bound to `bind` and connected to it:
/// the interface's, or a smaller one learned from ICMP), less the IP and UDP headers. `None`
/// where the kernel does not say.
pub(super) fn route_udp_payload(bind: SocketAddr, addr: SocketAddr) -> Option<u16> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let socket = std::net::UdpSocket::bind(bind).ok()?;
        socket.connect(addr).ok()?;
        let (level, name, headers) = if addr.is_ipv6() {
            (libc::IPPROTO_IPV6, libc::IPV6_MTU, 48)
        } else {
            (libc::IPPROTO_IP, libc::IP_MTU, 28)
        };
        let mut mtu: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: the fd is open for the call, and `mtu`/`len` are a c_int and its size.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                level,
                name,
                (&mut mtu as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc != 0 || mtu <= headers {
            return None;
        }
        Some(u16::try_from(mtu - headers).unwrap_or(u16::MAX))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (bind, addr);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quinn::AsyncUdpSocket;

    /// A GSO transmit larger than one UDP send may carry arrives whole, split into sends that
    /// fit. Sent as one, the kernel refuses it (EMSGSIZE) and quinn-udp drops it without a word.
    #[tokio::test]
    async fn an_oversized_gso_transmit_is_split_into_sends_that_fit() {
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let runtime = quinn::default_runtime().unwrap();
        let plain = runtime
            .wrap_udp_socket(std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .unwrap();
        if plain.max_transmit_segments() < 4 {
            eprintln!("no UDP GSO on this kernel: nothing to split");
            return;
        }
        let split = Arc::new(
            SplitSends::new(
                std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
                Arc::default(),
            )
            .unwrap(),
        );
        let segment = 20_000;
        let contents: Vec<u8> = (0..4 * segment).map(|i| (i / segment) as u8).collect();
        let transmit = quinn::udp::Transmit {
            destination: receiver.local_addr().unwrap(),
            ecn: None,
            contents: &contents,
            segment_size: Some(segment),
            src_ip: None,
        };
        let mut poller = plain.clone().create_io_poller();
        std::future::poll_fn(|cx| poller.as_mut().poll_writable(cx))
            .await
            .unwrap();
        // quinn's own socket "succeeds" and nothing arrives.
        plain.try_send(&transmit).unwrap();
        let mut poller = split.clone().create_io_poller();
        std::future::poll_fn(|cx| poller.as_mut().poll_writable(cx))
            .await
            .unwrap();
        split.try_send(&transmit).unwrap();
        let mut buf = vec![0u8; 65_536];
        for i in 0..4u8 {
            let n = receiver.recv(&mut buf).unwrap();
            assert_eq!(n, segment, "datagram {i}");
            assert!(buf[..n].iter().all(|&b| b == i), "datagram {i} in order");
        }
        receiver.set_nonblocking(true).unwrap();
        assert!(receiver.recv(&mut buf).is_err(), "nothing more arrived");
    }

    #[test]
    fn the_route_to_loopback_carries_large_datagrams() {
        // Loopback's MTU is 65,536; the kernel reports at most an IP packet's 65,535, less
        // the headers.
        let v4 = route_udp_payload("0.0.0.0:0".parse().unwrap(), "127.0.0.1:9".parse().unwrap())
            .unwrap();
        assert_eq!(v4, 65_535 - 28);
    }

    /// A socket connected to a port nobody listens on any more (the broker's process is gone)
    /// gets the kernel's "port unreachable" back: it raises `PeerGone`, and quinn never sees
    /// the error.
    #[tokio::test]
    async fn a_port_that_refuses_packets_raises_peer_gone() {
        use quinn::AsyncUdpSocket;
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer = closed.local_addr().unwrap();
        drop(closed);
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.connect(peer).unwrap();
        let gone = Arc::new(PeerGone::default());
        let split = SplitSends::new(socket, gone.clone()).unwrap();
        let transmit = quinn::udp::Transmit {
            destination: peer,
            ecn: None,
            contents: b"hello?",
            segment_size: None,
            src_ip: None,
        };
        let mut buf = [0u8; 1500];
        let mut meta = [quinn::udp::RecvMeta::default()];
        for _ in 0..50 {
            // WouldBlock until the runtime has seen the new socket writable.
            match split.try_send(&transmit) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                other => other.unwrap(),
            }
            let mut bufs = [std::io::IoSliceMut::new(&mut buf)];
            let recv = std::future::poll_fn(|cx| split.poll_recv(cx, &mut bufs, &mut meta));
            let got = tokio::time::timeout(Duration::from_millis(50), recv).await;
            assert!(
                got.is_err(),
                "nothing to receive, and no error either: {got:?}"
            );
            if gone.is_raised() {
                break;
            }
        }
        assert!(gone.is_raised(), "the refusal was reported");
        tokio::time::timeout(Duration::from_secs(1), gone.wait())
            .await
            .expect("waiting for a raised signal returns at once");
    }

    /// A shard's endpoint sends from a port the broker steers to that shard (80 of them held
    /// at once: each bind finds a free port of the residue).
    #[tokio::test]
    async fn a_steered_endpoint_binds_a_port_of_its_shard() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let opts = ConnectOptions::default();
        let mut held = Vec::new();
        for (shard, shards) in [(0u16, 2u16), (1, 2), (2, 3), (5, 7)] {
            for _ in 0..20 {
                let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
                let gone = Arc::default();
                let e = steered_endpoint(any, peer, shard, shards, &opts, 1452, &gone).unwrap();
                let port = e.local_addr().unwrap().port();
                assert_eq!(port % shards, shard, "port {port}");
                held.push(e);
            }
        }
    }
}
