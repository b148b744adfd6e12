//! MPEG-TS carried in RTP (RFC 3550 headers, RFC 2250 payload): what a UDP source's datagram
//! holds when an encoder or a playout system sends RTP instead of raw TS, and the sequence
//! numbers that say what the network lost or reordered on the way.
//!
//! [`unwrap`] tells the two apart by the first byte (raw TS starts with the sync byte 0x47,
//! whose top bits are not RTP's version 2) and checks that what follows the header is whole
//! TS packets. [`Sequence`] follows the 16-bit sequence numbers, wrapping. Sans-IO: no
//! allocation, no clock. What it does not do: SMPTE 2022-1 FEC (the FEC streams are not read;
//! a lost datagram stays lost).

use crate::ts::{PACKET_SIZE, SYNC_BYTE};

/// RTP's payload type for MPEG-TS (RFC 3551).
pub const PAYLOAD_TYPE_MP2T: u8 = 33;

/// What a datagram was found to hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Datagram<'a> {
    /// Raw TS (or anything else that is not RTP carrying TS: the packet sync judges it).
    Raw(&'a [u8]),
    /// TS in RTP: the sequence number and the TS packets after the header.
    Rtp {
        /// The RTP sequence number.
        sequence: u16,
        /// The TS packets.
        payload: &'a [u8],
    },
}

/// Look at one UDP datagram: raw TS, or TS in RTP (RTP version 2, payload type 33 or a dynamic
/// one, after its header and any CSRCs, header extension and padding, whole TS packets).
pub fn unwrap(datagram: &[u8]) -> Datagram<'_> {
    let raw = Datagram::Raw(datagram);
    let [first, second, s0, s1, ..] = *datagram else {
        return raw;
    };
    if first == SYNC_BYTE || first >> 6 != 2 {
        return raw;
    }
    let payload_type = second & 0x7f;
    if payload_type != PAYLOAD_TYPE_MP2T && !(96..=127).contains(&payload_type) {
        return raw;
    }
    let csrcs = usize::from(first & 0x0f);
    let mut start = 12 + 4 * csrcs;
    if first & 0x10 != 0 {
        // Header extension: 16-bit profile word, 16-bit length in 32-bit words.
        let Some(&[_, _, l0, l1]) = datagram.get(start..start + 4) else {
            return raw;
        };
        start += 4 + 4 * usize::from(u16::from_be_bytes([l0, l1]));
    }
    let mut end = datagram.len();
    if first & 0x20 != 0 {
        let padding = usize::from(datagram[end - 1]);
        end = end.saturating_sub(padding);
    }
    match datagram.get(start..end) {
        Some(payload)
            if !payload.is_empty()
                && payload.len() % PACKET_SIZE == 0
                && payload[0] == SYNC_BYTE =>
        {
            Datagram::Rtp {
                sequence: u16::from_be_bytes([s0, s1]),
                payload,
            }
        }
        _ => raw,
    }
}

/// The 12-byte header (version 2, no padding, extension or CSRC, payload type 33) of a
/// datagram of TS packets sent in RTP: its sequence number, its 90 kHz timestamp (when its
/// first byte is due, RFC 2250) and its source's identifier.
pub fn header(sequence: u16, timestamp: u32, ssrc: u32) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[0] = 2 << 6;
    h[1] = PAYLOAD_TYPE_MP2T;
    h[2..4].copy_from_slice(&sequence.to_be_bytes());
    h[4..8].copy_from_slice(&timestamp.to_be_bytes());
    h[8..12].copy_from_slice(&ssrc.to_be_bytes());
    h
}

/// What one sequence number says about the ones before it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Arrival {
    /// Datagrams skipped before this one (lost, or to come late).
    pub missing: u16,
    /// It came after a later one (late, or a duplicate).
    pub late: bool,
}

/// The sequence numbers of one RTP stream, followed across their wrap at 65536.
#[derive(Clone, Debug, Default)]
pub struct Sequence {
    next: Option<u16>,
}

/// A jump forward this large (or larger) is a new sender, not loss.
const RESTART_GAP: u16 = 3000;

