//! Helpers for the end-to-end tests: start the real binary, capture, probe, clean up.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `shardcast serve`, stopped (SIGKILL) when dropped. Its log is read as it comes
/// (a full pipe would stall the server's logging) and printed when a test fails.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    log: Log,
}

/// What a server has logged so far, and whether its log has ended.
#[derive(Clone, Default)]
struct Log(std::sync::Arc<(std::sync::Mutex<(String, bool)>, std::sync::Condvar)>);

impl Log {
    /// Read `from` line by line on a thread of its own until it ends.
    fn follow(from: impl Read + Send + 'static) -> Log {
        let log = Log::default();
        let shared = log.clone();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(from);
            loop {
                let mut line = String::new();
                let ended =
                    !matches!(std::io::BufRead::read_line(&mut lines, &mut line), Ok(n) if n > 0);
                let (lock, changed) = &*shared.0;
                let mut state = lock.lock().unwrap();
                state.0.push_str(&line);
                state.1 = ended;
                changed.notify_all();
                if ended {
                    return;
                }
            }
        });
        log
    }

    /// Wait until `found` finds something in the log, the log ends or `timeout` passes.
    fn wait_for<T>(&self, timeout: Duration, found: impl Fn(&str) -> Option<T>) -> Option<T> {
        let (lock, changed) = &*self.0;
        let deadline = Instant::now() + timeout;
        let mut state = lock.lock().unwrap();
        loop {
            if let Some(t) = found(&state.0) {
                return Some(t);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if state.1 || left.is_zero() {
                return None;
            }
            state = changed.wait_timeout(state, left).unwrap().0;
        }
    }

    fn text(&self) -> String {
        self.0 .0.lock().unwrap().0.clone()
    }
}

/// The address in the `listen=` field of the line that says the server serves.
fn serving_address(log: &str) -> Option<SocketAddr> {
    let line = log.lines().find(|l| l.contains("shardcast serving"))?;
    let at = line.find(" listen=")? + " listen=".len();
    line[at..].split_whitespace().next()?.parse().ok()
}

pub fn free_port() -> u16 {
    // Never the same port twice to the tests of one binary: a port handed out is free until
    // its test binds it, and another test asking in between could be given it too (a CI run
    // had one test's server dial, as its TCP source, the port another test's server listened
    // on as its own).
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if given.insert(port) {
            return port;
        }
    }
}

impl Server {
    /// Start with `args` after `serve`, on a free port, and wait until it accepts. The
    /// backend is `SHARDCAST_TEST_IO` when set (the test command runs the suite with each).
    pub fn start(args: &[&str]) -> Server {
        Self::start_under(&[], args)
    }

    /// Like [`Server::start`], with the command run through `wrapper` (a program and its
    /// arguments, the server's command line appended).
    pub fn start_under(wrapper: &[&str], args: &[&str]) -> Server {
        Self::start_with(wrapper, &[], args)
    }

    /// Like [`Server::start_under`], with these environment variables set.
    pub fn start_with(wrapper: &[&str], env: &[(&str, &str)], args: &[&str]) -> Server {
        // `--listen` in `args` is kept (an IPv6 address, say); else port 0 on 127.0.0.1, and
        // the server's log says which port it has (a port picked here and bound there later
        // could be taken in between by another test's listener).
        let given = args
            .iter()
            .position(|a| *a == "--listen")
            .and_then(|i| args.get(i + 1));
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(env!("CARGO_BIN_EXE_shardcast-under-test"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_shardcast-under-test")),
        };
        command.arg("serve").args(args);
        if given.is_none() {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        // The API listens on a fixed port by default; tests that want it ask for one.
        if !args.contains(&"--api-listen") {
            command.args(["--api-listen", "off"]);
        }
        if let Ok(io) = std::env::var("SHARDCAST_TEST_IO") {
            if !args.contains(&"--io") {
                command.args(["--io", &io]);
            }
        }
        let mut child = command
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Log::follow(child.stderr.take().unwrap());
        let addr = log.wait_for(Duration::from_secs(10), serving_address);
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "shardcast did not start serving; it logged:\n{}",
                log.text()
            );
        };
        Server { child, addr, log }
    }

    /// A server started by the test itself, its log read from `child`'s stderr when piped.
    pub fn adopt(mut child: Child, addr: SocketAddr) -> Server {
        let log = match child.stderr.take() {
            Some(stderr) => Log::follow(stderr),
            None => Log::default(),
        };
        Server { child, addr, log }
    }

    /// The API's address, as its log line says (`--api-listen 127.0.0.1:0` picks one).
    pub fn api_addr(&self) -> SocketAddr {
        let found = self.log.wait_for(Duration::from_secs(10), |log| {
            let at = log.find("JSON API on http")?;
            let rest = &log[at..];
            let start = rest.find("://")? + 3;
            rest[start..].split('/').next()?.parse().ok()
        });
        found.expect("the server logs where its API listens")
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.log.text()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Send a signal and wait for the exit; returns the exit status and everything logged.
    pub fn stop(mut self, signal: nix::sys::signal::Signal) -> (std::process::ExitStatus, String) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The log ends with the process (or with whatever it started that shares it).
                let _ = self.log.wait_for(Duration::from_secs(2), |_| None::<()>);
                return (status, self.log.text());
            }
            assert!(
                Instant::now() < deadline,
                "shardcast did not stop after {signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let _ = self
                .log
                .wait_for(Duration::from_millis(500), |_| None::<()>);
            let text = self.log.text();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            eprintln!(
                "--- the last {} lines shardcast ({}) logged ---\n{}",
                tail.len(),
                self.addr,
                tail.join("\n")
            );
        }
    }
}

