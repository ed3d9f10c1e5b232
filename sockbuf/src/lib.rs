//! One socket helper that both ends of a Quiver connection need and neither may take from the
//! other (the SDK may not depend on the broker's transport, ARCHITECTURE.md): asking the kernel
//! for large UDP socket buffers. Its own crate because `proto` does no I/O.

use std::os::fd::AsRawFd;

use socket2::Socket;

/// Asks for socket buffers of `bytes` each way, best effort. The kernel cuts SO_RCVBUF and
/// SO_SNDBUF to `net.core.{r,w}mem_max` (4 MiB on the machines measured); a process allowed to
/// (CAP_NET_ADMIN, as root) then goes past that cap with SO_{RCV,SND}BUFFORCE, as quic-go does.
/// Rationale: a shard busy for a few milliseconds with a large produce lets 64 KB datagrams
/// overflow a 4 MiB buffer; each one dropped is a QUIC loss (a retransmission, a congestion
/// event, and a stream stalled until the hole is filled): 350 to 400 per 3 GB produced with one
/// producer, none with 8 MiB (bench/RESULTS.md). `deploy/sysctl.d` raises the cap for everyone.
pub fn size_buffers(socket: &Socket, bytes: usize) {
    let _ = socket.set_recv_buffer_size(bytes);
    let _ = socket.set_send_buffer_size(bytes);
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let granted = [socket.recv_buffer_size(), socket.send_buffer_size()];
    for (got, option) in granted
        .into_iter()
        .zip([libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE])
    {
        // The kernel reports twice what it granted (its bookkeeping overhead included).
        if got.is_ok_and(|n| n / 2 < bytes) {
            // SAFETY: `socket` owns a valid descriptor for the whole call, and the option value
            // is a live c_int whose exact size is passed as the length.
            unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    option,
                    (&value as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
    }
}
