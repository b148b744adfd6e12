//! PES packet headers and 33-bit timestamps (ISO/IEC 13818-1 §2.4.3.6–§2.4.3.7).
//!
//! [`PesHeaderReader`] collects a PES header that may be split over several transport packets
//! and parses it into a [`PesHeader`]; the payload after it is handed back untouched, so the
//! elementary stream can be scanned without reassembling the whole PES.

/// Ticks per second of PTS, DTS and the PCR base.
pub const CLOCK_90KHZ: u64 = 90_000;
const WRAP: u64 = 1 << 33;

/// A 33-bit presentation or decoding timestamp at 90 kHz.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The timestamp made of the low 33 bits of `ticks`.
    pub const fn new(ticks: u64) -> Self {
        Self(ticks & (WRAP - 1))
    }

    /// The 33-bit tick count.
    pub const fn ticks(self) -> u64 {
        self.0
    }

    /// `self - earlier` in ticks, taking the shorter way round the 33-bit circle: a result in
    /// [-2^32, 2^32). Correct across the wrap at 2^33 (about 26.5 hours).
    pub const fn since(self, earlier: Timestamp) -> i64 {
        let d = self.0.wrapping_sub(earlier.0) & (WRAP - 1);
        if d >= WRAP / 2 {
            d as i64 - WRAP as i64
        } else {
            d as i64
        }
    }

    /// This timestamp advanced by `ticks` (wrapping).
    pub const fn add(self, ticks: u64) -> Self {
        Self::new(self.0.wrapping_add(ticks))
    }

    fn read(b: &[u8; 5]) -> Self {
        Self(
            u64::from(b[0] >> 1 & 0x07) << 30
                | u64::from(b[1]) << 22
                | u64::from(b[2] >> 1) << 15
                | u64::from(b[3]) << 7
                | u64::from(b[4] >> 1),
        )
    }

    /// The five bytes of a PTS or DTS field, with `prefix` as the top four bits
    /// (0b0010 for a lone PTS, 0b0011 / 0b0001 for PTS and DTS together).
    pub fn to_bytes(self, prefix: u8) -> [u8; 5] {
        let t = self.0;
        [
            prefix << 4 | ((t >> 29) as u8 & 0x0E) | 1,
            (t >> 22) as u8,
            ((t >> 14) as u8 & 0xFE) | 1,
            (t >> 7) as u8,
            ((t << 1) as u8 & 0xFE) | 1,
        ]
    }
}

/// Extends 33-bit timestamps into a monotonic 64-bit count across wraps.
#[derive(Clone, Copy, Debug, Default)]
pub struct Unwrapper {
    last: Option<(Timestamp, i64)>,
}

impl Unwrapper {
    /// The extended value of `ts`, placed nearest the previous one.
    pub fn extend(&mut self, ts: Timestamp) -> i64 {
        let value = match self.last {
            None => ts.ticks() as i64,
            Some((prev, prev_value)) => prev_value + ts.since(prev),
        };
        self.last = Some((ts, value));
        value
    }
}

/// Why a PES header was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PesError {
    /// The payload does not start with 0x000001.
    #[error("no PES start code")]
    StartCode,
    /// The optional header does not begin with the bits '10'.
    #[error("PES optional header marker bits are wrong")]
    Marker,
    /// PTS_DTS_flags is the forbidden value '01'.
    #[error("PTS_DTS_flags is the forbidden value 01")]
    TimestampFlags,
    /// PES_header_data_length is too short for the fields its flags announce.
    #[error("PES_header_data_length {length} is too short for its fields")]
    HeaderLength {
        /// The length read.
        length: u8,
    },
}

/// The parsed fixed part of a PES header.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PesHeader {
    /// stream_id.
    pub stream_id: u8,
    /// PES_packet_length (0: unbounded, allowed for video).
    pub packet_length: u16,
    /// Presentation timestamp.
    pub pts: Option<Timestamp>,
    /// Decoding timestamp (absent means equal to the PTS).
    pub dts: Option<Timestamp>,
    /// data_alignment_indicator.
    pub data_alignment: bool,
    /// Bytes of header, start code included: the payload starts here.
    pub header_len: usize,
}

/// stream_ids whose PES packets have no optional header (§2.4.3.7, table 2-22).
fn has_optional_header(stream_id: u8) -> bool {
    !matches!(
        stream_id,
        0xBC | 0xBE | 0xBF | 0xF0 | 0xF1 | 0xF2 | 0xF8 | 0xFF
    )
}

