//! `sink`: the floor of UDP ingest. One thread joins every channel's group and reads each
//! datagram and drops it (mio: one `epoll_wait` per wake-up, one `recvfrom` per datagram until
//! the socket is empty). With `gather`, a wake-up waits that long before it reads, as
//! shardcast's shards do, so a burst on many channels is one wake-up. What a server does
//! beyond this (demux, segmenting, packaging) is its own cost; what this costs is the kernel's
//! and the least a reader pays.

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

/// What the sink received.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Datagrams read.
    pub datagrams: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Wake-ups (`epoll_wait` returns with something to read).
    pub wakeups: u64,
}

/// Receive on every address of `channels` (multicast groups are joined on `interface`) for
/// `duration`, waiting `gather` after each wake-up before reading.
pub fn run(
    channels: &[SocketAddrV4],
    interface: Ipv4Addr,
    duration: Duration,
    gather: Duration,
) -> std::io::Result<Received> {
    let mut poll = Poll::new()?;
    let mut sockets = Vec::with_capacity(channels.len());
    for (i, channel) in channels.iter().enumerate() {
        let mut socket = UdpSocket::bind(SocketAddr::V4(*channel))?;
        if channel.ip().is_multicast() {
            socket.join_multicast_v4(channel.ip(), &interface)?;
        }
        poll.registry()
            .register(&mut socket, Token(i), Interest::READABLE)?;
        sockets.push(socket);
    }
    let mut events = Events::with_capacity(1024);
    let mut buffer = vec![0u8; 65_536];
    let mut received = Received::default();
    let end = Instant::now() + duration;
    loop {
        let now = Instant::now();
        if now >= end {
            return Ok(received);
        }
        poll.poll(&mut events, Some(end - now))?;
        if !events.is_empty() {
            received.wakeups += 1;
            if !gather.is_zero() {
                // What comes meanwhile on these sockets is read with the rest; on others,
                // the next poll returns it at once.
                std::thread::sleep(gather);
            }
        }
        for event in &events {
            let Some(socket) = sockets.get(event.token().0) else {
                continue;
            };
            loop {
                match socket.recv(&mut buffer) {
                    Ok(n) => {
                        received.datagrams += 1;
                        received.bytes += n as u64;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

/// `count` channels from `first`: consecutive ports of its address, or (`groups`) consecutive
/// groups, the last octet counting up, all on its port, as IPTV channels are laid out.
pub fn channels(
    first: SocketAddrV4,
    count: u16,
    groups: bool,
) -> Result<Vec<SocketAddrV4>, String> {
    (0..count)
        .map(|i| {
            if groups {
                let [a, b, c, d] = first.ip().octets();
                let last = u16::from(d) + i;
                let last = u8::try_from(last)
                    .map_err(|_| format!("{count} groups from {first} run past .255"))?;
                Ok(SocketAddrV4::new(
                    Ipv4Addr::new(a, b, c, last),
                    first.port(),
                ))
            } else {
                let port = first
                    .port()
                    .checked_add(i)
                    .ok_or_else(|| format!("{count} ports from {first} run past port 65535"))?;
                Ok(SocketAddrV4::new(*first.ip(), port))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_are_ports_or_groups() {
        let first = SocketAddrV4::new(Ipv4Addr::new(239, 1, 1, 1), 5000);
        let ports = channels(first, 3, false).unwrap();
        assert_eq!(
            ports[2],
            SocketAddrV4::new(Ipv4Addr::new(239, 1, 1, 1), 5002)
        );
        let groups = channels(first, 3, true).unwrap();
        assert_eq!(
            groups[2],
            SocketAddrV4::new(Ipv4Addr::new(239, 1, 1, 3), 5000)
        );
        assert!(channels(first, 256, true).is_err());
        let high = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 65535);
        assert!(channels(high, 2, false).is_err());
    }

    #[test]
    fn the_sink_reads_what_is_sent() {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let at = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        // The sender keeps sending until the sink is done: what goes before the sink has
        // bound is refused, whenever that is.
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sending = done.clone();
        let sender = std::thread::spawn(move || {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            while !sending.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = s.send_to(&[0x47; 1316], at);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let got = run(
            &[at],
            Ipv4Addr::LOCALHOST,
            Duration::from_millis(400),
            Duration::from_millis(1),
        )
        .unwrap();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        sender.join().unwrap();
        assert!(got.datagrams >= 1, "{got:?}");
        assert_eq!(got.bytes, got.datagrams * 1316);
        assert!(got.wakeups >= 1);
    }
}
