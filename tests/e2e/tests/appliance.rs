//! The appliance path: the Debian package installed by dpkg into a root the test owns (maintainer
//! scripts included), the unit verified by systemd-analyze there, the packaged default
//! configuration served, `tune check` against `sysctl`, `tune apply` into a root, SIGHUP
//! re-reading the configuration, and `capacity` against hand calculations.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod support;

use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::*;

const BINARY: &str = env!("CARGO_BIN_EXE_shardcast-under-test");

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn output(program: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(program).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_package_installs_into_a_root_where_the_unit_finds_everything() {
    let out = Command::new(workspace().join("packaging/build-deb.sh"))
        .env("SHARDCAST_BINARY", BINARY)
        .env("DEB_COMPRESSION", "gzip")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deb = workspace().join(String::from_utf8_lossy(&out.stdout).trim());

    // A root with an empty dpkg database; dpkg runs the maintainer scripts outside a chroot
    // with DPKG_ROOT set, as it does for bootstrapping tools.
    let root = TempDir::new("package-root");
    let r = root.0.to_str().unwrap();
    for dir in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "etc"] {
        std::fs::create_dir_all(root.0.join(dir)).unwrap();
    }
    std::fs::write(root.0.join("var/lib/dpkg/status"), "").unwrap();
    let install = |args: &[&str]| {
        let mut all = vec![
            "--root",
            r,
            "--force-script-chrootless",
            "--force-depends",
            "--log=/dev/null",
        ];
        all.extend_from_slice(args);
        let (ok, stdout, stderr) = output("dpkg", &all);
        assert!(ok, "dpkg {args:?}: {stdout}{stderr}");
    };
    install(&["-i", deb.to_str().unwrap()]);

    // The postinst made the user, gave it the configuration directory and enabled the unit.
    let passwd = std::fs::read_to_string(root.0.join("etc/passwd")).unwrap();
    let user = passwd
        .lines()
        .find(|l| l.starts_with("shardcast:"))
        .expect("no shardcast user in the root's passwd");
    let uid: u32 = user.split(':').nth(2).unwrap().parse().unwrap();
    assert!(
        user.ends_with(":/var/lib/shardcast:/usr/sbin/nologin"),
        "{user}"
    );
    use std::os::unix::fs::MetadataExt;
    let config = root.0.join("etc/shardcast/shardcast.toml");
    assert_eq!(std::fs::metadata(&config).unwrap().uid(), uid);
    assert_eq!(
        std::fs::metadata(root.0.join("etc/shardcast"))
            .unwrap()
            .mode()
            & 0o777,
        0o750
    );
    let wants = root
        .0
        .join("etc/systemd/system/multi-user.target.wants/shardcast.service");
    assert_eq!(
        std::fs::read_link(&wants).unwrap(),
        Path::new("/lib/systemd/system/shardcast.service")
    );

    // Everything the unit names is where it says.
    let unit_path = root.0.join("lib/systemd/system/shardcast.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    let mut words = exec.split_whitespace();
    let program = words.next().unwrap();
    assert_eq!(program, "/usr/bin/shardcast");
    let (ok, stdout, _) = output(
        root.0
            .join(program.trim_start_matches('/'))
            .to_str()
            .unwrap(),
        &["--version"],
    );
    assert!(ok && stdout.starts_with("shardcast "), "{stdout}");
    let config_arg = words.skip_while(|w| *w != "--config").nth(1).unwrap();
    assert_eq!(config_arg, "/etc/shardcast/shardcast.toml");
    assert!(unit.contains("ConfigurationDirectory=shardcast"));
    assert!(unit.contains("User=shardcast"));
    for profile in ["general", "many-viewers"] {
        assert!(root
            .0
            .join(format!("usr/share/shardcast/tuning/{profile}.conf"))
            .exists());
    }

    // systemd-analyze verifies the installed unit against that root; it needs the host's own
    // units (targets) there too.
    let units = root.0.join("usr/lib/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    let (ok, _, stderr) = output(
        "cp",
        &[
            "-a",
            "--no-clobber",
            "/lib/systemd/system/.",
            units.to_str().unwrap(),
        ],
    );
    assert!(ok, "{stderr}");
    std::fs::create_dir_all(root.0.join("bin")).unwrap();
    std::fs::copy("/bin/kill", root.0.join("bin/kill")).unwrap();
    let (ok, stdout, stderr) = output(
        "systemd-analyze",
        &[
            "verify",
            &format!("--root={r}"),
            "/lib/systemd/system/shardcast.service",
        ],
    );
    assert!(
        ok && stderr.trim().is_empty(),
        "systemd-analyze verify: {stdout}{stderr}"
    );
    let (_, security, _) = output(
        "systemd-analyze",
        &[
            "security",
            "--offline=yes",
            workspace()
                .join("systemd/shardcast.service")
                .to_str()
                .unwrap(),
        ],
    );
    assert!(
        security.contains("Overall exposure level for shardcast.service: 1.")
            || security.contains("Overall exposure level for shardcast.service: 0."),
        "{security}"
    );

    // The packaged default configuration serves the demo stream.
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let (status, _, body) = fetch(server.addr, "/", "");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("demo"));
    server.stop(Signal::SIGTERM);

    // Removal keeps the edited configuration (a conffile); purge takes it.
    std::fs::write(&config, "# edited\n").unwrap();
    install(&["-r", "shardcast"]);
    assert!(!root.0.join("usr/bin/shardcast").exists());
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "# edited\n");
    install(&["--purge", "shardcast"]);
    assert!(!config.exists());
}

