//! The io_uring backend: multishot accept, recv and `SEND`/`SENDMSG` submitted to the shard's own
//! ring, multishot `RECVMSG` into a provided-buffer ring for ingest sockets (`uring/ingest.rs`),
//! and an eventfd read for wake-ups from other shards. Every decision is the core's.
//!
//! Connections receive into one provided-buffer ring the shard's connections share (256
//! buffers of 4 KiB): a receive takes a buffer only when bytes arrive and gives it back as
//! soon as the core has parsed them, so an idle viewer holds no receive buffer. A receive
//! that finds every buffer taken (`ENOBUFS`, a burst of more requests in one wake-up than
//! there are buffers) is armed again at the next turn, its bytes waiting in the socket.
//!
//! HLS segments go out one of three ways (`segment_send`): `SENDMSG` (the kernel copies),
//! `SENDMSG_ZC` for large sends (pages are referenced, and the buffers are held until the
//! kernel's notification says it is done with them; a connection whose notifications report
//! that the kernel copied anyway falls back to `SENDMSG`), or `sendfile(2)` from the
//! segment's memfd, called directly on the non-blocking socket with a `POLL_ADD` to wait for
//! room (io_uring's `SPLICE` would need a pipe per viewer and an io-wq thread per stalled one).
//!
//! Memory handed to the kernel stays put until its completion arrives: the receive ring is
//! unregistered before it is freed, message headers and iovec arrays are boxed per send (and
//! reused), an in-flight send keeps its own handles on the `Bytes` it points into, and a TLS connection's `SEND` points into its
//! link's output buffer, which stays in place until the completion is reported to the core. A connection is freed only once neither its
//! receive nor a send nor a zero-copy notification is pending (closing shuts the socket down
//! first, which completes them).
//!
//! This is the only module of the engine with `unsafe`: pushing entries whose buffers the
//! kernel will use.
//!
//! Why one file of about 950 lines: every entry pushed and every completion handled here
//! shares the buffer-lifetime rules of that `unsafe`, and they read best in one place (the
//! ingest buffer ring, which has its own, is in `ingest.rs`).
#![allow(unsafe_code)]

mod ingest;

use super::admission::{self, Backoff};
use super::core::{ShardCore, ShardTls};
use super::housekeeping::{Backend, Housekeeping};
use super::pace::IngestTicks;
use super::{prepare, Clock, RunState, ShardSetup};
use crate::hls::SegmentSend;
use crate::sys;
use crate::wake::Wake;
use bytes::Bytes;
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ACCEPT: u64 = 1;
const WAKE: u64 = 2;
const INGEST: u64 = 3;
const RECV: u64 = 4;
const SEND: u64 = 5;
const CANCEL: u64 = 6;
/// `IORING_SEND_ZC_REPORT_USAGE`: the notification says whether the kernel copied.
const ZC_REPORT_USAGE: u16 = 8;
/// `IORING_NOTIF_USAGE_ZC_COPIED` in a notification's result.
const ZC_COPIED: i32 = i32::MIN;
/// Sends smaller than this are copied even in zero-copy mode (pinning pages costs more).
const ZC_MIN_BYTES: usize = 16 * 1024;
/// Bytes of one receive buffer (a request larger than this arrives over several receives).
const RECV_BUFFER: usize = 4096;
/// Receive buffers of the shard's connections, shared: a connection's receive takes one only
/// when bytes arrive, and gives it back once they are parsed, so ten thousand idle viewers
/// hold none.
const RECV_BUFFERS: u16 = 256;
/// The buffer group of the connections' receives (ingest sockets number theirs from 0).
const RECV_GROUP: u16 = u16::MAX;
/// Completion queue entries (the kernel clamps to its maximum).
const CQ_ENTRIES: u32 = 65_536;
const MAX_IOVECS: usize = 64;
/// With `gather`, a wait returns early once this many completions are in.
const GATHER_COMPLETIONS: usize = 256;
/// The listeners, as the key of their accepts' user data.
const LISTEN_PLAIN: usize = 0;
const LISTEN_TLS: usize = 1;

fn user_data(kind: u64, key: usize) -> u64 {
    kind << 56 | (key as u64 & 0xFFFF_FFFF)
}

/// The user data of zero-copy send number `generation` of connection `key`.
fn zc_user_data(key: usize, generation: u32) -> u64 {
    user_data(SEND, key) | u64::from(generation & 0xFF_FFFF) << 32
}

/// The opcodes this backend submits, checked before it is chosen.
const NEEDED: [(u8, &str); 7] = [
    (opcode::AcceptMulti::CODE, "ACCEPT (multishot)"),
    (opcode::Recv::CODE, "RECV"),
    (opcode::RecvMsgMulti::CODE, "RECVMSG (multishot)"),
    (opcode::SendMsg::CODE, "SENDMSG"),
    (opcode::PollAdd::CODE, "POLL_ADD"),
    (opcode::Read::CODE, "READ"),
    (opcode::AsyncCancel2::CODE, "ASYNC_CANCEL"),
];

/// Why io_uring cannot be used here (each in one line).
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// No ring (disabled by sysctl, seccomp, or an old kernel).
    #[error("io_uring_setup failed: {0}")]
    Setup(io::Error),
    /// The kernel cannot say what it supports.
    #[error("io_uring probe failed: {0}")]
    Probe(io::Error),
    /// Operations the shard needs are missing.
    #[error("the kernel's io_uring lacks {}", .0.join(", "))]
    Lacks(Vec<&'static str>),
    /// Provided-buffer rings (ingest) are missing.
    #[error("cannot register a provided-buffer ring: {0}")]
    BufferRing(io::Error),
}

/// Whether io_uring can be used here, and if not, why.
pub fn probe() -> Result<(), Unavailable> {
    let ring = IoUring::new(8).map_err(Unavailable::Setup)?;
    let mut probe = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(Unavailable::Probe)?;
    let missing: Vec<&'static str> = NEEDED
        .iter()
        .filter(|(code, _)| !probe.is_supported(*code))
        .map(|(_, n)| *n)
        .collect();
    if !missing.is_empty() {
        return Err(Unavailable::Lacks(missing));
    }
    let mut buffers = ingest::BufRing::new(&ring, 0).map_err(Unavailable::BufferRing)?;
    buffers.release(&ring);
    Ok(())
}

