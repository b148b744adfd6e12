//! `ts`: many progressive HTTP-TS viewers on one thread.
//!
//! Each viewer sends one GET, then reads the stream for the whole run and checks it as it
//! goes: packet alignment, continuity counters per PID (a gap means it lost data or was
//! skipped), and the wall-clock stamps the generator put in each frame, which give the
//! ingest-to-viewer latency. Figures count only the measured window, after the ramp-up.

use crate::cpu::{WindowCost, WindowStart};
use crate::load::Load;
use crate::net::Socket;
use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};
use shardcast_protocols::generator::read_stamp;
use shardcast_protocols::ts::PACKET_SIZE;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What the viewers saw.
#[derive(Debug)]
pub struct TsReport {
    /// Viewers asked for.
    pub viewers: usize,
    /// Viewers whose response head said 200.
    pub connected: usize,
    /// Viewers whose connection ended or failed before the end.
    pub disconnected: usize,
    /// Of those, the ones whose connection failed (reset, or TLS ended without close_notify)
    /// rather than closed.
    pub resets: usize,
    /// Of those, the ones whose body ended inside a packet.
    pub cut_mid_packet: usize,
    /// Viewers that saw at least one continuity gap in the window.
    pub viewers_with_gaps: usize,
    /// Continuity gaps in the window, all viewers.
    pub gaps: u64,
    /// Bytes received in the window, all viewers.
    pub bytes: u64,
    /// The fewest bytes one viewer received in the window.
    pub min_viewer_bytes: u64,
    /// Latency from the stamp to arrival at the viewer, microseconds.
    pub latency_us: Histogram<u64>,
    /// CPU and memory over the window.
    pub cost: WindowCost,
}

impl TsReport {
    /// Server CPU milliseconds per viewer-second.
    pub fn server_ms_per_viewer_second(&self) -> Option<f64> {
        self.cost.server_ms_per_viewer_second(self.connected)
    }

    /// The latency distribution: (percentile, milliseconds) at the usual cut points.
    pub fn latency_percentiles(&self) -> Vec<(f64, f64)> {
        [
            50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 100.0,
        ]
        .into_iter()
        .map(|p| (p, self.latency_us.value_at_percentile(p) as f64 / 1000.0))
        .collect()
    }

    /// Aggregate throughput in Gbit/s over the window.
    pub fn gbit_per_s(&self) -> f64 {
        self.cost.gbit_per_s(self.bytes)
    }

    /// The human summary.
    pub fn summary(&self) -> String {
        let q = |p: f64| self.latency_us.value_at_quantile(p) as f64 / 1000.0;
        let mut s = format!(
            "viewers {}/{} connected, {} disconnected ({} reset, {} cut inside a packet), {} with gaps ({} gaps)\n\
             window {:.1} s: {:.3} Gbit/s, fewest bytes for one viewer {}\n\
             latency ms (stamp to viewer, {} samples): p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}\n",
            self.connected,
            self.viewers,
            self.disconnected,
            self.resets,
            self.cut_mid_packet,
            self.viewers_with_gaps,
            self.gaps,
            self.cost.window.as_secs_f64(),
            self.gbit_per_s(),
            self.min_viewer_bytes,
            self.latency_us.len(),
            q(0.5),
            q(0.99),
            q(0.999),
            self.latency_us.max() as f64 / 1000.0
        );
        s.push_str(&self.cost.summary(self.connected));
        s
    }
}

struct Viewer {
    socket: Option<Socket>,
    sent_request: bool,
    head: Vec<u8>,
    in_body: bool,
    ok: bool,
    carry: Vec<u8>,
    counters: Vec<(u16, u8)>,
    bytes: u64,
    bytes_at_window: u64,
    gaps_in_window: u64,
    gone: bool,
    /// The connection failed rather than closed.
    reset: bool,
    started: Instant,
    /// Stopped reading to keep to the pace; read again when the allowance is back.
    throttled: bool,
}

