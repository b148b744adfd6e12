//! What this host is, as far as serving streams cares: kernel settings (`/proc/sys`, and the
//! few that live in `/sys`, such as huge pages for shared memory), network
//! interfaces and where their interrupts land (`/sys/class/net`, `/proc/irq`), and which CPUs
//! share a core.
//!
//! Everything is read from procfs and sysfs under a root directory (`/` on a live host, a
//! prepared tree in tests); what cannot be read is `None`, never an error, since a container
//! or an unusual driver hides some of it. Offloads and ring sizes are not in sysfs: they come
//! from `ethtool` when it is installed. What it does not do: change anything (see
//! [`crate::tune`] for that).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A sysctl key's file under `root`: `net.core.rmem_max` → `root/proc/sys/net/core/rmem_max`.
pub fn sysctl_path(root: &Path, key: &str) -> PathBuf {
    root.join("proc/sys").join(key.replace('.', "/"))
}

/// The live value of a sysctl key, whitespace normalised (`4096\t87380` → `4096 87380`).
pub fn sysctl(root: &Path, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(sysctl_path(root, key)).ok()?;
    Some(normalise(&text))
}

/// A file under `/sys` (`/sys/kernel/mm/transparent_hugepage/shmem_enabled`) under `root`.
pub fn sysfs_path(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// The live value of a sysfs setting: the word in brackets where the kernel lists the choices
/// (`always within_size advise [never] deny force` → `never`), else the whole value,
/// whitespace normalised.
pub fn sysfs(root: &Path, path: &str) -> Option<String> {
    let text = std::fs::read_to_string(sysfs_path(root, path)).ok()?;
    let chosen = text
        .split_once('[')
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(word, _)| word);
    Some(normalise(chosen.unwrap_or(&text)))
}

