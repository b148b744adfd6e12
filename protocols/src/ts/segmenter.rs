//! The segmenter: cuts one program of a transport stream into HLS segments.
//!
//! ```text
//!  packets ─ Demuxer ─┬─ PAT/PMT: pick the program, write its PAT+PMT (our counters)
//!                     ├─ key PID PES start: hold packets until the picture type is known
//!                     └─ keyframe: past the target duration? seal, start a segment with PAT+PMT
//! ```
//!
//! Output is a single-program transport stream: the selected program's elementary streams
//! (data PIDs such as SCTE-35 included) byte for byte, and PAT/PMT packets written by the
//! segmenter with counters of its own, so the stream stays continuous across the inserted
//! tables. Every segment starts with PAT, PMT and a keyframe (but see `max_duration` below); with
//! [`SegmenterConfig::psi_at_keyframes`] every keyframe inside a segment gets PAT and PMT in front
//! too, so that a progressive viewer can join there.
//!
//! A keyframe is known from the bitstream (H.264 IDR, H.265 IRAP), which may sit several packets
//! after the PES start (long SEI, parameter sets): packets from the start of each video PES are
//! held until its first slice is seen, then released, after the cut if there is one. A program
//! without video is cut on audio PES starts.
//!
//! With [`SegmenterConfig::part_target`] set, segments of a program with video are also cut
//! into partial segments (low-latency HLS): between access units, each at most the target long
//! in decode time (one access unit at least), a new one at every keyframe (independent), the
//! last ending with its segment; [`SegmenterEvent::PartEnd`] comes after a part's last packet.
//! With [`SegmenterConfig::max_duration`] also set, a segment whose next keyframe is late is
//! sealed before it grows past that, at a picture that is not a keyframe (one whose PTS is the
//! highest yet, so no reordered picture straddles the cut): low-latency HLS forbids a target
//! duration that changes, and the segment after such a cut is not independent (the next
//! keyframe then starts a segment, however soon).
//!
//! Durations are exact PTS spans: from this segment's first keyframe to the next segment's. A
//! PTS jump forward larger than [`SegmenterConfig::discontinuity_threshold`], a jump back of
//! more than a second (farther than any picture reordering goes: a restarted encoder), or a
//! PCR discontinuity signalled by the source, seals the segment at the next keyframe and marks
//! the next one as a discontinuity.

use super::demux::{DemuxConfig, DemuxError, DemuxEvent, Demuxer};
use super::packet::{set_continuity_counter, PACKET_SIZE};
use super::pes::{Timestamp, Unwrapper, CLOCK_90KHZ};
use super::psi::{packetize_section, Pat, PatEntry, Pmt};
use super::types::{ContinuityCounter, Pid, StreamKind};

/// How to cut.
#[derive(Clone, Copy, Debug)]
pub struct SegmenterConfig {
    /// Cut at the first keyframe at least this long (90 kHz ticks) after the segment start.
    pub target_duration: u64,
    /// The program to segment; `None` takes the first program with video or audio.
    pub program: Option<u16>,
    /// Sequence number of the first segment.
    pub first_sequence: u64,
    /// Put PAT and PMT in front of every keyframe, not only at segment starts.
    pub psi_at_keyframes: bool,
    /// Packets held while waiting to learn whether a PES starts with a keyframe.
    pub max_held_packets: usize,
    /// A PTS jump forward larger than this (90 kHz ticks) is a discontinuity (any jump back
    /// of more than a second is one too).
    pub discontinuity_threshold: u64,
    /// Cut partial segments of at most this long (90 kHz ticks); `None`: no parts.
    pub part_target: Option<u64>,
    /// Seal a segment of a program with video before it grows past this (90 kHz ticks),
    /// without waiting for a keyframe; `None`: only at keyframes.
    pub max_duration: Option<u64>,
}

impl Default for SegmenterConfig {
    fn default() -> Self {
        Self {
            target_duration: 2 * CLOCK_90KHZ,
            program: None,
            first_sequence: 0,
            psi_at_keyframes: true,
            max_held_packets: 1024,
            discontinuity_threshold: 10 * CLOCK_90KHZ,
            part_target: None,
            max_duration: None,
        }
    }
}

