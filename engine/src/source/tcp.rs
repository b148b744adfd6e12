//! MPEG-TS over TCP: `tcp://ADDR:PORT[?mode=listen|connect&program=N&allow=CIDR,…]`.
//!
//! - **listen** (the default): the server listens on `ADDR:PORT` (IPv4 or `[IPv6]`) for an
//!   encoder to connect and send raw TS. One encoder feeds the stream at a time: a newer
//!   connection replaces the current one (an encoder that restarts is not locked out by its
//!   own half-dead connection), so `allow=` (addresses or CIDR ranges, comma-separated) should
//!   name who may connect when the port is reachable from outside; anyone else is refused
//!   and counted.
//! - **connect**: the server connects to `HOST:PORT` (a name or an address) and reads raw TS
//!   from it; when the connection fails or ends it tries again ([`super::retry`]).
//!
//! A connection that sends nothing for the stream's `source_timeout` is closed. The task runs
//! on the sources' runtime (its own thread) and hands what it reads to the home shard through
//! an [`Inlet`]: the shard does no TCP of its own.

use super::attempts::Attempts;
use super::inlet::{Delivery, Inlet, TaskDriver};
use super::retry::Retry;
use super::{SourceContext, SourceError, SourceSpec};
use crate::stream::StreamCounters;
use bytes::BytesMut;
use ipnet::IpNet;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};

/// Bytes asked of the kernel per read.
pub(super) const READ_SIZE: usize = 64 * 1024;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the server listens or connects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpMode {
    /// Wait for an encoder to connect.
    Listen,
    /// Connect to a server that sends TS.
    Connect,
}

/// A TCP source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpSpec {
    /// `ADDR:PORT` to listen on, or `HOST:PORT` to connect to.
    pub addr: String,
    /// Listen or connect.
    pub mode: TcpMode,
    /// The program to take from an MPTS.
    pub program: Option<u16>,
    /// Who may connect (listen mode); empty: anyone.
    pub allow: Vec<IpNet>,
}

/// `tcp://` then the rest of the URL.
pub(super) fn parse(rest: &str) -> Result<SourceSpec, SourceError> {
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = authority.trim_end_matches('/');
    let mut spec = TcpSpec {
        addr: authority.to_owned(),
        mode: TcpMode::Listen,
        program: None,
        allow: Vec::new(),
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = || SourceError::Parameter(pair.to_owned());
        match key {
            "mode" if value == "listen" => spec.mode = TcpMode::Listen,
            "mode" if value == "connect" => spec.mode = TcpMode::Connect,
            "program" => spec.program = Some(value.parse().map_err(|_| bad())?),
            "allow" => spec
                .allow
                .extend(super::parse_allow(value).ok_or_else(bad)?),
            _ => return Err(bad()),
        }
    }
    let address = || SourceError::Address(format!("tcp://{authority}"));
    match spec.mode {
        TcpMode::Listen => {
            authority.parse::<SocketAddr>().map_err(|_| address())?;
        }
        TcpMode::Connect => {
            let (host, port) = authority.rsplit_once(':').ok_or_else(address)?;
            let plausible = !host.is_empty()
                && host.len() <= 253
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-[]:".contains(&b));
            if !plausible || port.parse::<u16>().is_err() {
                return Err(address());
            }
            if !spec.allow.is_empty() {
                return Err(SourceError::Parameter(
                    "allow (only for mode=listen)".to_owned(),
                ));
            }
        }
    }
    Ok(SourceSpec::Tcp(spec))
}

/// Start `spec`'s task: the home shard's side of it takes what it delivers.
pub(super) fn start(spec: &TcpSpec, context: &SourceContext<'_>) -> TaskDriver {
    let spec = spec.clone();
    let (stream, counters, idle) = (
        context.stream.to_owned(),
        context.counters.clone(),
        context.idle,
    );
    TaskDriver::start(context, spec.program, move |inlet| async move {
        let link = Link {
            stream,
            inlet,
            counters,
            idle,
        };
        match spec.mode {
            TcpMode::Listen => listen(spec, link).await,
            TcpMode::Connect => connect(spec, link).await,
        }
    })
}

