//! The boxes themselves (ISO/IEC 14496-12 and, for the decoder configurations, 14496-15 and
//! 14496-1), and a writer that sizes each box once it is closed.

use super::{Codec, Mp4Error, Run, Track};

/// Writes nested boxes into one buffer: a box's size is filled in when it is closed.
#[derive(Debug, Default)]
pub struct BoxWriter {
    buf: Vec<u8>,
    open: Vec<usize>,
}

impl BoxWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Open a box of type `kind`.
    pub fn start(&mut self, kind: &[u8; 4]) {
        self.open.push(self.buf.len());
        self.buf.extend_from_slice(&[0; 4]);
        self.buf.extend_from_slice(kind);
    }

    /// Open a full box (with version and flags).
    pub fn start_full(&mut self, kind: &[u8; 4], version: u8, flags: u32) {
        self.start(kind);
        self.u32(u32::from(version) << 24 | (flags & 0x00FF_FFFF));
    }

    /// Close the innermost open box.
    pub fn end(&mut self) {
        if let Some(start) = self.open.pop() {
            let size = (self.buf.len() - start) as u32;
            self.buf[start..start + 4].copy_from_slice(&size.to_be_bytes());
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing is written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// A byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    /// 16 bits, big-endian.
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// 32 bits, big-endian.
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// 64 bits, big-endian.
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Bytes as they are.
    pub fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    /// `n` zero bytes.
    pub fn zeros(&mut self, n: usize) {
        self.buf.resize(self.buf.len() + n, 0);
    }

    /// Overwrite 32 bits at `at` (a field whose value is known later).
    pub fn patch_u32(&mut self, at: usize, v: u32) {
        self.buf[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }

    /// The bytes (every box closed).
    pub fn finish(mut self) -> Vec<u8> {
        while !self.open.is_empty() {
            self.end();
        }
        self.buf
    }
}

/// The unity matrix of `mvhd` and `tkhd`.
const MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

pub(super) fn ftyp(w: &mut BoxWriter) {
    w.start(b"ftyp");
    w.bytes(b"iso6");
    w.u32(0);
    for brand in [b"iso6", b"cmfc", b"mp41"] {
        w.bytes(brand);
    }
    w.end();
}

pub(super) fn moov(w: &mut BoxWriter, tracks: &[Track]) -> Result<(), Mp4Error> {
    w.start(b"moov");
    w.start_full(b"mvhd", 0, 0);
    w.u32(0); // creation_time
    w.u32(0); // modification_time
    w.u32(1000); // timescale
    w.u32(0); // duration: unknown (fragmented)
    w.u32(0x0001_0000); // rate 1.0
    w.u16(0x0100); // volume 1.0
    w.zeros(10);
    MATRIX.iter().for_each(|m| w.u32(*m));
    w.zeros(24); // pre_defined
    w.u32(
        tracks
            .iter()
            .map(|t| t.id)
            .max()
            .unwrap_or(0)
            .saturating_add(1),
    );
    w.end();
    for t in tracks {
        trak(w, t)?;
    }
    w.start(b"mvex");
    for t in tracks {
        w.start_full(b"trex", 0, 0);
        w.u32(t.id);
        w.u32(1); // default_sample_description_index
        w.u32(0); // default_sample_duration
        w.u32(0); // default_sample_size
        w.u32(0); // default_sample_flags
        w.end();
    }
    w.end();
    w.end();
    Ok(())
}

fn trak(w: &mut BoxWriter, t: &Track) -> Result<(), Mp4Error> {
    let video = t.is_video();
    w.start(b"trak");
    w.start_full(b"tkhd", 0, 0x3); // enabled, in movie
    w.u32(0);
    w.u32(0);
    w.u32(t.id);
    w.u32(0);
    w.u32(0); // duration
    w.zeros(8);
    w.u16(0); // layer
    w.u16(0); // alternate_group
    w.u16(if video { 0 } else { 0x0100 });
    w.u16(0);
    MATRIX.iter().for_each(|m| w.u32(*m));
    w.u32(u32::from(t.width) << 16);
    w.u32(u32::from(t.height) << 16);
    w.end();
    w.start(b"mdia");
    w.start_full(b"mdhd", 0, 0);
    w.u32(0);
    w.u32(0);
    w.u32(t.timescale);
    w.u32(0);
    w.u16(0x55C4); // language: und
    w.u16(0);
    w.end();
    w.start_full(b"hdlr", 0, 0);
    w.u32(0);
    w.bytes(if video { b"vide" } else { b"soun" });
    w.zeros(12);
    w.bytes(if video { b"video\0" } else { b"sound\0" });
    w.end();
    w.start(b"minf");
    if video {
        w.start_full(b"vmhd", 0, 1);
        w.zeros(8);
    } else {
        w.start_full(b"smhd", 0, 0);
        w.zeros(4);
    }
    w.end();
    w.start(b"dinf");
    w.start_full(b"dref", 0, 0);
    w.u32(1);
    w.start_full(b"url ", 0, 1); // the data is in this file
    w.end();
    w.end();
    w.end();
    w.start(b"stbl");
    w.start_full(b"stsd", 0, 0);
    w.u32(1);
    sample_entry(w, t)?;
    w.end();
    for kind in [b"stts", b"stsc", b"stco"] {
        w.start_full(kind, 0, 0);
        w.u32(0);
        w.end();
    }
    w.start_full(b"stsz", 0, 0);
    w.u32(0);
    w.u32(0);
    w.end();
    w.end(); // stbl
    w.end(); // minf
    w.end(); // mdia
    w.end(); // trak
    Ok(())
}

fn visual_entry(w: &mut BoxWriter, kind: &[u8; 4], t: &Track) {
    w.start(kind);
    w.zeros(6);
    w.u16(1); // data_reference_index
    w.zeros(16); // pre_defined, reserved
    w.u16(t.width);
    w.u16(t.height);
    w.u32(0x0048_0000); // 72 dpi
    w.u32(0x0048_0000);
    w.u32(0);
    w.u16(1); // frame_count
    w.zeros(32); // compressorname
    w.u16(0x0018); // depth
    w.u16(0xFFFF); // pre_defined -1
}

/// An AVCDecoderConfigurationRecord (ISO/IEC 14496-15): `first` the SPS the profile and
/// level come from; the lists checked by the caller (at most 31 SPS, 255 PPS, each under 64 KiB).
fn avc_config_record(w: &mut BoxWriter, first: &[u8], sps: &[Vec<u8>], pps: &[Vec<u8>]) {
    w.u8(1); // configurationVersion
    w.u8(first[1]); // AVCProfileIndication
    w.u8(first[2]); // profile_compatibility
    w.u8(first[3]); // AVCLevelIndication
    w.u8(0xFF); // lengthSizeMinusOne = 3
    w.u8(0xE0 | sps.len() as u8);
    for s in sps {
        w.u16(s.len() as u16);
        w.bytes(s);
    }
    w.u8(pps.len() as u8);
    for p in pps {
        w.u16(p.len() as u16);
        w.bytes(p);
    }
}

/// The AVCDecoderConfigurationRecord of H.264 parameter sets (as an `avcC` box holds it, and
/// an FLV sequence header), or `None` when they cannot make one.
pub fn avc_decoder_config(sps: &[Vec<u8>], pps: &[Vec<u8>]) -> Option<Vec<u8>> {
    let first = sps.first().filter(|s| s.len() >= 4)?;
    if pps.is_empty()
        || sps.len() > 31
        || pps.len() > 255
        || sps
            .iter()
            .chain(pps)
            .any(|p| p.len() > usize::from(u16::MAX))
    {
        return None;
    }
    let mut w = BoxWriter::new();
    avc_config_record(&mut w, first, sps, pps);
    Some(w.finish())
}

fn sample_entry(w: &mut BoxWriter, t: &Track) -> Result<(), Mp4Error> {
    let too_large = |b: &[u8]| b.len() > usize::from(u16::MAX);
    match &t.codec {
        Codec::H264 { sps, pps } => {
            let first = sps
                .first()
                .filter(|s| s.len() >= 4)
                .ok_or(Mp4Error::Config(t.id))?;
            if pps.is_empty()
                || sps.len() > 31
                || pps.len() > 255
                || sps.iter().chain(pps).any(|p| too_large(p))
            {
                return Err(Mp4Error::Config(t.id));
            }
            visual_entry(w, b"avc1", t);
            w.start(b"avcC");
            avc_config_record(w, first, sps, pps);
            w.end();
            w.end();
        }
        Codec::H265 { vps, sps, pps } => {
            let first = sps.first().ok_or(Mp4Error::Config(t.id))?;
            let rbsp = crate::es::params::rbsp(first);
            // profile_tier_level's general part: 12 bytes after the NAL header and the byte of
            // sps_video_parameter_set_id, max_sub_layers and temporal_id_nesting.
            let general = rbsp.get(3..15).ok_or(Mp4Error::Config(t.id))?;
            if vps.is_empty()
                || pps.is_empty()
                || [vps, sps, pps]
                    .iter()
                    .any(|l| l.len() > usize::from(u16::MAX))
                || vps.iter().chain(sps).chain(pps).any(|p| too_large(p))
            {
                return Err(Mp4Error::Config(t.id));
            }
            let params = crate::es::params::h265_sps(first);
            visual_entry(w, b"hvc1", t);
            w.start(b"hvcC");
            w.u8(1); // configurationVersion
            w.bytes(general);
            w.u16(0xF000); // min_spatial_segmentation_idc 0
            w.u8(0xFC); // parallelismType 0
            w.u8(0xFC | params.as_ref().map_or(1, |p| p.chroma_format_idc & 3));
            w.u8(0xF8
                | params
                    .as_ref()
                    .map_or(0, |p| p.bit_depth_luma.saturating_sub(8) & 7));
            w.u8(0xF8
                | params
                    .as_ref()
                    .map_or(0, |p| p.bit_depth_chroma.saturating_sub(8) & 7));
            w.u16(0); // avgFrameRate: unknown
                      // constantFrameRate 0, numTemporalLayers 1, temporalIdNested 1, lengthSizeMinusOne 3
            w.u8(0x0F);
            w.u8(3); // arrays: VPS, SPS, PPS
            for (kind, list) in [(32u8, vps), (33, sps), (34, pps)] {
                w.u8(0x80 | kind); // array_completeness
                w.u16(list.len() as u16);
                for nal in list {
                    w.u16(nal.len() as u16);
                    w.bytes(nal);
                }
            }
            w.end();
            w.end();
        }
        Codec::Aac {
            config,
            channels,
            sample_rate,
        } => {
            if config.len() < 2 || config.len() > 100 {
                return Err(Mp4Error::Config(t.id));
            }
            w.start(b"mp4a");
            w.zeros(6);
            w.u16(1); // data_reference_index
            w.zeros(8);
            w.u16(*channels);
            w.u16(16); // samplesize
            w.u32(0); // pre_defined, reserved
            w.u32(
                sample_rate
                    .checked_shl(16)
                    .filter(|_| *sample_rate <= 0xFFFF)
                    .unwrap_or(0),
            );
            w.start_full(b"esds", 0, 0);
            let specific = config.len();
            let decoder = 13 + 2 + specific;
            let es = 3 + 2 + decoder + 3;
            w.u8(0x03); // ES_DescrTag
            w.u8(es as u8);
            w.u16(t.id as u16); // ES_ID
            w.u8(0); // no dependency, URL or OCR
            w.u8(0x04); // DecoderConfigDescrTag
            w.u8(decoder as u8);
            w.u8(0x40); // objectTypeIndication: MPEG-4 Audio
            w.u8(0x15); // streamType audio (5) << 2 | upStream 0 | reserved 1
            w.bytes(&[0, 0, 0]); // bufferSizeDB
            w.u32(0); // maxBitrate
            w.u32(0); // avgBitrate
            w.u8(0x05); // DecSpecificInfoTag
            w.u8(specific as u8);
            w.bytes(config);
            w.u8(0x06); // SLConfigDescrTag
            w.u8(1);
            w.u8(2); // predefined: MP4
            w.end();
            w.end();
        }
    }
    Ok(())
}

/// `sample_flags` of a sync sample: depends on no other.
const SYNC: u32 = 0x0200_0000;
/// `sample_flags` of a sample that is not a sync sample: depends on others.
const NOT_SYNC: u32 = 0x0101_0000;

pub(super) fn moof_and_mdat(w: &mut BoxWriter, sequence: u32, runs: &[Run<'_>]) {
    let moof_start = w.len();
    w.start(b"moof");
    w.start_full(b"mfhd", 0, 0);
    w.u32(sequence);
    w.end();
    let mut offsets = Vec::with_capacity(runs.len());
    for r in runs {
        w.start(b"traf");
        w.start_full(b"tfhd", 0, 0x02_0000); // default-base-is-moof
        w.u32(r.track_id);
        w.end();
        w.start_full(b"tfdt", 1, 0);
        w.u64(r.base_decode_time);
        w.end();
        // data offset, and per sample: duration, size, flags, composition offset (signed:
        // version 1).
        w.start_full(b"trun", 1, 0x0000_0F01);
        w.u32(r.samples.len() as u32);
        offsets.push(w.len());
        w.u32(0);
        for s in r.samples {
            w.u32(s.duration);
            w.u32(s.size);
            w.u32(if s.sync { SYNC } else { NOT_SYNC });
            w.u32(s.composition_offset as u32);
        }
        w.end();
        w.end();
    }
    w.end(); // moof
    let moof_len = w.len() - moof_start;
    let mut data_at = moof_len + 8;
    for (at, r) in offsets.iter().zip(runs) {
        w.patch_u32(*at, data_at as u32);
        data_at += r.data.len();
    }
    w.start(b"mdat");
    for r in runs {
        w.bytes(r.data);
    }
    w.end();
}
