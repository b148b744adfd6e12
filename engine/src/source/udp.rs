//! MPEG-TS over UDP: the socket (socket2 for the options; `recvmmsg` for up to
//! [`crate::sys::DATAGRAM_BATCH`] datagrams a call, with the kernel's drop counter): unicast or
//! multicast, any-source or source-specific, IPv4 or IPv6 (`udp://[::]:5000`,
//! `udp://[ff3e::1]:5000?iface=eth1`, `udp://[2001:db8::7]@[ff3e::1]:5000`).
//! An IPv6 group is joined on the interface `iface=` names (a name or an index); without it,
//! on the one the kernel picks by its routes.

use super::{SourceDriver, SourceError, SourceSpec};
use nix::sys::socket::{setsockopt, sockopt};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsFd;

/// A UDP source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpSpec {
    /// Address and port to receive on: a multicast group, or a local unicast address.
    pub addr: SocketAddr,
    /// Source-specific multicast: only datagrams from this sender (of the group's family).
    pub source: Option<IpAddr>,
    /// The interface to join on, by name or by address.
    pub iface: Option<String>,
    /// The program to take from an MPTS.
    pub program: Option<u16>,
    /// SO_RCVBUF to ask for.
    pub rcvbuf: usize,
}

/// Default receive buffer: about 4 s of a 16 Mbit/s stream.
pub const DEFAULT_RCVBUF: usize = 8 << 20;

/// `udp://[source@]addr:port?…`, after the scheme.
pub(super) fn parse(rest: &str) -> Result<SourceSpec, SourceError> {
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (userinfo_source, hostport) = match authority.split_once('@') {
        Some((src, hp)) => (Some(src), hp),
        None => (None, authority),
    };
    let hostport = hostport.trim_end_matches('/');
    let addr: SocketAddr = hostport
        .parse()
        .map_err(|_| SourceError::Address(hostport.to_owned()))?;
    let mut spec = UdpSpec {
        addr,
        source: None,
        iface: None,
        program: None,
        rcvbuf: DEFAULT_RCVBUF,
    };
    if let Some(src) = userinfo_source {
        let src = src.trim_start_matches('[').trim_end_matches(']');
        spec.source = Some(
            src.parse()
                .map_err(|_| SourceError::Address(src.to_owned()))?,
        );
    }
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = || SourceError::Parameter(pair.to_owned());
        match key {
            "source" => spec.source = Some(value.parse().map_err(|_| bad())?),
            "iface" if !value.is_empty() => spec.iface = Some(value.to_owned()),
            "program" => spec.program = Some(value.parse().map_err(|_| bad())?),
            "rcvbuf" => spec.rcvbuf = value.parse().map_err(|_| bad())?,
            _ => return Err(bad()),
        }
    }
    if let Some(src) = spec.source {
        if !addr.ip().is_multicast() {
            return Err(SourceError::SourceWithoutGroup(addr.ip()));
        }
        if src.is_ipv4() != addr.is_ipv4() {
            return Err(SourceError::Parameter(format!(
                "source={src} (not of the group's address family)"
            )));
        }
    }
    Ok(SourceSpec::Udp(spec))
}

/// A UDP source: the backend reads the socket; the driver only says which.
#[derive(Debug)]
pub struct UdpDriver(pub UdpSpec);

impl SourceDriver for UdpDriver {
    fn socket(&self) -> Option<&UdpSpec> {
        Some(&self.0)
    }

    fn program(&self) -> Option<u16> {
        self.0.program
    }
}

