//! Viewer sessions against a running server: one HLS player (ffmpeg) is one session across
//! its playlist and segment requests (its token travels in the playlist's URIs), progressive
//! viewers are sessions keyed by their address, X-Forwarded-For is believed from a trusted
//! proxy address only, viewers are counted by protocol, a stopped session is cut off and
//! refused, and every session that ends is a JSON line in the access log.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod support;

use serde_json::Value;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::*;

fn get_json(api: SocketAddr, path: &str, token: &str) -> Value {
    let (status, value) = api_call(api, "GET", path, token, None);
    assert_eq!(status, 200, "{path}");
    value
}

/// A progressive viewer from `from` (a loopback address), sending `headers`; it reads until
/// the server closes or `for_how_long` passes, and returns the bytes and whether it was
/// closed by the server.
fn viewer(
    server: SocketAddr,
    from: &str,
    headers: &'static str,
    for_how_long: Duration,
) -> std::thread::JoinHandle<(usize, bool)> {
    let from: SocketAddr = format!("{from}:0").parse().unwrap();
    std::thread::spawn(move || {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.bind(&from.into()).unwrap();
        socket.connect(&server.into()).unwrap();
        let mut s: std::net::TcpStream = socket.into();
        s.write_all(format!("GET /demo.ts HTTP/1.1\r\nHost: test\r\nUser-Agent: progressive-test\r\n{headers}\r\n").as_bytes())
            .unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let deadline = Instant::now() + for_how_long;
        let mut total = 0;
        let mut buf = [0u8; 65536];
        while Instant::now() < deadline {
            match s.read(&mut buf) {
                Ok(0) => return (total, true),
                Ok(n) => total += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return (total, true),
            }
        }
        (total, false)
    })
}

fn sessions(api: SocketAddr, token: &str) -> Vec<Value> {
    get_json(api, "/api/v1/sessions?stream=demo", token)
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn sessions_are_counted_stopped_and_logged() {
    let dir = TempDir::new("sessions");
    let log = dir.join("access.log");
    let config = dir.join("shardcast.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nsession_timeout = 2\naccess_log = \"{}\"\ntrusted_proxies = [\"127.0.0.2\"]\n\n[[stream]]\nname = \"demo\"\nsource = \"demo:\"\nsegment_duration = 1\n",
            log.display()
        ),
    )
    .unwrap();
    let api = free_api_addr();
    let server = start_with_api(&config, &dir.join("state"), api);
    let token = api_token(&dir.join("state"));
    let deadline = Instant::now() + Duration::from_secs(15);
    while fetch(server.addr, "/demo/index.m3u8", "").0 != 200 {
        assert!(Instant::now() < deadline, "the demo never segmented");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Progressive viewers: one direct (its X-Forwarded-For is not believed), one through the
    // trusted proxy address (it is).
    let direct = viewer(
        server.addr,
        "127.0.0.1",
        "X-Forwarded-For: 203.0.113.5\r\n",
        Duration::from_secs(30),
    );
    let proxied = viewer(
        server.addr,
        "127.0.0.2",
        "X-Forwarded-For: 198.51.100.9, 127.0.0.2\r\n",
        Duration::from_secs(10),
    );

    // An HLS player with a token in its URL.
    let url = format!("http://{}/demo/index.m3u8?token=alice", server.addr);
    let (ok, out) = ffmpeg_play(&url, 4, "hls-test-player");
    assert!(ok, "{out}");

    let list = sessions(api, &token);
    let hls: Vec<&Value> = list.iter().filter(|s| s["protocol"] == "hls").collect();
    assert_eq!(hls.len(), 1, "one player, one session: {list:#?}");
    let alice = hls[0];
    assert_eq!(alice["token"], "alice");
    assert_eq!(alice["ip"], "127.0.0.1");
    assert_eq!(alice["user_agent"], "hls-test-player");
    assert!(alice["requests"].as_u64().unwrap() >= 4, "{alice}");
    assert!(alice["bytes"].as_u64().unwrap() > 50_000, "{alice}");
    let progressive: Vec<&Value> = list.iter().filter(|s| s["protocol"] == "http_ts").collect();
    let mut ips: Vec<&str> = progressive
        .iter()
        .map(|s| s["ip"].as_str().unwrap())
        .collect();
    ips.sort();
    assert_eq!(ips, ["127.0.0.1", "198.51.100.9"], "{list:#?}");
    let status = get_json(api, "/api/v1/streams/demo", &token);
    assert_eq!(status["viewers"]["http_ts"], 2, "{status}");
    assert_eq!(status["viewers"]["hls"], 1, "{status}");
    let (_, _, metrics) = fetch(api, "/metrics", "");
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains("shardcast_stream_viewers{stream=\"demo\",protocol=\"hls\"} 1"),
        "{metrics}"
    );

    // Stopping: the player's token is refused; the direct viewer is cut off.
    let stop = |id: &str| {
        let path = format!("/api/v1/sessions/{id}?block=30");
        api_call(api, "DELETE", &path, &token, None).0
    };
    assert_eq!(stop(alice["id"].as_str().unwrap()), 204);
    assert_eq!(stop("0000000000000000"), 404);
    let deadline = Instant::now() + Duration::from_secs(3);
    while fetch(server.addr, "/demo/index.m3u8?token=alice", "").0 != 403 {
        assert!(
            Instant::now() < deadline,
            "a stopped session is still served"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(fetch(server.addr, "/demo/index.m3u8?token=bob", "").0, 200);
    let direct_id = progressive.iter().find(|s| s["ip"] == "127.0.0.1").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let cut = Instant::now();
    assert_eq!(stop(&direct_id), 204);
    let (bytes, closed) = direct.join().unwrap();
    assert!(
        closed && cut.elapsed() < Duration::from_secs(5),
        "the stopped viewer was not closed"
    );
    assert!(bytes > 10_000);
    assert!(!proxied.join().unwrap().1);

    // Quiet: every session ends and is logged.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sessions(api, &token).is_empty() {
        assert!(
            Instant::now() < deadline,
            "sessions never ended: {:#?}",
            sessions(api, &token)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let lines: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |f: &dyn Fn(&Value) -> bool| {
        lines
            .iter()
            .find(|l| f(l))
            .cloned()
            .unwrap_or_else(|| panic!("not in the log: {lines:#?}"))
    };
    let alice_line = find(&|l| l["token"] == "alice");
    assert_eq!(alice_line["end"], "stopped");
    assert_eq!(alice_line["protocol"], "hls");
    assert!(alice_line["bytes"].as_u64().unwrap() > 50_000);
    assert!(alice_line["ended_at"].as_u64().unwrap() >= alice_line["started_at"].as_u64().unwrap());
    let proxied_line = find(&|l| l["ip"] == "198.51.100.9");
    assert_eq!(proxied_line["end"], "quiet");
    assert_eq!(proxied_line["user_agent"], "progressive-test");
    assert!(
        proxied_line["duration_seconds"].as_f64().unwrap() >= 3.0,
        "{proxied_line}"
    );
    assert_eq!(
        find(&|l| l["ip"] == "127.0.0.1" && l["protocol"] == "http_ts")["end"],
        "stopped"
    );
    assert!(lines.iter().any(|l| l["token"] == "bob"));
}
