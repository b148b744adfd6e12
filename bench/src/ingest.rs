//! `ingest`: the generator's stream (or a TS file, looped) sent over UDP (or TCP, to a server
//! that listens for encoders) at its mux rate, paced datagram by datagram (a TCP write of the
//! same 1316 bytes each), to one or many destinations at once. The generator's frames carry the
//! wall-clock time written as their datagram leaves, which the viewers read back as latency.
//!
//! One thread sends every stream, each datagram at its due time; a sender that falls more than
//! a second behind its schedule stops with an error rather than send bursts.

use shardcast_protocols::generator::{write_stamp, Generator, GeneratorConfig};
use shardcast_protocols::ts::{PacketSync, PACKET_SIZE};
use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Packets per datagram (1316 bytes, what IPTV equipment sends).
pub const PACKETS_PER_DATAGRAM: usize = 7;

/// How early a datagram may go rather than sleep until it is due: at many streams (an IPTV
/// host's 100 channels are 24,000 datagrams a second) a sleep per datagram is most of the
/// sender's work.
const EARLY: Duration = Duration::from_micros(200);

/// How far behind schedule a sender may fall before it gives up.
pub const MAX_LAG: Duration = Duration::from_secs(1);

/// What to send.
#[derive(Clone, Debug)]
pub enum Content {
    /// The synthetic stream (stamped).
    Generator(GeneratorConfig),
    /// Whole packets of a file, looped, at this many bits per second.
    File {
        /// The packets.
        packets: Arc<Vec<u8>>,
        /// The rate to send them at.
        bitrate: u32,
    },
}

impl Default for Content {
    fn default() -> Self {
        Content::Generator(GeneratorConfig::default())
    }
}

/// How the stream travels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Over {
    /// One datagram of 7 packets at a time.
    #[default]
    Udp,
    /// One connection per destination, 7 packets per write (no Nagle delay).
    Tcp,
    /// An HTTP `PUT` to this path on each destination, chunked, one chunk of 7 packets per
    /// write (as ffmpeg's `-method PUT` sends).
    Push(String),
}

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

/// Read a transport stream file for [`Content::File`]: whole packets only, resynchronised
/// where the file has garbage.
pub fn load_file(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let data = std::fs::read(path)?;
    let mut packets = Vec::with_capacity(data.len());
    let mut sync = PacketSync::new();
    sync.push(&data, |p| packets.extend_from_slice(p));
    if packets.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} holds no MPEG-TS packets", path.display()),
        ));
    }
    Ok(packets)
}

/// One stream being sent.
struct Stream {
    to: SocketAddr,
    source: Source,
    sent: u64,
    /// Its datagrams are due this much after its content's times: streams are spread evenly
    /// over one datagram's time, as independent sources are, not sent in bursts.
    offset: Duration,
}

enum Source {
    Generator(Box<Generator>),
    File {
        packets: Arc<Vec<u8>>,
        at: usize,
        bitrate: u32,
        bytes: u64,
    },
}

impl Stream {
    /// When the next datagram is due, from the start of sending.
    fn due(&self) -> Duration {
        self.offset
            + match &self.source {
                Source::Generator(g) => Duration::from_nanos(g.packet_time_ns(g.packets())),
                Source::File { bitrate, bytes, .. } => {
                    Duration::from_nanos(bytes * 8 * 1_000_000_000 / u64::from(*bitrate).max(1))
                }
            }
    }

    /// Fill the next datagram; stamps (offsets in it) of the generator's frames go to `stamps`.
    fn fill(&mut self, datagram: &mut [u8], stamps: &mut Vec<usize>) {
        stamps.clear();
        match &mut self.source {
            Source::Generator(g) => {
                for (i, slot) in datagram.chunks_exact_mut(PACKET_SIZE).enumerate() {
                    let mut packet = [0u8; PACKET_SIZE];
                    if let Some(at) = g.next_packet(&mut packet) {
                        stamps.push(i * PACKET_SIZE + at);
                    }
                    slot.copy_from_slice(&packet);
                }
            }
            Source::File {
                packets, at, bytes, ..
            } => {
                for slot in datagram.chunks_exact_mut(PACKET_SIZE) {
                    if *at + PACKET_SIZE > packets.len() {
                        *at = 0;
                    }
                    slot.copy_from_slice(&packets[*at..*at + PACKET_SIZE]);
                    *at += PACKET_SIZE;
                }
                *bytes += datagram.len() as u64;
            }
        }
    }
}

/// Send `content` to every destination in `to` until `duration` ends; returns datagrams sent
/// per destination.
pub fn run_many(
    content: &Content,
    from: SocketAddr,
    to: &[SocketAddr],
    duration: Duration,
) -> std::io::Result<Vec<u64>> {
    run_many_over(content, from, to, duration, Over::Udp)
}

