//! Pushes over a connection: `tcp://HOST:PORT` (raw TS, as an encoder sends to a TCP
//! listener) and `http://HOST:PORT/PATH` (a `PUT` whose chunked body does not end, as
//! `ffmpeg -method PUT` pushes; shardcast's own `push://` streams take it).
//!
//! A task per push, on the sources' runtime. Each connection starts at an access point; what
//! the tap held from before is left out. The connection ends, and is made again with the
//! sources' backoff, when the far end closes it, answers an HTTP error, or takes nothing for
//! [`STALL`]. While there is no connection the tap is emptied: a far end that is down costs
//! nothing but the attempts.

use super::{PushOut, PushTarget};
use crate::source::retry::Retry;
use crate::stream::tap::{Accept, Follow};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// How long a connection may take to be made.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the far end may take nothing before the connection is given up.
pub(super) const STALL: Duration = Duration::from_secs(10);
/// The send buffer of a push's connection.
const SEND_BUFFER: u32 = 256 * 1024;
/// How often a push with nothing to send looks whether it was stopped.
pub(super) const LOOK: Duration = Duration::from_secs(1);

/// Run `push` to `target` until it is stopped.
pub(super) async fn run(push: Arc<PushOut>, target: PushTarget, notify: Arc<Notify>) {
    let (host, port) = match &target {
        PushTarget::Tcp { host, port } | PushTarget::Http { host, port, .. } => {
            (host.clone(), *port)
        }
        PushTarget::Udp(_) | PushTarget::Record(_) | PushTarget::Srt(_) | PushTarget::Rtmp(_) => {
            return
        }
    };
    let counters = &push.counters;
    let mut retry = Retry::new();
    let mut connections = 0u64;
    while !push.stopped() {
        let why = match tokio::time::timeout(CONNECT_TIMEOUT, connect_to(&host, port)).await {
            Ok(Ok(stream)) => {
                connections += 1;
                if connections > 1 {
                    counters.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                retry.up(Instant::now());
                let _ = stream.set_nodelay(true);
                counters.connected.store(true, Ordering::Relaxed);
                push.note(format!("connected to {host}:{port}"));
                tracing::info!(stream = %push.stream, id = push.id, "push connected to {host}:{port}");
                let why = send(&push, &target, &host, stream, &notify).await;
                counters.connected.store(false, Ordering::Relaxed);
                if push.stopped() {
                    break;
                }
                why
            }
            Ok(Err(e)) => not_connected(&push, &host, port, Some(e)),
            Err(_) => not_connected(&push, &host, port, None),
        };
        back_off(&push, &mut retry, why, &notify).await;
    }
    counters.connected.store(false, Ordering::Relaxed);
}

/// Why a connection to `host:port` was not made (`None`: not within [`CONNECT_TIMEOUT`]),
/// counted as a failure.
pub(super) fn not_connected(
    push: &PushOut,
    host: &str,
    port: u16,
    error: Option<std::io::Error>,
) -> String {
    push.counters.failures.fetch_add(1, Ordering::Relaxed);
    match error {
        Some(e) => format!("cannot connect to {host}:{port}: {e}"),
        None => format!(
            "no connection to {host}:{port} within {} s",
            CONNECT_TIMEOUT.as_secs()
        ),
    }
}

/// A connection ended or was not made (`why`): logged, noted, and waited out with the
/// sources' backoff, emptying the tap meanwhile (nothing is sent while there is no
/// connection); returns early when the push stops.
pub(super) async fn back_off(push: &PushOut, retry: &mut Retry, why: String, notify: &Notify) {
    let wait = retry.down(Instant::now());
    tracing::warn!(stream = %push.stream, id = push.id, "push: {why}; trying again in {:.2} s", wait.as_secs_f64());
    push.note(why);
    let until = tokio::time::Instant::now() + wait;
    while !push.stopped() && tokio::time::Instant::now() < until {
        while push.tap.take().is_some() {}
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            _ = notify.notified() => {}
        }
    }
}

