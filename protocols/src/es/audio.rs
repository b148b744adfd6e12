//! Audio frame sync: walks frame headers to count frames and their durations.
//!
//! Formats: ADTS (ISO/IEC 13818-7 §6.2), MPEG-1/2 audio layers I–III (ISO/IEC 11172-3 §2.4.2.3),
//! AC-3 and E-AC-3 (ATSC A/52 §5.3 and Annex E). A header that does not parse makes the scanner
//! slide one byte at a time until one does; the skipped bytes are counted.

/// The audio framings the scanner walks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AudioCodec {
    /// AAC in ADTS frames.
    AacAdts,
    /// MPEG-1/2 audio, layers I–III.
    MpegAudio,
    /// AC-3 or E-AC-3 (told apart by bsid).
    Ac3,
}

/// One audio frame found by the scanner.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AudioFrame {
    /// Frame size in bytes, header included.
    pub bytes: u32,
    /// PCM samples per channel the frame decodes to.
    pub samples: u32,
    /// Sampling rate in Hz.
    pub sample_rate: u32,
}

impl AudioFrame {
    /// The frame's duration in 90 kHz ticks.
    pub fn duration_90khz(&self) -> u64 {
        u64::from(self.samples) * 90_000 / u64::from(self.sample_rate.max(1))
    }
}

/// Header bytes read before a frame's length is known (enough for every supported format).
const HEADER: usize = 7;

/// Incremental audio frame scanner.
#[derive(Clone, Debug)]
pub struct AudioScanner {
    codec: AudioCodec,
    header: [u8; HEADER],
    header_len: usize,
    /// Body bytes of the current frame still to skip.
    skip: usize,
    skipped_bytes: u64,
}

impl AudioScanner {
    /// A scanner for `codec`, looking for its first header.
    pub fn new(codec: AudioCodec) -> Self {
        Self {
            codec,
            header: [0; HEADER],
            header_len: 0,
            skip: 0,
            skipped_bytes: 0,
        }
    }

    /// Forget the current frame and look for the next header.
    pub fn reset(&mut self) {
        self.header_len = 0;
        self.skip = 0;
    }

    /// Bytes skipped while looking for a header.
    pub fn skipped_bytes(&self) -> u64 {
        self.skipped_bytes
    }

    /// Scan `data`; `frame` is called for every frame header found.
    pub fn push(&mut self, mut data: &[u8], mut frame: impl FnMut(AudioFrame)) {
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
                continue;
            }
            let take = (HEADER - self.header_len).min(data.len());
            self.header[self.header_len..self.header_len + take].copy_from_slice(&data[..take]);
            self.header_len += take;
            data = &data[take..];
            while self.header_len == HEADER {
                match parse(self.codec, &self.header) {
                    Some(f) => {
                        frame(f);
                        self.skip = f.bytes as usize - HEADER;
                        self.header_len = 0;
                    }
                    None => {
                        self.header.copy_within(1.., 0);
                        self.header_len -= 1;
                        self.skipped_bytes += 1;
                    }
                }
            }
        }
    }
}

fn parse(codec: AudioCodec, h: &[u8; HEADER]) -> Option<AudioFrame> {
    let f = match codec {
        AudioCodec::AacAdts => adts(h),
        AudioCodec::MpegAudio => mpeg_audio(h),
        AudioCodec::Ac3 => ac3(h),
    }?;
    (f.bytes as usize >= HEADER).then_some(f)
}

const ADTS_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

fn adts(h: &[u8; HEADER]) -> Option<AudioFrame> {
    if h[0] != 0xFF || h[1] & 0xF6 != 0xF0 {
        return None;
    }
    let sample_rate = *ADTS_RATES.get(usize::from(h[2] >> 2 & 0x0F))?;
    let bytes = u32::from(h[3] & 0x03) << 11 | u32::from(h[4]) << 3 | u32::from(h[5] >> 5);
    let header_len = if h[1] & 1 == 1 { 7 } else { 9 };
    if bytes < header_len {
        return None;
    }
    let blocks = u32::from(h[6] & 0x03) + 1;
    Some(AudioFrame {
        bytes,
        samples: 1024 * blocks,
        sample_rate,
    })
}