/// What a source's task needs of its stream.
struct Link {
    stream: String,
    inlet: Arc<Inlet>,
    counters: Arc<StreamCounters>,
    idle: Duration,
}

/// How much a connection lets the kernel gather before its reader is woken (`SO_RCVLOWAT`):
/// about [`Gather::SPAN`] of the stream at the rate it arrived over the last second, so it is
/// read about a hundred times a second whatever the size of the sender's writes. Sans-IO: the
/// time is passed in.
#[derive(Debug)]
struct Gather {
    window_start: Option<Instant>,
    window_bytes: u64,
    low_water: usize,
}

impl Gather {
    /// The stream's worth gathered per read.
    const SPAN: Duration = Duration::from_millis(10);
    /// Most bytes gathered (well under the receive buffer).
    const MOST: usize = 64 * 1024;
    /// A reader waits no longer than this for the mark before it takes what is there (the
    /// rate fell, or the sender paused).
    const LONGEST_WAIT: Duration = Duration::from_millis(20);
    /// How often the rate is measured.
    const WINDOW: Duration = Duration::from_secs(1);

    fn new() -> Self {
        Self {
            window_start: None,
            window_bytes: 0,
            low_water: 1,
        }
    }

    /// `n` bytes were read at `now`; returns a new low-water mark when it should change.
    fn read(&mut self, n: usize, now: Instant) -> Option<usize> {
        let start = *self.window_start.get_or_insert(now);
        self.window_bytes += n as u64;
        let elapsed = now.saturating_duration_since(start);
        if elapsed < Self::WINDOW {
            return None;
        }
        let rate = self.window_bytes as f64 / elapsed.as_secs_f64();
        let mark = ((rate * Self::SPAN.as_secs_f64()) as usize).clamp(1, Self::MOST);
        self.window_start = Some(now);
        self.window_bytes = 0;
        // Only changes of a quarter or more are worth a system call.
        let differs = mark.abs_diff(self.low_water) * 4 > self.low_water;
        differs.then(|| {
            self.low_water = mark;
            mark
        })
    }
}

/// An encoder's connection (or the one to a server, or a push), read in gathered pieces.
pub(super) struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    gather: Gather,
}

impl Connection {
    pub(super) fn new(stream: TcpStream, peer: SocketAddr) -> Self {
        Self {
            stream,
            peer,
            gather: Gather::new(),
        }
    }

    /// The connection, to write to.
    pub(super) fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Who is on the other end.
    pub(super) fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The connection, given back.
    pub(super) fn into_stream(self) -> TcpStream {
        self.stream
    }

    /// Read what the kernel gathered (0: the peer closed) within `idle`.
    pub(super) async fn read(&mut self, buf: &mut BytesMut, idle: Duration) -> io::Result<usize> {
        let deadline = tokio::time::Instant::now() + idle;
        loop {
            let wait = Gather::LONGEST_WAIT.min(deadline - tokio::time::Instant::now());
            if let Ok(Err(e)) = tokio::time::timeout(wait, self.stream.readable()).await {
                return Err(e);
            }
            buf.reserve(READ_SIZE);
            match self.stream.try_read_buf(buf) {
                Ok(n) => {
                    if let Some(mark) = self.gather.read(n, Instant::now()) {
                        let _ = crate::sys::set_receive_low_water(self.stream.as_fd(), mark);
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("nothing received for {} s", idle.as_secs_f64()),
                ));
            }
        }
    }
}

/// Read from `conn` (never ready when there is none).
async fn read_some(
    conn: &mut Option<Connection>,
    buf: &mut BytesMut,
    idle: Duration,
) -> io::Result<usize> {
    match conn {
        Some(conn) => conn.read(buf, idle).await,
        None => std::future::pending().await,
    }
}

