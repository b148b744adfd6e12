//! A transport stream sent on at the pace its PCRs give: what re-emitting a stream over UDP
//! (multicast to set-top boxes, unicast to a playout system) needs, because receivers with small
//! buffers lose what arrives in bursts.
//!
//! ```text
//!  packets in (whenever they arrive) ─► continuity rewritten ─► held until the next PCR
//!        ─► timed: each packet's due time, interpolated between PCRs on the wall clock
//!        ─► datagrams of 7 packets, each handed out when its last packet is due
//! ```
//!
//! The first PCR maps the stream's clock to the wall clock, `delay` after that packet arrived;
//! packets between two PCRs are spread evenly between them (the rate between PCRs is constant
//! in a conforming stream). The mapping follows the source: each PCR's margin (how long before
//! its due time it arrived) is pulled towards `delay` a little at a time, so a sender whose clock
//! runs slightly faster or slower than ours neither drains nor grows what is held. A PCR that
//! jumps (a new source, a wrap), or data that arrives after it was due or more than 10 s early,
//! sets the mapping again (counted as a resync). Data that comes in bursts (a pulled HLS
//! stream) is spread out as long as `delay` covers a burst. A stream without PCRs on the PID first seen with one
//! is sent as it arrives, `delay` later, once a second has passed without one.
//!
//! Continuity counters are rewritten per PID so that the stream sent is continuous whatever was
//! skipped before it reached the pacer; a repeated packet (the same counter again, with payload)
//! is left out. Sans-IO: time is an argument (UNIX ns or any clock, as long as it is one clock).

use super::packet::{set_continuity_counter, Packet, PACKET_SIZE};
use super::types::{ContinuityCounter, Pid};
use std::collections::VecDeque;

/// Packets per datagram: 1316 bytes, within any Ethernet MTU with IP, UDP and RTP headers.
pub const DATAGRAM_PACKETS: usize = 7;

/// PCRs are 27 MHz ticks of a 33-bit base (times 300): they wrap after about 26.5 hours.
const PCR_WRAP: u64 = (1 << 33) * 300;
/// A PCR further than this from the one before it (either way) starts a new mapping.
const PCR_JUMP: u64 = 27_000_000;
/// Held packets go out as they arrived once no PCR has come for this long.
const NO_PCR_NS: u64 = 1_000_000_000;
/// A short datagram (fewer than 7 packets) goes once its first packet is this late and no
/// more are coming: the end of a burst, or of the stream.
const SHORT_AFTER_NS: u64 = 50_000_000;
/// Data that arrives more than this (beyond the delay) ahead of its time maps the clock
/// again: the sender's clock is not the one mapped.
const EARLY_NS: u64 = 10_000_000_000;
/// How much of a PCR's margin error each PCR corrects (1/256).
const SLEW_SHIFT: u32 = 8;

/// How a [`Pacer`] paces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacerConfig {
    /// How long after a packet with a PCR arrives it is sent: room for the jitter of what
    /// comes in. It must exceed the source's burstiness (a few ms for UDP or TCP ingest,
    /// a segment's duration for a pulled HLS stream).
    pub delay_ns: u64,
    /// Packets held (waiting for their PCR or their time) at most; past it everything held
    /// is dropped and the mapping starts again.
    pub max_packets: usize,
}

impl Default for PacerConfig {
    fn default() -> Self {
        Self {
            delay_ns: 200_000_000,
            max_packets: (8 << 20) / PACKET_SIZE,
        }
    }
}

/// What a pacer did, since it began.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacerStats {
    /// Packets taken in.
    pub packets_in: u64,
    /// Datagrams handed out.
    pub datagrams: u64,
    /// Packets left out: not transport packets, or repeats.
    pub skipped: u64,
    /// Packets dropped because too many were held.
    pub overflowed: u64,
    /// Times the stream's clock was mapped to the wall clock again after the first.
    pub resyncs: u64,
    /// Packets sent as they arrived, for want of a PCR.
    pub unpaced: u64,
}

/// One datagram's packets and when it was due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Due {
    /// When its last packet was due.
    pub due_ns: u64,
    /// Its packets (`packets * 188` bytes at the front of the pacer's datagram buffer).
    pub packets: usize,
}

