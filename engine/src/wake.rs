//! How one thread wakes another that waits for I/O: a shard (ingest chunks for it, commands
//! from the control plane) or the control plane's access task (questions from a shard).

/// Wakes a shard that waits for I/O (an eventfd underneath, for either backend).
pub trait Wake: Send + Sync + std::fmt::Debug {
    /// Wake it; never blocks.
    fn wake(&self);
}

impl Wake for mio::Waker {
    fn wake(&self) {
        let _ = mio::Waker::wake(self);
    }
}

/// Wakes nobody: for a shard with no thread to wake (one driven by its tests, turn by turn).
#[derive(Debug, Default)]
pub struct Nobody;

impl Wake for Nobody {
    fn wake(&self) {}
}
