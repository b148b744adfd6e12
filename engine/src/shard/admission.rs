//! Who gets a connection: the per-address cap, shared by every shard without a lock, and the
//! counts of connections refused and accepts that failed.
//!
//! Connections from one address are counted in a fixed table of atomic counters indexed by a
//! keyed hash of the address (the key is random per process, so nobody can aim at another's
//! bucket). Two addresses that share a bucket share its cap: the table can only be stricter
//! than the setting, never looser, and its memory is fixed whatever the number of addresses.
//! SO_REUSEPORT spreads one address's connections over the shards; the count is global.
//!
//! What it does not do: the per-shard connection cap (the core's), or rate limits of requests.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Buckets of the per-address table (4 bytes each).
const BUCKETS: usize = 1 << 16;

/// The per-address counts and the refusal counters of the whole server.
#[derive(Debug)]
pub struct Admission {
    buckets: Box<[AtomicU32]>,
    hasher: std::collections::hash_map::RandomState,
    /// Connections one address may have open at once (0: no cap).
    pub max_per_address: u32,
    /// Connections refused because the shard was full.
    pub refused_full: AtomicU64,
    /// Connections refused because their address had `max_per_address` open.
    pub refused_address: AtomicU64,
    /// Accepts that failed (out of descriptors, memory): the shard backed off.
    pub accept_errors: AtomicU64,
}

impl Admission {
    /// A table allowing `max_per_address` connections per address (0: no cap).
    pub fn new(max_per_address: u32) -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU32::new(0)).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            max_per_address,
            refused_full: AtomicU64::new(0),
            refused_address: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
        }
    }

    fn bucket(&self, ip: IpAddr) -> &AtomicU32 {
        // IPv4-mapped IPv6 addresses count as the IPv4 address they are.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        &self.buckets[(self.hasher.hash_one(ip) as usize) % BUCKETS]
    }

    /// Count one more connection from `ip`; false (and nothing counted) when it has as many
    /// as it may.
    pub fn admit(&self, ip: IpAddr) -> bool {
        if self.max_per_address == 0 {
            return true;
        }
        let cap = self.max_per_address;
        self.bucket(ip)
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .is_ok()
    }

    /// A connection counted by [`Admission::admit`] has closed.
    pub fn release(&self, ip: IpAddr) {
        if self.max_per_address == 0 {
            return;
        }
        let _ = self
            .bucket(ip)
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Connections counted for `ip` now (and any address sharing its bucket).
    pub fn count(&self, ip: IpAddr) -> u32 {
        self.bucket(ip).load(Ordering::Relaxed)
    }
}

impl Default for Admission {
    fn default() -> Self {
        Self::new(0)
    }
}

/// How long a shard waits before accepting again after an accept failed for want of
/// descriptors or memory: it doubles from [`Backoff::FIRST`] up to [`Backoff::LONGEST`] while
/// accepts keep failing, and one line is logged per wait, not per failure.
#[derive(Debug, Default)]
pub struct Backoff {
    current_ms: u64,
    /// Failures since the last line logged.
    pub failures: u64,
}

impl Backoff {
    /// The first wait.
    pub const FIRST: std::time::Duration = std::time::Duration::from_millis(50);
    /// The longest wait.
    pub const LONGEST: std::time::Duration = std::time::Duration::from_secs(1);

    /// An accept failed: how long to wait before the next.
    pub fn failed(&mut self) -> std::time::Duration {
        self.failures += 1;
        self.current_ms = (self.current_ms * 2).clamp(
            Self::FIRST.as_millis() as u64,
            Self::LONGEST.as_millis() as u64,
        );
        std::time::Duration::from_millis(self.current_ms)
    }

    /// An accept succeeded: the next failure starts from the first wait again.
    pub fn succeeded(&mut self) {
        self.current_ms = 0;
    }
}

/// Whether an accept error means the process or system ran out of something (descriptors,
/// memory, buffers): wait before accepting again rather than retrying at once.
pub fn exhausted(errno: i32) -> bool {
    matches!(
        errno,
        libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_cap_and_no_more() {
        let a = Admission::new(3);
        let one: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert!(a.admit(one) && a.admit(one) && a.admit(mapped));
        assert!(!a.admit(one), "the fourth is refused");
        assert_eq!(a.count(one), 3);
        a.release(one);
        assert!(a.admit(mapped));
        for _ in 0..10 {
            a.release(one);
        }
        assert_eq!(a.count(one), 0, "never below zero");
        let open = Admission::new(0);
        assert!((0..10_000).all(|_| open.admit(one)));
    }

    #[test]
    fn backoff_doubles_up_to_its_longest() {
        let mut b = Backoff::default();
        assert_eq!(b.failed(), Backoff::FIRST);
        assert_eq!(b.failed(), Backoff::FIRST * 2);
        for _ in 0..10 {
            b.failed();
        }
        assert_eq!(b.failed(), Backoff::LONGEST);
        b.succeeded();
        assert_eq!(b.failed(), Backoff::FIRST);
        assert!(exhausted(libc::EMFILE) && !exhausted(libc::ECONNABORTED));
    }
}
