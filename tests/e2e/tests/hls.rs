//! HLS end to end: an ffmpeg multicast source read back through the playlist by ffprobe and
//! ffmpeg, the segments' raw bytes checked, every segment send mode, and a thousand viewers
//! behaving like players for a minute (and two hundred asking a connection per request).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod support;

use shardcast_protocols::hls::{parse, MediaPlaylist, Playlist};
use std::time::{Duration, Instant};
use support::*;

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("shardcast-{name}-{}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

fn media_playlist(server: &Server, stream: &str) -> Option<MediaPlaylist> {
    let (status, _, body) = fetch(server.addr, &format!("/{stream}/index.m3u8"), "");
    if status != 200 {
        return None;
    }
    match parse(&body).unwrap() {
        Playlist::Media(m) => Some(m),
        other => panic!("not a media playlist: {other:?}"),
    }
}

/// Wait until the stream's playlist lists at least `n` segments.
fn wait_for_segments(server: &Server, stream: &str, n: usize, within: Duration) -> MediaPlaylist {
    let deadline = Instant::now() + within;
    loop {
        if let Some(m) = media_playlist(server, stream).filter(|m| m.segments.len() >= n) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "no {n} segments after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn hls_from_a_multicast_ffmpeg_source() {
    let _net = LoopbackMulticast::set_up();
    let port = free_port();
    let config = write_config(
        "hls",
        &format!(
            "[[stream]]\nname = \"cam\"\nsource = \"udp://239.255.43.1:{port}?iface=127.0.0.1\"\n"
        ),
    );
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let _ffmpeg = ffmpeg_udp_source(
        &format!("udp://239.255.43.1:{port}?pkt_size=1316&ttl=1&localaddr=127.0.0.1"),
        60,
    );
    wait_for_segments(&server, "cam", 3, Duration::from_secs(20));

    // ffprobe and ffmpeg read the HLS stream with no error.
    let url = server.url("/cam/index.m3u8");
    let probe = probe_streams(&url);
    assert!(
        probe.contains("h264,1280,720,25/1") && probe.contains("aac"),
        "{probe}"
    );
    // The raw segments are fetched while ffmpeg decodes 20 s of the playlist.
    let addr = server.addr;
    let collect = std::thread::spawn(move || {
        let mut fetched: Vec<(u64, f64, Vec<u8>)> = Vec::new();
        let until = Instant::now() + Duration::from_secs(14);
        while Instant::now() < until {
            let (status, _, body) = fetch(addr, "/cam/index.m3u8", "");
            assert_eq!(status, 200);
            let Playlist::Media(m) = parse(&body).unwrap() else {
                panic!("not a media playlist")
            };
            for (i, s) in m.segments.iter().enumerate() {
                let sequence = m.media_sequence + i as u64;
                if fetched.iter().any(|(q, _, _)| *q == sequence) {
                    continue;
                }
                let (status, _, data) = fetch(addr, &format!("/cam/{}", s.uri), "");
                assert_eq!(status, 200, "segment {sequence} listed but not served");
                fetched.push((sequence, s.duration.as_secs_f64(), data));
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        fetched
    });
    let (ok, decode) = run(
        "ffmpeg",
        &[
            "-nostdin", "-v", "error", "-i", &url, "-t", "20", "-f", "null", "-",
        ],
    );
    assert!(ok && decode.trim().is_empty(), "ffmpeg said: {decode}");
    let mut fetched = collect.join().unwrap();
    fetched.sort_by_key(|(q, _, _)| *q);
    assert!(fetched.len() >= 6, "{} segments", fetched.len());
    for pair in fetched.windows(2) {
        let ((q0, extinf, a), (q1, _, b)) = (&pair[0], &pair[1]);
        assert_eq!(q0 + 1, *q1, "consecutive sequence numbers");
        // Counters run on from one segment into the next.
        let joined = [a.as_slice(), b.as_slice()].concat();
        assert_eq!(
            continuity_breaks(&joined),
            vec![],
            "segments {q0} and {q1} do not join"
        );
        // EXTINF is the PTS span up to the next segment's first picture, within 1 ms.
        let span = first_pts(b, 0x100).unwrap() as f64 - first_pts(a, 0x100).unwrap() as f64;
        assert!(
            (span / 90_000.0 - extinf).abs() <= 0.001,
            "segment {q0}: EXTINF {extinf} s, PTS span {} s",
            span / 90_000.0
        );
    }
    for (q, _, data) in &fetched {
        let pid =
            |i: usize| u16::from(data[i * 188 + 1] & 0x1F) << 8 | u16::from(data[i * 188 + 2]);
        assert_eq!(pid(0), 0, "segment {q} starts with the PAT");
        assert_eq!(pid(1), 0x1000, "segment {q} has the PMT next");
        assert!(
            first_picture_is_keyframe(data),
            "segment {q} starts with a keyframe"
        );
    }
    // The multivariant playlist names the media playlist with what a player needs to choose it.
    let (status, _, master) = fetch(server.addr, "/cam/master.m3u8", "");
    assert_eq!(status, 200);
    let master = String::from_utf8(master).unwrap();
    assert!(
        master.contains("CODECS=\"avc1.")
            && master.contains("mp4a.40.2")
            && master.contains("RESOLUTION=1280x720"),
        "{master}"
    );
    // Evicted and future segments are 404.
    let m = media_playlist(&server, "cam").unwrap();
    for gone in [m.media_sequence - 50, m.media_sequence + 50] {
        let (status, head, _) = fetch(server.addr, &format!("/cam/{gone}.ts"), "");
        assert_eq!(status, 404, "{head}");
    }
    std::fs::remove_file(&config).ok();
}

#[test]
fn every_segment_send_mode_serves_whole_segments_and_ranges() {
    for mode in ["copy", "sendfile", "zerocopy"] {
        let config = write_config(
            &format!("send-{mode}"),
            &format!("[server]\nsegment_send = \"{mode}\"\n[[stream]]\nname = \"demo\"\nsource = \"demo:\"\n"),
        );
        let server = Server::start(&["--config", config.to_str().unwrap()]);
        let m = wait_for_segments(&server, "demo", 2, Duration::from_secs(10));
        let path = format!("/demo/{}", m.segments[0].uri);
        let (status, head, whole) = fetch(server.addr, &path, "");
        assert_eq!(status, 200, "{mode}: {head}");
        assert_eq!(
            header(&head, "content-length").unwrap(),
            whole.len().to_string(),
            "{mode}"
        );
        assert_eq!(whole.len() % 188, 0, "{mode}");
        assert_eq!(continuity_breaks(&whole), vec![], "{mode}");
        // Three ranges put back together are the whole segment, byte for byte.
        let cut = [0, 1000, whole.len() / 2, whole.len()];
        let mut joined = Vec::new();
        for r in cut.windows(2) {
            let (status, head, part) = fetch(
                server.addr,
                &path,
                &format!("Range: bytes={}-{}\r\n", r[0], r[1] - 1),
            );
            assert_eq!(status, 206, "{mode}: {head}");
            joined.extend(part);
        }
        assert!(joined == whole, "{mode}: ranges differ from the whole");
        let etag = header(&head, "etag").unwrap().to_owned();
        let (status, _, body) = fetch(server.addr, &path, &format!("If-None-Match: {etag}\r\n"));
        assert_eq!((status, body.len()), (304, 0), "{mode}");
        std::fs::remove_file(&config).ok();
    }
}

#[test]
fn a_thousand_players_for_a_minute_miss_nothing() {
    let server = Server::start(&[]);
    wait_for_segments(&server, "demo", 3, Duration::from_secs(10));
    let report = shardcast_bench::hls::run(&shardcast_bench::load::Load {
        addr: server.addr,
        path: "/demo/index.m3u8".into(),
        viewers: 1000,
        ramp: Duration::from_secs(4),
        settle: Duration::from_secs(2),
        measure: Duration::from_secs(60),
        server_pid: Some(server.child.id()),
        progress: false,
        pace_bps: 0,
        tls: None,
        low_latency: false,
        connection_per_request: false,
    })
    .unwrap();
    let summary = report.summary();
    assert_eq!(report.started, 1000, "{summary}");
    assert_eq!(report.reconnects, 0, "{summary}");
    assert_eq!(report.missed, 0, "{summary}");
    assert_eq!(report.listed_404, 0, "{summary}");
    assert_eq!(
        report.status_4xx + report.status_5xx + report.bad_playlists,
        0,
        "{summary}"
    );
    // 60 s of 2 s segments: about 30 per player.
    assert!(report.segments >= 1000 * 28, "{summary}");
}

#[test]
fn players_asking_a_connection_per_request_miss_nothing() {
    // Each request on a connection of its own (`Connection: close`): every response whole,
    // its head sent ahead of the segment's memfd, and the connection closed after it.
    let server = Server::start(&[]);
    wait_for_segments(&server, "demo", 3, Duration::from_secs(10));
    let report = shardcast_bench::hls::run(&shardcast_bench::load::Load {
        addr: server.addr,
        path: "/demo/index.m3u8".into(),
        viewers: 200,
        ramp: Duration::from_secs(2),
        settle: Duration::from_secs(2),
        measure: Duration::from_secs(10),
        server_pid: Some(server.child.id()),
        progress: false,
        pace_bps: 0,
        tls: None,
        low_latency: false,
        connection_per_request: true,
    })
    .unwrap();
    let summary = report.summary();
    assert_eq!(report.started, 200, "{summary}");
    assert_eq!((report.reconnects, report.missed), (0, 0), "{summary}");
    assert_eq!(
        report.status_4xx + report.status_5xx + report.bad_playlists,
        0,
        "{summary}"
    );
    // 10 s of 2 s segments: about 5 per player, each on a new connection.
    assert!(report.segments >= 200 * 4, "{summary}");
    assert!(report.playlists >= 200 * 4, "{summary}");
}

#[test]
fn a_restarted_source_is_marked_in_the_playlist() {
    let port = free_port();
    let config = write_config(
        "restart",
        &format!("[[stream]]\nname = \"src\"\nsource = \"udp://127.0.0.1:{port}\"\n"),
    );
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let send = |seconds: u64| send_generated(port, seconds);
    // The same encoder twice: its timestamps start over, six seconds back.
    send(7);
    std::thread::sleep(Duration::from_millis(500));
    send(7);
    let m = media_playlist(&server, "src").unwrap();
    let marked: Vec<usize> = m
        .segments
        .iter()
        .enumerate()
        .filter(|(_, s)| s.discontinuity)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(marked.len(), 1, "{m:?}");
    // Before and after it, program date-times follow the ingest clock.
    let pdt: Vec<i64> = m
        .segments
        .iter()
        .map(|s| s.program_date_time.unwrap().unix_millis)
        .collect();
    assert!(pdt.windows(2).all(|w| w[1] > w[0]), "{pdt:?}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        (now - pdt[pdt.len() - 1]).abs() < 5_000,
        "{pdt:?} against {now}"
    );
    std::fs::remove_file(&config).ok();
}