/// `tune check`'s rows: key → (status, profile value, live value).
fn check_rows(text: &str) -> Vec<(String, String, String)> {
    text.lines()
        .skip_while(|l| !l.starts_with("key "))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split("  ").filter(|c| !c.trim().is_empty()).collect();
            (
                cols[0].trim().to_string(),
                cols[1].trim().to_string(),
                cols[3].trim().to_string(),
            )
        })
        .collect()
}

#[test]
fn tune_check_reports_what_sysctl_reports() {
    for profile in ["general", "many-viewers"] {
        let (ok, stdout, stderr) = output(BINARY, &["tune", "check", "--profile", profile]);
        assert!(ok, "{stderr}");
        let rows = check_rows(&stdout);
        let text =
            std::fs::read_to_string(workspace().join(format!("tuning/{profile}.conf"))).unwrap();
        let keys: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains('='))
            .map(|l| l.split('=').next().unwrap().trim())
            .collect();
        assert_eq!(rows.len(), keys.len(), "{stdout}");
        for (key, status, live) in &rows {
            let (ok, sysctl, _) = if key.starts_with("/sys/") {
                // The kernel lists the choices with the chosen one in brackets.
                match std::fs::read_to_string(key) {
                    Ok(text) => {
                        let chosen = text
                            .split_once('[')
                            .and_then(|(_, rest)| rest.split_once(']'))
                            .map_or(text.as_str(), |(word, _)| word)
                            .to_string();
                        (true, chosen, String::new())
                    }
                    Err(_) => (false, String::new(), String::new()),
                }
            } else {
                output("sysctl", &["-n", key])
            };
            if !ok {
                assert_eq!(status, "missing", "{key}");
                continue;
            }
            let sysctl = sysctl.split_whitespace().collect::<Vec<_>>().join(" ");
            assert_eq!(live, &sysctl, "{key}");
            let wanted = text
                .lines()
                .find(|l| l.split('=').next().map(str::trim) == Some(key.as_str()))
                .and_then(|l| {
                    l.split_once('=')
                        .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
                })
                .unwrap();
            if sysctl == wanted {
                assert_eq!(status, "ok", "{key}");
            }
        }
        assert!(stdout.contains("network interfaces"), "{stdout}");
        // Whether the kernel does TLS itself, as its list of upper-layer protocols says.
        let (_, ulps, _) = output("sysctl", &["-n", "net.ipv4.tcp_available_ulp"]);
        let ktls = ulps.split_whitespace().any(|u| u == "tls");
        assert_eq!(stdout.contains("kTLS: available"), ktls, "{stdout}");
        assert!(stdout.contains("kTLS: "), "{stdout}");
    }
    // The profile names a value the running kernel must be compared numerically for.
    let (_, stdout, _) = output(BINARY, &["tune", "check"]);
    let rmem: u64 = output("sysctl", &["-n", "net.core.rmem_max"])
        .1
        .trim()
        .parse()
        .unwrap();
    let row = check_rows(&stdout)
        .into_iter()
        .find(|r| r.0 == "net.core.rmem_max")
        .unwrap();
    assert_eq!(row.1, if rmem >= 16 << 20 { "ok" } else { "differs" });
}

