//! The io_uring floor: at each flush, one `SEND` entry per viewer, all pointing at the same
//! buffer and all submitted by one `io_uring_enter`, which also waits for what comes next
//! (the listener's and the stream socket's readiness are multishot `POLL_ADD`s; accepting and
//! reading datagrams are plain calls). A viewer whose send is still in flight at the next
//! flush keeps the new bytes as a backlog, sent when the send completes.
//!
//! Memory handed to the kernel stays put until its completion is processed: a send's buffer is
//! an `Rc` the viewer holds until then, and a viewer is freed only with no send in flight.
#![allow(unsafe_code)]

use super::{drain, Counts, Pending, Settings, Stats, HEAD};
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use slab::Slab;
use std::io::{self, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

const LISTENER: u64 = u64::MAX;
const UDP: u64 = u64::MAX - 1;
const ENTRIES: u32 = 4096;

#[derive(Debug)]
struct Viewer {
    socket: TcpStream,
    /// The buffer of the send in flight and where in it the send starts.
    in_flight: Option<(Rc<Vec<u8>>, usize)>,
    backlog: Vec<u8>,
    /// Close once the send in flight completes.
    closing: bool,
}

/// Push `entry`, submitting what is queued first if the submission queue is full.
///
/// # Safety
/// Whatever `entry` points to must stay valid until its completion is processed.
unsafe fn push(ring: &mut IoUring, entry: &squeue::Entry) -> io::Result<()> {
    loop {
        // SAFETY: the caller keeps what the entry points to valid until its completion.
        if unsafe { ring.submission().push(entry) }.is_ok() {
            return Ok(());
        }
        ring.submit()?;
    }
}

/// Send `buffer[from..]` to viewer `key`, keeping the buffer in the viewer until completion.
fn send(
    ring: &mut IoUring,
    key: usize,
    v: &mut Viewer,
    buffer: Rc<Vec<u8>>,
    from: usize,
) -> io::Result<()> {
    let rest = &buffer[from..];
    let entry = opcode::Send::new(
        types::Fd(v.socket.as_raw_fd()),
        rest.as_ptr(),
        rest.len() as u32,
    )
    .flags(libc::MSG_NOSIGNAL)
    .build()
    .user_data(key as u64);
    // SAFETY: `rest` points into `buffer`'s heap allocation, which `v.in_flight` keeps alive
    // (an `Rc` is never mutated through) until this send's completion is processed in `run`,
    // and `run` frees no viewer with a send in flight; the socket stays open as long.
    unsafe { push(ring, &entry)? };
    v.in_flight = Some((buffer, from));
    Ok(())
}

fn poll_in(fd: i32, user_data: u64) -> squeue::Entry {
    opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
        .multi(true)
        .build()
        .user_data(user_data)
}

pub(super) fn run(settings: &Settings) -> io::Result<()> {
    // The stream's socket first: once viewers can connect, it is there.
    let udp = UdpSocket::bind(settings.udp)?;
    udp.set_nonblocking(true)?;
    let listener = TcpListener::bind(settings.listen)?;
    listener.set_nonblocking(true)?;
    // Declared before the ring, so dropped after it: no buffer goes while the ring is open.
    let mut viewers: Slab<Viewer> = Slab::new();
    let mut ring: IoUring = IoUring::builder().setup_cqsize(65_536).build(ENTRIES)?;
    // SAFETY: a poll entry points to no memory; the descriptors outlive the ring.
    unsafe {
        push(&mut ring, &poll_in(listener.as_raw_fd(), LISTENER))?;
        push(&mut ring, &poll_in(udp.as_raw_fd(), UDP))?;
    }
    let mut pending = Pending::default();
    let mut datagram = vec![0u8; 65_536];
    let mut counts = Counts::default();
    let mut stats = Stats::new(settings.stats_every, Instant::now());
    let mut done: Vec<(u64, i32, u32)> = Vec::with_capacity(4096);
    loop {
        let wait = pending
            .due_in(Instant::now(), settings.flush)
            .unwrap_or(Duration::from_millis(100));
        if wait.is_zero() {
            ring.submit()?;
        } else {
            let timespec = types::Timespec::from(wait);
            let args = types::SubmitArgs::new().timespec(&timespec);
            match ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ETIME) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        done.clear();
        done.extend(
            ring.completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        let now = Instant::now();
        for &(user_data, result, flags) in &done {
            match user_data {
                LISTENER | UDP => {
                    if !cqueue::more(flags) {
                        let fd = if user_data == LISTENER {
                            listener.as_raw_fd()
                        } else {
                            udp.as_raw_fd()
                        };
                        // SAFETY: as above.
                        unsafe { push(&mut ring, &poll_in(fd, user_data))? };
                    }
                    if user_data == LISTENER {
                        accept_all(&listener, &mut viewers, &mut counts);
                    } else {
                        drain(
                            |b| udp.recv(b),
                            &mut datagram,
                            &mut pending,
                            &mut counts,
                            now,
                        )?;
                    }
                }
                key => {
                    let key = key as usize;
                    let Some(v) = viewers.get_mut(key) else {
                        continue;
                    };
                    let Some((buffer, from)) = v.in_flight.take() else {
                        continue;
                    };
                    if result < 0 || v.closing {
                        viewers.remove(key);
                        counts.closed += 1;
                        continue;
                    }
                    counts.bytes += result as u64;
                    let sent = from + result as usize;
                    if sent < buffer.len() {
                        counts.partial += 1;
                        counts.writes += 1;
                        send(&mut ring, key, v, buffer, sent)?;
                    } else if !v.backlog.is_empty() {
                        counts.writes += 1;
                        let backlog = Rc::new(std::mem::take(&mut v.backlog));
                        send(&mut ring, key, v, backlog, 0)?;
                    }
                }
            }
        }
        if let Some(data) = pending.take_due(Instant::now(), settings.flush) {
            counts.flushes += 1;
            let data = Rc::new(data);
            for (key, v) in viewers.iter_mut() {
                if v.in_flight.is_some() {
                    if !v.closing {
                        v.backlog.extend_from_slice(&data);
                        if v.backlog.len() > settings.max_backlog {
                            // The shutdown completes the send in flight; its completion frees it.
                            v.closing = true;
                            let _ = v.socket.shutdown(std::net::Shutdown::Both);
                        }
                    }
                    continue;
                }
                counts.writes += 1;
                send(&mut ring, key, v, data.clone(), 0)?;
            }
        }
        counts.viewers = viewers.len();
        stats.tick(&counts, now);
    }
}

fn accept_all(listener: &TcpListener, viewers: &mut Slab<Viewer>, counts: &mut Counts) {
    loop {
        match listener.accept() {
            Ok((mut socket, _)) => {
                // Blocking (accept does not pass the listener's flag on): the ring waits for
                // room itself. A new socket has room for the head.
                let _ = socket.set_nodelay(true);
                if socket.write_all(HEAD).is_err() {
                    continue;
                }
                viewers.insert(Viewer {
                    socket,
                    in_flight: None,
                    backlog: Vec::new(),
                    closing: false,
                });
                counts.accepted += 1;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => {
                eprintln!("write-floor: accept: {e}");
                return;
            }
        }
    }
}
