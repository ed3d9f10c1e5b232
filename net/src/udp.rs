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
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd},
};

use bytes::BytesMut;
use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};

/// A GRO receive buffer holds at most 64 KiB of coalesced segments.
const RECV_BUFFER_BYTES: usize = 64 * 1024;

pub(crate) struct UdpIo {
    socket: glommio::net::UdpSocket,
    state: UdpSocketState,
    local_addr: SocketAddr,
}

pub(crate) use quiver_sockbuf::size_buffers;

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
        let share = match (reuse_port, addr.port()) {
            (false, _) => Share::No,
            (true, 0) => Share::Found,
            (true, _) => Share::Join,
        };
        UdpIo::from_socket(bind_socket(addr, share)?, buffer_bytes)
    }

    /// Takes over a socket bound elsewhere (one of [`bind_steered_group`]'s).
    pub fn from_socket(socket: Socket, buffer_bytes: usize) -> io::Result<UdpIo> {
        socket.set_nonblocking(true)?;
        size_buffers(&socket, buffer_bytes);
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

/// Where one recvmmsg writes: a buffer per batch slot. A slot's datagrams go to the driver (and
/// quinn-proto) without a copy: they are split off the slot's buffer, quinn-proto decrypts them
/// in place and hands stream data out as slices of them. Once every slice is dropped (stream
/// data is copied into request frames as it is read, in the same pass), the next receive takes
/// the same buffer back; a slot whose buffer is still held (data out of order, or not read yet)
/// gets a new one.
pub(crate) struct RecvSlots {
    slots: Vec<RecvSlot>,
}

struct RecvSlot {
    buf: BytesMut,
    /// Where the buffer's allocation starts, to know it is the one zeroed at creation.
    base: usize,
}

impl RecvSlot {
    fn new() -> RecvSlot {
        let buf = BytesMut::zeroed(RECV_BUFFER_BYTES);
        let base = buf.as_ptr() as usize;
        RecvSlot { buf, base }
    }

    /// The whole buffer, writable: the same allocation when nothing split off it is still held
    /// (no copy, no allocation), otherwise a new one.
    fn whole(&mut self) -> &mut [u8] {
        if self.buf.len() != RECV_BUFFER_BYTES {
            self.buf.clear();
            if self.buf.try_reclaim(RECV_BUFFER_BYTES) && self.buf.as_ptr() as usize == self.base {
                // SAFETY: the buffer is back at the start of the allocation `new` made with
                // `RECV_BUFFER_BYTES` zeroed bytes (its base), and try_reclaim made room for
                // that many: every one of those bytes was initialised then and has only been
                // overwritten (by the kernel, by quinn-proto's in-place decryption) since.
                unsafe { self.buf.set_len(RECV_BUFFER_BYTES) }
            } else {
                *self = RecvSlot::new();
            }
        }
        &mut self.buf[..]
    }
}

impl RecvSlots {
    pub(crate) fn new() -> RecvSlots {
        RecvSlots {
            slots: (0..quinn_udp::BATCH_SIZE)
                .map(|_| RecvSlot::new())
                .collect(),
        }
    }

    /// One recvmmsg batch from `udp`: each datagram (a GRO buffer split into its segments, off
    /// the slot's buffer, without copying) goes to `each(remote, local_ip, ecn, bytes)`.
    /// Returns whether the socket may still hold datagrams.
    pub(crate) fn recv(
        &mut self,
        udp: &UdpIo,
        mut each: impl FnMut(SocketAddr, Option<IpAddr>, Option<quinn_proto::EcnCodepoint>, BytesMut),
    ) -> bool {
        let mut metas = [RecvMeta::default(); quinn_udp::BATCH_SIZE];
        let n = {
            let mut iovs: Vec<IoSliceMut<'_>> = self
                .slots
                .iter_mut()
                .map(|s| IoSliceMut::new(s.whole()))
                .collect();
            match udp.recv(&mut iovs, &mut metas) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => {
                    // ICMP errors and the like: UDP is lossy anyway; carry on.
                    tracing::debug!(error = %e, "recv error");
                    return false;
                }
            }
        };
        for (slot, meta) in self.slots.iter_mut().zip(&metas).take(n) {
            let ecn = meta.ecn.map(from_udp_ecn);
            for seg in split_segments(slot.buf.split_to(meta.len), meta.stride) {
                each(meta.addr, meta.dst_ip, ecn, seg);
            }
        }
        true
    }
}

/// The datagrams of a GRO buffer (segments of `stride` bytes, the last one possibly shorter),
/// split off it without copying.
pub(crate) fn split_segments(mut data: BytesMut, stride: usize) -> impl Iterator<Item = BytesMut> {
    let stride = stride.max(1);
    std::iter::from_fn(move || (!data.is_empty()).then(|| data.split_to(stride.min(data.len()))))
}

