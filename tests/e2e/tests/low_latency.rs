//! Low-latency HLS end to end: an ffmpeg source, the playlists checked against the spec's
//! rules (draft-pantos-hls-rfc8216bis) by a checker of the test's own while a client reloads
//! them the way a low-latency player does (blocking, one part at a time), the parts' bytes
//! checked, the spec's 400 cases, the delta update, the hinted part, and the 503 of a request
//! held past three target durations.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod support;

use shardcast_protocols::hls::{parse, MediaPlaylist, Playlist, PreloadHintType};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::*;

const PART_TARGET: Duration = Duration::from_millis(200);

fn media(body: &[u8]) -> MediaPlaylist {
    match parse(body).unwrap() {
        Playlist::Media(m) => m,
        other => panic!("not a media playlist: {other:?}"),
    }
}

fn playlist(addr: SocketAddr, query: &str) -> (u16, String, Vec<u8>) {
    fetch(addr, &format!("/cam/index.m3u8{query}"), "")
}

/// Where a playlist's stream is: its newest part (segment, index) and the hinted one.
fn edge(m: &MediaPlaylist) -> ((u64, u32), (u64, u32)) {
    let hint = &m.preload_hints[0];
    assert_eq!(hint.kind, PreloadHintType::Part);
    let (sequence, index) = part_name(&hint.uri);
    let newest = if index > 0 {
        (sequence, index - 1)
    } else {
        let last = m.segments.last().unwrap();
        (sequence - 1, last.parts.len() as u32 - 1)
    };
    (newest, (sequence, index))
}

fn part_name(uri: &str) -> (u64, u32) {
    let (sequence, index) = uri.trim_end_matches(".ts").split_once('.').unwrap();
    (sequence.parse().unwrap(), index.parse().unwrap())
}

/// The rules one low-latency playlist must keep, alone and against what was seen before:
/// `seen` maps each segment to its part durations and independent flags.
#[derive(Default)]
struct Checker {
    /// The source's keyframes are further apart than the target duration: segments may
    /// start with a dependent part (cut so that the target duration holds).
    sparse_keyframes: bool,
    part_target: Option<Duration>,
    target_duration: Option<u64>,
    media_sequence: u64,
    parts: BTreeMap<u64, Vec<(Duration, bool)>>,
    extinf: BTreeMap<u64, Duration>,
}

impl Checker {
    fn check(&mut self, m: &MediaPlaylist) {
        assert!(m.version >= 9, "EXT-X-VERSION {}", m.version);
        let part_target = m.part_target.expect("EXT-X-PART-INF");
        assert_eq!(part_target, PART_TARGET);
        // PART-TARGET and TARGETDURATION never change for a live stream.
        assert_eq!(*self.part_target.get_or_insert(part_target), part_target);
        assert_eq!(
            *self.target_duration.get_or_insert(m.target_duration),
            m.target_duration
        );
        let control = m.server_control.expect("EXT-X-SERVER-CONTROL");
        assert!(control.can_block_reload);
        let hold_back = control.part_hold_back.expect("PART-HOLD-BACK");
        assert!(hold_back >= part_target * 2, "PART-HOLD-BACK {hold_back:?}");
        let skip = control.can_skip_until.expect("CAN-SKIP-UNTIL");
        assert!(skip >= Duration::from_secs(6 * m.target_duration));
        // Every segment within it: EXTINF rounded to the nearest second.
        for s in &m.segments {
            assert!(
                s.duration.as_secs_f64().round() as u64 <= m.target_duration,
                "EXTINF {:?} over TARGETDURATION {}",
                s.duration,
                m.target_duration
            );
        }
        assert!(m.media_sequence >= self.media_sequence);
        self.media_sequence = m.media_sequence;
        let mut listed = Vec::new();
        for (i, s) in m.segments.iter().enumerate() {
            let sequence = m.media_sequence + i as u64;
            assert_eq!(s.uri, format!("{sequence}.ts"));
            assert!(s.program_date_time.is_some(), "PROGRAM-DATE-TIME");
            self.extinf.insert(sequence, s.duration);
            if !s.parts.is_empty() {
                listed.push((sequence, &s.parts));
            }
        }
        let building = m.media_sequence + m.segments.len() as u64;
        listed.push((building, &m.trailing_parts));
        // Parts are listed for the last segments only, and for all of them from one on.
        assert!(listed.len() >= 2, "parts of too few segments");
        for pair in listed.windows(2) {
            assert_eq!(pair[0].0 + 1, pair[1].0, "a segment between has no parts");
        }
        for (sequence, parts) in listed {
            let mut seen = Vec::new();
            for (i, p) in parts.iter().enumerate() {
                assert_eq!(p.uri, format!("{sequence}.{i}.ts"), "part numbering");
                assert!(
                    p.duration <= part_target,
                    "part {} is {:?}, over PART-TARGET",
                    p.uri,
                    p.duration
                );
                seen.push((p.duration, p.independent));
            }
            if sequence != building && !self.sparse_keyframes {
                assert!(seen[0].1, "segment {sequence} starts with a dependent part");
            }
            // A part once published never changes; the list only grows.
            let before = self.parts.entry(sequence).or_default();
            let common = before.len().min(seen.len());
            assert_eq!(
                before[..common],
                seen[..common],
                "parts of {sequence} changed"
            );
            if seen.len() > before.len() {
                *before = seen;
            }
        }
        let (_, (sequence, index)) = edge(m);
        assert_eq!(
            (sequence, index as usize),
            (building, m.trailing_parts.len()),
            "the hint is the next part"
        );
    }