/// Run the load; blocks for ramp + settle + measure.
pub fn run(load: &Load) -> io::Result<TsReport> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(4096);
    let mut viewers: Vec<Viewer> = Vec::with_capacity(load.viewers);
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: shardcast-bench\r\n\r\n",
        load.path, load.addr
    );
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let start = Instant::now();
    let window_start = start + load.ramp + load.settle;
    let end = window_start + load.measure;
    let mut in_window = false;
    let mut window: Option<WindowStart> = None;
    let mut buf = vec![0u8; 256 * 1024];
    let mut next_progress = start + Duration::from_secs(1);
    let mut last_bytes = 0u64;
    let mut meter = crate::cpu::CpuMeter::new(load.server_pid);
    while Instant::now() < end {
        // Connect the viewers due by now.
        while viewers.len() < load.due(start.elapsed()) {
            let mut socket = Socket::connect(load.addr, load.tls.as_ref())?;
            let token = Token(viewers.len());
            poll.registry().register(
                socket.tcp(),
                token,
                Interest::READABLE | Interest::WRITABLE,
            )?;
            viewers.push(Viewer {
                socket: Some(socket),
                sent_request: false,
                head: Vec::new(),
                in_body: false,
                ok: false,
                carry: Vec::with_capacity(PACKET_SIZE),
                counters: Vec::new(),
                bytes: 0,
                bytes_at_window: 0,
                gaps_in_window: 0,
                gone: false,
                reset: false,
                started: Instant::now(),
                throttled: false,
            });
        }
        if !in_window && Instant::now() >= window_start {
            in_window = true;
            for v in &mut viewers {
                v.bytes_at_window = v.bytes;
            }
            window = Some(WindowStart::now(load.server_pid)?);
        }
        poll.poll(&mut events, Some(Duration::from_millis(10)))?;
        let now_unix = unix_ns();
        let mut pass = Pass {
            request: &request,
            in_window,
            now_unix,
            latency: &mut latency,
            pace_bps: load.pace_bps,
        };
        let mut serve = |v: &mut Viewer| service(v, &mut buf, &mut pass);
        for event in events.iter() {
            if let Some(v) = viewers.get_mut(event.token().0) {
                serve(v);
            }
        }
        if load.pace_bps > 0 {
            // Throttled viewers are not drained, so no new readiness comes: look again.
            viewers.iter_mut().filter(|v| v.throttled).for_each(serve);
        }
        if load.progress && Instant::now() >= next_progress {
            let total: u64 = viewers.iter().map(|v| v.bytes).sum();
            let live = viewers.iter().filter(|v| v.ok && !v.gone).count();
            eprintln!(
                "  {:>5.1} s  viewers {live:>6}  {:.3} Gbit/s  {}",
                start.elapsed().as_secs_f64(),
                (total - last_bytes) as f64 * 8.0 / 1e9,
                meter.sample()
            );
            last_bytes = total;
            next_progress += Duration::from_secs(1);
        }
    }
    let cost = match window {
        Some(w) => w.finish(load.measure)?,
        None => WindowStart::now(load.server_pid)?.finish(Duration::ZERO)?,
    };
    let window_bytes: Vec<u64> = viewers
        .iter()
        .map(|v| v.bytes - v.bytes_at_window)
        .collect();
    Ok(TsReport {
        viewers: load.viewers,
        connected: viewers.iter().filter(|v| v.ok).count(),
        disconnected: viewers.iter().filter(|v| v.gone).count(),
        resets: viewers.iter().filter(|v| v.gone && v.reset).count(),
        cut_mid_packet: viewers
            .iter()
            .filter(|v| v.gone && !v.carry.is_empty())
            .count(),
        viewers_with_gaps: viewers.iter().filter(|v| v.gaps_in_window > 0).count(),
        gaps: viewers.iter().map(|v| v.gaps_in_window).sum(),
        bytes: window_bytes.iter().sum(),
        min_viewer_bytes: window_bytes.iter().copied().min().unwrap_or(0),
        latency_us: latency,
        cost,
    })
}

