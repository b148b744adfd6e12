//! The state machine of one viewer connection (no I/O: the backend reads and writes).
//!
//! ```text
//!  ReadingHead ──GET /{stream}.ts──► Streaming ──lag, timeout, error──► Closing
//!      │ ▲  playlists, segments and other requests answered in order (keep-alive,
//!      └─┘  pipelining-safe)
//!      └──PUT|POST /push/{stream}──► HandingOver: once what is queued is sent, the backend
//!                                    hands the socket and the request to the push sources
//! ```
//!
//! What goes out is a queue of [`Out`] buffers: shared memory (`Bytes`) or a range of a sealed
//! segment's memfd, which the backend sends with `sendfile`. Nothing is copied per viewer.
//!
//! Why one file of about 1,000 lines: a connection is one state machine (the head, pipelined
//! requests, the output queue and its bounds, the feeds) whose invariants span every method;
//! its tests are in `conn/tests.rs`.

use super::{
    byte_range, parse_head, write_response_head, ByteRange, HttpError, Method, RequestHead,
};
use crate::hls::Segment;
use crate::stream::{Batch, StreamView};
use bytes::Bytes;
use std::collections::VecDeque;
use std::io::IoSlice;
use std::os::fd::BorrowedFd;
use std::sync::Arc;

/// A Cache-Control value that no shared cache may act on: `public` becomes `private`, and
/// `private` is put before the rest otherwise.
fn private_cache_control(value: &str) -> String {
    match value.strip_prefix("public") {
        Some(rest) => format!("private{rest}"),
        None if value.starts_with("private") => value.to_owned(),
        None => format!("private, {value}"),
    }
}

/// One buffer queued for a connection.
#[derive(Clone, Debug)]
pub enum Out {
    /// Shared memory.
    Bytes(Bytes),
    /// Bytes `start..end` of a segment kept in a memfd (sent with `sendfile`).
    File {
        /// The segment; holding it keeps the memfd open.
        segment: Arc<Segment>,
        /// First byte.
        start: usize,
        /// One past the last byte.
        end: usize,
    },
}

impl Out {
    fn len(&self) -> usize {
        match self {
            Out::Bytes(b) => b.len(),
            Out::File { start, end, .. } => end - start,
        }
    }
}

/// Limits of a connection.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// Largest request head.
    pub max_head: usize,
    /// Time allowed to send a whole request head once it began (slowloris), ns.
    pub header_timeout_ns: u64,
    /// Time a keep-alive connection may sit idle, or a viewer may make no write progress, ns.
    pub idle_timeout_ns: u64,
    /// Unsent bytes a viewer may have queued before it is moved to the newest keyframe.
    pub max_lag_bytes: usize,
    /// Skips within `skip_window_ns` after which a viewer is closed instead.
    pub max_skips: u32,
    /// The period over which skips are counted, ns.
    pub skip_window_ns: u64,
    /// Unsent response bytes past which a connection's further requests are not read or
    /// parsed until it drains (pipelining without reading).
    pub max_queued_bytes: usize,
    /// Responses queued and not yet sent past which further requests wait the same way.
    pub max_pipelined: usize,
    /// Bytes per second a connection with something queued must take, on average over
    /// [`RATE_PERIOD_NS`], or be closed (slow and trickling readers); 0: no minimum.
    pub min_send_rate: u64,
}

/// The period over which a backlogged connection's send rate is judged, ns.
pub const RATE_PERIOD_NS: u64 = 10_000_000_000;

/// Request bytes a connection may hold beyond one head while its responses drain (what one
/// read brings in after parsing paused); past it the connection is refused.
const READ_SLACK: usize = 64 * 1024;

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            max_head: 8 * 1024,
            header_timeout_ns: 10_000_000_000,
            idle_timeout_ns: 30_000_000_000,
            max_lag_bytes: 4 << 20,
            max_skips: 3,
            skip_window_ns: 60_000_000_000,
            max_queued_bytes: 1 << 20,
            max_pipelined: 16,
            min_send_rate: 4096,
        }
    }
}

/// Where a connection is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ConnState {
    /// Waiting for (more of) a request head.
    ReadingHead,
    /// Sending a live stream until the viewer goes.
    Streaming {
        /// The stream's index.
        stream: usize,
    },
    /// Sending what is queued, then closing.
    Closing,
    /// Holding a request until its session's access decision arrives.
    Waiting,
    /// A push: the socket leaves the shard once its queued responses are sent
    /// ([`Conn::take_push`]).
    HandingOver,
}

/// A push request whose socket leaves the shard: its head, the stream it names and the body
/// bytes already read with the head.
#[derive(Clone, Debug)]
pub struct PushRequest {
    /// The request.
    pub head: RequestHead,
    /// The stream named in its path.
    pub stream: String,
    /// Body bytes read past the head.
    pub early: Vec<u8>,
}

