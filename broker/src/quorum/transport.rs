//! Raft messages between voters, over the brokers' own QUIC transport (`RaftMessage`, key 1001).
//!
//! Each peer has a sender task and a bounded queue. The task dials the peer from the quorum's
//! own client endpoint (a socket of its own: replies to a dial from the listeners' steered group
//! would be hashed to another shard), and sends what is queued, in order, up to
//! `MESSAGES_PER_CALL_MAX` messages per request, one request at a time. A message that cannot
//! be delivered is dropped and raft is told (`Event::Unreachable`, and for a snapshot
//! `Event::SnapshotStatus`): raft resends what matters. A full queue drops the newest message,
//! for the same reason.
//!
//! Receiving is the handler's (`handlers::cluster`): it checks the cluster id and the sender,
//! decodes each message, and hands them to the quorum as `Event::Step`.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_channel::mpsc;
use futures_util::StreamExt;
use protobuf::Message as _;
use quiver_net::{ClientConnection, Endpoint};
use quiver_proto::api::cluster::{RaftMessageRequest, RaftMessageResponse};
use quiver_proto::api::{ApiKey, Message as _};
use quiver_proto::frame::FrameHeader;
use quiver_proto::{BrokerId, ErrorCode};
use raft::eraftpb::{Message, MessageType};

use super::Event;

/// Messages queued for one peer before new ones are dropped.
pub const PEER_QUEUE_MAX: usize = 4096;
/// Messages in one RaftMessage request.
pub const MESSAGES_PER_CALL_MAX: usize = 256;
/// The largest encoded raft message accepted from a peer (a snapshot of metadata included).
pub const MESSAGE_BYTES_MAX: usize = 32 << 20;
/// Longest wait for a peer's handshake or answer; past it the peer counts as unreachable.
pub const PEER_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause before dialing a peer again after a failure.
const REDIAL_PAUSE: Duration = Duration::from_millis(200);

/// The queue to one peer.
pub struct PeerQueue {
    tx: mpsc::Sender<Message>,
}

impl PeerQueue {
    /// Queues `m`; false when the queue is full (the message is dropped).
    pub fn push(&self, m: Message) -> bool {
        self.tx.clone().try_send(m).is_ok()
    }
}

/// Encodes one raft message for the wire (raft-rs's protobuf encoding).
pub fn encode(m: &Message) -> Bytes {
    Bytes::from(m.write_to_bytes().expect("a raft message encodes"))
}

/// Decodes one raft message from a peer; `None` if the bytes are not one.
pub fn decode(bytes: &[u8]) -> Option<Message> {
    if bytes.len() > MESSAGE_BYTES_MAX {
        return None;
    }
    Message::parse_from_bytes(bytes).ok()
}

/// Where a peer listens: its host (a name or an address; its certificate must name it) and
/// QUIC port. Resolved at each dial, not once: a peer that comes back on another address (a
/// restarted pod) is found again, and one whose name does not resolve yet (a pod not yet in
/// DNS) is retried, not fatal.
#[derive(Clone, Debug)]
pub struct PeerAddr {
    pub host: String,
    pub port: u16,
}

impl PeerAddr {
    /// The first address `host:port` resolves to (the lookup runs on the blocking pool).
    pub async fn resolve(&self) -> Result<SocketAddr, String> {
        if let Ok(ip) = self.host.parse::<std::net::IpAddr>() {
            return Ok(SocketAddr::new(ip, self.port));
        }
        let (host, port) = (self.host.clone(), self.port);
        glommio::executor()
            .spawn_blocking(move || {
                use std::net::ToSocketAddrs;
                (host.as_str(), port)
                    .to_socket_addrs()
                    .map_err(|e| e.to_string())
                    .and_then(|mut a| a.next().ok_or_else(|| "no address".to_string()))
            })
            .await
            .map_err(|why| format!("cannot resolve {}:{}: {why}", self.host, self.port))
    }
}

/// Starts the sender task for peer `id` at `addr`.
pub fn spawn_peer(
    me: u32,
    id: u32,
    addr: PeerAddr,
    endpoint: Rc<Endpoint>,
    cluster_id: Rc<dyn Fn() -> String>,
    events: mpsc::Sender<Event>,
) -> PeerQueue {
    let (tx, rx) = mpsc::channel(PEER_QUEUE_MAX);
    glommio::spawn_local(send_loop(me, id, addr, endpoint, cluster_id, events, rx)).detach();
    PeerQueue { tx }
}

