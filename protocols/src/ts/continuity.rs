//! Continuity counter checks per PID (ISO/IEC 13818-1 §2.4.3.3).
//!
//! The counter steps by one on every packet with payload and stays put on packets without
//! payload. One duplicate (the same counter again, with payload) is allowed; a jump is a gap:
//! packets were lost. A packet whose adaptation field sets discontinuity_indicator may carry any
//! counter. The null PID is never checked.

use super::packet::Packet;
use super::types::{ContinuityCounter, Pid};

/// What a packet's counter says about the packets before it on its PID.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Continuity {
    /// As expected (or the first packet seen on this PID, or the null PID).
    Ok,
    /// A repeat of the previous packet: its payload must be ignored.
    Duplicate,
    /// The source signalled a discontinuity; the counter restarts here.
    Signalled,
    /// Packets were lost (or reordered) between the previous packet and this one.
    Gap {
        /// The counter that was expected.
        expected: ContinuityCounter,
        /// The counter found.
        found: ContinuityCounter,
    },
}

const SEEN: u8 = 0x80;
const LAST_HAD_PAYLOAD: u8 = 0x40;
const LAST_WAS_DUPLICATE: u8 = 0x20;

/// Per-PID counter state for all 8192 PIDs (one byte each, no allocation per packet).
#[derive(Clone)]
pub struct ContinuityTracker {
    state: Box<[u8; Pid::COUNT]>,
}

impl std::fmt::Debug for ContinuityTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let seen = self.state.iter().filter(|s| **s & SEEN != 0).count();
        f.debug_struct("ContinuityTracker")
            .field("pids_seen", &seen)
            .finish()
    }
}

impl Default for ContinuityTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl ContinuityTracker {
    /// A tracker that has seen no packet.
    pub fn new() -> Self {
        Self {
            state: Box::new([0; Pid::COUNT]),
        }
    }

    /// Forget a PID (its next packet is accepted whatever its counter).
    pub fn reset(&mut self, pid: Pid) {
        self.state[pid.index()] = 0;
    }

    /// Check `packet` against the previous packet of its PID and remember it.
    pub fn check(&mut self, packet: &Packet<'_>) -> Continuity {
        let pid = packet.pid();
        if pid == Pid::NULL {
            return Continuity::Ok;
        }
        let found = packet.continuity_counter();
        let has_payload = packet.has_payload();
        let slot = &mut self.state[pid.index()];
        let previous = *slot;
        let mut next = SEEN | found.value() | if has_payload { LAST_HAD_PAYLOAD } else { 0 };
        let verdict = if previous & SEEN == 0 {
            Continuity::Ok
        } else if packet.discontinuity() {
            Continuity::Signalled
        } else {
            let last = ContinuityCounter::from_bits(previous);
            let expected = if has_payload { last.next() } else { last };
            if found == expected {
                Continuity::Ok
            } else if has_payload
                && found == last
                && previous & LAST_HAD_PAYLOAD != 0
                && previous & LAST_WAS_DUPLICATE == 0
            {
                next |= LAST_WAS_DUPLICATE;
                Continuity::Duplicate
            } else {
                Continuity::Gap { expected, found }
            }
        };
        *slot = next;
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::super::packet::PACKET_SIZE;
    use super::*;

    fn packet(pid: u16, cc: u8, payload: bool, discontinuity: bool) -> [u8; PACKET_SIZE] {
        let mut p = [0xFF; PACKET_SIZE];
        p[0] = 0x47;
        p[1] = (pid >> 8) as u8;
        p[2] = pid as u8;
        let control = if payload { 0x30 } else { 0x20 };
        p[3] = control | cc;
        p[4] = if payload { 1 } else { 183 };
        p[5] = if discontinuity { 0x80 } else { 0 };
        p
    }

    fn check(t: &mut ContinuityTracker, p: [u8; PACKET_SIZE]) -> Continuity {
        t.check(&Packet::new(&p).unwrap())
    }

    #[test]
    fn detects_gaps_duplicates_and_signalled_restarts() {
        let mut t = ContinuityTracker::new();
        assert_eq!(
            check(&mut t, packet(0x100, 14, true, false)),
            Continuity::Ok
        );
        assert_eq!(
            check(&mut t, packet(0x100, 15, true, false)),
            Continuity::Ok
        );
        assert_eq!(check(&mut t, packet(0x100, 0, true, false)), Continuity::Ok);
        assert_eq!(
            check(&mut t, packet(0x100, 0, false, false)),
            Continuity::Ok
        );
        assert_eq!(check(&mut t, packet(0x100, 1, true, false)), Continuity::Ok);
        assert_eq!(
            check(&mut t, packet(0x100, 1, true, false)),
            Continuity::Duplicate
        );
        assert!(matches!(
            check(&mut t, packet(0x100, 1, true, false)),
            Continuity::Gap { .. }
        ));
        assert!(matches!(
            check(&mut t, packet(0x100, 5, true, false)),
            Continuity::Gap { .. }
        ));
        assert_eq!(
            check(&mut t, packet(0x100, 9, true, true)),
            Continuity::Signalled
        );
        assert_eq!(
            check(&mut t, packet(0x100, 10, true, false)),
            Continuity::Ok
        );
        // Other PIDs are independent; the null PID is never checked.
        assert_eq!(check(&mut t, packet(0x101, 3, true, false)), Continuity::Ok);
        assert_eq!(
            check(&mut t, packet(0x1FFF, 3, true, false)),
            Continuity::Ok
        );
        assert_eq!(
            check(&mut t, packet(0x1FFF, 9, true, false)),
            Continuity::Ok
        );
    }
}
