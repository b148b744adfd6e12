//! HTTP push: `push://[?key=SECRET&allow=CIDR,…&program=N]`. An encoder sends the stream as
//! the body of a `PUT` or `POST` to `/push/{stream}` on the viewers' port, with a length or
//! chunked (`ffmpeg … -f mpegts -method PUT http://host:8080/push/cam1?key=SECRET`).
//!
//! The shard that accepted the connection parses the head and hands the socket over
//! ([`crate::http::Conn::take_push`]); from there the push is a task on the sources' runtime,
//! which decides and reads:
//!
//! 1. the stream must take pushes (its source is `push://`): else 404;
//! 2. the pusher's address must be in `allow=` when it is set, and the request must carry
//!    `key=` equal to the stream's key when one is set (compared in constant time): else 403;
//! 3. MistServer's `PUSH_REWRITE` trigger, when configured, is asked with the push URL, the
//!    pusher's address and the stream name; it answers the stream name to use (the same, or
//!    another stream that takes pushes) or refuses (empty, `0`, `false`, `no`): 403.
//!
//! Refused pushes ingest nothing and are counted (`source_refused`); the answer is sent and
//! what the encoder already sent is read and dropped for a moment (as nginx's lingering
//! close does) so that it sees the answer rather than a reset. A taken push replaces the one
//! before it (an encoder that reconnects is not locked out by its own half-dead connection),
//! is read until its body ends (answered 200) or it sends nothing for the stream's
//! `source_timeout`. At most `max_pushes` push connections are open at once (503 past it).

use super::inlet::{Delivery, Inlet};
use super::tcp::Connection;
use super::{SourceContext, SourceDriver, SourceError, SourceSpec};
use crate::control::triggers::{push_rewrite, TriggerSet};
use crate::http::{query_param, response_head, BodyReader, PushRequest};
use crate::stream::StreamCounters;
use bytes::BytesMut;
use ipnet::IpNet;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// How long a refused pusher's further bytes are read and dropped before the socket closes,
/// and how many at most.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1 << 20;

/// How long the answer to a push may take to write.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// A stream fed by HTTP push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushSpec {
    /// The key a push must carry (`?key=`), when set.
    pub key: Option<String>,
    /// Who may push; empty: anyone (with the key).
    pub allow: Vec<IpNet>,
    /// The program to take from an MPTS.
    pub program: Option<u16>,
}

/// `push://` then the rest of the URL.
pub(super) fn parse(rest: &str) -> Result<SourceSpec, SourceError> {
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    if !authority.trim_end_matches('/').is_empty() {
        return Err(SourceError::Parameter(format!(
            "{authority} (push:// takes no address: encoders push to /push/{{stream}} on the viewers' port)"
        )));
    }
    let mut spec = PushSpec {
        key: None,
        allow: Vec::new(),
        program: None,
    };
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let bad = || SourceError::Parameter(format!("{key}={value}"));
        match &*key {
            "key" if !value.is_empty() && value.len() <= 256 => spec.key = Some(value.into_owned()),
            "program" => spec.program = Some(value.parse().map_err(|_| bad())?),
            "allow" => spec
                .allow
                .extend(super::parse_allow(&value).ok_or_else(bad)?),
            _ => return Err(bad()),
        }
    }
    Ok(SourceSpec::Push(spec))
}

/// Server-wide counts of pushes refused before any stream was found, and those open.
#[derive(Debug, Default)]
pub struct PushCounts {
    /// Push connections open now (being decided or pushing).
    pub open: AtomicU64,
    /// Refused: no stream takes pushes under the name asked (404).
    pub refused_unknown: AtomicU64,
    /// Refused: `max_pushes` were open (503).
    pub refused_busy: AtomicU64,
}

/// The streams that take pushes now: every shard hands its push connections here.
#[derive(Debug)]
pub struct Pushes {
    doors: Mutex<HashMap<String, Arc<Door>>>,
    tasks: tokio::runtime::Handle,
    triggers: Option<Arc<TriggerSet>>,
    slots: Arc<tokio::sync::Semaphore>,
    /// The counts, for metrics.
    pub counts: PushCounts,
    rtmp: Arc<super::rtmp::Listeners>,
    srt: Arc<super::srt::Listeners>,
}

