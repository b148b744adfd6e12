//! The few system facts and calls the engine needs beyond its libraries: CPU affinity, the
//! wall clock, sealed memfds and `sendfile(2)` for HLS segments, a batch of datagrams per
//! system call for UDP ingest, and a child process that dies with the server.
//!
//! All of it goes through nix's safe wrappers but these: the hook run in a forked child before
//! it executes its program ([`die_with_server`]), the real-time policy for the thread that
//! paces UDP pushes ([`run_realtime`]), `recvmmsg(2)` into buffers kept from call to
//! call ([`receive_datagrams`]), two socket options nix does not wrap:
//! `SO_RCVLOWAT` ([`set_receive_low_water`]) and IPv6 source-specific multicast
//! ([`join_source_group_v6`]), the read-only mapping of a sealed segment memfd that TLS
//! encrypts from ([`SealedMapping`]), and taking ownership of descriptors another process
//! gave this one (the upgrade channel inherited as standard input, and descriptors received
//! over it: [`take_inherited_fd`], [`receive_with_fds`]). SRT's binding to libsrt, opened at
//! run time, is [`srt`]. The io_uring backend's `unsafe` lives in its own module, not here.

pub mod srt;

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// The CPUs this process may run on.
pub fn available_cpus() -> Vec<usize> {
    match sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect(),
        Err(_) => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

/// Pin the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> nix::Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)?;
    sched_setaffinity(Pid::from_raw(0), &set)
}

/// Raise the soft limit on open files to the hard limit (a server holds a descriptor per
/// viewer); returns the limit now in force.
pub fn raise_file_limit() -> nix::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard.max(soft))
}

/// Have the child `command` starts killed (SIGKILL) if the thread that started it ends,
/// which is how it goes when the server is killed without a chance to stop its children.
#[allow(unsafe_code)]
pub fn die_with_server(command: &mut tokio::process::Command) {
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: it makes one `prctl(2)` system call (through nix,
    // which allocates nothing for it) and returns; it touches no lock, no allocator and no
    // state of the parent, on every path.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
}

/// Wall clock in UNIX nanoseconds.
pub fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A sealed in-memory file holding `data`: written once, then sealed against writes, growing
/// and shrinking, so every later `sendfile` reads exactly these bytes.
pub fn sealed_memfd(name: &str, data: &[u8]) -> std::io::Result<std::os::fd::OwnedFd> {
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let cname = std::ffi::CString::new(name).map_err(std::io::Error::other)?;
    let fd = memfd_create(
        &cname,
        MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
    )?;
    let mut file = std::fs::File::from(fd);
    file.write_all(data)?;
    fcntl(
        file.as_raw_fd(),
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_SHRINK
                | SealFlag::F_SEAL_GROW
                | SealFlag::F_SEAL_WRITE
                | SealFlag::F_SEAL_SEAL,
        ),
    )?;
    Ok(file.into())
}

/// A sealed memfd mapped read-only: its bytes, for what cannot `sendfile` (TLS encrypts from
/// them), with no copy.
#[derive(Debug)]
pub struct SealedMapping {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is read-only and its bytes never change (see `SealedMapping::map`); it
// is plain memory that any thread may read and unmap.
#[allow(unsafe_code)]
unsafe impl Send for SealedMapping {}
// SAFETY: as above: shared reads of memory nobody writes.
#[allow(unsafe_code)]
unsafe impl Sync for SealedMapping {}

impl SealedMapping {
    /// Map the first `len` bytes of `fd`, a memfd made by [`sealed_memfd`] (sealed against
    /// writing, shrinking and growing, `len` its length).
    #[allow(unsafe_code)]
    pub fn map(fd: std::os::fd::BorrowedFd<'_>, len: usize) -> std::io::Result<SealedMapping> {
        use std::os::fd::AsRawFd;
        if len == 0 {
            return Ok(SealedMapping {
                ptr: std::ptr::NonNull::dangling(),
                len: 0,
            });
        }
        let seals = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GET_SEALS)?;
        let needed = libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK;
        if seals & needed != needed {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the memfd is not sealed against writing and shrinking",
            ));
        }
        // SAFETY: a new private read-only mapping of a descriptor we borrow; the kernel picks
        // the address, and nothing else refers to it until it is returned below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        match std::ptr::NonNull::new(ptr.cast::<u8>()) {
            Some(ptr) => Ok(SealedMapping { ptr, len }),
            None => Err(std::io::Error::other("mmap returned a null mapping")),
        }
    }
}

