//! RTMP ingest, end to end: ffmpeg publishes H.264 with B-frames and AAC as FLV over RTMP
//! (by stream name with `?key=`, then by the key alone as OBS does, replacing itself), and
//! the stream's HLS and progressive TS are read back, probed and decoded at `-v error`;
//! publishers with a wrong key, an unknown stream and an unknown application are refused in
//! the RTMP handshake, counted and logged.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod support;

use nix::sys::signal::Signal;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// ffmpeg publishing 640x360 H.264 (two B-frames, a keyframe a second) and AAC over RTMP to
/// `url` for `seconds`, in real time.
fn publish(url: &str, seconds: u32) -> KillOnDrop {
    KillOnDrop(
        Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-re", "-f", "lavfi", "-i"])
            .arg("testsrc2=size=640x360:rate=25")
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
            .args(["-t", &seconds.to_string()])
            .args([
                "-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-bf", "2",
            ])
            .args([
                "-pix_fmt", "yuv420p", "-b:v", "1M", "-c:a", "aac", "-b:a", "96k",
            ])
            .args(["-f", "flv", url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ffmpeg must be installed (the test command installs it)"),
    )
}

/// ffmpeg publishing 2 s to `url`: whether it succeeded, and what it said.
fn publish_once(url: &str) -> (bool, String, Duration) {
    let started = Instant::now();
    let out = Command::new("timeout")
        .args([
            "20", "ffmpeg", "-nostdin", "-v", "error", "-re", "-f", "lavfi", "-i",
        ])
        .arg("testsrc2=size=320x180:rate=25")
        .args([
            "-t",
            "2",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-f",
            "flv",
            url,
        ])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started.elapsed(),
    )
}

fn metrics(api: std::net::SocketAddr, token: &str) -> String {
    let (_, _, body) = fetch(
        api,
        "/metrics",
        &format!("Authorization: Bearer {token}\r\n"),
    );
    String::from_utf8_lossy(&body).into_owned()
}

#[test]
fn an_encoder_publishes_over_rtmp_and_its_viewers_stay_through_a_new_publisher() {
    let port = free_port();
    let (server, api, token, _dir) = start_configured(
        "rtmp",
        &format!(
            "[[stream]]\nname = \"cam\"\nsource = \"rtmp://127.0.0.1:{port}/live?key=s3cret\"\nsegment_duration = 1\n\n\
             [[stream]]\nname = \"other\"\nsource = \"rtmp://127.0.0.1:{port}/live\"\n"
        ),
    );
    let first = publish(&format!("rtmp://127.0.0.1:{port}/live/cam?key=s3cret"), 8);
    wait_until(
        Duration::from_secs(15),
        || "cam never went live".to_owned(),
        || fetch(server.addr, "/cam/index.m3u8", "").0 == 200,
    );
    // A progressive viewer from here to past the second publisher's start.
    let addr = server.addr;
    let viewer = std::thread::spawn(move || capture(addr, "/cam.ts", 10.0));
    let url = server.url("/cam/index.m3u8");
    let probe = probe_streams(&url);
    assert!(
        probe.contains("h264,640,360,") && probe.contains("aac"),
        "{probe}"
    );
    let (decoded, said) = decode(&url, 3);
    assert!(decoded && said.trim().is_empty(), "ffmpeg said: {said}");
    let input = &status(api, &token, "cam")["input"];
    assert_eq!(
        (&input["kind"], &input["connected"]),
        (&"rtmp".into(), &true.into()),
        "{input}"
    );
    // The encoder is killed mid-stream and another publishes with the key alone (the OBS
    // way): one discontinuity, the viewer stays.
    drop(first);
    std::thread::sleep(Duration::from_millis(500));
    let _second = publish(&format!("rtmp://127.0.0.1:{port}/live/s3cret"), 12);
    wait_until(
        Duration::from_secs(10),
        || "no discontinuity after the new publisher".to_owned(),
        || discontinuities(&server, "cam") > 0,
    );
    assert_eq!(discontinuities(&server, "cam"), 1);
    let body = viewer.join().unwrap();
    let pictures = pictures(&body);
    assert!(pictures >= 150, "{pictures} pictures in 10 s");
    let (decoded, said) = decode(&url, 3);
    assert!(decoded && said.trim().is_empty(), "ffmpeg said: {said}");
    let input = &status(api, &token, "cam")["input"];
    assert_eq!(
        (&input["connections"], &input["refused"]),
        (&2.into(), &0.into()),
        "{input}"
    );
    let (status, log) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "{log}");
    assert!(log.contains("an RTMP publisher from 127.0.0.1"), "{log}");
}

#[test]
fn wrong_keys_unknown_streams_and_applications_are_refused_in_the_handshake() {
    let port = free_port();
    let (server, api, token, _dir) = start_configured(
        "rtmp-refusals",
        &format!(
            "[[stream]]\nname = \"cam\"\nsource = \"rtmp://127.0.0.1:{port}/live?key=s3cret\"\n"
        ),
    );
    std::thread::sleep(Duration::from_millis(500));
    for (path, what) in [
        ("live/cam?key=wrong", "wrong key"),
        ("live/cam", "no key"),
        ("live/nobody", "unknown stream"),
        ("studio/cam?key=s3cret", "unknown application"),
    ] {
        let (ok, said, took) = publish_once(&format!("rtmp://127.0.0.1:{port}/{path}"));
        assert!(!ok, "{what}: published");
        assert!(
            took < Duration::from_secs(5),
            "{what}: refused after {took:?}"
        );
        assert!(!said.is_empty(), "{what}: ffmpeg said nothing");
    }
    let input = &status(api, &token, "cam")["input"];
    assert_eq!(
        (&input["refused"], &input["connections"]),
        (&2.into(), &0.into()),
        "{input}"
    );
    assert!(
        input["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("wrong or missing key"),
        "{input}"
    );
    let metrics = metrics(api, &token);
    for line in [
        "shardcast_rtmp_refused_total{reason=\"no_stream\"} 1",
        "shardcast_rtmp_refused_total{reason=\"no_app\"} 1",
        "shardcast_rtmp_connections 0",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    let (status, log) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "{log}");
    // Logged once for the stream's two refusals.
    assert_eq!(log.matches("refused an RTMP publisher").count(), 1, "{log}");
}
