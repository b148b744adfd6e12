//! TLS for viewers and the API, with real clients: curl, ffmpeg and the load generator over
//! https with a test CA (TLS 1.3 and 1.2, ALPN http/1.1); refusals (a name no certificate
//! serves, an expired certificate at start, plain HTTP on the TLS port, a push over https,
//! 200 handshakes that never finish, closed at the header timeout);
//! certificates replaced by SIGHUP and by the API while 100 viewers watch, and a bad one
//! refused with the running one kept. The suite runs on both backends.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod support;

use shardcast_bench::load::Load;
use shardcast_bench::net::TlsClient;
use std::time::Duration;
use support::*;

/// A server with the demo stream, plain HTTP (the harness's port) and TLS on `tls_port`, the
/// API on its own port.
fn tls_server(
    name: &str,
    cert: &TestCert,
    extra: &str,
) -> (Server, u16, std::net::SocketAddr, String, TempDir) {
    let tls_port = free_port();
    let config = format!(
        "[server]\ntls = {{ listen = \"127.0.0.1:{tls_port}\", cert = {:?}, key = {:?} }}\n{extra}\n\
         [[stream]]\nname = \"demo\"\nsource = \"demo:\"\nsegment_duration = 1\n",
        cert.cert.display().to_string(),
        cert.key.display().to_string(),
    );
    let (server, api, token, dir) = start_configured(name, &config);
    wait_until(
        Duration::from_secs(10),
        || "the TLS listener never accepted".into(),
        || std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_ok(),
    );
    (server, tls_port, api, token, dir)
}

fn https(port: u16, path: &str) -> String {
    format!("https://live.test:{port}{path}")
}

fn resolve(port: u16) -> String {
    format!("live.test:{port}:127.0.0.1")
}

/// The newest segment the playlist lists, read until there is one.
fn newest_segment(server: &Server) -> String {
    let mut newest = String::new();
    wait_until(
        Duration::from_secs(10),
        || "no segment listed".into(),
        || {
            let (_, _, body) = fetch(server.addr, "/demo/index.m3u8", "");
            newest = String::from_utf8_lossy(&body)
                .lines()
                .rfind(|l| l.ends_with(".ts"))
                .unwrap_or_default()
                .to_owned();
            !newest.is_empty()
        },
    );
    newest
}

