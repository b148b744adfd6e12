//! When a source that connects (or runs a process) tries again: sans-IO, the time passed in.
//!
//! A failed attempt doubles the wait, from [`Retry::FIRST`] up to [`Retry::LONGEST`]. A
//! connection that stayed up for [`Retry::STABLE`] counts as healthy: the next failure starts
//! again from the first wait. A source never gives up on its own: the stream's configuration
//! says it should exist, so it keeps trying, slowly.

use std::time::{Duration, Instant};

/// The retry state of one source.
#[derive(Clone, Debug)]
pub struct Retry {
    wait: Duration,
    up_since: Option<Instant>,
}

impl Default for Retry {
    fn default() -> Self {
        Self::new()
    }
}

impl Retry {
    /// The first wait after a failure.
    pub const FIRST: Duration = Duration::from_millis(250);
    /// The longest wait.
    pub const LONGEST: Duration = Duration::from_secs(10);
    /// Up this long, a connection is healthy.
    pub const STABLE: Duration = Duration::from_secs(10);

    /// A source that has not tried yet.
    pub fn new() -> Self {
        Self {
            wait: Self::FIRST,
            up_since: None,
        }
    }

    /// It connected (or started) at `now`.
    pub fn up(&mut self, now: Instant) {
        self.up_since = Some(now);
    }

    /// It failed, or what was up went down, at `now`: how long to wait before trying again.
    pub fn down(&mut self, now: Instant) -> Duration {
        if let Some(since) = self.up_since.take() {
            if now.saturating_duration_since(since) >= Self::STABLE {
                self.wait = Self::FIRST;
            }
        }
        let wait = self.wait;
        self.wait = (self.wait * 2).min(Self::LONGEST);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_double_the_wait_up_to_the_longest() {
        let t = Instant::now();
        let mut r = Retry::new();
        let waits: Vec<u64> = (0..8).map(|_| r.down(t).as_millis() as u64).collect();
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 8000, 10000, 10000]);
    }

    #[test]
    fn a_stable_connection_starts_the_waits_again() {
        let t = Instant::now();
        let mut r = Retry::new();
        for _ in 0..5 {
            r.down(t);
        }
        // Up briefly: still backing off.
        r.up(t);
        assert_eq!(r.down(t + Duration::from_secs(1)), Duration::from_secs(8));
        // Up long enough: healthy again.
        r.up(t);
        assert_eq!(r.down(t + Retry::STABLE), Retry::FIRST);
        assert_eq!(r.down(t + Retry::STABLE), Retry::FIRST * 2);
    }
}
