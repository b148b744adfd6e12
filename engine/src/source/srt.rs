//! SRT: `srt://ADDR:PORT[?latency=MS&passphrase=…&pbkeylen=16&allow=CIDR,…]` listens for
//! encoders that call (`ffmpeg … srt://host:PORT?streamid=NAME`), and
//! `srt://HOST:PORT?mode=caller[&streamid=…&passphrase=…&latency=MS]` calls an encoder or
//! another server that listens. The transport stream SRT carries is fed to the stream as a
//! TCP connection's would be; libsrt does the protocol (`sys::srt`, and why libsrt there).
//!
//! ```text
//!  listener per ADDR:PORT (a thread while a stream uses it)
//!    ├─ libsrt's handshake ─ the hook decides: stream id → stream, allow=, max_pushes;
//!    │                       the stream's passphrase, then checked by libsrt
//!    └─ poll: accept ─ read each connection's messages ─ inlet ─ the stream's home shard
//!  caller (a thread per stream): connect, with backoff ─ read ─ inlet
//! ```
//!
//! A caller names its stream by its stream id: the stream's name, or the access-control
//! form `#!::r=NAME,m=publish`; with no stream id it feeds the port's only stream. An unknown
//! name is refused with 404 during the handshake, `m=request` (playing) with 405, an address
//! outside `allow=` with 403, a caller over `max_pushes` connections with 402; a wrong or
//! missing passphrase is refused by libsrt, after the hook, in the same handshake. Each is
//! counted and logged (once, then every hundredth).
//!
//! As with the other pushes, a new caller for a stream replaces the one before and is a
//! discontinuity in HLS. A connection that sends nothing for the stream's `source_timeout`
//! is closed. Its SRT statistics (round trip, lost, retransmitted and dropped packets, the
//! receive buffer) are sampled once a second into the stream's counters, for the API and
//! metrics.
//!
//! What it does not do: rendezvous mode, playing over SRT (`m=request`; sending on is
//! [`crate::output::push_out`]'s), `PUSH_REWRITE` or the token backend deciding callers, bonding.

use super::inlet::{Delivery, Inlet, READ_PACE};
use super::{SourceContext, SourceDriver, SourceError, SourceSpec};
use crate::stream::StreamCounters;
use crate::sys::srt::{self, Handshake, Hook, Options, Received, Socket, SocketState, Verdict};
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// SRT's usual latency.
const DEFAULT_LATENCY_MS: u32 = 120;
/// Bytes read from one connection and not yet taken by the shard; past this the connection
/// is not read until the shard catches up (libsrt's own buffer then holds, and drops what is
/// too late, counted as dropped packets).
const MAX_PENDING: usize = 4 * 1024 * 1024;
/// Handshakes a listener has waiting.
const BACKLOG: u16 = 64;
/// How often statistics are sampled and idle connections looked for.
const EVERY: Duration = Duration::from_secs(1);
/// Longest stream id or passphrase taken in a URL.
const MAX_NAME: usize = 512;

/// Set when the server stops: every SRT thread ends.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// The SRT threads started, to be waited for when the server stops.
static THREADS: Mutex<Vec<std::thread::JoinHandle<()>>> = Mutex::new(Vec::new());

/// Start an SRT thread (a listener's, or a calling stream's), remembered for
/// [`stop_srt_threads`].
fn spawn(name: String, run: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    let thread = std::thread::Builder::new().name(name).spawn(run)?;
    let mut threads = lock(&THREADS);
    threads.retain(|t| !t.is_finished());
    threads.push(thread);
    Ok(())
}

/// Stop every SRT thread and wait for them (each sees it within 100 ms, or once a call in
/// progress times out): none may be inside libsrt when the process exits and libsrt's own
/// statics are destroyed.
pub fn stop_srt_threads() {
    STOPPING.store(true, Ordering::Relaxed);
    let threads = std::mem::take(&mut *lock(&THREADS));
    for thread in threads {
        let _ = thread.join();
    }
}

