//! The player page in a real browser: shardcast with an ffmpeg source, the page opened in
//! Debian's headless Chromium (driven by playwright-core through tests/browser/play.mjs), once
//! through hls.js and once through Chromium's native HLS; and the page going to "waiting" when
//! the source stops and playing again when it comes back. Also info.json and embed.js over
//! HTTP. Screenshots go to target/browser/.
//!
//! The browser tests run one at a time (each holds an encoder and a browser on two cores).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod support;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::*;

static ONE_BROWSER_AT_A_TIME: Mutex<()> = Mutex::new(());

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// An H.264 + AAC source into UDP, small enough to leave the browser CPU.
fn source(port: u16, seconds: u32) -> KillOnDrop {
    ffmpeg_source(
        &format!("udp://127.0.0.1:{port}?pkt_size=1316"),
        seconds,
        "640x360",
        "800k",
        25,
    )
}

/// shardcast with one stream `cam` fed by UDP on the returned port.
fn server_with_udp_stream(dir: &Path) -> (Server, u16) {
    server_with_udp_stream_and(dir, "")
}

/// [`server_with_udp_stream`], with `extra` configuration before the stream.
fn server_with_udp_stream_and(dir: &Path, extra: &str) -> (Server, u16) {
    server_with_udp_stream_configured(dir, extra, "")
}

/// [`server_with_udp_stream_and`], with `stream_extra` settings of the stream.
fn server_with_udp_stream_configured(dir: &Path, extra: &str, stream_extra: &str) -> (Server, u16) {
    let port = free_port();
    let config = dir.join("shardcast.toml");
    std::fs::write(
        &config,
        format!(
            "{extra}[[stream]]\nname = \"cam\"\nsource = \"udp://127.0.0.1:{port}\"\nsegment_duration = 1\n{stream_extra}"
        ),
    )
    .unwrap();
    (Server::start(&["--config", config.to_str().unwrap()]), port)
}

/// One observation of the page.
#[derive(Debug, Clone)]
struct Sample {
    t: f64,
    current_time: f64,
    frames: u64,
    state: String,
    engine: String,
    /// The formats the page offers, comma-separated.
    formats: String,
    media_errors: usize,
    #[allow(dead_code)] // read through Debug, in failure messages
    errors: String,
    /// hls.js's latency estimate, and the playhead's PROGRAM-DATE-TIME behind the clock (s).
    latency: Option<f64>,
    behind: Option<f64>,
}

fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let key = format!("\"{name}\":");
    let at = line.find(&key).map(|i| i + key.len()).unwrap_or(line.len());
    let rest = &line[at..];
    let end = rest
        .find([',', '}'])
        .filter(|_| !rest.starts_with('['))
        .unwrap_or_else(|| rest.find(']').map_or(rest.len(), |i| i + 1));
    rest[..end].trim_matches('"')
}

fn parse(line: &str) -> Option<Sample> {
    line.starts_with('{').then(|| Sample {
        t: field(line, "t").parse().unwrap_or(0.0),
        current_time: field(line, "currentTime").parse().unwrap_or(0.0),
        frames: field(line, "frames").parse().unwrap_or(0),
        state: field(line, "state").to_string(),
        engine: field(line, "engine").to_string(),
        formats: field(line, "formats").to_string(),
        media_errors: field(line, "mediaErrors").matches('"').count() / 2,
        errors: format!(
            "{} {}",
            field(line, "mediaErrors"),
            field(line, "networkErrors")
        ),
        latency: field(line, "latency").parse().ok(),
        behind: field(line, "behindWallClock").parse().ok(),
    })
}

/// The browser, reporting samples as they come.
struct Browser {
    child: KillOnDrop,
    samples: mpsc::Receiver<Sample>,
    seen: Vec<Sample>,
}

impl Browser {
    fn open(url: &str, seconds: u32, screenshot: Option<(&Path, u32)>) -> Browser {
        Self::open_as(url, seconds, screenshot, None)
    }

