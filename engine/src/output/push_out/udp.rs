//! Re-emission over UDP: `udp://GROUP:PORT?ttl=&iface=&rtp=1&delay=` (or a unicast host).
//!
//! One thread (`push-udp`) sends every UDP push: it takes what each push's tap holds into its
//! [`Pacer`], sends the datagrams that are due (7 packets each, in RTP when `rtp=1`), and
//! sleeps until the next one is due or a tap wakes it. A thread of its own rather than a
//! shard's turn: a shard busy with a thousand viewers must not make datagrams late. It runs
//! at real-time priority where the process may (root, `CAP_SYS_NICE` or `LimitRTPRIO=1`, as
//! the systemd unit gives): with both cores busy its datagrams then leave within ~0.2 ms of
//! due at p99, against ~4 ms at normal priority. Where it may not, it says so once and paces
//! at normal priority.
//!
//! - `ttl=` (1 to 255, default 1 for a group, 64 otherwise): hops a datagram may take.
//! - `iface=` (a name, an index or an IPv4 address): where datagrams to a group leave.
//! - `rtp=1`: each datagram in RTP (payload type 33, a sequence number, a 90 kHz timestamp).
//! - `delay=` (0 to 10,000 ms, default 200): how long after the data arrived it leaves, room
//!   for the jitter of what comes in; it must cover the source's bursts.

use super::{PushOut, UdpTarget, LATE_NS};
use crate::stream::tap::{Accept, Follow, TapWake};
use shardcast_protocols::rtp;
use shardcast_protocols::ts::pacer::{Pacer, PacerConfig};
use socket2::{Domain, Protocol, Socket, Type};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest the emitter sleeps with nothing due (it looks for stopped pushes then).
const IDLE: Duration = Duration::from_millis(100);
/// The `SCHED_FIFO` priority of the emitter: the lowest, above every normal thread.
const REALTIME_PRIORITY: u8 = 1;
/// The send buffer of each push's socket.
const SEND_BUFFER: usize = 1 << 20;

/// The socket a push sends through: connected to its target.
fn open(target: &UdpTarget) -> std::io::Result<Socket> {
    let domain = match target.addr {
        SocketAddr::V4(_) => Domain::IPV4,
        SocketAddr::V6(_) => Domain::IPV6,
    };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_send_buffer_size(SEND_BUFFER)?;
    match target.addr.ip() {
        IpAddr::V4(group) if group.is_multicast() => {
            socket.set_multicast_ttl_v4(target.ttl)?;
            if let Some(iface) = &target.iface {
                socket.set_multicast_if_v4(&crate::source::udp::interface_v4(iface)?)?;
            }
        }
        IpAddr::V6(group) if group.is_multicast() => {
            socket.set_multicast_hops_v6(target.ttl)?;
            if let Some(iface) = &target.iface {
                socket.set_multicast_if_v6(crate::source::udp::interface_index(iface)?)?;
            }
        }
        IpAddr::V4(_) => socket.set_ttl(target.ttl)?,
        IpAddr::V6(_) => socket.set_unicast_hops_v6(target.ttl)?,
    }
    socket.set_nonblocking(true)?;
    socket.connect(&target.addr.into())?;
    Ok(socket)
}

/// One UDP push as the emitter runs it.
struct Job {
    push: Arc<PushOut>,
    socket: Socket,
    pacer: Pacer,
    follow: Follow,
    rtp: Option<RtpState>,
    resyncs_seen: u64,
}

struct RtpState {
    sequence: u16,
    ssrc: u32,
}

/// The thread that sends every UDP push, started with the first.
#[derive(Debug, Default)]
pub(super) struct Emitter {
    inner: Mutex<Option<EmitterThread>>,
}

#[derive(Debug)]
struct EmitterThread {
    jobs: mpsc::Sender<Job>,
    handle: std::thread::JoinHandle<()>,
    stopping: Arc<AtomicBool>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("id", &self.push.id).finish()
    }
}

