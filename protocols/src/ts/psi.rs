//! Program specific information: section assembly, CRC-32, PAT and PMT
//! (ISO/IEC 13818-1 §2.4.4, Annex A for the CRC).
//!
//! [`SectionAssembler`] turns the payloads of one PID into complete sections, following
//! pointer_field, sections spanning packets and several sections in one packet. [`Pat`] and
//! [`Pmt`] parse and write the two tables the demuxer needs; [`packetize_section`] writes a
//! section into transport packets.

use super::packet::PACKET_SIZE;
use super::types::{Codec, ContinuityCounter, Pid, StreamType};

/// table_id of a program association section.
pub const TABLE_PAT: u8 = 0x00;
/// table_id of a TS program map section.
pub const TABLE_PMT: u8 = 0x02;
/// Largest section the assembler accepts (private sections may use all 4096 bytes).
pub const MAX_SECTION: usize = 4096;

/// Why a section was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PsiError {
    /// pointer_field points past the end of the payload.
    #[error("pointer_field {pointer} points past the {available} payload bytes")]
    Pointer {
        /// The pointer_field value.
        pointer: u8,
        /// Payload bytes after the pointer field.
        available: usize,
    },
    /// section_length is larger than the limit.
    #[error("section of {length} bytes is over the {MAX_SECTION}-byte limit")]
    TooLong {
        /// The declared total length.
        length: usize,
    },
    /// A section was cut by a continuity gap or a new section start.
    #[error("section cut short after {have} of {length} bytes")]
    Truncated {
        /// Bytes received.
        have: usize,
        /// Bytes declared.
        length: usize,
    },
    /// The CRC-32 does not match.
    #[error("CRC-32 mismatch on table {table_id:#04x}")]
    Crc {
        /// The table_id of the section.
        table_id: u8,
    },
    /// The section is too short for its table, or its loops overrun it.
    #[error("table {table_id:#04x} is malformed: {what}")]
    Malformed {
        /// The table_id of the section.
        table_id: u8,
        /// What is wrong.
        what: &'static str,
    },
}

/// CRC-32/MPEG-2: polynomial 0x04C11DB7, initial value all ones, no reflection, no final xor.
pub fn crc32_mpeg2(data: &[u8]) -> u32 {
    data.iter().fold(0xFFFF_FFFF, |crc, &b| {
        (crc << 8) ^ CRC_TABLE[usize::from((crc >> 24) as u8 ^ b)]
    })
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u32) << 24;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// Reassembles the sections carried on one PID.
#[derive(Debug, Default)]
pub struct SectionAssembler {
    buf: Vec<u8>,
    active: bool,
}

impl SectionAssembler {
    /// An assembler with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes of a partly received section held.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Drop a partly received section (after a continuity gap).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.active = false;
    }

    /// Feed one packet's payload. `emit` gets every complete section (CRC not yet checked).
    pub fn push(
        &mut self,
        payload: &[u8],
        unit_start: bool,
        mut emit: impl FnMut(&[u8]),
    ) -> Result<(), PsiError> {
        if !unit_start {
            if self.active {
                self.buf.extend_from_slice(payload);
                self.complete(&mut emit)?;
            }
            return Ok(());
        }
        let [pointer, rest @ ..] = payload else {
            return Ok(());
        };
        let Some(tail) = rest.get(..usize::from(*pointer)) else {
            self.reset();
            return Err(PsiError::Pointer {
                pointer: *pointer,
                available: rest.len(),
            });
        };
        let mut result = Ok(());
        if self.active {
            self.buf.extend_from_slice(tail);
            result = self.complete(&mut emit);
            if self.active {
                let (have, length) = (self.buf.len(), self.declared().unwrap_or(0));
                self.reset();
                result = Err(PsiError::Truncated { have, length });
            }
        }
        let mut data = &rest[usize::from(*pointer)..];
        while let Some(&table_id) = data.first() {
            if table_id == 0xFF {
                break; // stuffing to the end of the packet
            }
            let Some(length) = section_length(data) else {
                self.buf.extend_from_slice(data);
                self.active = true;
                break;
            };
            if length > MAX_SECTION {
                return Err(PsiError::TooLong { length });
            }
            match data.get(..length) {
                Some(section) => {
                    emit(section);
                    data = &data[length..];
                }
                None => {
                    self.buf.extend_from_slice(data);
                    self.active = true;
                    break;
                }
            }
        }
        result
    }

    fn declared(&self) -> Option<usize> {
        section_length(&self.buf)
    }

    fn complete(&mut self, emit: &mut impl FnMut(&[u8])) -> Result<(), PsiError> {
        let Some(length) = self.declared() else {
            return Ok(());
        };
        if length > MAX_SECTION {
            self.reset();
            return Err(PsiError::TooLong { length });
        }
        if self.buf.len() >= length {
            emit(&self.buf[..length]);
            self.reset();
        }
        Ok(())
    }
}