/// What became of a request held for a stream or a fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Held {
    /// It waits for stream `stream`'s next window (`first`: it was not held before).
    Waiting {
        /// The stream's index.
        stream: usize,
        /// It was not held before.
        first: bool,
    },
    /// It was held to its limit and answered 503.
    TimedOut(usize),
    /// It waits for the HLS proxy to fetch resource `key` (`first`: it was not held before).
    Fetching {
        /// The resource.
        key: std::sync::Arc<str>,
        /// It was not held before.
        first: bool,
    },
    /// It waited for a fetch to its limit and was answered 504.
    FetchTimedOut,
}

/// What a request is answered with.
#[derive(Clone, Debug)]
pub enum Route {
    /// A document, with its caching rules (conditional requests, ranges, HEAD).
    Document(Document),
    /// A body that does not end: the live stream with this index, fed by the shard.
    Live {
        /// The stream's index.
        stream: usize,
        /// Content-Type.
        content_type: &'static str,
    },
    /// A status with a short text (a segment not held, a stream not ready yet).
    Status(Status),
    /// A push of a stream's bytes (`PUT`/`POST /push/{stream}`): the push sources decide
    /// whether it is taken ([`crate::source`]).
    Push {
        /// The stream named.
        stream: String,
    },
    /// Not yet (a low-latency playlist or part that does not exist yet): hold the request
    /// until stream `stream` publishes something new, then route it again; after `limit` it
    /// is answered 503 instead.
    Hold {
        /// The stream's index.
        stream: usize,
        /// How long it may be held, from when it first was.
        limit: std::time::Duration,
    },
    /// Not fetched yet: hold the request until the HLS proxy has fetched resource `key`
    /// (its answer comes with [`crate::session::ShardCommand::Fetched`]), then route it
    /// again; after half the idle timeout it is answered 504.
    Fetch {
        /// The resource's key ([`crate::proxy::paths::Resource::key`]).
        key: std::sync::Arc<str>,
    },
    /// Nothing at this path.
    NotFound,
}

/// A document and how it may be cached and asked for.
#[derive(Clone, Debug)]
pub struct Document {
    /// Content-Type.
    pub content_type: &'static str,
    /// The bytes.
    pub body: Body,
    /// Cache-Control (made private when the document is a gated stream's or the viewer's own).
    pub cache_control: &'static str,
    /// Entity tag, quoted: a request with a matching If-None-Match is answered 304.
    pub etag: Option<String>,
    /// Last-Modified, as an HTTP date.
    pub last_modified: Option<String>,
    /// Whether byte ranges are served (206, 416).
    pub ranges: bool,
    /// Made for this viewer alone (its token is in it): no shared cache may keep it.
    pub personal: bool,
}

impl Document {
    /// An empty `content_type` document with no validators, no ranges, for everyone.
    pub fn new(content_type: &'static str, cache_control: &'static str) -> Self {
        Self {
            content_type,
            body: Body::Bytes(Bytes::new()),
            cache_control,
            etag: None,
            last_modified: None,
            ranges: false,
            personal: false,
        }
    }
}

/// A document's bytes.
#[derive(Clone, Debug)]
pub enum Body {
    /// In shared memory.
    Bytes(Bytes),
    /// A sealed segment (in memory, or a memfd the backend sends with `sendfile`).
    Segment(Arc<Segment>),
}

impl Body {
    fn len(&self) -> usize {
        match self {
            Body::Bytes(b) => b.len(),
            Body::Segment(s) => s.len(),
        }
    }
}

/// A status answered with a short text.
#[derive(Clone, Debug)]
pub struct Status {
    /// The status code.
    pub code: u16,
    /// The body (plain text).
    pub text: std::borrow::Cow<'static, str>,
    /// Header lines to add (`Name: value\r\n`…).
    pub headers: std::borrow::Cow<'static, str>,
}

/// Reads what a request names and says what answers it, and whose request it is.
pub trait Router {
    /// Whether the request is a viewer's, of which session, and whether it may be answered
    /// (pages and errors are [`Gate::Open`]); and its answer.
    fn route(&self, head: &RequestHead) -> (Gate, Route);
}

/// What the router says of a request before it is answered.
#[derive(Clone, Debug)]
pub enum Gate {
    /// Not a viewer's request (pages, errors): no session.
    Open,
    /// A viewer's request, allowed: its session, and header lines to add to the response.
    Viewer {
        /// The session it belongs to.
        session: crate::session::SessionKey,
        /// Header lines (`Name: value\r\n`…) an access decision added.
        headers: Option<std::sync::Arc<str>>,
        /// Its media must not be kept by shared caches (a gated stream that did not opt in).
        private: bool,
    },
    /// Refused with this status (401, 403 or 503) and reason.
    Refused(u16, &'static str),
    /// The session has no access decision yet: hold the request and ask.
    Ask(crate::session::SessionKey),
    /// Play another stream: redirect (302) to this path (and query).
    Redirect(String),
}

/// What happened to a viewer when it was fed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Feed {
    /// Queued what there was.
    Ok,
    /// It had fallen behind: moved to the newest keyframe.
    Skipped,
    /// It kept falling behind: now closing.
    Closed,
}

