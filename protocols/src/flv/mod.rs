//! FLV, as files carry it and as RTMP carries its tags, sans-IO.
//!
//! ```text
//!  bytes split anywhere ─ Reader ─ Tag { kind, timestamp_ms, body } ─┐
//!  an RTMP audio or video message (its body is a tag's body) ────────┴─ VideoTag::parse /
//!       AudioTag::parse ─ remux::FlvRemuxer ─ MPEG-TS (ts::mux)
//! ```
//!
//! Video: H.264 (codec 7), and H.265 both as Enhanced RTMP writes it (`hvc1` FourCC, with or
//! without composition times) and as the older codec 12 extension; their decoder configuration
//! records are read by [`DecoderConfig::parse`]. Audio: AAC (sound format 10) with its
//! AudioSpecificConfig ([`AacConfig::parse`]). Other codecs are refused by name, so that a
//! publisher's mistake is reported rather than silently dropped.
//!
//! What it does not do: script data (onMetaData) beyond passing it by, multitrack Enhanced
//! RTMP, AV1, VP9, Opus, MP3. Writing: [`mux`] turns MPEG-TS into tags (H.264 and AAC).

pub mod mux;
pub mod remux;

use crate::es::params::Bits;
use crate::es::VideoCodec;

/// Tag type of audio.
pub const TAG_AUDIO: u8 = 8;
/// Tag type of video.
pub const TAG_VIDEO: u8 = 9;
/// Tag type of script data (onMetaData).
pub const TAG_SCRIPT: u8 = 18;
/// Largest tag body a [`Reader`] takes by default (FLV's own limit is 16 MiB).
pub const MAX_TAG: usize = 4 << 20;

/// Why FLV input was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlvError {
    /// The file does not start with `FLV`.
    #[error("not an FLV header")]
    Header,
    /// A tag body is larger than the reader takes.
    #[error("a tag of {0} bytes is larger than the limit of {1}")]
    TooLarge(usize, usize),
    /// A tag's type is not audio, video or script data.
    #[error("tag type {0} is not audio, video or script data")]
    TagType(u8),
    /// A tag body is shorter than its fields.
    #[error("a {0} tag is shorter than its header")]
    Short(&'static str),
    /// A codec this server does not take.
    #[error("{0} is not supported (H.264, H.265 and AAC are)")]
    Unsupported(String),
    /// A decoder configuration that does not parse.
    #[error("bad {0}")]
    Config(&'static str),
}

/// One FLV tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tag {
    /// [`TAG_AUDIO`], [`TAG_VIDEO`] or [`TAG_SCRIPT`].
    pub kind: u8,
    /// Its timestamp: milliseconds, 32 bits (wrapping).
    pub timestamp_ms: u32,
    /// Its body.
    pub body: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadState {
    /// Before the 9-byte header and the first previous-tag-size.
    Header,
    /// Between tags.
    Tags,
    /// After an error: nothing more is read.
    Broken,
}

/// Finds the header and the tags of an FLV byte stream split at any point.
#[derive(Debug)]
pub struct Reader {
    buf: Vec<u8>,
    state: ReadState,
    max_tag: usize,
}

impl Default for Reader {
    fn default() -> Self {
        Self::new(MAX_TAG)
    }
}

impl Reader {
    /// A reader that refuses tags larger than `max_tag` bytes.
    pub fn new(max_tag: usize) -> Self {
        Self {
            buf: Vec::new(),
            state: ReadState::Header,
            max_tag,
        }
    }

    /// Bytes held for a tag not complete yet.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Take `data`; each whole tag goes to `out`. An error goes to `out` once and ends the
    /// reading (FLV has no marker to find the next tag by).
    pub fn push(&mut self, mut data: &[u8], mut out: impl FnMut(Result<Tag, FlvError>)) {
        while !data.is_empty() && self.state != ReadState::Broken {
            let need = match self.state {
                ReadState::Header => 13,
                ReadState::Tags => self.tag_len(),
                ReadState::Broken => return,
            };
            let have = self.buf.len();
            let take = need.saturating_sub(have).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            // The tag's length is known once its 11-byte header is.
            if self.state == ReadState::Tags && self.buf.len() >= 11 {
                let body = self.body_len();
                if body > self.max_tag {
                    self.state = ReadState::Broken;
                    out(Err(FlvError::TooLarge(body, self.max_tag)));
                    return;
                }
            }
            let need = match self.state {
                ReadState::Header => 13,
                _ => self.tag_len(),
            };
            if self.buf.len() < need {
                continue;
            }
            match self.state {
                ReadState::Header => {
                    if &self.buf[..3] != b"FLV" {
                        self.state = ReadState::Broken;
                        out(Err(FlvError::Header));
                        return;
                    }
                    self.buf.clear();
                    self.state = ReadState::Tags;
                }
                _ => {
                    let kind = self.buf[0] & 0x1F;
                    if ![TAG_AUDIO, TAG_VIDEO, TAG_SCRIPT].contains(&kind) {
                        self.state = ReadState::Broken;
                        out(Err(FlvError::TagType(kind)));
                        return;
                    }
                    let b = &self.buf;
                    let timestamp_ms = u32::from_be_bytes([b[7], b[4], b[5], b[6]]);
                    let body = b[11..11 + self.body_len()].to_vec();
                    self.buf.clear();
                    out(Ok(Tag {
                        kind,
                        timestamp_ms,
                        body,
                    }));
                }
            }
        }
    }

    /// The body length of the tag whose header is buffered.
    fn body_len(&self) -> usize {
        let b = &self.buf;
        usize::from(b[1]) << 16 | usize::from(b[2]) << 8 | usize::from(b[3])
    }

    /// The bytes of the tag being read: its header, body and the previous-tag-size after it
    /// (11 until its header is known).
    fn tag_len(&self) -> usize {
        if self.buf.len() < 11 {
            11
        } else {
            11 + self.body_len() + 4
        }
    }
}

/// A video tag's body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VideoTag<'a> {
    /// The codec.
    pub codec: VideoCodec,
    /// What it carries.
    pub packet: VideoPacket<'a>,
}

