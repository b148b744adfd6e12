//! The shard's logic with no I/O: streams and their views, viewers, ingest pipelines, flush
//! and timeout policy. A backend (io_uring or epoll) owns the sockets and calls in with bytes
//! read, bytes written and the time; it asks which connections have something to write, and
//! which ingest sockets to open or close when the stream table changes.
//!
//! Driven with no socket at all in its tests (`core/tests.rs`). The URL grammar and the
//! answers are the outputs' ([`crate::output`]), the access gate is the router's
//! (`shard/router.rs`), and the end of each loop turn is [`super::housekeeping`].

use super::admission::Admission;
use super::catalog::{Catalog, StreamInfo};
use super::router::StreamsRouter;
use super::{Clock, Fanout};
use crate::hls::Packager;
use crate::hls::SegmentSend;
use crate::http::{Conn, ConnLimits, ConnState, Feed, Held};
use crate::ingest::Pipeline;
use crate::session::{LocalSessions, SessionKey, ShardCommand, ShardLink, Verdict};
use crate::site::Site;
use crate::source::{Delivery, SourceContext, SourceDriver, UdpIngest, UdpSpec};
use crate::stream::{Chunk, StreamCounters, StreamView};
use crate::wake::Wake;
use arc_swap::ArcSwap;
use crossbeam_queue::ArrayQueue;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Connections taken over the cap only to be told 503 (beyond them, new ones are closed).
pub const OVERLOAD_SLACK: usize = 256;

/// A source that makes its own bytes (the demo, a file) is asked for them at most this often
/// (a datagram's worth at a time).
pub const SOURCE_TICK: Duration = Duration::from_millis(10);

/// A stream this shard is home to: its pipeline, its fan-out, and its source's driver, with
/// when it started (sockets stay with the backend).
struct Home {
    slot: usize,
    pipeline: Pipeline,
    /// The RTP sequence numbers of its datagrams, when they come in RTP.
    rtp: shardcast_protocols::rtp::Sequence,
    counters: Arc<StreamCounters>,
    fanout: Fanout,
    driver: Box<dyn SourceDriver>,
    started: Instant,
}

/// This shard's side of one stream: its view, its progressive viewers here, what waits to be
/// fed to them, and the queue its chunks arrive through from the home shard.
struct Local {
    info: Arc<StreamInfo>,
    view: StreamView,
    viewers: Vec<usize>,
    pending_since: Option<Instant>,
    /// When ingest received the oldest data waiting to be fed (UNIX ns).
    pending_received_ns: Option<u64>,
    /// The first chunk waiting to be fed (when `pending_since` is set).
    pending_first: u64,
    inbox: Option<Arc<ArrayQueue<Chunk>>>,
    /// When the latest chunk arrived (shard clock, ns), if one has.
    last_data_ns: Option<u64>,
    /// Its viewers were closed for want of data (logged once until data comes again).
    silent: bool,
    /// This shard is its home (the one that counts what the view drops).
    home: bool,
    /// Connections holding a low-latency HLS request until the stream publishes what it
    /// names, and the window they last saw ([`window_generation`]).
    held: Vec<usize>,
    held_window: u64,
}

/// What the backend does after the core followed a change of the stream table.
#[derive(Debug, Default)]
pub struct StreamChanges {
    /// Connections whose stream ended: write what they have queued, then close them.
    pub ended: Vec<usize>,
    /// Home streams whose source is gone: close their ingest socket (by home index).
    pub stop_sources: Vec<usize>,
    /// Home streams to receive over UDP: open a socket (home index, stream name, source).
    pub start_sources: Vec<(usize, String, UdpSpec)>,
}

/// What a shard knows and decides (see the module docs).
#[allow(missing_debug_implementations)] // large tables; nothing useful to print
pub struct ShardCore {
    index: usize,
    /// The stream table as published, and the one this shard has followed.
    catalog: Arc<ArcSwap<Catalog>>,
    followed: Arc<Catalog>,
    /// Every shard's waker (home streams wake the others when they publish).
    wakers: Vec<Arc<dyn Wake>>,
    /// This shard's side of each stream, by catalog slot.
    locals: Vec<Option<Local>>,
    /// The streams this shard is home to, by home index (the backend's name for their sockets).
    homes: Vec<Option<Home>>,
    conns: slab::Slab<Conn>,
    limits: ConnLimits,
    started: Instant,
    /// The current loop turn's time ([`ShardCore::begin_turn`]).
    clock: Clock,
    flush_interval: Duration,
    segment_send: SegmentSend,
    site: Arc<Site>,
    sessions: LocalSessions,
    link: ShardLink,
    /// Connections holding a request until their session's access decision arrives.
    waiting: std::collections::HashMap<SessionKey, Vec<usize>>,
    /// The HLS proxy, and the connections holding a request until it has fetched a resource
    /// (by the resource's key).
    proxies: Option<Arc<crate::proxy::Proxies>>,
    fetching: std::collections::HashMap<Arc<str>, Vec<usize>>,
    /// The per-address cap, and by connection key the address counted for it.
    admission: Arc<Admission>,
    admitted: Vec<Option<std::net::IpAddr>>,
    /// Where sources that do their own I/O (TCP) run their tasks.
    tasks: Option<tokio::runtime::Handle>,
    /// Where push connections go, and streams fed by pushes register.
    pushes: Option<Arc<crate::source::Pushes>>,
    /// What sends streams on.
    push_outs: Option<Arc<crate::output::push_out::PushOuts>>,
    /// The proxy's fetcher (streams whose source is a configured proxy pull through it).
    fetcher: Option<Arc<crate::proxy::Fetcher>>,
    /// By connection key, the TLS session of a TLS connection.
    tls: Vec<Option<Box<crate::tls::TlsLink>>>,
    tls_counters: Option<Arc<crate::tls::TlsCounters>>,
    /// Request bytes decrypted in the current read (reused).
    plaintext: Vec<u8>,
    /// Where UDP ingest sockets read on the tick (or polled) take their datagrams, a batch a
    /// system call (reused, shared by this shard's sockets).
    datagram_buffers: crate::source::DatagramBuffers,
    /// Sockets and windows handed over by an upgrade, or kept to hand over; the ingest pause.
    handoff: Arc<crate::upgrade::Handoff>,
    /// This shard has let go of its ingest sockets for an upgrade: what its sources make is
    /// dropped until the pause ends.
    ingest_paused: bool,
}