/// One connection (see the module docs).
#[derive(Debug)]
pub struct Conn {
    state: ConnState,
    limits: ConnLimits,
    read_buf: Vec<u8>,
    out: VecDeque<Out>,
    out_bytes: usize,
    front_written: usize,
    /// Buffers at the head of `out` handed to the kernel by a completion-based backend and not
    /// yet reported back: a skip must not drop them.
    in_flight: usize,
    head_started_ns: Option<u64>,
    last_progress_ns: u64,
    /// For a viewer: the next chunk to queue; `None` until it has an access point to start at.
    next_seq: Option<u64>,
    skips: u32,
    skip_window_start_ns: u64,
    /// Accepted over a cap (the shard's, or its address's): its request is read and answered
    /// 503 with this reason.
    refusal: Option<&'static str>,
    /// The peer's address, when the backend knows it.
    peer: Option<std::net::IpAddr>,
    /// The session of the latest viewer request, for the core to take (with its User-Agent).
    new_session: Option<(crate::session::SessionKey, Option<String>)>,
    /// The shard's number for the session this connection's bytes count to.
    session: Option<usize>,
    /// Header lines added to the response being built (from an access decision).
    grant: Option<std::sync::Arc<str>>,
    /// The response being built is a gated stream's: no shared cache may keep it.
    private: bool,
    /// The request held while its session's access is decided.
    parked: Option<RequestHead>,
    /// The question to ask about it, for the core to take.
    new_ask: Option<crate::session::AccessQuery>,
    /// What became of a request held for a stream (for the core to take), and until when it
    /// is held.
    new_hold: Option<Held>,
    hold_until_ns: Option<u64>,
    /// Bytes ever queued and ever written (positions in the connection's output).
    queued_total: u64,
    written_total: u64,
    /// Where each queued response ends, as a `queued_total`; popped once written.
    response_ends: VecDeque<u64>,
    /// Since when the connection has had bytes queued without a break (the send rate is
    /// judged over this stretch), and how many it wrote in it.
    backlog_since_ns: Option<u64>,
    backlog_written: u64,
    /// The latest time the connection was told.
    clock_ns: u64,
    /// When it became a progressive viewer.
    streaming_since_ns: u64,
    /// The push request it hands over.
    push: Option<PushRequest>,
    /// It came over TLS.
    secure: bool,
}

impl Conn {
    /// A connection accepted at `now_ns`.
    pub fn new(limits: ConnLimits, now_ns: u64) -> Self {
        Self {
            state: ConnState::ReadingHead,
            limits,
            read_buf: Vec::new(),
            out: VecDeque::new(),
            out_bytes: 0,
            front_written: 0,
            in_flight: 0,
            head_started_ns: None,
            last_progress_ns: now_ns,
            next_seq: None,
            skips: 0,
            skip_window_start_ns: now_ns,
            refusal: None,
            peer: None,
            new_session: None,
            session: None,
            grant: None,
            private: false,
            parked: None,
            new_ask: None,
            new_hold: None,
            hold_until_ns: None,
            queued_total: 0,
            written_total: 0,
            response_ends: VecDeque::new(),
            backlog_since_ns: None,
            backlog_written: 0,
            clock_ns: now_ns,
            streaming_since_ns: now_ns,
            push: None,
            secure: false,
        }
    }

    /// Note the peer's address (requests carry it to the router, for trusted proxies).
    pub fn set_peer(&mut self, peer: Option<std::net::IpAddr>) {
        self.peer = peer;
    }

    /// The connection came over TLS: its requests say so (URLs the server writes for it are
    /// `https://`), and a push over it is refused (its socket cannot be handed over).
    pub fn set_secure(&mut self) {
        self.secure = true;
    }

    /// A request is under way (for TLS, the handshake before it): the header timeout runs
    /// from `now_ns` unless it already does.
    pub fn request_begun(&mut self, now_ns: u64) {
        if self.state == ConnState::ReadingHead {
            self.head_started_ns.get_or_insert(now_ns);
        }
    }

    /// Its transport made progress at `now_ns` (TLS ciphertext went out).
    pub fn progressed(&mut self, now_ns: u64) {
        self.last_progress_ns = self.last_progress_ns.max(now_ns);
    }

    /// How long it has made no progress at `now_ns`.
    pub fn idle_ns(&self, now_ns: u64) -> u64 {
        now_ns.saturating_sub(self.last_progress_ns)
    }

    /// Its transport failed or the peer closed it (a TLS alert or close_notify): nothing more
    /// is answered or sent; the connection is finished.
    pub fn abort(&mut self) {
        self.state = ConnState::Closing;
        self.out.clear();
        self.out_bytes = 0;
        self.front_written = 0;
        self.response_ends.clear();
        self.read_buf = Vec::new();
        self.parked = None;
        self.push = None;
    }

    /// A connection accepted over a cap: it reads the request (so closing does not reset the
    /// connection under the answer) and answers 503 with `why` and Retry-After.
    pub fn refusing(limits: ConnLimits, now_ns: u64, why: &'static str) -> Self {
        Self {
            refusal: Some(why),
            ..Self::new(limits, now_ns)
        }
    }

