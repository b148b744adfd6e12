//! RTMP publishing: `rtmp://ADDR:PORT/APP[?key=SECRET&allow=CIDR,…]`. Encoders publish to
//! `rtmp://host:PORT/APP/STREAM` (OBS: server `rtmp://host/APP`, stream key `STREAM`), the
//! FLV tags they send are remuxed into MPEG-TS (the protocols crate's `flv::remux`) and fed to
//! the stream as a push would be.
//!
//! ```text
//!  listener per ADDR:PORT (a task of the sources' runtime, while a stream uses it)
//!    └─ connection: handshake ─ connect(APP) ─ publish(NAME) ─ audio/video messages
//!         rml_rtmp (sans-IO)      refused if     decided here:     FlvRemuxer ─ inlet ─ the
//!                                 no stream      see below         stream's home shard
//!                                 has APP
//! ```
//!
//! A publish names its stream by the stream's name (`cam1`, with `?key=SECRET` after it when
//! the stream has a key: `rtmp://host/live/cam1?key=SECRET`), or by the stream's key alone
//! (`rtmp://host/live/SECRET`, the OBS way); the publisher's address must be in `allow=` when
//! it is set; then MistServer's `PUSH_REWRITE` trigger, when configured, may send it to
//! another RTMP stream or refuse it. Refusals are answered during the RTMP handshake with
//! the status a publisher shows (`NetConnection.Connect.Rejected` for an application no
//! stream has, `NetStream.Publish.BadName` otherwise), counted and logged (once, then every
//! hundredth).
//!
//! As with HTTP pushes, a new publisher replaces the one before (a restarted encoder is not
//! locked out by its own dead connection) and is a discontinuity in HLS; at most
//! `max_pushes` RTMP connections are open at once; a connection may send 64 KiB and take
//! 10 s before it publishes, and nothing for the stream's `source_timeout` after.
//!
//! What it does not do: RTMPS, RTMP playback, AMF3 commands, the token backend deciding
//! publishers (the key, `allow=` and `PUSH_REWRITE` do).

use super::inlet::{Delivery, Inlet};
use super::tcp::Connection;
use super::{SourceContext, SourceDriver, SourceError, SourceSpec};
use crate::control::triggers::TriggerSet;
use crate::stream::StreamCounters;
use bytes::BytesMut;
use ipnet::IpNet;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use shardcast_protocols::flv::remux::FlvRemuxer;
use shardcast_protocols::flv::{TAG_AUDIO, TAG_VIDEO};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// RTMP's port.
const DEFAULT_PORT: u16 = 1935;
/// Bytes a connection may send before it publishes (the handshake is 1537).
const MAX_BEFORE_PUBLISH: usize = 64 * 1024;
/// Why a connection that sent too much before publishing was dropped.
const SENT_TOO_MUCH: &str = "bytes sent without publishing";
/// Time a connection has to publish.
const PUBLISH_WITHIN: Duration = Duration::from_secs(10);
/// How long an answer may take to write.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest application name or stream key taken.
const MAX_NAME: usize = 256;

/// A stream fed by RTMP publishers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtmpSpec {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The application publishers connect to.
    pub app: String,
    /// The key a publisher must give, when set.
    pub key: Option<String>,
    /// Who may publish; empty: anyone (with the key).
    pub allow: Vec<IpNet>,
}

/// `rtmp://` then the rest of the URL.
pub(super) fn parse(rest: &str) -> Result<SourceSpec, SourceError> {
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, app) = path.split_once('/').unwrap_or((path, ""));
    let app = app.trim_end_matches('/');
    if app.is_empty() || app.len() > MAX_NAME || app.contains(['/', ' ']) {
        return Err(SourceError::Parameter(format!(
            "rtmp://{rest} needs one application after the address (rtmp://0.0.0.0:1935/live)"
        )));
    }
    let listen = authority
        .parse::<SocketAddr>()
        .or_else(|_| {
            let bare = authority
                .strip_prefix('[')
                .and_then(|a| a.strip_suffix(']'))
                .unwrap_or(authority);
            bare.parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, DEFAULT_PORT))
        })
        .map_err(|_| SourceError::Address(authority.to_owned()))?;
    let mut spec = RtmpSpec {
        listen,
        app: app.to_owned(),
        key: None,
        allow: Vec::new(),
    };
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let bad = || SourceError::Parameter(format!("{key}={value}"));
        match &*key {
            "key"
                if !value.is_empty()
                    && value.len() <= MAX_NAME
                    && !value.contains(['?', '&', '/']) =>
            {
                spec.key = Some(value.into_owned())
            }
            "allow" => spec
                .allow
                .extend(super::parse_allow(&value).ok_or_else(bad)?),
            _ => return Err(bad()),
        }
    }
    Ok(SourceSpec::Rtmp(spec))
}

