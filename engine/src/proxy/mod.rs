//! The HLS proxy: remote HLS re-served under `/proxy/`, fetched upstream once for any number
//! of viewers.
//!
//! ```text
//!  viewer ─ shard: router ─ paths::parse ─ Cache::get ─┬─ fresh: answered from the shared bytes
//!                                                      └─ miss: the request is held (Route::Fetch);
//!       the shard asks the fetcher once per resource ─ fetch (tokio): one upstream request per
//!       resource in flight, through the SSRF-guarded client ─ playlists rewritten ─ Cache::insert
//!       ─ ShardCommand::Fetched to each shard that asked ─ held requests answered
//! ```
//!
//! A configured proxy (`[[proxy]]`: name, upstream URL, headers) is served at
//! `/proxy/{name}.m3u8`; with `proxy_any_url`, an upstream URL in base64url or base64 at
//! `/proxy/{id}.m3u8`, for the hosts in `proxy_hosts`. What their playlists list is rewritten
//! to signed URLs under `/proxy/` ([`paths`]). Playlists are fetched again at most once per
//! half target duration (live), 30 s (multivariant) or 5 min (VOD); segments, keys and maps
//! stay until the cache's byte cap pushes them out, or shortly after a live playlist stops
//! listing them ([`cache`]); the newest segments of a live playlist are fetched before anyone
//! asks ([`ProxySettings::prefetch`]). A stream whose source is `proxy://{name}` pulls a
//! configured proxy through [`Fetcher::fetch`]: the same fetches and cache as its viewers.
//!
//! Viewers of a proxy are HLS sessions of `proxy/{name}` (the shard's router gates them);
//! a configured proxy has a player page (`/proxy/{name}.html`) and its state
//! (`/proxy/{name}/info.json`).
//!
//! A configured proxy's viewers are checked with its `access` and the viewer triggers of
//! `proxy/{name}` (the control plane's access task decides, as for a stream).
//!
//! Upstream URLs named in requests are checked the same way with `proxy_access` (sessions of
//! `proxy/_`).
//!
//! What it does not do yet: blocking playlist reloads of low-latency upstreams (the newest
//! playlist is answered at once), and ranges fetched upstream (a byte-range segment's whole
//! file is fetched, up to `proxy_max_object`).

pub mod cache;
mod fetch;
pub mod paths;

pub use fetch::Fetcher;

pub use crate::config::{ProxyConfig, ProxySettings};
use crate::http::{Body, Document, Route, Status};
use arc_swap::ArcSwap;
use cache::{Lookup, Object};
use paths::{Kind, ProxyPath, Resource, Signer, ANY};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Counts of one proxy (a configured one, or all upstream URLs named in paths).
#[derive(Debug, Default)]
pub struct ProxyCounters {
    /// Viewer requests.
    pub requests: AtomicU64,
    /// Viewer requests answered from the cache without waiting.
    pub hits: AtomicU64,
    /// Upstream requests (each attempt).
    pub fetches: AtomicU64,
    /// Upstream requests that failed (after their retries), by the status viewers got.
    pub errors: AtomicU64,
    /// Upstream requests refused by the SSRF guard or the host list.
    pub refused: AtomicU64,
    /// Bytes read from upstream.
    pub upstream_bytes: AtomicU64,
    /// Live playlists found not moving on for three target durations.
    pub stalls: AtomicU64,
}

impl ProxyCounters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// A configured proxy and its counts.
#[derive(Debug)]
pub struct Named {
    /// Its configuration.
    pub config: ProxyConfig,
    /// Its counts (kept across reloads while its name stays).
    pub counters: Arc<ProxyCounters>,
    /// Whether its viewers need an access decision (its `access`, or a viewer trigger for
    /// `proxy/{name}`).
    pub gated: std::sync::atomic::AtomicBool,
}

/// The proxy's state, shared by the shards (lookups) and the fetcher (fetches).
#[derive(Debug)]
pub struct Proxies {
    settings: ProxySettings,
    /// Whether viewers of upstream URLs named in paths need an access decision.
    any_gated: std::sync::atomic::AtomicBool,
    named: ArcSwap<HashMap<String, Arc<Named>>>,
    any: Arc<ProxyCounters>,
    signer: Signer,
    /// What upstreams answered.
    pub cache: cache::Cache,
    /// How much the fetcher holds, for the metrics.
    pub load: FetchLoad,
}

/// The fetcher's tables and refusals, for the metrics: each is bounded
/// (`proxy_max_fetches`, 10,000 followed playlists, a shard's queue of
/// [`crate::session::FETCH_QUEUE`]).
#[derive(Debug, Default)]
pub struct FetchLoad {
    /// Upstream fetches in flight.
    pub in_flight: AtomicU64,
    /// Live playlists whose progress is followed (for stalls).
    pub followed: AtomicU64,
    /// Requests answered 503 at once: the fetches in flight were at their cap, or a shard's
    /// queue to the fetcher was full.
    pub busy: AtomicU64,
}