/// One raw HTTP exchange: the whole response (head and body) read for at most `for_how_long`.
pub fn raw_get(addr: SocketAddr, request: &str, for_how_long: Duration) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + for_how_long;
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("reading the response: {e}"),
        }
    }
    out
}

/// The body of a progressive stream captured for `seconds`, cut to whole packets.
pub fn capture(addr: SocketAddr, path: &str, seconds: f64) -> Vec<u8> {
    let raw = raw_get(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n"),
        Duration::from_secs_f64(seconds),
    );
    let (head, body) = split_response(&raw);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("Content-Type: video/mp2t"), "{head}");
    body[..body.len() / 188 * 188].to_vec()
}

/// Run a tool (killed after 120 s, so a test can never hang on it); returns
/// (success, stdout + stderr).
pub fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("timeout")
        .args(["-k", "5", "120", program])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} must be installed (the test command installs it): {e}")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Continuity breaks in raw packets: (pid, packet index).
pub fn continuity_breaks(data: &[u8]) -> Vec<(u16, usize)> {
    let mut last: Vec<Option<u8>> = vec![None; 0x2000];
    let mut breaks = Vec::new();
    for (i, p) in data.chunks_exact(188).enumerate() {
        assert_eq!(p[0], 0x47, "packet {i} is not aligned");
        let pid = u16::from(p[1] & 0x1F) << 8 | u16::from(p[2]);
        if pid == 0x1FFF {
            continue;
        }
        let cc = p[3] & 0x0F;
        if let Some(prev) = last[usize::from(pid)] {
            let expected = if p[3] & 0x10 != 0 {
                (prev + 1) & 0x0F
            } else {
                prev
            };
            if cc != expected {
                breaks.push((pid, i));
            }
        }
        last[usize::from(pid)] = Some(cc);
    }
    breaks
}

/// Whether the first picture in `data` is a keyframe (and there is one).
pub fn first_picture_is_keyframe(data: &[u8]) -> bool {
    use shardcast_protocols::ts::{DemuxConfig, DemuxEvent, Demuxer};
    let mut d = Demuxer::new(DemuxConfig::default());
    let mut first = None;
    d.push(data, |e| {
        if let DemuxEvent::Picture { keyframe, .. } = e {
            first.get_or_insert(keyframe);
        }
    });
    first == Some(true)
}

/// Pictures in `data`.
pub fn pictures(data: &[u8]) -> usize {
    use shardcast_protocols::ts::{DemuxConfig, DemuxEvent, Demuxer};
    let mut d = Demuxer::new(DemuxConfig::default());
    let mut n = 0;
    d.push(data, |e| {
        if let DemuxEvent::Picture { .. } = e {
            n += 1;
        }
    });
    n
}

/// A child process killed when the guard drops (declare it after anything it depends on).
pub struct KillOnDrop(pub Child);

/// Stop a server that has children of its own (nginx's master and its workers): SIGTERM, so
/// it stops them, then SIGKILL if it is still there after three seconds. A SIGKILL alone would
/// leave the workers running, still listening.
pub fn stop_gracefully(child: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `data` cut before the last PES start on `video_pid`: a capture of whole frames only.
pub fn whole_frames(data: &[u8], video_pid: u16) -> &[u8] {
    let last_start = data.chunks_exact(188).rposition(|p| {
        p[1] & 0x40 != 0 && (u16::from(p[1] & 0x1F) << 8 | u16::from(p[2])) == video_pid
    });
    &data[..last_start.map_or(0, |i| i * 188)]
}

/// The backend the tests ask for (`SHARDCAST_TEST_IO`), or what `auto` picks on this machine.
pub fn expected_backend() -> &'static str {
    match std::env::var("SHARDCAST_TEST_IO").as_deref() {
        Ok("epoll") => "epoll",
        Ok("io_uring") => "io_uring",
        _ => {
            let setup_works = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
                .map_or(true, |v| v.trim() == "0");
            if setup_works {
                "io_uring"
            } else {
                "epoll"
            }
        }
    }
}

/// A filter that makes io_uring_setup fail with EPERM, as a container's seccomp profile does,
/// then runs the command after it (libseccomp's Python binding, from Debian).
pub const WITHOUT_IO_URING: [&str; 3] = [
    "/usr/bin/python3",
    "-c",
    "import errno, os, sys, seccomp\n\
     f = seccomp.SyscallFilter(seccomp.ALLOW)\n\
     f.add_rule(seccomp.ERRNO(errno.EPERM), 'io_uring_setup')\n\
     f.load()\n\
     os.execv(sys.argv[1], sys.argv[1:])",
];

