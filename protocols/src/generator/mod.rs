//! A synthetic live test stream: valid MPEG-TS with H.264 video and AAC audio at a constant
//! mux rate, carrying a wall-clock stamp in every video frame.
//!
//! ```text
//!  slot n (time n·188·8/bitrate) ─┬─ PAT+PMT every 100 ms
//!                                  ├─ audio: AAC-LC silence, 48 kHz mono, one frame per PES
//!                                  ├─ video: H.264 I_PCM keyframes, P frames with a moving block,
//!                                  │         PCR on the first packet of each frame, stamp in an SEI
//!                                  └─ null packets up to the bitrate
//! ```
//!
//! The video needs no encoder: keyframes code every macroblock as raw samples (I_PCM) and
//! P frames skip all but two macroblocks, so any H.264 decoder shows moving bars. The stamp is an
//! SEI `user_data_unregistered` message with [`STAMP_UUID`] followed by ten bytes that hold
//! UNIX nanoseconds seven bits at a time (top bit set, so no emulation prevention is ever
//! needed); it sits at a fixed offset in the first packet of each frame, so a sender overwrites
//! it with [`write_stamp`] just before the packet leaves, and a viewer finds it with
//! [`read_stamp`].
//!
//! What it does not do: pace itself. Time is the packet index: [`Generator::packet_time_ns`]
//! says when packet `n` is due, and the caller sends it then.

mod h264;

use crate::ts::pes::{Timestamp, CLOCK_90KHZ};
use crate::ts::psi::{packetize_section, Pat, PatEntry, Pmt, PmtStream};
use crate::ts::{
    set_continuity_counter, Codec, ContinuityCounter, Pcr, Pid, StreamType, PACKET_SIZE,
};
use h264::{flat, Geometry, MacroblockSamples};
use std::collections::VecDeque;

/// The 16 bytes that mark a wall-clock stamp in an SEI message.
pub const STAMP_UUID: [u8; 16] = *b"shardcast/stamp1";
/// Bytes of an encoded stamp after the UUID.
pub const STAMP_LEN: usize = 10;

/// What to generate.
#[derive(Clone, Copy, Debug)]
pub struct GeneratorConfig {
    /// Total mux rate in bits per second, null packets included.
    pub bitrate: u32,
    /// Picture width in pixels (even).
    pub width: u16,
    /// Picture height in pixels (even).
    pub height: u16,
    /// Frames per second.
    pub fps: u32,
    /// Frames from one keyframe to the next.
    pub keyframe_interval: u32,
    /// Include the AAC audio stream.
    pub audio: bool,
    /// program_number of the single program.
    pub program_number: u16,
    /// PID of the PMT.
    pub pmt_pid: u16,
    /// PID of the video (also the PCR PID).
    pub video_pid: u16,
    /// PID of the audio.
    pub audio_pid: u16,
    /// PCR base of the first packet, 90 kHz (PTS start a little later); timestamps wrap at
    /// 2^33 like any source's.
    pub start_pts: u64,
    /// Macroblock columns each P frame codes whole (I_PCM), sweeping across the picture as
    /// periodic intra refresh does: with a long keyframe interval, a stream whose pictures
    /// all get refreshed though it has no keyframe (0: only the moving block is coded).
    pub refresh_columns: u16,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            bitrate: 2_000_000,
            width: 256,
            height: 144,
            fps: 25,
            keyframe_interval: 25,
            audio: true,
            program_number: 1,
            pmt_pid: 0x1000,
            video_pid: 0x100,
            audio_pid: 0x101,
            start_pts: CLOCK_90KHZ,
            refresh_columns: 0,
        }
    }
}

/// Why a configuration cannot be generated.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GeneratorError {
    /// The content needs more than 90% of the mux rate.
    #[error(
        "bitrate {configured} bit/s is too low: this picture size and cadence need {needed} bit/s"
    )]
    BitrateTooLow {
        /// The configured rate.
        configured: u32,
        /// The rate needed.
        needed: u32,
    },
    /// A size, rate or PID is out of range.
    #[error("invalid generator setting: {0}")]
    Invalid(&'static str),
}

const AAC_SAMPLE_RATE: u64 = 48_000;
const AAC_FRAME_SAMPLES: u64 = 1024;
const PSI_INTERVAL_27MHZ: u64 = 2_700_000;

