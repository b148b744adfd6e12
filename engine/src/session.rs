//! Viewer sessions as the shards see them, and the links between the shards and the control
//! plane that carry them.
//!
//! A session is keyed the way MistServer keys them: stream, viewer address, access token and
//! protocol. One HLS player is one session across its many requests and connections (and
//! across shards: each shard reports what it saw, the control plane adds them up). Shards
//! keep a small table of the sessions they serve ([`LocalSessions`]) and report activity
//! about once a second through a bounded lock-free queue; the control plane keeps the
//! sessions themselves, ends them after a quiet period, writes the access log, and sends
//! commands back (stop a session) through one queue per shard and its waker.
//!
//! What it does not do: decide who may watch (the access module), or any I/O.

use crate::wake::Wake;
use crossbeam_queue::ArrayQueue;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a session watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// Progressive MPEG-TS over HTTP (`/{stream}.ts`): one long connection.
    HttpTs,
    /// HLS: playlists and segments, many requests.
    Hls,
}

impl Protocol {
    /// The name in the API, the metrics and the access log.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::HttpTs => "http_ts",
            Protocol::Hls => "hls",
        }
    }

    /// The connector name MistServer's triggers use for it.
    pub fn connector(self) -> &'static str {
        match self {
            Protocol::HttpTs => "HTTPTS",
            Protocol::Hls => "HLS",
        }
    }
}

/// What a session is known by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SessionKey {
    /// The stream watched.
    pub stream: Arc<str>,
    /// The viewer's address (from a trusted proxy's header, else the peer).
    pub ip: Option<IpAddr>,
    /// The access token presented; empty when none.
    pub token: Arc<str>,
    /// How it watches.
    pub protocol: Protocol,
}

impl SessionKey {
    /// A short stable identifier (hex), the same on every shard and across restarts.
    pub fn id(&self) -> String {
        // FNV-1a over the fields: stable, unlike the standard hasher's keys.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
            h ^= 0xff;
            h = h.wrapping_mul(0x0100_0000_01b3);
        };
        eat(self.stream.as_bytes());
        eat(self
            .ip
            .map(|ip| ip.to_string())
            .unwrap_or_default()
            .as_bytes());
        eat(self.token.as_bytes());
        eat(self.protocol.name().as_bytes());
        format!("{h:016x}")
    }
}

/// What one shard saw of one session since its last report.
#[derive(Clone, Debug)]
pub struct SessionReport {
    /// The session.
    pub key: SessionKey,
    /// Bytes sent.
    pub bytes: u64,
    /// Requests answered.
    pub requests: u64,
    /// Progressive connections opened minus closed.
    pub opened: i64,
    /// The User-Agent, in the first report of the session from this shard.
    pub user_agent: Option<String>,
}

/// What the control plane asks of a shard.
#[derive(Clone, Debug)]
pub enum ShardCommand {
    /// Close the session's connections and refuse its requests (403) for this long.
    Stop(SessionKey, Duration),
    /// The access decision for a session the shard asked about.
    Verdict(SessionKey, Verdict),
    /// What the HLS proxy fetched (or failed to) for a resource the shard asked for.
    Fetched(Arc<str>, Arc<crate::proxy::cache::Object>),
}

/// Whether a session may watch, for how long the answer holds, and what its responses carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// `None`: allowed; otherwise the status refused requests get (401, 403 or 503).
    pub refused: Option<u16>,
    /// Header lines (`Name: value\r\n`…) added to the session's responses.
    pub headers: Option<Arc<str>>,
    /// How long the shard keeps the answer.
    pub ttl: Duration,
    /// Play this stream instead (`DEFAULT_STREAM`, `PLAY_REWRITE`): the viewer is redirected.
    pub redirect: Option<Arc<str>>,
}

/// A shard's question about a session it has no decision for.
#[derive(Clone, Debug)]
pub struct AccessQuery {
    /// The session.
    pub key: SessionKey,
    /// Its User-Agent.
    pub user_agent: Option<String>,
    /// The request's path and query.
    pub url: String,
    /// The shard that asks (and holds the request until the answer).
    pub shard: usize,
}

/// Questions a shard may have outstanding before new ones are refused (503).
pub const ASK_QUEUE: usize = 4096;

