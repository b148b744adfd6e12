//! Who may watch: the shards' questions answered off the data plane.
//!
//! A shard that gets a viewer request of a gated stream for a session it has no decision for
//! holds the request and asks ([`crate::session::AccessQuery`]). This task takes the question,
//! answers from its cache when it can, and otherwise decides once per session however many
//! shards ask at the same time:
//!
//! 1. token access control, when the stream has `access` (as Flashphoner WCS does it): the
//!    token and the session's facts are POSTed as JSON to the backend; 200 allows (the
//!    headers it returns go on the viewer's responses), 403 refuses (the viewer gets 401);
//!    anything else, a timeout or an unreachable backend takes `on_error`: `deny` (503, the
//!    default) or `allow`;
//! 2. the blocking triggers `USER_NEW` and `CONN_PLAY`: a refusal gives 403;
//! 3. `PLAY_REWRITE`, which may name another stream to play instead (the viewer is
//!    redirected there, 302).
//!
//! A stream that does not exist may be a wildcard instance (`base+wildcard`) of a template
//! that allows it: the decision above is taken with the template's settings first, and only
//! an allowed viewer starts the instance, at most `wildcard_starts_per_minute` per address and
//! within the template's cap; or else `DEFAULT_STREAM` may name another to play instead
//! (302), or else 404.
//!
//! Decisions are kept for the access `ttl` (default 60 s) here and on the shards; failures
//! only for a few seconds, so that a backend back up is asked again soon. At most
//! `max_access_checks` decisions are in progress at once, `max_access_checks_per_address` of
//! one address: past either, the viewer gets 503 with Retry-After at once, so a flood of
//! unknown tokens from a few addresses cannot keep others from being asked.
//!
//! What it does not do: see requests (shards do), or count sessions (the session table).

use super::triggers::{refuses, TriggerSet};
use crate::config::{AccessConfig, OnError};
use crate::session::{AccessQuery, Links, SessionKey, ShardCommand, Verdict};
use crate::shard::catalog::InstanceRefusal;
use crate::shard::Streams;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a decision taken without the backend's answer (down, slow) is kept.
const FAILURE_TTL: Duration = Duration::from_secs(5);
/// How long a decision made only by triggers (no `access` setting) is kept.
const TRIGGER_TTL: Duration = Duration::from_secs(60);

/// Counts of the access backend, for the metrics.
#[derive(Debug, Default)]
pub struct AccessStats {
    /// Backend calls.
    pub calls: AtomicU64,
    /// Calls without a usable answer (unreachable, timeout, unexpected status).
    pub failures: AtomicU64,
    /// Questions answered from the cache.
    pub cached: AtomicU64,
    /// Questions answered 503 at once: too many decisions in progress.
    pub busy: AtomicU64,
    /// Wildcard instances not started: the address started its most this minute.
    pub start_limited: AtomicU64,
}

/// Bounds of the access task (from `[server]`).
#[derive(Clone, Copy, Debug)]
pub struct AccessLimits {
    /// Decisions in progress at once.
    pub max_checks: usize,
    /// Of one viewer address.
    pub max_checks_per_address: usize,
    /// Wildcard instances one address may start per minute.
    pub starts_per_minute: u32,
}

impl Default for AccessLimits {
    fn default() -> Self {
        let d = crate::config::ServerLimits::default();
        Self::from(&d)
    }
}

impl From<&crate::config::ServerLimits> for AccessLimits {
    fn from(l: &crate::config::ServerLimits) -> Self {
        Self {
            max_checks: l.max_access_checks,
            max_checks_per_address: l.max_access_checks_per_address,
            starts_per_minute: l.wildcard_starts_per_minute,
        }
    }
}

/// Decisions cached at most (beyond, expired ones are swept; then new ones are not kept).
const MAX_CACHED: usize = 100_000;
/// Addresses whose instance starts are counted at most (beyond, new addresses start none).
const MAX_STARTERS: usize = 100_000;
/// How long a viewer refused because too many decisions were in progress waits (seconds).
const BUSY_TTL: Duration = Duration::from_secs(1);

