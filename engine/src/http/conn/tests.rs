use super::*;
use crate::stream::Chunk;
use std::sync::Arc;

struct Streams;

impl Router for Streams {
    fn route(&self, head: &RequestHead) -> (Gate, Route) {
        let route = match head.path.as_str() {
            "/" => Route::Document(Document {
                body: Body::Bytes(Bytes::from_static(b"demo\n")),
                ..Document::new("text/plain; charset=utf-8", "no-cache")
            }),
            "/demo.ts" => Route::Live {
                stream: 0,
                content_type: "video/mp2t",
            },
            "/push/demo" => Route::Push {
                stream: "demo".into(),
            },
            _ => Route::NotFound,
        };
        (Gate::Open, route)
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

#[test]
fn pipelining_without_reading_pauses_parsing_until_responses_drain() {
    let limits = ConnLimits {
        max_pipelined: 4,
        ..ConnLimits::default()
    };
    let mut c = Conn::new(limits, 0);
    let requests = "GET / HTTP/1.1\r\n\r\n".repeat(10);
    c.on_read(requests.as_bytes(), 0, &Streams);
    let answered = |c: &Conn| {
        let mut slices = [IoSlice::new(&[]); 64];
        let n = c.write_slices(&mut slices);
        let out: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).collect();
        String::from_utf8_lossy(&out)
            .matches("HTTP/1.1 200")
            .count()
    };
    assert_eq!(answered(&c), 4, "four answered, six wait unparsed");
    assert!(!c.wants_read(), "the backend stops reading");
    assert!(!c.parse_pending());
    // One response goes out: one more request may be answered.
    let first = {
        let mut slices = [IoSlice::new(&[]); 64];
        let n = c.write_slices(&mut slices);
        let out: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).collect();
        out[1..].windows(8).position(|w| w == b"HTTP/1.1").unwrap() + 1
    };
    c.wrote(first - 1, 1);
    assert!(!c.parse_pending(), "not before the whole response is out");
    c.wrote(1, 1);
    assert!(c.parse_pending() && c.wants_read());
    c.on_read(&[], 1, &Streams);
    assert_eq!(answered(&c), 4);
    // Everything drains: the rest is answered, in order, and reading resumes.
    while c.wants_write() || c.parse_pending() {
        drain(&mut c);
        c.on_read(&[], 2, &Streams);
    }
    assert!(c.wants_read());
    assert_eq!(c.state(), ConnState::ReadingHead);

    // Bytes queued count too: a large response holds back the next request.
    let mut c = Conn::new(
        ConnLimits {
            max_queued_bytes: 4096,
            ..ConnLimits::default()
        },
        0,
    );
    c.on_read(b"GET /demo.ts HTTP/1.1\r\n\r\n", 0, &Streams);
    assert!(c.wants_read(), "a viewer is read (its close is seen)");
}

#[test]
fn a_reader_that_stops_or_trickles_is_closed() {
    let limits = ConnLimits {
        min_send_rate: 4096,
        ..ConnLimits::default()
    };
    let s = |n: u64| n * 1_000_000_000;
    // Takes a burst, then stops: the idle timeout closes it.
    let mut c = Conn::new(limits, 0);
    c.on_read(b"GET / HTTP/1.1\r\n\r\n", 0, &Streams);
    assert!(!c.timed_out(s(5)));
    assert!(c.timed_out(limits.idle_timeout_ns + 1));

    // Trickles a few bytes every 2.5 s (some progress, far below the minimum rate).
    let mut c = Conn::new(limits, 0);
    c.on_read(b"GET / HTTP/1.1\r\n\r\n", 0, &Streams);
    let mut now = 0;
    let mut closed_at = None;
    while now < s(60) && c.wants_write() {
        now += s(1) * 5 / 2;
        c.wrote(4, now);
        if c.timed_out(now) {
            closed_at = Some(now);
            break;
        }
    }
    let closed_at = closed_at.expect("a trickling reader is closed");
    assert!(
        closed_at <= RATE_PERIOD_NS + s(3),
        "closed at {closed_at} ns"
    );

    // Keeps up: a response that drains at the minimum rate or faster is never closed.
    let mut c = Conn::new(limits, 0);
    for second in 0..60 {
        c.on_read(b"GET / HTTP/1.1\r\n\r\n", s(second), &Streams);
        let mut slices = [IoSlice::new(&[]); 16];
        let n = c.write_slices(&mut slices);
        let len = slices[..n].iter().map(|s| s.len()).sum();
        c.wrote(len, s(second));
        assert!(!c.timed_out(s(second) + 1));
    }
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
    let mut view = StreamView::new(u64::MAX, usize::MAX);
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
    assert_eq!(c.feed(&view, None, 0), Feed::Ok);
    assert_eq!(c.queued_bytes(), 376 + 188);
    view.push(chunk(4, false, 188));
    c.feed(&view, None, 0);
    assert_eq!(c.queued_bytes(), 376 + 188 + 188);
}

