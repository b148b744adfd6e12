//! Streams sent on: re-emitted to a multicast group and to a unicast RTP receiver (paced by
//! their PCRs, counters continuous, decoded by ffmpeg), and pushed to a second shardcast over
//! TCP, HTTP and SRT (encrypted), through its restart, with `PUSH_OUT_START` and `PUSH_END`,
//! and the API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use support::*;

/// The PCR of a TS packet (27 MHz ticks), if it has one.
fn pcr(p: &[u8]) -> Option<u64> {
    let packet = shardcast_protocols::ts::Packet::new(p.try_into().ok()?).ok()?;
    Some(packet.pcr()?.ticks_27mhz())
}

/// Datagrams received on `socket` for `seconds`, with when each came (ns from the first), as
/// the kernel stamped it on arrival: the pacing measured is the server's, not this thread's
/// turn on a busy machine.
fn receive(socket: &UdpSocket, seconds: u64) -> Vec<(u64, Vec<u8>)> {
    use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
    use std::os::fd::AsRawFd;
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    setsockopt(socket, sockopt::ReceiveTimestampns, &true).unwrap();
    let start = Instant::now();
    let mut first = None;
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    let mut space = nix::cmsg_space!(nix::sys::time::TimeSpec);
    while start.elapsed() < Duration::from_secs(seconds) {
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let Ok(message) = recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        ) else {
            continue;
        };
        let n = message.bytes;
        let stamp = message.cmsgs().unwrap().find_map(|c| match c {
            ControlMessageOwned::ScmTimestampns(t) => {
                Some(t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
            }
            _ => None,
        });
        let at = stamp.expect("a receive timestamp");
        let first = *first.get_or_insert(at);
        got.push((at.saturating_sub(first), buf[..n].to_vec()));
    }
    got
}

/// When each datagram was due, by the PCRs around its last packet (the rate between two PCRs
/// is constant, and a datagram leaves when its last packet is due), against when it came: the
/// difference between consecutive datagrams' lateness (ns), sorted, and the spread of the
/// lateness over the whole capture (the pacer follows the sender's clock slowly).
fn pacing_errors(datagrams: &[(u64, &[u8])]) -> (Vec<u64>, u64) {
    let mut pcr_pid = None;
    // (packet index, PCR in ns) of every PCR on the PCR PID.
    let mut pcrs = Vec::new();
    let mut last_packet = Vec::new();
    let mut index = 0usize;
    for (_, d) in datagrams {
        for p in d.chunks_exact(188) {
            let pid = u16::from(p[1] & 0x1F) << 8 | u16::from(p[2]);
            if let Some(pcr) = pcr(p) {
                if *pcr_pid.get_or_insert(pid) == pid {
                    pcrs.push((index, pcr * 1000 / 27));
                }
            }
            index += 1;
        }
        last_packet.push(index - 1);
    }
    let mut lateness = Vec::new();
    for ((at, _), last) in datagrams.iter().zip(last_packet) {
        let after = pcrs.partition_point(|(i, _)| *i <= last);
        if after == 0 || after == pcrs.len() {
            continue;
        }
        let ((i0, t0), (i1, t1)) = (pcrs[after - 1], pcrs[after]);
        let due = t0 + (t1 - t0) * (last - i0) as u64 / (i1 - i0) as u64;
        lateness.push(*at as i64 - due as i64);
    }
    let mut errors: Vec<u64> = lateness.windows(2).map(|w| w[0].abs_diff(w[1])).collect();
    errors.sort_unstable();
    let spread = lateness.iter().max().unwrap() - lateness.iter().min().unwrap();
    (errors, spread as u64)
}

