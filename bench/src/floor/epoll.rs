//! The epoll floor (mio): one `write(2)` per viewer per flush; a viewer the kernel took only
//! part from keeps the rest as a backlog, written when its socket says it has room.

use super::{drain, Counts, Pending, Settings, Stats, HEAD};
use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use std::io::{self, Write};
use std::time::{Duration, Instant};

const LISTENER: Token = Token(usize::MAX);
const UDP: Token = Token(usize::MAX - 1);

#[derive(Debug)]
struct Viewer {
    socket: TcpStream,
    backlog: Vec<u8>,
}

/// Write as much of `data` as the socket takes: `Ok(n)` bytes went, `Err` ends the viewer.
fn write_some(socket: &mut TcpStream, data: &[u8]) -> io::Result<usize> {
    loop {
        match socket.write(data) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

pub(super) fn run(settings: &Settings) -> io::Result<()> {
    let mut poll = Poll::new()?;
    // The stream's socket first: once viewers can connect, it is there.
    let mut udp = UdpSocket::bind(settings.udp)?;
    let mut listener = TcpListener::bind(settings.listen)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    poll.registry()
        .register(&mut udp, UDP, Interest::READABLE)?;
    let mut events = Events::with_capacity(4096);
    let mut viewers: Slab<Viewer> = Slab::new();
    let mut pending = Pending::default();
    let mut datagram = vec![0u8; 65_536];
    let mut counts = Counts::default();
    let mut stats = Stats::new(settings.stats_every, Instant::now());
    loop {
        let timeout = pending
            .due_in(Instant::now(), settings.flush)
            .unwrap_or(Duration::from_millis(100));
        poll.poll(&mut events, Some(timeout))?;
        let now = Instant::now();
        for event in &events {
            match event.token() {
                LISTENER => loop {
                    match listener.accept() {
                        Ok((mut socket, _)) => {
                            let _ = socket.set_nodelay(true);
                            // A new socket has room for the head.
                            if write_some(&mut socket, HEAD).ok() != Some(HEAD.len()) {
                                continue;
                            }
                            let entry = viewers.vacant_entry();
                            poll.registry().register(
                                &mut socket,
                                Token(entry.key()),
                                Interest::WRITABLE,
                            )?;
                            entry.insert(Viewer {
                                socket,
                                backlog: Vec::new(),
                            });
                            counts.accepted += 1;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            eprintln!("write-floor: accept: {e}");
                            break;
                        }
                    }
                },
                UDP => drain(
                    |b| udp.recv(b),
                    &mut datagram,
                    &mut pending,
                    &mut counts,
                    now,
                )?,
                Token(key) => {
                    // Room again: the backlog goes first.
                    let Some(v) = viewers.get_mut(key) else {
                        continue;
                    };
                    if v.backlog.is_empty() {
                        continue;
                    }
                    counts.writes += 1;
                    match write_some(&mut v.socket, &v.backlog) {
                        Ok(n) => {
                            counts.bytes += n as u64;
                            v.backlog.drain(..n);
                        }
                        Err(_) => {
                            viewers.remove(key);
                            counts.closed += 1;
                        }
                    }
                }
            }
        }
        if let Some(data) = pending.take_due(Instant::now(), settings.flush) {
            counts.flushes += 1;
            let mut gone = Vec::new();
            for (key, v) in viewers.iter_mut() {
                if !v.backlog.is_empty() {
                    v.backlog.extend_from_slice(&data);
                    if v.backlog.len() > settings.max_backlog {
                        gone.push(key);
                    }
                    continue;
                }
                counts.writes += 1;
                match write_some(&mut v.socket, &data) {
                    Ok(n) => {
                        counts.bytes += n as u64;
                        if n < data.len() {
                            counts.partial += 1;
                            v.backlog.extend_from_slice(&data[n..]);
                        }
                    }
                    Err(_) => gone.push(key),
                }
            }
            for key in gone {
                viewers.remove(key); // closes it
                counts.closed += 1;
            }
        }
        counts.viewers = viewers.len();
        stats.tick(&counts, now);
    }
}