/// Whether the kernel's io_uring has `SENDMSG_ZC` (for `segment_send = "zerocopy"`).
pub fn supports_send_zc() -> bool {
    let Ok(ring) = IoUring::new(8) else {
        return false;
    };
    let mut probe = io_uring::Probe::new();
    ring.submitter().register_probe(&mut probe).is_ok()
        && probe.is_supported(opcode::SendMsgZc::CODE)
}

/// An eventfd other shards write to wake this one.
#[derive(Debug)]
pub struct EventWaker(EventFd);

impl EventWaker {
    /// A new eventfd.
    pub fn new() -> io::Result<Self> {
        Ok(Self(EventFd::from_value_and_flags(
            0,
            EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
        )?))
    }
}

impl Wake for EventWaker {
    fn wake(&self) {
        let _ = self.0.write(1);
    }
}

/// What a shard on io_uring is made with.
#[allow(missing_debug_implementations)] // IoUring is not Debug
pub struct UringParts {
    /// The ring.
    pub ring: IoUring,
    /// Its wake-up eventfd (other shards hold it too).
    pub waker: Arc<EventWaker>,
    /// The ring is made disabled, single-issuer with deferred task work: the shard's thread
    /// enables it, and is then the only one to submit to it.
    deferred_task_work: bool,
}

impl UringParts {
    /// A ring with room for `entries` submissions.
    ///
    /// Its completions' task work is deferred (`DEFER_TASKRUN`, Linux 6.1) where the kernel
    /// has it: a datagram received or a send completed then waits for the shard's next wait
    /// instead of interrupting it, and a wait woken by one completion can gather more
    /// (`gather`). Without it every completion interrupts the shard: on an IPTV host that is
    /// tens of thousands of interruptions a second.
    pub fn new(entries: u32) -> io::Result<Self> {
        // The completion queue as large as the kernel allows (16 bytes an entry): every
        // connection may have a receive and a send completing in the same turn, and the
        // multishot operations post without being asked.
        let deferred = IoUring::builder()
            .setup_cqsize(CQ_ENTRIES)
            .setup_clamp()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_r_disabled()
            .build(entries);
        let (ring, deferred_task_work) = match deferred {
            Ok(ring) => (ring, true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::info!("this kernel's io_uring cannot defer task work (Linux 6.1): completions interrupt the shard");
                let ring = IoUring::builder()
                    .setup_cqsize(CQ_ENTRIES)
                    .setup_clamp()
                    .build(entries)?;
                (ring, false)
            }
            Err(e) => return Err(e),
        };
        Ok(Self {
            ring,
            waker: Arc::new(EventWaker::new()?),
            deferred_task_work,
        })
    }
}

/// `gather` in microseconds as the ring's minimum wait, or 0 when the kernel has no minimum
/// wait (before Linux 6.12): then every completion wakes the shard.
fn gather_us(ring: &IoUring, gather: Duration) -> u32 {
    if gather.is_zero() {
        return 0;
    }
    if !ring.params().is_feature_min_timeout() {
        tracing::info!("this kernel's io_uring has no minimum wait (Linux 6.12): gather is off");
        return 0;
    }
    u32::try_from(gather.as_micros()).unwrap_or(u32::MAX).max(1)
}

/// A `SEND`, `SENDMSG` or `SENDMSG_ZC` in flight: its header, its iovecs and the memory they point
/// into. Boxed so that the addresses the kernel reads stay put, and reused through
/// [`UringShard::spare_sends`] so that a send allocates nothing.
struct MessageSend {
    msg: libc::msghdr,
    /// Grown to the most buffers a send has had, then reused.
    iovecs: Vec<libc::iovec>,
    /// Keeps the memory the iovecs point into alive until the completion (for zero-copy,
    /// until the notification).
    hold: Vec<Bytes>,
}

impl MessageSend {
    fn new() -> Box<MessageSend> {
        Box::new(MessageSend {
            // SAFETY: msghdr is plain data; all-zero is a valid empty header.
            msg: unsafe { std::mem::zeroed() },
            iovecs: Vec::new(),
            hold: Vec::new(),
        })
    }

    /// Point the header and iovecs at `hold`; returns the bytes it holds. The header points
    /// into this box's iovecs, so it is valid for as long as the box lives and neither they
    /// nor `hold` change.
    fn aim(&mut self) -> usize {
        self.iovecs.clear();
        self.iovecs.extend(self.hold.iter().map(|b| libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        }));
        self.msg.msg_iov = self.iovecs.as_mut_ptr();
        self.msg.msg_iovlen = self.iovecs.len();
        self.hold.iter().map(Bytes::len).sum()
    }
}

/// Keep `send` for the next message send, its memory let go, unless enough are kept.
#[allow(clippy::vec_box)] // boxed: the kernel reads the header where it was aimed
fn recycle(spare: &mut Vec<Box<MessageSend>>, mut send: Box<MessageSend>) {
    if spare.len() < MAX_SPARE_SENDS {
        send.hold.clear();
        spare.push(send);
    }
}

/// Spare [`MessageSend`]s a shard keeps at most: enough for every viewer of a busy shard to
/// have a send in flight at once without allocating (about 100 bytes each for a send of one
/// buffer, up to 3 KiB for one of 64).
const MAX_SPARE_SENDS: usize = 16_384;

enum Sending {
    Message {
        send: Box<MessageSend>,
        zero_copy: bool,
    },
    /// A TLS connection's ciphertext: `SEND` from its link's output buffer, which the link
    /// keeps in place until the completion ([`ShardCore::tls_begin_send`]).
    Tls,
    /// Waiting for room in the socket to `sendfile` more.
    Poll,
}

struct Client {
    fd: OwnedFd,
    recv_in_flight: bool,
    send: Option<Sending>,
    /// Zero-copy sends whose notification has not come: (generation, memory).
    zc_pending: Vec<(u32, Box<MessageSend>)>,
    zc_generation: u32,
    /// The kernel reported copying this connection's zero-copy sends: copy instead.
    zc_copied: bool,
    closing: bool,
}

