//! The control plane: the JSON API under `/api/v1/` and Prometheus `/metrics`, on their own
//! listener (default 127.0.0.1:4242) and their own thread, so nothing here ever runs on a
//! shard.
//!
//! ```text
//!  control thread: tokio (one thread) ─ axum ─┬─ /api/v1/server, /api/v1/streams[/{name}]
//!                                             └─ /metrics
//!        reads: StreamInfo counters and HLS windows (atomics and ArcSwap loads, no locks
//!        shared with shards); samples input bitrates once a second
//! ```
//!
//! Every API request needs `Authorization: Bearer TOKEN`; with no token in the configuration
//! one is generated at first start and kept in the state directory ([`token`]). `/metrics`
//! is readable without it unless `[api] metrics_need_token = true`.
//!
//! What it does not do yet (issue 6 continues): change streams (create, replace, delete with
//! live application and atomic persistence), sessions, triggers, token access control for
//! viewers, reverse-proxy headers.

mod api;
mod metrics;
pub mod token;

use crate::shard::StreamInfo;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What the control plane knows about the running server.
#[derive(Debug)]
pub struct ControlState {
    /// The streams, as the shards see them.
    pub streams: Arc<Vec<StreamInfo>>,
    /// Each stream's source, as configured.
    pub sources: Vec<String>,
    /// Shard CPUs.
    pub cpus: Vec<usize>,
    /// `io_uring` or `epoll`.
    pub io_backend: &'static str,
    /// When the server started.
    pub started: Instant,
    /// When the server started, UNIX seconds.
    pub started_unix: u64,
    /// The API's bearer token.
    pub token: String,
    /// Whether `/metrics` needs the token too.
    pub metrics_need_token: bool,
    /// The shards' run state and loop statistics.
    pub run: Arc<crate::shard::RunState>,
    /// Input bitrate per stream, from the last two samples of its byte counter.
    rates: Mutex<Vec<Rate>>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Rate {
    at: Option<Instant>,
    bytes: u64,
    bits_per_second: u64,
}

impl ControlState {
    /// The state of a server that has just started.
    pub fn new(
        streams: Arc<Vec<StreamInfo>>,
        sources: Vec<String>,
        cpus: Vec<usize>,
        io_backend: &'static str,
        token: String,
        metrics_need_token: bool,
        run: Arc<crate::shard::RunState>,
    ) -> Self {
        let n = streams.len();
        Self {
            streams,
            sources,
            cpus,
            io_backend,
            started: Instant::now(),
            started_unix: crate::sys::unix_ns() / 1_000_000_000,
            token,
            metrics_need_token,
            run,
            rates: Mutex::new(vec![Rate::default(); n]),
        }
    }

    /// Take a sample of every stream's received bytes; called about once a second.
    pub fn sample_rates(&self) {
        let now = Instant::now();
        let mut rates = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        for (rate, info) in rates.iter_mut().zip(self.streams.iter()) {
            let bytes = info
                .counters
                .bytes_in
                .load(std::sync::atomic::Ordering::Relaxed);
            if let Some(at) = rate.at {
                let dt = now.duration_since(at).as_secs_f64();
                if dt > 0.0 {
                    rate.bits_per_second =
                        (bytes.saturating_sub(rate.bytes) as f64 * 8.0 / dt) as u64;
                }
            }
            rate.at = Some(now);
            rate.bytes = bytes;
        }
    }

    /// The input bitrate of stream `index`, bits per second, over the last sample period.
    pub fn input_bitrate(&self, index: usize) -> u64 {
        let rates = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        rates.get(index).map_or(0, |r| r.bits_per_second)
    }
}

/// The running control plane; stopping it (or dropping it) ends its thread.
#[derive(Debug)]
pub struct ControlPlane {
    /// The address it listens on.
    pub local: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ControlPlane {
    /// Bind `listen` and serve the API from a thread of its own.
    pub fn start(listen: SocketAddr, state: Arc<ControlState>) -> Result<ControlPlane, String> {
        let listener = std::net::TcpListener::bind(listen)
            .map_err(|e| format!("cannot listen for the API on {listen}: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("API listener: {e}"))?;
        let local = listener
            .local_addr()
            .map_err(|e| format!("API listener: {e}"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| format!("cannot start the control plane's runtime: {e}"))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!("API listener: {e}");
                            return;
                        }
                    };
                    let sampler = state.clone();
                    tokio::spawn(async move {
                        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
                        loop {
                            tick.tick().await;
                            sampler.sample_rates();
                        }
                    });
                    let app = api::router(state);
                    let served = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .await;
                    if let Err(e) = served {
                        tracing::error!("the API stopped: {e}");
                    }
                });
            })
            .map_err(|e| format!("cannot start the control thread: {e}"))?;
        Ok(ControlPlane {
            local,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stop serving and wait for the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.shutdown();
    }
}
