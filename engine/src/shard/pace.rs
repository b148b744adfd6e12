//! When a shard reads its UDP ingest sockets: as each datagram comes (*promptly*), or on the
//! shard's ingest tick, every `ingest_interval`, a whole interval's datagrams per read.
//!
//! A stream that only HLS players watch (or nobody) loses nothing by being read on the tick:
//! its segments are seconds long, and a read every 20 ms adds at most that to a segment's
//! cut. What it saves is the wake-ups: a lone 2 Mbit/s stream sends a datagram every 4 ms,
//! and a shard woken for each one spends most of that wake-up waking. A stream is read
//! promptly while something waits on it byte by byte (a progressive viewer on any shard, a
//! push or a recording taking its chunks), while its rate is not yet known, and while its
//! rate would fill more than a quarter of the socket's receive buffer in an interval (a
//! datagram takes about twice its size of that buffer).
//!
//! Sans-IO: the backends own the sockets and pass the time in.

use std::time::{Duration, Instant};

/// How often a socket's rate is measured.
const RATE_WINDOW: Duration = Duration::from_secs(1);
/// How often every socket's pace is looked at again.
const REVIEW_EVERY: Duration = Duration::from_millis(100);

/// One ingest socket's pace: its measured rate and how it is read now.
#[derive(Debug)]
pub struct IngestPace {
    /// Bytes the socket's receive buffer holds (as granted by the kernel).
    room: usize,
    window_start: Instant,
    window_bytes: u64,
    /// Bytes a second over the last whole window, once one has passed.
    rate: Option<u64>,
    promptly: bool,
}

impl IngestPace {
    /// A socket opened at `now` with a receive buffer of `room` bytes: read promptly until
    /// its rate is known.
    pub fn new(room: usize, now: Instant) -> Self {
        Self {
            room,
            window_start: now,
            window_bytes: 0,
            rate: None,
            promptly: true,
        }
    }

    /// `bytes` of datagrams were read.
    pub fn received(&mut self, bytes: usize) {
        self.window_bytes += bytes as u64;
    }

    /// Whether the socket is read as each datagram comes.
    pub fn promptly(&self) -> bool {
        self.promptly
    }

    /// Decide at `now` how the socket is read, given the ingest interval and whether something
    /// waits on the stream byte by byte; returns whether that changed.
    pub fn review(&mut self, now: Instant, interval: Duration, awaited: bool) -> bool {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= RATE_WINDOW {
            let per_second = self.window_bytes as u128 * 1_000_000 / elapsed.as_micros().max(1);
            self.rate = Some(u64::try_from(per_second).unwrap_or(u64::MAX));
            self.window_start = now;
            self.window_bytes = 0;
        }
        let promptly = interval.is_zero()
            || awaited
            || self.rate.is_none_or(|rate| {
                rate as u128 * interval.as_micros() / 1_000_000 > (self.room / 4) as u128
            });
        let changed = promptly != self.promptly;
        self.promptly = promptly;
        changed
    }
}

/// A shard's ingest tick and its reviews of the sockets' pace.
#[derive(Debug)]
pub struct IngestTicks {
    interval: Duration,
    next_tick: Instant,
    next_review: Instant,
}

impl IngestTicks {
    /// Ticks every `interval` (zero: never; every socket is read promptly), from `now`.
    pub fn new(interval: Duration, now: Instant) -> Self {
        Self {
            interval,
            next_tick: now + interval,
            next_review: now,
        }
    }

    /// The interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Whether the sockets read on the tick are due a read at `now`. A shard awake anyway
    /// reads them once half an interval has passed, so a busy shard seldom wakes for the
    /// tick alone.
    pub fn tick(&mut self, now: Instant) -> bool {
        if self.interval.is_zero() || now + self.interval / 2 < self.next_tick {
            return false;
        }
        self.next_tick = now + self.interval;
        true
    }

    /// Whether the sockets' pace is due a look at `now`.
    pub fn review(&mut self, now: Instant) -> bool {
        if self.interval.is_zero() || now < self.next_review {
            return false;
        }
        self.next_review = now + REVIEW_EVERY;
        true
    }