    /// When it became a progressive viewer (its clock, ns).
    pub fn streaming_since(&self) -> u64 {
        self.streaming_since_ns
    }

    /// The peer's address, when the backend gave it.
    pub fn peer(&self) -> Option<std::net::IpAddr> {
        self.peer
    }

    /// The session of the latest viewer request and its User-Agent, once.
    pub fn take_new_session(&mut self) -> Option<(crate::session::SessionKey, Option<String>)> {
        self.new_session.take()
    }

    /// The access question of a held request, once (its `shard` is for the core to fill).
    pub fn take_ask(&mut self) -> Option<crate::session::AccessQuery> {
        self.new_ask.take()
    }

    /// What became of a request held for a stream, once ([`Route::Hold`]).
    pub fn take_hold(&mut self) -> Option<Held> {
        self.new_hold.take()
    }

    /// Until when its request is held, if it is one held for a stream.
    pub fn held_until(&self) -> Option<u64> {
        match self.state {
            ConnState::Waiting => self.hold_until_ns,
            _ => None,
        }
    }

    /// The held request's session has its decision, or the stream it waits for published
    /// something: answer it (and any request pipelined after it). Returns the stream when it
    /// made the connection a viewer.
    pub fn resume(&mut self, now_ns: u64, router: &impl Router) -> Option<usize> {
        let head = self.parked.take()?;
        self.state = ConnState::ReadingHead;
        self.last_progress_ns = now_ns;
        self.clock_ns = now_ns;
        if let Some(stream) = self.answer(&head, router) {
            self.read_buf = Vec::new();
            return Some(stream);
        }
        if self.state == ConnState::ReadingHead && !self.read_buf.is_empty() {
            return self.on_read(&[], now_ns, router);
        }
        None
    }

    /// The shard's number of the session this connection's bytes count to.
    pub fn session(&self) -> Option<usize> {
        self.session
    }

    /// Count this connection's bytes to session `id` (the shard's number for it).
    pub fn set_session(&mut self, id: Option<usize>) {
        self.session = id;
    }

    fn response_head(
        &self,
        status: u16,
        content_type: &str,
        length: Option<usize>,
        keep_alive: bool,
        extra: &str,
    ) -> String {
        let grant = self.grant.as_deref().unwrap_or_default();
        let mut head = String::new();
        write_response_head(
            &mut head,
            status,
            content_type,
            length,
            keep_alive,
            &[extra, grant],
        );
        head
    }

    /// The state.
    pub fn state(&self) -> ConnState {
        self.state
    }

    /// Bytes received from the peer. Returns the stream the connection now streams, when a
    /// request made it a viewer.
    ///
    /// Requests are parsed only while the connection's queued responses are under
    /// [`ConnLimits::max_queued_bytes`] and [`ConnLimits::max_pipelined`]; the rest waits in
    /// the read buffer, and the backend stops reading ([`Conn::wants_read`]) until the
    /// responses drain ([`Conn::parse_pending`] then takes up where it stopped).
    pub fn on_read(&mut self, data: &[u8], now_ns: u64, router: &impl Router) -> Option<usize> {
        self.clock_ns = now_ns;
        if self.state == ConnState::Waiting {
            // Requests pipelined behind the held one, read in the same read: kept for after
            // the decision (the backend reads no more while it waits).
            if self.read_buf.len() + data.len() <= self.limits.max_head + READ_SLACK {
                self.read_buf.extend_from_slice(data);
            }
            return None;
        }
        if self.state != ConnState::ReadingHead {
            return None; // a viewer's further bytes are ignored; a closing one's too
        }
        if !data.is_empty() {
            self.last_progress_ns = now_ns;
        }
        self.read_buf.extend_from_slice(data);
        if self.read_buf.len() > self.limits.max_head + READ_SLACK {
            // The backend kept reading while responses were pending: never hold more.
            self.refuse(HttpError::HeadTooLarge {
                limit: self.limits.max_head,
            });
            return None;
        }
        while self.state == ConnState::ReadingHead
            && !self.read_buf.is_empty()
            && !self.output_full()
        {
            self.head_started_ns.get_or_insert(now_ns);
            match parse_head(&self.read_buf, self.limits.max_head) {
                Ok(None) => break,
                Ok(Some((mut head, len))) => {
                    head.peer = self.peer;
                    head.secure = self.secure;
                    self.read_buf.drain(..len);
                    self.head_started_ns = None;
                    self.hold_until_ns = None;
                    if let Some(stream) = self.answer(&head, router) {
                        self.read_buf = Vec::new();
                        return Some(stream);
                    }
                }
                Err(e) => self.refuse(e),
            }
        }
        None
    }

    /// Whether requests already read wait for the queued responses to drain, and could now
    /// be parsed ([`Conn::on_read`] with no new bytes).
    pub fn parse_pending(&self) -> bool {
        self.state == ConnState::ReadingHead && !self.read_buf.is_empty() && !self.output_full()
    }