const MPEG1_KBPS: [[u16; 15]; 3] = [
    [
        0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448,
    ],
    [
        0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384,
    ],
    [
        0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
    ],
];
const MPEG2_KBPS: [[u16; 15]; 2] = [
    [
        0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256,
    ],
    [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
];

fn mpeg_audio(h: &[u8; HEADER]) -> Option<AudioFrame> {
    if h[0] != 0xFF || h[1] & 0xE0 != 0xE0 {
        return None;
    }
    let version = h[1] >> 3 & 0x03; // 0: MPEG-2.5, 2: MPEG-2, 3: MPEG-1
    let layer = 4 - (h[1] >> 1 & 0x03); // 1, 2, 3 (4 means reserved)
    let bitrate_index = usize::from(h[2] >> 4);
    let rate_index = usize::from(h[2] >> 2 & 0x03);
    if version == 1 || layer == 4 || bitrate_index == 0 || bitrate_index == 15 || rate_index == 3 {
        return None;
    }
    let base_rate = [44100, 48000, 32000][rate_index];
    let sample_rate = match version {
        3 => base_rate,
        2 => base_rate / 2,
        _ => base_rate / 4,
    };
    let kbps = if version == 3 {
        MPEG1_KBPS[usize::from(layer - 1)][bitrate_index]
    } else {
        MPEG2_KBPS[usize::from(layer != 1)][bitrate_index]
    };
    let bitrate = u32::from(kbps) * 1000;
    let padding = u32::from(h[2] >> 1 & 1);
    let (bytes, samples) = match layer {
        1 => ((12 * bitrate / sample_rate + padding) * 4, 384),
        2 => (144 * bitrate / sample_rate + padding, 1152),
        _ if version == 3 => (144 * bitrate / sample_rate + padding, 1152),
        _ => (72 * bitrate / sample_rate + padding, 576),
    };
    Some(AudioFrame {
        bytes,
        samples,
        sample_rate,
    })
}

const AC3_KBPS: [u32; 19] = [
    32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 576, 640,
];

fn ac3(h: &[u8; HEADER]) -> Option<AudioFrame> {
    if h[0] != 0x0B || h[1] != 0x77 {
        return None;
    }
    let bsid = h[5] >> 3;
    let fscod = h[4] >> 6;
    match bsid {
        0..=8 => {
            let sample_rate = *[48000u32, 44100, 32000].get(usize::from(fscod))?;
            let code = h[4] & 0x3F;
            let kbps = *AC3_KBPS.get(usize::from(code >> 1))?;
            let mut words = kbps * 1000 * 1536 / (sample_rate * 16);
            if sample_rate == 44100 {
                words += u32::from(code & 1);
            }
            Some(AudioFrame {
                bytes: words * 2,
                samples: 1536,
                sample_rate,
            })
        }
        11..=16 => {
            let frmsiz = u32::from(h[2] & 0x07) << 8 | u32::from(h[3]);
            let (sample_rate, blocks) = if fscod == 3 {
                (
                    *[24000u32, 22050, 16000].get(usize::from(h[4] >> 4 & 0x03))?,
                    6,
                )
            } else {
                (
                    [48000u32, 44100, 32000][usize::from(fscod)],
                    [1, 2, 3, 6][usize::from(h[4] >> 4 & 0x03)],
                )
            };
            Some(AudioFrame {
                bytes: (frmsiz + 1) * 2,
                samples: 256 * blocks,
                sample_rate,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adts_frame(body: usize) -> Vec<u8> {
        let len = 7 + body;
        let mut f = vec![
            0xFF,
            0xF1,
            0x4C, // LC, 48 kHz
            0x40 | (len >> 11) as u8,
            (len >> 3) as u8,
            ((len & 7) << 5) as u8 | 0x1F,
            0xFC,
        ];
        f.resize(len, 0x21);
        f
    }

    fn count(codec: AudioCodec, chunks: &[&[u8]]) -> (usize, u64) {
        let mut s = AudioScanner::new(codec);
        let mut n = 0;
        for c in chunks {
            s.push(c, |f| {
                assert_eq!(f.sample_rate, 48000);
                n += 1
            });
        }
        (n, s.skipped_bytes())
    }

    #[test]
    fn counts_adts_frames_at_every_split() {
        let mut s = vec![0x00, 0xFF, 0x12]; // junk before the first header
        for body in [4, 200, 9, 371] {
            s.extend(adts_frame(body));
        }
        assert_eq!(count(AudioCodec::AacAdts, &[&s]), (4, 3));
        for split in 0..s.len() {
            let (a, b) = s.split_at(split);
            assert_eq!(count(AudioCodec::AacAdts, &[a, b]), (4, 3), "split {split}");
        }
    }

    #[test]
    fn sizes_mpeg_audio_and_ac3_frames() {
        // MPEG-1 layer II, 192 kbit/s, 48 kHz: 576 bytes.
        let f = mpeg_audio(&[0xFF, 0xFD, 0xA4, 0x00, 0, 0, 0]).unwrap();
        assert_eq!((f.bytes, f.samples, f.sample_rate), (576, 1152, 48000));
        // AC-3 448 kbit/s at 48 kHz (frmsizecod 30): 1792 bytes.
        let f = ac3(&[0x0B, 0x77, 0, 0, 0x1E, 0x40, 0]).unwrap();
        assert_eq!((f.bytes, f.samples), (1792, 1536));
        // E-AC-3, frmsiz 767, 6 blocks at 48 kHz.
        let f = ac3(&[0x0B, 0x77, 0x02, 0xFF, 0x30, 0x80, 0]).unwrap();
        assert_eq!((f.bytes, f.samples), (1536, 1536));
    }
}