/// Multicast on loopback for the duration of the test.
pub struct LoopbackMulticast {
    enabled_flag: bool,
    added_route: bool,
}

impl LoopbackMulticast {
    pub fn set_up() -> Self {
        let (_, link) = run("ip", &["link", "show", "lo"]);
        let enabled_flag = !link.contains("MULTICAST");
        if enabled_flag {
            let (ok, out) = run("ip", &["link", "set", "lo", "multicast", "on"]);
            assert!(
                ok,
                "ip link set lo multicast on: {out} (the multicast test needs root)"
            );
        }
        let (_, routes) = run("ip", &["route", "show", "224.0.0.0/4", "dev", "lo"]);
        let added_route = routes.trim().is_empty();
        if added_route {
            let (ok, out) = run(
                "ip",
                &[
                    "route",
                    "add",
                    "224.0.0.0/4",
                    "dev",
                    "lo",
                    "src",
                    "127.0.0.1",
                ],
            );
            assert!(ok, "ip route add 224.0.0.0/4 dev lo: {out}");
        }
        let (_, route) = run("ip", &["route", "get", "239.255.42.1"]);
        assert!(
            route.contains("dev lo"),
            "multicast must stay on loopback: {route}"
        );
        LoopbackMulticast {
            enabled_flag,
            added_route,
        }
    }
}

impl Drop for LoopbackMulticast {
    fn drop(&mut self) {
        if self.added_route {
            let _ = run("ip", &["route", "del", "224.0.0.0/4", "dev", "lo"]);
        }
        if self.enabled_flag {
            let _ = run("ip", &["link", "set", "lo", "multicast", "off"]);
        }
    }
}

