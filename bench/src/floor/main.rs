//! `write-floor`: the floor of progressive HTTP-TS delivery (issue 22, part 2). The least a
//! server must do to give N viewers a live stream at a given write rate: read the stream's
//! datagrams, drop its null packets (as shardcast does), hold what came until the oldest byte
//! has waited `--flush-ms` (shardcast's `flush_interval` rule), then write it, one contiguous
//! buffer, to every viewer. Nothing else: no demux, no keyframe index, no per-viewer state but
//! a backlog for a viewer the kernel would not take everything from.
//!
//! Two backends, as shardcast has: `epoll` (mio, one `write(2)` per viewer per flush) and
//! `uring` (one `SEND` entry per viewer per flush, all submitted by one `io_uring_enter`).
//! Viewers are `shardcast-bench ts` against `http://ADDR/anything`: the answer is a 200 head
//! and the stream, so the same client measures gaps and latency against both.
//!
//! `unsafe` is in `uring.rs` only (pushing entries whose buffers the kernel reads).
#![deny(unsafe_code)]

mod epoll;
mod uring;

use clap::Parser;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PACKET: usize = 188;
const NULL_PID: u16 = 0x1FFF;
/// What a viewer is sent first.
const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n";

#[derive(Parser, Debug)]
#[command(
    name = "write-floor",
    version,
    about = "The floor of progressive delivery: a stream written to N sockets, nothing else"
)]
struct Cli {
    /// Where viewers connect.
    #[arg(long)]
    listen: SocketAddr,
    /// Where the stream's datagrams arrive.
    #[arg(long)]
    udp: SocketAddr,
    /// Milliseconds the oldest byte waits before a flush to every viewer (shardcast's
    /// `flush_interval`).
    #[arg(long, default_value_t = 20.0)]
    flush_ms: f64,
    /// `uring` or `epoll`.
    #[arg(long, default_value = "uring")]
    io: Backend,
    /// A viewer whose unsent backlog passes this many bytes is closed.
    #[arg(long, default_value_t = 8 << 20)]
    max_backlog: usize,
    /// Seconds between statistics lines on stderr (0: none).
    #[arg(long, default_value_t = 0.0)]
    stats_every: f64,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Backend {
    Uring,
    Epoll,
}

/// The settings both backends run with.
#[derive(Debug, Clone, Copy)]
struct Settings {
    listen: SocketAddr,
    udp: SocketAddr,
    flush: Duration,
    max_backlog: usize,
    stats_every: Option<Duration>,
}

/// The stream's bytes not yet written, and since when the oldest has waited (sans-IO: time is
/// passed in).
#[derive(Debug, Default)]
struct Pending {
    bytes: Vec<u8>,
    since: Option<Instant>,
}

impl Pending {
    /// Keep a datagram's packets but its null packets (and a trailing partial packet).
    fn take_datagram(&mut self, datagram: &[u8], now: Instant) {
        let before = self.bytes.len();
        for packet in datagram.chunks_exact(PACKET) {
            let pid = u16::from(packet[1] & 0x1F) << 8 | u16::from(packet[2]);
            if packet[0] == 0x47 && pid != NULL_PID {
                self.bytes.extend_from_slice(packet);
            }
        }
        if self.bytes.len() > before && self.since.is_none() {
            self.since = Some(now);
        }
    }

    /// How long until a flush is due (zero: now), or `None` with nothing pending.
    fn due_in(&self, now: Instant, flush: Duration) -> Option<Duration> {
        self.since
            .map(|since| flush.saturating_sub(now.saturating_duration_since(since)))
    }

