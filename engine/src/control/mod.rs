//! The control plane: the JSON API under `/api/v1/` and Prometheus `/metrics`, on their own
//! listener (default 127.0.0.1:4242) and their own thread, so nothing here ever runs on a
//! shard.
//!
//! ```text
//!  control thread: tokio (one thread) ─ axum ─┬─ /api/v1/server, /api/v1/streams[/{name}]
//!                                             └─ /metrics
//!        reads: StreamInfo counters and HLS windows (atomics and ArcSwap loads, no locks
//!        shared with shards; the input bitrate is the ingest pipeline's own measure)
//!        writes: stream edits through the ConfigStore (file first, then a new stream table
//!        the shards follow), on a blocking thread so fsync never stalls the API
//! ```
//!
//! Every API request needs `Authorization: Bearer TOKEN`; with no token in the configuration
//! one is generated at first start and kept in the state directory ([`token`]). `/metrics`
//! is readable without it unless `[api] metrics_need_token = true`.
//!
//! Beside the API: viewer sessions ([`sessions`]), token access control ([`access`]),
//! triggers ([`triggers`]), the stream watcher ([`watch`]), all bounded (README: "Limits and
//! protection").

pub mod access;
mod api;
mod metrics;
pub mod sessions;
pub mod store;
mod tls_listener;
pub mod token;
pub mod triggers;
pub mod watch;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// What the control plane knows about the running server.
#[derive(Debug)]
pub struct ControlState {
    /// The running configuration and its stream table.
    pub store: Arc<store::ConfigStore>,
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
    /// Viewer sessions.
    pub sessions: std::sync::Mutex<sessions::SessionTable>,
    /// The shards' queues and wakers.
    pub links: crate::session::Links,
    /// Triggers (for their counts).
    pub triggers: Arc<triggers::TriggerSet>,
    /// The access task (for its counts).
    pub access: Arc<access::Access>,
    /// The per-address connection cap and the refusal counts.
    pub admission: Arc<crate::shard::admission::Admission>,
    /// The push sources (for their counts).
    pub pushes: Arc<crate::source::Pushes>,
    /// What sends streams on (started and stopped through the API).
    pub push_outs: Arc<crate::output::push_out::PushOuts>,
}

impl ControlState {
    /// The state of a server that has just started.
    #[allow(clippy::too_many_arguments)] // one constructor, called once
    pub fn new(
        store: Arc<store::ConfigStore>,
        cpus: Vec<usize>,
        io_backend: &'static str,
        token: String,
        metrics_need_token: bool,
        run: Arc<crate::shard::RunState>,
        sessions: sessions::SessionTable,
        links: crate::session::Links,
        triggers: Arc<triggers::TriggerSet>,
        access: Arc<access::Access>,
        admission: Arc<crate::shard::admission::Admission>,
        (pushes, push_outs): (
            Arc<crate::source::Pushes>,
            Arc<crate::output::push_out::PushOuts>,
        ),
    ) -> Self {
        Self {
            triggers,
            access,
            admission,
            pushes,
            push_outs,
            sessions: std::sync::Mutex::new(sessions),
            links,
            store,
            cpus,
            io_backend,
            started: Instant::now(),
            started_unix: crate::sys::unix_ns() / 1_000_000_000,
            token,
            metrics_need_token,
            run,
        }
    }

    /// The session table (a poisoned lock is taken over: it holds only statistics).
    pub fn sessions(&self) -> std::sync::MutexGuard<'_, sessions::SessionTable> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take every shard's session reports and end the quiet sessions.
    pub fn collect_sessions(&self) {
        let mut table = self.sessions();
        for link in &self.links.shards {
            while let Some(report) = link.reports.pop() {
                table.absorb(report);
            }
        }
        table.sweep();
    }

    /// The streams now.
    pub fn catalog(&self) -> Arc<crate::shard::Catalog> {
        self.store.streams().load()
    }
}

/// Collect the shards' session reports when they tell of some, and end quiet sessions when
/// the first of them is due: a server with no viewer never wakes for it.
async fn collect(state: Arc<ControlState>) {
    let Some(reported) = state.links.shards.first().map(|l| l.reported.clone()) else {
        return;
    };
    loop {
        let told = reported.notified();
        // (The table's lock is not held while waiting.)
        let next_end = state.sessions().next_end();
        match next_end {
            // A millisecond past it: the session is then quiet for longer than the timeout.
            Some(due) => {
                let due = due + std::time::Duration::from_millis(1);
                tokio::select! {
                    _ = told => {}
                    _ = tokio::time::sleep_until(due.into()) => {}
                }
            }
            None => told.await,
        }
        state.collect_sessions();
    }
}

/// The running control plane; stopping it (or dropping it) ends its thread.
#[derive(Debug)]
pub struct ControlPlane {
    /// The address the API listens on, when it does.
    pub local: Option<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Why the control plane did not start.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The API's listener.
    #[error("cannot listen for the API on {addr}: {source}")]
    Listen {
        /// The configured address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Its runtime.
    #[error("cannot start the control plane's runtime: {0}")]
    Runtime(std::io::Error),
    /// Its thread.
    #[error("cannot start the control thread: {0}")]
    Thread(std::io::Error),
}

impl ControlPlane {
    /// The API's listener on `addr`.
    pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, ControlError> {
        let listen_error = |source| ControlError::Listen { addr, source };
        std::net::TcpListener::bind(addr).map_err(listen_error)
    }

    /// Start the control thread: sessions collected as the shards report them, and the API served
    /// on `listener` when there is one (made by [`ControlPlane::bind`], or handed over by an
    /// upgrade).
    pub fn start(
        listener: Option<std::net::TcpListener>,
        tls: Option<Arc<rustls::ServerConfig>>,
        state: Arc<ControlState>,
    ) -> Result<ControlPlane, ControlError> {
        let (listener, local) = match listener {
            None => (None, None),
            Some(l) => {
                let addr = l.local_addr().map_err(|source| ControlError::Listen {
                    addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                    source,
                })?;
                let listen_error = |source| ControlError::Listen { addr, source };
                l.set_nonblocking(true).map_err(listen_error)?;
                (Some(l), Some(addr))
            }
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(ControlError::Runtime)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::spawn(collect(state.clone()));
                    match listener.map(tokio::net::TcpListener::from_std) {
                        None => {
                            let _ = stopped.await;
                        }
                        Some(Err(e)) => {
                            tracing::error!("API listener: {e}");
                            let _ = stopped.await;
                        }
                        Some(Ok(listener)) => {
                            let app = api::router(state.clone());
                            let stop = async {
                                let _ = stopped.await;
                            };
                            let served = match tls {
                                Some(config) => {
                                    let listener = tls_listener::TlsListener::new(listener, config);
                                    axum::serve(listener, app)
                                        .with_graceful_shutdown(stop)
                                        .await
                                }
                                None => {
                                    axum::serve(listener, app)
                                        .with_graceful_shutdown(stop)
                                        .await
                                }
                            };
                            if let Err(e) = served {
                                tracing::error!("the API stopped: {e}");
                            }
                        }
                    }
                    state.collect_sessions();
                    state.sessions().end_all();
                });
            })
            .map_err(ControlError::Thread)?;
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
