//! The proxy's fetcher, on its own runtime: takes the shards' questions, fetches each resource
//! upstream once however many ask (those who ask while it is in flight wait for the same
//! answer), rewrites playlists, keeps the answers in the cache and tells the shards.

use super::cache::{Lookup, Object};
use super::paths::{self, Kind, Resource, ANY};
use super::{Proxies, ProxyCounters};
use crate::session::{Links, ShardCommand};
use crate::upstream::{self, Guard};
use bytes::Bytes;
use shardcast_protocols::hls::{self, Playlist, UriKind};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A multivariant playlist is fetched again after this.
const MULTIVARIANT_FRESH: Duration = Duration::from_secs(30);
/// A playlist that ended (VOD, or a live stream that finished) is fetched again after this.
const ENDED_FRESH: Duration = Duration::from_secs(300);
/// A live playlist is never fetched more often than this, whatever its target duration.
const MIN_LIVE_FRESH: Duration = Duration::from_millis(250);
/// Stale objects are dropped this long after they stop being fresh (a playlist is compared
/// with its previous version until then).
const STALE_KEPT: Duration = Duration::from_secs(60);
/// A live playlist that has not changed for this many target durations has stalled.
const STALL_TARGETS: u32 = 3;
/// Live playlists whose progress is followed, at most (past it, new ones are not followed).
const MAX_FOLLOWED: usize = 10_000;
/// A followed playlist fetched no more for this long is forgotten.
const FOLLOW_FOR: Duration = Duration::from_secs(600);
/// Attempts of one upstream request (the first and its retries).
const ATTEMPTS: u32 = 3;
/// The first retry's wait; each further one waits twice as long.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// Fetches for the proxy; one per server.
#[derive(Debug)]
pub struct Fetcher {
    proxies: Arc<Proxies>,
    links: Links,
    guard: Arc<Guard>,
    client: reqwest::Client,
    timeout: Duration,
    /// Where fetches run (the proxy's own runtime, whoever asks).
    runtime: tokio::runtime::Handle,
    /// Resources being fetched, and who waits for each.
    in_flight: Mutex<HashMap<Arc<str>, Vec<Waiter>>>,
    /// Live playlists' progress, by key.
    followed: Mutex<HashMap<Arc<str>, Progress>>,
}

/// Who waits for a fetch in flight.
#[derive(Debug)]
enum Waiter {
    /// A shard, holding viewers' requests.
    Shard(usize),
    /// A task of the server's own: a stream whose source is a configured proxy.
    Task(tokio::sync::oneshot::Sender<Arc<Object>>),
}

impl Waiter {
    fn is_shard(&self, shard: usize) -> bool {
        matches!(self, Waiter::Shard(s) if *s == shard)
    }
}

/// Where a live playlist was when it last moved on.
#[derive(Debug)]
struct Progress {
    /// Its media sequence and its newest segment's URI.
    at: (u64, String),
    /// When it got there.
    since: Instant,
    /// When it was last fetched.
    fetched: Instant,
    /// It was found stalled (said once until it moves again).
    stalled: bool,
}

/// An upstream request that did not give a body.
#[derive(Debug)]
struct Failure {
    status: u16,
    why: String,
    /// Worth another attempt (unreachable, 5xx).
    retry: bool,
}

impl Failure {
    fn new(status: u16, why: impl Into<String>, retry: bool) -> Self {
        Self {
            status,
            why: why.into(),
            retry,
        }
    }
}

impl Fetcher {
    /// A fetcher for `proxies` that answers the shards through `links` and fetches on
    /// `runtime`.
    pub fn new(
        proxies: Arc<Proxies>,
        links: Links,
        runtime: tokio::runtime::Handle,
    ) -> Result<Arc<Self>, reqwest::Error> {
        let settings = proxies.settings();
        let allowed = settings
            .allow_addresses
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect();
        let guard = Arc::new(Guard::new(allowed));
        let timeout = Duration::from_secs_f64(settings.timeout_s);
        let client = upstream::client(
            guard.clone(),
            &upstream::ClientSettings {
                connect_timeout: timeout.min(Duration::from_secs(5)),
                timeout,
            },
        )?;
        Ok(Arc::new(Self {
            proxies,
            links,
            guard,
            client,
            timeout,
            runtime,
            in_flight: Mutex::new(HashMap::new()),
            followed: Mutex::new(HashMap::new()),
        }))
    }