/// Total length of the section starting at `data` (header included), once 3 bytes are there.
fn section_length(data: &[u8]) -> Option<usize> {
    let [_, hi, lo, ..] = data else { return None };
    Some(3 + (usize::from(hi & 0x0F) << 8 | usize::from(*lo)))
}

/// The common header of a long-form section (syntax indicator set).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SectionHeader {
    /// table_id.
    pub table_id: u8,
    /// table_id_extension (transport_stream_id for the PAT, program_number for a PMT).
    pub extension: u16,
    /// version_number, 0 to 31.
    pub version: u8,
    /// current_next_indicator: false means "not yet applicable".
    pub current: bool,
    /// section_number.
    pub section_number: u8,
    /// last_section_number.
    pub last_section_number: u8,
}

/// Check the CRC of a long-form section and split it into header and body (without the CRC).
pub fn long_section(section: &[u8]) -> Result<(SectionHeader, &[u8]), PsiError> {
    let table_id = section.first().copied().unwrap_or(0xFF);
    if section.len() < 12 {
        return Err(PsiError::Malformed {
            table_id,
            what: "shorter than a long-form header",
        });
    }
    if section[1] & 0x80 == 0 {
        return Err(PsiError::Malformed {
            table_id,
            what: "section_syntax_indicator is 0",
        });
    }
    if crc32_mpeg2(section) != 0 {
        return Err(PsiError::Crc { table_id });
    }
    let header = SectionHeader {
        table_id,
        extension: u16::from(section[3]) << 8 | u16::from(section[4]),
        version: (section[5] >> 1) & 0x1F,
        current: section[5] & 1 != 0,
        section_number: section[6],
        last_section_number: section[7],
    };
    Ok((header, &section[8..section.len() - 4]))
}

/// One program of a PAT.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PatEntry {
    /// program_number (never 0 here: program 0 names the network PID).
    pub program_number: u16,
    /// PID of the program's PMT.
    pub pmt_pid: Pid,
}

/// Program association table (§2.4.4.3).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Pat {
    /// transport_stream_id.
    pub transport_stream_id: u16,
    /// version_number.
    pub version: u8,
    /// The programs, in section order.
    pub programs: Vec<PatEntry>,
    /// The network PID, if program 0 is listed.
    pub network_pid: Option<Pid>,
}

impl Pat {
    /// Add the entries of one PAT section body (after the long-form header).
    pub fn add_section(&mut self, body: &[u8]) -> Result<(), PsiError> {
        if body.len() % 4 != 0 {
            return Err(PsiError::Malformed {
                table_id: TABLE_PAT,
                what: "loop not a multiple of 4",
            });
        }
        for entry in body.chunks_exact(4) {
            let program_number = u16::from(entry[0]) << 8 | u16::from(entry[1]);
            let pid = Pid::from_bits(u16::from(entry[2]) << 8 | u16::from(entry[3]));
            if program_number == 0 {
                self.network_pid = Some(pid);
            } else {
                self.programs.push(PatEntry {
                    program_number,
                    pmt_pid: pid,
                });
            }
        }
        Ok(())
    }

    /// Write this table as one section (CRC included).
    pub fn to_section(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(4 * (self.programs.len() + 1));
        if let Some(pid) = self.network_pid {
            body.extend_from_slice(&[0, 0, 0xE0 | (pid.value() >> 8) as u8, pid.value() as u8]);
        }
        for p in &self.programs {
            body.extend_from_slice(&p.program_number.to_be_bytes());
            body.extend_from_slice(&[
                0xE0 | (p.pmt_pid.value() >> 8) as u8,
                p.pmt_pid.value() as u8,
            ]);
        }
        write_long_section(TABLE_PAT, self.transport_stream_id, self.version, &body)
    }
}