/// A stream that takes pushes: where its bytes go, and which pusher feeds it.
#[derive(Debug)]
struct Door {
    stream: String,
    spec: PushSpec,
    inlet: Arc<Inlet>,
    counters: Arc<StreamCounters>,
    idle: Duration,
    /// The number of the pusher that feeds the stream now; older ones stop. [`ENDED`]: the
    /// stream is gone.
    pusher: watch::Sender<u64>,
}

const ENDED: u64 = u64::MAX;

impl Pushes {
    /// Pushes run as tasks on `tasks`, asking `triggers` (`PUSH_REWRITE`); at most `max`
    /// connections at once, and as many RTMP and as many SRT connections.
    pub fn new(
        tasks: tokio::runtime::Handle,
        triggers: Option<Arc<TriggerSet>>,
        max: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            doors: Mutex::new(HashMap::new()),
            rtmp: super::rtmp::Listeners::new(tasks.clone(), triggers.clone(), max),
            srt: super::srt::Listeners::new(max),
            tasks,
            triggers,
            slots: Arc::new(tokio::sync::Semaphore::new(max)),
            counts: PushCounts::default(),
        })
    }

    /// The triggers sources fire (`PUSH_REWRITE`, `SOURCE_SWITCH`), when the server has them.
    pub fn triggers(&self) -> Option<&Arc<TriggerSet>> {
        self.triggers.as_ref()
    }

    fn door(&self, stream: &str) -> Option<Arc<Door>> {
        self.doors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(stream)
            .cloned()
    }

    /// A push connection a shard hands over, with its request (head and early body bytes).
    pub fn accept(self: &Arc<Self>, socket: std::net::TcpStream, request: PushRequest) {
        let permit = self.slots.clone().try_acquire_owned().ok();
        let pushes = self.clone();
        self.tasks.spawn(async move {
            let Ok(socket) = socket
                .set_nonblocking(true)
                .and_then(|()| TcpStream::from_std(socket))
            else {
                return;
            };
            let Some(_permit) = permit else {
                pushes.counts.refused_busy.fetch_add(1, Ordering::Relaxed);
                refuse(socket, 503, "too many pushes at once, try again later\n").await;
                return;
            };
            pushes.counts.open.fetch_add(1, Ordering::Relaxed);
            pushes.serve(socket, request).await;
            pushes.counts.open.fetch_sub(1, Ordering::Relaxed);
        });
    }

    async fn serve(&self, socket: TcpStream, request: PushRequest) {
        let peer = request.head.peer;
        let door = match self.decide(&request).await {
            Ok(door) => door,
            Err((status, why)) => {
                refuse(socket, status, &format!("{why}\n")).await;
                return;
            }
        };
        let who = peer.map_or_else(|| "?".to_owned(), |p| p.to_string());
        let peer = socket
            .peer_addr()
            .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
        Push {
            door,
            conn: Connection::new(socket, peer),
            who,
            request,
        }
        .run()
        .await;
    }

    /// Which stream the push feeds, or why it is refused.
    async fn decide(&self, request: &PushRequest) -> Result<Arc<Door>, (u16, String)> {
        let head = &request.head;
        let Some(door) = self.door(&request.stream) else {
            self.counts.refused_unknown.fetch_add(1, Ordering::Relaxed);
            return Err((
                404,
                format!("no stream takes pushes at /push/{}", request.stream),
            ));
        };
        let refused = |door: &Door, why: String| {
            let n = door.counters.source_refused.fetch_add(1, Ordering::Relaxed) + 1;
            // One line for the first refusal and one per hundred after: a pusher trying
            // keys cannot fill the log.
            if n == 1 || n % 100 == 0 {
                tracing::warn!(stream = %door.stream, refused = n, "refused a push from {}: {why}", head.peer.map_or_else(|| "?".to_owned(), |p| p.to_string()));
            }
            if let Ok(mut last) = door.counters.source_error.lock() {
                *last = Some(format!("push refused: {why}"));
            }
            (403, format!("push refused: {why}"))
        };
        if !door.spec.allow.is_empty()
            && !head
                .peer
                .is_some_and(|ip| door.spec.allow.iter().any(|net| net.contains(&ip)))
        {
            return Err(refused(&door, "address not in allow=".into()));
        }
        if let Some(key) = &door.spec.key {
            let given = query_param(&head.query, "key").unwrap_or_default();
            let same: bool = subtle::ConstantTimeEq::ct_eq(given.as_bytes(), key.as_bytes()).into();
            if !same {
                return Err(refused(&door, "wrong or missing key".into()));
            }
        }
        let url = format!(
            "http://{}{}{}{}",
            head.host.as_deref().unwrap_or("localhost"),
            head.path,
            if head.query.is_empty() { "" } else { "?" },
            head.query
        );
        let peer = head.peer.map(|p| p.to_string()).unwrap_or_default();
        match push_rewrite(self.triggers.as_ref(), &url, &peer, &door.stream).await {
            Ok(None) => Ok(door),
            Ok(Some(answer)) => match self.door(&answer) {
                Some(renamed) => {
                    tracing::info!(stream = %renamed.stream, "PUSH_REWRITE sends the push to /push/{} here", door.stream);
                    Ok(renamed)
                }
                None => Err(refused(
                    &door,
                    format!("PUSH_REWRITE named {answer:?}, which takes no pushes"),
                )),
            },
            Err(why) => Err(refused(&door, why)),
        }
    }

    /// The RTMP listeners (RTMP publishing is a push too).
    pub fn rtmp(&self) -> &Arc<super::rtmp::Listeners> {
        &self.rtmp
    }

    /// The SRT listeners, and the counts of SRT callers (an SRT caller is a push too).
    pub fn srt(&self) -> &Arc<super::srt::Listeners> {
        &self.srt
    }
}

