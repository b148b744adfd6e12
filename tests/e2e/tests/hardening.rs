//! One client against the real binary, the way an attacker on the public internet would try
//! it: wildcard names of any stream, pipelining without reading, a source without keyframes,
//! slowloris beside a thousand viewers, a flood of unknown tokens against a slow backend, a
//! trickling reader, too many connections from one address, a source that goes quiet. Each
//! must cost bounded memory, be refused or paused, and leave the other viewers whole.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod support;

use nix::sys::signal::Signal;
use shardcast_bench::load::Load;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

/// The slowloris test compares viewers' latency with and without attackers, so it holds this
/// for writing and runs alone; every other test here holds it for reading and may run beside
/// another. Beside a second test, the quiet run's p99 was already 167 ms where alone it is
/// under 40, and the comparison measured the neighbour rather than the attack.
static LATENCY_MEASURED: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Shares the CPUs with other tests of this file (not with the slowloris test).
fn beside_others() -> std::sync::RwLockReadGuard<'static, ()> {
    LATENCY_MEASURED
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Resident memory of process `pid`, bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

const MIB: u64 = 1 << 20;

/// A TCP connection to `addr` from loopback address `local` (127.0.0.x: another "client").
fn connect_from(local: &str, addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let from: SocketAddr = format!("{local}:0").parse().unwrap();
    socket.bind(&from.into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    socket.into()
}

/// One request from `local`, the response read until the server closes it.
fn get_from(local: &str, addr: SocketAddr, path: &str, headers: &str) -> (u16, String, Vec<u8>) {
    let mut s = connect_from(local, addr);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let (head, body) = split_response(&raw);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head, body.to_vec())
}

