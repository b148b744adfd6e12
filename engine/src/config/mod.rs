//! Configuration: TOML file or the embedded default (HTTP on 0.0.0.0:8080, a `demo` stream).
//!
//! ```toml
//! [server]
//! listen = "0.0.0.0:8080"        # or "[::]:8080" (IPv6)
//! cpus = [0, 1]                   # default: every CPU this process may run on
//! io = "auto"                     # auto (io_uring, else epoll with a log line) | io_uring | epoll
//! max_connections_per_shard = 20000
//! header_timeout = 10             # seconds to send a request head
//! idle_timeout = 30               # seconds without progress before a connection is closed
//! max_lag = 4194304               # bytes a viewer may fall behind before it skips
//! flush_interval = 20             # ms new data may wait so viewers get fewer, larger writes
//! gather = 1                      # ms a shard's wait lets events gather once one is in
//!                                 # (fewer wake-ups under many ingest datagrams; 0: none)
//! ingest_interval = 100           # ms between reads of a UDP stream no progressive viewer,
//!                                 # push or recording waits on (0: read each datagram as it comes)
//! send_buffer = 0                 # SO_SNDBUF per viewer in bytes (0: kernel autotuning)
//! segment_send = "auto"           # how HLS segments go out: auto | copy | sendfile | zerocopy
//! state_dir = "/var/lib/shardcast" # default: $STATE_DIRECTORY, /var/lib/shardcast as root,
//!                                  # else ~/.local/state/shardcast
//! session_timeout = 20            # seconds without a request or connection ending a session
//! access_log = "/var/log/shardcast/access.log"  # a JSON line per ended session
//!                                  # default: $LOGS_DIRECTORY/access.log, else none
//! public_base_url = "https://tv.example.com/live/"  # written into stream info and embeds
//! trusted_proxies = ["127.0.0.1", "10.0.0.0/8"]     # X-Forwarded-* believed from these only
//! max_connections_per_address = 4096  # open connections from one address (0: no cap)
//! max_queued = 1048576            # bytes of responses queued before a connection's further
//! max_pipelined = 16              # requests (or this many responses) wait unread
//! min_send_rate = 4096            # bytes/s a backlogged connection must take (0: no minimum)
//! max_sessions = 100000           # viewer sessions a shard tracks; more are refused (503)
//! max_sessions_per_stream = 50000 # of one stream
//! max_access_checks = 64          # access decisions (backend, blocking triggers) at once
//! max_access_checks_per_address = 8  # of one viewer address; past either: 503 Retry-After
//! wildcard_starts_per_minute = 10 # wildcard instances one address may start per minute
//! max_pushes = 32                 # HTTP push connections open at once (deciding or pushing),
//!                                 # and as many RTMP connections
//! max_push_outs = 64              # streams sent on at once (push = [...] and the API's)
//! access_log_max_bytes = 104857600  # the access log is rotated past this size
//! access_log_files = 5            # rotated access logs kept (access.log.1 …)
//! proxy_any_url = false           # HLS proxy: serve /proxy/{base64 URL}.m3u8 at all
//! proxy_hosts = []                # … for these hosts ("example.com", ".example.com", "*")
//! proxy_allow_addresses = []      # networks upstreams may be in that the SSRF guard refuses
//! proxy_cache_bytes = 268435456   # the proxy's cache (least recently used out first)
//! proxy_max_object = 67108864     # largest upstream answer (larger: 502)
//! proxy_timeout = 10              # seconds for an upstream request and its retries (504)
//! proxy_max_fetches = 64          # upstream requests in flight (past it: 503)
//! proxy_prefetch = 2              # newest segments of a live playlist fetched ahead
//! proxy_access = { url = "…" }    # the token backend for upstream URLs named in paths
//!
//! [server.tls]                    # viewers over TLS as well (none by default)
//! listen = "0.0.0.0:8443"
//! cert = "/etc/shardcast/tls/fullchain.pem"  # PEM chain, end-entity first; read again on
//! key = "/etc/shardcast/tls/privkey.pem"     # SIGHUP and POST /api/v1/tls/reload
//! [[server.tls.certificates]]     # more, chosen by SNI (cert, key)
//!
//! [api]
//! listen = "127.0.0.1:4242"       # the JSON API and /metrics; "off" for none
//! token = "…"                     # bearer token; default: generated once, kept in state_dir
//! metrics_need_token = false      # /metrics without the token (the listener is loopback)
//! tls = false                     # the API over TLS with [server.tls]'s certificates
//!
//! [[stream]]
//! name = "cam1"
//! source = "udp://239.1.1.1:5000?source=10.0.0.7&iface=eth1&program=2"
//!                                 # or tcp://0.0.0.0:9000?allow=10.0.0.0/8 (an encoder
//!                                 # connects), tcp://host:9000?mode=connect, file:///x.ts
//!                                 # or a list: the first live one feeds the stream
//!                                 # source = ["udp://239.1.1.1:5000", "tcp://b:9000?mode=connect"]
//! failover = { dry = 1, back_after = 10 }  # a list's switch after this many seconds without
//!                                 # data; back to an earlier source live again this long
//!                                 # (0: never)
//! window = 10                     # seconds of stream kept for joining viewers
//! segment_duration = 2            # HLS: cut at the first keyframe this many seconds in
//! playlist_segments = 6           # HLS: segments listed in the live playlist
//! segment_grace = 10              # HLS: seconds a segment stays fetchable once unlisted
//! dvr = 0                         # HLS: seconds kept for time-shifted playlists
//!                                 # (/{name}/index.m3u8?start=-300 or ?start=ISO-TIME), in
//!                                 # memory within max_hls_bytes (1 GiB unless set, with dvr)
//! part_duration = 0.333           # low-latency HLS: parts of at most this long (default 0: off)
//! cmaf = false                    # also CMAF (fMP4): HLS at /{name}/cmaf/index.m3u8, DASH at
//!                                 # /{name}/manifest.mpd (H.264, H.265, AAC)
//! access = { url = "http://127.0.0.1:9000/check", ttl = 60, timeout = 2, on_error = "deny" }
//! public_cache = false            # a gated stream's media may be kept by shared caches
//! required = false                # /readyz answers 503 while this stream is not live
//! push = ["udp://239.2.2.2:5000?ttl=4&rtp=1", "tcp://10.0.0.9:9000",
//!         "http://origin.example:8080/push/cam1?key=…"]  # sent on while the stream runs
//!                                 # (udp: paced by its PCRs, delay= ms of room, 200 default)
//! record = { path = "/var/lib/shardcast/rec/{stream}/{start}.ts", rotate = 3600,
//!            max_age = 604800, max_bytes = 10737418240, enabled = true }
//!                                 # files cut at keyframes; rotate: seconds of media per file
//! max_buffer = 33554432           # bytes held for progressive viewers (oldest dropped first)
//! max_segment = 33554432          # bytes of one HLS segment (larger ones are dropped)
//! max_hls_bytes = 134217728       # bytes of HLS segments held, listed and in grace
//! source_timeout = 30             # seconds without data before progressive viewers are closed
//! wildcard = { instances = 16, ports = [5000, 5999], pattern = "[0-9]+" }  # a template
//!
//! [[proxy]]                       # the HLS proxy: /proxy/news.m3u8 re-serves this upstream
//! name = "news"
//! url = "https://origin.example/live/master.m3u8"
//! headers = { Referer = "https://news.example/" }  # sent upstream with every request
//! access = { url = "http://127.0.0.1:9000/check" } # as a stream's (sessions of proxy/news)
//!
//! [[trigger]]
//! on = "USER_NEW"                 # MistServer's trigger names (TRIGGERS)
//! handler = "http://127.0.0.1:9000/hook"   # or an absolute path to an executable
//! streams = ["cam1"]              # default: every stream
//! timeout = 5                     # seconds a blocking trigger waits
//! default = "true"                # its answer when the handler fails
//! ```
//!
//! A stream whose source has `$wildcard`, or that has a `wildcard` table, is a template:
//! `name+x` runs an instance of it with `x` there, if `x` is what the table allows.
//! Every refusal names the line and the reason. Applying a configuration to a running server
//! is the control plane's ([`crate::control::store`]).

