//! The CMAF (fragmented MP4) rendition end to end: an ffmpeg source, HLS with fMP4 read back
//! by ffprobe and ffmpeg, its segments checked against the MPEG-TS rendition's (the same
//! pictures at the same timestamps), its low-latency parts, and a stream without it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod support;

use shardcast_protocols::hls::{parse, MediaPlaylist, Playlist};
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;
use support::*;

fn media(addr: SocketAddr, path: &str) -> Option<MediaPlaylist> {
    let (status, _, body) = fetch(addr, path, "");
    if status != 200 {
        return None;
    }
    match parse(&body).unwrap() {
        Playlist::Media(m) => Some(m),
        other => panic!("not a media playlist: {other:?}"),
    }
}

/// Video packets' PTS, and whether each is a keyframe, as ffprobe reads `path`.
fn video_packets(path: &std::path::Path) -> Vec<(i64, bool)> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0"])
        .args(["-show_entries", "packet=pts,flags", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe must be installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (pts, flags) = l.split_once(',')?;
            Some((pts.parse().ok()?, flags.starts_with('K')))
        })
        .collect()
}

#[test]
fn hls_in_fmp4_reads_back_as_the_mpeg_ts_rendition() {
    let dir = TempDir::new("cmaf");
    let port = free_port();
    let config = dir.join("shardcast.toml");
    std::fs::write(
        &config,
        format!(
            "[[stream]]\nname = \"cam\"\nsource = \"udp://127.0.0.1:{port}\"\n\
             segment_duration = 1\npart_duration = 0.2\ncmaf = true\n\
             [[stream]]\nname = \"plain\"\nsource = \"udp://127.0.0.1:{}\"\n",
            free_port()
        ),
    )
    .unwrap();
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let _ffmpeg = ffmpeg_source(
        &format!("udp://127.0.0.1:{port}?pkt_size=1316"),
        40,
        "640x360",
        "1M",
        25,
    );
    let addr = server.addr;
    let mut m = None;
    wait_until(
        Duration::from_secs(20),
        || "no CMAF playlist with 4 segments".into(),
        || {
            m = media(addr, "/cam/cmaf/index.m3u8");
            m.as_ref().is_some_and(|m| m.segments.len() >= 4)
        },
    );
    let m = m.unwrap();
    let (status, head, master) = fetch(addr, "/cam/cmaf/master.m3u8", "");
    assert_eq!(status, 200);
    assert_eq!(
        header(&head, "content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    let master = String::from_utf8(master).unwrap();
    assert!(
        master.contains("CODECS=\"avc1.") && master.contains("mp4a.40.2"),
        "{master}"
    );

    // The init segment and three segments, and the same three in MPEG-TS.
    let map = m.segments[0].map.clone().expect("EXT-X-MAP");
    let (status, head, init) = fetch(addr, &format!("/cam/cmaf/{}", map.uri), "");
    assert_eq!(status, 200);
    assert_eq!(header(&head, "content-type"), Some("video/mp4"));
    let mut fmp4 = init;
    let mut ts = Vec::new();
    for s in &m.segments[..3] {
        let (status, head, body) = fetch(addr, &format!("/cam/cmaf/{}", s.uri), "");
        assert_eq!(status, 200, "{}", s.uri);
        assert_eq!(
            header(&head, "cache-control"),
            Some("public, max-age=86400, immutable")
        );
        fmp4.extend(body);
        let (status, _, body) = fetch(addr, &format!("/cam/{}", s.uri.replace(".m4s", ".ts")), "");
        assert_eq!(status, 200);
        ts.extend(body);
    }
    let (fmp4_path, ts_path) = (dir.join("three.mp4"), dir.join("three.ts"));
    std::fs::write(&fmp4_path, &fmp4).unwrap();
    std::fs::write(&ts_path, &ts).unwrap();
    let from_ts = video_packets(&ts_path);
    let from_fmp4 = video_packets(&fmp4_path);
    assert!(from_ts.len() >= 70, "{} pictures", from_ts.len());
    assert_eq!(
        from_fmp4, from_ts,
        "the same pictures at the same timestamps"
    );

    // ffprobe finds the codecs and the size through the playlist; ffmpeg decodes it silently.
    let url = server.url("/cam/cmaf/index.m3u8");
    let probe = probe_streams(&url);
    assert!(
        probe.contains("h264,640,360") && probe.contains("aac"),
        "{probe}"
    );
    let (ok, said) = decode(&url, 5);
    assert!(ok && said.trim().is_empty(), "ffmpeg said: {said}");

    // Its parts: a blocking reload of the CMAF playlist, then the part in fMP4.
    let m = media(addr, "/cam/cmaf/index.m3u8").unwrap();
    let hint = m.preload_hints[0].uri.clone();
    let (sequence, index) = hint.trim_end_matches(".m4s").split_once('.').unwrap();
    let (status, _, body) = fetch(
        addr,
        &format!("/cam/cmaf/index.m3u8?_HLS_msn={sequence}&_HLS_part={index}"),
        "",
    );
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains(&format!("URI=\"{hint}\"")), "{text}");
    let (status, head, part) = fetch(addr, &format!("/cam/cmaf/{hint}"), "");
    assert_eq!(status, 200);
    assert_eq!(header(&head, "content-type"), Some("video/mp4"));
    assert_eq!(&part[4..8], b"moof");

    // A stream without the rendition has none.
    let (status, _, _) = fetch(addr, "/plain/cmaf/index.m3u8", "");
    assert_eq!(status, 404);
    let (status, _, _) = fetch(addr, "/cam/cmaf/init-999.mp4", "");
    assert_eq!(status, 404);
}