/// What one pass over the ready viewers shares.
struct Pass<'a> {
    request: &'a str,
    in_window: bool,
    now_unix: u64,
    latency: &'a mut Histogram<u64>,
    pace_bps: u64,
}

fn service(v: &mut Viewer, buf: &mut [u8], pass: &mut Pass<'_>) {
    let Some(mut socket) = v.socket.take() else {
        return;
    };
    if read_and_check(v, &mut socket, buf, pass) {
        v.socket = Some(socket);
    } else {
        v.gone = true;
    }
}

/// Returns false when the viewer's connection is over.
fn read_and_check(
    v: &mut Viewer,
    socket: &mut Socket,
    buf: &mut [u8],
    pass: &mut Pass<'_>,
) -> bool {
    if !v.sent_request {
        match socket.write(pass.request.as_bytes()) {
            Ok(n) if n == pass.request.len() => v.sent_request = true,
            Ok(_) => return false,
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::NotConnected =>
            {
                return true
            }
            Err(_) => return false,
        }
    }
    loop {
        let mut room = buf.len();
        if pass.pace_bps > 0 && v.in_body {
            let allowed =
                (v.started.elapsed().as_secs_f64() * pass.pace_bps as f64 / 8.0) as u64 + 64 * 1024;
            let left = allowed.saturating_sub(v.bytes);
            // Below a few packets' worth, wait: many tiny reads would cost more than the load.
            v.throttled = left < 8 * 1024;
            if v.throttled {
                return true;
            }
            room = room.min(left as usize);
        }
        let n = match socket.read(&mut buf[..room]) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                v.reset = true;
                return false;
            }
        };
        let data = &buf[..n];
        if v.in_body {
            packets(v, data, pass);
            continue;
        }
        v.head.extend_from_slice(data);
        let Some(end) = memchr::memmem::find(&v.head, b"\r\n\r\n") else {
            if v.head.len() > 16 * 1024 {
                return false;
            }
            continue;
        };
        v.ok = v.head.starts_with(b"HTTP/1.1 200");
        v.in_body = true;
        let body = v.head.split_off(end + 4);
        v.head = Vec::new();
        if !v.ok {
            return false;
        }
        packets(v, &body, pass);
    }
}

fn packets(v: &mut Viewer, mut data: &[u8], pass: &mut Pass<'_>) {
    v.bytes += data.len() as u64;
    if !v.carry.is_empty() {
        let take = (PACKET_SIZE - v.carry.len()).min(data.len());
        v.carry.extend_from_slice(&data[..take]);
        data = &data[take..];
        if v.carry.len() == PACKET_SIZE {
            let carry = std::mem::take(&mut v.carry);
            check(v, &carry, pass);
            v.carry = carry;
            v.carry.clear();
        }
    }
    let mut chunks = data.chunks_exact(PACKET_SIZE);
    for p in &mut chunks {
        check(v, p, pass);
    }
    v.carry.extend_from_slice(chunks.remainder());
}

fn check(v: &mut Viewer, p: &[u8], pass: &mut Pass<'_>) {
    let in_window = pass.in_window;
    if p[0] != 0x47 {
        v.gaps_in_window += u64::from(in_window);
        return;
    }
    let pid = u16::from(p[1] & 0x1F) << 8 | u16::from(p[2]);
    let cc = p[3] & 0x0F;
    let has_payload = p[3] & 0x10 != 0;
    match v.counters.iter_mut().find(|(q, _)| *q == pid) {
        Some((_, last)) => {
            let expected = if has_payload {
                (*last + 1) & 0x0F
            } else {
                *last
            };
            if cc != expected && in_window {
                v.gaps_in_window += 1;
            }
            *last = cc;
        }
        None => v.counters.push((pid, cc)),
    }
    if in_window && p[1] & 0x40 != 0 {
        if let Some(stamp) = read_stamp(p) {
            let _ = pass
                .latency
                .record(pass.now_unix.saturating_sub(stamp) / 1000);
        }
    }
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
