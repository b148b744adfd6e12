//! SRT ingest, end to end, against Debian's ffmpeg and srt-live-transmit (both on libsrt):
//! encoders call the server's listener (encrypted and not, by plain stream id and by the
//! `#!::r=NAME,m=publish` form, one replacing another), the server calls encoders that
//! listen, callers with a wrong or missing passphrase, an unknown stream id or a request to
//! play are refused in the handshake, and SRT carries a stream through a path that loses 2%
//! each way where plain UDP through the same path breaks.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod support;

use nix::sys::signal::Signal;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

const PASSPHRASE: &str = "correct-horse-battery";

/// A UDP port nothing uses now.
fn free_udp_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port()
}

/// ffmpeg sending 640x360 H.264 and AAC as TS to `url` (srt:// or udp://) for `seconds`, in
/// real time; `extra` goes before the output (`-srt_streamid …`).
fn send(url: &str, seconds: u32, extra: &[&str]) -> KillOnDrop {
    KillOnDrop(
        Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-re", "-f", "lavfi", "-i"])
            .arg("testsrc2=size=640x360:rate=25")
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args(["-t", &seconds.to_string()])
            .args(["-c:v", "libx264", "-preset", "veryfast", "-g", "25"])
            .args([
                "-pix_fmt", "yuv420p", "-b:v", "1M", "-c:a", "aac", "-b:a", "96k",
            ])
            .args(extra)
            .args(["-f", "mpegts", url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ffmpeg must be installed (the test command installs it)"),
    )
}

/// ffmpeg calling `url` for 2 s: whether it got through, what it said, and how long it took.
fn call_once(url: &str, extra: &[&str]) -> (bool, String, Duration) {
    let started = Instant::now();
    let out = Command::new("timeout")
        .args([
            "20", "ffmpeg", "-nostdin", "-v", "error", "-re", "-f", "lavfi",
        ])
        .args(["-i", "testsrc2=size=320x180:rate=25", "-t", "2"])
        .args(["-c:v", "libx264", "-preset", "ultrafast"])
        .args(extra)
        .args(["-f", "mpegts", url])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started.elapsed(),
    )
}

/// srt-live-transmit relaying TS from UDP port `from` to `to` (an srt:// URL), with ffmpeg
/// feeding that port for `seconds`.
fn via_srt_live_transmit(from: u16, to: &str, seconds: u32) -> (KillOnDrop, KillOnDrop) {
    let relay = KillOnDrop(
        Command::new("srt-live-transmit")
            .args(["-q", &format!("udp://127.0.0.1:{from}"), to])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "srt-live-transmit must be installed (srt-tools; the test command installs it)",
            ),
    );
    wait_udp_bound(from);
    let feed = send(
        &format!("udp://127.0.0.1:{from}?pkt_size=1316"),
        seconds,
        &[],
    );
    (relay, feed)
}

fn live(server: &Server, stream: &str, within: Duration) {
    wait_until(
        within,
        || format!("{stream} never went live"),
        || fetch(server.addr, &format!("/{stream}/index.m3u8"), "").0 == 200,
    );
}

