//! Wire values of the transport stream as newtypes with named constants.

use std::fmt;

/// A 13-bit packet identifier (ISO/IEC 13818-1 §2.4.3.3, table 2-3).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pid(u16);

impl Pid {
    /// Program association table.
    pub const PAT: Pid = Pid(0x0000);
    /// Conditional access table.
    pub const CAT: Pid = Pid(0x0001);
    /// Null packets (padding): never checked for continuity, never carried to viewers.
    pub const NULL: Pid = Pid(0x1FFF);
    /// Number of distinct PIDs.
    pub const COUNT: usize = 0x2000;

    /// The PID if `value` fits in 13 bits.
    pub const fn new(value: u16) -> Option<Pid> {
        if value < 0x2000 {
            Some(Pid(value))
        } else {
            None
        }
    }

    /// The PID made of the low 13 bits of `bits`, as read from the wire.
    pub const fn from_bits(bits: u16) -> Pid {
        Pid(bits & 0x1FFF)
    }

    /// The numeric value.
    pub const fn value(self) -> u16 {
        self.0
    }

    /// The value as an index into per-PID tables of [`Pid::COUNT`] entries.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Debug for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pid({:#06x})", self.0)
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#06x}", self.0)
    }
}

/// The 4-bit continuity counter of a packet (§2.4.3.3).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ContinuityCounter(u8);

impl ContinuityCounter {
    /// The counter made of the low 4 bits of `bits`.
    pub const fn from_bits(bits: u8) -> Self {
        Self(bits & 0x0F)
    }

    /// The numeric value, 0 to 15.
    pub const fn value(self) -> u8 {
        self.0
    }

    /// The counter that follows this one.
    pub const fn next(self) -> Self {
        Self((self.0 + 1) & 0x0F)
    }

    /// How many counter steps lead from `self` to `later`, modulo 16.
    pub const fn steps_to(self, later: Self) -> u8 {
        later.0.wrapping_sub(self.0) & 0x0F
    }
}

/// The stream_type of a PMT entry (§2.4.4.9, table 2-34, plus the ATSC and DVB private values
/// in common use).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct StreamType(pub u8);

impl StreamType {
    /// ISO/IEC 11172-2 video.
    pub const MPEG1_VIDEO: Self = Self(0x01);
    /// ISO/IEC 13818-2 video.
    pub const MPEG2_VIDEO: Self = Self(0x02);
    /// ISO/IEC 11172-3 audio (MPEG-1 layers I–III).
    pub const MPEG1_AUDIO: Self = Self(0x03);
    /// ISO/IEC 13818-3 audio.
    pub const MPEG2_AUDIO: Self = Self(0x04);
    /// Private sections.
    pub const PRIVATE_SECTIONS: Self = Self(0x05);
    /// PES packets with private data (DVB subtitles, teletext, AC-3 in DVB, ...).
    pub const PRIVATE_PES: Self = Self(0x06);
    /// ISO/IEC 13818-7 AAC with ADTS framing.
    pub const AAC_ADTS: Self = Self(0x0F);
    /// ISO/IEC 14496-3 AAC with LATM framing.
    pub const AAC_LATM: Self = Self(0x11);
    /// Metadata in PES (ID3 timed metadata in HLS).
    pub const METADATA_PES: Self = Self(0x15);
    /// H.264 / AVC video.
    pub const H264: Self = Self(0x1B);
    /// H.265 / HEVC video.
    pub const H265: Self = Self(0x24);
    /// AC-3 audio (ATSC A/52).
    pub const AC3: Self = Self(0x81);
    /// SCTE-35 splice information sections.
    pub const SCTE35: Self = Self(0x86);
    /// E-AC-3 audio (ATSC A/52 Annex G).
    pub const EAC3: Self = Self(0x87);
}

/// What a stream carries, from its stream type and descriptors.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum Codec {
    /// H.264 / AVC.
    H264,
    /// H.265 / HEVC.
    H265,
    /// MPEG-1 or MPEG-2 video.
    Mpeg2Video,
    /// AAC in ADTS frames.
    AacAdts,
    /// AAC in LATM frames.
    AacLatm,
    /// MPEG-1/2 audio layers I–III.
    MpegAudio,
    /// AC-3.
    Ac3,
    /// E-AC-3.
    Eac3,
    /// SCTE-35 splice information.
    Scte35,
    /// DVB subtitles (EN 300 743).
    DvbSubtitles,
    /// EBU teletext.
    Teletext,
    /// Timed metadata (ID3).
    Metadata,
    /// Anything else: carried through untouched.
    Other(StreamType),
}

