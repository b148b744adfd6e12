//! Sources, end to end: ffmpeg as an encoder that connects to the server over TCP (and
//! reconnects), as a TCP server the server connects to, as an encoder pushing over HTTP PUT
//! and POST (a wrong key, garbage, PUSH_REWRITE, max_pushes), as an encoder process the server
//! runs (restarted, its process group killed); an encoder from outside `allow=` refused; pulls
//! from other shardcasts (two edges through their origin's restart, an origin answering 404)
//! and of ffmpeg's HLS served by nginx; IPv6 unicast, and IPv6 multicast from a network
//! namespace. Read back as HTTP-TS and HLS, checked with ffprobe, decoded by ffmpeg at
//! `-v error`, and through the API. A UDP source read on the ingest tick while nothing waits
//! on it byte by byte, and as each datagram comes once a progressive viewer does.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod support;

use nix::sys::signal::Signal;
use std::io::Write;
use std::time::{Duration, Instant};
use support::*;

/// Wait until something listens on TCP `port` (read from /proc: a probe connection would
/// count as an encoder).
fn wait_listening(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    let wanted = format!(":{port:04X} ");
    loop {
        let listening = ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
            std::fs::read_to_string(table)
                .unwrap_or_default()
                .lines()
                .any(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    fields.len() > 3
                        && format!("{} ", fields[1]).ends_with(&wanted)
                        && fields[3] == "0A"
                })
        });
        if listening {
            return;
        }
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait until `stream`'s source has connected a second time, then check that its viewers get
/// pictures again.
fn connected_again_and_playing(
    server: &Server,
    api: std::net::SocketAddr,
    token: &str,
    stream: &str,
) {
    wait_until(
        Duration::from_secs(15),
        || format!("{}", status(api, token, stream)),
        || status(api, token, stream)["input"]["connections"] == 2,
    );
    let body = capture(server.addr, &format!("/{stream}.ts"), 3.0);
    assert!(pictures(&body) >= 50, "{} pictures in 3 s", pictures(&body));
}

/// Wait until `/{stream}/index.m3u8` answers 200 (the stream has sealed a segment).
fn wait_live(server: &Server, stream: &str, within: Duration) {
    wait_until(
        within,
        || format!("{stream} never went live"),
        || fetch(server.addr, &format!("/{stream}/index.m3u8"), "").0 == 200,
    );
}

/// Wait until `stream`'s playlist shows the discontinuity of a source that started again
/// (looked at while it is in the live window), and check there is exactly one.
fn one_discontinuity(server: &Server, stream: &str, what: &str) {
    wait_until(
        Duration::from_secs(8),
        || what.to_owned(),
        || discontinuities(server, stream) > 0,
    );
    assert_eq!(discontinuities(server, stream), 1);
}

/// ffprobe finds the test encoder's tracks (640x360 H.264 and AAC) at `url`.
fn assert_encoder_tracks(url: &str) {
    let probe = probe_streams(url);
    assert!(
        probe.contains("h264,640,360,") && probe.contains("aac"),
        "{probe}"
    );
}

#[test]
fn an_encoder_connects_over_tcp_and_its_viewers_stay_through_its_reconnect() {
    let port = free_port();
    let (server, api, token, _dir) = start_configured("tcp-listen", &format!("[[stream]]\nname = \"cam\"\nsource = \"tcp://127.0.0.1:{port}\"\nsegment_duration = 1\n"));
    wait_listening(port, Duration::from_secs(10));
    let url = format!("tcp://127.0.0.1:{port}");
    let first = ffmpeg_source(&url, 7, "640x360", "1M", 25);
    // A progressive viewer from the first encoder's second second to past the second's end.
    std::thread::sleep(Duration::from_secs(2));
    let addr = server.addr;
    let viewer = std::thread::spawn(move || capture(addr, "/cam.ts", 12.0));
    let input = &status(api, &token, "cam")["input"];
    assert_eq!(input["kind"], "tcp", "{input}");
    assert_eq!(input["connected"], true, "{input}");
    drop(first); // killed: the encoder goes mid-stream
    std::thread::sleep(Duration::from_millis(500));
    let _second = ffmpeg_source(&url, 9, "640x360", "1M", 25);
    // The new encoder's timestamps start over: one discontinuity in the playlist (looked at
    // while it is still in the live window).
    one_discontinuity(&server, "cam", "no discontinuity after the reconnect");
    let body = viewer.join().unwrap();
    // 12 s of viewing with a break of about a second (ffmpeg starting again): the viewer was
    // never dropped and got pictures from both encoders.
    let pictures = pictures(&body);
    assert!(pictures >= 200, "{pictures} pictures in 12 s");
    assert_encoder_tracks(&server.url("/cam/index.m3u8"));
    let input = &status(api, &token, "cam")["input"];
    assert_eq!(input["connections"], 2, "{input}");
    assert_eq!(input["refused"], 0, "{input}");
    let (status, log) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "{log}");
    assert!(log.contains("an encoder connected from 127.0.0.1"), "{log}");
}