/// A configuration file in its own directory.
fn config(name: &str, text: &str) -> (TempDir, std::path::PathBuf) {
    let dir = TempDir::new(name);
    let path = dir.join("shardcast.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// A progressive viewer of `path` for `seconds`, in a thread: its continuity breaks and bytes.
fn watch(
    addr: SocketAddr,
    path: &'static str,
    seconds: f64,
) -> std::thread::JoinHandle<(usize, usize)> {
    std::thread::spawn(move || {
        let body = capture(addr, path, seconds);
        (continuity_breaks(&body).len(), body.len())
    })
}

/// The viewer `watch` started saw a whole stream: data, and no continuity break.
fn assert_unharmed(viewer: std::thread::JoinHandle<(usize, usize)>) {
    let (breaks, bytes) = viewer.join().unwrap();
    assert!(
        bytes > 100 * 188 && breaks == 0,
        "{breaks} breaks in {bytes} bytes"
    );
}

/// SIGTERM, and the server must exit 0; returns what it logged.
fn stop_cleanly(server: Server) -> String {
    let (status, log) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "{log}");
    log
}

/// The bench's generator sent to 127.0.0.1:`port` for `seconds`, in a thread (datagrams sent).
fn send_udp(
    port: u16,
    seconds: u64,
    generator: shardcast_protocols::generator::GeneratorConfig,
) -> std::thread::JoinHandle<u64> {
    let plan = shardcast_bench::ingest::IngestPlan {
        to: format!("127.0.0.1:{port}").parse().unwrap(),
        from: "127.0.0.1:0".parse().unwrap(),
        duration: Duration::from_secs(seconds),
        generator,
    };
    std::thread::spawn(move || shardcast_bench::ingest::run(&plan).unwrap())
}

/// The value of one sample of `/metrics` (the whole line up to the value, labels included).
fn metric(api: SocketAddr, sample: &str) -> f64 {
    let (_, _, body) = exchange(
        api,
        "GET /metrics HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n",
    );
    let text = String::from_utf8(body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {sample} in\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn wildcard_names_of_an_ordinary_stream_start_nothing() {
    let _shared = beside_others();
    // The packaged default: the demo stream, which is no template.
    let server = Server::start(&[]);
    let pid = server.child.id();
    std::thread::sleep(Duration::from_millis(500));
    let before = rss(pid);
    let viewer = watch(server.addr, "/demo.ts", 6.0);
    for n in 1..=300 {
        let (status, head, _) = fetch(server.addr, &format!("/demo+{n}/index.m3u8"), "");
        assert_eq!(status, 404, "{head}");
    }
    assert_eq!(fetch(server.addr, "/demo+1.ts", "").0, 404);
    std::thread::sleep(Duration::from_secs(2));
    let grown = rss(pid).saturating_sub(before);
    assert!(grown < 64 * MIB, "RSS grew {} MiB", grown / MIB);
    assert_unharmed(viewer);
    let log = stop_cleanly(server);
    assert!(!log.contains("wildcard instance started"), "{log}");
}

#[test]
fn templates_start_instances_only_when_allowed_and_within_bounds() {
    let _shared = beside_others();
    let backend = Backend::start(|r| {
        let allowed = r.body.contains("\"token\":\"good\"");
        let status = if allowed { 200 } else { 403 };
        (status, Vec::new(), String::new(), Duration::ZERO)
    });
    let (dir, path) = config(
        "hardening-templates",
        &format!(
            "[server]\nwildcard_starts_per_minute = 2\n\n[[stream]]\nname = \"cams\"\nsource = \"demo:\"\nsegment_duration = 1\nwildcard = {{ instances = 3, pattern = \"[a-z]+\" }}\naccess = {{ url = \"http://{}/check\" }}\n",
            backend.addr
        ),
    );
    let api = free_api_addr();
    let server = start_with_api(&path, &dir.join("state"), api);
    let token = api_token(&dir.join("state"));
    let names = || {
        let (_, list) = api_call(api, "GET", "/api/v1/streams", &token, None);
        let mut n: Vec<String> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .collect();
        n.sort();
        n
    };
    let hls = |local: &str, name: &str, token: &str| {
        get_from(
            local,
            server.addr,
            &format!("/{name}/index.m3u8?token={token}"),
            "",
        )
        .0
    };
    // A refused viewer starts nothing: the decision comes first.
    assert_eq!(hls("127.0.0.1", "cams+abc", "bad"), 401);
    assert_eq!(names(), ["cams"]);
    // A name the template does not allow is 404 and asks no one.
    let asked = backend.received().len();
    assert_eq!(hls("127.0.0.1", "cams+123", "good"), 404);
    assert_eq!(hls("127.0.0.1", "cams+a%0A", "good"), 404);
    assert_eq!(backend.received().len(), asked);
    // Allowed: started (503 until its first segment, then 200).
    for name in ["cams+abc", "cams+def"] {
        let status = hls("127.0.0.1", name, "good");
        assert!(status == 503 || status == 200, "{name}: {status}");
    }
    assert_eq!(names(), ["cams", "cams+abc", "cams+def"]);
    // Two starts a minute from one address: the third is refused; another address may.
    assert_eq!(hls("127.0.0.1", "cams+ghi", "good"), 429);
    let status = hls("127.0.0.2", "cams+ghi", "good");
    assert!(status == 503 || status == 200, "{status}");
    // The template's cap: three instances.
    assert_eq!(hls("127.0.0.3", "cams+jkl", "good"), 503);
    assert_eq!(names(), ["cams", "cams+abc", "cams+def", "cams+ghi"]);
    // Running instances are watched as any stream.
    let deadline = Instant::now() + Duration::from_secs(15);
    while hls("127.0.0.1", "cams+abc", "good") != 200 {
        assert!(Instant::now() < deadline, "cams+abc never segmented");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(metric(api, "shardcast_wildcard_starts_limited_total"), 1.0);
    stop_cleanly(server);
}

#[test]
fn pipelining_without_reading_is_paused_then_closed() {
    let _shared = beside_others();
    let (_dir, path) = config(
        "hardening-pipelining",
        "[server]\nidle_timeout = 5\n\n[[stream]]\nname = \"demo\"\nsource = \"demo:\"\n",
    );
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    let pid = server.child.id();
    std::thread::sleep(Duration::from_millis(500));
    let before = rss(pid);
    let viewer = watch(server.addr, "/demo.ts", 8.0);
    // 200,000 requests for the player page (7 MB), never a byte read.
    let attacker =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    attacker.set_recv_buffer_size(4096).unwrap();
    attacker.connect(&server.addr.into()).unwrap();
    let mut attacker: TcpStream = attacker.into();
    attacker.set_nonblocking(true).unwrap();
    let requests = b"GET /demo.html HTTP/1.1\r\nHost: x\r\n\r\n".repeat(200_000);
    let mut sent = 0;
    let started = Instant::now();
    let mut closed_after = None;
    while started.elapsed() < Duration::from_secs(20) {
        match attacker.write(&requests[sent.min(requests.len())..]) {
            Ok(0) => std::thread::sleep(Duration::from_millis(20)),
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(_) => {
                closed_after = Some(started.elapsed());
                break;
            }
        }
        let grown = rss(pid).saturating_sub(before);
        assert!(grown < 64 * MIB, "RSS grew {} MiB", grown / MIB);
    }
    assert!(
        sent < requests.len(),
        "all 7 MB were taken in: reading never stopped"
    );
    let closed_after = closed_after.expect("the connection that never reads was not closed");
    assert!(
        closed_after < Duration::from_secs(15),
        "closed after {closed_after:?}"
    );
    assert_unharmed(viewer);
    stop_cleanly(server);
}

#[test]
fn a_source_without_keyframes_is_held_to_its_caps() {
    let _shared = beside_others();
    let port = free_port();
    let (dir, path) = config(
        "hardening-keyframes",
        &format!(
            "[[stream]]\nname = \"demo\"\nsource = \"demo:\"\n\n[[stream]]\nname = \"flat\"\nsource = \"udp://127.0.0.1:{port}\"\nmax_buffer = 16777216\nmax_segment = 16777216\n"
        ),
    );
    let api = free_api_addr();
    let server = start_with_api(&path, &dir.join("state"), api);
    let pid = server.child.id();
    std::thread::sleep(Duration::from_millis(500));
    let before = rss(pid);
    // About 42 Mbit/s of intra refresh with one keyframe at the start and none after: 100 MB
    // in 20 s, all of it after the only access point.
    let sender = send_udp(
        port,
        20,
        shardcast_protocols::generator::GeneratorConfig {
            bitrate: 50_000_000,
            width: 1280,
            height: 720,
            keyframe_interval: u32::MAX,
            refresh_columns: 12,
            ..Default::default()
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    let flat_viewer = watch(server.addr, "/flat.ts", 4.0);
    let demo_viewer = watch(server.addr, "/demo.ts", 15.0);
    let mut peak = 0;
    while !sender.is_finished() {
        peak = peak.max(rss(pid).saturating_sub(before));
        std::thread::sleep(Duration::from_millis(200));
    }
    let sent = sender.join().unwrap();
    assert!(sent > 50_000, "the source sent {sent}");
    assert!(peak < 64 * MIB, "RSS grew {} MiB", peak / MIB);
    let trims = metric(api, "shardcast_stream_buffer_trims_total{stream=\"flat\"}");
    let dropped = metric(
        api,
        "shardcast_stream_segments_dropped_total{stream=\"flat\"}",
    );
    assert!(
        trims > 0.0 && dropped > 0.0,
        "trims {trims}, segments dropped {dropped}"
    );
    // The flat stream's viewer got data; the other stream's viewers saw nothing of it.
    let (_, flat_bytes) = flat_viewer.join().unwrap();
    assert!(flat_bytes > 1_000_000, "{flat_bytes}");
    assert_unharmed(demo_viewer);
    // A viewer joining now starts at the oldest data held (no keyframe is).
    let late = capture(server.addr, "/flat.ts", 0.5);
    assert!(late.is_empty() || late[0] == 0x47);
    stop_cleanly(server);
}

#[test]
fn a_silent_source_ends_its_progressive_viewers() {
    let _shared = beside_others();
    let port = free_port();
    let (_dir, path) = config(
        "hardening-silent",
        &format!(
            "[[stream]]\nname = \"live\"\nsource = \"udp://127.0.0.1:{port}\"\nsource_timeout = 2\n"
        ),
    );
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    let sender = send_udp(port, 3, Default::default());
    std::thread::sleep(Duration::from_millis(1500));
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(b"GET /live.ts HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut body = Vec::new();
    let started = Instant::now();
    let _ = s.read_to_end(&mut body);
    sender.join().unwrap();
    // The source stops 1.5 s in; the viewer's body ends 2 s later (and the sweep's 250 ms).
    let ended = started.elapsed();
    assert!(
        ended > Duration::from_millis(2500) && ended < Duration::from_secs(6),
        "ended after {ended:?}"
    );
    assert!(body.len() > 20 * 188);
    let log = stop_cleanly(server);
    assert!(log.contains("no data from the source for 2 s"), "{log}");
}

#[test]
fn too_many_connections_from_one_address_are_refused() {
    let _shared = beside_others();
    let (_dir, path) = config(
        "hardening-per-address",
        "[server]\nmax_connections_per_address = 50\n\n[[stream]]\nname = \"demo\"\nsource = \"demo:\"\n",
    );
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    // Sixty connections from one address, each asking for the index: fifty at most are
    // served, the rest are told why not.
    let mut held: Vec<TcpStream> = (0..60)
        .map(|_| connect_from("127.0.0.1", server.addr))
        .collect();
    let mut statuses = std::collections::HashMap::<u16, usize>::new();
    for s in &mut held {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut reader = std::io::BufReader::new(s.try_clone().unwrap());
        let (status, body) = read_response(&mut reader);
        if status == 503 {
            assert!(
                String::from_utf8_lossy(&body).contains("too many connections from your address")
            );
        }
        *statuses.entry(status).or_default() += 1;
    }
    assert!(
        statuses.get(&200).copied().unwrap_or(0) <= 50
            && statuses.get(&503).copied().unwrap_or(0) >= 10,
        "{statuses:?}"
    );
    assert_eq!(get_from("127.0.0.2", server.addr, "/", "").0, 200);
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    while get_from("127.0.0.1", server.addr, "/", "").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "closed connections were not counted out"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn out_of_descriptors_the_server_backs_off_and_recovers() {
    let _shared = beside_others();
    // 128 descriptors: a couple of hundred connections exhaust them.
    let server = Server::start_under(&["prlimit", "--nofile=128:128", "--"], &[]);
    let mut held = Vec::new();
    // All at once, the moment it listens.
    for _ in 0..300 {
        match TcpStream::connect(server.addr) {
            Ok(s) => held.push(s),
            Err(_) => break,
        }
    }
    // Accepts fail for a few seconds while the backlog holds the rest.
    std::thread::sleep(Duration::from_secs(4));
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    while fetch(server.addr, "/", "").0 != 200 {
        assert!(Instant::now() < deadline, "never served again");
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = stop_cleanly(server);
    let failures = log.matches("accept failed").count();
    // One line per wait (50 ms doubling to 1 s) per shard, not one per failure.
    assert!(
        (1..=40).contains(&failures),
        "{failures} lines about failed accepts"
    );
    assert!(log.contains("accepting again in"), "{log}");
}

#[test]
fn a_trickling_reader_is_closed_at_the_minimum_rate() {
    let _shared = beside_others();
    // An idle timeout far away: what closes the reader is its rate.
    let (_dir, path) = config(
        "hardening-trickle",
        "[server]\nidle_timeout = 120\nsend_buffer = 4096\n\n[[stream]]\nname = \"demo\"\nsource = \"demo:\"\nsegment_duration = 1\n",
    );
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(15);
    let playlist = loop {
        let (status, _, body) = fetch(server.addr, "/demo/index.m3u8", "");
        if status == 200 {
            break String::from_utf8(body).unwrap();
        }
        assert!(Instant::now() < deadline, "no segment");
        std::thread::sleep(Duration::from_millis(200));
    };
    let segment = playlist.lines().find(|l| l.ends_with(".ts")).unwrap();
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let mut s: TcpStream = socket.into();
    // The same segment requested again and again, read 1 KiB every 2 seconds.
    let request = format!("GET /demo/{segment} HTTP/1.1\r\nHost: t\r\n\r\n").repeat(16);
    s.write_all(request.as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let closed = loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "a trickling reader was kept a minute"
        );
        match s.read(&mut buf) {
            Ok(0) => break started.elapsed(),
            Ok(_) => std::thread::sleep(Duration::from_secs(2)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break started.elapsed(),
        }
    };
    assert!(closed < Duration::from_secs(40), "closed after {closed:?}");
}

#[test]
fn pipelined_segment_requests_past_the_bounds_are_all_answered_in_order() {
    let _shared = beside_others();
    for send in ["sendfile", "copy"] {
        let (_dir, path) = config(
            &format!("hardening-pipelined-{send}"),
            &format!("[server]\nsegment_send = \"{send}\"\n\n[[stream]]\nname = \"demo\"\nsource = \"demo:\"\nsegment_duration = 1\n"),
        );
        let server = Server::start(&["--config", path.to_str().unwrap()]);
        let deadline = Instant::now() + Duration::from_secs(15);
        let playlist = loop {
            let (status, _, body) = fetch(server.addr, "/demo/index.m3u8", "");
            if status == 200 && String::from_utf8_lossy(&body).matches(".ts").count() >= 3 {
                break String::from_utf8(body).unwrap();
            }
            assert!(Instant::now() < deadline, "no segments");
            std::thread::sleep(Duration::from_millis(200));
        };
        let segments: Vec<&str> = playlist.lines().filter(|l| l.ends_with(".ts")).collect();
        // Forty requests at once: past max_pipelined (16) and, with the segments' size, past
        // max_queued (1 MiB); the rest wait unread and are answered as the first drain.
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut requests = String::new();
        let mut expected = Vec::new();
        for i in 0..40 {
            // Segments, then a page: a segment's memfd range is the last thing sent (with
            // sendfile, after waiting for room) before the page is parsed.
            let path = if i < 39 {
                format!("/demo/{}", segments[i % segments.len()])
            } else {
                "/demo.html".to_owned()
            };
            requests.push_str(&format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"));
            expected.push(path);
        }
        s.write_all(requests.as_bytes()).unwrap();
        // Not read at once: the server's socket fills, and its sends wait for room.
        std::thread::sleep(Duration::from_millis(500));
        let mut reader = std::io::BufReader::new(s);
        for path in &expected {
            let (status, body) = read_response(&mut reader);
            assert_eq!(status, 200, "{send}: {path}");
            if path.ends_with(".ts") {
                assert!(body.len() > 10_000 && body[0] == 0x47, "{send}: {path}");
            } else {
                assert!(String::from_utf8_lossy(&body).contains("<html"), "{send}");
            }
        }
    }
}

/// 10,000 connections that send a request head a byte at a time, every few seconds, kept up
/// (each one the server closes is opened again) from ten addresses.
struct Slowloris {
    stop: Arc<AtomicBool>,
    /// Connections the server closed, and how long each had lived (ms), summed.
    closed: Arc<AtomicUsize>,
    lived_ms: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Slowloris {
    fn start(addr: SocketAddr, connections: usize) -> Slowloris {
        let stop = Arc::new(AtomicBool::new(false));
        let closed = Arc::new(AtomicUsize::new(0));
        let lived_ms = Arc::new(AtomicUsize::new(0));
        let (s, c, l) = (stop.clone(), closed.clone(), lived_ms.clone());
        let thread = std::thread::spawn(move || {
            let open = |i: usize| {
                let local = format!("127.0.0.{}", 2 + i % 10);
                let socket =
                    socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                        .ok()?;
                let from: SocketAddr = format!("{local}:0").parse().ok()?;
                socket.bind(&from.into()).ok()?;
                socket.connect(&addr.into()).ok()?;
                let mut stream: TcpStream = socket.into();
                stream.write_all(b"GET / HTTP/1.1\r\n").ok()?;
                stream.set_nonblocking(true).ok()?;
                Some((stream, Instant::now()))
            };
            let mut conns: Vec<Option<(TcpStream, Instant)>> = (0..connections).map(open).collect();
            let mut turn = 0usize;
            while !s.load(Ordering::Relaxed) {
                // A byte on a tenth of them every 300 ms: one every 3 s each.
                for (i, conn) in conns.iter_mut().enumerate() {
                    if i % 10 != turn % 10 {
                        continue;
                    }
                    let alive = match conn {
                        Some((stream, _)) => {
                            // Any answer (the server's 408, or its close) ends it.
                            let mut probe = [0u8; 256];
                            let answered = !matches!(
                                stream.read(&mut probe),
                                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
                            );
                            !answered && stream.write_all(b"X").is_ok()
                        }
                        None => false,
                    };
                    if !alive {
                        if let Some((_, since)) = conn.take() {
                            c.fetch_add(1, Ordering::Relaxed);
                            l.fetch_add(since.elapsed().as_millis() as usize, Ordering::Relaxed);
                        }
                        *conn = open(i);
                    }
                }
                turn += 1;
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        Slowloris {
            stop,
            closed,
            lived_ms,
            thread: Some(thread),
        }
    }
}

impl Drop for Slowloris {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn raise_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}

#[test]
fn slowloris_beside_a_thousand_viewers() {
    let _alone = LATENCY_MEASURED
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    raise_file_limit();
    let (_dir, path) = config(
        "hardening-slowloris",
        "[server]\nheader_timeout = 5\n\n[[stream]]\nname = \"demo\"\nsource = \"demo:\"\n",
    );
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    let load = |seconds| Load {
        addr: server.addr,
        path: "/demo.ts".into(),
        viewers: 1000,
        ramp: Duration::from_secs(2),
        settle: Duration::from_secs(2),
        measure: Duration::from_secs(seconds),
        server_pid: Some(server.child.id()),
        progress: false,
        pace_bps: 0,
        tls: None,
        low_latency: false,
        connection_per_request: false,
    };
    let quiet = shardcast_bench::ts::run(&load(10)).unwrap();
    eprint!("without attackers: {}", quiet.summary());
    let attack = Slowloris::start(server.addr, 10_000);
    std::thread::sleep(Duration::from_secs(2));
    let attacked = shardcast_bench::ts::run(&load(10)).unwrap();
    eprint!("with 10,000 slowloris: {}", attacked.summary());
    let (closed, lived) = (
        attack.closed.load(Ordering::Relaxed),
        attack.lived_ms.load(Ordering::Relaxed),
    );
    drop(attack);
    for r in [&quiet, &attacked] {
        assert_eq!((r.connected, r.disconnected), (1000, 0), "{}", r.summary());
        assert_eq!((r.gaps, r.viewers_with_gaps), (0, 0), "{}", r.summary());
    }
    // The viewers' latency: the median unchanged, the tail at most twice what it was or within
    // 100 ms (two and a half frames). The attacker, the viewers and the debug build of the
    // server share this machine's two cores, and the two runs come one after the other: alone
    // here the attacked p99 is the quiet one (34-39 ms both), but in a CI run it was 88 ms
    // against 41 (p50 23 against 22). A server that stalled on its attackers (a scan of every
    // connection per event, a blocking read) is hundreds of ms late, and fails either way.
    let at = |r: &shardcast_bench::ts::TsReport, q: f64| r.latency_us.value_at_percentile(q);
    assert!(
        at(&attacked, 50.0) <= at(&quiet, 50.0) * 3 / 2 + 2_000,
        "p50 {} us under attack, {} us without",
        at(&attacked, 50.0),
        at(&quiet, 50.0)
    );
    assert!(
        at(&attacked, 99.0) <= (2 * at(&quiet, 99.0)).max(100_000),
        "p99 {} us under attack, {} us without",
        at(&attacked, 99.0),
        at(&quiet, 99.0)
    );
    // 16 s of attack with a 5 s header timeout: every attacker closed, after about the
    // timeout (most of them twice; how many depends on how fast this machine's attacker loop
    // opens its 10,000 connections and comes round to each, every 3 s).
    assert!(closed >= 10_000, "{closed} attackers closed");
    let mean_ms = lived / closed.max(1);
    assert!(
        (4_500..8_000).contains(&mean_ms),
        "attackers lived {mean_ms} ms on average"
    );
    stop_cleanly(server);
}

#[test]
fn a_flood_of_unknown_tokens_leaves_room_for_a_valid_one() {
    let _shared = beside_others();
    raise_file_limit();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (f, m) = (in_flight.clone(), most.clone());
    let backend = Backend::start(move |r| {
        let now = f.fetch_add(1, Ordering::SeqCst) + 1;
        m.fetch_max(now, Ordering::SeqCst);
        // A slow backend: half a second per answer.
        std::thread::sleep(Duration::from_millis(500));
        f.fetch_sub(1, Ordering::SeqCst);
        let good = r.body.contains("\"token\":\"valid\"");
        (
            if good { 200 } else { 403 },
            Vec::new(),
            String::new(),
            Duration::ZERO,
        )
    });
    let (dir, path) = config(
        "hardening-tokens",
        &format!(
            "[[stream]]\nname = \"paid\"\nsource = \"demo:\"\nsegment_duration = 1\naccess = {{ url = \"http://{}/check\", timeout = 5 }}\n",
            backend.addr
        ),
    );
    let api = free_api_addr();
    let server = start_with_api(&path, &dir.join("state"), api);
    let pid = server.child.id();
    // Wait for the stream to segment (as the valid viewer).
    let deadline = Instant::now() + Duration::from_secs(15);
    while get_from("127.0.0.2", server.addr, "/paid/index.m3u8?token=valid", "").0 != 200 {
        assert!(Instant::now() < deadline, "never segmented");
        std::thread::sleep(Duration::from_millis(300));
    }
    let before = rss(pid);
    // 100,000 unique tokens, pipelined on 20 connections from 127.0.0.1 (50 in flight on
    // each), the connections taking the next token as they go so that all stay busy.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let tokens = Arc::new(AtomicUsize::new(0));
    let flood: Vec<_> = (0..20)
        .map(|_| {
            let (addr, stop, answered) = (server.addr, stop.clone(), answered.clone());
            let tokens = tokens.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_nodelay(true).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut reader = std::io::BufReader::new(s.try_clone().unwrap());
                let mut statuses = std::collections::HashMap::new();
                let (mut sent, mut done) = (0, 0);
                let mut last = false;
                while (!last || done < sent) && !stop.load(Ordering::Relaxed) {
                    let mut batch = String::new();
                    while !last && sent - done < 50 {
                        let token = tokens.fetch_add(1, Ordering::Relaxed);
                        if token >= 100_000 {
                            last = true;
                            break;
                        }
                        batch.push_str(&format!(
                            "GET /paid/index.m3u8?token=flood-{token} HTTP/1.1\r\nHost: t\r\n\r\n"
                        ));
                        sent += 1;
                    }
                    s.write_all(batch.as_bytes()).unwrap();
                    if done == sent {
                        break;
                    }
                    let (status, _) = read_response(&mut reader);
                    *statuses.entry(status).or_insert(0) += 1;
                    done += 1;
                    answered.fetch_add(1, Ordering::Relaxed);
                }
                statuses
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while answered.load(Ordering::Relaxed) < 10_000 {
        assert!(Instant::now() < deadline, "the flood is not flowing");
        std::thread::sleep(Duration::from_millis(10));
    }
    // A valid viewer from another address, in the middle of the flood.
    let started = Instant::now();
    let mut status = 0;
    while started.elapsed() < Duration::from_secs(3) {
        status = get_from("127.0.0.3", server.addr, "/paid/index.m3u8?token=valid", "").0;
        if status == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        status,
        200,
        "the valid viewer waited {:?}",
        started.elapsed()
    );
    let waited = started.elapsed();
    let during = answered.load(Ordering::Relaxed);
    assert!(
        during < 100_000,
        "the flood was over before the valid viewer got in"
    );
    let mut totals: std::collections::HashMap<u16, usize> = Default::default();
    for t in flood {
        for (status, n) in t.join().unwrap() {
            *totals.entry(status).or_default() += n;
        }
    }
    stop.store(true, Ordering::Relaxed);
    eprintln!("flood answers {totals:?}; valid viewer in {waited:?} with {during} answered; at most {} backend calls at once", most.load(Ordering::SeqCst));
    assert_eq!(totals.values().sum::<usize>(), 100_000);
    assert_eq!(
        totals.keys().filter(|s| ![401, 503].contains(*s)).count(),
        0,
        "{totals:?}"
    );
    // 8 per address, and the address's first of the reserve: the flood never had more.
    assert!(
        most.load(Ordering::SeqCst) <= 10,
        "{} calls at once",
        most.load(Ordering::SeqCst)
    );
    let grown = rss(pid).saturating_sub(before);
    assert!(grown < 64 * MIB, "RSS grew {} MiB", grown / MIB);
    assert!(metric(api, "shardcast_access_busy_total") > 90_000.0);
    // A gated stream's media is no shared cache's: playlists and segments are private,
    // the token in the URL or in a header.
    let bearer = "Authorization: Bearer valid\r\n";
    let (status, head, body) = get_from("127.0.0.2", server.addr, "/paid/index.m3u8", bearer);
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("Cache-Control: private, no-cache\r\n"),
        "{head}"
    );
    let playlist = String::from_utf8(body).unwrap();
    let segment = playlist.lines().find(|l| l.ends_with(".ts")).unwrap();
    let (status, head, _) = get_from(
        "127.0.0.2",
        server.addr,
        &format!("/paid/{segment}"),
        bearer,
    );
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("Cache-Control: private, max-age=86400, immutable\r\n"),
        "{head}"
    );
    let (_, head, _) = get_from("127.0.0.2", server.addr, "/paid/index.m3u8?token=valid", "");
    assert!(
        head.contains("Cache-Control: private, no-cache\r\n"),
        "{head}"
    );
    stop_cleanly(server);
}

/// Read one response (head and a Content-Length body) from a keep-alive connection.
fn read_response(r: &mut impl std::io::BufRead) -> (u16, Vec<u8>) {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut length = 0;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        if h == "\r\n" || h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            if n.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).unwrap();
    (status, body)
}

#[test]
fn a_burst_of_requests_past_the_shared_receive_buffers_is_answered_whole() {
    let _shared = beside_others();
    let (server, api, token, _dir) = start_configured(
        "hardening-receive-burst",
        "[server]\ncpus = [0]\nmax_connections_per_address = 0\n\n[[stream]]\nname = \"demo\"\nsource = \"demo:\"\n",
    );
    // 1000 connections, then a request on each, written as fast as they go and none read
    // before all are sent: far more requests arriving at once than the shard has receive
    // buffers (256 on io_uring), one in ten with a head over a buffer's 4 KiB.
    let mut conns: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    let cookie = format!("Cookie: {}\r\n", "c".repeat(6000));
    for (i, s) in conns.iter_mut().enumerate() {
        let extra = if i % 10 == 0 { cookie.as_str() } else { "" };
        s.write_all(format!("GET / HTTP/1.1\r\nHost: t\r\n{extra}\r\n").as_bytes())
            .unwrap();
    }
    for s in &mut conns {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut reader = std::io::BufReader::new(s.try_clone().unwrap());
        assert_eq!(read_response(&mut reader).0, 200);
    }
    // The burst is counted, whether or not it outran the buffers this time.
    let text = metrics(api, &token);
    assert!(
        text.lines()
            .any(|l| l.starts_with("shardcast_shard_receive_waits_total{shard=\"0\"")),
        "{text}"
    );
    drop(conns);
    stop_cleanly(server);
}