/// The broad kind of a stream.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum StreamKind {
    /// Pictures.
    Video,
    /// Sound.
    Audio,
    /// Everything else (subtitles, splice information, metadata, private data).
    Data,
}

/// DVB descriptor tags (EN 300 468 §6.1) and registration (13818-1 §2.6.8) used to classify
/// private PES streams.
mod descriptor_tag {
    pub(super) const REGISTRATION: u8 = 0x05;
    pub(super) const TELETEXT: u8 = 0x56;
    pub(super) const SUBTITLING: u8 = 0x59;
    pub(super) const AC3: u8 = 0x6A;
    pub(super) const ENHANCED_AC3: u8 = 0x7A;
}

impl Codec {
    /// Classify a PMT entry from its stream type and its ES_info descriptors.
    pub fn classify(stream_type: StreamType, descriptors: &[u8]) -> Codec {
        match stream_type {
            StreamType::H264 => Codec::H264,
            StreamType::H265 => Codec::H265,
            StreamType::MPEG1_VIDEO | StreamType::MPEG2_VIDEO => Codec::Mpeg2Video,
            StreamType::AAC_ADTS => Codec::AacAdts,
            StreamType::AAC_LATM => Codec::AacLatm,
            StreamType::MPEG1_AUDIO | StreamType::MPEG2_AUDIO => Codec::MpegAudio,
            StreamType::AC3 => Codec::Ac3,
            StreamType::EAC3 => Codec::Eac3,
            StreamType::SCTE35 => Codec::Scte35,
            StreamType::METADATA_PES => Codec::Metadata,
            StreamType::PRIVATE_PES => classify_private(descriptors),
            other => Codec::Other(other),
        }
    }

    /// The broad kind of this codec.
    pub fn kind(self) -> StreamKind {
        match self {
            Codec::H264 | Codec::H265 | Codec::Mpeg2Video => StreamKind::Video,
            Codec::AacAdts | Codec::AacLatm | Codec::MpegAudio | Codec::Ac3 | Codec::Eac3 => {
                StreamKind::Audio
            }
            _ => StreamKind::Data,
        }
    }
}

fn classify_private(descriptors: &[u8]) -> Codec {
    let mut rest = descriptors;
    while let [tag, len, tail @ ..] = rest {
        let len = usize::from(*len);
        let Some(body) = tail.get(..len) else { break };
        match *tag {
            descriptor_tag::AC3 => return Codec::Ac3,
            descriptor_tag::ENHANCED_AC3 => return Codec::Eac3,
            descriptor_tag::SUBTITLING => return Codec::DvbSubtitles,
            descriptor_tag::TELETEXT => return Codec::Teletext,
            descriptor_tag::REGISTRATION => match body.get(..4) {
                Some(b"AC-3") => return Codec::Ac3,
                Some(b"EAC3") => return Codec::Eac3,
                Some(b"HEVC") => return Codec::H265,
                Some(b"ID3 ") => return Codec::Metadata,
                _ => {}
            },
            _ => {}
        }
        rest = &tail[len..];
    }
    Codec::Other(StreamType::PRIVATE_PES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuity_counter_wraps() {
        let cc = ContinuityCounter::from_bits(15);
        assert_eq!(cc.next().value(), 0);
        assert_eq!(cc.steps_to(ContinuityCounter::from_bits(2)), 3);
    }

    #[test]
    fn private_pes_is_classified_by_descriptor() {
        assert_eq!(
            Codec::classify(StreamType::PRIVATE_PES, &[0x6A, 1, 0]),
            Codec::Ac3
        );
        assert_eq!(
            Codec::classify(
                StreamType::PRIVATE_PES,
                &[0x0A, 4, b'e', b'n', b'g', 0, 0x59, 0]
            ),
            Codec::DvbSubtitles
        );
        assert_eq!(
            Codec::classify(StreamType::PRIVATE_PES, &[0x05, 4, b'A', b'C', b'-', b'3']),
            Codec::Ac3
        );
        // A truncated descriptor loop is not an error: the stream stays private data.
        assert_eq!(
            Codec::classify(StreamType::PRIVATE_PES, &[0x59, 9, 1]),
            Codec::Other(StreamType::PRIVATE_PES)
        );
        assert_eq!(
            Codec::classify(StreamType::SCTE35, &[]).kind(),
            StreamKind::Data
        );
    }
}