    /// Like [`Browser::open`], with `home` as the browser's home directory (its NSS database
    /// of trusted certificates is `home/.pki/nssdb`).
    fn open_as(
        url: &str,
        seconds: u32,
        screenshot: Option<(&Path, u32)>,
        home: Option<&Path>,
    ) -> Browser {
        let script = workspace().join("tests/browser/play.mjs");
        assert!(
            workspace()
                .join("tests/browser/node_modules/playwright-core")
                .exists(),
            "playwright-core is missing: run tests/run.sh (it runs npm ci in tests/browser)"
        );
        let mut command = Command::new("node");
        command.arg(&script).arg(url).arg(seconds.to_string());
        if let Some(home) = home {
            command.env("HOME", home);
        }
        if let Some((path, at)) = screenshot {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            command.arg(format!("{}@{at}", path.display()));
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node must be installed");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(sample) = parse(&line) {
                    if tx.send(sample).is_err() {
                        break;
                    }
                }
            }
        });
        Browser {
            child: KillOnDrop(child),
            samples: rx,
            seen: Vec::new(),
        }
    }

    /// Wait up to `limit` for a sample that satisfies `until`; every sample is kept.
    fn watch(&mut self, limit: Duration, until: impl Fn(&Sample) -> bool) -> Option<Sample> {
        let deadline = Instant::now() + limit;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.samples.recv_timeout(left) {
                Ok(s) => {
                    self.seen.push(s.clone());
                    if until(&s) {
                        return Some(s);
                    }
                }
                Err(_) => return None,
            }
        }
        None
    }

    fn finish(mut self) -> Vec<Sample> {
        while let Ok(s) = self.samples.recv_timeout(Duration::from_secs(30)) {
            self.seen.push(s);
        }
        let _ = self.child.0.wait();
        self.seen
    }
}

/// The page plays through `engine`: currentTime advances by at least 10 s over 15 s, frames
/// are decoded, no media error.
fn plays_through(engine: &str) {
    plays_through_over(engine, false);
}

/// A home directory whose NSS database trusts the test CA `ca` (Chromium on Linux reads
/// `~/.pki/nssdb`).
fn home_trusting(dir: &Path, ca: &Path) -> PathBuf {
    let home = dir.join("home");
    let db = home.join(".pki/nssdb");
    std::fs::create_dir_all(&db).unwrap();
    let db = format!("sql:{}", db.display());
    let (ok, said) = run("certutil", &["-d", &db, "-N", "--empty-password"]);
    assert!(ok, "certutil -N: {said}");
    let (ok, said) = run(
        "certutil",
        &[
            "-d",
            &db,
            "-A",
            "-t",
            "C,,",
            "-n",
            "shardcast test CA",
            "-i",
            ca.to_str().unwrap(),
        ],
    );
    assert!(ok, "certutil -A: {said}");
    home
}

/// [`plays_through`], the page and the media over https when `tls` (the test CA trusted in
/// the browser's profile, nothing ignored).
fn plays_through_over(engine: &str, tls: bool) {
    let _one = ONE_BROWSER_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let tag = if tls { "-https" } else { "" };
    let dir = TempDir::new(&format!("browser-{engine}{tag}"));
    let pki = TestPki::new(&format!("browser-{engine}"));
    let tls_port = free_port();
    let (server, port) = if tls {
        let cert = pki.issue("localhost", &["localhost"], 1, 30);
        server_with_udp_stream_and(
            &dir,
            &format!(
                "[server]\ntls = {{ listen = \"127.0.0.1:{tls_port}\", cert = {:?}, key = {:?} }}\n",
                cert.cert.display().to_string(),
                cert.key.display().to_string()
            ),
        )
    } else {
        server_with_udp_stream(&dir)
    };
    let _ffmpeg = source(port, 60);
    let shot = workspace().join(format!("target/browser/player-{engine}{tag}.png"));
    let _ = std::fs::remove_file(&shot);
    let (url, home) = if tls {
        (
            format!("https://localhost:{tls_port}/cam.html?engine={engine}"),
            Some(home_trusting(&dir, &pki.ca())),
        )
    } else {
        (server.url(&format!("/cam.html?engine={engine}")), None)
    };
    // Over https the point is the transport and the trust: a shorter watch (the plain runs
    // check longer playback, and the low-latency one a minute of hls.js).
    let (session, span, played, shot_at) = if tls {
        (28, 8.0, 5.0, 20)
    } else {
        (32, 12.0, 8.0, 24)
    };
    let mut browser = Browser::open_as(&url, session, Some((&shot, shot_at)), home.as_deref());
    let started = browser
        .watch(Duration::from_secs(25), |s| s.current_time > 0.5)
        .unwrap_or_else(|| panic!("playback never started: {:?}", browser.seen.last()));
    let samples = browser.finish();
    let later = samples
        .iter()
        .find(|s| s.t >= started.t + span)
        .unwrap_or_else(|| panic!("no sample {span} s after the start: {samples:?}"));
    assert!(
        later.current_time - started.current_time >= played,
        "currentTime went from {} to {} in {:.1} s: {samples:?}",
        started.current_time,
        later.current_time,
        later.t - started.t
    );
    assert!(
        later.frames > started.frames + (played * 10.0) as u64,
        "{samples:?}"
    );
    assert!(samples.iter().all(|s| s.media_errors == 0), "{samples:?}");
    assert!(
        samples
            .iter()
            .filter(|s| s.engine != "null")
            .all(|s| s.engine == engine),
        "{samples:?}"
    );
    assert_eq!(later.state, "live");
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 5000);
}