    /// How long the shard may wait at `now` before a tick, when `ticking` (some socket is
    /// read on the tick), or before a review.
    pub fn wait(&self, now: Instant, ticking: bool) -> Duration {
        if self.interval.is_zero() {
            return Duration::MAX;
        }
        let at = if ticking {
            self.next_tick.min(self.next_review)
        } else {
            self.next_review
        };
        at.saturating_duration_since(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_socket_is_read_promptly_until_its_rate_is_known() {
        let t0 = Instant::now();
        let mut pace = IngestPace::new(8 << 20, t0);
        assert!(pace.promptly());
        pace.received(250_000);
        assert!(!pace.review(t0 + 500 * MS, 20 * MS, false));
        assert!(pace.promptly());
        pace.received(250_000);
        assert!(pace.review(t0 + 1000 * MS, 20 * MS, false));
        assert!(!pace.promptly());
    }

    #[test]
    fn a_progressive_viewer_or_a_push_makes_it_prompt_and_their_leaving_makes_it_ticked() {
        let t0 = Instant::now();
        let mut pace = IngestPace::new(8 << 20, t0);
        pace.received(250_000);
        pace.review(t0 + 1000 * MS, 20 * MS, false);
        assert!(pace.review(t0 + 1100 * MS, 20 * MS, true));
        assert!(pace.promptly());
        assert!(!pace.review(t0 + 1200 * MS, 20 * MS, true));
        assert!(pace.review(t0 + 1300 * MS, 20 * MS, false));
        assert!(!pace.promptly());
    }

    #[test]
    fn a_stream_that_would_fill_a_quarter_of_its_buffer_in_an_interval_is_read_promptly() {
        let t0 = Instant::now();
        // 208 KiB of buffer (a stock rmem_max): a quarter is 53,248 bytes, 20 ms of a
        // stream of 2.66 MB/s (21 Mbit/s).
        let room = 212_992;
        let mut slow = IngestPace::new(room, t0);
        slow.received(2_600_000);
        slow.review(t0 + 1000 * MS, 20 * MS, false);
        assert!(!slow.promptly());
        let mut fast = IngestPace::new(room, t0);
        fast.received(2_700_000);
        fast.review(t0 + 1000 * MS, 20 * MS, false);
        assert!(fast.promptly());
        // The same stream with a longer interval, or a shorter one.
        slow.received(2_600_000);
        slow.review(t0 + 2000 * MS, 40 * MS, false);
        assert!(slow.promptly());
        fast.received(2_700_000);
        fast.review(t0 + 2000 * MS, 10 * MS, false);
        assert!(!fast.promptly());
    }

    #[test]
    fn an_interval_of_zero_reads_everything_promptly_and_never_ticks() {
        let t0 = Instant::now();
        let mut pace = IngestPace::new(8 << 20, t0);
        pace.received(1000);
        pace.review(t0 + 2000 * MS, Duration::ZERO, false);
        assert!(pace.promptly());
        let mut ticks = IngestTicks::new(Duration::ZERO, t0);
        assert!(!ticks.tick(t0 + 1000 * MS));
        assert!(!ticks.review(t0 + 1000 * MS));
        assert_eq!(ticks.wait(t0, true), Duration::MAX);
    }

    #[test]
    fn the_tick_comes_every_interval_or_at_half_of_one_for_a_shard_awake_anyway() {
        let t0 = Instant::now();
        let mut ticks = IngestTicks::new(20 * MS, t0);
        assert_eq!(ticks.wait(t0, true), Duration::ZERO); // the first review
        assert!(ticks.review(t0));
        assert_eq!(ticks.wait(t0, true), 20 * MS);
        assert_eq!(ticks.wait(t0, false), 100 * MS);
        assert!(!ticks.tick(t0 + 9 * MS));
        assert!(ticks.tick(t0 + 10 * MS));
        assert!(!ticks.tick(t0 + 19 * MS));
        assert_eq!(ticks.wait(t0 + 19 * MS, true), 11 * MS);
        assert!(ticks.tick(t0 + 31 * MS));
        assert!(!ticks.review(t0 + 99 * MS));
        assert!(ticks.review(t0 + 100 * MS));
    }
}
