//! Quiver's QUIC transport on glommio: quinn-proto driven by a few tasks per core, one UDP socket
//! per core, one stream per request.
//!
//! # Shape
//! - Each shard (glommio executor, one per core) has its own [`Endpoint`] on the broker's
//!   address: one SO_REUSEPORT group ([`bind_steered_group`]) that sends a datagram from source
//!   port p to shard p % shards, so a connection's datagrams always reach the core that
//!   accepted it and a client picks the core by its port; connection migration is disabled on
//!   the server so a client's address change cannot move it (ARCHITECTURE.md).
//! - A request is one bidirectional stream: the client writes one frame (`proto::frame`) and
//!   finishes; the server reads the 4-byte length prefix, refuses it with
//!   `frame::check_len_prefix` before allocating, reads the frame, hands it to the [`Service`],
//!   writes the response (payload `Bytes` chunks go to quinn-proto's `write_chunks` uncopied)
//!   and finishes.
//! - The same endpoint dials out ([`Endpoint::connect`] → [`ClientConnection::call`]) for
//!   broker-to-broker traffic.
//! - The state machine around quinn-proto (`driver/`) is sans-IO: datagrams, timer expiries
//!   and application input go in with the time, transmits, service jobs, dial-out events and
//!   the next deadline come out; the glommio tasks of `endpoint.rs` own the socket, the wakers
//!   and the service tasks. So the transport runs without sockets on a virtual clock in tests
//!   (`sim/`: loss, reordering, duplication, stalled peers).
//! - UDP I/O is batched with quinn-udp (recvmmsg + GRO in, GSO out); waiting is done by io_uring
//!   through glommio (see `udp.rs`); nothing busy-polls.
//!
//! # Bounds (see [`EndpointConfig`])
//! Per connection: at most `streams_concurrent_max` requests in flight; at most
//! `inflight_bytes_max` bytes held for requests and unsent responses (past it, request data is
//! left unread, so QUIC flow control slows the peer); QUIC buffers at most `receive_window`
//! inbound and `send_window` outbound; a request not received whole within `read_timeout` and a
//! response not delivered within `write_timeout` are reset; a request whose stream the peer
//! stops, or whose connection goes, has its service future dropped at once (cancelled).
//! Per process: at most `connection_limiter`'s caps of connections, in all and per IP address,
//! with QUIC Retry once half of the total is reached ([`limits`]).
//! A frame error is answered by [`Service::reject`] or a stream reset with a code from [`codes`];
//! too many of them close the connection with [`codes::CONNECTION_ABUSE`].
//!
//! # TLS and trust
//! rustls with aws-lc-rs, TLS 1.3, ALPN `quiver/1` ([`tls::ALPN_QUIVER_V1`]). Production configures
//! certificate and key files; without them the broker calls [`tls::ensure_dev_certs`], which
//! creates a development CA and a server certificate under `<data_dir>/tls` on first start.
//! Clients verify the server against the CA files they are given; by default the SDK looks for
//! the development CA at `./data/tls/ca.pem` and otherwise asks for a CA file. There is no
//! switch that turns verification off. Mutual TLS: give the server a client CA file; the peer's
//! certificate names reach the service as [`Request::identity`].

pub mod codes;
mod config;
mod driver;
mod endpoint;
mod error;
mod frame_reader;
pub mod limits;
mod pool;
mod service;
mod session;
#[cfg(test)]
mod sim;
mod sync;
pub mod tls;
mod udp;

pub use config::{EndpointConfig, StatelessResetSecret, MAX_UDP_PAYLOAD};
pub use driver::EndpointStats;
pub use endpoint::{BindError, ClientConnection, Endpoint, EndpointBuilder};
pub use error::{CallError, ConnectError};
pub use limits::ConnectionLimiter;
pub use service::{Request, Response, Service};
pub use session::Session;
pub use tls::PeerIdentity;
pub use udp::bind_steered_group;