async fn listen(spec: TcpSpec, link: Link) {
    let Link {
        stream, counters, ..
    } = &link;
    let Ok(addr) = spec.addr.parse::<SocketAddr>() else {
        return; // checked when the URL was parsed
    };
    let mut retry = Retry::new();
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => break listener,
            Err(e) => {
                let wait = retry.down(Instant::now());
                tracing::warn!(stream = %stream, "cannot listen on {addr}: {e}; trying again in {wait:?}");
                tokio::time::sleep(wait).await;
            }
        }
    };
    tracing::info!(stream = %stream, "listening for an encoder on tcp://{addr}");
    let mut current: Option<Connection> = None;
    let mut buf = BytesMut::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((conn, peer)) => {
                    if !spec.allow.is_empty() && !spec.allow.iter().any(|net| net.contains(&peer.ip())) {
                        StreamCounters::add(&counters.source_refused, 1);
                        tracing::warn!(stream = %stream, "refused an encoder from {peer}: not in allow=");
                        continue;
                    }
                    match current.take() {
                        Some(Connection { peer: old, .. }) => tracing::info!(stream = %stream, "the encoder from {peer} replaces the one from {old}"),
                        None => tracing::info!(stream = %stream, "an encoder connected from {peer}"),
                    }
                    let _ = conn.set_nodelay(true);
                    StreamCounters::add(&counters.source_connections, 1);
                    counters.source_connected.store(1, Ordering::Relaxed);
                    buf.clear();
                    link.inlet.deliver(Delivery::Restart).await;
                    current = Some(Connection::new(conn, peer));
                }
                Err(e) => {
                    // Out of descriptors, most likely: do not spin on it.
                    tracing::warn!(stream = %stream, "cannot accept on {addr}: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            read = read_some(&mut current, &mut buf, link.idle) => match read {
                Ok(n) if n > 0 => {
                    let received = crate::sys::unix_ns();
                    link.inlet.deliver(Delivery::Bytes(buf.split().freeze(), received)).await;
                }
                end => {
                    let peer = current.take().map(|c| c.peer.to_string()).unwrap_or_default();
                    counters.source_connected.store(0, Ordering::Relaxed);
                    match end {
                        Err(e) => tracing::info!(stream = %stream, "the encoder from {peer} went: {e}"),
                        Ok(_) => tracing::info!(stream = %stream, "the encoder from {peer} disconnected"),
                    }
                }
            },
        }
    }
}