#[test]
fn viewers_watch_over_https_with_curl_ffmpeg_and_the_load_generator() {
    let pki = TestPki::new("watch");
    let cert = pki.issue("live", &["live.test", "localhost"], 1, 30);
    let (server, port, api, token, _dir) = tls_server("tls-watch", &cert, "");
    let ca = pki.ca();
    let resolve = resolve(port);

    // A segment over https is the segment over http, byte for byte (from the memfd, mapped).
    let segment = newest_segment(&server);
    let (ok, tls_bytes, err) = curl_https(
        &ca,
        &[
            "--resolve",
            &resolve,
            &https(port, &format!("/demo/{segment}")),
        ],
    );
    assert!(ok, "{err}");
    let (status, _, plain) = fetch(server.addr, &format!("/demo/{segment}"), "");
    assert_eq!(status, 200);
    assert!(tls_bytes.len() > 10_000);
    assert_eq!(tls_bytes, plain);

    // curl offers h2 and http/1.1: ALPN picks http/1.1. TLS 1.2 works; 1.1 is refused.
    let (ok, out, err) = curl_https(
        &ca,
        &[
            "--resolve",
            &resolve,
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
            &https(port, "/demo/index.m3u8"),
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(String::from_utf8_lossy(&out), "1.1 200");
    let (ok, _, err) = curl_https(
        &ca,
        &[
            "--resolve",
            &resolve,
            "--tls-max",
            "1.2",
            "--tlsv1.2",
            &https(port, "/demo/index.m3u8"),
        ],
    );
    assert!(ok, "TLS 1.2: {err}");
    let (ok, _, _) = curl_https(
        &ca,
        &[
            "--resolve",
            &resolve,
            "--tls-max",
            "1.1",
            "--tlsv1.1",
            &https(port, "/demo/index.m3u8"),
        ],
    );
    assert!(!ok, "TLS 1.1 must be refused");

    // What the server writes for a viewer over https points to https.
    let (ok, info, err) = curl_https(
        &ca,
        &["--resolve", &resolve, &https(port, "/demo/info.json")],
    );
    assert!(ok, "{err}");
    let info = String::from_utf8_lossy(&info);
    assert!(
        info.contains(&format!("https://live.test:{port}/demo")),
        "{info}"
    );

    // ffmpeg plays HLS and HTTP-TS over https, silently.
    let ca_arg = ca.to_str().unwrap();
    for url in [
        format!("https://localhost:{port}/demo/index.m3u8"),
        format!("https://localhost:{port}/demo.ts"),
    ] {
        let (ok, said) = run(
            "ffmpeg",
            &[
                "-nostdin",
                "-hide_banner",
                "-v",
                "error",
                "-ca_file",
                ca_arg,
                "-tls_verify",
                "1",
                "-i",
                &url,
                "-t",
                "4",
                "-f",
                "null",
                "-",
            ],
        );
        assert!(ok && said.trim().is_empty(), "{url}: {said}");
    }

    // 40 HLS players and 40 progressive viewers over TLS: nothing missed, no gap.
    let tls = TlsClient::new(&ca, "live.test").unwrap();
    let load = |path: &str, viewers| Load {
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
        path: path.into(),
        viewers,
        ramp: Duration::from_secs(1),
        settle: Duration::from_secs(2),
        measure: Duration::from_secs(5),
        server_pid: None,
        progress: false,
        pace_bps: 0,
        tls: Some(tls.clone()),
        low_latency: false,
        connection_per_request: false,
    };
    let hls_load = load("/demo/index.m3u8", 40);
    let ts_load = load("/demo.ts", 40);
    let hls = std::thread::spawn(move || shardcast_bench::hls::run(&hls_load).unwrap());
    let ts = shardcast_bench::ts::run(&ts_load).unwrap();
    let hls = hls.join().unwrap();
    assert_eq!(hls.started, 40, "{}", hls.summary());
    assert!(hls.segments >= 40, "{}", hls.summary());
    assert_eq!(
        (hls.missed, hls.status_4xx, hls.status_5xx, hls.reconnects),
        (0, 0, 0, 0),
        "{}",
        hls.summary()
    );
    assert_eq!(
        (ts.connected, ts.disconnected, ts.gaps),
        (40, 0, 0),
        "{}",
        ts.summary()
    );

    // The API says which certificate serves which names, and what TLS did.
    let (status, tls_status) = api_call(api, "GET", "/api/v1/tls", &token, None);
    assert_eq!(status, 200, "{tls_status}");
    let spec = openapi();
    check(
        &spec,
        &spec["components"]["schemas"]["Tls"],
        &tls_status,
        "GET /api/v1/tls",
    );
    assert_eq!(
        tls_status["certificates"][0]["names"],
        serde_json::json!(["live.test", "localhost"])
    );
    assert!(
        tls_status["handshakes"].as_u64().unwrap() >= 85,
        "{tls_status}"
    );
    assert_eq!(
        tls_status["failures"].as_u64(),
        Some(1),
        "the TLS 1.1 attempt: {tls_status}"
    );
    let (_, _, metrics) = fetch(
        api,
        "/metrics",
        &format!("Authorization: Bearer {token}\r\n"),
    );
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("shardcast_tls_certificate_expiry_seconds{cert="),
        "{metrics}"
    );
}

#[test]
fn names_no_certificate_serves_plain_http_and_pushes_are_refused() {
    let pki = TestPki::new("refusals");
    let cert = pki.issue("live", &["live.test"], 1, 30);
    let (server, port, api, token, _dir) = tls_server("tls-refusals", &cert, "");
    let ca = pki.ca();
    // A name no certificate serves: refused during the handshake, counted.
    let (ok, _, err) = curl_https(
        &ca,
        &[
            "--resolve",
            &format!("other.test:{port}:127.0.0.1"),
            &format!("https://other.test:{port}/demo/index.m3u8"),
        ],
    );
    assert!(!ok);
    assert!(err.contains("alert"), "{err}");
    // Plain HTTP on the TLS port: no HTTP answer, the connection closed.
    let raw = raw_get(
        format!("127.0.0.1:{port}").parse().unwrap(),
        "GET /demo/index.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(3),
    );
    assert!(
        !raw.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&raw)
    );
    // A push over https: 501, the body not read (pushes go to the plain listener).
    let (ok, out, err) = curl_https(
        &ca,
        &[
            "--resolve",
            &resolve(port),
            "-X",
            "PUT",
            "--data-binary",
            "not a stream",
            "-w",
            "%{http_code}",
            "-o",
            "/dev/null",
            &https(port, "/push/demo"),
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(String::from_utf8_lossy(&out), "501");
    let (_, tls_status) = api_call(api, "GET", "/api/v1/tls", &token, None);
    assert_eq!(tls_status["unknown_name"].as_u64(), Some(1), "{tls_status}");
    assert!(
        tls_status["failures"].as_u64().unwrap() >= 2,
        "{tls_status}"
    );
    // The plain listener is untouched by all this.
    newest_segment(&server);
}

#[test]
fn an_expired_certificate_is_refused_at_start_with_its_file_and_reason() {
    let pki = TestPki::new("expired");
    let expired = pki.issue("expired", &["live.test"], 60, 30);
    let dir = TempDir::new("tls-expired");
    let config = dir.join("shardcast.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ntls = {{ listen = \"127.0.0.1:{}\", cert = {:?}, key = {:?} }}\n",
            free_port(),
            expired.cert.display().to_string(),
            expired.key.display().to_string()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shardcast-under-test"))
        .args([
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--api-listen",
            "off",
        ])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("expired.pem") && said.contains("expired"),
        "{said}"
    );
}

#[test]
fn certificates_are_replaced_by_sighup_and_the_api_while_100_viewers_watch() {
    let pki = TestPki::new("reload");
    let first = pki.issue("live", &["live.test"], 1, 30);
    let (server, port, api, token, dir) = tls_server("tls-reload", &first, "");
    let ca = pki.ca();
    let tls = TlsClient::new(&ca, "live.test").unwrap();
    let load = Load {
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
        path: "/demo.ts".into(),
        viewers: 100,
        ramp: Duration::from_secs(1),
        settle: Duration::from_secs(1),
        measure: Duration::from_secs(10),
        server_pid: None,
        progress: false,
        pace_bps: 0,
        tls: Some(tls),
        low_latency: false,
        connection_per_request: false,
    };
    let viewers = std::thread::spawn(move || shardcast_bench::ts::run(&load).unwrap());
    std::thread::sleep(Duration::from_secs(3));

    // Renewed in place (as certbot does), with one more name: SIGHUP serves it to new
    // handshakes; the 100 open connections keep theirs.
    let renewed = pki.issue("renewed", &["live.test", "new.test"], 1, 60);
    std::fs::copy(&renewed.cert, &first.cert).unwrap();
    std::fs::copy(&renewed.key, &first.key).unwrap();
    let new_name = |port: u16| {
        curl_https(
            &ca,
            &[
                "--resolve",
                &format!("new.test:{port}:127.0.0.1"),
                &format!("https://new.test:{port}/demo/index.m3u8"),
            ],
        )
        .0
    };
    assert!(!new_name(port), "new.test is not served before the reload");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.child.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    wait_until(
        Duration::from_secs(5),
        || "new.test never served after SIGHUP".into(),
        || new_name(port),
    );

    // A bad certificate through the API: refused with the reason, the running one stays.
    let expired = pki.issue("expired", &["live.test", "new.test"], 60, 30);
    std::fs::copy(&expired.cert, &first.cert).unwrap();
    std::fs::copy(&expired.key, &first.key).unwrap();
    let (status, refused) = api_call(api, "POST", "/api/v1/tls/reload", &token, None);
    assert_eq!(status, 422, "{refused}");
    check_error(
        &openapi(),
        &serde_json::to_vec(&refused).unwrap(),
        "a refused reload",
    );
    assert!(
        refused["error"].as_str().unwrap().contains("expired"),
        "{refused}"
    );
    assert!(new_name(port), "the running certificate still serves");

    // Restored: the API reload takes it.
    std::fs::copy(&renewed.cert, &first.cert).unwrap();
    std::fs::copy(&renewed.key, &first.key).unwrap();
    let (status, reloaded) = api_call(api, "POST", "/api/v1/tls/reload", &token, None);
    assert_eq!(status, 200, "{reloaded}");
    let spec = openapi();
    check(
        &spec,
        &spec["components"]["schemas"]["Tls"],
        &reloaded,
        "POST /api/v1/tls/reload",
    );
    assert_eq!(reloaded["reloads"].as_u64(), Some(2), "{reloaded}");
    assert_eq!(reloaded["reloads_refused"].as_u64(), Some(1), "{reloaded}");

    let report = viewers.join().unwrap();
    assert_eq!(
        (report.connected, report.disconnected, report.gaps),
        (100, 0, 0),
        "{}",
        report.summary()
    );
    drop(dir);
}

#[test]
fn the_api_is_served_over_tls_with_the_viewers_certificates() {
    let pki = TestPki::new("api");
    let cert = pki.issue("live", &["live.test", "localhost"], 1, 30);
    let (_server, _port, api, token, _dir) = tls_server("tls-api", &cert, "[api]\ntls = true\n");
    let (ok, out, err) = curl_https(
        &pki.ca(),
        &[
            "-H",
            &format!("Authorization: Bearer {token}"),
            &format!("https://localhost:{}/api/v1/server", api.port()),
        ],
    );
    assert!(ok, "{err}");
    assert!(json(&out)["shards"].as_u64().unwrap() >= 1);
    // Plain HTTP to the API gets no answer.
    let raw = raw_get(
        api,
        "GET /api/v1/server HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(2),
    );
    assert!(
        !raw.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&raw)
    );
}

#[test]
fn a_handshake_that_never_finishes_is_closed_at_the_header_timeout() {
    let pki = TestPki::new("slow");
    let cert = pki.issue("live", &["live.test"], 1, 30);
    let (_server, port, _api, _token, _dir) = tls_server("tls-slow", &cert, "header_timeout = 1");
    // 200 clients that start a TLS record and never finish it (slowloris on the handshake).
    use std::io::{Read, Write};
    let mut clients: Vec<std::net::TcpStream> = (0..200)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(&[0x16, 0x03, 0x01]).unwrap();
            s
        })
        .collect();
    let started = std::time::Instant::now();
    for s in &mut clients {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        // Closed by the server (EOF or reset), not left open: read does not time out.
        match s.read(&mut buf) {
            Ok(n) => assert_eq!(n, 0, "the server answered a half record"),
            Err(e) => assert!(
                !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "still open after {:?}",
                started.elapsed()
            ),
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // And a real client is served meanwhile and after.
    let (ok, _, err) = curl_https(
        &pki.ca(),
        &["--resolve", &resolve(port), &https(port, "/demo/info.json")],
    );
    assert!(ok, "{err}");
}
