//! Starting and stopping the shards.
//!
//! Lifecycle: load config → bind one SO_REUSEPORT listener per shard → make every shard's
//! poller and waker → wire the fan-out queues (home shard of each stream to every other shard)
//! → start the pinned shard threads → wait for a signal.
//!
//! Signals: SIGTERM stops gracefully (no new connections, viewers get what is queued, up to
//! 2 s); SIGINT stops at once; SIGHUP re-reads the configuration file and refuses a file that
//! does not validate, keeping the running configuration.
//!
//! Startup checks: one log line for each thing about this host that will hurt (io_uring not
//! available, socket receive limit below the tuning profile, file limit below the connection
//! cap, NIC interrupts on shard cores).

use crate::config::IoBackend;
use crate::config::{Config, ConfigSource};
use crate::control::store::ConfigStore;
use crate::hls::SegmentSend;
use crate::http::ConnLimits;
use crate::shard::epoll::EpollShard;
use crate::shard::uring::{self, UringParts, UringShard};
use crate::shard::{RunState, ShardSetup, Streams, WAKER};
use crate::source::SourceSpec;
use crate::wake::Wake;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR2};
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// Why the server did not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Signal handlers.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// The viewers' listener.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// `io = "io_uring"` and the kernel cannot.
    #[error("io = \"io_uring\" was asked for, but {0}")]
    NoUring(uring::Unavailable),
    /// A shard's I/O parts (a ring, a poller, a waker).
    #[error("cannot create {what}: {source}")]
    Setup {
        /// What.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// A thread.
    #[error("cannot start {name}: {source}")]
    Thread {
        /// Which.
        name: String,
        /// Why.
        source: std::io::Error,
    },
    /// The triggers' runtime.
    #[error(transparent)]
    Triggers(#[from] crate::control::triggers::TriggersError),
    /// The API token.
    #[error(transparent)]
    Token(#[from] crate::control::token::TokenError),
    /// The control plane.
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
    /// Taking over from a running server (an upgrade) failed.
    #[error("upgrade: {0}")]
    Upgrade(#[from] crate::upgrade::UpgradeError),
    /// What was handed over does not fit this configuration.
    #[error("upgrade: {0}; restart to apply it")]
    UpgradeMismatch(String),
    /// The TLS certificates.
    #[error("TLS certificates refused: {0}")]
    Certificates(#[from] crate::tls::CertError),
    /// The TLS configuration.
    #[error("cannot configure TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// A shard stopped with an error (logged when it did).
    #[error("a shard failed")]
    ShardFailed,
}

impl ServeError {
    fn setup(what: &'static str) -> impl Fn(std::io::Error) -> ServeError {
        move |source| ServeError::Setup { what, source }
    }
}

/// Run the server until a signal stops it. SIGHUP loads `source` again.
pub fn serve(config: Config, source: ConfigSource) -> Result<(), ServeError> {
    let shards = config.cpus.len();
    // Handlers first: a signal that comes while the server starts must not kill it (SIGHUP's
    // default action is to terminate).
    let signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR2])
        .map_err(ServeError::Signals)?;
    // Started by an upgrade: the running server hands its sockets over once this one has
    // checked everything it can check without them.
    let channel = crate::upgrade::Channel::inherited();
    let handoff = Arc::new(crate::upgrade::Handoff::default());
    startup_checks(&config, Path::new("/"));
    let wanted = (config.max_connections_per_shard as u64 + 64).saturating_mul(shards as u64);
    match crate::sys::raise_file_limit() {
        Ok(limit) if limit < wanted => tracing::warn!(
            limit,
            wanted,
            "the open file limit is below max_connections_per_shard for every shard: connections past it will be refused (raise LimitNOFILE)"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot read or raise the open file limit: {e}"),
    }
    // TLS: the certificates checked before anything listens for it.
    let certificates = match config.tls_listen {
        Some(_) => {
            let set = crate::tls::CertSet::load(&config.tls_certificates, unix_seconds())?;
            for c in set.certs() {
                tracing::info!(cert = %c.files.cert.display(), names = ?c.names, "TLS certificate loaded");
            }
            let certs = crate::tls::Certificates::new(set);
            let rustls_config = crate::tls::server_config(certs.clone())?;
            Some((certs, rustls_config))
        }
        None => None,
    };
    let (listeners, tls_listeners, api_listener, inherited) = match channel {
        Some(channel) => {
            let mut inherited = crate::upgrade::take_over(channel, &handoff)?;
            match inherited_listeners(&config, shards, &mut inherited) {
                Ok((plain, tls, api)) => (plain, tls, api, Some(inherited)),
                Err(why) => {
                    inherited.failed(&why);
                    return Err(ServeError::UpgradeMismatch(why));
                }
            }
        }
        None => {
            let plain =
                bind_listeners(config.listen, shards).map_err(|source| ServeError::Listen {
                    addr: config.listen,
                    source,
                })?;
            let tls = match config.tls_listen {
                Some(addr) => bind_listeners(addr, shards)
                    .map_err(|source| ServeError::Listen { addr, source })?,
                None => Vec::new(),
            };
            // The API's listener is bound once its token exists (below): whoever can connect
            // to it can read the token file.
            (plain, tls, None, None)
        }
    };
    let local = listeners
        .first()
        .and_then(|l| l.local_addr().ok())
        .unwrap_or(config.listen);
    let mut tls = certificates.map(|(certs, rustls_config)| {
        let local = tls_listeners
            .first()
            .and_then(|l| l.local_addr().ok())
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        (certs, rustls_config, tls_listeners, local)
    });
    let use_uring = match config.io {
        IoBackend::Epoll => false,
        IoBackend::IoUring => {
            uring::probe().map_err(ServeError::NoUring)?;
            true
        }
        IoBackend::Auto => match uring::probe() {
            Ok(()) => true,
            Err(why) => {
                tracing::warn!("io_uring is not available ({why}): serving on epoll");
                false
            }
        },
    };
    let mut backends = Vec::new();
    let mut wakers: Vec<Arc<dyn Wake>> = Vec::new();
    for _ in 0..shards {
        if use_uring {
            let parts = UringParts::new(4096).map_err(ServeError::setup("an io_uring"))?;
            wakers.push(parts.waker.clone());
            backends.push(Backend::Uring(Box::new(parts)));
        } else {
            let poll = mio::Poll::new().map_err(ServeError::setup("a poller"))?;
            let waker =
                mio::Waker::new(poll.registry(), WAKER).map_err(ServeError::setup("a waker"))?;
            wakers.push(Arc::new(waker));
            backends.push(Backend::Epoll(poll));
        }
    }
    // The streams start once the store applies the configuration (below): through the same
    // rules as every later change (access gates, STREAM_SOURCE).
    let streams = Arc::new(Streams::new(&[], wakers.clone()));
    let triggers = crate::control::triggers::Triggers::new(config.triggers.clone())?;
    // Before any shard runs: the listeners already take connections into their backlog, and
    // the first requests must find the streams.
    let store = Arc::new(ConfigStore::new(
        source,
        config.clone(),
        streams.clone(),
        triggers.clone(),
    ));
    if let Some((certs, ..)) = &tls {
        store.set_certificates(certs.clone());
    }
    store.start();
    // Windows handed over are published before any shard accepts (the home shard takes them
    // up when it starts the stream; a request to another shard must not find none).
    for (_, info) in streams.load().streams() {
        if let Some(window) = handoff.peek_window(&info.name) {
            crate::hls::Packager::new(
                &info.name,
                info.hls,
                SegmentSend::Sendfile,
                info.hls_window.clone(),
                info.counters.clone(),
            )
            .with_limits(&info.config.limits)
            .restore(window, 0);
        }
    }
    let asked = Arc::new(tokio::sync::Notify::new());
    let fetch_asked = Arc::new(tokio::sync::Notify::new());
    let reported = Arc::new(tokio::sync::Notify::new());
    let links = crate::session::Links {
        shards: (0..shards)
            .map(|_| crate::session::ShardLink {
                fetch_asked: fetch_asked.clone(),
                reported: reported.clone(),
                news: streams.news(),
                ..crate::session::ShardLink::with(asked.clone())
            })
            .collect(),
        wakers: wakers.clone(),
    };
    let proxies = Arc::new(crate::proxy::Proxies::new(
        config.proxy.clone(),
        &config.proxies,
        proxy_key(&config).as_bytes(),
    ));
    store.set_proxies(proxies.clone());
    // The HLS proxy fetches on a runtime of its own: a slow origin never delays ingest or
    // the API.
    let upstream = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("proxy")
        .enable_all()
        .build()
        .map_err(|source| ServeError::Setup {
            what: "the proxy's runtime",
            source,
        })?;
    let fetcher =
        match crate::proxy::Fetcher::new(proxies.clone(), links.clone(), upstream.handle().clone())
        {
            Ok(fetcher) => {
                upstream.spawn(fetcher.clone().run(fetch_asked));
                Some(fetcher)
            }
            Err(e) => {
                tracing::error!(
                    "the HLS proxy has no HTTP client ({e}): /proxy/ requests wait and time out"
                );
                None
            }
        };
    let run = Arc::new(RunState::new(shards));
    let limits = ConnLimits {
        header_timeout_ns: (config.header_timeout_s * 1e9) as u64,
        idle_timeout_ns: (config.idle_timeout_s * 1e9) as u64,
        max_lag_bytes: config.max_lag_bytes,
        max_queued_bytes: config.limits.max_queued,
        max_pipelined: config.limits.max_pipelined,
        min_send_rate: config.limits.min_send_rate,
        ..ConnLimits::default()
    };
    let segment_send = match (config.segment_send.resolve(), use_uring) {
        (SegmentSend::Zerocopy, false) => {
            tracing::warn!("segment_send = \"zerocopy\" needs io_uring: segments are sent by copy");
            SegmentSend::Copy
        }
        (SegmentSend::Zerocopy, true) if !uring::supports_send_zc() => {
            tracing::warn!("this kernel's io_uring has no SENDMSG_ZC: segments are sent by copy");
            SegmentSend::Copy
        }
        (mode, _) => mode,
    };
    let site = Arc::new(crate::site::Site {
        public_base_url: config.public_base_url.clone(),
        trusted_proxies: config.trusted_proxies.clone(),
    });
    let admission = Arc::new(crate::shard::admission::Admission::new(
        config.limits.max_connections_per_address,
    ));
    let names: Vec<&str> = config.streams.iter().map(|s| s.name.as_str()).collect();
    let io = if use_uring { "io_uring" } else { "epoll" };
    let access = crate::control::access::Access::new(
        triggers.shared(),
        links.clone(),
        streams.clone(),
        crate::control::access::AccessLimits::from(&config.limits),
    );
    let maker = store.clone();
    access.set_instance_maker(Arc::new(move |name: &str| maker.start_instance(name)));
    access.set_proxies(proxies.clone());
    triggers.spawn(access.clone().run(asked));
    // Sources that do their own I/O (TCP) run on a runtime of their own, off the shards and
    // apart from the control plane: a busy API never delays ingest.
    let sources = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("sources")
        .enable_all()
        .build()
        .map_err(|source| ServeError::Setup {
            what: "the sources' runtime",
            source,
        })?;
    let pushes = crate::source::Pushes::new(
        sources.handle().clone(),
        Some(triggers.shared()),
        config.limits.max_pushes,
    );
    let push_outs = crate::output::push_out::PushOuts::new(
        sources.handle().clone(),
        Some(triggers.shared()),
        config.limits.max_push_outs,
    );
    let state = start_control(
        &config,
        &store,
        io,
        &run,
        links.clone(),
        &triggers,
        access,
        admission.clone(),
        (pushes.clone(), push_outs.clone()),
    )?;
    triggers.spawn(crate::control::watch::run(state.clone()));
    let api_tls = match &tls {
        Some((_, rustls_config, ..)) if config.api_tls => Some(rustls_config.clone()),
        _ => None,
    };
    let api_scheme = if api_tls.is_some() { "https" } else { "http" };
    let api_listener = match (api_listener, &inherited, config.api_listen) {
        (Some(l), _, _) => Some(l),
        (None, None, Some(addr)) => Some(crate::control::ControlPlane::bind(addr)?),
        _ => None,
    };
    if let Err(e) = handoff.keep_listeners(
        &listeners,
        tls.as_ref().map_or(&[][..], |t| &t.2[..]),
        api_listener.as_ref(),
    ) {
        tracing::warn!("cannot keep the listeners for upgrades: {e}");
    }
    let control = crate::control::ControlPlane::start(api_listener, api_tls, state.clone())?;
    // The shards start accepting last: everything else has its descriptors by then, so
    // viewers arriving in numbers at start cannot leave the control plane without any.
    let mut threads = Vec::new();
    let (tls_listeners, tls_shard): (Vec<_>, _) = match &mut tls {
        Some((certs, rustls_config, listeners, _)) => (
            std::mem::take(listeners).into_iter().map(Some).collect(),
            Some(crate::shard::core::ShardTls {
                config: rustls_config.clone(),
                counters: certs.counters().clone(),
            }),
        ),
        None => ((0..shards).map(|_| None).collect(), None),
    };
    for (index, ((backend, listener), tls_listener)) in backends
        .into_iter()
        .zip(listeners)
        .zip(tls_listeners)
        .enumerate()
    {
        let setup = ShardSetup {
            index,
            cpu: config.cpus[index],
            listener,
            tls: tls_listener.zip(tls_shard.clone()),
            catalog: streams.shared(),
            wakers: wakers.clone(),
            link: links.shards[index].clone(),
            limits,
            max_connections: config.max_connections_per_shard,
            run: run.clone(),
            flush_interval: std::time::Duration::from_secs_f64(config.flush_interval_ms / 1000.0),
            gather: std::time::Duration::from_secs_f64(config.gather_ms / 1000.0),
            ingest_interval: std::time::Duration::from_secs_f64(config.ingest_interval_ms / 1000.0),
            send_buffer: config.send_buffer,
            segment_send,
            site: site.clone(),
            admission: admission.clone(),
            max_sessions: (
                config.limits.max_sessions,
                config.limits.max_sessions_per_stream,
            ),
            source_tasks: sources.handle().clone(),
            pushes: pushes.clone(),
            push_outs: push_outs.clone(),
            handoff: handoff.clone(),
            proxies: Some(proxies.clone()),
            fetcher: fetcher.clone(),
        };
        let run = run.clone();
        let wakers = wakers.clone();
        let thread = std::thread::Builder::new()
            .name(format!("shard-{index}"))
            .spawn(move || {
                let result = match backend {
                    Backend::Epoll(poll) => EpollShard::new(setup, poll).and_then(EpollShard::run),
                    Backend::Uring(parts) => {
                        UringShard::new(setup, *parts).and_then(UringShard::run)
                    }
                };
                if let Err(e) = &result {
                    tracing::error!(shard = index, "shard stopped: {e}");
                    run.stop_now();
                    for w in &wakers {
                        w.wake();
                    }
                }
                result
            })
            .map_err(|source| ServeError::Thread {
                name: format!("shard {index}"),
                source,
            })?;
        threads.push(thread);
    }
    tracing::info!(listen = %local, shards, cpus = ?config.cpus, streams = ?names, segment_send = ?segment_send, "shardcast serving (io backend: {io})");
    if let Some((.., tls_local)) = &tls {
        tracing::info!(listen = %tls_local, "serving viewers over TLS (TLS 1.3 and 1.2)");
    }
    triggers.fire("SYSTEM_START", None, &[env!("CARGO_PKG_VERSION")]);
    if let Some(api) = control.local {
        tracing::info!(
            "JSON API on {api_scheme}://{api}/api/v1/, metrics on {api_scheme}://{api}/metrics"
        );
    }
    let notifier = crate::notify::Notifier::from_env().map(Arc::new);
    let state_dir = crate::control::token::state_dir(None, config.state_dir.as_deref());
    if let Some(inherited) = inherited {
        // The old process stops accepting and drains now, and tells the service manager
        // that this one is the main process; `shardcast upgrade` finds this one from now.
        write_pid_file(&state_dir);
        inherited.serving()?;
        tracing::info!("upgrade: serving; the previous process drains and exits");
    } else {
        if let Some(n) = &notifier {
            n.send(&format!(
                "READY=1\nMAINPID={}\nSTATUS=serving {} stream(s) on {local} with {shards} shard(s) ({io})",
                std::process::id(),
                names.len()
            ));
        }
        write_pid_file(&state_dir);
    }
    if let Some(n) = &notifier {
        if let Some(period) = crate::notify::watchdog_period() {
            let (n, run) = (n.clone(), run.clone());
            std::thread::Builder::new()
                .name("watchdog".into())
                .spawn(move || crate::notify::run_watchdog(n, period, run))
                .map_err(|source| ServeError::Thread {
                    name: "the watchdog thread".into(),
                    source,
                })?;
        }
    }
    let upgrade = Upgrader {
        handoff: handoff.clone(),
        streams: streams.clone(),
        wakers: wakers.clone(),
        notifier: notifier.clone(),
        state_dir,
        busy: std::sync::atomic::AtomicBool::new(false),
        done: std::sync::atomic::AtomicBool::new(false),
    };
    let upgrade = Arc::new(upgrade);
    wait_for_signal(signals, &run, &wakers, &store, &upgrade);
    if let Some(n) = &notifier {
        // Once upgraded this is no longer the service's main process: it says nothing.
        if !upgrade.done.load(std::sync::atomic::Ordering::Acquire) {
            n.send("STOPPING=1\nSTATUS=stopping");
        }
    }
    control.stop();
    // Pushes out end first: their PUSH_END goes out with SYSTEM_STOP.
    push_outs.stop_all();
    triggers.fire("SYSTEM_STOP", None, &["shutdown"]);
    triggers.drain(std::time::Duration::from_secs(2));
    let mut failed = false;
    for t in threads {
        failed |= !matches!(t.join(), Ok(Ok(())));
    }
    // Every source's task (and its sockets) goes with the shards.
    sources.shutdown_timeout(std::time::Duration::from_secs(1));
    upstream.shutdown_timeout(std::time::Duration::from_secs(1));
    // SRT's threads are out of libsrt before the process exits (and libsrt's statics go).
    crate::source::stop_srt_threads();
    tracing::info!("shardcast stopped");
    if failed {
        Err(ServeError::ShardFailed)
    } else {
        Ok(())
    }
}

/// The control plane's view of the server, with the API token found or made.
#[allow(clippy::too_many_arguments)] // called once, with what serve() built
fn start_control(
    config: &Config,
    store: &Arc<ConfigStore>,
    io: &'static str,
    run: &Arc<RunState>,
    links: crate::session::Links,
    triggers: &Arc<crate::control::triggers::Triggers>,
    access: Arc<crate::control::access::Access>,
    admission: Arc<crate::shard::admission::Admission>,
    pushes: (
        Arc<crate::source::Pushes>,
        Arc<crate::output::push_out::PushOuts>,
    ),
) -> Result<Arc<crate::control::ControlState>, ServeError> {
    use crate::control::token;
    // Without the API there is nothing to protect: no token is made or read.
    let token = if config.api_listen.is_some() {
        let dir = token::state_dir(None, config.state_dir.as_deref());
        let (token, origin) = token::load_or_generate(config.api_token.as_deref(), &dir)?;
        match &origin {
            token::Origin::Configured => tracing::info!("API token: from the configuration"),
            token::Origin::Stored(path) => {
                tracing::info!("API token: in {}", path.display())
            }
            token::Origin::Generated(path) => tracing::warn!(
                "API token generated and kept in {} (send it as `Authorization: Bearer {token}`)",
                path.display()
            ),
        }
        token
    } else {
        String::new()
    };
    Ok(Arc::new(crate::control::ControlState::new(
        store.clone(),
        config.cpus.clone(),
        io,
        token,
        config.metrics_need_token,
        run.clone(),
        crate::control::sessions::SessionTable::new(
            std::time::Duration::from_secs_f64(config.session_timeout_s),
            config.access_log.clone(),
            Some(triggers.shared()),
        )
        .with_limits(&config.limits),
        links,
        triggers.shared(),
        access,
        admission,
        pushes,
    )))
}

/// A shard's backend, made before the shards start so each can hold the others' wakers.
enum Backend {
    Epoll(mio::Poll),
    Uring(Box<UringParts>),
}

/// The listeners an upgrade handed over, when they are what this configuration asks for (the
/// same addresses, one per shard); otherwise why not.
#[allow(clippy::type_complexity)]
fn inherited_listeners(
    config: &Config,
    shards: usize,
    inherited: &mut crate::upgrade::Inherited,
) -> Result<
    (
        Vec<std::net::TcpListener>,
        Vec<std::net::TcpListener>,
        Option<std::net::TcpListener>,
    ),
    String,
> {
    let same = |configured: SocketAddr, handed: Option<SocketAddr>| {
        handed.is_some_and(|h| {
            h.ip() == configured.ip() && (configured.port() == 0 || h.port() == configured.port())
        })
    };
    if inherited.plain.len() != shards {
        return Err(format!(
            "the running server has {} shard(s), this configuration {shards}",
            inherited.plain.len()
        ));
    }
    if !same(config.listen, inherited.plain_addr) {
        return Err(format!(
            "listen changed ({:?} to {})",
            inherited.plain_addr, config.listen
        ));
    }
    match config.tls_listen {
        Some(addr) if inherited.tls.len() != shards || !same(addr, inherited.tls_addr) => {
            return Err(format!(
                "the TLS listener changed ({:?} to {addr})",
                inherited.tls_addr
            ))
        }
        None if !inherited.tls.is_empty() => return Err("TLS was removed".into()),
        _ => {}
    }
    match config.api_listen {
        Some(addr) if !same(addr, inherited.api_addr) => {
            return Err(format!(
                "the API listener changed ({:?} to {addr})",
                inherited.api_addr
            ))
        }
        None if inherited.api.is_some() => return Err("the API was turned off".into()),
        _ => {}
    }
    Ok((
        std::mem::take(&mut inherited.plain),
        std::mem::take(&mut inherited.tls),
        inherited.api.take(),
    ))
}

/// Where `shardcast upgrade` finds the serving process: written at start (atomically), and by
/// a new process once it serves.
fn write_pid_file(state_dir: &Path) {
    let path = crate::upgrade::pid_file(state_dir);
    let _ = std::fs::create_dir_all(state_dir);
    if let Err(e) =
        crate::files::write_atomically(&path, format!("{}\n", std::process::id()).as_bytes())
    {
        tracing::warn!("cannot write {}: {e}", path.display());
    }
}

/// What an upgrade (SIGUSR2) needs, and whether one is running or has happened.
struct Upgrader {
    handoff: Arc<crate::upgrade::Handoff>,
    streams: Arc<Streams>,
    wakers: Vec<Arc<dyn Wake>>,
    notifier: Option<Arc<crate::notify::Notifier>>,
    state_dir: std::path::PathBuf,
    busy: std::sync::atomic::AtomicBool,
    done: std::sync::atomic::AtomicBool,
}

impl Upgrader {
    /// Hand everything to a new process of the binary on disk; on success stop gracefully
    /// (SIGTERM to this process), otherwise carry on. The outcome goes to the log and to the
    /// status file `shardcast upgrade` reads.
    fn run(&self) {
        use std::sync::atomic::Ordering;
        if self.busy.swap(true, Ordering::AcqRel) {
            tracing::warn!("SIGUSR2: an upgrade is already under way");
            return;
        }
        tracing::info!("SIGUSR2: upgrading: starting the binary on disk");
        let wake = || {
            for w in &self.wakers {
                w.wake();
            }
        };
        let windows = || {
            self.streams
                .load()
                .streams()
                .filter_map(|(_, info)| Some((info.name.clone(), info.hls_window.load_full()?)))
                .collect()
        };
        let old = crate::upgrade::OldSide {
            windows: &windows,
            shards: self.wakers.len(),
            wake: &wake,
        };
        let me = std::process::id();
        match crate::upgrade::hand_over(&self.handoff, &old) {
            Ok(pid) => {
                tracing::info!(
                    new = pid,
                    "upgrade: the new process serves; draining and exiting"
                );
                if let Some(n) = &self.notifier {
                    n.send(&format!(
                        "MAINPID={pid}\nSTATUS=upgraded: process {pid} serves"
                    ));
                }
                self.done.store(true, Ordering::Release);
                // Written before the stop: this process may be gone soon after.
                self.write_status(&crate::upgrade::UpgradeStatus {
                    old: me,
                    serving: pid,
                    ok: true,
                    reason: None,
                });
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(me as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            Err(e) => {
                tracing::error!("upgrade failed: {e}; this process carries on serving");
                self.write_status(&crate::upgrade::UpgradeStatus {
                    old: me,
                    serving: me,
                    ok: false,
                    reason: Some(e.to_string()),
                });
                self.busy.store(false, Ordering::Release);
            }
        }
    }

    /// The outcome, for `shardcast upgrade` (the new process has written the pid file).
    fn write_status(&self, status: &crate::upgrade::UpgradeStatus) {
        let path = crate::upgrade::status_file(&self.state_dir);
        if let Ok(json) = serde_json::to_vec(status) {
            if let Err(e) = crate::files::write_atomically(&path, &json) {
                tracing::warn!("cannot write {}: {e}", path.display());
            }
        }
    }
}

fn wait_for_signal(
    mut signals: signal_hook::iterator::Signals,
    run: &Arc<RunState>,
    wakers: &[Arc<dyn Wake>],
    store: &ConfigStore,
    upgrade: &Arc<Upgrader>,
) {
    let handle = signals.handle();
    let watcher_run = run.clone();
    let watcher_wakers: Vec<_> = wakers.to_vec();
    // A shard that fails stops the others and must end the wait too.
    std::thread::spawn(move || {
        watcher_run.wait_stopping();
        for w in &watcher_wakers {
            w.wake();
        }
        handle.close();
    });
    for signal in signals.forever() {
        match signal {
            SIGHUP => {
                reread(store);
                continue;
            }
            SIGUSR2 => {
                let upgrade = upgrade.clone();
                // Off the signal loop: SIGTERM (sent when it succeeds) must still be heard.
                let _ = std::thread::Builder::new()
                    .name("upgrade".into())
                    .spawn(move || upgrade.run());
                continue;
            }
            SIGTERM if upgrade.done.load(std::sync::atomic::Ordering::Acquire) => {
                tracing::info!("upgraded: no new connections here; finishing open responses");
                run.stop_gracefully();
            }
            SIGTERM => {
                tracing::info!("SIGTERM: stopping gracefully");
                run.stop_gracefully();
            }
            _ => {
                tracing::info!("SIGINT: stopping now");
                run.stop_now();
            }
        }
        for w in wakers {
            w.wake();
        }
        break;
    }
}

/// SIGHUP: read the configuration file again and apply it: streams change live, other
/// settings at the next restart. A file that does not validate is refused with its line and
/// reason and changes nothing.
fn reread(store: &ConfigStore) {
    let Some(path) = store.file() else {
        tracing::info!("SIGHUP: running the embedded configuration, there is no file to re-read");
        return;
    };
    match store.reload() {
        Err(e) => tracing::error!("SIGHUP: {e}; the running configuration stays"),
        Ok((changes, later)) if changes.is_empty() && later.is_empty() => tracing::info!(
            "SIGHUP: configuration {} re-read, unchanged",
            path.display()
        ),
        Ok(_) => tracing::info!("SIGHUP: configuration {} applied", path.display()),
    }
}

fn unix_seconds() -> i64 {
    (crate::sys::unix_ns() / 1_000_000_000) as i64
}

/// The socket receive limit below which UDP ingest bursts are dropped by the kernel: the
/// general tuning profile's value.
const RMEM_MAX_WANTED: u64 = 16 << 20;

/// The kernel's choice of folio sizes for its shared memory (memfds): the tuning profile sets
/// `within_size`.
const SHMEM_ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";

/// One log line for each thing about this host that will hurt the configured service.
fn startup_checks(config: &Config, root: &Path) {
    let receives_udp = config
        .streams
        .iter()
        .any(|s| matches!(s.source, SourceSpec::Udp(_)));
    if receives_udp {
        if let Some(rmem) =
            crate::host::sysctl(root, "net.core.rmem_max").and_then(|v| v.parse::<u64>().ok())
        {
            if rmem < RMEM_MAX_WANTED {
                tracing::warn!(
                    rmem_max = rmem,
                    profile = RMEM_MAX_WANTED,
                    "net.core.rmem_max is below the tuning profile's: UDP ingest bursts may be dropped by the kernel (shardcast tune check)"
                );
            }
        }
    }
    // Segments live in memfds, which take their folio sizes from this one setting.
    let shmem = crate::host::sysfs(root, SHMEM_ENABLED);
    if !config.streams.is_empty() && shmem.as_deref() == Some("never") {
        tracing::warn!(
            shmem_enabled = "never",
            profile = "within_size",
            "HLS segments are kept in 4 KiB pages: every viewer's sendfile looks up each page (shardcast tune check)"
        );
    }
    let nics = crate::host::nics(root);
    for overlap in crate::host::irq_overlaps(root, &nics, &config.cpus) {
        tracing::warn!(
            nic = %overlap.nic,
            irq = overlap.irq,
            shard_cpus = ?overlap.shard_cpus,
            "a NIC interrupt is delivered on a core that runs a shard: its softirq work competes with the shard's loop (shardcast tune check)"
        );
    }
}

/// One listener per shard on the same address (SO_REUSEPORT); port 0 picks one port for all.
///
/// SO_REUSEPORT would also let a second server of the same user share the port and silently
/// take half the connections, so the address is first bound once without it: a port already
/// in use is refused.
fn bind_listeners(addr: SocketAddr, count: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut out = Vec::with_capacity(count);
    let mut addr = addr;
    if addr.port() != 0 {
        let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        probe.set_reuse_address(true)?;
        probe.bind(&addr.into()).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                std::io::Error::new(
                    e.kind(),
                    "the address is in use (another server, or another shardcast, listens there)",
                )
            } else {
                e
            }
        })?;
    }
    for _ in 0..count {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(4096)?;
        let listener: std::net::TcpListener = socket.into();
        addr = listener.local_addr()?;
        out.push(listener);
    }
    Ok(out)
}

/// The key the HLS proxy signs the URLs it hands out with: kept in the state directory (so
/// they stay good across restarts and upgrades), or, when it cannot be, made for this run.
fn proxy_key(config: &Config) -> String {
    use crate::control::token;
    let dir = token::state_dir(None, config.state_dir.as_deref());
    match token::stored_or_new(&dir, token::PROXY_KEY_FILE) {
        Ok((key, _)) => key,
        Err(e) => {
            let mut bytes = [0u8; 32];
            let _ = getrandom::fill(&mut bytes);
            if !config.proxies.is_empty() || config.proxy.any_url {
                tracing::warn!("cannot keep the proxy's key ({e}): the proxy URLs players hold stop working at the next restart");
            }
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        }
    }
}
