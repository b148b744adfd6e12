//! The synthetic stream as written by `shardcast-bench generate`, judged by ffprobe and ffmpeg.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::process::Command;

fn generate(name: &str, args: &[&str]) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("shardcast-gen-{}-{name}.ts", std::process::id()));
    let status = Command::new(env!("CARGO_BIN_EXE_shardcast-bench"))
        .arg("generate")
        .args(args)
        .arg("-o")
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    path
}

fn quiet(program: &str, args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} must be installed (the test command installs ffmpeg): {e}")
        });
    assert!(out.status.success(), "{program} failed");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn ffprobe_and_ffmpeg_accept_the_generator_output_silently() {
    for (name, args) in [
        ("default", vec!["--seconds", "6"]),
        (
            "720p",
            vec![
                "--seconds",
                "4",
                "--width",
                "1280",
                "--height",
                "720",
                "--bitrate",
                "20000000",
                "--keyframe-interval",
                "50",
            ],
        ),
        (
            "odd-size-no-audio",
            vec![
                "--seconds",
                "3",
                "--width",
                "200",
                "--height",
                "110",
                "--no-audio",
                "--fps",
                "30",
            ],
        ),
    ] {
        let path = generate(name, &args);
        let p = path.as_os_str();
        let probe = quiet("ffprobe", &["-v".as_ref(), "error".as_ref(), p]);
        assert_eq!(probe, "", "{name}: ffprobe said something");
        let decode = quiet(
            "ffmpeg",
            &[
                "-nostdin".as_ref(),
                "-v".as_ref(),
                "error".as_ref(),
                "-i".as_ref(),
                p,
                "-f".as_ref(),
                "null".as_ref(),
                "-".as_ref(),
            ],
        );
        assert_eq!(decode, "", "{name}: ffmpeg said something while decoding");
        let streams = quiet(
            "ffprobe",
            &[
                "-v".as_ref(),
                "error".as_ref(),
                "-show_entries".as_ref(),
                "stream=codec_name,width,height".as_ref(),
                "-of".as_ref(),
                "csv=p=0".as_ref(),
                p,
            ],
        );
        std::fs::remove_file(&path).ok();
        assert!(streams.starts_with("h264,"), "{name}: {streams}");
        assert_eq!(
            streams.contains("aac"),
            !name.contains("no-audio"),
            "{name}: {streams}"
        );
    }
}

#[test]
fn refuses_impossible_settings_with_a_reason() {
    let out = Command::new(env!("CARGO_BIN_EXE_shardcast-bench"))
        .args(["generate", "--bitrate", "100000", "-o", "/dev/null"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bitrate 100000 bit/s is too low"),
        "{stderr}"
    );
}
