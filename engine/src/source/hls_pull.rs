//! A pull of a live HLS stream: `hls+http://host/path/index.m3u8[?variant=N|max|min]`. The
//! server loads the playlist (a multivariant one: the variant asked for, by its place in the
//! list from 0, or the highest or lowest bandwidth; the highest by default), fetches each new
//! MPEG-TS segment once, in order, and loads the playlist again as RFC 8216 (6.3.4) says:
//! after the target duration when it changed, after half of it when it did not.
//!
//! It starts three segments from the live end. A discontinuity in the playlist, segments that
//! left the playlist before they were fetched, or an origin whose sequence starts again are
//! all a discontinuity here too. A playlist that fails to load is counted and asked for again
//! with the waits of [`super::Retry`]; a segment that fails is skipped, and counted as a
//! failure too.
//!
//! `proxy://NAME[?variant=…]` is the same pull of a configured HLS proxy's stream, through the
//! proxy's fetcher ([`crate::proxy::Fetcher::fetch`]): its headers and SSRF guard, and its
//! cache, so the origin is asked once for the stream and the proxy's viewers together.
//!
//! What it does not do: fMP4 (CMAF) segments, byte ranges, encrypted segments, low-latency
//! parts (they are read as whole segments), `https://`.

use super::attempts::Attempts;
use super::inlet::{Delivery, TaskDriver};
use super::{SourceContext, SourceError, SourceSpec};
use shardcast_protocols::hls::{parse, MediaPlaylist, Playlist};
use std::sync::Arc;
use std::time::Duration;

/// How long one playlist load may take.
const PLAYLIST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest URL taken.
const MAX_URL: usize = 2048;
/// Largest playlist read.
const MAX_PLAYLIST: usize = 1 << 20;
/// Segments from the live end a pull starts at.
const START_FROM_END: usize = 3;

/// Which variant of a multivariant playlist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// The highest BANDWIDTH.
    Highest,
    /// The lowest BANDWIDTH.
    Lowest,
    /// By its place in the playlist, from 0.
    Index(usize),
}

/// A pull of a live HLS stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HlsPullSpec {
    /// The playlist's URL, as asked of the origin (`variant=` taken out); for a configured
    /// proxy, its path on this server under a host never asked.
    pub url: String,
    /// The variant, when the playlist is a multivariant one.
    pub variant: Variant,
    /// The configured proxy it comes through (`proxy://NAME`), sharing the proxy's fetches
    /// and cache with the proxy's viewers; `None`: from the origin, with a client of its own.
    pub proxy: Option<String>,
}

/// Where a [`HlsPullSpec::proxy`] pull's URL points: paths of this server's proxy, under a
/// host that is never asked (the URL only resolves what playlists list).
const PROXY_BASE: &str = "http://proxy.invalid/proxy/";

/// `proxy://` then a configured proxy's name, and `?variant=` as for `hls+http://`.
pub(super) fn parse_proxy(rest: &str) -> Result<SourceSpec, SourceError> {
    let (name, query) = rest.split_once('?').unwrap_or((rest, ""));
    if !crate::proxy::paths::valid_name(name) {
        return Err(SourceError::Address(format!("proxy://{rest}")));
    }
    let mut variant = Variant::Highest;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        variant = match pair.split_once('=') {
            Some(("variant", value)) => parse_variant(value)?,
            _ => return Err(SourceError::Parameter(pair.to_owned())),
        };
    }
    Ok(SourceSpec::HlsPull(HlsPullSpec {
        url: format!("{PROXY_BASE}{name}.m3u8"),
        variant,
        proxy: Some(name.to_owned()),
    }))
}

fn parse_variant(value: &str) -> Result<Variant, SourceError> {
    Ok(match value {
        "max" => Variant::Highest,
        "min" => Variant::Lowest,
        n => Variant::Index(
            n.parse()
                .map_err(|_| SourceError::Parameter(format!("variant={n}")))?,
        ),
    })
}

/// `hls+http://` then the rest of the URL.
pub(super) fn parse_url(rest: &str) -> Result<SourceSpec, SourceError> {
    let full = format!("http://{rest}");
    let bad = || SourceError::Address(format!("hls+{full}"));
    if full.len() > MAX_URL
        || rest.starts_with('/')
        || full.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(bad());
    }
    let mut url = reqwest::Url::parse(&full).map_err(|_| bad())?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad());
    }
    let mut variant = Variant::Highest;
    let mut kept = Vec::new();
    for (key, value) in url.query_pairs() {
        if key == "variant" {
            variant = parse_variant(&value)?;
        } else {
            kept.push((key.into_owned(), value.into_owned()));
        }
    }
    if kept.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(kept);
    }
    Ok(SourceSpec::HlsPull(HlsPullSpec {
        url: url.to_string(),
        variant,
        proxy: None,
    }))
}