pub(crate) fn to_udp_ecn(e: quinn_proto::EcnCodepoint) -> quinn_udp::EcnCodepoint {
    match e {
        quinn_proto::EcnCodepoint::Ect0 => quinn_udp::EcnCodepoint::Ect0,
        quinn_proto::EcnCodepoint::Ect1 => quinn_udp::EcnCodepoint::Ect1,
        quinn_proto::EcnCodepoint::Ce => quinn_udp::EcnCodepoint::Ce,
    }
}

fn from_udp_ecn(e: quinn_udp::EcnCodepoint) -> quinn_proto::EcnCodepoint {
    match e {
        quinn_udp::EcnCodepoint::Ect0 => quinn_proto::EcnCodepoint::Ect0,
        quinn_udp::EcnCodepoint::Ect1 => quinn_proto::EcnCodepoint::Ect1,
        quinn_udp::EcnCodepoint::Ce => quinn_proto::EcnCodepoint::Ce,
    }
}

/// Binds `count` sockets to `addr` as one SO_REUSEPORT group, in order, and makes the group
/// steer each datagram by its UDP source port: a datagram from port p goes to socket
/// `p % count` (the shards' endpoints; a client that wants shard k sends from such a port,
/// and every datagram of its connection lands there, as the 4-tuple hash did before). The
/// kernel indexes a group's sockets in the order they joined, so they are bound here, one
/// after another, before any shard runs. The first founds the group (bound alone, so a port
/// another socket holds is refused and port 0 gets a free one; see [`UdpIo::bind`]); the others
/// join the port it got. Returns the sockets, in shard order, and the address they share.
pub fn bind_steered_group(addr: SocketAddr, count: usize) -> io::Result<(Vec<Socket>, SocketAddr)> {
    let first = bind_socket(addr, Share::Found)?;
    let at = first
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("UDP socket without an IP address"))?;
    let mut sockets = vec![first];
    for _ in 1..count {
        sockets.push(bind_socket(at, Share::Join)?);
    }
    if sockets.len() > 1 {
        steer_by_source_port(&sockets[0], sockets.len() as u32)?;
    }
    Ok((sockets, at))
}

/// How a socket shares its address with others of the same user (SO_REUSEPORT).
enum Share {
    No,
    /// Bound alone, then open to others: fails on a port someone holds ([`UdpIo::bind`]).
    Found,
    /// Joins the group on the port.
    Join,
}

fn bind_socket(addr: SocketAddr, share: Share) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if matches!(share, Share::Join) {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        // Dual stack when bound to [::], as users of a broker expect.
        let _ = socket.set_only_v6(false);
    }
    socket.bind(&addr.into())?;
    if matches!(share, Share::Found) {
        socket.set_reuse_port(true)?;
    }
    Ok(socket)
}

/// Offset of the network header in classic BPF loads (`SKF_NET_OFF`).
const SKF_NET_OFF: u32 = (-0x100000i32) as u32;