/// Server-wide counts of RTMP connections refused before any stream was found, and those open.
#[derive(Debug, Default)]
pub struct RtmpCounts {
    /// Connections open now (in the handshake or publishing).
    pub open: AtomicU64,
    /// Refused: no stream has the application connected to.
    pub refused_app: AtomicU64,
    /// Refused: no stream of the application takes the name or key published.
    pub refused_unknown: AtomicU64,
    /// Refused: `max_pushes` connections were open.
    pub refused_busy: AtomicU64,
    /// Closed before publishing: not within 10 s, or past 64 KiB.
    pub no_publish: AtomicU64,
}

/// The RTMP listeners and the streams each feeds.
#[derive(Debug)]
pub struct Listeners {
    ports: Mutex<HashMap<SocketAddr, Port>>,
    tasks: tokio::runtime::Handle,
    triggers: Option<Arc<TriggerSet>>,
    slots: Arc<tokio::sync::Semaphore>,
    /// The counts, for metrics.
    pub counts: RtmpCounts,
}

/// A listening address: its streams, and the signal that stops its task.
#[derive(Debug)]
struct Port {
    doors: HashMap<String, Arc<Door>>,
    stop: watch::Sender<bool>,
}

/// A stream that takes RTMP publishers: where its bytes go, and which publisher feeds it.
#[derive(Debug)]
struct Door {
    stream: String,
    spec: RtmpSpec,
    inlet: Arc<Inlet>,
    counters: Arc<StreamCounters>,
    idle: Duration,
    /// The number of the publisher feeding the stream; older ones stop. [`ENDED`]: the stream
    /// is gone.
    publisher: watch::Sender<u64>,
}

const ENDED: u64 = u64::MAX;

/// Why a connection was refused: the RTMP status code and the words with it.
struct Refusal {
    code: &'static str,
    why: String,
}

