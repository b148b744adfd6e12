//! Many viewers and a slow one, against the real binary, measured by the bench's HTTP-TS
//! client running in this process.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod support;

use nix::sys::signal::Signal;
use shardcast_bench::load::Load;
use shardcast_bench::ts::run as run_viewers;
use std::io::Write;
use std::time::Duration;
use support::*;

/// Held by each test here for its whole run: each is a load on both CPUs, and what one
/// measures ("nobody else notices", every byte to every viewer) must not include the other's
/// load, which the test harness would otherwise run alongside it.
static ONE_LOAD_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A configuration with the demo stream and `extra` server settings, in a directory removed
/// however the test ends; `name` tells the tests' directories apart.
fn config(name: &str, extra: &str) -> (TempDir, std::path::PathBuf) {
    let dir = TempDir::new(name);
    let path = dir.join("shardcast.toml");
    std::fs::write(
        &path,
        format!("[server]\n{extra}\n[[stream]]\nname = \"demo\"\nsource = \"demo:\"\n"),
    )
    .unwrap();
    (dir, path)
}

#[test]
fn a_thousand_viewers_get_the_whole_stream_for_30_seconds() {
    let _alone = ONE_LOAD_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (_dir, cfg) = config("viewers-thousand", "");
    let server = Server::start(&["--config", cfg.to_str().unwrap()]);
    let load = Load {
        addr: server.addr,
        path: "/demo.ts".into(),
        viewers: 1000,
        ramp: Duration::from_secs(2),
        settle: Duration::from_secs(2),
        measure: Duration::from_secs(30),
        server_pid: Some(server.child.id()),
        progress: false,
        pace_bps: 0,
        tls: None,
        low_latency: false,
        connection_per_request: false,
    };
    let r = run_viewers(&load).unwrap();
    eprint!("{}", r.summary());
    assert_eq!((r.connected, r.disconnected), (1000, 0), "{}", r.summary());
    assert_eq!((r.gaps, r.viewers_with_gaps), (0, 0), "{}", r.summary());
    // Every viewer got the whole stream: about 30 s of the demo's ~90 kB/s of content each.
    let mean = r.bytes / 1000;
    assert!(mean > 2_000_000, "{}", r.summary());
    assert!(
        r.min_viewer_bytes * 10 >= mean * 9,
        "a viewer fell short: {}",
        r.summary()
    );
    assert!(
        r.latency_us.len() > 1000 * 25 * 25,
        "stamps missing: {}",
        r.summary()
    );
    let (status, log) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "{log}");
    assert!(!log.contains("fell behind"), "a viewer was skipped: {log}");
}

#[test]
fn a_slow_reader_is_skipped_or_closed_and_nobody_else_notices() {
    let _alone = ONE_LOAD_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (_dir, cfg) = config("viewers-slow", "max_lag = 65536\nsend_buffer = 16384\n");
    let server = Server::start(&["--config", cfg.to_str().unwrap()]);
    // The slow reader: a tiny receive window, one request, then it never reads.
    let slow = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    slow.set_recv_buffer_size(4096).unwrap();
    slow.connect(&server.addr.into()).unwrap();
    let mut slow: std::net::TcpStream = slow.into();
    slow.write_all(b"GET /demo.ts HTTP/1.1\r\nHost: slow\r\n\r\n")
        .unwrap();
    let load = Load {
        addr: server.addr,
        path: "/demo.ts".into(),
        viewers: 100,
        ramp: Duration::from_millis(500),
        settle: Duration::from_secs(1),
        measure: Duration::from_secs(12),
        server_pid: Some(server.child.id()),
        progress: false,
        pace_bps: 0,
        tls: None,
        low_latency: false,
        connection_per_request: false,
    };
    let r = run_viewers(&load).unwrap();
    assert_eq!(
        (r.connected, r.disconnected, r.gaps),
        (100, 0, 0),
        "{}",
        r.summary()
    );
    drop(slow);
    let (status, log) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "{log}");
    assert!(
        log.contains("viewer fell behind: moved to the newest keyframe")
            || log.contains("viewer kept falling behind: closed"),
        "the slow reader was neither skipped nor closed: {log}"
    );
}
