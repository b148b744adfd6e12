//! Taps: a stream's chunks for what sends it on (re-emission, pushes to other servers), taken
//! off the shards.
//!
//! The home shard offers each chunk it publishes to every tap of the stream; a tap is a
//! bounded lock-free queue (in chunks and in bytes) and a way to wake its reader. Offering
//! never blocks: a tap that is full drops the chunk (counted), and its reader, seeing the gap
//! in sequence numbers ([`Follow`]), resumes at the next access point. What reads a tap never
//! slows ingest or viewers.

use super::Chunk;
use arc_swap::ArcSwap;
use crossbeam_queue::ArrayQueue;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Chunks one tap holds at most.
pub const TAP_CHUNKS: usize = 8192;
/// Bytes one tap holds at most.
pub const TAP_BYTES: usize = 16 << 20;

/// The taps of a running stream, as its home shard reads them.
#[derive(Debug, Default)]
pub struct TapSet {
    taps: ArcSwap<Vec<Arc<Tap>>>,
    ended: std::sync::atomic::AtomicBool,
}

impl TapSet {
    /// The taps now.
    pub fn load(&self) -> arc_swap::Guard<Arc<Vec<Arc<Tap>>>> {
        self.taps.load()
    }

    /// Attach `tap`.
    pub fn attach(&self, tap: &Arc<Tap>) {
        self.taps.rcu(|list| {
            let mut list = Vec::clone(list);
            list.push(tap.clone());
            list
        });
    }

    /// Detach `tap`.
    pub fn detach(&self, tap: &Arc<Tap>) {
        self.taps.rcu(|list| {
            list.iter()
                .filter(|t| !Arc::ptr_eq(t, tap))
                .cloned()
                .collect::<Vec<_>>()
        });
    }

    /// The stream ended: nothing is attached any more.
    pub fn end(&self) {
        self.ended.store(true, Ordering::SeqCst);
    }

    /// Whether the stream ended.
    pub fn ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }
}

/// How a tap's reader is woken.
#[derive(Debug)]
pub enum TapWake {
    /// A thread that parks while it has nothing to do.
    Thread(std::thread::Thread),
    /// A task that waits on a notification.
    Task(Arc<tokio::sync::Notify>),
}

/// One reader's queue of a stream's chunks (see the module docs).
#[derive(Debug)]
pub struct Tap {
    queue: ArrayQueue<Chunk>,
    bytes: AtomicUsize,
    max_bytes: usize,
    dropped: AtomicU64,
    wake: TapWake,
}

impl Tap {
    /// A tap of at most `chunks` chunks and `max_bytes` bytes, whose reader `wake` wakes.
    pub fn new(chunks: usize, max_bytes: usize, wake: TapWake) -> Self {
        Self {
            queue: ArrayQueue::new(chunks.max(1)),
            bytes: AtomicUsize::new(0),
            max_bytes,
            dropped: AtomicU64::new(0),
            wake,
        }
    }

    /// Offer a chunk (from the home shard): queued, or dropped and counted when the tap is
    /// full. The reader is woken when the tap was empty.
    pub fn offer(&self, chunk: &Chunk) {
        let len = chunk.data.len();
        let was_empty = self.queue.is_empty();
        if self.bytes.load(Ordering::Relaxed) + len > self.max_bytes
            || self.queue.push(chunk.clone()).is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            self.bytes.fetch_add(len, Ordering::Relaxed);
        }
        if was_empty {
            self.wake();
        }
    }

    /// Wake the reader.
    pub fn wake(&self) {
        match &self.wake {
            TapWake::Thread(thread) => thread.unpark(),
            TapWake::Task(notify) => notify.notify_one(),
        }
    }

    /// The oldest chunk queued.
    pub fn take(&self) -> Option<Chunk> {
        let chunk = self.queue.pop()?;
        self.bytes.fetch_sub(chunk.data.len(), Ordering::Relaxed);
        Some(chunk)
    }

    /// Chunks dropped because the tap was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Bytes queued.
    pub fn queued_bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// What a tap's reader makes of the chunks it takes: it starts at an access point, and after
/// a gap (chunks the tap dropped) waits for the next one.
#[derive(Clone, Debug, Default)]
pub struct Follow {
    next_seq: Option<u64>,
}

impl Follow {
    /// Whether `chunk` is to be sent on; `Restart` when it begins again after a gap (or at
    /// the start).
    pub fn accept(&mut self, chunk: &Chunk) -> Accept {
        match self.next_seq {
            Some(next) if next == chunk.seq => {
                self.next_seq = Some(chunk.seq + 1);
                Accept::Next
            }
            _ if chunk.access_point => {
                self.next_seq = Some(chunk.seq + 1);
                Accept::Restart
            }
            _ => {
                self.next_seq = None;
                Accept::Skip
            }
        }
    }

    /// Start again at the next access point (a new connection).
    pub fn reset(&mut self) {
        self.next_seq = None;
    }
}

/// What [`Follow::accept`] says of a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accept {
    /// It follows the one before: send it.
    Next,
    /// An access point after a gap or at the start: send it, the stream begins again here.
    Restart,
    /// Not joined to what was sent, and no access point: leave it out.
    Skip,
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn chunk(seq: u64, access_point: bool, len: usize) -> Chunk {
        Chunk {
            seq,
            data: Bytes::from(vec![0x47; len]),
            access_point,
            received_ns: 0,
        }
    }

    #[test]
    fn a_full_tap_drops_and_its_reader_resumes_at_an_access_point() {
        let notify = Arc::new(tokio::sync::Notify::new());
        let tap = Tap::new(4, 1000, TapWake::Task(notify));
        for seq in 0..6 {
            tap.offer(&chunk(seq, seq == 0, 188));
        }
        // Bytes bound the tap first (5 * 188 > 1000), then chunks would.
        assert_eq!(tap.dropped(), 2);
        assert_eq!(tap.queued_bytes(), 4 * 188);
        let mut follow = Follow::default();
        let mut sent = Vec::new();
        while let Some(c) = tap.take() {
            if follow.accept(&c) != Accept::Skip {
                sent.push(c.seq);
            }
        }
        assert_eq!(sent, [0, 1, 2, 3]);
        assert_eq!(tap.queued_bytes(), 0);
        // After the gap (4 and 5 dropped): 6 is no access point, 7 is.
        assert_eq!(follow.accept(&chunk(6, false, 188)), Accept::Skip);
        assert_eq!(follow.accept(&chunk(7, true, 188)), Accept::Restart);
        assert_eq!(follow.accept(&chunk(8, false, 188)), Accept::Next);
    }

    #[test]
    fn taps_attach_and_detach() {
        let set = TapSet::default();
        let a = Arc::new(Tap::new(1, 1, TapWake::Thread(std::thread::current())));
        let b = Arc::new(Tap::new(1, 1, TapWake::Thread(std::thread::current())));
        set.attach(&a);
        set.attach(&b);
        set.detach(&a);
        assert_eq!(set.load().len(), 1);
        assert!(Arc::ptr_eq(&set.load()[0], &b));
    }
}
