//! The service manager's protocol, with a notification socket this test owns in place of
//! systemd's: READY=1 once serving, WATCHDOG=1 at half the watchdog period, STOPPING=1 on
//! SIGTERM. That a shard which stops going round its loop stops the pings is the watchdog's
//! unit test (`notify.rs`), with time passed in.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod support;

use nix::sys::signal::Signal;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};
use support::*;

/// A notification socket; messages with the time they came.
struct Manager {
    socket: UnixDatagram,
    path: std::path::PathBuf,
    start: Instant,
}

impl Manager {
    fn new(name: &str) -> Manager {
        let path =
            std::env::temp_dir().join(format!("shardcast-notify-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        Manager {
            socket,
            path,
            start: Instant::now(),
        }
    }

    /// Messages received over `for_how_long`, each with seconds since the manager started.
    fn collect(&self, for_how_long: Duration) -> Vec<(f64, String)> {
        let until = Instant::now() + for_how_long;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < until {
            if let Ok(n) = self.socket.recv(&mut buf) {
                out.push((
                    self.start.elapsed().as_secs_f64(),
                    String::from_utf8_lossy(&buf[..n]).into_owned(),
                ));
            }
        }
        out
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn pings(messages: &[(f64, String)], from: f64, to: f64) -> usize {
    messages
        .iter()
        .filter(|(t, m)| *t >= from && *t < to && m == "WATCHDOG=1")
        .count()
}

#[test]
fn ready_watchdog_and_stopping() {
    let manager = Manager::new("ok");
    let socket = manager.path.to_str().unwrap().to_owned();
    let server = Server::start_with(
        &[],
        &[("NOTIFY_SOCKET", &socket), ("WATCHDOG_USEC", "400000")],
        &[],
    );
    let messages = manager.collect(Duration::from_secs(3));
    let first = &messages.first().expect("no notification at all").1;
    assert!(first.starts_with("READY=1\n"), "{first}");
    assert!(
        first.contains(&format!("MAINPID={}", server.child.id())),
        "{first}"
    );
    // A 0.4 s watchdog is pinged every 0.2 s: about ten times in the two seconds after start.
    let n = pings(&messages, 0.5, 2.5);
    assert!((7..=12).contains(&n), "{n} pings in 2 s: {messages:?}");
    let pid = nix::unistd::Pid::from_raw(server.child.id() as i32);
    nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
    let after = manager.collect(Duration::from_secs(1));
    assert!(
        after.iter().any(|(_, m)| m.starts_with("STOPPING=1")),
        "{after:?}"
    );
    let (status, log) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "{log}");
}

#[test]
fn an_upgrade_hands_the_manager_the_new_main_pid() {
    let manager = Manager::new("upgrade");
    let socket = manager.path.to_str().unwrap().to_owned();
    let state = TempDir::new("notify-upgrade-state");
    let server = Server::start_with(
        &[],
        &[("NOTIFY_SOCKET", &socket), ("WATCHDOG_USEC", "400000")],
        &["--state-dir", state.to_str().unwrap()],
    );
    let old = server.child.id();
    let before = manager.collect(Duration::from_secs(1));
    assert!(
        before.iter().any(|(_, m)| m.starts_with("READY=1")),
        "{before:?}"
    );
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(old as i32), Signal::SIGUSR2).unwrap();
    let after = manager.collect(Duration::from_secs(4));
    let pid_file = state.join("shardcast.pid");
    let new: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(new, old);
    // The old process, still the main one, names the new one; then it says nothing more
    // (no STOPPING=1: the service goes on), and the new one pings the watchdog.
    let named = after
        .iter()
        .position(|(_, m)| m.starts_with(&format!("MAINPID={new}")))
        .unwrap_or_else(|| panic!("no MAINPID={new}: {after:?}"));
    assert!(
        !after.iter().any(|(_, m)| m.contains("STOPPING=1")),
        "{after:?}"
    );
    assert!(
        !after[named..].iter().any(|(_, m)| m.starts_with("READY=1")),
        "the new process does not announce itself again: {after:?}"
    );
    let last = after.last().map_or(0.0, |(t, _)| *t);
    assert!(pings(&after, last - 1.5, last + 0.1) >= 2, "{after:?}");
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(new as i32), Signal::SIGKILL);
    drop(server);
}
