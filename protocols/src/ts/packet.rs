//! One 188-byte transport packet: header, adaptation field, PCR, payload
//! (ISO/IEC 13818-1 §2.4.3.2–§2.4.3.5).

use super::types::{ContinuityCounter, Pid};

/// Size of a transport packet in bytes.
pub const PACKET_SIZE: usize = 188;
/// First byte of every transport packet.
pub const SYNC_BYTE: u8 = 0x47;

/// Why a 188-byte block is not a usable transport packet.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PacketError {
    /// The first byte is not 0x47.
    #[error("sync byte is {found:#04x}, not 0x47")]
    SyncByte {
        /// The byte found instead.
        found: u8,
    },
    /// adaptation_field_control is the reserved value 00.
    #[error("adaptation_field_control is the reserved value 00")]
    ReservedAdaptationControl,
    /// The adaptation field claims more bytes than the packet holds.
    #[error("adaptation_field_length {length} does not fit (at most {max})")]
    AdaptationLength {
        /// The length read.
        length: u8,
        /// The largest length this packet allows.
        max: u8,
    },
}

/// A program clock reference: 33-bit base at 90 kHz and 9-bit extension at 27 MHz (§2.4.2.2).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Pcr {
    /// The 90 kHz base, 33 bits.
    pub base: u64,
    /// The 27 MHz extension, 0 to 299.
    pub extension: u16,
}

impl Pcr {
    /// The PCR in 27 MHz ticks.
    pub fn ticks_27mhz(self) -> u64 {
        self.base * 300 + u64::from(self.extension)
    }

    /// The PCR made of a 27 MHz tick count (the base wraps at 33 bits).
    pub fn from_27mhz(ticks: u64) -> Self {
        Self {
            base: (ticks / 300) & ((1 << 33) - 1),
            extension: (ticks % 300) as u16,
        }
    }

    /// The six bytes as written in an adaptation field.
    pub fn to_bytes(self) -> [u8; 6] {
        let b = self.base;
        let e = self.extension;
        [
            (b >> 25) as u8,
            (b >> 17) as u8,
            (b >> 9) as u8,
            (b >> 1) as u8,
            ((b & 1) as u8) << 7 | 0x7E | ((e >> 8) as u8 & 1),
            e as u8,
        ]
    }

    fn from_bytes(p: &[u8; 6]) -> Self {
        let base = u64::from(p[0]) << 25
            | u64::from(p[1]) << 17
            | u64::from(p[2]) << 9
            | u64::from(p[3]) << 1
            | u64::from(p[4] >> 7);
        let extension = u16::from(p[4] & 1) << 8 | u16::from(p[5]);
        Self { base, extension }
    }
}

/// A checked view of one transport packet.
#[derive(Clone, Copy, Debug)]
pub struct Packet<'a> {
    bytes: &'a [u8; PACKET_SIZE],
    /// Offset of the payload (4 when there is no adaptation field).
    payload_start: u8,
}

impl<'a> Packet<'a> {
    /// Check the sync byte and the adaptation field length.
    pub fn new(bytes: &'a [u8; PACKET_SIZE]) -> Result<Self, PacketError> {
        if bytes[0] != SYNC_BYTE {
            return Err(PacketError::SyncByte { found: bytes[0] });
        }
        let control = (bytes[3] >> 4) & 0b11;
        let payload_start = match control {
            0b00 => return Err(PacketError::ReservedAdaptationControl),
            0b01 => 4,
            0b10 => {
                let length = bytes[4];
                if length > 183 {
                    return Err(PacketError::AdaptationLength { length, max: 183 });
                }
                PACKET_SIZE as u8
            }
            _ => {
                let length = bytes[4];
                if length > 182 {
                    return Err(PacketError::AdaptationLength { length, max: 182 });
                }
                5 + length
            }
        };
        Ok(Self {
            bytes,
            payload_start,
        })
    }