#[test]
fn the_server_connects_to_a_tcp_source_and_connects_again_when_it_comes_back() {
    let port = free_port();
    let (server, api, token, _dir) = start_configured("tcp-connect", &format!("[[stream]]\nname = \"edge\"\nsource = \"tcp://127.0.0.1:{port}?mode=connect\"\nsegment_duration = 1\n"));
    // Nothing listens yet: the server tries, fails, waits longer each time.
    std::thread::sleep(Duration::from_millis(1500));
    let input = &status(api, &token, "edge")["input"];
    assert_eq!(input["connected"], false, "{input}");
    let failures = input["failures"].as_u64().unwrap();
    assert!((2..=5).contains(&failures), "{input}");
    // ffmpeg as a server of TS: it waits for one connection and sends to it.
    let listen = format!("tcp://127.0.0.1:{port}?listen=1");
    let origin = ffmpeg_source(&listen, 30, "640x360", "1M", 25);
    wait_live(&server, "edge", Duration::from_secs(15));
    let (decoded, said) = decode(&server.url("/edge/index.m3u8"), 6);
    assert!(decoded && said.trim().is_empty(), "{said}");
    assert_encoder_tracks(&server.url("/edge/index.m3u8"));
    assert_eq!(status(api, &token, "edge")["input"]["connected"], true);
    // The origin goes and comes back: the server connects again by itself.
    drop(origin);
    std::thread::sleep(Duration::from_millis(300));
    let _origin = ffmpeg_source(&listen, 30, "640x360", "1M", 25);
    connected_again_and_playing(&server, api, &token, "edge");
    let (status, log) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "{log}");
}

#[test]
fn an_encoder_outside_allow_is_refused_and_nothing_it_sends_is_taken() {
    let port = free_port();
    let (server, api, token, _dir) = start_configured(
        "tcp-allow",
        &format!(
            "[[stream]]\nname = \"cam\"\nsource = \"tcp://127.0.0.1:{port}?allow=192.0.2.0/24\"\n"
        ),
    );
    wait_listening(port, Duration::from_secs(10));
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    // Whatever it manages to write before the server closes it is never read.
    let packet = {
        let mut p = [0xffu8; 188];
        p[..4].copy_from_slice(&[0x47, 0x01, 0x00, 0x10]);
        p
    };
    for _ in 0..100 {
        if conn.write_all(&packet).is_err() {
            break;
        }
    }
    drop(conn);
    wait_until(
        Duration::from_secs(5),
        || format!("{}", status(api, &token, "cam")),
        || status(api, &token, "cam")["input"]["refused"] == 1,
    );
    let stream = status(api, &token, "cam");
    assert_eq!(stream["received_bytes"], 0, "{stream}");
    assert_eq!(stream["input"]["connections"], 0, "{stream}");
    let (status, log) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "{log}");
    assert!(log.contains("not in allow="), "{log}");
}

/// Processes whose command line holds `marker`, with their state letter (`Z`: a zombie).
fn processes_with(marker: &str) -> Vec<(i32, char, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !cmdline.contains(marker) {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .unwrap_or('?');
        found.push((pid, state, cmdline));
    }
    found
}

/// Kills what is left of processes holding `marker` when dropped (a failed test included).
struct KillMarked(String);

impl Drop for KillMarked {
    fn drop(&mut self) {
        for (pid, _, _) in processes_with(&self.0) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Wait until `parent` has no zombie children (reaping is asynchronous).
fn wait_reaped(parent: u32) {
    wait_until(
        Duration::from_secs(3),
        || format!("{:?}", zombie_children(parent)),
        || zombie_children(parent).is_empty(),
    );
}

/// Children of `parent` that are zombies.
fn zombie_children(parent: u32) -> Vec<String> {
    let mut zombies = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 1 && fields[0] == "Z" && fields[1] == parent.to_string() {
            zombies.push(stat.clone());
        }
    }
    zombies
}

/// An ffmpeg command line making `seconds` of 640x360 H.264 and AAC on its standard output,
/// in real time; `tone` (Hz) marks its processes.
fn ffmpeg_command(seconds: u32, tone: u32) -> String {
    format!(
        "ffmpeg -nostdin -v error -re -f lavfi -i testsrc2=size=640x360:rate=25 -f lavfi -i sine=frequency={tone}:sample_rate=48000 -t {seconds} -c:v libx264 -preset ultrafast -tune zerolatency -g 25 -pix_fmt yuv420p -b:v 1M -c:a aac -b:a 64k -f mpegts -"
    )
}

#[test]
fn an_encoder_process_is_the_source_and_is_started_again_when_it_exits() {
    let tone = 1000 + (std::process::id() % 1000);
    let marker = format!("sine=frequency={tone}:");
    let _cleanup = KillMarked(marker.clone());
    let (server, api, token, _dir) = start_configured(
        "exec",
        &format!(
            "[[stream]]\nname = \"enc\"\nsource = \"exec:{}\"\nsegment_duration = 1\n",
            ffmpeg_command(4, tone)
        ),
    );
    wait_live(&server, "enc", Duration::from_secs(10));
    assert_encoder_tracks(&server.url("/enc/index.m3u8"));
    // It exits every four seconds and is started again: a viewer watching across two
    // restarts stays connected and keeps getting pictures.
    let body = capture(server.addr, "/enc.ts", 9.0);
    assert!(
        pictures(&body) >= 150,
        "{} pictures in 9 s",
        pictures(&body)
    );
    let input = &status(api, &token, "enc")["input"];
    assert_eq!(input["kind"], "exec", "{input}");
    assert!(input["connections"].as_u64().unwrap() >= 3, "{input}");
    assert_eq!(input["failures"], 0, "{input}");
    wait_reaped(server.child.id());
    assert!(
        processes_with(&marker).len() <= 1,
        "{:?}",
        processes_with(&marker)
    );
    let (status, log) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "{log}");
    assert!(log.contains("exited (exit status: 0)"), "{log}");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        processes_with(&marker).is_empty(),
        "{:?}",
        processes_with(&marker)
    );
}

