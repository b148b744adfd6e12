//! Sequence parameter sets and audio headers read for what a playlist must say about a track:
//! RFC 6381 codec strings (`avc1.PPCCLL`, `hvc1.…` per ISO/IEC 14496-15 Annex E, `mp4a.40.N`,
//! `ac-3`, `ec-3`) and the picture size after cropping.
//!
//! What it does not do: anything past the fields needed here (VUI, scaling list values,
//! reference picture sets).

/// What a video sequence parameter set says.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct VideoParams {
    /// RFC 6381 codec string.
    pub codec: String,
    /// Displayed width (after cropping).
    pub width: u32,
    /// Displayed height (after cropping).
    pub height: u32,
    /// chroma_format_idc (1: 4:2:0).
    pub chroma_format_idc: u8,
    /// Bits per luma sample.
    pub bit_depth_luma: u8,
    /// Bits per chroma sample.
    pub bit_depth_chroma: u8,
}

/// A bit reader, most significant bit first: over an RBSP (emulation prevention bytes
/// already removed), or any other bit-packed field (an AudioSpecificConfig).
pub(crate) struct Bits<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Bits<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self { data, at: 0 }
    }

    fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.at / 8)?;
        let b = (byte >> (7 - self.at % 8)) & 1;
        self.at += 1;
        Some(u32::from(b))
    }

    pub(crate) fn bits(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0u32, |acc, _| Some(acc << 1 | self.bit()?))
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.at += n;
        (self.at <= self.data.len() * 8).then_some(())
    }

    /// ue(v).
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some(((1u64 << zeros) - 1 + u64::from(self.bits(zeros)?)) as u32)
    }

    /// se(v).
    fn se(&mut self) -> Option<i32> {
        let k = self.ue()?;
        Some(if k % 2 == 1 {
            (k / 2 + 1) as i32
        } else {
            -((k / 2) as i32)
        })
    }
}

