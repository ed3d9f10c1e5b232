//! Limits and timeouts of an endpoint. Every bound is named here with its reason.

use std::{sync::Arc, time::Duration};

use quinn_proto::{IdleTimeout, MtuDiscoveryConfig, TransportConfig, VarInt};
use quiver_proto::frame::FRAME_BYTES_MAX_DEFAULT;

use crate::limits::{ConnectionLimiter, CONNECTIONS_MAX_DEFAULT, CONNECTIONS_PER_IP_MAX_DEFAULT};

/// The largest UDP payload QUIC allows (RFC 9000, `max_udp_payload_size`): the default of
/// [`EndpointConfig::udp_payload_max`].
pub use quiver_proto::wire::MAX_UDP_PAYLOAD;

/// Configuration shared by the server side and dial-out of one endpoint.
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    /// Largest frame accepted, header included; checked from the 4-byte prefix before anything is
    /// allocated. Applies to requests read by the server and responses read by dial-out calls.
    pub frame_bytes_max: usize,
    /// Concurrent bidirectional streams a peer may open: the in-flight request bound of one
    /// connection. Default 1024, so 1,000 requests in flight fit.
    pub streams_concurrent_max: u32,
    /// Per-connection byte budget for requests read and responses not yet handed to QUIC. When it
    /// is used up the server stops reading request data, so QUIC flow control slows the peer. One
    /// frame is always admitted when nothing is in flight, so a maximum-size frame cannot stall.
    ///
    /// What it bounds: request bytes exactly. Response sizes are unknown until the service
    /// answers, so requests admitted while under the budget may together answer with more; the
    /// hard bound on one connection is `streams_concurrent_max` responses of at most
    /// `frame_bytes_max` each, and each is dropped after `write_timeout` if the peer does not
    /// read it. The broker keeps responses small (fetch max bytes), which keeps this practical.
    pub inflight_bytes_max: u64,
    /// QUIC stream receive window (credit per stream). The server reads frames as they arrive,
    /// so this does not need to hold a whole frame; it sets per-stream throughput.
    pub stream_receive_window: u64,
    /// QUIC connection receive window: the bound on data QUIC buffers for one connection before
    /// the server reads it.
    pub receive_window: u64,
    /// QUIC send window: the bound on data QUIC buffers (unacknowledged) for one connection. A
    /// peer that never reads can pin at most this much inside QUIC.
    pub send_window: u64,
    /// A connection with no packets for this long is closed.
    pub idle_timeout: Duration,
    /// PING interval that keeps quiet connections alive (and NAT bindings open).
    pub keep_alive_interval: Option<Duration>,
    /// A response not fully delivered and acknowledged this long after it was ready is reset with
    /// `codes::WRITE_TIMEOUT`, releasing its memory.
    pub write_timeout: Duration,
    /// A request stream whose frame has not arrived whole this long after the stream opened (or
    /// after it was let in from waiting for budget) is stopped and reset with
    /// `codes::READ_TIMEOUT`, releasing its buffer. Rationale: a peer that sends a header and then
    /// trickles (or stops) would otherwise hold its frame's budget for ever.
    pub read_timeout: Duration,
    /// Connection caps shared by every endpoint of the process (see `limits.rs`): total, per IP
    /// address, and when new connections must first prove their address with a Retry.
    pub connection_limiter: Arc<ConnectionLimiter>,
    /// Malformed frames tolerated on one connection before it is closed with
    /// `codes::CONNECTION_ABUSE`.
    pub frame_errors_max: u32,
    /// Time a dial-out call may take before it fails with a timeout.
    pub call_timeout: Duration,
    /// Socket buffer sizes requested with SO_RCVBUF / SO_SNDBUF (the kernel may clamp them).
    pub socket_buffer_bytes: usize,
    /// Largest UDP payload of one QUIC packet: the limit path MTU discovery searches up to, and
    /// the `max_udp_payload_size` this endpoint announces. Discovery starts from 1,200 bytes and
    /// keeps only what the path delivers (a 1,500-byte Ethernet path settles at 1,452). It pays
    /// where the path allows large datagrams (loopback: 65,507-byte packets, a 45th as many as
    /// of 1,452 bytes; bench/RESULTS.md). On a small-MTU path a high limit costs lost probes,
    /// three per halving step with packets held at 1,200 meanwhile, unless the peer announces a
    /// smaller `max_udp_payload_size`, as the SDK does from its route's MTU. 1,200 to 65,527.
    pub udp_payload_max: u16,
    /// Bind with SO_REUSEPORT so that one endpoint per core can share an address.
    pub reuse_port: bool,
    /// Secret from which stateless-reset tokens are derived (RFC 9000, section 10.3). Give every
    /// endpoint of a broker the same secret, kept across restarts, and a restarted broker resets
    /// its old connections at their first packet instead of leaving clients to time out. `None`:
    /// a random secret per endpoint.
    pub stateless_reset_secret: Option<StatelessResetSecret>,
    /// An accepted connection that the service has not admitted (`Session::admit`: it
    /// authenticated) this long after it was accepted is closed with
    /// `codes::AUTHENTICATION_TIMEOUT`. A peer with a verified client certificate is admitted
    /// at the handshake. `None`: no deadline (every connection is admitted as it is).
    pub admit_timeout: Option<Duration>,
}