#[test]
fn tune_apply_into_a_root_writes_the_profile() {
    let root = TempDir::new("tune-root");
    let (ok, stdout, stderr) = output(
        BINARY,
        &[
            "tune",
            "apply",
            "--profile",
            "many-viewers",
            "--root",
            root.0.to_str().unwrap(),
        ],
    );
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("not applied to the running kernel"),
        "{stdout}"
    );
    let written = std::fs::read_to_string(root.0.join("etc/sysctl.d/60-shardcast.conf")).unwrap();
    let profile = std::fs::read_to_string(workspace().join("tuning/many-viewers.conf")).unwrap();
    assert!(written.starts_with("# Written by `shardcast tune apply --profile many-viewers`"));
    // The profile's settings, in order: sysctls in sysctl.d, those under /sys in tmpfiles.d
    // (systemd writes them at boot).
    let settings = |text: &str| -> Vec<(String, String)> {
        text.lines()
            .filter(|l| !l.starts_with('#') && l.contains('='))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| {
                (
                    k.trim().to_string(),
                    v.split_whitespace().collect::<Vec<_>>().join(" "),
                )
            })
            .collect()
    };
    let (sys, sysctls): (Vec<_>, Vec<_>) = settings(&profile)
        .into_iter()
        .partition(|(k, _)| k.starts_with("/sys/"));
    assert_eq!(settings(&written), sysctls);
    assert!(!sys.is_empty());
    let tmpfiles =
        std::fs::read_to_string(root.0.join("etc/tmpfiles.d/60-shardcast.conf")).unwrap();
    let lines: Vec<&str> = tmpfiles
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert_eq!(lines.len(), sys.len(), "{tmpfiles}");
    for ((path, value), line) in sys.iter().zip(&lines) {
        assert_eq!(*line, format!("w {path} - - - - {value}"));
        assert!(std::path::Path::new(path).exists(), "{path}");
    }
    // systemd-tmpfiles reads the file as written and writes each value (into a root of
    // stand-in files: `w` writes a file that exists, as under /sys).
    if output("systemd-tmpfiles", &["--help"]).0 {
        let stand_in = TempDir::new("tmpfiles-root");
        for (path, _) in &sys {
            let file = stand_in.0.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, "").unwrap();
        }
        let conf = root.0.join("etc/tmpfiles.d/60-shardcast.conf");
        let (ok, _, stderr) = output(
            "systemd-tmpfiles",
            &[
                "--create",
                &format!("--root={}", stand_in.0.display()),
                conf.to_str().unwrap(),
            ],
        );
        assert!(ok, "{stderr}");
        for (path, value) in &sys {
            let file = stand_in.0.join(path.trim_start_matches('/'));
            assert_eq!(std::fs::read_to_string(file).unwrap().trim(), value);
        }
    }
    // Every key names a setting this kernel has.
    for line in written
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
    {
        let key = line.split('=').next().unwrap().trim();
        assert!(output("sysctl", &["-n", key]).0, "{key}");
    }

    let (ok, _, stderr) = output(BINARY, &["tune", "apply", "--profile", "fast"]);
    assert!(
        !ok && stderr.contains("no tuning profile \"fast\""),
        "{stderr}"
    );
    // Applying to the live system without root is refused plainly.
    let (ok, _, stderr) = output(
        "setpriv",
        &[
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BINARY,
            "tune",
            "apply",
        ],
    );
    assert!(!ok && stderr.contains("it needs root"), "{stderr}");
}