#[derive(Debug)]
struct QueuedPes {
    pid: Pid,
    data: Vec<u8>,
    sent: usize,
    pcr: bool,
    keyframe: bool,
    stamp_at: Option<usize>,
}

/// The generator (see the module docs).
#[derive(Debug)]
pub struct Generator {
    config: GeneratorConfig,
    geometry: Geometry,
    sps: Vec<u8>,
    pps: Vec<u8>,
    psi: Vec<[u8; PACKET_SIZE]>,
    psi_queue: VecDeque<[u8; PACKET_SIZE]>,
    pat_cc: ContinuityCounter,
    pmt_cc: ContinuityCounter,
    video_cc: ContinuityCounter,
    audio_cc: ContinuityCounter,
    video: VecDeque<QueuedPes>,
    audio: VecDeque<QueuedPes>,
    packet: u64,
    next_frame: u64,
    next_audio: u64,
    next_psi_27mhz: u64,
    delay_90khz: u64,
}

impl Generator {
    /// Check `config` and prepare the parameter sets and tables.
    pub fn new(config: GeneratorConfig) -> Result<Self, GeneratorError> {
        if config.width < 16
            || config.height < 16
            || config.width % 2 != 0
            || config.height % 2 != 0
            || config.width > 4096
            || config.height > 2304
        {
            return Err(GeneratorError::Invalid(
                "width and height must be even, 16 to 4096x2304",
            ));
        }
        if !(1..=120).contains(&config.fps) || config.keyframe_interval == 0 {
            return Err(GeneratorError::Invalid(
                "fps must be 1 to 120 and keyframe_interval at least 1",
            ));
        }
        let pids = [config.pmt_pid, config.video_pid, config.audio_pid];
        if pids.iter().any(|p| !(0x10..0x1FFF).contains(p))
            || pids[0] == pids[1]
            || pids[1] == pids[2]
            || pids[0] == pids[2]
        {
            return Err(GeneratorError::Invalid(
                "PIDs must be distinct, 0x0010 to 0x1FFE",
            ));
        }
        let geometry = Geometry::new(config.width, config.height);
        let mut g = Self {
            config,
            geometry,
            sps: h264::sps(&geometry, config.fps),
            pps: h264::pps(),
            psi: Vec::new(),
            psi_queue: VecDeque::new(),
            pat_cc: ContinuityCounter::from_bits(0),
            pmt_cc: ContinuityCounter::from_bits(0),
            video_cc: ContinuityCounter::from_bits(0),
            audio_cc: ContinuityCounter::from_bits(0),
            video: VecDeque::new(),
            audio: VecDeque::new(),
            packet: 0,
            next_frame: 0,
            next_audio: 0,
            next_psi_27mhz: 0,
            delay_90khz: 0,
        };
        let idr_bytes = (g.frame(0).len() + 64) as u64;
        let p_bytes = (g.frame(1).len() + 64) as u64;
        let kf = u64::from(config.keyframe_interval);
        let fps = u64::from(config.fps);
        let video_bytes_per_s = (idr_bytes + (kf - 1) * p_bytes) * fps / kf * 188 / 176;
        let audio_bytes_per_s = if config.audio { 47 * 188 } else { 0 };
        let psi_bytes_per_s = 10 * 2 * 188;
        let needed = (video_bytes_per_s + audio_bytes_per_s + psi_bytes_per_s) * 8 * 10 / 9;
        if needed > u64::from(config.bitrate) {
            return Err(GeneratorError::BitrateTooLow {
                configured: config.bitrate,
                needed: u32::try_from(needed).unwrap_or(u32::MAX),
            });
        }
        // Decoding waits long enough for a whole keyframe to arrive (T-STD).
        let idr_send_90khz = idr_bytes * 8 * 188 / 176 * CLOCK_90KHZ / u64::from(config.bitrate);
        g.delay_90khz = (idr_send_90khz * 3 / 2).max(CLOCK_90KHZ * 3 / 10);
        g.psi = g.tables();
        Ok(g)
    }

    /// The configuration.
    pub fn config(&self) -> &GeneratorConfig {
        &self.config
    }

    /// When packet `index` is due, in nanoseconds after packet 0.
    pub fn packet_time_ns(&self, index: u64) -> u64 {
        (u128::from(index) * 188 * 8 * 1_000_000_000 / u128::from(self.config.bitrate)) as u64
    }

    /// Packets produced so far.
    pub fn packets(&self) -> u64 {
        self.packet
    }