/// Who calls whom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SrtMode {
    /// Encoders call this address.
    Listener,
    /// The server calls this host and port.
    Caller(String),
}

/// A stream fed over SRT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrtSpec {
    /// Listen here, or call there.
    pub mode: SrtMode,
    /// Where to listen (the listener's address; unused when calling).
    pub listen: SocketAddr,
    /// The receive latency, in milliseconds.
    pub latency_ms: u32,
    /// The passphrase, when encrypted.
    pub passphrase: Option<String>,
    /// The key length when encrypting (16, 24 or 32).
    pub key_length: Option<u8>,
    /// The stream id sent when calling.
    pub stream_id: Option<String>,
    /// Who may call; empty: anyone.
    pub allow: Vec<IpNet>,
}

/// `srt://` then the rest of the URL.
pub(super) fn parse(rest: &str) -> Result<SourceSpec, SourceError> {
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = authority.trim_end_matches('/');
    let mut caller = false;
    let mut spec = SrtSpec {
        mode: SrtMode::Listener,
        listen: SocketAddr::from(([0, 0, 0, 0], 0)),
        latency_ms: DEFAULT_LATENCY_MS,
        passphrase: None,
        key_length: None,
        stream_id: None,
        allow: Vec::new(),
    };
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let bad = || SourceError::Parameter(format!("{key}={value}"));
        match &*key {
            "mode" => match &*value {
                "listener" => caller = false,
                "caller" => caller = true,
                _ => return Err(bad()),
            },
            "latency" => {
                spec.latency_ms = value
                    .parse()
                    .ok()
                    .filter(|ms| (20..=10_000).contains(ms))
                    .ok_or_else(bad)?
            }
            "passphrase" if (10..=79).contains(&value.len()) => {
                spec.passphrase = Some(value.into_owned())
            }
            "pbkeylen" => {
                spec.key_length = Some(
                    value
                        .parse()
                        .ok()
                        .filter(|n| [16, 24, 32].contains(n))
                        .ok_or_else(bad)?,
                )
            }
            "streamid" if !value.is_empty() && value.len() <= MAX_NAME => {
                spec.stream_id = Some(value.into_owned())
            }
            "allow" => spec
                .allow
                .extend(super::parse_allow(&value).ok_or_else(bad)?),
            "passphrase" => {
                return Err(SourceError::Parameter(
                    "passphrase= must be 10 to 79 characters".into(),
                ))
            }
            _ => return Err(bad()),
        }
    }
    if caller {
        let (host, port) = authority
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h, p.parse::<u16>().ok().filter(|&p| p > 0)?)))
            .filter(|(h, _)| !h.is_empty())
            .ok_or_else(|| SourceError::Address(authority.to_owned()))?;
        if !spec.allow.is_empty() {
            return Err(SourceError::Parameter(
                "allow= is for a listener; a caller chooses whom it calls".into(),
            ));
        }
        spec.mode = SrtMode::Caller(format!("{host}:{port}"));
    } else {
        spec.listen = authority
            .parse()
            .map_err(|_| SourceError::Address(authority.to_owned()))?;
        if spec.stream_id.is_some() {
            return Err(SourceError::Parameter(
                "streamid= is what a caller sends; callers of a listener name the stream".into(),
            ));
        }
    }
    Ok(SourceSpec::Srt(spec))
}

impl SrtSpec {
    fn options(&self) -> Options {
        Options {
            latency_ms: self.latency_ms,
            passphrase: self.passphrase.clone(),
            key_length: self.key_length,
            stream_id: self.stream_id.clone(),
            ..Options::default()
        }
    }
}

/// Server-wide counts of SRT connections, and of callers refused before a stream took them.
#[derive(Debug, Default)]
pub struct SrtCounts {
    /// Connections open now (both modes).
    pub open: AtomicU64,
    /// Refused: no stream has the stream id asked for.
    pub refused_unknown: AtomicU64,
    /// Refused: the caller asked to play (`m=request`), not to publish.
    pub refused_mode: AtomicU64,
    /// Refused: `max_pushes` connections were open.
    pub refused_busy: AtomicU64,
}