/// The stream's clock on the wall clock: PCR `pcr` is due at `wall_ns`.
#[derive(Clone, Copy, Debug)]
struct Mapping {
    pcr: u64,
    wall_ns: u64,
}

/// Per PID: an output counter was sent, an input counter was seen (since the last restart),
/// the last input counter (bits 4-7), the last output counter (bits 0-3).
const SEEN: u16 = 0x100;
const INPUT_SEEN: u16 = 0x200;

/// Paces one transport stream (see the module docs).
#[derive(Debug)]
pub struct Pacer {
    config: PacerConfig,
    pcr_pid: Option<Pid>,
    mapping: Option<Mapping>,
    /// The previous PCR and its due time.
    last_pcr: Option<(u64, u64)>,
    /// Nanoseconds per packet between the last two PCRs: how held packets are timed when the
    /// next PCR is later than their time (a large keyframe between two PCRs).
    packet_ns: Option<u64>,
    /// Packets since the last PCR, and when the oldest of them arrived.
    held: VecDeque<[u8; PACKET_SIZE]>,
    held_since_ns: Option<u64>,
    /// Packets with their due times, in order.
    timed: VecDeque<(u64, [u8; PACKET_SIZE])>,
    last_due_ns: u64,
    /// Packets timed ahead of their PCR since the last one.
    timed_since_pcr: u64,
    continuity: Box<[u16; Pid::COUNT]>,
    datagram: Vec<u8>,
    stats: PacerStats,
}

impl Pacer {
    /// A pacer that has seen nothing.
    pub fn new(config: PacerConfig) -> Self {
        Self {
            config,
            pcr_pid: None,
            mapping: None,
            last_pcr: None,
            packet_ns: None,
            held: VecDeque::new(),
            held_since_ns: None,
            timed: VecDeque::new(),
            last_due_ns: 0,
            timed_since_pcr: 0,
            continuity: Box::new([0; Pid::COUNT]),
            datagram: Vec::with_capacity(DATAGRAM_PACKETS * PACKET_SIZE),
            stats: PacerStats::default(),
        }
    }

    /// What it did so far.
    pub fn stats(&self) -> PacerStats {
        self.stats
    }

    /// Packets held, timed or not.
    pub fn held(&self) -> usize {
        self.held.len() + self.timed.len()
    }

    /// The stream starts again after a gap (the tap that feeds it dropped data, a new source):
    /// the clock is mapped afresh at the next PCR. Continuity counters go on.
    pub fn restart(&mut self, now_ns: u64) {
        self.release_held(now_ns);
        for state in self.continuity.iter_mut() {
            *state &= !INPUT_SEEN;
        }
        self.last_pcr = None;
        self.mapping = None;
        self.pcr_pid = None;
    }

    /// Take whole transport packets that arrived at `arrived_ns`.
    pub fn push(&mut self, packets: &[u8], arrived_ns: u64) {
        for bytes in packets.chunks_exact(PACKET_SIZE) {
            self.stats.packets_in += 1;
            let mut p = [0u8; PACKET_SIZE];
            p.copy_from_slice(bytes);
            let Ok(packet) = Packet::new(&p) else {
                self.stats.skipped += 1;
                continue;
            };
            let pid = packet.pid();
            let pcr = packet.pcr().map(|pcr| pcr.ticks_27mhz());
            if !self.rewrite_continuity(&mut p) {
                self.stats.skipped += 1;
                continue;
            }
            if self.held() >= self.config.max_packets {
                self.stats.overflowed += self.held() as u64;
                self.held.clear();
                self.timed.clear();
                self.held_since_ns = None;
                self.last_pcr = None;
                self.mapping = None;
            }
            if self.held.is_empty() {
                self.held_since_ns = Some(arrived_ns);
            }
            self.held.push_back(p);
            match pcr {
                Some(pcr) if self.pcr_pid.is_none_or(|p| p == pid) => {
                    self.pcr_pid = Some(pid);
                    self.on_pcr(pcr, arrived_ns);
                }
                _ => {}
            }
        }
    }

