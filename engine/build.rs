//! Build script: fetch the player page's scripts from the npm registry (hls.js and dash.js, the
//! versions pinned by `player/package-lock.json`) into OUT_DIR, so that the daemon serves them
//! from its own binary and the player page works on a host with no internet. No copy of
//! either is kept in the repository.
//!
//! `SHARDCAST_HLSJS=/path/to/hls.min.js` and `SHARDCAST_DASHJS=/path/to/dash.mediaplayer.min.js`
//! use files instead (offline builds; npm is then not run).

// A build script reports failure by panicking, with the message cargo prints.
#![allow(clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A script the page needs: its npm package, the file in it, its name in OUT_DIR, the
/// environment variables that give a file instead and that carry its version.
struct Script {
    package: &'static str,
    file: &'static str,
    out: &'static str,
    override_var: &'static str,
    version_var: &'static str,
}

const SCRIPTS: [Script; 2] = [
    Script {
        package: "hls.js",
        file: "dist/hls.min.js",
        out: "hls.min.js",
        override_var: "SHARDCAST_HLSJS",
        version_var: "SHARDCAST_HLSJS_VERSION",
    },
    Script {
        package: "dashjs",
        file: "dist/modern/umd/dash.mediaplayer.min.js",
        out: "dash.mediaplayer.min.js",
        override_var: "SHARDCAST_DASHJS",
        version_var: "SHARDCAST_DASHJS_VERSION",
    },
];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let player = manifest.join("../player");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    for file in ["package.json", "package-lock.json"] {
        println!("cargo:rerun-if-changed={}", player.join(file).display());
    }
    let lock = std::fs::read_to_string(player.join("package-lock.json"))
        .expect("player/package-lock.json exists");
    let work = out.join("player");
    let mut installed = false;
    for script in &SCRIPTS {
        println!("cargo:rerun-if-env-changed={}", script.override_var);
        let target = out.join(script.out);
        if let Ok(path) = std::env::var(script.override_var) {
            std::fs::copy(&path, &target)
                .unwrap_or_else(|e| panic!("{}={path}: cannot copy it: {e}", script.override_var));
        } else {
            let from = work
                .join("node_modules")
                .join(script.package)
                .join(script.file);
            if !from.exists() && !installed {
                npm_ci(&player, &work);
                installed = true;
            }
            std::fs::copy(&from, &target)
                .unwrap_or_else(|e| panic!("npm ci did not install {}: {e}", from.display()));
        }
        println!(
            "cargo:rustc-env={}={}",
            script.version_var,
            version(&lock, script.package)
        );
    }
}

/// `npm ci` of the player's lock file in `work`.
fn npm_ci(player: &Path, work: &Path) {
    std::fs::create_dir_all(work).expect("OUT_DIR is writable");
    for file in ["package.json", "package-lock.json"] {
        std::fs::copy(player.join(file), work.join(file))
            .unwrap_or_else(|e| panic!("cannot copy player/{file}: {e}"));
    }
    let status = Command::new("npm")
        .args([
            "ci",
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
            "--silent",
        ])
        .current_dir(work)
        .status();
    match status {
        Ok(s) if s.success() => {}
        other => panic!(
            "`npm ci` for the player page's scripts failed ({other:?}). Install npm \
             (apt-get install npm) and make the npm registry reachable, or build with \
             SHARDCAST_HLSJS=/path/to/hls.min.js and \
             SHARDCAST_DASHJS=/path/to/dash.mediaplayer.min.js"
        ),
    }
}

/// The version of `package` the lock file pins.
fn version(lock: &str, package: &str) -> String {
    let key = format!("\"node_modules/{package}\"");
    let at = lock
        .find(&key)
        .unwrap_or_else(|| panic!("the lock file pins {package}"));
    let rest = &lock[at..];
    let v = rest.find("\"version\": \"").expect("a version") + "\"version\": \"".len();
    rest[v..]
        .split('"')
        .next()
        .expect("a quoted version")
        .to_string()
}
