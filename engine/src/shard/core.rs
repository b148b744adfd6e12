//! The shard's logic with no I/O: streams and their views, viewers, ingest pipelines, flush
//! and timeout policy. A backend (epoll today) owns the sockets and calls in with bytes read,
//! bytes written and the time; it asks which connections have something to write.
//!
//! Driven in the unit tests below with no socket at all.

use super::{Fanout, Inbox, StreamInfo};
use crate::config::SegmentSend;
use crate::hls::Packager;
use crate::http::{Conn, ConnLimits, ConnState, Feed, HlsRoute, Page, RequestHead, Route, Router};
use crate::ingest::{DemoSource, Pipeline, UdpIngest};
use crate::player;
use crate::site::Site;
use crate::stream::{Chunk, StreamCounters, StreamView};
use crate::sys;
use bytes::Bytes;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Connections taken over the cap only to be told 503 (beyond them, new ones are closed).
pub const OVERLOAD_SLACK: usize = 256;

/// The demo source produces what is due at most this often (a datagram's worth at a time).
pub const DEMO_TICK: Duration = Duration::from_millis(10);

/// A stream this shard is home to: its pipeline, its fan-out, and the demo generator if the
/// source is the built-in one (sockets stay with the backend).
struct Home {
    stream: usize,
    pipeline: Pipeline,
    fanout: Fanout,
    demo: Option<(Box<DemoSource>, Instant)>,
}

struct StreamsRouter<'a> {
    streams: &'a [StreamInfo],
    site: &'a Site,
}

impl StreamsRouter<'_> {
    fn stream(&self, name: &str) -> Option<&StreamInfo> {
        self.streams.iter().find(|s| s.name == name)
    }

    /// `/{stream}/index.m3u8`, `/{stream}/master.m3u8`, `/{stream}/{sequence}.ts`.
    fn hls(&self, name: &str, file: &str) -> Route {
        let Some(info) = self.stream(name) else {
            return Route::NotFound;
        };
        let window = info.hls_window.load_full();
        let hls = match (file, window) {
            ("index.m3u8" | "master.m3u8", None) => HlsRoute::NotReady,
            ("index.m3u8", Some(w)) => HlsRoute::Media(w),
            ("master.m3u8", Some(w)) => HlsRoute::Master(w),
            (other, window) => {
                let Some(sequence) = other
                    .strip_suffix(".ts")
                    .filter(|n| {
                        !n.is_empty() && n.len() <= 19 && n.bytes().all(|b| b.is_ascii_digit())
                    })
                    .and_then(|n| n.parse::<u64>().ok())
                else {
                    return Route::NotFound;
                };
                match window.as_ref().and_then(|w| w.segment(sequence)) {
                    Some(segment) => HlsRoute::Segment(segment.clone()),
                    None => HlsRoute::NoSegment(sequence),
                }
            }
        };
        StreamCounters::add(&info.counters.hls_requests, 1);
        Route::Hls(hls)
    }
}

impl StreamsRouter<'_> {
    /// `/{stream}/info.json`: URLs from the public base URL (configured, or from a trusted
    /// proxy), else from the request's Host.
    fn info(&self, info: &StreamInfo, head: &RequestHead) -> Route {
        let base = self.site.base(head).url;
        let window = info.hls_window.load_full();
        Route::Page(Page {
            content_type: "application/json",
            body: player::info_json(
                &info.name,
                window.as_deref(),
                &info.counters,
                &base,
                (sys::unix_ns() / 1_000_000) as i64,
            ),
            cache_control: "no-store",
            etag: None,
        })
    }
}