impl std::ops::Deref for SealedMapping {
    type Target = [u8];

    #[allow(unsafe_code)]
    fn deref(&self) -> &[u8] {
        // SAFETY: `len` readable bytes at `ptr` for as long as the mapping lives (it is
        // unmapped only in drop); the memfd's seals (checked in `map`) mean no one can write
        // them and the file cannot shrink under the mapping (no SIGBUS): the slice is
        // immutable memory, as `&[u8]` requires. An empty mapping is a dangling, aligned
        // pointer with length 0, which a slice allows.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for SealedMapping {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: the mapping made in `map`, unmapped once; no slice of it outlives
            // `self` (Deref borrows self).
            unsafe {
                libc::munmap(self.ptr.as_ptr().cast(), self.len);
            }
        }
    }
}

/// Datagrams taken at most by one [`receive_datagrams`].
pub const DATAGRAM_BATCH: usize = 16;

/// What one [`receive_datagrams`] took.
#[derive(Clone, Copy, Debug)]
pub struct DatagramsReceived {
    /// Datagrams taken; datagram `i` is in slot `i`.
    pub count: usize,
    /// Each datagram's length.
    pub lens: [usize; DATAGRAM_BATCH],
    /// The socket's drop count (`SO_RXQ_OVFL`) as the last datagram carried it, if enabled.
    pub kernel_drops: Option<u32>,
}

/// Take up to [`DATAGRAM_BATCH`] datagrams waiting on the non-blocking UDP `socket` with one
/// `recvmmsg(2)` (which nix wraps only with per-call allocations), into `buffers` cut into
/// slots of `slot` bytes. A slot must hold the largest datagram: one longer is cut short and
/// refused as an error. Nothing waiting gives `WouldBlock`.
#[allow(unsafe_code)]
pub fn receive_datagrams(
    socket: std::os::fd::BorrowedFd<'_>,
    buffers: &mut [u8],
    slot: usize,
) -> std::io::Result<DatagramsReceived> {
    use std::os::fd::AsRawFd;
    /// Control data for one `u32` (`CMSG_SPACE(4)`: a 16-byte header and 8 of data), as u64s
    /// for the header's alignment.
    type Control = [u64; 3];
    let slot = slot.max(1);
    let slots = (buffers.len() / slot).min(DATAGRAM_BATCH);
    let mut received = DatagramsReceived {
        count: 0,
        lens: [0; DATAGRAM_BATCH],
        kernel_drops: None,
    };
    if slots == 0 {
        return Ok(received);
    }
    let mut iovs = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; DATAGRAM_BATCH];
    for (iov, buffer) in iovs.iter_mut().zip(buffers.chunks_exact_mut(slot)) {
        iov.iov_base = buffer.as_mut_ptr().cast();
        iov.iov_len = slot;
    }
    let mut controls: [Control; DATAGRAM_BATCH] = [[0; 3]; DATAGRAM_BATCH];
    // SAFETY: mmsghdr is plain data; all-zero is a valid value (null pointers, zero lengths).
    let mut headers: [libc::mmsghdr; DATAGRAM_BATCH] = unsafe { std::mem::zeroed() };
    for ((header, iov), control) in headers.iter_mut().zip(&mut iovs).zip(&mut controls) {
        header.msg_hdr.msg_iov = iov;
        header.msg_hdr.msg_iovlen = 1;
        header.msg_hdr.msg_control = control.as_mut_ptr().cast();
        header.msg_hdr.msg_controllen = std::mem::size_of::<Control>();
    }
    // SAFETY: the descriptor is borrowed, so open for the call. The first `slots` headers
    // point to iovecs and control buffers on this stack frame and the iovecs to disjoint
    // `slot`-byte ranges of `buffers`, which is borrowed mutably for the call; every length
    // given is the exact size of what it describes. MSG_DONTWAIT and a null timeout make the
    // call return at once, and no path keeps a pointer past it.
    let taken = unsafe {
        libc::recvmmsg(
            socket.as_raw_fd(),
            headers.as_mut_ptr(),
            slots as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    let Ok(taken) = usize::try_from(taken) else {
        return Err(std::io::Error::last_os_error());
    };
    for (i, header) in headers.iter().enumerate().take(taken.min(slots)) {
        if header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            return Err(std::io::Error::other(format!(
                "a datagram over {slot} bytes was cut short"
            )));
        }
        received.lens[i] = header.msg_len as usize;
        // SAFETY: the kernel set msg_controllen to the control data it wrote into this
        // header's buffer, which is still alive and unmoved; CMSG_FIRSTHDR and CMSG_NXTHDR
        // stay within it and return null past its end, and a SO_RXQ_OVFL message carries a
        // u32, read unaligned.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&header.msg_hdr);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET
                    && (*cmsg).cmsg_type == libc::SO_RXQ_OVFL
                    && (*cmsg).cmsg_len as usize >= libc::CMSG_LEN(4) as usize
                {
                    received.kernel_drops = Some(std::ptr::read_unaligned(
                        libc::CMSG_DATA(cmsg).cast::<u32>(),
                    ));
                }
                cmsg = libc::CMSG_NXTHDR(&header.msg_hdr, cmsg);
            }
        }
        received.count = i + 1;
    }
    Ok(received)
}