/// What to do after a media playlist was loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Plan {
    /// The segments to fetch now, in order: media sequence, URI, and whether a discontinuity
    /// comes before it.
    pub fetch: Vec<(u64, String, bool)>,
    /// Segments that left the playlist before they could be fetched.
    pub missed: u64,
    /// When to load the playlist again.
    pub reload_after: Duration,
}

/// Which segments of a live media playlist are new, and when to load it again. Sans-IO.
#[derive(Debug, Default)]
pub(super) struct Follower {
    /// The next media sequence to fetch, once a playlist was loaded.
    next: Option<u64>,
}

impl Follower {
    /// `playlist` was loaded: what to fetch, and when to load it again.
    pub(super) fn loaded(&mut self, playlist: &MediaPlaylist) -> Plan {
        let first = playlist.media_sequence;
        let count = playlist.segments.len() as u64;
        let end = first + count;
        let target = Duration::from_secs(playlist.target_duration.max(1));
        let (start, mut discontinuity, missed) = match self.next {
            // The first load: near the live end.
            None => (
                end.saturating_sub(START_FROM_END as u64).max(first),
                false,
                0,
            ),
            // Segments went before they were fetched.
            Some(next) if next < first => (first, true, first - next),
            // The origin started its sequence again.
            Some(next) if next > end => (first, true, 0),
            Some(next) => (next, false, 0),
        };
        let mut fetch = Vec::new();
        for (sequence, segment) in (first..).zip(&playlist.segments) {
            if sequence < start {
                continue;
            }
            fetch.push((
                sequence,
                segment.uri.clone(),
                discontinuity || segment.discontinuity,
            ));
            discontinuity = false;
        }
        self.next = Some(end.max(start));
        let reload_after = if fetch.is_empty() { target / 2 } else { target };
        Plan {
            fetch,
            missed,
            reload_after,
        }
    }
}

/// Start `spec`'s task: the home shard's side of it takes what it delivers.
pub(super) fn start(spec: &HlsPullSpec, context: &SourceContext<'_>) -> TaskDriver {
    let spec = spec.clone();
    let (stream, counters, idle) = (
        context.stream.to_owned(),
        context.counters.clone(),
        context.idle,
    );
    let fetcher = context.fetcher.cloned();
    TaskDriver::start(context, None, move |inlet| async move {
        let origin = match (&spec.proxy, fetcher) {
            (None, _) => match super::pull::client(&stream) {
                Some(client) => Origin::Direct(client),
                None => return,
            },
            (Some(_), Some(fetcher)) => Origin::Proxy(fetcher),
            (Some(name), None) => {
                tracing::error!(stream = %stream, "proxy://{name}: this server's proxy has no HTTP client");
                return;
            }
        };
        let mut attempts = Attempts::new(stream.clone(), counters);
        let mut follower = Follower::default();
        let mut media_url: Option<reqwest::Url> = None;
        let mut up = false;
        loop {
            let url = media_url.clone().map_or(spec.url.clone(), String::from);
            let playlist = match origin.playlist(&url).await {
                Ok(Playlist::Media(m)) => m,
                Ok(Playlist::Multivariant(m)) => match pick(&m.variants, spec.variant)
                    .and_then(|uri| reqwest::Url::parse(&url).ok()?.join(uri).ok())
                {
                    Some(media) => {
                        media_url = Some(media);
                        continue;
                    }
                    None => {
                        attempts.failed(format!("{url}: no such variant ({:?})", spec.variant));
                        attempts.wait().await;
                        continue;
                    }
                },
                Err(why) => {
                    if up {
                        up = false;
                        attempts.down(&format!("the pull of {url} stopped"));
                    }
                    attempts.failed(format!("cannot load {url}: {why}"));
                    media_url = None;
                    attempts.wait().await;
                    continue;
                }
            };
            if !up {
                up = true;
                attempts.up(&format!("pulling HLS from {url}"));
                inlet.deliver(Delivery::Restart).await;
            }
            let plan = follower.loaded(&playlist);
            if plan.missed > 0 {
                tracing::warn!(stream = %stream, missed = plan.missed, "segments left {url} before they were fetched");
            }
            let Ok(base) = reqwest::Url::parse(&url) else {
                continue;
            };
            for (sequence, uri, discontinuity) in plan.fetch {
                if discontinuity {
                    inlet.deliver(Delivery::Restart).await;
                }
                let Ok(segment) = base.join(&uri) else {
                    continue;
                };
                if let Err(why) = origin.segment(segment.as_str(), idle, &inlet).await {
                    attempts.failed(format!("segment {sequence} ({segment}) skipped: {why}"));
                    inlet.deliver(Delivery::Restart).await;
                }
            }
            if playlist.end_list {
                attempts.down(&format!("{url} ended (EXT-X-ENDLIST)"));
                up = false;
                follower = Follower::default();
                attempts.wait().await;
                continue;
            }
            tokio::time::sleep(plan.reload_after).await;
        }
    })
}