    /// Complete segments: the parts' durations add up to the EXTINF (within a frame).
    fn check_sums(&self) -> usize {
        let mut complete = 0;
        for (sequence, parts) in &self.parts {
            let Some(extinf) = self.extinf.get(sequence) else {
                continue;
            };
            if parts.len() < 2 || !(parts[0].1 || self.sparse_keyframes) {
                continue; // listed from its middle on: not all of it seen
            }
            let sum: Duration = parts.iter().map(|p| p.0).sum();
            assert!(
                sum.abs_diff(*extinf) <= Duration::from_millis(40),
                "segment {sequence}: parts add up to {sum:?}, EXTINF {extinf:?}"
            );
            complete += 1;
        }
        complete
    }
}

#[test]
fn low_latency_playlists_keep_the_rules_while_a_player_reloads_part_by_part() {
    let dir = TempDir::new("ll-hls");
    let port = free_port();
    let config = dir.join("shardcast.toml");
    std::fs::write(
        &config,
        format!(
            "[[stream]]\nname = \"cam\"\nsource = \"udp://127.0.0.1:{port}\"\n\
             segment_duration = 1\nplaylist_segments = 10\npart_duration = 0.2\n"
        ),
    )
    .unwrap();
    let state = dir.join("state");
    let server = Server::start(&[
        "--config",
        config.to_str().unwrap(),
        "--api-listen",
        "127.0.0.1:0",
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    let mut ffmpeg = Some(small_source(port, 60));
    let addr = server.addr;
    let mut m = None;
    wait_until(
        Duration::from_secs(20),
        || "no low-latency playlist with 3 segments".into(),
        || {
            let (status, _, body) = playlist(addr, "");
            m = (status == 200).then(|| media(&body));
            m.as_ref().is_some_and(|m| m.segments.len() >= 3)
        },
    );
    let mut checker = Checker::default();
    let mut m = m.unwrap();
    checker.check(&m);

    // A player's reloads: each asks for the part after the newest it has, and is held until
    // that part exists; every part is fetched and checked.
    let mut held = Vec::new();
    let mut parts_fetched = 0;
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        let (_, (sequence, index)) = edge(&m);
        let asked = Instant::now();
        let (status, head, body) =
            playlist(addr, &format!("?_HLS_msn={sequence}&_HLS_part={index}"));
        held.push(asked.elapsed());
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(header(&head, "cache-control"), Some("public, max-age=2"));
        m = media(&body);
        checker.check(&m);
        let (newest, _) = edge(&m);
        assert!(
            newest >= (sequence, index),
            "answered before part {sequence}.{index} existed"
        );
        let (status, head, part) = fetch(addr, &format!("/cam/{sequence}.{index}.ts"), "");
        assert_eq!(status, 200);
        assert_eq!(
            header(&head, "cache-control"),
            Some("public, max-age=86400, immutable")
        );
        assert!(!part.is_empty() && part.len() % 188 == 0 && part[0] == 0x47);
        let independent = checker.parts[&sequence][index as usize].1;
        if independent {
            assert!(
                first_picture_is_keyframe(&part),
                "INDEPENDENT part {sequence}.{index}"
            );
        }
        parts_fetched += 1;
    }
    assert!(checker.check_sums() >= 3);
    held.sort();
    let median = held[held.len() / 2];
    eprintln!(
        "{parts_fetched} parts; blocking reloads held: median {median:?}, max {:?}",
        held.last().unwrap()
    );
    // Parts come every PART-TARGET or so: a player is never held much longer than that.
    assert!(parts_fetched >= 20, "{parts_fetched} parts in 8 s");
    assert!(median <= PART_TARGET * 2, "median hold {median:?}");

    // The spec's 400 cases.
    let (newest, _) = edge(&m);
    let limit = (3.0 / PART_TARGET.as_secs_f64()).ceil() as u32;
    for (query, why) in [
        ("?_HLS_part=1".to_string(), "_HLS_part without _HLS_msn"),
        ("?_HLS_msn=x".into(), "not a number"),
        ("?_HLS_msn=1&_HLS_skip=NO".into(), "_HLS_skip"),
        (format!("?_HLS_msn={}", newest.0 + 3), "msn too far ahead"),
        (
            format!("?_HLS_msn={}&_HLS_part={}", newest.0 + 1, limit + 2),
            "part too far ahead",
        ),
    ] {
        let (status, head, _) = playlist(addr, &query);
        assert_eq!(status, 400, "{why}: {query}");
        assert_eq!(header(&head, "cache-control"), Some("no-store"));
    }
    // An old segment is there: answered at once.
    let (status, _, _) = playlist(addr, &format!("?_HLS_msn={}&_HLS_part=0", m.media_sequence));
    assert_eq!(status, 200);

    // The delta update skips what ends more than CAN-SKIP-UNTIL before the end.
    let (status, _, body) = playlist(addr, "?_HLS_skip=YES");
    assert_eq!(status, 200);
    let delta = media(&body);
    let skipped = delta.skipped_segments.expect("EXT-X-SKIP") as usize;
    assert!(skipped >= 2, "{skipped} skipped");
    let (_, _, body) = playlist(addr, "");
    let full = media(&body);
    if full.media_sequence == delta.media_sequence {
        assert_eq!(delta.segments[..2], full.segments[skipped..skipped + 2]);
    }

    // The hinted part is answered once complete.
    let hint = full.preload_hints[0].uri.clone();
    let (status, _, part) = fetch(addr, &format!("/cam/{hint}"), "");
    assert_eq!(status, 200, "hinted part {hint}");
    assert!(!part.is_empty() && part.len() % 188 == 0 && part[0] == 0x47);
    // One far ahead is not.
    let (sequence, _) = part_name(&hint);
    let (status, _, _) = fetch(addr, &format!("/cam/{}.{}.ts", sequence + 5, 0), "");
    assert_eq!(status, 404);

    // ffmpeg reads the low-latency playlist as a plain one.
    let (ok, said) = decode(&server.url("/cam/index.m3u8"), 4);
    assert!(ok && said.trim().is_empty(), "ffmpeg said: {said}");

    // The source stops: a request held for the next part is answered 503 after three
    // target durations.
    drop(ffmpeg.take());
    std::thread::sleep(Duration::from_millis(500));
    let (_, body) = (0, playlist(addr, "").2);
    let (_, (sequence, index)) = edge(&media(&body));
    let asked = Instant::now();
    let (status, head, _) = playlist(addr, &format!("?_HLS_msn={sequence}&_HLS_part={index}"));
    let waited = asked.elapsed();
    assert_eq!(status, 503);
    assert_eq!(header(&head, "cache-control"), Some("no-store"));
    assert!(
        waited >= Duration::from_millis(2500) && waited <= Duration::from_secs(5),
        "held {waited:?}"
    );

    // The metrics counted the held requests and the one held to its limit.
    let (status, _, metrics) = fetch(server.api_addr(), "/metrics", "");
    assert_eq!(status, 200);
    let metrics = String::from_utf8(metrics).unwrap();
    let sample = |name: &str| -> f64 {
        let series = format!("{name}{{stream=\"cam\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .unwrap_or_else(|| panic!("no {series}"))
            .trim()
            .parse()
            .unwrap()
    };
    assert!(
        sample("shardcast_stream_hls_held_total") >= 30.0,
        "{metrics}"
    );
    assert_eq!(sample("shardcast_stream_hls_hold_timeouts_total"), 1.0);
}

#[test]
fn a_stream_without_parts_ignores_the_directives() {
    let dir = TempDir::new("ll-plain");
    let (server, port) = udp_stream_server(&dir, "segment_duration = 1\n");
    let _ffmpeg = small_source(port, 30);
    let addr = server.addr;
    wait_until(
        Duration::from_secs(20),
        || "no playlist".into(),
        || playlist(addr, "").0 == 200,
    );
    let asked = Instant::now();
    let (status, _, body) = playlist(addr, "?_HLS_msn=999999999999&_HLS_part=3");
    assert_eq!(status, 200);
    assert!(asked.elapsed() < Duration::from_secs(1));
    let text = String::from_utf8(body).unwrap();
    assert!(!text.contains("EXT-X-PART") && !text.contains("CAN-BLOCK-RELOAD"));
    let (status, _, _) = fetch(addr, "/cam/1.0.ts", "");
    assert_eq!(status, 404);
}

#[test]
fn three_hundred_players_held_at_once_are_all_answered_every_part() {
    let dir = TempDir::new("ll-many");
    let (server, port) = udp_stream_server(&dir, "segment_duration = 1\npart_duration = 0.2\n");
    let _ffmpeg = small_source(port, 40);
    let addr = server.addr;
    wait_until(
        Duration::from_secs(20),
        || "no playlist".into(),
        || playlist(addr, "").0 == 200,
    );
    // Every player reloads blocking for the next part and fetches it: 300 requests held on
    // the shards at every part, all answered when it is published.
    let viewers = 300;
    let report = shardcast_bench::hls::run(&shardcast_bench::load::Load {
        addr,
        path: "/cam/index.m3u8".into(),
        viewers,
        ramp: Duration::from_secs(1),
        settle: Duration::from_secs(2),
        measure: Duration::from_secs(6),
        server_pid: Some(server.child.id()),
        progress: false,
        pace_bps: 0,
        tls: None,
        low_latency: true,
        connection_per_request: false,
    })
    .unwrap();
    eprintln!("{}", report.summary());
    assert_eq!(report.started, viewers);
    assert_eq!(
        (
            report.status_4xx,
            report.status_5xx,
            report.missed,
            report.reconnects
        ),
        (0, 0, 0, 0)
    );
    // Five parts a second each (a few may be in flight at the window's edges).
    let expected = viewers as f64 * 6.0 * 5.0;
    assert!(
        report.segments as f64 >= expected * 0.9,
        "{} parts fetched of {expected}",
        report.segments
    );
    assert!(report.reload_us.len() as f64 >= expected * 0.9);
}

#[test]
fn keyframes_sparser_than_the_target_keep_the_target_duration() {
    // Keyframes every 3 s, 1 s segments: the segments are cut between keyframes too, so that
    // TARGETDURATION stays 1 (low-latency HLS forbids it to change).
    let dir = TempDir::new("ll-sparse");
    let (server, port) = udp_stream_server(
        &dir,
        "segment_duration = 1\nplaylist_segments = 10\npart_duration = 0.2\n",
    );
    let _ffmpeg = ffmpeg_source(
        &format!("udp://127.0.0.1:{port}?pkt_size=1316"),
        40,
        "640x360",
        "1M",
        75,
    );
    let addr = server.addr;
    let mut checker = Checker {
        sparse_keyframes: true,
        ..Checker::default()
    };
    let mut last = None;
    wait_until(
        Duration::from_secs(40),
        || "no playlist of 8 segments".into(),
        || {
            let (status, _, body) = playlist(addr, "");
            if status == 200 {
                let m = media(&body);
                checker.check(&m);
                let enough = m.segments.len() >= 8;
                last = Some((m, body));
                enough
            } else {
                false
            }
        },
    );
    let (m, body) = last.unwrap();
    let text = String::from_utf8_lossy(&body);
    assert_eq!(m.target_duration, 1, "{text}");
    assert!(checker.check_sums() >= 3);
    // Segments that do not start with a keyframe: the playlist no longer says they all do.
    assert!(!text.contains("#EXT-X-INDEPENDENT-SEGMENTS"), "{text}");
    let starts: Vec<bool> = m
        .segments
        .iter()
        .map(|s| {
            let (_, _, body) = fetch(addr, &format!("/cam/{}", s.uri), "");
            first_picture_is_keyframe(&body)
        })
        .collect();
    assert!(starts.iter().any(|k| *k), "{starts:?}");
    assert!(starts.iter().any(|k| !*k), "{starts:?}");
    // The first part of each segment is INDEPENDENT exactly when its segment starts with a
    // keyframe.
    for (s, keyframe) in m.segments.iter().zip(&starts) {
        if let Some(first) = s.parts.first() {
            assert_eq!(first.independent, *keyframe, "{}", s.uri);
        }
    }
    // A progressive viewer still starts at a keyframe.
    let mut viewer = std::net::TcpStream::connect(addr).unwrap();
    viewer
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    std::io::Write::write_all(&mut viewer, b"GET /cam.ts HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        std::io::Read::read_exact(&mut viewer, &mut byte).unwrap();
        head.push(byte[0]);
    }
    let mut body = vec![0u8; 188 * 2000];
    std::io::Read::read_exact(&mut viewer, &mut body).unwrap();
    assert!(
        first_picture_is_keyframe(&body),
        "a viewer joined between keyframes"
    );
}
