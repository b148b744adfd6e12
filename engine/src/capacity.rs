//! `shardcast capacity`: what a deployment needs in CPU, memory, bandwidth and storage, from
//! shardcast's measured costs (bench/RESULTS.md) with MistServer's published planning figure
//! beside them.
//!
//! Every figure says where it comes from. The per-viewer costs were measured on one machine
//! (a 2 vCPU AMD EPYC, loopback, one shard): on other CPUs they scale with per-core speed, and
//! real NICs add interrupt and driver work that loopback does not have. What it does not do:
//! measure this host (run `shardcast-bench` for that) or account for transcoding, which
//! shardcast does not do.

use std::fmt::Write as _;

/// Which output the viewers use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// HLS players.
    Hls,
    /// Progressive HTTP-TS viewers.
    Ts,
}

/// What is being planned for.
#[derive(Clone, Debug, clap::Args)]
pub struct Inputs {
    /// Concurrent viewers, all streams together.
    #[arg(long)]
    pub viewers: u64,
    /// Live streams.
    #[arg(long, default_value_t = 1)]
    pub streams: u64,
    /// Bitrate of each stream as carried (bits per second; k, M and G suffixes allowed).
    #[arg(long, value_parser = parse_bitrate)]
    pub bitrate: f64,
    /// Output the viewers use.
    #[arg(long, value_enum, default_value_t = Protocol::Hls)]
    pub protocol: Protocol,
    /// HLS segment duration in seconds (the stream setting).
    #[arg(long, default_value_t = 2.0)]
    pub segment_duration: f64,
    /// Segments listed in the live playlist (the stream setting).
    #[arg(long, default_value_t = 6)]
    pub playlist_segments: u32,
    /// Seconds an unlisted segment stays fetchable (the stream setting).
    #[arg(long, default_value_t = 10.0)]
    pub segment_grace: f64,
    /// Seconds of stream kept for joining progressive viewers (the stream setting).
    #[arg(long, default_value_t = 10.0)]
    pub window: f64,
    /// Hours of recording kept per stream, for the storage figure.
    #[arg(long, default_value_t = 0.0)]
    pub record_hours: f64,
}

/// A `--bitrate` that is not one.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum BitrateError {
    /// Not a number with an optional k, M or G.
    #[error("{0:?} is not a bitrate (e.g. 2500000, 2500k, 2.5M)")]
    NotABitrate(String),
    /// Zero, negative or not finite.
    #[error("{0:?}: a bitrate must be above zero")]
    NotPositive(String),
}

/// Parse `2500000`, `2500k`, `2.5M`, `1G`.
pub fn parse_bitrate(text: &str) -> Result<f64, BitrateError> {
    let t = text.trim();
    let (number, scale) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1e3),
        Some((i, 'm' | 'M')) => (&t[..i], 1e6),
        Some((i, 'g' | 'G')) => (&t[..i], 1e9),
        _ => (t, 1.0),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| BitrateError::NotABitrate(text.to_owned()))?;
    if !(value.is_finite() && value > 0.0) {
        return Err(BitrateError::NotPositive(text.to_owned()));
    }
    Ok(value * scale)
}

