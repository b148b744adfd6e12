//! UDP ingest on io_uring. A socket read promptly has one multishot `RECVMSG` into a ring of
//! provided buffers (`IORING_REGISTER_PBUF_RING`), so datagrams arrive with no syscall of
//! their own; the kernel's drop counter (SO_RXQ_OVFL) comes back in each message's control
//! data. A socket read on the shard's ingest tick ([`crate::shard::pace`]) has no receive
//! armed: the tick reads it with `recvmmsg`. Its buffer ring (2.5 MiB) is made when its receive
//! is armed and freed once the receive has ended for the tick, so a host of channels that only
//! HLS players watch holds none.
//!
//! The buffer ring's memory is registered with the kernel; it is unregistered before it is
//! freed ([`BufRing::release`]), and only after every operation that may use it has completed.

use crate::shard::pace::IngestPace;
use crate::source::UdpIngest;
use io_uring::{opcode, squeue, types, IoUring};
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU16, Ordering};

/// Buffers per ingest socket.
const ENTRIES: u16 = 256;
/// Bytes per buffer: the recvmsg header, the control data and a jumbo datagram.
const BUFFER: usize = 10 * 1024;
/// Size of one `struct io_uring_buf` in the ring.
const SLOT: usize = 16;

/// A provided-buffer ring: `entries` slots (a power of two) the kernel takes buffers from,
/// and the buffers, `size` bytes each.
pub(super) struct BufRing {
    ring: *mut u8,
    layout: Layout,
    buffers: Vec<u8>,
    entries: u16,
    size: usize,
    tail: u16,
    group: u16,
    registered: bool,
}

impl BufRing {
    /// An ingest socket's ring: `ENTRIES` buffers of `BUFFER` bytes, as buffer group `group`.
    pub(super) fn new(uring: &IoUring, group: u16) -> std::io::Result<Self> {
        Self::with_size(uring, group, ENTRIES, BUFFER)
    }

    /// Allocate `entries` buffers of `size` bytes, fill the ring with every one, and register
    /// it as buffer group `group`.
    pub(super) fn with_size(
        uring: &IoUring,
        group: u16,
        entries: u16,
        size: usize,
    ) -> std::io::Result<Self> {
        if !entries.is_power_of_two() || u32::try_from(size).is_err() {
            return Err(std::io::Error::other(
                "a buffer ring has a power of two of entries of at most 4 GiB",
            ));
        }
        let layout = Layout::from_size_align(usize::from(entries) * SLOT, 4096)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        // SAFETY: the layout has a non-zero size (entries is a power of two, so at least 1).
        let ring = unsafe { alloc_zeroed(layout) };
        if ring.is_null() {
            return Err(std::io::Error::other("cannot allocate the buffer ring"));
        }
        let mut r = BufRing {
            ring,
            layout,
            buffers: vec![0; usize::from(entries) * size],
            entries,
            size,
            tail: 0,
            group,
            registered: false,
        };
        for id in 0..entries {
            r.give_back(id);
        }
        r.publish();
        // SAFETY: `ring` holds `entries` slots, page aligned, and stays allocated until
        // `release` has unregistered it (Drop never frees a ring that is still registered).
        unsafe {
            uring
                .submitter()
                .register_buf_ring_with_flags(r.ring as u64, entries, group, 0)?
        };
        r.registered = true;
        Ok(r)
    }

    /// The buffer with id `id`.
    pub(super) fn buffer(&self, id: u16) -> &[u8] {
        let start = usize::from(id % self.entries) * self.size;
        &self.buffers[start..start + self.size]
    }

