//! `shardcast tune`: kernel tuning profiles for dedicated streaming hosts.
//!
//! The profiles are the sysctl.d files under `tuning/`, built into the binary so an installed
//! server needs nothing else. `tune check` prints each setting of a profile against the
//! running kernel (ok / differs / missing) and the network interface facts worth knowing
//! (IRQ affinity against the shard CPUs, offloads, MTU, rings); `tune apply` writes the
//! profile to `/etc/sysctl.d/` atomically and applies it to the running kernel.
//!
//! A profile's keys are sysctls (`net.core.rmem_max`), or files under `/sys` for the kernel
//! settings sysctl.d cannot hold (`/sys/kernel/mm/transparent_hugepage/shmem_enabled`): those
//! `tune apply` writes to a tmpfiles.d file instead, which systemd applies at boot.
//!
//! What it does not do: tune NICs (rings, IRQ affinity, offloads are reported, not changed,
//! since the right values depend on the rest of the host).

use crate::host;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The profiles shipped with shardcast: (name, sysctl.d text).
pub const PROFILES: [(&str, &str); 2] = [
    ("general", include_str!("../../tuning/general.conf")),
    (
        "many-viewers",
        include_str!("../../tuning/many-viewers.conf"),
    ),
];

/// Where `tune apply` writes the profile's sysctls, under the root.
pub const SYSCTL_FILE: &str = "etc/sysctl.d/60-shardcast.conf";

/// Where `tune apply` writes the profile's `/sys` settings, under the root: systemd-tmpfiles
/// writes each at boot (`w` lines).
pub const TMPFILES_FILE: &str = "etc/tmpfiles.d/60-shardcast.conf";

/// One setting of a profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    /// The sysctl key (`net.core.rmem_max`).
    pub key: String,
    /// The profile's value, whitespace normalised.
    pub value: String,
    /// The comment above it: why it is there.
    pub why: String,
}

impl Setting {
    /// A file under `/sys`, not a sysctl.
    pub fn is_sysfs(&self) -> bool {
        is_sysfs(&self.key)
    }

    /// The running kernel's value under `root`; `None` when the kernel has no such setting.
    pub fn live(&self, root: &Path) -> Option<String> {
        if self.is_sysfs() {
            host::sysfs(root, &self.key)
        } else {
            host::sysctl(root, &self.key)
        }
    }

    /// The file that holds the setting under `root`.
    fn path(&self, root: &Path) -> PathBuf {
        if self.is_sysfs() {
            host::sysfs_path(root, &self.key)
        } else {
            host::sysctl_path(root, &self.key)
        }
    }
}

fn is_sysfs(key: &str) -> bool {
    key.starts_with("/sys/")
}

/// Why a profile was not checked or applied.
#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    /// No profile has that name.
    #[error("no tuning profile {name:?} (there are: {})", PROFILES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "))]
    NoProfile {
        /// The name asked for.
        name: String,
    },
    /// A line of a profile is not `key = value`.
    #[error("line {0}: expected `key = value`")]
    Syntax(usize),
    /// A key is neither a sysctl nor a plain path under `/sys`.
    #[error("line {0}: a key is a sysctl (net.core.rmem_max) or a path under /sys/ without `..`")]
    Key(usize),
    /// A paragraph of a profile mixes sysctls and `/sys` settings, which go to different files.
    #[error("line {0}: a paragraph holds sysctls or /sys settings, not both")]
    Mixed(usize),
    /// Applying to the running system needs root.
    #[error("tune apply writes /etc/sysctl.d/ and the running kernel's settings: it needs root (sudo shardcast tune apply)")]
    NotRoot,
    /// The sysctl.d file cannot be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A profile by name.
pub fn profile(name: &str) -> Result<&'static str, TuneError> {
    PROFILES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
        .ok_or_else(|| TuneError::NoProfile {
            name: name.to_owned(),
        })
}