/// Datagrams sent at the pace of their PCRs: the typical one (p50) within 1 ms, and nine in ten
/// within 5 ms, of when its PCRs put it after the one before. Sent as they arrive instead (in
/// bursts of a frame), consecutive datagrams are ~10 ms apart in PCR time but not in arrival, so
/// the median alone tells paced from not. The tail is printed, not held to a bound: on a machine
/// running other tests, every datagram sent on loopback also does the network work queued by
/// others on that CPU, which no scheduling priority avoids.
fn assert_paced(what: &str, errors: &[u64], spread: u64) {
    let at = |q: usize| errors[(errors.len() * q / 100).min(errors.len() - 1)];
    let (p50, p90, p99, max) = (at(50), at(90), at(99), errors[errors.len() - 1]);
    eprintln!(
        "{what}: {} pairs of datagrams: lateness from one to the next p50 {} µs, p90 {} µs, p99 {} µs, \
         max {} µs; spread {} µs",
        errors.len(),
        p50 / 1000,
        p90 / 1000,
        p99 / 1000,
        max / 1000,
        spread / 1000
    );
    assert!(
        p50 <= 1_000_000 && p90 <= 5_000_000,
        "{what}: pacing error p50 {p50} ns, p90 {p90} ns (p99 {p99} ns, max {max} ns)"
    );
}

/// ffprobe finds ffmpeg's 640x360 H.264 and AAC in `bytes`, and ffmpeg decodes them silently
/// (up to the last whole picture: the capture ends in the middle of one).
fn write_and_decode(dir: &TempDir, name: &str, bytes: &[u8]) {
    let file = dir.0.join(name);
    std::fs::write(&file, whole_frames(bytes, 0x100)).unwrap();
    let url = file.to_str().unwrap();
    let probe = probe_streams(url);
    assert!(
        probe.contains("h264,640,360,") && probe.contains("aac"),
        "{name}: {probe}"
    );
    let (ok, said) = run(
        "ffmpeg",
        &["-nostdin", "-v", "error", "-i", url, "-f", "null", "-"],
    );
    assert!(ok && said.trim().is_empty(), "{name}: ffmpeg said: {said}");
}

