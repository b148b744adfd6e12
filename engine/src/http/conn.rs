//! The state machine of one viewer connection (no I/O: the backend reads and writes).
//!
//! ```text
//!  ReadingHead ──GET /{stream}.ts──► Streaming ──lag, timeout, error──► Closing
//!      │ ▲  other requests answered in order (keep-alive, pipelining-safe)
//!      └─┘
//! ```

use super::{parse_head, response_head, HttpError, Method, RequestHead};
use crate::stream::StreamView;
use bytes::Bytes;
use std::collections::VecDeque;
use std::io::IoSlice;

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
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            max_head: 8 * 1024,
            header_timeout_ns: 10_000_000_000,
            idle_timeout_ns: 30_000_000_000,
            max_lag_bytes: 4 << 20,
            max_skips: 3,
            skip_window_ns: 60_000_000_000,
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
}

/// What a request path names.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Route {
    /// `/{stream}.ts`: the progressive stream with this index.
    Stream(usize),
    /// `/`: the list of streams.
    Index,
    /// Nothing.
    NotFound,
}

/// Maps paths to streams.
pub trait Router {
    /// What `path` names.
    fn route(&self, path: &str) -> Route;
    /// The text of the index page.
    fn index(&self) -> String;
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
    out: VecDeque<Bytes>,
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
    /// Accepted over the shard's cap: its request is read and answered with 503.
    overloaded: bool,
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
            overloaded: false,
        }
    }

    /// A connection accepted over the shard's cap: it reads the request (so closing does not
    /// reset the connection under the answer) and answers 503 with Retry-After.
    pub fn overloaded(limits: ConnLimits, now_ns: u64) -> Self {
        Self {
            overloaded: true,
            ..Self::new(limits, now_ns)
        }
    }

    /// The state.
    pub fn state(&self) -> ConnState {
        self.state
    }

    /// Bytes received from the peer. Returns the stream the connection now streams, when a
    /// request made it a viewer.
    pub fn on_read(&mut self, data: &[u8], now_ns: u64, router: &impl Router) -> Option<usize> {
        if self.state != ConnState::ReadingHead {
            return None; // a viewer's further bytes are ignored; a closing one's too
        }
        self.last_progress_ns = now_ns;
        self.read_buf.extend_from_slice(data);
        while self.state == ConnState::ReadingHead && !self.read_buf.is_empty() {
            self.head_started_ns.get_or_insert(now_ns);
            match parse_head(&self.read_buf, self.limits.max_head) {
                Ok(None) => break,
                Ok(Some((head, len))) => {
                    self.read_buf.drain(..len);
                    self.head_started_ns = None;
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

    fn answer(&mut self, head: &RequestHead, router: &impl Router) -> Option<usize> {
        if self.overloaded {
            let body = b"server full, try again later\n";
            self.respond(
                503,
                "text/plain",
                body,
                false,
                "Retry-After: 5\r\n",
                head.method == Method::Head,
            );
            return None;
        }
        let keep = head.keep_alive;
        let route = router.route(&head.path);
        match (head.method, route) {
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
            (m, Route::Stream(stream)) => {
                let head = response_head(200, "video/mp2t", None, false, "Cache-Control: no-cache, no-store\r\n");
                self.queue(Bytes::from(head));
                if m == Method::Head {
                    self.state = ConnState::Closing;
                    return None;
                }
                self.state = ConnState::Streaming { stream };
                return Some(stream);
            }
            (m, Route::Index) => {
                let body = router.index();
                self.respond(200, "text/plain; charset=utf-8", body.as_bytes(), keep, "Cache-Control: no-cache\r\n", m == Method::Head)
            }
            (m, Route::NotFound) => {
                let body = format!("no stream at {}\n", head.path);
                self.respond(404, "text/plain; charset=utf-8", body.as_bytes(), keep, "", m == Method::Head)
            }
        }
        None
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
        let head = response_head(status, content_type, Some(body.len()), keep_alive, extra);
        self.queue(Bytes::from(head));
        if !head_only && !body.is_empty() {
            self.queue(Bytes::copy_from_slice(body));
        }
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

    fn queue(&mut self, b: Bytes) {
        self.out_bytes += b.len();
        self.out.push_back(b);
    }

    /// Queue what `view` holds past this viewer's position, handling lag.
    pub fn feed(&mut self, view: &StreamView, now_ns: u64) -> Feed {
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
            self.next_seq = view.newest_access_point();
        }
        while let Some(seq) = self.next_seq {
            let Some(chunk) = view.get(seq) else { break };
            let data = chunk.data.clone();
            self.queue(data);
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

    /// Fill `slices` with what to write next; returns how many were filled.
    pub fn write_slices<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (i, b) in self.out.iter().enumerate() {
            let Some(slot) = slices.get_mut(n) else { break };
            let start = if i == 0 { self.front_written } else { 0 };
            *slot = IoSlice::new(&b[start..]);
            n += 1;
        }
        n
    }

    /// For a completion-based backend: the next buffers to send (at most `max`, the first one
    /// past what is already written), as shared handles the backend keeps until the send
    /// completes. Nothing may be begun again before [`Conn::wrote`] reports the result.
    pub fn begin_write(&mut self, max: usize, out: &mut Vec<Bytes>) {
        out.clear();
        for (i, b) in self.out.iter().take(max).enumerate() {
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
    pub fn wrote(&mut self, mut written: usize, now_ns: u64) {
        self.in_flight = 0;
        if written > 0 {
            self.last_progress_ns = now_ns;
        }
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
    }

    /// Whether the connection is done: closing with nothing left to write.
    pub fn finished(&self) -> bool {
        self.state == ConnState::Closing && self.out.is_empty()
    }

    /// Whether a timeout has expired at `now_ns` (the caller then closes the connection).
    pub fn timed_out(&self, now_ns: u64) -> bool {
        let idle = now_ns.saturating_sub(self.last_progress_ns);
        match self.state {
            ConnState::ReadingHead => match self.head_started_ns {
                Some(start) => now_ns.saturating_sub(start) > self.limits.header_timeout_ns,
                None => idle > self.limits.idle_timeout_ns,
            },
            ConnState::Streaming { .. } | ConnState::Closing => {
                self.wants_write() && idle > self.limits.idle_timeout_ns
            }
        }
    }
}

#[cfg(test)]
mod tests;
