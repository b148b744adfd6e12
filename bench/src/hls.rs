//! `hls`: many HLS viewers on one thread, each behaving like a player.
//!
//! A viewer keeps one keep-alive connection. It reads the media playlist, starts three
//! segments from the live edge (as hls.js and Apple's players do), fetches every segment it
//! has not fetched yet, once, in order, and reads the playlist again one target duration after
//! the previous read (players never poll faster). It records how long each segment took, the
//! segments it could not fetch before they left the playlist (missed), segments that finished
//! after they were due (first seen in a playlist plus their duration: late), and every 4xx and
//! 5xx, separating 404s for segments the playlist it had just read listed. Figures count only
//! the measured window, after the ramp-up.
//!
//! With `low_latency` a viewer is a low-latency HLS player instead: from its first playlist
//! on it fetches every part (EXT-X-PART) after the newest it had, once, in order, and
//! reloads the playlist with a blocking request for the hinted part (`_HLS_msn`,
//! `_HLS_part`) as soon as it has nothing else to fetch; segments counts parts then, and the
//! time each blocking reload was held is recorded.
//!
//! With `connection_per_request` every request goes on a connection of its own, asking
//! `Connection: close`, and the viewer closes it once the response is in: the pattern of
//! players and probes that do not keep connections alive.

use crate::cpu::{WindowCost, WindowStart};
use crate::load::Load;
use crate::net::Socket;
use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};
use shardcast_protocols::hls::{parse, MediaPlaylist, Playlist};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

/// What the viewers saw in the window.
#[derive(Debug)]
pub struct HlsReport {
    /// Viewers asked for.
    pub viewers: usize,
    /// Viewers that read a playlist.
    pub started: usize,
    /// Connections that ended or failed (each is reopened).
    pub reconnects: u64,
    /// Of those, connections that failed (reset, or TLS ended without close_notify) rather
    /// than closed.
    pub resets: u64,
    /// Playlists read.
    pub playlists: u64,
    /// Segments fetched whole.
    pub segments: u64,
    /// Segments that left the playlist before the viewer fetched them.
    pub missed: u64,
    /// Segments that finished after they were due.
    pub late: u64,
    /// 404s for a segment the playlist the viewer had just read listed.
    pub listed_404: u64,
    /// Other 4xx answers.
    pub status_4xx: u64,
    /// 5xx answers.
    pub status_5xx: u64,
    /// Playlists that did not parse as media playlists.
    pub bad_playlists: u64,
    /// Bytes of segment bodies.
    pub bytes: u64,
    /// Segment fetch time, request sent to last byte, microseconds.
    pub fetch_us: Histogram<u64>,
    /// Low-latency: how long blocking playlist reloads were held, microseconds.
    pub reload_us: Histogram<u64>,
    /// CPU and memory over the window.
    pub cost: WindowCost,
}

impl HlsReport {
    /// Server CPU milliseconds per viewer-second.
    pub fn server_ms_per_viewer_second(&self) -> Option<f64> {
        self.cost.server_ms_per_viewer_second(self.started)
    }

    /// Aggregate segment throughput in Gbit/s over the window.
    pub fn gbit_per_s(&self) -> f64 {
        self.cost.gbit_per_s(self.bytes)
    }