/// The settings of a profile in sysctl.d syntax, each with the comment block above it.
pub fn parse(text: &str) -> Result<Vec<Setting>, TuneError> {
    let mut out = Vec::new();
    let mut why = Vec::new();
    // Whether the paragraph so far holds `/sys` settings (`None`: no setting yet).
    let mut paragraph_sysfs = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.trim();
            if !comment.starts_with("---") {
                why.push(comment.to_string());
            }
            continue;
        }
        if line.is_empty() {
            why.clear();
            paragraph_sysfs = None;
            continue;
        }
        let (key, value) = line.split_once('=').ok_or(TuneError::Syntax(n + 1))?;
        let (key, value) = (key.trim(), host::normalise(value));
        if key.is_empty() || value.is_empty() {
            return Err(TuneError::Syntax(n + 1));
        }
        let plain = |c: char| c.is_ascii_alphanumeric() || "._-/".contains(c);
        if !key.chars().all(plain)
            || (key.contains('/') && !is_sysfs(key))
            || key.split('/').any(|part| part == "..")
        {
            return Err(TuneError::Key(n + 1));
        }
        if *paragraph_sysfs.get_or_insert(is_sysfs(key)) != is_sysfs(key) {
            return Err(TuneError::Mixed(n + 1));
        }
        out.push(Setting {
            key: key.to_string(),
            value,
            why: why.join(" "),
        });
    }
    Ok(out)
}

/// How a live value compares with the profile's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Equal, or for a limit, at least the profile's value.
    Ok,
    /// Set otherwise.
    Differs,
    /// The kernel has no such setting (a module not loaded, an older kernel).
    Missing,
}

/// Limits where a larger live value serves as well as the profile's.
fn larger_is_fine(key: &str) -> bool {
    [
        "net.core.rmem_max",
        "net.core.wmem_max",
        "net.core.netdev_max_backlog",
        "net.core.netdev_budget",
        "net.core.somaxconn",
        "net.ipv4.tcp_max_syn_backlog",
        "net.ipv4.igmp_max_memberships",
        "net.ipv4.igmp_max_msf",
        "fs.nr_open",
        "fs.file-max",
    ]
    .contains(&key)
}

/// Compare a live value with a profile setting.
pub fn compare(setting: &Setting, live: Option<&str>) -> Status {
    let Some(live) = live else {
        return Status::Missing;
    };
    if live == setting.value {
        return Status::Ok;
    }
    if larger_is_fine(&setting.key) {
        if let (Ok(l), Ok(p)) = (live.parse::<u64>(), setting.value.parse::<u64>()) {
            if l >= p {
                return Status::Ok;
            }
        }
    }
    Status::Differs
}

/// The `tune check` report: the table of settings, then the interfaces. Returns the text and
/// whether every setting is ok.
pub fn check(
    root: &Path,
    profile_name: &str,
    shard_cpus: &[usize],
) -> Result<(String, bool), TuneError> {
    let settings = parse(profile(profile_name)?)?;
    let mut out = String::new();
    let width = settings.iter().map(|s| s.key.len()).max().unwrap_or(0);
    let _ = writeln!(out, "profile {profile_name}: {} settings", settings.len());
    let _ = writeln!(
        out,
        "{:<width$}  {:<8}  {:<24}  live",
        "key", "status", "profile"
    );
    let mut all_ok = true;
    for s in &settings {
        let live = s.live(root);
        let status = compare(s, live.as_deref());
        all_ok &= status == Status::Ok;
        let mut note = String::new();
        if s.key == "net.ipv4.tcp_congestion_control" && status == Status::Differs {
            let available =
                host::sysctl(root, "net.ipv4.tcp_available_congestion_control").unwrap_or_default();
            if !available.split(' ').any(|a| a == s.value) {
                note = format!(" ({} is not loaded: modprobe tcp_{})", s.value, s.value);
            }
        }
        let word = match status {
            Status::Ok => "ok",
            Status::Differs => "differs",
            Status::Missing => "missing",
        };
        let _ = writeln!(
            out,
            "{:<width$}  {word:<8}  {:<24}  {}{note}",
            s.key,
            s.value,
            live.as_deref().unwrap_or("-")
        );
    }
    out.push('\n');
    out.push_str(&ktls_report(root));
    out.push('\n');
    out.push_str(&nic_report(root, shard_cpus));
    Ok((out, all_ok))
}

