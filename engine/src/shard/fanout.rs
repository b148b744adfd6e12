//! Chunks from a stream's home shard to the other shards: one bounded lock-free queue per
//! (stream, shard), and the shard's waker. Pushing never blocks: a full queue drops the chunk
//! for that shard (counted), whose view then resumes at the next access point.

use crate::stream::{Chunk, StreamCounters};
use crate::wake::Wake;
use crossbeam_queue::ArrayQueue;
use std::sync::Arc;

/// Chunks queued for one shard per stream.
pub const QUEUE_CHUNKS: usize = 4096;

/// One subscriber shard's queue for a stream, and its waker.
type Target = (Arc<ArrayQueue<Chunk>>, Arc<dyn Wake>);

/// The sending side of one stream: every other shard's queue and waker.
#[derive(Debug, Default)]
pub struct Fanout {
    targets: Vec<Target>,
}

impl Fanout {
    /// Add a subscriber shard.
    pub fn add(&mut self, queue: Arc<ArrayQueue<Chunk>>, waker: Arc<dyn Wake>) {
        self.targets.push((queue, waker));
    }

    /// Hand `chunk` to every subscriber shard and wake it.
    pub fn send(&self, chunk: &Chunk, counters: &StreamCounters) {
        for (queue, waker) in &self.targets {
            if queue.push(chunk.clone()).is_err() {
                StreamCounters::add(&counters.fanout_drops, 1);
            }
            waker.wake();
        }
    }
}
