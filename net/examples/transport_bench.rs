//! Loopback transport benchmark (acceptance 5 of issue 3): the glommio/quinn-proto server of this
//! crate beside an equivalent quinn-on-tokio server, driven by the same SDK client (tokio +
//! quinn), in the same run, with the same transport parameters.
//!
//! ```text
//! cargo run --release -p quiver-net --example transport_bench -- [--secs 5] [--inflight 8]
//!     [--frame-kib 1024] [--only glommio|quinn] [--mode upload|download] [--topology one|per-core]
//! ```
//!
//! Modes: `upload` sends 1 MiB request frames and gets empty responses (the produce shape);
//! `download` sends empty requests and gets 1 MiB response frames built from 64 KiB `Bytes`
//! chunks (the fetch shape). Topologies: one connection; one connection per core (the glommio
//! server runs one endpoint per core on one address with SO_REUSEPORT, and the benchmark keeps
//! reconnecting until each core holds one connection; the quinn server runs one endpoint on a
//! tokio runtime with one worker per core). MB/s counts frame payload bytes, 10^6 bytes per MB.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use quiver_client::transport::{ClientTls, Connection};
use quiver_net::{tls, Endpoint, EndpointConfig, EndpointStats, Request, Response, Service};
use quiver_proto::frame::{self, FrameHeader};

const API_UPLOAD: u16 = 1;
const API_DOWNLOAD: u16 = 2;
const CHUNK_BYTES: usize = 64 * 1024;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Upload,
    Download,
}

struct Args {
    secs: u64,
    inflight: usize,
    frame_bytes: usize,
    only: Option<String>,
    modes: Vec<Mode>,
    /// Only the one-connection topology (`one`) or only one connection per core (`per-core`).
    topology: Option<String>,
}

fn parse_args() -> Args {
    let mut a = Args {
        secs: 5,
        inflight: 8,
        frame_bytes: 1024 * 1024,
        only: None,
        modes: vec![Mode::Upload, Mode::Download],
        topology: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().expect("flag value");
        match flag.as_str() {
            "--secs" => a.secs = val().parse().expect("secs"),
            "--inflight" => a.inflight = val().parse().expect("inflight"),
            "--frame-kib" => a.frame_bytes = val().parse::<usize>().expect("kib") * 1024,
            "--only" => a.only = Some(val()),
            "--topology" => a.topology = Some(val()),
            "--mode" => {
                a.modes = vec![match val().as_str() {
                    "upload" => Mode::Upload,
                    "download" => Mode::Download,
                    m => panic!("unknown mode {m}"),
                }]
            }
            f => panic!("unknown flag {f}"),
        }
    }
    a
}

/// The response payload for downloads: `frame_bytes` in 64 KiB chunks of one shared buffer, as
/// the broker serves stored batches.
fn download_payload(frame_bytes: usize) -> Vec<Bytes> {
    let buf = Bytes::from(vec![0x5a; CHUNK_BYTES]);
    let mut out = Vec::new();
    let mut left = frame_bytes;
    while left > 0 {
        let n = left.min(CHUNK_BYTES);
        out.push(buf.slice(..n));
        left -= n;
    }
    out
}

fn respond(header: FrameHeader, frame_bytes: usize) -> Response {
    Response {
        header,
        body: Bytes::new(),
        payload: if header.api_key == API_DOWNLOAD {
            download_payload(frame_bytes)
        } else {
            vec![]
        },
    }
}

#[derive(Clone)]
struct Sink {
    frame_bytes: usize,
}

impl Service for Sink {
    fn call(&self, req: Request) -> impl std::future::Future<Output = Response> + 'static {
        std::future::ready(respond(req.header, self.frame_bytes))
    }
}

/// One glommio executor per core, each with its own endpoint on the same address.
struct GlommioServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<Vec<EndpointStats>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl GlommioServer {
    fn start(cores: usize, files: &tls::DevCerts, frame_bytes: usize) -> GlommioServer {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(vec![EndpointStats::default(); cores]));
        let mut addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut threads = Vec::new();
        for core in 0..cores {
            let (tx, rx) = mpsc::channel();
            let (files, stop, stats) = (files.server_files(), stop.clone(), stats.clone());
            let thread = std::thread::Builder::new().name("bench-shard".into());
            threads.push(
                thread
                    .spawn(move || {
                        let ex =
                            glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(core))
                                .name("bench-shard")
                                .make()
                                .unwrap();
                        ex.run(async move {
                            let ep = Endpoint::builder(addr)
                                .server(tls::server_config(&files).unwrap(), Sink { frame_bytes })
                                .bind()
                                .unwrap();
                            tx.send(ep.local_addr()).unwrap();
                            while !stop.load(Ordering::Relaxed) {
                                stats.lock().unwrap()[core] = ep.stats();
                                glommio::timer::sleep(Duration::from_millis(20)).await;
                            }
                            ep.shutdown(Duration::from_millis(200)).await;
                            stats.lock().unwrap()[core] = ep.stats();
                        });
                    })
                    .unwrap(),
            );
            addr = rx.recv().unwrap();
        }
        GlommioServer {
            addr,
            stop,
            stats,
            threads,
        }
    }

    fn connections_per_core(&self) -> Vec<usize> {
        self.stats
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.connections)
            .collect()
    }

    fn stop(self) -> Vec<EndpointStats> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        self.stats.lock().unwrap().clone()
    }
}

