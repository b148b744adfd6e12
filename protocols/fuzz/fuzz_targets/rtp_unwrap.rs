//! Arbitrary datagrams through the RTP unwrapper, and their first two bytes as a run of
//! sequence numbers: nothing may panic, and what is taken as TS in RTP is whole packets
//! inside the datagram.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardcast_protocols::rtp::{unwrap, Datagram, Sequence};
use shardcast_protocols::ts::{PACKET_SIZE, SYNC_BYTE};

fuzz_target!(|data: &[u8]| {
    match unwrap(data) {
        Datagram::Raw(raw) => assert_eq!(raw.len(), data.len()),
        Datagram::Rtp { payload, .. } => {
            assert!(!payload.is_empty() && payload.len() % PACKET_SIZE == 0);
            assert_eq!(payload[0], SYNC_BYTE);
            assert!(payload.len() + 12 <= data.len());
        }
    }
    let mut sequence = Sequence::new();
    for pair in data.chunks_exact(2) {
        let arrival = sequence.arrived(u16::from_be_bytes([pair[0], pair[1]]));
        assert!(!(arrival.late && arrival.missing > 0));
    }
});
