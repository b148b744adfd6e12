use super::*;
use crate::session::{Links, ShardCommand, ShardLink};
use std::collections::HashMap as Map;
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn settings(any_url: bool, hosts: &[&str]) -> ProxySettings {
    ProxySettings {
        any_url,
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        allow_addresses: vec!["127.0.0.0/8".into()],
        timeout_s: 1.0,
        ..ProxySettings::default()
    }
}

fn named(name: &str, url: &str) -> ProxyConfig {
    ProxyConfig {
        name: name.into(),
        url: url.into(),
        headers: vec![("Referer".into(), "https://site.example/".into())],
        access: None,
    }
}

fn code(route: &Route) -> u16 {
    match route {
        Route::Status(s) => s.code,
        Route::Document(_) => 200,
        Route::NotFound => 404,
        Route::Fetch { .. } => 0,
        other => panic!("{other:?}"),
    }
}

#[test]
fn paths_name_configured_proxies_and_allowed_upstreams_only() {
    let now = Instant::now();
    let master = "http://origin.example/live/master.m3u8";
    let closed = Proxies::new(settings(false, &[]), &[named("news", master)], b"k");
    // A configured proxy: fetched (nothing is cached yet).
    let Route::Fetch { key } = closed.route("news.m3u8", "", now, None) else {
        panic!()
    };
    assert_eq!(
        Resource::from_key(&key),
        Some(Resource {
            scope: "news".into(),
            kind: Kind::TopPlaylist,
            url: master.into()
        })
    );
    // An upstream URL in the path: refused while proxy_any_url is off.
    let id = paths::encode_url("http://cdn.example/a.m3u8");
    assert_eq!(
        code(&closed.route(&format!("{id}.m3u8"), "", now, None)),
        403
    );
    assert_eq!(code(&closed.route("nothing.m3u8", "", now, None)), 404);
    assert_eq!(closed.any_counters().refused.load(Ordering::Relaxed), 1);
    // On, for the hosts listed.
    let open = Proxies::new(settings(true, &[".example"]), &[], b"k");
    assert_eq!(code(&open.route(&format!("{id}.m3u8"), "", now, None)), 0);
    let other = paths::encode_url("http://elsewhere.test/a.m3u8");
    assert_eq!(
        code(&open.route(&format!("{other}.m3u8"), "", now, None)),
        403
    );
    // Standard base64 with `/` in it: sent to its base64url form.
    let slashed = "http://cdn.example/??>?";
    let standard = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, slashed);
    assert!(standard.contains('/'), "{standard}");
    let Route::Status(s) = open.route(&format!("{standard}.m3u8"), "", now, None) else {
        panic!()
    };
    assert_eq!(s.code, 301);
    assert!(s
        .headers
        .contains(&paths::encode_url(&paths::decode_url(&standard).unwrap())));
}