/// Collapse runs of whitespace to one space and trim.
pub fn normalise(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Parse a CPU list as the kernel writes it (`0-3,8,10-11`).
pub fn parse_cpu_list(text: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                if b < a || b - a > 4096 {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some(cpus)
}

/// The physical core a CPU belongs to, as (package, core), when the topology is readable.
pub fn core_of(root: &Path, cpu: usize) -> Option<(u32, u32)> {
    let dir = root.join(format!("sys/devices/system/cpu/cpu{cpu}/topology"));
    let read = |name: &str| -> Option<u32> {
        std::fs::read_to_string(dir.join(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some((read("physical_package_id")?, read("core_id")?))
}

/// One interrupt line of a network interface and the CPUs it may be delivered to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Irq {
    /// The IRQ number.
    pub number: u32,
    /// Its `smp_affinity_list`, when readable.
    pub cpus: Option<Vec<usize>>,
}

/// A network interface.
#[derive(Clone, Debug)]
pub struct Nic {
    /// Interface name (`eth0`).
    pub name: String,
    /// Kernel driver, when the interface has a device (`virtio_net`, `ixgbe`, …).
    pub driver: Option<String>,
    /// MTU in bytes.
    pub mtu: Option<u32>,
    /// Link speed in Mbit/s, when the driver reports one.
    pub speed_mbps: Option<u32>,
    /// Administratively up.
    pub up: bool,
    /// IFF_MULTICAST is set.
    pub multicast: bool,
    /// Receive and transmit queues.
    pub queues: (usize, usize),
    /// Its interrupt lines (MSI vectors, or lines named after it in /proc/interrupts).
    pub irqs: Vec<Irq>,
    /// Its reverse-path filter setting (`net.ipv4.conf.NAME.rp_filter`).
    pub rp_filter: Option<String>,
}

const IFF_UP: u32 = 0x1;
const IFF_MULTICAST: u32 = 0x1000;

/// Every network interface but loopback, by name.
pub fn nics(root: &Path) -> Vec<Nic> {
    let class = root.join("sys/class/net");
    let Ok(entries) = std::fs::read_dir(&class) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lo")
        .collect();
    names.sort();
    let interrupts = std::fs::read_to_string(root.join("proc/interrupts")).unwrap_or_default();
    names
        .into_iter()
        .map(|name| nic(root, &class.join(&name), name, &interrupts))
        .collect()
}

fn nic(root: &Path, dir: &Path, name: String, interrupts: &str) -> Nic {
    let read = |file: &str| std::fs::read_to_string(dir.join(file)).ok();
    let number = |file: &str| read(file).and_then(|t| t.trim().parse::<i64>().ok());
    let flags = read("flags")
        .and_then(|t| u32::from_str_radix(t.trim().trim_start_matches("0x"), 16).ok())
        .unwrap_or(0);
    let driver = std::fs::read_link(dir.join("device/driver"))
        .ok()
        .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()));
    let count = |prefix: &str| {
        std::fs::read_dir(dir.join("queues"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                    .count()
            })
            .unwrap_or(0)
    };
    let mut numbers: Vec<u32> = std::fs::read_dir(dir.join("device/msi_irqs"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
                .collect()
        })
        .unwrap_or_default();
    if numbers.is_empty() {
        numbers = irqs_named(interrupts, &name);
    }
    numbers.sort_unstable();
    let irqs = numbers
        .into_iter()
        .map(|number| Irq {
            number,
            cpus: std::fs::read_to_string(
                root.join(format!("proc/irq/{number}/smp_affinity_list")),
            )
            .ok()
            .and_then(|t| parse_cpu_list(&t)),
        })
        .collect();
    Nic {
        rp_filter: sysctl(root, &format!("net.ipv4.conf.{name}.rp_filter")),
        driver,
        mtu: number("mtu").and_then(|v| u32::try_from(v).ok()),
        // Virtual and unplugged links report -1 or nothing.
        speed_mbps: number("speed").and_then(|v| u32::try_from(v).ok()),
        up: flags & IFF_UP != 0,
        multicast: flags & IFF_MULTICAST != 0,
        queues: (count("rx-"), count("tx-")),
        irqs,
        name,
    }
}

/// IRQ numbers of /proc/interrupts lines whose device column names the interface
/// (`eth0`, `eth0-TxRx-0`, `virtio2-input.0` does not count).
fn irqs_named(interrupts: &str, name: &str) -> Vec<u32> {
    interrupts
        .lines()
        .filter_map(|line| {
            let (number, rest) = line.trim_start().split_once(':')?;
            let number: u32 = number.parse().ok()?;
            let device = rest.split_whitespace().last()?;
            (device == name || device.starts_with(&format!("{name}-"))).then_some(number)
        })
        .collect()
}

/// Facts `ethtool` gives and sysfs does not: offloads and ring sizes. `None` when ethtool is
/// not installed or the driver does not answer.
#[derive(Clone, Debug, Default)]
pub struct EthtoolFacts {
    /// Offloads worth knowing for a streaming server, with on/off.
    pub offloads: Vec<(String, bool)>,
    /// Receive ring.
    pub rx_ring: Option<Ring>,
    /// Transmit ring.
    pub tx_ring: Option<Ring>,
}

/// A NIC ring: (current size, maximum size) in descriptors.
pub type Ring = (u32, u32);

/// Ask `ethtool` about an interface.
pub fn ethtool(name: &str) -> Option<EthtoolFacts> {
    let run = |flag: &str| {
        Command::new("ethtool")
            .args([flag, name])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let features = run("-k")?;
    let mut facts = EthtoolFacts {
        offloads: parse_offloads(&features),
        ..Default::default()
    };
    if let Some(rings) = run("-g") {
        (facts.rx_ring, facts.tx_ring) = parse_rings(&rings);
    }
    Some(facts)
}

const OFFLOADS: [&str; 5] = [
    "tcp-segmentation-offload",
    "generic-segmentation-offload",
    "generic-receive-offload",
    "large-receive-offload",
    "tx-checksumming",
];

fn parse_offloads(text: &str) -> Vec<(String, bool)> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.trim().split_once(':')?;
            OFFLOADS
                .contains(&key)
                .then(|| (key.to_string(), value.trim().starts_with("on")))
        })
        .collect()
}