/// A UDP source read by a task on the sources' runtime instead of by the shard (a source of a
/// failover list): each pass of datagrams (RTP unwrapped and its losses counted) is one
/// delivery to the inlet.
pub(super) fn start_task(
    spec: &UdpSpec,
    context: &super::SourceContext<'_>,
) -> super::inlet::TaskDriver {
    use super::inlet::Delivery;
    use crate::stream::StreamCounters;
    use shardcast_protocols::rtp::{unwrap, Datagram, Sequence};
    let spec = spec.clone();
    let (stream, counters) = (context.stream.to_owned(), context.counters.clone());
    super::inlet::TaskDriver::start(context, spec.program, move |inlet| async move {
        let socket = match UdpIngest::open(&spec, |w| tracing::warn!(stream = %stream, "{w}")) {
            Ok(socket) => socket,
            Err(e) => {
                tracing::error!(stream = %stream, addr = %spec.addr, "cannot open the ingest socket: {e}");
                if let Ok(mut last) = counters.source_error.lock() {
                    *last = Some(format!("cannot open udp://{}: {e}", spec.addr));
                }
                return;
            }
        };
        let Ok((socket, mut reader)) = socket.into_tokio() else {
            return;
        };
        let mut buffers = DatagramBuffers::default();
        let mut rtp = Sequence::new();
        let mut batch = bytes::BytesMut::new();
        loop {
            if socket.readable().await.is_err() {
                return;
            }
            // Everything waiting is read (until a call finds less than a batch): tokio is then
            // told the socket is drained.
            let fd = socket.as_fd();
            let mut pass = Ok(ReadPass::default());
            let _ = socket.try_io(tokio::io::Interest::READABLE, || {
                pass = reader.read_all(fd, &mut buffers, |datagram| {
                    let payload = match unwrap(datagram) {
                        Datagram::Raw(raw) => raw,
                        Datagram::Rtp { sequence, payload } => {
                            let arrival = rtp.arrived(sequence);
                            StreamCounters::add(&counters.rtp_lost, u64::from(arrival.missing));
                            StreamCounters::add(&counters.rtp_late, u64::from(arrival.late));
                            StreamCounters::add(&counters.rtp_datagrams, 1);
                            payload
                        }
                    };
                    batch.extend_from_slice(payload);
                });
                Err::<(), _>(io::ErrorKind::WouldBlock.into())
            });
            match pass {
                Ok(pass) if pass.kernel_drops > 0 => {
                    StreamCounters::add(&counters.kernel_drops, pass.kernel_drops)
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(stream = %stream, "when reading the ingest socket: {e}"),
            }
            if !batch.is_empty() {
                let received = crate::sys::unix_ns();
                inlet
                    .deliver(Delivery::Bytes(batch.split().freeze(), received))
                    .await;
            }
            // Datagrams come one by one: gather a few milliseconds of them per delivery.
            super::inlet::pace(0).await;
        }
    })
}

/// Largest datagram read (a jumbo frame's worth of TS, and then some).
const MAX_DATAGRAM: usize = 65_536;

/// An open UDP ingest socket.
#[derive(Debug)]
pub struct UdpIngest {
    socket: mio::net::UdpSocket,
    reader: Reader,
}

/// What reading a socket's datagrams keeps besides the socket: the kernel's drop count as
/// last seen.
#[derive(Debug)]
struct Reader {
    drops_seen: u32,
}

/// Room for a batch of datagrams ([`crate::sys::DATAGRAM_BATCH`] of up to [`MAX_DATAGRAM`]
/// bytes each, 1 MiB of address space of which only what datagrams touch is ever resident),
/// shared by the sockets one thread reads. Taken on first use: the default holds none.
#[derive(Debug, Default)]
pub struct DatagramBuffers(Vec<u8>);

impl DatagramBuffers {
    fn slots(&mut self) -> &mut [u8] {
        if self.0.is_empty() {
            self.0 = vec![0; crate::sys::DATAGRAM_BATCH * MAX_DATAGRAM];
        }
        &mut self.0
    }
}

/// What one read pass found.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadPass {
    /// Datagrams read.
    pub datagrams: u64,
    /// Datagrams the kernel dropped since the previous pass (socket buffer full).
    pub kernel_drops: u64,
}