    /// The human summary.
    pub fn summary(&self) -> String {
        let q = |p: f64| self.fetch_us.value_at_quantile(p) as f64 / 1000.0;
        let mut s = format!(
            "viewers {}/{} started, {} reconnects ({} resets); window {:.1} s: {} playlists, {} segments, {:.3} Gbit/s\n\
             missed {}  late {}  404 for listed segments {}  other 4xx {}  5xx {}  bad playlists {}\n\
             segment fetch ms ({} samples): p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}\n",
            self.started,
            self.viewers,
            self.reconnects,
            self.resets,
            self.cost.window.as_secs_f64(),
            self.playlists,
            self.segments,
            self.gbit_per_s(),
            self.missed,
            self.late,
            self.listed_404,
            self.status_4xx,
            self.status_5xx,
            self.bad_playlists,
            self.fetch_us.len(),
            q(0.5),
            q(0.99),
            q(0.999),
            self.fetch_us.max() as f64 / 1000.0
        );
        if !self.reload_us.is_empty() {
            let r = |p: f64| self.reload_us.value_at_quantile(p) as f64 / 1000.0;
            s.push_str(&format!(
                "blocking reloads held ms ({} samples): p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}\n",
                self.reload_us.len(),
                r(0.5),
                r(0.99),
                r(0.999),
                self.reload_us.max() as f64 / 1000.0
            ));
        }
        s.push_str(&self.cost.summary(self.started));
        s
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Asked {
    Playlist {
        /// A blocking reload (low-latency).
        blocking: bool,
    },
    Segment {
        sequence: u64,
        due: Instant,
        listed: bool,
    },
}

#[derive(Default)]
struct Counts {
    playlists: u64,
    segments: u64,
    missed: u64,
    late: u64,
    listed_404: u64,
    status_4xx: u64,
    status_5xx: u64,
    bad_playlists: u64,
    bytes: u64,
    reconnects: u64,
    resets: u64,
}

struct Viewer {
    socket: Option<Socket>,
    /// Request bytes not yet written.
    pending: Vec<u8>,
    asked: Option<(Asked, Instant)>,
    /// The segment asked for, to ask again after a reconnect.
    asking: Option<(u64, String, Instant)>,
    head: Vec<u8>,
    /// Status and body length of the response being read, once its head is in.
    response: Option<(u16, usize)>,
    /// Its chunked body's decoder, when it is sent in chunks (HLS-Proxy's are).
    chunks: Option<Dechunker>,
    body: Vec<u8>,
    body_read: usize,
    /// Segments to fetch: (sequence, URI, due).
    queue: VecDeque<(u64, String, Instant)>,
    /// The next sequence this viewer wants (None before its first playlist).
    next: Option<u64>,
    last_poll: Option<Instant>,
    target: Duration,
    started: bool,
    /// Low-latency: the newest part fetched or queued, and the part the playlist hinted.
    last_part: Option<(u64, u32)>,
    hint: Option<(u64, u32)>,
    /// The response is in and this connection was for it alone: close it.
    finished_with_connection: bool,
}

impl Viewer {
    fn new() -> Self {
        Self {
            socket: None,
            pending: Vec::new(),
            asked: None,
            asking: None,
            head: Vec::new(),
            response: None,
            chunks: None,
            body: Vec::new(),
            body_read: 0,
            queue: VecDeque::new(),
            next: None,
            last_poll: None,
            target: Duration::from_secs(2),
            started: false,
            last_part: None,
            hint: None,
            finished_with_connection: false,
        }
    }

    /// When this viewer has something to do and nothing in flight (a low-latency viewer
    /// with a hint reloads at once: the server holds the request).
    fn wants_to_ask(&self, now: Instant) -> bool {
        self.asked.is_none()
            && (!self.queue.is_empty()
                || self.hint.is_some()
                || self.last_poll.is_none_or(|at| now >= at + self.target))
    }
}

struct Run<'a> {
    load: &'a Load,
    base: String,
    poll: Poll,
    in_window: bool,
    counts: Counts,
    fetch_us: Histogram<u64>,
    reload_us: Histogram<u64>,
    buf: Vec<u8>,
}

/// Run the load; blocks for ramp + settle + measure.
pub fn run(load: &Load) -> io::Result<HlsReport> {
    let base = load
        .path
        .rsplit_once('/')
        .map_or("/".to_owned(), |(dir, _)| format!("{dir}/"));
    let mut run = Run {
        load,
        base,
        poll: Poll::new()?,
        in_window: false,
        counts: Counts::default(),
        fetch_us: Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
            .map_err(|e| io::Error::other(e.to_string()))?,
        reload_us: Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
            .map_err(|e| io::Error::other(e.to_string()))?,
        buf: vec![0u8; 256 * 1024],
    };
    let mut events = Events::with_capacity(4096);
    let mut viewers: Vec<Viewer> = Vec::with_capacity(load.viewers);
    let start = Instant::now();
    let window_start = start + load.ramp + load.settle;
    let end = window_start + load.measure;
    let mut window: Option<WindowStart> = None;
    let mut next_progress = start + Duration::from_secs(1);
    let mut last_bytes = 0u64;
    let mut meter = crate::cpu::CpuMeter::new(load.server_pid);
    while Instant::now() < end {
        while viewers.len() < load.due(start.elapsed()) {
            viewers.push(Viewer::new());
        }
        if !run.in_window && Instant::now() >= window_start {
            run.in_window = true;
            run.counts = Counts::default();
            run.fetch_us.reset();
            run.reload_us.reset();
            window = Some(WindowStart::now(load.server_pid)?);
        }
        let now = Instant::now();
        for (i, v) in viewers.iter_mut().enumerate() {
            if v.wants_to_ask(now) {
                run.ask(i, v, now)?;
            }
        }
        run.poll.poll(&mut events, Some(Duration::from_millis(5)))?;
        for event in events.iter() {
            let i = event.token().0;
            if let Some(v) = viewers.get_mut(i) {
                run.service(v);
            }
        }
        if load.progress && Instant::now() >= next_progress {
            let started = viewers.iter().filter(|v| v.started).count();
            eprintln!(
                "  {:>5.1} s  viewers {started:>6}  {:.3} Gbit/s  segments {}  missed {}  late {}  {}",
                start.elapsed().as_secs_f64(),
                run.counts.bytes.saturating_sub(last_bytes) as f64 * 8.0 / 1e9,
                run.counts.segments,
                run.counts.missed,
                run.counts.late,
                meter.sample(),
            );
            last_bytes = run.counts.bytes;
            next_progress += Duration::from_secs(1);
        }
    }
    let cost = match window {
        Some(w) => w.finish(load.measure)?,
        None => WindowStart::now(load.server_pid)?.finish(Duration::ZERO)?,
    };
    let c = run.counts;
    Ok(HlsReport {
        viewers: load.viewers,
        started: viewers.iter().filter(|v| v.started).count(),
        reconnects: c.reconnects,
        resets: c.resets,
        playlists: c.playlists,
        segments: c.segments,
        missed: c.missed,
        late: c.late,
        listed_404: c.listed_404,
        status_4xx: c.status_4xx,
        status_5xx: c.status_5xx,
        bad_playlists: c.bad_playlists,
        bytes: c.bytes,
        fetch_us: run.fetch_us,
        reload_us: run.reload_us,
        cost,
    })
}

impl Run<'_> {
    /// Send the viewer's next request: the next segment, or the playlist when it is time.
    fn ask(&mut self, i: usize, v: &mut Viewer, now: Instant) -> io::Result<()> {
        if v.socket.is_none() {
            let mut socket = Socket::connect(self.load.addr, self.load.tls.as_ref())?;
            self.poll.registry().register(
                socket.tcp(),
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            v.socket = Some(socket);
        }
        let (asked, path) = match v.queue.pop_front() {
            Some((sequence, uri, due)) => {
                let path = resolve(&self.base, &uri);
                v.asking = Some((sequence, uri, due));
                (
                    Asked::Segment {
                        sequence,
                        due,
                        listed: true,
                    },
                    path,
                )
            }
            None => {
                v.last_poll = Some(now);
                match v.hint.filter(|_| self.load.low_latency) {
                    Some((msn, part)) => {
                        let path = &self.load.path;
                        let join = if path.contains('?') { '&' } else { '?' };
                        (
                            Asked::Playlist { blocking: true },
                            format!("{path}{join}_HLS_msn={msn}&_HLS_part={part}"),
                        )
                    }
                    None => (Asked::Playlist { blocking: false }, self.load.path.clone()),
                }
            }
        };
        let connection = if self.load.connection_per_request {
            "Connection: close\r\n"
        } else {
            ""
        };
        v.pending = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: shardcast-bench\r\n{connection}\r\n",
            self.load.addr
        )
        .into_bytes();
        v.asked = Some((asked, now));
        v.head.clear();
        v.response = None;
        v.body.clear();
        v.body_read = 0;
        self.service(v);
        Ok(())
    }

