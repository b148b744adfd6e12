//! A shard: one thread pinned to one CPU, owning its listener (SO_REUSEPORT), its connections,
//! the ingest of the streams it is home to, and its own view of every stream.
//!
//! ```text
//!  poll ─┬─ listener    accept, cap, Conn::new
//!        ├─ waker       chunks from other shards' ingest (lock-free queues) → views
//!        ├─ ingest      datagrams → Pipeline → Chunk → own view + every other shard's queue
//!        ├─ conns       read → Conn (sans-IO HTTP) ; write → writev of shared Bytes
//!        └─ timers      demo pacing, timeouts
//! ```
//!
//! This is the epoll backend (through mio). The connection and stream logic it drives lives in
//! `http::Conn`, `stream::StreamView` and `ingest::Pipeline`, none of which does I/O, so the
//! io_uring backend drives the same logic.

mod fanout;

pub use fanout::{Fanout, Inbox, QUEUE_CHUNKS};

use crate::http::{Conn, ConnLimits, ConnState, Route, Router};
use crate::ingest::{DemoSource, Pipeline, SourceSpec, UdpIngest};
use crate::stream::{Chunk, StreamCounters, StreamView};
use crate::sys;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use std::io::{self, IoSlice, Read, Write};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LISTENER: Token = Token(0);
/// The waker's token.
pub const WAKER: Token = Token(1);
const INGEST_BASE: usize = 2;
const CONN_BASE: usize = 1 << 20;
/// The demo source produces what is due at most this often.
const DEMO_TICK: Duration = Duration::from_millis(10);

/// Whether the server runs, stops gracefully, or stops now.
#[derive(Debug, Default)]
pub struct RunState(AtomicU8);

impl RunState {
    const RUN: u8 = 0;
    const GRACEFUL: u8 = 1;
    const FAST: u8 = 2;

    /// Ask for a graceful stop (SIGTERM).
    pub fn stop_gracefully(&self) {
        let _ = self.0.compare_exchange(
            Self::RUN,
            Self::GRACEFUL,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// Ask for an immediate stop (SIGINT).
    pub fn stop_now(&self) {
        self.0.store(Self::FAST, Ordering::Release);
    }

    fn get(&self) -> u8 {
        self.0.load(Ordering::Acquire)
    }

    /// Whether a stop was asked for.
    pub fn stopping(&self) -> bool {
        self.get() != Self::RUN
    }
}

/// What every shard knows of a stream.
#[derive(Debug)]
pub struct StreamInfo {
    /// Its name.
    pub name: String,
    /// Its counters.
    pub counters: Arc<StreamCounters>,
    /// Seconds kept.
    pub window_ns: u64,
}

/// Everything a shard is started with.
#[derive(Debug)]
pub struct ShardSetup {
    /// Shard number.
    pub index: usize,
    /// CPU to pin to.
    pub cpu: usize,
    /// Its poller (made beforehand so other shards hold its waker).
    pub poll: Poll,
    /// Its listener (SO_REUSEPORT).
    pub listener: std::net::TcpListener,
    /// The streams.
    pub streams: Arc<Vec<StreamInfo>>,
    /// Chunks for this shard, one queue per stream.
    pub inbox: Inbox,
    /// Streams this shard is home to: their source and their fan-out to the other shards.
    pub home: Vec<(usize, SourceSpec, Fanout)>,
    /// Connection limits.
    pub limits: ConnLimits,
    /// Connection cap.
    pub max_connections: usize,
    /// Stop flag.
    pub run: Arc<RunState>,
    /// Viewers of a stream are written to at most this often (new data waits up to this long).
    pub flush_interval: Duration,
    /// SO_SNDBUF for accepted sockets (0: kernel autotuning).
    pub send_buffer: usize,
}

struct StreamsRouter<'a>(&'a [StreamInfo]);

impl Router for StreamsRouter<'_> {
    fn route(&self, path: &str) -> Route {
        if path == "/" {
            return Route::Index;
        }
        path.strip_prefix('/')
            .and_then(|p| p.strip_suffix(".ts"))
            .and_then(|name| self.0.iter().position(|s| s.name == name))
            .map_or(Route::NotFound, Route::Stream)
    }