/// `SO_RCVLOWAT`: a TCP socket is reported readable (and its reader woken) only once `bytes`
/// are queued, so a sender's small writes are read together.
#[allow(unsafe_code)]
pub fn set_receive_low_water(
    socket: std::os::fd::BorrowedFd<'_>,
    bytes: usize,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(bytes.max(1)).unwrap_or(libc::c_int::MAX);
    // SAFETY: the descriptor is borrowed, so open for the call; the option value points to a
    // c_int on this stack frame with its exact size given, and the kernel only reads it. No
    // path keeps the pointer.
    let done = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `MCAST_JOIN_SOURCE_GROUP` for IPv6: receive `group` from `source` only, on interface
/// `index` (0: the kernel's choice), which neither socket2 nor nix wraps.
#[allow(unsafe_code)]
pub fn join_source_group_v6(
    socket: &impl std::os::fd::AsFd,
    index: u32,
    group: std::net::Ipv6Addr,
    source: std::net::Ipv6Addr,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let storage = |addr: std::net::Ipv6Addr| {
        let v6: nix::sys::socket::SockaddrIn6 = std::net::SocketAddrV6::new(addr, 0, 0, 0).into();
        // SAFETY: sockaddr_storage is plain data; all-zero is a valid (unspecified) value.
        let mut s: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6; the copy
        // writes exactly one sockaddr_in6 at its start and reads a valid one.
        unsafe {
            std::ptr::write(
                (&mut s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>(),
                *v6.as_ref(),
            );
        }
        s
    };
    let request = libc::group_source_req {
        gsr_interface: index,
        gsr_group: storage(group),
        gsr_source: storage(source),
    };
    // SAFETY: the descriptor is borrowed, so open for the call; the option value points to a
    // group_source_req on this stack frame with its exact size given, and the kernel only
    // reads it. No path keeps the pointer.
    let done = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::MCAST_JOIN_SOURCE_GROUP,
            (&request as *const libc::group_source_req).cast(),
            std::mem::size_of::<libc::group_source_req>() as libc::socklen_t,
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `sendfile(2)` of up to `len` bytes of `file` from `offset` to `socket` (non-blocking: a full
/// socket gives `WouldBlock`).
pub fn send_file(
    socket: std::os::fd::BorrowedFd<'_>,
    file: std::os::fd::BorrowedFd<'_>,
    offset: u64,
    len: usize,
) -> std::io::Result<usize> {
    let mut off = libc::off_t::try_from(offset).map_err(std::io::Error::other)?;
    loop {
        match nix::sys::sendfile::sendfile(socket, file, Some(&mut off), len) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => return other.map_err(std::io::Error::from),
        }
    }
}

/// `sendmsg(2)` of `slices` with `MSG_MORE` (non-blocking: a full socket gives
/// `WouldBlock`): what is sent waits in the socket for what the caller sends next (a
/// response's body after its head) and leaves in the same packets, not a small one of its own.
pub fn send_more(
    socket: std::os::fd::BorrowedFd<'_>,
    slices: &[std::io::IoSlice<'_>],
) -> std::io::Result<usize> {
    use nix::sys::socket::{sendmsg, MsgFlags};
    use std::os::fd::AsRawFd;
    // nix names no MSG_MORE.
    let flags =
        MsgFlags::from_bits_retain(libc::MSG_MORE | libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
    loop {
        match sendmsg::<()>(socket.as_raw_fd(), slices, &[], flags, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => return other.map_err(std::io::Error::from),
        }
    }
}

/// A connected pair of `SOCK_SEQPACKET` Unix sockets (close-on-exec): the upgrade channel.
pub fn seqpacket_pair() -> std::io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    Ok(socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?)
}

static INHERITED_TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Take ownership of descriptor `fd`, which this process's parent passed to it (the upgrade
/// channel), once: a second call, or a descriptor that is not open or not a socket, gives
/// `None`.
#[allow(unsafe_code)]
pub fn take_inherited_fd(fd: std::os::fd::RawFd) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    if INHERITED_TAKEN.swap(true, std::sync::atomic::Ordering::AcqRel) {
        return None;
    }
    let stat = nix::sys::stat::fstat(fd).ok()?;
    if stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return None;
    }
    let _ = nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    // SAFETY: `fd` is open (fstat succeeded) and is a socket the parent handed over for this
    // purpose; the guard above makes this the only `OwnedFd` ever made of it, and nothing in
    // this process uses descriptor `fd` otherwise (it is standard input, which the server
    // never reads).
    Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Send `bytes` as one message on a `SOCK_SEQPACKET` socket, with descriptors `fds` beside.
pub fn send_with_fds(
    socket: std::os::fd::BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[std::os::fd::RawFd],
) -> std::io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    use std::os::fd::AsRawFd;
    let iov = [std::io::IoSlice::new(bytes)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
    let sent = sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    if sent != bytes.len() {
        return Err(std::io::Error::other("a message was cut short"));
    }
    Ok(())
}

/// The next message on a `SOCK_SEQPACKET` socket (at most `max` bytes) and the descriptors
/// beside it (at most 253, the kernel's limit), waiting up to `timeout`: `None` when nothing
/// came in time, an empty message when the peer has gone.
#[allow(unsafe_code)]
pub fn receive_with_fds(
    socket: std::os::fd::BorrowedFd<'_>,
    max: usize,
    timeout: std::time::Duration,
) -> std::io::Result<Option<(Vec<u8>, Vec<std::os::fd::OwnedFd>)>> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut fds = [PollFd::new(socket, PollFlags::POLLIN)];
    let ms = PollTimeout::try_from(timeout.as_millis().min(i32::MAX as u128) as i32)
        .unwrap_or(PollTimeout::MAX);
    if poll(&mut fds, ms)? == 0 {
        return Ok(None);
    }
    let mut buf = vec![0u8; max];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 253]);
    let (len, received) = {
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let mut received = Vec::new();
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                received.extend(raw);
            }
        }
        (msg.bytes, received)
    };
    let owned = received
        .into_iter()
        // SAFETY: descriptors received with SCM_RIGHTS are new entries of this process's
        // table that the kernel made for this message; nothing else refers to them.
        .map(|fd| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
        .collect();
    buf.truncate(len);
    Ok(Some((buf, owned)))
}

/// Move the calling thread to the real-time scheduling policy `SCHED_FIFO` at `priority` (1 is
/// the lowest), so that it runs as soon as it wakes, ahead of every thread that only computes,
/// however busy the machine; children it would start go back to the normal policy
/// (`SCHED_RESET_ON_FORK`). Allowed to root, to a process with `CAP_SYS_NICE`, or up to the
/// process's `RLIMIT_RTPRIO` (systemd's `LimitRTPRIO=`); refused with `EPERM` otherwise. The
/// kernel still keeps a share of every second for normal threads (`sched_rt_runtime_us`).
#[allow(unsafe_code)]
pub fn run_realtime(priority: u8) -> std::io::Result<()> {
    let param = libc::sched_param {
        sched_priority: i32::from(priority),
    };
    // SAFETY: `param` is an initialised `sched_param`, alive for the call, which only reads
    // it; pid 0 is the calling thread. Nothing stays borrowed after the call returns.
    let done = unsafe {
        libc::sched_setscheduler(0, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &param)
    };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
