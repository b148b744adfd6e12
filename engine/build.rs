//! Build script: fetch the player page's hls.js from the npm registry (the version pinned by
//! `player/package-lock.json`) into OUT_DIR, so that the daemon serves it from its own binary
//! and the player page works on a host with no internet. No copy of hls.js is kept in the
//! repository.
//!
//! `SHARDCAST_HLSJS=/path/to/hls.min.js` uses a file instead (offline builds).

// A build script reports failure by panicking, with the message cargo prints.
#![allow(clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let player = manifest.join("../player");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    println!(
        "cargo:rerun-if-changed={}",
        player.join("package.json").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        player.join("package-lock.json").display()
    );
    println!("cargo:rerun-if-env-changed=SHARDCAST_HLSJS");

    let target = out.join("hls.min.js");
    let version = hlsjs_version(&player.join("package-lock.json"));
    if let Ok(path) = std::env::var("SHARDCAST_HLSJS") {
        std::fs::copy(&path, &target)
            .unwrap_or_else(|e| panic!("SHARDCAST_HLSJS={path}: cannot copy it: {e}"));
    } else {
        let work = out.join("player");
        std::fs::create_dir_all(&work).expect("OUT_DIR is writable");
        for file in ["package.json", "package-lock.json"] {
            std::fs::copy(player.join(file), work.join(file))
                .unwrap_or_else(|e| panic!("cannot copy player/{file}: {e}"));
        }
        let installed = work.join("node_modules/hls.js/dist/hls.min.js");
        if !installed.exists() {
            let status = Command::new("npm")
                .args([
                    "ci",
                    "--ignore-scripts",
                    "--no-audit",
                    "--no-fund",
                    "--silent",
                ])
                .current_dir(&work)
                .status();
            match status {
                Ok(s) if s.success() => {}
                other => panic!(
                    "`npm ci` for the player page's hls.js failed ({other:?}). Install npm \
                     (apt-get install npm) and make the npm registry reachable, or build with \
                     SHARDCAST_HLSJS=/path/to/hls.min.js"
                ),
            }
        }
        std::fs::copy(&installed, &target).expect("npm ci installed hls.js");
    }
    println!("cargo:rustc-env=SHARDCAST_HLSJS_VERSION={version}");
}

/// The hls.js version the lock file pins.
fn hlsjs_version(lock: &Path) -> String {
    let text = std::fs::read_to_string(lock).expect("player/package-lock.json exists");
    let at = text
        .find("\"node_modules/hls.js\"")
        .expect("the lock file pins hls.js");
    let rest = &text[at..];
    let v = rest.find("\"version\": \"").expect("a version") + "\"version\": \"".len();
    rest[v..]
        .split('"')
        .next()
        .expect("a quoted version")
        .to_string()
}
