//! From MPEG-TS's framing to MP4's: Annex B start codes to 4-byte NAL lengths (parameter sets
//! and access unit delimiters taken out: MP4 carries them in the sample entry), and ADTS
//! headers to an AudioSpecificConfig and raw AAC frames.

use crate::es::VideoCodec;

/// What a NAL unit is, for the conversion.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum NalKind {
    /// H.264 SPS, or H.265 SPS.
    Sps,
    /// PPS.
    Pps,
    /// H.265 VPS.
    Vps,
    /// An access unit delimiter (dropped).
    Delimiter,
    /// Anything else (kept in the sample).
    Other,
}

/// The kind of NAL unit `nal` (its header first) in `codec`.
pub fn nal_kind(codec: VideoCodec, nal: &[u8]) -> NalKind {
    let Some(&head) = nal.first() else {
        return NalKind::Other;
    };
    match codec {
        VideoCodec::H264 => match head & 0x1F {
            7 => NalKind::Sps,
            8 => NalKind::Pps,
            9 => NalKind::Delimiter,
            _ => NalKind::Other,
        },
        VideoCodec::H265 => match (head >> 1) & 0x3F {
            32 => NalKind::Vps,
            33 => NalKind::Sps,
            34 => NalKind::Pps,
            35 => NalKind::Delimiter,
            _ => NalKind::Other,
        },
    }
}

/// The NAL units of an Annex B byte stream (start codes of three or four bytes), without
/// their start codes and trailing zero bytes.
pub fn nal_units(stream: &[u8]) -> impl Iterator<Item = &[u8]> {
    let finder = memchr::memmem::Finder::new(&[0u8, 0, 1]);
    let mut starts: Vec<usize> = finder.find_iter(stream).map(|i| i + 3).collect();
    starts.push(stream.len() + 3);
    let mut at = 0;
    std::iter::from_fn(move || {
        while at + 1 < starts.len() {
            let from = starts[at];
            let to = starts[at + 1] - 3;
            at += 1;
            let mut nal = &stream[from.min(stream.len())..to.min(stream.len())];
            while let [rest @ .., 0] = nal {
                nal = rest;
            }
            if !nal.is_empty() {
                return Some(nal);
            }
        }
        None
    })
}

/// Append access unit `annexb` to `out` as MP4 sample data (each NAL unit after its 4-byte
/// length); parameter sets go to `params` instead, delimiters nowhere. Returns the bytes
/// appended.
pub fn to_length_prefixed(
    codec: VideoCodec,
    annexb: &[u8],
    out: &mut Vec<u8>,
    mut params: impl FnMut(NalKind, &[u8]),
) -> usize {
    let before = out.len();
    for nal in nal_units(annexb) {
        match nal_kind(codec, nal) {
            NalKind::Other => {
                out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                out.extend_from_slice(nal);
            }
            NalKind::Delimiter => {}
            kind => params(kind, nal),
        }
    }
    out.len() - before
}

/// An ADTS frame read: what MP4 needs of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdtsFrame<'a> {
    /// Its AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1).
    pub config: Vec<u8>,
    /// Channels.
    pub channels: u16,
    /// Sampling rate, Hz.
    pub sample_rate: u32,
    /// The raw AAC frame, after the header.
    pub payload: &'a [u8],
    /// The whole frame's length, header included (where the next frame starts).
    pub len: usize,
}

/// The ADTS frame at the start of `frame`. `None` when it is not one this can describe (or it
/// is cut short).
pub fn adts_config(frame: &[u8]) -> Option<AdtsFrame<'_>> {
    const RATES: [u32; 13] = [
        96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
    ];
    if frame.len() < 7 || frame[0] != 0xFF || frame[1] & 0xF6 != 0xF0 {
        return None;
    }
    let protection_absent = frame[1] & 1 == 1;
    let object_type = (frame[2] >> 6) + 1;
    let rate_index = (frame[2] >> 2) & 0x0F;
    let channels = ((frame[2] & 1) << 2) | (frame[3] >> 6);
    let rate = *RATES.get(usize::from(rate_index))?;
    let length = (usize::from(frame[3] & 3) << 11)
        | (usize::from(frame[4]) << 3)
        | usize::from(frame[5] >> 5);
    let header = if protection_absent { 7 } else { 9 };
    if length < header || length > frame.len() {
        return None;
    }
    let config = vec![
        (object_type << 3) | (rate_index >> 1),
        ((rate_index & 1) << 7) | (channels << 3),
    ];
    Some(AdtsFrame {
        config,
        channels: u16::from(channels),
        sample_rate: rate,
        payload: &frame[header..length],
        len: length,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_codes_become_lengths_and_parameter_sets_go_aside() {
        let au = [
            0, 0, 0, 1, 0x09, 0xF0, // AUD
            0, 0, 0, 1, 0x67, 1, 2, 3, // SPS
            0, 0, 1, 0x68, 4, 5, // PPS
            0, 0, 1, 0x65, 9, 9, 9, 0, 0, // IDR slice, trailing zeros
        ];
        let mut out = Vec::new();
        let mut params = Vec::new();
        let n = to_length_prefixed(VideoCodec::H264, &au, &mut out, |k, p| {
            params.push((k, p.to_vec()))
        });
        assert_eq!(out, [0, 0, 0, 4, 0x65, 9, 9, 9]);
        assert_eq!(n, out.len());
        assert_eq!(
            params,
            [
                (NalKind::Sps, vec![0x67, 1, 2, 3]),
                (NalKind::Pps, vec![0x68, 4, 5])
            ]
        );
        // Garbage before the first start code is not a NAL unit of the access unit's, and
        // nothing is found in nothing.
        assert_eq!(
            nal_units(&[7, 7, 0, 0, 1, 0x41, 1]).collect::<Vec<_>>(),
            [[0x41, 1]]
        );
        assert_eq!(nal_units(&[]).count(), 0);
        assert_eq!(nal_units(&[0, 0, 1]).count(), 0);
    }

    #[test]
    fn an_adts_header_gives_the_audio_specific_config() {
        // AAC LC, 48 kHz (index 3), stereo, 7-byte header, 10-byte frame.
        let frame = [0xFF, 0xF1, 0x4C, 0x80, 0x01, 0x5F, 0xFC, 1, 2, 3];
        let f = adts_config(&frame).unwrap();
        assert_eq!(f.config, [0x11, 0x90]);
        assert_eq!((f.channels, f.sample_rate, f.len), (2, 48000, 10));
        assert_eq!(f.payload, [1, 2, 3]);
        assert!(adts_config(&frame[..6]).is_none());
        assert!(
            adts_config(&[0xFF, 0xF1, 0x7C, 0x80, 0x01, 0x5F, 0xFC]).is_none(),
            "rate 15"
        );
    }
}