impl Listeners {
    /// Listeners whose tasks run on `tasks`, asking `triggers` (`PUSH_REWRITE`); at most `max`
    /// connections at once.
    pub fn new(
        tasks: tokio::runtime::Handle,
        triggers: Option<Arc<TriggerSet>>,
        max: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            ports: Mutex::new(HashMap::new()),
            tasks,
            triggers,
            slots: Arc::new(tokio::sync::Semaphore::new(max)),
            counts: RtmpCounts::default(),
        })
    }

    fn ports(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Port>> {
        self.ports.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The streams of `app` on `addr`.
    fn doors(&self, addr: SocketAddr, app: &str) -> Vec<Arc<Door>> {
        self.ports()
            .get(&addr)
            .map(|p| {
                p.doors
                    .values()
                    .filter(|d| d.spec.app == app)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Open `door`'s stream to publishers: its port listens from now on.
    fn open(self: &Arc<Self>, door: Arc<Door>) {
        let addr = door.spec.listen;
        let mut ports = self.ports();
        let port = ports.entry(addr).or_insert_with(|| {
            let (stop, stopped) = watch::channel(false);
            self.tasks.spawn(self.clone().listen(addr, stopped));
            Port {
                doors: HashMap::new(),
                stop,
            }
        });
        if let Some(old) = port.doors.insert(door.stream.clone(), door) {
            old.publisher.send_replace(ENDED);
        }
    }

    /// Close `door`: its publisher stops; a port left with no stream stops listening.
    fn close(&self, door: &Arc<Door>) {
        door.publisher.send_replace(ENDED);
        let mut ports = self.ports();
        let addr = door.spec.listen;
        let Some(port) = ports.get_mut(&addr) else {
            return;
        };
        if port
            .doors
            .get(&door.stream)
            .is_some_and(|d| Arc::ptr_eq(d, door))
        {
            port.doors.remove(&door.stream);
        }
        if port.doors.is_empty() {
            if let Some(port) = ports.remove(&addr) {
                port.stop.send_replace(true);
            }
        }
    }

    /// Listen on `addr` until `stopped`, serving each connection in a task of its own.
    async fn listen(self: Arc<Self>, addr: SocketAddr, mut stopped: watch::Receiver<bool>) {
        let mut retry = super::Retry::new();
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(listener) => break listener,
                Err(e) => {
                    let wait = retry.down(std::time::Instant::now());
                    tracing::warn!(
                        "cannot listen for RTMP on {addr}: {e}; trying again in {wait:?}"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        _ = stopped.changed() => return,
                    }
                }
            }
        };
        tracing::info!("listening for RTMP publishers on rtmp://{addr}");
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((socket, peer)) => {
                        let permit = self.slots.clone().try_acquire_owned().ok();
                        let this = self.clone();
                        tokio::spawn(async move {
                            let Some(_permit) = permit else {
                                this.counts.refused_busy.fetch_add(1, Ordering::Relaxed);
                                return; // closed at once: too many connections
                            };
                            this.counts.open.fetch_add(1, Ordering::Relaxed);
                            let _ = socket.set_nodelay(true);
                            this.serve(addr, socket, peer).await;
                            this.counts.open.fetch_sub(1, Ordering::Relaxed);
                        });
                    }
                    Err(e) => {
                        tracing::warn!("cannot accept on rtmp://{addr}: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = stopped.changed() => {
                    tracing::info!("no stream takes RTMP on {addr} any more: not listening");
                    return;
                }
            }
        }
    }

    /// One connection: the handshake, the commands up to a publish, then its media.
    async fn serve(&self, addr: SocketAddr, socket: TcpStream, peer: SocketAddr) {
        let mut publisher = Publisher {
            conn: Connection::new(socket, peer),
            session: None,
            sent: 0,
        };
        let deadline = tokio::time::Instant::now() + PUBLISH_WITHIN;
        let setup = tokio::time::timeout_at(deadline, publisher.until_published(self, addr));
        let (door, early) = match setup.await {
            Ok(Ok(Some(published))) => published,
            Ok(Ok(None)) => return,
            Ok(Err(why)) => {
                if why.ends_with(SENT_TOO_MUCH) {
                    self.counts.no_publish.fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!("RTMP connection from {peer} dropped: {why}");
                return;
            }
            Err(_) => {
                self.counts.no_publish.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    "RTMP connection from {peer} did not publish within {PUBLISH_WITHIN:?}"
                );
                return;
            }
        };
        publisher.feed(door, early, peer).await;
    }

    /// Which stream a publish of `stream_key` to `app` on `addr` from `peer` feeds, or why it
    /// is refused.
    async fn decide(
        &self,
        addr: SocketAddr,
        app: &str,
        stream_key: &str,
        peer: SocketAddr,
    ) -> Result<Arc<Door>, Refusal> {
        let (name, query) = stream_key.split_once('?').unwrap_or((stream_key, ""));
        let doors = self.doors(addr, app);
        let by_name = doors.iter().find(|d| d.stream == name);
        let by_key = || {
            doors.iter().find(|d| {
                d.spec.key.as_deref().is_some_and(|k| {
                    subtle::ConstantTimeEq::ct_eq(k.as_bytes(), name.as_bytes()).into()
                })
            })
        };
        let (door, keyed) = match (by_name, by_key()) {
            (Some(door), _) => (door.clone(), false),
            (None, Some(door)) => (door.clone(), true),
            (None, None) => {
                self.counts.refused_unknown.fetch_add(1, Ordering::Relaxed);
                return Err(Refusal {
                    code: "NetStream.Publish.BadName",
                    why: format!("no stream takes RTMP publishing as {app}/{name} here"),
                });
            }
        };
        let refused = |door: &Door, why: String| {
            let n = door.counters.source_refused.fetch_add(1, Ordering::Relaxed) + 1;
            if n == 1 || n % 100 == 0 {
                tracing::warn!(stream = %door.stream, refused = n, "refused an RTMP publisher from {peer}: {why}");
            }
            if let Ok(mut last) = door.counters.source_error.lock() {
                *last = Some(format!("RTMP publisher refused: {why}"));
            }
            Refusal {
                code: "NetStream.Publish.BadName",
                why: format!("publishing refused: {why}"),
            }
        };
        if !door.spec.allow.is_empty() && !door.spec.allow.iter().any(|n| n.contains(&peer.ip())) {
            return Err(refused(&door, "address not in allow=".into()));
        }
        if let (Some(key), false) = (&door.spec.key, keyed) {
            let given = form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == "key")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            let same: bool = subtle::ConstantTimeEq::ct_eq(given.as_bytes(), key.as_bytes()).into();
            if !same {
                return Err(refused(&door, "wrong or missing key".into()));
            }
        }
        let url = format!("rtmp://{addr}/{app}/{stream_key}");
        match crate::control::triggers::push_rewrite(
            self.triggers.as_ref(),
            &url,
            &peer.ip().to_string(),
            &door.stream,
        )
        .await
        {
            Ok(None) => Ok(door),
            Ok(Some(other)) => match self
                .doors(addr, app)
                .into_iter()
                .find(|d| d.stream == other)
            {
                Some(renamed) => {
                    tracing::info!(stream = %renamed.stream, "PUSH_REWRITE sends the RTMP publisher of {app}/{name} here");
                    Ok(renamed)
                }
                None => Err(refused(
                    &door,
                    format!("PUSH_REWRITE named {other:?}, which takes no RTMP on {app}"),
                )),
            },
            Err(why) => Err(refused(&door, why)),
        }
    }
}

