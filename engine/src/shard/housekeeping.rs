//! The end of every backend's loop turn, one function for both backends: the stream table
//! followed, the demo and other shards' chunks taken, due viewers written, timeouts swept now
//! and then, the control plane's commands and session reports, the watchdog's heartbeat, and
//! the stop sequence. A backend does its own I/O wait and completions, then calls
//! [`Housekeeping::finish_turn`] with the turn's time.

use super::core::{ControlWork, ShardCore};
use super::RunState;
use std::io;
use std::time::{Duration, Instant};

/// What the shared part of a loop turn asks of a backend's sockets.
pub trait Backend {
    /// The shard's core.
    fn core(&mut self) -> &mut ShardCore;
    /// Follow a change of the stream table (open and close ingest sockets).
    fn follow_catalog(&mut self) -> io::Result<()>;
    /// Write what connection `key` has queued (closing it once its last response is out).
    fn write(&mut self, key: usize) -> io::Result<()>;
    /// Close connection `key` now.
    fn close(&mut self, key: usize);
    /// A request of `key` that waited was answered: read its next ones.
    fn resume_reading(&mut self, key: usize) -> io::Result<()>;
    /// A stop began: take no new connections.
    fn stop_accepting(&mut self);
    /// The stop's last step: end every connection (a FIN, or TLS's close_notify) and keep
    /// reading, so that a request crossing the close is read and dropped, not answered with
    /// a reset; a connection whose peer closes is closed.
    fn linger(&mut self);
}

/// What a sweep found.
#[derive(Debug, Default)]
pub struct Swept {
    /// Connections to close now.
    pub close: Vec<usize>,
    /// Viewers whose stream went silent: send what is queued, then close.
    pub ended: Vec<usize>,
}

/// The end of every backend's loop turn: sweeping timeouts now and then, and the stop
/// sequence (no new connections, viewers get up to two seconds to take what is queued, then
/// every connection is closed lingering for up to a second).
#[derive(Debug)]
pub struct Housekeeping {
    next_sweep: Instant,
    next_report: Instant,
    stopping_since: Option<Instant>,
    /// When the stop's lingering close began.
    lingering_since: Option<Instant>,
    /// When the loop's wait last returned.
    woke: Option<Instant>,
}

/// How often connections' timeouts and silent streams are looked at.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// How often the shard reports its sessions to the control plane.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// How long a graceful stop waits for viewers to take what is queued.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// How long a stop's lingering close waits for peers to close their side.
const LINGER: Duration = Duration::from_secs(1);

