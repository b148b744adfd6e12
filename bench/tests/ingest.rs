//! `shardcast-bench ingest` against real UDP sockets: pacing, many destinations, looped files,
//! and refusals with a reason.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use shardcast_bench::ingest::{run_many, Content};
use shardcast_protocols::generator::{Generator, GeneratorConfig};
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

/// Receive on `socket` until it is quiet for half a second; returns the datagrams.
fn receive(socket: UdpSocket) -> std::thread::JoinHandle<Vec<Vec<u8>>> {
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok(n) = socket.recv(&mut buf) {
            out.push(buf[..n].to_vec());
        }
        out
    })
}

fn bound() -> (UdpSocket, SocketAddr) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let a = s.local_addr().unwrap();
    (s, a)
}

/// (PID, continuity counter) of every packet, the stamp aside: what two copies share.
fn skeleton(datagrams: &[Vec<u8>]) -> Vec<(u16, u8)> {
    datagrams
        .iter()
        .flat_map(|d| d.chunks_exact(188))
        .map(|p| (u16::from(p[1] & 0x1F) << 8 | u16::from(p[2]), p[3] & 0x0F))
        .collect()
}

#[test]
fn two_destinations_get_the_same_stream_at_the_mux_rate() {
    let (a, addr_a) = bound();
    let (b, addr_b) = bound();
    let (ra, rb) = (receive(a), receive(b));
    let config = GeneratorConfig {
        bitrate: 2_000_000,
        ..GeneratorConfig::default()
    };
    let sent = run_many(
        &Content::Generator(config),
        "127.0.0.1:0".parse().unwrap(),
        &[addr_a, addr_b],
        Duration::from_secs(2),
    )
    .unwrap();
    let (da, db) = (ra.join().unwrap(), rb.join().unwrap());
    // 2 Mbit/s in 1316-byte datagrams for 2 s: 380 each.
    for (count, got) in [(sent[0], &da), (sent[1], &db)] {
        assert!((370..=390).contains(&count), "{count} sent");
        assert_eq!(got.len() as u64, count, "loopback lost datagrams");
        assert!(got.iter().all(|d| d.len() == 1316 && d[0] == 0x47));
    }
    assert_eq!(skeleton(&da), skeleton(&db), "the two streams differ");
}

#[test]
fn a_file_is_looped_at_the_given_rate() {
    // Half a second of stream sent for two seconds at 1 Mbit/s: it loops four times.
    let mut g = Generator::new(GeneratorConfig::default()).unwrap();
    let mut file = Vec::new();
    for _ in 0..(1_000_000 / 2 / 8 / 188) {
        let mut p = [0u8; 188];
        g.next_packet(&mut p);
        file.extend_from_slice(&p);
    }
    let (s, addr) = bound();
    let r = receive(s);
    let content = Content::File {
        packets: std::sync::Arc::new(file.clone()),
        bitrate: 1_000_000,
    };
    run_many(
        &content,
        "127.0.0.1:0".parse().unwrap(),
        &[addr],
        Duration::from_secs(2),
    )
    .unwrap();
    let got: Vec<u8> = r.join().unwrap().concat();
    let expected = 1_000_000 * 2 / 8;
    assert!(
        got.len().abs_diff(expected) <= 2 * 1316,
        "{} bytes for {expected}",
        got.len()
    );
    assert_eq!(&got[..file.len()], &file[..], "the file, from its start");
    assert_eq!(&got[file.len()..2 * file.len()], &file[..], "and again");
}

#[test]
fn bad_arguments_are_refused_with_the_reason() {
    let bench = env!("CARGO_BIN_EXE_shardcast-bench");
    for (args, says) in [
        (
            vec![
                "ingest",
                "--to",
                "127.0.0.1:9",
                "--bitrate",
                "1000",
                "--seconds",
                "1",
            ],
            "too low",
        ),
        (
            vec!["ingest", "--to", "127.0.0.1:65535", "--streams", "2"],
            "past port 65535",
        ),
        (vec!["ts", "--url", "ftp://x/"], "must start with http://"),
        (
            vec!["hls", "--url", "http://127.0.0.1:1/a/index.m3u8"],
            "cannot reach the server",
        ),
        (
            vec!["ts", "--url", "http://localhost:80/a.ts"],
            "must be IP:PORT",
        ),
    ] {
        let out = Command::new(bench).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