/// quinn on a tokio runtime with one worker per core: one endpoint, a task per stream.
struct QuinnServer {
    addr: SocketAddr,
    endpoint: quinn::Endpoint,
    runtime: tokio::runtime::Runtime,
}

impl QuinnServer {
    fn start(cores: usize, files: &tls::DevCerts, frame_bytes: usize) -> QuinnServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cores)
            .thread_name("bench-quinn")
            .enable_all()
            .build()
            .unwrap();
        let rustls_config = tls::server_config(&files.server_files()).unwrap();
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(rustls_config).unwrap();
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(EndpointConfig::default().transport());
        config.migration(false);
        // The same socket buffer sizes as the glommio endpoint asks for (the kernel clamps both
        // alike), so that neither side drops datagrams the other would have kept.
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )
        .unwrap();
        let buffer = EndpointConfig::default().socket_buffer_bytes;
        socket.set_recv_buffer_size(buffer).unwrap();
        socket.set_send_buffer_size(buffer).unwrap();
        let bind: SocketAddr = "127.0.0.1:0".parse().unwrap();
        socket.bind(&bind.into()).unwrap();
        let endpoint = {
            let _guard = runtime.enter();
            quinn::Endpoint::new(
                quinn::EndpointConfig::default(),
                Some(config),
                socket.into(),
                Arc::new(quinn::TokioRuntime),
            )
            .unwrap()
        };
        let addr = endpoint.local_addr().unwrap();
        let ep = endpoint.clone();
        runtime.spawn(async move {
            while let Some(incoming) = ep.accept().await {
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    while let Ok((send, recv)) = conn.accept_bi().await {
                        tokio::spawn(serve_quinn_stream(send, recv, frame_bytes));
                    }
                });
            }
        });
        QuinnServer {
            addr,
            endpoint,
            runtime,
        }
    }

    fn stop(self) {
        self.endpoint.close(0u32.into(), b"done");
        self.runtime.shutdown_timeout(Duration::from_secs(1));
    }
}

/// The same per-request work as the glommio server: prefix checked before allocating, the frame
/// read whole, the response written as header + body + payload chunks.
async fn serve_quinn_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    frame_bytes: usize,
) {
    let max = frame::FRAME_BYTES_MAX_DEFAULT;
    let mut prefix = [0u8; 4];
    if recv.read_exact(&mut prefix).await.is_err() {
        return;
    }
    let Ok(total) = frame::check_len_prefix(prefix, max) else {
        return;
    };
    let mut buf = BytesMut::with_capacity(total);
    buf.extend_from_slice(&prefix);
    while buf.len() < total {
        match recv.read_chunk(total - buf.len(), true).await {
            Ok(Some(c)) => buf.extend_from_slice(&c.bytes),
            _ => return,
        }
    }
    let Ok(f) = frame::decode(buf.freeze(), max) else {
        return;
    };
    let resp = respond(f.header, frame_bytes);
    let payload_len: usize = resp.payload.iter().map(Bytes::len).sum();
    let Ok(header) = frame::encode_header(&resp.header, resp.body.len(), payload_len) else {
        return;
    };
    let mut chunks = vec![Bytes::copy_from_slice(&header)];
    chunks.extend(resp.payload);
    if send.write_all_chunks(&mut chunks).await.is_ok() {
        let _ = send.finish();
    }
}