impl Router for StreamsRouter<'_> {
    fn route(&self, head: &RequestHead) -> Route {
        let path = head.path.as_str();
        if path == "/" {
            return Route::Index;
        }
        let Some(rest) = path.strip_prefix('/') else {
            return Route::NotFound;
        };
        if rest == player::hlsjs_path() {
            return Route::Page(Page {
                content_type: "text/javascript; charset=utf-8",
                body: Bytes::from_static(player::HLSJS),
                cache_control: "public, max-age=31536000, immutable",
                etag: Some(format!("\"hls.js-{}\"", player::HLSJS_VERSION)),
            });
        }
        if let Some((name, file)) = rest.split_once('/') {
            return match (file, self.stream(name)) {
                ("info.json", Some(info)) => self.info(info, head),
                ("embed.js", Some(info)) => Route::Page(Page {
                    content_type: "text/javascript; charset=utf-8",
                    body: Bytes::from({
                        let base = self.site.base(head);
                        player::embed_js(&info.name, base.public.then_some(base.url.as_str()))
                    }),
                    cache_control: "no-cache",
                    etag: None,
                }),
                _ => self.hls(name, file),
            };
        }
        if let Some(info) = rest.strip_suffix(".html").and_then(|n| self.stream(n)) {
            return Route::Page(Page {
                content_type: "text/html; charset=utf-8",
                body: Bytes::from(player::page(&info.name)),
                cache_control: "no-cache",
                etag: None,
            });
        }
        rest.strip_suffix(".ts")
            .and_then(|name| self.streams.iter().position(|s| s.name == name))
            .map_or(Route::NotFound, Route::Stream)
    }

    fn index(&self) -> String {
        let mut s = String::from(
            "shardcast streams: /{name}.html (player), /{name}/master.m3u8 and /{name}/index.m3u8 (HLS), /{name}.ts (progressive MPEG-TS), /{name}/info.json, /{name}/embed.js\n",
        );
        for info in self.streams {
            s.push_str(&format!("{}\n", info.name));
        }
        s
    }
}

/// What a shard knows and decides (see the module docs).
#[allow(missing_debug_implementations)] // large tables; nothing useful to print
pub struct ShardCore {
    index: usize,
    streams: Arc<Vec<StreamInfo>>,
    views: Vec<StreamView>,
    viewers: Vec<Vec<usize>>,
    inbox: Inbox,
    homes: Vec<Home>,
    conns: slab::Slab<Conn>,
    limits: ConnLimits,
    started: Instant,
    pending_since: Vec<Option<Instant>>,
    /// When ingest received the oldest data waiting to be fed (UNIX ns), per stream.
    pending_received_ns: Vec<Option<u64>>,
    flush_interval: Duration,
    site: Arc<Site>,
}

impl ShardCore {
    /// A core for shard `index`. `homes` lists the streams it is home to, with their program
    /// selection, fan-out, and whether the source is the demo generator.
    pub fn new(
        index: usize,
        streams: Arc<Vec<StreamInfo>>,
        inbox: Inbox,
        homes: Vec<(usize, Option<u16>, Fanout, bool)>,
        limits: ConnLimits,
        flush_interval: Duration,
        segment_send: SegmentSend,
    ) -> Self {
        let n = streams.len();
        let homes = homes
            .into_iter()
            .map(|(stream, program, fanout, demo)| {
                let info = &streams[stream];
                let packager = Packager::new(
                    &info.name,
                    info.hls,
                    segment_send,
                    info.hls_window.clone(),
                    info.counters.clone(),
                );
                Home {
                    stream,
                    pipeline: Pipeline::new(
                        program,
                        info.counters.clone(),
                        (info.hls.segment_duration_s * 90_000.0) as u64,
                        crate::hls::first_sequence(),
                        Some(packager),
                    ),
                    fanout,
                    demo: demo.then(|| (Box::new(DemoSource::new()), Instant::now())),
                }
            })
            .collect();
        Self {
            index,
            views: streams
                .iter()
                .map(|s| StreamView::new(s.window_ns))
                .collect(),
            viewers: vec![Vec::new(); n],
            streams,
            inbox,
            homes,
            conns: slab::Slab::new(),
            limits,
            started: Instant::now(),
            pending_since: vec![None; n],
            pending_received_ns: vec![None; n],
            flush_interval,
            site: Arc::new(Site::default()),
        }
    }

    /// Monotonic nanoseconds since the shard started.
    pub fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    /// The shard's number.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The streams.
    pub fn streams(&self) -> &[StreamInfo] {
        &self.streams
    }

    /// How the server is reached from outside (public base URL, trusted proxies).
    pub fn set_site(&mut self, site: Arc<Site>) {
        self.site = site;
    }

    /// Connections open.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// A new connection; returns its key. Over `max_connections` it is taken only to be
    /// answered 503 (up to [`OVERLOAD_SLACK`] more); past that `None`: close it at once.
    pub fn open(
        &mut self,
        max_connections: usize,
        peer: Option<std::net::IpAddr>,
    ) -> Option<usize> {
        let now = self.now_ns();
        let n = self.conns.len();
        if n >= max_connections.saturating_add(OVERLOAD_SLACK) {
            return None;
        }
        let mut conn = if n >= max_connections {
            Conn::overloaded(self.limits, now)
        } else {
            Conn::new(self.limits, now)
        };
        conn.set_peer(peer);
        Some(self.conns.insert(conn))
    }