/// The SRT listeners and the streams each feeds.
#[derive(Debug)]
pub struct Listeners {
    ports: Mutex<HashMap<SocketAddr, Arc<Port>>>,
    max: usize,
    /// The counts, for metrics.
    pub counts: Arc<SrtCounts>,
}

/// A listening address: its streams, the handshakes its hook let through, and whether its
/// thread should stop.
#[derive(Debug)]
struct Port {
    addr: SocketAddr,
    doors: Mutex<HashMap<String, Arc<Door>>>,
    /// Sockets the hook accepted, by id: the stream, and when (dropped once accepted; one
    /// gone without being accepted was refused by libsrt: the passphrase).
    admitted: Mutex<HashMap<i32, Admitted>>,
    stop: AtomicBool,
    counts: Arc<SrtCounts>,
    max: usize,
}

/// A handshake the hook let through: for which stream, from where, and when.
#[derive(Debug)]
struct Admitted {
    door: Arc<Door>,
    peer: Option<SocketAddr>,
    when: Instant,
}

/// A stream that takes SRT: where its bytes go, and which connection feeds it.
#[derive(Debug)]
struct Door {
    stream: String,
    spec: SrtSpec,
    inlet: Arc<Inlet>,
    counters: Arc<StreamCounters>,
    idle: Duration,
    /// The number of the connection feeding the stream; older ones close.
    publisher: AtomicU64,
    /// The stream is gone.
    ended: AtomicBool,
}

impl Door {
    /// The stream is gone, or the server stops.
    fn over(&self) -> bool {
        self.ended.load(Ordering::Relaxed) || STOPPING.load(Ordering::Relaxed)
    }

    fn refused(&self, peer: Option<SocketAddr>, why: &str) {
        let n = self.counters.source_refused.fetch_add(1, Ordering::Relaxed) + 1;
        let peer = peer.map_or_else(|| "?".to_owned(), |p| p.to_string());
        if n == 1 || n % 100 == 0 {
            tracing::warn!(stream = %self.stream, refused = n, "refused an SRT caller from {peer}: {why}");
        }
        if let Ok(mut last) = self.counters.source_error.lock() {
            *last = Some(format!("SRT caller refused: {why}"));
        }
    }
}