/// Drives `conns` connections with `inflight` concurrent calls each for `secs`; returns MB/s.
async fn drive(conns: &[Connection], mode: Mode, args: &Args) -> f64 {
    let bytes = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let upload_payload = Bytes::from(vec![0xa5; args.frame_bytes - frame::FRAME_HEADER_BYTES]);
    let mut tasks = Vec::new();
    // Warm-up: one call per connection so congestion windows start open alike.
    for c in conns {
        let _ = c
            .call(header(API_DOWNLOAD), Bytes::new(), vec![])
            .await
            .unwrap();
    }
    let stats_before: Vec<_> = conns.iter().map(|c| c.quinn().stats()).collect();
    let usage_before = ThreadUsage::now();
    let started = Instant::now();
    for c in conns {
        for _ in 0..args.inflight {
            let (c, bytes, stop, payload) = (
                c.clone(),
                bytes.clone(),
                stop.clone(),
                upload_payload.clone(),
            );
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let f = match mode {
                        Mode::Upload => c
                            .call(header(API_UPLOAD), Bytes::new(), vec![payload.clone()])
                            .await
                            .unwrap(),
                        Mode::Download => c
                            .call(header(API_DOWNLOAD), Bytes::new(), vec![])
                            .await
                            .unwrap(),
                    };
                    let moved = match mode {
                        Mode::Upload => payload.len(),
                        Mode::Download => f.payload.len(),
                    };
                    bytes.fetch_add(moved as u64, Ordering::Relaxed);
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(args.secs)).await;
    stop.store(true, Ordering::Relaxed);
    let total = bytes.load(Ordering::Relaxed);
    let elapsed = started.elapsed();
    let used = ThreadUsage::now().since(usage_before);
    let gb = total as f64 / 1e9;
    eprintln!(
        "  CPU s per GB: server {:.2}, client {:.2}; client context switches per GB: {:.0} \
         voluntary, {:.0} not",
        used.server_cpu_s / gb,
        used.client_cpu_s / gb,
        used.client_voluntary_switches as f64 / gb,
        used.client_involuntary_switches as f64 / gb
    );
    // What the client received per GB moved: datagrams, and in them ACK and credit frames.
    let (mut dgrams, mut acks, mut credit, mut sent_ios) = (0u64, 0u64, 0u64, 0u64);
    let (mut lost, mut congestion) = (0u64, 0u64);
    for (c, before) in conns.iter().zip(&stats_before) {
        let now = c.quinn().stats();
        dgrams += now.udp_rx.datagrams - before.udp_rx.datagrams;
        acks += now.frame_rx.acks - before.frame_rx.acks;
        credit += now.frame_rx.max_data + now.frame_rx.max_stream_data
            - before.frame_rx.max_data
            - before.frame_rx.max_stream_data;
        sent_ios += now.udp_tx.ios - before.udp_tx.ios;
        lost += now.path.lost_packets - before.path.lost_packets;
        congestion += now.path.congestion_events - before.path.congestion_events;
    }
    eprintln!(
        "  client per GB: {:.0} datagrams in, {:.0} ACK frames, {:.0} credit frames, {:.0} sends; \
         {lost} packets lost, {congestion} congestion events in the run; at the end rtt {:?}, \
         cwnd {} kB, mtu {}",
        dgrams as f64 / gb,
        acks as f64 / gb,
        credit as f64 / gb,
        sent_ios as f64 / gb,
        conns[0].quinn().rtt(),
        conns[0].quinn().stats().path.cwnd / 1000,
        conns[0].quinn().stats().path.current_mtu
    );
    for t in tasks {
        t.await.unwrap();
    }
    total as f64 / elapsed.as_secs_f64() / 1e6
}

/// CPU time and context switches of this process's threads so far, split by thread name: the
/// servers' threads are named `bench-shard` / `bench-quinn`, the client's tokio workers keep
/// tokio's default name. Read from /proc (CPU in clock ticks, 100 per second).
#[derive(Clone, Copy, Default)]
struct ThreadUsage {
    server_cpu_s: f64,
    client_cpu_s: f64,
    client_voluntary_switches: u64,
    client_involuntary_switches: u64,
}

impl ThreadUsage {
    fn now() -> ThreadUsage {
        let mut u = ThreadUsage::default();
        let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
            return u;
        };
        for t in dir.flatten() {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
            // Fields after the parenthesised name: state is field 3; utime and stime are 14, 15.
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            let cpu_s = (field(11) + field(12)) as f64 / 100.0;
            if comm.starts_with("bench-") {
                u.server_cpu_s += cpu_s;
            } else if comm.starts_with("tokio-r") {
                u.client_cpu_s += cpu_s;
                let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
                for l in status.lines() {
                    let count = |v: &str| v.trim().parse::<u64>().unwrap_or(0);
                    if let Some(v) = l.strip_prefix("voluntary_ctxt_switches:") {
                        u.client_voluntary_switches += count(v);
                    } else if let Some(v) = l.strip_prefix("nonvoluntary_ctxt_switches:") {
                        u.client_involuntary_switches += count(v);
                    }
                }
            }
        }
        u
    }

    /// What was used between `before` and this snapshot.
    fn since(self, before: ThreadUsage) -> ThreadUsage {
        ThreadUsage {
            server_cpu_s: self.server_cpu_s - before.server_cpu_s,
            client_cpu_s: self.client_cpu_s - before.client_cpu_s,
            client_voluntary_switches: self.client_voluntary_switches
                - before.client_voluntary_switches,
            client_involuntary_switches: self.client_involuntary_switches
                - before.client_involuntary_switches,
        }
    }
}