    /// Write the next packet into `out`. Returns the offset of the wall-clock stamp in it, if
    /// the packet carries one (it already holds the stream time of its frame; overwrite it with
    /// [`write_stamp`] when the packet is sent).
    pub fn next_packet(&mut self, out: &mut [u8; PACKET_SIZE]) -> Option<usize> {
        let now_27mhz = self.slot_27mhz(self.packet);
        self.packet += 1;
        if now_27mhz >= self.next_psi_27mhz {
            self.next_psi_27mhz += PSI_INTERVAL_27MHZ;
            self.psi_queue.extend(self.psi.iter().copied());
        }
        while self.next_frame * 27_000_000 / u64::from(self.config.fps) <= now_27mhz {
            let pes = self.video_pes(self.next_frame);
            self.video.push_back(pes);
            self.next_frame += 1;
        }
        while self.config.audio
            && self.next_audio * AAC_FRAME_SAMPLES * 27_000_000 / AAC_SAMPLE_RATE <= now_27mhz
        {
            let pes = self.audio_pes(self.next_audio);
            self.audio.push_back(pes);
            self.next_audio += 1;
        }
        if let Some(mut p) = self.psi_queue.pop_front() {
            let cc = if p[2] == 0 && p[1] & 0x1F == 0 {
                &mut self.pat_cc
            } else {
                &mut self.pmt_cc
            };
            set_continuity_counter(&mut p, *cc);
            *cc = cc.next();
            *out = p;
            return None;
        }
        let pcr = Pcr::from_27mhz(self.config.start_pts * 300 + now_27mhz);
        if let Some(stamp) = Self::packetize(&mut self.audio, &mut self.audio_cc, pcr, out) {
            return stamp;
        }
        if let Some(stamp) = Self::packetize(&mut self.video, &mut self.video_cc, pcr, out) {
            return stamp;
        }
        *out = [0xFF; PACKET_SIZE];
        out[..4].copy_from_slice(&[0x47, 0x1F, 0xFF, 0x10]);
        None
    }

    fn slot_27mhz(&self, index: u64) -> u64 {
        (u128::from(index) * 188 * 8 * 27_000_000 / u128::from(self.config.bitrate)) as u64
    }

    /// Fill `out` from the head of `queue`; `None` when the queue is empty.
    fn packetize(
        queue: &mut VecDeque<QueuedPes>,
        cc: &mut ContinuityCounter,
        pcr: Pcr,
        out: &mut [u8; PACKET_SIZE],
    ) -> Option<Option<usize>> {
        let pes = queue.front_mut()?;
        let first = pes.sent == 0;
        // The adaptation field body (after its length byte), if the packet needs one.
        let mut adaptation: Option<Vec<u8>> = None;
        if first && pes.pcr {
            let mut body = vec![0x10 | if pes.keyframe { 0x40 } else { 0 }];
            body.extend_from_slice(&pcr.to_bytes());
            adaptation = Some(body);
        }
        let left = pes.data.len() - pes.sent;
        let room = 184 - adaptation.as_ref().map_or(0, |b| 1 + b.len());
        if left < room {
            let spare = room - left;
            match adaptation.as_mut() {
                Some(body) => body.extend(std::iter::repeat_n(0xFF, spare)),
                None if spare == 1 => adaptation = Some(Vec::new()),
                None => {
                    let mut body = vec![0x00];
                    body.extend(std::iter::repeat_n(0xFF, spare - 2));
                    adaptation = Some(body);
                }
            }
        }
        let pid = pes.pid.value();
        out[0] = 0x47;
        out[1] = u8::from(first) << 6 | (pid >> 8) as u8;
        out[2] = pid as u8;
        out[3] = if adaptation.is_some() { 0x30 } else { 0x10 } | cc.value();
        *cc = cc.next();
        let mut at = 4;
        if let Some(body) = &adaptation {
            out[4] = body.len() as u8;
            out[5..5 + body.len()].copy_from_slice(body);
            at = 5 + body.len();
        }
        let n = PACKET_SIZE - at;
        out[at..].copy_from_slice(&pes.data[pes.sent..pes.sent + n]);
        let stamp = pes
            .stamp_at
            .filter(|s| first && s + STAMP_LEN <= n)
            .map(|s| at + s);
        pes.sent += n;
        if pes.sent == pes.data.len() {
            queue.pop_front();
        }
        Some(stamp)
    }

