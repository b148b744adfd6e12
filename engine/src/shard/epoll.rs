//! The epoll backend (through mio): sockets, readiness, `readv`/`writev`; every decision is
//! the core's.

use super::admission::{self, Backoff};
use super::core::{ShardCore, ShardTls};
use super::housekeeping::{Backend, Housekeeping};
use super::pace::{IngestPace, IngestTicks};
use super::{prepare, Clock, RunState, ShardSetup, WAKER};
use crate::source::UdpIngest;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const LISTENER: Token = Token(0);
const TLS_LISTENER: Token = Token(2);
const INGEST_BASE: usize = 3;
const CONN_BASE: usize = 1 << 20;
/// A wake-up with fewer events than this waits `gather` for more before it is handled.
const GATHER_BELOW: usize = 32;

/// A UDP ingest socket, how it is read ([`IngestPace`]), and whether it is registered with
/// the poller (only while it is read promptly).
struct Ingest {
    home: usize,
    socket: UdpIngest,
    pace: IngestPace,
    polled: bool,
}

/// A viewer's socket, and whether it may have bytes not read yet (readiness is
/// edge-triggered: reading stops early only while the connection does not want to read).
struct Client {
    socket: TcpStream,
    unread: bool,
}

/// A shard running on epoll.
#[allow(missing_debug_implementations)] // sockets and a poller; nothing useful to print
pub struct EpollShard {
    core: ShardCore,
    poll: Poll,
    listener: TcpListener,
    /// The TLS listener and what its connections are accepted with.
    tls: Option<(TcpListener, ShardTls)>,
    sockets: Vec<Option<Client>>,
    ingest: Vec<Ingest>,
    ticks: IngestTicks,
    read_buf: Vec<u8>,
    max_connections: usize,
    send_buffer: usize,
    run: Arc<RunState>,
    /// When to accept again after accepts failed for want of descriptors or memory.
    accept_again_at: Option<Instant>,
    accept_backoff: Backoff,
    accepting: bool,
    /// How long a wake-up with few events waits for more (zero: none).
    gather: Duration,
}

