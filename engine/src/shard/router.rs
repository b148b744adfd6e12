//! Which answer a request gets on a shard: its path parsed once ([`Target`]), read against
//! the streams this shard knows, media requests handed to their output ([`crate::output`]),
//! pages made here; and the access gate (token decisions and sessions, wildcard instances,
//! triggers' rewrites) in front of viewers' requests.

use super::catalog::{Catalog, StreamInfo};
use super::Clock;
use crate::http::{Body, Document, Gate, RequestHead, Route, Router, Status};
use crate::output::{MediaRequest, Published, Target};
use crate::player;
use crate::session::{LocalSessions, SessionKey, Verdict};
use crate::site::Site;
use bytes::Bytes;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub(super) struct StreamsRouter<'a> {
    pub catalog: &'a Catalog,
    pub site: &'a Site,
    pub sessions: &'a LocalSessions,
    /// The turn's time.
    pub clock: Clock,
    /// The HLS proxy, when the server has one.
    pub proxies: Option<&'a crate::proxy::Proxies>,
    /// What the proxy just fetched for the request being resumed (its key and answer).
    pub fetched: Option<(&'a str, &'a crate::proxy::cache::Object)>,
}

impl StreamsRouter<'_> {
    fn stream(&self, name: &str) -> Option<&StreamInfo> {
        self.catalog.find(name).map(|(_, s)| &**s)
    }

    /// A viewer's request, answered by its output from what the stream published.
    fn media(&self, head: &RequestHead, request: &MediaRequest<'_>) -> Route {
        let Some((slot, info)) = self.catalog.find(request.stream) else {
            return Route::NotFound;
        };
        let published = Published {
            slot,
            hls: &info.hls_window,
            counters: &info.counters,
            cmaf: info.hls.cmaf,
            unix_ms: (self.clock.unix_ns / 1_000_000) as i64,
        };
        request.output.answer(&published, request.file, head)
    }

    /// `/{stream}/info.json`: URLs from the public base URL (configured, or from a trusted
    /// proxy), else from the request's Host.
    fn info(&self, info: &StreamInfo, head: &RequestHead) -> Route {
        let base = self.site.base(head).url;
        let window = info.hls_window.load_full();
        Route::Document(Document {
            body: Body::Bytes(player::info_json(
                &info.name,
                window.as_deref(),
                &info.counters,
                &base,
                (self.clock.unix_ns / 1_000_000) as i64,
            )),
            ..Document::new("application/json", "no-store")
        })
    }

    /// `/proxy/…`: a configured proxy's player page or stream info, else what the proxy
    /// serves.
    fn proxied(&self, proxies: &crate::proxy::Proxies, head: &RequestHead, rest: &str) -> Route {
        use crate::proxy::paths::{page, Page};
        match page(rest) {
            Some(Page::Player(name)) if proxies.has(name) => Route::Document(Document {
                body: Body::Bytes(Bytes::from(player::proxy_page(name))),
                ..Document::new("text/html; charset=utf-8", "no-cache")
            }),
            Some(Page::Info(name)) if proxies.has(name) => {
                match proxies.top(name, self.clock.mono, self.fetched) {
                    Ok((status, body)) => Route::Document(Document {
                        body: Body::Bytes(player::proxy_info_json(
                            name,
                            status,
                            &body,
                            &self.site.base(head).url,
                        )),
                        ..Document::new("application/json", "no-store")
                    }),
                    Err(route) => route,
                }
            }
            _ => proxies.route(rest, &head.query, self.clock.mono, self.fetched),
        }
    }

    /// `/`: the list of streams.
    fn index(&self) -> Route {
        let mut s = String::from(
            "shardcast streams: /{name}.html (player), /{name}/master.m3u8 and /{name}/index.m3u8 (HLS), /{name}.ts (progressive MPEG-TS), /{name}/info.json, /{name}/embed.js\n",
        );
        for (_, info) in self.catalog.streams() {
            s.push_str(&format!("{}\n", info.name));
        }
        Route::Document(Document {
            body: Body::Bytes(Bytes::from(s)),
            ..Document::new("text/plain; charset=utf-8", "no-cache")
        })
    }

    /// `/readyz`: 200 when every stream configured as required is live, else 503 naming
    /// those that are not.
    fn ready(&self) -> Route {
        let now_ms = (self.clock.unix_ns / 1_000_000) as i64;
        let waiting: Vec<&str> = self
            .catalog
            .streams()
            .filter(|(_, info)| info.config.required)
            .filter(|(_, info)| {
                let window = info.hls_window.load_full();
                player::state(window.as_deref(), now_ms) != player::StreamState::Live
            })
            .map(|(_, info)| info.name.as_str())
            .collect();
        if waiting.is_empty() {
            return Route::Document(Document {
                body: Body::Bytes(Bytes::from_static(b"ready\n")),
                ..Document::new("text/plain; charset=utf-8", "no-store")
            });
        }
        Route::Status(Status {
            code: 503,
            text: format!("not live: {}\n", waiting.join(", ")).into(),
            headers: "Cache-Control: no-store\r\n".into(),
        })
    }

    /// The answer to `target`.
    fn answer(&self, head: &RequestHead, target: &Target<'_>) -> Route {
        match target {
            Target::Index => self.index(),
            Target::Health => Route::Document(Document {
                body: Body::Bytes(Bytes::from_static(b"ok\n")),
                ..Document::new("text/plain; charset=utf-8", "no-store")
            }),
            Target::Ready => self.ready(),
            Target::PlayerScript => script(player::HLSJS, "hls.js", player::HLSJS_VERSION),
            Target::DashScript => script(player::DASHJS, "dash.js", player::DASHJS_VERSION),
            Target::Info(name) => self
                .stream(name)
                .map_or(Route::NotFound, |info| self.info(info, head)),
            Target::Embed(name) => self.stream(name).map_or(Route::NotFound, |info| {
                let base = self.site.base(head);
                Route::Document(Document {
                    body: Body::Bytes(Bytes::from(player::embed_js(
                        &info.name,
                        base.public.then_some(base.url.as_str()),
                    ))),
                    ..Document::new("text/javascript; charset=utf-8", "no-cache")
                })
            }),
            Target::PlayerPage(name) => self.stream(name).map_or(Route::NotFound, |info| {
                Route::Document(Document {
                    body: Body::Bytes(Bytes::from(player::page(&info.name))),
                    ..Document::new("text/html; charset=utf-8", "no-cache")
                })
            }),
            Target::Media(request) => self.media(head, request),
            Target::Proxy(rest) => match self.proxies {
                Some(proxies) => self.proxied(proxies, head, rest),
                None => Route::NotFound,
            },
            Target::Vod(vod) => self.recording(head, vod),
            Target::Unknown => Route::NotFound,
        }
    }

    /// `/vod/…`: a recording's page here; its playlist, segments and state from the disk,
    /// through the proxy's fetcher and cache (read off the shard, see [`crate::vod`]).
    fn recording(&self, head: &RequestHead, vod: &crate::vod::VodPath<'_>) -> Route {
        let Some(info) = self.stream(vod.stream) else {
            return Route::NotFound;
        };
        if vod.part == crate::vod::Part::Page {
            return Route::Document(Document {
                body: Body::Bytes(Bytes::from(player::recording_page(vod.file))),
                ..Document::new("text/html; charset=utf-8", "no-cache")
            });
        }
        let Some(path) = info.config.record.as_ref().and_then(|record| {
            crate::output::push_out::record::file_path(&record.path, &info.name, vod.file)
        }) else {
            return Route::NotFound;
        };
        let Some(proxies) = self.proxies else {
            return Route::NotFound;
        };
        let key = crate::vod::key(&path, vod.part);
        if let Some((_, object)) = self.fetched.filter(|(k, _)| *k == key) {
            return crate::proxy::answer(object, &head.query);
        }
        match proxies.cache.get(&key, self.clock.mono) {
            crate::proxy::cache::Lookup::Fresh(object) => {
                crate::proxy::answer(&object, &head.query)
            }
            crate::proxy::cache::Lookup::Miss => Route::Fetch { key: key.into() },
        }
    }
}