#[test]
fn deleting_an_exec_stream_kills_its_whole_process_group() {
    let tone = 2000 + (std::process::id() % 1000);
    let marker = format!("{tone}.25");
    let _cleanup = (
        KillMarked(marker.clone()),
        KillMarked(format!("sine=frequency={tone}:")),
    );
    let (server, api, token, _dir) = start_configured(
        "exec-group",
        "[[stream]]\nname = \"demo\"\nsource = \"demo:\"\n",
    );
    // A shell the operator chose to run, with a grandchild in the background (`sleep`) that
    // never writes: only killing the group ends it.
    let command = format!(
        "sh -c 'sleep {marker} & exec {}'",
        ffmpeg_command(600, tone)
    );
    let body = serde_json::json!({ "source": format!("exec:{command}") }).to_string();
    let (code, answer) = api_call(api, "PUT", "/api/v1/streams/grouped", &token, Some(&body));
    assert!(code == 201 || code == 200, "{code} {answer}");
    wait_live(&server, "grouped", Duration::from_secs(10));
    let probe = probe_streams(&server.url("/grouped/index.m3u8"));
    assert!(probe.contains("h264,640,360,"), "{probe}");
    // sh became ffmpeg (exec); the sleep it left in the background is in the same group.
    let encoder = format!("sine=frequency={tone}:");
    assert_eq!(
        processes_with(&marker).len(),
        1,
        "{:?}",
        processes_with(&marker)
    );
    assert_eq!(
        processes_with(&encoder).len(),
        1,
        "{:?}",
        processes_with(&encoder)
    );
    let (code, _) = api_call(api, "DELETE", "/api/v1/streams/grouped", &token, None);
    assert!(code == 200 || code == 204, "{code}");
    wait_until(
        Duration::from_secs(5),
        || {
            format!(
                "{:?} {:?}",
                processes_with(&marker),
                processes_with(&encoder)
            )
        },
        || processes_with(&marker).is_empty() && processes_with(&encoder).is_empty(),
    );
    wait_reaped(server.child.id());
    let (status, log) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "{log}");
}

#[test]
fn two_edges_pull_from_an_origin_and_their_viewers_stay_through_its_restart() {
    let origin = Server::start(&[]);
    let origin_addr = origin.addr.to_string();
    let edge = |name: &str| {
        start_configured(
            name,
            &format!(
                "[[stream]]\nname = \"edge\"\nsource = \"http://{origin_addr}/demo.ts\"\nsegment_duration = 1\n"
            ),
        )
    };
    let (edge1, api1, token1, _dir1) = edge("pull-edge1");
    let (edge2, api2, token2, _dir2) = edge("pull-edge2");
    for e in [&edge1, &edge2] {
        wait_live(e, "edge", Duration::from_secs(10));
    }
    let (decoded, said) = decode(&edge1.url("/edge/index.m3u8"), 6);
    assert!(decoded && said.trim().is_empty(), "{said}");
    let probe = probe_streams(&edge1.url("/edge/index.m3u8"));
    assert!(
        probe.contains("h264,256,144,") && probe.contains("aac"),
        "{probe}"
    );
    let body = capture(edge2.addr, "/edge.ts", 2.0);
    assert!(first_picture_is_keyframe(&body) && pictures(&body) >= 40);
    let input = &status(api1, &token1, "edge")["input"];
    assert_eq!(input["kind"], "http", "{input}");
    assert_eq!(
        (&input["connected"], &input["connections"]),
        (&true.into(), &1.into())
    );
    assert!(input["last_error"].is_null(), "{input}");
    // A progressive viewer on each edge, through the origin's restart.
    let viewers: Vec<_> = [edge1.addr, edge2.addr]
        .into_iter()
        .map(|addr| std::thread::spawn(move || capture(addr, "/edge.ts", 14.0)))
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    // The origin stops: each edge says so in its API, and tries again.
    let (stopped, _) = origin.stop(Signal::SIGTERM);
    assert!(stopped.success());
    wait_until(
        Duration::from_secs(10),
        || format!("{}", status(api1, &token1, "edge")),
        || !status(api1, &token1, "edge")["input"]["last_error"].is_null(),
    );
    assert_eq!(status(api2, &token2, "edge")["input"]["connected"], false);
    // It comes back at the same address: both edges pull again by themselves.
    let _origin = Server::start(&["--listen", &origin_addr]);
    for (api, token) in [(api1, &token1), (api2, &token2)] {
        wait_until(
            Duration::from_secs(10),
            || format!("{}", status(api, token, "edge")),
            || status(api, token, "edge")["input"]["connections"] == 2,
        );
    }
    // Neither viewer was dropped: each got pictures from before and after, about 14 s of
    // them less the few seconds without an origin.
    for viewer in viewers {
        let body = viewer.join().unwrap();
        let pictures = pictures(&body);
        assert!(pictures >= 200, "{pictures} pictures in 14 s");
    }
    for e in [edge1, edge2] {
        let (status, log) = e.stop(Signal::SIGTERM);
        assert!(status.success(), "{log}");
    }
}

