//! Upgrades that drop no viewer: `shardcast upgrade` replaces a server running from a copy of
//! the binary with a new copy put in its place, under 1,000 HLS players and 100 progressive
//! viewers; a pulled source is pulled again by the new process; and upgrades that fail (a
//! broken binary, a configuration that does not load, one the running sockets do not fit)
//! leave the old process serving, its ingest going on.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod support;

use shardcast_bench::load::Load;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// A copy of the server's binary at `dir/bin/shardcast`: what the test runs and replaces.
fn install_binary(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let path = bin.join("shardcast");
    replace_binary(&path, Path::new(env!("CARGO_BIN_EXE_shardcast-under-test")));
    path
}

/// Put `with` at `path` as a package upgrade does: a new file renamed over the old one (the
/// running process keeps its deleted inode).
fn replace_binary(path: &Path, with: &Path) {
    let fresh = path.with_extension("new");
    std::fs::copy(with, &fresh).unwrap();
    std::fs::rename(&fresh, path).unwrap();
}

struct Running {
    server: Server,
    dir: PathBuf,
    config: PathBuf,
}

impl Running {
    /// `bin serve` with `config`, its state in `dir`.
    fn start(bin: &Path, dir: &Path, config_text: &str) -> Running {
        let config = dir.join("shardcast.toml");
        std::fs::write(&config, config_text).unwrap();
        let port = free_port();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut command = Command::new(bin);
        command
            .args(["serve", "--config", config.to_str().unwrap()])
            .args(["--listen", &addr.to_string(), "--api-listen", "off"])
            .args(["--state-dir", dir.to_str().unwrap()]);
        if let Ok(io) = std::env::var("SHARDCAST_TEST_IO") {
            command.args(["--io", &io]);
        }
        command
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // The copy was just written: a process another test forked meanwhile may hold it
        // open for writing until it execs (ETXTBSY), for a moment.
        let mut tries = 0;
        let child = loop {
            match command.spawn() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                result => break result.unwrap(),
            }
        };
        let server = Server::adopt(child, addr);
        wait_until(
            Duration::from_secs(10),
            || format!("shardcast did not listen on {addr}"),
            || std::net::TcpStream::connect(addr).is_ok(),
        );
        Running {
            server,
            dir: dir.to_owned(),
            config,
        }
    }

    /// `shardcast upgrade` (the test build's, not the one at `bin`, which may be broken on
    /// purpose): (success, what it said).
    fn upgrade(&self) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_shardcast-under-test"))
            .args(["upgrade", "--state-dir", self.dir.to_str().unwrap()])
            .args(["--timeout", "40"])
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// The pid the pid file names.
    fn serving_pid(&self) -> u32 {
        std::fs::read_to_string(self.dir.join("shardcast.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

fn alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

/// The media sequence and the segments a playlist lists.
fn playlist(addr: std::net::SocketAddr) -> (u64, Vec<u64>, String) {
    let (status, _, body) = fetch(addr, "/live/index.m3u8", "");
    let text = String::from_utf8_lossy(&body).into_owned();
    if status != 200 {
        return (0, Vec::new(), text);
    }
    let sequence = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let segments = text
        .lines()
        .filter_map(|l| l.strip_suffix(".ts"))
        .filter_map(|s| s.parse().ok())
        .collect();
    (sequence, segments, text)
}

fn send_stream(port: u16, seconds: u64) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || send_generated(port, seconds))
}

fn config(udp: u16) -> String {
    format!(
        "[[stream]]\nname = \"live\"\nsource = \"udp://127.0.0.1:{udp}\"\nsegment_duration = 1\nplaylist_segments = 6\n"
    )
}

#[test]
fn an_upgrade_under_1000_players_and_100_progressive_viewers_drops_no_viewer() {
    let dir = TempDir::new("upgrade-load");
    let bin = install_binary(&dir);
    let udp = free_port();
    let running = Running::start(&bin, &dir, &config(udp));
    let sender = send_stream(udp, 50);
    wait_until(
        Duration::from_secs(15),
        || "no segments before the load".into(),
        || playlist(running.server.addr).1.len() >= 3,
    );
    let old_pid = running.serving_pid();
    assert_eq!(old_pid, running.server.child.id());
    let load = |path: &str, viewers, ramp| Load {
        addr: running.server.addr,
        path: path.into(),
        viewers,
        ramp: Duration::from_secs(ramp),
        settle: Duration::from_secs(1),
        measure: Duration::from_secs(20),
        server_pid: None,
        progress: false,
        pace_bps: 0,
        tls: None,
        low_latency: false,
        connection_per_request: false,
    };
    let hls_load = load("/live/index.m3u8", 1000, 4);
    let ts_load = load("/live.ts", 100, 1);
    let players = std::thread::spawn(move || shardcast_bench::hls::run(&hls_load).unwrap());
    let progressive = std::thread::spawn(move || shardcast_bench::ts::run(&ts_load).unwrap());
    std::thread::sleep(Duration::from_secs(8));

    // The upgrade: a new binary in place, then `shardcast upgrade`.
    let (before_sequence, before, _) = playlist(running.server.addr);
    replace_binary(&bin, Path::new(env!("CARGO_BIN_EXE_shardcast-under-test")));
    let started = Instant::now();
    let (ok, said) = running.upgrade();
    assert!(ok, "{said}");
    let new_pid = running.serving_pid();
    assert_ne!(new_pid, old_pid, "{said}");
    assert!(said.contains(&new_pid.to_string()), "{said}");
    eprintln!("upgrade took {:?}: {said}", started.elapsed());
    let mut old = running.server;
    let deadline = Instant::now() + Duration::from_secs(10);
    let exited = loop {
        if let Some(status) = old.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the old process did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exited.success(), "the old process exited with {exited}");
    assert!(alive(new_pid));

    let players = players.join().unwrap();
    let progressive = progressive.join().unwrap();
    eprintln!("players:\n{}", players.summary());
    eprintln!("progressive viewers:\n{}", progressive.summary());
    // Every HLS request answered, no segment missed, no connection reset (keep-alive
    // connections the old process closed were closed, and reopened to the new one).
    assert_eq!(players.started, 1000, "{}", players.summary());
    assert_eq!(
        (
            players.missed,
            players.listed_404,
            players.status_4xx,
            players.status_5xx,
            players.bad_playlists,
            players.resets
        ),
        (0, 0, 0, 0, 0, 0),
        "{}",
        players.summary()
    );
    assert!(players.segments >= 1000 * 10, "{}", players.summary());
    // Every progressive viewer got whole packets and a clean end (or goes on): no reset, no
    // gap, no body cut inside a packet.
    assert_eq!(progressive.connected, 100, "{}", progressive.summary());
    assert_eq!(
        (
            progressive.resets,
            progressive.cut_mid_packet,
            progressive.gaps
        ),
        (0, 0, 0),
        "{}",
        progressive.summary()
    );

    // The new process goes on with the same window: the sequence numbers continue, the
    // segments the old one listed are still there, the next one is a discontinuity.
    let addr = old.addr;
    wait_until(
        Duration::from_secs(10),
        || format!("no new segment after the upgrade: {}", playlist(addr).2),
        || {
            playlist(addr)
                .1
                .last()
                .is_some_and(|l| before.last().is_some_and(|b| l > b))
        },
    );
    let after = playlist(addr);
    assert!(
        after.0 >= before_sequence,
        "{} then {}",
        before_sequence,
        after.0
    );
    assert!(after.2.contains("#EXT-X-DISCONTINUITY"), "{}", after.2);
    for s in before.iter().filter(|s| **s >= after.0) {
        assert_eq!(
            fetch(addr, &format!("/live/{s}.ts"), "").0,
            200,
            "segment {s}"
        );
    }
    let (ok, said) = decode(&format!("http://{addr}/live/index.m3u8"), 3);
    assert!(ok, "{said}");
    drop(sender);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(new_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[test]
fn a_failed_upgrade_leaves_the_old_process_serving() {
    let dir = TempDir::new("upgrade-fail");
    let bin = install_binary(&dir);
    let udp = free_port();
    let good = config(udp);
    let running = Running::start(&bin, &dir, &good);
    let _sender = send_stream(udp, 60);
    let addr = running.server.addr;
    let pid = running.server.child.id();
    wait_until(
        Duration::from_secs(15),
        || "no segments".into(),
        || playlist(addr).1.len() >= 2,
    );
    let goes_on = |what: &str| {
        let (_, before, _) = playlist(addr);
        wait_until(
            Duration::from_secs(10),
            || format!("no new segment after {what}"),
            || playlist(addr).1.last() > before.last(),
        );
        assert_eq!(running.serving_pid(), pid, "{what}");
        assert!(running.server.child.id() == pid && alive(pid));
    };

    // A binary that does not start.
    let broken = dir.join("broken.sh");
    std::fs::write(&broken, "#!/bin/sh\necho 'not a server' >&2\nexit 3\n").unwrap();
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    replace_binary(&bin, &broken);
    let (ok, said) = running.upgrade();
    assert!(!ok, "{said}");
    assert!(said.contains("carries on"), "{said}");
    goes_on("a broken binary");

    // A configuration that does not load.
    replace_binary(&bin, Path::new(env!("CARGO_BIN_EXE_shardcast-under-test")));
    std::fs::write(&running.config, "[server\n").unwrap();
    let (ok, said) = running.upgrade();
    assert!(!ok, "{said}");
    goes_on("a configuration that does not load");

    // One the running sockets do not fit (another TLS listener): refused after the ingest
    // was paused and handed over; it resumes here.
    std::fs::write(&running.config, format!("[server]\ncpus = [0]\n{good}")).unwrap();
    let (ok, said) = running.upgrade();
    if sysconf_cpus() > 1 {
        assert!(!ok, "{said}");
        assert!(said.contains("shard"), "{said}");
        goes_on("a configuration with other CPUs");
    }

    // And with everything right again, the upgrade goes through.
    std::fs::write(&running.config, &good).unwrap();
    let (ok, said) = running.upgrade();
    assert!(ok, "{said}");
    let new_pid = running.serving_pid();
    assert_ne!(new_pid, pid);
    let (_, before, _) = playlist(addr);
    wait_until(
        Duration::from_secs(10),
        || "no new segment from the new process".into(),
        || playlist(addr).1.last() > before.last(),
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(new_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

fn sysconf_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[test]
fn a_pulled_source_is_pulled_again_by_the_new_process() {
    let origin = Server::start(&[]);
    let dir = TempDir::new("upgrade-pull");
    let bin = install_binary(&dir);
    let running = Running::start(
        &bin,
        &dir,
        &format!(
            "[[stream]]\nname = \"live\"\nsource = \"http://{}/demo.ts\"\nsegment_duration = 1\n",
            origin.addr
        ),
    );
    let addr = running.server.addr;
    wait_until(
        Duration::from_secs(15),
        || format!("the edge never pulled: {}", playlist(addr).2),
        || playlist(addr).1.len() >= 2,
    );
    let (ok, said) = running.upgrade();
    assert!(ok, "{said}");
    let new_pid = running.serving_pid();
    assert_ne!(new_pid, running.server.child.id());
    let (_, before, _) = playlist(addr);
    // New segments from the new process's own pull (the old one has gone).
    wait_until(
        Duration::from_secs(15),
        || format!("no new segment after the upgrade: {}", playlist(addr).2),
        || playlist(addr).1.last() > before.last(),
    );
    let (ok, said) = decode(&format!("http://{addr}/live/index.m3u8"), 2);
    assert!(ok, "{said}");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(new_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}
