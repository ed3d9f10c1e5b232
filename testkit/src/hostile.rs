//! A hostile client: speaks Quiver's wire protocol over real QUIC, but builds frames, bodies and
//! record batches by hand, so a test sends exactly the bytes an attacker would (lying lengths,
//! repeated entries, overlapping payload references, garbage records under a valid CRC,
//! requests cut short, stalled or cancelled). It goes through the same TLS and QUIC as the SDK:
//! only what is inside the streams is forged.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use quiver_client::transport::{Connection, TransportError};
use quiver_client::ClientTls;
use quiver_proto::api::{self, ApiKey, ErrorResponse, Message, Request};
use quiver_proto::batch::{self, BATCH_HEADER_BYTES};
use quiver_proto::frame::{self, Frame, FrameHeader, FRAME_HEADER_BYTES};

use crate::Broker;

/// What came back on a stream.
pub enum Reply {
    /// A whole response frame.
    Frame(Frame),
    /// The broker reset the stream, with this code (`quiver_net::codes`).
    Reset(u64),
    /// The stream or connection ended some other way.
    Failed(String),
}

impl std::fmt::Debug for Reply {
    // Short: a response may be megabytes, and a failed assertion prints it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Frame(fr) => write!(
                f,
                "Frame {{ {:?}, body {} bytes, payload {} bytes }}",
                fr.header,
                fr.body.len(),
                fr.payload.len()
            ),
            Reply::Reset(code) => write!(f, "Reset({code:#x})"),
            Reply::Failed(why) => write!(f, "Failed({why})"),
        }
    }
}

impl Reply {
    /// The response body decoded as `R`'s response; panics (with what came instead) otherwise.
    pub fn ok<R: Request>(&self) -> R::Response {
        match self {
            Reply::Frame(f) => match api::decode_response::<R>(f) {
                Ok(r) => r,
                Err(e) => panic!("expected a {:?} response, got {e}", R::API),
            },
            other => panic!("expected a {:?} response, got {other:?}", R::API),
        }
    }

    /// The `ErrorResponse` the broker answered with; panics otherwise.
    pub fn error(&self) -> ErrorResponse {
        match self {
            Reply::Frame(f) if f.header.is_error_response() => {
                ErrorResponse::decode(&f.body).expect("an ErrorResponse body")
            }
            other => panic!("expected an error response, got {other:?}"),
        }
    }

    /// Bytes of the response frame (0 if there was none).
    pub fn wire_len(&self) -> usize {
        match self {
            Reply::Frame(f) => FRAME_HEADER_BYTES + f.body.len() + f.payload.len(),
            _ => 0,
        }
    }
}

/// One QUIC connection to a broker, used raw.
pub struct Hostile {
    pub conn: Connection,
    /// Largest response frame this client reads (far above the broker's, so that a broker that
    /// overshoots its own limit is seen doing it).
    pub read_max: usize,
}

impl Hostile {
    /// Connects to `broker`, trusting its development CA.
    pub async fn connect(broker: &Broker) -> Hostile {
        Hostile::try_connect(broker)
            .await
            .expect("hostile client connects")
    }

    /// Connects to `broker` presenting `as_broker`'s own certificate: a client that holds a
    /// cluster broker's key, and so speaks as that broker (broker-to-broker requests).
    pub async fn connect_as(broker: &Broker, as_broker: &Broker) -> Hostile {
        let tls = ClientTls::from_ca_file(broker.ca())
            .expect("the broker's CA")
            .with_client_cert(
                as_broker.data_dir().join("tls/server.pem"),
                as_broker.data_dir().join("tls/server.key"),
            )
            .expect("the broker's certificate");
        let conn = Connection::connect(broker.addr, "localhost", &tls)
            .await
            .expect("hostile client connects");
        Hostile {
            conn,
            read_max: 1 << 30,
        }
    }

    /// Connects, or says why not (a refused connection, for the connection caps).
    pub async fn try_connect(broker: &Broker) -> Result<Hostile, TransportError> {
        let tls = ClientTls::from_ca_file(broker.ca()).expect("the broker's CA");
        let conn = Connection::connect(broker.addr, "localhost", &tls).await?;
        Ok(Hostile {
            conn,
            read_max: 1 << 30,
        })
    }

    /// Sends `bytes` on a new stream (whatever they are), finishes it, and reads what comes back.
    pub async fn send_raw(&self, bytes: &[u8]) -> Reply {
        let (mut send, recv) = match self.conn.quinn().open_bi().await {
            Ok(s) => s,
            Err(e) => return Reply::Failed(e.to_string()),
        };
        if let Err(e) = send.write_all(bytes).await {
            // The broker may refuse the rest of a request (STOP_SENDING) and still answer.
            let _ = e;
        }
        let _ = send.finish();
        self.read_reply(recv).await
    }

    /// Sends a request built from a typed body (checked by nothing on this side) and a payload.
    pub async fn call<R: Request>(&self, req: &R, payload: &[u8]) -> Reply {
        self.send_raw(&request(R::API, &req.encode(), payload))
            .await
    }

