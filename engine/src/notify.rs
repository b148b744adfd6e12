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
use std::time::Duration;

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

/// Ping the watchdog at half its period while every shard's last loop turn is younger than
/// that; stop pinging (and say which shard is stuck, once) when one is not. Returns when the
/// server stops.
pub fn run_watchdog(notifier: Arc<Notifier>, period: Duration, run: Arc<RunState>) {
    let interval = period / 2;
    let mut stuck_logged = None;
    while !run.stopping() {
        match run.stalest() {
            Some((shard, age)) if age > interval => {
                if stuck_logged != Some(shard) {
                    tracing::error!(
                        shard,
                        stalled_ms = age.as_millis() as u64,
                        "a shard has stopped going round its loop: not pinging the watchdog"
                    );
                    stuck_logged = Some(shard);
                }
            }
            _ => {
                stuck_logged = None;
                notifier.send("WATCHDOG=1");
            }
        }
        std::thread::sleep(interval);
    }
}