#[allow(clippy::too_many_arguments)]
async fn send_loop(
    me: u32,
    id: u32,
    addr: PeerAddr,
    endpoint: Rc<Endpoint>,
    cluster_id: Rc<dyn Fn() -> String>,
    mut events: mpsc::Sender<Event>,
    mut rx: mpsc::Receiver<Message>,
) {
    let mut conn: Option<ClientConnection> = None;
    let mut warned = false;
    while let Some(first) = rx.next().await {
        let mut batch = vec![first];
        while batch.len() < MESSAGES_PER_CALL_MAX {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        if conn.is_none() {
            match dial(&endpoint, &addr).await {
                Ok(c) => {
                    if warned {
                        tracing::info!(peer = id, host = %addr.host, port = addr.port, "controller quorum peer reachable again");
                    }
                    warned = false;
                    conn = Some(c);
                }
                Err(why) => {
                    if !warned {
                        tracing::warn!(peer = id, host = %addr.host, port = addr.port, error = %why, "cannot reach controller quorum peer; retrying");
                        warned = true;
                    }
                    undelivered(&mut events, id, &batch);
                    glommio::timer::sleep(REDIAL_PAUSE).await;
                    continue;
                }
            }
        }
        let c = conn.as_ref().expect("connected above");
        let request = RaftMessageRequest {
            cluster_id: cluster_id(),
            from: BrokerId(me),
            messages: Vec::new(),
        };
        let payload: Vec<Bytes> = batch.iter().map(encode).collect();
        let answered = super::within(PEER_CALL_TIMEOUT, call(c, request, payload)).await;
        match answered.unwrap_or_else(|| Err("no answer in time".to_string())) {
            Ok(ErrorCode::None) => {
                for m in &batch {
                    if m.get_msg_type() == MessageType::MsgSnapshot {
                        let _ = events.try_send(Event::SnapshotStatus(u64::from(id), true));
                    }
                }
            }
            Ok(code) => {
                if !warned {
                    tracing::warn!(peer = id, host = %addr.host, port = addr.port, ?code, "controller quorum peer refused our messages");
                    warned = true;
                }
                undelivered(&mut events, id, &batch);
                glommio::timer::sleep(REDIAL_PAUSE).await;
            }
            Err(why) => {
                tracing::debug!(peer = id, host = %addr.host, port = addr.port, error = %why, "raft messages not delivered; redialing");
                if let Some(c) = conn.take() {
                    c.close("raft call failed");
                }
                undelivered(&mut events, id, &batch);
            }
        }
    }
}

/// Connects to the peer at `addr` (resolved now; its certificate must name its host), giving
/// up after `PEER_CALL_TIMEOUT`: the raft senders' and the admin forwarder's one way to dial a
/// peer.
pub async fn dial(endpoint: &Endpoint, addr: &PeerAddr) -> Result<ClientConnection, String> {
    let resolved = addr.resolve().await?;
    match super::within(PEER_CALL_TIMEOUT, endpoint.connect(resolved, &addr.host)).await {
        Some(Ok(c)) => Ok(c),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("handshake timed out".to_string()),
    }
}

/// Tells raft that `batch` did not reach peer `id`.
fn undelivered(events: &mut mpsc::Sender<Event>, id: u32, batch: &[Message]) {
    let _ = events.try_send(Event::Unreachable(u64::from(id)));
    for m in batch {
        if m.get_msg_type() == MessageType::MsgSnapshot {
            let _ = events.try_send(Event::SnapshotStatus(u64::from(id), false));
        }
    }
}

/// One RaftMessage call: the messages travel in the payload, one `PayloadRef` each.
async fn call(
    conn: &ClientConnection,
    mut request: RaftMessageRequest,
    payload: Vec<Bytes>,
) -> Result<ErrorCode, String> {
    let mut offset = 0u32;
    for p in &payload {
        // Each message is at most MESSAGE_BYTES_MAX and a call's total is bounded by the
        // frame limit, which the call checks.
        let len = u32::try_from(p.len()).map_err(|_| "raft message over 4 GiB".to_string())?;
        request
            .messages
            .push(quiver_proto::api::common::PayloadRef::new(offset, len));
        offset = offset
            .checked_add(len)
            .ok_or_else(|| "raft messages over 4 GiB in one call".to_string())?;
    }
    let header = FrameHeader {
        api_key: ApiKey::RaftMessage.as_u16(),
        api_version: 0,
        correlation_id: 0,
        flags: 0,
    };
    let frame = conn
        .call(header, request.encode_bytes(), payload)
        .await
        .map_err(|e| e.to_string())?;
    let response = RaftMessageResponse::decode(&frame.body).map_err(|e| e.to_string())?;
    Ok(response.error_code)
}