impl UdpIngest {
    /// Open and join. Warnings worth a log line (a clamped buffer) go to `warn`.
    pub fn open(spec: &UdpSpec, mut warn: impl FnMut(String)) -> io::Result<Self> {
        let socket = Socket::new(
            Domain::for_address(spec.addr),
            Type::DGRAM,
            Some(Protocol::UDP),
        )?;
        socket.set_reuse_address(true)?;
        socket.set_recv_buffer_size(spec.rcvbuf)?;
        // Linux reports twice what it granted (bookkeeping overhead included).
        let granted = socket.recv_buffer_size()? / 2;
        if granted < spec.rcvbuf {
            warn(format!(
                "receive buffer for {} clamped to {granted} bytes (asked {}): raise net.core.rmem_max",
                spec.addr, spec.rcvbuf
            ));
        }
        match spec.addr.ip() {
            IpAddr::V6(group) if group.is_multicast() => {
                socket.set_only_v6(true)?;
                join_v6(&socket, spec, group)?;
            }
            IpAddr::V6(_) => {
                socket.set_only_v6(true)?;
                socket.bind(&spec.addr.into())?;
            }
            IpAddr::V4(group) if group.is_multicast() => join_v4(&socket, spec, group)?,
            IpAddr::V4(_) => socket.bind(&spec.addr.into())?,
        }
        setsockopt(&socket, sockopt::RxqOvfl, &1).map_err(io::Error::from)?;
        socket.set_nonblocking(true)?;
        Ok(Self::from_socket(socket.into()))
    }

    fn from_socket(std_socket: std::net::UdpSocket) -> Self {
        Self {
            socket: mio::net::UdpSocket::from_std(std_socket),
            reader: Reader { drops_seen: 0 },
        }
    }

    /// A socket opened before (by this process, or by the one an upgrade took over from),
    /// bound and joined as it was.
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> io::Result<Self> {
        let socket = std::net::UdpSocket::from(fd);
        socket.set_nonblocking(true)?;
        Ok(Self::from_socket(socket))
    }

    /// A copy of the socket's descriptor (kept for an upgrade).
    pub fn try_clone_fd(&self) -> io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        self.socket.as_fd().try_clone_to_owned()
    }

    /// The socket for a tokio runtime, and what reads it.
    fn into_tokio(self) -> io::Result<(tokio::net::UdpSocket, Reader)> {
        let std_socket = std::net::UdpSocket::from(std::os::fd::OwnedFd::from(self.socket));
        Ok((tokio::net::UdpSocket::from_std(std_socket)?, self.reader))
    }

    /// Bytes of datagrams its receive buffer holds (what the kernel granted; a datagram
    /// takes about twice its size of it).
    pub fn receive_buffer(&self) -> usize {
        socket2::SockRef::from(&self.socket)
            .recv_buffer_size()
            .map_or(0, |b| b / 2)
    }

    /// The socket, to register with the shard's poller.
    pub fn socket(&mut self) -> &mut mio::net::UdpSocket {
        &mut self.socket
    }

    /// The kernel's drops since last seen, given its count `total` (SO_RXQ_OVFL) read some
    /// other way than [`UdpIngest::read_all`] (io_uring's receives).
    pub fn drops_until(&mut self, total: u32) -> u64 {
        self.reader.drops_until(total)
    }

    /// Read every datagram waiting into `buffers`, a batch a call, handing each to `datagram`.
    pub fn read_all(
        &mut self,
        buffers: &mut DatagramBuffers,
        datagram: impl FnMut(&[u8]),
    ) -> io::Result<ReadPass> {
        self.reader.read_all(self.socket.as_fd(), buffers, datagram)
    }
}

impl Reader {
    /// The drops since last seen, given the kernel's count `total`.
    fn drops_until(&mut self, total: u32) -> u64 {
        let drops = total.wrapping_sub(self.drops_seen);
        self.drops_seen = total;
        u64::from(drops)
    }