/// What the control plane's commands left for the backend.
#[derive(Debug, Default)]
pub struct ControlWork {
    /// Connections to close.
    pub close: Vec<usize>,
    /// Connections with something new to write.
    pub write: Vec<usize>,
}

impl ShardCore {
    /// A core for shard `index`, following the stream table `catalog`; `wakers` wake every
    /// shard (by shard number). It holds no stream until [`ShardCore::follow_catalog`].
    pub fn new(
        index: usize,
        catalog: Arc<ArcSwap<Catalog>>,
        wakers: Vec<Arc<dyn Wake>>,
        limits: ConnLimits,
        flush_interval: Duration,
        segment_send: SegmentSend,
        clock: Clock,
    ) -> Self {
        Self {
            index,
            catalog,
            followed: Arc::new(Catalog::default()),
            wakers,
            locals: Vec::new(),
            homes: Vec::new(),
            conns: slab::Slab::new(),
            limits,
            started: clock.mono,
            clock,
            flush_interval,
            segment_send,
            site: Arc::new(Site::default()),
            sessions: {
                let d = crate::config::ServerLimits::default();
                LocalSessions::new(d.max_sessions, d.max_sessions_per_stream)
            },
            link: ShardLink::new(),
            waiting: std::collections::HashMap::new(),
            proxies: None,
            fetching: std::collections::HashMap::new(),
            admission: Arc::new(Admission::default()),
            admitted: Vec::new(),
            tasks: None,
            pushes: None,
            push_outs: None,
            fetcher: None,
            tls: Vec::new(),
            tls_counters: None,
            plaintext: Vec::new(),
            datagram_buffers: Default::default(),
            handoff: Arc::new(crate::upgrade::Handoff::default()),
            ingest_paused: false,
        }
    }

    /// Where ingest sockets are kept for an upgrade, and windows an upgrade handed over.
    pub fn set_handoff(&mut self, handoff: Arc<crate::upgrade::Handoff>) {
        self.handoff = handoff;
    }

    /// The handoff (for the backend's ingest sockets).
    pub fn handoff(&self) -> &crate::upgrade::Handoff {
        &self.handoff
    }

    /// The runtime sources that do their own I/O (TCP) run their tasks on.
    pub fn set_source_tasks(&mut self, tasks: tokio::runtime::Handle) {
        self.tasks = Some(tasks);
    }

    /// Where push connections go.
    pub fn set_pushes(&mut self, pushes: Arc<crate::source::Pushes>) {
        self.pushes = Some(pushes);
    }

    /// What sends streams on: the streams this shard is home to start and end their pushes.
    pub fn set_push_outs(&mut self, push_outs: Arc<crate::output::push_out::PushOuts>) {
        self.push_outs = Some(push_outs);
    }

    /// The proxy's fetcher, which streams whose source is a configured proxy pull through.
    pub fn set_fetcher(&mut self, fetcher: Arc<crate::proxy::Fetcher>) {
        self.fetcher = Some(fetcher);
    }

    /// The HLS proxy `/proxy/` requests go to.
    pub fn set_proxies(&mut self, proxies: Arc<crate::proxy::Proxies>) {
        self.proxies = Some(proxies);
    }

    /// Connection `key` is a push whose responses are all sent ([`Conn::take_push`]): it
    /// leaves the shard with `socket` for the push sources. False (and the socket is the
    /// backend's still) when it is not such a connection.
    pub fn hand_over(
        &mut self,
        key: usize,
        socket: std::net::TcpStream,
    ) -> Result<(), std::net::TcpStream> {
        let Some(push) = self.conns.get_mut(key).and_then(Conn::take_push) else {
            return Err(socket);
        };
        self.close(key);
        if let Some(pushes) = &self.pushes {
            pushes.accept(socket, push);
        }
        Ok(())
    }

    /// Whether connection `key` is a push ready to leave the shard.
    pub fn hands_over(&self, key: usize) -> bool {
        self.conns.get(key).is_some_and(Conn::hands_over)
    }

