use super::*;
use crate::stream::Chunk;

struct Streams;

impl Router for Streams {
    fn route(&self, path: &str) -> Route {
        match path {
            "/" => Route::Index,
            "/demo.ts" => Route::Stream(0),
            _ => Route::NotFound,
        }
    }
    fn index(&self) -> String {
        "demo\n".into()
    }
}

fn drain(c: &mut Conn) -> String {
    let mut slices = [IoSlice::new(&[]); 16];
    let n = c.write_slices(&mut slices);
    let text: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).collect();
    c.wrote(text.len(), 1);
    String::from_utf8_lossy(&text).into_owned()
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let mut c = Conn::new(ConnLimits::default(), 0);
    let sub = c.on_read(
        b"GET /nope HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\nHEAD / HTTP/1.1\r\n",
        0,
        &Streams,
    );
    assert_eq!(sub, None);
    assert!(c.on_read(b"\r\n", 0, &Streams).is_none());
    let out = drain(&mut c);
    let statuses: Vec<&str> = out.lines().filter(|l| l.starts_with("HTTP/1.1")).collect();
    assert_eq!(
        statuses,
        vec![
            "HTTP/1.1 404 Not Found",
            "HTTP/1.1 200 OK",
            "HTTP/1.1 200 OK"
        ]
    );
    assert!(
        out.ends_with("Connection: keep-alive\r\n\r\n"),
        "HEAD has no body: {out}"
    );
    assert_eq!(c.state(), ConnState::ReadingHead);
}

#[test]
fn errors_close_the_connection() {
    for (req, status) in [
        (&b"BREW / HTTP/1.1\r\n\r\n"[..], "405"),
        (b"GET / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", "413"),
        (b"\x16\x03\x01 tls hello\r\n\r\n", "400"),
    ] {
        let mut c = Conn::new(ConnLimits::default(), 0);
        c.on_read(req, 0, &Streams);
        let out = drain(&mut c);
        assert!(out.starts_with(&format!("HTTP/1.1 {status}")), "{out}");
        if status != "405" {
            assert!(c.finished(), "{status} must close");
        }
    }
    let mut c = Conn::new(
        ConnLimits {
            max_head: 64,
            ..ConnLimits::default()
        },
        0,
    );
    c.on_read(&[b'G'; 100], 0, &Streams);
    assert!(drain(&mut c).starts_with("HTTP/1.1 400") || c.finished());
}

#[test]
fn slow_heads_and_idle_connections_time_out() {
    let limits = ConnLimits::default();
    let mut c = Conn::new(limits, 0);
    c.on_read(b"GET / HTTP/1.1\r\nHo", 1, &Streams);
    assert!(!c.timed_out(limits.header_timeout_ns));
    assert!(c.timed_out(limits.header_timeout_ns + 2));
    let c = Conn::new(limits, 0);
    assert!(!c.timed_out(limits.idle_timeout_ns));
    assert!(c.timed_out(limits.idle_timeout_ns + 1));
}

fn chunk(seq: u64, access_point: bool, len: usize) -> Chunk {
    Chunk {
        seq,
        data: Bytes::from(vec![0x47; len]),
        access_point,
        received_ns: seq,
    }
}

#[test]
fn a_viewer_starts_at_the_newest_access_point_and_follows() {
    let mut view = StreamView::new(u64::MAX);
    view.push(chunk(0, true, 188));
    view.push(chunk(1, false, 188));
    view.push(chunk(2, true, 376));
    view.push(chunk(3, false, 188));
    let mut c = Conn::new(ConnLimits::default(), 0);
    assert_eq!(
        c.on_read(b"GET /demo.ts HTTP/1.1\r\n\r\n", 0, &Streams),
        Some(0)
    );
    let head = drain(&mut c);
    assert!(
        head.contains("Content-Type: video/mp2t")
            && head.contains("Access-Control-Allow-Origin: *")
    );
    assert_eq!(c.feed(&view, 0), Feed::Ok);
    assert_eq!(c.queued_bytes(), 376 + 188);
    view.push(chunk(4, false, 188));
    c.feed(&view, 0);
    assert_eq!(c.queued_bytes(), 376 + 188 + 188);
}

#[test]
fn a_lagging_viewer_skips_then_is_closed() {
    let limits = ConnLimits {
        max_lag_bytes: 1000,
        max_skips: 2,
        ..ConnLimits::default()
    };
    let mut view = StreamView::new(u64::MAX);
    let mut c = Conn::new(limits, 0);
    c.on_read(b"GET /demo.ts HTTP/1.1\r\n\r\n", 0, &Streams);
    drain(&mut c);
    view.push(chunk(0, true, 188));
    c.feed(&view, 0);
    // Part of the first chunk goes out, then the viewer stops reading.
    c.wrote(100, 0);
    let mut seq = 1;
    let mut outcomes = Vec::new();
    while outcomes.len() < 3 {
        for _ in 0..6 {
            view.push(chunk(seq, seq % 3 == 0, 188));
            seq += 1;
        }
        match c.feed(&view, 0) {
            Feed::Ok => {}
            other => outcomes.push(other),
        }
    }
    assert_eq!(outcomes, vec![Feed::Skipped, Feed::Skipped, Feed::Closed]);
    // The half-written chunk stays queued so no packet is cut.
    assert_eq!(c.queued_bytes(), 88);
}
