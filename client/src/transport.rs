//! Low-level: most users need nothing here but [`ClientTls`] (re-exported at the crate root).
//!
//! The SDK's transport: QUIC with quinn on tokio, one bidirectional stream per request, speaking
//! the frames of `quiver_proto::frame`. [`Connection`] is for tools and tests that speak the
//! wire themselves; applications use [`Producer`](crate::Producer),
//! [`Consumer`](crate::Consumer) and [`Admin`](crate::Admin).
//!
//! ```no_run
//! # async fn demo() -> Result<(), quiver_client::transport::TransportError> {
//! use quiver_client::transport::{ClientTls, Connection};
//! let tls = ClientTls::dev_default()?; // ./data/tls/ca.pem, or an error saying what to pass
//! let conn = Connection::connect("127.0.0.1:9092".parse().unwrap(), "localhost", &tls).await?;
//! # Ok(()) }
//! ```
//!
//! Trust: the server is always verified. A [`ClientTls`] trusts the CA files it is given; with
//! none, [`ClientTls::dev_default`] looks for the broker's development CA at `./data/tls/ca.pem`
//! (streamd's default data directory, relative to the directory streamd was started in) and
//! otherwise fails with a message naming the ways to give a CA file
//! ([`ClientTls::from_ca_file`], `QUIVER_CA_FILE` with
//! [`ClientConfig::from_env`](crate::ClientConfig::from_env), `ssl.ca.location` with
//! [`ClientConfig::from_properties`](crate::ClientConfig::from_properties)). There is no option
//! that turns verification off.
//!
//! [`Connection`] is `Send + Sync` and cheap to clone; calls from many tasks run concurrently on
//! one connection, each on its own stream.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use quinn::{
    crypto::rustls::QuicClientConfig, ConnectionError, IdleTimeout, ReadError, TransportConfig,
    VarInt, WriteError,
};
use quiver_proto::frame::{self, Frame, FrameError, FrameHeader, FRAME_HEADER_BYTES};
use rustls::{
    pki_types::{CertificateDer, PrivateKeyDer},
    RootCertStore,
};

/// ALPN protocol name (`quiver_proto::wire`, shared with the broker).
pub use quiver_proto::wire::ALPN_QUIVER_V1;

/// Where the SDK looks for the development CA when no CA file is given.
pub const DEV_CA_PATH: &str = "data/tls/ca.pem";

/// QUIC application error codes (`quiver_proto::wire::codes`, shared with the broker).
pub use quiver_proto::wire::codes;

/// Everything that can go wrong below the API layer.
///
/// ```
/// use quiver_client::TransportError;
/// use std::time::Duration;
/// let e = TransportError::Timeout(Duration::from_secs(30));
/// assert!(e.is_retriable());
/// assert!(!TransportError::Tls("unknown issuer".into()).is_retriable());
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The TLS settings cannot be used (a missing or unreadable CA file, a bad key).
    #[error("TLS configuration: {0}")]
    Config(String),
    /// No connection could be started (no socket, a bad address).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The broker did not answer the QUIC handshake in time: nothing listens at the address,
    /// or UDP to it is blocked.
    #[error("no answer to the QUIC handshake within {0:?} (is streamd running at this address, and does UDP reach it?)")]
    HandshakeTimeout(Duration),
    /// The handshake was refused: the server is not trusted, or it refused our certificate.
    #[error("TLS handshake refused: {0}")]
    Tls(String),
    /// The peer closed the connection on purpose, with a code from [`codes`] and a reason.
    #[error("connection closed by the broker with code {code:#x} ({}): {reason}", codes::describe(*.code))]
    ConnectionClosed {
        /// The QUIC application error code.
        code: u64,
        /// The broker's reason.
        reason: String,
    },
    /// The connection went away without a close from the broker (idle timeout, reset).
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// The broker reset the request's stream, with a code from [`codes`].
    #[error("request stream reset by the broker with code {code:#x} ({})", codes::describe(*.code))]
    StreamReset {
        /// The QUIC application error code.
        code: u64,
    },
    /// A request got no (whole) answer within the call timeout.
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// A frame was malformed or too large.
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
}