/// One elementary stream of a PMT.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PmtStream {
    /// stream_type.
    pub stream_type: StreamType,
    /// elementary_PID.
    pub pid: Pid,
    /// The ES_info descriptors, raw.
    pub descriptors: Vec<u8>,
    /// What the stream carries, from its type and descriptors.
    pub codec: Codec,
}

/// Program map table of one program (§2.4.4.8).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Pmt {
    /// program_number.
    pub program_number: u16,
    /// version_number.
    pub version: u8,
    /// PID carrying the program's PCR (0x1FFF when none).
    pub pcr_pid: Pid,
    /// The program_info descriptors, raw.
    pub descriptors: Vec<u8>,
    /// The elementary streams, in table order.
    pub streams: Vec<PmtStream>,
}

impl Pmt {
    /// Parse a PMT section body (after the long-form header).
    pub fn parse(header: &SectionHeader, body: &[u8]) -> Result<Pmt, PsiError> {
        let bad = |what| PsiError::Malformed {
            table_id: TABLE_PMT,
            what,
        };
        let [pcr_hi, pcr_lo, info_hi, info_lo, rest @ ..] = body else {
            return Err(bad("shorter than its fixed fields"));
        };
        let pcr_pid = Pid::from_bits(u16::from(*pcr_hi) << 8 | u16::from(*pcr_lo));
        let info_len = usize::from(info_hi & 0x0F) << 8 | usize::from(*info_lo);
        let descriptors = rest
            .get(..info_len)
            .ok_or(bad("program_info overruns the section"))?;
        let mut es = &rest[info_len..];
        let mut streams = Vec::new();
        while !es.is_empty() {
            let [stream_type, pid_hi, pid_lo, len_hi, len_lo, tail @ ..] = es else {
                return Err(bad("truncated elementary stream entry"));
            };
            let len = usize::from(len_hi & 0x0F) << 8 | usize::from(*len_lo);
            let es_descriptors = tail.get(..len).ok_or(bad("ES_info overruns the section"))?;
            let stream_type = StreamType(*stream_type);
            streams.push(PmtStream {
                stream_type,
                pid: Pid::from_bits(u16::from(*pid_hi) << 8 | u16::from(*pid_lo)),
                descriptors: es_descriptors.to_vec(),
                codec: Codec::classify(stream_type, es_descriptors),
            });
            es = &tail[len..];
        }
        Ok(Pmt {
            program_number: header.extension,
            version: header.version,
            pcr_pid,
            descriptors: descriptors.to_vec(),
            streams,
        })
    }

    /// Write this table as one section (CRC included).
    pub fn to_section(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(64);
        let pcr = self.pcr_pid.value();
        body.extend_from_slice(&[0xE0 | (pcr >> 8) as u8, pcr as u8]);
        push_length_prefixed(&mut body, &self.descriptors);
        for s in &self.streams {
            let pid = s.pid.value();
            body.extend_from_slice(&[s.stream_type.0, 0xE0 | (pid >> 8) as u8, pid as u8]);
            push_length_prefixed(&mut body, &s.descriptors);
        }
        write_long_section(TABLE_PMT, self.program_number, self.version, &body)
    }
}

fn push_length_prefixed(out: &mut Vec<u8>, data: &[u8]) {
    let len = data.len().min(0x3FF);
    out.extend_from_slice(&[0xF0 | (len >> 8) as u8, len as u8]);
    out.extend_from_slice(&data[..len]);
}

/// Write a single long-form section (section 0 of 0, current) with its CRC.
pub fn write_long_section(table_id: u8, extension: u16, version: u8, body: &[u8]) -> Vec<u8> {
    let length = 5 + body.len() + 4;
    let mut s = Vec::with_capacity(3 + length);
    s.extend_from_slice(&[table_id, 0xB0 | (length >> 8) as u8 & 0x0F, length as u8]);
    s.extend_from_slice(&extension.to_be_bytes());
    s.extend_from_slice(&[0xC1 | (version & 0x1F) << 1, 0, 0]);
    s.extend_from_slice(body);
    let crc = crc32_mpeg2(&s);
    s.extend_from_slice(&crc.to_be_bytes());
    s
}