    /// The queues to and from the control plane (sessions, commands).
    pub fn set_link(&mut self, link: ShardLink) {
        self.link = link;
    }

    /// Stream `name`'s input failed: tell the control plane (`INPUT_ABORT`).
    pub fn input_aborted(&self, name: &str, why: &str) {
        let _ = self.link.aborted.push((name.to_owned(), why.to_owned()));
        self.link.news.notify_one();
    }

    /// Report session activity to the control plane (about once a second), waking its
    /// collector when there was any.
    pub fn report_sessions(&mut self) {
        if self.sessions.report(&self.link.reports, self.clock.mono) > 0 {
            self.link.reported.notify_one();
        }
    }

    /// Carry out the control plane's commands; returns the connections to close and those
    /// with something new to write.
    pub fn take_commands(&mut self) -> ControlWork {
        let mut work = ControlWork::default();
        if self.catalog.load().generation != self.followed.generation {
            // A decision may be about a stream this shard has not started yet (a wildcard
            // instance): the backend follows the table first, commands wait a turn.
            return work;
        }
        while let Some(command) = self.link.commands.pop() {
            let close = &mut work.close;
            match command {
                ShardCommand::Verdict(key, verdict) => {
                    let parked = self.waiting.remove(&key).unwrap_or_default();
                    self.sessions.decided(key, verdict, self.clock.mono);
                    for conn in parked {
                        self.resume(conn);
                        work.write.push(conn);
                    }
                    self.sessions.used_once();
                }
                ShardCommand::Fetched(key, object) => {
                    for conn in self.fetching.remove(&key).unwrap_or_default() {
                        self.drive_with(conn, Some((&key, &object)), |conn, now, router| {
                            conn.resume(now, router)
                        });
                        work.write.push(conn);
                    }
                }
                ShardCommand::Stop(key, how_long) => {
                    if let Some(id) = self.sessions.stop(key, how_long, self.clock.mono) {
                        close.extend(
                            self.conns
                                .iter()
                                .filter(|(_, c)| c.session() == Some(id))
                                .map(|(k, _)| k),
                        );
                    }
                }
            }
        }
        work
    }

    /// Answer connection `key`'s held request now that its session has a decision.
    fn resume(&mut self, key: usize) {
        self.drive(key, |conn, now, router| conn.resume(now, router));
    }