    fn tables(&self) -> Vec<[u8; PACKET_SIZE]> {
        let c = &self.config;
        let pat = Pat {
            transport_stream_id: 1,
            version: 0,
            programs: vec![PatEntry {
                program_number: c.program_number,
                pmt_pid: Pid::from_bits(c.pmt_pid),
            }],
            network_pid: None,
        };
        let mut streams = vec![PmtStream {
            stream_type: StreamType::H264,
            pid: Pid::from_bits(c.video_pid),
            descriptors: vec![],
            codec: Codec::H264,
        }];
        if c.audio {
            streams.push(PmtStream {
                stream_type: StreamType::AAC_ADTS,
                pid: Pid::from_bits(c.audio_pid),
                descriptors: vec![],
                codec: Codec::AacAdts,
            });
        }
        let pmt = Pmt {
            program_number: c.program_number,
            version: 0,
            pcr_pid: Pid::from_bits(c.video_pid),
            descriptors: vec![],
            streams,
        };
        let mut packets = Vec::new();
        packetize_section(
            &pat.to_section(),
            Pid::PAT,
            ContinuityCounter::from_bits(0),
            &mut packets,
        );
        packetize_section(
            &pmt.to_section(),
            Pid::from_bits(c.pmt_pid),
            ContinuityCounter::from_bits(0),
            &mut packets,
        );
        packets
    }

    /// The access unit of frame `n`: AUD, stamp SEI, then parameter sets and an IDR picture or
    /// a P picture.
    fn frame(&self, n: u64) -> Vec<u8> {
        let g = &self.geometry;
        let in_gop = n % u64::from(self.config.keyframe_interval);
        let gop = (n / u64::from(self.config.keyframe_interval)) as u32;
        let key = in_gop == 0;
        let mut au = Vec::with_capacity(if key {
            400 * g.macroblocks() as usize
        } else {
            1024
        });
        au.extend_from_slice(&[0, 0, 0, 1, 0x09, if key { 0x10 } else { 0x30 }]);
        au.extend_from_slice(&[0, 0, 0, 1, 0x06, 0x05, (16 + STAMP_LEN) as u8]);
        au.extend_from_slice(&STAMP_UUID);
        au.extend_from_slice(&encode_stamp(0));
        au.push(0x80);
        if key {
            au.extend_from_slice(&self.sps);
            au.extend_from_slice(&self.pps);
            au.extend(h264::idr_slice(g, gop, |x, y| background(x, y, gop)));
        } else {
            let row = g.mbs_high / 2;
            let moving = |i: u64| (i % u64::from(g.mbs_wide)) as u32;
            let (now, before) = (moving(in_gop), moving(in_gop - 1));
            let mut coded = vec![(row * g.mbs_wide + now, flat(235, 128, 128))];
            if before != now {
                coded.push((row * g.mbs_wide + before, background(before, row, gop)));
            }
            let columns = u64::from(self.config.refresh_columns).min(u64::from(g.mbs_wide));
            for c in 0..columns {
                let x = (((in_gop - 1) * columns + c) % u64::from(g.mbs_wide)) as u32;
                for y in (0..g.mbs_high).filter(|y| !(*y == row && (x == now || x == before))) {
                    coded.push((y * g.mbs_wide + x, background(x, y, gop)));
                }
            }
            coded.sort_by_key(|c| c.0);
            coded.dedup_by_key(|c| c.0);
            au.extend(h264::p_slice(g, in_gop as u32, &coded));
        }
        au
    }

    fn video_pes(&self, n: u64) -> QueuedPes {
        let es = self.frame(n);
        let pts = Timestamp::new(
            self.config.start_pts + self.delay_90khz + n * CLOCK_90KHZ / u64::from(self.config.fps),
        );
        let mut data = pes_header(0xE0, pts, es.len());
        let stamp_at = data.len() + 6 + 7 + 16;
        data.extend_from_slice(&es);
        let stream_ns = n * 1_000_000_000 / u64::from(self.config.fps);
        data[stamp_at..stamp_at + STAMP_LEN].copy_from_slice(&encode_stamp(stream_ns));
        QueuedPes {
            pid: Pid::from_bits(self.config.video_pid),
            data,
            sent: 0,
            pcr: true,
            keyframe: n % u64::from(self.config.keyframe_interval) == 0,
            stamp_at: Some(stamp_at),
        }
    }