/// What a video tag carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VideoPacket<'a> {
    /// The decoder configuration record (avcC or hvcC).
    Config(&'a [u8]),
    /// One access unit, its NAL units length-prefixed as the configuration says.
    Frame {
        /// A keyframe (frame type 1).
        keyframe: bool,
        /// Presentation time less decoding time, in milliseconds.
        composition_ms: i32,
        /// The NAL units.
        data: &'a [u8],
    },
    /// The end of the sequence, or something carried by the way (metadata, a command
    /// frame): nothing to decode.
    Other,
}

/// A signed 24-bit big-endian integer.
fn si24(b: &[u8]) -> i32 {
    let v = i32::from(b[0]) << 16 | i32::from(b[1]) << 8 | i32::from(b[2]);
    (v << 8) >> 8
}

impl<'a> VideoTag<'a> {
    /// Read a video tag's body.
    pub fn parse(body: &'a [u8]) -> Result<Self, FlvError> {
        let &[first, ref rest @ ..] = body else {
            return Err(FlvError::Short("video"));
        };
        let frame_type = (first >> 4) & 0x07;
        let keyframe = frame_type == 1;
        if first & 0x80 != 0 {
            // Enhanced RTMP: packet type in the low nibble, then a FourCC.
            let packet_type = first & 0x0F;
            let (fourcc, rest) = rest.split_at_checked(4).ok_or(FlvError::Short("video"))?;
            let codec = match fourcc {
                b"hvc1" => VideoCodec::H265,
                b"avc1" => VideoCodec::H264,
                other => {
                    return Err(FlvError::Unsupported(format!(
                        "video {:?}",
                        String::from_utf8_lossy(other)
                    )))
                }
            };
            let packet = match packet_type {
                0 => VideoPacket::Config(rest),
                1 => {
                    if rest.len() < 3 {
                        return Err(FlvError::Short("video"));
                    }
                    VideoPacket::Frame {
                        keyframe,
                        composition_ms: si24(rest),
                        data: &rest[3..],
                    }
                }
                3 => VideoPacket::Frame {
                    keyframe,
                    composition_ms: 0,
                    data: rest,
                },
                // SequenceEnd, Metadata, MPEG2TSSequenceStart, multitrack: nothing decoded.
                _ => VideoPacket::Other,
            };
            if frame_type == 5 {
                // A command frame (seeking): no picture.
                return Ok(Self {
                    codec,
                    packet: VideoPacket::Other,
                });
            }
            return Ok(Self { codec, packet });
        }
        let codec = match first & 0x0F {
            7 => VideoCodec::H264,
            12 => VideoCodec::H265,
            id => {
                let name = match id {
                    2 => "Sorenson H.263",
                    3 => "Screen video",
                    4 => "On2 VP6",
                    5 => "On2 VP6 with alpha",
                    6 => "Screen video 2",
                    _ => "",
                };
                return Err(FlvError::Unsupported(format!("video codec {id} {name}")));
            }
        };
        let [packet_type, c0, c1, c2, data @ ..] = rest else {
            return Err(FlvError::Short("video"));
        };
        let packet = match (packet_type, frame_type) {
            (_, 5) => VideoPacket::Other,
            (0, _) => VideoPacket::Config(data),
            (1, _) => VideoPacket::Frame {
                keyframe,
                composition_ms: si24(&[*c0, *c1, *c2]),
                data,
            },
            _ => VideoPacket::Other,
        };
        Ok(Self { codec, packet })
    }
}

