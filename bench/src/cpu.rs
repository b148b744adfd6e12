//! CPU time of a process (all its threads, those gone included) from its CPU-time clock, and
//! its resident memory from `/proc/PID/statm`.

use std::time::Duration;

/// CPU time of process `pid` (or of this process with `None`), to the nanosecond: its
/// CPU-time clock (`clock_getcpuclockid`), the sum of what the scheduler ran its threads for.
/// `/proc/PID/stat`'s utime + stime sum to the same, rounded to 10 ms ticks, which is too
/// coarse for a server at 100 viewers (a few ticks a second).
pub fn cpu_time(pid: Option<u32>) -> std::io::Result<Duration> {
    use nix::time::{clock_getcpuclockid, clock_gettime, ClockId};
    let clock = match pid {
        Some(p) => {
            let raw = i32::try_from(p).map_err(std::io::Error::other)?;
            clock_getcpuclockid(nix::unistd::Pid::from_raw(raw))?
        }
        None => ClockId::CLOCK_PROCESS_CPUTIME_ID,
    };
    let t = clock_gettime(clock)?;
    Ok(Duration::new(
        u64::try_from(t.tv_sec()).unwrap_or(0),
        u32::try_from(t.tv_nsec()).unwrap_or(0),
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

    #[test]
    fn a_window_without_viewers_has_no_figure_per_viewer() {
        let cost = WindowCost {
            window: Duration::from_secs(20),
            server_cpu: Some(Duration::from_millis(80)),
            server_rss: Some(26 << 20),
            client_cpu: Duration::from_millis(140),
        };
        assert_eq!(cost.server_ms_per_viewer_second(0), None);
        assert_eq!(
            cost.summary(0),
            "server cpu 0.08 s, rss 26.0 MiB; client cpu 0.14 s\n"
        );
        assert!(cost
            .json_fields(0)
            .contains("\"server_ms_per_viewer_s\":null"));
        let per = cost.server_ms_per_viewer_second(100).unwrap();
        assert!((per - 0.04).abs() < 1e-9, "{per}");
        assert!(cost.summary(100).contains("(0.0400 ms per viewer-second)"));
        let empty = WindowCost {
            window: Duration::ZERO,
            ..cost
        };
        assert_eq!(empty.server_ms_per_viewer_second(100), None);
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
    /// Server CPU over the window (its CPU-time clock: all threads), when its pid is known.
    pub server_cpu: Option<Duration>,
    /// Server resident memory at the end of the window.
    pub server_rss: Option<u64>,
    /// This process's CPU over the window.
    pub client_cpu: Duration,
}

impl WindowCost {
    /// Server CPU milliseconds per viewer-second, for `viewers`; none without a viewer-second
    /// (no viewer, or an empty window).
    pub fn server_ms_per_viewer_second(&self, viewers: usize) -> Option<f64> {
        let viewer_seconds = viewers as f64 * self.window.as_secs_f64();
        if viewer_seconds <= 0.0 {
            return None;
        }
        self.server_cpu
            .map(|c| c.as_secs_f64() * 1000.0 / viewer_seconds)
    }

    /// `bytes` over the window in Gbit/s.
    pub fn gbit_per_s(&self, bytes: u64) -> f64 {
        bytes as f64 * 8.0 / self.window.as_secs_f64().max(1e-9) / 1e9
    }

    /// The summary line about CPU and memory (empty without the server's pid; without the
    /// figure per viewer-second when nobody watched).
    pub fn summary(&self, viewers: usize) -> String {
        let Some(cpu) = self.server_cpu else {
            return String::new();
        };
        let per = match self.server_ms_per_viewer_second(viewers) {
            Some(per) => format!(" ({per:.4} ms per viewer-second)"),
            None => String::new(),
        };
        format!(
            "server cpu {:.2} s{per}, rss {:.1} MiB; client cpu {:.2} s\n",
            cpu.as_secs_f64(),
            self.server_rss.unwrap_or(0) as f64 / (1 << 20) as f64,
            self.client_cpu.as_secs_f64()
        )
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
