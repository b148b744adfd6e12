//! A shard: one thread pinned to one CPU, owning its listener (SO_REUSEPORT), its connections,
//! the ingest of the streams it is home to, and its own view of every stream.
//!
//! ```text
//!  poll ─┬─ listener    accept, cap, Conn::new
//!        ├─ waker       chunks from other shards' ingest (lock-free queues) → views;
//!        │              a new stream table (catalog) → start / end streams
//!        ├─ ingest      datagrams → Pipeline → Chunk → own view + every other shard's queue
//!        ├─ conns       read → Conn (sans-IO HTTP) ; write → writev of shared Bytes
//!        └─ timers      demo pacing, timeouts
//! ```
//!
//! The logic (what to publish, whom to feed, when to flush, who timed out) is
//! [`core::ShardCore`], which does no I/O; the backend owns the sockets and the waiting:
//! [`uring::UringShard`] on io_uring, or [`epoll::EpollShard`] (through mio) where io_uring is
//! not available.

pub mod admission;
pub mod catalog;
pub mod core;
pub mod epoll;
mod fanout;
pub mod housekeeping;
pub mod pace;
mod router;
pub mod uring;

pub use catalog::{Catalog, StreamInfo, Streams};
pub use fanout::{Fanout, QUEUE_CHUNKS};

use crate::http::ConnLimits;
use mio::Token;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The time a loop turn runs at, read once by the backend when its wait returns: the monotonic
/// clock for timers and timeouts, the wall clock (UNIX ns) for what is stamped or measured
/// against ingest. The core never reads a clock itself.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Monotonic.
    pub mono: Instant,
    /// Wall clock, nanoseconds since the UNIX epoch.
    pub unix_ns: u64,
}

impl Clock {
    /// The clocks now.
    pub fn now() -> Self {
        Self {
            mono: Instant::now(),
            unix_ns: crate::sys::unix_ns(),
        }
    }
}

/// The waker's token in a shard's poller.
pub const WAKER: Token = Token(1);

/// Whether the server runs, stops gracefully, or stops now; and when each shard last went
/// round its loop (for the service manager's watchdog).
#[derive(Debug, Default)]
pub struct RunState {
    state: AtomicU8,
    /// Per shard: connections, loop turns, time spent working (for the metrics).
    stats: Box<[ShardStats]>,
    /// Per shard: milliseconds since `since` at its last loop turn.
    heartbeats: Box<[AtomicU64]>,
    since: Option<Instant>,
    /// Notified when a stop is asked for, for a thread with nothing else to wait on
    /// ([`RunState::wait_stopping`]).
    stop_asked: (std::sync::Mutex<()>, std::sync::Condvar),
}

impl RunState {
    /// The state of a server of `shards` shards, running.
    pub fn new(shards: usize) -> Self {
        Self {
            state: AtomicU8::new(Self::RUN),
            heartbeats: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            stats: (0..shards).map(|_| ShardStats::default()).collect(),
            since: Some(Instant::now()),
            stop_asked: Default::default(),
        }
    }

    /// Shard `shard` is going round its loop, at `now`.
    pub fn beat(&self, shard: usize, now: Instant) {
        if let (Some(beat), Some(since)) = (self.heartbeats.get(shard), self.since) {
            beat.store(
                now.saturating_duration_since(since).as_millis() as u64,
                Ordering::Relaxed,
            );
        }
    }

    /// Shard `shard` finished a loop turn that worked for `busy`, holding `connections`.
    pub fn account(&self, shard: usize, connections: usize, busy: Duration) {
        if let Some(s) = self.stats.get(shard) {
            s.connections.store(connections as u64, Ordering::Relaxed);
            s.turns.fetch_add(1, Ordering::Relaxed);
            s.busy_ns
                .fetch_add(busy.as_nanos() as u64, Ordering::Relaxed);
        }
    }

    /// Shard `shard` tracks `held` sessions and has forgotten `evicted` early.
    pub fn sessions(&self, shard: usize, held: usize, evicted: u64) {
        if let Some(s) = self.stats.get(shard) {
            s.sessions.store(held as u64, Ordering::Relaxed);
            s.sessions_evicted.store(evicted, Ordering::Relaxed);
        }
    }

    /// Every shard's statistics, by shard number.
    pub fn shard_stats(&self) -> &[ShardStats] {
        &self.stats
    }

    /// The shard that went longest without a loop turn at `now`, and how long ago its last
    /// was.
    pub fn stalest(&self, now: Instant) -> Option<(usize, Duration)> {
        let now = now.saturating_duration_since(self.since?).as_millis() as u64;
        self.heartbeats
            .iter()
            .enumerate()
            .map(|(i, b)| {
                (
                    i,
                    Duration::from_millis(now.saturating_sub(b.load(Ordering::Relaxed))),
                )
            })
            .max_by_key(|(_, age)| *age)
    }

