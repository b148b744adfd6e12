//! An MPEG-TS writer: access units of one program's elementary streams in, 188-byte packets
//! out. Sans-IO: the caller gives each access unit with its timestamps and takes the packets.
//!
//! ```text
//!  write(stream, pts, dts, keyframe, bytes) ─┬─ PAT + PMT before the first packet, before each
//!                                            │  keyframe of the PCR stream, and at least every
//!                                            │  PSI_INTERVAL of stream time
//!                                            └─ one PES: its header (PTS, DTS when it differs),
//!                                               split into packets; the first packet of the
//!                                               PCR stream's units carries a PCR (its DTS less
//!                                               PCR_LEAD) and, on keyframes, random_access;
//!                                               the last one is padded by its adaptation field
//! ```
//!
//! Continuity counters step per PID from 0. Timestamps are taken as they are given (33-bit
//! wrap included): the caller keeps them at least [`PCR_LEAD`] above 0.
//!
//! What it does not do: pace (the caller sends packets when it likes), null-packet stuffing to
//! a constant rate, more than one program, or descriptors in the PMT.

use super::pes::Timestamp;
use super::psi::{packetize_section, Pat, PatEntry, Pmt, PmtStream};
use super::types::{Codec, ContinuityCounter, Pid, StreamType};
use super::PACKET_SIZE;

/// How far the PCR runs ahead of the DTS it is sent with (90 kHz): the decoder's buffer time.
pub const PCR_LEAD: u64 = 9_000;
/// PAT and PMT are repeated at least this often in stream time (90 kHz).
pub const PSI_INTERVAL: u64 = 9_000;

/// One elementary stream of the program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MuxStream {
    /// Its PID.
    pub pid: Pid,
    /// Its PMT stream_type.
    pub stream_type: StreamType,
    /// The PES stream_id (0xE0 for video, 0xC0 for audio).
    pub stream_id: u8,
}

/// The program a [`Muxer`] writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MuxConfig {
    /// program_number.
    pub program_number: u16,
    /// The PMT's PID.
    pub pmt_pid: Pid,
    /// The streams; the first carries the PCR.
    pub streams: Vec<MuxStream>,
}

/// Writes one program's access units as transport packets.
#[derive(Debug)]
pub struct Muxer {
    config: MuxConfig,
    version: u8,
    psi: [Vec<u8>; 2],
    pmt_pid: Pid,
    streams: Vec<MuxStream>,
    /// Continuity counters: PAT, PMT, then each stream.
    counters: Vec<ContinuityCounter>,
    /// The stream time of the last PAT and PMT (`None`: none written yet).
    psi_at: Option<u64>,
}

impl Muxer {
    /// A muxer for `config` (a program with at least one stream).
    pub fn new(config: MuxConfig) -> Self {
        Self::with_version(config, 0)
    }

    /// The program as it is written.
    pub fn config(&self) -> &MuxConfig {
        &self.config
    }

    /// Write `config` from now on: a new PMT version (sent before the next packet), the
    /// continuity of the streams that stay kept.
    pub fn reconfigure(&mut self, config: MuxConfig) {
        let mut next = Self::with_version(config, (self.version + 1) & 0x1F);
        next.counters[..2].copy_from_slice(&self.counters[..2]);
        for (i, stream) in next.config.streams.clone().iter().enumerate() {
            if let Some(before) = self.streams.iter().position(|s| s.pid == stream.pid) {
                next.counters[2 + i] = self.counters[2 + before];
            }
        }
        *self = next;
    }

    fn with_version(config: MuxConfig, version: u8) -> Self {
        let pat = Pat {
            transport_stream_id: 1,
            version,
            programs: vec![PatEntry {
                program_number: config.program_number,
                pmt_pid: config.pmt_pid,
            }],
            network_pid: None,
        };
        let pmt = Pmt {
            program_number: config.program_number,
            version,
            pcr_pid: config.streams.first().map_or(Pid::NULL, |s| s.pid),
            descriptors: Vec::new(),
            streams: config
                .streams
                .iter()
                .map(|s| PmtStream {
                    stream_type: s.stream_type,
                    pid: s.pid,
                    descriptors: Vec::new(),
                    codec: Codec::classify(s.stream_type, &[]),
                })
                .collect(),
        };
        Self {
            psi: [pat.to_section(), pmt.to_section()],
            pmt_pid: config.pmt_pid,
            counters: vec![ContinuityCounter::from_bits(0); 2 + config.streams.len()],
            streams: config.streams.clone(),
            config,
            version,
            psi_at: None,
        }
    }

    /// Start again as a new stream would (counters from 0, PAT and PMT first): after a
    /// discontinuity of the source.
    pub fn reset(&mut self) {
        self.counters.fill(ContinuityCounter::from_bits(0));
        self.psi_at = None;
    }

