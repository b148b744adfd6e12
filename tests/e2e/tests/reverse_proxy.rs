//! Behind Debian's nginx as a reverse proxy under a path prefix (`/tv/`), with the snippet
//! README gives: the stream info, the embed script and the player page point through the
//! proxy, every URL in the playlists resolves through it, and forwarding headers from a peer
//! that is not a trusted proxy change nothing. nginx connects from 127.0.0.2, the only
//! trusted proxy; the test's own requests come from 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod support;

use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::*;

/// The location block README shows, for an upstream and a prefix.
fn location(upstream: SocketAddr) -> String {
    format!(
        "location /tv/ {{\n\
           proxy_pass http://{upstream}/;\n\
           proxy_http_version 1.1;\n\
           proxy_set_header Connection \"\";\n\
           proxy_set_header Host $http_host;\n\
           proxy_set_header X-Forwarded-Proto $scheme;\n\
           proxy_set_header X-Forwarded-Host $http_host;\n\
           proxy_set_header X-Forwarded-Prefix /tv;\n\
           proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
           proxy_set_header X-Real-IP $remote_addr;\n\
           proxy_buffering off;\n\
           proxy_bind 127.0.0.2;\n\
         }}\n"
    )
}

/// GET `url` (an absolute http:// URL on this machine) with a Host header naming it.
fn get_url(url: &str) -> (u16, Vec<u8>) {
    let rest = url.strip_prefix("http://").unwrap();
    let (authority, path) = rest.split_at(rest.find('/').unwrap());
    let (status, _, body) = exchange(
        authority.parse().unwrap(),
        &format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"),
    );
    (status, body)
}

/// Resolve a playlist URI against the playlist's URL (relative, absolute path or absolute).
fn resolve(base: &str, uri: &str) -> String {
    if uri.starts_with("http://") {
        return uri.to_string();
    }
    let origin_end = base[7..].find('/').map_or(base.len(), |i| i + 7);
    if uri.starts_with('/') {
        return format!("{}{uri}", &base[..origin_end]);
    }
    format!("{}{uri}", &base[..=base.rfind('/').unwrap()])
}