/// Reports a shard may have queued before they are dropped (and counted).
pub const REPORT_QUEUE: usize = 65_536;
/// Commands queued for a shard.
pub const COMMAND_QUEUE: usize = 4096;
/// Proxy fetches a shard may have asked for and not had answered (past it: 503).
pub const FETCH_QUEUE: usize = 1024;

/// One shard's ends of the links with the control plane.
#[derive(Debug, Clone)]
pub struct ShardLink {
    /// Session reports to the control plane.
    pub reports: Arc<ArrayQueue<SessionReport>>,
    /// Access questions to the control plane.
    pub asks: Arc<ArrayQueue<AccessQuery>>,
    /// Wakes the control plane's access task (shared by every shard).
    pub asked: Arc<tokio::sync::Notify>,
    /// Commands from the control plane.
    pub commands: Arc<ArrayQueue<ShardCommand>>,
    /// Wakes the control plane's session collector when reports were queued (shared by
    /// every shard).
    pub reported: Arc<tokio::sync::Notify>,
    /// Inputs that failed (stream, why), for `INPUT_ABORT`.
    pub aborted: Arc<ArrayQueue<(String, String)>>,
    /// Wakes the control plane's stream watcher: an input failed, or a stream sealed a
    /// segment (shared by every shard, and by the stream table).
    pub news: Arc<tokio::sync::Notify>,
    /// Resources the HLS proxy is asked to fetch (their keys).
    pub fetches: Arc<ArrayQueue<Arc<str>>>,
    /// Wakes the proxy's fetcher (shared by every shard).
    pub fetch_asked: Arc<tokio::sync::Notify>,
}