#[test]
fn an_origin_answering_404_is_reported_and_not_hammered() {
    let origin = Server::start(&[]);
    let (edge, api, token, _dir) = start_configured(
        "pull-404",
        &format!(
            "[[stream]]\nname = \"edge\"\nsource = \"http://{}/nothing.ts\"\n",
            origin.addr
        ),
    );
    std::thread::sleep(Duration::from_secs(3));
    let input = &status(api, &token, "edge")["input"];
    // Asked at 0, 0.25, 0.75 and 1.75 s, then not before 3.75 s.
    let failures = input["failures"].as_u64().unwrap();
    assert!((3..=5).contains(&failures), "{input}");
    assert!(
        input["last_error"].as_str().unwrap().contains("404"),
        "{input}"
    );
    assert_eq!(input["connected"], false);
    let (status, log) = edge.stop(Signal::SIGTERM);
    assert!(status.success(), "{log}");
}

#[test]
fn a_pull_starts_again_when_its_origin_comes_back() {
    let port = free_port();
    let (edge, api, token, _dir) = start_configured(
        "pull-back",
        &format!(
            "[[stream]]\nname = \"edge\"\nsource = \"http://127.0.0.1:{port}/live.ts\"\nsegment_duration = 1\n"
        ),
    );
    // ffmpeg as an HTTP server of one TS body, twice on the same port.
    let origin_url = format!("http://127.0.0.1:{port}/live.ts");
    let http_origin = || {
        KillOnDrop(
            std::process::Command::new("ffmpeg")
                .args(["-nostdin", "-v", "error", "-re", "-f", "lavfi", "-i"])
                .arg("testsrc2=size=640x360:rate=25")
                .args([
                    "-t",
                    "30",
                    "-c:v",
                    "libx264",
                    "-preset",
                    "ultrafast",
                    "-g",
                    "25",
                ])
                .args(["-pix_fmt", "yuv420p", "-f", "mpegts", "-listen", "1"])
                .arg(&origin_url)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let first = http_origin();
    wait_live(&edge, "edge", Duration::from_secs(15));
    drop(first);
    std::thread::sleep(Duration::from_millis(300));
    let _second = http_origin();
    connected_again_and_playing(&edge, api, &token, "edge");
    let (status, log) = edge.stop(Signal::SIGTERM);
    assert!(status.success(), "{log}");
}

#[test]
fn readyz_follows_the_required_streams_and_healthz_the_process() {
    let port = free_port();
    let (server, _api, _token, _dir) = start_configured(
        "ready",
        &format!(
            "[[stream]]\nname = \"main\"\nsource = \"tcp://127.0.0.1:{port}\"\nsegment_duration = 1\nrequired = true\n\n[[stream]]\nname = \"spare\"\nsource = \"tcp://127.0.0.1:{}\"\n",
            free_port()
        ),
    );
    let (code, _, body) = fetch(server.addr, "/healthz", "");
    assert_eq!((code, body.as_slice()), (200, &b"ok\n"[..]));
    let (code, head, body) = fetch(server.addr, "/readyz", "");
    assert_eq!(code, 503, "{head}");
    assert_eq!(String::from_utf8_lossy(&body), "not live: main\n");
    assert_eq!(header(&head, "Cache-Control"), Some("no-store"));
    wait_listening(port, Duration::from_secs(10));
    let encoder = ffmpeg_source(&format!("tcp://127.0.0.1:{port}"), 30, "640x360", "1M", 25);
    // Ready once main is live, whatever the stream not required does.
    wait_until(
        Duration::from_secs(10),
        || "never ready".to_owned(),
        || fetch(server.addr, "/readyz", "").0 == 200,
    );
    // Its encoder gone, main goes silent, and the server is not ready (about 3 s: two target
    // durations and a second), while it still serves.
    drop(encoder);
    wait_until(
        Duration::from_secs(10),
        || "still ready with main silent".to_owned(),
        || fetch(server.addr, "/readyz", "").0 == 503,
    );
    assert_eq!(fetch(server.addr, "/healthz", "").0, 200);
    let (status, log) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "{log}");
}

#[test]
fn ipv6_in_and_out_a_udp_source_on_the_ipv6_loopback_and_viewers_on_an_ipv6_listener() {
    let udp = free_port();
    let dir = TempDir::new("ipv6");
    let config = dir.0.join("shardcast.toml");
    std::fs::write(
        &config,
        format!(
            "[[stream]]\nname = \"six\"\nsource = \"udp://[::1]:{udp}\"\nsegment_duration = 1\n"
        ),
    )
    .unwrap();
    let listen = format!("[::1]:{}", free_port());
    let server = Server::start(&["--config", config.to_str().unwrap(), "--listen", &listen]);
    let _encoder = ffmpeg_source(
        &format!("udp://[::1]:{udp}?pkt_size=1316"),
        30,
        "640x360",
        "1M",
        25,
    );
    wait_live(&server, "six", Duration::from_secs(15));
    let url = format!("http://{listen}/six/index.m3u8");
    let probe = probe_streams(&url);
    assert!(
        probe.contains("h264,640,360,") && probe.contains("aac"),
        "{probe}"
    );
    let body = capture(server.addr, "/six.ts", 2.0);
    assert!(pictures(&body) >= 30, "{} pictures in 2 s", pictures(&body));
    let (status, log) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "{log}");
}

