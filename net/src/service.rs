//! What the transport hands to the broker, and what it expects back. net moves frames; it does
//! not know what is in a body (ARCHITECTURE.md).

use std::{future::Future, net::SocketAddr, pin::Pin, rc::Rc, sync::Arc};

use bytes::Bytes;
use quiver_proto::frame::{FrameError, FrameHeader, FRAME_HEADER_BYTES};

use crate::session::Session;
use crate::tls::PeerIdentity;

/// One request frame, read whole from its stream.
#[derive(Clone, Debug)]
pub struct Request {
    pub header: FrameHeader,
    /// The flatbuffer body, not verified here.
    pub body: Bytes,
    /// The raw payload section (record batches).
    pub payload: Bytes,
    /// The peer's UDP address.
    pub peer: SocketAddr,
    /// Unique on this endpoint for its lifetime (never reused, unlike quinn-proto's handles).
    pub connection_id: u64,
    /// The client certificate's names, with mutual TLS on; `None` without a client certificate.
    pub identity: Option<Arc<PeerIdentity>>,
    /// The connection's session (its authentication), shared by all its requests.
    pub session: Rc<Session>,
}

/// One response frame. The payload chunks are handed to QUIC as they are, without copying.
#[derive(Clone, Debug)]
pub struct Response {
    pub header: FrameHeader,
    pub body: Bytes,
    pub payload: Vec<Bytes>,
}

impl Response {
    /// Bytes this response occupies on the wire, header included.
    pub fn wire_len(&self) -> usize {
        FRAME_HEADER_BYTES + self.body.len() + self.payload.iter().map(Bytes::len).sum::<usize>()
    }
}

/// The broker side of the transport. Runs on the endpoint's executor; futures need not be `Send`.
///
/// `call` is invoked once per well-formed request frame, each in its own task, so a slow request
/// never holds up another. `reject` is asked for an error response when a frame is malformed
/// (too large, truncated, reserved bits, body overrun); returning `None` makes the transport
/// reset the stream with the matching code from `codes`.
pub trait Service: 'static {
    fn call(&self, req: Request) -> impl Future<Output = Response> + 'static;

    fn reject(&self, header: Option<FrameHeader>, err: &FrameError) -> Option<Response> {
        let _ = (header, err);
        None
    }
}

pub(crate) type BoxFuture = Pin<Box<dyn Future<Output = Response>>>;

/// `Service` with its future boxed, so the driver holds one concrete type.
pub(crate) trait DynService {
    fn call(&self, req: Request) -> BoxFuture;
    fn reject(&self, header: Option<FrameHeader>, err: &FrameError) -> Option<Response>;
}

impl<S: Service> DynService for S {
    fn call(&self, req: Request) -> BoxFuture {
        Box::pin(Service::call(self, req))
    }

    fn reject(&self, header: Option<FrameHeader>, err: &FrameError) -> Option<Response> {
        Service::reject(self, header, err)
    }
}