impl Listeners {
    /// Listeners taking at most `max` connections at once.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            ports: Mutex::new(HashMap::new()),
            max,
            counts: Arc::new(SrtCounts::default()),
        })
    }

    fn ports(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Arc<Port>>> {
        self.ports.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Open `door`'s stream to callers: its port listens from now on.
    fn open(&self, door: Arc<Door>) {
        let addr = door.spec.listen;
        let mut ports = self.ports();
        let port = ports
            .entry(addr)
            .or_insert_with(|| {
                let port = Arc::new(Port {
                    addr,
                    doors: Mutex::new(HashMap::new()),
                    admitted: Mutex::new(HashMap::new()),
                    stop: AtomicBool::new(false),
                    counts: self.counts.clone(),
                    max: self.max,
                });
                let run = port.clone();
                let spawned = spawn(format!("srt {addr}"), move || run.listen());
                if let Err(e) = spawned {
                    tracing::error!("cannot start the SRT listener on {addr}: {e}");
                }
                port
            })
            .clone();
        let mut doors = lock(&port.doors);
        if let Some(old) = doors.insert(door.stream.clone(), door) {
            old.ended.store(true, Ordering::Relaxed);
        }
    }

    /// Close `door`: its connection closes; a port left with no stream stops listening.
    fn close(&self, door: &Arc<Door>) {
        door.ended.store(true, Ordering::Relaxed);
        let mut ports = self.ports();
        let addr = door.spec.listen;
        let Some(port) = ports.get(&addr) else {
            return;
        };
        let empty = {
            let mut doors = lock(&port.doors);
            if doors
                .get(&door.stream)
                .is_some_and(|d| Arc::ptr_eq(d, door))
            {
                doors.remove(&door.stream);
            }
            doors.is_empty()
        };
        if empty {
            if let Some(port) = ports.remove(&addr) {
                port.stop.store(true, Ordering::Relaxed);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The stream a stream id asks for (`None`: none named), or the refusal code.
fn requested(stream_id: &str) -> Result<Option<&str>, u16> {
    let Some(fields) = stream_id.strip_prefix("#!::") else {
        return Ok((!stream_id.is_empty()).then_some(stream_id));
    };
    let mut name = None;
    for field in fields.split(',') {
        match field.split_once('=') {
            Some(("r", value)) => name = Some(value),
            Some(("m", "publish")) => {}
            Some(("m", _)) => return Err(405),
            Some(_) => {}
            None => return Err(400),
        }
    }
    Ok(name.filter(|n| !n.is_empty()))
}

impl Port {
    /// No stream uses the port any more, or the server stops.
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || STOPPING.load(Ordering::Relaxed)
    }

    /// The hook's answer to a caller: which stream, and its passphrase.
    fn decide(&self, handshake: &Handshake<'_>) -> Verdict {
        let door = match requested(handshake.stream_id) {
            Err(code) => {
                let count = if code == 405 {
                    &self.counts.refused_mode
                } else {
                    &self.counts.refused_unknown
                };
                count.fetch_add(1, Ordering::Relaxed);
                return Verdict::Reject(code);
            }
            Ok(name) => {
                let doors = lock(&self.doors);
                match name {
                    Some(name) => doors.get(name).cloned(),
                    None if doors.len() == 1 => doors.values().next().cloned(),
                    None => None,
                }
            }
        };
        let Some(door) = door else {
            let n = self.counts.refused_unknown.fetch_add(1, Ordering::Relaxed) + 1;
            if n == 1 || n % 100 == 0 {
                tracing::warn!(
                    refused = n,
                    "refused an SRT caller on {}: no stream here takes stream id {:?}",
                    self.addr,
                    handshake.stream_id
                );
            }
            return Verdict::Reject(404);
        };
        if !door.spec.allow.is_empty()
            && !handshake
                .peer
                .is_some_and(|p| door.spec.allow.iter().any(|n| n.contains(&p.ip())))
        {
            door.refused(handshake.peer, "address not in allow=");
            return Verdict::Reject(403);
        }
        let pending = lock(&self.admitted).len() as u64;
        if self.counts.open.load(Ordering::Relaxed) + pending >= self.max as u64 {
            self.counts.refused_busy.fetch_add(1, Ordering::Relaxed);
            return Verdict::Reject(402);
        }
        let verdict = Verdict::Accept {
            passphrase: door.spec.passphrase.clone(),
            latency_ms: door.spec.latency_ms,
        };
        lock(&self.admitted).insert(
            handshake.socket,
            Admitted {
                door,
                peer: handshake.peer,
                when: Instant::now(),
            },
        );
        verdict
    }

    /// The listener's thread: listen, accept, read, until no stream uses the port.
    fn listen(self: Arc<Self>) {
        let addr = self.addr;
        let mut retry = super::Retry::new();
        let (srt, listener) = loop {
            if self.stopped() {
                return;
            }
            let opened = srt::srt().and_then(|srt| {
                let port: Weak<Port> = Arc::downgrade(&self);
                let hook: Arc<Hook> = Arc::new(move |hs: &Handshake<'_>| match port.upgrade() {
                    Some(port) => port.decide(hs),
                    None => Verdict::Reject(503),
                });
                let options = Options {
                    latency_ms: DEFAULT_LATENCY_MS,
                    ..Options::default()
                };
                Ok((srt, srt.listen(addr, &options, BACKLOG, hook)?))
            });
            match opened {
                Ok(opened) => break opened,
                Err(e) => {
                    let wait = retry.down(Instant::now());
                    tracing::warn!(
                        "cannot listen for SRT on {addr}: {e}; trying again in {wait:?}"
                    );
                    for door in lock(&self.doors).values() {
                        if let Ok(mut last) = door.counters.source_error.lock() {
                            *last = Some(format!("cannot listen for SRT on {addr}: {e}"));
                        }
                    }
                    self.sleep(wait);
                }
            }
        };
        let poll = match srt.poll().and_then(|p| p.add(&listener).map(|()| p)) {
            Ok(poll) => poll,
            Err(e) => {
                tracing::error!("cannot poll the SRT listener on {addr}: {e}");
                return;
            }
        };
        tracing::info!(
            "listening for SRT callers on srt://{addr} (libsrt {})",
            srt.version()
        );
        let mut feeds: HashMap<i32, Feed> = HashMap::new();
        let mut ready = Vec::new();
        let mut next_check = Instant::now() + EVERY;
        while !self.stopped() {
            // Bytes the shard had no room for are offered again after the pause below.
            let held = feeds.values().any(|f| !f.pending.is_empty());
            if let Err(e) = poll.wait(if held { 0 } else { 100 }, &mut ready) {
                tracing::warn!("SRT poll on {addr}: {e}");
                self.sleep(READ_PACE);
            }
            loop {
                match listener.accept() {
                    Ok(Some((socket, peer))) => self.take(socket, peer, &poll, &mut feeds),
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!("SRT accept on {addr}: {e}");
                        break;
                    }
                }
            }
            let mut delivered = false;
            feeds.retain(|_, feed| {
                let go = feed.turn(&ready);
                delivered |= feed.delivered;
                if go.is_some() {
                    poll.remove(&feed.socket);
                }
                go.is_none()
            });
            let now = Instant::now();
            if now >= next_check {
                next_check = now + EVERY;
                feeds.retain(|_, feed| {
                    let go = feed.check(now);
                    if go {
                        poll.remove(&feed.socket);
                    }
                    !go
                });
                self.refused_by_libsrt(srt, now);
            }
            // Gather about READ_PACE of the stream per delivery (and, while a shard's inlet is
            // full, do not spin on sockets that stay readable).
            if delivered || feeds.values().any(|f| !f.pending.is_empty()) {
                std::thread::sleep(READ_PACE);
            }
        }
        drop(feeds);
        tracing::info!("no stream takes SRT on {addr} any more: not listening");
    }

    /// Sleep `wait`, or until told to stop.
    fn sleep(&self, wait: Duration) {
        let until = Instant::now() + wait;
        while !self.stopped() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50).min(wait));
        }
    }

    /// An accepted connection: the stream its hook admitted it for starts reading it.
    fn take(
        &self,
        socket: Socket,
        peer: Option<SocketAddr>,
        poll: &srt::Poll,
        feeds: &mut HashMap<i32, Feed>,
    ) {
        let admitted = lock(&self.admitted).remove(&socket.id());
        let Some(Admitted { door, .. }) = admitted else {
            tracing::debug!("SRT: a connection the hook did not see, closed");
            return;
        };
        if door.over() {
            return;
        }
        if let Err(e) = poll.add(&socket) {
            tracing::warn!(stream = %door.stream, "cannot poll an SRT connection: {e}");
            return;
        }
        let id = socket.id();
        let feed = Feed::start(socket, door, peer, self.counts.clone());
        feeds.insert(id, feed);
    }

    /// Handshakes the hook admitted that libsrt then refused (a wrong or missing
    /// passphrase, or one where the stream has none), counted and logged as the stream's.
    fn refused_by_libsrt(&self, srt: srt::Srt, now: Instant) {
        let mut admitted = lock(&self.admitted);
        admitted.retain(|&id, admitted| {
            let (state, _) = srt.state_of(id);
            if state == SocketState::Gone {
                let why = if admitted.door.spec.passphrase.is_some() {
                    "wrong or missing passphrase"
                } else {
                    "a passphrase where the stream has none"
                };
                admitted.door.refused(admitted.peer, why);
                return false;
            }
            // Still in the handshake after this long: libsrt times it out itself.
            now.duration_since(admitted.when) < Duration::from_secs(10)
        });
    }
}

