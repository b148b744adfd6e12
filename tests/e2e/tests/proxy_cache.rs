//! Behind Debian's nginx with `proxy_cache`, configured the way an operator would put a cache
//! in front of shardcast and nothing more (no `proxy_cache_valid`: nginx follows the
//! Cache-Control shardcast sends): segments are served from nginx's cache after the first
//! request, and the cached playlist is never more than one target duration behind.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod support;

use shardcast_protocols::hls::{parse, Playlist};
use std::time::{Duration, Instant};
use support::*;

/// nginx as a caching proxy for `upstream`, configured as an operator would, nothing more.
fn caching_nginx(upstream: std::net::SocketAddr) -> Peer {
    start_nginx(
        "proxy_cache_path DIR/cache levels=1:2 keys_zone=hls:10m max_size=1g inactive=10m use_temp_path=off;",
        &format!(
            "location / {{\n\
               proxy_pass http://{upstream};\n\
               proxy_http_version 1.1;\n\
               proxy_set_header Connection \"\";\n\
               proxy_cache hls;\n\
               proxy_cache_lock on;\n\
               add_header X-Cache-Status $upstream_cache_status always;\n\
             }}\n"
        ),
    )
}

/// The newest sequence number a playlist lists.
fn newest(body: &[u8]) -> u64 {
    match parse(body).unwrap() {
        Playlist::Media(m) => m.media_sequence + m.segments.len() as u64 - 1,
        other => panic!("not a media playlist: {other:?}"),
    }
}

#[test]
fn nginx_caches_segments_and_keeps_playlists_fresh() {
    let server = Server::start(&[]);
    let nginx = caching_nginx(server.addr);
    let deadline = Instant::now() + Duration::from_secs(10);
    let playlist = loop {
        let (status, _, body) = fetch(nginx.addr, "/demo/index.m3u8", "");
        if status == 200 {
            break body;
        }
        assert!(Instant::now() < deadline, "no playlist through nginx");
        std::thread::sleep(Duration::from_millis(300));
    };

    // A segment: fetched from shardcast once, then from nginx's cache, whole and by range.
    let path = format!("/demo/{}.ts", newest(&playlist));
    let (status, head, first) = fetch(nginx.addr, &path, "");
    assert_eq!(status, 200, "{head}");
    assert_eq!(header(&head, "x-cache-status"), Some("MISS"), "{head}");
    for _ in 0..3 {
        let (status, head, again) = fetch(nginx.addr, &path, "");
        assert_eq!(status, 200, "{head}");
        assert_eq!(header(&head, "x-cache-status"), Some("HIT"), "{head}");
        assert!(again == first, "the cached copy differs");
    }
    let (status, head, part) = fetch(nginx.addr, &path, "Range: bytes=188-375\r\n");
    assert_eq!(
        (status, header(&head, "x-cache-status")),
        (206, Some("HIT")),
        "{head}"
    );
    assert!(part == first[188..376], "the cached range differs");

    // The playlist through nginx, read every 200 ms for 12 s, is never more than one target
    // duration (one segment) behind shardcast's own, read right before it.
    let (mut hits, mut reads) = (0, 0);
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        let (_, _, direct) = fetch(server.addr, "/demo/index.m3u8", "");
        let (status, head, cached) = fetch(nginx.addr, "/demo/index.m3u8", "");
        assert_eq!(status, 200, "{head}");
        let (direct, cached) = (newest(&direct), newest(&cached));
        assert!(
            cached + 1 >= direct,
            "nginx served a playlist ending at {cached} while shardcast's ends at {direct}"
        );
        reads += 1;
        hits += usize::from(header(&head, "x-cache-status") == Some("HIT"));
        std::thread::sleep(Duration::from_millis(200));
    }
    // And nginx did cache it (max-age=1 with 200 ms reads: most are hits).
    assert!(hits * 2 > reads, "{hits} hits in {reads} reads");
}