impl ShardLink {
    /// New queues, waking the access task through `asked`.
    pub fn with(asked: Arc<tokio::sync::Notify>) -> Self {
        Self {
            reports: Arc::new(ArrayQueue::new(REPORT_QUEUE)),
            asks: Arc::new(ArrayQueue::new(ASK_QUEUE)),
            asked,
            commands: Arc::new(ArrayQueue::new(COMMAND_QUEUE)),
            reported: Arc::new(tokio::sync::Notify::new()),
            aborted: Arc::new(ArrayQueue::new(256)),
            news: Arc::new(tokio::sync::Notify::new()),
            fetches: Arc::new(ArrayQueue::new(FETCH_QUEUE)),
            fetch_asked: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// New queues with a notifier of their own.
    pub fn new() -> Self {
        Self::with(Arc::new(tokio::sync::Notify::new()))
    }
}

impl Default for ShardLink {
    fn default() -> Self {
        Self::new()
    }
}

/// The control plane's ends: every shard's queues and waker.
#[derive(Debug, Clone)]
pub struct Links {
    /// By shard number.
    pub shards: Vec<ShardLink>,
    /// By shard number.
    pub wakers: Vec<Arc<dyn Wake>>,
}

impl Links {
    /// Send `command` to shard `shard` and wake it.
    pub fn send(&self, shard: usize, command: ShardCommand) {
        if let (Some(link), Some(waker)) = (self.shards.get(shard), self.wakers.get(shard)) {
            if link.commands.push(command).is_err() {
                tracing::warn!(
                    shard,
                    "the shard's command queue is full: a command was dropped"
                );
            }
            waker.wake();
        }
    }

    /// Send `command` to every shard and wake them.
    pub fn broadcast(&self, command: &ShardCommand) {
        for (link, waker) in self.shards.iter().zip(&self.wakers) {
            let _ = link.commands.push(command.clone());
            waker.wake();
        }
    }
}

/// One session as a shard sees it.
#[derive(Debug)]
struct Local {
    key: SessionKey,
    bytes: u64,
    requests: u64,
    opened: i64,
    /// Progressive connections open here now.
    open: u32,
    user_agent: Option<String>,
    user_agent_sent: bool,
    last: Instant,
}

/// The sessions a shard serves, their unreported activity, and the stopped ones it refuses.
///
/// Bounded: at most `max` sessions, `max_per_stream` of one stream. At a bound the quieter
/// half of the sessions with no open connection is forgotten here in one pass (the control
/// plane keeps them; a session forgotten here comes back with its next request), so a flood
/// of new sessions pushes out the flood's own, not the viewers who keep requesting. A new
/// session is refused (503) only when every one held has a connection open.
#[derive(Debug)]
pub struct LocalSessions {
    index: HashMap<SessionKey, usize>,
    table: slab::Slab<Local>,
    /// Sessions held, by stream.
    per_stream: HashMap<Arc<str>, usize>,
    /// Sessions held with no progressive connection open.
    quiet: usize,
    max: usize,
    max_per_stream: usize,
    stopped: HashMap<SessionKey, Instant>,
    /// Access decisions, until they expire.
    verdicts: HashMap<SessionKey, (Verdict, Instant)>,
    /// Reports dropped because the control plane's queue was full.
    pub dropped_reports: u64,
    /// Sessions forgotten early to stay within the bounds.
    pub evicted: u64,
    /// A decision the table had no room for, for the requests held for it.
    once: Option<(SessionKey, Verdict)>,
}

/// A shard forgets a session it has no connection of after this long without a request.
const FORGET_AFTER: Duration = Duration::from_secs(120);

impl LocalSessions {
    /// A table of at most `max` sessions, `max_per_stream` of one stream.
    pub fn new(max: usize, max_per_stream: usize) -> Self {
        Self {
            index: HashMap::new(),
            table: slab::Slab::new(),
            per_stream: HashMap::new(),
            quiet: 0,
            max: max.max(1),
            max_per_stream: max_per_stream.max(1),
            stopped: HashMap::new(),
            verdicts: HashMap::new(),
            dropped_reports: 0,
            evicted: 0,
            once: None,
        }
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Whether a request of session `key` can be counted: it is held, or there is room, or
    /// room can be made (some session has no connection open).
    pub fn admits(&self, key: &SessionKey) -> bool {
        self.index.contains_key(key)
            || self.quiet > 0
            || (self.table.len() < self.max
                && self.per_stream.get(&key.stream).copied().unwrap_or(0) < self.max_per_stream)
    }

    /// A request of session `key`; returns its local number, or `None` when the session
    /// cannot be held (every one held has a connection open, see [`LocalSessions::admits`]).
    pub fn touch(
        &mut self,
        key: SessionKey,
        user_agent: Option<&str>,
        now: Instant,
    ) -> Option<usize> {
        let id = match self.index.get(&key) {
            Some(&id) => id,
            None => {
                let of_stream = self.per_stream.get(&key.stream).copied().unwrap_or(0);
                if self.table.len() >= self.max {
                    self.evict(None);
                } else if of_stream >= self.max_per_stream {
                    self.evict(Some(&key.stream));
                }
                let of_stream = self.per_stream.get(&key.stream).copied().unwrap_or(0);
                if self.table.len() >= self.max || of_stream >= self.max_per_stream {
                    return None;
                }
                *self.per_stream.entry(key.stream.clone()).or_default() += 1;
                self.quiet += 1;
                let id = self.table.insert(Local {
                    key: key.clone(),
                    bytes: 0,
                    requests: 0,
                    opened: 0,
                    open: 0,
                    user_agent: user_agent.map(str::to_owned),
                    user_agent_sent: false,
                    last: now,
                });
                self.index.insert(key, id);
                id
            }
        };
        if let Some(s) = self.table.get_mut(id) {
            s.requests += 1;
            s.last = now;
        }
        Some(id)
    }

    /// Forget the quieter half of the sessions (of `stream`, when given) that have no
    /// connection open; what they had not reported yet is lost (counted as dropped reports).
    fn evict(&mut self, stream: Option<&Arc<str>>) {
        let mut quiet: Vec<(Instant, usize)> = self
            .table
            .iter()
            .filter(|(_, s)| s.open == 0 && stream.is_none_or(|n| s.key.stream == *n))
            .map(|(id, s)| (s.last, id))
            .collect();
        if quiet.is_empty() {
            return;
        }
        let half = quiet.len().div_ceil(2);
        quiet.select_nth_unstable(half - 1);
        for &(_, id) in &quiet[..half] {
            if let Some(s) = self.table.get(id) {
                if s.bytes > 0 || s.requests > 0 || s.opened != 0 {
                    self.dropped_reports += 1;
                }
            }
            self.forget(id);
            self.evicted += 1;
        }
    }

    fn forget(&mut self, id: usize) {
        let Some(s) = self.table.try_remove(id) else {
            return;
        };
        self.index.remove(&s.key);
        if s.open == 0 {
            self.quiet -= 1;
        }
        if let Some(n) = self.per_stream.get_mut(&s.key.stream) {
            *n -= 1;
            if *n == 0 {
                self.per_stream.remove(&s.key.stream);
            }
        }
    }

    /// Whether `key` was stopped and is still refused at `now`.
    pub fn is_stopped(&self, key: &SessionKey, now: Instant) -> bool {
        !self.stopped.is_empty() && self.stopped.get(key).is_some_and(|u| *u > now)
    }

    /// The access decision for `key`, if it holds at `now`.
    pub fn verdict(&self, key: &SessionKey, now: Instant) -> Option<&Verdict> {
        if let Some((once, verdict)) = &self.once {
            if once == key {
                return Some(verdict);
            }
        }
        self.verdicts
            .get(key)
            .filter(|(_, until)| *until > now)
            .map(|(v, _)| v)
    }

    /// A decision that could not be kept has answered what it was for.
    pub fn used_once(&mut self) {
        self.once = None;
    }

    /// Keep `verdict` for `key` for its time to live (within the bound on sessions: when
    /// every decision held is still valid, a new one is not kept, and the request it answers
    /// is the only one it answers).
    pub fn decided(&mut self, key: SessionKey, verdict: Verdict, now: Instant) {
        if self.verdicts.len() >= self.max && !self.verdicts.contains_key(&key) {
            self.verdicts.retain(|_, (_, until)| *until > now);
            if self.verdicts.len() >= self.max {
                self.once = Some((key, verdict));
                return;
            }
        }
        let until = now + verdict.ttl;
        self.verdicts.insert(key, (verdict, until));
    }

    /// Refuse `key` for `how_long` from `now`; returns its local number, if it has one.
    pub fn stop(&mut self, key: SessionKey, how_long: Duration, now: Instant) -> Option<usize> {
        let id = self.index.get(&key).copied();
        self.stopped.insert(key, now + how_long);
        id
    }

    /// `n` bytes went to session `id`.
    pub fn sent(&mut self, id: usize, n: u64) {
        if let Some(s) = self.table.get_mut(id) {
            s.bytes += n;
        }
    }

    /// A progressive connection of session `id` opened (`true`) or closed, at `now`.
    pub fn connection(&mut self, id: usize, opened: bool, now: Instant) {
        if let Some(s) = self.table.get_mut(id) {
            let was_quiet = s.open == 0;
            if opened {
                s.open += 1;
                s.opened += 1;
            } else {
                s.open = s.open.saturating_sub(1);
                s.opened -= 1;
            }
            s.last = now;
            match (was_quiet, s.open == 0) {
                (true, false) => self.quiet -= 1,
                (false, true) => self.quiet += 1,
                _ => {}
            }
        }
    }

    /// Push what happened since the last report to `queue`, and forget sessions long quiet;
    /// returns how many reports were queued.
    pub fn report(&mut self, queue: &ArrayQueue<SessionReport>, now: Instant) -> usize {
        let mut queued = 0;
        let mut forget = Vec::new();
        for (id, s) in self.table.iter_mut() {
            if s.bytes > 0 || s.requests > 0 || s.opened != 0 {
                let report = SessionReport {
                    key: s.key.clone(),
                    bytes: s.bytes,
                    requests: s.requests,
                    opened: s.opened,
                    user_agent: if s.user_agent_sent {
                        None
                    } else {
                        s.user_agent.clone()
                    },
                };
                if queue.push(report).is_ok() {
                    queued += 1;
                    s.user_agent_sent = true;
                    s.bytes = 0;
                    s.requests = 0;
                    s.opened = 0;
                } else {
                    self.dropped_reports += 1;
                }
            } else if s.open == 0 && now.duration_since(s.last) > FORGET_AFTER {
                forget.push(id);
            }
        }
        for id in forget {
            self.forget(id);
        }
        self.stopped.retain(|_, until| *until > now);
        self.verdicts.retain(|_, (_, until)| *until > now);
        queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests' time zero.
    fn t0() -> Instant {
        thread_local!(static T0: Instant = Instant::now());
        T0.with(|t| *t)
    }

    fn key(token: &str) -> SessionKey {
        SessionKey {
            stream: "cam".into(),
            ip: Some("192.0.2.7".parse().unwrap()),
            token: token.into(),
            protocol: Protocol::Hls,
        }
    }

    #[test]
    fn one_session_across_requests_reported_once_per_period() {
        let mut local = LocalSessions::new(100_000, 50_000);
        let a = local.touch(key("t"), Some("hls.js"), t0()).unwrap();
        assert_eq!(local.touch(key("t"), None, t0()), Some(a));
        local.sent(a, 1000);
        let b = local.touch(key("other"), None, t0()).unwrap();
        assert_ne!(a, b);
        let queue = ArrayQueue::new(16);
        local.report(&queue, t0());
        let first = queue.pop().unwrap();
        assert_eq!(
            (first.requests, first.bytes, first.user_agent.as_deref()),
            (2, 1000, Some("hls.js"))
        );
        assert_eq!(queue.pop().unwrap().requests, 1);
        local.report(&queue, t0());
        assert!(queue.pop().is_none(), "nothing new, nothing reported");
        local.sent(a, 5);
        local.report(&queue, t0());
        let again = queue.pop().unwrap();
        assert_eq!((again.bytes, again.user_agent), (5, None));
        assert_eq!(key("t").id(), key("t").id());
        assert_ne!(key("t").id(), key("u").id());
        assert_eq!(key("t").id().len(), 16);
    }

    #[test]
    fn a_flood_of_sessions_pushes_out_its_own_not_the_busy_ones() {
        let mut local = LocalSessions::new(100, 60);
        let watcher = local.touch(key("watcher"), None, t0()).unwrap();
        local.connection(watcher, true, t0());
        let player = key("player");
        for i in 0..10_000 {
            if i % 50 == 0 {
                assert!(
                    local.touch(player.clone(), None, t0()).is_some(),
                    "the player is held"
                );
            }
            let flood = key(&format!("flood{i}"));
            assert!(local.admits(&flood));
            assert!(local.touch(flood, None, t0()).is_some());
            assert!(local.len() <= 100);
            assert!(local.per_stream.values().all(|n| *n <= 60));
        }
        assert!(local.evicted > 9000);
        assert!(
            local.index.contains_key(&key("watcher")),
            "a connection open keeps it"
        );
        // Every session held has a connection open: a new one is refused.
        let mut full = LocalSessions::new(2, 2);
        for t in ["a", "b"] {
            let id = full.touch(key(t), None, t0()).unwrap();
            full.connection(id, true, t0());
        }
        assert!(!full.admits(&key("c")));
        assert_eq!(full.touch(key("c"), None, t0()), None);
        assert_eq!(full.len(), 2);
    }

    #[test]
    fn a_stopped_session_is_refused_for_a_while() {
        let mut local = LocalSessions::new(100_000, 50_000);
        local.touch(key("t"), None, t0());
        assert!(!local.is_stopped(&key("t"), t0()));
        assert!(local
            .stop(key("t"), Duration::from_secs(60), t0())
            .is_some());
        assert!(local.is_stopped(&key("t"), t0() + Duration::from_secs(59)));
        assert!(!local.is_stopped(&key("t"), t0() + Duration::from_secs(60)));
        local.stop(key("x"), Duration::ZERO, t0());
        assert!(!local.is_stopped(&key("x"), t0()));
    }

    #[test]
    fn decisions_hold_for_their_time_and_quiet_sessions_are_forgotten() {
        let mut local = LocalSessions::new(100_000, 50_000);
        let verdict = Verdict {
            refused: None,
            headers: None,
            ttl: Duration::from_secs(30),
            redirect: None,
        };
        local.decided(key("t"), verdict, t0());
        assert!(local
            .verdict(&key("t"), t0() + Duration::from_secs(29))
            .is_some());
        assert!(local
            .verdict(&key("t"), t0() + Duration::from_secs(30))
            .is_none());
        local.touch(key("t"), None, t0());
        let queue = ArrayQueue::new(16);
        local.report(&queue, t0());
        assert_eq!(local.len(), 1);
        local.report(&queue, t0() + FORGET_AFTER);
        assert_eq!(local.len(), 1, "not yet: quiet for exactly the time");
        local.report(&queue, t0() + FORGET_AFTER + Duration::from_millis(1));
        assert_eq!(local.len(), 0, "forgotten, its end reported");
    }
}