/// A shard running on io_uring.
#[allow(missing_debug_implementations)] // a ring and raw buffers; nothing useful to print
pub struct UringShard {
    core: ShardCore,
    ring: IoUring,
    waker: Arc<EventWaker>,
    wake_buf: Box<[u8; 8]>,
    listener: std::net::TcpListener,
    /// The TLS listener and what its connections are accepted with.
    tls: Option<(std::net::TcpListener, ShardTls)>,
    clients: Vec<Option<Client>>,
    /// The connections' receive buffers ([`RECV_BUFFERS`] of [`RECV_BUFFER`] bytes).
    recv_ring: ingest::BufRing,
    /// Connections whose receive found no buffer free: armed again next turn, once the
    /// buffers taken this turn are back.
    recv_starved: Vec<usize>,
    /// Ingest sockets, by the slot their receives and buffer group are numbered with (a slot
    /// is reused only once its socket's last completion has arrived).
    ingest: Vec<Option<ingest::RingIngest>>,
    /// Per ingest slot: datagrams and kernel drops since the last publish.
    ingest_batch: Vec<(u64, u64)>,
    /// The ingest tick, for sockets read on it.
    ticks: IngestTicks,
    max_connections: usize,
    send_buffer: usize,
    run: Arc<RunState>,
    accepting: bool,
    /// Message sends done with, for the next (at most [`MAX_SPARE_SENDS`]).
    #[allow(clippy::vec_box)] // boxed: the kernel reads the header where it was aimed
    spare_sends: Vec<Box<MessageSend>>,
    /// Operations submitted whose last completion has not been reaped.
    in_flight: usize,
    segment_send: SegmentSend,
    /// `gather` as the ring's minimum wait in microseconds (0: wake for each completion).
    gather_us: u32,
    /// Whether the fall-back from zero-copy has been logged.
    zc_fallback_logged: bool,
    /// Whether a multishot accept is armed (by listener: plain, TLS), and when to arm them
    /// again after accepts failed for want of descriptors or memory.
    accept_armed: [bool; 2],
    accept_again_at: Option<Instant>,
    accept_backoff: Backoff,
    /// Completions taken while submitting, handled first at the next turn.
    deferred: Vec<(u64, i32, u32)>,
    /// The kernel's count of dropped completions, as last seen.
    overflow_seen: u32,
    /// Submissions that failed in a row (the shard gives up after many, over seconds).
    submit_failures: u32,
}

impl UringShard {
    /// Pin, open the ingest sockets, arm accept, wake-up and ingest polls.
    pub fn new(setup: ShardSetup, parts: UringParts) -> io::Result<UringShard> {
        let p = prepare(setup);
        let core = p.core;
        if parts.deferred_task_work {
            // Single issuer: this thread, from here on.
            parts.ring.submitter().register_enable_rings()?;
        }
        let gather_us = gather_us(&parts.ring, p.gather);
        let recv_ring =
            ingest::BufRing::with_size(&parts.ring, RECV_GROUP, RECV_BUFFERS, RECV_BUFFER)?;
        let mut shard = UringShard {
            core,
            ring: parts.ring,
            waker: parts.waker,
            wake_buf: Box::new([0; 8]),
            listener: p.listener,
            tls: p.tls,
            clients: Vec::new(),
            recv_ring,
            recv_starved: Vec::new(),
            ingest_batch: Vec::new(),
            ingest: Vec::new(),
            ticks: IngestTicks::new(p.ingest_interval, Instant::now()),
            max_connections: p.max_connections,
            send_buffer: p.send_buffer,
            run: p.run,
            accepting: true,
            spare_sends: Vec::new(),
            in_flight: 0,
            segment_send: p.segment_send,
            gather_us,
            zc_fallback_logged: false,
            accept_armed: [false; 2],
            accept_again_at: None,
            accept_backoff: Backoff::default(),
            deferred: Vec::new(),
            overflow_seen: 0,
            submit_failures: 0,
        };
        shard.arm_accept(LISTEN_PLAIN)?;
        if shard.tls.is_some() {
            shard.arm_accept(LISTEN_TLS)?;
        }
        shard.arm_wake()?;
        shard.follow_catalog()?;
        Ok(shard)
    }

    /// Follow a change of the stream table: start and stop ingest receives, end the viewers
    /// of streams that went.
    fn follow_catalog(&mut self) -> io::Result<()> {
        let Some(changes) = self.core.follow_catalog() else {
            return Ok(());
        };
        for home in changes.stop_sources {
            let Some(i) = self
                .ingest
                .iter()
                .position(|g| g.as_ref().is_some_and(|g| g.home == Some(home)))
            else {
                continue;
            };
            let Some(g) = self.ingest[i].as_mut() else {
                continue;
            };
            g.home = None;
            if !g.armed {
                // Read on the tick: nothing of the kernel's refers to it.
                if let Some(mut gone) = self.ingest[i].take() {
                    gone.release(&self.ring);
                }
            } else if !g.cancelling {
                // Its receive ends with ECANCELED; the slot is freed then (on_ingest).
                g.cancelling = true;
                self.cancel_ingest(i)?;
            }
        }
        for (home, name, udp) in changes.start_sources {
            let Some(socket) = super::open_source(&self.core, &name, &udp) else {
                continue;
            };
            let i = match self.ingest.iter().position(Option::is_none) {
                Some(free) => free,
                None => {
                    self.ingest.push(None);
                    self.ingest_batch.push((0, 0));
                    self.ingest.len() - 1
                }
            };
            let Some(group) = u16::try_from(i).ok().filter(|&g| g != RECV_GROUP) else {
                tracing::error!(stream = %name, "too many ingest sockets on one shard: the stream stays offline");
                continue;
            };
            self.ingest[i] = Some(ingest::RingIngest::new(home, socket, group, Instant::now()));
            self.ingest_batch[i] = (0, 0);
            self.arm_ingest(i)?;
        }
        for key in changes.ended {
            self.send(key)?;
            self.close_if_finished(key);
        }
        Ok(())
    }

    fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        let mut busy = 0;
        loop {
            // SAFETY: every entry pushed here points only into memory owned by this shard that
            // stays where it is until the entry's completion is reaped: the boxed receive
            // buffer, message header and iovec array of a client (freed only when nothing is
            // in flight), the boxed wake-up buffer, the Bytes held by the in-flight send
            // (for zero-copy sends, until the notification), and a TLS connection's link
            // output buffer, which the link neither moves nor changes between
            // `tls_begin_send` and `tls_sent` (called only from the send's completion) and the
            // core frees only in `close(key)`, which this backend calls only once nothing of
            // the connection is in flight (or, at exit, leaks: see Drop).
            let pushed = unsafe { self.ring.submission().push(entry) };
            if pushed.is_ok() {
                self.in_flight += 1;
                return Ok(());
            }
            match self.ring.submit() {
                Ok(_) => {}
                // The completion queue must be reaped first (EBUSY), or the kernel is short
                // of memory for a moment: take the completions aside for the loop's next
                // turn and try again.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EBUSY | libc::EAGAIN | libc::EINTR)
                    ) && busy < 1000 =>
                {
                    busy += 1;
                    self.reap_aside();
                    if busy > 10 {
                        std::thread::sleep(Duration::from_micros(100));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Move the completions ready now to `deferred`, handled at the start of the next turn
    /// (so that the kernel can post more while this turn still submits).
    fn reap_aside(&mut self) {
        let ring = &mut self.ring;
        self.deferred.extend(
            ring.completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
    }

    /// Whether the kernel dropped completions (its overflow counter moved): the operations
    /// they ended are lost to the shard, so it says so and counts them.
    fn check_overflow(&mut self) {
        let dropped = self.ring.completion().overflow();
        if dropped > self.overflow_seen {
            let lost = u64::from(dropped - self.overflow_seen);
            self.overflow_seen = dropped;
            if let Some(stats) = self.run.shard_stats().get(self.core.index()) {
                stats
                    .completions_lost
                    .fetch_add(lost, std::sync::atomic::Ordering::Relaxed);
            }
            tracing::error!(
                shard = self.core.index(),
                lost,
                "the io_uring completion queue overflowed and the kernel dropped completions: their connections will time out"
            );
        }
    }

    /// Arm the multishot accept of listener `which` ([`LISTEN_PLAIN`] or [`LISTEN_TLS`]).
    fn arm_accept(&mut self, which: usize) -> io::Result<()> {
        let fd = match (which, &self.tls) {
            (LISTEN_PLAIN, _) => self.listener.as_raw_fd(),
            (_, Some((l, _))) => l.as_raw_fd(),
            (_, None) => return Ok(()),
        };
        // Non-blocking, so that a direct sendfile never blocks the shard; io_uring's own
        // socket operations still wait for readiness by themselves.
        let e = opcode::AcceptMulti::new(types::Fd(fd))
            .flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
            .build()
            .user_data(user_data(ACCEPT, which));
        self.accept_armed[which] = true;
        self.push(&e)
    }

    /// Arm again the accepts that ended, unless accepting stopped or waits.
    fn rearm_accepts(&mut self) -> io::Result<()> {
        if !self.accepting || self.accept_again_at.is_some() {
            return Ok(());
        }
        for which in [LISTEN_PLAIN, LISTEN_TLS] {
            if !self.accept_armed[which] && (which == LISTEN_PLAIN || self.tls.is_some()) {
                self.arm_accept(which)?;
            }
        }
        Ok(())
    }

    fn arm_wake(&mut self) -> io::Result<()> {
        let e = opcode::Read::new(
            types::Fd(self.waker.0.as_raw_fd()),
            self.wake_buf.as_mut_ptr(),
            8,
        )
        .build()
        .user_data(user_data(WAKE, 0));
        self.push(&e)
    }

    /// Arm ingest socket `i`'s multishot receive. Without the memory for its buffers, it is
    /// read on the tick instead (logged once).
    fn arm_ingest(&mut self, i: usize) -> io::Result<()> {
        let Some(Some(ingest)) = self.ingest.get_mut(i) else {
            return Ok(());
        };
        match ingest.receive(&self.ring, user_data(INGEST, i)) {
            Ok(entry) => {
                ingest.armed = true;
                self.push(&entry)
            }
            Err(e) => {
                if !std::mem::replace(&mut ingest.no_ring_logged, true) {
                    let home = ingest.home;
                    tracing::warn!(stream = %home.map_or("?", |h| self.core.home_name(h)), "cannot receive on io_uring ({e}): the socket is read every ingest interval");
                }
                Ok(())
            }
        }
    }

    fn cancel_ingest(&mut self, i: usize) -> io::Result<()> {
        let cancel = opcode::AsyncCancel::new(user_data(INGEST, i))
            .build()
            .user_data(user_data(CANCEL, 0));
        self.push(&cancel)
    }

    /// Read the sockets with no receive armed when the tick is due, and look at every
    /// socket's pace now and then: a socket read promptly has its multishot receive, one read
    /// on the tick has it cancelled (its datagrams then wake nobody).
    fn pace_ingest(&mut self, now: Instant) -> io::Result<()> {
        if self.ticks.tick(now) {
            for g in self.ingest.iter_mut().flatten() {
                let Some(home) = g.home.filter(|_| !g.armed) else {
                    continue;
                };
                let bytes = self.core.read_ingest(home, &mut g.socket);
                g.pace.received(bytes);
            }
        }
        if !self.ticks.review(now) {
            return Ok(());
        }
        let interval = self.ticks.interval();
        for i in 0..self.ingest.len() {
            let Some(g) = self.ingest[i].as_mut() else {
                continue;
            };
            let Some(home) = g.home else { continue };
            let awaited = self.core.awaited(home);
            if !g.pace.review(now, interval, awaited) {
                continue;
            }
            if g.pace.promptly() {
                // A cancellation on its way ends with the receive armed again (on_ingest).
                if !g.armed {
                    self.arm_ingest(i)?;
                }
            } else if g.armed && !g.cancelling {
                g.cancelling = true;
                self.cancel_ingest(i)?;
            }
        }
        let on_tick = || {
            self.ingest
                .iter()
                .flatten()
                .filter(|g| g.home.is_some() && !g.pace.promptly())
        };
        let ticked = on_tick().count();
        let shortest = on_tick()
            .filter_map(|g| g.pace.tolerance())
            .min()
            .unwrap_or(Duration::MAX);
        self.ticks.set_period(now, shortest);
        if let Some(stats) = self.run.shard_stats().get(self.core.index()) {
            stats
                .ingest_ticked
                .store(ticked as u64, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    fn arm_recv(&mut self, key: usize) -> io::Result<()> {
        let Some(Some(c)) = self.clients.get_mut(key) else {
            return Ok(());
        };
        if c.recv_in_flight || c.closing {
            return Ok(());
        }
        // Not while its responses are over the bounds or a request is held: what the peer
        // sends meanwhile waits in its socket.
        if !self.core.conn(key).is_some_and(|conn| conn.wants_read()) {
            return Ok(());
        }
        c.recv_in_flight = true;
        // A buffer from the shared ring, taken when bytes arrive.
        let e = opcode::Recv::new(types::Fd(c.fd.as_raw_fd()), std::ptr::null_mut(), 0)
            .buf_group(RECV_GROUP)
            .build()
            .flags(squeue::Flags::BUFFER_SELECT)
            .user_data(user_data(RECV, key));
        self.push(&e)
    }

    /// Start sending what connection `key` has queued, unless a send is already in flight:
    /// memfd ranges right away with `sendfile` (waiting for room with a poll), memory with
    /// `SENDMSG` or `SENDMSG_ZC`.
    fn send(&mut self, key: usize) -> io::Result<()> {
        if self.core.is_tls(key) {
            return self.send_tls(key);
        }
        loop {
            let Some(Some(c)) = self.clients.get_mut(key) else {
                return Ok(());
            };
            if c.send.is_some() || c.closing {
                return Ok(());
            }
            let Some(conn) = self.core.conn_mut(key) else {
                return Ok(());
            };
            if !conn.wants_write() {
                return Ok(());
            }
            if let Some((file, offset, len)) = conn.front_file() {
                match sys::send_file(c.fd.as_fd(), file, offset, len) {
                    Ok(n) if n > 0 => {
                        if self.core.wrote(key, n) {
                            self.close(key);
                            return Ok(());
                        }
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        c.send = Some(Sending::Poll);
                        let e =
                            opcode::PollAdd::new(types::Fd(c.fd.as_raw_fd()), libc::POLLOUT as u32)
                                .build()
                                .user_data(user_data(SEND, key));
                        return self.push(&e);
                    }
                    _ => {
                        self.close(key);
                        return Ok(());
                    }
                }
            }
            // A response's head before its body: sent here and now with MSG_MORE, so it
            // leaves in the body's first packet and the body's sendfile follows at once,
            // without waiting for a completion.
            let more = conn.file_follows();
            if more {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let n = conn.write_slices(&mut slices);
                match sys::send_more(c.fd.as_fd(), &slices[..n]) {
                    Ok(n) if n > 0 => {
                        if self.core.wrote(key, n) {
                            self.close(key);
                            return Ok(());
                        }
                        continue;
                    }
                    // No room: the ring sends it once there is.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    _ => {
                        self.close(key);
                        return Ok(());
                    }
                }
            }
            let mut send = self.spare_sends.pop().unwrap_or_else(MessageSend::new);
            conn.begin_write(MAX_IOVECS, &mut send.hold);
            let bytes = send.aim();
            let zero_copy =
                self.segment_send == SegmentSend::Zerocopy && !c.zc_copied && bytes >= ZC_MIN_BYTES;
            let fd = types::Fd(c.fd.as_raw_fd());
            let e = if zero_copy {
                c.zc_generation = c.zc_generation.wrapping_add(1) & 0xFF_FFFF;
                opcode::SendMsgZc::new(fd, &send.msg)
                    .ioprio(ZC_REPORT_USAGE)
                    .build()
                    .user_data(zc_user_data(key, c.zc_generation))
            } else if let [one] = &send.hold[..] {
                // One buffer (a progressive viewer's flush, most often): a plain `SEND`,
                // without a header and iovecs for the kernel to copy in.
                opcode::Send::new(
                    fd,
                    one.as_ptr(),
                    u32::try_from(one.len()).unwrap_or(u32::MAX),
                )
                .flags(if more { libc::MSG_MORE } else { 0 })
                .build()
                .user_data(user_data(SEND, key))
            } else {
                opcode::SendMsg::new(fd, &send.msg)
                    .flags(if more { libc::MSG_MORE as u32 } else { 0 })
                    .build()
                    .user_data(user_data(SEND, key))
            };
            c.send = Some(Sending::Message { send, zero_copy });
            return self.push(&e);
        }
    }

    /// Start sending a TLS connection's ciphertext (sealed from its queue first), unless a
    /// send is already in flight.
    fn send_tls(&mut self, key: usize) -> io::Result<()> {
        let Some(Some(c)) = self.clients.get_mut(key) else {
            return Ok(());
        };
        if c.send.is_some() || c.closing {
            return Ok(());
        }
        let out = self.core.tls_begin_send(key);
        if out.is_empty() {
            self.core.tls_sent(key, 0);
            return Ok(());
        }
        let e = opcode::Send::new(
            types::Fd(c.fd.as_raw_fd()),
            out.as_ptr(),
            out.len().min(u32::MAX as usize) as u32,
        )
        .build()
        .user_data(user_data(SEND, key));
        c.send = Some(Sending::Tls);
        self.push(&e)
    }

    /// Run until stopped.
    pub fn run(mut self) -> io::Result<()> {
        let mut housekeeping = Housekeeping::new(Instant::now());
        let mut completions: Vec<(u64, i32, u32)> = Vec::with_capacity(1024);
        let mut written = Vec::new();
        let run = self.run.clone();
        loop {
            let ticking = self
                .ingest
                .iter()
                .flatten()
                .any(|g| g.home.is_some() && !g.armed);
            let wait = self
                .core
                .next_timer()
                .min(Duration::from_millis(100))
                .min(self.ticks.wait(Instant::now(), ticking));
            let ts = types::Timespec::new()
                .sec(wait.as_secs())
                .nsec(wait.subsec_nanos());
            let mut args = types::SubmitArgs::new().timespec(&ts);
            let wait_for = if !self.deferred.is_empty() {
                0
            } else if self.gather_us > 0 {
                // Wait for the first completion, then up to `gather` for more (or this many):
                // a burst of datagrams on many channels is one wake-up.
                args = args.min_wait_usec(self.gather_us);
                GATHER_COMPLETIONS
            } else {
                1
            };
            match self.ring.submitter().submit_with_args(wait_for, &args) {
                Ok(_) => self.submit_failures = 0,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
                    ) =>
                {
                    self.submit_failures = 0
                }
                Err(e) => {
                    // Short of memory (EAGAIN, ENOMEM), completions dropped (EBADR), or
                    // worse: counted and logged, and the turn goes on; only a ring that keeps
                    // failing for seconds stops the shard.
                    self.submit_failures += 1;
                    if let Some(stats) = self.run.shard_stats().get(self.core.index()) {
                        stats
                            .submit_errors
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    if self.submit_failures == 1 || self.submit_failures % 1000 == 0 {
                        tracing::error!(
                            shard = self.core.index(),
                            failures = self.submit_failures,
                            "io_uring submission failed: {e}"
                        );
                    }
                    if self.submit_failures > 5000 {
                        return Err(e);
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            let clock = Clock::now();
            let now = clock.mono;
            self.core.begin_turn(clock);
            housekeeping.woke(now);
            completions.append(&mut self.deferred);
            completions.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            self.check_overflow();
            let received = clock.unix_ns;
            for (data, result, flags) in completions.drain(..) {
                if !cqueue::more(flags) {
                    self.in_flight = self.in_flight.saturating_sub(1);
                }
                let key = (data & 0xFFFF_FFFF) as usize;
                let generation = ((data >> 32) & 0xFF_FFFF) as u32;
                match data >> 56 {
                    ACCEPT => self.on_accept(key, result, flags)?,
                    WAKE => self.arm_wake()?,
                    INGEST => self.on_ingest(key, result, flags, received)?,
                    RECV => self.on_recv(key, result, flags)?,
                    SEND if cqueue::notif(flags) => {
                        self.on_zc_notification(key, generation, result)
                    }
                    SEND => self.on_send(key, generation, result, flags)?,
                    _ => {}
                }
            }
            // Every buffer taken this turn is back: receives that found none try again.
            for key in std::mem::take(&mut self.recv_starved) {
                self.arm_recv(key)?;
            }
            self.flush_ingest(received);
            self.pace_ingest(now)?;
            if self.accept_again_at.is_some_and(|at| now >= at) {
                self.accept_again_at = None;
                self.rearm_accepts()?;
            }
            if housekeeping.finish_turn(&mut self, &run, now, &mut written)? {
                return Ok(());
            }
        }
    }

    /// A completion of listener `which`'s multishot accept.
    fn on_accept(&mut self, which: usize, result: i32, flags: u32) -> io::Result<()> {
        let which = which.min(LISTEN_TLS);
        if !cqueue::more(flags) {
            self.accept_armed[which] = false;
        }
        if result < 0 {
            let errno = -result;
            if admission::exhausted(errno) {
                // Out of descriptors or memory: retrying at once would spin. Stop accepting
                // (the kernel keeps the backlog) and try again after a growing wait.
                self.core
                    .admission()
                    .accept_errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if self.accept_again_at.is_none() {
                    let wait = self.accept_backoff.failed();
                    tracing::warn!(
                        shard = self.core.index(),
                        failures = self.accept_backoff.failures,
                        "accept failed ({}): accepting again in {wait:?}",
                        io::Error::from_raw_os_error(errno)
                    );
                    self.accept_backoff.failures = 0;
                    self.accept_again_at = Some(Instant::now() + wait);
                    for listener in [LISTEN_PLAIN, LISTEN_TLS] {
                        if self.accept_armed[listener] {
                            let cancel = opcode::AsyncCancel::new(user_data(ACCEPT, listener))
                                .build()
                                .user_data(user_data(CANCEL, 0));
                            self.push(&cancel)?;
                        }
                    }
                } else {
                    self.accept_backoff.failures += 1;
                }
                return Ok(());
            }
            if result != -libc::ECANCELED {
                tracing::warn!(
                    shard = self.core.index(),
                    "accept failed: {}",
                    io::Error::from_raw_os_error(errno)
                );
            }
            return self.rearm_accepts();
        }
        self.rearm_accepts()?;
        self.accept_backoff.succeeded();
        // SAFETY: a non-negative accept result is a new file descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(result as RawFd) };
        // Accepted while the accept's cancellation was on its way (a stop, an upgrade): served
        // like any other, not closed under its client.
        let sock = socket2::SockRef::from(&fd);
        let _ = sock.set_nodelay(true);
        if self.send_buffer > 0 {
            let _ = sock.set_send_buffer_size(self.send_buffer);
        }
        let peer = sock
            .peer_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map(|a| a.ip());
        let key = match (&self.tls, which) {
            (Some((_, settings)), LISTEN_TLS) => {
                self.core.open_tls(self.max_connections, peer, settings)
            }
            _ => self.core.open(self.max_connections, peer),
        };
        let Some(key) = key else {
            return Ok(());
        };
        if self.clients.len() <= key {
            self.clients.resize_with(key + 1, || None);
        }
        self.clients[key] = Some(Client {
            fd,
            recv_in_flight: false,
            send: None,
            zc_pending: Vec::new(),
            zc_generation: 0,
            zc_copied: false,
            closing: false,
        });
        self.arm_recv(key)
    }

    fn on_ingest(&mut self, i: usize, result: i32, flags: u32, received: u64) -> io::Result<()> {
        let Some(Some(ingest)) = self.ingest.get_mut(i) else {
            return Ok(());
        };
        let home = ingest.home;
        if let Some(id) = cqueue::buffer_select(flags) {
            match (ingest.datagram(id), home) {
                (Ok((payload, drops)), Some(home)) => {
                    let len = payload.len();
                    self.core.ingest(home, payload, received);
                    ingest.pace.received(len);
                    self.ingest_batch[i].0 += 1;
                    self.ingest_batch[i].1 += drops;
                }
                // The stream has gone: the datagram is dropped with its socket.
                (Ok(_), None) => {}
                (Err(why), _) => {
                    tracing::warn!(stream = %home.map_or("?", |h| self.core.home_name(h)), "ingest datagram dropped: {why}")
                }
            }
            ingest.give_back(id);
        } else if result < 0 && result != -libc::ENOBUFS && result != -libc::ECANCELED {
            tracing::warn!(
                "ingest receive failed: {}",
                io::Error::from_raw_os_error(-result)
            );
        }
        if !cqueue::more(flags) {
            ingest.publish();
            ingest.armed = false;
            ingest.cancelling = false;
            if home.is_none() {
                // Its stream has gone and the kernel is done with its buffers.
                if let Some(mut gone) = self.ingest[i].take() {
                    gone.release(&self.ring);
                }
            } else if ingest.pace.promptly() {
                // Ended (buffers ran out, or an error), or cancelled and wanted again: start
                // again.
                self.arm_ingest(i)?;
            } else {
                // Cancelled for the tick, which reads it from now on: its buffers are not
                // needed until it is armed again.
                ingest.shed_buffers(&self.ring);
            }
        }
        Ok(())
    }

    /// Publish what ingest received in this batch of completions, and give the kernel its
    /// buffers back.
    fn flush_ingest(&mut self, received: u64) {
        for (i, ingest) in self.ingest.iter().enumerate() {
            let Some(ingest) = ingest else { continue };
            let (datagrams, drops) = std::mem::take(&mut self.ingest_batch[i]);
            if datagrams > 0 {
                ingest.publish();
                if let Some(home) = ingest.home {
                    self.core.ingest_done(home, datagrams, drops, received);
                }
            }
        }
    }

    fn on_recv(&mut self, key: usize, result: i32, flags: u32) -> io::Result<()> {
        let buffer = cqueue::buffer_select(flags);
        let Some(Some(c)) = self.clients.get_mut(key) else {
            self.give_back_recv(buffer);
            return Ok(());
        };
        c.recv_in_flight = false;
        if result == -libc::ENOBUFS && !c.closing {
            // Every buffer was taken when its bytes came: they wait in the socket.
            self.recv_starved.push(key);
            if let Some(stats) = self.run.shard_stats().get(self.core.index()) {
                stats
                    .receive_waits
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            return Ok(());
        }
        if c.closing || result <= 0 {
            let again =
                result < 0 && (result == -libc::EAGAIN || result == -libc::EINTR) && !c.closing;
            self.give_back_recv(buffer);
            if again {
                return self.arm_recv(key);
            }
            self.close(key);
            return Ok(());
        }
        let Some(id) = buffer else {
            // Bytes without a buffer cannot happen; end the connection rather than guess.
            self.close(key);
            return Ok(());
        };
        let n = (result as usize).min(RECV_BUFFER);
        self.core.on_read(key, &self.recv_ring.buffer(id)[..n]);
        self.give_back_recv(Some(id));
        self.send(key)?;
        self.close_if_finished(key);
        self.arm_recv(key)
    }

    /// Return a receive buffer to the shared ring.
    fn give_back_recv(&mut self, buffer: Option<u16>) {
        if let Some(id) = buffer {
            self.recv_ring.give_back(id);
            self.recv_ring.publish();
        }
    }

    fn on_send(&mut self, key: usize, generation: u32, result: i32, flags: u32) -> io::Result<()> {
        let Some(Some(c)) = self.clients.get_mut(key) else {
            return Ok(());
        };
        let sent = c.send.take();
        if matches!(sent, Some(Sending::Tls)) {
            return self.on_tls_sent(key, result);
        }
        let polled = match sent {
            Some(Sending::Poll) => true,
            Some(Sending::Message {
                send,
                zero_copy: true,
            }) if cqueue::more(flags) => {
                // The kernel still references the pages: keep them until the notification.
                c.zc_pending.push((generation, send));
                false
            }
            Some(Sending::Message { send, .. }) => {
                recycle(&mut self.spare_sends, send);
                false
            }
            _ => false,
        };
        if c.closing {
            self.close(key);
            return Ok(());
        }
        if polled {
            // Room to send (or an error, which the next sendfile reports); once it drains,
            // the requests it pipelined may be read again.
            self.send(key)?;
            return self.arm_recv(key);
        }
        if result < 0 {
            if result == -libc::EAGAIN || result == -libc::EINTR {
                if let Some(conn) = self.core.conn_mut(key) {
                    conn.wrote(0, 0);
                }
                return self.send(key);
            }
            self.close(key);
            return Ok(());
        }
        if self.core.wrote(key, result as usize) {
            self.close(key);
            return Ok(());
        }
        self.send(key)?;
        self.close_if_finished(key);
        // It may have drained enough to read requests again.
        self.arm_recv(key)
    }

    /// A TLS connection's `SEND` completed.
    fn on_tls_sent(&mut self, key: usize, result: i32) -> io::Result<()> {
        let closing = self
            .clients
            .get(key)
            .and_then(Option::as_ref)
            .is_some_and(|c| c.closing);
        // The link's bytes are the kernel's no more: reported before anything else touches it.
        self.core.tls_sent(key, result.max(0) as usize);
        if closing {
            self.close(key);
            return Ok(());
        }
        if result < 0 && result != -libc::EAGAIN && result != -libc::EINTR {
            self.close(key);
            return Ok(());
        }
        self.send(key)?;
        self.close_if_finished(key);
        self.arm_recv(key)
    }

    /// The kernel is done with the pages of zero-copy send `generation` of connection `key`.
    fn on_zc_notification(&mut self, key: usize, generation: u32, result: i32) {
        let Some(Some(c)) = self.clients.get_mut(key) else {
            return;
        };
        if let Some(i) = c.zc_pending.iter().position(|(g, _)| *g == generation) {
            let (_, send) = c.zc_pending.swap_remove(i);
            recycle(&mut self.spare_sends, send);
        }
        if result & ZC_COPIED != 0 && !c.zc_copied {
            c.zc_copied = true;
            if !self.zc_fallback_logged {
                self.zc_fallback_logged = true;
                tracing::info!(
                    shard = self.core.index(),
                    "the kernel copied zero-copy sends (loopback, or a NIC without scatter-gather): such connections are sent by copy"
                );
            }
        }
        if c.closing {
            self.close(key);
        } else {
            self.close_if_finished(key);
        }
    }

    /// Close connection `key` when it is done, or hand it over when it is a push whose
    /// responses are sent and nothing of it is in flight.
    fn close_if_finished(&mut self, key: usize) {
        let Some(Some(c)) = self.clients.get(key) else {
            return;
        };
        if c.send.is_some() {
            return;
        }
        let quiet = !c.recv_in_flight && c.zc_pending.is_empty() && !c.closing;
        if quiet && self.core.hands_over(key) {
            if let Some(c) = self.clients.get_mut(key).and_then(Option::take) {
                if self
                    .core
                    .hand_over(key, std::net::TcpStream::from(c.fd))
                    .is_err()
                {
                    self.core.close(key);
                }
            }
            return;
        }
        if self.core.conn(key).is_some() && self.core.finished(key) {
            self.close(key);
        }
    }

    /// Close connection `key`: forget it in the core, shut the socket down so whatever is in
    /// flight completes, and free it once nothing is.
    ///
    /// The core keeps the connection (and its key) until then, so the key cannot be given to a
    /// new connection while the kernel still holds this one's buffers.
    fn close(&mut self, key: usize) {
        let Some(slot) = self.clients.get_mut(key) else {
            return;
        };
        let Some(c) = slot.as_mut() else { return };
        if !c.closing {
            c.closing = true;
            let _ = socket2::SockRef::from(&c.fd).shutdown(std::net::Shutdown::Both);
        }
        if !c.recv_in_flight && c.send.is_none() && c.zc_pending.is_empty() {
            *slot = None;
            self.core.close(key);
        }
    }
}

impl Backend for UringShard {
    fn core(&mut self) -> &mut ShardCore {
        &mut self.core
    }

    fn follow_catalog(&mut self) -> io::Result<()> {
        UringShard::follow_catalog(self)
    }

    fn write(&mut self, key: usize) -> io::Result<()> {
        self.send(key)?;
        self.close_if_finished(key);
        Ok(())
    }

    fn close(&mut self, key: usize) {
        UringShard::close(self, key);
    }

    fn resume_reading(&mut self, key: usize) -> io::Result<()> {
        self.arm_recv(key)
    }

    fn linger(&mut self) {
        let keys: Vec<usize> = self
            .clients
            .iter()
            .enumerate()
            .filter(|(_, c)| c.as_ref().is_some_and(|c| !c.closing))
            .map(|(k, _)| k)
            .collect();
        for key in keys {
            if self.core.is_tls(key) {
                // close_notify, then the connection closes once it is sent.
                if let Some(conn) = self.core.conn_mut(key) {
                    conn.abort();
                }
                if self.send(key).is_err() {
                    self.close(key);
                }
                self.close_if_finished(key);
            } else if let Some(Some(c)) = self.clients.get(key) {
                let _ = socket2::SockRef::from(&c.fd).shutdown(std::net::Shutdown::Write);
                if self.arm_recv(key).is_err() {
                    self.close(key);
                }
            }
        }
    }

    /// No more accepts: the multishot accepts are cancelled, so what waits in the listeners'
    /// queues stays there (for the process an upgrade handed them to).
    fn stop_accepting(&mut self) {
        self.accepting = false;
        for which in [LISTEN_PLAIN, LISTEN_TLS] {
            if self.accept_armed[which] {
                let cancel = opcode::AsyncCancel::new(user_data(ACCEPT, which))
                    .build()
                    .user_data(user_data(CANCEL, 0));
                if let Err(e) = self.push(&cancel) {
                    tracing::warn!(shard = self.core.index(), "cannot cancel an accept: {e}");
                }
            }
        }
    }
}

impl Drop for UringShard {
    /// Before the buffers go, the kernel must be done with them: shut every connection down,
    /// cancel everything in flight and reap the completions. Whatever is still in flight
    /// after two seconds keeps its memory (leaked, never freed under the kernel).
    fn drop(&mut self) {
        for c in self.clients.iter().flatten() {
            let _ = socket2::SockRef::from(&c.fd).shutdown(std::net::Shutdown::Both);
        }
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(user_data(CANCEL, 0));
        let _ = self.push(&cancel);
        let ended = self
            .deferred
            .drain(..)
            .filter(|(_, _, flags)| !cqueue::more(*flags))
            .count();
        self.in_flight = self.in_flight.saturating_sub(ended);
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.in_flight > 0 && Instant::now() < deadline {
            let ts = types::Timespec::new().nsec(50_000_000);
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            let ended = self
                .ring
                .completion()
                .filter(|c| !cqueue::more(c.flags()))
                .count();
            self.in_flight = self.in_flight.saturating_sub(ended);
        }
        if self.in_flight == 0 {
            for ingest in self.ingest.iter_mut().flatten() {
                ingest.release(&self.ring);
            }
            self.recv_ring.release(&self.ring);
        } else {
            tracing::warn!(
                shard = self.core.index(),
                operations = self.in_flight,
                "io_uring operations still in flight at exit: their buffers are left allocated"
            );
            // Everything the kernel may still write into: connections' message headers, the
            // wake-up buffer, and the ingest sockets' buffer rings, datagram buffers and
            // message headers. (The connections' receive ring stays registered, and a
            // registered ring is never freed: see `BufRing`'s Drop.)
            std::mem::forget(std::mem::take(&mut self.clients));
            std::mem::forget(std::mem::replace(&mut self.wake_buf, Box::new([0; 8])));
            std::mem::forget(std::mem::take(&mut self.ingest));
            self.core.leak_tls_buffers();
        }
    }
}