    /// Whether the backend should read from the peer now: not while responses are over the
    /// bounds (the peer is pipelining without reading them) nor while a request is held.
    pub fn wants_read(&self) -> bool {
        match self.state {
            ConnState::ReadingHead => !self.output_full(),
            ConnState::Waiting | ConnState::HandingOver => false,
            ConnState::Streaming { .. } | ConnState::Closing => true,
        }
    }

    /// Whether it is a push whose queued responses are all sent.
    pub fn hands_over(&self) -> bool {
        self.state == ConnState::HandingOver && self.out.is_empty() && self.in_flight == 0
    }

    /// A push whose queued responses are all sent: its request, once; the backend then hands
    /// the socket over with it (and forgets the connection).
    pub fn take_push(&mut self) -> Option<PushRequest> {
        if !self.hands_over() {
            return None;
        }
        let mut push = self.push.take()?;
        push.early = std::mem::take(&mut self.read_buf);
        Some(push)
    }

    /// Whether the queued responses are at a bound (see [`ConnLimits::max_queued_bytes`]).
    fn output_full(&self) -> bool {
        self.response_ends.len() >= self.limits.max_pipelined
            || self.queued_bytes() >= self.limits.max_queued_bytes
    }

    fn answer(&mut self, head: &RequestHead, router: &impl Router) -> Option<usize> {
        if let Some(why) = self.refusal {
            let body = format!("{why}, try again later\n");
            self.respond(
                503,
                "text/plain",
                body.as_bytes(),
                false,
                "Retry-After: 5\r\n",
                head.method == Method::Head,
            );
            return None;
        }
        let keep = head.keep_alive;
        let (gate, route) = router.route(head);
        self.grant = None;
        self.private = false;
        match gate {
            Gate::Open => {}
            Gate::Refused(status, why) => {
                let body = format!("{why}\n");
                let extra = match status {
                    401 => "WWW-Authenticate: Bearer realm=\"shardcast\"\r\n",
                    429 => "Retry-After: 10\r\nCache-Control: no-store\r\n",
                    503 => "Retry-After: 2\r\nCache-Control: no-store\r\n",
                    _ => "Cache-Control: no-store\r\n",
                };
                self.respond(
                    status,
                    "text/plain; charset=utf-8",
                    body.as_bytes(),
                    keep,
                    extra,
                    head.method == Method::Head,
                );
                return None;
            }
            Gate::Redirect(location) => {
                let extra = format!("Location: {location}\r\nCache-Control: no-store\r\n");
                let body = format!("playing {location} instead\n");
                self.respond(
                    302,
                    "text/plain; charset=utf-8",
                    body.as_bytes(),
                    keep,
                    &extra,
                    head.method == Method::Head,
                );
                return None;
            }
            Gate::Viewer {
                session,
                headers,
                private,
            } => {
                self.new_session = Some((session, head.user_agent.clone()));
                self.grant = headers;
                self.private = private;
            }
            Gate::Ask(key) => {
                let url = if head.query.is_empty() {
                    head.path.clone()
                } else {
                    format!("{}?{}", head.path, head.query)
                };
                self.new_ask = Some(crate::session::AccessQuery {
                    key,
                    user_agent: head.user_agent.clone(),
                    url,
                    shard: 0,
                });
                self.parked = Some(head.clone());
                self.state = ConnState::Waiting;
                return None;
            }
        }
        let viewer = self.route_answer(head, route);
        self.grant = None;
        viewer
    }

    fn route_answer(&mut self, head: &RequestHead, route: Route) -> Option<usize> {
        let keep = head.keep_alive;
        match (head.method, route) {
            (m, Route::Push { .. }) if m.sends_body() && self.secure => self.respond(
                501,
                "text/plain",
                b"push over https is not supported: push to the plain HTTP listener\n",
                false,
                "",
                false,
            ),
            (m, Route::Push { stream }) if m.sends_body() => {
                self.push = Some(PushRequest {
                    head: head.clone(),
                    stream,
                    early: Vec::new(),
                });
                self.state = ConnState::HandingOver;
            }
            (_, Route::Push { .. }) => {
                self.respond(405, "text/plain", b"push with PUT or POST\n", keep, "Allow: PUT, POST\r\n", head.method == Method::Head)
            }
            // A body this server does not read: answered, then the connection closes.
            (m, _) if m.sends_body() => {
                self.respond(405, "text/plain", b"method not allowed\n", false, "Allow: GET, HEAD, OPTIONS\r\n", false)
            }
            (Method::Other, _) => {
                self.respond(405, "text/plain", b"method not allowed\n", keep, "Allow: GET, HEAD, OPTIONS\r\n", false)
            }
            (Method::Options, _) => self.respond(
                204,
                "",
                b"",
                keep,
                "Access-Control-Allow-Methods: GET, HEAD, OPTIONS\r\nAccess-Control-Allow-Headers: *\r\nAccess-Control-Max-Age: 86400\r\n",
                false,
            ),
            (m, Route::Live { stream, content_type }) => {
                let head = self.response_head(200, content_type, None, false, "Cache-Control: no-cache, no-store\r\n");
                self.queue(Out::Bytes(Bytes::from(head)));
                if m == Method::Head {
                    self.state = ConnState::Closing;
                    return None;
                }
                self.state = ConnState::Streaming { stream };
                self.streaming_since_ns = self.clock_ns;
                return Some(stream);
            }
            (m, Route::Hold { stream, limit }) => {
                // Never held past half the idle timeout (which would close it).
                let limit = (limit.as_nanos() as u64).min(self.limits.idle_timeout_ns / 2);
                let timed_out = (Held::TimedOut(stream), 503, &b"not available in time, ask again\n"[..]);
                self.hold(head, m, limit, |first| Held::Waiting { stream, first }, timed_out);
            }
            (m, Route::Fetch { key }) => {
                let limit = self.limits.idle_timeout_ns / 2;
                let timed_out = (Held::FetchTimedOut, 504, &b"the upstream did not answer in time\n"[..]);
                self.hold(head, m, limit, |first| Held::Fetching { key, first }, timed_out);
            }
            (m, Route::Document(document)) => self.answer_document(head, m == Method::Head, document),
            (m, Route::Status(status)) => {
                self.respond(status.code, "text/plain; charset=utf-8", status.text.as_bytes(), keep, &status.headers, m == Method::Head)
            }
            (m, Route::NotFound) => {
                let body = format!("no stream at {}\n", head.path);
                self.respond(404, "text/plain; charset=utf-8", body.as_bytes(), keep, "", m == Method::Head)
            }
        }
        None
    }