    fn service(&mut self, v: &mut Viewer) {
        let Some(mut socket) = v.socket.take() else {
            return;
        };
        match self.exchange(v, &mut socket) {
            Ok(()) if v.finished_with_connection => {
                v.finished_with_connection = false;
                let _ = self.poll.registry().deregister(socket.tcp());
            }
            Ok(()) => v.socket = Some(socket),
            Err(()) => {
                let _ = self.poll.registry().deregister(socket.tcp());
                self.counts.reconnects += 1;
                // Ask again on a new connection (a segment goes back to the front).
                if let (Some((Asked::Segment { .. }, _)), Some(again)) =
                    (v.asked.take(), v.asking.take())
                {
                    v.queue.push_front(again);
                }
            }
        }
    }

    /// Write what is pending and read what has come. Err: the connection is over.
    fn exchange(&mut self, v: &mut Viewer, socket: &mut Socket) -> Result<(), ()> {
        let mut buf = std::mem::take(&mut self.buf);
        let result = self.exchange_with(v, socket, &mut buf);
        self.buf = buf;
        result
    }

    fn exchange_with(
        &mut self,
        v: &mut Viewer,
        socket: &mut Socket,
        buf: &mut [u8],
    ) -> Result<(), ()> {
        while !v.pending.is_empty() {
            match socket.write(&v.pending) {
                Ok(0) => return Err(()),
                Ok(n) => {
                    v.pending.drain(..n);
                }
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::NotConnected =>
                {
                    return Ok(())
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.counts.resets += 1;
                    return Err(());
                }
            }
        }
        loop {
            let n = match socket.read(buf) {
                Ok(0) => return Err(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.counts.resets += 1;
                    return Err(());
                }
            };
            // One request is in flight at a time, so a read holds one response at most.
            let Some((asked, _)) = v.asked else {
                return Err(()); // bytes nobody asked for
            };
            if v.response.is_some() {
                self.body(v, asked, &buf[..n])?;
                if v.finished_with_connection {
                    return Ok(());
                }
                continue;
            }
            v.head.extend_from_slice(&buf[..n]);
            let Some(end) = memchr::memmem::find(&v.head, b"\r\n\r\n") else {
                if v.head.len() > 16 * 1024 {
                    return Err(());
                }
                continue;
            };
            let rest = v.head.split_off(end + 4);
            let (status, length, chunked) = read_head(&v.head).ok_or(())?;
            v.response = Some((status, length));
            v.chunks = chunked.then(Dechunker::default);
            v.head.clear();
            // What followed the head (possibly nothing, possibly a whole empty body).
            self.body(v, asked, &rest)?;
            if v.finished_with_connection {
                return Ok(());
            }
        }
    }