    fn audio_pes(&self, n: u64) -> QueuedPes {
        let pts = Timestamp::new(
            self.config.start_pts
                + self.delay_90khz
                + n * AAC_FRAME_SAMPLES * CLOCK_90KHZ / AAC_SAMPLE_RATE,
        );
        let frame = silent_adts_frame();
        let mut data = pes_header(0xC0, pts, frame.len());
        data.extend_from_slice(&frame);
        QueuedPes {
            pid: Pid::from_bits(self.config.audio_pid),
            data,
            sent: 0,
            pcr: false,
            keyframe: false,
            stamp_at: None,
        }
    }
}

/// The picture behind the moving block: bars that shift with every keyframe.
fn background(mb_x: u32, mb_y: u32, gop: u32) -> MacroblockSamples {
    let bar = (mb_x + gop) % 8;
    let y = 40 + (bar * 25) as u8;
    let cb = if bar % 2 == 0 { 90 } else { 170 };
    let cr = if (bar / 2) % 2 == 0 { 100 } else { 160 };
    let shade = (mb_y % 2) as u8 * 8;
    flat(y + shade, cb, cr)
}

fn pes_header(stream_id: u8, pts: Timestamp, payload: usize) -> Vec<u8> {
    let length = 3 + 5 + payload;
    let length = if length > 0xFFFF { 0 } else { length as u16 };
    let mut h = vec![0, 0, 1, stream_id];
    h.extend_from_slice(&length.to_be_bytes());
    h.extend_from_slice(&[0x84, 0x80, 5]);
    h.extend_from_slice(&pts.to_bytes(0b0010));
    h
}

/// One ADTS frame of AAC-LC silence, 48 kHz mono: a single channel element with no scale
/// factor bands (ISO/IEC 14496-3 §4.4.2), then the END element.
fn silent_adts_frame() -> Vec<u8> {
    let mut w = h264::BitWriter::default();
    w.put(0, 3); // id_syn_ele: SCE
    w.put(0, 4); // element_instance_tag
    w.put(100, 8); // global_gain
    w.put(0, 1); // ics_reserved_bit
    w.put(0, 2); // window_sequence: ONLY_LONG_SEQUENCE
    w.put(0, 1); // window_shape
    w.put(0, 6); // max_sfb: nothing coded
    w.put(0, 1); // predictor_data_present
    w.put(0, 3); // pulse, tns, gain control: absent
    w.put(7, 3); // id_syn_ele: END
    w.align_zero();
    let raw = w.finish_aligned();
    let len = 7 + raw.len();
    let mut f = vec![
        0xFF,
        0xF1,                     // MPEG-4, layer 0, no CRC
        0x4C,                     // AAC LC, 48 kHz, channel configuration high bit 0
        0x40 | (len >> 11) as u8, // channel configuration 1
        (len >> 3) as u8,
        ((len & 7) << 5) as u8 | 0x1F,
        0xFC,
    ];
    f.extend_from_slice(&raw);
    f
}

/// The ten stamp bytes for `unix_ns`: seven bits each, most significant first, top bit set.
pub fn encode_stamp(unix_ns: u64) -> [u8; STAMP_LEN] {
    let mut out = [0u8; STAMP_LEN];
    for (i, b) in out.iter_mut().enumerate() {
        let shift = 7 * (STAMP_LEN - 1 - i);
        *b = 0x80 | (u128::from(unix_ns) >> shift) as u8 & 0x7F;
    }
    out
}

/// Overwrite the stamp at `offset` (as returned by [`Generator::next_packet`]).
pub fn write_stamp(packet: &mut [u8; PACKET_SIZE], offset: usize, unix_ns: u64) {
    if let Some(slot) = packet.get_mut(offset..offset + STAMP_LEN) {
        slot.copy_from_slice(&encode_stamp(unix_ns));
    }
}

/// Find a stamp in a packet (anywhere after [`STAMP_UUID`]) and decode it.
pub fn read_stamp(packet: &[u8]) -> Option<u64> {
    let at = memchr::memmem::find(packet, &STAMP_UUID)? + STAMP_UUID.len();
    let bytes = packet.get(at..at + STAMP_LEN)?;
    bytes.iter().try_fold(0u64, |acc, &b| {
        (b & 0x80 != 0).then(|| acc << 7 | u64::from(b & 0x7F))
    })
}

#[cfg(test)]
mod tests;