/// A connection to `host:port` (each of its addresses in turn) whose send buffer is
/// [`SEND_BUFFER`]: a far end that reads nothing holds that much of the kernel's memory, not
/// what autotuning would give it.
pub(super) async fn connect_to(host: &str, port: u16) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::other(format!("{host} has no address"));
    for addr in tokio::net::lookup_host((host, port)).await? {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_send_buffer_size(SEND_BUFFER)?;
        match socket.connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Send the stream over one connection until it fails or the push stops: why it ended.
async fn send(
    push: &PushOut,
    target: &PushTarget,
    host: &str,
    stream: TcpStream,
    notify: &Notify,
) -> String {
    let (mut reader, mut writer) = stream.into_split();
    let http = match target {
        PushTarget::Http { path, port, .. } => {
            let host = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            let head = format!(
                "PUT {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: shardcast/{}\r\n\
                 Content-Type: video/mp2t\r\nTransfer-Encoding: chunked\r\n\r\n",
                env!("CARGO_PKG_VERSION")
            );
            if let Err(e) = write(&mut writer, head.as_bytes()).await {
                return e;
            }
            true
        }
        _ => false,
    };
    // What was queued before this connection is old: start at the next access point.
    while push.tap.take().is_some() {}
    let mut follow = Follow::default();
    let mut out = Vec::new();
    let mut answer = Vec::new();
    loop {
        out.clear();
        let mut payload = 0;
        while let Some(chunk) = push.tap.take() {
            if follow.accept(&chunk) == Accept::Skip {
                continue;
            }
            if http && payload == 0 {
                // Room for the chunk-size line, written once the size is known.
                out.extend_from_slice(&[0; 18]);
            }
            payload += chunk.data.len();
            out.extend_from_slice(&chunk.data);
        }
        if push.stopped() {
            if http {
                let _ = write(&mut writer, b"0\r\n\r\n").await;
            }
            let _ = writer.shutdown().await;
            return "stopped".into();
        }
        if payload > 0 {
            let start = if http {
                let line = format!("{payload:x}\r\n");
                let start = 18 - line.len();
                out[start..18].copy_from_slice(line.as_bytes());
                out.extend_from_slice(b"\r\n");
                start
            } else {
                0
            };
            if let Err(e) = write(&mut writer, &out[start..]).await {
                return e;
            }
            push.counters
                .bytes
                .fetch_add(payload as u64, Ordering::Relaxed);
            continue;
        }
        let mut buf = [0u8; 512];
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(LOOK) => {}
            read = reader.read(&mut buf) => match read {
                Ok(0) => return "closed by the far end".into(),
                Ok(n) if http => {
                    answer.extend_from_slice(&buf[..n]);
                    if let Some(why) = refusal(&answer) {
                        return why;
                    }
                    answer.truncate(4096);
                }
                Ok(_) => {}
                Err(e) => return format!("connection failed: {e}"),
            },
        }
    }
}

async fn write(writer: &mut tokio::net::tcp::OwnedWriteHalf, bytes: &[u8]) -> Result<(), String> {
    match tokio::time::timeout(STALL, writer.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("connection failed: {e}")),
        Err(_) => Err(format!(
            "the far end took nothing for {} s",
            STALL.as_secs()
        )),
    }
}

/// What an HTTP server answered before the body ended, when it refuses the push: a status
/// other than 100 or 2xx (a server answers a push it takes only when the body ends).
fn refusal(answer: &[u8]) -> Option<String> {
    let line_end = answer.windows(2).position(|w| w == b"\r\n")?;
    let line = String::from_utf8_lossy(&answer[..line_end]);
    let status: u16 = line.split(' ').nth(1)?.parse().ok()?;
    if status == 100 || (200..300).contains(&status) {
        return None;
    }
    Some(format!("the far end answered {}", line.trim()))
}

#[cfg(test)]
mod tests {
    use super::refusal;

    #[test]
    fn an_error_status_ends_the_push() {
        assert_eq!(refusal(b"HTTP/1.1 403 Forbi"), None);
        assert_eq!(
            refusal(b"HTTP/1.1 403 Forbidden\r\n"),
            Some("the far end answered HTTP/1.1 403 Forbidden".into())
        );
        assert_eq!(refusal(b"HTTP/1.1 100 Continue\r\n"), None);
        assert_eq!(refusal(b"HTTP/1.1 200 OK\r\n"), None);
    }
}