/// An audio tag's body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AudioTag<'a> {
    /// AAC's AudioSpecificConfig.
    AacConfig(&'a [u8]),
    /// One raw AAC frame.
    AacFrame(&'a [u8]),
}

impl<'a> AudioTag<'a> {
    /// Read an audio tag's body.
    pub fn parse(body: &'a [u8]) -> Result<Self, FlvError> {
        let &[first, ref rest @ ..] = body else {
            return Err(FlvError::Short("audio"));
        };
        match first >> 4 {
            10 => match rest {
                [0, config @ ..] => Ok(AudioTag::AacConfig(config)),
                [1, frame @ ..] => Ok(AudioTag::AacFrame(frame)),
                _ => Err(FlvError::Short("audio")),
            },
            format => {
                let name = match format {
                    0 | 3 => "linear PCM",
                    1 => "ADPCM",
                    2 | 14 => "MP3",
                    4..=6 => "Nellymoser",
                    7 => "G.711 A-law",
                    8 => "G.711 mu-law",
                    11 => "Speex",
                    9 => "Enhanced RTMP audio (Opus, FLAC, AC-3)",
                    _ => "",
                };
                Err(FlvError::Unsupported(format!(
                    "audio format {format} {name}"
                )))
            }
        }
    }
}

/// A video decoder configuration record: the NAL length size and the parameter sets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecoderConfig {
    /// Bytes of each NAL unit's length prefix (1, 2 or 4).
    pub length_size: usize,
    /// The parameter sets (VPS, SPS, PPS), in the record's order.
    pub parameter_sets: Vec<Vec<u8>>,
}