    /// Let connection `key` handle requests through `step` with this shard's router, then
    /// take what they left (sessions, questions, a new viewer).
    fn drive(
        &mut self,
        key: usize,
        step: impl FnOnce(&mut Conn, u64, &StreamsRouter<'_>) -> Option<usize>,
    ) {
        self.drive_with(key, None, step);
    }

    /// [`ShardCore::drive`], with what the HLS proxy fetched for the request held.
    fn drive_with(
        &mut self,
        key: usize,
        fetched: Option<(&str, &crate::proxy::cache::Object)>,
        step: impl FnOnce(&mut Conn, u64, &StreamsRouter<'_>) -> Option<usize>,
    ) {
        let now = self.now_ns();
        let router = StreamsRouter {
            catalog: &self.followed,
            site: &self.site,
            sessions: &self.sessions,
            clock: self.clock,
            proxies: self.proxies.as_deref(),
            fetched,
        };
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let viewer = step(conn, now, &router);
        self.after_request(key, viewer);
    }

    /// Catch up with the stream table, if it changed: end the streams that went (their
    /// viewers are told to finish), start the new ones (a view here; at home, a pipeline and
    /// a fan-out, and a socket for the backend to open). `None` when nothing changed.
    pub fn follow_catalog(&mut self) -> Option<StreamChanges> {
        let paused = self.handoff.ingest_paused();
        if paused != self.ingest_paused {
            return Some(self.pause_ingest(paused));
        }
        if self.catalog.load().generation == self.followed.generation {
            return None;
        }
        let catalog = self.catalog.load_full();
        let mut changes = StreamChanges::default();
        let slots = catalog.slots.len().max(self.locals.len());
        self.locals.resize_with(slots, || None);
        for slot in 0..slots {
            let wanted = catalog.slots.get(slot).and_then(Option::as_ref);
            let same = match (&self.locals[slot], wanted) {
                (Some(local), Some(info)) => Arc::ptr_eq(&local.info, info),
                (None, None) => true,
                _ => false,
            };
            if same {
                continue;
            }
            if let Some(local) = self.locals[slot].take() {
                self.end_stream(slot, local, &mut changes);
            }
            if let Some(info) = wanted {
                self.start_stream(slot, info.clone(), &mut changes);
            }
        }
        while self.locals.last().is_some_and(Option::is_none) {
            self.locals.pop();
        }
        self.followed = catalog;
        if self.ingest_paused {
            // Opened when the pause ends (or by the process the upgrade hands them to).
            changes.start_sources.clear();
        }
        Some(changes)
    }

    fn end_stream(&mut self, slot: usize, local: Local, changes: &mut StreamChanges) {
        for &key in &local.viewers {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.end_stream();
                changes.ended.push(key);
            }
        }
        local
            .info
            .counters
            .viewers
            .fetch_sub(local.viewers.len() as u64, Ordering::Relaxed);
        if let Some(home) = self
            .homes
            .iter()
            .position(|h| h.as_ref().is_some_and(|h| h.slot == slot))
        {
            let had_socket = match self.homes[home].take() {
                Some(h) => match h.driver.socket() {
                    Some(udp) => {
                        self.handoff
                            .forget_ingest(&crate::upgrade::ingest_key(&local.info.name, udp));
                        true
                    }
                    None => false,
                },
                None => false,
            };
            if had_socket {
                changes.stop_sources.push(home);
            }
            if let Some(push_outs) = &self.push_outs {
                push_outs.stream_ended(&local.info.name, &local.info.taps);
            }
            tracing::info!(stream = %local.info.name, shard = self.index, "stream ended");
        }
    }

    /// An upgrade pauses ingest (`true`: every ingest socket closed here, the handoff keeps
    /// them) or the pause ends because it failed (`false`: opened again from the handoff).
    fn pause_ingest(&mut self, paused: bool) -> StreamChanges {
        self.ingest_paused = paused;
        let mut changes = StreamChanges::default();
        for (index, home) in self.homes.iter().enumerate() {
            let Some(h) = home else { continue };
            let Some(local) = self.locals.get(h.slot).and_then(Option::as_ref) else {
                continue;
            };
            let Some(udp) = h
                .driver
                .socket()
                .filter(|_| !local.info.config.is_template())
            else {
                continue;
            };
            if paused {
                changes.stop_sources.push(index);
            } else {
                changes
                    .start_sources
                    .push((index, local.info.name.clone(), udp.clone()));
            }
        }
        self.handoff.shard_released(paused);
        if paused {
            tracing::info!(shard = self.index, "ingest paused for an upgrade");
        } else {
            tracing::info!(
                shard = self.index,
                "ingest resumed: the upgrade did not happen"
            );
        }
        changes
    }

    /// Whether ingest is paused for an upgrade.
    pub fn ingest_paused(&self) -> bool {
        self.ingest_paused
    }

    fn start_stream(&mut self, slot: usize, info: Arc<StreamInfo>, changes: &mut StreamChanges) {
        if info.home == self.index {
            let mut fanout = Fanout::default();
            for (shard, queue) in info.queues.iter().enumerate() {
                if let (Some(queue), Some(waker)) = (queue, self.wakers.get(shard)) {
                    fanout.add(queue.clone(), waker.clone());
                }
            }
            let mut packager = Packager::new(
                &info.name,
                info.hls,
                self.segment_send,
                info.hls_window.clone(),
                info.counters.clone(),
            )
            .with_limits(&info.config.limits)
            .with_news(self.link.news.clone());
            // An upgrade handed this stream's window over: it goes on from there.
            let mut first_sequence = crate::hls::first_sequence();
            if let Some(window) = self.handoff.take_window(&info.name) {
                if let Some(last) = window.segments.last() {
                    first_sequence = last.sequence + 1;
                }
                tracing::info!(stream = %info.name, segments = window.segments.len(), "HLS window taken over from the previous process");
                packager.restore(window, self.now_ns());
            }
            let driver = info.source.driver(&SourceContext {
                stream: &info.name,
                tasks: self.tasks.as_ref(),
                waker: self
                    .wakers
                    .get(self.index)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(crate::wake::Nobody)),
                counters: info.counters.clone(),
                idle: Duration::from_secs_f64(info.config.limits.source_timeout_s),
                pushes: self.pushes.as_ref(),
                fetcher: self.fetcher.as_ref(),
            });
            let program = driver.program();
            // A template's instances receive, not the template itself.
            let socket = driver
                .socket()
                .filter(|_| !info.config.is_template())
                .cloned();
            let home = Home {
                slot,
                pipeline: Pipeline::new(
                    program,
                    info.counters.clone(),
                    (info.hls.segment_duration_s * 90_000.0) as u64,
                    first_sequence,
                    Some(packager),
                )
                .with_parts(
                    info.hls
                        .part_duration_s
                        .map(|p| (p * 90_000.0).round() as u64),
                ),
                fanout,
                driver,
                started: self.clock.mono,
                rtp: Default::default(),
                counters: info.counters.clone(),
            };
            let index = match self.homes.iter().position(Option::is_none) {
                Some(free) => {
                    self.homes[free] = Some(home);
                    free
                }
                None => {
                    self.homes.push(Some(home));
                    self.homes.len() - 1
                }
            };
            if let Some(udp) = socket {
                changes.start_sources.push((index, info.name.clone(), udp));
            }
            tracing::info!(stream = %info.name, shard = self.index, source = %crate::source::redacted(&info.source_url), "stream started");
            if let Some(push_outs) = self
                .push_outs
                .as_ref()
                .filter(|_| !info.config.is_template())
            {
                push_outs.stream_started(&info.name, &info.taps, &info.config.push);
                if let Some(record) = info.config.record.as_ref().filter(|r| r.enabled) {
                    if let Err(e) = push_outs.start_recording(
                        &info.name,
                        &info.taps,
                        record.spec(),
                        crate::output::push_out::Origin::Config,
                    ) {
                        tracing::warn!(stream = %info.name, "recording not started: {e}");
                    }
                }
            }
        }
        self.locals[slot] = Some(Local {
            view: StreamView::new(info.window_ns, info.config.limits.max_buffer),
            viewers: Vec::new(),
            pending_since: None,
            pending_received_ns: None,
            pending_first: 0,
            inbox: info.queues.get(self.index).cloned().flatten(),
            last_data_ns: None,
            silent: false,
            home: info.home == self.index,
            held: Vec::new(),
            held_window: 0,
            info,
        });
    }

