//! A UDP relay between the clients and one broker, for the faults the kernel here cannot make
//! (no netem qdisc): delay, duplication and reordering of datagrams, and loss on loopback. The
//! broker advertises the relay's address, so every connection a client makes goes through it.
//!
//! Each client flow (source address) gets its own upstream socket, bound to the same port number
//! on the relay's address when it can be, so the broker's steering of connections to shards by
//! source port sees what it would see without the relay.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng as SmallRng;
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;

/// What the relay does to datagrams now (both directions).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Impairment {
    /// Every datagram waits this long (ms), plus up to `jitter_ms` more.
    pub delay_ms: u64,
    /// Random extra wait per datagram (ms): datagrams overtake each other (reordering).
    pub jitter_ms: u64,
    /// Percent of datagrams sent twice.
    pub duplicate_pct: u32,
    /// Percent of datagrams dropped.
    pub drop_pct: u32,
}

/// What the relay forwarded (for the report).
#[derive(Clone, Copy, Debug, Default)]
pub struct RelayStats {
    /// Datagrams in.
    pub datagrams: u64,
    /// Dropped on purpose.
    pub dropped: u64,
    /// Sent twice on purpose.
    pub duplicated: u64,
    /// Delayed on purpose.
    pub delayed: u64,
}

struct Shared {
    impairment: Impairment,
    rng: SmallRng,
    stats: RelayStats,
}

/// A running relay; its tasks stop when it is dropped.
pub struct Relay {
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
    /// Where clients send.
    pub addr: SocketAddr,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    /// Listens on `listen` and forwards to `broker`.
    pub async fn start(
        listen: SocketAddr,
        broker: SocketAddr,
        seed: u64,
    ) -> std::io::Result<Relay> {
        let socket = Arc::new(UdpSocket::bind(listen).await?);
        let addr = socket.local_addr()?;
        let shared = Arc::new(Mutex::new(Shared {
            impairment: Impairment::default(),
            rng: SmallRng::seed_from_u64(seed),
            stats: RelayStats::default(),
        }));
        let task = tokio::spawn(serve(socket, broker, shared.clone()));
        Ok(Relay { shared, task, addr })
    }

    /// Changes what happens to datagrams from now on.
    pub fn set(&self, impairment: Impairment) {
        self.shared.lock().expect("relay lock").impairment = impairment;
    }

    /// Counts so far.
    pub fn stats(&self) -> RelayStats {
        self.shared.lock().expect("relay lock").stats
    }
}

/// What to do with one datagram: `None` to drop it, else the delays of each copy.
fn decide(shared: &Mutex<Shared>) -> Option<Vec<Duration>> {
    let mut s = shared.lock().expect("relay lock");
    s.stats.datagrams += 1;
    let imp = s.impairment;
    if imp == Impairment::default() {
        return Some(vec![Duration::ZERO]);
    }
    if imp.drop_pct > 0 && s.rng.gen_range(0..100) < imp.drop_pct {
        s.stats.dropped += 1;
        return None;
    }
    let copies = if imp.duplicate_pct > 0 && s.rng.gen_range(0..100) < imp.duplicate_pct {
        s.stats.duplicated += 1;
        2
    } else {
        1
    };
    let mut delays = Vec::with_capacity(copies);
    for _ in 0..copies {
        let jitter = if imp.jitter_ms > 0 {
            s.rng.gen_range(0..=imp.jitter_ms)
        } else {
            0
        };
        delays.push(Duration::from_millis(imp.delay_ms + jitter));
    }
    if delays.iter().any(|d| !d.is_zero()) {
        s.stats.delayed += 1;
    }
    Some(delays)
}

fn forward(socket: Arc<UdpSocket>, to: SocketAddr, data: Vec<u8>, shared: &Mutex<Shared>) {
    let Some(delays) = decide(shared) else { return };
    for d in delays {
        if d.is_zero() {
            let _ = socket.try_send_to(&data, to);
        } else {
            let socket = socket.clone();
            let data = data.clone();
            tokio::spawn(async move {
                tokio::time::sleep(d).await;
                let _ = socket.send_to(&data, to).await;
            });
        }
    }
}

struct Flow {
    upstream: Arc<UdpSocket>,
    last: Instant,
    task: tokio::task::JoinHandle<()>,
}

async fn serve(socket: Arc<UdpSocket>, broker: SocketAddr, shared: Arc<Mutex<Shared>>) {
    let mut flows: HashMap<SocketAddr, Flow> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    let mut last_sweep = Instant::now();
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        if last_sweep.elapsed() > Duration::from_secs(10) {
            last_sweep = Instant::now();
            flows.retain(|_, f| {
                let keep = f.last.elapsed() < Duration::from_secs(120);
                if !keep {
                    f.task.abort();
                }
                keep
            });
        }
        let flow = match flows.entry(from) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let bind = SocketAddr::new(socket.local_addr().expect("bound").ip(), from.port());
                let upstream = match UdpSocket::bind(bind).await {
                    Ok(s) => s,
                    Err(_) => match UdpSocket::bind(SocketAddr::new(bind.ip(), 0)).await {
                        Ok(s) => s,
                        Err(_) => continue,
                    },
                };
                let upstream = Arc::new(upstream);
                let task =
                    tokio::spawn(back(upstream.clone(), socket.clone(), from, shared.clone()));
                v.insert(Flow {
                    upstream,
                    last: Instant::now(),
                    task,
                })
            }
        };
        flow.last = Instant::now();
        forward(flow.upstream.clone(), broker, buf[..n].to_vec(), &shared);
    }
}

/// Broker to client for one flow.
async fn back(
    upstream: Arc<UdpSocket>,
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    shared: Arc<Mutex<Shared>>,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, _)) = upstream.recv_from(&mut buf).await else {
            continue;
        };
        forward(socket.clone(), client, buf[..n].to_vec(), &shared);
    }
}
