//! CPU time of a process (all its threads) from `/proc/PID/stat`, and its resident memory.

use std::time::Duration;

/// utime + stime of process `pid` (or of this process with `None`).
pub fn cpu_time(pid: Option<u32>) -> std::io::Result<Duration> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path)?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat; here 11 and 12 (state is field 3 → 0).
    let total = ticks(11) + ticks(12);
    Ok(Duration::from_secs_f64(
        total as f64 / clock_ticks_per_second(),
    ))
}

/// Resident set size of process `pid`, in bytes.
pub fn rss_bytes(pid: Option<u32>) -> std::io::Result<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/statm"),
        None => "/proc/self/statm".to_owned(),
    };
    let statm = std::fs::read_to_string(path)?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .unwrap_or(0);
    Ok(pages * 4096)
}

fn clock_ticks_per_second() -> f64 {
    // USER_HZ is 100 on every Linux architecture shardcast targets.
    100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_cpu_and_memory() {
        let start = cpu_time(None).unwrap();
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        assert!(x != 1);
        let used = cpu_time(None).unwrap() - start;
        assert!(used >= Duration::from_millis(150), "{used:?}");
        assert!(rss_bytes(None).unwrap() > 1 << 20);
    }
}