/// Costs measured by shardcast-bench; see bench/RESULTS.md for the runs.
pub mod measured {
    /// Where the figures come from.
    pub const SOURCE: &str =
        "bench/RESULTS.md, \"HLS against nginx, a head with its body\" (HLS, 2026-12-01), \
         \"UDP ingest on the tick\", \"Ingest, a batch of datagrams per call\" and \"An \
         idle stream's wake-ups\" (ingest, 2026-12-01 and -02), \
         \"Progressive HTTP-TS, one buffer per flush\" (HTTP-TS, 2026-12-02) and \
         \"10,000 viewers on one shard\" (memory, 2026-12-02); 2 vCPU AMD EPYC, Linux 6.18, \
         loopback, one shard on io_uring, 1000 viewers of a 1.9 Mbit/s stream (memory: \
         10,000 viewers of 2.0 and 1.0 Mbit/s streams)";
    /// Server CPU seconds per GiB delivered to HLS players (includes one stream's ingest),
    /// keep-alive players.
    pub const HLS_S_PER_GIB: f64 = 0.397;
    /// Server CPU seconds per GiB delivered to HTTP-TS viewers (`flush_interval = 20`).
    pub const TS_S_PER_GIB: f64 = 0.933;
    /// CPU of a stream's ingest and segmenting: 0.76 ms per second for each of 100 channels
    /// of 2.5 Mbit/s on one shard, read on the ingest tick, every channel counted as idle,
    /// scaled by bitrate. That is the 1.35 of "UDP ingest on the tick" (2026-12-01) times
    /// 0.76, what "Ingest, a batch of datagrams per call" cost against the build before it,
    /// times 0.74, what the 100 ms tick cost against that one ("An idle stream's wake-ups",
    /// 2026-12-02): each ratio from one run side by side, on the first day's scale (the
    /// machine's absolute figures moved by up to 1.7x from run to run).
    /// A stream read as each datagram comes costs more: [`INGEST_PROMPT_MS_PER_S_PER_MBIT`].
    pub const INGEST_MS_PER_S_PER_MBIT: f64 = 0.76 / 2.5;
    /// The same for a stream read as each datagram comes, as one with progressive viewers
    /// is: 1.65 ms per second per channel in the same run, with `ingest_interval = 0`.
    pub const INGEST_PROMPT_MS_PER_S_PER_MBIT: f64 = 1.65 / 2.5;
    /// Resident memory per HLS player: the server's RSS with 10,000 players less its RSS
    /// before the first came, receive buffers shared ("10,000 viewers on one shard").
    pub const HLS_KIB_PER_VIEWER: f64 = 1.5;
    /// Resident memory per HTTP-TS viewer, the same way.
    pub const TS_KIB_PER_VIEWER: f64 = 5.7;
    /// Resident memory of a server with one stream and 100 players, less the players.
    pub const BASE_MIB: f64 = 30.0;
}

/// MistServer's published planning figure.
pub mod mistserver {
    /// "Every 3.4 points on CPU mark equals one viewer" (MistServer blog, "What hardware do I
    /// need to run MistServer?", 2018).
    pub const PASSMARK_PER_VIEWER: f64 = 3.4;
    /// MistServer's default live buffer ("Buffer time", 50000 ms, in its buffer input's
    /// documentation): stream data it keeps in memory per stream.
    pub const BUFFER_S: f64 = 50.0;
}

/// TCP payload per Ethernet frame at MTU 1500 with TCP timestamps (1500 - 20 IP - 32 TCP),
/// against the bytes on the wire (1500 + 14 header + 4 FCS + 8 preamble + 12 gap).
pub const TCP_WIRE_FACTOR: f64 = 1538.0 / 1448.0;
/// Seven TS packets per UDP datagram (1316 bytes) against the frame on the wire
/// (1316 + 8 UDP + 20 IP + 38 Ethernet framing).
pub const UDP_WIRE_FACTOR: f64 = 1382.0 / 1316.0;

/// The plan's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Viewer payload, bits per second.
    pub egress_bps: f64,
    /// Viewer traffic on the wire, bits per second.
    pub egress_wire_bps: f64,
    /// Ingest on the wire, bits per second.
    pub ingest_wire_bps: f64,
    /// CPU cores for the viewers (per-byte cost).
    pub viewer_cores: f64,
    /// CPU cores for ingest and segmenting.
    pub ingest_cores: f64,
    /// Memory for the stream buffers, bytes.
    pub stream_buffer_bytes: f64,
    /// Memory for the viewers, bytes.
    pub viewer_bytes: f64,
    /// Total resident memory, bytes.
    pub memory_bytes: f64,
    /// Storage for recordings, bytes.
    pub storage_bytes: f64,
    /// MistServer: PassMark points.
    pub mist_passmark: f64,
    /// MistServer: stream buffers, bytes.
    pub mist_buffer_bytes: f64,
}

/// A stream's ingest cost for viewers of `protocol`: HLS players leave it to the ingest tick,
/// progressive viewers have it read as each datagram comes.
fn ingest_ms_per_s_per_mbit(protocol: Protocol) -> f64 {
    match protocol {
        Protocol::Hls => measured::INGEST_MS_PER_S_PER_MBIT,
        Protocol::Ts => measured::INGEST_PROMPT_MS_PER_S_PER_MBIT,
    }
}