#[test]
fn a_flush_goes_as_one_buffer_to_the_viewers_it_follows() {
    let mut view = StreamView::new(u64::MAX, usize::MAX);
    let viewer = || {
        let mut c = Conn::new(ConnLimits::default(), 0);
        c.on_read(b"GET /demo.ts HTTP/1.1\r\n\r\n", 0, &Streams);
        drain(&mut c);
        c
    };
    let (mut caught_up, mut joined_late) = (viewer(), viewer());
    view.push(chunk(0, true, 188));
    caught_up.feed(&view, None, 0);
    drain(&mut caught_up);
    for seq in 1..4 {
        view.push(chunk(seq, false, 188));
    }
    assert!(view.join(3).is_none(), "one chunk is not joined");
    let batch = view.join(1).expect("three chunks joined");
    assert_eq!((batch.first, batch.next, batch.data.len()), (1, 4, 3 * 188));
    caught_up.feed(&view, Some(&batch), 0);
    let mut slices = [IoSlice::new(&[]); 8];
    assert_eq!(caught_up.write_slices(&mut slices), 1);
    assert_eq!(caught_up.queued_bytes(), 3 * 188);
    // A viewer not at the batch's first chunk gets the chunks themselves, all of them.
    joined_late.feed(&view, Some(&batch), 0);
    assert_eq!(joined_late.write_slices(&mut slices), 4);
    assert_eq!(joined_late.queued_bytes(), 4 * 188);
    // Chunks the view no longer holds are not joined.
    let mut short = StreamView::new(u64::MAX, 2 * 188);
    for seq in 0..4 {
        short.push(chunk(seq, seq == 0, 188));
    }
    assert!(short.join(0).is_none());
}

#[test]
fn a_lagging_viewer_skips_then_is_closed() {
    let limits = ConnLimits {
        max_lag_bytes: 1000,
        max_skips: 2,
        ..ConnLimits::default()
    };
    let mut view = StreamView::new(u64::MAX, usize::MAX);
    let mut c = Conn::new(limits, 0);
    c.on_read(b"GET /demo.ts HTTP/1.1\r\n\r\n", 0, &Streams);
    drain(&mut c);
    view.push(chunk(0, true, 188));
    c.feed(&view, None, 0);
    // Part of the first chunk goes out, then the viewer stops reading.
    c.wrote(100, 0);
    let mut seq = 1;
    let mut outcomes = Vec::new();
    while outcomes.len() < 3 {
        for _ in 0..6 {
            view.push(chunk(seq, seq % 3 == 0, 188));
            seq += 1;
        }
        match c.feed(&view, None, 0) {
            Feed::Ok => {}
            other => outcomes.push(other),
        }
    }
    assert_eq!(outcomes, vec![Feed::Skipped, Feed::Skipped, Feed::Closed]);
    // The half-written chunk stays queued so no packet is cut.
    assert_eq!(c.queued_bytes(), 88);
}

mod hls {
    use super::*;
    use crate::hls::{HlsSettings, SegmentSend};
    use crate::hls::{HlsSlot, Packager};
    use crate::output::{Published, Target};
    use crate::stream::StreamCounters;
    use shardcast_protocols::ts::pes::Timestamp;
    use shardcast_protocols::ts::SegmentInfo;