    /// Rewrite `p`'s counter to follow the last one sent on its PID; false for a repeat.
    fn rewrite_continuity(&mut self, p: &mut [u8; PACKET_SIZE]) -> bool {
        let pid = usize::from(u16::from_be_bytes([p[1], p[2]]) & 0x1FFF);
        if pid == usize::from(Pid::NULL.value()) {
            return true;
        }
        let has_payload = p[3] & 0x10 != 0;
        let input = p[3] & 0x0F;
        let state = self.continuity[pid];
        let out = if state & SEEN == 0 {
            input
        } else {
            let last_in = ((state >> 4) & 0x0F) as u8;
            let last_out = (state & 0x0F) as u8;
            if has_payload && state & INPUT_SEEN != 0 && input == last_in {
                return false;
            }
            if has_payload {
                (last_out + 1) & 0x0F
            } else {
                last_out
            }
        };
        set_continuity_counter(p, ContinuityCounter::from_bits(out));
        self.continuity[pid] = SEEN | INPUT_SEEN | (u16::from(input) << 4) | u16::from(out);
        true
    }

    /// A PCR arrived: the packets held up to it (it is the last) get their due times.
    fn on_pcr(&mut self, pcr: u64, arrived_ns: u64) {
        let delay = self.config.delay_ns;
        let due = match (self.mapping, self.last_pcr) {
            (Some(m), Some((last, _))) if pcr_distance(last, pcr) <= PCR_JUMP => {
                let due = m.wall_ns.saturating_add(ticks_to_ns(pcr_after(m.pcr, pcr)));
                let margin = due as i128 - arrived_ns as i128;
                if margin < 0 || margin > i128::from(delay + EARLY_NS) {
                    None
                } else if margin <= 2 * i128::from(delay) {
                    // Pull the margin towards `delay`, a little per PCR (not from data that
                    // came in a burst ahead of its time: its margin says nothing of the clock).
                    let error = i128::from(delay) - margin;
                    let step = (error >> SLEW_SHIFT) as i64;
                    let wall_ns = m.wall_ns.saturating_add_signed(step);
                    self.mapping = Some(Mapping {
                        pcr: m.pcr,
                        wall_ns,
                    });
                    Some(due.saturating_add_signed(step))
                } else {
                    Some(due)
                }
            }
            _ => None,
        };
        let due = match due {
            Some(due) => due,
            None => {
                if self.mapping.is_some() {
                    self.stats.resyncs += 1;
                }
                let wall_ns = arrived_ns + delay;
                self.mapping = Some(Mapping { pcr, wall_ns });
                self.last_pcr = None;
                self.packet_ns = None;
                wall_ns
            }
        };
        let due = due.max(self.last_due_ns);
        // From the last packet timed: the PCR before, or one timed ahead of this PCR.
        let from = match self.last_pcr {
            Some(_) => self.last_due_ns,
            None => due,
        };
        let count = self.held.len() as u64;
        if let Some((_, before)) = self.last_pcr {
            // The rate since the PCR before (the packets timed ahead of this PCR included).
            let packets = count + self.timed_since_pcr;
            self.packet_ns = Some((due - before) / packets.max(1));
        }
        for (k, p) in (1..=count).zip(self.held.drain(..)) {
            let at = from + (due - from) * k / count;
            self.timed.push_back((at, p));
        }
        self.timed_since_pcr = 0;
        self.last_due_ns = due;
        self.last_pcr = Some((pcr, due));
        self.held_since_ns = None;
    }

    /// Held packets that no PCR will time go out `delay` after they arrived (or now).
    fn release_held(&mut self, now_ns: u64) {
        if self.held.is_empty() {
            return;
        }
        let at = self
            .held_since_ns
            .map_or(now_ns, |t| t + self.config.delay_ns)
            .max(self.last_due_ns);
        self.stats.unpaced += self.held.len() as u64;
        for p in self.held.drain(..) {
            self.timed.push_back((at, p));
        }
        self.last_due_ns = at;
        self.held_since_ns = None;
    }