    /// A loop turn starts at `clock`: everything until the next one happens then.
    pub fn begin_turn(&mut self, clock: Clock) {
        self.clock = clock;
    }

    /// The current turn's time.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Monotonic nanoseconds from the shard's start to the current turn.
    pub fn now_ns(&self) -> u64 {
        self.clock
            .mono
            .saturating_duration_since(self.started)
            .as_nanos() as u64
    }

    /// The shard's number.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The streams as this shard last followed them.
    pub fn catalog(&self) -> &Catalog {
        &self.followed
    }

    /// How the server is reached from outside (public base URL, trusted proxies).
    pub fn set_site(&mut self, site: Arc<Site>) {
        self.site = site;
    }

    /// Connections open.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// A new connection from `peer`; returns its key. Over `max_connections`, or over the
    /// per-address cap ([`Admission`]; trusted proxies are exempt), it is taken only to be
    /// answered 503 (up to [`OVERLOAD_SLACK`] more); past that `None`: close it at once.
    pub fn open(
        &mut self,
        max_connections: usize,
        peer: Option<std::net::IpAddr>,
    ) -> Option<usize> {
        let now = self.now_ns();
        let n = self.conns.len();
        let counted = peer.filter(|ip| !self.site.trusts(Some(*ip)));
        let refusal = if n >= max_connections {
            self.admission.refused_full.fetch_add(1, Ordering::Relaxed);
            Some("server full")
        } else if counted.is_some_and(|ip| !self.admission.admit(ip)) {
            self.admission
                .refused_address
                .fetch_add(1, Ordering::Relaxed);
            Some("too many connections from your address")
        } else {
            None
        };
        if refusal.is_some() && n >= max_connections.saturating_add(OVERLOAD_SLACK) {
            return None;
        }
        let mut conn = match refusal {
            Some(why) => Conn::refusing(self.limits, now, why),
            None => Conn::new(self.limits, now),
        };
        conn.set_peer(peer);
        let key = self.conns.insert(conn);
        if refusal.is_none() {
            if let Some(ip) = counted {
                if self.admitted.len() <= key {
                    self.admitted.resize(key + 1, None);
                }
                self.admitted[key] = Some(ip);
            }
        }
        Some(key)
    }

