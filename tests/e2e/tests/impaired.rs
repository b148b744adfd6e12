//! Ingest through an impaired path: ffmpeg's stream through a seeded userspace UDP relay of
//! the test's own (this kernel has no netem) that loses, reorders, duplicates and truncates
//! datagrams, and separately delays them by up to 50 ms. The server stays up, counts what
//! went wrong in about the numbers the relay did it, and its HLS output still decodes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod support;

use nix::sys::signal::Signal;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

/// What the relay does to each datagram.
#[derive(Clone, Copy)]
enum Impairment {
    /// Each with its own probability.
    Faults {
        loss: f64,
        reorder: f64,
        duplicate: f64,
        truncate: f64,
    },
    /// Held up to this long, order kept.
    Jitter(Duration),
}

/// What the relay did.
#[derive(Debug, Default, Clone, Copy)]
struct Done {
    datagrams: u64,
    lost: u64,
    reordered: u64,
    duplicated: u64,
    truncated: u64,
}

/// A UDP relay from a port of its own to `to`, impairing as told, until dropped.
struct Relay {
    port: u16,
    done: Arc<Mutex<Done>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    fn start(to: SocketAddr, impairment: Impairment, seed: u64) -> Relay {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        let port = socket.local_addr().unwrap().port();
        let out = UdpSocket::bind("127.0.0.1:0").unwrap();
        let done = Arc::new(Mutex::new(Done::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (d, s) = (done.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut rng = Rng(seed);
            let mut buf = [0u8; 65536];
            let mut held: Option<Vec<u8>> = None;
            let mut delayed: std::collections::VecDeque<(Instant, Vec<u8>)> = Default::default();
            let mut last_due = Instant::now();
            while !s.load(Ordering::Relaxed) {
                let now = Instant::now();
                while delayed.front().is_some_and(|(due, _)| *due <= now) {
                    let (_, datagram) = delayed.pop_front().unwrap();
                    let _ = out.send_to(&datagram, to);
                }
                let Ok(n) = socket.recv(&mut buf) else {
                    continue;
                };
                let mut datagram = buf[..n].to_vec();
                let mut done = d.lock().unwrap();
                done.datagrams += 1;
                match impairment {
                    Impairment::Jitter(max) => {
                        let delay = max.mul_f64((rng.next() % 1000) as f64 / 1000.0);
                        // Never before the one in front: delayed, not reordered.
                        last_due = last_due.max(Instant::now() + delay);
                        delayed.push_back((last_due, datagram));
                    }
                    Impairment::Faults {
                        loss,
                        reorder,
                        duplicate,
                        truncate,
                    } => {
                        if rng.chance(loss) {
                            done.lost += 1;
                            continue;
                        }
                        if rng.chance(truncate) {
                            done.truncated += 1;
                            let keep = 1 + (rng.next() as usize) % (datagram.len() - 1);
                            datagram.truncate(keep);
                        }
                        if held.is_none() && rng.chance(reorder) {
                            // Sent after the next one.
                            done.reordered += 1;
                            held = Some(datagram);
                            continue;
                        }
                        let _ = out.send_to(&datagram, to);
                        if rng.chance(duplicate) {
                            done.duplicated += 1;
                            let _ = out.send_to(&datagram, to);
                        }
                        if let Some(late) = held.take() {
                            let _ = out.send_to(&late, to);
                        }
                    }
                }
            }
        });
        Relay {
            port,
            done,
            stop,
            thread: Some(thread),
        }
    }

    fn done(&self) -> Done {
        *self.done.lock().unwrap()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The server with one stream on `port`, its API, and ffmpeg sending through `impairment`
/// for `seconds`; returns the stream's status from the API, what the relay did, and whether
/// 4 s of its HLS decoded.
fn through(
    name: &str,
    impairment: Impairment,
    seconds: u32,
) -> (serde_json::Value, Done, bool, String) {
    through_as("mpegts", name, impairment, seconds)
}

/// Like [`through`], with ffmpeg's muxer `format` (`rtp_mpegts`: TS in RTP).
fn through_as(
    format: &str,
    name: &str,
    impairment: Impairment,
    seconds: u32,
) -> (serde_json::Value, Done, bool, String) {
    let port = free_port();
    let dir = TempDir::new(name);
    let config = dir.join("shardcast.toml");
    std::fs::write(
        &config,
        format!("[[stream]]\nname = \"live\"\nsource = \"udp://127.0.0.1:{port}\"\nsegment_duration = 1\n"),
    )
    .unwrap();
    let api = free_api_addr();
    let server = start_with_api(&config, &dir.join("state"), api);
    let token = api_token(&dir.join("state"));
    let relay = Relay::start(
        format!("127.0.0.1:{port}").parse().unwrap(),
        impairment,
        0x5EED_CAFE,
    );
    let url = match format {
        "rtp_mpegts" => format!("rtp://127.0.0.1:{}?pkt_size=1328", relay.port),
        _ => format!("udp://127.0.0.1:{}?pkt_size=1316", relay.port),
    };
    let source = ffmpeg_source_as(format, &url, seconds, "640x360", "1500k", 25);
    // Once there are segments, decode 4 s of the HLS output while the source still runs.
    let deadline = Instant::now() + Duration::from_secs(20);
    while fetch(server.addr, "/live/index.m3u8", "").0 != 200 {
        assert!(Instant::now() < deadline, "no segment through the relay");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    let (decoded, said) = decode(&server.url("/live/index.m3u8"), 4);
    let mut source = source;
    stop_gracefully(&mut source.0);
    // What the relay still delays goes on within 50 ms.
    std::thread::sleep(Duration::from_millis(200));
    let done = relay.done();
    drop(relay);
    let (status, stream) = api_call(api, "GET", "/api/v1/streams/live", &token, None);
    assert_eq!(status, 200, "{stream}");
    let (status, log) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "the server did not stay up: {log}");
    (stream, done, decoded, said)
}

#[test]
fn loss_reordering_duplicates_and_truncation_are_counted_and_hls_still_decodes() {
    let (stream, done, decoded, said) = through(
        "impaired-faults",
        Impairment::Faults {
            loss: 0.01,
            reorder: 0.01,
            duplicate: 0.01,
            truncate: 0.01,
        },
        14,
    );
    let errors = stream["continuity_errors"].as_u64().unwrap();
    let malformed = stream["malformed_packets"].as_u64().unwrap();
    eprintln!("relay {done:?}; server: {errors} continuity errors, {malformed} malformed packets; ffmpeg said: {said}");
    assert!(decoded, "the HLS output does not decode: {said}");
    assert!(done.datagrams > 1000, "{done:?}");
    // Each fault breaks the counters of the one or two streams its datagram carried, and a
    // reordered or truncated datagram breaks them twice (where it went missing and where it
    // came back, or the packet cut and the resync): a gap or two per fault.
    let faults = done.lost + done.reordered + done.duplicated + done.truncated;
    assert!(faults > 20, "{done:?}");
    assert!(
        errors >= faults / 2 && errors <= faults * 6,
        "{errors} continuity errors for {faults} faults ({done:?})"
    );
}

#[test]
fn jitter_of_50_ms_loses_nothing() {
    let (stream, done, decoded, said) = through(
        "impaired-jitter",
        Impairment::Jitter(Duration::from_millis(50)),
        12,
    );
    let errors = stream["continuity_errors"].as_u64().unwrap();
    eprintln!("relay {done:?}; server: {errors} continuity errors; ffmpeg said: {said}");
    assert!(decoded, "the HLS output does not decode: {said}");
    assert!(done.datagrams > 1000, "{done:?}");
    assert_eq!(errors, 0, "{stream}");
    assert_eq!(stream["kernel_drops"], 0, "{stream}");
}

#[test]
fn ts_in_rtp_is_unwrapped_and_its_sequence_numbers_count_loss_and_reordering() {
    let (stream, done, decoded, said) = through_as(
        "rtp_mpegts",
        "impaired-rtp",
        Impairment::Faults {
            loss: 0.01,
            reorder: 0.01,
            duplicate: 0.0,
            truncate: 0.0,
        },
        12,
    );
    let rtp = &stream["input"]["rtp"];
    eprintln!("relay {done:?}; server: rtp {rtp}; ffmpeg said: {said}");
    assert!(decoded, "the HLS output does not decode: {said}");
    assert!(done.datagrams > 600, "{done:?}");
    // Every datagram forwarded came in RTP and was read as such.
    let forwarded = done.datagrams - done.lost;
    let datagrams = rtp["datagrams"].as_u64().unwrap();
    assert!(
        datagrams + 2 >= forwarded && datagrams <= forwarded,
        "{rtp} {done:?}"
    );
    // A lost datagram is missing from the sequence; a reordered one is missing until it comes,
    // then late.
    let (lost, late) = (rtp["lost"].as_u64().unwrap(), rtp["late"].as_u64().unwrap());
    assert!(done.lost + done.reordered > 5, "{done:?}");
    assert!(
        lost >= done.lost && lost <= done.lost + done.reordered,
        "{rtp} {done:?}"
    );
    assert!(
        late + 1 >= done.reordered && late <= done.reordered,
        "{rtp} {done:?}"
    );
}