    /// Body bytes of the current response (and the end of it, when they complete it).
    fn body(&mut self, v: &mut Viewer, asked: Asked, bytes: &[u8]) -> Result<(), ()> {
        let Some((status, length)) = v.response else {
            return Err(());
        };
        if let Some(mut chunks) = v.chunks.take() {
            let playlist = matches!(asked, Asked::Playlist { .. });
            let mut data = 0;
            let ended = chunks.feed(bytes, |piece| {
                data += piece.len();
                if playlist {
                    v.body.extend_from_slice(piece);
                }
            })?;
            v.body_read += data;
            if ended {
                // The length counted is what the chunks carried.
                v.response = Some((status, v.body_read));
                self.done(v);
            } else {
                v.chunks = Some(chunks);
            }
            return Ok(());
        }
        let take = (length - v.body_read).min(bytes.len());
        v.body_read += take;
        if matches!(asked, Asked::Playlist { .. }) {
            v.body.extend_from_slice(&bytes[..take]);
        }
        if take < bytes.len() {
            return Err(()); // more than the length: the exchange is broken
        }
        if v.body_read == length {
            self.done(v);
        }
        Ok(())
    }

    /// A whole response has arrived.
    fn done(&mut self, v: &mut Viewer) {
        let (Some((asked, sent)), Some((status, length))) = (v.asked.take(), v.response.take())
        else {
            return;
        };
        let now = Instant::now();
        v.finished_with_connection = self.load.connection_per_request;
        match asked {
            Asked::Playlist { blocking } => {
                if status == 200 {
                    self.counts.playlists += 1;
                    if blocking {
                        let _ = self
                            .reload_us
                            .record(now.duration_since(sent).as_micros() as u64);
                    }
                    if self.load.low_latency {
                        self.parts(v, now);
                    } else {
                        self.playlist(v, now);
                    }
                } else {
                    self.status(status);
                    // Ask afresh, after a target duration.
                    v.hint = None;
                }
            }
            Asked::Segment {
                sequence,
                due,
                listed,
            } => {
                if status == 200 {
                    self.counts.segments += 1;
                    self.counts.bytes += length as u64;
                    let _ = self
                        .fetch_us
                        .record(now.duration_since(sent).as_micros() as u64);
                    if now > due {
                        self.counts.late += 1;
                    }
                } else if status == 404 && listed {
                    self.counts.listed_404 += 1;
                    self.counts.missed += 1;
                } else {
                    self.status(status);
                    self.counts.missed += 1;
                }
                v.next = Some(v.next.map_or(sequence + 1, |n| n.max(sequence + 1)));
            }
        }
        v.body.clear();
    }

