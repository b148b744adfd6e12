//! RTMP ingest, end to end: ffmpeg publishes H.264 with B-frames and AAC as FLV over RTMP
//! (by stream name with `?key=`, then by the key alone as OBS does, replacing itself), and
//! the stream's HLS and progressive TS are read back, probed and decoded at `-v error`;
//! publishers with a wrong key, an unknown stream and an unknown application are refused in
//! the RTMP handshake, counted and logged; `PUSH_REWRITE` sends a publisher to another stream
//! or refuses it; `max_pushes` bounds the connections, and one that does not publish is
//! closed after 10 s.
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
    plays_640x360_h264_and_aac(&server, "cam");
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
    wait_listening(port);
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

#[test]
fn push_rewrite_and_the_connection_cap_decide_rtmp_publishers() {
    let port = free_port();
    let dir = TempDir::new("rtmp-rewrite");
    // The handler sends `studio` to `cam` and refuses everything else.
    let script = dir.0.join("rewrite.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nread url; read addr; read stream\necho \"$url $addr $stream\" >> \"$(dirname \"$0\")/asked\"\nif [ \"$stream\" = studio ]; then echo cam; else echo; fi\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = format!(
        "[server]\nmax_pushes = 2\n\n\
         [[stream]]\nname = \"cam\"\nsource = \"rtmp://127.0.0.1:{port}/live\"\nsegment_duration = 1\n\n\
         [[stream]]\nname = \"studio\"\nsource = \"rtmp://127.0.0.1:{port}/live\"\n\n\
         [[stream]]\nname = \"other\"\nsource = \"rtmp://127.0.0.1:{port}/live\"\n\n\
         [[trigger]]\non = \"PUSH_REWRITE\"\nhandler = \"{}\"\n",
        script.display()
    );
    let path = dir.0.join("shardcast.toml");
    std::fs::write(&path, config).unwrap();
    let api = free_api_addr();
    let server = start_with_api(&path, &dir.0, api);
    let token = api_token(&dir.0);
    wait_listening(port);
    // Refused by the trigger.
    let (ok, said, _) = publish_once(&format!("rtmp://127.0.0.1:{port}/live/other"));
    assert!(!ok && !said.is_empty(), "published past PUSH_REWRITE");
    assert_eq!(status(api, &token, "other")["input"]["refused"], 1);
    // Renamed: a publish to `studio` feeds `cam`.
    let _studio = publish(&format!("rtmp://127.0.0.1:{port}/live/studio"), 30);
    wait_until(
        Duration::from_secs(15),
        || "cam never went live through PUSH_REWRITE".to_owned(),
        || fetch(server.addr, "/cam/index.m3u8", "").0 == 200,
    );
    assert_eq!(status(api, &token, "studio")["received_bytes"], 0);
    let asked = std::fs::read_to_string(dir.0.join("asked")).unwrap();
    assert!(
        asked.contains(&format!(
            "rtmp://127.0.0.1:{port}/live/studio 127.0.0.1 studio"
        )),
        "{asked}"
    );
    // max_pushes = 2: the publisher and one idle connection are open; a third connection is
    // closed at once. The idle one is closed after 10 s without publishing; then one fits.
    let mut idle = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    wait_until(
        Duration::from_secs(5),
        || "the idle connection was not taken".to_owned(),
        || metrics(api, &token).contains("shardcast_rtmp_connections 2"),
    );
    let mut third = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        std::io::Read::read(&mut third, &mut buf).unwrap_or(0),
        0,
        "the third connection was kept"
    );
    idle.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let started = Instant::now();
    assert_eq!(std::io::Read::read(&mut idle, &mut buf).unwrap_or(0), 0);
    let held = started.elapsed();
    assert!(
        held > Duration::from_secs(8) && held < Duration::from_secs(12),
        "closed after {held:?}"
    );
    // The idle connection's socket closes a moment before its task leaves the open count.
    for line in [
        "shardcast_rtmp_refused_total{reason=\"busy\"} 1",
        "shardcast_rtmp_refused_total{reason=\"no_publish\"} 1",
        "shardcast_rtmp_connections 1",
    ] {
        wait_until(
            Duration::from_secs(2),
            || format!("{line} in\n{}", metrics(api, &token)),
            || metrics(api, &token).contains(line),
        );
    }
    let (status, log) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "{log}");
}