impl Proxies {
    /// The proxy with `settings`, the configured proxies `named`, and `secret` to sign the
    /// URLs it hands out with.
    pub fn new(settings: ProxySettings, named: &[ProxyConfig], secret: &[u8]) -> Self {
        let proxies = Self {
            cache: cache::Cache::new(settings.cache_bytes),
            any_gated: settings.access.is_some().into(),
            settings,
            named: ArcSwap::from_pointee(HashMap::new()),
            any: Arc::default(),
            signer: Signer::new(secret),
            load: FetchLoad::default(),
        };
        proxies.reconfigure(named);
        proxies
    }

    /// Take `named` as the configured proxies (a reload): counts stay with the names that
    /// stay; what was fetched for a proxy whose URL or headers changed is fetched again.
    pub fn reconfigure(&self, named: &[ProxyConfig]) {
        let old = self.named.load();
        let table = named
            .iter()
            .map(|config| {
                let counters = old
                    .get(&config.name)
                    .map(|n| n.counters.clone())
                    .unwrap_or_default();
                (
                    config.name.clone(),
                    Arc::new(Named {
                        config: config.clone(),
                        counters,
                        gated: config.access.is_some().into(),
                    }),
                )
            })
            .collect::<HashMap<_, _>>();
        for (name, before) in old.iter() {
            if table
                .get(name)
                .is_some_and(|now| now.config != before.config)
            {
                tracing::info!(proxy = %name, "proxy changed: its playlists are fetched again");
            }
        }
        self.named.store(Arc::new(table));
    }

    /// Decide again which proxies are gated (triggers changed): `gated` says it of a proxy's
    /// session name (`proxy/{name}`, `proxy/_`) and its `access`.
    pub fn set_gates(&self, gated: impl Fn(&str, Option<&crate::config::AccessConfig>) -> bool) {
        for named in self.named.load().values() {
            let stream = format!("proxy/{}", named.config.name);
            named.gated.store(
                gated(&stream, named.config.access.as_ref()),
                Ordering::Relaxed,
            );
        }
        let any = gated(&format!("proxy/{ANY}"), self.settings.access.as_ref());
        self.any_gated.store(any, Ordering::Relaxed);
    }

    /// Whether viewers of upstream URLs named in paths need an access decision.
    pub fn any_gated(&self) -> bool {
        self.any_gated.load(Ordering::Relaxed)
    }

    /// The settings.
    pub fn settings(&self) -> &ProxySettings {
        &self.settings
    }

    /// The configured proxies now.
    pub fn named(&self) -> Arc<HashMap<String, Arc<Named>>> {
        self.named.load_full()
    }

    /// The counts of upstream URLs named in paths.
    pub fn any_counters(&self) -> &Arc<ProxyCounters> {
        &self.any
    }

    /// The counts of `scope`, if it exists.
    fn counters(&self, scope: &str) -> Option<Arc<ProxyCounters>> {
        if scope == ANY {
            return Some(self.any.clone());
        }
        self.named.load().get(scope).map(|n| n.counters.clone())
    }

    /// The answer to `rest`, a path under `/proxy/`: what was `fetched` for it when it was
    /// held for that, else from the cache when it is fresh there, else [`Route::Fetch`]
    /// (hold the request, ask the fetcher).
    /// A playlist asked for with a `token=` (or `tkn=`) in its query gets it in every URI,
    /// as a stream's does (the viewer's own copy, not for shared caches).
    pub fn route(
        &self,
        rest: &str,
        query: &str,
        now: Instant,
        fetched: Option<(&str, &Object)>,
    ) -> Route {
        let answer = |object: &Object| answer(object, query);
        match self.resource(rest) {
            Ok(resource) => {
                let key = resource.key();
                if let Some((_, object)) = fetched.filter(|(k, _)| *k == key) {
                    return answer(object);
                }
                let counters = self.counters(&resource.scope);
                if let Some(c) = &counters {
                    ProxyCounters::add(&c.requests, 1);
                }
                match self.cache.get(&key, now) {
                    Lookup::Fresh(object) => {
                        if let Some(c) = &counters {
                            ProxyCounters::add(&c.hits, 1);
                        }
                        answer(&object)
                    }
                    Lookup::Miss => Route::Fetch { key: key.into() },
                }
            }
            Err(route) => route,
        }
    }