#[test]
fn encoders_call_over_srt_and_viewers_stay_through_a_new_caller() {
    let port = free_udp_port();
    let (server, api, token, _dir) = start_configured(
        "srt",
        &format!(
            "[[stream]]\nname = \"cam\"\nsource = \"srt://127.0.0.1:{port}?passphrase={PASSPHRASE}&latency=200\"\nsegment_duration = 1\n\n\
             [[stream]]\nname = \"open\"\nsource = \"srt://127.0.0.1:{port}\"\nsegment_duration = 1\n"
        ),
    );
    // ffmpeg, encrypted, by plain stream id; and another to the unencrypted stream.
    let first = send(
        &format!("srt://127.0.0.1:{port}?streamid=cam&passphrase={PASSPHRASE}&pkt_size=1316"),
        30,
        &[],
    );
    let _open = send(
        &format!("srt://127.0.0.1:{port}?streamid=open&pkt_size=1316"),
        30,
        &[],
    );
    live(&server, "cam", Duration::from_secs(15));
    live(&server, "open", Duration::from_secs(15));
    let addr = server.addr;
    let viewer = std::thread::spawn(move || capture(addr, "/cam.ts", 10.0));
    let (decoded, said) = decode(&server.url("/cam.ts"), 2);
    assert!(
        decoded && said.trim().is_empty(),
        "HTTP-TS: ffmpeg said: {said}"
    );
    for stream in ["cam", "open"] {
        plays_640x360_h264_and_aac(&server, stream);
    }
    let input = &status(api, &token, "cam")["input"];
    assert_eq!(
        (&input["kind"], &input["connected"]),
        (&"srt".into(), &true.into()),
        "{input}"
    );
    let srt = &input["srt"];
    assert!(srt["received_packets"].as_u64().unwrap() > 100, "{input}");
    assert_eq!(srt["latency_ms"], 200, "{input}");
    assert!(srt["rtt_ms"].as_f64().is_some(), "{input}");
    let m = metrics(api, &token);
    assert!(m.contains("shardcast_srt_connections 2"), "{m}");
    assert!(
        m.contains("shardcast_stream_srt_received_packets_total{stream=\"cam\"}"),
        "{m}"
    );

    // The encoder goes mid-stream; srt-live-transmit calls with the access-control stream
    // id: one discontinuity, the viewer stays.
    drop(first);
    std::thread::sleep(Duration::from_millis(500));
    let _second = via_srt_live_transmit(
        free_udp_port(),
        &format!("srt://127.0.0.1:{port}?streamid=#!::r=cam,m=publish&passphrase={PASSPHRASE}"),
        12,
    );
    wait_until(
        Duration::from_secs(10),
        || "no discontinuity after the new caller".to_owned(),
        || discontinuities(&server, "cam") > 0,
    );
    assert_eq!(discontinuities(&server, "cam"), 1);
    let body = viewer.join().unwrap();
    let pictures = pictures(&body);
    assert!(pictures >= 150, "{pictures} pictures in 10 s");
    // From the newest segment: the new caller's stream (its clock is not the old one's).
    let url = server.url("/cam/index.m3u8");
    let (decoded, said) = run(
        "ffmpeg",
        &[
            "-nostdin",
            "-v",
            "error",
            "-live_start_index",
            "-1",
            "-i",
            &url,
            "-t",
            "3",
            "-f",
            "null",
            "-",
        ],
    );
    assert!(decoded && said.trim().is_empty(), "ffmpeg said: {said}");
    let input = &status(api, &token, "cam")["input"];
    assert_eq!(
        (&input["connections"], &input["refused"]),
        (&2.into(), &0.into()),
        "{input}"
    );
    let (status, log) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "{log}");
    assert!(log.contains("an SRT connection with 127.0.0.1"), "{log}");
    assert!(
        !log.contains(PASSPHRASE),
        "the passphrase is in the log:\n{log}"
    );
}

