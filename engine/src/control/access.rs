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
//! A stream that does not exist is a wildcard instance to start (`base+wildcard`), or else
//! `DEFAULT_STREAM` may name another to play instead (302), or else 404.
//!
//! Decisions are kept for the access `ttl` (default 60 s) here and on the shards; failures
//! only for a few seconds, so that a backend back up is asked again soon.
//!
//! What it does not do: see requests (shards do), or count sessions (the session table).

use super::triggers::{refuses, TriggerSet};
use crate::config::{AccessConfig, OnError};
use crate::session::{AccessQuery, Links, SessionKey, ShardCommand, Verdict};
use crate::shard::Streams;
use std::collections::HashMap;
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
}

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
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Starts a wildcard instance by name, or says why it cannot (blocking: it may ask triggers).
pub type InstanceMaker = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// How long a decision about a stream nobody gates is kept (it only says that the stream,
/// a wildcard instance, was started).
const UNGATED_TTL: Duration = Duration::from_secs(2);

impl Access {
    /// The access task of these shards and streams.
    pub fn new(triggers: Arc<TriggerSet>, links: Links, streams: Arc<Streams>) -> Arc<Self> {
        Arc::new(Self {
            triggers,
            links,
            streams,
            cache: Mutex::new(HashMap::new()),
            deciding: Mutex::new(HashMap::new()),
            stats: AccessStats::default(),
            maker: Mutex::new(None),
        })
    }

    /// How wildcard instances are started.
    pub fn set_instance_maker(&self, maker: InstanceMaker) {
        *self.maker.lock().unwrap_or_else(|e| e.into_inner()) = Some(maker);
    }

    /// Take the shards' questions whenever one is asked, until the runtime ends.
    pub async fn run(self: Arc<Self>, asked: Arc<tokio::sync::Notify>) {
        loop {
            tokio::select! {
                _ = asked.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            for link in &self.links.shards {
                while let Some(query) = link.asks.pop() {
                    self.clone().take(query);
                }
            }
            let now = Instant::now();
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() > 100_000 {
                cache.retain(|_, (_, until)| *until > now);
            }
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
            deciding.insert(query.key.clone(), vec![query.shard]);
        }
        tokio::spawn(async move {
            let verdict = self.decide(&query).await;
            self.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(
                query.key.clone(),
                (verdict.clone(), Instant::now() + verdict.ttl),
            );
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
        let ip = q.key.ip.map(|ip| ip.to_string()).unwrap_or_default();
        let connector = q.key.protocol.connector();
        if self.streams.load().find(&stream).is_none() {
            // A wildcard instance nobody watches yet: start it first.
            let maker = self.maker.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let name = stream.clone();
            let made = match maker {
                Some(make) if stream.contains('+') => {
                    tokio::task::spawn_blocking(move || make(&name))
                        .await
                        .unwrap_or_else(|e| Err(e.to_string()))
                }
                _ => Err("no such stream".into()),
            };
            if let Err(why) = made {
                // DEFAULT_STREAM may name another stream to play instead.
                let fallback = self
                    .triggers
                    .ask(
                        "DEFAULT_STREAM",
                        Some(&stream),
                        &[&stream, &ip, connector, &q.url],
                    )
                    .await
                    .and_then(|a| a.into_iter().find(|n| !n.trim().is_empty()))
                    .map(|n| n.trim().to_owned())
                    .filter(|n| *n != stream && self.streams.load().find(n).is_some());
                if fallback.is_none() {
                    tracing::info!(stream = %stream, "not started: {why}");
                }
                return Verdict {
                    refused: fallback.is_none().then_some(404),
                    headers: None,
                    ttl: UNGATED_TTL,
                    redirect: fallback.map(|n| Arc::from(n.as_str())),
                };
            }
        }
        let access = self
            .streams
            .load()
            .find(&stream)
            .and_then(|(_, info)| info.config.access.clone());
        let mut verdict = Verdict {
            refused: None,
            headers: None,
            ttl: TRIGGER_TTL,
            redirect: None,
        };
        if let Some(access) = &access {
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
        let rewrite = if refused {
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
        }
        verdict.redirect = rewrite
            .and_then(|a| a.into_iter().find(|n| !n.trim().is_empty()))
            .map(|n| n.trim().to_owned())
            .filter(|n| *n != stream && self.streams.load().find(n).is_some())
            .map(|n| Arc::from(n.as_str()));
        verdict
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