fn header(api_key: u16) -> FrameHeader {
    FrameHeader {
        api_key,
        api_version: 0,
        correlation_id: 0,
        flags: 0,
    }
}

fn main() {
    let args = parse_args();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let dir = tempfile::tempdir().unwrap();
    let certs = tls::ensure_dev_certs(dir.path()).unwrap();
    let client_tls = ClientTls::from_ca_file(&certs.ca_cert).unwrap();
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()
        .unwrap();

    println!(
        "transport_bench: {} s per run, {} calls in flight per connection, {} KiB frames, {} cores",
        args.secs,
        args.inflight,
        args.frame_bytes / 1024,
        cores
    );
    println!("| mode | connections | glommio/quinn-proto MB/s | quinn/tokio MB/s | ratio |");
    println!("|---|---|---|---|---|");
    for &mode in &args.modes {
        for conns_wanted in [1, cores] {
            let topology = if conns_wanted == 1 { "one" } else { "per-core" };
            if args.topology.as_deref().is_some_and(|t| t != topology) {
                continue;
            }
            let label = if conns_wanted == 1 {
                "1".to_string()
            } else {
                format!("{conns_wanted} (one per core)")
            };
            let mut glommio_mbps = f64::NAN;
            let mut quinn_mbps = f64::NAN;
            if args.only.as_deref() != Some("quinn") {
                let server = GlommioServer::start(cores, &certs, args.frame_bytes);
                glommio_mbps = client_rt.block_on(async {
                    let conns = connect_spread(&server, conns_wanted, &client_tls).await;
                    drive(&conns, mode, &args).await
                });
                let stats = server.stop();
                let sends: u64 = stats.iter().map(|s| s.send_calls).sum();
                let dgrams: u64 = stats.iter().map(|s| s.datagrams_sent).sum();
                let reused: u64 = stats.iter().map(|s| s.frame_buffers_reused).sum();
                let served: u64 = stats.iter().map(|s| s.requests_served).sum();
                eprintln!(
                    "  glommio {mode:?} x{conns_wanted}: {:.1} datagrams per sendmsg, \
                     {reused} of {served} frames read into a reused buffer",
                    dgrams as f64 / sends.max(1) as f64
                );
            }
            if args.only.as_deref() != Some("glommio") {
                let server = QuinnServer::start(cores, &certs, args.frame_bytes);
                let addr = server.addr;
                quinn_mbps = client_rt.block_on(async {
                    let mut conns = Vec::new();
                    for _ in 0..conns_wanted {
                        conns.push(
                            Connection::connect(addr, "localhost", &client_tls)
                                .await
                                .unwrap(),
                        );
                    }
                    drive(&conns, mode, &args).await
                });
                server.stop();
            }
            println!(
                "| {} | {} | {:.0} | {:.0} | {:.2} |",
                match mode {
                    Mode::Upload => "upload (1 MiB requests)",
                    Mode::Download => "download (1 MiB responses)",
                },
                label,
                glommio_mbps,
                quinn_mbps,
                glommio_mbps / quinn_mbps
            );
        }
    }
}

/// Opens connections until `n` of them sit on `n` different cores (SO_REUSEPORT hashes the
/// client's port, so a new connection from a new port may land elsewhere).
async fn connect_spread(server: &GlommioServer, n: usize, tls: &ClientTls) -> Vec<Connection> {
    let mut kept: Vec<Connection> = Vec::new();
    let mut used = vec![false; server.connections_per_core().len()];
    for _ in 0..64 {
        if kept.len() == n {
            break;
        }
        let before = server.connections_per_core();
        let c = Connection::connect(server.addr, "localhost", tls)
            .await
            .unwrap();
        let mut after = before.clone();
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(25)).await;
            after = server.connections_per_core();
            if after != before {
                break;
            }
        }
        let core = (0..after.len()).find(|&i| after[i] > before[i]);
        match core {
            Some(i) if !used[i] => {
                used[i] = true;
                kept.push(c);
            }
            _ => {
                c.close("landed on a core that already has a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert_eq!(
        kept.len(),
        n,
        "could not spread {n} connections over the cores"
    );
    kept
}