impl Housekeeping {
    /// A shard's housekeeping, starting at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            next_sweep: now,
            next_report: now + REPORT_EVERY,
            stopping_since: None,
            lingering_since: None,
            woke: None,
        }
    }

    /// The loop's wait returned at `now`: a turn's work starts (its length is accounted at
    /// [`Housekeeping::should_exit`]).
    pub fn woke(&mut self, now: Instant) {
        self.woke = Some(now);
    }

    /// The control plane's side of the loop: its commands now (what they leave for the
    /// backend), and a session report every second.
    pub fn control(&mut self, core: &mut ShardCore, now: Instant) -> ControlWork {
        if now >= self.next_report {
            self.next_report = now + REPORT_EVERY;
            core.report_sessions();
        }
        core.take_commands()
    }

    /// Every 250 ms: the connections whose timeouts expired (close them), and the progressive
    /// viewers of streams gone silent (send what they have queued, then close them).
    pub fn sweep(&mut self, core: &mut ShardCore, now: Instant) -> Swept {
        if now < self.next_sweep {
            return Swept::default();
        }
        self.next_sweep = now + SWEEP_EVERY;
        Swept {
            close: core.expired(),
            ended: core.end_silent_streams(),
        }
    }

    /// The rest of a loop turn after the backend's I/O (whose wait returned at `now`); whether
    /// the loop should end. `written` is scratch space kept between turns.
    pub fn finish_turn(
        &mut self,
        backend: &mut impl Backend,
        run: &RunState,
        now: Instant,
        written: &mut Vec<usize>,
    ) -> io::Result<bool> {
        backend.follow_catalog()?;
        let core = backend.core();
        core.poll_sources();
        core.take_inbox();
        core.feed_due(|key| written.push(key));
        let released = core.release_held(now >= self.next_sweep);
        written.extend_from_slice(&released);
        for key in written.drain(..) {
            backend.write(key)?;
        }
        for key in released {
            backend.resume_reading(key)?;
        }
        let swept = self.sweep(backend.core(), now);
        for key in swept.close {
            backend.close(key);
        }
        for key in swept.ended {
            backend.write(key)?;
        }
        let work = self.control(backend.core(), now);
        for key in work.close {
            backend.close(key);
        }
        for key in work.write {
            backend.write(key)?;
            backend.resume_reading(key)?;
        }
        let mut stop_accepting = false;
        // The turn's end is read only for the busy-time metric and the heartbeat.
        let exit = self.should_exit(backend.core(), run, Instant::now(), || {
            stop_accepting = true
        });
        if stop_accepting {
            backend.stop_accepting();
        }
        if !exit || run.fast() {
            return Ok(exit);
        }
        // Everything is sent (or the grace is over): close every connection lingering, and
        // end once their peers have closed, or after LINGER.
        let since = match self.lingering_since {
            Some(since) => since,
            None => {
                self.lingering_since = Some(now);
                backend.linger();
                now
            }
        };
        Ok(backend.core().connections() == 0 || now.saturating_duration_since(since) > LINGER)
    }

    /// Called once per loop turn, at its end (`now`): records the shard's heartbeat (for the
    /// watchdog) and says whether the loop should end. `stop_accepting` runs once, when a stop
    /// is first seen.
    pub fn should_exit(
        &mut self,
        core: &ShardCore,
        run: &RunState,
        now: Instant,
        stop_accepting: impl FnOnce(),
    ) -> bool {
        run.beat(core.index(), now);
        if let Some(woke) = self.woke.take() {
            run.account(
                core.index(),
                core.connections(),
                now.saturating_duration_since(woke),
            );
            let (held, evicted) = core.session_counts();
            run.sessions(core.index(), held, evicted);
        }
        if !run.stopping() {
            return false;
        }
        let since = *self.stopping_since.get_or_insert_with(|| {
            stop_accepting();
            tracing::info!(
                shard = core.index(),
                clients = core.connections(),
                "stopping: no new connections, flushing viewers"
            );
            now
        });
        run.fast() || core.flushed() || now.saturating_duration_since(since) > STOP_GRACE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core() -> ShardCore {
        let config = crate::config::Config::embedded().streams;
        let table = super::super::catalog::Streams::new(&config, Vec::new());
        let mut core = ShardCore::new(
            0,
            table.shared(),
            Vec::new(),
            crate::http::ConnLimits::default(),
            Duration::from_millis(20),
            crate::hls::SegmentSend::Copy,
            crate::shard::Clock::now(),
        );
        core.follow_catalog();
        core
    }

    #[test]
    fn sweeps_come_every_quarter_second_and_turns_are_accounted() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut core = core();
        let run = RunState::new(1);
        let mut h = Housekeeping::new(at(0));
        let swept: Vec<u64> = (0..=1000)
            .step_by(50)
            .filter(|&ms| {
                // A sweep that found nothing still counts: it is the cadence that is tested.
                let before = h.next_sweep;
                h.sweep(&mut core, at(ms));
                h.next_sweep != before
            })
            .collect();
        assert_eq!(swept, [0, 250, 500, 750, 1000]);
        h.woke(at(1000));
        assert!(!h.should_exit(&core, &run, at(1003), || {}));
        let stats = &run.shard_stats()[0];
        assert_eq!(stats.turns.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(
            stats.busy_ns.load(std::sync::atomic::Ordering::Relaxed),
            3_000_000
        );
        assert_eq!(run.stalest(at(1403)), Some((0, Duration::from_millis(400))));
    }

    #[test]
    fn a_graceful_stop_stops_accepting_once_and_ends_when_flushed() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let core = core();
        let run = RunState::new(1);
        let mut h = Housekeeping::new(at(0));
        let mut stopped_accepting = 0;
        assert!(!h.should_exit(&core, &run, at(10), || stopped_accepting += 1));
        run.stop_gracefully();
        // No connection holds anything: flushed at once.
        assert!(h.should_exit(&core, &run, at(20), || stopped_accepting += 1));
        assert!(h.should_exit(&core, &run, at(30), || stopped_accepting += 1));
        assert_eq!(stopped_accepting, 1);
    }

    #[test]
    fn a_graceful_stop_waits_two_seconds_for_a_viewer_with_something_queued() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut core = core();
        let key = core.open(usize::MAX, None).expect("room for one");
        core.on_read(key, b"GET /nowhere.ts HTTP/1.1\r\n\r\n");
        assert!(!core.flushed(), "the 404 is queued, never written");
        let run = RunState::new(1);
        let mut h = Housekeeping::new(at(0));
        run.stop_gracefully();
        assert!(!h.should_exit(&core, &run, at(100), || {}));
        assert!(!h.should_exit(&core, &run, at(2100), || {}));
        assert!(h.should_exit(&core, &run, at(2101), || {}));
        run.stop_now();
        let mut fresh = Housekeeping::new(at(0));
        assert!(
            fresh.should_exit(&core, &run, at(1), || {}),
            "SIGINT: at once"
        );
    }
}