/// Write `section` into as many packets of `pid` as it needs, stuffed with 0xFF; the counter
/// steps from `cc` (the first packet gets `cc`). Returns the counter for the next packet.
pub fn packetize_section(
    section: &[u8],
    pid: Pid,
    mut cc: ContinuityCounter,
    out: &mut Vec<[u8; PACKET_SIZE]>,
) -> ContinuityCounter {
    let mut rest = section;
    let mut first = true;
    loop {
        let mut p = [0xFF; PACKET_SIZE];
        p[0] = 0x47;
        p[1] = (u8::from(first) << 6) | (pid.value() >> 8) as u8;
        p[2] = pid.value() as u8;
        p[3] = 0x10 | cc.value();
        let mut at = 4;
        if first {
            p[4] = 0; // pointer_field
            at = 5;
        }
        let n = rest.len().min(PACKET_SIZE - at);
        p[at..at + n].copy_from_slice(&rest[..n]);
        rest = &rest[n..];
        out.push(p);
        cc = cc.next();
        first = false;
        if rest.is_empty() {
            return cc;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_E6E7);
    }

    fn sample_pmt() -> Pmt {
        Pmt {
            program_number: 7,
            version: 3,
            pcr_pid: Pid::from_bits(0x100),
            descriptors: vec![],
            streams: vec![
                PmtStream {
                    stream_type: StreamType::H264,
                    pid: Pid::from_bits(0x100),
                    descriptors: vec![],
                    codec: Codec::H264,
                },
                PmtStream {
                    stream_type: StreamType::PRIVATE_PES,
                    pid: Pid::from_bits(0x102),
                    descriptors: vec![0x59, 8, b'e', b'n', b'g', 0x10, 0, 1, 0, 1],
                    codec: Codec::DvbSubtitles,
                },
            ],
        }
    }

    #[test]
    fn pmt_round_trips_through_packets() {
        let pmt = sample_pmt();
        let mut packets = Vec::new();
        let next = packetize_section(
            &pmt.to_section(),
            Pid::from_bits(0x1000),
            ContinuityCounter::from_bits(15),
            &mut packets,
        );
        assert_eq!(next.value(), 0);
        let mut asm = SectionAssembler::new();
        let mut sections = Vec::new();
        for p in &packets {
            asm.push(&p[4..], p[1] & 0x40 != 0, |s| sections.push(s.to_vec()))
                .unwrap();
        }
        assert_eq!(sections.len(), 1);
        let (header, body) = long_section(&sections[0]).unwrap();
        assert_eq!(header.version, 3);
        assert_eq!(Pmt::parse(&header, body).unwrap(), pmt);
    }

    #[test]
    fn sections_span_packets_and_share_them() {
        // A long PMT spanning packets, then two PATs in one packet after a pointer.
        let mut pmt = sample_pmt();
        pmt.descriptors = vec![0x05, 200]
            .into_iter()
            .chain(std::iter::repeat_n(b'x', 200))
            .collect();
        let long = pmt.to_section();
        let pat = Pat {
            transport_stream_id: 1,
            version: 0,
            programs: vec![PatEntry {
                program_number: 1,
                pmt_pid: Pid::from_bits(0x1000),
            }],
            network_pid: None,
        }
        .to_section();
        let mut stream = vec![0u8];
        stream.extend_from_slice(&long);
        let split = 150;
        let (first, second) = stream.split_at(split);
        let mut payload2 = vec![(second.len()) as u8];
        payload2.extend_from_slice(second);
        payload2.extend_from_slice(&pat);
        payload2.extend_from_slice(&pat);
        let mut asm = SectionAssembler::new();
        let mut got = Vec::new();
        asm.push(first, true, |s| got.push(s.to_vec())).unwrap();
        assert!(got.is_empty());
        asm.push(&payload2, true, |s| got.push(s.to_vec())).unwrap();
        assert_eq!(got, vec![long, pat.clone(), pat]);
    }

    #[test]
    fn corrupt_sections_are_refused() {
        let mut s = sample_pmt().to_section();
        s[10] ^= 1;
        assert_eq!(
            long_section(&s).unwrap_err(),
            PsiError::Crc {
                table_id: TABLE_PMT
            }
        );
        let mut asm = SectionAssembler::new();
        assert!(matches!(
            asm.push(&[200, 1, 2], true, |_| {}),
            Err(PsiError::Pointer { .. })
        ));
    }
}