    /// The proxies it fetches for.
    pub fn proxies(&self) -> &Arc<Proxies> {
        &self.proxies
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Vec<Waiter>>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take the shards' questions whenever `asked` is notified, and sweep the cache.
    pub async fn run(self: Arc<Self>, asked: Arc<tokio::sync::Notify>) {
        let mut sweep = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = asked.notified() => {}
                _ = sweep.tick() => {
                    let now = Instant::now();
                    self.proxies.cache.sweep(now, STALE_KEPT);
                    let mut followed = self.followed.lock().unwrap_or_else(|p| p.into_inner());
                    followed.retain(|_, p| now.duration_since(p.fetched) < FOLLOW_FOR);
                    self.proxies
                        .load
                        .followed
                        .store(followed.len() as u64, Ordering::Relaxed);
                }
            }
            for (shard, link) in self.links.shards.iter().enumerate() {
                while let Some(key) = link.fetches.pop() {
                    self.ask(key, Some(Waiter::Shard(shard)));
                }
            }
        }
    }

    /// What `key` is, for a task of the server's own (a stream whose source is a configured
    /// proxy): as viewers get it, from the cache when fresh there, else from the fetch in
    /// flight or a new one. Counted as a request of its proxy, as a viewer's would be.
    pub async fn fetch(self: &Arc<Self>, key: Arc<str>) -> Arc<Object> {
        if let Some(counters) =
            Resource::from_key(&key).and_then(|r| self.proxies.counters(&r.scope))
        {
            ProxyCounters::add(&counters.requests, 1);
            if let Lookup::Fresh(object) = self.proxies.cache.get(&key, Instant::now()) {
                ProxyCounters::add(&counters.hits, 1);
                return object;
            }
        }
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.ask(key, Some(Waiter::Task(answer)));
        answered
            .await
            .unwrap_or_else(|_| error(503, "the proxy's fetch was dropped"))
    }

    /// `waiter` (`None`: a prefetch, nobody waits) wants `key`: answered from the cache if it
    /// is fresh there, else it waits for the fetch in flight, or one starts.
    fn ask(self: &Arc<Self>, key: Arc<str>, waiter: Option<Waiter>) {
        if let Lookup::Fresh(object) = self.proxies.cache.get(&key, Instant::now()) {
            if let Some(waiter) = waiter {
                self.answer(waiter, key, object);
            }
            return;
        }
        let mut in_flight = self.in_flight();
        if let Some(waiting) = in_flight.get_mut(&key) {
            match waiter {
                Some(Waiter::Shard(s)) if waiting.iter().any(|w| w.is_shard(s)) => {}
                Some(waiter) => waiting.push(waiter),
                None => {}
            }
            return;
        }
        if in_flight.len() >= self.proxies.settings().max_fetches {
            drop(in_flight);
            if let Some(waiter) = waiter {
                ProxyCounters::add(&self.proxies.load.busy, 1);
                let busy = error(503, "the proxy is fetching as much as it may: try again");
                self.answer(waiter, key, busy);
            }
            return;
        }
        in_flight.insert(key.clone(), waiter.into_iter().collect());
        self.proxies
            .load
            .in_flight
            .store(in_flight.len() as u64, Ordering::Relaxed);
        drop(in_flight);
        let this = self.clone();
        self.runtime.spawn(async move {
            let object = this.load(&key).await;
            this.done(key, object);
        });
    }

    /// Hand `object`, what `key` is, to `waiter`.
    fn answer(&self, waiter: Waiter, key: Arc<str>, object: Arc<Object>) {
        match waiter {
            Waiter::Shard(shard) => self.links.send(shard, ShardCommand::Fetched(key, object)),
            // A task that stopped waiting has nothing to be told.
            Waiter::Task(answer) => {
                let _ = answer.send(object);
            }
        }
    }

    /// `object` is what `key` is now: kept, and handed to those who wait for it.
    fn done(&self, key: Arc<str>, object: Arc<Object>) {
        self.proxies.cache.insert(key.clone(), object.clone());
        let waiting = {
            let mut in_flight = self.in_flight();
            let waiting = in_flight.remove(&key).unwrap_or_default();
            self.proxies
                .load
                .in_flight
                .store(in_flight.len() as u64, Ordering::Relaxed);
            waiting
        };
        for waiter in waiting {
            self.answer(waiter, key.clone(), object.clone());
        }
    }

    /// What `key` is upstream, as viewers are to get it.
    async fn load(self: &Arc<Self>, key: &str) -> Arc<Object> {
        if crate::vod::is_key(key) {
            // A recording's part: read from the disk on a thread that may wait for it.
            let (proxies, key) = (self.proxies.clone(), key.to_owned());
            return Arc::new(
                tokio::task::spawn_blocking(move || crate::vod::load(&key, &proxies.cache))
                    .await
                    .unwrap_or_else(|_| Object::error(500, "reading the recording failed")),
            );
        }
        let Some(resource) = Resource::from_key(key) else {
            return error(400, "not a proxied resource");
        };
        let (headers, counters) = if resource.scope == ANY {
            (Vec::new(), self.proxies.any_counters().clone())
        } else {
            match self.proxies.named().get(&resource.scope) {
                Some(named) => (named.config.headers.clone(), named.counters.clone()),
                None => return error(404, "no such proxy"),
            }
        };
        match self.get(&resource.url, &headers, &counters).await {
            Ok((url, body)) => match resource.kind {
                Kind::Media => Arc::new(Object {
                    status: 200,
                    body,
                    content_type: paths::content_type(Kind::Media, &resource.url),
                    fresh_until: None,
                    cache_control: "public, max-age=60",
                    children: Vec::new(),
                }),
                Kind::TopPlaylist | Kind::Playlist => self.playlist(key, &resource, &url, &body),
            },
            Err(failure) => {
                if failure.status == 403 {
                    ProxyCounters::add(&counters.refused, 1);
                } else {
                    ProxyCounters::add(&counters.errors, 1);
                }
                tracing::warn!(proxy = %resource.scope, url = %resource.url, status = failure.status, "proxy: {}", failure.why);
                error(failure.status, &format!("{}\n", failure.why))
            }
        }
    }

    /// GET `url` with `headers`, retried with backoff while that may help and time is left;
    /// the final URL (after redirects) and the body.
    async fn get(
        &self,
        url: &str,
        headers: &[(String, String)],
        counters: &ProxyCounters,
    ) -> Result<(reqwest::Url, Bytes), Failure> {
        let url = reqwest::Url::parse(url).map_err(|_| Failure::new(400, "not a URL", false))?;
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            ProxyCounters::add(&counters.fetches, 1);
            match self.attempt(&url, headers, counters).await {
                Err(f)
                    if f.retry
                        && attempt < ATTEMPTS
                        && started.elapsed() + backoff < self.timeout =>
                {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn attempt(
        &self,
        url: &reqwest::Url,
        headers: &[(String, String)],
        counters: &ProxyCounters,
    ) -> Result<(reqwest::Url, Bytes), Failure> {
        if let Err(refused) = self.guard.check_url(url) {
            return Err(Failure::new(403, refused.to_string(), false));
        }
        let mut request = self.client.get(url.clone());
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let mut response = request.send().await.map_err(|e| failure(&e))?;
        let status = response.status().as_u16();
        match status {
            200 => {}
            404 | 410 => {
                return Err(Failure::new(
                    404,
                    format!("the upstream answered {status}"),
                    false,
                ))
            }
            500..=599 => {
                return Err(Failure::new(
                    502,
                    format!("the upstream answered {status}"),
                    true,
                ))
            }
            _ => {
                return Err(Failure::new(
                    502,
                    format!("the upstream answered {status}"),
                    false,
                ))
            }
        }
        let max = self.proxies.settings().max_object;
        if response.content_length().is_some_and(|n| n > max as u64) {
            return Err(Failure::new(
                502,
                format!("the upstream's answer is larger than proxy_max_object ({max} bytes)"),
                false,
            ));
        }
        let final_url = response.url().clone();
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    ProxyCounters::add(&counters.upstream_bytes, chunk.len() as u64);
                    if body.len() + chunk.len() > max {
                        return Err(Failure::new(502, format!("the upstream's answer is larger than proxy_max_object ({max} bytes)"), false));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Err(failure(&e)),
            }
        }
        Ok((final_url, Bytes::from(body)))
    }

    /// Follow live playlist `m` (under `key`): one that has not moved on for
    /// [`STALL_TARGETS`] target durations has stalled (logged and counted once; viewers go
    /// on getting it, as the origin serves it, and their players decide).
    fn follow(&self, key: &str, resource: &Resource, m: &hls::MediaPlaylist, now: Instant) {
        let at = (
            m.media_sequence,
            m.segments.last().map(|s| s.uri.clone()).unwrap_or_default(),
        );
        let mut followed = self.followed.lock().unwrap_or_else(|p| p.into_inner());
        if !followed.contains_key(key) {
            if followed.len() >= MAX_FOLLOWED {
                return;
            }
            followed.insert(
                Arc::from(key),
                Progress {
                    at: at.clone(),
                    since: now,
                    fetched: now,
                    stalled: false,
                },
            );
            self.proxies
                .load
                .followed
                .store(followed.len() as u64, Ordering::Relaxed);
        }
        let Some(progress) = followed.get_mut(key) else {
            return;
        };
        progress.fetched = now;
        if progress.at != at {
            if progress.stalled {
                tracing::info!(proxy = %resource.scope, url = %resource.url, "proxy: the upstream's live playlist moves on again");
            }
            *progress = Progress {
                at,
                since: now,
                fetched: now,
                stalled: false,
            };
            return;
        }
        let limit = Duration::from_secs(m.target_duration.max(1)) * STALL_TARGETS;
        if !progress.stalled && now.duration_since(progress.since) >= limit {
            progress.stalled = true;
            if let Some(c) = self.proxies.counters(&resource.scope) {
                ProxyCounters::add(&c.stalls, 1);
            }
            tracing::warn!(proxy = %resource.scope, url = %resource.url, "proxy: the upstream's live playlist has not moved on for {} s", limit.as_secs());
        }
    }

    /// Playlist `body` of `resource` (its final URL `base`), with what it lists rewritten to
    /// go through the proxy; a live one's dropped entries expire, its newest segments are
    /// fetched ahead.
    fn playlist(
        self: &Arc<Self>,
        key: &str,
        resource: &Resource,
        base: &reqwest::Url,
        body: &[u8],
    ) -> Arc<Object> {
        let parsed = match hls::parse(body) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(proxy = %resource.scope, url = %resource.url, "proxy: the upstream's playlist does not parse: {e}");
                return error(
                    502,
                    &format!("the upstream's playlist does not parse: {e}\n"),
                );
            }
        };
        let now = Instant::now();
        let (fresh_for, live) = match &parsed {
            Playlist::Multivariant(_) => (MULTIVARIANT_FRESH, None),
            Playlist::Media(m) if m.end_list => (ENDED_FRESH, None),
            Playlist::Media(m) => {
                let half = Duration::from_millis(m.target_duration * 500);
                let listed: Duration = m.segments.iter().map(|s| s.duration).sum();
                self.follow(key, resource, m, now);
                (half.max(MIN_LIVE_FRESH), Some(listed))
            }
        };
        let mut children: Vec<Arc<str>> = Vec::new();
        let mut segments: Vec<Arc<str>> = Vec::new();
        let signer = &self.proxies.signer;
        let rewritten = hls::rewrite_uris(body, |uri, kind| {
            let Ok(absolute) = base.join(uri) else {
                return uri.to_owned();
            };
            if !matches!(absolute.scheme(), "http" | "https") {
                // data:, skd:// (FairPlay) and the like are the player's.
                return uri.to_owned();
            }
            let playlist = matches!(
                kind,
                UriKind::Variant
                    | UriKind::Rendition
                    | UriKind::IFramePlaylist
                    | UriKind::RenditionReport
            );
            let child = Resource {
                scope: resource.scope.clone(),
                kind: if playlist {
                    Kind::Playlist
                } else {
                    Kind::Media
                },
                url: absolute.to_string(),
            };
            let child_key: Arc<str> = child.key().into();
            if kind == UriKind::Segment {
                segments.push(child_key.clone());
            }
            children.push(child_key);
            signer.child_path(resource.kind, &resource.scope, absolute.as_str(), playlist)
        });
        if let Some(listed) = live {
            // What the previous version listed and this one does not: gone from the live
            // window; viewers behind may still ask for it a while.
            if let Some(previous) = self.proxies.cache.peek(key) {
                let now_listed: HashSet<&Arc<str>> = children.iter().collect();
                let gone: Vec<Arc<str>> = previous
                    .children
                    .iter()
                    .filter(|c| !now_listed.contains(c))
                    .cloned()
                    .collect();
                let grace = listed.clamp(Duration::from_secs(10), Duration::from_secs(120));
                self.proxies.cache.expire_by(&gone, now + grace);
            }
            for segment in segments.iter().rev().take(self.proxies.settings().prefetch) {
                self.ask(segment.clone(), None);
            }
        } else {
            children.clear();
        }
        Arc::new(Object {
            status: 200,
            body: Bytes::from(rewritten),
            content_type: paths::content_type(resource.kind, &resource.url),
            fresh_until: Some(now + fresh_for),
            cache_control: if live.is_some() {
                "no-cache"
            } else {
                "max-age=10"
            },
            children,
        })
    }
}

/// An error viewers get for a while.
fn error(status: u16, text: &str) -> Arc<Object> {
    Arc::new(Object::error(status, text))
}

/// What a failed upstream request is to viewers: refused (403), too slow (504), unreachable
/// or broken (502).
fn failure(e: &reqwest::Error) -> Failure {
    let timeout = e.is_timeout();
    let connect = e.is_connect();
    match upstream::refusal(e) {
        Some(why) => Failure::new(403, why, false),
        _ if timeout => Failure::new(504, "the upstream did not answer in time", false),
        _ if connect => Failure::new(
            502,
            format!("the upstream is unreachable: {}", chain(e)),
            true,
        ),
        _ => Failure::new(
            502,
            format!("the upstream request failed: {}", chain(e)),
            true,
        ),
    }
}

/// `e` and its sources, in words.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