#[test]
fn wrong_passphrases_unknown_streams_and_players_are_refused_in_the_handshake() {
    let port = free_udp_port();
    let (server, api, token, _dir) = start_configured(
        "srt-refusals",
        &format!(
            "[[stream]]\nname = \"cam\"\nsource = \"srt://127.0.0.1:{port}?passphrase={PASSPHRASE}\"\n\n\
             [[stream]]\nname = \"open\"\nsource = \"srt://127.0.0.1:{port}?allow=10.0.0.0/8\"\n"
        ),
    );
    wait_srt_listening(&server, port);
    let base = format!("srt://127.0.0.1:{port}");
    for (url, extra, what) in [
        (
            format!("{base}?streamid=cam&passphrase=wrong-horse-battery"),
            vec![],
            "wrong passphrase",
        ),
        (format!("{base}?streamid=cam"), vec![], "no passphrase"),
        (format!("{base}?streamid=nobody"), vec![], "unknown stream"),
        (base.clone(), vec![], "no stream id with two streams"),
        (
            base.clone(),
            vec!["-srt_streamid", "#!::r=cam,m=request"],
            "asks to play",
        ),
        (format!("{base}?streamid=open"), vec![], "not in allow="),
    ] {
        let (ok, said, took) = call_once(&url, &extra);
        assert!(!ok, "{what}: got through");
        assert!(
            took < Duration::from_secs(5),
            "{what}: refused after {took:?}"
        );
        assert!(!said.is_empty(), "{what}: ffmpeg said nothing");
    }
    // libsrt's own refusals (the passphrase) are counted at the next look, within a second.
    wait_until(
        Duration::from_secs(3),
        || "the passphrase refusals were not counted".to_owned(),
        || status(api, &token, "cam")["input"]["refused"] == 2,
    );
    let input = &status(api, &token, "cam")["input"];
    assert_eq!(input["connections"], 0, "{input}");
    assert!(
        input["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("wrong or missing passphrase"),
        "{input}"
    );
    assert_eq!(status(api, &token, "open")["input"]["refused"], 1);
    let m = metrics(api, &token);
    for line in [
        "shardcast_srt_refused_total{reason=\"no_stream\"} 2",
        "shardcast_srt_refused_total{reason=\"mode\"} 1",
        "shardcast_srt_connections 0",
    ] {
        assert!(m.contains(line), "{line} in\n{m}");
    }
    let (status, log) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "{log}");
    // Logged once for the stream's two refusals.
    assert_eq!(
        log.matches("refused an SRT caller from").count(),
        2,
        "{log}"
    );
    assert_eq!(
        log.matches("wrong or missing passphrase").count(),
        1,
        "{log}"
    );
}

#[test]
fn the_server_calls_encoders_that_listen() {
    let (ffmpeg_port, slt_port) = (free_udp_port(), free_udp_port());
    // ffmpeg listens, encrypted; srt-live-transmit listens, not encrypted, fed over UDP.
    let _ffmpeg = send(
        &format!(
            "srt://127.0.0.1:{ffmpeg_port}?mode=listener&passphrase={PASSPHRASE}&pkt_size=1316"
        ),
        14,
        &[],
    );
    let _slt = via_srt_live_transmit(
        free_udp_port(),
        &format!("srt://127.0.0.1:{slt_port}?mode=listener"),
        14,
    );
    let (server, api, token, _dir) = start_configured(
        "srt-caller",
        &format!(
            "[[stream]]\nname = \"a\"\nsource = \"srt://127.0.0.1:{ffmpeg_port}?mode=caller&passphrase={PASSPHRASE}\"\nsegment_duration = 1\n\n\
             [[stream]]\nname = \"b\"\nsource = \"srt://localhost:{slt_port}?mode=caller&streamid=%23!::r=b,m=publish\"\nsegment_duration = 1\n"
        ),
    );
    for stream in ["a", "b"] {
        live(&server, stream, Duration::from_secs(15));
        plays_640x360_h264_and_aac(&server, stream);
        let input = &status(api, &token, stream)["input"];
        assert_eq!(
            (&input["kind"], &input["connected"]),
            (&"srt".into(), &true.into()),
            "{input}"
        );
    }
    let (status, log) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "{log}");
}