impl DecoderConfig {
    /// Read an AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3) or an
    /// HEVCDecoderConfigurationRecord (§8.3.3).
    pub fn parse(codec: VideoCodec, record: &[u8]) -> Result<Self, FlvError> {
        let bad = || FlvError::Config("decoder configuration record");
        let mut at = Cursor(record);
        let mut parameter_sets = Vec::new();
        let length_size;
        match codec {
            VideoCodec::H264 => {
                let head = at.take(5).ok_or_else(bad)?;
                if head[0] != 1 {
                    return Err(bad());
                }
                length_size = usize::from(head[4] & 3) + 1;
                let sps = at.byte().ok_or_else(bad)? & 0x1F;
                for _ in 0..sps {
                    parameter_sets.push(at.sized().ok_or_else(bad)?.to_vec());
                }
                let pps = at.byte().ok_or_else(bad)?;
                for _ in 0..pps {
                    parameter_sets.push(at.sized().ok_or_else(bad)?.to_vec());
                }
            }
            VideoCodec::H265 => {
                let head = at.take(23).ok_or_else(bad)?;
                if head[0] != 1 {
                    return Err(bad());
                }
                length_size = usize::from(head[21] & 3) + 1;
                for _ in 0..head[22] {
                    at.byte().ok_or_else(bad)?;
                    let count = at.take(2).ok_or_else(bad)?;
                    for _ in 0..u16::from_be_bytes([count[0], count[1]]) {
                        parameter_sets.push(at.sized().ok_or_else(bad)?.to_vec());
                    }
                }
            }
        }
        if length_size == 3 {
            return Err(FlvError::Config("NAL length size of 3"));
        }
        Ok(Self {
            length_size,
            parameter_sets,
        })
    }
}

/// AAC's AudioSpecificConfig, as much of it as an ADTS header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AacConfig {
    /// The audio object type of the core (2: LC), whatever SBR or PS signalling surrounds it.
    pub object_type: u8,
    /// The sampling frequency index of the core.
    pub frequency_index: u8,
    /// The channel configuration.
    pub channels: u8,
}

impl AacConfig {
    /// Read an AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1). HE-AAC's explicit signalling
    /// gives the core's object type and rate. An explicit frequency (index 15), an object type
    /// ADTS cannot carry and channel configuration 0 are refused.
    pub fn parse(config: &[u8]) -> Result<Self, FlvError> {
        let bad = |what| FlvError::Config(what);
        let mut bits = Bits::new(config);
        let mut object_type = read_object_type(&mut bits).ok_or(bad("AudioSpecificConfig"))?;
        let frequency_index = bits.bits(4).ok_or(bad("AudioSpecificConfig"))? as u8;
        if frequency_index == 15 {
            return Err(bad("AAC sampling frequency (explicit)"));
        }
        let channels = bits.bits(4).ok_or(bad("AudioSpecificConfig"))? as u8;
        if object_type == 5 || object_type == 29 {
            // SBR (and PS): the extension's rate, then the core's object type; ADTS carries
            // the core's rate and type (implicit signalling).
            let _extension_index = bits.bits(4).ok_or(bad("AudioSpecificConfig"))?;
            object_type = read_object_type(&mut bits).ok_or(bad("AudioSpecificConfig"))?;
        }
        if !(1..=4).contains(&object_type) {
            return Err(FlvError::Unsupported(format!(
                "AAC object type {object_type}"
            )));
        }
        if channels == 0 || channels > 7 {
            return Err(bad("AAC channel configuration"));
        }
        Ok(Self {
            object_type,
            frequency_index,
            channels,
        })
    }

    /// The 7-byte ADTS header of a raw frame of `payload` bytes.
    pub fn adts_header(&self, payload: usize) -> [u8; 7] {
        let len = payload + 7;
        let profile = self.object_type - 1;
        [
            0xFF,
            0xF1,
            profile << 6 | self.frequency_index << 2 | self.channels >> 2,
            (self.channels & 3) << 6 | (len >> 11) as u8 & 0x03,
            (len >> 3) as u8,
            ((len & 7) as u8) << 5 | 0x1F,
            0xFC,
        ]
    }
}

/// Reads fields from a byte slice front to back.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    /// A 16-bit length, then that many bytes.
    fn sized(&mut self) -> Option<&'a [u8]> {
        let len = self.take(2)?;
        self.take(usize::from(u16::from_be_bytes([len[0], len[1]])))
    }
}

/// An audio object type, with its escape (31: 32 and six more bits).
fn read_object_type(bits: &mut Bits<'_>) -> Option<u8> {
    match bits.bits(5)? {
        31 => Some(32 + bits.bits(6)? as u8),
        t => Some(t as u8),
    }
}

#[cfg(test)]
mod tests;