/// Whether the kernel can do TLS record encryption itself (kTLS): the `tls` upper-layer
/// protocol is listed in `net.ipv4.tcp_available_ulp` once its module is loaded (or built
/// in). Otherwise, whether the module is installed and only needs loading.
pub fn ktls_report(root: &Path) -> String {
    let ulps = host::sysctl(root, "net.ipv4.tcp_available_ulp").unwrap_or_default();
    if ulps.split(' ').any(|u| u == "tls") {
        return "kTLS: available (net.ipv4.tcp_available_ulp lists tls)\n".to_owned();
    }
    let release = host::sysctl(root, "kernel.osrelease").unwrap_or_default();
    let dir = root
        .join("lib/modules")
        .join(&release)
        .join("kernel/net/tls");
    let installed = ["tls.ko", "tls.ko.xz", "tls.ko.zst", "tls.ko.gz"]
        .iter()
        .any(|name| dir.join(name).exists());
    if !release.is_empty() && installed {
        "kTLS: not loaded (the tls module is installed: modprobe tls)\n".to_owned()
    } else {
        format!("kTLS: not available (kernel {release} has no tls module: CONFIG_TLS is off)\n")
    }
}

/// What is worth knowing about each interface for a streaming host.
pub fn nic_report(root: &Path, shard_cpus: &[usize]) -> String {
    let nics = host::nics(root);
    let mut out = String::new();
    if nics.is_empty() {
        out.push_str("network interfaces: none readable under /sys/class/net\n");
        return out;
    }
    let overlaps = host::irq_overlaps(root, &nics, shard_cpus);
    let _ = writeln!(out, "network interfaces (shard CPUs {shard_cpus:?}):");
    for nic in &nics {
        let speed = nic
            .speed_mbps
            .map_or("speed unknown".to_string(), |s| format!("{s} Mbit/s"));
        let _ = writeln!(
            out,
            "  {}: {}, {}, MTU {}, {}, {} rx / {} tx queues, driver {}, rp_filter {}",
            nic.name,
            if nic.up { "up" } else { "down" },
            if nic.multicast {
                "multicast"
            } else {
                "no multicast"
            },
            nic.mtu.map_or("?".into(), |m| m.to_string()),
            speed,
            nic.queues.0,
            nic.queues.1,
            nic.driver.as_deref().unwrap_or("none (virtual)"),
            nic.rp_filter.as_deref().unwrap_or("?"),
        );
        if nic.irqs.is_empty() {
            let _ = writeln!(out, "    IRQs: none found (virtual, or polled by its host)");
        }
        for irq in &nic.irqs {
            let cpus = irq
                .cpus
                .as_ref()
                .map_or("unreadable".to_string(), |c| format!("{c:?}"));
            let shared = overlaps
                .iter()
                .find(|o| o.nic == nic.name && o.irq == irq.number)
                .map_or(String::new(), |o| {
                    format!(" - shares a core with shard CPU(s) {:?}", o.shard_cpus)
                });
            let _ = writeln!(out, "    IRQ {} on CPUs {cpus}{shared}", irq.number);
        }
        match host::ethtool(&nic.name) {
            Some(facts) => {
                let offloads: Vec<String> = facts
                    .offloads
                    .iter()
                    .map(|(k, on)| format!("{k} {}", if *on { "on" } else { "off" }))
                    .collect();
                let _ = writeln!(out, "    offloads: {}", offloads.join(", "));
                let ring = |r: Option<host::Ring>| {
                    r.map_or("?".to_string(), |(c, m)| format!("{c} of {m}"))
                };
                let _ = writeln!(
                    out,
                    "    rings: rx {}, tx {}",
                    ring(facts.rx_ring),
                    ring(facts.tx_ring)
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "    offloads and rings: not readable (install ethtool, or the driver does not say)"
                );
            }
        }
    }
    if !overlaps.is_empty() {
        out.push_str(
            "  NIC interrupts share cores with shards: softirq work then competes with those \
             shards' loops. Give the IRQs other CPUs (/proc/irq/N/smp_affinity_list) or list \
             other CPUs in [server] cpus.\n",
        );
    }
    out
}

