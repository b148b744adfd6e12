//! The control plane against a running server: the bearer token (generated, kept, required),
//! every endpoint of engine/api/openapi.json answered as its schema says, JSON errors,
//! /metrics read by Prometheus's own parser (promtool) with numbers that move, and
//! `check-config`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod support;

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

const BINARY: &str = env!("CARGO_BIN_EXE_shardcast-under-test");

/// A server with one UDP stream `cam` and the API on a port of its own.
struct Rig {
    server: Server,
    api: std::net::SocketAddr,
    udp_port: u16,
}

fn start(dir: &Path) -> Rig {
    let udp_port = free_port();
    let api: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.join("shardcast.toml");
    std::fs::write(
        &config,
        format!("[[stream]]\nname = \"cam\"\nsource = \"udp://127.0.0.1:{udp_port}\"\n"),
    )
    .unwrap();
    let server = start_with_api(&config, &dir.join("state"), api);
    Rig {
        server,
        api,
        udp_port,
    }
}

fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, String, Vec<u8>) {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    exchange(
        addr,
        &format!("{method} {path} HTTP/1.1\r\nHost: api\r\n{auth}Connection: close\r\n\r\n"),
    )
}

#[test]
fn the_api_needs_its_token_and_answers_as_documented() {
    let dir = TempDir::new("api");
    let rig = start(&dir);
    let _ffmpeg = ffmpeg_udp_source(
        &format!("udp://127.0.0.1:{}?pkt_size=1316", rig.udp_port),
        60,
    );
    let token_file = dir.join("state/api-token");
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // No token, a wrong one: 401 with a JSON message and a Bearer challenge.
    for presented in [None, Some("not-the-right-token-at-all")] {
        let (status, head, body) = request(rig.api, "GET", "/api/v1/streams", presented);
        assert_eq!(status, 401, "{head}");
        assert!(header(&head, "www-authenticate")
            .unwrap()
            .starts_with("Bearer"));
        assert!(json(&body)["error"].as_str().unwrap().len() > 5);
    }

    // Wait until the stream has segments, so every field has something in it.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, _, body) = request(rig.api, "GET", "/api/v1/streams/cam", Some(&token));
        let v = json(&body);
        if v["state"] == "live" && v["input_bitrate"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the stream never went live: {v}");
        std::thread::sleep(Duration::from_millis(300));
    }

    let spec = openapi();
    let mut checked = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        let concrete = path.replace("{name}", "cam");
        for (method, operation) in item.as_object().unwrap() {
            if method != "get" {
                continue; // PUT and DELETE: tests/e2e/tests/stream_edits.rs
            }
            if path.starts_with("/api/v1/tls") {
                continue; // needs a TLS listener: tests/e2e/tests/tls.rs
            }
            if path.contains("{file}") {
                continue; // needs a recorded file: tests/e2e/tests/recording.rs
            }
            let (status, head, body) =
                request(rig.api, &method.to_uppercase(), &concrete, Some(&token));
            assert_eq!(status, 200, "{method} {concrete}: {head}");
            let response = &operation["responses"]["200"]["content"];
            if let Some(media) = response.get("application/json") {
                assert!(header(&head, "content-type")
                    .unwrap()
                    .starts_with("application/json"));
                check(
                    &spec,
                    &media["schema"],
                    &json(&body),
                    &format!("{method} {concrete}"),
                );
            }
            checked += 1;
            // Every documented 404 is JSON of the Error schema.
            if operation["responses"].get("404").is_some() {
                let (status, _, body) = request(
                    rig.api,
                    "GET",
                    &path.replace("{name}", "nosuch"),
                    Some(&token),
                );
                assert_eq!(status, 404);
                check_error(&spec, &body, "404");
            }
        }
    }
    assert_eq!(checked, 7);
    let (_, _, body) = request(rig.api, "GET", "/api/v1/streams/cam", Some(&token));
    let cam = json(&body);
    assert_eq!(cam["source"], format!("udp://127.0.0.1:{}", rig.udp_port));
    assert_eq!(
        cam["tracks"][0]["codec"].as_str().unwrap().get(..5),
        Some("avc1.")
    );
    assert_eq!(cam["tracks"][0]["width"], 1280);
    assert!(cam["segments"]["sealed"].as_u64().unwrap() >= 1);
    let (_, _, body) = request(rig.api, "GET", "/api/v1/server", Some(&token));
    let server = json(&body);
    assert_eq!(server["io_backend"], expected_backend());
    assert_eq!(server["streams"], 1);

    // Unknown endpoints and methods: JSON errors too.
    let (status, _, body) = request(rig.api, "GET", "/api/v1/nothing", Some(&token));
    assert_eq!(status, 404);
    check_error(&spec, &body, "404");
    let (status, _, body) = request(rig.api, "DELETE", "/api/v1/server", Some(&token));
    assert_eq!(status, 405);
    check_error(&spec, &body, "405");

    let (_, log) = rig.server.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(
        log.contains(&format!(
            "API token generated and kept in {}",
            token_file.display()
        )),
        "{log}"
    );

    // The token survives a restart.
    let rig = start(&dir);
    let (status, _, _) = request(rig.api, "GET", "/api/v1/server", Some(&token));
    assert_eq!(status, 200);
    drop(rig);
}