/// A sealed segment.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SegmentInfo {
    /// Media sequence number.
    pub sequence: u64,
    /// PTS of the keyframe that starts it.
    pub start_pts: Timestamp,
    /// Exact duration in 90 kHz ticks.
    pub duration: u64,
    /// Transport packets in it.
    pub packets: u64,
    /// It follows a discontinuity (source restart or timestamp jump).
    pub discontinuity: bool,
    /// It starts with a keyframe (not so only after a cut forced by `max_duration`).
    pub independent: bool,
}

/// What the segmenter produces, in stream order.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum SegmenterEvent<'a> {
    /// A segment begins; PAT, PMT and a keyframe follow (a picture that is not one when
    /// `independent` is false).
    SegmentStart {
        /// Media sequence number.
        sequence: u64,
        /// PTS of its first picture.
        pts: Timestamp,
        /// It follows a discontinuity.
        discontinuity: bool,
        /// It starts with a keyframe.
        independent: bool,
    },
    /// A keyframe inside a segment; PAT and PMT follow when `psi_at_keyframes` is set.
    Keyframe {
        /// Its PTS.
        pts: Timestamp,
    },
    /// A packet of the current segment.
    Packet(&'a [u8; PACKET_SIZE]),
    /// The current partial segment is complete (its packets came before this); the next
    /// packet, if the segment goes on, starts the next part.
    PartEnd(PartInfo),
    /// The current segment is complete.
    SegmentEnd(SegmentInfo),
    /// The program's tables changed (or were first read): its PMT, before any packet of
    /// the program that follows them.
    Program(&'a Pmt),
}

/// A completed partial segment.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PartInfo {
    /// Its index in its segment, from 0.
    pub index: u32,
    /// Duration in 90 kHz ticks (decode time, from its first access unit to the next part's).
    pub duration: u64,
    /// It starts with a keyframe.
    pub independent: bool,
    /// Transport packets in it.
    pub packets: u64,
}

/// Counters of the segmenter.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct SegmenterStats {
    /// Segments sealed.
    pub segments: u64,
    /// Packets emitted (inserted PSI included).
    pub packets_out: u64,
    /// Packets dropped before the first keyframe.
    pub dropped_before_start: u64,
    /// Packets dropped for being unreadable or marked with transport_error_indicator.
    pub dropped_errors: u64,
    /// Times the lookahead hit its limit without finding a slice.
    pub lookahead_overflows: u64,
    /// Discontinuities marked.
    pub discontinuities: u64,
    /// Segments sealed early at a picture that is not a keyframe (`max_duration`).
    pub forced_cuts: u64,
}

#[derive(Debug)]
struct Selected {
    pmt_pid: Pid,
    key_pid: Pid,
    key_is_video: bool,
    pmt: Pmt,
}

#[derive(Clone, Copy, Debug)]
struct Open {
    sequence: u64,
    start_pts: Timestamp,
    start: i64,
    packets: u64,
    discontinuity: bool,
    independent: bool,
    /// End of the last picture seen in it (PTS plus one frame), for the last segment.
    end: i64,
}

/// The partial segment being cut.
#[derive(Clone, Copy, Debug)]
struct OpenPart {
    index: u32,
    /// Decode time of its first access unit (unwrapped, 90 kHz).
    start: i64,
    independent: bool,
    /// The segment's packet count when it began.
    first_packet: u64,
}

/// What the demuxer said about one packet.
#[derive(Default)]
struct Seen {
    error: bool,
    tables_changed: bool,
    key_pes_start: bool,
    key_pes_pts: Option<Timestamp>,
    picture: Option<(bool, Option<Timestamp>, Option<Timestamp>, u64)>,
    pcr_discontinuity: bool,
}