    /// Forget a connection (its socket is gone).
    pub fn close(&mut self, key: usize) {
        let Some(conn) = self.conns.try_remove(key) else {
            return;
        };
        self.tls_close(key);
        if let Some(ip) = self.admitted.get_mut(key).and_then(Option::take) {
            self.admission.release(ip);
        }
        if let (ConnState::Streaming { .. }, Some(id)) = (conn.state(), conn.session()) {
            self.sessions.connection(id, false, self.clock.mono);
        }
        if let ConnState::Streaming { stream } = conn.state() {
            if let Some(Some(local)) = self.locals.get_mut(stream) {
                if let Some(pos) = local.viewers.iter().position(|k| *k == key) {
                    local.viewers.swap_remove(pos);
                    local.info.counters.viewers.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Track at most `max` sessions, `per_stream` of one stream.
    pub fn set_session_limits(&mut self, max: usize, per_stream: usize) {
        self.sessions = LocalSessions::new(max, per_stream);
    }

    /// Sessions tracked now, and forgotten early to stay within the bounds so far.
    pub fn session_counts(&self) -> (usize, u64) {
        (self.sessions.len(), self.sessions.evicted)
    }

    /// The per-address cap and the refusal counters, shared by every shard.
    pub fn set_admission(&mut self, admission: Arc<Admission>) {
        self.admission = admission;
    }

    /// The per-address cap and the refusal counters.
    pub fn admission(&self) -> &Admission {
        &self.admission
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
        if self.is_tls(key) {
            return self.tls_read(key, data);
        }
        self.drive(key, |conn, now, router| conn.on_read(data, now, router));
    }

    /// What a connection's requests left for the core: a session to count, a question to
    /// ask, a viewer to feed.
    fn after_request(&mut self, key: usize, viewer: Option<usize>) {
        let now = self.now_ns();
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let Some(mut ask) = conn.take_ask() {
            let waiting = self.waiting.entry(ask.key.clone()).or_default();
            waiting.push(key);
            if waiting.len() == 1 {
                ask.shard = self.index;
                let refused = self.link.asks.push(ask).err();
                if let Some(ask) = refused {
                    // Too many questions outstanding: this one is answered 503 at once.
                    self.waiting.remove(&ask.key);
                    let verdict = Verdict {
                        refused: Some(503),
                        headers: None,
                        ttl: Duration::from_secs(1),
                        redirect: None,
                    };
                    self.sessions
                        .decided(ask.key.clone(), verdict, self.clock.mono);
                    self.resume(key);
                    self.sessions.used_once();
                    return;
                }
                self.link.asked.notify_one();
            }
            return;
        }
        let held = conn.take_hold();
        if let Some((session, user_agent)) = conn.take_new_session() {
            let id = self
                .sessions
                .touch(session, user_agent.as_deref(), self.clock.mono);
            conn.set_session(id);
            if let (Some(id), true) = (id, viewer.is_some()) {
                self.sessions.connection(id, true, self.clock.mono);
            }
        }
        match held {
            Some(Held::Waiting { stream, first }) => {
                if let Some(Some(local)) = self.locals.get_mut(stream) {
                    if local.held.is_empty() {
                        local.held_window = window_generation(&local.info);
                    }
                    local.held.push(key);
                    if first {
                        StreamCounters::add(&local.info.counters.hls_held, 1);
                    }
                }
            }
            Some(Held::TimedOut(stream)) => {
                if let Some(Some(local)) = self.locals.get(stream) {
                    StreamCounters::add(&local.info.counters.hls_hold_timeouts, 1);
                }
            }
            Some(Held::Fetching { key: resource, .. }) => {
                let waiting = self.fetching.entry(resource.clone()).or_default();
                waiting.push(key);
                if waiting.len() == 1 {
                    if self.link.fetches.push(resource.clone()).is_err() {
                        // Too many fetches asked for and not answered: 503 at once.
                        if let Some(proxies) = &self.proxies {
                            proxies
                                .load
                                .busy
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        let busy =
                            crate::proxy::cache::Object::error(503, "the proxy is busy: try again");
                        self.fetching.remove(&resource);
                        self.drive_with(key, Some((&resource, &busy)), |conn, now, router| {
                            conn.resume(now, router)
                        });
                        return;
                    }
                    self.link.fetch_asked.notify_one();
                }
            }
            Some(Held::FetchTimedOut) => {}
            None => {}
        }
        if let Some(stream) = viewer {
            if let Some(Some(local)) = self.locals.get_mut(stream) {
                local.viewers.push(key);
                StreamCounters::add(&local.info.counters.viewers, 1);
                conn.feed(&local.view, None, now);
            }
        }
    }

    /// `n` bytes of connection `key` went out. Returns whether it is finished (close it).
    pub fn wrote(&mut self, key: usize, n: usize) -> bool {
        let now = self.now_ns();
        let Some(conn) = self.conns.get_mut(key) else {
            return true;
        };
        conn.wrote(n, now);
        if let Some(id) = conn.session() {
            self.sessions.sent(id, n as u64);
        }
        if let ConnState::Streaming { stream } = conn.state() {
            if let Some(Some(local)) = self.locals.get(stream) {
                StreamCounters::add(&local.info.counters.bytes_out, n as u64);
            }
        }
        if conn.parse_pending() {
            // Its responses drained below the bounds: the requests it pipelined are next.
            self.drive(key, |conn, now, router| conn.on_read(&[], now, router));
        }
        self.conns.get(key).is_none_or(Conn::finished)
    }

    /// Datagram (or read) `data` of home stream `home`, received at `received_ns` (UNIX): raw
    /// TS, or TS in RTP, whose sequence numbers are counted (lost, late).
    pub fn ingest(&mut self, home: usize, data: &[u8], received_ns: u64) {
        use shardcast_protocols::rtp::{unwrap, Datagram};
        if self.ingest_paused {
            return;
        }
        let mut chunks = Vec::new();
        if let Some(Some(h)) = self.homes.get_mut(home) {
            let payload = match unwrap(data) {
                Datagram::Raw(raw) => raw,
                Datagram::Rtp { sequence, payload } => {
                    let arrival = h.rtp.arrived(sequence);
                    StreamCounters::add(&h.counters.rtp_lost, u64::from(arrival.missing));
                    StreamCounters::add(&h.counters.rtp_late, u64::from(arrival.late));
                    StreamCounters::add(&h.counters.rtp_datagrams, 1);
                    payload
                }
            };
            h.pipeline
                .push(payload, received_ns, &mut |c| chunks.push(c));
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
        let Some(Some(h)) = self.homes.get_mut(home) else {
            return;
        };
        h.pipeline.flush(received_ns, &mut |c| chunks.push(c));
        if let Some(Some(local)) = self.locals.get(h.slot) {
            let info = &local.info;
            StreamCounters::add(&info.counters.datagrams, datagrams);
            if kernel_drops > 0 {
                StreamCounters::add(&info.counters.kernel_drops, kernel_drops);
                tracing::warn!(stream = %info.name, drops = kernel_drops, "the kernel dropped datagrams: the socket buffer was full");
            }
        }
        for c in chunks {
            self.publish(home, c);
        }
    }

    /// The name of home stream `home`, for log lines.
    pub fn home_name(&self, home: usize) -> &str {
        self.homes
            .get(home)
            .and_then(Option::as_ref)
            .and_then(|h| self.locals.get(h.slot)?.as_ref())
            .map_or("?", |l| l.info.name.as_str())
    }

    /// Read every datagram waiting on home stream `home`'s socket and publish them; returns
    /// the bytes read.
    pub fn read_ingest(&mut self, home: usize, socket: &mut UdpIngest) -> usize {
        let received = self.clock.unix_ns;
        let mut bytes = 0;
        let mut buffers = std::mem::take(&mut self.datagram_buffers);
        let pass = socket.read_all(&mut buffers, |datagram| {
            bytes += datagram.len();
            self.ingest(home, datagram, received)
        });
        self.datagram_buffers = buffers;
        match pass {
            Ok(pass) => self.ingest_done(home, pass.datagrams, pass.kernel_drops, received),
            Err(e) => {
                self.ingest_done(home, 0, 0, received);
                tracing::warn!(stream = %self.home_name(home), "when reading the ingest socket: {e}");
            }
        }
        bytes
    }

    /// Whether something waits on home stream `home` byte by byte, so that its socket is read
    /// as each datagram comes ([`super::pace`]): a progressive viewer on any shard, a push or
    /// a recording taking its chunks, or low-latency HLS parts.
    pub fn awaited(&self, home: usize) -> bool {
        let Some(Some(h)) = self.homes.get(home) else {
            return false;
        };
        let Some(Some(local)) = self.locals.get(h.slot) else {
            return false;
        };
        let info = &local.info;
        info.counters.viewers.load(Ordering::Relaxed) > 0
            || !info.taps.load().is_empty()
            || info.config.hls.part_duration_s.is_some()
    }

    /// Ask the sources that make their own bytes (the demo, a file) for what is due, once a
    /// tick's worth is; take what the sources with a task of their own (TCP) delivered.
    pub fn poll_sources(&mut self) {
        let clock = self.clock;
        if self.ingest_paused {
            // Handed over: nothing more is made here (the new process makes what follows).
            return;
        }
        for home in 0..self.homes.len() {
            let Some(Some(h)) = self.homes.get_mut(home) else {
                continue;
            };
            if let Some(inlet) = h.driver.inlet() {
                let mut chunks = Vec::new();
                let mut reads = 0;
                let mut last_received = clock.unix_ns;
                let pipeline = &mut h.pipeline;
                inlet.take(|delivery| match delivery {
                    Delivery::Bytes(bytes, received_ns) => {
                        reads += 1;
                        last_received = received_ns;
                        pipeline.push(&bytes, received_ns, &mut |c| chunks.push(c));
                    }
                    Delivery::Restart => pipeline.restart(),
                });
                for c in chunks {
                    self.publish(home, c);
                }
                if reads > 0 {
                    self.ingest_done(home, reads, 0, last_received);
                }
                continue;
            }
            let elapsed = clock.mono.saturating_duration_since(h.started);
            if h.driver
                .next_due()
                .is_none_or(|due| due + SOURCE_TICK > elapsed)
            {
                continue;
            }
            let mut bytes = Vec::new();
            h.driver.due(elapsed, clock.unix_ns, &mut bytes);
            self.ingest(home, &bytes, clock.unix_ns);
            self.ingest_done(home, 1, 0, clock.unix_ns);
        }
    }

    fn publish(&mut self, home: usize, chunk: Chunk) {
        let now = self.now_ns();
        let Some(Some(h)) = self.homes.get(home) else {
            return;
        };
        let Some(Some(local)) = self.locals.get_mut(h.slot) else {
            return;
        };
        StreamCounters::add(
            &local.info.counters.packets_out,
            (chunk.data.len() / 188) as u64,
        );
        h.fanout.send(&chunk, &local.info.counters);
        for tap in local.info.taps.load().iter() {
            tap.offer(&chunk);
        }
        local.take(chunk, self.clock.mono, now);
        local
            .info
            .counters
            .buffered_bytes
            .store(local.view.bytes() as u64, Ordering::Relaxed);
    }

    /// Take the chunks other shards published for this one.
    pub fn take_inbox(&mut self) {
        let now = self.now_ns();
        for local in self.locals.iter_mut().flatten() {
            let Some(queue) = local.inbox.clone() else {
                continue;
            };
            while let Some(chunk) = queue.pop() {
                local.take(chunk, self.clock.mono, now);
            }
        }
    }

    /// Progressive viewers of streams whose source has sent nothing for the stream's
    /// `source_timeout` (or never, since they came): they are told to finish (their queued
    /// bytes still go out, then the body ends); returns their keys.
    pub fn end_silent_streams(&mut self) -> Vec<usize> {
        let now = self.now_ns();
        let mut ended = Vec::new();
        for local in self.locals.iter_mut().flatten() {
            if local.viewers.is_empty() {
                continue;
            }
            let timeout = (local.info.config.limits.source_timeout_s * 1e9) as u64;
            let before = ended.len();
            local.viewers.retain(|&key| {
                let Some(conn) = self.conns.get_mut(key) else {
                    return true;
                };
                let since = local.last_data_ns.unwrap_or(0).max(conn.streaming_since());
                if now.saturating_sub(since) <= timeout {
                    return true;
                }
                conn.end_stream();
                ended.push(key);
                false
            });
            let closed = ended.len() - before;
            if closed > 0 {
                local
                    .info
                    .counters
                    .viewers
                    .fetch_sub(closed as u64, Ordering::Relaxed);
                if !local.silent {
                    local.silent = true;
                    tracing::info!(stream = %local.info.name, shard = self.index, viewers = closed, "no data from the source for {} s: its progressive viewers are closed", local.info.config.limits.source_timeout_s);
                }
            }
        }
        ended
    }

    /// Feed the viewers of every stream whose oldest unfed data has waited `flush_interval`
    /// (one larger write per viewer instead of one per chunk); `write` gets the keys of the
    /// connections that now have something to write.
    pub fn feed_due(&mut self, mut write: impl FnMut(usize)) {
        let now = self.now_ns();
        for local in self.locals.iter_mut().flatten() {
            match local.pending_since {
                Some(since)
                    if self.clock.mono.saturating_duration_since(since) >= self.flush_interval =>
                {
                    local.pending_since = None
                }
                _ => continue,
            }
            let info = &local.info;
            // The oldest data fed now came in at this time: ingest-to-send latency.
            if let Some(received_ns) = local.pending_received_ns.take() {
                info.counters
                    .send_latency
                    .record(self.clock.unix_ns.saturating_sub(received_ns));
            }
            // What came since the last flush, as one buffer for the viewers that had the rest.
            let batch = local.view.join(local.pending_first);
            for &key in &local.viewers {
                let Some(conn) = self.conns.get_mut(key) else {
                    continue;
                };
                match conn.feed(&local.view, batch.as_ref(), now) {
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

    /// Answer the held low-latency HLS requests of streams that published a new window since
    /// they were held (those still waiting are held again), and, with `sweep`, those held
    /// past their limit (503; 504 for those waiting for the HLS proxy); returns the
    /// connections with something new to write.
    pub fn release_held(&mut self, sweep: bool) -> Vec<usize> {
        let now = self.now_ns();
        let mut due = Vec::new();
        for local in self.locals.iter_mut().flatten() {
            if local.held.is_empty() {
                continue;
            }
            let window = window_generation(&local.info);
            if window != local.held_window {
                local.held_window = window;
                due.append(&mut local.held);
            } else if sweep {
                take_expired(&mut local.held, &self.conns, now, &mut due);
            }
        }
        if sweep {
            for waiting in self.fetching.values_mut() {
                take_expired(waiting, &self.conns, now, &mut due);
            }
            self.fetching.retain(|_, waiting| !waiting.is_empty());
        }
        due.retain(|&key| {
            self.conns
                .get(key)
                .is_some_and(|c| c.held_until().is_some())
        });
        for &key in &due {
            self.resume(key);
        }
        due
    }

    /// Keys of the connections whose timeouts have expired (close them).
    pub fn expired(&self) -> Vec<usize> {
        let now = self.now_ns();
        self.conns
            .iter()
            .filter(|(k, c)| c.timed_out(now) || self.tls_stalled(*k, now))
            .map(|(k, _)| k)
            .collect()
    }

    /// Whether every connection has written what it had queued.
    pub fn flushed(&self) -> bool {
        self.conns
            .iter()
            .all(|(k, c)| !c.wants_write() && !self.tls_wants_write(k))
    }

    /// How long the backend may wait before a source has bytes due or a flush is.
    pub fn next_timer(&self) -> Duration {
        let sources = self.homes.iter().flatten().filter_map(|h| {
            let due = h.driver.next_due()? + SOURCE_TICK;
            Some(
                due.saturating_sub(self.clock.mono.saturating_duration_since(h.started))
                    .max(Duration::from_millis(1)),
            )
        });
        let flush = self
            .locals
            .iter()
            .flatten()
            .filter_map(|l| l.pending_since)
            .map(|since| {
                self.flush_interval
                    .saturating_sub(self.clock.mono.saturating_duration_since(since))
                    .max(Duration::from_micros(100))
            });
        sources
            .chain(flush)
            .min()
            .unwrap_or(Duration::from_millis(100))
    }
}

/// Which of a stream's HLS windows is the newest (0 for none).
fn window_generation(info: &StreamInfo) -> u64 {
    info.hls_window
        .load()
        .as_ref()
        .map_or(0, |w| w.generation + 1)
}

impl Local {
    /// Put `chunk` in the view at `now_ns`; with progressive viewers here, it now waits to be
    /// fed.
    fn take(&mut self, chunk: Chunk, now: Instant, now_ns: u64) {
        let received_ns = chunk.received_ns;
        let seq = chunk.seq;
        let trimmed = self.view.trimmed();
        self.view.push(chunk);
        if self.home && self.view.trimmed() > trimmed {
            StreamCounters::add(
                &self.info.counters.buffer_trims,
                self.view.trimmed() - trimmed,
            );
        }
        self.last_data_ns = Some(now_ns);
        self.silent = false;
        if !self.viewers.is_empty() {
            if self.pending_since.is_none() {
                self.pending_first = seq;
            }
            self.pending_since.get_or_insert(now);
            self.pending_received_ns.get_or_insert(received_ns);
        }
    }
}

/// Move from `held` to `due` the connections held past their limit at `now` (and those gone).
fn take_expired(held: &mut Vec<usize>, conns: &slab::Slab<Conn>, now: u64, due: &mut Vec<usize>) {
    held.retain(|&key| {
        let expired = conns
            .get(key)
            .and_then(Conn::held_until)
            .is_none_or(|until| now >= until);
        if expired {
            due.push(key);
        }
        !expired
    });
}

#[cfg(test)]
mod tests;
mod tls;

pub use tls::ShardTls;