/// What to do about the TLS refusals a new user meets, appended to rustls's words.
fn with_tls_hint(message: String) -> String {
    let hint = if message.contains("not valid for name") {
        "; the broker's certificate does not name the address dialled: dial a name it has, or, \
         with streamd's development certificate, start streamd with --listen or --advertised-host \
         set to this address (it reissues its certificate from the same development CA, so the \
         CA file stays valid)"
    } else if message.contains("UnknownIssuer") || message.contains("unknown issuer") {
        "; the CA file given does not sign the broker's certificate: trust the broker's own CA \
         (streamd writes its development CA to <its data directory>/tls/ca.pem)"
    } else {
        return message;
    };
    message + hint
}

impl TransportError {
    /// Whether another attempt (on a new connection) may succeed: the network or the broker
    /// went away, not a configuration or trust problem.
    pub fn is_retriable(&self) -> bool {
        match self {
            TransportError::Config(_) | TransportError::Tls(_) | TransportError::Frame(_) => false,
            TransportError::ConnectionClosed { code, .. } => {
                *code != u64::from(codes::CONNECTION_ABUSE)
            }
            TransportError::Connect(_)
            | TransportError::HandshakeTimeout(_)
            | TransportError::ConnectionLost(_)
            | TransportError::StreamReset { .. }
            | TransportError::Timeout(_) => true,
        }
    }

    /// Whether the connection is unusable after this error (the next call needs a new one).
    pub fn is_connection_error(&self) -> bool {
        matches!(
            self,
            TransportError::Connect(_)
                | TransportError::HandshakeTimeout(_)
                | TransportError::ConnectionClosed { .. }
                | TransportError::ConnectionLost(_)
                | TransportError::Tls(_)
        )
    }

    fn from_connection(e: ConnectionError) -> TransportError {
        // RFC 9001 section 4.8: TLS alerts travel as transport error codes 0x100..=0x1ff.
        let is_crypto = |code: u64| (0x100..=0x1ff).contains(&code);
        match e {
            ConnectionError::TransportError(te) if is_crypto(u64::from(te.code)) => {
                TransportError::Tls(with_tls_hint(te.to_string()))
            }
            ConnectionError::ConnectionClosed(cc) if is_crypto(u64::from(cc.error_code)) => {
                TransportError::Tls(with_tls_hint(cc.to_string()))
            }
            ConnectionError::ApplicationClosed(ac) => TransportError::ConnectionClosed {
                code: ac.error_code.into_inner(),
                reason: String::from_utf8_lossy(&ac.reason).into_owned(),
            },
            other => TransportError::ConnectionLost(other.to_string()),
        }
    }

    fn from_read(e: ReadError) -> TransportError {
        match e {
            ReadError::Reset(code) => TransportError::StreamReset {
                code: code.into_inner(),
            },
            ReadError::ConnectionLost(e) => TransportError::from_connection(e),
            other => TransportError::ConnectionLost(other.to_string()),
        }
    }
}

type Result<T, E = TransportError> = std::result::Result<T, E>;

/// What the client trusts, and what it presents when the broker requires client certificates.
///
/// ```no_run
/// # fn f() -> Result<(), quiver_client::TransportError> {
/// use quiver_client::ClientTls;
/// let tls = ClientTls::from_ca_file("/etc/quiver/ca.pem")?
///     .with_client_cert("/etc/quiver/client.pem", "/etc/quiver/client.key")?;
/// # let _ = tls; Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ClientTls {
    roots: Arc<RootCertStore>,
    identity: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
}

impl ClientTls {
    /// Trusts the CA certificates in a PEM file.
    pub fn from_ca_file(path: impl AsRef<Path>) -> Result<ClientTls> {
        let path = path.as_ref();
        let pem = std::fs::read(path)
            .map_err(|e| TransportError::Config(format!("CA file {}: {e}", path.display())))?;
        Self::from_ca_pem(&pem)
            .map_err(|e| TransportError::Config(format!("{}: {e}", path.display())))
    }