#[test]
fn handed_out_urls_are_checked_and_answered_from_the_cache() {
    let now = Instant::now();
    let proxies = Proxies::new(
        settings(false, &[]),
        &[named("news", "http://o.example/m.m3u8")],
        b"k",
    );
    let segment = "http://o.example/seg-1.ts";
    let path = proxies
        .signer
        .child_path(Kind::TopPlaylist, "news", segment, false);
    let Route::Fetch { key } = proxies.route(&path, "", now, None) else {
        panic!("{path}")
    };
    // Signed for another scope, kind or URL: 403; for a proxy that went: 404.
    let forged = path.replace("news/", "other/");
    assert_eq!(code(&proxies.route(&forged, "", now, None)), 403);
    let as_playlist = path.replace(".ts", ".m3u8");
    assert_eq!(code(&proxies.route(&as_playlist, "", now, None)), 403);
    // Once fetched: from the cache, ranges served; what a held request waited for is its.
    let object = Arc::new(Object {
        status: 200,
        body: bytes::Bytes::from_static(b"TS"),
        content_type: "video/mp2t",
        fresh_until: None,
        cache_control: "public, max-age=60",
        children: Vec::new(),
    });
    assert_eq!(
        code(&proxies.route(&path, "", now, Some((&key, &object)))),
        200
    );
    proxies.cache.insert(key.clone(), object);
    let Route::Document(d) = proxies.route(&path, "", now, None) else {
        panic!()
    };
    assert!(d.ranges);
    let counters = proxies.named().get("news").unwrap().counters.clone();
    assert_eq!(counters.requests.load(Ordering::Relaxed), 2);
    assert_eq!(counters.hits.load(Ordering::Relaxed), 1);
    // A playlist asked for with a token: the token in every URI of the proxy's, the
    // viewer's own copy.
    let list =
        proxies
            .signer
            .child_path(Kind::TopPlaylist, "news", "http://o.example/v.m3u8", true);
    let Route::Fetch { key } = proxies.route(&list, "", now, None) else {
        panic!()
    };
    proxies.cache.insert(
        key,
        Arc::new(Object {
            status: 200,
            body: bytes::Bytes::from_static(
                b"#EXTM3U\n#EXT-X-KEY:METHOD=AES-128,URI=\"data:text/plain;base64,AA==\"\n#EXT-X-MAP:URI=\"a/b/c.mp4\"\n#EXTINF:2,\nx/y/z.ts?q=1\n",
            ),
            content_type: "application/vnd.apple.mpegurl",
            fresh_until: None,
            cache_control: "no-cache",
            children: Vec::new(),
        }),
    );
    let Route::Document(d) = proxies.route(&list, "a=1&token=t%201", now, None) else {
        panic!()
    };
    let Body::Bytes(body) = &d.body else { panic!() };
    assert!(d.personal);
    assert_eq!(
        std::str::from_utf8(body).unwrap(),
        "#EXTM3U\n#EXT-X-KEY:METHOD=AES-128,URI=\"data:text/plain;base64,AA==\"\n#EXT-X-MAP:URI=\"a/b/c.mp4?token=t%201\"\n#EXTINF:2,\nx/y/z.ts?q=1&token=t%201\n"
    );
    proxies.reconfigure(&[]);
    assert_eq!(code(&proxies.route(&path, "", now, None)), 404);
}

/// An origin on 127.0.0.1: `files` by path (status, body, delay), and the requests it had.
struct Origin {
    addr: std::net::SocketAddr,
    asked: Arc<Mutex<Vec<(String, String)>>>,
}

impl Origin {
    async fn start(files: Map<&'static str, (u16, String, u64)>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let files = Arc::new(files);
        let log = asked.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let (files, log) = (files.clone(), log.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let n = conn.read(&mut buf).await.unwrap_or(0);
                    let head = String::from_utf8_lossy(&buf[..n]).to_string();
                    let path = head.split(' ').nth(1).unwrap_or("").to_string();
                    let referer = head
                        .lines()
                        .find_map(|l| l.strip_prefix("referer: "))
                        .unwrap_or("")
                        .to_string();
                    log.lock().unwrap().push((path.clone(), referer));
                    let (status, body, delay) =
                        files
                            .get(path.as_str())
                            .cloned()
                            .unwrap_or((404, String::new(), 0));
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    let answer = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(answer.as_bytes()).await;
                });
            }
        });
        Self { addr, asked }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn count(&self, path: &str) -> usize {
        self.asked
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .count()
    }
}

/// The fetcher, with one shard's link to ask through.
struct Rig {
    proxies: Arc<Proxies>,
    link: ShardLink,
    fetcher: Arc<Fetcher>,
}

impl Rig {
    fn start(proxies: Proxies) -> Self {
        let proxies = Arc::new(proxies);
        let link = ShardLink::new();
        let links = Links {
            shards: vec![link.clone()],
            wakers: vec![Arc::new(crate::wake::Nobody)],
        };
        let fetcher =
            Fetcher::new(proxies.clone(), links, tokio::runtime::Handle::current()).unwrap();
        tokio::spawn(fetcher.clone().run(link.fetch_asked.clone()));
        Self {
            proxies,
            link,
            fetcher,
        }
    }

    /// Ask for what `rest` names as a shard does, and wait for the answer.
    async fn get(&self, rest: &str) -> Arc<Object> {
        let key: Arc<str> = match self.proxies.route(rest, "", Instant::now(), None) {
            Route::Fetch { key } => key,
            other => panic!("{rest}: {other:?}"),
        };
        self.link.fetches.push(key.clone()).unwrap();
        self.link.fetch_asked.notify_one();
        self.answer(&key).await
    }

