//! The service manager's notification protocol (systemd's `sd_notify`): `READY=1` once the
//! listeners are up, `STOPPING=1` when a stop begins, `STATUS=` lines, and `WATCHDOG=1` pings
//! sent only while every shard keeps going round its loop, so that a stuck shard makes the
//! manager restart the service.
//!
//! It writes datagrams to the socket named by `NOTIFY_SOCKET` (a path, or `@name` for the
//! abstract namespace). Without that variable it does nothing. What it does not do: socket
//! activation or file-descriptor passing.

use crate::shard::RunState;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    target: std::os::unix::net::SocketAddr,
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` asks for, if any; a socket that cannot be used is logged.
    pub fn from_env() -> Option<Notifier> {
        let name = std::env::var_os("NOTIFY_SOCKET")?;
        let name = name.to_string_lossy().into_owned();
        let target = if let Some(abstract_name) = name.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
        } else {
            std::os::unix::net::SocketAddr::from_pathname(&name)
        };
        let made = target.and_then(|target| Ok((UnixDatagram::unbound()?, target)));
        match made {
            Ok((socket, target)) => Some(Notifier { socket, target }),
            Err(e) => {
                tracing::warn!("NOTIFY_SOCKET={name} cannot be used: {e}");
                None
            }
        }
    }

    /// Send one notification (newline-separated assignments).
    pub fn send(&self, message: &str) {
        if let Err(e) = self.socket.send_to_addr(message.as_bytes(), &self.target) {
            tracing::warn!("cannot notify the service manager: {e}");
        }
    }
}

/// The watchdog period the manager asks for (`WATCHDOG_USEC`, for this process when
/// `WATCHDOG_PID` is set), if any.
pub fn watchdog_period() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// What the watchdog does at one look at the shards.
#[derive(Debug, PartialEq, Eq)]
pub enum WatchdogTurn {
    /// Every shard went round its loop lately: ping.
    Ping,
    /// Shard `shard` has not for `age`: no ping; `first` when this is news (to log once).
    Stalled {
        /// The stalest shard.
        shard: usize,
        /// Since its last loop turn.
        age: Duration,
        /// Whether the last look found it moving.
        first: bool,
    },
}

/// The watchdog's memory between looks: which stalled shard it last reported.
#[derive(Debug)]
pub struct Watchdog {
    interval: Duration,
    reported: Option<usize>,
}

impl Watchdog {
    /// A watchdog the manager expects a ping from every `period`: it looks at half that.
    pub fn new(period: Duration) -> Self {
        Self {
            interval: period / 2,
            reported: None,
        }
    }

    /// How long to sleep between looks.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Look at the shards' heartbeats at `now`.
    pub fn look(&mut self, run: &RunState, now: Instant) -> WatchdogTurn {
        match run.stalest(now) {
            Some((shard, age)) if age > self.interval => {
                let first = self.reported != Some(shard);
                self.reported = Some(shard);
                WatchdogTurn::Stalled { shard, age, first }
            }
            _ => {
                self.reported = None;
                WatchdogTurn::Ping
            }
        }
    }
}

/// Ping the watchdog at half its period while every shard's last loop turn is younger than
/// that; stop pinging (and say which shard is stuck, once) when one is not. Returns when the
/// server stops.
pub fn run_watchdog(notifier: Arc<Notifier>, period: Duration, run: Arc<RunState>) {
    let mut watchdog = Watchdog::new(period);
    while !run.stopping() {
        match watchdog.look(&run, Instant::now()) {
            WatchdogTurn::Ping => notifier.send("WATCHDOG=1"),
            WatchdogTurn::Stalled {
                shard,
                age,
                first: true,
            } => tracing::error!(
                shard,
                stalled_ms = age.as_millis() as u64,
                "a shard has stopped going round its loop: not pinging the watchdog"
            ),
            WatchdogTurn::Stalled { .. } => {}
        }
        std::thread::sleep(watchdog.interval());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_that_stops_its_loop_stops_the_pings_until_it_moves_again() {
        let run = RunState::new(2);
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut watchdog = Watchdog::new(Duration::from_millis(400));
        run.beat(0, at(0));
        run.beat(1, at(0));
        assert_eq!(watchdog.look(&run, at(150)), WatchdogTurn::Ping);
        // Shard 1 goes on, shard 0 stops.
        run.beat(1, at(1000));
        let stalled = |age: u64, first: bool| WatchdogTurn::Stalled {
            shard: 0,
            age: Duration::from_millis(age),
            first,
        };
        assert_eq!(watchdog.look(&run, at(1000)), stalled(1000, true));
        assert_eq!(watchdog.look(&run, at(1200)), stalled(1200, false));
        run.beat(0, at(1300));
        run.beat(1, at(1300));
        assert_eq!(watchdog.look(&run, at(1400)), WatchdogTurn::Ping);
    }
}