mod changes;
mod file;
mod validate;

use crate::hls::{HlsSettings, SegmentSend};
use crate::source::SourceSpec;
use crate::stream::StreamLimits;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::Path;

/// A validated configuration.
///
/// Streams and triggers apply while the server runs; every other setting at the next
/// restart. Which settings changed is read from their serialization under the names the file
/// gives them ([`Config::settings_needing_restart`]), so a new setting cannot be left out.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// CPUs to run a shard on, one shard each.
    pub cpus: Vec<usize>,
    /// The I/O backend.
    pub io: IoBackend,
    /// Connection cap per shard.
    pub max_connections_per_shard: usize,
    /// Seconds allowed for a request head.
    #[serde(rename = "header_timeout")]
    pub header_timeout_s: f64,
    /// Seconds without progress before a connection is closed.
    #[serde(rename = "idle_timeout")]
    pub idle_timeout_s: f64,
    /// Bytes a viewer may fall behind before it skips to the newest keyframe.
    #[serde(rename = "max_lag")]
    pub max_lag_bytes: usize,
    /// Milliseconds new data may wait before viewers are written to (0: at once).
    #[serde(rename = "flush_interval")]
    pub flush_interval_ms: f64,
    /// Milliseconds a shard's wait lets events gather once the first is in, so a burst of
    /// ingest datagrams and requests is one wake-up, not one each (0: wake for each).
    #[serde(rename = "gather")]
    pub gather_ms: f64,
    /// Milliseconds between reads of a UDP source's socket while nothing waits on its stream
    /// byte by byte (no progressive viewer, push or recording): one wake-up per interval
    /// instead of one per datagram, or more often while the socket's receive buffer needs it
    /// (0: every datagram as it comes).
    #[serde(rename = "ingest_interval")]
    pub ingest_interval_ms: f64,
    /// SO_SNDBUF for viewer sockets (0: leave it to the kernel's autotuning).
    pub send_buffer: usize,
    /// How sealed HLS segments are sent.
    pub segment_send: SegmentSend,
    /// The streams (applied live).
    #[serde(skip)]
    pub streams: Vec<StreamConfig>,
    /// The public base URL written into what the server hands out (with a trailing slash).
    pub public_base_url: Option<String>,
    /// Peers whose X-Forwarded-* / X-Real-IP / X-Mst-Path headers are believed.
    pub trusted_proxies: Vec<crate::site::Cidr>,
    /// The API and metrics listener; `None`: no API.
    #[serde(rename = "api.listen")]
    pub api_listen: Option<SocketAddr>,
    /// The API's bearer token; `None`: generated once and kept in the state directory.
    #[serde(rename = "api.token")]
    pub api_token: Option<String>,
    /// Whether `/metrics` needs the API token too.
    #[serde(rename = "api.metrics_need_token")]
    pub metrics_need_token: bool,
    /// The API (and metrics) over TLS, with the viewers' certificates.
    #[serde(rename = "api.tls")]
    pub api_tls: bool,
    /// The viewers' TLS listener; `None`: no TLS.
    #[serde(rename = "server.tls.listen")]
    pub tls_listen: Option<SocketAddr>,
    /// The TLS certificates, the first for clients that name no server (read again on
    /// SIGHUP and `POST /api/v1/tls/reload`: applied live).
    #[serde(skip)]
    pub tls_certificates: Vec<crate::tls::CertFiles>,
    /// Where state (a generated API token) is kept; `None`: the default (see
    /// [`crate::control::token::state_dir`]).
    pub state_dir: Option<std::path::PathBuf>,
    /// Seconds without a request or an open connection after which a viewer session ends.
    #[serde(rename = "session_timeout")]
    pub session_timeout_s: f64,
    /// Where a JSON line is appended for every session that ends; `None`: no access log.
    pub access_log: Option<std::path::PathBuf>,
    /// Triggers (applied live).
    #[serde(skip)]
    pub triggers: Vec<TriggerConfig>,
    /// Bounds of what outsiders can grow.
    #[serde(flatten)]
    pub limits: ServerLimits,
    /// The HLS proxy's settings.
    #[serde(flatten)]
    pub proxy: ProxySettings,
    /// The configured proxies (applied live).
    #[serde(skip)]
    pub proxies: Vec<ProxyConfig>,
}

