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

/// CPU use of the server and of this process since the previous sample, for progress lines.
#[derive(Debug)]
pub struct CpuMeter {
    pid: Option<u32>,
    last: (Option<Duration>, Option<Duration>, std::time::Instant),
}

impl CpuMeter {
    /// A meter of `pid` (the server, when known) and of this process.
    pub fn new(pid: Option<u32>) -> Self {
        let server = pid.and_then(|p| cpu_time(Some(p)).ok());
        Self {
            pid,
            last: (server, cpu_time(None).ok(), std::time::Instant::now()),
        }
    }

    /// "server 37% bench 52%" since the previous call (the server part only when known).
    pub fn sample(&mut self) -> String {
        let now = std::time::Instant::now();
        let wall = now.duration_since(self.last.2).as_secs_f64().max(1e-9);
        let server = self.pid.and_then(|p| cpu_time(Some(p)).ok());
        let own = cpu_time(None).ok();
        let pct = |a: Option<Duration>, b: Option<Duration>| {
            a.zip(b)
                .map(|(a, b)| b.saturating_sub(a).as_secs_f64() / wall * 100.0)
        };
        let mut s = String::new();
        if let Some(p) = pct(self.last.0, server) {
            s.push_str(&format!("server cpu {p:>3.0}%  "));
        }
        if let Some(p) = pct(self.last.1, own) {
            s.push_str(&format!("bench cpu {p:>3.0}%"));
        }
        self.last = (server, own, now);
        s
    }
}

/// What the server and this process spent over a measured window.
#[derive(Clone, Copy, Debug)]
pub struct WindowCost {
    /// Length of the window.
    pub window: Duration,
    /// Server CPU over the window (utime + stime, all threads), when its pid is known.
    pub server_cpu: Option<Duration>,
    /// Server resident memory at the end of the window.
    pub server_rss: Option<u64>,
    /// This process's CPU over the window.
    pub client_cpu: Duration,
}

impl WindowCost {
    /// Server CPU milliseconds per viewer-second, for `viewers`.
    pub fn server_ms_per_viewer_second(&self, viewers: usize) -> Option<f64> {
        let viewer_seconds = viewers as f64 * self.window.as_secs_f64();
        self.server_cpu
            .map(|c| c.as_secs_f64() * 1000.0 / viewer_seconds.max(1e-9))
    }

    /// `bytes` over the window in Gbit/s.
    pub fn gbit_per_s(&self, bytes: u64) -> f64 {
        bytes as f64 * 8.0 / self.window.as_secs_f64().max(1e-9) / 1e9
    }

    /// The summary line about CPU and memory (empty without the server's pid).
    pub fn summary(&self, viewers: usize) -> String {
        match (self.server_cpu, self.server_ms_per_viewer_second(viewers)) {
            (Some(cpu), Some(per)) => format!(
                "server cpu {:.2} s ({:.4} ms per viewer-second), rss {:.1} MiB; client cpu {:.2} s\n",
                cpu.as_secs_f64(),
                per,
                self.server_rss.unwrap_or(0) as f64 / (1 << 20) as f64,
                self.client_cpu.as_secs_f64()
            ),
            _ => String::new(),
        }
    }

    /// The JSON fields about CPU and memory, without braces.
    pub fn json_fields(&self, viewers: usize) -> String {
        format!(
            "\"server_cpu_s\":{},\"server_ms_per_viewer_s\":{},\"server_rss\":{},\"client_cpu_s\":{:.3}",
            self.server_cpu
                .map_or("null".into(), |c| format!("{:.3}", c.as_secs_f64())),
            self.server_ms_per_viewer_second(viewers)
                .map_or("null".into(), |v| format!("{v:.5}")),
            self.server_rss.map_or("null".into(), |v| v.to_string()),
            self.client_cpu.as_secs_f64()
        )
    }
}

/// CPU counters taken when a measured window opens.
#[derive(Debug)]
pub struct WindowStart {
    pid: Option<u32>,
    server: Option<Duration>,
    client: Duration,
}

impl WindowStart {
    /// Read the counters of `pid` (the server, when known) and of this process now.
    pub fn now(pid: Option<u32>) -> std::io::Result<Self> {
        Ok(Self {
            pid,
            server: pid.map(|p| cpu_time(Some(p))).transpose()?,
            client: cpu_time(None)?,
        })
    }

    /// Read them again at the end of a window `window` long.
    pub fn finish(&self, window: Duration) -> std::io::Result<WindowCost> {
        let server = self.pid.map(|p| cpu_time(Some(p))).transpose()?;
        Ok(WindowCost {
            window,
            server_cpu: self.server.zip(server).map(|(a, b)| b.saturating_sub(a)),
            server_rss: self.pid.and_then(|p| rss_bytes(Some(p)).ok()),
            client_cpu: cpu_time(None)?.saturating_sub(self.client),
        })
    }
}
