//! Packet synchronisation: 188-byte packets out of arbitrary byte chunks.
//!
//! Datagrams can be short, split a packet, or lose bytes. While in sync, every packet boundary
//! must hold 0x47; a boundary that does not loses sync. Out of sync, a 0x47 is taken as a packet
//! start only once the two following packet boundaries hold 0x47 too, so a stray 0x47 inside a
//! payload is not mistaken for a packet. The decision never depends on how input was split.
//!
//! While in sync a packet is emitted as soon as its 188 bytes are there, without waiting for
//! the next boundary: that keeps a live packet from waiting for the next datagram. The price is
//! that a packet cut short by loss is emitted with the next packet's head inside; its
//! continuity counter or PES framing flags it downstream, and sync is regained on the next
//! boundary.

use super::packet::{PACKET_SIZE, SYNC_BYTE};

/// Packets that must follow a candidate sync byte before it is believed.
const CONFIRMATIONS: usize = 2;
/// Bytes needed to decide on a candidate: the candidate packet plus the confirmations' first byte.
const DECISION_WINDOW: usize = PACKET_SIZE * CONFIRMATIONS + 1;
/// Carry buffer size: any leftover is shorter than the decision window.
const CARRY: usize = PACKET_SIZE * (CONFIRMATIONS + 1);

/// Counters kept by [`PacketSync`].
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct SyncStats {
    /// Packets emitted.
    pub packets: u64,
    /// Bytes dropped while looking for sync.
    pub skipped_bytes: u64,
    /// Times sync was lost after being held.
    pub sync_losses: u64,
}

/// Incremental packet synchroniser (see the module docs).
#[derive(Debug, Default)]
pub struct PacketSync {
    carry: Vec<u8>,
    in_sync: bool,
    stats: SyncStats,
}

impl PacketSync {
    /// A synchroniser that has seen nothing yet.
    pub fn new() -> Self {
        Self {
            carry: Vec::with_capacity(CARRY),
            ..Self::default()
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> SyncStats {
        self.stats
    }

    /// Whether the last packet boundary held a sync byte.
    pub fn in_sync(&self) -> bool {
        self.in_sync
    }

    /// Feed the next chunk of the byte stream; `emit` is called with every complete packet.
    pub fn push(&mut self, mut input: &[u8], mut emit: impl FnMut(&[u8; PACKET_SIZE])) {
        while !self.carry.is_empty() {
            let take = (CARRY - self.carry.len()).min(input.len());
            self.carry.extend_from_slice(&input[..take]);
            input = &input[take..];
            let mut carry = std::mem::take(&mut self.carry);
            let used = self.scan(&carry, &mut emit);
            carry.drain(..used);
            self.carry = carry;
            if input.is_empty() {
                return;
            }
        }
        let used = self.scan(input, &mut emit);
        self.carry.extend_from_slice(&input[used..]);
    }

    /// End of input: the bytes still held (an incomplete packet) are counted as skipped.
    pub fn finish(&mut self) {
        self.stats.skipped_bytes += self.carry.len() as u64;
        self.carry.clear();
        self.in_sync = false;
    }

    /// Consume what can be decided in `data`; returns the number of bytes consumed.
    fn scan(&mut self, data: &[u8], emit: &mut impl FnMut(&[u8; PACKET_SIZE])) -> usize {
        let mut pos = 0;
        while pos < data.len() {
            if self.in_sync {
                let Some(packet) = data.get(pos..pos + PACKET_SIZE) else {
                    break;
                };
                let Ok(packet) = <&[u8; PACKET_SIZE]>::try_from(packet) else {
                    break;
                };
                if packet[0] == SYNC_BYTE {
                    self.stats.packets += 1;
                    emit(packet);
                    pos += PACKET_SIZE;
                } else {
                    self.in_sync = false;
                    self.stats.sync_losses += 1;
                }
                continue;
            }
            let Some(found) = memchr::memchr(SYNC_BYTE, &data[pos..]) else {
                self.stats.skipped_bytes += (data.len() - pos) as u64;
                return data.len();
            };
            let candidate = pos + found;
            self.stats.skipped_bytes += found as u64;
            if data.len() - candidate < DECISION_WINDOW {
                return candidate;
            }
            let confirmed =
                (1..=CONFIRMATIONS).all(|k| data[candidate + k * PACKET_SIZE] == SYNC_BYTE);
            if confirmed {
                self.in_sync = true;
                pos = candidate;
            } else {
                self.stats.skipped_bytes += 1;
                pos = candidate + 1;
            }
        }
        pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..n {
            let mut p = [0u8; PACKET_SIZE];
            p[0] = SYNC_BYTE;
            p[1] = i as u8;
            p[5] = SYNC_BYTE; // a stray sync byte inside the payload
            out.extend_from_slice(&p);
        }
        out
    }

    fn collect(chunks: &[&[u8]]) -> (Vec<u8>, SyncStats) {
        let mut sync = PacketSync::new();
        let mut seen = Vec::new();
        for c in chunks {
            sync.push(c, |p| seen.push(p[1]));
        }
        (seen, sync.stats())
    }

    #[test]
    fn finds_packets_after_garbage() {
        let mut data = vec![0x47, 1, 2, 0x47, 9];
        data.extend(stream(5));
        let (seen, stats) = collect(&[&data]);
        assert_eq!(seen, vec![0, 1, 2, 3, 4]);
        assert_eq!(stats.skipped_bytes, 5);
    }

    #[test]
    fn same_result_at_every_split() {
        let mut data = vec![0x47, 0, 0x47];
        data.extend(stream(6));
        data.truncate(data.len() - 100); // a lost tail mid-packet
        data.extend(stream(4));
        let (whole, whole_stats) = collect(&[&data]);
        for split in 0..data.len() {
            let (a, b) = data.split_at(split);
            let (seen, stats) = collect(&[a, b]);
            assert_eq!(seen, whole, "split at {split}");
            assert_eq!(stats, whole_stats, "split at {split}");
        }
        for size in [1, 7, 187, 189, 1316] {
            let chunks: Vec<&[u8]> = data.chunks(size).collect();
            assert_eq!(collect(&chunks).0, whole);
        }
    }

    #[test]
    fn resyncs_after_a_cut_packet() {
        let mut data = stream(4);
        data.extend_from_slice(&stream(1)[..50]);
        data.extend(stream(4));
        let (seen, stats) = collect(&[&data]);
        // The cut packet is emitted with the head of the next one inside (it still starts
        // with 0x47); the packet it swallowed is lost and sync returns at the one after.
        assert_eq!(seen, vec![0, 1, 2, 3, 0, 1, 2, 3]);
        assert_eq!(stats.packets, 8);
        assert_eq!(stats.sync_losses, 1);
    }
}
