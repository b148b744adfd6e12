//! `shardcast inspect` on the protocols fixtures.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::process::Command;

fn inspect(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shardcast-under-test"))
        .arg("inspect")
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn fixture(name: &str) -> String {
    format!(
        "{}/../../protocols/testdata/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn reports_streams_gaps_and_segments() {
    let (ok, text) = inspect(&[&fixture("damaged.ts")]);
    assert!(ok, "{text}");
    let gaps = std::fs::read_to_string(fixture("damaged.gaps")).unwrap();
    assert!(
        text.contains(&format!("continuity-gaps {}", gaps.trim())),
        "{text}"
    );
    assert!(
        text.contains("H264") && text.contains("frames     100"),
        "{text}"
    );
    assert!(text.contains("segments: 2"), "{text}");
}

#[test]
fn follows_one_program_of_an_mpts() {
    let (ok, text) = inspect(&[&fixture("mpts.ts"), "--program", "2"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("pid 0x0103") && !text.contains("pid 0x0100"),
        "{text}"
    );
    let (ok, text) = inspect(&[&fixture("mpts.ts"), "--program", "9"]);
    assert!(ok);
    assert!(text.contains("program 9 is not in the PAT"), "{text}");
}

#[test]
fn bad_input_gets_a_clear_error() {
    let (ok, text) = inspect(&["/nonexistent/file.ts"]);
    assert!(!ok);
    assert!(text.contains("cannot open /nonexistent/file.ts"), "{text}");
    let (ok, text) = inspect(&[&fixture("mpts.ts"), "--segment", "0"]);
    assert!(!ok);
    assert!(text.contains("out of range"), "{text}");
}