    /// Append to `out` the packets of one access unit of stream `index` (its place in
    /// [`MuxConfig::streams`]): `data`, presented at `pts`, decoded at `dts` (`None`: at
    /// `pts`). An unknown `index` writes nothing.
    pub fn write(
        &mut self,
        index: usize,
        pts: u64,
        dts: Option<u64>,
        keyframe: bool,
        data: &[u8],
        out: &mut Vec<u8>,
    ) {
        let Some(stream) = self.streams.get(index).copied() else {
            return;
        };
        let dts = dts.unwrap_or(pts);
        let pcr_stream = index == 0;
        let psi_due = match self.psi_at {
            None => true,
            Some(at) => {
                (pcr_stream && keyframe)
                    || Timestamp::new(dts).since(Timestamp::new(at)).unsigned_abs() >= PSI_INTERVAL
            }
        };
        if psi_due {
            self.write_psi(out);
            self.psi_at = Some(dts);
        }
        let header = pes_header(stream.stream_id, pts, dts, data.len());
        let pcr = pcr_stream.then(|| dts.wrapping_sub(PCR_LEAD) & ((1 << 33) - 1));
        self.write_pes(index, stream.pid, &header, data, pcr, keyframe, out);
    }

    fn write_psi(&mut self, out: &mut Vec<u8>) {
        let mut packets = Vec::with_capacity(2);
        for (i, pid) in [Pid::PAT, self.pmt_pid].into_iter().enumerate() {
            self.counters[i] = packetize_section(&self.psi[i], pid, self.counters[i], &mut packets);
        }
        for p in packets {
            out.extend_from_slice(&p);
        }
    }

    /// Split the PES of `header` and `data` into packets of `pid`; the first carries `pcr`
    /// and the random access indicator when asked.
    #[allow(clippy::too_many_arguments)]
    fn write_pes(
        &mut self,
        index: usize,
        pid: Pid,
        header: &[u8],
        data: &[u8],
        pcr: Option<u64>,
        keyframe: bool,
        out: &mut Vec<u8>,
    ) {
        let total = header.len() + data.len();
        let mut written = 0;
        while written < total {
            let first = written == 0;
            // The adaptation field after its length byte: flags, then the PCR.
            let mut field: Option<Vec<u8>> = None;
            if first && (pcr.is_some() || keyframe) {
                let mut f = vec![if keyframe { 0x40 } else { 0 }];
                if let Some(pcr) = pcr {
                    f[0] |= 0x10;
                    f.extend_from_slice(&[
                        (pcr >> 25) as u8,
                        (pcr >> 17) as u8,
                        (pcr >> 9) as u8,
                        (pcr >> 1) as u8,
                        ((pcr & 1) << 7) as u8 | 0x7E,
                        0,
                    ]);
                }
                field = Some(f);
            }
            let room = PACKET_SIZE - 4 - field.as_ref().map_or(0, |f| 1 + f.len());
            let take = (total - written).min(room);
            let stuffing = room - take;
            if stuffing > 0 {
                // The last packet: its adaptation field grows to fill it (a field of length 0
                // is its length byte alone).
                match &mut field {
                    Some(f) => f.resize(f.len() + stuffing, 0xFF),
                    None if stuffing == 1 => field = Some(Vec::new()),
                    None => {
                        let mut f = vec![0];
                        f.resize(stuffing - 1, 0xFF);
                        field = Some(f);
                    }
                }
            }
            let cc = &mut self.counters[2 + index];
            let start = out.len();
            out.extend_from_slice(&[
                0x47,
                u8::from(first) << 6 | (pid.value() >> 8) as u8,
                pid.value() as u8,
                if field.is_some() { 0x30 } else { 0x10 } | cc.value(),
            ]);
            *cc = cc.next();
            if let Some(f) = &field {
                out.push(f.len() as u8);
                out.extend_from_slice(f);
            }
            let end = written + take;
            if written < header.len() {
                out.extend_from_slice(&header[written..end.min(header.len())]);
            }
            if end > header.len() {
                out.extend_from_slice(
                    &data[written.max(header.len()) - header.len()..end - header.len()],
                );
            }
            debug_assert_eq!(out.len() - start, PACKET_SIZE);
            written = end;
        }
    }
}

/// A PES header for `payload` bytes of `stream_id`: PTS, and DTS when it differs. Video may
/// leave PES_packet_length 0 (unbounded); a longer PES does.
fn pes_header(stream_id: u8, pts: u64, dts: u64, payload: usize) -> Vec<u8> {
    let with_dts = dts != pts;
    let fields = if with_dts { 10 } else { 5 };
    let length = 3 + fields + payload;
    let length = if length > 0xFFFF || stream_id & 0xF0 == 0xE0 {
        0
    } else {
        length as u16
    };
    let mut h = vec![0, 0, 1, stream_id];
    h.extend_from_slice(&length.to_be_bytes());
    h.extend_from_slice(&[0x80, if with_dts { 0xC0 } else { 0x80 }, fields as u8]);
    if with_dts {
        h.extend_from_slice(&Timestamp::new(pts).to_bytes(0b0011));
        h.extend_from_slice(&Timestamp::new(dts).to_bytes(0b0001));
    } else {
        h.extend_from_slice(&Timestamp::new(pts).to_bytes(0b0010));
    }
    h
}

