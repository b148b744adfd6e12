//! Whole PES packets of one elementary stream, put back together from its transport packets'
//! payloads: what a remux into another container (fMP4) needs, where the demuxer only reads
//! headers and scans.
//!
//! A PES ends where the next one starts (payload_unit_start_indicator), or at
//! [`PesAssembler::flush`]. One with a continuity gap in it, a header that does not parse, or
//! more bytes than the bound is dropped whole and counted; the next one is taken as usual.

use super::pes::{PesError, PesHeader};

/// A reassembled PES: its header and its payload.
#[derive(Debug, PartialEq, Eq)]
pub struct Pes<'a> {
    /// The header.
    pub header: PesHeader,
    /// The payload (after the header).
    pub payload: &'a [u8],
}

/// Why a PES was dropped.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum AssembleError {
    /// A packet of it was lost (a continuity gap).
    #[error("a packet of the PES was lost")]
    Gap,
    /// Larger than the bound.
    #[error("PES larger than {0} bytes")]
    TooLarge(usize),
    /// Its header was refused.
    #[error("bad PES header: {0}")]
    Header(#[from] PesError),
    /// It ended before its header did.
    #[error("PES shorter than its header")]
    Truncated,
}

/// Reassembles the PES packets of one PID.
#[derive(Debug)]
pub struct PesAssembler {
    buf: Vec<u8>,
    max: usize,
    /// The PES being collected is already known bad (it is dropped at its end).
    broken: Option<AssembleError>,
    started: bool,
}

impl PesAssembler {
    /// An assembler that drops any PES larger than `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            max,
            broken: None,
            started: false,
        }
    }

    /// The payload of one transport packet of the PID: `start` is its
    /// payload_unit_start_indicator, `gap` whether a packet was lost before it. A PES that
    /// this ends goes to `done` (or the reason it was dropped).
    pub fn push(
        &mut self,
        start: bool,
        gap: bool,
        payload: &[u8],
        done: impl FnOnce(Result<Pes<'_>, AssembleError>),
    ) {
        if start {
            self.finish(done);
            self.started = true;
        } else if !self.started {
            return;
        } else if gap {
            self.broken.get_or_insert(AssembleError::Gap);
        }
        if self.broken.is_some() {
            return;
        }
        if self.buf.len() + payload.len() > self.max {
            self.broken = Some(AssembleError::TooLarge(self.max));
            self.buf.clear();
            return;
        }
        self.buf.extend_from_slice(payload);
    }

    /// The end of the input: the PES being collected is complete.
    pub fn flush(&mut self, done: impl FnOnce(Result<Pes<'_>, AssembleError>)) {
        self.finish(done);
        self.started = false;
    }

    fn finish(&mut self, done: impl FnOnce(Result<Pes<'_>, AssembleError>)) {
        let broken = self.broken.take();
        if !self.started {
            self.buf.clear();
            return;
        }
        match broken {
            Some(e) => done(Err(e)),
            None => match PesHeader::parse(&self.buf) {
                Ok(Some(header)) => {
                    let end = match usize::from(header.packet_length) {
                        0 => self.buf.len(),
                        // PES_packet_length counts the bytes after its own field.
                        n => (n + 6).min(self.buf.len()),
                    };
                    let payload = self.buf.get(header.header_len..end).unwrap_or(&[]);
                    done(Ok(Pes { header, payload }));
                }
                Ok(None) => done(Err(AssembleError::Truncated)),
                Err(e) => done(Err(AssembleError::Header(e))),
            },
        }
        self.buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ts::pes::Timestamp;

    fn pes(pts: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 1, 0xE0, 0, 0, 0x80, 0x80, 5];
        v.extend(Timestamp::new(pts).to_bytes(0b0010));
        v.extend_from_slice(payload);
        v
    }

    fn run(chunks: &[(bool, bool, Vec<u8>)]) -> Vec<Result<(u64, Vec<u8>), AssembleError>> {
        let mut a = PesAssembler::new(64);
        let mut out = Vec::new();
        let mut take = |r: Result<Pes<'_>, AssembleError>| {
            out.push(r.map(|p| (p.header.pts.map_or(0, |t| t.ticks()), p.payload.to_vec())))
        };
        for (start, gap, data) in chunks {
            a.push(*start, *gap, data, &mut take);
        }
        a.flush(&mut take);
        out
    }

    #[test]
    fn a_pes_is_whole_once_the_next_starts_and_split_anywhere_it_is_the_same() {
        let first = pes(900, b"abcdefgh");
        let second = pes(1800, b"ij");
        for cut in 1..first.len() {
            let got = run(&[
                (false, false, b"joined late".to_vec()),
                (true, false, first[..cut].to_vec()),
                (false, false, first[cut..].to_vec()),
                (true, false, second.clone()),
            ]);
            assert_eq!(
                got,
                [Ok((900, b"abcdefgh".to_vec())), Ok((1800, b"ij".to_vec()))],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn gaps_oversized_and_bad_headers_drop_one_pes_and_not_the_next() {
        let got = run(&[
            (true, false, pes(1, b"ab")),
            (false, true, b"cd".to_vec()),
            (true, false, pes(2, &[7; 80])),
            (true, false, vec![0, 0, 2, 0xE0, 0, 0]),
            (true, false, pes(3, b"ok")),
        ]);
        assert_eq!(got[0], Err(AssembleError::Gap));
        assert_eq!(got[1], Err(AssembleError::TooLarge(64)));
        assert!(matches!(got[2], Err(AssembleError::Header(_))));
        assert_eq!(got[3], Ok((3, b"ok".to_vec())));
    }
}