    /// Hold `head` (its method `m`) until `limit_ns` after it was first held (`waiting` says,
    /// for the core, what it waits for, and whether it was held before); past that, answer it
    /// with `timed_out`'s status and text (and tell the core).
    fn hold(
        &mut self,
        head: &RequestHead,
        m: Method,
        limit_ns: u64,
        waiting: impl FnOnce(bool) -> Held,
        timed_out: (Held, u16, &[u8]),
    ) {
        let first = self.hold_until_ns.is_none();
        let until = *self.hold_until_ns.get_or_insert(self.clock_ns + limit_ns);
        if self.clock_ns >= until {
            let (held, status, text) = timed_out;
            self.hold_until_ns = None;
            self.new_hold = Some(held);
            self.respond(
                status,
                "text/plain; charset=utf-8",
                text,
                head.keep_alive,
                "Cache-Control: no-store\r\n",
                m == Method::Head,
            );
        } else {
            self.parked = Some(head.clone());
            self.state = ConnState::Waiting;
            self.new_hold = Some(waiting(first));
        }
    }

    /// `document` with its validators (304 when the request's If-None-Match matches) and, when
    /// it serves them, the range asked for (206, or 416 when out of it).
    fn answer_document(&mut self, head: &RequestHead, head_only: bool, document: Document) {
        let keep = head.keep_alive;
        // The document's own header lines, in one buffer (this runs for every segment and
        // playlist request).
        let mut extra = String::with_capacity(128);
        extra.push_str("Cache-Control: ");
        if document.personal || self.private {
            extra.push_str(&private_cache_control(document.cache_control));
        } else {
            extra.push_str(document.cache_control);
        }
        extra.push_str("\r\n");
        if let Some(etag) = &document.etag {
            extra.push_str("ETag: ");
            extra.push_str(etag);
            extra.push_str("\r\n");
        }
        if let Some(date) = &document.last_modified {
            extra.push_str("Last-Modified: ");
            extra.push_str(date);
            extra.push_str("\r\n");
        }
        if document.ranges {
            extra.push_str("Accept-Ranges: bytes\r\n");
        }
        if document.etag.is_some() && head.if_none_match == document.etag {
            self.respond(304, "", b"", keep, &extra, true);
            return;
        }
        let len = document.body.len();
        let (status, start, end) = if document.ranges {
            match byte_range(head.range.as_deref(), len) {
                ByteRange::Full => (200, 0, len),
                ByteRange::Part { start, end } => {
                    extra.push_str(&format!(
                        "Content-Range: bytes {start}-{}/{len}\r\n",
                        end - 1
                    ));
                    (206, start, end)
                }
                ByteRange::Unsatisfiable => {
                    extra.push_str(&format!("Content-Range: bytes */{len}\r\n"));
                    self.respond(
                        416,
                        "text/plain; charset=utf-8",
                        b"range not satisfiable\n",
                        keep,
                        &extra,
                        head_only,
                    );
                    return;
                }
            }
        } else {
            (200, 0, len)
        };
        let head_bytes = self.response_head(
            status,
            document.content_type,
            Some(end - start),
            keep,
            &extra,
        );
        self.queue(Out::Bytes(Bytes::from(head_bytes)));
        if !head_only && end > start {
            match document.body {
                Body::Bytes(b) => self.queue(Out::Bytes(b.slice(start..end))),
                Body::Segment(segment) => match &segment.body {
                    crate::hls::SegmentBody::Memory(b) => {
                        self.queue(Out::Bytes(b.slice(start..end)))
                    }
                    crate::hls::SegmentBody::File { .. } => self.queue(Out::File {
                        segment: segment.clone(),
                        start,
                        end,
                    }),
                },
            }
        }
        self.end_response();
        if !keep {
            self.state = ConnState::Closing;
        }
    }

