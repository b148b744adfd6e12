//! Token access control against a test backend (a small HTTP server run by the test): 200
//! lets the viewer in with the backend's headers on its responses, 403 gives the viewer 401,
//! a slow backend and a down one give 503 (fail closed) or let the viewer in (fail open), a
//! cached allow makes no second backend call within the TTL, and an HLS player (ffmpeg) is
//! one session across its playlist and segment requests.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod support;

use serde_json::Value;
use std::time::{Duration, Instant};
use support::*;

#[test]
fn the_backend_decides_who_watches() {
    let backend = Backend::start(|r| {
        let body: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
        let none = Vec::new;
        match body["token"].as_str().unwrap_or("") {
            "good" => (
                200,
                vec![("X-Viewer".into(), "good-viewer".into())],
                String::new(),
                Duration::ZERO,
            ),
            "slow" => (200, none(), String::new(), Duration::from_secs(3)),
            "broken" => (500, none(), String::new(), Duration::ZERO),
            _ => (403, none(), String::new(), Duration::ZERO),
        }
    });
    let down = free_port(); // nothing listens there
    let dir = TempDir::new("access");
    let config = dir.join("shardcast.toml");
    let stream = |name: &str, access: &str| {
        format!("[[stream]]\nname = \"{name}\"\nsource = \"demo:\"\nsegment_duration = 1\naccess = {{ {access} }}\n\n")
    };
    std::fs::write(
        &config,
        format!(
            "{}{}{}",
            stream(
                "paid",
                &format!(
                    "url = \"http://{}/check\", ttl = 30, timeout = 1",
                    backend.addr
                )
            ),
            stream("closed", &format!("url = \"http://127.0.0.1:{down}/\"")),
            stream(
                "open",
                &format!("url = \"http://127.0.0.1:{down}/\", on_error = \"allow\"")
            ),
        ),
    )
    .unwrap();
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let get = |path: &str| fetch(server.addr, path, "User-Agent: access-test\r\n");
    // The streams segment before anyone may watch them: wait on the fail-open one.
    let deadline = Instant::now() + Duration::from_secs(15);
    while get("/open/index.m3u8").0 != 200 {
        assert!(Instant::now() < deadline, "the demo never segmented");
        std::thread::sleep(Duration::from_millis(200));
    }
    let calls = |token: &str| {
        backend
            .received()
            .iter()
            .filter(|r| serde_json::from_str::<Value>(&r.body).unwrap()["token"] == token)
            .count()
    };

    // 200: in, with the backend's header; the token is in the playlist's URIs.
    let (status, head, body) = get("/paid/index.m3u8?token=good");
    assert_eq!(status, 200, "{head}");
    assert_eq!(header(&head, "x-viewer"), Some("good-viewer"), "{head}");
    let playlist = String::from_utf8(body).unwrap();
    let segment = playlist
        .lines()
        .find(|l| l.ends_with(".ts?token=good"))
        .unwrap_or_else(|| panic!("{playlist}"));
    let (status, head, body) = get(&format!("/paid/{segment}"));
    assert_eq!(status, 200, "{head}");
    assert_eq!(header(&head, "x-viewer"), Some("good-viewer"));
    assert!(body.len() > 10_000);
    let request = &backend.received()[0];
    let asked: Value = serde_json::from_str(&request.body).unwrap();
    assert_eq!(request.path, "/check");
    assert_eq!(
        request.header("content-type"),
        Some("application/json"),
        "{request:?}"
    );
    assert_eq!(asked["stream"], "paid");
    assert_eq!(asked["ip"], "127.0.0.1");
    assert_eq!(asked["protocol"], "hls");
    assert_eq!(asked["user_agent"], "access-test");
    assert_eq!(asked["session"].as_str().unwrap().len(), 16);
    assert_eq!(asked["url"], "/paid/index.m3u8?token=good");

    // A progressive viewer with the token (a session of its own: another protocol).
    let ts = capture(server.addr, "/paid.ts?token=good", 1.5);
    assert!(ts.len() > 20 * 188);
    assert_eq!(calls("good"), 2, "one call per session");

    // An HLS player: one session, already decided: no call at all.
    let url = format!("http://{}/paid/index.m3u8?token=good", server.addr);
    let (ok, out) = ffmpeg_play(&url, 3, "access-test");
    assert!(ok, "{out}");
    assert_eq!(calls("good"), 2, "a cached allow was asked again");

    // 403 from the backend: 401 for the viewer, segments included.
    let (status, head, _) = get("/paid/index.m3u8?token=bad");
    assert_eq!(status, 401, "{head}");
    assert!(header(&head, "www-authenticate").is_some());
    assert_eq!(
        get(&format!("/paid/{}", segment.replace("good", "bad"))).0,
        401
    );
    assert_eq!(get("/paid/index.m3u8").0, 401, "no token");
    assert_eq!(calls("bad"), 1);

    // Slow and broken: fail closed (503) after the timeout, not later.
    let started = Instant::now();
    assert_eq!(get("/paid/index.m3u8?token=slow").0, 503);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_millis(2500),
        "{waited:?}"
    );
    assert_eq!(get("/paid.ts?token=broken").0, 503);
    // Down: closed or open as configured.
    assert_eq!(get("/closed/index.m3u8?token=good").0, 503);
    assert_eq!(get("/open/index.m3u8?token=any").0, 200);
    // Pages are not gated.
    assert_eq!(get("/paid.html").0, 200);
    assert_eq!(get("/paid/info.json").0, 200);
}