/// A publisher's connection and its RTMP session.
struct Publisher {
    conn: Connection,
    session: Option<ServerSession>,
    /// Bytes read before it published.
    sent: usize,
}

impl Publisher {
    /// Write `packets` out.
    async fn send(&mut self, results: &[ServerSessionResult]) -> Result<(), String> {
        for r in results {
            if let ServerSessionResult::OutboundResponse(packet) = r {
                self.write(&packet.bytes).await?;
            }
        }
        Ok(())
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        match tokio::time::timeout(WRITE_TIMEOUT, self.conn.stream().write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the publisher does not read".into()),
        }
    }

    async fn read(&mut self, buf: &mut BytesMut) -> Result<(), String> {
        buf.clear();
        match self.conn.stream().read_buf(buf).await {
            Ok(0) => Err("closed".into()),
            Ok(n) => {
                self.sent += n;
                if self.sent > MAX_BEFORE_PUBLISH {
                    return Err(format!("{MAX_BEFORE_PUBLISH} {SENT_TOO_MUCH}"));
                }
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// The handshake and the commands up to an accepted publish: the stream it feeds, and the
    /// results that came with the acceptance (media may follow in the same read). `None`:
    /// refused (the publisher was told).
    async fn until_published(
        &mut self,
        listeners: &Listeners,
        addr: SocketAddr,
    ) -> Result<Option<(Arc<Door>, Vec<ServerSessionResult>)>, String> {
        let mut buf = BytesMut::with_capacity(8 * 1024);
        let mut handshake = Handshake::new(PeerType::Server);
        let rest = loop {
            self.read(&mut buf).await?;
            match handshake
                .process_bytes(&buf)
                .map_err(|e| format!("handshake: {e:?}"))?
            {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    self.write(&response_bytes).await?
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    self.write(&response_bytes).await?;
                    break remaining_bytes;
                }
            }
        };
        let (session, first) = ServerSession::new(ServerSessionConfig::new())
            .map_err(|e| format!("session: {e:?}"))?;
        self.send(&first).await?;
        self.session = Some(session);
        let mut input = rest;
        loop {
            let results = self
                .session
                .as_mut()
                .ok_or("no session")?
                .handle_input(&input)
                .map_err(|e| format!("RTMP: {e:?}"))?;
            let mut pending = results.into_iter();
            while let Some(result) = pending.next() {
                let session = self.session.as_mut().ok_or("no session")?;
                let answer = match result {
                    ServerSessionResult::OutboundResponse(packet) => {
                        self.write(&packet.bytes).await?;
                        continue;
                    }
                    ServerSessionResult::RaisedEvent(ServerSessionEvent::ConnectionRequested {
                        request_id,
                        app_name,
                    }) => {
                        if app_name.len() <= MAX_NAME
                            && !listeners.doors(addr, &app_name).is_empty()
                        {
                            session.accept_request(request_id)
                        } else {
                            listeners.counts.refused_app.fetch_add(1, Ordering::Relaxed);
                            let answer = session.reject_request(
                                request_id,
                                "NetConnection.Connect.Rejected",
                                "no stream takes RTMP publishing in that application here",
                            );
                            self.refuse(answer).await;
                            return Ok(None);
                        }
                    }
                    ServerSessionResult::RaisedEvent(
                        ServerSessionEvent::PublishStreamRequested {
                            request_id,
                            app_name,
                            stream_key,
                            ..
                        },
                    ) => {
                        let peer = self.conn.peer();
                        let decided = if stream_key.len() > MAX_NAME {
                            Err(Refusal {
                                code: "NetStream.Publish.BadName",
                                why: "the stream key is too long".into(),
                            })
                        } else {
                            listeners.decide(addr, &app_name, &stream_key, peer).await
                        };
                        let session = self.session.as_mut().ok_or("no session")?;
                        match decided {
                            Ok(door) => {
                                let mut accepted = session
                                    .accept_request(request_id)
                                    .map_err(|e| format!("RTMP: {e:?}"))?;
                                // What came after the publish command in the same read.
                                accepted.extend(pending);
                                return Ok(Some((door, accepted)));
                            }
                            Err(refusal) => {
                                let answer =
                                    session.reject_request(request_id, refusal.code, &refusal.why);
                                self.refuse(answer).await;
                                return Ok(None);
                            }
                        }
                    }
                    _ => continue,
                };
                let answer = answer.map_err(|e| format!("RTMP: {e:?}"))?;
                self.send(&answer).await?;
            }
            self.read(&mut buf).await?;
            input = buf.to_vec();
        }
    }

    /// Send a refusal's status and close, after reading what the publisher still sends for a
    /// moment (so that it reads the status rather than a reset).
    async fn refuse(
        &mut self,
        answer: Result<Vec<ServerSessionResult>, rml_rtmp::sessions::ServerSessionError>,
    ) {
        if let Ok(answer) = answer {
            let _ = self.send(&answer).await;
        }
        let _ = self.conn.stream().shutdown().await;
        let drain = async {
            let mut buf = vec![0u8; 16 * 1024];
            let mut dropped = 0;
            while dropped < MAX_BEFORE_PUBLISH {
                match self.conn.stream().read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => dropped += n,
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
    }

    /// Feed `door`'s stream with what the publisher sends until it stops, goes silent for the
    /// stream's `source_timeout`, or another publisher takes over.
    async fn feed(mut self, door: Arc<Door>, early: Vec<ServerSessionResult>, peer: SocketAddr) {
        let mut turn = door.publisher.subscribe();
        let mut number = 0;
        door.publisher.send_modify(|n| {
            if *n != ENDED {
                *n += 1;
            }
            number = *n;
        });
        if number == ENDED {
            return;
        }
        turn.mark_unchanged();
        StreamCounters::add(&door.counters.source_connections, 1);
        let replaces = door.counters.source_connected.swap(1, Ordering::Relaxed) == 1;
        tracing::info!(stream = %door.stream, "an RTMP publisher from {peer} started{}", if replaces { " (it replaces the one before)" } else { "" });
        let mut media = Media {
            remuxer: FlvRemuxer::new(),
            ts: Vec::new(),
            said: false,
        };
        let why = self.pump(&door, &mut turn, early, &mut media).await;
        if *turn.borrow() == number {
            door.counters.source_connected.store(0, Ordering::Relaxed);
        }
        tracing::info!(stream = %door.stream, "the RTMP publisher from {peer} {why}");
    }

    /// Deliver the stream until it ends; why it did.
    async fn pump(
        &mut self,
        door: &Door,
        turn: &mut watch::Receiver<u64>,
        early: Vec<ServerSessionResult>,
        media: &mut Media,
    ) -> String {
        let mut delivery = Some(Delivery::Restart);
        let mut results = early;
        let mut buf = BytesMut::with_capacity(64 * 1024);
        loop {
            if let Some(d) = delivery.take() {
                tokio::select! {
                    () = door.inlet.deliver(d) => {}
                    _ = turn.changed() => return "was replaced".into(),
                }
            }
            for result in results.drain(..) {
                match result {
                    ServerSessionResult::OutboundResponse(packet) => {
                        if let Err(e) = self.write(&packet.bytes).await {
                            return format!("went: {e}");
                        }
                    }
                    ServerSessionResult::RaisedEvent(event) => match event {
                        ServerSessionEvent::VideoDataReceived {
                            data, timestamp, ..
                        } => media.tag(door, TAG_VIDEO, timestamp.value, &data),
                        ServerSessionEvent::AudioDataReceived {
                            data, timestamp, ..
                        } => media.tag(door, TAG_AUDIO, timestamp.value, &data),
                        ServerSessionEvent::PublishStreamFinished { .. } => {
                            return "stopped publishing".into()
                        }
                        _ => {}
                    },
                    ServerSessionResult::UnhandleableMessageReceived(_) => {}
                }
            }
            if !media.ts.is_empty() {
                let ts = std::mem::take(&mut media.ts);
                delivery = Some(Delivery::Bytes(ts.into(), crate::sys::unix_ns()));
                continue;
            }
            buf.clear();
            tokio::select! {
                read = self.conn.read(&mut buf, door.idle) => match read {
                    Ok(0) => return "disconnected".into(),
                    Ok(_) => {}
                    Err(e) => return format!("went: {e}"),
                },
                _ = turn.changed() => return "was replaced".into(),
            }
            let Some(session) = self.session.as_mut() else {
                return "lost its session".into();
            };
            match session.handle_input(&buf) {
                Ok(more) => results = more,
                Err(e) => return format!("broke the RTMP framing: {e:?}"),
            }
        }
    }
}

/// A publisher's media on its way to TS.
struct Media {
    remuxer: FlvRemuxer,
    ts: Vec<u8>,
    /// A refused tag was logged (once per publisher).
    said: bool,
}

impl Media {
    fn tag(&mut self, door: &Door, kind: u8, timestamp_ms: u32, body: &[u8]) {
        if let Err(e) = self.remuxer.push(kind, timestamp_ms, body, &mut self.ts) {
            if !self.said {
                self.said = true;
                tracing::warn!(stream = %door.stream, "RTMP publisher: {e} (such tags are dropped)");
            }
            if let Ok(mut last) = door.counters.source_error.lock() {
                *last = Some(format!("RTMP: {e}"));
            }
        }
    }
}

/// The home shard's side of a stream fed by RTMP: the inlet it takes from, and its door while
/// it runs.
#[derive(Debug)]
pub(super) struct RtmpDriver {
    inlet: Arc<Inlet>,
    door: Option<(Arc<Listeners>, Arc<Door>)>,
}

/// Open stream `context.stream` to RTMP publishers.
pub(super) fn start(spec: &RtmpSpec, context: &SourceContext<'_>) -> RtmpDriver {
    let inlet = Inlet::new(context.waker.clone());
    let Some(listeners) = context.pushes.map(|p| p.rtmp().clone()) else {
        tracing::error!(stream = %context.stream, "no RTMP here: this stream takes no publishers");
        return RtmpDriver { inlet, door: None };
    };
    let door = Arc::new(Door {
        stream: context.stream.to_owned(),
        spec: spec.clone(),
        inlet: inlet.clone(),
        counters: context.counters.clone(),
        idle: context.idle,
        publisher: watch::Sender::new(0),
    });
    listeners.open(door.clone());
    tracing::info!(stream = %context.stream, "taking RTMP publishers at rtmp://{}/{}/{}", spec.listen, spec.app, context.stream);
    RtmpDriver {
        inlet,
        door: Some((listeners, door)),
    }
}

impl Drop for RtmpDriver {
    fn drop(&mut self) {
        if let Some((listeners, door)) = self.door.take() {
            listeners.close(&door);
        }
    }
}

impl SourceDriver for RtmpDriver {
    fn inlet(&self) -> Option<&Inlet> {
        Some(&self.inlet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtmp(url: &str) -> Result<RtmpSpec, SourceError> {
        match SourceSpec::parse(url)? {
            SourceSpec::Rtmp(spec) => Ok(spec),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_rtmp_urls() {
        let s = rtmp("rtmp://0.0.0.0:1935/live").unwrap();
        assert_eq!(
            s,
            RtmpSpec {
                listen: "0.0.0.0:1935".parse().unwrap(),
                app: "live".into(),
                key: None,
                allow: vec![],
            }
        );
        let s = rtmp("rtmp://[::]/studio/?key=s3cr3t&allow=10.0.0.0/8").unwrap();
        assert_eq!(s.listen, "[::]:1935".parse().unwrap());
        assert_eq!(
            (s.app.as_str(), s.key.as_deref()),
            ("studio", Some("s3cr3t"))
        );
        assert_eq!(s.allow.len(), 1);
        for bad in [
            "rtmp://0.0.0.0:1935",
            "rtmp://0.0.0.0:1935/",
            "rtmp://0.0.0.0:1935/a/b",
            "rtmp://host:1935/live",
            "rtmp://0.0.0.0:1935/live?key=",
            "rtmp://0.0.0.0:1935/live?key=a/b",
            "rtmp://0.0.0.0:1935/live?colour=red",
        ] {
            assert!(rtmp(bad).is_err(), "{bad}");
        }
    }
}
