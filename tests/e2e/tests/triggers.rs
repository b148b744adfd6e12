//! Triggers against a running server, with real handlers: a webhook (a small HTTP server run
//! by the test) and an executable (a shell script). The payloads are checked line by line;
//! USER_NEW refuses a viewer (403), STREAM_SOURCE rewrites where the stream comes from,
//! STREAM_ADD vetoes an API edit, STREAM_BUFFER reports the source going DRY and RECOVERing
//! when ffmpeg is stopped and started again, a dead webhook is counted as failing while the
//! server carries on, and the counts reach /metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod support;

use std::time::{Duration, Instant};
use support::*;

/// The (trigger, payload lines) the webhook got, in order.
fn events(hook: &Backend) -> Vec<(String, Vec<String>)> {
    hook.received()
        .iter()
        .map(|r| {
            (
                r.header("x-trigger").unwrap_or("").to_owned(),
                r.body.lines().map(str::to_owned).collect(),
            )
        })
        .collect()
}

fn wait_for(
    hook: &Backend,
    what: &str,
    found: impl Fn(&(String, Vec<String>)) -> bool,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    while !events(hook).iter().any(&found) {
        assert!(
            Instant::now() < deadline,
            "no {what} in {:#?}",
            events(hook)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn triggers_fire_with_their_payloads_and_their_answers_count() {
    let hook = Backend::start(|r| {
        let answer = match r.header("x-trigger") {
            // Refuse the viewer whose request URL carries token=deny (line 5 of the payload).
            Some("USER_NEW")
                if r.body
                    .lines()
                    .nth(4)
                    .is_some_and(|u| u.contains("token=deny")) =>
            {
                "false"
            }
            _ => "true",
        };
        (200, Vec::new(), answer.into(), Duration::ZERO)
    });
    let dir = TempDir::new("triggers");
    let (configured, real) = (free_port(), free_port());
    let script = dir.join("hook.sh");
    let log = dir.join("exec.log");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\npayload=$(cat)\nprintf '%s\\n%s\\n--\\n' \"$1\" \"$payload\" >> {log}\ncase \"$1\" in\n  STREAM_SOURCE) echo udp://127.0.0.1:{real} ;;\n  STREAM_ADD) case \"$payload\" in forbidden*) echo false ;; *) echo true ;; esac ;;\nesac\n",
            log = log.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dead = free_port();
    let url = format!("http://{}/hook", hook.addr);
    let trigger = |on: &str, handler: &str, extra: &str| {
        format!("[[trigger]]\non = \"{on}\"\nhandler = \"{handler}\"\n{extra}\n")
    };
    let script_path = script.display().to_string();
    let config = dir.join("shardcast.toml");
    std::fs::write(
        &config,
        [
            "[server]\nsession_timeout = 2\n\n".to_owned(),
            format!("[[stream]]\nname = \"cam\"\nsource = \"udp://127.0.0.1:{configured}\"\nsegment_duration = 1\n\n"),
            trigger("STREAM_SOURCE", &script_path, "streams = [\"cam\"]"),
            trigger("STREAM_ADD", &script_path, ""),
            trigger("USER_NEW", &url, "streams = [\"cam\"]\ntimeout = 2"),
            trigger("USER_END", &url, ""),
            trigger("STREAM_BUFFER", &url, ""),
            trigger("STREAM_READY", &url, ""),
            trigger("SYSTEM_START", &url, ""),
            trigger("LIVE_TRACK_LIST", &url, ""),
            trigger("INPUT_ABORT", &url, ""),
            // Not an address of this machine: its socket cannot be opened.
            "[[stream]]\nname = \"broken\"\nsource = \"udp://192.0.2.1:5000\"\n\n".to_owned(),
            trigger("STREAM_BUFFER", &format!("http://127.0.0.1:{dead}/gone"), ""),
        ]
        .concat(),
    )
    .unwrap();
    let api = free_api_addr();
    let server = start_with_api(&config, &dir.join("state"), api);
    wait_for(
        &hook,
        "SYSTEM_START",
        |(t, _)| t == "SYSTEM_START",
        Duration::from_secs(10),
    );
    wait_for(
        &hook,
        "INPUT_ABORT",
        |(t, l)| {
            t == "INPUT_ABORT"
                && l[0] == "broken"
                && l[1].starts_with("cannot open the ingest socket on 192.0.2.1:5000")
        },
        Duration::from_secs(5),
    );

    // STREAM_SOURCE: the script moved the source to the port ffmpeg sends to.
    let source = format!("udp://127.0.0.1:{real}?pkt_size=1316");
    let ffmpeg = ffmpeg_udp_source(&source, 120);
    wait_for(
        &hook,
        "STREAM_BUFFER FULL",
        |(t, l)| t == "STREAM_BUFFER" && l == &["cam", "FULL"],
        Duration::from_secs(20),
    );
    wait_for(
        &hook,
        "STREAM_READY",
        |(t, l)| t == "STREAM_READY" && l == &["cam", "udp"],
        Duration::from_secs(2),
    );
    wait_for(
        &hook,
        "LIVE_TRACK_LIST",
        |(t, l)| t == "LIVE_TRACK_LIST" && l[0] == "cam" && l[1].contains("avc1."),
        Duration::from_secs(2),
    );
    let exec = std::fs::read_to_string(&log).unwrap();
    assert!(
        exec.contains(&format!(
            "STREAM_SOURCE\ncam\nudp://127.0.0.1:{configured}\n--"
        )),
        "{exec}"
    );
    let token = api_token(&dir.join("state"));
    let token = token.as_str();
    let (_, status) = api_call(api, "GET", "/api/v1/streams/cam", token, None);
    assert_eq!(
        status["source"],
        format!("udp://127.0.0.1:{real}"),
        "{status}"
    );
    assert_eq!(
        status["config"]["source"],
        format!("udp://127.0.0.1:{configured}")
    );

    // USER_NEW: allowed and refused, with MistServer's payload.
    let (status, head, _) = fetch(server.addr, "/cam/index.m3u8?token=ok", "");
    assert_eq!(status, 200, "{head}");
    assert_eq!(fetch(server.addr, "/cam/index.m3u8?token=deny", "").0, 403);
    assert_eq!(fetch(server.addr, "/cam.ts?token=deny", "").0, 403);
    let user_new: Vec<Vec<String>> = events(&hook)
        .into_iter()
        .filter(|(t, _)| t == "USER_NEW")
        .map(|(_, l)| l)
        .collect();
    let ok = user_new.iter().find(|l| l[4].contains("token=ok")).unwrap();
    assert_eq!(
        ok[..5],
        ["cam", "127.0.0.1", "0", "HLS", "/cam/index.m3u8?token=ok"]
    );
    assert_eq!(ok[5].len(), 16, "session id: {ok:?}");
    assert!(user_new
        .iter()
        .any(|l| l[3] == "HTTPTS" && l[4] == "/cam.ts?token=deny"));

    // STREAM_ADD vetoes an API edit; another passes.
    let put = |name: &str| {
        let path = format!("/api/v1/streams/{name}");
        api_call(api, "PUT", &path, token, Some("{\"source\": \"demo:\"}")).0
    };
    assert_eq!(put("forbidden"), 403);
    assert_eq!(put("allowed"), 201);
    assert!(!std::fs::read_to_string(&config)
        .unwrap()
        .contains("forbidden"));

    // STREAM_BUFFER: DRY when the source stops, RECOVER when it is back.
    drop(ffmpeg);
    wait_for(
        &hook,
        "STREAM_BUFFER DRY",
        |(t, l)| t == "STREAM_BUFFER" && l == &["cam", "DRY"],
        Duration::from_secs(10),
    );
    let _ffmpeg = ffmpeg_udp_source(&source, 120);
    wait_for(
        &hook,
        "STREAM_BUFFER RECOVER",
        |(t, l)| t == "STREAM_BUFFER" && l == &["cam", "RECOVER"],
        Duration::from_secs(20),
    );

    // USER_END when the quiet session ends (session_timeout = 2).
    wait_for(
        &hook,
        "USER_END",
        |(t, l)| t == "USER_END" && l.len() == 8 && l[1] == "cam" && l[2] == "HLS" && l[7] == "ok",
        Duration::from_secs(15),
    );

    // The dead webhook: counted as failing (after its retries), nothing else disturbed.
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let (_, _, m) = fetch(api, "/metrics", "");
        let m = String::from_utf8(m).unwrap();
        let failures = m
            .lines()
            .find_map(|l| {
                l.strip_prefix("shardcast_trigger_failures_total{trigger=\"STREAM_BUFFER\"} ")
            })
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        if failures >= 3 {
            break m;
        }
        assert!(Instant::now() < deadline, "{m}");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(
        metrics.contains("shardcast_trigger_calls_total{trigger=\"USER_NEW\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("shardcast_trigger_latency_seconds_count{trigger=\"USER_NEW\"}"));
    assert_eq!(fetch(server.addr, "/cam/index.m3u8?token=ok", "").0, 200);
}

#[test]
fn default_stream_and_play_rewrite_send_viewers_elsewhere() {
    let hook = Backend::start(|r| {
        let answer = match r.header("x-trigger") {
            Some("DEFAULT_STREAM") => "backup",
            Some("PLAY_REWRITE") if r.body.starts_with("old\n") => "main",
            _ => "",
        };
        (200, Vec::new(), answer.into(), Duration::ZERO)
    });
    let dir = TempDir::new("rewrites");
    let config = dir.join("shardcast.toml");
    let url = format!("http://{}/hook", hook.addr);
    let mut text = String::new();
    for name in ["main", "backup", "old"] {
        text.push_str(&format!(
            "[[stream]]\nname = \"{name}\"\nsource = \"demo:\"\nsegment_duration = 1\n\n"
        ));
    }
    text.push_str(&format!("[[trigger]]\non = \"DEFAULT_STREAM\"\nhandler = \"{url}\"\n\n[[trigger]]\non = \"PLAY_REWRITE\"\nhandler = \"{url}\"\nstreams = [\"old\"]\n"));
    std::fs::write(&config, text).unwrap();
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while fetch(server.addr, "/backup/index.m3u8", "").0 != 200 {
        assert!(Instant::now() < deadline, "the demo never segmented");
        std::thread::sleep(Duration::from_millis(200));
    }

    let (status, head, _) = fetch(server.addr, "/missing/index.m3u8?token=t", "");
    assert_eq!(status, 302, "{head}");
    assert_eq!(
        header(&head, "location"),
        Some("http://test/backup/index.m3u8?token=t")
    );
    let (status, head, _) = fetch(server.addr, "/old.ts", "");
    assert_eq!(status, 302, "{head}");
    assert_eq!(header(&head, "location"), Some("http://test/main.ts"));
    assert_eq!(
        fetch(server.addr, "/main/index.m3u8", "").0,
        200,
        "not rewritten"
    );
    let default = hook
        .received()
        .into_iter()
        .find(|r| r.header("x-trigger") == Some("DEFAULT_STREAM"))
        .unwrap();
    assert_eq!(
        default.body,
        "missing\n127.0.0.1\nHLS\n/missing/index.m3u8?token=t\n"
    );

    // A player follows the redirect and plays the other stream.
    let url = format!("http://{}/missing/index.m3u8", server.addr);
    let (ok, out) = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
            &url,
        ],
    );
    assert!(ok && out.contains("h264"), "{out}");
}