#[test]
fn an_hls_stream_served_by_nginx_is_pulled_segment_by_segment() {
    let nginx = start_nginx(
        "types { application/vnd.apple.mpegurl m3u8; video/mp2t ts; }",
        "location / { root DIR; }",
    );
    // ffmpeg's HLS muxer: one-second segments, six listed, under a multivariant playlist.
    let _encoder = ffmpeg_live_hls(
        &nginx.dir.join("live"),
        40,
        &["-master_pl_name", "master.m3u8", "index.m3u8"],
    );
    wait_until(
        Duration::from_secs(15),
        || "ffmpeg wrote no playlist".to_owned(),
        || nginx.dir.join("live/master.m3u8").exists(),
    );
    let (edge, api, token, _dir) = start_configured(
        "hls-pull",
        &format!(
            "[[stream]]\nname = \"edge\"\nsource = \"hls+http://{}/live/master.m3u8?variant=0\"\nsegment_duration = 1\n",
            nginx.addr
        ),
    );
    wait_live(&edge, "edge", Duration::from_secs(15));
    let (decoded, said) = decode(&edge.url("/edge/index.m3u8"), 6);
    assert!(decoded && said.trim().is_empty(), "ffmpeg said: {said}");
    assert_encoder_tracks(&edge.url("/edge/index.m3u8"));
    let body = capture(edge.addr, "/edge.ts", 3.0);
    assert!(pictures(&body) >= 40, "{} pictures in 3 s", pictures(&body));
    let input = &status(api, &token, "edge")["input"];
    assert_eq!(
        (&input["kind"], &input["connected"]),
        (&"hls".into(), &true.into()),
        "{input}"
    );
    assert_eq!(input["failures"], 0, "{input}");
    let (status, log) = edge.stop(Signal::SIGTERM);
    assert!(status.success(), "{log}");
    assert!(log.contains("pulling HLS from"), "{log}");
}

/// A push as a raw request: `head` (without its end), then `body`; returns the answer's status
/// and text.
fn push_raw(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("{head}\r\n\r\n").as_bytes()).unwrap();
    // The server may answer (and close) before the body is all sent.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// `push` again while it is answered 404 (the stream is not open to pushes yet), for up to
/// 5 s.
fn until_not_404(push: impl Fn() -> (u16, String)) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (code, text) = push();
        if code != 404 || Instant::now() > deadline {
            return (code, text);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `n` transport packets of PID 0x100 (payload 0xff), continuity counted.
fn ts_packets(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 188);
    for i in 0..n {
        let mut p = [0xffu8; 188];
        p[..4].copy_from_slice(&[0x47, 0x01, 0x00, 0x10 | (i as u8 & 0x0f)]);
        out.extend_from_slice(&p);
    }
    out
}