    fn index(&self) -> String {
        let mut s = String::from("shardcast streams (progressive MPEG-TS at /{name}.ts):\n");
        for info in self.0 {
            s.push_str(&format!("{}\n", info.name));
        }
        s
    }
}

enum Source {
    Udp(UdpIngest),
    Demo {
        source: Box<DemoSource>,
        started: Instant,
    },
}

struct Home {
    stream: usize,
    source: Option<Source>,
    pipeline: Pipeline,
    fanout: Fanout,
}

struct Client {
    socket: TcpStream,
    conn: Conn,
}

/// A running shard.
#[allow(missing_debug_implementations)] // holds sockets and a poller; nothing useful to print
pub struct Shard {
    index: usize,
    poll: Poll,
    listener: TcpListener,
    streams: Arc<Vec<StreamInfo>>,
    views: Vec<StreamView>,
    viewers: Vec<Vec<usize>>,
    inbox: Inbox,
    homes: Vec<Home>,
    clients: slab::Slab<Client>,
    limits: ConnLimits,
    max_connections: usize,
    run: Arc<RunState>,
    started: Instant,
    read_buf: Vec<u8>,
    /// Per stream: since when viewers have data they were not yet fed.
    pending_since: Vec<Option<Instant>>,
    flush_interval: Duration,
    send_buffer: usize,
}

impl Shard {
    /// Set up the shard in its own thread: pin, register, open ingest.
    pub fn new(setup: ShardSetup) -> io::Result<Shard> {
        if let Err(e) = sys::pin_current_thread(setup.cpu) {
            tracing::warn!(
                shard = setup.index,
                cpu = setup.cpu,
                "cannot pin shard to its CPU: {e}"
            );
        }
        let mut listener = TcpListener::from_std(setup.listener);
        setup
            .poll
            .registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let n = setup.streams.len();
        let views = setup
            .streams
            .iter()
            .map(|s| StreamView::new(s.window_ns))
            .collect();
        let mut homes = Vec::new();
        for (i, (stream, spec, fanout)) in setup.home.into_iter().enumerate() {
            let name = &setup.streams[stream].name;
            let counters = setup.streams[stream].counters.clone();
            let (source, program) = match spec {
                SourceSpec::Demo => (
                    Some(Source::Demo {
                        source: Box::new(DemoSource::new()),
                        started: Instant::now(),
                    }),
                    None,
                ),
                SourceSpec::Udp(udp) => {
                    let opened = UdpIngest::open(&udp, |w| tracing::warn!(stream = %name, "{w}"));
                    match opened {
                        Ok(mut ingest) => {
                            setup.poll.registry().register(
                                ingest.socket(),
                                Token(INGEST_BASE + i),
                                Interest::READABLE,
                            )?;
                            tracing::info!(stream = %name, shard = setup.index, addr = %udp.addr, source = ?udp.source, "receiving MPEG-TS over UDP");
                            (Some(Source::Udp(ingest)), udp.program)
                        }
                        Err(e) => {
                            tracing::error!(stream = %name, addr = %udp.addr, "cannot open the ingest socket: {e}; the stream stays offline");
                            (None, udp.program)
                        }
                    }
                }
            };
            homes.push(Home {
                stream,
                source,
                pipeline: Pipeline::new(program, counters),
                fanout,
            });
        }
        Ok(Shard {
            index: setup.index,
            poll: setup.poll,
            listener,
            streams: setup.streams,
            views,
            viewers: vec![Vec::new(); n],
            inbox: setup.inbox,
            homes,
            clients: slab::Slab::new(),
            limits: setup.limits,
            max_connections: setup.max_connections,
            run: setup.run,
            started: Instant::now(),
            read_buf: vec![0; 16 * 1024],
            pending_since: vec![None; n],
            flush_interval: setup.flush_interval,
            send_buffer: setup.send_buffer,
        })
    }

    fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    /// Run until stopped.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut next_sweep = Instant::now();
        let mut stopping_since: Option<Instant> = None;
        loop {
            let timeout = self.next_timer().min(Duration::from_millis(100));
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    Token(t) if t >= CONN_BASE => self.client_event(t - CONN_BASE),
                    Token(t) => self.ingest(t - INGEST_BASE),
                }
            }
            self.demo_tick();
            self.take_inbox();
            self.feed_due();
            if Instant::now() >= next_sweep {
                self.sweep_timeouts();
                next_sweep = Instant::now() + Duration::from_millis(250);
            }
            match self.run.get() {
                RunState::RUN => {}
                RunState::GRACEFUL => {
                    let since = *stopping_since.get_or_insert_with(|| {
                        let _ = self.poll.registry().deregister(&mut self.listener);
                        tracing::info!(
                            shard = self.index,
                            clients = self.clients.len(),
                            "stopping: no new connections, flushing viewers"
                        );
                        Instant::now()
                    });
                    let flushed = self.clients.iter().all(|(_, c)| !c.conn.wants_write());
                    if flushed || since.elapsed() > Duration::from_secs(2) {
                        return Ok(());
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn next_timer(&self) -> Duration {
        let demo = self.homes.iter().filter_map(|h| match &h.source {
            Some(Source::Demo { source, started }) => {
                let due = Duration::from_nanos(source.next_due_ns()) + DEMO_TICK;
                Some(
                    due.saturating_sub(started.elapsed())
                        .max(Duration::from_millis(1)),
                )
            }
            _ => None,
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

    fn accept(&mut self) {
        loop {
            let (mut socket, _) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(shard = self.index, "accept failed: {e}");
                    return;
                }
            };
            if self.clients.len() >= self.max_connections {
                let _ = socket.write(&Conn::overloaded_response());
                continue;
            }
            let _ = socket.set_nodelay(true);
            if self.send_buffer > 0 {
                let _ = socket2::SockRef::from(&socket).set_send_buffer_size(self.send_buffer);
            }
            let entry = self.clients.vacant_entry();
            let key = entry.key();
            if let Err(e) = self.poll.registry().register(
                &mut socket,
                Token(CONN_BASE + key),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                tracing::warn!(shard = self.index, "cannot register a connection: {e}");
                continue;
            }
            let conn = Conn::new(self.limits, self.started.elapsed().as_nanos() as u64);
            entry.insert(Client { socket, conn });
        }
    }

    fn client_event(&mut self, key: usize) {
        if !self.clients.contains(key) {
            return;
        }
        let now = self.now_ns();
        let router = StreamsRouter(&self.streams);
        let mut subscribed = None;
        let mut gone = false;
        if let Some(client) = self.clients.get_mut(key) {
            loop {
                match client.socket.read(&mut self.read_buf) {
                    Ok(0) => {
                        gone = true;
                        break;
                    }
                    Ok(n) => {
                        if let Some(s) = client.conn.on_read(&self.read_buf[..n], now, &router) {
                            subscribed = Some(s);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        gone = true;
                        break;
                    }
                }
            }
        }
        if gone {
            self.close(key);
            return;
        }
        if let Some(stream) = subscribed {
            self.viewers[stream].push(key);
            StreamCounters::add(&self.streams[stream].counters.viewers, 1);
            if let Some(client) = self.clients.get_mut(key) {
                client.conn.feed(&self.views[stream], now);
            }
        }
        self.write(key);
    }

    /// Write what the connection has queued; close it when it is done or broken.
    fn write(&mut self, key: usize) {
        let now = self.now_ns();
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        let mut sent = 0u64;
        let mut broken = false;
        while client.conn.wants_write() {
            let mut slices = [IoSlice::new(&[]); 64];
            let n = client.conn.write_slices(&mut slices);
            match client.socket.write_vectored(&slices[..n]) {
                Ok(0) => {
                    broken = true;
                    break;
                }
                Ok(w) => {
                    client.conn.wrote(w, now);
                    sent += w as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    broken = true;
                    break;
                }
            }
        }
        if let ConnState::Streaming { stream } = client.conn.state() {
            StreamCounters::add(&self.streams[stream].counters.bytes_out, sent);
        }
        if broken || client.conn.finished() {
            self.close(key);
        }
    }

    fn close(&mut self, key: usize) {
        if !self.clients.contains(key) {
            return;
        }
        let mut client = self.clients.remove(key);
        let _ = self.poll.registry().deregister(&mut client.socket);
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

    fn ingest(&mut self, home: usize) {
        let received = sys::unix_ns();
        let Some(h) = self.homes.get_mut(home) else {
            return;
        };
        let Some(Source::Udp(udp)) = &mut h.source else {
            return;
        };
        let mut chunks = Vec::new();
        let pipeline = &mut h.pipeline;
        let result =
            udp.read_all(|datagram| pipeline.push(datagram, received, &mut |c| chunks.push(c)));
        h.pipeline.flush(received, &mut |c| chunks.push(c));
        let stream = h.stream;
        let counters = &self.streams[stream].counters;
        match result {
            Ok(pass) => {
                StreamCounters::add(&counters.datagrams, pass.datagrams);
                if pass.kernel_drops > 0 {
                    StreamCounters::add(&counters.kernel_drops, pass.kernel_drops);
                    tracing::warn!(stream = %self.streams[stream].name, drops = pass.kernel_drops, "the kernel dropped datagrams: the socket buffer was full");
                }
            }
            Err(e) => {
                tracing::warn!(stream = %self.streams[stream].name, "when reading the ingest socket: {e}")
            }
        }
        for chunk in chunks {
            self.publish(home, chunk);
        }
    }

    fn demo_tick(&mut self) {
        let mut produced = Vec::new();
        for (i, h) in self.homes.iter_mut().enumerate() {
            let Some(Source::Demo { source, started }) = &mut h.source else {
                continue;
            };
            let elapsed = started.elapsed().as_nanos() as u64;
            // Produce in batches of DEMO_TICK, like a source sending a datagram at a time.
            if source.next_due_ns() + DEMO_TICK.as_nanos() as u64 > elapsed {
                continue;
            }
            let now = sys::unix_ns();
            let mut bytes = Vec::new();
            source.due(elapsed, now, &mut bytes);
            StreamCounters::add(&self.streams[h.stream].counters.datagrams, 1);
            h.pipeline.push(&bytes, now, &mut |c| produced.push((i, c)));
            h.pipeline.flush(now, &mut |c| produced.push((i, c)));
        }
        for (home, chunk) in produced {
            self.publish(home, chunk);
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
        self.views[stream].push(chunk);
        self.pending_since[stream].get_or_insert_with(Instant::now);
    }

    fn take_inbox(&mut self) {
        let Self {
            inbox,
            views,
            pending_since,
            ..
        } = self;
        inbox.drain(|stream, chunk| {
            if let Some(view) = views.get_mut(stream) {
                view.push(chunk);
                pending_since[stream].get_or_insert_with(Instant::now);
            }
        });
    }

    /// Feed the viewers of every stream whose oldest unfed data has waited `flush_interval`
    /// (one larger write per viewer instead of one per chunk).
    fn feed_due(&mut self) {
        let now = self.now_ns();
        for stream in 0..self.pending_since.len() {
            match self.pending_since[stream] {
                Some(since) if since.elapsed() >= self.flush_interval => {
                    self.pending_since[stream] = None;
                }
                _ => continue,
            }
            let keys = self.viewers[stream].clone();
            for key in keys {
                let Some(client) = self.clients.get_mut(key) else {
                    continue;
                };
                match client.conn.feed(&self.views[stream], now) {
                    crate::http::Feed::Ok => {}
                    crate::http::Feed::Skipped => {
                        StreamCounters::add(&self.streams[stream].counters.lag_skips, 1);
                        tracing::info!(stream = %self.streams[stream].name, shard = self.index, "viewer fell behind: moved to the newest keyframe");
                    }
                    crate::http::Feed::Closed => {
                        StreamCounters::add(&self.streams[stream].counters.lag_closes, 1);
                        tracing::info!(stream = %self.streams[stream].name, shard = self.index, "viewer kept falling behind: closed");
                    }
                }
                self.write(key);
            }
        }
    }

    fn sweep_timeouts(&mut self) {
        let now = self.now_ns();
        let expired: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, c)| c.conn.timed_out(now))
            .map(|(k, _)| k)
            .collect();
        for key in expired {
            self.close(key);
        }
    }
}
