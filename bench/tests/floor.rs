//! `write-floor` against real sockets, on both backends: it takes the stream's datagrams and
//! gives every viewer (`shardcast-bench ts`) the stream without its null packets, whole and in
//! order, at the flush rate; a viewer that never reads holds up no one.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use shardcast_bench::ingest::{run_many, Content};
use shardcast_bench::load::Load;
use shardcast_protocols::generator::GeneratorConfig;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Stops the floor when the test ends, passed or not.
struct Floor(Child);

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A floor listening for viewers and for the stream, on ports free when asked: another test
/// may take one before the floor binds it (then the floor ends, and it starts again on others).
fn floor(io: &str) -> (Floor, SocketAddr, SocketAddr) {
    for _ in 0..5 {
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let udp = free_udp();
        let child = Command::new(env!("CARGO_BIN_EXE_write-floor"))
            .args(["--io", io, "--flush-ms", "20"])
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--udp")
            .arg(udp.to_string())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut floor = Floor(child);
        let started = Instant::now();
        // (It binds the stream's socket before it listens.)
        loop {
            if TcpStream::connect(listen).is_ok() {
                return (floor, listen, udp);
            }
            if let Ok(Some(_)) = floor.0.try_wait() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "write-floor never listened"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("write-floor never started: five times, a port it was given was taken");
}

fn viewers_get_the_whole_stream(io: &str) {
    let (floor, listen, udp) = floor(io);
    let sender = std::thread::spawn(move || {
        let config = GeneratorConfig {
            bitrate: 2_000_000,
            ..GeneratorConfig::default()
        };
        run_many(
            &Content::Generator(config),
            "127.0.0.1:0".parse().unwrap(),
            &[udp],
            Duration::from_secs(6),
        )
    });
    // A viewer that asks and never reads.
    let mut stalled = TcpStream::connect(listen).unwrap();
    std::io::Write::write_all(&mut stalled, b"GET /live.ts HTTP/1.1\r\n\r\n").unwrap();
    let report = shardcast_bench::ts::run(&Load {
        addr: listen,
        path: "/live.ts".into(),
        viewers: 50,
        ramp: Duration::from_millis(500),
        settle: Duration::from_millis(500),
        measure: Duration::from_secs(3),
        server_pid: Some(floor.0.id()),
        progress: false,
        pace_bps: 0,
        tls: None,
        low_latency: false,
        connection_per_request: false,
    })
    .unwrap();
    sender.join().unwrap().unwrap();
    assert_eq!(report.connected, 50, "{}", report.summary());
    assert_eq!(report.disconnected, 0, "{}", report.summary());
    assert_eq!(report.gaps, 0, "{}", report.summary());
    // The generator's 2 Mbit/s less its null packets, over 3 s: well past 200 kB each.
    assert!(report.min_viewer_bytes > 200_000, "{}", report.summary());
    // Written at the flush rate: the oldest byte waits 20 ms, so no stamp is much older.
    let p50 = report.latency_us.value_at_quantile(0.5);
    assert!((5_000..200_000).contains(&p50), "{}", report.summary());
    drop(stalled);
}

#[test]
fn viewers_get_the_whole_stream_over_io_uring() {
    viewers_get_the_whole_stream("uring");
}

#[test]
fn viewers_get_the_whole_stream_over_epoll() {
    viewers_get_the_whole_stream("epoll");
}

#[test]
fn a_flush_interval_out_of_range_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_write-floor"))
        .args([
            "--listen",
            "127.0.0.1:1",
            "--udp",
            "127.0.0.1:1",
            "--flush-ms",
            "5000",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--flush-ms is 0 to 1000"));
}
