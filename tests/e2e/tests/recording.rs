//! Recording: files cut at keyframes with ffprobe's durations what `RECORDING_END` says,
//! retention by bytes, the API's start and stop; a minute recorded whole (every frame decodes,
//! ffprobe agrees within 0.5 s); a disk that fills (a small tmpfs) stops
//! the recording without disturbing 100 progressive viewers, and it resumes once there is room;
//! and recordings played back as VOD HLS (ffmpeg decodes them silently, with or without
//! their index) and downloaded whole or in part from the API.
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

/// The decoded video frames of a file, by ffprobe.
fn video_frames(path: &str) -> u64 {
    let (ok, out) = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-select_streams",
            "v",
            "-count_frames",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
            path,
        ],
    );
    assert!(ok, "{out}");
    // One line for the stream (ffprobe may print it again for its program).
    out.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("{path}: {out}"))
}

#[test]
fn a_minute_is_recorded_whole() {
    // A minute of media, sent five times faster than real time: rotation counts media time.
    let input = free_port();
    let dir = TempDir::new("recording-minute");
    let script = handler(&dir);
    let rec = dir.0.join("rec");
    let config = format!(
        "[[stream]]\nname = \"cam\"\nsource = \"udp://127.0.0.1:{input}\"\nsegment_duration = 1\n\
         record = {{ path = \"{}/{{stream}}/{{start}}.ts\", rotate = 60 }}\n\n\
         [[trigger]]\non = \"RECORDING_END\"\nhandler = \"{}\"\n",
        rec.display(),
        script.display()
    );
    let path = dir.0.join("shardcast.toml");
    std::fs::write(&path, config).unwrap();
    let server = Server::start(&[
        "--config",
        path.to_str().unwrap(),
        "--state-dir",
        dir.0.to_str().unwrap(),
    ]);
    let _ffmpeg = ffmpeg_source_at(&format!("udp://127.0.0.1:{input}?pkt_size=1316"), 75, 5);
    wait_until(
        Duration::from_secs(60),
        || format!("{:?}\n{}", ended(&dir), server.log()),
        || !ended(&dir).is_empty(),
    );
    let file = &ended(&dir)[0];
    assert_eq!(file.len(), 10, "{file:?}");
    let path = file[1].as_str();
    let media_s = file[7].parse::<f64>().unwrap() / 1000.0;
    // Cut at the keyframe where the minute is reached (one a second).
    assert!((59.9..60.3).contains(&media_s), "{path}: {media_s} s");
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(bytes.len().to_string(), file[3], "{path}");
    assert_eq!(bytes[1] & 0x1F, 0, "{path}: the PAT first");
    assert!(first_picture_is_keyframe(&bytes), "{path}");
    let probed = duration(path);
    assert!(
        (probed - media_s).abs() <= 0.5,
        "{path}: ffprobe {probed} s, RECORDING_END {media_s} s"
    );
    // Every frame of the minute decodes, silently: 25 a second.
    let (ok, said) = run(
        "ffmpeg",
        &["-nostdin", "-v", "error", "-i", path, "-f", "null", "-"],
    );
    assert!(ok && said.trim().is_empty(), "{path}: {said}");
    let frames = video_frames(path);
    let expected = (media_s * 25.0).round() as u64;
    assert!(
        frames.abs_diff(expected) <= 1,
        "{path}: {frames} frames decoded in {media_s} s"
    );
}