/// The variant's URI.
fn pick(variants: &[shardcast_protocols::hls::VariantStream], variant: Variant) -> Option<&str> {
    let chosen = match variant {
        Variant::Highest => variants.iter().max_by_key(|v| v.bandwidth),
        Variant::Lowest => variants.iter().min_by_key(|v| v.bandwidth),
        Variant::Index(i) => variants.get(i),
    };
    chosen.map(|v| v.uri.as_str())
}

/// Where a pull's playlists and segments come from.
enum Origin {
    /// The origin's server, through the pull's own client.
    Direct(reqwest::Client),
    /// A configured proxy's fetcher and cache: what the proxy's viewers are served, fetched
    /// upstream once for them and the stream.
    Proxy(Arc<crate::proxy::Fetcher>),
}

/// Segments from the proxy are handed over in pieces of this size (shared, not copied).
const PROXY_PIECE: usize = 64 * 1024;

impl Origin {
    /// Load and parse the playlist at `url`.
    async fn playlist(&self, url: &str) -> Result<Playlist, String> {
        match self {
            Origin::Direct(client) => load(client, url).await,
            Origin::Proxy(fetcher) => {
                let body = Self::proxied(fetcher, url).await?;
                parse(&body).map_err(|e| e.to_string())
            }
        }
    }

    /// Fetch the segment at `url`, handing its bytes over as they come.
    async fn segment(&self, url: &str, idle: Duration, inlet: &super::Inlet) -> Result<(), String> {
        match self {
            Origin::Direct(client) => fetch(client, url, idle, inlet).await,
            Origin::Proxy(fetcher) => {
                let body = Self::proxied(fetcher, url).await?;
                let received = crate::sys::unix_ns();
                for start in (0..body.len()).step_by(PROXY_PIECE) {
                    let piece = body.slice(start..body.len().min(start + PROXY_PIECE));
                    inlet.deliver(Delivery::Bytes(piece, received)).await;
                }
                Ok(())
            }
        }
    }

    /// What the proxy has at `url` (a path under [`PROXY_BASE`]), as its viewers get it.
    async fn proxied(
        fetcher: &Arc<crate::proxy::Fetcher>,
        url: &str,
    ) -> Result<bytes::Bytes, String> {
        let key = url
            .strip_prefix(PROXY_BASE)
            .and_then(|rest| fetcher.proxies().source_key(rest))
            .ok_or_else(|| "no such configured proxy".to_owned())?;
        let object = fetcher.fetch(key.into()).await;
        if object.status != 200 {
            let why = String::from_utf8_lossy(&object.body);
            return Err(format!(
                "the proxy answered {}: {}",
                object.status,
                why.trim()
            ));
        }
        Ok(object.body.clone())
    }
}

/// Load and parse a playlist.
async fn load(client: &reqwest::Client, url: &str) -> Result<Playlist, String> {
    let answer = tokio::time::timeout(PLAYLIST_TIMEOUT, client.get(url).send())
        .await
        .map_err(|_| format!("no answer in {PLAYLIST_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    if !answer.status().is_success() {
        return Err(format!("answered {}", answer.status()));
    }
    if answer
        .content_length()
        .is_some_and(|n| n > MAX_PLAYLIST as u64)
    {
        return Err("a playlist over 1 MiB".to_owned());
    }
    // Read piece by piece: an answer without a length (chunked) that does not end is cut at
    // the bound, not held whole.
    let mut answer = answer;
    let mut body = Vec::new();
    let whole = async {
        while let Some(piece) = answer.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + piece.len() > MAX_PLAYLIST {
                return Err("a playlist over 1 MiB".to_owned());
            }
            body.extend_from_slice(&piece);
        }
        Ok(())
    };
    tokio::time::timeout(PLAYLIST_TIMEOUT, whole)
        .await
        .map_err(|_| format!("no whole playlist in {PLAYLIST_TIMEOUT:?}"))??;
    parse(&body).map_err(|e| e.to_string())
}

