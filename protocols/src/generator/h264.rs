//! A tiny H.264 writer: Constrained Baseline, every coded macroblock I_PCM, everything else
//! skipped (ITU-T H.264 §7.3). Enough for a decodable picture that moves, with no encoder.

/// Bit writer for RBSP payloads with Exp-Golomb codes (§9.1).
#[derive(Debug, Default)]
pub(super) struct BitWriter {
    bytes: Vec<u8>,
    bits: u8,
}

impl BitWriter {
    pub(super) fn put(&mut self, value: u32, width: u8) {
        for i in (0..width).rev() {
            self.bit(value >> i & 1 == 1);
        }
    }

    pub(super) fn bit(&mut self, one: bool) {
        if self.bits == 0 {
            self.bytes.push(0);
        }
        if one {
            if let Some(last) = self.bytes.last_mut() {
                *last |= 0x80 >> self.bits;
            }
        }
        self.bits = (self.bits + 1) % 8;
    }

    /// ue(v).
    pub(super) fn ue(&mut self, value: u32) {
        let v = u64::from(value) + 1;
        let len = 64 - v.leading_zeros() as u8;
        self.put(0, len - 1);
        for i in (0..len).rev() {
            self.bit(v >> i & 1 == 1);
        }
    }

    /// se(v).
    pub(super) fn se(&mut self, value: i32) {
        let mapped = if value > 0 {
            2 * value as u32 - 1
        } else {
            2 * value.unsigned_abs()
        };
        self.ue(mapped);
    }

    pub(super) fn align_zero(&mut self) {
        while self.bits != 0 {
            self.bit(false);
        }
    }

    pub(super) fn bytes(&mut self, data: &[u8]) {
        debug_assert_eq!(self.bits, 0);
        self.bytes.extend_from_slice(data);
    }

    /// The bytes written, which must end on a byte boundary (no trailing bits added).
    pub(super) fn finish_aligned(self) -> Vec<u8> {
        debug_assert_eq!(self.bits, 0);
        self.bytes
    }

    /// rbsp_trailing_bits() and the finished RBSP.
    pub(super) fn finish(mut self) -> Vec<u8> {
        self.bit(true);
        self.align_zero();
        self.bytes
    }
}