/// ffmpeg's HLS muxer writing, in real time for `seconds`, a 640x360 test picture (25 fps, a
/// keyframe a second, H.264) and a tone (AAC) into directory `dir`: one-second segments, six
/// listed, older ones deleted. `args` are the rest of the output's options and its playlist
/// (relative to `dir`), e.g. `["index.m3u8"]`. Killed when dropped.
pub fn ffmpeg_live_hls(dir: &std::path::Path, seconds: u32, args: &[&str]) -> KillOnDrop {
    std::fs::create_dir_all(dir).unwrap();
    KillOnDrop(
        Command::new("ffmpeg")
            .current_dir(dir)
            .args(["-nostdin", "-v", "error", "-re", "-f", "lavfi", "-i"])
            .arg("testsrc2=size=640x360:rate=25")
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args([
                "-t",
                &seconds.to_string(),
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
            ])
            .args([
                "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "hls",
            ])
            .args(["-hls_time", "1", "-hls_list_size", "6"])
            .args(["-hls_flags", "delete_segments+temp_file"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Debian's ffmpeg sending a 720p25 H.264 (keyframe every 2 s) + AAC test pattern to `url`
/// for `seconds`, in real time; killed when dropped.
pub fn ffmpeg_udp_source(url: &str, seconds: u32) -> KillOnDrop {
    ffmpeg_source(url, seconds, "1280x720", "2M", 50)
}

/// ffmpeg's test pattern and a tone as H.264 + AAC in MPEG-TS to `url`, for `seconds`, at
/// `size` (WxH), video bitrate `bitrate` and a keyframe every `gop` frames (25 fps).
pub fn ffmpeg_source(url: &str, seconds: u32, size: &str, bitrate: &str, gop: u32) -> KillOnDrop {
    ffmpeg_source_as("mpegts", url, seconds, size, bitrate, gop)
}

/// Like [`ffmpeg_source`], with ffmpeg's muxer `format` (`mpegts`, or `rtp_mpegts` for TS in
/// RTP).
pub fn ffmpeg_source_as(
    format: &str,
    url: &str,
    seconds: u32,
    size: &str,
    bitrate: &str,
    gop: u32,
) -> KillOnDrop {
    ffmpeg_run(
        &["ffmpeg"],
        format,
        url,
        seconds,
        size,
        bitrate,
        gop,
        &[],
        1,
    )
}

/// Like [`ffmpeg_source`] at 640x360 and 1 Mbit/s, a keyframe a second, sent `speed` times
/// faster than real time (`-readrate`): minutes of media in a test's seconds, for what counts
/// media time (recordings), not wall time.
pub fn ffmpeg_source_at(url: &str, seconds: u32, speed: u32) -> KillOnDrop {
    ffmpeg_360p(&["ffmpeg"], url, seconds, &[], speed)
}

/// ffmpeg pushing 640x360 at 1 Mbit/s (one keyframe a second) over HTTP with `method` (PUT or
/// POST; ffmpeg sends the body chunked) to `url`, for `seconds`.
pub fn ffmpeg_push(url: &str, seconds: u32, method: &str) -> KillOnDrop {
    ffmpeg_360p(&["ffmpeg"], url, seconds, &["-method", method], 1)
}

/// ffmpeg sending 640x360 at 1 Mbit/s (one keyframe a second) as TS to `url` for `seconds`,
/// run inside network namespace `netns`.
pub fn ffmpeg_source_in(netns: &str, url: &str, seconds: u32) -> KillOnDrop {
    let program = ["ip", "netns", "exec", netns, "ffmpeg"];
    ffmpeg_360p(&program, url, seconds, &[], 1)
}

/// ffmpeg (`program`) sending TS of 640x360 at 1 Mbit/s, a keyframe a second, to `url` with
/// the `output` options, `speed` times real time.
fn ffmpeg_360p(
    program: &[&str],
    url: &str,
    seconds: u32,
    output: &[&str],
    speed: u32,
) -> KillOnDrop {
    ffmpeg_run(
        program, "mpegts", url, seconds, "640x360", "1M", 25, output, speed,
    )
}

/// ffmpeg (the command line `program` starts with: ffmpeg, or a wrapper running it) encoding
/// a test pattern and a tone, `speed` times real time.
#[allow(clippy::too_many_arguments)] // the encoder's few knobs, spelled out at each caller
fn ffmpeg_run(
    program: &[&str],
    format: &str,
    url: &str,
    seconds: u32,
    size: &str,
    bitrate: &str,
    gop: u32,
    output: &[&str],
    speed: u32,
) -> KillOnDrop {
    KillOnDrop(
        Command::new(program[0])
            .args(&program[1..])
            .args([
                "-nostdin",
                "-v",
                "error",
                "-readrate",
                &speed.to_string(),
                "-f",
                "lavfi",
                "-i",
                &format!("testsrc2=size={size}:rate=25"),
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=48000",
            ])
            .args(["-t", &seconds.to_string()])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
                "-g",
                &gop.to_string(),
                "-pix_fmt",
                "yuv420p",
                "-b:v",
                bitrate,
                "-c:a",
                "aac",
                "-b:a",
                "64k",
                "-f",
                format,
            ])
            .args(output)
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ffmpeg must be installed"),
    )
}

/// One GET with `Connection: close` and extra header lines; returns (status, head, body).
pub fn fetch(addr: SocketAddr, path: &str, headers: &str) -> (u16, String, Vec<u8>) {
    exchange(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: test\r\n{headers}Connection: close\r\n\r\n"),
    )
}

/// A raw response split into its head (as text) and body.
pub fn split_response(raw: &[u8]) -> (String, &[u8]) {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no response head")
        + 4;
    (
        String::from_utf8_lossy(&raw[..end]).to_string(),
        &raw[end..],
    )
}

/// The value of header `name` in a response head.
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The discontinuities in `stream`'s live HLS playlist now.
pub fn discontinuities(server: &Server, stream: &str) -> usize {
    use shardcast_protocols::hls::{parse, Playlist};
    let (code, _, body) = fetch(server.addr, &format!("/{stream}/index.m3u8"), "");
    assert_eq!(code, 200);
    match parse(&body).unwrap() {
        Playlist::Media(m) => m.segments.iter().filter(|s| s.discontinuity).count(),
        other => panic!("not a media playlist: {other:?}"),
    }
}

/// The PTS (90 kHz) of the first PES that starts on `pid` in `data`.
pub fn first_pts(data: &[u8], pid: u16) -> Option<u64> {
    use shardcast_protocols::ts::{pes::PesHeader, Packet};
    data.chunks_exact(188).find_map(|bytes| {
        let packet = Packet::new(bytes.try_into().ok()?).ok()?;
        if packet.pid().value() != pid || !packet.payload_unit_start() {
            return None;
        }
        PesHeader::parse(packet.payload())
            .ok()??
            .pts
            .map(|t| t.ticks())
    })
}

/// ffprobe's `codec_name,width,height,r_frame_rate` line of every stream at `url` (it must
/// succeed).
pub fn probe_streams(url: &str) -> String {
    let (ok, probe) = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height,r_frame_rate",
            "-of",
            "csv=p=0",
            url,
        ],
    );
    assert!(ok, "ffprobe {url}: {probe}");
    probe
}

/// A server of another project (nginx, Apache, lighttpd) that a test runs from a
/// configuration it writes, in a directory of its own on a free port; stopped with SIGTERM
/// (then SIGKILL) and its directory removed when dropped.
pub struct Peer {
    child: Child,
    pub addr: SocketAddr,
    pub dir: std::path::PathBuf,
}