#[test]
fn srt_recovers_what_a_lossy_path_loses_where_plain_udp_does_not() {
    let (srt_port, udp_port) = (free_udp_port(), free_udp_port());
    let (server, api, token, _dir) = start_configured(
        "srt-loss",
        &format!(
            "[[stream]]\nname = \"srt\"\nsource = \"srt://127.0.0.1:{srt_port}?latency=1000\"\nsegment_duration = 1\n\n\
             [[stream]]\nname = \"udp\"\nsource = \"udp://127.0.0.1:{udp_port}\"\nsegment_duration = 1\n"
        ),
    );
    // The same path for both: 2% lost each way, 20 ms each way, seeded. SRT's latency is 1 s,
    // about 23 round trips: at 300 ms a retransmission lost twice over was dropped, in one run.
    let delay = Duration::from_millis(20);
    let srt_path = LossyPath::start(
        format!("127.0.0.1:{srt_port}").parse().unwrap(),
        0.02,
        delay,
        0x5EED,
    );
    let udp_path = LossyPath::start(
        format!("127.0.0.1:{udp_port}").parse().unwrap(),
        0.02,
        delay,
        0x5EED,
    );
    let seconds = 14;
    let _srt = send(
        &format!(
            "srt://127.0.0.1:{}?streamid=srt&latency=1000000&pkt_size=1316",
            srt_path.port
        ),
        seconds,
        &[],
    );
    let _udp = send(
        &format!("udp://127.0.0.1:{}?pkt_size=1316", udp_path.port),
        seconds,
        &[],
    );
    live(&server, "srt", Duration::from_secs(15));
    live(&server, "udp", Duration::from_secs(15));
    // What the SRT stream's viewers get: 8 s of its progressive output, and its segments.
    let body = capture(server.addr, "/srt.ts", 8.0);
    let breaks = continuity_breaks(&body);
    let (decoded, said) = decode(&server.url("/srt/index.m3u8"), 3);
    let (srt, udp) = (status(api, &token, "srt"), status(api, &token, "udp"));
    let (srt_counts, udp_counts) = (srt_path.counts(), udp_path.counts());
    eprintln!("SRT path {srt_counts:?}, UDP path {udp_counts:?}");
    eprintln!("SRT: {}\nUDP: {}", srt["input"], udp["continuity_errors"]);
    assert!(
        srt_counts.forward_lost > 10 && udp_counts.forward_lost > 10,
        "the path lost little"
    );
    assert_eq!(srt["continuity_errors"], 0, "{srt}");
    assert!(
        breaks.is_empty(),
        "continuity breaks in the SRT stream's output: {breaks:?}"
    );
    assert!(decoded && said.trim().is_empty(), "ffmpeg said: {said}");
    let stats = &srt["input"]["srt"];
    assert!(stats["lost_packets"].as_u64().unwrap() > 10, "{stats}");
    assert!(
        stats["retransmitted_packets"].as_u64().unwrap() > 10,
        "{stats}"
    );
    assert_eq!(stats["dropped_packets"], 0, "{stats}");
    let udp_errors = udp["continuity_errors"].as_u64().unwrap();
    assert!(
        udp_errors > 20,
        "plain UDP through the same path: {udp_errors} continuity errors"
    );
    let (status, log) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "{log}");
}

#[test]
fn callers_past_max_pushes_are_refused_in_the_handshake() {
    let port = free_udp_port();
    let (server, api, token, _dir) = start_configured(
        "srt-cap",
        &format!(
            "[server]\nmax_pushes = 1\n\n\
             [[stream]]\nname = \"a\"\nsource = \"srt://127.0.0.1:{port}\"\nsegment_duration = 1\n\n\
             [[stream]]\nname = \"b\"\nsource = \"srt://127.0.0.1:{port}\"\n"
        ),
    );
    let _a = send(
        &format!("srt://127.0.0.1:{port}?streamid=a&pkt_size=1316"),
        20,
        &[],
    );
    live(&server, "a", Duration::from_secs(15));
    let (ok, said, took) = call_once(&format!("srt://127.0.0.1:{port}?streamid=b"), &[]);
    assert!(!ok && !said.is_empty(), "a second caller got through");
    assert!(took < Duration::from_secs(5), "refused after {took:?}");
    let m = metrics(api, &token);
    for line in [
        "shardcast_srt_refused_total{reason=\"busy\"} 1",
        "shardcast_srt_connections 1",
    ] {
        assert!(m.contains(line), "{line} in\n{m}");
    }
    assert_eq!(status(api, &token, "a")["input"]["connected"], true);
    let (status, log) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "{log}");
}