/// The access task's state.
pub struct Access {
    triggers: Arc<TriggerSet>,
    links: Links,
    streams: Arc<Streams>,
    cache: Mutex<HashMap<SessionKey, (Verdict, Instant)>>,
    /// Sessions being decided, and the shards waiting for the answer.
    deciding: Mutex<HashMap<SessionKey, Vec<usize>>>,
    /// The counts.
    pub stats: AccessStats,
    /// Starts a wildcard instance (`base+wildcard`), or says why it cannot.
    maker: Mutex<Option<InstanceMaker>>,
    limits: AccessLimits,
    /// Decisions in progress, in all and by viewer address.
    checks: Mutex<(usize, HashMap<Option<IpAddr>, usize>)>,
    /// Wildcard instances started by each address in the current minute.
    starts: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    /// The HLS proxy, whose viewers (sessions of `proxy/{name}`) are decided here too.
    proxies: std::sync::OnceLock<Arc<crate::proxy::Proxies>>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Starts a wildcard instance by name, or says why it cannot (blocking: it may ask triggers).
pub type InstanceMaker = Arc<dyn Fn(&str) -> Result<(), InstanceRefusal> + Send + Sync>;

/// How long a decision about a stream nobody gates is kept (it only says that the stream,
/// a wildcard instance, was started).
const UNGATED_TTL: Duration = Duration::from_secs(2);

impl Access {
    /// The access task of these shards and streams.
    pub fn new(
        triggers: Arc<TriggerSet>,
        links: Links,
        streams: Arc<Streams>,
        limits: AccessLimits,
    ) -> Arc<Self> {
        Arc::new(Self {
            triggers,
            links,
            streams,
            cache: Mutex::new(HashMap::new()),
            deciding: Mutex::new(HashMap::new()),
            stats: AccessStats::default(),
            maker: Mutex::new(None),
            limits,
            checks: Mutex::new((0, HashMap::new())),
            starts: Mutex::new(HashMap::new()),
            proxies: std::sync::OnceLock::new(),
        })
    }

    /// The HLS proxy, whose configured proxies' viewers are decided with their `access` and
    /// the viewer triggers of `proxy/{name}`.
    pub fn set_proxies(&self, proxies: Arc<crate::proxy::Proxies>) {
        let _ = self.proxies.set(proxies);
    }

    /// Take a place for one more decision about a viewer at `ip`, if there is one: within
    /// `max_checks` and the address's share; an address with none in progress may take one
    /// of another `max_checks` kept for first checks, so that addresses flooding the check
    /// cannot keep a newcomer out.
    fn begin_check(&self, ip: Option<IpAddr>) -> bool {
        let mut checks = self.checks.lock().unwrap_or_else(|e| e.into_inner());
        let (total, by_address) = &mut *checks;
        let of_address = by_address.get(&ip).copied().unwrap_or(0);
        let room = if of_address == 0 {
            *total < 2 * self.limits.max_checks
        } else {
            *total < self.limits.max_checks && of_address < self.limits.max_checks_per_address
        };
        if !room {
            return false;
        }
        *total += 1;
        by_address.insert(ip, of_address + 1);
        true
    }