impl Peer {
    /// Start `program` with `args` and the configuration `conf`, and wait until it accepts on
    /// 127.0.0.1:`port`. `conf` and `args` may name the directory as `DIR`; `args` names the
    /// configuration file as `CONF`.
    pub fn start(name: &str, program: &str, args: &[&str], conf: &str, port: u16) -> Peer {
        let dir =
            std::env::temp_dir().join(format!("shardcast-{name}-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Apache drops to `nobody`, which must be able to read its configuration.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let dir_text = dir.to_str().unwrap();
        let conf_path = dir.join(format!("{name}.conf"));
        std::fs::write(&conf_path, conf.replace("DIR", dir_text)).unwrap();
        let args: Vec<String> = args
            .iter()
            .map(|a| {
                a.replace("CONF", conf_path.to_str().unwrap())
                    .replace("DIR", dir_text)
            })
            .collect();
        let child = Command::new(program)
            .args(&args)
            .env("APACHE_RUN_DIR", &dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{program} must be installed (the test command installs it): {e}")
            });
        let peer = Peer {
            child,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(peer.addr).is_err() {
            assert!(Instant::now() < deadline, "{name} did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        peer
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        stop_gracefully(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Debian's nginx with one worker and every file under its directory, listening on a free
/// port, with `http_extra` in its http block and `server_body` in its server block (both may
/// name the directory as `DIR`).
pub fn start_nginx(http_extra: &str, server_body: &str) -> Peer {
    let port = free_port();
    let conf = format!(
        "daemon off;\nworker_processes 1;\nuser root;\npid DIR/nginx.pid;\n\
         error_log DIR/error.log warn;\nevents {{ worker_connections 1024; }}\n\
         http {{\n access_log off;\n client_body_temp_path DIR/body;\n\
         proxy_temp_path DIR/proxy;\n fastcgi_temp_path DIR/fastcgi;\n\
         uwsgi_temp_path DIR/uwsgi;\n scgi_temp_path DIR/scgi;\n{http_extra}\n\
         server {{\n listen 127.0.0.1:{port};\n{server_body}\n }}\n}}\n"
    );
    Peer::start(
        "nginx",
        "/usr/sbin/nginx",
        &["-p", "DIR", "-c", "CONF"],
        &conf,
        port,
    )
}

/// Send a whole request (it should say `Connection: close`) and read the whole response:
/// (status, head, body).
pub fn exchange(addr: SocketAddr, request: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let (head, body) = split_response(&raw);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head, body.to_vec())
}

/// A directory for one test, removed when it goes out of scope, however the test ends.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    /// `shardcast-NAME-PID` under the system's temporary directory, empty.
    pub fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("shardcast-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// engine/api/openapi.json.
pub fn openapi() -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../engine/api/openapi.json"),
        )
        .unwrap(),
    )
    .unwrap()
}

pub fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

/// Check `value` against an OpenAPI schema: types, required properties, enums, minimums,
/// `$ref`s into the spec's components.
pub fn check(
    spec: &serde_json::Value,
    schema: &serde_json::Value,
    value: &serde_json::Value,
    at: &str,
) {
    if let Some(reference) = schema.get("$ref").and_then(serde_json::Value::as_str) {
        let mut target = spec;
        for part in reference.trim_start_matches("#/").split('/') {
            target = &target[part];
        }
        return check(spec, target, value, at);
    }
    match schema.get("type").and_then(serde_json::Value::as_str) {
        Some("object") => {
            let object = value
                .as_object()
                .unwrap_or_else(|| panic!("{at}: not an object: {value}"));
            for required in schema["required"].as_array().into_iter().flatten() {
                let name = required.as_str().unwrap();
                assert!(
                    object.contains_key(name),
                    "{at}: {name} is missing from {value}"
                );
            }
            for (name, property) in schema["properties"].as_object().into_iter().flatten() {
                if let Some(v) = object.get(name) {
                    check(spec, property, v, &format!("{at}.{name}"));
                }
            }
        }
        Some("array") => {
            let items = value
                .as_array()
                .unwrap_or_else(|| panic!("{at}: not an array: {value}"));
            for (i, item) in items.iter().enumerate() {
                check(spec, &schema["items"], item, &format!("{at}[{i}]"));
            }
        }
        Some("string") => {
            let s = value
                .as_str()
                .unwrap_or_else(|| panic!("{at}: not a string: {value}"));
            if let Some(allowed) = schema["enum"].as_array() {
                assert!(
                    allowed.iter().any(|a| a == s),
                    "{at}: {s:?} is not one of {allowed:?}"
                );
            }
        }
        Some("integer") => {
            let n = value
                .as_i64()
                .unwrap_or_else(|| panic!("{at}: not an integer: {value}"));
            if let Some(min) = schema["minimum"].as_i64() {
                assert!(n >= min, "{at}: {n} < {min}");
            }
        }
        Some("number") => {
            let n = value
                .as_f64()
                .unwrap_or_else(|| panic!("{at}: not a number: {value}"));
            if let Some(min) = schema["minimum"].as_f64() {
                assert!(n >= min, "{at}: {n} < {min}");
            }
        }
        _ => {}
    }
}

/// `body` is JSON of the spec's Error schema.
pub fn check_error(spec: &serde_json::Value, body: &[u8], what: &str) {
    check(
        spec,
        &spec["components"]["schemas"]["Error"],
        &json(body),
        what,
    );
}

/// A request a [`Backend`] received.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What a [`Backend`] answers: status, extra header lines, body, and how long to wait first.
pub type Answer = (u16, Vec<(String, String)>, String, Duration);

/// A small HTTP server standing in for an operator's backend (webhooks, token checks): it
/// records every request and answers through `answer`. One thread per connection.
pub struct Backend {
    pub addr: SocketAddr,
    pub received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Backend {
    pub fn start(answer: impl Fn(&Received) -> Answer + Send + Sync + 'static) -> Backend {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let answer = std::sync::Arc::new(answer);
        let (r, s) = (received.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let (r, answer) = (r.clone(), answer.clone());
                std::thread::spawn(move || {
                    let _ = conn.set_nonblocking(false);
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut raw = Vec::new();
                    let mut buf = [0u8; 8192];
                    let (head, length) = loop {
                        let Ok(n) = conn.read(&mut buf) else { return };
                        if n == 0 {
                            return;
                        }
                        raw.extend_from_slice(&buf[..n]);
                        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&raw[..end]).to_string();
                            let length = head
                                .lines()
                                .find_map(|l| {
                                    let (n, v) = l.split_once(':')?;
                                    n.eq_ignore_ascii_case("content-length")
                                        .then(|| v.trim().parse::<usize>().ok())?
                                })
                                .unwrap_or(0);
                            raw.drain(..end + 4);
                            break (head, length);
                        }
                    };
                    while raw.len() < length {
                        let Ok(n) = conn.read(&mut buf) else { return };
                        if n == 0 {
                            return;
                        }
                        raw.extend_from_slice(&buf[..n]);
                    }
                    let mut lines = head.lines();
                    let path = lines
                        .next()
                        .and_then(|l| l.split(' ').nth(1))
                        .unwrap_or("")
                        .to_owned();
                    let headers = lines
                        .filter_map(|l| {
                            let (n, v) = l.split_once(':')?;
                            Some((n.trim().to_ascii_lowercase(), v.trim().to_owned()))
                        })
                        .collect();
                    let request = Received {
                        path,
                        headers,
                        body: String::from_utf8_lossy(&raw[..length]).to_string(),
                    };
                    r.lock().unwrap().push(request.clone());
                    let (status, extra, body, delay) = answer(&request);
                    std::thread::sleep(delay);
                    let mut response = format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                        body.len()
                    );
                    for (n, v) in extra {
                        response.push_str(&format!("{n}: {v}\r\n"));
                    }
                    response.push_str("\r\n");
                    response.push_str(&body);
                    let _ = conn.write_all(response.as_bytes());
                });
            }
        });
        Backend {
            addr,
            received,
            stop,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A call to the JSON API with `token` (and a JSON `body`): the status and the answer's JSON
/// (`Null` when it has no body).
pub fn api_call(
    api: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let body = body.unwrap_or("");
    let (status, _, raw) = exchange(
        api,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    let value = if raw.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&raw).unwrap_or_else(|e| {
            panic!("not JSON ({e}): {}", String::from_utf8_lossy(&raw));
        })
    };
    (status, value)
}

/// Start with `config`, the API on `api` and the state in `state`; returns once the API
/// listens.
pub fn start_with_api(
    config: &std::path::Path,
    state: &std::path::Path,
    api: SocketAddr,
) -> Server {
    let server = Server::start(&[
        "--config",
        config.to_str().unwrap(),
        "--api-listen",
        &api.to_string(),
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(api).is_err() {
        assert!(Instant::now() < deadline, "the API never listened on {api}");
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

/// The API token a server generated in `state`.
pub fn api_token(state: &std::path::Path) -> String {
    std::fs::read_to_string(state.join("api-token"))
        .unwrap()
        .trim()
        .to_owned()
}

/// An address for the API.
pub fn free_api_addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

/// Decode `seconds` of `url` with ffmpeg, throwing the pictures and sound away; returns
/// (success, what ffmpeg said at `-v error`: nothing when the stream is clean).
pub fn decode(url: &str, seconds: u32) -> (bool, String) {
    run(
        "ffmpeg",
        &[
            "-nostdin",
            "-hide_banner",
            "-v",
            "error",
            "-i",
            url,
            "-t",
            &seconds.to_string(),
            "-f",
            "null",
            "-",
        ],
    )
}

/// Play HLS `url` with ffmpeg for `seconds` (as `user_agent`), throwing the media away;
/// returns (success, what ffmpeg said).
pub fn ffmpeg_play(url: &str, seconds: u32, user_agent: &str) -> (bool, String) {
    run(
        "ffmpeg",
        &[
            "-hide_banner",
            "-loglevel",
            "error",
            "-user_agent",
            user_agent,
            "-i",
            url,
            "-t",
            &seconds.to_string(),
            "-c",
            "copy",
            "-f",
            "mpegts",
            "-y",
            "/dev/null",
        ],
    )
}

/// A server with the API, running `config`, in a directory of its own (kept as long as the
/// last of the four is); with the API's address and token.
pub fn start_configured(
    name: &str,
    config: &str,
) -> (Server, std::net::SocketAddr, String, TempDir) {
    let dir = TempDir::new(name);
    let path = dir.0.join("shardcast.toml");
    std::fs::write(&path, config).unwrap();
    let api = free_api_addr();
    let server = start_with_api(&path, &dir.0, api);
    let token = api_token(&dir.0);
    (server, api, token, dir)
}

/// Wait until `done` holds, for at most `within`; `what` says what it was when it did not.
pub fn wait_until(within: Duration, what: impl Fn() -> String, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{}", what());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The stream's status from the API.
pub fn status(api: std::net::SocketAddr, token: &str, stream: &str) -> serde_json::Value {
    let (code, body) = api_call(
        api,
        "GET",
        &format!("/api/v1/streams/{stream}"),
        token,
        None,
    );
    assert_eq!(code, 200, "{body}");
    body
}

/// A network namespace joined to this one by a veth pair, with IPv6 addresses on both ends
/// (`fd00:5c::1` here, `fd00:5c::2` there, no duplicate detection to wait for); removed, with
/// its veth pair, when dropped.
pub struct NetnsV6 {
    /// The namespace's name (`ip netns exec NAME …`).
    pub name: String,
    /// The veth end on this side (an interface to join groups on).
    pub host_iface: String,
}

impl NetnsV6 {
    pub fn set_up(tag: &str) -> NetnsV6 {
        let id = std::process::id() % 100_000;
        let name = format!("sc-{tag}-{id}");
        let host_iface = format!("sch{id}");
        let peer = format!("scn{id}");
        let _ = run("ip", &["netns", "del", &name]);
        let steps: [&[&str]; 8] = [
            &["netns", "add", &name],
            &[
                "link",
                "add",
                &host_iface,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
            ],
            &["link", "set", &peer, "netns", &name],
            &["addr", "add", "fd00:5c::1/64", "dev", &host_iface, "nodad"],
            &["link", "set", &host_iface, "up"],
            &[
                "-n",
                &name,
                "addr",
                "add",
                "fd00:5c::2/64",
                "dev",
                &peer,
                "nodad",
            ],
            &["-n", &name, "link", "set", &peer, "up"],
            &["-n", &name, "link", "set", "lo", "up"],
        ];
        let ns = NetnsV6 {
            name: name.clone(),
            host_iface: host_iface.clone(),
        };
        for step in steps {
            let (ok, out) = run("ip", step);
            assert!(
                ok,
                "ip {}: {out} (the namespace test needs root)",
                step.join(" ")
            );
        }
        ns
    }
}

impl Drop for NetnsV6 {
    fn drop(&mut self) {
        // The veth pair goes with the namespace.
        let _ = run("ip", &["netns", "del", &self.name]);
        let _ = run("ip", &["link", "del", &self.host_iface]);
    }
}

/// A test CA and the certificates it signs, as PEM files in a directory of their own.
pub struct TestPki {
    pub dir: TempDir,
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

/// A certificate and key issued by [`TestPki`].
#[derive(Clone, Debug)]
pub struct TestCert {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl TestPki {
    /// A new CA, its certificate in `ca.pem`.
    pub fn new(name: &str) -> TestPki {
        let dir = TempDir::new(&format!("pki-{name}"));
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("shardcast test CA {name}"),
        );
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
            .unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        TestPki { dir, ca }
    }

    /// The CA certificate's file.
    pub fn ca(&self) -> std::path::PathBuf {
        self.dir.join("ca.pem")
    }

    /// A certificate for `names` (DNS names, or IP addresses), valid for `days` from
    /// `days_ago` days ago (a negative end: already expired), as `{file}.pem` (with the CA
    /// after it) and `{file}.key`.
    pub fn issue(&self, file: &str, names: &[&str], days_ago: i64, days: i64) -> TestCert {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(days_ago);
        params.not_after = params.not_before + time::Duration::days(days);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let out = TestCert {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}.key")),
        };
        std::fs::write(&out.cert, format!("{}{}", cert.pem(), self.ca.pem())).unwrap();
        std::fs::write(&out.key, key.serialize_pem()).unwrap();
        out
    }
}

/// curl over https with the test CA: (exit status success, stdout, stderr). `resolve` makes
/// `name:port` reach 127.0.0.1.
pub fn curl_https(ca: &std::path::Path, args: &[&str]) -> (bool, Vec<u8>, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(args)
        .output()
        .expect("curl must be installed");
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Send the load generator's stream (H.264 + AAC with wall-clock stamps) over UDP to
/// 127.0.0.1:`port` for `seconds`; returns the datagrams sent.
pub fn send_generated(port: u16, seconds: u64) -> u64 {
    shardcast_bench::ingest::run(&shardcast_bench::ingest::IngestPlan {
        to: format!("127.0.0.1:{port}").parse().unwrap(),
        from: "127.0.0.1:0".parse().unwrap(),
        duration: Duration::from_secs(seconds),
        generator: Default::default(),
    })
    .unwrap()
}

/// A server with one stream `cam` received over UDP on a free port, with `settings` (TOML
/// lines) added to the stream; the server and the port.
pub fn udp_stream_server(dir: &std::path::Path, settings: &str) -> (Server, u16) {
    let port = free_port();
    let config = dir.join("shardcast.toml");
    std::fs::write(
        &config,
        format!("[[stream]]\nname = \"cam\"\nsource = \"udp://127.0.0.1:{port}\"\n{settings}"),
    )
    .unwrap();
    (Server::start(&["--config", config.to_str().unwrap()]), port)
}

/// ffmpeg sending 640x360 H.264 at 1 Mbit/s (a keyframe a second) and AAC to UDP `port` on
/// 127.0.0.1 for `seconds`.
pub fn small_source(port: u16, seconds: u32) -> KillOnDrop {
    ffmpeg_source(
        &format!("udp://127.0.0.1:{port}?pkt_size=1316"),
        seconds,
        "640x360",
        "1M",
        25,
    )
}

/// A small seeded generator (xorshift64*): the same impairments on every run.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// What a [`LossyPath`] did, per direction.
#[derive(Debug, Default, Clone, Copy)]
pub struct PathCounts {
    pub forward: u64,
    pub forward_lost: u64,
    pub back: u64,
    pub back_lost: u64,
}

/// A two-way UDP path of the test's own (this kernel has no netem): datagrams sent to its
/// port go on to `to`, and the answers come back to their sender, each way losing
/// `loss` of them (seeded) and delaying the rest by `delay`, order kept. For SRT, whose
/// acknowledgements and retransmission requests travel back.
pub struct LossyPath {
    pub port: u16,
    counts: std::sync::Arc<std::sync::Mutex<PathCounts>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LossyPath {
    pub fn start(to: SocketAddr, loss: f64, delay: Duration, seed: u64) -> LossyPath {
        use std::collections::VecDeque;
        use std::net::UdpSocket;
        use std::sync::atomic::Ordering;
        let near = UdpSocket::bind("127.0.0.1:0").unwrap();
        let far = UdpSocket::bind("127.0.0.1:0").unwrap();
        near.set_nonblocking(true).unwrap();
        far.set_nonblocking(true).unwrap();
        let port = near.local_addr().unwrap().port();
        let counts = std::sync::Arc::new(std::sync::Mutex::new(PathCounts::default()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c, s) = (counts.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut rng = Rng(seed);
            let mut sender: Option<SocketAddr> = None;
            // (due, towards the far end, datagram)
            let mut queue: VecDeque<(Instant, bool, Vec<u8>)> = VecDeque::new();
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                let mut idle = true;
                while let Ok((n, from)) = near.recv_from(&mut buf) {
                    idle = false;
                    sender = Some(from);
                    let mut counts = c.lock().unwrap();
                    counts.forward += 1;
                    if rng.chance(loss) {
                        counts.forward_lost += 1;
                    } else {
                        queue.push_back((Instant::now() + delay, true, buf[..n].to_vec()));
                    }
                }
                while let Ok((n, _)) = far.recv_from(&mut buf) {
                    idle = false;
                    let mut counts = c.lock().unwrap();
                    counts.back += 1;
                    if rng.chance(loss) {
                        counts.back_lost += 1;
                    } else {
                        queue.push_back((Instant::now() + delay, false, buf[..n].to_vec()));
                    }
                }
                let now = Instant::now();
                while queue.front().is_some_and(|(due, _, _)| *due <= now) {
                    let (_, forward, datagram) = queue.pop_front().unwrap();
                    if forward {
                        let _ = far.send_to(&datagram, to);
                    } else if let Some(back_to) = sender {
                        let _ = near.send_to(&datagram, back_to);
                    }
                }
                if idle {
                    std::thread::sleep(Duration::from_micros(500));
                }
            }
        });
        LossyPath {
            port,
            counts,
            stop,
            thread: Some(thread),
        }
    }

    pub fn counts(&self) -> PathCounts {
        *self.counts.lock().unwrap()
    }
}

impl Drop for LossyPath {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Wait until something accepts TCP connections on `port` of 127.0.0.1 (a listener the server
/// opens on its own thread after it starts).
pub fn wait_listening(port: u16) {
    wait_until(
        Duration::from_secs(10),
        || format!("nothing listens on port {port}"),
        || TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
}

/// The server's metrics page, read with the API token.
pub fn metrics(api: SocketAddr, token: &str) -> String {
    let (_, _, body) = fetch(
        api,
        "/metrics",
        &format!("Authorization: Bearer {token}\r\n"),
    );
    String::from_utf8_lossy(&body).into_owned()
}

/// `stream`'s HLS has 640x360 H.264 and AAC, and 3 s of it decode at `-v error` silently.
pub fn plays_640x360_h264_and_aac(server: &Server, stream: &str) {
    let url = server.url(&format!("/{stream}/index.m3u8"));
    let probe = probe_streams(&url);
    assert!(
        probe.contains("h264,640,360,") && probe.contains("aac"),
        "{stream}: {probe}"
    );
    let (decoded, said) = decode(&url, 3);
    assert!(
        decoded && said.trim().is_empty(),
        "{stream}: ffmpeg said: {said}"
    );
}

/// Wait until `server` listens for SRT callers on `port` of 127.0.0.1 (its listener's thread
/// says so in the log).
pub fn wait_srt_listening(server: &Server, port: u16) {
    let line = format!("listening for SRT callers on srt://127.0.0.1:{port} ");
    wait_until(
        Duration::from_secs(10),
        || format!("no SRT listener on port {port}"),
        || server.log().contains(&line),
    );
}

/// Wait until some process has UDP `port` of 127.0.0.1 (or of every address) bound.
pub fn wait_udp_bound(port: u16) {
    wait_until(
        Duration::from_secs(10),
        || format!("nothing bound UDP port {port}"),
        || std::net::UdpSocket::bind(("127.0.0.1", port)).is_err(),
    );
}
