//! One UDP socket per core: quinn-udp for batched I/O (recvmmsg + GRO in, GSO out), glommio's
//! io_uring for waiting.
//!
//! How waiting works without busy polling: the socket is non-blocking (quinn-udp's syscalls must
//! return EAGAIN rather than block the core). To sleep until a datagram arrives the receive task
//! awaits glommio's `peek_from`, an io_uring `recvmsg(MSG_PEEK)` of one byte that completes when
//! the queue is non-empty and consumes nothing; one wakeup then drains the queue with recvmmsg.
//! When a send finds the socket buffer full, the blocked datagram is sent with glommio's
//! `send_to`, an io_uring `sendmsg` that completes once the kernel has room, after which batched
//! sends resume. (Kernel 6.x arms an internal poll for these operations even on non-blocking
//! sockets; `peek_wait_works_on_a_nonblocking_socket` below checks it.)

use std::{
    io::{self, IoSliceMut},
    net::SocketAddr,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd},
};

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};

pub(crate) struct UdpIo {
    socket: glommio::net::UdpSocket,
    state: UdpSocketState,
    local_addr: SocketAddr,
}

impl UdpIo {
    /// Binds on the current glommio executor.
    ///
    /// With `reuse_port`, a concrete port is joined: every socket of this user bound there with
    /// SO_REUSEPORT shares its datagrams (how the shards of one endpoint share an address). Port
    /// 0 instead founds a new group: the socket is bound without SO_REUSEPORT and the option is
    /// set afterwards. Set before the bind, the kernel's choice of a port skips only ports it could
    /// not share, so it hands out ports that other SO_REUSEPORT sockets of the same user already
    /// hold (146 of 3,000 such binds in a row on this machine), and two unrelated endpoints would
    /// split each other's traffic; a test saw a handshake answered by another test's server.
    pub fn bind(addr: SocketAddr, reuse_port: bool, buffer_bytes: usize) -> io::Result<UdpIo> {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        let found_group = reuse_port && addr.port() == 0;
        if reuse_port && !found_group {
            socket.set_reuse_port(true)?;
        }
        if addr.is_ipv6() {
            // Dual stack when bound to [::], as users of a broker expect.
            let _ = socket.set_only_v6(false);
        }
        socket.bind(&addr.into())?;
        if found_group {
            socket.set_reuse_port(true)?;
        }
        // Best effort: the kernel clamps to net.core.{r,w}mem_max.
        let _ = socket.set_recv_buffer_size(buffer_bytes);
        let _ = socket.set_send_buffer_size(buffer_bytes);
        let state = UdpSocketState::new((&socket).into())?;
        let local_addr = socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("UDP socket without an IP address"))?;
        // SAFETY: the fd comes from `into_raw_fd`, so glommio's socket is its only owner.
        let socket = unsafe { glommio::net::UdpSocket::from_raw_fd(socket.into_raw_fd()) };
        Ok(UdpIo {
            socket,
            state,
            local_addr,
        })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the fd is owned by `self.socket`, which outlives the borrow.
        unsafe { BorrowedFd::borrow_raw(self.socket.as_raw_fd()) }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    pub fn may_fragment(&self) -> bool {
        self.state.may_fragment()
    }

    pub fn gro_segments(&self) -> usize {
        self.state.gro_segments()
    }

    /// Sleeps until at least one datagram is queued (or the socket reports an error).
    pub async fn readable(&self) -> io::Result<()> {
        let mut one = [0u8; 1];
        self.socket
            .peek_from(&mut one)
            .await
            .map(|_| ())
            .map_err(io::Error::from)
    }

    /// One recvmmsg: fills up to `bufs.len()` buffers (each may hold several GRO segments).
    pub fn recv(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> io::Result<usize> {
        self.state.recv((&self.fd()).into(), bufs, meta)
    }

    /// One sendmsg of a transmit (several datagrams with GSO). `WouldBlock` means the socket
    /// buffer is full; other errors are logged by quinn-udp and dropped, as UDP loss is.
    pub fn send(&self, t: &Transmit<'_>) -> io::Result<()> {
        self.state.send((&self.fd()).into(), t)
    }

    /// Sends a transmit that hit `WouldBlock`, waiting in io_uring for buffer space.
    pub async fn send_waiting(
        &self,
        contents: &[u8],
        segment_size: Option<usize>,
        destination: SocketAddr,
    ) -> io::Result<()> {
        let seg = segment_size.unwrap_or(contents.len()).max(1);
        let (first, rest) = contents.split_at(seg.min(contents.len()));
        self.socket
            .send_to(first, destination)
            .await
            .map_err(io::Error::from)?;
        if rest.is_empty() {
            return Ok(());
        }
        let mut rest = rest;
        loop {
            let t = Transmit {
                destination,
                ecn: None,
                contents: rest,
                segment_size: (rest.len() > seg).then_some(seg),
                src_ip: None,
            };
            match self.send(&t) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let (first, tail) = rest.split_at(seg.min(rest.len()));
                    self.socket
                        .send_to(first, destination)
                        .await
                        .map_err(io::Error::from)?;
                    if tail.is_empty() {
                        return Ok(());
                    }
                    rest = tail;
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn peek_wait_works_on_a_nonblocking_socket() {
        let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
        ex.run(async {
            let io = UdpIo::bind("127.0.0.1:0".parse().unwrap(), false, 1 << 20).unwrap();
            let addr = io.local_addr();
            let sender = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                s.send_to(b"hello", addr).unwrap();
            });
            let t = Instant::now();
            io.readable().await.unwrap();
            assert!(
                t.elapsed() >= Duration::from_millis(90),
                "woke before the send"
            );
            let mut buf = vec![0u8; 65536];
            let mut iov = [IoSliceMut::new(&mut buf)];
            let mut meta = [RecvMeta::default()];
            let n = io.recv(&mut iov, &mut meta).unwrap();
            assert_eq!(n, 1);
            assert_eq!(&buf[..meta[0].len], b"hello");
            // Drained: a further recv would block, it does not return old data.
            let mut iov = [IoSliceMut::new(&mut buf)];
            let e = io.recv(&mut iov, &mut meta).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
            sender.join().unwrap();
        });
    }

    /// Port 0 with SO_REUSEPORT gets a port no other socket holds, and the next shard can still
    /// join it. Before, about 5% of such binds landed on a port held by an earlier one.
    #[test]
    fn port_zero_founds_a_group_of_its_own_that_shards_can_join() {
        let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
        ex.run(async {
            let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
            let mut ports = std::collections::HashSet::new();
            let mut held = Vec::new();
            for _ in 0..800 {
                let io = UdpIo::bind(any, true, 1 << 16).unwrap();
                assert!(
                    ports.insert(io.local_addr().port()),
                    "port {} handed out twice",
                    io.local_addr().port()
                );
                held.push(io);
            }
            let first = held[0].local_addr();
            let second = UdpIo::bind(first, true, 1 << 16).unwrap();
            assert_eq!(second.local_addr(), first);
            // Without SO_REUSEPORT the founded port is refused.
            let e = UdpIo::bind(first, false, 1 << 16)
                .err()
                .expect("address in use");
            assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        });
    }
}
