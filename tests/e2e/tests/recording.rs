//! Recording: files cut at keyframes with ffprobe's durations what `RECORDING_END` says,
//! retention by bytes, the API's start and stop; and a disk that fills (a small tmpfs) stops
//! the recording without disturbing 100 progressive viewers, and it resumes once there is room.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use shardcast_bench::load::Load;
use std::time::Duration;
use support::*;

/// A handler for `RECORDING_END` that logs each call's payload lines, joined by `|`, in
/// `ended` beside it.
fn handler(dir: &TempDir) -> std::path::PathBuf {
    let script = dir.0.join("ended.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\npayload=$(cat)\nprintf '%s\\n' \"$(printf '%s' \"$payload\" | tr '\\n' '|')\" >> \"$(dirname \"$0\")/ended\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    script
}

fn ended(dir: &TempDir) -> Vec<Vec<String>> {
    std::fs::read_to_string(dir.0.join("ended"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.split('|').map(str::to_owned).collect())
        .collect()
}

/// A server in `dir` recording stream `cam` (ffmpeg's 640x360 at 1 Mbit/s, a keyframe a
/// second, into UDP port `input` for 60 s) as `record` says, `handler` its `RECORDING_END`.
fn start(
    dir: &TempDir,
    input: u16,
    record: &str,
    handler: &std::path::Path,
) -> (Server, std::net::SocketAddr, String, KillOnDrop) {
    let config = format!(
        "[[stream]]\nname = \"cam\"\nsource = \"udp://127.0.0.1:{input}\"\nsegment_duration = 1\n\
         record = {record}\n\n\
         [[trigger]]\non = \"RECORDING_END\"\nhandler = \"{}\"\n",
        handler.display()
    );
    let path = dir.0.join("shardcast.toml");
    std::fs::write(&path, config).unwrap();
    let api = free_api_addr();
    let server = start_with_api(&path, &dir.0, api);
    let token = api_token(&dir.0);
    let ffmpeg = ffmpeg_source(
        &format!("udp://127.0.0.1:{input}?pkt_size=1316"),
        60,
        "640x360",
        "1M",
        25,
    );
    (server, api, token, ffmpeg)
}

/// ffprobe's duration of a file, seconds.
fn duration(path: &str) -> f64 {
    let (ok, out) = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
            path,
        ],
    );
    assert!(ok, "{out}");
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{path}: {out}"))
}

#[test]
fn a_recording_is_cut_at_keyframes_kept_within_its_bytes_and_reported() {
    let input = free_port();
    let dir = TempDir::new("recording");
    let script = handler(&dir);
    let rec = dir.0.join("rec");
    let record = format!(
        "{{ path = \"{}/{{stream}}/{{start:%H%M%S}}.ts\", rotate = 4, max_bytes = 2097152 }}",
        rec.display()
    );
    let (server, api, token, _ffmpeg) = start(&dir, input, &record, &script);
    // Five files end (about 4 s each), then the recording is stopped: the sixth ends too.
    wait_until(
        Duration::from_secs(40),
        || format!("{:?}\n{}", ended(&dir), server.log()),
        || ended(&dir).len() >= 5,
    );
    // Stopped in the middle of the sixth.
    std::thread::sleep(Duration::from_secs(2));
    let (code, _) = api_call(api, "DELETE", "/api/v1/streams/cam/recording", &token, None);
    assert_eq!(code, 204);
    wait_until(
        Duration::from_secs(10),
        || format!("{:?}", ended(&dir)),
        || ended(&dir).len() >= 6,
    );
    let files = ended(&dir);
    let mut kept = 0;
    let mut kept_bytes = 0;
    for (i, f) in files.iter().enumerate() {
        // stream, path, protocol, bytes, seconds, start, end, media ms, first, last.
        assert_eq!(f.len(), 10, "{f:?}");
        assert_eq!((f[0].as_str(), f[2].as_str()), ("cam", "TS"));
        let media_s = f[7].parse::<f64>().unwrap() / 1000.0;
        let path = &f[1];
        let Ok(bytes) = std::fs::read(path) else {
            continue; // removed by retention
        };
        assert_eq!(bytes.len().to_string(), f[3], "{path}");
        kept += 1;
        kept_bytes += bytes.len();
        // Every file begins with the PAT and a keyframe.
        assert_eq!(bytes[1] & 0x1F, 0, "{path}");
        assert!(first_picture_is_keyframe(&bytes), "{path}");
        // Rotated files hold 4 s (cut at the keyframe there, one a second).
        if i < 5 {
            assert!((3.9..4.3).contains(&media_s), "{path}: {media_s} s");
        }
        // ffprobe agrees with the trigger's media duration within 0.5 s.
        let probed = duration(path);
        assert!(
            (probed - media_s).abs() <= 0.5,
            "{path}: ffprobe {probed} s, RECORDING_END {media_s} s"
        );
        let whole = dir.0.join(format!("whole-{i}.ts"));
        std::fs::write(&whole, whole_frames(&bytes, 0x100)).unwrap();
        let (ok, said) = run(
            "ffmpeg",
            &[
                "-nostdin",
                "-v",
                "error",
                "-i",
                whole.to_str().unwrap(),
                "-f",
                "null",
                "-",
            ],
        );
        assert!(ok && said.trim().is_empty(), "{path}: {said}");
    }
    // Retention: at most 2 MiB kept, the oldest gone.
    assert!(kept_bytes <= 2 << 20, "{kept_bytes} bytes kept");
    assert!(
        std::fs::metadata(&files[0][1]).is_err(),
        "the oldest is kept"
    );
    assert!(kept >= 2, "{kept} files kept");
    // The API lists what is kept.
    let (code, listed) = api_call(api, "GET", "/api/v1/streams/cam/recordings", &token, None);
    assert_eq!(code, 200);
    assert_eq!(listed.as_array().unwrap().len(), kept, "{listed}");
    // Started again through the API; once only; stopped; no recording to stop.
    let (code, body) = api_call(api, "POST", "/api/v1/streams/cam/recording", &token, None);
    assert_eq!(code, 201, "{body}");
    let (code, body) = api_call(api, "POST", "/api/v1/streams/cam/recording", &token, None);
    assert_eq!(code, 409, "{body}");
    let (code, _) = api_call(api, "DELETE", "/api/v1/streams/cam/recording", &token, None);
    assert_eq!(code, 204);
    let (code, _) = api_call(api, "DELETE", "/api/v1/streams/cam/recording", &token, None);
    assert_eq!(code, 404);
    let (code, body) = api_call(
        api,
        "POST",
        "/api/v1/streams/cam/recording",
        &token,
        Some("{\"path\": \"relative/{start}.ts\"}"),
    );
    assert_eq!(code, 400, "{body}");
}