    /// When [`Pacer::poll`] next has something to do, if anything is held.
    pub fn next_due(&self) -> Option<u64> {
        let timed = self.timed.len();
        let datagram = if timed >= DATAGRAM_PACKETS {
            self.timed.get(DATAGRAM_PACKETS - 1).map(|t| t.0)
        } else if self.held.is_empty() {
            self.timed.front().map(|t| t.0 + SHORT_AFTER_NS)
        } else {
            // Waiting for the next PCR; held packets are timed at the last rate once due.
            let need = (DATAGRAM_PACKETS - timed) as u64;
            self.packet_ns
                .filter(|_| self.held.len() as u64 >= need)
                .map(|step| self.last_due_ns + step * need)
        };
        let unpaced = self.held_since_ns.map(|t| t + NO_PCR_NS);
        match (datagram, unpaced) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Time held packets at the last rate while they are due by `now_ns` and a datagram lacks
    /// them: the next PCR is later than their time.
    fn time_ahead(&mut self, now_ns: u64) {
        let Some(step) = self.packet_ns else {
            return;
        };
        while self.timed.len() < DATAGRAM_PACKETS {
            let at = self.last_due_ns + step;
            if at > now_ns {
                break;
            }
            let Some(p) = self.held.pop_front() else {
                break;
            };
            self.timed.push_back((at, p));
            self.last_due_ns = at;
            self.timed_since_pcr += 1;
        }
        if self.held.is_empty() {
            self.held_since_ns = None;
        }
    }

    /// The next datagram due by `now_ns`, if one is: its packets are at the front of
    /// [`Pacer::datagram`].
    pub fn poll(&mut self, now_ns: u64) -> Option<Due> {
        if self.held_since_ns.is_some_and(|t| now_ns >= t + NO_PCR_NS) {
            self.release_held(now_ns);
            // Without PCRs the clock cannot be trusted any more.
            self.mapping = None;
            self.last_pcr = None;
            self.packet_ns = None;
        }
        if self.timed.len() < DATAGRAM_PACKETS && !self.held.is_empty() {
            self.time_ahead(now_ns);
        }
        let due = self.next_due()?;
        if due > now_ns {
            return None;
        }
        // Seven packets when seven are due; fewer (those due) at the end of a burst.
        let count = self
            .timed
            .iter()
            .take(DATAGRAM_PACKETS)
            .take_while(|(at, _)| *at <= now_ns)
            .count();
        if count == 0 {
            return None;
        }
        let due_ns = match self.timed.get(count - 1) {
            Some((at, _)) => *at,
            None => due,
        };
        self.datagram.clear();
        for (_, p) in self.timed.drain(..count) {
            self.datagram.extend_from_slice(&p);
        }
        self.stats.datagrams += 1;
        Some(Due {
            due_ns,
            packets: count,
        })
    }

    /// The packets of the datagram [`Pacer::poll`] last handed out.
    pub fn datagram(&self) -> &[u8] {
        &self.datagram
    }
}

/// How far PCR `b` is from `a`, either way, across the wrap.
fn pcr_distance(a: u64, b: u64) -> u64 {
    let forward = pcr_after(a, b);
    forward.min(PCR_WRAP - forward)
}

/// Ticks from PCR `a` forward to PCR `b`, across the wrap.
fn pcr_after(a: u64, b: u64) -> u64 {
    (b + PCR_WRAP - a % PCR_WRAP) % PCR_WRAP
}

fn ticks_to_ns(ticks: u64) -> u64 {
    (u128::from(ticks) * 1000 / 27) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::{Generator, GeneratorConfig};
    use crate::ts::ContinuityTracker;

    const MS: u64 = 1_000_000;

    /// `seconds` of the generator's stream, each packet with the time (ns) it is due at its
    /// rate, and the stream's bytes.
    fn stream(seconds: u64) -> Vec<(u64, [u8; PACKET_SIZE])> {
        let config = GeneratorConfig::default();
        let rate = u64::from(config.bitrate);
        let mut g = Generator::new(config).unwrap();
        let count = rate * seconds / 8 / PACKET_SIZE as u64;
        (0..count)
            .map(|i| {
                let mut p = [0u8; PACKET_SIZE];
                g.next_packet(&mut p);
                (i * PACKET_SIZE as u64 * 8 * 1_000_000_000 / rate, p)
            })
            .collect()
    }

    /// Feed `packets` in bursts of `burst` packets, arriving `lag(i)` after their time; poll
    /// every ms; the datagrams with the time they went out.
    fn run(
        pacer: &mut Pacer,
        packets: &[(u64, [u8; PACKET_SIZE])],
        burst: usize,
        lag: impl Fn(usize) -> u64,
    ) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        let mut next = 0;
        let end = packets.last().map_or(0, |p| p.0) + 2_000 * MS;
        let mut now = 0;
        while now < end {
            while next < packets.len() {
                let last = (next + burst).min(packets.len()) - 1;
                let arrives = packets[last].0 + lag(next);
                if arrives > now {
                    break;
                }
                let mut bytes = Vec::new();
                for (_, p) in &packets[next..=last] {
                    bytes.extend_from_slice(p);
                }
                pacer.push(&bytes, arrives);
                next = last + 1;
            }
            while let Some(due) = pacer.poll(now) {
                assert!(due.due_ns <= now);
                out.push((now, pacer.datagram().to_vec()));
            }
            now += MS;
        }
        out
    }