/// The server's bounds on what viewers and sources can make it hold (README: "Limits and
/// protection").
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServerLimits {
    /// Connections one address may have open at once (trusted proxies exempt; 0: no cap).
    pub max_connections_per_address: u32,
    /// Bytes of responses a connection may have queued before its further requests wait.
    pub max_queued: usize,
    /// Responses a connection may have queued before its further requests wait.
    pub max_pipelined: usize,
    /// Bytes per second a connection with something queued must take (0: no minimum).
    pub min_send_rate: u64,
    /// Viewer sessions a shard (and the control plane) tracks at once.
    pub max_sessions: usize,
    /// Of one stream.
    pub max_sessions_per_stream: usize,
    /// Access decisions (token backend calls, blocking triggers) in progress at once.
    pub max_access_checks: usize,
    /// Of one viewer address.
    pub max_access_checks_per_address: usize,
    /// Wildcard instances one address may start per minute.
    pub wildcard_starts_per_minute: u32,
    /// HTTP push connections open at once, being decided or pushing; past it: 503.
    pub max_pushes: usize,
    /// Streams sent on at once (pushes out, re-emissions); past it a push does not start.
    pub max_push_outs: usize,
    /// The access log is rotated when it would grow past this many bytes.
    pub access_log_max_bytes: u64,
    /// Rotated access logs kept.
    pub access_log_files: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections_per_address: 4096,
            max_queued: 1 << 20,
            max_pipelined: 16,
            min_send_rate: 4096,
            max_sessions: 100_000,
            max_sessions_per_stream: 50_000,
            max_access_checks: 64,
            max_access_checks_per_address: 8,
            wildcard_starts_per_minute: 10,
            max_pushes: 32,
            max_push_outs: 64,
            access_log_max_bytes: 100 << 20,
            access_log_files: 5,
        }
    }
}

/// A configured proxy: `[[proxy]]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ProxyConfig {
    /// Served at `/proxy/{name}.m3u8`.
    pub name: String,
    /// The upstream playlist (multivariant or media).
    pub url: String,
    /// Header lines sent upstream with every request of this proxy (Referer, Origin,
    /// User-Agent, Cookie…).
    pub headers: Vec<(String, String)>,
    /// The token backend its viewers are checked with, as a stream's `access`.
    pub access: Option<AccessConfig>,
}

/// The proxy's server-wide settings (read at start).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProxySettings {
    /// Whether upstream URLs named in request paths are served at all.
    #[serde(rename = "proxy_any_url")]
    pub any_url: bool,
    /// With `any_url`: the hosts they may name (`example.com`, `.example.com` for its
    /// subdomains too, `*` for every host).
    #[serde(rename = "proxy_hosts")]
    pub hosts: Vec<String>,
    /// Networks upstreams may be in that the SSRF guard refuses otherwise (loopback, private,
    /// link-local…).
    #[serde(rename = "proxy_allow_addresses")]
    pub allow_addresses: Vec<String>,
    /// Bytes the cache holds at most.
    #[serde(rename = "proxy_cache_bytes")]
    pub cache_bytes: usize,
    /// Largest upstream answer taken (larger: 502).
    #[serde(rename = "proxy_max_object")]
    pub max_object: usize,
    /// Seconds an upstream request may take, retries included (longer: 504).
    #[serde(rename = "proxy_timeout")]
    pub timeout_s: f64,
    /// Upstream requests in flight at once, at most (past it: 503).
    #[serde(rename = "proxy_max_fetches")]
    pub max_fetches: usize,
    /// Newest segments of a live playlist fetched before anyone asks.
    #[serde(rename = "proxy_prefetch")]
    pub prefetch: usize,
    /// With `any_url`: the token backend viewers of upstream URLs named in paths are checked
    /// with (sessions of `proxy/_`).
    #[serde(rename = "proxy_access")]
    pub access: Option<AccessConfig>,
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            any_url: false,
            hosts: Vec::new(),
            allow_addresses: Vec::new(),
            cache_bytes: 256 << 20,
            max_object: 64 << 20,
            timeout_s: 10.0,
            max_fetches: 64,
            prefetch: 2,
            access: None,
        }
    }
}

impl ProxySettings {
    /// Whether `url`'s host is one `proxy_hosts` lists.
    pub fn host_allowed(&self, url: &str) -> bool {
        let Some(host) = url::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(|h| h.to_ascii_lowercase()))
        else {
            return false;
        };
        self.hosts.iter().any(|allowed| {
            allowed == "*"
                || match allowed.strip_prefix('.') {
                    Some(domain) => host == domain || host.ends_with(allowed.as_str()),
                    None => host == *allowed,
                }
        })
    }
}

/// Wildcard instances running at once, at most, of all templates together (beyond, new ones
/// are refused); each template has its own cap too (`wildcard.instances`).
pub const MAX_WILDCARD_INSTANCES: usize = 10_000;

/// What a wildcard template allows: how many instances, and what a viewer's name may fill
/// into the source.
#[derive(Clone, Debug)]
pub struct WildcardRule {
    /// Instances of the template running at once, at most.
    pub instances: usize,
    /// The wildcard must be a number in this range (for a port).
    pub ports: Option<(u16, u16)>,
    /// The wildcard must match this pattern, whole.
    pub pattern: Option<WildcardPattern>,
}

