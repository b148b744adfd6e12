//! `shardcast serve` end to end: the real binary, real sockets, ffmpeg and ffprobe as clients.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod support;

use nix::sys::signal::Signal;
use std::time::Duration;
use support::*;

#[test]
fn serves_the_demo_stream_with_no_configuration() {
    let server = Server::start(&[]);
    let url = server.url("/demo.ts");
    let probe = probe_streams(&url);
    assert!(
        probe.contains("h264,256,144,") && probe.contains("aac"),
        "{probe}"
    );
    let (ok, decode) = run(
        "ffmpeg",
        &[
            "-nostdin", "-v", "error", "-i", &url, "-t", "4", "-f", "null", "-",
        ],
    );
    assert!(ok && decode.trim().is_empty(), "ffmpeg said: {decode}");
    let body = capture(server.addr, "/demo.ts", 2.5);
    // Null packets are padding and are not carried; count pictures instead: the viewer starts
    // at the newest keyframe (at most 1 s back) and then gets 25 frames a second.
    let pictures = pictures(&body);
    assert!(
        (60..=95).contains(&pictures),
        "{pictures} pictures in 2.5 s"
    );
    assert_eq!(continuity_breaks(&body), vec![]);
    assert!(
        first_picture_is_keyframe(&body),
        "a joining viewer must start at a keyframe"
    );
    // The PAT comes first.
    assert_eq!(u16::from(body[1] & 0x1F) << 8 | u16::from(body[2]), 0);
    let (status, log) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "{log}");
    assert!(
        log.contains("SIGTERM: stopping gracefully") && log.contains("shardcast stopped"),
        "{log}"
    );
    let backend = format!("io backend: {}", expected_backend());
    assert!(log.contains(&backend), "expected {backend}: {log}");
}

