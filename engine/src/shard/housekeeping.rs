//! The end of every backend's loop turn: timeouts swept now and then, the control plane's
//! commands and session reports, the watchdog's heartbeat, and the stop sequence.

use super::core::{ControlWork, ShardCore};
use std::time::{Duration, Instant};

/// What a sweep found.
#[derive(Debug, Default)]
pub struct Swept {
    /// Connections to close now.
    pub close: Vec<usize>,
    /// Viewers whose stream went silent: send what is queued, then close.
    pub ended: Vec<usize>,
}

/// The end of every backend's loop turn: sweeping timeouts now and then, and the stop
/// sequence (no new connections, viewers get up to two seconds to take what is queued).
#[derive(Debug)]
pub struct Housekeeping {
    next_sweep: Instant,
    next_report: Instant,
    stopping_since: Option<Instant>,
    /// Test hook for the watchdog: this shard stops going round its loop at this moment.
    hang_at: Option<(usize, Instant)>,
    /// When the loop's wait last returned.
    woke: Option<Instant>,
}

/// `SHARDCAST_DEBUG_HANG_SHARD=SHARD:SECONDS` makes shard SHARD stop going round its loop
/// SECONDS after it starts, as a stuck shard would, so that the watchdog can be seen to stop
/// pinging. Only the tests set it.
pub const HANG_HOOK: &str = "SHARDCAST_DEBUG_HANG_SHARD";

impl Default for Housekeeping {
    fn default() -> Self {
        let hang_at = std::env::var(HANG_HOOK).ok().and_then(|v| {
            let (shard, seconds) = v.split_once(':')?;
            Some((
                shard.parse().ok()?,
                Instant::now() + Duration::from_secs_f64(seconds.parse().ok()?),
            ))
        });
        Self {
            next_sweep: Instant::now(),
            next_report: Instant::now() + Duration::from_secs(1),
            stopping_since: None,
            hang_at,
            woke: None,
        }
    }
}

impl Housekeeping {
    /// The loop's wait has just returned: a turn's work starts (its length is accounted at
    /// [`Housekeeping::should_exit`]).
    pub fn woke(&mut self) {
        self.woke = Some(Instant::now());
    }

    /// The control plane's side of the loop: its commands now (what they leave for the
    /// backend), and a session report every second.
    pub fn control(&mut self, core: &mut ShardCore) -> ControlWork {
        if Instant::now() >= self.next_report {
            self.next_report = Instant::now() + Duration::from_secs(1);
            core.report_sessions();
        }
        core.take_commands()
    }

    /// Every 250 ms: the connections whose timeouts expired (close them), and the progressive
    /// viewers of streams gone silent (send what they have queued, then close them).
    pub fn sweep(&mut self, core: &mut ShardCore) -> Swept {
        if Instant::now() < self.next_sweep {
            return Swept::default();
        }
        self.next_sweep = Instant::now() + Duration::from_millis(250);
        Swept {
            close: core.expired(),
            ended: core.end_silent_streams(),
        }
    }

    /// Called once per loop turn: records the shard's heartbeat (for the watchdog) and says
    /// whether the loop should end. `stop_accepting` runs once, when a stop is first seen.
    pub fn should_exit(
        &mut self,
        core: &ShardCore,
        run: &super::RunState,
        stop_accepting: impl FnOnce(),
    ) -> bool {
        run.beat(core.index());
        if let Some(woke) = self.woke.take() {
            run.account(core.index(), core.connections(), woke.elapsed());
            let (held, evicted) = core.session_counts();
            run.sessions(core.index(), held, evicted);
        }
        if let Some((shard, at)) = self.hang_at {
            if shard == core.index() && Instant::now() >= at {
                tracing::error!(shard, "{HANG_HOOK}: this shard hangs now");
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
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
            Instant::now()
        });
        run.fast() || core.flushed() || since.elapsed() > Duration::from_secs(2)
    }
}