impl Default for WildcardRule {
    fn default() -> Self {
        Self {
            instances: 16,
            ports: None,
            pattern: None,
        }
    }
}

impl PartialEq for WildcardRule {
    fn eq(&self, other: &Self) -> bool {
        self.instances == other.instances
            && self.ports == other.ports
            && self.pattern.as_ref().map(WildcardPattern::as_str)
                == other.pattern.as_ref().map(WildcardPattern::as_str)
    }
}

/// A wildcard pattern that does not compile (or would be too large).
#[derive(Debug, thiserror::Error)]
#[error("wildcard pattern {text:?}: {source}")]
pub struct PatternError {
    text: String,
    source: regex::Error,
}

/// Why a name does not make an instance of a template.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// The stream is not a template.
    #[error("{0} is not a wildcard template (no $wildcard in its source, no wildcard table)")]
    NotATemplate(String),
    /// The part after `+` has characters a wildcard cannot have.
    #[error("{0:?} is not a wildcard (letters, digits, - _ .)")]
    NotAWildcard(String),
    /// The template takes a port in a range.
    #[error("{wildcard:?} is not a port from {low} to {high}")]
    NotAPort {
        /// What was asked for.
        wildcard: String,
        /// The range's first port.
        low: u16,
        /// Its last.
        high: u16,
    },
    /// The template takes what matches a pattern.
    #[error("{wildcard:?} does not match the pattern {pattern:?}")]
    NoMatch {
        /// What was asked for.
        wildcard: String,
        /// The template's pattern.
        pattern: String,
    },
    /// The source it makes does not parse.
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
}

/// A compiled wildcard pattern (anchored at both ends).
#[derive(Clone, Debug)]
pub struct WildcardPattern {
    text: String,
    regex: regex::Regex,
}

impl WildcardPattern {
    /// Compile `text`, which must match a whole wildcard.
    pub fn new(text: &str) -> Result<Self, PatternError> {
        let regex = regex::RegexBuilder::new(&format!("^(?:{text})$"))
            .size_limit(1 << 16)
            .build()
            .map_err(|source| PatternError {
                text: text.to_owned(),
                source,
            })?;
        Ok(Self {
            text: text.to_owned(),
            regex,
        })
    }

    /// The pattern as configured.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `wildcard` matches.
    pub fn matches(&self, wildcard: &str) -> bool {
        self.regex.is_match(wildcard)
    }
}

/// Which I/O backend the shards run on.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum IoBackend {
    /// io_uring when the kernel allows it, epoll otherwise (saying why in one log line).
    #[default]
    Auto,
    /// io_uring or refuse to start.
    IoUring,
    /// epoll.
    Epoll,
}

/// An `--io` that is not a backend.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not an io backend (auto, io_uring, epoll)")]
pub struct UnknownBackend(String);

impl std::str::FromStr for IoBackend {
    type Err = UnknownBackend;
    fn from_str(s: &str) -> Result<Self, UnknownBackend> {
        match s {
            "auto" => Ok(Self::Auto),
            "io_uring" => Ok(Self::IoUring),
            "epoll" => Ok(Self::Epoll),
            _ => Err(UnknownBackend(s.to_owned())),
        }
    }
}

/// One configured stream.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamConfig {
    /// The name in URLs (`/{name}.ts`).
    pub name: String,
    /// Where it comes from.
    pub source: SourceSpec,
    /// The source as configured (a URL; the first of a list).
    pub source_url: String,
    /// Every URL of a failover list (one when `source` is a single URL).
    pub source_urls: SourceUrls,
    /// Seconds kept for joining viewers.
    pub window_s: f64,
    /// HLS segmenting and playlist settings.
    pub hls: HlsSettings,
    /// Token access control: who may watch is asked of this backend.
    pub access: Option<AccessConfig>,
    /// Bounds of its buffers.
    pub limits: StreamLimits,
    /// What its wildcard instances may be, when it is a template with a `wildcard` table.
    pub wildcard: Option<WildcardRule>,
    /// The server is ready (`/readyz`) only while this stream is live.
    pub required: bool,
    /// Where it is sent on while it runs (push target URLs, checked).
    pub push: Vec<String>,
    /// How it is recorded.
    pub record: Option<RecordConfig>,
}

/// A stream's `source`: one URL, or a failover list of them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(untagged)]
pub enum SourceUrls {
    /// One source.
    One(String),
    /// Sources in order of preference.
    Many(Vec<String>),
}

impl Default for SourceUrls {
    fn default() -> Self {
        SourceUrls::One(String::new())
    }
}

impl From<&str> for SourceUrls {
    fn from(url: &str) -> Self {
        SourceUrls::One(url.to_owned())
    }
}

impl SourceUrls {
    /// The URLs, first preferred.
    pub fn urls(&self) -> &[String] {
        match self {
            SourceUrls::One(url) => std::slice::from_ref(url),
            SourceUrls::Many(urls) => urls,
        }
    }

    /// The first (preferred) URL.
    pub fn first(&self) -> &str {
        self.urls().first().map_or("", String::as_str)
    }
}

/// A stream's viewer access control (as Flashphoner WCS does it): the viewer's token and
/// session facts are POSTed as JSON to `url`; 200 allows (the headers it returns are added to
/// the viewer's responses), 403 denies (the viewer gets 401).
#[derive(Clone, Debug, PartialEq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// The backend, http:// or https://.
    pub url: String,
    /// Seconds a decision is kept for the session.
    #[serde(default = "default_access_ttl")]
    pub ttl: f64,
    /// Seconds to wait for the backend.
    #[serde(default = "default_access_timeout")]
    pub timeout: f64,
    /// When the backend cannot be asked (down, slow, an unexpected answer): `deny` (the
    /// viewer gets 503) or `allow`.
    #[serde(default)]
    pub on_error: OnError,
}

