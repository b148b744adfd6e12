//! Multicast ingest end to end, on loopback: ffmpeg sends a 720p25 H.264+AAC test pattern to a
//! group (any-source join), and two senders on 127.0.0.1 and 127.0.0.2 send to another group
//! that shardcast joins source-specific (127.0.0.1 only).
//!
//! The test turns multicast on for `lo` and routes 224.0.0.0/4 there (source 127.0.0.1), and
//! undoes exactly what it added. It needs root, as CI has.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod support;

use nix::sys::signal::Signal;
use shardcast_protocols::generator::{Generator, GeneratorConfig};
use std::net::UdpSocket;
use std::time::{Duration, Instant};
use support::*;

/// Send the generator's stream from `from` to `to`, paced, until `until`.
fn send_generated(
    from: &str,
    to: String,
    width: u16,
    until: Instant,
) -> std::thread::JoinHandle<u64> {
    let socket = UdpSocket::bind(from).unwrap();
    socket.set_multicast_ttl_v4(1).unwrap();
    std::thread::spawn(move || {
        let mut g = Generator::new(GeneratorConfig {
            width,
            ..GeneratorConfig::default()
        })
        .unwrap();
        let start = Instant::now();
        let mut datagram = Vec::with_capacity(1316);
        let mut sent = 0;
        while Instant::now() < until {
            let mut p = [0u8; 188];
            g.next_packet(&mut p);
            datagram.extend_from_slice(&p);
            if datagram.len() == 1316 {
                let due = start + Duration::from_nanos(g.packet_time_ns(g.packets()));
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                socket.send_to(&datagram, &to).unwrap();
                datagram.clear();
                sent += 1;
            }
        }
        sent
    })
}

#[test]
fn multicast_any_source_and_source_specific() {
    let _net = LoopbackMulticast::set_up();
    let (asm_port, ssm_port) = (free_port(), free_port());
    let config = std::env::temp_dir().join(format!("shardcast-mc-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        format!(
            "[[stream]]\nname = \"cam\"\nsource = \"udp://239.255.42.1:{asm_port}?iface=127.0.0.1\"\n\n\
             [[stream]]\nname = \"ssm\"\nsource = \"udp://239.255.42.2:{ssm_port}?source=127.0.0.1&iface=lo\"\n"
        ),
    )
    .unwrap();
    let server = Server::start(&["--config", config.to_str().unwrap()]);

    // The any-source stream: Debian's ffmpeg, 720p25 H.264 + AAC, 1316-byte datagrams.
    // Dropped before `_net`, so the sender is gone before the route is.
    let _ffmpeg = ffmpeg_udp_source(
        &format!("udp://239.255.42.1:{asm_port}?pkt_size=1316&ttl=1&localaddr=127.0.0.1"),
        40,
    );

    // The source-specific stream: the wanted sender and an intruder on another address, with
    // the same PIDs but its own counters and picture size: anything it slips in shows.
    let until = Instant::now() + Duration::from_secs(10);
    let wanted = send_generated(
        "127.0.0.1:0",
        format!("239.255.42.2:{ssm_port}"),
        256,
        until,
    );
    let intruder = send_generated(
        "127.0.0.2:0",
        format!("239.255.42.2:{ssm_port}"),
        320,
        until,
    );
    std::thread::sleep(Duration::from_secs(3));
    let ssm = capture(server.addr, "/ssm.ts", 5.0);
    assert!(pictures(&ssm) > 100, "too little from the wanted source");
    assert_eq!(
        continuity_breaks(&ssm),
        vec![],
        "the other source got through"
    );
    let file = std::env::temp_dir().join(format!("shardcast-ssm-{}.ts", std::process::id()));
    std::fs::write(&file, whole_frames(&ssm, 0x100)).unwrap();
    let (ok, sizes) = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-select_streams",
            "v",
            "-show_entries",
            "frame=width",
            "-of",
            "csv=p=0",
            file.to_str().unwrap(),
        ],
    );
    std::fs::remove_file(&file).ok();
    assert!(ok, "{sizes}");
    let widths: Vec<&str> = sizes
        .lines()
        .map(|l| l.trim_end_matches(','))
        .filter(|l| !l.is_empty())
        .collect();
    let foreign: Vec<&&str> = widths.iter().filter(|w| **w != "256").collect();
    assert!(
        widths.len() > 20 && foreign.is_empty(),
        "{} pictures, these not from the wanted source: {foreign:?}",
        widths.len()
    );
    assert!(wanted.join().unwrap() > 0 && intruder.join().unwrap() > 0);

    // ffprobe sees what ffmpeg sent.
    let url = server.url("/cam.ts");
    let probe = probe_streams(&url);
    assert!(
        probe.contains("h264,1280,720,25/1") && probe.contains("aac"),
        "{probe}"
    );
    // A mid-stream join starts at a keyframe, with continuous counters, while a 20 s decode runs.
    let addr = server.addr;
    let raw = std::thread::spawn(move || capture(addr, "/cam.ts", 6.0));
    let (ok, decode) = run(
        "ffmpeg",
        &[
            "-nostdin", "-v", "error", "-i", &url, "-t", "20", "-f", "null", "-",
        ],
    );
    assert!(ok && decode.trim().is_empty(), "ffmpeg said: {decode}");
    let raw = raw.join().unwrap();
    assert!(
        first_picture_is_keyframe(&raw),
        "a joining viewer must start at a keyframe"
    );
    assert_eq!(continuity_breaks(&raw), vec![]);

    std::fs::remove_file(&config).ok();
    let (status, log) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "{log}");
    assert!(!log.contains("ERROR"), "{log}");
}