/// Through the proxy at `public` (its base URL, with the prefix): the stream info, the embed
/// script and the player page name the proxy, and every playlist URL resolves through it.
fn check_through_proxy(public: &str) {
    // The stream info through the proxy names the proxy's URLs.
    let deadline = Instant::now() + Duration::from_secs(15);
    let info: Value = loop {
        let (status, body) = get_url(&format!("{public}demo/info.json"));
        let info: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status == 200 && info["segments"].as_u64().unwrap_or(0) >= 2 {
            break info;
        }
        assert!(Instant::now() < deadline, "{status}: {info}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(info["outputs"]["hls"], format!("{public}demo/master.m3u8"));
    assert_eq!(info["outputs"]["http_ts"], format!("{public}demo.ts"));
    assert_eq!(info["outputs"]["player"], format!("{public}demo.html"));

    // Every URL in the playlists resolves through the proxy and answers.
    let master_url = info["outputs"]["hls"].as_str().unwrap().to_string();
    let (status, master) = get_url(&master_url);
    assert_eq!(status, 200);
    let master = String::from_utf8(master).unwrap();
    let media_uri = master
        .lines()
        .find(|l| !l.starts_with('#') && !l.is_empty())
        .unwrap();
    let media_url = resolve(&master_url, media_uri);
    assert!(media_url.starts_with(public), "{media_url}");
    let (status, media) = get_url(&media_url);
    assert_eq!(status, 200);
    let media = String::from_utf8(media).unwrap();
    let segments: Vec<&str> = media
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert!(!segments.is_empty());
    for uri in segments.iter().rev().take(2) {
        let url = resolve(&media_url, uri);
        assert!(url.starts_with(public), "{url}");
        let (status, body) = get_url(&url);
        assert_eq!(status, 200, "{url}");
        assert_eq!(body.first(), Some(&0x47));
    }

    // The embed script carries the proxy's base; the page's hls.js resolves through it.
    let (status, js) = get_url(&format!("{public}demo/embed.js"));
    assert_eq!(status, 200);
    assert!(String::from_utf8(js)
        .unwrap()
        .contains(&format!("var base = \"{public}\"")));
    let (status, html) = get_url(&format!("{public}demo.html"));
    assert_eq!(status, 200);
    let html = String::from_utf8(html).unwrap();
    let hlsjs = html
        .split("<script src=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let (status, _) = get_url(&resolve(&format!("{public}demo.html"), hlsjs));
    assert_eq!(status, 200);
}

#[test]
fn urls_point_through_a_prefixed_proxy_and_untrusted_forwarding_is_ignored() {
    let dir = TempDir::new("revproxy-nginx");
    let config = dir.join("shardcast.toml");
    std::fs::write(
        &config,
        "[server]\ntrusted_proxies = [\"127.0.0.2\"]\n\n[[stream]]\nname = \"demo\"\nsource = \"demo:\"\nsegment_duration = 1\n",
    )
    .unwrap();
    let api = free_api_addr();
    let server = start_with_api(&config, &dir.join("state"), api);
    let nginx = start_nginx("", &location(server.addr));
    let public = format!("http://{}/tv/", nginx.addr);

    check_through_proxy(&public);

    // Viewers' addresses: through nginx (trusted), the address nginx saw, not the one its
    // client claimed; directly (not trusted), the peer, whatever X-Forwarded-For says.
    let (status, _, _) = fetch(
        nginx.addr,
        "/tv/demo/index.m3u8?token=via-proxy",
        "X-Forwarded-For: 198.51.100.4\r\n",
    );
    assert_eq!(status, 200);
    let (status, _, _) = fetch(
        server.addr,
        "/demo/index.m3u8?token=direct",
        "X-Forwarded-For: 203.0.113.7\r\nX-Real-IP: 203.0.113.8\r\n",
    );
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    let token = api_token(&dir.join("state"));
    let sessions = loop {
        let (_, list) = api_call(api, "GET", "/api/v1/sessions", &token, None);
        if list.as_array().unwrap().len() >= 2 {
            break list;
        }
        assert!(Instant::now() < deadline, "{list}");
        std::thread::sleep(Duration::from_millis(200));
    };
    for s in sessions.as_array().unwrap() {
        assert_eq!(s["ip"], "127.0.0.1", "{sessions}");
    }

    // From a peer that is not a trusted proxy, forwarding headers change nothing.
    let (_, _, body) = fetch(
        server.addr,
        "/demo/info.json",
        "X-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: https\r\n\
         X-Forwarded-Prefix: /phish\r\nX-Mst-Path: https://evil.example/\r\n\
         X-Forwarded-For: 203.0.113.7\r\n",
    );
    let direct: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(direct["outputs"]["hls"], "http://test/demo/master.m3u8");
    let (_, _, body) = fetch(
        server.addr,
        "/demo/embed.js",
        "X-Mst-Path: https://evil.example/\r\n",
    );
    assert!(String::from_utf8_lossy(&body).contains("var base = \"\" ||"));
    drop(nginx);
    drop(server);
}

/// shardcast with the demo stream, trusting proxies on 127.0.0.1.
fn server_trusting_loopback(name: &str) -> (Server, TempDir) {
    let dir = TempDir::new(&format!("revproxy-{name}"));
    let config = dir.join("shardcast.toml");
    std::fs::write(
        &config,
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n\n[[stream]]\nname = \"demo\"\nsource = \"demo:\"\nsegment_duration = 1\n",
    )
    .unwrap();
    (Server::start(&["--config", config.to_str().unwrap()]), dir)
}

#[test]
fn apache_with_the_readme_snippet() {
    let (server, _dir) = server_trusting_loopback("apache");
    let port = free_port();
    let upstream = server.addr;
    let conf = format!(
        "ServerRoot \"DIR\"\nListen 127.0.0.1:{port}\nPidFile DIR/apache.pid\nErrorLog DIR/error.log\n\
         LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so\n\
         LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so\n\
         LoadModule proxy_module /usr/lib/apache2/modules/mod_proxy.so\n\
         LoadModule proxy_http_module /usr/lib/apache2/modules/mod_proxy_http.so\n\
         LoadModule headers_module /usr/lib/apache2/modules/mod_headers.so\n\
         ServerName localhost\nUser nobody\nGroup nogroup\n\
         <Location \"/tv/\">\n\
             ProxyPass \"http://{upstream}/\" flushpackets=on\n\
             ProxyPassReverse \"http://{upstream}/\"\n\
             ProxyPreserveHost On\n\
             RequestHeader set X-Forwarded-Prefix \"/tv\"\n\
             RequestHeader set X-Forwarded-Proto expr=%{{REQUEST_SCHEME}}\n\
         </Location>\n"
    );
    let apache = Peer::start(
        "apache",
        "/usr/sbin/apache2",
        &["-X", "-f", "CONF"],
        &conf,
        port,
    );
    check_through_proxy(&format!("http://{}/tv/", apache.addr));
    drop(apache);
    drop(server);
}

#[test]
fn lighttpd_with_the_readme_snippet() {
    let (server, _dir) = server_trusting_loopback("lighttpd");
    let port = free_port();
    let (host, upstream_port) = (server.addr.ip(), server.addr.port());
    let conf = format!(
        "server.document-root = \"DIR\"\nserver.port = {port}\nserver.bind = \"127.0.0.1\"\n\
         server.errorlog = \"DIR/error.log\"\nserver.modules += ( \"mod_proxy\", \"mod_setenv\" )\n\
         $HTTP[\"url\"] =~ \"^/tv/\" {{\n\
             proxy.server = ( \"\" => (( \"host\" => \"{host}\", \"port\" => {upstream_port} )) )\n\
             proxy.header = ( \"map-urlpath\" => ( \"/tv/\" => \"/\" ) )\n\
             proxy.forwarded = ( \"for\" => 1, \"proto\" => 1, \"host\" => 1 )\n\
             setenv.add-request-header = ( \"X-Forwarded-Prefix\" => \"/tv\" )\n\
         }}\n"
    );
    let lighttpd = Peer::start(
        "lighttpd",
        "/usr/sbin/lighttpd",
        &["-D", "-f", "CONF"],
        &conf,
        port,
    );
    check_through_proxy(&format!("http://{}/tv/", lighttpd.addr));
    drop(lighttpd);
    drop(server);
}
