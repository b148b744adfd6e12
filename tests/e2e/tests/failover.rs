//! Failover between sources, end to end: a multicast primary (ffmpeg) and a pull from another
//! shardcast as backup; the primary killed while 100 HLS players and 100 progressive viewers
//! (the bench's clients, in this process) watch. Apart from the other sources tests: it is a
//! load on both CPUs.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod support;

use nix::sys::signal::Signal;
use shardcast_bench::load::Load;
use shardcast_protocols::hls::{parse, Playlist};
use std::time::{Duration, Instant};
use support::*;

/// The active source's place in `stream`'s failover list.
fn active(api: std::net::SocketAddr, token: &str, stream: &str) -> Option<u64> {
    status(api, token, stream)["input"]["failover"]["active"].as_u64()
}

#[test]
fn a_dead_multicast_primary_hands_over_to_a_pulled_backup_and_nobody_stops_watching() {
    let _multicast = LoopbackMulticast::set_up();
    // The backup's origin: another shardcast with the demo stream.
    let (origin, _, _, _origin_dir) = start_configured(
        "failover-origin",
        "[[stream]]\nname = \"demo\"\nsource = \"demo:\"\n",
    );
    let port = free_port();
    let group = format!("239.255.42.61:{port}");
    // The primary runs before the edge starts: it is live from the start (with back_after = 0
    // a primary late at the start would lose to the backup for good).
    let primary = ffmpeg_source(
        &format!("udp://{group}?pkt_size=1316"),
        120,
        "640x360",
        "1M",
        25,
    );
    std::thread::sleep(Duration::from_millis(1500));
    let (edge, api, token, _dir) = start_configured(
        "failover-edge",
        &format!(
            "[[stream]]\nname = \"cam\"\nsource = [\"udp://{group}\", \"http://{}/demo.ts\"]\nfailover = {{ dry = 1, back_after = 0 }}\nsegment_duration = 1\n",
            origin.addr
        ),
    );
    wait_until(
        Duration::from_secs(15),
        || format!("{}", status(api, &token, "cam")),
        || {
            let s = status(api, &token, "cam");
            s["input"]["failover"]["active"] == 0
                && s["input"]["failover"]["sources"][0]["live"] == true
                && s["input"]["failover"]["sources"][1]["live"] == true
                && fetch(edge.addr, "/cam/index.m3u8", "").0 == 200
        },
    );
    let switches_before = status(api, &token, "cam")["input"]["switches"]
        .as_u64()
        .unwrap();
    let load = |path: &str| Load {
        addr: edge.addr,
        path: path.into(),
        viewers: 100,
        ramp: Duration::from_secs(2),
        settle: Duration::from_secs(1),
        measure: Duration::from_secs(14),
        server_pid: None,
        progress: false,
        pace_bps: 0,
        tls: None,
        low_latency: false,
        connection_per_request: false,
    };
    let (hls, ts) = (load("/cam/index.m3u8"), load("/cam.ts"));
    let players = std::thread::spawn(move || shardcast_bench::hls::run(&hls).unwrap());
    let viewers = std::thread::spawn(move || shardcast_bench::ts::run(&ts).unwrap());
    // Five seconds into the measured window the primary dies.
    std::thread::sleep(Duration::from_secs(8));
    drop(primary);
    let killed = Instant::now();
    wait_until(
        Duration::from_secs(5),
        || format!("{}", status(api, &token, "cam")),
        || active(api, &token, "cam") == Some(1),
    );
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(2), "the switch took {took:?}");
    // One discontinuity in the playlist (looked at while it is in the live window).
    let discontinuities = || {
        let (_, _, body) = fetch(edge.addr, "/cam/index.m3u8", "");
        match parse(&body) {
            Ok(Playlist::Media(m)) => m.segments.iter().filter(|s| s.discontinuity).count(),
            _ => 0,
        }
    };
    wait_until(
        Duration::from_secs(5),
        || "no discontinuity after the switch".into(),
        || discontinuities() > 0,
    );
    assert_eq!(discontinuities(), 1);
    let (players, viewers) = (players.join().unwrap(), viewers.join().unwrap());
    eprintln!("{}\n{}", players.summary(), viewers.summary());
    // Every player went on: all started, none refused or cut off, no segment missed.
    assert_eq!(players.started, 100, "{}", players.summary());
    assert_eq!(
        (
            players.status_4xx,
            players.status_5xx,
            players.bad_playlists,
            players.missed
        ),
        (0, 0, 0, 0),
        "{}",
        players.summary()
    );
    // Every progressive viewer stayed connected and received through and after the switch:
    // none got much less than the others (one cut at the switch would have about half).
    assert_eq!(
        (viewers.connected, viewers.disconnected),
        (100, 0),
        "{}",
        viewers.summary()
    );
    let mean = viewers.bytes / 100;
    assert!(
        viewers.min_viewer_bytes * 10 >= mean * 8,
        "a viewer fell short: {}",
        viewers.summary()
    );
    // One switch.
    let s = status(api, &token, "cam");
    assert_eq!(
        s["input"]["switches"].as_u64().unwrap(),
        switches_before + 1,
        "{s}"
    );
    let (decoded, said) = decode(&edge.url("/cam/index.m3u8"), 6);
    assert!(decoded && said.trim().is_empty(), "{said}");
    let (status, log) = edge.stop(Signal::SIGTERM);
    assert!(status.success(), "{log}");
    assert!(
        log.contains(&format!("source switch (dry): udp://{group} -> http://")),
        "{log}"
    );
}
