//! The demuxer: packets in, tables, PES starts, pictures, audio frames and errors out.
//!
//! It follows the PAT to the PMTs of the selected program (or of all programs), tracks every
//! elementary stream they list, checks continuity, and scans H.264/H.265 and audio streams to
//! find pictures, keyframes and frames. Data streams (SCTE-35, subtitles, teletext, private
//! data) are tracked for continuity only. Nothing here copies or rewrites a packet.
//!
//! Errors never stop it: a malformed packet, a bad section or a bad PES header is reported as a
//! [`DemuxEvent::Error`], counted, and skipped; a continuity gap drops the PES or section it
//! cut, and the stream resumes at the next unit start.
//!
//! Why one file of about 860 lines (140 of them tests): PAT, PMT and PES assembly share the
//! per-PID table and its continuity state, which is the demuxer.

use super::continuity::{Continuity, ContinuityTracker};
use super::packet::{Packet, PacketError, Pcr, PACKET_SIZE};
use super::pes::{PesError, PesHeader, PesHeaderReader, Timestamp};
#[cfg(test)]
use super::psi::MAX_SECTION;
use super::psi::{long_section, Pat, Pmt, PsiError, SectionAssembler, TABLE_PAT, TABLE_PMT};
use super::sync::{PacketSync, SyncStats};
use super::types::{Codec, Pid, StreamType};
use crate::es::{AudioCodec, AudioFrame, AudioScanner, VideoCodec, VideoScanner};

/// What to demux.
#[derive(Clone, Copy, Debug, Default)]
pub struct DemuxConfig {
    /// The program_number to follow; `None` follows every program in the PAT.
    pub program: Option<u16>,
}

