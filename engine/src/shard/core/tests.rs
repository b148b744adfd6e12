//! The core driven with no socket at all.

use super::*;
use std::io::IoSlice;

/// The tests' time zero.
fn start() -> Clock {
    thread_local!(static START: Clock = Clock::now());
    START.with(|c| *c)
}

/// `ms` after time zero.
fn at(ms: u64) -> Clock {
    let zero = start();
    Clock {
        mono: zero.mono + Duration::from_millis(ms),
        unix_ns: zero.unix_ns + ms * 1_000_000,
    }
}

fn core(flush_ms: u64) -> ShardCore {
    core_sending(flush_ms, SegmentSend::Copy)
}

fn core_sending(flush_ms: u64, segment_send: SegmentSend) -> ShardCore {
    let config = crate::config::Config::embedded().streams;
    let table = super::super::catalog::Streams::new(&config, Vec::new());
    let mut core = ShardCore::new(
        0,
        table.shared(),
        Vec::new(),
        ConnLimits::default(),
        Duration::from_millis(flush_ms),
        segment_send,
        start(),
    );
    let changes = core.follow_catalog().expect("a first table");
    assert!(changes.start_sources.is_empty(), "the demo needs no socket");
    core
}

fn viewers(core: &ShardCore) -> u64 {
    let (_, info) = core.catalog().find("demo").unwrap();
    info.counters.viewers.load(Ordering::Relaxed)
}

fn drain(core: &mut ShardCore, key: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(conn) = core.conn(key).filter(|c| c.wants_write()) {
        let mut slices = [IoSlice::new(&[]); 8];
        let n = conn.write_slices(&mut slices);
        let chunk: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).collect();
        out.extend_from_slice(&chunk);
        core.wrote(key, chunk.len());
    }
    out
}

#[test]
fn a_viewer_gets_the_demo_from_a_keyframe_with_no_socket() {
    let mut core = core(0);
    let key = core.open(usize::MAX, None).unwrap();
    core.on_read(key, b"GET /demo.ts HTTP/1.1\r\n\r\n");
    let head = drain(&mut core, key);
    assert!(head.starts_with(b"HTTP/1.1 200 OK"));
    // A second and a half of stream, in turns 5 ms apart, with no sleep.
    let mut body = Vec::new();
    for ms in (5..=1500).step_by(5) {
        core.begin_turn(at(ms));
        core.poll_sources();
        core.feed_due(|_| {});
        body.extend(drain(&mut core, key));
    }
    assert!(body.len() > 50 * 188, "{} bytes", body.len());
    assert_eq!(body[0], 0x47);
    assert_eq!(
        u16::from(body[1] & 0x1F) << 8 | u16::from(body[2]),
        0,
        "the PAT comes first"
    );
    assert_eq!(viewers(&core), 1);
    core.close(key);
    assert_eq!(viewers(&core), 0);
}

#[test]
fn writes_wait_for_the_flush_interval() {
    let mut core = core(200);
    let key = core.open(usize::MAX, None).unwrap();
    core.on_read(key, b"GET /demo.ts HTTP/1.1\r\n\r\n");
    drain(&mut core, key);
    core.begin_turn(at(30));
    core.poll_sources();
    let mut fed = 0;
    core.feed_due(|_| fed += 1);
    assert_eq!(fed, 0, "fed before the flush interval");
    core.begin_turn(at(229));
    core.feed_due(|_| fed += 1);
    assert_eq!(fed, 0, "fed 199 ms after the data came");
    core.begin_turn(at(230));
    core.feed_due(|_| fed += 1);
    assert_eq!(fed, 1);
}

#[test]
fn a_segments_head_is_queued_to_go_with_its_body_from_the_memfd() {
    let mut core = core_sending(0, SegmentSend::Sendfile);
    // Seven seconds of the demo: segments in sealed memfds.
    for ms in (5..=7000).step_by(5) {
        core.begin_turn(at(ms));
        core.poll_sources();
        core.feed_due(|_| {});
    }
    let key = core.open(usize::MAX, None).unwrap();
    core.on_read(key, b"GET /demo/index.m3u8 HTTP/1.1\r\n\r\n");
    let conn = core.conn(key).unwrap();
    assert!(
        conn.wants_write() && !conn.file_follows(),
        "a playlist is memory only"
    );
    let playlist = String::from_utf8(drain(&mut core, key)).unwrap();
    let segment = playlist
        .lines()
        .rfind(|l| l.ends_with(".ts"))
        .unwrap_or_else(|| panic!("{playlist}"));
    core.on_read(
        key,
        format!("GET /demo/{segment} HTTP/1.1\r\n\r\n").as_bytes(),
    );
    let conn = core.conn(key).unwrap();
    // The head first, in memory, with the body's memfd behind it.
    assert!(conn.front_file().is_none() && conn.file_follows());
    let mut slices = [IoSlice::new(&[]); 8];
    let n = conn.write_slices(&mut slices);
    let head: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).collect();
    assert!(head.starts_with(b"HTTP/1.1 200 OK") && head.ends_with(b"\r\n\r\n"));
    core.wrote(key, head.len());
    let conn = core.conn(key).unwrap();
    let (_, offset, len) = conn.front_file().expect("the body from its memfd");
    assert!(offset == 0 && len > 188, "{offset} {len}");
    assert!(
        !conn.file_follows(),
        "nothing in memory waits for a file now"
    );
}