    async fn answer(&self, key: &str) -> Arc<Object> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(ShardCommand::Fetched(k, object)) = self.link.commands.pop() {
                if &*k == key {
                    return object;
                }
            }
            assert!(Instant::now() < deadline, "no answer for {key}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn text(object: &Object) -> String {
    String::from_utf8_lossy(&object.body).into_owned()
}

/// The path under `/proxy/` a line of a rewritten top playlist points to.
fn under(line: &str) -> &str {
    line.trim_start_matches("../../")
}

#[tokio::test]
async fn playlists_are_rewritten_and_each_resource_is_fetched_once() {
    let master = "#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"en\",URI=\"audio/en.m3u8\"\n#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=1000,URI=\"iframes.m3u8\"\n#EXT-X-STREAM-INF:BANDWIDTH=800000,AUDIO=\"a\"\nlow/index.m3u8?sig=abc\n";
    let media = "#EXTM3U\n#EXT-X-VERSION:4\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n#EXT-X-KEY:METHOD=AES-128,URI=\"/keys/k1\",IV=0x1\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:2.0,\nseg7.ts\n#EXT-X-BYTERANGE:1000@0\n#EXTINF:2.0,\nall.ts\n#EXT-X-CUSTOM-TAG:kept\n#EXTINF:2.0,\nhttp://cdn.invalid/seg9.ts\n";
    let origin = Origin::start(Map::from([
        ("/live/master.m3u8", (200, master.to_string(), 0)),
        ("/live/low/index.m3u8?sig=abc", (200, media.to_string(), 0)),
        ("/live/low/seg7.ts", (200, "SEGMENT-7".to_string(), 300)),
        ("/keys/k1", (200, "0123456789abcdef".to_string(), 0)),
    ]))
    .await;
    let rig = Rig::start(Proxies::new(
        settings(false, &[]),
        &[named("news", &origin.url("/live/master.m3u8"))],
        b"k",
    ));
    let top = rig.get("news.m3u8").await;
    assert_eq!(top.status, 200, "{}", text(&top));
    let top_text = text(&top);
    // Every URI through the proxy, relative to /proxy/; every other byte as it was.
    assert!(
        !top_text.contains("audio/en.m3u8") && !top_text.contains("low/index"),
        "{top_text}"
    );
    assert!(
        top_text.contains("#EXT-X-STREAM-INF:BANDWIDTH=800000,AUDIO=\"a\"\nnews/"),
        "{top_text}"
    );
    assert_eq!(top_text.lines().count(), master.lines().count());
    let variant = top_text.lines().last().unwrap();
    assert!(variant.ends_with(".m3u8"), "{variant}");
    let media_out = rig.get(under(variant)).await;
    let media_text = text(&media_out);
    assert_eq!(media_out.status, 200, "{media_text}");
    assert_eq!(
        origin.count("/live/low/index.m3u8?sig=abc"),
        1,
        "the query string is kept"
    );
    for kept in [
        "#EXT-X-BYTERANGE:1000@0",
        "#EXT-X-CUSTOM-TAG:kept",
        "METHOD=AES-128",
        ",IV=0x1",
    ] {
        assert!(media_text.contains(kept), "{kept}: {media_text}");
    }
    // From a playlist two levels down: up two, then down.
    let segment = media_text.lines().find(|l| l.ends_with(".ts")).unwrap();
    assert!(segment.starts_with("../../news/"), "{segment}");
    // Prefetched: the newest two segments were asked for before anyone did; seg7 (slow)
    // may still be in flight. Viewers asking now share one fetch.
    let mut waits = Vec::new();
    for _ in 0..20 {
        let rig_key = match rig.proxies.route(under(segment), "", Instant::now(), None) {
            Route::Fetch { key } => key,
            Route::Document(_) => break,
            other => panic!("{other:?}"),
        };
        rig.link.fetches.push(rig_key.clone()).unwrap();
        waits.push(rig_key);
    }
    rig.link.fetch_asked.notify_one();
    if let Some(key) = waits.first() {
        let object = rig.answer(key).await;
        assert_eq!(text(&object), "SEGMENT-7");
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(origin.count("/live/low/seg7.ts"), 1);
    let Route::Document(d) = rig.proxies.route(under(segment), "", Instant::now(), None) else {
        panic!()
    };
    assert_eq!(d.content_type, "video/mp2t");
    // The key, through the proxy, with the proxy's headers.
    let key_line = media_text
        .lines()
        .find(|l| l.starts_with("#EXT-X-KEY"))
        .unwrap();
    let key_uri = key_line
        .split("URI=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert_eq!(text(&*rig.get(under(key_uri)).await), "0123456789abcdef");
    assert!(origin
        .asked
        .lock()
        .unwrap()
        .iter()
        .all(|(_, referer)| referer == "https://site.example/"));
    // A live playlist is fetched again after half its target duration, not before.
    assert!(matches!(
        rig.proxies.route(under(variant), "", Instant::now(), None),
        Route::Document(_)
    ));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(matches!(
        rig.proxies.route(under(variant), "", Instant::now(), None),
        Route::Fetch { .. }
    ));
}

#[tokio::test]
async fn upstream_failures_reach_viewers_as_404_502_504_and_refusals_as_403() {
    let origin = Origin::start(Map::from([
        ("/broken.m3u8", (500, "oops".to_string(), 0)),
        ("/slow.m3u8", (200, "#EXTM3U\n".to_string(), 3000)),
        ("/html.m3u8", (200, "<html>".to_string(), 0)),
    ]))
    .await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}/x.m3u8", dead.local_addr().unwrap());
    drop(dead);
    let rig = Rig::start(Proxies::new(settings(true, &["*"]), &[], b"k"));
    for (url, status) in [
        (origin.url("/missing.m3u8"), 404),
        (origin.url("/broken.m3u8"), 502),
        (origin.url("/html.m3u8"), 502),
        (dead_url, 502),
        (origin.url("/slow.m3u8"), 504),
    ] {
        let object = rig.get(&format!("{}.m3u8", paths::encode_url(&url))).await;
        assert_eq!(object.status, status, "{url}: {}", text(&object));
    }
    // A 5xx is asked again (with backoff), a 404 is not.
    assert_eq!(origin.count("/missing.m3u8"), 1);
    assert_eq!(origin.count("/broken.m3u8"), 3);
    // Without the loopback allowance: refused before any connection.
    let strict = Rig::start(Proxies::new(
        ProxySettings {
            allow_addresses: Vec::new(),
            ..settings(true, &["*"])
        },
        &[],
        b"k",
    ));
    for url in [
        origin.url("/missing.m3u8"),
        format!("http://localhost:{}/x.m3u8", origin.addr.port()),
        format!("http://[::ffff:127.0.0.1]:{}/x.m3u8", origin.addr.port()),
    ] {
        let object = strict
            .get(&format!("{}.m3u8", paths::encode_url(&url)))
            .await;
        assert_eq!(object.status, 403, "{url}: {}", text(&object));
    }
    assert_eq!(origin.count("/missing.m3u8"), 1);
    assert_eq!(
        strict
            .proxies
            .any_counters()
            .refused
            .load(Ordering::Relaxed),
        3
    );
}

#[tokio::test]
async fn fetches_in_flight_and_answers_too_large_are_bounded() {
    let origin = Origin::start(Map::from([
        (
            "/slow.m3u8",
            (
                200,
                "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-ENDLIST\n".to_string(),
                800,
            ),
        ),
        (
            "/big.m3u8",
            (200, format!("#EXTM3U\n#{}\n", "x".repeat(4096)), 0),
        ),
    ]))
    .await;
    let rig = Rig::start(Proxies::new(
        ProxySettings {
            max_fetches: 1,
            max_object: 1024,
            ..settings(true, &["*"])
        },
        &[],
        b"k",
    ));
    // One fetch in flight at most: a second resource asked for meanwhile gets 503 at once.
    let slow = format!("{}.m3u8", paths::encode_url(&origin.url("/slow.m3u8")));
    let Route::Fetch { key: slow_key } = rig.proxies.route(&slow, "", Instant::now(), None) else {
        panic!()
    };
    rig.link.fetches.push(slow_key.clone()).unwrap();
    rig.link.fetch_asked.notify_one();
    while origin.count("/slow.m3u8") == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    let other = rig
        .get(&format!(
            "{}.m3u8",
            paths::encode_url(&origin.url("/other.m3u8"))
        ))
        .await;
    assert_eq!(other.status, 503, "{}", text(&other));
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(
        (
            rig.proxies.load.busy.load(Ordering::Relaxed),
            rig.proxies.load.in_flight.load(Ordering::Relaxed)
        ),
        (1, 1)
    );
    assert_eq!(origin.count("/other.m3u8"), 0);
    // The 503 is not kept: asked again once the slow one is done, it is fetched.
    assert_eq!(rig.answer(&slow_key).await.status, 200);
    let other = rig
        .get(&format!(
            "{}.m3u8",
            paths::encode_url(&origin.url("/other.m3u8"))
        ))
        .await;
    assert_eq!(other.status, 404);
    // Larger than proxy_max_object: 502, and counted as an upstream error.
    let big = rig
        .get(&format!(
            "{}.m3u8",
            paths::encode_url(&origin.url("/big.m3u8"))
        ))
        .await;
    assert_eq!(big.status, 502);
    assert!(text(&big).contains("proxy_max_object"), "{}", text(&big));
    assert_eq!(rig.proxies.any_counters().errors.load(Ordering::Relaxed), 2);
    assert_eq!(rig.proxies.load.in_flight.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_stream_pulling_a_configured_proxy_shares_its_fetches_with_viewers() {
    let media =
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:1\n#EXTINF:2.0,\nseg1.ts\n";
    let origin = Origin::start(Map::from([
        ("/live/index.m3u8", (200, media.to_string(), 0)),
        ("/live/seg1.ts", (200, "SEGMENT-1".to_string(), 300)),
    ]))
    .await;
    let rig = Rig::start(Proxies::new(
        settings(true, &["127.0.0.1"]),
        &[named("news", &origin.url("/live/index.m3u8"))],
        b"k",
    ));
    // The stream's task asks for the top playlist by the key its path names.
    let key = rig.proxies.source_key("news.m3u8").unwrap();
    let top = rig.fetcher.fetch(key.into()).await;
    assert_eq!(top.status, 200, "{}", text(&top));
    let top_text = text(&top);
    let segment = top_text.lines().find(|l| l.ends_with(".ts")).unwrap();
    // A viewer (through a shard) and the stream's task ask for the segment at once (it is
    // slow upstream): one fetch, one answer for both.
    let segment_key: Arc<str> = rig.proxies.source_key(segment).unwrap().into();
    let (task, viewer) = tokio::join!(rig.fetcher.fetch(segment_key.clone()), async {
        rig.link.fetches.push(segment_key.clone()).unwrap();
        rig.link.fetch_asked.notify_one();
        rig.answer(&segment_key).await
    });
    assert_eq!(
        (text(&task), text(&viewer)),
        ("SEGMENT-1".into(), "SEGMENT-1".into())
    );
    assert_eq!(origin.count("/live/seg1.ts"), 1);
    // Counted as the proxy's requests, the second from the cache.
    let again = rig.fetcher.fetch(segment_key).await;
    assert_eq!(text(&again), "SEGMENT-1");
    let counters = &rig.proxies.named()["news"].counters;
    assert!(counters.hits.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    // Only configured proxies are a source: not upstream URLs named in paths (even when
    // they are served to viewers), not unknown names, not unsigned children.
    let any = crate::proxy::paths::encode_url(&origin.url("/live/index.m3u8"));
    assert!(!matches!(
        rig.proxies
            .route(&format!("{any}.m3u8"), "", Instant::now(), None),
        Route::NotFound | Route::Status(_)
    ));
    for rest in [
        format!("{any}.m3u8"),
        "nope.m3u8".into(),
        "news/AAAA/aHR0cDovL28v.ts".into(),
    ] {
        assert_eq!(rig.proxies.source_key(&rest), None, "{rest}");
    }
}