/// Work the plan out.
pub fn plan(i: &Inputs) -> Plan {
    let viewers = i.viewers as f64;
    let streams = i.streams as f64;
    let byte_rate = i.bitrate / 8.0;
    let egress_bps = viewers * i.bitrate;
    let s_per_gib = match i.protocol {
        Protocol::Hls => measured::HLS_S_PER_GIB,
        Protocol::Ts => measured::TS_S_PER_GIB,
    };
    let viewer_cores = viewers * byte_rate / f64::from(1u32 << 30) * s_per_gib;
    let ingest_cores = streams * ingest_ms_per_s_per_mbit(i.protocol) * (i.bitrate / 1e6) / 1000.0;
    // Held per stream: the listed segments, those in their grace time, the one being cut;
    // and the progressive window.
    let segment_seconds =
        (f64::from(i.playlist_segments) + 1.0) * i.segment_duration + i.segment_grace.max(0.0);
    let stream_buffer_bytes = streams * (segment_seconds + i.window) * byte_rate;
    let kib_per_viewer = match i.protocol {
        Protocol::Hls => measured::HLS_KIB_PER_VIEWER,
        Protocol::Ts => measured::TS_KIB_PER_VIEWER,
    };
    let viewer_bytes = viewers * kib_per_viewer * 1024.0;
    Plan {
        egress_bps,
        egress_wire_bps: egress_bps * TCP_WIRE_FACTOR,
        ingest_wire_bps: streams * i.bitrate * UDP_WIRE_FACTOR,
        viewer_cores,
        ingest_cores,
        stream_buffer_bytes,
        viewer_bytes,
        memory_bytes: measured::BASE_MIB * 1024.0 * 1024.0 + stream_buffer_bytes + viewer_bytes,
        storage_bytes: streams * byte_rate * 3600.0 * i.record_hours.max(0.0),
        mist_passmark: viewers * mistserver::PASSMARK_PER_VIEWER,
        mist_buffer_bytes: streams * mistserver::BUFFER_S * byte_rate,
    }
}

fn bits(bps: f64) -> String {
    if bps >= 1e9 {
        format!("{:.2} Gbit/s", bps / 1e9)
    } else {
        format!("{:.1} Mbit/s", bps / 1e6)
    }
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / 1024.0 / 1024.0)
}

/// The smallest common link speed that carries `bps` at no more than 80% load.
fn link_for(bps: f64) -> String {
    for gbit in [1.0, 10.0, 25.0, 40.0, 100.0, 200.0, 400.0] {
        if bps <= gbit * 1e9 * 0.8 {
            return format!("{gbit} Gbit/s ({:.0}% load)", bps / (gbit * 1e9) * 100.0);
        }
    }
    format!("{:.0} x 400 Gbit/s links", (bps / (400e9 * 0.8)).ceil())
}

