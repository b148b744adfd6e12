//! Fragmented MP4 (CMAF, ISO/IEC 23000-19 over ISO/IEC 14496-12) written from elementary
//! streams: the init segment (`ftyp` + `moov` with one track per stream) and fragments
//! (`moof` + `mdat`), for HLS with fMP4 and DASH. No I/O: bytes in, bytes out.
//!
//! ```text
//!  Track (codec configuration: H.264 SPS/PPS, H.265 VPS/SPS/PPS, AAC AudioSpecificConfig)
//!    └─ init_segment ─► ftyp (cmfc) · moov: mvhd · trak (tkhd · mdia: mdhd · hdlr · minf ·
//!                        stbl: stsd (avc1/avcC, hvc1/hvcC, mp4a/esds) + empty tables) · mvex/trex
//!  Run (one track's samples: sizes, durations, sync flags, signed composition offsets,
//!       the 64-bit base decode time)
//!    └─ fragment ─► moof: mfhd · traf (tfhd · tfdt v1 · trun v1) per track · mdat
//! ```
//!
//! Sample data goes in as the codec carries it in MP4: length-prefixed NAL units (see
//! [`annexb`] for the conversion from MPEG-TS's start codes) and raw AAC frames (ADTS
//! headers stripped). Timestamps are the caller's, already unwrapped from MPEG-TS's 33 bits.

pub mod annexb;
mod boxes;
mod remux;

pub use boxes::{avc_decoder_config, BoxWriter};
pub use remux::{Cut, RemuxStats, Remuxer, AUDIO_TRACK, VIDEO_TRACK};

/// What a track carries and how its decoder is configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Codec {
    /// H.264: its parameter sets (NAL units without start codes), one of each at least.
    H264 {
        /// Sequence parameter sets.
        sps: Vec<Vec<u8>>,
        /// Picture parameter sets.
        pps: Vec<Vec<u8>>,
    },
    /// H.265: its parameter sets.
    H265 {
        /// Video parameter sets.
        vps: Vec<Vec<u8>>,
        /// Sequence parameter sets.
        sps: Vec<Vec<u8>>,
        /// Picture parameter sets.
        pps: Vec<Vec<u8>>,
    },
    /// AAC: its AudioSpecificConfig (ISO/IEC 14496-3), e.g. from [`annexb::adts_config`].
    Aac {
        /// The AudioSpecificConfig bytes.
        config: Vec<u8>,
        /// Channels.
        channels: u16,
        /// Sampling rate, Hz.
        sample_rate: u32,
    },
}

/// One track of the init segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Track {
    /// track_ID (1 and up, unique in the file).
    pub id: u32,
    /// Ticks per second of its timestamps (90000 for video from MPEG-TS; the sampling rate
    /// for audio).
    pub timescale: u32,
    /// Picture size (video), pixels.
    pub width: u16,
    /// Picture height (video), pixels.
    pub height: u16,
    /// The codec.
    pub codec: Codec,
}

impl Track {
    fn is_video(&self) -> bool {
        !matches!(self.codec, Codec::Aac { .. })
    }
}

/// One sample of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Duration, track timescale.
    pub duration: u32,
    /// Size of its data, bytes.
    pub size: u32,
    /// A sync sample (a keyframe; every audio sample).
    pub sync: bool,
    /// PTS minus DTS, track timescale (negative with some B-frame arrangements).
    pub composition_offset: i32,
}

/// One track's samples in a fragment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run<'a> {
    /// The track.
    pub track_id: u32,
    /// DTS of the first sample, track timescale, since the start of the stream (64 bits).
    pub base_decode_time: u64,
    /// The samples, in decode order.
    pub samples: &'a [Sample],
    /// Their data, back to back (the sizes add up to its length).
    pub data: &'a [u8],
}

/// Why a fragment or init segment could not be written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Mp4Error {
    /// A run's sample sizes do not add up to its data.
    #[error("track {track}: samples add up to {samples} bytes, data is {data}")]
    SizeMismatch {
        /// The track.
        track: u32,
        /// What the samples say.
        samples: u64,
        /// What the data is.
        data: usize,
    },
    /// A codec configuration is missing a parameter set or is too large for its box.
    #[error("track {0}: its codec configuration is incomplete or too large")]
    Config(u32),
    /// No track.
    #[error("no track")]
    NoTrack,
}

/// The init segment: `ftyp` and `moov` for `tracks`.
pub fn init_segment(tracks: &[Track]) -> Result<Vec<u8>, Mp4Error> {
    if tracks.is_empty() {
        return Err(Mp4Error::NoTrack);
    }
    let mut w = BoxWriter::new();
    boxes::ftyp(&mut w);
    boxes::moov(&mut w, tracks)?;
    Ok(w.finish())
}

/// A fragment: `moof` with one `traf` per run and the `mdat` holding their data in the same
/// order. `sequence` is the fragment's sequence number (1 and up, increasing).
pub fn fragment(sequence: u32, runs: &[Run<'_>]) -> Result<Vec<u8>, Mp4Error> {
    for r in runs {
        let samples: u64 = r.samples.iter().map(|s| u64::from(s.size)).sum();
        if samples != r.data.len() as u64 {
            return Err(Mp4Error::SizeMismatch {
                track: r.track_id,
                samples,
                data: r.data.len(),
            });
        }
    }
    let mut w = BoxWriter::new();
    boxes::moof_and_mdat(&mut w, sequence, runs);
    Ok(w.finish())
}

#[cfg(test)]
mod tests;