/// One SRT connection feeding a stream.
struct Feed {
    socket: Socket,
    door: Arc<Door>,
    peer: Option<SocketAddr>,
    number: u64,
    counts: Arc<SrtCounts>,
    /// What was read and not yet taken by the shard; a restart goes first.
    pending: Vec<u8>,
    restart: bool,
    /// Something was delivered this turn.
    delivered: bool,
    last_data: Instant,
}

impl Feed {
    fn start(
        socket: Socket,
        door: Arc<Door>,
        peer: Option<SocketAddr>,
        counts: Arc<SrtCounts>,
    ) -> Self {
        let number = door.publisher.fetch_add(1, Ordering::Relaxed) + 1;
        counts.open.fetch_add(1, Ordering::Relaxed);
        StreamCounters::add(&door.counters.source_connections, 1);
        let replaces = door.counters.source_connected.swap(1, Ordering::Relaxed) == 1;
        if let Ok(mut last) = door.counters.source_error.lock() {
            *last = None;
        }
        let peer_text = peer.map_or_else(|| "?".to_owned(), |p| p.to_string());
        tracing::info!(stream = %door.stream, "an SRT connection with {peer_text} started{}", if replaces { " (it replaces the one before)" } else { "" });
        Self {
            socket,
            door,
            peer,
            number,
            counts,
            pending: Vec::new(),
            restart: true,
            delivered: false,
            last_data: Instant::now(),
        }
    }