impl Router for StreamsRouter<'_> {
    fn route(&self, head: &RequestHead) -> (Gate, Route) {
        // A push is the push sources' to take or refuse (its key, its address, the
        // PUSH_REWRITE trigger), not a viewer's: no gate.
        if head.method.sends_body() {
            let route =
                crate::output::push_stream(&head.path).map_or(Route::NotFound, |s| Route::Push {
                    stream: s.to_owned(),
                });
            return (Gate::Open, route);
        }
        let target = Target::parse(&head.path);
        let route = self.answer(head, &target);
        (self.gate(head, &target), route)
    }
}

impl StreamsRouter<'_> {
    /// Media requests (progressive streams, playlists, segments) are a viewer's: keyed by
    /// stream, address, token and protocol; a stopped session's are refused.
    fn gate(&self, head: &RequestHead, target: &Target<'_>) -> Gate {
        if let Target::Proxy(rest) = target {
            return self.proxy_gate(head, rest);
        }
        // Pages and errors are nobody's session.
        let Some((name, protocol)) = target.media() else {
            return Gate::Open;
        };
        let Some((_, info)) = self.catalog.find(name) else {
            // Only of a template, with a wildcard it allows: anything else is 404 and
            // starts nothing (not even a question).
            let is_instance = name.split_once('+').is_some_and(|(base, wildcard)| {
                self.catalog
                    .find(base)
                    .is_some_and(|(_, b)| b.config.instance(wildcard).is_ok())
            });
            let plausible = !name.is_empty()
                && name.len() <= 128
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_+.".contains(&b));
            if !(is_instance || (self.catalog.fallback && plausible)) {
                return Gate::Open;
            }
            let session = SessionKey {
                stream: Arc::from(name),
                ip: self.site.client_ip(head),
                token: Arc::from(head.token.as_str()),
                protocol,
            };
            return match self.sessions.verdict(&session, self.clock.mono) {
                Some(Verdict {
                    redirect: Some(other),
                    ..
                }) => Gate::Redirect(elsewhere(self.site, head, name, other)),
                Some(Verdict {
                    refused: Some(status),
                    ..
                }) if *status != 404 => refusal(*status),
                // Decided, yet it does not run: it could not be made (or has ended).
                Some(_) => Gate::Refused(404, "no such stream"),
                None => Gate::Ask(session),
            };
        };
        let session = SessionKey {
            stream: info.key_name.clone(),
            ip: self.site.client_ip(head),
            token: Arc::from(head.token.as_str()),
            protocol,
        };
        if self.sessions.is_stopped(&session, self.clock.mono) {
            return Gate::Refused(403, "this session was stopped");
        }
        if !self.sessions.admits(&session) {
            return Gate::Refused(503, "too many viewers, try again later");
        }
        if !info.gated.load(Ordering::Relaxed) {
            return Gate::Viewer {
                session,
                headers: None,
                private: false,
            };
        }
        let private = !info.config.limits.public_cache;
        match self.sessions.verdict(&session, self.clock.mono) {
            None => Gate::Ask(session),
            Some(Verdict {
                refused: Some(status),
                ..
            }) => refusal(*status),
            Some(Verdict {
                redirect: Some(other),
                ..
            }) => Gate::Redirect(elsewhere(self.site, head, &info.name, other)),
            Some(Verdict { headers, .. }) => Gate::Viewer {
                headers: headers.clone(),
                session,
                private,
            },
        }
    }
}