#[test]
fn an_encoder_pushes_over_http_and_its_viewers_stay_through_a_new_push() {
    let (server, api, token, _dir) = start_configured(
        "push",
        "[[stream]]\nname = \"cam\"\nsource = \"push://?key=s3cret\"\nsegment_duration = 1\n",
    );
    let addr = server.addr;
    // Refused before anything is taken: a wrong key (403, counted), an unknown stream (404).
    let packets = ts_packets(1000);
    let guess = || {
        push_raw(
            addr,
            &format!(
                "PUT /push/cam?key=guess HTTP/1.1\r\nHost: t\r\nContent-Length: {}",
                packets.len()
            ),
            &packets,
        )
    };
    // (404 until the stream's home shard has opened it to pushes.)
    let (code, text) = until_not_404(guess);
    assert_eq!(code, 403, "{text}");
    assert!(text.contains("wrong or missing key"), "{text}");
    let (code, text) = push_raw(
        addr,
        "POST /push/nobody HTTP/1.1\r\nHost: t\r\nContent-Length: 1880",
        &packets[..1880],
    );
    assert_eq!(code, 404, "{text}");
    let stream = status(api, &token, "cam");
    assert_eq!(stream["received_bytes"], 0, "{stream}");
    assert_eq!(stream["input"]["refused"], 1, "{stream}");
    assert_eq!(stream["input"]["kind"], "push", "{stream}");
    // ffmpeg pushes with PUT (chunked), a viewer watches, ffmpeg goes mid-stream and pushes
    // again with POST: the viewer stays, the playlist has one discontinuity.
    let url = server.url("/push/cam?key=s3cret");
    let first = ffmpeg_push(&url, 8, "PUT");
    wait_live(&server, "cam", Duration::from_secs(10));
    let viewer = std::thread::spawn(move || capture(addr, "/cam.ts", 10.0));
    assert_eq!(status(api, &token, "cam")["input"]["connected"], true);
    std::thread::sleep(Duration::from_secs(2));
    drop(first);
    std::thread::sleep(Duration::from_millis(500));
    let second = ffmpeg_push(&url, 30, "POST");
    one_discontinuity(&server, "cam", "no discontinuity after the new push");
    let body = viewer.join().unwrap();
    let pictures = pictures(&body);
    assert!(pictures >= 150, "{pictures} pictures in 10 s");
    assert_encoder_tracks(&server.url("/cam/index.m3u8"));
    let (decoded, said) = decode(&server.url("/cam/index.m3u8"), 10);
    assert!(decoded && said.trim().is_empty(), "{said}");
    let input = &status(api, &token, "cam")["input"];
    assert_eq!(input["connections"], 2, "{input}");
    // Garbage pushed in the middle of the stream is counted and skipped; the stream goes on.
    let junk: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let (code, text) = push_raw(
        addr,
        &format!(
            "PUT /push/cam?key=s3cret HTTP/1.1\r\nHost: t\r\nContent-Length: {}",
            junk.len()
        ),
        &junk,
    );
    assert_eq!(code, 200, "{text}");
    wait_until(
        Duration::from_secs(5),
        || format!("{}", status(api, &token, "cam")),
        || status(api, &token, "cam")["sync_skipped_bytes"].as_u64() > Some(100_000),
    );
    // A push still open is replaced by a newer one: the server closes the older connection.
    drop(second);
    wait_until(
        Duration::from_secs(5),
        || format!("{}", status(api, &token, "cam")),
        || status(api, &token, "cam")["input"]["connected"] == false,
    );
    let mut older = std::net::TcpStream::connect(addr).unwrap();
    older
        .write_all(
            b"PUT /push/cam?key=s3cret HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .unwrap();
    let some = ts_packets(70);
    older
        .write_all(format!("{:x}\r\n", some.len()).as_bytes())
        .unwrap();
    older.write_all(&some).unwrap();
    older.write_all(b"\r\n").unwrap();
    wait_until(
        Duration::from_secs(5),
        || format!("{}", status(api, &token, "cam")),
        || status(api, &token, "cam")["input"]["connected"] == true,
    );
    let (code, text) = push_raw(
        addr,
        &format!(
            "POST /push/cam?key=s3cret HTTP/1.1\r\nHost: t\r\nContent-Length: {}",
            some.len()
        ),
        &some,
    );
    assert_eq!(code, 200, "{text}");
    older
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut rest = Vec::new();
    // Closed either way: a FIN, or a reset when the server closes with some of the older
    // push's bytes still unread in its receive buffer (the kernel then sends RST).
    let closed = std::io::Read::read_to_end(&mut older, &mut rest);
    assert!(
        closed.is_ok()
            || closed
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the older push was not closed: {closed:?}"
    );
    let (status, log) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "{log}");
    assert!(log.contains("a push from 127.0.0.1 started"), "{log}");
}

