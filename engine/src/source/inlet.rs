//! Bytes a source's own task (a TCP connection today) hands to its stream's home shard: a
//! bounded queue, the shard's waker, and back-pressure on the task when the queue is full.
//!
//! The task waits while the queue is full, so a sender faster than the shard drains is
//! slowed by TCP's own flow control, not buffered without end. The shard is woken once per
//! batch, not once per read: the task wakes it only when the shard has taken everything it
//! was last woken for. A stream that arrives in small writes is read in larger pieces: TCP by
//! the kernel's low-water mark (`source/tcp.rs`), pipes and HTTP bodies by [`pace`].

use super::{SourceContext, SourceDriver};
use crate::wake::Wake;
use bytes::Bytes;
use crossbeam_queue::ArrayQueue;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Reads queued at most per source (each up to 64 KiB, a TCP read).
pub const INLET_CAPACITY: usize = 64;

/// After a read smaller than [`PACE_BELOW`], a task that cannot have the kernel gather its
/// input (a pipe, an HTTP body) waits this long before it reads again ([`pace`]): a sender
/// writing 1316 bytes at a time costs a few hundred reads and shard wakes a second, not one
/// per write. It delays data by no more than this, a quarter of the default flush interval.
pub(super) const READ_PACE: std::time::Duration = std::time::Duration::from_millis(5);

/// Reads at least this large are followed by the next at once (the sender is ahead).
pub(super) const PACE_BELOW: usize = 32 * 1024;

/// Wait [`READ_PACE`] after a read of `bytes` if it was small.
pub(super) async fn pace(bytes: usize) {
    if bytes < PACE_BELOW {
        tokio::time::sleep(READ_PACE).await;
    }
}

/// What a source's task delivers.
#[derive(Debug)]
pub enum Delivery {
    /// Bytes, and when they were received (UNIX ns).
    Bytes(Bytes, u64),
    /// A new connection (or process) starts here: what came before it ends mid-packet.
    Restart,
}

/// The queue between a source's task and the home shard.
#[derive(Debug)]
pub struct Inlet {
    queue: ArrayQueue<Delivery>,
    /// The task has delivered since the shard last began to take.
    pending: AtomicBool,
    /// The shard took something: a task waiting for room may go on.
    room: tokio::sync::Notify,
    waker: Arc<dyn Wake>,
}

impl Inlet {
    /// An inlet that wakes the home shard with `waker`.
    pub fn new(waker: Arc<dyn Wake>) -> Arc<Self> {
        Arc::new(Self {
            queue: ArrayQueue::new(INLET_CAPACITY),
            pending: AtomicBool::new(false),
            room: tokio::sync::Notify::new(),
            waker,
        })
    }

    /// The task's side: queue `delivery`, waiting while the queue is full.
    pub async fn deliver(&self, mut delivery: Delivery) {
        loop {
            // Registered before the queue is tried again, so a take in between is not missed.
            let room = self.room.notified();
            match self.try_deliver(delivery) {
                Ok(()) => return,
                Err(back) => {
                    delivery = back;
                    room.await;
                }
            }
        }
    }

    /// A thread's side (SRT's, which polls rather than awaits): queue `delivery` if there is
    /// room, or give it back.
    pub fn try_deliver(&self, delivery: Delivery) -> Result<(), Delivery> {
        self.queue.push(delivery)?;
        if !self.pending.swap(true, Ordering::AcqRel) {
            self.waker.wake();
        }
        Ok(())
    }

    /// The shard's side: everything queued, in order, to `take`. Returns how many deliveries.
    pub fn take(&self, mut take: impl FnMut(Delivery)) -> usize {
        // Cleared first: a delivery after this point wakes the shard again.
        self.pending.store(false, Ordering::Release);
        let mut taken = 0;
        while let Some(delivery) = self.queue.pop() {
            take(delivery);
            taken += 1;
        }
        if taken > 0 {
            self.room.notify_waiters();
        }
        taken
    }
}

/// The home shard's side of a source whose I/O runs as a task on the sources' runtime: what
/// the task delivered, and the task, which ends (and closes what it holds) with the stream.
#[derive(Debug)]
pub(super) struct TaskDriver {
    program: Option<u16>,
    inlet: Arc<Inlet>,
    task: Option<tokio::task::AbortHandle>,
}

impl TaskDriver {
    /// Start the task `run` makes from the inlet it delivers to (with no runtime it stays
    /// silent, and says so); `program` is the one to take from an MPTS.
    pub(super) fn start<F>(
        context: &SourceContext<'_>,
        program: Option<u16>,
        run: impl FnOnce(Arc<Inlet>) -> F,
    ) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let inlet = Inlet::new(context.waker.clone());
        let task = match context.tasks {
            Some(runtime) => Some(runtime.spawn(run(inlet.clone())).abort_handle()),
            None => {
                tracing::error!(stream = %context.stream, "no runtime for sources with a task of their own here: this source stays silent");
                None
            }
        };
        Self {
            program,
            inlet,
            task,
        }
    }
}

impl Drop for TaskDriver {
    fn drop(&mut self) {
        // The stream ended: its task goes, and with it its sockets or its process.
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl SourceDriver for TaskDriver {
    fn program(&self) -> Option<u16> {
        self.program
    }

    fn inlet(&self) -> Option<&Inlet> {
        Some(&self.inlet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[derive(Debug, Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(&self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn one_wake_per_batch_and_order_is_kept() {
        let wakes = Arc::new(Count::default());
        let inlet = Inlet::new(wakes.clone());
        runtime().block_on(async {
            for i in 0..5u8 {
                inlet
                    .deliver(Delivery::Bytes(Bytes::from(vec![i]), 0))
                    .await;
            }
        });
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1);
        let mut seen = Vec::new();
        assert_eq!(
            inlet.take(|d| match d {
                Delivery::Bytes(b, _) => seen.push(b[0]),
                Delivery::Restart => seen.push(255),
            }),
            5
        );
        assert_eq!(seen, [0, 1, 2, 3, 4]);
        runtime().block_on(inlet.deliver(Delivery::Restart));
        assert_eq!(wakes.0.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_full_queue_holds_the_task_until_the_shard_takes() {
        let inlet = Inlet::new(Arc::new(Count::default()));
        let rt = runtime();
        rt.block_on(async {
            for _ in 0..INLET_CAPACITY {
                inlet.deliver(Delivery::Restart).await;
            }
        });
        let sender = inlet.clone();
        let task = rt.spawn(async move { sender.deliver(Delivery::Restart).await });
        rt.block_on(async {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        });
        assert!(
            !task.is_finished(),
            "the task waits while the queue is full"
        );
        assert_eq!(inlet.take(drop), INLET_CAPACITY);
        rt.block_on(task).unwrap();
        assert_eq!(inlet.take(drop), 1);
    }
}