    const RUN: u8 = 0;
    const GRACEFUL: u8 = 1;
    const FAST: u8 = 2;

    /// Ask for a graceful stop (SIGTERM).
    pub fn stop_gracefully(&self) {
        let _ = self.state.compare_exchange(
            Self::RUN,
            Self::GRACEFUL,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.notify_stop();
    }

    /// Ask for an immediate stop (SIGINT).
    pub fn stop_now(&self) {
        self.state.store(Self::FAST, Ordering::Release);
        self.notify_stop();
    }

    fn notify_stop(&self) {
        let (lock, asked) = &self.stop_asked;
        // Taken so that a waiter between its look at the state and its wait cannot miss it.
        let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
        asked.notify_all();
    }

    /// Block until a stop is asked for.
    pub fn wait_stopping(&self) {
        let (lock, asked) = &self.stop_asked;
        let mut held = lock.lock().unwrap_or_else(|e| e.into_inner());
        while !self.stopping() {
            held = asked.wait(held).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn get(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }

    /// Whether an immediate stop was asked for.
    pub fn fast(&self) -> bool {
        self.get() == Self::FAST
    }

    /// Whether a stop was asked for.
    pub fn stopping(&self) -> bool {
        self.get() != Self::RUN
    }
}

/// One shard's loop, as the metrics show it.
#[derive(Debug, Default)]
pub struct ShardStats {
    /// Connections open at its last loop turn.
    pub connections: AtomicU64,
    /// Loop turns.
    pub turns: AtomicU64,
    /// Nanoseconds spent working (from a wait's return to the end of the turn).
    pub busy_ns: AtomicU64,
    /// io_uring completions the kernel dropped (its completion queue overflowed).
    pub completions_lost: AtomicU64,
    /// io_uring submissions that failed.
    pub submit_errors: AtomicU64,
    /// Viewer sessions the shard tracks now.
    pub sessions: AtomicU64,
    /// Sessions it forgot early to stay within `max_sessions`.
    pub sessions_evicted: AtomicU64,
    /// UDP ingest sockets it reads on its ingest tick now, not as each datagram comes.
    pub ingest_ticked: AtomicU64,
    /// io_uring receives that found every shared receive buffer taken and waited a turn.
    pub receive_waits: AtomicU64,
}

/// Everything a shard is started with.
#[derive(Debug)]
pub struct ShardSetup {
    /// Shard number.
    pub index: usize,
    /// CPU to pin to.
    pub cpu: usize,
    /// Its listener (SO_REUSEPORT).
    pub listener: std::net::TcpListener,
    /// Its TLS listener and TLS settings, when the server has TLS.
    pub tls: Option<(std::net::TcpListener, core::ShardTls)>,
    /// The stream table, followed at every loop turn.
    pub catalog: Arc<arc_swap::ArcSwap<Catalog>>,
    /// Every shard's waker, by shard number.
    pub wakers: Vec<Arc<dyn crate::wake::Wake>>,
    /// Its queues to and from the control plane.
    pub link: crate::session::ShardLink,
    /// Connection limits.
    pub limits: ConnLimits,
    /// Connection cap.
    pub max_connections: usize,
    /// Stop flag.
    pub run: Arc<RunState>,
    /// Viewers of a stream are written to at most this often (new data waits up to this long).
    pub flush_interval: Duration,
    /// How long a wait lets events gather once the first is in (zero: none).
    pub gather: Duration,
    /// How often UDP sources nothing waits on promptly are read (zero: every datagram as it
    /// comes; [`pace`]).
    pub ingest_interval: Duration,
    /// SO_SNDBUF for accepted sockets (0: kernel autotuning).
    pub send_buffer: usize,
    /// How HLS segments are sent (resolved: never `Auto`).
    pub segment_send: crate::hls::SegmentSend,
    /// Public base URL and trusted proxies.
    pub site: Arc<crate::site::Site>,
    /// The per-address connection cap and refusal counts, shared by every shard.
    pub admission: Arc<admission::Admission>,
    /// Sessions the shard tracks at most, in all and of one stream.
    pub max_sessions: (usize, usize),
    /// The runtime sources that do their own I/O (TCP) run their tasks on.
    pub source_tasks: tokio::runtime::Handle,
    /// Where push connections are handed.
    pub pushes: Arc<crate::source::Pushes>,
    /// What sends streams on (their configured pushes start with them).
    pub push_outs: Arc<crate::output::push_out::PushOuts>,
    /// Sockets and windows for (and from) upgrades.
    pub handoff: Arc<crate::upgrade::Handoff>,
    /// The HLS proxy.
    pub proxies: Option<Arc<crate::proxy::Proxies>>,
    /// The proxy's fetcher, for streams whose source is a configured proxy.
    pub fetcher: Option<Arc<crate::proxy::Fetcher>>,
}

/// Open the UDP socket of home stream `name` for `core`'s shard. A socket that cannot be
/// opened is logged and reported (`INPUT_ABORT`), and its stream stays offline; the shard
/// serves the rest.
pub fn open_source(
    core: &core::ShardCore,
    name: &str,
    udp: &crate::source::UdpSpec,
) -> Option<crate::source::UdpIngest> {
    let key = crate::upgrade::ingest_key(name, udp);
    // A socket kept for an upgrade (handed over, or let go of for one that failed): the same
    // socket, with what it has received meanwhile.
    if let Some(fd) = core.handoff().ingest_socket(&key) {
        match crate::source::UdpIngest::from_fd(fd) {
            Ok(socket) => {
                tracing::info!(stream = %name, shard = core.index(), addr = %udp.addr, "receiving MPEG-TS over UDP (the socket kept across an upgrade)");
                return Some(socket);
            }
            Err(e) => {
                tracing::warn!(stream = %name, "the kept ingest socket is unusable ({e}): opening another");
                core.handoff().forget_ingest(&key);
            }
        }
    }
    match crate::source::UdpIngest::open(udp, |w| tracing::warn!(stream = %name, "{w}")) {
        Ok(socket) => {
            tracing::info!(stream = %name, shard = core.index(), addr = %udp.addr, source = ?udp.source, "receiving MPEG-TS over UDP");
            match socket.try_clone_fd() {
                Ok(fd) => core.handoff().keep_ingest(key, fd),
                Err(e) => {
                    tracing::warn!(stream = %name, "cannot keep the ingest socket for upgrades: {e}")
                }
            }
            Some(socket)
        }
        Err(e) => {
            tracing::error!(stream = %name, addr = %udp.addr, "cannot open the ingest socket: {e}; the stream stays offline");
            core.input_aborted(
                name,
                &format!("cannot open the ingest socket on {}: {e}", udp.addr),
            );
            None
        }
    }
}

/// What every backend starts from: the thread pinned, the sources opened, the core built.
#[allow(missing_debug_implementations)] // holds the core and sockets; nothing useful to print
pub struct Prepared {
    /// The shard's logic.
    pub core: core::ShardCore,
    /// Its listener.
    pub listener: std::net::TcpListener,
    /// Its TLS listener and TLS settings.
    pub tls: Option<(std::net::TcpListener, core::ShardTls)>,
    /// Connection cap.
    pub max_connections: usize,
    /// SO_SNDBUF for accepted sockets (0: kernel autotuning).
    pub send_buffer: usize,
    /// How HLS segments are sent (resolved: never `Auto`).
    pub segment_send: crate::hls::SegmentSend,
    /// How long a wait lets events gather once the first is in (zero: none).
    pub gather: Duration,
    /// How often UDP sources nothing waits on promptly are read (zero: promptly, always).
    pub ingest_interval: Duration,
    /// Stop flag.
    pub run: Arc<RunState>,
}

/// Pin the calling thread to the shard's CPU and build its core (which holds no stream until
/// the backend has it follow the stream table).
pub fn prepare(setup: ShardSetup) -> Prepared {
    if let Err(e) = crate::sys::pin_current_thread(setup.cpu) {
        tracing::warn!(
            shard = setup.index,
            cpu = setup.cpu,
            "cannot pin shard to its CPU: {e}"
        );
    }
    let mut core = core::ShardCore::new(
        setup.index,
        setup.catalog,
        setup.wakers,
        setup.limits,
        setup.flush_interval,
        setup.segment_send,
        Clock::now(),
    );
    core.set_site(setup.site);
    core.set_admission(setup.admission);
    core.set_session_limits(setup.max_sessions.0, setup.max_sessions.1);
    core.set_link(setup.link);
    core.set_source_tasks(setup.source_tasks);
    core.set_pushes(setup.pushes);
    core.set_push_outs(setup.push_outs);
    core.set_handoff(setup.handoff);
    if let Some(proxies) = setup.proxies {
        core.set_proxies(proxies);
    }
    if let Some(fetcher) = setup.fetcher {
        core.set_fetcher(fetcher);
    }
    Prepared {
        core,
        listener: setup.listener,
        tls: setup.tls,
        max_connections: setup.max_connections,
        send_buffer: setup.send_buffer,
        segment_send: setup.segment_send,
        gather: setup.gather,
        ingest_interval: setup.ingest_interval,
        run: setup.run,
    }
}