#[test]
fn a_stream_is_re_emitted_to_multicast_and_rtp_paced_by_its_pcrs() {
    let _multicast = LoopbackMulticast::set_up();
    let (input, group_port, rtp_port) = (free_port(), free_port(), free_port());
    let group = Ipv4Addr::new(239, 255, 42, 77);
    // The receivers, before anything is sent.
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .unwrap();
    socket.set_reuse_address(true).unwrap();
    socket
        .bind(&SocketAddr::from((group, group_port)).into())
        .unwrap();
    socket
        .join_multicast_v4(&group, &Ipv4Addr::UNSPECIFIED)
        .unwrap();
    let multicast: UdpSocket = socket.into();
    let rtp = UdpSocket::bind(("127.0.0.1", rtp_port)).unwrap();
    let (server, api, token, dir) = start_configured(
        "push-out-udp",
        &format!(
            "[[stream]]\nname = \"cam\"\nsource = \"udp://127.0.0.1:{input}\"\nsegment_duration = 1\n\
             push = [\"udp://{group}:{group_port}?ttl=1\", \"udp://127.0.0.1:{rtp_port}?rtp=1&delay=300\"]\n"
        ),
    );
    let _ffmpeg = ffmpeg_source(
        &format!("udp://127.0.0.1:{input}?pkt_size=1316"),
        30,
        "640x360",
        "1M",
        25,
    );
    // (The receivers stay open to the end: a closed port makes sends fail, counted.)
    let rtp_thread = std::thread::spawn(move || {
        let got = receive(&rtp, 12);
        (rtp, got)
    });
    let got = receive(&multicast, 12);
    let (_rtp, got_rtp) = rtp_thread.join().unwrap();
    // The pacer runs at real-time priority where it may (these tests run as root): its
    // thread's scheduling policy (field 41 of its stat) is SCHED_FIFO (1).
    let pacer_policies: Vec<String> =
        std::fs::read_dir(format!("/proc/{}/task", server.child.id()))
            .unwrap()
            .filter_map(|t| {
                let t = t.ok()?.path();
                let comm = std::fs::read_to_string(t.join("comm")).ok()?;
                let stat = std::fs::read_to_string(t.join("stat")).ok()?;
                let after_name = &stat[stat.rfind(')')? + 2..];
                (comm.trim() == "push-udp")
                    .then(|| after_name.split(' ').nth(38).unwrap_or("").to_string())
            })
            .collect();
    if nix::unistd::geteuid().is_root() {
        assert_eq!(pacer_policies, ["1"], "push-udp's scheduling policy");
    }
    assert!(got.len() > 500, "{} datagrams to the group", got.len());

    // Multicast: whole datagrams of 7 packets, counters continuous from the first, which is
    // an access point; ffmpeg finds the stream and decodes it silently.
    assert!(
        got.iter().all(|(_, d)| d.len() == 7 * 188),
        "a datagram not of 7 packets"
    );
    let bytes: Vec<u8> = got.iter().flat_map(|(_, d)| d.clone()).collect();
    assert_eq!(continuity_breaks(&bytes), []);
    assert_eq!(bytes[1] & 0x1F, 0, "the first packet is the PAT");
    write_and_decode(&dir, "group.ts", &bytes);
    // Paced by the PCRs: each datagram with a PCR comes when the one before says it should.
    let (errors, spread) = pacing_errors(
        &got.iter()
            .map(|(at, d)| (*at, d.as_slice()))
            .collect::<Vec<_>>(),
    );
    assert_paced("multicast", &errors, spread);

    // RTP: version 2, payload type 33, consecutive sequence numbers, timestamps that grow by
    // the time between datagrams (90 kHz); the TS inside continuous.
    assert!(got_rtp.len() > 500, "{} RTP datagrams", got_rtp.len());
    let mut sequence = None;
    let mut payload = Vec::new();
    let mut timed = Vec::new();
    for (at, d) in &got_rtp {
        assert_eq!(d.len(), 12 + 7 * 188);
        assert_eq!(d[0] >> 6, 2);
        assert_eq!(d[1] & 0x7F, 33);
        let s = u16::from_be_bytes([d[2], d[3]]);
        if let Some(previous) = sequence {
            assert_eq!(s, u16::wrapping_add(previous, 1));
        }
        sequence = Some(s);
        payload.extend_from_slice(&d[12..]);
        timed.push((*at, &d[12..]));
    }
    assert_eq!(continuity_breaks(&payload), []);
    write_and_decode(&dir, "rtp.ts", &payload);
    let (errors, spread) = pacing_errors(&timed);
    assert_paced("RTP", &errors, spread);

    // Listed with what they did, and counted.
    let (code, pushes) = api_call(api, "GET", "/api/v1/pushes", &token, None);
    assert_eq!(code, 200);
    let spec = openapi();
    check(
        &spec,
        &spec["paths"]["/api/v1/pushes"]["get"]["responses"]["200"]["content"]["application/json"]
            ["schema"],
        &pushes,
        "GET /api/v1/pushes",
    );
    let pushes = pushes.as_array().unwrap().clone();
    assert_eq!(pushes.len(), 2, "{pushes:?}");
    for p in &pushes {
        assert_eq!(p["origin"], "config");
        assert_eq!(p["stream"], "cam");
        assert!(p["datagrams"].as_u64().unwrap() > 500, "{p}");
        assert_eq!(p["send_errors"], 0, "{p}");
        assert_eq!(p["dropped_chunks"], 0, "{p}");
    }
    let metrics = metrics(api, &token);
    assert!(metrics.contains(&format!(
        "shardcast_push_out_datagrams_total{{stream=\"cam\",id=\"1\",target=\"udp://{group}:{group_port}?ttl=1\"}}"
    )) || metrics.contains(&format!(
        "shardcast_push_out_datagrams_total{{stream=\"cam\",id=\"2\",target=\"udp://{group}:{group_port}?ttl=1\"}}"
    )), "{metrics}");
    assert!(metrics.contains("shardcast_push_outs 2"), "{metrics}");
    // A pushed stream is read as each datagram comes, never on the ingest tick, or the pacing
    // would follow the tick.
    let ticked: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("shardcast_shard_ingest_ticked{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(ticked, 0, "{metrics}");
    drop(server);
}

/// A handler for `PUSH_OUT_START` and `PUSH_END` that logs each call (one line, the payload's
/// lines joined by `|`) in `calls` beside it, and answers `PUSH_OUT_START`: a target with
/// `rewrite.invalid` becomes `rewrite_to`, one with `refuse` is refused, others stay.
fn handler(dir: &TempDir, rewrite_to: &str) -> std::path::PathBuf {
    let script = dir.0.join("handler.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\npayload=$(cat)\nprintf '%s %s\\n' \"$1\" \"$(printf '%s' \"$payload\" | tr '\\n' '|')\" >> \"$(dirname \"$0\")/calls\"\n\
             if [ \"$1\" = PUSH_OUT_START ]; then\n  target=$(printf '%s\\n' \"$payload\" | sed -n 2p)\n  case \"$target\" in\n    *rewrite.invalid*) echo '{rewrite_to}' ;;\n    *refuse*) echo ;;\n    *) echo \"$target\" ;;\n  esac\nfi\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    script
}

fn calls(dir: &TempDir) -> String {
    std::fs::read_to_string(dir.0.join("calls")).unwrap_or_default()
}

#[test]
fn pushes_reach_a_second_server_over_tcp_and_http_through_its_restart() {
    let (input, far_port, far_tcp, far_srt) = (free_port(), free_port(), free_port(), free_port());
    let far_config = format!(
        "[[stream]]\nname = \"overtcp\"\nsource = \"tcp://127.0.0.1:{far_tcp}\"\nsegment_duration = 1\n\n\
         [[stream]]\nname = \"overhttp\"\nsource = \"push://?key=s3cret\"\nsegment_duration = 1\n\n\
         [[stream]]\nname = \"oversrt\"\nsource = \"srt://127.0.0.1:{far_srt}?passphrase=0123456789abc\"\nsegment_duration = 1\n"
    );
    let far_dir = TempDir::new("push-out-far");
    let far_path = far_dir.0.join("shardcast.toml");
    std::fs::write(&far_path, &far_config).unwrap();
    // The far server listens where the near one pushes, started again on the same port.
    let start_far = || {
        let listen = format!("127.0.0.1:{far_port}");
        let far = Server::start(&[
            "--config",
            far_path.to_str().unwrap(),
            "--listen",
            &listen,
            "--state-dir",
            far_dir.0.to_str().unwrap(),
        ]);
        wait_listening(far_tcp);
        far
    };

    let dir = TempDir::new("push-out-near");
    let script = handler(&dir, &format!("tcp://127.0.0.1:{far_tcp}"));
    let config = format!(
        "[[stream]]\nname = \"cam\"\nsource = \"udp://127.0.0.1:{input}\"\nsegment_duration = 1\n\
         push = [\"tcp://rewrite.invalid:9\", \"http://127.0.0.1:{far_port}/push/overhttp?key=s3cret\", \"tcp://127.0.0.1:9/refuse\", \"srt://127.0.0.1:{far_srt}?streamid=oversrt&passphrase=0123456789abc\"]\n\n\
         [[trigger]]\non = \"PUSH_OUT_START\"\nhandler = \"{0}\"\n\n\
         [[trigger]]\non = \"PUSH_END\"\nhandler = \"{0}\"\n",
        script.display()
    );
    // The refused target is refused by the trigger, not the configuration: it parses.
    let config = config.replace("tcp://127.0.0.1:9/refuse", "tcp://refuse.invalid:9");
    let path = dir.0.join("shardcast.toml");
    std::fs::write(&path, &config).unwrap();
    let api = free_api_addr();
    // The near server first: its pushes find nothing to connect to, and keep trying.
    let near = start_with_api(&path, &dir.0, api);
    let token = api_token(&dir.0);
    let _ffmpeg = ffmpeg_source(
        &format!("udp://127.0.0.1:{input}?pkt_size=1316"),
        90,
        "640x360",
        "1M",
        25,
    );
    let pushes = || api_call(api, "GET", "/api/v1/pushes", &token, None).1;
    wait_until(
        Duration::from_secs(10),
        || format!("{} {}", pushes(), calls(&dir)),
        || {
            pushes()
                .as_array()
                .is_some_and(|p| p.len() == 3 && p.iter().all(|p| p["failures"].as_u64() > Some(0)))
        },
    );
    let asked = calls(&dir);
    assert!(
        asked.contains("PUSH_OUT_START cam|tcp://rewrite.invalid:9\n"),
        "{asked}"
    );
    assert!(
        asked.contains("PUSH_OUT_START cam|tcp://refuse.invalid:9\n"),
        "{asked}"
    );
    let metrics_text = metrics(api, &token);
    assert!(
        metrics_text.contains("shardcast_push_outs_refused_total 1"),
        "{metrics_text}"
    );
    let listed = pushes();
    let targets: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["actual_target"].as_str().unwrap())
        .collect();
    assert!(
        targets.contains(&format!("tcp://127.0.0.1:{far_tcp}").as_str()),
        "{targets:?}"
    );

    // The far server comes: both pushes connect, and it plays what they bring.
    let far = start_far();
    for stream in ["overtcp", "overhttp", "oversrt"] {
        wait_until(
            Duration::from_secs(20),
            || {
                format!(
                    "{stream} never played: {}\n--- near ---\n{}",
                    far.log(),
                    near.log()
                )
            },
            || {
                let (code, _, _) = fetch(far.addr, &format!("/{stream}/index.m3u8"), "");
                code == 200
            },
        );
        plays_640x360_h264_and_aac(&far, stream);
    }
    // The far server goes and comes back: the pushes connect again.
    let (_, _) = far.stop(nix::sys::signal::Signal::SIGTERM);
    let far = start_far();
    wait_until(
        Duration::from_secs(30),
        || format!("{}", pushes()),
        || {
            pushes().as_array().is_some_and(|p| {
                p.iter()
                    .all(|p| p["reconnects"].as_u64() >= Some(1) && p["connected"] == true)
            })
        },
    );
    for stream in ["overtcp", "overhttp", "oversrt"] {
        wait_until(
            Duration::from_secs(20),
            || format!("{stream} never played again: {}", far.log()),
            || fetch(far.addr, &format!("/{stream}/index.m3u8"), "").0 == 200,
        );
        plays_640x360_h264_and_aac(&far, stream);
    }

    // One more through the API, to a UDP receiver; then stopped: PUSH_END says what it did.
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = format!("udp://{}", receiver.local_addr().unwrap());
    let (code, started) = api_call(
        api,
        "POST",
        "/api/v1/streams/cam/pushes",
        &token,
        Some(&format!("{{\"target\": \"{target}\"}}")),
    );
    assert_eq!(code, 201, "{started}");
    let id = started["id"].as_u64().unwrap();
    let got = receive(&receiver, 3);
    assert!(got.len() > 100, "{} datagrams", got.len());
    let (code, _) = api_call(api, "DELETE", &format!("/api/v1/pushes/{id}"), &token, None);
    assert_eq!(code, 204);
    // Nothing more comes once what was in flight is in.
    std::thread::sleep(Duration::from_millis(300));
    let after = receive(&receiver, 1);
    assert!(after.is_empty(), "{} datagrams after the stop", after.len());
    wait_until(
        Duration::from_secs(10),
        || calls(&dir),
        || calls(&dir).contains(&format!("PUSH_END {id}|cam|{target}|{target}|")),
    );
    let ended = calls(&dir);
    let line = ended
        .lines()
        .find(|l| l.starts_with(&format!("PUSH_END {id}|")))
        .unwrap();
    let status: serde_json::Value = serde_json::from_str(line.rsplit('|').next().unwrap())
        .unwrap_or_else(|e| panic!("{e}: {line}"));
    assert!(status["bytes"].as_u64().unwrap() > 100_000, "{status}");
    assert_eq!(status["origin"], "api");
    // Bad requests are refused with the reason.
    let (code, body) = api_call(
        api,
        "POST",
        "/api/v1/streams/cam/pushes",
        &token,
        Some("{\"target\": \"ftp://x:1\"}"),
    );
    assert_eq!(code, 400, "{body}");
    let (code, _) = api_call(
        api,
        "POST",
        "/api/v1/streams/nope/pushes",
        &token,
        Some(&format!("{{\"target\": \"{target}\"}}")),
    );
    assert_eq!(code, 404);
    let (code, _) = api_call(api, "DELETE", &format!("/api/v1/pushes/{id}"), &token, None);
    assert_eq!(code, 404);

    // The near server stops: PUSH_END for the configured two as well.
    let (status, log) = near.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{log}");
    let ended = calls(&dir);
    assert_eq!(ended.matches("PUSH_END ").count(), 4, "{ended}");
    drop(far);
}

#[test]
fn a_far_end_that_takes_nothing_costs_only_its_push_and_max_push_outs_holds() {
    let input = free_port();
    // A far end that takes connections and reads nothing, with the smallest receive buffer.
    let sink = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .unwrap();
    sink.set_recv_buffer_size(4096).unwrap();
    sink.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    sink.listen(8).unwrap();
    let sink: std::net::TcpListener = sink.into();
    let sink_port = sink.local_addr().unwrap().port();
    sink.set_nonblocking(true).unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let holder = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok((conn, _)) = sink.accept() {
                    held.push(conn);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            held.len()
        })
    };
    let (server, api, token, _dir) = start_configured(
        "push-out-stalled",
        &format!(
            "[server]\nmax_push_outs = 2\n\n\
             [[stream]]\nname = \"cam\"\nsource = \"udp://127.0.0.1:{input}\"\nsegment_duration = 1\n\
             push = [\"tcp://127.0.0.1:{sink_port}\"]\n"
        ),
    );
    let _ffmpeg = ffmpeg_source(
        &format!("udp://127.0.0.1:{input}?pkt_size=1316"),
        40,
        "640x360",
        "2M",
        25,
    );
    wait_until(
        Duration::from_secs(10),
        || server.log(),
        || fetch(server.addr, "/cam/index.m3u8", "").0 == 200,
    );
    // A second push fits; a third does not.
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    let body = format!(
        "{{\"target\": \"udp://{}\"}}",
        receiver.local_addr().unwrap()
    );
    let (code, _) = api_call(
        api,
        "POST",
        "/api/v1/streams/cam/pushes",
        &token,
        Some(&body),
    );
    assert_eq!(code, 201);
    wait_until(
        Duration::from_secs(5),
        || "the second push never ran".into(),
        || {
            api_call(api, "GET", "/api/v1/pushes", &token, None)
                .1
                .as_array()
                .is_some_and(|p| p.len() == 2)
        },
    );
    let (code, refused) = api_call(
        api,
        "POST",
        "/api/v1/streams/cam/pushes",
        &token,
        Some(&body),
    );
    assert_eq!(code, 503, "{refused}");
    assert!(metrics(api, &token).contains("shardcast_push_outs_refused_total 1"));
    // Meanwhile a progressive viewer gets every packet, in time.
    let seen = capture(server.addr, "/cam.ts", 14.0);
    assert_eq!(continuity_breaks(&seen), []);
    assert!(
        pictures(&seen) >= 300,
        "{} pictures in 14 s",
        pictures(&seen)
    );
    // The stalled push gives up on its connection (nothing taken for 10 s) and makes another.
    let tcp = || {
        api_call(api, "GET", "/api/v1/pushes?stream=cam", &token, None)
            .1
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["target"].as_str().unwrap().starts_with("tcp://"))
            .cloned()
            .unwrap()
    };
    wait_until(
        Duration::from_secs(30),
        || format!("{}", tcp()),
        || tcp()["reconnects"].as_u64() >= Some(1),
    );
    let push = tcp();
    assert!(
        push["log"].to_string().contains("took nothing for 10 s"),
        "{push}"
    );
    // The UDP push went on all along.
    let got = receive(&receiver, 1);
    assert!(got.len() > 50, "{} datagrams", got.len());
    drop(server);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(holder.join().unwrap() >= 2);
}