    /// Trusts the CA certificates in PEM text.
    pub fn from_ca_pem(pem: &[u8]) -> Result<ClientTls> {
        let mut roots = RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut &pem[..]) {
            let cert = cert.map_err(|e| TransportError::Config(e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| TransportError::Config(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(TransportError::Config(
                "no CA certificate in the PEM data".into(),
            ));
        }
        Ok(ClientTls {
            roots: Arc::new(roots),
            identity: None,
        })
    }

    /// The out-of-the-box local setup: trust the development CA that streamd creates in its
    /// default data directory, `./data/tls/ca.pem` (relative to the working directory, so it
    /// is found only when the program runs in the directory streamd was started in). Without
    /// it the error names the fixes.
    pub fn dev_default() -> Result<ClientTls> {
        let path = PathBuf::from(DEV_CA_PATH);
        if !path.exists() {
            let cwd = std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_else(|_| "the working directory".into());
            return Err(TransportError::Config(format!(
                "no CA file given, and no development CA at ./{DEV_CA_PATH} (looked in {cwd}). \
                 streamd writes its development CA to <data_dir>/tls/ca.pem, which is \
                 ./{DEV_CA_PATH} in the directory streamd was started in. Pass the broker's CA \
                 file: ClientConfig::new(..).tls(ClientTls::from_ca_file(\"/path/to/{DEV_CA_PATH}\")?), \
                 or set QUIVER_CA_FILE=/path/to/{DEV_CA_PATH} and use ClientConfig::from_env(), \
                 or give ssl.ca.location to ClientConfig::from_properties"
            )));
        }
        Self::from_ca_file(path)
    }

    /// Presents this certificate chain and key to brokers that require client certificates.
    pub fn with_client_cert(
        mut self,
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<ClientTls> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| TransportError::Config(format!("{}: {e}", p.display())))
        };
        let cert_pem = read(cert_chain.as_ref())?;
        let key_pem = read(key.as_ref())?;
        let chain = rustls_pemfile::certs(&mut &cert_pem[..])
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| TransportError::Config(e.to_string()))?;
        let key = rustls_pemfile::private_key(&mut &key_pem[..])
            .map_err(|e| TransportError::Config(e.to_string()))?
            .ok_or_else(|| TransportError::Config("no private key in the key file".into()))?;
        if chain.is_empty() {
            return Err(TransportError::Config(
                "no certificate in the client certificate file".into(),
            ));
        }
        self.identity = Some((chain, Arc::new(key)));
        Ok(self)
    }

    fn rustls_config(&self) -> Result<rustls::ClientConfig> {
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TransportError::Config(e.to_string()))?
        .with_root_certificates(self.roots.clone());
        let mut config = match &self.identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| TransportError::Config(e.to_string()))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![ALPN_QUIVER_V1.to_vec()];
        Ok(config)
    }
}

/// Limits and timeouts of one connection.
///
/// ```
/// use quiver_client::{ClientConfig, ConnectOptions};
/// use std::time::Duration;
/// let mut config = ClientConfig::new("127.0.0.1:9092");
/// config.connect = ConnectOptions { connect_timeout: Duration::from_secs(3), ..ConnectOptions::default() };
/// ```
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// Largest response frame accepted; checked from the 4-byte prefix before allocating.
    pub frame_bytes_max: usize,
    /// Time a call may take, from opening its stream to the whole response.
    pub call_timeout: Duration,
    /// Time the handshake may take.
    pub connect_timeout: Duration,
    /// A connection silent this long is closed (a broker that vanished without closing).
    pub idle_timeout: Duration,
    /// How often an idle connection sends a keep-alive; `None`: never.
    pub keep_alive_interval: Option<Duration>,
    /// QUIC receive windows for responses (per stream and per connection).
    pub stream_receive_window: u64,
    /// See `stream_receive_window`: the window of the whole connection.
    pub receive_window: u64,
    /// QUIC send window for requests.
    pub send_window: u64,
    /// SO_RCVBUF / SO_SNDBUF asked for the connection's UDP socket. The kernel's default
    /// (about 208 KiB) drops datagrams when a large fetch response arrives in one burst, and
    /// every drop costs a loss recovery (tens of milliseconds when it is the tail of a
    /// burst). The kernel caps the request at `net.core.rmem_max` / `wmem_max`.
    pub socket_buffer_bytes: usize,
    /// Largest UDP payload of one QUIC packet: the limit path MTU discovery searches up to and
    /// the `max_udp_payload_size` announced to the broker, lowered to what the route to the
    /// broker carries as far as the kernel knows (its `IP_MTU`). Discovery starts at 1,200 bytes
    /// and keeps only what the path delivers (1,452 on a 1,500-byte Ethernet path; 65,507 on
    /// loopback). 1,200 to 65,527.
    pub udp_payload_max: u16,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            frame_bytes_max: frame::FRAME_BYTES_MAX_DEFAULT,
            call_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            // A broker that vanishes without closing (SIGKILL, a lost host) is noticed when
            // the connection has been silent this long; keep-alives keep a healthy idle
            // connection from reaching it.
            idle_timeout: Duration::from_secs(15),
            keep_alive_interval: Some(Duration::from_secs(5)),
            stream_receive_window: 8 * 1024 * 1024,
            receive_window: 32 * 1024 * 1024,
            send_window: 32 * 1024 * 1024,
            socket_buffer_bytes: 8 * 1024 * 1024,
            udp_payload_max: MAX_UDP_PAYLOAD,
        }
    }
}