impl Emitter {
    /// How a UDP push's tap wakes the emitter (started here if it is not running).
    pub(super) fn wake(&self) -> std::io::Result<TapWake> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.is_none() {
            *inner = Some(start()?);
        }
        let thread = inner
            .as_ref()
            .ok_or_else(|| std::io::Error::other("the UDP emitter has stopped"))?;
        Ok(TapWake::Thread(thread.handle.thread().clone()))
    }

    /// Send `push` to `target` from now on.
    pub(super) fn add(&self, push: Arc<PushOut>, target: UdpTarget) -> std::io::Result<()> {
        let socket = open(&target)?;
        let delay_ns = target.delay.as_nanos() as u64;
        let rtp = target.rtp.then(|| RtpState {
            sequence: 0,
            ssrc: ssrc(push.id, &push.stream),
        });
        let job = Job {
            push,
            socket,
            pacer: Pacer::new(PacerConfig {
                delay_ns,
                ..PacerConfig::default()
            }),
            follow: Follow::default(),
            rtp,
            resyncs_seen: 0,
        };
        job.push.counters.connected.store(true, Ordering::Relaxed);
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let thread = inner
            .as_ref()
            .ok_or_else(|| std::io::Error::other("the UDP emitter has stopped"))?;
        thread
            .jobs
            .send(job)
            .map_err(|_| std::io::Error::other("the UDP emitter has stopped"))?;
        thread.handle.thread().unpark();
        Ok(())
    }

    /// Stop the thread (the server stops).
    pub(super) fn shut_down(&self) {
        let thread = self.inner.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = thread {
            t.stopping.store(true, Ordering::Relaxed);
            t.handle.thread().unpark();
            let _ = t.handle.join();
        }
    }
}

/// An RTP source identifier that differs between pushes.
fn ssrc(id: u64, stream: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in stream.bytes().chain(id.to_le_bytes()) {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h
}

fn start() -> std::io::Result<EmitterThread> {
    let (jobs, incoming) = mpsc::channel();
    let stopping = Arc::new(AtomicBool::new(false));
    let stop = stopping.clone();
    let handle = std::thread::Builder::new()
        .name("push-udp".into())
        .spawn(move || run(incoming, &stop))?;
    Ok(EmitterThread {
        jobs,
        handle,
        stopping,
    })
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn run(incoming: mpsc::Receiver<Job>, stopping: &AtomicBool) {
    match crate::sys::run_realtime(REALTIME_PRIORITY) {
        Ok(()) => tracing::info!("push-udp: paces at real-time priority {REALTIME_PRIORITY}"),
        Err(e) => tracing::warn!(
            "push-udp: paces at normal priority ({e}): datagrams may be late on a busy \
             machine; allow LimitRTPRIO=1 or CAP_SYS_NICE"
        ),
    }
    let mut jobs: Vec<Job> = Vec::new();
    let mut datagram = Vec::with_capacity(12 + 7 * 188);
    while !stopping.load(Ordering::Relaxed) {
        jobs.extend(incoming.try_iter());
        jobs.retain(|j| !j.push.stopped());
        let now = now_ns();
        let mut next = now + IDLE.as_nanos() as u64;
        for job in &mut jobs {
            job.turn(now, &mut datagram);
            if let Some(due) = job.pacer.next_due() {
                next = next.min(due);
            }
        }
        if next > now {
            std::thread::park_timeout(Duration::from_nanos(next - now));
        }
    }
}

impl Job {
    /// Take what the tap holds, send what is due by `now`.
    fn turn(&mut self, now: u64, datagram: &mut Vec<u8>) {
        while let Some(chunk) = self.push.tap.take() {
            match self.follow.accept(&chunk) {
                Accept::Skip => continue,
                Accept::Restart => self.pacer.restart(now),
                Accept::Next => {}
            }
            self.pacer.push(&chunk.data, chunk.received_ns);
        }
        let counters = &self.push.counters;
        while let Some(due) = self.pacer.poll(now) {
            datagram.clear();
            if let Some(rtp) = &mut self.rtp {
                let timestamp = (u128::from(due.due_ns) * 9 / 100_000) as u32;
                datagram.extend_from_slice(&rtp::header(rtp.sequence, timestamp, rtp.ssrc));
                rtp.sequence = rtp.sequence.wrapping_add(1);
            }
            let packets = self.pacer.datagram();
            datagram.extend_from_slice(packets);
            match self.socket.send(datagram) {
                Ok(_) => {
                    counters.datagrams.fetch_add(1, Ordering::Relaxed);
                    counters
                        .bytes
                        .fetch_add(packets.len() as u64, Ordering::Relaxed);
                    if now > due.due_ns + LATE_NS {
                        counters.late_datagrams.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(_) => {
                    counters.send_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let resyncs = self.pacer.stats().resyncs;
        if resyncs != self.resyncs_seen {
            counters
                .resyncs
                .fetch_add(resyncs - self.resyncs_seen, Ordering::Relaxed);
            self.resyncs_seen = resyncs;
        }
    }
}