/// Like [`run_many`], over UDP or TCP; returns the datagrams (or writes) sent to each.
pub fn run_many_over(
    content: &Content,
    from: SocketAddr,
    to: &[SocketAddr],
    duration: Duration,
    over: Over,
) -> std::io::Result<Vec<u64>> {
    let socket = UdpSocket::bind(from)?;
    socket.set_multicast_ttl_v4(1)?;
    let mut connections = Vec::new();
    if over != Over::Udp {
        for dest in to {
            let mut conn = TcpStream::connect(dest)?;
            conn.set_nodelay(true)?;
            if let Over::Push(path) = &over {
                conn.write_all(
                    format!(
                        "PUT {path} HTTP/1.1\r\nHost: {dest}\r\nTransfer-Encoding: chunked\r\n\r\n"
                    )
                    .as_bytes(),
                )?;
            }
            connections.push(conn);
        }
    }
    let chunked = matches!(over, Over::Push(_));
    let mut chunk = Vec::with_capacity(PACKET_SIZE * PACKETS_PER_DATAGRAM + 16);
    let mut streams = Vec::with_capacity(to.len());
    for &dest in to {
        let source = match content {
            Content::Generator(config) => {
                Source::Generator(Box::new(Generator::new(*config).map_err(|e| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
                })?))
            }
            Content::File { packets, bitrate } => {
                if *bitrate == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "a file needs a bitrate above 0",
                    ));
                }
                Source::File {
                    packets: packets.clone(),
                    at: 0,
                    bitrate: *bitrate,
                    bytes: 0,
                }
            }
        };
        streams.push(Stream {
            to: dest,
            source,
            sent: 0,
            offset: Duration::ZERO,
        });
    }
    let bitrate = match content {
        Content::Generator(config) => config.bitrate,
        Content::File { bitrate, .. } => *bitrate,
    };
    let datagram_ns =
        (PACKET_SIZE * PACKETS_PER_DATAGRAM) as u64 * 8 * 1_000_000_000 / u64::from(bitrate).max(1);
    let count = streams.len() as u64;
    for (i, stream) in streams.iter_mut().enumerate() {
        stream.offset = Duration::from_nanos(datagram_ns * i as u64 / count);
    }
    if streams.is_empty() {
        return Ok(Vec::new());
    }
    let start = Instant::now();
    let mut datagram = [0u8; PACKET_SIZE * PACKETS_PER_DATAGRAM];
    let mut stamps: Vec<usize> = Vec::with_capacity(PACKETS_PER_DATAGRAM);
    while let Some((next, due)) = streams
        .iter()
        .enumerate()
        .map(|(i, s)| (i, s.due()))
        .min_by_key(|(_, due)| *due)
    {
        if due >= duration {
            break;
        }
        let stream = &mut streams[next];
        stream.fill(&mut datagram, &mut stamps);
        let due_at = start + due;
        let now = Instant::now();
        match due_at.checked_duration_since(now) {
            // Sleeping costs a timer and a wake-up: datagrams due within EARLY go now.
            Some(wait) if wait > EARLY => std::thread::sleep(wait - EARLY),
            Some(_) => {}
            None if now.duration_since(due_at) > MAX_LAG => {
                return Err(std::io::Error::other(format!(
                    "cannot keep up: {} stream(s) at this rate are more than one thread can send (fell {:.1} s behind)",
                    to.len(),
                    now.duration_since(due_at).as_secs_f64()
                )));
            }
            None => {}
        }
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        for &at in &stamps {
            let packet_start = at / PACKET_SIZE * PACKET_SIZE;
            let mut packet = [0u8; PACKET_SIZE];
            packet.copy_from_slice(&datagram[packet_start..packet_start + PACKET_SIZE]);
            write_stamp(&mut packet, at - packet_start, unix);
            datagram[packet_start..packet_start + PACKET_SIZE].copy_from_slice(&packet);
        }
        match connections.get_mut(next) {
            Some(conn) if chunked => {
                chunk.clear();
                chunk.extend_from_slice(format!("{:x}\r\n", datagram.len()).as_bytes());
                chunk.extend_from_slice(&datagram);
                chunk.extend_from_slice(b"\r\n");
                conn.write_all(&chunk)?
            }
            Some(conn) => conn.write_all(&datagram)?,
            None => {
                socket.send_to(&datagram, stream.to)?;
            }
        }
        stream.sent += 1;
    }
    Ok(streams.iter().map(|s| s.sent).collect())
}

/// Send the plan's generator stream to its one destination; returns datagrams sent.
pub fn run(plan: &IngestPlan) -> std::io::Result<u64> {
    let sent = run_many(
        &Content::Generator(plan.generator),
        plan.from,
        &[plan.to],
        plan.duration,
    )?;
    Ok(sent.first().copied().unwrap_or(0))
}