/// The HLS segmenter (see the module docs).
#[derive(Debug)]
pub struct Segmenter {
    config: SegmenterConfig,
    demux: Demuxer,
    selected: Option<Selected>,
    pass: Vec<bool>,
    pat_packets: Vec<[u8; PACKET_SIZE]>,
    pmt_packets: Vec<[u8; PACKET_SIZE]>,
    pat_cc: ContinuityCounter,
    pmt_cc: ContinuityCounter,
    held: Vec<[u8; PACKET_SIZE]>,
    holding: Option<u64>,
    open: Option<Open>,
    next_sequence: u64,
    pending_discontinuity: bool,
    pts: Unwrapper,
    last_pts: Option<i64>,
    last_dts: Option<i64>,
    frame_ticks: i64,
    dts: Unwrapper,
    stats: SegmenterStats,
    part: Option<OpenPart>,
}

impl Segmenter {
    /// A segmenter that has seen nothing yet.
    pub fn new(config: SegmenterConfig) -> Self {
        Self {
            config,
            demux: Demuxer::new(DemuxConfig {
                program: config.program,
            }),
            selected: None,
            pass: vec![false; Pid::COUNT],
            pat_packets: Vec::new(),
            pmt_packets: Vec::new(),
            pat_cc: ContinuityCounter::from_bits(0),
            pmt_cc: ContinuityCounter::from_bits(0),
            held: Vec::new(),
            holding: None,
            open: None,
            next_sequence: config.first_sequence,
            pending_discontinuity: false,
            pts: Unwrapper::default(),
            last_pts: None,
            last_dts: None,
            frame_ticks: CLOCK_90KHZ as i64 / 25,
            dts: Unwrapper::default(),
            stats: SegmenterStats::default(),
            part: None,
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> SegmenterStats {
        self.stats
    }

    /// What it was made with.
    pub fn config(&self) -> &SegmenterConfig {
        &self.config
    }

    /// The demuxer inside, for its tables and counters.
    pub fn demuxer(&self) -> &Demuxer {
        &self.demux
    }

    /// The PMT of the program being segmented.
    pub fn pmt(&self) -> Option<&Pmt> {
        self.selected.as_ref().map(|s| &s.pmt)
    }

    /// Feed one packet.
    pub fn push_packet(
        &mut self,
        bytes: &[u8; PACKET_SIZE],
        out: &mut impl FnMut(SegmenterEvent<'_>),
    ) {
        let index = self.demux.packet_index();
        let seen = self.observe(bytes);
        if seen.error {
            self.stats.dropped_errors += 1;
            return;
        }
        if seen.tables_changed {
            self.select();
            if let Some(sel) = &self.selected {
                out(SegmenterEvent::Program(&sel.pmt));
            }
        }
        let Some(sel) = &self.selected else {
            self.stats.dropped_before_start += 1;
            return;
        };
        let pid = Pid::from_bits(u16::from(bytes[1]) << 8 | u16::from(bytes[2]));
        let (key_pid, pmt_pid, key_is_video) = (sel.key_pid, sel.pmt_pid, sel.key_is_video);
        if seen.pcr_discontinuity {
            self.pending_discontinuity = true;
        }
        if pid == key_pid && seen.key_pes_start {
            self.release_held(out);
            if key_is_video {
                self.holding = Some(index);
            }
        }
        if pid == Pid::PAT || pid == pmt_pid {
            let unit_start = bytes[1] & 0x40 != 0;
            if pid == Pid::PAT && unit_start {
                self.emit_pat(out);
            } else if pid == pmt_pid && (unit_start || seen.tables_changed) {
                self.emit_pmt(out);
            }
        } else if self.pass[pid.index()] {
            self.emit(bytes, out);
        }
        if pid == key_pid && !key_is_video && seen.key_pes_start {
            if let Some(pts) = seen.key_pes_pts {
                self.note_picture(pts, None);
                self.access_point(pts, out);
            }
        }
        if let Some((keyframe, pts, dts, pes_packet)) = seen.picture {
            let decode = pts.map(|pts| self.note_picture(pts, dts));
            if self.holding == Some(pes_packet) {
                match (pts, decode) {
                    (Some(pts), _) if keyframe => self.access_point_at(pts, decode, true, out),
                    (Some(pts), Some(decode)) if self.overdue() => {
                        self.stats.forced_cuts += 1;
                        self.access_point_at(pts, Some(decode), false, out)
                    }
                    _ => {
                        if let Some(decode) = decode {
                            self.part_boundary(decode, false, out);
                        }
                        self.release_held(out)
                    }
                }
            }
        }
        if self.held.len() >= self.config.max_held_packets {
            self.stats.lookahead_overflows += 1;
            self.release_held(out);
        }
    }

    /// The input starts again from another source (a reconnect, a failover switch): the next
    /// segment is a discontinuity, whatever its timestamps (two sources may be close in
    /// time and still not continue each other).
    pub fn source_restarted(&mut self) {
        if self.last_pts.is_some() {
            self.pending_discontinuity = true;
        }
    }

    /// End of input: release what is held and seal the open segment.
    pub fn finish(&mut self, out: &mut impl FnMut(SegmenterEvent<'_>)) {
        self.release_held(out);
        if let Some(part) = self.part {
            let end = self.last_dts.unwrap_or(part.start).max(part.start) + self.frame_ticks;
            self.end_part(end, out);
        }
        if let Some(open) = self.open.take() {
            self.seal(open, open.end, out);
        }
    }

    fn observe(&mut self, bytes: &[u8; PACKET_SIZE]) -> Seen {
        let key_pid = self.selected.as_ref().map(|s| s.key_pid);
        let pcr_pid = self.selected.as_ref().map(|s| s.pmt.pcr_pid);
        let mut seen = Seen::default();
        self.demux.push_packet(bytes, &mut |event| match event {
            // Unreadable or flagged packets are dropped; content errors (a bad PES header, a
            // bad section) travel on: the packet is valid TS and the player decides.
            DemuxEvent::Error {
                error: DemuxError::Packet(_) | DemuxError::TransportError,
                ..
            } => seen.error = true,
            DemuxEvent::Pat(_) | DemuxEvent::Pmt(_) => seen.tables_changed = true,
            DemuxEvent::PesStart { pid, header, .. } if Some(pid) == key_pid => {
                seen.key_pes_start = true;
                seen.key_pes_pts = header.pts;
            }
            DemuxEvent::Picture {
                pid,
                keyframe,
                pts,
                dts,
                pes_packet,
                ..
            } if Some(pid) == key_pid && pts.is_some() && seen.picture.is_none() => {
                // Only the first picture of a PES (the one with its PTS) can start an
                // access point.
                seen.picture = Some((keyframe, pts, dts, pes_packet));
            }
            DemuxEvent::Pcr {
                pid,
                discontinuity: true,
                ..
            } if Some(pid) == pcr_pid => {
                seen.pcr_discontinuity = true;
            }
            _ => {}
        });
        seen
    }

    /// Pick the program and rebuild the PSI we write after a table change.
    fn select(&mut self) {
        let chosen = self.demux.pmts().find(|pmt| {
            self.config.program.is_none_or(|n| n == pmt.program_number)
                && pmt
                    .streams
                    .iter()
                    .any(|s| s.codec.kind() != StreamKind::Data)
        });
        let Some(pmt) = chosen.cloned() else { return };
        let Some(pmt_pid) = self
            .demux
            .pat()
            .and_then(|pat| {
                pat.programs
                    .iter()
                    .find(|p| p.program_number == pmt.program_number)
            })
            .map(|p| p.pmt_pid)
        else {
            return;
        };
        let video = pmt
            .streams
            .iter()
            .find(|s| s.codec.kind() == StreamKind::Video);
        let audio = pmt
            .streams
            .iter()
            .find(|s| s.codec.kind() == StreamKind::Audio);
        let Some((key_pid, key_is_video)) = video
            .map(|s| (s.pid, true))
            .or(audio.map(|s| (s.pid, false)))
        else {
            return;
        };
        if self.selected.as_ref().is_some_and(|s| s.key_pid != key_pid) {
            self.holding = None;
            self.held.clear();
        }
        self.pass.fill(false);
        for s in &pmt.streams {
            self.pass[s.pid.index()] = true;
        }
        if pmt.pcr_pid != Pid::NULL {
            self.pass[pmt.pcr_pid.index()] = true;
        }
        let ts_id = self.demux.pat().map_or(1, |p| p.transport_stream_id);
        let pat = Pat {
            transport_stream_id: ts_id,
            version: self.demux.pat().map_or(0, |p| p.version),
            programs: vec![PatEntry {
                program_number: pmt.program_number,
                pmt_pid,
            }],
            network_pid: None,
        };
        self.pat_packets.clear();
        packetize_section(
            &pat.to_section(),
            Pid::PAT,
            ContinuityCounter::from_bits(0),
            &mut self.pat_packets,
        );
        self.pmt_packets.clear();
        packetize_section(
            &pmt.to_section(),
            pmt_pid,
            ContinuityCounter::from_bits(0),
            &mut self.pmt_packets,
        );
        self.selected = Some(Selected {
            pmt_pid,
            key_pid,
            key_is_video,
            pmt,
        });
    }

    /// A picture's timestamps; returns its decode time (unwrapped DTS, or PTS without one).
    fn note_picture(&mut self, pts: Timestamp, dts: Option<Timestamp>) -> i64 {
        let at = self.pts.extend(pts);
        let mut decode = at;
        if let Some(dts) = dts {
            let d = self.dts.extend(dts);
            decode = d;
            if let Some(last) = self.last_dts {
                let step = d - last;
                if step > 0 && step < CLOCK_90KHZ as i64 {
                    self.frame_ticks = step;
                }
            }
            self.last_dts = Some(d);
        }
        let jumped = self.last_pts.is_some_and(|last| {
            let step = at - last;
            step > self.config.discontinuity_threshold as i64 || step < -(CLOCK_90KHZ as i64)
        });
        self.last_pts = Some(at);
        if jumped {
            self.pending_discontinuity = true;
        }
        if let Some(open) = self.open.as_mut().filter(|_| !self.pending_discontinuity) {
            open.end = open.end.max(at + self.frame_ticks);
        }
        decode
    }

    /// An access unit with decode time `decode` begins (its packets not yet emitted): end
    /// the current part before it when it would take the part past the target, or when it
    /// is a keyframe (a new, independent part). No parts without a target or a segment.
    fn part_boundary(
        &mut self,
        decode: i64,
        keyframe: bool,
        out: &mut impl FnMut(SegmenterEvent<'_>),
    ) {
        let (Some(target), Some(open)) = (self.config.part_target, self.open) else {
            return;
        };
        let Some(part) = self.part else {
            self.part = Some(OpenPart {
                index: 0,
                start: decode,
                independent: keyframe,
                first_packet: open.packets,
            });
            return;
        };
        let full = decode + self.frame_ticks - part.start > target as i64;
        if (full || keyframe) && open.packets > part.first_packet {
            self.end_part(decode, out);
            self.part = Some(OpenPart {
                index: part.index + 1,
                start: decode,
                independent: keyframe,
                first_packet: open.packets,
            });
        }
    }

    /// The current part ends at decode time `end`.
    fn end_part(&mut self, end: i64, out: &mut impl FnMut(SegmenterEvent<'_>)) {
        let (Some(part), Some(open)) = (self.part.take(), self.open) else {
            return;
        };
        out(SegmenterEvent::PartEnd(PartInfo {
            index: part.index,
            duration: (end - part.start).max(0) as u64,
            independent: part.independent,
            packets: open.packets - part.first_packet,
        }));
    }

    fn access_point(&mut self, pts: Timestamp, out: &mut impl FnMut(SegmenterEvent<'_>)) {
        self.access_point_at(pts, None, true, out);
    }

    /// The picture just noted is not a keyframe: whether the open segment must end before
    /// it (`max_duration`, within four frames of it), and may (its PTS is the highest yet;
    /// no discontinuity waits for a keyframe).
    fn overdue(&self) -> bool {
        let (Some(max), Some(open), Some(at)) =
            (self.config.max_duration, self.open, self.last_pts)
        else {
            return false;
        };
        !self.pending_discontinuity
            && at + self.frame_ticks >= open.end
            && at - open.start + 4 * self.frame_ticks > max as i64
    }

    /// A keyframe (or an audio PES of an audio-only program) with PTS `pts` and, for video,
    /// decode time `decode`: cut a segment here when due, otherwise mark the keyframe. Not
    /// a keyframe (`keyframe` false): cut here, the segment is overdue.
    fn access_point_at(
        &mut self,
        pts: Timestamp,
        decode: Option<i64>,
        keyframe: bool,
        out: &mut impl FnMut(SegmenterEvent<'_>),
    ) {
        let at = self.last_pts.unwrap_or(pts.ticks() as i64);
        let discontinuity = keyframe && std::mem::take(&mut self.pending_discontinuity);
        let cut = match self.open {
            None => true,
            Some(_) if !keyframe => true,
            // After a forced cut, the next keyframe starts a segment again however soon.
            Some(open) => {
                discontinuity
                    || (!open.independent && at > open.start)
                    || at - open.start >= self.config.target_duration as i64
            }
        };
        if cut {
            if let (Some(decode), Some(part)) = (decode, self.part) {
                // The last part ends with its segment (before a discontinuity: one frame
                // after it began, as far as is known).
                let end = if discontinuity {
                    part.start + self.frame_ticks
                } else {
                    decode.max(part.start)
                };
                self.end_part(end, out);
            }
            if let Some(open) = self.open.take() {
                let end = if discontinuity { open.end } else { at };
                self.seal(open, end, out);
            }
            let sequence = self.next_sequence;
            self.next_sequence += 1;
            let marked = discontinuity && sequence != self.config.first_sequence;
            self.stats.discontinuities += u64::from(marked);
            out(SegmenterEvent::SegmentStart {
                sequence,
                pts,
                discontinuity: marked,
                independent: keyframe,
            });
            self.open = Some(Open {
                sequence,
                start_pts: pts,
                start: at,
                packets: 0,
                discontinuity: marked,
                independent: keyframe,
                end: at + self.frame_ticks,
            });
            if let Some(decode) = decode {
                self.part = None;
                self.part_boundary(decode, keyframe, out);
            }
        } else {
            if let Some(decode) = decode {
                self.part_boundary(decode, true, out);
            }
            out(SegmenterEvent::Keyframe { pts });
        }
        if cut || self.config.psi_at_keyframes {
            self.holding = None; // PSI goes out ahead of the held packets
            self.emit_pat(out);
            self.emit_pmt(out);
        }
        self.release_held(out);
    }

    fn seal(&mut self, open: Open, end: i64, out: &mut impl FnMut(SegmenterEvent<'_>)) {
        self.stats.segments += 1;
        out(SegmenterEvent::SegmentEnd(SegmentInfo {
            sequence: open.sequence,
            start_pts: open.start_pts,
            duration: (end - open.start).max(0) as u64,
            packets: open.packets,
            discontinuity: open.discontinuity,
            independent: open.independent,
        }));
    }

    fn release_held(&mut self, out: &mut impl FnMut(SegmenterEvent<'_>)) {
        self.holding = None;
        let held = std::mem::take(&mut self.held);
        for p in &held {
            self.emit(p, out);
        }
        self.held = held;
        self.held.clear();
    }

    fn emit_pat(&mut self, out: &mut impl FnMut(SegmenterEvent<'_>)) {
        let mut packets = std::mem::take(&mut self.pat_packets);
        for p in &mut packets {
            set_continuity_counter(p, self.pat_cc);
            self.pat_cc = self.pat_cc.next();
            self.emit(p, out);
        }
        self.pat_packets = packets;
    }

    fn emit_pmt(&mut self, out: &mut impl FnMut(SegmenterEvent<'_>)) {
        let mut packets = std::mem::take(&mut self.pmt_packets);
        for p in &mut packets {
            set_continuity_counter(p, self.pmt_cc);
            self.pmt_cc = self.pmt_cc.next();
            self.emit(p, out);
        }
        self.pmt_packets = packets;
    }

    fn emit(&mut self, packet: &[u8; PACKET_SIZE], out: &mut impl FnMut(SegmenterEvent<'_>)) {
        if self.holding.is_some() {
            self.held.push(*packet);
            return;
        }
        match self.open.as_mut() {
            Some(open) => {
                open.packets += 1;
                self.stats.packets_out += 1;
                out(SegmenterEvent::Packet(packet));
            }
            None => self.stats.dropped_before_start += 1,
        }
    }
}