/// Attaches a classic BPF program to a SO_REUSEPORT group that returns the index of the socket
/// to deliver to: the UDP source port modulo `count`. The program reads the port from the IP
/// header on (it runs with the packet's data at the UDP payload): at 40 bytes for IPv6, at the
/// IPv4 header's own length for IPv4 (dual-stack sockets see both). An index the group does
/// not have makes the kernel fall back to its hash.
fn steer_by_source_port(socket: &Socket, count: u32) -> io::Result<()> {
    const LD: u16 = 0x00;
    const LDX: u16 = 0x01;
    const ALU: u16 = 0x04;
    const JMP: u16 = 0x05;
    const RET: u16 = 0x06;
    const H: u16 = 0x08;
    const B: u16 = 0x10;
    const ABS: u16 = 0x20;
    const IND: u16 = 0x40;
    const MSH: u16 = 0xa0;
    const RSH: u16 = 0x70;
    const MOD: u16 = 0x90;
    const JEQ: u16 = 0x10;
    const K: u16 = 0x00;
    const A: u16 = 0x10;
    let op = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    let program = [
        op(LD | B | ABS, 0, 0, SKF_NET_OFF), // A = first byte of the IP header
        op(ALU | RSH | K, 0, 0, 4),          // A = IP version
        op(JMP | JEQ | K, 0, 3, 6),          // IPv6? else skip to the IPv4 branch
        op(LD | H | ABS, 0, 0, SKF_NET_OFF + 40), // A = source port after the IPv6 header
        op(ALU | MOD | K, 0, 0, count),
        op(RET | A, 0, 0, 0),
        op(LDX | B | MSH, 0, 0, SKF_NET_OFF), // X = IPv4 header length
        op(LD | H | IND, 0, 0, SKF_NET_OFF),  // A = source port after it
        op(ALU | MOD | K, 0, 0, count),
        op(RET | A, 0, 0, 0),
    ];
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at `program`, which lives until the call returns; the kernel copies it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            &prog as *const libc::sock_fprog as *const libc::c_void,
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A slot whose datagrams were all dropped gives back the same allocation without copying;
    /// one whose datagram is still held gets a new buffer, and the held datagram keeps its bytes.
    #[test]
    fn a_receive_slot_is_reused_once_free_and_replaced_while_held() {
        let mut slot = RecvSlot::new();
        let base = slot.base;
        slot.whole()[..5].copy_from_slice(b"hello");
        let first = slot.buf.split_to(5).freeze();
        assert_eq!(&first[..], b"hello");
        drop(first);
        let again = slot.whole();
        assert_eq!(again.len(), RECV_BUFFER_BYTES);
        assert_eq!(
            again.as_ptr() as usize,
            base,
            "a free slot keeps its allocation"
        );

        slot.whole()[..5].copy_from_slice(b"world");
        let held = slot.buf.split_to(5).freeze();
        let fresh = slot.whole();
        assert_eq!(fresh.len(), RECV_BUFFER_BYTES);
        assert_ne!(
            fresh.as_ptr() as usize,
            base,
            "a held slot is not written over"
        );
        fresh[..5].copy_from_slice(b"xxxxx");
        assert_eq!(&held[..], b"world");
    }

    /// GRO segments come off one buffer in order, the last one shorter, without copying.
    #[test]
    fn gro_segments_split_without_copying() {
        let data = BytesMut::from(&b"aaabbbcc"[..]);
        let base = data.as_ptr() as usize;
        let segs: Vec<BytesMut> = split_segments(data, 3).collect();
        assert_eq!(segs.len(), 3);
        assert_eq!(&segs[2][..], b"cc");
        assert_eq!(segs[1].as_ptr() as usize, base + 3);
        assert_eq!(split_segments(BytesMut::from(&b"x"[..]), 0).count(), 1);
    }

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

    /// The buffers asked for are granted past `net.core.rmem_max` when the process may force
    /// them (CAP_NET_ADMIN: root in CI), and up to that cap otherwise.
    #[test]
    fn socket_buffers_go_past_the_kernels_cap_when_allowed() {
        let want = 8 << 20;
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        size_buffers(&socket, want);
        let cap = |name: &str| -> usize {
            std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        // CAP_NET_ADMIN (bit 12 of the effective set) is what SO_RCVBUFFORCE needs.
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let caps = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
            .unwrap();
        let may_force = caps & (1 << 12) != 0;
        for (got, cap) in [
            (socket.recv_buffer_size().unwrap(), cap("rmem_max")),
            (socket.send_buffer_size().unwrap(), cap("wmem_max")),
        ] {
            let expect = if may_force { want } else { want.min(cap) };
            assert!(
                got / 2 >= expect,
                "granted {} of {want} (cap {cap})",
                got / 2
            );
        }
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

    /// Datagrams reach the socket of the group chosen by their source port, over IPv4, IPv6,
    /// and IPv4 to a dual-stack group on [::], from any port.
    #[test]
    fn a_steered_group_delivers_by_source_port() {
        let cases = [
            ("127.0.0.1:0", "127.0.0.1"),
            ("[::1]:0", "::1"),
            ("[::]:0", "127.0.0.1"),
        ];
        for (bind, from) in cases {
            let Ok((group, shared)) = bind_steered_group(bind.parse().unwrap(), 3) else {
                continue; // no IPv6 on this host
            };
            let port = shared.port();
            for s in &group {
                let at = s.local_addr().unwrap().as_socket().unwrap();
                assert_eq!(at.port(), port);
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            }
            let from: std::net::IpAddr = from.parse().unwrap();
            let to = SocketAddr::new(from, port);
            for _ in 0..12 {
                let sender = std::net::UdpSocket::bind(SocketAddr::new(from, 0)).unwrap();
                let sent_from = sender.local_addr().unwrap().port();
                sender.send_to(&sent_from.to_be_bytes(), to).unwrap();
                let want = &group[sent_from as usize % 3];
                let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 16];
                let (n, _) = want.recv_from(&mut buf).unwrap();
                assert_eq!(n, 2);
                // SAFETY: recv_from initialised the first n bytes.
                let got = unsafe { [buf[0].assume_init(), buf[1].assume_init()] };
                assert_eq!(
                    u16::from_be_bytes(got),
                    sent_from,
                    "{bind}: port {sent_from}"
                );
            }
        }
    }
}