    /// Read every datagram waiting on `socket` into `buffers`, a batch a call, handing each to
    /// `datagram`: until a call finds fewer than a batch waiting (the socket is empty then).
    fn read_all(
        &mut self,
        socket: std::os::fd::BorrowedFd<'_>,
        buffers: &mut DatagramBuffers,
        mut datagram: impl FnMut(&[u8]),
    ) -> io::Result<ReadPass> {
        use crate::sys::{receive_datagrams, DATAGRAM_BATCH};
        let mut pass = ReadPass::default();
        loop {
            let slots = buffers.slots();
            let got = match receive_datagrams(socket, slots, MAX_DATAGRAM) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if let Some(total) = got.kernel_drops {
                pass.kernel_drops += self.drops_until(total);
            }
            for (slot, &len) in slots.chunks_exact(MAX_DATAGRAM).zip(&got.lens[..got.count]) {
                datagram(&slot[..len]);
            }
            pass.datagrams += got.count as u64;
            if got.count < DATAGRAM_BATCH {
                break;
            }
        }
        Ok(pass)
    }
}

/// Bind to IPv4 `group` and join it, any-source or source-specific.
fn join_v4(socket: &Socket, spec: &UdpSpec, group: Ipv4Addr) -> io::Result<()> {
    // Receive this group only, not every group another socket on the host joined.
    socket.set_multicast_all_v4(false)?;
    socket.bind(&SocketAddrV4::new(group, spec.addr.port()).into())?;
    let iface = resolve_interface(spec.iface.as_deref())?;
    match spec.source {
        Some(IpAddr::V4(source)) => {
            let addr = match iface {
                Interface::Address(a) => a,
                Interface::Index(_, a) => a,
                Interface::Any => Ipv4Addr::UNSPECIFIED,
            };
            socket.join_ssm_v4(&source, &group, &addr)
        }
        Some(IpAddr::V6(_)) => Err(io::Error::other("an IPv6 source for an IPv4 group")),
        None => {
            let iface = match iface {
                Interface::Address(a) => InterfaceIndexOrAddress::Address(a),
                Interface::Index(i, _) => InterfaceIndexOrAddress::Index(i),
                Interface::Any => InterfaceIndexOrAddress::Address(Ipv4Addr::UNSPECIFIED),
            };
            socket.join_multicast_v4_n(&group, &iface)
        }
    }
}

fn join_v6(socket: &Socket, spec: &UdpSpec, group: Ipv6Addr) -> io::Result<()> {
    // Receive this group only, not every group another socket on the host joined.
    socket.set_multicast_all_v6(false)?;
    socket.bind(&SocketAddrV6::new(group, spec.addr.port(), 0, 0).into())?;
    let index = match spec.iface.as_deref() {
        None => 0,
        Some(iface) => interface_index(iface)?,
    };
    match spec.source {
        Some(IpAddr::V6(source)) => crate::sys::join_source_group_v6(socket, index, group, source),
        Some(IpAddr::V4(_)) => Err(io::Error::other("an IPv4 source for an IPv6 group")),
        None => socket.join_multicast_v6(&group, index),
    }
}

/// An interface's index, given as an index or a name (for IPv6 groups).
pub(crate) fn interface_index(iface: &str) -> io::Result<u32> {
    match iface.parse::<u32>() {
        Ok(index) => Ok(index),
        Err(_) => nix::net::if_::if_nametoindex(iface).map_err(|e| {
            io::Error::new(io::ErrorKind::NotFound, format!("interface {iface}: {e}"))
        }),
    }
}

/// An interface's IPv4 address, given as the address or the interface's name (for IPv4
/// groups sent to).
pub(crate) fn interface_v4(iface: &str) -> io::Result<Ipv4Addr> {
    match resolve_interface(Some(iface))? {
        Interface::Address(addr) => Ok(addr),
        Interface::Index(_, addr) if !addr.is_unspecified() => Ok(addr),
        _ => Err(io::Error::other(format!(
            "interface {iface} has no IPv4 address"
        ))),
    }
}

