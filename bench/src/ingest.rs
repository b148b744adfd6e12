//! `ingest`: the generator's stream (or a TS file, looped) sent over UDP at its mux rate, paced
//! packet by packet, with the wall-clock time written into each frame's stamp as it leaves.

use shardcast_protocols::generator::{write_stamp, Generator, GeneratorConfig};
use shardcast_protocols::ts::PACKET_SIZE;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Packets per datagram (1316 bytes, what IPTV equipment sends).
pub const PACKETS_PER_DATAGRAM: usize = 7;

/// What to send where.
#[derive(Clone, Debug)]
pub struct IngestPlan {
    /// Destination (unicast or a multicast group).
    pub to: SocketAddr,
    /// Local address to send from (its address is the source of the datagrams).
    pub from: SocketAddr,
    /// How long to send.
    pub duration: Duration,
    /// The stream.
    pub generator: GeneratorConfig,
}

/// Send until the plan's duration ends; returns datagrams sent.
pub fn run(plan: &IngestPlan) -> std::io::Result<u64> {
    let socket = UdpSocket::bind(plan.from)?;
    socket.set_multicast_ttl_v4(1)?;
    let mut g = Generator::new(plan.generator)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let start = Instant::now();
    let mut datagram = [0u8; PACKET_SIZE * PACKETS_PER_DATAGRAM];
    let mut stamps: Vec<usize> = Vec::with_capacity(PACKETS_PER_DATAGRAM);
    let mut sent = 0;
    while start.elapsed() < plan.duration {
        stamps.clear();
        for (i, slot) in datagram.chunks_exact_mut(PACKET_SIZE).enumerate() {
            let mut packet = [0u8; PACKET_SIZE];
            if let Some(at) = g.next_packet(&mut packet) {
                stamps.push(i * PACKET_SIZE + at);
            }
            slot.copy_from_slice(&packet);
        }
        let due = start + Duration::from_nanos(g.packet_time_ns(g.packets()));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        for &at in &stamps {
            let packet_start = at / PACKET_SIZE * PACKET_SIZE;
            let mut packet = [0u8; PACKET_SIZE];
            packet.copy_from_slice(&datagram[packet_start..packet_start + PACKET_SIZE]);
            write_stamp(&mut packet, at - packet_start, now);
            datagram[packet_start..packet_start + PACKET_SIZE].copy_from_slice(&packet);
        }
        socket.send_to(&datagram, plan.to)?;
        sent += 1;
    }
    Ok(sent)
}
