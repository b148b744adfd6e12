//! Annex B NAL unit scanning and picture boundaries for H.264 and H.265.

/// The video codecs whose pictures the scanner understands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum VideoCodec {
    /// ITU-T H.264.
    H264,
    /// ITU-T H.265.
    H265,
}

/// Bytes kept from the start of each NAL unit: the H.265 header (2) and one byte after it.
const NAL_HEAD: usize = 3;

/// Finds start codes (0x000001) in a byte stream split at arbitrary points and hands out the
/// first [`NAL_HEAD`] bytes of each NAL unit.
#[derive(Clone, Debug, Default)]
pub struct NalScanner {
    /// The last two bytes seen, for start codes split across chunks.
    history: [u8; 2],
    /// Head bytes of a NAL unit still being collected.
    head: [u8; NAL_HEAD],
    head_len: u8,
    collecting: bool,
}

impl NalScanner {
    /// A scanner that has seen nothing.
    pub fn new() -> Self {
        Self {
            history: [0xFF; 2],
            ..Self::default()
        }
    }

    /// Forget partial state (after lost data).
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// Scan `data`; `nal` gets the first bytes of every NAL unit whose head is complete.
    pub fn push(&mut self, data: &[u8], mut nal: impl FnMut(&[u8; NAL_HEAD])) {
        let mut from = 0;
        if self.collecting {
            from = self.collect(data, 0, &mut nal);
        }
        let mut search = from;
        while let Some(found) = memchr::memchr(1, &data[search..]) {
            let at = search + found;
            search = at + 1;
            let (b2, b1) = match at {
                0 => (self.history[0], self.history[1]),
                1 => (self.history[1], data[0]),
                _ => (data[at - 2], data[at - 1]),
            };
            if b1 == 0 && b2 == 0 {
                self.collecting = true;
                self.head_len = 0;
                search = self.collect(data, at + 1, &mut nal).max(search);
            }
        }
        match data {
            [.., a, b] => self.history = [*a, *b],
            [b] => self.history = [self.history[1], *b],
            [] => {}
        }
    }

    fn collect(&mut self, data: &[u8], at: usize, nal: &mut impl FnMut(&[u8; NAL_HEAD])) -> usize {
        let want = NAL_HEAD - usize::from(self.head_len);
        let take = want.min(data.len().saturating_sub(at));
        let start = usize::from(self.head_len);
        self.head[start..start + take].copy_from_slice(&data[at..at + take]);
        self.head_len += take as u8;
        if usize::from(self.head_len) == NAL_HEAD {
            self.collecting = false;
            nal(&self.head);
        }
        at + take
    }
}

/// A picture whose first slice was found.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Picture {
    /// An IDR (H.264) or IRAP (H.265) picture: decoding can start here.
    pub keyframe: bool,
}

/// Counts pictures and finds keyframes in an H.264 or H.265 elementary stream.
#[derive(Clone, Debug)]
pub struct VideoScanner {
    codec: VideoCodec,
    nal: NalScanner,
}

impl VideoScanner {
    /// A scanner for `codec`.
    pub fn new(codec: VideoCodec) -> Self {
        Self {
            codec,
            nal: NalScanner::new(),
        }
    }

    /// Forget partial state (after lost data).
    pub fn reset(&mut self) {
        self.nal.reset();
    }

    /// Scan `data`; `picture` is called at the first slice of every picture.
    pub fn push(&mut self, data: &[u8], mut picture: impl FnMut(Picture)) {
        let codec = self.codec;
        self.nal.push(data, |head| {
            if let Some(p) = picture_start(codec, head) {
                picture(p);
            }
        });
    }
}

/// Whether a NAL unit starting with `head` begins a new picture, and whether it is a keyframe.
fn picture_start(codec: VideoCodec, head: &[u8; NAL_HEAD]) -> Option<Picture> {
    match codec {
        VideoCodec::H264 => {
            if head[0] & 0x80 != 0 {
                return None; // forbidden_zero_bit
            }
            let nal_type = head[0] & 0x1F;
            // Coded slices (1) and IDR slices (5); first_mb_in_slice == 0 is ue(v) '1'.
            let first_slice = head[1] & 0x80 != 0;
            (matches!(nal_type, 1 | 5) && first_slice).then_some(Picture {
                keyframe: nal_type == 5,
            })
        }
        VideoCodec::H265 => {
            if head[0] & 0x80 != 0 {
                return None;
            }
            let nal_type = (head[0] >> 1) & 0x3F;
            let layer = (head[0] & 1) << 5 | head[1] >> 3;
            // VCL NAL units are types 0..=31; IRAP pictures are 16..=23 (BLA, IDR, CRA).
            let first_slice = head[2] & 0x80 != 0;
            (nal_type <= 31 && layer == 0 && first_slice).then_some(Picture {
                keyframe: (16..=23).contains(&nal_type),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h264_stream() -> Vec<u8> {
        let mut s = Vec::new();
        s.extend_from_slice(&[0, 0, 0, 1, 0x09, 0xF0]); // AUD
        s.extend_from_slice(&[0, 0, 0, 1, 0x67, 0x42, 0, 0x1E]); // SPS
        s.extend_from_slice(&[0, 0, 1, 0x65, 0x88, 0x84, 0, 0, 3, 1]); // IDR, first slice
        s.extend_from_slice(&[0, 0, 1, 0x65, 0x40, 0x84]); // IDR, second slice
        s.extend_from_slice(&[0, 0, 1, 0x41, 0x9A, 0x02]); // P, first slice
        s.extend_from_slice(&[0, 0, 1, 0x01, 0x9E, 0x02, 0]); // non-ref P
        s
    }

    fn scan(codec: VideoCodec, chunks: &[&[u8]]) -> Vec<bool> {
        let mut v = VideoScanner::new(codec);
        let mut pics = Vec::new();
        for c in chunks {
            v.push(c, |p| pics.push(p.keyframe));
        }
        pics
    }

    #[test]
    fn finds_h264_pictures_at_every_split() {
        let s = h264_stream();
        assert_eq!(scan(VideoCodec::H264, &[&s]), vec![true, false, false]);
        for split in 0..s.len() {
            let (a, b) = s.split_at(split);
            assert_eq!(
                scan(VideoCodec::H264, &[a, b]),
                vec![true, false, false],
                "split {split}"
            );
        }
        let bytes: Vec<&[u8]> = s.chunks(1).collect();
        assert_eq!(scan(VideoCodec::H264, &bytes), vec![true, false, false]);
    }

    #[test]
    fn finds_h265_irap_pictures() {
        let mut s = Vec::new();
        s.extend_from_slice(&[0, 0, 0, 1, 0x40, 0x01, 0x0C]); // VPS
        s.extend_from_slice(&[0, 0, 1, 0x2A, 0x01, 0xAF]); // CRA (21), first slice
        s.extend_from_slice(&[0, 0, 1, 0x02, 0x01, 0xD0]); // TRAIL_R (1), first slice
        s.extend_from_slice(&[0, 0, 1, 0x02, 0x01, 0x50]); // TRAIL_R, later slice segment
        s.extend_from_slice(&[0, 0, 1, 0x26, 0x01, 0x80]); // IDR_W_RADL (19)
        assert_eq!(scan(VideoCodec::H265, &[&s]), vec![true, false, true]);
    }
}