enum Interface {
    Any,
    Address(Ipv4Addr),
    Index(u32, Ipv4Addr),
}

/// An interface given by address or by name (the name also gives its first IPv4 address,
/// which source-specific joins need).
fn resolve_interface(iface: Option<&str>) -> io::Result<Interface> {
    let Some(iface) = iface else {
        return Ok(Interface::Any);
    };
    if let Ok(addr) = iface.parse::<Ipv4Addr>() {
        return Ok(Interface::Address(addr));
    }
    let index = nix::net::if_::if_nametoindex(iface)
        .map_err(|e| io::Error::new(io::ErrorKind::NotFound, format!("interface {iface}: {e}")))?;
    let addr = nix::ifaddrs::getifaddrs()
        .map_err(io::Error::from)?
        .filter(|a| a.interface_name == iface)
        .find_map(|a| a.address.and_then(|s| s.as_sockaddr_in().map(|s| s.ip())))
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    Ok(Interface::Index(index, addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(rcvbuf: usize) -> (UdpIngest, std::net::UdpSocket) {
        let spec = UdpSpec {
            addr: "127.0.0.1:0".parse().expect("an address"),
            source: None,
            iface: None,
            program: None,
            rcvbuf,
        };
        let mut ingest = UdpIngest::open(&spec, |_| {}).expect("the ingest socket");
        let to = ingest.socket().local_addr().expect("its address");
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("a sender");
        sender.connect(to).expect("connected");
        (ingest, sender)
    }

    #[test]
    fn every_datagram_waiting_is_read_whole_and_in_order_over_several_batches() {
        let (mut ingest, sender) = open(DEFAULT_RCVBUF);
        // Over two batches and a part, the largest datagram IPv4 carries among them.
        let sizes: Vec<usize> = (0..40)
            .map(|i| match i {
                7 => 65_507,
                _ => 1 + i * 97,
            })
            .collect();
        for (i, &size) in sizes.iter().enumerate() {
            let datagram: Vec<u8> = (0..size).map(|b| (b + i) as u8).collect();
            sender.send(&datagram).expect("sent");
        }
        let mut buffers = DatagramBuffers::default();
        let mut got = Vec::new();
        let pass = ingest
            .read_all(&mut buffers, |d| got.push(d.to_vec()))
            .expect("read");
        assert_eq!(pass.datagrams, 40);
        assert_eq!(pass.kernel_drops, 0);
        for (i, (d, &size)) in got.iter().zip(&sizes).enumerate() {
            assert_eq!(d.len(), size, "datagram {i}");
            assert!(d.iter().enumerate().all(|(b, &v)| v == (b + i) as u8));
        }
        // Nothing more waits: a second pass reads nothing.
        let again = ingest.read_all(&mut buffers, |_| {}).expect("read");
        assert_eq!(again.datagrams, 0);
    }

    #[test]
    fn what_the_kernel_dropped_for_a_full_buffer_is_counted() {
        let (mut ingest, sender) = open(4096);
        let datagram = [0x47u8; 1316];
        for _ in 0..200 {
            sender.send(&datagram).expect("sent");
        }
        let mut buffers = DatagramBuffers::default();
        let first = ingest.read_all(&mut buffers, |_| {}).expect("read");
        // A datagram carries the drop count as it was when it was queued: those queued before
        // the drops say none, the next one after them says how many.
        sender.send(&datagram).expect("sent");
        let next = ingest.read_all(&mut buffers, |_| {}).expect("read");
        assert!(first.datagrams < 200, "{first:?}");
        assert_eq!(next.datagrams, 1);
        assert_eq!(
            first.datagrams + first.kernel_drops + next.kernel_drops,
            200,
            "{first:?} {next:?}"
        );
    }
}