#[test]
fn push_rewrite_renames_or_refuses_a_push() {
    let dir = TempDir::new("push-rewrite");
    // The handler reads the push URL, the address and the stream; it sends `studio` to `cam`
    // and refuses everything else.
    let script = dir.0.join("rewrite.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nread url; read addr; read stream\necho \"$url $addr $stream\" >> \"$(dirname \"$0\")/asked\"\nif [ \"$stream\" = studio ]; then echo cam; else echo; fi\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = format!(
        "[server]\nmax_pushes = 1\n\n[[stream]]\nname = \"cam\"\nsource = \"push://\"\nsegment_duration = 1\n\n[[stream]]\nname = \"studio\"\nsource = \"push://\"\n\n[[stream]]\nname = \"other\"\nsource = \"push://\"\n\n[[trigger]]\non = \"PUSH_REWRITE\"\nhandler = \"{}\"\n",
        script.display()
    );
    let path = dir.0.join("shardcast.toml");
    std::fs::write(&path, config).unwrap();
    let api = free_api_addr();
    let server = start_with_api(&path, &dir.0, api);
    let token = api_token(&dir.0);
    let packets = ts_packets(500);
    let head = |stream: &str| {
        format!(
            "PUT /push/{stream} HTTP/1.1\r\nHost: t\r\nContent-Length: {}",
            packets.len()
        )
    };
    // Refused by the trigger: 403, nothing taken, counted.
    let (code, text) = until_not_404(|| push_raw(server.addr, &head("other"), &packets));
    assert_eq!(code, 403, "{text}");
    assert!(text.contains("PUSH_REWRITE"), "{text}");
    let other = status(api, &token, "other");
    assert_eq!(other["received_bytes"], 0, "{other}");
    assert_eq!(other["input"]["refused"], 1, "{other}");
    // max_pushes = 1: while a refused pusher still holds its connection (the server reads
    // and drops what it sends for a moment), a second push is answered 503. The push refused
    // just before holds the slot too until the server has read its close: until then this
    // one is answered 503, and asks again.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut holder_refused = 0;
    let holder = loop {
        let mut holder = std::net::TcpStream::connect(server.addr).unwrap();
        holder
            .write_all(b"PUT /push/other HTTP/1.1\r\nHost: t\r\nContent-Length: 100000000\r\n\r\n")
            .unwrap();
        holder
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut answer = [0u8; 12];
        std::io::Read::read_exact(&mut holder, &mut answer).unwrap();
        if &answer == b"HTTP/1.1 403" {
            break holder;
        }
        assert_eq!(&answer, b"HTTP/1.1 503");
        holder_refused += 1;
        assert!(
            Instant::now() < deadline,
            "the refused push's slot was never freed"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let (code, text) = push_raw(server.addr, &head("cam"), &packets);
    assert_eq!(code, 503, "{text}");
    drop(holder);
    std::thread::sleep(Duration::from_millis(100));
    // Renamed: what is pushed to `studio` feeds `cam`.
    let (code, text) = until_not_404(|| push_raw(server.addr, &head("studio"), &packets));
    assert_eq!(code, 200, "{text}");
    assert_eq!(status(api, &token, "studio")["received_bytes"], 0);
    wait_until(
        Duration::from_secs(5),
        || format!("{}", status(api, &token, "cam")),
        || status(api, &token, "cam")["received_bytes"] == packets.len(),
    );
    let asked = std::fs::read_to_string(dir.0.join("asked")).unwrap();
    assert!(
        asked.contains("http://t/push/studio 127.0.0.1 studio"),
        "{asked}"
    );
    let metrics = fetch(
        api,
        "/metrics",
        &format!("Authorization: Bearer {token}\r\n"),
    )
    .2;
    let metrics = String::from_utf8_lossy(&metrics);
    // Each 503: the holder's own retries and the push refused while it held the slot.
    let busy = format!(
        "shardcast_push_refused_total{{reason=\"busy\"}} {}",
        holder_refused + 1
    );
    assert!(metrics.contains(&busy), "{busy} expected in\n{metrics}");
    let (status, log) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "{log}");
}

#[test]
fn ipv6_multicast_any_source_and_source_specific_from_another_namespace() {
    let ns = NetnsV6::set_up("mc6");
    let (asm_port, ssm_port) = (free_port(), free_port());
    let iface = &ns.host_iface;
    let (server, api, token, _dir) = start_configured(
        "ipv6-multicast",
        &format!(
            "[[stream]]\nname = \"asm\"\nsource = \"udp://[ff3e::4242]:{asm_port}?iface={iface}\"\nsegment_duration = 1\n\n\
             [[stream]]\nname = \"ssm\"\nsource = \"udp://[fd00:5c::2]@[ff3e::4243]:{ssm_port}?iface={iface}\"\nsegment_duration = 1\n\n\
             [[stream]]\nname = \"other\"\nsource = \"udp://[fd00:5c::9]@[ff3e::4243]:{ssm_port}?iface={iface}\"\nsegment_duration = 1\n"
        ),
    );
    // The senders are in the namespace: their only way out is the veth pair (ttl 1).
    let sender = |group: &str, port: u16| {
        ffmpeg_source_in(
            &ns.name,
            &format!("udp://[{group}]:{port}?pkt_size=1316&localaddr=fd00:5c::2&ttl=1"),
            30,
        )
    };
    let _asm = sender("ff3e::4242", asm_port);
    let _ssm = sender("ff3e::4243", ssm_port);
    wait_live(&server, "asm", Duration::from_secs(15));
    wait_live(&server, "ssm", Duration::from_secs(15));
    for stream in ["asm", "ssm"] {
        let probe = probe_streams(&server.url(&format!("/{stream}/index.m3u8")));
        assert!(probe.contains("h264,640,360,"), "{stream}: {probe}");
    }
    // Source-specific: the same group and port from a source nobody sends from is silent.
    let other = status(api, &token, "other");
    assert_eq!(other["received_bytes"], 0, "{other}");
    let (status, log) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "{log}");
}