    async fn read_reply(&self, mut recv: quinn::RecvStream) -> Reply {
        match recv.read_to_end(self.read_max).await {
            Ok(bytes) => match frame::decode(Bytes::from(bytes), self.read_max) {
                Ok(f) => Reply::Frame(f),
                Err(e) => Reply::Failed(format!("not a frame: {e}")),
            },
            Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) => {
                Reply::Reset(code.into_inner())
            }
            Err(e) => Reply::Failed(e.to_string()),
        }
    }

    /// Opens a stream and writes `bytes` without finishing it: the broker waits for the rest.
    /// Returns the stream's halves so the test decides what happens next (nothing, a reset).
    pub async fn start(&self, bytes: &[u8]) -> (quinn::SendStream, quinn::RecvStream) {
        let (mut send, recv) = self.conn.quinn().open_bi().await.expect("open stream");
        send.write_all(bytes).await.expect("write");
        (send, recv)
    }

    /// Reads the reply to a stream opened with [`start`](Self::start), within `within`.
    pub async fn reply(&self, recv: quinn::RecvStream, within: Duration) -> Option<Reply> {
        tokio::time::timeout(within, self.read_reply(recv))
            .await
            .ok()
    }

    /// Sends a whole request, waits `after`, then cancels it as a client that gave up does
    /// (reset of its side, STOP_SENDING of the broker's).
    pub async fn send_and_cancel(&self, bytes: &[u8], after: Duration) {
        let (mut send, mut recv) = self.conn.quinn().open_bi().await.expect("open stream");
        send.write_all(bytes).await.expect("write");
        let _ = send.finish();
        tokio::time::sleep(after).await;
        let _ = send.reset(quinn::VarInt::from_u32(0x14));
        let _ = recv.stop(quinn::VarInt::from_u32(0x14));
    }
}

/// A request frame: header for `api` at version 0, then `body`, then `payload`.
pub fn request(api: ApiKey, body: &[u8], payload: &[u8]) -> Vec<u8> {
    frame::encode(
        &FrameHeader {
            api_key: api.as_u16(),
            api_version: 0,
            correlation_id: 7,
            flags: 0,
        },
        body,
        &[payload],
    )
    .to_vec()
}

/// A frame whose 20-byte header says what the caller wants (`frame_len`, `body_len`), whatever
/// follows: for lying lengths.
pub fn lying_frame(api: u16, frame_len: u32, body_len: u32, rest: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::with_capacity(FRAME_HEADER_BYTES + rest.len());
    out.put_u32_le(frame_len);
    out.put_u16_le(api);
    out.put_u16_le(0);
    out.put_u32_le(9);
    out.put_u16_le(0);
    out.put_u16_le(0);
    out.put_u32_le(body_len);
    out.put_slice(rest);
    out.to_vec()
}

/// What a hand-built batch's header says; the defaults describe `records_count` uncompressed
/// records with timestamps 0, no producer.
#[derive(Clone, Debug)]
pub struct Forged {
    pub record_count: u32,
    pub last_offset_delta: u32,
    pub attributes: u16,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl Forged {
    pub fn records(count: u32) -> Forged {
        Forged {
            record_count: count,
            last_offset_delta: count.saturating_sub(1),
            attributes: 0,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        }
    }

    /// A batch with this header over `section` (the records section, taken as it is), with a
    /// correct `batch_len` and CRC: it passes the cheap check whatever `section` holds.
    pub fn batch(&self, section: &[u8]) -> Vec<u8> {
        let len = BATCH_HEADER_BYTES + section.len();
        let mut b = BytesMut::with_capacity(len);
        b.put_u64_le(0); // base offset
        b.put_u32_le(len as u32);
        b.put_u32_le(0); // leader epoch
        b.put_u32_le(0); // crc, below
        b.put_u8(batch::BATCH_VERSION);
        b.put_u8(0);
        b.put_u16_le(self.attributes);
        b.put_u32_le(self.last_offset_delta);
        b.put_i64_le(self.base_timestamp);
        b.put_i64_le(self.max_timestamp);
        b.put_i64_le(self.producer_id);
        b.put_i16_le(self.producer_epoch);
        b.put_i32_le(self.base_sequence);
        b.put_u32_le(self.record_count);
        b.put_u16_le(0);
        b.put_slice(section);
        let mut v = b.to_vec();
        let crc = batch::compute_crc(&v);
        v[16..20].copy_from_slice(&crc.to_le_bytes());
        v
    }
}

/// `n` well-formed records (uncompressed section bytes), each with a `value_len`-byte value.
pub fn records_section(n: u32, value_len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let mut rec = vec![0u8]; // attributes
        rec.push(0); // timestamp delta (zigzag 0)
        uvarint(&mut rec, u64::from(i)); // offset delta
        rec.push(1); // key_len -1 (zigzag)
        uvarint(&mut rec, (value_len as u64) << 1); // value_len (zigzag)
        rec.extend(std::iter::repeat_n(b'v', value_len));
        rec.push(0); // no headers
        uvarint(&mut out, rec.len() as u64);
        out.extend_from_slice(&rec);
    }
    out
}

fn uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}