/// Fetch one segment, handing its bytes over as they come.
async fn fetch(
    client: &reqwest::Client,
    url: &str,
    idle: Duration,
    inlet: &super::Inlet,
) -> Result<(), String> {
    let mut answer = tokio::time::timeout(idle, client.get(url).send())
        .await
        .map_err(|_| "no answer".to_owned())?
        .map_err(|e| e.to_string())?;
    if !answer.status().is_success() {
        return Err(format!("answered {}", answer.status()));
    }
    loop {
        match tokio::time::timeout(idle, answer.chunk()).await {
            Ok(Ok(Some(bytes))) => {
                inlet
                    .deliver(Delivery::Bytes(bytes, crate::sys::unix_ns()))
                    .await
            }
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("the body stalled".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardcast_protocols::hls::MediaSegment;

    fn playlist(first: u64, count: usize, discontinuity_at: Option<u64>) -> MediaPlaylist {
        MediaPlaylist {
            target_duration: 2,
            media_sequence: first,
            segments: (first..first + count as u64)
                .map(|n| MediaSegment {
                    uri: format!("{n}.ts"),
                    duration: Duration::from_secs(2),
                    discontinuity: Some(n) == discontinuity_at,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn fetched(plan: &Plan) -> Vec<(u64, bool)> {
        plan.fetch.iter().map(|(n, _, d)| (*n, *d)).collect()
    }

    /// An origin that answers a playlist request with a chunked body that never ends: the
    /// load gives up at 1 MiB, having held no more.
    #[test]
    fn an_endless_playlist_is_cut_at_its_bound() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = server.local_addr().unwrap();
            let origin = tokio::spawn(async move {
                let (mut conn, _) = server.accept().await.unwrap();
                let mut head = [0u8; 1024];
                let _ = conn.read(&mut head).await;
                conn.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    .await
                    .unwrap();
                let line = format!("#EXTINF:1.0,\n{}.ts\n", "x".repeat(4000));
                let chunk = format!("{:x}\r\n{line}\r\n", line.len());
                let mut sent = 0usize;
                while conn.write_all(chunk.as_bytes()).await.is_ok() {
                    sent += line.len();
                }
                sent
            });
            let _ = rustls::crypto::ring::default_provider().install_default();
            let client = super::super::pull::client("endless").unwrap();
            let result = load(&client, &format!("http://{addr}/index.m3u8")).await;
            assert_eq!(result.err().as_deref(), Some("a playlist over 1 MiB"));
            drop(client);
            let sent = origin.await.unwrap();
            assert!(sent > 1 << 20, "the origin sent {sent} bytes");
        });
    }

    #[test]
    fn follows_a_live_playlist_segment_by_segment() {
        let mut f = Follower::default();
        // Starts three from the end.
        let plan = f.loaded(&playlist(10, 6, None));
        assert_eq!(fetched(&plan), [(13, false), (14, false), (15, false)]);
        assert_eq!(plan.reload_after, Duration::from_secs(2));
        // Unchanged: nothing new, half the target duration.
        let plan = f.loaded(&playlist(10, 6, None));
        assert!(plan.fetch.is_empty());
        assert_eq!(plan.reload_after, Duration::from_secs(1));
        // One more, with a discontinuity before it.
        let plan = f.loaded(&playlist(11, 6, Some(16)));
        assert_eq!(fetched(&plan), [(16, true)]);
        // Fell behind: what left is counted, the next is a discontinuity.
        let plan = f.loaded(&playlist(20, 6, None));
        assert_eq!(plan.missed, 3);
        assert_eq!(fetched(&plan)[0], (20, true));
        assert_eq!(fetched(&plan).len(), 6);
        // The origin started again from 0.
        let plan = f.loaded(&playlist(0, 2, None));
        assert_eq!(fetched(&plan), [(0, true), (1, false)]);
        assert_eq!(plan.missed, 0);
    }

    #[test]
    fn parses_hls_urls_and_takes_variant_out() {
        let SourceSpec::HlsPull(p) =
            SourceSpec::parse("hls+http://origin:8080/live/master.m3u8?variant=1&k=v").unwrap()
        else {
            panic!()
        };
        assert_eq!(p.url, "http://origin:8080/live/master.m3u8?k=v");
        assert_eq!(p.variant, Variant::Index(1));
        let SourceSpec::HlsPull(p) = SourceSpec::parse("hls+http://o/i.m3u8?variant=min").unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (p.url.as_str(), p.variant),
            ("http://o/i.m3u8", Variant::Lowest)
        );
        for bad in [
            "hls+http://",
            "hls+http:///x.m3u8",
            "hls+http://o/x.m3u8?variant=big",
        ] {
            assert!(SourceSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_configured_proxies_as_sources() {
        let SourceSpec::HlsPull(p) = SourceSpec::parse("proxy://news?variant=2").unwrap() else {
            panic!()
        };
        assert_eq!(
            (p.url.as_str(), p.variant, p.proxy.as_deref()),
            (
                "http://proxy.invalid/proxy/news.m3u8",
                Variant::Index(2),
                Some("news")
            )
        );
        for bad in [
            "proxy://",
            "proxy://_",
            "proxy://a/b",
            "proxy://news?variant=big",
            "proxy://news?x=1",
        ] {
            assert!(SourceSpec::parse(bad).is_err(), "{bad}");
        }
    }
}
