//! Pushes over SRT: `srt://HOST:PORT?streamid=&passphrase=&pbkeylen=&latency=&delay=`, a
//! caller in live mode (libsrt, [`crate::sys::srt`]), as an encoder sends to a contribution
//! server (shardcast's own SRT listener, srt-live-transmit, MediaMTX).
//!
//! A thread per push: it calls (each of the host's addresses in turn, up to 3 s each), and once
//! connected sends the stream through a [`Pacer`] as a UDP push does, 7 packets per message,
//! so the far end's timing is the stream's own. A call refused or a connection lost (libsrt
//! hears nothing for 5 s, or a send fails) is made again with the sources' backoff; nothing
//! is queued meanwhile. A full send buffer drops the message (counted as a send error).

use super::{PushOut, SrtTarget};
use crate::source::retry::Retry;
use crate::stream::tap::{Accept, Follow};
use crate::sys::srt::{self, Options, SocketState};
use shardcast_protocols::ts::pacer::{Pacer, PacerConfig};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the thread sleeps with nothing due (it looks at the connection then).
const IDLE: Duration = Duration::from_millis(100);

/// Run `push` to `target` until it is stopped (on its own thread).
pub(super) fn run(push: Arc<PushOut>, target: SrtTarget) {
    let counters = &push.counters;
    let mut retry = Retry::new();
    let mut connections = 0u64;
    let options = Options {
        latency_ms: target.latency_ms,
        passphrase: target.passphrase.clone(),
        key_length: target.key_length,
        stream_id: target.stream_id.clone(),
        ..Options::default()
    };
    let name = format!("{}:{}", target.host, target.port);
    while !push.stopped() {
        let why = match call(&name, &options, &push) {
            Ok(socket) => {
                connections += 1;
                if connections > 1 {
                    counters.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                retry.up(Instant::now());
                counters.connected.store(true, Ordering::Relaxed);
                push.note(format!("connected to srt://{name}"));
                tracing::info!(stream = %push.stream, id = push.id, "push connected to srt://{name}");
                let why = send(&push, &target, &socket);
                counters.connected.store(false, Ordering::Relaxed);
                if push.stopped() {
                    break;
                }
                why
            }
            Err(why) => {
                counters.failures.fetch_add(1, Ordering::Relaxed);
                why
            }
        };
        let wait = retry.down(Instant::now());
        tracing::warn!(stream = %push.stream, id = push.id, "push: {why}; trying again in {:.2} s", wait.as_secs_f64());
        push.note(why);
        let until = Instant::now() + wait;
        while !push.stopped() && Instant::now() < until {
            while push.tap.take().is_some() {}
            std::thread::park_timeout(until.saturating_duration_since(Instant::now()));
        }
    }
    counters.connected.store(false, Ordering::Relaxed);
}

/// Call each address of `name` in turn.
fn call(name: &str, options: &Options, push: &PushOut) -> Result<srt::Socket, String> {
    let srt = srt::srt().map_err(|e| e.to_string())?;
    let addrs = std::net::ToSocketAddrs::to_socket_addrs(name)
        .map_err(|e| format!("cannot resolve {name}: {e}"))?;
    let mut why = format!("{name} has no address");
    for addr in addrs {
        if push.stopped() {
            break;
        }
        match srt.call(addr, options) {
            Ok(socket) => return Ok(socket),
            Err(e) => why = format!("cannot call srt://{addr}: {e}"),
        }
    }
    Err(why)
}

/// Send the stream over one connection until it fails or the push stops: why it ended.
fn send(push: &PushOut, target: &SrtTarget, socket: &srt::Socket) -> String {
    let Ok(srt) = srt::srt() else {
        return "libsrt is gone".into();
    };
    // What was queued before this connection is old: start at the next access point.
    while push.tap.take().is_some() {}
    let mut follow = Follow::default();
    let mut pacer = Pacer::new(PacerConfig {
        delay_ns: target.delay.as_nanos() as u64,
        ..PacerConfig::default()
    });
    let counters = &push.counters;
    let mut looked = Instant::now();
    loop {
        if push.stopped() {
            return "stopped".into();
        }
        let now = crate::sys::unix_ns();
        while let Some(chunk) = push.tap.take() {
            match follow.accept(&chunk) {
                Accept::Skip => continue,
                Accept::Restart => pacer.restart(now),
                Accept::Next => {}
            }
            pacer.push(&chunk.data, chunk.received_ns);
        }
        while let Some(due) = pacer.poll(now) {
            let message = pacer.datagram();
            match socket.send(message) {
                Ok(true) => {
                    counters.datagrams.fetch_add(1, Ordering::Relaxed);
                    counters
                        .bytes
                        .fetch_add(message.len() as u64, Ordering::Relaxed);
                    if now > due.due_ns + super::LATE_NS {
                        counters.late_datagrams.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(false) => {
                    counters.send_errors.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => return format!("the connection failed: {e}"),
            }
        }
        if looked.elapsed() >= Duration::from_secs(1) {
            looked = Instant::now();
            let (state, _) = srt.state_of(socket.id());
            if state == SocketState::Gone {
                return "the connection ended".into();
            }
        }
        let next = pacer
            .next_due()
            .map_or(IDLE, |due| Duration::from_nanos(due.saturating_sub(now)))
            .min(IDLE);
        std::thread::park_timeout(next);
    }
}