#[test]
fn a_stream_is_published_over_rtmp_to_ffmpeg_and_to_a_second_server() {
    let (input, ffmpeg_rtmp, far_rtmp) = (free_port(), free_port(), free_port());
    let dir = TempDir::new("push-out-rtmp");
    // An independent RTMP server: ffmpeg listening, keeping 8 s of what is published.
    let received = dir.0.join("received.flv");
    let listener = std::process::Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-hide_banner",
            "-v",
            "error",
            "-listen",
            "1",
            "-i",
        ])
        .arg(format!("rtmp://127.0.0.1:{ffmpeg_rtmp}/live/x"))
        .args(["-t", "8", "-c", "copy", "-y"])
        .arg(&received)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut listener = KillOnDrop(listener);
    // A second shardcast taking RTMP publishers with a key.
    let far_dir = TempDir::new("push-out-rtmp-far");
    let far_path = far_dir.0.join("shardcast.toml");
    std::fs::write(
        &far_path,
        format!(
            "[[stream]]\nname = \"cam2\"\nsource = \"rtmp://127.0.0.1:{far_rtmp}/live?key=s3cret\"\nsegment_duration = 1\n"
        ),
    )
    .unwrap();
    let far = Server::start(&[
        "--config",
        far_path.to_str().unwrap(),
        "--state-dir",
        far_dir.0.to_str().unwrap(),
    ]);
    wait_listening(far_rtmp);
    let config = format!(
        "[[stream]]\nname = \"cam\"\nsource = \"udp://127.0.0.1:{input}\"\nsegment_duration = 1\n\
         push = [\"rtmp://127.0.0.1:{ffmpeg_rtmp}/live/x\", \"rtmp://127.0.0.1:{far_rtmp}/live/cam2?key=s3cret\"]\n"
    );
    let path = dir.0.join("shardcast.toml");
    std::fs::write(&path, &config).unwrap();
    let api = free_api_addr();
    let near = start_with_api(&path, &dir.0, api);
    let token = api_token(&dir.0);
    // H.264 with B-frames (composition times in FLV) and AAC.
    let _ffmpeg = ffmpeg_source(
        &format!("udp://127.0.0.1:{input}?pkt_size=1316"),
        60,
        "640x360",
        "1M",
        25,
    );
    // ffmpeg took 8 s of it, and decodes what it took without a word.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = listener.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "ffmpeg's RTMP server never finished\n{}",
            near.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut said = String::new();
    use std::io::Read;
    listener
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut said)
        .unwrap();
    assert!(
        status.success() && said.trim().is_empty(),
        "ffmpeg's RTMP server said: {said}"
    );
    let url = received.to_str().unwrap();
    let probe = probe_streams(url);
    assert!(
        probe.contains("h264,640,360,") && probe.contains("aac"),
        "{probe}"
    );
    let (ok, said) = run(
        "ffmpeg",
        &["-nostdin", "-v", "error", "-i", url, "-f", "null", "-"],
    );
    assert!(
        ok && said.trim().is_empty(),
        "decoding what ffmpeg received: {said}"
    );
    // The second server has the stream, published with its key; it decodes silently.
    wait_until(
        Duration::from_secs(10),
        || far.log(),
        || fetch(far.addr, "/cam2/index.m3u8", "").0 == 200,
    );
    let (ok, said) = decode(&far.url("/cam2/index.m3u8"), 6);
    assert!(
        ok && said.trim().is_empty(),
        "the second server's stream: {said}"
    );
    assert!(
        probe_streams(&far.url("/cam2/index.m3u8")).contains("h264,640,360,"),
        "{}",
        far.log()
    );
    // ffmpeg's server is gone: that push fails and tries again; the other goes on.
    let pushes = || api_call(api, "GET", "/api/v1/pushes", &token, None).1;
    wait_until(
        Duration::from_secs(10),
        || format!("{}", pushes()),
        || {
            pushes().as_array().is_some_and(|p| {
                p.iter().any(|p| {
                    p["actual_target"]
                        .as_str()
                        .unwrap()
                        .contains(&ffmpeg_rtmp.to_string())
                        && p["failures"].as_u64() >= Some(1)
                })
            })
        },
    );
    // A wrong key: the far server refuses the publish, and the push says so.
    let (code, body) = api_call(
        api,
        "POST",
        "/api/v1/streams/cam/pushes",
        &token,
        Some(&format!(
            "{{\"target\": \"rtmp://127.0.0.1:{far_rtmp}/live/cam2?key=wrong\"}}"
        )),
    );
    assert_eq!(code, 201, "{body}");
    let id = body["id"].as_u64().unwrap();
    wait_until(
        Duration::from_secs(10),
        || format!("{}", pushes()),
        || {
            pushes().as_array().is_some_and(|p| {
                p.iter().any(|p| {
                    p["id"].as_u64() == Some(id)
                        && p["failures"].as_u64() >= Some(1)
                        && p["log"].to_string().contains("refused the publish")
                })
            })
        },
    );
    // The key is a secret: neither the metrics nor the log show it.
    let metrics_text = metrics(api, &token);
    assert!(
        metrics_text.contains(&format!(
            "shardcast_push_out_bytes_total{{stream=\"cam\",id=\"2\",target=\"rtmp://127.0.0.1:{far_rtmp}/live/…\"}}"
        )),
        "{metrics_text}"
    );
    assert!(!metrics_text.contains("s3cret"), "{metrics_text}");
    assert!(!near.log().contains("s3cret"), "{}", near.log());
    let (status, log) = near.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{log}");
    let (status, log) = far.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{log}");
}