impl EpollShard {
    /// Pin, register the listener, open the ingest sockets. `poll` was made beforehand so that
    /// the other shards could take its waker.
    pub fn new(setup: ShardSetup, poll: Poll) -> io::Result<EpollShard> {
        let p = prepare(setup);
        let mut listener = TcpListener::from_std(p.listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let tls = match p.tls {
            Some((l, settings)) => {
                let mut l = TcpListener::from_std(l);
                poll.registry()
                    .register(&mut l, TLS_LISTENER, Interest::READABLE)?;
                Some((l, settings))
            }
            None => None,
        };
        let mut shard = EpollShard {
            core: p.core,
            poll,
            listener,
            tls,
            sockets: Vec::new(),
            ingest: Vec::new(),
            ticks: IngestTicks::new(p.ingest_interval, Instant::now()),
            read_buf: vec![0; 16 * 1024],
            max_connections: p.max_connections,
            send_buffer: p.send_buffer,
            run: p.run,
            accept_again_at: None,
            accept_backoff: Backoff::default(),
            accepting: true,
            gather: p.gather,
        };
        shard.follow_catalog();
        Ok(shard)
    }

    /// Follow a change of the stream table: open and close ingest sockets, end the viewers of
    /// streams that went.
    fn follow_catalog(&mut self) {
        let Some(changes) = self.core.follow_catalog() else {
            return;
        };
        for home in changes.stop_sources {
            if let Some(pos) = self.ingest.iter().position(|g| g.home == home) {
                let mut gone = self.ingest.swap_remove(pos);
                if gone.polled {
                    let _ = self.poll.registry().deregister(gone.socket.socket());
                }
            }
        }
        for (home, name, udp) in changes.start_sources {
            let Some(mut socket) = super::open_source(&self.core, &name, &udp) else {
                continue;
            };
            match self.poll.registry().register(
                socket.socket(),
                Token(INGEST_BASE + home),
                Interest::READABLE,
            ) {
                Ok(()) => self.ingest.push(Ingest {
                    home,
                    pace: IngestPace::new(socket.receive_buffer(), Instant::now()),
                    socket,
                    polled: true,
                }),
                Err(e) => tracing::error!(stream = %name, "cannot poll the ingest socket: {e}"),
            }
        }
        for key in changes.ended {
            self.write(key);
        }
    }

    /// Run until stopped.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut housekeeping = Housekeeping::new(Instant::now());
        let mut written = Vec::new();
        let run = self.run.clone();
        loop {
            let ticking = self.ingest.iter().any(|g| !g.polled);
            let timeout = self
                .core
                .next_timer()
                .min(Duration::from_millis(100))
                .min(self.ticks.wait(Instant::now(), ticking));
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            let few = events.iter().take(GATHER_BELOW).count();
            if !self.gather.is_zero() && few > 0 && few < GATHER_BELOW {
                // A few events: let more come before handling them (what comes meanwhile
                // on these sockets is read with them, on others it is the next turn's, at
                // once). While the thread sleeps, arrivals wake nobody: a burst of datagrams
                // on many channels costs one wake-up, not one each.
                std::thread::sleep(self.gather);
            }
            let clock = Clock::now();
            let now = clock.mono;
            self.core.begin_turn(clock);
            housekeeping.woke(now);
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(false),
                    TLS_LISTENER => self.accept(true),
                    WAKER => {}
                    Token(t) if t >= CONN_BASE => self.client_event(t - CONN_BASE),
                    Token(t) => self.read_ingest(t - INGEST_BASE),
                }
            }
            self.pace_ingest(now);
            if self.accepting && self.accept_again_at.is_some_and(|at| now >= at) {
                // The backlog may hold connections no new readiness event will announce.
                self.accept_again_at = None;
                self.accept(false);
                self.accept(true);
            }
            if housekeeping.finish_turn(&mut self, &run, now, &mut written)? {
                return Ok(());
            }
        }
    }

    /// Accept what the plain listener (or the TLS one) has waiting.
    fn accept(&mut self, tls: bool) {
        if self.accept_again_at.is_some() || !self.accepting {
            return;
        }
        loop {
            let accepted = match (&self.tls, tls) {
                (_, false) => self.listener.accept(),
                (Some((l, _)), true) => l.accept(),
                (None, true) => return,
            };
            let (mut socket, peer) = match accepted {
                Ok(s) => {
                    self.accept_backoff.succeeded();
                    s
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error().is_some_and(admission::exhausted) => {
                    // Out of descriptors or memory: wait, rather than spin on the backlog.
                    self.core
                        .admission()
                        .accept_errors
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let wait = self.accept_backoff.failed();
                    tracing::warn!(
                        shard = self.core.index(),
                        failures = self.accept_backoff.failures,
                        "accept failed ({e}): accepting again in {wait:?}"
                    );
                    self.accept_backoff.failures = 0;
                    self.accept_again_at = Some(Instant::now() + wait);
                    return;
                }
                Err(e) => {
                    tracing::warn!(shard = self.core.index(), "accept failed: {e}");
                    return;
                }
            };
            let _ = socket.set_nodelay(true);
            if self.send_buffer > 0 {
                let _ = socket2::SockRef::from(&socket).set_send_buffer_size(self.send_buffer);
            }
            let key = match (&self.tls, tls) {
                (Some((_, settings)), true) => {
                    self.core
                        .open_tls(self.max_connections, Some(peer.ip()), settings)
                }
                _ => self.core.open(self.max_connections, Some(peer.ip())),
            };
            let Some(key) = key else {
                continue;
            };
            if let Err(e) = self.poll.registry().register(
                &mut socket,
                Token(CONN_BASE + key),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                tracing::warn!(
                    shard = self.core.index(),
                    "cannot register a connection: {e}"
                );
                self.core.close(key);
                continue;
            }
            if self.sockets.len() <= key {
                self.sockets.resize_with(key + 1, || None);
            }
            self.sockets[key] = Some(Client {
                socket,
                unread: false,
            });
        }
    }

    fn client_event(&mut self, key: usize) {
        if let Some(Some(c)) = self.sockets.get_mut(key) {
            c.unread = true;
        }
        self.write(key);
    }

    /// Read what the peer sent while the connection wants it; returns false when the peer
    /// has gone (or the socket broke).
    fn read(&mut self, key: usize) -> bool {
        loop {
            let Some(Some(c)) = self.sockets.get_mut(key) else {
                return true;
            };
            if !c.unread || !self.core.conn(key).is_some_and(|conn| conn.wants_read()) {
                return true;
            }
            match c.socket.read(&mut self.read_buf) {
                Ok(0) => return false,
                Ok(n) => self.core.on_read(key, &self.read_buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.unread = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }

    /// Read what the connection wants to read, write what it has queued, and again while
    /// writing let it read more (its responses drained); close it when it is done or broken.
    fn write(&mut self, key: usize) {
        loop {
            if !self.read(key) {
                self.close(key);
                return;
            }
            if !self.write_queued(key) {
                self.close(key);
                return;
            }
            if self.core.hands_over(key) {
                self.hand_over(key);
                return;
            }
            let again = self
                .sockets
                .get(key)
                .and_then(Option::as_ref)
                .is_some_and(|c| c.unread)
                && self.core.conn(key).is_some_and(|conn| conn.wants_read());
            if !again {
                return;
            }
        }
    }

    /// Write what the connection has queued; false when it is done or broken.
    fn write_queued(&mut self, key: usize) -> bool {
        if self.core.is_tls(key) {
            return self.write_tls(key);
        }
        loop {
            let Some(Some(c)) = self.sockets.get_mut(key) else {
                return true;
            };
            let Some(conn) = self.core.conn(key).filter(|c| c.wants_write()) else {
                break;
            };
            let socket = &mut c.socket;
            let result = if let Some((file, offset, len)) = conn.front_file() {
                crate::sys::send_file(socket.as_fd(), file, offset, len)
            } else {
                let mut slices = [IoSlice::new(&[]); 64];
                let n = conn.write_slices(&mut slices);
                if conn.file_follows() {
                    crate::sys::send_more(socket.as_fd(), &slices[..n])
                } else {
                    socket.write_vectored(&slices[..n])
                }
            };
            match result {
                Ok(0) => return false,
                Ok(w) => {
                    if self.core.wrote(key, w) {
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        !self.core.conn(key).is_some_and(|c| c.finished())
    }

    /// Write a TLS connection's ciphertext, sealing more as the socket takes it; false when
    /// it is done or broken.
    fn write_tls(&mut self, key: usize) -> bool {
        loop {
            let Some(Some(c)) = self.sockets.get_mut(key) else {
                return true;
            };
            let out = self.core.tls_outgoing(key);
            if out.is_empty() {
                break;
            }
            match c.socket.write(out) {
                Ok(0) => return false,
                Ok(n) => self.core.tls_sent(key, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        !self.core.finished(key)
    }

    fn close(&mut self, key: usize) {
        // Once: a key closed twice in a turn must not close the connection that took it.
        if let Some(mut c) = self.sockets.get_mut(key).and_then(Option::take) {
            let _ = self.poll.registry().deregister(&mut c.socket);
            self.core.close(key);
        }
    }

    /// A push connection leaves the shard: its socket goes to the push sources.
    fn hand_over(&mut self, key: usize) {
        if let Some(mut c) = self.sockets.get_mut(key).and_then(Option::take) {
            let _ = self.poll.registry().deregister(&mut c.socket);
            let socket = std::net::TcpStream::from(std::os::fd::OwnedFd::from(c.socket));
            if self.core.hand_over(key, socket).is_err() {
                self.core.close(key);
            }
        }
    }

    fn read_ingest(&mut self, home: usize) {
        if let Some(g) = self.ingest.iter_mut().find(|g| g.home == home) {
            let bytes = self.core.read_ingest(home, &mut g.socket);
            g.pace.received(bytes);
        }
    }

    /// Read the sockets read on the tick when it is due, and look at every socket's pace now
    /// and then: one read promptly is registered with the poller, one read on the tick is
    /// not (its datagrams wake nobody).
    fn pace_ingest(&mut self, now: Instant) {
        if self.ticks.tick(now) {
            for g in self.ingest.iter_mut().filter(|g| !g.polled) {
                let bytes = self.core.read_ingest(g.home, &mut g.socket);
                g.pace.received(bytes);
            }
        }
        if !self.ticks.review(now) {
            return;
        }
        let interval = self.ticks.interval();
        for g in &mut self.ingest {
            let awaited = self.core.awaited(g.home);
            if !g.pace.review(now, interval, awaited) {
                continue;
            }
            let registry = self.poll.registry();
            let socket = g.socket.socket();
            let result = if g.pace.promptly() {
                registry.register(socket, Token(INGEST_BASE + g.home), Interest::READABLE)
            } else {
                registry.deregister(socket)
            };
            match result {
                Ok(()) => g.polled = g.pace.promptly(),
                Err(e) => {
                    tracing::warn!(stream = %self.core.home_name(g.home), "cannot change how the ingest socket is read: {e}")
                }
            }
        }
        let ticked = self.ingest.iter().filter(|g| !g.polled).count();
        let shortest = self
            .ingest
            .iter()
            .filter(|g| !g.polled)
            .filter_map(|g| g.pace.tolerance())
            .min()
            .unwrap_or(Duration::MAX);
        self.ticks.set_period(now, shortest);
        if let Some(stats) = self.run.shard_stats().get(self.core.index()) {
            stats.ingest_ticked.store(ticked as u64, Ordering::Relaxed);
        }
    }
}

impl Backend for EpollShard {
    fn core(&mut self) -> &mut ShardCore {
        &mut self.core
    }

    fn follow_catalog(&mut self) -> io::Result<()> {
        EpollShard::follow_catalog(self);
        Ok(())
    }

    fn write(&mut self, key: usize) -> io::Result<()> {
        EpollShard::write(self, key);
        Ok(())
    }

    fn close(&mut self, key: usize) {
        EpollShard::close(self, key);
    }

    /// Nothing to do: `write` reads what the socket holds (it remembers unread readiness)
    /// whenever the connection wants to read again.
    fn resume_reading(&mut self, _key: usize) -> io::Result<()> {
        Ok(())
    }

    fn linger(&mut self) {
        let keys: Vec<usize> = self
            .sockets
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_some())
            .map(|(k, _)| k)
            .collect();
        for key in keys {
            if self.core.is_tls(key) {
                // close_notify, then the connection closes once it is sent.
                if let Some(conn) = self.core.conn_mut(key) {
                    conn.abort();
                }
            } else if let Some(Some(c)) = self.sockets.get_mut(key) {
                let _ = c.socket.shutdown(std::net::Shutdown::Write);
                c.unread = true;
            }
            EpollShard::write(self, key);
        }
    }

    fn stop_accepting(&mut self) {
        self.accepting = false;
        let _ = self.poll.registry().deregister(&mut self.listener);
        if let Some((l, _)) = &mut self.tls {
            let _ = self.poll.registry().deregister(l);
        }
    }
}
