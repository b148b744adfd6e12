//! Streams changed while the server runs: created, replaced and deleted through the API (live,
//! ingest sockets included, persisted with the operator's comments kept, there again after a
//! restart), changed by editing the file and sending SIGHUP (a bad file refused, the running
//! streams kept), and a daemon killed with SIGKILL at random moments during 1,000 API writes
//! always leaving a valid file equal to an acknowledged state.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::*;

/// Wait until `/{stream}/index.m3u8` answers 200 (the stream has sealed a segment).
fn wait_live(server: &Server, stream: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (status, _, _) = fetch(server.addr, &format!("/{stream}/index.m3u8"), "");
        if status == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{stream} never went live (last status {status})"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn names(addr: SocketAddr, token: &str) -> Vec<String> {
    let (status, list) = api_call(addr, "GET", "/api/v1/streams", token, None);
    assert_eq!(status, 200);
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn streams_change_live_through_the_api_and_sighup_and_survive_a_restart() {
    let dir = TempDir::new("stream-edits");
    let config = dir.join("shardcast.toml");
    let state = dir.join("state");
    let (cam_port, two_port) = (free_port(), free_port());
    std::fs::write(
        &config,
        format!("# kept by the operator\n[server]\nflush_interval = 20\n\n# the camera\n[[stream]]\nname = \"cam\"\nsource = \"udp://127.0.0.1:{cam_port}\"\n"),
    )
    .unwrap();
    let api_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let server = start_with_api(&config, &state, api_addr);
    let token = api_token(&state);
    let _ffmpeg = ffmpeg_udp_source(&format!("udp://127.0.0.1:{two_port}?pkt_size=1316"), 120);

    // Created: its socket opens, it segments, viewers get it.
    let body = format!("{{\"source\": \"udp://127.0.0.1:{two_port}\", \"segment_duration\": 1}}");
    let (status, created) = api_call(api_addr, "PUT", "/api/v1/streams/two", &token, Some(&body));
    assert_eq!(status, 201, "{created}");
    let spec = openapi();
    let put = &spec["paths"]["/api/v1/streams/{name}"]["put"]["responses"];
    check(
        &spec,
        &put["201"]["content"]["application/json"]["schema"],
        &created,
        "PUT 201",
    );
    assert_eq!(created["segment_duration"], 1.0);
    assert_eq!(created["window"], 10.0, "defaults spelled out: {created}");
    wait_live(&server, "two", Duration::from_secs(20));
    let ts = capture(server.addr, "/two.ts", 2.0);
    assert!(ts.len() > 20 * 188, "{} bytes", ts.len());
    assert!(continuity_breaks(&ts).is_empty());
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.starts_with("# kept by the operator\n[server]\nflush_interval = 20\n\n# the camera\n[[stream]]\nname = \"cam\""),
        "{text}"
    );
    assert!(text.contains("name = \"two\""), "{text}");

    // Replaced: a progressive viewer of the old stream sees its body end; the new settings
    // are what the API reports, and the stream serves again.
    let addr = server.addr;
    let viewer = std::thread::spawn(move || {
        raw_get(
            addr,
            "GET /two.ts HTTP/1.1\r\nHost: test\r\n\r\n",
            Duration::from_secs(15),
        )
    });
    std::thread::sleep(Duration::from_millis(1500));
    let started = Instant::now();
    let (status, replaced) = api_call(
        api_addr,
        "PUT",
        "/api/v1/streams/two",
        &token,
        Some(&format!(
            "{{\"source\": \"udp://127.0.0.1:{two_port}\", \"window\": 5}}"
        )),
    );
    assert_eq!(status, 200, "{replaced}");
    check(
        &spec,
        &put["200"]["content"]["application/json"]["schema"],
        &replaced,
        "PUT 200",
    );
    let old_body = viewer.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the old stream's viewer was not ended"
    );
    assert!(old_body.len() > 10 * 188);
    let (_, status_two) = api_call(api_addr, "GET", "/api/v1/streams/two", &token, None);
    assert_eq!(status_two["config"]["window"], 5.0);
    assert_eq!(status_two["config"]["segment_duration"], 2.0);
    wait_live(&server, "two", Duration::from_secs(20));

    // Refused edits change nothing.
    let before = std::fs::read_to_string(&config).unwrap();
    let (status, e) = api_call(
        api_addr,
        "PUT",
        "/api/v1/streams/two",
        &token,
        Some("{\"source\": \"rist://elsewhere/x\"}"),
    );
    assert_eq!(status, 422, "{e}");
    assert!(e["error"].as_str().unwrap().contains("rist://"), "{e}");
    check_error(&spec, e.to_string().as_bytes(), "PUT 422");
    let (status, e) = api_call(
        api_addr,
        "PUT",
        "/api/v1/streams/two",
        &token,
        Some("{\"source\": \"demo:\", \"colour\": 1}"),
    );
    assert_eq!(status, 400, "{e}");
    check_error(&spec, e.to_string().as_bytes(), "PUT 400");
    let (status, e) = api_call(
        api_addr,
        "PUT",
        "/api/v1/streams/bad%20name",
        &token,
        Some("{\"source\": \"demo:\"}"),
    );
    assert_eq!(status, 422, "{e}");
    let (status, e) = api_call(api_addr, "DELETE", "/api/v1/streams/nothing", &token, None);
    assert_eq!(status, 404);
    check_error(&spec, e.to_string().as_bytes(), "DELETE 404");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), before);

    // Deleted: gone from the API and the URLs, and its socket is closed.
    let (status, nothing) = api_call(api_addr, "DELETE", "/api/v1/streams/two", &token, None);
    assert_eq!((status, nothing), (204, Value::Null));
    assert_eq!(
        fetch(server.addr, "/two/index.m3u8", "").0,
        404,
        "deleted, still served"
    );
    assert_eq!(names(api_addr, &token), ["cam"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::UdpSocket::bind(("127.0.0.1", two_port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the deleted stream's socket stays open"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, _) = api_call(
        api_addr,
        "PUT",
        "/api/v1/streams/two",
        &token,
        Some(&format!("{{\"source\": \"udp://127.0.0.1:{two_port}\"}}")),
    );
    assert_eq!(status, 201);
    wait_live(&server, "two", Duration::from_secs(20));

    // A restart serves what the API made.
    let (status, _) = server.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success());
    let server = start_with_api(&config, &state, api_addr);
    assert_eq!(names(api_addr, &token), ["cam", "two"]);
    wait_live(&server, "two", Duration::from_secs(20));

    // SIGHUP: the file edited by hand is applied live; a bad one is refused.
    let text = std::fs::read_to_string(&config).unwrap();
    let cam = text.find("# the camera").unwrap();
    let two = text.find("[[stream]]\nname = \"two\"").unwrap();
    std::fs::write(
        &config,
        format!(
            "{}{}\n[[stream]]\nname = \"three\"\nsource = \"demo:\"\n",
            &text[..cam],
            &text[two..]
        ),
    )
    .unwrap();
    let pid = nix::unistd::Pid::from_raw(server.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while names(api_addr, &token) != ["three", "two"] {
        assert!(
            Instant::now() < deadline,
            "SIGHUP not applied: {:?}",
            names(api_addr, &token)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_live(&server, "three", Duration::from_secs(20));
    assert_eq!(fetch(server.addr, "/cam/index.m3u8", "").0, 404);
    std::fs::write(&config, "[[stream]]\nname = \"x\"\nsource = \"ftp://no\"\n").unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(names(api_addr, &token), ["three", "two"]);
    // An API edit refuses to build on a file that does not validate.
    let (status, e) = api_call(
        api_addr,
        "PUT",
        "/api/v1/streams/four",
        &token,
        Some("{\"source\": \"demo:\"}"),
    );
    assert_eq!(status, 409, "{e}");
    check_error(&openapi(), e.to_string().as_bytes(), "PUT 409");
    assert!(e["error"].as_str().unwrap().contains("line 3"), "{e}");
    let (_, log) = server.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(
        log.contains("SIGHUP: configuration") && log.contains("line 3"),
        "{log}"
    );
}

/// A small deterministic generator (xorshift), seeded from the clock; the seed is printed so
/// a failure can be replayed.
struct Random(u64);

impl Random {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One API write; `None` when the daemon is gone before the whole answer came.
fn try_write(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> Option<(u16, String)> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let status = raw.split(' ').nth(1)?.parse().ok()?;
    Some((status, raw))
}

/// The streams of a configuration file: name → window.
fn streams_in(text: &str) -> BTreeMap<String, f64> {
    let value: toml::Value = toml::from_str(text).unwrap();
    value
        .get("stream")
        .and_then(|s| s.as_array())
        .map(|a| {
            a.iter()
                .map(|t| {
                    (
                        t["name"].as_str().unwrap().to_owned(),
                        t.get("window").and_then(|w| w.as_float()).unwrap_or(10.0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_daemon_killed_during_a_thousand_writes_leaves_an_acknowledged_config() {
    let dir = TempDir::new("kill-writes");
    let config = dir.join("shardcast.toml");
    let state = dir.join("state");
    std::fs::write(
        &config,
        "# written by the API from here on\n\n[[stream]]\nname = \"s0\"\nsource = \"demo:\"\n",
    )
    .unwrap();
    let seed = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64)
        | 1;
    eprintln!("seed {seed}");
    let mut random = Random(seed);
    let mut acknowledged = streams_in(&std::fs::read_to_string(&config).unwrap());
    let (mut writes, mut kills, mut in_flight_found) = (0, 0, 0);
    let api_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    while writes < 1000 {
        let mut server = start_with_api(&config, &state, api_addr);
        let token = api_token(&state);
        let pid = server.child.id();
        let kill_after = Duration::from_millis(50 + random.below(400));
        let killer = std::thread::spawn(move || {
            std::thread::sleep(kill_after);
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        });
        // Write until the daemon is gone; remember what each write would make the file.
        let mut pending: Option<BTreeMap<String, f64>> = None;
        while writes < 1000 {
            let name = format!("s{}", random.below(8));
            let mut next = acknowledged.clone();
            let request = if random.below(4) == 0 {
                next.remove(&name);
                ("DELETE", None)
            } else {
                let window = 1 + random.below(60);
                next.insert(name.clone(), window as f64);
                (
                    "PUT",
                    Some(format!("{{\"source\": \"demo:\", \"window\": {window}}}")),
                )
            };
            pending = Some(next.clone());
            let Some((status, body)) = try_write(
                api_addr,
                request.0,
                &format!("/api/v1/streams/{name}"),
                &token,
                request.1.as_deref().unwrap_or(""),
            ) else {
                break; // the connection died with the daemon
            };
            match status {
                200 | 201 | 204 => acknowledged = next,
                404 if request.0 == "DELETE" => {}
                _ => panic!("write refused: {status} {body}"),
            }
            pending = None;
            writes += 1;
        }
        killer.join().unwrap();
        let _ = server.child.kill();
        let _ = server.child.wait();
        kills += 1;

        let text = std::fs::read_to_string(&config).unwrap();
        let (valid, why) = run(
            env!("CARGO_BIN_EXE_shardcast-under-test"),
            &["check-config", config.to_str().unwrap()],
        );
        assert!(
            valid,
            "after kill {kills}, the file is invalid: {why}\n{text}"
        );
        let on_disk = streams_in(&text);
        if on_disk != acknowledged {
            // Killed after the file was renamed into place and before the answer went out:
            // the write in flight is durable though unacknowledged.
            assert_eq!(
                Some(&on_disk),
                pending.as_ref(),
                "after kill {kills} (seed {seed}), the file matches neither the last acknowledged state {acknowledged:?} nor the write in flight"
            );
            in_flight_found += 1;
            acknowledged = on_disk;
        }
        assert!(
            text.starts_with("# written by the API from here on\n"),
            "{text}"
        );
    }
    eprintln!(
        "{writes} writes, {kills} kills, {in_flight_found} times the write in flight was on disk"
    );
    assert!(kills >= 3, "only {kills} kills in 1000 writes");
    let leftovers: Vec<_> = std::fs::read_dir(&*dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(
        leftovers.len() <= 1,
        "temporary files pile up: {leftovers:?}"
    );
}

#[test]
fn wildcard_instances_run_on_their_own_sources() {
    let dir = TempDir::new("wildcard");
    let config = dir.join("shardcast.toml");
    let text = "[[stream]]\nname = \"live\"\nsource = \"udp://127.0.0.1:$wildcard\"\nsegment_duration = 1\n";
    std::fs::write(&config, text).unwrap();
    let api_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let server = start_with_api(&config, &dir.join("state"), api_addr);
    let token = api_token(&dir.join("state"));
    let (a, b) = (free_port(), free_port());
    let _one = ffmpeg_udp_source(&format!("udp://127.0.0.1:{a}?pkt_size=1316"), 60);
    let _two = ffmpeg_udp_source(&format!("udp://127.0.0.1:{b}?pkt_size=1316"), 60);

    // The template itself receives nothing; an instance is started by its first request.
    assert_eq!(fetch(server.addr, "/live/index.m3u8", "").0, 503);
    let first = fetch(server.addr, &format!("/live+{a}/index.m3u8"), "").0;
    assert!(first == 503 || first == 200, "{first}");
    wait_live(&server, &format!("live+{a}"), Duration::from_secs(20));
    wait_live(&server, &format!("live+{b}"), Duration::from_secs(20));
    let ts = capture(server.addr, &format!("/live+{b}.ts"), 1.5);
    assert!(ts.len() > 20 * 188);

    // Each has its own buffer and state, and its own source.
    let (_, one) = api_call(
        api_addr,
        "GET",
        &format!("/api/v1/streams/live+{a}"),
        &token,
        None,
    );
    let (_, two) = api_call(
        api_addr,
        "GET",
        &format!("/api/v1/streams/live+{b}"),
        &token,
        None,
    );
    assert_eq!(one["source"], format!("udp://127.0.0.1:{a}"));
    assert_eq!(two["source"], format!("udp://127.0.0.1:{b}"));
    assert!(one["received_bytes"].as_u64().unwrap() > 0);
    assert_eq!(two["viewers"]["hls"], 1, "{two}");
    assert_eq!(names(api_addr, &token).len(), 3);

    // Wildcards that make no source, and bases that do not exist: 404.
    assert_eq!(fetch(server.addr, "/live+abc/index.m3u8", "").0, 404);
    assert_eq!(fetch(server.addr, "/nothing+1/index.m3u8", "").0, 404);
    assert_eq!(fetch(server.addr, "/live+abc.ts", "").0, 404);
    // Instances are not configuration.
    assert_eq!(std::fs::read_to_string(&config).unwrap(), text);
}