/// `ethtool -g` prints the maximums, then the current settings, each with `RX:` and `TX:`.
fn parse_rings(text: &str) -> (Option<Ring>, Option<Ring>) {
    let mut maximum = (None, None);
    let mut current = (None, None);
    let mut in_current = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("Current hardware settings") {
            in_current = true;
        }
        let target = if in_current {
            &mut current
        } else {
            &mut maximum
        };
        if let Some(v) = line.strip_prefix("RX:") {
            target.0 = v.trim().parse::<u32>().ok();
        } else if let Some(v) = line.strip_prefix("TX:") {
            target.1 = v.trim().parse::<u32>().ok();
        }
    }
    let pair = |c: Option<u32>, m: Option<u32>| Some((c?, m?));
    (pair(current.0, maximum.0), pair(current.1, maximum.1))
}

/// A NIC interrupt line delivered on a core that also runs a shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IrqOverlap {
    /// The interface.
    pub nic: String,
    /// The IRQ number.
    pub irq: u32,
    /// Shard CPUs on the same cores as the IRQ's CPUs.
    pub shard_cpus: Vec<usize>,
}

/// Interrupt lines of `nics` that may land on a core (not only a CPU: hyperthread siblings
/// count) that runs one of `shard_cpus`.
pub fn irq_overlaps(root: &Path, nics: &[Nic], shard_cpus: &[usize]) -> Vec<IrqOverlap> {
    let core = |cpu: usize| core_of(root, cpu).map_or((u32::MAX, cpu as u32), |c| c);
    let mut out = Vec::new();
    for nic in nics {
        for irq in &nic.irqs {
            let Some(cpus) = &irq.cpus else { continue };
            let irq_cores: Vec<_> = cpus.iter().map(|&c| core(c)).collect();
            let shared: Vec<usize> = shard_cpus
                .iter()
                .copied()
                .filter(|&c| irq_cores.contains(&core(c)))
                .collect();
            if !shared.is_empty() {
                out.push(IrqOverlap {
                    nic: nic.name.clone(),
                    irq: irq.number,
                    shard_cpus: shared,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_as_the_kernel_writes_them() {
        assert_eq!(parse_cpu_list("0-3,8\n"), Some(vec![0, 1, 2, 3, 8]));
        assert_eq!(parse_cpu_list("1"), Some(vec![1]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn interrupts_are_found_by_device_name() {
        let text = "           CPU0       CPU1\n 24:   10   20  PCI-MSI 1-edge  eth0-TxRx-0\n 25:   1  2  PCI-MSI 2-edge  eth0\n 26:  1 2 PCI-MSI 3-edge eth01\n";
        assert_eq!(irqs_named(text, "eth0"), vec![24, 25]);
    }

    #[test]
    fn ethtool_output_is_read() {
        let k = "Features for eth0:\nrx-checksumming: on [fixed]\ntcp-segmentation-offload: on\ngeneric-receive-offload: off\n";
        assert_eq!(
            parse_offloads(k),
            vec![
                ("tcp-segmentation-offload".to_string(), true),
                ("generic-receive-offload".to_string(), false)
            ]
        );
        let g = "Ring parameters for eth0:\nPre-set maximums:\nRX:\t\t4096\nTX:\t\t4096\nCurrent hardware settings:\nRX:\t\t512\nTX:\t\t1024\n";
        assert_eq!(parse_rings(g), (Some((512, 4096)), Some((1024, 4096))));
    }

    #[test]
    fn irqs_on_a_shard_core_are_reported() {
        let root = std::env::temp_dir().join(format!("shardcast-host-{}", std::process::id()));
        for cpu in 0..4 {
            let dir = root.join(format!("sys/devices/system/cpu/cpu{cpu}/topology"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("physical_package_id"), "0\n").unwrap();
            // CPUs 0 and 2 are siblings on core 0; 1 and 3 on core 1.
            std::fs::write(dir.join("core_id"), format!("{}\n", cpu % 2)).unwrap();
        }
        let nic = |number, cpus: Vec<usize>| Nic {
            name: "eth0".into(),
            driver: None,
            mtu: Some(1500),
            speed_mbps: None,
            up: true,
            multicast: true,
            queues: (1, 1),
            irqs: vec![Irq {
                number,
                cpus: Some(cpus),
            }],
            rp_filter: None,
        };
        let nics = [nic(30, vec![2]), nic(31, vec![3])];
        let overlaps = irq_overlaps(&root, &nics, &[0]);
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(
            overlaps,
            vec![IrqOverlap {
                nic: "eth0".into(),
                irq: 30,
                shard_cpus: vec![0]
            }]
        );
    }
}