/// A tmpfs of `size` mounted at `dir` for the test.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: std::path::PathBuf, size: &str) -> SmallDisk {
        std::fs::create_dir_all(&dir).unwrap();
        let (ok, out) = run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                dir.to_str().unwrap(),
            ],
        );
        assert!(ok, "mount a tmpfs (the test needs root): {out}");
        SmallDisk(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = run("umount", &[self.0.to_str().unwrap()]);
    }
}

#[test]
fn a_full_disk_stops_the_recording_without_disturbing_viewers_and_it_resumes() {
    let input = free_port();
    let dir = TempDir::new("recording-full");
    let script = handler(&dir);
    let disk = SmallDisk::mount(dir.0.join("small"), "1m");
    let record = format!(
        "{{ path = \"{}/{{start}}.ts\", rotate = 0 }}",
        disk.0.display()
    );
    let (server, api, token, _ffmpeg) = start(&dir, input, &record, &script);
    wait_until(
        Duration::from_secs(10),
        || server.log(),
        || fetch(server.addr, "/cam/index.m3u8", "").0 == 200,
    );
    // 100 progressive viewers for 16 s, through the disk filling (1 MiB at about 1.2 Mbit/s).
    let load = Load {
        addr: server.addr,
        path: "/cam.ts".into(),
        viewers: 100,
        ramp: Duration::from_secs(1),
        settle: Duration::from_secs(1),
        measure: Duration::from_secs(16),
        server_pid: None,
        progress: false,
        pace_bps: 0,
        tls: None,
        low_latency: false,
    };
    let viewers = std::thread::spawn(move || shardcast_bench::ts::run(&load).unwrap());
    let recording = || {
        let (_, pushes) = api_call(api, "GET", "/api/v1/pushes", &token, None);
        pushes[0].clone()
    };
    wait_until(
        Duration::from_secs(20),
        || format!("{}\n{}", recording(), server.log()),
        || recording()["failures"].as_u64() >= Some(1),
    );
    assert!(
        server.log().contains("recording: writing"),
        "{}",
        server.log()
    );
    // The file ended with what it held, and RECORDING_END said so.
    wait_until(
        Duration::from_secs(5),
        || format!("{:?}", ended(&dir)),
        || !ended(&dir).is_empty(),
    );
    let first = ended(&dir)[0].clone();
    let kept = std::fs::metadata(&first[1]).unwrap().len();
    assert_eq!(kept.to_string(), first[3]);
    assert!(kept > 500_000, "{kept} bytes");
    let metrics_text = metrics(api, &token);
    assert!(
        metrics_text.contains("shardcast_push_out_failures_total{stream=\"cam\""),
        "{metrics_text}"
    );
    let viewers = viewers.join().unwrap();
    eprintln!("{}", viewers.summary());
    assert_eq!(viewers.connected, 100, "{}", viewers.summary());
    assert_eq!(
        (viewers.disconnected, viewers.gaps),
        (0, 0),
        "{}",
        viewers.summary()
    );
    // Room again: the recording resumes in a new file within its retry (5 s) and a keyframe.
    std::fs::remove_file(&first[1]).unwrap();
    wait_until(
        Duration::from_secs(15),
        || format!("{}", recording()),
        || recording()["connected"] == true,
    );
    wait_until(
        Duration::from_secs(10),
        || "no new file".into(),
        || {
            std::fs::read_dir(&disk.0)
                .unwrap()
                .flatten()
                .any(|e| e.metadata().unwrap().len() > 100_000)
        },
    );
    let (status, log) = server.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{log}");
    // The recording's last file ended whole at the stop (renamed from .part).
    assert!(
        std::fs::read_dir(&disk.0)
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().ends_with(".part")),
        "a .part file was left"
    );
    drop(disk);
}