    /// Read what `ready` says it has, and hand the shard what it can take. `Some`: the
    /// connection ends, and why.
    fn turn(&mut self, ready: &[(i32, bool)]) -> Option<String> {
        self.delivered = false;
        if self.door.over() {
            return self.end("ended with its stream");
        }
        if self.door.publisher.load(Ordering::Relaxed) != self.number {
            return self.end("was replaced");
        }
        let id = self.socket.id();
        if let Some(&(_, broke)) = ready.iter().find(|(r, _)| *r == id) {
            let mut buf = [0u8; 1500];
            while self.pending.len() < MAX_PENDING {
                match self.socket.receive(&mut buf) {
                    Ok(Received::Message(n)) => {
                        self.pending.extend_from_slice(&buf[..n]);
                        self.last_data = Instant::now();
                    }
                    Ok(Received::Nothing) => break,
                    Err(e) => {
                        self.deliver();
                        return self.end(&format!("went: {e}"));
                    }
                }
            }
            if broke && self.pending.is_empty() {
                return self.end("went");
            }
        }
        self.deliver();
        None
    }

    /// Hand over the restart and the pending bytes, as far as the inlet has room.
    fn deliver(&mut self) {
        if self.restart {
            if self.door.inlet.try_deliver(Delivery::Restart).is_err() {
                return;
            }
            self.restart = false;
        }
        if self.pending.is_empty() {
            return;
        }
        let bytes = std::mem::take(&mut self.pending);
        match self
            .door
            .inlet
            .try_deliver(Delivery::Bytes(bytes.into(), crate::sys::unix_ns()))
        {
            Ok(()) => self.delivered = true,
            Err(Delivery::Bytes(back, _)) => self.pending = back.into(),
            Err(Delivery::Restart) => {}
        }
    }

    /// The once-a-second look: statistics, and silence. `true`: it ends.
    fn check(&mut self, now: Instant) -> bool {
        if let Ok(stats) = self.socket.stats() {
            if let Ok(mut slot) = self.door.counters.srt.lock() {
                *slot = Some(stats);
            }
        }
        if now.duration_since(self.last_data) >= self.door.idle {
            self.end(&format!("sent nothing for {:?}", self.door.idle));
            return true;
        }
        false
    }

