//! What a client costs before it has proved anything: the connection caps, shared by every
//! endpoint (core) of a process, and the rule for when a new connection must first prove its
//! address with a QUIC Retry.
//!
//! A connection attempt is a datagram; accepting it costs a TLS handshake's state and keeps a
//! `Conn` until the peer goes away or idles out. So: at most `total_max` connections in the
//! process and `per_ip_max` from one IP address; once the process holds `retry_above` or more,
//! a new connection whose address is not yet validated is answered with a Retry (RFC 9000,
//! section 8.1: a stateless token the client must echo, so a spoofed source address cannot open
//! connections); past a cap it is refused (CONNECTION_REFUSED). The counts change only when a
//! connection is accepted or drained, so the lock is taken rarely and never on the data path.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Default cap on connections in one process (all cores).
pub const CONNECTIONS_MAX_DEFAULT: usize = 10_000;
/// Default cap on connections from one IP address.
pub const CONNECTIONS_PER_IP_MAX_DEFAULT: usize = 1_000;

/// What to do with a new connection attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Accept it (it is counted from now on; call [`ConnectionLimiter::release`] when it ends).
    Accept,
    /// Ask the client to prove its address first (QUIC Retry); nothing is counted.
    Retry,
    /// Refuse it; nothing is counted.
    Refuse(Refusal),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The process holds `total_max` connections.
    Total,
    /// The address holds `per_ip_max` connections.
    PerIp,
}

#[derive(Default)]
struct Counts {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// Connection caps shared by the endpoints of one process.
pub struct ConnectionLimiter {
    total_max: usize,
    per_ip_max: usize,
    retry_above: usize,
    counts: Mutex<Counts>,
}

impl std::fmt::Debug for ConnectionLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionLimiter")
            .field("total_max", &self.total_max)
            .field("per_ip_max", &self.per_ip_max)
            .field("retry_above", &self.retry_above)
            .finish_non_exhaustive()
    }
}

impl ConnectionLimiter {
    /// Caps of `total_max` connections and `per_ip_max` per address; Retry from half of
    /// `total_max` on. Rationale for half: address validation costs a legitimate client one
    /// round trip, so it is asked for only when the broker is busy enough for a flood to matter,
    /// and early enough that a spoofed flood cannot reach the cap.
    pub fn new(total_max: usize, per_ip_max: usize) -> ConnectionLimiter {
        ConnectionLimiter::with_retry_above(total_max, per_ip_max, total_max / 2)
    }

    /// As [`new`](Self::new), with Retry asked from `retry_above` connections on (0: always).
    pub fn with_retry_above(
        total_max: usize,
        per_ip_max: usize,
        retry_above: usize,
    ) -> ConnectionLimiter {
        ConnectionLimiter {
            total_max,
            per_ip_max,
            retry_above,
            counts: Mutex::new(Counts::default()),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        // A poisoned lock only means another thread panicked while holding it, and the process
        // is going down (the broker's panic hook exits); the counts are still consistent.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides on a connection attempt from `ip`, whose address QUIC has (or has not yet)
    /// validated, and counts it if accepted.
    pub fn admit(&self, ip: IpAddr, validated: bool, may_retry: bool) -> Admission {
        let mut c = self.counts();
        if c.total >= self.total_max {
            return Admission::Refuse(Refusal::Total);
        }
        if !validated && may_retry && c.total >= self.retry_above {
            return Admission::Retry;
        }
        let n = c.by_ip.get(&ip).copied().unwrap_or(0);
        if n >= self.per_ip_max {
            return Admission::Refuse(Refusal::PerIp);
        }
        c.total += 1;
        c.by_ip.insert(ip, n + 1);
        Admission::Accept
    }

    /// A connection that [`admit`](Self::admit) accepted has ended.
    pub fn release(&self, ip: IpAddr) {
        let mut c = self.counts();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                c.by_ip.remove(&ip);
            }
        }
    }

    /// Connections counted now.
    pub fn connections(&self) -> usize {
        self.counts().total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_retry_and_release() {
        let a: IpAddr = "198.18.0.1".parse().unwrap();
        let b: IpAddr = "198.18.0.2".parse().unwrap();
        let l = ConnectionLimiter::with_retry_above(4, 2, 2);
        // (ip, validated, may_retry, expected)
        let steps = [
            (a, false, true, Admission::Accept),
            (a, false, true, Admission::Accept),
            // Two held: from here an unvalidated address is asked to retry...
            (b, false, true, Admission::Retry),
            // ...and one that has retried (validated) is let in.
            (b, true, false, Admission::Accept),
            // a holds its two.
            (a, true, false, Admission::Refuse(Refusal::PerIp)),
            (b, true, false, Admission::Accept),
            // Four held: the cap, whatever the address.
            (b, true, false, Admission::Refuse(Refusal::Total)),
            (
                "198.18.0.3".parse().unwrap(),
                true,
                false,
                Admission::Refuse(Refusal::Total),
            ),
        ];
        for (i, (ip, validated, may_retry, want)) in steps.into_iter().enumerate() {
            assert_eq!(l.admit(ip, validated, may_retry), want, "step {i}");
        }
        assert_eq!(l.connections(), 4);
        l.release(a);
        assert_eq!(l.admit(a, true, false), Admission::Accept);
        for ip in [a, a, b, b] {
            l.release(ip);
        }
        assert_eq!(l.connections(), 0);
        // A retry that cannot be sent again (a client that already retried) is not asked twice.
        let l = ConnectionLimiter::with_retry_above(4, 4, 0);
        assert_eq!(l.admit(a, false, false), Admission::Accept);
    }
}