/// A profile's text as the two files `tune apply` writes: the paragraphs of sysctls (for
/// sysctl.d, each line trimmed and blank lines inside a paragraph dropped) and those of `/sys`
/// settings, as tmpfiles.d `w` lines under their comments. [`parse`] has refused paragraphs
/// that mix the two.
pub fn split(text: &str) -> (String, String) {
    let paragraphs: Vec<&str> = text.split("\n\n").collect();
    // Whether a paragraph's settings are `/sys` ones; `None` for one without settings (a
    // section's heading), which goes where the next paragraph with settings goes.
    let kind = |p: &str| {
        p.lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .map(is_sysfs)
    };
    let (mut sysctl, mut tmpfiles) = (String::new(), String::new());
    for (i, paragraph) in paragraphs.iter().enumerate() {
        let sysfs = paragraphs[i..]
            .iter()
            .find_map(|p| kind(p))
            .unwrap_or(false);
        let out = if sysfs { &mut tmpfiles } else { &mut sysctl };
        if !out.is_empty() {
            out.push('\n');
        }
        for line in paragraph.lines().map(str::trim).filter(|l| !l.is_empty()) {
            match line.split_once('=') {
                Some((key, value)) if sysfs && !line.starts_with('#') => {
                    let _ = writeln!(out, "w {} - - - - {}", key.trim(), host::normalise(value));
                }
                _ => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
    }
    (sysctl, tmpfiles)
}

/// Write a profile under `root` atomically (its sysctls to `root/etc/sysctl.d/60-shardcast.conf`,
/// its `/sys` settings to `root/etc/tmpfiles.d/60-shardcast.conf`) and, when `root` is `/`,
/// apply it to the running kernel. Returns a report, one line per setting.
pub fn apply(root: &Path, profile_name: &str) -> Result<String, TuneError> {
    let text = profile(profile_name)?;
    let settings = parse(text)?;
    let live_system = root == Path::new("/");
    if live_system && !nix::unistd::geteuid().is_root() {
        return Err(TuneError::NotRoot);
    }
    let (sysctl, tmpfiles) = split(text);
    let mut report = String::new();
    for (file, body, undo) in [
        (SYSCTL_FILE, sysctl, "run `sysctl --system`"),
        (TMPFILES_FILE, tmpfiles, "write the kernel's default back"),
    ] {
        let path: PathBuf = root.join(file);
        if body.is_empty() {
            continue;
        }
        let content = format!(
            "# Written by `shardcast tune apply --profile {profile_name}` (shardcast {}).\n\
             # Remove this file and reboot, or {undo}, to return to the defaults.\n\n{body}",
            env!("CARGO_PKG_VERSION")
        );
        crate::files::write_atomically(&path, content.as_bytes()).map_err(|source| {
            TuneError::Write {
                path: path.clone(),
                source,
            }
        })?;
        let _ = writeln!(report, "wrote {}", path.display());
    }
    if !live_system {
        report.push_str("not applied to the running kernel (a root other than / was given)\n");
        return Ok(report);
    }
    let mut failures = 0;
    for s in &settings {
        match std::fs::write(s.path(root), &s.value) {
            Ok(()) => {
                let _ = writeln!(report, "{} = {}", s.key, s.value);
            }
            Err(e) => {
                failures += 1;
                let _ = writeln!(report, "{} = {}: not applied ({e})", s.key, s.value);
            }
        }
    }
    if failures > 0 {
        let _ = writeln!(
            report,
            "{failures} setting(s) not applied now; the file stays and applies at boot"
        );
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ktls_is_reported_from_the_kernels_ulps_and_modules() {
        let root = std::env::temp_dir().join(format!("shardcast-ktls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let write = |path: &str, text: &str| {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write("proc/sys/kernel/osrelease", "6.18.0\n");
        write("proc/sys/net/ipv4/tcp_available_ulp", "mptcp\n");
        assert!(ktls_report(&root).contains("not available (kernel 6.18.0"));
        write("lib/modules/6.18.0/kernel/net/tls/tls.ko.xz", "");
        assert!(ktls_report(&root).contains("modprobe tls"));
        write("proc/sys/net/ipv4/tcp_available_ulp", "mptcp tls\n");
        assert!(ktls_report(&root).starts_with("kTLS: available"));
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn every_shipped_profile_parses_and_explains_every_value() {
        for (name, text) in PROFILES {
            let settings = parse(text).unwrap();
            assert!(settings.len() > 10, "{name}");
            for s in &settings {
                assert!(!s.why.is_empty(), "{name}: {} has no reason", s.key);
            }
        }
    }

    #[test]
    fn limits_may_be_larger_other_values_must_match() {
        let s = |key: &str, value: &str| Setting {
            key: key.into(),
            value: value.into(),
            why: String::new(),
        };
        let rmem = s("net.core.rmem_max", "16777216");
        assert_eq!(compare(&rmem, Some("33554432")), Status::Ok);
        assert_eq!(compare(&rmem, Some("212992")), Status::Differs);
        assert_eq!(compare(&rmem, None), Status::Missing);
        let cc = s("net.ipv4.tcp_congestion_control", "bbr");
        assert_eq!(compare(&cc, Some("cubic")), Status::Differs);
        let wmem = s("net.ipv4.tcp_wmem", "4096 65536 16777216");
        assert_eq!(compare(&wmem, Some("4096 65536 16777216")), Status::Ok);
    }

    #[test]
    fn sys_settings_are_read_as_the_kernels_choice_and_go_to_tmpfiles() {
        let root = std::env::temp_dir().join(format!("shardcast-sysfs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let thp = root.join("sys/kernel/mm/transparent_hugepage/shmem_enabled");
        std::fs::create_dir_all(thp.parent().unwrap()).unwrap();
        std::fs::write(&thp, "always within_size advise [never] deny force\n").unwrap();
        let text = "# --- net ---\n\n# why a\nnet.core.rmem_max = 16777216\n\n# --- memory ---\n\n\
                    # why b\n/sys/kernel/mm/transparent_hugepage/shmem_enabled =  within_size\n";
        let settings = parse(text).unwrap();
        assert!(!settings[0].is_sysfs() && settings[1].is_sysfs());
        assert_eq!(settings[1].why, "why b");
        assert_eq!(settings[1].live(&root).as_deref(), Some("never"));
        assert_eq!(compare(&settings[1], Some("never")), Status::Differs);
        assert_eq!(compare(&settings[1], Some("within_size")), Status::Ok);
        let (sysctl, tmpfiles) = split(text);
        assert_eq!(
            sysctl,
            "# --- net ---\n\n# why a\nnet.core.rmem_max = 16777216\n"
        );
        assert_eq!(
            tmpfiles,
            "# --- memory ---\n\n# why b\n\
             w /sys/kernel/mm/transparent_hugepage/shmem_enabled - - - - within_size\n"
        );

        // Into a root other than /: both files, nothing applied.
        let report = apply(&root, "general").unwrap();
        assert!(report.contains("not applied"), "{report}");
        let written = std::fs::read_to_string(root.join(TMPFILES_FILE)).unwrap();
        assert!(written.starts_with("# Written by `shardcast tune apply --profile general`"));
        assert!(written.contains(
            "\nw /sys/kernel/mm/transparent_hugepage/shmem_enabled - - - - within_size\n"
        ));
        let sysctls = std::fs::read_to_string(root.join(SYSCTL_FILE)).unwrap();
        assert!(sysctls.contains("\nnet.core.rmem_max = 16777216\n"));
        assert!(!sysctls.contains("/sys/"), "{sysctls}");
        assert_eq!(
            host::sysfs(&root, "/sys/kernel/mm/transparent_hugepage/shmem_enabled").as_deref(),
            Some("never")
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn keys_outside_sys_and_mixed_paragraphs_are_refused() {
        let err = |text: &str| parse(text).unwrap_err().to_string();
        assert!(err("a.b = 1\n/sys/x = 2\n").starts_with("line 2: a paragraph holds"));
        assert!(err("/proc/sys/x = 1\n").starts_with("line 1: a key is"));
        assert!(err("/sys/../etc/passwd = 1\n").starts_with("line 1: a key is"));
        assert!(err("net.core x = 1\n").starts_with("line 1: a key is"));
        assert!(parse("a.b = 1\n\n/sys/x = 2\n").is_ok());
    }

    #[test]
    fn a_line_without_equals_is_refused_with_its_number() {
        assert_eq!(
            parse("# why\na = 1\nb\n").unwrap_err().to_string(),
            "line 3: expected `key = value`"
        );
    }
}