    #[test]
    fn bursts_go_out_at_the_rate_the_pcrs_give() {
        let packets = stream(6);
        let mut pacer = Pacer::new(PacerConfig::default());
        // Whole bursts of 100 ms arrive at once.
        let out = run(&mut pacer, &packets, 66, |_| 0);
        let sent: usize = out.iter().map(|(_, d)| d.len() / PACKET_SIZE).sum();
        assert_eq!(sent, packets.len());
        assert!(out
            .iter()
            .rev()
            .skip(1)
            .all(|(_, d)| d.len() == 7 * PACKET_SIZE));
        // Past the first PCR, each datagram leaves within 3 ms (the poll step, and the PCR
        // interval's rounding) of its last packet's time plus one constant: the delay.
        let mut index = 0;
        let mut lags = Vec::new();
        for (at, d) in &out {
            index += d.len() / PACKET_SIZE;
            lags.push((index, *at as i64 - packets[index - 1].0 as i64));
        }
        // The first PCR came up to a burst (66 packets, 66 ms) late.
        let ms = MS as i64;
        // (The last datagram is short: it waits 50 ms for more that does not come.)
        lags.pop();
        for pair in lags.windows(2).skip(10) {
            let ((_, a), (index, b)) = (pair[0], pair[1]);
            assert!((a - b).abs() <= 2 * ms, "{index}: {a} then {b}");
            assert!((195 * ms..=275 * ms).contains(&b), "{index}: {b}");
        }
        assert_eq!(pacer.stats().resyncs, 0);
        assert_eq!(pacer.stats().unpaced, 0);
    }

    #[test]
    fn counters_sent_are_continuous_across_a_gap_and_repeats_are_left_out() {
        let packets = stream(2);
        let mut pacer = Pacer::new(PacerConfig::default());
        let mut kept: Vec<_> = packets[..500].to_vec();
        // A gap of 300 packets, then a packet with payload repeated.
        let at = (800..1000)
            .rev()
            .find(|&i| {
                let p = Packet::new(&packets[i].1).unwrap();
                p.has_payload() && p.pid() != Pid::NULL
            })
            .unwrap();
        kept.extend_from_slice(&packets[800..=at]);
        kept.push(packets[at]);
        kept.extend_from_slice(&packets[at + 1..]);
        let out = run(&mut pacer, &kept, 7, |_| 0);
        let mut tracker = ContinuityTracker::new();
        let mut checked = 0;
        for (_, d) in &out {
            for p in d.chunks_exact(PACKET_SIZE) {
                let p: &[u8; PACKET_SIZE] = p.try_into().unwrap();
                let packet = Packet::new(p).unwrap();
                assert_eq!(tracker.check(&packet), crate::ts::Continuity::Ok);
                checked += 1;
            }
        }
        assert_eq!(checked, kept.len() - 1);
        assert_eq!(pacer.stats().skipped, 1);
    }