    /// Forget a connection (its socket is gone).
    pub fn close(&mut self, key: usize) {
        if self.conns.try_remove(key).is_none() {
            return;
        }
        for (stream, list) in self.viewers.iter_mut().enumerate() {
            if let Some(pos) = list.iter().position(|k| *k == key) {
                list.swap_remove(pos);
                self.streams[stream]
                    .counters
                    .viewers
                    .fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// The connection `key`, to take what it wants written.
    pub fn conn(&self, key: usize) -> Option<&Conn> {
        self.conns.get(key)
    }

    /// The connection `key`, for a completion-based backend to begin a send.
    pub fn conn_mut(&mut self, key: usize) -> Option<&mut Conn> {
        self.conns.get_mut(key)
    }

    /// Bytes read from connection `key`.
    pub fn on_read(&mut self, key: usize, data: &[u8]) {
        let now = self.now_ns();
        let router = StreamsRouter {
            streams: &self.streams,
            site: &self.site,
        };
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let Some(stream) = conn.on_read(data, now, &router) {
            self.viewers[stream].push(key);
            StreamCounters::add(&self.streams[stream].counters.viewers, 1);
            conn.feed(&self.views[stream], now);
        }
    }

    /// `n` bytes of connection `key` went out. Returns whether it is finished (close it).
    pub fn wrote(&mut self, key: usize, n: usize) -> bool {
        let now = self.now_ns();
        let Some(conn) = self.conns.get_mut(key) else {
            return true;
        };
        conn.wrote(n, now);
        if let ConnState::Streaming { stream } = conn.state() {
            StreamCounters::add(&self.streams[stream].counters.bytes_out, n as u64);
        }
        conn.finished()
    }

    /// Datagram (or read) `data` of home stream `home`, received at `received_ns` (UNIX).
    pub fn ingest(&mut self, home: usize, data: &[u8], received_ns: u64) {
        let mut chunks = Vec::new();
        if let Some(h) = self.homes.get_mut(home) {
            h.pipeline.push(data, received_ns, &mut |c| chunks.push(c));
        }
        for c in chunks {
            self.publish(home, c);
        }
    }

    /// The end of a batch of reads of home stream `home`: publish what is pending.
    pub fn ingest_done(
        &mut self,
        home: usize,
        datagrams: u64,
        kernel_drops: u64,
        received_ns: u64,
    ) {
        let mut chunks = Vec::new();
        let Some(h) = self.homes.get_mut(home) else {
            return;
        };
        h.pipeline.flush(received_ns, &mut |c| chunks.push(c));
        let info = &self.streams[h.stream];
        StreamCounters::add(&info.counters.datagrams, datagrams);
        if kernel_drops > 0 {
            StreamCounters::add(&info.counters.kernel_drops, kernel_drops);
            tracing::warn!(stream = %info.name, drops = kernel_drops, "the kernel dropped datagrams: the socket buffer was full");
        }
        for c in chunks {
            self.publish(home, c);
        }
    }

    /// Read every datagram waiting on home stream `home`'s socket and publish them.
    pub fn read_ingest(&mut self, home: usize, socket: &mut UdpIngest) {
        let received = sys::unix_ns();
        match socket.read_all(|datagram| self.ingest(home, datagram, received)) {
            Ok(pass) => self.ingest_done(home, pass.datagrams, pass.kernel_drops, received),
            Err(e) => {
                self.ingest_done(home, 0, 0, received);
                if let Some(h) = self.homes.get(home) {
                    tracing::warn!(stream = %self.streams[h.stream].name, "when reading the ingest socket: {e}");
                }
            }
        }
    }

    /// Run the demo generators that have a tick's worth of packets due.
    pub fn demo_tick(&mut self) {
        for home in 0..self.homes.len() {
            let Some((source, started)) = &mut self.homes[home].demo else {
                continue;
            };
            let elapsed = started.elapsed().as_nanos() as u64;
            if source.next_due_ns() + DEMO_TICK.as_nanos() as u64 > elapsed {
                continue;
            }
            let now = sys::unix_ns();
            let mut bytes = Vec::new();
            source.due(elapsed, now, &mut bytes);
            self.ingest(home, &bytes, now);
            self.ingest_done(home, 1, 0, now);
        }
    }

    fn publish(&mut self, home: usize, chunk: Chunk) {
        let Some(h) = self.homes.get(home) else {
            return;
        };
        let stream = h.stream;
        let counters = &self.streams[stream].counters;
        StreamCounters::add(&counters.packets_out, (chunk.data.len() / 188) as u64);
        h.fanout.send(&chunk, counters);
        let received_ns = chunk.received_ns;
        self.views[stream].push(chunk);
        counters
            .buffered_bytes
            .store(self.views[stream].bytes() as u64, Ordering::Relaxed);
        // With no progressive viewer here, nothing waits to be fed: no flush timer, no wake.
        if !self.viewers[stream].is_empty() {
            self.pending_since[stream].get_or_insert_with(Instant::now);
            self.pending_received_ns[stream].get_or_insert(received_ns);
        }
    }

    /// Take the chunks other shards published for this one.
    pub fn take_inbox(&mut self) {
        let Self {
            inbox,
            views,
            pending_since,
            pending_received_ns,
            viewers,
            ..
        } = self;
        inbox.drain(|stream, chunk| {
            if let Some(view) = views.get_mut(stream) {
                let received_ns = chunk.received_ns;
                view.push(chunk);
                if !viewers[stream].is_empty() {
                    pending_since[stream].get_or_insert_with(Instant::now);
                    pending_received_ns[stream].get_or_insert(received_ns);
                }
            }
        });
    }

    /// Feed the viewers of every stream whose oldest unfed data has waited `flush_interval`
    /// (one larger write per viewer instead of one per chunk); `write` gets the keys of the
    /// connections that now have something to write.
    pub fn feed_due(&mut self, mut write: impl FnMut(usize)) {
        let now = self.now_ns();
        for stream in 0..self.pending_since.len() {
            match self.pending_since[stream] {
                Some(since) if since.elapsed() >= self.flush_interval => {
                    self.pending_since[stream] = None
                }
                _ => continue,
            }
            // The oldest data fed now came in at this time: ingest-to-send latency.
            if let Some(received_ns) = self.pending_received_ns[stream].take() {
                self.streams[stream]
                    .counters
                    .send_latency
                    .record(sys::unix_ns().saturating_sub(received_ns));
            }
            for &key in &self.viewers[stream] {
                let Some(conn) = self.conns.get_mut(key) else {
                    continue;
                };
                let info = &self.streams[stream];
                match conn.feed(&self.views[stream], now) {
                    Feed::Ok => {}
                    Feed::Skipped => {
                        StreamCounters::add(&info.counters.lag_skips, 1);
                        tracing::info!(stream = %info.name, shard = self.index, "viewer fell behind: moved to the newest keyframe");
                    }
                    Feed::Closed => {
                        StreamCounters::add(&info.counters.lag_closes, 1);
                        tracing::info!(stream = %info.name, shard = self.index, "viewer kept falling behind: closed");
                    }
                }
                write(key);
            }
        }
    }

    /// Keys of the connections whose timeouts have expired (close them).
    pub fn expired(&self) -> Vec<usize> {
        let now = self.now_ns();
        self.conns
            .iter()
            .filter(|(_, c)| c.timed_out(now))
            .map(|(k, _)| k)
            .collect()
    }

    /// Whether every connection has written what it had queued.
    pub fn flushed(&self) -> bool {
        self.conns.iter().all(|(_, c)| !c.wants_write())
    }

    /// How long the backend may wait before the next demo tick or flush is due.
    pub fn next_timer(&self) -> Duration {
        let demo = self.homes.iter().filter_map(|h| {
            let (source, started) = h.demo.as_ref()?;
            let due = Duration::from_nanos(source.next_due_ns()) + DEMO_TICK;
            Some(
                due.saturating_sub(started.elapsed())
                    .max(Duration::from_millis(1)),
            )
        });
        let flush = self.pending_since.iter().flatten().map(|since| {
            self.flush_interval
                .saturating_sub(since.elapsed())
                .max(Duration::from_micros(100))
        });
        demo.chain(flush)
            .min()
            .unwrap_or(Duration::from_millis(100))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::IoSlice;

    fn core(flush_ms: u64) -> ShardCore {
        let streams = Arc::new(vec![StreamInfo {
            name: "demo".into(),
            counters: Arc::new(StreamCounters::default()),
            window_ns: 10_000_000_000,
            hls: Default::default(),
            hls_window: Default::default(),
        }]);
        ShardCore::new(
            0,
            streams,
            Inbox::default(),
            vec![(0, None, Fanout::default(), true)],
            ConnLimits::default(),
            Duration::from_millis(flush_ms),
            SegmentSend::Copy,
        )
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
        let until = Instant::now() + Duration::from_millis(1500);
        let mut body = Vec::new();
        while Instant::now() < until {
            std::thread::sleep(core.next_timer().min(Duration::from_millis(5)));
            core.demo_tick();
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
        assert_eq!(
            core.streams()[0].counters.viewers.load(Ordering::Relaxed),
            1
        );
        core.close(key);
        assert_eq!(
            core.streams()[0].counters.viewers.load(Ordering::Relaxed),
            0
        );
    }

    #[test]
    fn writes_wait_for_the_flush_interval() {
        let mut core = core(200);
        let key = core.open(usize::MAX, None).unwrap();
        core.on_read(key, b"GET /demo.ts HTTP/1.1\r\n\r\n");
        drain(&mut core, key);
        std::thread::sleep(DEMO_TICK * 2);
        core.demo_tick();
        let mut fed = 0;
        core.feed_due(|_| fed += 1);
        assert_eq!(fed, 0, "fed before the flush interval");
        std::thread::sleep(Duration::from_millis(210));
        core.feed_due(|_| fed += 1);
        assert_eq!(fed, 1);
    }
}

/// The end of every backend's loop turn: sweeping timeouts now and then, and the stop
/// sequence (no new connections, viewers get up to two seconds to take what is queued).
#[derive(Debug)]
pub struct Housekeeping {
    next_sweep: Instant,
    stopping_since: Option<Instant>,
    /// Test hook for the watchdog: this shard stops going round its loop at this moment.
    hang_at: Option<(usize, Instant)>,
    /// When the loop's wait last returned.
    woke: Option<Instant>,
}

/// `SHARDCAST_DEBUG_HANG_SHARD=SHARD:SECONDS` makes shard SHARD stop going round its loop
/// SECONDS after it starts, as a stuck shard would, so that the watchdog can be seen to stop
/// pinging. Only the tests set it.
pub const HANG_HOOK: &str = "SHARDCAST_DEBUG_HANG_SHARD";

impl Default for Housekeeping {
    fn default() -> Self {
        let hang_at = std::env::var(HANG_HOOK).ok().and_then(|v| {
            let (shard, seconds) = v.split_once(':')?;
            Some((
                shard.parse().ok()?,
                Instant::now() + Duration::from_secs_f64(seconds.parse().ok()?),
            ))
        });
        Self {
            next_sweep: Instant::now(),
            stopping_since: None,
            hang_at,
            woke: None,
        }
    }
}

impl Housekeeping {
    /// The loop's wait has just returned: a turn's work starts (its length is accounted at
    /// [`Housekeeping::should_exit`]).
    pub fn woke(&mut self) {
        self.woke = Some(Instant::now());
    }

    /// Every 250 ms, the connections whose timeouts expired (close them).
    pub fn expired(&mut self, core: &ShardCore) -> Vec<usize> {
        if Instant::now() < self.next_sweep {
            return Vec::new();
        }
        self.next_sweep = Instant::now() + Duration::from_millis(250);
        core.expired()
    }

    /// Called once per loop turn: records the shard's heartbeat (for the watchdog) and says
    /// whether the loop should end. `stop_accepting` runs once, when a stop is first seen.
    pub fn should_exit(
        &mut self,
        core: &ShardCore,
        run: &super::RunState,
        stop_accepting: impl FnOnce(),
    ) -> bool {
        run.beat(core.index());
        if let Some(woke) = self.woke.take() {
            run.account(core.index(), core.connections(), woke.elapsed());
        }
        if let Some((shard, at)) = self.hang_at {
            if shard == core.index() && Instant::now() >= at {
                tracing::error!(shard, "{HANG_HOOK}: this shard hangs now");
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
        }
        if !run.stopping() {
            return false;
        }
        let since = *self.stopping_since.get_or_insert_with(|| {
            stop_accepting();
            tracing::info!(
                shard = core.index(),
                clients = core.connections(),
                "stopping: no new connections, flushing viewers"
            );
            Instant::now()
        });
        run.fast() || core.flushed() || since.elapsed() > Duration::from_secs(2)
    }
}