/// A stream's recording (`record = { … }`, see [`crate::output::push_out::record`]).
#[derive(Clone, Debug, PartialEq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordConfig {
    /// The path template: absolute, `{start}` in the file name.
    pub path: String,
    /// Seconds of media per file (0: one file for as long as it records).
    #[serde(default = "default_rotate")]
    pub rotate: f64,
    /// Seconds a file is kept (none: for ever).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<f64>,
    /// Bytes the recording's files may hold; the oldest go first (none: no bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// Whether it records when the stream starts (else only once the API starts it).
    #[serde(default = "default_true")]
    pub enabled: bool,
}

fn default_rotate() -> f64 {
    3600.0
}

fn default_true() -> bool {
    true
}

impl RecordConfig {
    /// How the recording runs.
    pub fn spec(&self) -> crate::output::push_target::RecordSpec {
        crate::output::push_target::RecordSpec {
            path: self.path.clone(),
            rotate: std::time::Duration::from_secs_f64(self.rotate),
            max_age: self.max_age.map(std::time::Duration::from_secs_f64),
            max_bytes: self.max_bytes,
        }
    }

    /// Why it is refused, if it is.
    pub fn check(&self) -> Result<(), String> {
        crate::output::push_target::check_template(&self.path)?;
        if self.rotate != 0.0 && !(1.0..=86_400.0 * 7.0).contains(&self.rotate) {
            return Err(format!(
                "record rotate is {}: 0 (never) or 1 to 604800 seconds",
                self.rotate
            ));
        }
        if self.max_age.is_some_and(|a| !(60.0..=1e9).contains(&a)) {
            return Err("record max_age must be 60 seconds or more".into());
        }
        if self.max_bytes.is_some_and(|b| b < 1 << 20) {
            return Err("record max_bytes must be 1 MiB (1048576) or more".into());
        }
        Ok(())
    }
}

/// What an unanswered access check or blocking trigger decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Refuse (fail closed).
    #[default]
    Deny,
    /// Let the viewer in (fail open).
    Allow,
}

fn default_access_ttl() -> f64 {
    60.0
}
fn default_access_timeout() -> f64 {
    2.0
}

/// One trigger: MistServer's name, a handler (a URL POSTed to, or an executable run with the
/// trigger name as its argument and the payload on stdin), the streams it applies to.
#[derive(Clone, Debug, PartialEq)]
pub struct TriggerConfig {
    /// The trigger's name (`USER_NEW`, `STREAM_BUFFER`, …).
    pub on: String,
    /// `http(s)://…` or an absolute path.
    pub handler: String,
    /// Only these streams (empty: all).
    pub streams: Vec<String>,
    /// Seconds a blocking trigger waits for its answer.
    pub timeout_s: f64,
    /// The answer a blocking trigger takes when its handler fails or is too slow.
    pub default: String,
}

/// Triggers shardcast fires, with MistServer's names: the blocking ones wait for an answer.
pub const TRIGGERS: [(&str, bool); 25] = [
    ("USER_NEW", true),
    ("CONN_PLAY", true),
    ("STREAM_SOURCE", true),
    ("PUSH_REWRITE", true),
    // shardcast's own: a failover list switched sources (stream, from, to, why).
    ("SOURCE_SWITCH", false),
    ("DEFAULT_STREAM", true),
    ("PLAY_REWRITE", true),
    ("STREAM_ADD", true),
    ("STREAM_CONFIG", true),
    ("STREAM_REMOVE", true),
    ("STREAM_BUFFER", false),
    ("STREAM_READY", false),
    ("STREAM_END", false),
    ("CONN_OPEN", false),
    ("CONN_CLOSE", false),
    ("USER_END", false),
    ("INPUT_ABORT", false),
    ("LIVE_TRACK_LIST", false),
    ("SYSTEM_START", false),
    ("SYSTEM_STOP", false),
    ("STREAM_UNLOAD", false),
    ("OUTPUT_END", false),
    // A stream is about to be sent on (stream, target): the answer is the target to use.
    ("PUSH_OUT_START", true),
    // A push out ended (id, stream, target, target used, its last log lines, its status).
    ("PUSH_END", false),
    // A recording finished a file (stream, path, TS, bytes, seconds, start, end, media ms,
    // first and last media time ms).
    ("RECORDING_END", false),
];

/// In a source URL, replaced by the part after `+` of a wildcard instance's name.
pub const WILDCARD: &str = "$wildcard";

impl StreamConfig {
    /// Whether it is a template (`$wildcard` in the source, or a `wildcard` table): only its
    /// instances receive.
    pub fn is_template(&self) -> bool {
        self.source_url.contains(WILDCARD) || self.wildcard.is_some()
    }

    /// What its wildcard instances may be (the defaults when it has no `wildcard` table).
    pub fn wildcard_rule(&self) -> WildcardRule {
        self.wildcard.clone().unwrap_or_default()
    }