/// For tests: program 1 of H.264 on PID 0x100 (the PCR stream) and AAC on 0x101, its PMT on
/// 0x1000.
#[cfg(test)]
pub(crate) fn h264_aac() -> MuxConfig {
    MuxConfig {
        program_number: 1,
        pmt_pid: Pid::from_bits(0x1000),
        streams: vec![
            MuxStream {
                pid: Pid::from_bits(0x100),
                stream_type: StreamType::H264,
                stream_id: 0xE0,
            },
            MuxStream {
                pid: Pid::from_bits(0x101),
                stream_type: StreamType::AAC_ADTS,
                stream_id: 0xC0,
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ts::{DemuxConfig, DemuxEvent, Demuxer};

    fn muxer() -> Muxer {
        Muxer::new(h264_aac())
    }

    /// Every size of access unit around the packet boundaries comes back whole, with its
    /// timestamps, PCR and random access flag, and the crate's demuxer finds no fault.
    #[test]
    fn access_units_of_every_size_come_back_whole() {
        use crate::ts::{Packet, PesAssembler};
        use std::collections::HashMap;
        let mut m = muxer();
        let mut out = Vec::new();
        let sizes: Vec<usize> = (0..400).chain([1000, 5000, 70_000]).collect();
        let unit =
            |i: usize, size: usize| -> Vec<u8> { (0..size).map(|b| (b * 7 + i) as u8).collect() };
        for (i, &size) in sizes.iter().enumerate() {
            let pts = 90_000 + i as u64 * 3600;
            m.write(
                0,
                pts + 3600,
                Some(pts),
                i % 50 == 0,
                &unit(i, size),
                &mut out,
            );
            m.write(1, pts, None, false, &unit(i, size.min(300)), &mut out);
        }
        assert_eq!(out.len() % PACKET_SIZE, 0);
        let mut assemblers: HashMap<u16, PesAssembler> = HashMap::new();
        /// A PES as read back: PTS, DTS, payload.
        type Unit = (Option<u64>, Option<u64>, Vec<u8>);
        let mut got: HashMap<u16, Vec<Unit>> = HashMap::new();
        let mut pcrs = Vec::new();
        let mut random_access = 0;
        let mut keep = |pid: u16, pes: crate::ts::Pes<'_>| {
            got.entry(pid).or_default().push((
                pes.header.pts.map(|t| t.ticks()),
                pes.header.dts.map(|t| t.ticks()),
                pes.payload.to_vec(),
            ));
        };
        for bytes in out.chunks_exact(PACKET_SIZE) {
            let packet = Packet::new(bytes.try_into().unwrap()).unwrap();
            let pid = packet.pid().value();
            if pid < 0x100 || pid == 0x1000 {
                continue;
            }
            if let Some(pcr) = packet.pcr() {
                pcrs.push(pcr.base);
            }
            random_access += usize::from(packet.random_access());
            assemblers
                .entry(pid)
                .or_insert_with(|| PesAssembler::new(1 << 20))
                .push(
                    packet.payload_unit_start(),
                    false,
                    packet.payload(),
                    |pes| keep(pid, pes.unwrap()),
                );
        }
        for (pid, a) in &mut assemblers {
            a.flush(|pes| keep(*pid, pes.unwrap()));
        }
        for (i, &size) in sizes.iter().enumerate() {
            let pts = 90_000 + i as u64 * 3600;
            let video = &got[&0x100][i];
            assert_eq!(
                (video.0, video.1),
                (Some(pts + 3600), Some(pts)),
                "unit {i}"
            );
            assert!(video.2 == unit(i, size), "video unit {i} of {size} bytes");
            let audio = &got[&0x101][i];
            assert_eq!((audio.0, audio.1), (Some(pts), None), "unit {i}");
            assert!(audio.2 == unit(i, size.min(300)), "audio unit {i}");
        }
        // A PCR with each video unit, PCR_LEAD before its DTS; random access on keyframes.
        assert_eq!(pcrs.len(), sizes.len());
        assert_eq!(pcrs[1], 90_000 + 3600 - PCR_LEAD);
        assert_eq!(random_access, sizes.len().div_ceil(50));
        // The demuxer reads the tables and finds no gap or bad header.
        let mut demux = Demuxer::new(DemuxConfig::default());
        let mut streams = 0;
        demux.push(&out, |e| {
            if let DemuxEvent::Pmt(pmt) = e {
                streams = pmt.streams.len();
            }
        });
        let stats = demux.stats();
        assert_eq!(streams, 2);
        assert_eq!(
            (
                stats.continuity_gaps,
                stats.psi_errors,
                stats.pes_errors,
                stats.malformed
            ),
            (0, 0, 0, 0),
            "{stats:?}"
        );
    }
}