    fn respond(
        &mut self,
        status: u16,
        content_type: &str,
        body: &[u8],
        keep_alive: bool,
        extra: &str,
        head_only: bool,
    ) {
        let length = (status != 304).then_some(body.len());
        let head = self.response_head(status, content_type, length, keep_alive, extra);
        self.queue(Out::Bytes(Bytes::from(head)));
        if !head_only && !body.is_empty() {
            self.queue(Out::Bytes(Bytes::copy_from_slice(body)));
        }
        self.end_response();
        if !keep_alive {
            self.state = ConnState::Closing;
        }
    }

    fn refuse(&mut self, e: HttpError) {
        let body = format!("{e}\n");
        self.respond(
            e.status(),
            "text/plain; charset=utf-8",
            body.as_bytes(),
            false,
            "",
            false,
        );
        self.read_buf = Vec::new();
    }

    fn queue(&mut self, b: Out) {
        if self.out.is_empty() {
            self.backlog_since_ns = Some(self.clock_ns);
            self.backlog_written = 0;
        }
        self.out_bytes += b.len();
        self.queued_total += b.len() as u64;
        self.out.push_back(b);
    }

    /// The response just queued is complete (progressive bodies never are).
    fn end_response(&mut self) {
        self.response_ends.push_back(self.queued_total);
    }

    /// Queue what `view` holds past this viewer's position, handling lag; `batch`, when the
    /// viewer is at its first chunk, goes as one buffer in place of its chunks.
    pub fn feed(&mut self, view: &StreamView, batch: Option<&Batch>, now_ns: u64) -> Feed {
        self.clock_ns = now_ns;
        if !matches!(self.state, ConnState::Streaming { .. }) {
            return Feed::Ok;
        }
        let next_held = self
            .next_seq
            .map(|seq| view.get(seq).is_some() || seq == view.next_seq());
        let mut outcome = Feed::Ok;
        let behind = self.out_bytes > self.limits.max_lag_bytes || next_held == Some(false);
        if behind {
            if now_ns.saturating_sub(self.skip_window_start_ns) > self.limits.skip_window_ns {
                self.skip_window_start_ns = now_ns;
                self.skips = 0;
            }
            self.skips += 1;
            if self.skips > self.limits.max_skips {
                self.state = ConnState::Closing;
                self.drop_unstarted();
                return Feed::Closed;
            }
            self.drop_unstarted();
            self.next_seq = None;
            outcome = Feed::Skipped;
        }
        if self.next_seq.is_none() {
            self.next_seq = view.start_point();
        }
        if let Some(b) = batch.filter(|b| self.next_seq == Some(b.first)) {
            self.queue(Out::Bytes(b.data.clone()));
            self.next_seq = Some(b.next);
        }
        while let Some(seq) = self.next_seq {
            let Some(chunk) = view.get(seq) else { break };
            let data = chunk.data.clone();
            self.queue(Out::Bytes(data));
            self.next_seq = Some(seq + 1);
        }
        outcome
    }

    /// Drop queued buffers that have not started to go out (the one being written stays, so
    /// the viewer never gets half a packet).
    fn drop_unstarted(&mut self) {
        let keep = self.in_flight.max(usize::from(self.front_written > 0));
        while self.out.len() > keep {
            if let Some(b) = self.out.pop_back() {
                self.out_bytes -= b.len();
                self.queued_total -= b.len() as u64;
            }
        }
    }

    /// Whether bytes are waiting to be written.
    pub fn wants_write(&self) -> bool {
        !self.out.is_empty()
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.out_bytes - self.front_written
    }