impl Sequence {
    /// A stream not yet seen.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sequence number `sequence` arrived.
    pub fn arrived(&mut self, sequence: u16) -> Arrival {
        let Some(next) = self.next else {
            self.next = Some(sequence.wrapping_add(1));
            return Arrival::default();
        };
        let ahead = sequence.wrapping_sub(next);
        if ahead == 0 {
            self.next = Some(sequence.wrapping_add(1));
            Arrival::default()
        } else if ahead < RESTART_GAP {
            self.next = Some(sequence.wrapping_add(1));
            Arrival {
                missing: ahead,
                late: false,
            }
        } else if ahead > u16::MAX - RESTART_GAP {
            // Behind what was expected: a late or repeated datagram; the expectation stays.
            Arrival {
                missing: 0,
                late: true,
            }
        } else {
            // Far off either way: the sender started again.
            self.next = Some(sequence.wrapping_add(1));
            Arrival::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_written_is_read_back() {
        let mut datagram = header(65_535, 90_000, 7).to_vec();
        datagram.extend_from_slice(&[SYNC_BYTE; PACKET_SIZE]);
        assert_eq!(
            unwrap(&datagram),
            Datagram::Rtp {
                sequence: 65_535,
                payload: &datagram[12..],
            }
        );
    }

    fn rtp(sequence: u16, payload_type: u8, packets: usize) -> Vec<u8> {
        let mut d = vec![0x80, payload_type];
        d.extend_from_slice(&sequence.to_be_bytes());
        d.extend_from_slice(&[0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef]);
        for _ in 0..packets {
            let mut p = [0xffu8; PACKET_SIZE];
            p[0] = SYNC_BYTE;
            d.extend_from_slice(&p);
        }
        d
    }

    #[test]
    fn rtp_is_told_from_raw_ts() {
        let d = rtp(7, 33, 7);
        match unwrap(&d) {
            Datagram::Rtp { sequence, payload } => {
                assert_eq!(sequence, 7);
                assert_eq!(payload.len(), 7 * PACKET_SIZE);
            }
            raw => panic!("{raw:?}"),
        }
        // Raw TS, a wrong payload type, a payload that is not whole packets: raw.
        let mut ts = vec![0xffu8; 7 * PACKET_SIZE];
        ts[0] = SYNC_BYTE;
        assert_eq!(unwrap(&ts), Datagram::Raw(&ts));
        let other = rtp(7, 14, 7);
        assert!(matches!(unwrap(&other), Datagram::Raw(_)));
        let cut = &d[..d.len() - 1];
        assert!(matches!(unwrap(cut), Datagram::Raw(_)));
        // CSRCs, an extension and padding are skipped.
        let mut fancy = vec![0x80 | 0x20 | 0x10 | 2, 96, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0];
        fancy.extend_from_slice(&[0; 8]); // two CSRCs
        fancy.extend_from_slice(&[0xbe, 0xde, 0, 1, 1, 2, 3, 4]); // one word of extension
        fancy.extend_from_slice(&rtp(0, 33, 2)[12..]);
        fancy.extend_from_slice(&[0, 0, 3]); // three bytes of padding
        assert!(
            matches!(unwrap(&fancy), Datagram::Rtp { sequence: 9, payload } if payload.len() == 2 * PACKET_SIZE)
        );
        for short in [&[][..], &[0x80], &[0x80, 33, 0], &[0x80, 33, 0, 1, 0, 0]] {
            assert!(matches!(unwrap(short), Datagram::Raw(_)));
        }
    }

    #[test]
    fn sequence_numbers_count_loss_and_reorder_across_the_wrap() {
        let mut s = Sequence::new();
        let arrivals: Vec<Arrival> = [65534u16, 65535, 0, 3, 2, 4, 4]
            .iter()
            .map(|&n| s.arrived(n))
            .collect();
        let missing: Vec<u16> = arrivals.iter().map(|a| a.missing).collect();
        let late: Vec<bool> = arrivals.iter().map(|a| a.late).collect();
        assert_eq!(missing, [0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(late, [false, false, false, false, true, false, true]);
        // A sender that starts again far away is not 30,000 losses.
        assert_eq!(s.arrived(30_000), Arrival::default());
        assert_eq!(s.arrived(30_001), Arrival::default());
    }
}