/// The printed plan.
pub fn render(i: &Inputs) -> String {
    let p = plan(i);
    let mut out = String::new();
    let protocol = match i.protocol {
        Protocol::Hls => "HLS",
        Protocol::Ts => "HTTP-TS",
    };
    let _ = writeln!(
        out,
        "{} {protocol} viewers of {} stream(s) at {} each",
        i.viewers,
        i.streams,
        bits(i.bitrate)
    );
    let _ = writeln!(out, "\nbandwidth");
    let _ = writeln!(
        out,
        "  out to viewers:      {} payload, {} on the wire; a {} link",
        bits(p.egress_bps),
        bits(p.egress_wire_bps),
        link_for(p.egress_wire_bps)
    );
    let _ = writeln!(
        out,
        "  in from sources:     {} on the wire (UDP, 7 TS packets per datagram)",
        bits(p.ingest_wire_bps)
    );
    let _ = writeln!(out, "\nCPU (shardcast, measured)");
    let _ = writeln!(
        out,
        "  viewers:             {:.2} cores ({:.3} s of CPU per GiB sent)",
        p.viewer_cores,
        match i.protocol {
            Protocol::Hls => measured::HLS_S_PER_GIB,
            Protocol::Ts => measured::TS_S_PER_GIB,
        }
    );
    let _ = writeln!(
        out,
        "  ingest + segmenting: {:.2} cores ({:.1} ms per second per stream)",
        p.ingest_cores,
        ingest_ms_per_s_per_mbit(i.protocol) * i.bitrate / 1e6
    );
    let _ = writeln!(
        out,
        "  total:               {:.2} cores of the measured kind; shards = cores, rounded up, plus headroom",
        p.viewer_cores + p.ingest_cores
    );
    let _ = writeln!(out, "  from: {}", measured::SOURCE);
    let _ = writeln!(out, "\nmemory (shardcast)");
    let _ = writeln!(
        out,
        "  stream buffers:      {} ({:.0} s of each stream: {} listed segments + 1 being cut, {} s grace, {} s progressive window)",
        mib(p.stream_buffer_bytes),
        (f64::from(i.playlist_segments) + 1.0) * i.segment_duration + i.segment_grace + i.window,
        i.playlist_segments,
        i.segment_grace,
        i.window
    );
    let _ = writeln!(
        out,
        "  viewers:             {} ({} KiB each, measured)",
        mib(p.viewer_bytes),
        match i.protocol {
            Protocol::Hls => measured::HLS_KIB_PER_VIEWER,
            Protocol::Ts => measured::TS_KIB_PER_VIEWER,
        }
    );
    let _ = writeln!(
        out,
        "  total resident:      {} (with {} MiB of base); kernel socket buffers come on top",
        mib(p.memory_bytes),
        measured::BASE_MIB
    );
    let _ = writeln!(out, "\nstorage");
    let _ = writeln!(
        out,
        "  recordings:          {:.2} GiB ({} h per stream)",
        p.storage_bytes / f64::from(1u32 << 30),
        i.record_hours
    );
    let _ = writeln!(out, "\nMistServer's planning figures, for comparison");
    let _ = writeln!(
        out,
        "  CPU:                 {:.0} PassMark CPU-mark points ({} per viewer, MistServer blog 2018)",
        p.mist_passmark,
        mistserver::PASSMARK_PER_VIEWER
    );
    let _ = writeln!(
        out,
        "  stream buffers:      {} ({} s default live buffer per stream)",
        mib(p.mist_buffer_bytes),
        mistserver::BUFFER_S
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(viewers: u64, streams: u64, bitrate: f64, protocol: Protocol) -> Inputs {
        Inputs {
            viewers,
            streams,
            bitrate,
            protocol,
            segment_duration: 2.0,
            playlist_segments: 6,
            segment_grace: 10.0,
            window: 10.0,
            record_hours: 0.0,
        }
    }

    #[test]
    fn bitrates_take_suffixes() {
        assert_eq!(parse_bitrate("2.5M"), Ok(2.5e6));
        assert_eq!(parse_bitrate("2500k"), Ok(2.5e6));
        assert_eq!(parse_bitrate("1G"), Ok(1e9));
        assert_eq!(parse_bitrate("800000"), Ok(8e5));
        assert!(parse_bitrate("fast").is_err());
        assert!(parse_bitrate("-1M").is_err());
    }

    #[test]
    fn hls_plan_matches_the_hand_calculation() {
        // 10000 players of one 4 Mbit/s stream.
        let p = plan(&inputs(10_000, 1, 4e6, Protocol::Hls));
        assert!((p.egress_bps - 40e9).abs() < 1.0);
        // 10000 x 500000 B/s = 5e9 B/s = 4.6566 GiB/s; x 0.397 s/GiB = 1.849 cores.
        assert!((p.viewer_cores - 1.8487).abs() < 1e-3, "{}", p.viewer_cores);
        // 0.76 / 2.5 x 4 = 1.216 ms/s = 0.001216 cores.
        assert!(
            (p.ingest_cores - 0.001216).abs() < 1e-6,
            "{}",
            p.ingest_cores
        );
        // (6 + 1) x 2 + 10 + 10 = 34 s of 500000 B/s = 17 MB.
        assert!((p.stream_buffer_bytes - 17e6).abs() < 1.0);
        assert!((p.mist_passmark - 34_000.0).abs() < 1e-6);
    }
}