impl PesHeader {
    /// Parse a complete header from the start of `data`; `Ok(None)` means more bytes are needed.
    pub fn parse(data: &[u8]) -> Result<Option<PesHeader>, PesError> {
        let [a, b, c, rest @ ..] = data else {
            return prefix_ok(data).map(|()| None);
        };
        if [*a, *b, *c] != [0, 0, 1] {
            return Err(PesError::StartCode);
        }
        let [stream_id, len_hi, len_lo, opt @ ..] = rest else {
            return Ok(None);
        };
        let packet_length = u16::from(*len_hi) << 8 | u16::from(*len_lo);
        let mut header = PesHeader {
            stream_id: *stream_id,
            packet_length,
            pts: None,
            dts: None,
            data_alignment: false,
            header_len: 6,
        };
        if !has_optional_header(*stream_id) {
            return Ok(Some(header));
        }
        let [flags1, flags2, hdr_len, fields @ ..] = opt else {
            return Ok(None);
        };
        if flags1 & 0xC0 != 0x80 {
            return Err(PesError::Marker);
        }
        header.data_alignment = flags1 & 0x04 != 0;
        header.header_len = 9 + usize::from(*hdr_len);
        let Some(fields) = fields.get(..usize::from(*hdr_len)) else {
            return Ok(None);
        };
        let needed = match flags2 >> 6 {
            0b00 => 0,
            0b10 => 5,
            0b11 => 10,
            _ => return Err(PesError::TimestampFlags),
        };
        if fields.len() < needed {
            return Err(PesError::HeaderLength { length: *hdr_len });
        }
        if let Some(pts) = fields.get(..5).filter(|_| needed >= 5) {
            header.pts = pts.try_into().ok().map(Timestamp::read);
        }
        if let Some(dts) = fields.get(5..10).filter(|_| needed == 10) {
            header.dts = dts.try_into().ok().map(Timestamp::read);
        }
        Ok(Some(header))
    }
}

fn prefix_ok(data: &[u8]) -> Result<(), PesError> {
    if data.iter().zip([0u8, 0, 1]).all(|(a, b)| *a == b) {
        Ok(())
    } else {
        Err(PesError::StartCode)
    }
}

/// Longest PES header: 9 fixed bytes and 255 bytes of optional fields.
const MAX_HEADER: usize = 9 + 255;

/// Collects a PES header across packets.
#[derive(Debug)]
pub struct PesHeaderReader {
    buf: Vec<u8>,
}

impl Default for PesHeaderReader {
    fn default() -> Self {
        Self::new()
    }
}

impl PesHeaderReader {
    /// A reader with nothing collected.
    pub fn new() -> Self {
        Self {
            buf: Vec::with_capacity(MAX_HEADER),
        }
    }

    /// Start a new header (a packet with payload_unit_start arrived).
    pub fn start(&mut self) {
        self.buf.clear();
    }

    /// Add payload bytes. When the header is complete, returns it with the payload bytes of
    /// `data` that follow it; `Ok(None)` means more packets are needed.
    pub fn push<'d>(&mut self, data: &'d [u8]) -> Result<Option<(PesHeader, &'d [u8])>, PesError> {
        if self.buf.is_empty() {
            // Fast path: the whole header is in this packet.
            if let Some(h) = PesHeader::parse(data)? {
                return Ok(Some((h, data.get(h.header_len..).unwrap_or(&[]))));
            }
        }
        let before = self.buf.len();
        let take = (MAX_HEADER - before).min(data.len());
        self.buf.extend_from_slice(&data[..take]);
        match PesHeader::parse(&self.buf)? {
            Some(h) => {
                let used = h.header_len - before;
                self.buf.clear();
                Ok(Some((h, data.get(used..).unwrap_or(&[]))))
            }
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_wrap() {
        let late = Timestamp::new(WRAP - 100);
        let early = Timestamp::new(50);
        assert_eq!(early.since(late), 150);
        assert_eq!(late.since(early), -150);
        assert_eq!(late.add(200), Timestamp::new(100));
        let mut u = Unwrapper::default();
        assert_eq!(u.extend(late), (WRAP - 100) as i64);
        assert_eq!(u.extend(early), (WRAP + 50) as i64);
        assert_eq!(u.extend(Timestamp::new(WRAP - 10)), (WRAP - 10) as i64);
    }

    fn header(pts: u64, dts: Option<u64>) -> Vec<u8> {
        let mut h = vec![0, 0, 1, 0xE0, 0, 0, 0x84];
        match dts {
            None => {
                h.extend_from_slice(&[0x80, 5]);
                h.extend_from_slice(&Timestamp::new(pts).to_bytes(0b0010));
            }
            Some(dts) => {
                h.extend_from_slice(&[0xC0, 10]);
                h.extend_from_slice(&Timestamp::new(pts).to_bytes(0b0011));
                h.extend_from_slice(&Timestamp::new(dts).to_bytes(0b0001));
            }
        }
        h.extend_from_slice(b"payload");
        h
    }

    #[test]
    fn parses_pts_and_dts_at_every_split() {
        let pts = WRAP - 1;
        let data = header(pts, Some(12345));
        for split in 0..data.len() {
            let mut r = PesHeaderReader::new();
            r.start();
            let (a, b) = data.split_at(split);
            let (h, rest) = match r.push(a).unwrap() {
                Some(done) => done,
                None => r.push(b).unwrap().unwrap(),
            };
            assert_eq!(h.pts, Some(Timestamp::new(pts)), "split {split}");
            assert_eq!(h.dts, Some(Timestamp::new(12345)));
            assert!(h.data_alignment);
            let mut payload = rest.to_vec();
            if split >= h.header_len && split < data.len() {
                payload.extend_from_slice(b);
            }
            assert_eq!(payload, b"payload", "split {split}");
        }
    }

    #[test]
    fn refuses_bad_headers() {
        assert_eq!(PesHeader::parse(&[0, 1]), Err(PesError::StartCode));
        let mut h = header(1, None);
        h[7] = 0x40;
        assert_eq!(PesHeader::parse(&h), Err(PesError::TimestampFlags));
        let mut h = header(1, None);
        h[8] = 2;
        assert_eq!(
            PesHeader::parse(&h),
            Err(PesError::HeaderLength { length: 2 })
        );
    }
}