/// The RBSP of a NAL unit: emulation prevention bytes (the 3 in 00 00 03) removed.
pub fn rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// Read an H.264 SPS NAL unit (header byte included, emulation prevention still in).
pub fn h264_sps(nal: &[u8]) -> Option<VideoParams> {
    let data = rbsp(nal);
    if data.first()? & 0x1F != 7 {
        return None;
    }
    let (profile, constraints, level) = (*data.get(1)?, *data.get(2)?, *data.get(3)?);
    let mut r = Bits::new(data.get(4..)?);
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format = 1;
    let (mut depth_luma, mut depth_chroma) = (8, 8);
    if matches!(
        profile,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format = r.ue()?;
        if chroma_format == 3 {
            r.bit()?; // separate_colour_plane_flag
        }
        depth_luma = r.ue()?.min(8).saturating_add(8);
        depth_chroma = r.ue()?.min(8).saturating_add(8);
        r.bit()?; // qpprime_y_zero_transform_bypass_flag
        if r.bit()? == 1 {
            let lists = if chroma_format == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? == 1 {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i32, 8i32);
                    for _ in 0..size {
                        if next != 0 {
                            next = (last + r.se()? + 256) % 256;
                        }
                        last = if next == 0 { last } else { next };
                    }
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.bit()?;
            r.se()?;
            r.se()?;
            for _ in 0..r.ue()?.min(255) {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = r.ue()?.checked_add(1)?;
    let height_units = r.ue()?.checked_add(1)?;
    let frame_mbs_only = r.bit()?;
    if frame_mbs_only == 0 {
        r.bit()?; // mb_adaptive_frame_field_flag
    }
    r.bit()?; // direct_8x8_inference_flag
    let (mut crop_x, mut crop_y) = (0, 0);
    if r.bit()? == 1 {
        let (left, right, top, bottom) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
        let (unit_x, unit_y) = match chroma_format {
            0 => (1, 2 - frame_mbs_only),
            1 => (2, 2 * (2 - frame_mbs_only)),
            2 => (2, 2 - frame_mbs_only),
            _ => (1, 2 - frame_mbs_only),
        };
        crop_x = left.checked_add(right)?.checked_mul(unit_x)?;
        crop_y = top.checked_add(bottom)?.checked_mul(unit_y)?;
    }
    let width = width_mbs.checked_mul(16)?.checked_sub(crop_x)?;
    let height = (2 - frame_mbs_only)
        .checked_mul(height_units)?
        .checked_mul(16)?
        .checked_sub(crop_y)?;
    plausible(VideoParams {
        codec: format!("avc1.{profile:02x}{constraints:02x}{level:02x}"),
        width,
        height,
        chroma_format_idc: chroma_format.min(3) as u8,
        bit_depth_luma: depth_luma as u8,
        bit_depth_chroma: depth_chroma as u8,
    })
}

/// Read an H.265 SPS NAL unit (two header bytes included, emulation prevention still in).
pub fn h265_sps(nal: &[u8]) -> Option<VideoParams> {
    let data = rbsp(nal);
    if (data.first()? >> 1) & 0x3F != 33 {
        return None;
    }
    let mut r = Bits::new(data.get(2..)?);
    r.bits(4)?; // sps_video_parameter_set_id
    let sub_layers = r.bits(3)?;
    r.bit()?; // sps_temporal_id_nesting_flag
    let profile_space = r.bits(2)?;
    let tier = r.bit()?;
    let profile_idc = r.bits(5)?;
    let compatibility = r.bits(32)?;
    let mut constraints = [0u8; 6];
    for c in &mut constraints {
        *c = r.bits(8)? as u8;
    }
    let level = r.bits(8)?;
    let mut present = Vec::new();
    for _ in 0..sub_layers {
        present.push((r.bit()?, r.bit()?));
    }
    if sub_layers > 0 {
        r.skip(2 * (8 - sub_layers as usize))?;
    }
    for (profile, level) in present {
        r.skip(88 * profile as usize + 8 * level as usize)?;
    }
    r.ue()?; // sps_seq_parameter_set_id
    let chroma_format = r.ue()?;
    if chroma_format == 3 {
        r.bit()?;
    }
    let width = r.ue()?;
    let height = r.ue()?;
    let (mut crop_x, mut crop_y) = (0, 0);
    if r.bit()? == 1 {
        let (left, right, top, bottom) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
        let (sub_w, sub_h) = match chroma_format {
            1 => (2, 2),
            2 => (2, 1),
            _ => (1, 1),
        };
        crop_x = left.checked_add(right)?.checked_mul(sub_w)?;
        crop_y = top.checked_add(bottom)?.checked_mul(sub_h)?;
    }
    // Read when present (a truncated SPS still gives the size).
    let depth_luma = r.ue().map_or(8, |d| d.min(8) + 8);
    let depth_chroma = r.ue().map_or(8, |d| d.min(8) + 8);
    // ISO/IEC 14496-15 E.3: profile space letter and profile, the compatibility flags in
    // reverse bit order, tier and level, then the constraint bytes without trailing zeros.
    let space = ["", "A", "B", "C"][profile_space as usize];
    let mut codec = format!(
        "hvc1.{space}{profile_idc}.{:X}.{}{level}",
        compatibility.reverse_bits(),
        if tier == 1 { 'H' } else { 'L' }
    );
    let used = constraints
        .iter()
        .rposition(|b| *b != 0)
        .map_or(0, |i| i + 1);
    for b in &constraints[..used] {
        codec.push_str(&format!(".{b:X}"));
    }
    plausible(VideoParams {
        codec,
        width: width.checked_sub(crop_x)?,
        height: height.checked_sub(crop_y)?,
        chroma_format_idc: chroma_format.min(3) as u8,
        bit_depth_luma: depth_luma as u8,
        bit_depth_chroma: depth_chroma as u8,
    })
}

/// Larger than any picture a level of H.264 or H.265 allows, in either dimension.
pub const MAX_DIMENSION: u32 = 32_768;

/// `params`, unless its picture size is beyond any level (a damaged or hostile SPS).
fn plausible(params: VideoParams) -> Option<VideoParams> {
    (params.width <= MAX_DIMENSION && params.height <= MAX_DIMENSION).then_some(params)
}

/// The RFC 6381 string of an audio track from the start of its first frame.
pub fn audio_codec(codec: crate::ts::Codec, frame: &[u8]) -> Option<String> {
    use crate::ts::Codec;
    match codec {
        Codec::AacAdts => {
            if frame.len() < 3 || frame[0] != 0xFF || frame[1] & 0xF0 != 0xF0 {
                return None;
            }
            let object_type = (frame[2] >> 6) + 1;
            Some(format!("mp4a.40.{object_type}"))
        }
        Codec::MpegAudio => {
            if frame.len() < 2 || frame[0] != 0xFF || frame[1] & 0xE0 != 0xE0 {
                return None;
            }
            let mpeg1 = (frame[1] >> 3) & 0x03 == 3;
            Some(
                match (frame[1] >> 1) & 0x03 {
                    1 => "mp4a.40.34", // layer III
                    _ if mpeg1 => "mp4a.6B",
                    _ => "mp4a.69",
                }
                .to_owned(),
            )
        }
        Codec::Ac3 => Some("ac-3".into()),
        Codec::Eac3 => Some("ec-3".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ts::Codec;

    #[test]
    fn audio_strings() {
        assert_eq!(
            audio_codec(Codec::AacAdts, &[0xFF, 0xF1, 0x50, 0x80]).as_deref(),
            Some("mp4a.40.2")
        );
        assert_eq!(
            audio_codec(Codec::MpegAudio, &[0xFF, 0xFD, 0x90]).as_deref(),
            Some("mp4a.6B")
        );
        assert_eq!(
            audio_codec(Codec::MpegAudio, &[0xFF, 0xFB, 0x90]).as_deref(),
            Some("mp4a.40.34")
        );
        assert_eq!(audio_codec(Codec::AacAdts, &[0x00]), None);
        assert_eq!(audio_codec(Codec::Eac3, &[]).as_deref(), Some("ec-3"));
    }

    /// Bits written MSB first, for SPS made up in tests.
    struct Writer(Vec<bool>);

    impl Writer {
        fn bits(&mut self, n: u32, v: u64) -> &mut Self {
            for i in (0..n).rev() {
                self.0.push(v >> i & 1 == 1);
            }
            self
        }
        fn ue(&mut self, v: u64) -> &mut Self {
            let coded = v + 1;
            let len = 64 - coded.leading_zeros();
            self.bits(len - 1, 0).bits(len, coded)
        }
        fn bytes(&self) -> Vec<u8> {
            let mut out = vec![0u8; self.0.len().div_ceil(8) + 1];
            for (i, b) in self.0.iter().enumerate() {
                out[i / 8] |= u8::from(*b) << (7 - i % 8);
            }
            out
        }
    }

    #[test]
    fn an_sps_with_sizes_that_overflow_is_refused_not_wrapped() {
        let sps = |width_mbs: u64, crop: u64| {
            let mut w = Writer(Vec::new());
            w.bits(8, 0x67).bits(8, 66).bits(8, 0).bits(8, 30); // NAL header, baseline 3.0
            w.ue(0).ue(0).ue(0).ue(0).ue(1).bits(1, 0); // ids, frame num, poc 0, refs
            w.ue(width_mbs).ue(0).bits(1, 1).bits(1, 1); // sizes, frame_mbs_only
            w.bits(1, 1).ue(crop).ue(crop).ue(0).ue(0); // cropping
            w.bits(1, 0);
            w.bytes()
        };
        let ok = h264_sps(&sps(119, 0)).unwrap();
        assert_eq!((ok.width, ok.height), (1920, 16));
        assert_eq!(h264_sps(&sps(u64::from(u32::MAX) - 1, 0)), None);
        assert_eq!(h264_sps(&sps(300_000_000, 0)), None);
        assert_eq!(h264_sps(&sps(119, u64::from(u32::MAX) - 1)), None);
        assert_eq!(h264_sps(&sps(5000, 0)), None, "80000 pixels wide");
    }

    #[test]
    fn bits_read_exp_golomb() {
        // 1 | 010 | 011 | 00100 | 00101: ue 0, 1, 2, 3 then se -2.
        let mut r = Bits::new(&[0b1010_0110, 0b0100_0010, 0b1000_0000]);
        assert_eq!(
            (r.ue(), r.ue(), r.ue(), r.ue()),
            (Some(0), Some(1), Some(2), Some(3))
        );
        assert_eq!(r.se(), Some(-2));
        assert_eq!(rbsp(&[0, 0, 3, 1, 0, 0, 3]), vec![0, 0, 1, 0, 0]);
    }
}