    /// The configuration of wildcard instance `base+wildcard` of this template: the same
    /// settings, `$wildcard` in the source replaced. Refused when this is not a template or
    /// the wildcard is not one it allows.
    pub fn instance(&self, wildcard: &str) -> Result<StreamConfig, InstanceError> {
        if !self.is_template() {
            return Err(InstanceError::NotATemplate(self.name.clone()));
        }
        if wildcard.is_empty()
            || wildcard.len() > 64
            || !wildcard
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(InstanceError::NotAWildcard(wildcard.to_owned()));
        }
        let rule = self.wildcard_rule();
        if let Some((low, high)) = rule.ports {
            let port = wildcard
                .parse::<u16>()
                .ok()
                .filter(|p| (low..=high).contains(p) && wildcard.len() <= 5);
            if port.is_none() {
                return Err(InstanceError::NotAPort {
                    wildcard: wildcard.to_owned(),
                    low,
                    high,
                });
            }
        }
        if let Some(pattern) = &rule.pattern {
            if !pattern.matches(wildcard) {
                return Err(InstanceError::NoMatch {
                    wildcard: wildcard.to_owned(),
                    pattern: pattern.as_str().to_owned(),
                });
            }
        }
        let source_url = self.source_url.replace(WILDCARD, wildcard);
        let source = SourceSpec::parse(&source_url)?;
        Ok(StreamConfig {
            name: format!("{}+{wildcard}", self.name),
            source,
            source_urls: SourceUrls::One(source_url.clone()),
            source_url,
            wildcard: None,
            // Made on demand: no load balancer waits for one.
            required: false,
            push: self
                .push
                .iter()
                .map(|p| p.replace(WILDCARD, wildcard))
                .collect(),
            ..self.clone()
        })
    }
}

/// An API token is 16 to 256 visible ASCII characters.
pub fn valid_api_token(token: &str) -> bool {
    (16..=256).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_graphic())
}

/// The embedded default configuration's text: every setting at its default, one demo stream.
pub const EMBEDDED: &str = "[[stream]]\nname = \"demo\"\nsource = \"demo:\"\n";