#[test]
fn a_recording_plays_back_as_vod_hls_and_downloads_from_the_api() {
    use shardcast_protocols::hls::{parse, Playlist, PlaylistType};
    let input = free_port();
    let dir = TempDir::new("recording-vod");
    let script = handler(&dir);
    let rec = dir.0.join("rec");
    let record = format!(
        "{{ path = \"{}/{{stream}}/{{start}}.ts\", rotate = 8 }}",
        rec.display()
    );
    let (server, api, token, _ffmpeg) = start(&dir, input, &record, &script);
    wait_until(
        Duration::from_secs(30),
        || format!("{:?}\n{}", ended(&dir), server.log()),
        || ended(&dir).len() >= 2,
    );
    let files = ended(&dir);
    let name = |f: &Vec<String>| f[1].rsplit('/').next().unwrap().to_owned();
    // The second file is played without its index (made by reading the file).
    std::fs::remove_file(format!("{}.idx", files[1][1])).unwrap();
    for (f, indexed) in [(&files[0], true), (&files[1], false)] {
        let file = name(f);
        let media_s = f[7].parse::<f64>().unwrap() / 1000.0;
        let started_ms = f[5].parse::<i64>().unwrap() * 1000;
        let playlist_url = format!("/vod/cam/{file}/index.m3u8");
        let (code, head, body) = fetch(server.addr, &playlist_url, "");
        assert_eq!(code, 200, "{head}");
        assert_eq!(
            header(&head, "content-type"),
            Some("application/vnd.apple.mpegurl")
        );
        let Ok(Playlist::Media(playlist)) = parse(&body) else {
            panic!("{}", String::from_utf8_lossy(&body));
        };
        assert_eq!(playlist.playlist_type, Some(PlaylistType::Vod));
        assert!(playlist.end_list);
        assert!(playlist.segments.len() >= 2, "{playlist:?}");
        let listed: f64 = playlist
            .segments
            .iter()
            .map(|s| s.duration.as_secs_f64())
            .sum();
        assert!(
            (listed - media_s).abs() <= 0.3,
            "{file}: listed {listed} s, RECORDING_END {media_s} s"
        );
        // Cut at keyframes about 6 s apart; each segment begins with the PAT and a keyframe.
        assert!(
            (5.9..6.5).contains(&playlist.segments[0].duration.as_secs_f64()),
            "{playlist:?}"
        );
        for (n, _) in playlist.segments.iter().enumerate() {
            let (code, _, segment) = fetch(server.addr, &format!("/vod/cam/{file}/{n}.ts"), "");
            assert_eq!(code, 200);
            assert_eq!((segment[0], segment[1] & 0x1F, segment[2]), (0x47, 0, 0));
            assert!(first_picture_is_keyframe(&segment), "{file} {n}");
        }
        let (code, _, _) = fetch(
            server.addr,
            &format!("/vod/cam/{file}/{}.ts", playlist.segments.len()),
            "",
        );
        assert_eq!(code, 404);
        // PROGRAM-DATE-TIME is when ingest received it (the index has it; a file read
        // without one has none).
        let pdt = playlist.segments[0].program_date_time;
        if indexed {
            let pdt = pdt.expect("PROGRAM-DATE-TIME").unix_millis;
            assert!(
                (pdt - started_ms).abs() <= 2_000,
                "PROGRAM-DATE-TIME {pdt}, file started {started_ms}"
            );
        } else {
            assert_eq!(pdt, None);
        }
        // ffmpeg plays it through silently, and ffprobe's duration agrees.
        let (ok, said) = decode(&server.url(&playlist_url), 60);
        assert!(ok && said.trim().is_empty(), "{file}: {said}");
        let probed = duration(&server.url(&playlist_url));
        assert!(
            (probed - media_s).abs() <= 0.5,
            "{file}: ffprobe {probed} s, RECORDING_END {media_s} s"
        );
        let (code, _, info) = fetch(server.addr, &format!("/vod/cam/{file}/info.json"), "");
        assert_eq!(code, 200);
        assert_eq!(json(&info)["state"], "recorded");
        let (code, _, page) = fetch(server.addr, &format!("/vod/cam/{file}.html"), "");
        assert_eq!(code, 200);
        assert!(String::from_utf8_lossy(&page).contains("index.m3u8"));
    }
    // What is not a finished recording of a stream with one is not found.
    let file = name(&files[0]);
    for path in [
        format!("/vod/cam/{file}.part/index.m3u8"),
        format!("/vod/cam/{file}.idx/0.ts"),
        "/vod/cam/..%2Fshardcast.toml/index.m3u8".to_owned(),
        "/vod/cam/19700101-000000.ts/index.m3u8".to_owned(),
        format!("/vod/nope/{file}/index.m3u8"),
    ] {
        assert_eq!(fetch(server.addr, &path, "").0, 404, "{path}");
    }
    // The API lists each file with where to play and download it.
    let (code, listed) = api_call(api, "GET", "/api/v1/streams/cam/recordings", &token, None);
    assert_eq!(code, 200);
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["file"] == file.as_str())
        .unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(entry["vod"], format!("/vod/cam/{file}/index.m3u8"));
    assert_eq!(entry["player"], format!("/vod/cam/{file}.html"));
    // Downloaded whole, and in part.
    let download = entry["download"].as_str().unwrap();
    let on_disk = std::fs::read(&files[0][1]).unwrap();
    let auth = format!("Authorization: Bearer {token}\r\n");
    let (code, head, body) = fetch(api, download, &auth);
    assert_eq!(code, 200, "{head}");
    assert!(body == on_disk, "the download differs from the file");
    assert_eq!(header(&head, "content-type"), Some("video/mp2t"));
    let (code, head, body) = fetch(api, download, &format!("{auth}Range: bytes=188-375\r\n"));
    assert_eq!(code, 206, "{head}");
    assert_eq!(body, &on_disk[188..376]);
    assert_eq!(
        header(&head, "content-range"),
        Some(format!("bytes 188-375/{}", on_disk.len()).as_str())
    );
    let (code, _, _) = fetch(api, download, &format!("{auth}Range: bytes=999999999-\r\n"));
    assert_eq!(code, 416);
    let (code, _, _) = fetch(api, download, "");
    assert_eq!(code, 401);
    let (code, _, _) = fetch(
        api,
        "/api/v1/streams/cam/recordings/..%2Fshardcast.toml",
        &auth,
    );
    assert_eq!(code, 404);
    let (status, log) = server.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{log}");
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
        connection_per_request: false,
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
