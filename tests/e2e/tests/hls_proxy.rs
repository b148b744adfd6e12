//! The HLS proxy against Debian's nginx serving ffmpeg's HLS: a live multivariant stream with
//! an audio rendition, VOD with AES-128 keys, fMP4 with byte ranges, a redirect and gzip;
//! decoded through the proxy by ffmpeg, with nginx's access log counting what reached it.
//! Then the SSRF guard's refusals, and upstreams that are down, slow or missing.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};
use support::*;

/// nginx serving `DIR` with an access log of `$request_uri $status "$http_referer"`,
/// playlists gzipped, and `extra` in its server block.
fn origin(extra: &str) -> Peer {
    start_nginx(
        "types { application/vnd.apple.mpegurl m3u8; video/mp2t ts; video/mp4 mp4 m4s; }\n\
         log_format upstream '$request_uri $status \"$http_referer\" $gzip_ratio';\n\
         gzip on; gzip_min_length 0; gzip_types application/vnd.apple.mpegurl;",
        &format!("access_log DIR/access.log upstream;\nlocation / {{ root DIR; }}\n{extra}"),
    )
}

/// The requests nginx logged, by URI: how many of each.
fn requests(nginx: &Peer) -> std::collections::BTreeMap<String, usize> {
    let log = std::fs::read_to_string(nginx.dir.join("access.log")).unwrap_or_default();
    let mut by_uri = std::collections::BTreeMap::new();
    for line in log.lines() {
        if let Some(uri) = line.split(' ').next() {
            *by_uri.entry(uri.to_owned()).or_insert(0) += 1;
        }
    }
    by_uri
}

/// ffmpeg's HLS of a 640x360 and a 320x180 picture and a sine tone, under `dir`/live: a
/// multivariant playlist with two video variants, an audio-only one and the audio rendition;
/// one-second segments, six listed.
fn live_encoder(dir: &std::path::Path, seconds: u32) -> KillOnDrop {
    ffmpeg_live_hls(
        &dir.join("live"),
        seconds,
        &[
            "-map",
            "0:v",
            "-map",
            "0:v",
            "-map",
            "1:a",
            "-filter:v:1",
            "scale=320:180",
            "-b:v:0",
            "800k",
            "-b:v:1",
            "300k",
            "-master_pl_name",
            "master.m3u8",
            "-var_stream_map",
            "v:0,agroup:aud v:1,agroup:aud a:0,agroup:aud",
            "-hls_segment_filename",
            "%v/seg%d.ts",
            "%v/index.m3u8",
        ],
    )
}