    /// All 188 bytes.
    pub fn bytes(&self) -> &'a [u8; PACKET_SIZE] {
        self.bytes
    }

    /// The packet identifier.
    pub fn pid(&self) -> Pid {
        Pid::from_bits(u16::from(self.bytes[1]) << 8 | u16::from(self.bytes[2]))
    }

    /// transport_error_indicator: a demodulator or gateway marked this packet as damaged.
    pub fn transport_error(&self) -> bool {
        self.bytes[1] & 0x80 != 0
    }

    /// payload_unit_start_indicator: a PES packet or PSI section starts here.
    pub fn payload_unit_start(&self) -> bool {
        self.bytes[1] & 0x40 != 0
    }

    /// transport_scrambling_control (0 when the payload is in the clear).
    pub fn scrambling(&self) -> u8 {
        self.bytes[3] >> 6
    }

    /// Whether the packet has an adaptation field.
    pub fn has_adaptation(&self) -> bool {
        self.bytes[3] & 0x20 != 0
    }

    /// Whether the packet carries payload (adaptation_field_control 01 or 11).
    pub fn has_payload(&self) -> bool {
        self.bytes[3] & 0x10 != 0
    }

    /// The continuity counter.
    pub fn continuity_counter(&self) -> ContinuityCounter {
        ContinuityCounter::from_bits(self.bytes[3])
    }

    /// The adaptation field, if any and if it is not empty.
    pub fn adaptation(&self) -> Option<AdaptationField<'a>> {
        if !self.has_adaptation() || self.bytes[4] == 0 {
            return None;
        }
        let end = 5 + usize::from(self.bytes[4]);
        Some(AdaptationField {
            body: &self.bytes[5..end],
        })
    }

    /// The payload bytes (empty when the packet carries none).
    pub fn payload(&self) -> &'a [u8] {
        if self.has_payload() {
            &self.bytes[usize::from(self.payload_start)..]
        } else {
            &[]
        }
    }

    /// The PCR carried in the adaptation field, if any.
    pub fn pcr(&self) -> Option<Pcr> {
        self.adaptation().and_then(|af| af.pcr())
    }

    /// discontinuity_indicator of the adaptation field.
    pub fn discontinuity(&self) -> bool {
        self.adaptation().is_some_and(|af| af.discontinuity())
    }

    /// random_access_indicator of the adaptation field.
    pub fn random_access(&self) -> bool {
        self.adaptation().is_some_and(|af| af.random_access())
    }
}

/// The body of an adaptation field, after its length byte (§2.4.3.4).
#[derive(Clone, Copy, Debug)]
pub struct AdaptationField<'a> {
    body: &'a [u8],
}

impl AdaptationField<'_> {
    fn flags(&self) -> u8 {
        self.body.first().copied().unwrap_or(0)
    }

    /// discontinuity_indicator: time base or continuity counter discontinuity signalled.
    pub fn discontinuity(&self) -> bool {
        self.flags() & 0x80 != 0
    }

    /// random_access_indicator: the next PES on this PID starts a random access point.
    pub fn random_access(&self) -> bool {
        self.flags() & 0x40 != 0
    }

    /// The PCR, when PCR_flag is set and the field is long enough to hold it.
    pub fn pcr(&self) -> Option<Pcr> {
        if self.flags() & 0x10 == 0 {
            return None;
        }
        let bytes: &[u8; 6] = self.body.get(1..7)?.try_into().ok()?;
        Some(Pcr::from_bytes(bytes))
    }
}

/// Overwrite the continuity counter of a packet.
pub fn set_continuity_counter(bytes: &mut [u8; PACKET_SIZE], cc: ContinuityCounter) {
    bytes[3] = (bytes[3] & 0xF0) | cc.value();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(header: [u8; 4], rest: &[u8]) -> [u8; PACKET_SIZE] {
        let mut p = [0xFF; PACKET_SIZE];
        p[..4].copy_from_slice(&header);
        p[4..4 + rest.len()].copy_from_slice(rest);
        p
    }

    #[test]
    fn reads_header_fields() {
        let p = packet([0x47, 0x41, 0x00, 0x1A], &[]);
        let p = Packet::new(&p).unwrap();
        assert_eq!(p.pid().value(), 0x100);
        assert!(p.payload_unit_start());
        assert!(!p.transport_error());
        assert!(p.has_payload() && !p.has_adaptation());
        assert_eq!(p.continuity_counter().value(), 10);
        assert_eq!(p.payload().len(), 184);
    }

    #[test]
    fn reads_pcr_and_flags() {
        let pcr = Pcr {
            base: (1 << 33) - 5,
            extension: 299,
        };
        let mut af = vec![7, 0x50];
        af.extend_from_slice(&pcr.to_bytes());
        let p = packet([0x47, 0x01, 0x00, 0x30], &af);
        let p = Packet::new(&p).unwrap();
        assert_eq!(p.pcr(), Some(pcr));
        assert!(p.random_access());
        assert!(!p.discontinuity());
        assert_eq!(p.payload().len(), 188 - 4 - 8);
        assert_eq!(Pcr::from_27mhz(pcr.ticks_27mhz()), pcr);
    }

    #[test]
    fn rejects_bad_packets() {
        let p = packet([0x46, 0, 0, 0x10], &[]);
        assert_eq!(
            Packet::new(&p).unwrap_err(),
            PacketError::SyncByte { found: 0x46 }
        );
        let p = packet([0x47, 0, 0, 0x00], &[]);
        assert_eq!(
            Packet::new(&p).unwrap_err(),
            PacketError::ReservedAdaptationControl
        );
        let p = packet([0x47, 0, 0, 0x30], &[183]);
        assert!(matches!(
            Packet::new(&p),
            Err(PacketError::AdaptationLength { .. })
        ));
        let p = packet([0x47, 0, 0, 0x20], &[183]);
        assert!(Packet::new(&p).unwrap().payload().is_empty());
    }
}