    fn end(&mut self, why: &str) -> Option<String> {
        let peer = self.peer.map_or_else(|| "?".to_owned(), |p| p.to_string());
        tracing::info!(stream = %self.door.stream, "the SRT connection with {peer} {why}");
        Some(why.to_owned())
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.counts.open.fetch_sub(1, Ordering::Relaxed);
        if self.door.publisher.load(Ordering::Relaxed) == self.number {
            self.door
                .counters
                .source_connected
                .store(0, Ordering::Relaxed);
            if let Ok(mut slot) = self.door.counters.srt.lock() {
                *slot = None;
            }
        }
    }
}

/// A stream that calls out: the thread that connects, reads, and connects again.
fn call(door: Arc<Door>, target: String, counts: Arc<SrtCounts>) {
    let mut retry = super::Retry::new();
    let stream = door.stream.clone();
    let pause = |wait: Duration| {
        let until = Instant::now() + wait;
        while !door.over() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50).min(wait));
        }
    };
    while !door.over() {
        let attempt = srt::srt().map_err(|e| e.to_string()).and_then(|srt| {
            // Each of the name's addresses in turn (localhost: ::1, then 127.0.0.1).
            let mut why = format!("{target} has no address");
            let mut connected = None;
            let addrs = std::net::ToSocketAddrs::to_socket_addrs(&target)
                .map_err(|e| format!("cannot resolve {target}: {e}"))?;
            for addr in addrs {
                if door.over() {
                    break;
                }
                match srt.call(addr, &door.spec.options()) {
                    Ok(socket) => {
                        connected = Some((socket, addr));
                        break;
                    }
                    Err(e) => why = format!("{addr}: {e}"),
                }
            }
            let (socket, addr) = connected.ok_or(why)?;
            let poll = srt.poll().map_err(|e| e.to_string())?;
            poll.add(&socket).map_err(|e| e.to_string())?;
            Ok((socket, poll, addr))
        });
        let (socket, poll, addr) = match attempt {
            Ok(connected) => connected,
            Err(why) => {
                StreamCounters::add(&door.counters.source_failures, 1);
                let wait = retry.down(Instant::now());
                tracing::warn!(%stream, "cannot call srt://{target}: {why}; trying again in {wait:?}");
                if let Ok(mut last) = door.counters.source_error.lock() {
                    *last = Some(format!("cannot call srt://{target}: {why}"));
                }
                pause(wait);
                continue;
            }
        };
        retry.up(Instant::now());
        let mut feed = Feed::start(socket, door.clone(), Some(addr), counts.clone());
        let mut ready = Vec::new();
        let mut next_check = Instant::now() + EVERY;
        loop {
            let held = !feed.pending.is_empty();
            if let Err(e) = poll.wait(if held { 0 } else { 100 }, &mut ready) {
                tracing::debug!(%stream, "SRT poll: {e}");
            }
            if feed.turn(&ready).is_some() {
                break;
            }
            let now = Instant::now();
            if now >= next_check {
                next_check = now + EVERY;
                if feed.check(now) {
                    break;
                }
            }
            if feed.delivered || !feed.pending.is_empty() {
                std::thread::sleep(READ_PACE);
            }
        }
        poll.remove(&feed.socket);
        drop(feed);
        if !door.over() {
            pause(retry.down(Instant::now()));
        }
    }
}

/// The home shard's side of a stream fed over SRT: the inlet it takes from, and its door
/// (on a listener, or its own calling thread) while it runs.
#[derive(Debug)]
pub(super) struct SrtDriver {
    inlet: Arc<Inlet>,
    door: Option<(Option<Arc<Listeners>>, Arc<Door>)>,
}