/// The largest UDP payload QUIC allows (RFC 9000, `max_udp_payload_size`); the same as
/// `quiver_proto::wire::MAX_UDP_PAYLOAD`.
pub use quiver_proto::wire::MAX_UDP_PAYLOAD;

mod socket;

use socket::PeerGone;
use socket::{
    client_endpoint, route_udp_payload, steered_endpoint, CONNECT_PROBE_EVERY, PROBE_EVERY,
};

/// A QUIC connection to one broker (see the module documentation for an example).
#[derive(Clone, Debug)]
pub struct Connection {
    conn: quinn::Connection,
    // Kept so the socket outlives every clone of the connection.
    _endpoint: quinn::Endpoint,
    opts: Arc<ConnectOptions>,
    /// Held while a bulk request is written, so bulk requests leave in the order they were
    /// made (see `call_raw`).
    bulk_order: Arc<tokio::sync::Mutex<()>>,
    /// Raised when the broker's port refuses packets: its calls fail at once.
    gone: Arc<PeerGone>,
}

impl Connection {
    /// Connects with default options. `server_name` is checked against the broker's certificate.
    pub async fn connect(addr: SocketAddr, server_name: &str, tls: &ClientTls) -> Result<Self> {
        Self::connect_with(addr, server_name, tls, ConnectOptions::default()).await
    }

    /// Connects with these options.
    pub async fn connect_with(
        addr: SocketAddr,
        server_name: &str,
        tls: &ClientTls,
        opts: ConnectOptions,
    ) -> Result<Self> {
        Self::connect_steered(addr, server_name, tls, opts, None).await
    }