    /// Fill `slices` with the memory buffers to write next (up to the first file range, see
    /// [`Conn::front_file`]); returns how many were filled.
    pub fn write_slices<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (i, b) in self.out.iter().enumerate() {
            let Out::Bytes(b) = b else { break };
            let Some(slot) = slices.get_mut(n) else { break };
            let start = if i == 0 { self.front_written } else { 0 };
            *slot = IoSlice::new(&b[start..]);
            n += 1;
        }
        n
    }

    /// Fill `out` with what is queued, in order, as memory (a segment's memfd mapped), for what
    /// cannot `sendfile` (TLS); returns how many were filled. Stops before a segment whose
    /// memfd cannot be mapped (0 when it is the first).
    pub fn queued_slices<'a>(&'a self, out: &mut [&'a [u8]]) -> usize {
        let mut n = 0;
        for (i, b) in self.out.iter().enumerate() {
            let Some(slot) = out.get_mut(n) else { break };
            let skip = if i == 0 { self.front_written } else { 0 };
            let bytes: &[u8] = match b {
                Out::Bytes(b) => b,
                Out::File {
                    segment,
                    start,
                    end,
                } => match segment.bytes() {
                    Some(all) => &all[*start..*end],
                    None => break,
                },
            };
            *slot = &bytes[skip..];
            n += 1;
        }
        n
    }

    /// Whether a range of a segment's memfd follows the memory buffers at the front (a
    /// response's head before its body): those buffers are best sent with `MSG_MORE`, so the
    /// head goes out in the body's first packet rather than in one of its own.
    pub fn file_follows(&self) -> bool {
        matches!(self.out.front(), Some(Out::Bytes(_)))
            && self
                .out
                .iter()
                .any(|b| matches!(b, Out::File { segment, .. } if segment.file().is_some()))
    }

    /// When the next thing to send is a range of a segment's memfd: the memfd, the offset and
    /// the length to send from it.
    pub fn front_file(&self) -> Option<(BorrowedFd<'_>, u64, usize)> {
        match self.out.front()? {
            Out::File {
                segment,
                start,
                end,
            } => {
                let fd = segment.file()?;
                let from = start + self.front_written;
                Some((fd, from as u64, end - from))
            }
            Out::Bytes(_) => None,
        }
    }

    /// For a completion-based backend: the next memory buffers to send (at most `max`, the
    /// first one past what is already written, up to the first file range), as shared handles
    /// the backend keeps until the send completes. Nothing may be begun again before
    /// [`Conn::wrote`] reports the result.
    pub fn begin_write(&mut self, max: usize, out: &mut Vec<Bytes>) {
        out.clear();
        for (i, b) in self.out.iter().take(max).enumerate() {
            let Out::Bytes(b) = b else { break };
            out.push(if i == 0 {
                b.slice(self.front_written..)
            } else {
                b.clone()
            });
        }
        self.in_flight = out.len();
    }

    /// `written` bytes went out at `now_ns` (for a completion-based backend, this ends the
    /// send begun by [`Conn::begin_write`]).
    pub fn wrote(&mut self, written: usize, now_ns: u64) {
        self.in_flight = 0;
        self.clock_ns = self.clock_ns.max(now_ns);
        if written > 0 {
            self.last_progress_ns = now_ns;
        }
        self.written_total += written as u64;
        self.backlog_written += written as u64;
        while self
            .response_ends
            .front()
            .is_some_and(|end| *end <= self.written_total)
        {
            self.response_ends.pop_front();
        }
        let mut written = written;
        while written > 0 {
            let Some(front) = self.out.front() else { break };
            let left = front.len() - self.front_written;
            if written >= left {
                written -= left;
                self.out_bytes -= front.len();
                self.front_written = 0;
                self.out.pop_front();
            } else {
                self.front_written += written;
                written = 0;
            }
        }
        if self.out.is_empty() {
            self.backlog_since_ns = None;
        } else if let Some(since) = self.backlog_since_ns {
            // A period kept up with: judge the next one afresh.
            let elapsed = now_ns.saturating_sub(since);
            if elapsed >= RATE_PERIOD_NS && !self.too_slow(now_ns) {
                self.backlog_since_ns = Some(now_ns);
                self.backlog_written = 0;
            }
        }
    }

    /// Whether the connection has had bytes queued for a whole rate period and took them
    /// slower than [`ConnLimits::min_send_rate`].
    fn too_slow(&self, now_ns: u64) -> bool {
        let Some(since) = self.backlog_since_ns else {
            return false;
        };
        let elapsed = now_ns.saturating_sub(since);
        self.limits.min_send_rate > 0
            && elapsed >= RATE_PERIOD_NS
            && u128::from(self.backlog_written) * 1_000_000_000
                < u128::from(self.limits.min_send_rate) * u128::from(elapsed)
    }

    /// The stream this connection plays has ended (removed or restarted): what is queued
    /// still goes out, then the connection closes, so the player sees the end of the body.
    pub fn end_stream(&mut self) {
        if matches!(self.state, ConnState::Streaming { .. }) {
            self.state = ConnState::Closing;
        }
    }

    /// Whether the connection is done: closing with nothing left to write.
    pub fn finished(&self) -> bool {
        self.state == ConnState::Closing && self.out.is_empty()
    }

    /// Whether a timeout has expired at `now_ns` (the caller then closes the connection): a
    /// request head that takes too long, a connection idle too long, or one with bytes queued
    /// that makes no progress or takes them slower than the minimum rate.
    pub fn timed_out(&self, now_ns: u64) -> bool {
        let idle = now_ns.saturating_sub(self.last_progress_ns);
        if self.wants_write() && (idle > self.limits.idle_timeout_ns || self.too_slow(now_ns)) {
            return true;
        }
        match self.state {
            ConnState::ReadingHead => match self.head_started_ns {
                Some(start) => now_ns.saturating_sub(start) > self.limits.header_timeout_ns,
                None => !self.wants_write() && idle > self.limits.idle_timeout_ns,
            },
            ConnState::Streaming { .. } | ConnState::Closing => false,
            // Handed over as soon as its responses are sent; only a peer that reads none of
            // them stays (and the write timeouts above end it).
            ConnState::HandingOver => idle > self.limits.idle_timeout_ns,
            // The control plane always answers (its checks have timeouts); this only ends a
            // wait whose answer was lost.
            ConnState::Waiting => idle > self.limits.idle_timeout_ns,
        }
    }
}

#[cfg(test)]
mod tests;