    /// A stream whose window has segments 7 and 8, each 10 packets whose bytes are their
    /// index.
    fn window() -> HlsSlot {
        let slot = HlsSlot::default();
        let mut p = Packager::new(
            "t",
            HlsSettings::default(),
            SegmentSend::Copy,
            slot.clone(),
            Arc::new(StreamCounters::default()),
        );
        for sequence in [7, 8] {
            p.start(sequence, false, true, 1_700_000_000_000_000_000);
            for i in 0..10u8 {
                p.packet(&[i; 188]);
            }
            p.end(
                SegmentInfo {
                    sequence,
                    start_pts: Timestamp::new(0),
                    duration: 180_000,
                    packets: 10,
                    discontinuity: false,
                    independent: true,
                },
                0,
            );
        }
        slot
    }

    /// Stream `t` answered by the HLS output of the real table.
    struct Hls(HlsSlot, StreamCounters);

    impl Hls {
        fn new(slot: HlsSlot) -> Self {
            Self(slot, StreamCounters::default())
        }
    }

    impl Router for Hls {
        fn route(&self, head: &RequestHead) -> (Gate, Route) {
            let route = match Target::parse(&head.path) {
                Target::Media(request) if request.stream == "t" => request.output.answer(
                    &Published {
                        slot: 0,
                        hls: &self.0,
                        counters: &self.1,
                        cmaf: false,
                        unix_ms: 0,
                    },
                    request.file,
                    head,
                ),
                _ => Route::NotFound,
            };
            (Gate::Open, route)
        }
    }

    fn ask(router: &Hls, request: &str) -> (String, Vec<u8>) {
        let mut c = Conn::new(ConnLimits::default(), 0);
        assert_eq!(c.on_read(request.as_bytes(), 0, router), None);
        let mut slices = [IoSlice::new(&[]); 16];
        let n = c.write_slices(&mut slices);
        let out: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).collect();
        let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        (
            String::from_utf8(out[..split].to_vec()).unwrap(),
            out[split..].to_vec(),
        )
    }

    #[test]
    fn segments_are_cacheable_with_ranges_and_validators() {
        let r = Hls::new(window());
        let (head, body) = ask(&r, "GET /t/8.ts HTTP/1.1\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("Content-Length: 1880\r\n"), "{head}");
        assert!(head.contains("Cache-Control: public, max-age=86400, immutable\r\n"));
        assert!(head.contains("Accept-Ranges: bytes\r\n"));
        assert!(head.contains("Last-Modified: "));
        let etag = head
            .lines()
            .find_map(|l| l.strip_prefix("ETag: "))
            .unwrap()
            .to_owned();
        assert_eq!(body.len(), 1880);

        let (head, body) = ask(&r, "GET /t/8.ts HTTP/1.1\r\nRange: bytes=188-375\r\n\r\n");
        assert!(
            head.starts_with("HTTP/1.1 206 Partial Content\r\n"),
            "{head}"
        );
        assert!(
            head.contains("Content-Range: bytes 188-375/1880\r\n"),
            "{head}"
        );
        assert_eq!(body, vec![1u8; 188]);

        let (head, body) = ask(&r, "GET /t/8.ts HTTP/1.1\r\nRange: bytes=5000-\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 416 "), "{head}");
        assert!(head.contains("Content-Range: bytes */1880\r\n"), "{head}");
        assert!(!body.is_empty());

        let (head, body) = ask(&r, "HEAD /t/7.ts HTTP/1.1\r\n\r\n");
        assert!(head.contains("Content-Length: 1880\r\n"), "{head}");
        assert!(body.is_empty());

        let (head, body) = ask(
            &r,
            &format!("GET /t/8.ts HTTP/1.1\r\nIf-None-Match: {etag}\r\n\r\n"),
        );
        assert!(head.starts_with("HTTP/1.1 304 Not Modified\r\n"), "{head}");
        assert!(head.contains("Connection: keep-alive"), "{head}");
        assert!(!head.contains("Content-Length"), "{head}");
        assert!(body.is_empty());
    }

    #[test]
    fn playlists_are_short_lived_and_missing_segments_are_404() {
        let r = Hls::new(window());
        let (head, body) = ask(&r, "GET /t/index.m3u8 HTTP/1.1\r\n\r\n");
        assert!(head.contains("Content-Type: application/vnd.apple.mpegurl\r\n"));
        assert!(
            head.contains("Cache-Control: public, max-age=1\r\n"),
            "{head}"
        );
        let text = String::from_utf8(body).unwrap();
        assert!(
            text.contains("#EXT-X-MEDIA-SEQUENCE:7\n") && text.contains("\n8.ts\n"),
            "{text}"
        );
        let (head, _) = ask(&r, "GET /t/9.ts HTTP/1.1\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 404 "), "{head}");
        assert!(head.contains("Cache-Control: no-store\r\n"), "{head}");
        let (head, _) = ask(
            &Hls::new(HlsSlot::default()),
            "GET /t/index.m3u8 HTTP/1.1\r\n\r\n",
        );
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        assert!(head.contains("Retry-After: "), "{head}");
    }

    #[test]
    fn a_playlist_asked_with_a_token_is_the_viewers_own() {
        let r = Hls::new(window());
        let (head, body) = ask(&r, "GET /t/index.m3u8?token=abc HTTP/1.1\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.contains("Cache-Control: private, max-age=1\r\n"),
            "{head}"
        );
        assert!(!head.contains("ETag"), "{head}");
        let text = String::from_utf8(body).unwrap();
        assert!(text.contains("\n8.ts?token=abc\n"), "{text}");
        let (head, body) = ask(&r, "GET /t/master.m3u8?tkn=abc HTTP/1.1\r\n\r\n");
        assert!(head.contains("Cache-Control: private"), "{head}");
        assert!(String::from_utf8(body).unwrap().contains("?tkn=abc\n"));
    }

    #[test]
    fn hls_requests_are_counted() {
        let r = Hls::new(window());
        ask(&r, "GET /t/index.m3u8 HTTP/1.1\r\n\r\n");
        ask(&r, "GET /t/7.ts HTTP/1.1\r\n\r\n");
        ask(&r, "GET /t/9.ts HTTP/1.1\r\n\r\n");
        assert_eq!(
            r.1.hls_requests.load(std::sync::atomic::Ordering::Relaxed),
            3
        );
    }
}