    /// [`connect_with`](Self::connect_with) from a UDP source port p with
    /// `p % shards == shard` when `steer` is `Some((shard, shards))`: a broker steers such a
    /// connection to that shard (core), see [`crate::Node`]. When no such port can be bound
    /// the connection goes from any port (and reaches some shard; correct, one hop slower).
    pub async fn connect_steered(
        addr: SocketAddr,
        server_name: &str,
        tls: &ClientTls,
        opts: ConnectOptions,
        steer: Option<(u16, u16)>,
    ) -> Result<Self> {
        let crypto = QuicClientConfig::try_from(tls.rustls_config()?)
            .map_err(|e| TransportError::Config(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        let mut transport = TransportConfig::default();
        transport
            // The broker never opens streams towards a client.
            .max_concurrent_bidi_streams(VarInt::from_u32(0))
            .max_concurrent_uni_streams(VarInt::from_u32(0))
            .stream_receive_window(
                VarInt::from_u64(opts.stream_receive_window).unwrap_or(VarInt::MAX),
            )
            .receive_window(VarInt::from_u64(opts.receive_window).unwrap_or(VarInt::MAX))
            .send_window(opts.send_window)
            .max_idle_timeout(IdleTimeout::try_from(opts.idle_timeout).ok())
            .keep_alive_interval(opts.keep_alive_interval);
        // Streams go out one after another, not interleaved: with fair sharing, concurrent
        // requests all finish at about the same time and the connection idles while their
        // answers come back and the next ones start (the transport benchmark's one-connection
        // upload went from 0.95 to 1.20 GB/s with this; bench/RESULTS.md). Small requests jump
        // the queue instead (`frame::send_priority`), so a heartbeat does not wait behind a
        // bulk produce.
        transport.send_fairness(false);
        let bind: SocketAddr = if addr.is_ipv6() {
            "[::]:0".parse().expect("literal")
        } else {
            "0.0.0.0:0".parse().expect("literal")
        };
        // Search no higher than the route allows: packets past the interface's MTU are refused
        // by the kernel and count as lost probes, and quinn needs three per step, so searching
        // 1,200 to 65,527 on a 1,500-byte path kept packets at 1,200 for seconds. The broker's
        // search is bounded by the same number, announced as our max_udp_payload_size.
        let payload_max = route_udp_payload(bind, addr)
            .map_or(opts.udp_payload_max, |r| r.min(opts.udp_payload_max))
            .clamp(1200, MAX_UDP_PAYLOAD);
        let mut mtud = quinn::MtuDiscoveryConfig::default();
        mtud.upper_bound(payload_max);
        transport.mtu_discovery_config(Some(mtud));
        config.transport_config(Arc::new(transport));

        let gone = Arc::new(PeerGone::default());
        let endpoint = match steer {
            Some((shard, shards)) => {
                steered_endpoint(bind, addr, shard, shards, &opts, payload_max, &gone)
            }
            None => client_endpoint(
                bind,
                addr,
                opts.socket_buffer_bytes,
                payload_max,
                gone.clone(),
            ),
        }
        .map_err(|e| TransportError::Connect(e.to_string()))?;
        let connecting = endpoint
            .connect_with(config, addr, server_name)
            .map_err(|e| TransportError::Connect(e.to_string()))?;
        // A port that refuses the handshake's packets (no broker there) fails at once rather
        // than at the connect timeout.
        let probing = async {
            loop {
                tokio::time::sleep(CONNECT_PROBE_EVERY).await;
                gone.probe();
            }
        };
        let attempt = tokio::select! {
            r = tokio::time::timeout(opts.connect_timeout, connecting) => Some(r),
            _ = gone.wait() => None,
            _ = probing => None,
        };
        let conn = match attempt {
            None => {
                return Err(TransportError::Connect(format!(
                    "{addr} refuses packets: no broker listens there"
                )))
            }
            Some(Err(_)) => return Err(TransportError::HandshakeTimeout(opts.connect_timeout)),
            Some(Ok(Err(e))) => return Err(TransportError::from_connection(e)),
            Some(Ok(Ok(c))) => c,
        };
        Ok(Connection {
            conn,
            _endpoint: endpoint,
            opts: Arc::new(opts),
            bulk_order: Arc::default(),
            gone,
        })
    }

    /// Sends one request frame on a new stream and returns the response frame. A response with
    /// `FLAG_ERROR_RESPONSE` is returned as a frame: what its body means is the API layer's job.
    pub async fn call(
        &self,
        header: FrameHeader,
        body: Bytes,
        payload: Vec<Bytes>,
    ) -> Result<Frame> {
        self.start_call(header, body, payload)
            .await?
            .response()
            .await
    }

    /// The first half of [`call`](Self::call): returns once the request is written (bulk
    /// requests in the order they got here, see `call_raw`); the answer is read by
    /// [`PendingCall::response`]. For callers that must write requests in a given order but wait
    /// for their answers together.
    pub async fn start_call(
        &self,
        header: FrameHeader,
        body: Bytes,
        payload: Vec<Bytes>,
    ) -> Result<PendingCall> {
        self.start_framed(header, body, payload, false).await
    }

    /// [`start_call`](Self::start_call) for a request that must reach the broker after every
    /// request started before it on this connection, whatever its size: it is written in turn
    /// with the bulk requests and does not jump ahead of them. An idempotent producer's requests
    /// go this way: a small one that overtook a large one of the same partition was refused as
    /// out of sequence and sent again.
    pub async fn start_call_in_order(
        &self,
        header: FrameHeader,
        body: Bytes,
        payload: Vec<Bytes>,
    ) -> Result<PendingCall> {
        self.start_framed(header, body, payload, true).await
    }

    /// [`start_call`](Self::start_call), or with `in_order`
    /// [`start_call_in_order`](Self::start_call_in_order).
    pub(crate) async fn start_framed(
        &self,
        header: FrameHeader,
        body: Bytes,
        payload: Vec<Bytes>,
        in_order: bool,
    ) -> Result<PendingCall> {
        let payload_len: usize = payload.iter().map(Bytes::len).sum();
        let total = FRAME_HEADER_BYTES + body.len() + payload_len;
        if total > self.opts.frame_bytes_max {
            return Err(FrameError::TooLarge {
                len: total,
                max: self.opts.frame_bytes_max,
            }
            .into());
        }
        let mut chunks = Vec::with_capacity(2 + payload.len());
        chunks.push(Bytes::copy_from_slice(&frame::encode_header(
            &header,
            body.len(),
            payload_len,
        )?));
        chunks.push(body);
        chunks.extend(payload);
        self.start_raw(chunks, in_order).await
    }

    /// Sends pre-encoded bytes as a request (they need not be a valid frame) and reads the
    /// response frame. For tests of the broker's handling of bad input, and for tools.
    ///
    /// Bulk requests (over `frame::SMALL_FRAME_BYTES`) are written one whole request after
    /// another: without that, a large request waiting for flow-control credit lets the next one
    /// write in between, their bytes interleave, and the later one can arrive (and be served)
    /// first. An idempotent producer with several requests of one partition in flight counts on
    /// them arriving in order (a request that overtakes is refused as out of sequence and sent
    /// again). Small requests are not held back: they jump the queue, as before.
    pub async fn call_raw(&self, chunks: Vec<Bytes>) -> Result<Frame> {
        self.start_raw(chunks, false).await?.response().await
    }

    async fn start_raw(&self, mut chunks: Vec<Bytes>, in_order: bool) -> Result<PendingCall> {
        let timeout = self.opts.call_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let total: usize = chunks.iter().map(Bytes::len).sum();
        // Small requests get a higher priority than bulk ones (see `send_fairness` in
        // `connect_with`); only bulk ones, and those that must keep their order, wait for their
        // turn to be written.
        let priority = if in_order {
            0
        } else {
            frame::send_priority(total)
        };
        let order = if priority == 0 {
            let lock = self.bulk_order.clone().lock_owned();
            Some(
                tokio::time::timeout(timeout, lock)
                    .await
                    .map_err(|_| TransportError::Timeout(timeout))?,
            )
        } else {
            None
        };
        let (mut send, mut recv) = tokio::time::timeout(timeout, self.conn.open_bi())
            .await
            .map_err(|_| TransportError::Timeout(timeout))?
            .map_err(TransportError::from_connection)?;
        // Only fails on a stream that is already closed, which the write will report.
        let _ = send.set_priority(priority);
        let written = tokio::time::timeout_at(deadline, send.write_all_chunks(&mut chunks)).await;
        drop(order);
        match written {
            Err(_) => {
                cancel(&mut send, &mut recv);
                return Err(TransportError::Timeout(timeout));
            }
            Ok(Ok(())) => {
                let _ = send.finish();
            }
            // The broker refused the rest of the request; its answer (an error frame or a
            // reset) is on the receive side.
            Ok(Err(WriteError::Stopped(_))) => {}
            Ok(Err(WriteError::ConnectionLost(e))) => {
                return Err(TransportError::from_connection(e))
            }
            Ok(Err(e)) => return Err(TransportError::ConnectionLost(e.to_string())),
        }
        Ok(PendingCall {
            send,
            recv,
            deadline,
            timeout,
            frame_bytes_max: self.opts.frame_bytes_max,
            conn: self.conn.clone(),
            gone: self.gone.clone(),
        })
    }

    /// Sends one request frame on a new stream and returns once it is written, without waiting
    /// for the answer (acks=0 produce). The answer, which the broker still sends, is read and
    /// dropped by a background task so the broker is not left waiting to write it.
    pub async fn send_only(
        &self,
        header: FrameHeader,
        body: Bytes,
        payload: Vec<Bytes>,
    ) -> Result<()> {
        let call = self.start_call(header, body, payload).await?;
        tokio::spawn(async move {
            let _ = call.response().await;
        });
        Ok(())
    }

    /// Closes the connection with `codes::CLOSED_BY_APPLICATION` and `reason`.
    pub fn close(&self, reason: &str) {
        self.conn.close(
            VarInt::from_u32(codes::CLOSED_BY_APPLICATION),
            reason.as_bytes(),
        );
    }

    /// Waits until the connection is closed and tells why.
    pub async fn closed(&self) -> TransportError {
        TransportError::from_connection(self.conn.closed().await)
    }

    /// The broker's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    /// The underlying quinn connection (statistics, RTT).
    pub fn quinn(&self) -> &quinn::Connection {
        &self.conn
    }
}

/// A request written, its answer not yet read ([`Connection::start_call`]).
#[derive(Debug)]
pub struct PendingCall {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    deadline: tokio::time::Instant,
    timeout: Duration,
    frame_bytes_max: usize,
    conn: quinn::Connection,
    gone: Arc<PeerGone>,
}

impl PendingCall {
    /// Reads the response frame, within the call's timeout (counted from the start of the call).
    /// Fails at once when the broker's port refuses packets (its process is gone): the
    /// connection is closed, so the client's other calls on it fail too and it connects anew.
    pub async fn response(mut self) -> Result<Frame> {
        let read = read_frame(&mut self.recv, self.frame_bytes_max);
        let gone = self.gone.clone();
        let probing = async {
            loop {
                tokio::time::sleep(PROBE_EVERY).await;
                gone.probe();
            }
        };
        let answer = tokio::select! {
            r = tokio::time::timeout_at(self.deadline, read) => Some(r),
            _ = gone.wait() => None,
            _ = probing => None,
        };
        match answer {
            Some(Ok(result)) => result,
            Some(Err(_)) => {
                cancel(&mut self.send, &mut self.recv);
                Err(TransportError::Timeout(self.timeout))
            }
            None => {
                const WHY: &str = "the broker's port refuses packets: its process is gone";
                self.conn.close(
                    VarInt::from_u32(codes::CLOSED_BY_APPLICATION),
                    WHY.as_bytes(),
                );
                Err(TransportError::ConnectionLost(WHY.into()))
            }
        }
    }
}

/// Abandons a call that timed out: the broker is told to stop on both halves of its stream.
fn cancel(send: &mut quinn::SendStream, recv: &mut quinn::RecvStream) {
    let _ = send.reset(VarInt::from_u32(codes::CANCELLED));
    let _ = recv.stop(VarInt::from_u32(codes::CANCELLED));
}

/// Reads one frame: the 4-byte prefix first, checked before the buffer is allocated.
async fn read_frame(recv: &mut quinn::RecvStream, frame_bytes_max: usize) -> Result<Frame> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match recv.read(&mut prefix[got..]).await {
            Ok(Some(n)) => got += n,
            Ok(None) => {
                return Err(FrameError::Truncated {
                    got,
                    need: FRAME_HEADER_BYTES,
                }
                .into())
            }
            Err(e) => return Err(TransportError::from_read(e)),
        }
    }
    let total = frame::check_len_prefix(prefix, frame_bytes_max)?;
    let mut buf = BytesMut::with_capacity(total);
    buf.extend_from_slice(&prefix);
    while buf.len() < total {
        match recv.read_chunk(total - buf.len(), true).await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
            Ok(None) => {
                return Err(FrameError::Truncated {
                    got: buf.len(),
                    need: total,
                }
                .into())
            }
            Err(e) => return Err(TransportError::from_read(e)),
        }
    }
    Ok(frame::decode(buf.freeze(), frame_bytes_max)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_is_send_sync_and_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<Connection>();
        check::<ClientTls>();
    }

    #[test]
    fn tls_refusals_say_what_to_do() {
        let name = with_tls_hint(
            "invalid peer certificate: certificate not valid for name \"198.18.0.2\"".into(),
        );
        assert!(name.contains("--advertised-host"), "{name}");
        let issuer = with_tls_hint("invalid peer certificate: UnknownIssuer".into());
        assert!(issuer.contains("tls/ca.pem"), "{issuer}");
        assert_eq!(with_tls_hint("other".into()), "other");
    }

    #[test]
    fn dev_default_without_a_ca_says_what_to_do() {
        // The test's working directory is the crate root, which has no data/tls/ca.pem.
        assert!(!Path::new(DEV_CA_PATH).exists());
        let err = ClientTls::dev_default().unwrap_err().to_string();
        for fix in [
            "ClientTls::from_ca_file",
            "QUIVER_CA_FILE",
            "ssl.ca.location",
            "in the directory streamd was started in",
        ] {
            assert!(err.contains(fix), "{fix} in {err}");
        }
        let cwd = std::env::current_dir().unwrap();
        assert!(err.contains(&cwd.display().to_string()), "{err}");
    }

    #[test]
    fn a_pem_without_certificates_is_refused() {
        assert!(matches!(
            ClientTls::from_ca_pem(b"not a pem"),
            Err(TransportError::Config(_))
        ));
    }
}