    /// Put buffer `id` back in the ring (visible to the kernel at the next `publish`).
    pub(super) fn give_back(&mut self, id: u16) {
        let id = id % self.entries;
        let slot = usize::from(self.tail & (self.entries - 1)) * SLOT;
        let addr = self.buffers.as_ptr() as u64 + (usize::from(id) * self.size) as u64;
        // SAFETY: `slot` is below entries * SLOT, inside the ring allocation; the fields of
        // `struct io_uring_buf` are addr (u64, offset 0), len (u32, 8) and bid (u16, 12). The
        // tail (u16, 14 of slot 0) is only written through `publish`. `size` fits in a u32
        // (checked in `with_size`).
        unsafe {
            self.ring.add(slot).cast::<u64>().write_unaligned(addr);
            self.ring
                .add(slot + 8)
                .cast::<u32>()
                .write_unaligned(self.size as u32);
            self.ring.add(slot + 12).cast::<u16>().write_unaligned(id);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Make the buffers given back visible to the kernel (release store of the tail).
    pub(super) fn publish(&self) {
        // SAFETY: offset 14 of the page-aligned ring is the u16 tail, naturally aligned; the
        // kernel only reads it, and this thread is its only writer.
        let tail = unsafe { AtomicU16::from_ptr(self.ring.add(14).cast::<u16>()) };
        tail.store(self.tail, Ordering::Release);
    }

    /// Unregister from the kernel: after this the memory may go.
    pub(super) fn release(&mut self, uring: &IoUring) {
        if self.registered && uring.submitter().unregister_buf_ring(self.group).is_ok() {
            self.registered = false;
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.registered {
            // Still registered (the ring could not be told): keep the ring and the buffers
            // the kernel may still write datagrams into, rather than free them under it.
            std::mem::forget(std::mem::take(&mut self.buffers));
            return;
        }
        // SAFETY: allocated in `new` with this layout, and no longer registered.
        unsafe { dealloc(self.ring, self.layout) };
    }
}

/// One UDP ingest socket on the ring.
pub(super) struct RingIngest {
    /// The home stream it feeds; `None` once the stream has gone and the receive is being
    /// cancelled.
    pub(super) home: Option<usize>,
    pub(super) socket: UdpIngest,
    /// The provided buffers, while its receive is armed (or ending).
    pub(super) buffers: Option<BufRing>,
    group: u16,
    /// Template for the multishot receive: only the name and control sizes matter.
    pub(super) msghdr: Box<libc::msghdr>,
    /// How the socket is read.
    pub(super) pace: IngestPace,
    /// A multishot receive is armed (its last completion has not come).
    pub(super) armed: bool,
    /// Its cancellation was asked for (the socket goes to the tick).
    pub(super) cancelling: bool,
    /// That its buffer ring could not be made was logged.
    pub(super) no_ring_logged: bool,
}

/// Room for one SO_RXQ_OVFL control message (cmsghdr + u32, aligned).
const CONTROL: usize = 24;

impl RingIngest {
    /// Socket `socket` of home stream `home`, opened at `now`, its buffers (when it has them)
    /// to be buffer group `group`.
    pub(super) fn new(home: usize, socket: UdpIngest, group: u16, now: std::time::Instant) -> Self {
        // SAFETY: msghdr is plain old data; all zeroes is a valid (empty) value.
        let mut msghdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        msghdr.msg_controllen = CONTROL as _;
        Self {
            home: Some(home),
            buffers: None,
            group,
            pace: IngestPace::new(socket.receive_buffer(), now),
            socket,
            msghdr,
            armed: false,
            cancelling: false,
            no_ring_logged: false,
        }
    }

    /// The multishot receive to submit (again, whenever a completion says it ended), its
    /// buffer ring made and registered first if it has none yet.
    pub(super) fn receive(
        &mut self,
        uring: &IoUring,
        user_data: u64,
    ) -> std::io::Result<squeue::Entry> {
        if self.buffers.is_none() {
            self.buffers = Some(BufRing::new(uring, self.group)?);
        }
        let fd = self.socket.socket().as_raw_fd();
        Ok(
            opcode::RecvMsgMulti::new(types::Fd(fd), &*self.msghdr, self.group)
                .build()
                .user_data(user_data),
        )
    }

    /// Put buffer `id` back (visible to the kernel at the next `publish`).
    pub(super) fn give_back(&mut self, id: u16) {
        if let Some(b) = self.buffers.as_mut() {
            b.give_back(id);
        }
    }

    /// Make the buffers given back visible to the kernel.
    pub(super) fn publish(&self) {
        if let Some(b) = self.buffers.as_ref() {
            b.publish();
        }
    }

    /// Unregister its buffer ring: after this the socket and its memory may go.
    pub(super) fn release(&mut self, uring: &IoUring) {
        if let Some(b) = self.buffers.as_mut() {
            b.release(uring);
        }
    }

    /// Free its buffer ring, its receive having ended for the tick (the kernel holds none of
    /// its buffers): made again when it is next armed. Kept if the kernel would not let it go.
    pub(super) fn shed_buffers(&mut self, uring: &IoUring) {
        if let Some(mut b) = self.buffers.take() {
            b.release(uring);
            if b.registered {
                self.buffers = Some(b);
            }
        }
    }

    /// The datagram in buffer `id` and the drops the kernel reported since the last one.
    pub(super) fn datagram(&mut self, id: u16) -> Result<(&[u8], u64), &'static str> {
        let buffers = self.buffers.as_ref().ok_or("no receive buffers")?;
        let msg = types::RecvMsgOut::parse(buffers.buffer(id), &self.msghdr)
            .map_err(|()| "malformed receive buffer")?;
        if msg.is_payload_truncated() {
            return Err("datagram larger than the receive buffer");
        }
        let drops = rxq_ovfl(msg.control_data()).map_or(0, |total| self.socket.drops_until(total));
        // The payload as a slice of the buffer itself (the parsed view borrows a local).
        let payload = msg.payload_data();
        let start = payload.as_ptr() as usize - buffers.buffer(id).as_ptr() as usize;
        let len = payload.len();
        Ok((&buffers.buffer(id)[start..start + len], drops))
    }
}

/// The SO_RXQ_OVFL counter in a control-message buffer (`struct cmsghdr`: len usize, level
/// i32, type i32, then the data).
fn rxq_ovfl(control: &[u8]) -> Option<u32> {
    let mut rest = control;
    while rest.len() >= 16 {
        let len = usize::from_ne_bytes(rest[..8].try_into().ok()?);
        let level = i32::from_ne_bytes(rest[8..12].try_into().ok()?);
        let kind = i32::from_ne_bytes(rest[12..16].try_into().ok()?);
        if level == libc::SOL_SOCKET && kind == libc::SO_RXQ_OVFL {
            return rest
                .get(16..20)
                .and_then(|d| d.try_into().ok())
                .map(u32::from_ne_bytes);
        }
        let step = len.max(16).next_multiple_of(8);
        rest = rest.get(step..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_drop_counter() {
        let mut c = Vec::new();
        c.extend_from_slice(&20usize.to_ne_bytes());
        c.extend_from_slice(&libc::SOL_SOCKET.to_ne_bytes());
        c.extend_from_slice(&libc::SO_RXQ_OVFL.to_ne_bytes());
        c.extend_from_slice(&7u32.to_ne_bytes());
        assert_eq!(rxq_ovfl(&c), Some(7));
        assert_eq!(rxq_ovfl(&c[..12]), None);
        assert_eq!(rxq_ovfl(&[]), None);
    }
}