#[test]
fn sighup_rereads_the_configuration_and_refuses_a_bad_one() {
    let dir = TempDir::new("sighup");
    let path = dir.0.join("shardcast.toml");
    let good = "[[stream]]\nname = \"demo\"\nsource = \"demo:\"\n";
    std::fs::write(&path, good).unwrap();
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    let pid = nix::unistd::Pid::from_raw(server.child.id() as i32);
    // Each SIGHUP is answered in the log before the file changes again: two signals that
    // come before the server's signal loop runs (it starts after the listener) are one.
    let hup_and_wait = |answer: &str| {
        nix::sys::signal::kill(pid, Signal::SIGHUP).unwrap();
        wait_until(
            std::time::Duration::from_secs(10),
            || format!("no {answer:?} in the log:\n{}", server.log()),
            || server.log().contains(answer),
        );
        let (status, _, _) = fetch(server.addr, "/", "");
        assert_eq!(status, 200, "the server must keep serving across SIGHUP");
    };
    hup_and_wait("re-read, unchanged");
    std::fs::write(
        &path,
        "[[stream]]\nname = \"demo\"\nsource = \"rtsp://x\"\n",
    )
    .unwrap();
    hup_and_wait("refused (line 3");
    std::fs::write(&path, format!("{good}window = 20\n")).unwrap();
    hup_and_wait("stream demo changed");
    let (status, log) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "{log}");
    let unchanged = log.find("re-read, unchanged").expect(&log);
    let refused = log.find("refused (line 3").expect(&log);
    let changed = log.find("stream demo changed").expect(&log);
    assert!(unchanged < refused && refused < changed, "{log}");
    assert!(log.contains("the running configuration stays"));
}