/// Append a NAL unit (4-byte start code, header, RBSP with emulation prevention) to `out`.
pub(super) fn push_nal(out: &mut Vec<u8>, header: u8, rbsp: &[u8]) {
    out.extend_from_slice(&[0, 0, 0, 1, header]);
    let mut zeros = 0;
    for &b in rbsp {
        if zeros >= 2 && b <= 3 {
            out.push(3);
            zeros = 0;
        }
        out.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
}

/// Picture geometry in macroblocks, with the crop that gives the display size.
#[derive(Clone, Copy, Debug)]
pub(super) struct Geometry {
    pub(super) width: u16,
    pub(super) height: u16,
    pub(super) mbs_wide: u32,
    pub(super) mbs_high: u32,
}

impl Geometry {
    pub(super) fn new(width: u16, height: u16) -> Self {
        Self {
            width,
            height,
            mbs_wide: u32::from(width).div_ceil(16),
            mbs_high: u32::from(height).div_ceil(16),
        }
    }

    pub(super) fn macroblocks(&self) -> u32 {
        self.mbs_wide * self.mbs_high
    }
}

/// log2_max_frame_num used in the SPS and every slice header.
const FRAME_NUM_BITS: u8 = 8;

/// Level from the macroblock rate and frame size (Table A-1).
fn level_idc(g: &Geometry, fps: u32) -> u8 {
    const LEVELS: [(u8, u32, u32); 15] = [
        (10, 1485, 99),
        (11, 3000, 396),
        (12, 6000, 396),
        (13, 11880, 396),
        (20, 11880, 396),
        (21, 19800, 792),
        (22, 20250, 1620),
        (30, 40500, 1620),
        (31, 108000, 3600),
        (32, 216000, 5120),
        (40, 245760, 8192),
        (42, 522240, 8704),
        (50, 589824, 22080),
        (51, 983040, 36864),
        (52, 2073600, 36864),
    ];
    let fs = g.macroblocks();
    let mbps = fs * fps;
    LEVELS
        .iter()
        .find(|(_, max_mbps, max_fs)| mbps <= *max_mbps && fs <= *max_fs)
        .map_or(52, |l| l.0)
}

/// SPS NAL unit (§7.3.2.1.1) with VUI timing for a fixed frame rate.
pub(super) fn sps(g: &Geometry, fps: u32) -> Vec<u8> {
    let mut w = BitWriter::default();
    w.put(66, 8); // profile_idc: Baseline
    w.put(0b1100_0000, 8); // constraint_set0 and set1: Constrained Baseline
    w.put(u32::from(level_idc(g, fps)), 8);
    w.ue(0); // seq_parameter_set_id
    w.ue(u32::from(FRAME_NUM_BITS) - 4); // log2_max_frame_num_minus4
    w.ue(2); // pic_order_cnt_type: output order is decoding order
    w.ue(1); // max_num_ref_frames
    w.bit(false); // gaps_in_frame_num_value_allowed_flag
    w.ue(g.mbs_wide - 1);
    w.ue(g.mbs_high - 1);
    w.bit(true); // frame_mbs_only_flag
    w.bit(true); // direct_8x8_inference_flag
    let crop_right = (g.mbs_wide * 16 - u32::from(g.width)) / 2;
    let crop_bottom = (g.mbs_high * 16 - u32::from(g.height)) / 2;
    let crop = crop_right > 0 || crop_bottom > 0;
    w.bit(crop);
    if crop {
        w.ue(0);
        w.ue(crop_right);
        w.ue(0);
        w.ue(crop_bottom);
    }
    w.bit(true); // vui_parameters_present_flag
    w.bit(false); // aspect_ratio_info_present_flag
    w.bit(false); // overscan_info_present_flag
    w.bit(false); // video_signal_type_present_flag
    w.bit(false); // chroma_loc_info_present_flag
    w.bit(true); // timing_info_present_flag
    w.put(1, 32); // num_units_in_tick
    w.put(2 * fps, 32); // time_scale
    w.bit(true); // fixed_frame_rate_flag
    w.bit(false); // nal_hrd_parameters_present_flag
    w.bit(false); // vcl_hrd_parameters_present_flag
    w.bit(false); // pic_struct_present_flag
    w.bit(true); // bitstream_restriction_flag
    w.bit(true); // motion_vectors_over_pic_boundaries_flag
    w.ue(0); // max_bytes_per_pic_denom
    w.ue(0); // max_bits_per_mb_denom
    w.ue(16); // log2_max_mv_length_horizontal
    w.ue(16); // log2_max_mv_length_vertical
    w.ue(0); // max_num_reorder_frames: no reordering, output at once
    w.ue(1); // max_dec_frame_buffering
    let mut nal = Vec::new();
    push_nal(&mut nal, 0x67, &w.finish());
    nal
}

/// PPS NAL unit (§7.3.2.2): CAVLC, deblocking control present.
pub(super) fn pps() -> Vec<u8> {
    let mut w = BitWriter::default();
    w.ue(0); // pic_parameter_set_id
    w.ue(0); // seq_parameter_set_id
    w.bit(false); // entropy_coding_mode_flag: CAVLC
    w.bit(false); // bottom_field_pic_order_in_frame_present_flag
    w.ue(0); // num_slice_groups_minus1
    w.ue(0); // num_ref_idx_l0_default_active_minus1
    w.ue(0); // num_ref_idx_l1_default_active_minus1
    w.bit(false); // weighted_pred_flag
    w.put(0, 2); // weighted_bipred_idc
    w.se(0); // pic_init_qp_minus26
    w.se(0); // pic_init_qs_minus26
    w.se(0); // chroma_qp_index_offset
    w.bit(true); // deblocking_filter_control_present_flag
    w.bit(false); // constrained_intra_pred_flag
    w.bit(false); // redundant_pic_cnt_present_flag
    let mut nal = Vec::new();
    push_nal(&mut nal, 0x68, &w.finish());
    nal
}

/// Samples of one macroblock: 256 luma, 64 Cb, 64 Cr (4:2:0, 8 bits).
pub(super) type MacroblockSamples = [u8; 384];

/// A flat macroblock of one colour.
pub(super) fn flat(y: u8, cb: u8, cr: u8) -> MacroblockSamples {
    let mut s = [y; 384];
    s[256..320].fill(cb);
    s[320..].fill(cr);
    s
}

/// An IDR picture: every macroblock I_PCM, samples from `paint(mb_x, mb_y)`.
pub(super) fn idr_slice(
    g: &Geometry,
    idr_pic_id: u32,
    paint: impl Fn(u32, u32) -> MacroblockSamples,
) -> Vec<u8> {
    let mut w = BitWriter::default();
    w.ue(0); // first_mb_in_slice
    w.ue(7); // slice_type: I (all slices)
    w.ue(0); // pic_parameter_set_id
    w.put(0, FRAME_NUM_BITS); // frame_num
    w.ue(idr_pic_id % 65536);
    w.bit(false); // no_output_of_prior_pics_flag
    w.bit(false); // long_term_reference_flag
    w.se(0); // slice_qp_delta
    w.ue(1); // disable_deblocking_filter_idc: off
    for my in 0..g.mbs_high {
        for mx in 0..g.mbs_wide {
            w.ue(25); // mb_type I_PCM
            w.align_zero();
            w.bytes(&paint(mx, my));
        }
    }
    let mut nal = Vec::new();
    push_nal(&mut nal, 0x65, &w.finish());
    nal
}

/// A P picture: every macroblock skipped except `coded` (address order), which are I_PCM.
pub(super) fn p_slice(g: &Geometry, frame_num: u32, coded: &[(u32, MacroblockSamples)]) -> Vec<u8> {
    let mut w = BitWriter::default();
    w.ue(0); // first_mb_in_slice
    w.ue(5); // slice_type: P (all slices)
    w.ue(0); // pic_parameter_set_id
    w.put(frame_num % (1 << FRAME_NUM_BITS), FRAME_NUM_BITS);
    w.bit(false); // num_ref_idx_active_override_flag
    w.bit(false); // ref_pic_list_modification_flag_l0
    w.bit(false); // adaptive_ref_pic_marking_mode_flag
    w.se(0); // slice_qp_delta
    w.ue(1); // disable_deblocking_filter_idc
    let mut next = 0;
    for (address, samples) in coded {
        w.ue(address - next); // mb_skip_run
        w.ue(5 + 25); // mb_type I_PCM in a P slice
        w.align_zero();
        w.bytes(samples);
        next = address + 1;
    }
    if next < g.macroblocks() {
        w.ue(g.macroblocks() - next);
    }
    let mut nal = Vec::new();
    push_nal(&mut nal, 0x41, &w.finish());
    nal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb_codes() {
        let mut w = BitWriter::default();
        w.ue(0); // 1
        w.ue(3); // 00100
        w.se(-1); // 011
        w.align_zero();
        assert_eq!(w.bytes, vec![0b1001_0001, 0b1000_0000]);
    }

    #[test]
    fn emulation_prevention() {
        let mut out = Vec::new();
        push_nal(&mut out, 0x06, &[0, 0, 1, 0, 0, 0, 5]);
        assert_eq!(out, vec![0, 0, 0, 1, 6, 0, 0, 3, 1, 0, 0, 3, 0, 5]);
    }
}