impl StreamsRouter<'_> {
    /// Requests of a proxied stream are a viewer's HLS session of `proxy/{name}` (`proxy/_`
    /// for upstream URLs named in the path): counted, listed, logged and stoppable like a
    /// stream's. Its pages, and what no proxy serves, are nobody's.
    fn proxy_gate(&self, head: &RequestHead, rest: &str) -> Gate {
        let Some(proxies) = self.proxies else {
            return Gate::Open;
        };
        if crate::proxy::paths::page(rest).is_some() {
            return Gate::Open;
        }
        let scope = match rest.split_once('/') {
            Some((scope, _)) => scope,
            None => rest.strip_suffix(".m3u8").unwrap_or(rest),
        };
        let named = proxies.named();
        let (scope, gated) = match named.get(scope) {
            Some(n) => (scope, n.gated.load(Ordering::Relaxed)),
            None if proxies.settings().any_url => (crate::proxy::paths::ANY, proxies.any_gated()),
            None => return Gate::Open,
        };
        let session = SessionKey {
            stream: Arc::from(format!("proxy/{scope}")),
            ip: self.site.client_ip(head),
            token: Arc::from(head.token.as_str()),
            protocol: crate::session::Protocol::Hls,
        };
        if self.sessions.is_stopped(&session, self.clock.mono) {
            return Gate::Refused(403, "this session was stopped");
        }
        if !self.sessions.admits(&session) {
            return Gate::Refused(503, "too many viewers, try again later");
        }
        if !gated {
            return Gate::Viewer {
                session,
                headers: None,
                private: false,
            };
        }
        // Its access backend or a viewer trigger decides; what a viewer was allowed is its
        // own (no shared cache keeps it).
        match self.sessions.verdict(&session, self.clock.mono) {
            None => Gate::Ask(session),
            Some(Verdict {
                refused: Some(status),
                ..
            }) => refusal(*status),
            Some(Verdict { headers, .. }) => Gate::Viewer {
                headers: headers.clone(),
                session,
                private: true,
            },
        }
    }
}

/// A viewer's request refused with `status`, and why.
fn refusal(status: u16) -> Gate {
    Gate::Refused(
        status,
        match status {
            401 => "a valid token is needed to watch this stream",
            404 => "no such stream",
            429 => "too many new streams from your address, try again later",
            503 => "the access check is unavailable or busy, try again later",
            _ => "not allowed to watch this stream",
        },
    )
}

/// The request's URL (under the public base: through proxies too) with stream `from`
/// replaced by `to`.
fn elsewhere(site: &Site, head: &RequestHead, from: &str, to: &str) -> String {
    let rest = head
        .path
        .strip_prefix('/')
        .and_then(|p| p.strip_prefix(from))
        .unwrap_or("");
    let mut location = format!("{}{to}{rest}", site.base(head).url);
    if !head.query.is_empty() {
        location.push('?');
        location.push_str(&head.query);
    }
    location
}
/// One of the player's scripts from the binary: at a URL with its version, so cached for good.
fn script(bytes: &'static [u8], name: &str, version: &str) -> Route {
    Route::Document(Document {
        body: Body::Bytes(Bytes::from_static(bytes)),
        etag: Some(format!("\"{name}-{version}\"")),
        ..Document::new(
            "text/javascript; charset=utf-8",
            "public, max-age=31536000, immutable",
        )
    })
}