#[test]
fn a_push_is_handed_over_once_what_is_queued_before_it_is_sent() {
    let mut c = Conn::new(ConnLimits::default(), 0);
    let wire = b"GET / HTTP/1.1\r\n\r\nPUT /push/demo?key=k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel";
    assert_eq!(c.on_read(wire, 0, &Streams), None);
    assert_eq!(c.state(), ConnState::HandingOver);
    assert!(!c.wants_read(), "the body is the push task's to read");
    // The answer to the GET goes out first.
    assert!(!c.hands_over());
    assert!(c.take_push().is_none());
    assert!(drain(&mut c).starts_with("HTTP/1.1 200"));
    let push = c.take_push().expect("handed over");
    assert_eq!(push.stream, "demo");
    assert_eq!(push.head.body, crate::http::RequestBody::Chunked);
    assert_eq!(push.head.query, "key=k");
    assert_eq!(push.early, b"5\r\nhel");
    assert!(c.take_push().is_none(), "once");
}

#[test]
fn bodies_outside_a_push_are_refused_and_close() {
    for (req, status) in [
        // A body to a path that takes none: answered without reading it, then closed.
        (
            &b"PUT /demo.ts HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"[..],
            "405",
        ),
        (b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", "405"),
        // Framing that could smuggle a request: 400.
        (
            b"PUT /push/demo HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "400",
        ),
        (
            b"PUT /push/demo HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            "400",
        ),
        (
            b"PUT /push/demo HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "400",
        ),
        (
            b"PUT /push/demo HTTP/1.1\r\nContent-Length: -3\r\n\r\n",
            "400",
        ),
    ] {
        let mut c = Conn::new(ConnLimits::default(), 0);
        c.on_read(req, 0, &Streams);
        let out = drain(&mut c);
        assert!(out.starts_with(&format!("HTTP/1.1 {status}")), "{out}");
        assert!(c.finished(), "{out} must close");
    }
    // GET of the push path: 405 naming the methods that push.
    let mut c = Conn::new(ConnLimits::default(), 0);
    c.on_read(b"GET /push/demo HTTP/1.1\r\n\r\n", 0, &Streams);
    let out = drain(&mut c);
    assert!(
        out.starts_with("HTTP/1.1 405") && out.contains("Allow: PUT, POST"),
        "{out}"
    );
}