    fn end_check(&self, ip: Option<IpAddr>) {
        let mut checks = self.checks.lock().unwrap_or_else(|e| e.into_inner());
        let (total, by_address) = &mut *checks;
        *total = total.saturating_sub(1);
        if let Some(n) = by_address.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                by_address.remove(&ip);
            }
        }
    }

    /// Decisions in progress now.
    pub fn checks_in_progress(&self) -> usize {
        self.checks.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    /// Whether `ip` may start one more wildcard instance this minute (and count it).
    fn may_start(&self, ip: Option<IpAddr>, now: Instant) -> bool {
        let Some(ip) = ip else { return true };
        let mut starts = self.starts.lock().unwrap_or_else(|e| e.into_inner());
        if starts.len() >= MAX_STARTERS && !starts.contains_key(&ip) {
            starts.retain(|_, (since, _)| now.duration_since(*since) < Duration::from_secs(60));
            if starts.len() >= MAX_STARTERS {
                return false;
            }
        }
        let (since, count) = starts.entry(ip).or_insert((now, 0));
        if now.duration_since(*since) >= Duration::from_secs(60) {
            *since = now;
            *count = 0;
        }
        if *count >= self.limits.starts_per_minute {
            return false;
        }
        *count += 1;
        true
    }

    /// How wildcard instances are started.
    pub fn set_instance_maker(&self, maker: InstanceMaker) {
        *self.maker.lock().unwrap_or_else(|e| e.into_inner()) = Some(maker);
    }

    /// Take the shards' questions whenever one is asked, until the runtime ends. A shard
    /// notifies after it queues a question, and a notification with nobody waiting is kept
    /// for the next wait, so nothing is missed without a timer (which would wake an idle
    /// server five times a second).
    pub async fn run(self: Arc<Self>, asked: Arc<tokio::sync::Notify>) {
        loop {
            asked.notified().await;
            for link in &self.links.shards {
                while let Some(query) = link.asks.pop() {
                    self.clone().take(query);
                }
            }
            let now = Instant::now();
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= MAX_CACHED {
                cache.retain(|_, (_, until)| *until > now);
            }
        }
    }

    fn busy() -> Verdict {
        Verdict {
            refused: Some(503),
            headers: None,
            ttl: BUSY_TTL,
            redirect: None,
        }
    }

    fn take(self: Arc<Self>, query: AccessQuery) {
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&query.key)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(v, _)| v.clone());
        if let Some(verdict) = cached {
            self.stats.cached.fetch_add(1, Ordering::Relaxed);
            self.links
                .send(query.shard, ShardCommand::Verdict(query.key, verdict));
            return;
        }
        {
            let mut deciding = self.deciding.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(shards) = deciding.get_mut(&query.key) {
                shards.push(query.shard);
                return;
            }
            if !self.begin_check(query.key.ip) {
                // Too many decisions in progress (in all, or for this address): 503 now,
                // asked again after a second.
                self.stats.busy.fetch_add(1, Ordering::Relaxed);
                drop(deciding);
                self.links
                    .send(query.shard, ShardCommand::Verdict(query.key, Self::busy()));
                return;
            }
            deciding.insert(query.key.clone(), vec![query.shard]);
        }
        tokio::spawn(async move {
            let verdict = self.decide(&query).await;
            self.end_check(query.key.ip);
            {
                let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                if cache.len() < MAX_CACHED {
                    cache.insert(
                        query.key.clone(),
                        (verdict.clone(), Instant::now() + verdict.ttl),
                    );
                }
            }
            let shards = self
                .deciding
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&query.key)
                .unwrap_or_default();
            for shard in shards {
                self.links.send(
                    shard,
                    ShardCommand::Verdict(query.key.clone(), verdict.clone()),
                );
            }
        });
    }

    async fn decide(&self, q: &AccessQuery) -> Verdict {
        let stream = q.key.stream.to_string();
        if let Some(name) = stream.strip_prefix("proxy/") {
            let access = self.proxies.get().and_then(|p| {
                if name == crate::proxy::paths::ANY {
                    Some(p.settings().access.clone())
                } else {
                    p.named().get(name).map(|n| n.config.access.clone())
                }
            });
            return match access {
                Some(access) => self.viewer_checks(q, &stream, access.as_ref(), false).await,
                None => Verdict {
                    refused: Some(404),
                    headers: None,
                    ttl: UNGATED_TTL,
                    redirect: None,
                },
            };
        }
        let running = self
            .streams
            .load()
            .find(&stream)
            .map(|(_, info)| info.config.clone());
        // A stream that does not run: a wildcard instance its template allows (decided with
        // the template's settings, started only once allowed), or another stream to play.
        let (config, to_start) = match running {
            Some(config) => (config, false),
            None => match self.instance_config(&stream) {
                Ok(config) => (config, true),
                Err(refusal) => {
                    let ip = q.key.ip.map(|ip| ip.to_string()).unwrap_or_default();
                    return self.not_running(q, &stream, &ip, refusal).await;
                }
            },
        };
        let verdict = self
            .viewer_checks(q, &stream, config.access.as_ref(), true)
            .await;
        if verdict.refused.is_some() {
            return verdict;
        }
        if to_start && verdict.redirect.is_none() {
            if let Err(refused) = self.start(&stream, q.key.ip).await {
                return refused;
            }
        }
        verdict
    }

    /// What the access backend (`access`) and the viewer triggers (USER_NEW, CONN_PLAY, and
    /// with `rewrite` PLAY_REWRITE) say of viewer `q` of `stream`.
    async fn viewer_checks(
        &self,
        q: &AccessQuery,
        stream: &str,
        access: Option<&AccessConfig>,
        rewrite: bool,
    ) -> Verdict {
        let stream = stream.to_owned();
        let ip = q.key.ip.map(|ip| ip.to_string()).unwrap_or_default();
        let connector = q.key.protocol.connector();
        let mut verdict = Verdict {
            refused: None,
            headers: None,
            ttl: TRIGGER_TTL,
            redirect: None,
        };
        if let Some(access) = access {
            verdict = self.backend(access, q).await;
            if verdict.refused.is_some() {
                return verdict;
            }
        }
        let id = q.key.id();
        let refused_by = |answers: Option<Vec<String>>| {
            answers.is_some_and(|a| a.iter().any(|answer| refuses(answer)))
        };
        let user_new = self
            .triggers
            .ask(
                "USER_NEW",
                Some(&stream),
                &[&stream, &ip, "0", connector, &q.url, &id],
            )
            .await;
        let conn_play = if refused_by(user_new.clone()) {
            None
        } else {
            self.triggers
                .ask(
                    "CONN_PLAY",
                    Some(&stream),
                    &[&stream, &ip, connector, &q.url],
                )
                .await
        };
        let refused = refused_by(user_new.clone()) || refused_by(conn_play.clone());
        // PLAY_REWRITE may send an allowed viewer to another stream.
        let rewrite = if refused || !rewrite {
            None
        } else {
            self.triggers
                .ask(
                    "PLAY_REWRITE",
                    Some(&stream),
                    &[&stream, &ip, connector, &q.url],
                )
                .await
        };
        if access.is_none() && user_new.is_none() && conn_play.is_none() && rewrite.is_none() {
            verdict.ttl = UNGATED_TTL;
        }
        if refused {
            verdict.refused = Some(403);
            verdict.headers = None;
            return verdict;
        }
        verdict.redirect = rewrite
            .and_then(|a| a.into_iter().find(|n| !n.trim().is_empty()))
            .map(|n| n.trim().to_owned())
            .filter(|n| *n != stream && self.streams.load().find(n).is_some())
            .map(|n| Arc::from(n.as_str()));
        verdict
    }

    /// The configuration wildcard instance `name` would run with, if its template allows it
    /// and has room.
    fn instance_config(&self, name: &str) -> Result<crate::config::StreamConfig, InstanceRefusal> {
        self.streams.check_instance(name)?;
        let (base, wildcard) = name.split_once('+').unwrap_or((name, ""));
        self.streams
            .configured(base)
            .ok_or_else(|| InstanceRefusal::NotAllowed(format!("no stream {base:?}")))?
            .instance(wildcard)
            .map_err(|e| InstanceRefusal::NotAllowed(e.to_string()))
    }

    /// Start wildcard instance `name` for a viewer at `ip` that was let in; the verdict to
    /// give instead when it cannot be.
    async fn start(&self, name: &str, ip: Option<IpAddr>) -> Result<(), Verdict> {
        let refusal = |status: u16, ttl: Duration| Verdict {
            refused: Some(status),
            headers: None,
            ttl,
            redirect: None,
        };
        if !self.may_start(ip, Instant::now()) {
            self.stats.start_limited.fetch_add(1, Ordering::Relaxed);
            tracing::info!(stream = %name, ip = ?ip, "wildcard instance not started: this address started {} this minute", self.limits.starts_per_minute);
            return Err(refusal(429, UNGATED_TTL));
        }
        let maker = self.maker.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(make) = maker else {
            return Err(refusal(404, UNGATED_TTL));
        };
        let owned = name.to_owned();
        let made = tokio::task::spawn_blocking(move || make(&owned))
            .await
            .unwrap_or_else(|e| Err(InstanceRefusal::Full(e.to_string())));
        match made {
            Ok(()) => Ok(()),
            Err(InstanceRefusal::NotAllowed(why)) => {
                tracing::info!(stream = %name, "not started: {why}");
                Err(refusal(404, UNGATED_TTL))
            }
            Err(InstanceRefusal::Full(why)) => {
                tracing::warn!(stream = %name, "not started: {why}");
                Err(refusal(503, UNGATED_TTL))
            }
        }
    }

    /// The verdict for a stream that does not run and will not: 503 when its template is
    /// full; else another stream `DEFAULT_STREAM` names (302), or 404.
    async fn not_running(
        &self,
        q: &AccessQuery,
        stream: &str,
        ip: &str,
        refusal: InstanceRefusal,
    ) -> Verdict {
        if let InstanceRefusal::Full(why) = &refusal {
            tracing::warn!(stream = %stream, "not started: {why}");
            return Verdict {
                refused: Some(503),
                headers: None,
                ttl: UNGATED_TTL,
                redirect: None,
            };
        }
        let connector = q.key.protocol.connector();
        let fallback = self
            .triggers
            .ask(
                "DEFAULT_STREAM",
                Some(stream),
                &[stream, ip, connector, &q.url],
            )
            .await
            .and_then(|a| a.into_iter().find(|n| !n.trim().is_empty()))
            .map(|n| n.trim().to_owned())
            .filter(|n| n != stream && self.streams.load().find(n).is_some());
        if fallback.is_none() {
            tracing::debug!(stream = %stream, "not started: {refusal}");
        }
        Verdict {
            refused: fallback.is_none().then_some(404),
            headers: None,
            ttl: UNGATED_TTL,
            redirect: fallback.map(|n| Arc::from(n.as_str())),
        }
    }

    /// Ask the token backend.
    async fn backend(&self, access: &AccessConfig, q: &AccessQuery) -> Verdict {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let body = serde_json::json!({
            "token": &*q.key.token,
            "stream": &*q.key.stream,
            "ip": q.key.ip.map(|ip| ip.to_string()),
            "protocol": q.key.protocol.name(),
            "user_agent": q.user_agent,
            "session": q.key.id(),
            "url": q.url,
        });
        let answer = self
            .triggers
            .client()
            .post(&access.url)
            .timeout(Duration::from_secs_f64(access.timeout))
            .json(&body)
            .send()
            .await;
        let ttl = Duration::from_secs_f64(access.ttl);
        let failed = |why: String| {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(stream = %q.key.stream, backend = %access.url, "access backend: {why}; on_error = {:?}", access.on_error);
            Verdict {
                refused: (access.on_error == OnError::Deny).then_some(503),
                headers: None,
                ttl: ttl.min(FAILURE_TTL),
                redirect: None,
            }
        };
        let response = match answer {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return failed("no answer in time".into()),
            Err(e) => return failed(format!("unreachable ({e})")),
        };
        match response.status().as_u16() {
            200 => {
                let mut headers = String::new();
                for (name, value) in response.headers() {
                    let passed = !matches!(
                        name.as_str(),
                        "content-length"
                            | "content-type"
                            | "content-encoding"
                            | "transfer-encoding"
                            | "connection"
                            | "keep-alive"
                            | "date"
                            | "server"
                            | "cache-control"
                            | "etag"
                            | "last-modified"
                            | "content-range"
                            | "accept-ranges"
                            | "location"
                            | "retry-after"
                            | "access-control-allow-origin"
                    );
                    if let (true, Ok(value)) = (passed, value.to_str()) {
                        headers.push_str(&format!("{}: {value}\r\n", name.as_str()));
                    }
                }
                Verdict {
                    refused: None,
                    headers: (!headers.is_empty()).then(|| Arc::from(headers.as_str())),
                    ttl,
                    redirect: None,
                }
            }
            403 => Verdict {
                refused: Some(401),
                headers: None,
                ttl,
                redirect: None,
            },
            status => failed(format!("answered {status}")),
        }
    }
}