/// Where the running configuration comes from: a file (or the embedded default) with the
/// command line's overrides on top. SIGHUP loads it again the same way.
#[derive(Clone, Debug, Default)]
pub struct ConfigSource {
    /// The file; `None` runs the embedded default.
    pub path: Option<std::path::PathBuf>,
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--io`.
    pub io: Option<IoBackend>,
    /// `--api-listen` (`Some(None)`: `off`).
    pub api_listen: Option<Option<SocketAddr>>,
    /// `--state-dir`.
    pub state_dir: Option<std::path::PathBuf>,
}

impl ConfigSource {
    /// Load (or load again) the configuration.
    pub fn load(&self) -> Result<Config, LoadError> {
        let mut config = match &self.path {
            Some(path) => Config::load(path)?,
            None => Config::embedded(),
        };
        self.override_settings(&mut config);
        Ok(config)
    }

    /// Put the command line's settings over `config`'s.
    pub fn override_settings(&self, config: &mut Config) {
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(io) = self.io {
            config.io = io;
        }
        if let Some(api) = self.api_listen {
            config.api_listen = api;
        }
        if let Some(dir) = &self.state_dir {
            config.state_dir = Some(dir.clone());
        }
    }
}

/// Why a configuration file was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// It cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It does not validate.
    #[error("configuration {} refused ({source})", path.display())]
    Refused {
        /// The file.
        path: std::path::PathBuf,
        /// The line and the reason.
        source: ConfigError,
    },
    /// Its TLS certificates do not load (the running ones stay).
    #[error("TLS certificates refused: {0}")]
    Certificates(#[from] crate::tls::CertError),
}

/// A refused configuration.
#[derive(Debug, thiserror::Error)]
#[error("{}{message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
pub struct ConfigError {
    /// The line of the file the error is on, when known.
    pub line: Option<usize>,
    /// The reason.
    pub message: String,
}

impl Config {
    /// The embedded default: HTTP on 0.0.0.0:8080, every CPU, one `demo` stream.
    pub fn embedded() -> Config {
        Self::parse(EMBEDDED)
            .unwrap_or_else(|e| unreachable!("the embedded configuration is valid: {e}"))
    }

    /// Read and validate a file.
    pub fn load(path: &Path) -> Result<Config, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|source| LoadError::Refused {
            path: path.to_owned(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_default_serves_the_demo() {
        let c = Config::embedded();
        assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.streams.len(), 1);
        assert_eq!(c.streams[0].source, SourceSpec::Demo);
        assert!(!c.cpus.is_empty());
    }

    #[test]
    fn gather_is_a_millisecond_unless_set_within_ten() {
        assert_eq!(Config::embedded().gather_ms, 1.0);
        let off = Config::parse("[server]\ngather = 0\n").unwrap();
        assert_eq!(off.gather_ms, 0.0);
        for (bad, why) in [
            ("gather = 11", "gather (ms)"),
            ("gather = -1", "gather (ms)"),
            ("gather = \"soon\"", "expected f64"),
        ] {
            let e = Config::parse(&format!("[server]\n{bad}\n")).unwrap_err();
            assert!(e.to_string().contains(why), "{bad}: {e}");
            assert_eq!(e.line, Some(2), "{bad}: {e}");
        }
    }

    #[test]
    fn the_ingest_interval_is_a_hundred_milliseconds_unless_set_within_a_second() {
        assert_eq!(Config::embedded().ingest_interval_ms, 100.0);
        let off = Config::parse("[server]\ningest_interval = 0\n").unwrap();
        assert_eq!(off.ingest_interval_ms, 0.0);
        for bad in ["ingest_interval = 1001", "ingest_interval = -1"] {
            let e = Config::parse(&format!("[server]\n{bad}\n")).unwrap_err();
            assert!(e.to_string().contains("ingest_interval (ms)"), "{bad}: {e}");
            assert_eq!(e.line, Some(2), "{bad}: {e}");
        }
    }

    #[test]
    fn failover_lists_are_checked() {
        let c = Config::parse(
            "[[stream]]\nname = \"a\"\nsource = [\"udp://239.1.1.1:5000\", \"demo:\"]\n",
        )
        .unwrap();
        let SourceSpec::Failover(list) = &c.streams[0].source else {
            panic!()
        };
        assert_eq!(list.dry, std::time::Duration::from_secs(1));
        assert_eq!(list.back_after, Some(std::time::Duration::from_secs(10)));
        assert_eq!(c.streams[0].source_url, "udp://239.1.1.1:5000");
        // One URL in a list is that source.
        let c = Config::parse("[[stream]]\nname = \"a\"\nsource = [\"demo:\"]\n").unwrap();
        assert_eq!(c.streams[0].source, SourceSpec::Demo);
        for (text, why) in [
            ("source = []", "empty"),
            (
                "source = [\"demo:\", \"rist://x\"]",
                "unsupported source scheme",
            ),
            (
                "source = [\"udp://127.0.0.1:$wildcard\", \"demo:\"]",
                "wildcard",
            ),
            (
                "source = [\"udp://0.0.0.0:5000\", \"udp://127.0.0.1:5000\"]",
                "same input",
            ),
            (
                "source = [\"demo:\", \"demo:\"]\nfailover = { dry = 0 }",
                "failover dry",
            ),
        ] {
            let e = Config::parse(&format!("[[stream]]\nname = \"a\"\n{text}\n")).unwrap_err();
            assert!(e.to_string().contains(why), "{text}: {e}");
            assert!(e.line.is_some(), "{text}: {e}");
        }
    }

    #[test]
    fn proxies_and_their_settings_are_checked() {
        let c = Config::parse(
            "[server]\nproxy_any_url = true\nproxy_hosts = [\".Example.com\", \"cdn.test\"]\nproxy_allow_addresses = [\"10.0.0.0/8\", \"::1\"]\n\n\
             [[proxy]]\nname = \"news\"\nurl = \"https://origin.example/live/master.m3u8\"\nheaders = { Referer = \"https://news.example/\" }\n",
        )
        .unwrap();
        assert_eq!(c.proxy.hosts, [".example.com", "cdn.test"]);
        assert_eq!(c.proxy.allow_addresses, ["10.0.0.0/8", "::1/128"]);
        assert_eq!(c.proxies[0].name, "news");
        // A stream may pull a configured proxy (its fetches and cache shared with the
        // proxy's viewers), named in any order in the file.
        let relay = Config::parse(
            "[[stream]]\nname = \"relay\"\nsource = \"proxy://news?variant=min\"\n\n\
             [[proxy]]\nname = \"news\"\nurl = \"http://o/master.m3u8\"\n",
        )
        .unwrap();
        assert_eq!(relay.streams[0].source.proxies(), ["news"]);
        // Streams share an RTMP listener (one application or several).
        let rtmp = Config::parse(
            "[[stream]]\nname = \"a\"\nsource = \"rtmp://0.0.0.0:1935/live?key=k\"\n\
             [[stream]]\nname = \"b\"\nsource = \"rtmp://0.0.0.0:1935/studio\"\n",
        )
        .unwrap();
        assert_eq!(rtmp.streams.len(), 2);
        // And an SRT listener (told apart by stream id); a caller calls where it is told.
        let srt = Config::parse(
            "[[stream]]\nname = \"a\"\nsource = \"srt://0.0.0.0:9000\"\n\
             [[stream]]\nname = \"b\"\nsource = \"srt://0.0.0.0:9000?passphrase=0123456789\"\n\
             [[stream]]\nname = \"c\"\nsource = \"srt://encoder.example:9000?mode=caller\"\n",
        )
        .unwrap();
        assert_eq!(srt.streams.len(), 3);
        assert_eq!(
            c.proxies[0].headers,
            [("Referer".to_owned(), "https://news.example/".to_owned())]
        );
        assert!(
            c.proxy.host_allowed("http://a.example.com/x")
                && c.proxy.host_allowed("http://example.com/")
        );
        assert!(
            !c.proxy.host_allowed("http://evilexample.com/")
                && !c.proxy.host_allowed("http://cdn.test.evil/")
        );
        let proxy = |body: &str| format!("[[proxy]]\n{body}\n");
        for (text, line, why) in [
            (
                "[server]\nproxy_any_url = true\n".to_owned(),
                None,
                "needs proxy_hosts",
            ),
            (
                "[server]\nproxy_hosts = [\"a/b\"]\n".to_owned(),
                Some(2),
                "not a host name",
            ),
            (
                "[server]\nproxy_allow_addresses = [\"x\"]\n".to_owned(),
                Some(2),
                "not an address",
            ),
            (
                "[server]\nproxy_cache_bytes = 10\n".to_owned(),
                Some(2),
                "proxy_cache_bytes",
            ),
            (
                proxy("name = \"_\"\nurl = \"http://o/\""),
                Some(2),
                "proxy name",
            ),
            (
                proxy("name = \"a.b\"\nurl = \"http://o/\""),
                Some(2),
                "proxy name",
            ),
            (
                proxy("name = \"aHR0cDovL28v\"\nurl = \"http://o/\""),
                Some(2),
                "reads as an upstream URL",
            ),
            (
                proxy("name = \"a\"\nurl = \"file:///etc/passwd\""),
                Some(3),
                "http(s)://",
            ),
            (
                proxy("name = \"a\"\nurl = \"http://o/\"\nheaders = { Host = \"x\" }"),
                Some(4),
                "hop-by-hop",
            ),
            (
                proxy("name = \"a\"\nurl = \"http://o/\"\nheaders = { X = \"a\\r\\nEvil: 1\" }"),
                Some(4),
                "is not one that can be sent",
            ),
            (
                format!(
                    "{}{}",
                    proxy("name = \"a\"\nurl = \"http://o/\""),
                    proxy("name = \"a\"\nurl = \"http://p/\"")
                ),
                Some(5),
                "twice",
            ),
            (
                "[[stream]]\nname = \"proxy\"\nsource = \"demo:\"\n".to_owned(),
                Some(2),
                "taken",
            ),
            (
                format!(
                    "{}[[stream]]\nname = \"relay\"\nsource = [\"demo:\", \"proxy://nope\"]\n",
                    proxy("name = \"news\"\nurl = \"http://o/\"")
                ),
                Some(6),
                "proxy://nope names no [[proxy]]",
            ),
            (
                "[[stream]]\nname = \"relay\"\nsource = \"proxy://news?variant=big\"\n".to_owned(),
                Some(3),
                "variant=big",
            ),
            (
                "[[stream]]\nname = \"a\"\nsource = \"rtmp://0.0.0.0:1935/live\"\n[[stream]]\nname = \"b\"\nsource = \"rtmp://127.0.0.1:1935/live\"\n".to_owned(),
                Some(6),
                "takes RTMP on 127.0.0.1:1935",
            ),
            (
                "[[stream]]\nname = \"a\"\nsource = \"rtmp://0.0.0.0:1935/live\"\n[[stream]]\nname = \"b\"\nsource = \"tcp://0.0.0.0:1935\"\n".to_owned(),
                Some(6),
                "listens on TCP port 1935",
            ),
            (
                "[[stream]]\nname = \"a\"\nsource = \"srt://0.0.0.0:9000\"\n[[stream]]\nname = \"b\"\nsource = \"srt://127.0.0.1:9000\"\n".to_owned(),
                Some(6),
                "takes SRT on 127.0.0.1:9000",
            ),
            (
                "[[stream]]\nname = \"a\"\nsource = \"srt://0.0.0.0:9000\"\n[[stream]]\nname = \"b\"\nsource = \"udp://239.1.1.1:9000\"\n".to_owned(),
                Some(6),
                "where stream \"a\" takes SRT",
            ),
            (
                "[[stream]]\nname = \"a\"\nsource = \"udp://127.0.0.1:9000\"\n[[stream]]\nname = \"b\"\nsource = \"srt://0.0.0.0:9000\"\n".to_owned(),
                Some(6),
                "takes that UDP port otherwise",
            ),
            (
                "[[stream]]\nname = \"a\"\nsource = \"srt://0.0.0.0:9000?passphrase=short\"\n".to_owned(),
                Some(3),
                "10 to 79 characters",
            ),
        ] {
            let e = Config::parse(&text).unwrap_err();
            assert!(e.to_string().contains(why), "{text}: {e}");
            assert_eq!(e.line, line, "{text}: {e}");
        }
    }

    #[test]
    fn errors_name_the_line_and_the_reason() {
        let e = Config::parse("[server]\nlisten = \"0.0.0.0:8080\"\n\n[[stream]]\nname = \"a\"\nsource = \"rist://x\"\n").unwrap_err();
        assert_eq!(e.line, Some(6), "{e}");
        assert!(e.to_string().contains("unsupported source scheme"), "{e}");
        let e = Config::parse("[server]\nlisten = 8080\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        let e = Config::parse("[server]\nlisten = \"nowhere\"\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        let e = Config::parse("[sever]\n").unwrap_err();
        assert_eq!(e.line, Some(1), "{e}");
        let e = Config::parse("[[stream]]\nname = \"a\"\nsource = \"demo:\"\n[[stream]]\nname = \"a\"\nsource = \"demo:\"\n").unwrap_err();
        assert_eq!(e.line, Some(5), "{e}");
        // The server's own paths are not streams' names.
        for taken in ["proxy", "vod"] {
            let e = Config::parse(&format!(
                "[[stream]]\nname = \"{taken}\"\nsource = \"demo:\"\n"
            ))
            .unwrap_err();
            assert_eq!(e.line, Some(2), "{e}");
            assert!(e.to_string().contains("is taken"), "{e}");
        }
        let e =
            Config::parse("[[stream]]\nname = \"a\"\nsource = \"demo:\"\nsegment_duration = 0.1\n")
                .unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        // Parts: 0.1 s to half a segment, or none.
        for part in ["0.05", "1.5", "-1"] {
            let e = Config::parse(&format!(
                "[[stream]]\nname = \"a\"\nsource = \"demo:\"\nsegment_duration = 2\npart_duration = {part}\n"
            ))
            .unwrap_err();
            assert_eq!(e.line, Some(5), "{e}");
            assert!(e.to_string().contains("part_duration"), "{e}");
        }
        let c =
            Config::parse("[[stream]]\nname = \"a\"\nsource = \"demo:\"\npart_duration = 0.25\n")
                .unwrap();
        assert_eq!(c.streams[0].hls.part_duration_s, Some(0.25));
        let e = Config::parse("[server]\nsegment_send = \"mmap\"\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        let e =
            Config::parse("[server]\nlisten = \"0.0.0.0:80\"\nheader_timeout = 0\n").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.to_string().contains("header_timeout"), "{e}");
        let e = Config::parse("[[stream]]\nname = \"a\"\nsource = \"demo:\"\nwindow = 0\n")
            .unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        let e = Config::parse(
            "[[trigger]]\non = \"STREAM_END\"\nhandler = \"/bin/true\"\ntimeout = 0\n",
        )
        .unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        let e = Config::parse("[server]\ncpus = [999]\n").unwrap_err();
        assert!(e.to_string().contains("not available"), "{e}");
        // Two streams cannot listen on one TCP port, nor a template's instances.
        let e = Config::parse("[[stream]]\nname = \"a\"\nsource = \"tcp://0.0.0.0:9000\"\n[[stream]]\nname = \"b\"\nsource = \"tcp://127.0.0.1:9000\"\n").unwrap_err();
        assert_eq!(e.line, Some(6), "{e}");
        assert!(e.to_string().contains("TCP port 9000"), "{e}");
        let e = Config::parse("[[stream]]\nname = \"a\"\nsource = \"tcp://0.0.0.0:9000\"\nwildcard = { instances = 2 }\n").unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        let e =
            Config::parse("[[stream]]\nname = \"a\"\nsource = \"tcp://0.0.0.0:9000?mode=dial\"\n")
                .unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(Config::parse("[[stream]]\nname = \"a\"\nsource = \"tcp://h:9000?mode=connect\"\n[[stream]]\nname = \"b\"\nsource = \"tcp://0.0.0.0:9000\"\n").is_ok());
    }
}