#[test]
fn answers_bad_requests_with_the_right_status() {
    let server = Server::start(&[]);
    let ask = |req: &str| {
        String::from_utf8_lossy(&raw_get(server.addr, req, Duration::from_millis(600))).to_string()
    };
    assert!(ask("GET /nope.ts HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
    assert!(ask("DELETE /demo.ts HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
    // A body is read only by a push (PUT or POST to /push/{stream}); elsewhere a POST is not
    // allowed, and a GET with a body is refused.
    assert!(ask("POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody").starts_with("HTTP/1.1 405"));
    assert!(ask("GET / HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody").starts_with("HTTP/1.1 413"));
    assert!(ask("GET / HTTP/1.1\r\nX: \u{1}\r\n\r\n").starts_with("HTTP/1.1 400"));
    let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(10_000));
    assert!(ask(&big).starts_with("HTTP/1.1 431"));
    let head = ask("HEAD /demo.ts HTTP/1.1\r\n\r\n");
    assert!(
        head.starts_with("HTTP/1.1 200") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
    assert!(head.contains("Access-Control-Allow-Origin: *"), "{head}");
    // Two pipelined requests on one connection, answered in order.
    let two = ask("GET /nope HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nConnection: close\r\n\r\n");
    let statuses: Vec<&str> = two.lines().filter(|l| l.starts_with("HTTP/1.1")).collect();
    assert_eq!(
        statuses,
        vec!["HTTP/1.1 404 Not Found", "HTTP/1.1 200 OK"],
        "{two}"
    );
    let (status, _) = server.stop(Signal::SIGINT);
    assert!(status.success());
}

#[test]
fn refuses_a_bad_configuration_with_the_line_and_the_reason() {
    let path = std::env::temp_dir().join(format!("shardcast-bad-{}.toml", std::process::id()));
    std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:0\"\n\n[[stream]]\nname = \"cam\"\nsource = \"udp://239.1.1.1\"\n").unwrap();
    let (ok, text) = run(
        env!("CARGO_BIN_EXE_shardcast-under-test"),
        &["serve", "--config", path.to_str().unwrap()],
    );
    std::fs::remove_file(&path).ok();
    assert!(!ok);
    assert!(
        text.contains("line 6") && text.contains("bad address"),
        "{text}"
    );
}

#[test]
fn without_io_uring_it_says_so_and_serves_on_epoll() {
    let server = Server::start_under(&WITHOUT_IO_URING, &["--io", "auto"]);
    let probe = probe_streams(&server.url("/demo.ts"));
    assert!(probe.contains("h264"), "{probe}");
    let (status, log) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "{log}");
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("io_uring is not available"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].contains("io_uring_setup failed") && lines[0].contains("serving on epoll"),
        "{log}"
    );
    assert!(log.contains("io backend: epoll"), "{log}");
    // Asked for io_uring explicitly, it refuses to start and says why.
    let mut wrapped: Vec<&str> = WITHOUT_IO_URING.to_vec();
    wrapped.extend([
        env!("CARGO_BIN_EXE_shardcast-under-test"),
        "serve",
        "--io",
        "io_uring",
        "--listen",
        "127.0.0.1:0",
    ]);
    let (ok, text) = run(wrapped[0], &wrapped[1..]);
    assert!(
        !ok && text.contains("io = \"io_uring\" was asked for, but io_uring_setup failed"),
        "{text}"
    );
}

#[test]
fn receives_unicast_udp_from_the_bench_sender() {
    let port = free_port();
    let config =
        std::env::temp_dir().join(format!("shardcast-unicast-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        format!("[[stream]]\nname = \"live\"\nsource = \"udp://127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let plan = shardcast_bench::ingest::IngestPlan {
        to: format!("127.0.0.1:{port}").parse().unwrap(),
        from: "127.0.0.1:0".parse().unwrap(),
        duration: Duration::from_secs(6),
        generator: shardcast_protocols::generator::GeneratorConfig::default(),
    };
    let sender = std::thread::spawn(move || shardcast_bench::ingest::run(&plan).unwrap());
    std::thread::sleep(Duration::from_millis(1500));
    let body = capture(server.addr, "/live.ts", 3.0);
    assert!(pictures(&body) >= 60, "{} pictures", pictures(&body));
    assert!(first_picture_is_keyframe(&body));
    assert_eq!(continuity_breaks(&body), vec![]);
    assert!(sender.join().unwrap() > 1000);
    std::fs::remove_file(&config).ok();
    let (status, log) = server.stop(Signal::SIGTERM);
    assert!(
        status.success() && log.contains("receiving MPEG-TS over UDP"),
        "{log}"
    );
}

#[test]
fn a_full_shard_answers_503() {
    let config = std::env::temp_dir().join(format!("shardcast-cap-{}.toml", std::process::id()));
    std::fs::write(&config, "[server]\ncpus = [0]\nmax_connections_per_shard = 2\n\n[[stream]]\nname = \"demo\"\nsource = \"demo:\"\n").unwrap();
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    // Server::start's own probe connection has come and gone; hold the two places.
    std::thread::sleep(Duration::from_millis(300));
    let a = std::net::TcpStream::connect(server.addr).unwrap();
    let b = std::net::TcpStream::connect(server.addr).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let third = String::from_utf8_lossy(&raw_get(
        server.addr,
        "GET / HTTP/1.1\r\n\r\n",
        Duration::from_millis(800),
    ))
    .to_string();
    assert!(third.starts_with("HTTP/1.1 503"), "{third}");
    drop((a, b));
    std::thread::sleep(Duration::from_millis(300));
    let later = String::from_utf8_lossy(&raw_get(
        server.addr,
        "GET / HTTP/1.1\r\n\r\n",
        Duration::from_millis(800),
    ))
    .to_string();
    assert!(later.starts_with("HTTP/1.1 200"), "{later}");
    std::fs::remove_file(&config).ok();
    let _ = server.stop(Signal::SIGTERM);
}

#[test]
fn a_file_source_plays_in_real_time_and_loops() {
    // 4.02 s of x264 720p25 and AAC at 0.65 Mbit/s.
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../protocols/testdata/h264_aac_720p25.ts")
        .canonicalize()
        .unwrap();
    let dir = TempDir::new("file-source");
    let config = dir.0.join("shardcast.toml");
    std::fs::write(
        &config,
        format!(
            "[[stream]]\nname = \"clip\"\nsource = \"file://{}\"\nsegment_duration = 1\n",
            fixture.display()
        ),
    )
    .unwrap();
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    std::thread::sleep(Duration::from_secs(1));
    // Six seconds of a four-second file: it loops, at the pace of its clock (25 pictures a
    // second, plus at most the second before the viewer's first keyframe).
    let pictures = pictures(&capture(server.addr, "/clip.ts", 6.0));
    assert!(
        (140..=185).contains(&pictures),
        "{pictures} pictures in 6 s"
    );
    let probe = probe_streams(&server.url("/clip/index.m3u8"));
    assert!(
        probe.contains("h264,1280,720,") && probe.contains("aac"),
        "{probe}"
    );
    let (status, log) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "{log}");
}