/// A VOD rendition of 4 s by ffmpeg into `dir`/`name`, with `args` for its HLS muxer.
fn vod(dir: &std::path::Path, name: &str, args: &[&str]) {
    let out = dir.join(name);
    std::fs::create_dir_all(&out).unwrap();
    let mut command = std::process::Command::new("ffmpeg");
    command
        .current_dir(&out)
        .args(["-nostdin", "-v", "error", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=320x180:rate=25")
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args([
            "-t",
            "4",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
        ])
        .args([
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-f",
            "hls",
            "-hls_time",
            "1",
        ])
        .args(["-hls_playlist_type", "vod"])
        .args(args)
        .arg("index.m3u8");
    let status = command.status().unwrap();
    assert!(status.success(), "ffmpeg could not make {name}");
}

/// The lines of `text` that are URIs (not tags).
fn uri_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

#[test]
fn a_live_multivariant_stream_is_proxied_with_one_upstream_fetch_per_segment() {
    let nginx = origin("");
    let _encoder = live_encoder(&nginx.dir, 60);
    wait_until(
        Duration::from_secs(15),
        || "ffmpeg wrote no playlists".to_owned(),
        || nginx.dir.join("live/master.m3u8").exists() && nginx.dir.join("live/0/seg3.ts").exists(),
    );
    let (server, api, token, _dir) = start_configured(
        "hls-proxy-live",
        &format!(
            "[server]\nproxy_allow_addresses = [\"127.0.0.0/8\"]\n\n\
             [[proxy]]\nname = \"news\"\nurl = \"http://{}/live/master.m3u8\"\n\
             headers = {{ Referer = \"https://news.example/\" }}\n",
            nginx.addr
        ),
    );
    // The multivariant playlist: every URI through the proxy, nothing of the origin's left.
    let (code, head, body) = fetch(server.addr, "/proxy/news.m3u8", "");
    let master = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(code, 200, "{head}{master}");
    assert_eq!(
        header(&head, "content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    assert!(master.contains("#EXT-X-MEDIA:TYPE=AUDIO"), "{master}");
    assert!(
        !master.contains("index.m3u8") && !master.contains("127.0.0.1"),
        "{master}"
    );
    assert_eq!(uri_lines(&master).len(), 3, "{master}");
    // ffmpeg decodes every variant and the rendition through it, and says nothing.
    let url = server.url("/proxy/news.m3u8");
    let (ok, said) = run(
        "ffmpeg",
        &[
            "-nostdin", "-v", "error", "-i", &url, "-map", "0", "-t", "4", "-f", "null", "-",
        ],
    );
    assert!(ok && said.trim().is_empty(), "ffmpeg said: {said}");
    let probe = probe_streams(&url);
    for codec in ["h264,640,360,", "h264,320,180,", "aac"] {
        assert!(probe.contains(codec), "{codec}: {probe}");
    }
    // 40 viewers ask for the first variant's playlist and newest segment at once, twice.
    let variant = uri_lines(&master)[0].to_owned();
    for _ in 0..2 {
        let (_, _, playlist) = fetch(server.addr, &format!("/proxy/{variant}"), "");
        let playlist = String::from_utf8_lossy(&playlist).into_owned();
        let newest = uri_lines(&playlist)
            .last()
            .unwrap()
            .trim_start_matches("../../")
            .to_owned();
        let viewers: Vec<_> = (0..40)
            .map(|_| {
                let (addr, path) = (server.addr, format!("/proxy/{newest}"));
                std::thread::spawn(move || fetch(addr, &path, ""))
            })
            .collect();
        let first = fetch(server.addr, &format!("/proxy/{newest}"), "").2;
        assert!(
            first.len() > 1000 && first[0] == 0x47,
            "{} bytes",
            first.len()
        );
        for viewer in viewers {
            let (code, _, bytes) = viewer.join().unwrap();
            assert_eq!((code, bytes.len()), (200, first.len()));
        }
        std::thread::sleep(Duration::from_millis(1500));
    }
    // What reached nginx: each segment once, playlists at most once per half target
    // duration, every request with the proxy's Referer, playlists gzipped.
    let asked = requests(&nginx);
    let segments: Vec<_> = asked.iter().filter(|(u, _)| u.ends_with(".ts")).collect();
    assert!(!segments.is_empty(), "{asked:?}");
    assert!(segments.iter().all(|(_, n)| **n == 1), "{asked:?}");
    let log = std::fs::read_to_string(nginx.dir.join("access.log")).unwrap();
    assert!(
        log.lines().all(|l| l.contains("\"https://news.example/\"")),
        "{log}"
    );
    assert!(
        log.lines()
            .filter(|l| l.contains(".m3u8"))
            .all(|l| !l.ends_with(" -")),
        "playlists were not asked for gzipped: {log}"
    );
    // Viewers of a proxy are sessions of `proxy/{name}`, with their bytes.
    wait_until(
        Duration::from_secs(5),
        || "no session of proxy/news".to_owned(),
        || {
            let (_, sessions) = api_call(
                api,
                "GET",
                "/api/v1/sessions?stream=proxy/news",
                &token,
                None,
            );
            sessions.as_array().is_some_and(|list| {
                list.iter().any(|s| {
                    s["protocol"] == "hls" && s["bytes"].as_u64().is_some_and(|b| b > 100_000)
                })
            })
        },
    );
    let (status, log) = server.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{log}");
}

#[test]
fn a_stream_pulled_from_a_configured_proxy_shares_the_proxys_upstream_fetches() {
    let nginx = origin("");
    let _encoder = live_encoder(&nginx.dir, 60);
    wait_until(
        Duration::from_secs(15),
        || "ffmpeg wrote no playlists".to_owned(),
        || nginx.dir.join("live/master.m3u8").exists() && nginx.dir.join("live/1/seg3.ts").exists(),
    );
    // The proxy's second variant (320x180) is also the source of stream "relay".
    let (server, api, token, _dir) = start_configured(
        "hls-proxy-source",
        &format!(
            "[server]\nproxy_allow_addresses = [\"127.0.0.0/8\"]\n\n\
             [[stream]]\nname = \"relay\"\nsource = \"proxy://news?variant=1\"\nsegment_duration = 1\n\n\
             [[proxy]]\nname = \"news\"\nurl = \"http://{}/live/master.m3u8\"\n\
             headers = {{ Referer = \"https://news.example/\" }}\n",
            nginx.addr
        ),
    );
    wait_until(
        Duration::from_secs(15),
        || "relay never went live".to_owned(),
        || fetch(server.addr, "/relay/index.m3u8", "").0 == 200,
    );
    // The stream is served as any other: its HLS decodes silently, its progressive body
    // carries pictures.
    let (decoded, said) = decode(&server.url("/relay/index.m3u8"), 4);
    assert!(decoded && said.trim().is_empty(), "ffmpeg said: {said}");
    assert!(
        probe_streams(&server.url("/relay/index.m3u8")).contains("h264,320,180,"),
        "the second variant"
    );
    let body = capture(server.addr, "/relay.ts", 2.0);
    assert!(pictures(&body) >= 25, "{} pictures in 2 s", pictures(&body));
    // The proxy's viewers take the same variant meanwhile, every segment it lists.
    for _ in 0..3 {
        let (_, _, master) = fetch(server.addr, "/proxy/news.m3u8", "");
        let master = String::from_utf8_lossy(&master).into_owned();
        let variant = uri_lines(&master)[1].to_owned();
        let (code, _, playlist) = fetch(server.addr, &format!("/proxy/{variant}"), "");
        assert_eq!(code, 200);
        for segment in uri_lines(&String::from_utf8_lossy(&playlist)) {
            let path = format!("/proxy/{}", segment.trim_start_matches("../../"));
            assert_eq!(fetch(server.addr, &path, "").0, 200, "{path}");
        }
        std::thread::sleep(Duration::from_millis(1000));
    }
    // nginx saw each of the variant's segments once: for the stream and the viewers both,
    // with the proxy's headers.
    let asked = requests(&nginx);
    let segments: Vec<_> = asked
        .iter()
        .filter(|(u, _)| u.starts_with("/live/1/") && u.ends_with(".ts"))
        .collect();
    assert!(segments.len() >= 6, "{asked:?}");
    assert!(segments.iter().all(|(_, n)| **n == 1), "{asked:?}");
    let log = std::fs::read_to_string(nginx.dir.join("access.log")).unwrap();
    assert!(
        log.lines().all(|l| l.contains("\"https://news.example/\"")),
        "{log}"
    );
    let input = &status(api, &token, "relay")["input"];
    assert_eq!(
        (&input["kind"], &input["connected"]),
        (&"hls".into(), &true.into()),
        "{input}"
    );
    let (status, log) = server.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{log}");
    assert!(log.contains("pulling HLS from"), "{log}");
}

#[test]
fn vod_with_aes_keys_fmp4_byte_ranges_and_a_redirect_decodes_through_the_proxy() {
    let nginx = origin("location = /moved.m3u8 { return 302 /aes/index.m3u8; }");
    // AES-128: the key at a URL of its own.
    std::fs::write(nginx.dir.join("enc.key"), b"0123456789abcdef").unwrap();
    std::fs::write(
        nginx.dir.join("keyinfo"),
        format!(
            "http://{}/enc.key\n{}\n",
            nginx.addr,
            nginx.dir.join("enc.key").display()
        ),
    )
    .unwrap();
    let keyinfo = nginx.dir.join("keyinfo");
    vod(
        &nginx.dir,
        "aes",
        &["-hls_key_info_file", keyinfo.to_str().unwrap()],
    );
    // fMP4 in one file: EXT-X-MAP and byte ranges.
    vod(
        &nginx.dir,
        "fmp4",
        &["-hls_segment_type", "fmp4", "-hls_flags", "single_file"],
    );
    let fmp4 = std::fs::read_to_string(nginx.dir.join("fmp4/index.m3u8")).unwrap();
    assert!(
        fmp4.contains("#EXT-X-MAP") && fmp4.contains("#EXT-X-BYTERANGE"),
        "{fmp4}"
    );
    let (server, _api, _token, _dir) = start_configured(
        "hls-proxy-vod",
        &format!(
            "[server]\nproxy_allow_addresses = [\"127.0.0.0/8\"]\n\n\
             [[proxy]]\nname = \"aes\"\nurl = \"http://{0}/aes/index.m3u8\"\n\n\
             [[proxy]]\nname = \"fmp4\"\nurl = \"http://{0}/fmp4/index.m3u8\"\n\n\
             [[proxy]]\nname = \"moved\"\nurl = \"http://{0}/moved.m3u8\"\n",
            nginx.addr
        ),
    );
    for name in ["aes", "fmp4", "moved"] {
        let (code, head, body) = fetch(server.addr, &format!("/proxy/{name}.m3u8"), "");
        let playlist = String::from_utf8_lossy(&body).into_owned();
        assert_eq!(code, 200, "{name}: {head}{playlist}");
        assert!(!playlist.contains(&nginx.addr.to_string()), "{playlist}");
        assert!(playlist.contains("#EXT-X-ENDLIST"), "{playlist}");
        let (ok, said) = decode(&server.url(&format!("/proxy/{name}.m3u8")), 4);
        assert!(ok && said.trim().is_empty(), "{name}: ffmpeg said: {said}");
    }
    // A second viewer of the encrypted stream costs the origin nothing.
    let (ok, said) = decode(&server.url("/proxy/aes.m3u8"), 4);
    assert!(ok && said.trim().is_empty(), "ffmpeg said: {said}");
    // The key went through the proxy; the single fMP4 file was fetched once for all its
    // ranges; what `aes` and `moved` (the redirect to it) list was fetched once by each:
    // a proxy's upstream requests carry its own headers, so they are not shared.
    let asked = requests(&nginx);
    assert_eq!(asked.get("/fmp4/index.m4s"), Some(&1), "{asked:?}");
    assert_eq!(asked.get("/moved.m3u8"), Some(&1), "{asked:?}");
    let aes: Vec<_> = asked
        .iter()
        .filter(|(uri, _)| uri.starts_with("/aes/") || *uri == "/enc.key")
        .collect();
    assert_eq!(aes.len(), 6, "{asked:?}");
    assert!(aes.iter().all(|(_, n)| **n == 2), "{asked:?}");
    let (status, log) = server.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{log}");
}

/// A server on `ip` that answers every request with a redirect to `location`.
fn redirector(ip: &str, location: String) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind((ip, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(
                format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            );
        }
    });
    addr
}

#[test]
fn upstreams_in_private_loopback_and_metadata_addresses_are_refused_unless_allowed() {
    let nginx = origin("");
    std::fs::write(
        nginx.dir.join("a.m3u8"),
        "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-ENDLIST\n",
    )
    .unwrap();
    let port = nginx.addr.port();
    let to_loopback = redirector("127.0.0.2", format!("http://127.0.0.1:{port}/a.m3u8"));
    let config = |allow: &str| {
        format!("[server]\nproxy_any_url = true\nproxy_hosts = [\"*\"]\nproxy_allow_addresses = [{allow}]\nproxy_timeout = 2\n")
    };
    let (server, _api, _token, _dir) =
        start_configured("hls-proxy-ssrf", &config("\"127.0.0.2/32\""));
    let id =
        |url: &str| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, url);
    let refused = [
        format!("http://127.0.0.1:{port}/a.m3u8"),
        "http://10.1.2.3/a.m3u8".to_owned(),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        format!("http://[::1]:{port}/a.m3u8"),
        format!("http://[::ffff:127.0.0.1]:{port}/a.m3u8"),
        format!("http://2130706433:{port}/a.m3u8"),
        format!("http://0177.0.0.1:{port}/a.m3u8"),
        format!("http://localhost:{port}/a.m3u8"),
        format!("http://{to_loopback}/a.m3u8"),
    ];
    for url in &refused {
        let started = Instant::now();
        let (code, _, body) = fetch(server.addr, &format!("/proxy/{}.m3u8", id(url)), "");
        assert_eq!(code, 403, "{url}: {}", String::from_utf8_lossy(&body));
        assert!(started.elapsed() < Duration::from_secs(2), "{url}");
    }
    assert!(requests(&nginx).is_empty(), "{:?}", requests(&nginx));
    let (status, log) = server.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{log}");
    // Allowed when listed: the same URLs reach nginx.
    let (server, _api, _token, _dir) = start_configured(
        "hls-proxy-ssrf-allowed",
        &config("\"127.0.0.0/8\", \"::1\""),
    );
    for url in [
        &refused[0],
        &refused[5],
        &refused[6],
        &refused[7],
        &refused[8],
    ] {
        let (code, _, body) = fetch(server.addr, &format!("/proxy/{}.m3u8", id(url)), "");
        assert_eq!(code, 200, "{url}: {}", String::from_utf8_lossy(&body));
    }
    let (status, log) = server.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{log}");
}

#[test]
fn upstreams_down_slow_or_missing_get_502_504_and_404_and_nothing_hangs() {
    let nginx = origin("");
    // A listener that takes connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down_addr = down.local_addr().unwrap();
    drop(down);
    // A live playlist that never moves on.
    std::fs::write(
        nginx.dir.join("stuck.m3u8"),
        "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:5\n#EXTINF:1,\na.ts\n",
    )
    .unwrap();
    let (server, api, token, _dir) = start_configured(
        "hls-proxy-failures",
        &format!(
            "[server]\nproxy_allow_addresses = [\"127.0.0.0/8\"]\nproxy_timeout = 1.5\n\n\
             [[proxy]]\nname = \"missing\"\nurl = \"http://{0}/none.m3u8\"\n\n\
             [[proxy]]\nname = \"down\"\nurl = \"http://{down_addr}/a.m3u8\"\n\n\
             [[proxy]]\nname = \"slow\"\nurl = \"http://{1}/a.m3u8\"\n\n\
             [[proxy]]\nname = \"stuck\"\nurl = \"http://{0}/stuck.m3u8\"\n",
            nginx.addr,
            silent.local_addr().unwrap()
        ),
    );
    // The stuck playlist is served as the origin serves it, at once, for 4 s (more than three
    // target durations): players see it stall, as they would at the origin.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let started = Instant::now();
        let (code, _, body) = fetch(server.addr, "/proxy/stuck.m3u8", "");
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
        assert!(started.elapsed() < Duration::from_secs(1));
        std::thread::sleep(Duration::from_millis(300));
    }
    for (name, expected) in [("missing", 404), ("down", 502), ("slow", 504)] {
        let started = Instant::now();
        let (code, _, body) = fetch(server.addr, &format!("/proxy/{name}.m3u8"), "");
        assert_eq!(code, expected, "{name}: {}", String::from_utf8_lossy(&body));
        assert!(started.elapsed() < Duration::from_secs(5), "{name}");
    }
    // Counted, by proxy.
    let (_, _, metrics) = fetch(
        api,
        "/metrics",
        &format!("Authorization: Bearer {token}\r\n"),
    );
    let metrics = String::from_utf8_lossy(&metrics);
    for name in ["missing", "down", "slow"] {
        let line = format!("shardcast_proxy_upstream_errors_total{{proxy=\"{name}\"}} 1");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
    // The stall, counted once.
    let line = "shardcast_proxy_playlist_stalls_total{proxy=\"stuck\"} 1";
    assert!(metrics.contains(line), "{line} in\n{metrics}");
    // The live playlist followed for that; no fetch left in flight.
    for line in [
        "shardcast_proxy_followed_playlists 1",
        "shardcast_proxy_fetches_in_flight 0",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    // A request for something never handed out: 403, and nothing is fetched.
    let (code, _, _) = fetch(
        server.addr,
        "/proxy/missing/AAAAAAAAAAAAAAAA/aHR0cDovL2V4YW1wbGUuY29tLw.ts",
        "",
    );
    assert_eq!(code, 403);
    let (status, log) = server.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{log}");
    assert!(log.contains("has not moved on for 3 s"), "{log}");
}

#[test]
fn a_thousand_players_through_the_proxy_cost_the_origin_one_request_per_segment() {
    let nginx = origin("");
    let _encoder = live_encoder(&nginx.dir, 100);
    wait_until(
        Duration::from_secs(15),
        || "ffmpeg wrote no playlists".to_owned(),
        || nginx.dir.join("live/0/seg3.ts").exists(),
    );
    let (server, _api, _token, _dir) = start_configured(
        "hls-proxy-players",
        &format!(
            "[server]\nproxy_allow_addresses = [\"127.0.0.0/8\"]\n\n\
             [[proxy]]\nname = \"news\"\nurl = \"http://{}/live/master.m3u8\"\n",
            nginx.addr
        ),
    );
    let (_, _, master) = fetch(server.addr, "/proxy/news.m3u8", "");
    let master = String::from_utf8_lossy(&master).into_owned();
    let variant = format!("/proxy/{}", uri_lines(&master)[0]);
    // 1000 players of the first variant (640x360) for 60 s, like hls.js: three segments from
    // the live edge, every segment once, the playlist once per target duration.
    let report = shardcast_bench::hls::run(&shardcast_bench::load::Load {
        addr: server.addr,
        path: variant,
        viewers: 1000,
        ramp: Duration::from_secs(5),
        settle: Duration::from_secs(3),
        measure: Duration::from_secs(60),
        server_pid: Some(server.child.id()),
        progress: false,
        pace_bps: 0,
        tls: None,
        low_latency: false,
        connection_per_request: false,
    })
    .unwrap();
    eprint!("{}", report.summary());
    assert_eq!(report.started, 1000, "{}", report.summary());
    assert!(report.segments >= 1000 * 55, "{}", report.summary());
    assert_eq!(
        (
            report.missed,
            report.status_4xx,
            report.status_5xx,
            report.bad_playlists
        ),
        (0, 0, 0, 0),
        "{}",
        report.summary()
    );
    // nginx saw each segment once, and the playlist about twice per target duration at most.
    let asked = requests(&nginx);
    let segments: Vec<_> = asked
        .iter()
        .filter(|(u, _)| u.starts_with("/live/0/") && u.ends_with(".ts"))
        .collect();
    assert!(segments.len() >= 60, "{asked:?}");
    assert!(segments.iter().all(|(_, n)| **n == 1), "{asked:?}");
    let reloads = asked.get("/live/0/index.m3u8").copied().unwrap_or(0);
    assert!(reloads <= 2 * 75, "{reloads} playlist requests in ~70 s");
    let (status, log) = server.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{log}");
}

#[test]
fn a_proxy_with_access_lets_in_only_the_viewers_its_backend_allows() {
    let backend = Backend::start(|r| {
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
        let allowed = body["token"] == "good"
            && (body["stream"] == "proxy/paid" || body["stream"] == "proxy/_");
        let status = if allowed { 200 } else { 403 };
        (status, Vec::new(), String::new(), Duration::ZERO)
    });
    let nginx = origin("");
    vod(&nginx.dir, "vod", &[]);
    let (server, _api, _token, _dir) = start_configured(
        "hls-proxy-access",
        &format!(
            "[server]\nproxy_allow_addresses = [\"127.0.0.0/8\"]\n\n\
             [[proxy]]\nname = \"paid\"\nurl = \"http://{}/vod/index.m3u8\"\n\
             access = {{ url = \"http://{}/check\", ttl = 30 }}\n",
            nginx.addr, backend.addr
        ),
    );
    // No token, or a wrong one: refused, and nothing is fetched upstream.
    for query in ["", "?token=bad"] {
        let (code, _, _) = fetch(server.addr, &format!("/proxy/paid.m3u8{query}"), "");
        assert_eq!(code, 401, "{query}");
    }
    assert!(requests(&nginx).is_empty(), "{:?}", requests(&nginx));
    // The right token: the playlist, with the token in every URI so that the segments
    // asked for with it are the same viewer's.
    let (code, head, body) = fetch(server.addr, "/proxy/paid.m3u8?token=good", "");
    let playlist = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(code, 200, "{head}{playlist}");
    assert!(
        header(&head, "cache-control").is_some_and(|c| c.contains("private")),
        "{head}"
    );
    let segments = uri_lines(&playlist);
    assert!(
        !segments.is_empty() && segments.iter().all(|u| u.ends_with("?token=good")),
        "{playlist}"
    );
    let (code, _, bytes) = fetch(server.addr, &format!("/proxy/{}", segments[0]), "");
    assert_eq!(code, 200);
    assert_eq!(bytes[0], 0x47);
    let without = segments[0].trim_end_matches("?token=good");
    assert_eq!(fetch(server.addr, &format!("/proxy/{without}"), "").0, 401);
    // ffmpeg, given the token once, plays it all.
    let (ok, said) = decode(&server.url("/proxy/paid.m3u8?token=good"), 4);
    assert!(ok && said.trim().is_empty(), "ffmpeg said: {said}");
    // The page is anyone's; the backend was asked about `proxy/paid`, once per token.
    assert_eq!(fetch(server.addr, "/proxy/paid.html", "").0, 200);
    let asked = backend.received();
    assert!(asked.len() <= 3, "{asked:?}");
    let (status, log) = server.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{log}");
    // Upstream URLs named in paths: `proxy_access`, the same way (sessions of `proxy/_`).
    let (server, _api, _token, _dir) = start_configured(
        "hls-proxy-access-any",
        &format!(
            "[server]\nproxy_any_url = true\nproxy_hosts = [\"*\"]\n\
             proxy_allow_addresses = [\"127.0.0.0/8\"]\n\
             proxy_access = {{ url = \"http://{}/check\" }}\n",
            backend.addr
        ),
    );
    let id = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        format!("http://{}/vod/index.m3u8", nginx.addr),
    );
    assert_eq!(fetch(server.addr, &format!("/proxy/{id}.m3u8"), "").0, 401);
    let (ok, said) = decode(&server.url(&format!("/proxy/{id}.m3u8?token=good")), 4);
    assert!(ok && said.trim().is_empty(), "ffmpeg said: {said}");
    let (status, log) = server.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{log}");
}

#[test]
fn an_https_upstream_is_verified_against_the_systems_roots() {
    // nginx over TLS with a certificate from a test CA; shardcast trusts that CA only
    // through SSL_CERT_FILE (the system's roots, as the platform verifier reads them).
    let pki = TestPki::new("hls-proxy-upstream");
    let cert = pki.issue("localhost", &["localhost"], 1, 30);
    let tls_port = free_port();
    let nginx = origin(&format!(
        "listen 127.0.0.1:{tls_port} ssl;\nssl_certificate {};\nssl_certificate_key {};",
        cert.cert.display(),
        cert.key.display()
    ));
    vod(&nginx.dir, "vod", &[]);
    let dir = TempDir::new("hls-proxy-https");
    let config = dir.join("shardcast.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nproxy_allow_addresses = [\"127.0.0.0/8\", \"::1\"]\n\n\
             [[proxy]]\nname = \"tls\"\nurl = \"https://localhost:{tls_port}/vod/index.m3u8\"\n\n\
             [[proxy]]\nname = \"wrong-name\"\nurl = \"https://127.0.0.1:{tls_port}/vod/index.m3u8\"\n"
        ),
    )
    .unwrap();
    let ca = pki.ca();
    let server = Server::start_with(
        &[],
        &[("SSL_CERT_FILE", ca.to_str().unwrap())],
        &[
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            dir.to_str().unwrap(),
        ],
    );
    let (ok, said) = decode(&server.url("/proxy/tls.m3u8"), 4);
    assert!(ok && said.trim().is_empty(), "ffmpeg said: {said}");
    // A certificate that does not name the host asked for: 502, nothing served.
    let (code, _, body) = fetch(server.addr, "/proxy/wrong-name.m3u8", "");
    assert_eq!(code, 502, "{}", String::from_utf8_lossy(&body));
    let (status, log) = server.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{log}");
}