    /// The bytes to write now, if a flush is due.
    fn take_due(&mut self, now: Instant, flush: Duration) -> Option<Vec<u8>> {
        if self.due_in(now, flush)? > Duration::ZERO {
            return None;
        }
        self.since = None;
        Some(std::mem::take(&mut self.bytes))
    }
}

/// Read every datagram waiting (`recv` is the socket's, mio's or std's) into `pending`.
fn drain(
    mut recv: impl FnMut(&mut [u8]) -> std::io::Result<usize>,
    datagram: &mut [u8],
    pending: &mut Pending,
    counts: &mut Counts,
    now: Instant,
) -> std::io::Result<()> {
    loop {
        match recv(datagram) {
            Ok(n) => {
                counts.datagrams += 1;
                pending.take_datagram(&datagram[..n], now);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// What the floor did, for the statistics line.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    viewers: usize,
    accepted: u64,
    closed: u64,
    flushes: u64,
    writes: u64,
    partial: u64,
    bytes: u64,
    datagrams: u64,
}

/// Prints a statistics line every `every`.
#[derive(Debug)]
struct Stats {
    every: Option<Duration>,
    next: Instant,
    last: Counts,
}

impl Stats {
    fn new(every: Option<Duration>, now: Instant) -> Stats {
        Stats {
            every,
            next: now + every.unwrap_or_default(),
            last: Counts::default(),
        }
    }

    fn tick(&mut self, counts: &Counts, now: Instant) {
        let Some(every) = self.every else { return };
        if now < self.next {
            return;
        }
        let secs = every.as_secs_f64();
        let rate = |n: u64, was: u64| (n - was) as f64 / secs;
        eprintln!(
            "viewers {} (accepted {}, closed {})  flushes/s {:.1}  writes/s {:.0}  partial/s {:.1}  Mbit/s {:.1}  datagrams/s {:.0}",
            counts.viewers,
            counts.accepted,
            counts.closed,
            rate(counts.flushes, self.last.flushes),
            rate(counts.writes, self.last.writes),
            rate(counts.partial, self.last.partial),
            rate(counts.bytes, self.last.bytes) * 8.0 / 1e6,
            rate(counts.datagrams, self.last.datagrams),
        );
        self.last = *counts;
        self.next = now + every;
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !(0.0..=1000.0).contains(&cli.flush_ms) {
        eprintln!("write-floor: --flush-ms is 0 to 1000, not {}", cli.flush_ms);
        return ExitCode::from(2);
    }
    let settings = Settings {
        listen: cli.listen,
        udp: cli.udp,
        flush: Duration::from_secs_f64(cli.flush_ms / 1000.0),
        max_backlog: cli.max_backlog,
        stats_every: (cli.stats_every > 0.0).then(|| Duration::from_secs_f64(cli.stats_every)),
    };
    let ran = match cli.io {
        Backend::Epoll => epoll::run(&settings),
        Backend::Uring => uring::run(&settings),
    };
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("write-floor: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(pid: u16, fill: u8) -> [u8; PACKET] {
        let mut p = [fill; PACKET];
        p[0] = 0x47;
        p[1] = (pid >> 8) as u8;
        p[2] = pid as u8;
        p
    }

    #[test]
    fn null_packets_are_dropped_and_the_oldest_byte_sets_the_flush() {
        let t0 = Instant::now();
        let flush = Duration::from_millis(20);
        let mut pending = Pending::default();
        assert_eq!(pending.due_in(t0, flush), None);
        let mut datagram = Vec::new();
        datagram.extend_from_slice(&packet(0x100, 1));
        datagram.extend_from_slice(&packet(NULL_PID, 2));
        datagram.extend_from_slice(&packet(0x101, 3));
        datagram.extend_from_slice(&[0x47, 0, 0]); // a partial packet: not kept
        pending.take_datagram(&datagram, t0);
        pending.take_datagram(&packet(NULL_PID, 4), t0 + Duration::from_millis(5));
        pending.take_datagram(&packet(0x100, 5), t0 + Duration::from_millis(15));
        assert_eq!(
            pending.due_in(t0 + Duration::from_millis(15), flush),
            Some(Duration::from_millis(5))
        );
        assert_eq!(
            pending.take_due(t0 + Duration::from_millis(19), flush),
            None
        );
        let due = pending.take_due(t0 + Duration::from_millis(20), flush);
        assert_eq!(due.map(|b| b.len()), Some(3 * PACKET));
        assert_eq!(pending.due_in(t0 + Duration::from_millis(40), flush), None);
        // Only null packets: nothing pending, nothing due.
        pending.take_datagram(&packet(NULL_PID, 6), t0 + Duration::from_millis(50));
        assert_eq!(pending.due_in(t0 + Duration::from_millis(90), flush), None);
    }
}