    /// What `rest` names, or the answer when it names nothing the proxy serves.
    fn resource(&self, rest: &str) -> Result<Resource, Route> {
        let Some(path) = paths::parse(rest) else {
            return Err(Route::NotFound);
        };
        match path {
            ProxyPath::Top(id) => {
                if let Some(named) = self.named.load().get(&id) {
                    return Ok(Resource {
                        scope: id,
                        kind: Kind::TopPlaylist,
                        url: named.config.url.clone(),
                    });
                }
                let Some(url) = paths::decode_url(&id) else {
                    return Err(Route::NotFound);
                };
                self.any_allowed(&url)?;
                Ok(Resource {
                    scope: ANY.to_owned(),
                    kind: Kind::TopPlaylist,
                    url,
                })
            }
            ProxyPath::Slashed(url) => {
                self.any_allowed(&url)?;
                Err(Route::Status(Status {
                    code: 301,
                    text: "base64url names it here\n".into(),
                    headers: format!(
                        "Location: /proxy/{}.m3u8\r\nCache-Control: max-age=86400\r\n",
                        paths::encode_url(&url)
                    )
                    .into(),
                }))
            }
            ProxyPath::Child {
                scope,
                sig,
                url,
                playlist,
            } => {
                if !self.signer.verify(&scope, playlist, &url, &sig) {
                    return Err(refused(403, "not a URL this server handed out\n"));
                }
                if scope == ANY {
                    self.any_allowed(&url)?;
                } else if !self.named.load().contains_key(&scope) {
                    return Err(Route::NotFound);
                }
                Ok(Resource {
                    scope,
                    kind: if playlist {
                        Kind::Playlist
                    } else {
                        Kind::Media
                    },
                    url,
                })
            }
        }
    }

    /// The key of what `rest`, a path under `/proxy/`, names in a configured proxy (a
    /// stream's `proxy://` source pulls those, not upstream URLs named in paths).
    pub fn source_key(&self, rest: &str) -> Option<String> {
        match paths::parse(rest)? {
            ProxyPath::Top(name) if self.has(&name) => {}
            ProxyPath::Child { scope, .. } if scope != ANY => {}
            _ => return None,
        }
        self.resource(rest).ok().map(|r| r.key())
    }

    /// Whether a proxy is configured under `name`.
    pub fn has(&self, name: &str) -> bool {
        self.named.load().contains_key(name)
    }

    /// Configured proxy `name`'s top playlist as the proxy has it (the status and body of the
    /// upstream's answer, or of the error viewers get), or, when it is not fresh, the route
    /// that fetches it.
    pub fn top(
        &self,
        name: &str,
        now: Instant,
        fetched: Option<(&str, &Object)>,
    ) -> Result<(u16, bytes::Bytes), Route> {
        let Some(named) = self.named.load().get(name).cloned() else {
            return Err(Route::NotFound);
        };
        let key = Resource {
            scope: name.to_owned(),
            kind: Kind::TopPlaylist,
            url: named.config.url.clone(),
        }
        .key();
        if let Some((_, object)) = fetched.filter(|(k, _)| *k == key) {
            return Ok((object.status, object.body.clone()));
        }
        match self.cache.get(&key, now) {
            Lookup::Fresh(object) => Ok((object.status, object.body.clone())),
            Lookup::Miss => Err(Route::Fetch { key: key.into() }),
        }
    }

    /// Whether upstream URLs named in paths are served, and `url`'s host is one listed.
    fn any_allowed(&self, url: &str) -> Result<(), Route> {
        if !self.settings.any_url {
            ProxyCounters::add(&self.any.refused, 1);
            return Err(refused(
                403,
                "upstream URLs in the path are not served here (proxy_any_url)\n",
            ));
        }
        if !self.settings.host_allowed(url) {
            ProxyCounters::add(&self.any.refused, 1);
            return Err(refused(
                403,
                "that upstream host is not one this server proxies (proxy_hosts)\n",
            ));
        }
        Ok(())
    }
}

fn refused(code: u16, text: &'static str) -> Route {
    Route::Status(Status {
        code,
        text: text.into(),
        headers: "Cache-Control: no-store\r\n".into(),
    })
}

/// A viewer's answer from `object`, to a request with `query` (a recording's too).
pub(crate) fn answer(object: &Object, query: &str) -> Route {
    if object.status != 200 {
        return Route::Status(Status {
            code: object.status,
            text: String::from_utf8_lossy(&object.body).into_owned().into(),
            headers: "Cache-Control: no-store\r\n".into(),
        });
    }
    let playlist = object.content_type == "application/vnd.apple.mpegurl";
    let token = crate::http::token_pair(query).filter(|p| !p.contains(['"', '#']));
    if let (true, Some(pair)) = (playlist, token) {
        let personal = shardcast_protocols::hls::rewrite_uris(&object.body, |uri, _| {
            if uri.contains(':') {
                // Not one of the proxy's (data:, skd://): the player's as it was.
                return uri.to_owned();
            }
            let join = if uri.contains('?') { '&' } else { '?' };
            format!("{uri}{join}{pair}")
        });
        return Route::Document(Document {
            body: Body::Bytes(personal.into()),
            personal: true,
            ..Document::new(object.content_type, object.cache_control)
        });
    }
    Route::Document(Document {
        body: Body::Bytes(object.body.clone()),
        ranges: !playlist,
        ..Document::new(object.content_type, object.cache_control)
    })
}

#[cfg(test)]
mod tests;
