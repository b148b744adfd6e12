//! When a shard reads its UDP ingest sockets: as each datagram comes (*promptly*), or on the
//! shard's ingest tick, a whole tick's datagrams per read.
//!
//! A stream that only HLS players watch (or nobody) loses nothing by being read on the tick:
//! its segments are seconds long, and a read every 100 ms (`ingest_interval`) adds at most
//! that to a segment's cut. What it saves is the wake-ups: a lone 2 Mbit/s stream sends a
//! datagram every 4 ms, and a shard woken for each one spends most of that wake-up waking.
//! A stream is read promptly while something waits on it byte by byte (a progressive viewer
//! on any shard, a push or a recording taking its chunks, low-latency parts), and while its
//! rate is not yet known. The tick comes every `ingest_interval` unless a socket read on it
//! would fill more than a quarter of its receive buffer in that time (a datagram takes about
//! twice its size of that buffer): then it comes as often as that socket needs, and a socket
//! that would need it more often than every [`SHORTEST_TICK`] is read promptly instead.
//! The reviews of the sockets' pace ride on the ticks, so a shard whose streams are all read
//! on the tick wakes once per tick.
//!
//! Sans-IO: the backends own the sockets and pass the time in.

use std::time::{Duration, Instant};

/// How often a socket's rate is measured.
const RATE_WINDOW: Duration = Duration::from_secs(1);
/// How often every socket's pace is looked at again.
const REVIEW_EVERY: Duration = Duration::from_millis(100);
/// The shortest tick a socket's buffer may ask for: one that would need the tick more often
/// is read promptly (unless `ingest_interval` itself is shorter).
pub const SHORTEST_TICK: Duration = Duration::from_millis(20);

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

    /// How long the socket may go unread at its measured rate before its datagrams fill a
    /// quarter of its receive buffer (`None` until the rate is known; `Duration::MAX` for a
    /// socket that receives nothing).
    pub fn tolerance(&self) -> Option<Duration> {
        let rate = self.rate?;
        if rate == 0 {
            return Some(Duration::MAX);
        }
        let micros = (self.room / 4) as u128 * 1_000_000 / rate as u128;
        Some(Duration::from_micros(
            u64::try_from(micros).unwrap_or(u64::MAX),
        ))
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
            || self
                .tolerance()
                .is_none_or(|lasts| lasts < interval.min(SHORTEST_TICK));
        let changed = promptly != self.promptly;
        self.promptly = promptly;
        changed
    }
}

/// A shard's ingest tick and its reviews of the sockets' pace.
#[derive(Debug)]
pub struct IngestTicks {
    interval: Duration,
    /// The time between ticks now: `interval`, or less while a socket's buffer needs it.
    period: Duration,
    next_tick: Instant,
    next_review: Instant,
}

impl IngestTicks {
    /// Ticks every `interval` (zero: never; every socket is read promptly), from `now`.
    pub fn new(interval: Duration, now: Instant) -> Self {
        Self {
            interval,
            period: interval,
            next_tick: now + interval,
            next_review: now,
        }
    }

    /// The interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The time between ticks from `now` on: the interval, unless a socket read on the tick
    /// lasts only `shortest` before a quarter of its buffer fills (kept within
    /// [`SHORTEST_TICK`] and the interval).
    pub fn set_period(&mut self, now: Instant, shortest: Duration) {
        self.period = shortest.max(SHORTEST_TICK).min(self.interval);
        self.next_tick = self.next_tick.min(now + self.period);
    }

    /// Whether the sockets read on the tick are due a read at `now`. A shard awake anyway
    /// reads them once half a period has passed, so a busy shard seldom wakes for the tick
    /// alone.
    pub fn tick(&mut self, now: Instant) -> bool {
        if self.interval.is_zero() || now + self.period / 2 < self.next_tick {
            return false;
        }
        self.next_tick = now + self.period;
        true
    }

    /// Whether the sockets' pace is due a look at `now`: every [`REVIEW_EVERY`], or up to
    /// half a period early, so that the review rides on a tick rather than waking the shard
    /// between two.
    pub fn review(&mut self, now: Instant) -> bool {
        if self.interval.is_zero() || now + self.period.min(REVIEW_EVERY) / 2 < self.next_review {
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
        // A longer interval leaves the slow one on the tick (which comes as often as its
        // buffer needs: every 20.48 ms); a shorter one puts the fast one on it too.
        slow.received(2_600_000);
        slow.review(t0 + 2000 * MS, 100 * MS, false);
        assert!(!slow.promptly());
        assert_eq!(slow.tolerance(), Some(Duration::from_micros(20_480)));
        fast.received(2_700_000);
        fast.review(t0 + 2000 * MS, 10 * MS, false);
        assert!(!fast.promptly());
    }

    #[test]
    fn the_tick_comes_as_often_as_the_neediest_buffer_needs_within_the_interval() {
        let t0 = Instant::now();
        let mut ticks = IngestTicks::new(100 * MS, t0);
        assert!(ticks.review(t0));
        assert_eq!(ticks.wait(t0, true), 100 * MS);
        // A socket whose quarter buffer lasts 30 ms: the next tick is pulled in.
        ticks.set_period(t0 + 10 * MS, 30 * MS);
        assert_eq!(ticks.wait(t0 + 10 * MS, true), 30 * MS);
        assert!(ticks.tick(t0 + 40 * MS));
        assert_eq!(ticks.wait(t0 + 40 * MS, true), 30 * MS);
        // Never shorter than SHORTEST_TICK, never longer than the interval.
        ticks.set_period(t0 + 40 * MS, MS);
        assert!(ticks.tick(t0 + 60 * MS));
        assert_eq!(ticks.wait(t0 + 60 * MS, true), SHORTEST_TICK);
        ticks.set_period(t0 + 60 * MS, Duration::MAX);
        assert!(ticks.tick(t0 + 80 * MS));
        assert_eq!(ticks.wait(t0 + 80 * MS, true), 20 * MS); // the review, at 100 ms
    }

    #[test]
    fn reviews_ride_on_the_ticks_so_a_ticked_shard_wakes_once_a_tick() {
        // The first review 60 ms before the first tick: more than half a tick, so the tick is
        // not taken early then. Waking whenever either is due, the shard settles on one
        // wake-up per 100 ms for both.
        let t0 = Instant::now();
        let mut ticks = IngestTicks::new(100 * MS, t0);
        let mut now = t0 + 40 * MS;
        assert!(ticks.review(now));
        assert!(!ticks.tick(now));
        let mut wakes = Vec::new();
        while now < t0 + 2000 * MS {
            now += ticks.wait(now, true);
            let (ticked, reviewed) = (ticks.tick(now), ticks.review(now));
            assert!(ticked || reviewed, "woken for nothing at {:?}", now - t0);
            wakes.push((now - t0, ticked, reviewed));
        }
        let settled: Vec<_> = wakes
            .iter()
            .filter(|w| (1000 * MS..2000 * MS).contains(&w.0))
            .collect();
        assert_eq!(settled.len(), 10, "{wakes:?}");
        assert!(settled.iter().all(|w| w.1 && w.2), "{wakes:?}");
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
        // Reviews come every 100 ms, up to half a tick early.
        assert!(!ticks.review(t0 + 89 * MS));
        assert!(ticks.review(t0 + 90 * MS));
    }
}