/// The number printed after `label` up to the unit.
fn figure(text: &str, label: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} in\n{text}"));
    line[line.find(label).unwrap() + label.len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn capacity_matches_hand_calculations() {
    // Case 1: 10000 HLS players of one 4 Mbit/s stream.
    let (ok, out, err) = output(
        BINARY,
        &["capacity", "--viewers", "10000", "--bitrate", "4M"],
    );
    assert!(ok, "{err}");
    // Out: 10000 x 4 Mbit/s = 40 Gbit/s; on the wire x 1538/1448 = 42.486 Gbit/s.
    assert!(
        out.contains("40.00 Gbit/s payload, 42.49 Gbit/s on the wire"),
        "{out}"
    );
    assert!(out.contains("a 100 Gbit/s (42% load) link"), "{out}");
    // Viewers: 10000 x 0.5 MB/s = 4.6566 GiB/s x 0.397 s/GiB = 1.849 cores.
    assert_eq!(figure(&out, "viewers:"), 1.85);
    // Ingest (on the tick, HLS players only): 0.76 ms/s per 2.5 Mbit/s channel, at 4 Mbit/s:
    // 1.216 ms/s = 0.001 cores.
    assert_eq!(figure(&out, "ingest + segmenting:"), 0.00);
    assert!(out.contains("(1.2 ms per second per stream)"), "{out}");
    // Buffers: (6 + 1) x 2 s + 10 s grace + 10 s window = 34 s x 0.5 MB/s = 17 MB = 16.2 MiB.
    assert_eq!(figure(&out, "stream buffers:"), 16.2);
    // Viewers: 10000 x 1.5 KiB = 14.65 MiB; total 30 + 16.21 + 14.65 = 60.9 MiB.
    assert!(out.contains("total resident:      60.9 MiB"), "{out}");
    // MistServer: 3.4 points per viewer = 34000; 50 s x 0.5 MB/s = 25 MB = 23.8 MiB.
    assert!(out.contains("34000 PassMark"), "{out}");
    assert!(out.contains("23.8 MiB (50 s default live buffer"), "{out}");

    // Case 2: 2000 HTTP-TS viewers over 8 streams of 2.5 Mbit/s, 24 h of recording each.
    let (ok, out, err) = output(
        BINARY,
        &[
            "capacity",
            "--viewers",
            "2000",
            "--streams",
            "8",
            "--bitrate",
            "2500k",
            "--protocol",
            "ts",
            "--record-hours",
            "24",
        ],
    );
    assert!(ok, "{err}");
    // Out: 2000 x 2.5 Mbit/s = 5 Gbit/s payload, 5.311 on the wire: a 10 Gbit/s link at 53%.
    assert!(
        out.contains("5.00 Gbit/s payload, 5.31 Gbit/s on the wire; a 10 Gbit/s (53% load)"),
        "{out}"
    );
    // In: 8 x 2.5 Mbit/s x 1382/1316 = 21.0 Mbit/s.
    assert!(out.contains("in from sources:     21.0 Mbit/s"), "{out}");
    // Viewers: 2000 x 312500 B/s = 0.58208 GiB/s x 0.933 s/GiB = 0.543 cores.
    assert_eq!(figure(&out, "viewers:"), 0.54);
    // Ingest (read as each datagram comes, for progressive viewers): 8 x 1.65/2.5 x 2.5 ms/s
    // = 13.2 ms/s = 0.013 cores.
    assert_eq!(figure(&out, "ingest + segmenting:"), 0.01);
    assert!(out.contains("(1.6 ms per second per stream)"), "{out}");
    // Buffers: 8 x 34 s x 312500 B/s = 85 MB = 81.06 MiB; viewers 2000 x 5.7 KiB = 11.13 MiB;
    // total 30 + 81.06 + 11.13 = 122.2 MiB.
    assert_eq!(figure(&out, "stream buffers:"), 81.1);
    assert!(out.contains("total resident:      122.2 MiB"), "{out}");
    // Storage: 8 x 312500 B/s x 86400 s = 216 GB = 201.17 GiB.
    assert_eq!(figure(&out, "recordings:"), 201.17);
    assert!(out.contains("6800 PassMark"), "{out}");

    let (ok, _, err) = output(
        BINARY,
        &["capacity", "--viewers", "10", "--bitrate", "fast"],
    );
    assert!(!ok && err.contains("is not a bitrate"), "{err}");
}

#[test]
fn startup_names_host_settings_below_the_profile() {
    let dir = TempDir::new("startup");
    let path = dir.0.join("shardcast.toml");
    let port = free_port();
    std::fs::write(
        &path,
        format!("[[stream]]\nname = \"cam\"\nsource = \"udp://127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    let (_, log) = server.stop(Signal::SIGTERM);
    let rmem: u64 = output("sysctl", &["-n", "net.core.rmem_max"])
        .1
        .trim()
        .parse()
        .unwrap();
    let warned = log.contains("net.core.rmem_max is below the tuning profile's");
    assert_eq!(warned, rmem < 16 << 20, "rmem_max {rmem}: {log}");
    // Segments in 4 KiB pages are named too, as the kernel's setting says.
    let shmem = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/shmem_enabled")
        .unwrap_or_default();
    let warned = log.contains("HLS segments are kept in 4 KiB pages");
    assert_eq!(
        warned,
        shmem.contains("[never]"),
        "shmem_enabled {shmem}: {log}"
    );
}