    #[test]
    fn a_sender_with_a_faster_clock_is_followed_without_resyncs() {
        let packets = stream(20);
        let mut pacer = Pacer::new(PacerConfig::default());
        // The sender's clock runs 200 ppm fast against ours: it arrives ever earlier.
        let out = run(&mut pacer, &packets, 7, |i| {
            let t = packets[i].0;
            20 * MS - t / 5000
        });
        let sent: usize = out.iter().map(|(_, d)| d.len() / PACKET_SIZE).sum();
        assert_eq!(sent, packets.len());
        assert_eq!(pacer.stats().resyncs, 0);
    }

    #[test]
    fn a_pcr_that_jumps_maps_the_clock_again() {
        let packets = stream(3);
        let mut pacer = Pacer::new(PacerConfig::default());
        let half = packets.len() / 2;
        let mut bytes = Vec::new();
        for (_, p) in &packets[..half] {
            bytes.extend_from_slice(p);
        }
        pacer.push(&bytes, 0);
        // The second half again, as a new source whose PCRs start where the first's did.
        let mut later = Vec::new();
        for (_, p) in &packets[..half] {
            later.extend_from_slice(p);
        }
        pacer.push(&later, 1_500 * MS);
        assert_eq!(pacer.stats().resyncs, 1);
        let mut sent = 0;
        let mut now = 0;
        while now < 5_000 * MS {
            while let Some(d) = pacer.poll(now) {
                sent += d.packets;
            }
            now += MS;
        }
        assert_eq!(sent, 2 * half - pacer.stats().skipped as usize);
    }

    #[test]
    fn packets_without_pcrs_go_out_after_a_second_and_what_is_held_is_bounded() {
        let mut pacer = Pacer::new(PacerConfig {
            delay_ns: 100 * MS,
            max_packets: 1000,
        });
        let mut p = [0xFFu8; PACKET_SIZE];
        p[..4].copy_from_slice(&[0x47, 0x01, 0x00, 0x10]);
        let mut bytes = Vec::new();
        for cc in 0..10u8 {
            p[3] = 0x10 | cc;
            bytes.extend_from_slice(&p);
        }
        pacer.push(&bytes, 0);
        assert_eq!(pacer.next_due(), Some(NO_PCR_NS));
        assert!(pacer.poll(NO_PCR_NS - 1).is_none());
        let d = pacer.poll(NO_PCR_NS).unwrap();
        assert_eq!(d.packets, 7);
        assert_eq!(pacer.stats().unpaced, 10);
        // Far more than the bound, never released: dropped, counted.
        for round in 0..200u64 {
            let mut bytes = Vec::new();
            for i in 0..10u8 {
                p[3] = 0x10 | ((round as u8).wrapping_mul(10).wrapping_add(i) & 0x0F);
                bytes.extend_from_slice(&p);
            }
            pacer.push(&bytes, NO_PCR_NS + round);
            assert!(pacer.held() <= 1000);
        }
        assert!(pacer.stats().overflowed > 0);
        // Garbage is counted and skipped.
        pacer.push(&[0u8; PACKET_SIZE], NO_PCR_NS);
        assert!(pacer.stats().skipped >= 1);
    }

    #[test]
    fn what_ffmpeg_made_goes_out_whole_and_in_order() {
        for name in ["h264_aac_720p25.ts", "h265_mp2.ts", "mpts.ts"] {
            let path = format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
            let input = std::fs::read(&path).unwrap();
            let mut pacer = Pacer::new(PacerConfig::default());
            let mut out = Vec::new();
            let mut now = 0u64;
            for chunk in input.chunks(7 * PACKET_SIZE * 3) {
                pacer.push(chunk, now);
                while pacer.poll(now).is_some() {
                    out.extend_from_slice(pacer.datagram());
                }
                now += 1_000_000;
            }
            now += 100_000_000_000;
            while pacer.poll(now).is_some() {
                out.extend_from_slice(pacer.datagram());
            }
            assert_eq!(pacer.stats().skipped, 0, "{name}");
            assert_eq!(out.len(), input.len() - input.len() % PACKET_SIZE, "{name}");
            for (i, (a, b)) in input
                .chunks_exact(PACKET_SIZE)
                .zip(out.chunks_exact(PACKET_SIZE))
                .enumerate()
            {
                assert_eq!(a[..3], b[..3], "{name}: packet {i}");
                assert_eq!(a[4..], b[4..], "{name}: packet {i}");
            }
        }
    }
}