    fn status(&mut self, status: u16) {
        match status {
            400..=499 => self.counts.status_4xx += 1,
            500..=599 => self.counts.status_5xx += 1,
            _ => {}
        }
    }

    /// A playlist was read: queue the segments this viewer has not had.
    fn playlist(&mut self, v: &mut Viewer, now: Instant) {
        let Ok(Playlist::Media(m)) = parse(&v.body) else {
            self.counts.bad_playlists += 1;
            return;
        };
        v.started = true;
        v.target = Duration::from_secs(m.target_duration.max(1));
        let first = m.media_sequence;
        let count = m.segments.len() as u64;
        if count == 0 {
            return;
        }
        let last = first + count - 1;
        let next = *v.next.get_or_insert(last.saturating_sub(2).max(first));
        let queued_to = v.queue.back().map(|(s, _, _)| *s + 1).unwrap_or(next);
        if queued_to < first {
            // These left the playlist before this viewer could fetch them.
            self.counts.missed += first - queued_to;
            v.queue.clear();
            v.next = Some(first);
        }
        let from = queued_to.max(first);
        for (i, s) in m.segments.iter().enumerate() {
            let sequence = first + i as u64;
            if sequence >= from {
                v.queue
                    .push_back((sequence, s.uri.clone(), now + s.duration));
            }
        }
        // Segments already queued but now gone from the playlist are missed when asked for
        // (the server answers 404 and they count as missed, not as 404s for listed ones).
        for (sequence, _, _) in v.queue.iter() {
            if *sequence < first {
                self.counts.missed += 1;
            }
        }
        v.queue.retain(|(s, _, _)| *s >= first);
    }
}

impl Run<'_> {
    /// A low-latency playlist was read: queue the parts after the newest this viewer has
    /// (none for its first: it starts at the live edge), and keep the hint.
    fn parts(&mut self, v: &mut Viewer, now: Instant) {
        let Ok(Playlist::Media(m)) = parse(&v.body) else {
            self.counts.bad_playlists += 1;
            return;
        };
        let Some(hint) = m.preload_hints.first().and_then(|h| part_name(&h.uri)) else {
            self.counts.bad_playlists += 1; // not a low-latency playlist
            v.hint = None;
            return;
        };
        v.started = true;
        v.target = Duration::from_secs(m.target_duration.max(1));
        let listed = listed_parts(&m);
        match v.last_part {
            None => v.last_part = listed.last().map(|(key, _, _)| *key),
            Some(last) => {
                if listed.first().is_some_and(|(key, _, _)| key.0 > last.0 + 1) {
                    // Its parts left the playlist before this viewer came back for them.
                    self.counts.missed += 1;
                }
                for (key, uri, duration) in listed.into_iter().filter(|(key, _, _)| *key > last) {
                    v.queue.push_back((key.0, uri, now + duration));
                    v.last_part = Some(key);
                }
            }
        }
        v.hint = Some(hint);
    }
}

/// Every part a playlist lists, in order: ((segment, index), URI, duration).
fn listed_parts(m: &MediaPlaylist) -> Vec<((u64, u32), String, Duration)> {
    let building = m.media_sequence + m.segments.len() as u64;
    m.segments
        .iter()
        .enumerate()
        .map(|(i, s)| (m.media_sequence + i as u64, &s.parts))
        .chain(std::iter::once((building, &m.trailing_parts)))
        .flat_map(|(sequence, parts)| {
            parts
                .iter()
                .enumerate()
                .map(move |(j, p)| ((sequence, j as u32), p.uri.clone(), p.duration))
        })
        .collect()
}

/// `(segment, index)` of a part named `{segment}.{index}.ts` (shardcast's names).
/// The path `uri` names, read from a playlist under directory `base` (`/a/b/`): absolute
/// paths as they are, relative ones under `base` with their `.` and `..` segments resolved
/// (the HLS proxy's playlists point `../../` up); absolute URLs by their path.
fn resolve(base: &str, uri: &str) -> String {
    if uri.starts_with('/') {
        return uri.to_owned();
    }
    // An absolute URL (HLS-Proxy writes them): its path, on the server asked already.
    if let Some(rest) = uri
        .strip_prefix("http://")
        .or_else(|| uri.strip_prefix("https://"))
    {
        return rest
            .find('/')
            .map_or("/".to_owned(), |i| rest[i..].to_owned());
    }
    let (path, query) = match uri.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (uri, None),
    };
    let mut segments: Vec<&str> = base.split('/').filter(|s| !s.is_empty()).collect();
    let parts: Vec<&str> = path.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        match *part {
            "." => {}
            ".." => {
                segments.pop();
            }
            "" if i + 1 < parts.len() => {}
            other => segments.push(other),
        }
    }
    let mut out = format!("/{}", segments.join("/"));
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