/// Open stream `context.stream` to SRT: on its port's listener, or by calling out.
pub(super) fn start(spec: &SrtSpec, context: &SourceContext<'_>) -> SrtDriver {
    let inlet = Inlet::new(context.waker.clone());
    let Some(listeners) = context.pushes.map(|p| p.srt().clone()) else {
        tracing::error!(stream = %context.stream, "no SRT here: this stream takes nothing");
        return SrtDriver { inlet, door: None };
    };
    let door = Arc::new(Door {
        stream: context.stream.to_owned(),
        spec: spec.clone(),
        inlet: inlet.clone(),
        counters: context.counters.clone(),
        idle: context.idle,
        publisher: AtomicU64::new(0),
        ended: AtomicBool::new(false),
    });
    match &spec.mode {
        SrtMode::Listener => {
            listeners.open(door.clone());
            tracing::info!(stream = %context.stream, "taking SRT callers at srt://{} (stream id {:?})", spec.listen, context.stream);
            SrtDriver {
                inlet,
                door: Some((Some(listeners), door)),
            }
        }
        SrtMode::Caller(target) => {
            let (run, target, counts) = (door.clone(), target.clone(), listeners.counts.clone());
            let spawned = spawn(format!("srt {}", context.stream), move || {
                call(run, target, counts)
            });
            if let Err(e) = spawned {
                tracing::error!(stream = %context.stream, "cannot start the SRT caller: {e}");
            }
            SrtDriver {
                inlet,
                door: Some((None, door)),
            }
        }
    }
}

impl Drop for SrtDriver {
    fn drop(&mut self) {
        match self.door.take() {
            Some((Some(listeners), door)) => listeners.close(&door),
            Some((None, door)) => door.ended.store(true, Ordering::Relaxed),
            None => {}
        }
    }
}

impl SourceDriver for SrtDriver {
    fn inlet(&self) -> Option<&Inlet> {
        Some(&self.inlet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srt(url: &str) -> Result<SrtSpec, SourceError> {
        match SourceSpec::parse(url)? {
            SourceSpec::Srt(spec) => Ok(spec),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_srt_urls() {
        let s =
            srt("srt://0.0.0.0:9000?latency=200&passphrase=0123456789&allow=10.0.0.0/8").unwrap();
        assert_eq!(s.mode, SrtMode::Listener);
        assert_eq!(s.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(s.latency_ms, 200);
        assert_eq!(s.passphrase.as_deref(), Some("0123456789"));
        assert_eq!(s.allow.len(), 1);
        let s = srt("srt://encoder.example:9000?mode=caller&streamid=%23!::r=cam1,m=publish&pbkeylen=32&passphrase=0123456789").unwrap();
        assert_eq!(s.mode, SrtMode::Caller("encoder.example:9000".into()));
        assert_eq!(s.stream_id.as_deref(), Some("#!::r=cam1,m=publish"));
        assert_eq!(s.key_length, Some(32));
        assert_eq!(
            srt("srt://[::]:9000").unwrap().listen,
            "[::]:9000".parse().unwrap()
        );
        for bad in [
            "srt://0.0.0.0",
            "srt://host:9000",
            "srt://0.0.0.0:9000?passphrase=short",
            "srt://0.0.0.0:9000?latency=5",
            "srt://0.0.0.0:9000?pbkeylen=20",
            "srt://0.0.0.0:9000?streamid=x",
            "srt://0.0.0.0:9000?mode=rendezvous",
            "srt://0.0.0.0:9000?colour=red",
            "srt://:9000?mode=caller",
            "srt://host:0?mode=caller",
            "srt://host:9000?mode=caller&allow=10.0.0.0/8",
        ] {
            assert!(srt(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stream_ids_name_a_stream_or_are_refused() {
        assert_eq!(requested("cam1"), Ok(Some("cam1")));
        assert_eq!(requested(""), Ok(None));
        assert_eq!(requested("#!::r=cam1,m=publish"), Ok(Some("cam1")));
        assert_eq!(requested("#!::u=alice,r=cam1"), Ok(Some("cam1")));
        assert_eq!(requested("#!::m=publish"), Ok(None));
        assert_eq!(requested("#!::r=cam1,m=request"), Err(405));
        assert_eq!(requested("#!::garbage"), Err(400));
    }
}