/// The value of a sample line `name{labels} value`.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn metrics_parse_with_promtool_and_move() {
    let dir = TempDir::new("metrics");
    let rig = start(&dir);
    let (status, head, body) = request(rig.api, "GET", "/metrics", None);
    assert_eq!(status, 200, "{head}");
    assert!(header(&head, "content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let before = String::from_utf8(body).unwrap();
    assert_eq!(
        sample(
            &before,
            "shardcast_stream_received_bytes_total{stream=\"cam\"}"
        ),
        0.0
    );

    let _ffmpeg = ffmpeg_udp_source(
        &format!("udp://127.0.0.1:{}?pkt_size=1316", rig.udp_port),
        60,
    );
    // A progressive viewer for part of the time: the send latency histogram fills.
    let viewer_addr = rig.server.addr;
    let viewer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        capture(viewer_addr, "/cam.ts", 3.0).len()
    });
    std::thread::sleep(Duration::from_millis(3500));
    let (_, _, body) = request(rig.api, "GET", "/metrics", None);
    let during = String::from_utf8(body).unwrap();
    let viewers = "shardcast_stream_viewers{stream=\"cam\",protocol=\"http_ts\"}";
    assert_eq!(sample(&during, viewers), 1.0, "{during}");
    std::thread::sleep(Duration::from_millis(2500));
    assert!(viewer.join().unwrap() > 100_000);
    // Two segments of 2 s take 4 s from the first keyframe on, more while ffmpeg starts on a
    // busy machine: read the metrics once there are.
    let segments = "shardcast_stream_segments_total{stream=\"cam\"}";
    let deadline = Instant::now() + Duration::from_secs(15);
    let after = loop {
        let (_, _, body) = request(rig.api, "GET", "/metrics", None);
        let after = String::from_utf8(body).unwrap();
        if sample(&after, segments) >= 2.0 {
            break after;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than two segments: {after}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(sample(&after, viewers), 0.0);
    let received = sample(
        &after,
        "shardcast_stream_received_bytes_total{stream=\"cam\"}",
    );
    assert!(received > 500_000.0, "{after}");
    let bitrate = sample(
        &after,
        "shardcast_stream_input_bytes_per_second{stream=\"cam\"}",
    );
    assert!(
        bitrate > 60_000.0 && bitrate < 1_250_000.0,
        "{bitrate} bytes/s"
    );
    assert!(sample(&after, "shardcast_shards") >= 1.0);
    let flushes = sample(
        &after,
        "shardcast_stream_send_latency_seconds_count{stream=\"cam\"}",
    );
    let under_50ms = sample(
        &after,
        "shardcast_stream_send_latency_seconds_bucket{stream=\"cam\",le=\"0.05\"}",
    );
    assert!(flushes > 20.0, "{after}");
    assert!(
        under_50ms >= flushes / 2.0,
        "{under_50ms} of {flushes} flushes under 50 ms"
    );
    let turns: f64 = after
        .lines()
        .filter(|l| l.starts_with("shardcast_shard_loop_turns_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(turns > 100.0, "{after}");

    // Every metric the Grafana dashboard queries is one the server exports.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dashboards/shardcast.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut used = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for name in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("shardcast_"))
            {
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .filter(|f| after.contains(&format!("# TYPE {f} histogram")))
                    .unwrap_or(name);
                assert!(
                    after.contains(&format!("# TYPE {family} ")),
                    "the dashboard uses {name}, which /metrics does not have"
                );
                used += 1;
            }
        }
    }
    assert!(used >= 10);

    // Prometheus's own parser and linter.
    let file = dir.join("metrics.txt");
    std::fs::write(&file, &after).unwrap();
    let out = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .expect(
            "promtool (Debian's prometheus package) must be installed: tests/run.sh installs it",
        );
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    drop(rig);
}

#[test]
fn check_config_names_the_line_and_the_reason() {
    let dir = TempDir::new("check-config");
    let good = dir.join("good.toml");
    std::fs::write(&good, "[server]\nlisten = \"127.0.0.1:8080\"\n\n[[stream]]\nname = \"cam\"\nsource = \"udp://239.1.1.1:5000\"\n").unwrap();
    let out = Command::new(BINARY)
        .args(["check-config", good.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(": ok: listen 127.0.0.1:8080")
            && stdout.contains("cam <- udp://239.1.1.1:5000"),
        "{stdout}"
    );

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[[stream]]\nname = \"cam\"\nsource = \"udp://239.1.1.1:5000\"\n\n[api]\nlisten = \"everywhere\"\n").unwrap();
    let out = Command::new(BINARY)
        .args(["check-config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(
            "bad.toml: line 6: api listen \"everywhere\" is not an address:port or \"off\""
        ),
        "{stderr}"
    );
}
