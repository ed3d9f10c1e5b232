//! Shared test harness: glommio servers in threads, the tokio/quinn SDK client, loopback,
//! ephemeral ports, development certificates in a temporary directory.
#![allow(dead_code)]

use std::{
    net::SocketAddr,
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        mpsc, Arc, Mutex,
    },
    thread::JoinHandle,
    time::Duration,
};

use bytes::Bytes;
use quiver_client::transport::{ClientTls, Connection};
use quiver_net::{
    tls::{self, DevCerts, ServerTlsFiles},
    Endpoint, EndpointConfig, EndpointStats, Request, Response, Service,
};
use quiver_proto::frame::{FrameError, FrameHeader, FLAG_ERROR_RESPONSE};

pub const API_ECHO: u16 = 1;
/// Body: u32 LE byte count; the response carries that many payload bytes in 64 KiB chunks.
pub const API_BIG: u16 = 2;
/// Body must be a flatbuffer whose root is a string (stands in for schema verification).
pub const API_VERIFY: u16 = 3;
/// Responds with the client certificate's common name.
pub const API_WHOAMI: u16 = 4;
/// Body: u32 LE milliseconds to wait before echoing.
pub const API_SLOW: u16 = 5;
/// Responds with the request's arrival number (u32 LE): how many API_ORDER requests the
/// service was handed before it, on any connection.
pub const API_ORDER: u16 = 6;

static ARRIVALS: AtomicU32 = AtomicU32::new(0);

pub fn header(api_key: u16, correlation_id: u32) -> FrameHeader {
    FrameHeader {
        api_key,
        api_version: 0,
        correlation_id,
        flags: 0,
    }
}

fn error_response(correlation_id: u32, api_key: u16, message: String) -> Response {
    Response {
        header: FrameHeader {
            api_key,
            api_version: 0,
            correlation_id,
            flags: FLAG_ERROR_RESPONSE,
        },
        body: Bytes::from(message),
        payload: vec![],
    }
}

/// The test service: a handful of APIs, error-flagged responses for unknown APIs and invalid
/// bodies, and (optionally) error responses for malformed frames.
#[derive(Clone)]
pub struct TestService {
    pub reject_with_response: bool,
}

#[allow(clippy::manual_async_fn)] // the trait's shape, spelled out on purpose
impl Service for TestService {
    fn call(&self, req: Request) -> impl std::future::Future<Output = Response> + 'static {
        // Counted when the service is handed the request, not when its task first runs.
        let arrival =
            (req.header.api_key == API_ORDER).then(|| ARRIVALS.fetch_add(1, Ordering::SeqCst));
        async move {
            let h = req.header;
            let ok = |body: Bytes, payload: Vec<Bytes>| Response {
                header: FrameHeader { flags: 0, ..h },
                body,
                payload,
            };
            match h.api_key {
                API_ECHO => ok(req.body, vec![req.payload]),
                API_BIG => {
                    let Ok(n) = <[u8; 4]>::try_from(&req.body[..]) else {
                        return error_response(h.correlation_id, h.api_key, "bad size".into());
                    };
                    let n = u32::from_le_bytes(n) as usize;
                    let chunk = Bytes::from(vec![0xab; 64 * 1024]);
                    let mut payload = Vec::new();
                    let mut left = n;
                    while left > 0 {
                        let take = left.min(chunk.len());
                        payload.push(chunk.slice(..take));
                        left -= take;
                    }
                    ok(Bytes::new(), payload)
                }
                API_VERIFY => match flatbuffers::root::<&str>(&req.body) {
                    Ok(s) => ok(Bytes::copy_from_slice(s.as_bytes()), vec![]),
                    Err(e) => error_response(
                        h.correlation_id,
                        h.api_key,
                        format!("invalid flatbuffer body: {e}"),
                    ),
                },
                API_WHOAMI => {
                    let cn = req
                        .identity
                        .as_ref()
                        .and_then(|i| i.common_name.clone())
                        .unwrap_or_default();
                    ok(Bytes::from(cn), vec![])
                }
                API_SLOW => {
                    let ms = req
                        .body
                        .get(..4)
                        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
                        .unwrap_or(0);
                    glommio::timer::sleep(Duration::from_millis(ms as u64)).await;
                    ok(req.body, vec![])
                }
                API_ORDER => ok(
                    Bytes::copy_from_slice(&arrival.unwrap_or(0).to_le_bytes()),
                    vec![],
                ),
                other => {
                    error_response(h.correlation_id, other, format!("unknown api key {other}"))
                }
            }
        }
    }

    fn reject(&self, header: Option<FrameHeader>, err: &FrameError) -> Option<Response> {
        if !self.reject_with_response {
            return None;
        }
        let (cid, key) = header.map_or((0, 0), |h| (h.correlation_id, h.api_key));
        Some(error_response(cid, key, format!("malformed frame: {err}")))
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub certs: DevCerts,
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<Vec<EndpointStats>>>,
    threads: Vec<JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
}