#[test]
fn browser_plays_through_hlsjs() {
    plays_through("hlsjs");
}

#[test]
fn browser_plays_over_https_through_hlsjs_with_the_test_ca_trusted() {
    plays_through_over("hlsjs", true);
}

#[test]
fn browser_plays_through_native_hls() {
    plays_through("native");
}

#[test]
fn browser_plays_low_latency_hls_through_hlsjs() {
    let _one = ONE_BROWSER_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("browser-ll");
    let (server, port) = server_with_udp_stream_configured(&dir, "", "part_duration = 0.2\n");
    let _ffmpeg = source(port, 75);
    let mut browser = Browser::open(&server.url("/cam.html?engine=hlsjs"), 62, None);
    let started = browser
        .watch(Duration::from_secs(25), |s| s.current_time > 0.5)
        .unwrap_or_else(|| panic!("playback never started: {:?}", browser.seen.last()));
    let samples = browser.finish();
    let last = samples.last().unwrap();
    assert!(
        last.current_time - started.current_time >= (last.t - started.t) * 0.8,
        "playback did not keep up: {samples:?}"
    );
    assert!(samples.iter().all(|s| s.media_errors == 0), "{samples:?}");
    assert!(samples.iter().all(|s| s.errors == "[] []"), "{samples:?}");
    // How far behind live it plays, once settled (from 10 s in).
    let settled: Vec<&Sample> = samples.iter().filter(|s| s.t >= started.t + 10.0).collect();
    let median = |values: Vec<f64>| {
        let mut v = values;
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    let latency = median(settled.iter().filter_map(|s| s.latency).collect());
    let behind = median(settled.iter().filter_map(|s| s.behind).collect());
    eprintln!(
        "low-latency HLS in hls.js over {:.0} s: latency (hls.js) median {latency:?} s, PROGRAM-DATE-TIME behind the clock median {behind:?} s",
        last.t - started.t
    );
    // Plain HLS plays three segments (3 s) behind; low-latency mode holds PART-HOLD-BACK.
    let behind = behind.expect("hls.js reports the playhead's PROGRAM-DATE-TIME");
    assert!(behind < 2.5, "{behind} s behind the clock: {samples:?}");
}

/// The player page with `?format=` (`dash`: dash.js, served by the server; `fmp4`: the CMAF
/// rendition in hls.js) plays a stream with a CMAF rendition for `seconds`: playback keeps
/// up, frames are decoded, no error; the page offers all three formats. Returns the median
/// live latency the player reports, from 10 s in.
fn plays_cmaf_format(format: &str, seconds: u32) -> Option<f64> {
    let _one = ONE_BROWSER_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new(&format!("browser-{format}"));
    let (server, port) = server_with_udp_stream_configured(&dir, "", "cmaf = true\n");
    let _ffmpeg = source(port, seconds + 25);
    let url = server.url(&format!("/cam.html?format={format}&engine=hlsjs"));
    let mut browser = Browser::open(&url, seconds, None);
    let started = browser
        .watch(Duration::from_secs(25), |s| s.current_time > 0.5)
        .unwrap_or_else(|| panic!("{format} never played: {:?}", browser.seen.last()));
    let samples = browser.finish();
    let last = samples.last().unwrap();
    let engine = if format == "dash" { "dashjs" } else { "hlsjs" };
    assert!(
        samples
            .iter()
            .all(|s| s.engine == engine || s.engine.is_empty() || s.engine == "null"),
        "{samples:?}"
    );
    assert_eq!(last.engine, engine, "{samples:?}");
    assert!(
        last.current_time - started.current_time >= (last.t - started.t) * 0.8,
        "playback did not keep up: {samples:?}"
    );
    assert!(last.frames > started.frames + 200, "{samples:?}");
    assert!(samples.iter().all(|s| s.errors == "[] []"), "{samples:?}");
    assert_eq!(last.formats, "ts fmp4 dash", "{samples:?}");
    let mut latencies: Vec<f64> = samples
        .iter()
        .filter(|s| s.t >= started.t + 10.0)
        .filter_map(|s| s.latency)
        .collect();
    latencies.sort_by(f64::total_cmp);
    latencies.get(latencies.len() / 2).copied()
}

#[test]
fn browser_plays_dash_through_dashjs_from_the_player_page() {
    let latency = plays_cmaf_format("dash", 30);
    eprintln!("DASH in dash.js through the player page: live latency median {latency:?} s");
    assert!(latency.is_some(), "dash.js reports its live latency");
}

#[test]
fn browser_plays_hls_in_fmp4_through_hlsjs_from_the_player_page() {
    let latency = plays_cmaf_format("fmp4", 20);
    eprintln!("HLS in fMP4 in hls.js through the player page: latency median {latency:?} s");
}

#[test]
fn browser_waits_when_the_source_stops_and_plays_when_it_returns() {
    let _one = ONE_BROWSER_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("browser-outage");
    let (server, port) = server_with_udp_stream(&dir);
    let mut ffmpeg = source(port, 120);
    let mut browser = Browser::open(&server.url("/cam.html"), 75, None);
    let playing = browser
        .watch(Duration::from_secs(25), |s| s.current_time > 2.0)
        .unwrap_or_else(|| panic!("playback never started: {:?}", browser.seen.last()));
    assert_eq!(playing.state, "live");

    let _ = ffmpeg.0.kill();
    let _ = ffmpeg.0.wait();
    let stopped = Instant::now();
    let waiting = browser.watch(Duration::from_secs(15), |s| s.state == "waiting");
    assert!(
        waiting.is_some(),
        "the page never said waiting after the source stopped: {:?}",
        browser.seen.last()
    );
    let waited = stopped.elapsed();

    ffmpeg = source(port, 120);
    let back = browser
        .watch(Duration::from_secs(20), |s| s.state == "live")
        .unwrap_or_else(|| panic!("the page never went live again: {:?}", browser.seen.last()));
    let resumed = browser
        .watch(Duration::from_secs(25), |s| {
            s.state == "live" && s.frames > back.frames + 50
        })
        .unwrap_or_else(|| panic!("playback did not resume: {:?}", browser.seen));
    let at = resumed.current_time;
    let advancing = browser.watch(Duration::from_secs(15), |s| s.current_time >= at + 3.0);
    drop(ffmpeg);
    let samples = browser.finish();
    assert!(
        advancing.is_some(),
        "currentTime did not advance after the source came back: {samples:?}"
    );
    assert!(samples.iter().all(|s| s.media_errors == 0), "{samples:?}");
    eprintln!("waiting shown {waited:?} after the source stopped");
    drop(server);
}

#[test]
fn info_json_and_embed_js_describe_the_stream() {
    let dir = TempDir::new("info");
    let (server, port) = server_with_udp_stream(&dir);
    // Before the source: waiting, no tracks, CORS open.
    let (status, head, body) = exchange(
        server.addr,
        "GET /cam/info.json HTTP/1.1\r\nHost: tv.example:8080\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    assert_eq!(header(&head, "access-control-allow-origin"), Some("*"));
    assert_eq!(header(&head, "content-type"), Some("application/json"));
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("\"state\":\"waiting\""), "{text}");
    assert!(
        text.contains("\"hls\":\"http://tv.example:8080/cam/master.m3u8\""),
        "{text}"
    );
    assert!(text.contains("\"http_ts\":\"http://tv.example:8080/cam.ts\""));

    let _ffmpeg = source(port, 30);
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let (_, _, body) = fetch(server.addr, "/cam/info.json", "");
        let text = String::from_utf8(body).unwrap();
        if text.contains("\"state\":\"live\"") && text.contains("avc1") {
            break text;
        }
        assert!(Instant::now() < deadline, "never live: {text}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        text.contains("{\"kind\":\"video\",\"codec\":\"avc1.")
            && text.contains("\"width\":640,\"height\":360"),
        "{text}"
    );
    assert!(
        text.contains("{\"kind\":\"audio\",\"codec\":\"mp4a.40.2\"}"),
        "{text}"
    );

    let (status, head, body) = fetch(server.addr, "/cam/embed.js", "");
    assert_eq!(status, 200);
    assert!(header(&head, "content-type")
        .unwrap()
        .starts_with("text/javascript"));
    let js = String::from_utf8(body).unwrap();
    assert!(js.contains("base + \"cam.html\""));
    // data-format="fmp4" or "dash" goes to the page (which the browser tests play).
    assert!(js.contains("\"?format=\" + encodeURIComponent(format)"));

    let (status, head, body) = fetch(server.addr, "/cam.html", "");
    assert_eq!(status, 200);
    assert!(header(&head, "content-type")
        .unwrap()
        .starts_with("text/html"));
    let html = String::from_utf8(body).unwrap();
    let hlsjs = html
        .split("<script src=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();
    let (status, head, body) = fetch(server.addr, &format!("/{hlsjs}"), "");
    assert_eq!(status, 200);
    assert!(body.len() > 100_000);
    let etag = header(&head, "etag").unwrap().to_string();
    assert!(header(&head, "cache-control")
        .unwrap()
        .contains("immutable"));
    let (status, _, _) = fetch(
        server.addr,
        &format!("/{hlsjs}"),
        &format!("If-None-Match: {etag}\r\n"),
    );
    assert_eq!(status, 304);
    let (status, _, _) = fetch(server.addr, "/nothere.html", "");
    assert_eq!(status, 404);
    let (status, _, _) = fetch(server.addr, "/nothere/info.json", "");
    assert_eq!(status, 404);
    // Two Host headers are refused (RFC 9112): the value is written into URLs.
    let (status, _, _) = fetch(server.addr, "/cam/info.json", "Host: other\r\n");
    assert_eq!(status, 400);
}

#[test]
fn browser_plays_a_proxied_stream_through_hlsjs_from_its_player_page() {
    let _one = ONE_BROWSER_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    // The origin: Debian's nginx serving ffmpeg's live HLS (one-second segments).
    let nginx = start_nginx(
        "types { application/vnd.apple.mpegurl m3u8; video/mp2t ts; }",
        "location / { root DIR; }",
    );
    let live = nginx.dir.join("live");
    let _encoder = ffmpeg_live_hls(&live, 60, &["index.m3u8"]);
    wait_until(
        Duration::from_secs(15),
        || "ffmpeg wrote no playlist".to_owned(),
        || live.join("seg3.ts").exists() || live.join("index3.ts").exists(),
    );
    let (server, _api, _token, _dir) = start_configured(
        "browser-proxy",
        &format!(
            "[server]\nproxy_allow_addresses = [\"127.0.0.0/8\"]\n\n\
             [[proxy]]\nname = \"news\"\nurl = \"http://{}/live/index.m3u8\"\n",
            nginx.addr
        ),
    );
    let mut browser = Browser::open(&server.url("/proxy/news.html?engine=hlsjs"), 26, None);
    let started = browser
        .watch(Duration::from_secs(20), |s| s.current_time > 0.5)
        .unwrap_or_else(|| panic!("playback never started: {:?}", browser.seen.last()));
    let samples = browser.finish();
    let later = samples
        .iter()
        .find(|s| s.t >= started.t + 10.0)
        .unwrap_or_else(|| panic!("no sample 10 s after the start: {samples:?}"));
    assert!(
        later.current_time - started.current_time >= 7.0,
        "currentTime went from {} to {}: {samples:?}",
        started.current_time,
        later.current_time
    );
    assert!(samples.iter().all(|s| s.media_errors == 0), "{samples:?}");
    assert_eq!(
        (later.state.as_str(), later.engine.as_str()),
        ("live", "hlsjs")
    );
    let (status, log) = server.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{log}");
}

#[test]
fn browser_plays_five_minutes_back_in_a_dvr_window() {
    let dir = TempDir::new("browser-dvr");
    let config = dir.0.join("shardcast.toml");
    std::fs::write(
        &config,
        "[[stream]]\nname = \"cam\"\nsource = \"demo:\"\ndvr = 420\n",
    )
    .unwrap();
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    // Five minutes of the stream, then a bit (waiting without the browser: the other browser
    // tests go on meanwhile).
    std::thread::sleep(Duration::from_secs(5 * 60 + 15));
    let _one = ONE_BROWSER_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let mut browser = Browser::open(&server.url("/cam.html?engine=hlsjs&start=-5m"), 20, None);
    let started = browser
        .watch(Duration::from_secs(20), |s| s.current_time > 0.5)
        .unwrap_or_else(|| panic!("playback never started: {:?}", browser.seen.last()));
    let samples = browser.finish();
    let mut behind: Vec<f64> = samples
        .iter()
        .filter(|s| s.t > started.t)
        .filter_map(|s| s.behind)
        .collect();
    behind.sort_by(f64::total_cmp);
    let median = *behind
        .get(behind.len() / 2)
        .unwrap_or_else(|| panic!("hls.js reported no PROGRAM-DATE-TIME: {samples:?}"));
    eprintln!("five minutes back in hls.js: the playhead's PROGRAM-DATE-TIME is {median:.1} s behind the clock");
    // Five minutes, and what a live player keeps from the edge (three segments and so on).
    assert!(
        (300.0..=320.0).contains(&median),
        "{median} s behind: {samples:?}"
    );
    let last = samples.last().unwrap();
    assert!(
        last.current_time - started.current_time >= 10.0,
        "{samples:?}"
    );
    assert!(samples.iter().all(|s| s.media_errors == 0), "{samples:?}");
    // From a moment four minutes ago: every segment from the one holding it, starting there.
    use shardcast_protocols::hls::{parse, DateTime, Playlist};
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let at = now_ms - 240_000;
    let iso = DateTime::from_unix_millis(at).to_string();
    let (code, _, body) = fetch(server.addr, &format!("/cam/index.m3u8?start={iso}"), "");
    assert_eq!(code, 200);
    let text = String::from_utf8_lossy(&body).into_owned();
    assert!(text.contains("#EXT-X-START:TIME-OFFSET=0"), "{text}");
    let Ok(Playlist::Media(from)) = parse(&body) else {
        panic!("{text}");
    };
    let first = from.segments[0].program_date_time.unwrap().unix_millis;
    assert!(
        first <= at && at - first < 5_000,
        "first {first}, asked {at}"
    );
    assert!(from.segments.len() >= 100, "{}", from.segments.len());
    let (code, _, _) = fetch(server.addr, "/cam/index.m3u8?start=soon", "");
    assert_eq!(code, 400);
    let (status, log) = server.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{log}");
}

#[test]
fn browser_plays_a_recording_through_hlsjs_from_its_player_page() {
    let _one = ONE_BROWSER_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("browser-vod");
    let rec = dir.0.join("rec");
    let (server, port) = server_with_udp_stream_configured(
        &dir.0,
        "",
        &format!(
            "record = {{ path = \"{}/{{stream}}/{{start}}.ts\", rotate = 14 }}\n",
            rec.display()
        ),
    );
    let _source = source(port, 40);
    let finished = || {
        std::fs::read_dir(rec.join("cam"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.ends_with(".ts"))
    };
    wait_until(
        Duration::from_secs(30),
        || server.log(),
        || finished().is_some(),
    );
    let file = finished().unwrap();
    let mut browser = Browser::open(
        &server.url(&format!("/vod/cam/{file}.html?engine=hlsjs")),
        16,
        None,
    );
    let started = browser
        .watch(Duration::from_secs(20), |s| s.current_time > 0.5)
        .unwrap_or_else(|| panic!("playback never started: {:?}", browser.seen.last()));
    let samples = browser.finish();
    let last = samples.last().unwrap();
    eprintln!("a recording in hls.js: started {started:?}, last {last:?}");
    // A recording of 14 s plays from its start at the speed of the clock, to its end.
    assert!(
        last.current_time - started.current_time >= ((last.t - started.t) * 0.8).min(12.0),
        "playback did not keep up: {samples:?}"
    );
    assert!(last.frames > 150, "{samples:?}");
    assert!(samples.iter().all(|s| s.media_errors == 0), "{samples:?}");
    assert_eq!(
        (last.state.as_str(), last.engine.as_str()),
        ("recorded", "hlsjs")
    );
    let (status, log) = server.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{log}");
}

/// The player page of `stream` plays in hls.js for `seconds`: it starts, keeps up within
/// 80%, and reports no media error.
fn player_page_plays(server: &Server, stream: &str, seconds: u32) {
    let mut browser = Browser::open(
        &server.url(&format!("/{stream}.html?engine=hlsjs")),
        seconds,
        None,
    );
    let started = browser
        .watch(Duration::from_secs(20), |s| s.current_time > 0.5)
        .unwrap_or_else(|| {
            panic!(
                "{stream}: playback never started: {:?}",
                browser.seen.last()
            )
        });
    let samples = browser.finish();
    let last = samples.last().unwrap();
    assert!(
        last.current_time - started.current_time >= (last.t - started.t) * 0.8,
        "{stream}: playback did not keep up: {samples:?}"
    );
    assert!(
        samples.iter().all(|s| s.media_errors == 0),
        "{stream}: {samples:?}"
    );
    assert_eq!(
        (last.state.as_str(), last.engine.as_str()),
        ("live", "hlsjs"),
        "{stream}"
    );
}

#[test]
fn browser_plays_streams_published_over_rtmp_and_srt_from_their_player_pages() {
    let _one = ONE_BROWSER_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let rtmp_port = free_port();
    let srt_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (server, _api, _token, _dir) = start_configured(
        "browser-rtmp-srt",
        &format!(
            "[[stream]]\nname = \"studio\"\nsource = \"rtmp://127.0.0.1:{rtmp_port}/live\"\nsegment_duration = 1\n\n\
             [[stream]]\nname = \"field\"\nsource = \"srt://127.0.0.1:{srt_port}?passphrase=correct-horse-battery\"\nsegment_duration = 1\n"
        ),
    );
    wait_listening(rtmp_port);
    wait_srt_listening(&server, srt_port);
    let encoder = |output: &[&str]| {
        KillOnDrop(
            std::process::Command::new("ffmpeg")
                .args(["-nostdin", "-v", "error", "-re", "-f", "lavfi", "-i"])
                .arg("testsrc2=size=640x360:rate=25")
                .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
                .args([
                    "-t", "50", "-c:v", "libx264", "-preset", "veryfast", "-g", "25",
                ])
                .args(["-pix_fmt", "yuv420p", "-c:a", "aac"])
                .args(output)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let _rtmp = encoder(&[
        "-f",
        "flv",
        &format!("rtmp://127.0.0.1:{rtmp_port}/live/studio"),
    ]);
    let _srt = encoder(&[
        "-f",
        "mpegts",
        &format!("srt://127.0.0.1:{srt_port}?streamid=field&passphrase=correct-horse-battery&pkt_size=1316"),
    ]);
    for stream in ["studio", "field"] {
        wait_until(
            Duration::from_secs(15),
            || format!("{stream} never went live"),
            || fetch(server.addr, &format!("/{stream}/index.m3u8"), "").0 == 200,
        );
        player_page_plays(&server, stream, 14);
    }
    let (status, log) = server.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{log}");
}