/// What went wrong with one packet, section or PES header.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemuxError {
    /// Not a transport packet.
    #[error("malformed packet: {0}")]
    Packet(#[from] PacketError),
    /// The packet has transport_error_indicator set.
    #[error("packet marked with transport_error_indicator")]
    TransportError,
    /// A PSI section was refused.
    #[error("bad PSI section: {0}")]
    Psi(#[from] PsiError),
    /// A PES header was refused.
    #[error("bad PES header: {0}")]
    Pes(#[from] PesError),
}

/// Something the demuxer found, with the index of the packet it was found in.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum DemuxEvent<'a> {
    /// A new or changed PAT.
    Pat(&'a Pat),
    /// A new or changed PMT of a followed program.
    Pmt(&'a Pmt),
    /// A PES header on a followed elementary stream.
    PesStart {
        /// The stream.
        pid: Pid,
        /// The parsed header.
        header: PesHeader,
        /// The adaptation field of the PES's first packet set random_access_indicator.
        random_access: bool,
        /// The packet that started the PES.
        packet: u64,
    },
    /// The first slice of a picture.
    Picture {
        /// The stream.
        pid: Pid,
        /// IDR (H.264) or IRAP (H.265).
        keyframe: bool,
        /// The PTS of the PES the picture starts in, for the first picture of that PES.
        pts: Option<Timestamp>,
        /// The DTS likewise (or the PTS when the header has no DTS).
        dts: Option<Timestamp>,
        /// The packet that started the PES the picture begins in.
        pes_packet: u64,
        /// The packet in which the slice header was found.
        packet: u64,
    },
    /// An audio frame header.
    AudioFrame {
        /// The stream.
        pid: Pid,
        /// Size and duration.
        frame: AudioFrame,
        /// PES PTS plus the durations of the frames before it in the same PES.
        pts: Option<Timestamp>,
        /// The packet in which the header was found.
        packet: u64,
    },
    /// A PCR on a followed PID.
    Pcr {
        /// The PID carrying it.
        pid: Pid,
        /// The value.
        pcr: Pcr,
        /// The packet signalled a discontinuity of the time base.
        discontinuity: bool,
        /// The packet index.
        packet: u64,
    },
    /// A continuity counter that was not the expected one.
    Continuity {
        /// The PID.
        pid: Pid,
        /// The verdict (never [`Continuity::Ok`]).
        verdict: Continuity,
        /// The packet index.
        packet: u64,
    },
    /// A packet, section or PES header was refused and skipped.
    Error {
        /// The PID, when the packet was readable.
        pid: Option<Pid>,
        /// What was wrong.
        error: DemuxError,
        /// The packet index.
        packet: u64,
    },
}

/// Counters over the whole input.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct DemuxStats {
    /// Packets pushed.
    pub packets: u64,
    /// Packets that were not transport packets.
    pub malformed: u64,
    /// Packets with transport_error_indicator.
    pub transport_errors: u64,
    /// Packets with a scrambled payload (skipped).
    pub scrambled: u64,
    /// Continuity gaps on followed PIDs.
    pub continuity_gaps: u64,
    /// Duplicate packets dropped.
    pub duplicates: u64,
    /// Sections refused (bad CRC, malformed, truncated).
    pub psi_errors: u64,
    /// PES headers refused.
    pub pes_errors: u64,
    /// Synchronisation counters, when bytes were pushed rather than packets.
    pub sync: SyncStats,
}

/// Counters of one elementary stream.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct StreamStats {
    /// The stream's PID.
    pub pid: Pid,
    /// The program it belongs to.
    pub program_number: u16,
    /// Its stream_type.
    pub stream_type: StreamType,
    /// Its codec.
    pub codec: Codec,
    /// PES headers read.
    pub pes_packets: u64,
    /// Pictures (video) or frames (audio).
    pub frames: u64,
    /// Keyframes (video).
    pub keyframes: u64,
    /// Continuity gaps.
    pub continuity_gaps: u64,
    /// Payload bytes received.
    pub bytes: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    None,
    Pat,
    Pmt(usize),
    Es(usize),
    PcrOnly,
}

#[derive(Debug)]
struct Program {
    number: u16,
    pmt_pid: Pid,
    sections: SectionAssembler,
    pmt: Option<Pmt>,
    crc: Option<u32>,
}

#[derive(Debug)]
enum Scanner {
    Video(VideoScanner),
    Audio(AudioScanner),
    None,
}

#[derive(Debug)]
struct Stream {
    stats: StreamStats,
    /// The stream carries PSI-style sections (SCTE-35, private sections), not PES.
    sections: bool,
    scanner: Scanner,
    header: PesHeaderReader,
    in_header: bool,
    in_pes: bool,
    random_access: bool,
    pes_packet: u64,
    pts: Option<Timestamp>,
    dts: Option<Timestamp>,
    frames_in_pes: u32,
    ticks_in_pes: u64,
}

/// The transport stream demuxer (see the module docs).
#[derive(Debug)]
pub struct Demuxer {
    config: DemuxConfig,
    sync: PacketSync,
    continuity: ContinuityTracker,
    roles: Vec<Role>,
    pat_sections: SectionAssembler,
    pat: Option<Pat>,
    pat_pending: Option<Pat>,
    pat_crc: Option<u32>,
    programs: Vec<Program>,
    streams: Vec<Stream>,
    stats: DemuxStats,
    /// The PIDs with a role other than the PAT's, so that a table change touches only them
    /// (a PMT that changes with every packet costs what its own entries cost, not 8192).
    assigned: Vec<Pid>,
}

impl Demuxer {
    /// A demuxer that has seen nothing yet.
    pub fn new(config: DemuxConfig) -> Self {
        let mut roles = vec![Role::None; Pid::COUNT];
        roles[Pid::PAT.index()] = Role::Pat;
        Self {
            config,
            sync: PacketSync::default(),
            continuity: ContinuityTracker::new(),
            roles,
            pat_sections: SectionAssembler::new(),
            pat: None,
            pat_pending: None,
            pat_crc: None,
            programs: Vec::new(),
            streams: Vec::new(),
            stats: DemuxStats::default(),
            assigned: Vec::new(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> DemuxStats {
        DemuxStats {
            sync: self.sync.stats(),
            ..self.stats
        }
    }

    /// The current PAT.
    pub fn pat(&self) -> Option<&Pat> {
        self.pat.as_ref()
    }

    /// The current PMT of every followed program that has one.
    pub fn pmts(&self) -> impl Iterator<Item = &Pmt> {
        self.programs.iter().filter_map(|p| p.pmt.as_ref())
    }

    /// Counters of every followed elementary stream.
    pub fn streams(&self) -> impl Iterator<Item = &StreamStats> {
        self.streams.iter().map(|s| &s.stats)
    }

    /// Packets pushed so far (the index the next packet will get).
    pub fn packet_index(&self) -> u64 {
        self.stats.packets
    }

    /// Feed bytes in any chunking; packets are found by [`PacketSync`].
    pub fn push(&mut self, data: &[u8], mut out: impl FnMut(DemuxEvent<'_>)) {
        let mut sync = std::mem::take(&mut self.sync);
        sync.push(data, |p| self.push_packet(p, &mut out));
        self.sync = sync;
    }

    /// Feed one packet.
    pub fn push_packet(&mut self, bytes: &[u8; PACKET_SIZE], out: &mut impl FnMut(DemuxEvent<'_>)) {
        let index = self.stats.packets;
        self.stats.packets += 1;
        let packet = match Packet::new(bytes) {
            Ok(p) => p,
            Err(e) => {
                self.stats.malformed += 1;
                out(DemuxEvent::Error {
                    pid: None,
                    error: e.into(),
                    packet: index,
                });
                return;
            }
        };
        let pid = packet.pid();
        let role = self.roles[pid.index()];
        if role == Role::None {
            return;
        }
        if packet.transport_error() {
            self.stats.transport_errors += 1;
            out(DemuxEvent::Error {
                pid: Some(pid),
                error: DemuxError::TransportError,
                packet: index,
            });
            return;
        }
        match self.continuity.check(&packet) {
            Continuity::Ok => {}
            Continuity::Duplicate => {
                self.stats.duplicates += 1;
                out(DemuxEvent::Continuity {
                    pid,
                    verdict: Continuity::Duplicate,
                    packet: index,
                });
                return;
            }
            verdict => {
                if matches!(verdict, Continuity::Gap { .. }) {
                    self.stats.continuity_gaps += 1;
                    if let Role::Es(i) = role {
                        self.streams[i].stats.continuity_gaps += 1;
                    }
                }
                self.lost(role);
                out(DemuxEvent::Continuity {
                    pid,
                    verdict,
                    packet: index,
                });
            }
        }
        if let Some(pcr) = packet.pcr() {
            out(DemuxEvent::Pcr {
                pid,
                pcr,
                discontinuity: packet.discontinuity(),
                packet: index,
            });
        }
        if packet.scrambling() != 0 {
            self.stats.scrambled += 1;
            return;
        }
        match role {
            Role::Pat => self.on_pat(&packet, index, out),
            Role::Pmt(i) => self.on_pmt(i, &packet, index, out),
            Role::Es(i) => self.on_es(i, &packet, index, out),
            Role::None | Role::PcrOnly => {}
        }
    }

    /// Drop whatever unit a continuity break cut.
    fn lost(&mut self, role: Role) {
        match role {
            Role::Pat => self.pat_sections.reset(),
            Role::Pmt(i) => self.programs[i].sections.reset(),
            Role::Es(i) => {
                let s = &mut self.streams[i];
                s.in_pes = false;
                s.in_header = false;
                match &mut s.scanner {
                    Scanner::Video(v) => v.reset(),
                    Scanner::Audio(a) => a.reset(),
                    Scanner::None => {}
                }
            }
            Role::None | Role::PcrOnly => {}
        }
    }

    fn on_pat(&mut self, packet: &Packet<'_>, index: u64, out: &mut impl FnMut(DemuxEvent<'_>)) {
        let mut sections = std::mem::take(&mut self.pat_sections);
        let result = sections.push(packet.payload(), packet.payload_unit_start(), |s| {
            if let Err(e) = self.on_pat_section(s, out) {
                self.psi_error(Pid::PAT, e, index, out);
            }
        });
        self.pat_sections = sections;
        if let Err(e) = result {
            self.psi_error(Pid::PAT, e, index, out);
        }
    }

    fn psi_error(
        &mut self,
        pid: Pid,
        e: PsiError,
        index: u64,
        out: &mut impl FnMut(DemuxEvent<'_>),
    ) {
        self.stats.psi_errors += 1;
        out(DemuxEvent::Error {
            pid: Some(pid),
            error: e.into(),
            packet: index,
        });
    }

    fn on_pat_section(
        &mut self,
        section: &[u8],
        out: &mut impl FnMut(DemuxEvent<'_>),
    ) -> Result<(), PsiError> {
        let (header, body) = long_section(section)?;
        if header.table_id != TABLE_PAT || !header.current {
            return Ok(());
        }
        if header.section_number == 0 {
            self.pat_pending = Some(Pat {
                transport_stream_id: header.extension,
                version: header.version,
                ..Pat::default()
            });
        }
        let Some(pending) = self.pat_pending.as_mut() else {
            return Ok(());
        };
        pending.add_section(body)?;
        if header.section_number < header.last_section_number {
            return Ok(());
        }
        let crc = crc_of(section);
        let Some(pat) = self.pat_pending.take() else {
            return Ok(());
        };
        if self.pat_crc == Some(crc) && self.pat.as_ref() == Some(&pat) {
            return Ok(());
        }
        self.pat_crc = Some(crc);
        self.apply_pat(pat);
        if let Some(pat) = &self.pat {
            out(DemuxEvent::Pat(pat));
        }
        Ok(())
    }

    fn apply_pat(&mut self, pat: Pat) {
        let wanted: Vec<_> = pat
            .programs
            .iter()
            .filter(|p| self.config.program.is_none_or(|n| n == p.program_number))
            .copied()
            .collect();
        // Programs kept by (number, PMT PID): a lookup, so a large PAT changing often costs
        // what it lists, not its square.
        let mut old: std::collections::HashMap<(u16, Pid), Program> =
            std::mem::take(&mut self.programs)
                .into_iter()
                .map(|p| ((p.number, p.pmt_pid), p))
                .collect();
        for entry in wanted {
            let kept = old.remove(&(entry.program_number, entry.pmt_pid));
            self.programs.push(kept.unwrap_or(Program {
                number: entry.program_number,
                pmt_pid: entry.pmt_pid,
                sections: SectionAssembler::new(),
                pmt: None,
                crc: None,
            }));
        }
        self.pat = Some(pat);
        self.rebuild_roles();
    }

    fn on_pmt(
        &mut self,
        i: usize,
        packet: &Packet<'_>,
        index: u64,
        out: &mut impl FnMut(DemuxEvent<'_>),
    ) {
        let mut sections = std::mem::take(&mut self.programs[i].sections);
        let pid = packet.pid();
        let mut changed = false;
        let mut errors = Vec::new();
        let result = sections.push(
            packet.payload(),
            packet.payload_unit_start(),
            |s| match self.on_pmt_section(i, s) {
                Ok(c) => changed |= c,
                Err(e) => errors.push(e),
            },
        );
        self.programs[i].sections = sections;
        for e in errors.into_iter().chain(result.err()) {
            self.psi_error(pid, e, index, out);
        }
        if changed {
            self.rebuild_roles();
            if let Some(pmt) = &self.programs[i].pmt {
                out(DemuxEvent::Pmt(pmt));
            }
        }
    }

    fn on_pmt_section(&mut self, i: usize, section: &[u8]) -> Result<bool, PsiError> {
        let program = &mut self.programs[i];
        let crc = crc_of(section);
        if program.crc == Some(crc) {
            return Ok(false);
        }
        let (header, body) = long_section(section)?;
        if header.table_id != TABLE_PMT || !header.current || header.extension != program.number {
            return Ok(false);
        }
        let pmt = Pmt::parse(&header, body)?;
        program.crc = Some(crc);
        program.pmt = Some(pmt);
        Ok(true)
    }

    /// Recompute the PID roles after a table change, keeping the state of streams that stay.
    /// Only the PIDs that had a role and those that get one are touched.
    fn rebuild_roles(&mut self) {
        let mut old: std::collections::HashMap<(Pid, StreamType), Stream> =
            std::mem::take(&mut self.streams)
                .into_iter()
                .map(|s| ((s.stats.pid, s.stats.stream_type), s))
                .collect();
        let before: Vec<(Pid, Role)> = self
            .assigned
            .drain(..)
            .map(|pid| (pid, self.roles[pid.index()]))
            .collect();
        for (pid, _) in &before {
            self.roles[pid.index()] = Role::None;
        }
        self.roles[Pid::PAT.index()] = Role::Pat;
        let mut assign = |roles: &mut Vec<Role>, pid: Pid, role: Role| {
            if roles[pid.index()] == Role::None {
                roles[pid.index()] = role;
                self.assigned.push(pid);
            }
        };
        for (i, program) in self.programs.iter().enumerate() {
            assign(&mut self.roles, program.pmt_pid, Role::Pmt(i));
        }
        for program in &self.programs {
            let Some(pmt) = &program.pmt else { continue };
            for es in &pmt.streams {
                if self.roles[es.pid.index()] != Role::None {
                    continue;
                }
                let kept = old.remove(&(es.pid, es.stream_type));
                assign(&mut self.roles, es.pid, Role::Es(self.streams.len()));
                self.streams.push(kept.unwrap_or_else(|| {
                    Stream::new(program.number, es.pid, es.stream_type, es.codec)
                }));
            }
            if pmt.pcr_pid != Pid::NULL {
                assign(&mut self.roles, pmt.pcr_pid, Role::PcrOnly);
            }
        }
        // A PID that had no role has not been followed: its continuity starts afresh.
        let had_role: std::collections::HashSet<Pid> = before.iter().map(|(p, _)| *p).collect();
        for &pid in &self.assigned {
            if !had_role.contains(&pid) {
                self.continuity.reset(pid);
            }
        }
    }

    fn on_es(
        &mut self,
        i: usize,
        packet: &Packet<'_>,
        index: u64,
        out: &mut impl FnMut(DemuxEvent<'_>),
    ) {
        let s = &mut self.streams[i];
        let mut payload = packet.payload();
        s.stats.bytes += payload.len() as u64;
        if s.sections {
            return; // carried through; only continuity is checked
        }
        if packet.payload_unit_start() {
            s.header.start();
            s.in_header = true;
            s.in_pes = false;
            s.random_access = packet.random_access();
            s.pes_packet = index;
        }
        if s.in_header {
            match s.header.push(payload) {
                Ok(Some((header, rest))) => {
                    s.in_header = false;
                    s.in_pes = true;
                    s.pts = header.pts;
                    s.dts = header.dts.or(header.pts);
                    s.frames_in_pes = 0;
                    s.ticks_in_pes = 0;
                    s.stats.pes_packets += 1;
                    let pid = s.stats.pid;
                    out(DemuxEvent::PesStart {
                        pid,
                        header,
                        random_access: s.random_access,
                        packet: s.pes_packet,
                    });
                    payload = rest;
                }
                Ok(None) => return,
                Err(e) => {
                    s.in_header = false;
                    self.stats.pes_errors += 1;
                    let pid = s.stats.pid;
                    out(DemuxEvent::Error {
                        pid: Some(pid),
                        error: e.into(),
                        packet: index,
                    });
                    return;
                }
            }
        }
        if s.in_pes {
            s.scan(payload, index, out);
        }
    }
}

impl Stream {
    fn new(program_number: u16, pid: Pid, stream_type: StreamType, codec: Codec) -> Self {
        let scanner = match codec {
            Codec::H264 => Scanner::Video(VideoScanner::new(VideoCodec::H264)),
            Codec::H265 => Scanner::Video(VideoScanner::new(VideoCodec::H265)),
            Codec::AacAdts => Scanner::Audio(AudioScanner::new(AudioCodec::AacAdts)),
            Codec::MpegAudio => Scanner::Audio(AudioScanner::new(AudioCodec::MpegAudio)),
            Codec::Ac3 | Codec::Eac3 => Scanner::Audio(AudioScanner::new(AudioCodec::Ac3)),
            _ => Scanner::None,
        };
        let sections =
            matches!(codec, Codec::Scte35) || stream_type == StreamType::PRIVATE_SECTIONS;
        Self {
            sections,
            stats: StreamStats {
                pid,
                program_number,
                stream_type,
                codec,
                pes_packets: 0,
                frames: 0,
                keyframes: 0,
                continuity_gaps: 0,
                bytes: 0,
            },
            scanner,
            header: PesHeaderReader::new(),
            in_header: false,
            in_pes: false,
            random_access: false,
            pes_packet: 0,
            pts: None,
            dts: None,
            frames_in_pes: 0,
            ticks_in_pes: 0,
        }
    }

    fn scan(&mut self, data: &[u8], index: u64, out: &mut impl FnMut(DemuxEvent<'_>)) {
        let pid = self.stats.pid;
        let Stream {
            scanner,
            stats,
            pts,
            dts,
            frames_in_pes,
            ticks_in_pes,
            pes_packet,
            ..
        } = self;
        match scanner {
            Scanner::Video(v) => v.push(data, |p| {
                stats.frames += 1;
                stats.keyframes += u64::from(p.keyframe);
                let first = *frames_in_pes == 0;
                *frames_in_pes += 1;
                out(DemuxEvent::Picture {
                    pid,
                    keyframe: p.keyframe,
                    pts: pts.filter(|_| first),
                    dts: dts.filter(|_| first),
                    pes_packet: *pes_packet,
                    packet: index,
                });
            }),
            Scanner::Audio(a) => a.push(data, |frame| {
                stats.frames += 1;
                let at = pts.map(|p| p.add(*ticks_in_pes));
                *ticks_in_pes += frame.duration_90khz();
                out(DemuxEvent::AudioFrame {
                    pid,
                    frame,
                    pts: at,
                    packet: index,
                });
            }),
            Scanner::None => {}
        }
    }
}

fn crc_of(section: &[u8]) -> u32 {
    match section {
        [.., a, b, c, d] => u32::from_be_bytes([*a, *b, *c, *d]),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::{Generator, GeneratorConfig};
    use crate::ts::psi::{packetize_section, PmtStream};
    use crate::ts::ContinuityCounter;

    /// The generator's stream with its PMT replaced from packet `switch` on by a version 1
    /// that adds a teletext stream.
    #[test]
    fn follows_a_pmt_version_change() {
        let mut g = Generator::new(GeneratorConfig::default()).unwrap();
        let streams = |extra: bool| {
            let mut s = vec![
                PmtStream {
                    stream_type: StreamType::H264,
                    pid: Pid::from_bits(0x100),
                    descriptors: vec![],
                    codec: Codec::H264,
                },
                PmtStream {
                    stream_type: StreamType::AAC_ADTS,
                    pid: Pid::from_bits(0x101),
                    descriptors: vec![],
                    codec: Codec::AacAdts,
                },
            ];
            if extra {
                s.push(PmtStream {
                    stream_type: StreamType::PRIVATE_PES,
                    pid: Pid::from_bits(0x105),
                    descriptors: vec![0x56, 5, b'e', b'n', b'g', 0x09, 0x00],
                    codec: Codec::Teletext,
                });
            }
            s
        };
        let v1 = Pmt {
            program_number: 1,
            version: 1,
            pcr_pid: Pid::from_bits(0x100),
            descriptors: vec![],
            streams: streams(true),
        };
        let mut v1_packets = Vec::new();
        packetize_section(
            &v1.to_section(),
            Pid::from_bits(0x1000),
            ContinuityCounter::from_bits(0),
            &mut v1_packets,
        );
        let mut d = Demuxer::new(DemuxConfig::default());
        let mut pmts = Vec::new();
        let mut errors = 0;
        for i in 0..4000 {
            let mut p = [0u8; PACKET_SIZE];
            g.next_packet(&mut p);
            if i > 2000 && p[1] & 0x1F == 0x10 && p[2] == 0 {
                let cc = p[3] & 0x0F;
                p = v1_packets[0];
                p[3] = (p[3] & 0xF0) | cc;
            }
            d.push_packet(&p, &mut |e| match e {
                DemuxEvent::Pmt(pmt) => pmts.push((pmt.version, pmt.streams.len())),
                DemuxEvent::Error { .. } | DemuxEvent::Continuity { .. } => errors += 1,
                _ => {}
            });
        }
        assert_eq!(errors, 0);
        assert_eq!(pmts, vec![(0, 2), (1, 3)]);
        let codecs: Vec<Codec> = d.streams().map(|s| s.codec).collect();
        assert_eq!(codecs, vec![Codec::H264, Codec::AacAdts, Codec::Teletext]);
        // The streams that stayed kept their counters.
        assert!(d.streams().next().unwrap().frames > 50);
    }

    /// Two PMTs of 30 streams each, on other PIDs, alternating with every packet; and a PAT
    /// whose sections never complete.
    #[test]
    fn a_flapping_pmt_and_a_section_that_never_ends_stay_bounded() {
        let pmt = |version: u8, base: u16| Pmt {
            program_number: 1,
            version,
            pcr_pid: Pid::from_bits(base),
            descriptors: vec![],
            streams: (0..30)
                .map(|i| PmtStream {
                    stream_type: StreamType::H264,
                    pid: Pid::from_bits(base + i),
                    descriptors: vec![],
                    codec: Codec::H264,
                })
                .collect(),
        };
        let packets: Vec<[u8; PACKET_SIZE]> = [pmt(0, 0x200), pmt(1, 0x300)]
            .iter()
            .map(|p| {
                let mut out = Vec::new();
                packetize_section(
                    &p.to_section(),
                    Pid::from_bits(0x1000),
                    ContinuityCounter::from_bits(0),
                    &mut out,
                );
                assert_eq!(out.len(), 1);
                out[0]
            })
            .collect();
        let mut g = Generator::new(GeneratorConfig::default()).unwrap();
        let mut d = Demuxer::new(DemuxConfig::default());
        let mut p = [0u8; PACKET_SIZE];
        // The generator's PAT points program 1 at PID 0x1000.
        while d.pat().is_none() {
            g.next_packet(&mut p);
            d.push_packet(&p, &mut |_| {});
        }
        let mut changes = 0;
        for i in 0..50_000u32 {
            let mut packet = packets[i as usize % 2];
            packet[3] = (packet[3] & 0xF0) | (i % 16) as u8;
            d.push_packet(&packet, &mut |e| {
                if let DemuxEvent::Pmt(_) = e {
                    changes += 1;
                }
            });
            assert!(d.streams.len() <= 30 && d.assigned.len() <= 32);
        }
        assert_eq!(changes, 50_000, "each change is followed");
        // A PAT section declaring 1021 bytes whose continuation never comes, again and again.
        let mut start = [0xFFu8; PACKET_SIZE];
        start[..8].copy_from_slice(&[0x47, 0x40, 0x00, 0x10, 0x00, 0x00, 0xB3, 0xFD]);
        let mut more = [0xAAu8; PACKET_SIZE];
        more[..4].copy_from_slice(&[0x47, 0x00, 0x00, 0x10]);
        for i in 0..20_000u32 {
            let mut packet = if i % 5 == 0 { start } else { more };
            packet[3] = 0x10 | (i % 16) as u8;
            d.push_packet(&packet, &mut |_| {});
            assert!(d.pat_sections.buffered() <= MAX_SECTION + PACKET_SIZE);
        }
    }
}