/// The shards' `shardcast_shard_ingest_ticked` summed: UDP sockets read on the ingest tick.
fn ticked(api: std::net::SocketAddr, token: &str) -> u64 {
    metrics(api, token)
        .lines()
        .filter(|l| l.starts_with("shardcast_shard_ingest_ticked{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// The newest segment of `stream`'s HLS playlist.
fn newest_segment(server: &Server, stream: &str) -> Vec<u8> {
    let (status, _, playlist) = fetch(server.addr, &format!("/{stream}/index.m3u8"), "");
    assert_eq!(status, 200);
    let playlist = String::from_utf8(playlist).unwrap();
    let uri = playlist
        .lines()
        .rfind(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or_else(|| panic!("no segment in\n{playlist}"));
    let (status, _, segment) = fetch(server.addr, &format!("/{stream}/{uri}"), "");
    assert_eq!(status, 200, "{uri}");
    segment
}

#[test]
fn a_udp_stream_only_hls_players_watch_is_read_on_the_tick_until_a_progressive_viewer_comes() {
    let port = free_port();
    let (server, api, token, _dir) = start_configured(
        "sources-tick",
        &format!("[[stream]]\nname = \"cam\"\nsource = \"udp://127.0.0.1:{port}\"\n"),
    );
    let sender = std::thread::spawn(move || send_generated(port, 16));
    // Its rate known after a second, nothing waiting on it byte by byte: on the tick.
    wait_until(
        Duration::from_secs(5),
        || format!("ticked: {}", ticked(api, &token)),
        || ticked(api, &token) == 1,
    );
    wait_until(
        Duration::from_secs(8),
        || "no HLS".into(),
        || fetch(server.addr, "/cam/index.m3u8", "").0 == 200,
    );
    // What HLS players get is whole.
    let segment = newest_segment(&server, "cam");
    assert!(segment.len() > 100 * 188, "{} bytes", segment.len());
    assert_eq!(continuity_breaks(&segment), vec![]);

    // Progressive viewers: read as each datagram comes while they watch, and they miss nothing.
    let load = shardcast_bench::load::Load {
        addr: server.addr,
        path: "/cam.ts".into(),
        viewers: 3,
        ramp: Duration::from_millis(300),
        settle: Duration::from_secs(1),
        measure: Duration::from_secs(4),
        server_pid: None,
        progress: false,
        pace_bps: 0,
        tls: None,
        low_latency: false,
        connection_per_request: false,
    };
    let viewers = std::thread::spawn(move || shardcast_bench::ts::run(&load).unwrap());
    wait_until(
        Duration::from_secs(3),
        || format!("ticked: {}", ticked(api, &token)),
        || ticked(api, &token) == 0,
    );
    let r = viewers.join().unwrap();
    assert_eq!((r.connected, r.disconnected), (3, 0), "{}", r.summary());
    assert_eq!((r.gaps, r.viewers_with_gaps), (0, 0), "{}", r.summary());
    assert!(r.latency_us.len() > 3 * 3 * 25, "{}", r.summary());

    // They left: on the tick again.
    wait_until(
        Duration::from_secs(3),
        || format!("ticked: {}", ticked(api, &token)),
        || ticked(api, &token) == 1,
    );
    assert!(sender.join().unwrap() > 0);
    let (status, log) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "{log}");
    assert!(!log.contains("dropped datagrams"), "{log}");
}

#[test]
fn an_ingest_interval_of_zero_reads_every_udp_stream_as_each_datagram_comes() {
    let port = free_port();
    let (server, api, token, _dir) = start_configured(
        "sources-tick-off",
        &format!(
            "[server]\ningest_interval = 0\n[[stream]]\nname = \"cam\"\nsource = \"udp://127.0.0.1:{port}\"\n"
        ),
    );
    let sender = std::thread::spawn(move || send_generated(port, 4));
    wait_until(
        Duration::from_secs(8),
        || "no HLS".into(),
        || fetch(server.addr, "/cam/index.m3u8", "").0 == 200,
    );
    // Past the second its rate takes to be known, and the reviews after it.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(ticked(api, &token), 0);
    assert!(sender.join().unwrap() > 0);
    let (status, log) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "{log}");
}