fn part_name(uri: &str) -> Option<(u64, u32)> {
    let name = uri.split('?').next()?.strip_suffix(".ts")?;
    let (sequence, index) = name.rsplit('/').next()?.split_once('.')?;
    Some((sequence.parse().ok()?, index.parse().ok()?))
}

/// Status and Content-Length of a response head.
/// A response head's status, Content-Length (0 when absent) and whether its body is chunked.
fn read_head(head: &[u8]) -> Option<(u16, usize, bool)> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let fields: Vec<(&str, &str)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let length = fields
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let chunked = fields.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    });
    Some((status, length, chunked))
}

/// Reads a chunked body (RFC 9112 §7.1) as it arrives, in pieces of any size.
#[derive(Debug, Default)]
struct Dechunker {
    /// Data bytes left in the current chunk.
    left: usize,
    /// The size line (or trailer line) read so far.
    line: Vec<u8>,
    /// After a chunk's data: its CRLF to skip.
    crlf: u8,
    /// The last chunk was read: trailer lines until an empty one.
    trailer: bool,
}

impl Dechunker {
    /// Take `bytes`, handing the data in them to `data`; true once the body has ended.
    fn feed(&mut self, mut bytes: &[u8], mut data: impl FnMut(&[u8])) -> Result<bool, ()> {
        while !bytes.is_empty() {
            if self.left > 0 {
                let n = self.left.min(bytes.len());
                data(&bytes[..n]);
                self.left -= n;
                bytes = &bytes[n..];
                if self.left == 0 {
                    self.crlf = 2;
                }
                continue;
            }
            if self.crlf > 0 {
                self.crlf -= 1;
                bytes = &bytes[1..];
                continue;
            }
            let Some(end) = bytes.iter().position(|b| *b == b'\n') else {
                self.line.extend_from_slice(bytes);
                if self.line.len() > 4096 {
                    return Err(());
                }
                return Ok(false);
            };
            self.line.extend_from_slice(&bytes[..end]);
            bytes = &bytes[end + 1..];
            let line = std::mem::take(&mut self.line);
            let line = std::str::from_utf8(&line).map_err(|_| ())?.trim();
            if self.trailer {
                if line.is_empty() {
                    return Ok(true);
                }
                continue;
            }
            let size = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16).map_err(|_| ())?;
            if size == 0 {
                self.trailer = true;
            } else {
                self.left = size;
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::{resolve, Dechunker};

    #[test]
    fn a_chunked_body_is_read_split_at_every_byte() {
        let body = b"5\r\nhello\r\n7;x=1\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n";
        for cut in 0..body.len() {
            let mut d = Dechunker::default();
            let mut got = Vec::new();
            let first = d.feed(&body[..cut], |p| got.extend_from_slice(p)).unwrap();
            let second = d.feed(&body[cut..], |p| got.extend_from_slice(p)).unwrap();
            assert!(!first || cut == body.len());
            assert!(second, "{cut}");
            assert_eq!(got, b"hello, world", "{cut}");
        }
        assert!(Dechunker::default().feed(b"zz\r\n", |_| {}).is_err());
    }

    #[test]
    fn uris_resolve_against_the_playlists_directory() {
        assert_eq!(resolve("/demo/", "seg-1.ts"), "/demo/seg-1.ts");
        assert_eq!(resolve("/demo/", "/other/x.ts?a=1"), "/other/x.ts?a=1");
        assert_eq!(
            resolve("/proxy/news/SIG/", "../../news/S2/B64.ts"),
            "/proxy/news/S2/B64.ts"
        );
        assert_eq!(resolve("/a/b/", "./c/../d.ts?x=../y"), "/a/b/d.ts?x=../y");
        assert_eq!(resolve("/", "../../x.ts"), "/x.ts");
        assert_eq!(resolve("/a/", "http://h:1/b/c.ts?x"), "/b/c.ts?x");
    }
}