/// Answer `status` with `text`, read and drop what the encoder still sends for a moment (so
/// that it reads the answer instead of a reset), and close.
async fn refuse(mut socket: TcpStream, status: u16, text: &str) {
    let head = response_head(
        status,
        "text/plain; charset=utf-8",
        Some(text.len()),
        false,
        "",
    );
    let answer = async {
        socket.write_all(head.as_bytes()).await?;
        socket.write_all(text.as_bytes()).await?;
        socket.shutdown().await
    };
    if !matches!(
        tokio::time::timeout(ANSWER_TIMEOUT, answer).await,
        Ok(Ok(()))
    ) {
        return;
    }
    let drain = async {
        let mut buf = vec![0u8; 16 * 1024];
        let mut dropped = 0;
        while dropped < LINGER_BYTES {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => dropped += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// A push being taken.
struct Push {
    door: Arc<Door>,
    conn: Connection,
    who: String,
    request: PushRequest,
}

/// Why a push ended.
enum End {
    /// The body ended: answered 200.
    Complete,
    /// A newer push took over, or the stream ended.
    Replaced,
    /// The encoder went, broke the framing, or sent nothing for too long.
    Broken(String),
}

impl Push {
    async fn run(mut self) {
        let door = self.door.clone();
        let mut turn = door.pusher.subscribe();
        let mut number = 0;
        door.pusher.send_modify(|n| {
            if *n != ENDED {
                *n += 1;
            }
            number = *n;
        });
        if number == ENDED {
            let Push { conn, .. } = self;
            refuse(conn.into_stream(), 404, "the stream ended\n").await;
            return;
        }
        turn.mark_unchanged();
        if *turn.borrow() != number {
            return; // a newer push came in the meantime
        }
        if self.request.head.expect_continue
            && self
                .conn
                .stream()
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
        {
            return;
        }
        StreamCounters::add(&door.counters.source_connections, 1);
        let replaces = door.counters.source_connected.swap(1, Ordering::Relaxed) == 1;
        tracing::info!(stream = %door.stream, "a push from {} started{}", self.who, if replaces { " (it replaces the one before)" } else { "" });
        let end = self.read(&mut turn).await;
        if *turn.borrow() == number {
            door.counters.source_connected.store(0, Ordering::Relaxed);
        }
        match end {
            End::Complete => {
                tracing::info!(stream = %door.stream, "the push from {} ended", self.who);
                let text = "push received\n";
                let head = response_head(200, "text/plain", Some(text.len()), false, "");
                let answer = async {
                    self.conn.stream().write_all(head.as_bytes()).await?;
                    self.conn.stream().write_all(text.as_bytes()).await?;
                    self.conn.stream().shutdown().await
                };
                let _ = tokio::time::timeout(ANSWER_TIMEOUT, answer).await;
            }
            End::Replaced => {
                tracing::info!(stream = %door.stream, "the push from {} was replaced", self.who)
            }
            End::Broken(why) => {
                tracing::info!(stream = %door.stream, "the push from {} went: {why}", self.who)
            }
        }
    }

    /// Read the body into the stream until it ends, breaks, or another push takes over. The
    /// kernel gathers about 10 ms of the stream per read, as for a TCP source.
    async fn read(&mut self, turn: &mut watch::Receiver<u64>) -> End {
        let door = self.door.clone();
        let mut body = BodyReader::new(self.request.head.body);
        let mut data = BytesMut::new();
        let mut raw = BytesMut::new();
        let early = std::mem::take(&mut self.request.early);
        if let Err(e) = body.read(&early, |d| data.extend_from_slice(d)) {
            return End::Broken(e.to_string());
        }
        let mut delivery = Some(Delivery::Restart);
        loop {
            if let Some(d) = delivery.take() {
                tokio::select! {
                    () = door.inlet.deliver(d) => {}
                    _ = turn.changed() => return End::Replaced,
                }
            }
            if !data.is_empty() {
                let received = crate::sys::unix_ns();
                delivery = Some(Delivery::Bytes(data.split().freeze(), received));
                continue;
            }
            if body.done() {
                return End::Complete;
            }
            tokio::select! {
                read = self.conn.read(&mut raw, door.idle) => match read {
                    Ok(0) => return End::Broken("closed before the end of its body".into()),
                    Ok(_) => {}
                    Err(e) => return End::Broken(e.to_string()),
                },
                _ = turn.changed() => return End::Replaced,
            };
            if let Err(e) = body.read(&raw, |d| data.extend_from_slice(d)) {
                return End::Broken(e.to_string());
            }
            raw.clear();
        }
    }
}

/// The home shard's side of a stream fed by pushes: the inlet it takes from, and its door in
/// [`Pushes`] while it runs.
#[derive(Debug)]
pub(super) struct PushDriver {
    program: Option<u16>,
    inlet: Arc<Inlet>,
    door: Option<(Arc<Pushes>, Arc<Door>)>,
}

/// Open stream `context.stream` to pushes.
pub(super) fn start(spec: &PushSpec, context: &SourceContext<'_>) -> PushDriver {
    let inlet = Inlet::new(context.waker.clone());
    let Some(pushes) = context.pushes else {
        tracing::error!(stream = %context.stream, "no push sources here: this stream takes no pushes");
        return PushDriver {
            program: spec.program,
            inlet,
            door: None,
        };
    };
    let door = Arc::new(Door {
        stream: context.stream.to_owned(),
        spec: spec.clone(),
        inlet: inlet.clone(),
        counters: context.counters.clone(),
        idle: context.idle,
        pusher: watch::Sender::new(0),
    });
    let replaced = pushes
        .doors
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(context.stream.to_owned(), door.clone());
    if let Some(old) = replaced {
        old.pusher.send_replace(ENDED);
    }
    tracing::info!(stream = %context.stream, "taking pushes at /push/{}", context.stream);
    PushDriver {
        program: spec.program,
        inlet,
        door: Some((pushes.clone(), door)),
    }
}

impl Drop for PushDriver {
    fn drop(&mut self) {
        let Some((pushes, door)) = self.door.take() else {
            return;
        };
        // Its pushers stop; the name is freed unless a newer driver already holds it.
        door.pusher.send_replace(ENDED);
        let mut doors = pushes.doors.lock().unwrap_or_else(|e| e.into_inner());
        if doors
            .get(&door.stream)
            .is_some_and(|d| Arc::ptr_eq(d, &door))
        {
            doors.remove(&door.stream);
        }
    }
}

impl SourceDriver for PushDriver {
    fn program(&self) -> Option<u16> {
        self.program
    }

    fn inlet(&self) -> Option<&Inlet> {
        Some(&self.inlet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(url: &str) -> Result<PushSpec, SourceError> {
        match SourceSpec::parse(url)? {
            SourceSpec::Push(spec) => Ok(spec),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_push_urls() {
        assert_eq!(
            push("push://").unwrap(),
            PushSpec {
                key: None,
                allow: vec![],
                program: None
            }
        );
        let s = push("push://?key=s3cr%2Bt&allow=10.0.0.0/8,::1&program=2").unwrap();
        assert_eq!(s.key.as_deref(), Some("s3cr+t"));
        assert_eq!(s.allow.len(), 2);
        assert_eq!(s.program, Some(2));
        for bad in [
            "push://host:80",
            "push://?key=",
            "push://?allow=10.0.0.0/33",
            "push://?colour=red",
        ] {
            assert!(push(bad).is_err(), "{bad}");
        }
    }
}