async fn connect(spec: TcpSpec, link: Link) {
    let addr = &spec.addr;
    let mut attempts = Attempts::new(link.stream.clone(), link.counters.clone());
    let mut buf = BytesMut::new();
    loop {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr.as_str())).await {
            Ok(Ok(conn)) => {
                let peer = conn
                    .peer_addr()
                    .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
                let mut conn = Connection::new(conn, peer);
                attempts.up(&format!("connected to tcp://{addr}"));
                buf.clear();
                link.inlet.deliver(Delivery::Restart).await;
                let why = loop {
                    match conn.read(&mut buf, link.idle).await {
                        Ok(0) => break "closed by the server".to_owned(),
                        Ok(_) => {
                            let received = crate::sys::unix_ns();
                            link.inlet
                                .deliver(Delivery::Bytes(buf.split().freeze(), received))
                                .await;
                        }
                        Err(e) => break e.to_string(),
                    }
                };
                attempts.down(&format!("the connection to tcp://{addr} ended: {why}"));
            }
            Ok(Err(e)) => attempts.failed(format!("cannot connect to tcp://{addr}: {e}")),
            Err(_) => attempts.failed(format!(
                "cannot connect to tcp://{addr}: no answer in {CONNECT_TIMEOUT:?}"
            )),
        }
        attempts.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that accepts and then sends nothing: the source closes the connection once
    /// the idle time has passed, says why, and connects again.
    #[test]
    fn a_silent_server_is_left_and_connected_to_again() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = server.local_addr().unwrap();
            let counters = Arc::new(StreamCounters::default());
            let link = Link {
                stream: "silent".into(),
                inlet: Inlet::new(Arc::new(crate::wake::Nobody)),
                counters: counters.clone(),
                idle: Duration::from_millis(200),
            };
            let spec = tcp(&format!("tcp://{addr}?mode=connect")).unwrap();
            let task = tokio::spawn(connect(spec, link));
            let started = Instant::now();
            let (mut first, _) = server.accept().await.unwrap();
            let mut byte = [0u8; 1];
            // The source closes it: the read sees the end.
            let n = tokio::time::timeout(
                Duration::from_secs(2),
                tokio::io::AsyncReadExt::read(&mut first, &mut byte),
            )
            .await
            .unwrap()
            .unwrap();
            assert_eq!(n, 0);
            assert!(started.elapsed() >= Duration::from_millis(200));
            assert_eq!(counters.source_connected.load(Ordering::Relaxed), 0);
            // And comes back (after its first wait, 0.25 s).
            let _second = tokio::time::timeout(Duration::from_secs(2), server.accept())
                .await
                .unwrap()
                .unwrap();
            // (The kernel completes the handshake before the task sees it: wait for the count.)
            let counted = async {
                while counters.source_connections.load(Ordering::Relaxed) < 2 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            };
            tokio::time::timeout(Duration::from_secs(1), counted)
                .await
                .unwrap();
            task.abort();
        });
    }

    fn tcp(url: &str) -> Result<TcpSpec, SourceError> {
        match SourceSpec::parse(url)? {
            SourceSpec::Tcp(spec) => Ok(spec),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_listen_and_connect_urls() {
        let s = tcp("tcp://0.0.0.0:9000").unwrap();
        assert_eq!((s.addr.as_str(), s.mode), ("0.0.0.0:9000", TcpMode::Listen));
        let s = tcp("tcp://[::]:9000?allow=10.0.0.0/8,192.0.2.7&program=3").unwrap();
        assert_eq!(s.allow.len(), 2);
        assert!(s.allow[1].contains(&"192.0.2.7".parse::<std::net::IpAddr>().unwrap()));
        assert_eq!(s.program, Some(3));
        let s = tcp("tcp://encoder.example:1234?mode=connect").unwrap();
        assert_eq!(s.mode, TcpMode::Connect);
        assert_eq!(s.addr, "encoder.example:1234");
    }

    #[test]
    fn the_kernel_gathers_about_ten_milliseconds_of_the_stream() {
        let t = Instant::now();
        let ms = |n| t + Duration::from_millis(n);
        let mut g = Gather::new();
        // 20 Mbit/s in 1316-byte writes, read as they come: nothing decided within the first
        // second, then 25 kB (10 ms of it).
        let mut marks = Vec::new();
        for i in 0..=1900u64 {
            marks.extend(g.read(1316, ms(i * 1000 / 1900)));
        }
        assert_eq!(marks.len(), 1);
        assert!((24_000..=26_500).contains(&marks[0]), "{marks:?}");
        // The same rate again: no call.
        let mut again = Vec::new();
        for i in 1..=100u64 {
            again.extend(g.read(25_000, ms(1000 + i * 10)));
        }
        assert!(again.is_empty(), "{again:?}");
        // A trickle: down to a few bytes, never 0. A flood: at most 64 KiB.
        let mut trickle = Gather::new();
        trickle.read(10, ms(0));
        assert_eq!(trickle.read(10, ms(1000)), None); // 20 B/s: 0.2 B, rounds to the 1 it is
        let mut flood = Gather::new();
        flood.read(50_000_000, ms(0));
        assert_eq!(flood.read(0, ms(1000)), Some(64 * 1024));
    }

    #[test]
    fn refuses_bad_tcp_urls() {
        for url in [
            "tcp://",
            "tcp://0.0.0.0",
            "tcp://name:9000",
            "tcp://0.0.0.0:99999",
            "tcp://host?mode=connect",
            "tcp://host:port?mode=connect",
            "tcp://a b:1?mode=connect",
            "tcp://0.0.0.0:9000?mode=push",
            "tcp://0.0.0.0:9000?allow=10.0.0.0/33",
            "tcp://host:1?mode=connect&allow=10.0.0.0/8",
        ] {
            assert!(tcp(url).is_err(), "{url}");
        }
    }
}