pub struct ServerOptions {
    pub shards: usize,
    pub config: EndpointConfig,
    pub reject_with_response: bool,
    pub client_ca: Option<std::path::PathBuf>,
    pub shutdown_grace: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            shards: 1,
            config: EndpointConfig::default(),
            reject_with_response: true,
            client_ca: None,
            shutdown_grace: Duration::from_secs(1),
        }
    }
}

impl TestServer {
    pub fn start(opts: ServerOptions) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Self::start_in(dir.path(), opts);
        server._dir = Some(dir);
        server
    }

    pub fn start_in(data_dir: &Path, opts: ServerOptions) -> TestServer {
        let certs = tls::ensure_dev_certs(data_dir).unwrap();
        let files = ServerTlsFiles {
            client_ca: opts.client_ca.clone(),
            ..certs.server_files()
        };
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(vec![EndpointStats::default(); opts.shards]));
        let mut threads = Vec::new();
        let mut addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        for shard in 0..opts.shards {
            let (tx, rx) = mpsc::channel();
            let (files, cfg, stop, stats) = (
                files.clone(),
                opts.config.clone(),
                stop.clone(),
                stats.clone(),
            );
            let svc = TestService {
                reject_with_response: opts.reject_with_response,
            };
            let grace = opts.shutdown_grace;
            threads.push(std::thread::spawn(move || {
                let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
                ex.run(async move {
                    let tls = tls::server_config(&files).unwrap();
                    let ep = Endpoint::builder(addr)
                        .config(cfg)
                        .server(tls, svc)
                        .bind()
                        .unwrap();
                    tx.send(ep.local_addr()).unwrap();
                    while !stop.load(Ordering::Relaxed) {
                        stats.lock().unwrap()[shard] = ep.stats();
                        glommio::timer::sleep(Duration::from_millis(5)).await;
                    }
                    ep.shutdown(grace).await;
                    stats.lock().unwrap()[shard] = ep.stats();
                });
            }));
            addr = rx.recv().unwrap();
        }
        TestServer {
            addr,
            certs,
            stop,
            stats,
            threads,
            _dir: None,
        }
    }

    /// Latest statistics per shard (refreshed every 5 ms).
    pub fn stats(&self) -> Vec<EndpointStats> {
        self.stats.lock().unwrap().clone()
    }

    pub fn client_tls(&self) -> ClientTls {
        ClientTls::from_ca_file(&self.certs.ca_cert).unwrap()
    }

    pub async fn connect(&self) -> Connection {
        Connection::connect(self.addr, "localhost", &self.client_tls())
            .await
            .unwrap()
    }

    /// Graceful shutdown; returns the final statistics.
    pub fn stop(mut self) -> Vec<EndpointStats> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
        self.stats()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Waits (up to `timeout`) until `f` holds for the server's statistics.
pub async fn wait_for_stats(
    server: &TestServer,
    timeout: Duration,
    f: impl Fn(&[EndpointStats]) -> bool,
) -> Vec<EndpointStats> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let s = server.stats();
        if f(&s) || tokio::time::Instant::now() >= deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One echo round trip that must succeed: the server is still serving.
pub async fn assert_echo(conn: &Connection, correlation_id: u32) {
    let body = Bytes::from(format!("still serving {correlation_id}"));
    let f = conn
        .call(
            header(API_ECHO, correlation_id),
            body.clone(),
            vec![Bytes::from_static(b"payload")],
        )
        .await
        .unwrap();
    assert_eq!(f.header.correlation_id, correlation_id);
    assert!(!f.header.is_error_response());
    assert_eq!(f.body, body);
    assert_eq!(&f.payload[..], b"payload");
}