/// 64 secret bytes; `Debug` does not print them.
#[derive(Clone)]
pub struct StatelessResetSecret(pub Arc<[u8; 64]>);

impl std::fmt::Debug for StatelessResetSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatelessResetSecret(..)")
    }
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
            streams_concurrent_max: 1024,
            inflight_bytes_max: 2 * FRAME_BYTES_MAX_DEFAULT as u64,
            stream_receive_window: 8 * 1024 * 1024,
            receive_window: 32 * 1024 * 1024,
            send_window: 32 * 1024 * 1024,
            idle_timeout: Duration::from_secs(30),
            keep_alive_interval: Some(Duration::from_secs(10)),
            write_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(30),
            connection_limiter: Arc::new(ConnectionLimiter::new(
                CONNECTIONS_MAX_DEFAULT,
                CONNECTIONS_PER_IP_MAX_DEFAULT,
            )),
            frame_errors_max: 64,
            call_timeout: Duration::from_secs(30),
            socket_buffer_bytes: 8 * 1024 * 1024,
            udp_payload_max: MAX_UDP_PAYLOAD,
            reuse_port: true,
            stateless_reset_secret: None,
            admit_timeout: None,
        }
    }
}

impl EndpointConfig {
    /// The quinn-proto transport parameters these limits imply (public so that a benchmark can
    /// give quinn-on-tokio exactly the same ones).
    pub fn transport(&self) -> Arc<TransportConfig> {
        let mut t = TransportConfig::default();
        t.max_concurrent_bidi_streams(VarInt::from_u32(self.streams_concurrent_max))
            // Requests use bidirectional streams only; a peer cannot open unidirectional ones.
            .max_concurrent_uni_streams(VarInt::from_u32(0))
            .stream_receive_window(varint(self.stream_receive_window))
            .receive_window(varint(self.receive_window))
            .send_window(self.send_window)
            .max_idle_timeout(Some(
                IdleTimeout::try_from(self.idle_timeout).unwrap_or(IdleTimeout::from(VarInt::MAX)),
            ))
            .keep_alive_interval(self.keep_alive_interval)
            .datagram_receive_buffer_size(None)
            // Streams are sent one after another rather than interleaved: interleaved responses
            // (or dial-out requests) all complete together and the connection then idles while
            // the peer turns around (transport_bench, one connection: downloads 1.26 -> 1.57
            // GB/s). Small frames are given a higher priority instead
            // (`frame::send_priority`), so they do not queue behind bulk ones.
            .send_fairness(false);
        let mut mtud = MtuDiscoveryConfig::default();
        mtud.upper_bound(self.udp_payload_limit());
        t.mtu_discovery_config(Some(mtud));
        Arc::new(t)
    }

    /// `udp_payload_max` within what QUIC allows (1,200 to 65,527): the bound of the MTU search
    /// and the `max_udp_payload_size` announced.
    pub(crate) fn udp_payload_limit(&self) -> u16 {
        self.udp_payload_max.clamp(1200, MAX_UDP_PAYLOAD)
    }
}

fn varint(v: u64) -> VarInt {
    VarInt::from_u64(v).unwrap_or(VarInt::MAX)
}
